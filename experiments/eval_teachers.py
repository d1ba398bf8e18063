"""Score each TFLite teacher against real ground truth: CamVid's test split, with its cost per frame.

    python -m experiments.eval_teachers --camvid ../shared/data/camvid --out results/teachers \
        [--teachers yolov8_seg yolov8n-seg-1280 yolov8n-seg-tta] [--split test] [--max-frames N]

Each teacher (``teacher.backends``) labels every frame of the split at CamVid's 480x360 through the same
rasteriser as the label stores, with the groups person | car,bus,truck | bicycle,motorcycle, scored against
CamVid's labels pedestrian | car | bicyclist (other classes are background, ``unlabelled`` is ignored).
IoU is over the whole split (true/false positives and negatives summed over frames); mIoU is the mean of
the three. Cost: the wall time of one label (model calls, NMS, masks, rasterisation) per frame, the mean over
the split after one untimed call, on this machine (named in the output). Run it alone on the machine
(``flock``): the times are not figures otherwise.

Writes ``OUT/camvid_<split>.json`` (every number, per teacher) and ``OUT/camvid_<split>.md`` (the table).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jitnet_jax.eval.measured_costs import machine
from jitnet_jax.io.atomic import atomic_write_bytes
from jitnet_jax.student.metrics import iou_from_counts

#: Teacher groups (COCO names, label 1..3) and the CamVid class ids they are scored against.
GROUPS: tuple[tuple[str, ...], ...] = (("person",), ("car", "bus", "truck"), ("bicycle", "motorcycle"))
CLASSES = ("background", "pedestrian", "car", "bicyclist")
DEFAULT_TEACHERS = ("yolov8_seg", "yolov8n-seg-1280", "yolov8n-seg-tta")


def camvid_targets(annotation: np.ndarray) -> np.ndarray:
    """CamVid label ids (uint8 ``[H, W]``, 0..11) as the scored classes: 1 pedestrian (9), 2 car (8),
    3 bicyclist (10), 0 every other scene class, 255 ``unlabelled`` (11, ignored)."""
    from teacher.class_groups import CAMVID_CLASS_NAMES

    lut = np.zeros(256, np.uint8)
    for i, name in enumerate(CAMVID_CLASS_NAMES):
        if name in CLASSES[1:]:
            lut[i] = CLASSES.index(name)
        elif name == "unlabelled":
            lut[i] = 255
    lut[len(CAMVID_CLASS_NAMES) :] = 255
    return lut[annotation]


def confusion_counts(pred: np.ndarray, target: np.ndarray, n: int = len(CLASSES)) -> np.ndarray:
    """Per-class ``[3, n]`` (tp, fp, fn) of ``pred`` against ``target`` (255 ignored); both ``[H, W]``."""
    valid = target != 255
    p, t = pred[valid].astype(np.int64), target[valid].astype(np.int64)
    cm = np.bincount(t * n + p, minlength=n * n).reshape(n, n)
    tp = np.diag(cm)
    return np.stack([tp, cm.sum(0) - tp, cm.sum(1) - tp])


def score_teacher(
    label: Callable[[np.ndarray], np.ndarray], pairs: Sequence[tuple[Path, Path]], progress: bool = True
) -> dict[str, Any]:
    """Label every image of ``pairs`` with ``label`` (uint8 RGB ``[H, W, 3]`` -> uint8 ``[H, W]`` in 0..3)
    and score it against the annotation.

    Returns:
      ``{"frames", "ms_per_frame" (mean after one untimed call), "ms_median", "class_iou": {name: IoU},
      "miou", "tp", "fp", "fn"}``.
    Raises:
      ValueError: an image and its annotation of different sizes (one line naming the file).
    """
    from PIL import Image

    counts = np.zeros((3, len(CLASSES)), np.int64)
    times: list[float] = []
    for i, (img_path, ann_path) in enumerate(pairs):
        img = np.asarray(Image.open(img_path).convert("RGB"))
        ann = np.asarray(Image.open(ann_path))
        if ann.shape != img.shape[:2]:
            raise ValueError(f"{ann_path}: annotation {ann.shape} does not match image {img.shape[:2]}")
        if i == 0:
            label(img)  # untimed: first call of the interpreter
        t0 = time.perf_counter()
        pred = label(img)
        times.append((time.perf_counter() - t0) * 1e3)
        counts += confusion_counts(pred, camvid_targets(ann))
        if progress and (i + 1) % 50 == 0:
            print(
                f"  {i + 1}/{len(pairs)} frames, {np.mean(times):.1f} ms/frame", file=sys.stderr, flush=True
            )
    sc = iou_from_counts(*counts)
    return {
        "frames": len(pairs),
        "ms_per_frame": float(np.mean(times)),
        "ms_median": float(np.median(times)),
        "class_iou": dict(zip(CLASSES, sc["class_iou"])),
        "miou": sc["miou"],
        "tp": sc["tp"],
        "fp": sc["fp"],
        "fn": sc["fn"],
    }


def teacher_labeller(name: str, height: int, width: int, num_threads: int = 2) -> tuple[Callable, int]:
    """``(frame -> label uint8 [height, width], model calls per frame)`` for teacher ``name``: its TFLite
    backend followed by the label stores' rasteriser with :data:`GROUPS`."""
    from teacher.backends import make_teacher
    from teacher.live import backend_labeller
    from teacher.precompute import RasterParams

    backend = make_teacher(name, num_threads=num_threads)
    lab = backend_labeller(backend, height, width, GROUPS, RasterParams())
    calls = backend.calls(height, width) if hasattr(backend, "calls") else 1
    return (lambda frame: lab(0, frame)[0]), calls


def markdown(rows: dict[str, dict[str, Any]], split: str, where: str) -> str:
    """The scores as a markdown table."""
    lines = [
        f"# Teachers on CamVid {split} (ground truth, 480x360)\n",
        f"Machine: {where}. IoU over the split; mIoU = mean of pedestrian, car, bicyclist.\n",
        "| teacher | model calls / frame | ms / frame | pedestrian | car | bicyclist | mIoU |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        iou = r["class_iou"]
        lines.append(
            f"| `{name}` | {r['calls']} | {r['ms_per_frame']:.1f} | {iou['pedestrian']:.3f} | "
            f"{iou['car']:.3f} | {iou['bicyclist']:.3f} | {r['miou']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; 0 on success, 2 on bad arguments or input."""
    p = argparse.ArgumentParser(
        prog="python -m experiments.eval_teachers", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--camvid", type=Path, required=True, help="CamVid folder (SegNet layout)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--teachers", nargs="*", default=list(DEFAULT_TEACHERS))
    p.add_argument("--split", choices=["train", "validation", "test"], default="test")
    p.add_argument("--max-frames", type=int, help="only the first N frames of the split")
    p.add_argument("--threads", type=int, default=2, help="TFLite interpreter threads")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        from teacher.tfds_camvid import HEIGHT, WIDTH, split_pairs

        pairs = split_pairs(args.camvid, args.split)[: args.max_frames or None]
        where = machine()
        rows: dict[str, dict[str, Any]] = {}
        for name in args.teachers:
            label, calls = teacher_labeller(name, HEIGHT, WIDTH, args.threads)
            print(f"{name}: {len(pairs)} frames ({calls} model calls each)", file=sys.stderr, flush=True)
            rows[name] = {**score_teacher(label, pairs, not args.no_progress), "calls": calls}
            r = rows[name]
            print(
                f"{name}: mIoU {r['miou']:.3f}, {r['ms_per_frame']:.1f} ms/frame", file=sys.stderr, flush=True
            )
        args.out.mkdir(parents=True, exist_ok=True)
        body = {
            "split": args.split,
            "frames": len(pairs),
            "machine": where,
            "groups": [list(g) for g in GROUPS],
            "classes": list(CLASSES),
            "argv": list(argv if argv is not None else sys.argv[1:]),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "teachers": rows,
        }
        stem = args.out / f"camvid_{args.split}"
        atomic_write_bytes(stem.with_suffix(".json"), (json.dumps(body, indent=1) + "\n").encode())
        atomic_write_bytes(stem.with_suffix(".md"), markdown(rows, args.split, where).encode())
    except (ValueError, OSError) as e:
        print(f"error: {' '.join(str(e).split()) or type(e).__name__}", file=sys.stderr)
        return 2
    print(markdown(rows, args.split, where))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Offline pretraining of the student; saves an Orbax student checkpoint (``--init`` of experiments.stream).

Sources of examples (one of):

  (a) CamVid through its tensorflow-datasets builder (``teacher.tfds_camvid``), the project's generic start::

        python -m experiments.pretrain --tfds camvid --manual-dir ../shared/data/camvid --out ckpt

      trains on the traffic classes (background, person, car_bus_truck, bicycle_motorcycle; CamVid's
      pedestrian -> person, car -> car_bus_truck, bicyclist -> bicycle_motorcycle, other classes ->
      background, unlabelled -> ignored) with random 16:9 windows, flips, scale and colour jitter, and
      reports per-class IoU on the CamVid test split;
  (b) label stores of LVS streams, leave-one-stream-out::

        python -m experiments.pretrain --lvs ../shared/data/lvs_mini --exclude residential_street1 --out ckpt

      trains on every ``--every``-th frame of every *other* stream with the excluded stream's class groups;
      ``--tfds camvid --lvs ... --exclude S`` trains on both (CamVid plus the other streams' teacher labels);
  (c) any other tensorflow-datasets segmentation dataset (``--tfds NAME``, read with ``tfds.data_source``,
      no TensorFlow needed for array_record datasets; COCO panoptic is decoded to semantic labels).

The library code is :mod:`jitnet_jax.student.pretrain`; this module only reads arguments and data.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jitnet_jax.compile_cache import enable_compile_cache
from jitnet_jax.config import ModelConfig, OptimConfig, StudentConfig
from jitnet_jax.host_memory import keep_freed_memory
from jitnet_jax.student.metrics import stream_iou
from jitnet_jax.student.pretrain import (
    Augment,
    Examples,
    class_map,
    evaluate,
    pretrain,
    segmentation_examples,
    store_examples,
    tfds_examples,
)
from jitnet_jax.student.pretrained import save_student

TRAFFIC = ("background", "person", "car_bus_truck", "bicycle_motorcycle")
REPO = Path(__file__).resolve().parents[1]


def default_camvid_dir() -> Path:
    """``$JITNET_DATA/camvid``, else ``../shared/data/camvid`` beside the repository."""
    env = os.environ.get("JITNET_DATA")
    return (Path(env) if env else REPO.parent / "shared" / "data") / "camvid"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.pretrain", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    src = p.add_argument_group("examples")
    src.add_argument("--tfds", help="tensorflow-datasets name: camvid, or e.g. coco/2017_panoptic")
    src.add_argument("--lvs", type=Path, help="LVS root (label stores are precomputed / reused)")
    p.add_argument(
        "--manual-dir",
        type=Path,
        help="CamVid folder (default: $JITNET_DATA/camvid or ../shared/data/camvid)",
    )
    p.add_argument("--streams", nargs="*", help="LVS streams to use (default: every stream in streams.json)")
    p.add_argument("--exclude", help="leave this stream out; its class groups are the target classes")
    p.add_argument(
        "--classes",
        help="target class names, comma-separated, starting with background "
        "(default for --tfds camvid: " + ",".join(TRAFFIC) + ")",
    )
    p.add_argument("--every", type=int, default=4, help="use every N-th frame of each stream")
    p.add_argument("--max-frames", type=int, help="use only the first N frames of each stream")
    p.add_argument("--cache-dir", type=Path, default=Path("label_stores"), help="label store cache")
    p.add_argument("--tfds-split", default="train", help="training split(s), e.g. train or train+validation")
    p.add_argument("--eval-split", help="split to report IoU on (default for camvid: test)")
    p.add_argument("--tfds-data-dir", help="tensorflow-datasets data_dir (default: tfds's)")
    p.add_argument("--max-examples", type=int, default=1000, help="tfds examples to use")
    p.add_argument("--image-key", default="image")
    p.add_argument("--label-key", default="segmentation_mask")
    p.add_argument("--label-names", help="comma-separated names of the tfds label ids")
    p.add_argument("--height", type=int, default=180, help="training crop height (the stream's)")
    p.add_argument("--width", type=int, default=320, help="training crop width (the stream's)")
    p.add_argument("--no-augment", action="store_true", help="train on whole frames, no jitter")
    p.add_argument("--min-scale", type=float, default=Augment.min_scale, help="smallest crop (fraction)")
    p.add_argument("--jitter", type=float, default=Augment.brightness, help="colour jitter amplitude")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--optim", choices=["adam", "sgd"], default="adam")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--schedule",
        choices=["constant", "cosine"],
        default="constant",
        help="cosine: decay the lr to 1%% over the run",
    )
    p.add_argument("--fg-weight", type=float, default=10.0, help="loss weight of foreground pixels")
    p.add_argument("--width-multiplier", type=float, default=ModelConfig.width_multiplier)
    p.add_argument(
        "--init", help="start from a student checkpoint ('camvid': the shipped one; head mapped by name)"
    )
    p.add_argument("--save-every", type=int, default=0, help="also save the checkpoint every N epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return p


def target_classes(args: argparse.Namespace) -> tuple[str, ...]:
    """The student's classes: ``--classes``, else the excluded stream's groups, else the traffic classes
    for CamVid."""
    if args.classes:
        names = tuple(s.strip() for s in args.classes.split(",") if s.strip())
        if not names or names[0] != "background":
            raise ValueError(f"--classes must start with background, got {args.classes!r}")
        return names
    if args.exclude and args.lvs:
        from teacher.class_groups import group_names, stream_groups

        return group_names(stream_groups(args.exclude, args.lvs))
    if args.tfds == "camvid":
        return TRAFFIC
    raise ValueError("give --classes, or --lvs with --exclude STREAM (its class groups are the target)")


def lvs_store_dirs(
    lvs: Path,
    streams: Sequence[str],
    height: int,
    width: int,
    max_frames: int | None,
    cache_dir: Path,
    progress: bool,
) -> list[Path]:
    """Complete label stores of ``streams`` (precomputed if missing)."""
    from teacher.precompute import ensure_store

    return [
        ensure_store(
            lvs=lvs,
            stream=s,
            height=height,
            width=width,
            max_frames=max_frames,
            cache_dir=cache_dir,
            progress=progress,
        )
        for s in streams
    ]


def camvid_split(args: argparse.Namespace, splits: str) -> tuple[np.ndarray, np.ndarray]:
    """CamVid images uint8 ``[N, 360, 480, 3]`` and label ids ``[N, 360, 480]`` of ``a+b`` splits."""
    from teacher.tfds_camvid import load_split

    manual = args.manual_dir or default_camvid_dir()
    if not manual.is_dir():
        raise FileNotFoundError(
            f"CamVid folder {manual} not found; give --manual-dir DIR (or set JITNET_DATA)"
        )
    parts = [load_split(s, data_dir=args.tfds_data_dir, manual_dir=manual) for s in splits.split("+")]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def camvid_examples(args: argparse.Namespace, names: Sequence[str], split: str) -> Examples:
    """CamVid examples at 480x360 with labels mapped to ``names`` (foreground weight 2 = store "fg")."""
    from teacher.tfds_camvid import CLASS_NAMES

    class_map(CLASS_NAMES, names, require_all=True, source="camvid")  # bad classes fail before any work
    images, labels = camvid_split(args, split)
    return segmentation_examples(images, labels, CLASS_NAMES, names, source="camvid")


def fit_to(examples: Examples, height: int, width: int) -> Examples:
    """Examples centre-cropped to the aspect of ``height x width`` and resampled to that size (so that
    sources of different sizes can be stacked; augmentation then crops again)."""
    from jitnet_jax.student.pretrain import Augment, augment_example

    frames, labels, weights = examples
    if frames.shape[1:3] == (height, width):
        return examples
    aug = Augment(height, width, 1.0, 1.0, False, 0.0, 0.0, 0.0)
    fn = jax.jit(jax.vmap(lambda f, y, w: augment_example(jax.random.key(0), f, y, w, aug)))
    out = [fn(frames[i : i + 32], labels[i : i + 32], weights[i : i + 32]) for i in range(0, len(frames), 32)]
    return tuple(np.concatenate([np.asarray(o[k]) for o in out]) for k in range(3))  # type: ignore[return-value]


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; 0 on success, 2 on bad arguments/input."""
    args = build_parser().parse_args(argv)
    enable_compile_cache()
    keep_freed_memory()
    progress = not args.no_progress
    try:
        if args.lvs is None and args.tfds is None:
            raise ValueError("give --tfds NAME (e.g. camvid) and/or --lvs DIR --exclude STREAM")
        if args.lvs is not None and args.tfds is not None and args.tfds != "camvid":
            raise ValueError("--lvs combines with --tfds camvid only")
        names = target_classes(args)
        info: dict[str, Any] = {
            "command": "python -m experiments.pretrain " + " ".join(sys.argv[1:] if argv is None else argv)
        }
        parts: list[Examples] = []
        eval_data: tuple[np.ndarray, np.ndarray] | None = None
        if args.tfds == "camvid":
            train = camvid_examples(args, names, args.tfds_split)
            parts.append(tuple(a[: args.max_examples] for a in train))  # type: ignore[arg-type]
            info.update(dataset="camvid", split=args.tfds_split)
            eval_split = args.eval_split or "test"
            test = camvid_examples(args, names, eval_split)
            eval_data = (test[0], test[1])
        elif args.tfds is not None:
            label_names = args.label_names.split(",") if args.label_names else None
            kw = dict(
                data_dir=args.tfds_data_dir,
                max_examples=args.max_examples,
                image_key=args.image_key,
                label_key=args.label_key,
                label_names=label_names,
            )
            parts.append(
                tfds_examples(args.tfds, names, args.height, args.width, split=args.tfds_split, **kw)
            )
            info.update(source="tfds", dataset=args.tfds, split=args.tfds_split)
            if args.eval_split:
                test = tfds_examples(args.tfds, names, args.height, args.width, split=args.eval_split, **kw)
                eval_data = (test[0], test[1])
            eval_split = args.eval_split
        if args.lvs is not None:
            from teacher.class_groups import load_streams_json

            streams = args.streams or sorted(load_streams_json(args.lvs / "streams.json"))
            streams = [s for s in streams if s != args.exclude]
            dirs = lvs_store_dirs(
                args.lvs, streams, args.height, args.width, args.max_frames, args.cache_dir, progress
            )
            parts.append(store_examples(dirs, names, args.every, args.max_frames, progress))
            info.update(
                source="lvs" if args.tfds is None else "camvid+lvs", streams=streams, excluded=args.exclude
            )
        if len(parts) > 1:
            parts = [fit_to(p, args.height, args.width) for p in parts]
        examples: Examples = tuple(np.concatenate([p[k] for p in parts]) for k in range(3))  # type: ignore[assignment]
        augment = None
        if not args.no_augment:
            j = args.jitter
            augment = Augment(args.height, args.width, args.min_scale, 1.0, True, j, j, j).validate()
        steps = args.epochs * max(1, len(examples[0]) // max(1, args.batch_size))
        optim = OptimConfig(name=args.optim, lr=args.lr)
        if args.schedule == "cosine":
            optim = dataclasses.replace(optim, schedule="cosine", decay_steps=steps, alpha=0.01)
        model = ModelConfig(num_classes=len(names), width_multiplier=args.width_multiplier)
        cfg = StudentConfig(model=model, optim=optim).validate()
        start = None
        if args.init:
            from jitnet_jax.student.pretrained import load_student_for_classes, resolve_init
            from jitnet_jax.student.step import init_state

            params, stats, mapping = load_student_for_classes(
                resolve_init(args.init), model, names, jax.random.key(args.seed + 1)
            )
            start = init_state(jax.random.key(args.seed), cfg, (args.height, args.width))
            start = start.replace(params=params, batch_stats=stats)
            info.update(init=str(args.init), init_mapping=mapping)

        def on_epoch(e: int, st: Any) -> None:
            """With --save-every N: a checkpoint of the run so far (info says which epoch)."""
            if args.save_every and (e + 1) % args.save_every == 0 and e + 1 < args.epochs:
                save_student(args.out, st, model, info={**info, "classes": list(names), "epochs_done": e + 1})

        state, losses = pretrain(
            examples,
            cfg,
            epochs=args.epochs,
            key=jax.random.key(args.seed),
            progress=progress,
            batch_size=args.batch_size,
            augment=augment,
            fg_weight=args.fg_weight,
            state=start,
            on_epoch=on_epoch,
        )
        info.update(
            classes=list(names),
            examples=len(examples[0]),
            epochs=args.epochs,
            batch_size=args.batch_size,
            augment=dataclasses.asdict(augment) if augment else None,
            fg_weight=args.fg_weight,
            optim=dataclasses.asdict(cfg.optim),
            losses=losses,
            height=args.height,
            width=args.width,
        )
        if eval_data is not None:
            size = eval_size(eval_data[0].shape[1:3], args.height, args.width)
            scores = stream_iou(evaluate(cfg, state, eval_data[0], eval_data[1], size))
            info["eval"] = {
                "split": eval_split,
                "frames": len(eval_data[0]),
                "size": list(size),
                "miou": scores["miou"],
                "class_iou": dict(zip(names, scores["class_iou"])),
            }
            print(json.dumps(info["eval"]), file=sys.stderr)
        out = save_student(args.out, state, model, info=info)
    except (ValueError, OSError) as e:
        print(f"error: {' '.join(str(e).split()) or type(e).__name__}", file=sys.stderr)
        return 2
    print(out)
    return 0


def eval_size(frame_hw: tuple[int, int], height: int, width: int) -> tuple[int, int]:
    """Whole-frame evaluation size at the scale of the largest training window (e.g. 360x480 with
    180x320 crops -> 240x320)."""
    h, w = frame_hw
    full_h = min(float(h), w * height / width)
    f = height / full_h
    return round(h * f), round(w * f)


if __name__ == "__main__":
    sys.exit(main())

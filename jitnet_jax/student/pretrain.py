"""Offline pretraining of JITNet from (frame, label, weight) examples; saves an Orbax student checkpoint.

Sources of examples:
  (a) label stores of LVS streams, leave-one-stream-out::

        python -m experiments.pretrain --lvs ../shared/data/lvs_mini --exclude residential_street1 --out ckpt

      trains on every ``--every``-th frame of every *other* stream (the excluded stream is never seen) with
      the label space of the excluded stream (its class groups), so the checkpoint fits
      ``python -m experiments.stream --init ckpt`` on that stream;
  (b) a tensorflow-datasets segmentation dataset (read with ``tfds.data_source``, no TensorFlow needed
      for array_record datasets)::

        python -m experiments.pretrain --tfds coco/2017_panoptic --classes background,person,car_bus_truck \
            --out ckpt

      COCO panoptic examples (``panoptic_image`` + ``panoptic_objects``) are decoded to semantic labels;
      any other dataset is read as ``--image-key`` / ``--label-key`` with ``--label-names`` naming its
      label ids.

Classes are mapped **by name**. A target class is a class-group name such as ``car_bus_truck`` (groups
joined by ``_``); a source class maps to it when its name is the group name or one of the group's COCO
names. Source classes with no target class become background (what the target stream's teacher would call
them), the ignore label stays ignored.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jitnet_jax.config import ModelConfig, OptimConfig, StudentConfig
from jitnet_jax.data.store_source import StoreSource
from jitnet_jax.data.types import IGNORE_LABEL
from jitnet_jax.eval.baselines import limited_chunks, train_offline
from jitnet_jax.student.pretrained import save_student
from jitnet_jax.student.step import StudentState, init_state

Examples = tuple[np.ndarray, np.ndarray, np.ndarray]  # frames uint8 [K,H,W,3], labels uint8 [K,H,W], weights


def _aliases(name: str) -> set[str]:
    """The COCO names of a class or group name (``car_bus_truck`` -> car, bus, truck; spaces as ``-``)."""
    return set(name.replace(" ", "-").split("_"))


def class_map(source_names: Sequence[str], target_names: Sequence[str]) -> np.ndarray:
    """uint8 ``[256]`` lookup from source label ids to target label ids (by class name).

    ``source_names[i]`` names source id ``i``; id 0 of both is background. Unknown source classes -> 0,
    ``IGNORE_LABEL`` -> ``IGNORE_LABEL``.
    """
    if not target_names or target_names[0] != "background":
        raise ValueError(f"target classes must start with 'background', got {list(target_names)}")
    lut = np.zeros(256, np.uint8)
    lut[IGNORE_LABEL] = IGNORE_LABEL
    for i, name in enumerate(source_names):
        if i == 0 or i >= IGNORE_LABEL:
            continue
        for j, target in enumerate(target_names[1:], start=1):
            if name == target or _aliases(name) & _aliases(target):
                lut[i] = j
                break
    return lut


def store_examples(
    store_dirs: Sequence[str | Path],
    target_names: Sequence[str],
    every: int = 4,
    max_frames: int | None = None,
    progress: bool = True,
) -> Examples:
    """Every ``every``-th frame (up to ``max_frames`` of each stream) of complete label stores, with labels
    mapped to ``target_names``."""
    fs, ys, ws = [], [], []
    shape = None
    for d in store_dirs:
        src = StoreSource(d)
        if shape is None:
            shape = (src.info.height, src.info.width)
        elif (src.info.height, src.info.width) != shape:
            raise ValueError(
                f"{d}: store is {src.info.height}x{src.info.width}, others are {shape[0]}x{shape[1]}"
            )
        lut = class_map(src.info.class_names, target_names)
        n0 = len(fs)
        for chunk in limited_chunks(src, 64, max_frames):
            for j in np.flatnonzero(chunk.valid):
                if (chunk.start + j) % every == 0:
                    fs.append(chunk.frames[j])
                    ys.append(lut[chunk.labels[j]])
                    ws.append(chunk.weights[j])
        if progress:
            print(
                f"pretrain: {len(fs) - n0} examples from {src.info.name} {list(src.info.class_names)}",
                file=sys.stderr,
            )
    if not fs:
        raise ValueError("no pretraining examples (no stores given, or every stream excluded)")
    return np.stack(fs), np.stack(ys), np.stack(ws).astype(np.float32)


def _resize_nearest(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of ``[h, w, ...]`` to ``[height, width, ...]``."""
    rows = (np.arange(height) * x.shape[0] // height).clip(0, x.shape[0] - 1)
    cols = (np.arange(width) * x.shape[1] // width).clip(0, x.shape[1] - 1)
    return x[rows][:, cols]


def panoptic_to_semantic(
    panoptic_image: np.ndarray,
    segment_ids: np.ndarray,
    segment_labels: np.ndarray,
    label_names: Sequence[str],
    lut_names: np.ndarray,
) -> np.ndarray:
    """COCO panoptic PNG (``id = R + 256 G + 256^2 B``) to target labels (uint8 ``[h, w]``).

    ``segment_labels`` index ``label_names``; ``lut_names[k]`` is the target id of ``label_names[k]``.
    """
    rgb = panoptic_image.astype(np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    out = np.zeros(ids.shape, np.uint8)
    for sid, lab in zip(np.asarray(segment_ids).ravel(), np.asarray(segment_labels).ravel()):
        out[ids == sid] = lut_names[int(lab)]
    return out


def tfds_examples(
    name: str,
    target_names: Sequence[str],
    height: int,
    width: int,
    *,
    split: str = "train",
    data_dir: str | None = None,
    max_examples: int = 1000,
    image_key: str = "image",
    label_key: str = "segmentation_mask",
    label_names: Sequence[str] | None = None,
    fg_weight: float = 2.0,
) -> Examples:
    """Examples from a tensorflow-datasets segmentation dataset via ``tfds.data_source``.

    COCO panoptic (features ``panoptic_image`` and ``panoptic_objects``) is decoded to semantic labels;
    otherwise ``image_key`` is the uint8 image and ``label_key`` an int label map whose ids are named by
    ``label_names`` (default: the feature's ``names`` if it has them). Foreground pixels get weight
    ``fg_weight`` (> 1, read as "inside a box" by the engine's weighting), background 1, ignored 0.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ImportError("--tfds needs tensorflow-datasets (pip install tensorflow-datasets)") from None
    ds = tfds.data_source(name, split=split, data_dir=data_dir)
    features = ds.dataset_info.features
    panoptic = "panoptic_image" in features and "panoptic_objects" in features
    if panoptic:
        names = list(features["panoptic_objects"]["label"].names)
        lut_names = class_map(["background", *names], target_names)[1 : len(names) + 1]
    else:
        if label_names is None:
            label_names = getattr(features[label_key], "names", None)
        if label_names is None:
            raise ValueError(f"tfds {name}: feature {label_key!r} has no class names; pass --label-names")
        lut = class_map(list(label_names), target_names)
    fs, ys, ws = [], [], []
    for k in range(min(len(ds), max_examples)):
        ex = ds[k]
        image = np.asarray(ex["image" if panoptic else image_key])
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"tfds {name}[{k}]: image must be [h, w, 3], got shape {image.shape}")
        if panoptic:
            objs = ex["panoptic_objects"]
            label = panoptic_to_semantic(
                np.asarray(ex["panoptic_image"]), objs["id"], objs["label"], names, lut_names
            )
        else:
            raw = np.asarray(ex[label_key])
            label = lut[np.clip(raw.reshape(raw.shape[:2]), 0, 255).astype(np.uint8)]
        fs.append(_resize_nearest(image.astype(np.uint8), height, width))
        y = _resize_nearest(label, height, width)
        ys.append(y)
        ws.append(np.where(y == IGNORE_LABEL, 0.0, np.where(y > 0, fg_weight, 1.0)).astype(np.float32))
    if not fs:
        raise ValueError(f"tfds {name}: split {split!r} is empty")
    return np.stack(fs), np.stack(ys), np.stack(ws)


def pretrain(
    examples: Examples,
    cfg: StudentConfig,
    *,
    epochs: int,
    key: jax.Array,
    progress: bool = True,
) -> tuple[StudentState, list[float]]:
    """A fresh student trained on ``examples`` (shuffled, one frame per step) for ``epochs`` epochs."""
    frames, labels, weights = examples
    init_key, shuffle_key = jax.random.split(key)
    state = init_state(init_key, cfg, frames.shape[1:3])
    return train_offline(
        cfg,
        state,
        frames,
        labels,
        weights,
        epochs=epochs,
        key=shuffle_key,
        progress=progress,
        desc="pretrain",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.pretrain", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    src = p.add_argument_group("examples (one of)")
    src.add_argument("--lvs", type=Path, help="LVS root (label stores are precomputed / reused)")
    src.add_argument("--tfds", help="tensorflow-datasets name, e.g. coco/2017_panoptic")
    p.add_argument("--streams", nargs="*", help="LVS streams to use (default: every stream in streams.json)")
    p.add_argument("--exclude", help="leave this stream out; its class groups are the target classes")
    p.add_argument("--classes", help="target class names, comma-separated, starting with background")
    p.add_argument("--every", type=int, default=4, help="use every N-th frame of each stream")
    p.add_argument("--max-frames", type=int, help="use only the first N frames of each stream")
    p.add_argument("--cache-dir", type=Path, default=Path("label_stores"), help="label store cache")
    p.add_argument("--tfds-split", default="train")
    p.add_argument("--tfds-data-dir")
    p.add_argument("--max-examples", type=int, default=1000, help="tfds examples to use")
    p.add_argument("--image-key", default="image")
    p.add_argument("--label-key", default="segmentation_mask")
    p.add_argument("--label-names", help="comma-separated names of the tfds label ids")
    p.add_argument("--height", type=int, default=180)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--optim", choices=["adam", "sgd"], default="adam")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--width-multiplier", type=float, default=ModelConfig.width_multiplier)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return p


def target_classes(args: argparse.Namespace) -> tuple[str, ...]:
    if args.classes:
        names = tuple(s.strip() for s in args.classes.split(",") if s.strip())
        if not names or names[0] != "background":
            raise ValueError(f"--classes must start with background, got {args.classes!r}")
        return names
    if args.exclude and args.lvs:
        from teacher.class_groups import group_names, stream_groups

        return group_names(stream_groups(args.exclude, args.lvs))
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


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; 0 on success, 2 on bad arguments/input."""
    args = build_parser().parse_args(argv)
    progress = not args.no_progress
    try:
        if (args.lvs is None) == (args.tfds is None):
            raise ValueError("give exactly one of --lvs DIR or --tfds NAME")
        names = target_classes(args)
        if args.lvs is not None:
            from teacher.class_groups import load_streams_json

            streams = args.streams or sorted(load_streams_json(args.lvs / "streams.json"))
            streams = [s for s in streams if s != args.exclude]
            dirs = lvs_store_dirs(
                args.lvs, streams, args.height, args.width, args.max_frames, args.cache_dir, progress
            )
            examples = store_examples(dirs, names, args.every, args.max_frames, progress)
            info: dict[str, Any] = {"source": "lvs", "streams": streams, "excluded": args.exclude}
        else:
            label_names = args.label_names.split(",") if args.label_names else None
            examples = tfds_examples(
                args.tfds,
                names,
                args.height,
                args.width,
                split=args.tfds_split,
                data_dir=args.tfds_data_dir,
                max_examples=args.max_examples,
                image_key=args.image_key,
                label_key=args.label_key,
                label_names=label_names,
            )
            info = {"source": "tfds", "dataset": args.tfds, "split": args.tfds_split}
        model = ModelConfig(num_classes=len(names), width_multiplier=args.width_multiplier)
        cfg = StudentConfig(model=model, optim=OptimConfig(name=args.optim, lr=args.lr)).validate()
        state, losses = pretrain(
            examples, cfg, epochs=args.epochs, key=jax.random.key(args.seed), progress=progress
        )
        info.update(
            classes=list(names),
            examples=len(examples[0]),
            epochs=args.epochs,
            optim=dataclasses.asdict(cfg.optim),
            losses=losses,
            height=args.height,
            width=args.width,
        )
        out = save_student(args.out, state, model, info=info)
    except (ValueError, OSError) as e:
        print(f"error: {' '.join(str(e).split()) or type(e).__name__}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

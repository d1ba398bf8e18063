"""Readers for detections exported by other frameworks, converted to :class:`teacher.rasterize.Instances`.

TF Object Detection API (``--tf-export``)
  Per-frame ``.npz`` files (a directory of them, in natural filename order, one per video frame) or one
  ``.npz`` holding every frame (leading frame axis). Keys: ``detection_boxes`` ``[N, 4]`` normalised
  ``(y1, x1, y2, x2)``, ``detection_classes`` ``[N]``, ``detection_scores`` ``[N]``, ``detection_masks``
  ``[N, m, m]`` box masks or ``[N, H, W]`` full-frame masks, ``num_detections`` (valid rows). A leading batch
  axis of 1 is accepted. Class ids follow the TF COCO label map (1..90 with gaps, ``class_ids="coco90"``) or
  are already contiguous 1..80 (``class_ids="coco80"``).

Detectron2 style (``--detectron``)
  Per-frame records with ``pred_boxes`` ``[N, 4]`` in pixels ``(x1, y1, x2, y2)``, ``pred_classes`` ``[N]``
  0-based contiguous COCO-80, ``scores`` ``[N]``, ``pred_masks`` ``[N, H, W]`` full-frame or ``[N, m, m]``
  box masks, optional ``image_size`` ``(H, W)``. Accepted as a directory of per-frame ``.npz``, one ``.npz``
  with a leading frame axis on every key (plus ``num_instances`` ``[T]``), or a ``.npy`` / pickle holding a
  list or frame-keyed dict of such records (loaded with ``teacher.safe_pickle``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jitnet_jax.data.label_store import DataError
from teacher.rasterize import Instances, check_instances
from teacher.safe_pickle import load_npy, safe_unpickle

BOX_MASK_SIZE = 28
#: TF COCO label-map ids that exist (80 of 1..90); position + 1 is the contiguous id.
COCO90_IDS: tuple[int, ...] = tuple(
    i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)
)


def coco90_to_coco80(ids: np.ndarray, where: str) -> np.ndarray:
    """Map TF label-map ids (1..90 with gaps) to contiguous 1..80; unknown ids raise :class:`DataError`."""
    lut = np.zeros(91, np.int32)
    lut[list(COCO90_IDS)] = np.arange(1, 81)
    ids = np.asarray(ids).astype(np.int64)
    bad = (ids < 1) | (ids > 90)
    if not bad.any():
        bad = lut[ids] == 0
    if bad.any():
        raise DataError(f"{where}: unknown class id {int(ids[bad][0])} in the TF COCO label map (1..90)")
    return lut[ids]


def _natural_key(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def _resize_bilinear(m: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """float ``[h, w]`` -> ``[out_h, out_w]`` (half-pixel centres)."""

    def mat(n_out: int, n_in: int) -> np.ndarray:
        u = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(u).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        f = (u - lo).astype(np.float32)
        w = np.zeros((n_out, n_in), np.float32)
        w[np.arange(n_out), lo] += 1 - f
        w[np.arange(n_out), hi] += f
        return w

    return mat(out_h, m.shape[0]) @ m.astype(np.float32) @ mat(out_w, m.shape[1]).T


def frame_masks_to_box_masks(masks: np.ndarray, boxes: np.ndarray, size: int = BOX_MASK_SIZE) -> np.ndarray:
    """Crop full-frame masks ``[N, H, W]`` to their normalised ``(y1, x1, y2, x2)`` boxes and resize each crop
    to ``[size, size]`` (float32 in [0, 1])."""
    n, h, w = masks.shape
    out = np.zeros((n, size, size), np.float32)
    for i in range(n):
        y1, x1, y2, x2 = boxes[i] * np.array([h, w, h, w])
        r0, c0 = int(np.clip(np.floor(y1), 0, h - 1)), int(np.clip(np.floor(x1), 0, w - 1))
        r1, c1 = int(np.clip(np.ceil(y2), r0 + 1, h)), int(np.clip(np.ceil(x2), c0 + 1, w))
        out[i] = _resize_bilinear(masks[i, r0:r1, c0:c1].astype(np.float32), size, size)
    return np.clip(out, 0.0, 1.0)


def _is_frame_mask(masks: np.ndarray, image_size: tuple[int, int] | None) -> bool:
    if masks.ndim != 3:
        return False
    if image_size is not None and tuple(masks.shape[1:]) == tuple(image_size):
        return True
    return masks.shape[1] != masks.shape[2] or masks.shape[1] > 64


def _squeeze_batch(a: np.ndarray, ndim: int) -> np.ndarray:
    return a[0] if a.ndim == ndim + 1 and a.shape[0] == 1 else a


def tf_record_to_instances(
    rec: Mapping[str, np.ndarray],
    where: str,
    class_ids: str = "coco90",
    image_size: tuple[int, int] | None = None,
) -> Instances:
    """Convert one TF OD API output dict (see module doc) to :class:`Instances`."""
    try:
        boxes = _squeeze_batch(np.asarray(rec["detection_boxes"], np.float32), 2)
        classes = _squeeze_batch(np.asarray(rec["detection_classes"]), 1)
        scores = _squeeze_batch(np.asarray(rec["detection_scores"], np.float32), 1)
    except KeyError as e:
        raise DataError(f"{where}: TF export lacks field {e.args[0]!r}") from None
    n = int(np.asarray(rec["num_detections"]).reshape(-1)[0]) if "num_detections" in rec else len(scores)
    if not 0 <= n <= len(scores):
        raise DataError(f"{where}: num_detections={n} but only {len(scores)} rows")
    boxes, classes, scores = boxes[:n], classes[:n], scores[:n]
    if "detection_masks" in rec:
        masks = _squeeze_batch(np.asarray(rec["detection_masks"], np.float32), 3)[:n]
        if masks.ndim != 3 or masks.shape[0] != n:
            raise DataError(
                f"{where}: detection_masks has shape {masks.shape}, expected ({n}, m, m) or ({n}, H, W)"
            )
        if _is_frame_mask(masks, image_size):
            masks = frame_masks_to_box_masks(masks, boxes)
    else:  # boxes only: a full box mask
        masks = np.ones((n, BOX_MASK_SIZE, BOX_MASK_SIZE), np.float32)
    if class_ids == "coco90":
        classes = coco90_to_coco80(classes, where)
    elif class_ids != "coco80":
        raise DataError(f"{where}: class_ids must be 'coco90' or 'coco80', got {class_ids!r}")
    return check_instances(Instances(boxes, np.asarray(classes).astype(np.int64), scores, masks), where)


def detectron_record_to_instances(
    rec: Mapping[str, Any], where: str, image_size: tuple[int, int] | None = None
) -> Instances:
    """Convert one Detectron2-style record (see module doc) to :class:`Instances`."""
    try:
        boxes = np.asarray(rec["pred_boxes"], np.float32).reshape(-1, 4)
        classes = np.asarray(rec["pred_classes"]).reshape(-1)
        scores = np.asarray(rec["scores"], np.float32).reshape(-1)
    except KeyError as e:
        raise DataError(f"{where}: Detectron record lacks field {e.args[0]!r}") from None
    if "image_size" in rec:
        image_size = tuple(int(v) for v in np.asarray(rec["image_size"]).reshape(-1)[:2])
    masks = np.asarray(rec["pred_masks"], np.float32) if "pred_masks" in rec else None
    if masks is not None and _is_frame_mask(masks, image_size) and image_size is None:
        image_size = (masks.shape[1], masks.shape[2])
    if image_size is None:
        raise DataError(f"{where}: pixel boxes need the image size (record 'image_size' or the video)")
    h, w = image_size
    norm = np.clip(boxes[:, [1, 0, 3, 2]] / np.array([h, w, h, w], np.float32), 0.0, 1.0)
    n = len(classes)
    if masks is None:
        masks = np.ones((n, BOX_MASK_SIZE, BOX_MASK_SIZE), np.float32)
    elif masks.ndim != 3 or masks.shape[0] != n:
        raise DataError(f"{where}: pred_masks has shape {masks.shape}, expected ({n}, H, W) or ({n}, m, m)")
    elif _is_frame_mask(masks, image_size):
        masks = frame_masks_to_box_masks(masks, norm)
    ids = np.asarray(classes).astype(np.int64)
    if ((ids < 0) | (ids > 79)).any():
        bad = ids[(ids < 0) | (ids > 79)][0]
        raise DataError(f"{where}: unknown 0-based class id {int(bad)} (Detectron COCO ids are 0..79)")
    return check_instances(Instances(norm, ids + 1, scores, masks), where)


def _npz_dict(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read .npz ({e})") from None


def _frame_files(path: Path) -> list[Path]:
    files = sorted(path.glob("*.npz"), key=_natural_key)
    if not files:
        raise DataError(f"{path}: directory holds no per-frame .npz files")
    return files


def _split_frames(d: dict[str, np.ndarray], count_key: str, path: Path) -> list[dict[str, np.ndarray]]:
    if count_key not in d:
        raise DataError(f"{path}: multi-frame .npz needs a per-frame {count_key!r} array")
    counts = np.asarray(d[count_key]).reshape(-1)
    return [{k: (v[t] if k != count_key else counts[t]) for k, v in d.items()} for t in range(len(counts))]


def read_tf_export(
    path: str | os.PathLike, class_ids: str = "coco90", image_size: tuple[int, int] | None = None
) -> Iterator[Instances]:
    """Yield one :class:`Instances` per frame from a TF OD API export (file or directory, see module doc)."""
    path = Path(path)
    if path.is_dir():
        for t, f in enumerate(_frame_files(path)):
            yield tf_record_to_instances(_npz_dict(f), f"{f}: frame {t}", class_ids, image_size)
        return
    if not path.is_file():
        raise DataError(f"{path}: TF export not found")
    d = _npz_dict(path)
    scores = np.asarray(d.get("detection_scores", np.zeros(0)))
    single = scores.ndim == 1 or (scores.ndim == 2 and scores.shape[0] == 1 and "num_detections" not in d)
    if scores.ndim == 2 and scores.shape[0] == 1 and np.asarray(d.get("num_detections", 0)).size == 1:
        single = True
    frames = [d] if single else _split_frames(d, "num_detections", path)
    for t, rec in enumerate(frames):
        yield tf_record_to_instances(rec, f"{path}: frame {t}", class_ids, image_size)


def read_detectron(path: str | os.PathLike, image_size: tuple[int, int] | None = None) -> Iterator[Instances]:
    """Yield one :class:`Instances` per frame from a Detectron2-style export (see module doc)."""
    path = Path(path)
    if path.is_dir():
        for t, f in enumerate(_frame_files(path)):
            yield detectron_record_to_instances(_npz_dict(f), f"{f}: frame {t}", image_size)
        return
    if not path.is_file():
        raise DataError(f"{path}: Detectron export not found")
    if path.suffix == ".npz":
        recs: list[Any] = _split_frames(_npz_dict(path), "num_instances", path)
        recs = [
            {
                k: (v[: int(r["num_instances"])] if k not in ("num_instances", "image_size") else v)
                for k, v in r.items()
            }
            for r in recs
        ]
    else:
        obj = load_npy(path) if path.suffix == ".npy" else safe_unpickle(path.read_bytes(), str(path))
        if isinstance(obj, dict):
            try:
                keys = sorted(int(k) for k in obj)
            except (TypeError, ValueError):
                raise DataError(f"{path}: Detectron dict keys must be frame indices") from None
            if keys != list(range(len(keys))):
                missing = sorted(set(range(len(keys))) - set(keys))
                raise DataError(
                    f"{path}: frame {missing[0] if missing else len(keys)} missing from the export"
                )
            recs = [obj[k] for k in keys]
        elif isinstance(obj, list | tuple):
            recs = list(obj)
        else:
            raise DataError(
                f"{path}: expected a list or frame-keyed dict of records, got {type(obj).__name__}"
            )
    for t, rec in enumerate(recs):
        if not isinstance(rec, Mapping):
            raise DataError(f"{path}: frame {t}: record is {type(rec).__name__}, expected a dict")
        yield detectron_record_to_instances(rec, f"{path}: frame {t}", image_size)

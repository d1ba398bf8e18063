"""Teacher instances -> (label, region) maps at the student's resolution, and the shared instance record.

Rules (as in JITNet's ``batch_segmentation_masks``):

* detections with ``score < score_threshold`` (default 0.5) are dropped;
* COCO classes map to class groups (label = group index + 1); classes in no group are ignored (they stay
  background);
* each soft box mask (``[M, M]``, over the box) is bilinearly resized into its box and thresholded at
  ``mask_threshold`` (0.5); a pixel belongs to a box when its centre lies inside
  ``[y1 * H, y2 * H) x [x1 * W, x2 * W)``;
* where instances overlap, the higher label (group id) wins;
* the region map is ``REGION_BACKGROUND`` (1) everywhere and ``REGION_BOX`` (2) inside the union of the
  kept, mapped boxes dilated by ``dilation`` (15%) of the box height/width on every side. The loss
  weights of the two regions are run settings (``OnlineConfig.fg_weight`` / ``bg_weight``), not part of
  the labels.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jitnet_jax.data.label_store import DataError
from jitnet_jax.data.types import REGION_BACKGROUND, REGION_BOX


class Instances(NamedTuple):
    """Teacher detections of one frame, in the LVS record format.

    Attributes:
      boxes: float32 ``[N, 4]`` normalised ``(y1, x1, y2, x2)`` in ``[0, 1]``.
      classes: int32 ``[N]`` COCO contiguous ids 1..80.
      scores: float32 ``[N]``.
      masks: float32 ``[N, M, M]`` soft mask probabilities over each box (M = 28 for Mask R-CNN).
    """

    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray
    masks: np.ndarray

    @staticmethod
    def empty(mask_size: int = 28) -> Instances:
        return Instances(
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.int32),
            np.zeros((0,), np.float32),
            np.zeros((0, mask_size, mask_size), np.float32),
        )


def check_instances(inst: Instances, where: str) -> Instances:
    """Validate shapes/values and normalise dtypes; ``where`` (file + frame) is named in the error."""
    try:
        boxes = np.asarray(inst.boxes, np.float32)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        classes = np.asarray(inst.classes).reshape(-1)
        scores = np.asarray(inst.scores, np.float32).reshape(-1)
        masks = np.asarray(inst.masks, np.float32)
    except (TypeError, ValueError) as e:
        raise DataError(f"{where}: detections are not numeric arrays ({e})") from None
    n = classes.shape[0]
    if boxes.shape != (n, 4):
        raise DataError(f"{where}: boxes have shape {boxes.shape}, expected ({n}, 4)")
    if scores.shape != (n,):
        raise DataError(f"{where}: scores have shape {scores.shape}, expected ({n},)")
    if n == 0 and masks.size == 0:
        masks = masks.reshape(0, *(masks.shape[1:] if masks.ndim == 3 else (28, 28)))
    if masks.ndim != 3 or masks.shape[0] != n or masks.shape[1] < 1 or masks.shape[2] < 1:
        raise DataError(f"{where}: masks have shape {masks.shape}, expected ({n}, M, M)")
    if n and (not np.issubdtype(classes.dtype, np.integer)):
        if not np.all(np.equal(np.mod(classes, 1), 0)):
            raise DataError(f"{where}: class ids must be integers, got {classes.dtype}")
    classes = classes.astype(np.int64)
    bad = (classes < 1) | (classes > 80)
    if bad.any():
        raise DataError(f"{where}: unknown class id {int(classes[bad][0])} (COCO ids are 1..80)")
    if not np.all(np.isfinite(boxes)) or not np.all(np.isfinite(scores)):
        raise DataError(f"{where}: boxes or scores contain NaN/inf")
    return Instances(boxes, classes.astype(np.int32), scores, masks)


def _interp(out_lo: float, out_hi: float, n_pix: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels whose centres lie in ``[out_lo, out_hi)`` (pixel units) and their ``[n, m]`` bilinear
    weights sampling an ``m``-cell mask stretched over that interval."""
    first = max(0, int(np.ceil(out_lo - 0.5)))
    last = min(n_pix, int(np.ceil(out_hi - 0.5)))  # exclusive
    idx = np.arange(first, last)
    if idx.size == 0:
        return idx, np.zeros((0, m), np.float32)
    u = (idx + 0.5 - out_lo) / max(out_hi - out_lo, 1e-9) * m - 0.5
    u = np.clip(u, 0.0, m - 1)
    lo = np.floor(u).astype(np.int64)
    hi = np.minimum(lo + 1, m - 1)
    frac = (u - lo).astype(np.float32)
    w = np.zeros((idx.size, m), np.float32)
    rows = np.arange(idx.size)
    w[rows, lo] += 1.0 - frac
    w[rows, hi] += frac
    return idx, w


def _center_span(lo: float, hi: float, n_pix: int) -> slice:
    first = max(0, int(np.ceil(lo - 0.5)))
    last = min(n_pix, int(np.ceil(hi - 0.5)))
    return slice(first, max(first, last))


def rasterize(
    inst: Instances,
    height: int,
    width: int,
    class_to_label: np.ndarray,
    *,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    dilation: float = 0.15,
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise one frame's instances.

    Args:
      inst: detections (see :class:`Instances`), already validated.
      height, width: output size.
      class_to_label: uint8 lookup COCO id -> label (see ``teacher.class_groups.coco_to_label``).

    Returns:
      labels uint8 ``[height, width]`` (0 background, g+1 group g) and the region map uint8
      ``[height, width]`` (``REGION_BACKGROUND`` 1, ``REGION_BOX`` 2 inside a dilated box).
    """
    labels = np.zeros((height, width), np.uint8)
    regions = np.full((height, width), REGION_BACKGROUND, np.uint8)
    n = len(inst.classes)
    if n == 0:
        return labels, regions
    mapped = class_to_label[np.clip(inst.classes, 0, len(class_to_label) - 1)]
    keep = (inst.scores >= score_threshold) & (mapped > 0)
    boxes = inst.boxes[keep].astype(np.float64)
    masks = inst.masks[keep]
    lab = mapped[keep]
    if lab.size == 0:
        return labels, regions
    scale = np.array([height, width, height, width], np.float64)
    pix = boxes * scale  # y1, x1, y2, x2 in pixel units
    # Weight: union of dilated boxes.
    fg = np.zeros((height, width), bool)
    bh = pix[:, 2] - pix[:, 0]
    bw = pix[:, 3] - pix[:, 1]
    dil = np.stack(
        [
            pix[:, 0] - dilation * bh,
            pix[:, 1] - dilation * bw,
            pix[:, 2] + dilation * bh,
            pix[:, 3] + dilation * bw,
        ],
        axis=1,
    )
    for y1, x1, y2, x2 in dil:
        fg[_center_span(y1, y2, height), _center_span(x1, x2, width)] = True
    regions[fg] = REGION_BOX
    # Labels: resize every box mask into its box; higher label wins (process in increasing label order).
    m_h, m_w = masks.shape[1], masks.shape[2]
    for k in np.argsort(lab, kind="stable"):
        y1, x1, y2, x2 = pix[k]
        rows, wy = _interp(y1, y2, height, m_h)
        cols, wx = _interp(x1, x2, width, m_w)
        if rows.size == 0 or cols.size == 0:
            continue
        soft = wy @ masks[k] @ wx.T  # [rows, cols]
        region = labels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        np.maximum(region, np.where(soft >= mask_threshold, lab[k], 0).astype(np.uint8), out=region)
    return labels, regions

"""Segmentation metrics from confusion matrices (Scenic-style), all jit-able.

Convention: ``confusion[t, p]`` counts pixels with true label ``t`` predicted as ``p``; pixels whose
label is the ignore label (or outside ``[0, C)``) are not counted.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

#: Pixels per call up to which the one-hot contraction counts exactly (float32 sums of 0/1 products).
EXACT_PIXELS = 2**24


def confusion_matrix(
    label: jnp.ndarray, pred: jnp.ndarray, num_classes: int, mask: jnp.ndarray | None = None
) -> jnp.ndarray:
    """int32 ``[C, C]`` confusion counts, as a one-hot contraction (``einsum('pc,pd->cd')`` over pixels): a
    matmul, which GPUs and TPUs run far faster than the scatter-add of a histogram. One-hot values are exact
    in every float format and the sums are integers below 2^24, so the counts are exact (frames of more than
    :data:`EXACT_PIXELS` pixels fall back to a scatter-add).

    Args:
      label: int ``[...]`` ground truth; values outside ``[0, C)`` are ignored.
      pred: int ``[...]`` predictions in ``[0, C)``, same shape.
      num_classes: C.
      mask: optional bool ``[...]``; False pixels are ignored.
    """
    label = label.astype(jnp.int32).reshape(-1)
    pred = pred.astype(jnp.int32).reshape(-1)
    valid = (label >= 0) & (label < num_classes)
    if mask is not None:
        valid = valid & mask.reshape(-1)
    if label.shape[0] >= EXACT_PIXELS:
        idx = jnp.where(valid, label * num_classes + pred, 0)
        counts = jnp.zeros(num_classes * num_classes, jnp.int32).at[idx].add(valid.astype(jnp.int32))
        return counts.reshape(num_classes, num_classes)
    truth = jax.nn.one_hot(jnp.where(valid, label, -1), num_classes, dtype=jnp.float32)  # -1: a zero row
    guess = jax.nn.one_hot(pred, num_classes, dtype=jnp.float32)
    return jnp.einsum("pc,pd->cd", truth, guess).astype(jnp.int32)


def tp_fp_fn(confusion: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Per-class true positives, false positives and false negatives, each ``[..., C]``."""
    tp = jnp.diagonal(confusion, axis1=-2, axis2=-1)
    fp = confusion.sum(axis=-2) - tp
    fn = confusion.sum(axis=-1) - tp
    return tp, fp, fn


def class_iou(confusion: jnp.ndarray) -> jnp.ndarray:
    """float32 ``[..., C]`` IoU per class; NaN for a class absent from both label and prediction."""
    tp, fp, fn = tp_fp_fn(confusion)
    denom = (tp + fp + fn).astype(jnp.float32)
    return jnp.where(denom > 0, tp / jnp.maximum(denom, 1.0), jnp.nan)


def smoothed_min_iou(confusion: jnp.ndarray, smoothing: float = 100.0) -> jnp.ndarray:
    """The paper's control signal: ``min_c (tp_c + s) / (tp_c + fp_c + fn_c + s)``, background included.

    Args:
      confusion: int ``[..., C, C]``.
    Returns:
      float32 ``[...]`` in (0, 1].
    """
    tp, fp, fn = tp_fp_fn(confusion)
    tp = tp.astype(jnp.float32)
    iou = (tp + smoothing) / (tp + fp + fn + smoothing)
    return iou.min(axis=-1)


def iou_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, object]:
    """Stream-level scores from per-class counts summed over all frames (host side, numpy).

    Args:
      tp, fp, fn: int ``[C]`` totals.
    Returns:
      ``class_iou`` (list of C floats, NaN where a class never appears in label or prediction),
      ``miou`` (mean over *foreground* classes 1..C-1 that appear; NaN if none), and the counts.
    """
    tp, fp, fn = (np.asarray(a, np.int64) for a in (tp, fp, fn))
    denom = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)
    fg = iou[1:]
    miou = float(np.nanmean(fg)) if np.any(~np.isnan(fg)) else float("nan")
    return {
        "class_iou": [float(v) for v in iou],
        "miou": miou,
        "tp": tp.tolist(),
        "fp": fp.tolist(),
        "fn": fn.tolist(),
    }


def stream_iou(confusion: np.ndarray) -> dict[str, object]:
    """:func:`iou_from_counts` of a confusion matrix summed over all frames (int ``[C, C]``)."""
    conf = np.asarray(confusion, np.int64)
    tp = np.diag(conf)
    return iou_from_counts(tp, conf.sum(0) - tp, conf.sum(1) - tp)

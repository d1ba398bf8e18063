"""Metrics against a plain numpy reference, on random and hand-made cases."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jitnet_jax.student.metrics import class_iou, confusion_matrix, smoothed_min_iou, stream_iou


def np_confusion(label: np.ndarray, pred: np.ndarray, c: int) -> np.ndarray:
    conf = np.zeros((c, c), np.int64)
    for t, p in zip(label.ravel(), pred.ravel()):
        if 0 <= t < c:
            conf[t, p] += 1
    return conf


def np_min_iou(label: np.ndarray, pred: np.ndarray, c: int, s: float = 100.0) -> float:
    vals = []
    for k in range(c):
        lab = label == k
        prd = (pred == k) & (label < c)
        tp = np.sum(lab & prd)
        fp = np.sum(~lab & prd)
        fn = np.sum(lab & ~prd)
        vals.append((tp + s) / (tp + fp + fn + s))
    return float(min(vals))


@pytest.mark.parametrize("seed", range(5))
def test_random_cases_match_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    c = int(rng.integers(2, 6))
    label = rng.integers(0, c, size=(23, 31))
    label[rng.random(label.shape) < 0.1] = 255  # ignore label
    pred = rng.integers(0, c, size=(23, 31))
    conf = np.asarray(jax.jit(confusion_matrix, static_argnums=2)(label, pred, c))
    np.testing.assert_array_equal(conf, np_confusion(label, pred, c))
    np.testing.assert_allclose(float(smoothed_min_iou(conf)), np_min_iou(label, pred, c), rtol=1e-6)
    ref = np.diag(conf) / (conf.sum(0) + conf.sum(1) - np.diag(conf))
    np.testing.assert_allclose(np.asarray(class_iou(conf)), ref, rtol=1e-6)


def test_hand_made_case() -> None:
    label = np.array([[0, 0, 1, 1], [0, 2, 2, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 2, 0, 2]])
    conf = np.asarray(confusion_matrix(label, pred, 3))
    # rows = truth, cols = prediction; the ignored pixel is not counted
    np.testing.assert_array_equal(conf, [[2, 1, 0], [0, 2, 0], [1, 0, 1]])
    iou = np.asarray(class_iou(conf))
    np.testing.assert_allclose(iou, [2 / 4, 2 / 3, 1 / 2])
    assert float(smoothed_min_iou(conf, 0.0)) == pytest.approx(0.5)
    assert float(smoothed_min_iou(conf, 100.0)) == pytest.approx(min(102 / 104, 102 / 103, 101 / 102))


def test_absent_class_is_nan_and_excluded_from_miou() -> None:
    conf = np.array([[10, 0, 0], [5, 5, 0], [0, 0, 0]])
    out = stream_iou(conf)
    assert np.isnan(out["class_iou"][2])
    assert out["miou"] == pytest.approx(0.5)  # foreground class 1 only
    assert float(smoothed_min_iou(conf)) == pytest.approx(105 / 110)


def test_stream_iou_sums_over_frames_not_mean_of_frames() -> None:
    # frame 1: class 1 perfect but tiny; frame 2: class 1 large and half wrong
    f1 = np_confusion(np.array([1, 0, 0, 0]), np.array([1, 0, 0, 0]), 2)
    f2 = np_confusion(np.array([1] * 8 + [0] * 8), np.array([1] * 4 + [0] * 12), 2)
    out = stream_iou(f1 + f2)
    assert out["miou"] == pytest.approx(5 / 9)
    assert out["tp"] == [11, 5]


def test_confusion_is_a_contraction_not_a_scatter() -> None:
    """The per-frame confusion matrix is a one-hot contraction (a ``dot_general``, fast on GPUs and TPUs)
    with no scatter-add, and with a mask it still counts exactly what numpy counts."""
    c, shape = 4, (90, 160)
    rng = np.random.default_rng(7)
    label = rng.integers(0, c, size=shape)
    label[rng.random(shape) < 0.2] = 255
    pred = rng.integers(0, c, size=shape)
    mask = rng.random(shape) < 0.7
    fn = jax.jit(confusion_matrix, static_argnums=2)
    text = str(jax.make_jaxpr(confusion_matrix, static_argnums=2)(label, pred, c, mask))
    assert "dot_general" in text and "scatter" not in text, text
    conf = np.asarray(fn(label, pred, c, mask))
    np.testing.assert_array_equal(conf, np_confusion(np.where(mask, label, 255), pred, c))
    assert conf.dtype == np.int32

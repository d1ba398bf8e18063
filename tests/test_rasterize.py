"""Golden tests of teacher-instance rasterisation (box order, normalisation, thresholds, priority, regions)."""

from __future__ import annotations

import numpy as np
import pytest

from jitnet_jax.data.label_store import DataError
from teacher.class_groups import COCO_ID, coco_to_label, parse_groups
from teacher.rasterize import Instances, check_instances, rasterize

LUT = coco_to_label(parse_groups("person;car,bus,truck;bicycle,motorcycle"))


def inst(boxes, classes, scores, masks=None, m=28):
    n = len(classes)
    if masks is None:
        masks = np.ones((n, m, m), np.float32)
    return check_instances(
        Instances(
            np.asarray(boxes, np.float32).reshape(n, 4), np.asarray(classes), np.asarray(scores), masks
        ),
        "t",
    )


def test_box_order_is_y1_x1_y2_x2_and_normalised():
    # top-right quadrant: y in [0, .5), x in [.5, 1)
    labels, _ = rasterize(inst([[0.0, 0.5, 0.5, 1.0]], [1], [0.9]), 4, 8, LUT)
    expected = np.zeros((4, 8), np.uint8)
    expected[0:2, 4:8] = 1
    np.testing.assert_array_equal(labels, expected)
    # same normalised box at twice the resolution covers twice the pixels
    labels2, _ = rasterize(inst([[0.0, 0.5, 0.5, 1.0]], [1], [0.9]), 8, 16, LUT)
    assert labels2.sum() == 4 * 8 and labels2[0:4, 8:16].all()


def test_score_threshold_keeps_half_and_drops_below():
    kept, _ = rasterize(inst([[0, 0, 1, 1]], [3], [0.5]), 4, 4, LUT)
    dropped, w = rasterize(inst([[0, 0, 1, 1]], [3], [0.49]), 4, 4, LUT)
    assert (kept == 2).all()
    assert (dropped == 0).all() and (w == 1).all()


def test_overlap_higher_group_wins_in_any_order():
    boxes = [[0.0, 0.0, 1.0, 0.75], [0.0, 0.25, 1.0, 1.0]]
    for order in ([0, 1], [1, 0]):
        b = [boxes[i] for i in order]
        c = [[1, 4][i] for i in order]  # person (group 1), motorcycle (group 3)
        labels, _ = rasterize(inst(b, c, [0.9, 0.9]), 2, 8, LUT)
        np.testing.assert_array_equal(labels[0], [1, 1, 3, 3, 3, 3, 3, 3])


def test_class_group_mapping_and_unmapped_classes():
    labels, w = rasterize(
        inst([[0, 0, 1, 0.5], [0, 0.5, 1, 1]], [COCO_ID["bus"], COCO_ID["dog"]], [0.9, 0.9]), 2, 4, LUT
    )
    np.testing.assert_array_equal(labels, [[2, 2, 0, 0], [2, 2, 0, 0]])
    # the dog's box makes no box region (only mapped classes do); the bus box dilated 15% covers col 2? no:
    # bus box x in [0, 2) px, dilated by 0.3 px -> [0, 2.3): centres 0.5, 1.5 only. 2 = box, 1 = background.
    np.testing.assert_array_equal(w, [[2, 2, 1, 1], [2, 2, 1, 1]])


def test_dilation_is_15_percent_per_side():
    # 20x20 px box at rows/cols [40, 60) of 100x100; 15% of 20 = 3 px each side -> [37, 63)
    _, w = rasterize(inst([[0.4, 0.4, 0.6, 0.6]], [1], [0.9]), 100, 100, LUT)
    expected = np.ones((100, 100), np.uint8)
    expected[37:63, 37:63] = 2
    np.testing.assert_array_equal(w, expected)
    _, w0 = rasterize(inst([[0.4, 0.4, 0.6, 0.6]], [1], [0.9]), 100, 100, LUT, dilation=0.0)
    assert (w0 == 2).sum() == 400


def test_soft_mask_resized_into_box_and_thresholded():
    m = np.zeros((1, 28, 28), np.float32)
    m[0, :, :14] = 0.9  # left half of the box
    m[0, :, 14:] = 0.4  # right half below threshold
    labels, _ = rasterize(inst([[0.25, 0.0, 0.75, 1.0]], [1], [0.9], masks=m), 4, 8, LUT)
    expected = np.zeros((4, 8), np.uint8)
    expected[1:3, 0:4] = 1
    np.testing.assert_array_equal(labels, expected)


def test_empty_and_invalid_instances():
    labels, w = rasterize(Instances.empty(), 3, 5, LUT)
    assert labels.shape == (3, 5) and labels.dtype == np.uint8 and (labels == 0).all()
    assert w.dtype == np.uint8 and (w == 1).all()
    with pytest.raises(DataError, match="f.npy: frame 3: unknown class id 81"):
        check_instances(
            Instances(np.zeros((1, 4)), np.array([81]), np.ones(1), np.ones((1, 28, 28))), "f.npy: frame 3"
        )
    with pytest.raises(DataError, match="boxes have shape"):
        check_instances(Instances(np.zeros((2, 3)), np.array([1, 1]), np.ones(2), np.ones((2, 28, 28))), "x")
    with pytest.raises(DataError, match="masks have shape"):
        check_instances(Instances(np.zeros((1, 4)), np.array([1]), np.ones(1), np.ones((1, 28))), "x")

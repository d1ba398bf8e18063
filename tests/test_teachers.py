"""Heavier YOLOv8n-seg teachers (tiles, TTA), their CamVid scoring and the live summary's speedup bound."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from teacher.backends.yolov8_multi import merge_detections, resample_mask, tile_starts, views


def test_tiles_cover_the_image_evenly_and_overlap() -> None:
    assert tile_starts(500) == [0]
    assert tile_starts(640) == [0]
    assert tile_starts(720) == [0, 80]
    assert tile_starts(1280) == [0, 640]
    assert tile_starts(1300) == [0, 330, 660]
    frame = np.zeros((180, 320, 3), np.uint8)
    assert len(views(frame, 640, False)) == 1  # the letterbox
    tiles = views(frame, 1280, True)
    assert len(tiles) == 4 and all(v[0].shape == (640, 640, 3) and v[4] for v in tiles)
    assert sorted((v[2], v[3]) for v in tiles) == [(-80.0, -640.0), (-80.0, 0.0), (0.0, -640.0), (0.0, 0.0)]
    with pytest.raises(ValueError, match="at least 640"):
        views(frame, 320, False)


def test_resample_mask_is_identity_on_its_own_box_and_zero_outside() -> None:
    rng = np.random.default_rng(0)
    m = rng.random((28, 28)).astype(np.float32)
    box = np.array([0.1, 0.2, 0.5, 0.6])
    np.testing.assert_allclose(resample_mask(m, box, box), m, atol=1e-6)
    right_half = np.array([0.1, 0.4, 0.5, 0.8])  # half inside the source box, half outside
    out = resample_mask(np.ones((28, 28), np.float32), box, right_half)
    assert out[:, :13].min() == 1.0 and out[:, 15:].max() == 0.0


def test_merge_keeps_one_box_per_cluster_with_the_mean_mask() -> None:
    boxes = np.array(
        [[0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.52], [0.6, 0.6, 0.9, 0.9], [0.1, 0.1, 0.5, 0.5]]
    )
    classes = np.array([2, 2, 2, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    masks = np.stack([np.ones((28, 28)), np.zeros((28, 28)), np.ones((28, 28)), np.ones((28, 28))]).astype(
        np.float32
    )
    b, c, s, m = merge_detections(boxes, classes, scores, masks, 0.5, 100)
    assert c.tolist() == [2, 2, 0] and s.tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert 0.4 < m[0].mean() < 0.6  # the mean of a full and an empty mask of its cluster
    assert m[1].min() == 1.0 and m[2].min() == 1.0


def test_registry_knows_the_heavier_teachers() -> None:
    from teacher.backends import BACKENDS

    assert {"yolov8n-seg-1280", "yolov8n-seg-tta"} <= set(BACKENDS)


def test_heavier_teacher_finds_cars_on_a_real_frame(shared_data: Path) -> None:
    from teacher.backends import make_teacher
    from tests.test_backends import frame_at

    frame = frame_at(shared_data / "clips" / "residential_street_traffic.mp4", 0)
    t = make_teacher("yolov8n-seg-1280")
    assert t.calls(*frame.shape[:2]) == 5
    inst = t(frame)
    assert ((inst.classes == 3) & (inst.scores >= 0.5)).any()  # COCO 3 = car
    assert inst.masks.shape == (len(inst.classes), 28, 28)
    assert ((inst.boxes >= 0) & (inst.boxes <= 1)).all()


def test_camvid_scoring_maps_classes_and_ignores_unlabelled(tmp_path: Path) -> None:
    from PIL import Image

    from experiments.eval_teachers import camvid_targets, confusion_counts, score_teacher

    ann = np.array([[8, 9, 10, 11], [0, 3, 8, 8]], np.uint8)  # car, pedestrian, bicyclist, unlabelled
    assert camvid_targets(ann).tolist() == [[2, 1, 3, 255], [0, 0, 2, 2]]
    pred = np.array([[2, 1, 0, 3], [0, 2, 2, 0]], np.uint8)
    tp, fp, fn = confusion_counts(pred, camvid_targets(ann))
    assert tp.tolist() == [1, 1, 2, 0] and fp.tolist() == [2, 0, 1, 0] and fn.tolist() == [1, 0, 1, 1]
    img = tmp_path / "a.jpg"
    Image.fromarray(np.zeros((2, 4, 3), np.uint8)).save(img)
    Image.fromarray(ann).save(tmp_path / "a.png")
    r = score_teacher(lambda f: pred, [(img, tmp_path / "a.png")], progress=False)
    assert r["class_iou"]["car"] == pytest.approx(2 / 4) and r["miou"] == pytest.approx((1 + 0.5 + 0) / 3)


def test_live_summary_prints_the_speedup_bound() -> None:
    from jitnet_jax.online.live import LiveResult, format_live_summary, live_summary

    pf = {k: np.zeros((4, 2), np.int64) for k in ("tp", "fp", "fn")}
    pf.update(frame=np.arange(4), teacher=np.array([1, 0, 0, 0]), updates=np.array([2, 0, 0, 0]))
    res = LiveResult(None, pf, 1.0, 0.0, teacher_s=np.array([0.04]), audit_s=np.array([0.036]))
    s = live_summary(res, 0, ("background", "car"), 2.0, predict_ms=9.0, machine="test cpu")
    assert s["speedup_bound"] == pytest.approx(4.0) and s["student_predict_ms"] == 9.0
    s.update(
        frames=4, teacher_frames=1, teacher_fraction=0.25, updates=2, speedup_cost_model=1.0, compile_s=0.0
    )
    text = format_live_summary(s)
    assert "speedup bound" in text and "36.0 / 9.0" in text and "test cpu" in text

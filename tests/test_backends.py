"""Real TFLite teachers on real frames (YOLOv8n-seg and DeepLabV3 VOC)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from jitnet_jax.data.label_store import DataError
from jitnet_jax.data.video import read_video
from teacher.class_groups import COCO_ID, coco_to_label, parse_groups
from teacher.rasterize import rasterize

pytest.importorskip(
    "ai_edge_litert", reason="TFLite teachers need ai-edge-litert (pip install -e .[teacher])"
)


def frame_at(path, index):
    for t, f in enumerate(read_video(path)):
        if t == index:
            return f.copy()
    raise AssertionError(f"{path} has no frame {index}")


def test_nms_classwise():
    from teacher.backends.yolov8_seg import classwise_nms, nms

    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert classwise_nms(boxes, scores, np.array([0, 0, 0, 1]), 0.5).tolist() == [0, 2, 3]


def test_yolo_finds_cars_with_masks_in_their_boxes(shared_data):
    from teacher.backends import make_teacher

    teacher = make_teacher("yolov8_seg", shared_data / "models" / "yolov8n-seg_int8.tflite")
    clip = shared_data / "clips" / "residential_street_traffic.mp4"
    lut = coco_to_label(parse_groups("person;car,bus,truck"))
    for index in (0, 20):
        frame = frame_at(clip, index)
        h, w = frame.shape[:2]
        inst = teacher(frame)
        cars = np.flatnonzero((inst.classes == COCO_ID["car"]) & (inst.scores >= 0.5))
        assert cars.size >= 1, f"frame {index}: no confident car among classes {inst.classes}"
        assert ((inst.scores > 0.25) & (inst.scores <= 1.0)).all()
        assert inst.masks.shape == (len(inst.classes), 28, 28)
        assert ((inst.boxes >= 0) & (inst.boxes <= 1)).all()
        assert (inst.boxes[:, 2] > inst.boxes[:, 0]).all() and (inst.boxes[:, 3] > inst.boxes[:, 1]).all()
        best = cars[np.argmax(inst.scores[cars])]
        assert 0.2 < (inst.masks[best] > 0.5).mean() <= 1.0
        # rasterised at full resolution, the car's mask pixels lie inside its box
        one = type(inst)(*(a[best : best + 1] for a in inst))
        labels, _ = rasterize(one, h, w, lut)
        ys, xs = np.nonzero(labels == 2)
        assert ys.size > 50
        y1, x1, y2, x2 = one.boxes[0] * np.array([h, w, h, w])
        assert ys.min() >= np.floor(y1) and ys.max() <= np.ceil(y2)
        assert xs.min() >= np.floor(x1) and xs.max() <= np.ceil(x2)


def test_deeplab_finds_person_and_car(shared_data):
    from teacher.backends import make_teacher

    teacher = make_teacher("deeplab", shared_data / "models" / "deeplabv3_mnv2_pascal_quant.tflite")
    lut = coco_to_label(parse_groups("person;car,bus,truck"))
    person = frame_at(shared_data / "clips" / "indoor_people_one_by_one.mp4", 120)
    seg = teacher.segment(person)
    assert (seg == 15).mean() > 0.01  # VOC 15 = person
    labels, weights = rasterize(teacher(person), 90, 160, lut)
    assert (labels == 1).mean() > 0.01 and (weights[labels == 1] == 2).all()  # REGION_BOX
    lot = frame_at(shared_data / "clips" / "parking_lot_overhead.mp4", 200)
    inst = teacher(lot)
    assert (inst.classes == COCO_ID["car"]).any() and (inst.scores == 1.0).all()
    labels, _ = rasterize(inst, 90, 160, lut)
    assert (labels == 2).sum() > 20


def test_missing_litert_gives_install_hint(monkeypatch, shared_data):
    from teacher.backends import load_interpreter

    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(DataError, match=r"pip install -e \.\[teacher\]"):
        load_interpreter(shared_data / "models" / "yolov8n-seg_int8.tflite")


def test_bad_model_and_unknown_teacher(tmp_path):
    from teacher.backends import load_interpreter, make_teacher

    with pytest.raises(DataError, match="unknown teacher 'maskrcnn'"):
        make_teacher("maskrcnn", tmp_path / "x.tflite")
    with pytest.raises(DataError, match="x.tflite: teacher model file not found"):
        load_interpreter(tmp_path / "x.tflite")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer" * 10)
    with pytest.raises(DataError, match="bad.tflite: not a loadable TFLite model"):
        load_interpreter(bad)


def test_a_model_file_for_another_backend_is_refused(shared_data):
    from teacher.backends import make_teacher

    models = shared_data / "models"
    with pytest.raises(DataError, match=r"deeplabv3_mnv2_pascal_quant.tflite: not a YOLOv8-seg model"):
        make_teacher("yolov8_seg", models / "deeplabv3_mnv2_pascal_quant.tflite")
    with pytest.raises(DataError, match=r"yolov8n-seg_int8.tflite: not a DeepLabV3 VOC"):
        make_teacher("deeplab", models / "yolov8n-seg_int8.tflite")
    with pytest.raises(DataError, match=r"inputs \[1, 257, 257, 3\] float32"):  # the float DeepLab
        make_teacher("deeplab", models / "deeplabv3_257_mv_gpu.tflite")

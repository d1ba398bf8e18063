"""YOLOv8n-seg (TFLite, COCO-80 instance segmentation) as a teacher producing LVS-format instances.

Model I/O: input float32 ``[1, 640, 640, 3]`` RGB/255, letterboxed with pad 114; outputs ``[1, 116, 8400]``
(cx, cy, w, h normalised to the 640 canvas, 80 class scores, 32 mask coefficients) and mask prototypes
``[1, 160, 160, 32]``. We keep candidates with score >= ``conf``, run class-wise NMS in numpy, and build each
28x28 box mask as ``sigmoid(coef @ protos)`` sampled bilinearly inside the box (so it is cropped to it).
"""

from __future__ import annotations

import os

import numpy as np

from teacher.backends import check_signature, letterbox, load_interpreter
from teacher.rasterize import Instances

INPUT = 640
PROTO = 160
MASK = 28


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS. ``boxes`` float ``[N, 4]`` (x1, y1, x2, y2); returns kept indices by decreasing score."""
    order = np.argsort(-scores, kind="stable")
    areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.maximum(xx2 - xx1, 0) * np.maximum(yy2 - yy1, 0)
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.int64)


def classwise_nms(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float
) -> np.ndarray:
    """NMS within each class (offset trick: boxes of different classes never overlap)."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    offset = classes.astype(np.float64)[:, None] * (boxes.max() + 1.0)
    return nms(boxes + offset, scores, iou_threshold)


def _sample_grid(lo: np.ndarray, hi: np.ndarray, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each box ``[lo, hi)`` (in input-cell units) the MASK sample positions' lower index, upper index and
    fraction, each ``[N, MASK]``."""
    t = (np.arange(MASK) + 0.5) / MASK
    u = lo[:, None] + t[None, :] * (hi - lo)[:, None] - 0.5
    u = np.clip(u, 0, n_in - 1)
    i0 = np.floor(u).astype(np.int64)
    return i0, np.minimum(i0 + 1, n_in - 1), (u - i0).astype(np.float32)


class YoloV8Seg:
    """Callable teacher: ``frame uint8 [H, W, 3] -> Instances``.

    Args:
      model_path: ``yolov8n-seg_int8.tflite``.
      conf: minimum class score kept (0.3, like lvs_mini; rasterisation later applies 0.5).
      iou: class-wise NMS IoU threshold.
      max_det: at most this many detections per frame.
    """

    name = "yolov8_seg"

    def __init__(
        self,
        model_path: str | os.PathLike,
        num_threads: int = 2,
        conf: float = 0.3,
        iou: float = 0.5,
        max_det: int = 100,
    ):
        self.it = load_interpreter(model_path, num_threads)
        check_signature(
            self.it,
            model_path,
            "YOLOv8-seg",
            [((1, INPUT, INPUT, 3), "float32")],
            [((1, 116, 8400), "float32"), ((1, PROTO, PROTO, 32), "float32")],
        )
        self.input_index = self.it.get_input_details()[0]["index"]
        outs = self.it.get_output_details()
        self.det_index = next(o["index"] for o in outs if tuple(o["shape"]) == (1, 116, 8400))
        self.proto_index = next(o["index"] for o in outs if tuple(o["shape"]) == (1, PROTO, PROTO, 32))
        self.conf, self.iou, self.max_det = conf, iou, max_det

    def __call__(self, frame: np.ndarray) -> Instances:
        h, w = frame.shape[:2]
        canvas, r, top, left = letterbox(frame, INPUT, 114)
        xyxy, classes, scores, masks = self.detect(canvas)
        if len(classes) == 0:
            return Instances.empty(MASK)
        # Boxes back to the original frame, normalised (y1, x1, y2, x2).
        x1 = np.clip((xyxy[:, 0] - left) / r / w, 0, 1)
        x2 = np.clip((xyxy[:, 2] - left) / r / w, 0, 1)
        y1 = np.clip((xyxy[:, 1] - top) / r / h, 0, 1)
        y2 = np.clip((xyxy[:, 3] - top) / r / h, 0, 1)
        boxes = np.stack([y1, x1, y2, x2], 1).astype(np.float32)
        return Instances(
            boxes, (classes + 1).astype(np.int32), scores.astype(np.float32), masks.astype(np.float32)
        )

    def detect(self, canvas: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One model call on a ``640 x 640`` canvas (uint8 ``[640, 640, 3]``) with NMS and box masks.

        Returns:
          ``(xyxy float32 [N, 4] in canvas pixels (x1, y1, x2, y2), classes int [N] (COCO 0..79),
          scores float32 [N], masks float32 [N, 28, 28] over each box)``; N = 0 when nothing passes ``conf``.
        """
        self.it.set_tensor(self.input_index, (canvas.astype(np.float32) / 255.0)[None])
        self.it.invoke()
        pred = self.it.get_tensor(self.det_index)[0].T  # [8400, 116]
        protos = self.it.get_tensor(self.proto_index)[0]  # [160, 160, 32]
        cls_scores = pred[:, 4:84]
        classes = cls_scores.argmax(1)
        scores = cls_scores[np.arange(len(classes)), classes]
        sel = scores >= self.conf
        if not sel.any():
            return (
                np.zeros((0, 4), np.float32),
                np.zeros(0, np.int64),
                np.zeros(0, np.float32),
                np.zeros((0, MASK, MASK), np.float32),
            )
        pred, classes, scores = pred[sel], classes[sel], scores[sel]
        cx, cy, bw, bh = (pred[:, k] * INPUT for k in range(4))  # pixels on the 640 canvas
        xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        keep = classwise_nms(xyxy, scores, classes, self.iou)[: self.max_det]
        xyxy, classes, scores, coef = xyxy[keep], classes[keep], scores[keep], pred[keep, 84:116]
        # Masks: sample the prototypes on a MASK x MASK grid inside each box, then sigmoid(coef . protos).
        s = PROTO / INPUT
        yi0, yi1, yf = _sample_grid(xyxy[:, 1] * s, xyxy[:, 3] * s, PROTO)
        xi0, xi1, xf = _sample_grid(xyxy[:, 0] * s, xyxy[:, 2] * s, PROTO)
        # proj[n, y, x] = protos[y, x] . coef[n], only rows/cols used by each box.
        rows = protos[np.concatenate([yi0, yi1], 1)]  # [N, 2*MASK, 160, 32]
        logits_rows = np.einsum("nyxc,nc->nyx", rows, coef)  # [N, 2*MASK, 160]
        top_r, bot_r = logits_rows[:, :MASK], logits_rows[:, MASK:]
        lr = top_r * (1 - yf)[:, :, None] + bot_r * yf[:, :, None]  # [N, MASK, 160]
        n_idx = np.arange(len(keep))[:, None, None]
        m_idx = np.arange(MASK)[None, :, None]
        left_c = lr[n_idx, m_idx, xi0[:, None, :]]
        right_c = lr[n_idx, m_idx, xi1[:, None, :]]
        logits = left_c * (1 - xf)[:, None, :] + right_c * xf[:, None, :]
        masks = 1.0 / (1.0 + np.exp(-logits))
        return xyxy.astype(np.float32), classes, scores.astype(np.float32), masks.astype(np.float32)

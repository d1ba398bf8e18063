"""Heavier teachers from the shipped YOLOv8n-seg: several views of a frame, their detections merged.

The int8 model's input is fixed at ``640 x 640``, so a larger input is made of tiles: the frame resized so
that its long side is ``size`` pixels and cut into ``640 x 640`` tiles (evenly spaced, overlapping, the last
one padded with grey 114 when the image is smaller than a tile). A view is one size with or without a
horizontal flip; size 640 is the plain letterbox of :class:`~teacher.backends.yolov8_seg.YoloV8Seg`.

Registered teachers (``teacher.backends.BACKENDS``):

* ``yolov8n-seg-1280``: the whole frame at 640 plus the frame at 1280 in tiles (5 model calls on a 16:9 or
  4:3 frame), so small and distant objects are seen at twice the resolution;
* ``yolov8n-seg-tta``: test-time augmentation, the frame at 640 and at 960 (tiles), each also flipped
  horizontally (6 calls on a 16:9 frame, 10 on a 4:3 one).

Merging: every view's detections (after its own NMS, each with its ``28 x 28`` box mask from its own
prototypes) are mapped back to the frame, then class-wise NMS keeps the highest-scoring box of each cluster
and its mask becomes the mean of the cluster's masks (every member whose IoU with the kept box exceeds the
NMS threshold, resampled into the kept box): the masks of the views are merged, not just the best one kept.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from teacher.backends import letterbox
from teacher.backends.yolov8_seg import INPUT, MASK, YoloV8Seg, classwise_nms
from teacher.rasterize import Instances

#: A view's canvas (uint8 ``[640, 640, 3]``) with ``scale`` and ``(off_y, off_x)``: a canvas pixel ``p``
#: is the (flipped, when ``flip``) frame's pixel ``(p - off) / scale``.
View = tuple[np.ndarray, float, float, float, bool]


def tile_starts(length: int, tile: int = INPUT) -> list[int]:
    """Start offsets of the tiles that cover ``length`` pixels: one tile at 0 when ``length <= tile``,
    else ``ceil(length / tile)`` tiles spread evenly from 0 to ``length - tile`` (they overlap)."""
    if length <= tile:
        return [0]
    n = math.ceil(length / tile)
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def views(frame: np.ndarray, size: int, flip: bool) -> list[View]:
    """The canvases of ``frame`` (uint8 ``[H, W, 3]``) at long side ``size``: the letterbox for
    ``size == 640``, else the tiles of the frame resized to long side ``size``.

    Raises:
      ValueError: ``size < 640``.
    """
    from PIL import Image

    if size < INPUT:
        raise ValueError(f"view size {size}: must be at least {INPUT}")
    img = np.ascontiguousarray(frame[:, ::-1]) if flip else frame
    if size == INPUT:
        canvas, r, top, left = letterbox(img, INPUT, 114)
        return [(canvas, r, float(top), float(left), flip)]
    h, w = img.shape[:2]
    s = size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    big = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
    out = []
    for oy in tile_starts(nh):
        for ox in tile_starts(nw):
            canvas = np.full((INPUT, INPUT, 3), 114, np.uint8)
            crop = big[oy : oy + INPUT, ox : ox + INPUT]
            canvas[: crop.shape[0], : crop.shape[1]] = crop
            out.append((canvas, s, float(-oy), float(-ox), flip))
    return out


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box float ``[4]`` with ``boxes`` float ``[N, 4]`` (any consistent corner order)."""
    lo = np.maximum(box[:2], boxes[:, :2])
    hi = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.maximum(hi - lo, 0), axis=1)
    area = np.prod(np.maximum(box[2:] - box[:2], 0))
    areas = np.prod(np.maximum(boxes[:, 2:] - boxes[:, :2], 0), axis=1)
    return inter / np.maximum(area + areas - inter, 1e-9)


def resample_mask(mask: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``mask`` float ``[M, M]`` over box ``src`` (y1, x1, y2, x2) sampled bilinearly at the ``M x M`` grid
    of box ``dst``; 0 outside ``src``. Returns float32 ``[M, M]``."""
    m = mask.shape[0]
    t = (np.arange(m) + 0.5) / m

    def coords(d0: float, d1: float, s0: float, s1: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = d0 + t * (d1 - d0)
        u = (pos - s0) / max(s1 - s0, 1e-9) * m - 0.5
        inside = (u >= -0.5) & (u <= m - 0.5)
        u = np.clip(u, 0, m - 1)
        i0 = np.floor(u).astype(np.int64)
        return i0, u - i0, inside

    yi, yf, yin = coords(dst[0], dst[2], src[0], src[2])
    xi, xf, xin = coords(dst[1], dst[3], src[1], src[3])
    yi1, xi1 = np.minimum(yi + 1, m - 1), np.minimum(xi + 1, m - 1)
    top = mask[yi][:, xi] * (1 - xf) + mask[yi][:, xi1] * xf
    bot = mask[yi1][:, xi] * (1 - xf) + mask[yi1][:, xi1] * xf
    out = top * (1 - yf)[:, None] + bot * yf[:, None]
    return (out * (yin[:, None] & xin[None, :])).astype(np.float32)


def merge_detections(
    boxes: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    masks: np.ndarray,
    iou: float,
    max_det: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Class-wise NMS over the detections of all views, each kept box's mask the mean of its cluster's.

    Args:
      boxes: float ``[N, 4]`` (y1, x1, y2, x2) in one frame's units; classes: int ``[N]``; scores: float
        ``[N]``; masks: float ``[N, M, M]`` over each box.
      iou: a detection of the same class whose IoU with a kept box exceeds this joins its cluster.
      max_det: at most this many kept.
    Returns:
      ``(boxes, classes, scores, masks)`` of the kept detections, by decreasing score.
    """
    # classwise_nms works on (x1, y1, x2, y2); the corner order does not change IoU.
    keep = classwise_nms(boxes[:, [1, 0, 3, 2]], scores, classes, iou)[:max_det]
    merged = np.empty((len(keep), *masks.shape[1:]), np.float32)
    for j, k in enumerate(keep):
        same = np.flatnonzero(classes == classes[k])
        members = same[box_iou(boxes[k], boxes[same]) > iou]
        members = members if len(members) else np.asarray([k])
        merged[j] = np.mean([resample_mask(masks[i], boxes[i], boxes[k]) for i in members], axis=0)
    return boxes[keep], classes[keep], scores[keep], merged


class YoloV8SegMulti(YoloV8Seg):
    """Callable teacher ``frame uint8 [H, W, 3] -> Instances`` over several views (see module docstring).

    Args:
      model_path: ``yolov8n-seg_int8.tflite``.
      sizes: long sides of the views (640: the letterbox; larger: tiles of the resized frame).
      flips: for each size, the views without (False) and/or with (True) a horizontal flip.
      conf, iou, max_det: as :class:`~teacher.backends.yolov8_seg.YoloV8Seg` (``iou`` also merges views).
    """

    name = "yolov8_seg_multi"

    def __init__(
        self,
        model_path: str | os.PathLike,
        num_threads: int = 2,
        sizes: Sequence[int] = (INPUT, 2 * INPUT),
        flips: Sequence[bool] = (False,),
        conf: float = 0.3,
        iou: float = 0.5,
        max_det: int = 100,
    ):
        super().__init__(model_path, num_threads=num_threads, conf=conf, iou=iou, max_det=max_det)
        bad = [x for x in sizes if int(x) < INPUT]
        if not sizes or not flips or bad:
            raise ValueError(f"YOLOv8 views: need sizes >= {INPUT} and flips, got sizes {list(sizes)}")
        self.sizes, self.flips = tuple(int(x) for x in sizes), tuple(bool(f) for f in flips)

    def calls(self, height: int, width: int) -> int:
        """Model calls per frame of ``height x width``."""
        n = 0
        for size in self.sizes:
            if size == INPUT:
                n += 1
            else:
                s = size / max(height, width)
                n += len(tile_starts(max(1, round(height * s)))) * len(tile_starts(max(1, round(width * s))))
        return n * len(self.flips)

    def __call__(self, frame: np.ndarray) -> Instances:
        h, w = frame.shape[:2]
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        for size in self.sizes:
            for flip in self.flips:
                for canvas, s, off_y, off_x, flipped in views(frame, size, flip):
                    xyxy, classes, scores, masks = self.detect(canvas)
                    if len(classes) == 0:
                        continue
                    x1 = (xyxy[:, 0] - off_x) / s
                    x2 = (xyxy[:, 2] - off_x) / s
                    y1 = (xyxy[:, 1] - off_y) / s
                    y2 = (xyxy[:, 3] - off_y) / s
                    if flipped:  # back to the unflipped frame: mirror x and the masks
                        x1, x2 = w - x2, w - x1
                        masks = masks[:, :, ::-1]
                    boxes = np.stack(
                        [
                            np.clip(y1 / h, 0, 1),
                            np.clip(x1 / w, 0, 1),
                            np.clip(y2 / h, 0, 1),
                            np.clip(x2 / w, 0, 1),
                        ],
                        1,
                    )
                    parts.append((boxes, classes, scores, masks))
        if not parts:
            return Instances.empty(MASK)
        boxes, classes, scores, masks = (np.concatenate([p[i] for p in parts]) for i in range(4))
        boxes, classes, scores, masks = merge_detections(
            boxes.astype(np.float64), classes, scores, masks, self.iou, self.max_det
        )
        return Instances(
            boxes.astype(np.float32),
            (classes + 1).astype(np.int32),
            scores.astype(np.float32),
            masks.astype(np.float32),
        )


class YoloV8Seg1280(YoloV8SegMulti):
    """``yolov8n-seg-1280``: the frame at 640 and at 1280 (tiled)."""

    name = "yolov8n-seg-1280"

    def __init__(self, model_path: str | os.PathLike, num_threads: int = 2, **kw: float) -> None:
        super().__init__(model_path, num_threads, sizes=(INPUT, 2 * INPUT), flips=(False,), **kw)


class YoloV8SegTTA(YoloV8SegMulti):
    """``yolov8n-seg-tta``: the frame at 640 and 960 (tiled), each as is and flipped horizontally."""

    name = "yolov8n-seg-tta"

    def __init__(self, model_path: str | os.PathLike, num_threads: int = 2, **kw: float) -> None:
        super().__init__(model_path, num_threads, sizes=(INPUT, 3 * INPUT // 2), flips=(False, True), **kw)

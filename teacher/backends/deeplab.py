"""DeepLabV3 MobileNetV2 (TFLite, PASCAL VOC 21 classes, semantic) as a teacher producing pseudo-instances.

Model I/O (``deeplabv3_mnv2_pascal_quant.tflite``): input uint8 ``[1, 513, 513, 3]`` raw RGB, letterboxed
with pad 128; output int64 ``[1, 513, 513]`` VOC class id (no scores). VOC classes are renamed to COCO names
(``motorbike`` -> ``motorcycle``, ``sofa`` -> ``couch`` ...); every 8-connected region of a class becomes one
instance with score 1.0, its bounding box and a 28x28 mask of the region (the same construction as the
lvs_mini ``parking_lot1`` teacher files), so the usual rasterisation (groups, dilated-box weights) applies.
"""

from __future__ import annotations

import os

import numpy as np

from teacher.backends import check_signature, letterbox, load_interpreter
from teacher.class_groups import COCO_ID
from teacher.rasterize import Instances

INPUT = 513
MASK = 28
VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOC_TO_COCO_NAME: dict[str, str] = {
    "aeroplane": "airplane",
    "bicycle": "bicycle",
    "bird": "bird",
    "boat": "boat",
    "bottle": "bottle",
    "bus": "bus",
    "car": "car",
    "cat": "cat",
    "chair": "chair",
    "cow": "cow",
    "diningtable": "dining table",
    "dog": "dog",
    "horse": "horse",
    "motorbike": "motorcycle",
    "person": "person",
    "pottedplant": "potted plant",
    "sheep": "sheep",
    "sofa": "couch",
    "train": "train",
    "tvmonitor": "tv",
}
#: VOC id -> COCO contiguous id (0 for background).
VOC_TO_COCO = np.array([0] + [COCO_ID[VOC_TO_COCO_NAME[c]] for c in VOC_CLASSES[1:]], np.int32)


def _box_mask(region: np.ndarray) -> np.ndarray:
    """Binary crop ``[h, w]`` -> float32 ``[MASK, MASK]`` (area-sampled by nearest cell centres)."""
    h, w = region.shape
    ys = np.minimum(((np.arange(MASK) + 0.5) * h / MASK).astype(np.int64), h - 1)
    xs = np.minimum(((np.arange(MASK) + 0.5) * w / MASK).astype(np.int64), w - 1)
    return region[np.ix_(ys, xs)].astype(np.float32)


def semantic_to_instances(seg: np.ndarray, min_area: int = 16) -> Instances:
    """VOC label map int ``[H, W]`` -> pseudo-instances (one per 8-connected region of >= ``min_area`` px)."""
    from scipy import ndimage

    h, w = seg.shape
    boxes, classes, masks = [], [], []
    for voc in np.unique(seg):
        if voc == 0 or voc >= len(VOC_TO_COCO):
            continue
        comp, n = ndimage.label(seg == voc, structure=np.ones((3, 3), bool))
        for k, sl in enumerate(ndimage.find_objects(comp), start=1):
            if sl is None:
                continue
            region = comp[sl] == k
            if region.sum() < min_area:
                continue
            boxes.append([sl[0].start / h, sl[1].start / w, sl[0].stop / h, sl[1].stop / w])
            classes.append(VOC_TO_COCO[voc])
            masks.append(_box_mask(region))
    if not boxes:
        return Instances.empty(MASK)
    n = len(boxes)
    return Instances(
        np.asarray(boxes, np.float32), np.asarray(classes, np.int32), np.ones(n, np.float32), np.stack(masks)
    )


class DeepLabVOC:
    """Callable teacher: ``frame uint8 [H, W, 3] -> Instances`` (see module doc)."""

    name = "deeplab"

    def __init__(self, model_path: str | os.PathLike, num_threads: int = 2, min_area: int = 16):
        self.it = load_interpreter(model_path, num_threads)
        check_signature(
            self.it,
            model_path,
            "DeepLabV3 VOC (513, uint8)",
            [((1, INPUT, INPUT, 3), "uint8")],
            [((1, INPUT, INPUT), "int64")],
        )
        self.input_index = self.it.get_input_details()[0]["index"]
        self.output_index = self.it.get_output_details()[0]["index"]
        self.min_area = min_area

    def segment(self, frame: np.ndarray) -> np.ndarray:
        """VOC class per pixel of the letterboxed content region, int ``[h', w']`` (aspect of the frame)."""
        canvas, r, top, left = letterbox(frame, INPUT, 128)
        self.it.set_tensor(self.input_index, canvas[None])
        self.it.invoke()
        seg = self.it.get_tensor(self.output_index)[0]
        nh, nw = round(frame.shape[0] * r), round(frame.shape[1] * r)
        return seg[top : top + nh, left : left + nw]

    def __call__(self, frame: np.ndarray) -> Instances:
        return semantic_to_instances(self.segment(frame), self.min_area)

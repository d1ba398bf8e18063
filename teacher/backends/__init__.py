"""Real TFLite teachers run on CPU with ``ai_edge_litert`` (``pip install -e .[teacher]``).

Every backend is a callable ``teacher(frame uint8 [H, W, 3] RGB) -> Instances`` (LVS record format:
normalised ``(y1, x1, y2, x2)`` boxes, COCO ids 1..80, scores, ``[N, 28, 28]`` box masks), so its output
goes through the same rasterisation as LVS teacher files.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from jitnet_jax.data.label_store import DataError
from teacher.rasterize import Instances


class Teacher(Protocol):
    """A per-frame teacher."""

    name: str

    def __call__(self, frame: np.ndarray) -> Instances: ...


#: name -> (module, class, default model file name in ``<data>/models``)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "yolov8_seg": ("teacher.backends.yolov8_seg", "YoloV8Seg", "yolov8n-seg_int8.tflite"),
    "deeplab": ("teacher.backends.deeplab", "DeepLabVOC", "deeplabv3_mnv2_pascal_quant.tflite"),
    # heavier teachers from the same YOLOv8n-seg model (teacher.backends.yolov8_multi, docs/teachers.md)
    "yolov8n-seg-1280": ("teacher.backends.yolov8_multi", "YoloV8Seg1280", "yolov8n-seg_int8.tflite"),
    "yolov8n-seg-tta": ("teacher.backends.yolov8_multi", "YoloV8SegTTA", "yolov8n-seg_int8.tflite"),
}


def load_interpreter(model_path: str | os.PathLike, num_threads: int = 2) -> Any:
    """Create and allocate an ``ai_edge_litert`` interpreter; clear errors for a missing package/model."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise DataError("TFLite teachers need ai-edge-litert: pip install -e .[teacher]") from None
    path = Path(model_path)
    if not path.is_file():
        raise DataError(f"{path}: teacher model file not found")
    try:
        it = Interpreter(model_path=str(path), num_threads=num_threads)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise DataError(f"{path}: not a loadable TFLite model ({str(e).splitlines()[0][:200]})") from None
    return it


def check_signature(
    it: Any,
    model_path: str | os.PathLike,
    backend: str,
    inputs: list[tuple[tuple[int, ...], str]],
    outputs: list[tuple[tuple[int, ...], str]],
) -> None:
    """Raise a one-line :class:`DataError` unless the interpreter's input/output shapes and dtypes are
    exactly ``inputs`` / ``outputs`` (outputs in any order): a model file that loads but is not the
    model the backend was written for (e.g. a DeepLab file given to ``yolov8_seg``)."""

    def sig(details: list[dict[str, Any]]) -> list[tuple[tuple[int, ...], str]]:
        return [(tuple(int(x) for x in d["shape"]), np.dtype(d["dtype"]).name) for d in details]

    got_in, got_out = sig(it.get_input_details()), sig(it.get_output_details())
    if got_in != inputs or sorted(got_out) != sorted(outputs):

        def fmt(s: list[tuple[tuple[int, ...], str]]) -> str:
            return ", ".join(f"{list(shape)} {dt}" for shape, dt in s)

        raise DataError(
            f"{Path(model_path)}: not a {backend} model (inputs {fmt(got_in)}; outputs {fmt(got_out)}; "
            f"expected inputs {fmt(inputs)}; outputs {fmt(outputs)})"
        )


def default_model_path(name: str) -> Path:
    """``$JITNET_DATA/models/<default file>`` for backend ``name`` (raises if it cannot be found)."""
    if name not in BACKENDS:
        raise DataError(f"unknown teacher {name!r}; choose one of {', '.join(sorted(BACKENDS))}")
    fname = BACKENDS[name][2]
    candidates = []
    if os.environ.get("JITNET_DATA"):
        candidates.append(Path(os.environ["JITNET_DATA"]) / "models" / fname)
    candidates.append(Path(__file__).resolve().parents[3] / "shared" / "data" / "models" / fname)
    for c in candidates:
        if c.is_file():
            return c
    raise DataError(f"teacher {name}: model {fname} not found (pass --model PATH or set JITNET_DATA)")


def make_teacher(name: str, model_path: str | os.PathLike | None = None, num_threads: int = 2) -> Teacher:
    """Instantiate backend ``name`` (see :data:`BACKENDS`) with its TFLite model."""
    if name not in BACKENDS:
        raise DataError(f"unknown teacher {name!r}; choose one of {', '.join(sorted(BACKENDS))}")
    module, cls, _ = BACKENDS[name]
    path = Path(model_path) if model_path is not None else default_model_path(name)
    return getattr(importlib.import_module(module), cls)(path, num_threads=num_threads)


def letterbox(frame: np.ndarray, size: int, pad_value: int) -> tuple[np.ndarray, float, int, int]:
    """Resize ``frame`` uint8 ``[H, W, 3]`` to fit ``size x size`` (aspect kept, bilinear) and centre it on a
    ``pad_value`` canvas. Returns ``(canvas uint8 [size, size, 3], scale, pad_top, pad_left)``."""
    from PIL import Image

    h, w = frame.shape[:2]
    r = min(size / h, size / w)
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    resized = (
        np.asarray(Image.fromarray(frame).resize((nw, nh), Image.BILINEAR)) if (nh, nw) != (h, w) else frame
    )
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas = np.full((size, size, 3), pad_value, np.uint8)
    canvas[top : top + nh, left : left + nw] = resized
    return canvas, r, top, left

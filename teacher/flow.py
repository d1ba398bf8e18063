"""Flow propagation baseline: the teacher's label every ``delta`` frames, warped forward frame by frame with
OpenCV's Farneback dense optical flow (``opencv-python-headless``, the optional ``flow`` extra).

For frame ``t`` that is not a teacher frame, the flow from frame ``t`` back to frame ``t-1`` (grey levels)
gives each pixel ``x`` its source ``x + d(x)`` in the previous frame, and the propagated label is
``label_t(x) = label_{t-1}(x + d(x))`` (nearest neighbour, border replicated). The cost of flow (Farneback
plus the remap) is measured per propagated frame on this machine and reported beside the scores.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from jitnet_jax.data.types import IGNORE_LABEL, StreamSource
from jitnet_jax.eval.baselines import (
    ChunkCallback,
    MethodRun,
    concat_rows,
    confusion_np,
    limited_chunks,
    per_frame_rows,
)

#: Farneback parameters (OpenCV's documented example values): pyr_scale, levels, winsize, iterations,
#: poly_n, poly_sigma, flags.
FARNEBACK = (0.5, 3, 15, 3, 5, 1.2, 0)


def have_opencv() -> bool:
    """True when ``cv2`` can be imported."""
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise ImportError(
            "the flow baseline needs OpenCV: pip install opencv-python-headless (the 'flow' extra)"
        ) from None
    return cv2


def warp_label(label: np.ndarray, prev_frame: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Propagate ``label`` (uint8 ``[H, W]``, aligned with ``prev_frame``) to ``frame``.

    Args:
      prev_frame, frame: uint8 ``[H, W, 3]`` RGB.
    Returns:
      uint8 ``[H, W]`` label aligned with ``frame``.
    """
    cv2 = _cv2()
    g0 = cv2.cvtColor(np.ascontiguousarray(prev_frame), cv2.COLOR_RGB2GRAY)
    g1 = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    flow = cv2.calcOpticalFlowFarneback(g1, g0, None, *FARNEBACK)  # frame t -> t-1
    h, w = label.shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(
        label, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE
    )


def run_flow_propagation(
    source: StreamSource,
    delta: int,
    *,
    chunk_size: int = 64,
    max_frames: int | None = None,
    on_chunk: ChunkCallback | None = None,
    progress: bool = True,
) -> MethodRun:
    """Teacher on frames ``0, delta, 2 delta, ...``, its label warped forward by dense flow in between.

    Returns a :class:`~jitnet_jax.eval.baselines.MethodRun` whose ``wall_s`` is the flow time and whose
    ``extra["flow_ms_per_frame"]`` is the mean cost of one propagated frame.
    """
    if delta < 1:
        raise ValueError(f"flow delta must be >= 1, got {delta}")
    _cv2()
    c = source.info.num_classes
    prev: tuple[np.ndarray, np.ndarray] | None = None  # (frame, label) of the previous frame
    parts, flow_s, flow_frames = [], 0.0, 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = source.info.num_frames if max_frames is None else min(source.info.num_frames, max_frames)
        bar = tqdm(
            total=total, unit="frame", desc=f"{source.info.name} flow", dynamic_ncols=True, leave=False
        )
    for chunk in limited_chunks(source, chunk_size, max_frames):
        n = int(chunk.valid.sum())
        preds = np.zeros(chunk.labels.shape, np.uint8)
        teacher = np.zeros(n, bool)
        for j in range(n):
            t = chunk.start + j
            if t % delta == 0 or prev is None:
                lab = np.where(chunk.labels[j] == IGNORE_LABEL, 0, chunk.labels[j]).astype(np.uint8)
                teacher[j] = True
            else:
                t0 = time.perf_counter()
                lab = warp_label(prev[1], prev[0], chunk.frames[j])
                flow_s += time.perf_counter() - t0
                flow_frames += 1
            preds[j] = lab
            prev = (chunk.frames[j], lab)
        parts.append(
            per_frame_rows(chunk.start, confusion_np(chunk.labels[:n], preds[:n], c), teacher, delta=delta)
        )
        if on_chunk is not None:
            on_chunk(chunk, preds)
        if bar is not None:
            bar.update(n)
    if bar is not None:
        bar.close()
    ms = 1e3 * flow_s / flow_frames if flow_frames else 0.0
    return MethodRun(
        concat_rows(parts, c), flow_s, 0.0, {"flow_ms_per_frame": ms, "flow_frames": flow_frames}
    )

"""Flow propagation baseline: the teacher's label every ``delta`` frames, warped forward frame by frame with
OpenCV's Farneback dense optical flow (``opencv-python-headless``, the optional ``flow`` extra).

For frame ``t`` that is not a teacher frame, the flow from frame ``t`` back to frame ``t-1`` (grey levels)
gives each pixel ``x`` its source ``x + d(x)`` in the previous frame, and the propagated label is
``label_t(x) = label_{t-1}(x + d(x))`` (nearest neighbour, border replicated). The cost of flow (Farneback
plus the remap) is measured per propagated frame on this machine and reported beside the scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jitnet_jax.data.types import StreamSource
from jitnet_jax.eval.baselines import ChunkCallback, MethodRun, run_label_propagation

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
    """Teacher on frames ``0, delta, 2 delta, ...``, its label warped forward by dense flow in between
    (:func:`~jitnet_jax.eval.baselines.run_label_propagation` with :func:`warp_label`).

    Returns a :class:`~jitnet_jax.eval.baselines.MethodRun` whose ``wall_s`` is the flow time and whose
    ``extra`` holds ``flow_ms_per_frame`` (the mean cost of one propagated frame) and ``flow_frames``.
    """
    _cv2()
    run = run_label_propagation(
        source,
        delta,
        warp_label,
        chunk_size=chunk_size,
        max_frames=max_frames,
        on_chunk=on_chunk,
        progress=progress,
        desc="flow",
    )
    run.extra = {
        "flow_ms_per_frame": run.extra["ms_per_frame"],
        "flow_frames": run.extra["propagated_frames"],
    }
    return run

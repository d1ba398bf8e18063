"""Data types shared by every stream source (synthetic, label store, LVS) and the online engine.

A *stream source* yields fixed-size chunks of frames with their teacher labels and region maps at the
student's resolution. The region map says where a pixel is relative to the teacher's detections
(:data:`REGION_IGNORE`, :data:`REGION_BACKGROUND`, :data:`REGION_BOX`); the run's knobs ``fg_weight`` /
``bg_weight`` turn it into loss weights (``jitnet_jax.online.engine.effective_weight``), so a label store
never fixes the weights of the runs that read it. The last chunk is padded to the chunk size and marked with ``valid=False`` so
that every chunk has the same static shape (one compilation per stream).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import NamedTuple, Protocol

import numpy as np

IGNORE_LABEL = 255

#: Region codes of a region map (uint8): no loss / outside every dilated teacher box / inside one.
REGION_IGNORE, REGION_BACKGROUND, REGION_BOX = 0, 1, 2
#: dtype of a region map wherever it is kept: chunks, the replay buffer, a delayed teacher's label in flight.
REGION_DTYPE = np.uint8


class Chunk(NamedTuple):
    """``T`` consecutive frames of a stream.

    Attributes:
      frames: uint8 ``[T, H, W, 3]`` RGB at the student's resolution.
      labels: uint8 ``[T, H, W]`` teacher labels (0 background, g+1 for class group g,
        ``IGNORE_LABEL`` to ignore).
      regions: uint8 ``[T, H, W]`` region map: ``REGION_IGNORE`` (0, no loss), ``REGION_BACKGROUND`` (1,
        outside the teacher's dilated boxes), ``REGION_BOX`` (2, inside one). The run's
        ``fg_weight``/``bg_weight`` turn it into loss weights.
      valid: bool ``[T]``; False on padding after the last frame of the stream.
      start: stream index of the chunk's first frame.
    """

    frames: np.ndarray
    labels: np.ndarray
    regions: np.ndarray
    valid: np.ndarray
    start: int


@dataclasses.dataclass(frozen=True)
class StreamInfo:
    """Static description of a stream.

    Attributes:
      name: stream name (e.g. ``residential_street1`` or ``synthetic``).
      num_frames: frames in the stream.
      height, width: student resolution of frames/labels.
      fps: frames per second of the source video.
      class_names: one name per label id, ``class_names[0] == "background"``.
      teacher: name of the teacher that produced the labels.
    """

    name: str
    num_frames: int
    height: int
    width: int
    fps: float
    class_names: tuple[str, ...]
    teacher: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class StreamSource(Protocol):
    """Anything the online engine can consume."""

    info: StreamInfo

    def chunks(self, chunk_size: int, start: int = 0) -> Iterator[Chunk]:
        """Yield chunks of ``chunk_size`` frames starting at frame ``start`` until the stream ends.

        Must be lazy: memory may not grow with the stream length.
        """
        ...


def pad_chunk(
    frames: np.ndarray, labels: np.ndarray, regions: np.ndarray, chunk_size: int, start: int
) -> Chunk:
    """Build a :class:`Chunk` from ``n <= chunk_size`` frames, zero-padding to ``chunk_size``.

    Args:
      frames: uint8 ``[n, H, W, 3]``; labels: uint8 ``[n, H, W]``;
      regions: the region map ``[n, H, W]`` with values in {0, 1, 2} (any integer or float dtype).
    Raises:
      ValueError: wrong frame count, or a region map value outside {0, 1, 2} (e.g. a float loss weight).
    """
    n = frames.shape[0]
    if n > chunk_size or n < 1:
        raise ValueError(f"chunk at frame {start} has {n} frames, expected 1..{chunk_size}")
    if regions.dtype != np.uint8 or regions.max(initial=0) > REGION_BOX:
        if not np.isin(regions, (REGION_IGNORE, REGION_BACKGROUND, REGION_BOX)).all():
            raise ValueError(
                f"chunk at frame {start}: region map values must be 0 (ignore), 1 (background) or 2 (box), "
                f"got {np.unique(regions)[:5].tolist()}"
            )
    valid = np.zeros(chunk_size, bool)
    valid[:n] = True
    if n < chunk_size:
        pad = chunk_size - n
        frames = np.concatenate([frames, np.zeros((pad, *frames.shape[1:]), frames.dtype)])
        labels = np.concatenate([labels, np.full((pad, *labels.shape[1:]), IGNORE_LABEL, labels.dtype)])
        regions = np.concatenate([regions, np.zeros((pad, *regions.shape[1:]), regions.dtype)])
    return Chunk(
        frames.astype(np.uint8, copy=False),
        labels.astype(np.uint8, copy=False),
        regions.astype(np.uint8, copy=False),
        valid,
        start,
    )

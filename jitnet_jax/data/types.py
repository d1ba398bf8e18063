"""Data types shared by every stream source (synthetic, label store, LVS) and the online engine.

A *stream source* yields fixed-size chunks of frames with their teacher labels and weights at the
student's resolution. The last chunk is padded to the chunk size and marked with ``valid=False`` so
that every chunk has the same static shape (one compilation per stream).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import NamedTuple, Protocol

import numpy as np

IGNORE_LABEL = 255


class Chunk(NamedTuple):
    """``T`` consecutive frames of a stream.

    Attributes:
      frames: uint8 ``[T, H, W, 3]`` RGB at the student's resolution.
      labels: uint8 ``[T, H, W]`` teacher labels (0 background, g+1 for class group g,
        ``IGNORE_LABEL`` to ignore).
      weights: float32 ``[T, H, W]`` per-pixel loss weights.
      valid: bool ``[T]``; False on padding after the last frame of the stream.
      start: stream index of the chunk's first frame.
    """

    frames: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
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
    frames: np.ndarray, labels: np.ndarray, weights: np.ndarray, chunk_size: int, start: int
) -> Chunk:
    """Build a :class:`Chunk` from ``n <= chunk_size`` frames, zero-padding to ``chunk_size``."""
    n = frames.shape[0]
    if n > chunk_size or n < 1:
        raise ValueError(f"chunk at frame {start} has {n} frames, expected 1..{chunk_size}")
    valid = np.zeros(chunk_size, bool)
    valid[:n] = True
    if n < chunk_size:
        pad = chunk_size - n
        frames = np.concatenate([frames, np.zeros((pad, *frames.shape[1:]), frames.dtype)])
        labels = np.concatenate([labels, np.full((pad, *labels.shape[1:]), IGNORE_LABEL, labels.dtype)])
        weights = np.concatenate([weights, np.zeros((pad, *weights.shape[1:]), weights.dtype)])
    return Chunk(
        frames.astype(np.uint8, copy=False),
        labels.astype(np.uint8, copy=False),
        weights.astype(np.float32, copy=False),
        valid,
        start,
    )

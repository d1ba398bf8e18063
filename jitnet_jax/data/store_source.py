"""A :class:`~jitnet_jax.data.types.StreamSource` backed by a label store plus the stream's video files.

Frames are decoded lazily (``jitnet_jax.data.video``, resized to the store's resolution by ffmpeg) and paired with
the store's labels and weights by frame index. Memory does not depend on the stream length: one decoder
process, one chunk of frames and a small LRU of label chunks.

Alignment is checked, never assumed: the store records each video's decoded frame count, and a video that
yields fewer or more frames raises :class:`~jitnet_jax.data.video.VideoError` naming the file and the frame.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from jitnet_jax.data.label_store import DataError, LabelStore
from jitnet_jax.data.types import Chunk, StreamInfo, pad_chunk
from jitnet_jax.data.video import VideoError, read_videos


class StoreSource:
    """Stream source reading labels/weights from a complete label store and frames from its videos.

    Args:
      store_dir: directory written by ``teacher.precompute`` (must be complete).
      video_paths: override the video paths recorded in ``meta.json`` (e.g. the data moved); must be the
        same number of files with the same frame counts.
      cache_chunks: label chunks kept in memory.

    Attributes:
      info: :class:`StreamInfo` at the store's resolution.
      store: the underlying :class:`LabelStore`.
    """

    def __init__(
        self,
        store_dir: str | os.PathLike,
        video_paths: Sequence[str | os.PathLike] | None = None,
        cache_chunks: int = 2,
    ):
        self.store = LabelStore(store_dir, cache_chunks=cache_chunks)
        h = self.store.header
        if video_paths is None:
            paths = [Path(p) for p in h.videos]
        else:
            paths = [Path(p) for p in video_paths]
            if len(paths) != len(h.videos):
                raise DataError(
                    f"{self.store.dir}: store was made from {len(h.videos)} video(s), got {len(paths)} video_paths"
                )
        for p in paths:
            if not p.is_file():
                raise VideoError(
                    f"{p}: video recorded in {self.store.dir / 'meta.json'} not found (pass video_paths=...)"
                )
        self.video_paths: tuple[Path, ...] = tuple(paths)
        self.info: StreamInfo = self.store.info

    def __len__(self) -> int:
        return self.info.num_frames

    @property
    def identity(self) -> str:
        """Identity of the labels (:attr:`LabelStore.identity`), recorded in a run's fingerprint."""
        return self.store.identity

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """Yield uint8 ``[H, W, 3]`` frames ``[start, stop)`` at the store's resolution."""
        stop = self.info.num_frames if stop is None else min(stop, self.info.num_frames)
        h = self.store.header
        n = start
        for frame in read_videos(
            self.video_paths, (h.height, h.width), start=start, frame_counts=h.video_frames, stop=stop
        ):
            yield frame
            n += 1
        if n < stop:  # only reachable if the videos are shorter than recorded and no count caught it
            raise VideoError(f"{self.video_paths[-1]}: videos end at stream frame {n}, labels go to {stop}")

    def chunks(self, chunk_size: int, start: int = 0) -> Iterator[Chunk]:
        """Yield :class:`Chunk` s of ``chunk_size`` frames from frame ``start``; the last one is padded."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        total = self.info.num_frames
        if not 0 <= start < total:
            raise DataError(f"{self.store.dir}: start frame {start} out of range (stream has {total} frames)")
        h = self.store.header
        buf = np.empty((chunk_size, h.height, h.width, 3), np.uint8)
        k = 0
        chunk_start = start
        for frame in self.frames(start, total):
            buf[k] = frame
            k += 1
            if k == chunk_size:
                labels, regions = self.store.frames(chunk_start, chunk_start + k)
                yield pad_chunk(buf.copy(), labels, regions, chunk_size, chunk_start)
                chunk_start += k
                k = 0
        if k:
            labels, regions = self.store.frames(chunk_start, chunk_start + k)
            yield pad_chunk(buf[:k].copy(), labels, regions, chunk_size, chunk_start)

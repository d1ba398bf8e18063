"""Reader of an LVS (Long Video Streams) stream folder.

A stream folder ``<root>/<stream>/`` holds video chunks ``<stream><NNN>.mp4`` in order and, next to each,
``detectron_large_mask_rcnn_1_<stream><NNN>.npy``: a pickled dict ``{frame_in_chunk: (boxes, classes, scores,
masks)}`` with keys ``0..n-1`` (one per decoded frame), ``boxes`` float ``[N, 4]`` normalised
``(y1, x1, y2, x2)``, ``classes`` int ``[N]`` COCO ids 1..80, ``scores`` float ``[N]`` and ``masks`` float
``[N, 28, 28]`` box masks. Teacher files are loaded with ``teacher.safe_pickle`` (no arbitrary code).

Validation errors (one line, naming the file and frame): missing stream folder, no chunks, video without
teacher file, teacher file that is not a dict, missing frame keys, video/teacher frame count mismatch,
class id outside 1..80, bad array shapes.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator
from pathlib import Path

from jitnet_jax.data.label_store import DataError
from jitnet_jax.data.video import count_frames, probe
from teacher.rasterize import Instances, check_instances
from teacher.safe_pickle import load_npy

TEACHER_PREFIX = "detectron_large_mask_rcnn_1_"
TEACHER_NAME = "lvs:detectron_large_mask_rcnn_1"


@dataclasses.dataclass(frozen=True)
class LVSChunk:
    """One video chunk and its teacher file."""

    video: Path
    teacher: Path


@dataclasses.dataclass(frozen=True)
class LVSStream:
    """An LVS stream: ordered chunks plus per-chunk frame counts (validated against the videos).

    Attributes:
      name: stream name.
      root: the LVS root (parent of the stream folder).
      chunks: ordered ``(video, teacher file)`` pairs.
      frame_counts: decoded frames of each chunk video (== teacher dict size).
      fps: frames per second of the first chunk.
      height, width: native frame size.
    """

    name: str
    root: Path
    chunks: tuple[LVSChunk, ...]
    frame_counts: tuple[int, ...]
    fps: float
    height: int
    width: int

    @property
    def num_frames(self) -> int:
        return sum(self.frame_counts)

    @property
    def videos(self) -> tuple[Path, ...]:
        return tuple(c.video for c in self.chunks)


def find_chunks(root: str | os.PathLike, stream: str) -> tuple[LVSChunk, ...]:
    """Ordered chunks of ``root/stream``; raises :class:`DataError` when the folder, a video or a teacher file
    is missing."""
    folder = Path(root) / stream
    if not folder.is_dir():
        raise DataError(f"{folder}: LVS stream folder not found")
    pat = re.compile(rf"^{re.escape(stream)}(\d+)\.mp4$")
    videos = sorted(
        (p for p in folder.iterdir() if pat.match(p.name)), key=lambda p: int(pat.match(p.name)[1])
    )
    if not videos:
        raise DataError(f"{folder}: no video chunks named {stream}<NNN>.mp4")
    numbers = [int(pat.match(p.name)[1]) for p in videos]
    for prev, cur, v in zip(numbers, numbers[1:], videos[1:]):
        if cur != prev + 1:
            width = len(pat.match(v.name)[1])
            raise DataError(
                f"{folder / f'{stream}{prev + 1:0{width}d}.mp4'}: video chunk missing "
                f"(chunks jump from {prev} to {cur})"
            )
    chunks = []
    for v in videos:
        t = folder / f"{TEACHER_PREFIX}{v.stem}.npy"
        if not t.is_file():
            raise DataError(f"{t}: teacher file missing for video chunk {v.name}")
        chunks.append(LVSChunk(v, t))
    orphans = sorted(
        p.name
        for p in folder.glob(f"{TEACHER_PREFIX}*.npy")
        if p.name[len(TEACHER_PREFIX) : -4] + ".mp4" not in {v.name for v in videos}
    )
    if orphans:
        raise DataError(f"{folder / orphans[0]}: teacher file has no matching video chunk")
    return tuple(chunks)


def load_detections(path: str | os.PathLike, expected_frames: int | None = None) -> dict[int, Instances]:
    """Load and validate one teacher file; returns ``{frame_in_chunk: Instances}`` with keys ``0..n-1``.

    Raises :class:`DataError` naming the file (and frame) on any problem.
    """
    path = Path(path)
    d = load_npy(path)
    if not isinstance(d, dict):
        raise DataError(
            f"{path}: teacher file holds {type(d).__name__}, expected a dict keyed by frame index"
        )
    try:
        keys = sorted(int(k) for k in d)
    except (TypeError, ValueError):
        raise DataError(f"{path}: teacher dict keys must be frame indices (ints)") from None
    n = len(keys) if expected_frames is None else expected_frames
    missing = sorted(set(range(n)) - set(keys))
    if missing:
        raise DataError(f"{path}: frame {missing[0]} has no detections entry (keys must be 0..{n - 1})")
    extra = [k for k in keys if k >= n or k < 0]
    if extra:
        raise DataError(
            f"{path}: has detections for frame {extra[0]} but the video chunk has {n} frames "
            f"(video/teacher frame count mismatch)"
        )
    out: dict[int, Instances] = {}
    for k in range(n):
        v = d[k] if k in d else d[str(k)]
        where = f"{path}: frame {k}"
        if not isinstance(v, tuple | list) or len(v) != 4:
            raise DataError(f"{where}: expected a (boxes, classes, scores, masks) tuple")
        out[k] = check_instances(Instances(*v), where)
    return out


def open_stream(root: str | os.PathLike, stream: str, check_frames: bool = True) -> LVSStream:
    """Find and validate an LVS stream.

    With ``check_frames`` every chunk video is decoded once (~1 ms per frame) to count its frames, and each
    teacher dict must have exactly that many frame keys; otherwise the teacher dict sizes are trusted.
    """
    chunks = find_chunks(root, stream)
    counts = []
    for c in chunks:
        dets = load_npy(c.teacher)
        if not isinstance(dets, dict):
            raise DataError(f"{c.teacher}: teacher file holds {type(dets).__name__}, expected a dict")
        n_teacher = len(dets)
        del dets
        if check_frames:
            n_video = count_frames(c.video)
            if n_video != n_teacher:
                raise DataError(
                    f"{c.teacher}: has {n_teacher} frames but video {c.video.name} decodes to {n_video} "
                    f"(first unmatched frame {min(n_video, n_teacher)})"
                )
        counts.append(n_teacher)
    meta = probe(chunks[0].video)
    return LVSStream(stream, Path(root), chunks, tuple(counts), meta.fps, meta.height, meta.width)


def iter_detections(stream: LVSStream, start: int = 0, stop: int | None = None) -> Iterator[Instances]:
    """Yield validated :class:`Instances` for stream frames ``[start, stop)``, loading one teacher file at a
    time (memory bounded by the largest chunk's detections)."""
    stop = stream.num_frames if stop is None else min(stop, stream.num_frames)
    offset = 0
    for c, n in zip(stream.chunks, stream.frame_counts):
        lo, hi = max(start, offset), min(stop, offset + n)
        if lo < hi:
            dets = load_detections(c.teacher, n)
            for k in range(lo - offset, hi - offset):
                yield dets[k]
        offset += n
        if offset >= stop:
            return

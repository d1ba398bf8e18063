"""Streaming video decode (imageio-ffmpeg) of one or more files in order, resized on the fly.

Frames are decoded by an ffmpeg subprocess one at a time (memory does not depend on video length). When a
target ``size=(H, W)`` is given, ffmpeg resizes with its ``area`` scaler inside the decoder process (well
under 1 ms per frame at 180x320), so Python only ever sees frames at the requested size.

Errors (missing, unreadable, corrupt or truncated files) raise :class:`VideoError`, a ``DataError`` /
``ValueError`` with a one-line message naming the file and, where it applies, the frame.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from jitnet_jax.data.label_store import DataError


class VideoError(DataError):
    """A video file is missing, unreadable, corrupt or has an unexpected number of frames."""


@dataclasses.dataclass(frozen=True)
class VideoMeta:
    """Container-level description of a video file.

    Attributes:
      path: the file.
      height, width: native frame size in pixels.
      fps: frames per second reported by ffmpeg.
    """

    path: str
    height: int
    width: int
    fps: float


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    # ffmpeg errors end with the most specific line; keep it short.
    return (lines[-1] if lines else type(e).__name__)[:200]


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoError(f"{path}: video file not found")
    if not path.is_file():
        raise VideoError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: video file is empty")


class _DropResizeNotice(logging.Filter):
    """imageio-ffmpeg warns whenever the output size differs from the source size; we resize on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is different from the source frame size" not in record.getMessage()


_RESIZE_NOTICE_FILTER = _DropResizeNotice()


def _open(path: Path, size: tuple[int, int] | None):
    import imageio_ffmpeg

    ffmpeg_logger = logging.getLogger("imageio_ffmpeg")
    if _RESIZE_NOTICE_FILTER not in ffmpeg_logger.filters:
        ffmpeg_logger.addFilter(_RESIZE_NOTICE_FILTER)

    output_params = None
    if size is not None:
        h, w = int(size[0]), int(size[1])
        output_params = ["-vf", f"scale={w}:{h}:flags=area"]
    gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24", output_params=output_params)
    try:
        meta = gen.__next__()
    except (RuntimeError, OSError, StopIteration) as e:
        gen.close()
        raise VideoError(f"{path}: ffmpeg cannot decode this file ({_first_line(e)})") from None
    return gen, meta


def probe(path: str | os.PathLike) -> VideoMeta:
    """Read the native size and fps of a video without decoding it fully."""
    path = Path(path)
    _check_file(path)
    gen, meta = _open(path, None)
    gen.close()
    try:
        w, h = (int(v) for v in meta["size"])
        fps = float(meta.get("fps") or 0.0)
    except (KeyError, TypeError, ValueError):
        raise VideoError(f"{path}: ffmpeg reported no video stream size") from None
    return VideoMeta(str(path), h, w, fps)


def count_frames(path: str | os.PathLike) -> int:
    """Number of decodable frames, found by decoding every frame (at a tiny size, ~1 ms per frame).

    ``imageio_ffmpeg.count_frames_and_secs`` parses ffmpeg's progress output and can be off by one, which
    would misalign labels, so it is not used.
    """
    n = 0
    for _ in read_video(path, size=(16, 16)):
        n += 1
    if n == 0:
        raise VideoError(f"{path}: no decodable video frames")
    return n


def read_video(
    path: str | os.PathLike, size: tuple[int, int] | None = None, skip: int = 0
) -> Iterator[np.ndarray]:
    """Yield frames of one file as uint8 ``[H, W, 3]`` RGB (``size=(H, W)`` or native), skipping ``skip``.

    Raises:
      VideoError: file missing/empty/undecodable, or decoding fails mid-file (names the frame).
    """
    path = Path(path)
    _check_file(path)
    gen, meta = _open(path, size)
    if size is None:
        w, h = (int(v) for v in meta["size"])
    else:
        h, w = int(size[0]), int(size[1])
    nbytes = h * w * 3
    index = 0
    try:
        while True:
            try:
                buf = gen.__next__()
            except StopIteration:
                return
            except (RuntimeError, OSError) as e:
                raise VideoError(f"{path}: decoding failed at frame {index} ({_first_line(e)})") from None
            if len(buf) != nbytes:
                raise VideoError(f"{path}: frame {index} is truncated ({len(buf)} of {nbytes} bytes)")
            if index >= skip:
                yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)
            index += 1
    finally:
        gen.close()


def read_videos(
    paths: Sequence[str | os.PathLike],
    size: tuple[int, int] | None = None,
    start: int = 0,
    frame_counts: Sequence[int] | None = None,
    stop: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield the frames of several files back to back as one stream of uint8 ``[H, W, 3]`` frames.

    Args:
      paths: video files in stream order.
      size: ``(H, W)`` output size, or None for native (then all files must share one size).
      start: first stream frame to yield (earlier frames are decoded and dropped; whole files before
        ``start`` are not opened when ``frame_counts`` is given).
      frame_counts: expected frames of each file. When given, a file that yields fewer frames, or more
        frames (checked whenever the file is read to its end), raises :class:`VideoError` naming the file
        and frame, so labels can never be silently misaligned with frames.
      stop: stream frame to stop before (None: the end of the last file).
    """
    if frame_counts is not None and len(frame_counts) != len(paths):
        raise VideoError(f"{len(paths)} video paths but {len(frame_counts)} frame counts")
    offset = 0
    for k, p in enumerate(paths):
        if stop is not None and offset >= stop:
            return
        expected = None if frame_counts is None else int(frame_counts[k])
        if expected is not None and offset + expected <= start:
            _check_file(Path(p))  # not decoded, but fail early if it went missing
            offset += expected
            continue
        skip = max(0, start - offset)
        limit = None if stop is None else stop - offset  # this file's frames [0, limit) are wanted
        n = skip
        stopped = False
        for frame in read_video(p, size, skip):
            if expected is not None and n >= expected:
                raise VideoError(
                    f"{p}: has more frames than the {expected} expected (frame {n} exists); "
                    "video and labels would be misaligned"
                )
            if limit is not None and n >= limit:
                stopped = True
                break
            yield frame
            n += 1
        if stopped:
            return
        if expected is not None and n != expected:
            raise VideoError(
                f"{p}: decoded only {n} frames but {expected} were expected (missing from frame {n}); "
                "the file is truncated or is not the one the labels were made from"
            )
        offset += n

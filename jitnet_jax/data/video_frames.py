"""Video files decoded once for a live run: each frame at its native size (the teacher's input) and resized
to the student's resolution with an area (box) filter."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from jitnet_jax.data.label_store import DataError
from jitnet_jax.data.types import StreamInfo


class VideoFrames:
    """:class:`~jitnet_jax.online.live.LiveFrames` of one or more video files decoded once (native size for the teacher, resized
    with an area (box) filter to ``(height, width)`` for the student).

    ``info.num_frames`` comes from the container (an estimate; nothing is decoded twice). Missing,
    unreadable or empty videos raise :class:`~jitnet_jax.data.video.VideoError` (one line).
    """

    def __init__(
        self,
        paths: list[str],
        height: int,
        width: int,
        name: str,
        class_names: tuple[str, ...],
        teacher: str,
    ) -> None:
        from jitnet_jax.data.video import probe

        if not paths:
            raise DataError(f"stream {name}: no video files")
        metas = [probe(p) for p in paths]
        estimate = sum(frames_estimate(p) for p in paths)
        self.paths = list(paths)
        self.info = StreamInfo(name, max(estimate, 1), height, width, metas[0].fps, class_names, teacher)

    def frames(self, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        from PIL import Image

        from jitnet_jax.data.video import read_videos

        h, w = self.info.height, self.info.width
        n = 0
        for big in read_videos(self.paths, None, start=start):
            n += 1
            if big.shape[:2] == (h, w):
                small = big
            else:
                small = np.asarray(Image.fromarray(big).resize((w, h), Image.BOX))
            yield small, big
        if n == 0 and start == 0:
            raise DataError(f"{self.paths[0]}: no decodable video frames")


def frames_estimate(path: str) -> int:
    """Frame count from the container's duration and fps (no decoding); 0 if unknown."""
    import imageio_ffmpeg

    try:
        gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = gen.__next__()
        gen.close()
        return int(round(float(meta.get("duration") or 0) * float(meta.get("fps") or 0)))
    except (RuntimeError, OSError, StopIteration, TypeError, ValueError):
        return 0

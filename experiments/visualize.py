"""Visualisation helpers: label colouring, a streaming side-by-side video writer and a timeline plot.

* :func:`colorize` maps label ids to a fixed palette (background near-black, ignore light grey).
* :class:`VideoWriter` (or :func:`write_side_by_side`) streams ``frame | teacher | student`` panels to
  an H.264 mp4 through imageio-ffmpeg, one chunk at a time (constant memory), with a yellow border
  on the teacher panel of frames where the teacher ran.
* :func:`plot_timeline` draws the paper-style timeline: windowed mIoU, teacher stride ``delta`` and
  updates per window, with the teacher frames marked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from jitnet_jax.data.types import IGNORE_LABEL

# Fixed palette: id 0 (background) near-black, then well-separated saturated colours.
PALETTE = np.array(
    [
        (20, 20, 20),
        (230, 57, 70),
        (69, 196, 86),
        (66, 135, 245),
        (250, 190, 40),
        (180, 80, 220),
        (40, 200, 200),
        (245, 130, 48),
        (240, 50, 230),
        (170, 110, 40),
        (128, 128, 255),
        (0, 128, 128),
        (255, 215, 180),
        (128, 0, 0),
        (170, 255, 195),
        (128, 128, 0),
        (0, 0, 128),
        (220, 190, 255),
        (255, 250, 200),
        (90, 90, 90),
    ],
    np.uint8,
)
IGNORE_COLOR = np.array((200, 200, 200), np.uint8)
TEACHER_MARK = np.array((255, 220, 0), np.uint8)


def palette(num_classes: int) -> np.ndarray:
    """uint8 ``[num_classes, 3]``; classes beyond the fixed palette reuse it cyclically (never background)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    idx = np.arange(num_classes)
    idx = np.where(idx < len(PALETTE), idx, 1 + (idx - 1) % (len(PALETTE) - 1))
    return PALETTE[idx]


def colorize(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Colour a label map.

    Args:
      labels: integer ``[H, W]`` or ``[T, H, W]`` label ids. Ids outside ``[0, num_classes)``
        (e.g. ``IGNORE_LABEL`` = 255) are drawn in light grey.
      num_classes: C, background included.
    Returns:
      uint8 ``[..., 3]`` RGB with the shape of ``labels`` plus a channel axis.
    """
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise ValueError(f"labels must be [H, W] or [T, H, W], got shape {labels.shape}")
    lut = np.empty((256, 3), np.uint8)
    lut[:] = IGNORE_COLOR
    n = min(num_classes, 256)
    lut[:n] = palette(n)
    ids = labels.astype(np.int64)
    ids = np.where((ids >= 0) & (ids < n), ids, IGNORE_LABEL)
    return lut[ids]


def _mark(panel: np.ndarray, width: int) -> None:
    """In place: draw a ``TEACHER_MARK`` border ``width`` px wide around ``[H, W, 3]`` ``panel``."""
    panel[:width] = TEACHER_MARK
    panel[-width:] = TEACHER_MARK
    panel[:, :width] = TEACHER_MARK
    panel[:, -width:] = TEACHER_MARK


def side_by_side(
    frames: np.ndarray,
    teacher: np.ndarray,
    student: np.ndarray,
    teacher_ran: np.ndarray,
    num_classes: int,
    blend: float = 0.0,
) -> np.ndarray:
    """Compose ``frame | teacher | student`` panels.

    Args:
      frames: uint8 ``[T, H, W, 3]``.
      teacher: integer ``[T, H, W]`` teacher labels.
      student: integer ``[T, H, W]`` student predictions.
      teacher_ran: bool ``[T]``; those frames get a yellow border on the teacher panel.
      num_classes: C for :func:`colorize`.
      blend: weight of the frame mixed into the label panels (0 -> pure label colours).
    Returns:
      uint8 ``[T, H, 3 W, 3]``.
    """
    frames = np.asarray(frames, np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3], got {frames.shape}")
    t, h, w, _ = frames.shape
    for name, arr in (("teacher", teacher), ("student", student)):
        if np.shape(arr) != (t, h, w):
            raise ValueError(f"{name} must be [{t}, {h}, {w}], got {np.shape(arr)}")
    ran = np.asarray(teacher_ran, bool).reshape(t)
    tc, sc = colorize(teacher, num_classes), colorize(student, num_classes)
    if blend > 0:
        f = frames.astype(np.float32) * blend
        tc = (tc * (1.0 - blend) + f).astype(np.uint8)
        sc = (sc * (1.0 - blend) + f).astype(np.uint8)
    out = np.concatenate([frames, tc, sc], axis=2)
    bw = max(2, min(h, w) // 60)
    for i in np.flatnonzero(ran):
        _mark(out[i, :, w : 2 * w], bw)
    return out


class VideoWriter:
    """Streaming ``frame | teacher | student`` mp4 writer (libx264, yuv420p, constant memory).

    Use as a context manager::

        with VideoWriter("out.mp4", fps=30, num_classes=4) as vw:
            for chunk, preds, ran in ...:
                vw.write(chunk.frames, chunk.labels, preds, ran, valid=chunk.valid)

    Odd output sizes are padded by one black row/column (libx264 4:2:0 needs even sizes), so the
    video is exactly ``[H, 3 W]`` when ``H`` and ``3 W`` are even.

    Args:
      path: output ``.mp4`` path (parent directories are created).
      fps: frame rate.
      num_classes: C for :func:`colorize`.
      blend: weight of the frame mixed into the label panels.
      crf: x264 constant rate factor (lower = better quality, bigger file).
      preset: x264 speed preset.
    """

    def __init__(
        self,
        path: str | Path,
        fps: float,
        num_classes: int,
        blend: float = 0.0,
        crf: int = 23,
        preset: str = "veryfast",
    ):
        self.path = Path(path)
        self.fps = float(fps)
        self.num_classes = int(num_classes)
        self.blend = float(blend)
        self.crf = int(crf)
        self.preset = str(preset)
        self.frames_written = 0
        self._gen = None
        self._size: tuple[int, int] | None = None  # (height, width) of the composed frame

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _open(self, height: int, width: int) -> None:
        import imageio_ffmpeg

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._size = (height, width)
        self._gen = imageio_ffmpeg.write_frames(
            str(self.path),
            (width + width % 2, height + height % 2),
            fps=self.fps,
            codec="libx264",
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            quality=None,
            macro_block_size=1,
            ffmpeg_log_level="error",
            output_params=["-crf", str(self.crf), "-preset", self.preset],
        )
        self._gen.send(None)

    def write_frames(self, images: np.ndarray) -> None:
        """Append already composed uint8 ``[T, H, W, 3]`` images (all calls must share ``H, W``)."""
        images = np.asarray(images, np.uint8)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be [T, H, W, 3], got {images.shape}")
        h, w = images.shape[1:3]
        if self._gen is None:
            self._open(h, w)
        elif (h, w) != self._size:
            raise ValueError(f"frame size changed from {self._size} to {(h, w)}")
        if h % 2 or w % 2:
            images = np.pad(images, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
        for img in images:
            self._gen.send(np.ascontiguousarray(img))
        self.frames_written += len(images)

    def write(
        self,
        frames: np.ndarray,
        teacher: np.ndarray,
        student: np.ndarray,
        teacher_ran: np.ndarray,
        valid: np.ndarray | None = None,
    ) -> None:
        """Append a chunk; shapes as in :func:`side_by_side`. Frames with ``valid`` False are skipped."""
        if valid is not None:
            keep = np.asarray(valid, bool)
            frames, teacher, student = frames[keep], np.asarray(teacher)[keep], np.asarray(student)[keep]
            teacher_ran = np.asarray(teacher_ran, bool)[keep]
            if len(frames) == 0:
                return
        self.write_frames(side_by_side(frames, teacher, student, teacher_ran, self.num_classes, self.blend))

    def close(self) -> None:
        """Finish the file (idempotent)."""
        if self._gen is not None:
            self._gen.close()
            self._gen = None


def write_side_by_side(
    path: str | Path,
    fps: float,
    num_classes: int,
    blend: float = 0.0,
    crf: int = 23,
    preset: str = "veryfast",
) -> VideoWriter:
    """Open a :class:`VideoWriter` (use it in a ``with`` block)."""
    return VideoWriter(path, fps, num_classes, blend=blend, crf=crf, preset=preset)


def windowed_miou(
    tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """mIoU over consecutive non-overlapping windows of per-frame counts.

    Args:
      tp, fp, fn: int ``[N, C]`` per-frame per-class counts (class 0 = background).
      window: frames per window (the last window may be shorter).
    Returns:
      ``(starts int [K], miou float64 [K])``: first row index of each window and the mean IoU of the
      foreground classes ``1..C-1`` computed from the window's summed counts; classes absent from
      both labels and predictions in a window are skipped (NaN if all are).
    """
    tp, fp, fn = (np.asarray(x, np.int64) for x in (tp, fp, fn))
    if tp.ndim != 2 or tp.shape != fp.shape or tp.shape != fn.shape:
        raise ValueError(f"tp/fp/fn must share shape [N, C], got {tp.shape}, {fp.shape}, {fn.shape}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    starts = np.arange(0, tp.shape[0], window)
    if starts.size == 0:
        return starts, np.zeros(0)
    sums = [np.add.reduceat(x, starts, axis=0)[:, 1:] for x in (tp, fp, fn)]
    denom = sums[0] + sums[1] + sums[2]
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(denom > 0, sums[0] / np.maximum(denom, 1), np.nan)
    present = ~np.isnan(iou)
    miou = np.where(present.any(axis=1), np.nansum(iou, axis=1) / np.maximum(present.sum(axis=1), 1), np.nan)
    return starts, miou


def plot_timeline(
    per_frame: Mapping[str, np.ndarray],
    path: str | Path,
    window: int = 30,
    title: str | None = None,
    cuts: Sequence[int] = (),
    dpi: int = 120,
    scored: np.ndarray | None = None,
) -> Path:
    """Save a timeline PNG (like the paper's per-stream figure).

    Panels (shared x axis = frame index): windowed mIoU with the teacher frames as ticks at the
    bottom; the teacher stride ``delta``; student updates per window.

    Args:
      per_frame: dict of per-frame arrays: ``frame`` int ``[N]``, ``teacher`` bool ``[N]``,
        ``updates`` int ``[N]``, ``delta`` int ``[N]``, ``tp``/``fp``/``fn`` int ``[N, C]``.
      path: output ``.png`` path (parent directories are created).
      window: frames per window for mIoU and update counts.
      title: figure title.
      cuts: frame indices of scene cuts, drawn as dashed vertical lines on every panel.
      dpi: output resolution.
      scored: bool ``[N]``, the frames whose counts measure accuracy (a live run's audited frames); the
        others are left out of the mIoU windows. None: every frame. When no frame is scored, the mIoU
        panel says that accuracy was not measured instead of drawing a curve.
    Returns:
      the path written.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no display backend

    missing = {"frame", "teacher", "updates", "delta", "tp", "fp", "fn"} - set(per_frame)
    if missing:
        raise KeyError(f"per_frame is missing {sorted(missing)}")
    frame = np.asarray(per_frame["frame"])
    n = frame.shape[0]
    teacher = np.asarray(per_frame["teacher"], bool)
    updates = np.asarray(per_frame["updates"], np.int64)
    delta = np.asarray(per_frame["delta"])
    for key, arr in (("teacher", teacher), ("updates", updates), ("delta", delta)):
        if arr.shape != (n,):
            raise ValueError(f"per_frame[{key!r}] must have shape [{n}], got {arr.shape}")
    if len(per_frame["tp"]) != n:
        raise ValueError(f"tp/fp/fn must have {n} rows, got {len(per_frame['tp'])}")
    counts = [np.asarray(per_frame[k]) for k in ("tp", "fp", "fn")]
    if scored is not None:
        scored = np.asarray(scored, bool)
        if scored.shape != (n,):
            raise ValueError(f"scored must have shape [{n}], got {scored.shape}")
        counts = [np.where(scored[:, None], c, 0) for c in counts]
    starts, miou = windowed_miou(*counts, window)
    measured = scored is None or bool(scored.any())
    ends = np.minimum(starts + window, n) - 1
    mid = (frame[starts] + frame[ends]) / 2.0 if n else np.zeros(0)
    upd = np.add.reduceat(updates, starts) if n else np.zeros(0)

    fig = Figure(figsize=(12, 6.5), dpi=dpi, layout="constrained")
    ax1, ax2, ax3 = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [2.2, 1, 1]})
    what = "audited frames, " if scored is not None else ""
    if measured:
        ax1.plot(
            mid, miou, "-o", ms=2.5, lw=1.2, color="tab:blue", label=f"mIoU ({what}{window}-frame windows)"
        )
    else:
        ax1.text(
            0.5, 0.5, "accuracy not measured (no audit)", transform=ax1.transAxes, ha="center", va="center"
        )
    if measured and np.any(~np.isnan(miou)):
        ax1.axhline(np.nanmean(miou), color="tab:blue", lw=0.8, ls="--", alpha=0.6, label="mean of windows")
    ax1.plot(
        frame[teacher], np.full(int(teacher.sum()), 0.02), "|", ms=6, color="tab:orange", label="teacher ran"
    )
    ax1.set_ylim(0.0, 1.0)
    ax1.set_ylabel("mIoU (fg)")
    ax1.grid(alpha=0.3)
    ax2.step(frame, delta, where="post", color="tab:green", lw=1.2)
    ax2.set_ylabel("δ (teacher stride)")
    ax2.grid(alpha=0.3)
    width = 0.9 * window * (float(np.median(np.diff(frame))) if n > 1 else 1.0)
    ax3.bar(mid, upd, width=width, color="tab:purple", alpha=0.8)
    ax3.set_ylabel(f"updates / {window} fr")
    ax3.set_xlabel("frame")
    ax3.grid(alpha=0.3)
    for i, cut in enumerate(cuts):
        for ax in (ax1, ax2, ax3):
            ax.axvline(cut, color="0.4", ls="--", lw=1.0, label="scene cut" if ax is ax1 and i == 0 else None)
    ax1.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), fontsize=8, ncols=4, frameon=False)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path

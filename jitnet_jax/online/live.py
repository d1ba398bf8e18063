"""Live mode: the student runs on every frame and the teacher only on the frames Algorithm 1 selects.

The controller knows the next teacher frame ``t + delta`` as soon as it leaves teacher frame ``t``
(``OnlineState.next_teacher``). The host therefore plans one *segment* per teacher frame: frames
``[t + 1, t + delta]``, the teacher frame last. The segment is cut into chunks of the static size
``T = cfg.chunk_size`` from its end, so the chunk holding the teacher frame ends with it and the chunks
before it are student-only. The student-only chunks are dispatched first (asynchronously), then the
host calls the teacher on frame ``t + delta`` while the device computes them, then dispatches the
teacher chunk and reads ``next_teacher`` back: the one host sync per teacher frame. Every chunk is the
engine's compiled ``run_chunk`` with the same static shapes (padding frames have ``valid=False``), so
nothing recompiles; frames without a teacher label carry ``IGNORE_LABEL`` (they are predicted, never
trained on, and score nothing).

A teacher that is slower than the stream (``cfg.teacher_delay = d``, e.g. its latency measured on the
first frame and converted with the video's frame rate, ``experiments.stream --teacher-delay auto``): the
teacher still labels frame ``t`` when the host reaches it, but the engine applies the label ``d`` frames
later (``engine.PendingLabel``), as a background teacher would in a deployment; the segment then runs on
to the arrival frame ``t + d``, and the sync there reads the next teacher frame (still one per teacher
frame). Live mode needs ``d < delta_min``, so that the next teacher frame comes after the arrival.

Scoring: with ``audit_every=K`` the teacher also labels every K-th frame for scoring only. Before such a
call the host waits for the device (so the audit neither overlaps nor slows the student) and the call's
time is reported apart from the run's. Without an audit the only scored frames are the teacher frames
themselves, which is not an accuracy measurement; :func:`live_summary` then reports none.

The driver is independent of where frames and labels come from: a :class:`LiveFrames` yields frames (the
student's and the teacher's view of each), a :class:`LiveTeacher` labels a frame on request
(``teacher.live`` adapts the TFLite backends and keeps every label in a store as it arrives, so a resumed
run reads the labels it already paid for instead of running the teacher again).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Protocol

import jax
import numpy as np

from jitnet_jax.data.label_store import DataError
from jitnet_jax.data.prefetch import prefetch
from jitnet_jax.data.types import IGNORE_LABEL, Chunk, StreamInfo
from jitnet_jax.data.video_frames import VideoFrames
from jitnet_jax.online.engine import Knobs, OnlineConfig, OnlineState
from jitnet_jax.online.pipeline import Checkpointing, ChunkPipeline, Progress, Synced
from jitnet_jax.online.rows import PerFrameBuffer, chunk_per_frame, concat_per_frame
from jitnet_jax.online.runner import LABEL_DTYPE, REGION_DTYPE, StreamResult, compile_chunk, new_state
from jitnet_jax.student.metrics import iou_from_counts

TRAIN = "train"
AUDIT = "audit"


class TeacherLabel(NamedTuple):
    """A teacher's label of one frame at the student's resolution.

    Attributes:
      labels: uint8 ``[H, W]`` (0 background, g + 1 group g, ``IGNORE_LABEL`` ignored).
      regions: ``[H, W]`` in the label store's convention (the uint8 region map: 0 ignore, 1 background,
        2 inside a dilated teacher box; the run's ``fg_weight``/``bg_weight`` weight the regions).
      seconds: time the teacher spent on this frame (model + post-processing + rasterising); 0 when the
        label was read back from a store.
      ran: True if the teacher ran for this call (False: read from the store).
    """

    labels: np.ndarray
    regions: np.ndarray
    seconds: float
    ran: bool


class LiveTeacher(Protocol):
    """Labels a frame on request. ``purpose`` is ``"train"`` or ``"audit"``."""

    def __call__(self, index: int, frame: np.ndarray, purpose: str) -> TeacherLabel: ...


class LiveFrames(Protocol):
    """Frames of a stream decoded once, lazily.

    ``info.num_frames`` may be an estimate (a video's frame count is only known once it is decoded);
    the run ends where :meth:`frames` ends.
    """

    info: StreamInfo

    def frames(self, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(student uint8 [H, W, 3], teacher input uint8 [h, w, 3])`` from frame ``start``."""
        ...


@dataclasses.dataclass
class LiveResult(StreamResult):
    """A :class:`~jitnet_jax.online.runner.StreamResult` plus what live mode measured.

    Attributes:
      teacher_s: float64 ``[n]`` seconds of each teacher call that trained the student (this process).
      audit_s: float64 ``[m]`` seconds of each audit call (scoring only; not part of ``loop_s``).
      reused: labels read back from the label store instead of running the teacher (a resumed run).
      audit_frames: stream indices of the audited frames (all of them, also from before a resume).
      syncs: blocking reads of device state (one per teacher frame, plus one per audit call).
      loop_s: seconds of the frame loop with the audit calls taken out (compilation excluded).
      audit_wall_s: seconds of the audit calls (teacher + store write), taken out of ``loop_s``.
      stopped: True when ``should_stop`` ended the run early.
    """

    teacher_s: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    audit_s: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    reused: int = 0
    audit_frames: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    syncs: int = 0
    loop_s: float = 0.0
    audit_wall_s: float = 0.0
    stopped: bool = False


def plan_segment(cursor: int, next_teacher: int, total: int, chunk_size: int) -> list[tuple[int, int]]:
    """Chunks ``[(start, stop), ...]`` covering frames ``[cursor, min(next_teacher + 1, total))``.

    The segment is cut from its end, so the last chunk ends at the teacher frame and only the first one
    may be shorter than ``chunk_size`` (it is padded). Example: ``plan_segment(9, 24, 100, 8)`` ->
    ``[(9, 17), (17, 25)]``.
    """
    if next_teacher < cursor:
        raise ValueError(f"next teacher frame {next_teacher} is before the cursor {cursor}")
    stop = min(next_teacher + 1, total)
    bounds = []
    end = stop
    while end > cursor:
        begin = max(cursor, end - chunk_size)
        bounds.append((begin, end))
        end = begin
    return bounds[::-1]


def audit_mask(frames: np.ndarray, audit_every: int) -> np.ndarray:
    """bool: which of ``frames`` are audit frames: every K-th frame from frame ``K // 2`` (K =
    ``audit_every``; none for K = 0). The offset keeps the sample off the teacher's own frames, which with
    the default strides (multiples of ``delta_min = 8``) fall on multiples of 8: scoring the frames the
    student has just been trained on would flatter it."""
    frames = np.asarray(frames)
    if audit_every <= 0:
        return np.zeros(frames.shape, bool)
    return frames % audit_every == audit_every // 2


def run_live(
    frames: LiveFrames,
    teacher: LiveTeacher,
    cfg: OnlineConfig,
    key: jax.Array | None = None,
    *,
    state: OnlineState | None = None,
    per_frame: dict[str, np.ndarray] | None = None,
    max_frames: int | None = None,
    audit_every: int = 0,
    keep_preds: bool = False,
    on_chunk: Callable[[Chunk, dict[str, np.ndarray], dict[str, np.ndarray]], None] | None = None,
    checkpointer: Checkpointing | None = None,
    progress: bool = True,
    should_stop: Callable[[], bool] | None = None,
    compiled: Any | None = None,
    prefetch_depth: int = 64,
    overlap_teacher: bool = True,
) -> LiveResult:
    """Run online distillation with the teacher called only on the frames the controller selects.

    Args:
      frames: the stream's frames (:class:`LiveFrames`).
      teacher: labels a frame on request (:class:`LiveTeacher`).
      cfg: online settings; ``cfg.chunk_size`` is the static chunk length (``delta_min`` is a good choice:
        the controller's strides are then whole numbers of chunks and no chunk is padded).
      key: PRNG key of a fresh student (ignored when ``state`` is given).
      state, per_frame: resume from this state and the per-frame rows before its cursor.
      max_frames: stop after this many stream frames.
      audit_every: also label every K-th frame, for scoring only (0: no audit).
      keep_preds: keep predictions in the stats passed to ``on_chunk`` (``stats["pred"]``).
      on_chunk: called once per teacher frame (at the host sync) with ``(chunk, stats, per_frame_so_far)``:
        ``chunk`` and ``stats`` join every chunk since the previous call (padding dropped). The same
        contract as :func:`~jitnet_jax.online.runner.run_stream`'s, so the same video writer works.
      checkpointer: saves the state at the syncs where it says a save is due, and at a stop.
      should_stop: polled at every host sync; True ends the run there (the result is consistent).
      compiled: a :func:`~jitnet_jax.online.runner.compile_chunk` executable to reuse (None: compile).
      overlap_teacher: call the teacher while the device computes the segment's student-only chunks
        (default). False waits for the device first, as a teacher called from inside the compiled loop
        (a host callback) would; kept to measure what the overlap is worth (docs/live.md).
      prefetch_depth: decoded frames kept ready by the decoder thread.
    """
    cfg.validate()
    info = frames.info
    if info.num_classes != cfg.student.model.num_classes:
        raise ValueError(
            f"stream {info.name} has {info.num_classes} classes {info.class_names} but the student is "
            f"configured for model.num_classes={cfg.student.model.num_classes}"
        )
    if audit_every < 0:
        raise ValueError(f"audit_every must be >= 0, got {audit_every}")
    delay = cfg.teacher_delay
    if delay >= cfg.delta_min:
        raise ValueError(
            f"a teacher {delay} frames late needs delta_min > {delay} in live mode (the next teacher frame "
            f"must come after the label arrives), got delta_min={cfg.delta_min}"
        )
    limit = max_frames if max_frames is not None else None
    if state is None:
        if key is None:
            raise ValueError("run_live needs a PRNG key for a fresh student")
        state = new_state(cfg, key, (info.height, info.width))
    cursor, next_t = (int(x) for x in jax.device_get((state.cursor, state.next_teacher)))
    if per_frame is not None and len(per_frame["frame"]) != cursor:
        raise ValueError(f"per-frame stats hold {len(per_frame['frame'])} frames, state is at {cursor}")
    knobs = Knobs.from_config(cfg)
    t_chunk, h, w = cfg.chunk_size, info.height, info.width
    t0 = time.perf_counter()
    if compiled is None:
        compiled = compile_chunk(cfg, state, h, w, keep_preds, keep_executable=True)
    compile_s = time.perf_counter() - t0

    buffers = [PerFrameBuffer(info.num_classes, per_frame)]
    pf0 = buffers[0].view()
    sel0 = audit_mask(pf0["frame"], audit_every)
    audited: list[int] = [int(f) for f in pf0["frame"][sel0]]
    audit_tot = {k: pf0[k][sel0].sum(0) for k in ("tp", "fp", "fn")}
    teacher_s: list[float] = []
    audit_s: list[float] = []
    counts = {"reused": 0, "syncs": 0, "teach": int(pf0["teacher"].sum())}
    audit_pause = 0.0

    def postfix(synced: Synced, _: Any) -> dict[str, Any]:
        post = {"teacher": f"{len(teacher_s)} calls ({100 * counts['teach'] / max(cursor, 1):.1f}%)"}
        post["delta"] = int(synced.rows[0]["delta"][-1])
        if audit_every:
            post["audit mIoU"] = f"{iou_from_counts(*audit_tot.values())['miou']:.3f}"
        return post

    total_hint = info.num_frames if limit is None else min(info.num_frames, limit)
    bar = Progress(total_hint, cursor, f"{info.name} (live)", postfix) if progress else None

    def segment_rows(chunks: list[Chunk], stats: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        parts = [chunk_per_frame(c, s) for c, s in zip(chunks, stats)]
        for rows in parts:
            sel = audit_mask(rows["frame"], audit_every)
            for k in audit_tot:
                audit_tot[k] = audit_tot[k] + rows[k][sel].sum(0)
            counts["teach"] += int(rows["teacher"].sum())
        return [concat_per_frame(parts, info.num_classes)]

    merged_on_chunk = None
    if on_chunk is not None:
        merged_on_chunk = lambda chunks, stats, pf: on_chunk(*_merge(chunks, stats), pf)  # noqa: E731
    # ahead=0: the segment is read at once (the next teacher frame decides the next segment)
    pipe = ChunkPipeline(
        state,
        segment_rows,
        buffers,
        ahead=0,
        on_chunk=merged_on_chunk,
        checkpointer=checkpointer,
        should_stop=should_stop,
        progress=bar,
    )

    stream_end = limit if limit is not None else np.iinfo(np.int64).max
    source = prefetch(frames.frames(cursor), prefetch_depth) if cursor < stream_end else iter(())
    exhausted = False

    def take(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        nonlocal exhausted
        out = []
        for _ in range(n):
            try:
                out.append(next(source))
            except StopIteration:
                exhausted = True
                break
        return out

    def label_for(index: int, frame: np.ndarray, purpose: str) -> TeacherLabel:
        nonlocal audit_pause
        if purpose == AUDIT:
            counts["syncs"] += 1
            jax.block_until_ready(pipe.state)  # nothing of the student overlaps (or is slowed by) the audit
            t_a = time.perf_counter()
            lab = teacher(index, frame, purpose)
            audit_pause += time.perf_counter() - t_a
            if lab.ran:
                audit_s.append(lab.seconds)
        else:
            if not overlap_teacher:
                jax.block_until_ready(pipe.state)
            lab = teacher(index, frame, purpose)
            if lab.ran:
                teacher_s.append(lab.seconds)
        counts["reused"] += not lab.ran
        if lab.labels.shape != (h, w) or lab.regions.shape != (h, w):
            raise DataError(
                f"teacher label of frame {index} has shape {lab.labels.shape}/{lab.regions.shape}, "
                f"expected {(h, w)}"
            )
        return lab

    t_loop = time.perf_counter()
    try:
        while not exhausted and cursor < stream_end and not pipe.stopped:
            # With a teacher ``delay`` frames late the segment runs on to the frame where the label arrives
            # (the update happens there; the next teacher frame, after it, is known at the sync).
            seg_start = cursor
            chunks: list[Chunk] = []
            stats: list[Any] = []
            for a, b in plan_segment(cursor, next_t + delay, int(stream_end), t_chunk):
                got = take(b - a)
                n = len(got)
                if n == 0:
                    break
                buf = np.zeros((t_chunk, h, w, 3), np.uint8)
                labels = np.full((t_chunk, h, w), IGNORE_LABEL, LABEL_DTYPE)
                regions = np.zeros((t_chunk, h, w), REGION_DTYPE)
                for i, (small, big) in enumerate(got):
                    buf[i] = small
                    index = a + i
                    purpose = TRAIN if index == next_t else AUDIT if audit_mask(index, audit_every) else None
                    if purpose is not None:
                        lab = label_for(index, big, purpose)
                        labels[i], regions[i] = lab.labels, lab.regions
                        if purpose == AUDIT:
                            audited.append(index)
                valid = np.arange(t_chunk) < n
                chunks.append(Chunk(buf, labels, regions, valid, a))
                stats.append(pipe.step(lambda s, x=(buf, labels, regions, valid): compiled(knobs, s, *x)))
                cursor = a + n
            if not chunks:
                break
            # The one host sync per teacher frame: the stats of the segment and the next teacher frame.
            counts["syncs"] += 1
            (synced,) = pipe.submit(chunks, stats, seg_start, cursor, extra=pipe.state.next_teacher)
            next_t = int(synced.extra)
        pipe.drain()
    finally:
        if bar is not None:
            bar.close()
    loop_s = time.perf_counter() - t_loop - audit_pause
    if cursor == 0 and exhausted:
        raise DataError(f"stream {info.name}: no frames")
    return LiveResult(
        state=pipe.state,
        per_frame=pipe.per_frame()[0],
        wall_s=loop_s,
        compile_s=compile_s,
        teacher_s=np.asarray(teacher_s, np.float64),
        audit_s=np.asarray(audit_s, np.float64),
        reused=counts["reused"],
        audit_frames=np.asarray(sorted(set(audited)), np.int64),
        syncs=counts["syncs"],
        loop_s=loop_s,
        audit_wall_s=audit_pause,
        stopped=pipe.stopped,
    )


def _merge(chunks: list[Chunk], stats: list[dict[str, np.ndarray]]) -> tuple[Chunk, dict]:
    """One chunk (valid frames only) and its stats from the chunks of a segment."""
    keep = [c.valid for c in chunks]
    chunk = Chunk(
        *(np.concatenate([getattr(c, f)[k] for c, k in zip(chunks, keep)]) for f in Chunk._fields[:4]),
        chunks[0].start,
    )
    merged = {key: np.concatenate([s[key][k] for s, k in zip(stats, keep)]) for key in stats[0]}
    return chunk, merged


#: Live mode's controller defaults, used where the command line leaves them unset (the paper's are
#: a_thr 0.8, u_max 8). On residential_street_traffic.mp4 from the CamVid student they cut the updates
#: from 239 to 55 at an audited mIoU of 0.600 instead of 0.613 (docs/live.md, "Live defaults").
LIVE_DEFAULTS = {"a_thr": 0.7, "u_max": 4}


def live_config(
    cfg: OnlineConfig, chunk_size: int | None, audit_every: int, defaults: tuple[str, ...] = ()
) -> OnlineConfig:
    """The online config of a live run: unless ``chunk_size`` is given, chunks of ``delta_min`` frames
    (strides are then whole chunks: no padding, and the teacher call overlaps the chunks before it), and
    the :data:`LIVE_DEFAULTS` of the fields named in ``defaults`` (those the user did not set).
    Raises ``ValueError`` for a negative ``audit_every``."""
    if audit_every < 0:
        raise ValueError(f"--audit-every must be >= 0, got {audit_every}")
    if chunk_size is None:
        cfg = dataclasses.replace(cfg, chunk_size=cfg.delta_min)
    cfg = dataclasses.replace(cfg, **{k: LIVE_DEFAULTS[k] for k in defaults})
    return cfg.validate()


def stream_runner(
    frames: LiveFrames, teacher: LiveTeacher, audit_every: int, frames_limit: int = 0
) -> Callable[..., LiveResult]:
    """:func:`run_live` behind :func:`~jitnet_jax.online.runner.run_stream`'s signature (``source`` is
    ignored; ``max_frames`` is replaced by ``frames_limit``, 0 = the whole video), so the CLI drives both
    modes with one set of callbacks (video, checkpoints, stop flag)."""

    def run(source: Any, cfg: OnlineConfig, key: jax.Array | None = None, **kw: Any) -> LiveResult:
        kw.pop("max_frames", None)
        kw.pop("prefetch_depth", None)
        return run_live(
            frames, teacher, cfg, key, max_frames=frames_limit or None, audit_every=audit_every, **kw
        )

    return run


def as_live_result(result: StreamResult) -> LiveResult:
    """``result`` as a :class:`LiveResult` (a plain one, e.g. restored from a checkpoint of a run that
    had finished its frames, gets empty live measurements)."""
    if isinstance(result, LiveResult):
        return result
    return LiveResult(result.state, result.per_frame, result.wall_s, result.compile_s)


def format_live_summary(summary: dict[str, Any]) -> str:
    """A readable table of a live run's summary (:func:`live_summary` merged into the run summary)."""
    lines = [""]
    if "audit_miou" in summary:
        lines.append(f"{'class':<22}{'IoU':>8}   (audited: every {summary['audit_every']}th frame)")
        for name, iou in summary["audit_class_iou"].items():
            lines.append(f"{name:<22}{iou:>8.3f}" if iou == iou else f"{name:<22}{'n/a':>8}")
        lines += ["-" * 30, f"{'mIoU (audited)':<22}{summary['audit_miou']:>8.3f}"]
    else:
        lines.append(f"{'accuracy':<22}not measured (run with --audit-every K to measure it)")
    t = summary
    lines += [
        f"{'frames':<22}{t['frames']:>8d}",
        f"{'teacher frames':<22}{t['teacher_frames']:>8d}  ({100 * t['teacher_fraction']:.1f}%), "
        f"{t['teacher_calls']} teacher calls in this process, {t['reused_labels']} labels reused from the store",
        f"{'updates':<22}{t['updates']:>8d}",
        f"{'teacher ms / frame':<22}{t['teacher_ms_per_frame']:>8.1f}  (measured: {t['teacher_ms_source']})",
        f"{'teacher on all frames':<22}{t['full_teacher_s']:>7.1f}s  (teacher ms/frame x frames)",
        f"{'live run, end to end':<22}{t['live_total_s']:>7.1f}s  (compile {t['compile_s']:.1f}s, "
        f"frame loop {t['loop_s']:.1f}s; audit excluded)",
        f"{'speedup (real)':<22}{t['speedup_real']:>7.2f}x",
        f"{'speedup (cost model)':<22}{t['speedup_cost_model']:>7.2f}x",
    ]
    if t.get("speedup_bound") is not None:
        lines.append(
            f"{'speedup bound':<22}{t['speedup_bound']:>7.2f}x  (teacher ms / student predict ms = "
            f"{t['teacher_ms_per_frame']:.1f} / {t['student_predict_ms']:.1f}; {t.get('machine', '')})"
        )
    if t["audit_every"]:
        lines.append(
            f"{'audit (not counted)':<22}{t['audit_s']:>7.1f}s  ({t['audit_calls']} teacher calls, "
            f"{t.get('audited_frames', 0)} audited frames)"
        )
    if t.get("teacher_delay_frames"):
        measured = f", measured {t['teacher_latency_ms']:.0f} ms" if "teacher_latency_ms" in t else ""
        lines.append(f"{'labels arrive late':<22}{t['teacher_delay_frames']:>8d}  frames{measured}")
    lines.append(f"{'host syncs':<22}{t['syncs']:>8d}")
    return "\n".join(lines)


def live_summary(
    result: LiveResult,
    audit_every: int,
    class_names: tuple[str, ...],
    total_s: float,
    predict_ms: float | None = None,
    machine: str = "",
) -> dict:
    """Live-mode figures: teacher cost, real speedup, its bound and (only with an audit) accuracy.

    Args:
      result: the run.
      audit_every: K of the audit (0: none).
      class_names: the stream's classes.
      total_s: the run's end-to-end wall time (process work from start to outputs) without the audit.
      predict_ms: the student's prediction of one frame, measured on this machine (None: no bound).
      machine: this machine's name, recorded with the bound.
    Returns:
      ``teacher_calls``, ``teacher_ms_per_frame`` (mean over the calls of this run; the audit calls when
      there are any, since they run with the device idle, else the training calls), ``full_teacher_s``
      (that times the frames), ``live_total_s``, ``speedup_real`` (``full_teacher_s / live_total_s``),
      ``audit_calls``/``audit_s``, ``reused_labels``, ``syncs``, ``student_predict_ms`` and
      ``speedup_bound`` (teacher ms per frame / student predict ms: no run that predicts every frame with
      the student can be faster), and ``audit_miou``/``audit_class_iou``
      over the audited frames, or ``accuracy: "not measured"`` without an audit.
    """
    pf = result.per_frame
    frames = int(len(pf["frame"]))
    clean = result.audit_s if len(result.audit_s) else result.teacher_s
    ms = 1e3 * float(np.mean(clean)) if len(clean) else float("nan")
    full = ms / 1e3 * frames
    out: dict[str, Any] = {
        "live": True,
        "teacher_calls": int(len(result.teacher_s)),
        "teacher_s": float(result.teacher_s.sum()),
        "teacher_ms_per_frame": ms,
        "teacher_ms_source": "audit calls (device idle)" if len(result.audit_s) else "training calls",
        "teacher_ms_train_calls": 1e3 * float(np.mean(result.teacher_s))
        if len(result.teacher_s)
        else float("nan"),
        "full_teacher_s": full,
        "live_total_s": total_s,
        "speedup_real": full / total_s if total_s > 0 else float("nan"),
        "audit_every": int(audit_every),
        "audit_calls": int(len(result.audit_s)),
        "audit_s": float(result.audit_s.sum()),
        "reused_labels": int(result.reused),
        "syncs": int(result.syncs),
        "loop_s": float(result.loop_s),
        "student_predict_ms": predict_ms,
        "speedup_bound": ms / predict_ms if predict_ms else None,
        "machine": machine,
    }
    if audit_every:
        sel = audit_mask(pf["frame"], audit_every)
        scores = iou_from_counts(*(pf[k][sel].sum(0) for k in ("tp", "fp", "fn")))
        out["audited_frames"] = int(sel.sum())
        out["audit_miou"] = scores["miou"]
        out["audit_class_iou"] = dict(zip(class_names, scores["class_iou"]))
        out["miou"], out["class_iou"] = out["audit_miou"], out["audit_class_iou"]
    else:
        out["accuracy"] = "not measured (no --audit-every)"
        out["miou"], out["class_iou"] = None, None  # the teacher frames alone are no accuracy measurement
    return out


__all__ = [
    "AUDIT",
    "LIVE_DEFAULTS",
    "TRAIN",
    "LiveFrames",
    "LiveResult",
    "LiveTeacher",
    "TeacherLabel",
    "VideoFrames",  # from jitnet_jax.data.video_frames
    "audit_mask",
    "live_config",
    "live_summary",
    "plan_segment",
    "run_live",
]

"""Baselines of the paper's evaluation and the temporal-stability metric.

Every baseline produces the same per-frame statistics as the online engine (``jitnet_jax.online.runner``:
``frame``, ``teacher``, ``updates``, ``delta``, ``acc``, ``tp``/``fp``/``fn`` ``[N, C]``), so the table
scores all of them with the same stream-level foreground mIoU and the same cost model.

* **No adaptation** (:func:`run_fixed_student`): a student (the pretrained initial one) predicts every
  frame, no teacher, no updates. One compiled ``lax.map`` over a chunk, one host sync per chunk.
* **Offline oracle** (:func:`oracle_examples` + :func:`train_offline` + :func:`run_fixed_student`): the
  student is trained offline on every 8th teacher frame of the *same* stream for several epochs (one
  compiled ``lax.scan`` per epoch, the pretraining loop :func:`jitnet_jax.student.pretrain.pretrain`), then predicts every frame without
  updates. It has seen the test distribution.
* **Label hold** (:func:`run_label_hold`): the teacher runs every ``delta`` frames and its label is the
  prediction until the next teacher frame (zero student cost; the lower bound of flow propagation).
  Label hold and flow propagation (``teacher.flow``) share one loop, :func:`run_label_propagation`.
* **Fixed stride** (:func:`fixed_stride_config`): the online engine with ``delta_min = delta_max = delta``
  and ``a_thr = 1.0``, so it never stops early and takes exactly ``u_max`` updates per teacher frame.

Temporal stability (:class:`StabilityMeter`, :func:`label_flips`): the **flip rate** is the fraction of
*static* pixels whose predicted label changes between consecutive frames, where a pixel is static when
``max_c |I_t(p, c) - I_{t-1}(p, c)| <= threshold`` (uint8 RGB, default 8 of 255). Pixels whose label is
the ignore label in either frame are excluded. Lower is more stable; the teacher's own labels are scored
the same way. Summed over the stream: ``sum_t flips_t / sum_t static_t``.

Every baseline's per-frame rows are the runner's (:func:`jitnet_jax.online.runner.chunk_per_frame`) and
every run is scored by the one summary, :func:`jitnet_jax.eval.summary.summarize_per_frame`.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jitnet_jax.config import OnlineConfig, StudentConfig
from jitnet_jax.data.types import IGNORE_LABEL, Chunk, StreamSource
from jitnet_jax.online.runner import chunk_per_frame, concat_per_frame, limit_chunks
from jitnet_jax.student.metrics import confusion_matrix
from jitnet_jax.student.step import StudentState, apply_model

DEFAULT_STATIC_THRESHOLD = 8

#: ``on_chunk(chunk, preds)`` with ``preds`` uint8 ``[T, H, W]`` (rows where ``chunk.valid`` is False
#: are padding).
ChunkCallback = Callable[[Chunk, np.ndarray], None]


# --------------------------------------------------------------------------- per-frame statistics


def chunk_rows(
    chunk: Chunk,
    confusion: np.ndarray,
    teacher: np.ndarray | None = None,
    delta: int = 0,
) -> dict[str, np.ndarray]:
    """The runner's per-frame rows of one chunk from int ``[T or n, C, C]`` confusion matrices (no updates;
    ``teacher`` bool ``[n]`` marks the frames the teacher ran on). Padding frames are dropped."""
    n = int(chunk.valid.sum())
    conf = np.asarray(confusion)
    stats = {
        "confusion": conf,
        "teacher": np.zeros(n, bool) if teacher is None else np.asarray(teacher, bool),
        "updates": np.zeros(n, np.int32),
        "delta": np.full(n, delta, np.int32),
        "acc": np.zeros(n, np.float32),
    }
    return chunk_per_frame(chunk, stats)


def confusion_np(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 ``[T, C, C]`` per-frame confusion (host side); labels outside ``[0, C)`` are ignored."""
    labels = np.asarray(labels).astype(np.int64)
    preds = np.asarray(preds).astype(np.int64)
    t = labels.shape[0]
    valid = (labels >= 0) & (labels < num_classes)
    idx = labels * num_classes + np.clip(preds, 0, num_classes - 1)
    idx = np.where(valid, idx + (np.arange(t) * num_classes * num_classes)[:, None, None], -1)
    counts = np.bincount(idx[idx >= 0].ravel(), minlength=t * num_classes * num_classes)
    return counts.reshape(t, num_classes, num_classes)


def limited_chunks(source: StreamSource, chunk_size: int, max_frames: int | None) -> Iterator[Chunk]:
    """Chunks of ``source`` up to ``max_frames`` (frames past it are marked invalid)."""
    total = source.info.num_frames if max_frames is None else min(source.info.num_frames, max_frames)
    yield from limit_chunks(source, chunk_size, total)


# --------------------------------------------------------------------------- temporal stability


def label_flips(
    prev_frame: np.ndarray,
    frame: np.ndarray,
    prev_pred: np.ndarray,
    pred: np.ndarray,
    threshold: int = DEFAULT_STATIC_THRESHOLD,
) -> tuple[int, int]:
    """``(flips, static)`` between two consecutive frames.

    Args:
      prev_frame, frame: uint8 ``[H, W, 3]``.
      prev_pred, pred: int ``[H, W]`` label maps (``IGNORE_LABEL`` pixels are excluded).
      threshold: a pixel is static when its largest channel change is ``<= threshold``.
    Returns:
      ``static``: static, non-ignored pixels; ``flips``: those whose label changed.
    """
    diff = np.abs(frame.astype(np.int16) - prev_frame.astype(np.int16)).max(-1)
    static = (diff <= threshold) & (pred != IGNORE_LABEL) & (prev_pred != IGNORE_LABEL)
    flips = static & (pred != prev_pred)
    return int(flips.sum()), int(static.sum())


class StabilityMeter:
    """Accumulates the flip rate (see module docstring) over a stream fed chunk by chunk.

    ``update(frames uint8 [T, H, W, 3], preds int [T, H, W], valid bool [T])``; frames must arrive in
    stream order. ``result()`` gives ``{"flip_rate", "flips", "static_pixels", "pairs"}``.
    """

    def __init__(self, threshold: int = DEFAULT_STATIC_THRESHOLD):
        self.threshold = threshold
        self.flips = 0
        self.static = 0
        self.pairs = 0
        self._prev: tuple[np.ndarray, np.ndarray] | None = None

    def update(self, frames: np.ndarray, preds: np.ndarray, valid: np.ndarray | None = None) -> None:
        n = len(frames) if valid is None else int(np.asarray(valid).sum())
        for t in range(n):
            cur = (np.asarray(frames[t]), np.asarray(preds[t]))
            if self._prev is not None:
                f, s = label_flips(self._prev[0], cur[0], self._prev[1], cur[1], self.threshold)
                self.flips += f
                self.static += s
                self.pairs += 1
            self._prev = cur

    def result(self) -> dict[str, float]:
        rate = self.flips / self.static if self.static else float("nan")
        return {"flip_rate": rate, "flips": self.flips, "static_pixels": self.static, "pairs": self.pairs}


def teacher_stability(
    source: StreamSource,
    max_frames: int | None = None,
    threshold: int = DEFAULT_STATIC_THRESHOLD,
    chunk_size: int = 64,
) -> dict[str, float]:
    """The flip rate of the teacher's own labels over the stream."""
    meter = StabilityMeter(threshold)
    for chunk in limited_chunks(source, chunk_size, max_frames):
        meter.update(chunk.frames, chunk.labels, chunk.valid)
    return meter.result()


# --------------------------------------------------------------------------- fixed student (no updates)


def predict_chunk(
    cfg: StudentConfig,
    params: Any,
    batch_stats: Any,
    frames: jnp.ndarray,
    labels: jnp.ndarray,
    valid: jnp.ndarray,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Predict every frame of a chunk with fixed weights (``lax.map``, one frame at a time so that
    batch-statistics BatchNorm sees the same single-frame batches as online).

    Args:
      frames: uint8 ``[T, H, W, 3]``; labels: uint8/int ``[T, H, W]``; valid: bool ``[T]``.
    Returns:
      ``(confusion int32 [T, C, C], preds uint8 [T, H, W])``.
    """
    train = cfg.model.bn_mode == "batch"
    num_classes = cfg.model.num_classes

    def one(x: tuple[jnp.ndarray, ...]) -> tuple[jnp.ndarray, jnp.ndarray]:
        frame, label, ok = x
        logits, _ = apply_model(cfg, params, batch_stats, frame[None], train)
        pred = jnp.argmax(logits[0], axis=-1).astype(jnp.int32)
        conf = confusion_matrix(label.astype(jnp.int32), pred, num_classes, mask=ok)
        return conf, pred.astype(jnp.uint8)

    return jax.lax.map(one, (frames, labels, valid))


def make_predict_chunk(cfg: StudentConfig) -> Any:
    """:func:`predict_chunk` jitted for ``cfg``: ``fn(params, batch_stats, frames, labels, valid)``."""
    cfg.validate()
    return jax.jit(lambda p, b, f, y, v: predict_chunk(cfg, p, b, f, y, v))


@dataclasses.dataclass
class MethodRun:
    """What a baseline run produced.

    Attributes:
      per_frame: runner-format per-frame statistics.
      wall_s: seconds of the method's own work on the stream (student inference, flow; no decoding).
      compile_s: compilation seconds (0 when nothing was compiled).
      extra: method-specific numbers (e.g. ``flow_ms_per_frame``).
    """

    per_frame: dict[str, np.ndarray]
    wall_s: float
    compile_s: float = 0.0
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def run_fixed_student(
    source: StreamSource,
    cfg: StudentConfig,
    params: Any,
    batch_stats: Any,
    *,
    chunk_size: int = 64,
    max_frames: int | None = None,
    on_chunk: ChunkCallback | None = None,
    progress: bool = True,
) -> MethodRun:
    """The student with fixed weights on every frame (no teacher, no updates).

    Used for *no adaptation* (initial/pretrained weights) and for evaluating the *offline oracle*.
    """
    info = source.info
    if info.num_classes != cfg.model.num_classes:
        raise ValueError(
            f"stream {info.name} has {info.num_classes} classes but model.num_classes={cfg.model.num_classes}"
        )
    fn = make_predict_chunk(cfg)
    abstract = (
        jax.ShapeDtypeStruct((chunk_size, info.height, info.width, 3), np.uint8),
        jax.ShapeDtypeStruct((chunk_size, info.height, info.width), np.uint8),
        jax.ShapeDtypeStruct((chunk_size,), np.bool_),
    )
    t0 = time.perf_counter()
    compiled = fn.lower(params, batch_stats, *abstract).compile()
    compile_s = time.perf_counter() - t0
    parts, wall = [], 0.0
    bar = _bar(progress, source, max_frames, "no-update student")
    for chunk in limited_chunks(source, chunk_size, max_frames):
        t1 = time.perf_counter()
        conf, preds = jax.device_get(compiled(params, batch_stats, chunk.frames, chunk.labels, chunk.valid))
        wall += time.perf_counter() - t1
        n = int(chunk.valid.sum())
        parts.append(chunk_rows(chunk, conf))
        if on_chunk is not None:
            on_chunk(chunk, preds)
        if bar is not None:
            bar.update(n)
    if bar is not None:
        bar.close()
    return MethodRun(concat_per_frame(parts, info.num_classes), wall, compile_s)


def _bar(progress: bool, source: StreamSource, max_frames: int | None, desc: str) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    n = source.info.num_frames if max_frames is None else min(source.info.num_frames, max_frames)
    return tqdm(total=n, unit="frame", desc=f"{source.info.name} {desc}", dynamic_ncols=True, leave=False)


# --------------------------------------------------------------------------- label hold / propagation

#: ``propagate(label uint8 [H, W], prev_frame uint8 [H, W, 3], frame uint8 [H, W, 3]) -> label uint8 [H, W]``
Propagate = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def run_label_propagation(
    source: StreamSource,
    delta: int,
    propagate: Propagate | None = None,
    *,
    chunk_size: int = 64,
    max_frames: int | None = None,
    on_chunk: ChunkCallback | None = None,
    progress: bool = False,
    desc: str = "label hold",
) -> MethodRun:
    """Teacher on frames ``0, delta, 2 delta, ...`` (ignore pixels -> background); every other frame's
    prediction is the previous frame's, carried forward by ``propagate`` (``None``: held unchanged).

    Returns a :class:`MethodRun` whose ``wall_s`` is the CPU time of this process spent in ``propagate``
    (``time.process_time``: on a shared machine, wall time would charge the baseline for other processes'
    work) and whose ``extra`` holds ``propagated_frames`` and ``ms_per_frame`` (the mean cost of one
    propagated frame).
    """
    if delta < 1:
        raise ValueError(f"{desc} delta must be >= 1, got {delta}")
    c = source.info.num_classes
    prev: tuple[np.ndarray, np.ndarray] | None = None  # (frame, label) of the previous frame
    parts, spent, propagated = [], 0.0, 0
    bar = _bar(progress, source, max_frames, desc)
    for chunk in limited_chunks(source, chunk_size, max_frames):
        n = int(chunk.valid.sum())
        preds = np.zeros(chunk.labels.shape, np.uint8)
        teacher = np.zeros(n, bool)
        for j in range(n):
            if (chunk.start + j) % delta == 0 or prev is None:
                lab = np.where(chunk.labels[j] == IGNORE_LABEL, 0, chunk.labels[j]).astype(np.uint8)
                teacher[j] = True
            elif propagate is None:
                lab = prev[1]
            else:
                t0 = time.process_time()
                lab = propagate(prev[1], prev[0], chunk.frames[j])
                spent += time.process_time() - t0
                propagated += 1
            preds[j] = lab
            prev = (chunk.frames[j], lab)
        parts.append(chunk_rows(chunk, confusion_np(chunk.labels[:n], preds[:n], c), teacher, delta))
        if on_chunk is not None:
            on_chunk(chunk, preds)
        if bar is not None:
            bar.update(n)
    if bar is not None:
        bar.close()
    ms = 1e3 * spent / propagated if propagated else 0.0
    extra = {"propagated_frames": propagated, "ms_per_frame": ms}
    return MethodRun(concat_per_frame(parts, c), spent, 0.0, extra)


def run_label_hold(
    source: StreamSource,
    delta: int,
    *,
    chunk_size: int = 64,
    max_frames: int | None = None,
    on_chunk: ChunkCallback | None = None,
) -> MethodRun:
    """Label hold: the teacher label of every ``delta``-th frame is the prediction until the next teacher
    frame. Student cost is zero (``wall_s`` is 0)."""
    return run_label_propagation(
        source, delta, None, chunk_size=chunk_size, max_frames=max_frames, on_chunk=on_chunk
    )


# --------------------------------------------------------------------------- fixed stride


def fixed_stride_config(base: OnlineConfig, delta: int, updates: int) -> OnlineConfig:
    """The fixed-stride baseline as an online config: teacher every ``delta`` frames, exactly ``updates``
    updates per teacher frame (``a_thr = 1.0`` can never be exceeded, so the loop never stops early)."""
    return dataclasses.replace(base, delta_min=delta, delta_max=delta, a_thr=1.0, u_max=updates).validate()


# --------------------------------------------------------------------------- offline training


def oracle_examples(
    source: StreamSource, every: int = 8, max_frames: int | None = None, chunk_size: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames ``0, every, 2 every, ...`` of the stream with their teacher labels and region maps.

    Returns ``(frames uint8 [K, H, W, 3], labels uint8 [K, H, W], regions uint8 [K, H, W])`` (region
    map: 0 ignore, 1 background, 2 inside a dilated teacher box; see ``jitnet_jax.data.types``).
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    fs, ys, ws = [], [], []
    for chunk in limited_chunks(source, chunk_size, max_frames):
        for j in np.flatnonzero(chunk.valid):
            if (chunk.start + j) % every == 0:
                fs.append(chunk.frames[j])
                ys.append(chunk.labels[j])
                ws.append(chunk.regions[j])
    if not fs:
        raise ValueError(f"stream {source.info.name}: no frames to train on")
    return np.stack(fs), np.stack(ys), np.stack(ws)


def train_offline(
    cfg: StudentConfig,
    state: StudentState,
    frames: np.ndarray,
    labels: np.ndarray,
    regions: np.ndarray,
    *,
    epochs: int,
    key: jax.Array,
    fg_weight: float = OnlineConfig.fg_weight,
    bg_weight: float = OnlineConfig.bg_weight,
    progress: bool = True,
    desc: str = "offline training",
) -> tuple[StudentState, list[float]]:
    """Train the student for ``epochs`` passes over the examples, one frame per step, shuffled each epoch:
    the pretraining loop (:func:`jitnet_jax.student.pretrain.pretrain`, one compiled ``lax.scan`` per
    epoch, no augmentation) started from ``state``.

    Args:
      frames: uint8 ``[K, H, W, 3]``; labels: uint8 ``[K, H, W]``; regions: the region map uint8
        ``[K, H, W]`` of a source, mapped to ``fg_weight``/``bg_weight`` (2 inside boxes / 1 elsewhere;
        0 stays ignored).
      key: PRNG key for the shuffling.
    Returns:
      ``(state, mean loss per epoch)``; the input state is not donated.
    """
    from jitnet_jax.student.pretrain import pretrain

    if progress:
        print(f"{desc}: {len(frames)} examples, {epochs} epochs", file=sys.stderr)
    return pretrain(
        (frames, labels, regions),
        cfg,
        epochs=epochs,
        key=key,
        progress=progress,
        fg_weight=fg_weight,
        bg_weight=bg_weight,
        state=state,
    )

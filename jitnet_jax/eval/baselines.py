"""Baselines of the paper's evaluation and the temporal-stability metric.

Every baseline produces the same per-frame statistics as the online engine (``jitnet_jax.online.runner``:
``frame``, ``teacher``, ``updates``, ``delta``, ``acc``, ``tp``/``fp``/``fn`` ``[N, C]``), so the table
scores all of them with the same stream-level foreground mIoU and the same cost model.

* **No adaptation** (:func:`run_fixed_student`): a student (the pretrained initial one) predicts every
  frame, no teacher, no updates. One compiled ``lax.map`` over a chunk, one host sync per chunk.
* **Offline oracle** (:func:`oracle_examples` + :func:`train_offline` + :func:`run_fixed_student`): the
  student is trained offline on every 8th teacher frame of the *same* stream for several epochs with the
  jitted train step, then predicts every frame without updates. It has seen the test distribution.
* **Label hold** (:func:`run_label_hold`): the teacher runs every ``delta`` frames and its label is the
  prediction until the next teacher frame (zero student cost; the lower bound of flow propagation).
* **Fixed stride** (:func:`fixed_stride_config`): the online engine with ``delta_min = delta_max = delta``
  and ``a_thr = 1.0``, so it never stops early and takes exactly ``u_max`` updates per teacher frame.

Temporal stability (:class:`StabilityMeter`, :func:`label_flips`): the **flip rate** is the fraction of
*static* pixels whose predicted label changes between consecutive frames, where a pixel is static when
``max_c |I_t(p, c) - I_{t-1}(p, c)| <= threshold`` (uint8 RGB, default 8 of 255). Pixels whose label is
the ignore label in either frame are excluded. Lower is more stable; the teacher's own labels are scored
the same way. Summed over the stream: ``sum_t flips_t / sum_t static_t``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jitnet_jax.config import StudentConfig
from jitnet_jax.data.types import IGNORE_LABEL, Chunk, StreamSource
from jitnet_jax.eval.costs import CostModel, cost_model_speedup
from jitnet_jax.online.engine import Knobs, OnlineConfig, effective_weight
from jitnet_jax.online.runner import limit_chunks
from jitnet_jax.student.metrics import confusion_matrix, iou_from_counts
from jitnet_jax.student.step import StudentState, apply_model, jit_train_step

DEFAULT_STATIC_THRESHOLD = 8

#: ``on_chunk(chunk, preds)`` with ``preds`` uint8 ``[T, H, W]`` (rows where ``chunk.valid`` is False
#: are padding).
ChunkCallback = Callable[[Chunk, np.ndarray], None]


# --------------------------------------------------------------------------- per-frame statistics


def per_frame_rows(
    start: int,
    confusion: np.ndarray,
    teacher: np.ndarray | None = None,
    updates: np.ndarray | None = None,
    delta: int = 0,
) -> dict[str, np.ndarray]:
    """Per-frame rows in the runner's format from int ``[n, C, C]`` confusion matrices."""
    conf = np.asarray(confusion, np.int64)
    n = conf.shape[0]
    tp = np.diagonal(conf, axis1=1, axis2=2)
    return {
        "frame": np.arange(start, start + n, dtype=np.int64),
        "teacher": np.zeros(n, bool) if teacher is None else np.asarray(teacher, bool),
        "updates": np.zeros(n, np.int32) if updates is None else np.asarray(updates, np.int32),
        "delta": np.full(n, delta, np.int32),
        "acc": np.zeros(n, np.float32),
        "tp": tp,
        "fp": conf.sum(1) - tp,
        "fn": conf.sum(2) - tp,
    }


def concat_rows(parts: list[dict[str, np.ndarray]], num_classes: int) -> dict[str, np.ndarray]:
    """Concatenate per-frame dicts (an empty run gives length-0 arrays)."""
    if not parts:
        return per_frame_rows(0, np.zeros((0, num_classes, num_classes), np.int64))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


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
        parts.append(per_frame_rows(chunk.start, conf[:n]))
        if on_chunk is not None:
            on_chunk(chunk, preds)
        if bar is not None:
            bar.update(n)
    if bar is not None:
        bar.close()
    return MethodRun(concat_rows(parts, info.num_classes), wall, compile_s)


def _bar(progress: bool, source: StreamSource, max_frames: int | None, desc: str) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    n = source.info.num_frames if max_frames is None else min(source.info.num_frames, max_frames)
    return tqdm(total=n, unit="frame", desc=f"{source.info.name} {desc}", dynamic_ncols=True, leave=False)


# --------------------------------------------------------------------------- label hold


def run_label_hold(
    source: StreamSource,
    delta: int,
    *,
    chunk_size: int = 64,
    max_frames: int | None = None,
    on_chunk: ChunkCallback | None = None,
) -> MethodRun:
    """Teacher on frames ``0, delta, 2 delta, ...``; its label (ignore pixels -> background) is the
    prediction of every frame until the next teacher frame. Student cost is zero."""
    if delta < 1:
        raise ValueError(f"label hold delta must be >= 1, got {delta}")
    c = source.info.num_classes
    held: np.ndarray | None = None
    parts = []
    for chunk in limited_chunks(source, chunk_size, max_frames):
        n = int(chunk.valid.sum())
        preds = np.zeros(chunk.labels.shape, np.uint8)
        teacher = np.zeros(n, bool)
        for j in range(n):
            t = chunk.start + j
            if t % delta == 0:
                held = np.where(chunk.labels[j] == IGNORE_LABEL, 0, chunk.labels[j]).astype(np.uint8)
                teacher[j] = True
            preds[j] = held
        parts.append(
            per_frame_rows(chunk.start, confusion_np(chunk.labels[:n], preds[:n], c), teacher, delta=delta)
        )
        if on_chunk is not None:
            on_chunk(chunk, preds)
    return MethodRun(concat_rows(parts, c), 0.0)


# --------------------------------------------------------------------------- fixed stride


def fixed_stride_config(base: OnlineConfig, delta: int, updates: int) -> OnlineConfig:
    """The fixed-stride baseline as an online config: teacher every ``delta`` frames, exactly ``updates``
    updates per teacher frame (``a_thr = 1.0`` can never be exceeded, so the loop never stops early)."""
    return dataclasses.replace(base, delta_min=delta, delta_max=delta, a_thr=1.0, u_max=updates).validate()


# --------------------------------------------------------------------------- offline training


def oracle_examples(
    source: StreamSource, every: int = 8, max_frames: int | None = None, chunk_size: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames ``0, every, 2 every, ...`` of the stream with their teacher labels and weights.

    Returns ``(frames uint8 [K, H, W, 3], labels uint8 [K, H, W], weights float32 [K, H, W])``.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    fs, ys, ws = [], [], []
    for chunk in limited_chunks(source, chunk_size, max_frames):
        for j in np.flatnonzero(chunk.valid):
            if (chunk.start + j) % every == 0:
                fs.append(chunk.frames[j])
                ys.append(chunk.labels[j])
                ws.append(chunk.weights[j])
    if not fs:
        raise ValueError(f"stream {source.info.name}: no frames to train on")
    return np.stack(fs), np.stack(ys), np.stack(ws)


def train_offline(
    cfg: StudentConfig,
    state: StudentState,
    frames: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    *,
    epochs: int,
    key: jax.Array,
    fg_weight: float = 10.0,
    bg_weight: float = 1.0,
    progress: bool = True,
    desc: str = "offline training",
) -> tuple[StudentState, list[float]]:
    """Train the student for ``epochs`` passes over the examples, one frame per step, shuffled each epoch.

    Args:
      frames: uint8 ``[K, H, W, 3]``; labels: uint8 ``[K, H, W]``; weights: float ``[K, H, W]`` as in a
        label store (> 1 inside the teacher's boxes, 0 ignored); mapped to ``fg_weight``/``bg_weight``
        like the online engine does.
      key: PRNG key for the shuffling.
    Returns:
      ``(state, mean loss per epoch)``.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    k = len(frames)
    if not (len(labels) == len(weights) == k) or k == 0:
        raise ValueError(
            f"need the same positive number of frames/labels/weights, got {k}/{len(labels)}/{len(weights)}"
        )
    knobs = Knobs(
        a_thr=jnp.float32(1.0),
        delta_min=jnp.int32(1),
        delta_max=jnp.int32(1),
        u_max=jnp.int32(1),
        fg_weight=jnp.float32(fg_weight),
        bg_weight=jnp.float32(bg_weight),
    )
    w_eff = np.asarray(effective_weight(jnp.asarray(weights, jnp.float32), knobs))
    step = jit_train_step(cfg)
    state = jax.tree_util.tree_map(jnp.copy, state)  # the jitted step donates its input state
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs * k, unit="step", desc=desc, dynamic_ncols=True, leave=False)
    losses = []
    for _ in range(epochs):
        key, sub = jax.random.split(key)
        order = np.asarray(jax.random.permutation(sub, k))
        total = jnp.float32(0.0)
        for i in order:
            state, m = step(state, frames[i], labels[i].astype(np.int32), w_eff[i])
            total = total + m["loss"]
            if bar is not None:
                bar.update(1)
        losses.append(float(total) / k)
        if bar is not None:
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    if bar is not None:
        bar.close()
    return state, losses


# --------------------------------------------------------------------------- summary


def summarize_run(
    per_frame: dict[str, np.ndarray],
    class_names: tuple[str, ...],
    *,
    cost: CostModel | None = None,
    student_ms: float | None = None,
    measured_teacher_ms: float | None = None,
    wall_s: float = 0.0,
) -> dict[str, Any]:
    """Scores and costs of a run from its per-frame statistics.

    Args:
      cost: the paper's cost model; ``student_ms`` replaces its per-frame inference cost on non-teacher
        frames (0 for label hold, the measured flow cost for flow propagation).
      measured_teacher_ms: the teacher's measured cost per frame; with ``wall_s`` (the method's measured
        work) gives ``speedup_measured = teacher_ms N / (teacher_ms T + 1000 wall_s)``.
    """
    cost = cost or CostModel()
    if student_ms is not None:
        cost = dataclasses.replace(cost, infer_ms=student_ms)
    scores = iou_from_counts(per_frame["tp"].sum(0), per_frame["fp"].sum(0), per_frame["fn"].sum(0))
    n = int(len(per_frame["frame"]))
    t = int(per_frame["teacher"].sum())
    u = int(per_frame["updates"].sum())
    out: dict[str, Any] = {
        "miou": scores["miou"],
        "class_iou": dict(zip(class_names, scores["class_iou"])),
        "frames": n,
        "teacher_frames": t,
        "teacher_fraction": t / max(n, 1),
        "updates": u,
        "speedup_cost_model": cost_model_speedup(n, t, u, cost),
        "wall_s": wall_s,
    }
    if measured_teacher_ms is not None:
        spent = measured_teacher_ms * t + 1e3 * wall_s
        out["speedup_measured"] = measured_teacher_ms * n / max(spent, 1e-9)
    return out

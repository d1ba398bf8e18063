"""Algorithm 1 of the paper (online distillation) as a compiled stream loop.

One frame (``frame_step``):
  * teacher frame (``cursor == next_teacher``): up to ``u_max`` updates. Before each update the
    student's prediction on the frame (from the same fused forward pass) is scored against the teacher
    label with the smoothed min-class IoU; the loop stops as soon as it exceeds ``a_thr``. The stride
    ``delta`` then doubles if the last measured accuracy passed, else halves, within
    ``[delta_min, delta_max]``, and the next teacher frame is ``cursor + delta``.
    The prediction scored for a teacher frame is the student's prediction from the last forward pass,
    i.e. before the last update (as in the authors' code).
  * any other frame: one prediction. Labels of these frames are used for scoring only.

One chunk (``run_chunk``): ``lax.scan`` of ``frame_step`` over ``T`` frames, the teacher branch
behind ``lax.cond``, the update loop a ``lax.while_loop``; per-frame stats stay on the device and
reach the host once per chunk.

The controller's knobs (``a_thr``, ``delta_min``, ``delta_max``, ``u_max``, loss weights) are traced
arrays in :class:`Knobs`, so the same functions can be ``vmap``-ed over a sweep axis.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp

from jitnet_jax.config import StudentConfig
from jitnet_jax.student.metrics import confusion_matrix
from jitnet_jax.student.step import StudentState, apply_grads, loss_and_grads, predict


@dataclasses.dataclass(frozen=True)
class OnlineConfig:
    """Online distillation settings (paper defaults).

    Attributes:
      student: the student network and optimiser.
      a_thr: accuracy threshold in (0, 1] on the smoothed min-class IoU.
      delta_min, delta_max: bounds of the teacher stride (frames).
      u_max: maximum updates per teacher frame.
      fg_weight, bg_weight: loss weight inside / outside the teacher's dilated boxes. The engine reads
        the source's weight map as a box mask (weight > 1 is inside a box, weight 0 is ignored).
      chunk_size: frames per compiled scan (static shape).
    """

    student: StudentConfig = StudentConfig()
    a_thr: float = 0.8
    delta_min: int = 8
    delta_max: int = 64
    u_max: int = 8
    fg_weight: float = 10.0
    bg_weight: float = 1.0
    chunk_size: int = 64

    def validate(self) -> OnlineConfig:
        self.student.validate()
        if not 0 < self.a_thr <= 1:
            raise ValueError(f"a_thr must be in (0, 1], got {self.a_thr}")
        if self.delta_min < 1:
            raise ValueError(f"delta_min must be >= 1, got {self.delta_min}")
        if self.delta_min > self.delta_max:
            raise ValueError(f"delta_min ({self.delta_min}) must be <= delta_max ({self.delta_max})")
        if self.u_max < 1:
            raise ValueError(f"u_max must be >= 1, got {self.u_max}")
        if self.fg_weight < 0 or self.bg_weight < 0:
            raise ValueError("fg_weight and bg_weight must be >= 0")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        return self


@flax.struct.dataclass
class Knobs:
    """Traced controller hyperparameters (scalars, or ``[K]`` under a sweep ``vmap``)."""

    a_thr: jnp.ndarray  # float32
    delta_min: jnp.ndarray  # int32
    delta_max: jnp.ndarray  # int32
    u_max: jnp.ndarray  # int32
    fg_weight: jnp.ndarray  # float32
    bg_weight: jnp.ndarray  # float32

    @staticmethod
    def from_config(cfg: OnlineConfig) -> Knobs:
        return Knobs(
            a_thr=jnp.float32(cfg.a_thr),
            delta_min=jnp.int32(cfg.delta_min),
            delta_max=jnp.int32(cfg.delta_max),
            u_max=jnp.int32(cfg.u_max),
            fg_weight=jnp.float32(cfg.fg_weight),
            bg_weight=jnp.float32(cfg.bg_weight),
        )


@flax.struct.dataclass
class OnlineState:
    """Everything the online loop carries from frame to frame.

    Attributes:
      student: the student's params/batch stats/optimiser state/step/rng.
      delta: int32 current teacher stride.
      next_teacher: int32 stream index of the next teacher frame.
      cursor: int32 stream index of the next frame to process.
      teacher_frames: int32 teacher frames so far.
      updates: int32 updates so far.
    """

    student: StudentState
    delta: jnp.ndarray
    next_teacher: jnp.ndarray
    cursor: jnp.ndarray
    teacher_frames: jnp.ndarray
    updates: jnp.ndarray


def init_online_state(student: StudentState, cfg: OnlineConfig) -> OnlineState:
    """The controller starts with ``delta = delta_min`` and runs the teacher on frame 0."""
    return OnlineState(
        student=student,
        delta=jnp.int32(cfg.delta_min),
        next_teacher=jnp.int32(0),
        cursor=jnp.int32(0),
        teacher_frames=jnp.int32(0),
        updates=jnp.int32(0),
    )


def effective_weight(weight: jnp.ndarray, knobs: Knobs) -> jnp.ndarray:
    """float32 ``[H, W]``: ``fg_weight`` where the source weight > 1 (inside boxes), ``bg_weight``
    where it is in (0, 1], 0 where it is 0."""
    return jnp.where(weight > 1.0, knobs.fg_weight, jnp.where(weight > 0.0, knobs.bg_weight, 0.0))


def teacher_updates(
    cfg: StudentConfig,
    knobs: Knobs,
    student: StudentState,
    frame: jnp.ndarray,
    label: jnp.ndarray,
    weight: jnp.ndarray,
    active: jnp.ndarray | bool = True,
    apply: Callable[[StudentState, Any, Any], StudentState] | None = None,
) -> tuple[StudentState, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """The update loop on a teacher frame (``lax.while_loop``).

    Args:
      frame: uint8 ``[H, W, 3]``; label: int ``[H, W]``; weight: float32 ``[H, W]`` (already effective).
      active: bool scalar; when False no pass runs (used to mask idle members under ``vmap``).
      apply: ``(student, grads, new_batch_stats) -> student``; default
        :func:`~jitnet_jax.student.step.apply_grads` with ``cfg`` (a sweep passes a per-member optimiser).
    Returns:
      ``(student, pred int32 [H, W], updates int32, acc float32)`` where ``pred`` and ``acc`` are from
      the last forward pass (before the last update).
    """
    h, w = label.shape
    if apply is None:

        def apply(s: StudentState, g: Any, b: Any) -> StudentState:
            return apply_grads(cfg, s, g, b)

    def cond(c: tuple[Any, ...]) -> jnp.ndarray:
        _, k, _, _, stop = c
        return jnp.logical_and(jnp.logical_and(~stop, k < knobs.u_max), active)

    def body(c: tuple[Any, ...]) -> tuple[Any, ...]:
        s, k, _, _, _ = c
        grads, new_stats, aux = loss_and_grads(cfg, s, frame, label, weight)
        passed = aux["min_iou"] > knobs.a_thr
        updated = apply(s, grads, new_stats)
        s = jax.tree_util.tree_map(lambda old, new: jnp.where(passed, old, new), s, updated)
        return s, k + jnp.where(passed, 0, 1).astype(jnp.int32), aux["pred"], aux["min_iou"], passed

    init = (student, jnp.int32(0), jnp.zeros((h, w), jnp.int32), jnp.float32(0.0), jnp.bool_(False))
    student, k, pred, acc, _ = jax.lax.while_loop(cond, body, init)
    return student, pred, k, acc


def next_delta(knobs: Knobs, delta: jnp.ndarray, acc: jnp.ndarray) -> jnp.ndarray:
    """Double the stride if ``acc > a_thr`` else halve it, clamped to ``[delta_min, delta_max]``."""
    grown = jnp.where(acc > knobs.a_thr, delta * 2, delta // 2)
    return jnp.clip(grown, knobs.delta_min, knobs.delta_max).astype(jnp.int32)


def frame_step(
    cfg: StudentConfig,
    knobs: Knobs,
    state: OnlineState,
    frame: jnp.ndarray,
    label: jnp.ndarray,
    weight: jnp.ndarray,
    valid: jnp.ndarray,
) -> tuple[OnlineState, dict[str, jnp.ndarray]]:
    """Process one frame (see module docstring). Padding frames (``valid=False``) change nothing.

    Returns ``(state, stats)`` with stats: ``teacher`` bool, ``updates`` int32, ``delta`` int32 (after
    this frame), ``acc`` float32 (last measured control accuracy; 0 on student-only frames),
    ``confusion`` int32 ``[C, C]`` and ``pred`` uint8 ``[H, W]``.
    """
    is_teacher = jnp.logical_and(valid, state.cursor == state.next_teacher)
    label = label.astype(jnp.int32)
    w = effective_weight(weight, knobs)

    def on_teacher(s: OnlineState) -> tuple[OnlineState, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
        student, pred, k, acc = teacher_updates(cfg, knobs, s.student, frame, label, w)
        delta = next_delta(knobs, s.delta, acc)
        s = s.replace(
            student=student,
            delta=delta,
            next_teacher=s.cursor + delta,
            teacher_frames=s.teacher_frames + 1,
            updates=s.updates + k,
        )
        return s, pred, k, acc

    def on_student(s: OnlineState) -> tuple[OnlineState, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
        return s, predict(cfg, s.student, frame), jnp.int32(0), jnp.float32(0.0)

    state, pred, k, acc = jax.lax.cond(is_teacher, on_teacher, on_student, state)
    state = state.replace(cursor=state.cursor + valid.astype(jnp.int32))
    stats = {
        "teacher": is_teacher,
        "updates": k,
        "delta": state.delta,
        "acc": acc,
        "confusion": confusion_matrix(label, pred, cfg.model.num_classes, mask=valid),
        "pred": pred.astype(jnp.uint8),
    }
    return state, stats


def run_chunk(
    cfg: StudentConfig,
    knobs: Knobs,
    state: OnlineState,
    frames: jnp.ndarray,
    labels: jnp.ndarray,
    weights: jnp.ndarray,
    valid: jnp.ndarray,
    keep_preds: bool = False,
) -> tuple[OnlineState, dict[str, jnp.ndarray]]:
    """``lax.scan`` of :func:`frame_step` over a chunk.

    Args:
      frames: uint8 ``[T, H, W, 3]``; labels: uint8/int ``[T, H, W]``; weights: float32 ``[T, H, W]``;
      valid: bool ``[T]``.
      keep_preds: also return the predictions (uint8 ``[T, H, W]``).
    Returns:
      ``(state, stats)``, each stat stacked over ``T``.
    """

    def body(s: OnlineState, x: tuple[jnp.ndarray, ...]) -> tuple[OnlineState, dict[str, jnp.ndarray]]:
        s, st = frame_step(cfg, knobs, s, *x)
        if not keep_preds:
            st = {k: v for k, v in st.items() if k != "pred"}
        return s, st

    return jax.lax.scan(body, state, (frames, labels, weights, valid))


def make_run_chunk(cfg: OnlineConfig, keep_preds: bool = False) -> Any:
    """``run_chunk`` jitted for ``cfg`` with the online state donated:
    ``fn(knobs, state, frames, labels, weights, valid) -> (state, stats)``."""
    student_cfg = cfg.student

    def fn(knobs: Knobs, state: OnlineState, frames: Any, labels: Any, weights: Any, valid: Any) -> Any:
        return run_chunk(student_cfg, knobs, state, frames, labels, weights, valid, keep_preds)

    return jax.jit(fn, donate_argnums=1)

"""K configurations of the online loop over one stream (or several) in ONE compiled program.

Every member of a sweep has its own controller knobs (``a_thr``, ``delta_min``, ``delta_max``,
``u_max``, ``fg_weight``, ``bg_weight``), learning-rate schedule kind and peak lr, momentum, seed and
stream; its own student, optimiser state, controller state (``delta``, next teacher frame), teacher
frames and update counts. The members are stacked on a leading ``[K]`` axis and the per-frame step is
``vmap``-ed over it; frames are decoded once per chunk and shared.

**Gating.** Under ``vmap`` a ``lax.cond`` with a batched predicate runs both branches and a
``while_loop`` runs until its last member finishes. A naive ``vmap(frame_step)`` therefore pays the
update loop on every frame. Here the question "is *any* member on a teacher frame?" is decided outside
the ``vmap`` (``lax.cond(any(is_teacher), teacher_branch, predict_branch)``): frames where no member
trains cost one batched forward pass; on teacher frames only the members whose frame it is train (the
others are masked through ``active``) and the loop runs ``max_k(updates_k)`` iterations.
``gated=False`` compiles the naive version for comparison (``experiments/bench_sweep.py``).

**Learning-rate schedules.** Each member's lr is ``lax.switch(kind, schedules)(peak_lr, count)`` over
the five :data:`~jitnet_jax.config.SCHEDULES` (shared shape parameters from the base config:
``decay_steps``, ``warmup_steps``, ``alpha``, ...), evaluated inside the optimiser's injected schedule,
so the optimiser state has exactly the structure of a single-configuration run and each member's
result equals a separate :func:`~jitnet_jax.online.runner.run_stream` of it (tested).

**Exactness and speed.** ``mode="map"`` runs the members one after the other (``lax.map``) inside the
same program and is bit-identical to separate runs. The vmapped modes batch the members' convolutions,
which round differently; online training amplifies that, so they match separate runs in teacher frames and
update counts and in mIoU within a tolerance. On XLA:CPU the batched compute is slower than the same
members run one by one (measured in ``experiments/bench_sweep.py``): the one-program sweep wins there by
compiling once; on accelerators the vmap fills the device.

**Memory.** :func:`estimate_memory` gives the bytes per member (params, batch stats, optimiser state,
update-loop copies, forward/backward activations at ``H x W``) and :func:`check_memory` refuses a sweep
that does not fit before anything is compiled. Memory grows linearly with K.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jitnet_jax.config import SCHEDULES, OptimConfig, StudentConfig
from jitnet_jax.data.prefetch import prefetch
from jitnet_jax.data.types import Chunk, StreamSource, pad_chunk
from jitnet_jax.online.engine import (
    Knobs,
    OnlineConfig,
    OnlineState,
    effective_weight,
    next_delta,
    teacher_updates,
)
from jitnet_jax.online.runner import (
    StreamResult,
    chunk_per_frame,
    concat_per_frame,
    new_state,
    summarize,
)
from jitnet_jax.student.metrics import confusion_matrix, iou_from_counts
from jitnet_jax.student.optim import decay_mask, make_schedule
from jitnet_jax.student.step import StudentState, loss_and_grads, predict

# Sweepable fields: short name -> path in OnlineConfig (the single-run equivalent of a member).
SWEEP_FIELDS: dict[str, str] = {
    "lr": "student.optim.lr",
    "schedule": "student.optim.schedule",
    "momentum": "student.optim.momentum",
    "a_thr": "a_thr",
    "delta_min": "delta_min",
    "delta_max": "delta_max",
    "u_max": "u_max",
    "fg_weight": "fg_weight",
    "bg_weight": "bg_weight",
    "seed": "seed",
    "stream": "stream",
}


@dataclasses.dataclass(frozen=True)
class Member:
    """One configuration of a sweep (everything a member may change relative to the base config).

    Attributes:
      a_thr, delta_min, delta_max, u_max, fg_weight, bg_weight: controller knobs (see OnlineConfig).
      lr: peak learning rate; schedule: one of :data:`~jitnet_jax.config.SCHEDULES`; momentum: SGD
        momentum (Adam's ``b1``).
      seed: the student's init key is ``jax.random.key(seed)``.
      stream: index of the member's stream in the sweep's list of sources.
    """

    a_thr: float = 0.8
    delta_min: int = 8
    delta_max: int = 64
    u_max: int = 8
    fg_weight: float = 10.0
    bg_weight: float = 1.0
    lr: float = 0.01
    schedule: str = "constant"
    momentum: float = 0.9
    seed: int = 0
    stream: int = 0

    @staticmethod
    def from_config(cfg: OnlineConfig, seed: int = 0, stream: int = 0) -> Member:
        o = cfg.student.optim
        return Member(
            cfg.a_thr,
            cfg.delta_min,
            cfg.delta_max,
            cfg.u_max,
            cfg.fg_weight,
            cfg.bg_weight,
            o.lr,
            o.schedule,
            o.momentum,
            seed,
            stream,
        )

    def online_config(self, base: OnlineConfig) -> OnlineConfig:
        """The single-run :class:`OnlineConfig` equivalent to this member (validated)."""
        optim = dataclasses.replace(
            base.student.optim, lr=self.lr, schedule=self.schedule, momentum=self.momentum
        )
        student = dataclasses.replace(base.student, optim=optim)
        cfg = dataclasses.replace(
            base,
            student=student,
            a_thr=self.a_thr,
            delta_min=self.delta_min,
            delta_max=self.delta_max,
            u_max=self.u_max,
            fg_weight=self.fg_weight,
            bg_weight=self.bg_weight,
        )
        return cfg.validate()

    def label(self, keys: Sequence[str] | None = None) -> str:
        """``"lr=0.01,a_thr=0.8"`` over ``keys`` (all fields by default)."""
        keys = list(keys) if keys is not None else [f.name for f in dataclasses.fields(self)]
        return ",".join(f"{k}={getattr(self, k)}" for k in keys)


def _parse_value(name: str, text: str) -> Any:
    kind = type(getattr(Member(), name))
    try:
        return kind(text) if kind is not str else text
    except ValueError:
        raise ValueError(f"grid {name}: cannot parse {text!r} as {kind.__name__}") from None


def make_grid(base: OnlineConfig, axes: dict[str, Sequence[Any]], seed: int = 0) -> list[Member]:
    """Cartesian product of ``axes`` (``{"lr": [0.003, 0.01], "a_thr": [0.7, 0.9]}``) over the base
    configuration; values may be strings (parsed). Later axes vary fastest."""
    for name in axes:
        if name not in SWEEP_FIELDS:
            raise ValueError(f"cannot sweep {name!r}; sweepable fields: {', '.join(SWEEP_FIELDS)}")
        if len(axes[name]) == 0:
            raise ValueError(f"grid {name} has no values")
    start = dataclasses.replace(Member.from_config(base), seed=seed)
    names = list(axes)
    out = []
    for combo in itertools.product(*(axes[n] for n in names)):
        values = {n: _parse_value(n, v) if isinstance(v, str) else v for n, v in zip(names, combo)}
        out.append(dataclasses.replace(start, **values))
    return out


def parse_grid(specs: Sequence[str]) -> dict[str, list[str]]:
    """``["lr=0.003,0.01", "a_thr=0.7,0.9"]`` -> ``{"lr": [...], "a_thr": [...]}``."""
    axes: dict[str, list[str]] = {}
    for spec in specs:
        if "=" not in spec:
            raise ValueError(f"--grid {spec!r} must look like name=v1,v2,...")
        name, values = spec.split("=", 1)
        name = name.strip()
        if name not in SWEEP_FIELDS:
            raise ValueError(f"cannot sweep {name!r}; sweepable fields: {', '.join(SWEEP_FIELDS)}")
        axes[name] = [v.strip() for v in values.split(",") if v.strip()]
        if not axes[name]:
            raise ValueError(f"--grid {name} has no values")
    return axes


@flax.struct.dataclass
class MemberParams:
    """The traced per-member settings (each leaf ``[K]``)."""

    knobs: Knobs
    schedule: jnp.ndarray  # int32 index into SCHEDULES
    lr: jnp.ndarray  # float32 peak lr
    stream: jnp.ndarray  # int32 index into the sweep's streams


def _check_members(base: OnlineConfig, members: Sequence[Member], num_streams: int) -> None:
    if not members:
        raise ValueError("a sweep needs at least one member")
    for i, m in enumerate(members):
        try:
            m.online_config(base)
        except ValueError as e:
            raise ValueError(f"sweep member {i} ({m.label()}): {e}") from None
        if not 0 <= m.stream < num_streams:
            raise ValueError(f"sweep member {i}: stream {m.stream} not in [0, {num_streams})")


def member_params(members: Sequence[Member]) -> MemberParams:
    """Stack the members' traced settings."""

    def arr(name: str, dtype: Any) -> jnp.ndarray:
        return jnp.asarray([getattr(m, name) for m in members], dtype)

    knobs = Knobs(
        a_thr=arr("a_thr", jnp.float32),
        delta_min=arr("delta_min", jnp.int32),
        delta_max=arr("delta_max", jnp.int32),
        u_max=arr("u_max", jnp.int32),
        fg_weight=arr("fg_weight", jnp.float32),
        bg_weight=arr("bg_weight", jnp.float32),
    )
    return MemberParams(
        knobs=knobs,
        schedule=jnp.asarray([SCHEDULES.index(m.schedule) for m in members], jnp.int32),
        lr=arr("lr", jnp.float32),
        stream=arr("stream", jnp.int32),
    )


def init_sweep_state(
    base: OnlineConfig, members: Sequence[Member], frame_shape: tuple[int, int]
) -> OnlineState:
    """Members' fresh states stacked on a leading ``[K]`` axis (member k's state is exactly the state
    ``run_stream`` would start from with ``key=jax.random.key(seed_k)``)."""
    states = [new_state(m.online_config(base), jax.random.key(m.seed), frame_shape) for m in members]
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *states)


def member_state(states: OnlineState, k: int) -> OnlineState:
    """Member ``k``'s :class:`OnlineState` from a stacked sweep state."""
    return jax.tree_util.tree_map(lambda x: x[k], states)


# ---- per-member learning rate and update -------------------------------------------------------------


def _traced_schedule(optim: OptimConfig, name: str, peak: jnp.ndarray) -> optax.Schedule:
    """:func:`~jitnet_jax.student.optim.make_schedule` of kind ``name`` with a traced peak lr (same arithmetic)."""
    if name != "warmup_cosine":
        return make_schedule(dataclasses.replace(optim, schedule=name, lr=peak))
    # optax.warmup_cosine_decay_schedule tests ``peak == 0`` in Python; the rest is the same formula.
    decay_steps = max(optim.decay_steps, optim.warmup_steps + 1)
    alpha = optim.alpha if optim.alpha != 0.0 else 0.0
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, peak, optim.warmup_steps),
            optax.cosine_decay_schedule(peak, decay_steps - optim.warmup_steps, alpha=alpha),
        ],
        [optim.warmup_steps],
    )


def member_lr(optim: OptimConfig, kind: jnp.ndarray, peak: jnp.ndarray, count: jnp.ndarray) -> jnp.ndarray:
    """float32 lr of schedule ``SCHEDULES[kind]`` peaking at ``peak`` after ``count`` updates.

    The branches are exactly :func:`~jitnet_jax.student.optim.make_schedule` with a traced peak lr; under
    ``vmap`` the switch becomes a select over five scalar schedules.
    """
    branches = [_traced_schedule(optim, name, peak) for name in SCHEDULES]
    return jax.lax.switch(kind, [lambda c, f=f: jnp.asarray(f(c), jnp.float32) for f in branches], count)


def member_optimizer(
    optim: OptimConfig, kind: jnp.ndarray, peak: jnp.ndarray
) -> optax.GradientTransformation:
    """:func:`~jitnet_jax.student.optim.make_optimizer` with a per-member (traced) schedule; same state
    structure, so it updates a state made by ``init_state``. Momentum comes from the state."""
    schedule = lambda c: member_lr(optim, kind, peak, c)  # noqa: E731
    if optim.name == "sgd":
        opt = optax.inject_hyperparams(optax.sgd)(
            learning_rate=schedule, momentum=optim.momentum, nesterov=optim.nesterov
        )
    else:
        opt = optax.inject_hyperparams(optax.adam)(learning_rate=schedule, b1=optim.momentum, b2=optim.b2)
    parts = []
    if optim.weight_decay > 0:
        parts.append(optax.masked(optax.add_decayed_weights(optim.weight_decay), decay_mask))
    parts.append(opt)
    return optax.chain(*parts)


def _apply(cfg: StudentConfig, mp: MemberParams, s: StudentState, grads: Any, new_stats: Any) -> StudentState:
    tx = member_optimizer(cfg.optim, mp.schedule, mp.lr)
    updates, opt_state = tx.update(grads, s.opt_state, s.params)
    params = optax.apply_updates(s.params, updates)
    rng, _ = jax.random.split(s.rng)
    return StudentState(params, new_stats, opt_state, s.step + 1, rng)


def member_teacher_updates(
    cfg: StudentConfig,
    mp: MemberParams,
    student: StudentState,
    frame: jnp.ndarray,
    label: jnp.ndarray,
    weight: jnp.ndarray,
    active: jnp.ndarray,
) -> tuple[StudentState, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """:func:`~jitnet_jax.online.engine.teacher_updates` for one member with its own lr schedule (same loop,
    same stopping rule). ``active=False`` runs no pass. Returns ``(student, pred, updates, acc)``."""
    return teacher_updates(
        cfg,
        mp.knobs,
        student,
        frame,
        label,
        weight,
        active,
        apply=lambda s, g, b: _apply(cfg, mp, s, g, b),
    )


def _member_teacher(
    cfg: StudentConfig,
    mp: MemberParams,
    s: OnlineState,
    frame: Any,
    label: Any,
    weight: Any,
    active: Any,
    masked: bool = True,
) -> tuple[OnlineState, Any, Any, Any]:
    """A teacher frame for an active member. With ``masked`` (vmap), an idle member (``active`` False)
    only predicts and keeps its state; without, the member is known to be active."""
    student, pred_t, k, acc = member_teacher_updates(cfg, mp, s.student, frame, label, weight, active)
    delta = next_delta(mp.knobs, s.delta, acc)
    taught = s.replace(
        student=student,
        delta=delta,
        next_teacher=s.cursor + delta,
        teacher_frames=s.teacher_frames + 1,
        updates=s.updates + k,
    )
    if not masked:
        return taught, pred_t, k, acc
    s = jax.tree_util.tree_map(lambda new, old: jnp.where(active, new, old), taught, s)
    pred = jnp.where(active, pred_t, predict(cfg, s.student, frame))
    return s, pred, jnp.where(active, k, 0), jnp.where(active, acc, 0.0)


def _member_predict(cfg: StudentConfig, s: OnlineState, frame: Any) -> tuple[OnlineState, Any, Any, Any]:
    return s, predict(cfg, s.student, frame), jnp.int32(0), jnp.float32(0.0)


MODES = ("gated", "naive", "map")


def sweep_frame_step(
    cfg: StudentConfig,
    mp: MemberParams,
    state: OnlineState,
    frame: jnp.ndarray,
    label: jnp.ndarray,
    weight: jnp.ndarray,
    valid: jnp.ndarray,
    mode: str = "gated",
) -> tuple[OnlineState, dict[str, jnp.ndarray]]:
    """One frame for all K members.

    Args:
      mp, state: ``[K]``-stacked member settings and states.
      frame: uint8 ``[S, H, W, 3]``; label: uint8/int ``[S, H, W]``; weight: float32 ``[S, H, W]``;
        valid: bool ``[S]`` (one row per stream; member k reads stream ``mp.stream[k]``).
      mode: ``"gated"``: ``vmap`` over members, ``any(is_teacher)`` decided outside the vmap (one
        batched forward pass on frames where no member trains; on teacher frames the idle members are
        masked). ``"naive"``: ``vmap`` of the per-member ``lax.cond`` (both branches run on every frame:
        the baseline the gating is measured against). ``"map"``: ``lax.map`` over members inside the
        same program, a real ``lax.cond`` per member (no vectorisation across members, no wasted
        passes; bit-identical to separate runs).
    Returns:
      ``(state, stats)``; stats each ``[K, ...]``: ``teacher``, ``updates``, ``delta``, ``acc``,
      ``confusion`` int32 ``[K, C, C]``.
    """
    if mode not in MODES:
        raise ValueError(f"sweep mode must be one of {MODES}, got {mode!r}")
    shared = frame.shape[0] == 1  # one stream: broadcast instead of gathering K copies
    if shared:
        f_axis, f, y, w0, v = None, frame[0], label[0].astype(jnp.int32), weight[0], valid[0]
        valid_k = jnp.broadcast_to(v, mp.stream.shape)
    else:
        f_axis = 0
        f, y, w0 = frame[mp.stream], label[mp.stream].astype(jnp.int32), weight[mp.stream]
        valid_k = valid[mp.stream]
    w = jax.vmap(effective_weight, in_axes=(f_axis, 0))(w0, mp.knobs)
    is_teacher = jnp.logical_and(valid_k, state.cursor == state.next_teacher)
    axes = (0, 0, f_axis, f_axis, 0, 0)

    def teacher_branch(s: OnlineState) -> Any:
        fn = jax.vmap(lambda m, st, fr, lb, wt, a: _member_teacher(cfg, m, st, fr, lb, wt, a), in_axes=axes)
        return fn(mp, s, f, y, w, is_teacher)

    def predict_branch(s: OnlineState) -> Any:
        return jax.vmap(lambda st, fr: _member_predict(cfg, st, fr), in_axes=(0, f_axis))(s, f)

    def one_member(m: Any, st: OnlineState, fr: Any, lb: Any, wt: Any, a: Any) -> Any:
        return jax.lax.cond(
            a,
            lambda s_: _member_teacher(cfg, m, s_, fr, lb, wt, jnp.bool_(True), masked=False),
            lambda s_: _member_predict(cfg, s_, fr),
            st,
        )

    if mode == "gated":
        state, pred, k, acc = jax.lax.cond(jnp.any(is_teacher), teacher_branch, predict_branch, state)
    elif mode == "naive":
        state, pred, k, acc = jax.vmap(one_member, in_axes=axes)(mp, state, f, y, w, is_teacher)
    else:

        def mapped(x: tuple[Any, ...]) -> Any:
            m, st, wt, a = x[:4]
            fr, lb = (f, y) if shared else x[4:]
            return one_member(m, st, fr, lb, wt, a)

        xs = (mp, state, w, is_teacher) + (() if shared else (f, y))
        state, pred, k, acc = jax.lax.map(mapped, xs)
    state = state.replace(cursor=state.cursor + valid_k.astype(jnp.int32))
    conf = jax.vmap(
        lambda lb, p, v: confusion_matrix(lb, p, cfg.model.num_classes, mask=v), in_axes=(f_axis, 0, 0)
    )(y, pred, valid_k)
    stats = {"teacher": is_teacher, "updates": k, "delta": state.delta, "acc": acc, "confusion": conf}
    return state, stats


def sweep_chunk(
    cfg: StudentConfig,
    mp: MemberParams,
    state: OnlineState,
    frames: jnp.ndarray,
    labels: jnp.ndarray,
    weights: jnp.ndarray,
    valid: jnp.ndarray,
    mode: str = "gated",
) -> tuple[OnlineState, dict[str, jnp.ndarray]]:
    """``lax.scan`` of :func:`sweep_frame_step` over a chunk.

    Args:
      frames: uint8 ``[S, T, H, W, 3]``; labels ``[S, T, H, W]``; weights float32 ``[S, T, H, W]``;
        valid bool ``[S, T]``.
    Returns:
      ``(state, stats)`` with stats ``[K, T, ...]``.
    """

    def body(s: OnlineState, x: tuple[jnp.ndarray, ...]) -> Any:
        return sweep_frame_step(cfg, mp, s, *x, mode=mode)

    xs = tuple(jnp.swapaxes(a, 0, 1) for a in (frames, labels, weights, valid))
    state, stats = jax.lax.scan(body, state, xs)
    return state, {k: jnp.swapaxes(v, 0, 1) for k, v in stats.items()}


def make_sweep_chunk(cfg: StudentConfig, mode: str = "gated", mesh: Any = None) -> Callable[..., Any]:
    """``sweep_chunk`` jitted with the state donated: ``fn(mp, state, frames, labels, weights, valid)``.

    With a ``mesh`` and ``mode="map"`` the chunk is a ``shard_map``: each device runs ``lax.map`` over its
    own members (members never interact in that mode, so there is no communication at all). The vmapped
    modes are partitioned by GSPMD from the inputs' shardings (``any(is_teacher)`` becomes an
    all-reduce).
    """

    def fn(mp: MemberParams, state: OnlineState, frames: Any, labels: Any, weights: Any, valid: Any) -> Any:
        return sweep_chunk(cfg, mp, state, frames, labels, weights, valid, mode)

    if mesh is None:
        return jax.jit(fn, donate_argnums=1)
    from jax.sharding import PartitionSpec as P

    from jitnet_jax.online.sharding import MEMBER_AXIS, member_sharding, replicated_sharding

    if mode == "map":
        fn = jax.shard_map(
            fn,
            mesh=mesh,
            in_specs=(P(MEMBER_AXIS), P(MEMBER_AXIS), P(), P(), P(), P()),
            out_specs=(P(MEMBER_AXIS), P(MEMBER_AXIS)),
            check_vma=False,
        )
    ms, rs = member_sharding(mesh), replicated_sharding(mesh)
    return jax.jit(fn, donate_argnums=1, in_shardings=(ms, ms, rs, rs, rs, rs), out_shardings=(ms, ms))


# ---- memory --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of a sweep (see :func:`estimate_memory`)."""

    per_member: int
    shared: int
    params: int
    state: int
    activations: int

    def total(self, k: int) -> int:
        return self.shared + k * self.per_member

    def max_members(self, budget: int) -> int:
        return max(0, (budget - self.shared) // self.per_member)


def estimate_memory(
    cfg: StudentConfig, frame_shape: tuple[int, int], chunk_size: int, num_streams: int = 1
) -> MemoryEstimate:
    """Estimate sweep memory without compiling (abstract evaluation only).

    Per member: the online state (params, batch stats, optimiser state) x 3 (the update loop carries
    the state, the updated state and the gradients), plus the forward/backward activations of one
    update at ``H x W`` (the sum of every intermediate of the traced ``loss_and_grads`` jaxpr -- an
    upper bound; XLA reuses buffers) and one chunk of per-frame stats. Shared: the chunk of frames,
    labels and weights (double-buffered by the prefetcher).
    """
    h, w = frame_shape
    state = jax.eval_shape(lambda: new_state(OnlineConfig(student=cfg), jax.random.key(0), frame_shape))
    nbytes = lambda tree: sum(  # noqa: E731
        math.prod(x.shape) * np.dtype(x.dtype).itemsize
        for x in jax.tree_util.tree_leaves(tree)
        if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
    )
    params = nbytes(state.student.params)
    state_b = nbytes(state)
    jaxpr = jax.make_jaxpr(lambda s, f, y, wt: loss_and_grads(cfg, s, f, y, wt))(
        state.student,
        jax.ShapeDtypeStruct((h, w, 3), jnp.uint8),
        jax.ShapeDtypeStruct((h, w), jnp.int32),
        jax.ShapeDtypeStruct((h, w), jnp.float32),
    )
    acts = 0
    for eqn in jaxpr.jaxpr.eqns:
        for var in eqn.outvars:
            aval = var.aval
            if hasattr(aval, "shape") and hasattr(aval, "dtype"):
                acts += math.prod(aval.shape) * np.dtype(aval.dtype).itemsize
    c = cfg.model.num_classes
    stats = chunk_size * (c * c * 4 + 16)
    per_member = 3 * state_b + acts + stats
    shared = 2 * num_streams * chunk_size * h * w * (3 + 1 + 4 + 1)
    return MemoryEstimate(per_member, shared, params, state_b, acts)


def available_memory() -> int:
    """Bytes of memory available to this process (``MemAvailable``; physical memory if unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(
    cfg: StudentConfig,
    k: int,
    frame_shape: tuple[int, int],
    chunk_size: int,
    num_streams: int = 1,
    budget: int | None = None,
) -> MemoryEstimate:
    """Raise a one-line ``ValueError`` if K members at ``frame_shape`` do not fit in ``budget`` bytes
    (default 80% of the available memory). Returns the estimate."""
    est = estimate_memory(cfg, frame_shape, chunk_size, num_streams)
    budget = int(0.8 * available_memory()) if budget is None else int(budget)
    need = est.total(k)
    if need > budget:
        gib = 2.0**30
        raise ValueError(
            f"sweep of K={k} configurations at {frame_shape[0]}x{frame_shape[1]} needs ~{need / gib:.2f} GiB "
            f"({est.per_member / 2**20:.0f} MiB per configuration: state {est.state / 2**20:.1f} MiB, "
            f"activations {est.activations / 2**20:.0f} MiB) but the budget is {budget / gib:.2f} GiB; "
            f"at most K={est.max_members(budget)} fit (memory grows linearly with K): use fewer "
            "configurations, a smaller resolution, or shard the sweep over devices/hosts"
        )
    return est


# ---- host loop -------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SweepResult:
    """What a sweep produced.

    Attributes:
      members: the configurations, in order.
      state: final ``[K]``-stacked online state (on device).
      per_frame: one runner-style per-frame dict per member.
      wall_s: seconds running the compiled chunks (all members together, compilation excluded).
      compile_s: seconds compiling.
      memory: the memory estimate checked before compiling.
    """

    members: list[Member]
    state: OnlineState
    per_frame: list[dict[str, np.ndarray]]
    wall_s: float
    compile_s: float
    memory: MemoryEstimate

    def member_result(self, k: int) -> StreamResult:
        """Member ``k`` as a :class:`~jitnet_jax.online.runner.StreamResult` (``wall_s``/``compile_s`` are the
        sweep's divided by K: the amortised cost of one configuration)."""
        n = len(self.members)
        return StreamResult(
            member_state(self.state, k), self.per_frame[k], self.wall_s / n, self.compile_s / n
        )


def _lockstep(sources: Sequence[StreamSource], chunk_size: int, total: int) -> Any:
    """Chunks of all sources in lockstep, stacked on a leading stream axis; a source that has ended
    (or is past ``total``) contributes padding (``valid=False``)."""
    iters = [iter(s.chunks(chunk_size, 0)) for s in sources]
    first = sources[0].info
    blank = pad_chunk(
        np.zeros((1, first.height, first.width, 3), np.uint8),
        np.zeros((1, first.height, first.width), np.uint8),
        np.zeros((1, first.height, first.width), np.float32),
        chunk_size,
        0,
    )
    blank = blank._replace(valid=np.zeros(chunk_size, bool))
    for start in range(0, total, chunk_size):
        parts = []
        for it in iters:
            c = next(it, None)
            if c is None:
                c = blank._replace(start=start)
            over = c.start + np.arange(chunk_size) >= total
            parts.append(c._replace(valid=c.valid & ~over))
        yield parts


def run_sweep(
    sources: StreamSource | Sequence[StreamSource],
    base: OnlineConfig,
    members: Sequence[Member],
    *,
    max_frames: int | None = None,
    mode: str = "gated",
    mesh: Any = None,
    memory_budget: int | None = None,
    progress: bool = True,
    prefetch_depth: int = 2,
) -> SweepResult:
    """Run every member over its stream in one compiled program.

    Args:
      sources: one stream, or a list (member ``k`` reads ``sources[members[k].stream]``); all must
        share resolution and class names.
      base: shared settings (model, optimiser name, schedule shape parameters, ``chunk_size``); the
        members override what they sweep.
      members: the K configurations.
      max_frames: stop after this many frames (counted from frame 0).
      mode: ``"gated"`` (vmap, any-teacher gating outside the vmap; default), ``"naive"`` (plain vmap
        of the per-frame cond) or ``"map"`` (``lax.map`` over members; see :func:`sweep_frame_step`).
      mesh: optional ``jax.sharding.Mesh`` with a ``"members"`` axis: the member axis is sharded over
        its devices (see :mod:`jitnet_jax.online.sharding`); K must be a multiple of its size.
      memory_budget: bytes for :func:`check_memory` (default 80% of the available memory).
    """
    base.validate()
    if mode not in MODES:
        raise ValueError(f"sweep mode must be one of {MODES}, got {mode!r}")
    sources = [sources] if not isinstance(sources, (list, tuple)) else list(sources)
    members = list(members)
    _check_members(base, members, len(sources))
    info = sources[0].info
    for s in sources[1:]:
        if (s.info.height, s.info.width, s.info.class_names) != (info.height, info.width, info.class_names):
            raise ValueError(
                f"stream {s.info.name} is {s.info.height}x{s.info.width} with classes {s.info.class_names}; "
                f"the sweep's first stream is {info.height}x{info.width} with {info.class_names}"
            )
    if info.num_classes != base.student.model.num_classes:
        raise ValueError(
            f"stream {info.name} has {info.num_classes} classes but the student is configured for "
            f"model.num_classes={base.student.model.num_classes}"
        )
    k_members, t_chunk, h, w = len(members), base.chunk_size, info.height, info.width
    memory = check_memory(base.student, k_members, (h, w), t_chunk, len(sources), memory_budget)
    longest = max(s.info.num_frames for s in sources)
    total = longest if max_frames is None else min(longest, max_frames)
    totals = [min(s.info.num_frames, total) for s in sources]

    mp = member_params(members)
    state = init_sweep_state(base, members, (h, w))
    put_members = put_shared = lambda x: x  # noqa: E731
    if mesh is not None:
        from jitnet_jax.online.sharding import replicate, shard_members

        if k_members % mesh.devices.size:
            raise ValueError(
                f"K={k_members} configurations do not split evenly over {mesh.devices.size} devices"
            )
        put_members = lambda x: shard_members(x, mesh)  # noqa: E731
        put_shared = lambda x: replicate(x, mesh)  # noqa: E731
    mp, state = put_members(mp), put_members(state)
    s_n = len(sources)
    abstract = (
        jax.ShapeDtypeStruct((s_n, t_chunk, h, w, 3), np.uint8),
        jax.ShapeDtypeStruct((s_n, t_chunk, h, w), np.uint8),
        jax.ShapeDtypeStruct((s_n, t_chunk, h, w), np.float32),
        jax.ShapeDtypeStruct((s_n, t_chunk), np.bool_),
    )
    if mesh is not None:
        from jitnet_jax.online.sharding import replicated_sharding

        rs = replicated_sharding(mesh)
        abstract = tuple(jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rs) for a in abstract)
    t0 = time.perf_counter()
    compiled = make_sweep_chunk(base.student, mode, mesh).lower(mp, state, *abstract).compile()
    compile_s = time.perf_counter() - t0

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="frame", desc=f"sweep K={k_members}", dynamic_ncols=True)
    parts: list[list[dict[str, np.ndarray]]] = [[] for _ in members]
    wall = 0.0
    try:
        for chunks in prefetch(_lockstep(sources, t_chunk, total), prefetch_depth):
            arrays = [
                np.stack([getattr(c, f) for c in chunks]) for f in ("frames", "labels", "weights", "valid")
            ]
            arrays = [put_shared(a) for a in arrays]
            t1 = time.perf_counter()
            state, stats = compiled(mp, state, *arrays)
            stats = jax.device_get(stats)  # the one host sync per chunk
            wall += time.perf_counter() - t1
            for i, m in enumerate(members):
                chunk = chunks[m.stream]
                rows = chunk_per_frame(chunk, {key: v[i] for key, v in stats.items()})
                if len(rows["frame"]):
                    parts[i].append(rows)
            if bar is not None:
                bar.update(min(t_chunk, total - chunks[0].start))
                teach = np.mean([sum(int(p["teacher"].sum()) for p in ps) for ps in parts])
                done = max(1, min(total, chunks[0].start + t_chunk))
                bar.set_postfix(teacher=f"{100 * teach / done:.1f}%")
    finally:
        if bar is not None:
            bar.close()
    c = info.num_classes
    per_frame = [concat_per_frame(p, c) for p in parts]
    for i, m in enumerate(members):
        if len(per_frame[i]["frame"]) != totals[m.stream]:
            raise RuntimeError(
                f"member {i} processed {len(per_frame[i]['frame'])} frames, expected {totals[m.stream]}"
            )
    return SweepResult(members, state, per_frame, wall, compile_s, memory)


def summarize_sweep(
    result: SweepResult,
    base: OnlineConfig,
    class_names: tuple[str, ...],
    gflops: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """One row per member: the member's fields plus :func:`~jitnet_jax.online.runner.summarize` of its run
    (``wall_s`` is the amortised share; ``sweep_wall_s`` the whole sweep's)."""
    rows = []
    for k, m in enumerate(result.members):
        cfg = m.online_config(base)
        summary = summarize(result.member_result(k), cfg, class_names, gflops=gflops)
        rows.append({"member": k, **dataclasses.asdict(m), **summary, "sweep_wall_s": result.wall_s})
    return rows


def pareto_front(rows: Sequence[dict[str, Any]]) -> list[int]:
    """Indices of rows not dominated in (higher ``miou``, lower ``teacher_fraction``)."""
    front = []
    for i, r in enumerate(rows):
        dominated = any(
            o["miou"] >= r["miou"]
            and o["teacher_fraction"] <= r["teacher_fraction"]
            and (o["miou"] > r["miou"] or o["teacher_fraction"] < r["teacher_fraction"])
            for o in rows
        )
        if not dominated:
            front.append(i)
    return front


def stream_miou(per_frame: dict[str, np.ndarray]) -> float:
    """Stream-level mIoU of a per-frame dict."""
    return float(
        iou_from_counts(per_frame["tp"].sum(0), per_frame["fp"].sum(0), per_frame["fn"].sum(0))["miou"]
    )


__all__ = [
    "Chunk",
    "Member",
    "MemberParams",
    "MemoryEstimate",
    "SWEEP_FIELDS",
    "SweepResult",
    "check_memory",
    "estimate_memory",
    "init_sweep_state",
    "make_grid",
    "make_sweep_chunk",
    "member_lr",
    "member_optimizer",
    "member_params",
    "member_state",
    "parse_grid",
    "pareto_front",
    "run_sweep",
    "summarize_sweep",
    "sweep_chunk",
]

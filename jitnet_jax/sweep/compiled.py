"""The compiled sweep: the engine's :func:`~jitnet_jax.online.engine.frame_step` over K members.

**Gating.** Under ``vmap`` a ``lax.cond`` with a batched predicate runs both branches and a
``while_loop`` runs until its last member finishes. A naive ``vmap(frame_step)`` therefore pays the
update loop on every frame. Here the question "is *any* member on a teacher frame?" is decided outside
the ``vmap`` (``lax.cond(any(is_teacher), teacher_branch, predict_branch)``): frames where no member
trains cost one batched forward pass; on teacher frames only the members whose frame it is train (the
others are masked, ``frame_step(branch="masked")``) and the loop runs ``max_k(updates_k)`` iterations.
``mode="naive"`` compiles the plain ``vmap(frame_step)`` for comparison (``experiments/bench_sweep.py``).

**Coupling.** Members never interact, except through an optional per-frame ``coupling`` hook around the
members' step (``coupling(step, state, valid) -> (state, stats)``): the fleet's teacher budget
(:mod:`jitnet_jax.fleet.schedule`) decides there which members may run the teacher at this frame.

**Exactness.** ``mode="map"`` runs the members one after the other (``lax.map`` of ``frame_step``) inside
the same program and is bit-identical to separate runs. The vmapped modes batch the members'
convolutions, which round differently; online training amplifies that, so they match separate runs in
teacher frames and update counts and in mIoU within a tolerance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jitnet_jax.config import StudentConfig
from jitnet_jax.online.engine import OnlineState, frame_step, trains_now
from jitnet_jax.sweep.members import MemberParams

MODES = ("gated", "naive", "map")


def sweep_frame_step(
    cfg: StudentConfig,
    mp: MemberParams,
    state: OnlineState,
    frame: jnp.ndarray,
    label: jnp.ndarray,
    region: jnp.ndarray,
    valid: jnp.ndarray,
    mode: str = "gated",
    aligned: bool = False,
) -> tuple[OnlineState, dict[str, jnp.ndarray]]:
    """One frame for all K members.

    Args:
      mp, state: ``[K]``-stacked member settings and states.
      frame: uint8 ``[S, H, W, 3]``; label: uint8/int ``[S, H, W]``; region ``[S, H, W]`` (the source's
        map); valid: bool ``[S]`` (one row per stream; member k reads stream ``mp.stream[k]``; with
        ``aligned``, S = K and member k reads row k, no gather: a fleet, one camera per member).
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
    shared = frame.shape[0] == 1 and not aligned  # one stream: broadcast instead of gathering K copies
    valid_k = member_valid(mp, valid, aligned)
    if shared:
        f_axis, f, y, w = None, frame[0], label[0], region[0]
    elif aligned:
        f_axis, f, y, w = 0, frame, label, region
    else:
        f_axis, f, y, w = 0, frame[mp.stream], label[mp.stream], region[mp.stream]
    axes = (0, 0, f_axis, f_axis, f_axis, 0)

    def vstep(branch: str) -> Callable[[OnlineState], Any]:
        fn = jax.vmap(lambda *a: frame_step(cfg, *a, branch=branch), in_axes=axes)
        return lambda s: fn(mp.knobs, s, f, y, w, valid_k)

    if mode == "gated":
        any_teacher = jnp.any(jax.vmap(trains_now)(state, valid_k))
        state, stats = jax.lax.cond(any_teacher, vstep("masked"), vstep("student"), state)
    elif mode == "naive":
        state, stats = vstep("cond")(state)
    else:

        def mapped(x: tuple[Any, ...]) -> Any:
            knobs, st, v = x[:3]
            fr, lb, wt = (f, y, w) if shared else x[3:]
            return frame_step(cfg, knobs, st, fr, lb, wt, v)

        state, stats = jax.lax.map(mapped, (mp.knobs, state, valid_k) + (() if shared else (f, y, w)))
    return state, {k: v for k, v in stats.items() if k != "pred"}


def member_valid(mp: MemberParams, valid: jnp.ndarray, aligned: bool = False) -> jnp.ndarray:
    """bool ``[K]``: whether member k has a frame at this tick (``valid``: bool ``[S]``, one per stream)."""
    if aligned:
        return valid
    if valid.shape[0] == 1:
        return jnp.broadcast_to(valid[0], mp.stream.shape)
    return valid[mp.stream]


def sweep_chunk(
    cfg: StudentConfig,
    mp: MemberParams,
    state: Any,
    frames: jnp.ndarray,
    labels: jnp.ndarray,
    regions: jnp.ndarray,
    valid: jnp.ndarray,
    mode: str = "gated",
    coupling: Callable[..., Any] | None = None,
    aligned: bool = False,
) -> tuple[Any, dict[str, jnp.ndarray]]:
    """``lax.scan`` of :func:`sweep_frame_step` over a chunk.

    Args:
      state: the ``[K]``-stacked online states, or with a ``coupling`` the state it carries (a fleet's
        :class:`~jitnet_jax.fleet.schedule.FleetState`).
      frames: uint8 ``[S, T, H, W, 3]``; labels ``[S, T, H, W]``; regions ``[S, T, H, W]``;
        valid bool ``[S, T]``.
      coupling: optional ``coupling(step, state, valid_k) -> (state, stats)`` around every frame's step of
        the members (``step(members) -> (members, stats)``; ``valid_k`` bool ``[K]``).
      aligned: S = K and member k reads stream k (see :func:`sweep_frame_step`).
    Returns:
      ``(state, stats)`` with stats ``[K, T, ...]``.
    """

    def body(s: Any, x: tuple[jnp.ndarray, ...]) -> Any:
        def step(members: OnlineState) -> Any:
            return sweep_frame_step(cfg, mp, members, *x, mode=mode, aligned=aligned)

        if coupling is None:
            return step(s)
        return coupling(step, s, member_valid(mp, x[3], aligned))

    xs = tuple(jnp.swapaxes(a, 0, 1) for a in (frames, labels, regions, valid))
    state, stats = jax.lax.scan(body, state, xs)
    return state, {k: jnp.swapaxes(v, 0, 1) for k, v in stats.items()}


def make_sweep_chunk(
    cfg: StudentConfig,
    mode: str = "gated",
    mesh: Any = None,
    coupling: Callable[..., Any] | None = None,
    aligned: bool = False,
) -> Callable[..., Any]:
    """``sweep_chunk`` jitted with the state donated: ``fn(mp, state, frames, labels, regions, valid)``.

    With a ``mesh`` and ``mode="map"`` the chunk is a ``shard_map``: each device runs ``lax.map`` over its
    own members (members interact only through a ``coupling``, which then gathers what it decides on over
    the member axis: :meth:`~jitnet_jax.fleet.schedule.BudgetCoupling.over_axis`), so each member's math is
    its unsharded math, bit for bit. The vmapped modes are partitioned by GSPMD from the inputs' shardings
    (``any(is_teacher)`` and a coupling's top-k become collectives). With
    ``aligned`` (one stream per member) the frames are split over the member axis like the members, so
    each device (and each host) holds only its own members' frames.
    """

    def fn(mp: MemberParams, state: Any, frames: Any, labels: Any, regions: Any, valid: Any) -> Any:
        return sweep_chunk(cfg, mp, state, frames, labels, regions, valid, mode, coupling, aligned)

    if mesh is None:
        return jax.jit(fn, donate_argnums=1)
    from jax.sharding import PartitionSpec as P

    from jitnet_jax.online.sharding import MEMBER_AXIS, member_sharding, replicated_sharding

    ms, rs = member_sharding(mesh), replicated_sharding(mesh)
    fs = ms if aligned else rs  # the frames: each device's own streams, or every stream everywhere
    if mode == "map":
        if coupling is not None:
            coupling = coupling.over_axis(MEMBER_AXIS)

        def local(mp: MemberParams, state: Any, frames: Any, labels: Any, regions: Any, valid: Any) -> Any:
            return sweep_chunk(cfg, mp, state, frames, labels, regions, valid, mode, coupling, aligned)

        f_spec = P(MEMBER_AXIS) if aligned else P()
        fn = jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(P(MEMBER_AXIS), P(MEMBER_AXIS), f_spec, f_spec, f_spec, f_spec),
            out_specs=(P(MEMBER_AXIS), P(MEMBER_AXIS)),
            check_vma=False,
        )
    return jax.jit(fn, donate_argnums=1, in_shardings=(ms, ms, fs, fs, fs, fs), out_shardings=(ms, ms))

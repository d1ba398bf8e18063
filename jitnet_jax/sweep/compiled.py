"""The compiled sweep: the engine's :func:`~jitnet_jax.online.engine.frame_step` over K members.

**Gating.** Under ``vmap`` a ``lax.cond`` with a batched predicate runs both branches and a
``while_loop`` runs until its last member finishes. A naive ``vmap(frame_step)`` therefore pays the
update loop on every frame. Here the question "is *any* member on a teacher frame?" is decided outside
the ``vmap`` (``lax.cond(any(is_teacher), teacher_branch, predict_branch)``): frames where no member
trains cost one batched forward pass; on teacher frames only the members whose frame it is train (the
others are masked, ``frame_step(branch="masked")``) and the loop runs ``max_k(updates_k)`` iterations.
``mode="naive"`` compiles the plain ``vmap(frame_step)`` for comparison (``experiments/bench_sweep.py``).

**Members one after the other.** ``mode="map"`` runs each member's whole chunk in turn (``lax.map``
over members of the chunk's ``lax.scan`` of ``frame_step``): a member's state is sliced out of the
stacked state once per chunk, not once per frame. ``mode="lockstep"`` keeps the frames outermost (one
frame for every member before the next frame: what a program whose members are coupled per frame
needs): per frame a ``fori_loop`` over members reads member k's state from the stacked carry and writes
it back in place (``dynamic_update_slice``), and on a frame where member k does not train only the
leaves that change (its counters, a delayed teacher's pending label) are written, not its student.
Both run the members' own convolutions, unbatched (on XLA:CPU a ``vmap`` over per-member weights
is a grouped convolution, slower than K single ones; docs/performance.md "Sweeps on CPU").

**Coupling.** Members never interact, except through an optional per-frame ``coupling`` hook around the
members' step (``coupling(step, state, valid) -> (state, stats)``): the fleet's teacher budget
(:mod:`jitnet_jax.fleet.schedule`) decides there which members may run the teacher at this frame. A coupled
program keeps the frames outermost (``map`` then runs as ``lockstep``).

**Exactness.** ``map`` and ``lockstep`` are bit-identical to separate runs. The vmapped modes batch the
members' convolutions, which round differently; online training amplifies that, so they match separate
runs in teacher frames and update counts and in mIoU within a tolerance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jitnet_jax.config import StudentConfig
from jitnet_jax.online.engine import OnlineState, frame_step, run_chunk, trains_now
from jitnet_jax.sweep.members import MemberParams

MODES = ("gated", "naive", "map", "lockstep")

#: Stats a sweep returns per member and frame (``frame_step``'s, without the prediction).
STAT_KEYS = ("teacher", "updates", "delta", "acc", "confusion")


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
        ``aligned``, S = K and member k reads row k: a fleet, one camera per member).
      mode: ``"gated"``: ``vmap`` over members, ``any(is_teacher)`` decided outside the vmap (one
        batched forward pass on frames where no member trains; on teacher frames the idle members are
        masked). ``"naive"``: ``vmap`` of the per-member ``lax.cond`` (both branches run on every frame:
        the baseline the gating is measured against). ``"lockstep"`` (and ``"map"``, which for one
        frame is the same): the members in turn, each a real ``lax.cond``, their states updated in place
        (:func:`lockstep_frame_step`; bit-identical to separate runs).
    Returns:
      ``(state, stats)``; stats each ``[K, ...]``: ``teacher``, ``updates``, ``delta``, ``acc``,
      ``confusion`` int32 ``[K, C, C]``.
    """
    if mode not in MODES:
        raise ValueError(f"sweep mode must be one of {MODES}, got {mode!r}")
    if mode in ("map", "lockstep"):
        return lockstep_frame_step(cfg, mp, state, frame, label, region, valid, aligned)
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
    else:
        state, stats = vstep("cond")(state)
    return state, {k: v for k, v in stats.items() if k != "pred"}


def member_valid(mp: MemberParams, valid: jnp.ndarray, aligned: bool = False) -> jnp.ndarray:
    """bool ``[K]``: whether member k has a frame at this tick (``valid``: bool ``[S]``, one per stream)."""
    if aligned:
        return valid
    if valid.shape[0] == 1:
        return jnp.broadcast_to(valid[0], mp.stream.shape)
    return valid[mp.stream]


def _member(tree: Any, k: jnp.ndarray) -> Any:
    """Member ``k`` (traced int) of a ``[K]``-stacked pytree (a ``dynamic_slice`` per leaf)."""
    return jax.tree_util.tree_map(lambda x: jax.lax.dynamic_index_in_dim(x, k, keepdims=False), tree)


def _put_member(tree: Any, k: jnp.ndarray, value: Any) -> Any:
    """``tree`` with member ``k`` replaced by ``value`` (a ``dynamic_update_slice`` per leaf: in place when
    ``tree`` is a loop carry)."""
    return jax.tree_util.tree_map(lambda x, v: jax.lax.dynamic_update_index_in_dim(x, v, k, 0), tree, value)


def lockstep_frame_step(
    cfg: StudentConfig,
    mp: MemberParams,
    state: OnlineState,
    frame: jnp.ndarray,
    label: jnp.ndarray,
    region: jnp.ndarray,
    valid: jnp.ndarray,
    aligned: bool = False,
) -> tuple[OnlineState, dict[str, jnp.ndarray]]:
    """One frame for all K members, one member after the other (``fori_loop``), in place.

    Member k's state is read from the stacked ``state`` (a ``dynamic_slice`` per leaf) and its
    :func:`~jitnet_jax.online.engine.frame_step` runs unbatched, so the result is bit-identical to a
    separate run. When member k trains at this frame (``trains_now``) its whole new state is written back
    (``dynamic_update_slice`` into the loop carry, in place); otherwise only the student predicts and only
    the leaves outside the student and the replay buffer (counters, a delayed teacher's pending label)
    are written, so a frame where nobody trains copies no member's parameters or optimiser state.

    Args:
      mp, state: ``[K]``-stacked member settings and states.
      frame: uint8 ``[S, H, W, 3]``; label ``[S, H, W]``; region ``[S, H, W]``; valid bool ``[S]``.
    Returns:
      ``(state, stats)``: stats each ``[K, ...]`` (:data:`STAT_KEYS`).
    """
    n = mp.stream.shape[0]

    def one(k: jnp.ndarray, carry: tuple[OnlineState, dict[str, jnp.ndarray]]) -> Any:
        states, stats = carry
        st = k if aligned else mp.stream[k]  # aligned: this device's k-th member reads its k-th row
        x = tuple(jax.lax.dynamic_index_in_dim(a, st, keepdims=False) for a in (frame, label, region, valid))
        knobs = _member(mp.knobs, k)

        def train(states: OnlineState) -> tuple[OnlineState, dict[str, jnp.ndarray]]:
            s, out = frame_step(cfg, knobs, _member(states, k), *x, branch="cond")
            return _put_member(states, k, s), out

        def predict_only(states: OnlineState) -> tuple[OnlineState, dict[str, jnp.ndarray]]:
            s, out = frame_step(cfg, knobs, _member(states, k), *x, branch="student")
            rest = states.replace(student=None, replay=None)
            rest = _put_member(rest, k, s.replace(student=None, replay=None))
            return rest.replace(student=states.student, replay=states.replay), out

        trains = trains_now(_member(states.replace(student=None, replay=None), k), x[3])
        states, out = jax.lax.cond(trains, train, predict_only, states)
        stats = _put_member(stats, k, {key: out[key] for key in STAT_KEYS})
        return states, stats

    c = cfg.model.num_classes
    stats0 = {
        "teacher": jnp.zeros((n,), jnp.bool_),
        "updates": jnp.zeros((n,), jnp.int32),
        "delta": jnp.zeros((n,), jnp.int32),
        "acc": jnp.zeros((n,), jnp.float32),
        "confusion": jnp.zeros((n, c, c), jnp.int32),
    }
    return jax.lax.fori_loop(0, n, one, (state, stats0))


def member_chunks(
    cfg: StudentConfig,
    mp: MemberParams,
    state: OnlineState,
    frames: jnp.ndarray,
    labels: jnp.ndarray,
    regions: jnp.ndarray,
    valid: jnp.ndarray,
    aligned: bool = False,
) -> tuple[OnlineState, dict[str, jnp.ndarray]]:
    """The chunk for every member, one member after the other: ``lax.map`` over members of
    :func:`~jitnet_jax.online.engine.run_chunk` (the single run's scan). Each member's state is sliced
    out and written back once per chunk; its frames are indexed from the shared chunk (no ``[K]`` copy of
    the frames). Members must be independent (no per-frame coupling; see :func:`lockstep_frame_step`).

    Args:
      frames: uint8 ``[S, T, H, W, 3]``; labels ``[S, T, H, W]``; regions ``[S, T, H, W]``;
        valid bool ``[S, T]``.
    Returns:
      ``(state, stats)`` with stats ``[K, T, ...]``.
    """

    def one(x: tuple[Any, Any, jnp.ndarray]) -> Any:
        knobs, s, st = x
        xs = tuple(
            jax.lax.dynamic_index_in_dim(a, st, keepdims=False) for a in (frames, labels, regions, valid)
        )
        return run_chunk(cfg, knobs, s, *xs)

    rows = jnp.arange(mp.stream.shape[0], dtype=jnp.int32) if aligned else mp.stream  # this device's rows
    return jax.lax.map(one, (mp.knobs, state, rows))


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
    """The chunk for all K members: ``lax.scan`` of :func:`sweep_frame_step` over the frames, except
    ``mode="map"`` without a coupling (:func:`member_chunks`: the members outermost, each scanning the chunk).

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

    if mode == "map" and coupling is None:
        return member_chunks(cfg, mp, state, frames, labels, regions, valid, aligned)

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

    With a ``mesh`` and ``mode="map"`` or ``"lockstep"`` the chunk is a ``shard_map``: each device runs its
    own members in turn (members interact only through a ``coupling``, which then gathers what it decides on
    over the member axis: :meth:`~jitnet_jax.fleet.schedule.BudgetCoupling.over_axis`), so each member's
    math is its unsharded math, bit for bit. The vmapped modes are partitioned by GSPMD from the inputs'
    shardings (``any(is_teacher)`` and a coupling's top-k become collectives). With ``aligned`` (one stream
    per member) the frames are split over the member axis like the members, so each device (and each
    host) holds only its own members' frames.
    """

    def fn(mp: MemberParams, state: Any, frames: Any, labels: Any, regions: Any, valid: Any) -> Any:
        return sweep_chunk(cfg, mp, state, frames, labels, regions, valid, mode, coupling, aligned)

    if mesh is None:
        return jax.jit(fn, donate_argnums=1)
    from jax.sharding import PartitionSpec as P

    from jitnet_jax.online.sharding import MEMBER_AXIS, member_sharding, replicated_sharding

    ms, rs = member_sharding(mesh), replicated_sharding(mesh)
    fs = ms if aligned else rs  # the frames: each device's own streams, or every stream everywhere
    if mode in ("map", "lockstep"):
        local_coupling = None if coupling is None else coupling.over_axis(MEMBER_AXIS)

        def local(mp: MemberParams, state: Any, frames: Any, labels: Any, regions: Any, valid: Any) -> Any:
            return sweep_chunk(cfg, mp, state, frames, labels, regions, valid, mode, local_coupling, aligned)

        f_spec = P(MEMBER_AXIS) if aligned else P()
        fn = jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(P(MEMBER_AXIS), P(MEMBER_AXIS), f_spec, f_spec, f_spec, f_spec),
            out_specs=(P(MEMBER_AXIS), P(MEMBER_AXIS)),
            check_vma=False,
        )
    return jax.jit(fn, donate_argnums=1, in_shardings=(ms, ms, fs, fs, fs, fs), out_shardings=(ms, ms))

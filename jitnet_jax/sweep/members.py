"""The members' traced settings and their stacked online states (a leading ``[K]`` axis)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp

from jitnet_jax.config import SCHEDULES, OnlineConfig
from jitnet_jax.online.engine import Knobs, OnlineState, new_online_state
from jitnet_jax.sweep.grid import Member


@flax.struct.dataclass
class MemberParams:
    """The traced per-member settings (each leaf ``[K]``): the engine's knobs (with the member's peak lr
    and schedule) and the member's stream."""

    knobs: Knobs
    stream: jnp.ndarray  # int32 index into the sweep's streams


def check_members(base: OnlineConfig, members: Sequence[Member], num_streams: int) -> None:
    """One-line ``ValueError`` naming the first member whose single-run config is invalid."""
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
        lr=arr("lr", jnp.float32),
        schedule=jnp.asarray([SCHEDULES.index(m.schedule) for m in members], jnp.int32),
    )
    return MemberParams(knobs=knobs, stream=arr("stream", jnp.int32))


def init_sweep_state(
    base: OnlineConfig, members: Sequence[Member], frame_shape: tuple[int, int]
) -> OnlineState:
    """Members' fresh states stacked on a leading ``[K]`` axis (member k's state is exactly the state
    ``run_stream`` would start from with ``key=jax.random.key(seed_k)``)."""
    states = [new_online_state(m.online_config(base), jax.random.key(m.seed), frame_shape) for m in members]
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *states)


def member_state(states: OnlineState, k: int) -> OnlineState:
    """Member ``k``'s :class:`OnlineState` from a stacked sweep state."""
    return jax.tree_util.tree_map(lambda x: x[k], states)

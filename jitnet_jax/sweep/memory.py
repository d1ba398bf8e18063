"""Sweep memory: an estimate per member from abstract evaluation, and a refusal before compiling.

Memory grows linearly with the number of members K.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jitnet_jax.config import OnlineConfig
from jitnet_jax.online.engine import new_online_state
from jitnet_jax.student.step import loss_and_grads, loss_and_grads_batch


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


def _nbytes(tree: Any) -> int:
    return sum(
        math.prod(x.shape) * np.dtype(x.dtype).itemsize
        for x in jax.tree_util.tree_leaves(tree)
        if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
    )


def estimate_memory(
    cfg: OnlineConfig, frame_shape: tuple[int, int], chunk_size: int | None = None, num_streams: int = 1
) -> MemoryEstimate:
    """Estimate sweep memory without compiling (abstract evaluation only).

    Per member: the online state (params, batch stats, optimiser state, replay buffer) x 3 (the update
    loop carries the state, the updated state and the gradients), plus the forward/backward activations
    of one update at ``H x W`` on its ``replay_batch`` frames (the sum of every intermediate of the traced
    gradient jaxpr -- an upper bound; XLA reuses buffers) and one chunk of per-frame stats. Shared: the
    chunk of frames, labels and weights (double-buffered by the prefetcher).
    """
    h, w = frame_shape
    chunk_size = cfg.chunk_size if chunk_size is None else chunk_size
    scfg = cfg.student
    state = jax.eval_shape(lambda: new_online_state(cfg, jax.random.key(0), frame_shape))
    b = cfg.replay_batch
    if b == 1:
        jaxpr = jax.make_jaxpr(lambda s, f, y, wt: loss_and_grads(scfg, s, f, y, wt))(
            state.student,
            jax.ShapeDtypeStruct((h, w, 3), jnp.uint8),
            jax.ShapeDtypeStruct((h, w), jnp.int32),
            jax.ShapeDtypeStruct((h, w), jnp.float32),
        )
    else:
        jaxpr = jax.make_jaxpr(lambda s, f, y, wt, m: loss_and_grads_batch(scfg, s, f, y, wt, m))(
            state.student,
            jax.ShapeDtypeStruct((b, h, w, 3), jnp.uint8),
            jax.ShapeDtypeStruct((b, h, w), jnp.int32),
            jax.ShapeDtypeStruct((b, h, w), jnp.float32),
            jax.ShapeDtypeStruct((b,), jnp.bool_),
        )
    acts = 0
    for eqn in jaxpr.jaxpr.eqns:
        for var in eqn.outvars:
            aval = var.aval
            if hasattr(aval, "shape") and hasattr(aval, "dtype"):
                acts += math.prod(aval.shape) * np.dtype(aval.dtype).itemsize
    c = scfg.model.num_classes
    stats = chunk_size * (c * c * 4 + 16)
    state_b = _nbytes(state)
    per_member = 3 * state_b + acts + stats
    shared = 2 * num_streams * chunk_size * h * w * (3 + 1 + 4 + 1)
    return MemoryEstimate(per_member, shared, _nbytes(state.student.params), state_b, acts)


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
    cfg: OnlineConfig,
    k: int,
    frame_shape: tuple[int, int],
    chunk_size: int | None = None,
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

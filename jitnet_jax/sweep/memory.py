"""Sweep memory: an estimate per member from abstract evaluation, and a refusal before compiling.

Memory grows linearly with the number of members K. The limit is the memory of the devices the sweep
runs on: an accelerator's own memory (``memory_stats()``), the host's for CPU devices. With a mesh the
members are split over its devices and every device holds the shared chunk.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jitnet_jax.config import OnlineConfig
from jitnet_jax.online.engine import new_online_state
from jitnet_jax.online.runner import chunk_abstract
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
        """Bytes of ``k`` members on one device."""
        return self.shared + k * self.per_member

    def per_device(self, k: int, n_devices: int = 1) -> int:
        """Bytes on each of ``n_devices`` devices that split ``k`` members (the shared chunk on each)."""
        return self.total(-(-k // max(1, n_devices)))

    def max_members(self, budget: int, n_devices: int = 1) -> int:
        """The most members that fit in ``budget`` bytes on each of ``n_devices`` devices."""
        return max(0, (budget - self.shared) // self.per_member) * max(1, n_devices)


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

    Per member: the online state (float32 params, batch stats and optimiser state; the replay buffer's and a
    delayed teacher's uint8 frames, labels and region maps) x 3 (the update loop carries the state, the
    updated state and the gradients), plus the forward/backward activations of one update at ``H x W`` on
    its ``replay_batch`` frames at the model's compute dtype (``ModelConfig.dtype``: bfloat16 halves them;
    the sum of every intermediate of the traced gradient jaxpr -- an upper bound; XLA reuses buffers) and
    one chunk of per-frame stats. Shared: the
    chunk of every stream as the compiled chunk receives it (uint8 frames ``[T, H, W, 3]``, uint8 labels and
    region map ``[T, H, W]``, bool valid ``[T]``: :func:`~jitnet_jax.online.runner.chunk_abstract`),
    double-buffered by the prefetcher.
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
    shared = 2 * num_streams * _nbytes(chunk_abstract(chunk_size, h, w))
    return MemoryEstimate(per_member, shared, _nbytes(state.student.params), state_b, acts)


#: Fraction of the available memory a sweep may plan to use (the estimate leaves XLA some room).
HEADROOM = 0.8


def available_memory() -> int:
    """Bytes of host memory available to this process (``MemAvailable``; physical memory if unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def device_free_memory(device: Any) -> int | None:
    """Free bytes of an accelerator's own memory (``bytes_limit - bytes_in_use`` of
    ``device.memory_stats()``), or None when the device reports no limit (CPU devices, some backends)."""
    if getattr(device, "platform", "cpu") == "cpu":
        return None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - a backend without memory statistics
        return None
    if not stats or "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def memory_budget(devices: Sequence[Any]) -> tuple[int, str]:
    """Bytes each of ``devices`` may use (``HEADROOM`` of what is free) and a phrase naming where that
    figure comes from. An accelerator's limit is its own memory (the tightest device's); CPU devices, and
    devices that report no limit, share the host memory of their process equally."""
    free = [(d, device_free_memory(d)) for d in devices]
    known = [(d, b) for d, b in free if b is not None]
    budgets: list[tuple[int, str]] = []
    if known:
        d, b = min(known, key=lambda x: x[1])
        budgets.append((int(HEADROOM * b), f"{HEADROOM:.0%} of the free device memory of {d}"))
    if len(known) < len(free):
        on_host = [d for d, b in free if b is None]
        here = jax.process_index()
        local = sum(1 for d in on_host if getattr(d, "process_index", here) == here)
        n = max(1, local)
        share = f" shared by {n} devices" if n > 1 else ""
        budgets.append((int(HEADROOM * available_memory()) // n, f"{HEADROOM:.0%} of the host memory{share}"))
    return min(budgets, key=lambda x: x[0])


def check_memory(
    cfg: OnlineConfig,
    k: int,
    frame_shape: tuple[int, int],
    chunk_size: int | None = None,
    num_streams: int = 1,
    budget: int | None = None,
    mesh: Any = None,
    devices: Sequence[Any] | None = None,
) -> MemoryEstimate:
    """Raise a one-line ``ValueError`` if K members at ``frame_shape`` do not fit. Returns the estimate.

    Args:
      cfg, k, frame_shape, chunk_size, num_streams: the sweep (see :func:`estimate_memory`).
      budget: bytes per device (default: :func:`memory_budget` of the devices).
      mesh: the sweep's ``jax.sharding.Mesh``; its devices split the K members (``ceil(K / n)`` each) and
        each holds the shared chunk.
      devices: the devices when there is no mesh (default: ``jax.devices()[0]``, where an unsharded sweep
        runs). Each takes ``ceil(K / len(devices))`` members.
    """
    if mesh is not None:
        devices = list(mesh.devices.flat)
    elif devices is None:
        devices = jax.devices()[:1]
    else:
        devices = list(devices)
    n = max(1, len(devices))
    est = estimate_memory(cfg, frame_shape, chunk_size, num_streams)
    if budget is None:
        budget, where = memory_budget(devices)
    else:
        budget, where = int(budget), "the given budget"
    need = est.per_device(k, n)
    if need > budget:
        gib = 2.0**30
        split = f" per device ({-(-k // n)} of them on each of {n} devices)" if n > 1 else ""
        raise ValueError(
            f"sweep of K={k} configurations at {frame_shape[0]}x{frame_shape[1]} needs ~{need / gib:.2f} GiB"
            f"{split} ({est.per_member / 2**20:.0f} MiB per configuration: state {est.state / 2**20:.1f} MiB, "
            f"activations {est.activations / 2**20:.0f} MiB; shared chunk {est.shared / 2**20:.1f} MiB) but "
            f"the budget is {budget / gib:.2f} GiB ({where}); at most K={est.max_members(budget, n)} fit "
            "(memory grows linearly with K): use fewer configurations, a smaller resolution, or shard the "
            "sweep over devices/hosts"
        )
    return est

"""Shard a sweep's configuration axis (and with it a list of streams) over devices.

The sweep's state and per-member settings carry a leading ``[K]`` member axis; they are placed with
``NamedSharding(mesh, P("members"))`` so each device holds ``K / n_devices`` members, and the chunk's
frames are replicated. The compiled program is the same ``jax.jit`` of
:func:`~jitnet_jax.sweep.compiled.sweep_chunk`: GSPMD partitions it along the member axis (the only cross-device
traffic is the one-bit ``any(is_teacher)`` reduction per frame and the update loop's "any member still
training" test). Members read their stream by index, so several streams are handled by giving members
different ``stream`` indices (e.g. one stream per device: ``K = n_streams``).

Multi-host: after ``jax.distributed.initialize()``, ``jax.devices()`` lists every device of every
host and :func:`member_mesh` spans them all; alternatively run an independent slice of the sweep per
host (``experiments.sweep --slice auto``; see README).

Check on a CPU with ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (set before jax starts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MEMBER_AXIS = "members"


def member_mesh(devices: Sequence[Any] | None = None) -> Mesh:
    """A 1-D mesh named ``"members"`` over ``devices`` (default: all devices, all hosts)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("member_mesh needs at least one device")
    return Mesh(np.array(devices), (MEMBER_AXIS,))


def member_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over the mesh's ``"members"`` axis."""
    return NamedSharding(mesh, P(MEMBER_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, P())


def _put(tree: Any, sharding: NamedSharding) -> Any:
    """Place every leaf with ``sharding``. A sharding that spans devices of several processes (a mesh over
    hosts) is built from each process's own shards of the value (which every process holds whole):
    ``jax.make_array_from_callback``; ``device_put`` accepts only addressable devices."""
    if sharding.is_fully_addressable:
        return jax.tree_util.tree_map(lambda x: jax.device_put(x, sharding), tree)

    def put(x: Any) -> Any:
        is_key = jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
        host = np.asarray(jax.device_get(jax.random.key_data(x) if is_key else x))
        arr = jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
        return jax.random.wrap_key_data(arr, impl=jax.random.key_impl(x)) if is_key else arr

    return jax.tree_util.tree_map(put, tree)


def shard_members(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf of ``tree`` (each with a leading ``[K]`` axis, K a multiple of the mesh size)
    split over the member axis."""
    n = mesh.devices.size
    for leaf in jax.tree_util.tree_leaves(tree):
        if leaf.ndim == 0 or leaf.shape[0] % n:
            raise ValueError(f"member axis of shape {leaf.shape} does not split over {n} devices")
    return _put(tree, member_sharding(mesh))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf of ``tree`` on every device of ``mesh``."""
    return _put(tree, replicated_sharding(mesh))


def pad_members(members: Sequence[Any], n_devices: int) -> tuple[list[Any], int]:
    """Repeat the last member so ``len(members)`` is a multiple of ``n_devices``; returns
    ``(members, n_real)`` (drop results past ``n_real``)."""
    members = list(members)
    n_real = len(members)
    while len(members) % n_devices:
        members.append(members[-1])
    return members, n_real


def host_slice(items: Sequence[Any], index: int | None = None, count: int | None = None) -> list[Any]:
    """This host's share ``items[index::count]`` (default: ``jax.process_index()`` of
    ``jax.process_count()``), for running one slice of a sweep -- or one stream -- per host."""
    index = jax.process_index() if index is None else index
    count = jax.process_count() if count is None else count
    if not 0 <= index < count:
        raise ValueError(f"host slice index {index} not in [0, {count})")
    return list(items)[index::count]

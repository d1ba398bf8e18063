"""The sweep's memory check: device memory on accelerators, host memory on CPU, members split over a mesh,
and the chunk counted at the dtypes the compiled chunk receives."""

from __future__ import annotations

import math
import types
from typing import Any

import numpy as np
import pytest

from jitnet_jax.config import ModelConfig, OptimConfig, StudentConfig
from jitnet_jax.online.engine import OnlineConfig
from jitnet_jax.sweep import memory
from jitnet_jax.sweep.memory import HEADROOM, check_memory, estimate_memory

H, W = 24, 32
CFG = OnlineConfig(
    student=StudentConfig(model=ModelConfig(num_classes=4), optim=OptimConfig(name="sgd", lr=0.01)),
    chunk_size=5,
)


class FakeDevice:
    """A device that reports ``bytes_limit``/``bytes_in_use`` like a GPU or TPU (or nothing, ``stats=None``)."""

    def __init__(self, limit: int | None, in_use: int = 0, platform: str = "gpu", ident: int = 0) -> None:
        self.platform = platform
        self.id = ident
        self.process_index = 0
        self._stats = None if limit is None else {"bytes_limit": limit, "bytes_in_use": in_use}

    def memory_stats(self) -> dict[str, int] | None:
        return self._stats

    def __repr__(self) -> str:
        return f"{self.platform}:{self.id}"


@pytest.fixture(scope="module")
def est() -> memory.MemoryEstimate:
    return estimate_memory(CFG, (H, W), CFG.chunk_size)


def _limit_for(free: float) -> int:
    """A device limit whose ``HEADROOM`` share is ``free`` bytes."""
    return math.ceil(free / HEADROOM)


def test_shared_chunk_counts_one_byte_per_label_and_region_pixel(est) -> None:
    t = CFG.chunk_size
    chunk = t * H * W * 3 + t * H * W + t * H * W + t  # uint8 frames, labels, region map; bool valid
    assert est.shared == 2 * chunk  # double-buffered by the prefetcher
    assert estimate_memory(CFG, (H, W), t, num_streams=3).shared == 3 * est.shared


def test_device_memory_limit_refuses(est, monkeypatch) -> None:
    monkeypatch.setattr(memory, "available_memory", lambda: 2**40)  # plenty of host memory: not the limit
    small = FakeDevice(_limit_for(est.total(1) + est.per_member // 2))
    assert check_memory(CFG, 1, (H, W), CFG.chunk_size, devices=[small]) == est
    with pytest.raises(ValueError, match=r"K=2 .* free device memory of gpu:0.* at most K=1 fit") as e:
        check_memory(CFG, 2, (H, W), CFG.chunk_size, devices=[small])
    assert "\n" not in str(e.value)
    # bytes in use are not free
    busy = FakeDevice(2**40, in_use=2**40 - _limit_for(est.total(1) + est.per_member // 2))
    with pytest.raises(ValueError, match="device memory"):
        check_memory(CFG, 2, (H, W), CFG.chunk_size, devices=[busy])


def test_members_split_over_the_mesh_devices(est, monkeypatch) -> None:
    monkeypatch.setattr(memory, "available_memory", lambda: 2**40)
    limit = _limit_for(est.total(1) + est.per_member // 2)  # one member (and the shared chunk) per device
    devs = np.array([FakeDevice(limit, ident=0), FakeDevice(limit, ident=1)], dtype=object)
    mesh = types.SimpleNamespace(devices=devs)
    assert est.per_device(3, 2) == est.shared + 2 * est.per_member
    check_memory(CFG, 2, (H, W), CFG.chunk_size, mesh=mesh)
    with pytest.raises(
        ValueError, match=r"K=3 .*per device \(2 of them on each of 2 devices\).* at most K=2"
    ):
        check_memory(CFG, 3, (H, W), CFG.chunk_size, mesh=mesh)
    # the tightest device sets the limit
    devs[1] = FakeDevice(_limit_for(est.shared + est.per_member // 2), ident=1)
    with pytest.raises(ValueError, match=r"free device memory of gpu:1"):
        check_memory(CFG, 2, (H, W), CFG.chunk_size, mesh=mesh)


def test_cpu_devices_use_host_memory(est, monkeypatch) -> None:
    host = est.total(2) + est.per_member // 2
    monkeypatch.setattr(memory, "available_memory", lambda: _limit_for(host))
    cpu: list[Any] = [FakeDevice(2**40, platform="cpu")]  # a CPU device's own statistics are not the limit
    check_memory(CFG, 2, (H, W), CFG.chunk_size, devices=cpu)
    with pytest.raises(ValueError, match="host memory"):
        check_memory(CFG, 3, (H, W), CFG.chunk_size, devices=cpu)
    # CPU devices of one process share its host memory
    two = [FakeDevice(None, platform="cpu", ident=i) for i in range(2)]
    with pytest.raises(ValueError, match="host memory shared by 2 devices"):
        check_memory(CFG, 4, (H, W), CFG.chunk_size, devices=two)
    # an accelerator that reports no limit falls back to the host's memory
    with pytest.raises(ValueError, match="host memory"):
        check_memory(CFG, 3, (H, W), CFG.chunk_size, devices=[FakeDevice(None)])


def test_explicit_budget_is_per_device(est) -> None:
    budget = est.total(1) + est.per_member // 2
    devs = [FakeDevice(None, ident=i) for i in range(4)]
    check_memory(CFG, 4, (H, W), CFG.chunk_size, budget=budget, devices=devs)
    with pytest.raises(ValueError, match=r"the given budget.* at most K=4 fit"):
        check_memory(CFG, 5, (H, W), CFG.chunk_size, budget=budget, devices=devs)


def test_buffers_count_one_byte_per_region_pixel_and_bf16_halves_activations(est) -> None:
    """The replay buffer (R frames) and a delayed teacher's label in flight hold uint8 frames, labels and
    region maps: 5 bytes a pixel (float32 loss weights made it 8). bfloat16 compute shrinks the activations
    (at 96x128 by ~20%); the state (float32 parameters and optimiser) does not change."""
    import dataclasses

    r = 3
    buffered = dataclasses.replace(CFG, replay_size=r, replay_batch=2, teacher_delay=2)
    extra = estimate_memory(buffered, (H, W), CFG.chunk_size).state - est.state
    assert extra == (r + 1) * H * W * 5 + 4 + 4 + 4  # + the count, the label's index and arrival (int32)
    bf16 = dataclasses.replace(
        CFG, student=dataclasses.replace(CFG.student, model=ModelConfig(num_classes=4, dtype="bfloat16"))
    )
    low, high = (estimate_memory(c, (96, 128), CFG.chunk_size) for c in (bf16, CFG))
    assert low.state == high.state and low.params == high.params
    # every intermediate of the traced jaxpr counts, float32 ones too (BatchNorm's statistics, the loss)
    assert low.activations < 0.85 * high.activations

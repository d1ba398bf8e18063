"""The sweep's configuration axis (and several streams) sharded over 4 fake CPU devices gives the same
results as one device. Runs in a subprocess: ``--xla_force_host_platform_device_count`` must be set
before jax starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from jitnet_jax.online.sharding import host_slice, pad_members

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import dataclasses, jax, numpy as np
from jitnet_jax.compile_cache import enable_compile_cache
enable_compile_cache()  # the suite's cache (JITNET_COMPILE_CACHE, set by tests/conftest.py)
assert jax.device_count() == 4, jax.devices()
from jitnet_jax.config import ModelConfig, OptimConfig, StudentConfig
from jitnet_jax.online.engine import OnlineConfig
from jitnet_jax.online.sharding import member_mesh, MEMBER_AXIS
from jitnet_jax.sweep.driver import Member, run_sweep, member_state, stream_miou
from jitnet_jax.data.synthetic import SyntheticStream

base = OnlineConfig(student=StudentConfig(model=ModelConfig(num_classes=4), optim=OptimConfig(name="sgd")),
                    chunk_size=4, u_max=2, delta_min=2, delta_max=4)
streams = [SyntheticStream(8, 24, 32, seed=s) for s in (0, 1)]
m0 = Member.from_config(base)
members = [dataclasses.replace(m0, stream=i % 2, seed=i, a_thr=(0.5, 0.9)[i // 2], lr=(0.01, 0.003)[i // 2],
                               schedule=("constant", "cosine")[i // 2]) for i in range(4)]
for mode in ("map", "gated"):
    one = run_sweep(streams, base, members, mode=mode, progress=False)
    mesh = member_mesh()
    four = run_sweep(streams, base, members, mode=mode, mesh=mesh, progress=False)
    leaf = jax.tree_util.tree_leaves(four.state.student.params)[0]
    assert len(leaf.sharding.device_set) == 4, leaf.sharding
    assert tuple(leaf.sharding.spec)[:1] == (MEMBER_AXIS,), (mode, leaf.sharding)
    for k in range(4):
        if mode == "map":  # bit-identical: per-frame stats and final parameters
            for key in one.per_frame[k]:
                np.testing.assert_array_equal(one.per_frame[k][key], four.per_frame[k][key], err_msg=f"{k} {key}")
            a = jax.tree_util.tree_leaves(member_state(one.state, k).student.params)
            b = jax.tree_util.tree_leaves(member_state(four.state, k).student.params)
            for x, y in zip(a, b):
                np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        else:  # vmapped convolutions batch K/4 members per device instead of K and round differently;
            # online training amplifies that: identical decisions, mIoU within a (loose) tolerance
            for key in ("frame", "teacher", "updates", "delta"):
                np.testing.assert_array_equal(one.per_frame[k][key], four.per_frame[k][key], err_msg=f"{k} {key}")
            d = abs(stream_miou(one.per_frame[k]) - stream_miou(four.per_frame[k]))
            print(f"gated member {k}: |mIoU(1 device) - mIoU(4 devices)| = {d:.4f}")
            assert d < 0.1, d
    # The two streams really are different inputs.
    assert not np.array_equal(one.per_frame[0]["tp"], one.per_frame[1]["tp"])
    print(mode, "same results on 1 and 4 devices")
print("OK")
"""


def test_sharded_sweep_equals_single_device():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=1200
    )
    assert r.returncode == 0, r.stderr[-4000:]
    assert r.stdout.strip().endswith("OK"), r.stdout


def test_host_slices_and_padding():
    items = list(range(10))
    assert host_slice(items, 0, 3) == [0, 3, 6, 9] and host_slice(items, 2, 3) == [2, 5, 8]
    assert sorted(sum((host_slice(items, i, 4) for i in range(4)), [])) == items
    padded, n = pad_members(["a", "b", "c"], 4)
    assert padded == ["a", "b", "c", "c"] and n == 3

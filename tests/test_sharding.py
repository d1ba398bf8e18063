"""The sweep's configuration axis (and several streams) sharded over 4 fake CPU devices gives the same
results as separate single-configuration runs on one device. Runs in a subprocess:
``--xla_force_host_platform_device_count`` must be set before jax starts."""

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
from jitnet_jax.online.runner import run_stream
from jitnet_jax.online.sharding import member_mesh, MEMBER_AXIS
from jitnet_jax.sweep.driver import run_sweep, member_state, stream_miou
from jitnet_jax.data.synthetic import SyntheticStream
from tests.test_sweep import BASE, H, W, MEMBERS, N
# test_sweep's two member configurations, each on both streams, against separate single-configuration runs
# (two small programs) instead of the same sweeps on one device (two more sweep programs): 124 s cold
# instead of 146 s.
streams = [SyntheticStream(N, H, W, seed=s) for s in (3, 4)]
members = [dataclasses.replace(MEMBERS[i % 2], stream=i // 2, seed=10 + i) for i in range(4)]
separate = [run_stream(streams[m.stream], m.online_config(BASE), jax.random.key(m.seed), progress=False)
            for m in members]
assert not np.array_equal(separate[0].per_frame["tp"], separate[2].per_frame["tp"])  # different streams
for mode in ("map", "gated"):
    four = run_sweep(streams, BASE, members, mode=mode, mesh=member_mesh(), progress=False)
    leaf = jax.tree_util.tree_leaves(four.state.student.params)[0]
    assert len(leaf.sharding.device_set) == 4, leaf.sharding
    assert tuple(leaf.sharding.spec)[:1] == (MEMBER_AXIS,), (mode, leaf.sharding)
    for k, ref in enumerate(separate):
        if mode == "map":  # bit-identical to the separate runs: per-frame stats and final parameters
            for key in ref.per_frame:
                np.testing.assert_array_equal(four.per_frame[k][key], ref.per_frame[key], err_msg=f"{k} {key}")
            a = jax.tree_util.tree_leaves(member_state(four.state, k).student.params)
            b = jax.tree_util.tree_leaves(ref.state.student.params)
            for x, y in zip(a, b):
                np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        else:  # vmapped convolutions batch K/4 members per device and round differently from single ones;
            # identical decisions, mIoU within a float tolerance (as test_vmapped_sweep_matches_separate_runs)
            for key in ("frame", "teacher", "updates", "delta"):
                np.testing.assert_array_equal(four.per_frame[k][key], ref.per_frame[key], err_msg=f"{k} {key}")
            d = abs(stream_miou(four.per_frame[k]) - stream_miou(ref.per_frame))
            print(f"gated member {k}: |mIoU(4 devices) - mIoU(separate run)| = {d:.4f}")
            assert d < 0.1, d
    print(mode, "on 4 devices: the same results as separate runs")
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

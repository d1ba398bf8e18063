"""The sweep's configuration axis (and several streams) sharded over 4 fake CPU devices gives the same
results as separate single-configuration runs on one device. The sharded sweeps run in a subprocess:
``--xla_force_host_platform_device_count`` must be set before jax starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from jitnet_jax.online.sharding import host_slice, pad_members

REPO = Path(__file__).resolve().parents[1]

#: Seeds of the two synthetic streams the 4 members run on.
STREAM_SEEDS = (3, 4)


def _members(two: list) -> list:
    """The 4 sweep members: test_sweep's ``MEMBERS`` (``two``), each on both streams."""
    import dataclasses

    return [dataclasses.replace(two[i % 2], stream=i // 2, seed=10 + i) for i in range(4)]


SCRIPT = r"""
import sys, jax, numpy as np
from jitnet_jax.compile_cache import enable_compile_cache
enable_compile_cache()  # the suite's cache (JITNET_COMPILE_CACHE, set by tests/conftest.py)
assert jax.device_count() == 4, jax.devices()
from jitnet_jax.online.sharding import member_mesh, MEMBER_AXIS
from jitnet_jax.sweep.driver import run_sweep, member_state, stream_miou
from jitnet_jax.data.synthetic import SyntheticStream
from tests.test_sweep import BASE, H, W, N, MEMBERS
from tests.test_sharding import STREAM_SEEDS, _members
streams = [SyntheticStream(N, H, W, seed=s) for s in STREAM_SEEDS]
members = _members(MEMBERS)
# the separate single-configuration runs, made by the test on one device (test_sweep's programs)
ref = np.load(sys.argv[1])
separate = [({k[len(f"pf{m}_"):]: ref[k] for k in ref.files if k.startswith(f"pf{m}_")},
             [ref[f"p{m}_{i}"] for i in range(int(ref[f"n{m}"]))]) for m in range(len(members))]
for mode in ("map", "gated"):
    four = run_sweep(streams, BASE, members, mode=mode, mesh=member_mesh(), progress=False)
    leaf = jax.tree_util.tree_leaves(four.state.student.params)[0]
    assert len(leaf.sharding.device_set) == 4, leaf.sharding
    assert tuple(leaf.sharding.spec)[:1] == (MEMBER_AXIS,), (mode, leaf.sharding)
    for k, (pf, params) in enumerate(separate):
        if mode == "map":  # bit-identical to the separate runs: per-frame stats and final parameters
            for key in pf:
                np.testing.assert_array_equal(four.per_frame[k][key], pf[key], err_msg=f"{k} {key}")
            a = jax.tree_util.tree_leaves(member_state(four.state, k).student.params)
            assert len(a) == len(params)
            for x, y in zip(a, params):
                np.testing.assert_array_equal(np.asarray(x), y)
        else:  # vmapped convolutions batch K/4 members per device and round differently from single ones;
            # identical decisions, mIoU within a float tolerance (as test_vmapped_sweep_matches_separate_runs)
            for key in ("frame", "teacher", "updates", "delta"):
                np.testing.assert_array_equal(four.per_frame[k][key], pf[key], err_msg=f"{k} {key}")
            d = abs(stream_miou(four.per_frame[k]) - stream_miou(pf))
            print(f"gated member {k}: |mIoU(4 devices) - mIoU(separate run)| = {d:.4f}")
            assert d < 0.1, d
    print(mode, "on 4 devices: the same results as separate runs")
print("OK")
"""


def test_sharded_sweep_equals_single_device(tmp_path):
    """The separate single-configuration runs are made here, on this process's one device: they are
    test_sweep's two programs (loaded from the compilation cache, or compiled here and loaded there), where
    the 4-device subprocess would compile them again (its device topology is part of the cache key).
    The subprocess compiles only the two sharded sweeps."""
    import jax
    import numpy as np
    from test_sweep import BASE, MEMBERS, H, N, W

    from jitnet_jax.data.synthetic import SyntheticStream
    from jitnet_jax.online.runner import run_stream

    streams = [SyntheticStream(N, H, W, seed=s) for s in STREAM_SEEDS]
    members = _members(MEMBERS)
    arrays = {}
    for m, member in enumerate(members):
        run = run_stream(
            streams[member.stream], member.online_config(BASE), jax.random.key(member.seed), progress=False
        )
        arrays.update({f"pf{m}_{k}": np.asarray(v) for k, v in run.per_frame.items()})
        leaves = jax.tree_util.tree_leaves(run.state.student.params)
        arrays.update({f"p{m}_{i}": np.asarray(x) for i, x in enumerate(leaves)})
        arrays[f"n{m}"] = np.asarray(len(leaves))
    assert not np.array_equal(arrays["pf0_tp"], arrays["pf2_tp"])  # different streams
    np.savez(tmp_path / "separate.npz", **arrays)
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "separate.npz")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    assert r.stdout.strip().endswith("OK"), r.stdout


def test_host_slices_and_padding():
    items = list(range(10))
    assert host_slice(items, 0, 3) == [0, 3, 6, 9] and host_slice(items, 2, 3) == [2, 5, 8]
    assert sorted(sum((host_slice(items, i, 4) for i in range(4)), [])) == items
    padded, n = pad_members(["a", "b", "c"], 4)
    assert padded == ["a", "b", "c", "c"] and n == 3

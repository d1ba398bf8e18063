"""A sweep over two processes (``jax.distributed`` on localhost, CPU collectives over gloo): the member axis
is sharded over one device per process, every process reads the stream itself, and the per-frame results
(gathered with ``multihost_utils.process_allgather``, never a ``device_get`` of arrays that span another
process's devices) equal a single-process sweep's, bit for bit in map mode."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import sys, jax, numpy as np
process_id, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
assert jax.process_count() == 2 and jax.device_count() == 2 and jax.local_device_count() == 1
from jitnet_jax.data.synthetic import SyntheticStream
from jitnet_jax.online.sharding import member_mesh
from jitnet_jax.sweep.driver import run_sweep
from tests.test_sweep import BASE, H, W, N, MEMBERS
result = run_sweep(SyntheticStream(N, H, W, seed=3), BASE, MEMBERS, mode="map", mesh=member_mesh(), progress=False)
leaf = jax.tree_util.tree_leaves(result.state.student.params)[0]
assert not leaf.is_fully_addressable  # the state really spans both processes
np.savez(f"{out}.{process_id}.npz", **{f"{m}_{k}": v for m, pf in enumerate(result.per_frame) for k, v in pf.items()})
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_env() -> dict[str, str]:
    """The environment of a CPU-only subprocess that imports this checkout (no forced device count)."""
    env = dict(
        os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
    )
    env.pop("XLA_FLAGS", None)
    return env


def run_two_processes(script: str, out: str, timeout: int = 300) -> None:
    """Run ``script`` as processes 0 and 1 of one ``jax.distributed`` job on localhost (``argv``: process id,
    coordinator port, ``out``); fail with the stderr of one that exits non-zero."""
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(i), port, out],
            cwd=REPO,
            env=cpu_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        errs = [p.communicate(timeout=timeout)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, err in zip(procs, errs):
        assert p.returncode == 0, err[-3000:]


def test_two_process_sweep_matches_one_process(tmp_path) -> None:
    from jitnet_jax.data.synthetic import SyntheticStream
    from jitnet_jax.sweep.driver import run_sweep
    from tests.test_sweep import BASE, MEMBERS, H, N, W

    reference = run_sweep(SyntheticStream(N, H, W, seed=3), BASE, MEMBERS, mode="map", progress=False)
    out = str(tmp_path / "per_frame")
    run_two_processes(SCRIPT, out)
    for i in range(2):  # every process gathered every member's rows
        got = np.load(f"{out}.{i}.npz")
        for m, pf in enumerate(reference.per_frame):
            for k, v in pf.items():
                np.testing.assert_array_equal(got[f"{m}_{k}"], v, err_msg=f"process {i} member {m} {k}")

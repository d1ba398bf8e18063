"""The fleet over devices and hosts: cameras split over 4 fake CPU devices, and over two processes on
localhost (``jax.distributed``, gloo CPU collectives) where each process reads only its own cameras' frames;
per-camera results equal the one-device program's, bit for bit in lockstep mode (the scheduler's top-k looks
across devices)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.test_multihost import cpu_env, run_two_processes

REPO = Path(__file__).resolve().parents[1]

COMMON = r"""
import sys, dataclasses, jax, numpy as np
from jitnet_jax.compile_cache import enable_compile_cache
from jitnet_jax.config import OnlineConfig
from jitnet_jax.data.synthetic import SyntheticStream
from jitnet_jax.fleet import Budget, make_fleet, run_fleet
from jitnet_jax.online.sharding import member_mesh, MEMBER_AXIS

class Counted:
    '''A camera's stream that records whether this process read it.'''
    def __init__(self, src):
        self.src, self.info, self.read = src, src.info, 0
    def chunks(self, chunk_size, start=0):
        for c in self.src.chunks(chunk_size, start):
            self.read += 1
            yield c

def setup(lengths):
    cams = [Counted(SyntheticStream(n, 32, 48, seed=i)) for i, n in enumerate(lengths)]
    cfg = OnlineConfig(chunk_size=8)
    model = dataclasses.replace(cfg.student.model, num_classes=4)
    return cams, make_fleet(cams), dataclasses.replace(cfg, student=dataclasses.replace(cfg.student, model=model))

def rows(result):
    return {f"{i}_{k}": v for i, pf in enumerate(result.result.per_frame) for k, v in pf.items()}
"""

FOUR = (
    COMMON
    + r"""
enable_compile_cache()
assert jax.device_count() == 4, jax.devices()
cams, fleet, cfg = setup((24, 16, 24, 20))
budget = Budget("need", per_tick=1)
one = run_fleet(fleet, cfg, budget, mode="lockstep", progress=False)
four = run_fleet(fleet, cfg, budget, mode="lockstep", mesh=member_mesh(), progress=False)
leaf = jax.tree_util.tree_leaves(four.result.state.cameras.student.params)[0]
assert len(leaf.sharding.device_set) == 4 and tuple(leaf.sharding.spec)[:1] == (MEMBER_AXIS,), leaf.sharding
a, b = rows(one), rows(four)
assert a.keys() == b.keys()
for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
assert one.ledger["waits"].tolist() == four.ledger["waits"].tolist() and one.ledger["waits"].sum() > 0
print("ok")
"""
)

TWO = (
    COMMON
    + r"""
process_id, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
assert jax.process_count() == 2 and jax.device_count() == 2
cams, fleet, cfg = setup((24, 16))
result = run_fleet(fleet, cfg, Budget("need", per_tick=1), mode="lockstep", mesh=member_mesh(), progress=False)
leaf = jax.tree_util.tree_leaves(result.result.state.cameras.student.params)[0]
assert not leaf.is_fully_addressable  # the cameras really span both processes
reads = [c.read for c in cams]
assert reads[process_id] > 0 and reads[1 - process_id] == 0, reads  # only its own camera's frames
np.savez(f"{out}.{process_id}.npz", waits=result.ledger["waits"], **rows(result))
"""
)


def test_fleet_on_four_devices_equals_one_device() -> None:
    env = cpu_env()
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    r = subprocess.run(
        [sys.executable, "-c", FOUR], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


def test_fleet_over_two_processes_reads_only_its_cameras_and_equals_one_process(tmp_path) -> None:
    ns: dict = {}
    exec(COMMON, ns)
    _, fleet, cfg = ns["setup"]((24, 16))
    from jitnet_jax.fleet import Budget, run_fleet

    reference = run_fleet(fleet, cfg, Budget("need", per_tick=1), mode="lockstep", progress=False)
    out = str(tmp_path / "rows")
    run_two_processes(TWO, out)
    expected = ns["rows"](reference)
    for i in range(2):  # every process made every camera's rows from the gathered statistics
        got = np.load(f"{out}.{i}.npz")
        assert got["waits"].tolist() == reference.ledger["waits"].tolist()
        for k, v in expected.items():
            np.testing.assert_array_equal(got[k], v, err_msg=f"process {i}: {k}")

"""keep_freed_memory: a repeated XLA:CPU call stops page-faulting its temp buffer in afresh."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from jitnet_jax.host_memory import keep_freed_memory

# One subprocess (malloc settings are per process): the minor page faults of one call of a program whose
# XLA temp buffer (40 MB, checked with memory_analysis) is above glibc's largest mmap threshold (32 MB on
# 64-bit), before and after keep_freed_memory. The buffer is XLA's own, not a library's scratch space, so its
# size does not depend on the CPU (a convolution's scratch does: on CI's CPU it was never mmapped).
_CHILD = r"""
import json, os, resource
import jax, jax.numpy as jnp
from jitnet_jax.host_memory import keep_freed_memory

f = jax.jit(lambda a, b: jnp.tanh(a @ b) @ b.T)  # the (10240, 1024) f32 intermediate lives in the temp buffer
a, b = jnp.ones((10240, 32)), jnp.ones((32, 1024)) / 32
temp = f.lower(a, b).compile().memory_analysis().temp_size_in_bytes

def faults_per_call(warm=4, n=9):  # after warm calls (each pool thread's arena gets its block), the median
    counts = []
    for i in range(warm + n):
        r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        jax.block_until_ready(f(a, b))
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
    return sorted(counts[warm:])[n // 2]

before = faults_per_call()
kept = keep_freed_memory({})
after = faults_per_call()
try:
    thp = open("/sys/kernel/mm/transparent_hugepage/enabled").read().strip()
except OSError:
    thp = "unknown"
print(json.dumps({"temp": temp, "before": before, "after": after, "kept": kept, "thp": thp}))
"""

_MALLOC_ENV = [k for k in os.environ if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES"]


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)
@pytest.mark.skipif(bool(_MALLOC_ENV), reason=f"the environment tunes glibc's malloc: {_MALLOC_ENV}")
def test_a_repeated_call_no_longer_faults_its_temp_buffer_in():
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["kept"] is True
    assert r["temp"] > 33 * 2**20, r  # above glibc's mmap threshold whatever its dynamic state
    # glibc maps the block afresh on every call: one fault per page, 4 KiB pages (10,240 faults) or, with
    # transparent huge pages always on, 2 MiB ones (20 faults at least)
    assert r["before"] >= r["temp"] // 2**21, r
    assert r["after"] <= r["before"] // 4, r


def test_the_environment_turns_it_off():
    for value in ("0", "off", "False"):
        assert keep_freed_memory({"JITNET_KEEP_FREED_MEMORY": value}) is False

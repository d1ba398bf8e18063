"""keep_freed_memory: a repeated XLA:CPU call stops page-faulting its temp buffer in afresh."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from jitnet_jax.host_memory import keep_freed_memory

# One subprocess (malloc settings are per process): the minor page faults of one call of a program whose
# intermediate (16 MB) is above glibc's mmap threshold, before and after keep_freed_memory.
_CHILD = r"""
import json, resource
import jax, jax.numpy as jnp
from jitnet_jax.host_memory import keep_freed_memory

dn = ("NHWC", "HWIO", "NHWC")
conv = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=dn)
f = jax.jit(lambda x, k: conv(conv(x, k), k).sum())  # a 16 MB intermediate, allocated on every call
x, k = jnp.ones((1, 256, 512, 32)), jnp.ones((3, 3, 32, 32)) / 300

def faults_per_call(n=7):  # the median over n calls: a thread's first run of a buffer may fault once
    counts = []
    for _ in range(n):
        r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        jax.block_until_ready(f(x, k))
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
    return sorted(counts)[n // 2]

before = faults_per_call()
kept = keep_freed_memory({})
after = faults_per_call()
print(json.dumps({"before": before, "after": after, "kept": kept}))
"""


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)
def test_a_repeated_call_no_longer_faults_its_temp_buffer_in():
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["kept"] is True
    # 16 MB of 4 KiB pages is 4,096 faults; glibc maps and unmaps the block on every call
    assert r["before"] > 3000, r
    assert r["after"] < r["before"] / 4, r


def test_the_environment_turns_it_off():
    for value in ("0", "off", "False"):
        assert keep_freed_memory({"JITNET_KEEP_FREED_MEMORY": value}) is False

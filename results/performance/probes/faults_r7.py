"""Round 7: minor page faults and ms per train-step call. argv: H W mode [calls]; mode keep | off |
arena1 (keep + M_ARENA_MAX=1) | sync (keep + synchronous dispatch)."""

import resource
import sys
import time
from pathlib import Path

import jax

from jitnet_jax.host_memory import keep_freed_memory

sys.path.insert(0, str(Path(__file__).parent))
from _setup_r7 import setup  # noqa: E402

from jitnet_jax.student.step import train_step

mode = sys.argv[3]
if mode in ("keep", "arena1", "sync"):
    keep_freed_memory()
if mode == "arena1":
    import ctypes

    print("arena", ctypes.CDLL("libc.so.6").mallopt(-8, 1))
if mode == "sync":
    jax.config.update("jax_cpu_enable_async_dispatch", False)
H, W = int(sys.argv[1]), int(sys.argv[2])
cfg, state, frame, label, weight = setup(H, W)
c = (
    jax.jit(lambda s, f, y, w: train_step(cfg, s, f, y, w), donate_argnums=0)
    .lower(state, frame, label, weight)
    .compile()
)
print("temp MB", c.memory_analysis().temp_size_in_bytes / 2**20)
s = state
for _ in range(3):
    s = c(s, frame, label, weight)[0]
jax.block_until_ready(s)
for _ in range(int(sys.argv[4]) if len(sys.argv) > 4 else 5):
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = time.perf_counter()
    s = c(s, frame, label, weight)[0]
    jax.block_until_ready(s)
    print(
        f"faults {resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0:7d}  ms {1000 * (time.perf_counter() - t):.1f}"
    )

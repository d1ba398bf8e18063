# ruff: noqa  (a measurement probe for docs/performance.md, kept as run)
# Round 8: the whole train step (4 classes, Adam) at H x W with the stride-1 kernel gradients of round 7
# (per-tap matmuls below 32 outputs, else one convolution) or of round 8 (conv._kernel_grad_shifted where
# conv._kernel_grad picks it: matmuls against shifted copies of dy), compiled
# side by side in one process and timed alternately: 5 rounds of 10 steps each. argv: H W.
import sys, time
from pathlib import Path

import jax
import numpy as np

import jitnet_jax.model.conv as C
from jitnet_jax.host_memory import keep_freed_memory
from jitnet_jax.student.step import train_step

sys.path.insert(0, str(Path(__file__).parent))
from _setup_r7 import setup

keep_freed_memory()
H, W = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) > 2 else (180, 320)
cfg, state, frame, label, weight = setup(H, W)
shifted = C._kernel_grad_shifted


def round7(x, dy, kshape, pad):
    if kshape[3] >= C.KERNEL_GRAD_CONV_MIN_CO:
        return C._kernel_grad_conv_unbatched(x, dy, kshape, 1, pad)
    return C._kernel_grad_taps(x, dy, kshape, 1, pad, 1)


progs = {}
for name, fn in (("round7", round7), ("shifted", shifted)):
    C._kernel_grad_shifted = fn
    t = time.process_time()
    progs[name] = (
        jax.jit(lambda s, f, y, w: train_step(cfg, s, f, y, w)).lower(state, frame, label, weight).compile()
    )
    print(f"{name}: compile {time.process_time() - t:.1f} CPU s", flush=True)
C._kernel_grad_shifted = shifted
res = {k: [] for k in progs}
states = {k: progs[k](state, frame, label, weight)[0] for k in progs}
for r in range(5):
    for k, p in progs.items():
        s = states[k]
        jax.block_until_ready(s)
        t = time.perf_counter()
        for _ in range(10):
            s = p(s, frame, label, weight)[0]
        jax.block_until_ready(s)
        res[k].append((time.perf_counter() - t) * 100)
        states[k] = s
for k, v in res.items():
    print(f"{H}x{W} {k:8s} ms/step median {np.median(v):7.1f}  rounds {' '.join(f'{x:.1f}' for x in v)}")

"""Round 7. Whole train step at H x W (argv; 4 classes, Adam) with different kernel-gradient rules: per-call ms and compile s."""

import sys
import time

import jax
import numpy as np

from jitnet_jax.config import ModelConfig, OptimConfig, StudentConfig
from jitnet_jax.host_memory import keep_freed_memory
from jitnet_jax.model import conv as C
from jitnet_jax.student.step import init_state, train_step

keep_freed_memory()
sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from dk_r7 import im2col_slices_dk  # noqa: E402

orig = C._kernel_grad


def rule(name):
    def kg(x, dy, ks, stride, padding, groups):
        kh, kw, ci, co = ks
        if groups > 1 or kh * kw == 1:
            return C._kernel_grad_taps(x, dy, ks, stride, padding, groups)
        m = dy.shape[0] * dy.shape[1] * dy.shape[2]
        if name == "cur":
            return orig(x, dy, ks, stride, padding, groups)
        if name == "taps":
            return C._kernel_grad_taps(x, dy, ks, stride, padding, groups)
        if name == "im2col":
            return im2col_slices_dk(x, dy, ks, stride, padding)
        if name == "bigM":  # the per-tap matmuls once the output has 2048 positions or more
            if m >= 2048:
                return C._kernel_grad_taps(x, dy, ks, stride, padding, groups)
            return orig(x, dy, ks, stride, padding, groups)
        if name == "hybrid":
            if kh * kw * ci <= 128 or m <= 256:
                return im2col_slices_dk(x, dy, ks, stride, padding)
            return C._kernel_grad_taps(x, dy, ks, stride, padding, groups)

    return kg


H, W = int(sys.argv[1]), int(sys.argv[2])
cfg = StudentConfig(model=ModelConfig(num_classes=4), optim=OptimConfig("adam", lr=1e-3))
rng = np.random.default_rng(0)
frame = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
label = rng.integers(0, 4, (H, W)).astype(np.int32)
weight = np.ones((H, W), np.float32)
res = {}
names = sys.argv[3:] or ["cur", "taps", "im2col", "hybrid"]
steps = {}
for name in names:
    C._kernel_grad = rule(name)
    state = init_state(jax.random.key(0), cfg, (H, W))
    t = time.process_time()
    c = (
        jax.jit(lambda s, f, y, w: train_step(cfg, s, f, y, w), donate_argnums=0)
        .lower(state, frame, label, weight)
        .compile()
    )
    comp = time.process_time() - t
    nf = c.as_text().count(" fusion(")
    steps[name] = [c, state, comp, nf]
C._kernel_grad = orig
times = {n: [] for n in names}
for _rnd in range(3):
    for name in names:
        c, s, comp, nf = steps[name]
        for _ in range(3):
            s = c(s, frame, label, weight)[0]
        jax.block_until_ready(s)
        ts = []
        for _ in range(10):
            t = time.perf_counter()
            s = c(s, frame, label, weight)[0]
            jax.block_until_ready(s)
            ts.append(time.perf_counter() - t)
        steps[name][1] = s
        times[name].append(1000 * sorted(ts)[5])
for name in names:
    print(
        f"{name:8s} compile {steps[name][2]:6.1f} CPU s  fusions {steps[name][3]:4d}  step ms "
        + " / ".join(f"{t:.1f}" for t in times[name])
    )

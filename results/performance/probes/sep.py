# ruff: noqa  (a measurement probe for docs/performance.md, kept as run)
"""Defect 6: separable JITNet train step inside a fori_loop (3 steps), depthwise via nn.Conv (old) vs the project's Conv (new)."""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, "/tmp/perf")  # holds old_jitnet.py = `git show 1abcc45:jitnet_jax/model/jitnet.py`
import old_jitnet

from jitnet_jax.config import ModelConfig
from jitnet_jax.model import jitnet as new_jitnet

H, W = 90, 160
cfg = ModelConfig(num_classes=4, separable=True, conv_backward="matmul")
v = new_jitnet.init_variables(cfg, jax.random.key(0), (H, W))
x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (1, H, W, 3)), jnp.uint8)
t = jnp.asarray(np.random.default_rng(1).normal(size=(1, H, W, 4)), jnp.float32)
for name, mod in (("old nn.Conv depthwise", old_jitnet), ("new project Conv depthwise", new_jitnet)):

    def loss(p):
        y, _ = mod.JITNet(cfg).apply(
            {"params": p, "batch_stats": v["batch_stats"]}, x, train=True, mutable=["batch_stats"]
        )
        return jnp.sum(y * t)

    def run(p):
        return jax.lax.fori_loop(
            0, 3, lambda i, p: jax.tree_util.tree_map(lambda a, g: a - 1e-6 * g, p, jax.grad(loss)(p)), p
        )

    f = jax.jit(run)
    jax.block_until_ready(f(v["params"]))
    ts = []
    for _ in range(5):
        c = time.process_time()
        jax.block_until_ready(f(v["params"]))
        ts.append(time.process_time() - c)
    print(f"{name}: {1e3 * min(ts) / 3:.1f} ms CPU per step (best of 5, 3 steps each)", flush=True)

# ruff: noqa  (a measurement probe for docs/performance.md, kept as run)
import sys
import time

import jax
import jax.numpy as jnp

from jitnet_jax.config import *
from jitnet_jax.student.step import init_state, train_step

H, W = 48, 64
cfg = StudentConfig(
    model=ModelConfig(num_classes=4, conv_backward=sys.argv[1] if len(sys.argv) > 1 else "auto"),
    optim=OptimConfig(),
)
st = jax.eval_shape(lambda: init_state(jax.random.key(0), cfg, (H, W)))
fr = jax.ShapeDtypeStruct((H, W, 3), jnp.uint8)
lb = jax.ShapeDtypeStruct((H, W), jnp.int32)
w = jax.ShapeDtypeStruct((H, W), jnp.float32)
t = time.perf_counter()
lo = jax.jit(lambda s, f, y, w: train_step(cfg, s, f, y, w)).lower(st, fr, lb, w)
t1 = time.perf_counter()
c = lo.compile()
t2 = time.perf_counter()
print(
    "train_step lower %.1fs compile %.1fs" % (t1 - t, t2 - t1),
    "hlo ops",
    lo.as_text().count("\n"),
    flush=True,
)


def loop(s, f, y, w):
    def body(i, s):
        return train_step(cfg, s, f, y, w)[0]

    return jax.lax.fori_loop(0, 3, body, s)


t = time.perf_counter()
lo = jax.jit(loop).lower(st, fr, lb, w)
t1 = time.perf_counter()
c = lo.compile()
t2 = time.perf_counter()
print("loop lower %.1fs compile %.1fs" % (t1 - t, t2 - t1), flush=True)

# ruff: noqa  (a measurement probe for docs/performance.md, kept as run)
# python results/performance/probes/replay_update.py H W B: replay update (network vmap-ed over B frames), 3 in a fori_loop
import sys, time, numpy as np, jax, jax.numpy as jnp
from jitnet_jax.config import ModelConfig, OptimConfig, StudentConfig
from jitnet_jax.student.step import init_state, loss_and_grads_batch, apply_grads

H, W, B = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
cfg = StudentConfig(model=ModelConfig(num_classes=4), optim=OptimConfig(name="sgd", lr=0.01))
st = init_state(jax.random.key(0), cfg, (H, W))
rng = np.random.default_rng(0)
fr = jnp.asarray(rng.integers(0, 256, (B, H, W, 3), dtype=np.uint8))
y = jnp.asarray(rng.integers(0, 4, (B, H, W)), jnp.int32)
w = jnp.ones((B, H, W), jnp.float32)
m = jnp.ones((B,), bool)


def loop(s):
    def body(i, s):
        g, ns, aux = loss_and_grads_batch(cfg, s, fr, y, w, m)
        return apply_grads(cfg, s, g, ns)

    return jax.lax.fori_loop(0, 3 + 0 * s.step, body, s)


p = time.process_time()
c = jax.jit(loop).lower(st).compile()
ct = time.process_time() - p
jax.block_until_ready(c(st))
ts = []
for _ in range(5):
    t = time.perf_counter()
    jax.block_until_ready(c(st))
    ts.append((time.perf_counter() - t) / 3 * 1e3)
print(
    sys.modules["jitnet_jax"].__file__,
    "B=%d compile cpu %.1fs, update median %.1f ms min %.1f" % (B, ct, np.median(ts), min(ts)),
)

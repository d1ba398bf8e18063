# ruff: noqa  (a measurement probe for docs/performance.md, kept as run)
# Round 8: how chaotic is the oracle test's training? 5 jitted SGD steps of test_baselines' setting from the
# initial parameters scaled by (1 + eps); prints the losses. Run from the repo root.
import jax, numpy as np, sys

sys.path.insert(0, "tests")
import test_baselines as tb
from jitnet_jax.student.step import init_state, jit_train_step
from jitnet_jax.eval.baselines import oracle_examples

cfg = tb.SGD_CFG
frames, labels, weights = oracle_examples(tb.stream(8), every=8)
state = init_state(jax.random.key(0), cfg, (tb.H, tb.W))
step = jit_train_step(cfg)
w = np.where(weights[0] > 1, 10.0, np.where(weights[0] > 0, 1.0, 0.0)).astype(np.float32)
for eps in (0.0, 1e-7, 1e-6):
    ref = jax.tree_util.tree_map(
        lambda x: jax.numpy.array(x) * (1 + eps) if x.dtype == np.float32 else jax.numpy.array(x), state
    )
    ls = []
    for _ in range(5):
        ref, m = step(ref, frames[0], labels[0].astype(np.int32), w)
        ls.append(float(m["loss"]))
    print(eps, np.round(ls, 6))

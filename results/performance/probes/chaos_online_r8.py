# ruff: noqa  (a measurement probe for docs/performance.md, kept as run)
# Round 8: test_online's compiled run (300 frames, 48x64) with its initial parameters perturbed by 1e-7 (relative,
# k > 0), at three a_thr: teacher frames, frames that passed, largest stride, stream mIoU. Run from the repo root.
import dataclasses, jax, jax.numpy as jnp, numpy as np, sys

sys.path.insert(0, "tests")
from test_online import CFG
from jitnet_jax.data.synthetic import SyntheticStream
from jitnet_jax.online.runner import run_stream
from jitnet_jax.online.engine import new_online_state
from jitnet_jax.student.metrics import iou_from_counts

s = SyntheticStream(num_frames=300, height=48, width=64, seed=3)
for a in (0.8, 0.7, 0.6):
    cfg = dataclasses.replace(CFG, a_thr=a)
    for k in range(6):
        st = new_online_state(cfg, jax.random.key(0), (48, 64))
        noise = jax.random.key(100 + k)
        leaves, tdef = jax.tree_util.tree_flatten(st.student.params)
        leaves = [
            l * (1 + 1e-7 * jax.random.normal(jax.random.fold_in(noise, i), l.shape)) if k else l
            for i, l in enumerate(leaves)
        ]
        st = (
            st._replace(student=st.student._replace(params=jax.tree_util.tree_unflatten(tdef, leaves)))
            if hasattr(st, "_replace")
            else dataclasses.replace(
                st, student=dataclasses.replace(st.student, params=jax.tree_util.tree_unflatten(tdef, leaves))
            )
        )
        r = run_stream(s, cfg, state=st, progress=False).per_frame
        t = np.nonzero(r["teacher"])[0]
        m = iou_from_counts(r["tp"].sum(0), r["fp"].sum(0), r["fn"].sum(0))["miou"]
        print(
            a,
            k,
            "teacher",
            len(t),
            "passed",
            int((r["acc"][t] > a).sum()),
            "dmax",
            r["delta"].max(),
            "miou %.3f" % m,
            flush=True,
        )

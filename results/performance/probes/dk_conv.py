# ruff: noqa  (a measurement probe for docs/performance.md, kept as run)
# Kernel gradient of one conv layer inside a fori_loop (3 iterations): per-tap matmuls vs one convolution
# (jitnet_jax.model.conv._kernel_grad_conv). Prints CPU ms per iteration and compile CPU seconds.
import time, sys, numpy as np, jax, jax.numpy as jnp
import jitnet_jax.model.conv as C

layers = [
    ((1, 180, 320, 3), (3, 3, 3, 8), 2),
    ((1, 90, 160, 8), (3, 3, 8, 32), 2),
    ((1, 45, 80, 32), (3, 3, 32, 64), 2),
    ((1, 23, 40, 64), (1, 3, 64, 64), 1),
    ((1, 23, 40, 64), (3, 3, 64, 64), 2),
    ((1, 12, 20, 64), (3, 3, 64, 128), 2),
    ((1, 6, 10, 128), (3, 3, 128, 128), 1),
    ((1, 12, 20, 192), (3, 3, 192, 64), 1),
    ((1, 23, 40, 128), (3, 3, 128, 32), 1),
    ((1, 23, 40, 32), (1, 3, 32, 32), 1),
    ((1, 90, 160, 32), (3, 3, 32, 32), 1),
    ((1, 90, 160, 32), (3, 3, 32, 16), 1),
    ((1, 90, 160, 32), (3, 3, 32, 8), 1),
]


def pertap(x, dy, kshape, s, pad):
    old = C.KERNEL_GRAD_CONV_MIN_CO
    C.KERNEL_GRAD_CONV_MIN_CO = 10**9
    try:
        return C._kernel_grad(x, dy, kshape, s, pad, 1)
    finally:
        C.KERNEL_GRAD_CONV_MIN_CO = old


def best(fn, *a, n=7):
    jax.block_until_ready(fn(*a))
    ts = []
    for _ in range(n):
        p = time.process_time()
        jax.block_until_ready(fn(*a))
        ts.append(time.process_time() - p)
    return min(ts) * 1e3


for xs, kshape, s in layers:
    r = np.random.default_rng(0)
    x = jnp.asarray(r.normal(size=xs), jnp.float32)
    ho, wo = -(-xs[1] // s), -(-xs[2] // s)
    dy = jnp.asarray(r.normal(size=(1, ho, wo, kshape[3])), jnp.float32)
    pad = (
        C.same_padding(xs[1:3], kshape[:2], s)
        if s == 1
        else tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kshape[:2])
    )
    res = {}
    for name, f in [("tap", pertap), ("conv", C._kernel_grad_conv)]:

        def loop(x, dy, f=f):
            return jax.lax.fori_loop(
                0,
                3,
                lambda i, c: c + f(x + c * 1e-9, dy + c * 1e-9, kshape, s, pad).sum() * 1e-9,
                jnp.float32(0),
            )

        t = time.process_time()
        c = jax.jit(loop).lower(x, dy).compile()
        ct = time.process_time() - t
        res[name] = "cpu %.2f ms compile %.2f s" % (best(c, x, dy) / 3, ct)
    print(xs, kshape, s, res, flush=True)

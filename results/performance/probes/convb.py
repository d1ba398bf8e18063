# ruff: noqa  (a measurement probe for docs/performance.md, kept as run)
# "cur" is the conv backward of the checked-out conv.py (the numbers in docs/performance.md "before" were taken at 1abcc45)
import time

import jax
import jax.numpy as jnp
import numpy as np

from jitnet_jax.model.conv import _bwd

DN = ("NHWC", "HWIO", "NHWC")


def fwd(x, k, s, p):
    return jax.lax.conv_general_dilated(x, k, (s, s), p, dimension_numbers=DN)


def xla_bwd(s, p, x, k, dy):
    return jax.vjp(lambda a, b: fwd(a, b, s, p), x, k)[1](dy)


def cur_bwd(s, p, x, k, dy):
    return _bwd(s, p, (x, k), dy)


def flip_dx(s, p, x, k, dy):
    kh, kw = k.shape[:2]
    (pt, pb), (pl, pr) = p
    kt = jnp.flip(k, (0, 1)).transpose(0, 1, 3, 2)
    return fwd(dy, kt, 1, ((kh - 1 - pt, kh - 1 - pb + 0), (kw - 1 - pl, kw - 1 - pr)))


def im2col_dk(s, p, x, k, dy):
    kh, kw = k.shape[:2]
    (pt, pb), (pl, pr) = p
    n, ho, wo, co = dy.shape
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    cols = jnp.concatenate([xp[:, i : i + ho, j : j + wo, :] for i in range(kh) for j in range(kw)], -1)
    dk = cols.reshape(-1, cols.shape[-1]).T @ dy.reshape(-1, co)
    return dk.reshape(kh, kw, x.shape[-1], co)


def dk9(s, p, x, k, dy):
    return cur_bwd(s, p, x, k, dy)[1]


def new_bwd(s, p, x, k, dy):
    return flip_dx(s, p, x, k, dy), im2col_dk(s, p, x, k, dy)


def new_bwd2(s, p, x, k, dy):
    return flip_dx(s, p, x, k, dy), dk9(s, p, x, k, dy)


def best(fn, *a, n=15):
    jax.block_until_ready(fn(*a))
    ts = []
    for _ in range(n):
        t = time.process_time()
        jax.block_until_ready(fn(*a))
        ts.append(time.process_time() - t)
    return min(ts) * 1e3


shapes = [((1, 90, 160, 32), 32), ((1, 90, 160, 32), 8), ((1, 23, 40, 128), 32), ((1, 12, 20, 192), 64)]
for xs, co in shapes:
    r = np.random.default_rng(0)
    x = jnp.asarray(r.normal(size=xs), jnp.float32)
    k = jnp.asarray(r.normal(size=(3, 3, xs[-1], co)), jnp.float32) * 0.1
    p = ((1, 1), (1, 1))
    dy = jnp.asarray(r.normal(size=xs[:3] + (co,)), jnp.float32)
    # check
    a = xla_bwd(1, p, x, k, dy)
    b = new_bwd(1, p, x, k, dy)
    print(xs, co, "maxdiff", float(jnp.abs(a[0] - b[0]).max()), float(jnp.abs(a[1] - b[1]).max()))
    res = {}
    for name, f in [
        ("fwd", lambda s, p, x, k, dy: fwd(x, k, s, p)),
        ("xla", xla_bwd),
        ("cur", cur_bwd),
        ("new", new_bwd),
        ("flipdx+dk9", new_bwd2),
        ("im2col_dk", im2col_dk),
        ("dk9", dk9),
        ("flip_dx", flip_dx),
    ]:
        j = jax.jit(lambda x, k, dy, f=f: f(1, p, x, k, dy))

        def loop(x, k, dy, f=f):
            def body(i, c):
                out = f(1, p, x + c * 1e-6, k + c * 1e-6, dy + c * 1e-6)
                return c + sum(l.sum() for l in jax.tree_util.tree_leaves(out)) * 1e-9

            return jax.lax.fori_loop(0, 3, body, jnp.float32(0))

        jl = jax.jit(loop)
        res[name] = "%.2f" % (best(jl, x, k, dy) / 3)
    print(res, flush=True)

# ruff: noqa  (a measurement probe for docs/performance.md, kept as run)
import time, numpy as np, jax, jax.numpy as jnp


def pads(x):
    return jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))


def a(x, dy):
    xp = pads(x)
    n, ho, wo, co = dy.shape
    d = dy.reshape(-1, co)
    return jnp.stack(
        [
            jnp.stack([xp[:, i : i + ho, j : j + wo, :].reshape(-1, x.shape[-1]).T @ d for j in range(3)])
            for i in range(3)
        ]
    )


def b(x, dy):
    xp = pads(x)
    n, ho, wo, co = dy.shape
    d = dy.reshape(-1, co)
    return jnp.stack(
        [
            jnp.stack([(d.T @ xp[:, i : i + ho, j : j + wo, :].reshape(-1, x.shape[-1])).T for j in range(3)])
            for i in range(3)
        ]
    )


def e(x, dy):
    xp = pads(x)
    n, ho, wo, co = dy.shape
    d = dy.reshape(-1, co)
    ci = x.shape[-1]
    rows = []
    for i in range(3):
        cat = jnp.concatenate([xp[:, i : i + ho, j : j + wo, :] for j in range(3)], -1).reshape(-1, 3 * ci)
        rows.append((cat.T @ d).reshape(3, ci, co))
    return jnp.stack(rows)


def f(x, dy):  # all taps: one dot_general over H-shifted rows, W handled by concat
    xp = pads(x)
    n, ho, wo, co = dy.shape
    ci = x.shape[-1]
    cat = jnp.concatenate([xp[:, :, j : j + wo, :] for j in range(3)], -1)  # [n,hp,wo,3ci]
    return jnp.stack(
        [jnp.einsum("nhwc,nhwd->cd", cat[:, i : i + ho], dy).reshape(3, ci, co) for i in range(3)]
    )


def best(fn, *a_, n=10):
    jax.block_until_ready(fn(*a_))
    ts = []
    for _ in range(n):
        t = time.process_time()
        jax.block_until_ready(fn(*a_))
        ts.append(time.process_time() - t)
    return min(ts) * 1e3


for xs, co in [((1, 90, 160, 32), 32), ((1, 90, 160, 32), 8), ((1, 23, 40, 128), 32)]:
    r = np.random.default_rng(0)
    x = jnp.asarray(r.normal(size=xs), jnp.float32)
    dy = jnp.asarray(r.normal(size=xs[:3] + (co,)), jnp.float32)
    ref = a(x, dy)
    res = {}
    for name, fn in [("a", a), ("b", b), ("e", e), ("f", f)]:
        assert float(jnp.abs(fn(x, dy) - ref).max()) < 1e-2 * float(jnp.abs(ref).max()), name

        def loop(x, dy, fn=fn):
            return jax.lax.fori_loop(
                0, 3, lambda i, c: c + fn(x + c * 1e-9, dy + c * 1e-9).sum() * 1e-9, jnp.float32(0)
            )

        res[name] = "%.2f" % (best(jax.jit(loop), x, dy) / 3)
    print(xs, co, res, flush=True)

# ruff: noqa  (a measurement probe for docs/performance.md, kept as run)
# Round 8: the kernel gradient of one stride-1 conv layer inside a fori_loop (3 iterations), three ways:
#   tap   - per-tap strided slices of the padded input against dy (kh*kw matmuls);
#   conv  - one convolution (jitnet_jax.model.conv._kernel_grad_conv);
#   shift - ONE matmul: the padded input [N*Hp*Wp, Ci] against dy padded kh*kw times, each copy shifted
#           by its tap, side by side on the channel axis [N*Hp*Wp, kh*kw*Co].
# Prints wall ms per iteration (both threads), CPU ms, compile CPU seconds. argv: scale (1 = the 180x320 net,
# 2 = 360x640, 4 = 720x1280).
import sys, time, numpy as np, jax, jax.numpy as jnp
import jitnet_jax.model.conv as C

S = int(sys.argv[1]) if len(sys.argv) > 1 else 1


def sz(h, w):
    return -(-h * S // 1), -(-w * S // 1)


layers_all = [  # (input NHWC, kernel, stride 1): the stride-1 layers of JITNet m=0.5 at 180x320, times S
    ((1, *sz(23, 40), 64), (1, 3, 64, 64)),
    ((1, *sz(6, 10), 128), (3, 3, 128, 128)),
    ((1, *sz(12, 20), 192), (3, 3, 192, 64)),
    ((1, *sz(23, 40), 128), (3, 3, 128, 32)),
    ((1, *sz(23, 40), 32), (1, 3, 32, 32)),
    ((1, *sz(90, 160), 32), (3, 3, 32, 32)),
    ((1, *sz(90, 160), 32), (3, 3, 32, 8)),
]

ONLY = sys.argv[2] if len(sys.argv) > 2 else ""
layers = [l for l in layers_all if ONLY in str(l)]


def pertap(x, dy, kshape, pad):
    return C._kernel_grad_taps(x, dy, kshape, 1, pad, 1)


def conv(x, dy, kshape, pad):
    return C._kernel_grad_conv(x, dy, kshape, 1, pad)


def shift(x, dy, kshape, pad):
    """One matmul against kh*kw shifted copies of dy (the probe's first version of it, run for the table, was
    moved as it stood into the library)."""
    return C._kernel_grad_shifted(x, dy, kshape, pad)


def shiftw(x, dy, kshape, pad):
    """Shift dy along W only (kw copies); per tap row i, a contiguous row slab of the padded input."""
    kh, kw, ci, co = kshape
    (pt, pb), (pl, pr) = pad
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    wp = xp.shape[2]
    ho, wo = dy.shape[1], dy.shape[2]
    d = jnp.concatenate([jnp.pad(dy, ((0, 0), (0, 0), (j, wp - wo - j), (0, 0))) for j in range(kw)], axis=-1)
    d = d.reshape(-1, kw * co)
    rows = [
        jax.lax.dot_general(xp[:, i : i + ho].reshape(-1, ci), d, (((0,), (0,)), ((), ()))).reshape(
            ci, kw, co
        )
        for i in range(kh)
    ]
    return jnp.stack(rows).transpose(0, 2, 1, 3)


def best(fn, *a, n=7):
    jax.block_until_ready(fn(*a))
    ws, cs = [], []
    for _ in range(n):
        w, p = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(*a))
        ws.append(time.perf_counter() - w)
        cs.append(time.process_time() - p)
    return float(np.median(ws)) * 1e3, float(np.median(cs)) * 1e3


for xs, kshape in layers:
    r = np.random.default_rng(0)
    x = jnp.asarray(r.normal(size=xs), jnp.float32)
    dy = jnp.asarray(r.normal(size=(1, xs[1], xs[2], kshape[3])), jnp.float32)
    pad = C.same_padding(xs[1:3], kshape[:2], 1)
    ref = np.asarray(pertap(x, dy, kshape, pad))
    out = {}
    for name, f in (("tap", pertap), ("conv", conv), ("shift", shift), ("shiftw", shiftw)):
        err = float(np.max(np.abs(np.asarray(jax.jit(f, static_argnums=(2, 3))(x, dy, kshape, pad)) - ref)))

        def loop(x, dy, f=f):
            return jax.lax.fori_loop(
                0,
                3,
                lambda i, c: c + f(x + c * 1e-9, dy + c * 1e-9, kshape, pad).sum() * 1e-9,
                jnp.float32(0),
            )

        t = time.process_time()
        c = jax.jit(loop).lower(x, dy).compile()
        ct = time.process_time() - t
        w, cp = best(c, x, dy)
        out[name] = f"{w / 3:7.2f} ms wall {cp / 3:7.2f} cpu  compile {ct:5.2f}s err {err:.1e}"
    print(xs, kshape, flush=True)
    for k, v in out.items():
        print(f"   {k:5s} {v}", flush=True)

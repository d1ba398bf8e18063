"""Round 7. Kernel-gradient variants for JITNet's layers on this JAX/XLA:CPU; median ms per evaluation in a fori_loop."""

import functools
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jitnet_jax.host_memory import keep_freed_memory
from jitnet_jax.model import conv as C

keep_freed_memory()
DN = ("NHWC", "HWIO", "NHWC")


def xla_dk(x, dy, ks, stride, pad):
    def f(k):
        return jax.lax.conv_general_dilated(x, k, (stride, stride), pad, dimension_numbers=DN)

    return jax.vjp(f, jnp.zeros(ks, x.dtype))[1](dy)[0]


def im2col_dk(x, dy, ks, stride, pad):
    kh, kw, ci, co = ks
    p = jax.lax.conv_general_dilated_patches(x, (kh, kw), (stride, stride), pad, dimension_numbers=DN)
    # p: [N, Ho, Wo, ci*kh*kw] with feature order (ci, kh, kw)
    m = p.reshape(-1, p.shape[-1])
    r = m.T @ dy.reshape(-1, co)  # [ci*kh*kw, co]
    return r.reshape(ci, kh, kw, co).transpose(1, 2, 0, 3)


def _im2col(x, dy, ks, stride, pad):
    """``[N*Ho*Wo, kh*kw*Ci]``: the strided input slices of every tap side by side."""
    kh, kw, ci, co = ks
    (pt, pb), (pl, pr) = pad
    n, ho, wo, _ = dy.shape
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    hs, ws = (ho - 1) * stride + 1, (wo - 1) * stride + 1
    cols = [xp[:, i : i + hs : stride, j : j + ws : stride, :] for i in range(kh) for j in range(kw)]
    return jnp.concatenate(cols, -1).reshape(-1, kh * kw * ci)


def im2col_slices_dk(x, dy, ks, stride, pad):
    m = _im2col(x, dy, ks, stride, pad)
    return (m.T @ dy.reshape(-1, ks[3])).reshape(ks)


def dyT_im2col_dk(x, dy, ks, stride, pad):
    m = _im2col(x, dy, ks, stride, pad)
    return (dy.reshape(-1, ks[3]).T @ m).T.reshape(ks)


VARIANTS = {
    "conv(cur)": lambda x, dy, ks, s, p: C._kernel_grad_conv(x, dy, ks, s, p),
    "taps": lambda x, dy, ks, s, p: C._kernel_grad_taps(x, dy, ks, s, p, 1),
    "xla": xla_dk,
    "patches": im2col_dk,
    "im2col": im2col_slices_dk,
    "dyT_im2col": dyT_im2col_dk,
}
LAYERS = {  # name: x shape, kernel shape, stride
    "decoder_conv2 90x160 32->32": ((1, 90, 160, 32), (3, 3, 32, 32), 1),
    "decoder_conv1 90x160 8->... ": ((1, 90, 160, 32), (3, 3, 32, 8), 1),
    "conv2 s2 8->32": ((1, 90, 160, 8), (3, 3, 8, 32), 2),
    "enc0_down s2 32->64": ((1, 45, 80, 32), (3, 3, 32, 64), 2),
    "dec2_unit0 128->32": ((1, 23, 40, 128), (3, 3, 128, 32), 1),
    "dec1_unit0 192->64": ((1, 12, 20, 192), (3, 3, 192, 64), 1),
    "dec0_unit0 128->128": ((1, 6, 10, 128), (3, 3, 128, 128), 1),
    "conv1 s2 3->8": ((1, 180, 320, 3), (3, 3, 3, 8), 2),
}


def main():
    def bench(fn, x, dy, reps=15, iters=4):
        g = jax.jit(
            lambda x, dy: jax.lax.fori_loop(
                0, iters, lambda i, a: a + fn(x + a.sum() * 0, dy), jnp.zeros(fn(x, dy).shape)
            )
        )
        jax.block_until_ready(g(x, dy))
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            jax.block_until_ready(g(x, dy))
            ts.append(time.perf_counter() - t)
        return 1000 * sorted(ts)[reps // 2] / iters

    rng = np.random.default_rng(0)
    only = sys.argv[1:] or list(VARIANTS)
    print("layer".ljust(30) + "".join(v.rjust(12) for v in only))
    for name, (xs, ks, s) in LAYERS.items():
        pad = (
            C.same_padding(xs[1:3], ks[:2], s)
            if s == 1
            else ((0, 1), (0, 1))
            if False
            else tuple(((k - 1) // 2, (k - 1) - (k - 1) // 2) for k in ks[:2])
        )
        x = jnp.asarray(rng.standard_normal(xs), jnp.float32)
        ho = (xs[1] + pad[0][0] + pad[0][1] - ks[0]) // s + 1
        wo = (xs[2] + pad[1][0] + pad[1][1] - ks[1]) // s + 1
        dy = jnp.asarray(rng.standard_normal((1, ho, wo, ks[3])), jnp.float32)
        ref = np.asarray(VARIANTS["taps"](x, dy, ks, s, pad))
        row = name.ljust(30)
        for v in only:
            fn = functools.partial(
                lambda x, dy, v, ks, s, pad: VARIANTS[v](x, dy, ks, s, pad), v=v, ks=ks, s=s, pad=pad
            )
            out = np.asarray(jax.jit(fn)(x, dy))
            err = np.abs(out - ref).max() / (np.abs(ref).max() + 1e-9)
            row += (f"{bench(fn, x, dy):10.2f}" + ("!" if err > 1e-4 else " ")).rjust(12)
        print(row, flush=True)


if __name__ == "__main__":
    main()

"""2-D convolution whose backward pass is written as matmuls (``custom_vjp``).

Why: XLA:CPU runs the gradient convolutions that JAX's autodiff emits 5-30x slower when they sit
inside a loop body (``lax.scan`` / ``while_loop`` / ``cond``; jax-ml/jax#12868), which is exactly where
the online loop trains. Measured here for a 3x3, 32->64 conv on a 90x160 map: kernel gradient 3.8 ms
unrolled vs 110 ms in a loop. This module computes
  * the kernel gradient as ``kh * kw`` matmuls of strided input slices with the output gradient;
  * the input gradient as ``kh * kw`` matmuls scattered (strided ``.at[].add``) into the padded input,
so the loop body only contains forward convs, matmuls and slices, which XLA:CPU runs at full speed.
Numerically it matches ``jax.vjp`` of ``lax.conv_general_dilated`` (see ``tests/test_conv.py``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_DN = ("NHWC", "HWIO", "NHWC")

Padding = tuple[tuple[int, int], tuple[int, int]]


def same_padding(size: tuple[int, int], kernel: tuple[int, int], stride: int) -> Padding:
    """TF 'SAME' padding (extra pixel at the end) for an input of ``size``."""
    pads = []
    for n, k in zip(size, kernel):
        out = -(-n // stride)
        total = max((out - 1) * stride + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return (pads[0], pads[1])


def _forward(x: jnp.ndarray, kernel: jnp.ndarray, stride: int, padding: Padding) -> jnp.ndarray:
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), padding, dimension_numbers=_DN)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x: jnp.ndarray, kernel: jnp.ndarray, stride: int, padding: Padding) -> jnp.ndarray:
    """Convolution of ``x`` float ``[N, H, W, Ci]`` with ``kernel`` ``[kh, kw, Ci, Co]``.

    Args:
      stride: the same stride along H and W.
      padding: explicit ``((top, bottom), (left, right))``.
    Returns:
      ``[N, Ho, Wo, Co]`` with ``Ho = (H + top + bottom - kh) // stride + 1``.
    """
    return _forward(x, kernel, stride, padding)


def _fwd(x: jnp.ndarray, kernel: jnp.ndarray, stride: int, padding: Padding):
    return _forward(x, kernel, stride, padding), (x, kernel)


def _bwd(stride: int, padding: Padding, res, dy: jnp.ndarray):
    x, kernel = res
    kh, kw = kernel.shape[0], kernel.shape[1]
    (pt, pb), (pl, pr) = padding
    n, ho, wo, co = dy.shape
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    hs, ws = (ho - 1) * stride + 1, (wo - 1) * stride + 1
    dy2 = dy.reshape(-1, co)
    dk_rows = []
    dxp = jnp.zeros(xp.shape, dy.dtype)
    for i in range(kh):
        row = []
        for j in range(kw):
            patch = xp[:, i : i + hs : stride, j : j + ws : stride, :]
            row.append(patch.reshape(-1, patch.shape[-1]).T @ dy2)
            contrib = (dy2 @ kernel[i, j].T).reshape(n, ho, wo, -1)
            dxp = dxp.at[:, i : i + hs : stride, j : j + ws : stride, :].add(contrib)
        dk_rows.append(jnp.stack(row))
    dk = jnp.stack(dk_rows).astype(kernel.dtype)
    h, w = x.shape[1], x.shape[2]
    dx = dxp[:, pt : pt + h, pl : pl + w, :].astype(x.dtype)
    return dx, dk


conv2d.defvjp(_fwd, _bwd)

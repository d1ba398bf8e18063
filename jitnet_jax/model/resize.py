"""Bilinear resizing with ``align_corners=True`` semantics (as ``tf.image.resize_images`` in the
authors' code), at linear cost.

Each axis is resized separately: output index ``o`` reads the two input rows ``lo[o]`` and
``hi[o] = lo[o] + 1`` around ``pos = o * (in - 1) / (out - 1)`` and blends them with
``frac = pos - lo`` (two static gathers and a lerp, ``O(out)`` work per row). The gradient is written
as a gather too (``custom_vjp``): every input index collects its at most ``K`` contributions from a
static ``[in, K]`` table, where autodiff would emit a scatter-add that XLA:CPU runs ~40x slower.

Both directions cost ``O(H * W * C)``; the dense interpolation matrices used before cost
``O(out_h * in_h * W * C)``, which made the two last upsamplings of JITNet dominate its FLOPs at 720p.
Shapes are static: the index tables are built in numpy at trace time.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=256)
def interp_taps(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two-tap align-corners weights for resizing one axis from ``in_size`` to ``out_size``.

    Returns:
      ``(lo, hi, frac)``: int32 ``[out_size]`` input indices and float32 ``[out_size]`` weights;
      output ``o`` is ``(1 - frac[o]) * x[lo[o]] + frac[o] * x[hi[o]]``.
    """
    if out_size < 1 or in_size < 1:
        raise ValueError(f"resize sizes must be positive, got {in_size} -> {out_size}")
    if in_size == 1 or out_size == 1:
        zeros = np.zeros(out_size, np.int32)
        return zeros, zeros, np.zeros(out_size, np.float32)
    pos = np.arange(out_size, dtype=np.float64) * (in_size - 1) / (out_size - 1)
    lo = np.clip(np.floor(pos).astype(np.int64), 0, in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = (pos - lo).astype(np.float32)
    return lo.astype(np.int32), hi.astype(np.int32), frac


@functools.lru_cache(maxsize=256)
def transpose_taps(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The transpose of :func:`interp_taps` as a gather table.

    Returns:
      ``(idx, w)``: int32 and float32 ``[in_size, K]``; the gradient of input ``i`` is
      ``sum_k w[i, k] * dy[idx[i, k]]`` (unused slots have weight 0 and index 0).
    """
    lo, hi, frac = interp_taps(out_size, in_size)
    contrib: list[list[tuple[int, float]]] = [[] for _ in range(in_size)]
    for o in range(out_size):
        contrib[lo[o]].append((o, 1.0 - float(frac[o])))
        contrib[hi[o]].append((o, float(frac[o])))
    k = max(len(c) for c in contrib)
    idx = np.zeros((in_size, k), np.int32)
    w = np.zeros((in_size, k), np.float32)
    for i, c in enumerate(contrib):
        for j, (o, wt) in enumerate(c):
            idx[i, j], w[i, j] = o, wt
    return idx, w


def interp_matrix(out_size: int, in_size: int) -> np.ndarray:
    """float32 ``[out_size, in_size]`` dense form of :func:`interp_taps` (for tests and reference)."""
    lo, hi, frac = interp_taps(out_size, in_size)
    m = np.zeros((out_size, in_size), np.float32)
    np.add.at(m, (np.arange(out_size), lo), 1.0 - frac)
    np.add.at(m, (np.arange(out_size), hi), frac)
    return m


def _along(v: np.ndarray, axis: int, ndim: int, dtype: jnp.dtype) -> jnp.ndarray:
    """``v`` ``[n]`` as a constant broadcastable along ``axis`` of an ``ndim`` array."""
    shape = [1] * ndim
    shape[axis] = v.shape[0]
    return jnp.asarray(v.reshape(shape), dtype)


def _take(x: jnp.ndarray, idx: np.ndarray, axis: int) -> jnp.ndarray:
    """``x`` gathered at the static, in-range indices ``idx`` along ``axis``: a bare gather.

    ``mode="clip"`` (a no-op for in-range indices) keeps ``jnp.take`` from emitting its negative-index
    wrap-around and out-of-range masking; XLA compiles those as separate small kernels, ~130 of them in
    the online loop's program (a measurable share of its compile time, docs/performance.md).
    """
    return jnp.take(x, jnp.asarray(idx), axis=axis, mode="clip")


def _resize_axis_fwd_impl(x: jnp.ndarray, out_size: int, axis: int) -> jnp.ndarray:
    lo, hi, frac = interp_taps(out_size, x.shape[axis])
    a = _take(x, lo, axis)
    if not frac.any():
        return a
    b = _take(x, hi, axis)
    return a + (b - a) * _along(frac, axis, x.ndim, x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def resize_axis(x: jnp.ndarray, out_size: int, axis: int) -> jnp.ndarray:
    """Align-corners linear resize of ``x`` along ``axis`` to ``out_size`` (same dtype)."""
    return _resize_axis_fwd_impl(x, out_size, axis)


def _fwd(x: jnp.ndarray, out_size: int, axis: int) -> tuple[jnp.ndarray, int]:
    return _resize_axis_fwd_impl(x, out_size, axis), x.shape[axis]


def _bwd(out_size: int, axis: int, in_size: int, dy: jnp.ndarray) -> tuple[jnp.ndarray]:
    idx, w = transpose_taps(out_size, in_size)
    dx = None
    for k in range(idx.shape[1]):
        term = _take(dy, idx[:, k], axis) * _along(w[:, k], axis, dy.ndim, dy.dtype)
        dx = term if dx is None else dx + term
    return (dx,)


resize_axis.defvjp(_fwd, _bwd)


def resize_bilinear(x: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
    """Resize ``x`` float ``[B, H, W, C]`` to ``[B, size[0], size[1], C]`` (align corners).

    Equal (within float rounding) to ``einsum("oh,bhwc,pw->bopc", Mh, x, Mw)`` with the dense
    matrices of :func:`interp_matrix`, at ``O(B * out_h * out_w * C)`` cost, gradient included.
    """
    out_h, out_w = int(size[0]), int(size[1])
    if x.shape[1] != out_h:
        x = resize_axis(x, out_h, 1)
    if x.shape[2] != out_w:
        x = resize_axis(x, out_w, 2)
    return x

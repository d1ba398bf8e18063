"""Bilinear resizing with ``align_corners=True`` semantics (as ``tf.image.resize_images``
in the authors' code), implemented as two small interpolation matmuls.

Shapes are static: the interpolation matrices are built in numpy at trace time.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=256)
def interp_matrix(out_size: int, in_size: int) -> np.ndarray:
    """float32 ``[out_size, in_size]`` align-corners linear interpolation weights."""
    m = np.zeros((out_size, in_size), np.float32)
    if in_size == 1 or out_size == 1:
        m[:, 0] = 1.0
        return m
    pos = np.arange(out_size, dtype=np.float64) * (in_size - 1) / (out_size - 1)
    lo = np.clip(np.floor(pos).astype(np.int64), 0, in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = (pos - lo).astype(np.float32)
    m[np.arange(out_size), lo] += 1.0 - frac
    m[np.arange(out_size), hi] += frac
    return m


def resize_bilinear(x: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
    """Resize ``x`` float ``[B, H, W, C]`` to ``[B, size[0], size[1], C]`` (align corners)."""
    h, w = x.shape[1], x.shape[2]
    if (h, w) == tuple(size):
        return x
    mh = jnp.asarray(interp_matrix(int(size[0]), h), x.dtype)
    mw = jnp.asarray(interp_matrix(int(size[1]), w), x.dtype)
    return jnp.einsum("oh,bhwc,pw->bopc", mh, x, mw)

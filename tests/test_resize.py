"""Linear-cost bilinear resize: equal to the dense align-corners matrices and to a numpy loop,
with a gradient equal to the dense one's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jitnet_jax.model.resize import interp_taps, resize_bilinear, transpose_taps


def dense_matrix(out_size: int, in_size: int) -> np.ndarray:
    """Copy of the previous (dense, O(out * in)) implementation's interpolation matrix."""
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


def dense_resize(x: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
    """The previous implementation: two dense interpolation matmuls."""
    h, w = x.shape[1], x.shape[2]
    if (h, w) == tuple(size):
        return x
    mh = jnp.asarray(dense_matrix(size[0], h))
    mw = jnp.asarray(dense_matrix(size[1], w))
    return jnp.einsum("oh,bhwc,pw->bopc", mh, x, mw, precision="highest")


def numpy_resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Plain float64 loop over output pixels: align corners, src = dst * (in - 1) / (out - 1)."""
    b, h, w, c = x.shape
    oh, ow = size
    out = np.zeros((b, oh, ow, c), np.float64)
    for i in range(oh):
        y = i * (h - 1) / (oh - 1) if oh > 1 else 0.0
        y0 = min(int(np.floor(y)), h - 1)
        y1, fy = min(y0 + 1, h - 1), y - y0
        for j in range(ow):
            xx = j * (w - 1) / (ow - 1) if ow > 1 else 0.0
            x0 = min(int(np.floor(xx)), w - 1)
            x1, fx = min(x0 + 1, w - 1), xx - x0
            top = (1 - fx) * x[:, y0, x0] + fx * x[:, y0, x1]
            bot = (1 - fx) * x[:, y1, x0] + fx * x[:, y1, x1]
            out[:, i, j] = (1 - fy) * top + fy * bot
    return out


CASES = [
    ((2, 3, 4, 5), (6, 8)),  # JITNet's decoder: about 2x up
    ((1, 12, 23, 3), (23, 45)),  # odd sizes (ceil-halved encoder maps)
    ((1, 23, 40, 2), (45, 80)),
    ((1, 9, 13, 4), (5, 7)),  # down (the scale < 1 input resize)
    ((1, 1, 5, 2), (4, 5)),  # a single input row is broadcast
    ((1, 6, 5, 2), (1, 9)),  # a single output row takes row 0
    ((1, 7, 7, 3), (7, 7)),  # identity
    ((1, 4, 3, 2), (17, 11)),  # large factor: many contributions per input index in the gradient
]


@pytest.mark.parametrize("shape,size", CASES)
def test_matches_dense_and_numpy(shape: tuple[int, ...], size: tuple[int, int]) -> None:
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    y = np.asarray(jax.jit(lambda a: resize_bilinear(a, size))(x))
    assert y.shape == (shape[0], *size, shape[3]) and y.dtype == np.float32
    np.testing.assert_allclose(y, np.asarray(dense_resize(jnp.asarray(x), size)), rtol=0, atol=2e-6)
    np.testing.assert_allclose(y, numpy_resize(x.astype(np.float64), size), rtol=0, atol=2e-6)


@pytest.mark.parametrize("shape,size", CASES)
def test_gradient_matches_dense(shape: tuple[int, ...], size: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    cot = jnp.asarray(rng.normal(size=(shape[0], *size, shape[3])), jnp.float32)
    g, g_ref = jax.jit(
        lambda a, c: (
            jax.vjp(lambda v: resize_bilinear(v, size), a)[1](c)[0],
            jax.vjp(lambda v: dense_resize(v, size), a)[1](c)[0],
        )
    )(x, cot)
    assert g.shape == x.shape
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), rtol=0, atol=1e-5)


def test_gradient_numerically() -> None:
    """Central finite differences of a linear scalar loss agree with the gradient (bounded)."""
    x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 4, 5, 2)), jnp.float32)
    w = jnp.asarray(np.random.default_rng(3).normal(size=(1, 7, 9, 2)), jnp.float32)

    @jax.jit
    def loss(a: jnp.ndarray) -> jnp.ndarray:
        return jnp.sum(resize_bilinear(a, (7, 9)) * w)

    g = np.asarray(jax.grad(loss)(x))
    eps = 1e-2
    for idx in [(0, 0, 0, 0), (0, 2, 3, 1), (0, 3, 4, 0), (0, 1, 2, 1)]:
        e = np.zeros(x.shape, np.float32)
        e[idx] = eps
        fd = (float(loss(x + e)) - float(loss(x - e))) / (2 * eps)
        assert abs(fd - g[idx]) < 1e-3 * max(1.0, abs(fd)), idx


def test_taps_and_transpose_are_consistent() -> None:
    for out_size, in_size in [(45, 23), (5, 9), (17, 4), (1, 6), (4, 1)]:
        lo, hi, frac = interp_taps(out_size, in_size)
        m = np.zeros((out_size, in_size), np.float64)
        np.add.at(m, (np.arange(out_size), lo), 1.0 - frac)
        np.add.at(m, (np.arange(out_size), hi), frac)
        np.testing.assert_array_equal(m.astype(np.float32), dense_matrix(out_size, in_size))
        idx, w = transpose_taps(out_size, in_size)
        mt = np.zeros((in_size, out_size), np.float64)
        np.add.at(mt, (np.arange(in_size)[:, None].repeat(idx.shape[1], 1), idx), w)
        np.testing.assert_allclose(mt, m.T, rtol=0, atol=1e-7)


def test_cost_is_linear() -> None:
    """XLA's FLOP count of forward+backward grows with the pixel count, not its square."""

    def flops(h: int, w: int) -> float:
        x = jax.ShapeDtypeStruct((1, h, w, 8), jnp.float32)
        f = jax.jit(jax.grad(lambda a: jnp.sum(resize_bilinear(a, (2 * h, 2 * w)))))
        cost = f.lower(x).cost_analysis()
        return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])

    small, big = flops(45, 80), flops(180, 320)  # 16x the pixels
    assert 12 < big / small < 20


def test_bad_size_is_a_one_line_error() -> None:
    with pytest.raises(ValueError, match="positive"):
        resize_bilinear(jnp.zeros((1, 4, 4, 1)), (0, 4))

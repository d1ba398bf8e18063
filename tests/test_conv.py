"""The custom-backward convolution matches XLA's convolution and its gradients (dense and depthwise)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jitnet_jax.model.conv import KERNEL_GRAD_CONV_MIN_CO, conv2d, same_padding

DN = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize(
    "shape,kernel,stride,padding,depthwise",
    [
        ((2, 9, 13, 5), (3, 3), 1, ((1, 1), (1, 1)), False),
        ((1, 10, 7, 4), (3, 3), 2, ((1, 1), (1, 1)), False),
        ((1, 11, 8, 3), (1, 3), 1, ((0, 0), (1, 1)), False),
        ((1, 8, 8, 3), (3, 1), 1, ((1, 1), (0, 0)), False),
        ((1, 9, 6, 6), (1, 1), 2, ((0, 0), (0, 0)), False),
        ((1, 12, 9, 2), (3, 3), 2, "same", False),
        ((1, 11, 10, 7), (3, 3), 2, "same", False),  # odd size, stride 2, one extra pixel at the end
        ((1, 9, 13, 7), (3, 3), 1, ((1, 1), (1, 1)), False),  # Ci == Co: the kernel is still transposed
        ((2, 9, 13, 5), (3, 3), 1, ((1, 1), (1, 1)), True),
        ((1, 11, 10, 4), (3, 3), 2, "same", True),
    ],
)
def test_forward_and_gradients_match_xla(shape, kernel, stride, padding, depthwise) -> None:
    _check_against_xla(shape, kernel, stride, padding, depthwise, 7 if shape[-1] != 7 else shape[-1])


@pytest.mark.parametrize(
    "shape,kernel,stride,padding",
    [
        ((2, 9, 13, 5), (3, 3), 1, ((1, 1), (1, 1))),
        ((1, 10, 7, 4), (3, 3), 2, ((1, 1), (1, 1))),
        ((1, 11, 10, 3), (3, 3), 2, "same"),  # odd size: the last input row and column are unused
        ((1, 12, 9, 2), (3, 3), 2, "same"),
        ((1, 11, 8, 3), (1, 3), 1, ((0, 0), (1, 1))),
        ((1, 8, 8, 3), (3, 1), 1, ((1, 1), (0, 0))),
    ],
)
def test_kernel_gradient_as_one_convolution_matches_xla(shape, kernel, stride, padding) -> None:
    """From KERNEL_GRAD_CONV_MIN_CO output channels the dense kernel gradient is one convolution."""
    _check_against_xla(shape, kernel, stride, padding, False, KERNEL_GRAD_CONV_MIN_CO)


@pytest.mark.parametrize("co", [KERNEL_GRAD_CONV_MIN_CO, 5])
def test_batched_kernel_gradient_takes_the_tap_path_and_matches_xla(co) -> None:
    """Under ``vmap`` (a replay update over B frames) the one-convolution kernel gradient switches to the
    per-tap path (its batching rule), and the shifted-copies matmul (narrow outputs) becomes a batched
    matmul; per frame the gradients still match XLA's, and they equal the unbatched ones frame by frame."""
    rng = np.random.default_rng(1)
    shape, padding = (3, 1, 9, 13, 4), ((1, 1), (1, 1))
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, 4, co)), jnp.float32)
    cot = jnp.asarray(rng.normal(size=(3, 1, 9, 13, co)), jnp.float32)

    def grads(fn):
        return jax.jit(jax.vmap(lambda a, c: jax.vjp(lambda b, kk: fn(b, kk), a, k)[1](c)))(x, cot)

    mine = grads(lambda a, b: conv2d(a, b, 1, padding))
    ref = grads(lambda a, b: jax.lax.conv_general_dilated(a, b, (1, 1), padding, dimension_numbers=DN))
    for a, b in zip(mine, ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    one = jax.vjp(lambda b, kk: conv2d(b, kk, 1, padding), x[0], k)[1](cot[0])
    np.testing.assert_allclose(mine[1][0], one[1], rtol=1e-4, atol=1e-4)
    batched = jax.vmap(lambda a, c: jax.vjp(lambda b, kk: conv2d(b, kk, 1, padding), a, k)[1](c))
    # no grouped convolution: what the one-convolution path becomes under vmap
    assert "feature_group_count = 3" not in jax.jit(batched).lower(x, cot).as_text()


def test_narrow_stride_one_kernel_gradient_is_one_matmul() -> None:
    """Fewer than KERNEL_GRAD_CONV_MIN_CO outputs at stride 1: the kernel gradient is ONE matmul against
    shifted copies of dy (the input gradient is a convolution); strided, one matmul per tap."""

    def dots(stride: int) -> int:
        x, k = jnp.zeros((1, 9, 13, 6)), jnp.zeros((3, 3, 6, 5))
        pad = same_padding((9, 13), (3, 3), stride)
        text = jax.jit(jax.grad(lambda x, k: conv2d(x, k, stride, pad).sum(), (0, 1))).lower(x, k).as_text()
        return text.count("stablehlo.dot_general")

    assert dots(1) == 1 and dots(2) == 9


def _check_against_xla(shape, kernel, stride, padding, depthwise, co) -> None:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    ci = shape[-1]
    kshape = (*kernel, 1, ci) if depthwise else (*kernel, ci, co)
    k = jnp.asarray(rng.normal(size=kshape), jnp.float32)
    if padding == "same":
        padding = same_padding(shape[1:3], kernel, stride)
    groups = ci if depthwise else 1

    def ref(x, k):
        return jax.lax.conv_general_dilated(
            x, k, (stride, stride), padding, dimension_numbers=DN, feature_group_count=groups
        )

    @jax.jit
    def both(x, k, cot):
        g_ref = jax.vjp(ref, x, k)[1](cot)
        g = jax.vjp(lambda a, b: conv2d(a, b, stride, padding), x, k)[1](cot)
        return ref(x, k), conv2d(x, k, stride, padding), g_ref, g

    out_shape = jax.eval_shape(ref, x, k).shape
    cot = jnp.asarray(rng.normal(size=out_shape), jnp.float32)
    y_ref, y, g_ref, g = both(x, k, cot)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(g, g_ref):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_unsupported_groups_is_a_one_line_error() -> None:
    with pytest.raises(ValueError, match="dense or depthwise"):
        conv2d(jnp.zeros((1, 4, 4, 4)), jnp.zeros((3, 3, 2, 4)), 1, ((1, 1), (1, 1)))

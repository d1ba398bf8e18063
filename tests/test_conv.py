"""The matmul-backward convolution matches XLA's convolution and its gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jitnet_jax.model.conv import conv2d, same_padding

DN = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize(
    "shape,kernel,stride,padding",
    [
        ((2, 9, 13, 5), (3, 3), 1, ((1, 1), (1, 1))),
        ((1, 10, 7, 4), (3, 3), 2, ((1, 1), (1, 1))),
        ((1, 11, 8, 3), (1, 3), 1, ((0, 0), (1, 1))),
        ((1, 8, 8, 3), (3, 1), 1, ((1, 1), (0, 0))),
        ((1, 9, 6, 6), (1, 1), 2, ((0, 0), (0, 0))),
        ((1, 12, 9, 2), (3, 3), 2, "same"),
    ],
)
def test_forward_and_gradients_match_xla(shape, kernel, stride, padding) -> None:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    k = jnp.asarray(rng.normal(size=(*kernel, shape[-1], 7)), jnp.float32)
    if padding == "same":
        padding = same_padding(shape[1:3], kernel, stride)

    def ref(x, k):
        return jax.lax.conv_general_dilated(x, k, (stride, stride), padding, dimension_numbers=DN)

    y_ref, y = ref(x, k), conv2d(x, k, stride, padding)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    cot = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    g_ref = jax.vjp(ref, x, k)[1](cot)
    g = jax.vjp(lambda a, b: conv2d(a, b, stride, padding), x, k)[1](cot)
    for a, b in zip(g, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)

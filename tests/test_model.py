"""JITNet architecture: shapes at odd sizes and the parameter-count golden."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from jitnet_jax.config import ModelConfig
from jitnet_jax.model.jitnet import JITNet, count_params, init_variables, min_decoder_filters, param_shapes


def _params(cfg: ModelConfig, hw: tuple[int, int] = (64, 96)) -> dict:
    return param_shapes(cfg, hw)


def expected_params(num_classes: int, m: float = 0.5) -> int:
    """Independent count from the official res_seg.py, layer by layer (slim conventions:
    conv+BN has no bias and 2*C BN params; conv without normalizer has a bias)."""
    min_dec = min_decoder_filters(num_classes)
    enc = [max(int(m * s), 8) for s in (128, 128, 256)]
    dec = [max(int(m * s), min_dec) for s in (256, 128, 64)]

    def conv_bn(cin: int, cout: int, k: int = 3) -> int:
        return k * k * cin * cout + 2 * cout

    def unit(cin: int, cout: int) -> int:
        n = 2 * cin  # preact BN
        if cin != cout:
            n += cin * cout + cout  # 1x1 shortcut with bias
        n += conv_bn(cin, cout)  # 3x3 conv + BN
        n += 2 * (3 * cout * cout + cout)  # 1x3 and 3x1 with bias
        return n

    c1, c2 = max(int(16 * m), 8), max(int(64 * m), 8)
    total = conv_bn(3, c1) + conv_bn(c1, c2)
    cin = c2
    for w in enc:
        total += unit(cin, w)
        cin = w
    net = 0
    for b, w in enumerate(dec):
        cin_b = enc[2 - b] + net
        total += unit(cin_b, w)
        net = w
    h2, h1 = max(int(64 * m), min_dec), max(int(16 * m), min_dec)
    total += conv_bn(net, h2) + conv_bn(h2, h1)
    total += h1 * num_classes + num_classes
    return total


@pytest.mark.parametrize("num_classes,paper", [(23, 752_000), (4, 745_000)])
def test_param_count_matches_official(num_classes: int, paper: int) -> None:
    n = count_params(_params(ModelConfig(num_classes=num_classes)))
    assert n == expected_params(num_classes)
    assert abs(n - paper) / paper < 0.01


@pytest.mark.parametrize("hw", [(240, 320), (272, 640), (45, 37), (33, 65)])
def test_any_frame_size(hw: tuple[int, int]) -> None:
    cfg = ModelConfig(num_classes=3)
    variables = init_variables(cfg, jax.random.key(1), hw)
    logits = jax.eval_shape(
        lambda v, x: JITNet(cfg).apply(v, x, train=True, mutable=["batch_stats"])[0],
        variables,
        jnp.zeros((2, *hw, 3), jnp.uint8),
    )
    assert logits.shape == (2, *hw, 3)
    assert logits.dtype == jnp.float32


def test_scale_and_separable_and_units() -> None:
    cfg = ModelConfig(num_classes=4, scale=0.5, separable=True, num_units=2)
    variables = init_variables(cfg, jax.random.key(0), (90, 160))
    logits = jax.eval_shape(
        lambda v, x: JITNet(cfg).apply(v, x, train=True, mutable=["batch_stats"])[0],
        variables,
        jnp.zeros((1, 90, 160, 3), jnp.uint8),
    )
    assert logits.shape == (1, 90, 160, 4)
    # the separable variant is much smaller than the dense one
    dense = count_params(_params(ModelConfig(num_classes=4, num_units=2)))
    assert count_params(variables["params"]) < dense / 2


def test_width_multiplier_scales_params() -> None:
    small = count_params(_params(ModelConfig(num_classes=4, width_multiplier=0.25)))
    big = count_params(_params(ModelConfig(num_classes=4, width_multiplier=1.0)))
    assert small < expected_params(4) < big


def test_fast_init_structure_and_he_scale() -> None:
    cfg = ModelConfig(num_classes=4)
    fast = init_variables(cfg, jax.random.key(0), (32, 48))
    ref = jax.eval_shape(
        lambda: JITNet(cfg).init(jax.random.key(0), jnp.zeros((1, 32, 48, 3), jnp.uint8), train=True)
    )
    assert jax.tree_util.tree_structure(fast) == jax.tree_util.tree_structure(ref)
    flat = jax.tree_util.tree_flatten_with_path(fast["params"])[0]
    for (path, a), b in zip(flat, jax.tree_util.tree_leaves(ref["params"])):
        assert a.shape == b.shape and a.dtype == b.dtype
        name = jax.tree_util.keystr(path)
        if name.endswith("['kernel']") and a.size > 1000:  # He init: std = sqrt(2 / fan_in)
            fan_in = a.size // a.shape[-1]
            assert abs(float(a.std()) / (2.0 / fan_in) ** 0.5 - 1) < 0.1, name
        elif name.endswith("['scale']"):
            assert float(a.min()) == float(a.max()) == 1.0
        elif name.endswith("['bias']"):
            assert float(abs(a).max()) == 0.0


def test_custom_conv_backward_matches_xla_gradients() -> None:
    """The whole network's gradient with the custom conv backward (and the linear resize's custom VJP)
    equals XLA's own autodiff, for the separable variant (depthwise, 1x1 and strided dense convs) at
    an odd size. Compiled once: both gradients in one program."""
    hw = (37, 45)
    base = ModelConfig(num_classes=3, separable=True, scale=0.75)
    variables = init_variables(base, jax.random.key(0), hw)
    frames = jax.random.randint(jax.random.key(1), (1, *hw, 3), 0, 256).astype(jnp.uint8)
    target = jax.random.normal(jax.random.key(2), (1, *hw, 3))

    def grad(mode: str):
        cfg = dataclasses.replace(base, conv_backward=mode)

        def loss(params):
            logits, _ = JITNet(cfg).apply(
                {"params": params, "batch_stats": variables["batch_stats"]},
                frames,
                train=True,
                mutable=["batch_stats"],
            )
            return jnp.sum(logits * target)

        return jax.grad(loss)(variables["params"])

    g_mm, g_xla = jax.jit(lambda: (grad("matmul"), grad("xla")))()
    flat_mm = jax.tree_util.tree_flatten_with_path(g_mm)[0]
    for (path, a), b in zip(flat_mm, jax.tree_util.tree_leaves(g_xla)):
        scale = float(jnp.max(jnp.abs(b))) + 1e-6
        err = float(jnp.max(jnp.abs(a - b)))
        assert err <= 1e-3 * scale, (jax.tree_util.keystr(path), err, scale)

"""The layer-by-layer FLOP count and the per-layer convolution timing of experiments.profile."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from experiments import profile
from jitnet_jax.config import ModelConfig
from jitnet_jax.eval.flops import conv_bn_flops, conv_layers
from jitnet_jax.model.conv import conv2d
from jitnet_jax.model.jitnet import param_shapes


def _kernel_shapes(params) -> list[tuple[int, ...]]:
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return sorted(tuple(v.shape) for path, v in flat if getattr(path[-1], "key", None) == "kernel")


@pytest.mark.parametrize(
    "model", [ModelConfig(num_classes=3), ModelConfig(num_classes=4, separable=True, num_units=2)]
)
def test_conv_layers_are_every_kernel_of_the_network_once(model):
    frame = (45, 70)  # odd sizes: strided layers round up
    layers = conv_layers(model, frame)
    assert sorted(layer.kernel_shape for layer in layers) == _kernel_shapes(param_shapes(model, frame))
    assert len({layer.name for layer in layers}) == len(layers)
    assert any(layer.depthwise for layer in layers) == model.separable
    # each recorded layer reproduces its output size; its FLOPs are 2 * outputs * taps * Ci/groups
    params = param_shapes(model, frame)
    bias = 0.0
    for layer in layers:
        module = params
        for key in layer.name.split("/"):
            module = module[key]
        out = jax.eval_shape(
            lambda x, k, s=layer.stride, p=layer.padding: conv2d(x, k, s, p),
            jax.ShapeDtypeStruct(layer.in_shape, np.float32),
            jax.ShapeDtypeStruct(layer.kernel_shape, np.float32),
        )
        kh, kw, ci, co = layer.kernel_shape
        assert out.shape[-1] == co
        assert module["kernel"].shape == layer.kernel_shape  # the name is the module's path
        assert layer.flops == 2.0 * np.prod(out.shape[:-1]) * kh * kw * ci * co
        bias += np.prod(out.shape) if "bias" in module else 0.0
    # conv_bn_flops is the layers plus one FLOP per output element of the convolutions with a bias
    assert conv_bn_flops(model, frame)["conv_flops"] == sum(layer.flops for layer in layers) + bias
    assert bias >= frame[0] * frame[1] * model.num_classes  # the logits conv has one


def test_conv_ceiling_times_every_layer():
    model = ModelConfig(num_classes=4)
    r = profile.conv_ceiling(model, 24, 32, repeats=2, calls=2)
    layers = conv_layers(model, (24, 32))
    assert r["conv_layers"] == len(layers)
    assert r["conv_gflops"] == pytest.approx(sum(layer.flops for layer in layers) / 1e9)
    assert r["conv_ms"] > 0


def test_profile_rejects_bad_sizes_in_one_line(capsys):
    assert profile.main(["--sizes", "180x0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "180x0" in err[0]

"""FLOP counts from XLA's cost analysis of the compiled student."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jitnet_jax.config import ModelConfig, StudentConfig
from jitnet_jax.model.conv import Padding
from jitnet_jax.model.jitnet import Conv, JITNet
from jitnet_jax.student.step import StudentState, init_state, predict_logits, train_step


def _flops(lowered: Any) -> float:
    """FLOPs from XLA's HLO cost analysis of a lowered (not yet compiled) computation; this avoids a
    compilation (seconds on CPU) and agrees with the compiled count within 0.1% for JITNet."""
    cost = lowered.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost.get("flops", float("nan")))


def student_flops(config: StudentConfig, frame_shape: tuple[int, int]) -> dict[str, float]:
    """Forward (inference) and train-step FLOPs for one ``[H, W]`` frame, from XLA."""
    state = jax.eval_shape(lambda: init_state(jax.random.key(0), config, frame_shape))
    frame = jax.ShapeDtypeStruct((*frame_shape, 3), jnp.uint8)
    label = jax.ShapeDtypeStruct(frame_shape, jnp.int32)
    weight = jax.ShapeDtypeStruct(frame_shape, jnp.float32)

    def fwd(s: StudentState, f: Any) -> Any:
        return predict_logits(config, s, f)

    def step(s: StudentState, f: Any, y: Any, w: Any) -> Any:
        return train_step(config, s, f, y, w)

    infer = _flops(jax.jit(fwd).lower(state, frame))
    train = _flops(jax.jit(step).lower(state, frame, label, weight))
    return {"infer_flops": infer, "train_step_flops": train}


class ConvLayer(NamedTuple):
    """One convolution of the network as the forward pass runs it.

    Attributes:
      name: the Flax module path, e.g. ``"decoder_conv2/Conv_0"``.
      in_shape: input ``[N, H, W, Ci]`` (float32).
      kernel_shape: ``[kh, kw, Ci / groups, Co]``.
      stride: the same stride along H and W.
      padding: explicit ``((top, bottom), (left, right))``.
      depthwise: one filter per input channel (``groups == Ci``).
      flops: ``2 * Ho * Wo * kh * kw * Ci / groups * Co`` (the convolution alone, no bias).
    """

    name: str
    in_shape: tuple[int, ...]
    kernel_shape: tuple[int, ...]
    stride: int
    padding: Padding
    depthwise: bool
    flops: float


def _walk(model: ModelConfig, frame_shape: tuple[int, int]) -> tuple[list[ConvLayer], float, float]:
    """Trace the forward pass (shapes only) and record every convolution, the bias FLOPs of those with
    a bias, and the BatchNorm FLOPs (``2`` per element, as an affine map)."""
    layers: list[ConvLayer] = []
    bias = bn = 0.0

    def record(next_fun: Any, args: Any, kwargs: Any, context: Any) -> Any:
        nonlocal bias, bn
        out = next_fun(*args, **kwargs)
        mod = context.module
        if context.method_name != "__call__":
            return out
        if isinstance(mod, Conv):
            x = args[0]
            kh, kw = mod.kernel_size
            ci = x.shape[-1]
            n_out = math.prod(out.shape[:-1])
            layers.append(
                ConvLayer(
                    name="/".join(str(p) for p in mod.path),
                    in_shape=tuple(x.shape),
                    kernel_shape=(kh, kw, 1 if mod.depthwise else ci, mod.features),
                    stride=mod.strides,
                    padding=mod.explicit_padding((x.shape[1], x.shape[2])),
                    depthwise=mod.depthwise,
                    flops=2.0 * n_out * kh * kw * (1 if mod.depthwise else ci) * out.shape[-1],
                )
            )
            bias += n_out * out.shape[-1] if mod.use_bias else 0.0
        elif isinstance(mod, nn.BatchNorm):
            bn += 2.0 * math.prod(out.shape)
        return out

    dummy = jax.ShapeDtypeStruct((1, *frame_shape, 3), jnp.uint8)
    with nn.intercept_methods(record):
        jax.eval_shape(lambda x: JITNet(model).init(jax.random.key(0), x, train=True), dummy)
    return layers, bias, bn


def conv_layers(model: ModelConfig, frame_shape: tuple[int, int]) -> list[ConvLayer]:
    """Every convolution of the student's forward pass on one ``[H, W]`` frame, in execution order
    (``experiments.profile`` times each on its own: the speed XLA's convolutions reach on these shapes)."""
    return _walk(model, frame_shape)[0]


def conv_bn_flops(model: ModelConfig, frame_shape: tuple[int, int]) -> dict[str, float]:
    """The network's forward FLOPs counted layer by layer, independently of XLA: convolutions
    (``2 * Ho * Wo * kh * kw * Ci / groups * Co``, plus ``Ho * Wo * Co`` for a bias) and BatchNorm as
    an affine map (``2`` FLOPs per element). Resizes, ReLUs and residual adds are left out, so XLA's
    count of the whole forward should exceed this only by those (a few percent with linear resizes).

    Returns:
      ``{"conv_flops", "bn_flops", "conv_bn_flops"}`` for one ``[H, W]`` frame.
    """
    layers, bias, bn = _walk(model, frame_shape)
    conv = sum(layer.flops for layer in layers) + bias
    return {"conv_flops": conv, "bn_flops": bn, "conv_bn_flops": conv + bn}

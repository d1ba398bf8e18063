"""JITNet in Flax (linen), following ``src/res_seg.py`` of the authors' TensorFlow code.

Layout for an input of ``H x W`` (any size; strided layers round up, ``ceil(H / 2)``):

  stem     conv3x3/2 -> max(16m, 8)   (H/2)   BN+ReLU
           conv3x3/2 -> max(64m, 8)   (H/4)   BN+ReLU
  encoder  3 blocks, widths max([128,128,256]*m, 8), each (num_units-1) stride-1 units then a
           stride-2 unit  -> H/8, H/16, H/32
  decoder  3 blocks, widths max([256,128,64]*m, min_dec); block b concatenates the matching encoder
           output (skips at H/16, H/8), runs num_units units, then bilinearly upsamples to the
           next encoder size (H/16, H/8, H/4)
  head     upsample to H/2, conv3x3 -> max(64m, min_dec), conv3x3 -> max(16m, min_dec) (BN+ReLU),
           upsample to H (then to the full frame if ``scale < 1``), conv1x1 -> logits (with bias)

``min_dec`` is 8 for <= 8 classes, 16 for <= 16, else 32. Upsampling uses exact recorded sizes, so no
padding is needed for frame sizes that are not multiples of 32. Convs followed by BatchNorm have no
bias, the others do (slim's ``normalizer_fn`` convention), which reproduces the official parameter
count (0.752 M for m=0.5, 23 classes).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jitnet_jax.config import ModelConfig
from jitnet_jax.model.conv import Padding, conv2d, same_padding
from jitnet_jax.model.resize import resize_bilinear

_KERNEL_INIT = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")


def min_decoder_filters(num_classes: int) -> int:
    """Smallest decoder width used by the official code for ``num_classes``."""
    if num_classes > 16:
        return 32
    if num_classes > 8:
        return 16
    return 8


def _pad_for(kernel: tuple[int, int], stride: int) -> Any:
    """'SAME' for stride 1; explicit symmetric padding for strided convs (slim conv2d_same)."""
    if stride == 1:
        return "SAME"
    return tuple(((k - 1) // 2, (k - 1) - (k - 1) // 2) for k in kernel)


def compute_dtype(name: str) -> Any:
    """Resolve ``ModelConfig.dtype`` to a jnp dtype: "auto" is bfloat16 on GPU/TPU, float32 on CPU."""
    if name == "auto":
        return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


def use_matmul_backward(mode: str) -> bool:
    """Resolve ``ModelConfig.conv_backward``: "auto" picks the matmul backward on CPU only."""
    if mode == "auto":
        return jax.default_backend() == "cpu"
    return mode == "matmul"


class Conv(nn.Module):
    """``nn.Conv`` (same parameter names and init) whose backward pass can be computed with matmuls
    (:mod:`jitnet_jax.model.conv`), which keeps training fast inside ``lax.scan``/``while_loop`` on CPU.

    Input float ``[N, H, W, Ci]`` -> ``dtype`` ``[N, Ho, Wo, features]``. ``depthwise=True`` convolves each
    channel with its own filter (kernel ``[kh, kw, 1, Ci]``, ``features`` must equal ``Ci``). Parameters
    are float32; ``dtype`` is the compute dtype (the input, kernel and bias are cast to it, as
    ``nn.Conv(dtype=..., param_dtype=float32)`` does), so bfloat16 gradients reach float32 parameters.
    """

    features: int
    kernel_size: tuple[int, int]
    strides: int = 1
    padding: Any = "SAME"
    use_bias: bool = True
    conv_backward: str = "auto"
    depthwise: bool = False
    dtype: Any = jnp.float32

    def explicit_padding(self, size: tuple[int, int]) -> Padding:
        """``((top, bottom), (left, right))`` for an input of spatial ``size`` (``"SAME"`` resolved)."""
        if self.padding == "SAME":
            return same_padding(size, self.kernel_size, self.strides)
        return tuple(tuple(p) for p in self.padding)

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kh, kw = self.kernel_size
        groups = x.shape[-1] if self.depthwise else 1
        if groups > 1 and self.features != groups:
            raise ValueError(
                f"a depthwise Conv needs features == input channels, got {self.features} != {groups}"
            )
        kernel = self.param(
            "kernel", _KERNEL_INIT, (kh, kw, x.shape[-1] // groups, self.features), jnp.float32
        )
        pad = self.explicit_padding((x.shape[1], x.shape[2]))
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        if use_matmul_backward(self.conv_backward):
            y = conv2d(x, kernel, self.strides, pad)
        else:
            y = jax.lax.conv_general_dilated(
                x,
                kernel,
                (self.strides, self.strides),
                pad,
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                feature_group_count=groups,
            )
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(
                self.dtype
            )
        return y


class ConvBNReLU(nn.Module):
    """conv (no bias) -> BatchNorm -> ReLU, like slim.conv2d under ressep_arg_scope (``dtype``: the compute
    dtype; BatchNorm keeps float32 statistics and parameters)."""

    features: int
    kernel: tuple[int, int] = (3, 3)
    stride: int = 1
    bn_momentum: float = 0.997
    bn_eps: float = 1e-5
    conv_backward: str = "auto"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, use_running_average: bool) -> jnp.ndarray:
        x = Conv(
            self.features,
            self.kernel,
            strides=self.stride,
            padding=_pad_for(self.kernel, self.stride),
            use_bias=False,
            conv_backward=self.conv_backward,
            dtype=self.dtype,
            name="Conv_0",
        )(x)
        x = nn.BatchNorm(
            use_running_average=use_running_average,
            momentum=self.bn_momentum,
            epsilon=self.bn_eps,
            dtype=self.dtype,
            param_dtype=jnp.float32,
        )(x)
        return nn.relu(x)


class ResidualUnit(nn.Module):
    """Pre-activation residual unit (``basic`` / ``basic_sep`` in res_seg.py).

    BN+ReLU preactivation; shortcut is the (subsampled) input when the width is unchanged, else a
    strided 1x1 conv of the preactivation. Residual: 3x3 conv (stride) + BN + ReLU, then 1x3 and 3x1
    convs with bias. The separable variant uses depthwise 3x3 (+BN+ReLU) and pointwise convs.
    """

    features: int
    stride: int = 1
    separable: bool = False
    bn_momentum: float = 0.997
    bn_eps: float = 1e-5
    conv_backward: str = "auto"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, use_running_average: bool) -> jnp.ndarray:
        bn = dict(momentum=self.bn_momentum, epsilon=self.bn_eps, dtype=self.dtype, param_dtype=jnp.float32)
        cb, dt = self.conv_backward, self.dtype
        depth_in = x.shape[-1]
        preact = nn.relu(nn.BatchNorm(use_running_average=use_running_average, **bn)(x))
        if depth_in == self.features:
            shortcut = x[:, :: self.stride, :: self.stride, :] if self.stride > 1 else x
        else:
            shortcut = Conv(self.features, (1, 1), self.stride, conv_backward=cb, dtype=dt, name="shortcut")(
                preact
            )
        if not self.separable:
            r = ConvBNReLU(self.features, (3, 3), self.stride, self.bn_momentum, self.bn_eps, cb, dt)(
                preact, use_running_average
            )
            r = Conv(self.features, (1, 3), conv_backward=cb, dtype=dt, name="Conv_0")(r)
            r = Conv(self.features, (3, 1), conv_backward=cb, dtype=dt, name="Conv_1")(r)
        else:
            r = _depthwise_bn_relu(preact, 1, use_running_average, bn, cb)
            r = ConvBNReLU(self.features, (1, 1), self.stride, self.bn_momentum, self.bn_eps, cb, dt)(
                r, use_running_average
            )
            r = _depthwise_bn_relu(r, 1, use_running_average, bn, cb)
            r = Conv(self.features, (1, 1), conv_backward=cb, dtype=dt, name="pointwise")(r)
        return shortcut + r


def _depthwise_bn_relu(
    x: jnp.ndarray, stride: int, use_running_average: bool, bn: dict[str, Any], conv_backward: str
) -> jnp.ndarray:
    """Depthwise 3x3 conv (the project's :class:`Conv`, same parameter names as ``nn.Conv`` had:
    ``Conv_0``/``Conv_1`` with kernel ``[3, 3, 1, C]``) -> BatchNorm -> ReLU (``bn["dtype"]``: the compute
    dtype)."""
    x = Conv(
        x.shape[-1],
        (3, 3),
        stride,
        use_bias=False,
        conv_backward=conv_backward,
        depthwise=True,
        dtype=bn["dtype"],
    )(x)
    x = nn.BatchNorm(use_running_average=use_running_average, **bn)(x)
    return nn.relu(x)


class JITNet(nn.Module):
    """The JITNet student.

    Call: ``logits = JITNet(cfg).apply(variables, frames, train=..., mutable=["batch_stats"])``.

    Args (``__call__``):
      frames: uint8 or float ``[B, H, W, 3]``; uint8 is mapped to ``x / 127.5 - 1``.
      train: True normalises with batch statistics and updates running averages.
    Returns:
      float32 logits ``[B, H, W, num_classes]``. With ``cfg.dtype`` bfloat16 the convolutions, activations
      and resizes run in bfloat16 (the input is normalised and resized in float32, then cast); parameters
      and BatchNorm statistics stay float32 and the logits are cast back to float32 for the loss.
    """

    cfg: ModelConfig

    @nn.compact
    def __call__(self, frames: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        cfg = self.cfg
        m = cfg.width_multiplier
        use_ra = (not train) and cfg.bn_mode == "running"
        dt = compute_dtype(cfg.dtype)
        bn = {
            "bn_momentum": cfg.bn_momentum,
            "bn_eps": cfg.bn_eps,
            "conv_backward": cfg.conv_backward,
            "dtype": dt,
        }
        x = frames.astype(jnp.float32)
        if frames.dtype == jnp.uint8:
            x = x / 127.5 - 1.0
        full_size = (x.shape[1], x.shape[2])
        if cfg.scale < 1.0:
            x = resize_bilinear(x, (int(cfg.scale * full_size[0]), int(cfg.scale * full_size[1])))
        in_size = (x.shape[1], x.shape[2])
        x = x.astype(dt)

        min_enc, min_dec = 8, min_decoder_filters(cfg.num_classes)
        enc_widths = [max(int(m * s), min_enc) for s in (128, 128, 256)]
        dec_widths = [max(int(m * s), min_dec) for s in (256, 128, 64)]
        unit = dict(separable=cfg.separable, **bn)

        x = ConvBNReLU(max(int(16 * m), min_enc), (3, 3), 2, **bn, name="conv1")(x, use_ra)
        conv2_in = (x.shape[1], x.shape[2])
        x = ConvBNReLU(max(int(64 * m), min_enc), (3, 3), 2, **bn, name="conv2")(x, use_ra)

        enc_outs, enc_sizes = [], []
        for b, width in enumerate(enc_widths):
            enc_sizes.append((x.shape[1], x.shape[2]))
            for u in range(cfg.num_units - 1):
                x = ResidualUnit(width, 1, **unit, name=f"enc{b}_unit{u}")(x, use_ra)
            x = ResidualUnit(width, 2, **unit, name=f"enc{b}_down")(x, use_ra)
            enc_outs.append(x)

        n = len(dec_widths)
        net = None
        for b, width in enumerate(dec_widths):
            skip = enc_outs[n - 1 - b]
            net = skip if net is None else jnp.concatenate([skip, net], axis=-1)
            for u in range(cfg.num_units):
                net = ResidualUnit(width, 1, **unit, name=f"dec{b}_unit{u}")(net, use_ra)
            net = resize_bilinear(net, enc_sizes[n - 1 - b])

        net = resize_bilinear(net, conv2_in)
        net = ConvBNReLU(max(int(64 * m), min_dec), (3, 3), 1, **bn, name="decoder_conv2")(net, use_ra)
        net = ConvBNReLU(max(int(16 * m), min_dec), (3, 3), 1, **bn, name="decoder_conv1")(net, use_ra)
        net = resize_bilinear(net, in_size)
        if cfg.scale < 1.0:
            net = resize_bilinear(net, full_size)
        logits = Conv(cfg.num_classes, (1, 1), conv_backward=cfg.conv_backward, dtype=dt, name="logits")(net)
        return logits.astype(jnp.float32)


@functools.lru_cache(maxsize=32)
def _variable_shapes(cfg: ModelConfig, frame_shape: tuple[int, int]) -> Any:
    """The abstract ``{"params", "batch_stats"}`` of ``JITNet.init`` (cached: tracing the flax init takes
    about a second, and loading a pretrained student needs it several times)."""
    dummy = jax.ShapeDtypeStruct((1, *frame_shape, 3), jnp.uint8)
    return jax.eval_shape(lambda x: JITNet(cfg).init(jax.random.key(0), x, train=True), dummy)


def init_variables(cfg: ModelConfig, rng: jax.Array, frame_shape: tuple[int, int]) -> dict[str, Any]:
    """Initial ``{"params", "batch_stats"}`` for frames of ``frame_shape = (H, W)``.

    Same distributions as ``JITNet.init`` (He truncated-normal kernels, zero biases, unit BN scales),
    but drawn with a single ``jax.random.truncated_normal`` call over all kernels: ``JITNet.init``
    compiles one RNG op per layer, which takes ~10 s on a 2-core CPU; this takes well under 1 s.
    """
    shapes = _variable_shapes(cfg, tuple(frame_shape))

    def is_kernel(path: tuple[Any, ...]) -> bool:
        return getattr(path[-1], "key", None) == "kernel"

    flat, treedef = jax.tree_util.tree_flatten_with_path(shapes["params"])
    sizes = [leaf.size for path, leaf in flat if is_kernel(path)]
    noise = jax.random.truncated_normal(rng, -2.0, 2.0, (sum(sizes),), jnp.float32)
    noise = noise / 0.87962566103423978  # unit variance after truncation (as variance_scaling)
    leaves, offset = [], 0
    for path, leaf in flat:
        name = getattr(path[-1], "key", None)
        if is_kernel(path):
            fan_in = int(np.prod(leaf.shape[:-1]))
            chunk = noise[offset : offset + leaf.size].reshape(leaf.shape)
            leaves.append(chunk * np.float32(np.sqrt(2.0 / fan_in)))
            offset += leaf.size
        elif name == "scale":
            leaves.append(jnp.ones(leaf.shape, leaf.dtype))
        else:
            leaves.append(jnp.zeros(leaf.shape, leaf.dtype))
    params = jax.tree_util.tree_unflatten(treedef, leaves)
    stats = jax.tree_util.tree_map_with_path(
        lambda p, leaf: (
            jnp.ones(leaf.shape, leaf.dtype)
            if getattr(p[-1], "key", None) == "var"
            else jnp.zeros(leaf.shape, leaf.dtype)
        ),
        shapes["batch_stats"],
    )
    return {"params": params, "batch_stats": stats}


def param_shapes(cfg: ModelConfig, frame_shape: tuple[int, int] = (64, 64)) -> Any:
    """Abstract params pytree (``jax.ShapeDtypeStruct`` leaves), without any compilation."""
    dummy = jax.ShapeDtypeStruct((1, *frame_shape, 3), jnp.uint8)
    return jax.eval_shape(lambda x: JITNet(cfg).init(jax.random.key(0), x, train=True), dummy)["params"]


def count_params(params: Any) -> int:
    """Number of trainable scalars in a params pytree."""
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))

"""2-D convolution with a hand-written backward pass (``custom_vjp``) that XLA:CPU runs at full speed.

Why: XLA:CPU runs the gradient convolutions that JAX's autodiff emits 5-30x slower when they sit
inside a loop body (``lax.scan`` / ``while_loop`` / ``cond``; jax-ml/jax#12868), which is exactly where
the online loop trains (measured here, one 3x3 32->32 conv at 90x160 inside a ``fori_loop``, one
thread: XLA's backward 514 ms, this one 22 ms, the forward conv 4.7 ms). This module computes
  * the input gradient as one *forward* convolution: the output gradient, dilated by the stride
    (``lax.pad`` interior zeros), correlated with the flipped, in/out-transposed kernel;
  * the kernel gradient as ``kh * kw`` matmuls of strided input slices with the output gradient
    (depthwise kernels: ``kh * kw`` multiply-and-reduce); for dense kernels with several taps, one
    forward convolution of the transposed operands (32 outputs or more) or, at stride 1, one matmul of
    the padded input against shifted copies of the output gradient (narrower outputs),
so a loop body holds only forward convs, matmuls, pads and slices. Numerically it matches ``jax.vjp``
of ``lax.conv_general_dilated`` (see ``tests/test_conv.py``). Grouped convolutions are supported for
``groups == 1`` and depthwise (``groups == Ci``, one filter per channel).

Dtypes: the operands' (``ModelConfig.dtype``: the model casts its float32 kernels to the compute dtype
before calling :func:`conv2d`). With bfloat16 operands the gradients are bfloat16 like them (the cast's own
gradient brings the kernel's back to float32); XLA:CPU accumulates bfloat16 matmuls and convolutions in
float32 and ``jnp.sum`` upcasts, so the long sums of the kernel gradient do not lose precision
(``tests/test_bf16.py`` checks this backward against XLA's in bfloat16).
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


def _groups(x: jnp.ndarray, kernel: jnp.ndarray) -> int:
    """Feature groups implied by ``x`` ``[..., Ci]`` and ``kernel`` ``[kh, kw, Ci / groups, Co]``."""
    ci, ki, co = x.shape[-1], kernel.shape[2], kernel.shape[3]
    if ci % ki or (ci // ki > 1 and (ki != 1 or co != ci)):
        raise ValueError(
            f"conv2d supports dense or depthwise kernels: input has {ci} channels, kernel {kernel.shape}"
        )
    return ci // ki


def _conv(x: jnp.ndarray, kernel: jnp.ndarray, stride: int, padding: Padding) -> jnp.ndarray:
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), padding, dimension_numbers=_DN, feature_group_count=_groups(x, kernel)
    )


#: How a convolution with per-member kernels (``vmap`` over both operands, e.g. a sweep's members) runs
#: on XLA:CPU: ``"map"``: one convolution per member (``lax.map``); ``"unroll"``: one per member, unrolled
#: in the program; ``"grouped"``: JAX's batching rule (one grouped convolution, what GPU/TPU use).
#: docs/performance.md "Sweeps on CPU" has the per-layer measurements.
BATCHED_KERNEL_CONV = "map"


def _forward(x: jnp.ndarray, kernel: jnp.ndarray, stride: int, padding: Padding) -> jnp.ndarray:
    """The forward convolution. Under ``vmap`` on CPU (a batching rule, ``custom_vmap``): a batched input
    with a shared kernel folds into the batch (a plain convolution); a shared input with per-member dense
    kernels is one convolution with the kernels side by side on the output axis; per-member inputs and
    kernels run one convolution per member (:data:`BATCHED_KERNEL_CONV`) instead of JAX's grouped
    convolution, which XLA:CPU runs several times slower than the same work as separate convolutions."""

    if jax.default_backend() != "cpu" or BATCHED_KERNEL_CONV == "grouped":
        return _conv(x, kernel, stride, padding)

    @jax.custom_batching.custom_vmap
    def conv(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
        return _conv(x, kernel, stride, padding)

    @conv.def_vmap
    def _batched(axis_size: int, in_batched: list[bool], x: jnp.ndarray, kernel: jnp.ndarray):
        x_b, k_b = in_batched
        if not k_b:  # [B, N, H, W, C] with one kernel: a batch of B * N images
            out = conv(x.reshape((-1,) + x.shape[2:]), kernel)
            return out.reshape(x.shape[:2] + out.shape[1:]), True
        if not x_b and _groups(x, kernel[0]) == 1:  # one input, B dense kernels: B * Co output channels
            kh, kw, ci, co = kernel.shape[1:]
            out = conv(x, kernel.transpose(1, 2, 3, 0, 4).reshape(kh, kw, ci, axis_size * co))
            return jnp.moveaxis(out.reshape(out.shape[:3] + (axis_size, co)), 3, 0), True
        if not x_b:
            x = jnp.broadcast_to(x, (axis_size,) + x.shape)
        if BATCHED_KERNEL_CONV == "unroll":
            return jnp.stack([conv(x[i], kernel[i]) for i in range(axis_size)]), True
        return jax.lax.map(lambda ab: conv(*ab), (x, kernel)), True

    return conv(x, kernel)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x: jnp.ndarray, kernel: jnp.ndarray, stride: int, padding: Padding) -> jnp.ndarray:
    """Convolution of ``x`` float ``[N, H, W, Ci]`` with ``kernel`` ``[kh, kw, Ci, Co]`` (dense) or
    ``[kh, kw, 1, Ci]`` (depthwise).

    Args:
      stride: the same stride along H and W.
      padding: explicit ``((top, bottom), (left, right))``.
    Returns:
      ``[N, Ho, Wo, Co]`` with ``Ho = (H + top + bottom - kh) // stride + 1``.
    """
    return _forward(x, kernel, stride, padding)


def _fwd(x: jnp.ndarray, kernel: jnp.ndarray, stride: int, padding: Padding):
    return _forward(x, kernel, stride, padding), (x, kernel)


def _input_grad(
    dy: jnp.ndarray, kernel: jnp.ndarray, stride: int, padding: Padding, size: tuple[int, int], groups: int
) -> jnp.ndarray:
    """``dx`` float ``[N, H, W, Ci]`` for ``dy`` ``[N, Ho, Wo, Co]``, as one forward convolution.

    ``dx[t] = sum_i dy_dilated[t + pt - i] k[i]``: pad the stride-dilated ``dy`` by ``kh - 1 - pt`` in
    front (and what completes ``H`` behind) and correlate it with the flipped kernel.
    """
    kh, kw = kernel.shape[0], kernel.shape[1]
    ho, wo = dy.shape[1], dy.shape[2]
    (pt, _), (pl, _) = padding
    pads = []
    for n, k, p, o in ((size[0], kh, pt, ho), (size[1], kw, pl, wo)):
        pads.append((k - 1 - p, n + p - 1 - (o - 1) * stride))
    flipped = jnp.flip(kernel, (0, 1))
    if groups == 1:  # dense: swap in/out channels (depthwise: [kh, kw, 1, C] as is)
        flipped = flipped.transpose(0, 1, 3, 2)
    if stride == 1:  # no interior zeros: the convolution pads (no separate padded copy of dy)
        return _forward(dy, flipped, 1, (pads[0], pads[1]))
    dyd = jax.lax.pad(
        dy, jnp.zeros((), dy.dtype), ((0, 0, 0), (*pads[0], stride - 1), (*pads[1], stride - 1), (0, 0, 0))
    )
    return _forward(dyd, flipped, 1, ((0, 0), (0, 0)))


#: Output channels from which a dense kernel gradient is one convolution (``_kernel_grad_conv``) rather
#: than per-tap matmuls. Measured on XLA:CPU (single-threaded, in a loop; docs/performance.md "The
#: training step on CPU"): from 32 output channels the convolution is as fast or faster (the decoder's 90x160 32->32
#: layer 11.6 vs 13.6 ms); with 8 or 16 it is 3-4x slower (Eigen's contraction with a narrow output).
KERNEL_GRAD_CONV_MIN_CO = 32


def _kernel_grad_conv(
    x: jnp.ndarray, dy: jnp.ndarray, kernel_shape: tuple[int, ...], stride: int, padding: Padding
) -> jnp.ndarray:
    """Dense ``dk`` ``[kh, kw, Ci, Co]`` as ONE forward convolution: ``x`` with its batch and channel
    axes swapped (``[Ci, H, W, N]``: Ci images of N channels) correlated with ``dy`` as the kernel
    (``[Ho, Wo, N, Co]``, dilated by the stride); the output is ``[Ci, kh, kw, Co]``.

    Explicit transposes put both operands in the layout XLA:CPU's Eigen convolution takes (XLA's own
    kernel gradient, the same product with swapped dimension numbers, is the slow in-loop path)."""
    kh, kw = kernel_shape[0], kernel_shape[1]
    (pt, _), (pl, _) = padding
    hs, ws = (dy.shape[1] - 1) * stride + 1, (dy.shape[2] - 1) * stride + 1
    # output size kh: H + pt + bottom - hs + 1 == kh (bottom < the forward's when rows are unused)
    pads = ((pt, kh - 1 + hs - x.shape[1] - pt), (pl, kw - 1 + ws - x.shape[2] - pl))
    out = jax.lax.conv_general_dilated(
        x.transpose(3, 1, 2, 0),
        dy.transpose(1, 2, 0, 3),
        (1, 1),
        pads,
        rhs_dilation=(stride, stride),
        dimension_numbers=_DN,
    )
    return out.transpose(1, 2, 0, 3)


def _kernel_grad(
    x: jnp.ndarray, dy: jnp.ndarray, kernel_shape: tuple[int, ...], stride: int, padding: Padding, groups: int
) -> jnp.ndarray:
    """``dk`` of ``kernel_shape`` ``[kh, kw, Ci/groups, Co]``. A dense kernel with several taps is, with at
    least :data:`KERNEL_GRAD_CONV_MIN_CO` outputs, one convolution (:func:`_kernel_grad_conv`), and with
    fewer at stride 1 one matmul against shifted copies of ``dy`` (:func:`_kernel_grad_shifted`). The rest
    (1x1, depthwise, narrow strided kernels): per tap, the strided input slice ``[N*Ho*Wo, Ci]`` against
    ``dy`` ``[N*Ho*Wo, Co]`` (a matmul; depthwise: a product and a sum)."""
    kh, kw, _, co = kernel_shape
    if groups > 1 or kh * kw == 1:
        return _kernel_grad_taps(x, dy, kernel_shape, stride, padding, groups)
    if co >= KERNEL_GRAD_CONV_MIN_CO:
        return _kernel_grad_conv_unbatched(x, dy, kernel_shape, stride, padding)
    if stride == 1:
        return _kernel_grad_shifted(x, dy, kernel_shape, padding)
    return _kernel_grad_taps(x, dy, kernel_shape, stride, padding, groups)


def _kernel_grad_shifted(
    x: jnp.ndarray, dy: jnp.ndarray, kernel_shape: tuple[int, ...], padding: Padding
) -> jnp.ndarray:
    """Dense stride-1 ``dk`` ``[kh, kw, Ci, Co]`` as ONE matmul: the padded input ``[N*Hp*Wp, Ci]``
    against ``kh * kw`` copies of ``dy``, each zero-padded to the padded input's size and shifted by its
    tap, side by side on the channel axis (``[N*Hp*Wp, kh*kw*Co]``).

    ``dk[i, j] = sum_p xp[p] dy_ij[p]`` with ``dy_ij[h + i, w + j] = dy[h, w]``. It copies ``dy`` (``Co``
    channels) ``kh * kw`` times where the per-tap matmuls copy strided windows of the input (``Ci``
    channels), and its one matmul has ``kh * kw * Co`` outputs instead of ``Co``: the fast path for
    narrow outputs (measured on XLA:CPU, one thread, in a loop: the decoder's 90x160 32->8 layer 1.2 ms
    against 3.0 ms per tap and 12.1 ms as one convolution)."""
    kh, kw, ci, co = kernel_shape
    (pt, pb), (pl, pr) = padding
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    hp, wp = xp.shape[1], xp.shape[2]
    ho, wo = dy.shape[1], dy.shape[2]
    shifted = jnp.concatenate(
        [
            jnp.pad(dy, ((0, 0), (i, hp - ho - i), (j, wp - wo - j), (0, 0)))
            for i in range(kh)
            for j in range(kw)
        ],
        axis=-1,
    )
    dk = jax.lax.dot_general(xp.reshape(-1, ci), shifted.reshape(-1, kh * kw * co), (((0,), (0,)), ((), ())))
    return dk.reshape(ci, kh, kw, co).transpose(1, 2, 0, 3)


def _kernel_grad_conv_unbatched(
    x: jnp.ndarray, dy: jnp.ndarray, kernel_shape: tuple[int, ...], stride: int, padding: Padding
) -> jnp.ndarray:
    """:func:`_kernel_grad_conv`, except under ``vmap`` (a replay update runs the network over B frames):
    batched, the one convolution becomes a grouped convolution that XLA:CPU runs ~1.5x slower than the
    per-tap matmuls, which batch into plain batched dots (docs/performance.md), so the batching rule
    takes the per-tap path."""

    @jax.custom_batching.custom_vmap
    def dk(x: jnp.ndarray, dy: jnp.ndarray) -> jnp.ndarray:
        return _kernel_grad_conv(x, dy, kernel_shape, stride, padding)

    @dk.def_vmap
    def _dk_batched(axis_size: int, in_batched: list[bool], x: jnp.ndarray, dy: jnp.ndarray):
        axes = tuple(0 if b else None for b in in_batched)
        taps = functools.partial(
            _kernel_grad_taps, kernel_shape=kernel_shape, stride=stride, padding=padding, groups=1
        )
        return jax.vmap(taps, in_axes=axes)(x, dy), True

    return dk(x, dy)


def _kernel_grad_taps(
    x: jnp.ndarray, dy: jnp.ndarray, kernel_shape: tuple[int, ...], stride: int, padding: Padding, groups: int
) -> jnp.ndarray:
    """``dk`` per tap: the strided input slice ``[N*Ho*Wo, Ci]`` against ``dy`` ``[N*Ho*Wo, Co]``."""
    kh, kw = kernel_shape[0], kernel_shape[1]
    (pt, pb), (pl, pr) = padding
    n, ho, wo, co = dy.shape
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    hs, ws = (ho - 1) * stride + 1, (wo - 1) * stride + 1
    dy2 = dy.reshape(-1, co)
    rows = []
    for i in range(kh):
        row = []
        for j in range(kw):
            patch = xp[:, i : i + hs : stride, j : j + ws : stride, :].reshape(-1, x.shape[-1])
            row.append(jnp.sum(patch * dy2, axis=0)[None] if groups > 1 else patch.T @ dy2)
        rows.append(jnp.stack(row))
    return jnp.stack(rows)


def _bwd(stride: int, padding: Padding, res, dy: jnp.ndarray):
    x, kernel = res
    groups = _groups(x, kernel)
    dx = _input_grad(dy, kernel, stride, padding, (x.shape[1], x.shape[2]), groups)
    dk = _kernel_grad(x, dy, kernel.shape, stride, padding, groups)
    return dx.astype(x.dtype), dk.astype(kernel.dtype)


conv2d.defvjp(_fwd, _bwd)

"""The student's pure functions: ``init_state``, ``train_step``, ``predict``.

State is one pytree (:class:`StudentState`). Every function takes the frozen
:class:`~jitnet_jax.config.StudentConfig` as its first, static argument, so
``jax.jit(train_step, static_argnums=0, donate_argnums=1)`` is the compiled form (see
``jit_train_step``/``jit_predict``).

BatchNorm: the model is always normalised with the current frame's statistics (``bn_mode="batch"``,
the default), in training and in prediction, as the PyTorch port does: with batch-1 online updates the
running averages lag the weights and predicting with them gives garbage (README has numbers). Running
averages are still tracked in ``batch_stats`` for ``bn_mode="running"``.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from jitnet_jax.config import StudentConfig
from jitnet_jax.model.jitnet import JITNet, init_variables
from jitnet_jax.student.losses import weighted_cross_entropy
from jitnet_jax.student.metrics import confusion_matrix, smoothed_min_iou
from jitnet_jax.student.optim import make_optimizer


@flax.struct.dataclass
class StudentState:
    """The student's whole state.

    Attributes:
      params: model parameters (float32 pytree).
      batch_stats: BatchNorm running averages (float32 pytree).
      opt_state: optax state (includes injected lr/momentum hyperparameters).
      step: int32 scalar, number of updates applied.
      rng: PRNG key, split once per update; the half an update does not keep samples replayed frames.
    """

    params: Any
    batch_stats: Any
    opt_state: Any
    step: jnp.ndarray
    rng: jnp.ndarray


def check_frame(frame: Any, name: str = "frame") -> None:
    """Raise a one-line ValueError unless ``frame`` is uint8 ``[H, W, 3]``."""
    shape = getattr(frame, "shape", None)
    dtype = getattr(frame, "dtype", None)
    if shape is None or len(shape) != 3 or shape[-1] != 3:
        raise ValueError(f"{name} must be uint8 [H, W, 3], got shape {shape}")
    if dtype != jnp.uint8:
        raise ValueError(f"{name} must be uint8 [H, W, 3], got dtype {dtype}")


def init_state(rng: jax.Array, config: StudentConfig, frame_shape: tuple[int, int]) -> StudentState:
    """Fresh student state for frames of ``frame_shape = (H, W)``."""
    config.validate()
    if len(frame_shape) != 2 or min(frame_shape) < 1:
        raise ValueError(f"frame_shape must be (H, W) with positive sizes, got {frame_shape}")
    init_rng, rng = jax.random.split(rng)
    variables = init_variables(config.model, init_rng, tuple(frame_shape))
    params = variables["params"]
    tx = make_optimizer(config.optim)
    return StudentState(
        params=params,
        batch_stats=variables["batch_stats"],
        opt_state=tx.init(params),
        step=jnp.zeros((), jnp.int32),
        rng=rng,
    )


MASKED_LOGIT = -1e9  # the logit of a class outside a camera's class mask (exp() of it is 0 in float32)


def apply_model(
    config: StudentConfig,
    params: Any,
    batch_stats: Any,
    frames: jnp.ndarray,
    train: bool,
    class_mask: jnp.ndarray | None = None,
) -> tuple[jnp.ndarray, Any]:
    """Logits float32 ``[B, H, W, C]`` and the updated batch stats for uint8 ``[B, H, W, 3]``.

    ``class_mask`` (bool ``[C]``, optional): classes outside it get the logit :data:`MASKED_LOGIT`, so the
    loss, the prediction and the accuracy check see only the classes in the mask (a fleet camera's own
    class groups under a head over the union of the fleet's groups). None: every class (single runs)."""
    logits, updates = JITNet(config.model).apply(
        {"params": params, "batch_stats": batch_stats}, frames, train=train, mutable=["batch_stats"]
    )
    if class_mask is not None:
        logits = jnp.where(class_mask, logits, jnp.asarray(MASKED_LOGIT, logits.dtype))
    return logits, updates["batch_stats"]


def _check_aux(config: StudentConfig, loss: jnp.ndarray, logits: jnp.ndarray, label: jnp.ndarray) -> dict:
    """``loss``, ``pred`` (int32 ``[H, W]``), ``confusion`` (int32 ``[C, C]``) and ``min_iou`` (the
    smoothed control signal) of one frame's float32 logits ``[H, W, C]`` against its int label ``[H, W]``."""
    pred = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    conf = confusion_matrix(label, pred, config.model.num_classes)
    return {
        "loss": loss,
        "pred": pred,
        "confusion": conf,
        "min_iou": smoothed_min_iou(conf, config.iou_smoothing),
    }


def forward_check(
    config: StudentConfig,
    state: StudentState,
    frame: jnp.ndarray,
    label: jnp.ndarray,
    weight: jnp.ndarray,
    class_mask: jnp.ndarray | None = None,
) -> tuple[dict[str, jnp.ndarray], Any, Any]:
    """The forward pass of one frame in training mode, scored, with its pullback: the accuracy check of
    Algorithm 1's update loop, which needs the backward pass only when the check fails.

    Args:
      frame: uint8 ``[H, W, 3]``; label: int ``[H, W]``; weight: float32 ``[H, W]``;
      class_mask: optional bool ``[C]`` (see :func:`apply_model`).
    Returns:
      ``(aux, new_batch_stats, pullback)``: aux holds ``loss``, the prediction ``pred`` (int32
      ``[H, W]``), its ``confusion`` (int32 ``[C, C]``) and ``min_iou`` (the smoothed control signal);
      ``pullback`` (a pytree holding the forward's residuals, so it can cross ``jit``/``lax.cond``)
      maps a float32 scalar ``c`` to ``(grads of c * loss,)``. Calling it runs the backward pass; not
      calling it costs nothing beyond the forward.
    """

    def loss_fn(params: Any) -> tuple[jnp.ndarray, tuple[jnp.ndarray, Any]]:
        logits, new_stats = apply_model(config, params, state.batch_stats, frame[None], True, class_mask)
        loss = weighted_cross_entropy(logits, label[None], weight[None], config.ignore_label)
        return loss, (logits[0], new_stats)

    loss, pullback, (logits, new_stats) = jax.vjp(loss_fn, state.params, has_aux=True)
    return _check_aux(config, loss, logits, label), new_stats, pullback


def batch_grads(
    config: StudentConfig,
    state: StudentState,
    pullback: Any,
    frames: jnp.ndarray,
    labels: jnp.ndarray,
    weights: jnp.ndarray,
    mask: jnp.ndarray,
    class_mask: jnp.ndarray | None = None,
) -> Any:
    """Gradients of the mean masked loss over ``B`` frames, BatchNorm over each frame separately, given
    frame 0's forward pass (``pullback`` from :func:`forward_check` on ``frames[0]``).

    Frame 0 (the current frame) is not run again: its gradient is its pullback scaled by ``1 / n``
    (``n``: the frames with ``mask`` True). The other ``B - 1`` (replayed) frames run forward and backward,
    the network ``vmap``-ed over them, so each frame is its own batch of one, as a single-frame update is.

    Args:
      frames: uint8 ``[B, H, W, 3]``; labels: int ``[B, H, W]``; weights: float32 ``[B, H, W]``;
      mask: bool ``[B]`` (frame 0 must be True); class_mask: optional bool ``[C]`` (:func:`apply_model`).
    Returns:
      grads, a pytree like ``state.params``.
    """
    m = mask.astype(jnp.float32)
    inv_n = 1.0 / jnp.maximum(m.sum(), 1.0)
    (g0,) = pullback(inv_n.astype(jnp.float32))
    if frames.shape[0] == 1:
        return g0

    def replayed_loss(params: Any) -> jnp.ndarray:
        def one(f: jnp.ndarray, y: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
            logits, _ = apply_model(config, params, state.batch_stats, f[None], True, class_mask)
            return weighted_cross_entropy(logits, y[None], w[None], config.ignore_label)

        losses = jax.vmap(one)(frames[1:], labels[1:], weights[1:])
        return (losses * m[1:]).sum() * inv_n

    g_rest = jax.grad(replayed_loss)(state.params)
    return jax.tree_util.tree_map(jnp.add, g0, g_rest)


def loss_and_grads(
    config: StudentConfig,
    state: StudentState,
    frame: jnp.ndarray,
    label: jnp.ndarray,
    weight: jnp.ndarray,
) -> tuple[Any, Any, dict[str, jnp.ndarray]]:
    """One forward/backward pass on a single frame, without updating (:func:`forward_check`, then its
    pullback).

    Args:
      frame: uint8 ``[H, W, 3]``; label: int ``[H, W]``; weight: float32 ``[H, W]``.
    Returns:
      ``(grads, new_batch_stats, aux)`` where aux holds ``loss``, the pre-update prediction
      ``pred`` (int32 ``[H, W]``), its ``confusion`` (int32 ``[C, C]``) and ``min_iou``
      (the smoothed control signal).
    """
    aux, new_stats, pullback = forward_check(config, state, frame, label, weight)
    (grads,) = pullback(jnp.ones((), jnp.float32))
    return grads, new_stats, aux


def loss_and_grads_batch(
    config: StudentConfig,
    state: StudentState,
    frames: jnp.ndarray,
    labels: jnp.ndarray,
    weights: jnp.ndarray,
    mask: jnp.ndarray,
) -> tuple[Any, Any, dict[str, jnp.ndarray]]:
    """One forward/backward pass on ``B`` frames, BatchNorm over each frame separately
    (:func:`forward_check` on frame 0, then :func:`batch_grads`).

    The loss is the mean of the per-frame losses of the frames with ``mask`` True, so the gradient is the
    mean of the per-frame gradients. Frame 0 is the current frame: the prediction, confusion, control
    accuracy, loss and the new batch stats in ``aux``/``new_batch_stats`` are frame 0's.

    Args:
      frames: uint8 ``[B, H, W, 3]``; labels: int ``[B, H, W]``; weights: float32 ``[B, H, W]``;
      mask: bool ``[B]`` (frame 0 must be True).
    Returns:
      ``(grads, new_batch_stats, aux)`` as :func:`loss_and_grads`.
    """
    aux, new_stats, pullback = forward_check(config, state, frames[0], labels[0], weights[0])
    grads = batch_grads(config, state, pullback, frames, labels, weights, mask)
    return grads, new_stats, aux


def apply_grads(
    config: StudentConfig,
    state: StudentState,
    grads: Any,
    new_batch_stats: Any,
    lr: jnp.ndarray | None = None,
    schedule: jnp.ndarray | None = None,
) -> StudentState:
    """Apply ``grads`` with the configured optax chain; returns the next state.

    ``lr``/``schedule``: optional traced peak lr and schedule index (a sweep member's), see
    :func:`~jitnet_jax.student.optim.make_optimizer`. The state's ``rng`` advances to the first half of
    its split; the second half (``jax.random.split(state.rng)[1]``) is free for the caller to use for
    this step's sampling (replay).
    """
    tx = make_optimizer(config.optim, lr, schedule)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    rng, _ = jax.random.split(state.rng)
    return StudentState(params, new_batch_stats, opt_state, state.step + 1, rng)


def train_step(
    config: StudentConfig,
    state: StudentState,
    frame: jnp.ndarray,
    label: jnp.ndarray,
    weight: jnp.ndarray,
) -> tuple[StudentState, dict[str, jnp.ndarray]]:
    """One SGD update on one frame.

    Args:
      frame: uint8 ``[H, W, 3]``; label: int ``[H, W]`` (ignore label allowed);
      weight: float32 ``[H, W]`` per-pixel loss weight.
    Returns:
      ``(new_state, metrics)``; metrics: ``loss``, ``min_iou`` and ``confusion`` of the
      prediction made *before* this update.
    """
    grads, new_stats, aux = loss_and_grads(config, state, frame, label, weight)
    new_state = apply_grads(config, state, grads, new_stats)
    return new_state, {k: aux[k] for k in ("loss", "min_iou", "confusion")}


def predict_logits(
    config: StudentConfig, state: StudentState, frame: jnp.ndarray, class_mask: jnp.ndarray | None = None
) -> jnp.ndarray:
    """float32 logits ``[H, W, C]`` for a uint8 ``[H, W, 3]`` frame (batch statistics by default);
    ``class_mask``: optional bool ``[C]`` (:func:`apply_model`)."""
    train = config.model.bn_mode == "batch"
    logits, _ = apply_model(config, state.params, state.batch_stats, frame[None], train, class_mask)
    return logits[0]


def predict(
    config: StudentConfig, state: StudentState, frame: jnp.ndarray, class_mask: jnp.ndarray | None = None
) -> jnp.ndarray:
    """int32 label map ``[H, W]`` for a uint8 ``[H, W, 3]`` frame. Does not change the state."""
    return jnp.argmax(predict_logits(config, state, frame, class_mask), axis=-1).astype(jnp.int32)


def jit_train_step(config: StudentConfig) -> Any:
    """``train_step`` jitted for ``config`` with the state buffers donated."""
    config.validate()

    def step(state: StudentState, frame: Any, label: Any, weight: Any) -> Any:
        return train_step(config, state, frame, label, weight)

    jitted = jax.jit(step, donate_argnums=0)

    def checked(state: StudentState, frame: Any, label: Any, weight: Any) -> Any:
        check_frame(frame)
        return jitted(state, frame, label, weight)

    return checked


def jit_predict(config: StudentConfig) -> Any:
    """``predict`` jitted for ``config``."""
    config.validate()
    jitted = jax.jit(lambda state, frame: predict(config, state, frame))

    def checked(state: StudentState, frame: Any) -> Any:
        check_frame(frame)
        return jitted(state, frame)

    return checked

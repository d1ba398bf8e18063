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


def apply_model(
    config: StudentConfig, params: Any, batch_stats: Any, frames: jnp.ndarray, train: bool
) -> tuple[jnp.ndarray, Any]:
    """Logits float32 ``[B, H, W, C]`` and the updated batch stats for uint8 ``[B, H, W, 3]``."""
    logits, updates = JITNet(config.model).apply(
        {"params": params, "batch_stats": batch_stats}, frames, train=train, mutable=["batch_stats"]
    )
    return logits, updates["batch_stats"]


def loss_and_grads(
    config: StudentConfig,
    state: StudentState,
    frame: jnp.ndarray,
    label: jnp.ndarray,
    weight: jnp.ndarray,
) -> tuple[Any, Any, dict[str, jnp.ndarray]]:
    """One fused forward/backward pass on a single frame, without updating.

    Args:
      frame: uint8 ``[H, W, 3]``; label: int ``[H, W]``; weight: float32 ``[H, W]``.
    Returns:
      ``(grads, new_batch_stats, aux)`` where aux holds ``loss``, the pre-update prediction
      ``pred`` (int32 ``[H, W]``), its ``confusion`` (int32 ``[C, C]``) and ``min_iou``
      (the smoothed control signal).
    """

    def loss_fn(params: Any) -> tuple[jnp.ndarray, tuple[jnp.ndarray, Any]]:
        logits, new_stats = apply_model(config, params, state.batch_stats, frame[None], True)
        loss = weighted_cross_entropy(logits, label[None], weight[None], config.ignore_label)
        return loss, (logits[0], new_stats)

    (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    pred = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    conf = confusion_matrix(label, pred, config.model.num_classes)
    aux = {
        "loss": loss,
        "pred": pred,
        "confusion": conf,
        "min_iou": smoothed_min_iou(conf, config.iou_smoothing),
    }
    return grads, new_stats, aux


def loss_and_grads_batch(
    config: StudentConfig,
    state: StudentState,
    frames: jnp.ndarray,
    labels: jnp.ndarray,
    weights: jnp.ndarray,
    mask: jnp.ndarray,
) -> tuple[Any, Any, dict[str, jnp.ndarray]]:
    """One fused forward/backward pass on ``B`` frames, BatchNorm over each frame separately.

    Each frame is its own batch of one (the network is ``vmap``-ed over the frames, so BatchNorm
    normalises every frame with its own statistics, as a single-frame update does); the loss is the mean
    of the per-frame losses of the frames with ``mask`` True, so the gradient is the mean of the per-frame
    gradients. Frame 0 is the current frame: the prediction, confusion, control accuracy and the new
    batch stats in ``aux``/``new_batch_stats`` are frame 0's.

    Args:
      frames: uint8 ``[B, H, W, 3]``; labels: int ``[B, H, W]``; weights: float32 ``[B, H, W]``;
      mask: bool ``[B]`` (frame 0 must be True).
    Returns:
      ``(grads, new_batch_stats, aux)`` as :func:`loss_and_grads`.
    """

    def loss_fn(params: Any) -> tuple[jnp.ndarray, tuple[jnp.ndarray, jnp.ndarray, Any]]:
        def one(f: jnp.ndarray, y: jnp.ndarray, w: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray, Any]:
            logits, new_stats = apply_model(config, params, state.batch_stats, f[None], True)
            return weighted_cross_entropy(logits, y[None], w[None], config.ignore_label), logits[0], new_stats

        losses, logits, new_stats = jax.vmap(one)(frames, labels, weights)
        m = mask.astype(jnp.float32)
        loss = (losses * m).sum() / jnp.maximum(m.sum(), 1.0)
        return loss, (losses[0], logits[0], jax.tree_util.tree_map(lambda x: x[0], new_stats))

    (_, (loss0, logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    label = labels[0]
    pred = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    conf = confusion_matrix(label, pred, config.model.num_classes)
    aux = {
        "loss": loss0,
        "pred": pred,
        "confusion": conf,
        "min_iou": smoothed_min_iou(conf, config.iou_smoothing),
    }
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


def predict_logits(config: StudentConfig, state: StudentState, frame: jnp.ndarray) -> jnp.ndarray:
    """float32 logits ``[H, W, C]`` for a uint8 ``[H, W, 3]`` frame (batch statistics by default)."""
    train = config.model.bn_mode == "batch"
    logits, _ = apply_model(config, state.params, state.batch_stats, frame[None], train)
    return logits[0]


def predict(config: StudentConfig, state: StudentState, frame: jnp.ndarray) -> jnp.ndarray:
    """int32 label map ``[H, W]`` for a uint8 ``[H, W, 3]`` frame. Does not change the state."""
    return jnp.argmax(predict_logits(config, state, frame), axis=-1).astype(jnp.int32)


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

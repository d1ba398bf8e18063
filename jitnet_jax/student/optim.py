"""The optax optimiser of the student.

Hyperparameters (learning rate, momentum) are injected into the optimiser state with
``optax.inject_hyperparams`` so a vmapped sweep can give each member its own values, and the
learning rate follows an optax schedule over the number of updates taken.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from jitnet_jax.config import OptimConfig


def make_schedule(cfg: OptimConfig) -> optax.Schedule:
    """The optax schedule named by ``cfg.schedule`` peaking at ``cfg.lr``."""
    if cfg.schedule == "constant":
        return optax.constant_schedule(cfg.lr)
    if cfg.schedule == "cosine":
        return optax.cosine_decay_schedule(cfg.lr, cfg.decay_steps, cfg.alpha)
    if cfg.schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, cfg.lr, cfg.warmup_steps, max(cfg.decay_steps, cfg.warmup_steps + 1), cfg.lr * cfg.alpha
        )
    if cfg.schedule == "exponential":
        return optax.exponential_decay(cfg.lr, cfg.transition_steps, cfg.decay_rate)
    if cfg.schedule == "piecewise":
        return optax.piecewise_constant_schedule(
            cfg.lr, {int(b): float(s) for b, s in zip(cfg.boundaries, cfg.scales)}
        )
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


def decay_mask(params: Any) -> Any:
    """True for conv kernels (4-D leaves named ``kernel``), False for biases and BN scale/bias."""

    def is_kernel(path: tuple[Any, ...], leaf: Any) -> bool:
        name = getattr(path[-1], "key", None)
        return name == "kernel" and getattr(leaf, "ndim", 0) == 4

    return jax.tree_util.tree_map_with_path(is_kernel, params)


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    """Coupled L2 weight decay on conv kernels, then SGD(+momentum) or Adam with a schedule."""
    schedule = make_schedule(cfg)
    if cfg.name == "sgd":
        opt = optax.inject_hyperparams(optax.sgd)(
            learning_rate=schedule, momentum=cfg.momentum, nesterov=cfg.nesterov
        )
    else:
        opt = optax.inject_hyperparams(optax.adam)(learning_rate=schedule, b1=cfg.momentum, b2=cfg.b2)
    parts = []
    if cfg.weight_decay > 0:
        parts.append(optax.masked(optax.add_decayed_weights(cfg.weight_decay), decay_mask))
    parts.append(opt)
    return optax.chain(*parts)

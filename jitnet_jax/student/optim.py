"""The optax optimiser of the student.

Hyperparameters (learning rate, momentum) are injected into the optimiser state with
``optax.inject_hyperparams`` so a vmapped sweep can give each member its own values, and the
learning rate follows an optax schedule over the number of updates taken.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jitnet_jax.config import SCHEDULES, OptimConfig


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


def _traced_schedule(cfg: OptimConfig, name: str, peak: jax.Array) -> optax.Schedule:
    """:func:`make_schedule` of kind ``name`` with a traced peak lr (same arithmetic)."""
    if name != "warmup_cosine":
        return make_schedule(dataclasses.replace(cfg, schedule=name, lr=peak))
    # optax.warmup_cosine_decay_schedule tests ``peak == 0`` in Python; the rest is the same formula.
    decay_steps = max(cfg.decay_steps, cfg.warmup_steps + 1)
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, peak, cfg.warmup_steps),
            optax.cosine_decay_schedule(peak, decay_steps - cfg.warmup_steps, alpha=cfg.alpha),
        ],
        [cfg.warmup_steps],
    )


def traced_lr(cfg: OptimConfig, kind: jax.Array, peak: jax.Array, count: jax.Array) -> jax.Array:
    """float32 lr of schedule ``SCHEDULES[kind]`` peaking at ``peak`` after ``count`` updates.

    The branches are exactly :func:`make_schedule` with a traced peak lr (the shape parameters
    ``decay_steps``, ``warmup_steps``, ... come from ``cfg``); under ``vmap`` the switch becomes a select
    over the scalar schedules.
    """
    branches = [_traced_schedule(cfg, name, peak) for name in SCHEDULES]
    return jax.lax.switch(kind, [lambda c, f=f: jnp.asarray(f(c), jnp.float32) for f in branches], count)


def make_optimizer(
    cfg: OptimConfig, lr: jax.Array | None = None, schedule: jax.Array | None = None
) -> optax.GradientTransformation:
    """Coupled L2 weight decay on conv kernels, then SGD(+momentum) or Adam with a schedule.

    Args:
      cfg: the optimiser (static).
      lr, schedule: optional traced per-member hyperparameters (a sweep's): float32 peak lr and int32
        index into :data:`~jitnet_jax.config.SCHEDULES`, overriding ``cfg.lr`` / ``cfg.schedule``. The
        state structure is the same either way, so a state made by ``init_state`` updates with both.
        Momentum is injected into the optimiser state at init and read from there.
    """
    if lr is None and schedule is None:
        sched = make_schedule(cfg)
    else:
        kind = jnp.int32(SCHEDULES.index(cfg.schedule)) if schedule is None else schedule
        peak = jnp.float32(cfg.lr) if lr is None else lr
        sched = lambda c: traced_lr(cfg, kind, peak, c)  # noqa: E731
    if cfg.name == "sgd":
        opt = optax.inject_hyperparams(optax.sgd)(
            learning_rate=sched, momentum=cfg.momentum, nesterov=cfg.nesterov
        )
    else:
        opt = optax.inject_hyperparams(optax.adam)(learning_rate=sched, b1=cfg.momentum, b2=cfg.b2)
    parts = []
    if cfg.weight_decay > 0:
        parts.append(optax.masked(optax.add_decayed_weights(cfg.weight_decay), decay_mask))
    parts.append(opt)
    return optax.chain(*parts)

"""Weighted per-pixel softmax cross-entropy with an ignore label."""

from __future__ import annotations

import jax.numpy as jnp
import optax


def weighted_cross_entropy(
    logits: jnp.ndarray, label: jnp.ndarray, weight: jnp.ndarray, ignore_label: int
) -> jnp.ndarray:
    """Weighted mean of per-pixel cross-entropy.

    ``loss = sum_i w_i * ce_i / sum_i w_i`` over pixels whose label is not ``ignore_label``
    (and lies in ``[0, C)``). Normalising by the total weight keeps the lr meaningful whatever the
    foreground share is; a pixel's share of the loss is proportional to its weight.

    Args:
      logits: float32 ``[B, H, W, C]``.
      label: int ``[B, H, W]``.
      weight: float32 ``[B, H, W]`` non-negative.
      ignore_label: label value to skip.
    Returns:
      float32 scalar.
    """
    num_classes = logits.shape[-1]
    valid = (label != ignore_label) & (label >= 0) & (label < num_classes)
    safe = jnp.where(valid, label, 0).astype(jnp.int32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
    w = jnp.where(valid, weight.astype(jnp.float32), 0.0)
    return (w * ce).sum() / jnp.maximum(w.sum(), 1e-6)

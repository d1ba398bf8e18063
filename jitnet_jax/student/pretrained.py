"""Save and load a student's weights (params + BatchNorm statistics) as an Orbax checkpoint.

A checkpoint is one Orbax composite checkpoint directory with two items:

* ``state``: ``{"params": ..., "batch_stats": ...}`` (``StandardSave``, float32 arrays);
* ``meta``: JSON with the format name/version and the :class:`~jitnet_jax.config.ModelConfig` it was
  trained with (``JsonSave``), plus free-form ``info`` (e.g. what it was trained on).

Orbax writes into a temporary directory and renames it when complete, so a killed save leaves no
half-written checkpoint at ``path``. :func:`load_student` checks the architecture fields of the stored
config against the requested one before touching the arrays and raises a one-line
:class:`CheckpointMismatch` naming the field (e.g. a 4-class checkpoint loaded for a 2-class stream).

Usage with the online engine::

    params, batch_stats = load_student(ckpt, cfg.student.model)
    state = init_state(key, cfg.student, (H, W)).replace(params=params, batch_stats=batch_stats)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jitnet_jax.config import ModelConfig, from_dict, to_dict
from jitnet_jax.model.jitnet import init_variables

FORMAT_NAME = "jitnet-student"
FORMAT_VERSION = 1
#: ModelConfig fields that change the parameter tree (shapes or structure).
ARCH_FIELDS = ("num_classes", "width_multiplier", "num_units", "separable")


class CheckpointMismatch(ValueError):
    """The checkpoint does not fit the requested model (one-line message naming the field)."""


def _weights(state_or_params: Any) -> tuple[Any, Any]:
    """``(params, batch_stats)`` of a StudentState, an OnlineState, a dict or a ``(params, stats)`` pair."""
    obj = getattr(state_or_params, "student", state_or_params)  # OnlineState -> StudentState
    if hasattr(obj, "params") and hasattr(obj, "batch_stats"):
        return obj.params, obj.batch_stats
    if isinstance(obj, dict) and "params" in obj:
        return obj["params"], obj.get("batch_stats", {})
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        return obj[0], obj[1]
    raise TypeError(
        f"save_student needs a StudentState, OnlineState, {{'params', 'batch_stats'}} dict or (params, "
        f"batch_stats) pair, got {type(state_or_params).__name__}"
    )


def save_student(
    path: str | os.PathLike,
    state_or_params: Any,
    model_cfg: ModelConfig,
    info: dict[str, Any] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write an Orbax checkpoint of the student's weights to ``path`` (a directory); returns it.

    Args:
      state_or_params: StudentState / OnlineState / ``{"params", "batch_stats"}`` / ``(params, stats)``.
      model_cfg: the architecture the weights belong to (stored and checked on load).
      info: JSON-able description (data, epochs, ...), stored in the metadata.
      overwrite: replace an existing checkpoint at ``path``.
    """
    model_cfg.validate()
    params, batch_stats = _weights(state_or_params)
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tree = jax.device_get({"params": params, "batch_stats": batch_stats})
    tree = jax.tree_util.tree_map(np.asarray, tree)
    meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "model": to_dict(model_cfg), "info": info or {}}
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        ckptr.save(
            path,
            ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)),
            force=overwrite,
        )
    return path


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's metadata (``format``, ``version``, ``model``, ``info``)."""
    path = Path(path).absolute()
    if not (path / "meta").is_dir():
        raise CheckpointMismatch(f"{path}: not a jitnet student checkpoint (no 'meta' item)")
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        meta = ckptr.restore(path, ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CheckpointMismatch(f"{path}: not a {FORMAT_NAME} checkpoint")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointMismatch(
            f"{path}: checkpoint version {meta.get('version')!r} is not {FORMAT_VERSION}"
        )
    return meta


def check_compatible(stored: ModelConfig, wanted: ModelConfig, source: str) -> None:
    """Raise :class:`CheckpointMismatch` unless the architecture fields agree."""
    for field in ARCH_FIELDS:
        a, b = getattr(stored, field), getattr(wanted, field)
        if a != b:
            what = "class count" if field == "num_classes" else "architecture"
            raise CheckpointMismatch(
                f"{source}: {what} differs: checkpoint has model.{field}={a!r}, requested model.{field}={b!r}"
            )


def load_student(path: str | os.PathLike, model_cfg: ModelConfig) -> tuple[Any, Any]:
    """``(params, batch_stats)`` from a checkpoint written by :func:`save_student`.

    Raises:
      CheckpointMismatch: not a student checkpoint, or its architecture / class count differs from
        ``model_cfg`` (the message names the field and both values).
      FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path).absolute()
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: student checkpoint not found")
    meta = read_meta(path)
    try:
        stored = from_dict(ModelConfig, meta["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointMismatch(f"{path}: malformed model config in checkpoint metadata ({e})") from None
    check_compatible(stored, model_cfg.validate(), str(path))
    target = jax.eval_shape(lambda: init_variables(model_cfg, jax.random.key(0), (32, 32)))
    abstract = {"params": target["params"], "batch_stats": target["batch_stats"]}
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        try:
            tree = ckptr.restore(path, ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
        except (ValueError, KeyError) as e:
            msg = " ".join(str(e).split())[:200]
            raise CheckpointMismatch(f"{path}: parameter tree does not match the model ({msg})") from None
    return tree["params"], tree["batch_stats"]

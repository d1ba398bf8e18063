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

import dataclasses
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


#: Student checkpoints shipped with the package, by short name (``--init camvid``).
SHIPPED = {"camvid": Path(__file__).resolve().parent / "weights" / "camvid_traffic"}


def resolve_init(name_or_path: str | os.PathLike) -> Path:
    """The checkpoint directory of a shipped short name (:data:`SHIPPED`, e.g. ``camvid``) or a path."""
    if str(name_or_path) in SHIPPED:
        return SHIPPED[str(name_or_path)]
    return Path(name_or_path)


def _class_axis_leaves(model_cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of the parameter leaves whose shape depends on ``num_classes`` (keyed by tree path)."""

    def shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
        tree = jax.eval_shape(lambda: init_variables(cfg, jax.random.key(0), (32, 32)))
        flat = jax.tree_util.tree_flatten_with_path(tree)[0]
        return {jax.tree_util.keystr(p): tuple(x.shape) for p, x in flat}

    a = shapes(model_cfg)
    b = shapes(dataclasses.replace(model_cfg, num_classes=model_cfg.num_classes + 1))
    return {k: v for k, v in a.items() if b[k] != v}


def match_class(name: str, stored_names: list[str]) -> int | None:
    """Index of the stored class that ``name`` starts from: the same name, else the first stored class
    sharing a member (``car`` <- ``car_bus_truck``), else None."""
    if name in stored_names:
        return stored_names.index(name)
    parts = set(name.split("_"))
    for i, s in enumerate(stored_names):
        if i > 0 and parts & set(s.split("_")):
            return i
    return None


def load_student_for_classes(
    path: str | os.PathLike,
    model_cfg: ModelConfig,
    class_names: list[str] | tuple[str, ...],
    key: jax.Array,
) -> tuple[Any, Any, dict[str, str | None]]:
    """``(params, batch_stats, mapping)`` for a model with ``class_names``, from a checkpoint whose head
    may have other classes (mapped by name).

    Every layer but the class head must have the same shapes. Each head row (logits kernel column and
    bias) of a requested class starts from the stored class of the same name (:func:`match_class`;
    ``background`` from ``background``); a class with no stored counterpart keeps a fresh
    initialisation drawn from ``key``. A checkpoint without stored class names loads only when the class
    count agrees (as :func:`load_student`).

    Returns:
      also ``mapping``: requested class name -> the stored class it starts from (None: initialised).
    Raises:
      CheckpointMismatch: architecture differs, or the head cannot be mapped (one line).
      FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path).absolute()
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: student checkpoint not found")
    model_cfg = model_cfg.validate()
    if len(class_names) != model_cfg.num_classes:
        raise ValueError(f"{len(class_names)} class names for a {model_cfg.num_classes}-class model")
    meta = read_meta(path)
    stored_names = list(meta.get("info", {}).get("classes") or [])
    try:
        stored_cfg = from_dict(ModelConfig, meta["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointMismatch(f"{path}: malformed model config in checkpoint metadata ({e})") from None
    if not stored_names:
        params, stats = load_student(path, model_cfg)
        return params, stats, {n: n for n in class_names}
    if len(stored_names) != stored_cfg.num_classes:
        raise CheckpointMismatch(
            f"{path}: {len(stored_names)} class names for {stored_cfg.num_classes} classes"
        )
    arch = dataclasses.replace(stored_cfg, num_classes=model_cfg.num_classes)
    check_compatible(arch, model_cfg, str(path))
    s_params, s_stats = load_student(path, dataclasses.replace(model_cfg, num_classes=stored_cfg.num_classes))
    fresh = jax.jit(init_variables, static_argnums=(0, 2))(model_cfg, key, (32, 32))  # one program
    head = _class_axis_leaves(model_cfg)
    mapping = {
        n: (stored_names[i] if (i := match_class(n, stored_names)) is not None else None) for n in class_names
    }
    rows = [match_class(n, stored_names) for n in class_names]

    def leaf(p: Any, stored: Any, new: Any) -> Any:
        k = jax.tree_util.keystr(p)
        if k not in head:
            if stored.shape != new.shape:
                raise CheckpointMismatch(
                    f"{path}: architecture differs at {k}: checkpoint {stored.shape}, requested {new.shape}"
                )
            return stored
        if stored.shape[:-1] != new.shape[:-1]:
            raise CheckpointMismatch(
                f"{path}: class head {k} cannot be mapped: checkpoint {stored.shape}, requested {new.shape}"
            )
        cols = [stored[..., r] if r is not None else new[..., j] for j, r in enumerate(rows)]
        return np.stack([np.asarray(c) for c in cols], axis=-1).astype(np.asarray(new).dtype)

    try:
        params = jax.tree_util.tree_map_with_path(
            lambda p, a, b: leaf((jax.tree_util.DictKey("params"), *p), a, b), s_params, fresh["params"]
        )
        stats = jax.tree_util.tree_map_with_path(
            lambda p, a, b: leaf((jax.tree_util.DictKey("batch_stats"), *p), a, b),
            s_stats,
            fresh["batch_stats"],
        )
    except ValueError as e:  # tree structures differ
        if isinstance(e, CheckpointMismatch):
            raise
        raise CheckpointMismatch(
            f"{path}: parameter tree does not match the model ({str(e)[:150]})"
        ) from None
    return params, stats, mapping

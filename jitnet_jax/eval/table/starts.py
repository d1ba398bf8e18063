"""The students' starting weights: leave-one-out pretrained on the other streams (cached, one process
trains while others wait), the CamVid student with its head mapped by class name, or random init."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jitnet_jax.config import StudentConfig, to_dict
from jitnet_jax.eval.table.cache import digest, wait_lock
from jitnet_jax.eval.table.settings import Settings, store_dir
from jitnet_jax.student.pretrained import load_student, read_meta, save_student
from jitnet_jax.student.step import StudentState, init_state


def pretrained_student(
    s: Settings, stream: str, all_streams: Sequence[str], cfg: StudentConfig, class_names: tuple[str, ...]
) -> tuple[Any, Any]:
    """Leave-one-out pretrained weights for ``stream`` (trained on the other streams; cached; one process
    trains it while others wait)."""
    others = [o for o in all_streams if o != stream]
    key = {
        "others": others,
        "classes": list(class_names),
        "model": to_dict(cfg.model),
        "optim": to_dict(cfg.optim),
        "epochs": s.pretrain_epochs,
        "every": s.pretrain_every,
        "cap": s.pretrain_max_per_stream,
        "height": s.height,
        "width": s.width,
        "max_frames": s.max_frames,
        "seed": s.seed,
    }
    path = s.out / "pretrained" / stream
    with wait_lock(s.out / "pretrained" / ".parts" / stream, f"leave-one-out student {stream}"):
        return _pretrained_student_locked(s, stream, others, key, path, cfg, class_names)


def _pretrained_student_locked(
    s: Settings,
    stream: str,
    others: list[str],
    key: dict[str, Any],
    path: Path,
    cfg: StudentConfig,
    class_names: tuple[str, ...],
) -> tuple[Any, Any]:
    """:func:`pretrained_student` while holding its lock: the cached checkpoint at ``path`` if its key
    matches, else pretrained on the other streams' label stores and saved there."""
    from jitnet_jax.student.pretrain import pretrain, store_examples

    if path.is_dir():
        try:
            if read_meta(path)["info"].get("key") == digest(key):
                return load_student(path, cfg.model)
        except ValueError:
            pass
    if not others:
        raise ValueError(
            f"leave-one-out pretraining for {stream} needs at least one other stream (--streams)"
        )
    dirs = [store_dir(s, o) for o in others]
    cap = min(s.max_frames or 10**9, s.pretrain_every * s.pretrain_max_per_stream)
    examples = store_examples(dirs, class_names, s.pretrain_every, cap, s.progress)
    t0 = time.perf_counter()
    state, losses = pretrain(
        examples, cfg, epochs=s.pretrain_epochs, key=jax.random.key(s.seed + 1000), progress=s.progress
    )
    info = {
        "key": digest(key),
        "streams": others,
        "excluded": stream,
        "examples": len(examples[0]),
        "losses": losses,
        "train_s": time.perf_counter() - t0,
    }
    save_student(path, state, cfg.model, info=info)
    return state.params, state.batch_stats


def camvid_student(s: Settings, cfg: StudentConfig, class_names: tuple[str, ...]) -> tuple[Any, Any]:
    """The CamVid-pretrained student with its head mapped to ``class_names`` by name (classes it does not
    know start from a fresh initialisation)."""
    from jitnet_jax.student.pretrained import load_student_for_classes

    if s.camvid is None:
        raise ValueError("the CamVid start needs --camvid-init (a student checkpoint)")
    params, stats, _ = load_student_for_classes(
        s.camvid, cfg.model, list(class_names), jax.random.key(s.seed + 2000)
    )
    return params, stats


def initial_state(s: Settings, cfg: StudentConfig, weights: tuple[Any, Any] | None) -> StudentState:
    """A fresh student state (``jax.random.key(s.seed)``) for frames of the table's size, with ``weights``
    (``(params, batch_stats)``, copied) when given, else random init."""
    state = init_state(jax.random.key(s.seed), cfg, (s.height, s.width))
    if weights is not None:  # copied: the online loop donates its state
        params, stats = jax.tree_util.tree_map(jnp.copy, weights)
        state = state.replace(params=params, batch_stats=stats)
    return state

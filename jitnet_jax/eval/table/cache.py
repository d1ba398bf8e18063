"""The table's parts on disk: the key of everything that determines a result, cached JSON parts and the
locks that let several table processes share one output folder.

Every (method, stream) result is one part, ``OUT/runs/<stream>/<method>.json``, stored with the digest of
its key; a part whose key no longer matches is computed again. A constructed stream's folder is its spec
made path-safe (:func:`~jitnet_jax.data.concat.spec_slug`: ``a[0:400]+b`` -> ``a@0-400+b``); its key holds
the spec itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jitnet_jax.config import to_dict
from jitnet_jax.data.concat import spec_slug
from jitnet_jax.data.label_store import atomic_write_bytes
from jitnet_jax.eval.table.methods import Method
from jitnet_jax.eval.table.settings import Settings, online_config, student_config
from jitnet_jax.io import FolderLock, OutputBusy
from jitnet_jax.online.engine import OnlineConfig


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON with sorted keys (numpy scalars and arrays as numbers and lists),
    atomically, making the parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, default=_jsonable) + "\n").encode())


def _jsonable(x: Any) -> Any:
    """A numpy integer, float or array as its JSON value."""
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def digest(obj: Any) -> str:
    """The key of a part as stored in it: sha256 (16 hex) of its sorted JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_cached(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The cached result at ``path`` if its key matches ``key``."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if data.get("key") == digest(key) else None


#: OnlineConfig fields added after the paper's loop, with the value that leaves the loop the paper's (R = 0
#: replay is bit-identical to no replay; no teacher delay).
NEUTRAL_ONLINE = {"replay_size": 0, "replay_batch": 1, "teacher_delay": 0, "zoo_size": 0}


def online_key(ocfg: OnlineConfig) -> dict[str, Any]:
    """``to_dict(ocfg)`` without the fields of :data:`NEUTRAL_ONLINE` that hold their neutral value, so a
    config class that gains such a field does not invalidate earlier results."""
    d = to_dict(ocfg)
    if not d.get("replay_size"):
        d.pop("replay_batch", None)
    if not d.get("zoo_size"):
        d.pop("zoo_margin", None)
        d.pop("zoo_store_after", None)
        d.pop("zoo_need_pass", None)
    return {k: v for k, v in d.items() if not (k in NEUTRAL_ONLINE and v == NEUTRAL_ONLINE[k])}


def _dir_digest(path: Path) -> str:
    """sha256 (16 hex) over the relative paths and bytes of every file under ``path``."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def method_key(
    s: Settings, m: Method, stream: str, class_names: Sequence[str], fps: float = 0.0
) -> dict[str, Any]:
    """Everything that determines one (method, stream) result, and nothing else: label hold and flow
    depend on the stream's labels only, so student settings added later do not invalidate them."""
    key: dict[str, Any] = {
        "kind": m.kind,
        "stream": stream,
        "classes": list(class_names),
        **s.common_key(),
    }
    if not m.student:
        key["delta"] = m.delta
        if m.kind == "flow":
            key["flow_cost"] = "process_time"  # the flow cost is CPU time, not wall time
        return key
    cfg = student_config(s, len(class_names), m)
    # Method fields added later are left out at their neutral value, so earlier parts stay valid.
    fields = {
        k: v
        for k, v in dataclasses.asdict(m).items()
        if k not in ("name", "label")
        and not (k in ("delta_max", "delta_min", "teacher_delay_ms", "u_max") and v == 0)
        and not (k == "width_scale" and v == 1.0)
    }
    key.update(method=fields, student=to_dict(cfg), seed=s.seed)
    if m.kind in ("online", "fixed"):
        key["online"] = online_key(online_config(s, m, cfg, fps))
    if m.kind == "fixed":
        key["fixed_updates"] = s.fixed_updates
    if m.kind == "oracle":
        key["oracle"] = [s.oracle_epochs, s.oracle_every, s.online.fg_weight, s.online.bg_weight]
    if m.start == "loo":
        key["pretrain"] = [s.pretrain_epochs, s.pretrain_every, s.pretrain_max_per_stream]
    elif m.start == "camvid":
        key["camvid"] = _dir_digest(s.camvid) if s.camvid is not None else None
    return key


def wait_lock(folder: Path, what: str, poll_s: float = 10.0) -> FolderLock:
    """A held :class:`FolderLock` on ``folder``, waiting while another process holds it."""
    lock = FolderLock(folder, what)
    while True:
        try:
            return lock.acquire()
        except OutputBusy:
            time.sleep(poll_s)


def part_path(s: Settings, stream: str, method: str) -> Path:
    """Where the part of ``method`` on ``stream`` is cached: ``OUT/runs/<stream>/<method>.json`` (a
    constructed stream's folder: :func:`~jitnet_jax.data.concat.spec_slug`)."""
    return s.out / "runs" / spec_slug(stream) / f"{method}.json"


def part_lock(s: Settings, stream: str, method: str) -> FolderLock:
    """The (not yet acquired) lock a process holds while it computes the part of ``method`` on ``stream``;
    another table process on the same output folder skips that part meanwhile."""
    return FolderLock(s.out / "runs" / spec_slug(stream) / ".parts" / method, f"part {stream}/{method}")

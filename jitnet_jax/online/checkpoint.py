"""Orbax checkpoints of a running stream: save every N frames, at the end and on SIGINT/SIGTERM; resume.

A checkpoint holds everything needed to continue a run exactly where it stopped:

* ``state``: the whole :class:`~jitnet_jax.online.engine.OnlineState` (student params, batch stats, optimiser
  state incl. injected hyperparameters and schedule counts, PRNG key, step; controller ``delta`` and
  ``next_teacher``; stream ``cursor``; ``teacher_frames``/``updates`` counters);
* ``per_frame``: the per-frame stats of every frame before the cursor (the accumulated confusion counts
  are their ``tp``/``fp``/``fn`` rows);
* ``meta`` (JSON): the fingerprint of the run (configuration, stream, resolution), the cursor and the
  per-frame array shapes.

Checkpoints live in ``<directory>/<cursor>/`` (the orbax step is the stream cursor). Saves are
synchronous and atomic: orbax writes into a temporary directory and renames it when complete, so a
process killed mid-save leaves the previous checkpoint intact (the partial one is ignored and cleaned
up by the next run). The state is copied to host memory (``jax.device_get``) before anything is written,
so a save never reads buffers that the next chunk call donates. Retention keeps the last ``keep``.

Typical use (see ``experiments/stream.py``)::

    ckpt = StreamCheckpointer(out / "checkpoints", make_fingerprint(cfg, source.info), every_frames=256)
    state, per_frame = new_state(cfg, key, (h, w)), None
    if resume and (restored := ckpt.restore_latest(state)) is not None:
        state, per_frame = restored
    with GracefulStop() as stop:  # SIGINT/SIGTERM: stop at the next chunk boundary and save there
        result = run_stream(source, cfg, state=state, per_frame=per_frame, checkpointer=ckpt,
                            should_stop=stop.is_set)
    ckpt.save(result.state, result.per_frame)
    ckpt.close()
"""

from __future__ import annotations

import json
import re
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jitnet_jax.config import to_dict

# Fingerprint fields compared first (a mismatch here would also break the state's shapes).
_PRIORITY = (
    "format.checkpoint",
    "stream.height",
    "stream.width",
    "height",
    "width",
    "model.num_classes",
    "stream.class_names",
    "class_names",
)


class Interrupted(Exception):
    """Raised from ``on_chunk`` after SIGINT/SIGTERM once the state is saved.

    Attributes:
      cursor: the stream frame the saved checkpoint continues from.
      signum: the signal received.
    """

    def __init__(self, cursor: int, signum: int | None) -> None:
        name = signal.Signals(signum).name if signum else "stop request"
        super().__init__(f"{name}: stopped after frame {cursor - 1}, checkpoint saved at frame {cursor}")
        self.cursor = cursor
        self.signum = signum


class GracefulStop:
    """Context manager turning SIGINT/SIGTERM into a flag checked between chunks.

    The first signal sets the flag (the run stops after the current chunk and saves); a second SIGINT
    raises ``KeyboardInterrupt`` immediately. Previous handlers are restored on exit. Must be entered
    from the main thread (Python's rule for signal handlers); elsewhere it is a plain flag.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> None:
        self._signals = signals
        self._event = threading.Event()
        self._previous: dict[int, Any] = {}
        self.signum: int | None = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self._event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        self._event.set()

    def set(self, signum: int | None = None) -> None:
        """Request a stop (as if ``signum`` was received)."""
        self.signum = signum
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def __bool__(self) -> bool:
        return self.is_set()

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for s in self._signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()


def _flatten(prefix: str, data: Any, out: dict[str, Any]) -> None:
    if isinstance(data, dict):
        for k, v in data.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = data


#: Version of the checkpoint layout and of what a fingerprint covers; recorded as ``format.checkpoint``.
#: 3: the replay buffer and a delayed teacher's label in flight hold the uint8 region map (``regions``,
#: ``region``), not float32 loss weights, and ``model.dtype`` is fingerprinted. A format-2 checkpoint is
#: refused on resume with one line (``format.checkpoint was 2, now 3``): rerun from frame 0.
CHECKPOINT_FORMAT = 3


def make_fingerprint(cfg: Any, info: Any = None, **extra: Any) -> dict[str, Any]:
    """A flat JSON-ready dict of everything that determines a run's results.

    Args:
      cfg: a config dataclass. An :class:`~jitnet_jax.online.engine.OnlineConfig` gives ``model.*``,
        ``optim.*`` and ``online.*`` fields (its ``chunk_size`` is left out); any other dataclass (e.g.
        ``jitnet_jax.run_config.RunConfig``) is flattened whole by dotted path (``online.a_thr``,
        ``online.student.optim.lr``, ``seed``, ...).
      info: the source's :class:`~jitnet_jax.data.types.StreamInfo` (optional): ``stream.name``,
        ``stream.height``, ``stream.width``, ``stream.class_names``, ``stream.teacher``.
      extra: more ``name=value`` fields (e.g. ``seed=0``, the label store's identity); dicts are flattened.
    Returns:
      ``{dotted name: JSON value}`` including ``format.checkpoint`` (:data:`CHECKPOINT_FORMAT`).
    """
    flat: dict[str, Any] = {"format.checkpoint": CHECKPOINT_FORMAT}
    data = to_dict(cfg)
    student = data.pop("student", None)
    if student is not None:  # OnlineConfig
        data.pop("chunk_size", None)
        _flatten("", student, flat)
        _flatten("online", data, flat)
    else:
        _flatten("", data, flat)
    if info is not None:
        flat["stream.name"] = info.name
        flat["stream.height"] = int(info.height)
        flat["stream.width"] = int(info.width)
        flat["stream.class_names"] = list(info.class_names)
        flat["stream.teacher"] = str(info.teacher)
    _flatten("", json.loads(json.dumps(extra)), flat)
    return json.loads(json.dumps(flat))


def check_fingerprint(saved: dict[str, Any], current: dict[str, Any], where: str = "checkpoint") -> None:
    """Raise a one-line ``ValueError`` naming the first field that differs and both values, e.g.
    ``cannot resume runs/r: online.a_thr was 0.8, now 0.5``."""
    keys = [k for k in _PRIORITY if k in saved or k in current]
    keys += sorted((set(saved) | set(current)) - set(keys))
    missing = object()
    for k in keys:
        a, b = saved.get(k, missing), current.get(k, missing)
        if a != b:
            a_s = "<absent>" if a is missing else json.dumps(a)
            b_s = "<absent>" if b is missing else json.dumps(b)
            raise ValueError(
                f"cannot resume {where}: {k} was {a_s}, now {b_s} "
                "(resume with the same settings, or use another output folder)"
            )


class CheckpointError(ValueError):
    """A checkpoint cannot be written or read (one-line message naming the folder and the cause)."""


# ---- pytree <-> host arrays (typed PRNG keys are stored as their raw key data) ----------------------


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_host(tree: Any) -> Any:
    """A numpy copy of ``tree`` (typed PRNG keys -> uint32 key data). Blocks until the values are ready,
    so the device buffers may be donated right after this returns."""
    tree = jax.tree_util.tree_map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)
    return jax.tree_util.tree_map(lambda x: np.array(x, copy=True), jax.device_get(tree))


def from_host(host: Any, template: Any) -> Any:
    """Device arrays shaped like ``template`` from :func:`to_host` output (re-wraps PRNG keys and
    places each leaf with the template leaf's sharding when it has one)."""

    def leaf(h: Any, t: Any) -> Any:
        if _is_key(t):
            return jax.random.wrap_key_data(np.asarray(h), impl=jax.random.key_impl(t))
        sharding = getattr(t, "sharding", None)
        arr = np.asarray(h, dtype=t.dtype)
        return (
            jax.device_put(arr, sharding)
            if isinstance(sharding, jax.sharding.Sharding)
            else jax.numpy.asarray(arr)
        )

    return jax.tree_util.tree_map(leaf, host, template)


def _host_template(template: Any) -> Any:
    """numpy zeros with the shapes/dtypes :func:`to_host` would produce for ``template``."""

    def leaf(t: Any) -> Any:
        if _is_key(t):
            t = jax.eval_shape(jax.random.key_data, t)
        return np.zeros(t.shape, t.dtype)

    return jax.tree_util.tree_map(leaf, template)


def _check_shapes(host: Any, template: Any) -> None:
    flat_h = jax.tree_util.tree_leaves_with_path(host)
    flat_t = jax.tree_util.tree_leaves(_host_template(template))
    for (path, h), t in zip(flat_h, flat_t):
        if np.shape(h) != t.shape:
            raise ValueError(
                f"checkpoint leaf {jax.tree_util.keystr(path)} has shape {np.shape(h)}, "
                f"this run expects {t.shape}"
            )


class StreamCheckpointer:
    """Orbax ``CheckpointManager`` for one online run (see module docstring).

    Args:
      directory: where checkpoints go (created; e.g. ``<out>/checkpoints``).
      fingerprint: JSON-able dict identifying the run (:func:`make_fingerprint`, or any dict; nested
        dicts are flattened to dotted names such as ``model.num_classes``); a checkpoint with a
        different fingerprint is refused on restore with a message naming the first differing field.
      every_frames: save when the cursor crosses a multiple of this (0 disables periodic saves; forced
        saves with :meth:`save` still work).
      keep: keep the last ``keep`` checkpoints (>= 1).
      name: how refusals name the run (default: the checkpoint directory), e.g. the run's output folder.
      log: where notes go (a corrupt checkpoint skipped on restore); default: stderr.
    """

    def __init__(
        self,
        directory: str | Path,
        fingerprint: dict[str, Any],
        every_frames: int,
        keep: int = 3,
        name: str | None = None,
        log: Callable[[str], None] | None = None,
    ):
        if every_frames < 0:
            raise ValueError(f"every_frames must be >= 0, got {every_frames}")
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = Path(directory).absolute()
        flat: dict[str, Any] = {}
        _flatten("", json.loads(json.dumps(fingerprint)), flat)  # nested dicts -> dotted field names
        self.fingerprint = flat
        self.every_frames = int(every_frames)
        self.keep = int(keep)
        self.name = name if name is not None else str(self.directory)
        self._log = log if log is not None else (lambda msg: print(msg, file=sys.stderr))
        self._manager_: ocp.CheckpointManager | None = None
        self._last_cursor: int | None = None

    @property
    def _manager(self) -> ocp.CheckpointManager:
        """The orbax manager, made (and the directory created) on first use: a run that is never
        interrupted and saves nothing periodically leaves no checkpoint folder."""
        if self._manager_ is None:
            options = ocp.CheckpointManagerOptions(
                max_to_keep=self.keep,
                create=True,
                enable_async_checkpointing=False,  # the state is a few MB; synchronous keeps saves simple
                cleanup_tmp_directories=True,  # partial saves of a killed process
            )
            self._manager_ = ocp.CheckpointManager(
                self.directory, options=options, item_names=("state", "per_frame", "meta")
            )
        return self._manager_

    # ---- queries -------------------------------------------------------------------------------

    def steps(self) -> list[int]:
        """Cursors of the complete checkpoints on disk, ascending."""
        if self._manager_ is None and not self.directory.is_dir():
            return []
        self._manager.reload()
        return sorted(int(s) for s in self._manager.all_steps())

    def latest_cursor(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    # ---- save ----------------------------------------------------------------------------------

    def save(self, state: Any, per_frame: dict[str, np.ndarray]) -> bool:
        """Save now (forced; e.g. at the end of the run or after an interrupt).

        Args:
          state: the :class:`~jitnet_jax.online.engine.OnlineState` (device arrays; copied to host first).
          per_frame: per-frame stats of frames ``0 .. cursor-1`` (runner's per-frame dict).
        Returns:
          True if a checkpoint was written; False when one for this cursor already exists or no frame
          has been processed.
        """
        host = to_host(state)  # copies; nothing below touches device buffers
        cursor = int(host.cursor)
        self._last_cursor = cursor
        pf = {k: np.ascontiguousarray(v) for k, v in per_frame.items()}
        n = len(pf["frame"]) if "frame" in pf else 0
        if n != cursor:
            raise ValueError(f"per_frame has {n} frames but the state's cursor is {cursor}")
        if cursor == 0 or cursor in self.steps():
            return False
        meta = {
            "fingerprint": self.fingerprint,
            "cursor": cursor,
            "per_frame": {k: [list(v.shape), str(v.dtype)] for k, v in pf.items()},
        }
        try:
            self._manager.save(
                cursor,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(_state_dict(host)),
                    per_frame=ocp.args.StandardSave(pf),
                    meta=ocp.args.JsonSave(meta),
                ),
                force=True,
            )
            self._manager.wait_until_finished()
        except Exception as e:  # ENOSPC, permissions, ...: orbax never renamed the partial save into place
            prev = [c for c in self.steps() if c != cursor]
            kept = f"the checkpoint at frame {prev[-1]} is intact" if prev else "no earlier checkpoint exists"
            raise CheckpointError(
                f"cannot save checkpoint at frame {cursor} in {self.directory}: {_one_line(e)}; {kept}"
            ) from None
        return True

    def due(self, start: int, end: int) -> bool:
        """Whether a periodic save is due once frames ``[start, end)`` are done: the cursor crossed a
        multiple of ``every_frames`` (what the host pipeline asks before it copies the state)."""
        return bool(self.every_frames) and end // self.every_frames > start // self.every_frames

    def on_chunk(self, state: Any, chunk: Any, stats: Any, per_frame: dict[str, np.ndarray]) -> bool:
        """Save when the cursor crossed a multiple of ``every_frames`` since the last call (a hand-driven
        loop's per-chunk hook; the host pipeline asks :meth:`due` instead)."""
        cursor = len(per_frame["frame"])
        prev = self._last_cursor
        if prev is None:  # first chunk of this process: it started at the chunk's first frame
            prev = int(chunk.start) if chunk is not None else 0
        self._last_cursor = cursor
        if self.due(prev, cursor):
            return self.save(state, per_frame)
        return False

    def on_chunk_callback(self, stop: GracefulStop | None = None) -> Callable[..., None]:
        """An ``on_chunk`` for ``run_stream`` that saves periodically and, once ``stop`` is set, saves
        and raises :class:`Interrupted` (the run ends after the current chunk)."""

        def callback(state: Any, chunk: Any, stats: Any, per_frame: dict[str, np.ndarray]) -> None:
            self.on_chunk(state, chunk, stats, per_frame)
            if stop is not None and stop.is_set():
                self.save(state, per_frame)
                raise Interrupted(len(per_frame["frame"]), stop.signum)

        return callback

    # ---- restore -------------------------------------------------------------------------------

    def read_meta(self, cursor: int) -> dict[str, Any]:
        """The ``meta`` item of the checkpoint at ``cursor``; :class:`CheckpointError` if unreadable."""
        try:
            restored = self._manager.restore(cursor, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
            meta = restored["meta"]
            if not isinstance(meta, dict) or not {"fingerprint", "cursor", "per_frame"} <= set(meta):
                raise ValueError("meta item lacks fingerprint/cursor/per_frame")
        except Exception as e:
            raise CheckpointError(
                f"checkpoint {self.directory / str(cursor)} is unreadable ({_one_line(e)})"
            ) from None
        return meta

    def restore(self, cursor: int, template: Any) -> tuple[Any, dict[str, np.ndarray]]:
        """Restore the checkpoint at ``cursor`` into arrays shaped like ``template`` (an OnlineState of
        this run, e.g. ``runner.new_state(cfg, key, (H, W))``).

        Raises:
          ValueError: the checkpoint's fingerprint differs (names the first differing field).
          CheckpointError: the checkpoint is missing, truncated or otherwise unreadable.
        """
        meta = self.read_meta(cursor)
        check_fingerprint(meta["fingerprint"], self.fingerprint, where=self.name)
        where = self.directory / str(cursor)
        try:
            state_t = _state_dict(_host_template(template))
            pf_t = {k: np.zeros(tuple(shape), np.dtype(dt)) for k, (shape, dt) in meta["per_frame"].items()}
            restored = self._manager.restore(
                cursor,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(state_t), per_frame=ocp.args.StandardRestore(pf_t)
                ),
            )
            host_state = _state_from_dict(restored["state"], template)
            pf = {k: np.asarray(v) for k, v in restored["per_frame"].items()}
        except Exception as e:
            raise CheckpointError(f"checkpoint {where} is unreadable ({_one_line(e)})") from None
        _check_shapes(host_state, template)
        if int(np.asarray(host_state.cursor)) != int(cursor) or len(pf.get("frame", ())) != int(cursor):
            raise CheckpointError(
                f"checkpoint {where} is inconsistent (its cursor or frame count is not {cursor})"
            )
        state = from_host(host_state, template)
        self._last_cursor = int(cursor)
        return state, pf

    def restore_latest(self, template: Any) -> tuple[Any, dict[str, np.ndarray]] | None:
        """``(state, per_frame)`` from the newest readable checkpoint, or None if there is none.

        An unreadable (corrupt, truncated) checkpoint is skipped with a note and the next older one is
        tried: the run then recomputes the frames in between, with the same results. A fingerprint
        mismatch is never skipped (``ValueError``). If every checkpoint is unreadable the newest one's
        :class:`CheckpointError` is raised.
        """
        first_error: CheckpointError | None = None
        for cursor in reversed(self.steps()):
            try:
                return self.restore(cursor, template)
            except CheckpointError as e:
                first_error = first_error or e
                self._log(f"warning: {e}; trying an older checkpoint")
        if first_error is not None:
            raise first_error
        return None

    def close(self) -> None:
        if self._manager_ is not None:
            self._manager_.wait_until_finished()
            self._manager_.close()

    def __enter__(self) -> StreamCheckpointer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _one_line(e: BaseException) -> str:
    """``str(e)`` on one line (orbax/tensorstore messages span lines), at most 300 characters."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# Orbax stores dicts/lists robustly; flax struct dataclasses are converted to nested dicts by path.


def _leaf_names(tree: Any) -> list[str]:
    """One readable, unique, filesystem-safe name per leaf: flatten index + sanitised key path."""
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]
    return [f"{i:04d}_" + re.sub(r"[^A-Za-z0-9_]+", "_", p).strip("_") for i, p in enumerate(paths)]


def _state_dict(tree: Any) -> dict[str, Any]:
    """Flat dict ``{name: leaf}`` of the tree's leaves (orbax stores plain dicts robustly)."""
    return dict(zip(_leaf_names(tree), jax.tree_util.tree_leaves(tree)))


def _state_from_dict(data: dict[str, Any], template: Any) -> Any:
    names = _leaf_names(_host_template(template))
    treedef = jax.tree_util.tree_structure(template)
    return jax.tree_util.tree_unflatten(treedef, [data[n] for n in names])

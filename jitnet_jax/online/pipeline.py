"""The one host loop that drives compiled chunks: dispatch ahead, one host sync per unit, hooks.

Single runs (:func:`~jitnet_jax.online.runner.run_stream`), live runs (:func:`~jitnet_jax.online.live.run_live`)
and sweeps (:func:`~jitnet_jax.sweep.driver.run_sweep`) differ only in what they feed the device and how a
unit's statistics become per-frame rows; this module is everything else:

* **dispatch ahead**: a *unit* (one chunk; a live segment of chunks up to a teacher frame) is dispatched and
  the host reads the statistics of the unit ``ahead`` units back, so decoding, video writing and checkpoints
  of unit ``k`` overlap the device's work on unit ``k + 1``;
* **one host sync per unit** (:func:`read_host`): the unit's stats (and any extra device values, e.g. the next
  teacher frame) come back in one transfer; arrays spread over several processes are gathered with
  ``multihost_utils.process_allgather`` (a ``device_get`` of them fails in a multi-process run);
* **checkpoints**: the state after a unit is copied on the device only when the checkpointer says a save is
  due after it (the next dispatch donates the state), and saved once the unit's rows are on the host;
* **graceful stop**: ``should_stop`` is polled after every sync; the loop then dispatches nothing more,
  drains what is in flight and (with a checkpointer) saves the state at that chunk boundary;
* **progress**: a tqdm bar fed by the rows of every sync.

:func:`device_chunks` moves chunks to the device inside the prefetch thread, so the host-to-device copy
overlaps the device's compute as well.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from jitnet_jax.online.rows import PerFrameBuffer

Rows = dict[str, np.ndarray]


class Checkpointing(Protocol):
    """What the pipeline needs of a checkpointer (:class:`~jitnet_jax.online.checkpoint.StreamCheckpointer`)."""

    def due(self, start: int, end: int) -> bool:
        """Whether a save is due once frames ``[start, end)`` are done."""
        ...

    def save(self, state: Any, per_frame: Rows) -> bool:
        """Save ``state`` with the per-frame rows of every frame before its cursor."""
        ...


def read_host(tree: Any) -> Any:
    """The host sync: numpy copies of a pytree of device arrays.

    Arrays that are not fully addressable from this process (a member axis sharded over the devices of several
    hosts) are gathered with ``multihost_utils.process_allgather`` (every process must call this in the same
    order, as every process runs the same loop); the rest is one ``jax.device_get``."""

    def gather(x: Any) -> Any:
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return x

    return jax.device_get(jax.tree_util.tree_map(gather, tree))


def device_chunks(items: Iterable[Any], put: Callable[[Any], Any]) -> Iterator[tuple[Any, Any]]:
    """``(item, put(item))`` for every item: run inside :func:`~jitnet_jax.data.prefetch.prefetch`'s thread,
    so the host-to-device copy of chunk ``k + 1`` overlaps the device's compute on chunk ``k``."""
    it = iter(items)
    try:
        for item in it:
            yield item, put(item)
    finally:  # a stopped run closes the source now (e.g. its video reader), not when it is collected
        close = getattr(it, "close", None)
        if close is not None:
            close()


@dataclasses.dataclass
class Unit:
    """Work dispatched between two host syncs.

    Attributes:
      host: what ``rows`` and ``on_chunk`` need of the unit's input (a chunk, or a list of chunks).
      stats: the device statistics the unit returned (any pytree).
      start, end: the stream frames ``[start, end)`` the unit covers.
      extra: device values read at the same sync (e.g. the next teacher frame).
      saved: a device copy of the state after this unit, when a checkpoint is due after it.
    """

    host: Any
    stats: Any
    start: int
    end: int
    extra: Any = None
    saved: Any = None


@dataclasses.dataclass
class Synced:
    """A unit whose statistics are on the host: ``stats`` (numpy), ``rows`` (one dict per member),
    ``extra`` (numpy)."""

    unit: Unit
    stats: Any
    rows: list[Rows]
    extra: Any


class ChunkPipeline:
    """The host side of a run: owns the (donated) device state, the units in flight and the per-frame rows.

    Args:
      state: the device state (any pytree: an online state, or a sweep's stacked state).
      rows: ``rows(unit.host, host_stats) -> [rows of member 0, ...]`` (padding frames dropped).
      buffers: one :class:`~jitnet_jax.online.rows.PerFrameBuffer` per member (rows before the start included).
      ahead: units kept in flight before the oldest is read (1: dispatch one ahead; 0: read each at once).
      on_chunk: ``on_chunk(unit.host, host_stats, per_frame_so_far)`` after every sync (member 0's rows).
      checkpointer: saves the state where it says a save is due, and at a stop, with
        ``checkpoint_rows(every member's rows)`` (default: member 0's rows).
      should_stop: polled after every sync; True ends the run at that chunk boundary.
      progress: ``progress(synced, buffers)`` after every sync (e.g. a :class:`Progress`).
    """

    def __init__(
        self,
        state: Any,
        rows: Callable[[Any, Any], list[Rows]],
        buffers: Sequence[PerFrameBuffer],
        *,
        ahead: int = 1,
        on_chunk: Callable[[Any, Any, Rows], None] | None = None,
        checkpointer: Checkpointing | None = None,
        checkpoint_rows: Callable[[list[Rows]], Rows] | None = None,
        should_stop: Callable[[], bool] | None = None,
        progress: Callable[[Synced, Sequence[PerFrameBuffer]], None] | None = None,
    ) -> None:
        if ahead < 0:
            raise ValueError(f"ahead must be >= 0, got {ahead}")
        self.state = state
        self._rows = rows
        self.buffers = list(buffers)
        self.ahead = ahead
        self._on_chunk = on_chunk
        self._checkpointer = checkpointer
        self._checkpoint_rows = checkpoint_rows
        self._should_stop = should_stop
        self._progress = progress
        self._pending: collections.deque[Unit] = collections.deque()
        self.stopped = False

    def step(self, fn: Callable[[Any], tuple[Any, Any]]) -> Any:
        """Dispatch ``state, stats = fn(state)`` (asynchronous; ``fn`` donates the state). Returns ``stats``."""
        self.state, stats = fn(self.state)
        return stats

    def submit(self, host: Any, stats: Any, start: int, end: int, extra: Any = None) -> list[Synced]:
        """Close a unit (its chunks are dispatched) and read the units more than ``ahead`` back.

        Returns the units read by this call (with ``ahead=0``, this unit)."""
        saved = None
        if self._checkpointer is not None and self._checkpointer.due(start, end):
            # the state after this unit; the next dispatch donates it, so copy it unless it is read first
            saved = self.state if self.ahead == 0 else jax.tree_util.tree_map(jnp.copy, self.state)
        self._pending.append(Unit(host, stats, start, end, extra, saved))
        out = []
        while len(self._pending) > self.ahead:
            out.append(self._sync(self._pending.popleft()))
        return out

    def drain(self) -> list[Synced]:
        """Read every unit in flight; after a stop, save the state at this boundary (with a checkpointer)."""
        out = [self._sync(self._pending.popleft()) for _ in range(len(self._pending))]
        if self.stopped and self._checkpointer is not None:
            self._checkpointer.save(self.state, self._saved_rows())
        return out

    def _sync(self, unit: Unit) -> Synced:
        stats, extra = read_host((unit.stats, unit.extra))  # the one host sync of the unit
        rows = self._rows(unit.host, stats)
        for buf, r in zip(self.buffers, rows):
            buf.append(r)
        synced = Synced(unit, stats, rows, extra)
        if self._progress is not None:
            self._progress(synced, self.buffers)
        if self._on_chunk is not None:
            self._on_chunk(unit.host, stats, self.buffers[0].view())
        if unit.saved is not None:
            self._checkpointer.save(unit.saved, self._saved_rows())
        if not self.stopped and self._should_stop is not None and self._should_stop():
            self.stopped = True
        return synced

    def _saved_rows(self) -> Rows:
        """The rows a checkpoint stores (views, no copy)."""
        if self._checkpoint_rows is None:
            return self.buffers[0].view()
        return self._checkpoint_rows([b.view() for b in self.buffers])

    def per_frame(self) -> list[Rows]:
        """Copies of every member's rows so far."""
        return [{k: v.copy() for k, v in b.view().items()} for b in self.buffers]


class Progress:
    """A tqdm bar over stream frames, its postfix computed from the rows so far.

    Args:
      total, initial: frames of the run and frames done before it started.
      desc: the bar's label.
      postfix: ``postfix(synced, buffers) -> {name: value}`` shown after every sync.
    """

    def __init__(
        self,
        total: int,
        initial: int,
        desc: str,
        postfix: Callable[[Synced, Sequence[PerFrameBuffer]], dict[str, Any]] | None = None,
    ) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, initial=initial, unit="frame", desc=desc, dynamic_ncols=True)
        self._postfix = postfix

    def __call__(self, synced: Synced, buffers: Sequence[PerFrameBuffer]) -> None:
        self._bar.update(synced.unit.end - synced.unit.start)
        if self._postfix is not None:
            self._bar.set_postfix(self._postfix(synced, buffers))

    def close(self) -> None:
        self._bar.close()

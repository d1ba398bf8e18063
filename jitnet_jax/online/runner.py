"""Host side of the online loop: feed a stream source chunk by chunk to the compiled ``run_chunk``.

Chunks are decoded in a background thread (:func:`~jitnet_jax.data.prefetch.prefetch`) while the device
works on the previous one; per-frame statistics come back to the host once per chunk.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jitnet_jax.data.prefetch import prefetch
from jitnet_jax.data.types import Chunk, StreamSource
from jitnet_jax.eval.costs import CostModel
from jitnet_jax.eval.summary import summarize_per_frame
from jitnet_jax.online.engine import Knobs, OnlineConfig, OnlineState, init_online_state, make_run_chunk
from jitnet_jax.student.metrics import iou_from_counts
from jitnet_jax.student.step import init_state

PER_FRAME_KEYS = ("frame", "teacher", "updates", "delta", "acc", "tp", "fp", "fn")
#: dtypes of a chunk's labels and weights as the compiled ``run_chunk`` receives them.
LABEL_DTYPE = np.uint8
WEIGHT_DTYPE = np.uint8  # the region map (0 ignore, 1 background, 2 box; jitnet_jax.data.types)


def chunk_abstract(t_chunk: int, height: int, width: int) -> tuple[jax.ShapeDtypeStruct, ...]:
    """Abstract ``(frames, labels, weights, valid)`` of a chunk: the static shapes ``run_chunk`` is
    compiled for (uint8 ``[T, H, W, 3]``, ``LABEL_DTYPE [T, H, W]``, ``WEIGHT_DTYPE [T, H, W]``, bool ``[T]``)."""
    return (
        jax.ShapeDtypeStruct((t_chunk, height, width, 3), np.uint8),
        jax.ShapeDtypeStruct((t_chunk, height, width), LABEL_DTYPE),
        jax.ShapeDtypeStruct((t_chunk, height, width), WEIGHT_DTYPE),
        jax.ShapeDtypeStruct((t_chunk,), np.bool_),
    )


@dataclasses.dataclass
class StreamResult:
    """What a run produced.

    Attributes:
      state: final online state (on device).
      per_frame: numpy arrays over the processed frames: ``frame`` int64 [N], ``teacher`` bool [N],
        ``updates`` int32 [N], ``delta`` int32 [N], ``acc`` float32 [N], ``tp``/``fp``/``fn`` int64 [N, C].
      wall_s: seconds from the first chunk's dispatch to the last chunk's stats on the host: device
        compute plus whatever host work (decoding, ``on_chunk``) it did not hide (compilation excluded).
      compile_s: seconds spent compiling.
    """

    state: OnlineState
    per_frame: dict[str, np.ndarray]
    wall_s: float
    compile_s: float


def empty_per_frame(num_classes: int) -> dict[str, np.ndarray]:
    """Per-frame arrays of length 0 (the start of a fresh run)."""
    out = {
        "frame": np.zeros(0, np.int64),
        "teacher": np.zeros(0, bool),
        "updates": np.zeros(0, np.int32),
        "delta": np.zeros(0, np.int32),
        "acc": np.zeros(0, np.float32),
    }
    for k in ("tp", "fp", "fn"):
        out[k] = np.zeros((0, num_classes), np.int64)
    return out


def chunk_per_frame(chunk: Chunk, stats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Host per-frame rows of one chunk's device stats (padding frames dropped)."""
    n = int(chunk.valid.sum())
    conf = np.asarray(stats["confusion"][:n], np.int64)
    tp = np.diagonal(conf, axis1=1, axis2=2)
    return {
        "frame": np.arange(chunk.start, chunk.start + n, dtype=np.int64),
        "teacher": np.asarray(stats["teacher"][:n], bool),
        "updates": np.asarray(stats["updates"][:n], np.int32),
        "delta": np.asarray(stats["delta"][:n], np.int32),
        "acc": np.asarray(stats["acc"][:n], np.float32),
        "tp": tp,
        "fp": conf.sum(1) - tp,
        "fn": conf.sum(2) - tp,
    }


def concat_per_frame(parts: list[dict[str, np.ndarray]], num_classes: int) -> dict[str, np.ndarray]:
    """Concatenate per-frame dicts."""
    if not parts:
        return empty_per_frame(num_classes)
    return {k: np.concatenate([p[k] for p in parts]) for k in PER_FRAME_KEYS}


class PerFrameBuffer:
    """Per-frame stats appended chunk by chunk into arrays that grow by doubling.

    ``view()`` returns the rows so far as numpy views (no copy), so handing "the stats so far" to a
    callback after every chunk costs O(1) instead of re-concatenating the whole stream each time.
    A view stays correct after later appends (rows are never rewritten), but does not grow.
    """

    def __init__(self, num_classes: int, initial: dict[str, np.ndarray] | None = None) -> None:
        self._data = empty_per_frame(num_classes)
        self._n = 0
        if initial is not None and len(initial["frame"]):
            self.append(initial)

    def __len__(self) -> int:
        return self._n

    def append(self, rows: dict[str, np.ndarray]) -> None:
        k = len(rows["frame"])
        need = self._n + k
        cap = len(self._data["frame"])
        if need > cap:
            new_cap = max(need, 2 * cap, 256)
            grown = {}
            for key, arr in self._data.items():
                buf = np.zeros((new_cap, *arr.shape[1:]), arr.dtype)
                buf[: self._n] = arr[: self._n]
                grown[key] = buf
            self._data = grown
        for key in PER_FRAME_KEYS:
            self._data[key][self._n : need] = rows[key]
        self._n = need

    def view(self) -> dict[str, np.ndarray]:
        """The rows so far (views into the buffer)."""
        return {k: v[: self._n] for k, v in self._data.items()}


def _chunk_args(cfg: OnlineConfig, state: OnlineState, height: int, width: int) -> tuple[Any, ...]:
    """``(knobs, state, frames, labels, weights, valid)`` for lowering the chunk program, the state as
    shapes and dtypes only (``jax.ShapeDtypeStruct``): a state restored from a checkpoint holds arrays
    committed to their device and a fresh one does not, and lowering from the arrays themselves made two
    different programs of them (a ``--resume`` compiled afresh instead of loading the cached program)."""
    abstract_state = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, weak_type=getattr(x, "weak_type", False)), state
    )
    return (Knobs.from_config(cfg), abstract_state, *chunk_abstract(cfg.chunk_size, height, width))


def lower_chunk(
    cfg: OnlineConfig, state: OnlineState, height: int, width: int, keep_preds: bool = False
) -> Any:
    """The engine's ``run_chunk`` lowered (``jax.stages.Lowered``) for chunks of ``cfg.chunk_size``
    frames of ``(height, width)`` and states shaped like ``state`` (fresh or restored: the same program)."""
    return make_run_chunk(cfg, keep_preds).lower(*_chunk_args(cfg, state, height, width))


def compile_chunk(
    cfg: OnlineConfig,
    state: OnlineState,
    height: int,
    width: int,
    keep_preds: bool = False,
    keep_executable: bool = False,
) -> Any:
    """The engine's ``run_chunk`` compiled ahead of time for chunks of ``cfg.chunk_size`` frames of
    ``(height, width)`` and states shaped like ``state``: ``fn(knobs, state, frames, labels, weights,
    valid) -> (state, stats)``. Fixed shapes: calling it never recompiles.

    ``keep_executable``: load the executable from (or store it in) the executable cache
    (:func:`~jitnet_jax.compile_cache.load_or_compile`), which skips tracing and lowering on a warm run."""

    def lower() -> Any:
        return lower_chunk(cfg, state, height, width, keep_preds)

    if not keep_executable:
        return lower().compile()
    from jitnet_jax.compile_cache import executable_key, load_or_compile

    leaves, tree = jax.tree_util.tree_flatten(_chunk_args(cfg, state, height, width))
    abstract = [(tuple(x.shape), str(x.dtype), bool(getattr(x, "weak_type", False))) for x in leaves]
    # The program depends on the student config and the argument shapes (the chunk size, and the replay
    # buffer / delayed label in the state); the controller's knobs are traced arguments.
    key = executable_key("run_chunk", repr(cfg.student), str(tree), abstract, keep_preds)
    return load_or_compile("run_chunk", key, lower)[0]


def confusion_from_per_frame(per_frame: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stream totals (tp, fp, fn), each int64 [C]."""
    return per_frame["tp"].sum(0), per_frame["fp"].sum(0), per_frame["fn"].sum(0)


def new_state(
    cfg: OnlineConfig, key: jax.Array, frame_shape: tuple[int, int], keep_executable: bool = False
) -> OnlineState:
    """A fresh online state for frames of ``(H, W)``.

    ``keep_executable``: build it with one compiled program kept in the executable cache
    (:func:`~jitnet_jax.compile_cache.load_or_compile`; the same values, without the seconds that
    dispatching the initialisation op by op costs a fresh process)."""
    shape = tuple(frame_shape)

    def make(k: jax.Array) -> OnlineState:
        return init_online_state(init_state(k, cfg.student, shape), cfg, shape)

    if not keep_executable:
        return make(key)
    from jitnet_jax.compile_cache import executable_key, load_or_compile

    cfg.validate()
    exe_key = executable_key("new_state", repr(cfg), shape, str(key.dtype), tuple(key.shape))
    return load_or_compile("new_state", exe_key, lambda: jax.jit(make).lower(key))[0](key)


def run_stream(
    source: StreamSource,
    cfg: OnlineConfig,
    key: jax.Array | None = None,
    *,
    state: OnlineState | None = None,
    per_frame: dict[str, np.ndarray] | None = None,
    max_frames: int | None = None,
    keep_preds: bool = False,
    on_chunk: Callable[[OnlineState, Chunk, dict[str, np.ndarray], dict[str, np.ndarray]], None]
    | None = None,
    progress: bool = True,
    prefetch_depth: int = 2,
    should_stop: Callable[[], bool] | None = None,
    compiled: Any | None = None,
) -> StreamResult:
    """Run online distillation over ``source``.

    Args:
      source: a :class:`~jitnet_jax.data.types.StreamSource`.
      cfg: online settings (validated here).
      key: PRNG key for a fresh student (ignored when ``state`` is given).
      state: resume from this state; the stream restarts at ``state.cursor``.
      per_frame: per-frame stats of the frames before ``state.cursor`` (when resuming).
      max_frames: stop after this many stream frames (counted from frame 0).
      keep_preds: keep predictions in the stats passed to ``on_chunk`` (``stats["pred"]``).
      on_chunk: called after every chunk with ``(state, chunk, chunk_stats, per_frame_so_far)``;
        used for videos, checkpoints and logging. ``state`` must not be kept across calls (donated).
      progress: show a tqdm bar with frames/s, live mIoU, delta and teacher %.
      should_stop: polled after every chunk; when it returns True the run stops there (e.g. on SIGTERM)
        and the partial result is returned.
      compiled: a :func:`compile_chunk` executable for this config, state and frame size, to reuse
        across runs (None: compile here).
    """
    cfg.validate()
    info = source.info
    if info.num_classes != cfg.student.model.num_classes:
        raise ValueError(
            f"stream {info.name} has {info.num_classes} classes {info.class_names} but the student is "
            f"configured for model.num_classes={cfg.student.model.num_classes}"
        )
    total = info.num_frames if max_frames is None else min(info.num_frames, max_frames)
    if state is None:
        if key is None:
            raise ValueError("run_stream needs a PRNG key for a fresh student")
        state = new_state(cfg, key, (info.height, info.width))
    start = int(state.cursor)
    if per_frame is not None and len(per_frame["frame"]) and int(per_frame["frame"][-1]) + 1 != start:
        raise ValueError(f"per-frame stats end at frame {int(per_frame['frame'][-1])}, state is at {start}")
    rows_so_far = PerFrameBuffer(info.num_classes, per_frame)
    knobs = Knobs.from_config(cfg)
    t_chunk = cfg.chunk_size
    h, w = info.height, info.width
    t0 = time.perf_counter()
    if compiled is None:
        compiled = compile_chunk(cfg, state, h, w, keep_preds)
    compile_s = time.perf_counter() - t0

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start, unit="frame", desc=info.name, dynamic_ncols=True)
    wall = 0.0
    tp_sum, fp_sum, fn_sum = confusion_from_per_frame(rows_so_far.view())
    teach = int(rows_so_far.view()["teacher"].sum())

    def finish(chunk: Chunk, stats_dev: Any, state_after: OnlineState | None) -> None:
        """Host work of one chunk: read its stats (the host sync), rows, progress bar, ``on_chunk``."""
        nonlocal tp_sum, fp_sum, fn_sum, teach
        stats = jax.device_get(stats_dev)  # the one host sync per chunk
        rows = chunk_per_frame(chunk, stats)
        rows_so_far.append(rows)
        tp_sum += rows["tp"].sum(0)
        fp_sum += rows["fp"].sum(0)
        fn_sum += rows["fn"].sum(0)
        teach += int(rows["teacher"].sum())
        if bar is not None:
            n_done = int(rows["frame"][-1]) + 1
            miou = iou_from_counts(tp_sum, fp_sum, fn_sum)["miou"]
            bar.update(len(rows["frame"]))
            bar.set_postfix(
                mIoU=f"{miou:.3f}", delta=int(rows["delta"][-1]), teacher=f"{100 * teach / n_done:.1f}%"
            )
        if on_chunk is not None:
            on_chunk(state_after, chunk, stats, rows_so_far.view())

    # Chunk k + 1 is dispatched before chunk k's stats are read, so the host's per-chunk work (rows,
    # video, checkpoints) overlaps the device's compute. ``on_chunk`` needs the state after chunk k,
    # which chunk k + 1 donates: a device-side copy is taken first (only when there is an ``on_chunk``).
    pending: tuple[Chunk, Any, OnlineState | None] | None = None
    t_first: float | None = None
    try:
        for chunk in prefetch(limit_chunks(source, t_chunk, total, start), prefetch_depth):
            if t_first is None:
                t_first = time.perf_counter()
            keep = jax.tree_util.tree_map(jnp.copy, state) if on_chunk is not None else None
            state, stats_dev = compiled(knobs, state, chunk.frames, chunk.labels, chunk.weights, chunk.valid)
            if pending is not None:
                prev_chunk, prev_stats, _ = pending
                finish(prev_chunk, prev_stats, keep)
                if should_stop is not None and should_stop():
                    pending = None
                    finish(chunk, stats_dev, state)  # drain the chunk in flight, then stop
                    break
            pending = (chunk, stats_dev, None)
        else:
            if pending is not None:
                finish(pending[0], pending[1], state)
                pending = None
        if t_first is not None:
            wall = time.perf_counter() - t_first
    finally:
        if bar is not None:
            bar.close()
    pf = {k: v.copy() for k, v in rows_so_far.view().items()}
    return StreamResult(state, pf, wall, compile_s)


def limit_chunks(source: StreamSource, chunk_size: int, total: int, start: int = 0) -> Iterator[Chunk]:
    """Chunks of ``source`` from frame ``start`` that end at frame ``total`` (later frames marked invalid)."""
    for chunk in source.chunks(chunk_size, start=start):
        if chunk.start >= total:
            return
        over = chunk.start + np.arange(chunk_size) >= total
        if over.any():
            chunk = chunk._replace(valid=chunk.valid & ~over)
        yield chunk


def summarize(
    result: StreamResult,
    cfg: OnlineConfig,
    class_names: tuple[str, ...],
    cost: CostModel | None = None,
    gflops: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The run's summary: stream-level IoU (foreground mIoU), teacher fraction, updates, speedups
    (:func:`jitnet_jax.eval.summary.summarize_per_frame`, the one summary every method uses)."""
    return summarize_per_frame(
        result.per_frame,
        class_names,
        cost=cost,
        wall_s=result.wall_s,
        compile_s=result.compile_s,
        a_thr=cfg.a_thr,
        gflops=gflops,
        frames_per_update=cfg.replay_batch,
    )

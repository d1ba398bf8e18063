"""A single run: the engine's ``run_chunk`` compiled for a stream, fed chunk by chunk by the host pipeline.

Chunks are decoded and copied to the device in a background thread (:func:`~jitnet_jax.data.prefetch.prefetch`)
while the device works on the previous one; per-frame statistics come back to the host once per chunk
(:class:`~jitnet_jax.online.pipeline.ChunkPipeline`, the host loop every mode shares).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from jitnet_jax.data.prefetch import prefetch
from jitnet_jax.data.types import REGION_DTYPE, Chunk, StreamSource
from jitnet_jax.online.engine import Knobs, OnlineConfig, OnlineState, init_online_state, make_run_chunk
from jitnet_jax.online.pipeline import Checkpointing, ChunkPipeline, Progress, device_chunks
from jitnet_jax.online.rows import (
    PER_FRAME_KEYS,
    PerFrameBuffer,
    chunk_per_frame,
    concat_per_frame,
    confusion_from_per_frame,
    empty_per_frame,
)
from jitnet_jax.student.metrics import iou_from_counts
from jitnet_jax.student.step import init_state

__all__ = [  # the per-frame helpers live in online.rows; importable from here too
    "PER_FRAME_KEYS",
    "PerFrameBuffer",
    "StreamResult",
    "chunk_per_frame",
    "compile_chunk",
    "concat_per_frame",
    "confusion_from_per_frame",
    "empty_per_frame",
    "limit_chunks",
    "lower_chunk",
    "new_state",
    "run_stream",
]

#: dtypes of a chunk's labels and regions as the compiled ``run_chunk`` receives them.
LABEL_DTYPE = np.uint8


def chunk_abstract(t_chunk: int, height: int, width: int) -> tuple[jax.ShapeDtypeStruct, ...]:
    """Abstract ``(frames, labels, regions, valid)`` of a chunk: the static shapes ``run_chunk`` is
    compiled for (uint8 ``[T, H, W, 3]``, ``LABEL_DTYPE [T, H, W]``, ``REGION_DTYPE [T, H, W]``, bool ``[T]``)."""
    return (
        jax.ShapeDtypeStruct((t_chunk, height, width, 3), np.uint8),
        jax.ShapeDtypeStruct((t_chunk, height, width), LABEL_DTYPE),
        jax.ShapeDtypeStruct((t_chunk, height, width), REGION_DTYPE),
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


def _chunk_args(cfg: OnlineConfig, state: OnlineState, height: int, width: int) -> tuple[Any, ...]:
    """``(knobs, state, frames, labels, regions, valid)`` for lowering the chunk program, the state as
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
    ``(height, width)`` and states shaped like ``state``: ``fn(knobs, state, frames, labels, regions,
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
    on_chunk: Callable[[Chunk, dict[str, np.ndarray], dict[str, np.ndarray]], None] | None = None,
    checkpointer: Checkpointing | None = None,
    progress: bool = True,
    prefetch_depth: int = 2,
    should_stop: Callable[[], bool] | None = None,
    compiled: Any | None = None,
) -> StreamResult:
    """Run online distillation over ``source`` (:class:`~jitnet_jax.online.pipeline.ChunkPipeline`: chunks
    decoded and copied to the device in a background thread, one dispatched ahead, one host sync per chunk).

    Args:
      source: a :class:`~jitnet_jax.data.types.StreamSource`.
      cfg: online settings (validated here).
      key: PRNG key for a fresh student (ignored when ``state`` is given).
      state: resume from this state; the stream restarts at ``state.cursor``.
      per_frame: per-frame rows of the frames before ``state.cursor`` (when resuming).
      max_frames: stop after this many stream frames (counted from frame 0).
      keep_preds: keep predictions in the stats passed to ``on_chunk`` (``stats["pred"]`` uint8 ``[T, H, W]``).
      on_chunk: called after every chunk with ``(chunk, chunk_stats, per_frame_so_far)`` (numpy), e.g. a
        video writer.
      checkpointer: saves the state where it says a save is due (a device copy is taken only then) and when
        ``should_stop`` stops the run (:class:`~jitnet_jax.online.checkpoint.StreamCheckpointer`).
      progress: show a tqdm bar with frames/s, live mIoU, delta and teacher %.
      should_stop: polled after every chunk; when it returns True the run stops at that chunk boundary
        (e.g. on SIGTERM) and the partial result is returned.
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
    knobs = Knobs.from_config(cfg)
    t0 = time.perf_counter()
    if compiled is None:
        compiled = compile_chunk(cfg, state, info.height, info.width, keep_preds)
    compile_s = time.perf_counter() - t0

    buffers = [PerFrameBuffer(info.num_classes, per_frame)]
    bar = Progress(total, start, info.name, _stream_postfix(buffers[0])) if progress else None
    pipe = ChunkPipeline(
        state,
        lambda chunk, stats: [chunk_per_frame(chunk, stats)],
        buffers,
        ahead=1,
        on_chunk=on_chunk,
        checkpointer=checkpointer,
        should_stop=should_stop,
        progress=bar,
    )
    put = jax.device_put
    chunks = device_chunks(limit_chunks(source, cfg.chunk_size, total, start), lambda c: put(tuple(c[:4])))
    wall = 0.0
    t_first: float | None = None
    try:
        for chunk, arrays in prefetch(chunks, prefetch_depth):
            if t_first is None:
                t_first = time.perf_counter()
            stats = pipe.step(lambda s, a=arrays: compiled(knobs, s, *a))
            n = int(chunk.valid.sum())
            pipe.submit(chunk, stats, chunk.start, chunk.start + n)
            if pipe.stopped:
                break
        pipe.drain()
        if t_first is not None:
            wall = time.perf_counter() - t_first
    finally:
        if bar is not None:
            bar.close()
    return StreamResult(pipe.state, pipe.per_frame()[0], wall, compile_s)


def _stream_postfix(buffer: PerFrameBuffer) -> Callable[..., dict[str, Any]]:
    """The progress bar's running mIoU, stride and teacher %, from totals kept as rows arrive."""
    tot = dict(zip(("tp", "fp", "fn"), confusion_from_per_frame(buffer.view())))
    teach = [int(buffer.view()["teacher"].sum())]

    def postfix(synced: Any, buffers: Any) -> dict[str, Any]:
        rows = synced.rows[0]
        for k in tot:
            tot[k] = tot[k] + rows[k].sum(0)
        teach[0] += int(rows["teacher"].sum())
        if not len(rows["frame"]):
            return {}
        n_done = int(rows["frame"][-1]) + 1
        miou = iou_from_counts(tot["tp"], tot["fp"], tot["fn"])["miou"]
        return {
            "mIoU": f"{miou:.3f}",
            "delta": int(rows["delta"][-1]),
            "teacher": f"{100 * teach[0] / n_done:.1f}%",
        }

    return postfix


def limit_chunks(source: StreamSource, chunk_size: int, total: int, start: int = 0) -> Iterator[Chunk]:
    """Chunks of ``source`` from frame ``start`` that end at frame ``total`` (later frames marked invalid)."""
    for chunk in source.chunks(chunk_size, start=start):
        if chunk.start >= total:
            return
        over = chunk.start + np.arange(chunk_size) >= total
        if over.any():
            chunk = chunk._replace(valid=chunk.valid & ~over)
        yield chunk

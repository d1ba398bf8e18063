"""The sweep's host loop: K configurations of the online loop over one stream (or several) in ONE
compiled program (:mod:`jitnet_jax.sweep.compiled`), fed chunk by chunk; per-member results and summaries.

Every member has its own controller knobs, learning-rate schedule kind and peak lr, momentum, seed and
stream (:mod:`jitnet_jax.sweep.grid`); its own student, optimiser state, controller state, replay
buffer and zoo, stacked on a leading ``[K]`` axis (:mod:`jitnet_jax.sweep.members`); frames are decoded
once per chunk and shared. Static settings (model, optimiser name, schedule shape parameters,
``chunk_size``, ``replay_size``, ``replay_batch``, ``zoo_size``, ``zoo_margin``, ``zoo_store_after``) come
from the base config and are the same for every member.
Each member's result equals a separate :func:`~jitnet_jax.online.runner.run_stream` of it (bit-identical
in ``mode="map"`` and ``"lockstep"``, tested). On XLA:CPU ``map`` computes at least as fast as the same
members run one by one and the vmapped modes do not (``experiments/bench_sweep.py``, docs/performance.md
"Sweeps on CPU"); on accelerators the vmap fills the device. Memory is checked before compiling
(:mod:`jitnet_jax.sweep.memory`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jitnet_jax.config import OnlineConfig
from jitnet_jax.data.prefetch import prefetch
from jitnet_jax.data.types import Chunk, StreamSource
from jitnet_jax.eval.summary import summarize_run
from jitnet_jax.online.engine import OnlineState
from jitnet_jax.online.pipeline import (
    Checkpointing,
    ChunkPipeline,
    Progress,
    Synced,
    device_chunks,
    read_host,
)
from jitnet_jax.online.rows import PerFrameBuffer, chunk_per_frame
from jitnet_jax.online.runner import StreamResult
from jitnet_jax.student.metrics import iou_from_counts
from jitnet_jax.sweep.compiled import MODES, make_sweep_chunk
from jitnet_jax.sweep.grid import Member
from jitnet_jax.sweep.members import check_members, init_sweep_state, member_params, member_state
from jitnet_jax.sweep.memory import MemoryEstimate, check_memory


@dataclasses.dataclass
class SweepResult:
    """What a sweep produced.

    Attributes:
      members: the configurations, in order.
      state: final ``[K]``-stacked online state (on device).
      per_frame: one runner-style per-frame dict per member.
      wall_s: seconds running the compiled chunks (all members together, compilation excluded).
      compile_s: seconds compiling.
      memory: the memory estimate checked before compiling.
      stopped: the run was stopped (``should_stop``) before its end; ``state`` is where it stopped.
    """

    members: list[Member]
    state: OnlineState
    per_frame: list[dict[str, np.ndarray]]
    wall_s: float
    compile_s: float
    memory: MemoryEstimate
    stopped: bool = False

    def member_result(self, k: int) -> StreamResult:
        """Member ``k`` as a :class:`~jitnet_jax.online.runner.StreamResult` (``wall_s``/``compile_s`` are the
        sweep's divided by K: the amortised cost of one configuration)."""
        n = len(self.members)
        return StreamResult(
            member_state(getattr(self.state, "cameras", self.state), k),
            self.per_frame[k],
            self.wall_s / n,
            self.compile_s / n,
        )


def _lockstep(
    sources: Sequence[StreamSource],
    chunk_size: int,
    total: int,
    start: int = 0,
    read: Sequence[bool] | None = None,
) -> Any:
    """Chunks of all sources in lockstep from frame ``start``, stacked on a leading stream axis; a source
    that has ended (or is past ``total``) contributes padding (``valid=False``, arrays shaped and typed like
    the others' chunks). A source this process does not read (``read[i]`` False: a camera held by another
    host, whose frames only that host feeds) contributes zeros with its true ``valid`` (from its length), so
    every host makes every camera's rows from the gathered statistics."""
    read = [True] * len(sources) if read is None else list(read)
    iters = [iter(s.chunks(chunk_size, start)) if r else iter(()) for s, r in zip(sources, read)]
    blank: Chunk | None = None
    if not any(read):
        info = sources[0].info
        h, w = info.height, info.width
        blank = Chunk(
            np.zeros((chunk_size, h, w, 3), np.uint8),
            np.zeros((chunk_size, h, w), np.uint8),
            np.zeros((chunk_size, h, w), np.uint8),
            np.zeros(chunk_size, bool),
            0,
        )
    for first in range(start, total, chunk_size):
        got = [next(it, None) for it in iters]
        if blank is None:
            real = next((c for c in got if c is not None), None)
            if real is None:  # every source this process reads has ended before the others
                info = sources[0].info
                real = Chunk(
                    np.zeros((chunk_size, info.height, info.width, 3), np.uint8),
                    np.zeros((chunk_size, info.height, info.width), np.uint8),
                    np.zeros((chunk_size, info.height, info.width), np.uint8),
                    np.zeros(chunk_size, bool),
                    0,
                )
            blank = Chunk(
                np.zeros_like(real.frames),
                np.zeros_like(real.labels),
                np.zeros_like(real.regions),
                np.zeros(chunk_size, bool),
                0,
            )
        parts = []
        for i, c in enumerate(got):
            if not read[i]:
                n_i = sources[i].info.num_frames
                c = blank._replace(start=first, valid=first + np.arange(chunk_size) < n_i)
            c = blank._replace(start=first) if c is None else c
            over = c.start + np.arange(chunk_size) >= total
            parts.append(c._replace(valid=c.valid & ~over))
        yield parts


def run_sweep(
    sources: StreamSource | Sequence[StreamSource],
    base: OnlineConfig,
    members: Sequence[Member],
    *,
    max_frames: int | None = None,
    mode: str = "gated",
    mesh: Any = None,
    memory_budget: int | None = None,
    progress: bool = True,
    prefetch_depth: int = 2,
    class_masks: Any = None,
    coupling: Any = None,
    wrap_state: Callable[[OnlineState], Any] | None = None,
    aligned: bool = False,
    state: Any = None,
    per_frame: Sequence[dict[str, np.ndarray]] | None = None,
    checkpointer: Checkpointing | None = None,
    checkpoint_rows: Callable[[list[dict[str, np.ndarray]]], dict[str, np.ndarray]] | None = None,
    should_stop: Callable[[], bool] | None = None,
    desc: str | None = None,
) -> SweepResult:
    """Run every member over its stream in one compiled program.

    Args:
      sources: one stream, or a list (member ``k`` reads ``sources[members[k].stream]``); all must
        share resolution and class names.
      base: shared settings (model, optimiser name, schedule shape parameters, ``chunk_size``); the
        members override what they sweep.
      members: the K configurations.
      max_frames: stop after this many frames (counted from frame 0).
      mode: ``"gated"`` (vmap, any-teacher gating outside the vmap; default), ``"naive"`` (plain vmap
        of the per-frame cond), ``"map"`` (members one after the other, each over the whole chunk) or
        ``"lockstep"`` (frames outermost, members in turn, in place); see
        :mod:`jitnet_jax.sweep.compiled`.
      mesh: optional ``jax.sharding.Mesh`` with a ``"members"`` axis: the member axis is sharded over
        its devices (see :mod:`jitnet_jax.online.sharding`); K must be a multiple of its size.
      memory_budget: bytes for :func:`check_memory` (default 80% of the memory available per device: host
        memory on CPU, device memory on GPU/TPU, members split over the mesh).
      class_masks: optional bool ``[K, C]``: member k's loss, check and prediction see only its classes
        (a fleet camera's own class groups, :class:`~jitnet_jax.online.engine.Knobs`).
      coupling, wrap_state: a per-frame hook across members and the state it carries
        (``wrap_state(stacked online states)``; see :func:`~jitnet_jax.sweep.compiled.sweep_chunk`): the
        fleet's teacher budget.
      aligned: one stream per member (member k reads ``sources[k]``); with a mesh the frames are split over
        the member axis and each process reads only the streams of the members it holds.
      state, per_frame: resume: the carried state after frame ``start = state.cursor`` (as saved by a
        checkpointer) and every member's rows before it.
      checkpointer, checkpoint_rows, should_stop: as :class:`~jitnet_jax.online.pipeline.ChunkPipeline`'s
        (``checkpoint_rows(rows of every member)`` is the one dict a checkpoint stores).
    """
    base.validate()
    if mode not in MODES:
        raise ValueError(f"sweep mode must be one of {MODES}, got {mode!r}")
    sources = [sources] if not isinstance(sources, (list, tuple)) else list(sources)
    members = list(members)
    check_members(base, members, len(sources))
    info = sources[0].info
    for s in sources[1:]:
        if (s.info.height, s.info.width, s.info.class_names) != (info.height, info.width, info.class_names):
            raise ValueError(
                f"stream {s.info.name} is {s.info.height}x{s.info.width} with classes {s.info.class_names}; "
                f"the sweep's first stream is {info.height}x{info.width} with {info.class_names}"
            )
    if info.num_classes != base.student.model.num_classes:
        raise ValueError(
            f"stream {info.name} has {info.num_classes} classes but the student is configured for "
            f"model.num_classes={base.student.model.num_classes}"
        )
    k_members, t_chunk, h, w = len(members), base.chunk_size, info.height, info.width
    memory = check_memory(base, k_members, (h, w), t_chunk, len(sources), memory_budget, mesh=mesh)
    longest = max(s.info.num_frames for s in sources)
    total = longest if max_frames is None else min(longest, max_frames)
    totals = [min(s.info.num_frames, total) for s in sources]

    mp = member_params(members)
    if class_masks is not None:
        masks = np.asarray(class_masks, bool)
        if masks.shape != (k_members, info.num_classes):
            raise ValueError(f"class masks are {masks.shape}, expected ({k_members}, {info.num_classes})")
        mp = mp.replace(knobs=mp.knobs.replace(class_mask=jnp.asarray(masks)))
    if aligned and len(sources) != k_members:
        raise ValueError(f"aligned: {len(sources)} streams for {k_members} members (one each)")
    start = 0
    if state is None:
        state = init_sweep_state(base, members, (h, w))
        state = wrap_state(state) if wrap_state is not None else state
    else:
        start = int(np.max(read_host(state.cursor)))
    put_members = put_shared = lambda x: x  # noqa: E731
    if mesh is not None:
        from jitnet_jax.online.sharding import replicate, shard_members

        if k_members % mesh.devices.size:
            raise ValueError(
                f"K={k_members} configurations do not split evenly over {mesh.devices.size} devices"
            )
        put_members = lambda x: shard_members(x, mesh)  # noqa: E731
        put_shared = lambda x: replicate(x, mesh)  # noqa: E731
    mp, state = put_members(mp), put_members(state)
    s_n = len(sources)
    read = None
    if mesh is not None and aligned:  # each process reads only the streams of the members it holds
        from jitnet_jax.online.sharding import member_sharding

        held = member_sharding(mesh).addressable_devices_indices_map((k_members,))
        mine = {i for idx in held.values() for i in range(k_members)[idx[0]]}
        read = [i in mine for i in range(k_members)]
    abstract = (
        jax.ShapeDtypeStruct((s_n, t_chunk, h, w, 3), np.uint8),
        jax.ShapeDtypeStruct((s_n, t_chunk, h, w), np.uint8),
        jax.ShapeDtypeStruct((s_n, t_chunk, h, w), np.uint8),  # region map
        jax.ShapeDtypeStruct((s_n, t_chunk), np.bool_),
    )
    if mesh is not None:
        from jitnet_jax.online.sharding import member_sharding, replicated_sharding

        rs = member_sharding(mesh) if aligned else replicated_sharding(mesh)
        abstract = tuple(jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rs) for a in abstract)
        if aligned:
            put_shared = lambda x: shard_members(x, mesh)  # noqa: E731
    t0 = time.perf_counter()
    chunk_fn = make_sweep_chunk(base.student, mode, mesh, coupling=coupling, aligned=aligned)
    compiled = chunk_fn.lower(mp, state, *abstract).compile()
    compile_s = time.perf_counter() - t0

    def stacked(chunks: list[Chunk]) -> tuple[Any, ...]:
        """The lockstep chunks stacked on the stream axis and placed on the device(s) (prefetch thread)."""
        return tuple(
            put_shared(np.stack([getattr(c, f) for c in chunks]))
            for f in ("frames", "labels", "regions", "valid")
        )

    def member_rows(chunks: list[Chunk], stats: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        return [
            chunk_per_frame(chunks[m.stream], {key: v[i] for key, v in stats.items()})
            for i, m in enumerate(members)
        ]

    teacher_frames = [0]  # over all members, kept as rows arrive (not re-summed over the stream per chunk)

    def postfix(synced: Synced, buffers: Sequence[PerFrameBuffer]) -> dict[str, Any]:
        teacher_frames[0] += sum(int(r["teacher"].sum()) for r in synced.rows)
        done = max(1, synced.unit.end)
        return {"teacher": f"{100 * teacher_frames[0] / (len(buffers) * done):.1f}%"}

    bar = Progress(total, start, desc or f"sweep K={k_members}", postfix) if progress else None
    c = info.num_classes
    initial = list(per_frame) if per_frame is not None else [None] * k_members
    pipe = ChunkPipeline(
        state,
        member_rows,
        [PerFrameBuffer(c, initial[i]) for i in range(k_members)],
        ahead=1,
        progress=bar,
        checkpointer=checkpointer,
        checkpoint_rows=checkpoint_rows,
        should_stop=should_stop,
    )
    wall = 0.0
    try:
        t_first = None
        for chunks, arrays in prefetch(
            device_chunks(_lockstep(sources, t_chunk, total, start, read), stacked), prefetch_depth
        ):
            if pipe.stopped:
                break
            if t_first is None:
                t_first = time.perf_counter()
            stats = pipe.step(lambda s, a=arrays: compiled(mp, s, *a))
            start = chunks[0].start
            pipe.submit(chunks, stats, start, min(total, start + t_chunk))
        pipe.drain()
        if t_first is not None:
            wall = time.perf_counter() - t_first
    finally:
        if bar is not None:
            bar.close()
    per_frame = pipe.per_frame()
    for i, m in enumerate(members):
        if pipe.stopped:
            continue
        if len(per_frame[i]["frame"]) != totals[m.stream]:
            raise RuntimeError(
                f"member {i} processed {len(per_frame[i]['frame'])} frames, expected {totals[m.stream]}"
            )
    return SweepResult(members, pipe.state, per_frame, wall, compile_s, memory, stopped=pipe.stopped)


def summarize_sweep(
    result: SweepResult,
    base: OnlineConfig,
    class_names: tuple[str, ...],
    gflops: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """One row per member: the member's fields plus :func:`~jitnet_jax.eval.summary.summarize_run` of its run
    (``wall_s`` is the amortised share; ``sweep_wall_s`` the whole sweep's)."""
    rows = []
    for k, m in enumerate(result.members):
        cfg = m.online_config(base)
        summary = summarize_run(result.member_result(k), cfg, class_names, gflops=gflops)
        rows.append({"member": k, **dataclasses.asdict(m), **summary, "sweep_wall_s": result.wall_s})
    return rows


def stream_miou(per_frame: dict[str, np.ndarray]) -> float:
    """Stream-level mIoU of a per-frame dict."""
    return float(
        iou_from_counts(per_frame["tp"].sum(0), per_frame["fp"].sum(0), per_frame["fn"].sum(0))["miou"]
    )

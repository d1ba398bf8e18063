"""Algorithm 1 of the paper (online distillation) as a compiled stream loop.

One frame (``frame_step``):
  * teacher frame (``cursor == next_teacher``): up to ``u_max`` updates. Before each update the
    student's prediction on the frame (the update's own forward pass) is scored against the teacher
    label with the smoothed min-class IoU; the loop stops as soon as it exceeds ``a_thr``, and a check
    that passes runs no backward pass (:func:`teacher_updates`). The stride
    ``delta`` then doubles if the last measured accuracy passed, else halves, within
    ``[delta_min, delta_max]``, and the next teacher frame is ``cursor + delta``.
    The prediction scored for a teacher frame is the student's prediction from the last forward pass,
    i.e. before the last update (as in the authors' code).
  * any other frame: one prediction. Labels of these frames are used for scoring only.

One chunk (``run_chunk``): ``lax.scan`` of ``frame_step`` over ``T`` frames, the teacher branch
behind ``lax.cond``, the update loop a ``lax.while_loop``; per-frame stats stay on the device and
reach the host once per chunk.

The teacher-frame step (:func:`teacher_step`: the update loop, the accuracy check, the stride, the next
teacher frame, the counters, the replay buffer) is the ONE place the algorithm lives: single runs scan
:func:`frame_step`, sweeps (``jitnet_jax.sweep``) ``vmap``/``lax.map`` the same function, and the
reference loop (``online.reference``) checks it.

The controller's knobs (``a_thr``, ``delta_min``, ``delta_max``, ``u_max``, loss weights, and a sweep
member's peak lr and schedule) are traced arrays in :class:`Knobs`, so the same functions can be
``vmap``-ed over a sweep axis.

**Replay** (beyond the paper; ``OnlineConfig.replay_size = R > 0``): the state carries a ring buffer of
the last ``R`` teacher frames (uint8 frame, uint8 label, uint8 region map) on the device. Each update
trains on the current frame plus ``B - 1`` frames sampled without replacement from the filled slots
(key: the half of ``student.rng``'s split that the update does not keep), BatchNorm per frame,
gradients averaged (:func:`~jitnet_jax.student.step.batch_grads`). The accuracy check and the
prediction stay on the current frame (a check that passes runs no replayed frame); the frame enters
the buffer after its updates. ``R = 0`` has no buffer (``state.replay is None``) and is exactly the
paper's loop.

**Zoo** (beyond the paper; ``OnlineConfig.zoo_size = Z > 0``, docs/zoo.md): the state carries up to ``Z``
earlier students (parameters and BatchNorm statistics, a leading axis ``Z``; :class:`Zoo`). When the first
check of a teacher frame fails, the filled members are scored on the frame (forward passes only, ``vmap``
over ``Z``, the check's metric) and, if the best beats the student by ``zoo_margin`` (and, with
``zoo_need_pass``, the default, passes ``a_thr`` itself), the student continues
from it (its optimiser state is kept) and the update loop checks it again instead of updating. After the
teacher step the student is stored (into an empty slot, else the least recently used one) once
``zoo_store_after`` teacher frames in a row passed their check, if it was updated since it was last
stored or loaded and no member already passes the frame (scored as above). ``Z = 0`` has no zoo
(``state.zoo is None``) and is exactly the loop without it.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp

from jitnet_jax.config import OnlineConfig, StudentConfig
from jitnet_jax.data.types import REGION_BACKGROUND, REGION_BOX, REGION_DTYPE
from jitnet_jax.student.metrics import confusion_matrix, smoothed_min_iou
from jitnet_jax.student.step import (
    StudentState,
    apply_grads,
    apply_model,
    batch_grads,
    forward_check,
    init_state,
    predict,
)

__all__ = [
    "BRANCHES",
    "Knobs",
    "OnlineConfig",
    "OnlineState",
    "ReplayBuffer",
    "Zoo",
    "ZOO_STATS",
    "effective_weight",
    "frame_step",
    "init_online_state",
    "init_replay",
    "init_zoo",
    "zoo_scores",
    "is_teacher_frame",
    "make_run_chunk",
    "new_online_state",
    "next_delta",
    "PendingLabel",
    "init_pending",
    "trains_now",
    "replay_push",
    "replay_sample",
    "run_chunk",
    "student_step",
    "teacher_step",
    "teacher_updates",
]


@flax.struct.dataclass
class Knobs:
    """Traced controller hyperparameters (scalars, or ``[K]`` under a sweep ``vmap``).

    ``lr``/``schedule`` (float32 peak lr, int32 index into :data:`~jitnet_jax.config.SCHEDULES`) are a
    sweep member's optimiser hyperparameters; ``None`` (a single run) uses the config's. ``class_mask``
    (bool ``[C]``) is a fleet camera's own classes under a head over the union of the fleet's class groups
    (the loss, the check and the prediction see only those, :func:`~jitnet_jax.student.step.apply_model`);
    ``None`` (single runs, sweeps): every class.
    """

    a_thr: jnp.ndarray  # float32
    delta_min: jnp.ndarray  # int32
    delta_max: jnp.ndarray  # int32
    u_max: jnp.ndarray  # int32
    fg_weight: jnp.ndarray  # float32
    bg_weight: jnp.ndarray  # float32
    lr: jnp.ndarray | None = None  # float32
    schedule: jnp.ndarray | None = None  # int32
    class_mask: jnp.ndarray | None = None  # bool [C]

    @staticmethod
    def from_config(cfg: OnlineConfig) -> Knobs:
        return Knobs(
            a_thr=jnp.float32(cfg.a_thr),
            delta_min=jnp.int32(cfg.delta_min),
            delta_max=jnp.int32(cfg.delta_max),
            u_max=jnp.int32(cfg.u_max),
            fg_weight=jnp.float32(cfg.fg_weight),
            bg_weight=jnp.float32(cfg.bg_weight),
        )


@flax.struct.dataclass
class ReplayBuffer:
    """The last ``R`` teacher frames, a ring buffer on the device (static shapes).

    Attributes:
      frames: uint8 ``[R, H, W, 3]``; labels: uint8 ``[R, H, W]``; regions: uint8 ``[R, H, W]`` the region
        map (``REGION_DTYPE``; the loss weights are :func:`effective_weight` of it, computed when sampled:
        4x less memory than float32 weights).
      count: int32, teacher frames pushed so far (slot of the next push: ``count % R``).
      batch: ``B`` frames per update (static: part of the tree structure, not a leaf).
    """

    frames: jnp.ndarray
    labels: jnp.ndarray
    regions: jnp.ndarray
    count: jnp.ndarray
    batch: int = flax.struct.field(pytree_node=False, default=1)

    @property
    def size(self) -> int:
        return self.frames.shape[0]


@flax.struct.dataclass
class PendingLabel:
    """A teacher label on its way to the student (simulated teacher latency, ``teacher_delay = d > 0``).

    Attributes:
      frame: uint8 ``[H, W, 3]``; label: uint8 ``[H, W]``; region: uint8 ``[H, W]`` region map
        (``REGION_DTYPE``; the loss weights are :func:`effective_weight` of it, computed on arrival): the
        teacher frame and what the teacher said about it.
      index: int32 stream index of that frame.
      arrival: int32 stream index at which the label reaches the student (-1: nothing in flight).
      delay: ``d`` (static).
    """

    frame: jnp.ndarray
    label: jnp.ndarray
    region: jnp.ndarray
    index: jnp.ndarray
    arrival: jnp.ndarray
    delay: int = flax.struct.field(pytree_node=False, default=1)


@flax.struct.dataclass
class Zoo:
    """Up to ``Z`` earlier students on the device (static ``Z``; docs/zoo.md).

    Attributes:
      params, batch_stats: the members' trees, each leaf like the student's with a leading axis ``Z``
        (float32; an empty slot holds zeros).
      filled: bool ``[Z]``, the slot holds a student.
      used: int32 ``[Z]``, the teacher-frame count when the member was last stored or loaded (the least
        recently used filled slot is replaced once the zoo is full).
      streak: int32, consecutive teacher frames whose check passed (the last check of the frame).
      dirty: bool, the student was updated since it was last stored or loaded.
      forward: int32, the zoo's forward passes so far (scorings, ``Z`` each, and one more per switch: the
        failed check that the switch replaced takes no update); ``switches``, ``stores``: int32 counts.
        The per-frame stats are their differences (:data:`ZOO_STATS`).
      margin: ``zoo_margin``; store_after: ``zoo_store_after``; need_pass: ``zoo_need_pass`` (static).
    """

    params: Any
    batch_stats: Any
    filled: jnp.ndarray
    used: jnp.ndarray
    streak: jnp.ndarray
    dirty: jnp.ndarray
    forward: jnp.ndarray
    switches: jnp.ndarray
    stores: jnp.ndarray
    margin: float = flax.struct.field(pytree_node=False, default=0.05)
    store_after: int = flax.struct.field(pytree_node=False, default=2)
    need_pass: bool = flax.struct.field(pytree_node=False, default=True)

    @property
    def size(self) -> int:
        return self.filled.shape[0]


#: Per-frame stats of a run with a zoo (int32 each): ``zoo_forward`` (its forward passes at the frame),
#: ``zoo_switch`` (1 if the student was replaced by a member), ``zoo_store`` (1 if the student was stored).
ZOO_STATS = {"zoo_forward": "forward", "zoo_switch": "switches", "zoo_store": "stores"}


@flax.struct.dataclass
class OnlineState:
    """Everything the online loop carries from frame to frame.

    Attributes:
      student: the student's params/batch stats/optimiser state/step/rng.
      delta: int32 current teacher stride.
      next_teacher: int32 stream index of the next teacher frame.
      cursor: int32 stream index of the next frame to process.
      teacher_frames: int32 teacher frames so far.
      updates: int32 updates so far.
      replay: the replay buffer, or None without replay (the paper).
      pending: the teacher label in flight with a delayed teacher, or None (the paper).
      zoo: the earlier students, or None without a zoo (the paper).
    """

    student: StudentState
    delta: jnp.ndarray
    next_teacher: jnp.ndarray
    cursor: jnp.ndarray
    teacher_frames: jnp.ndarray
    updates: jnp.ndarray
    replay: ReplayBuffer | None = None
    pending: PendingLabel | None = None
    zoo: Zoo | None = None


def init_replay(cfg: OnlineConfig, frame_shape: tuple[int, int]) -> ReplayBuffer | None:
    """An empty replay buffer for ``cfg.replay_size`` frames of ``(H, W)`` (None when it is 0)."""
    if cfg.replay_size == 0:
        return None
    r, (h, w) = cfg.replay_size, frame_shape
    return ReplayBuffer(
        frames=jnp.zeros((r, h, w, 3), jnp.uint8),
        labels=jnp.zeros((r, h, w), jnp.uint8),
        regions=jnp.zeros((r, h, w), REGION_DTYPE),
        count=jnp.int32(0),
        batch=cfg.replay_batch,
    )


def init_pending(cfg: OnlineConfig, frame_shape: tuple[int, int]) -> PendingLabel | None:
    """Nothing in flight (None without a teacher delay)."""
    if cfg.teacher_delay == 0:
        return None
    h, w = frame_shape
    return PendingLabel(
        frame=jnp.zeros((h, w, 3), jnp.uint8),
        label=jnp.zeros((h, w), jnp.uint8),
        region=jnp.zeros((h, w), REGION_DTYPE),
        index=jnp.int32(-1),
        arrival=jnp.int32(-1),
        delay=cfg.teacher_delay,
    )


def init_zoo(cfg: OnlineConfig, student: StudentState) -> Zoo | None:
    """An empty zoo of ``cfg.zoo_size`` slots shaped like ``student``'s params and batch stats (None when
    it is 0)."""
    if cfg.zoo_size == 0:
        return None
    z = cfg.zoo_size

    def stack(x: jnp.ndarray) -> jnp.ndarray:
        return jnp.zeros((z, *x.shape), x.dtype)

    def zero() -> jnp.ndarray:  # a buffer per leaf: the run donates the state
        return jnp.zeros((), jnp.int32)

    return Zoo(
        params=jax.tree_util.tree_map(stack, student.params),
        batch_stats=jax.tree_util.tree_map(stack, student.batch_stats),
        filled=jnp.zeros((z,), bool),
        used=jnp.zeros((z,), jnp.int32),
        streak=zero(),
        dirty=jnp.ones((), bool),
        forward=zero(),
        switches=zero(),
        stores=zero(),
        margin=float(cfg.zoo_margin),
        store_after=int(cfg.zoo_store_after),
        need_pass=bool(cfg.zoo_need_pass),
    )


def zoo_scores(
    cfg: StudentConfig,
    zoo: Zoo,
    frame: jnp.ndarray,
    label: jnp.ndarray,
    class_mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Each member's smoothed min-class IoU on a teacher frame (the check's metric; forward passes only,
    BatchNorm as :func:`~jitnet_jax.student.step.predict` normalises, ``vmap`` over ``Z``).

    Args:
      frame: uint8 ``[H, W, 3]``; label: int ``[H, W]``; class_mask: optional bool ``[C]`` (a fleet camera's
        classes, :class:`Knobs`).
    Returns:
      float32 ``[Z]``; -1 for empty slots.
    """
    train = cfg.model.bn_mode == "batch"

    def one(params: Any, stats: Any) -> jnp.ndarray:
        logits, _ = apply_model(cfg, params, stats, frame[None], train, class_mask)
        pred = jnp.argmax(logits[0], axis=-1).astype(jnp.int32)
        conf = confusion_matrix(label, pred, cfg.model.num_classes)
        return smoothed_min_iou(conf, cfg.iou_smoothing).astype(jnp.float32)

    scores = jax.vmap(one)(zoo.params, zoo.batch_stats)
    return jnp.where(zoo.filled, scores, -1.0)


def _zoo_score_if(
    cfg: StudentConfig, zoo: Zoo, run: jnp.ndarray, frame: Any, label: Any, class_mask: Any = None
) -> jnp.ndarray:
    """:func:`zoo_scores` behind a ``lax.cond`` on ``run`` (and a filled slot); float32 ``[Z]``, -1 when
    not run."""
    return jax.lax.cond(
        jnp.logical_and(run, zoo.filled.any()),
        lambda: zoo_scores(cfg, zoo, frame, label, class_mask),
        lambda: jnp.full((zoo.size,), -1.0, jnp.float32),
    )


def _zoo_forward(zoo: Zoo, run: jnp.ndarray) -> jnp.ndarray:
    """int32 forward passes of a :func:`_zoo_score_if` (``Z`` when it ran)."""
    return jnp.where(jnp.logical_and(run, zoo.filled.any()), zoo.size, 0).astype(jnp.int32)


def zoo_store(
    cfg: StudentConfig,
    knobs: Knobs,
    zoo: Zoo,
    student: StudentState,
    frame: jnp.ndarray,
    label: jnp.ndarray,
    acc: jnp.ndarray,
    now: jnp.ndarray,
) -> Zoo:
    """The zoo after a teacher frame whose last check measured ``acc``: the streak of passed checks, and
    the store rule (module docstring): once the streak reaches ``store_after``, a student updated since
    it was last stored or loaded is scored against the zoo and stored unless a member already passes the
    frame (an empty slot first, else the least recently used). ``now``: int32 teacher frames so far."""
    passed = acc > knobs.a_thr
    streak = jnp.where(passed, zoo.streak + 1, 0).astype(jnp.int32)
    want = passed & (streak >= zoo.store_after) & zoo.dirty
    scores = _zoo_score_if(cfg, zoo, want, frame, label, knobs.class_mask)
    store = want & ~(scores.max() > knobs.a_thr)
    slot = jnp.argmin(jnp.where(zoo.filled, zoo.used, -1))  # empty slots first, else the oldest use

    def put() -> tuple[Any, Any]:
        def one(stack: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
            return stack.at[slot].set(x)

        return (
            jax.tree_util.tree_map(one, zoo.params, student.params),
            jax.tree_util.tree_map(one, zoo.batch_stats, student.batch_stats),
        )

    params, batch_stats = jax.lax.cond(store, put, lambda: (zoo.params, zoo.batch_stats))
    return zoo.replace(
        params=params,
        batch_stats=batch_stats,
        filled=zoo.filled.at[slot].set(zoo.filled[slot] | store),
        used=zoo.used.at[slot].set(jnp.where(store, now, zoo.used[slot])),
        streak=jnp.where(want, 0, streak).astype(jnp.int32),
        dirty=zoo.dirty & ~want,
        forward=zoo.forward + _zoo_forward(zoo, want),
        stores=zoo.stores + store.astype(jnp.int32),
    )


def init_online_state(
    student: StudentState, cfg: OnlineConfig, frame_shape: tuple[int, int] | None = None
) -> OnlineState:
    """The controller starts with ``delta = delta_min`` and runs the teacher on frame 0.

    ``frame_shape`` ``(H, W)`` is needed with replay or a teacher delay (it sizes their buffers)."""
    if (cfg.replay_size > 0 or cfg.teacher_delay > 0) and frame_shape is None:
        raise ValueError(
            "init_online_state needs frame_shape=(H, W) when replay_size > 0 or teacher_delay > 0"
        )
    return OnlineState(
        student=student,
        delta=jnp.int32(cfg.delta_min),
        next_teacher=jnp.int32(0),
        cursor=jnp.int32(0),
        teacher_frames=jnp.int32(0),
        updates=jnp.int32(0),
        replay=None if frame_shape is None else init_replay(cfg, frame_shape),
        pending=None if frame_shape is None else init_pending(cfg, frame_shape),
        zoo=init_zoo(cfg, student),
    )


def new_online_state(cfg: OnlineConfig, key: jax.Array, frame_shape: tuple[int, int]) -> OnlineState:
    """A fresh student (``init_state(key, ...)``) in a fresh online state for frames of ``(H, W)``."""
    return init_online_state(init_state(key, cfg.student, frame_shape), cfg, frame_shape)


def effective_weight(region: jnp.ndarray, knobs: Knobs) -> jnp.ndarray:
    """The run's loss weights of a source's region map (``jitnet_jax.data.types``).

    Args:
      region: uint8 ``[H, W]`` region map: 0 ignore, 1 background, 2 inside a dilated teacher box.
      knobs: the run's ``fg_weight`` (box) and ``bg_weight`` (background).
    Returns:
      float32 ``[H, W]``: ``fg_weight`` on 2, ``bg_weight`` on 1, 0 on 0.
    """
    return jnp.where(
        region >= REGION_BOX, knobs.fg_weight, jnp.where(region >= REGION_BACKGROUND, knobs.bg_weight, 0.0)
    ).astype(jnp.float32)


def replay_sample(
    buf: ReplayBuffer,
    key: jax.Array,
    frame: jnp.ndarray,
    label: jnp.ndarray,
    weight: jnp.ndarray,
    knobs: Knobs,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """The current frame plus ``B - 1`` buffer frames drawn uniformly without replacement from the filled
    slots. While fewer than ``B - 1`` slots are filled, the missing ones are masked out.

    Args:
      weight: float32 ``[H, W]``, the current frame's effective weight; the buffer frames' weights are
        :func:`effective_weight` of their stored region maps with ``knobs``.
    Returns ``(frames uint8 [B, H, W, 3], labels int32 [B, H, W], weights float32 [B, H, W], mask bool [B])``.
    """
    r, n_rep = buf.size, buf.batch - 1
    filled = jnp.minimum(buf.count, r)
    slots = jnp.arange(r)
    u = jnp.where(slots < filled, jax.random.uniform(key, (r,)), 2.0)
    _, idx = jax.lax.top_k(-u, n_rep)
    mask = jnp.concatenate([jnp.ones((1,), bool), idx < filled])
    frames = jnp.concatenate([frame[None], buf.frames[idx]])
    labels = jnp.concatenate([label[None].astype(jnp.int32), buf.labels[idx].astype(jnp.int32)])
    weights = jnp.concatenate([weight[None], effective_weight(buf.regions[idx], knobs)])
    return frames, labels, weights, mask


def replay_push(
    buf: ReplayBuffer, frame: jnp.ndarray, label: jnp.ndarray, region: jnp.ndarray
) -> ReplayBuffer:
    """``buf`` with the teacher frame (uint8 frame, int label, integer region map ``[H, W]``) in slot
    ``count % R`` (the oldest is overwritten once full). A float ``region`` (a loss weight) is refused."""
    if not jnp.issubdtype(region.dtype, jnp.integer):
        raise TypeError(
            f"replay_push takes the integer region map (0/1/2), not loss weights; got {region.dtype}"
        )
    slot = buf.count % buf.size
    return buf.replace(
        frames=buf.frames.at[slot].set(frame),
        labels=buf.labels.at[slot].set(label.astype(jnp.uint8)),
        regions=buf.regions.at[slot].set(region.astype(REGION_DTYPE)),
        count=buf.count + 1,
    )


def teacher_updates(
    cfg: StudentConfig,
    knobs: Knobs,
    student: StudentState,
    frame: jnp.ndarray,
    label: jnp.ndarray,
    weight: jnp.ndarray,
    active: jnp.ndarray | bool = True,
    replay: ReplayBuffer | None = None,
) -> tuple[StudentState, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """The update loop on a teacher frame (``lax.while_loop``).

    Each pass is the accuracy check: the forward pass of the current frame (its residuals kept,
    :func:`~jitnet_jax.student.step.forward_check`), scored. Only when it fails does the pass go on, behind
    a ``lax.cond``, to the backward pass (with replay, plus the forward and backward of the ``B - 1``
    replayed frames, :func:`~jitnet_jax.student.step.batch_grads`) and the update. A check that passes
    costs one forward pass of one frame; one that fails, one training step of ``B`` frames. (Under
    ``vmap`` with a batched predicate the cond is a select and both branches run.)

    Args:
      frame: uint8 ``[H, W, 3]``; label: int ``[H, W]``; weight: float32 ``[H, W]`` (already effective).
      active: bool scalar; when False no pass runs (used to mask idle members under ``vmap``).
      replay: the replay buffer (each update then trains on the current frame plus ``B - 1`` replayed
        frames); None: the current frame alone.
    Returns:
      ``(student, pred int32 [H, W], updates int32, acc float32)`` where ``pred`` and ``acc`` are from
      the last forward pass (before the last update) on the current frame.
    """
    student, pred, k, acc, _ = _update_loop(cfg, knobs, student, frame, label, weight, active, replay)
    return student, pred, k, acc


def _zoo_load(student: StudentState, zoo: Zoo, j: jnp.ndarray) -> StudentState:
    """``student`` with member ``j``'s params and batch stats (optimiser state, step and rng kept)."""
    return student.replace(
        params=jax.tree_util.tree_map(lambda x: x[j], zoo.params),
        batch_stats=jax.tree_util.tree_map(lambda x: x[j], zoo.batch_stats),
    )


def _update_loop(
    cfg: StudentConfig,
    knobs: Knobs,
    student: StudentState,
    frame: jnp.ndarray,
    label: jnp.ndarray,
    weight: jnp.ndarray,
    active: jnp.ndarray | bool = True,
    replay: ReplayBuffer | None = None,
    zoo: Zoo | None = None,
    now: jnp.ndarray | int = 0,
) -> tuple[StudentState, jnp.ndarray, jnp.ndarray, jnp.ndarray, Zoo | None]:
    """:func:`teacher_updates` with the zoo's switch: when the frame's first check fails, the filled
    members are scored on it and, if the best beats the check by ``zoo.margin`` (and with
    ``zoo.need_pass`` passes ``a_thr`` itself), that pass loads it
    instead of updating (no update counted; the next pass checks it). ``now``: int32 teacher frames so
    far (the loaded member's ``used``). Returns ``(student, pred, updates, acc, zoo)``; with ``zoo``
    None the loop is exactly :func:`teacher_updates`'s."""
    h, w = label.shape

    def cond(c: tuple[Any, ...]) -> jnp.ndarray:
        _, k, _, _, stop = c[:5]
        return jnp.logical_and(jnp.logical_and(~stop, k < knobs.u_max), active)

    def update(s: StudentState, pullback: Any, new_stats: Any) -> StudentState:
        if replay is None:
            (grads,) = pullback(jnp.ones((), jnp.float32))
        else:
            batch = replay_sample(replay, jax.random.split(s.rng)[1], frame, label, weight, knobs)
            grads = batch_grads(cfg, s, pullback, *batch, class_mask=knobs.class_mask)
        return apply_grads(cfg, s, grads, new_stats, knobs.lr, knobs.schedule)

    def body(c: tuple[Any, ...]) -> tuple[Any, ...]:
        s, k = c[:2]
        aux, new_stats, pullback = forward_check(cfg, s, frame, label, weight, knobs.class_mask)
        passed = aux["min_iou"] > knobs.a_thr
        if zoo is None:
            s = jax.lax.cond(passed, lambda s: s, lambda s: update(s, pullback, new_stats), s)
            return s, k + jnp.where(passed, 0, 1).astype(jnp.int32), aux["pred"], aux["min_iou"], passed
        z, first = c[5:]
        score = first & ~passed
        scores = _zoo_score_if(cfg, z, score, frame, label, knobs.class_mask)
        j = jnp.argmax(scores)
        switch = score & (scores[j] > aux["min_iou"] + z.margin)
        if z.need_pass:
            switch = switch & (scores[j] > knobs.a_thr)
        branch = jnp.where(passed, 0, jnp.where(switch, 1, 2))
        s = jax.lax.switch(
            branch,
            [lambda s: s, lambda s: _zoo_load(s, z, j), lambda s: update(s, pullback, new_stats)],
            s,
        )
        z = z.replace(
            used=jnp.where(switch, z.used.at[j].set(now), z.used),
            dirty=jnp.where(switch, False, z.dirty | (branch == 2)),
            forward=z.forward + _zoo_forward(z, score) + switch.astype(jnp.int32),
            switches=z.switches + switch.astype(jnp.int32),
        )
        k = k + (branch == 2).astype(jnp.int32)
        return s, k, aux["pred"], aux["min_iou"], passed, z, jnp.bool_(False)

    init: tuple[Any, ...] = (
        student,
        jnp.int32(0),
        jnp.zeros((h, w), jnp.int32),
        jnp.float32(0.0),
        jnp.bool_(False),
    )
    if zoo is not None:
        init = (*init, zoo, jnp.bool_(True))
    out = jax.lax.while_loop(cond, body, init)
    student, k, pred, acc = out[:4]
    return student, pred, k, acc, (out[5] if zoo is not None else None)


def next_delta(knobs: Knobs, delta: jnp.ndarray, acc: jnp.ndarray) -> jnp.ndarray:
    """Double the stride if ``acc > a_thr`` else halve it, clamped to ``[delta_min, delta_max]``."""
    grown = jnp.where(acc > knobs.a_thr, delta * 2, delta // 2)
    return jnp.clip(grown, knobs.delta_min, knobs.delta_max).astype(jnp.int32)


StepOut = tuple[OnlineState, jnp.ndarray, jnp.ndarray, jnp.ndarray]


def teacher_step(
    cfg: StudentConfig,
    knobs: Knobs,
    s: OnlineState,
    frame: jnp.ndarray,
    label: jnp.ndarray,
    region: jnp.ndarray,
    active: jnp.ndarray | bool = True,
    masked: bool = False,
    frame_index: jnp.ndarray | None = None,
) -> StepOut:
    """THE teacher-frame step: the update loop, the stride, the next teacher frame, the counters and the
    replay buffer.

    Args:
      frame: uint8 ``[H, W, 3]``; label: int32 ``[H, W]``; region: uint8 ``[H, W]`` region map (the loss
        weights are :func:`effective_weight` of it with ``knobs``).
      active: with ``masked``, whether this is really a teacher frame (a gated sweep runs the step for
        every member and masks the idle ones: they keep their state and only predict).
      frame_index: the teacher frame's stream index (default ``s.cursor``; a delayed label's frame is
        older): the next teacher frame is ``frame_index + delta``.
    Returns:
      ``(state, pred int32 [H, W], updates int32, acc float32)`` (``cursor`` is not advanced here).
    """
    weight = effective_weight(region, knobs)
    student, pred, k, acc, zoo = _update_loop(
        cfg, knobs, s.student, frame, label, weight, active, s.replay, s.zoo, s.teacher_frames
    )
    if zoo is not None:
        zoo = zoo_store(cfg, knobs, zoo, student, frame, label, acc, s.teacher_frames)
    delta = next_delta(knobs, s.delta, acc)
    taught = s.replace(
        student=student,
        delta=delta,
        next_teacher=(s.cursor if frame_index is None else frame_index) + delta,
        teacher_frames=s.teacher_frames + 1,
        updates=s.updates + k,
        replay=None if s.replay is None else replay_push(s.replay, frame, label, region),
        zoo=zoo,
    )
    if not masked:
        return taught, pred, k, acc
    s = jax.tree_util.tree_map(lambda new, old: jnp.where(active, new, old), taught, s)
    pred = jnp.where(active, pred, predict(cfg, s.student, frame, knobs.class_mask))
    return s, pred, jnp.where(active, k, 0), jnp.where(active, acc, 0.0)


def student_step(cfg: StudentConfig, knobs: Knobs, s: OnlineState, frame: jnp.ndarray) -> StepOut:
    """Any other frame: one prediction, no state change. Same outputs as :func:`teacher_step`."""
    return s, predict(cfg, s.student, frame, knobs.class_mask), jnp.int32(0), jnp.float32(0.0)


def is_teacher_frame(state: OnlineState, valid: jnp.ndarray) -> jnp.ndarray:
    """bool: the frame at ``state.cursor`` is a (valid) teacher frame (the teacher runs on it)."""
    return jnp.logical_and(valid, state.cursor == state.next_teacher)


def trains_now(state: OnlineState, valid: jnp.ndarray) -> jnp.ndarray:
    """bool: the teacher step runs at this frame: a teacher frame, or with a delayed teacher the frame
    at which a label arrives (what a gated sweep gates on)."""
    if state.pending is None:
        return is_teacher_frame(state, valid)
    return jnp.logical_and(valid, state.pending.arrival == state.cursor)


def _delayed_frame_step(
    cfg: StudentConfig,
    knobs: Knobs,
    state: OnlineState,
    frame: jnp.ndarray,
    label: jnp.ndarray,
    region: jnp.ndarray,
    valid: jnp.ndarray,
    branch: str,
) -> tuple[OnlineState, jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """:func:`frame_step` with a teacher delay ``d > 0``: (1) if the label in flight arrives at this
    frame, the teacher step runs on its stored frame and label (the next teacher frame is
    ``index + delta``, and not before this frame: one label in flight at a time); (2) if this is a teacher
    frame, the teacher runs on it and its label is stored, arriving ``d`` frames later; (3) the student
    predicts this frame (after any training). Returns ``(state, pred, updates, acc, is_teacher)``."""
    p = state.pending
    arrive = trains_now(state, valid)

    def train(s: OnlineState, active: Any, masked: bool) -> tuple[OnlineState, Any, Any]:
        s2, _, k, acc = teacher_step(
            cfg, knobs, s, p.frame, p.label.astype(jnp.int32), p.region, active, masked, frame_index=p.index
        )
        nt = jnp.where(active, jnp.maximum(s2.next_teacher, s.cursor), s2.next_teacher)
        return s2.replace(next_teacher=nt), k, acc

    if branch == "cond":
        state, k, acc = jax.lax.cond(
            arrive,
            lambda s: train(s, True, False),
            lambda s: (s, jnp.int32(0), jnp.float32(0.0)),
            state,
        )
    elif branch == "masked":
        state, k, acc = train(state, arrive, True)
    else:
        k, acc = jnp.int32(0), jnp.float32(0.0)
    is_teacher = is_teacher_frame(state, valid)
    sent = p.replace(
        frame=frame,
        label=label.astype(jnp.uint8),
        region=region.astype(REGION_DTYPE),
        index=state.cursor,
        arrival=state.cursor + p.delay,
    )
    pending = jax.tree_util.tree_map(lambda new, old: jnp.where(is_teacher, new, old), sent, state.pending)
    state = state.replace(pending=pending)
    return state, predict(cfg, state.student, frame, knobs.class_mask), k, acc, is_teacher


BRANCHES = ("cond", "masked", "student")


def frame_step(
    cfg: StudentConfig,
    knobs: Knobs,
    state: OnlineState,
    frame: jnp.ndarray,
    label: jnp.ndarray,
    region: jnp.ndarray,
    valid: jnp.ndarray,
    branch: str = "cond",
) -> tuple[OnlineState, dict[str, jnp.ndarray]]:
    """Process one frame (see module docstring). Padding frames (``valid=False``) change nothing.

    Args:
      branch: how the teacher/student choice is made. ``"cond"``: a ``lax.cond`` (single runs, a sweep's
        ``map`` mode; under ``vmap`` it runs both branches, a sweep's ``naive`` mode). ``"masked"``: the
        teacher step with idle members masked (a gated sweep's frames where some member trains).
        ``"student"``: the frame is known to be no teacher frame (a gated sweep's other frames).
    Returns ``(state, stats)`` with stats: ``teacher`` bool, ``updates`` int32, ``delta`` int32 (after
    this frame), ``acc`` float32 (last measured control accuracy; 0 on student-only frames),
    ``confusion`` int32 ``[C, C]`` and ``pred`` uint8 ``[H, W]``; with a zoo also :data:`ZOO_STATS`.
    """
    if branch not in BRANCHES:
        raise ValueError(f"branch must be one of {BRANCHES}, got {branch!r}")
    is_teacher = is_teacher_frame(state, valid)
    label = label.astype(jnp.int32)
    zoo_before = state.zoo
    if state.pending is not None:
        state, pred, k, acc, is_teacher = _delayed_frame_step(
            cfg, knobs, state, frame, label, region, valid, branch
        )
    elif branch == "cond":
        state, pred, k, acc = jax.lax.cond(
            is_teacher,
            lambda s: teacher_step(cfg, knobs, s, frame, label, region),
            lambda s: student_step(cfg, knobs, s, frame),
            state,
        )
    elif branch == "masked":
        state, pred, k, acc = teacher_step(cfg, knobs, state, frame, label, region, is_teacher, masked=True)
    else:
        state, pred, k, acc = student_step(cfg, knobs, state, frame)
    state = state.replace(cursor=state.cursor + valid.astype(jnp.int32))
    stats = {
        "teacher": is_teacher,
        "updates": k,
        "delta": state.delta,
        "acc": acc,
        "confusion": confusion_matrix(label, pred, cfg.model.num_classes, mask=valid),
        "pred": pred.astype(jnp.uint8),
    }
    if zoo_before is not None:
        for stat, field in ZOO_STATS.items():
            stats[stat] = (getattr(state.zoo, field) - getattr(zoo_before, field)).astype(jnp.int32)
    return state, stats


def run_chunk(
    cfg: StudentConfig,
    knobs: Knobs,
    state: OnlineState,
    frames: jnp.ndarray,
    labels: jnp.ndarray,
    regions: jnp.ndarray,
    valid: jnp.ndarray,
    keep_preds: bool = False,
) -> tuple[OnlineState, dict[str, jnp.ndarray]]:
    """``lax.scan`` of :func:`frame_step` over a chunk.

    Args:
      frames: uint8 ``[T, H, W, 3]``; labels: uint8/int ``[T, H, W]``; regions: ``[T, H, W]`` (the
        source's map); valid: bool ``[T]``.
      keep_preds: also return the predictions (uint8 ``[T, H, W]``).
    Returns:
      ``(state, stats)``, each stat stacked over ``T``.
    """

    def body(s: OnlineState, x: tuple[jnp.ndarray, ...]) -> tuple[OnlineState, dict[str, jnp.ndarray]]:
        s, st = frame_step(cfg, knobs, s, *x)
        if not keep_preds:
            st = {k: v for k, v in st.items() if k != "pred"}
        return s, st

    return jax.lax.scan(body, state, (frames, labels, regions, valid))


def make_run_chunk(cfg: OnlineConfig, keep_preds: bool = False) -> Any:
    """``run_chunk`` jitted for ``cfg`` with the online state donated:
    ``fn(knobs, state, frames, labels, regions, valid) -> (state, stats)``."""
    student_cfg = cfg.student

    def fn(knobs: Knobs, state: OnlineState, frames: Any, labels: Any, regions: Any, valid: Any) -> Any:
        return run_chunk(student_cfg, knobs, state, frames, labels, regions, valid, keep_preds)

    return jax.jit(fn, donate_argnums=1)

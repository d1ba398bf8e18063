"""One teacher for many cameras: the fleet's budget and the scheduler that spends it, inside the program.

Every camera runs Algorithm 1 (the engine's :func:`~jitnet_jax.online.engine.frame_step`); at a frame where
its controller wants the teacher (``cursor == next_teacher``) it *requests* it. Before the cameras step, the
scheduler grants at most ``allowed`` requests (a ``lax.top_k`` over per-camera priorities); a camera whose
request is not granted *waits*: its teacher frame is deferred to the next frame (``next_teacher = cursor +
1``), where it asks again, and the wait is counted. Everything is traced, so the fleet stays one program.

The budget (:class:`Budget`):

* ``per_tick = K``: at most ``K`` teacher frames per tick (one frame of every camera) across the fleet: a
  teacher that labels ``K`` frames in the time the cameras produce one;
* ``fraction = F``: a running cap: after a tick, the fleet's teacher frames so far are at most
  ``floor(F * camera_frames_so_far) + N`` (``N`` cameras: each can have its first label at frame 0); the
  total over a run is therefore ``F`` of all camera-frames up to ``N`` frames;
* both, or neither (``independent`` ignores the budget).

Policies, when more cameras ask than the budget allows:

* ``independent``: every request is granted (each camera is exactly a single run; the reference);
* ``round_robin``: the cameras that have gone longest without the teacher first;
* ``need``: the most overdue cameras first: ``since / delta``, the frames since the camera's last label over
  the stride its own controller wants now. Algorithm 1 halves ``delta`` when the student fails its check
  (it needs labels) and doubles it when it passes, so a camera whose scene changes under it becomes overdue
  fast and a static one slowly but surely: the budget is shared in proportion to what each controller asks
  (earliest deadline first). A camera that has gone ``starve`` frames without a label goes ahead of all.
Ties go to the lower camera index (``lax.top_k`` is stable).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp

from jitnet_jax.online.engine import OnlineState, is_teacher_frame

POLICIES = ("independent", "round_robin", "need")


@dataclasses.dataclass(frozen=True)
class Budget:
    """The fleet's teacher budget and scheduling policy (static: part of the compiled program).

    Attributes:
      policy: one of :data:`POLICIES`.
      per_tick: at most this many teacher frames per tick over the fleet (0: no per-tick cap).
      fraction: running cap on the fleet's teacher frames as a fraction of its camera-frames (0: none).
      starve: ``need``: a camera that has waited this many frames for the teacher goes first.
    """

    policy: str = "independent"
    per_tick: int = 0
    fraction: float = 0.0
    starve: int = 64

    def validate(self) -> Budget:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        if not isinstance(self.per_tick, int) or self.per_tick < 0:
            raise ValueError(f"teacher per tick must be an int >= 0, got {self.per_tick!r}")
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"teacher budget must be a fraction in [0, 1], got {self.fraction!r}")
        if self.starve < 1:
            raise ValueError(f"starve must be >= 1, got {self.starve!r}")
        if self.policy != "independent" and not (self.per_tick or self.fraction):
            raise ValueError(
                f"policy {self.policy!r} needs a budget: a teacher per tick (K) or a teacher budget (F)"
            )
        return self

    @property
    def schedules(self) -> bool:
        """Whether requests are ever refused (``independent`` grants all)."""
        return self.policy != "independent"


@flax.struct.dataclass
class Ledger:
    """The scheduler's per-camera bookkeeping (every leaf ``[N]``, so it shards with the cameras).

    Attributes:
      waits: int32, frames on which the camera's teacher request was refused.
      since: int32, the camera's frames since its last teacher frame (or since its start).
      last_acc: float32, the accuracy measured by the camera's last check (0 before the first).
      frames: int32, the camera's frames so far.
      used: int32, the camera's teacher frames so far.
    """

    waits: jnp.ndarray
    since: jnp.ndarray
    last_acc: jnp.ndarray
    frames: jnp.ndarray
    used: jnp.ndarray


@flax.struct.dataclass
class FleetState:
    """The fleet's carry: the cameras' stacked online states and the scheduler's ledger."""

    cameras: OnlineState
    ledger: Ledger

    @property
    def cursor(self) -> Any:
        """The fleet's tick: frames processed by its longest-running camera (the lockstep frame index)."""
        return self.cameras.cursor.max()


def init_ledger(n: int) -> Ledger:
    """An empty ledger for ``n`` cameras."""

    def zi() -> jnp.ndarray:  # one buffer per leaf: the state is donated
        return jnp.zeros((n,), jnp.int32)

    return Ledger(
        waits=zi(),
        since=zi(),
        last_acc=jnp.zeros((n,), jnp.float32),
        frames=zi(),
        used=zi(),
    )


def priorities(budget: Budget, ledger: Ledger, delta: jnp.ndarray) -> jnp.ndarray:
    """float32 ``[N]``: the policy's priority of each camera (higher goes first); ``delta``: int32 ``[N]``,
    each camera's current stride."""
    since = ledger.since.astype(jnp.float32)
    if budget.policy == "round_robin":
        return since
    starving = (ledger.since >= budget.starve).astype(jnp.float32)
    return since / jnp.maximum(delta, 1).astype(jnp.float32) + 1e6 * starving


def allowed_now(budget: Budget, ledger: Ledger, valid: jnp.ndarray) -> jnp.ndarray:
    """int32: teacher frames the budget allows at this tick (``valid``: bool ``[N]``, cameras with a frame)."""
    n = valid.shape[0]
    allowed = jnp.int32(budget.per_tick if budget.per_tick else n)
    if budget.fraction:
        frames = ledger.frames.sum() + valid.sum()
        cap = jnp.floor(budget.fraction * frames.astype(jnp.float32)).astype(jnp.int32) + n
        allowed = jnp.minimum(allowed, jnp.maximum(cap - ledger.used.sum(), 0))
    return allowed


def grant(
    budget: Budget, ledger: Ledger, requests: jnp.ndarray, valid: jnp.ndarray, delta: jnp.ndarray
) -> jnp.ndarray:
    """bool ``[N]``: the requests granted at this tick (all of them under ``independent``).

    Args:
      requests: bool ``[N]``, cameras whose controller asks for the teacher at this frame.
      valid: bool ``[N]``, cameras with a frame at this tick.
      delta: int32 ``[N]``, each camera's current stride (``need``).
    """
    if not budget.schedules:
        return requests
    n = requests.shape[0]
    k = min(budget.per_tick, n) if budget.per_tick else n
    score = jnp.where(requests, priorities(budget, ledger, delta), -jnp.inf)
    _, idx = jax.lax.top_k(score, k)
    chosen = jnp.zeros((n,), bool).at[idx].set(jnp.arange(k) < allowed_now(budget, ledger, valid))
    return jnp.logical_and(requests, chosen)


def record(
    ledger: Ledger, stats: dict[str, jnp.ndarray], deferred: jnp.ndarray, valid: jnp.ndarray
) -> Ledger:
    """The ledger after a tick (``stats``: the cameras' frame stats, each ``[N]``)."""
    teacher = stats["teacher"]
    measured = stats["acc"] > 0  # a check ran (with a delayed teacher: where the label arrived)
    step = valid.astype(jnp.int32)
    return Ledger(
        waits=ledger.waits + deferred.astype(jnp.int32),
        since=jnp.where(teacher, 0, ledger.since + step),
        last_acc=jnp.where(measured, stats["acc"], ledger.last_acc),
        frames=ledger.frames + step,
        used=ledger.used + teacher.astype(jnp.int32),
    )


@dataclasses.dataclass(frozen=True)
class BudgetCoupling:
    """The sweep's per-frame coupling hook (:func:`~jitnet_jax.sweep.compiled.sweep_chunk`'s ``coupling``) that
    spends a :class:`Budget`: ``coupling(step, state, valid) -> (state, stats)`` with ``state`` a
    :class:`FleetState`, ``step(cameras) -> (cameras, stats)`` the cameras' frame step, ``valid`` bool
    ``[N]``. Adds the per-frame stat ``deferred`` (bool ``[N]``).

    ``axis_name``: inside a ``shard_map`` over the camera axis (each device holds ``N / D`` cameras), the
    requests, the validity and the ledger are gathered over that axis, every device decides the same grants
    for the whole fleet and keeps its own cameras' (so a sharded fleet decides exactly as an unsharded one).
    """

    budget: Budget
    axis_name: str | None = None

    def over_axis(self, axis_name: str) -> BudgetCoupling:
        """This coupling inside a ``shard_map`` over ``axis_name``."""
        return dataclasses.replace(self, axis_name=axis_name)

    def __call__(
        self,
        step: Callable[[OnlineState], tuple[OnlineState, dict[str, jnp.ndarray]]],
        state: FleetState,
        valid: jnp.ndarray,
    ) -> tuple[FleetState, dict[str, jnp.ndarray]]:
        cams = state.cameras
        requests = jax.vmap(is_teacher_frame)(cams, valid)
        if self.axis_name is None:
            granted = grant(self.budget, state.ledger, requests, valid, cams.delta)
        else:  # decide over the whole fleet, keep this device's cameras
            gather = lambda x: jax.lax.all_gather(x, self.axis_name, tiled=True)  # noqa: E731
            n_local = requests.shape[0]
            every = grant(
                self.budget,
                jax.tree_util.tree_map(gather, state.ledger),
                gather(requests),
                gather(valid),
                gather(cams.delta),
            )
            mine = jax.lax.axis_index(self.axis_name) * n_local + jnp.arange(n_local)
            granted = every[mine]
        deferred = jnp.logical_and(requests, ~granted)
        if self.budget.schedules:
            cams = cams.replace(next_teacher=jnp.where(deferred, cams.cursor + 1, cams.next_teacher))
        cams, stats = step(cams)
        ledger = record(state.ledger, stats, deferred, valid)
        return FleetState(cameras=cams, ledger=ledger), {**stats, "deferred": deferred}

"""Run a fleet: N cameras, N students, one compiled program, one teacher budget.

A fleet is the sweep machinery (:func:`~jitnet_jax.sweep.driver.run_sweep`) with one member per camera
(``aligned``: member i reads camera i's stream), each member's class mask (:mod:`jitnet_jax.fleet.classes`)
and the teacher budget as the per-frame coupling (:mod:`jitnet_jax.fleet.schedule`). Algorithm 1 is the
engine's, unchanged; cameras whose streams have ended are padded (``valid=False``) and change nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jitnet_jax.config import OnlineConfig
from jitnet_jax.data.types import StreamSource
from jitnet_jax.eval.summary import summarize_run
from jitnet_jax.fleet.classes import RemappedSource, class_mask, union_classes
from jitnet_jax.fleet.schedule import Budget, BudgetCoupling, FleetState, init_ledger
from jitnet_jax.online.pipeline import Checkpointing, read_host
from jitnet_jax.online.rows import PER_FRAME_KEYS
from jitnet_jax.online.runner import StreamResult
from jitnet_jax.sweep.driver import SweepResult, run_sweep
from jitnet_jax.sweep.grid import Member


@dataclasses.dataclass
class Fleet:
    """The cameras of a fleet, ready to run.

    Attributes:
      sources: one stream per camera, labels renumbered into ``classes``.
      names: camera names (the streams' names, made unique).
      classes: the union of the cameras' classes (the student's head), ``background`` first.
      own: each camera's own class names (``background`` first).
      masks: bool ``[N, C]``, camera i's classes among ``classes``.
    """

    sources: list[RemappedSource]
    names: list[str]
    classes: tuple[str, ...]
    own: list[tuple[str, ...]]
    masks: np.ndarray

    def __len__(self) -> int:
        return len(self.sources)

    def class_index(self, i: int) -> np.ndarray:
        """int ``[C_i]``: camera i's classes' indices into ``classes`` (its own order)."""
        return np.asarray([self.classes.index(n) for n in self.own[i]], np.int64)


def make_fleet(sources: Sequence[StreamSource]) -> Fleet:
    """A :class:`Fleet` of ``sources`` (one camera each; same resolution; any class groups)."""
    if not sources:
        raise ValueError("a fleet needs at least one camera")
    first = sources[0].info
    for s in sources[1:]:
        if (s.info.height, s.info.width) != (first.height, first.width):
            raise ValueError(
                f"camera {s.info.name} is {s.info.height}x{s.info.width}; camera {first.name} is "
                f"{first.height}x{first.width} (one resolution per fleet)"
            )
    own = [tuple(s.info.class_names) for s in sources]
    classes = union_classes(own)
    names: list[str] = []
    for s in sources:
        name, k = s.info.name, 2
        while name in names:
            name, k = f"{s.info.name}_{k}", k + 1
        names.append(name)
    masks = np.stack([class_mask(o, classes) for o in own])
    return Fleet([RemappedSource(s, classes) for s in sources], names, classes, own, masks)


@dataclasses.dataclass
class FleetResult:
    """What a fleet run produced: the sweep's result (members = cameras), the final :class:`FleetState`
    (``result.state``) and its ledger on the host."""

    fleet: Fleet
    budget: Budget
    result: SweepResult
    ledger: dict[str, np.ndarray]

    @property
    def stopped(self) -> bool:
        return self.result.stopped


def fleet_config(base: OnlineConfig, num_classes: int) -> OnlineConfig:
    """``base`` with the student's head over the fleet's ``num_classes`` classes."""
    model = dataclasses.replace(base.student.model, num_classes=num_classes)
    return dataclasses.replace(base, student=dataclasses.replace(base.student, model=model))


def new_fleet_state(
    fleet: Fleet, base: OnlineConfig, seed: int, init: Callable[[jax.Array], tuple[Any, Any]] | None = None
) -> FleetState:
    """Every camera's fresh state (the state a single run with ``seed`` starts from), optionally starting
    from ``init(key) -> (params, batch_stats)`` (e.g. the shipped CamVid student mapped onto the fleet's
    classes by name, as single runs map it onto theirs), and an empty ledger."""
    from jitnet_jax.sweep.members import init_sweep_state

    h, w = fleet.sources[0].info.height, fleet.sources[0].info.width
    members = camera_members(base, len(fleet), seed)
    cams = init_sweep_state(base, members, (h, w))
    if init is not None:
        params, stats = init(jax.random.fold_in(jax.random.key(seed), 1))
        n = len(fleet)
        stack = lambda t: jax.tree_util.tree_map(lambda x: jnp.stack([jnp.asarray(x)] * n), t)  # noqa: E731
        cams = cams.replace(student=cams.student.replace(params=stack(params), batch_stats=stack(stats)))
    return FleetState(cameras=cams, ledger=init_ledger(len(fleet)))


def camera_members(base: OnlineConfig, n: int, seed: int) -> list[Member]:
    """One sweep member per camera: the base configuration, camera i reading stream i."""
    return [Member.from_config(base, seed=seed, stream=i) for i in range(n)]


def checkpoint_rows(fleet: Fleet) -> Callable[[list[dict[str, np.ndarray]]], dict[str, np.ndarray]]:
    """The one dict a fleet checkpoint stores: ``frame`` (the fleet's ticks so far) and every camera's rows
    as ``c<i>.<key>`` (restore with :func:`split_rows`)."""

    def rows(per_camera: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for i, r in enumerate(per_camera):
            out.update({f"c{i}.{k}": r[k] for k in PER_FRAME_KEYS})
        out["frame"] = np.arange(max(len(r["frame"]) for r in per_camera), dtype=np.int64)
        return out

    return rows


def split_rows(saved: dict[str, np.ndarray], n: int) -> list[dict[str, np.ndarray]]:
    """Every camera's rows from a checkpoint's dict (:func:`checkpoint_rows`)."""
    return [{k: saved[f"c{i}.{k}"] for k in PER_FRAME_KEYS} for i in range(n)]


def run_fleet(
    fleet: Fleet,
    base: OnlineConfig,
    budget: Budget,
    *,
    seed: int = 0,
    init: Callable[[jax.Array], tuple[Any, Any]] | None = None,
    max_frames: int | None = None,
    mode: str = "lockstep",
    mesh: Any = None,
    state: FleetState | None = None,
    per_frame: Sequence[dict[str, np.ndarray]] | None = None,
    checkpointer: Checkpointing | None = None,
    should_stop: Callable[[], bool] | None = None,
    memory_budget: int | None = None,
    progress: bool = True,
) -> FleetResult:
    """Run every camera of ``fleet`` over its stream in one compiled program under ``budget``.

    Args:
      base: every camera's configuration (its head is set to the fleet's classes).
      seed: every camera's student starts from ``jax.random.key(seed)`` (as a single run with ``seed``).
      init: optional start ``init(key) -> (params, batch_stats)`` over the fleet's classes.
      mode: the sweep's compiled form: ``lockstep`` (cameras one after another inside the program, each
        frame, states updated in place; each camera under ``independent`` equals its single run bit for bit
        when its classes are the fleet's; ``map`` is the same under a coupling), ``gated`` or ``naive``
        (vmapped; see :mod:`jitnet_jax.sweep.compiled`).
      mesh: a ``"members"`` mesh: cameras (and their frames) split over its devices and hosts.
      state, per_frame: resume from a checkpoint (:func:`split_rows` of its rows).
    """
    budget.validate()
    base = fleet_config(base, len(fleet.classes))
    members = camera_members(base, len(fleet), seed)
    if state is None:
        state = new_fleet_state(fleet, base, seed, init)
    result = run_sweep(
        fleet.sources,
        base,
        members,
        max_frames=max_frames,
        mode=mode,
        mesh=mesh,
        memory_budget=memory_budget,
        progress=progress,
        class_masks=fleet.masks,
        coupling=BudgetCoupling(budget),
        aligned=True,
        state=state,
        per_frame=per_frame,
        checkpointer=checkpointer,
        checkpoint_rows=checkpoint_rows(fleet),
        should_stop=should_stop,
        desc=f"fleet N={len(fleet)} {budget.policy}",
    )
    ledger = {k: np.asarray(v) for k, v in dataclasses.asdict(read_host(result.state.ledger)).items()}
    return FleetResult(fleet, budget, result, ledger)


def camera_per_frame(result: FleetResult, i: int) -> dict[str, np.ndarray]:
    """Camera i's per-frame rows over its own classes (``tp``/``fp``/``fn`` ``[N_i, C_i]``)."""
    idx = result.fleet.class_index(i)
    pf = dict(result.result.per_frame[i])
    for k in ("tp", "fp", "fn"):
        pf[k] = pf[k][:, idx]
    return pf


def summarize_fleet(
    result: FleetResult, base: OnlineConfig, gflops: dict[str, float] | None = None, cost: Any = None
) -> dict[str, Any]:
    """Per-camera summaries (each scored over its own classes and its own frames, as its single run) and
    the fleet's totals: ``miou`` (mean over cameras), teacher frames and fraction over all camera-frames,
    the cost-model speedup of the fleet's totals, waits per camera."""
    from jitnet_jax.eval.costs import CostModel, cost_model_speedup

    cost = cost or CostModel()
    base = fleet_config(base, len(result.fleet.classes))
    cams = []
    sr = result.result
    n = len(result.fleet)
    for i in range(n):
        pf = camera_per_frame(result, i)
        # the state is not needed (and may span other hosts' devices): the rows and the camera's time share
        one = StreamResult(None, pf, sr.wall_s / n, sr.compile_s / n)
        s = summarize_run(one, base, result.fleet.own[i], cost, gflops)
        s["camera"] = result.fleet.names[i]
        s["waits"] = int(result.ledger["waits"][i])
        cams.append(s)
    frames = sum(c["frames"] for c in cams)
    teacher = sum(c["teacher_frames"] for c in cams)
    updates = sum(c["updates"] for c in cams)
    return {
        "policy": result.budget.policy,
        "budget": dataclasses.asdict(result.budget),
        "cameras": cams,
        "miou": float(np.mean([c["miou"] for c in cams])),
        "frames": frames,
        "teacher_frames": teacher,
        "teacher_fraction": teacher / max(frames, 1),
        "updates": updates,
        "speedup_cost_model": cost_model_speedup(frames, teacher, updates, cost, base.replay_batch),
        "waits": int(result.ledger["waits"].sum()),
        "wall_s": sr.wall_s,
        "compile_s": sr.compile_s,
        "frames_per_s": frames / max(sr.wall_s, 1e-9),
    }

"""The one summary of a run, from its per-frame statistics (``jitnet_jax.online.runner`` format).

Every method (online, a fixed student, label hold, flow) produces the same per-frame rows (``frame``,
``teacher``, ``updates``, ``delta``, ``acc``, ``tp``/``fp``/``fn`` ``[N, C]``), so one function scores
them all: stream-level foreground mIoU, teacher fraction, updates and the speedups.

With a delayed teacher (``OnlineConfig.teacher_delay = d``) a teacher frame's row has ``teacher`` set and
its label's row, ``d`` frames later, the ``updates`` and ``acc`` of the training on it
(:func:`passed_checks` pairs them).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from jitnet_jax.eval.costs import CostModel, cost_model_speedup, flops_speedup
from jitnet_jax.student.metrics import iou_from_counts

if TYPE_CHECKING:  # the run types; this module itself needs only numpy
    from jitnet_jax.online.engine import OnlineConfig
    from jitnet_jax.online.runner import StreamResult


def passed_checks(per_frame: dict[str, np.ndarray], a_thr: float, teacher_delay: int = 0) -> int:
    """Teacher frames whose last accuracy check passed ``a_thr`` (the loop stopped on a forward pass that
    took no update).

    Args:
      per_frame: per-frame rows: ``frame`` int [N], ``teacher`` bool [N], ``acc`` float [N] (the last
        measured control accuracy at the frame the training ran on, 0 elsewhere).
      a_thr: the run's accuracy threshold.
      teacher_delay: ``d`` of the run: the training on teacher frame ``i`` (and its ``acc``) is in the row
        of frame ``i + d``; a label that had not arrived when the run ended took no check.
    Returns:
      the number of passed checks.
    """
    if teacher_delay < 0:
        raise ValueError(f"teacher_delay must be >= 0 frames, got {teacher_delay}")
    teacher = np.asarray(per_frame["teacher"], bool)
    if teacher_delay:
        frame = np.asarray(per_frame["frame"])
        checked = np.isin(frame, frame[teacher] + teacher_delay)
    else:
        checked = teacher
    return int((checked & (np.asarray(per_frame["acc"]) > a_thr)).sum())


def summarize_per_frame(
    per_frame: dict[str, np.ndarray],
    class_names: tuple[str, ...] | list[str],
    *,
    cost: CostModel | None = None,
    student_ms: float | None = None,
    measured_teacher_ms: float | None = None,
    wall_s: float = 0.0,
    compile_s: float = 0.0,
    a_thr: float | None = None,
    gflops: dict[str, float] | None = None,
    frames_per_update: int = 1,
    teacher_delay: int = 0,
) -> dict[str, Any]:
    """Scores and costs of a run.

    Args:
      per_frame: per-frame rows (``teacher`` bool [N], ``updates`` int [N], ``acc`` float [N],
        ``tp``/``fp``/``fn`` int [N, C], ...).
      cost: the paper's cost model; ``student_ms`` replaces its per-frame inference cost on non-teacher
        frames (0 for label hold, the measured flow cost for flow propagation).
      measured_teacher_ms: the teacher's measured cost per frame; with ``wall_s`` (the method's measured
        work) adds ``speedup_measured = teacher_ms N / (teacher_ms T + 1000 wall_s)``.
      a_thr: the run's accuracy threshold; needed (with ``gflops``) to count the forward passes that
        passed it and took no update.
      gflops: ``infer_gflops`` and ``train_step_gflops`` of the student; adds ``speedup_flops``.
      frames_per_update: ``B``, frames one update trains on (replay: the current teacher frame plus
        ``B - 1`` replayed ones; 1 in the paper). An update costs ``B`` single-frame training steps.
      teacher_delay: the run's ``OnlineConfig.teacher_delay`` (frames from a teacher frame to the training
        on its label; 0 for every method but a delayed online run), to pair checks with teacher frames.
    Returns:
      ``miou``, ``class_iou``, ``frames``, ``teacher_frames``, ``teacher_fraction``, ``updates``,
      ``speedup_cost_model``, ``wall_s``, ``compile_s``, ``student_ms_per_frame``, ``frames_per_update``
      (+ the optional ones; with a zoo's per-frame rows ``zoo_forward``, ``zoo_switches`` and
      ``zoo_stores``, the zoo's forward passes charged as inferences in both speedups).
    """
    cost = cost or CostModel()
    if student_ms is not None:
        cost = dataclasses.replace(cost, infer_ms=student_ms)
    pf = per_frame
    scores = iou_from_counts(pf["tp"].sum(0), pf["fp"].sum(0), pf["fn"].sum(0))
    n = int(len(pf["frame"]))
    t = int(pf["teacher"].sum())
    u = int(pf["updates"].sum())
    if frames_per_update < 1:
        raise ValueError(f"frames_per_update must be >= 1, got {frames_per_update}")
    zf = int(np.asarray(pf["zoo_forward"]).sum()) if "zoo_forward" in pf else 0
    out: dict[str, Any] = {
        "miou": scores["miou"],
        "class_iou": dict(zip(class_names, scores["class_iou"])),
        "frames": n,
        "teacher_frames": t,
        "teacher_fraction": t / max(n, 1),
        "updates": u,
        "speedup_cost_model": cost_model_speedup(n, t, u, cost, frames_per_update, zf),
        "wall_s": wall_s,
        "compile_s": compile_s,
        "student_ms_per_frame": 1e3 * wall_s / max(n, 1),
        "frames_per_update": frames_per_update,
    }
    if "zoo_forward" in pf:
        out["zoo_forward"] = zf
        out["zoo_switches"] = int(np.asarray(pf["zoo_switch"]).sum())
        out["zoo_stores"] = int(np.asarray(pf["zoo_store"]).sum())
    if measured_teacher_ms is not None:
        spent = measured_teacher_ms * t + 1e3 * wall_s
        out["speedup_measured"] = measured_teacher_ms * n / max(spent, 1e-9)
    if gflops is not None:
        if a_thr is None:
            raise ValueError("speedup_flops needs the run's a_thr")
        passed = passed_checks(pf, a_thr, teacher_delay)
        out["speedup_flops"] = flops_speedup(
            n,
            t,
            u + passed,
            u,
            gflops["infer_gflops"],
            gflops["train_step_gflops"],
            cost,
            frames_per_update,
            zf,
        )
        out.update({k: float(v) for k, v in gflops.items()})
    return out


def summarize_run(
    result: StreamResult,
    cfg: OnlineConfig,
    class_names: tuple[str, ...],
    cost: CostModel | None = None,
    gflops: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The summary of an online run (:func:`summarize_per_frame` of its per-frame rows, with the run's
    ``a_thr``, frames per update (``replay_batch``), teacher delay, wall and compile seconds)."""
    return summarize_per_frame(
        result.per_frame,
        class_names,
        cost=cost,
        wall_s=result.wall_s,
        compile_s=result.compile_s,
        a_thr=cfg.a_thr,
        gflops=gflops,
        frames_per_update=cfg.replay_batch,
        teacher_delay=cfg.teacher_delay,
    )

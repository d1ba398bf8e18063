"""The one summary of a run, from its per-frame statistics (``jitnet_jax.online.runner`` format).

Every method (online, a fixed student, label hold, flow) produces the same per-frame rows (``frame``,
``teacher``, ``updates``, ``delta``, ``acc``, ``tp``/``fp``/``fn`` ``[N, C]``), so one function scores
them all: stream-level foreground mIoU, teacher fraction, updates and the speedups.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jitnet_jax.eval.costs import CostModel, cost_model_speedup, flops_speedup
from jitnet_jax.student.metrics import iou_from_counts


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
    Returns:
      ``miou``, ``class_iou``, ``frames``, ``teacher_frames``, ``teacher_fraction``, ``updates``,
      ``speedup_cost_model``, ``wall_s``, ``compile_s``, ``student_ms_per_frame``, ``frames_per_update``
      (+ the optional ones).
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
    out: dict[str, Any] = {
        "miou": scores["miou"],
        "class_iou": dict(zip(class_names, scores["class_iou"])),
        "frames": n,
        "teacher_frames": t,
        "teacher_fraction": t / max(n, 1),
        "updates": u,
        "speedup_cost_model": cost_model_speedup(n, t, u, cost, frames_per_update),
        "wall_s": wall_s,
        "compile_s": compile_s,
        "student_ms_per_frame": 1e3 * wall_s / max(n, 1),
        "frames_per_update": frames_per_update,
    }
    if measured_teacher_ms is not None:
        spent = measured_teacher_ms * t + 1e3 * wall_s
        out["speedup_measured"] = measured_teacher_ms * n / max(spent, 1e-9)
    if gflops is not None:
        if a_thr is None:
            raise ValueError("speedup_flops needs the run's a_thr")
        passed = int((pf["teacher"] & (pf["acc"] > a_thr)).sum())
        out["speedup_flops"] = flops_speedup(
            n,
            t,
            u + passed,
            u,
            gflops["infer_gflops"],
            gflops["train_step_gflops"],
            cost,
            frames_per_update,
        )
        out.update({k: float(v) for k, v in gflops.items()})
    return out

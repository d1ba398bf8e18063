"""The Overall row of the table: mean mIoU and flip rate over streams; speedup and teacher fraction from
the frame, teacher-frame and update totals over all streams."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from jitnet_jax.eval.costs import CostModel, cost_model_speedup
from jitnet_jax.eval.table.methods import Method


def overall(results: dict[str, Any], ms: Sequence[Method]) -> dict[str, Any]:
    """Overall row: mean mIoU / flip rate over streams; speedup and teacher % from totals."""
    out: dict[str, Any] = {}
    cost = CostModel()
    streams = list(results["streams"].values())
    for m in ms:
        rows = [p["methods"][m.name] for p in streams if m.name in p["methods"]]
        if not rows:
            continue
        mious = [r["summary"]["miou"] for r in rows if not math.isnan(r["summary"]["miou"])]
        n = sum(r["summary"]["frames"] for r in rows)
        t = sum(r["summary"]["teacher_frames"] for r in rows)
        u = sum(r["summary"]["updates"] * r["summary"].get("frames_per_update", 1) for r in rows)
        infer = cost.infer_ms
        if m.kind == "hold":
            infer = 0.0
        elif m.kind == "flow":
            flow_frames = sum(r["extra"]["flow_frames"] for r in rows)
            infer = 1e3 * sum(r["summary"]["wall_s"] for r in rows) / max(flow_frames, 1)
        flips = [r["stability"]["flip_rate"] for r in rows if not math.isnan(r["stability"]["flip_rate"])]
        out[m.name] = {
            "miou": float(np.mean(mious)) if mious else float("nan"),
            "teacher_fraction": t / max(n, 1),
            "speedup_cost_model": cost_model_speedup(n, t, u, dataclasses.replace(cost, infer_ms=infer)),
            "flip_rate": float(np.mean(flips)) if flips else float("nan"),
            "frames": n,
            "updates": u,
            "streams": len(rows),
        }
    tflips = [p["teacher_stability"]["flip_rate"] for p in streams]
    out["teacher"] = {"flip_rate": float(np.nanmean(tflips)) if tflips else float("nan")}
    return out

"""One method on one stream: run it (online, fixed stride, a fixed student, label hold or flow) and score it
into the cached part's dict (summary, temporal stability, extra)."""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np

from jitnet_jax.config import StudentConfig
from jitnet_jax.data.concat import scene_scores
from jitnet_jax.data.types import StreamSource
from jitnet_jax.eval.baselines import (
    StabilityMeter,
    oracle_examples,
    run_fixed_student,
    run_label_hold,
    train_offline,
)
from jitnet_jax.eval.costs import CostModel
from jitnet_jax.eval.summary import passed_checks, summarize_per_frame
from jitnet_jax.eval.table.methods import Method
from jitnet_jax.eval.table.settings import Settings, online_config
from jitnet_jax.eval.table.starts import initial_state
from jitnet_jax.eval.windowed import frame_bins
from jitnet_jax.online.engine import init_online_state
from jitnet_jax.online.runner import run_stream
from jitnet_jax.student.metrics import iou_from_counts


def run_method(
    s: Settings, m: Method, source: StreamSource, cfg: StudentConfig, weights: tuple[Any, Any] | None
) -> dict[str, Any]:
    """Run one method on one stream from ``weights`` (its start; None = random init); returns the
    cached-result dict (summary + stability + extra; ``extra["bins"]`` the run's counts per second of
    stream, :func:`~jitnet_jax.eval.windowed.frame_bins`; on a constructed stream ``extra["scenes"]``
    holds each scene's scores, :func:`~jitnet_jax.data.concat.scene_scores`)."""
    info = source.info
    meter = StabilityMeter(s.stability_threshold)
    cost = CostModel()
    extra: dict[str, Any] = {}

    def on_chunk(chunk: Any, preds: np.ndarray) -> None:
        meter.update(chunk.frames, preds, chunk.valid)

    common = {"cost": cost, "measured_teacher_ms": s.teacher_ms}
    if m.kind in ("online", "fixed"):
        ocfg = online_config(s, m, cfg, info.fps)
        state = init_online_state(initial_state(s, cfg, weights), ocfg, (s.height, s.width))
        res = run_stream(
            source,
            ocfg,
            state=state,
            max_frames=s.max_frames,
            keep_preds=True,
            on_chunk=lambda chunk, stats, pf: on_chunk(chunk, stats["pred"]),
            progress=s.progress,
        )
        pf = res.per_frame
        summary = summarize_per_frame(
            pf,
            info.class_names,
            wall_s=res.wall_s,
            compile_s=res.compile_s,
            a_thr=ocfg.a_thr,
            teacher_delay=ocfg.teacher_delay,
            frames_per_update=m.replay_batch,
            **common,
        )
        passed = passed_checks(pf, ocfg.a_thr, ocfg.teacher_delay)
        extra.update(
            passed_teacher_frames=passed, mean_delta=float(pf["delta"].mean()) if len(pf["delta"]) else 0
        )
    elif m.kind in ("no_adapt", "oracle"):
        state = initial_state(s, cfg, weights)
        if m.kind == "oracle":
            frames, labels, wts = oracle_examples(source, s.oracle_every, s.max_frames)
            t0 = time.perf_counter()
            state, losses = train_offline(
                cfg,
                state,
                frames,
                labels,
                wts,
                epochs=s.oracle_epochs,
                key=jax.random.key(s.seed + 7),
                fg_weight=s.online.fg_weight,
                bg_weight=s.online.bg_weight,
                progress=s.progress,
                desc=f"{info.name} oracle",
            )
            extra.update(
                train_examples=len(frames),
                epochs=s.oracle_epochs,
                losses=losses,
                train_s=time.perf_counter() - t0,
                note="offline training time excluded from the speedup",
            )
        run = run_fixed_student(
            source,
            cfg,
            state.params,
            state.batch_stats,
            chunk_size=s.online.chunk_size,
            max_frames=s.max_frames,
            on_chunk=on_chunk,
            progress=s.progress,
        )
        pf = run.per_frame
        summary = summarize_per_frame(
            pf, info.class_names, wall_s=run.wall_s, compile_s=run.compile_s, **common
        )
    elif m.kind == "hold":
        run = run_label_hold(
            source, m.delta, chunk_size=s.online.chunk_size, max_frames=s.max_frames, on_chunk=on_chunk
        )
        pf = run.per_frame
        summary = summarize_per_frame(pf, info.class_names, student_ms=0.0, **common)
    elif m.kind == "flow":
        if s.run_flow is None:
            raise ValueError(f"{m.name}: flow propagation needs OpenCV (pip install -e .[flow])")
        run = s.run_flow(
            source,
            m.delta,
            chunk_size=s.online.chunk_size,
            max_frames=s.max_frames,
            on_chunk=on_chunk,
            progress=s.progress,
        )
        extra.update(run.extra)
        pf = run.per_frame
        summary = summarize_per_frame(
            pf,
            info.class_names,
            student_ms=run.extra["flow_ms_per_frame"],
            wall_s=run.wall_s,
            **common,
        )
    else:
        raise ValueError(f"unknown method kind {m.kind!r}")
    extra["prefix"] = prefix_scores(pf)
    extra["bins"] = frame_bins(pf, info.fps)  # one-second counts: windowed mIoU (eval.windowed)
    if hasattr(source, "scenes_json"):
        extra["scenes"] = scene_scores(source.scenes_json(), pf)
    return {
        "method": m.name,
        "stream": info.name,
        "summary": summary,
        "stability": meter.result(),
        "extra": extra,
    }


#: Stream prefixes (frames) scored from the same run: online methods are causal, so the score of the first
#: K frames is the score of a run stopped after K frames (the stream-length ablation).
PREFIXES = (150, 300, 600, 1200)


def prefix_scores(per_frame: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """``{K: {"miou", "teacher_fraction", "updates"}}`` over the first K frames, for each K in
    :data:`PREFIXES` shorter than the run."""
    out = {}
    for k in PREFIXES:
        if k >= len(per_frame["frame"]):
            break
        sc = iou_from_counts(*(per_frame[x][:k].sum(0) for x in ("tp", "fp", "fn")))
        out[str(k)] = {
            "miou": sc["miou"],
            "teacher_fraction": float(per_frame["teacher"][:k].mean()),
            "updates": int(per_frame["updates"][:k].sum()),
        }
    return out

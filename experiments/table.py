"""The paper's per-stream table: every method on every stream, one command.

    python -m experiments.table --lvs ../shared/data/lvs_mini --out results/table [--streams ...]
        [--height 180 --width 320 --max-frames N]

Methods (columns):
  * ``online_a{0.7,0.8,0.9}``: online distillation (Algorithm 1) from the leave-one-stream-out pretrained
    student (``--no-pretrain``: from random init);
  * ``online_a0.8_random``: online distillation at a_thr 0.8 from random init (the value of pretraining);
  * ``fixed_d{8,16}``: teacher every delta frames, exactly ``--fixed-updates`` updates per teacher frame;
  * ``no_adapt``: the pretrained student on every frame, no teacher, no updates;
  * ``oracle``: trained offline on every 8th teacher frame of the same stream, then no updates;
  * ``hold_d{8,16}``: the teacher label every delta frames, held until the next one (zero student cost);
  * ``flow_d{8,16}``: the teacher label warped forward with Farneback flow (only with OpenCV).

Cells are "mIoU (speedup x, teacher %)": stream-level foreground mIoU against the teacher's labels on all
frames, the cost-model speedup over running the teacher on every frame (paper costs: teacher 300 ms,
student inference 7 ms, update 30 ms; 0 student cost for label hold, the measured flow time for flow) and
the fraction of frames the teacher ran on. ``table.json`` also holds the measured speedup (this CPU's
wall time of the method against ``--teacher-ms`` per teacher frame), class IoUs, updates and the
temporal stability (flip rate on static pixels, ``jitnet_jax.eval.baselines``) of the teacher and every method.

Overall row: mIoU and flip rate are unweighted means over streams; speedup and teacher % are computed from
frame / teacher-frame / update totals over all streams.

Every (method, stream) result is cached as JSON under ``OUT/runs/<stream>/<method>.json`` together with a
key of everything that determines it; a rerun reuses matching results (and leave-one-out checkpoints
under ``OUT/pretrained/``), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jitnet_jax.compile_cache import enable_compile_cache
from jitnet_jax.config import ModelConfig, OptimConfig, StudentConfig, override, to_dict
from jitnet_jax.data.label_store import atomic_write_bytes
from jitnet_jax.data.store_source import StoreSource
from jitnet_jax.eval.baselines import (
    StabilityMeter,
    fixed_stride_config,
    oracle_examples,
    run_fixed_student,
    run_label_hold,
    summarize_run,
    teacher_stability,
    train_offline,
)
from jitnet_jax.eval.costs import CostModel, cost_model_speedup
from jitnet_jax.online.engine import OnlineConfig, init_online_state
from jitnet_jax.online.runner import run_stream
from jitnet_jax.student.pretrained import load_student, read_meta, save_student
from jitnet_jax.student.step import StudentState, init_state

ONLINE_THRESHOLDS = (0.7, 0.8, 0.9)
STRIDES = (8, 16)
#: Teacher cost on this CPU: YOLOv8n-seg int8 end to end (shared/data/README.md), ms per frame.
MEASURED_TEACHER_MS = 325.0


@dataclasses.dataclass(frozen=True)
class Method:
    """One column. ``kind``: online | fixed | no_adapt | oracle | hold | flow."""

    name: str
    kind: str
    a_thr: float = 0.8
    delta: int = 8
    pretrained: bool = True
    label: str = ""


def methods(pretrain: bool, flow: bool) -> list[Method]:
    """The table's columns in order."""
    init = "LOO-pretrained" if pretrain else "random init"
    out = [
        Method(f"online_a{a}", "online", a_thr=a, pretrained=pretrain, label=f"JITNet {a} ({init})")
        for a in ONLINE_THRESHOLDS
    ]
    if pretrain:
        out.append(
            Method("online_a0.8_random", "online", a_thr=0.8, pretrained=False, label="JITNet 0.8 (random)")
        )
    out += [
        Method(f"fixed_d{d}", "fixed", delta=d, pretrained=pretrain, label=f"fixed stride {d}")
        for d in STRIDES
    ]
    out.append(Method("no_adapt", "no_adapt", pretrained=pretrain, label=f"no adaptation ({init})"))
    out.append(Method("oracle", "oracle", delta=8, pretrained=False, label="offline oracle"))
    out += [Method(f"hold_d{d}", "hold", delta=d, pretrained=False, label=f"label hold {d}") for d in STRIDES]
    if flow:
        out += [Method(f"flow_d{d}", "flow", delta=d, pretrained=False, label=f"flow {d}") for d in STRIDES]
    return out


# --------------------------------------------------------------------------- caching helpers


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, default=_jsonable) + "\n").encode())


def _jsonable(x: Any) -> Any:
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_cached(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The cached result at ``path`` if its key matches ``key``."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if data.get("key") == _digest(key) else None


# --------------------------------------------------------------------------- one stream


@dataclasses.dataclass
class Settings:
    """Everything shared by the runs of one table."""

    lvs: Path
    out: Path
    height: int
    width: int
    max_frames: int | None
    online: OnlineConfig
    fixed_updates: int
    pretrain: bool
    pretrain_epochs: int
    pretrain_every: int
    pretrain_max_per_stream: int
    oracle_epochs: int
    oracle_every: int
    seed: int
    teacher_ms: float
    stability_threshold: int
    progress: bool

    def common_key(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "width": self.width,
            "max_frames": self.max_frames,
            "online": to_dict(self.online),
            "seed": self.seed,
            "stability_threshold": self.stability_threshold,
        }


def student_config(s: Settings, num_classes: int) -> StudentConfig:
    model = dataclasses.replace(s.online.student.model, num_classes=num_classes)
    return dataclasses.replace(s.online.student, model=model).validate()


def store_dir(s: Settings, stream: str) -> Path:
    from teacher.precompute import ensure_store

    return ensure_store(
        lvs=s.lvs,
        stream=stream,
        height=s.height,
        width=s.width,
        max_frames=s.max_frames,
        cache_dir=s.out / "stores",
        progress=s.progress,
    )


def pretrained_student(
    s: Settings, stream: str, all_streams: Sequence[str], cfg: StudentConfig, class_names: tuple[str, ...]
) -> tuple[Any, Any]:
    """Leave-one-out pretrained weights for ``stream`` (trained on the other streams; cached)."""
    from experiments.pretrain import pretrain, store_examples

    others = [o for o in all_streams if o != stream]
    key = {
        "others": others,
        "classes": list(class_names),
        "model": to_dict(cfg.model),
        "optim": to_dict(cfg.optim),
        "epochs": s.pretrain_epochs,
        "every": s.pretrain_every,
        "cap": s.pretrain_max_per_stream,
        "height": s.height,
        "width": s.width,
        "max_frames": s.max_frames,
        "seed": s.seed,
    }
    path = s.out / "pretrained" / stream
    if path.is_dir():
        try:
            if read_meta(path)["info"].get("key") == _digest(key):
                return load_student(path, cfg.model)
        except ValueError:
            pass
    if not others:
        raise ValueError(
            f"leave-one-out pretraining for {stream} needs at least one other stream (--streams)"
        )
    dirs = [store_dir(s, o) for o in others]
    cap = min(s.max_frames or 10**9, s.pretrain_every * s.pretrain_max_per_stream)
    examples = store_examples(dirs, class_names, s.pretrain_every, cap, s.progress)
    t0 = time.perf_counter()
    state, losses = pretrain(
        examples, cfg, epochs=s.pretrain_epochs, key=jax.random.key(s.seed + 1000), progress=s.progress
    )
    info = {
        "key": _digest(key),
        "streams": others,
        "excluded": stream,
        "examples": len(examples[0]),
        "losses": losses,
        "train_s": time.perf_counter() - t0,
    }
    save_student(path, state, cfg.model, info=info)
    return state.params, state.batch_stats


def initial_state(s: Settings, cfg: StudentConfig, weights: tuple[Any, Any] | None) -> StudentState:
    state = init_state(jax.random.key(s.seed), cfg, (s.height, s.width))
    if weights is not None:  # copied: the online loop donates its state
        params, stats = jax.tree_util.tree_map(jnp.copy, weights)
        state = state.replace(params=params, batch_stats=stats)
    return state


def run_method(
    s: Settings, m: Method, source: StoreSource, cfg: StudentConfig, weights: tuple[Any, Any] | None
) -> dict[str, Any]:
    """Run one method on one stream; returns the cached-result dict (summary + stability + extra)."""
    info = source.info
    meter = StabilityMeter(s.stability_threshold)
    cost = CostModel()
    extra: dict[str, Any] = {}

    def on_chunk(chunk: Any, preds: np.ndarray) -> None:
        meter.update(chunk.frames, preds, chunk.valid)

    if m.kind in ("online", "fixed"):
        ocfg = dataclasses.replace(s.online, student=cfg, a_thr=m.a_thr)
        if m.kind == "fixed":
            ocfg = fixed_stride_config(ocfg, m.delta, s.fixed_updates)
        state = init_online_state(initial_state(s, cfg, weights if m.pretrained else None), ocfg)
        res = run_stream(
            source,
            ocfg,
            state=state,
            max_frames=s.max_frames,
            keep_preds=True,
            on_chunk=lambda st, chunk, stats, pf: on_chunk(chunk, stats["pred"]),
            progress=s.progress,
        )
        pf, wall, compile_s = res.per_frame, res.wall_s, res.compile_s
        summary = summarize_run(
            pf, info.class_names, cost=cost, measured_teacher_ms=s.teacher_ms, wall_s=wall
        )
        passed = int((pf["teacher"] & (pf["acc"] > ocfg.a_thr)).sum())
        extra.update(
            passed_teacher_frames=passed, mean_delta=float(pf["delta"].mean()) if len(pf["delta"]) else 0
        )
    elif m.kind in ("no_adapt", "oracle"):
        state = initial_state(s, cfg, weights if m.pretrained else None)
        train_s = 0.0
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
            train_s = time.perf_counter() - t0
            extra.update(train_examples=len(frames), epochs=s.oracle_epochs, losses=losses, train_s=train_s)
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
        pf, wall, compile_s = run.per_frame, run.wall_s, run.compile_s
        summary = summarize_run(
            pf, info.class_names, cost=cost, measured_teacher_ms=s.teacher_ms, wall_s=wall
        )
        if m.kind == "oracle":
            extra["note"] = "offline training time excluded from the speedup"
    elif m.kind == "hold":
        run = run_label_hold(
            source, m.delta, chunk_size=s.online.chunk_size, max_frames=s.max_frames, on_chunk=on_chunk
        )
        pf, wall, compile_s = run.per_frame, 0.0, 0.0
        summary = summarize_run(
            pf, info.class_names, cost=cost, student_ms=0.0, measured_teacher_ms=s.teacher_ms
        )
    elif m.kind == "flow":
        from teacher.flow import run_flow_propagation

        run = run_flow_propagation(
            source,
            m.delta,
            chunk_size=s.online.chunk_size,
            max_frames=s.max_frames,
            on_chunk=on_chunk,
            progress=s.progress,
        )
        pf, wall, compile_s = run.per_frame, run.wall_s, 0.0
        extra.update(run.extra)
        summary = summarize_run(
            pf,
            info.class_names,
            cost=cost,
            student_ms=run.extra["flow_ms_per_frame"],
            measured_teacher_ms=s.teacher_ms,
            wall_s=wall,
        )
    else:
        raise ValueError(f"unknown method kind {m.kind!r}")
    summary["compile_s"] = compile_s
    return {
        "method": m.name,
        "stream": info.name,
        "summary": summary,
        "stability": meter.result(),
        "extra": extra,
    }


def method_key(s: Settings, m: Method, stream: str) -> dict[str, Any]:
    key: dict[str, Any] = {"method": dataclasses.asdict(m), "stream": stream, **s.common_key()}
    if m.kind == "fixed":
        key["fixed_updates"] = s.fixed_updates
    if m.pretrained:
        key["pretrain"] = [s.pretrain_epochs, s.pretrain_every, s.pretrain_max_per_stream]
    if m.kind == "oracle":
        key["oracle"] = [s.oracle_epochs, s.oracle_every]
    key.pop("stream")
    key["stream"] = stream
    return key


def run_table(s: Settings, streams: Sequence[str], ms: Sequence[Method]) -> dict[str, Any]:
    """Run (or reuse) every method on every stream; returns ``{"streams": {stream: {...}}}``."""
    results: dict[str, Any] = {}
    all_streams = list(streams)
    for stream in streams:
        source = StoreSource(store_dir(s, stream))
        info = source.info
        cfg = student_config(s, info.num_classes)
        per: dict[str, Any] = {
            "class_names": list(info.class_names),
            "frames": info.num_frames,
            "methods": {},
        }
        tkey = {"teacher_stability": stream, **s.common_key()}
        tpath = s.out / "runs" / stream / "teacher.json"
        cached = load_cached(tpath, tkey)
        if cached is None:
            cached = {
                "key": _digest(tkey),
                "stability": teacher_stability(source, s.max_frames, s.stability_threshold),
            }
            write_json(tpath, cached)
        per["teacher_stability"] = cached["stability"]
        weights = None
        for m in ms:
            key = method_key(s, m, stream)
            path = s.out / "runs" / stream / f"{m.name}.json"
            cached = load_cached(path, key)
            if cached is None:
                if m.pretrained and weights is None:
                    weights = pretrained_student(s, stream, all_streams, cfg, info.class_names)
                t0 = time.perf_counter()
                cached = run_method(s, m, source, cfg, weights)
                cached.update(key=_digest(key), total_s=time.perf_counter() - t0)
                write_json(path, cached)
                sm = cached["summary"]  # one line per finished run, also without progress bars
                print(
                    f"{stream:>20} {m.name:<20} mIoU {sm['miou']:.3f}  speedup {sm['speedup_cost_model']:.1f}x  "
                    f"teacher {100 * sm['teacher_fraction']:.1f}%  ({cached['total_s']:.0f} s)",
                    file=sys.stderr,
                )
            per["methods"][m.name] = cached
        results[stream] = per
    return {"streams": results}


# --------------------------------------------------------------------------- outputs


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
        u = sum(r["summary"]["updates"] for r in rows)
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
        }
    tflips = [p["teacher_stability"]["flip_rate"] for p in streams]
    out["teacher"] = {"flip_rate": float(np.nanmean(tflips)) if tflips else float("nan")}
    return out


def cell(miou: float, speedup: float, teacher_fraction: float) -> str:
    return f"{miou:.3f} ({speedup:.1f}x, {100 * teacher_fraction:.1f}%)"


def table_rows(results: dict[str, Any], ms: Sequence[Method], ov: dict[str, Any]) -> list[list[str]]:
    header = ["stream"] + [m.name for m in ms]
    rows = [header]
    for stream, p in results["streams"].items():
        row = [stream]
        for m in ms:
            r = p["methods"].get(m.name)
            sm = r["summary"] if r else None
            row.append(cell(sm["miou"], sm["speedup_cost_model"], sm["teacher_fraction"]) if sm else "")
        rows.append(row)
    row = ["Overall"]
    for m in ms:
        o = ov.get(m.name)
        row.append(cell(o["miou"], o["speedup_cost_model"], o["teacher_fraction"]) if o else "")
    rows.append(row)
    return rows


def stability_rows(results: dict[str, Any], ms: Sequence[Method], ov: dict[str, Any]) -> list[list[str]]:
    rows = [["stream", "teacher"] + [m.name for m in ms]]
    for stream, p in results["streams"].items():
        row = [stream, f"{p['teacher_stability']['flip_rate']:.4f}"]
        row += [
            f"{p['methods'][m.name]['stability']['flip_rate']:.4f}" if m.name in p["methods"] else ""
            for m in ms
        ]
        rows.append(row)
    row = ["Overall", f"{ov['teacher']['flip_rate']:.4f}"]
    row += [f"{ov[m.name]['flip_rate']:.4f}" if m.name in ov else "" for m in ms]
    rows.append(row)
    return rows


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines) + "\n"


def write_outputs(
    s: Settings, results: dict[str, Any], ms: Sequence[Method], settings_json: dict[str, Any]
) -> None:
    ov = overall(results, ms)
    rows = table_rows(results, ms, ov)
    srows = stability_rows(results, ms, ov)
    legend = "\n".join(f"- `{m.name}`: {m.label}" for m in ms)
    limit = f", first {s.max_frames} frames per stream" if s.max_frames else ""
    md = (
        f"# JITNet evaluation ({s.height}x{s.width}{limit})\n\n"
        "Cells: mIoU (cost-model speedup x, teacher %). Overall: mIoU is the unweighted mean over streams; "
        "speedup and teacher % come from the frame/teacher/update totals over all streams.\n\n"
        + markdown(rows)
        + "\n## Temporal stability: flip rate on static pixels (lower is more stable)\n\n"
        + markdown(srows)
        + "\n## Methods\n\n"
        + legend
        + "\n"
    )
    atomic_write_bytes(s.out / "table.md", md.encode())
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    atomic_write_bytes(s.out / "table.csv", buf.getvalue().encode())
    write_json(s.out / "table.json", {"settings": settings_json, "overall": ov, **results})
    plot(s.out / "table.png", results, ms, ov)


def plot(path: Path, results: dict[str, Any], ms: Sequence[Method], ov: dict[str, Any]) -> None:
    """mIoU against teacher % for every method, one panel per stream plus Overall."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (k, {m: v["methods"][m]["summary"] for m in v["methods"]}) for k, v in results["streams"].items()
    ]
    panels.append(("Overall", {k: v for k, v in ov.items() if k != "teacher"}))
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 4 * nrows), squeeze=False)
    markers = "os^vD<>pP*Xh"
    for ax, (title, data) in zip(axes.ravel(), panels):
        for i, m in enumerate(ms):
            if m.name in data:
                d = data[m.name]
                ax.scatter(
                    100 * d["teacher_fraction"], d["miou"], marker=markers[i % len(markers)], label=m.name
                )
        ax.set_title(title)
        ax.set_xlabel("teacher frames (%)")
        ax.set_ylabel("mIoU")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.table", description=__doc__.split("\n\n")[0])
    p.add_argument("--lvs", type=Path, required=True, help="LVS root (e.g. ../shared/data/lvs_mini)")
    p.add_argument("--streams", nargs="*", help="streams (default: every stream in streams.json)")
    p.add_argument("--out", type=Path, required=True, help="output directory (results are cached here)")
    p.add_argument("--height", type=int, default=180)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--max-frames", type=int, help="only the first N frames of each stream")
    p.add_argument("--methods", nargs="*", help="subset of method names (default: all)")
    p.add_argument(
        "--optim", choices=["adam", "sgd"], default="adam", help="student optimiser (online and offline)"
    )
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--width-multiplier", type=float, default=ModelConfig.width_multiplier)
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--fixed-updates", type=int, default=4, help="updates per teacher frame of fixed stride")
    p.add_argument("--no-pretrain", action="store_true", help="start every student from random init")
    p.add_argument("--pretrain-epochs", type=int, default=2)
    p.add_argument("--pretrain-every", type=int, default=8)
    p.add_argument("--pretrain-max-per-stream", type=int, default=60)
    p.add_argument("--oracle-epochs", type=int, default=20)
    p.add_argument("--oracle-every", type=int, default=8)
    p.add_argument(
        "--teacher-ms", type=float, default=MEASURED_TEACHER_MS, help="measured teacher ms per frame"
    )
    p.add_argument("--stability-threshold", type=int, default=8, help="static pixel: max |dRGB| <= this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="OnlineConfig overrides")
    p.add_argument(
        "--jax-cache",
        help="persistent XLA compilation cache folder or 'off' (default: $JITNET_COMPILE_CACHE, else "
        "~/.cache/jitnet_jax/xla)",
    )
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; 0 on success, 2 on bad arguments/input."""
    args = build_parser().parse_args(argv)
    try:
        from teacher.class_groups import load_streams_json
        from teacher.flow import have_opencv

        args.out.mkdir(parents=True, exist_ok=True)
        enable_compile_cache(args.jax_cache)
        streams = args.streams or sorted(load_streams_json(args.lvs / "streams.json"))
        for st in streams:
            if not (args.lvs / st).is_dir():
                raise ValueError(f"{args.lvs / st}: stream folder not found")
        student = StudentConfig(
            model=ModelConfig(width_multiplier=args.width_multiplier),
            optim=OptimConfig(name=args.optim, lr=args.lr),
        )
        online = override(
            OnlineConfig(student=student, chunk_size=args.chunk_size), list(args.set)
        ).validate()
        s = Settings(
            lvs=args.lvs,
            out=args.out,
            height=args.height,
            width=args.width,
            max_frames=args.max_frames,
            online=online,
            fixed_updates=args.fixed_updates,
            pretrain=not args.no_pretrain,
            pretrain_epochs=args.pretrain_epochs,
            pretrain_every=args.pretrain_every,
            pretrain_max_per_stream=args.pretrain_max_per_stream,
            oracle_epochs=args.oracle_epochs,
            oracle_every=args.oracle_every,
            seed=args.seed,
            teacher_ms=args.teacher_ms,
            stability_threshold=args.stability_threshold,
            progress=not args.no_progress,
        )
        ms = methods(s.pretrain, have_opencv())
        if args.methods:
            unknown = sorted(set(args.methods) - {m.name for m in ms})
            if unknown:
                raise ValueError(f"unknown --methods {unknown}; choices: {[m.name for m in ms]}")
            ms = [m for m in ms if m.name in args.methods]
        results = run_table(s, streams, ms)
        settings_json = {
            **s.common_key(),
            "streams": streams,
            "lvs": str(args.lvs),
            "fixed_updates": s.fixed_updates,
            "pretrain": s.pretrain,
            "teacher_ms": s.teacher_ms,
            "argv": list(argv or sys.argv[1:]),
        }
        write_outputs(s, results, ms, settings_json)
    except (ValueError, OSError) as e:
        print(f"error: {' '.join(str(e).split()) or type(e).__name__}", file=sys.stderr)
        return 2
    print(args.out / "table.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

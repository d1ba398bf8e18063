"""The paper's per-stream table: every method on every stream, one command.

    python -m experiments.table --lvs ../shared/data/lvs_mini --out results/table [--streams ...]
        [--height 180 --width 320 --max-frames N] [--methods ...] [--collect | --rewrite]
        [--cost-teacher yolov8_seg] [--costs PATH]

Speedups are given under two cost models: the paper's V100 constants and costs measured on this machine
(``jitnet_jax.eval.measured_costs``: the teacher named by ``--cost-teacher``, the student's predict, one update
of B frames and flow, timed once at the table's resolution and kept in ``OUT/costs.json``, which a rerun
reuses). ``--rewrite`` recomputes nothing: it rewrites the table files from ``OUT/table.json``.

A stream may be constructed from others or segments of them (``--streams a+b+c 'a[0:400]+b'``,
docs/scenes.md): it is named by its canonical spec, and ``table.json`` lists its scenes.

Flags and stream discovery only; the methods, the cached and locked parts, and the table files are
described and implemented in :mod:`jitnet_jax.eval.table` (protocol: ``docs/evaluation.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jitnet_jax.compile_cache import enable_compile_cache
from jitnet_jax.config import ModelConfig, OnlineConfig, OptimConfig, StudentConfig, override
from jitnet_jax.data.concat import canonical_spec, is_constructed, parse_stream_spec
from jitnet_jax.data.label_store import FORMAT_VERSION as STORE_FORMAT_VERSION
from jitnet_jax.eval.measured_costs import MeasuredCosts, load_or_measure, machine, measure_costs
from jitnet_jax.eval.table import (
    MEASURED_TEACHER_MS,
    Settings,
    methods,
    online_key,
    run_table,
    write_outputs,
)
from jitnet_jax.eval.table.methods import Method
from jitnet_jax.host_memory import keep_freed_memory


def make_store(s: Settings, stream: str) -> Path:
    """The stream's label store at the table's resolution (``s.max_frames`` frames at most), made by the
    teacher stage on first use."""
    from teacher.precompute import ensure_store

    return ensure_store(
        lvs=s.lvs,
        stream=stream,
        height=s.height,
        width=s.width,
        max_frames=s.max_frames,
        cache_dir=s.out / "stores" / f"v{STORE_FORMAT_VERSION}",
        progress=s.progress,
    )


def stream_frames(
    lvs: Path, streams: Sequence[str], height: int, width: int, per_stream: int = 16, start: int = 100
) -> list[np.ndarray]:
    """``per_stream`` consecutive frames (uint8 ``[height, width, 3]``, from frame ``start``, else the first)
    of each stream (a constructed stream's: of each of its streams), resized as the table reads them: the frames
    the measured costs are timed on."""
    from jitnet_jax.data.video_frames import VideoFrames
    from teacher.lvs import open_stream

    frames: list[np.ndarray] = []
    names: list[str] = []
    for st in streams:  # a constructed stream's frames are its parts' (each stream once)
        for name in [p[0] for p in parse_stream_spec(st)] if is_constructed(st) else [st]:
            if name not in names:
                names.append(name)
    for st in names:
        s = open_stream(lvs, st, check_frames=False)
        vf = VideoFrames([str(c.video) for c in s.chunks], height, width, st, ("background",), "")
        first = start if sum(s.frame_counts) > start + per_stream else 0
        for _, (small, _) in zip(range(per_stream), vf.frames(first)):
            frames.append(small)
    return frames


def measure_table_costs(
    args: argparse.Namespace, streams: Sequence[str], student: StudentConfig, batches: Sequence[int]
) -> MeasuredCosts:
    """Time the teacher ``args.cost_teacher`` (TFLite backend + rasteriser with the traffic groups), the
    student (``student`` with 4 classes), one update of each ``B`` and flow, on the streams' frames at the
    table's resolution, in this process."""
    import dataclasses

    from teacher.backends import make_teacher
    from teacher.flow import have_opencv, warp_label
    from teacher.live import backend_labeller
    from teacher.precompute import DEFAULT_VIDEO_GROUPS, RasterParams

    frames = stream_frames(args.lvs, streams, args.height, args.width)
    backend = make_teacher(args.cost_teacher)
    label = backend_labeller(backend, args.height, args.width, DEFAULT_VIDEO_GROUPS, RasterParams())
    model = dataclasses.replace(student, model=dataclasses.replace(student.model, num_classes=4)).validate()
    print(f"measuring the cost model on {len(frames)} frames ({machine()})", file=sys.stderr, flush=True)
    return measure_costs(
        frames,
        lambda f: label(0, f),
        args.cost_teacher,
        model,
        batches,
        flow=warp_label if have_opencv() else None,
    )


def check_stream(lvs: Path, stream: str) -> str:
    """``stream`` as the table names it: a plain stream whose folder is in ``lvs``, or a constructed
    stream's canonical spec after its parts are checked (``teacher.sources.check_lvs_spec``).

    Raises:
      ValueError: a missing stream folder, or a bad constructed stream (one line).
    """
    if is_constructed(stream):
        from teacher.sources import check_lvs_spec

        return canonical_spec(check_lvs_spec(lvs, stream))
    if not (lvs / stream).is_dir():
        raise ValueError(f"{lvs / stream}: stream folder not found")
    return stream


def previous_table(path: Path, ms: Sequence[Method]) -> tuple[dict[str, Any], list[Method]]:
    """The results stored in a ``table.json`` (with its ``settings``) and the methods of ``ms`` that it
    holds, in ``ms``'s order.

    Raises:
      ValueError: unreadable file, no ``streams``, or a method the catalogue does not know (one line).
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable table ({' '.join(str(e).split())})") from None
    streams = data.get("streams") if isinstance(data, dict) else None
    if not isinstance(streams, dict) or not streams:
        raise ValueError(f"{path}: no field streams (not a table.json)")
    held = {name for p in streams.values() for name in p.get("methods", {})}
    unknown = sorted(held - {m.name for m in ms})
    if unknown:
        raise ValueError(f"{path}: methods {unknown} are not in the catalogue (or not in --methods)")
    results = {"streams": streams, "missing": data.get("missing", []), "settings": data.get("settings", {})}
    return results, [m for m in ms if m.name in held]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.table", description=__doc__.split("\n\n")[0])
    p.add_argument("--lvs", type=Path, required=True, help="LVS root (e.g. ../shared/data/lvs_mini)")
    p.add_argument(
        "--streams",
        nargs="*",
        help="streams, or constructed streams such as 'a[0:400]+b' (default: every stream in streams.json)",
    )
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
    p.add_argument(
        "--camvid-init",
        default="camvid",
        help="the CamVid-pretrained student for the cv_* and *_cv columns: a checkpoint directory or a "
        "shipped name (default: camvid, the student shipped with the package; 'none': leave them out)",
    )
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
    p.add_argument(
        "--collect",
        action="store_true",
        help="compute nothing: write the table from the parts already cached (missing cells stay empty)",
    )
    p.add_argument(
        "--rewrite",
        action="store_true",
        help="compute no part: rewrite the table files from OUT/table.json (e.g. to add the measured costs)",
    )
    p.add_argument(
        "--cost-teacher",
        default="yolov8_seg",
        help="TFLite teacher timed for the measured cost model (teacher.backends; 'none': no measured model)",
    )
    p.add_argument(
        "--costs", type=Path, help="measured costs file (default: OUT/costs.json; reused if present)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; 0 on success, 2 on bad arguments/input."""
    args = build_parser().parse_args(argv)
    try:
        from teacher.class_groups import load_streams_json
        from teacher.flow import have_opencv, run_flow_propagation

        args.out.mkdir(parents=True, exist_ok=True)
        enable_compile_cache(args.jax_cache)
        keep_freed_memory()
        streams = args.streams or sorted(load_streams_json(args.lvs / "streams.json"))
        streams = [check_stream(args.lvs, st) for st in streams]
        student = StudentConfig(
            model=ModelConfig(width_multiplier=args.width_multiplier),
            optim=OptimConfig(name=args.optim, lr=args.lr),
        )
        online = override(
            OnlineConfig(student=student, chunk_size=args.chunk_size), list(args.set)
        ).validate()
        camvid = None
        if args.camvid_init != "none":
            from jitnet_jax.student.pretrained import resolve_init

            camvid = resolve_init(args.camvid_init)
            if not camvid.is_dir():
                if args.camvid_init != "camvid":
                    raise ValueError(f"{camvid}: --camvid-init checkpoint not found")
                camvid = None  # the shipped student is not there (yet): leave the CamVid columns out
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
            camvid=camvid,
            collect=args.collect,
            make_store=make_store,
            run_flow=run_flow_propagation if have_opencv() else None,
        )
        ms = methods(s.pretrain, have_opencv(), camvid is not None)
        if args.methods:
            unknown = sorted(set(args.methods) - {m.name for m in ms})
            if unknown:
                raise ValueError(f"unknown --methods {unknown}; choices: {[m.name for m in ms]}")
            ms = [m for m in ms if m.name in args.methods]
        if args.cost_teacher != "none":  # checked before any run: the costs are measured after them
            from teacher.backends import BACKENDS

            if args.cost_teacher not in BACKENDS:
                raise ValueError(
                    f"unknown --cost-teacher {args.cost_teacher!r}; choose one of {sorted(BACKENDS)}"
                )
        if args.rewrite:
            results, ms = previous_table(args.out / "table.json", ms)
        else:
            results = run_table(s, streams, ms)
        costs = None
        if args.cost_teacher != "none":
            batches = sorted({m.replay_batch if m.replay_size else 1 for m in ms if m.student} | {1})
            costs, fresh = load_or_measure(
                args.costs or args.out / "costs.json",
                lambda: measure_table_costs(args, streams, online.student, batches),
            )
            if not fresh and costs.teacher != args.cost_teacher:
                raise ValueError(
                    f"{args.costs or args.out / 'costs.json'}: holds the costs of teacher {costs.teacher}, not "
                    f"--cost-teacher {args.cost_teacher}; delete it to measure again"
                )
        settings_json = {
            **s.common_key(),
            "streams": streams,
            "lvs": str(args.lvs),
            "fixed_updates": s.fixed_updates,
            "pretrain": s.pretrain,
            "teacher_ms": s.teacher_ms,
            "camvid_init": str(camvid) if camvid else None,
            "online": online_key(s.online),
            "oracle": [s.oracle_epochs, s.oracle_every],
            "pretrain_loo": [s.pretrain_epochs, s.pretrain_every, s.pretrain_max_per_stream],
            "argv": list(argv or sys.argv[1:]),
        }
        if args.rewrite:  # the settings of the run that computed the parts, and how they were rewritten
            settings_json = {**results.pop("settings"), "rewrite_argv": list(argv or sys.argv[1:])}
        write_outputs(s, results, ms, settings_json, costs)
    except (ValueError, OSError) as e:
        print(f"error: {' '.join(str(e).split()) or type(e).__name__}", file=sys.stderr)
        return 2
    print(args.out / "table.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

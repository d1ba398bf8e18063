"""Sweep K configurations of the online loop over one stream in ONE compiled program (vmap over configs).

    python -m experiments.sweep --grid lr=0.003,0.01,0.03 --grid a_thr=0.7,0.8,0.9 --frames 300 \\
        --height 90 --width 160 --out runs/sweep1
    python -m experiments.sweep --grid schedule=constant,cosine,warmup_cosine,exponential,piecewise \\
        --lvs ../shared/data/lvs_mini --stream residential_street1 --out runs/sweep2
    python -m experiments.sweep --grid seed=0,1 --lvs DIR --streams a,b,c   # several streams in one program
    python -m experiments.sweep --grid a_thr=0.8,0.9 --lvs DIR --streams a+b+c,a   # a constructed stream

Sweepable (``--grid name=v1,v2,...``; the grid is the cartesian product): lr, schedule, momentum,
a_thr, delta_min, delta_max, u_max, fg_weight, bg_weight, seed, stream (index into --streams).
The base configuration comes from ``--config FILE`` / the common flags / ``--set path=value`` exactly as in
``experiments.stream``. A grid file (``--grid-file grid.json``: ``{"lr": [0.003, 0.01], ...}``) may replace
or extend the ``--grid`` flags.

Outputs in ``--out``: ``sweep.json`` (base config, members, one summary per member, the scenes of each
constructed stream), ``sweep.csv`` (one row per configuration with the summary keys of
``experiments.stream``) and ``pareto.png`` (mIoU against teacher %, Pareto front highlighted). ``--mode gated|naive|map`` picks the compiled form (default gated; see
``jitnet_jax.sweep.driver``); ``--devices N`` shards the configuration axis over N devices; ``--slice auto``
runs this host's slice of the grid (``jax.process_index()`` of ``jax.process_count()``, multi-host).
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from jitnet_jax.compile_cache import add_compile_cache_flag, enable_compile_cache
from jitnet_jax.host_memory import keep_freed_memory
from jitnet_jax.io import atomic_write_text, lock_output
from jitnet_jax.run_config import add_config_flags, make_config
from teacher.sources import open_source

SUMMARY_KEYS = (
    "miou",
    "frames",
    "teacher_frames",
    "teacher_fraction",
    "updates",
    "speedup_cost_model",
    "speedup_flops",
    "wall_s",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("sweep")
    g.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2,...", help="a sweep axis")
    g.add_argument("--grid-file", help='JSON {"name": [values], ...} of sweep axes')
    g.add_argument("--mode", default="gated", choices=["gated", "naive", "map", "lockstep"])
    g.add_argument("--devices", type=int, default=1, help="shard the configurations over this many devices")
    add_compile_cache_flag(g)
    g.add_argument("--slice", default=None, help="'auto' (this host's share, multi-host) or 'i/n'")
    g.add_argument("--memory-gb", type=float, help="memory budget for the K check (default 80%% of free)")
    src = p.add_argument_group("stream source (default: the embedded synthetic stream)")
    src.add_argument(
        "--stream",
        default="synthetic",
        help="'synthetic', or with --lvs a stream name or a constructed stream (a[0:400]+b, docs/scenes.md)",
    )
    src.add_argument(
        "--streams", help="comma-separated stream names or constructed streams (with --lvs) swept together"
    )
    src.add_argument("--lvs", help="LVS root folder holding stream folders")
    src.add_argument("--store", help="a precomputed label store")
    src.add_argument("--cache-dir", default="label_stores", help="where precomputed label stores go")
    add_config_flags(p.add_argument_group("base configuration (as in experiments.stream)"))
    out = p.add_argument_group("outputs")
    out.add_argument("--out", help="output folder (default runs/sweep-<time>)")
    out.add_argument("--no-flops", action="store_true", help="skip the FLOPs speedup (saves two compiles)")
    out.add_argument("--no-progress", action="store_true")
    return p


def _stream_args(args: argparse.Namespace, name: str) -> argparse.Namespace:
    a = copy.copy(args)
    a.stream, a.video, a.teacher, a.model, a.groups = name, None, None, None, None
    return a


def open_sources(args: argparse.Namespace, cfg: Any) -> list[Any]:
    """The stream sources (one unless ``--streams``). A name may be a constructed stream
    (``a[0:400]+b``, docs/scenes.md): ``--streams a+b,c`` sweeps two streams, the first of two scenes."""

    names = [s.strip() for s in args.streams.split(",") if s.strip()] if args.streams else [args.stream]
    if len(names) > 1 and not args.lvs:
        raise ValueError("--streams needs --lvs DIR")
    return [open_source(_stream_args(args, n), cfg) for n in names]


def parse_slice(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    if text == "auto":
        import jax

        return jax.process_index(), jax.process_count()
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--slice {text!r} must be 'auto' or 'i/n'") from None
    if not 0 <= i < n:
        raise ValueError(f"--slice {text!r}: need 0 <= i < n")
    return i, n


def write_outputs(
    out: Path, base_cfg: Any, rows: list[dict[str, Any]], class_names: tuple[str, ...], extra: dict
) -> None:
    """``sweep.json``, ``sweep.csv`` and ``pareto.png`` (atomic writes)."""
    from jitnet_jax.config import to_dict
    from jitnet_jax.sweep import Member, pareto_front

    front = set(pareto_front(rows))
    for i, r in enumerate(rows):
        r["pareto"] = i in front
    doc = {"base": to_dict(base_cfg), "class_names": list(class_names), **extra, "members": rows}
    atomic_write_text(out / "sweep.json", json.dumps(doc, indent=2, default=float))
    member_keys = [f.name for f in dataclasses.fields(Member)]
    cols = ["member", *member_keys, *[k for k in SUMMARY_KEYS if k in rows[0]]]
    cols += [f"iou_{c}" for c in class_names] + ["pareto", "sweep_wall_s"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)
    for r in rows:
        vals = {**r, **{f"iou_{c}": v for c, v in r["class_iou"].items()}}
        w.writerow([vals.get(c, "") for c in cols])
    atomic_write_text(out / "sweep.csv", buf.getvalue())
    plot_pareto(rows, out / "pareto.png")


def plot_pareto(rows: list[dict[str, Any]], path: Path) -> None:
    """mIoU against teacher % for every configuration, the Pareto front joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jitnet_jax.sweep import pareto_front

    x = [100 * r["teacher_fraction"] for r in rows]
    y = [r["miou"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    ax.scatter(x, y, c="tab:blue", s=28, label="configuration")
    front = sorted(pareto_front(rows), key=lambda i: x[i])
    ax.plot([x[i] for i in front], [y[i] for i in front], "o-", c="tab:red", label="Pareto front")
    for i in front:
        ax.annotate(rows[i]["label"], (x[i], y[i]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("teacher frames (%)")
    ax.set_ylabel("mIoU (foreground)")
    ax.set_title(f"sweep of {len(rows)} configurations")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    enable_compile_cache(args.compile_cache)
    keep_freed_memory()
    try:
        return _main(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    from jitnet_jax.sweep import make_grid, parse_grid

    cfg = make_config(args)
    axes: dict[str, list[Any]] = {}
    if args.grid_file:
        try:
            data = json.loads(Path(args.grid_file).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{args.grid_file}: cannot read grid ({e})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{args.grid_file}: expected a JSON object of name -> list of values")
        axes.update({k: list(v) if isinstance(v, list) else [v] for k, v in data.items()})
    axes.update(parse_grid(args.grid))
    if not axes:
        raise ValueError("give at least one --grid NAME=V1,V2,... (or --grid-file)")
    sources = open_sources(args, cfg)
    info = sources[0].info
    online = cfg.online
    if info.num_classes != online.student.model.num_classes:
        model = dataclasses.replace(online.student.model, num_classes=info.num_classes)
        online = dataclasses.replace(online, student=dataclasses.replace(online.student, model=model))
    members = make_grid(online, axes, seed=cfg.seed)
    sl = parse_slice(args.slice)
    if sl is not None:
        from jitnet_jax.online.sharding import host_slice

        members = host_slice(members, *sl)
        if not members:
            raise ValueError(f"--slice {args.slice}: this slice of the grid is empty")
    return run_and_write(args, cfg, online, sources, members, axes, sl)


def run_and_write(
    args: Any, cfg: Any, online: Any, sources: list[Any], members: list[Any], axes: dict, sl: Any
) -> int:
    import jax

    from jitnet_jax.sweep import run_sweep, summarize_sweep

    info = sources[0].info
    out = Path(args.out) if args.out else Path("runs") / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    if sl is not None and sl[1] > 1:
        out = out / f"slice{sl[0]}of{sl[1]}"
    lock = lock_output(out, "sweep folder")  # noqa: F841  held until return; a second sweep here is refused
    if (out / "sweep.json").exists():
        raise ValueError(f"{out} already holds a sweep; pick another --out (nothing was changed)")
    mesh, n_real = None, len(members)
    if args.devices > 1:
        from jitnet_jax.online.sharding import member_mesh, pad_members

        # With --slice (one slice per host) each host shards its slice over its own devices only.
        devices = jax.local_devices() if sl is not None else jax.devices()
        if len(devices) < args.devices:
            raise ValueError(f"--devices {args.devices}: only {len(devices)} devices available")
        mesh = member_mesh(devices[: args.devices])
        members, n_real = pad_members(members, args.devices)
    budget = int(args.memory_gb * 2**30) if args.memory_gb else None
    frames = cfg.frames or None
    print(
        f"sweep: {n_real} configurations over {[s.info.name for s in sources]} ({info.height}x{info.width}, "
        f"mode={args.mode}{f', {args.devices} devices' if mesh is not None else ''})",
        file=sys.stderr,
    )
    result = run_sweep(
        sources,
        online,
        members,
        max_frames=frames,
        mode=args.mode,
        mesh=mesh,
        memory_budget=budget,
        progress=not args.no_progress,
    )
    if n_real < len(members):
        result.members = result.members[:n_real]
        result.per_frame = result.per_frame[:n_real]
        result.state = jax.tree_util.tree_map(lambda x: x[:n_real], result.state)
    gflops = None
    if not args.no_flops:
        from jitnet_jax.eval.flops import student_flops

        gflops = {
            k.replace("_flops", "_gflops"): v / 1e9
            for k, v in student_flops(online.student, (info.height, info.width)).items()
        }
    rows = summarize_sweep(result, online, info.class_names, gflops=gflops)
    keys = list(axes)
    for r, m in zip(rows, result.members):
        r["label"] = m.label(keys)
        r["stream_name"] = sources[m.stream].info.name
    extra = {
        "grid": {k: [str(v) for v in vs] for k, vs in axes.items()},
        "mode": args.mode,
        "streams": [s.info.name for s in sources],
        "scenes": {s.info.name: s.scenes_json() for s in sources if hasattr(s, "scenes_json")},
        "sweep_wall_s": result.wall_s,
        "compile_s": result.compile_s,
        "memory_per_member_mb": result.memory.per_member / 2**20,
    }
    write_outputs(out, online, rows, info.class_names, extra)
    width = max(len(r["label"]) for r in rows)
    print(f"\n{'configuration':<{width}}  {'mIoU':>6}  {'teacher%':>8}  {'updates':>7}  {'speedup':>7}")
    for r in rows:
        mark = " *" if r["pareto"] else ""
        print(
            f"{r['label']:<{width}}  {r['miou']:>6.3f}  {100 * r['teacher_fraction']:>8.1f}  "
            f"{r['updates']:>7d}  {r['speedup_cost_model']:>6.2f}x{mark}"
        )
    print(
        f"\n{len(rows)} configurations in {result.wall_s:.1f}s (+{result.compile_s:.1f}s compile); "
        f"* = Pareto front\noutputs in {out}/"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Many cameras, one program: a fleet of online students under one teacher budget.

    python -m experiments.fleet --lvs ../shared/data/lvs_mini --streams all            # five cameras
    python -m experiments.fleet --lvs DIR --streams all --policy need --teacher-budget 0.063
    python -m experiments.fleet --video a.mp4 --video b.mp4 --teacher yolov8_seg --teacher-per-tick 1 \\
        --policy round_robin
    python -m experiments.fleet --synthetic 4 --frames 300 --policy need --teacher-per-tick 1

Every camera runs Algorithm 1 with the run configuration (the flags of ``experiments.stream``; on real
streams the same preset and CamVid start), its own student and its own classes (one head over the union of
the cameras' class groups, each camera's loss, check and score over its own). The teacher is shared:
``--teacher-per-tick K`` (at most K teacher frames per frame of the fleet) and/or ``--teacher-budget F``
(teacher frames at most F of all camera-frames); ``--policy`` picks who gets it when more cameras ask
(``independent``: the budget is ignored, each camera is its single run; ``round_robin``; ``need``). See
docs/fleet.md.

Outputs in ``--out``: one folder per camera (``config.json``, ``summary.json``, ``per_frame.csv``,
``timeline.png``: the files of a single run, without the video), ``fleet.json`` (every summary, the ledger,
the command), ``fleet.md`` and ``teacher_use.png`` (teacher frames per camera over time). Ctrl-C saves a
checkpoint at the next chunk; ``--resume`` continues it.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jitnet_jax.compile_cache import add_compile_cache_flag, enable_compile_cache
from jitnet_jax.config import to_dict
from jitnet_jax.host_memory import keep_freed_memory
from jitnet_jax.io import atomic_write_text, lock_output
from jitnet_jax.run_config import REAL_STREAM_INIT, add_config_flags, make_config, real_stream
from teacher.sources import open_source


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.fleet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("cameras")
    src.add_argument("--lvs", help="LVS root folder holding stream folders")
    src.add_argument(
        "--streams",
        help="with --lvs: 'all' (every stream in the folder) or comma-separated stream names or constructed "
        "streams (docs/scenes.md), one camera each",
    )
    src.add_argument("--video", action="append", default=[], help="a video file, one camera each (repeat)")
    src.add_argument("--teacher", help="teacher backend for --video (labels precomputed first)")
    src.add_argument("--model", help="teacher model file for --video")
    src.add_argument("--groups", help='class groups for --video, e.g. "person;car,bus,truck"')
    src.add_argument("--synthetic", type=int, metavar="N", help="N synthetic cameras (seeds 0..N-1)")
    src.add_argument("--cache-dir", default="label_stores", help="where precomputed label stores go")
    fl = p.add_argument_group("teacher budget")
    fl.add_argument("--policy", default="independent", choices=["independent", "round_robin", "need"])
    fl.add_argument("--teacher-per-tick", type=int, default=0, metavar="K", help="at most K per frame")
    fl.add_argument(
        "--teacher-budget", type=float, default=0.0, metavar="F", help="at most F of all camera-frames"
    )
    fl.add_argument("--starve", type=int, default=64, help="need: a camera waiting this long goes first")
    fl.add_argument(
        "--mode",
        default="lockstep",
        choices=["lockstep", "gated", "naive"],
        help="the compiled form (lockstep: cameras in turn, exact; gated: vmapped, for accelerators)",
    )
    fl.add_argument("--devices", type=int, default=1, help="split the cameras over this many devices")
    fl.add_argument(
        "--distributed",
        action="store_true",
        help="multi-host: jax.distributed.initialize() (a cluster's settings are detected; else give "
        "--coordinator, --num-processes, --process-id), the cameras split over every device of every host; each "
        "host reads only its own cameras; process 0 writes the outputs (no checkpoints)",
    )
    fl.add_argument("--coordinator", help="--distributed: HOST:PORT of process 0")
    fl.add_argument("--num-processes", type=int, help="--distributed: processes in the run")
    fl.add_argument("--process-id", type=int, help="--distributed: this process's index")
    run = p.add_argument_group("run (as experiments.stream)")
    add_config_flags(run)
    run.add_argument("--init", help="'camvid' (default on real streams), a checkpoint directory, or 'none'")
    add_compile_cache_flag(run)
    out = p.add_argument_group("outputs")
    out.add_argument("--out", help="output folder (default runs/fleet-<time>)")
    out.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    out.add_argument("--checkpoint-every", type=int, default=0, metavar="FRAMES")
    out.add_argument("--keep", type=int, default=2, help="checkpoints kept")
    out.add_argument("--no-flops", action="store_true")
    out.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.distributed:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices' collectives (only)
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    enable_compile_cache(args.compile_cache)
    keep_freed_memory()
    try:
        return _main(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _camera_args(args: argparse.Namespace, **kw: Any) -> argparse.Namespace:
    a = copy.copy(args)
    a.stream, a.video, a.store, a.live = "synthetic", None, None, False
    for k, v in kw.items():
        setattr(a, k, v)
    return a


def open_cameras(args: argparse.Namespace, cfg: Any) -> list[Any]:
    """One stream source per camera, from ``--lvs/--streams``, ``--video`` or ``--synthetic``."""
    given = sum(bool(x) for x in (args.lvs, args.video, args.synthetic))
    if given != 1:
        raise ValueError("give exactly one of --lvs DIR --streams ..., --video (repeated) or --synthetic N")
    if args.lvs:
        if not args.streams:
            raise ValueError("--lvs needs --streams all|a,b,...")
        names = [s.strip() for s in args.streams.split(",") if s.strip()]
        if names == ["all"]:
            root = Path(args.lvs)
            if not root.is_dir():
                raise ValueError(f"--lvs {args.lvs}: no such folder")
            names = sorted(d.name for d in root.iterdir() if d.is_dir() and any(d.glob("*.mp4")))
            if not names:
                raise ValueError(f"--lvs {args.lvs}: no stream folders (with .mp4 files) in it")
        return [open_source(_camera_args(args, stream=n, lvs=args.lvs), cfg) for n in names]
    if args.video:
        if not args.teacher:
            raise ValueError("--video needs --teacher NAME")
        return [open_source(_camera_args(args, video=v, lvs=None), cfg) for v in args.video]
    if args.synthetic < 1:
        raise ValueError(f"--synthetic must be >= 1, got {args.synthetic}")
    from jitnet_jax.data.synthetic import SyntheticStream

    return [
        SyntheticStream(num_frames=cfg.frames or 1500, height=cfg.height, width=cfg.width, seed=cfg.seed + i)
        for i in range(args.synthetic)
    ]


def _main(args: argparse.Namespace) -> int:
    from jitnet_jax.fleet import Budget, make_fleet

    if args.init is None and real_stream(args):
        args.init = REAL_STREAM_INIT
    elif args.init == "none":
        args.init = None
    cfg = make_config(args)
    if cfg.online.teacher_delay:
        raise ValueError("--teacher-delay: the fleet runs on stored labels with no teacher delay")
    budget = Budget(args.policy, args.teacher_per_tick, args.teacher_budget, args.starve).validate()
    fleet = make_fleet(open_cameras(args, cfg))
    out = Path(args.out) if args.out else Path("runs") / f"fleet-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.distributed and jax.process_index() != 0:  # process 0 owns the output folder
        return _run(args, cfg, fleet, budget, None)
    with lock_output(out, "fleet folder"):  # a second fleet run in this folder is refused meanwhile
        return _run(args, cfg, fleet, budget, out)


def _fingerprint(args: argparse.Namespace, cfg: Any, fleet: Any, budget: Any) -> dict[str, Any]:
    from jitnet_jax.online.checkpoint import make_fingerprint

    extra: dict[str, Any] = {
        "fleet.cameras": fleet.names,
        "fleet.classes": list(fleet.classes),
        "fleet.budget": dataclasses.asdict(budget),
        "fleet.mode": args.mode,
        "fleet.identities": [str(getattr(s, "identity", type(s.source).__name__)) for s in fleet.sources],
    }
    if args.init:
        from jitnet_jax.io import path_digest
        from jitnet_jax.student.pretrained import resolve_init

        extra["init"] = path_digest(resolve_init(args.init))
    return make_fingerprint(cfg, **extra)


def _run(args: argparse.Namespace, cfg: Any, fleet: Any, budget: Any, out: Path | None) -> int:
    """The run; ``out`` None: a multi-host run's other processes (they compute, process 0 writes)."""
    if args.distributed:
        from jitnet_jax.fleet import run_fleet
        from jitnet_jax.online.sharding import member_mesh

        if args.resume or args.checkpoint_every:
            raise ValueError("--distributed runs keep no checkpoints (no --resume/--checkpoint-every)")
        if len(fleet) % jax.device_count():
            raise ValueError(f"{len(fleet)} cameras do not split evenly over {jax.device_count()} devices")
        result = run_fleet(
            fleet,
            cfg.online,
            budget,
            seed=cfg.seed,
            init=_init(args, cfg, fleet),
            max_frames=cfg.frames or None,
            mode=args.mode,
            mesh=member_mesh(),
            progress=not args.no_progress and out is not None,
        )
        return 0 if out is None else _finish(args, cfg, fleet, result, out)
    from jitnet_jax.fleet import new_fleet_state, run_fleet, split_rows
    from jitnet_jax.fleet.driver import fleet_config
    from jitnet_jax.online.checkpoint import GracefulStop, StreamCheckpointer, check_fingerprint

    fingerprint = _fingerprint(args, cfg, fleet, budget)
    finished = (out / "fleet.json").exists()
    started = (out / "config.json").exists()
    if not args.resume and (finished or started):
        what = "a finished fleet run" if finished else "an unfinished fleet run (continue it with --resume)"
        raise ValueError(f"{out} holds {what}; pick another --out (nothing was changed)")
    if started:
        recorded = json.loads((out / "config.json").read_text()).get("fingerprint", {})
        check_fingerprint(recorded, fingerprint, where=str(out))
    if finished:
        print(
            f"{out}: the fleet run is already complete; nothing to do (nothing was changed)", file=sys.stderr
        )
        return 0
    online = fleet_config(cfg.online, len(fleet.classes))
    init = _init(args, cfg, fleet)
    state = new_fleet_state(fleet, online, cfg.seed, init)
    per_frame = None
    ckpt = StreamCheckpointer(
        out / "checkpoints", fingerprint, every_frames=args.checkpoint_every, keep=args.keep, name=str(out)
    )
    if args.resume:
        restored = ckpt.restore_latest(state)
        if restored is not None:
            state, saved = restored
            per_frame = split_rows(saved, len(fleet))
            print(f"resumed at frame {int(np.max(state.cameras.cursor))}", file=sys.stderr)
    record = {**to_dict(cfg), "cameras": fleet.names, "class_names": list(fleet.classes)}
    atomic_write_text(out / "config.json", json.dumps({**record, "fingerprint": fingerprint}, indent=2))
    mesh = None
    if args.devices > 1:
        from jitnet_jax.online.sharding import member_mesh

        if len(jax.devices()) < args.devices:
            raise ValueError(f"--devices {args.devices}: only {len(jax.devices())} devices available")
        if len(fleet) % args.devices:
            raise ValueError(f"{len(fleet)} cameras do not split evenly over --devices {args.devices}")
        mesh = member_mesh(jax.devices()[: args.devices])
    print(
        f"fleet: {len(fleet)} cameras {fleet.names}, classes {list(fleet.classes[1:])}, policy {budget.policy}",
        file=sys.stderr,
    )
    with GracefulStop() as stop:
        result = run_fleet(
            fleet,
            cfg.online,
            budget,
            seed=cfg.seed,
            init=init,
            max_frames=cfg.frames or None,
            mode=args.mode,
            mesh=mesh,
            state=state,
            per_frame=per_frame,
            checkpointer=ckpt,
            should_stop=stop.is_set,
            progress=not args.no_progress,
        )
    if result.stopped:
        ckpt.close()
        tick = int(np.max(jax.device_get(result.result.state.cameras.cursor)))
        print(
            f"interrupted at frame {tick}; saved a checkpoint; resume with --resume --out {out}",
            file=sys.stderr,
        )
        return 130
    if args.checkpoint_every or args.resume:
        from jitnet_jax.fleet.driver import checkpoint_rows

        ckpt.save(result.result.state, checkpoint_rows(fleet)(result.result.per_frame))
    ckpt.close()
    return _finish(args, cfg, fleet, result, out)


def _init(args: argparse.Namespace, cfg: Any, fleet: Any) -> Any:
    """``init(key) -> (params, batch_stats)``: ``--init`` mapped onto the fleet's classes by name (None: random)."""
    if not args.init:
        return None
    from jitnet_jax.fleet.driver import fleet_config
    from jitnet_jax.student.pretrained import load_student_for_classes, resolve_init

    path = resolve_init(args.init)
    model = fleet_config(cfg.online, len(fleet.classes)).student.model

    def init(key: jax.Array) -> tuple[Any, Any]:
        params, stats, _ = load_student_for_classes(path, model, fleet.classes, key)
        return params, stats

    return init


def _finish(args: argparse.Namespace, cfg: Any, fleet: Any, result: Any, out: Path) -> int:
    from experiments.stream import write_per_frame_csv
    from experiments.visualize import plot_timeline
    from jitnet_jax.fleet import camera_per_frame, summarize_fleet
    from jitnet_jax.fleet.driver import fleet_config
    from jitnet_jax.fleet.report import fleet_markdown, plot_teacher_use

    online = fleet_config(cfg.online, len(fleet.classes))
    gflops = None
    if not args.no_flops:
        from jitnet_jax.eval.flops import student_flops

        h, w = fleet.sources[0].info.height, fleet.sources[0].info.width
        gflops = {
            k.replace("_flops", "_gflops"): v / 1e9 for k, v in student_flops(online.student, (h, w)).items()
        }
    summary = summarize_fleet(result, cfg.online, gflops, cfg.cost)
    per_camera = []
    for i, (name, cam) in enumerate(zip(fleet.names, summary["cameras"])):
        folder = out / name.replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        pf = camera_per_frame(result, i)
        per_camera.append(pf)
        src = fleet.sources[i]
        if hasattr(src, "scenes_json"):
            from jitnet_jax.data.concat import scene_scores

            cam["scenes"] = scene_scores(src.scenes_json(), pf)
        record = {**to_dict(cfg), "stream": name, "class_names": list(fleet.own[i]), "fleet": str(out)}
        atomic_write_text(folder / "config.json", json.dumps(record, indent=2))
        write_per_frame_csv(folder / "per_frame.csv", pf, fleet.own[i])
        plot_timeline(pf, folder / "timeline.png", title=f"{name}: fleet camera, policy {summary['policy']}")
        atomic_write_text(folder / "summary.json", json.dumps({**cam, "stream": name}, indent=2))
    command = "python -m experiments.fleet " + shlex.join(args.argv)
    plot_teacher_use(
        per_camera, fleet.names, out / "teacher_use.png", f"teacher frames per camera ({summary['policy']})"
    )
    atomic_write_text(out / "fleet.md", fleet_markdown(summary, command))
    doc = {
        **summary,
        "command": command,
        "classes": list(fleet.classes),
        "ledger": {k: v.tolist() for k, v in result.ledger.items()},
        "mode": args.mode,
    }
    atomic_write_text(out / "fleet.json", json.dumps(doc, indent=2, default=float))  # last: marks it finished
    print(fleet_markdown(summary))
    print(f"outputs in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

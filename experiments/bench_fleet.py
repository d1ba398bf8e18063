"""Benchmark: the fleet program against N separate single-stream runs, side by side in one process.

    python -m experiments.bench_fleet                          # N = 5 and 16 cameras at 180x320
    python -m experiments.bench_fleet --cameras 4 --frames 32 --height 48 --width 64 --modes map

N synthetic cameras (seeds 0..N-1, one stream each) run (a) as one fleet program (``jitnet_jax.fleet``, no
budget: every camera does exactly what its single run does, so the work is the same) in each compiled form
(``--modes``), and (b) as N single runs (``jitnet_jax.online.runner.run_stream``, the engine of
``experiments.stream``) one after another in this process. Prints camera-frames per second of compute
(compilation excluded; every program is compiled once before it is timed), end-to-end seconds, and the
ratio fleet / separate for every mode: above 1 the fleet is faster. ``--policy need --teacher-per-tick 1``
times a budgeted fleet instead (less work than the separate runs: its teacher frames are capped).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from typing import Any

import jax

from jitnet_jax.compile_cache import enable_compile_cache
from jitnet_jax.config import ModelConfig, OptimConfig, StudentConfig
from jitnet_jax.data.synthetic import SyntheticStream
from jitnet_jax.fleet import Budget, make_fleet, run_fleet
from jitnet_jax.host_memory import keep_freed_memory
from jitnet_jax.online.engine import OnlineConfig
from jitnet_jax.online.runner import run_stream


def bench_config(chunk_size: int, u_max: int) -> OnlineConfig:
    """The cameras' configuration (4 classes, the synthetic stream's; Adam as the table's setting)."""
    return OnlineConfig(
        student=StudentConfig(model=ModelConfig(num_classes=4), optim=OptimConfig(name="adam", lr=1e-3)),
        chunk_size=chunk_size,
        u_max=u_max,
        a_thr=0.9,
        delta_min=8,
        delta_max=16,
    )


def time_fleet(cams: list[Any], base: OnlineConfig, budget: Budget, mode: str) -> dict[str, float]:
    """One fleet run, after a run of one chunk that compiles the program (timed apart)."""
    fleet = make_fleet(cams)
    t0 = time.perf_counter()
    run_fleet(fleet, base, budget, mode=mode, max_frames=base.chunk_size, progress=False)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    r = run_fleet(fleet, base, budget, mode=mode, progress=False)
    total = time.perf_counter() - t0
    frames = sum(len(pf["frame"]) for pf in r.result.per_frame)
    teacher = sum(int(pf["teacher"].sum()) for pf in r.result.per_frame)
    return {
        "compute_s": r.result.wall_s,
        "total_s": total,
        "first_run_s": warm,
        "frames": frames,
        "teacher_frames": teacher,
        "frames_per_s": frames / r.result.wall_s,
    }


def time_separate(cams: list[Any], base: OnlineConfig) -> dict[str, float]:
    """N single runs one after another (the program compiled by a first short run, timed apart)."""
    t0 = time.perf_counter()
    run_stream(cams[0], base, jax.random.key(0), max_frames=base.chunk_size, progress=False)
    warm = time.perf_counter() - t0
    compute = total = 0.0
    frames = teacher = 0
    for c in cams:
        t0 = time.perf_counter()
        r = run_stream(c, base, jax.random.key(0), progress=False)
        total += time.perf_counter() - t0
        compute += r.wall_s
        frames += len(r.per_frame["frame"])
        teacher += int(r.per_frame["teacher"].sum())
    return {
        "compute_s": compute,
        "total_s": total,
        "first_run_s": warm,
        "frames": frames,
        "teacher_frames": teacher,
        "frames_per_s": frames / compute,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m experiments.bench_fleet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--cameras", default="5,16", help="fleet sizes N, comma-separated")
    p.add_argument("--frames", type=int, default=64, help="frames per camera")
    p.add_argument("--height", type=int, default=180)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--chunk-size", type=int, default=16)
    p.add_argument("--u-max", type=int, default=8)
    p.add_argument(
        "--modes", default="lockstep,gated", help="compiled forms of the fleet: lockstep, gated, naive"
    )
    p.add_argument("--policy", default="independent", choices=["independent", "round_robin", "need"])
    p.add_argument("--teacher-per-tick", type=int, default=0)
    p.add_argument("--json", help="also write the numbers to this file")
    args = p.parse_args(argv)
    enable_compile_cache()
    keep_freed_memory()
    base = bench_config(args.chunk_size, args.u_max)
    budget = Budget(args.policy, args.teacher_per_tick).validate()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    device = jax.devices()[0]
    print(
        f"bench_fleet: {args.frames} frames per camera at {args.height}x{args.width}, chunk {args.chunk_size}, "
        f"u_max {args.u_max}, policy {budget.policy}; backend {jax.default_backend()} "
        f"({device.device_kind}, {jax.device_count()} device(s)), {platform.processor() or platform.machine()}"
    )
    out: dict[str, Any] = {"args": vars(args), "backend": jax.default_backend(), "device": device.device_kind}
    for n in [int(x) for x in args.cameras.split(",") if x.strip()]:
        cams = [SyntheticStream(args.frames, args.height, args.width, seed=i) for i in range(n)]
        sep = time_separate(cams, base)
        row: dict[str, Any] = {"separate": sep}
        print(
            f"N={n:>3} separate runs : {sep['frames_per_s']:7.1f} camera-frames/s compute "
            f"({sep['compute_s']:.1f} s; {sep['total_s']:.1f} s end to end; teacher frames {sep['teacher_frames']})"
        )
        for mode in modes:
            f = time_fleet(cams, base, budget, mode)
            row[mode] = f
            print(
                f"N={n:>3} fleet ({mode:>5}) : {f['frames_per_s']:7.1f} camera-frames/s compute "
                f"({f['compute_s']:.1f} s; {f['total_s']:.1f} s end to end; teacher frames {f['teacher_frames']})"
                f"   fleet/separate = {f['frames_per_s'] / sep['frames_per_s']:.2f}x"
            )
        out[str(n)] = row
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: K configurations in one compiled sweep vs K sequential single-configuration runs.

    python -m experiments.bench_sweep                      # K=8, 64 synthetic frames at 48x64, every mode
    python -m experiments.bench_sweep --frames 64 --height 180 --width 320 --modes gated,map,lockstep

The K configurations are a grid over lr x a_thr x schedule (2 x 2 x 2 for K=8; larger K adds seeds). The
sequential baseline runs each configuration with ``jitnet_jax.online.runner.run_stream`` -- the engine of
``experiments.stream`` -- one after the other in this process, each compiling its own program as a
separate ``experiments.stream`` invocation would. Prints wall time end to end (compile included) and
compute only, for each sweep mode and for the sequential runs, and the ratios side by side.

``gated/grouped`` is the gated mode with JAX's own batching of per-member convolutions (one grouped
convolution, what GPU/TPU run) instead of the CPU rule of ``jitnet_jax.model.conv`` (one convolution per
member): the before/after of that rule in one run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from typing import Any

import jax

from jitnet_jax.compile_cache import enable_compile_cache
from jitnet_jax.config import ModelConfig, OptimConfig, StudentConfig
from jitnet_jax.data.synthetic import SyntheticStream
from jitnet_jax.host_memory import keep_freed_memory
from jitnet_jax.model import conv
from jitnet_jax.online.engine import OnlineConfig
from jitnet_jax.online.runner import run_stream
from jitnet_jax.sweep import Member, run_sweep


def bench_members(base: OnlineConfig, k: int) -> list[Member]:
    """``k`` configurations: lr x a_thr x schedule, then more seeds."""
    grid = itertools.product(range(1 + (k - 1) // 8), (0.003, 0.01), (0.7, 0.9), ("constant", "cosine"))
    out = []
    for seed, lr, a_thr, sched in grid:
        m = Member.from_config(base, seed=seed)
        out.append(Member(**{**m.__dict__, "lr": lr, "a_thr": a_thr, "schedule": sched}))
    return out[:k]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m experiments.bench_sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--k", type=int, default=8, help="configurations")
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--height", type=int, default=48)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--chunk-size", type=int, default=16)
    p.add_argument("--u-max", type=int, default=4)
    p.add_argument(
        "--modes",
        default="gated,gated/grouped,naive,map,lockstep",
        help="sweep modes to time: gated, gated/grouped (grouped convolutions), naive, map, lockstep",
    )
    p.add_argument("--no-sequential", action="store_true", help="skip the K sequential runs")
    p.add_argument("--json", help="also write the numbers to this file")
    args = p.parse_args(argv)
    enable_compile_cache()
    keep_freed_memory()
    base = OnlineConfig(
        student=StudentConfig(model=ModelConfig(num_classes=4), optim=OptimConfig(name="sgd", lr=0.01)),
        chunk_size=args.chunk_size,
        u_max=args.u_max,
        delta_min=4,
        delta_max=32,
    )
    source = SyntheticStream(args.frames, args.height, args.width, seed=0)
    members = bench_members(base, args.k)
    print(
        f"{args.k} configurations, {args.frames} frames at {args.height}x{args.width}, "
        f"chunk {args.chunk_size}, u_max {args.u_max}, {jax.device_count()} device(s) [{jax.default_backend()}]"
    )
    print("load average (1, 5, 15 min) at the start: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    results: dict[str, Any] = {"k": args.k, "frames": args.frames, "height": args.height, "width": args.width}
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    teacher = None
    for label in modes:
        mode, _, conv_rule = label.partition("/")
        saved, conv.BATCHED_KERNEL_CONV = conv.BATCHED_KERNEL_CONV, conv_rule or conv.BATCHED_KERNEL_CONV
        try:
            t0 = time.perf_counter()
            res = run_sweep(source, base, members, mode=mode, progress=False)
            total = time.perf_counter() - t0
        finally:
            conv.BATCHED_KERNEL_CONV = saved
        frac = sum(int(pf["teacher"].sum()) for pf in res.per_frame) / (args.k * args.frames)
        teacher = teacher or frac
        results[f"sweep_{label}"] = {"total_s": total, "compute_s": res.wall_s, "compile_s": res.compile_s}
        print(
            f"sweep ({label:>13}): {total:7.1f}s total = {res.compile_s:6.1f}s compile + {res.wall_s:6.1f}s compute"
            f"   ({1e3 * res.wall_s / args.frames:.0f} ms/frame for all {args.k}; teacher {100 * frac:.0f}%)",
            flush=True,
        )
    if not args.no_sequential:
        total = compute = compile_s = 0.0
        for m in members:
            t0 = time.perf_counter()
            r = run_stream(source, m.online_config(base), jax.random.key(m.seed), progress=False)
            total += time.perf_counter() - t0
            compute += r.wall_s
            compile_s += r.compile_s
        results["sequential"] = {"total_s": total, "compute_s": compute, "compile_s": compile_s}
        print(
            f"sequential x{args.k}:       {total:7.1f}s total = {compile_s:6.1f}s compile + {compute:6.1f}s compute"
        )
        print("sequential / sweep (above 1: the sweep is faster):")
        print(f"  {'mode':>13}  {'compute':>8}  {'end to end':>10}")
        for label in modes:
            r = results[f"sweep_{label}"]
            print(f"  {label:>13}  {compute / r['compute_s']:7.2f}x  {total / r['total_s']:9.2f}x")
    if "sweep_naive" in results and "sweep_gated" in results:
        print(
            f"gated vs naive vmap (compute): {results['sweep_naive']['compute_s'] / results['sweep_gated']['compute_s']:.2f}x"
        )
    print("load average (1, 5, 15 min) at the end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

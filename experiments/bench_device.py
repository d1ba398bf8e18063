"""Benchmark: the student on whatever backend JAX runs on (CPU, GPU, TPU), float32 against bfloat16.

    python -m experiments.bench_device                  # the defaults below; < 8 min on one GPU
    python -m experiments.bench_device --sizes 90x160 --fleet-n 1,8 --fleet-size 45x80   # a small CPU run

Prints, with the backend, the device name and the JAX version:
  * latency: per frame size (``--sizes``, default 180x320, 360x640, 720x1280) and compute dtype
    (``--dtypes``, default float32 and bfloat16; ``ModelConfig.dtype``), the median ms of one prediction
    (``student.step.predict``) and of one training step on one frame (forward, backward, optimiser update:
    ``loss_and_grads`` + ``apply_grads``), each over ``--repeats`` samples of ``--calls`` back-to-back calls;
  * loop: frames/s of the compiled online loop (``online.runner.run_stream``: teacher frames, accuracy checks,
    updates and predictions) on a ``--loop-frames`` synthetic stream at ``--loop-size``, per dtype;
  * fleet: frames/s of N synthetic cameras (``--fleet-n``, default 1, 8, 32, 128), each with its own student,
    all in one compiled program (:func:`fleet_fps`: today the sweep machinery, ``jitnet_jax.sweep.run_sweep``
    with one member per camera, ``--mode`` gated/map/naive), summed over the cameras;
  * the compile time of each part (counted apart from the timings) and the number of programs compiled.

Bounded cost: ``2 * len(sizes) * len(dtypes)`` small programs (predict, train step), ``len(dtypes)`` loops and
``len(fleet_n)`` fleet programs (18 by default); every timing is compute only. The synthetic cameras are
generated before the clock starts. A fleet size whose memory estimate does not fit the device prints the
refusal and the run goes on. ``--json PATH`` also writes every number.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jitnet_jax.compile_cache import add_compile_cache_flag, enable_compile_cache
from jitnet_jax.config import DTYPES, ModelConfig, OnlineConfig, OptimConfig, StudentConfig
from jitnet_jax.data.synthetic import SyntheticStream
from jitnet_jax.data.types import Chunk, StreamInfo
from jitnet_jax.host_memory import keep_freed_memory
from jitnet_jax.model.jitnet import compute_dtype
from jitnet_jax.online.runner import run_stream
from jitnet_jax.student.step import StudentState, apply_grads, init_state, loss_and_grads, predict
from jitnet_jax.sweep import MODES

DEFAULT_SIZES = "180x320,360x640,720x1280"
DEFAULT_FLEET_N = "1,8,32,128"


def parse_size(text: str) -> tuple[int, int]:
    """``"HxW"`` -> ``(H, W)``; a one-line ``ValueError`` otherwise."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"a frame size looks like 180x320, got {text!r}") from None
    if h < 8 or w < 8:
        raise ValueError(f"frame sizes must be at least 8x8, got {text!r}")
    return h, w


def base_config(dtype: str, num_classes: int = 4, chunk_size: int = 16) -> OnlineConfig:
    """The benchmarked online setting (the paper's controller, Adam 1e-3 as ``bench_loop``) in ``dtype``."""
    model = ModelConfig(num_classes=num_classes, dtype=dtype)
    student = StudentConfig(model=model, optim=OptimConfig(name="adam", lr=1e-3))
    return OnlineConfig(student=student, chunk_size=chunk_size).validate()


def _median_ms(fn: Callable[[], Any], repeats: int, calls: int) -> float:
    """Median over ``repeats`` samples of the ms per call of ``calls`` back-to-back calls of ``fn``."""
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = None
        for _ in range(calls):
            out = fn()
        jax.block_until_ready(out)
        samples.append((time.perf_counter() - t0) * 1e3 / calls)
    return statistics.median(samples)


def bench_latency(
    size: tuple[int, int], dtype: str, repeats: int, calls: int, num_classes: int = 4, seed: int = 0
) -> dict[str, float]:
    """``predict_ms`` and ``train_ms`` (one update on one frame) at ``size`` in ``dtype``, and the seconds
    spent compiling both (``compile_s``: their first calls)."""
    cfg = base_config(dtype, num_classes).student
    rng = np.random.default_rng(seed)
    frame = jnp.asarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    label = jnp.asarray(rng.integers(0, num_classes, size).astype(np.int32))
    weight = jnp.ones(size, jnp.float32)
    state = init_state(jax.random.key(seed), cfg, size)
    pr = jax.jit(lambda s, f: predict(cfg, s, f))

    def step(s: StudentState, f: jnp.ndarray, y: jnp.ndarray, w: jnp.ndarray) -> StudentState:
        grads, stats, _ = loss_and_grads(cfg, s, f, y, w)
        return apply_grads(cfg, s, grads, stats)

    train = jax.jit(step, donate_argnums=0)
    t0 = time.perf_counter()
    jax.block_until_ready(pr(state, frame))
    state = jax.block_until_ready(train(state, frame, label, weight))
    compile_s = time.perf_counter() - t0
    predict_ms = _median_ms(lambda: pr(state, frame), repeats, calls)
    box = [state]

    def one_update() -> StudentState:
        box[0] = train(box[0], frame, label, weight)
        return box[0]

    train_ms = _median_ms(one_update, repeats, calls)
    return {"predict_ms": predict_ms, "train_ms": train_ms, "compile_s": compile_s}


class MaterializedSource:
    """A stream source whose chunks were generated in advance (in memory), so timing the device does not
    time the synthetic generator: ``SyntheticStream(num_frames, H, W, seed)``'s chunks of ``chunk_size``."""

    def __init__(self, num_frames: int, size: tuple[int, int], seed: int, chunk_size: int) -> None:
        source = SyntheticStream(num_frames, size[0], size[1], seed=seed)
        self.info: StreamInfo = source.info
        self._chunk_size = chunk_size
        self._chunks = list(source.chunks(chunk_size))

    def chunks(self, chunk_size: int, start: int = 0) -> Iterator[Chunk]:
        if chunk_size != self._chunk_size or start % chunk_size:
            raise ValueError(
                f"materialized at chunk size {self._chunk_size} from frame 0, asked {chunk_size}"
            )
        return iter(self._chunks[start // chunk_size :])


def bench_loop(
    size: tuple[int, int], dtype: str, frames: int, chunk_size: int, num_classes: int = 4, seed: int = 0
) -> dict[str, float]:
    """frames/s of the compiled online loop (``run_stream``) over ``frames`` synthetic frames at ``size``
    in ``dtype`` (compute only), its compile seconds and its share of teacher frames."""
    cfg = base_config(dtype, num_classes, chunk_size)
    source = MaterializedSource(frames, size, seed, chunk_size)
    res = run_stream(source, cfg, jax.random.key(seed), progress=False)
    n = len(res.per_frame["frame"])
    return {
        "fps": n / res.wall_s,
        "compile_s": res.compile_s,
        "teacher_share": float(res.per_frame["teacher"].mean()),
    }


def fleet_fps(
    base: OnlineConfig,
    n: int,
    frames: int,
    size: tuple[int, int],
    mode: str = "gated",
    seed: int = 0,
    memory_budget: int | None = None,
) -> dict[str, float]:
    """frames/s of a fleet (``jitnet_jax.fleet``, no budget) of ``n`` synthetic cameras, each with its own
    student and controller, run together in one compiled program over ``frames`` frames each (compute only;
    the cameras are generated before the clock starts). ``mode``: the fleet's compiled form (``gated``, the
    vmapped one for accelerators; ``lockstep``); ``memory_budget``: bytes per device for the memory check
    (default: what the device has free).

    Returns:
      ``fps`` (frames of all cameras per second), ``compile_s``, ``teacher_share`` (teacher frames over all
      camera frames).
    Raises:
      ValueError: the fleet's memory estimate does not fit the device (one line, from ``check_memory``).
    """
    from jitnet_jax.fleet import Budget, make_fleet, run_fleet

    fleet = make_fleet([MaterializedSource(frames, size, seed + i, base.chunk_size) for i in range(n)])
    res = run_fleet(fleet, base, Budget(), seed=seed, mode=mode, memory_budget=memory_budget, progress=False)
    per_frame = res.result.per_frame
    total = sum(len(pf["frame"]) for pf in per_frame)
    teacher = sum(int(pf["teacher"].sum()) for pf in per_frame)
    return {
        "fps": total / res.result.wall_s,
        "compile_s": res.result.compile_s,
        "teacher_share": teacher / max(total, 1),
    }


def device_line() -> str:
    """``backend <b>, <count> x <device kind>, jax <version>``."""
    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", str(dev))
    return f"backend {jax.default_backend()}, {jax.device_count()} x {kind}, jax {jax.__version__}"


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m experiments.bench_device",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sizes", default=DEFAULT_SIZES, help="latency frame sizes HxW, comma-separated")
    p.add_argument("--dtypes", default="float32,bfloat16", help=f"compute dtypes, any of {DTYPES}")
    p.add_argument("--repeats", type=int, default=5, help="timed samples per latency (median)")
    p.add_argument("--calls", type=int, default=5, help="back-to-back calls per latency sample")
    p.add_argument("--loop-size", default="180x320", help="frame size of the compiled loop")
    p.add_argument(
        "--loop-frames", type=int, default=256, help="synthetic frames of the compiled loop (0: skip)"
    )
    p.add_argument("--fleet-n", default=DEFAULT_FLEET_N, help="camera counts N of the fleet ('' to skip)")
    p.add_argument("--fleet-size", default="180x320", help="frame size of every fleet camera")
    p.add_argument("--fleet-frames", type=int, default=32, help="frames per fleet camera")
    p.add_argument("--fleet-dtype", default="auto", help="compute dtype of the fleet (auto: bf16 off CPU)")
    p.add_argument("--mode", default="gated", choices=MODES, help="how the fleet's cameras are batched")
    p.add_argument(
        "--memory-budget",
        type=float,
        metavar="GIB",
        help="GiB per device the fleet may plan for (default: 80%% of what is free; the estimate is an upper bound)",
    )
    p.add_argument("--chunk-size", type=int, default=16, help="frames per compiled chunk (loop and fleet)")
    p.add_argument("--classes", type=int, default=4, help="student classes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write every number to this JSON file")
    add_compile_cache_flag(p)
    args = p.parse_args(argv)
    try:
        sizes = [parse_size(s) for s in _csv(args.sizes)]
        loop_size, fleet_size = parse_size(args.loop_size), parse_size(args.fleet_size)
        dtypes = _csv(args.dtypes)
        fleet_n = [int(v) for v in _csv(args.fleet_n)]
        for d in [*dtypes, args.fleet_dtype]:
            base_config(d)  # validates the name
        if args.repeats < 1 or args.calls < 1 or args.chunk_size < 1 or args.fleet_frames < 1:
            raise ValueError("--repeats, --calls, --chunk-size and --fleet-frames must be >= 1")
        if any(n < 1 for n in fleet_n) or args.loop_frames < 0:
            raise ValueError("--fleet-n values must be >= 1 and --loop-frames >= 0")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    enable_compile_cache(args.compile_cache)
    keep_freed_memory()
    t_start = time.perf_counter()
    out: dict[str, Any] = {"device": device_line(), "latency": [], "loop": [], "fleet": []}
    compiles, compile_s = 0, 0.0
    print(out["device"])
    print(f"student: JITNet m=0.5, {args.classes} classes; medians of {args.repeats} x {args.calls} calls")

    print("\nlatency (ms per frame)")
    print(f"  {'size':>10} {'dtype':>9} {'predict':>9} {'train step':>11}")
    for size in sizes:
        for dtype in dtypes:
            r = bench_latency(size, dtype, args.repeats, args.calls, args.classes, args.seed)
            compiles, compile_s = compiles + 2, compile_s + r["compile_s"]
            out["latency"].append({"size": f"{size[0]}x{size[1]}", "dtype": dtype, **r})
            label = f"{size[0]}x{size[1]}"
            print(f"  {label:>10} {dtype:>9} {r['predict_ms']:9.2f} {r['train_ms']:11.2f}", flush=True)

    if args.loop_frames:
        print(f"\ncompiled loop: {args.loop_frames} synthetic frames at {loop_size[0]}x{loop_size[1]}")
        for dtype in dtypes:
            r = bench_loop(loop_size, dtype, args.loop_frames, args.chunk_size, args.classes, args.seed)
            compiles, compile_s = compiles + 1, compile_s + r["compile_s"]
            out["loop"].append({"dtype": dtype, **r})
            print(
                f"  {dtype:>9} {r['fps']:9.1f} frames/s  (teacher {100 * r['teacher_share']:.0f}%, "
                f"compile {r['compile_s']:.1f} s)",
                flush=True,
            )

    if fleet_n:
        fdt = args.fleet_dtype
        resolved = jnp.dtype(compute_dtype(fdt)).name
        print(
            f"\nfleet: N synthetic cameras x {args.fleet_frames} frames at {fleet_size[0]}x{fleet_size[1]}, "
            f"one student each, mode {args.mode}, dtype {fdt} ({resolved})"
        )
        fleet_base = base_config(fdt, args.classes, args.chunk_size)
        for n in fleet_n:
            try:
                budget = None if args.memory_budget is None else int(args.memory_budget * 2**30)
                r = fleet_fps(fleet_base, n, args.fleet_frames, fleet_size, args.mode, args.seed, budget)
            except ValueError as e:
                out["fleet"].append({"n": n, "error": str(e)})
                print(f"  N={n:<4} skipped: {e}", flush=True)
                continue
            compiles, compile_s = compiles + 1, compile_s + r["compile_s"]
            out["fleet"].append({"n": n, **r})
            print(
                f"  N={n:<4} {r['fps']:9.1f} frames/s  ({r['fps'] / n:.1f} per camera; teacher "
                f"{100 * r['teacher_share']:.0f}%, compile {r['compile_s']:.1f} s)",
                flush=True,
            )

    total = time.perf_counter() - t_start
    out.update(compiles=compiles, compile_s=compile_s, total_s=total)
    print(f"\n{compiles} programs compiled in {compile_s:.1f} s; {total:.1f} s in all")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

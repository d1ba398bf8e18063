"""Benchmark: the compiled stream loop against the per-frame Python reference and the compute limit.

    python -m experiments.bench_loop [--frames 300 --height 180 --width 320] [--compile-cache PATH|off]

For one stream and config, in one invocation, it prints:
  * compiled: wall time of ``run_stream`` (compiled chunks; compilation excluded);
  * reference: wall time of the per-frame Python loop (``jitnet_jax.online.reference``);
  * limit: the same number of predictions (non-teacher frames), updates and passing accuracy checks (a
    forward pass each) the run used, each timed in isolation as back-to-back jitted calls;
  * the ratios compiled/limit (1.0 = no loop overhead) and reference/compiled.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import numpy as np

from jitnet_jax.compile_cache import add_compile_cache_flag, enable_compile_cache
from jitnet_jax.config import ModelConfig, OptimConfig, StudentConfig
from jitnet_jax.data.synthetic import SyntheticStream
from jitnet_jax.eval.summary import passed_checks
from jitnet_jax.host_memory import keep_freed_memory
from jitnet_jax.online.engine import Knobs, OnlineConfig, effective_weight
from jitnet_jax.online.reference import run_reference
from jitnet_jax.online.runner import run_stream
from jitnet_jax.student.step import apply_grads, init_state, loss_and_grads, predict


def compute_limit(
    cfg: OnlineConfig, shape: tuple[int, int], n_pred: int, n_upd: int, n_check: int, seed: int = 0
) -> float:
    """Seconds for ``n_pred`` predictions, ``n_upd`` forward/backward+update steps and ``n_check`` accuracy
    checks that passed (a forward pass each, timed as a prediction), as back-to-back jitted calls (compile
    excluded)."""
    scfg = cfg.student
    knobs = Knobs.from_config(cfg)
    state = init_state(jax.random.key(seed), scfg, shape)
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    label = rng.integers(0, scfg.model.num_classes, shape).astype(np.int32)
    weight = np.ones(shape, np.uint8)  # region map: background everywhere
    pr = jax.jit(lambda s, f: predict(scfg, s, f))
    lg = jax.jit(lambda s, f, y, w: loss_and_grads(scfg, s, f, y, effective_weight(w, knobs)))

    def upd(s, f, y, w):
        g, b, aux = lg(s, f, y, w)
        return apply_grads(scfg, s, g, b), aux["min_iou"]

    step = jax.jit(upd)
    jax.block_until_ready(pr(state, frame))
    jax.block_until_ready(step(state, frame, label, weight))
    t0 = time.perf_counter()
    out = None
    for _ in range(n_pred + n_check):
        out = pr(state, frame)
    for _ in range(n_upd):
        state, out = step(state, frame, label, weight)
    jax.block_until_ready((out, state))
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--height", type=int, default=180)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--a-thr", type=float, default=0.8)
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    add_compile_cache_flag(p)
    args = p.parse_args(argv)
    if args.frames < 1 or args.height < 8 or args.width < 8:
        print(
            f"error: need --frames >= 1 and --height/--width >= 8, got {args.frames}, {args.height}x{args.width}",
            file=sys.stderr,
        )
        return 2
    enable_compile_cache(args.compile_cache)
    keep_freed_memory()
    cfg = OnlineConfig(
        student=StudentConfig(model=ModelConfig(num_classes=4), optim=OptimConfig(name="adam", lr=1e-3)),
        a_thr=args.a_thr,
        chunk_size=args.chunk_size,
    )
    src = SyntheticStream(num_frames=args.frames, height=args.height, width=args.width, seed=args.seed)
    print(
        f"stream: synthetic {args.frames} frames at {args.height}x{args.width}, backend {jax.default_backend()}"
    )
    res = run_stream(src, cfg, jax.random.key(args.seed), progress=False)
    pf = res.per_frame
    n = len(pf["frame"])
    teacher = int(pf["teacher"].sum())
    updates = int(pf["updates"].sum())
    checks = passed_checks(pf, cfg.a_thr, cfg.teacher_delay)
    _, ref_pf, ref_wall = run_reference(src, cfg, jax.random.key(args.seed))
    limit = compute_limit(cfg, (args.height, args.width), n - teacher, updates, checks, args.seed)
    same = bool(np.array_equal(pf["updates"], ref_pf["updates"]))
    print(
        f"frames {n}, teacher frames {teacher}, updates {updates}, passing checks {checks}, "
        f"reference took the same decisions: {same}"
    )
    print(
        f"{'compiled loop':<16}{res.wall_s:8.2f} s  ({1e3 * res.wall_s / n:.1f} ms/frame; compile "
        f"{res.compile_s:.1f} s not included)"
    )
    print(f"{'reference loop':<16}{ref_wall:8.2f} s  ({1e3 * ref_wall / n:.1f} ms/frame)")
    print(
        f"{'compute limit':<16}{limit:8.2f} s  ({n - teacher} predictions + {updates} updates + {checks} checks)"
    )
    print(f"compiled / limit      = {res.wall_s / limit:.2f}")
    print(f"reference / compiled  = {ref_wall / res.wall_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

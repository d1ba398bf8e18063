"""Profile the student: parameters, forward GFLOPs (XLA cost analysis), predict and train-step latency.

python -m experiments.profile --height 180 --width 320 --num-classes 4 [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import numpy as np

from jitnet_jax.config import ModelConfig, OptimConfig, StudentConfig
from jitnet_jax.eval.flops import student_flops
from jitnet_jax.model.jitnet import count_params
from jitnet_jax.student.step import init_state, jit_predict, jit_train_step


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def profile(cfg: StudentConfig, height: int, width: int, repeats: int = 20) -> dict[str, float]:
    """Measure ``params``, ``gflops`` (forward), ``infer_ms`` and ``train_step_ms`` (medians, after
    compilation) for frames of ``height x width``."""
    state = init_state(jax.random.key(0), cfg, (height, width))
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    label = rng.integers(0, cfg.model.num_classes, (height, width)).astype(np.int32)
    weight = np.ones((height, width), np.float32)
    pred = jit_predict(cfg)
    step = jit_train_step(cfg)
    jax.block_until_ready(pred(state, frame))
    holder = {"s": step(state, frame, label, weight)[0]}
    jax.block_until_ready(holder["s"])

    def one_step():
        holder["s"], m = step(holder["s"], frame, label, weight)
        return m["loss"]

    infer_ms = _median_ms(lambda: pred(holder["s"], frame), repeats)
    train_ms = _median_ms(one_step, repeats)
    flops = student_flops(cfg, (height, width))
    return {
        "params": count_params(state.params),
        "gflops": flops["infer_flops"] / 1e9,
        "train_step_gflops": flops["train_step_flops"] / 1e9,
        "infer_ms": infer_ms,
        "train_step_ms": train_ms,
        "backend": jax.default_backend(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--height", type=int, default=180)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--num-classes", type=int, default=4)
    p.add_argument("--width-multiplier", type=float, default=0.5)
    p.add_argument("--num-units", type=int, default=1)
    p.add_argument("--separable", action="store_true")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    try:
        if args.height < 1 or args.width < 1:
            raise ValueError(f"--height/--width must be positive, got {args.height}x{args.width}")
        cfg = StudentConfig(
            model=ModelConfig(
                num_classes=args.num_classes,
                width_multiplier=args.width_multiplier,
                num_units=args.num_units,
                separable=args.separable,
                scale=args.scale,
            ),
            optim=OptimConfig(),
        ).validate()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = profile(cfg, args.height, args.width, args.repeats)
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"JITNet m={args.width_multiplier} units={args.num_units} classes={args.num_classes} "
            f"at {args.height}x{args.width} on {out['backend']}"
        )
        print(f"  params          {out['params']:,}")
        print(f"  forward GFLOPs  {out['gflops']:.3f}")
        print(f"  predict         {out['infer_ms']:.1f} ms (median)")
        print(f"  train step      {out['train_step_ms']:.1f} ms (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

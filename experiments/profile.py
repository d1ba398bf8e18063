"""Profile the student: parameters, FLOPs, predict and train-step latency, and this machine's matmul peak.

    python -m experiments.profile --height 180 --width 320 --num-classes 4 [--json]
    python -m experiments.profile --sizes 180x320,360x640,720x1280     # one invocation, one table

FLOPs are XLA's cost analysis of the compiled forward and train step, next to an independent
layer-by-layer count of the convolutions and BatchNorms (``eval.flops.conv_bn_flops``). The matmul
peak is the best GFLOP/s of a 2048x2048 float32 matmul measured in the same run (before and after the
model timings); predict and train step are reported as medians and as a fraction of that peak.

``convs ms`` sums the network's forward convolutions, each timed alone (:func:`conv_ceiling`): the
fraction of the peak that XLA's convolution kernels reach on this network's layer shapes, which bounds the
fraction a train step made of the same convolutions and their gradients can reach.

The train step is timed twice: ``train ms`` is one jitted call per step (dispatch included, the way an eager
framework is timed), ``loop ms`` is one step of ``--loop-steps`` steps of the online engine's own update loop
on a teacher frame (``online.engine.teacher_updates``, one compiled ``while_loop``).

Like every command it keeps freed host memory in the process (``jitnet_jax.host_memory``), so a call does not
page-fault XLA's temp buffer back in; ``JITNET_KEEP_FREED_MEMORY=0`` times glibc's default instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jitnet_jax.compile_cache import add_compile_cache_flag, enable_compile_cache
from jitnet_jax.config import ModelConfig, OptimConfig, StudentConfig
from jitnet_jax.eval.flops import conv_bn_flops, conv_layers, student_flops
from jitnet_jax.host_memory import keep_freed_memory
from jitnet_jax.model.conv import conv2d
from jitnet_jax.model.jitnet import count_params
from jitnet_jax.online.engine import Knobs, OnlineConfig, teacher_updates
from jitnet_jax.student.step import init_state, jit_predict, jit_train_step


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of a jitted ``[n, n] @ [n, n]`` float32 matmul on the default device."""
    a = jax.numpy.ones((n, n), jax.numpy.float32)
    f = jax.jit(lambda x, y: x @ y)
    jax.block_until_ready(f(a, a))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(a, a))
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def conv_ceiling(
    model: ModelConfig, height: int, width: int, repeats: int = 20, calls: int = 8
) -> dict[str, float]:
    """Every forward convolution of the network on one ``height x width`` frame, timed on its own.

    Each layer (:func:`jitnet_jax.eval.flops.conv_layers`) is one jitted convolution on float32 inputs of
    its shapes; a sample is ``calls`` dispatches then one wait (dispatch included, ~10 us a call), and the
    layer's time is the median sample divided by ``calls``. A train step is made of these convolutions and
    their gradients, which are convolutions and matmuls of the same sizes (``jitnet_jax.model.conv``), so
    the fraction of the matmul peak that they reach alone bounds what the step can reach.

    Returns:
      ``{"conv_gflops": forward conv GFLOPs (no bias), "conv_ms": the summed per-layer medians,
      "conv_layers": the number of layers}``.
    """
    rng = np.random.default_rng(0)
    total_ms = flops = 0.0
    layers = conv_layers(model, (height, width))
    for layer in layers:
        x = jnp.asarray(rng.standard_normal(layer.in_shape), jnp.float32)
        k = jnp.asarray(rng.standard_normal(layer.kernel_shape), jnp.float32)
        f = jax.jit(lambda x, k, s=layer.stride, p=layer.padding: conv2d(x, k, s, p))
        jax.block_until_ready(f(x, k))

        def sample(f=f, x=x, k=k):
            return [f(x, k) for _ in range(calls)]

        total_ms += _median_ms(sample, repeats) / calls
        flops += layer.flops
    return {"conv_gflops": flops / 1e9, "conv_ms": total_ms, "conv_layers": len(layers)}


def profile(
    cfg: StudentConfig, height: int, width: int, repeats: int = 20, loop_steps: int = 8
) -> dict[str, float]:
    """Measure ``params``, ``gflops`` (forward), ``infer_ms``, ``train_step_ms`` (one jitted call per step)
    and ``train_loop_ms`` (one of ``loop_steps`` steps of the engine's update loop) for frames of
    ``height x width``; medians after compilation."""
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

    # The engine's own update loop on one teacher frame (``teacher_updates``: a while_loop of train steps
    # with the accuracy check); a_thr 1.0 is never passed, so it runs exactly ``loop_steps`` updates.
    knobs = Knobs.from_config(OnlineConfig(student=cfg, a_thr=1.0, u_max=loop_steps))
    # The teacher frame is an argument, as in the engine (closed over, XLA would constant-fold the loss's
    # gradient scatter over the fixed labels at compile time).
    frame_d, label_d, weight_d = jnp.asarray(frame), jnp.asarray(label), jnp.asarray(weight)
    loop = jax.jit(lambda st, f, y, w: teacher_updates(cfg, knobs, st, f, y, w), donate_argnums=0)
    holder["l"], _, k, _ = loop(jax.tree_util.tree_map(jnp.copy, holder["s"]), frame_d, label_d, weight_d)
    if int(k) != loop_steps:
        raise RuntimeError(f"the update loop ran {int(k)} updates, expected {loop_steps}")

    def one_loop():
        holder["l"], pred, _, acc = loop(holder["l"], frame_d, label_d, weight_d)
        return holder["l"], pred, acc

    train_loop_ms = _median_ms(one_loop, max(3, repeats // 4)) / loop_steps
    flops = student_flops(cfg, (height, width))
    layers = conv_bn_flops(cfg.model, (height, width))
    convs = conv_ceiling(cfg.model, height, width, repeats)
    return {
        **convs,
        "height": height,
        "width": width,
        "params": count_params(state.params),
        "gflops": flops["infer_flops"] / 1e9,
        "conv_bn_gflops": layers["conv_bn_flops"] / 1e9,
        "train_step_gflops": flops["train_step_flops"] / 1e9,
        "infer_ms": infer_ms,
        "train_step_ms": train_ms,
        "train_loop_ms": train_loop_ms,
        "loop_steps": loop_steps,
        "backend": jax.default_backend(),
    }


def _parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        try:
            h, w = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise ValueError(f"--sizes takes HxW[,HxW...], got {item!r}") from None
        sizes.append((h, w))
    return sizes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--height", type=int, default=180)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--sizes", help="several HxW frame sizes in one run, e.g. 180x320,360x640,720x1280")
    p.add_argument("--num-classes", type=int, default=4)
    p.add_argument("--width-multiplier", type=float, default=0.5)
    p.add_argument("--num-units", type=int, default=1)
    p.add_argument("--separable", action="store_true")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--conv-backward", default="auto", choices=["auto", "matmul", "xla"])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--loop-steps", type=int, default=8, help="train steps per compiled loop (u_max)")
    p.add_argument("--json", action="store_true", help="print one JSON object (last line)")
    add_compile_cache_flag(p)
    args = p.parse_args(argv)
    try:
        sizes = _parse_sizes(args.sizes) if args.sizes else [(args.height, args.width)]
        for h, w in sizes:
            if h < 1 or w < 1:
                raise ValueError(f"frame sizes must be positive, got {h}x{w}")
        if args.repeats < 1:
            raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
        if args.loop_steps < 1:
            raise ValueError(f"--loop-steps must be >= 1, got {args.loop_steps}")
        cfg = StudentConfig(
            model=ModelConfig(
                num_classes=args.num_classes,
                width_multiplier=args.width_multiplier,
                num_units=args.num_units,
                separable=args.separable,
                scale=args.scale,
                conv_backward=args.conv_backward,
            ),
            optim=OptimConfig(),
        ).validate()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    enable_compile_cache(args.compile_cache)
    keep_freed_memory()
    peak = matmul_peak_gflops()
    rows = [profile(cfg, h, w, args.repeats, args.loop_steps) for h, w in sizes]
    peak = max(peak, matmul_peak_gflops())
    for r in rows:
        r["matmul_peak_gflops_s"] = peak
        r["infer_peak_fraction"] = r["gflops"] / r["infer_ms"] / peak * 1e3
        r["train_step_peak_fraction"] = r["train_step_gflops"] / r["train_step_ms"] / peak * 1e3
        r["train_loop_peak_fraction"] = r["train_step_gflops"] / r["train_loop_ms"] / peak * 1e3
        r["conv_peak_fraction"] = r["conv_gflops"] / r["conv_ms"] / peak * 1e3
    if args.json:
        print(json.dumps(rows[0] if len(rows) == 1 else {"sizes": rows}))
        return 0
    print(
        f"JITNet m={args.width_multiplier} units={args.num_units} classes={args.num_classes} "
        f"on {rows[0]['backend']}, {rows[0]['params']:,} params; matmul peak {peak:.1f} GFLOP/s "
        "(2048^2 float32, best of 5)"
    )
    print(
        f"{'size':>10} {'fwd GFLOPs':>10} {'conv+BN':>8} {'ratio':>6} {'step GFLOPs':>11} "
        f"{'predict ms':>10} {'% peak':>6} {'train ms':>9} {'% peak':>6} {'loop ms':>8} {'% peak':>6} "
        f"{'convs ms':>8} {'% peak':>6}"
    )
    for r in rows:
        print(
            f"{r['height']:>4}x{r['width']:<5} {r['gflops']:>10.3f} {r['conv_bn_gflops']:>8.3f} "
            f"{r['gflops'] / r['conv_bn_gflops']:>6.3f} {r['train_step_gflops']:>11.3f} "
            f"{r['infer_ms']:>10.1f} {100 * r['infer_peak_fraction']:>5.1f}% "
            f"{r['train_step_ms']:>9.1f} {100 * r['train_step_peak_fraction']:>5.1f}% "
            f"{r['train_loop_ms']:>8.1f} {100 * r['train_loop_peak_fraction']:>5.1f}% "
            f"{r['conv_ms']:>8.1f} {100 * r['conv_peak_fraction']:>5.1f}%"
        )
    print(
        "(medians after compilation; train = one jitted call per step, loop = per step of "
        f"{args.loop_steps} steps of the online engine's update loop on a teacher frame; "
        "ratio = XLA forward FLOPs / conv+BN count; convs = the forward convolutions each timed alone, "
        "summed: what XLA's convolution kernels reach on these shapes)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

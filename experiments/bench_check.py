"""Benchmark: what the accuracy check of the update loop costs on a teacher frame.

    python -m experiments.bench_check [--height 180 --width 320 --u-max 4 --replay-batch 1]

On one teacher frame, in one process, three forms of the update loop (a ``lax.while_loop`` of passes;
each pass scores the current frame's prediction and updates when the score is at most ``a_thr``):
  * engine: ``online.engine.teacher_updates``: the check is the forward pass of the current frame with
    its residuals kept; the backward (and, with replay, the ``B - 1`` replayed frames) runs behind a
    ``lax.cond`` only when the check fails;
  * fused: every pass runs forward and backward on all ``B`` frames and drops the gradients when the
    check passes (the loop's earlier form; with ``B = 1`` the same program);
  * split: a forward-only check, then on failure a whole training step (the forward runs twice).
Each is timed on a frame whose check passes at once (``a_thr = -1``: one check, no update) and on one
that takes ``u_max`` updates (``a_thr = 1``, never passed; ms per update), next to one prediction (what
the FLOPs speedup charges a passing check). Medians of ``--repeats`` interleaved samples of ``--calls``
back-to-back calls; compilation excluded. Prints the times and the ratios to the engine's.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jitnet_jax.compile_cache import add_compile_cache_flag, enable_compile_cache
from jitnet_jax.config import ModelConfig, OptimConfig, StudentConfig
from jitnet_jax.host_memory import keep_freed_memory
from jitnet_jax.online.engine import (
    Knobs,
    OnlineConfig,
    ReplayBuffer,
    init_replay,
    replay_push,
    replay_sample,
    teacher_updates,
)
from jitnet_jax.student.step import (
    StudentState,
    apply_grads,
    forward_check,
    init_state,
    loss_and_grads,
    loss_and_grads_batch,
    predict,
)

#: The loop forms compared (``engine`` is the library's).
VARIANTS = ("engine", "fused", "split")


def _grads(
    cfg: StudentConfig,
    s: StudentState,
    frame: Any,
    label: Any,
    weight: Any,
    replay: ReplayBuffer | None,
    knobs: Knobs,
) -> tuple[Any, Any, dict[str, jnp.ndarray]]:
    """A whole training step's gradients (forward and backward of the current and replayed frames)."""
    if replay is None:
        return loss_and_grads(cfg, s, frame, label, weight)
    batch = replay_sample(replay, jax.random.split(s.rng)[1], frame, label, weight, knobs)
    return loss_and_grads_batch(cfg, s, *batch)


def update_loop(
    variant: str,
    cfg: StudentConfig,
    knobs: Knobs,
    student: StudentState,
    frame: jnp.ndarray,
    label: jnp.ndarray,
    weight: jnp.ndarray,
    replay: ReplayBuffer | None = None,
) -> tuple[StudentState, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """The update loop on one teacher frame in the form ``variant`` (see the module docstring); the same
    arguments and outputs as :func:`~jitnet_jax.online.engine.teacher_updates`."""
    if variant == "engine":
        return teacher_updates(cfg, knobs, student, frame, label, weight, True, replay)
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    h, w = label.shape

    def cond(c: tuple[Any, ...]) -> jnp.ndarray:
        _, k, _, _, stop = c
        return jnp.logical_and(~stop, k < knobs.u_max)

    def body(c: tuple[Any, ...]) -> tuple[Any, ...]:
        s, k, _, _, _ = c
        if variant == "fused":
            grads, new_stats, aux = _grads(cfg, s, frame, label, weight, replay, knobs)
            passed = aux["min_iou"] > knobs.a_thr
            updated = apply_grads(cfg, s, grads, new_stats, knobs.lr, knobs.schedule)
            s = jax.tree_util.tree_map(lambda old, new: jnp.where(passed, old, new), s, updated)
        else:
            aux, _, _ = forward_check(cfg, s, frame, label, weight)
            passed = aux["min_iou"] > knobs.a_thr

            def update(s: StudentState) -> StudentState:
                grads, new_stats, _ = _grads(cfg, s, frame, label, weight, replay, knobs)
                return apply_grads(cfg, s, grads, new_stats, knobs.lr, knobs.schedule)

            s = jax.lax.cond(passed, lambda s: s, update, s)
        return s, k + jnp.where(passed, 0, 1).astype(jnp.int32), aux["pred"], aux["min_iou"], passed

    init = (student, jnp.int32(0), jnp.zeros((h, w), jnp.int32), jnp.float32(0.0), jnp.bool_(False))
    student, k, pred, acc, _ = jax.lax.while_loop(cond, body, init)
    return student, pred, k, acc


def _sample_ms(fn: Callable[[], Any], calls: int) -> float:
    """ms per call of ``calls`` back-to-back calls of ``fn``, after one untimed call (which takes the
    first-call costs of switching from another program: its buffers, caches)."""
    jax.block_until_ready(fn())
    t0 = time.perf_counter()
    out = None
    for _ in range(calls):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) * 1e3 / calls


def bench(
    height: int,
    width: int,
    u_max: int = 4,
    replay_batch: int = 1,
    repeats: int = 5,
    calls: int = 3,
    seed: int = 0,
) -> dict[str, float]:
    """Times (ms) of each form's passing check (``<variant>_pass_ms``) and of one of its updates on a
    failing frame (``<variant>_update_ms``), and of one prediction (``predict_ms``), on a
    ``height x width`` frame. A sample is ``calls`` back-to-back calls after an untimed one; the samples
    of the forms are interleaved; medians of ``repeats`` samples."""
    scfg = StudentConfig(model=ModelConfig(num_classes=4), optim=OptimConfig(name="adam", lr=1e-3))
    replay_size = 0 if replay_batch == 1 else 2 * replay_batch
    cfg = OnlineConfig(student=scfg, u_max=u_max, replay_size=replay_size, replay_batch=replay_batch)
    cfg.validate()
    rng = np.random.default_rng(seed)
    frame = jnp.asarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    label = jnp.asarray(rng.integers(0, 4, (height, width)).astype(np.int32))
    weight = jnp.ones((height, width), jnp.float32)
    state = init_state(jax.random.key(seed), scfg, (height, width))
    replay = init_replay(cfg, (height, width))
    for _ in range(replay_size):
        replay = replay_push(
            replay, frame, label, jnp.ones((height, width), jnp.uint8)
        )  # background: weight 1
    knobs = {
        "pass": Knobs.from_config(cfg).replace(a_thr=jnp.float32(-1.0)),
        "fail": Knobs.from_config(cfg).replace(a_thr=jnp.float32(1.0)),
    }
    pr = jax.jit(lambda s, x: predict(scfg, s, x))
    jax.block_until_ready(pr(state, frame))
    fns: dict[str, Callable[[], Any]] = {"predict": lambda: pr(state, frame)}
    for variant in VARIANTS:
        loop = jax.jit(lambda kn, s, f, y, w, r, v=variant: update_loop(v, scfg, kn, s, f, y, w, r))
        for case, kn in knobs.items():
            _, _, k, _ = loop(kn, state, frame, label, weight, replay)
            expected = 0 if case == "pass" else u_max
            if int(k) != expected:
                raise RuntimeError(
                    f"{variant} on a {case}ing frame ran {int(k)} updates, expected {expected}"
                )
            fns[f"{variant}_{case}"] = lambda loop=loop, kn=kn: loop(kn, state, frame, label, weight, replay)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(_sample_ms(fn, calls))
    out = {f"{name}_ms": float(np.median(t)) for name, t in times.items()}
    for variant in VARIANTS:
        out[f"{variant}_update_ms"] = out.pop(f"{variant}_fail_ms") / u_max
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--height", type=int, default=180)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--u-max", type=int, default=4)
    p.add_argument("--replay-batch", type=int, default=1, help="B frames per update (1: no replay)")
    p.add_argument("--repeats", type=int, default=5, help="samples (interleaved); medians are reported")
    p.add_argument("--calls", type=int, default=3, help="back-to-back calls per sample")
    p.add_argument("--seed", type=int, default=0)
    add_compile_cache_flag(p)
    args = p.parse_args(argv)
    if (
        args.height < 8
        or args.width < 8
        or args.u_max < 1
        or args.replay_batch < 1
        or min(args.repeats, args.calls) < 1
    ):
        print(
            "error: need --height/--width >= 8 and --u-max, --replay-batch, --repeats, --calls >= 1, got "
            f"{args.height}x{args.width}, {args.u_max}, {args.replay_batch}, {args.repeats}, {args.calls}",
            file=sys.stderr,
        )
        return 2
    enable_compile_cache(args.compile_cache)
    keep_freed_memory()
    r = bench(args.height, args.width, args.u_max, args.replay_batch, args.repeats, args.calls, args.seed)
    print(
        f"{args.height}x{args.width}, B={args.replay_batch}, u_max={args.u_max}, "
        f"backend {jax.default_backend()}, medians of {args.repeats}"
    )
    print(f"{'':<8}{'pass ms':>10}{'update ms':>11}{'pass/engine':>13}{'update/engine':>15}")
    for v in VARIANTS:
        print(
            f"{v:<8}{r[f'{v}_pass_ms']:>10.2f}{r[f'{v}_update_ms']:>11.2f}"
            f"{r[f'{v}_pass_ms'] / r['engine_pass_ms']:>13.2f}{r[f'{v}_update_ms'] / r['engine_update_ms']:>15.2f}"
        )
    print(f"{'predict':<8}{r['predict_ms']:>10.2f}")
    print(f"engine pass / predict = {r['engine_pass_ms'] / r['predict_ms']:.2f}")
    print(f"fused pass / engine pass = {r['fused_pass_ms'] / r['engine_pass_ms']:.2f}")
    print(f"engine update / fused update = {r['engine_update_ms'] / r['fused_update_ms']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

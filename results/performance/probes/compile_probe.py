# ruff: noqa  (a measurement probe for docs/performance.md, kept as run)
"""Why the online loop's program takes so long to compile, and what a change does to compile AND step time.

    python results/performance/probes/compile_probe.py                       # this tree, one process
    python results/performance/probes/compile_probe.py --compare OLD_TREE    # OLD_TREE vs this tree, side by side
    python results/performance/probes/compile_probe.py --options "" xla_backend_optimization_level=1  # XLA options

One process (``--one``) prints, for the online chunk program (``make_run_chunk``, test_online's settings:
SGD, 4 classes, ``--height x --width``, ``--chunk`` frames, no cache): lowering and XLA compile seconds (wall
and CPU), HLO size (fusions, convolutions, dots of the optimized module) and how many LLVM kernel modules
XLA compiled (counted from XLA's own log, ``TF_CPP_VMODULE=cpu_compiler=1``); for ``conv_backward`` auto and
xla. Then the step time at ``--run-size`` (default 180x320): ``update`` = one train step inside a
``fori_loop`` (as in the update loop), ``predict`` = one prediction inside a ``scan`` over frames; medians
of ``--repeats`` timed calls, wall ms.

``--compare OLD_TREE`` runs that process for OLD_TREE (e.g. ``git archive BASE | tar -x -C /tmp/base``) and
for this tree, alternately ``--rounds`` times (the machine's load drifts; each number is the best round),
and prints one table. ``--options A B ...`` measures this tree once per XLA option set (``key=value,...``,
passed to ``Lowered.compile(compiler_options=...)`` for every program; "" = XLA's defaults) instead.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[3]


def parse_options(text: str) -> dict:
    def value(v: str):
        return {"true": True, "false": False}.get(v, int(v) if v.lstrip("-").isdigit() else v)

    return {k: value(v) for k, v in (kv.split("=", 1) for kv in text.split(",") if kv)}


def one(args: argparse.Namespace) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jitnet_jax.config import ModelConfig, OptimConfig, StudentConfig
    from jitnet_jax.online.engine import Knobs, OnlineConfig, make_run_chunk, new_online_state
    from jitnet_jax.student.step import init_state, predict, train_step

    out: dict = {"tree": str(Path(sys.modules["jitnet_jax"].__file__).parents[1])}
    opts = parse_options(args.xla)
    S = jax.ShapeDtypeStruct
    h, w, t = args.height, args.width, args.chunk
    for cb in args.conv_backward.split(","):
        student = StudentConfig(
            model=ModelConfig(num_classes=4, conv_backward=cb), optim=OptimConfig(name="sgd", lr=0.01)
        )
        cfg = OnlineConfig(student=student, a_thr=0.8, chunk_size=t)
        st = jax.eval_shape(lambda: new_online_state(cfg, jax.random.key(0), (h, w)))
        kn = jax.eval_shape(lambda: Knobs.from_config(cfg))
        chunk = (
            S((t, h, w, 3), jnp.uint8),
            S((t, h, w), jnp.uint8),
            S((t, h, w), jnp.uint8),
            S((t,), jnp.bool_),
        )
        w0, c0 = time.perf_counter(), time.process_time()
        lowered = make_run_chunk(cfg).lower(kn, st, *chunk)
        w1, c1 = time.perf_counter(), time.process_time()
        compiled = lowered.compile(compiler_options=opts)
        w2, c2 = time.perf_counter(), time.process_time()
        text = compiled.as_text()
        out[f"chunk[{cb}]"] = {
            "lower_s": round(w1 - w0, 2),
            "compile_s": round(w2 - w1, 2),
            "compile_cpu_s": round(c2 - c1, 2),
            "fusions": len(re.findall(r" fusion\(", text)),
            "convolutions": text.count("convolution("),
            "dots": len(re.findall(r" dot\(", text)),
            "hlo_lines": text.count("\n"),
        }
        print(cb, out[f"chunk[{cb}]"], file=sys.stderr, flush=True)

    # step time: the project's train_step / predict, default model, inside loops like the online loop
    rh, rw = (int(v) for v in args.run_size.split("x"))
    cfg = StudentConfig(model=ModelConfig(num_classes=4), optim=OptimConfig(name="sgd", lr=0.01))
    state = init_state(jax.random.key(0), cfg, (rh, rw))
    rng = np.random.default_rng(0)
    frames = jnp.asarray(rng.integers(0, 256, (8, rh, rw, 3), dtype=np.uint8))
    label = jnp.asarray(rng.integers(0, 4, (rh, rw)), jnp.int32)
    weight = jnp.ones((rh, rw), jnp.float32)
    n_up = 4

    def updates(s, f, y, wt):
        return jax.lax.fori_loop(0, n_up + 0 * s.step, lambda i, s: train_step(cfg, s, f, y, wt)[0], s)

    def predicts(s, fs):
        return jax.lax.scan(lambda c, f: (c + predict(cfg, s, f).sum(), None), jnp.int32(0), fs)[0]

    progs = {}
    for name, fn, a in (
        ("update", updates, (state, frames[0], label, weight)),
        ("predict", predicts, (state, frames)),
    ):
        c0 = time.process_time()
        progs[name] = (jax.jit(fn).lower(*a).compile(compiler_options=opts), a)
        out[f"{name}_compile_cpu_s"] = round(time.process_time() - c0, 2)
    times = {k: [] for k in progs}
    for _ in range(args.repeats):
        for k, (c, a) in progs.items():
            jax.block_until_ready(c(*a))
            t0 = time.perf_counter()
            jax.block_until_ready(c(*a))
            times[k].append((time.perf_counter() - t0) * 1e3 / (n_up if k == "update" else frames.shape[0]))
    for k, v in times.items():
        out[f"{k}_ms"] = round(float(np.median(v)), 2)
    return out


def count_kernels(stderr: str) -> int:
    return stderr.count("Running LLVM verifier")


def run_tree(tree: str, args: argparse.Namespace, xla: str = "") -> dict:
    env = dict(os.environ, PYTHONPATH=tree, JITNET_COMPILE_CACHE="off", TF_CPP_MIN_LOG_LEVEL="0")
    env["TF_CPP_VMODULE"] = "cpu_compiler=1"
    cmd = [sys.executable, str(HERE), "--one", "--height", str(args.height), "--width", str(args.width)]
    cmd += ["--chunk", str(args.chunk), "--run-size", args.run_size, "--repeats", str(args.repeats)]
    cmd += ["--conv-backward", args.conv_backward, "--xla", xla]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd="/tmp")
    if p.returncode:
        sys.exit(f"probe failed for {tree}: {p.stderr.strip().splitlines()[-1]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    # the VLOG lines of each compile come in order: split the count per program is not possible from one
    # stream, so report the total of the chunk programs (they are compiled first, in order)
    res["llvm_modules_total"] = count_kernels(p.stderr)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", action="store_true", help="measure this interpreter's tree (internal)")
    ap.add_argument("--compare", metavar="OLD_TREE", help="also measure OLD_TREE, alternating with this tree")
    ap.add_argument("--height", type=int, default=48)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=50)
    ap.add_argument("--run-size", default="180x320")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--conv-backward", default="auto,xla")
    ap.add_argument("--xla", default="", help="XLA options key=value,... of one process (internal)")
    ap.add_argument("--options", nargs="+", metavar="OPTS", help="compare XLA option sets on this tree")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args)))
        return
    if args.options:
        trees = [f"{REPO}|{o}" for o in args.options]
    else:
        trees = ([args.compare] if args.compare else []) + [str(REPO)]
    results: dict[str, list[dict]] = {t: [] for t in trees}
    for r in range(args.rounds):
        for t in trees:
            tree, _, xla = t.partition("|")
            res = run_tree(tree, args, xla)
            results[t].append(res)
            print(f"round {r} {t}: {json.dumps(res)}", flush=True)
    keys = [k for k in results[trees[0]][0] if k != "tree"]
    print(
        f"\nchunk program {args.height}x{args.width}, {args.chunk} frames; step times at {args.run_size}; best of {args.rounds} rounds"
    )
    print(
        "%-34s" % ""
        + "".join("%28s" % (Path(t.partition("|")[0]).name + " " + t.partition("|")[2])[:27] for t in trees)
    )
    for k in keys:
        vals = [v for v in (results[t] for t in trees)]
        if isinstance(vals[0][0][k], dict):
            for sub in vals[0][0][k]:
                row = [min(r[k][sub] for r in rs) for rs in vals]
                print("%-34s" % f"{k} {sub}" + "".join("%28s" % x for x in row))
        else:
            row = [min(r[k] for r in rs) for rs in vals]
            print("%-34s" % k + "".join("%28s" % x for x in row))


if __name__ == "__main__":
    main()

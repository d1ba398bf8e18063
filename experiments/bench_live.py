"""What overlapping the teacher with the student is worth in live mode (the choice docs/live.md explains).

    python -m experiments.bench_live --video ../shared/data/clips/residential_street_traffic.mp4 --frames 160

Runs the live loop over the first ``--frames`` frames ``--repeats`` times in each mode, alternating, with one
compiled executable and a fresh label store per run (so the teacher really runs every time):

* ``overlap``: the host calls the teacher on frame t + delta while the device computes the student-only
  chunks before it (what ``experiments.stream --live`` does);
* ``serial``: the host waits for the device before every teacher call, which is what a teacher called from
  inside the compiled loop through a host callback amounts to (the frames before t + delta are done by the
  time the loop reaches the callback, and nothing after it can start before the label is back).

Prints the frame-loop seconds of each run and the median per mode.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.bench_live", description=__doc__)
    p.add_argument("--video", required=True)
    p.add_argument("--teacher", default="yolov8_seg")
    p.add_argument("--model")
    p.add_argument("--groups", default="car,bus,truck")
    p.add_argument("--frames", type=int, default=160)
    p.add_argument("--height", type=int, default=180)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)

    from jitnet_jax.compile_cache import enable_compile_cache
    from jitnet_jax.config import ModelConfig, OptimConfig, StudentConfig
    from jitnet_jax.host_memory import keep_freed_memory
    from jitnet_jax.online.engine import OnlineConfig
    from jitnet_jax.online.live import live_config, run_live
    from jitnet_jax.online.runner import compile_chunk, new_state
    from teacher.live import open_live

    try:
        src = open_live(
            teacher=args.teacher,
            video=args.video,
            model=args.model,
            groups=args.groups,
            height=args.height,
            width=args.width,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    info = src.info
    enable_compile_cache(None)  # $JITNET_COMPILE_CACHE or the default folder, as experiments.stream
    keep_freed_memory()
    # the run config experiments.stream uses by default, so a cache warmed by a live run is hit
    optim = OptimConfig(name="adam", lr=1e-3, momentum=0.9)
    student = StudentConfig(model=ModelConfig(num_classes=info.num_classes), optim=optim)
    cfg = live_config(OnlineConfig(student=student), None, 0)
    hw = (info.height, info.width)
    t0 = time.perf_counter()
    compiled = compile_chunk(cfg, new_state(cfg, jax.random.key(0), hw, True), *hw, keep_executable=True)
    print(f"compile {time.perf_counter() - t0:.1f}s", flush=True)
    times: dict[str, list[float]] = {"overlap": [], "serial": []}
    for r in range(args.repeats):
        for mode in ("overlap", "serial"):
            with tempfile.TemporaryDirectory() as tmp:
                res = run_live(
                    src.frames,
                    src.open_teacher(Path(tmp) / "labels"),
                    cfg,
                    jax.random.key(0),
                    max_frames=args.frames,
                    progress=False,
                    compiled=compiled,
                    overlap_teacher=mode == "overlap",
                )
            times[mode].append(res.loop_s)
            print(
                f"run {r} {mode:8s} loop {res.loop_s:7.1f}s  teacher calls {len(res.teacher_s)} "
                f"({res.teacher_s.sum():.1f}s, {1e3 * res.teacher_s.mean():.0f} ms each)  syncs {res.syncs}",
                flush=True,
            )
    for mode, ts in times.items():
        print(f"{mode:8s} median loop {np.median(ts):.1f}s over {len(ts)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

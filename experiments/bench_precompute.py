"""The teacher precompute in one process vs the Apache Beam pipeline on the direct runner, side by side.

    flock /tmp/jitnet_heavy.lock python -m experiments.bench_precompute | tee results/precompute/<name>.txt

Labels the clips (default: every video in ``$JITNET_DATA/clips``, else ``../shared/data/clips``) at
``--height x --width`` (180x320) with the TFLite teacher, twice, into fresh stores under ``--out``:

* ``single``: ``teacher.precompute`` in this process, one clip after the other, the teacher on
  ``--threads`` (2) interpreter threads;
* ``beam``: one Beam pipeline over all clips on the direct runner with ``--workers`` (2) worker processes
  (``--direct_num_workers N --direct_running_mode multi_processing``), the teacher on ``--beam-threads``
  (1) thread per worker (``--beam-threads 1 2`` runs the pipeline once per thread count).

Prints the frames/s of each and their ratio, where the time goes (planning, i.e. probing and counting
frames, then decode, teacher, rasterise and write, summed over the workers for Beam), the teacher's
time per frame at each thread count, the CPU, and whether the two paths wrote byte-identical stores.
``--frames N`` labels only the first N frames of each clip (a quick run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from teacher.backends import BACKENDS

STAGES = ("decode", "teacher", "rasterise", "write", "teacher_load")


def _clips_dir() -> Path:
    env = os.environ.get("JITNET_DATA")
    if env:
        return Path(env) / "clips"
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "clips"


def _cpu() -> str:
    """The CPU model and whether it has AVX-512 VNNI (the int8 teacher's fast path)."""
    name, vnni = platform.processor() or "unknown", False
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                vnni = "avx512_vnni" in line.split()
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores, avx512_vnni {'yes' if vnni else 'no'}"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != ".lock"}


def _teacher_ms(teacher: str, model: str | None, clip: Path, threads: int, n: int = 24) -> float:
    """Median ms per frame of the teacher alone (pre/post-processing included) at ``threads`` threads."""
    import numpy as np

    from jitnet_jax.data.video import read_videos
    from teacher.backends import make_teacher

    frames = [f.copy() for f in read_videos([clip], None, stop=n)]
    t = make_teacher(teacher, model, threads)
    t(frames[0])  # warm-up
    times = []
    for f in frames:
        t0 = time.perf_counter()
        t(f)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def clip_request(clip: Path, out: Path, args: argparse.Namespace, threads: int) -> Any:
    """The store request (``teacher.precompute.plan_store``) of one clip at the benchmark's settings."""
    from teacher.precompute import plan_store

    return plan_store(
        out / clip.stem,
        video=clip,
        teacher=args.teacher,
        model=args.model,
        height=args.height,
        width=args.width,
        chunk_size=args.chunk_size,
        max_frames=args.frames,
        num_threads=threads,
    )


def run_single(clips: list[Path], out: Path, args: argparse.Namespace) -> dict[str, Any]:
    from teacher.precompute import StageClock, run_job

    clock = StageClock()
    frames = 0
    t0 = time.perf_counter()
    for clip in clips:
        tp = time.perf_counter()
        req = clip_request(clip, out, args, args.threads)
        job = req.make_job()
        clock.add("plan", time.perf_counter() - tp)
        run_job(job, req.out, progress=False)
        for k, v in job.clock.seconds.items():
            clock.add(k, v)
        frames += job.header.num_frames
    wall = time.perf_counter() - t0
    return {"frames": frames, "seconds": wall, "stages": clock.seconds}


def run_beam(clips: list[Path], out: Path, args: argparse.Namespace, threads: int) -> dict[str, Any]:
    from teacher.beam_pipeline import run_stores

    t0 = time.perf_counter()
    reqs = [clip_request(clip, out, args, threads) for clip in clips]
    opts = ["--direct_num_workers", str(args.workers), "--direct_running_mode", "multi_processing"]
    res = run_stores(reqs, "DirectRunner", opts, range_frames=args.range_frames)
    wall = time.perf_counter() - t0
    stages = {"plan": res.seconds["plan"], **res.stages}
    return {"frames": res.frames, "seconds": wall, "stages": stages, "units": res.units}


def _teacher_per_frame(r: dict[str, Any]) -> float:
    return 1e3 * r["stages"].get("teacher", 0.0) / max(r["frames"], 1)


def _row(name: str, r: dict[str, Any]) -> str:
    fps = r["frames"] / r["seconds"]
    st = r["stages"]
    per = "  ".join(
        f"{k} {st.get(k, 0.0):7.1f} s ({1e3 * st.get(k, 0.0) / max(r['frames'], 1):5.1f} ms/fr)"
        for k in ("plan", *STAGES)
    )
    return f"{name:<8} {r['frames']:6d} frames  {r['seconds']:7.1f} s  {fps:6.2f} frames/s   {per}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m experiments.bench_precompute", description=__doc__)
    p.add_argument("--clips-dir", type=Path, default=None, help="folder of clips (default: the shared data)")
    p.add_argument("--clips", nargs="*", help="file names in --clips-dir (default: every video there)")
    p.add_argument("--teacher", default="yolov8_seg", choices=sorted(BACKENDS))
    p.add_argument("--model", help="teacher model (default: from the shared data)")
    p.add_argument("--height", type=int, default=180)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--range-frames", type=int, default=256, help="frames per Beam work unit")
    p.add_argument("--frames", type=int, help="label only the first N frames of each clip")
    p.add_argument("--threads", type=int, default=2, help="teacher threads in the single process")
    p.add_argument("--workers", type=int, default=2, help="Beam direct-runner worker processes")
    p.add_argument(
        "--beam-threads",
        type=int,
        nargs="+",
        default=[1],
        help="teacher threads per Beam worker; several values run the pipeline once each (the first is the "
        "reported ratio)",
    )
    p.add_argument("--out", type=Path, help="scratch folder for the stores (default: a temp folder)")
    p.add_argument("--json", type=Path, help="also write the report here")
    args = p.parse_args(argv)

    folder = args.clips_dir or _clips_dir()
    names = args.clips or sorted(
        q.name for q in folder.iterdir() if q.suffix.lower() in {".mp4", ".avi", ".mkv", ".mov"}
    )
    clips = [folder / n for n in names]
    missing = [c for c in clips if not c.is_file()]
    if missing:
        raise SystemExit(f"error: {missing[0]}: clip not found")
    scratch = args.out or Path(tempfile.mkdtemp(prefix="bench_precompute_"))
    for sub in ("single", "beam"):
        shutil.rmtree(scratch / sub, ignore_errors=True)  # fresh stores: every frame is labelled

    print(f"CPU: {_cpu()}")
    print(
        f"clips: {', '.join(names)}; {args.height}x{args.width}; teacher {args.teacher}; chunk "
        f"{args.chunk_size}; frames per clip: {args.frames or 'all'}"
    )
    t1 = _teacher_ms(args.teacher, args.model, clips[0], 1)
    t2 = _teacher_ms(args.teacher, args.model, clips[0], 2)
    print(
        f"teacher alone on {names[0]} (median of 24 frames): 1 thread {t1:.1f} ms/frame, 2 threads "
        f"{t2:.1f} ms/frame (2-thread speed-up {t1 / t2:.2f}x)"
    )
    sys.stdout.flush()
    single = run_single(clips, scratch / "single", args)
    print(_row("single", single) + f"   [1 process, teacher {args.threads} threads]")
    sys.stdout.flush()
    beams: dict[int, dict[str, Any]] = {}
    for threads in args.beam_threads:
        out = scratch / f"beam_{threads}t"
        shutil.rmtree(out, ignore_errors=True)
        beams[threads] = r = run_beam(clips, out, args, threads)
        r["ratio"] = (r["frames"] / r["seconds"]) / (single["frames"] / single["seconds"])
        r["identical"] = all(_files(scratch / "single" / c.stem) == _files(out / c.stem) for c in clips)
        print(
            _row("beam", r) + f"   [direct runner, {args.workers} workers x {threads} thread(s), "
            f"{r['units']} units of <= {args.range_frames} frames]"
        )
        sys.stdout.flush()
    print(f"teacher in the runs: single {_teacher_per_frame(single):.1f} ms/frame on {args.threads} threads")
    for threads, r in beams.items():
        tb = _teacher_per_frame(r)
        print(
            f"  beam {args.workers} workers x {threads} thread(s): {tb:.1f} ms/frame per worker, "
            f"{tb / args.workers:.1f} ms/frame with the workers in parallel; ratio beam / single "
            f"{r['ratio']:.2f}x, stores byte-identical: {r['identical']}"
        )
    beam = beams[args.beam_threads[0]]
    ratio, identical = beam["ratio"], all(r["identical"] for r in beams.values())
    print(
        f"ratio beam ({args.workers} workers x {args.beam_threads[0]} thread) / single ({args.threads} threads): "
        f"{ratio:.2f}x   stores byte-identical: {identical}"
    )
    report = {
        "cpu": _cpu(),
        "clips": names,
        "teacher": args.teacher,
        "size": [args.height, args.width],
        "frames_per_clip": args.frames,
        "teacher_ms": {"1": t1, "2": t2},
        "single": single,
        "beam": beam,
        "beam_by_threads": beams,
        "ratio": ratio,
        "identical": identical,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.out is None:
        shutil.rmtree(scratch, ignore_errors=True)
    return report


if __name__ == "__main__":
    main()

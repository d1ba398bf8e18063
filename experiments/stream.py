"""The main job: online distillation of JITNet over one stream.

    python -m experiments.stream                      # embedded synthetic stream, no downloads
    python -m experiments.stream --lvs ../shared/data/lvs_mini --stream residential_street1
    python -m experiments.stream --store stores/res1    # made by python -m teacher.precompute --out stores/res1
    python -m experiments.stream --video clip.mp4 --teacher yolov8_seg   # precomputes labels, then runs
    python -m experiments.stream --lvs ../shared/data/lvs_mini \\
        --stream residential_street1+highway_cctv1+parking_lot1          # one stream of three scenes

Every field of the run config can be set with ``--set path=value`` (e.g. ``--set online.student.optim.b2=0.99``)
or a JSON file (``--config run.json``, the format of the ``config.json`` a run writes); the common ones have
their own flags. Outputs go to ``--out DIR`` (default ``runs/<stream>-<time>``): ``config.json``,
``summary.json``, ``per_frame.csv``, ``timeline.png`` and ``video.mp4`` (frame | teacher | student).
A constructed stream (``a[0:400]+b+a[400:]``, docs/scenes.md) is named by its canonical spec; its
``summary.json`` lists its scenes with each scene's scores and the timeline marks where each scene starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jitnet_jax.compile_cache import add_compile_cache_flag, enable_compile_cache
from jitnet_jax.config import to_dict
from jitnet_jax.data.concat import scene_scores, spec_slug
from jitnet_jax.data.types import StreamSource
from jitnet_jax.eval.summary import summarize_run
from jitnet_jax.host_memory import keep_freed_memory
from jitnet_jax.io import atomic_write_text, lock_output
from jitnet_jax.online.rows import ZOO_KEYS
from jitnet_jax.online.runner import StreamResult, run_stream
from jitnet_jax.run_config import REAL_STREAM_INIT, RunConfig, add_config_flags, make_config, real_stream
from teacher.sources import open_source

__all__ = ["RunConfig", "build_parser", "main", "make_config", "open_source"]  # the library's, re-exported


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.stream",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("stream source (default: the embedded synthetic stream)")
    src.add_argument(
        "--stream",
        default="synthetic",
        help="'synthetic', or with --lvs a stream name or a constructed stream such as "
        "'a[0:400]+b+a[400:]' (docs/scenes.md)",
    )
    src.add_argument("--lvs", help="LVS root folder holding stream folders (e.g. ../shared/data/lvs_mini)")
    src.add_argument("--store", help="a precomputed label store (python -m teacher.precompute)")
    src.add_argument("--video", help="a video file; labels come from --teacher, precomputed first")
    src.add_argument(
        "--teacher",
        help="teacher backend for --video: yolov8_seg, deeplab, yolov8n-seg-1280 or yolov8n-seg-tta (docs/teachers.md)",
    )
    src.add_argument("--model", help="teacher model file (default: from JITNET_DATA/models)")
    src.add_argument("--groups", help='class groups for --video, e.g. "person;car,bus,truck"')
    src.add_argument("--cache-dir", default="label_stores", help="where precomputed label stores go")
    src.add_argument(
        "--live",
        action="store_true",
        help="with --video/--lvs and --teacher: run the teacher only on the frames the controller selects, "
        "when it selects them (labels kept in OUT/labels; see docs/live.md)",
    )
    src.add_argument(
        "--audit-every",
        type=int,
        default=0,
        metavar="K",
        help="with --live: also run the teacher on every K-th frame, for scoring only (timed apart)",
    )
    run = p.add_argument_group("run")
    add_config_flags(run)
    run.add_argument(
        "--init",
        help="start from a pretrained student: 'camvid' (the shipped CamVid student) or a checkpoint "
        "directory (experiments.pretrain); the class head is mapped to the stream's classes by name. "
        "Default: camvid for a real stream (--lvs/--store/--video), random init for the synthetic one; "
        "'none': random init",
    )
    add_compile_cache_flag(run)
    out = p.add_argument_group("outputs")
    out.add_argument("--out", help="output folder (default runs/<stream>-<time>)")
    out.add_argument("--no-video", action="store_true", help="don't write video.mp4")
    out.add_argument("--no-progress", action="store_true")
    out.add_argument(
        "--checkpoint-every", type=int, default=0, help="save an Orbax checkpoint every N frames"
    )
    out.add_argument("--keep", type=int, default=3, help="checkpoints to keep")
    out.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    return p


def write_per_frame_csv(path: Path, per_frame: dict[str, np.ndarray], class_names: tuple[str, ...]) -> None:
    """One row per frame: frame, teacher, updates, delta, acc, then tp/fp/fn per class (with a zoo, then its
    forward passes, switches and stores)."""
    cols = ["frame", "teacher", "updates", "delta", "acc"]
    zoo = [k for k in ZOO_KEYS if k in per_frame]
    header = cols + [f"{k}_{c}" for c in class_names for k in ("tp", "fp", "fn")] + zoo
    lines = [",".join(header)]
    for i in range(len(per_frame["frame"])):
        row = [
            str(int(per_frame["frame"][i])),
            str(int(per_frame["teacher"][i])),
            str(int(per_frame["updates"][i])),
            str(int(per_frame["delta"][i])),
            f"{float(per_frame['acc'][i]):.5f}",
        ]
        for j in range(len(class_names)):
            row += [str(int(per_frame[k][i, j])) for k in ("tp", "fp", "fn")]
        row += [str(int(per_frame[k][i])) for k in zoo]
        lines.append(",".join(row))
    atomic_write_text(path, "\n".join(lines) + "\n")


def format_summary(summary: dict[str, Any]) -> str:
    """A readable table of the run's results."""
    lines = ["", f"{'class':<20}{'IoU':>8}"]
    for name, iou in summary["class_iou"].items():
        lines.append(f"{name:<20}{iou:>8.3f}" if iou == iou else f"{name:<20}{'n/a':>8}")
    lines += [
        "-" * 28,
        f"{'mIoU (foreground)':<20}{summary['miou']:>8.3f}",
        f"{'frames':<20}{summary['frames']:>8d}",
        f"{'teacher frames':<20}{summary['teacher_frames']:>8d}  ({100 * summary['teacher_fraction']:.1f}%)",
        f"{'updates':<20}{summary['updates']:>8d}",
        f"{'speedup (cost model)':<20}{summary['speedup_cost_model']:>7.2f}x",
    ]
    if "speedup_flops" in summary:
        lines.append(f"{'speedup (FLOPs)':<20}{summary['speedup_flops']:>7.2f}x")
    lines.append(
        f"{'student wall time':<20}{summary['wall_s']:>7.1f}s  "
        f"({summary['student_ms_per_frame']:.1f} ms/frame, compile {summary['compile_s']:.1f}s)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    # ffmpeg (video writing, decoding) is started with fork+exec, which is safe; silence JAX's fork warning
    warnings.filterwarnings("ignore", message="os.fork\\(\\) was called")
    args = build_parser().parse_args(argv)
    enable_compile_cache(args.compile_cache)
    keep_freed_memory()
    args.started = time.perf_counter()  # live mode reports the run's end-to-end wall time from here
    if args.init is None and real_stream(args):
        args.init = REAL_STREAM_INIT
    elif args.init == "none":
        args.init = None
    try:
        cfg = make_config(args)
        if args.live:
            from jitnet_jax.online.live import LIVE_DEFAULTS, live_config

            unset = tuple(k for k in LIVE_DEFAULTS if not _user_sets(args, k))
            online = live_config(cfg.online, args.chunk_size, args.audit_every, unset)
            cfg = dataclasses.replace(cfg, online=online)
        source = open_source(args, cfg)
    except ValueError as e:  # includes DataError / VideoError
        print(f"error: {e}", file=sys.stderr)
        return 2
    info = source.info
    if info.num_classes != cfg.online.student.model.num_classes:
        model = dataclasses.replace(cfg.online.student.model, num_classes=info.num_classes)
        cfg = dataclasses.replace(
            cfg,
            online=dataclasses.replace(
                cfg.online, student=dataclasses.replace(cfg.online.student, model=model)
            ),
        )
    if (info.height, info.width) != (cfg.height, cfg.width):
        cfg = dataclasses.replace(cfg, height=info.height, width=info.width)
    slug = spec_slug(info.name)  # a constructed stream's spec without the characters awkward in paths
    out = Path(args.out) if args.out else Path("runs") / f"{slug}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        return _run(args, cfg, source, out)
    except ValueError as e:  # includes DataError, CheckpointError, OutputBusy
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C while the first one's checkpoint was pending
        print(
            f"interrupted twice: stopped at once, without saving; {out} keeps its last checkpoint",
            file=sys.stderr,
        )
        return 130
    except OSError as e:  # e.g. a full disk while writing an output
        print(f"error: {out}: {' '.join(str(e).split())}", file=sys.stderr)
        return 1


def _user_sets(args: argparse.Namespace, field: str) -> bool:
    """Whether the command line sets ``online.<field>`` (its flag, ``--set``, or any ``--config`` file)."""
    sets = (a.split("=", 1)[0].strip() for a in args.set)
    return getattr(args, field, None) is not None or bool(args.config) or f"online.{field}" in sets


def run_fingerprint(cfg: RunConfig, source: StreamSource, init: str | None = None) -> dict[str, Any]:
    """Everything that determines a run's results, flat (see ``checkpoint.make_fingerprint``): the whole
    run config, the stream (name, size, classes, teacher and the identity of its labels: a label store's
    content digest or the synthetic generator's version), the ``--init`` checkpoint's digest and the
    checkpoint format version."""
    from jitnet_jax.online.checkpoint import make_fingerprint

    extra: dict[str, Any] = {"stream.identity": str(getattr(source, "identity", type(source).__name__))}
    if init:
        from jitnet_jax.io.atomic import path_digest
        from jitnet_jax.student.pretrained import resolve_init

        extra["init"] = path_digest(resolve_init(init))
    return make_fingerprint(cfg, source.info, **extra)


def _run(args: argparse.Namespace, cfg: RunConfig, source: StreamSource, out: Path) -> int:
    """Run holding the output folder's lock for the whole run (a second process is refused)."""
    lock = lock_output(out, "run folder")
    try:
        return _run_locked(args, cfg, source, out)
    finally:
        lock.release()


def _checkpoint_steps(ckdir: Path) -> list[int]:
    """Cursors of the complete checkpoints in ``ckdir`` (without creating it)."""
    if not ckdir.is_dir():
        return []
    return sorted(int(p.name) for p in ckdir.iterdir() if p.is_dir() and p.name.isdigit())


def _recorded_fingerprint(out: Path) -> dict[str, Any]:
    """The fingerprint a run recorded in ``out/config.json`` ({} when absent or unreadable)."""
    try:
        rec = json.loads((out / "config.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    fp = rec.get("fingerprint") if isinstance(rec, dict) else None
    return fp if isinstance(fp, dict) else {}


def _measured_delay(cfg: RunConfig, source: Any, out: Path) -> RunConfig:
    """``cfg`` with the teacher delay of ``--teacher-delay auto``: the teacher's latency measured on this
    machine (``LiveSource.measure_latency``, kept in ``out/teacher_latency.json`` so that a resumed run uses
    the same figure) in frames of the video (``latency_frames``)."""
    from jitnet_jax.config import latency_frames

    fps = source.info.fps
    if not fps or fps <= 0:
        raise ValueError(f"--teacher-delay auto: stream {source.info.name} has no frame rate")
    ms = source.measure_latency(out / "labels", out / "teacher_latency.json")
    d = latency_frames(ms, fps)
    print(f"teacher latency {ms:.1f} ms at {fps:g} fps: each label arrives {d} frames late", file=sys.stderr)
    online = dataclasses.replace(cfg.online, teacher_delay=d).validate()
    if d >= online.delta_min:
        raise ValueError(
            f"--teacher-delay auto: the teacher is {d} frames late ({ms:.0f} ms at {fps:g} fps); live mode "
            f"needs delta_min > {d} (--delta-min)"
        )
    return dataclasses.replace(cfg, online=online)


def _run_locked(args: argparse.Namespace, cfg: RunConfig, source: StreamSource, out: Path) -> int:
    from jitnet_jax.eval.flops import student_flops
    from jitnet_jax.online.checkpoint import check_fingerprint
    from jitnet_jax.online.runner import new_state

    info = source.info
    if args.live and args.teacher_delay == "auto":
        cfg = _measured_delay(cfg, source, out)
    fingerprint = run_fingerprint(cfg, source, args.init)
    finished = (out / "summary.json").exists()
    steps = _checkpoint_steps(out / "checkpoints")
    started = (out / "config.json").exists() or bool(steps)
    if not args.resume:
        if finished:
            raise ValueError(f"{out} already holds a finished run; pick another --out (nothing was changed)")
        if started:
            raise ValueError(
                f"{out} holds an unfinished run; continue it with --resume or pick another --out "
                "(nothing was changed)"
            )
    elif started and not steps:  # nothing saved yet: still refuse to mix settings in one folder
        check_fingerprint(_recorded_fingerprint(out), fingerprint, where=str(out))
    if args.resume and finished:
        check_fingerprint(_recorded_fingerprint(out), fingerprint, where=str(out))
        print(f"{out}: the run is already complete; nothing to do (nothing was changed)", file=sys.stderr)
        return 0

    key = jax.random.key(cfg.seed)
    state = new_state(cfg.online, key, (info.height, info.width), keep_executable=args.live)
    if args.init:
        from jitnet_jax.student.pretrained import load_student_for_classes, resolve_init

        params, stats, _ = load_student_for_classes(
            resolve_init(args.init), cfg.online.student.model, info.class_names, jax.random.fold_in(key, 1)
        )
        state = state.replace(student=state.student.replace(params=params, batch_stats=stats))

    from jitnet_jax.online.checkpoint import GracefulStop, StreamCheckpointer

    per_frame = None
    # Always a checkpointer: SIGINT/SIGTERM save the run at the next chunk boundary even without
    # --checkpoint-every (its folder is made on the first save).
    ckpt = StreamCheckpointer(
        out / "checkpoints",
        fingerprint,
        every_frames=args.checkpoint_every or 0,
        keep=args.keep,
        name=str(out),
    )
    if args.resume:
        restored = ckpt.restore_latest(state)
        if restored is not None:
            state, per_frame = restored
            print(f"resumed at frame {int(state.cursor)} from {out / 'checkpoints'}", file=sys.stderr)
        else:
            print(f"{out}: no checkpoint to resume from; starting at frame 0", file=sys.stderr)
    record = {**to_dict(cfg), "stream": info.name, "class_names": list(info.class_names)}
    atomic_write_text(out / "config.json", json.dumps({**record, "fingerprint": fingerprint}, indent=2))
    total = min(cfg.frames or info.num_frames, info.num_frames)
    if int(state.cursor) >= total and per_frame is not None:  # killed after the last save, before summary
        print("all frames were already processed; writing the outputs", file=sys.stderr)
        ckpt.close()
        return _finish(args, cfg, source, out, StreamResult(state, per_frame, 0.0, 0.0), student_flops)

    writer = None
    if not args.no_video:
        from experiments.visualize import VideoWriter

        name = "video.mp4" if int(state.cursor) == 0 else f"video_from_{int(state.cursor)}.mp4"
        writer = VideoWriter(out / name, fps=info.fps or 30.0, num_classes=info.num_classes)

    def on_chunk(chunk: Any, stats: dict[str, np.ndarray], pf: dict[str, np.ndarray]) -> None:
        writer.write(chunk.frames, chunk.labels, stats["pred"], stats["teacher"], valid=chunk.valid)

    # The first SIGINT/SIGTERM stops the run at the next chunk boundary and saves it there; a second
    # Ctrl-C exits at once (GracefulStop raises KeyboardInterrupt).
    with GracefulStop() as stop:
        try:
            run = run_stream
            if args.live:
                from jitnet_jax.online.live import stream_runner

                run = stream_runner(
                    source.frames, source.open_teacher(out / "labels"), args.audit_every, cfg.frames
                )
            result: StreamResult = run(
                source,
                cfg.online,
                state=state,
                per_frame=per_frame,
                max_frames=total,
                keep_preds=writer is not None,
                on_chunk=on_chunk if writer is not None else None,
                checkpointer=ckpt,
                progress=not args.no_progress,
                should_stop=stop.is_set,
            )
        finally:
            if writer is not None:
                writer.close()
    stopped = stop.is_set()
    if args.checkpoint_every or args.resume or stopped:
        ckpt.save(result.state, result.per_frame)  # no-op when the stop already saved this cursor
    ckpt.close()
    if stopped:
        cursor = int(result.state.cursor)
        print(
            f"interrupted at frame {cursor}; saved a checkpoint there; resume with --resume --out {out}",
            file=sys.stderr,
        )
        return 130
    return _finish(args, cfg, source, out, result, student_flops)


def _finish(
    args: argparse.Namespace,
    cfg: RunConfig,
    source: StreamSource,
    out: Path,
    result: StreamResult,
    student_flops: Any,
) -> int:
    """Summary, per-frame CSV, timeline; ``summary.json`` is written last (it marks the run finished)."""
    info = source.info
    if args.live:
        return _finish_live(args, cfg, source, out, result)
    gflops = {
        k.replace("_flops", "_gflops"): v / 1e9
        for k, v in student_flops(cfg.online.student, (info.height, info.width)).items()
    }
    summary = summarize_run(result, cfg.online, info.class_names, cfg.cost, gflops)
    summary["stream"] = info.name
    if hasattr(source, "scenes_json"):
        summary["scenes"] = scene_scores(source.scenes_json(), result.per_frame)
    write_per_frame_csv(out / "per_frame.csv", result.per_frame, info.class_names)
    from experiments.visualize import plot_timeline

    plot_timeline(
        result.per_frame,
        out / "timeline.png",
        title=f"{info.name}: JITNet online, a_thr={cfg.online.a_thr}",
        cuts=getattr(source, "cuts", ()) or (),
    )
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    print(format_summary(summary))
    print(f"\noutputs in {out}/")
    return 0


def _finish_live(
    args: argparse.Namespace, cfg: RunConfig, source: Any, out: Path, result: StreamResult
) -> int:
    """Outputs of a live run: as :func:`_finish`, with the real speedup beside the cost model's, and the
    accuracy of the audited frames (or none: without ``--audit-every`` accuracy is not measured)."""
    from experiments.visualize import plot_timeline
    from jitnet_jax.online.live import as_live_result, audit_mask, format_live_summary, live_summary

    info = source.info
    result = as_live_result(result)
    summary = summarize_run(result, cfg.online, info.class_names, cfg.cost)
    write_per_frame_csv(out / "per_frame.csv", result.per_frame, info.class_names)
    plot_timeline(
        result.per_frame,
        out / "timeline.png",
        title=f"{info.name}: JITNet live, a_thr={cfg.online.a_thr}",
        scored=audit_mask(result.per_frame["frame"], args.audit_every),
    )
    total_s = time.perf_counter() - args.started - result.audit_wall_s  # end to end, audit taken out
    from jitnet_jax.eval.measured_costs import machine, time_predict

    # The student's predict, timed after the run (not in total_s), for the bound teacher ms / predict ms.
    predict_ms, _ = time_predict(cfg.online.student, info.height, info.width, state=result.state.student)
    summary.update(live_summary(result, args.audit_every, info.class_names, total_s, predict_ms, machine()))
    summary["stream"] = info.name
    summary["teacher_delay_frames"] = cfg.online.teacher_delay
    if (out / "teacher_latency.json").exists():  # --teacher-delay auto
        summary["teacher_latency_ms"] = json.loads((out / "teacher_latency.json").read_text())[
            "teacher_latency_ms"
        ]
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    print(format_live_summary(summary))
    print(f"\noutputs in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

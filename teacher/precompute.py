"""Teacher precompute: run (or read) a teacher over a stream and write a label store.

Sources (exactly one):

* ``--lvs DIR --stream NAME``: an LVS stream folder (video chunks + ``detectron_large_mask_rcnn_1_*.npy``);
* ``--video PATH --teacher {yolov8_seg,deeplab} [--model PATH]``: a real TFLite teacher on every frame;
* ``--video PATH --tf-export PATH``: TF Object Detection API per-frame outputs;
* ``--video PATH --detectron PATH``: Detectron2-style per-frame outputs.

Detections are rasterised at ``--height x --width`` (default 180x320) with the stream's class groups
(``--groups "person;car,bus,truck"`` overrides) and written to ``--out`` in chunks of ``--chunk-size``
frames. The run is resumable: re-running the same command after an interruption keeps every finished chunk
(checked by sha256) and computes only the rest; the store is marked complete only at the very end.

Errors are printed as one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from jitnet_jax.compile_cache import enable_compile_cache
from jitnet_jax.data.label_store import (
    FORMAT_VERSION,
    DataError,
    LabelStoreWriter,
    StoreHeader,
    store_is_complete,
)
from jitnet_jax.data.video import count_frames, probe, read_videos
from jitnet_jax.host_memory import keep_freed_memory
from jitnet_jax.io import lock_output
from teacher.class_groups import (
    STREAM_GROUPS,
    ClassGroups,
    coco_to_label,
    group_names,
    parse_groups,
    stream_groups,
    validate_groups,
)
from teacher.rasterize import Instances, rasterize

DEFAULT_HEIGHT, DEFAULT_WIDTH = 180, 320
DEFAULT_CHUNK = 64
DEFAULT_CACHE = Path("label_stores")
#: Class groups for ``--video`` sources without ``--groups`` whose stream name has no known groups.
DEFAULT_VIDEO_GROUPS: ClassGroups = (("person",), ("car", "bus", "truck"), ("bicycle", "motorcycle"))


@dataclasses.dataclass(frozen=True)
class RasterParams:
    """Rasterisation settings (recorded in the store header; see ``teacher.rasterize.rasterize``).

    Loss weights are not among them: a store keeps a region map (background / inside a dilated box) and
    each run weights the regions with its own ``fg_weight``/``bg_weight`` (``experiments.stream --fg-weight``).
    """

    score_threshold: float = 0.5
    mask_threshold: float = 0.5
    dilation: float = 0.15


@dataclasses.dataclass
class LabelJob:
    """What to label: the store header and a function yielding per-frame instances for ``[start, stop)``."""

    header: StoreHeader
    instances: Callable[[int, int], Iterator[Instances]]


def _groups(
    groups: str | Sequence[Sequence[str]] | None,
    stream: str,
    lvs_root: Path | None,
    video_source: bool = False,
) -> ClassGroups:
    """Explicit groups, else the stream's known groups; plain videos of unknown streams get
    :data:`DEFAULT_VIDEO_GROUPS` (the paper's traffic groups)."""
    if groups is None:
        if video_source and stream not in STREAM_GROUPS:
            return DEFAULT_VIDEO_GROUPS
        return stream_groups(stream, lvs_root)
    if isinstance(groups, str):
        return parse_groups(groups)
    return validate_groups(groups)


def _header(
    stream: str,
    groups: ClassGroups,
    teacher: str,
    videos: Sequence[Path],
    counts: Sequence[int],
    fps: float,
    height: int,
    width: int,
    chunk_size: int,
    max_frames: int | None,
    params: RasterParams,
    extra: dict[str, object] | None = None,
) -> StoreHeader:
    total = sum(counts)
    n = total if max_frames is None else min(total, int(max_frames))
    if n < 1:
        raise DataError(f"stream {stream}: no frames to label (max_frames={max_frames})")
    p = {**dataclasses.asdict(params), **(extra or {})}
    return StoreHeader(
        stream=stream,
        num_frames=n,
        height=int(height),
        width=int(width),
        fps=float(fps),
        class_names=group_names(groups),
        class_groups=groups,
        teacher=teacher,
        videos=tuple(str(Path(v).resolve()) for v in videos),
        video_frames=tuple(int(c) for c in counts),
        chunk_size=int(chunk_size),
        params=tuple(sorted(p.items())),
    )


def lvs_job(
    lvs: str | os.PathLike,
    stream: str,
    groups=None,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    chunk_size: int = DEFAULT_CHUNK,
    max_frames: int | None = None,
    params: RasterParams = RasterParams(),
) -> LabelJob:
    """Job for an LVS stream folder (validates chunks, teacher files and frame counts)."""
    from teacher.lvs import TEACHER_NAME, iter_detections, open_stream

    root = Path(lvs)
    s = open_stream(root, stream)
    g = _groups(groups, stream, root)
    header = _header(
        stream,
        g,
        TEACHER_NAME,
        s.videos,
        s.frame_counts,
        s.fps,
        height,
        width,
        chunk_size,
        max_frames,
        params,
    )
    return LabelJob(header, lambda a, b: iter_detections(s, a, b))


def teacher_job(
    video: str | os.PathLike,
    teacher: str,
    model: str | os.PathLike | None = None,
    stream: str | None = None,
    groups=None,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    chunk_size: int = DEFAULT_CHUNK,
    max_frames: int | None = None,
    params: RasterParams = RasterParams(),
    num_threads: int = 2,
) -> LabelJob:
    """Job running a TFLite teacher backend (``teacher.backends``) on every frame of one video."""
    from teacher.backends import default_model_path, make_teacher

    video = Path(video)
    stream = stream or video.stem
    g = _groups(groups, stream, None, video_source=True)
    model_path = Path(model) if model is not None else default_model_path(teacher)
    meta = probe(video)
    n = count_frames(video)
    header = _header(
        stream,
        g,
        f"{teacher}:{model_path.name}",
        [video],
        [n],
        meta.fps,
        height,
        width,
        chunk_size,
        max_frames,
        params,
    )
    state: dict[str, object] = {}

    def instances(a: int, b: int) -> Iterator[Instances]:
        if "t" not in state:  # load the model only when something is left to compute
            state["t"] = make_teacher(teacher, model_path, num_threads)
        t = state["t"]
        for frame in read_videos([video], None, start=a, stop=b, frame_counts=[n]):
            yield t(frame)  # type: ignore[operator]

    return LabelJob(header, instances)


def export_job(
    video: str | os.PathLike,
    tf_export: str | os.PathLike | None = None,
    detectron: str | os.PathLike | None = None,
    stream: str | None = None,
    groups=None,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    chunk_size: int = DEFAULT_CHUNK,
    max_frames: int | None = None,
    params: RasterParams = RasterParams(),
    tf_class_ids: str = "coco90",
) -> LabelJob:
    """Job for a TF OD API or Detectron2-style export paired with its video (frame counts must agree)."""
    from teacher.exports import read_detectron, read_tf_export

    video = Path(video)
    stream = stream or video.stem
    g = _groups(groups, stream, None, video_source=True)
    meta = probe(video)
    n = count_frames(video)
    if (tf_export is None) == (detectron is None):
        raise DataError("pass exactly one of --tf-export or --detectron")
    src = Path(tf_export if tf_export is not None else detectron)  # type: ignore[arg-type]
    if tf_export is not None:
        records = list(read_tf_export(src, tf_class_ids, (meta.height, meta.width)))
        name, extra = f"tf_export:{src.name}", {"tf_class_ids": tf_class_ids}
    else:
        records = list(read_detectron(src, (meta.height, meta.width)))
        name, extra = f"detectron:{src.name}", {}
    if len(records) != n:
        raise DataError(
            f"{src}: export has {len(records)} frames but video {video} decodes to {n} "
            f"(first unmatched frame {min(len(records), n)})"
        )
    header = _header(
        stream, g, name, [video], [n], meta.fps, height, width, chunk_size, max_frames, params, extra
    )
    return LabelJob(header, lambda a, b: iter(records[a:b]))


def _default_model(teacher: str) -> Path:
    from teacher.backends import default_model_path

    return default_model_path(teacher)


def run_job(job: LabelJob, out: str | os.PathLike, progress: bool = True) -> Path:
    """Write (or resume) the store for ``job`` in ``out``; returns ``out`` once the store is complete.

    Holds an exclusive lock on ``out`` while writing (a second writer is refused with a one-line
    :class:`~jitnet_jax.io.OutputBusy`). Rasterisation uses the :class:`RasterParams` recorded in
    ``job.header.params``.
    """
    with lock_output(out, "label store"):
        return _run_job_locked(job, Path(out), progress)


def _run_job_locked(job: LabelJob, out: Path, progress: bool) -> Path:
    from tqdm import tqdm

    h = job.header
    stored = dict(h.params)
    params = RasterParams(**{f.name: stored[f.name] for f in dataclasses.fields(RasterParams)})
    writer = LabelStoreWriter(out, h)
    missing = writer.missing_chunks()
    lut = coco_to_label(h.class_groups)
    done = h.num_frames - sum(b - a for a, b in map(writer.chunk_range, missing))
    with tqdm(
        total=h.num_frames, initial=done, unit="frame", desc=f"labels {h.stream}", disable=not progress
    ) as bar:
        # contiguous runs of missing chunks share one teacher/decoder pass
        for _, run in itertools.groupby(enumerate(missing), key=lambda t: t[1] - t[0]):
            idx = [i for _, i in run]
            start, stop = writer.chunk_range(idx[0])[0], writer.chunk_range(idx[-1])[1]
            it = job.instances(start, stop)
            for i in idx:
                a, b = writer.chunk_range(i)
                labels = np.empty((b - a, h.height, h.width), np.uint8)
                weights = np.empty((b - a, h.height, h.width), np.uint8)  # region map
                for k in range(b - a):
                    try:
                        inst = next(it)
                    except StopIteration:
                        raise DataError(
                            f"stream {h.stream}: teacher output ended at frame {a + k} of {h.num_frames}"
                        ) from None
                    labels[k], weights[k] = rasterize(
                        inst,
                        h.height,
                        h.width,
                        lut,
                        score_threshold=params.score_threshold,
                        mask_threshold=params.mask_threshold,
                        dilation=params.dilation,
                    )
                    bar.update(1)
                writer.write_chunk(i, labels, weights)
    return writer.finalize()


def files_identity(paths: Sequence[str | os.PathLike]) -> list[list[object]]:
    """``[[name, size, mtime_ns], ...]`` of the files at ``paths`` (folders expanded, sorted): what the cache
    key records of the teacher's inputs. Changing, replacing or touching a file changes it."""
    rows: list[list[object]] = []
    for p in map(Path, paths):
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
        for f in files:
            try:
                st = f.stat()
            except OSError:
                rows.append([str(f.resolve()), -1, -1])
                continue
            rows.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    return rows


def store_key(doc: dict[str, object]) -> str:
    """12 hex digits of the sha256 of ``doc`` (JSON, sorted keys): the cache key of a label store."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=list).encode()).hexdigest()[:12]


def default_store_dir(
    cache_dir: str | os.PathLike,
    stream: str,
    teacher: str,
    height: int,
    width: int,
    max_frames: int | None = None,
    key: str | None = None,
) -> Path:
    """``<cache_dir>/<stream>__<teacher>__<H>x<W>[__first<N>][__<key>]`` (teacher ``:`` -> ``-``).

    ``key`` (:func:`store_key`) covers everything else that determines the labels (class groups, chunk
    size, teacher model, rasterisation parameters, the teacher files' identity), so a change makes a new
    folder instead of clashing with an old store.
    """
    safe = teacher.replace(":", "-").replace("/", "-")
    suffix = f"__first{max_frames}" if max_frames else ""
    suffix += f"__{key}" if key else ""
    return Path(cache_dir) / f"{stream}__{safe}__{height}x{width}{suffix}"


def _matches(
    out: Path,
    stream: str,
    height: int,
    width: int,
    chunk_size: int,
    max_frames: int | None,
    teacher_prefix: str,
    groups: ClassGroups,
    params: RasterParams,
) -> bool:
    """Cheap check that a complete store at ``out`` answers the request (no decoding / teacher loading)."""
    if not store_is_complete(out):
        return False
    meta = json.loads((out / "meta.json").read_text())
    total = sum(int(v["frames"]) for v in meta["videos"])
    want_n = total if max_frames is None else min(total, max_frames)
    ok = (meta["stream"], meta["height"], meta["width"], meta["chunk_size"], meta["num_frames"]) == (
        stream,
        height,
        width,
        chunk_size,
        want_n,
    )
    ok = ok and str(meta["teacher"]).startswith(teacher_prefix)
    ok = ok and tuple(tuple(g) for g in meta["class_groups"]) == tuple(groups)
    stored = meta.get("params", {})
    return ok and all(stored.get(k) == v for k, v in dataclasses.asdict(params).items())


def ensure_store(
    out: str | os.PathLike | None = None,
    *,
    lvs: str | os.PathLike | None = None,
    stream: str | None = None,
    video: str | os.PathLike | None = None,
    teacher: str | None = None,
    model: str | os.PathLike | None = None,
    tf_export: str | os.PathLike | None = None,
    detectron: str | os.PathLike | None = None,
    groups: str | Sequence[Sequence[str]] | None = None,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    chunk_size: int = DEFAULT_CHUNK,
    max_frames: int | None = None,
    params: RasterParams = RasterParams(),
    tf_class_ids: str = "coco90",
    num_threads: int = 2,
    cache_dir: str | os.PathLike = DEFAULT_CACHE,
    progress: bool = True,
) -> Path:
    """Return the directory of a complete label store for the request, precomputing it if needed.

    Exactly one source:
      * ``lvs=DIR, stream=NAME``: LVS stream folder ``DIR/NAME`` (class groups default to ``DIR/streams.json``
        or the paper's groups for the stream);
      * ``video=PATH, teacher="yolov8_seg" | "deeplab"`` (``model`` defaults to ``$JITNET_DATA/models/...``);
      * ``video=PATH, tf_export=PATH`` or ``video=PATH, detectron=PATH``.
    For video sources ``stream`` defaults to the video's file stem and ``groups`` to the stream's known
    groups (``teacher.class_groups.STREAM_GROUPS``), else :data:`DEFAULT_VIDEO_GROUPS`
    (person | car,bus,truck | bicycle,motorcycle).

    Args:
      out: store directory; default ``default_store_dir(cache_dir, stream, teacher, height, width, max_frames)``.
      groups: ``"person;car,bus,truck"`` or a list of lists of COCO names.
      height, width: label/frame resolution of the store (the student's).
      chunk_size: frames per store chunk file.
      max_frames: label only the first N frames.
      params: rasterisation settings (score threshold 0.5, mask threshold 0.5, box dilation 0.15).
      progress: show a tqdm bar.

    A complete matching store is returned immediately (no decoding). An incomplete one is resumed; a store
    made with different settings raises :class:`DataError` (delete it or pick another ``out``).

    Raises:
      DataError: bad arguments or bad input data (one-line message naming the file/frame).
    """
    n_sources = sum(x is not None for x in (lvs, teacher, tf_export, detectron))
    if n_sources != 1:
        raise DataError("give exactly one source: --lvs, --teacher, --tf-export or --detectron")
    if lvs is not None:
        if stream is None:
            raise DataError("--lvs needs --stream NAME")
        if not (Path(lvs) / stream).is_dir():
            raise DataError(f"{Path(lvs) / stream}: LVS stream folder not found")
        name, tprefix = stream, "lvs:"
    else:
        if video is None:
            raise DataError("--teacher/--tf-export/--detectron need --video PATH")
        name = stream or Path(video).stem
        tprefix = f"{teacher}:" if teacher else ("tf_export:" if tf_export is not None else "detectron:")
    g = _groups(groups, name, Path(lvs) if lvs is not None else None, video_source=lvs is None)
    if out is None:
        if lvs is not None:
            inputs: list[str | os.PathLike] = [Path(lvs) / stream]
            teacher_id = "lvs"
        elif teacher is not None:
            model_path = Path(model) if model is not None else _default_model(teacher)
            inputs, teacher_id = [video, model_path], f"{teacher}:{model_path.name}"
        else:
            src = tf_export if tf_export is not None else detectron
            inputs, teacher_id = [video, src], f"{tprefix}{Path(src).name}:{tf_class_ids}"  # type: ignore[arg-type]
        key = store_key(
            {
                "stream": name,
                "size": [height, width],
                "chunk_size": chunk_size,
                "max_frames": max_frames,
                "groups": [list(x) for x in g],
                "teacher": teacher_id,
                "params": dataclasses.asdict(params),
                "files": files_identity(inputs),
                "format": FORMAT_VERSION,
            }
        )
        out = default_store_dir(cache_dir, name, tprefix.rstrip(":"), height, width, max_frames, key)
    out = Path(out)
    if _matches(out, name, height, width, chunk_size, max_frames, tprefix, g, params):
        return out
    if lvs is not None:
        job = lvs_job(lvs, name, groups, height, width, chunk_size, max_frames, params)
    elif teacher is not None:
        job = teacher_job(
            video, teacher, model, name, groups, height, width, chunk_size, max_frames, params, num_threads
        )
    else:
        job = export_job(
            video,
            tf_export,
            detectron,
            name,
            groups,
            height,
            width,
            chunk_size,
            max_frames,
            params,
            tf_class_ids,
        )
    return run_job(job, out, progress)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m teacher.precompute", description=__doc__.split("\n\n")[0])
    src = p.add_argument_group("source (one of)")
    src.add_argument("--lvs", type=Path, help="LVS root folder (with --stream)")
    src.add_argument("--stream", help="stream name (LVS folder name; for videos: label store name)")
    src.add_argument("--video", type=Path, help="video file (with --teacher, --tf-export or --detectron)")
    src.add_argument("--teacher", choices=["yolov8_seg", "deeplab"], help="TFLite teacher backend")
    src.add_argument(
        "--model", type=Path, help="TFLite model for --teacher (default: $JITNET_DATA/models/...)"
    )
    src.add_argument("--tf-export", type=Path, help="TF OD API per-frame .npz file or directory")
    src.add_argument("--tf-class-ids", choices=["coco90", "coco80"], default="coco90")
    src.add_argument("--detectron", type=Path, help="Detectron2-style export (.npz/.npy/dir)")
    p.add_argument("--groups", help='class groups, e.g. "person;car,bus,truck;bicycle,motorcycle"')
    p.add_argument("--height", type=int, default=DEFAULT_HEIGHT)
    p.add_argument("--width", type=int, default=DEFAULT_WIDTH)
    p.add_argument("--out", type=Path, help=f"store directory (default under ./{DEFAULT_CACHE}/)")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK, help="frames per store chunk file")
    p.add_argument("--max-frames", type=int, help="label only the first N frames")
    p.add_argument("--fg-weight", type=float, help=argparse.SUPPRESS)  # moved to the run: refused below
    p.add_argument("--score-threshold", type=float, default=RasterParams.score_threshold)
    p.add_argument("--threads", type=int, default=2, help="TFLite interpreter threads")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (0 ok, 2 on bad input/arguments)."""
    args = build_parser().parse_args(argv)
    enable_compile_cache()
    keep_freed_memory()
    if args.fg_weight is not None:
        print(
            "error: --fg-weight is a run setting, not a label-store setting: stores keep box regions and "
            "each run weights them (python -m experiments.stream --fg-weight W)",
            file=sys.stderr,
        )
        return 2
    try:
        out = ensure_store(
            args.out,
            lvs=args.lvs,
            stream=args.stream,
            video=args.video,
            teacher=args.teacher,
            model=args.model,
            tf_export=args.tf_export,
            detectron=args.detectron,
            groups=args.groups,
            height=args.height,
            width=args.width,
            chunk_size=args.chunk_size,
            max_frames=args.max_frames,
            params=RasterParams(score_threshold=args.score_threshold),
            tf_class_ids=args.tf_class_ids,
            num_threads=args.threads,
            progress=not args.no_progress,
        )
    except (ValueError, OSError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Teacher precompute: run (or read) a teacher over a stream and write a label store.

Sources (exactly one):

* ``--lvs DIR --stream NAME``: an LVS stream folder (video chunks + ``detectron_large_mask_rcnn_1_*.npy``);
* ``--video PATH --teacher NAME [--model PATH]``: a real TFLite teacher (``teacher.backends.BACKENDS``) on every frame;
* ``--video PATH --tf-export PATH``: TF Object Detection API per-frame outputs;
* ``--video PATH --detectron PATH``: Detectron2-style per-frame outputs.

Detections are rasterised at ``--height x --width`` (default 180x320) with the stream's class groups
(``--groups "person;car,bus,truck"`` overrides) and written to ``--out`` in chunks of ``--chunk-size``
frames. The run is resumable: re-running the same command after an interruption keeps every finished chunk
(checked by sha256) and computes only the rest; the store is marked complete only at the very end.

Several sources (``--video A --video B``, or ``--lvs DIR`` with several ``--stream`` or none: every stream of
DIR) write one store each, ``OUT/<stream>``. ``--runner direct`` (or ``flink``, ``spark``, ``dataflow``, any
Beam runner name) labels them with the Apache Beam pipeline of :mod:`teacher.beam_pipeline` instead of this
process (``pip install -e ".[beam]"``); Beam pipeline options such as ``--direct_num_workers 2
--direct_running_mode multi_processing`` pass through. Both paths write byte-identical stores.

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
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

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
from teacher.backends import BACKENDS
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


class StageClock:
    """Seconds spent per stage of the labelling (``decode``, ``teacher``, ``rasterise``, ``write``, ...)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


@dataclasses.dataclass
class LabelJob:
    """What to label: the store header and a function yielding per-frame instances for ``[start, stop)``.

    ``clock`` collects where the time goes (the teacher job times ``decode`` and ``teacher`` in it,
    :func:`run_job` adds ``rasterise`` and ``write``)."""

    header: StoreHeader
    instances: Callable[[int, int], Iterator[Instances]]
    clock: StageClock = dataclasses.field(default_factory=StageClock)


def raster_params(header: StoreHeader) -> RasterParams:
    """The :class:`RasterParams` recorded in ``header.params``."""
    stored = dict(header.params)
    return RasterParams(**{f.name: stored[f.name] for f in dataclasses.fields(RasterParams)})


def teacher_instances(
    teacher: Callable[[np.ndarray], Instances],
    video: str | os.PathLike,
    num_frames: int,
    start: int,
    stop: int,
    clock: StageClock | None = None,
) -> Iterator[Instances]:
    """Decode frames ``[start, stop)`` of ``video`` (``num_frames`` decodable frames in all) at native size
    and yield the teacher's instances of each; time spent decoding and in the teacher goes to ``clock``.

    Raises:
      DataError: ``[start, stop)`` is empty or past the end of the video (one line naming the video), or the
        video does not decode to ``num_frames`` frames (a :class:`~jitnet_jax.data.video.VideoError`).
    """
    if not 0 <= start < stop <= num_frames:
        raise DataError(
            f"{video}: frame range [{start}, {stop}) is empty or past the end of the video ({num_frames} frames)"
        )
    frames = read_videos([video], None, start=start, stop=stop, frame_counts=[num_frames])
    clock = clock or StageClock()
    while True:
        t0 = time.perf_counter()
        frame = next(frames, None)
        t1 = time.perf_counter()
        clock.add("decode", t1 - t0)
        if frame is None:
            return
        inst = teacher(frame)
        clock.add("teacher", time.perf_counter() - t1)
        yield inst


def label_chunk(
    instances: Iterator[Instances],
    header: StoreHeader,
    start: int,
    stop: int,
    clock: StageClock | None = None,
    on_frame: Callable[[], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise the next ``stop - start`` instances of ``instances`` (frames ``[start, stop)``) with the
    groups and :class:`RasterParams` of ``header``; the one labelling step of every precompute path.

    Returns:
      labels uint8 ``[stop - start, H, W]`` and the region map uint8 ``[stop - start, H, W]``.
    Raises:
      DataError: the instances end before ``stop`` (names the stream and frame).
    """
    params = raster_params(header)
    lut = coco_to_label(header.class_groups)
    h = header
    labels = np.empty((stop - start, h.height, h.width), np.uint8)
    regions = np.empty((stop - start, h.height, h.width), np.uint8)  # region map
    spent = 0.0
    for k in range(stop - start):
        try:
            inst = next(instances)
        except StopIteration:
            raise DataError(
                f"stream {h.stream}: teacher output ended at frame {start + k} of {h.num_frames}"
            ) from None
        t0 = time.perf_counter()
        labels[k], regions[k] = rasterize(
            inst,
            h.height,
            h.width,
            lut,
            score_threshold=params.score_threshold,
            mask_threshold=params.mask_threshold,
            dilation=params.dilation,
        )
        spent += time.perf_counter() - t0
        if on_frame is not None:
            on_frame()
    if clock is not None:
        clock.add("rasterise", spent)
    return labels, regions


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
    clock = StageClock()

    def instances(a: int, b: int) -> Iterator[Instances]:
        if "t" not in state:  # load the model only when something is left to compute
            t0 = time.perf_counter()
            state["t"] = make_teacher(teacher, model_path, num_threads)
            clock.add("teacher_load", time.perf_counter() - t0)
        return teacher_instances(state["t"], video, n, a, b, clock)  # type: ignore[arg-type]

    return LabelJob(header, instances, clock)


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
    writer = LabelStoreWriter(out, h)
    writer.adopt_chunks()  # chunks a killed Beam pipeline finished (written, not yet in meta.json)
    missing = writer.missing_chunks()
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
                labels, regions = label_chunk(it, h, a, b, job.clock, lambda: bar.update(1))
                t0 = time.perf_counter()
                writer.write_chunk(i, labels, regions)
                job.clock.add("write", time.perf_counter() - t0)
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


@dataclasses.dataclass
class StoreRequest:
    """A resolved request for one label store (see :func:`plan_store`).

    Attributes:
      out: the store directory.
      done: a complete store answering the request is already at ``out`` (nothing to decode or run).
      kind: ``"lvs"``, ``"teacher"`` or ``"export"``.
      source: what a worker needs to rebuild the instances: ``(lvs_root, stream)`` for ``lvs``,
        ``(video, teacher, model_path, num_threads)`` for ``teacher``, ``(video,)`` for ``export``.
      make_job: builds the :class:`LabelJob` (validates the inputs, counts the video's frames).
    """

    out: Path
    done: bool
    kind: str
    source: tuple[str, ...]
    make_job: Callable[[], LabelJob]


def plan_store(
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
) -> StoreRequest:
    """Resolve a request of :func:`ensure_store` (same arguments) without decoding or running anything:
    the store directory, whether a complete matching store is already there, and how to build the job.

    Raises:
      DataError: bad arguments (one line).
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
    model_path = None
    if teacher is not None:
        model_path = Path(model) if model is not None else _default_model(teacher)
    if out is None:
        if lvs is not None:
            inputs: list[str | os.PathLike] = [Path(lvs) / name]
            teacher_id = "lvs"
        elif teacher is not None:
            inputs, teacher_id = [video, model_path], f"{teacher}:{model_path.name}"  # type: ignore[union-attr,list-item]
        else:
            src = tf_export if tf_export is not None else detectron
            inputs, teacher_id = [video, src], f"{tprefix}{Path(src).name}:{tf_class_ids}"  # type: ignore[arg-type,list-item]
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
    done = _matches(out, name, height, width, chunk_size, max_frames, tprefix, g, params)
    if lvs is not None:
        kind, source = "lvs", (str(lvs), name)

        def make_job() -> LabelJob:
            return lvs_job(lvs, name, groups, height, width, chunk_size, max_frames, params)

    elif teacher is not None:
        kind, source = "teacher", (str(video), teacher, str(model_path), str(num_threads))

        def make_job() -> LabelJob:
            return teacher_job(
                video,
                teacher,
                model_path,
                name,
                groups,
                height,
                width,
                chunk_size,
                max_frames,
                params,
                num_threads,
            )

    else:
        kind, source = "export", (str(video),)

        def make_job() -> LabelJob:
            return export_job(
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

    return StoreRequest(out, done, kind, source, make_job)


def ensure_store(out: str | os.PathLike | None = None, *, progress: bool = True, **request: Any) -> Path:
    """Return the directory of a complete label store for the request, precomputing it if needed
    (``request``: the keyword arguments of :func:`plan_store`).

    Exactly one source:
      * ``lvs=DIR, stream=NAME``: LVS stream folder ``DIR/NAME`` (class groups default to ``DIR/streams.json``
        or the paper's groups for the stream);
      * ``video=PATH, teacher=NAME`` (a ``teacher.backends.BACKENDS`` name) (``model`` defaults to ``$JITNET_DATA/models/...``);
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
    req = plan_store(out, **request)
    if req.done:
        return req.out
    return run_job(req.make_job(), req.out, progress)


#: ``--runner`` short names -> Beam runner class names (any other name is passed to Beam as it is).
RUNNERS = {
    "direct": "DirectRunner",
    "flink": "FlinkRunner",
    "spark": "SparkRunner",
    "dataflow": "DataflowRunner",
    "portable": "PortableRunner",
    "prism": "PrismRunner",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m teacher.precompute", description=__doc__.split("\n\n")[0])
    src = p.add_argument_group("source (one of)")
    src.add_argument("--lvs", type=Path, help="LVS root folder (with --stream; with --runner: every stream)")
    src.add_argument(
        "--stream",
        action="append",
        help="stream name (LVS folder name, repeatable; for one video: the label store's name)",
    )
    src.add_argument(
        "--video",
        type=Path,
        action="append",
        help="video file (with --teacher, --tf-export or --detectron); repeat for several stores",
    )
    src.add_argument("--teacher", choices=sorted(BACKENDS), help="TFLite teacher backend (docs/teachers.md)")
    src.add_argument(
        "--model", type=Path, help="TFLite model for --teacher (default: $JITNET_DATA/models/...)"
    )
    src.add_argument("--tf-export", type=Path, help="TF OD API per-frame .npz file or directory")
    src.add_argument("--tf-class-ids", choices=["coco90", "coco80"], default="coco90")
    src.add_argument("--detectron", type=Path, help="Detectron2-style export (.npz/.npy/dir)")
    p.add_argument("--groups", help='class groups, e.g. "person;car,bus,truck;bicycle,motorcycle"')
    p.add_argument("--height", type=int, default=DEFAULT_HEIGHT)
    p.add_argument("--width", type=int, default=DEFAULT_WIDTH)
    p.add_argument(
        "--out",
        type=Path,
        help=f"store directory; with several sources or --runner the folder of one store per stream, "
        f"OUT/<stream> (default under ./{DEFAULT_CACHE}/)",
    )
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK, help="frames per store chunk file")
    p.add_argument("--max-frames", type=int, help="label only the first N frames (of each source)")
    p.add_argument("--fg-weight", type=float, help=argparse.SUPPRESS)  # moved to the run: refused below
    p.add_argument("--score-threshold", type=float, default=RasterParams.score_threshold)
    p.add_argument(
        "--threads",
        type=int,
        help="TFLite interpreter threads (default 2; 1 per Beam worker with --runner)",
    )
    p.add_argument("--no-progress", action="store_true")
    beam = p.add_argument_group("Apache Beam (pip install -e '.[beam]'); other Beam options pass through")
    beam.add_argument(
        "--runner",
        help="label with the Beam pipeline on this runner: direct, flink, spark, dataflow or a runner class",
    )
    beam.add_argument(
        "--range-frames",
        type=int,
        default=256,
        help="frames per Beam work unit (a frame range of one video, whole chunks)",
    )
    return p


def _error(e: BaseException) -> int:
    msg = " ".join(str(e).split()) or type(e).__name__
    print(f"error: {msg}", file=sys.stderr)
    return 2


def _requests(args: argparse.Namespace, threads: int) -> list[StoreRequest]:
    """One :class:`StoreRequest` per source of the command line (one store per video or LVS stream)."""
    videos = args.video or []
    streams = args.stream or []
    common = dict(
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
        num_threads=threads,
    )
    if args.lvs is not None:
        if videos:
            raise DataError("give --lvs or --video, not both")
        if not streams and args.runner:
            if not Path(args.lvs).is_dir():
                raise DataError(f"{args.lvs}: LVS root folder not found")
            streams = sorted(d.name for d in Path(args.lvs).iterdir() if d.is_dir())
            if not streams:
                raise DataError(f"{args.lvs}: no stream folders")
        sources = [dict(lvs=args.lvs, stream=s) for s in streams] or [dict(lvs=args.lvs, stream=None)]
        names = list(streams)
    else:
        if (len(videos) > 1 and streams) or len(streams) > 1:
            raise DataError("--stream names the store of one --video (several --stream need --lvs)")
        sources = [dict(video=v, stream=streams[0] if streams else None) for v in videos] or [dict()]
        names = [streams[0] if streams else Path(v).stem for v in videos]
    several = len(sources) > 1 or bool(args.runner)
    if several:
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise DataError(f"two sources would write the same store {dup[0]!r}: label them in separate runs")
    reqs = []
    for src, name in itertools.zip_longest(sources, names):
        out = args.out / name if (several and args.out is not None and name) else args.out
        reqs.append(plan_store(out, **src, **common))  # type: ignore[arg-type]
    return reqs


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (0 ok, 2 on bad input/arguments)."""
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    if beam_args and not args.runner:
        parser.error(f"unrecognized arguments: {' '.join(beam_args)} (Beam options need --runner)")
    enable_compile_cache()
    keep_freed_memory()
    if args.fg_weight is not None:
        print(
            "error: --fg-weight is a run setting, not a label-store setting: stores keep box regions and "
            "each run weights them (python -m experiments.stream --fg-weight W)",
            file=sys.stderr,
        )
        return 2
    if args.runner:
        try:
            from teacher import beam_pipeline
        except ModuleNotFoundError as e:
            if (e.name or "").split(".")[0] != "apache_beam":
                raise
            return _error(
                DataError(
                    f"--runner {args.runner} needs Apache Beam, the 'beam' extra: pip install -e '.[beam]'"
                )
            )
    try:
        threads = args.threads if args.threads is not None else (1 if args.runner else 2)
        reqs = _requests(args, threads)
        if args.runner:
            outs = beam_pipeline.run_stores(
                reqs,
                runner=RUNNERS.get(args.runner.lower(), args.runner),
                pipeline_args=beam_args,
                range_frames=args.range_frames,
            ).stores
        else:
            outs = [r.out if r.done else run_job(r.make_job(), r.out, not args.no_progress) for r in reqs]
    except (ValueError, OSError) as e:
        return _error(e)
    for out in outs:
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The teacher precompute as an Apache Beam pipeline: many videos (or LVS streams), one store each.

``python -m teacher.precompute --video A.mp4 --video B.mp4 --teacher yolov8_seg --out stores/ --runner direct
--direct_num_workers 2 --direct_running_mode multi_processing`` runs :func:`run_stores`:

1. **Plan (driver).** Each store folder is locked (:func:`jitnet_jax.io.lock_output`; a second pipeline or
   single-process run on it is refused), its header is built (the video's frames are counted once, as in the
   single-process path), a store with other settings is refused, and chunks already on disk are kept: those
   ``meta.json`` records, and whole chunk files a killed pipeline wrote but never recorded
   (:meth:`~jitnet_jax.data.label_store.LabelStoreWriter.adopt_chunks`). The teacher model is loaded once
   here to fail early with one line. The missing chunks become work units: frame ranges of one video, whole
   chunks, ``range_frames`` frames at most.
2. **Label (workers).** :class:`LabelRangeFn` loads the teacher once per worker (``DoFn.setup``); for each
   unit it decodes up to the end of its range (the frames before it are decoded and dropped), runs the
   teacher on the range only, rasterises with the same code as the single-process path
   (:func:`teacher.precompute.label_chunk`) and writes each chunk atomically
   (:func:`~jitnet_jax.data.label_store.write_chunk_file`), emitting ``(store, (chunk, sha256))``.
3. **Finalize (one step per store).** The digests are recorded in ``meta.json``, every chunk is re-verified
   and the store is marked complete (:func:`finalize_store`).

Chunk bytes depend only on the labels, so a store written here is byte-identical to the single-process
precompute's for the same video, teacher and settings. A failure in a worker fails the pipeline with the
worker's one-line message (:class:`PipelineFailed`); stores it did not finish stay incomplete, and a rerun
resumes them. The work units reach the workers through a ``GroupByKey`` on the unit id (a fusion break);
the direct runner deals keys to its workers round-robin, so units are ordered largest first.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from jitnet_jax.data.label_store import DataError, LabelStoreWriter, StoreHeader, write_chunk_file
from jitnet_jax.io import lock_output
from teacher.precompute import StageClock, StoreRequest, label_chunk, teacher_instances

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # gRPC's notes on fork (ffmpeg, workers) are not errors
_root_level = logging.getLogger().level
logging.getLogger().setLevel(logging.ERROR)  # Beam warns at import about optional packages (crcmod)
try:
    import apache_beam as beam
    from apache_beam.metrics.metric import Metrics, MetricsFilter
    from apache_beam.options.pipeline_options import PipelineOptions
finally:
    logging.getLogger().setLevel(_root_level)


class _KnownFailure(logging.Filter):
    """Drops Beam's log records (worker tracebacks and their relay by the runner) of a failure this module
    reports itself in one line: a bad input, not a bug."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            text = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            text += str(record.exc_info[1])
        return "[[jitnet-error:" not in text + (record.exc_text or "")


_KNOWN_FAILURE = _KnownFailure()
for _name in (
    "apache_beam.runners.common",
    "apache_beam.runners.worker.sdk_worker",
    "apache_beam.runners.worker.sdk_worker_main",
    "apache_beam.runners.portability.local_job_service",
    "apache_beam.runners.portability.fn_api_runner.fn_runner",
    "apache_beam.runners.portability.portable_runner",
):
    logging.getLogger(_name).addFilter(_KNOWN_FAILURE)

#: Beam metrics namespace of the stage timings (counters in microseconds) and frame counts.
METRICS_NAMESPACE = "jitnet_precompute"
STAGES = ("teacher_load", "decode", "teacher", "rasterise", "write")
_ERROR = re.compile(r"\[\[jitnet-error: (.*?)\]\]", re.S)


class PipelineFailed(DataError):
    """The pipeline failed; the message is the failing worker's one line (or the runner's last line)."""


@dataclasses.dataclass(frozen=True)
class StoreTask:
    """One store to complete (picklable; shipped to the workers with each unit).

    Attributes:
      out: the store directory.
      header: its :class:`StoreHeader`.
      kind: ``"teacher"`` (``source = (video, teacher, model_path, threads)``) or ``"lvs"``
        (``source = (lvs_root, stream)``).
      source: see ``kind``.
    """

    out: str
    header: StoreHeader
    kind: str
    source: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class WorkUnit:
    """Chunks ``chunks`` (consecutive) of ``task``'s store: frames ``[start, stop)`` of one video."""

    task: StoreTask
    chunks: tuple[int, ...]

    @property
    def start(self) -> int:
        return self.chunks[0] * self.task.header.chunk_size

    @property
    def stop(self) -> int:
        h = self.task.header
        return min((self.chunks[-1] + 1) * h.chunk_size, h.num_frames)


@dataclasses.dataclass
class BeamResult:
    """What :func:`run_stores` did.

    Attributes:
      stores: every requested store directory (all complete).
      frames: frames labelled by the pipeline (0 when everything was already on disk).
      units: work units run.
      seconds: wall time of planning (``plan``) and of the pipeline run (``pipeline``).
      stages: seconds summed over the workers per stage (``decode``, ``teacher``, ``rasterise``, ``write``,
        ``teacher_load``), from the Beam metrics (empty when the runner reports none).
    """

    stores: list[Path]
    frames: int
    units: int
    seconds: dict[str, float]
    stages: dict[str, float]


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _fail(e: BaseException) -> RuntimeError:
    """A worker error carrying its one-line message in a marker the driver finds in the runner's report."""
    return RuntimeError(f"[[jitnet-error: {_one_line(e)}]]")


def plan_units(task: StoreTask, missing: Sequence[int], range_frames: int) -> list[WorkUnit]:
    """Split the missing chunks of ``task`` into units of consecutive chunks, ``range_frames`` frames at most
    (at least one chunk each)."""
    per = max(1, range_frames // task.header.chunk_size)
    units: list[WorkUnit] = []
    run: list[int] = []
    for i in missing:
        if run and (i != run[-1] + 1 or len(run) == per):
            units.append(WorkUnit(task, tuple(run)))
            run = []
        run.append(i)
    if run:
        units.append(WorkUnit(task, tuple(run)))
    return units


class LabelRangeFn(beam.DoFn):
    """Labels one :class:`WorkUnit` per element; emits ``(store dir, (chunk index, sha256))`` per chunk.

    Args:
      teacher, model, threads: the TFLite teacher every ``teacher`` unit uses (loaded once per worker in
        :meth:`setup`); ``teacher=None`` for LVS-only pipelines.
    """

    def __init__(self, teacher: str | None, model: str | None, threads: int) -> None:
        self.teacher_name, self.model, self.threads = teacher, model, threads
        self._teacher: Any = None
        self._load_seconds = 0.0
        self._lvs: dict[tuple[str, str], Any] = {}
        self._timers = {s: Metrics.counter(METRICS_NAMESPACE, f"{s}_us") for s in STAGES}
        self._frames = Metrics.counter(METRICS_NAMESPACE, "frames")

    def setup(self) -> None:
        self._lvs = {}
        if self.teacher_name is None:
            return
        from teacher.backends import make_teacher

        t0 = time.perf_counter()
        try:
            self._teacher = make_teacher(self.teacher_name, self.model, self.threads)
        except (ValueError, OSError) as e:
            raise _fail(e) from None
        self._load_seconds = time.perf_counter() - t0  # counted with the first unit (setup has no metrics)

    def _instances(self, unit: WorkUnit, clock: StageClock) -> Iterator[Any]:
        task = unit.task
        if task.kind == "teacher":
            video = task.source[0]
            return teacher_instances(
                self._teacher, video, task.header.video_frames[0], unit.start, unit.stop, clock
            )
        from teacher.lvs import iter_detections, open_stream

        key = (task.source[0], task.source[1])
        if key not in self._lvs:
            self._lvs[key] = open_stream(key[0], key[1], check_frames=False)
        t0 = time.perf_counter()
        inst = list(iter_detections(self._lvs[key], unit.start, unit.stop))
        clock.add("decode", time.perf_counter() - t0)  # reading the teacher files
        return iter(inst)

    def process(self, element: tuple[int, Iterable[WorkUnit]]) -> Iterator[tuple[str, tuple[int, str]]]:
        for unit in element[1]:
            yield from self._label(unit)

    def _label(self, unit: WorkUnit) -> Iterator[tuple[str, tuple[int, str]]]:
        task = unit.task
        h = task.header
        clock = StageClock()
        if self._load_seconds:
            clock.add("teacher_load", self._load_seconds)
            self._load_seconds = 0.0
        try:
            it = self._instances(unit, clock)
            for i in unit.chunks:
                a, b = i * h.chunk_size, min((i + 1) * h.chunk_size, h.num_frames)
                labels, regions = label_chunk(it, h, a, b, clock)
                t0 = time.perf_counter()
                digest = write_chunk_file(task.out, h, i, labels, regions)
                clock.add("write", time.perf_counter() - t0)
                self._frames.inc(b - a)
                yield task.out, (i, digest)
        except (ValueError, OSError) as e:
            raise _fail(e) from None
        finally:
            for stage, sec in clock.seconds.items():
                self._timers[stage].inc(int(sec * 1e6))


def finalize_store(element: tuple[str, dict[str, list[Any]]]) -> Iterator[str]:
    """Record one store's new chunk digests, re-verify every chunk and mark the store complete; yields its
    directory. ``element`` is ``(out, {"task": [StoreTask], "chunks": [(index, sha256), ...]})``."""
    out, parts = element
    (task,) = parts["task"]
    try:
        writer = LabelStoreWriter(out, task.header)
        writer.record_chunks(dict(parts["chunks"]))
        writer.finalize()
    except (ValueError, OSError) as e:
        raise _fail(e) from None
    yield out


def build_pipeline(
    p: beam.Pipeline,
    tasks: Sequence[StoreTask],
    units: Sequence[WorkUnit],
    teacher: str | None,
    model: str | None,
    threads: int,
) -> None:
    """Add the label and finalize steps for ``tasks`` / ``units`` to ``p``."""
    ordered = sorted(units, key=lambda u: -(u.stop - u.start))  # largest first: round-robin stays balanced
    digests = (
        p
        | "units" >> beam.Create([(k, u) for k, u in enumerate(ordered)], reshuffle=False)
        | "spread units" >> beam.GroupByKey()
        | "label ranges" >> beam.ParDo(LabelRangeFn(teacher, model, threads))
    )
    stores = p | "stores" >> beam.Create([(t.out, t) for t in tasks], reshuffle=False)
    (
        {"task": stores, "chunks": digests}
        | "per store" >> beam.CoGroupByKey()
        | "finalize" >> beam.FlatMap(finalize_store)
    )


def _metrics(result: Any) -> tuple[dict[str, float], int]:
    try:
        counters = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]
    except (AttributeError, KeyError, NotImplementedError, ValueError):
        return {}, 0
    stages: dict[str, float] = {}
    frames = 0
    for c in counters:
        value = c.committed if c.committed is not None else c.attempted
        name = c.key.metric.name
        if name == "frames":
            frames += int(value or 0)
        elif name.endswith("_us"):
            stages[name[:-3]] = stages.get(name[:-3], 0.0) + (value or 0) / 1e6
    return stages, frames


def run_stores(
    requests: Sequence[StoreRequest],
    runner: str = "DirectRunner",
    pipeline_args: Sequence[str] = (),
    range_frames: int = 256,
) -> BeamResult:
    """Complete every requested store with one Beam pipeline (see the module docstring).

    Args:
      requests: from :func:`teacher.precompute.plan_store`; ``teacher`` or ``lvs`` sources, one teacher
        (name, model, threads) for all ``teacher`` requests.
      runner: a Beam runner name (``DirectRunner``, ``FlinkRunner``, ``DataflowRunner`` ...).
      pipeline_args: further Beam pipeline options, e.g. ``["--direct_num_workers", "2",
        "--direct_running_mode", "multi_processing"]``.
      range_frames: frames per work unit (whole chunks, at least one).
    Raises:
      DataError: bad input (one line: missing or undecodable video, teacher model that does not load,
        store made with other settings, ...); :class:`PipelineFailed` for a failure inside the pipeline.
      OutputBusy: another process is writing one of the stores.
    """
    if range_frames < 1:
        raise DataError(f"--range-frames must be >= 1, got {range_frames}")
    if any(r.kind == "export" for r in requests):
        raise DataError(
            "--runner labels --teacher and --lvs sources; label TF/Detectron exports without --runner"
        )
    teachers = {r.source[1:] for r in requests if r.kind == "teacher"}
    if len(teachers) > 1:
        raise DataError("one pipeline runs one teacher model: give the same --teacher/--model for all videos")
    teacher, model, threads = next(iter(teachers)) if teachers else (None, None, "1")
    t_start = time.perf_counter()
    with ExitStack() as locks:
        tasks: list[StoreTask] = []
        units: list[WorkUnit] = []
        for r in requests:
            if r.done:
                continue
            locks.enter_context(lock_output(r.out, "label store"))
            job = r.make_job()  # validates the source, counts the video's frames
            writer = LabelStoreWriter(r.out, job.header)  # refuses a store made with other settings
            writer.adopt_chunks()
            task = StoreTask(str(r.out), job.header, r.kind, r.source)
            tasks.append(task)
            units.extend(plan_units(task, writer.missing_chunks(), range_frames))
        if teacher is not None and units:
            from teacher.backends import make_teacher

            make_teacher(teacher, model, 1)  # a model that does not load fails here, in one line
        t_plan = time.perf_counter() - t_start
        stages: dict[str, float] = {}
        frames = 0
        if tasks:
            # the user's options come after the defaults and win
            quiet = ["--default_sdk_harness_log_level=ERROR"]
            options = PipelineOptions([*quiet, *pipeline_args, f"--runner={runner}"])
            p = beam.Pipeline(options=options)
            build_pipeline(p, tasks, units, teacher, model, int(threads))
            beam_log = logging.getLogger("apache_beam")
            level = beam_log.level
            beam_log.setLevel(logging.ERROR)  # the runner's notes on its own options are not for the user
            try:
                result = p.run()
                result.wait_until_finish()
            except Exception as e:  # the runner wraps a worker's error in its own report
                m = _ERROR.findall(str(e))
                if m:
                    raise PipelineFailed(m[-1]) from None
                lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
                raise PipelineFailed(f"pipeline failed: {lines[-1] if lines else type(e).__name__}") from None
            finally:
                beam_log.setLevel(level)
            stages, frames = _metrics(result)
        t_run = time.perf_counter() - t_start - t_plan
    from jitnet_jax.data.label_store import store_is_complete

    unfinished = [r.out for r in requests if not store_is_complete(r.out)]
    if unfinished:
        raise PipelineFailed(f"{unfinished[0]}: the pipeline ended but the store is not complete")
    return BeamResult(
        [r.out for r in requests], frames, len(units), {"plan": t_plan, "pipeline": t_run}, stages
    )

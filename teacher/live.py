"""The teacher in live mode: backend -> rasteriser -> a label store that grows as labels arrive.

A live run asks for labels one frame at a time (``jitnet_jax.online.live.run_live``). :class:`StoringTeacher`
answers such a request from its :class:`LiveLabelStore` when the frame was labelled before (a resumed run never
runs the teacher twice on a frame), else runs its *labeller* (a TFLite backend followed by the precompute
stage's rasteriser and class groups, :func:`backend_labeller`) and appends the label to the store before
returning it.

Store layout (``<dir>``, written atomically file by file, so a process killed at any moment leaves a valid
store)::

    meta.json              format, version, stream, height, width, class names/groups, teacher, params
    frames/000123.npz      labels uint8 [H, W], weights [H, W] (as the label store keeps them: the region map),
                           purpose ("train" or "audit"), seconds (teacher time of this frame)

Every problem is a one-line :class:`~jitnet_jax.data.label_store.DataError`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jitnet_jax.data.label_store import DataError, atomic_write_bytes
from jitnet_jax.online.live import AUDIT, TRAIN, TeacherLabel, VideoFrames
from teacher.rasterize import Instances, check_instances, rasterize

FORMAT_NAME = "jitnet-live-labels"
FORMAT_VERSION = 1
_FRAME_RE = re.compile(r"^(\d{6,})\.npz$")

#: ``labeller(index, frame) -> (labels uint8 [H, W], weights [H, W])``
Labeller = Callable[[int, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class LiveStoreHeader:
    """What a live label store holds (must match to reuse a store).

    Attributes:
      stream: stream name; height, width: label resolution; class_names: ``background`` + one per group;
      class_groups: COCO names of each group; teacher: e.g. ``yolov8_seg:yolov8n-seg_int8.tflite``;
      params: rasterisation settings.
    """

    stream: str
    height: int
    width: int
    class_names: tuple[str, ...]
    class_groups: tuple[tuple[str, ...], ...]
    teacher: str
    params: tuple[tuple[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "stream": self.stream,
            "height": self.height,
            "width": self.width,
            "class_names": list(self.class_names),
            "class_groups": [list(g) for g in self.class_groups],
            "teacher": self.teacher,
            "params": dict(self.params),
        }


class LiveLabelStore:
    """A sparse, append-only label store: one file per labelled frame (see module docstring).

    Opening a directory that holds a store with a different header raises :class:`DataError` naming the
    first differing field.
    """

    def __init__(self, directory: str | os.PathLike, header: LiveStoreHeader) -> None:
        self.dir = Path(directory)
        self.header = header
        self.frames_dir = self.dir / "frames"
        meta = self.dir / "meta.json"
        want = header.to_json()
        if meta.exists():
            try:
                have = json.loads(meta.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise DataError(f"{meta}: not valid JSON ({e})") from None
            if not isinstance(have, dict) or have.get("format") != FORMAT_NAME:
                raise DataError(f"{meta}: not a {FORMAT_NAME} store")
            for k, v in want.items():
                if have.get(k) != json.loads(json.dumps(v)):
                    raise DataError(
                        f"{meta}: live label store was made with a different {k} ({have.get(k)!r} != {v!r}); "
                        "use another --out directory"
                    )
        self.frames_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.frames_dir.glob(".*.tmp"):
            stale.unlink(missing_ok=True)  # left by a killed writer
        if not meta.exists():
            atomic_write_bytes(meta, (json.dumps(want, indent=1) + "\n").encode())
        self._index = {
            int(m.group(1)): p
            for p in self.frames_dir.iterdir()
            if (m := _FRAME_RE.match(p.name)) is not None
        }

    def __contains__(self, index: int) -> bool:
        return index in self._index

    def __len__(self) -> int:
        return len(self._index)

    def indices(self) -> list[int]:
        """Labelled frames, ascending."""
        return sorted(self._index)

    def _path(self, index: int) -> Path:
        return self.frames_dir / f"{index:06d}.npz"

    def write(
        self, index: int, labels: np.ndarray, weights: np.ndarray, purpose: str, seconds: float
    ) -> None:
        """Append the label of frame ``index`` (atomic: temp file + rename)."""
        h, w = self.header.height, self.header.width
        if labels.shape != (h, w) or weights.shape != (h, w) or labels.dtype != np.uint8:
            raise DataError(
                f"{self._path(index)}: label {labels.shape} {labels.dtype} / weights {weights.shape}, "
                f"expected uint8 {(h, w)}"
            )
        buf = io.BytesIO()
        np.savez_compressed(
            buf, labels=labels, weights=weights, purpose=np.str_(purpose), seconds=np.float64(seconds)
        )
        path = self._path(index)
        atomic_write_bytes(path, buf.getvalue())
        self._index[index] = path

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray, str, float]:
        """``(labels uint8 [H, W], weights [H, W], purpose, seconds)`` of a labelled frame."""
        path = self._index.get(index)
        if path is None:
            raise DataError(f"{self.dir}: frame {index} has no label")
        try:
            with np.load(path, allow_pickle=False) as z:
                labels, weights = z["labels"], z["weights"]
                purpose, seconds = str(z["purpose"]), float(z["seconds"])
        except (KeyError, ValueError, OSError, EOFError) as e:
            raise DataError(f"{path}: corrupt live label file ({e})") from None
        shape = (self.header.height, self.header.width)
        if labels.shape != shape or weights.shape != shape or labels.dtype != np.uint8:
            raise DataError(f"{path}: label has shape {labels.shape} {labels.dtype}, expected {shape} uint8")
        return labels, weights, purpose, seconds


class StoringTeacher:
    """A :class:`~jitnet_jax.online.live.LiveTeacher`: store hit -> stored label, else run the labeller
    and append its label to the store first.

    Args:
      store: where labels go (and come back from on a resumed run).
      labeller: ``(index, frame) -> (labels, weights)``; its wall time is the teacher time of the frame.
    """

    def __init__(self, store: LiveLabelStore, labeller: Labeller) -> None:
        self.store = store
        self.labeller = labeller

    def __call__(self, index: int, frame: np.ndarray, purpose: str) -> TeacherLabel:
        if purpose not in (TRAIN, AUDIT):
            raise ValueError(f"purpose must be {TRAIN!r} or {AUDIT!r}, got {purpose!r}")
        if index in self.store:
            labels, weights, _, _ = self.store.read(index)
            return TeacherLabel(labels, weights, 0.0, False)
        t0 = time.perf_counter()
        labels, weights = self.labeller(index, frame)
        seconds = time.perf_counter() - t0
        self.store.write(index, labels, weights, purpose, seconds)
        return TeacherLabel(labels, np.asarray(weights), seconds, True)


def backend_labeller(
    backend: Callable[[np.ndarray], Instances],
    height: int,
    width: int,
    class_groups: Sequence[Sequence[str]],
    params: Any,
) -> Labeller:
    """A TFLite backend (``teacher.backends``) followed by the precompute stage's rasteriser with
    ``class_groups`` and ``params`` (a ``teacher.precompute.RasterParams``)."""
    from teacher.class_groups import coco_to_label

    lut = coco_to_label(tuple(tuple(g) for g in class_groups))

    def label(index: int, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inst = check_instances(backend(frame), f"teacher output of frame {index}")
        return rasterize(
            inst,
            height,
            width,
            lut,
            score_threshold=params.score_threshold,
            mask_threshold=params.mask_threshold,
            dilation=params.dilation,
        )

    return label


def store_labeller(store_dir: str | os.PathLike) -> Labeller:
    """A labeller that reads a complete label store (``teacher.precompute``): a stand-in teacher that
    gives a live run exactly the labels a store-backed run over that store sees."""
    from jitnet_jax.data.label_store import LabelStore

    store = LabelStore(store_dir)

    def label(index: int, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return store.frame(index)

    return label


@dataclasses.dataclass
class LiveSource:
    """What ``experiments.stream --live`` runs on: the frames, and how to make the teacher.

    Attributes:
      frames: the stream's frames (decoded once).
      header: the live label store's header.
      labeller: the teacher (backend + rasteriser), loaded once.
    """

    frames: VideoFrames
    header: LiveStoreHeader
    labeller: Labeller

    @property
    def info(self) -> Any:
        return self.frames.info

    @property
    def identity(self) -> str:
        """What the labels come from (recorded in a run's fingerprint): the teacher and the videos."""
        vids = ",".join(f"{p}:{os.path.getsize(p)}" for p in self.frames.paths)
        return f"live:{self.header.teacher}:{vids}"

    def open_teacher(self, store_dir: str | os.PathLike) -> StoringTeacher:
        """The teacher with its labels kept in ``store_dir`` (created, or reused when resuming)."""
        return StoringTeacher(LiveLabelStore(store_dir, self.header), self.labeller)

    def measure_latency(
        self, store_dir: str | os.PathLike, record: str | os.PathLike, calls: int = 3
    ) -> float:
        """The teacher's latency on this machine, in ms: frame 0 (the first teacher frame of every run) is
        labelled through the store (the run then reuses that label), then labelled ``calls`` times more
        and timed: the figure is the median of warm calls, not the interpreter's first. Kept in ``record``
        (JSON, written atomically) and read back from there when it exists, so a resumed run uses the same
        figure."""
        record = Path(record)
        if record.exists():
            try:
                return float(json.loads(record.read_text())["teacher_latency_ms"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise DataError(f"{record}: unreadable teacher latency record ({e})") from None
        try:
            _, big = next(iter(self.frames.frames(0)))
        except StopIteration:
            raise DataError(f"stream {self.info.name}: no frames") from None
        self.open_teacher(store_dir)(0, big, TRAIN)
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            self.labeller(0, big)
            times.append((time.perf_counter() - t0) * 1000.0)
        ms = float(np.median(times))
        body = {"teacher_latency_ms": ms, "calls_ms": times, "teacher": self.header.teacher, "frame": 0}
        atomic_write_bytes(record, json.dumps(body, indent=2).encode())
        return ms


def open_live(
    *,
    teacher: str,
    video: str | os.PathLike | None = None,
    lvs: str | os.PathLike | None = None,
    stream: str | None = None,
    model: str | os.PathLike | None = None,
    groups: str | None = None,
    height: int = 180,
    width: int = 320,
    num_threads: int = 2,
) -> LiveSource:
    """Open a video (or an LVS stream's videos) and a TFLite teacher for a live run.

    Class groups and rasterisation follow ``teacher.precompute`` (``--groups``, else the stream's known
    groups, else person | car,bus,truck | bicycle,motorcycle for a plain video).

    Raises:
      DataError: unreadable video, unknown teacher, missing or wrong model file, no frames (one line).
    """
    from teacher.backends import default_model_path, make_teacher
    from teacher.class_groups import group_names
    from teacher.precompute import RasterParams, _groups

    if not teacher:
        raise DataError(
            "--live needs --teacher NAME (yolov8_seg, deeplab, yolov8n-seg-1280, yolov8n-seg-tta)"
        )
    if (video is None) == (lvs is None):
        raise DataError("--live needs exactly one of --video PATH or --lvs DIR --stream NAME")
    if lvs is not None:
        from teacher.lvs import open_stream

        if not stream:
            raise DataError("--lvs needs --stream NAME")
        s = open_stream(Path(lvs), stream)
        paths = [str(p) for p in s.videos]
        g = _groups(groups, stream, Path(lvs))
        name = stream
    else:
        name = stream or Path(video).stem  # type: ignore[arg-type]
        paths = [str(video)]
        g = _groups(groups, name, None, video_source=True)
    model_path = Path(model) if model is not None else default_model_path(teacher)
    frames = VideoFrames(paths, height, width, name, group_names(g), f"{teacher}:{model_path.name}")
    backend = make_teacher(teacher, model_path, num_threads)
    params = RasterParams()
    header = LiveStoreHeader(
        stream=name,
        height=height,
        width=width,
        class_names=group_names(g),
        class_groups=tuple(tuple(x) for x in g),
        teacher=f"{teacher}:{model_path.name}",
        params=tuple(sorted(dataclasses.asdict(params).items())),
    )
    return LiveSource(frames, header, backend_labeller(backend, height, width, g, params))


__all__ = [
    "LiveLabelStore",
    "LiveSource",
    "LiveStoreHeader",
    "StoringTeacher",
    "backend_labeller",
    "open_live",
    "store_labeller",
]

"""On-disk label store: teacher labels and region maps of one stream at the student's resolution.

Layout of a store directory::

    meta.json            format name/version, stream, frame count, height, width, fps, class names and
                         groups, teacher, source videos (path + frame count), chunk size, one entry per chunk
                         file with its sha256, and ``complete`` (true only once every chunk is written)
    labels_00000.npz     compressed; ``labels`` uint8 [n, H, W] (0 background, g+1 group g, 255 ignore)
    labels_00001.npz     and ``regions`` uint8 [n, H, W] (0 ignore, 1 background, 2 inside a dilated
                         teacher box); n == chunk_size except for the last chunk

Format version 2 (this one) stores the region map; version 1 stored float16 loss weights that the engine
read as "> 1: box, > 0: background", so a store made with ``--fg-weight 1`` silently lost its boxes.
Version-1 stores are refused with a one-line message (re-run the precompute: the new store goes to a new
folder). The loss weights of the regions are run settings (``fg_weight``/``bg_weight``), see
``jitnet_jax.online.engine.effective_weight``. docs/formats.md describes the format.

Chunk ``i`` holds frames ``[i * chunk_size, min((i + 1) * chunk_size, num_frames))``.

:class:`LabelStoreWriter` writes chunks atomically (temp file + ``os.replace``), records each checksum in
``meta.json`` (also written atomically) and resumes: chunks already present with a valid checksum are
skipped. Chunk bytes depend only on the arrays (:func:`encode_chunk` stamps every zip entry with a fixed
date), so the same labels give the same files and checksums on every run and every worker; parallel
writers use :func:`write_chunk_file` (no ``meta.json`` update) and one final
:meth:`LabelStoreWriter.record_chunks` + :meth:`LabelStoreWriter.finalize`.
:class:`LabelStore` reads a complete store with random access by frame and a small LRU of chunks,
so memory does not depend on the stream length. Every problem raises :class:`DataError` (a ``ValueError``)
with a one-line message naming the file and what is wrong.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jitnet_jax.data.types import IGNORE_LABEL, REGION_BOX, StreamInfo
from jitnet_jax.io.atomic import atomic_write_bytes, sha256_file

FORMAT_NAME = "jitnet-label-store"
FORMAT_VERSION = 2
META_FILE = "meta.json"


class DataError(ValueError):
    """Bad input data (video, teacher file, label store); the message is one line naming the file."""


def chunk_file_name(index: int) -> str:
    """File name of chunk ``index``, e.g. ``labels_00003.npz``."""
    return f"labels_{index:05d}.npz"


@dataclasses.dataclass(frozen=True)
class StoreHeader:
    """Everything that defines a store's content (all must match to resume an existing store).

    Attributes:
      stream: stream name.
      num_frames: labelled frames (may be fewer than the videos hold, e.g. with ``--max-frames``).
      height, width: label resolution (the student's).
      fps: frames per second of the source video.
      class_names: one per label id, ``class_names[0] == "background"``.
      class_groups: COCO class names of each group; label ``g + 1`` is group ``g``.
      teacher: teacher description, e.g. ``lvs:detectron_large_mask_rcnn_1`` or ``yolov8_seg``.
      videos: source video paths in stream order (absolute).
      video_frames: decoded frame count of each video.
      chunk_size: frames per chunk file.
      params: rasterisation parameters (score threshold, dilation, ...), compared on resume.
    """

    stream: str
    num_frames: int
    height: int
    width: int
    fps: float
    class_names: tuple[str, ...]
    class_groups: tuple[tuple[str, ...], ...]
    teacher: str
    videos: tuple[str, ...]
    video_frames: tuple[int, ...]
    chunk_size: int
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def num_chunks(self) -> int:
        return -(-self.num_frames // self.chunk_size)

    def to_json(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "num_frames": self.num_frames,
            "height": self.height,
            "width": self.width,
            "fps": self.fps,
            "class_names": list(self.class_names),
            "class_groups": [list(g) for g in self.class_groups],
            "teacher": self.teacher,
            "videos": [{"path": p, "frames": n} for p, n in zip(self.videos, self.video_frames)],
            "chunk_size": self.chunk_size,
            "params": dict(self.params),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], source: str) -> StoreHeader:
        try:
            return cls(
                stream=str(d["stream"]),
                num_frames=int(d["num_frames"]),
                height=int(d["height"]),
                width=int(d["width"]),
                fps=float(d["fps"]),
                class_names=tuple(d["class_names"]),
                class_groups=tuple(tuple(g) for g in d["class_groups"]),
                teacher=str(d["teacher"]),
                videos=tuple(str(v["path"]) for v in d["videos"]),
                video_frames=tuple(int(v["frames"]) for v in d["videos"]),
                chunk_size=int(d["chunk_size"]),
                params=tuple(sorted(d.get("params", {}).items())),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{source}: malformed meta.json field ({type(e).__name__}: {e})") from None

    def validate(self) -> None:
        """Check internal consistency; raises :class:`DataError`."""
        if self.num_frames < 1 or self.chunk_size < 1 or self.height < 1 or self.width < 1:
            raise DataError(
                f"store header for {self.stream}: num_frames, chunk_size, height, width must be >= 1"
            )
        if len(self.class_names) != len(self.class_groups) + 1 or self.class_names[0] != "background":
            raise DataError(
                f"store header for {self.stream}: class_names must be 'background' + one per class group"
            )
        if len(self.videos) != len(self.video_frames):
            raise DataError(f"store header for {self.stream}: one frame count per video expected")
        if sum(self.video_frames) < self.num_frames:
            raise DataError(
                f"store header for {self.stream}: videos hold {sum(self.video_frames)} frames, "
                f"fewer than num_frames={self.num_frames}"
            )


def _read_meta(store_dir: Path) -> dict[str, Any]:
    path = store_dir / META_FILE
    if not path.is_file():
        raise DataError(f"{path}: label store meta.json not found (run python -m teacher.precompute first)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise DataError(f"{path}: not a {FORMAT_NAME} meta.json")
    if meta.get("version") == 1:
        raise DataError(
            f"{path}: label store format version 1 (float loss weights) is no longer read; "
            f"re-run the precompute to make a version {FORMAT_VERSION} store (region maps)"
        )
    if meta.get("version") != FORMAT_VERSION:
        raise DataError(
            f"{path}: label store format version {meta.get('version')!r} is not supported "
            f"(this code reads version {FORMAT_VERSION}); re-run the precompute"
        )
    return meta


def _write_meta(
    store_dir: Path, header: StoreHeader, checksums: Sequence[str | None], complete: bool
) -> None:
    meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **header.to_json()}
    meta["region_dtype"] = "uint8"
    meta["chunks"] = [
        {
            "file": chunk_file_name(i),
            "start": i * header.chunk_size,
            "count": min(header.chunk_size, header.num_frames - i * header.chunk_size),
            "sha256": c,
        }
        for i, c in enumerate(checksums)
    ]
    meta["complete"] = bool(complete)
    _write_file(store_dir / META_FILE, (json.dumps(meta, indent=1) + "\n").encode())


def _write_file(path: Path, data: bytes) -> None:
    """:func:`atomic_write_bytes`; a failure (e.g. ``ENOSPC``) is re-raised as a one-line ``OSError`` naming
    ``path`` (the previous content of ``path`` is unchanged)."""
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise OSError(
            e.errno, f"{path}: write failed ({e.strerror or e}); finished chunks are kept"
        ) from None


#: Date stamped on every zip entry of a chunk (the zip format's earliest; what ``np.savez_compressed`` gets
#: from ``zipfile`` on Python 3.11, pinned here so chunk bytes can never come to depend on the clock).
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def encode_chunk(labels: np.ndarray, regions: np.ndarray) -> bytes:
    """The ``.npz`` bytes of one chunk: a deflated zip of ``labels.npy`` and ``regions.npy``, byte for byte
    what ``np.savez_compressed`` writes (with the entry date pinned), read back by ``np.load``.

    Args:
      labels, regions: uint8 ``[n, H, W]`` each.
    Returns:
      the file's bytes; equal arrays always give equal bytes.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, mode="w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, arr in (("labels", labels), ("regions", regions)):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            with z.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)
    return buf.getvalue()


def write_chunk_file(
    store_dir: str | os.PathLike, header: StoreHeader, index: int, labels: np.ndarray, regions: np.ndarray
) -> str:
    """Check and atomically write chunk ``index`` of the store ``header`` describes; ``meta.json`` is not
    touched (parallel writers: one of them records the digests with :meth:`LabelStoreWriter.record_chunks`).

    Args:
      labels: uint8 ``[n, H, W]`` with ``n`` the chunk's frame count.
      regions: the region map, uint8 ``[n, H, W]`` with values 0, 1, 2.
    Returns:
      the hex sha256 of the file written.
    Raises:
      DataError: wrong index, shapes, dtypes or region values.
      OSError: the write failed (one line naming the file; the previous file, if any, is unchanged).
    """
    path = Path(store_dir) / chunk_file_name(index)
    if not 0 <= index < header.num_chunks:
        raise DataError(f"{path}: chunk index {index} out of range ({header.num_chunks} chunks)")
    start = index * header.chunk_size
    shape = (min(header.chunk_size, header.num_frames - start), header.height, header.width)
    if labels.shape != shape or regions.shape != shape:
        raise DataError(
            f"{path}: chunk arrays have shapes {labels.shape} / {regions.shape}, expected {shape}"
        )
    if labels.dtype != np.uint8 or regions.dtype != np.uint8 or regions.max(initial=0) > REGION_BOX:
        raise DataError(
            f"{path}: labels must be uint8 and regions uint8 in 0..2, got {labels.dtype} / {regions.dtype}"
        )
    data = encode_chunk(labels, regions)
    _write_file(path, data)
    return hashlib.sha256(data).hexdigest()


def _decode_chunk(data: bytes, shape: tuple[int, int, int], source: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels and regions of a chunk file's bytes; :class:`DataError` unless both are uint8 ``shape``."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            labels, regions = z["labels"], z["regions"]
    except (KeyError, ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{source}: corrupt label chunk ({e})") from None
    if (
        labels.shape != shape
        or regions.shape != shape
        or labels.dtype != np.uint8
        or regions.dtype != np.uint8
    ):
        raise DataError(
            f"{source}: label chunk has shape {labels.shape} {labels.dtype} / {regions.shape} {regions.dtype}, "
            f"expected {shape} uint8"
        )
    if regions.max(initial=0) > REGION_BOX:
        raise DataError(f"{source}: region values above {REGION_BOX}")
    return labels, regions


def store_is_complete(store_dir: str | os.PathLike) -> bool:
    """True when ``store_dir/meta.json`` exists, has the supported version and ``complete: true``."""
    try:
        return bool(_read_meta(Path(store_dir)).get("complete"))
    except DataError:
        return False


class LabelStoreWriter:
    """Writes (or resumes writing) a label store.

    Usage::

        w = LabelStoreWriter(out_dir, header)
        for i in w.missing_chunks():
            start, stop = w.chunk_range(i)
            w.write_chunk(i, labels, regions)   # uint8 [stop-start, H, W] each
        w.finalize()                            # verifies every checksum, then marks complete

    If ``out_dir`` already holds a store with a different header a :class:`DataError` names the first
    differing field (delete the directory or choose another one); with the same header, chunks whose file
    exists with the recorded sha256 are kept and only the others are listed by :meth:`missing_chunks`.
    """

    def __init__(self, store_dir: str | os.PathLike, header: StoreHeader):
        header.validate()
        self.dir = Path(store_dir)
        self.header = header
        self.dir.mkdir(parents=True, exist_ok=True)
        self._checksums: list[str | None] = [None] * header.num_chunks
        for stale in [*self.dir.glob(".labels_*.tmp"), *self.dir.glob(f".{META_FILE}.*.tmp")]:
            stale.unlink(missing_ok=True)  # left by a killed writer
        meta_path = self.dir / META_FILE
        self._resumed = meta_path.exists()  # chunk files are adopted only into a store with a matching meta
        if self._resumed:
            try:
                meta = _read_meta(self.dir)
            except DataError as e:
                raise DataError(
                    f"{e}; cannot resume it: delete {self.dir} or use another output dir"
                ) from None
            old = StoreHeader.from_json(meta, str(meta_path))
            if old != header:
                field = next(
                    f.name
                    for f in dataclasses.fields(StoreHeader)
                    if getattr(old, f.name) != getattr(header, f.name)
                )
                raise DataError(
                    f"{meta_path}: existing store was made with a different {field} "
                    f"({getattr(old, field)!r} != {getattr(header, field)!r}); delete it or use another output dir"
                )
            for i, entry in enumerate(meta.get("chunks", [])[: header.num_chunks]):
                digest = entry.get("sha256")
                path = self.dir / chunk_file_name(i)
                if digest and path.is_file() and sha256_file(path) == digest:
                    self._checksums[i] = digest
        _write_meta(self.dir, header, self._checksums, complete=False)

    def chunk_range(self, index: int) -> tuple[int, int]:
        """Frames ``[start, stop)`` of chunk ``index``."""
        start = index * self.header.chunk_size
        return start, min(start + self.header.chunk_size, self.header.num_frames)

    def missing_chunks(self) -> list[int]:
        """Indices of chunks not yet written (with a valid checksum)."""
        return [i for i, c in enumerate(self._checksums) if c is None]

    def write_chunk(self, index: int, labels: np.ndarray, regions: np.ndarray) -> None:
        """Atomically write chunk ``index`` and record its checksum in ``meta.json``.

        Args:
          labels: uint8 ``[n, H, W]`` with ``n`` the chunk's frame count.
          regions: the region map, uint8 ``[n, H, W]`` with values 0, 1, 2 (see the module docstring).
        Raises:
          DataError: wrong shapes/dtypes or region values.
          OSError: the write failed (e.g. a full disk); finished chunks and ``meta.json`` stay valid.
        """
        self._checksums[index] = write_chunk_file(self.dir, self.header, index, labels, regions)
        _write_meta(self.dir, self.header, self._checksums, complete=False)

    def adopt_chunks(self) -> list[int]:
        """Record the checksum of every chunk that ``meta.json`` lists as missing but whose file exists and
        reads back whole (the right shapes, dtypes and region values; the zip's CRCs checked): what
        parallel writers (:func:`write_chunk_file`) finished before a kill. Writes ``meta.json`` (still
        incomplete) when any chunk was adopted. Returns the adopted chunk indices."""
        adopted: list[int] = []
        if not self._resumed:
            return adopted  # files without a meta.json of this header are of unknown origin: recomputed
        for i in self.missing_chunks():
            path = self.dir / chunk_file_name(i)
            if not path.is_file():
                continue
            try:
                data = path.read_bytes()
                _decode_chunk(data, self._chunk_shape(i), str(path))
            except (DataError, OSError):
                continue  # recomputed (and replaced atomically) like a missing chunk
            self._checksums[i] = hashlib.sha256(data).hexdigest()
            adopted.append(i)
        if adopted:
            _write_meta(self.dir, self.header, self._checksums, complete=False)
        return adopted

    def record_chunks(self, digests: dict[int, str]) -> None:
        """Record the sha256 of chunks written by :func:`write_chunk_file` (``{index: hex digest}``) and write
        ``meta.json`` once (still incomplete; :meth:`finalize` re-verifies every file)."""
        for i, digest in digests.items():
            if not 0 <= int(i) < self.header.num_chunks:
                raise DataError(f"{self.dir}: chunk index {i} out of range ({self.header.num_chunks} chunks)")
            self._checksums[int(i)] = str(digest)
        _write_meta(self.dir, self.header, self._checksums, complete=False)

    def _chunk_shape(self, index: int) -> tuple[int, int, int]:
        start, stop = self.chunk_range(index)
        return stop - start, self.header.height, self.header.width

    def finalize(self) -> Path:
        """Re-verify every chunk's checksum and atomically mark the store complete; returns the directory."""
        missing = self.missing_chunks()
        if missing:
            raise DataError(
                f"{self.dir}: cannot finalize, {len(missing)} chunk(s) missing (first {missing[0]})"
            )
        for i, digest in enumerate(self._checksums):
            path = self.dir / chunk_file_name(i)
            if not path.is_file() or sha256_file(path) != digest:
                raise DataError(f"{path}: checksum mismatch while finalizing the store")
        _write_meta(self.dir, self.header, self._checksums, complete=True)
        return self.dir


class LabelStore:
    """Random-access reader of a complete label store.

    Chunks are loaded lazily, verified against their sha256 and kept in an LRU of ``cache_chunks`` entries.

    Raises :class:`DataError` for: missing/incomplete store, unsupported version, checksum mismatch,
    corrupt chunk, frame out of range.
    """

    def __init__(self, store_dir: str | os.PathLike, cache_chunks: int = 2):
        self.dir = Path(store_dir)
        meta = _read_meta(self.dir)
        if not meta.get("complete"):
            raise DataError(
                f"{self.dir / META_FILE}: label store is incomplete (precompute was interrupted); "
                "re-run python -m teacher.precompute to finish it"
            )
        self.meta = meta
        self.header = StoreHeader.from_json(meta, str(self.dir / META_FILE))
        chunks = meta.get("chunks", [])
        if len(chunks) != self.header.num_chunks or any(not c.get("sha256") for c in chunks):
            raise DataError(
                f"{self.dir / META_FILE}: chunk list does not cover {self.header.num_frames} frames"
            )
        self._digests = [c["sha256"] for c in chunks]
        self._cache: collections.OrderedDict[int, tuple[np.ndarray, np.ndarray]] = collections.OrderedDict()
        self._cache_size = max(1, cache_chunks)

    @property
    def num_frames(self) -> int:
        return self.header.num_frames

    @property
    def identity(self) -> str:
        """``label-store-v<N>:sha256:<hex>`` of the store's content: its header without the video paths
        (frame counts stay) and every chunk's sha256. Equal for the same labels wherever the files live."""
        head = self.header.to_json()
        head["videos"] = [v["frames"] for v in head["videos"]]
        doc = json.dumps({"header": head, "chunks": self._digests}, sort_keys=True)
        return f"label-store-v{FORMAT_VERSION}:sha256:{hashlib.sha256(doc.encode()).hexdigest()}"

    @property
    def info(self) -> StreamInfo:
        """Stream description at the store's resolution."""
        h = self.header
        return StreamInfo(h.stream, h.num_frames, h.height, h.width, h.fps, h.class_names, h.teacher)

    def __len__(self) -> int:
        return self.header.num_frames

    def _chunk(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        path = self.dir / chunk_file_name(index)
        if not path.is_file():
            raise DataError(f"{path}: label chunk file missing")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != self._digests[index]:
            raise DataError(f"{path}: checksum mismatch (file changed or corrupt); re-run the precompute")
        n = min(self.header.chunk_size, self.header.num_frames - index * self.header.chunk_size)
        shape = (n, self.header.height, self.header.width)
        labels, regions = _decode_chunk(data, shape, str(path))
        self._cache[index] = (labels, regions)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return labels, regions

    def _check(self, frame: int) -> None:
        if not 0 <= frame < self.header.num_frames:
            raise DataError(
                f"{self.dir}: frame {frame} out of range (store has {self.header.num_frames} frames)"
            )

    def frame(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Labels uint8 ``[H, W]`` and region map uint8 ``[H, W]`` of frame ``index``."""
        self._check(index)
        labels, regions = self._chunk(index // self.header.chunk_size)
        j = index % self.header.chunk_size
        return labels[j], regions[j]

    def frames(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Labels uint8 ``[n, H, W]`` and region map uint8 ``[n, H, W]`` of frames ``[start, stop)``."""
        if stop <= start:
            raise DataError(f"{self.dir}: empty frame range [{start}, {stop})")
        self._check(start)
        self._check(stop - 1)
        cs = self.header.chunk_size
        parts = []
        for c in range(start // cs, (stop - 1) // cs + 1):
            labels, regions = self._chunk(c)
            lo, hi = max(start, c * cs) - c * cs, min(stop, (c + 1) * cs) - c * cs
            parts.append((labels[lo:hi], regions[lo:hi]))
        if len(parts) == 1:
            return parts[0][0].copy(), parts[0][1].copy()
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def verify(self) -> None:
        """Check every chunk's checksum (reads the whole store once); raises :class:`DataError`."""
        for i, digest in enumerate(self._digests):
            path = self.dir / chunk_file_name(i)
            if not path.is_file():
                raise DataError(f"{path}: label chunk file missing")
            if sha256_file(path) != digest:
                raise DataError(f"{path}: checksum mismatch (file changed or corrupt); re-run the precompute")


__all__ = [
    "IGNORE_LABEL",
    "DataError",
    "LabelStore",
    "LabelStoreWriter",
    "StoreHeader",
    "chunk_file_name",
    "encode_chunk",
    "store_is_complete",
    "write_chunk_file",
]

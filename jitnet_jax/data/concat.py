"""Multi-scene streams: one stream made by concatenating streams, or segments of them, that share classes.

A *stream spec* names such a stream: parts joined by ``+``, each a stream name with an optional segment
``[start:stop]`` of its frames (half-open, ``start`` defaults to 0, ``stop`` to the stream's end)::

    residential_street1+highway_cctv1+parking_lot1
    residential_street1[0:400]+highway_cctv1+residential_street1[400:]

:func:`parse_stream_spec` reads a spec, :func:`canonical_spec` writes the one spelling every output uses
(``a[0:]`` and ``a[:]`` are ``a``, ``a[:400]`` is ``a[0:400]``), and :class:`ConcatSource` is the
:class:`~jitnet_jax.data.types.StreamSource` of the concatenation: it reads its parts lazily, chunk by chunk,
and records where each scene starts and stops (``scenes``; ``cuts`` for the timeline plot). Every part must
have the same resolution and class names; a mismatch, an unknown part, a malformed spec or a segment past a
part's end is a one-line :class:`ValueError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from jitnet_jax.data.types import Chunk, StreamInfo, StreamSource, pad_chunk

#: One part of a spec: ``(stream name, start frame, stop frame or None for the stream's end)``.
Part = tuple[str, int, int | None]

_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.\-]*"
_PART_RE = re.compile(rf"^({_NAME})(?:\[(\d*):(\d*)\])?$")


def is_constructed(text: str) -> bool:
    """Whether ``text`` is a constructed stream (it joins parts with ``+`` or takes a segment ``[a:b]``)
    rather than one plain stream name."""
    return "+" in text or "[" in text or "]" in text


def parse_stream_spec(text: str) -> list[Part]:
    """Parse a stream spec into its parts.

    Args:
      text: e.g. ``"a[0:400]+b+a[400:]"``.
    Returns:
      ``[(name, start, stop | None), ...]``, e.g. ``[("a", 0, 400), ("b", 0, None), ("a", 400, None)]``.
    Raises:
      ValueError: an empty or malformed part, or an empty segment (``stop <= start``); one line naming
        the spec and the part.
    """
    text = text.strip()
    if not text:
        raise ValueError("stream spec is empty")
    parts: list[Part] = []
    for i, raw in enumerate(text.split("+"), 1):
        raw = raw.strip()
        m = _PART_RE.match(raw)
        if m is None:
            shown = repr(raw) if raw else "an empty part"
            raise ValueError(
                f"stream spec {text!r}: part {i} is {shown}; expected NAME or NAME[start:stop] "
                "(e.g. residential_street1[0:400])"
            )
        name, a, b = m.group(1), m.group(2), m.group(3)
        start = int(a) if a else 0
        stop = int(b) if b else None
        if stop is not None and stop <= start:
            raise ValueError(f"stream spec {text!r}: part {i} ({raw}) is an empty segment")
        parts.append((name, start, stop))
    return parts


def part_spec(part: Part) -> str:
    """The canonical spelling of one part: ``a``, ``a[400:]`` or ``a[0:400]``."""
    name, start, stop = part
    if stop is None:
        return name if start == 0 else f"{name}[{start}:]"
    return f"{name}[{start}:{stop}]"


def canonical_spec(parts: Sequence[Part] | str) -> str:
    """The one spelling of a spec that every output uses (parts joined by ``+``, see :func:`part_spec`)."""
    if isinstance(parts, str):
        parts = parse_stream_spec(parts)
    return "+".join(part_spec(p) for p in parts)


def spec_slug(text: str) -> str:
    """A folder name for a stream or spec: a plain name unchanged, a spec without ``[``, ``]`` and ``:``
    (``a[0:400]+b`` -> ``a@0-400+b``, ``a[400:]`` -> ``a@400-``). Distinct canonical specs give distinct
    slugs (stream names hold no ``@``)."""
    if not is_constructed(text):
        return text
    try:
        parts = parse_stream_spec(text)
    except ValueError:  # not a spec (e.g. a video's stem with brackets): replace the awkward characters
        return re.sub(r"[\[\]:]", "_", text)
    out = []
    for name, start, stop in parts:
        if stop is None and start == 0:
            out.append(name)
        else:
            out.append(f"{name}@{start}-{'' if stop is None else stop}")
    return "+".join(out)


def part_extents(parts: Sequence[Part]) -> dict[str, int | None]:
    """Frames each named stream must have for ``parts``: the largest segment stop, or None (the whole
    stream) when a segment runs to the stream's end. Keys in order of first appearance."""
    need: dict[str, int | None] = {}
    for name, _, stop in parts:
        if name in need and need[name] is None:
            continue
        if stop is None:
            need[name] = None
        else:
            prev = need.get(name, 0)
            need[name] = max(prev, stop) if prev is not None else None
    return need


@dataclasses.dataclass(frozen=True)
class Scene:
    """One part of a constructed stream.

    Attributes:
      name: the source stream's name.
      part: the part as the spec spells it (e.g. ``residential_street1[400:]``).
      source_start, source_stop: the frames ``[source_start, source_stop)`` of the source stream.
      start, stop: where they are in the constructed stream, ``[start, stop)``.
    """

    name: str
    part: str
    source_start: int
    source_stop: int
    start: int
    stop: int

    def to_json(self) -> dict[str, Any]:
        """``{"name", "part", "source_frames": [a, b], "frames": [start, stop]}``."""
        return {
            "name": self.name,
            "part": self.part,
            "source_frames": [self.source_start, self.source_stop],
            "frames": [self.start, self.stop],
        }


class ConcatSource:
    """The stream of ``parts`` played one after another.

    Args:
      parts: ``[(source, start, stop | None), ...]``: frames ``[start, stop)`` of each source (``stop``
        None: to its end). A source may appear in several parts.
      name: ``info.name``; default the canonical spec of the parts (named by their sources' names).

    Attributes:
      info: :class:`StreamInfo` of the concatenation: the parts' resolution and class names, their
        frame counts summed, ``fps`` the parts' rate (when they differ: frames over the parts' total
        duration), ``teacher``
        the parts' teacher (their distinct teachers joined by ``+``).
      scenes: one :class:`Scene` per part, in stream order.
      cuts: the stream frame where each scene after the first starts (drawn by the timeline plot).

    Raises:
      ValueError: no parts, a segment past its source's end, or parts of different resolution or
        class names (one line naming the parts).
    """

    def __init__(self, parts: Sequence[tuple[StreamSource, int, int | None]], name: str | None = None):
        if not parts:
            raise ValueError("a constructed stream needs at least one part")
        spec = name or canonical_spec([(s.info.name, a, b) for s, a, b in parts])
        resolved: list[tuple[StreamSource, int, int]] = []
        scenes: list[Scene] = []
        first = parts[0][0].info
        pos = 0
        duration = 0.0
        teachers: list[str] = []
        for src, start, stop in parts:
            info = src.info
            label = part_spec((info.name, start, stop))
            end = info.num_frames if stop is None else stop
            if not 0 <= start < info.num_frames or end > info.num_frames or end <= start:
                raise ValueError(
                    f"stream {spec}: part {label} is past the end of {info.name} ({info.num_frames} frames)"
                )
            if (info.height, info.width) != (first.height, first.width):
                raise ValueError(
                    f"stream {spec}: part {label} is {info.height}x{info.width}, part "
                    f"{first.name} is {first.height}x{first.width}"
                )
            if info.class_names != first.class_names:
                raise ValueError(
                    f"stream {spec}: part {label} has classes {list(info.class_names[1:])}, part "
                    f"{first.name} has {list(first.class_names[1:])}; the parts must share class groups"
                )
            resolved.append((src, start, end))
            scenes.append(Scene(info.name, label, start, end, pos, pos + end - start))
            pos += end - start
            duration += (end - start) / info.fps if info.fps and info.fps > 0 else 0.0
            if info.teacher not in teachers:
                teachers.append(info.teacher)
        self._parts = tuple(resolved)
        self.scenes: tuple[Scene, ...] = tuple(scenes)
        self.cuts: tuple[int, ...] = tuple(sc.start for sc in scenes[1:])
        rates = {float(s.info.fps) for s, _, _ in resolved}
        fps = rates.pop() if len(rates) == 1 else (pos / duration if duration > 0 else first.fps)
        self.info = StreamInfo(
            spec, pos, first.height, first.width, float(fps), first.class_names, "+".join(teachers)
        )

    def __len__(self) -> int:
        return self.info.num_frames

    @property
    def identity(self) -> str:
        """``concat:sha256:<hex>`` of each part's identity (its source's ``identity``, else its type and
        name) and frame range, in order: recorded in a run's fingerprint."""
        doc = [
            [str(getattr(src, "identity", f"{type(src).__name__}:{src.info.name}")), a, b]
            for src, a, b in self._parts
        ]
        return "concat:sha256:" + hashlib.sha256(json.dumps(doc).encode()).hexdigest()

    def scenes_json(self) -> list[dict[str, Any]]:
        """The scenes as JSON (:meth:`Scene.to_json`)."""
        return [sc.to_json() for sc in self.scenes]

    def chunks(self, chunk_size: int, start: int = 0) -> Iterator[Chunk]:
        """Yield :class:`Chunk` s of ``chunk_size`` frames from stream frame ``start``; the last one is
        padded. Each part is read lazily through its source's ``chunks`` (a part's reader is closed as
        soon as its segment ends), so memory holds one chunk per open reader.

        Raises:
          ValueError: ``chunk_size < 1`` or ``start`` outside the stream.
        """
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        total = self.info.num_frames
        if not 0 <= start < total:
            raise ValueError(f"stream {self.info.name}: start frame {start} out of range ({total} frames)")
        h, w = self.info.height, self.info.width
        frames = np.empty((chunk_size, h, w, 3), np.uint8)
        labels = np.empty((chunk_size, h, w), np.uint8)
        regions = np.empty((chunk_size, h, w), np.uint8)
        k = 0
        chunk_start = start
        for (src, a, b), sc in zip(self._parts, self.scenes):
            if sc.stop <= start:
                continue
            pos = a + max(0, start - sc.start)  # first source frame to read
            reader = src.chunks(chunk_size, pos)
            try:
                for c in reader:
                    n = min(int(c.valid.sum()), b - pos)
                    i = 0
                    while i < n:
                        take = min(n - i, chunk_size - k)
                        frames[k : k + take] = c.frames[i : i + take]
                        labels[k : k + take] = c.labels[i : i + take]
                        regions[k : k + take] = c.regions[i : i + take]
                        k += take
                        i += take
                        if k == chunk_size:
                            yield pad_chunk(
                                frames.copy(), labels.copy(), regions.copy(), chunk_size, chunk_start
                            )
                            chunk_start += k
                            k = 0
                    pos += n
                    if pos >= b:
                        break
            finally:
                close = getattr(reader, "close", None)
                if close is not None:
                    close()
            if pos < b:
                raise ValueError(
                    f"stream {self.info.name}: part {sc.part} ended at source frame {pos}, expected {b}"
                )
        if k:
            yield pad_chunk(frames[:k].copy(), labels[:k].copy(), regions[:k].copy(), chunk_size, chunk_start)


def scene_scores(scenes: Sequence[dict[str, Any]], per_frame: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Each scene of a constructed stream (``ConcatSource.scenes_json``: name, part, ``source_frames`` and
    ``frames`` ``[start, stop)``) with the run's scores on the frames of it that were processed:
    ``frames_run``, ``miou`` (foreground, NaN when no foreground class appears), ``teacher_frames`` and
    ``updates`` (per-frame arrays as a run's ``per_frame`` holds them: ``frame`` int ``[N]``, ``teacher``
    and ``updates`` int ``[N]``, ``tp``/``fp``/``fn`` int ``[N, C]``)."""
    from jitnet_jax.student.metrics import iou_from_counts

    frame = np.asarray(per_frame["frame"])
    out = []
    for sc in scenes:
        a, b = sc["frames"]
        m = (frame >= a) & (frame < b)
        row = {**sc, "frames_run": int(m.sum())}
        if m.any():
            counts = (np.asarray(per_frame[k])[m].sum(0) for k in ("tp", "fp", "fn"))
            row["miou"] = iou_from_counts(*counts)["miou"]
            row["teacher_frames"] = int(np.asarray(per_frame["teacher"])[m].sum())
            row["updates"] = int(np.asarray(per_frame["updates"])[m].sum())
        out.append(row)
    return out


def open_concat(
    spec: str, open_part: Callable[[str, int | None], StreamSource], name: str | None = None
) -> ConcatSource:
    """The :class:`ConcatSource` of a stream spec.

    Args:
      spec: e.g. ``"a[0:400]+b+a[400:]"``.
      open_part: ``(stream name, frames needed or None for all) -> source``; called once per distinct
        name (the source is shared by that name's parts), with the largest segment stop of the name
        (:func:`part_extents`).
      name: ``info.name``; default the canonical spec.
    Raises:
      ValueError: a malformed spec, an unknown part (as ``open_part`` reports it), mismatched parts or
        a segment past a part's end (one line).
    """
    parts = parse_stream_spec(spec)
    opened = {n: open_part(n, need) for n, need in part_extents(parts).items()}
    return ConcatSource([(opened[n], a, b) for n, a, b in parts], name=name or canonical_spec(parts))

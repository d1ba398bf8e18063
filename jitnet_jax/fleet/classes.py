"""A fleet's classes: one head over the union of the cameras' class groups, a mask per camera.

Every camera's stream names its classes (``StreamInfo.class_names``, ``background`` first: one name per
label id). The fleet's student has one output per name in the union, in first-seen order (background
first); camera ``i`` sees only its own (``masks[i]``, :func:`~jitnet_jax.student.step.apply_model`), and its
labels are renumbered into the union on the host (:class:`RemappedSource`, a lookup table per camera).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from jitnet_jax.data.types import IGNORE_LABEL, Chunk, StreamInfo, StreamSource


def union_classes(class_lists: Sequence[Sequence[str]]) -> tuple[str, ...]:
    """The union of class-name lists in first-seen order, ``background`` first.

    Raises a one-line ``ValueError`` if a list does not start with ``background`` or repeats a name."""
    out: list[str] = []
    for i, names in enumerate(class_lists):
        if not names or names[0] != "background":
            raise ValueError(f"camera {i}: class names must start with 'background', got {list(names)[:3]}")
        if len(set(names)) != len(names):
            raise ValueError(f"camera {i}: class names repeat a name: {list(names)}")
        out.extend(n for n in names if n not in out)
    return tuple(out)


def class_mask(names: Sequence[str], union: Sequence[str]) -> np.ndarray:
    """bool ``[len(union)]``: True for the classes of ``names`` (background included)."""
    own = set(names)
    return np.asarray([n in own for n in union], bool)


def label_lut(names: Sequence[str], union: Sequence[str]) -> np.ndarray:
    """uint8 ``[256]`` lookup table from a camera's label ids to the union's (``IGNORE_LABEL`` stays)."""
    index = {n: j for j, n in enumerate(union)}
    lut = np.full(256, IGNORE_LABEL, np.uint8)
    for i, n in enumerate(names):
        lut[i] = index[n]
    return lut


class RemappedSource:
    """A :class:`~jitnet_jax.data.types.StreamSource` whose labels are renumbered into ``union``.

    Frames and region maps pass through unchanged; ``info.class_names`` becomes ``union`` (the stream's
    name, size and fps are kept). An identity mapping (the camera already has the union's classes in its
    order) passes labels through untouched."""

    def __init__(self, source: StreamSource, union: Sequence[str]) -> None:
        self.source = source
        names = source.info.class_names
        self.lut = label_lut(names, union)
        self.passthrough = tuple(names) == tuple(union)
        self.info: StreamInfo = StreamInfo(
            source.info.name,
            source.info.num_frames,
            source.info.height,
            source.info.width,
            source.info.fps,
            tuple(union),
            source.info.teacher,
        )
        self.own_classes: tuple[str, ...] = tuple(names)

    def __getattr__(self, name: str) -> object:  # scenes_json, cuts, identity, ... of the wrapped source
        return getattr(self.source, name)

    def chunks(self, chunk_size: int, start: int = 0) -> Iterator[Chunk]:
        """The wrapped source's chunks with labels uint8 ``[T, H, W]`` renumbered into the union."""
        for c in self.source.chunks(chunk_size, start):
            yield c if self.passthrough else c._replace(labels=self.lut[c.labels])

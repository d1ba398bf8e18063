"""Per-frame rows of a run: what every method reports for every frame, and how chunks of them add up.

A run's per-frame dict holds numpy arrays over its frames: ``frame`` int64 ``[N]``, ``teacher`` bool ``[N]``
(the teacher ran on the frame), ``updates`` int32 ``[N]``, ``delta`` int32 ``[N]`` (the stride after the
frame), ``acc`` float32 ``[N]`` (the last accuracy check measured at the frame; 0 where none ran) and
``tp``/``fp``/``fn`` int64 ``[N, C]`` (the frame's confusion against its label). A run with a zoo
(``OnlineConfig.zoo_size > 0``) also holds :data:`ZOO_KEYS`, int32 ``[N]`` each: the zoo's forward passes,
switches and stores at the frame.
"""

from __future__ import annotations

import numpy as np

from jitnet_jax.data.types import Chunk

PER_FRAME_KEYS = ("frame", "teacher", "updates", "delta", "acc", "tp", "fp", "fn")
#: The per-frame keys a run with a zoo adds (``online.engine.ZOO_STATS``).
ZOO_KEYS = ("zoo_forward", "zoo_switch", "zoo_store")


def empty_per_frame(num_classes: int) -> dict[str, np.ndarray]:
    """Per-frame arrays of length 0 (the start of a fresh run)."""
    out = {
        "frame": np.zeros(0, np.int64),
        "teacher": np.zeros(0, bool),
        "updates": np.zeros(0, np.int32),
        "delta": np.zeros(0, np.int32),
        "acc": np.zeros(0, np.float32),
    }
    for k in ("tp", "fp", "fn"):
        out[k] = np.zeros((0, num_classes), np.int64)
    return out


def chunk_per_frame(chunk: Chunk, stats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Host per-frame rows of one chunk's stats (numpy; padding frames, which follow the valid ones, dropped)."""
    n = int(chunk.valid.sum())
    conf = np.asarray(stats["confusion"][:n], np.int64)
    tp = np.diagonal(conf, axis1=1, axis2=2)
    rows = {
        "frame": np.arange(chunk.start, chunk.start + n, dtype=np.int64),
        "teacher": np.asarray(stats["teacher"][:n], bool),
        "updates": np.asarray(stats["updates"][:n], np.int32),
        "delta": np.asarray(stats["delta"][:n], np.int32),
        "acc": np.asarray(stats["acc"][:n], np.float32),
        "tp": tp,
        "fp": conf.sum(1) - tp,
        "fn": conf.sum(2) - tp,
    }
    rows.update({k: np.asarray(stats[k][:n], np.int32) for k in ZOO_KEYS if k in stats})
    return rows


def concat_per_frame(parts: list[dict[str, np.ndarray]], num_classes: int) -> dict[str, np.ndarray]:
    """Concatenate per-frame dicts."""
    if not parts:
        return empty_per_frame(num_classes)
    keys = PER_FRAME_KEYS + tuple(k for k in ZOO_KEYS if all(k in p for p in parts))
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}


def confusion_from_per_frame(per_frame: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stream totals (tp, fp, fn), each int64 [C]."""
    return per_frame["tp"].sum(0), per_frame["fp"].sum(0), per_frame["fn"].sum(0)


class PerFrameBuffer:
    """Per-frame rows appended chunk by chunk into arrays that grow by doubling.

    ``view()`` returns the rows so far as numpy views (no copy), so handing "the rows so far" to a callback
    after every chunk costs O(1) instead of re-concatenating the whole stream each time. A view stays
    correct after later appends (rows are never rewritten), but does not grow.
    """

    def __init__(self, num_classes: int, initial: dict[str, np.ndarray] | None = None) -> None:
        self._data = empty_per_frame(num_classes)
        self._n = 0
        if initial is not None and len(initial["frame"]):
            self.append(initial)

    def __len__(self) -> int:
        return self._n

    def append(self, rows: dict[str, np.ndarray]) -> None:
        k = len(rows["frame"])
        for key in ZOO_KEYS:  # a zoo run's extra columns (zeros for any rows before them)
            if key in rows and key not in self._data:
                self._data[key] = np.zeros(len(self._data["frame"]), np.int32)
        need = self._n + k
        cap = len(self._data["frame"])
        if need > cap:
            new_cap = max(need, 2 * cap, 256)
            grown = {}
            for key, arr in self._data.items():
                buf = np.zeros((new_cap, *arr.shape[1:]), arr.dtype)
                buf[: self._n] = arr[: self._n]
                grown[key] = buf
            self._data = grown
        for key in PER_FRAME_KEYS:
            self._data[key][self._n : need] = rows[key]
        for key in ZOO_KEYS:
            if key in rows:
                self._data[key][self._n : need] = rows[key]
        self._n = need

    def view(self) -> dict[str, np.ndarray]:
        """The rows so far (views into the buffer)."""
        return {k: v[: self._n] for k, v in self._data.items()}

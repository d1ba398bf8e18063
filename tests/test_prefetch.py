"""The prefetch thread: items in order, errors forwarded, and a consumer that stops early never leaves the
producer blocked on a full queue or the source unclosed."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from jitnet_jax.data.prefetch import prefetch

#: Seconds to wait for the producer thread to end: a bound for a hang, not a speed requirement.
JOIN_S = 30.0


class Source:
    """A generator source that records its thread and whether its ``finally`` ran (as a video reader's
    would close the file there)."""

    def __init__(self, n: int | None) -> None:
        self.n = n
        self.thread: threading.Thread | None = None
        self.closed = threading.Event()
        self.exhausted = threading.Event()

    def __iter__(self) -> Iterator[int]:
        self.thread = threading.current_thread()
        try:
            i = 0
            while self.n is None or i < self.n:
                yield i
                i += 1
            self.exhausted.set()
        finally:
            self.closed.set()


def test_items_in_order_and_errors_forwarded() -> None:
    assert list(prefetch(range(7), depth=2)) == list(range(7))

    def bad() -> Iterator[int]:
        yield 1
        raise OSError("frame 1: truncated")

    with pytest.raises(OSError, match="frame 1: truncated"):
        list(prefetch(bad(), depth=1))
    with pytest.raises(TypeError):
        list(prefetch(3, depth=1))  # type: ignore[arg-type]


def test_early_stop_ends_the_producer_and_closes_the_source() -> None:
    """An endless source: the consumer takes one item and stops while the producer waits on a full queue."""
    src = Source(None)
    gen = iter(src)  # held here, so only the producer can close it (not garbage collection)
    it = prefetch(gen, depth=1)
    assert next(it) == 0
    it.close()
    assert src.thread is not None and src.thread is not threading.current_thread()
    src.thread.join(JOIN_S)
    assert not src.thread.is_alive(), "the prefetch thread did not end after the consumer stopped"
    assert src.closed.is_set(), "the source iterator was not closed"


def test_end_marker_does_not_block_after_the_consumer_stops() -> None:
    """A finite source that fills the queue: the producer is left putting the end marker when the
    consumer stops."""
    src = Source(2)
    it = prefetch(src, depth=1)
    assert next(it) == 0
    assert src.exhausted.wait(JOIN_S)  # item 1 is queued (the queue is full), the end marker waits
    it.close()
    assert src.thread is not None
    src.thread.join(JOIN_S)
    assert not src.thread.is_alive(), "the prefetch thread blocked on its end marker"
    assert src.closed.is_set()

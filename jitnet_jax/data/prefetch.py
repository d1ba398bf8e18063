"""Background-thread prefetching of host-side chunks (decode/rasterise while the device computes)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_END = object()
#: Seconds a blocked ``put`` waits before it looks at the stop flag again.
_POLL_S = 0.1


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate ``items`` in a daemon thread, keeping up to ``depth`` items ready.

    Exceptions raised by the producer are re-raised in the consumer. Closing the generator early (or
    leaving a loop over it) stops the producer after its current item: no ``put`` blocks once the
    consumer has stopped, and the producer closes the source iterator (``close()``, e.g. a video
    reader's) when it ends, whether the items ran out, raised, or the consumer stopped.
    """
    q: queue.Queue[object] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(obj: object) -> bool:
        """Queue ``obj`` unless the consumer stops first; True when queued."""
        while not stop.is_set():
            try:
                q.put(obj, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        it: Iterator[T] | None = None
        try:
            it = iter(items)
            for item in it:
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:  # noqa: BLE001 - forwarded to the consumer
            put(_Raised(exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - the source is done with either way
                    pass

    thread = threading.Thread(target=produce, daemon=True, name="chunk-prefetch")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()

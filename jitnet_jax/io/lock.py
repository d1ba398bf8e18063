"""Exclusive locks on output folders: one process writes a run, sweep, table or label store at a time.

:func:`lock_output` creates the folder if needed and takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on
``<folder>/.lock``. The kernel drops the lock when the holder exits for any reason (including SIGKILL),
so a stale lock file never blocks a later run; the file itself stays (it only records the last
holder's pid and command for the refusal message). A second process asking for the same folder is
refused at once with :class:`OutputBusy`, a one-line ``ValueError``. Locks are advisory and
per-open-file: two :class:`FolderLock` objects on one folder conflict even inside one process.
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path
from typing import Any

LOCK_FILE = ".lock"


class OutputBusy(ValueError):
    """The output folder is locked by another process (one-line message naming the folder and holder)."""


class FolderLock:
    """An exclusive, non-blocking lock on an output folder; a context manager.

    Args:
      folder: the output folder (created with its parents when missing).
      what: how the refusal names the folder, e.g. ``"run"`` or ``"label store"``.

    Raises (on :meth:`acquire` / ``__enter__``):
      ValueError: ``folder`` exists and is not a folder.
      OutputBusy: another process holds the lock.
    """

    def __init__(self, folder: str | os.PathLike, what: str = "output folder") -> None:
        self.folder = Path(folder)
        self.what = what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> FolderLock:
        if self._fd is not None:
            return self
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"{self.folder}: exists and is not a folder; pick another output path")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise ValueError(
                f"{self.folder}: a parent of this path is a file; pick another output path"
            ) from None
        path = self.folder / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").split("\n")[0].strip()
            except OSError:
                holder = ""
            os.close(fd)
            who = f" ({holder})" if holder else ""
            raise OutputBusy(
                f"{self.folder}: {self.what} is in use by another process{who}; wait for it or pick another output"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {' '.join(sys.argv)[:150]}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:  # a forgotten lock is released with its object
        self.release()


def lock_output(folder: str | os.PathLike, what: str = "output folder") -> FolderLock:
    """Acquire and return a :class:`FolderLock` on ``folder`` (release it, or let the process end)."""
    return FolderLock(folder, what).acquire()

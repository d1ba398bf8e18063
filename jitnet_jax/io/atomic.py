"""Atomic file writes: a reader sees the old file or the new one, never a partial one.

The data goes to a temporary file in the destination's folder (same file system), is flushed and
``fsync``-ed, then ``os.replace``-d over the destination. A failure anywhere (e.g. ``ENOSPC``, a kill)
leaves the previous file untouched; the temporary file is removed on an exception, and a temp file left
by a killed process (``.<name>.*.tmp``) is harmless and may be deleted by the next writer.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory and ``os.replace``.

    Raises:
      OSError: the write failed (the previous content of ``path``, if any, is unchanged).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 ``text``."""
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def path_digest(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of a file's bytes, or of a folder's files (relative names and contents, sorted).

    Raises:
      ValueError: ``path`` does not exist.
    """
    p = Path(path)
    if p.is_file():
        return "sha256:" + sha256_file(p)
    if not p.is_dir():
        raise ValueError(f"{p}: not found")
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        h.update(f"{f.relative_to(p).as_posix()}\0{sha256_file(f)}\n".encode())
    return "sha256:" + h.hexdigest()

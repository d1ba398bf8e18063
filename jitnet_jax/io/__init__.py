"""File-system safety shared by every job: atomic writes and exclusive output-folder locks."""

from jitnet_jax.io.atomic import atomic_write_bytes, atomic_write_text, path_digest, sha256_file
from jitnet_jax.io.lock import LOCK_FILE, FolderLock, OutputBusy, lock_output

__all__ = [
    "LOCK_FILE",
    "FolderLock",
    "OutputBusy",
    "atomic_write_bytes",
    "atomic_write_text",
    "lock_output",
    "path_digest",
    "sha256_file",
]

"""Keep freed host memory inside the process, so XLA:CPU does not page-fault its buffers in on every call.

Why: XLA:CPU allocates one temp buffer per execution of a compiled program (43 MB for JITNet's train step
at 180x320, 4 classes) and frees it at the end. glibc hands every block above its mmap threshold (at most
32 MB) straight back to the kernel, so the next call maps the buffer afresh and takes a page fault on
each 4 KiB page: about 10,400 faults and 20 ms per train-step call on this CPU, a fifth of the step
(``experiments/profile.py``; docs/performance.md has the numbers). :func:`keep_freed_memory` sets glibc's
``M_MMAP_MAX`` to 0 (large blocks come from the heap too) and ``M_TRIM_THRESHOLD`` to its maximum (freed
heap memory is kept for reuse), so a repeated call reuses the same pages. The cost: the process keeps its
peak host memory until it exits.

The limit: XLA runs a program on its own threads, and glibc serves those threads from per-thread arenas whose
heaps are at most 64 MB, so a temp buffer above that is mapped afresh on every call whatever these settings say
(the 360x640 train step's 154 MB: ~39,400 faults per call either way). ``M_ARENA_MAX=1`` would put every
thread on the main heap, but it slowed the 180x320 step from ~69 to ~90 ms here (threads wait on one lock), so
it is not set.

Entry points call it at the top of ``main()``, next to ``enable_compile_cache``; importing this module
changes nothing. ``JITNET_KEEP_FREED_MEMORY=0`` turns it off. Other C libraries (musl, macOS, Windows)
are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from collections.abc import Mapping

from jitnet_jax.compile_cache import OFF_VALUES

ENV_VAR = "JITNET_KEEP_FREED_MEMORY"

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
_TRIM_MAX = 2**31 - 1  # mallopt takes an int


def keep_freed_memory(environ: Mapping[str, str] | None = None) -> bool:
    """Make glibc's malloc keep freed memory for reuse (see the module docstring).

    Args:
      environ: the environment to read for ``JITNET_KEEP_FREED_MEMORY`` (default ``os.environ``).
    Returns:
      True when glibc accepted both settings; False when turned off by the environment, or when the C
      library is not glibc.
    """
    env = os.environ if environ is None else environ
    if env.get(ENV_VAR, "").strip().lower() in OFF_VALUES:
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, _TRIM_MAX))

"""JAX's persistent compilation cache, on by default for every command.

Where compiled programs are kept (first match wins):
  1. the command's ``--compile-cache PATH|off`` flag (where the CLI has one);
  2. the ``JITNET_COMPILE_CACHE`` environment variable (a folder, or ``off``);
  3. ``$XDG_CACHE_HOME/jitnet_jax/xla``, by default ``~/.cache/jitnet_jax/xla``.

Every program is cached, however small or quick to compile (JAX's defaults skip programs that compile
in under a second), so a second identical run compiles nothing. The folder only holds XLA executables
keyed by program, jax/jaxlib version and device; it can be deleted at any time. Entry points call
:func:`enable_compile_cache` at the top of ``main()``, before anything is compiled (importing this
module does not import jax).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

ENV_VAR = "JITNET_COMPILE_CACHE"
OFF_VALUES = ("off", "none", "0", "false", "no")


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/jitnet_jax/xla`` (``~/.cache/jitnet_jax/xla`` when XDG_CACHE_HOME is unset)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "jitnet_jax" / "xla"


def resolve_cache_dir(
    setting: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None
) -> Path | None:
    """The cache folder for ``setting`` (a flag value: a path or ``off``; None = not given), then
    ``$JITNET_COMPILE_CACHE``, then :func:`default_cache_dir`. Returns None when the cache is off."""
    env = os.environ if environ is None else environ
    value = os.fspath(setting) if setting is not None else env.get(ENV_VAR)
    if value is None or value.strip() == "":
        return default_cache_dir(env)
    if value.strip().lower() in OFF_VALUES:
        return None
    return Path(value).expanduser()


def enable_compile_cache(
    setting: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None
) -> Path | None:
    """Turn JAX's persistent compilation cache on (or off) for this process.

    Args:
      setting: a ``--compile-cache`` flag value (folder or ``off``), or None to use the environment.
      environ: the environment to read (default ``os.environ``).
    Returns:
      The cache folder in use, or None when the cache is off (by request, or because the folder cannot
      be created: then a one-line warning goes to stderr and the command runs uncached).
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    path = resolve_cache_dir(setting, environ)
    if path is not None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            print(f"warning: compilation cache off ({path}: {e.strerror or e})", file=sys.stderr)
            path = None
    cc.reset_cache()  # forget a cache opened earlier in this process (a different folder)
    if path is None:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # no size floor, no override
    return path


def add_compile_cache_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--compile-cache PATH|off`` (read it back as ``args.compile_cache``)."""
    parser.add_argument(
        "--compile-cache",
        metavar="PATH|off",
        help=f"persistent XLA compilation cache folder, or 'off' (default: ${ENV_VAR}, "
        "else ~/.cache/jitnet_jax/xla)",
    )

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

JAX's cache skips XLA compilation but not Python tracing and lowering, which for the online loop take
longer than loading its executable. :func:`load_or_compile` (used by live mode) also keeps the compiled
executable itself, keyed by everything that determines it, so a warm run skips tracing too.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

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


#: jax config options that cannot change a compiled program (where caches and logs go).
_NEUTRAL_OPTIONS = ("cache", "log", "debug", "explain", "profil", "timeout")


#: The parts of ``jitnet_jax`` a compiled program of the online loop is made from (the model, the
#: student's steps, the engine and its host side, the configs, the label conventions, this module).
PROGRAM_SOURCES = ("model", "student", "online", "config.py", "data/types.py", "compile_cache.py")


def _source_digest() -> str:
    """sha256 of the ``.py`` files of :data:`PROGRAM_SOURCES` (path and content): a change to any of them
    is a new key; edits elsewhere in the package (evaluation, sweeps, I/O) keep the cached programs."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for part in PROGRAM_SOURCES:
        files = [root / part] if part.endswith(".py") else sorted((root / part).rglob("*.py"))
        for f in files:
            h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def executable_key(*parts: Any) -> str:
    """Key of a compiled executable: ``parts`` (what the caller's program depends on: its config, the
    abstract arguments, flags) plus the jax/jaxlib versions, the device, ``XLA_FLAGS``, the jax config
    options that can change a program, and the digest of the package's program sources
    (:data:`PROGRAM_SOURCES`)."""
    import jax
    import jaxlib

    dev = jax.devices()[0]
    options = sorted(
        (k, repr(v)) for k, v in jax.config.values.items() if not any(n in k for n in _NEUTRAL_OPTIONS)
    )
    material = (
        jax.__version__,
        jaxlib.__version__,
        dev.platform,
        getattr(dev, "device_kind", ""),
        os.environ.get("XLA_FLAGS", ""),
        options,
        _source_digest(),
        parts,
    )
    return hashlib.sha256(repr(material).encode()).hexdigest()[:40]


def load_or_compile(name: str, key: str, lower: Callable[[], Any]) -> tuple[Any, str]:
    """A compiled executable from the executable cache, else ``lower().compile()`` (then stored).

    Args:
      name: a file-name prefix (e.g. ``run_chunk``).
      key: :func:`executable_key` of everything the program depends on.
      lower: returns the ``jax.stages.Lowered`` program (only called on a miss).
    Returns:
      ``(compiled, how)`` with ``how`` one of ``"loaded"``, ``"compiled"`` (and stored), ``"uncached"``
      (the compilation cache is off).

    The executables live in ``<compilation cache folder>/executables``. On a miss the program is compiled
    with JAX's persistent cache bypassed: an executable that JAX loaded from its own cache cannot be
    serialized again (XLA:CPU then writes a payload that fails when run), so it is compiled afresh once.
    A file that cannot be loaded is ignored (and replaced).
    """
    import jax
    from jax.experimental import serialize_executable
    from jax.experimental.compilation_cache import compilation_cache as cc

    from jitnet_jax.io import atomic_write_bytes

    folder = jax.config.jax_compilation_cache_dir if jax.config.jax_enable_compilation_cache else None
    if not folder:
        return lower().compile(), "uncached"
    path = Path(folder) / "executables" / f"{name}-{key}.bin"
    if path.exists():
        try:
            payload, in_tree, out_tree = pickle.loads(path.read_bytes())
            return serialize_executable.deserialize_and_load(payload, in_tree, out_tree), "loaded"
        except Exception as e:  # noqa: BLE001 - a stale or damaged file: compile instead
            print(f"warning: {path}: cannot load ({type(e).__name__}); compiling", file=sys.stderr)
    lowered = lower()
    cc.reset_cache()
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        compiled = lowered.compile()
    finally:
        jax.config.update("jax_enable_compilation_cache", True)
        cc.reset_cache()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, pickle.dumps(serialize_executable.serialize(compiled)))
    except (OSError, TypeError, ValueError, pickle.PicklingError) as e:
        print(f"warning: {path}: executable not stored ({e})", file=sys.stderr)
    return compiled, "compiled"


def add_compile_cache_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--compile-cache PATH|off`` (read it back as ``args.compile_cache``)."""
    parser.add_argument(
        "--compile-cache",
        metavar="PATH|off",
        help=f"persistent XLA compilation cache folder, or 'off' (default: ${ENV_VAR}, "
        "else ~/.cache/jitnet_jax/xla)",
    )

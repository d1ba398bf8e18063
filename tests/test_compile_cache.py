"""The persistent compilation cache: where it goes, how it is moved or turned off, and that a second
process reuses what the first compiled."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from jitnet_jax.compile_cache import ENV_VAR, default_cache_dir, resolve_cache_dir
from tests.conftest import REPO


def test_default_follows_xdg_cache_home(tmp_path: Path) -> None:
    assert default_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "jitnet_jax" / "xla"
    assert default_cache_dir({}) == Path.home() / ".cache" / "jitnet_jax" / "xla"
    assert resolve_cache_dir(None, {"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "jitnet_jax" / "xla"


def test_env_var_moves_or_turns_off_and_flag_wins(tmp_path: Path) -> None:
    env = {ENV_VAR: str(tmp_path / "c"), "XDG_CACHE_HOME": "/nonexistent"}
    assert resolve_cache_dir(None, env) == tmp_path / "c"
    for off in ("off", "OFF", "none", "0"):
        assert resolve_cache_dir(None, {ENV_VAR: off}) is None
    assert resolve_cache_dir(str(tmp_path / "flag"), env) == tmp_path / "flag"  # the flag beats the env
    assert resolve_cache_dir("off", env) is None
    assert resolve_cache_dir(None, {ENV_VAR: ""}) == default_cache_dir({})


_PROBE = """
import sys, jax, jax.numpy as jnp
from jax._src import monitoring
from jitnet_jax.compile_cache import enable_compile_cache
hits = []
monitoring.register_event_listener(lambda e, **kw: hits.append(e) if e == "/jax/compilation_cache/cache_hits" else None)
print(enable_compile_cache())
jax.jit(lambda x: jnp.tanh(x) * 3 + 1)(jnp.arange(5.0)).block_until_ready()
print(len(hits))
"""


def _probe(env_value: str, tmp_path: Path) -> list[str]:
    env = dict(os.environ, **{ENV_VAR: env_value, "XDG_CACHE_HOME": str(tmp_path / "xdg")})
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, cwd=REPO, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def test_second_process_hits_the_cache(tmp_path: Path) -> None:
    """A tiny program (compiled in milliseconds: below JAX's default thresholds) is written by the
    first process and read back by the second."""
    cache = tmp_path / "cache"
    first = _probe(str(cache), tmp_path)
    assert first == [str(cache), "0"]
    assert any(cache.iterdir())
    second = _probe(str(cache), tmp_path)
    assert second[0] == str(cache) and int(second[1]) >= 1
    off = _probe("off", tmp_path)
    assert off == ["None", "0"]
    assert not (tmp_path / "xdg").exists()  # off means nothing is written anywhere


def test_unwritable_folder_warns_and_runs_uncached(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    env = dict(os.environ, **{ENV_VAR: str(blocker / "sub")})
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["None", "0"]
    assert out.stderr.count("warning: compilation cache off") == 1

"""End to end: ``python -m experiments.stream --checkpoint-every N`` killed with SIGKILL and resumed with
``--resume`` ends exactly like an uninterrupted run; a kill during a save leaves the previous checkpoint.

The runs that are killed run the CLI in a subprocess through a tiny driver that only adds delays (so the
test can kill it at a known point) and then calls ``experiments.stream.main`` unchanged. The runs that are
not killed (the uninterrupted reference and every ``--resume``) call ``experiments.stream.main`` in this
process: the same code, without paying a Python and JAX start-up per run. Every run uses the suite's
persistent compilation cache (``tests/conftest.py``), so the stream loop is compiled once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
FLAGS = [
    "--frames",
    "24",
    "--height",
    "24",
    "--width",
    "32",
    "--chunk-size",
    "4",
    "--u-max",
    "2",
    "--delta-min",
    "2",
    "--delta-max",
    "8",
    "--seed",
    "0",
    "--no-video",
    "--no-progress",
    "--checkpoint-every",
    "4",
    "--keep",
    "2",
]
VOLATILE = {"wall_s", "compile_s", "student_ms_per_frame"}

DRIVER = r"""
import inspect, os, sys, time
mode, marker = os.environ["RESUME_TEST_MODE"], os.environ["RESUME_TEST_MARKER"]
if mode in ("slow", "sigint"):  # a pause after every chunk, so the test can stop it between chunks
    from jitnet_jax.online import checkpoint as ck
    orig_due, orig_save = ck.StreamCheckpointer.due, ck.StreamCheckpointer.save
    def due(self, start, end):
        if mode == "sigint":
            open(marker, "a").write(f"{end}\n")  # the chunks dispatched so far
        time.sleep(0.5)
        return orig_due(self, start, end)
    def save(self, state, per_frame):
        r = orig_save(self, state, per_frame)
        if r and mode == "slow":
            open(marker, "a").write(f"{len(per_frame['frame'])}\n")
        return r
    ck.StreamCheckpointer.due, ck.StreamCheckpointer.save = due, save
elif mode == "hang_in_save":  # the second save hangs after writing its data, before orbax's atomic rename
    import orbax.checkpoint._src.path.atomicity as atom
    orig_fin = atom.AtomicRenameTemporaryPath.finalize
    count = [0]
    def hang(tmp):
        if not str(getattr(tmp, "_final_path", "")).rstrip("/").split("/")[-1].isdigit():
            return  # an item directory inside the step; only step directories count
        count[0] += 1
        if count[0] == 2:
            open(marker, "w").close()
            time.sleep(600)
    if inspect.iscoroutinefunction(orig_fin):
        async def finalize(self, *a, **k):
            hang(self)
            return await orig_fin(self, *a, **k)
    else:
        def finalize(self, *a, **k):
            hang(self)
            return orig_fin(self, *a, **k)
    atom.AtomicRenameTemporaryPath.finalize = finalize
from experiments.stream import main
sys.exit(main(sys.argv[1:]))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)  # JITNET_COMPILE_CACHE: the suite's cache (tests/conftest.py), shared
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def _start(out: Path, mode: str, marker: Path, extra: list[str] = ()) -> subprocess.Popen:
    env = {**_env(), "RESUME_TEST_MODE": mode, "RESUME_TEST_MARKER": str(marker)}
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, "--out", str(out), *FLAGS, *extra],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(out: Path, capsys, extra: list[str] = ()) -> tuple[int, str]:
    """``python -m experiments.stream`` run to its end, in this process: (exit code, stderr)."""
    from experiments.stream import main

    capsys.readouterr()
    rc = main(["--out", str(out), *FLAGS, *extra])
    return rc, capsys.readouterr().err


def _wait_for(cond, proc: subprocess.Popen, timeout: float = 600) -> None:
    t0 = time.time()
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(
                f"process ended ({proc.returncode}) before the kill point:\n{proc.stderr.read()}"
            )
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError("timed out waiting for the kill point")
        time.sleep(0.02)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _summary(out: Path) -> dict:
    s = json.loads((out / "summary.json").read_text())
    return {k: v for k, v in s.items() if k not in VOLATILE}


def _final_state(out: Path):
    """The final checkpoint (the CLI saves one at the end) restored into this run's state template."""
    from experiments.stream import build_parser, make_config
    from jitnet_jax.online.checkpoint import StreamCheckpointer
    from jitnet_jax.online.runner import new_state

    cfg = make_config(build_parser().parse_args(FLAGS))
    probe = StreamCheckpointer(out / "checkpoints", {}, every_frames=0)
    cursor = probe.latest_cursor()
    fingerprint = probe.read_meta(cursor)["fingerprint"]
    ck = StreamCheckpointer(out / "checkpoints", fingerprint, every_frames=0)
    template = new_state(cfg.online, jax.random.key(0), (cfg.height, cfg.width))
    state, pf = ck.restore(cursor, template)
    leaves = jax.tree_util.tree_leaves(
        jax.tree_util.tree_map(
            lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x,
            state,
        )
    )
    return cursor, [np.asarray(x) for x in leaves], pf


def _assert_same_run(a: Path, b: Path) -> None:
    assert _summary(a) == _summary(b)
    assert (a / "per_frame.csv").read_text() == (b / "per_frame.csv").read_text()
    ca, la, pa = _final_state(a)
    cb, lb, pb = _final_state(b)
    assert ca == cb == 24
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(x, y)
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k])


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    from experiments.stream import main

    out = tmp_path_factory.mktemp("resume") / "uninterrupted"
    assert main(["--out", str(out), *FLAGS]) == 0
    return out


def test_sigkill_then_resume_matches_uninterrupted(reference, tmp_path, capsys):
    out, marker = tmp_path / "killed", tmp_path / "saves.txt"
    proc = _start(out, "slow", marker)
    # Kill right after the second periodic checkpoint (cursor 8), while later chunks are pending.
    _wait_for(lambda: marker.exists() and len(marker.read_text().split()) >= 2, proc)
    _kill(proc)
    assert not (out / "summary.json").exists()
    rc, err = _run(out, capsys, ["--resume"])
    assert rc == 0, err
    assert "resumed at frame" in err
    _assert_same_run(reference, out)


#: FLAGS without periodic checkpoints (``--checkpoint-every``): only a stop saves.
NO_PERIODIC = FLAGS[: FLAGS.index("--checkpoint-every")]


def _start_plain(out: Path, mode: str, marker: Path) -> subprocess.Popen:
    env = {**_env(), "RESUME_TEST_MODE": mode, "RESUME_TEST_MARKER": str(marker)}
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, "--out", str(out), *NO_PERIODIC],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigint_saves_a_checkpoint_and_resume_matches_uninterrupted(reference, tmp_path, capsys):
    """Ctrl-C without ``--checkpoint-every``: the run stops at the next chunk boundary, saves a checkpoint
    there and says so; ``--resume`` continues from it (not from frame 0) and ends like an uninterrupted run."""
    from jitnet_jax.online.checkpoint import StreamCheckpointer

    out, marker = tmp_path / "interrupted", tmp_path / "chunks.txt"
    proc = _start_plain(out, "sigint", marker)
    _wait_for(lambda: marker.exists() and len(marker.read_text().split()) >= 2, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "saved a checkpoint there" in err, err
    cursors = StreamCheckpointer(out / "checkpoints", {}, every_frames=0).steps()
    assert len(cursors) == 1 and 0 < cursors[0] < 24, cursors
    assert f"interrupted at frame {cursors[0]}" in err, err
    capsys.readouterr()
    from experiments.stream import main

    assert main(["--out", str(out), *NO_PERIODIC, "--resume"]) == 0
    assert f"resumed at frame {cursors[0]}" in capsys.readouterr().err
    assert (out / "per_frame.csv").read_text() == (reference / "per_frame.csv").read_text()
    assert _summary(out) == _summary(reference)


def test_second_sigint_exits_at_once(tmp_path):
    """A second Ctrl-C is not swallowed: the process ends at once with a one-line message."""
    out, marker = tmp_path / "twice", tmp_path / "chunks.txt"
    proc = _start_plain(out, "sigint", marker)
    _wait_for(lambda: marker.exists() and len(marker.read_text().split()) >= 1, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted twice" in err and "Traceback" not in err, err


def test_kill_during_save_keeps_previous_checkpoint(reference, tmp_path, capsys):
    from jitnet_jax.online.checkpoint import StreamCheckpointer

    out, marker = tmp_path / "killed_in_save", tmp_path / "saving"
    proc = _start(out, "hang_in_save", marker)
    _wait_for(marker.exists, proc)  # the second save's data is written, its rename is pending
    _kill(proc)
    ckdir = out / "checkpoints"
    assert any(".orbax-checkpoint-tmp" in p.name for p in ckdir.iterdir())  # the partial save
    probe = StreamCheckpointer(ckdir, {}, every_frames=0)
    assert probe.steps() == [4]  # only the first, complete checkpoint counts
    rc, err = _run(out, capsys, ["--resume"])
    assert rc == 0, err
    assert "resumed at frame 4" in err
    _assert_same_run(reference, out)


def test_kill_after_the_last_checkpoint_writes_the_outputs(reference, tmp_path, capsys):
    """Killed after the final checkpoint but before ``summary.json``: ``--resume`` recomputes nothing and
    writes the same outputs. (A changed setting is refused: tests/test_faults.py, in-process.)"""
    import shutil

    out = tmp_path / "other"
    shutil.copytree(reference, out)
    for name in ("summary.json", "per_frame.csv"):
        (out / name).unlink()
    rc, err = _run(out, capsys, ["--resume"])
    assert rc == 0, err
    assert "all frames were already processed" in err, err
    _assert_same_run(reference, out)


def test_resume_of_a_finished_run_changes_nothing(reference, tmp_path, capsys):
    import shutil

    out = tmp_path / "done"
    shutil.copytree(reference, out)
    before = {
        str(p.relative_to(out)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in out.rglob("*")
        if p.is_file() and p.name != ".lock"
    }
    rc, err = _run(out, capsys, ["--resume"])
    assert rc == 0 and "already complete" in err, err
    rc, err = _run(out, capsys, ["--resume", "--seed", "3"])  # a changed setting is still refused
    assert rc == 2 and "seed was 0, now 3" in err and err.count("\n") == 1, err
    after = {
        str(p.relative_to(out)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in out.rglob("*")
        if p.is_file() and p.name != ".lock"
    }
    assert after == before

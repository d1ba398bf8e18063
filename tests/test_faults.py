"""Fault injection: what the project promises when things go wrong, each promise checked.

=================================  ==========================================================  =======================
fault                              promise                                                     checked by
=================================  ==========================================================  =======================
second process on an output        refused at once with one line naming the folder and the     test_second_process_on_
folder (run, table, sweep, store)  holder's pid; nothing written. A SIGKILLed holder's stale   one_folder_is_refused
                                   lock never blocks (flock dies with the process)
``--out`` names a file             one-line error, exit 2, the file untouched                  test_out_naming_a_file
full disk (ENOSPC) during a        one-line ``CheckpointError``; the previous checkpoint       test_full_disk_during_a_
checkpoint save                    stays the latest and restores bit-exact; later saves work   checkpoint_save
full disk during a label-store     one line (exit 2); written chunks and ``meta.json`` stay    test_full_disk_during_
write                              valid, no temp file is left; a rerun writes only the rest   the_precompute
corrupt / truncated / deleted      ``checksum mismatch`` / ``label chunk file missing`` naming  test_corrupt_or_missing_
label chunk                        the file; the precompute recomputes only that chunk         label_chunks
corrupt or missing checkpoint      the newest readable checkpoint is used (with a warning);    test_corrupt_or_missing_
                                   none readable: one-line ``CheckpointError``                 checkpoints
SIGKILL during the precompute      rerun computes only the chunks not yet written; the store   test_sigkill_during_the_
                                   equals an uninterrupted one (chunk sha256s)                 precompute
resume with a changed config       refused with one line naming the first differing field and  test_resume_with_a_
                                   both values; nothing in the folder changes                  changed_config
SIGKILL during a run / during a    ``--resume`` continues from the last complete checkpoint;   tests/test_resume.py
checkpoint save                    outputs and final state bit-exact vs an uninterrupted run
resume of a finished run           says so, exit 0, changes nothing                            tests/test_resume.py
=================================  ==========================================================  =======================

Everything here runs in-process or in short subprocesses without a compiled stream loop (fast); the
end-to-end kill-and-resume runs, which compile the stream loop, live in ``tests/test_resume.py``.
"""

from __future__ import annotations

import errno
import functools
import inspect
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jitnet_jax.config import ModelConfig, StudentConfig
from jitnet_jax.data.label_store import DataError, LabelStore, LabelStoreWriter, StoreHeader, chunk_file_name
from jitnet_jax.data.types import StreamInfo
from jitnet_jax.io import OutputBusy, lock_output
from jitnet_jax.online.checkpoint import CheckpointError, StreamCheckpointer, make_fingerprint
from jitnet_jax.online.engine import OnlineConfig
from jitnet_jax.online.runner import new_state

REPO = Path(__file__).resolve().parents[1]
H, W, C = 16, 24, 4
INFO = StreamInfo("synthetic", 100, H, W, 30.0, ("background", "a", "b", "c"), "exact")
TINY = [
    "--frames",
    "8",
    "--height",
    "48",
    "--width",
    "64",
    "--chunk-size",
    "4",
    "--no-video",
    "--no-progress",
]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def _one_line_error(err: str, needle: str) -> None:
    assert needle in err, err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err


# ---- output folders ---------------------------------------------------------------------------------


def test_second_process_on_one_folder_is_refused(tmp_path, capsys):
    from experiments import stream

    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom jitnet_jax.io.lock import lock_output\n"
            "lock = lock_output(sys.argv[1])\nprint('locked', flush=True)\ntime.sleep(600)\n",
            str(out),
        ],
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        # the stream CLI is refused at once, before any work, and writes nothing
        assert stream.main([*TINY, "--out", str(out)]) == 2
        _one_line_error(capsys.readouterr().err, f"in use by another process (pid {holder.pid}")
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
        # so is any other job on that folder (precompute, sweep, table share lock_output)
        with pytest.raises(OutputBusy, match="label store is in use"):
            lock_output(out, "label store")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    # a killed holder leaves its lock file, which blocks nothing
    assert (out / ".lock").exists()
    lock_output(out).release()
    # two locks in one process conflict too (flock is per open file)
    with lock_output(out):
        with pytest.raises(OutputBusy):
            lock_output(out)


def test_out_naming_a_file(tmp_path, capsys, shared_data):
    from experiments import stream
    from teacher import precompute

    f = tmp_path / "results.txt"
    f.write_text("keep me")
    assert stream.main([*TINY, "--out", str(f)]) == 2
    _one_line_error(capsys.readouterr().err, "exists and is not a folder")
    assert stream.main([*TINY, "--out", str(f / "sub")]) == 2
    _one_line_error(capsys.readouterr().err, "is a file")
    args = ["--lvs", str(shared_data / "lvs_mini"), "--stream", "bikes1", "--max-frames", "4"]
    assert precompute.main([*args, "--height", "24", "--width", "32", "--out", str(f), "--no-progress"]) == 2
    _one_line_error(capsys.readouterr().err, "exists and is not a folder")
    assert f.read_text() == "keep me"


# ---- checkpoints ------------------------------------------------------------------------------------


def _cfg() -> OnlineConfig:
    return OnlineConfig(student=StudentConfig(model=ModelConfig(num_classes=C)), chunk_size=4)


@functools.cache
def _fresh():
    return new_state(_cfg(), jax.random.key(0), (H, W))


def _state(cursor: int):
    s = _fresh()
    params = jax.tree_util.tree_map(lambda x: x + 0.01 * cursor, s.student.params)
    return s.replace(student=s.student.replace(params=params), cursor=jnp.int32(cursor))


def _per_frame(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(n)
    return {
        "frame": np.arange(n, dtype=np.int64),
        "teacher": rng.random(n) < 0.3,
        "updates": rng.integers(0, 8, n).astype(np.int32),
        "delta": rng.integers(1, 64, n).astype(np.int32),
        "acc": rng.random(n).astype(np.float32),
        **{k: rng.integers(0, 1000, (n, C)).astype(np.int64) for k in ("tp", "fp", "fn")},
    }


def _leaves(state) -> list[np.ndarray]:
    conv = lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x  # noqa: E731
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.tree_util.tree_map(conv, state))]


def _assert_state(restored, cursor: int) -> None:
    state, pf = restored
    assert int(state.cursor) == cursor
    for a, b in zip(_leaves(state), _leaves(_state(cursor))):
        np.testing.assert_array_equal(a, b)
    for k, v in _per_frame(cursor).items():
        np.testing.assert_array_equal(pf[k], v)


def _checkpointer(d: Path, notes: list[str] | None = None) -> StreamCheckpointer:
    log = notes.append if notes is not None else None
    return StreamCheckpointer(d, make_fingerprint(_cfg(), INFO), every_frames=4, name="R", log=log)


def _fail_commit(monkeypatch) -> None:
    """Make orbax's final step of a save (renaming the finished temp folder into place) fail with ENOSPC,
    as a full disk would make its last write fail; the data written before stays in the temp folder."""
    import orbax.checkpoint._src.path.atomicity as atom

    orig = atom.AtomicRenameTemporaryPath.finalize

    def boom(self) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if inspect.iscoroutinefunction(orig):

        async def finalize(self, *a, **k):
            boom(self)

    else:

        def finalize(self, *a, **k):
            boom(self)

    monkeypatch.setattr(atom.AtomicRenameTemporaryPath, "finalize", finalize)


def test_full_disk_during_a_checkpoint_save(tmp_path, monkeypatch):
    d = tmp_path / "ck"
    ck = _checkpointer(d)
    assert ck.save(_state(4), _per_frame(4))
    with monkeypatch.context() as m:
        _fail_commit(m)
        with pytest.raises(CheckpointError) as e:
            ck.save(_state(8), _per_frame(8))
    msg = str(e.value)
    assert "\n" not in msg and "No space left on device" in msg, msg
    assert "cannot save checkpoint at frame 8" in msg and "the checkpoint at frame 4 is intact" in msg
    fresh = _checkpointer(d)
    assert fresh.steps() == [4]
    _assert_state(fresh.restore_latest(_state(0)), 4)
    # once there is room again, saving works (the partial save is not mistaken for a checkpoint)
    assert fresh.save(_state(8), _per_frame(8))
    _assert_state(_checkpointer(d).restore_latest(_state(0)), 8)


def test_corrupt_or_missing_checkpoints(tmp_path):
    d = tmp_path / "ck"
    ck = _checkpointer(d)
    assert ck.restore_latest(_state(0)) is None  # no checkpoint: start at frame 0
    for c in (4, 8):
        assert ck.save(_state(c), _per_frame(c))
    # the newest one's files overwritten with garbage: the older one is used, with a note
    for f in (d / "8").rglob("*"):
        if f.is_file():
            f.write_bytes(b"\x00garbage" * 3)
    notes: list[str] = []
    _assert_state(_checkpointer(d, notes).restore_latest(_state(0)), 4)
    assert len(notes) == 1 and "checkpoint" in notes[0] and "8" in notes[0] and "\n" not in notes[0]
    # the remaining one loses its per-frame stats: nothing readable is left -> one line
    import shutil

    shutil.rmtree(d / "4" / "per_frame")
    with pytest.raises(CheckpointError) as e:
        _checkpointer(d, []).restore_latest(_state(0))
    assert "unreadable" in str(e.value) and "\n" not in str(e.value)


def test_resume_with_a_changed_config(tmp_path, capsys):
    """A checkpoint made by this exact command, then ``--resume`` with other settings: refused in one
    line naming the first differing field and both values; nothing in the folder changes."""
    from experiments import stream

    out = tmp_path / "R"
    args = stream.build_parser().parse_args([*TINY, "--out", str(out), "--checkpoint-every", "4"])
    cfg = stream.make_config(args)
    source = stream.open_source(args, cfg)
    fp = stream.run_fingerprint(cfg, source)
    st = new_state(cfg.online, jax.random.key(cfg.seed), (cfg.height, cfg.width)).replace(cursor=jnp.int32(4))
    pf = {k: v[:4] for k, v in _per_frame(4).items()}
    ck = StreamCheckpointer(out / "checkpoints", fp, every_frames=4)
    assert ck.save(st, pf)
    ck.close()
    (out / "config.json").write_text(json.dumps({"fingerprint": fp}))
    before = {str(p): p.stat().st_mtime_ns for p in out.rglob("*") if p.name != ".lock"}

    flags = [*TINY, "--out", str(out), "--checkpoint-every", "4"]
    assert stream.main([*flags, "--resume", "--a-thr", "0.5", "--lr", "0.05"]) == 2
    _one_line_error(capsys.readouterr().err, f"cannot resume {out}: online.a_thr was 0.8, now 0.5")
    assert stream.main([*flags, "--resume", "--set", "online.student.optim.b2=0.9"]) == 2
    _one_line_error(capsys.readouterr().err, "online.student.optim.b2 was 0.999, now 0.9")
    assert stream.main(flags) == 2  # without --resume: an unfinished run is never overwritten
    _one_line_error(capsys.readouterr().err, "holds an unfinished run; continue it with --resume")
    assert {str(p): p.stat().st_mtime_ns for p in out.rglob("*") if p.name != ".lock"} == before


# ---- label stores -----------------------------------------------------------------------------------

N, SH, SW, CS = 10, 6, 8, 4


def _header() -> StoreHeader:
    return StoreHeader(
        "s", N, SH, SW, 25.0, ("background", "person"), (("person",),), "test", ("/x/a.mp4",), (N,), CS
    )


def _labels() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 2, (N, SH, SW)).astype(np.uint8), rng.integers(0, 3, (N, SH, SW)).astype(np.uint8)


def _write(d: Path, skip: tuple[int, ...] = ()) -> list[int]:
    labels, regions = _labels()
    w = LabelStoreWriter(d, _header())
    done = []
    for i in w.missing_chunks():
        if i in skip:
            continue
        a, b = w.chunk_range(i)
        w.write_chunk(i, labels[a:b], regions[a:b])
        done.append(i)
    if not w.missing_chunks():
        w.finalize()
    return done


def test_corrupt_or_missing_label_chunks(tmp_path):
    _write(tmp_path)
    path = tmp_path / chunk_file_name(1)
    good = path.read_bytes()
    for damage, needle in [
        (lambda: path.write_bytes(good[:-7]), "labels_00001.npz: checksum mismatch"),  # truncated
        (
            lambda: path.write_bytes(good[:50] + bytes([good[50] ^ 1]) + good[51:]),
            "checksum mismatch",
        ),  # bit flip
        (path.unlink, "labels_00001.npz: label chunk file missing"),
    ]:
        damage()
        store = LabelStore(tmp_path)
        store.frame(0)  # other chunks still read
        with pytest.raises(DataError, match=needle) as e:
            store.frames(3, 6)
        assert "\n" not in str(e.value)
        # the precompute's writer sees the damage and recomputes only that chunk
        assert _write(tmp_path) == [1]
        np.testing.assert_array_equal(LabelStore(tmp_path).frames(0, N)[0], _labels()[0])
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match="meta.json: not valid JSON"):
        LabelStore(tmp_path)


def test_full_disk_during_the_precompute(tmp_path, monkeypatch, capsys, shared_data):
    from teacher import precompute

    out = tmp_path / "store"
    args = ["--lvs", str(shared_data / "lvs_mini"), "--stream", "bikes1", "--max-frames", "32"]
    args += ["--height", "24", "--width", "32", "--chunk-size", "8", "--out", str(out), "--no-progress"]
    real_fsync, calls = os.fsync, [0]

    def fsync(fd: int) -> None:  # the 4th durable write (chunk 1, after meta, chunk 0, meta) hits a full disk
        calls[0] += 1
        if calls[0] == 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", fsync)
        assert precompute.main(args) == 2
    _one_line_error(capsys.readouterr().err, "No space left on device")
    assert not list(out.glob(".*.tmp"))  # the failed write left no temp file
    meta = json.loads((out / "meta.json").read_text())  # still valid JSON, chunk 0 recorded
    assert meta["complete"] is False and meta["chunks"][0]["sha256"] and not meta["chunks"][1]["sha256"]
    written: list[int] = []
    real_write = LabelStoreWriter.write_chunk

    def record(self, index, labels, regions):
        written.append(index)
        real_write(self, index, labels, regions)

    monkeypatch.setattr(LabelStoreWriter, "write_chunk", record)
    assert precompute.main(args) == 0
    assert written == [1, 2, 3]
    LabelStore(out).verify()


def test_sigkill_during_the_precompute(tmp_path, shared_data):
    """Killed after two chunks: the rerun writes only the other two, and the store equals one made in
    a single go (same chunk digests, so the same bytes)."""
    from teacher import precompute

    base = ["--lvs", str(shared_data / "lvs_mini"), "--stream", "bikes1", "--max-frames", "32"]
    base += ["--height", "24", "--width", "32", "--chunk-size", "8", "--no-progress"]
    ref, out, marker = tmp_path / "ref", tmp_path / "killed", tmp_path / "written.txt"
    assert precompute.main([*base, "--out", str(ref)]) == 0
    driver = (
        "import sys, time\nfrom jitnet_jax.data.label_store import LabelStoreWriter\n"
        "real = LabelStoreWriter.write_chunk\n"
        "def slow(self, i, *a):\n"
        "    real(self, i, *a)\n"
        f"    open({str(marker)!r}, 'a').write(f'{{i}}\\n')\n"
        "    time.sleep(0.5 if i < 1 else 600)\n"
        "LabelStoreWriter.write_chunk = slow\n"
        "from teacher.precompute import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    p = subprocess.Popen([sys.executable, "-c", driver, *base, "--out", str(out)], cwd=REPO, env=_env())
    t0 = time.time()
    while not (marker.exists() and len(marker.read_text().split()) >= 2):
        assert p.poll() is None and time.time() - t0 < 300, "precompute ended before the kill point"
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    written: list[int] = []
    real_write = LabelStoreWriter.write_chunk

    def record(self, index, labels, regions):
        written.append(index)
        real_write(self, index, labels, regions)

    LabelStoreWriter.write_chunk = record
    try:
        assert precompute.main([*base, "--out", str(out)]) == 0
    finally:
        LabelStoreWriter.write_chunk = real_write
    assert written == [2, 3]  # nothing recomputed twice, nothing lost
    digests = lambda d: [c["sha256"] for c in json.loads((d / "meta.json").read_text())["chunks"]]  # noqa: E731
    assert digests(out) == digests(ref)

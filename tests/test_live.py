"""Live mode: the teacher runs only on the frames the controller selects, at the moment it selects them.

The central check: a live run whose teacher reads a label store takes the same decisions and ends with the
same parameters as a store-backed run over that store; an audit changes nothing of the training; a run
stopped and resumed from an older state never calls the teacher again on a frame it labelled.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
import pytest

from jitnet_jax.config import ModelConfig, OptimConfig, StudentConfig
from jitnet_jax.data.label_store import DataError, LabelStoreWriter, StoreHeader
from jitnet_jax.data.synthetic import SyntheticStream
from jitnet_jax.data.types import pad_chunk
from jitnet_jax.online.checkpoint import from_host, to_host
from jitnet_jax.online.engine import OnlineConfig
from jitnet_jax.online.live import (
    LIVE_DEFAULTS,
    audit_mask,
    format_live_summary,
    live_config,
    live_summary,
    plan_segment,
    run_live,
)
from jitnet_jax.online.runner import compile_chunk, new_state, run_stream
from teacher.live import LiveLabelStore, LiveStoreHeader, StoringTeacher, store_labeller

N, H, W = 72, 24, 32
#: The online settings of ``experiments.stream``'s defaults at the size and chunk of tests/test_resume.py, so
#: the compiled loop is the same program there and here (compiled once per suite run, then cached).
CFG = OnlineConfig(
    student=StudentConfig(model=ModelConfig(num_classes=4), optim=OptimConfig(name="adam", lr=1e-3)),
    a_thr=0.6,
    delta_min=4,
    delta_max=16,
    u_max=2,
    chunk_size=4,
)


def test_plan_segment_ends_each_segment_at_the_teacher_frame() -> None:
    assert plan_segment(9, 24, 100, 8) == [(9, 17), (17, 25)]
    assert plan_segment(0, 0, 100, 8) == [(0, 1)]
    assert plan_segment(1, 8, 100, 8) == [(1, 9)]
    assert plan_segment(90, 120, 100, 8) == [(90, 92), (92, 100)]  # the stream ends first
    with pytest.raises(ValueError, match="before the cursor"):
        plan_segment(10, 9, 100, 8)


def test_audit_frames_avoid_the_teacher_grid() -> None:
    f = np.arange(20)
    assert f[audit_mask(f, 8)].tolist() == [4, 12]
    assert not audit_mask(f, 0).any()
    assert audit_mask(f, 1).all()


def test_live_config_uses_delta_min_chunks() -> None:
    assert live_config(CFG, None, 0).chunk_size == CFG.delta_min
    assert live_config(CFG, 6, 0).chunk_size == CFG.chunk_size
    with pytest.raises(ValueError, match="audit-every"):
        live_config(CFG, None, -1)
    # live mode's controller defaults apply only to the fields the user left unset
    both = live_config(CFG, None, 0, ("a_thr", "u_max"))
    assert (both.a_thr, both.u_max) == (LIVE_DEFAULTS["a_thr"], LIVE_DEFAULTS["u_max"])
    assert live_config(CFG, None, 0, ("u_max",)).a_thr == CFG.a_thr


def test_live_defaults_yield_to_the_command_line() -> None:
    from experiments.stream import _user_sets, build_parser

    def unset(*argv: str) -> list[str]:
        args = build_parser().parse_args(list(argv))
        return [k for k in LIVE_DEFAULTS if not _user_sets(args, k)]

    assert unset() == ["a_thr", "u_max"]
    assert unset("--a-thr", "0.8") == ["u_max"]
    assert unset("--set", "online.u_max=8") == ["a_thr"]
    assert unset("--config", "run.json") == []


@pytest.fixture
def exe_cache(tmp_path):
    """The compilation cache (and with it the executable cache) in a fresh folder for one test."""
    from jitnet_jax.compile_cache import enable_compile_cache

    enable_compile_cache(tmp_path / "cc")
    yield tmp_path / "cc"
    enable_compile_cache()  # back to the suite's cache (conftest)


def test_executable_cache_stores_loads_and_survives_a_damaged_file(exe_cache, capsys) -> None:
    import jax.numpy as jnp

    from jitnet_jax.compile_cache import executable_key, load_or_compile

    def lower():
        return jax.jit(lambda x, y: (jnp.tanh(x) * 2 + y, (x @ y.T).sum())).lower(x, y)

    x, y = jnp.arange(32.0).reshape(4, 8), jnp.ones((4, 8))
    key = executable_key("probe", 1)
    assert executable_key("probe", 2) != key
    first, how1 = load_or_compile("probe", key, lower)
    again, how2 = load_or_compile("probe", key, lower)
    assert (how1, how2) == ("compiled", "loaded")
    for a, b in zip(first(x, y), again(x, y)):
        np.testing.assert_array_equal(a, b)  # the same executable: exactly the same results
    (stored,) = (exe_cache / "executables").iterdir()
    stored.write_bytes(b"not an executable")
    fixed, how3 = load_or_compile("probe", key, lower)
    assert how3 == "compiled" and "cannot load" in capsys.readouterr().err
    np.testing.assert_array_equal(fixed(x, y)[0], first(x, y)[0])


def test_new_state_from_one_cached_program_has_the_same_values() -> None:
    eager = new_state(CFG, jax.random.key(3), (H, W))
    cached = new_state(CFG, jax.random.key(3), (H, W), keep_executable=True)
    a, b = (to_host(s) for s in (eager, cached))
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert u.dtype == v.dtype
        np.testing.assert_array_equal(u, v)


# ---- a stream, its label store, and the two ways of running over it ------------------------------


class _Frames:
    """LiveFrames over the synthetic stream's frames (student view == teacher view)."""

    def __init__(self, stream: SyntheticStream) -> None:
        self.stream = stream
        self.info = stream.info

    def frames(self, start: int = 0):
        for t in range(start, self.stream.num_frames):
            f, _, _ = self.stream.render(t)
            yield f, f


class _StoreBacked:
    """A StreamSource: the synthetic frames with the labels of a complete label store."""

    def __init__(self, stream: SyntheticStream, store_dir: Path) -> None:
        from jitnet_jax.data.label_store import LabelStore

        self.stream, self.store = stream, LabelStore(store_dir)
        self.info = stream.info

    def chunks(self, chunk_size: int, start: int = 0):
        for s in range(start, N, chunk_size):
            e = min(s + chunk_size, N)
            frames, _, _ = self.stream.clip(s, e)
            labels, weights = self.store.frames(s, e)
            yield pad_chunk(frames, labels, weights, chunk_size, s)


class _Counting:
    """Wraps a labeller and records the frames it was asked for."""

    def __init__(self, labeller) -> None:
        self.labeller, self.calls = labeller, []

    def __call__(self, index, frame):
        self.calls.append(index)
        return self.labeller(index, frame)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    stream = SyntheticStream(num_frames=N, height=H, width=W, seed=5)
    store_dir = tmp_path_factory.mktemp("store")
    header = StoreHeader(
        stream="synthetic",
        num_frames=N,
        height=H,
        width=W,
        fps=30.0,
        class_names=stream.info.class_names,
        class_groups=tuple((n,) for n in stream.info.class_names[1:]),
        teacher="synthetic-exact",
        videos=("synthetic",),
        video_frames=(N,),
        chunk_size=16,
    )
    writer = LabelStoreWriter(store_dir, header)
    for i in writer.missing_chunks():
        a, b = writer.chunk_range(i)
        _, labels, weights = stream.clip(a, b)
        writer.write_chunk(i, labels, weights)
    writer.finalize()
    # one executable for every run of this module (compiling is the slow part on a loaded CPU)
    compiled = compile_chunk(CFG, new_state(CFG, jax.random.key(0), (H, W)), H, W)
    stored = run_stream(
        _StoreBacked(stream, store_dir), CFG, jax.random.key(0), progress=False, compiled=compiled
    )
    return stream, store_dir, stored, compiled


def _live_header() -> LiveStoreHeader:
    names = SyntheticStream(num_frames=1, height=16, width=16).info.class_names
    return LiveStoreHeader("synthetic", H, W, names, tuple((n,) for n in names[1:]), "store-teacher")


def _assert_same_run(live, stored) -> None:
    a, b = live.per_frame, stored.per_frame
    for k in ("frame", "teacher", "updates", "delta"):
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    t = b["teacher"]
    np.testing.assert_array_equal(a["acc"][t], b["acc"][t])
    for k in ("tp", "fp", "fn"):  # the teacher frames are scored from the same prediction
        np.testing.assert_array_equal(a[k][t], b[k][t], err_msg=k)
    pa = jax.tree_util.tree_leaves(live.state.student.params)
    pb = jax.tree_util.tree_leaves(stored.state.student.params)
    for x, y in zip(pa, pb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert int(live.state.next_teacher) == int(stored.state.next_teacher)


def test_live_run_matches_store_backed_run(world, tmp_path) -> None:
    stream, store_dir, stored, compiled = world
    labeller = _Counting(store_labeller(store_dir))
    teacher = StoringTeacher(LiveLabelStore(tmp_path / "labels", _live_header()), labeller)
    live = run_live(_Frames(stream), teacher, CFG, jax.random.key(0), progress=False, compiled=compiled)
    _assert_same_run(live, stored)
    teacher_frames = np.flatnonzero(stored.per_frame["teacher"]).tolist()
    assert labeller.calls == teacher_frames  # the teacher ran on those frames only, in order
    assert 3 <= len(teacher_frames) < N // 2  # the controller skipped frames
    # one host sync per teacher frame (and one for the frames after the last one)
    assert len(teacher_frames) <= live.syncs <= len(teacher_frames) + 1
    # frames without a teacher label score nothing: without an audit there is no accuracy figure
    quiet = ~stored.per_frame["teacher"]
    assert live.per_frame["tp"][quiet].sum() == live.per_frame["fn"][quiet].sum() == 0
    summary = live_summary(live, 0, stream.info.class_names, total_s=1.0)
    assert summary["miou"] is None and "not measured" in summary["accuracy"]
    assert "not measured" in format_live_summary(
        {
            **summary,
            "teacher_fraction": 0.1,
            "frames": N,
            "teacher_frames": len(teacher_frames),
            "updates": 1,
            "speedup_cost_model": 2.0,
            "compile_s": 0.0,
        }
    )
    assert LiveLabelStore(tmp_path / "labels", _live_header()).indices() == teacher_frames


def test_audit_and_resume_change_nothing_and_never_relabel(world, tmp_path) -> None:
    """Audit every 3rd frame; stop at the 5th sync after a 'checkpoint' at the 2nd; resume from the
    checkpoint (as after SIGKILL): same decisions and parameters as the store-backed run, and every frame
    was labelled by the teacher exactly once."""
    stream, store_dir, stored, compiled = world
    labeller = _Counting(store_labeller(store_dir))
    make_teacher = lambda: StoringTeacher(LiveLabelStore(tmp_path / "labels", _live_header()), labeller)  # noqa: E731
    saved: dict = {}
    syncs = {"n": 0}

    class SaveAtSecondSync:  # the pipeline's checkpointer protocol: asked once per sync
        def due(self, start: int, end: int) -> bool:
            syncs["n"] += 1
            return syncs["n"] == 2

        def save(self, state, pf) -> bool:
            if "state" not in saved:  # the first save; the stop saves again
                saved["state"], saved["pf"] = to_host(state), {k: v.copy() for k, v in pf.items()}
            return True

    first = run_live(
        _Frames(stream),
        make_teacher(),
        CFG,
        jax.random.key(0),
        audit_every=3,
        checkpointer=SaveAtSecondSync(),
        progress=False,
        should_stop=lambda: syncs["n"] >= 5,
        compiled=compiled,
    )
    assert first.stopped and len(first.per_frame["frame"]) < N
    calls_before = list(labeller.calls)
    template = new_state(CFG, jax.random.key(1), (H, W))
    state = from_host(saved["state"], template)
    second = run_live(
        _Frames(stream),
        make_teacher(),
        CFG,
        state=state,
        per_frame=saved["pf"],
        audit_every=3,
        progress=False,
        compiled=compiled,
    )
    _assert_same_run(second, stored)
    assert len(labeller.calls) == len(set(labeller.calls))  # nothing labelled twice
    assert second.reused > 0  # frames labelled before the "kill" came back from the store
    teacher_frames = set(np.flatnonzero(stored.per_frame["teacher"]).tolist())
    audits = set(np.flatnonzero(audit_mask(np.arange(N), 3)).tolist())
    assert set(labeller.calls) == teacher_frames | audits
    assert set(calls_before) < set(labeller.calls)
    # the audited frames are scored exactly as the store-backed run scores them
    sel = audit_mask(second.per_frame["frame"], 3)
    for k in ("tp", "fp", "fn"):
        np.testing.assert_array_equal(second.per_frame[k][sel], stored.per_frame[k][sel], err_msg=k)
    summary = live_summary(second, 3, stream.info.class_names, total_s=1.0)
    assert summary["audited_frames"] == int(sel.sum()) and 0.0 <= summary["audit_miou"] <= 1.0
    assert len(first.audit_s) + len(second.audit_s) == len(audits - teacher_frames)  # timed apart
    assert all(s >= 0 for s in second.audit_s)


def test_live_label_store_refuses_other_settings(tmp_path) -> None:
    h = _live_header()
    store = LiveLabelStore(tmp_path, h)
    lab = np.zeros((H, W), np.uint8)
    store.write(7, lab, np.ones((H, W), np.uint8), "train", 0.1)
    (tmp_path / "frames" / ".000009.npz.x.tmp").write_bytes(b"partial")  # a killed writer's leftover
    again = LiveLabelStore(tmp_path, h)
    assert again.indices() == [7] and not list((tmp_path / "frames").glob(".*.tmp"))
    labels, weights, purpose, seconds = again.read(7)
    assert purpose == "train" and seconds == pytest.approx(0.1) and (weights == 1).all()
    with pytest.raises(DataError, match="different height"):
        LiveLabelStore(tmp_path, dataclasses.replace(h, height=H + 1))
    with pytest.raises(DataError, match="has no label"):
        again.read(8)
    with pytest.raises(DataError, match="expected uint8"):
        again.write(8, lab[:2], lab[:2], "train", 0.0)


class _NoFrames:
    def __init__(self) -> None:
        self.info = SyntheticStream(num_frames=1, height=H, width=W).info

    def frames(self, start: int = 0):
        return iter(())


def test_a_stream_without_frames_is_a_one_line_error(world, tmp_path) -> None:
    teacher = StoringTeacher(LiveLabelStore(tmp_path, _live_header()), lambda i, f: None)
    with pytest.raises(DataError, match="no frames"):  # the module's executable: nothing to compile
        run_live(_NoFrames(), teacher, CFG, jax.random.key(0), progress=False, compiled=world[3])


def test_cli_bad_inputs_are_one_line_errors(tmp_path, capsys, shared_data) -> None:
    from experiments.stream import main

    clip = shared_data / "clips" / "residential_street_traffic.mp4"
    deeplab = shared_data / "models" / "deeplabv3_mnv2_pascal_quant.tflite"
    cases = [
        (["--video", str(tmp_path / "none.mp4"), "--teacher", "yolov8_seg"], "video file not found"),
        (
            ["--video", str(clip), "--teacher", "yolov8_seg", "--model", str(tmp_path / "x.tflite")],
            "not found",
        ),
        (
            ["--video", str(clip), "--teacher", "yolov8_seg", "--model", str(deeplab)],
            "not a YOLOv8-seg model",
        ),
        (["--video", str(clip)], "needs --teacher"),
    ]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\0" * 1000)
    cases.append((["--video", str(bad), "--teacher", "yolov8_seg"], "bad.mp4"))
    for argv, msg in cases:
        rc = main([*argv, "--live", "--out", str(tmp_path / "run"), "--no-progress"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) >= 1 and err[-1].startswith("error: ") and msg in err[-1], (argv, err)


# ---- a teacher slower than the stream --------------------------------------------------------------

#: The module's settings with each label arriving 2 frames late (one more compiled program, shared by the
#: store-backed and the live run).
DELAYED = dataclasses.replace(CFG, teacher_delay=2)


def test_live_run_with_a_late_teacher_matches_store_backed_run(world, tmp_path) -> None:
    """With labels arriving d frames late, a live run takes the store-backed run's decisions and ends with
    its parameters; the teacher runs on the teacher frames only, and the host syncs once per teacher
    frame (at the frame where the label arrives)."""
    stream, store_dir, _, _ = world
    compiled = compile_chunk(DELAYED, new_state(DELAYED, jax.random.key(0), (H, W)), H, W)
    stored = run_stream(
        _StoreBacked(stream, store_dir), DELAYED, jax.random.key(0), progress=False, compiled=compiled
    )
    labeller = _Counting(store_labeller(store_dir))
    teacher = StoringTeacher(LiveLabelStore(tmp_path / "labels", _live_header()), labeller)
    live = run_live(_Frames(stream), teacher, DELAYED, jax.random.key(0), progress=False, compiled=compiled)
    _assert_same_run(live, stored)
    pf = stored.per_frame
    teacher_frames = np.flatnonzero(pf["teacher"])
    assert labeller.calls == teacher_frames.tolist() and len(teacher_frames) >= 3
    trained = np.flatnonzero(pf["updates"] > 0)
    assert set(trained.tolist()) <= set((teacher_frames + 2).tolist())  # trained d frames later
    assert len(teacher_frames) <= live.syncs <= len(teacher_frames) + 1
    with pytest.raises(ValueError, match="delta_min > 4"):
        run_live(_Frames(stream), teacher, dataclasses.replace(CFG, teacher_delay=4), jax.random.key(0))


def test_measured_latency_labels_frame_zero_once_and_is_kept(world, tmp_path) -> None:
    """``--teacher-delay auto``: frame 0 is labelled through the store and timed once more; the figure is
    kept beside the run and read back (a resumed run neither measures again nor relabels)."""
    from jitnet_jax.config import latency_frames
    from teacher.live import LiveSource

    stream, store_dir, _, _ = world
    labeller = _Counting(store_labeller(store_dir))
    source = LiveSource(_Frames(stream), _live_header(), labeller)
    ms = source.measure_latency(tmp_path / "labels", tmp_path / "latency.json")
    assert ms >= 0 and labeller.calls == [0, 0, 0, 0]  # stored, then timed warm (median of 3)
    assert LiveLabelStore(tmp_path / "labels", _live_header()).indices() == [0]
    assert source.measure_latency(tmp_path / "labels", tmp_path / "latency.json") == ms
    assert labeller.calls == [0, 0, 0, 0]
    teacher = source.open_teacher(tmp_path / "labels")
    assert not teacher(0, None, "train").ran  # the run reuses frame 0's label
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DataError, match="bad.json"):
        source.measure_latency(tmp_path / "labels", tmp_path / "bad.json")
    assert latency_frames(175.5, 24.0) == 5 and latency_frames(175.5, 25.0) == 5
    assert latency_frames(175.5, 12.5) == 3 and latency_frames(40.0, 25.0) == 1 and latency_frames(0, 25) == 0

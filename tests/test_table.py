"""End to end: ``python -m experiments.table`` on two real lvs_mini streams at a tiny resolution, one column of
every kind and every start (leave-one-out, CamVid-style checkpoint with a mapped head, random), then a rerun
that must reuse every cached result."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import jax
import pytest

from experiments import table
from jitnet_jax.config import ModelConfig, StudentConfig
from jitnet_jax.eval import table as evaltable
from jitnet_jax.eval.table import build
from jitnet_jax.student.pretrained import save_student
from jitnet_jax.student.step import init_state

#: Two streams with the same classes (car_bus_truck): every compiled program is reused for the second one
#: from the persistent XLA cache, which keeps this test fast.
STREAMS = ["highway_cctv1", "parking_lot1"]
FRAMES = 16
#: One column of each kind and start: LOO online, CamVid start with replay, fixed stride, no adaptation from
#: CamVid, the oracle from random init, label hold and flow. (A column's own optimiser, e.g. the paper's SGD
#: of ``cv_sgd_*``, is checked in the cache-key test; it would only add one more compiled program here.)
METHODS = [
    "online_a0.8",
    "cv_adam_a0.9_r16b4",
    "fixed_d8",
    "no_adapt_cv",
    "oracle",
    "hold_d8",
    "hold_d16",
]
CAMVID_CLASSES = ["background", "person", "car_bus_truck", "bicycle_motorcycle"]


def _camvid_like(path):
    """A 4-class checkpoint with class names (like the shipped CamVid student), at the test's width."""
    model = ModelConfig(num_classes=len(CAMVID_CLASSES), width_multiplier=0.25)
    state = init_state(jax.random.key(5), StudentConfig(model=model), (36, 64))
    save_student(path, state, model, info={"classes": CAMVID_CLASSES})
    return path


def _args(lvs, out, camvid, methods):
    return [
        "--lvs",
        str(lvs),
        "--streams",
        *STREAMS,
        "--out",
        str(out),
        "--height",
        "36",
        "--width",
        "64",
        "--max-frames",
        str(FRAMES),
        "--chunk-size",
        "8",
        "--pretrain-epochs",
        "1",
        "--pretrain-every",
        "8",
        "--oracle-epochs",
        "1",
        "--fixed-updates",
        "2",
        "--width-multiplier",
        "0.25",
        "--camvid-init",
        str(camvid),
        "--methods",
        *methods,
        "--no-progress",
    ]


def test_table_end_to_end_and_cache(shared_data, tmp_path, monkeypatch):
    out = tmp_path / "table"
    camvid = _camvid_like(tmp_path / "camvid_ckpt")
    methods = METHODS + (["flow_d16"] if _have_cv2() else [])
    args = _args(shared_data / "lvs_mini", out, camvid, methods)
    assert table.main(args) == 0
    for f in ("table.md", "table.csv", "table.json", "table.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f

    rows = list(csv.reader((out / "table.csv").open()))
    order = [m.name for m in evaltable.methods(pretrain=True, flow=True, camvid=True) if m.name in methods]
    assert rows[0] == ["stream", *order]
    assert [r[0] for r in rows[1:]] == [*STREAMS, "Overall"]
    assert all(len(r) == len(rows[0]) and all(c for c in r) for r in rows)
    assert "(" in rows[1][1] and "x, " in rows[1][1] and rows[1][1].endswith("%)")

    data = json.loads((out / "table.json").read_text())
    for st in STREAMS:
        p = data["streams"][st]
        assert 0 <= p["teacher_stability"]["flip_rate"] <= 1
        for name in methods:
            sm = p["methods"][name]["summary"]
            assert sm["frames"] == FRAMES and 0 <= sm["teacher_fraction"] <= 1
            assert 0 <= p["methods"][name]["stability"]["flip_rate"] <= 1
        fixed = p["methods"]["fixed_d8"]["summary"]
        assert fixed["teacher_frames"] == 2 and fixed["updates"] == 2 * 2  # teacher at 0, 8; 2 updates each
        assert p["methods"]["hold_d16"]["summary"]["teacher_frames"] == 1
        assert p["methods"]["hold_d8"]["summary"]["speedup_cost_model"] == pytest.approx(8.0)
        assert p["methods"]["no_adapt_cv"]["summary"]["teacher_frames"] == 0
        replay = p["methods"]["cv_adam_a0.9_r16b4"]["summary"]
        assert replay["frames_per_update"] == 4 and replay["teacher_frames"] >= 2
        assert p["methods"]["oracle"]["extra"]["train_examples"] == 2
    # the CamVid-style start has 4 classes; the streams' 2-class heads were mapped from it by name
    assert data["streams"]["highway_cctv1"]["class_names"] == ["background", "car_bus_truck"]
    assert (
        out / "pretrained" / "highway_cctv1"
    ).is_dir()  # leave-one-out checkpoint, trained on parking_lot1
    ov = data["overall"]["cv_adam_a0.9_r16b4"]
    assert ov["frames"] == 2 * FRAMES and ov["updates"] >= 1
    md = (out / "table.md").read_text()
    assert "| Overall |" in md and "flip rate" in md

    # rerun: nothing is recomputed (every run and checkpoint comes from the cache)
    def boom(*a, **k):
        raise AssertionError("recomputed a cached result")

    monkeypatch.setattr(build, "run_method", boom)
    monkeypatch.setattr(build, "pretrained_student", boom)
    monkeypatch.setattr(build, "camvid_student", boom)
    before = (out / "table.csv").read_text()
    assert table.main(args) == 0
    assert (out / "table.csv").read_text() == before


def _m(name):
    return next(m for m in evaltable.methods(True, True, True) if m.name == name)


def _settings(tmp_path, **kw):
    """Table settings at the end-to-end test's sizes (nothing is run with them unless a test says so)."""
    from jitnet_jax.config import OnlineConfig, OptimConfig

    base = dict(
        lvs=tmp_path,
        out=tmp_path,
        height=36,
        width=64,
        max_frames=16,
        online=OnlineConfig(student=StudentConfig(optim=OptimConfig("adam", lr=1e-3))),
        fixed_updates=2,
        pretrain=True,
        pretrain_epochs=1,
        pretrain_every=8,
        pretrain_max_per_stream=60,
        oracle_epochs=1,
        oracle_every=8,
        seed=0,
        teacher_ms=325.0,
        stability_threshold=8,
        progress=False,
        camvid=None,
    )
    base.update(kw)
    return evaltable.Settings(**base)


def test_cache_keys_follow_what_determines_a_result(tmp_path):
    """Label hold and flow keys ignore the student settings; student keys include the start and optimiser."""
    from jitnet_jax.config import OnlineConfig, OptimConfig

    def settings(**kw):
        return _settings(tmp_path, **kw)

    classes = ["background", "car_bus_truck"]
    a, b = settings(), settings(online=OnlineConfig(student=StudentConfig(optim=OptimConfig("sgd"))), seed=1)
    for name in ("hold_d8", "flow_d16"):
        assert evaltable.method_key(a, _m(name), "s", classes) == evaltable.method_key(
            b, _m(name), "s", classes
        )
    for name in ("online_a0.8", "oracle", "no_adapt"):
        assert evaltable.method_key(a, _m(name), "s", classes) != evaltable.method_key(
            b, _m(name), "s", classes
        )
    # the method's own optimiser wins over the table's; replay off leaves no replay fields in the key
    k = evaltable.method_key(a, _m("cv_sgd_a0.8"), "s", classes)
    assert k["student"]["optim"]["name"] == "sgd" and k["student"]["optim"]["lr"] == 0.01
    assert "replay_size" not in k["online"]
    kr = evaltable.method_key(a, _m("cv_adam_a0.9_r16b4"), "s", classes)
    assert (kr["online"]["replay_size"], kr["online"]["replay_batch"]) == (16, 4)
    # a short largest stride and a late teacher reach the online config (the delay in frames of the stream)
    kd = evaltable.method_key(a, _m("cv_adam_a0.9_dmax16"), "s", classes)
    assert kd["online"]["delta_max"] == 16 and "teacher_delay" not in kd["online"]
    assert "delta_max" not in k["method"] and "teacher_delay_ms" not in k["method"]
    assert "delta_min" not in k["method"] and "delta_min" not in kd["method"]
    k16 = evaltable.method_key(a, _m("cv_adam_a0.9_d16_r16b4"), "s", classes)  # flow δ16's teacher budget
    assert (k16["online"]["delta_min"], k16["online"]["delta_max"], k16["method"]["delta_min"]) == (
        16,
        16,
        16,
    )
    # more updates per teacher frame reach the online config; u_max left at the table's stays out of the key
    assert "u_max" not in k16["method"] and k16["online"]["u_max"] == 8
    ku = evaltable.method_key(a, _m("cv_adam_a0.9_d16_r16b4_u16"), "s", classes)
    assert (ku["online"]["u_max"], ku["method"]["u_max"], ku["online"]["delta_min"]) == (16, 16, 16)
    kmu = evaltable.method_key(a, _m("cv_adam_a0.9_dmax16_r16b4_u16"), "s", classes)
    assert (kmu["online"]["u_max"], kmu["online"]["delta_min"], kmu["online"]["delta_max"]) == (16, 8, 16)
    assert evaltable.method_key(a, _m("cv_adam_a0.9_d16_r16b4_u32"), "s", classes)["online"]["u_max"] == 32
    for fps, frames in ((25.0, 5), (10.0, 2), (12.5, 3)):
        kl = evaltable.method_key(a, _m("cv_adam_a0.9_dmax16_late"), "s", classes, fps)
        assert kl["online"]["teacher_delay"] == frames  # ceil(175.5 ms x fps)
    with pytest.raises(ValueError, match="fps"):
        evaltable.method_key(a, _m("cv_adam_a0.9_dmax16_late"), "s", classes)
    camvid = tmp_path / "ck"
    camvid.mkdir()
    (camvid / "x").write_bytes(b"1")
    k1 = evaltable.method_key(settings(camvid=camvid), _m("no_adapt_cv"), "s", classes)
    (camvid / "x").write_bytes(b"2")
    k2 = evaltable.method_key(settings(camvid=camvid), _m("no_adapt_cv"), "s", classes)
    assert k1 != k2 and k1["camvid"] != k2["camvid"]


class _Source:
    """A stand-in for a stream's ``StoreSource``: only its ``info`` (nothing is read from it here)."""

    def __init__(self, store_dir):
        self.info = SimpleNamespace(
            name="s", class_names=("background", "person"), num_classes=2, num_frames=16, fps=25.0
        )


def test_a_part_whose_run_raised_is_not_left_locked(tmp_path, monkeypatch):
    """A run that raises releases its part's lock: the next attempt (here in the same process, while the
    failure's traceback still holds the failed call's frames) computes the part instead of skipping it
    as being computed by another process."""
    s = _settings(tmp_path, make_store=lambda settings, stream: tmp_path / "store")
    monkeypatch.setattr(build, "StoreSource", _Source)
    monkeypatch.setattr(build, "teacher_stability", lambda *a: {"flip_rate": 0.0})

    def fail(*a, **k):
        raise RuntimeError("the run failed")

    monkeypatch.setattr(build, "run_method", fail)
    ms = [_m("hold_d8")]
    with pytest.raises(RuntimeError, match="the run failed") as failed:
        build.run_table(s, ["s"], ms)
    summary = {"miou": 0.5, "speedup_cost_model": 8.0, "teacher_fraction": 0.125}
    monkeypatch.setattr(build, "run_method", lambda *a, **k: {"summary": dict(summary)})
    out = build.run_table(s, ["s"], ms)
    assert out["streams"]["s"]["methods"]["hold_d8"]["summary"] == summary and not out["missing"]
    assert failed.traceback  # still alive up to here


def test_bad_arguments_are_one_line(tmp_path, capsys, shared_data):
    lvs = str(shared_data / "lvs_mini")
    assert table.main(["--lvs", lvs, "--streams", "nope", "--out", str(tmp_path)]) == 2
    assert (
        table.main(["--lvs", lvs, "--streams", "bikes1", "--out", str(tmp_path), "--methods", "bogus"]) == 2
    )
    missing = str(tmp_path / "no_ckpt")
    assert (
        table.main(["--lvs", lvs, "--streams", "bikes1", "--out", str(tmp_path), "--camvid-init", missing])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "nope" in err[0] and "bogus" in err[1] and "no_ckpt" in err[2]


def _have_cv2():
    from teacher.flow import have_opencv

    return have_opencv()

"""The measured cost model: its speedups, its file, its measurement (stubbed timers) and the table's use of it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from jitnet_jax.data.label_store import DataError
from jitnet_jax.eval import measured_costs as mc
from jitnet_jax.eval.measured_costs import MeasuredCosts, load_costs, load_or_measure, measured_speedups
from jitnet_jax.eval.table.claims import speed_claims, speed_claims_markdown
from jitnet_jax.eval.table.methods import Method


def _costs(**kw) -> MeasuredCosts:
    base = dict(
        teacher_ms=40.0,
        predict_ms=10.0,
        update_ms={1: 30.0, 4: 100.0},
        flow_ms=20.0,
        height=18,
        width=32,
        teacher="yolov8_seg",
        machine="test cpu",
    )
    return MeasuredCosts(**{**base, **kw})


def test_speedup_uses_the_measured_costs_per_kind() -> None:
    c = _costs()
    assert c.bound == pytest.approx(4.0)
    # online, 100 frames, 10 teacher frames, 5 updates of B=4: 40*100 / (10*90 + 40*10 + 100*5)
    assert c.speedup("online", 100, 10, 5, 4) == pytest.approx(4000 / (900 + 400 + 500))
    assert c.speedup("online", 100, 10, 5, 1) == pytest.approx(4000 / (900 + 400 + 150))
    assert c.speedup("no_adapt", 100, 0, 0, 1) == pytest.approx(c.bound)
    assert c.speedup("hold", 100, 10, 0, 1) == pytest.approx(10.0)
    assert c.speedup("flow", 100, 10, 0, 1) == pytest.approx(4000 / (20 * 90 + 400))
    with pytest.raises(DataError, match="B=2"):
        c.speedup("online", 100, 10, 5, 2)


def test_overall_speedup_costs_each_update_with_its_own_batch() -> None:
    def part(n: int, t: int, u: int, b: int) -> dict:
        return {"summary": {"frames": n, "teacher_frames": t, "updates": u, "frames_per_update": b}}

    results = {
        "streams": {
            "a": {"methods": {"on": part(100, 10, 5, 4), "fl": part(100, 10, 0, 1)}},
            "b": {"methods": {"on": part(50, 5, 2, 4), "fl": part(50, 5, 0, 1)}},
        }
    }
    out = measured_speedups(results, {"on": "online", "fl": "flow"}, _costs())
    assert out["streams"]["a"]["on"] == pytest.approx(4000 / 1800)
    assert out["overall"]["on"] == pytest.approx(40 * 150 / (10 * 135 + 40 * 15 + 100 * 7))
    assert out["overall"]["fl"] == pytest.approx(40 * 150 / (20 * 135 + 40 * 15))
    bad = {"streams": {"a": {"methods": {"on": {"summary": {"frames": 3}}}}}}
    with pytest.raises(DataError, match="a/on.*teacher_frames"):
        measured_speedups(bad, {"on": "online"}, _costs())


def test_costs_file_round_trips_is_reused_and_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    path = tmp_path / "costs.json"
    calls = []

    def measure() -> MeasuredCosts:
        calls.append(1)
        return _costs(flow_ms=float("nan"))

    first, fresh = load_or_measure(path, measure)
    again, fresh2 = load_or_measure(path, measure)
    assert (fresh, fresh2, len(calls)) == (True, False, 1)
    assert again.update_ms == {1: 30.0, 4: 100.0} and math.isnan(again.flow_ms)
    assert json.loads(path.read_text())["bound"] == pytest.approx(4.0)
    body = json.loads(path.read_text())
    body["predict_ms"] = "fast"
    path.write_text(json.dumps(body))
    with pytest.raises(DataError, match=r"costs.json: field predict_ms") as e:
        load_or_measure(path, measure)
    assert "\n" not in str(e.value)
    path.write_text("{not json")
    with pytest.raises(DataError, match="unreadable measured-costs file"):
        load_costs(path)
    del body["predict_ms"]
    path.write_text(json.dumps(body))
    with pytest.raises(DataError, match="missing field predict_ms"):
        load_costs(path)


def test_measure_costs_times_each_cost_once_with_a_stubbed_clock(monkeypatch) -> None:
    clock = iter(np.arange(0.0, 100.0, 0.005))  # every perf_counter call 5 ms later than the last
    monkeypatch.setattr(mc.time, "perf_counter", lambda: next(clock))
    frames = [np.full((18, 32, 3), i, np.uint8) for i in range(4)]
    seen = {"teacher": 0, "flow": 0}

    def teacher(frame: np.ndarray) -> np.ndarray:
        seen["teacher"] += 1
        return frame[..., 0]

    def flow(label: np.ndarray, prev: np.ndarray, frame: np.ndarray) -> np.ndarray:
        seen["flow"] += 1
        assert label.shape == frame.shape[:2]
        return label

    def student(model, h, w, batches, repeats):
        assert (h, w, list(batches)) == (18, 32, [1, 4])
        return {"predict_ms": 2.0, "update_ms": {1: 6.0, 4: 20.0}}

    c = mc.measure_costs(frames, teacher, "stub", None, (1, 4), flow=flow, timer_student=student, warmup=2)
    assert seen == {"teacher": 5, "flow": 5}  # two untimed calls each, then 3 timed
    assert c.teacher_ms == pytest.approx(5.0) and c.flow_ms == pytest.approx(5.0)
    assert (c.predict_ms, c.update_ms, c.height, c.width, c.teacher) == (
        2.0,
        {1: 6.0, 4: 20.0},
        18,
        32,
        "stub",
    )
    with pytest.raises(ValueError, match="at least 2 frames"):
        mc.measure_costs(frames[:1], teacher, "stub", None, timer_student=student)


def test_machine_names_the_simd_level() -> None:
    assert any(s in mc.machine() for s in ("AVX-512 VNNI", "AVX-512", "AVX2", "no AVX2"))


def _ov(**pts):
    return {n: {"miou": m, "speedup_cost_model": s} for n, (m, s) in pts.items()}


def test_speed_claims_answer_whether_online_is_as_accurate_and_as_fast_as_flow() -> None:
    ms = [Method("on_a", "online"), Method("on_b", "online"), Method("flow_d16", "flow", delta=16)]
    ov = _ov(on_a=(0.62, 3.4), on_b=(0.57, 6.1), flow_d16=(0.611, 8.6))
    c = speed_claims(ov, ms, {n: v["speedup_cost_model"] for n, v in ov.items()})
    assert not c["answer"]
    assert c["as_accurate_fastest"]["name"] == "on_a" and c["as_fast_most_accurate"] is None
    assert [p["name"] for p in c["front"]] == ["on_a", "flow_d16"]
    assert "**NO**" in speed_claims_markdown(c, "test costs")
    c2 = speed_claims(ov, ms, {"on_a": 9.0, "on_b": 6.1, "flow_d16": 8.6})
    assert c2["answer"] and c2["as_fast_most_accurate"]["name"] == "on_a"
    assert speed_claims(ov, ms[:2], {"on_a": 1.0, "on_b": 1.0}) is None


def test_table_rewrite_adds_measured_speedups_beside_the_papers(tmp_path: Path) -> None:
    from experiments.table import main

    lvs = tmp_path / "lvs"
    (lvs / "s1").mkdir(parents=True)
    (lvs / "streams.json").write_text(json.dumps({"s1": [["car"]]}))
    out = tmp_path / "out"
    out.mkdir()

    def part(kind_fields: dict) -> dict:
        sm = {"miou": 0.5, "teacher_fraction": 0.1, "speedup_cost_model": 5.0, "wall_s": 1.0, "frames": 100}
        return {
            "summary": {**sm, **kind_fields},
            "stability": {"flip_rate": 0.01},
            "extra": {"flow_frames": 90},
        }

    table = {
        "settings": {"height": 18, "width": 32, "max_frames": None, "argv": ["old"]},
        "streams": {
            "s1": {
                "class_names": ["background", "car"],
                "frames": 100,
                "teacher_stability": {"flip_rate": 0.01},
                "methods": {
                    "hold_d16": part({"teacher_frames": 10, "updates": 0}),
                    "flow_d16": part({"teacher_frames": 10, "updates": 0}),
                },
            }
        },
    }
    (out / "table.json").write_text(json.dumps(table))
    (out / "costs.json").write_text(json.dumps(_costs().to_json()))
    argv = ["--lvs", str(lvs), "--out", str(out), "--rewrite", "--camvid-init", "none", "--no-progress"]
    assert main(argv) == 0
    md = (out / "table.md").read_text()
    assert "0.500 (5.0x / 10.0x, 10.0%)" in md  # hold: paper 5.0x (as stored) / measured N/T = 10x
    assert "## Cost models" in md and "test cpu" in md and "| 4.0x |" in md
    data = json.loads((out / "table.json").read_text())
    assert data["overall"]["flow_d16"]["speedup_measured_costs"] == pytest.approx(4000 / (20 * 90 + 400))
    assert data["costs"]["measured"]["teacher"] == "yolov8_seg"
    assert data["settings"]["argv"] == ["old"] and "rewrite_argv" in data["settings"]
    # a costs file of another teacher is a one-line error
    assert main([*argv, "--cost-teacher", "yolov8n-seg-tta"]) == 2
    assert main([*argv, "--cost-teacher", "maskrcnn"]) == 2

"""The oracle's capacity: the half-width oracle column, the one-second counts a table part keeps, windowed
mIoU, the capacity table and the windowed plot (tiny synthetic shapes)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from experiments import capacity
from jitnet_jax.config import ModelConfig, OnlineConfig, OptimConfig, StudentConfig
from jitnet_jax.data.synthetic import SyntheticStream
from jitnet_jax.eval import table as evaltable
from jitnet_jax.eval import windowed
from jitnet_jax.eval.table.run import run_method
from jitnet_jax.student.metrics import iou_from_counts

H, W = 32, 48


def _m(name: str) -> evaltable.Method:
    return next(m for m in evaltable.methods(True, True, True) if m.name == name)


def _settings(tmp_path, **kw) -> evaltable.Settings:
    student = StudentConfig(model=ModelConfig(width_multiplier=0.25), optim=OptimConfig("adam", lr=1e-3))
    base = dict(
        lvs=tmp_path,
        out=tmp_path,
        height=H,
        width=W,
        max_frames=16,
        online=OnlineConfig(student=student, chunk_size=8),
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


def test_half_width_oracle_column_and_its_key(tmp_path):
    """``oracle_w0.5`` is in the catalogue next to ``oracle``: the oracle from random init at half the
    table's width; the plain oracle's key has no width field (earlier parts stay valid)."""
    names = [m.name for m in evaltable.methods(True, True, True)]
    assert names.index("oracle_w0.5") == names.index("oracle") + 1
    m = _m("oracle_w0.5")
    assert (m.kind, m.start, m.delta, m.width_scale) == ("oracle", "random", 8, 0.5)
    s = _settings(tmp_path)
    classes = ["background", "car_bus_truck"]
    assert evaltable.student_config(s, 2, m).model.width_multiplier == pytest.approx(0.125)
    assert evaltable.student_config(s, 2, _m("oracle")).model.width_multiplier == pytest.approx(0.25)
    k, k0 = (evaltable.method_key(s, _m(n), "s", classes) for n in ("oracle_w0.5", "oracle"))
    assert k["student"]["model"]["width_multiplier"] == pytest.approx(0.125)
    assert k["method"]["width_scale"] == 0.5 and "width_scale" not in k0["method"]
    assert k != k0


def test_width_scale_is_checked():
    """A bad width or a pretrained start at another width is a one-line error naming the field."""
    with pytest.raises(ValueError, match="width_scale must be > 0"):
        evaltable.Method("o", "oracle", start="random", width_scale=0.0)
    with pytest.raises(ValueError, match="width_scale 0.5 needs start 'random'"):
        evaltable.Method("o", "oracle", start="camvid", width_scale=0.5)


def test_half_width_oracle_runs_and_its_part_keeps_one_second_counts(tmp_path):
    """The half-width oracle trains and predicts at half the width, and the part keeps the run's counts
    in one-second bins that add up to the part's own totals."""
    s = _settings(tmp_path)
    source = SyntheticStream(num_frames=20, height=H, width=W, cuts=(), fps=6.0)
    parts = {}
    for name in ("oracle", "oracle_w0.5"):
        m = _m(name)
        cfg = evaltable.student_config(s, source.info.num_classes, m)
        parts[name] = run_method(s, m, source, cfg, None)
    half = parts["oracle_w0.5"]
    bins = half["extra"]["bins"]
    assert (bins["fps"], bins["bin_frames"]) == (6.0, 6)
    assert bins["frames"] == [6, 6, 4]  # max_frames 16: frames 0..15 in bins of 6
    sm = half["summary"]
    totals = (np.asarray(bins[k]).sum(0) for k in ("tp", "fp", "fn"))
    assert iou_from_counts(*totals)["miou"] == pytest.approx(sm["miou"], nan_ok=True)
    assert sum(bins["updates"]) == 0 and sum(bins["teacher"]) == 0
    assert half["extra"]["train_examples"] == parts["oracle"]["extra"]["train_examples"] == 2

    def n_params(name: str) -> int:
        cfg = evaltable.student_config(s, source.info.num_classes, _m(name))
        state = evaltable.initial_state(s, cfg, None)
        return sum(x.size for x in jax.tree_util.tree_leaves(state.params))

    assert n_params("oracle_w0.5") < n_params("oracle") / 2


def _per_frame(n: int, c: int = 2) -> dict[str, np.ndarray]:
    """Per-frame rows: frame t has tp = t, fp = 1, fn = 0 on class 1 and 10 background tp; an update on
    every 4th frame, the teacher on every 8th."""
    t = np.arange(n)
    tp = np.zeros((n, c), np.int64)
    fp = np.zeros((n, c), np.int64)
    fn = np.zeros((n, c), np.int64)
    tp[:, 0], tp[:, 1], fp[:, 1] = 10, t, 1
    return {
        "frame": t,
        "teacher": (t % 8 == 0),
        "updates": (t % 4 == 0).astype(np.int32),
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def test_frame_bins_and_windowed_scores():
    pf = _per_frame(25)
    bins = windowed.frame_bins(pf, fps=4.0)  # 4 frames per bin: 7 bins, the last with 1 frame
    assert bins["bin_frames"] == 4 and bins["frames"] == [4] * 6 + [1]
    assert np.asarray(bins["tp"])[:, 1].tolist() == [6, 22, 38, 54, 70, 86, 24]
    assert sum(bins["updates"]) == 7 and sum(bins["teacher"]) == 4
    w = windowed.windowed_scores(bins, window_s=3.0)  # 3 bins = 12 frames per window
    assert [(x["start"], x["stop"], x["frames"]) for x in w] == [(0, 12, 12), (12, 24, 12), (24, 28, 1)]
    assert w[0]["miou"] == pytest.approx(66 / 78) and w[1]["miou"] == pytest.approx(210 / 222)
    assert w[2]["miou"] == pytest.approx(24 / 25)
    assert [x["updates"] for x in w] == [3, 3, 1] and w[1]["start_s"] == 3.0
    json.dumps(bins)  # JSON-ready, as a part stores it
    with pytest.raises(ValueError, match="fps must be > 0"):
        windowed.frame_bins(pf, fps=0.0)
    with pytest.raises(ValueError, match="window_s must be at least one bin"):
        windowed.windowed_scores(bins, window_s=0.2)
    with pytest.raises(ValueError, match="no field 'updates'"):
        windowed.frame_bins({k: v for k, v in pf.items() if k != "updates"}, fps=4.0)


def _part(miou: float, scenes: list[float], pf: dict[str, np.ndarray]) -> dict:
    return {
        "summary": {"miou": miou},
        "extra": {
            "bins": windowed.frame_bins(pf, fps=4.0),
            "scenes": [{"miou": v, "updates": 3, "teacher_frames": 1} for v in scenes],
        },
    }


def _table() -> dict:
    """A table.json of one plain stream and one two-scene stream."""
    pf = _per_frame(24)
    one = {"frames": 24, "methods": {}}
    for name, v in (("online", 0.5), ("oracle", 0.7), ("oracle_w0.5", 0.6)):
        p = _part(v, [], pf)
        del p["extra"]["scenes"]
        one["methods"][name] = p
    scenes = [
        {"name": "a", "part": "a[0:12]", "frames": [0, 12]},
        {"name": "b", "part": "b[0:12]", "frames": [12, 24]},
    ]
    two = {
        "frames": 24,
        "scenes": scenes,
        "methods": {
            "online": _part(0.6, [0.5, 0.7], pf),
            "oracle": _part(0.55, [0.6, 0.5], pf),
        },
    }
    return {"streams": {"a[0:24]": one, "a[0:12]+b[0:12]": two}}


def test_capacity_table_reports_the_oracles_lead_overall_and_per_scene():
    cap = windowed.capacity_rows(_table(), "online", ["oracle", "oracle_w0.5"])
    one, two = cap["streams"]
    assert (one["scenes"], two["scenes"]) == (1, 2)
    assert one["lead"]["oracle"] == pytest.approx(0.2) and one["lead"]["oracle_w0.5"] == pytest.approx(0.1)
    assert one["per_scene"][0]["miou"]["oracle"] == 0.7 and one["per_scene"][0]["updates"] == 6
    assert two["lead"]["oracle"] == pytest.approx(-0.05) and np.isnan(two["lead"]["oracle_w0.5"])
    assert [sc["lead"]["oracle"] for sc in two["per_scene"]] == pytest.approx([0.1, -0.2])
    md = windowed.capacity_markdown(cap)
    assert "| `a[0:12]+b[0:12]` | A B | 24 | 0.600 | 0.550 |  | -0.050 |  |" in md
    assert "| A B (24 frames) | `a[0:12]` | 12 | 0.500 | 0.600 |  | +0.100 |  | 3 |" in md
    assert windowed.scene_letters([{"name": n, "part": n} for n in "xyzxyz"]) == "A B C A B C"
    with pytest.raises(ValueError, match="no streams"):
        windowed.capacity_rows({"streams": {}}, "online", ["oracle"])


def test_windowed_cli_writes_the_capacity_table_and_plots(tmp_path, capsys):
    path = tmp_path / "table.json"
    path.write_text(json.dumps(_table()))
    args = ["--table", str(path), "--out", str(tmp_path / "o"), "--online", "online", "--window-s", "2", "30"]
    assert capacity.main(args) == 0
    for f in ("capacity.md", "capacity.json", "windowed_2s.png", "windowed_30s.png"):
        assert (tmp_path / "o" / f).stat().st_size > 0, f
    assert json.loads((tmp_path / "o" / "capacity.json").read_text())["online"] == "online"
    # a table whose parts have no bins (computed before they were kept), and a missing table: one line
    old = _table()
    for st in old["streams"].values():
        for p in st["methods"].values():
            del p["extra"]["bins"]
    path.write_text(json.dumps(old))
    capsys.readouterr()
    assert capacity.main(["--table", str(path), "--out", str(tmp_path / "o2")]) == 2
    assert capacity.main(["--table", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o3")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "extra.bins" in err[0] and "nope.json" in err[1]

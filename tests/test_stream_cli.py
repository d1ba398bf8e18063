"""``python -m experiments.stream``: flag validation and complete outputs on synthetic and real streams."""

from __future__ import annotations

import csv
import json

import imageio.v3 as iio
import pytest

from experiments import stream

#: The size and chunk of tests/test_resume.py and tests/test_live.py: a run without video compiles the same
#: program as theirs (compiled once per suite run, then loaded from the persistent cache).
H, W = 24, 32
TINY = ["--height", str(H), "--width", str(W), "--chunk-size", "4", "--no-progress"]


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--a-thr", "0"], "a_thr"),
        (["--a-thr", "1.2"], "a_thr"),
        (["--delta-min", "16", "--delta-max", "8"], "delta_min"),
        (["--u-max", "0"], "u_max"),
        (["--frames", "0"], "--frames"),
        (["--set", "online.student.model.width_multiplier=-1"], "width_multiplier"),
        (["--set", "online.nope=1"], "unknown config field"),
        (["--stream", "residential_street1"], "--lvs"),
        (["--teacher-delay", "auto"], "needs --live"),
    ],
)
def test_bad_flags_rejected_before_work(flags, needle, tmp_path, capsys) -> None:
    rc = stream.main(flags + ["--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2
    assert needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_synthetic_run_writes_all_outputs(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    rc = stream.main(["--frames", "40", *TINY, "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "mIoU (foreground)" in text and "speedup (cost model)" in text
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "miou",
        "class_iou",
        "frames",
        "teacher_frames",
        "teacher_fraction",
        "updates",
        "speedup_cost_model",
        "speedup_flops",
        "wall_s",
    ):
        assert key in summary
    assert summary["frames"] == 40 and summary["teacher_frames"] >= 40 // 8
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["online"]["chunk_size"] == 4 and cfg["height"] == H
    rows = list(csv.DictReader((out / "per_frame.csv").open()))
    assert len(rows) == 40 and rows[0]["teacher"] == "1"
    assert (out / "timeline.png").stat().st_size > 1000
    frames = list(iio.imiter(out / "video.mp4"))
    assert len(frames) == 40 and frames[0].shape[1] == 3 * W
    # a finished run is never overwritten
    assert stream.main(["--frames", "40", *TINY, "--out", str(out)]) == 2


def test_real_lvs_stream_runs(shared_data, tmp_path) -> None:
    out = tmp_path / "bikes"
    rc = stream.main(
        [
            "--lvs",
            str(shared_data / "lvs_mini"),
            "--stream",
            "bikes1",
            "--frames",
            "40",
            *TINY,
            "--no-video",
            "--cache-dir",
            str(tmp_path / "stores"),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stream"] == "bikes1" and summary["frames"] == 40
    assert list(summary["class_iou"])[0] == "background" and len(summary["class_iou"]) == 4
    # a real stream starts from the shipped CamVid student with the table's best controller setting
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["online"]["a_thr"], cfg["online"]["delta_max"]) == (0.9, 16)
    assert "init" in cfg["fingerprint"]

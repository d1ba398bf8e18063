"""End to end: ``python -m experiments.table`` on two real lvs_mini streams at low resolution, then a rerun
that must reuse every cached result."""

from __future__ import annotations

import csv
import json

import pytest

from experiments import table

STREAMS = ["bikes1", "highway_cctv1"]


def _args(lvs, out):
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
        "24",
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
        "--no-progress",
    ]


def test_table_end_to_end_and_cache(shared_data, tmp_path, monkeypatch):
    out = tmp_path / "table"
    assert table.main(_args(shared_data / "lvs_mini", out)) == 0
    names = [m.name for m in table.methods(pretrain=True, flow=_have_cv2())]
    for f in ("table.md", "table.csv", "table.json", "table.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f

    rows = list(csv.reader((out / "table.csv").open()))
    assert rows[0] == ["stream", *names]
    assert [r[0] for r in rows[1:]] == [*STREAMS, "Overall"]
    assert all(len(r) == len(rows[0]) and all(c for c in r) for r in rows)
    assert "(" in rows[1][1] and "x, " in rows[1][1] and rows[1][1].endswith("%)")

    data = json.loads((out / "table.json").read_text())
    for st in STREAMS:
        p = data["streams"][st]
        assert 0 <= p["teacher_stability"]["flip_rate"] <= 1
        for name in names:
            sm = p["methods"][name]["summary"]
            assert sm["frames"] == 24 and 0 <= sm["teacher_fraction"] <= 1
            assert 0 <= p["methods"][name]["stability"]["flip_rate"] <= 1
        fixed = p["methods"]["fixed_d8"]["summary"]
        assert (
            fixed["teacher_frames"] == 3 and fixed["updates"] == 2 * 3
        )  # teacher at 0, 8, 16; 2 updates each
        assert p["methods"]["hold_d16"]["summary"]["teacher_frames"] == 2
        assert p["methods"]["hold_d8"]["summary"]["speedup_cost_model"] == pytest.approx(8.0)
        assert p["methods"]["no_adapt"]["summary"]["teacher_frames"] == 0
    assert (out / "pretrained" / "bikes1").is_dir()  # leave-one-out checkpoint, trained on highway_cctv1
    md = (out / "table.md").read_text()
    assert "| Overall |" in md and "flip rate" in md

    # rerun: nothing is recomputed (every run and checkpoint comes from the cache)
    def boom(*a, **k):
        raise AssertionError("recomputed a cached result")

    monkeypatch.setattr(table, "run_method", boom)
    monkeypatch.setattr(table, "pretrained_student", boom)
    before = (out / "table.csv").read_text()
    assert table.main(_args(shared_data / "lvs_mini", out)) == 0
    assert (out / "table.csv").read_text() == before


def test_bad_arguments_are_one_line(tmp_path, capsys, shared_data):
    assert (
        table.main(["--lvs", str(shared_data / "lvs_mini"), "--streams", "nope", "--out", str(tmp_path)]) == 2
    )
    assert (
        table.main(
            [
                "--lvs",
                str(shared_data / "lvs_mini"),
                "--streams",
                "bikes1",
                "--out",
                str(tmp_path),
                "--methods",
                "bogus",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "nope" in err[0] and "bogus" in err[1]


def _have_cv2():
    from teacher.flow import have_opencv

    return have_opencv()

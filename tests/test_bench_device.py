"""``python -m experiments.bench_device`` at tiny sizes on CPU: every part prints, the numbers reach the JSON,
bad flags are one line."""

from __future__ import annotations

import json

import pytest

from experiments import bench_device


def test_bad_flags_are_one_line(capsys) -> None:
    for flags in (["--sizes", "180by320"], ["--dtypes", "float16"], ["--fleet-n", "0"], ["--repeats", "0"]):
        assert bench_device.main(flags) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err


@pytest.mark.slow
def test_tiny_run_prints_every_part(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    flags = ["--sizes", "16x16,24x32", "--dtypes", "float32,bfloat16", "--repeats", "1", "--calls", "1"]
    flags += ["--loop-size", "16x16", "--loop-frames", "8", "--chunk-size", "4"]
    flags += ["--fleet-n", "1,2", "--fleet-size", "16x16", "--fleet-frames", "4", "--mode", "map"]
    assert bench_device.main([*flags, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("backend cpu, ") and "jax " in text.splitlines()[0]
    for needle in ("24x32  bfloat16", "16x16   float32", "N=1 ", "N=2 ", "programs compiled"):
        assert needle in text, text
    data = json.loads(out.read_text())
    assert [(r["size"], r["dtype"]) for r in data["latency"]] == [
        ("16x16", "float32"),
        ("16x16", "bfloat16"),
        ("24x32", "float32"),
        ("24x32", "bfloat16"),
    ]
    assert all(r["predict_ms"] > 0 and r["train_ms"] > 0 for r in data["latency"])
    assert [r["dtype"] for r in data["loop"]] == ["float32", "bfloat16"] and all(
        r["fps"] > 0 for r in data["loop"]
    )
    assert [r["n"] for r in data["fleet"]] == [1, 2] and all(r["fps"] > 0 for r in data["fleet"])
    assert data["compiles"] == 2 * 4 + 2 + 2

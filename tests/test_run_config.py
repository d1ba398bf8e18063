"""How a command line becomes a run config (``jitnet_jax.run_config``): the order in which settings apply, and
the settings a command cannot honour refused before any work."""

from __future__ import annotations

import json

import pytest

from experiments import stream, sweep
from jitnet_jax.run_config import REAL_STREAM_PRESET, make_config


def _stream_cfg(*flags: str):
    return make_config(stream.build_parser().parse_args(list(flags)))


def test_a_partial_config_file_keeps_the_real_stream_preset(tmp_path) -> None:
    """A hand-written ``--config`` naming one field changes that field only: the real-stream preset
    (a_thr 0.9, δ ≤ 16) and every other default stay."""
    assert REAL_STREAM_PRESET == ("online.a_thr=0.9", "online.delta_max=16")
    path = tmp_path / "partial.json"
    path.write_text(json.dumps({"online": {"u_max": 4}}))
    cfg = _stream_cfg("--store", str(tmp_path / "store"), "--config", str(path))
    assert cfg.online.u_max == 4
    assert (cfg.online.a_thr, cfg.online.delta_max) == (0.9, 16)
    preset_only = _stream_cfg("--store", str(tmp_path / "store"))
    assert cfg.online.student == preset_only.online.student and cfg.height == preset_only.height


def test_a_full_config_file_round_trips(tmp_path) -> None:
    """The ``config.json`` a run writes, read back with ``--config``, is the same run config (its record
    keys skipped), and flags still override it."""
    from jitnet_jax.config import to_dict

    cfg = _stream_cfg("--a-thr", "0.7", "--lr", "0.003", "--height", "90", "--width", "160")
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**to_dict(cfg), "stream": "synthetic", "class_names": ["a"]}))
    assert _stream_cfg("--config", str(path)) == cfg
    assert _stream_cfg("--config", str(path), "--u-max", "3").online.u_max == 3


@pytest.mark.parametrize(
    "content, needle",
    [
        ('{"online": {"nope": 1}}', "unknown config field OnlineConfig.nope"),
        ('{"online": 3}', "config field RunConfig.online must be an object"),
        ("[1, 2]", "cannot read run config"),
        ("{not json", "cannot read run config"),
    ],
)
def test_a_bad_config_file_is_one_line(tmp_path, content, needle) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=needle) as e:
        _stream_cfg("--config", str(path))
    assert "\n" not in str(e.value)


def test_sweep_refuses_an_automatic_teacher_delay(tmp_path, capsys) -> None:
    """``--teacher-delay auto`` needs live mode (it measures the teacher); the sweep has none, so it is refused
    with a one-line error before anything runs, instead of sweeping with no delay."""
    out = tmp_path / "sweep"
    rc = sweep.main(
        ["--grid", "a_thr=0.7,0.8", "--frames", "8", "--teacher-delay", "auto", "--out", str(out)]
    )
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.strip() == "error: --teacher-delay auto needs --live (on stored labels give D frames)"
    assert not out.exists()

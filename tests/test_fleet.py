"""The fleet: cameras with their own lengths and classes in one program, under one teacher budget."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jitnet_jax.config import OnlineConfig
from jitnet_jax.data.synthetic import SyntheticStream
from jitnet_jax.data.types import IGNORE_LABEL, StreamInfo
from jitnet_jax.fleet import (
    Budget,
    Ledger,
    RemappedSource,
    camera_per_frame,
    class_mask,
    label_lut,
    make_fleet,
    run_fleet,
    split_rows,
    summarize_fleet,
    union_classes,
)
from jitnet_jax.fleet.driver import checkpoint_rows
from jitnet_jax.fleet.schedule import grant
from jitnet_jax.online.runner import run_stream
from jitnet_jax.sweep.driver import stream_miou

H, W, T = 32, 48, 8


class DropClass:
    """A synthetic stream without its last class (its pixels become background): a camera with fewer classes."""

    def __init__(self, source: SyntheticStream) -> None:
        self.source = source
        i = source.info
        self.info = StreamInfo(
            i.name + "-nowalker", i.num_frames, i.height, i.width, i.fps, i.class_names[:-1], i.teacher
        )

    def chunks(self, chunk_size: int, start: int = 0):
        last = len(self.source.info.class_names) - 1
        for c in self.source.chunks(chunk_size, start):
            yield c._replace(labels=np.where(c.labels == last, 0, c.labels).astype(np.uint8))


def _cfg(num_classes: int) -> OnlineConfig:
    cfg = OnlineConfig(chunk_size=T)
    model = dataclasses.replace(cfg.student.model, num_classes=num_classes)
    return dataclasses.replace(cfg, student=dataclasses.replace(cfg.student, model=model))


def test_union_masks_and_label_renumbering():
    union = union_classes([("background", "person"), ("background", "car", "person"), ("background", "car")])
    assert union == ("background", "person", "car")
    assert class_mask(("background", "car"), union).tolist() == [True, False, True]
    lut = label_lut(("background", "car", "person"), union)
    assert lut[:3].tolist() == [0, 2, 1] and lut[IGNORE_LABEL] == IGNORE_LABEL
    with pytest.raises(ValueError, match="camera 1: class names must start with 'background'"):
        union_classes([("background", "a"), ("a", "background")])
    src = DropClass(SyntheticStream(num_frames=9, height=H, width=W, seed=3))
    remapped = RemappedSource(src, ("background", "car", "disc"))
    raw, new = next(src.chunks(T)), next(remapped.chunks(T))
    assert remapped.info.class_names == ("background", "car", "disc")
    np.testing.assert_array_equal(
        new.labels, label_lut(src.info.class_names, remapped.info.class_names)[raw.labels]
    )
    assert not np.array_equal(new.labels, raw.labels)


def _ledger(since):
    z = jnp.zeros((len(since),), jnp.int32)
    acc = jnp.zeros((len(since),), jnp.float32)
    return Ledger(waits=z, since=jnp.asarray(since, jnp.int32), last_acc=acc, frames=z, used=z)


def test_scheduler_grants_by_policy_within_the_budget():
    req = jnp.asarray([True, True, False, True])
    valid = jnp.ones((4,), bool)
    delta = jnp.asarray([8, 4, 16, 16], jnp.int32)
    led = _ledger([12, 10, 50, 16])  # need's priority since / delta: 1.5, 2.5, (not asking), 1.0

    def granted(budget, ledger=led):
        return grant(budget, ledger, req, valid, delta).tolist()

    assert granted(Budget()) == [True, True, False, True]  # independent: all
    assert granted(Budget("need", per_tick=1)) == [False, True, False, False]
    assert granted(Budget("need", per_tick=2)) == [True, True, False, False]
    assert granted(Budget("round_robin", per_tick=1)) == [False, False, False, True]  # longest unlabelled
    starving = _ledger([12, 10, 50, 70])  # camera 3 has gone past `starve` unlabelled
    assert granted(Budget("need", per_tick=1, starve=64), starving) == [False, False, False, True]
    # a running cap: 0.1 of (100 + 4) camera-frames + 4 cameras = 14 frames; 13 used -> one more allowed
    capped = led.replace(frames=jnp.full((4,), 25, jnp.int32), used=jnp.asarray([4, 3, 3, 3], jnp.int32))
    assert int(grant(Budget("need", fraction=0.1), capped, req, valid, delta).sum()) == 1
    with pytest.raises(ValueError, match="policy 'need' needs a budget"):
        Budget("need").validate()
    with pytest.raises(ValueError, match="policy must be one of"):
        Budget("fifo").validate()


@pytest.fixture(scope="module")
def fleet_runs():
    a = SyntheticStream(num_frames=40, height=H, width=W, seed=0)
    b = SyntheticStream(num_frames=25, height=H, width=W, seed=1)
    c = DropClass(SyntheticStream(num_frames=32, height=H, width=W, seed=2))
    fleet = make_fleet([a, b, c])
    cfg = _cfg(len(fleet.classes))
    indep = run_fleet(fleet, cfg, Budget(), seed=0, mode="lockstep", progress=False)
    need = run_fleet(fleet, cfg, Budget("need", per_tick=1), seed=0, mode="lockstep", progress=False)
    return fleet, cfg, (a, b, c), indep, need


def test_independent_cameras_equal_their_single_runs(fleet_runs):
    fleet, cfg, (a, b, c), indep, _ = fleet_runs
    for i, src in enumerate((a, b)):  # the fleet's classes are theirs: the same math, bit for bit
        single = run_stream(src, cfg, key=jax.random.key(0), progress=False)
        pf = indep.result.per_frame[i]
        assert len(pf["frame"]) == src.info.num_frames  # a camera whose stream ended stops there
        for k, v in single.per_frame.items():
            np.testing.assert_array_equal(pf[k], v, err_msg=f"camera {i}: {k}")
    # camera c has one class fewer: its head's class never appears in its predictions or labels
    pf = indep.result.per_frame[2]
    absent = fleet.classes.index("walker")
    assert fleet.masks[2].tolist() == [True, True, True, False]
    assert pf["tp"][:, absent].sum() == pf["fp"][:, absent].sum() == pf["fn"][:, absent].sum() == 0
    own = camera_per_frame(indep, 2)
    assert own["tp"].shape[1] == 3
    summary = summarize_fleet(indep, cfg)
    assert list(summary["cameras"][2]["class_iou"]) == list(c.info.class_names)
    # not the same math as its single run (a 3-class head): bounded
    single = run_stream(c, _cfg(3), key=jax.random.key(0), progress=False)
    assert abs(stream_miou(own) - stream_miou(single.per_frame)) < 0.15
    assert summary["teacher_frames"] == sum(int(p["teacher"].sum()) for p in indep.result.per_frame)
    assert summary["waits"] == 0


def test_a_budget_of_one_teacher_frame_per_tick_defers_and_records_waits(fleet_runs):
    fleet, _, _, indep, need = fleet_runs
    n = max(len(p["frame"]) for p in need.result.per_frame)
    per_tick = np.zeros(n, int)
    for p in need.result.per_frame:
        per_tick[p["frame"]] += p["teacher"]
    assert per_tick.max() == 1  # frame 0: all three ask, one is served
    indep_tick = np.zeros(n, int)
    for p in indep.result.per_frame:
        indep_tick[p["frame"]] += p["teacher"]
    assert indep_tick.max() == 3
    assert need.ledger["waits"].sum() > 0
    assert need.ledger["used"].tolist() == [int(p["teacher"].sum()) for p in need.result.per_frame]


def test_a_stopped_fleet_resumes_from_its_checkpoint_bit_exact(fleet_runs, tmp_path):
    from jitnet_jax.online.checkpoint import StreamCheckpointer

    fleet, cfg, _, _, need = fleet_runs
    budget = Budget("need", per_tick=1)
    ckpt = StreamCheckpointer(tmp_path / "ck", {"fleet": "test"}, every_frames=0)
    calls = []
    first = run_fleet(
        fleet,
        cfg,
        budget,
        seed=0,
        mode="lockstep",
        progress=False,
        checkpointer=ckpt,
        should_stop=lambda: calls.append(1) or len(calls) >= 2,
    )
    assert first.stopped and ckpt.steps() == [3 * T]  # two chunks read, the third in flight
    from jitnet_jax.fleet import new_fleet_state
    from jitnet_jax.fleet.driver import fleet_config

    template = new_fleet_state(fleet, fleet_config(cfg, len(fleet.classes)), 0)
    state, saved = ckpt.restore_latest(template)
    rest = run_fleet(
        fleet,
        cfg,
        budget,
        seed=0,
        mode="lockstep",
        progress=False,
        state=state,
        per_frame=split_rows(saved, 3),
    )
    for i in range(3):
        for k, v in need.result.per_frame[i].items():
            np.testing.assert_array_equal(rest.result.per_frame[i][k], v, err_msg=f"camera {i}: {k}")
    assert rest.ledger["waits"].tolist() == need.ledger["waits"].tolist()
    assert set(checkpoint_rows(fleet)(need.result.per_frame)) >= {"frame", "c0.tp", "c2.teacher"}


def test_fleet_command_writes_a_folder_per_camera_and_refuses_a_used_folder(tmp_path, capsys):
    from experiments.fleet import main

    out = tmp_path / "fl"
    common = ["--synthetic", "2", "--frames", "16", "--height", str(H), "--width", str(W)]
    common += ["--chunk-size", str(T), "--no-progress", "--no-flops"]
    argv = [*common, "--policy", "round_robin", "--teacher-per-tick", "1", "--out", str(out)]
    assert main(argv) == 0
    doc = json.loads((out / "fleet.json").read_text())
    assert [c["camera"] for c in doc["cameras"]] == ["synthetic", "synthetic_2"]
    assert doc["teacher_frames"] == sum(c["teacher_frames"] for c in doc["cameras"])
    for name in ("synthetic", "synthetic_2"):
        assert {"summary.json", "per_frame.csv", "timeline.png", "config.json"} <= {
            p.name for p in (out / name).iterdir()
        }
    assert (out / "fleet.md").read_text().startswith("# Fleet of 2 cameras, policy `round_robin`")
    assert (out / "teacher_use.png").stat().st_size > 0
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a finished fleet run" in err[0]
    assert main([*common, "--policy", "need", "--out", str(tmp_path / "x")]) == 2
    assert "policy 'need' needs a budget" in capsys.readouterr().err

"""Sweeps: every configuration equals a separate single-configuration run; gating; memory refusal."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from jitnet_jax.config import ModelConfig, OptimConfig, StudentConfig
from jitnet_jax.data.synthetic import SyntheticStream
from jitnet_jax.online.engine import OnlineConfig
from jitnet_jax.online.runner import run_stream
from jitnet_jax.sweep import (
    Member,
    check_memory,
    make_grid,
    member_params,
    member_state,
    pareto_front,
    parse_grid,
    run_sweep,
    stream_miou,
    sweep_chunk,
)

H, W, N = 24, 32, 10
BASE = OnlineConfig(
    student=StudentConfig(model=ModelConfig(num_classes=4), optim=OptimConfig(name="sgd", lr=0.01)),
    chunk_size=5,
    u_max=2,
    delta_min=2,
    delta_max=4,
)
# Two members that differ in everything a member can change (schedule kind, peak lr, momentum, knobs, seed).
MEMBERS = [
    Member.from_config(BASE, seed=0),
    dataclasses.replace(
        Member.from_config(BASE, seed=1),
        lr=0.003,
        schedule="cosine",
        momentum=0.5,
        a_thr=0.5,
        delta_min=1,
        delta_max=3,
        u_max=3,
        fg_weight=5.0,
    ),
]


@pytest.fixture(scope="module")
def source():
    return SyntheticStream(N, H, W, seed=3)


@pytest.fixture(scope="module")
def separate(source):
    """Each member run on its own with the single-configuration engine."""
    return [
        run_stream(source, m.online_config(BASE), jax.random.key(m.seed), progress=False) for m in MEMBERS
    ]


def _leaves(tree):
    return jax.tree_util.tree_leaves(
        jax.tree_util.tree_map(
            lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x,
            tree,
        )
    )


@pytest.mark.parametrize("mode", ["map", "lockstep"])
def test_map_mode_is_bit_identical_to_separate_runs(source, separate, mode):
    """``map`` (members outermost) and ``lockstep`` (frames outermost, states updated in place)."""
    res = run_sweep(source, BASE, MEMBERS, mode=mode, progress=False)
    for k, ref in enumerate(separate):
        for key in ref.per_frame:
            np.testing.assert_array_equal(
                res.per_frame[k][key], ref.per_frame[key], err_msg=f"member {k} {key}"
            )
        for a, b in zip(_leaves(member_state(res.state, k)), _leaves(ref.state)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The members really did differ.
    assert not np.array_equal(separate[0].per_frame["teacher"], separate[1].per_frame["teacher"])


def test_member_modes_read_each_members_stream(source, separate):
    """Two streams: ``map`` and ``lockstep`` index each member's frames from the shared chunk."""
    other = SyntheticStream(N, H, W, seed=4)
    members = [MEMBERS[0], dataclasses.replace(MEMBERS[1], stream=1)]
    ref1 = run_stream(other, MEMBERS[1].online_config(BASE), jax.random.key(MEMBERS[1].seed), progress=False)
    for mode in ("map", "lockstep"):
        res = run_sweep([source, other], BASE, members, mode=mode, progress=False)
        for k, ref in enumerate([separate[0].per_frame, ref1.per_frame]):
            for key in ref:
                np.testing.assert_array_equal(res.per_frame[k][key], ref[key], err_msg=f"{mode} {k} {key}")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="GPU/TPU keep the grouped form")
def test_gated_sweep_has_no_grouped_convolution_on_cpu():
    """On CPU a vmapped convolution with per-member kernels runs as one convolution per member (the
    batching rule in ``model/conv.py``), not as JAX's grouped convolution."""
    import re

    from jitnet_jax.sweep import init_sweep_state

    mp = member_params(MEMBERS)
    state = jax.eval_shape(lambda: init_sweep_state(BASE, MEMBERS, (H, W)))
    args = (
        jax.ShapeDtypeStruct((1, 2, H, W, 3), np.uint8),
        jax.ShapeDtypeStruct((1, 2, H, W), np.uint8),
        jax.ShapeDtypeStruct((1, 2, H, W), np.uint8),
        jax.ShapeDtypeStruct((1, 2), np.bool_),
    )
    fn = jax.jit(lambda m, s, *a: sweep_chunk(BASE.student, m, s, *a, mode="gated"))
    text = fn.lower(mp, state, *args).as_text()
    assert "convolution" in text
    assert not re.search(r"feature_group_count = ([2-9]|\d\d)", text)


def test_vmapped_sweep_matches_separate_runs(source, separate):
    """The vectorised (gated vmap) sweep: identical teacher frames and updates; the same mIoU within a
    float tolerance (batched convolutions round differently from single ones)."""
    res = run_sweep(source, BASE, MEMBERS, mode="gated", progress=False)
    for k, ref in enumerate(separate):
        for key in ("frame", "teacher", "updates", "delta"):
            np.testing.assert_array_equal(
                res.per_frame[k][key], ref.per_frame[key], err_msg=f"member {k} {key}"
            )
        assert abs(stream_miou(res.per_frame[k]) - stream_miou(ref.per_frame)) < 0.05
        assert int(member_state(res.state, k).updates) == int(ref.per_frame["updates"].sum())


def _scan_body_primitives(mode: str) -> tuple[set[str], set[str]]:
    """Primitive names at the top level of the chunk's scan body, and inside its conds."""
    from jitnet_jax.sweep import init_sweep_state

    mp = member_params(MEMBERS)
    state = jax.eval_shape(lambda: init_sweep_state(BASE, MEMBERS, (H, W)))
    args = (
        jax.ShapeDtypeStruct((1, 2, H, W, 3), np.uint8),
        jax.ShapeDtypeStruct((1, 2, H, W), np.uint8),
        jax.ShapeDtypeStruct((1, 2, H, W), np.float32),
        jax.ShapeDtypeStruct((1, 2), np.bool_),
    )
    closed = jax.make_jaxpr(lambda m, s, *a: sweep_chunk(BASE.student, m, s, *a, mode=mode))(mp, state, *args)
    scan = next(e for e in closed.jaxpr.eqns if e.primitive.name == "scan")
    body = scan.params["jaxpr"].jaxpr
    top = {e.primitive.name for e in body.eqns}
    inside = set()
    for e in body.eqns:
        if e.primitive.name == "cond":
            for br in e.params["branches"]:
                inside |= {x.primitive.name for x in br.jaxpr.eqns}
    return top, inside


def test_gating_decides_any_teacher_outside_the_vmap():
    top, inside = _scan_body_primitives("gated")
    # gated: is_teacher is reduced over members (reduce_or) and a real cond holds the update loop.
    assert "reduce_or" in top and "cond" in top and "while" not in top and "while" in inside
    # naive: vmap turned the per-member cond into a select; the update loop runs on every frame.
    top, _ = _scan_body_primitives("naive")
    assert "while" in top and "select_n" in top


def test_k_too_large_is_refused_before_compiling(source):
    with pytest.raises(ValueError, match=r"sweep of K=64 configurations at 24x32 needs .* at most K=\d+ fit"):
        run_sweep(source, BASE, [MEMBERS[0]] * 64, memory_budget=200 * 2**20, progress=False)
    est = check_memory(BASE, 1, (H, W), BASE.chunk_size)
    assert est.per_member > est.state > est.params > 0
    assert est.total(8) == est.shared + 8 * est.per_member


def test_grid_parsing_and_pareto():
    axes = parse_grid(["lr=0.003,0.01", "schedule=constant,cosine", "a_thr=0.7"])
    members = make_grid(BASE, axes, seed=4)
    assert len(members) == 4 and {m.seed for m in members} == {4}
    assert [(m.lr, m.schedule) for m in members] == [
        (0.003, "constant"),
        (0.003, "cosine"),
        (0.01, "constant"),
        (0.01, "cosine"),
    ]
    with pytest.raises(ValueError, match="cannot sweep 'width'"):
        parse_grid(["width=1,2"])
    with pytest.raises(ValueError, match="grid lr: cannot parse 'x'"):
        make_grid(BASE, {"lr": ["x"]})
    with pytest.raises(ValueError, match=r"sweep member 0 .*schedule must be one of"):
        run_sweep(SyntheticStream(4, H, W), BASE, make_grid(BASE, {"schedule": ["linear"]}), progress=False)
    rows = [
        {"miou": 0.5, "teacher_fraction": 0.2},
        {"miou": 0.4, "teacher_fraction": 0.3},
        {"miou": 0.6, "teacher_fraction": 0.5},
    ]
    assert pareto_front(rows) == [0, 2]


def test_sweep_cli_writes_json_csv_and_pareto_plot(tmp_path):
    import csv
    import json

    from experiments.sweep import main

    out = tmp_path / "sweep"
    rc = main(
        [
            "--grid",
            "lr=0.003,0.01",
            "--grid",
            "a_thr=0.6",
            "--frames",
            "6",
            "--height",
            str(H),
            "--width",
            str(W),
            # BASE's static settings, so the compiled program is test_map_mode's (loaded from the cache)
            "--chunk-size",
            str(BASE.chunk_size),
            "--u-max",
            "2",
            "--optimizer",
            "sgd",
            "--lr",
            "0.01",
            "--mode",
            "map",
            "--no-flops",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    doc = json.loads((out / "sweep.json").read_text())
    assert [m["lr"] for m in doc["members"]] == [0.003, 0.01]
    for row in doc["members"]:
        for key in (
            "miou",
            "class_iou",
            "frames",
            "teacher_frames",
            "teacher_fraction",
            "updates",
            "speedup_cost_model",
            "wall_s",
        ):
            assert key in row, key
        assert row["frames"] == 6
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert len(rows) == 2 and {"lr", "a_thr", "miou", "teacher_fraction", "pareto"} <= set(rows[0])
    assert (out / "pareto.png").stat().st_size > 1000
    assert main(["--grid", "lr=0.01", "--frames", "6", "--out", str(out)]) == 2  # never overwrites


def test_lockstep_pads_an_ended_stream_like_the_others():
    """A stream that ends early contributes padding (valid False) typed like the other streams' chunks."""
    from jitnet_jax.sweep.driver import _lockstep

    long, short = SyntheticStream(10, 16, 16, seed=0), SyntheticStream(4, 16, 16, seed=1)
    parts = list(_lockstep([long, short], 4, 10))
    assert [int(p[0].valid.sum()) for p in parts] == [4, 4, 2]
    assert [int(p[1].valid.sum()) for p in parts] == [4, 0, 0]
    for p in parts:
        for field in ("frames", "labels", "regions"):
            a, b = getattr(p[0], field), getattr(p[1], field)
            assert a.shape == b.shape and a.dtype == b.dtype, field

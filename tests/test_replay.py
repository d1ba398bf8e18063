"""Replay of recent teacher frames (beyond the paper): buffer, sampling, per-frame BatchNorm, R = 0 is the
paper, sweeps, checkpoints, costs."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jitnet_jax.config import ModelConfig, OnlineConfig, OptimConfig, StudentConfig
from jitnet_jax.data.synthetic import SyntheticStream
from jitnet_jax.eval.costs import CostModel, cost_model_speedup, flops_speedup
from jitnet_jax.online.engine import (
    Knobs,
    ReplayBuffer,
    init_replay,
    make_run_chunk,
    new_online_state,
    replay_push,
    replay_sample,
)
from jitnet_jax.online.runner import PER_FRAME_KEYS, run_stream
from jitnet_jax.student.step import init_state, loss_and_grads, loss_and_grads_batch

H, W, N = 24, 32, 24
PAPER = OnlineConfig(
    student=StudentConfig(model=ModelConfig(num_classes=4), optim=OptimConfig(name="sgd", lr=0.01)),
    chunk_size=8,
    u_max=2,
    delta_min=2,
    delta_max=4,
)
REPLAY = dataclasses.replace(PAPER, replay_size=3, replay_batch=3)


def _leaves(tree):
    def raw(x):
        return jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x

    return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.tree_util.tree_map(raw, tree))]


def _assert_trees_equal(a, b) -> None:
    la, lb = _leaves(a), _leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def source() -> SyntheticStream:
    return SyntheticStream(N, H, W, seed=5)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return tmp_path_factory.mktemp("replay") / "checkpoints"


@pytest.fixture(scope="module")
def replay_run(source, checkpoints):
    """A replay run that checkpoints every 8 frames (as ``experiments.stream --checkpoint-every 8``)."""
    from jitnet_jax.online.checkpoint import StreamCheckpointer, make_fingerprint

    state = new_online_state(REPLAY, jax.random.key(0), (H, W))
    with StreamCheckpointer(
        checkpoints, make_fingerprint(REPLAY, source.info), every_frames=8, keep=5
    ) as ckpt:
        return run_stream(source, REPLAY, state=state, progress=False, checkpointer=ckpt)


def test_replay_config_is_validated() -> None:
    with pytest.raises(ValueError, match=r"replay batch B=5 larger than buffer R\+1=4"):
        dataclasses.replace(PAPER, replay_size=3, replay_batch=5).validate()
    with pytest.raises(ValueError, match="replay batch B=2 larger than buffer R\\+1=1"):
        dataclasses.replace(PAPER, replay_batch=2).validate()
    with pytest.raises(ValueError, match="needs replay_batch >= 2"):
        dataclasses.replace(PAPER, replay_size=4).validate()
    with pytest.raises(ValueError, match="replay_size must be >= 0"):
        dataclasses.replace(PAPER, replay_size=-1).validate()
    REPLAY.validate()
    PAPER.validate()


def test_r0_is_the_paper_state() -> None:
    """R = 0 keeps no buffer: the state has exactly the paper's leaves, so its compiled loop is the
    paper's (bit-identical to the engine before replay existed: checked against commit 89c0706 when
    replay was added) and its checkpoints keep their layout."""
    s0 = new_online_state(PAPER, jax.random.key(0), (H, W))
    assert s0.replay is None
    student = init_state(jax.random.key(0), PAPER.student, (H, W))
    from jitnet_jax.online.engine import init_online_state

    assert jax.tree_util.tree_structure(s0) == jax.tree_util.tree_structure(init_online_state(student, PAPER))
    sr = new_online_state(REPLAY, jax.random.key(0), (H, W))
    assert sr.replay.frames.shape == (3, H, W, 3) and sr.replay.frames.dtype == jnp.uint8
    assert sr.replay.batch == 3
    # Without replay nothing samples: the compiled chunk has no top_k; with replay it does.
    args = (
        jax.ShapeDtypeStruct((2, H, W, 3), np.uint8),
        jax.ShapeDtypeStruct((2, H, W), np.uint8),
        jax.ShapeDtypeStruct((2, H, W), np.uint8),
        jax.ShapeDtypeStruct((2,), np.bool_),
    )

    def text(cfg, s):
        return str(jax.make_jaxpr(make_run_chunk(cfg))(Knobs.from_config(cfg), s, *args))

    assert "top_k" not in text(PAPER, s0) and "top_k" in text(REPLAY, sr)
    with pytest.raises(ValueError, match="needs frame_shape"):
        init_online_state(student, REPLAY)


def test_buffer_push_and_sample() -> None:
    cfg = dataclasses.replace(PAPER, replay_size=4, replay_batch=3)
    buf = init_replay(cfg, (2, 2))
    frame = lambda i: jnp.full((2, 2, 3), i, jnp.uint8)  # noqa: E731
    lab = jnp.zeros((2, 2), jnp.int32)
    wt = jnp.ones((2, 2), jnp.float32)
    bg = jnp.ones((2, 2), jnp.uint8)  # region map: background (weight bg_weight = 1)
    knobs = Knobs.from_config(cfg)
    f, y, w, m = replay_sample(buf, jax.random.key(0), frame(9), lab, wt, knobs)
    assert f.shape == (3, 2, 2, 3) and y.dtype == jnp.int32 and m.tolist() == [True, False, False]
    assert int(f[0, 0, 0, 0]) == 9
    buf = replay_push(buf, frame(1), lab, bg)
    buf = replay_push(buf, frame(2), lab + 1, 2 * bg)
    f, y, w, m = replay_sample(buf, jax.random.key(1), frame(9), lab, wt, knobs)
    assert m.tolist() == [True, True, True]
    assert sorted(int(v) for v in f[1:, 0, 0, 0]) == [1, 2]  # both filled slots, without replacement
    for _ in range(4):  # ring: 6 pushes into 4 slots keep the last 4
        buf = replay_push(buf, frame(int(buf.count) + 1), lab, bg)
    assert int(buf.count) == 6 and sorted(np.asarray(buf.frames[:, 0, 0, 0]).tolist()) == [3, 4, 5, 6]
    seen = set()
    for k in range(20):
        f, _, _, m = replay_sample(buf, jax.random.key(k), frame(9), lab, wt, knobs)
        vals = [int(v) for v in f[1:, 0, 0, 0]]
        assert m.all() and len(set(vals)) == 2 and set(vals) <= {3, 4, 5, 6}
        seen |= set(vals)
    assert seen == {3, 4, 5, 6}


def test_batch_loss_is_the_mean_of_per_frame_losses_with_batchnorm_per_frame() -> None:
    """Gradients of B frames = the mean of the single-frame gradients (BatchNorm over each frame alone:
    with BN over the batch the two would differ); masked frames count for nothing."""
    cfg = PAPER.student
    s = init_state(jax.random.key(0), cfg, (H, W))
    src = SyntheticStream(3, H, W, seed=1)
    c = next(iter(src.chunks(3)))
    y = c.labels.astype(np.int32)
    wt = np.where(c.regions > 0, 1.0, 0.0).astype(np.float32)
    lg = jax.jit(lambda s, f, y, w: loss_and_grads(cfg, s, f, y, w))
    lgb = jax.jit(lambda s, f, y, w, m: loss_and_grads_batch(cfg, s, f, y, w, m))
    single = [lg(s, c.frames[i], y[i], wt[i]) for i in range(2)]
    g, stats, aux = lgb(s, c.frames, y, wt, jnp.array([True, True, False]))
    mean = jax.tree_util.tree_map(lambda a, b: (a + b) / 2, single[0][0], single[1][0])
    # Batched convolutions round differently from single ones, and at 24x32 the deepest BatchNorms (over a
    # few positions) magnify that: bound each leaf's difference by 1e-3 of its largest gradient (seen: 3e-6
    # on entries of ~6e-3 on an AMD EPYC) plus 1e-5 of the largest gradient of all (a bias that feeds a
    # BatchNorm has a gradient of rounding noise only). A mask ignored (the mean over 3 frames) would
    # differ by ~30%.
    leaves = [
        (np.asarray(a), np.asarray(b))
        for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(mean))
    ]
    top = max(np.abs(b).max() for _, b in leaves)
    for a, b in leaves:
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-3 * np.abs(b).max() + 1e-5 * top)
    # the prediction, control accuracy and new batch stats are the current frame's
    flipped = np.mean(np.asarray(aux["pred"]) != np.asarray(single[0][2]["pred"]))
    assert flipped <= 0.01, flipped  # equal up to near-tie pixels (batched convolutions round differently)
    assert float(aux["min_iou"]) == pytest.approx(float(single[0][2]["min_iou"]), abs=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(stats), jax.tree_util.tree_leaves(single[0][1])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_replay_run_keeps_the_last_teacher_frames(source, replay_run) -> None:
    pf, st = replay_run.per_frame, replay_run.state
    t = np.nonzero(pf["teacher"])[0]
    assert len(t) >= 4 and int(st.replay.count) == len(t) == int(st.teacher_frames)
    frames = np.concatenate([c.frames for c in source.chunks(N)])[:N]
    labels = np.concatenate([c.labels for c in source.chunks(N)])[:N]
    r = REPLAY.replay_size
    for j, ti in enumerate(t[-r:]):
        slot = (len(t) - r + j) % r
        np.testing.assert_array_equal(np.asarray(st.replay.frames[slot]), frames[ti])
        np.testing.assert_array_equal(np.asarray(st.replay.labels[slot]), labels[ti])
    # the controller still follows the accuracy check on the current frame
    np.testing.assert_array_equal(np.diff(t), pf["delta"][t[:-1]])


def test_replay_checkpoint_resume_is_bit_exact(source, replay_run, checkpoints) -> None:
    """Resume from the checkpoint at frame 16 (as after a kill there): the rest of the run, the buffer
    included, is bit-exact."""
    from jitnet_jax.online.checkpoint import StreamCheckpointer, make_fingerprint

    with StreamCheckpointer(checkpoints, make_fingerprint(REPLAY, source.info), every_frames=0) as ckpt:
        assert 16 in ckpt.steps()
        state, per_frame = ckpt.restore(16, new_online_state(REPLAY, jax.random.key(0), (H, W)))
    assert int(state.cursor) == 16 and int(state.replay.count) > 0
    resumed = run_stream(source, REPLAY, state=state, per_frame=per_frame, progress=False)
    for k, v in replay_run.per_frame.items():
        np.testing.assert_array_equal(resumed.per_frame[k], v, err_msg=k)
    _assert_trees_equal(resumed.state, replay_run.state)


#: Where :func:`test_zoo_size_0_is_the_recorded_engine`'s digests were recorded: float results of a
#: float-chaotic run are exact only on the same JAX and CPU (AVX2 and AVX-512 machines round differently).
RECORDED_ON = ("0.10.2", "avx512_vnni")
#: ``(per-frame rows, final state)`` digests of the replay run below, from the engine before the zoo existed
#: (commit ab0c8ca, jax 0.10.2, a 2-core AMD EPYC with AVX-512 VNNI).
RECORDED_DIGESTS = ("31aee74ee36f1f7c", "d9d6028463252421")


def _cpu_flags() -> set[str]:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return set()
    return set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))


def test_zoo_size_0_is_the_recorded_engine(source) -> None:
    """``zoo_size = 0`` (the default) is the engine as it was before the zoo: the per-frame rows and final
    state of a replay run whose checks both pass and fail hash to what that engine recorded
    (:data:`RECORDED_DIGESTS`). The run is :data:`REPLAY` with another ``a_thr`` (a traced knob: the same
    compiled program). Exact only on the recording platform (:data:`RECORDED_ON`); elsewhere the test skips
    (on every machine the run has no zoo leaf, asserted before)."""
    import hashlib

    cfg = dataclasses.replace(REPLAY, a_thr=0.3)
    assert cfg.zoo_size == 0
    res = run_stream(source, cfg, state=new_online_state(cfg, jax.random.key(0), (H, W)), progress=False)
    assert set(res.per_frame["updates"].tolist()) == {0, 1, 2} and res.state.zoo is None
    version, flag = RECORDED_ON
    if jax.__version__ != version or jax.default_backend() != "cpu" or flag not in _cpu_flags():
        pytest.skip(
            f"digests recorded with jax {version} on a CPU with {flag}; float results differ elsewhere"
        )
    rows = hashlib.sha256(b"".join(np.ascontiguousarray(res.per_frame[k]).tobytes() for k in PER_FRAME_KEYS))
    state = hashlib.sha256(b"".join(np.ascontiguousarray(x).tobytes() for x in _leaves(res.state)))
    assert (rows.hexdigest()[:16], state.hexdigest()[:16]) == RECORDED_DIGESTS


def test_replay_in_a_sweep_equals_separate_runs(source, replay_run) -> None:
    from jitnet_jax.sweep import Member, member_state, run_sweep

    members = [
        Member.from_config(REPLAY, seed=0),
        dataclasses.replace(Member.from_config(REPLAY, seed=1), a_thr=0.5),
    ]
    res = run_sweep(source, REPLAY, members, mode="map", progress=False)
    for k, v in replay_run.per_frame.items():
        np.testing.assert_array_equal(res.per_frame[0][k], v, err_msg=k)
    _assert_trees_equal(member_state(res.state, 0), replay_run.state)
    assert isinstance(member_state(res.state, 1).replay, ReplayBuffer)


def test_costs_count_frames_per_update() -> None:
    cost = CostModel()
    assert cost_model_speedup(100, 10, 20, cost, frames_per_update=4) == pytest.approx(
        300 * 100 / (7 * 90 + 300 * 10 + 30 * 20 * 4)
    )
    assert cost_model_speedup(100, 10, 20, cost) == pytest.approx(300 * 100 / (7 * 90 + 300 * 10 + 30 * 20))
    one = flops_speedup(100, 10, 25, 20, 1.0, 3.0, cost)
    four = flops_speedup(100, 10, 25, 20, 1.0, 3.0, cost, frames_per_update=4)
    assert four == pytest.approx(12.6 * 100 / (90 + 12.6 * 10 + 3 * 20 * 4 + 5)) and four < one


def test_compiled_replay_matches_python_reference(source, replay_run) -> None:
    """The reference loop with replay (same buffer helpers, same sampling keys): identical decisions
    while the control accuracies agree (see ``agreed_prefix``), identical buffer contents."""
    from jitnet_jax.online.reference import ACC_TOL, agreed_prefix, run_reference

    _, ref, _ = run_reference(source, REPLAY, jax.random.key(0))
    got = replay_run.per_frame
    n = agreed_prefix(got, ref, REPLAY.a_thr)
    for key in ("teacher", "updates", "delta"):
        np.testing.assert_array_equal(got[key][:n], ref[key][:n], err_msg=key)
    t = np.nonzero(got["teacher"][:n])[0]
    assert len(t) >= 2, f"the runs disagree from frame {n} on"
    np.testing.assert_allclose(got["acc"][t], ref["acc"][t], atol=ACC_TOL)


# ---- a delayed teacher (simulated teacher latency) --------------------------------------------------

DELAYED = dataclasses.replace(PAPER, teacher_delay=3)


@pytest.fixture(scope="module")
def delayed_run(source):
    return run_stream(
        source, DELAYED, state=new_online_state(DELAYED, jax.random.key(0), (H, W)), progress=False
    )


def test_delayed_teacher_trains_d_frames_later(delayed_run) -> None:
    pf, d = delayed_run.per_frame, DELAYED.teacher_delay
    t = np.nonzero(pf["teacher"])[0]
    assert t[0] == 0 and len(t) >= 3
    trained = np.nonzero(pf["updates"] > 0)[0]
    # every update happens exactly d frames after a teacher frame; no update before the first label
    assert set(trained.tolist()) <= set((t + d).tolist()) and trained.min() >= d
    # the next teacher frame is chosen when the label arrives: index + delta, never before the arrival
    for a, b in zip(t[:-1], t[1:]):
        assert b == max(a + pf["delta"][a + d], a + d)
    assert (np.diff(t) >= d).all()  # one label in flight at a time
    with pytest.raises(ValueError, match="teacher_delay must be >= 0"):
        dataclasses.replace(PAPER, teacher_delay=-1).validate()
    assert new_online_state(PAPER, jax.random.key(0), (H, W)).pending is None  # d = 0: the paper's state


def test_delayed_teacher_in_a_gated_sweep(source, delayed_run) -> None:
    """A gated (vmapped) sweep gates on label arrivals: the same decisions as separate runs while the
    control accuracies agree."""
    from jitnet_jax.online.reference import agreed_prefix
    from jitnet_jax.sweep import Member, run_sweep

    members = [
        Member.from_config(DELAYED, seed=0),
        dataclasses.replace(Member.from_config(DELAYED, seed=1), a_thr=0.5),
    ]
    gated = run_sweep(source, DELAYED, members, mode="gated", progress=False).per_frame[0]
    n = agreed_prefix(gated, delayed_run.per_frame, DELAYED.a_thr)
    assert n > DELAYED.teacher_delay
    for k in ("teacher", "updates", "delta"):
        np.testing.assert_array_equal(gated[k][:n], delayed_run.per_frame[k][:n], err_msg=k)


def test_buffers_hold_the_uint8_region_map_and_weigh_it_with_the_knobs() -> None:
    """The replay buffer and a delayed teacher's label in flight keep the uint8 region map (1 byte a pixel,
    not a float32 weight); a sampled frame's weight is ``effective_weight`` of its region with the run's knobs,
    and a float weight pushed where a region map belongs is refused."""
    both = dataclasses.replace(REPLAY, teacher_delay=2, fg_weight=7.0, bg_weight=0.5)
    st = new_online_state(both, jax.random.key(0), (H, W))
    assert st.replay.regions.dtype == jnp.uint8 and st.replay.regions.shape == (3, H, W)
    assert st.pending.region.dtype == jnp.uint8 and st.pending.region.shape == (H, W)
    big = [x for x in jax.tree_util.tree_leaves((st.replay, st.pending)) if x.ndim >= 2]
    assert {np.dtype(x.dtype).name for x in big} == {"uint8"}
    region = jnp.asarray(np.arange(H * W).reshape(H, W) % 3, jnp.uint8)  # 0 ignore, 1 background, 2 box
    buf = replay_push(st.replay, jnp.zeros((H, W, 3), jnp.uint8), jnp.zeros((H, W), jnp.int32), region)
    np.testing.assert_array_equal(np.asarray(buf.regions[0]), np.asarray(region))
    knobs = Knobs.from_config(both)
    cur = jnp.full((H, W), 3.0, jnp.float32)
    _, _, w, m = replay_sample(
        buf, jax.random.key(0), jnp.zeros((H, W, 3), jnp.uint8), jnp.zeros((H, W)), cur, knobs
    )
    assert w.dtype == jnp.float32 and m.tolist() == [True, True, False]
    np.testing.assert_array_equal(np.asarray(w[0]), 3.0)  # the current frame's weight as given
    np.testing.assert_array_equal(np.asarray(w[1]), np.choose(np.asarray(region), [0.0, 0.5, 7.0]))
    with pytest.raises(TypeError, match="region map"):
        replay_push(buf, jnp.zeros((H, W, 3), jnp.uint8), jnp.zeros((H, W), jnp.int32), cur)

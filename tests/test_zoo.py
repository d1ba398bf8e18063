"""The zoo of earlier students (``OnlineConfig.zoo_size = Z > 0``, docs/zoo.md): the switch on a failed
first check, the store rule, its costs, and that a run with a zoo resumes bit-exact and runs in a sweep.
``Z = 0`` being the engine without a zoo is ``tests/test_replay.py::test_zoo_size_0_is_the_recorded_engine``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jitnet_jax.config import ModelConfig, OnlineConfig, OptimConfig, StudentConfig
from jitnet_jax.data.synthetic import SyntheticStream
from jitnet_jax.eval.costs import CostModel, cost_model_speedup, student_passes
from jitnet_jax.eval.summary import summarize_per_frame
from jitnet_jax.online.engine import Knobs, Zoo, init_online_state, new_online_state, teacher_step
from jitnet_jax.online.runner import run_stream
from jitnet_jax.student.step import init_state, predict

H, W, N = 24, 32, 24
#: tests/test_replay.py's REPLAY config with a zoo (a low a_thr, so checks pass and fail on this stream).
ZOO = OnlineConfig(
    student=StudentConfig(model=ModelConfig(num_classes=4), optim=OptimConfig(name="sgd", lr=0.01)),
    chunk_size=8,
    u_max=2,
    delta_min=2,
    delta_max=4,
    a_thr=0.3,
    replay_size=3,
    replay_batch=3,
    zoo_size=2,
    zoo_store_after=1,
)
#: for the single teacher-step tests: no replay, the paper's threshold, two passes to store.
STEP = OnlineConfig(student=ZOO.student, u_max=2, a_thr=0.9, zoo_size=2, zoo_store_after=2)


def _leaves(tree):
    def raw(x):
        return jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x

    return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.tree_util.tree_map(raw, tree))]


def _assert_trees_equal(a, b) -> None:
    la, lb = _leaves(a), _leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(
    "field, value, needle",
    [
        ("zoo_size", -1, "zoo_size must be >= 0"),
        ("zoo_margin", 1.0, r"zoo_margin must be in \[0, 1\)"),
        ("zoo_store_after", 0, "zoo_store_after must be >= 1"),
    ],
)
def test_zoo_config_is_validated(field, value, needle) -> None:
    with pytest.raises(ValueError, match=needle) as e:
        dataclasses.replace(ZOO, **{field: value}).validate()
    assert "\n" not in str(e.value)


def test_zoo_flags() -> None:
    from experiments import stream
    from jitnet_jax.run_config import make_config

    args = stream.build_parser().parse_args(
        ["--zoo-size", "4", "--zoo-margin", "0.1", "--zoo-store-after", "3"]
    )
    cfg = make_config(args).online
    assert (cfg.zoo_size, cfg.zoo_margin, cfg.zoo_store_after) == (4, 0.1, 3)


@pytest.fixture(scope="module")
def step_case():
    """A frame, two students, and the engine's teacher step jitted for :data:`STEP`."""
    frame = jnp.asarray(SyntheticStream(1, H, W, seed=3).render(0)[0])
    member = init_state(jax.random.key(1), STEP.student, (H, W))
    current = init_state(jax.random.key(2), STEP.student, (H, W))
    fn = jax.jit(lambda s, y, kn: teacher_step(STEP.student, kn, s, frame, y, jnp.ones((H, W))))

    def step(s, y, a_thr: float = STEP.a_thr):
        return fn(s, y, Knobs.from_config(dataclasses.replace(STEP, a_thr=a_thr)))

    return frame, member, current, step


def _with_member(state, member, slot: int = 0):
    z: Zoo = state.zoo
    put = lambda stack, x: stack.at[slot].set(x)  # noqa: E731
    return state.replace(
        zoo=z.replace(
            params=jax.tree_util.tree_map(put, z.params, member.params),
            batch_stats=jax.tree_util.tree_map(put, z.batch_stats, member.batch_stats),
            filled=z.filled.at[slot].set(True),
        )
    )


def test_a_failed_check_switches_to_a_better_member(step_case) -> None:
    """The student fails the frame and a member passes it: the student continues from the member (no
    update; its optimiser state kept), whose check then passes; Z forward passes scored the zoo and one
    more is charged for the failed check the switch replaced."""
    frame, member, current, step = step_case
    label = predict(STEP.student, member, frame)  # the member is perfect on the frame
    state = _with_member(init_online_state(current, STEP), member).replace(teacher_frames=jnp.int32(7))
    s, pred, k, acc = step(state, label)
    assert int(s.zoo.switches) == 1 and int(k) == 0 and float(acc) > STEP.a_thr
    assert int(s.zoo.forward) == STEP.zoo_size + 1 and int(s.zoo.used[0]) == 7
    np.testing.assert_array_equal(np.asarray(pred), np.asarray(label))
    _assert_trees_equal(s.student.params, member.params)
    _assert_trees_equal(s.student.opt_state, current.opt_state)
    # zoo_need_pass: a member that beats the student but does not pass a_thr (1.0: nothing passes) is
    # not loaded
    s, _, k, _ = step(_with_member(init_online_state(current, STEP), member), label, a_thr=1.0)
    assert int(s.zoo.switches) == 0 and int(s.zoo.forward) == STEP.zoo_size and int(k) == STEP.u_max
    # an empty zoo: nothing scored, the student trains as without a zoo
    s, _, k, _ = step(init_online_state(current, STEP), label)
    assert int(s.zoo.switches) == 0 and int(s.zoo.forward) == 0 and int(k) == STEP.u_max
    # a first check that passes scores nothing
    s, _, k, _ = step(
        _with_member(init_online_state(current, STEP), member), predict(STEP.student, current, frame)
    )
    assert int(s.zoo.forward) == 0 and int(k) == 0 and int(s.zoo.streak) == 1


def test_the_student_is_stored_after_passed_checks_unless_the_zoo_covers_the_frame(step_case) -> None:
    frame, _, current, step = step_case
    label = predict(STEP.student, current, frame)  # the student passes the frame
    s = init_online_state(current, STEP)
    s, *_ = step(s, label)
    assert int(s.zoo.streak) == 1 and int(s.zoo.stores) == 0
    s, *_ = step(s, label)  # zoo_store_after = 2 passed checks in a row: stored in an empty slot
    assert int(s.zoo.stores) == 1 and np.asarray(s.zoo.filled).tolist() == [True, False]
    assert int(s.zoo.forward) == 0 and not bool(s.zoo.dirty)  # nothing filled to score against
    _assert_trees_equal(jax.tree_util.tree_map(lambda x: x[0], s.zoo.params), current.params)
    s, *_ = step(s, label)
    s, *_ = step(s, label)  # not updated since it was stored: not stored again, nothing scored
    assert int(s.zoo.stores) == 1 and int(s.zoo.forward) == 0
    s = s.replace(zoo=s.zoo.replace(dirty=jnp.bool_(True)))
    s, *_ = step(s, label)
    s, *_ = step(s, label)  # the zoo is scored (Z passes); a member already passes the frame: no store
    assert int(s.zoo.stores) == 1 and int(s.zoo.forward) == STEP.zoo_size


@pytest.fixture(scope="module")
def source() -> SyntheticStream:
    return SyntheticStream(N, H, W, seed=5)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo") / "checkpoints"


@pytest.fixture(scope="module")
def zoo_run(source, checkpoints):
    """A zoo run that checkpoints every 8 frames."""
    from jitnet_jax.online.checkpoint import StreamCheckpointer, make_fingerprint

    state = new_online_state(ZOO, jax.random.key(0), (H, W))
    with StreamCheckpointer(checkpoints, make_fingerprint(ZOO, source.info), every_frames=8, keep=5) as ckpt:
        return run_stream(source, ZOO, state=state, progress=False, checkpointer=ckpt)


def test_zoo_run_resumes_bit_exact(source, zoo_run, checkpoints) -> None:
    """A run that stored students resumes from its checkpoint at frame 16 bit-exact (the zoo's members,
    masks and counters included), and its per-frame rows add up to the zoo's counters."""
    from jitnet_jax.online.checkpoint import StreamCheckpointer, make_fingerprint

    pf, zoo = zoo_run.per_frame, zoo_run.state.zoo
    assert int(zoo.stores) > 0 and bool(np.asarray(zoo.filled).any())
    for key, field in (("zoo_forward", "forward"), ("zoo_switch", "switches"), ("zoo_store", "stores")):
        assert int(pf[key].sum()) == int(getattr(zoo, field)), key
    with StreamCheckpointer(checkpoints, make_fingerprint(ZOO, source.info), every_frames=0) as ckpt:
        state, per_frame = ckpt.restore(16, new_online_state(ZOO, jax.random.key(0), (H, W)))
    assert int(state.cursor) == 16 and int(state.zoo.stores) > 0
    resumed = run_stream(source, ZOO, state=state, per_frame=per_frame, progress=False)
    assert set(resumed.per_frame) == set(pf)
    for k, v in pf.items():
        np.testing.assert_array_equal(resumed.per_frame[k], v, err_msg=k)
    _assert_trees_equal(resumed.state, zoo_run.state)


def test_zoo_in_a_sweep_equals_the_single_run(source, zoo_run) -> None:
    from jitnet_jax.sweep import Member, member_state, run_sweep

    res = run_sweep(source, ZOO, [Member.from_config(ZOO, seed=0)], mode="map", progress=False)
    for k, v in zoo_run.per_frame.items():
        np.testing.assert_array_equal(res.per_frame[0][k], v, err_msg=k)
    _assert_trees_equal(member_state(res.state, 0), zoo_run.state)


def test_costs_charge_the_zoo_forward_passes() -> None:
    cost = CostModel()
    assert cost_model_speedup(100, 10, 20, cost, 2, zoo_forward=9) == pytest.approx(
        300 * 100 / (7 * 90 + 300 * 10 + 30 * 20 * 2 + 7 * 9)
    )
    assert student_passes(100, 10, 3, 20, 2, zoo_forward=9)["forward"] == 90 + 20 + 3 + 20 + 9
    n, c = 4, 2
    pf = {
        "frame": np.arange(n),
        "teacher": np.array([1, 0, 1, 0], bool),
        "updates": np.array([2, 0, 0, 0], np.int32),
        "delta": np.full(n, 2, np.int32),
        "acc": np.array([0.5, 0, 0.95, 0], np.float32),
        "tp": np.ones((n, c), np.int64),
        "fp": np.zeros((n, c), np.int64),
        "fn": np.zeros((n, c), np.int64),
        "zoo_forward": np.array([0, 0, 5, 0], np.int32),
        "zoo_switch": np.array([0, 0, 1, 0], np.int32),
        "zoo_store": np.zeros(n, np.int32),
    }
    gflops = {"infer_gflops": 1.0, "train_step_gflops": 3.0}
    out = summarize_per_frame(pf, ("a", "b"), a_thr=0.9, gflops=gflops)
    assert (out["zoo_forward"], out["zoo_switches"], out["zoo_stores"]) == (5, 1, 0)
    assert out["speedup_cost_model"] == pytest.approx(cost_model_speedup(4, 2, 2, cost, 1, 5))
    no_zoo = summarize_per_frame(
        {k: v for k, v in pf.items() if not k.startswith("zoo")}, ("a", "b"), a_thr=0.9, gflops=gflops
    )
    assert out["speedup_flops"] < no_zoo["speedup_flops"]
    assert 12.6 * 4 / out["speedup_flops"] == pytest.approx(12.6 * 4 / no_zoo["speedup_flops"] + 5 * 1.0)

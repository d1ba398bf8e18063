"""The accuracy check of the update loop: a check that passes runs no backward pass, the engine's decisions
equal the reference loop's, and the FLOPs speedup charges what the program computes."""

from __future__ import annotations

import dataclasses
import functools
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jitnet_jax.model.jitnet as jitnet_model
from jitnet_jax.config import ModelConfig, OnlineConfig, OptimConfig, StudentConfig
from jitnet_jax.data.synthetic import SyntheticStream
from jitnet_jax.eval.costs import CostModel, flops_speedup, student_passes
from jitnet_jax.model.conv import conv2d
from jitnet_jax.online.engine import (
    Knobs,
    init_replay,
    new_online_state,
    replay_push,
    teacher_updates,
)
from jitnet_jax.online.reference import ACC_TOL, agreed_prefix, run_reference
from jitnet_jax.online.runner import run_stream
from jitnet_jax.student.step import init_state

H, W = 24, 32
CFG = OnlineConfig(
    student=StudentConfig(model=ModelConfig(num_classes=4), optim=OptimConfig(name="sgd", lr=0.01)),
    a_thr=0.5,
    u_max=2,
    delta_min=2,
    delta_max=8,
    chunk_size=16,
)
REPLAY = dataclasses.replace(CFG, replay_size=3, replay_batch=3)


class PassCounter:
    """Counts the network's forward and backward passes that execute (not those traced): the first
    convolution of the network (the one on the 3-channel frame) is wrapped in a ``custom_vjp`` whose
    forward and backward each report once per frame through ``jax.debug.callback``."""

    def __init__(self) -> None:
        self.forward = 0
        self.backward = 0
        self._lock = threading.Lock()

    def _add(self, field: str, n: jnp.ndarray) -> None:
        with self._lock:  # under vmap, one call per frame or one with every frame's count
            setattr(self, field, getattr(self, field) + int(np.asarray(n).sum()))

    def conv(self) -> object:
        """A drop-in for :func:`~jitnet_jax.model.conv.conv2d` that counts."""

        def report(field: str, x: jnp.ndarray) -> None:
            if x.shape[-1] == 3:  # the network's first layer: one call per frame's pass
                # an operand that depends on x, so that under vmap every frame is counted
                frames = (x[0, 0, 0, 0] * 0).astype(jnp.int32) + x.shape[0]
                jax.debug.callback(functools.partial(self._add, field), frames)

        @functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
        def counted(x, kernel, stride, padding):
            report("forward", x)
            return conv2d(x, kernel, stride, padding)

        def fwd(x, kernel, stride, padding):
            report("forward", x)
            return conv2d(x, kernel, stride, padding), (x, kernel)

        def bwd(stride, padding, res, dy):
            x, kernel = res
            report("backward", x)
            _, pull = jax.vjp(lambda a, b: conv2d(a, b, stride, padding), x, kernel)
            return pull(dy)

        counted.defvjp(fwd, bwd)
        return counted

    def read(self) -> tuple[int, int]:
        jax.effects_barrier()
        return self.forward, self.backward


@pytest.fixture
def counter(monkeypatch) -> PassCounter:
    c = PassCounter()
    monkeypatch.setattr(jitnet_model, "conv2d", c.conv())
    return c


def _frame(seed: int = 0) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    rng = np.random.default_rng(seed)
    frame = jnp.asarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    label = jnp.asarray(rng.integers(0, 4, (H, W)).astype(np.int32))
    return frame, label, jnp.ones((H, W), jnp.float32)


@pytest.mark.parametrize("cfg", [CFG, REPLAY], ids=["paper", "replay"])
def test_a_passing_check_runs_no_backward_pass(counter, cfg) -> None:
    """A teacher frame whose check passes at once costs one forward pass of the current frame (no
    backward, no replayed frame); one that fails runs one training step of B frames per update."""
    scfg = cfg.student
    frame, label, weight = _frame()
    student = init_state(jax.random.key(0), scfg, (H, W))
    replay = init_replay(cfg, (H, W))
    for i in range(cfg.replay_size):
        f, y, _ = _frame(i + 1)
        replay = replay_push(replay, f, y, jnp.ones((H, W), jnp.uint8))  # background: weight 1
    loop = jax.jit(lambda kn, s, r: teacher_updates(scfg, kn, s, frame, label, weight, True, r))
    knobs = Knobs.from_config(cfg)

    _, _, k, _ = loop(knobs.replace(a_thr=jnp.float32(-1.0)), student, replay)  # every check passes
    assert int(k) == 0
    assert counter.read() == (1, 0)

    _, _, k, _ = loop(knobs.replace(a_thr=jnp.float32(1.0)), student, replay)  # no check passes
    b = cfg.replay_batch
    assert int(k) == cfg.u_max
    assert counter.read() == (1 + cfg.u_max * b, cfg.u_max * b)


CONFIGS = {"paper": CFG, "replay": REPLAY}


@pytest.fixture(scope="module")
def counted_runs():
    """``get(name)``: the per-frame rows of a run of ``CONFIGS[name]`` on a short synthetic stream and the
    ``(forward, backward)`` network passes it executed (:class:`PassCounter`); each run once per module."""
    source = SyntheticStream(num_frames=64, height=H, width=W, seed=5)
    runs: dict[str, tuple[SyntheticStream, dict[str, np.ndarray], tuple[int, int]]] = {}

    def get(name: str) -> tuple[SyntheticStream, dict[str, np.ndarray], tuple[int, int]]:
        if name not in runs:
            cfg, counter = CONFIGS[name], PassCounter()
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(jitnet_model, "conv2d", counter.conv())
                state = new_online_state(cfg, jax.random.key(0), (H, W))
                pf = run_stream(source, cfg, state=state, progress=False).per_frame
                runs[name] = (source, pf, counter.read())
        return runs[name]

    return get


def test_decisions_equal_the_reference_loop(counted_runs) -> None:
    """Teacher frames, updates per teacher frame and strides equal the reference loop's (a forward-only
    check, the backward only after a failing one, decided on the host) while the control accuracies agree;
    the run has teacher frames that pass at once and ones that fail."""
    source, got, _ = counted_runs("paper")
    _, ref, _ = run_reference(source, CFG, jax.random.key(0))
    n = agreed_prefix(got, ref, CFG.a_thr)
    for key in ("teacher", "updates", "delta"):
        np.testing.assert_array_equal(got[key][:n], ref[key][:n], err_msg=key)
    t = np.nonzero(got["teacher"][:n])[0]
    np.testing.assert_allclose(got["acc"][t], ref["acc"][t], atol=ACC_TOL)
    passed = got["acc"][t] > CFG.a_thr
    assert passed.any() and (~passed).any(), got["acc"][t]
    assert (got["updates"][t][~passed] == CFG.u_max).all()


@pytest.mark.parametrize("name", CONFIGS)
def test_flops_speedup_charges_what_the_program_computes(counted_runs, name) -> None:
    """The forward and backward passes a whole run executes equal the ones the FLOPs speedup charges:
    a prediction per non-teacher frame, one forward per passing check, a training step of B frames per
    update."""
    cfg = CONFIGS[name]
    _, pf, executed = counted_runs(name)
    n, t, u = len(pf["frame"]), int(pf["teacher"].sum()), int(pf["updates"].sum())
    passed = int((pf["teacher"] & (pf["acc"] > cfg.a_thr)).sum())
    assert passed > 0 and u > 0
    charged = student_passes(n, t, passed, u, cfg.replay_batch)
    assert executed == (charged["forward"], charged["backward"])
    # the speedup is that count priced: a forward at infer_gflops, a backward (with the optimiser step) at
    # train_gflops - infer_gflops
    cost = CostModel()
    infer, train = 1.0, 3.0
    spent = cost.teacher_gflops * t + infer * charged["forward"] + (train - infer) * charged["backward"]
    got = flops_speedup(n, t, u + passed, u, infer, train, cost, cfg.replay_batch)
    assert got == pytest.approx(cost.teacher_gflops * n / spent)


def test_bench_check_rejects_bad_arguments_in_one_line(capsys) -> None:
    from experiments.bench_check import main

    assert main(["--height", "4", "--u-max", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: need --height/--width >= 8"), err

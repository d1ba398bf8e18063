"""The one summary of a run: passed accuracy checks paired with their teacher frames, also when the
teacher's labels arrive late, and the FLOPs speedup that charges them."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jitnet_jax.config import ModelConfig, OptimConfig, StudentConfig
from jitnet_jax.data.synthetic import SyntheticStream
from jitnet_jax.eval.costs import CostModel, flops_speedup
from jitnet_jax.eval.summary import passed_checks, summarize_per_frame
from jitnet_jax.online.engine import OnlineConfig, new_online_state
from jitnet_jax.online.runner import run_stream

#: The settings of ``tests/test_replay.py``'s delayed run (the same compiled program; ``a_thr`` is a runtime
#: knob): a label arrives 3 frames after its teacher frame. At a_thr 0.2 some checks pass at once, some
#: after an update, some never (u_max updates).
H, W, N = 24, 32, 24
DELAYED = OnlineConfig(
    student=StudentConfig(model=ModelConfig(num_classes=4), optim=OptimConfig(name="sgd", lr=0.01)),
    chunk_size=8,
    u_max=2,
    delta_min=2,
    delta_max=4,
    teacher_delay=3,
    a_thr=0.2,
)
GFLOPS = {"infer_gflops": 1.0, "train_step_gflops": 3.0}


def _rows(teacher: list[int], acc: dict[int, float], n: int = 12) -> dict[str, np.ndarray]:
    """Per-frame rows of ``n`` frames: teacher frames ``teacher``, control accuracy ``acc`` by frame."""
    t = np.zeros(n, bool)
    t[teacher] = True
    a = np.zeros(n, np.float32)
    for f, v in acc.items():
        a[f] = v
    return {"frame": np.arange(n), "teacher": t, "acc": a}


def test_passed_checks_pair_accuracy_with_teacher_frames() -> None:
    # no delay: the check is in the teacher frame's own row
    assert passed_checks(_rows([0, 4, 8], {0: 0.9, 4: 0.5, 8: 0.85}), 0.8) == 2
    # delay 2: teacher frames 0, 4, 9; their checks in rows 2, 6 (passed) and 11 (failed)
    rows = _rows([0, 4, 9], {2: 0.9, 6: 0.95, 11: 0.3})
    assert passed_checks(rows, 0.8, teacher_delay=2) == 2
    assert passed_checks(_rows([0, 10], {2: 0.9}), 0.8, teacher_delay=2) == 1  # frame 10's label never came
    with pytest.raises(ValueError, match="teacher_delay"):
        passed_checks(rows, 0.8, teacher_delay=-1)


@pytest.fixture(scope="module")
def delayed_rows() -> dict[str, np.ndarray]:
    source = SyntheticStream(N, H, W, seed=5)
    state = new_online_state(DELAYED, jax.random.key(0), (H, W))
    return run_stream(source, DELAYED, state=state, progress=False).per_frame


def test_a_delayed_run_counts_its_passed_checks(delayed_rows) -> None:
    pf, d = delayed_rows, DELAYED.teacher_delay
    # Independent of ``acc``: the update loop stops before u_max updates only on a check that passed, so a
    # teacher frame passed iff the frame its label arrived at (d frames later) took fewer than u_max updates.
    t = np.nonzero(pf["teacher"])[0]
    arrived = t[t + d < len(pf["frame"])] + d
    expected = int((pf["updates"][arrived] < DELAYED.u_max).sum())
    passed = passed_checks(pf, DELAYED.a_thr, d)
    assert passed == expected > 0

    s = summarize_per_frame(pf, ("a", "b", "c", "d"), a_thr=DELAYED.a_thr, gflops=GFLOPS, teacher_delay=d)
    n, u = len(pf["frame"]), int(pf["updates"].sum())
    cost = CostModel()
    one = [n, len(t)]
    assert s["speedup_flops"] == pytest.approx(flops_speedup(*one, u + passed, u, 1.0, 3.0, cost))
    assert s["speedup_flops"] < flops_speedup(*one, u, u, 1.0, 3.0, cost)  # the checks cost something

"""Student checkpoints: round trip, and one-line errors on class-count / architecture mismatch."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jitnet_jax.config import ModelConfig, StudentConfig
from jitnet_jax.online.engine import OnlineConfig
from jitnet_jax.online.runner import new_state
from jitnet_jax.student.pretrained import CheckpointMismatch, load_student, read_meta, save_student
from jitnet_jax.student.step import init_state

MODEL = ModelConfig(num_classes=3, width_multiplier=0.25)


def leaves_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def test_round_trip_state_and_online_state(tmp_path):
    state = init_state(jax.random.key(1), StudentConfig(model=MODEL), (24, 32))
    path = save_student(tmp_path / "ckpt", state, MODEL, info={"data": "unit test"})
    params, stats = load_student(path, MODEL)
    assert leaves_equal(params, state.params) and leaves_equal(stats, state.batch_stats)
    assert read_meta(path)["info"] == {"data": "unit test"}
    # an OnlineState and a (params, stats) pair are accepted too; overwrite replaces
    online = new_state(OnlineConfig(student=StudentConfig(model=MODEL)), jax.random.key(2), (24, 32))
    save_student(path, online, MODEL)
    params2, _ = load_student(path, MODEL)
    assert leaves_equal(params2, online.student.params) and not leaves_equal(params2, state.params)
    save_student(tmp_path / "pair", (params, stats), MODEL)
    assert leaves_equal(load_student(tmp_path / "pair", MODEL)[0], params)


def test_wired_into_init_state(tmp_path):
    cfg = StudentConfig(model=MODEL)
    trained = init_state(jax.random.key(3), cfg, (24, 32))
    save_student(tmp_path / "c", trained, MODEL)
    params, stats = load_student(tmp_path / "c", MODEL)
    state = init_state(jax.random.key(4), cfg, (48, 64)).replace(params=params, batch_stats=stats)
    assert leaves_equal(state.params, trained.params)


@pytest.mark.parametrize(
    "other, field",
    [
        (ModelConfig(num_classes=2, width_multiplier=0.25), "num_classes"),
        (ModelConfig(num_classes=3, width_multiplier=0.5), "width_multiplier"),
        (ModelConfig(num_classes=3, width_multiplier=0.25, separable=True), "separable"),
    ],
)
def test_mismatch_is_one_line_naming_field(tmp_path, other, field):
    save_student(tmp_path / "c", init_state(jax.random.key(0), StudentConfig(model=MODEL), (24, 32)), MODEL)
    with pytest.raises(CheckpointMismatch) as e:
        load_student(tmp_path / "c", other)
    msg = str(e.value)
    assert "\n" not in msg and f"model.{field}" in msg and str(tmp_path / "c") in msg


def test_missing_and_foreign_directories(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_student(tmp_path / "nope", MODEL)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointMismatch, match="not a jitnet student checkpoint"):
        load_student(tmp_path / "empty", MODEL)


def test_bn_fields_do_not_block_loading(tmp_path):
    save_student(tmp_path / "c", init_state(jax.random.key(0), StudentConfig(model=MODEL), (24, 32)), MODEL)
    load_student(tmp_path / "c", ModelConfig(num_classes=3, width_multiplier=0.25, bn_mode="running"))

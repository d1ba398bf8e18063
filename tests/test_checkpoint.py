"""Unit tests of the Orbax stream checkpointer (no compiled stream loop: fast)."""

from __future__ import annotations

import functools
import os
import shutil
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jitnet_jax.config import ModelConfig, StudentConfig
from jitnet_jax.data.types import Chunk, StreamInfo
from jitnet_jax.online.checkpoint import (
    GracefulStop,
    Interrupted,
    StreamCheckpointer,
    check_fingerprint,
    make_fingerprint,
)
from jitnet_jax.online.engine import OnlineConfig
from jitnet_jax.online.runner import empty_per_frame, lower_chunk, new_state

H, W, C = 16, 24, 4
INFO = StreamInfo("synthetic", 100, H, W, 30.0, ("background", "a", "b", "c"), "exact")


def _cfg(num_classes: int = C) -> OnlineConfig:
    return OnlineConfig(student=StudentConfig(model=ModelConfig(num_classes=num_classes)), chunk_size=4)


@functools.cache
def _fresh(seed: int):
    return new_state(_cfg(), jax.random.key(seed), (H, W))


def _state(seed: int, cursor: int):
    s = _fresh(seed % 3)
    params = jax.tree_util.tree_map(lambda x: x + 0.01 * seed, s.student.params)
    return s.replace(
        student=s.student.replace(params=params, step=jnp.int32(3 * cursor)),
        cursor=jnp.int32(cursor),
        next_teacher=jnp.int32(cursor + 5),
        delta=jnp.int32(16),
        teacher_frames=jnp.int32(cursor // 4),
        updates=jnp.int32(cursor),
    )


def _per_frame(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(n)
    pf = empty_per_frame(C)
    pf = {
        "frame": np.arange(n, dtype=np.int64),
        "teacher": rng.random(n) < 0.3,
        "updates": rng.integers(0, 8, n).astype(np.int32),
        "delta": rng.integers(1, 64, n).astype(np.int32),
        "acc": rng.random(n).astype(np.float32),
        **{k: rng.integers(0, 1000, (n, C)).astype(np.int64) for k in ("tp", "fp", "fn")},
    }
    return pf


def _chunk(start: int, n: int) -> Chunk:
    return Chunk(
        np.zeros((n, H, W, 3), np.uint8),
        np.zeros((n, H, W), np.uint8),
        np.zeros((n, H, W), np.float32),
        np.ones(n, bool),
        start,
    )


def _leaves(state):
    conv = lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x  # noqa: E731
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.tree_util.tree_map(conv, state))]


def test_round_trip(tmp_path):
    ck = StreamCheckpointer(tmp_path / "ck", make_fingerprint(_cfg(), INFO), every_frames=8)
    state, pf = _state(1, 12), _per_frame(12)
    assert ck.save(state, pf)
    assert not ck.save(state, pf)  # same cursor: nothing to do
    template = _state(0, 0)
    restored, pf2 = ck.restore_latest(template)
    for a, b in zip(_leaves(state), _leaves(restored)):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    assert jax.dtypes.issubdtype(restored.student.rng.dtype, jax.dtypes.prng_key)
    assert int(restored.cursor) == 12 and int(restored.next_teacher) == 17
    assert set(pf2) == set(pf)
    for k in pf:
        assert pf2[k].dtype == pf[k].dtype
        np.testing.assert_array_equal(pf2[k], pf[k])
    # The optimiser state (momentum buffers, injected lr, schedule count) is restored too.
    assert jax.tree_util.tree_structure(restored.student.opt_state) == jax.tree_util.tree_structure(
        state.student.opt_state
    )
    ck.close()


def test_a_restored_state_lowers_to_the_fresh_runs_program(tmp_path):
    """A restored state's arrays are committed to their device, a fresh state's are not; the chunk program
    is lowered from shapes and dtypes only, so both give the same program (a resume loads the program a
    fresh run cached instead of compiling its own)."""
    ck = StreamCheckpointer(tmp_path / "ck", make_fingerprint(_cfg(), INFO), every_frames=8)
    assert ck.save(_state(1, 12), _per_frame(12))
    restored, _ = ck.restore_latest(_state(0, 0))
    ck.close()
    fresh = _fresh(0)
    assert any(x.committed for x in jax.tree_util.tree_leaves(restored))
    assert not any(x.committed for x in jax.tree_util.tree_leaves(fresh))
    texts = [lower_chunk(_cfg(), s, H, W).as_text() for s in (fresh, restored)]
    assert texts[0] == texts[1]


def test_empty_directory_and_cursor_zero(tmp_path):
    ck = StreamCheckpointer(tmp_path / "ck", make_fingerprint(_cfg(), INFO), every_frames=4)
    assert ck.restore_latest(_state(0, 0)) is None
    assert not ck.save(_state(0, 0), empty_per_frame(C))  # nothing processed yet
    with pytest.raises(ValueError, match="per_frame has 3 frames"):
        ck.save(_state(0, 4), _per_frame(3))


@pytest.mark.parametrize(
    "other, field",
    [
        (dict(cfg=_cfg(5)), "model.num_classes"),
        (dict(h=32), "stream.height"),
        (dict(w=32), "stream.width"),
        (
            dict(cfg=OnlineConfig(student=StudentConfig(model=ModelConfig(width_multiplier=0.25)))),
            "model.width_multiplier",
        ),
        (dict(cfg=OnlineConfig(student=StudentConfig(model=ModelConfig(separable=True)))), "model.separable"),
        (dict(cfg=OnlineConfig(student=StudentConfig(model=ModelConfig(dtype="bfloat16")))), "model.dtype"),
    ],
)
def test_fingerprint_mismatch_names_field(tmp_path, other, field):
    ck = StreamCheckpointer(tmp_path / "ck", make_fingerprint(_cfg(), INFO), every_frames=4)
    ck.save(_state(1, 4), _per_frame(4))
    info = StreamInfo("synthetic", 100, other.get("h", H), other.get("w", W), 30.0, INFO.class_names, "exact")
    ck2 = StreamCheckpointer(
        tmp_path / "ck", make_fingerprint(other.get("cfg", _cfg()), info), every_frames=4
    )
    with pytest.raises(ValueError, match=rf"cannot resume .*: {field} was ") as e:
        ck2.restore_latest(_state(0, 0))
    assert "\n" not in str(e.value)


def test_a_format_2_checkpoint_is_refused_in_one_line(tmp_path):
    """Format 2 kept float32 loss weights in the replay buffer and the label in flight (now the uint8 region
    map): resuming one is refused, naming the format."""
    old = {**make_fingerprint(_cfg(), INFO), "format.checkpoint": 2}
    StreamCheckpointer(tmp_path / "ck", old, every_frames=4).save(_state(1, 4), _per_frame(4))
    current = StreamCheckpointer(tmp_path / "ck", make_fingerprint(_cfg(), INFO), every_frames=4)
    with pytest.raises(ValueError, match=r"format.checkpoint was 2, now 3") as e:
        current.restore_latest(_state(0, 0))
    assert "\n" not in str(e.value)


def test_nested_fingerprint_is_flattened(tmp_path):
    fp = {"model": {"num_classes": 4, "width_multiplier": 0.5}, "height": H, "width": W}
    ck = StreamCheckpointer(tmp_path / "ck", fp, every_frames=4)
    ck.save(_state(1, 4), _per_frame(4))
    fp2 = {"model": {"num_classes": 7, "width_multiplier": 0.5}, "height": H, "width": W}
    with pytest.raises(ValueError, match=r"model.num_classes was 4, now 7"):
        StreamCheckpointer(tmp_path / "ck", fp2, every_frames=4).restore_latest(_state(0, 0))
    with pytest.raises(ValueError, match="height was 16, now 8"):
        check_fingerprint({"height": 16, "model.num_classes": 4}, {"height": 8, "model.num_classes": 5})


def test_periodic_saves_and_retention(tmp_path):
    ck = StreamCheckpointer(tmp_path / "ck", make_fingerprint(_cfg(), INFO), every_frames=10, keep=2)
    saved = []
    for end in range(4, 48, 4):  # chunks of 4 frames: cursor 4, 8, ..., 44
        saved.append(ck.on_chunk(_state(end, end), _chunk(end - 4, 4), None, _per_frame(end)))
    # Crossing 10, 20, 30, 40 -> saves at cursors 12, 20, 32, 40; only the last two are kept.
    assert [4 * (i + 1) for i, s in enumerate(saved) if s] == [12, 20, 32, 40]
    assert ck.steps() == [32, 40]
    restored, pf = ck.restore_latest(_state(0, 0))
    assert int(restored.cursor) == 40 and len(pf["frame"]) == 40
    ck.save(_state(44, 44), _per_frame(44))  # forced final save
    assert ck.steps() == [40, 44]
    ck.close()


def test_partial_save_is_ignored(tmp_path):
    """A save killed before orbax's atomic rename leaves a tmp directory: the previous checkpoint wins."""
    d = tmp_path / "ck"
    ck = StreamCheckpointer(d, make_fingerprint(_cfg(), INFO), every_frames=4)
    ck.save(_state(1, 8), _per_frame(8))
    ck.close()
    # Simulate a kill mid-save of cursor 12: a complete-looking copy under orbax's temporary name,
    # plus a truncated file in it.
    tmp = d / "12.orbax-checkpoint-tmp-1234567"
    shutil.copytree(d / "8", tmp)
    for root, _, files in os.walk(tmp):
        for f in files:
            open(os.path.join(root, f), "wb").close()
    ck2 = StreamCheckpointer(d, make_fingerprint(_cfg(), INFO), every_frames=4)
    assert ck2.steps() == [8]
    restored, pf = ck2.restore_latest(_state(0, 0))
    assert int(restored.cursor) == 8 and len(pf["frame"]) == 8
    assert ck2.save(_state(2, 12), _per_frame(12))
    assert ck2.steps() == [8, 12]
    ck2.close()


def _sentinel_handler(signum, frame):  # pragma: no cover - installed, never called
    raise AssertionError(f"sentinel handler called for signal {signum}")


def test_graceful_stop_saves_and_raises(tmp_path):
    ck = StreamCheckpointer(tmp_path / "ck", make_fingerprint(_cfg(), INFO), every_frames=0)
    sigs = (signal.SIGINT, signal.SIGTERM)
    before = {s: signal.signal(s, _sentinel_handler) for s in sigs}  # handlers only this test installs
    try:
        with GracefulStop() as stop:
            assert all(signal.getsignal(s) is not _sentinel_handler for s in sigs)
            cb = ck.on_chunk_callback(stop)
            cb(_state(1, 4), _chunk(0, 4), None, _per_frame(4))  # no stop requested, no periodic saves
            assert ck.steps() == []
            os.kill(os.getpid(), signal.SIGTERM)  # handled: sets the flag
            assert stop.is_set() and stop.signum == signal.SIGTERM
            with pytest.raises(Interrupted, match="SIGTERM.*checkpoint saved at frame 8") as e:
                cb(_state(1, 8), _chunk(4, 4), None, _per_frame(8))
            assert e.value.cursor == 8
        assert ck.steps() == [8]
        # on exit the handlers in place before entering are back (not the defaults, not GracefulStop's)
        assert [signal.getsignal(s) for s in sigs] == [_sentinel_handler] * 2
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="keep must be >= 1"):
        StreamCheckpointer(tmp_path / "a", {}, every_frames=4, keep=0)
    with pytest.raises(ValueError, match="every_frames must be >= 0"):
        StreamCheckpointer(tmp_path / "b", {}, every_frames=-1)

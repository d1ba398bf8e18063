"""Pure steps: jit equivalence, loss weighting, validation, overfitting a real frame."""

from __future__ import annotations

import dataclasses

import imageio_ffmpeg
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jitnet_jax.config import ModelConfig, OptimConfig, StudentConfig, override
from jitnet_jax.student.losses import weighted_cross_entropy
from jitnet_jax.student.optim import decay_mask
from jitnet_jax.student.step import (
    init_state,
    jit_predict,
    jit_train_step,
    predict,
    train_step,
)

CFG = StudentConfig(model=ModelConfig(num_classes=3))


def _example(h: int = 48, w: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    label = rng.integers(0, 3, (h, w)).astype(np.int32)
    weight = np.ones((h, w), np.float32)
    return frame, label, weight


def test_jit_equals_eager() -> None:
    frame, label, weight = _example()
    s0 = init_state(jax.random.key(0), CFG, frame.shape[:2])
    eager_state, eager_m = train_step(CFG, s0, frame, label, weight)
    jit_state, jit_m = jax.jit(train_step, static_argnums=0)(CFG, s0, frame, label, weight)
    np.testing.assert_allclose(eager_m["loss"], jit_m["loss"], rtol=1e-5)
    for a, b in zip(
        jax.tree_util.tree_leaves(eager_state.params), jax.tree_util.tree_leaves(jit_state.params)
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert int(jit_state.step) == 1


def test_loss_weighting_doubles_share() -> None:
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(1, 4, 5, 3)), jnp.float32)
    label = jnp.asarray(rng.integers(0, 3, (1, 4, 5)))
    w = np.ones((1, 4, 5), np.float32)
    ce = -jax.nn.log_softmax(logits)[0][np.arange(4)[:, None], np.arange(5)[None], label[0]]

    def share(weights: np.ndarray) -> float:
        total = float(weighted_cross_entropy(logits, label, jnp.asarray(weights), 255)) * weights.sum()
        return float(weights[0, 1, 2] * ce[1, 2]) / total

    w2 = w.copy()
    w2[0, 1, 2] = 2.0
    # the pixel's weighted contribution doubles while the others' stay the same
    base, doubled = share(w), share(w2)
    rest = 1 - base
    assert doubled / (1 - doubled) == pytest.approx(2 * base / rest, rel=1e-5)


def test_ignore_label_is_ignored() -> None:
    logits = jnp.zeros((1, 2, 2, 3)).at[0, 0, 0, 1].set(5.0)
    label = jnp.array([[[255, 0], [0, 0]]])
    a = weighted_cross_entropy(logits, label, jnp.ones((1, 2, 2)), 255)
    b = weighted_cross_entropy(
        logits[:, :, :, :], jnp.array([[[0, 0], [0, 0]]]), jnp.array([[[0.0, 1], [1, 1]]]), 255
    )
    assert float(a) == pytest.approx(float(b))


def test_weight_decay_mask_only_conv_kernels() -> None:
    s = init_state(jax.random.key(0), CFG, (32, 32))
    flat = jax.tree_util.tree_flatten_with_path(decay_mask(s.params))[0]
    on = {jax.tree_util.keystr(p) for p, v in flat if v}
    assert on and all("kernel" in k for k in on)
    assert not any("BatchNorm" in k for k in on)
    assert any("bias" in jax.tree_util.keystr(p) for p, v in flat if not v)


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"model.width_multiplier": "0"}, "width_multiplier"),
        ({"model.width_multiplier": "-1"}, "width_multiplier"),
        ({"model.num_classes": "1"}, "num_classes"),
        ({"optim.lr": "0"}, "lr"),
        ({"optim.schedule": "bogus"}, "schedule"),
    ],
)
def test_bad_config_raises(bad: dict[str, str], match: str) -> None:
    cfg = override(CFG, [f"{k}={v}" for k, v in bad.items()])
    with pytest.raises(ValueError, match=match):
        init_state(jax.random.key(0), cfg, (32, 32))


def test_bad_frames_raise() -> None:
    s = init_state(jax.random.key(0), CFG, (32, 32))
    step = jit_train_step(CFG)
    label, weight = np.zeros((32, 32), np.int32), np.ones((32, 32), np.float32)
    with pytest.raises(ValueError, match="uint8"):
        step(s, np.zeros((32, 32, 3), np.float32), label, weight)
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        jit_predict(CFG)(s, np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match="unknown config field"):
        override(CFG, ["model.nope=1"])


def test_predict_does_not_change_state() -> None:
    frame, _, _ = _example()
    s = init_state(jax.random.key(0), CFG, frame.shape[:2])
    before = jax.tree_util.tree_map(np.asarray, s.batch_stats)
    p1 = predict(CFG, s, frame)
    p2 = predict(CFG, s, frame)
    np.testing.assert_array_equal(p1, p2)
    for a, b in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(s.batch_stats)):
        np.testing.assert_array_equal(a, b)


def _hand_label(frame: np.ndarray, block: int = 8) -> np.ndarray:
    """A 3-class label rasterised by hand: 8x8 blocks by mean brightness (1 = brightest fifth,
    2 = darkest fifth, 0 = the rest), so region boundaries follow the real image content."""
    h, w = frame.shape[:2]
    lum = frame.astype(np.float32).mean(-1)[: h - h % block, : w - w % block]
    blocks = lum.reshape(h // block, block, w // block, block).mean((1, 3))
    coarse = np.zeros(blocks.shape, np.int32)
    coarse[blocks > np.percentile(blocks, 80)] = 1
    coarse[blocks < np.percentile(blocks, 20)] = 2
    label = np.zeros((h, w), np.int32)
    label[: h - h % block, : w - w % block] = np.kron(coarse, np.ones((block, block), np.int32))
    return label


def test_overfit_one_real_frame(shared_data) -> None:
    path = shared_data / "clips" / "residential_street_traffic.mp4"
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    for i, raw in enumerate(reader):
        if i == 100:
            frame = np.frombuffer(raw, np.uint8).reshape(h, w, 3)[::4, ::4].copy()
            break
    reader.close()
    label = _hand_label(frame)
    weight = np.ones(label.shape, np.float32)
    cfg = dataclasses.replace(CFG, optim=OptimConfig(name="adam", lr=1e-3, momentum=0.9))
    state = init_state(jax.random.key(0), cfg, frame.shape[:2])
    step = jit_train_step(cfg)
    best = 0.0
    for _ in range(200):
        state, m = step(state, frame, label, weight)
        best = max(best, float(m["min_iou"]))
        if best > 0.9:
            break
    assert best > 0.9, f"min-class IoU only reached {best:.3f}"

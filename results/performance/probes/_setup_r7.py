"""Shared set-up of the round-7 probes: JITNet (4 classes, Adam 1e-3), its state and one random frame."""

import jax
import numpy as np

from jitnet_jax.config import ModelConfig, OptimConfig, StudentConfig
from jitnet_jax.student.step import init_state


def setup(h: int, w: int):
    """``(cfg, state, frame uint8 [h, w, 3], label int32 [h, w], weight float32 [h, w])``."""
    cfg = StudentConfig(model=ModelConfig(num_classes=4), optim=OptimConfig("adam", lr=1e-3))
    state = init_state(jax.random.key(0), cfg, (h, w))
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    label = rng.integers(0, 4, (h, w)).astype(np.int32)
    return cfg, state, frame, label, np.ones((h, w), np.float32)

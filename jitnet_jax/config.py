"""Frozen, hashable configuration dataclasses: the student, its optimiser and the online loop.

Every config is a frozen dataclass so it can be a static argument of ``jax.jit``
and be written to / read from JSON. ``validate()`` raises a one-line ``ValueError``
naming the offending field.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, TypeVar

T = TypeVar("T")

SCHEDULES = ("constant", "cosine", "warmup_cosine", "exponential", "piecewise")
OPTIMIZERS = ("sgd", "adam")
BN_MODES = ("batch", "running")
#: ``ModelConfig.dtype`` choices: the compute dtype of the student's convolutions and activations ("auto":
#: bfloat16 on GPU/TPU, float32 on CPU; parameters, BatchNorm statistics and the loss stay float32).
DTYPES = ("float32", "bfloat16", "auto")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """JITNet architecture (``src/res_seg.py`` of the authors' code).

    Attributes:
      num_classes: number of output classes, background included (>= 2).
      width_multiplier: ``m``; channel widths are ``max(int(w * m), minimum)``.
      num_units: residual units per encoder/decoder block.
      separable: use the depthwise-separable residual unit.
      scale: run the network on a frame resized by ``scale`` (<= 1) and upsample logits.
      bn_momentum: BatchNorm running-average decay (slim default 0.997).
      bn_eps: BatchNorm epsilon.
      bn_mode: "batch" normalises with the current frame's statistics in training *and*
        prediction (the PyTorch port's choice; see README); "running" predicts with the
        running averages.
      conv_backward: "matmul" computes conv gradients with matmuls (fast inside loops on XLA:CPU),
        "xla" uses XLA's gradient convolutions, "auto" picks matmul on CPU and xla elsewhere.
      dtype: compute dtype of convolutions and activations, one of :data:`DTYPES`: "float32" (default),
        "bfloat16" (mixed precision: float32 parameters, BatchNorm statistics, logits and loss; see
        docs/accelerators.md) or "auto" (bfloat16 on GPU/TPU, float32 on CPU).
    """

    num_classes: int = 4
    width_multiplier: float = 0.5
    num_units: int = 1
    separable: bool = False
    scale: float = 1.0
    bn_momentum: float = 0.997
    bn_eps: float = 1e-5
    bn_mode: str = "batch"
    conv_backward: str = "auto"
    dtype: str = "float32"

    def validate(self) -> ModelConfig:
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ValueError(f"model.num_classes must be an int >= 2, got {self.num_classes!r}")
        if not self.width_multiplier > 0:
            raise ValueError(f"model.width_multiplier must be > 0, got {self.width_multiplier!r}")
        if not isinstance(self.num_units, int) or self.num_units < 1:
            raise ValueError(f"model.num_units must be an int >= 1, got {self.num_units!r}")
        if not 0 < self.scale <= 1:
            raise ValueError(f"model.scale must be in (0, 1], got {self.scale!r}")
        if self.conv_backward not in ("auto", "matmul", "xla"):
            raise ValueError(f"model.conv_backward must be auto, matmul or xla, got {self.conv_backward!r}")
        if self.bn_mode not in BN_MODES:
            raise ValueError(f"model.bn_mode must be one of {BN_MODES}, got {self.bn_mode!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"model.dtype must be one of {DTYPES}, got {self.dtype!r}")
        return self


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule.

    The paper: SGD, momentum 0.9, lr 0.01; weight decay 4e-5 on conv kernels only.
    ``schedule`` picks an optax schedule over the number of *updates* taken so far:
      constant: ``lr``;
      cosine: ``optax.cosine_decay_schedule(lr, decay_steps, alpha)``;
      warmup_cosine: ``optax.warmup_cosine_decay_schedule(0, lr, warmup_steps, decay_steps, lr*alpha)``;
      exponential: ``optax.exponential_decay(lr, transition_steps, decay_rate)``;
      piecewise: ``optax.piecewise_constant_schedule(lr, {b: s for b, s in zip(boundaries, scales)})``.
    """

    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    b2: float = 0.999
    weight_decay: float = 4e-5
    schedule: str = "constant"
    decay_steps: int = 2000
    warmup_steps: int = 50
    alpha: float = 0.0
    transition_steps: int = 500
    decay_rate: float = 0.5
    boundaries: tuple[int, ...] = (500, 1000)
    scales: tuple[float, ...] = (0.5, 0.5)

    def validate(self) -> OptimConfig:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optim.name must be one of {OPTIMIZERS}, got {self.name!r}")
        if not self.lr > 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"optim.momentum must be in [0, 1), got {self.momentum!r}")
        if self.weight_decay < 0:
            raise ValueError(f"optim.weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.schedule in ("cosine", "warmup_cosine") and self.decay_steps < 1:
            raise ValueError(f"optim.decay_steps must be >= 1, got {self.decay_steps!r}")
        if len(self.boundaries) != len(self.scales):
            raise ValueError("optim.boundaries and optim.scales must have the same length")
        return self


@dataclasses.dataclass(frozen=True)
class StudentConfig:
    """Everything that defines the student's pure functions (static under jit).

    Attributes:
      model: architecture.
      optim: optimiser.
      ignore_label: label value excluded from loss and metrics.
      iou_smoothing: pixels added to numerator and denominator of the control IoU (paper: 100).
    """

    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    ignore_label: int = 255
    iou_smoothing: float = 100.0

    def validate(self) -> StudentConfig:
        self.model.validate()
        self.optim.validate()
        if 0 <= self.ignore_label < self.model.num_classes:
            raise ValueError(
                f"ignore_label {self.ignore_label} collides with a class id (num_classes="
                f"{self.model.num_classes})"
            )
        return self


@dataclasses.dataclass(frozen=True)
class OnlineConfig:
    """Online distillation settings (paper defaults): the one place each online knob has its default.

    Attributes:
      student: the student network and optimiser.
      a_thr: accuracy threshold in (0, 1] on the smoothed min-class IoU.
      delta_min, delta_max: bounds of the teacher stride (frames).
      u_max: maximum updates per teacher frame.
      fg_weight, bg_weight: loss weight inside / outside the teacher's dilated boxes (the engine turns
        the source's map into these weights in ``online.engine.effective_weight``).
      chunk_size: frames per compiled scan (static shape).
      replay_size: ``R``, the last R teacher frames (frame, label, loss weight) kept in a ring buffer in
        the online state (beyond the paper; 0 = the paper, no buffer).
      replay_batch: ``B``, frames per update: the current teacher frame plus ``B - 1`` frames sampled
        from the buffer (1 without replay; needs ``2 <= B <= R + 1`` with replay).
      teacher_delay: ``d``, frames between running the teacher on a frame and its label reaching the
        student (a simulated teacher latency; 0 = the paper: the label is there at once). The student
        keeps predicting meanwhile and trains on the stored frame and label ``d`` frames later.
      zoo_size: ``Z``, earlier students (parameters and BatchNorm statistics) kept on the device (beyond
        the paper; 0 = the paper, no zoo). On a teacher frame whose first check fails the zoo is scored on
        it and the student continues from the best member if that beats it by ``zoo_margin``
        (docs/zoo.md).
      zoo_margin: smoothed min-class IoU by which the best member must beat the student to replace it.
      zoo_need_pass: the best member must also pass the check (``> a_thr``) to replace the student.
      zoo_store_after: the student enters the zoo after this many consecutive teacher frames whose check
        passed, if it was updated since it was last stored or loaded and no member already passes the frame.
    """

    student: StudentConfig = StudentConfig()
    a_thr: float = 0.8
    delta_min: int = 8
    delta_max: int = 64
    u_max: int = 8
    fg_weight: float = 10.0
    bg_weight: float = 1.0
    chunk_size: int = 64
    replay_size: int = 0
    replay_batch: int = 1
    teacher_delay: int = 0
    zoo_size: int = 0
    zoo_margin: float = 0.05
    zoo_need_pass: bool = True
    zoo_store_after: int = 2

    def validate(self) -> OnlineConfig:
        self.student.validate()
        if not 0 < self.a_thr <= 1:
            raise ValueError(f"a_thr must be in (0, 1], got {self.a_thr}")
        if self.delta_min < 1:
            raise ValueError(f"delta_min must be >= 1, got {self.delta_min}")
        if self.delta_min > self.delta_max:
            raise ValueError(f"delta_min ({self.delta_min}) must be <= delta_max ({self.delta_max})")
        if self.u_max < 1:
            raise ValueError(f"u_max must be >= 1, got {self.u_max}")
        if self.fg_weight < 0 or self.bg_weight < 0:
            raise ValueError("fg_weight and bg_weight must be >= 0")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.replay_size < 0:
            raise ValueError(f"replay_size must be >= 0, got {self.replay_size}")
        if self.replay_batch < 1:
            raise ValueError(f"replay_batch must be >= 1, got {self.replay_batch}")
        if self.replay_batch > self.replay_size + 1:
            raise ValueError(
                f"replay batch B={self.replay_batch} larger than buffer R+1={self.replay_size + 1} "
                "(set replay_size >= replay_batch - 1)"
            )
        if self.teacher_delay < 0:
            raise ValueError(f"teacher_delay must be >= 0 frames, got {self.teacher_delay}")
        if self.replay_size > 0 and self.replay_batch < 2:
            raise ValueError(
                f"replay_size={self.replay_size} needs replay_batch >= 2 (the current frame plus B-1 replayed)"
            )
        if self.zoo_size < 0:
            raise ValueError(f"zoo_size must be >= 0, got {self.zoo_size}")
        if not 0 <= self.zoo_margin < 1:
            raise ValueError(f"zoo_margin must be in [0, 1), got {self.zoo_margin}")
        if self.zoo_store_after < 1:
            raise ValueError(f"zoo_store_after must be >= 1 teacher frames, got {self.zoo_store_after}")
        return self


def latency_frames(latency_ms: float, fps: float) -> int:
    """A teacher latency as a :attr:`OnlineConfig.teacher_delay`: the frames of a ``fps`` stream that pass
    while the teacher works, ``ceil(latency_ms * fps / 1000)`` (a label that takes any time arrives at
    least one frame late; 0 ms is 0 frames)."""
    if latency_ms < 0 or fps <= 0:
        raise ValueError(f"need latency >= 0 ms and fps > 0, got {latency_ms} ms at {fps} fps")
    return math.ceil(latency_ms * fps / 1000.0 - 1e-9)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls: type[T], data: dict[str, Any], base: T | None = None) -> T:
    """Rebuild a (nested) config dataclass from ``to_dict`` output; unknown keys are errors.

    ``base``: the config that fields absent from ``data`` keep (default: the class defaults), so a partial
    dict (a hand-written ``--config`` file) changes only what it names."""
    base = cls() if base is None else base
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise ValueError(f"unknown config field {cls.__name__}.{key}")
        default = getattr(base, key)
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ValueError(f"config field {cls.__name__}.{key} must be an object, got {value!r}")
            kwargs[key] = from_dict(type(default), value, default)
        elif isinstance(default, tuple):
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    return dataclasses.replace(base, **kwargs)  # type: ignore[type-var]


def _coerce(text: str, default: Any, path: str) -> Any:
    try:
        if isinstance(default, bool):
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, tuple):
            items = [s for s in text.split(",") if s.strip()]
            kind = type(default[0]) if default else float
            return tuple(kind(s) for s in items)
        return text
    except ValueError:
        raise ValueError(f"config field {path}: cannot parse {text!r} as {type(default).__name__}") from None


def override(cfg: T, assignments: list[str]) -> T:
    """Apply ``a.b.c=value`` overrides to a nested frozen dataclass.

    Example: ``override(cfg, ["student.optim.lr=0.003", "a_thr=0.9"])``.
    """
    for assignment in assignments:
        if "=" not in assignment:
            raise ValueError(f"override {assignment!r} must look like field.path=value")
        path, text = assignment.split("=", 1)
        cfg = _set_path(cfg, path.strip().split("."), text.strip(), path.strip())
    return cfg


def _set_path(obj: Any, keys: list[str], text: str, full: str) -> Any:
    if not dataclasses.is_dataclass(obj):
        raise ValueError(f"config field {full}: {keys[0]!r} is not a config section")
    names = {f.name for f in dataclasses.fields(obj)}
    if keys[0] not in names:
        raise ValueError(f"unknown config field {full!r} (choices at this level: {', '.join(sorted(names))})")
    current = getattr(obj, keys[0])
    if len(keys) == 1:
        if dataclasses.is_dataclass(current):
            raise ValueError(f"config field {full} is a section, name one of its fields")
        value = _coerce(text, current, full) if current is not None else text
    else:
        value = _set_path(current, keys[1:], text, full)
    return dataclasses.replace(obj, **{keys[0]: value})

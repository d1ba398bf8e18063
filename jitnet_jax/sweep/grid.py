"""What a sweep varies: the members (configurations), grids over them, and the Pareto front of results.

A :class:`Member` holds only what a member may change relative to the sweep's base
:class:`~jitnet_jax.config.OnlineConfig`; it has no defaults and no checks of its own: a member is made
from the base config (:meth:`Member.from_config`) and checked as the single-run config it stands for
(:meth:`Member.online_config` validates it).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

from jitnet_jax.config import OnlineConfig

# Sweepable fields: short name -> path in OnlineConfig (the single-run equivalent of a member).
SWEEP_FIELDS: dict[str, str] = {
    "lr": "student.optim.lr",
    "schedule": "student.optim.schedule",
    "momentum": "student.optim.momentum",
    "a_thr": "a_thr",
    "delta_min": "delta_min",
    "delta_max": "delta_max",
    "u_max": "u_max",
    "fg_weight": "fg_weight",
    "bg_weight": "bg_weight",
    "seed": "seed",
    "stream": "stream",
}
_KINDS = {"float": float, "int": int, "str": str}


@dataclasses.dataclass(frozen=True)
class Member:
    """One configuration of a sweep (everything a member may change relative to the base config).

    Attributes:
      a_thr, delta_min, delta_max, u_max, fg_weight, bg_weight: controller knobs (see OnlineConfig).
      lr: peak learning rate; schedule: one of :data:`~jitnet_jax.config.SCHEDULES`; momentum: SGD
        momentum (Adam's ``b1``).
      seed: the student's init key is ``jax.random.key(seed)``.
      stream: index of the member's stream in the sweep's list of sources.
    """

    a_thr: float
    delta_min: int
    delta_max: int
    u_max: int
    fg_weight: float
    bg_weight: float
    lr: float
    schedule: str
    momentum: float
    seed: int
    stream: int

    @staticmethod
    def from_config(cfg: OnlineConfig, seed: int = 0, stream: int = 0) -> Member:
        """The member that reproduces ``cfg`` (with init key ``seed``, on stream ``stream``)."""
        o = cfg.student.optim
        knobs = {
            k: getattr(cfg, k) for k in ("a_thr", "delta_min", "delta_max", "u_max", "fg_weight", "bg_weight")
        }
        return Member(**knobs, lr=o.lr, schedule=o.schedule, momentum=o.momentum, seed=seed, stream=stream)

    def online_config(self, base: OnlineConfig) -> OnlineConfig:
        """The single-run :class:`OnlineConfig` equivalent to this member (validated)."""
        optim = dataclasses.replace(
            base.student.optim, lr=self.lr, schedule=self.schedule, momentum=self.momentum
        )
        student = dataclasses.replace(base.student, optim=optim)
        cfg = dataclasses.replace(
            base,
            student=student,
            a_thr=self.a_thr,
            delta_min=self.delta_min,
            delta_max=self.delta_max,
            u_max=self.u_max,
            fg_weight=self.fg_weight,
            bg_weight=self.bg_weight,
        )
        return cfg.validate()

    def label(self, keys: Sequence[str] | None = None) -> str:
        """``"lr=0.01,a_thr=0.8"`` over ``keys`` (all fields by default)."""
        keys = list(keys) if keys is not None else [f.name for f in dataclasses.fields(self)]
        return ",".join(f"{k}={getattr(self, k)}" for k in keys)


def _parse_value(name: str, text: str) -> Any:
    field = next(f for f in dataclasses.fields(Member) if f.name == name)
    kind = _KINDS[str(field.type)]
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"grid {name}: cannot parse {text!r} as {kind.__name__}") from None


def make_grid(base: OnlineConfig, axes: dict[str, Sequence[Any]], seed: int = 0) -> list[Member]:
    """Cartesian product of ``axes`` (``{"lr": [0.003, 0.01], "a_thr": [0.7, 0.9]}``) over the base
    configuration; values may be strings (parsed). Later axes vary fastest."""
    for name in axes:
        if name not in SWEEP_FIELDS:
            raise ValueError(f"cannot sweep {name!r}; sweepable fields: {', '.join(SWEEP_FIELDS)}")
        if len(axes[name]) == 0:
            raise ValueError(f"grid {name} has no values")
    start = Member.from_config(base, seed=seed)
    names = list(axes)
    out = []
    for combo in itertools.product(*(axes[n] for n in names)):
        values = {n: _parse_value(n, v) if isinstance(v, str) else v for n, v in zip(names, combo)}
        out.append(dataclasses.replace(start, **values))
    return out


def parse_grid(specs: Sequence[str]) -> dict[str, list[str]]:
    """``["lr=0.003,0.01", "a_thr=0.7,0.9"]`` -> ``{"lr": [...], "a_thr": [...]}``."""
    axes: dict[str, list[str]] = {}
    for spec in specs:
        if "=" not in spec:
            raise ValueError(f"--grid {spec!r} must look like name=v1,v2,...")
        name, values = spec.split("=", 1)
        name = name.strip()
        if name not in SWEEP_FIELDS:
            raise ValueError(f"cannot sweep {name!r}; sweepable fields: {', '.join(SWEEP_FIELDS)}")
        axes[name] = [v.strip() for v in values.split(",") if v.strip()]
        if not axes[name]:
            raise ValueError(f"--grid {name} has no values")
    return axes


def pareto_front(rows: Sequence[dict[str, Any]]) -> list[int]:
    """Indices of rows not dominated in (higher ``miou``, lower ``teacher_fraction``)."""
    front = []
    for i, r in enumerate(rows):
        dominated = any(
            o["miou"] >= r["miou"]
            and o["teacher_fraction"] <= r["teacher_fraction"]
            and (o["miou"] > r["miou"] or o["teacher_fraction"] < r["teacher_fraction"])
            for o in rows
        )
        if not dominated:
            front.append(i)
    return front

"""What a run is: :class:`RunConfig`, and how the command line makes one (:func:`make_config`).

The entry points (``experiments.stream``, ``experiments.sweep``, ``experiments.fleet``) share the flags
(:func:`add_config_flags`) and the order in which settings apply: the defaults, then the real-stream preset
(:data:`REAL_STREAM_PRESET`, for stored-label real streams), then a ``--config`` JSON file (which may name only
some fields; the rest keep the defaults and the preset), then the dedicated flags, then ``--set path=value``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from jitnet_jax.config import (
    DTYPES,
    SCHEDULES,
    ModelConfig,
    OnlineConfig,
    OptimConfig,
    StudentConfig,
    from_dict,
    override,
)
from jitnet_jax.eval.costs import CostModel


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run of ``experiments.stream``.

    Attributes:
      online: the algorithm (student, optimiser, controller).
      cost: the cost model for speedups.
      frames: stream frames to process (0 = the whole stream; the synthetic stream has 1500).
      height, width: student resolution.
      seed: PRNG seed of the student (and of the synthetic stream).
    """

    online: OnlineConfig = OnlineConfig(
        student=StudentConfig(
            model=ModelConfig(num_classes=4), optim=OptimConfig(name="adam", lr=1e-3, momentum=0.9)
        )
    )
    cost: CostModel = CostModel()
    frames: int = 0
    height: int = 180
    width: int = 320
    seed: int = 0

    def validate(self) -> RunConfig:
        if self.frames < 0:
            raise ValueError(f"frames must be >= 1 (or 0 for the whole stream), got {self.frames}")
        if self.height < 8 or self.width < 8:
            raise ValueError(f"height/width must be >= 8, got {self.height}x{self.width}")
        self.online.validate()
        return self


def add_config_flags(run: Any) -> None:
    """The run-config flags shared by ``experiments.stream`` and ``experiments.sweep`` (see
    :func:`make_config`)."""
    run.add_argument("--config", help="JSON run config (as written to config.json)")
    run.add_argument("--frames", type=int, help="frames to process (default: the whole stream)")
    run.add_argument("--height", type=int)
    run.add_argument("--width", type=int)
    run.add_argument("--a-thr", type=float)
    run.add_argument("--delta-min", type=int)
    run.add_argument("--delta-max", type=int)
    run.add_argument("--u-max", type=int)
    run.add_argument("--optimizer", choices=["sgd", "adam"])
    run.add_argument("--lr", type=float, help="peak learning rate")
    run.add_argument("--momentum", type=float)
    run.add_argument("--schedule", choices=SCHEDULES, help="optax lr schedule over updates")
    run.add_argument("--fg-weight", type=float)
    run.add_argument("--chunk-size", type=int)
    run.add_argument(
        "--replay", type=int, metavar="R", help="replay the last R teacher frames (0: the paper)"
    )
    run.add_argument("--replay-batch", type=int, metavar="B", help="frames per update with --replay (2..R+1)")
    run.add_argument(
        "--zoo-size", type=int, metavar="Z", help="keep up to Z earlier students on the device (0: none)"
    )
    run.add_argument(
        "--zoo-margin", type=float, help="min-IoU margin by which a zoo member must beat the student"
    )
    run.add_argument(
        "--zoo-need-pass",
        type=_bool_arg,
        metavar="0|1",
        help="a zoo member replaces the student only if it also passes the check (default 1)",
    )
    run.add_argument(
        "--zoo-store-after", type=int, metavar="S", help="store the student after S passed checks in a row"
    )
    run.add_argument(
        "--teacher-delay",
        type=delay_arg,
        metavar="D|auto",
        help="teacher labels arrive D frames late; with --live, 'auto' measures the teacher's latency on "
        "this machine and converts it with the video's frame rate",
    )
    run.add_argument("--seed", type=int)
    run.add_argument(
        "--dtype",
        choices=DTYPES,
        help="the student's compute dtype: bfloat16 keeps float32 parameters, BatchNorm statistics and loss; "
        "auto is bfloat16 on GPU/TPU, float32 on CPU (default float32; docs/accelerators.md)",
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override any config field, e.g. online.student.model.width_multiplier=0.25",
    )


def _bool_arg(text: str) -> bool:
    """A 0/1 (or false/true) flag value."""
    if text.lower() in ("1", "true"):
        return True
    if text.lower() in ("0", "false"):
        return False
    raise argparse.ArgumentTypeError(f"expected 0 or 1, got {text!r}")


def delay_arg(text: str) -> int | str:
    """``--teacher-delay``: a number of frames, or ``auto`` (measured, live mode)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of frames or 'auto', got {text!r}") from None


_FLAG_FIELDS = {
    "frames": "frames",
    "height": "height",
    "width": "width",
    "seed": "seed",
    "a_thr": "online.a_thr",
    "delta_min": "online.delta_min",
    "delta_max": "online.delta_max",
    "u_max": "online.u_max",
    "fg_weight": "online.fg_weight",
    "chunk_size": "online.chunk_size",
    "replay": "online.replay_size",
    "replay_batch": "online.replay_batch",
    "teacher_delay": "online.teacher_delay",
    "zoo_size": "online.zoo_size",
    "zoo_margin": "online.zoo_margin",
    "zoo_store_after": "online.zoo_store_after",
    "zoo_need_pass": "online.zoo_need_pass",
    "optimizer": "online.student.optim.name",
    "lr": "online.student.optim.lr",
    "momentum": "online.student.optim.momentum",
    "schedule": "online.student.optim.schedule",
    "dtype": "online.student.model.dtype",
}


#: The defaults of a stored-label real stream (``--lvs``, ``--store``, ``--video`` without ``--live``), on
#: top of :class:`RunConfig`: the full-length ``lvs_mini`` table's online setting without replay (a_thr 0.9,
#: δ in [8, 16]; 0.567 mIoU at 9.2% teacher frames, 6.1x; ``--replay 16 --replay-batch 4`` is its most
#: accurate setting, 0.632 at 8.8%, 3.4x; docs/evaluation.md). A ``--config``
#: file, the dedicated flags and ``--set`` override it. Live mode has its own defaults
#: (``jitnet_jax.online.live.LIVE_DEFAULTS``): there every teacher call and update costs real time (docs/live.md).
REAL_STREAM_PRESET = ("online.a_thr=0.9", "online.delta_max=16")
#: The start of a real stream when ``--init`` is not given (``--init none``: random init).
REAL_STREAM_INIT = "camvid"

#: Keys of a run's ``config.json`` that record the run rather than configure it (skipped by ``--config``).
_RECORD_KEYS = ("stream", "class_names", "fingerprint")


def real_stream(args: argparse.Namespace) -> bool:
    """True when the run reads a real stream (``--lvs``, ``--store`` or ``--video``), not the synthetic one."""
    return bool(getattr(args, "lvs", None) or getattr(args, "store", None) or getattr(args, "video", None))


def make_config(args: argparse.Namespace) -> RunConfig:
    """Defaults <- the real-stream preset <- ``--config`` file <- dedicated flags <- ``--set`` overrides;
    then validated. ``args`` is the parsed command line of ``experiments.stream`` or ``experiments.sweep``
    (flags a command lacks count as not given)."""
    if getattr(args, "teacher_delay", None) == "auto" and not getattr(args, "live", False):
        raise ValueError("--teacher-delay auto needs --live (on stored labels give D frames)")
    cfg = RunConfig()
    if real_stream(args) and not getattr(args, "live", False):
        cfg = override(cfg, list(REAL_STREAM_PRESET))
    if getattr(args, "config", None):
        try:
            data = json.loads(Path(args.config).read_text())
            for key in _RECORD_KEYS:  # a run's config.json also records what the run ran on
                data.pop(key, None)
            cfg = from_dict(RunConfig, data, base=cfg)  # a partial file keeps the defaults and the preset
        except (OSError, json.JSONDecodeError, TypeError, AttributeError) as e:
            raise ValueError(f"{args.config}: cannot read run config ({e})") from None
    if getattr(args, "frames", None) is not None and args.frames < 1:
        raise ValueError(f"--frames must be >= 1, got {args.frames}")
    sets = [
        f"{path}={getattr(args, flag)}"
        for flag, path in _FLAG_FIELDS.items()
        if getattr(args, flag, None) is not None
        and not (
            flag == "teacher_delay" and args.teacher_delay == "auto"
        )  # measured when the live run starts
    ]
    cfg = override(cfg, sets + list(getattr(args, "set", [])))
    return cfg.validate()

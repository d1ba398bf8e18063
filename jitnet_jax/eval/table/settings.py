"""What one table runs with: the shared :class:`Settings`, the student and online configs they give each
method, and the streams' label stores and sources (a stream may be constructed from segments of others,
``a[0:400]+b``: :mod:`jitnet_jax.data.concat`)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jitnet_jax.config import StudentConfig, latency_frames
from jitnet_jax.data.concat import is_constructed, open_concat
from jitnet_jax.data.store_source import StoreSource
from jitnet_jax.data.types import StreamSource
from jitnet_jax.eval.baselines import fixed_stride_config
from jitnet_jax.eval.table.methods import Method
from jitnet_jax.io import OutputBusy
from jitnet_jax.online.engine import OnlineConfig


@dataclasses.dataclass
class Settings:
    """Everything shared by the runs of one table."""

    lvs: Path
    out: Path
    height: int
    width: int
    max_frames: int | None
    online: OnlineConfig
    fixed_updates: int
    pretrain: bool
    pretrain_epochs: int
    pretrain_every: int
    pretrain_max_per_stream: int
    oracle_epochs: int
    oracle_every: int
    seed: int
    teacher_ms: float
    stability_threshold: int
    progress: bool
    camvid: Path | None = None
    collect: bool = False
    #: ``(settings, stream) -> store folder``: makes (or finds) the stream's label store at the table's
    #: resolution; the entry point passes the teacher stage's ``ensure_store``.
    make_store: Callable[[Settings, str], Path] | None = None
    #: the flow-propagation baseline (``teacher.flow.run_flow_propagation``), or None without OpenCV.
    run_flow: Callable[..., Any] | None = None

    def common_key(self) -> dict[str, Any]:
        """What every result of a stream depends on (the stream's data at this resolution and length)."""
        return {
            "height": self.height,
            "width": self.width,
            "max_frames": self.max_frames,
            "stability_threshold": self.stability_threshold,
        }


def student_config(s: Settings, num_classes: int, m: Method | None = None) -> StudentConfig:
    """The student of a stream (``num_classes``), with ``m``'s optimiser when it names one and ``m``'s
    width (``width_scale`` times the table's ``width_multiplier``)."""
    model = dataclasses.replace(s.online.student.model, num_classes=num_classes)
    if m is not None and m.width_scale != 1.0:
        model = dataclasses.replace(model, width_multiplier=model.width_multiplier * m.width_scale)
    cfg = dataclasses.replace(s.online.student, model=model)
    if m is not None and m.optim:
        cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, name=m.optim, lr=m.lr))
    return cfg.validate()


def online_config(s: Settings, m: Method, cfg: StudentConfig, fps: float = 0.0) -> OnlineConfig:
    """The online settings of an online or fixed-stride method on a stream of ``fps`` frames per second
    (needed only by a method with a teacher delay)."""
    ocfg = dataclasses.replace(s.online, student=cfg, a_thr=m.a_thr)
    if m.replay_size:
        ocfg = dataclasses.replace(ocfg, replay_size=m.replay_size, replay_batch=m.replay_batch)
    if m.delta_max:
        ocfg = dataclasses.replace(ocfg, delta_max=m.delta_max)
    if m.delta_min:
        ocfg = dataclasses.replace(ocfg, delta_min=m.delta_min)
    if m.u_max:
        ocfg = dataclasses.replace(ocfg, u_max=m.u_max)
    if m.teacher_delay_ms:
        if not fps > 0:
            raise ValueError(f"method {m.name}: a teacher delay in ms needs the stream's fps")
        ocfg = dataclasses.replace(ocfg, teacher_delay=latency_frames(m.teacher_delay_ms, fps))
    if m.kind == "fixed":
        ocfg = fixed_stride_config(ocfg, m.delta, s.fixed_updates)
    return ocfg.validate()


def store_dir(s: Settings, stream: str) -> Path:
    """The stream's label store at the table's resolution (made once by ``s.make_store``; a process that
    finds another one making it waits for it)."""
    if s.make_store is None:
        raise ValueError("the table needs Settings.make_store to find the label stores")
    while True:
        try:
            return s.make_store(s, stream)
        except OutputBusy:
            time.sleep(10.0)


def open_stream(s: Settings, stream: str) -> StreamSource:
    """The source a table reads for ``stream``: its label store (:func:`store_dir`), or for a constructed
    stream the :class:`~jitnet_jax.data.concat.ConcatSource` of its parts, each part's store made at the
    table's resolution with the frames the spec needs of it (``--max-frames`` limits the constructed
    stream, not its parts)."""
    if not is_constructed(stream):
        return StoreSource(store_dir(s, stream))
    return open_concat(
        stream, lambda name, need: StoreSource(store_dir(dataclasses.replace(s, max_frames=need), name))
    )

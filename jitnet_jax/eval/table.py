"""The paper's per-stream table as a library: every method on every stream, cached parts, the table files.

``python -m experiments.table`` is its entry point. This module never imports the teacher stage: the entry
point passes in how a stream's label store is made (``Settings.make_store``) and the flow-propagation
baseline (``Settings.run_flow``).

Methods (columns; ``--methods`` picks a subset):
  * ``online_a{0.7,0.8,0.9}``: online distillation (Algorithm 1) from the leave-one-stream-out pretrained
    student (``--no-pretrain``: from random init); ``online_a0.8_random``: from random init;
  * ``cv_sgd_a*`` / ``cv_adam_a*``: online from the CamVid-pretrained student (``--camvid-init``, default the
    shipped ``camvid``; head mapped to the stream's classes by name) with the paper's SGD 0.01 / Adam 1e-3;
    ``cv_adam_a*_r16b4``: with replay of the last 16 teacher frames, 4 frames per update;
  * ``fixed_d{8,16}``: teacher every delta frames, exactly ``--fixed-updates`` updates per teacher frame;
  * ``no_adapt`` / ``no_adapt_cv``: the pretrained / CamVid student on every frame, no teacher, no updates;
  * ``oracle`` / ``oracle_cv``: trained offline on every 8th teacher frame of the same stream (from random
    init / the CamVid start), then no updates;
  * ``hold_d{8,16}``: the teacher label every delta frames, held until the next one (zero student cost);
  * ``flow_d{8,16}``: the teacher label warped forward with Farneback flow (only with OpenCV).

Cells are "mIoU (speedup x, teacher %)": stream-level foreground mIoU against the teacher's labels on all
frames, the cost-model speedup over running the teacher on every frame (paper costs: teacher 300 ms,
student inference 7 ms, update 30 ms; 0 student cost for label hold, the measured flow time for flow) and
the fraction of frames the teacher ran on. ``table.json`` also holds the measured speedup (this CPU's
wall time of the method against ``--teacher-ms`` per teacher frame), class IoUs, updates and the
temporal stability (flip rate on static pixels, ``jitnet_jax.eval.baselines``) of the teacher and every method.

Overall row: mIoU and flip rate are unweighted means over streams; speedup and teacher % are computed from
frame / teacher-frame / update totals over all streams.

Every (method, stream) result is one part, cached as JSON under ``OUT/runs/<stream>/<method>.json`` together
with a key of everything that determines it; a rerun reuses matching parts (and leave-one-out checkpoints
under ``OUT/pretrained/``), so an interrupted run resumes where it stopped. Several table processes may share
one ``OUT`` (e.g. one per ``--streams``/``--methods`` subset): a part being computed is locked and skipped by
the others. ``--collect`` computes nothing and writes the table from the cached parts.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jitnet_jax.config import StudentConfig, latency_frames, to_dict
from jitnet_jax.data.label_store import atomic_write_bytes
from jitnet_jax.data.store_source import StoreSource
from jitnet_jax.eval.baselines import (
    StabilityMeter,
    fixed_stride_config,
    oracle_examples,
    run_fixed_student,
    run_label_hold,
    teacher_stability,
    train_offline,
)
from jitnet_jax.eval.costs import CostModel, cost_model_speedup
from jitnet_jax.eval.summary import summarize_per_frame
from jitnet_jax.io import FolderLock, OutputBusy
from jitnet_jax.online.engine import OnlineConfig, init_online_state
from jitnet_jax.online.runner import run_stream
from jitnet_jax.student.pretrained import load_student, read_meta, save_student
from jitnet_jax.student.step import StudentState, init_state

ONLINE_THRESHOLDS = (0.7, 0.8, 0.9)
#: a_thr of the online runs from the CamVid start (the accuracy / teacher-fraction front).
CAMVID_THRESHOLDS = (0.7, 0.8, 0.9)
#: Replay settings (R teacher frames kept, B frames per update) of the CamVid-start runs.
REPLAY = ((16, 4),)
STRIDES = (8, 16)
#: u_max of the ``*_u16`` / ``*_u32`` runs: 2x / 4x the paper's most updates per teacher frame (a teacher
#: frame still stops training once the student passes a_thr on it).
U_LONG = (16, 32)
#: Largest stride of the ``*_dmax16`` runs: δ in [8, 16] instead of the paper's [8, 64], so a stream whose
#: objects come and go between teacher frames (parking_lot1) is not left with δ = 64 after empty frames.
DMAX_SHORT = 16
#: YOLOv8n-seg latency on this CPU at 180x320 (ms per teacher call, live mode, idle machine:
#: results/live/residential_street_traffic_camvid_quiet.summary.json); the ``*_late`` runs apply each
#: teacher label ceil(latency x fps) frames after its frame.
TEACHER_LATENCY_MS = 175.5
#: Teacher cost on this CPU: YOLOv8n-seg int8 end to end (shared/data/README.md), ms per frame.
MEASURED_TEACHER_MS = 325.0
#: The paper's optimiser (SGD, momentum 0.9, lr 0.01) and the table's default (Adam, lr 1e-3).
PAPER_SGD = ("sgd", 0.01)
ADAM = ("adam", 1e-3)
STARTS = ("loo", "camvid", "random")


@dataclasses.dataclass(frozen=True)
class Method:
    """One column.

    Attributes:
      kind: online | fixed | no_adapt | oracle | hold | flow.
      start: the student's initial weights: ``loo`` (pretrained on the other streams' teacher labels),
        ``camvid`` (the CamVid-pretrained student, head mapped to the stream's classes by name) or
        ``random``.
      optim, lr: the student's optimiser; ``""`` / 0 use the table's ``--optim`` / ``--lr``.
      replay_size, replay_batch: replay of the last R teacher frames, B frames per update (0, 1: the paper).
      delta_max: the controller's largest stride (0: the table's ``--delta-max``, the paper's 64).
      delta_min: the controller's smallest stride (0: the table's, the paper's 8). ``delta_min = delta_max``
        fixes the teacher's stride (the updates per teacher frame still stop at ``a_thr``).
      teacher_delay_ms: teacher labels arrive this many milliseconds late, i.e. ``ceil(ms * fps / 1000)``
        frames of the stream (0: at once, the paper).
      u_max: the most updates per teacher frame (0: the table's, the paper's 8).
    """

    name: str
    kind: str
    a_thr: float = 0.8
    delta: int = 8
    start: str = "loo"
    optim: str = ""
    lr: float = 0.0
    replay_size: int = 0
    replay_batch: int = 1
    delta_max: int = 0
    teacher_delay_ms: float = 0.0
    label: str = ""
    delta_min: int = 0
    u_max: int = 0

    @property
    def student(self) -> bool:
        """Whether the method runs a student (and so has a start)."""
        return self.kind in ("online", "fixed", "no_adapt", "oracle")


def _camvid_online(
    a_thr: float,
    optim: tuple[str, float],
    *,
    delta_max: int = 0,
    replay: tuple[int, int] | None = None,
    late_ms: float = 0.0,
    delta_min: int = 0,
    u_max: int = 0,
) -> Method:
    """An online column from the CamVid start, named and labelled from its settings, e.g.
    ``cv_adam_a0.9_dmax16_r16b4`` = "JITNet 0.9 (CamVid start, Adam 0.001, δ ≤ 16, replay R16/B4)"."""
    name, lr = optim
    suffix, notes = "", [f"{'SGD' if name == 'sgd' else 'Adam'} {lr}"]
    if delta_min and delta_min == delta_max:
        suffix, notes = suffix + f"_d{delta_max}", [*notes, f"δ = {delta_max}"]
    elif delta_max:
        suffix, notes = suffix + f"_dmax{delta_max}", [*notes, f"δ ≤ {delta_max}"]
    r, b = replay or (0, 1)
    if r:
        suffix, notes = suffix + f"_r{r}b{b}", [*notes, f"replay R{r}/B{b}"]
    if u_max:
        suffix, notes = suffix + f"_u{u_max}", [*notes, f"u_max {u_max}"]
    if late_ms:
        suffix, notes = suffix + "_late", [*notes, f"teacher {late_ms:g} ms late"]
    return Method(
        f"cv_{name}_a{a_thr}{suffix}",
        "online",
        a_thr=a_thr,
        start="camvid",
        optim=name,
        lr=lr,
        delta_max=delta_max,
        delta_min=delta_min,
        replay_size=r,
        replay_batch=b,
        teacher_delay_ms=late_ms,
        u_max=u_max,
        label=f"JITNet {a_thr} (CamVid start, {', '.join(notes)})",
    )


def methods(pretrain: bool, flow: bool, camvid: bool = False) -> list[Method]:
    """The table's columns in order (``camvid``: add the runs from the CamVid-pretrained start)."""
    start = "loo" if pretrain else "random"
    init = "LOO-pretrained" if pretrain else "random init"
    out = [
        Method(f"online_a{a}", "online", a_thr=a, start=start, label=f"JITNet {a} ({init})")
        for a in ONLINE_THRESHOLDS
    ]
    if pretrain:
        out.append(
            Method("online_a0.8_random", "online", a_thr=0.8, start="random", label="JITNet 0.8 (random)")
        )
    if camvid:
        sgd, adam = PAPER_SGD, ADAM
        out += [_camvid_online(a, sgd) for a in CAMVID_THRESHOLDS]
        out += [_camvid_online(a, adam) for a in CAMVID_THRESHOLDS]
        out += [_camvid_online(a, adam, replay=rb) for rb in REPLAY for a in CAMVID_THRESHOLDS]
        a, d = 0.9, DMAX_SHORT
        out += [_camvid_online(a, adam, delta_max=d), _camvid_online(a, sgd, delta_max=d)]
        out += [_camvid_online(a, adam, delta_max=d, replay=rb) for rb in REPLAY]
        # the teacher every 16th frame, as flow/hold δ16: the same teacher budget
        out += [_camvid_online(a, adam, delta_min=d, delta_max=d, replay=rb) for rb in REPLAY]
        # ... and with more updates per teacher frame
        out += [
            _camvid_online(a, adam, delta_min=dm, delta_max=d, replay=rb, u_max=u)
            for rb in REPLAY
            for dm in (d, 0)
            for u in U_LONG
        ]
        out.append(_camvid_online(a, adam, delta_max=d, late_ms=TEACHER_LATENCY_MS))
    out += [Method(f"fixed_d{d}", "fixed", delta=d, start=start, label=f"fixed stride {d}") for d in STRIDES]
    out.append(Method("no_adapt", "no_adapt", start=start, label=f"no adaptation ({init})"))
    if camvid:
        out.append(Method("no_adapt_cv", "no_adapt", start="camvid", label="no adaptation (CamVid start)"))
    out.append(Method("oracle", "oracle", delta=8, start="random", label="offline oracle (random init)"))
    if camvid:
        out.append(
            Method("oracle_cv", "oracle", delta=8, start="camvid", label="offline oracle (CamVid start)")
        )
    out += [Method(f"hold_d{d}", "hold", delta=d, start="", label=f"label hold {d}") for d in STRIDES]
    if flow:
        out += [Method(f"flow_d{d}", "flow", delta=d, start="", label=f"flow {d}") for d in STRIDES]
    return out


# --------------------------------------------------------------------------- caching helpers


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, default=_jsonable) + "\n").encode())


def _jsonable(x: Any) -> Any:
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_cached(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The cached result at ``path`` if its key matches ``key``."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if data.get("key") == _digest(key) else None


# --------------------------------------------------------------------------- one stream


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
    """The student of a stream (``num_classes``), with ``m``'s optimiser when it names one."""
    model = dataclasses.replace(s.online.student.model, num_classes=num_classes)
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


#: OnlineConfig fields added after the paper's loop, with the value that leaves the loop the paper's (R = 0
#: replay is bit-identical to no replay; no teacher delay).
NEUTRAL_ONLINE = {"replay_size": 0, "replay_batch": 1, "teacher_delay": 0}


def online_key(ocfg: OnlineConfig) -> dict[str, Any]:
    """``to_dict(ocfg)`` without the fields of :data:`NEUTRAL_ONLINE` that hold their neutral value, so a
    config class that gains such a field does not invalidate earlier results."""
    d = to_dict(ocfg)
    if not d.get("replay_size"):
        d.pop("replay_batch", None)
    return {k: v for k, v in d.items() if not (k in NEUTRAL_ONLINE and v == NEUTRAL_ONLINE[k])}


def _dir_digest(path: Path) -> str:
    """sha256 (16 hex) over the relative paths and bytes of every file under ``path``."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


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


def pretrained_student(
    s: Settings, stream: str, all_streams: Sequence[str], cfg: StudentConfig, class_names: tuple[str, ...]
) -> tuple[Any, Any]:
    """Leave-one-out pretrained weights for ``stream`` (trained on the other streams; cached; one process
    trains it while others wait)."""
    others = [o for o in all_streams if o != stream]
    key = {
        "others": others,
        "classes": list(class_names),
        "model": to_dict(cfg.model),
        "optim": to_dict(cfg.optim),
        "epochs": s.pretrain_epochs,
        "every": s.pretrain_every,
        "cap": s.pretrain_max_per_stream,
        "height": s.height,
        "width": s.width,
        "max_frames": s.max_frames,
        "seed": s.seed,
    }
    path = s.out / "pretrained" / stream
    with _wait_lock(s.out / "pretrained" / ".parts" / stream, f"leave-one-out student {stream}"):
        return _pretrained_student_locked(s, stream, others, key, path, cfg, class_names)


def _wait_lock(folder: Path, what: str, poll_s: float = 10.0) -> FolderLock:
    """A held :class:`FolderLock` on ``folder``, waiting while another process holds it."""
    lock = FolderLock(folder, what)
    while True:
        try:
            return lock.acquire()
        except OutputBusy:
            time.sleep(poll_s)


def _pretrained_student_locked(
    s: Settings,
    stream: str,
    others: list[str],
    key: dict[str, Any],
    path: Path,
    cfg: StudentConfig,
    class_names: tuple[str, ...],
) -> tuple[Any, Any]:
    from jitnet_jax.student.pretrain import pretrain, store_examples

    if path.is_dir():
        try:
            if read_meta(path)["info"].get("key") == _digest(key):
                return load_student(path, cfg.model)
        except ValueError:
            pass
    if not others:
        raise ValueError(
            f"leave-one-out pretraining for {stream} needs at least one other stream (--streams)"
        )
    dirs = [store_dir(s, o) for o in others]
    cap = min(s.max_frames or 10**9, s.pretrain_every * s.pretrain_max_per_stream)
    examples = store_examples(dirs, class_names, s.pretrain_every, cap, s.progress)
    t0 = time.perf_counter()
    state, losses = pretrain(
        examples, cfg, epochs=s.pretrain_epochs, key=jax.random.key(s.seed + 1000), progress=s.progress
    )
    info = {
        "key": _digest(key),
        "streams": others,
        "excluded": stream,
        "examples": len(examples[0]),
        "losses": losses,
        "train_s": time.perf_counter() - t0,
    }
    save_student(path, state, cfg.model, info=info)
    return state.params, state.batch_stats


def camvid_student(s: Settings, cfg: StudentConfig, class_names: tuple[str, ...]) -> tuple[Any, Any]:
    """The CamVid-pretrained student with its head mapped to ``class_names`` by name (classes it does not
    know start from a fresh initialisation)."""
    from jitnet_jax.student.pretrained import load_student_for_classes

    if s.camvid is None:
        raise ValueError("the CamVid start needs --camvid-init (a student checkpoint)")
    params, stats, _ = load_student_for_classes(
        s.camvid, cfg.model, list(class_names), jax.random.key(s.seed + 2000)
    )
    return params, stats


def initial_state(s: Settings, cfg: StudentConfig, weights: tuple[Any, Any] | None) -> StudentState:
    state = init_state(jax.random.key(s.seed), cfg, (s.height, s.width))
    if weights is not None:  # copied: the online loop donates its state
        params, stats = jax.tree_util.tree_map(jnp.copy, weights)
        state = state.replace(params=params, batch_stats=stats)
    return state


def run_method(
    s: Settings, m: Method, source: StoreSource, cfg: StudentConfig, weights: tuple[Any, Any] | None
) -> dict[str, Any]:
    """Run one method on one stream from ``weights`` (its start; None = random init); returns the
    cached-result dict (summary + stability + extra)."""
    info = source.info
    meter = StabilityMeter(s.stability_threshold)
    cost = CostModel()
    extra: dict[str, Any] = {}

    def on_chunk(chunk: Any, preds: np.ndarray) -> None:
        meter.update(chunk.frames, preds, chunk.valid)

    common = {"cost": cost, "measured_teacher_ms": s.teacher_ms}
    if m.kind in ("online", "fixed"):
        ocfg = online_config(s, m, cfg, info.fps)
        state = init_online_state(initial_state(s, cfg, weights), ocfg, (s.height, s.width))
        res = run_stream(
            source,
            ocfg,
            state=state,
            max_frames=s.max_frames,
            keep_preds=True,
            on_chunk=lambda st, chunk, stats, pf: on_chunk(chunk, stats["pred"]),
            progress=s.progress,
        )
        pf = res.per_frame
        summary = summarize_per_frame(
            pf,
            info.class_names,
            wall_s=res.wall_s,
            compile_s=res.compile_s,
            a_thr=ocfg.a_thr,
            frames_per_update=m.replay_batch,
            **common,
        )
        passed = int((pf["teacher"] & (pf["acc"] > ocfg.a_thr)).sum())
        extra.update(
            passed_teacher_frames=passed, mean_delta=float(pf["delta"].mean()) if len(pf["delta"]) else 0
        )
    elif m.kind in ("no_adapt", "oracle"):
        state = initial_state(s, cfg, weights)
        if m.kind == "oracle":
            frames, labels, wts = oracle_examples(source, s.oracle_every, s.max_frames)
            t0 = time.perf_counter()
            state, losses = train_offline(
                cfg,
                state,
                frames,
                labels,
                wts,
                epochs=s.oracle_epochs,
                key=jax.random.key(s.seed + 7),
                fg_weight=s.online.fg_weight,
                bg_weight=s.online.bg_weight,
                progress=s.progress,
                desc=f"{info.name} oracle",
            )
            extra.update(
                train_examples=len(frames),
                epochs=s.oracle_epochs,
                losses=losses,
                train_s=time.perf_counter() - t0,
                note="offline training time excluded from the speedup",
            )
        run = run_fixed_student(
            source,
            cfg,
            state.params,
            state.batch_stats,
            chunk_size=s.online.chunk_size,
            max_frames=s.max_frames,
            on_chunk=on_chunk,
            progress=s.progress,
        )
        pf = run.per_frame
        summary = summarize_per_frame(
            pf, info.class_names, wall_s=run.wall_s, compile_s=run.compile_s, **common
        )
    elif m.kind == "hold":
        run = run_label_hold(
            source, m.delta, chunk_size=s.online.chunk_size, max_frames=s.max_frames, on_chunk=on_chunk
        )
        pf = run.per_frame
        summary = summarize_per_frame(pf, info.class_names, student_ms=0.0, **common)
    elif m.kind == "flow":
        if s.run_flow is None:
            raise ValueError(f"{m.name}: flow propagation needs OpenCV (pip install -e .[flow])")
        run = s.run_flow(
            source,
            m.delta,
            chunk_size=s.online.chunk_size,
            max_frames=s.max_frames,
            on_chunk=on_chunk,
            progress=s.progress,
        )
        extra.update(run.extra)
        pf = run.per_frame
        summary = summarize_per_frame(
            pf,
            info.class_names,
            student_ms=run.extra["flow_ms_per_frame"],
            wall_s=run.wall_s,
            **common,
        )
    else:
        raise ValueError(f"unknown method kind {m.kind!r}")
    extra["prefix"] = prefix_scores(pf)
    return {
        "method": m.name,
        "stream": info.name,
        "summary": summary,
        "stability": meter.result(),
        "extra": extra,
    }


#: Stream prefixes (frames) scored from the same run: online methods are causal, so the score of the first
#: K frames is the score of a run stopped after K frames (the stream-length ablation).
PREFIXES = (150, 300, 600, 1200)


def prefix_scores(per_frame: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """``{K: {"miou", "teacher_fraction", "updates"}}`` over the first K frames, for each K in
    :data:`PREFIXES` shorter than the run."""
    from jitnet_jax.student.metrics import iou_from_counts

    out = {}
    for k in PREFIXES:
        if k >= len(per_frame["frame"]):
            break
        sc = iou_from_counts(*(per_frame[x][:k].sum(0) for x in ("tp", "fp", "fn")))
        out[str(k)] = {
            "miou": sc["miou"],
            "teacher_fraction": float(per_frame["teacher"][:k].mean()),
            "updates": int(per_frame["updates"][:k].sum()),
        }
    return out


def method_key(
    s: Settings, m: Method, stream: str, class_names: Sequence[str], fps: float = 0.0
) -> dict[str, Any]:
    """Everything that determines one (method, stream) result, and nothing else: label hold and flow
    depend on the stream's labels only, so student settings added later do not invalidate them."""
    key: dict[str, Any] = {
        "kind": m.kind,
        "stream": stream,
        "classes": list(class_names),
        **s.common_key(),
    }
    if not m.student:
        key["delta"] = m.delta
        if m.kind == "flow":
            key["flow_cost"] = "process_time"  # the flow cost is CPU time, not wall time
        return key
    cfg = student_config(s, len(class_names), m)
    # Method fields added later are left out at their neutral value, so earlier parts stay valid.
    fields = {
        k: v
        for k, v in dataclasses.asdict(m).items()
        if k not in ("name", "label")
        and not (k in ("delta_max", "delta_min", "teacher_delay_ms", "u_max") and v == 0)
    }
    key.update(method=fields, student=to_dict(cfg), seed=s.seed)
    if m.kind in ("online", "fixed"):
        key["online"] = online_key(online_config(s, m, cfg, fps))
    if m.kind == "fixed":
        key["fixed_updates"] = s.fixed_updates
    if m.kind == "oracle":
        key["oracle"] = [s.oracle_epochs, s.oracle_every, s.online.fg_weight, s.online.bg_weight]
    if m.start == "loo":
        key["pretrain"] = [s.pretrain_epochs, s.pretrain_every, s.pretrain_max_per_stream]
    elif m.start == "camvid":
        key["camvid"] = _dir_digest(s.camvid) if s.camvid is not None else None
    return key


def run_table(s: Settings, streams: Sequence[str], ms: Sequence[Method]) -> dict[str, Any]:
    """Run (or reuse) every method on every stream; returns ``{"streams": {stream: {...}}}``."""
    results: dict[str, Any] = {}
    missing: list[str] = []
    all_streams = list(streams)
    for stream in streams:
        source = StoreSource(store_dir(s, stream))
        info = source.info
        per: dict[str, Any] = {
            "class_names": list(info.class_names),
            "frames": info.num_frames,
            "methods": {},
        }
        tkey = {"teacher_stability": stream, "classes": list(info.class_names), **s.common_key()}
        tpath = s.out / "runs" / stream / "teacher.json"
        cached = load_cached(tpath, tkey)
        if cached is None:
            cached = {
                "key": _digest(tkey),
                "stability": teacher_stability(source, s.max_frames, s.stability_threshold),
            }
            write_json(tpath, cached)
        per["teacher_stability"] = cached["stability"]
        starts: dict[str, tuple[Any, Any] | None] = {"random": None}
        for m in ms:
            key = method_key(s, m, stream, info.class_names, info.fps)
            path = s.out / "runs" / stream / f"{m.name}.json"
            cached = load_cached(path, key)
            part_lock = None
            if cached is None and s.collect:
                missing.append(f"{stream}/{m.name}")
                continue
            if cached is None:
                # One process computes a part; another table process on the same OUT skips it (and shows
                # it once it is cached), so parts of one table can run in parallel processes.
                part_lock = FolderLock(s.out / "runs" / stream / ".parts" / m.name, f"part {stream}/{m.name}")
                try:
                    part_lock.acquire()
                except OutputBusy:
                    print(
                        f"{stream:>20} {m.name:<20} being computed by another process: skipped",
                        file=sys.stderr,
                    )
                    continue
                cached = load_cached(path, key)  # finished by another process meanwhile
            if cached is None:
                cfg = student_config(s, info.num_classes, m)
                if m.student and m.start not in starts:
                    if m.start == "loo":
                        starts["loo"] = pretrained_student(s, stream, all_streams, cfg, info.class_names)
                    elif m.start == "camvid":
                        starts["camvid"] = camvid_student(s, cfg, info.class_names)
                    else:
                        raise ValueError(f"unknown start {m.start!r} (choices: {', '.join(STARTS)})")
                t0 = time.perf_counter()
                cached = run_method(s, m, source, cfg, starts.get(m.start))
                cached.update(key=_digest(key), total_s=time.perf_counter() - t0)
                write_json(path, cached)
                sm = cached["summary"]  # one line per finished run, also without progress bars
                print(
                    f"{stream:>20} {m.name:<20} mIoU {sm['miou']:.3f}  speedup {sm['speedup_cost_model']:.1f}x  "
                    f"teacher {100 * sm['teacher_fraction']:.1f}%  ({cached['total_s']:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
            if part_lock is not None:
                part_lock.release()
            per["methods"][m.name] = cached
        results[stream] = per
    if missing:
        print(f"--collect: {len(missing)} parts not computed yet: {' '.join(missing)}", file=sys.stderr)
    return {"streams": results, "missing": missing}


# --------------------------------------------------------------------------- outputs


def overall(results: dict[str, Any], ms: Sequence[Method]) -> dict[str, Any]:
    """Overall row: mean mIoU / flip rate over streams; speedup and teacher % from totals."""
    out: dict[str, Any] = {}
    cost = CostModel()
    streams = list(results["streams"].values())
    for m in ms:
        rows = [p["methods"][m.name] for p in streams if m.name in p["methods"]]
        if not rows:
            continue
        mious = [r["summary"]["miou"] for r in rows if not math.isnan(r["summary"]["miou"])]
        n = sum(r["summary"]["frames"] for r in rows)
        t = sum(r["summary"]["teacher_frames"] for r in rows)
        u = sum(r["summary"]["updates"] * r["summary"].get("frames_per_update", 1) for r in rows)
        infer = cost.infer_ms
        if m.kind == "hold":
            infer = 0.0
        elif m.kind == "flow":
            flow_frames = sum(r["extra"]["flow_frames"] for r in rows)
            infer = 1e3 * sum(r["summary"]["wall_s"] for r in rows) / max(flow_frames, 1)
        flips = [r["stability"]["flip_rate"] for r in rows if not math.isnan(r["stability"]["flip_rate"])]
        out[m.name] = {
            "miou": float(np.mean(mious)) if mious else float("nan"),
            "teacher_fraction": t / max(n, 1),
            "speedup_cost_model": cost_model_speedup(n, t, u, dataclasses.replace(cost, infer_ms=infer)),
            "flip_rate": float(np.mean(flips)) if flips else float("nan"),
            "frames": n,
            "updates": u,
            "streams": len(rows),
        }
    tflips = [p["teacher_stability"]["flip_rate"] for p in streams]
    out["teacher"] = {"flip_rate": float(np.nanmean(tflips)) if tflips else float("nan")}
    return out


def claims(results: dict[str, Any], ms: Sequence[Method], ov: dict[str, Any]) -> dict[str, Any]:
    """The paper's claims checked on this table (issue 9).

    * ``vs_<baseline>`` for label hold δ8 and flow δ16: the most accurate online setting (overall) whose
      overall teacher fraction is at most the baseline's, and whether its mIoU is higher.
    * ``vs_oracle``: the most accurate online setting (overall) against the stronger oracle of each stream
      (``oracle`` / ``oracle_cv``), and on how many streams it wins.
    * ``front``: the online settings not dominated in (higher mIoU, lower teacher fraction), overall.
    Online settings must cover every stream of the table to be considered.
    """
    streams = list(results["streams"])
    online = [
        m.name
        for m in ms
        if m.kind == "online"
        and m.name in ov
        and all(m.name in results["streams"][st]["methods"] for st in streams)
    ]
    out: dict[str, Any] = {"online_settings": online}
    for base in ("hold_d8", "flow_d16"):
        if base not in ov:
            continue
        b = ov[base]
        ok = [n for n in online if ov[n]["teacher_fraction"] <= b["teacher_fraction"]]
        best = max(ok, key=lambda n: ov[n]["miou"], default=None)
        out[f"vs_{base}"] = {
            "baseline": {"miou": b["miou"], "teacher_fraction": b["teacher_fraction"]},
            "best_online": best,
            "online": {"miou": ov[best]["miou"], "teacher_fraction": ov[best]["teacher_fraction"]}
            if best
            else None,
            "beats": bool(best and ov[best]["miou"] > b["miou"]),
        }
    oracles = [m.name for m in ms if m.kind == "oracle"]
    if online and oracles:
        best = max(online, key=lambda n: ov[n]["miou"])
        per = {}
        for st in streams:
            meths = results["streams"][st]["methods"]
            have = [o for o in oracles if o in meths]
            if not have:
                continue
            strongest = max(have, key=lambda o: meths[o]["summary"]["miou"])
            mine = meths[best]["summary"]["miou"]
            theirs = meths[strongest]["summary"]["miou"]
            per[st] = {"online": mine, "oracle": strongest, "oracle_miou": theirs, "wins": mine > theirs}
        out["vs_oracle"] = {"best_online": best, "streams": per, "wins": sum(v["wins"] for v in per.values())}
    front = [
        n
        for n in online
        if not any(
            ov[o]["miou"] >= ov[n]["miou"]
            and ov[o]["teacher_fraction"] <= ov[n]["teacher_fraction"]
            and (ov[o]["miou"], ov[o]["teacher_fraction"]) != (ov[n]["miou"], ov[n]["teacher_fraction"])
            for o in online
        )
    ]
    out["front"] = sorted(front, key=lambda n: ov[n]["teacher_fraction"])
    return out


def claims_markdown(c: dict[str, Any], ov: dict[str, Any]) -> str:
    """``claims`` as a short markdown list."""
    lines = []
    for base, label in (("hold_d8", "label hold δ8"), ("flow_d16", "flow δ16")):
        v = c.get(f"vs_{base}")
        if v is None:
            continue
        b = v["baseline"]
        if v["best_online"] is None:
            lines.append(
                f"- vs {label} ({b['miou']:.3f} at {100 * b['teacher_fraction']:.1f}% teacher): no online "
                "setting of this table uses no more teacher frames"
            )
            continue
        o = v["online"]
        verdict = "beats" if v["beats"] else "does NOT beat"
        lines.append(
            f"- vs {label} ({b['miou']:.3f} at {100 * b['teacher_fraction']:.1f}% teacher): `{v['best_online']}` "
            f"({o['miou']:.3f} at {100 * o['teacher_fraction']:.1f}%) {verdict} it"
        )
    v = c.get("vs_oracle")
    if v is not None:
        detail = ", ".join(
            f"{st} {d['online']:.3f} vs {d['oracle_miou']:.3f} ({d['oracle']})"
            for st, d in v["streams"].items()
        )
        lines.append(
            f"- most accurate online setting `{v['best_online']}` vs the stronger oracle: wins on {v['wins']} of "
            f"{len(v['streams'])} streams ({detail})"
        )
    if c.get("front"):
        pts = ", ".join(
            f"`{n}` {ov[n]['miou']:.3f} @ {100 * ov[n]['teacher_fraction']:.1f}%" for n in c["front"]
        )
        lines.append(f"- online front (mIoU @ teacher %, overall): {pts}")
    return "\n".join(lines) + "\n" if lines else ""


def cell(miou: float, speedup: float, teacher_fraction: float) -> str:
    return f"{miou:.3f} ({speedup:.1f}x, {100 * teacher_fraction:.1f}%)"


def table_rows(results: dict[str, Any], ms: Sequence[Method], ov: dict[str, Any]) -> list[list[str]]:
    header = ["stream"] + [m.name for m in ms]
    rows = [header]
    for stream, p in results["streams"].items():
        row = [stream]
        for m in ms:
            r = p["methods"].get(m.name)
            sm = r["summary"] if r else None
            row.append(cell(sm["miou"], sm["speedup_cost_model"], sm["teacher_fraction"]) if sm else "")
        rows.append(row)
    row = ["Overall"]
    n_streams = len(results["streams"])
    for m in ms:
        o = ov.get(m.name)
        text = cell(o["miou"], o["speedup_cost_model"], o["teacher_fraction"]) if o else ""
        if o and o["streams"] < n_streams:  # a column that is not finished yet: say over how many streams
            text += f" [{o['streams']}/{n_streams} streams]"
        row.append(text)
    rows.append(row)
    return rows


def stability_rows(results: dict[str, Any], ms: Sequence[Method], ov: dict[str, Any]) -> list[list[str]]:
    rows = [["stream", "teacher"] + [m.name for m in ms]]
    for stream, p in results["streams"].items():
        row = [stream, f"{p['teacher_stability']['flip_rate']:.4f}"]
        row += [
            f"{p['methods'][m.name]['stability']['flip_rate']:.4f}" if m.name in p["methods"] else ""
            for m in ms
        ]
        rows.append(row)
    row = ["Overall", f"{ov['teacher']['flip_rate']:.4f}"]
    row += [f"{ov[m.name]['flip_rate']:.4f}" if m.name in ov else "" for m in ms]
    rows.append(row)
    return rows


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines) + "\n"


def write_outputs(
    s: Settings, results: dict[str, Any], ms: Sequence[Method], settings_json: dict[str, Any]
) -> None:
    ov = overall(results, ms)
    cl = claims(results, ms, ov)
    rows = table_rows(results, ms, ov)
    srows = stability_rows(results, ms, ov)
    legend = "\n".join(f"- `{m.name}`: {m.label}" for m in ms)
    limit = f", first {s.max_frames} frames per stream" if s.max_frames else ""
    md = (
        f"# JITNet evaluation ({s.height}x{s.width}{limit})\n\n"
        "Cells: mIoU (cost-model speedup x, teacher %). Overall: mIoU is the unweighted mean over streams; "
        "speedup and teacher % come from the frame/teacher/update totals over all streams.\n\n"
        + markdown(rows)
        + (
            f"\nNot computed (yet): {', '.join(results['missing'])}; their cells are empty and Overall "
            "cells of unfinished columns say over how many streams they average.\n"
            if results.get("missing")
            else ""
        )
        + "\n## The paper's claims on this table\n\n"
        + (claims_markdown(cl, ov) or "(not enough columns)\n")
        + "\n## Temporal stability: flip rate on static pixels (lower is more stable)\n\n"
        + markdown(srows)
        + "\n## Methods\n\n"
        + legend
        + "\n"
    )
    atomic_write_bytes(s.out / "table.md", md.encode())
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    atomic_write_bytes(s.out / "table.csv", buf.getvalue().encode())
    write_json(s.out / "table.json", {"settings": settings_json, "overall": ov, "claims": cl, **results})
    plot(s.out / "table.png", results, ms, ov)


def plot(path: Path, results: dict[str, Any], ms: Sequence[Method], ov: dict[str, Any]) -> None:
    """mIoU against teacher % for every method, one panel per stream plus Overall."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (k, {m: v["methods"][m]["summary"] for m in v["methods"]}) for k, v in results["streams"].items()
    ]
    panels.append(("Overall", {k: v for k, v in ov.items() if k != "teacher"}))
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 4 * nrows), squeeze=False)
    markers = "os^vD<>pP*Xh"
    for ax, (title, data) in zip(axes.ravel(), panels):
        for i, m in enumerate(ms):
            if m.name in data:
                d = data[m.name]
                ax.scatter(
                    100 * d["teacher_fraction"], d["miou"], marker=markers[i % len(markers)], label=m.name
                )
        ax.set_title(title)
        ax.set_xlabel("teacher frames (%)")
        ax.set_ylabel("mIoU")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())

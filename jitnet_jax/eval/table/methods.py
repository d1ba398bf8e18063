"""The table's columns: the catalogue of methods and the settings each one runs with.

A :class:`Method` names one column (its kind, start, optimiser, controller limits, replay and teacher
delay); :func:`methods` lists the table's columns in order.
"""

from __future__ import annotations

import dataclasses

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
#: Width of the ``oracle_w*`` columns as a fraction of the student's: an oracle of less capacity, to show
#: how far the oracle's lead rests on holding the whole stream in one model.
ORACLE_WIDTH_SCALES = (0.5,)


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
      width_scale: the student's ``width_multiplier`` times this (1: the table's ``--width-multiplier``);
        ``oracle_w0.5`` is the oracle at half the student's width. Only from random init (a pretrained
        start has the table's width).
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
    width_scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.width_scale > 0:
            raise ValueError(f"method {self.name}: width_scale must be > 0, got {self.width_scale!r}")
        if self.width_scale != 1.0 and self.start != "random":
            raise ValueError(
                f"method {self.name}: width_scale {self.width_scale:g} needs start 'random', got "
                f"{self.start!r} (a pretrained start has the table's width)"
            )

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
    out += [
        Method(
            f"oracle_w{w:g}",
            "oracle",
            delta=8,
            start="random",
            width_scale=w,
            label=f"offline oracle, {w:g}x the student's width (random init)",
        )
        for w in ORACLE_WIDTH_SCALES
    ]
    if camvid:
        out.append(
            Method("oracle_cv", "oracle", delta=8, start="camvid", label="offline oracle (CamVid start)")
        )
    out += [Method(f"hold_d{d}", "hold", delta=d, start="", label=f"label hold {d}") for d in STRIDES]
    if flow:
        out += [Method(f"flow_d{d}", "flow", delta=d, start="", label=f"flow {d}") for d in STRIDES]
    return out

"""A plain per-frame Python implementation of Algorithm 1, the reference for the compiled loop.

Every decision (teacher frame? accuracy above threshold? next stride?) is made on the host, one frame
at a time, with the same jitted single-frame functions the compiled loop is built from: the accuracy
check is a forward pass (``forward_check``), and only a check that fails runs its backward pass. It is
slow by design (a host sync per pass) and exists to check :mod:`jitnet_jax.online.engine` and to
benchmark it.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from jitnet_jax.data.types import StreamSource
from jitnet_jax.online.engine import (
    Knobs,
    OnlineConfig,
    effective_weight,
    init_replay,
    replay_push,
    replay_sample,
)
from jitnet_jax.online.runner import PER_FRAME_KEYS
from jitnet_jax.student.metrics import confusion_matrix
from jitnet_jax.student.step import (
    StudentState,
    apply_grads,
    batch_grads,
    forward_check,
    init_state,
    predict,
)


def run_reference(
    source: StreamSource,
    cfg: OnlineConfig,
    key: jax.Array,
    max_frames: int | None = None,
    student: StudentState | None = None,
) -> tuple[StudentState, dict[str, np.ndarray], float]:
    """Run Algorithm 1 frame by frame in Python (with replay when ``cfg.replay_size > 0``: the same
    buffer helpers and the same sampling key as the engine).

    Returns:
      ``(student_state, per_frame, wall_s)`` with the same per-frame keys as
      :func:`jitnet_jax.online.runner.run_stream` and ``wall_s`` excluding the first-call compilations.
    """
    cfg.validate()
    if cfg.teacher_delay:
        raise ValueError("the reference loop has no teacher delay (teacher_delay must be 0)")
    if cfg.zoo_size:
        raise ValueError(f"the reference loop has no zoo (zoo_size must be 0, got {cfg.zoo_size})")
    scfg = cfg.student
    info = source.info
    c = info.num_classes
    knobs = Knobs.from_config(cfg)
    if student is None:
        student = init_state(key, scfg, (info.height, info.width))
    eff = jax.jit(lambda w: effective_weight(w, knobs))
    check = jax.jit(lambda s, f, y, w: forward_check(scfg, s, f, y, w))
    grads_of = jax.jit(lambda pull: pull(jnp.ones((), jnp.float32))[0])
    grads_of_batch = jax.jit(lambda s, pull, f, y, w, m: batch_grads(scfg, s, pull, f, y, w, m))
    sample = jax.jit(lambda b, k, f, y, w: replay_sample(b, k, f, y, w, knobs))
    push = jax.jit(replay_push)
    buf = init_replay(cfg, (info.height, info.width))
    ap = jax.jit(lambda s, g, b: apply_grads(scfg, s, g, b))
    pr = jax.jit(lambda s, f: predict(scfg, s, f))
    cm = jax.jit(lambda y, p: confusion_matrix(y, p, c))
    # compile outside the timed region
    h, w = info.height, info.width
    z = (jnp.zeros((h, w, 3), jnp.uint8), jnp.zeros((h, w), jnp.int32), jnp.ones((h, w), jnp.float32))
    _, b, pull = check(student, *z)
    jax.block_until_ready(ap(student, grads_of(pull), b))
    jax.block_until_ready(pr(student, z[0]))
    jax.block_until_ready(cm(z[1], z[1]))

    total = info.num_frames if max_frames is None else min(max_frames, info.num_frames)
    delta, next_teacher = cfg.delta_min, 0
    rows: dict[str, list] = {k: [] for k in PER_FRAME_KEYS}
    wall = 0.0
    for chunk in source.chunks(cfg.chunk_size):
        for i in range(cfg.chunk_size):
            t = chunk.start + i
            if not chunk.valid[i] or t >= total:
                continue
            t0 = time.perf_counter()
            frame = chunk.frames[i]
            label = chunk.labels[i].astype(np.int32)
            updates, acc = 0, 0.0
            if t == next_teacher:
                weight = eff(chunk.regions[i])
                while updates < cfg.u_max:
                    # the check: one forward pass; the backward (and replay) only when it fails
                    aux, stats, pull = check(student, frame, label, weight)
                    acc = float(aux["min_iou"])
                    pred = aux["pred"]
                    if acc > cfg.a_thr:
                        break
                    if buf is None:
                        grads = grads_of(pull)
                    else:
                        batch = sample(buf, jax.random.split(student.rng)[1], frame, label, weight)
                        grads = grads_of_batch(student, pull, *batch)
                    student = ap(student, grads, stats)
                    updates += 1
                delta = min(2 * delta, cfg.delta_max) if acc > cfg.a_thr else max(delta // 2, cfg.delta_min)
                next_teacher = t + delta
                if buf is not None:
                    buf = push(buf, frame, label, chunk.regions[i])
                teacher = True
            else:
                pred = pr(student, frame)
                teacher = False
            conf = np.asarray(cm(label, pred), np.int64)
            wall += time.perf_counter() - t0
            tp = np.diag(conf)
            rows["frame"].append(t)
            rows["teacher"].append(teacher)
            rows["updates"].append(updates)
            rows["delta"].append(delta)
            rows["acc"].append(acc)
            rows["tp"].append(tp)
            rows["fp"].append(conf.sum(0) - tp)
            rows["fn"].append(conf.sum(1) - tp)
        if chunk.start + cfg.chunk_size >= total:
            break
    per_frame = {
        "frame": np.asarray(rows["frame"], np.int64),
        "teacher": np.asarray(rows["teacher"], bool),
        "updates": np.asarray(rows["updates"], np.int32),
        "delta": np.asarray(rows["delta"], np.int32),
        "acc": np.asarray(rows["acc"], np.float32),
        "tp": np.asarray(rows["tp"], np.int64).reshape(-1, c),
        "fp": np.asarray(rows["fp"], np.int64).reshape(-1, c),
        "fn": np.asarray(rows["fn"], np.int64).reshape(-1, c),
    }
    return student, per_frame, wall


#: Float tolerance of the control accuracy when comparing two runs (a pixel flip moves it by ~1e-4+).
ACC_TOL = 1e-5


def agreed_prefix(
    got: dict[str, np.ndarray], ref: dict[str, np.ndarray], a_thr: float, tol: float = ACC_TOL
) -> int:
    """Frames over which two runs' decisions are determined exactly.

    Up to (not including) the first teacher frame (or frame with a control accuracy) where the two control accuracies differ by more than
    ``tol`` or either lies within ``tol`` of ``a_thr``. Until then both runs saw the same accuracies on
    the same side of the threshold, so their teacher frames, updates and strides must be identical;
    after it, float drift between two differently compiled (but equivalent) programs may legitimately
    change a decision on a chaotic run, and only bounds hold.
    """
    checked = got["teacher"] | ref["teacher"] | (got["acc"] != 0) | (ref["acc"] != 0)  # delayed: at arrival
    for i in np.nonzero(checked)[0]:
        a, b = float(got["acc"][i]), float(ref["acc"][i])
        if abs(a - b) > tol or min(abs(a - a_thr), abs(b - a_thr)) <= tol:
            return int(i)
    return len(got["frame"])

"""A cost model measured on the machine that makes the table, beside the paper's V100 constants.

The paper's cost model (:class:`~jitnet_jax.eval.costs.CostModel`: teacher 300 ms, student predict 7 ms, one
training step 30 ms, all on a V100) gives the table's speedups, while the flow baseline's cost is this CPU's
measured Farneback time: the two sides of the accuracy-against-cost comparison come from two machines.
:class:`MeasuredCosts` holds the four costs timed once, in one process, at the table's resolution, on this
machine:

* ``teacher_ms``: one teacher label of a frame (model call, NMS, masks and rasterisation), the mean over real
  frames of the table's streams after one untimed call;
* ``predict_ms``: one student prediction of one frame (median of warm calls);
* ``update_ms[B]``: one update of ``B`` frames as the online engine runs it (the engine's update loop on a
  teacher frame whose accuracy check always fails: check forward, backward over ``B`` frames, optimiser
  step), the median loop time divided by its updates;
* ``flow_ms``: Farneback flow plus the label warp for one frame, the mean over real frame pairs.

The teacher is whatever callable the caller passes (``jitnet_jax`` never imports the teacher stage):
``experiments.table`` times a TFLite teacher that runs here (the int8 YOLOv8n-seg by default, ``--cost-teacher``),
not the Mask R-CNN whose precomputed output ``lvs_mini`` holds. Speedups use the paper's formula
(:func:`~jitnet_jax.eval.costs.cost_model_speedup`) with these costs, so only the constants differ between
the two models. The table stores them in ``OUT/costs.json`` and reuses that file on a rerun.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jitnet_jax.data.label_store import DataError
from jitnet_jax.eval.costs import CostModel, cost_model_speedup
from jitnet_jax.io.atomic import atomic_write_bytes

FORMAT = "jitnet-measured-costs"
VERSION = 1


def machine() -> str:
    """This CPU named for reports: model name, logical cores and its widest SIMD for int8/float
    (``AVX-512 VNNI``, ``AVX-512``, ``AVX2``), from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            name = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    simd = (
        "AVX-512 VNNI"
        if "avx512_vnni" in flags
        else "AVX-512"
        if "avx512f" in flags
        else "AVX2"
        if "avx2" in flags
        else "no AVX2"
    )
    return f"{name}, {os.cpu_count()} logical cores, {simd}"


@dataclasses.dataclass(frozen=True)
class MeasuredCosts:
    """Per-operation costs measured on one machine (see the module docstring).

    Attributes:
      teacher_ms: one teacher label per frame; teacher: what was timed (e.g. ``yolov8_seg``).
      predict_ms: one student prediction of one frame.
      update_ms: ``{B: ms}``, one update of ``B`` frames (B = 1 without replay).
      flow_ms: Farneback flow and warp of one frame (NaN: not measured, no OpenCV).
      height, width: the frame size every cost was measured at.
      machine: :func:`machine` of the machine that measured them; detail: sample counts and spreads.
    """

    teacher_ms: float
    predict_ms: float
    update_ms: dict[int, float]
    flow_ms: float
    height: int
    width: int
    teacher: str
    machine: str
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def bound(self) -> float:
        """The largest speedup any student-only frame can give: teacher ms / student predict ms."""
        return self.teacher_ms / max(self.predict_ms, 1e-9)

    def update(self, frames_per_update: int) -> float:
        """ms of one update of ``frames_per_update`` frames.

        Raises:
          DataError: that ``B`` was not measured (one line).
        """
        if frames_per_update not in self.update_ms:
            raise DataError(
                f"measured costs: no update time for B={frames_per_update} (have "
                f"{sorted(self.update_ms)}); delete costs.json to measure again"
            )
        return self.update_ms[frames_per_update]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "teacher_ms": self.teacher_ms,
            "predict_ms": self.predict_ms,
            "update_ms": {str(b): v for b, v in sorted(self.update_ms.items())},
            "flow_ms": self.flow_ms if math.isfinite(self.flow_ms) else None,
            "bound": self.bound,
            "height": self.height,
            "width": self.width,
            "teacher": self.teacher,
            "machine": self.machine,
            "detail": self.detail,
        }

    @staticmethod
    def from_json(d: Any, where: str = "costs.json") -> MeasuredCosts:
        """Parse :meth:`to_json`'s dict.

        Raises:
          DataError: a wrong format or a missing / non-numeric field, naming ``where`` and the field.
        """
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise DataError(f"{where}: not a measured-costs file (format {FORMAT!r} expected)")

        def num(field: str, value: Any) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise DataError(f"{where}: field {field} must be a positive number, got {value!r}")
            return float(value)

        try:
            upd = d["update_ms"]
            if not isinstance(upd, dict) or not upd:
                raise DataError(f"{where}: field update_ms must map B to ms, got {upd!r}")
            update_ms = {int(b): num(f"update_ms.{b}", v) for b, v in upd.items()}
            flow = d.get("flow_ms")
            return MeasuredCosts(
                teacher_ms=num("teacher_ms", d["teacher_ms"]),
                predict_ms=num("predict_ms", d["predict_ms"]),
                update_ms=update_ms,
                flow_ms=float("nan") if flow is None else num("flow_ms", flow),
                height=int(num("height", d["height"])),
                width=int(num("width", d["width"])),
                teacher=str(d["teacher"]),
                machine=str(d["machine"]),
                detail=dict(d.get("detail") or {}),
            )
        except KeyError as e:
            raise DataError(f"{where}: missing field {e.args[0]}") from None
        except ValueError as e:  # int("x") of a B key
            raise DataError(f"{where}: bad update_ms key ({e})") from None

    def speedup(
        self, kind: str, frames: int, teacher_frames: int, updates: int, frames_per_update: int
    ) -> float:
        """The speedup over the teacher on every frame of a run of method ``kind`` under these costs.

        The paper's formula ``teacher N / (predict (N - T) + teacher T + update U)``, where a non-teacher
        frame costs a student prediction (online, fixed, no adaptation, oracle), nothing (label hold) or
        ``flow_ms`` (flow), and an update costs ``update_ms[B]`` (it already covers its ``B`` frames).

        Args:
          frames, teacher_frames: ``N``, ``T``; updates: ``U``; frames_per_update: ``B``.
        """
        infer = {"hold": 0.0, "flow": self.flow_ms}.get(kind, self.predict_ms)
        train = self.update(frames_per_update) if updates else 0.0
        cost = CostModel(teacher_ms=self.teacher_ms, infer_ms=infer, train_ms=train)
        return cost_model_speedup(frames, teacher_frames, updates, cost)


def _median_ms(fn: Callable[[], Any], repeats: int, block: Callable[[Any], Any]) -> tuple[float, list[float]]:
    """Median ms of ``repeats`` calls of ``fn`` (each waited for with ``block``), and the samples."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(fn())
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times)), times


def time_predict(
    model: Any, height: int, width: int, repeats: int = 20, state: Any = None, seed: int = 0
) -> tuple[float, list[float]]:
    """Median ms of one student prediction of one ``height x width`` frame (jitted, after one untimed call),
    and the samples.

    Args:
      model: a :class:`~jitnet_jax.config.StudentConfig`; state: its ``StudentState`` (None: a fresh one;
        the time does not depend on the weights).
    """
    import jax

    from jitnet_jax.student.step import init_state, jit_predict

    frame = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    if state is None:
        state = init_state(jax.random.key(seed), model, (height, width))
    pred = jit_predict(model)
    jax.block_until_ready(pred(state, frame))
    return _median_ms(lambda: pred(state, frame), repeats, jax.block_until_ready)


def time_student(
    model: Any,
    height: int,
    width: int,
    batches: Sequence[int],
    repeats: int = 20,
    u_max: int = 8,
    seed: int = 0,
) -> dict[str, Any]:
    """The student's predict and one engine update of ``B`` frames for each ``B`` in ``batches``.

    Args:
      model: a :class:`~jitnet_jax.config.StudentConfig` (the table's student: width multiplier, classes,
        optimiser).
      height, width: frame size.
      batches: the ``B`` values (frames per update) to time.
      repeats: timed predict calls (a fifth as many update loops, at least 3).
      u_max: updates per timed loop (a_thr 1.0: none passes, all ``u_max`` run).
    Returns:
      ``{"predict_ms", "update_ms": {B: ms}, "predict_samples_ms", "update_samples_ms": {B: [...]}}``.
    """
    import jax
    import jax.numpy as jnp

    from jitnet_jax.online.engine import Knobs, OnlineConfig, init_replay, replay_push, teacher_updates
    from jitnet_jax.student.step import init_state

    rng = np.random.default_rng(seed)
    frame = jnp.asarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    label = jnp.asarray(rng.integers(0, model.model.num_classes, (height, width)).astype(np.int32))
    weight = jnp.ones((height, width), jnp.float32)
    state = init_state(jax.random.key(seed), model, (height, width))
    predict_ms, predict_samples = time_predict(model, height, width, repeats, state, seed)
    update_ms: dict[int, float] = {}
    update_samples: dict[int, list[float]] = {}
    for b in sorted(set(int(x) for x in batches)):
        cfg = OnlineConfig(
            student=model, a_thr=1.0, u_max=u_max, replay_size=0 if b == 1 else 2 * b, replay_batch=b
        ).validate()
        replay = init_replay(cfg, (height, width))
        region = jnp.ones((height, width), jnp.uint8)  # the region map of background everywhere: weight 1
        for _ in range(cfg.replay_size):
            replay = replay_push(replay, frame, label, region)
        knobs = Knobs.from_config(cfg)
        loop = jax.jit(lambda st, f, y, w, r, kn=knobs: teacher_updates(model, kn, st, f, y, w, replay=r))
        _, _, k, _ = loop(state, frame, label, weight, replay)
        if int(k) != u_max:
            raise RuntimeError(f"the update loop ran {int(k)} updates, expected {u_max}")
        ms, samples = _median_ms(
            lambda loop=loop, replay=replay: loop(state, frame, label, weight, replay),
            max(3, repeats // 5),
            jax.block_until_ready,
        )
        update_ms[b], update_samples[b] = ms / u_max, [t / u_max for t in samples]
    return {
        "predict_ms": predict_ms,
        "update_ms": update_ms,
        "predict_samples_ms": predict_samples,
        "update_samples_ms": update_samples,
    }


def time_per_frame(fn: Callable[[int], Any], n: int, warmup: int = 3) -> tuple[float, list[float]]:
    """Mean ms of ``fn(i)`` for ``i`` in ``1..n-1`` after ``warmup`` untimed calls of ``fn(0)``, and the
    samples."""
    if n < 2:
        raise ValueError(f"need at least 2 frames to time, got {n}")
    for _ in range(max(warmup, 1)):
        fn(0)
    times = []
    for i in range(1, n):
        t0 = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.mean(times)), times


def measure_costs(
    frames: Sequence[np.ndarray],
    teacher: Callable[[np.ndarray], Any],
    teacher_name: str,
    model: Any,
    batches: Sequence[int] = (1,),
    flow: Callable[[np.ndarray, np.ndarray, np.ndarray], Any] | None = None,
    repeats: int = 20,
    timer_student: Callable[..., dict[str, Any]] = time_student,
    warmup: int = 3,
) -> MeasuredCosts:
    """Time the four costs once, in this process, on ``frames``.

    Args:
      frames: real frames uint8 ``[H, W, 3]`` at the table's resolution, consecutive (flow warps frame
        ``i - 1``'s label to frame ``i``); at least 2.
      teacher: ``frame -> label`` (the caller's teacher, e.g. a TFLite backend and the rasteriser).
      teacher_name: what ``teacher`` is, recorded.
      model: the student's :class:`~jitnet_jax.config.StudentConfig`.
      batches: the ``B`` values of the table's online methods.
      flow: ``(label uint8 [H, W], prev_frame, frame) -> label`` (None: ``flow_ms`` is NaN).
      timer_student: :func:`time_student` (tests pass a stub).
      warmup: untimed calls of the teacher and of flow on the first frame before the timed ones.
    Raises:
      ValueError: fewer than 2 frames, or frames of different sizes (one line).
    """
    if len(frames) < 2:
        raise ValueError(f"measured costs: need at least 2 frames, got {len(frames)}")
    load_before = _loadavg()
    h, w = frames[0].shape[:2]
    if any(f.shape != (h, w, 3) or f.dtype != np.uint8 for f in frames):
        raise ValueError(f"measured costs: every frame must be uint8 [{h}, {w}, 3]")
    teacher_ms, teacher_samples = time_per_frame(lambda i: teacher(frames[i]), len(frames), warmup)
    flow_ms, flow_samples = float("nan"), []
    if flow is not None:
        label = np.zeros((h, w), np.uint8)
        label[h // 4 : h // 2, w // 4 : w // 2] = 1
        flow_ms, flow_samples = time_per_frame(
            lambda i: flow(label, frames[max(i - 1, 0)], frames[i]), len(frames), warmup
        )
    st = timer_student(model, h, w, batches, repeats)
    return MeasuredCosts(
        teacher_ms=teacher_ms,
        predict_ms=float(st["predict_ms"]),
        update_ms={int(b): float(v) for b, v in st["update_ms"].items()},
        flow_ms=flow_ms,
        height=h,
        width=w,
        teacher=teacher_name,
        machine=machine(),
        detail={
            "frames": len(frames),
            "teacher_samples_ms": teacher_samples,
            "flow_samples_ms": flow_samples,
            "predict_samples_ms": st.get("predict_samples_ms", []),
            "update_samples_ms": {str(b): v for b, v in st.get("update_samples_ms", {}).items()},
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            # 1/5/15-minute load averages before and after: a loaded machine makes every cost read high
            "loadavg_before": load_before,
            "loadavg_after": _loadavg(),
        },
    )


def _loadavg() -> list[float] | None:
    """``os.getloadavg()`` as a list, or None where the platform has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def load_costs(path: str | os.PathLike) -> MeasuredCosts:
    """Read a ``costs.json``.

    Raises:
      DataError: unreadable, not JSON or a bad field (one line naming the file).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable measured-costs file ({' '.join(str(e).split())})") from None
    return MeasuredCosts.from_json(data, str(path))


def load_or_measure(
    path: str | os.PathLike, measure: Callable[[], MeasuredCosts]
) -> tuple[MeasuredCosts, bool]:
    """The costs stored at ``path`` (a rerun reuses them), else ``measure()`` written there atomically.

    Returns:
      ``(costs, measured_now)``.
    Raises:
      DataError: ``path`` exists but cannot be read (see :func:`load_costs`).
    """
    path = Path(path)
    if path.exists():
        return load_costs(path), False
    costs = measure()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(costs.to_json(), indent=1, sort_keys=True) + "\n").encode())
    return costs, True


def measured_speedups(results: dict[str, Any], kinds: dict[str, str], costs: MeasuredCosts) -> dict[str, Any]:
    """Speedups under ``costs`` of every part of a table's ``results`` and of each method's overall totals.

    Args:
      results: ``{"streams": {stream: {"methods": {name: part}}}}`` as ``table.json`` stores it (a part's
        ``summary`` holds ``frames``, ``teacher_frames``, ``updates`` and ``frames_per_update``).
      kinds: method name -> kind (``online``, ``hold``, ``flow``, ...).
    Returns:
      ``{"streams": {stream: {name: speedup}}, "overall": {name: speedup}}``; the overall one from the
      frame, teacher-frame and update totals over the streams the method has (updates of different ``B``
      are costed each with their own ``update_ms``).
    Raises:
      DataError: a part lacks one of those fields (one line naming the stream, method and field).
    """
    per: dict[str, dict[str, float]] = {}
    totals: dict[str, dict[str, Any]] = {}
    for stream, p in results["streams"].items():
        per[stream] = {}
        for name, part in p["methods"].items():
            if name not in kinds:
                continue
            sm = part.get("summary", {})
            try:
                n, t, u = int(sm["frames"]), int(sm["teacher_frames"]), int(sm["updates"])
            except KeyError as e:
                raise DataError(f"table part {stream}/{name}: summary has no field {e.args[0]}") from None
            b = int(sm.get("frames_per_update", 1))
            per[stream][name] = costs.speedup(kinds[name], n, t, u, b)
            tot = totals.setdefault(name, {"n": 0, "t": 0, "u": {}})
            tot["n"] += n
            tot["t"] += t
            tot["u"][b] = tot["u"].get(b, 0) + u
    overall = {}
    for name, tot in totals.items():
        infer = {"hold": 0.0, "flow": costs.flow_ms}.get(kinds[name], costs.predict_ms)
        spent = infer * (tot["n"] - tot["t"]) + costs.teacher_ms * tot["t"]
        spent += sum(costs.update(b) * u for b, u in tot["u"].items() if u)
        overall[name] = costs.teacher_ms * tot["n"] / max(spent, 1e-9)
    return {"streams": per, "overall": overall}

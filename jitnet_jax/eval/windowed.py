"""Scores over time and per scene: a run's confusion counts in one-second bins, windowed mIoU (the paper's
per-stream figure: 30-second windows with the update counts beneath) and the capacity table of a
multi-scene table (online against the offline oracles, overall and per scene).

A table part keeps its run's counts binned, ``extra["bins"]`` (:func:`frame_bins`, a few hundred numbers
per minute of stream), so windows of any whole number of seconds are scored from the part alone.

The command is ``experiments.capacity`` (``capacity.md`` / ``capacity.json``: every stream of the table,
overall and per-scene mIoU of each method, the oracles' lead over the online column; ``windowed_<W>s.png``).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jitnet_jax.student.metrics import iou_from_counts

#: Length of one bin of :func:`frame_bins` in seconds of the stream.
BIN_S = 1.0
#: The paper's window for its per-stream figure (seconds).
PAPER_WINDOW_S = 30.0


def bin_frames(fps: float, bin_s: float = BIN_S) -> int:
    """Frames per bin: ``round(fps * bin_s)``, at least 1.

    Raises:
      ValueError: ``fps`` or ``bin_s`` not > 0 (one line naming it).
    """
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps!r}")
    if not bin_s > 0:
        raise ValueError(f"bin_s must be > 0, got {bin_s!r}")
    return max(1, round(fps * bin_s))


def frame_bins(per_frame: dict[str, np.ndarray], fps: float, bin_s: float = BIN_S) -> dict[str, Any]:
    """A run's per-frame counts summed over bins of :func:`bin_frames` consecutive stream frames.

    Args:
      per_frame: the runner's per-frame rows: ``frame`` int ``[N]`` (stream frame index, increasing),
        ``teacher`` bool/int ``[N]``, ``updates`` int ``[N]``, ``tp``/``fp``/``fn`` int ``[N, C]``.
      fps: the stream's frame rate.
    Returns:
      JSON-ready ``{"fps", "bin_s", "bin_frames", "frames" [K], "teacher" [K], "updates" [K],
      "tp"/"fp"/"fn" [K][C]}`` (ints; ``frames`` counts the frames of each bin the run scored; bin ``k``
      holds stream frames ``[k * bin_frames, (k + 1) * bin_frames)``).
    Raises:
      ValueError: bad ``fps``/``bin_s``, or a missing per-frame field (one line naming it).
    """
    b = bin_frames(fps, bin_s)
    for k in ("frame", "teacher", "updates", "tp", "fp", "fn"):
        if k not in per_frame:
            raise ValueError(f"per_frame has no field {k!r}")
    frame = np.asarray(per_frame["frame"], np.int64)
    c = np.asarray(per_frame["tp"]).shape[1] if np.asarray(per_frame["tp"]).ndim == 2 else 0
    k = int(frame.max()) // b + 1 if len(frame) else 0
    idx = frame // b

    def summed(x: Any, shape: tuple[int, ...]) -> list[Any]:
        out = np.zeros(shape, np.int64)
        np.add.at(out, idx, np.asarray(x, np.int64))
        return out.tolist()

    return {
        "fps": float(fps),
        "bin_s": float(bin_s),
        "bin_frames": b,
        "frames": summed(np.ones(len(frame)), (k,)),
        "teacher": summed(per_frame["teacher"], (k,)),
        "updates": summed(per_frame["updates"], (k,)),
        **{n: summed(per_frame[n], (k, c)) for n in ("tp", "fp", "fn")},
    }


def windowed_scores(bins: dict[str, Any], window_s: float = PAPER_WINDOW_S) -> list[dict[str, Any]]:
    """Scores over consecutive windows of ``window_s`` seconds (``round(window_s / bin_s)`` bins; the last
    window may be shorter).

    Args:
      bins: :func:`frame_bins`'s dict.
    Returns:
      ``[{"start", "stop" (stream frames, [start, stop)), "start_s", "stop_s", "frames", "miou"
      (foreground, NaN when no foreground class appears), "updates", "teacher_frames"}, ...]``.
    Raises:
      ValueError: ``window_s`` shorter than one bin (one line).
    """
    n = round(window_s / bins["bin_s"])
    if n < 1:
        raise ValueError(f"window_s must be at least one bin ({bins['bin_s']:g} s), got {window_s!r}")
    b, fps = bins["bin_frames"], bins["fps"]
    frames = np.asarray(bins["frames"], np.int64)
    counts = {k: np.asarray(bins[k], np.int64) for k in ("tp", "fp", "fn")}
    out = []
    for a in range(0, len(frames), n):
        z = slice(a, a + n)
        if not frames[z].sum():
            continue
        stop = min((a + n) * b, a * b + int(np.flatnonzero(frames[z])[-1] + 1) * b)
        out.append(
            {
                "start": a * b,
                "stop": stop,
                "start_s": a * b / fps,
                "stop_s": stop / fps,
                "frames": int(frames[z].sum()),
                "miou": iou_from_counts(*(counts[k][z].sum(0) for k in ("tp", "fp", "fn")))["miou"],
                "updates": int(np.asarray(bins["updates"])[z].sum()),
                "teacher_frames": int(np.asarray(bins["teacher"])[z].sum()),
            }
        )
    return out


# --------------------------------------------------------------------------- the capacity table


def _num(x: Any) -> float:
    """``x`` as a float (None and missing scores are NaN)."""
    return float("nan") if x is None else float(x)


def _fmt(x: float, signed: bool = False) -> str:
    """A score with 3 decimals, ``+`` for a signed difference, empty for NaN."""
    if math.isnan(x):
        return ""
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _scene_value(parts: dict[str, Any], n_scenes: int, i: int, method: str, field: str) -> float:
    """Scene ``i``'s ``field`` (``miou``, ``updates``, ``teacher_frames``) in ``method``'s part (NaN when
    missing); a plain stream's one scene is the whole stream."""
    if method not in parts:
        return float("nan")
    extra = parts[method].get("extra", {})
    rows = extra.get("scenes")
    if rows is None and n_scenes == 1:
        if field == "miou":
            return _num(parts[method]["summary"]["miou"])
        bins = extra.get("bins")
        key = {"updates": "updates", "teacher_frames": "teacher"}[field]
        return float(sum(bins[key])) if bins else float("nan")
    return _num(rows[i].get(field)) if rows else float("nan")


def scene_letters(scenes: Sequence[dict[str, Any]]) -> str:
    """The scenes' order with one letter per source stream, in order of first appearance: ``"A B C A B C"``
    for a stream whose three scenes return (``scenes``: dicts with ``name``, else ``part``)."""
    letters: dict[str, str] = {}
    for sc in scenes:
        letters.setdefault(sc.get("name", sc["part"]), chr(ord("A") + len(letters) % 26))
    return " ".join(letters[sc.get("name", sc["part"])] for sc in scenes)


def capacity_rows(table: dict[str, Any], online: str, oracles: Sequence[str]) -> dict[str, Any]:
    """The capacity table of a table's ``table.json``.

    Args:
      table: ``table.json`` as a dict (``streams``: ``{stream: {"frames", "scenes"?, "methods": {name:
        part}}}``).
      online: the online column; oracles: the columns whose lead over it is reported.
    Returns:
      ``{"streams": [{"stream", "scenes" (distinct source streams), "order" (:func:`scene_letters`),
      "frames", "miou": {method: overall mIoU}, "lead":
      {oracle: oracle - online}, "per_scene": [{"part", "frames", "miou": {method: mIoU}, "lead": {...},
      "updates" (online), "teacher_frames" (online)}]}]}`` (NaN where a part is missing).
    Raises:
      ValueError: no streams in ``table`` (one line).
    """
    if not table.get("streams"):
        raise ValueError("table.json has no streams")
    names = [online, *oracles]
    out = []
    for stream, p in table["streams"].items():
        parts = p.get("methods", {})
        miou = {m: _num(parts[m]["summary"]["miou"]) if m in parts else float("nan") for m in names}
        scenes = p.get("scenes") or [{"part": stream, "frames": [0, p["frames"]]}]
        per_scene = []
        for i, sc in enumerate(scenes):
            sm = {m: _scene_value(parts, len(scenes), i, m, "miou") for m in names}
            per_scene.append(
                {
                    "part": sc["part"],
                    "frames": sc["frames"][1] - sc["frames"][0],
                    "miou": sm,
                    "lead": {o: sm[o] - sm[online] for o in oracles},
                    "updates": _scene_value(parts, len(scenes), i, online, "updates"),
                    "teacher_frames": _scene_value(parts, len(scenes), i, online, "teacher_frames"),
                }
            )
        out.append(
            {
                "stream": stream,
                "scenes": len({sc.get("name", sc["part"]) for sc in scenes}),
                "order": scene_letters(scenes),
                "frames": p["frames"],
                "miou": miou,
                "lead": {o: miou[o] - miou[online] for o in oracles},
                "per_scene": per_scene,
            }
        )
    return {"online": online, "oracles": list(oracles), "streams": out}


def capacity_markdown(cap: dict[str, Any]) -> str:
    """:func:`capacity_rows` as two markdown tables: overall per stream, then per scene."""
    online, oracles = cap["online"], cap["oracles"]
    names = [online, *oracles]
    head = ["stream", "scenes", "frames", *names, *(f"{o} − online" for o in oracles)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in cap["streams"]:
        cells = [f"`{r['stream']}`", r["order"], str(r["frames"])]
        cells += [_fmt(r["miou"][m]) for m in names] + [_fmt(r["lead"][o], True) for o in oracles]
        lines.append("| " + " | ".join(cells) + " |")
    head = ["stream", "scene", "frames", *names, *(f"{o} − online" for o in oracles), "online updates"]
    lines += ["", "Per scene:", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in cap["streams"]:
        for j, sc in enumerate(r["per_scene"], 1):
            cells = [
                f"{r['order']} ({r['frames']} frames)" if j == 1 else "",
                f"`{sc['part']}`",
                str(sc["frames"]),
            ]
            cells += [_fmt(sc["miou"][m]) for m in names] + [_fmt(sc["lead"][o], True) for o in oracles]
            cells.append("" if math.isnan(sc["updates"]) else str(int(sc["updates"])))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the windowed plot


def _bins(stream: dict[str, Any], method: str) -> dict[str, Any]:
    """``method``'s binned counts in a ``table.json`` stream entry (``{}`` when its part has none)."""
    return stream["methods"].get(method, {}).get("extra", {}).get("bins") or {}


def plot_windowed(
    path: Path, table: dict[str, Any], methods: Sequence[str], window_s: float = PAPER_WINDOW_S
) -> int:
    """Windowed mIoU over each stream of ``table`` for ``methods`` (one panel per stream, the updates per
    window beneath, dashed lines where scenes start), as a PNG at ``path``.

    Returns:
      how many (stream, method) curves were drawn (parts without ``extra["bins"]`` are left out).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jitnet_jax.data.label_store import atomic_write_bytes

    streams = list(table["streams"].items())
    if not streams:
        raise ValueError("table.json has no streams")
    fig, axes = plt.subplots(
        2 * len(streams),
        1,
        figsize=(10, 3.4 * len(streams)),
        gridspec_kw={"height_ratios": [3, 1] * len(streams)},
        squeeze=False,
    )
    drawn = 0
    for i, (stream, p) in enumerate(streams):
        ax, axu = axes[2 * i, 0], axes[2 * i + 1, 0]
        fps = None
        updating = [m for m in methods if sum(_bins(p, m).get("updates", [])) > 0]
        width = 0.8 / max(1, len(updating))
        for m in methods:
            bins = _bins(p, m) or None
            if bins is None:
                continue
            fps = bins["fps"]
            w = windowed_scores(bins, window_s)
            edges = [x["start_s"] for x in w] + [w[-1]["stop_s"]]
            mi = [x["miou"] for x in w]
            st = ax.stairs(mi, edges, label=m, linewidth=1.8, baseline=None)
            mids = [(x["start_s"] + x["stop_s"]) / 2 for x in w]
            ax.plot(mids, mi, "o", ms=3, color=st.get_edgecolor())
            ups = [x["updates"] for x in w]
            if any(ups):
                lens = [x["stop_s"] - x["start_s"] for x in w]
                k = updating.index(m)
                xs = [x["start_s"] + (0.1 + k * width) * n for x, n in zip(w, lens)]
                axu.bar(xs, ups, width=[width * n for n in lens], align="edge", label=f"{m} updates")
            drawn += 1
        for sc in p.get("scenes") or []:
            if fps and sc["frames"][0] > 0:
                for a in (ax, axu):
                    a.axvline(sc["frames"][0] / fps, color="k", ls="--", lw=0.8)
            if fps:
                ax.text(sc["frames"][0] / fps, 1.01, " " + sc["name"], fontsize=7, va="bottom")
        ax.set_title(f"{stream}  ({window_s:g} s windows)", fontsize=8, pad=14)
        ax.set_ylabel("mIoU")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower left")
        axu.set_ylabel("updates", fontsize=8)
        axu.set_xlabel("stream time (s)")
        axu.set_xlim(ax.get_xlim())
        axu.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return drawn

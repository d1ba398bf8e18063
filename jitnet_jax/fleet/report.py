"""A fleet run's report: ``fleet.md`` (one row per camera and the fleet's totals) and the plot of teacher use
per camera over time."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jitnet_jax.io import atomic_write_bytes


def fleet_markdown(summary: dict[str, Any], command: str | None = None) -> str:
    """The fleet's summary (:func:`~jitnet_jax.fleet.driver.summarize_fleet`) as a markdown table."""
    b = summary["budget"]
    budget = []
    if b["per_tick"]:
        budget.append(f"at most {b['per_tick']} teacher frames per tick")
    if b["fraction"]:
        budget.append(f"teacher frames at most {100 * b['fraction']:.1f}% of camera-frames (+1 per camera)")
    lines = [
        f"# Fleet of {len(summary['cameras'])} cameras, policy `{summary['policy']}`",
        "",
        f"Budget: {'; '.join(budget) if budget else 'none (every camera runs Algorithm 1 on its own)'}.",
        "",
        "| camera | classes | frames | teacher frames | teacher % | waits | updates | mIoU | speedup (cost model) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in summary["cameras"]:
        classes = ", ".join(list(c["class_iou"]))
        lines.append(
            f"| {c['camera']} | {classes} | {c['frames']} | {c['teacher_frames']} | "
            f"{100 * c['teacher_fraction']:.1f}% | {c['waits']} | {c['updates']} | {c['miou']:.3f} | "
            f"{c['speedup_cost_model']:.1f}x |"
        )
    lines.append(
        f"| **fleet** | | {summary['frames']} | {summary['teacher_frames']} | "
        f"{100 * summary['teacher_fraction']:.1f}% | {summary['waits']} | {summary['updates']} | "
        f"{summary['miou']:.3f} (mean) | {summary['speedup_cost_model']:.1f}x |"
    )
    lines += [
        "",
        f"Student compute: {summary['wall_s']:.1f} s for {summary['frames']} camera-frames "
        f"({summary['frames_per_s']:.1f} frames/s), compile {summary['compile_s']:.1f} s.",
    ]
    if command:
        lines += ["", "Command:", "", f"    {command}"]
    return "\n".join(lines) + "\n"


def plot_teacher_use(
    per_frame: Sequence[dict[str, np.ndarray]], names: Sequence[str], path: str | Path, title: str
) -> Path:
    """Cumulative teacher frames of every camera against the frame index (one line per camera)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7.0, 4.2), dpi=120)
    for pf, name in zip(per_frame, names):
        ax.plot(pf["frame"], np.cumsum(pf["teacher"]), label=f"{name} ({int(pf['teacher'].sum())})")
    ax.set_xlabel("frame")
    ax.set_ylabel("teacher frames so far")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


#: The per-stream table's columns shown beside the fleet's runs (method -> label).
TABLE_COLUMNS = {
    "cv_adam_a0.9_dmax16": "online δ∈[8,16] (single runs)",
    "cv_adam_a0.9_d16_r16b4": "online δ=16 + replay (single runs)",
    "hold_d8": "label hold δ8",
    "flow_d16": "flow δ16",
}


def comparison_markdown(runs: dict[str, dict[str, Any]], table: dict[str, Any] | None = None) -> str:
    """The fleet's runs (name -> ``fleet.json``) side by side: overall mIoU (mean over cameras), teacher %
    and cost-model speedup, then teacher frames and mIoU per camera; with the per-stream table's
    ``table.json`` (``experiments.table``), its :data:`TABLE_COLUMNS` on the same streams beside them."""
    names = list(runs)
    cams = [c["camera"] for c in runs[names[0]]["cameras"]]
    lines = [
        "| run | policy | budget | mIoU (mean over cameras) | teacher % | waits | speedup (cost model) |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in names:
        r = runs[n]
        b = r["budget"]
        budget = ", ".join(
            x
            for x in (
                f"K={b['per_tick']}" if b["per_tick"] else "",
                f"F={b['fraction']}" if b["fraction"] else "",
            )
            if x
        )
        lines.append(
            f"| {n} | {r['policy']} | {budget or 'none'} | {r['miou']:.3f} | {100 * r['teacher_fraction']:.1f}% | "
            f"{r['waits']} | {r['speedup_cost_model']:.1f}x |"
        )
    streams = (table or {}).get("streams", {})
    cols = [m for m in TABLE_COLUMNS if all(m in streams.get(c, {}).get("methods", {}) for c in cams)]
    for m in cols:
        s = [streams[c]["methods"][m]["summary"] for c in cams]
        frames = sum(x["frames"] for x in s)
        teacher = sum(x["teacher_frames"] for x in s)
        lines.append(
            f"| {TABLE_COLUMNS[m]} (`{m}`, results/table) | | | {float(np.mean([x['miou'] for x in s])):.3f} | "
            f"{100 * teacher / frames:.1f}% | | |"
        )
    lines += ["", "Teacher frames (and mIoU) per camera:", ""]
    head = "| run | " + " | ".join(cams) + " |"
    lines += [head, "|---" * (len(cams) + 1) + "|"]
    for n in names:
        by = {c["camera"]: c for c in runs[n]["cameras"]}
        cells = [
            f"{by[c]['teacher_frames']} ({100 * by[c]['teacher_fraction']:.1f}%): {by[c]['miou']:.3f}"
            for c in cams
        ]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    for m in cols:
        cells = []
        for c in cams:
            x = streams[c]["methods"][m]["summary"]
            cells.append(f"{x['teacher_frames']} ({100 * x['teacher_fraction']:.1f}%): {x['miou']:.3f}")
        lines.append(f"| `{m}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

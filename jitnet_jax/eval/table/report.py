"""The table's files: ``table.md`` (cells, claims, stability, legend), ``table.csv``, ``table.json`` and the
plot ``table.png``."""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Sequence
from typing import Any

from jitnet_jax.data.label_store import atomic_write_bytes
from jitnet_jax.eval.costs import CostModel
from jitnet_jax.eval.measured_costs import MeasuredCosts, measured_speedups
from jitnet_jax.eval.table.cache import write_json
from jitnet_jax.eval.table.claims import claims, claims_markdown, speed_claims, speed_claims_markdown
from jitnet_jax.eval.table.methods import Method
from jitnet_jax.eval.table.overall import overall
from jitnet_jax.eval.table.plot import plot
from jitnet_jax.eval.table.settings import Settings


def cell(miou: float, speedup: float, teacher_fraction: float, measured: float | None = None) -> str:
    """One table cell: "mIoU (speedup x, teacher %)", or with ``measured`` (the speedup under the measured
    cost model) "mIoU (speedup x / measured x, teacher %)"."""
    both = f"{speedup:.1f}x" if measured is None else f"{speedup:.1f}x / {measured:.1f}x"
    return f"{miou:.3f} ({both}, {100 * teacher_fraction:.1f}%)"


def table_rows(
    results: dict[str, Any], ms: Sequence[Method], ov: dict[str, Any], measured: dict[str, Any] | None = None
) -> list[list[str]]:
    """The main table: a header, one row per stream and the Overall row; an Overall cell of a column not
    finished on every stream says over how many streams it averages. ``measured``
    (:func:`~jitnet_jax.eval.measured_costs.measured_speedups`) adds the measured model's speedups."""
    header = ["stream"] + [m.name for m in ms]
    rows = [header]
    for stream, p in results["streams"].items():
        row = [stream]
        for m in ms:
            r = p["methods"].get(m.name)
            sm = r["summary"] if r else None
            ms_ = measured["streams"][stream].get(m.name) if measured else None
            row.append(cell(sm["miou"], sm["speedup_cost_model"], sm["teacher_fraction"], ms_) if sm else "")
        rows.append(row)
    row = ["Overall"]
    n_streams = len(results["streams"])
    for m in ms:
        o = ov.get(m.name)
        mo = measured["overall"].get(m.name) if measured else None
        text = cell(o["miou"], o["speedup_cost_model"], o["teacher_fraction"], mo) if o else ""
        if o and o["streams"] < n_streams:  # a column that is not finished yet: say over how many streams
            text += f" [{o['streams']}/{n_streams} streams]"
        row.append(text)
    rows.append(row)
    return rows


def stability_rows(results: dict[str, Any], ms: Sequence[Method], ov: dict[str, Any]) -> list[list[str]]:
    """The flip rate on static pixels of the teacher and every method: a header, one row per stream and
    the Overall row."""
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
    """``rows`` (the first is the header) as a markdown table."""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines) + "\n"


def costs_markdown(costs: MeasuredCosts) -> str:
    """The two cost models side by side, with the speedup bound (teacher ms / student predict ms)."""
    paper = CostModel()
    upd = ", ".join(f"B={b}: {v:.1f}" for b, v in sorted(costs.update_ms.items()))
    flow = f"{costs.flow_ms:.1f}" if costs.flow_ms == costs.flow_ms else "not measured"
    return (
        "| cost (ms) | paper (V100, Mask R-CNN teacher) | measured here |\n|---|---|---|\n"
        f"| teacher, per frame | {paper.teacher_ms:g} | {costs.teacher_ms:.1f} (`{costs.teacher}`) |\n"
        f"| student predict, per frame | {paper.infer_ms:g} | {costs.predict_ms:.1f} |\n"
        f"| one update of B frames | {paper.train_ms:g} x B | {upd} |\n"
        f"| flow, per frame | this CPU's, per run (`flow_ms_per_frame`) | {flow} |\n"
        f"| bound: teacher / predict | {paper.teacher_ms / paper.infer_ms:.1f}x | {costs.bound:.1f}x |\n\n"
        f"Measured on {costs.machine}, at {costs.height}x{costs.width}, once, in one process "
        f"({costs.detail.get('measured_at', '?')}; `costs.json`). The table's labels are precomputed "
        "teacher output (lvs_mini: files in LVS's Mask R-CNN layout), which cannot be timed here: the measured "
        f"teacher cost is that of `{costs.teacher}` (a TFLite teacher run on this CPU by the teacher registry, on "
        "the streams' frames at the table's resolution, label rasterisation included). The measured model "
        "uses the paper's formula with these four costs: flow and the student are costed on the same machine.\n"
    )


def write_outputs(
    s: Settings,
    results: dict[str, Any],
    ms: Sequence[Method],
    settings_json: dict[str, Any],
    costs: MeasuredCosts | None = None,
) -> None:
    """Write ``table.md``, ``table.csv``, ``table.json`` (with ``settings_json``, the Overall row and the
    claims) and ``table.png`` into ``s.out``, from :func:`~jitnet_jax.eval.table.build.run_table`'s
    ``results``. With ``costs`` (the measured cost model) every cell and the Overall row also hold the
    speedup under it (``speedup_measured_costs``), and the claims read the accuracy-speedup front under
    both models."""
    ov = overall(results, ms)
    cl = claims(results, ms, ov)
    measured = None
    cl["speed_paper"] = speed_claims(ov, ms, {n: ov[n]["speedup_cost_model"] for n in ov if n != "teacher"})
    if costs is not None:
        measured = measured_speedups(results, {m.name: m.kind for m in ms}, costs)
        for name, v in measured["overall"].items():
            ov[name]["speedup_measured_costs"] = v
        for stream, per in measured["streams"].items():
            for name, v in per.items():
                results["streams"][stream]["methods"][name]["summary"]["speedup_measured_costs"] = v
        cl["speed_measured"] = speed_claims(ov, ms, measured["overall"])
    rows = table_rows(results, ms, ov, measured)
    srows = stability_rows(results, ms, ov)
    legend = "\n".join(f"- `{m.name}`: {m.label}" for m in ms)
    limit = f", first {s.max_frames} frames per stream" if s.max_frames else ""
    speed = (
        "cost-model speedup x, teacher %"
        if costs is None
        else "speedup under the paper's V100 costs x / under the costs measured here x, teacher %"
    )
    md = (
        f"# JITNet evaluation ({s.height}x{s.width}{limit})\n\n"
        f"Cells: mIoU ({speed}). Overall: mIoU is the unweighted mean over streams; "
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
        + speed_claims_markdown(cl["speed_paper"], "the paper's V100 costs (flow: this CPU's time)")
        + (speed_claims_markdown(cl.get("speed_measured"), "the costs measured here") if costs else "")
        + (("\n## Cost models\n\n" + costs_markdown(costs)) if costs else "")
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
    cost_json = {"paper": dataclasses.asdict(CostModel())}
    if costs is not None:
        cost_json["measured"] = costs.to_json()
    body = {"settings": settings_json, "overall": ov, "claims": cl, "costs": cost_json, **results}
    write_json(s.out / "table.json", body)
    plot(s.out / "table.png", results, ms, ov)

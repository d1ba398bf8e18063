"""The table's files: ``table.md`` (cells, claims, stability, legend), ``table.csv``, ``table.json`` and the
plot ``table.png``."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from jitnet_jax.data.label_store import atomic_write_bytes
from jitnet_jax.eval.table.cache import write_json
from jitnet_jax.eval.table.claims import claims, claims_markdown
from jitnet_jax.eval.table.methods import Method
from jitnet_jax.eval.table.overall import overall
from jitnet_jax.eval.table.plot import plot
from jitnet_jax.eval.table.settings import Settings


def cell(miou: float, speedup: float, teacher_fraction: float) -> str:
    """One table cell: "mIoU (speedup x, teacher %)"."""
    return f"{miou:.3f} ({speedup:.1f}x, {100 * teacher_fraction:.1f}%)"


def table_rows(results: dict[str, Any], ms: Sequence[Method], ov: dict[str, Any]) -> list[list[str]]:
    """The main table: a header, one row per stream and the Overall row; an Overall cell of a column not
    finished on every stream says over how many streams it averages."""
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


def write_outputs(
    s: Settings, results: dict[str, Any], ms: Sequence[Method], settings_json: dict[str, Any]
) -> None:
    """Write ``table.md``, ``table.csv``, ``table.json`` (with ``settings_json``, the Overall row and the
    claims) and ``table.png`` into ``s.out``, from :func:`~jitnet_jax.eval.table.build.run_table`'s
    ``results``."""
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

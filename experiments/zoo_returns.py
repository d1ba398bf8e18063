"""Scene returns of constructed-stream runs (docs/zoo.md): per scene segment, the frames from its start to
the first teacher frame whose check passed, its mIoU, teacher frames and the zoo's switches.

    python -m experiments.zoo_returns runs/abc_z0 runs/abc_z4 --out results/zoo/returns

Reads each run folder's ``summary.json`` (its ``scenes``) and ``per_frame.csv``; writes ``OUT.json`` and
``OUT.md`` (one table row per run and scene, then one per run: overall mIoU, teacher %, speedups).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def _per_frame(path: Path) -> dict[str, np.ndarray]:
    """The columns of a run's ``per_frame.csv`` that this needs, as numpy arrays ``[N]``."""
    with path.open() as f:
        rows = list(csv.DictReader(f))
    cols = ["frame", "teacher", "updates", "acc"] + [k for k in ("zoo_switch", "zoo_store") if k in rows[0]]
    return {k: np.array([float(r[k]) for r in rows]) for k in cols}


def run_returns(run: Path) -> dict[str, Any]:
    """One run's overall scores and its scenes, each with ``to_first_pass`` (frames from the scene's start
    to its first teacher frame whose last check passed ``a_thr``; None if none did)."""
    summary = json.loads((run / "summary.json").read_text())
    a_thr = json.loads((run / "config.json").read_text())["online"]["a_thr"]
    pf = _per_frame(run / "per_frame.csv")
    scenes = []
    for sc in summary.get("scenes", []):
        a, b = sc["frames"]
        m = (pf["frame"] >= a) & (pf["frame"] < b)
        passed = np.nonzero(m & (pf["teacher"] > 0) & (pf["acc"] > a_thr))[0]
        row = {
            "scene": sc["name"],
            "frames": [a, b],
            "miou": sc.get("miou"),
            "teacher_frames": sc.get("teacher_frames"),
            "updates": sc.get("updates"),
            "to_first_pass": int(pf["frame"][passed[0]]) - a if len(passed) else None,
        }
        if "zoo_switch" in pf:
            row["zoo_switches"] = int(pf["zoo_switch"][m].sum())
            row["zoo_stores"] = int(pf["zoo_store"][m].sum())
        scenes.append(row)
    keys = ("miou", "teacher_fraction", "updates", "speedup_cost_model", "speedup_flops")
    keys += ("zoo_forward", "zoo_switches", "zoo_stores")
    return {"run": run.name, **{k: summary[k] for k in keys if k in summary}, "scenes": scenes}


def to_markdown(runs: list[dict[str, Any]]) -> str:
    """The two tables (scenes, overall) of :func:`run_returns` outputs."""
    lines = [
        "| run | # | scene | frames | to first pass | mIoU | teacher frames | updates | switches | stores |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        for i, sc in enumerate(r["scenes"]):
            first = "-" if sc["to_first_pass"] is None else str(sc["to_first_pass"])
            lines.append(
                f"| {r['run']} | {i} | {sc['scene']} | {sc['frames'][0]}-{sc['frames'][1]} | {first} | "
                f"{sc['miou']:.3f} | {sc['teacher_frames']} | {sc['updates']} | "
                f"{sc.get('zoo_switches', '-')} | {sc.get('zoo_stores', '-')} |"
            )
    lines += [
        "",
        "| run | mIoU | teacher % | updates | speedup (cost model) | speedup (FLOPs) | zoo forward | switches | stores |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['run']} | {r['miou']:.3f} | {100 * r['teacher_fraction']:.1f} | {r['updates']} | "
            f"{r['speedup_cost_model']:.2f} | {r.get('speedup_flops', float('nan')):.2f} | "
            f"{r.get('zoo_forward', '-')} | {r.get('zoo_switches', '-')} | {r.get('zoo_stores', '-')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders of experiments.stream")
    p.add_argument("--out", type=Path, required=True, help="output prefix (OUT.json, OUT.md)")
    args = p.parse_args(argv)
    try:
        runs = [run_returns(r) for r in args.runs]
    except (OSError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(runs, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(to_markdown(runs))
    print(to_markdown(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())

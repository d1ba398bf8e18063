"""Compare fleet runs side by side (and beside the per-stream table).

    python -m experiments.fleet_report results/fleet/*/fleet.json --table results/table/table.json \\
        --out results/fleet/comparison.md

Each argument is a run's ``fleet.json`` (``experiments.fleet``), named by its folder. Prints the markdown and
writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jitnet_jax.fleet.report import comparison_markdown
from jitnet_jax.io import atomic_write_text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m experiments.fleet_report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="+", help="fleet.json files")
    p.add_argument("--table", help="the per-stream table's table.json (experiments.table)")
    p.add_argument("--out", help="write the markdown here")
    args = p.parse_args(argv)
    runs = {}
    for f in args.runs:
        try:
            runs[Path(f).parent.name] = json.loads(Path(f).read_text())
        except (OSError, json.JSONDecodeError) as e:
            print(f"error: {f}: cannot read a fleet run ({e})", file=sys.stderr)
            return 2
    table = None
    if args.table:
        try:
            table = json.loads(Path(args.table).read_text())
        except (OSError, json.JSONDecodeError) as e:
            print(f"error: {args.table}: cannot read the table ({e})", file=sys.stderr)
            return 2
    text = comparison_markdown(runs, table)
    if args.out:
        atomic_write_text(Path(args.out), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The oracle's capacity on multi-scene streams: the capacity table and the windowed plot of a table.

    python -m experiments.capacity --table results/scenes/table.json --out results/scenes \
        --online cv_adam_a0.9_dmax16_r16b4 --oracles oracle oracle_w0.5 --window-s 30 2

writes ``capacity.md`` / ``capacity.json`` (every stream of the table: overall and per-scene mIoU of each
method, the oracles' lead over the online column) and ``windowed_<W>s.png`` for each ``--window-s`` (windowed
mIoU with the update counts beneath and the scene boundaries; ``jitnet_jax.eval.windowed``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from jitnet_jax.eval.windowed import PAPER_WINDOW_S, capacity_markdown, capacity_rows, plot_windowed
from jitnet_jax.io import atomic_write_text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.capacity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--table", type=Path, required=True, help="a table's table.json (experiments.table)")
    p.add_argument("--out", type=Path, required=True, help="folder for capacity.md/json and the plots")
    p.add_argument("--online", default="cv_adam_a0.9_dmax16_r16b4", help="the online column")
    p.add_argument("--oracles", nargs="*", default=["oracle", "oracle_w0.5"], help="the oracle columns")
    p.add_argument(
        "--window-s", type=float, nargs="*", default=[PAPER_WINDOW_S], help="window lengths (seconds)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; 0 on success, 2 on bad arguments/input."""
    args = build_parser().parse_args(argv)
    try:
        table = json.loads(args.table.read_text())
        cap = capacity_rows(table, args.online, args.oracles)
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "capacity.md", capacity_markdown(cap))
        atomic_write_text(args.out / "capacity.json", json.dumps(cap, indent=1) + "\n")
        for w in args.window_s:
            path = args.out / f"windowed_{w:g}s.png"
            if not plot_windowed(path, table, [args.online, *args.oracles], w):
                raise ValueError(f"{args.table}: no part has binned counts (extra.bins) to plot")
            print(path)
    except (ValueError, OSError, KeyError, json.JSONDecodeError) as e:
        print(f"error: {' '.join(str(e).split()) or type(e).__name__}", file=sys.stderr)
        return 2
    print(args.out / "capacity.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The table's plot: mIoU against teacher frames (%) for every method, one panel per stream plus Overall."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jitnet_jax.data.label_store import atomic_write_bytes
from jitnet_jax.eval.table.methods import Method


def plot(path: Path, results: dict[str, Any], ms: Sequence[Method], ov: dict[str, Any]) -> None:
    """mIoU against teacher % for every method, one panel per stream plus Overall."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (k, {m: v["methods"][m]["summary"] for m in v["methods"]}) for k, v in results["streams"].items()
    ]
    panels.append(("Overall", {k: v for k, v in ov.items() if k != "teacher"}))
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 4 * nrows), squeeze=False)
    markers = "os^vD<>pP*Xh"
    for ax, (title, data) in zip(axes.ravel(), panels):
        for i, m in enumerate(ms):
            if m.name in data:
                d = data[m.name]
                ax.scatter(
                    100 * d["teacher_fraction"], d["miou"], marker=markers[i % len(markers)], label=m.name
                )
        ax.set_title(title)
        ax.set_xlabel("teacher frames (%)")
        ax.set_ylabel("mIoU")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())

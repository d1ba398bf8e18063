"""Timeline plot: a live run's audited frames, and a run whose accuracy was not measured."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.visualize import plot_timeline, windowed_miou


def _per_frame(n: int = 64, c: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "frame": np.arange(n),
        "teacher": np.arange(n) % 8 == 0,
        "updates": (np.arange(n) % 8 == 0).astype(np.int32),
        "delta": np.full(n, 8, np.int32),
        "tp": rng.integers(0, 50, (n, c)),
        "fp": rng.integers(0, 10, (n, c)),
        "fn": rng.integers(0, 10, (n, c)),
    }


def test_timeline_with_audited_frames_and_without_accuracy(tmp_path) -> None:
    pf = _per_frame()
    scored = pf["frame"] % 8 == 4
    for name, mask in (("all", None), ("audit", scored), ("none", np.zeros(64, bool))):
        path = plot_timeline(pf, tmp_path / f"{name}.png", window=16, scored=mask)
        assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="scored must have shape"):
        plot_timeline(pf, tmp_path / "x.png", scored=scored[:10])


def test_windowed_miou_of_masked_counts_uses_only_scored_rows() -> None:
    pf = _per_frame(16)
    keep = np.arange(16) < 8
    counts = [np.where(keep[:, None], pf[k], 0) for k in ("tp", "fp", "fn")]
    _, masked = windowed_miou(*counts, 16)
    _, first_half = windowed_miou(pf["tp"][:8], pf["fp"][:8], pf["fn"][:8], 8)
    np.testing.assert_allclose(masked, first_half)

"""Tests of the visualisation helpers (colours, streaming side-by-side video, timeline plot)."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest

from experiments.visualize import (
    IGNORE_COLOR,
    PALETTE,
    TEACHER_MARK,
    VideoWriter,
    colorize,
    plot_timeline,
    side_by_side,
    windowed_miou,
    write_side_by_side,
)
from jitnet_jax.data.types import IGNORE_LABEL


def test_colorize_shapes_and_palette():
    lab = np.array([[0, 1, 2], [3, IGNORE_LABEL, 7]], np.uint8)
    rgb = colorize(lab, num_classes=4)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0], PALETTE[:3])
    np.testing.assert_array_equal(rgb[1, 0], PALETTE[3])
    np.testing.assert_array_equal(rgb[1, 1], IGNORE_COLOR)  # ignore label
    np.testing.assert_array_equal(rgb[1, 2], IGNORE_COLOR)  # out of range for C=4
    assert rgb[0, 0].max() < 40  # background is black-ish
    seq = colorize(np.stack([lab, lab]), num_classes=4)
    assert seq.shape == (2, 2, 3, 3)
    np.testing.assert_array_equal(seq[1], rgb)
    assert len({tuple(c) for c in colorize(np.arange(30)[None], 30)[0]}) > 15  # many classes cycle
    with pytest.raises(ValueError):
        colorize(np.zeros(5, np.uint8), 4)


def test_side_by_side_marks_teacher_frames():
    t, h, w = 3, 20, 30
    frames = np.full((t, h, w, 3), 100, np.uint8)
    lab = np.zeros((t, h, w), np.uint8)
    out = side_by_side(frames, lab, lab + 1, np.array([True, False, True]), num_classes=4)
    assert out.shape == (t, h, 3 * w, 3)
    np.testing.assert_array_equal(out[:, :, :w], frames)
    np.testing.assert_array_equal(out[1, 0, w], PALETTE[0])
    np.testing.assert_array_equal(out[0, 0, w], TEACHER_MARK)
    np.testing.assert_array_equal(out[0, h // 2, 2 * w + w // 2], PALETTE[1])


def test_video_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    t, h, w = 8, 48, 64
    path = tmp_path / "sub" / "sbs.mp4"
    with write_side_by_side(path, fps=10, num_classes=4) as vw:
        for _ in range(2):
            frames = rng.integers(0, 255, (t, h, w, 3), dtype=np.uint8)
            labels = rng.integers(0, 4, (t, h, w), dtype=np.uint8)
            valid = np.ones(t, bool)
            valid[-2:] = False  # padding must be skipped
            vw.write(frames, labels, labels, np.arange(t) % 3 == 0, valid=valid)
    assert vw.frames_written == 12
    video = iio.imread(path)
    assert video.shape == (12, h, 3 * w, 3)


def test_video_odd_size_is_padded(tmp_path):
    path = tmp_path / "odd.mp4"
    with VideoWriter(path, fps=5, num_classes=3) as vw:
        vw.write(
            np.zeros((3, 15, 21, 3), np.uint8),
            np.zeros((3, 15, 21), np.uint8),
            np.ones((3, 15, 21), np.uint8),
            np.zeros(3, bool),
        )
        with pytest.raises(ValueError):
            vw.write_frames(np.zeros((1, 16, 64, 3), np.uint8))
    video = iio.imread(path)
    assert video.shape == (3, 16, 64, 3)


def test_windowed_miou():
    n, c = 10, 3
    tp, fp, fn = (np.zeros((n, c), np.int64) for _ in range(3))
    tp[:5, 1], fp[:5, 1] = 3, 1  # window 0: class 1 IoU 3/4, class 2 absent -> mIoU 0.75
    tp[5:, 1], fn[5:, 2] = 1, 1  # window 1: class 1 IoU 1, class 2 IoU 0 -> 0.5
    starts, miou = windowed_miou(tp, fp, fn, window=5)
    np.testing.assert_array_equal(starts, [0, 5])
    np.testing.assert_allclose(miou, [0.75, 0.5])
    _, miou = windowed_miou(np.zeros((4, 2)), np.zeros((4, 2)), np.zeros((4, 2)), window=3)
    assert np.isnan(miou).all() and miou.shape == (2,)


def test_plot_timeline(tmp_path):
    rng = np.random.default_rng(0)
    n, c = 300, 4
    per_frame = {
        "frame": np.arange(n),
        "teacher": rng.random(n) < 0.1,
        "updates": rng.integers(0, 3, n),
        "delta": np.repeat(rng.integers(1, 64, n // 30), 30),
        "tp": rng.integers(0, 500, (n, c)),
        "fp": rng.integers(0, 100, (n, c)),
        "fn": rng.integers(0, 100, (n, c)),
    }
    per_frame["tp"][:60, 2] = per_frame["fp"][:60, 2] = per_frame["fn"][:60, 2] = 0  # absent class
    out = plot_timeline(per_frame, tmp_path / "plots" / "timeline.png", window=30, title="t", cuts=(150,))
    assert out.exists() and out.stat().st_size > 10_000
    img = iio.imread(out)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 400
    with pytest.raises(KeyError):
        plot_timeline({"frame": np.arange(3)}, tmp_path / "bad.png")

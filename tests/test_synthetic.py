"""Tests of the procedural synthetic stream (determinism, laziness, labels/region maps, scene cut)."""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest

from jitnet_jax.data.synthetic import CLASS_NAMES, SyntheticStream
from jitnet_jax.data.types import IGNORE_LABEL, StreamSource

H, W = 72, 128  # small frames keep the tests fast; the generator is size-agnostic


def small(**kw) -> SyntheticStream:
    kw.setdefault("num_frames", 200)
    return SyntheticStream(height=H, width=W, **kw)


def test_info_and_protocol():
    s = SyntheticStream()
    assert isinstance(s.info.num_frames, int) and s.info.num_frames == 1500
    assert (s.info.height, s.info.width, s.info.fps) == (180, 320, 30.0)
    assert s.info.class_names == CLASS_NAMES and s.info.class_names[0] == "background"
    assert s.info.num_classes == 4 and s.info.teacher == "synthetic-exact"
    assert s.cuts == (750,)
    source: StreamSource = s  # structural typing: must type-check as a StreamSource
    assert source.info is s.info


def test_chunk_shapes_and_dtypes():
    c = next(small().chunks(8))
    assert c.frames.shape == (8, H, W, 3) and c.frames.dtype == np.uint8
    assert c.labels.shape == (8, H, W) and c.labels.dtype == np.uint8
    assert c.regions.shape == (8, H, W) and c.regions.dtype == np.uint8  # region map
    assert c.valid.dtype == bool and c.valid.all() and c.start == 0
    assert c.labels.max() < len(CLASS_NAMES)


def test_deterministic_given_seed():
    a = next(small(seed=3).chunks(6, start=40))
    b = next(small(seed=3).chunks(6, start=40))
    c = next(small(seed=4).chunks(6, start=40))
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.regions, b.regions)
    assert np.mean(a.frames != c.frames) > 0.5


def test_random_access_equals_sequential():
    s = small(num_frames=120, cuts=(50,))
    seq = list(s.chunks(16))
    frames = np.concatenate([c.frames for c in seq])[:120]
    labels = np.concatenate([c.labels for c in seq])[:120]
    weights = np.concatenate([c.regions for c in seq])[:120]
    # A fresh instance (empty caches), starting in the second scene, then going back to the first.
    fresh = small(num_frames=120, cuts=(50,))
    for start in (77, 45, 3):
        c = next(fresh.chunks(10, start=start))
        np.testing.assert_array_equal(c.frames, frames[start : start + 10])
        np.testing.assert_array_equal(c.labels, labels[start : start + 10])
        np.testing.assert_array_equal(c.regions, weights[start : start + 10])
        assert c.start == start


def test_last_chunk_padding():
    s = small(num_frames=50)
    chunks = list(s.chunks(16, start=5))
    assert [c.start for c in chunks] == [5, 21, 37]
    last = chunks[-1]
    assert last.valid.tolist() == [True] * 13 + [False] * 3
    assert (last.labels[13:] == IGNORE_LABEL).all()
    assert (last.regions[13:] == 0).all() and (last.frames[13:] == 0).all()
    assert last.regions[:13].min() > 0
    np.testing.assert_array_equal(last.frames[:13], s.clip(37, 50)[0])
    with pytest.raises(ValueError):
        next(s.chunks(16, start=50))


def test_box_regions_cover_foreground_and_all_classes_appear():
    s = small(num_frames=300)
    labels, weights = [], []
    for c in s.chunks(50):
        labels.append(c.labels[c.valid])
        weights.append(c.regions[c.valid])
    lab, wt = np.concatenate(labels), np.concatenate(weights)
    assert set(np.unique(wt).tolist()) == {1, 2}  # background / inside a dilated box
    assert (wt[lab > 0] == 2).all()
    counts = np.bincount(lab.ravel(), minlength=4)
    assert counts.size == 4 and (counts > 0).all(), counts
    # Boxes are dilated: strictly more fg-weighted pixels than foreground pixels, but not the whole frame.
    fg_frac, w_frac = (lab > 0).mean(), (wt == 2).mean()
    assert fg_frac < w_frac < 0.8
    # Every frame has some objects in view on average, and background dominates.
    assert 0.03 < fg_frac < 0.4


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return rows[0], rows[-1], cols[0], cols[-1]


def test_weight_boxes_are_dilated():
    """The fg-weight region extends beyond the visible objects (boxes dilated 15% per side)."""
    s = small(num_frames=60)
    _, lab, wt = s.clip(0, 60)
    larger = 0
    for label, weight in zip(lab, wt):
        if not (label > 0).any():
            continue
        ly0, ly1, lx0, lx1 = _bbox(label > 0)
        wy0, wy1, wx0, wx1 = _bbox(weight == 2)
        assert wy0 <= ly0 and wx0 <= lx0 and wy1 >= ly1 and wx1 >= lx1
        larger += (wy0, wx0, wy1, wx1) != (ly0, lx0, ly1, lx1)
    assert larger >= 30


def test_objects_occlude_each_other():
    """Objects of different classes overlap: somewhere two foreground labels are horizontally adjacent."""
    s = small(num_frames=300, density=2.0)
    _, lab, _ = s.clip(0, 300)
    left, right = lab[:, :, :-1], lab[:, :, 1:]
    touching = (left > 0) & (right > 0) & (left != right)
    assert touching.any(axis=(1, 2)).sum() >= 50


def test_scene_cut_changes_background():
    s = small(num_frames=200, cuts=(100,))

    def bg_stats(start: int, stop: int) -> np.ndarray:
        f, lab, _ = s.clip(start, stop)
        bg = f[lab == 0].astype(np.float64)
        return np.concatenate([bg.mean(0), bg.std(0)])

    before, before2, after = bg_stats(80, 100), bg_stats(60, 80), bg_stats(100, 120)
    jump = np.abs(after - before).max()
    drift = np.abs(before - before2).max()
    assert jump > 10.0 and jump > 3 * drift, (jump, drift)
    assert s.segment_of(99) == 0 and s.segment_of(100) == 1


def test_scene_moves():
    """Objects move and the camera pans: consecutive frames differ, a little, everywhere in time."""
    f, lab, _ = small(num_frames=60, cuts=()).clip(0, 60)
    diff = np.abs(f[1:].astype(np.int16) - f[:-1]).mean(axis=(1, 2, 3))
    assert (diff > 0.5).all() and (diff < 40).all()
    assert (lab[1:] != lab[:-1]).any(axis=(1, 2)).all()


def test_no_cut_option_and_validation():
    assert small(cuts=()).cuts == ()
    with pytest.raises(ValueError):
        small(cuts=(0,))
    with pytest.raises(ValueError):
        small(cuts=(150, 100))
    with pytest.raises(ValueError):
        small(num_frames=0)


def test_lazy_for_huge_stream():
    """A 100k-frame stream (2.8 GB if materialised) is built and read at its end in a few MB."""
    tracemalloc.start()
    try:
        s = SyntheticStream(num_frames=100_000, height=H, width=W)
        it = s.chunks(32, start=99_990)
        c = next(it)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert s.info.num_frames == 100_000 and s.cuts == (50_000,)
    assert c.start == 99_990 and c.valid.sum() == 10 and c.frames[:10].std() > 5
    assert next(it, None) is None
    assert peak < 100e6, peak
    # Chunks are produced one at a time from a generator.
    assert [c.start for c in itertools.islice(s.chunks(4), 2)] == [0, 4]

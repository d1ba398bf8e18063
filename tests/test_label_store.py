"""Label store: round trip, random access, resume after a crash, refusal of incomplete/corrupt stores."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from jitnet_jax.data.label_store import (
    DataError,
    LabelStore,
    LabelStoreWriter,
    StoreHeader,
    chunk_file_name,
    store_is_complete,
)

H, W, N, C = 6, 8, 10, 4


def header(**kw) -> StoreHeader:
    base = dict(
        stream="s",
        num_frames=N,
        height=H,
        width=W,
        fps=25.0,
        class_names=("background", "person"),
        class_groups=(("person",),),
        teacher="test",
        videos=("/x/a.mp4",),
        video_frames=(N,),
        chunk_size=C,
        params=(("dilation", 0.15),),
    )
    base.update(kw)
    return StoreHeader(**base)


def data():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (N, H, W)).astype(np.uint8)
    labels[:, 0, 0] = np.arange(N)  # frame id marker
    weights = rng.choice([0, 1, 2], (N, H, W)).astype(np.uint8)  # region map
    return labels, weights


def write_all(d, labels, weights, stop_after=None):
    w = LabelStoreWriter(d, header())
    written = []
    for i in w.missing_chunks():
        if stop_after is not None and len(written) == stop_after:
            return w, written  # simulated crash: no finalize
        a, b = w.chunk_range(i)
        w.write_chunk(i, labels[a:b], weights[a:b])
        written.append(i)
    w.finalize()
    return w, written


def test_round_trip_and_random_access(tmp_path):
    labels, weights = data()
    write_all(tmp_path, labels, weights)
    assert store_is_complete(tmp_path)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["complete"] and meta["version"] == 2 and len(meta["chunks"]) == 3
    assert [c["count"] for c in meta["chunks"]] == [4, 4, 2]
    s = LabelStore(tmp_path, cache_chunks=1)
    assert s.info.num_frames == N and s.info.class_names == ("background", "person")
    for t in (7, 0, 9, 3):
        lab, wt = s.frame(t)
        np.testing.assert_array_equal(lab, labels[t])
        np.testing.assert_array_equal(wt, weights[t])
        assert lab.dtype == np.uint8 and wt.dtype == np.uint8
    lab, wt = s.frames(3, 10)  # crosses all three chunks
    np.testing.assert_array_equal(lab, labels[3:10])
    np.testing.assert_array_equal(wt, weights[3:10])
    assert len(s._cache) == 1  # LRU bounded
    s.verify()


def test_frame_out_of_range(tmp_path):
    write_all(tmp_path, *data())
    s = LabelStore(tmp_path)
    with pytest.raises(DataError, match="frame 10 out of range"):
        s.frame(10)
    with pytest.raises(DataError, match="frame -1 out of range"):
        s.frame(-1)


def test_resume_after_crash_keeps_finished_chunks(tmp_path):
    labels, weights = data()
    _, written = write_all(tmp_path, labels, weights, stop_after=2)
    assert written == [0, 1]
    assert not store_is_complete(tmp_path)
    with pytest.raises(DataError, match="incomplete"):
        LabelStore(tmp_path)
    stamps = {i: (tmp_path / chunk_file_name(i)).stat().st_mtime_ns for i in (0, 1)}
    (tmp_path / ".labels_00002.npz.abc123.tmp").write_bytes(b"half written")  # left by a kill
    _, written2 = write_all(tmp_path, labels, weights)
    assert written2 == [2]  # finished chunks are not recomputed
    assert not list(tmp_path.glob("*.tmp"))
    assert {i: (tmp_path / chunk_file_name(i)).stat().st_mtime_ns for i in (0, 1)} == stamps
    np.testing.assert_array_equal(LabelStore(tmp_path).frames(0, N)[0], labels)


def test_resume_rewrites_corrupt_chunk(tmp_path):
    labels, weights = data()
    write_all(tmp_path, labels, weights, stop_after=2)
    (tmp_path / chunk_file_name(1)).write_bytes(b"garbage")
    _, written = write_all(tmp_path, labels, weights)
    assert written == [1, 2]


def test_resume_with_other_settings_refused(tmp_path):
    write_all(tmp_path, *data(), stop_after=1)
    with pytest.raises(DataError, match="different chunk_size"):
        LabelStoreWriter(tmp_path, dataclasses.replace(header(), chunk_size=5))


def test_checksum_mismatch_refused(tmp_path):
    labels, weights = data()
    write_all(tmp_path, labels, weights)
    other = tmp_path / "other"
    lab2 = labels.copy()
    lab2[5] = 1
    write_all(other, lab2, weights)
    # swap in a valid npz with different content
    (tmp_path / chunk_file_name(1)).write_bytes((other / chunk_file_name(1)).read_bytes())
    s = LabelStore(tmp_path)
    s.frame(0)
    with pytest.raises(DataError, match=r"labels_00001.npz: checksum mismatch"):
        s.frame(5)
    with pytest.raises(DataError, match="checksum mismatch"):
        s.verify()


def test_version_and_missing_meta(tmp_path):
    with pytest.raises(DataError, match="meta.json not found"):
        LabelStore(tmp_path)
    write_all(tmp_path, *data())
    meta = json.loads((tmp_path / "meta.json").read_text())
    meta["version"] = 99
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="format version 99 is not supported"):
        LabelStore(tmp_path)
    meta["version"] = 1  # float loss weights: one line naming the fix
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(
        DataError, match="version 1 .float loss weights. is no longer read; re-run the precompute"
    ):
        LabelStore(tmp_path)


def test_write_chunk_validates_shapes(tmp_path):
    w = LabelStoreWriter(tmp_path, header())
    with pytest.raises(DataError, match="expected \\(4, 6, 8\\)"):
        w.write_chunk(0, np.zeros((3, H, W), np.uint8), np.zeros((3, H, W), np.uint8))
    with pytest.raises(DataError, match="regions uint8 in 0..2"):  # a float weight map is not a region map
        w.write_chunk(0, np.zeros((4, H, W), np.uint8), np.full((4, H, W), 10.0, np.float32))
    with pytest.raises(DataError, match="cannot finalize"):
        w.finalize()

"""StoreSource: frames paired with store labels by index, padding, skip-ahead, misalignment errors."""

from __future__ import annotations

import imageio_ffmpeg
import numpy as np
import pytest

from jitnet_jax.data.label_store import LabelStoreWriter, StoreHeader
from jitnet_jax.data.store_source import StoreSource
from jitnet_jax.data.types import IGNORE_LABEL
from jitnet_jax.data.video import VideoError

H, W = 24, 32  # store resolution (videos are 48x64)


def write_video(path, n, h=48, w=64, offset=0):
    """Frame t has brightness 10 * (offset + t) (decodes to within a few levels)."""
    gen = imageio_ffmpeg.write_frames(str(path), (w, h), fps=10, macro_block_size=16, quality=9)
    gen.send(None)
    for t in range(n):
        gen.send(np.full((h, w, 3), 10 * (offset + t), np.uint8).tobytes())
    gen.close()


def make_store(tmp_path, counts=(7, 5), chunk=4):
    videos = []
    for k, n in enumerate(counts):
        videos.append(tmp_path / f"v{k}.mp4")
        write_video(videos[-1], n, offset=sum(counts[:k]))
    total = sum(counts)
    h = StoreHeader(
        "syn",
        total,
        H,
        W,
        10.0,
        ("background", "person"),
        (("person",),),
        "test",
        tuple(str(v) for v in videos),
        tuple(counts),
        chunk,
    )
    w = LabelStoreWriter(tmp_path / "store", h)
    for i in w.missing_chunks():
        a, b = w.chunk_range(i)
        labels = np.broadcast_to(np.arange(a, b, dtype=np.uint8)[:, None, None], (b - a, H, W)).copy()
        w.write_chunk(i, labels, np.full((b - a, H, W), 2, np.uint8))  # region map: all inside a box
    w.finalize()
    return tmp_path / "store", videos


def test_chunks_align_frames_and_labels(tmp_path):
    store, _ = make_store(tmp_path)
    src = StoreSource(store)
    assert src.info.num_frames == 12 and (src.info.height, src.info.width) == (H, W)
    chunks = list(src.chunks(5))
    assert [c.start for c in chunks] == [0, 5, 10]
    last = chunks[-1]
    assert last.valid.tolist() == [True, True, False, False, False]
    assert (last.labels[2:] == IGNORE_LABEL).all() and (last.regions[2:] == 0).all()
    for c in chunks:
        assert c.frames.shape == (5, H, W, 3) and c.frames.dtype == np.uint8
        assert c.labels.dtype == np.uint8 and c.regions.dtype == np.uint8
        for j in np.flatnonzero(c.valid):
            t = c.start + j
            assert (c.labels[j] == t).all()
            assert abs(float(c.frames[j].mean()) - 10 * t) < 4, (t, c.frames[j].mean())


def test_start_skips_ahead(tmp_path):
    store, _ = make_store(tmp_path)
    chunks = list(StoreSource(store).chunks(3, start=8))
    assert [c.start for c in chunks] == [8, 11]
    assert chunks[0].labels[:, 0, 0].tolist() == [8, 9, 10]
    assert abs(float(chunks[0].frames[0].mean()) - 80) < 4
    assert chunks[1].valid.tolist() == [True, False, False]


def test_short_video_is_an_error_naming_file_and_frame(tmp_path):
    store, videos = make_store(tmp_path)
    short = tmp_path / "short.mp4"
    write_video(short, 6)
    with pytest.raises(
        VideoError, match=r"short.mp4: decoded only 6 frames but 7 were expected \(missing from frame 6\)"
    ):
        list(StoreSource(store, video_paths=[short, videos[1]]).chunks(4))


def test_long_video_is_an_error(tmp_path):
    store, videos = make_store(tmp_path)
    long = tmp_path / "long.mp4"
    write_video(long, 9)
    with pytest.raises(VideoError, match=r"long.mp4: has more frames than the 7 expected \(frame 7 exists\)"):
        list(StoreSource(store, video_paths=[long, videos[1]]).chunks(4))


def test_missing_video(tmp_path):
    store, videos = make_store(tmp_path)
    videos[1].unlink()
    with pytest.raises(VideoError, match="v1.mp4: video recorded in .* not found"):
        StoreSource(store)


def test_real_lvs_store(shared_data, tmp_path):
    from teacher.precompute import ensure_store

    out = ensure_store(
        tmp_path / "st",
        lvs=shared_data / "lvs_mini",
        stream="residential_street1",
        height=45,
        width=80,
        chunk_size=16,
        max_frames=40,
        progress=False,
    )
    src = StoreSource(out)
    chunks = list(src.chunks(16, start=8))
    assert [c.start for c in chunks] == [8, 24]
    assert chunks[-1].valid.sum() == 16
    labels = np.concatenate([c.labels for c in chunks])
    names = src.info.class_names  # the stream's groups come from the data's streams.json
    assert (labels == names.index("car_bus_truck")).any()  # cars in a residential street
    assert set(np.unique(labels)) <= set(range(len(names)))

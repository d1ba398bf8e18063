"""LVS stream reading: real lvs_mini streams, and broken streams built in tmp_path."""

from __future__ import annotations

import shutil

import imageio_ffmpeg
import numpy as np
import pytest

from jitnet_jax.data.label_store import DataError
from teacher.lvs import TEACHER_PREFIX, find_chunks, iter_detections, load_detections, open_stream


def write_video(path, n, h=48, w=64):
    """n frames whose brightness encodes the frame index (10 * t)."""
    gen = imageio_ffmpeg.write_frames(str(path), (w, h), fps=10, macro_block_size=16, quality=9)
    gen.send(None)
    for t in range(n):
        gen.send(np.full((h, w, 3), (10 * t) % 250, np.uint8).tobytes())
    gen.close()


def det(classes=(1,), shape_masks=(28, 28)):
    n = len(classes)
    return (
        np.tile(np.array([[0.1, 0.1, 0.6, 0.6]]), (n, 1)),
        np.asarray(classes, np.int32),
        np.full(n, 0.9, np.float32),
        np.ones((n, *shape_masks), np.float32),
    )


def make_stream(root, name="s1", counts=(6, 4), dicts=None):
    folder = root / name
    folder.mkdir(parents=True)
    for k, n in enumerate(counts):
        write_video(folder / f"{name}{k:03d}.mp4", n)
        d = dicts[k] if dicts is not None else {i: det() for i in range(n)}
        np.save(folder / f"{TEACHER_PREFIX}{name}{k:03d}.npy", d, allow_pickle=True)
    return folder


def test_real_stream_reads(shared_data):
    s = open_stream(shared_data / "lvs_mini", "highway_cctv1")
    assert s.frame_counts == (400, 348) and s.num_frames == 748
    assert (s.height, s.width) == (240, 320) and s.fps == pytest.approx(25, abs=0.1)
    dets = list(iter_detections(s, 398, 403))  # crosses the chunk boundary
    assert len(dets) == 5
    for d in dets:
        assert d.boxes.shape[1] == 4 and ((d.classes >= 1) & (d.classes <= 80)).all()
        assert (d.boxes >= 0).all() and (d.boxes <= 1).all()
    first_of_second = load_detections(s.chunks[1].teacher)[0]
    np.testing.assert_array_equal(dets[2].classes, first_of_second.classes)


def test_synthetic_stream_ok(tmp_path):
    make_stream(tmp_path)
    s = open_stream(tmp_path, "s1")
    assert s.frame_counts == (6, 4)
    assert len(list(iter_detections(s))) == 10


def test_missing_stream_and_teacher_file(tmp_path):
    with pytest.raises(DataError, match="LVS stream folder not found"):
        open_stream(tmp_path, "nope")
    folder = make_stream(tmp_path)
    (folder / f"{TEACHER_PREFIX}s1001.npy").unlink()
    with pytest.raises(
        DataError, match=rf"{TEACHER_PREFIX}s1001.npy: teacher file missing for video chunk s1001.mp4"
    ):
        find_chunks(tmp_path, "s1")


def test_missing_chunk_in_sequence(tmp_path):
    folder = make_stream(tmp_path, counts=(3, 3, 3))
    (folder / "s1001.mp4").unlink()
    (folder / f"{TEACHER_PREFIX}s1001.npy").unlink()
    with pytest.raises(DataError, match=r"s1001.mp4: video chunk missing \(chunks jump from 0 to 2\)"):
        find_chunks(tmp_path, "s1")


def test_frame_count_mismatch_names_file(tmp_path):
    make_stream(tmp_path, counts=(6, 4), dicts=[{i: det() for i in range(6)}, {i: det() for i in range(5)}])
    with pytest.raises(DataError, match=r"s1001.npy: has 5 frames but video s1001.mp4 decodes to 4"):
        open_stream(tmp_path, "s1")


def test_missing_frame_key(tmp_path):
    d = {i: det() for i in range(4) if i != 2}
    d[7] = det()
    make_stream(tmp_path, counts=(4,), dicts=[d])
    with pytest.raises(DataError, match=r"s1000.npy: frame 2 has no detections entry"):
        load_detections(tmp_path / "s1" / f"{TEACHER_PREFIX}s1000.npy", 4)


def test_unknown_class_and_bad_shapes(tmp_path):
    d = {0: det(), 1: det(classes=(1, 81)), 2: det()}
    make_stream(tmp_path, counts=(3,), dicts=[d])
    s = open_stream(tmp_path, "s1")
    with pytest.raises(DataError, match=r"s1000.npy: frame 1: unknown class id 81") as e:
        list(iter_detections(s))
    assert "\n" not in str(e.value)
    shutil.rmtree(tmp_path / "s1")
    make_stream(tmp_path, counts=(3,), dicts=[{0: det(), 1: det(), 2: det(shape_masks=(28,))}])
    with pytest.raises(DataError, match=r"frame 2: masks have shape \(1, 28\)"):
        list(iter_detections(open_stream(tmp_path, "s1")))


def test_truncated_video_and_teacher_file(tmp_path):
    folder = make_stream(tmp_path, counts=(20,))
    npy = folder / f"{TEACHER_PREFIX}s1000.npy"
    data = npy.read_bytes()
    npy.write_bytes(data[: len(data) - 40])
    with pytest.raises(DataError, match="s1000.npy: corrupt or truncated pickle"):
        open_stream(tmp_path, "s1")
    np.save(npy, {i: det() for i in range(20)}, allow_pickle=True)
    video = folder / "s1000.mp4"
    vdata = video.read_bytes()
    video.write_bytes(vdata[: len(vdata) // 3])
    with pytest.raises(DataError, match="s1000"):
        open_stream(tmp_path, "s1")

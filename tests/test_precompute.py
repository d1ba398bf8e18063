"""python -m teacher.precompute: LVS slice, resume after interruption, teachers, exports, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import imageio_ffmpeg
import numpy as np
import pytest

from jitnet_jax.data.label_store import LabelStore, LabelStoreWriter, chunk_file_name, store_is_complete
from teacher import precompute
from teacher.class_groups import coco_to_label, group_names, stream_groups
from teacher.exports import COCO90_IDS
from teacher.lvs import iter_detections, open_stream
from teacher.rasterize import rasterize

REPO_ARGS = ["--height", "45", "--width", "80", "--chunk-size", "16", "--no-progress"]


def lvs_args(shared_data, out, n=40):
    return [
        "--lvs",
        str(shared_data / "lvs_mini"),
        "--stream",
        "residential_street1",
        "--max-frames",
        str(n),
        "--out",
        str(out),
        *REPO_ARGS,
    ]


def test_cli_lvs_slice_matches_direct_rasterisation(shared_data, tmp_path, capsys):
    out = tmp_path / "store"
    assert precompute.main(lvs_args(shared_data, out)) == 0
    assert capsys.readouterr().out.strip() == str(out)
    store = LabelStore(out)
    assert store.num_frames == 40 and store.header.chunk_size == 16
    groups = stream_groups("residential_street1", shared_data / "lvs_mini")  # from the data's streams.json
    assert store.info.class_names == group_names(groups)
    assert "car_bus_truck" in store.info.class_names
    s = open_stream(shared_data / "lvs_mini", "residential_street1", check_frames=False)
    lut = coco_to_label(groups)
    for t, inst in enumerate(iter_detections(s, 0, 40)):
        lab, wt = rasterize(inst, 45, 80, lut)
        got_l, got_w = store.frame(t)
        np.testing.assert_array_equal(got_l, lab)
        np.testing.assert_array_equal(got_w, wt)


def test_cli_resumes_without_recomputing(shared_data, tmp_path, monkeypatch):
    out = tmp_path / "store"
    real_write = LabelStoreWriter.write_chunk
    calls: list[int] = []

    def crash_after_first(self, index, labels, weights):
        if calls:
            raise KeyboardInterrupt  # simulated kill in the middle of the run
        calls.append(index)
        real_write(self, index, labels, weights)

    monkeypatch.setattr(LabelStoreWriter, "write_chunk", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        precompute.main(lvs_args(shared_data, out))
    assert calls == [0] and not store_is_complete(out)
    stamp = (out / chunk_file_name(0)).stat().st_mtime_ns

    second: list[int] = []

    def record(self, index, labels, weights):
        second.append(index)
        real_write(self, index, labels, weights)

    monkeypatch.setattr(LabelStoreWriter, "write_chunk", record)
    assert precompute.main(lvs_args(shared_data, out)) == 0
    assert second == [1, 2]
    assert (out / chunk_file_name(0)).stat().st_mtime_ns == stamp
    assert store_is_complete(out)
    # a third run finds the complete store and writes nothing
    second.clear()
    assert precompute.main(lvs_args(shared_data, out)) == 0
    assert second == []


def test_cli_errors_are_one_line_exit_2(shared_data, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "teacher.precompute",
        "--lvs",
        str(shared_data / "lvs_mini"),
        "--stream",
        "nope",
        "--out",
        str(tmp_path / "o"),
        "--no-progress",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=precompute.__file__.rsplit("/teacher/", 1)[0])
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "nope: LVS stream folder not found" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--groups", "person;cars"], "unknown COCO class name 'cars'"),
        (["--stream", "x"], "give exactly one source"),
    ],
)
def test_cli_argument_errors(shared_data, tmp_path, capsys, args, message):
    base = [] if "--stream" in args else ["--lvs", str(shared_data / "lvs_mini"), "--stream", "bikes1"]
    assert precompute.main([*base, *args, "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_other_settings_on_existing_store_refused(shared_data, tmp_path, capsys):
    out = tmp_path / "store"
    assert precompute.main(lvs_args(shared_data, out, n=20)) == 0
    assert precompute.main([*lvs_args(shared_data, out, n=20), "--score-threshold", "0.7"]) == 2
    assert "different params" in capsys.readouterr().err
    # loss weights are run settings now: the flag says where it went, in one line
    assert precompute.main([*lvs_args(shared_data, out, n=20), "--fg-weight", "5"]) == 2
    err = capsys.readouterr().err
    assert "--fg-weight is a run setting" in err and err.count("\n") == 1


def test_cli_deeplab_teacher_on_video(shared_data, tmp_path):
    pytest.importorskip("ai_edge_litert")
    out = tmp_path / "dl"
    args = [
        "--video",
        str(shared_data / "clips" / "highway_cctv_320x240.avi"),
        "--teacher",
        "deeplab",
        "--model",
        str(shared_data / "models" / "deeplabv3_mnv2_pascal_quant.tflite"),
        "--groups",
        "person;car,bus,truck",
        "--max-frames",
        "3",
        "--out",
        str(out),
        *REPO_ARGS,
    ]
    assert precompute.main(args) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["teacher"] == "deeplab:deeplabv3_mnv2_pascal_quant.tflite" and meta["num_frames"] == 3
    assert meta["videos"][0]["frames"] == 748
    labels, _ = LabelStore(out).frames(0, 3)
    assert labels.shape == (3, 45, 80)


def _video(path, n):
    gen = imageio_ffmpeg.write_frames(str(path), (64, 48), fps=10, macro_block_size=16)
    gen.send(None)
    for _ in range(n):
        gen.send(np.zeros((48, 64, 3), np.uint8).tobytes())
    gen.close()


def test_tf_export_and_detectron_give_same_labels(tmp_path):
    video = tmp_path / "cam.mp4"
    _video(video, 5)
    tf_dir = tmp_path / "tf"
    tf_dir.mkdir()
    det_frames = {}
    for t in range(5):
        box = np.array([[0.25, 0.125 * t, 0.75, 0.125 * t + 0.5]], np.float32)  # y1, x1, y2, x2
        np.savez(
            tf_dir / f"frame_{t}.npz",
            detection_boxes=box[None],
            detection_classes=np.array([[3.0]]),
            detection_scores=np.array([[0.9]]),
            detection_masks=np.ones((1, 1, 33, 33), np.float32),
            num_detections=np.array([1.0]),
        )
        px = box[0] * np.array([48, 64, 48, 64])
        det_frames[t] = {
            "pred_boxes": px[[1, 0, 3, 2]][None],
            "pred_classes": np.array([2]),
            "scores": np.array([0.9], np.float32),
            "image_size": np.array([48, 64]),
        }
    np.save(tmp_path / "d2.npy", det_frames, allow_pickle=True)
    common = [
        "--video",
        str(video),
        "--groups",
        "person;car",
        "--height",
        "12",
        "--width",
        "16",
        "--no-progress",
    ]
    assert precompute.main([*common, "--tf-export", str(tf_dir), "--out", str(tmp_path / "a")]) == 0
    assert (
        precompute.main([*common, "--detectron", str(tmp_path / "d2.npy"), "--out", str(tmp_path / "b")]) == 0
    )
    la, _ = LabelStore(tmp_path / "a").frames(0, 5)
    lb, _ = LabelStore(tmp_path / "b").frames(0, 5)
    np.testing.assert_array_equal(la, lb)
    assert (la[0, 3:9, 0:8] == 2).all() and (la[0, :, 8:] == 0).all()
    assert (la[4, 3:9, 8:16] == 2).all()
    assert COCO90_IDS[2] == 3  # TF label map id 3 is car


def test_export_frame_count_mismatch(tmp_path, capsys):
    video = tmp_path / "cam.mp4"
    _video(video, 4)
    np.savez(
        tmp_path / "tf.npz",
        detection_boxes=np.zeros((3, 1, 4)),
        detection_classes=np.ones((3, 1)),
        detection_scores=np.ones((3, 1)),
        num_detections=np.ones(3),
    )
    args = [
        "--video",
        str(video),
        "--tf-export",
        str(tmp_path / "tf.npz"),
        "--groups",
        "person",
        "--out",
        str(tmp_path / "o"),
        "--no-progress",
    ]
    assert precompute.main(args) == 2
    assert "tf.npz: export has 3 frames but video" in capsys.readouterr().err


def test_export_record_conversions():
    from teacher.exports import detectron_record_to_instances, tf_record_to_instances

    # Detectron full-frame mask of the left half of a 40x80 box at rows 10..50, cols 20..100 of 60x120
    full = np.zeros((1, 60, 120), bool)
    full[0, 10:50, 20:60] = True
    rec = {
        "pred_boxes": np.array([[20.0, 10.0, 100.0, 50.0]]),
        "pred_classes": np.array([0]),
        "scores": np.array([0.8]),
        "pred_masks": full,
    }
    inst = detectron_record_to_instances(rec, "d2: frame 0")
    np.testing.assert_allclose(inst.boxes[0], [10 / 60, 20 / 120, 50 / 60, 100 / 120], rtol=1e-6)
    assert inst.classes.tolist() == [1] and inst.masks.shape == (1, 28, 28)
    assert (inst.masks[0, :, :13] > 0.5).all() and (inst.masks[0, :, 15:] < 0.5).all()
    # TF record without batch axis, num_detections cuts padding rows, coco90 ids (90 = toothbrush)
    tf = {
        "detection_boxes": np.array([[0, 0, 1, 1], [0, 0, 0, 0]], np.float32),
        "detection_classes": np.array([90.0, 1.0]),
        "detection_scores": np.array([0.7, 0.0]),
        "num_detections": np.array(1.0),
    }
    inst = tf_record_to_instances(tf, "tf: frame 0")
    assert inst.classes.tolist() == [80] and inst.masks.shape == (1, 28, 28)
    tf["detection_classes"] = np.array([12.0, 1.0])  # id 12 is a gap in the TF COCO label map
    with pytest.raises(ValueError, match="tf: frame 0: unknown class id 12"):
        tf_record_to_instances(tf, "tf: frame 0")


def test_sigkill_then_rerun_continues(shared_data, tmp_path):
    """A real kill (SIGKILL) mid-run leaves an incomplete store; the rerun keeps the finished chunks."""
    import os
    import signal
    import time

    pytest.importorskip("ai_edge_litert")
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "teacher.precompute",
        "--video",
        str(shared_data / "clips" / "parking_lot_overhead.mp4"),
        "--teacher",
        "deeplab",
        "--model",
        str(shared_data / "models" / "deeplabv3_mnv2_pascal_quant.tflite"),
        "--max-frames",
        "16",
        "--chunk-size",
        "4",
        "--height",
        "45",
        "--width",
        "80",
        "--threads",
        "1",
        "--out",
        str(out),
        "--no-progress",
    ]
    cwd = precompute.__file__.rsplit("/teacher/", 1)[0]
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = out / chunk_file_name(0)

    def first_recorded() -> bool:
        try:
            return bool(json.loads((out / "meta.json").read_text())["chunks"][0]["sha256"])
        except (OSError, ValueError, KeyError, IndexError):
            return False

    deadline = time.monotonic() + 120
    while not first_recorded() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if store_is_complete(out):
        pytest.skip("the run finished before it could be killed")
    assert first.exists(), proc.stderr.read().decode()
    meta = json.loads((out / "meta.json").read_text())
    finished = [i for i, c in enumerate(meta["chunks"]) if c["sha256"]]
    assert 0 in finished
    stamps = {i: (out / chunk_file_name(i)).stat().st_mtime_ns for i in finished}
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert store_is_complete(out)
    assert {i: (out / chunk_file_name(i)).stat().st_mtime_ns for i in finished} == stamps
    assert LabelStore(out).frames(0, 16)[0].shape == (16, 45, 80)


def test_cache_key_covers_what_determines_the_labels(shared_data, tmp_path):
    """On-demand stores (``ensure_store`` with a cache dir) are keyed by everything that determines the
    labels: a change of class groups, rasterisation or teacher files selects a new folder (no error), the
    same request reuses the complete store without recomputing."""
    import shutil

    lvs = tmp_path / "lvs"
    lvs.mkdir()
    shutil.copytree(shared_data / "lvs_mini" / "bikes1", lvs / "bikes1")
    shutil.copy(shared_data / "lvs_mini" / "streams.json", lvs / "streams.json")
    for f in (lvs / "bikes1").iterdir():
        f.chmod(0o644)
    cache = tmp_path / "cache"
    kw = dict(lvs=lvs, stream="bikes1", height=24, width=32, chunk_size=8, max_frames=8, progress=False)
    a = precompute.ensure_store(cache_dir=cache, **kw)
    assert a.parent == cache and a.name.startswith("bikes1__lvs__24x32__first8__")
    stamp = (a / "meta.json").stat().st_mtime_ns
    assert precompute.ensure_store(cache_dir=cache, **kw) == a
    assert (a / "meta.json").stat().st_mtime_ns == stamp  # reused, nothing rewritten
    b = precompute.ensure_store(cache_dir=cache, groups="person", **kw)
    c = precompute.ensure_store(cache_dir=cache, params=precompute.RasterParams(score_threshold=0.7), **kw)
    npy = next((lvs / "bikes1").glob("detectron_*.npy"))
    os.utime(npy, ns=(npy.stat().st_atime_ns, npy.stat().st_mtime_ns + 10**9))  # the teacher file changed
    d = precompute.ensure_store(cache_dir=cache, **kw)
    assert len({a, b, c, d}) == 4 and all(store_is_complete(p) for p in (a, b, c, d))
    assert LabelStore(b).info.class_names == ("background", "person")


def test_store_bytes_do_not_depend_on_the_clock(tmp_path, monkeypatch):
    """The same labels give the same chunk files at any time of day: a store is reproducible, so stores
    written by different runs or workers can be compared byte for byte (a guard: chunk bytes must never
    carry a time stamp)."""
    import time

    video = tmp_path / "cam.mp4"
    _video(video, 6)
    det = {
        t: {
            "pred_boxes": np.array([[8.0, 4.0, 40.0, 30.0]]),
            "pred_classes": np.array([2]),
            "scores": np.array([0.9], np.float32),
            "image_size": np.array([48, 64]),
        }
        for t in range(6)
    }
    np.save(tmp_path / "d2.npy", det, allow_pickle=True)
    args = ["--video", str(video), "--detectron", str(tmp_path / "d2.npy"), "--groups", "person;car"]
    args += ["--height", "12", "--width", "16", "--chunk-size", "4", "--no-progress"]
    files = []
    for k, clock in enumerate((1_000_000_000.0, 1_700_000_000.0)):  # 2001 and 2023
        monkeypatch.setattr(time, "time", lambda c=clock: c)
        assert precompute.main([*args, "--out", str(tmp_path / f"s{k}")]) == 0
        monkeypatch.undo()
        files.append({p.name: p.read_bytes() for p in sorted((tmp_path / f"s{k}").glob("*.npz"))})
    assert list(files[0]) == [chunk_file_name(0), chunk_file_name(1)]
    assert files[0] == files[1]
    assert (LabelStore(tmp_path / "s0").frame(0)[0] == 2).any()


def test_resume_adopts_whole_chunk_files_missing_from_meta(shared_data, tmp_path, monkeypatch):
    """Chunk files a killed parallel writer left (written atomically, never recorded in meta.json) are kept
    when they read back whole; a damaged one is recomputed."""
    from jitnet_jax.data.label_store import write_chunk_file

    ref = tmp_path / "ref"
    assert precompute.main(lvs_args(shared_data, ref)) == 0
    out = tmp_path / "store"
    job = precompute.lvs_job(
        shared_data / "lvs_mini", "residential_street1", height=45, width=80, chunk_size=16, max_frames=40
    )
    LabelStoreWriter(out, job.header)  # meta.json of this header, no chunk recorded
    store = LabelStore(ref)
    for i in (0, 2):
        a, b = i * 16, min(i * 16 + 16, 40)
        write_chunk_file(out, job.header, i, *store.frames(a, b))
    (out / chunk_file_name(2)).write_bytes((out / chunk_file_name(2)).read_bytes()[:-20])  # damaged
    stamp = (out / chunk_file_name(0)).stat().st_mtime_ns
    real_write = LabelStoreWriter.write_chunk
    written: list[int] = []

    def record(self, index, labels, weights):
        written.append(index)
        real_write(self, index, labels, weights)

    monkeypatch.setattr(LabelStoreWriter, "write_chunk", record)
    assert precompute.main(lvs_args(shared_data, out)) == 0
    assert written == [1, 2]
    assert (out / chunk_file_name(0)).stat().st_mtime_ns == stamp
    for name in ("meta.json", chunk_file_name(0), chunk_file_name(1), chunk_file_name(2)):
        assert (out / name).read_bytes() == (ref / name).read_bytes()


def test_runner_without_beam_names_the_extra(shared_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "apache_beam", None)  # import apache_beam raises ImportError
    monkeypatch.delitem(sys.modules, "teacher.beam_pipeline", raising=False)
    import teacher

    monkeypatch.delattr(teacher, "beam_pipeline", raising=False)  # so the import really runs again
    assert precompute.main([*lvs_args(shared_data, tmp_path / "o"), "--runner", "direct"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs Apache Beam" in err and "pip install -e '.[beam]'" in err
    assert not (tmp_path / "o").exists()
    # Beam options without --runner are refused by the argument parser
    with pytest.raises(SystemExit):
        precompute.main([*lvs_args(shared_data, tmp_path / "o"), "--direct_num_workers", "2"])


def test_several_sources_one_store_each(shared_data, tmp_path, capsys):
    """Several --stream (or --video) in one single-process command: one store per source, OUT/<stream>."""
    out = tmp_path / "stores"
    args = ["--lvs", str(shared_data / "lvs_mini"), "--stream", "bikes1", "--stream", "parking_lot1"]
    assert precompute.main([*args, "--max-frames", "8", "--out", str(out), *REPO_ARGS]) == 0
    assert capsys.readouterr().out.split() == [str(out / "bikes1"), str(out / "parking_lot1")]
    assert LabelStore(out / "bikes1").num_frames == 8 and LabelStore(out / "parking_lot1").num_frames == 8
    two = ["--video", "a.mp4", "--video", "b.mp4", "--stream", "x", "--teacher", "deeplab"]
    assert precompute.main([*two, "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "--stream names the store of one --video" in capsys.readouterr().err

"""The precompute as an Apache Beam pipeline (``--runner direct``): stores byte-identical to the
single-process path's, several videos in one pipeline, resume after a failure and after a kill, one-line
errors for bad input, and the benchmark at a tiny size."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

pytest.importorskip(
    "apache_beam", reason="Apache Beam is not installed (the 'beam' extra: pip install -e '.[beam]')"
)
pytest.importorskip("ai_edge_litert", reason="the TFLite teachers need ai-edge-litert")

from jitnet_jax.data.label_store import LabelStore, chunk_file_name, store_is_complete  # noqa: E402
from jitnet_jax.io import lock_output  # noqa: E402
from teacher import beam_pipeline, precompute  # noqa: E402

REPO = Path(precompute.__file__).resolve().parents[1]
N_REAL = 40  # frames of the real clip: chunks of 16, 16 and 8
SIZE = ["--height", "45", "--width", "80", "--chunk-size", "16", "--no-progress"]


def synthetic_video(path: Path, n: int = 24) -> Path:
    """A 64x48 video of a bright rectangle moving over a grey background."""
    gen = imageio_ffmpeg.write_frames(str(path), (64, 48), fps=10, macro_block_size=16)
    gen.send(None)
    for t in range(n):
        frame = np.full((48, 64, 3), 90, np.uint8)
        frame[10:34, 2 + t : 26 + t] = (230, 40, 40)
        gen.send(frame.tobytes())
    gen.close()
    return path


def store_files(folder: Path) -> dict[str, bytes]:
    """Every file of a store but the lock file (it records the holder's pid)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != ".lock"}


@pytest.fixture(scope="module")
def sources(shared_data, tmp_path_factory):
    """A real clip and a synthetic video with their single-process stores (the reference)."""
    root = tmp_path_factory.mktemp("beam")
    real = shared_data / "clips" / "bikes_street_scenecuts.mp4"
    synth = synthetic_video(root / "synthetic.mp4")
    model = shared_data / "models" / "yolov8n-seg_int8.tflite"
    teacher = ["--teacher", "yolov8_seg", "--model", str(model), "--max-frames", str(N_REAL)]
    single = root / "single"
    for video in (real, synth):
        args = ["--video", str(video), *teacher, "--out", str(single / video.stem), *SIZE]
        assert precompute.main(args) == 0
    return {"real": real, "synth": synth, "teacher": teacher, "single": single}


def beam_args(src, out, *extra):
    videos = ["--video", str(src["real"]), "--video", str(src["synth"])]
    return [*videos, *src["teacher"], "--out", str(out), *SIZE, "--runner", "direct", *extra]


def test_two_videos_one_pipeline_byte_identical(sources, tmp_path, capsys):
    out = tmp_path / "beam"
    assert precompute.main(beam_args(sources, out, "--range-frames", "32")) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "bikes_street_scenecuts"), str(out / "synthetic")]
    for name in ("bikes_street_scenecuts", "synthetic"):
        assert store_files(out / name) == store_files(sources["single"] / name)
    real = LabelStore(out / "bikes_street_scenecuts")
    assert real.num_frames == N_REAL and real.header.teacher == "yolov8_seg:yolov8n-seg_int8.tflite"
    assert (real.frames(0, N_REAL)[0] > 0).any()  # the teacher found something on the real clip
    assert LabelStore(out / "synthetic").num_frames == 24
    # a rerun finds both stores complete and runs nothing
    stamp = (out / "synthetic" / "meta.json").stat().st_mtime_ns
    assert precompute.main(beam_args(sources, out)) == 0
    assert (out / "synthetic" / "meta.json").stat().st_mtime_ns == stamp


def test_failed_pipeline_resumes_keeping_finished_chunks(sources, tmp_path, monkeypatch, capsys):
    out = tmp_path / "beam"
    real_write = beam_pipeline.write_chunk_file
    written: list[tuple[str, int]] = []

    def fail_third(store_dir, header, index, labels, regions):
        if len(written) == 2:
            raise OSError(28, f"{store_dir}: write failed (No space left on device)")
        written.append((Path(store_dir).name, index))
        return real_write(store_dir, header, index, labels, regions)

    monkeypatch.setattr(beam_pipeline, "write_chunk_file", fail_third)
    assert precompute.main(beam_args(sources, out, "--range-frames", "16")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and "Traceback" not in err
    assert not store_is_complete(out / "bikes_street_scenecuts") and not store_is_complete(out / "synthetic")
    stamps = {(s, i): (out / s / chunk_file_name(i)).stat().st_mtime_ns for s, i in written}

    again: list[tuple[str, int]] = []

    def record(store_dir, header, index, labels, regions):
        again.append((Path(store_dir).name, index))
        return real_write(store_dir, header, index, labels, regions)

    monkeypatch.setattr(beam_pipeline, "write_chunk_file", record)
    assert precompute.main(beam_args(sources, out, "--range-frames", "16")) == 0
    assert len(again) == 5 - 2 and not set(again) & set(written)  # 3 + 2 chunks in all, 2 kept
    assert {k: (out / k[0] / chunk_file_name(k[1])).stat().st_mtime_ns for k in written} == stamps
    for name in ("bikes_street_scenecuts", "synthetic"):
        assert store_files(out / name) == store_files(sources["single"] / name)


def test_sigkill_then_rerun_resumes(sources, tmp_path):
    """A real kill of the whole pipeline (driver and workers) after its first chunk; the rerun keeps it."""
    out = tmp_path / "killed"
    synth = synthetic_video(tmp_path / "synthetic.mp4", n=32)
    cmd = [
        sys.executable,
        "-m",
        "teacher.precompute",
        "--video",
        str(synth),
        *sources["teacher"][:4],
        "--out",
        str(out),
        *SIZE[:4],
        "--chunk-size",
        "4",
        "--no-progress",
        "--runner",
        "direct",
        "--range-frames",
        "32",
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    first = out / "synthetic" / chunk_file_name(0)
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if store_is_complete(out / "synthetic"):
        pytest.skip("the pipeline finished before it could be killed")
    assert first.exists(), proc.stderr.read().decode()  # type: ignore[union-attr]
    done = sorted(p.name for p in (out / "synthetic").glob("labels_*.npz"))
    stamps = {n: (out / "synthetic" / n).stat().st_mtime_ns for n in done}
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert store_is_complete(out / "synthetic")
    assert {n: (out / "synthetic" / n).stat().st_mtime_ns for n in done} == stamps
    assert LabelStore(out / "synthetic").frames(0, 32)[0].shape == (32, 45, 80)


def _refused(capsys, args, message):
    assert precompute.main(args) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_bad_videos_and_teacher_are_one_line_errors(sources, tmp_path, capsys):
    out = tmp_path / "o"
    teacher = sources["teacher"]
    base = [*teacher, "--out", str(out), *SIZE, "--runner", "direct"]
    _refused(capsys, ["--video", str(tmp_path / "nope.mp4"), *base], "nope.mp4: video file not found")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    _refused(
        capsys, ["--video", str(sources["synth"]), "--video", str(junk), *base], "junk.mp4: ffmpeg cannot"
    )
    bad_model = tmp_path / "bad.tflite"
    bad_model.write_bytes(b"\0" * 256)
    args = ["--video", str(sources["synth"]), *base, "--model", str(bad_model), "--out", str(tmp_path / "m")]
    _refused(capsys, args, "bad.tflite: not a loadable TFLite model")
    for name in ("o/synthetic", "o/junk", "o/nope", "m/synthetic"):
        assert not store_is_complete(tmp_path / name)
    assert not list(tmp_path.glob("*/*/labels_*.npz"))  # nothing labelled before the errors


def test_frame_range_past_the_end(sources, tmp_path, monkeypatch, capsys):
    """A video shorter than planned (e.g. replaced after its frames were counted): the unit past its end
    fails the pipeline with one line naming the video; the store stays incomplete."""
    real_count = precompute.count_frames
    monkeypatch.setattr(precompute, "count_frames", lambda p: real_count(p) + 8)
    out = tmp_path / "o"
    args = ["--video", str(sources["synth"]), *sources["teacher"][:4], "--out", str(out), *SIZE]
    _refused(
        capsys, [*args, "--runner", "direct"], "synthetic.mp4: decoded only 24 frames but 32 were expected"
    )
    assert not store_is_complete(out / "synthetic")
    with pytest.raises(ValueError, match=r"synthetic.mp4: frame range \[16, 40\) is empty or past the end"):
        next(precompute.teacher_instances(lambda f: f, sources["synth"], 32, 16, 40))


def test_second_writer_is_refused(sources, tmp_path, capsys):
    out = tmp_path / "o"
    args = ["--video", str(sources["synth"]), *sources["teacher"][:4], "--out", str(out), *SIZE]
    with lock_output(out / "synthetic", "label store"):
        _refused(capsys, [*args, "--runner", "direct"], "label store is in use by another process")
    assert not store_is_complete(out / "synthetic")


def test_exports_and_mixed_teachers_are_refused(sources, tmp_path, capsys):
    args = ["--video", str(sources["synth"]), "--tf-export", str(tmp_path), "--groups", "person"]
    _refused(
        capsys, [*args, "--out", str(tmp_path / "o"), "--runner", "direct"], "label TF/Detectron exports"
    )


def test_lvs_streams_in_one_pipeline(shared_data, tmp_path, capsys):
    out = tmp_path / "lvs"
    common = ["--lvs", str(shared_data / "lvs_mini"), "--max-frames", "20", *SIZE]
    args = [*common, "--stream", "bikes1", "--stream", "parking_lot1", "--out", str(out)]
    assert precompute.main([*args, "--runner", "direct"]) == 0
    for name in ("bikes1", "parking_lot1"):
        single = tmp_path / f"single_{name}"
        assert precompute.main([*common, "--stream", name, "--out", str(single)]) == 0
        assert store_files(out / name) == store_files(single)
    meta = json.loads((out / "bikes1" / "meta.json").read_text())
    assert meta["complete"] and meta["num_frames"] == 20


def test_bench_precompute_tiny(shared_data, tmp_path):
    from experiments import bench_precompute

    report = bench_precompute.main(
        [
            "--frames",
            "16",
            "--clips",
            "bikes_street_scenecuts.mp4",
            "--chunk-size",
            "8",
            "--out",
            str(tmp_path / "bench"),
        ]
    )
    assert report["single"]["frames"] == report["beam"]["frames"] == 16
    assert report["identical"] is True
    assert report["ratio"] > 0
    assert set(report["single"]["stages"]) >= {"decode", "teacher", "rasterise", "write"}

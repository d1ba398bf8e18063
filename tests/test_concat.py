"""Multi-scene streams: stream specs, :class:`ConcatSource` over in-memory and real streams, and the
commands that take a constructed stream (stream, sweep, table)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator

import numpy as np
import pytest

from jitnet_jax.data.concat import (
    ConcatSource,
    canonical_spec,
    is_constructed,
    open_concat,
    parse_stream_spec,
    part_extents,
    scene_scores,
    spec_slug,
)
from jitnet_jax.data.synthetic import SyntheticStream
from jitnet_jax.data.types import Chunk, StreamInfo, pad_chunk


class ArraySource:
    """A stream held in memory (frame ``t`` is filled with ``t + offset``), counting the chunks read."""

    def __init__(self, name: str, n: int, offset: int = 0, classes=("background", "car"), size=(4, 6)):
        h, w = size
        t = (np.arange(n) + offset) % 256
        self.frames = np.broadcast_to(t[:, None, None, None], (n, h, w, 3)).astype(np.uint8)
        self.labels = (np.broadcast_to(t[:, None, None], (n, h, w)) % 2).astype(np.uint8)
        self.regions = np.ones((n, h, w), np.uint8)
        self.info = StreamInfo(name, n, h, w, 10.0, tuple(classes), "test")
        self.identity = f"array:{name}:{offset}"
        self.pulled = 0
        self.closed = 0

    def chunks(self, chunk_size: int, start: int = 0) -> Iterator[Chunk]:
        try:
            for a in range(start, self.info.num_frames, chunk_size):
                b = min(a + chunk_size, self.info.num_frames)
                self.pulled += 1
                yield pad_chunk(self.frames[a:b], self.labels[a:b], self.regions[a:b], chunk_size, a)
        finally:
            self.closed += 1


def _read(source, chunk_size: int, start: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Frames, labels and regions of the valid frames of every chunk, and each chunk's start."""
    cs = list(source.chunks(chunk_size, start))
    assert all(c.frames.shape[0] == chunk_size for c in cs)
    cat = [np.concatenate([getattr(c, k)[c.valid] for c in cs]) for k in ("frames", "labels", "regions")]
    return (*cat, [c.start for c in cs])


def test_specs_parse_canonical_and_slug():
    assert parse_stream_spec("a[0:400]+b+a[400:]") == [("a", 0, 400), ("b", 0, None), ("a", 400, None)]
    assert parse_stream_spec(" a[:5] ") == [("a", 0, 5)]
    assert canonical_spec("a[:400]+b[0:]+a[400:]+c[:]") == "a[0:400]+b+a[400:]+c"
    assert spec_slug("a[0:400]+b+a[400:]") == "a@0-400+b+a@400-" and spec_slug("plain_name") == "plain_name"
    assert is_constructed("a+b") and is_constructed("a[0:4]") and not is_constructed("residential_street1")
    assert part_extents(parse_stream_spec("a[0:4]+b[2:9]+a[4:8]+b")) == {"a": 8, "b": None}
    for bad, what in [
        ("a++b", "part 2"),
        ("a[4:2]", "empty segment"),
        ("a[x:3]", "part 1"),
        ("a[0:3", "part 1"),
        ("", "empty"),
        ("a+b[-1:3]", "part 2"),
    ]:
        with pytest.raises(ValueError, match=what) as e:
            parse_stream_spec(bad)
        assert "\n" not in str(e.value)


def test_concat_reads_the_segments_in_order_from_any_start():
    a, b = ArraySource("a", 30), ArraySource("b", 20, offset=100)
    src = ConcatSource([(a, 5, 17), (b, 0, None), (a, 20, None)])
    assert src.info.name == "a[5:17]+b+a[20:]" and src.info.num_frames == 12 + 20 + 10
    assert (src.info.height, src.info.width, src.info.fps) == (4, 6, 10.0)
    assert src.cuts == (12, 32)
    assert [s.to_json() for s in src.scenes] == src.scenes_json()
    assert src.scenes_json()[2] == {
        "name": "a",
        "part": "a[20:]",
        "source_frames": [20, 30],
        "frames": [32, 42],
    }
    want = np.concatenate([a.frames[5:17], b.frames, a.frames[20:]])
    want_labels = np.concatenate([a.labels[5:17], b.labels, a.labels[20:]])
    for chunk_size in (1, 4, 7, 64):
        for start in (0, 3, 12, 31, 41):
            frames, labels, regions, starts = _read(src, chunk_size, start)
            np.testing.assert_array_equal(frames, want[start:])
            np.testing.assert_array_equal(labels, want_labels[start:])
            assert (regions == 1).all()
            assert starts == list(range(start, 42, chunk_size))
    with pytest.raises(ValueError, match="out of range"):
        next(src.chunks(4, 42))


def test_concat_is_lazy_and_closes_a_part_when_its_segment_ends():
    a = ArraySource("a", 1000)
    src = ConcatSource([(a, 0, 6), (ArraySource("b", 3), 0, None)])
    it = src.chunks(4)
    first = next(it)
    assert first.start == 0 and a.pulled == 1  # one chunk read for one chunk given
    rest = list(it)
    assert [c.start for c in rest] == [4, 8] and a.pulled == 2 and a.closed == 1


def test_concat_refuses_mismatched_parts_and_segments_past_the_end():
    a = ArraySource("a", 10)
    with pytest.raises(ValueError, match=r"part b has classes \['person'\].*share class groups"):
        ConcatSource([(a, 0, None), (ArraySource("b", 5, classes=("background", "person")), 0, None)])
    with pytest.raises(ValueError, match="part b is 8x6"):
        ConcatSource([(a, 0, None), (ArraySource("b", 5, size=(8, 6)), 0, None)])
    for start, stop in [(0, 11), (10, None), (12, 14)]:
        with pytest.raises(ValueError, match="past the end of a \\(10 frames\\)") as e:
            ConcatSource([(a, start, stop)])
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="at least one part"):
        ConcatSource([])


def test_identity_and_open_concat_share_one_source_per_name():
    a, b = ArraySource("a", 10), ArraySource("b", 10)
    one = ConcatSource([(a, 0, 5), (b, 0, None)])
    assert one.identity == ConcatSource([(a, 0, 5), (b, 0, None)]).identity
    assert one.identity != ConcatSource([(a, 0, 6), (b, 0, None)]).identity
    assert one.identity != ConcatSource([(b, 0, None), (a, 0, 5)]).identity
    calls = []

    def open_part(name: str, need: int | None):
        calls.append((name, need))
        return {"a": a, "b": b}[name]

    src = open_concat("a[:4]+b+a[6:8]", open_part)
    assert calls == [("a", 8), ("b", None)] and src.info.name == "a[0:4]+b+a[6:8]"


def test_concat_of_synthetic_streams_and_the_scene_scores():
    s1 = SyntheticStream(num_frames=12, height=24, width=32, seed=0, name="s1")
    s2 = SyntheticStream(num_frames=10, height=24, width=32, seed=1, name="s2")
    src = ConcatSource([(s1, 2, 8), (s2, 0, None)])
    frames, labels, _, _ = _read(src, 4)
    np.testing.assert_array_equal(frames, np.concatenate([s1.clip(2, 8)[0], s2.clip(0, 10)[0]]))
    np.testing.assert_array_equal(labels, np.concatenate([s1.clip(2, 8)[1], s2.clip(0, 10)[1]]))
    n = 10  # a run stopped after 10 of the 16 frames
    pf = {
        "frame": np.arange(n),
        "teacher": (np.arange(n) % 4 == 0),
        "updates": np.ones(n, np.int32),
        "tp": np.tile([5, 1], (n, 1)),
        "fp": np.tile([0, 1], (n, 1)),
        "fn": np.tile([0, 0], (n, 1)),
    }
    rows = scene_scores(src.scenes_json(), pf)
    assert [r["frames_run"] for r in rows] == [6, 4]
    assert (
        rows[0]["miou"] == pytest.approx(0.5) and rows[0]["teacher_frames"] == 2 and rows[1]["updates"] == 4
    )
    assert "miou" not in scene_scores([{"frames": [20, 30]}], pf)[0]


# ---- real streams -------------------------------------------------------------------------------------------

H, W = 24, 32
TINY = ["--height", str(H), "--width", str(W), "--chunk-size", "4", "--no-progress"]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A label-store cache folder shared by this module's real-data tests."""
    return tmp_path_factory.mktemp("stores")


def _stream_args(shared_data, stores, spec: str) -> argparse.Namespace:
    from experiments.stream import build_parser

    argv = ["--lvs", str(shared_data / "lvs_mini"), "--stream", spec, "--cache-dir", str(stores), *TINY]
    return build_parser().parse_args(argv)


def test_real_parts_of_different_sizes_are_read_at_the_run_resolution(shared_data, stores):
    from jitnet_jax.data.store_source import StoreSource
    from jitnet_jax.run_config import make_config
    from teacher.precompute import ensure_store
    from teacher.sources import open_source

    args = _stream_args(
        shared_data, stores, "residential_street1[0:6]+highway_cctv1[:5]+residential_street1[6:9]"
    )
    src = open_source(args, make_config(args))
    assert isinstance(src, ConcatSource)
    assert src.info.name == "residential_street1[0:6]+highway_cctv1[0:5]+residential_street1[6:9]"
    assert (src.info.num_frames, src.info.height, src.info.width) == (
        14,
        H,
        W,
    )  # 640x352 and 320x240 natively
    assert src.info.class_names == ("background", "car_bus_truck") and src.cuts == (6, 11)
    parts = {}
    for name, need in (("residential_street1", 9), ("highway_cctv1", 5)):
        store = ensure_store(
            lvs=shared_data / "lvs_mini", stream=name, height=H, width=W, max_frames=need, cache_dir=stores
        )
        parts[name] = _read(StoreSource(store), 16)
    frames, labels, regions, _ = _read(src, 4)
    res, hw = parts["residential_street1"], parts["highway_cctv1"]
    for got, k in ((frames, 0), (labels, 1), (regions, 2)):
        np.testing.assert_array_equal(got, np.concatenate([res[k][:6], hw[k][:5], res[k][6:9]]))
    assert src.identity.startswith("concat:sha256:")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("residential_street1[0:4]+bikes1[0:4]", "part bikes1 has class groups person;car,bus,truck"),
        ("residential_street1[0:4]+nosuch", "unknown part nosuch"),
        ("residential_street1[0:4]+", "part 2 is an empty part"),
        ("highway_cctv1[0:100000]", "past the end of highway_cctv1"),
    ],
)
def test_bad_constructed_streams_are_one_line_errors(shared_data, stores, tmp_path, capsys, spec, message):
    from experiments import stream

    argv = ["--lvs", str(shared_data / "lvs_mini"), "--stream", spec, "--cache-dir", str(stores), *TINY]
    if "100000" not in spec:  # no label store is made before the spec and its groups are checked
        argv[argv.index("--cache-dir") + 1] = str(tmp_path / "none")
    assert stream.main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "none").exists() and not (tmp_path / "run").exists()


def test_stream_command_records_the_scenes(shared_data, stores, tmp_path):
    """The settings of tests/test_stream_cli.py's real-stream run (bikes1, 24x32, chunks of 4): the
    compiled loop is shared with it."""
    from experiments import stream

    out = tmp_path / "run"
    spec = "bikes1[0:20]+bikes1[100:]"
    argv = ["--lvs", str(shared_data / "lvs_mini"), "--stream", spec, "--frames", "40", *TINY]
    assert stream.main([*argv, "--cache-dir", str(stores), "--no-video", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stream"] == spec and summary["frames"] == 40
    scenes = summary["scenes"]
    assert [(s["part"], s["frames"][0], s["source_frames"][0]) for s in scenes] == [
        ("bikes1[0:20]", 0, 0),
        ("bikes1[100:]", 20, 100),
    ]
    assert [s["frames_run"] for s in scenes] == [20, 20] and scenes[0]["teacher_frames"] >= 1
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["stream"] == spec and cfg["fingerprint"]["stream.identity"].startswith("concat:sha256:")


def test_sweep_takes_constructed_streams(shared_data, stores):
    from experiments.sweep import build_parser, open_sources
    from jitnet_jax.run_config import make_config

    argv = ["--lvs", str(shared_data / "lvs_mini"), "--cache-dir", str(stores), *TINY]
    args = build_parser().parse_args(
        [*argv, "--streams", "highway_cctv1[0:4]+parking_lot1[:3],parking_lot1[2:4]"]
    )
    sources = open_sources(args, make_config(args))
    assert [s.info.name for s in sources] == ["highway_cctv1[0:4]+parking_lot1[0:3]", "parking_lot1[2:4]"]
    assert [s.info.num_frames for s in sources] == [7, 2]


def test_table_on_a_constructed_stream(shared_data, tmp_path):
    """At tests/test_table.py's sizes, so the oracle's compiled programs are shared with it."""
    from experiments import table

    out = tmp_path / "table"
    spec = "highway_cctv1[:8]+parking_lot1[0:8]"
    argv = ["--lvs", str(shared_data / "lvs_mini"), "--streams", spec, "--out", str(out)]
    argv += ["--height", "36", "--width", "64", "--max-frames", "16", "--chunk-size", "8"]
    argv += ["--oracle-epochs", "1", "--width-multiplier", "0.25", "--camvid-init", "none", "--no-progress"]
    assert table.main([*argv, "--methods", "hold_d8", "oracle"]) == 0
    canon = "highway_cctv1[0:8]+parking_lot1[0:8]"
    data = json.loads((out / "table.json").read_text())
    p = data["streams"][canon]
    assert data["settings"]["streams"] == [canon] and p["frames"] == 16
    assert [s["part"] for s in p["scenes"]] == ["highway_cctv1[0:8]", "parking_lot1[0:8]"]
    assert [s["frames_run"] for s in p["methods"]["oracle"]["extra"]["scenes"]] == [8, 8]
    assert p["methods"]["oracle"]["extra"]["train_examples"] == 2  # frames 0 and 8: one of each scene
    assert (out / "runs" / "highway_cctv1@0-8+parking_lot1@0-8" / "hold_d8.json").is_file()
    assert f"| {canon} |" in (out / "table.md").read_text()
    # the cached parts are keyed by the spec: another segment is another stream
    assert table.main([*argv, "--methods", "hold_d8", "--collect"]) == 0
    other = argv.copy()
    other[other.index(spec)] = "highway_cctv1[0:8]+parking_lot1[8:16]"
    assert table.main([*other, "--methods", "hold_d8", "--collect"]) == 0
    assert json.loads((out / "table.json").read_text())["missing"] == [
        "highway_cctv1[0:8]+parking_lot1[8:16]/hold_d8"
    ]
    bad = argv.copy()
    bad[bad.index(spec)] = "highway_cctv1+indoor_people1"
    assert table.main(bad) == 2


def test_leave_one_out_pool_excludes_the_parts_of_a_constructed_stream():
    from jitnet_jax.eval.table.build import loo_pool

    assert loo_pool("b", ["a", "b", "c"]) == ["b", "a", "c"]
    streams = ["a[0:4]+b", "c", "b[2:]+d"]
    assert loo_pool("a[0:4]+b", streams) == ["a[0:4]+b", "c", "d"]
    assert loo_pool("c", streams) == ["c", "a", "b", "d"]

"""TFDS builder for LVS streams: builds array_record and reads it back with tfds.data_source (no TensorFlow)."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets", reason="needs tensorflow-datasets (pip install -e .[tfds])")


def test_build_and_read_without_tensorflow(shared_data, tmp_path):
    from teacher.class_groups import coco_to_label, stream_groups
    from teacher.lvs import iter_detections, open_stream
    from teacher.rasterize import rasterize
    from teacher.tfds_lvs import LvsStreamConfig, LvsStreams

    lvs = shared_data / "lvs_mini"
    config = LvsStreamConfig(name="bikes1_45x80_first12", stream="bikes1", height=45, width=80, max_frames=12)
    builder = LvsStreams(config=config, data_dir=str(tmp_path))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(lvs)))
    files = list((tmp_path / "lvs_streams" / "bikes1_45x80_first12" / "2.0.0").glob("*.array_record*"))
    assert files, "no array_record shards written"

    ds = tfds.data_source("lvs_streams/bikes1_45x80_first12", data_dir=str(tmp_path))["train"]
    assert len(ds) == 12
    s = open_stream(lvs, "bikes1", check_frames=False)
    lut = coco_to_label(stream_groups("bikes1", lvs))
    expected = [rasterize(inst, 45, 80, lut) for inst in iter_detections(s, 0, 12)]
    seen = set()
    for k in range(len(ds)):
        ex = ds[k]
        t = int(ex["frame_index"])
        seen.add(t)
        assert ex["frame"].shape == (45, 80, 3) and ex["frame"].dtype == np.uint8
        np.testing.assert_array_equal(ex["label"], expected[t][0])
        np.testing.assert_array_equal(ex["region"], expected[t][1])
        assert ex["region"].dtype == np.uint8
        assert ex["stream"] in (b"bikes1", "bikes1")
    assert seen == set(range(12))
    if importlib.util.find_spec("tensorflow") is None:
        assert "tensorflow" not in sys.modules


def test_manual_dir_missing_stream(tmp_path):
    from jitnet_jax.data.label_store import DataError
    from teacher.tfds_lvs import LvsStreamConfig, LvsStreams

    builder = LvsStreams(
        config=LvsStreamConfig(name="x_8x8", stream="x", height=8, width=8), data_dir=str(tmp_path)
    )
    with pytest.raises(DataError, match="x: LVS stream folder not found"):
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path)))

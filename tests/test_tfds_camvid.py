"""The CamVid tensorflow-datasets builder: mocked (``tfds.testing.mock_data``), built from a small fake
folder (exact round trip, no TensorFlow), one-line errors, and on the real folder when it is present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets", reason="needs tensorflow-datasets (pip install -e .[tfds])")
PIL = pytest.importorskip("PIL.Image")

from teacher import tfds_camvid as tc  # noqa: E402


def write_fake_camvid(root: Path, per_split: int = 2, seed: int = 0) -> Path:
    """A CamVid-layout folder with ``per_split`` random 480x360 PNG frames and label maps per split.
    Labels: left third pedestrian (9), a car (8) block, bicyclist (10) block, unlabelled (11) corner."""
    rng = np.random.default_rng(seed)
    for k, (images, annots) in enumerate(tc.SPLITS.values()):
        (root / images).mkdir(parents=True, exist_ok=True)
        (root / annots).mkdir(parents=True, exist_ok=True)
        for i in range(per_split):
            name = f"0001TP_{k}{i:05d}"
            img = rng.integers(0, 256, (tc.HEIGHT, tc.WIDTH, 3), dtype=np.uint8)
            lab = rng.integers(0, 8, (tc.HEIGHT, tc.WIDTH), dtype=np.uint8)
            lab[:, :160] = 9
            lab[200:300, 200:400] = 8
            lab[50:150, 300:400] = 10
            lab[:20, :20] = 11
            PIL.fromarray(img).save(root / images / f"{name}.png")
            PIL.fromarray(lab).save(root / annots / f"{name}.png")
    return root


def test_mock_data_reads_without_tensorflow():
    with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = tfds.data_source("camvid", split="test")
        ex = ds[0]
    assert len(ds) == 3
    assert np.asarray(ex["image"]).shape == (360, 480, 3) and np.asarray(ex["image"]).dtype == np.uint8
    assert np.asarray(ex["segmentation_mask"]).shape == (360, 480, 1)


def test_builds_from_manual_dir_exactly(tmp_path):
    root = write_fake_camvid(tmp_path / "camvid")
    b = tc.Camvid(data_dir=str(tmp_path / "tfds"))
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
    assert {s: b.info.splits[s].num_examples for s in tc.SPLITS} == {"train": 2, "validation": 2, "test": 2}
    assert b.info.metadata["class_names"] == list(tc.CLASS_NAMES)
    images, labels = tc.load_split("validation", data_dir=str(tmp_path / "tfds"))
    files = sorted((root / "val").iterdir())
    assert images.shape == (2, 360, 480, 3) and labels.shape == (2, 360, 480) and labels.dtype == np.uint8
    for i, f in enumerate(files):  # PNG in, PNG out: exact
        assert np.array_equal(images[i], np.asarray(PIL.open(f)))
        assert np.array_equal(labels[i], np.asarray(PIL.open(root / "valannot" / f.name)))


def test_bad_folders_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="CamVid folder .*train not found"):
        tc.load_split("train", data_dir=str(tmp_path / "tfds"), manual_dir=tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="not prepared"):
        tc.load_split("train", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(ValueError, match="splits"):
        tc.load_split("training", data_dir=str(tmp_path / "tfds"))
    root = write_fake_camvid(tmp_path / "camvid", per_split=1)
    next((root / "testannot").iterdir()).unlink()
    with pytest.raises(ValueError, match="has no annotation") as e:
        tc.load_split("train", data_dir=str(tmp_path / "tfds2"), manual_dir=root)
    assert "\n" not in str(e.value)


def test_real_camvid(shared_data, tmp_path_factory):
    root = shared_data / "camvid"
    if not root.is_dir():
        pytest.skip(f"CamVid not found at {root}")
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    images, labels = tc.load_split("test", data_dir=data_dir, manual_dir=root)
    assert images.shape == (233, 360, 480, 3) and labels.shape == (233, 360, 480)
    assert labels.max() == tc.UNLABELLED
    counts = np.bincount(labels.ravel(), minlength=12)
    assert (counts > 0).all()  # every class occurs in the test split
    b = tc.Camvid(data_dir=data_dir)
    assert [b.info.splits[s].num_examples for s in tc.SPLITS] == [367, 101, 233]

"""Offline pretraining: class mapping by name, augmentation, label-store examples (leave-one-out), tfds
examples (``tfds.testing.mock_data``, no download, no TensorFlow), CamVid (a fake folder), and the CLI
writing a loadable checkpoint; bad input is a one-line error."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from experiments import pretrain as cli
from jitnet_jax.config import ModelConfig
from jitnet_jax.data.label_store import LabelStoreWriter, StoreHeader
from jitnet_jax.data.types import IGNORE_LABEL
from jitnet_jax.student import pretrain as pt
from jitnet_jax.student.pretrained import load_student, read_meta
from teacher.class_groups import CAMVID_CLASS_NAMES

TRAFFIC = ("background", "person", "car_bus_truck", "bicycle_motorcycle")


def _tfds():
    """``tensorflow_datasets``, or skip the calling test (only the tests that use it need it)."""
    return pytest.importorskip(
        "tensorflow_datasets", reason="needs tensorflow-datasets (pip install -e .[tfds])"
    )


def test_class_map_by_name():
    lut = pt.class_map(TRAFFIC, ("background", "person"))
    assert lut[:4].tolist() == [0, 1, 0, 0] and lut[IGNORE_LABEL] == IGNORE_LABEL
    lut = pt.class_map(("background", "person"), TRAFFIC)
    assert lut[:2].tolist() == [0, 1]
    # COCO names map into groups
    lut = pt.class_map(("background", "truck", "dog", "motorcycle"), TRAFFIC)
    assert lut[:4].tolist() == [0, 2, 0, 3]
    with pytest.raises(ValueError, match="background"):
        pt.class_map(TRAFFIC, ("person",))


def test_class_map_synonyms_ignore_and_missing():
    lut = pt.class_map(CAMVID_CLASS_NAMES, TRAFFIC, require_all=True, source="camvid")
    # pedestrian -> person, car -> car_bus_truck, bicyclist -> bicycle_motorcycle, unlabelled -> ignore
    assert lut[:12].tolist() == [0] * 8 + [2, 1, 3, IGNORE_LABEL]
    with pytest.raises(ValueError, match="camvid has no class for dog"):
        pt.class_map(CAMVID_CLASS_NAMES, ("background", "person", "dog"), require_all=True, source="camvid")


def test_augment_identity_flip_and_determinism():
    import jax

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    label = rng.integers(0, 4, (24, 32)).astype(np.uint8)
    weight = pt.label_weights(label)
    ident = pt.Augment(24, 32, 1.0, 1.0, False, 0.0, 0.0, 0.0)
    f, y, w = pt.augment_example(jax.random.key(0), frame, label, weight, ident)
    assert np.array_equal(f, frame) and np.array_equal(y, label) and np.array_equal(w, weight)
    flip = pt.Augment(24, 32, 1.0, 1.0, True, 0.0, 0.0, 0.0)
    outs = [pt.augment_example(jax.random.key(k), frame, label, weight, flip)[1] for k in range(8)]
    assert all(np.array_equal(o, label) or np.array_equal(o, label[:, ::-1]) for o in outs)
    assert any(np.array_equal(o, label[:, ::-1]) for o in outs)
    # a 4:3 source, 16:9 windows, full jitter: shapes, dtypes, labels from the source, same key = same output
    big = rng.integers(0, 256, (36, 48, 3), dtype=np.uint8)
    big_y = rng.integers(0, 4, (36, 48)).astype(np.uint8)
    aug = pt.Augment(18, 32)
    a = pt.augment_example(jax.random.key(5), big, big_y, pt.label_weights(big_y), aug)
    b = pt.augment_example(jax.random.key(5), big, big_y, pt.label_weights(big_y), aug)
    assert a[0].shape == (18, 32, 3) and a[0].dtype == np.uint8 and a[1].shape == (18, 32)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert set(np.unique(a[1])) <= set(np.unique(big_y))
    with pytest.raises(ValueError, match="min_scale"):
        pt.Augment(18, 32, min_scale=0.0).validate()


def test_cli_camvid_fake_folder(tmp_path):
    from test_tfds_camvid import write_fake_camvid

    root = write_fake_camvid(tmp_path / "camvid", per_split=4)
    out = tmp_path / "ckpt"
    args = ["--tfds", "camvid", "--manual-dir", str(root), "--tfds-data-dir", str(tmp_path / "tfds")]
    small = ["--height", "36", "--width", "64", "--epochs", "3", "--batch-size", "2", "--no-progress"]
    assert cli.main([*args, *small, "--width-multiplier", "0.25", "--out", str(out)]) == 0
    info = read_meta(out)["info"]
    assert info["classes"] == list(TRAFFIC) and info["examples"] == 4 and len(info["losses"]) == 3
    assert info["losses"][-1] < info["losses"][0]
    ev = info["eval"]
    assert ev["split"] == "test" and ev["frames"] == 4 and ev["size"] == [48, 64]
    assert set(ev["class_iou"]) == set(TRAFFIC) and 0 <= ev["miou"] <= 1
    load_student(out, ModelConfig(num_classes=4, width_multiplier=0.25))


def test_cli_camvid_bad_input_is_one_line(tmp_path, capsys):
    from test_tfds_camvid import write_fake_camvid

    assert (
        cli.main(["--tfds", "camvid", "--manual-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "c")])
        == 2
    )
    root = write_fake_camvid(tmp_path / "camvid", per_split=1)
    bad = ["--tfds", "camvid", "--manual-dir", str(root), "--tfds-data-dir", str(tmp_path / "tfds")]
    assert cli.main([*bad, "--classes", "background,person,dog", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
    assert "CamVid folder" in err[0] and "camvid has no class for dog" in err[1]
    assert not (tmp_path / "c").exists()


def _store(tmp_path, name, class_groups, label_value, n=8, h=24, w=32):
    import imageio_ffmpeg

    video = tmp_path / f"{name}.mp4"
    gen = imageio_ffmpeg.write_frames(str(video), (64, 48), fps=10, macro_block_size=16)
    gen.send(None)
    for t in range(n):
        gen.send(np.full((48, 64, 3), 20 * t, np.uint8).tobytes())
    gen.close()
    names = ("background", *("_".join(g) for g in class_groups))
    header = StoreHeader(name, n, h, w, 10.0, names, class_groups, "test", (str(video),), (n,), 4)
    wr = LabelStoreWriter(tmp_path / name, header)
    for i in wr.missing_chunks():
        a, b = wr.chunk_range(i)
        lab = np.zeros((b - a, h, w), np.uint8)
        lab[:, :, : w // 2] = label_value
        wr.write_chunk(i, lab, np.ones((b - a, h, w), np.uint8))  # region map: background
    return wr.finalize()


def test_store_examples_map_classes(tmp_path):
    a = _store(tmp_path, "a", (("person",), ("car", "bus", "truck")), 2)  # car on the left
    b = _store(tmp_path, "b", (("person",),), 1)  # person on the left
    frames, labels, weights = pt.store_examples([a, b], ("background", "person"), every=4, progress=False)
    assert frames.shape == (4, 24, 32, 3) and labels.shape == (4, 24, 32) and weights.dtype == np.float32
    assert set(np.unique(labels[:2])) == {0}  # cars become background for a person-only target
    assert set(np.unique(labels[2:])) == {0, 1}
    frames, labels, _ = pt.store_examples([a, b], TRAFFIC, every=4, max_frames=4, progress=False)
    assert len(frames) == 2 and labels[0, 0, 0] == 2 and labels[1, 0, 0] == 1


def test_cli_leave_one_out_on_real_streams(shared_data, tmp_path):
    out = tmp_path / "ckpt"
    rc = cli.main(
        [
            "--lvs",
            str(shared_data / "lvs_mini"),
            "--exclude",
            "indoor_people1",
            "--streams",
            "bikes1",
            "indoor_people1",
            "--max-frames",
            "8",
            "--every",
            "4",
            "--height",
            "36",
            "--width",
            "64",
            "--epochs",
            "1",
            "--no-augment",
            "--width-multiplier",
            "0.25",
            "--cache-dir",
            str(tmp_path / "stores"),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    meta = read_meta(out)
    assert meta["info"]["streams"] == ["bikes1"] and meta["info"]["classes"] == ["background", "person"]
    assert meta["info"]["examples"] == 2
    load_student(out, ModelConfig(num_classes=2, width_multiplier=0.25))
    with pytest.raises(ValueError, match="num_classes"):
        load_student(out, ModelConfig(num_classes=4))


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["--out", str(tmp_path / "c")]) == 2
    assert cli.main(["--out", str(tmp_path / "c"), "--tfds", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)


def test_tfds_mock_semantic_path(tmp_path):
    """Any tfds segmentation dataset via image/label keys; mocked on the project's LVS builder. The CLI run
    trains what ``test_cli_leave_one_out_on_real_streams`` and the table test's leave-one-out start train
    (2 whole examples of 2 classes at 36x64, width 0.25, one epoch), so the three load one compiled epoch
    program (the CamVid test covers augmentation)."""
    tfds = _tfds()
    import teacher.tfds_lvs  # noqa: F401  (registers lvs_streams)

    with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
        frames, labels, weights = pt.tfds_examples(
            "lvs_streams/bikes1",
            ("background", "person"),
            24,
            32,
            image_key="frame",
            label_key="label",
            label_names=TRAFFIC,
        )
        assert frames.shape == (2, 24, 32, 3) and frames.dtype == np.uint8
        assert set(np.unique(labels)) <= {0, 1, IGNORE_LABEL}
        assert ((weights > 1) == (labels == 1)).all() and ((weights == 0) == (labels == IGNORE_LABEL)).all()
        out = tmp_path / "ckpt"
        rc = cli.main(
            [
                "--tfds",
                "lvs_streams/bikes1",
                "--image-key",
                "frame",
                "--label-key",
                "label",
                "--label-names",
                ",".join(TRAFFIC),
                "--classes",
                "background,person",
                "--height",
                "36",
                "--width",
                "64",
                "--epochs",
                "1",
                "--no-augment",
                "--width-multiplier",
                "0.25",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
    assert rc == 0 and read_meta(out)["info"]["dataset"] == "lvs_streams/bikes1"
    load_student(out, ModelConfig(num_classes=2, width_multiplier=0.25))


def test_tfds_mock_coco_panoptic():
    """The COCO path. tfds's ``coco`` builder imports TensorFlow when it is constructed, so without
    TensorFlow it cannot be mocked at all."""
    tfds = _tfds()
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tfds builder 'coco' imports tensorflow on construction; TensorFlow is not installed")
    with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
        frames, labels, _ = pt.tfds_examples("coco/2017_panoptic", TRAFFIC, 24, 32)
    assert frames.shape == (2, 24, 32, 3) and labels.max() < 4


def test_panoptic_decoding():
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (1, 0, 0)  # segment id 1
    rgb[1, 2] = (0, 1, 0)  # segment id 256
    out = pt.panoptic_to_semantic(
        rgb, np.array([1, 256]), np.array([0, 1]), ["person", "car"], np.array([1, 2], np.uint8)
    )
    assert out.tolist() == [[1, 0, 0], [0, 0, 2]]

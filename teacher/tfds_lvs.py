"""TensorFlow Datasets builder for LVS streams, readable without TensorFlow.

The builder writes the ``array_record`` file format, which ``tfds.data_source`` / ``builder.as_data_source()``
read through ``array_record`` + numpy alone (tested with tensorflow-datasets 4.9.10 and no TensorFlow).
Each example is one frame at the store resolution:

* ``frame``: uint8 ``[H, W, 3]``; ``label``: uint8 ``[H, W]``; ``region``: uint8 ``[H, W]`` region map
  (1 background, 2 inside a dilated teacher box; rasterised exactly like ``teacher.precompute``; the loss
  weights of the regions are the reader's choice);
* ``frame_index``: int64 stream frame index; ``stream``: the stream name.

The LVS data cannot be downloaded by TFDS: pass the LVS root (folders ``<stream>/`` with video chunks and
teacher files, optionally ``streams.json``) as ``manual_dir``::

    import tensorflow_datasets as tfds
    from teacher.tfds_lvs import LvsStreams, LvsStreamConfig
    b = LvsStreams(config=LvsStreamConfig(name="bikes1_90x160", stream="bikes1", height=90, width=160),
                   data_dir="tfds_data")
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir="/path/to/lvs_mini"))
    ds = b.as_data_source()["train"]          # random access, no TensorFlow
    ex = ds[0]                                # dict of numpy arrays; order is shuffled, use ex["frame_index"]

Registered configs (``tfds.data_source("lvs_streams/<stream>", data_dir=...)`` after preparing) cover the
lvs_mini streams at 180x320.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from jitnet_jax.data.video import read_videos
from teacher.class_groups import coco_to_label, stream_groups
from teacher.lvs import iter_detections, open_stream
from teacher.rasterize import rasterize

LVS_MINI_STREAMS = ("bikes1", "highway_cctv1", "residential_street1", "indoor_people1", "parking_lot1")


@dataclasses.dataclass
class LvsStreamConfig(tfds.core.BuilderConfig):
    """One stream at one resolution. ``max_frames`` keeps only the first N frames (None: all)."""

    stream: str = "bikes1"
    height: int = 180
    width: int = 320
    max_frames: int | None = None
    score_threshold: float = 0.5


class LvsStreams(tfds.core.GeneratorBasedBuilder):
    """LVS streams (frames + teacher labels/region maps) as a TFDS dataset with a single ``train`` split."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Frames, rasterised teacher labels and weights per frame.",
        "2.0.0": "uint8 region map (1 background, 2 inside a dilated box) instead of float16 weights.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put (or point manual_dir at) an LVS root: one folder per stream with <stream><NNN>.mp4 chunks and "
        "detectron_large_mask_rcnn_1_<stream><NNN>.npy teacher files, plus optional streams.json with class "
        "groups. lvs_mini from the project's shared data works as is."
    )
    BUILDER_CONFIGS = [LvsStreamConfig(name=s, stream=s) for s in LVS_MINI_STREAMS]

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        """This file. (The stock lookup imports ``importlib_resources``, which tfds 4.9.10 does not install.)"""
        return epath.Path(__file__)

    def __init__(self, *, file_format: str | None = "array_record", **kwargs: Any):
        super().__init__(file_format=file_format, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        c: LvsStreamConfig = self.builder_config  # type: ignore[assignment]
        return tfds.core.DatasetInfo(
            builder=self,
            description="Long Video Streams frames with teacher labels rasterised for online distillation.",
            features=tfds.features.FeaturesDict(
                {
                    "frame": tfds.features.Tensor(shape=(c.height, c.width, 3), dtype=np.uint8),
                    "label": tfds.features.Tensor(shape=(c.height, c.width), dtype=np.uint8),
                    "region": tfds.features.Tensor(shape=(c.height, c.width), dtype=np.uint8),
                    "frame_index": np.int64,
                    "stream": tfds.features.Text(),
                }
            ),
            supervised_keys=None,
            homepage="https://github.com/ravi-teja-mullapudi/JITNet",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        return {"train": self._generate_examples(Path(dl_manager.manual_dir))}

    def _generate_examples(self, root: Path) -> Iterator[tuple[int, dict[str, Any]]]:
        c: LvsStreamConfig = self.builder_config  # type: ignore[assignment]
        s = open_stream(root, c.stream)
        lut = coco_to_label(stream_groups(c.stream, root))
        stop = s.num_frames if c.max_frames is None else min(s.num_frames, c.max_frames)
        frames = read_videos(s.videos, (c.height, c.width), frame_counts=s.frame_counts, stop=stop)
        for i, (frame, inst) in enumerate(zip(frames, iter_detections(s, 0, stop), strict=True)):
            label, region = rasterize(inst, c.height, c.width, lut, score_threshold=c.score_threshold)
            yield (
                i,
                {
                    "frame": frame,
                    "label": label,
                    "region": region,
                    "frame_index": i,
                    "stream": c.stream,
                },
            )

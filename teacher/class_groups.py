"""COCO-80 class names and the class groups of each stream (label ``g + 1`` = group ``g``, 0 = background).

Group lists follow the JITNet paper / LVS release (``sequence_to_class_groups_stable``): e.g. traffic streams
use ``person | car, bus, truck | bicycle, motorcycle``. ``lvs_mini/streams.json`` can add or override
streams. Custom groups are written as ``"person;car,bus,truck"`` (``;`` between groups, ``,`` inside).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from jitnet_jax.data.label_store import DataError

#: COCO-80 names; contiguous id ``i + 1`` is ``COCO_CLASSES[i]`` (1 = person, 3 = car, 8 = truck).
COCO_CLASSES: tuple[str, ...] = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)
NUM_COCO = len(COCO_CLASSES)
COCO_ID: Mapping[str, int] = {name: i + 1 for i, name in enumerate(COCO_CLASSES)}

ClassGroups = tuple[tuple[str, ...], ...]

_PERSON: ClassGroups = (("person",),)
_TRAFFIC: ClassGroups = (("person",), ("car", "bus", "truck"), ("bicycle", "motorcycle"))
_PERSON_VEHICLES: ClassGroups = (("person",), ("car", "bus", "truck"))

#: Class groups of every LVS stream (the paper's "stable" groups) and of the lvs_mini streams.
STREAM_GROUPS: Mapping[str, ClassGroups] = {
    **{
        s: _PERSON
        for s in (
            "ego_dodgeball1",
            "volleyball1",
            "volleyball3",
            "squash1",
            "ego_soccer1",
            "badminton1",
            "soccer1",
            "drone2",
            "hockey1",
            "tennis1",
            "tennis2",
            "tennis3",
            "ice_hockey_ego_1",
            "table_tennis1",
            "ice_hockey1",
            "softball1",
            "figure_skating1",
            "kabaddi1",
            "indoor_people1",
        )
    },
    **{
        s: _TRAFFIC
        for s in (
            "driving1",
            "drone1",
            "samui_walking_street1",
            "walking1",
            "samui_murphys1",
            "biking2",
            "southbeach1",
            "bikes1",
            "highway_cctv1",
            "residential_street1",
            "parking_lot1",
        )
    },
    **{
        s: _PERSON_VEHICLES for s in ("jackson_hole1", "jackson_hole2", "toomer1", "streetcam1", "streetcam2")
    },
    "basketball_ego1": (("person",), ("car",)),
    "giraffe1": (("person",), ("giraffe",)),
    "biking1": (("person",), ("bicycle", "motorcycle")),
    "horses1": (("person",), ("horse",)),
    "birds2": (("bird",),),
    "elephant1": (("elephant",),),
    "dogs2": (("person",), ("dog",), ("car", "bus", "truck")),
}


def validate_groups(groups: Sequence[Sequence[str]], source: str = "class groups") -> ClassGroups:
    """Check that every name is a COCO-80 class and no class is in two groups; returns a tuple form."""
    out = tuple(tuple(str(c).strip() for c in g) for g in groups)
    if not out or any(not g for g in out):
        raise DataError(f"{source}: need at least one non-empty class group, got {list(map(list, out))}")
    seen: set[str] = set()
    for g in out:
        for c in g:
            if c not in COCO_ID:
                raise DataError(
                    f"{source}: unknown COCO class name {c!r} (see teacher.class_groups.COCO_CLASSES)"
                )
            if c in seen:
                raise DataError(f"{source}: class {c!r} appears in more than one group")
            seen.add(c)
    return out


def parse_groups(spec: str) -> ClassGroups:
    """Parse ``"person;car,bus,truck"`` into ``(("person",), ("car", "bus", "truck"))``."""
    groups = [[c for c in g.split(",") if c.strip()] for g in spec.split(";") if g.strip()]
    return validate_groups(groups, source=f"--groups {spec!r}")


def load_streams_json(path: str | os.PathLike) -> dict[str, ClassGroups]:
    """Read ``streams.json`` (``{stream: [[class, ...], ...]}``) with validation."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read stream class groups ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object mapping stream name to class groups")
    return {str(k): validate_groups(v, source=f"{path}: stream {k}") for k, v in data.items()}


def stream_groups(stream: str, lvs_root: str | os.PathLike | None = None) -> ClassGroups:
    """Class groups of ``stream``: ``<lvs_root>/streams.json`` if it lists the stream, else :data:`STREAM_GROUPS`."""
    if lvs_root is not None:
        sj = Path(lvs_root) / "streams.json"
        if sj.is_file():
            table = load_streams_json(sj)
            if stream in table:
                return table[stream]
    if stream in STREAM_GROUPS:
        return STREAM_GROUPS[stream]
    raise DataError(
        f"no class groups known for stream {stream!r}: pass --groups, e.g. 'person;car,bus,truck'"
    )


def group_names(groups: ClassGroups) -> tuple[str, ...]:
    """Label names: ``("background", "person", "car_bus_truck", ...)`` (the paper's ``'_'.join`` naming)."""
    return ("background", *("_".join(g).replace(" ", "-") for g in groups))


def coco_to_label(groups: ClassGroups) -> np.ndarray:
    """uint8 ``[NUM_COCO + 1]`` lookup: COCO id -> label (group index + 1), 0 for unmapped ids and id 0."""
    lut = np.zeros(NUM_COCO + 1, np.uint8)
    for g, names in enumerate(validate_groups(groups)):
        for c in names:
            lut[COCO_ID[c]] = g + 1
    return lut


#: CamVid's label names, ids 0..11 (``classes.txt`` of the SegNet CamVid release; ``teacher.tfds_camvid``'s
#: ``CLASS_NAMES``, here without tensorflow-datasets).
CAMVID_CLASS_NAMES = (
    "sky",
    "building",
    "pole",
    "road",
    "pavement",
    "tree",
    "sign_symbol",
    "fence",
    "car",
    "pedestrian",
    "bicyclist",
    "unlabelled",
)

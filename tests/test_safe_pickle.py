"""Safe loading of LVS teacher .npy files: real files load, code-running pickles are refused."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from jitnet_jax.data.label_store import DataError
from teacher.safe_pickle import UnsafePickleError, load_npy, safe_unpickle


def _write_object_npy(path, payload: bytes) -> None:
    """Write a .npy exactly like np.save of a 0-d object array, but with an arbitrary pickle payload."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        f.write(payload)


class _RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_real_lvs_file_loads(shared_data):
    d = load_npy(shared_data / "lvs_mini" / "bikes1" / "detectron_large_mask_rcnn_1_bikes1000.npy")
    assert isinstance(d, dict) and sorted(d) == list(range(250))
    boxes, classes, scores, masks = d[0]
    assert boxes.dtype == np.float64 and boxes.shape[1] == 4
    assert classes.dtype == np.int32 and scores.dtype == np.float32
    assert masks.shape[1:] == (28, 28) and masks.dtype == np.float32
    assert len(boxes) == len(classes) == len(scores) == len(masks)


def test_np_save_dict_roundtrip(tmp_path):
    d = {
        0: (
            np.zeros((1, 4)),
            np.array([3], np.int32),
            np.array([0.9], np.float32),
            np.ones((1, 28, 28), np.float32),
        ),
        1: (
            np.zeros((0, 4)),
            np.zeros(0, np.int32),
            np.zeros(0, np.float32),
            np.zeros((0, 28, 28), np.float32),
        ),
        "meta": [1, 2.5, "x", (np.float32(3.0), np.int64(7))],
    }
    path = tmp_path / "d.npy"
    np.save(path, d, allow_pickle=True)
    out = load_npy(path)
    assert out[0][1].tolist() == [3] and out[1][3].shape == (0, 28, 28)
    assert out["meta"][3][1] == 7


def test_command_pickle_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npy"
    _write_object_npy(path, pickle.dumps(_RunsCommand(marker), protocol=4))
    with pytest.raises(UnsafePickleError) as e:
        load_npy(path)
    msg = str(e.value)
    assert str(path) in msg and "system" in msg and "\n" not in msg
    assert not marker.exists()


def test_command_nested_inside_dict_refused(tmp_path):
    marker = tmp_path / "pwned2"
    path = tmp_path / "evil2.npy"
    arr = np.empty((), object)
    arr[()] = {0: (np.zeros((1, 4)), _RunsCommand(marker))}
    _write_object_npy(path, pickle.dumps(arr, protocol=4))
    with pytest.raises(UnsafePickleError, match="refusing to unpickle global"):
        load_npy(path)
    assert not marker.exists()


def test_other_globals_refused():
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        safe_unpickle(b"cbuiltins\neval\n(S'1+1'\ntR.", source="x.pkl")


def test_truncated_and_garbage_files(tmp_path, shared_data):
    src = (shared_data / "lvs_mini" / "bikes1" / "detectron_large_mask_rcnn_1_bikes1000.npy").read_bytes()
    trunc = tmp_path / "trunc.npy"
    trunc.write_bytes(src[: len(src) // 2])
    with pytest.raises(DataError, match="trunc.npy: corrupt or truncated pickle"):
        load_npy(trunc)
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"hello world")
    with pytest.raises(DataError, match="junk.npy: not a valid .npy"):
        load_npy(junk)
    with pytest.raises(DataError, match="file not found"):
        load_npy(tmp_path / "nope.npy")


def test_numeric_npy_loads_without_pickle(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.arange(6, dtype=np.int16).reshape(2, 3))
    assert load_npy(path).tolist() == [[0, 1, 2], [3, 4, 5]]

"""Safe loading of LVS teacher ``.npy`` files without running arbitrary pickled code.

An LVS teacher file is what ``np.save(path, detections_dict)`` writes: a ``.npy`` header declaring a 0-d
object array (``descr '|O'``, shape ``()``) followed by a pickle of that array. Unpickling with
``np.load(allow_pickle=True)`` can call any importable function, so we unpickle with an allow-list that only
rebuilds numpy arrays, dtypes and numpy scalars. Plain containers (dict, list, tuple, int, float, str,
bytes) need no globals at all in pickle protocols 2-5.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from jitnet_jax.data.label_store import DataError

#: (module, name) pairs an LVS teacher pickle may reference. ``numpy.core`` is the numpy<2 spelling.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
)


class UnsafePickleError(DataError):
    """A pickle referenced a global outside :data:`ALLOWED_GLOBALS`."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, source: str):
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if module == "numpy.dtypes" and name.endswith("DType") and name.isidentifier():
            # numpy>=2 may pickle dtype classes (e.g. numpy.dtypes.Float32DType); they are inert.
            import numpy.dtypes as dtypes

            cls = getattr(dtypes, name, None)
            if isinstance(cls, type) and issubclass(cls, np.dtype):
                return cls
        raise UnsafePickleError(
            f"{self._source}: refusing to unpickle global '{module}.{name}' (only numpy arrays, dtypes, "
            "scalars and plain containers are allowed)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._source}: refusing pickle persistent id {pid!r}")


def safe_unpickle(data: bytes | BinaryIO, source: str = "<pickle>") -> Any:
    """Unpickle ``data`` allowing only numpy arrays/dtypes/scalars and plain containers.

    Raises:
      UnsafePickleError: the pickle references any other global (message names ``source`` and the global).
      DataError: the pickle is truncated or malformed.
    """
    f = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    try:
        return _RestrictedUnpickler(f, source).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DataError(f"{source}: corrupt or truncated pickle ({type(e).__name__}: {e})") from None


def load_npy(path: str | os.PathLike) -> Any:
    """Load a ``.npy`` file safely.

    Numeric arrays are read with ``allow_pickle=False``. Object arrays (the LVS teacher format) are unpickled
    with :func:`safe_unpickle`; a 0-d object array is unwrapped to the object it holds (the detections dict).

    Raises:
      DataError: missing file, bad ``.npy`` header, corrupt pickle (message names the file).
      UnsafePickleError: the pickle references a refused global (message names the file and global).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                shape, fortran, dtype = np.lib.format._read_array_header(f, version)  # noqa: SLF001
        except (ValueError, OSError, SyntaxError) as e:
            raise DataError(f"{path}: not a valid .npy file ({e})") from None
        if not dtype.hasobject:
            f.seek(0)
            try:
                return np.load(f, allow_pickle=False)
            except (ValueError, OSError, EOFError) as e:
                raise DataError(f"{path}: corrupt .npy array data ({e})") from None
        obj = safe_unpickle(f, source=str(path))
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.shape == () and shape == ():
        return obj.item()
    return obj

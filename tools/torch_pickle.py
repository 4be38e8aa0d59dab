"""Read PyTorch checkpoints without torch.

Supports the legacy (pre-1.6, non-zip) `torch.save` format: a stream of pickles (magic number,
protocol version, system info, the object with storages as persistent ids, the storage keys) followed
by each storage's raw bytes, preceded by its element count. The zip format (torch >= 1.6) is read too.
Every tensor comes back as a C-contiguous float32 numpy array.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C
_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str):
        self.dtype = np.dtype(_DTYPES[name])


class _Storage:
    def __init__(self, dtype, key):
        self.dtype, self.key, self.data = dtype, key, None


def _rebuild_tensor(storage, offset, size, stride, *rest):
    return ("tensor", storage, offset, tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
    def __init__(self, f, storages):
        super().__init__(f, encoding="latin1")
        self.storages = storages

    def find_class(self, module, name):
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    def persistent_load(self, pid):
        # legacy: ('storage', storage_type, key, location, size, [view_metadata])
        # zip:    ('storage', storage_type, key, location, numel)
        _, stype, key = pid[0], pid[1], pid[2]
        if key not in self.storages:
            self.storages[key] = _Storage(stype.dtype, key)
        return self.storages[key]


def _materialise(obj):
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _materialise(v)) for k, v in obj.items())
    if isinstance(obj, tuple) and len(obj) == 5 and obj[0] == "tensor":
        _, storage, offset, size, stride = obj
        item = storage.dtype.itemsize
        arr = np.lib.stride_tricks.as_strided(
            storage.data[offset:], shape=size, strides=tuple(s * item for s in stride)
        )
        return np.ascontiguousarray(arr, dtype=np.float32) if storage.dtype.kind == "f" else np.array(arr)
    return obj


def load(path: str) -> collections.OrderedDict[str, np.ndarray]:
    """Load a state dict: name -> numpy array (floating tensors as float32)."""
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    storages: dict = {}
    with open(path, "rb") as f:
        if pickle.load(f) != MAGIC:
            raise ValueError(f"{path}: not a PyTorch checkpoint (bad magic number)")
        pickle.load(f)  # protocol version
        pickle.load(f)  # system info
        obj = _Unpickler(f, storages).load()
        keys = pickle.load(f)
        for key in keys:
            (count,) = struct.unpack("<q", f.read(8))
            st = storages[key]
            st.data = np.frombuffer(f.read(count * st.dtype.itemsize), dtype=st.dtype)
    return _state_dict(_materialise(obj), path)


def _load_zip(path):
    storages: dict = {}
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        prefix = names[0].split("/")[0]
        obj = _Unpickler(io.BytesIO(z.read(f"{prefix}/data.pkl")), storages).load()
        for key, st in storages.items():
            st.data = np.frombuffer(z.read(f"{prefix}/data/{key}"), dtype=st.dtype)
    return _state_dict(_materialise(obj), path)


def _state_dict(obj, path):
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return obj

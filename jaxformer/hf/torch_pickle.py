"""Reads `torch.save` checkpoints (pytorch_model.bin) into numpy arrays without importing torch.

Mirrors the zip format of torch/serialization.py (PyTorch >= 1.6): `<name>/data.pkl` is a pickle
whose tensors are `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` calls and
whose storages are persistent ids `('storage', FloatStorage, key, location, numel)`; the bytes of
storage `key` are the zip member `<name>/data/<key>`, in the order given by `<name>/byteorder`.

The unpickler resolves only the few names a state dict needs (`_ALLOWED`) and refuses every other
global, so a checkpoint cannot run code on load (unlike a plain `pickle.load`).
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
import zlib
from pathlib import Path

import ml_dtypes
import numpy as np

# torch storage class -> element dtype of its bytes.
STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """Stands in for `torch.FloatStorage` etc.: only its dtype matters."""

    def __init__(self, name: str):
        self.name, self.dtype = name, np.dtype(STORAGE_DTYPES[name])


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, hooks=None, metadata=None
):
    """torch._utils._rebuild_tensor_v2: a strided view into a flat storage, copied out."""
    size, stride = tuple(size), tuple(stride)
    if any(n == 0 for n in size):
        return np.zeros(size, storage.dtype)
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if storage_offset < 0 or min(stride, default=0) < 0 or last >= storage.size:
        raise pickle.UnpicklingError(
            f"tensor of size {size}, stride {stride}, offset {storage_offset} reads past its "
            f"storage of {storage.size} elements"
        )
    view = np.lib.stride_tricks.as_strided(
        storage[storage_offset:], shape=size, strides=[s * storage.itemsize for s in stride]
    )
    return view.copy()


def _rebuild_parameter(data, requires_grad=False, hooks=None):
    """torch._utils._rebuild_parameter: an nn.Parameter is just its tensor here."""
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, byteorder: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.byteorder = archive, prefix, byteorder
        self.storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: a weights file should hold only "
                "tensors (allowed: " + ", ".join(f"{m}.{n}" for m, n in _ALLOWED) + ")"
            )
        return _ALLOWED[(module, name)]

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel)
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        _, storage_type, key, _, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unknown storage type {storage_type!r}")
        if key not in self.storages:
            raw = self.archive.read(f"{self.prefix}data/{key}")
            dtype = storage_type.dtype.newbyteorder("<" if self.byteorder == "little" else ">")
            flat = np.frombuffer(raw, dtype=dtype)
            if flat.size < numel:
                raise pickle.UnpicklingError(f"storage {key} holds {flat.size} of {numel} elements")
            self.storages[key] = flat.astype(storage_type.dtype, copy=False)
        return self.storages[key]


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a `torch.save(model.state_dict(), path)` file, as numpy arrays by name."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:1] == b"\x80" or head[:2] == b"\x1f\x8b":
        raise ValueError(
            f"{path} is in PyTorch's legacy (pre-1.6, non-zip) format, which jaxformer does not "
            "read; re-save it with a recent torch (`torch.save(torch.load(p), p)`) or convert it "
            "to model.safetensors"
        )
    if head != b"PK\x03\x04":
        raise ValueError(f"{path} is not a PyTorch checkpoint (expected a zip archive)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pkl = next((n for n in names if n.endswith("data.pkl")), None)
            if pkl is None:
                raise ValueError("no data.pkl in the archive")
            prefix = pkl.removesuffix("data.pkl")
            order = prefix + "byteorder"
            byteorder = archive.read(order).decode() if order in names else "little"
            state = _StateDictUnpickler(archive.read(pkl), archive, prefix, byteorder).load()
    except pickle.UnpicklingError as e:
        raise pickle.UnpicklingError(f"{path}: {e}") from e
    except (zipfile.BadZipFile, zlib.error, KeyError, EOFError, ValueError, OSError) as e:
        raise ValueError(
            f"{path} is truncated or corrupt ({type(e).__name__}: {e}); download or save it again"
        ) from e
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    return {k: v for k, v in state.items() if isinstance(v, np.ndarray)}

"""Reads `torch.save` checkpoints (pytorch_model.bin) into numpy arrays without importing torch.

Mirrors the zip format of torch/serialization.py (PyTorch >= 1.6): `<name>/data.pkl` is a pickle
whose tensors are `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` calls and
whose storages are persistent ids `('storage', FloatStorage, key, location, numel)`; the bytes of
storage `key` are the zip member `<name>/data/<key>`, in the order given by `<name>/byteorder`.

The unpickler resolves only the few names a state dict needs (`ALLOWED`) and refuses every other
global, so a checkpoint cannot run code on load (unlike a plain `pickle.load`). Each load gets
its own stand-ins for those names, storages and tensors, which nothing in the pickle can modify
(BUILD) or call (REDUCE) unless they are functions. Unpickling only records each tensor's
geometry; every one is checked against its storage and the file's size before any tensor
memory is allocated.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np

from jaxformer.hf import CheckpointError

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
ALLOWED = (
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    *(f"torch.{name}" for name in STORAGE_DTYPES),
)
MAX_DIMS = 64  # numpy's limit


class UnpicklingError(CheckpointError, pickle.UnpicklingError):
    """A pytorch_model.bin whose pickle is refused or does not describe a state dict."""


class _Refused(Exception):
    """Raised inside the unpickler; `load_state_dict` turns it into an UnpicklingError that
    names the file."""


class _StandIn:
    """Base of the objects the unpickler hands out: immutable, and refusing pickle's BUILD
    (`__setstate__`) and REDUCE (a call), so a crafted pickle cannot change them."""

    __slots__ = ()

    def __setattr__(self, name, value):
        raise _Refused(f"the pickle sets attribute {name!r} of {self!r}")

    def __delattr__(self, name):
        raise _Refused(f"the pickle deletes attribute {name!r} of {self!r}")

    def __setstate__(self, state):
        raise _Refused(f"the pickle sets the state of {self!r} (BUILD)")

    def __call__(self, *args, **kwargs):
        raise _Refused(f"the pickle calls {self!r} (REDUCE), which is not a function")


class _StorageType(_StandIn):
    """Stands in for `torch.FloatStorage` etc.: only its dtype matters."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", np.dtype(STORAGE_DTYPES[name]))

    def __repr__(self):
        return f"torch.{self.name}"


class _Storage(_StandIn):
    """A persistent id's storage: `numel` elements of `dtype` in zip member `member`."""

    __slots__ = ("key", "member", "dtype", "numel")

    def __init__(self, key: str, member: str, dtype: np.dtype, numel: int):
        for name, value in (("key", key), ("member", member), ("dtype", dtype), ("numel", numel)):
            object.__setattr__(self, name, value)

    def __repr__(self):
        return f"storage {self.key!r} ({self.numel} x {self.dtype.name})"


class _Tensor(_StandIn):
    """A tensor as the pickle describes it, materialised only after the whole pickle is read."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        for name, value in (("storage", storage), ("offset", offset), ("size", size)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "stride", stride)

    def __repr__(self):
        return f"tensor of size {self.size}, stride {self.stride}, offset {self.offset}"

    @property
    def numel(self) -> int:
        return math.prod(self.size)

    @property
    def contiguous(self) -> bool:
        """Whether the tensor is the flat slice storage[offset : offset + numel]."""
        expected = 1
        for n, s in zip(reversed(self.size), reversed(self.stride), strict=True):
            if n != 1 and s != expected:
                return False
            expected *= n
        return True


class _Function(_StandIn):
    """Stands in for an allowed callable global, so the pickle cannot reach the real one's
    attributes (`__defaults__`, ...)."""

    __slots__ = ("name", "fn")

    def __init__(self, name: str, fn):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "fn", fn)

    def __repr__(self):
        return self.name

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, hooks=None, metadata=None
) -> _Tensor:
    """torch._utils._rebuild_tensor_v2: a strided view into a flat storage."""
    if not isinstance(storage, _Storage):
        raise _Refused(f"a tensor's storage is {type(storage).__name__}, not a storage")
    if not (isinstance(size, tuple | list) and isinstance(stride, tuple | list)):
        raise _Refused(f"a tensor's size {size!r} or stride {stride!r} is not a tuple")
    size, stride = tuple(size), tuple(stride)
    tensor = _Tensor(storage, storage_offset, size, stride)
    if not (_is_int(storage_offset) and all(map(_is_int, size + stride))):
        raise _Refused(f"{tensor}: offset, sizes and strides must be integers")
    if len(size) != len(stride) or len(size) > MAX_DIMS:
        raise _Refused(f"{tensor}: size and stride must have the same length, at most {MAX_DIMS}")
    if storage_offset < 0 or min(size + stride, default=0) < 0:
        raise _Refused(f"{tensor}: negative offset, size or stride")
    if tensor.numel:
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if last >= storage.numel:
            raise _Refused(f"{tensor} reads past the end of its {storage}")
    return tensor


def _rebuild_parameter(data, requires_grad=False, hooks=None) -> _Tensor:
    """torch._utils._rebuild_parameter: an nn.Parameter is just its tensor here."""
    if not isinstance(data, _Tensor):
        raise _Refused(f"a parameter's data is {type(data).__name__}, not a tensor")
    return data


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, byteorder: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.byteorder = archive, prefix, byteorder
        self.storages: dict[str, _Storage] = {}
        self.globals = {
            "collections.OrderedDict": _Function("collections.OrderedDict", _ordered_dict),
            "torch._utils._rebuild_tensor_v2": _Function(
                "torch._utils._rebuild_tensor_v2", _rebuild_tensor_v2
            ),
            "torch._utils._rebuild_parameter": _Function(
                "torch._utils._rebuild_parameter", _rebuild_parameter
            ),
            **{f"torch.{name}": _StorageType(name) for name in STORAGE_DTYPES},
        }

    def find_class(self, module: str, name: str):
        stand_in = self.globals.get(f"{module}.{name}")
        if stand_in is None:
            raise _Refused(
                f"refusing to load global {module}.{name}: a weights file should hold only "
                f"tensors (allowed: {', '.join(ALLOWED)})"
            )
        return stand_in

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel)
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise _Refused(f"unknown persistent id {pid!r}")
        _, storage_type, key, _, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise _Refused(f"unknown storage type {storage_type!r}")
        if not (isinstance(key, str) and _is_int(numel) and numel >= 0):
            raise _Refused(f"storage key {key!r} or element count {numel!r} is malformed")
        if key in self.storages:
            storage = self.storages[key]
            if (storage.dtype, storage.numel) != (storage_type.dtype, numel):
                raise _Refused(f"{storage} is also named as {numel} x {storage_type.dtype.name}")
            return storage
        member = f"{self.prefix}data/{key}"
        try:
            info = self.archive.getinfo(member)
        except KeyError:
            raise _Refused(f"storage {key!r} has no zip member {member}") from None
        if info.file_size < numel * storage_type.dtype.itemsize:
            raise _Refused(
                f"storage {key!r} should hold {numel} x {storage_type.dtype.name} but its zip "
                f"member has {info.file_size} bytes"
            )
        self.storages[key] = _Storage(key, member, storage_type.dtype, numel)
        return self.storages[key]


def _ordered_dict(*args, **kwargs) -> collections.OrderedDict:
    return collections.OrderedDict(*args, **kwargs)


def _materialise(
    tensors: dict[str, _Tensor], archive: zipfile.ZipFile, byteorder: str, file_size: int
) -> dict[str, np.ndarray]:
    """The tensors as numpy arrays: a contiguous tensor is a view of its storage's bytes, any
    other a copy. The copies together may not be larger than the file, which bounds the memory
    a crafted file (zero strides, many views of one storage) can make us allocate."""
    copied = sum(t.numel * t.storage.dtype.itemsize for t in tensors.values() if not t.contiguous)
    if copied > file_size:
        raise _Refused(
            f"its non-contiguous tensors would take {copied} bytes, more than the file's "
            f"{file_size}"
        )
    flats: dict[str, np.ndarray] = {}
    out = {}
    for name, t in tensors.items():
        s = t.storage
        if s.key not in flats:
            raw = archive.read(s.member)
            order = "<" if byteorder == "little" else ">"
            flat = np.frombuffer(raw, s.dtype.newbyteorder(order), count=s.numel)
            flats[s.key] = flat.astype(s.dtype, copy=False)
        flat = flats[s.key]
        if t.contiguous:
            out[name] = flat[t.offset : t.offset + t.numel].reshape(t.size)
        else:
            view = np.lib.stride_tricks.as_strided(
                flat[t.offset :], shape=t.size, strides=[x * s.dtype.itemsize for x in t.stride]
            )
            out[name] = view.copy()
    return out


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a `torch.save(model.state_dict(), path)` file, as numpy arrays by name.

    Raises CheckpointError (a ValueError) naming the file for anything that is not a readable
    state dict; an UnpicklingError (also a `pickle.UnpicklingError`) when its pickle is refused.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:1] == b"\x80" or head[:2] == b"\x1f\x8b":
        raise CheckpointError(
            f"{path} is in PyTorch's legacy (pre-1.6, non-zip) format, which jaxformer does not "
            "read; re-save it with a recent torch (`torch.save(torch.load(p), p)`) or convert it "
            "to model.safetensors"
        )
    if head != b"PK\x03\x04":
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (expected a zip archive)")
    redo = "download or save it again"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pkl = next((n for n in names if n.endswith("data.pkl")), None)
            if pkl is None:
                raise CheckpointError(f"{path} is truncated or corrupt (no data.pkl); {redo}")
            prefix = pkl.removesuffix("data.pkl")
            order = prefix + "byteorder"
            byteorder = "little"
            if order in names:
                byteorder = archive.read(order)[:64].decode("ascii", "replace")
            if byteorder not in ("little", "big"):
                raise CheckpointError(f"{path}: {order} is {byteorder[:20]!r}, not little or big")
            try:
                state = _StateDictUnpickler(archive.read(pkl), archive, prefix, byteorder).load()
                if not isinstance(state, dict):
                    raise _Refused(f"it holds a {type(state).__name__}, not a state dict")
                tensors = {k: v for k, v in state.items() if isinstance(v, _Tensor)}
                bad = [k for k in tensors if not isinstance(k, str)]
                if bad:
                    raise _Refused(f"tensor names must be strings, not {bad[:3]!r}")
                return _materialise(tensors, archive, byteorder, path.stat().st_size)
            except _Refused as e:
                raise UnpicklingError(
                    f"{path}: {e}; jaxformer reads only state dicts saved by torch.save"
                ) from None
    except CheckpointError:
        raise
    except Exception as e:  # zipfile, zlib and the pickle machinery raise many types here
        raise CheckpointError(
            f"{path} is truncated or corrupt ({type(e).__name__}: {e}); {redo}"
        ) from e

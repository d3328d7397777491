"""The restricted unpickler for pytorch_model.bin against crafted files: pickles written opcode
by opcode, as an attacker or a damaged disk would leave them. Each must give the loader's own
error naming the file, allocate nothing large, and leave later loads in the process working."""

import pickle
import re
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest

from jaxformer.hf import CheckpointError, torch_pickle

# --- A few pickle opcodes (protocol 2), enough to write a torch state dict by hand. ---
PROTO, STOP, MARK, TUPLE, REDUCE, BUILD = b"\x80\x02", b".", b"(", b"t", b"R", b"b"
EMPTY_DICT, EMPTY_TUPLE, SETITEM, SETITEMS, POP = b"}", b")", b"s", b"u", b"0"
BINPERSID, NEWFALSE, NEWTRUE, NONE = b"Q", b"\x89", b"\x88", b"N"


def glob(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def text(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def integer(n):
    return b"J" + struct.pack("<i", n)


def one_item_dict(key, value_ops):
    return EMPTY_DICT + text(key) + value_ops + SETITEM


def tup(*items):
    return MARK + b"".join(items) + TUPLE


def storage(key, numel, kind="FloatStorage"):
    return tup(text("storage"), glob("torch", kind), text(key), text("cpu"), integer(numel)) + (
        BINPERSID
    )


def tensor(storage_ops, offset, size, stride):
    args = tup(storage_ops, integer(offset), tup(*map(integer, size)), tup(*map(integer, stride)))
    return glob("torch._utils", "_rebuild_tensor_v2") + args[:-1] + NEWFALSE + TUPLE + REDUCE


def state_dict(**tensors):
    items = b"".join(text(k) + v for k, v in tensors.items())
    return PROTO + EMPTY_DICT + MARK + items + SETITEMS + STOP


def write_bin(path, pkl, storages=None):
    """A torch.save-style zip: archive/data.pkl, archive/byteorder, archive/data/<key>."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "little")
        for key, data in (storages or {}).items():
            z.writestr(f"archive/data/{key}", data)
    return path


VALUES = np.arange(6, dtype=np.float32)


@pytest.fixture
def valid_bin(tmp_path):
    """A hand-written state dict: "w" (2, 3) and its transpose "wt" (3, 2) over one storage."""
    w = storage("0", 6)
    pkl = state_dict(w=tensor(w, 0, (2, 3), (3, 1)), wt=tensor(w, 0, (3, 2), (1, 3)))
    return write_bin(tmp_path / "valid.bin", pkl, {"0": VALUES.tobytes()})


def assert_valid_loads(path):
    loaded = torch_pickle.load_state_dict(path)
    np.testing.assert_array_equal(loaded["w"], VALUES.reshape(2, 3))
    np.testing.assert_array_equal(loaded["wt"], VALUES.reshape(2, 3).T)
    assert loaded["w"].dtype == np.float32


def test_hand_written_state_dict_loads(valid_bin):
    assert_valid_loads(valid_bin)


def test_torch_saved_file_loads_after_crafted_ones(valid_bin, tmp_path):
    torch = pytest.importorskip("torch")
    crafted = PROTO + glob("torch", "FloatStorage") + one_item_dict("dtype", text("int8"))
    crafted += BUILD + STOP
    with pytest.raises(CheckpointError):
        torch_pickle.load_state_dict(write_bin(tmp_path / "evil.bin", crafted))
    state = {"a": torch.randn(4, 5), "b": torch.randn(3, 2).t()}
    torch.save(state, tmp_path / "real.bin")
    loaded = torch_pickle.load_state_dict(tmp_path / "real.bin")
    for k, v in state.items():
        np.testing.assert_array_equal(loaded[k], v.numpy())


# Each: (what the pickle does, its bytes, the error it must give).
CRAFTED = {
    "build_on_storage_type": (
        # BUILD on the stand-in, then a dict so the file otherwise reads as a state dict
        PROTO
        + glob("torch", "FloatStorage")
        + one_item_dict("dtype", text("int8"))
        + BUILD
        + POP
        + EMPTY_DICT
        + STOP,
        r"sets the state of torch\.FloatStorage \(BUILD\)",
    ),
    "slot_build_on_function": (
        PROTO
        + glob("torch._utils", "_rebuild_tensor_v2")
        + tup(NONE, one_item_dict("__defaults__", tup(NEWTRUE, NONE, NONE)))
        + BUILD
        + STOP,
        r"sets the state of torch\._utils\._rebuild_tensor_v2 \(BUILD\)",
    ),
    "reduce_on_storage_type": (
        PROTO + glob("torch", "FloatStorage") + EMPTY_TUPLE + REDUCE + STOP,
        r"calls torch\.FloatStorage \(REDUCE\), which is not a function",
    ),
    "reduce_on_storage": (
        state_dict(x=storage("0", 6) + EMPTY_TUPLE + REDUCE),
        r"calls storage '0' .*\(REDUCE\)",
    ),
    "build_on_tensor": (
        state_dict(
            x=tensor(storage("0", 6), 0, (6,), (1,)) + one_item_dict("size", text("x")) + BUILD
        ),
        r"sets the state of tensor of size \(6,\)",
    ),
    "string_as_storage": (
        state_dict(
            x=glob("torch._utils", "_rebuild_tensor_v2")
            + tup(text("s"), integer(0), tup(integer(1)), tup(integer(1)))
            + REDUCE
        ),
        "a tensor's storage is str, not a storage",
    ),
    "string_as_size": (
        state_dict(
            x=glob("torch._utils", "_rebuild_tensor_v2")
            + tup(storage("0", 6), integer(0), text("6"), tup(integer(1)))
            + REDUCE
        ),
        r"size '6' or stride \(1,\) is not a tuple",
    ),
    "float_offset": (
        state_dict(
            x=glob("torch._utils", "_rebuild_tensor_v2")
            + tup(storage("0", 6), b"G" + struct.pack(">d", 1.5), tup(integer(6)), tup(integer(1)))
            + REDUCE
        ),
        "offset, sizes and strides must be integers",
    ),
    "too_few_arguments": (
        state_dict(x=glob("torch._utils", "_rebuild_tensor_v2") + tup(storage("0", 6)) + REDUCE),
        r"truncated or corrupt \(TypeError: .*missing 3 required positional arguments",
    ),
    "past_the_storage": (
        state_dict(x=tensor(storage("0", 6), 4, (3,), (1,))),
        r"tensor of size \(3,\), stride \(1,\), offset 4 reads past the end of its storage",
    ),
    "negative_stride": (
        state_dict(x=tensor(storage("0", 6), 5, (3,), (-1,))),
        "negative offset, size or stride",
    ),
    "storage_larger_than_its_bytes": (
        state_dict(x=tensor(storage("0", 600), 0, (600,), (1,))),
        r"storage '0' should hold 600 x float32 but its zip member has 24 bytes",
    ),
    "storage_member_missing": (
        state_dict(x=tensor(storage("7", 6), 0, (6,), (1,))),
        r"storage '7' has no zip member archive/data/7",
    ),
    "same_storage_two_types": (
        state_dict(
            x=tensor(storage("0", 6), 0, (6,), (1,)),
            y=tensor(storage("0", 24, "ByteStorage"), 0, (24,), (1,)),
        ),
        r"storage '0' .* is also named as 24 x uint8",
    ),
    "not_a_dict": (PROTO + tup(integer(1)) + STOP, "it holds a tuple, not a state dict"),
    "other_global": (
        PROTO + glob("builtins", "eval") + tup(text("1")) + REDUCE + STOP,
        r"refusing to load global builtins\.eval",
    ),
}


@pytest.mark.parametrize("case", CRAFTED)
def test_crafted_pickle_is_refused_and_later_loads_work(case, valid_bin, tmp_path):
    pkl, message = CRAFTED[case]
    path = write_bin(tmp_path / f"{case}.bin", pkl, {"0": VALUES.tobytes()})
    with pytest.raises(
        CheckpointError, match=rf"{re.escape(str(tmp_path))}/{case}\.bin.*{message}"
    ) as info:
        torch_pickle.load_state_dict(path)
    assert isinstance(info.value, ValueError)
    assert_valid_loads(valid_bin)


def test_refused_pickle_is_also_an_unpickling_error(tmp_path):
    pkl = PROTO + glob("torch", "FloatStorage") + EMPTY_TUPLE + REDUCE + STOP
    with pytest.raises(pickle.UnpicklingError, match="REDUCE"):
        torch_pickle.load_state_dict(write_bin(tmp_path / "x.bin", pkl))


def test_zero_strides_do_not_allocate(tmp_path, valid_bin):
    """One float of storage viewed as 2**28 floats (1 GiB) through stride 0."""
    pkl = state_dict(x=tensor(storage("0", 1), 0, (2**28,), (0,)))
    path = write_bin(tmp_path / "zero_stride.bin", pkl, {"0": VALUES[:1].tobytes()})
    assert path.stat().st_size < 1024
    tracemalloc.start()
    try:
        with pytest.raises(
            CheckpointError,
            match=r"zero_stride\.bin: its non-contiguous tensors would take 1073741824 bytes, "
            r"more than the file's \d+",
        ):
            torch_pickle.load_state_dict(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert_valid_loads(valid_bin)


def test_expanded_tensor_within_the_storage_loads(tmp_path):
    """A (1, 6) view with stride 0 on its size-1 dim (torch's `expand`, as in BERT's
    position_ids buffer) is contiguous and shares the storage's bytes."""
    pkl = state_dict(x=tensor(storage("0", 6), 0, (1, 6), (0, 1)))
    loaded = torch_pickle.load_state_dict(
        write_bin(tmp_path / "x.bin", pkl, {"0": VALUES.tobytes()})
    )
    np.testing.assert_array_equal(loaded["x"], VALUES[None])


def test_many_copies_of_one_storage_are_bounded(tmp_path):
    """Many transposed views of one storage would each be a copy: together they may not
    exceed the file's size."""
    w = storage("0", 64 * 64)
    pkl = state_dict(**{f"t{i}": tensor(w, 0, (64, 64), (1, 64)) for i in range(200)})
    data = np.zeros(64 * 64, np.float32).tobytes()
    with pytest.raises(CheckpointError, match="non-contiguous tensors would take 3276800 bytes"):
        torch_pickle.load_state_dict(write_bin(tmp_path / "x.bin", pkl, {"0": data}))

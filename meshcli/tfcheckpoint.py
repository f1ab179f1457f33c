"""Reading TensorFlow V2 checkpoints ("tensor bundles") without TensorFlow.

A checkpoint ``PREFIX`` is two or more files:

``PREFIX.index``
    A LevelDB-layout sorted table. Data blocks hold prefix-compressed
    ``key -> value`` entries with restart points; every block is followed by a
    compression byte and a masked CRC-32C; a 48-byte footer at the end gives
    the handles (offset, size) of the meta-index and index blocks and the
    table magic. The index block maps a separator key to each data block.
    Key ``""`` holds a ``BundleHeaderProto`` (number of shards, endianness);
    every other key is a tensor name whose value is a ``BundleEntryProto``
    (dtype, shape, shard, offset, size, masked CRC-32C of the bytes).
``PREFIX.data-SSSSS-of-NNNNN``
    The raw tensor bytes, row-major, in the byte order the header names.

Protocol buffers are decoded by a small varint parser (the two messages have
only scalar, fixed32 and nested fields). Every block and every tensor read is
checked against its CRC-32C, so a corrupted or truncated file fails with an
error that names it instead of giving wrong numbers.
"""
from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import MeshcliError

__all__ = ["TFCheckpoint", "TensorEntry", "checkpoint_prefix", "crc32c", "masked_crc32c"]

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_BLOCK_TRAILER = 5  # compression type byte + masked CRC-32C
_MASK_DELTA = 0xA282EAD8

# TensorFlow DataType enum (types.proto) -> numpy dtype, for the types stored as raw bytes.
_DTYPES = {
    1: np.dtype("float32"), 2: np.dtype("float64"), 3: np.dtype("int32"), 4: np.dtype("uint8"),
    5: np.dtype("int16"), 6: np.dtype("int8"), 9: np.dtype("int64"), 10: np.dtype("bool"),
    17: np.dtype("uint16"), 19: np.dtype("float16"), 22: np.dtype("uint32"), 23: np.dtype("uint64"),
}
_DTYPE_NAMES = {7: "string", 8: "complex64", 14: "bfloat16", 18: "complex128", 20: "resource", 21: "variant"}

_FIX_REDOWNLOAD = "the checkpoint is damaged or incomplete; download it again"


# ------------------------------------------------------------------ CRC-32C
#
# Castagnoli CRC, reflected polynomial 0x82F63B78. The table-driven register
# update r <- T[(r ^ byte) & 0xFF] ^ (r >> 8) is linear over GF(2) in (r, data),
# which gives a fast numpy form: cut the buffer into many equal lanes, run all
# lanes at once from a zero register (eight bytes per step, "slicing-by-8"),
# then chain the lane results with the operator "feed L zero bytes", built by
# repeated squaring of the one-zero-byte operator.

def _byte_table() -> np.ndarray:
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(0x82F63B78), t >> 1).astype(np.uint32)
    return t


def _slice_tables(t0: np.ndarray) -> np.ndarray:
    """tables[k][b]: register contribution of byte b followed by k zero bytes."""
    tables = [t0]
    for _ in range(7):
        prev = tables[-1]
        tables.append(t0[prev & 0xFF] ^ (prev >> 8))
    return np.stack(tables)


_T = _slice_tables(_byte_table())
_T0_LIST = _T[0].tolist()


def _feed_bytes(reg: int, data: bytes) -> int:
    t = _T0_LIST
    for b in data:
        reg = t[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg


def _apply(op: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Apply a GF(2)-linear map of 32-bit registers, given as the images of the 32 unit vectors."""
    out = np.zeros_like(xs)
    for i in range(32):
        out ^= np.where((xs >> np.uint32(i)) & np.uint32(1), op[i], np.uint32(0))
    return out


@functools.lru_cache(maxsize=256)
def _zeros_tables(n: int) -> list[list[int]]:
    """The map "feed n zero bytes", as four 256-entry tables (one per register byte)."""
    unit = np.left_shift(np.uint32(1), np.arange(32, dtype=np.uint32))
    step = _T[0][unit & 0xFF] ^ (unit >> 8)  # one zero byte
    op = unit.copy()  # identity
    while n:
        if n & 1:
            op = _apply(step, op)
        n >>= 1
        if n:
            step = _apply(step, step)
    values = np.arange(256, dtype=np.uint32)
    return [_apply(op, values << np.uint32(8 * k)).tolist() for k in range(4)]


def _feed_lanes(buf: np.ndarray, lanes: int) -> np.ndarray:
    """Registers of `lanes` equal slices of `buf` (length a multiple of 8*lanes), each from zero."""
    words = buf.view("<u4").reshape(lanes, -1)
    reg = np.zeros(lanes, dtype=np.uint32)
    t = _T
    for j in range(0, words.shape[1], 2):
        lo = reg ^ words[:, j]
        hi = words[:, j + 1]
        reg = (t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24]
               ^ t[3][hi & 0xFF] ^ t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24])
    return reg


def _feed(reg: int, buf: np.ndarray) -> int:
    """The raw register after feeding `buf` (uint8, 1-D) into `reg`."""
    while buf.size >= 4096:
        # lanes of ~512 bytes (fewer, longer ones for big buffers: each lane costs a Python step)
        lanes = min(8192, buf.size >> 9)
        length = (buf.size // lanes) & ~7
        parts = _feed_lanes(buf[: lanes * length], lanes).tolist()
        z0, z1, z2, z3 = _zeros_tables(length)
        for p in parts:
            reg = z0[reg & 0xFF] ^ z1[(reg >> 8) & 0xFF] ^ z2[(reg >> 16) & 0xFF] ^ z3[reg >> 24] ^ p
        buf = buf[lanes * length:]
    return _feed_bytes(reg, buf.tobytes())


def crc32c(data: bytes | bytearray | memoryview | np.ndarray) -> int:
    """CRC-32C of a byte string or of a numpy array's raw bytes."""
    if isinstance(data, np.ndarray):
        buf = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    else:
        buf = np.frombuffer(data, dtype=np.uint8)
    return _feed(0xFFFFFFFF, buf) ^ 0xFFFFFFFF


def masked_crc32c(data) -> int:
    """The CRC as LevelDB and TensorFlow store it (rotated and offset)."""
    c = crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


# ------------------------------------------------------------------ protobuf wire format

class _ParseError(ValueError):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise _ParseError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise _ParseError("varint too long")


def _fields(msg: bytes):
    """Yield (field number, wire type, value) of a protobuf message; value is int or bytes."""
    pos = 0
    while pos < len(msg):
        tag, pos = _varint(msg, pos)
        num, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(msg, pos)
        elif wire == 1:
            value, pos = int.from_bytes(msg[pos:pos + 8], "little"), pos + 8
        elif wire == 2:
            n, pos = _varint(msg, pos)
            value, pos = msg[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = int.from_bytes(msg[pos:pos + 4], "little"), pos + 4
        else:
            raise _ParseError(f"unsupported wire type {wire}")
        if pos > len(msg):
            raise _ParseError("truncated field")
        yield num, wire, value


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives in the data shards (a decoded BundleEntryProto)."""

    name: str
    dtype: int  # TensorFlow DataType enum
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int  # masked
    sliced: bool  # partitioned variable, stored as slices under other keys

    @property
    def numpy_dtype(self) -> np.dtype | None:
        return _DTYPES.get(self.dtype)

    @property
    def dtype_name(self) -> str:
        dt = self.numpy_dtype
        return str(dt) if dt is not None else _DTYPE_NAMES.get(self.dtype, f"dtype#{self.dtype}")


def _entry(name: str, msg: bytes) -> TensorEntry:
    dtype = shard = offset = size = crc = 0
    shape: list[int] = []
    sliced = False
    for num, _, value in _fields(msg):
        if num == 1:
            dtype = value
        elif num == 2:  # TensorShapeProto: repeated Dim (field 2) {size: 1}
            for snum, _, dim in _fields(value):
                if snum == 2:
                    shape.append(next((v for n, _, v in _fields(dim) if n == 1), 0))
                elif snum == 3 and dim:
                    raise _ParseError(f"tensor {name!r} has an unknown rank")
        elif num == 3:
            shard = value
        elif num == 4:
            offset = value
        elif num == 5:
            size = value
        elif num == 6:
            crc = value
        elif num == 7:
            sliced = True
    return TensorEntry(name, dtype, tuple(shape), shard, offset, size, crc, sliced)


def _header(msg: bytes) -> tuple[int, int]:
    """(num_shards, endianness: 0 little, 1 big) of a BundleHeaderProto."""
    shards, endian = 0, 0
    for num, _, value in _fields(msg):
        if num == 1:
            shards = value
        elif num == 2:
            endian = value
    return shards, endian


# ------------------------------------------------------------------ sorted table

def _block_handle(buf: bytes, pos: int) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return offset, size, pos


def _block_entries(block: bytes):
    """Yield (key, value) of one table block, undoing the key prefix compression."""
    if len(block) < 4:
        raise _ParseError("block shorter than its restart count")
    restarts = int.from_bytes(block[-4:], "little")
    end = len(block) - 4 - 4 * restarts
    if end < 0:
        raise _ParseError("restart array larger than the block")
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        vlen, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + vlen > end:
            raise _ParseError("block entry runs past the block")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + vlen]
        pos += vlen


# ------------------------------------------------------------------ checkpoint

_SHARD_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")


def checkpoint_prefix(path: str | Path) -> Path:
    """The checkpoint prefix for a prefix, its ``.index`` file or one of its data shards."""
    text = os.fspath(path)
    if text.endswith(".index"):
        return Path(text[: -len(".index")])
    return Path(_SHARD_SUFFIX.sub("", text))


def is_tf_checkpoint(path: str | Path) -> bool:
    prefix = checkpoint_prefix(path)
    return Path(f"{prefix}.index").is_file()


class TFCheckpoint:
    """The tensors of a TF V2 checkpoint, read lazily and checksum-verified.

    ``TFCheckpoint("DIR/model.ckpt-667589")`` parses the index (verifying
    every block's CRC) and checks that each data shard is present and long
    enough for the tensors it should hold; ``read(name)`` returns one tensor
    as a numpy array after checking its CRC.
    """

    def __init__(self, path: str | Path):
        self.prefix = checkpoint_prefix(path)
        self.index_path = Path(f"{self.prefix}.index")
        if not self.index_path.is_file():
            raise MeshcliError(self.index_path, "TensorFlow checkpoint index not found",
                               "give the checkpoint prefix, e.g. DIR/model.ckpt-667589, whose "
                               ".index and .data-00000-of-00001 files sit beside each other")
        self.entries: dict[str, TensorEntry] = {}
        self.num_shards, self.big_endian = self._read_index()
        self._check_shards()

    # -- index
    def _fail(self, cause: str, path: Path | None = None) -> MeshcliError:
        return MeshcliError(path or self.index_path, cause, _FIX_REDOWNLOAD)

    def _block(self, data: bytes, offset: int, size: int, what: str) -> bytes:
        end = offset + size + _BLOCK_TRAILER
        if end > len(data):
            raise self._fail(f"{what} block at byte {offset} runs past the end of the file (truncated?)")
        block, kind = data[offset:offset + size], data[offset + size]
        stored = int.from_bytes(data[offset + size + 1:end], "little")
        if masked_crc32c(data[offset:offset + size + 1]) != stored:
            raise self._fail(f"checksum mismatch in the {what} block at byte {offset}")
        if kind != 0:
            raise self._fail(f"{what} block at byte {offset} is compressed (type {kind}); "
                             "only uncompressed tables are supported")
        return block

    def _read_index(self) -> tuple[int, bool]:
        data = self.index_path.read_bytes()
        if len(data) < _FOOTER_SIZE:
            raise self._fail(f"index file is {len(data)} bytes, shorter than a table footer")
        footer = data[-_FOOTER_SIZE:]
        if int.from_bytes(footer[-8:], "little") != _TABLE_MAGIC:
            raise self._fail("not a TensorFlow checkpoint index (bad table magic; truncated or another format)")
        try:
            _, _, pos = _block_handle(footer, 0)  # meta-index: unused by bundles
            index_off, index_size, _ = _block_handle(footer, pos)
            header = None
            index_block = self._block(data, index_off, index_size, "index")
            for _, handle in _block_entries(index_block):
                off, size, _ = _block_handle(handle, 0)
                for key, value in _block_entries(self._block(data, off, size, "data")):
                    if key == b"":
                        header = _header(value)
                        continue
                    name = key.decode("utf-8")
                    self.entries[name] = _entry(name, value)
        except _ParseError as err:
            raise self._fail(f"malformed checkpoint index ({err})") from None
        if header is None:
            raise self._fail("checkpoint index has no bundle header (key \"\")")
        shards, endian = header
        if shards < 1:
            raise self._fail(f"bundle header gives {shards} data shards")
        return shards, endian == 1

    def shard_path(self, shard: int) -> Path:
        return Path(f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}")

    def _check_shards(self) -> None:
        need: dict[int, tuple[int, str]] = {}
        for e in self.entries.values():
            if e.sliced:
                continue
            end = e.offset + e.size
            if end > need.get(e.shard, (0, ""))[0]:
                need[e.shard] = (end, e.name)
        for shard, (end, name) in sorted(need.items()):
            path = self.shard_path(shard)
            if not path.is_file():
                raise MeshcliError(path, "checkpoint data shard not found",
                                   f"keep it beside {self.index_path.name}, or download the checkpoint again")
            have = path.stat().st_size
            if have < end:
                raise MeshcliError(path, f"data shard is truncated: {have} bytes, but tensor {name!r} "
                                   f"ends at byte {end}", _FIX_REDOWNLOAD)

    # -- tensors
    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def __iter__(self):
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def read(self, name: str) -> np.ndarray:
        """One tensor as a numpy array (native byte order), CRC-checked."""
        if name not in self.entries:
            raise MeshcliError(self.index_path, f"variable {name!r} is not in the checkpoint",
                               "check that this is the right checkpoint for the method")
        e = self.entries[name]
        dtype = e.numpy_dtype
        if e.sliced or dtype is None:
            what = "is stored as slices (partitioned variable)" if e.sliced else f"has dtype {e.dtype_name}"
            raise MeshcliError(self.index_path, f"variable {name!r} {what}, which this reader does not support",
                               "use a checkpoint saved without partitioned variables")
        count = int(np.prod(e.shape, dtype=np.int64))
        if count * dtype.itemsize != e.size:
            raise self._fail(f"variable {name!r}: {e.size} bytes stored for shape {list(e.shape)} "
                             f"of {e.dtype_name}")
        path = self.shard_path(e.shard)
        with open(path, "rb") as fh:
            fh.seek(e.offset)
            raw = fh.read(e.size)
        if len(raw) != e.size:
            raise MeshcliError(path, f"data shard is truncated inside variable {name!r}", _FIX_REDOWNLOAD)
        buf = np.frombuffer(raw, dtype=np.uint8)
        if masked_crc32c(buf) != e.crc32c:
            raise self._fail(f"checksum mismatch in variable {name!r} (bytes {e.offset}..{e.offset + e.size})",
                             path)
        arr = buf.view(dtype.newbyteorder(">" if self.big_endian else "<")).reshape(e.shape)
        return arr.astype(dtype, copy=True)

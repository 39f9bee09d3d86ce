"""Read a TensorFlow checkpoint bundle (the V2 ``tf.train.Saver`` format) without TensorFlow.

A bundle with prefix ``P`` is two files:

- ``P.index``: a table in the LevelDB format (TensorFlow's ``core/lib/io/table``). The file is a sequence of
  blocks, each followed by a 5-byte trailer (1 byte compression type, 4 bytes masked CRC-32C), and ends in a
  48-byte footer: the metaindex and index block handles (varint64 offset, varint64 size each, zero-padded to 40
  bytes) and the magic number ``0xdb4775248b80fb57`` (little-endian fixed64). A block holds entries
  ``varint32 shared, varint32 non_shared, varint32 value_length, key[shared:], value`` (keys share a prefix
  with the previous key, reset at restart points), then a ``uint32`` array of restart offsets and their count.
  The index block maps the last key of each data block to that block's handle.
- ``P.data-00000-of-00001`` (one file per shard): the tensors' raw bytes, little-endian, row-major.

The value stored under the empty key is a ``BundleHeaderProto`` (``num_shards`` = 1, ``endianness`` = 2,
``version`` = 3); every other key is a tensor name whose value is a ``BundleEntryProto`` (``dtype`` = 1,
``shape`` = 2, ``shard_id`` = 3, ``offset`` = 4, ``size`` = 5, ``crc32c`` = 6 fixed32, ``slices`` = 7). These
few protobuf fields are decoded by hand from the wire format (varint = type 0, fixed64 = 1, length-delimited =
2, fixed32 = 5), so no protobuf package is needed.

Numeric tensors carry the masked CRC-32C of their bytes. String tensors are stored as the varint64 lengths of
all elements, a masked CRC-32C (``uint32``) of those lengths (each packed as a little-endian ``uint32``), then the
concatenated bytes; their entry's CRC covers the packed lengths, the checksum and the bytes. They load as
``object`` arrays of ``bytes``.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from musicsearch.errors import CheckpointError

__all__ = [
    "TABLE_MAGIC",
    "BundleEntry",
    "crc32c",
    "data_path",
    "index_path",
    "list_bundle",
    "masked_crc32c",
    "read_bundle",
    "read_table",
    "unmask_crc32c",
]

#: LevelDB's table magic number, the last 8 bytes of every ``.index`` file.
TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48
_BLOCK_TRAILER_LEN = 5

#: TensorFlow ``DataType`` enum values -> numpy dtypes (little-endian). ``DT_STRING`` (7) is handled apart.
_NUMPY_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    5: np.dtype("<i2"),  # DT_INT16
    6: np.dtype("i1"),  # DT_INT8
    8: np.dtype("<c8"),  # DT_COMPLEX64
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    17: np.dtype("<u2"),  # DT_UINT16
    18: np.dtype("<c16"),  # DT_COMPLEX128
    19: np.dtype("<f2"),  # DT_HALF
    22: np.dtype("<u4"),  # DT_UINT32
    23: np.dtype("<u8"),  # DT_UINT64
}
_DT_STRING = 7
_DT_NAMES = {14: "DT_BFLOAT16", 20: "DT_RESOURCE", 21: "DT_VARIANT", 11: "DT_QINT8", 12: "DT_QUINT8"}


# --- CRC-32C (Castagnoli), as LevelDB and TensorFlow use it -------------------------------------------------------


def _crc32c_table() -> list[int]:
    poly = 0x82F63B78  # reflected Castagnoli polynomial
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()
_MASK_DELTA = 0xA282EAD8


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32C of ``data`` (pure Python, about 10 MB/s; used only when verification is asked for).

    Args:
        data: the bytes.
        crc: a previous CRC to extend (0 to start).

    Returns:
        The unmasked 32-bit CRC-32C.
    """
    c = crc ^ 0xFFFFFFFF
    table = _CRC_TABLE
    for b in bytes(data):
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    """LevelDB's masked CRC: ``rotate_right(crc, 15) + 0xa282ead8`` (mod 2**32), as stored in the files."""
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def unmask_crc32c(masked: int) -> int:
    """Inverse of the mask applied by :func:`masked_crc32c`."""
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# --- wire-format helpers -----------------------------------------------------------------------------------------


def _varint(buf: bytes, pos: int, where: str) -> tuple[int, int]:
    """Decode a base-128 varint at ``buf[pos]``; return ``(value, next_pos)``."""
    result = 0
    shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise CheckpointError(f"truncated or malformed varint in {where}; the checkpoint file is corrupt")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _proto_fields(buf: bytes, where: str) -> list[tuple[int, int, int | bytes]]:
    """Split a protobuf message into ``(field_number, wire_type, value)``; length-delimited values are bytes."""
    fields: list[tuple[int, int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos, where)
        field, wire = tag >> 3, tag & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos, where)
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos, where)
            value, pos = bytes(buf[pos : pos + n]), pos + n
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire} in {where}; the checkpoint file is corrupt")
        if pos > len(buf):
            raise CheckpointError(f"truncated protobuf field {field} in {where}; the checkpoint file is corrupt")
        fields.append((field, wire, value))
    return fields


def _signed64(v: int) -> int:
    """Reinterpret a varint-decoded uint64 as int64 (protobuf encodes negative int64 in 10 bytes)."""
    return v - (1 << 64) if v >= 1 << 63 else v


@dataclass(frozen=True)
class BundleEntry:
    """Where one tensor lives in the data file(s), from its ``BundleEntryProto``.

    Attributes:
        name: the tensor's (variable's) name, e.g. ``"conv2d/kernel"``.
        dtype: TensorFlow ``DataType`` enum value (1 = float32).
        shape: the dimensions (``()`` for a scalar).
        shard_id: which ``.data-SSSSS-of-NNNNN`` file.
        offset: byte offset in that file.
        size: byte length in that file.
        crc32c: the masked CRC-32C of those bytes as stored (0 when absent).
        sliced: whether the entry is a partitioned variable (slices only; not supported for reading).
    """

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int
    sliced: bool

    @property
    def numpy_dtype(self) -> np.dtype | None:
        """The numpy dtype for numeric tensors, ``None`` for strings or unsupported types."""
        return _NUMPY_DTYPES.get(self.dtype)


def _parse_shape(buf: bytes, where: str) -> tuple[int, ...]:
    dims: list[int] = []
    for field, wire, value in _proto_fields(buf, where):
        if field == 2 and wire == 2:  # Dim
            assert isinstance(value, bytes)
            size = 0
            for f2, w2, v2 in _proto_fields(value, where):
                if f2 == 1 and w2 == 0:
                    assert isinstance(v2, int)
                    size = _signed64(v2)
            dims.append(size)
        elif field == 3 and wire == 0 and value:
            raise CheckpointError(f"{where} has a shape of unknown rank; cannot read it")
    if any(d < 0 for d in dims):
        raise CheckpointError(f"{where} has a partially unknown shape {dims}; cannot read it")
    return tuple(dims)


def _parse_entry(name: str, buf: bytes) -> BundleEntry:
    where = f"the index entry of tensor {name!r}"
    dtype = shard_id = offset = size = crc = 0
    shape: tuple[int, ...] = ()
    sliced = False
    for field, wire, value in _proto_fields(buf, where):
        if field == 1 and wire == 0:
            assert isinstance(value, int)
            dtype = value
        elif field == 2 and wire == 2:
            assert isinstance(value, bytes)
            shape = _parse_shape(value, where)
        elif field == 3 and wire == 0:
            assert isinstance(value, int)
            shard_id = value
        elif field == 4 and wire == 0:
            assert isinstance(value, int)
            offset = _signed64(value)
        elif field == 5 and wire == 0:
            assert isinstance(value, int)
            size = _signed64(value)
        elif field == 6 and wire == 5:
            assert isinstance(value, int)
            crc = value
        elif field == 7:
            sliced = True
    return BundleEntry(name, dtype, shape, shard_id, offset, size, crc, sliced)


# --- the table (SSTable) -----------------------------------------------------------------------------------------


def _block(data: bytes, offset: int, size: int, path: Path, verify: bool) -> bytes:
    """The contents of the block at ``offset`` (``size`` bytes, trailer after it), checked and uncompressed."""
    end = offset + size + _BLOCK_TRAILER_LEN
    if offset < 0 or size < 0 or end > len(data):
        raise CheckpointError(f"{path}: a block handle points past the end of the file; the file is truncated")
    contents = data[offset : offset + size]
    kind = data[offset + size]
    if kind != 0:
        name = {1: "snappy", 2: "zlib"}.get(kind, f"type {kind}")
        raise CheckpointError(f"{path}: block compressed with {name}; only uncompressed tables can be read")
    if verify:
        stored = int.from_bytes(data[offset + size + 1 : end], "little")
        if unmask_crc32c(stored) != crc32c(data[offset : offset + size + 1]):
            raise CheckpointError(f"{path}: block at byte {offset} fails its CRC-32C check; the file is corrupt")
    return contents


def _block_entries(block: bytes, where: str) -> list[tuple[bytes, bytes]]:
    """All ``(key, value)`` pairs of one block, keys rebuilt from their shared prefixes."""
    if len(block) < 4:
        raise CheckpointError(f"{where}: block shorter than its restart count; the file is corrupt")
    num_restarts = int.from_bytes(block[-4:], "little")
    restarts_start = len(block) - 4 - 4 * num_restarts
    if num_restarts < 1 or restarts_start < 0:
        raise CheckpointError(f"{where}: bad restart array ({num_restarts} restarts); the file is corrupt")
    restarts = {
        int.from_bytes(block[restarts_start + 4 * i : restarts_start + 4 * i + 4], "little")
        for i in range(num_restarts)
    }
    out: list[tuple[bytes, bytes]] = []
    pos = 0
    key = b""
    while pos < restarts_start:
        entry_start = pos
        shared, pos = _varint(block, pos, where)
        non_shared, pos = _varint(block, pos, where)
        value_len, pos = _varint(block, pos, where)
        if shared > len(key) or (entry_start in restarts and shared != 0):
            raise CheckpointError(f"{where}: entry at byte {entry_start} shares more than the previous key")
        if pos + non_shared + value_len > restarts_start:
            raise CheckpointError(f"{where}: entry at byte {entry_start} runs past the block")
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        out.append((key, block[pos : pos + value_len]))
        pos += value_len
    return out


def read_table(path: str | os.PathLike[str], *, verify: bool = False) -> list[tuple[bytes, bytes]]:
    """Every ``(key, value)`` of a LevelDB-format table file, in key order.

    Args:
        path: the table file (a checkpoint's ``.index``).
        verify: also check each block's CRC-32C (slower).

    Returns:
        The entries of all data blocks, in file order (which is key order).

    Raises:
        CheckpointError: the file is missing, too short, has a wrong magic number, is compressed or corrupt.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint index {p}: {exc}; check the path") from exc
    if len(data) < _FOOTER_LEN:
        raise CheckpointError(f"{p} is {len(data)} bytes, shorter than a table footer; it is not a checkpoint index")
    footer = data[-_FOOTER_LEN:]
    magic = int.from_bytes(footer[-8:], "little")
    if magic != TABLE_MAGIC:
        raise CheckpointError(f"{p} has magic number {magic:#x}, not {TABLE_MAGIC:#x}; it is not a checkpoint index")
    where = f"{p} footer"
    _meta_off, pos = _varint(footer, 0, where)
    _meta_size, pos = _varint(footer, pos, where)
    index_off, pos = _varint(footer, pos, where)
    index_size, pos = _varint(footer, pos, where)
    body = data[: len(data) - _FOOTER_LEN]
    index_block = _block(body, index_off, index_size, p, verify)
    entries: list[tuple[bytes, bytes]] = []
    for _last_key, handle in _block_entries(index_block, f"{p} index block"):
        off, hp = _varint(handle, 0, f"{p} index block")
        size, _ = _varint(handle, hp, f"{p} index block")
        entries.extend(_block_entries(_block(body, off, size, p, verify), f"{p} data block at byte {off}"))
    return entries


# --- the bundle ---------------------------------------------------------------------------------------------------


def index_path(prefix: str | os.PathLike[str]) -> Path:
    """``PREFIX.index``; a prefix ending in a path separator (musicnn's ``"MTT_musicnn/"``) gives ``DIR/.index``."""
    return Path(os.fspath(prefix) + ".index")


def data_path(prefix: str | os.PathLike[str], shard: int, num_shards: int) -> Path:
    """``PREFIX.data-SSSSS-of-NNNNN``, the data file of one shard."""
    return Path(f"{os.fspath(prefix)}.data-{shard:05d}-of-{num_shards:05d}")


def list_bundle(prefix: str | os.PathLike[str], *, verify: bool = False) -> tuple[int, list[BundleEntry]]:
    """Parse a bundle's index: its shard count and one :class:`BundleEntry` per tensor (sorted by name).

    Args:
        prefix: the checkpoint prefix (the path without ``.index``).
        verify: check the index blocks' CRCs.

    Returns:
        ``(num_shards, entries)``.

    Raises:
        CheckpointError: missing/corrupt index, no header, big-endian data.
    """
    path = index_path(prefix)
    num_shards: int | None = None
    entries: list[BundleEntry] = []
    for key, value in read_table(path, verify=verify):
        if key == b"":
            num_shards = 1
            for field, wire, v in _proto_fields(value, f"{path} header"):
                if field == 1 and wire == 0:
                    assert isinstance(v, int)
                    num_shards = v
                elif field == 2 and wire == 0 and v != 0:
                    raise CheckpointError(f"{path} stores big-endian tensors; only little-endian can be read")
            continue
        entries.append(_parse_entry(key.decode("utf-8"), value))
    if num_shards is None:
        raise CheckpointError(f"{path} has no bundle header (empty key); it is not a TensorFlow V2 checkpoint")
    return num_shards, entries


def _decode_strings(raw: bytes, n: int, name: str, stored_crc: int, verify: bool) -> np.ndarray:
    """Split a string tensor's bytes into ``n`` elements (layout in the module docstring)."""
    where = f"string tensor {name!r}"
    lengths: list[int] = []
    pos = 0
    for _ in range(n):
        ln, pos = _varint(raw, pos, where)
        lengths.append(ln)
    if pos + 4 > len(raw):
        raise CheckpointError(f"{where}: truncated before its length checksum; the file is corrupt")
    checksum_bytes = raw[pos : pos + 4]
    pos += 4
    out = np.empty(n, dtype=object)
    for i, ln in enumerate(lengths):
        out[i] = raw[pos : pos + ln]
        pos += ln
    if pos != len(raw):
        raise CheckpointError(f"{where}: {len(raw)} bytes stored, {pos} described; the file is corrupt")
    if verify:
        # TF checksums each length as a little-endian uint32 (uint64 above 2**32 - 1), not the varint bytes.
        packed = b"".join(struct.pack("<I" if ln <= 0xFFFFFFFF else "<Q", ln) for ln in lengths)
        crc = crc32c(packed)
        if unmask_crc32c(int.from_bytes(checksum_bytes, "little")) != crc:
            raise CheckpointError(f"{where}: lengths fail their CRC-32C check; the file is corrupt")
        crc = crc32c(checksum_bytes, crc)
        for item in out:
            crc = crc32c(item, crc)
        if stored_crc and unmask_crc32c(stored_crc) != crc:
            raise CheckpointError(f"{where} fails its CRC-32C check; the data file is corrupt")
    return out


def read_bundle(
    prefix: str | os.PathLike[str], *, names: list[str] | None = None, verify: bool = False
) -> dict[str, np.ndarray]:
    """Load the tensors of a TensorFlow V2 checkpoint as numpy arrays.

    Args:
        prefix: the checkpoint prefix (``PREFIX.index`` and ``PREFIX.data-*`` must exist).
        names: load only these tensors (all when ``None``); an unknown name raises.
        verify: check the CRC-32C of every block and tensor (pure Python, about a second per 10 MB).

    Returns:
        ``{name: array}``, each array of its stored shape and dtype (numeric types; strings as ``object``
        arrays of ``bytes``), owning its memory.

    Raises:
        CheckpointError: missing files, sizes that disagree with shapes, unsupported dtypes or sliced variables,
            CRC mismatches (with ``verify``).
    """
    num_shards, entries = list_bundle(prefix, verify=verify)
    by_name = {e.name: e for e in entries}
    if names is not None:
        unknown = sorted(set(names) - set(by_name))
        if unknown:
            raise CheckpointError(f"{index_path(prefix)} has no tensors named {unknown}; it has {sorted(by_name)}")
        entries = [by_name[n] for n in names]
    shards: dict[int, bytes] = {}
    out: dict[str, np.ndarray] = {}
    for e in entries:
        if e.sliced:
            raise CheckpointError(f"tensor {e.name!r} is a partitioned (sliced) variable; these cannot be read")
        if not 0 <= e.shard_id < num_shards:
            raise CheckpointError(f"tensor {e.name!r} names shard {e.shard_id} of {num_shards}; index is corrupt")
        if e.shard_id not in shards:
            dp = data_path(prefix, e.shard_id, num_shards)
            try:
                shards[e.shard_id] = dp.read_bytes()
            except OSError as exc:
                raise CheckpointError(
                    f"cannot read checkpoint data file {dp}: {exc}; it must sit beside the index"
                ) from exc
        blob = shards[e.shard_id]
        if e.offset < 0 or e.size < 0 or e.offset + e.size > len(blob):
            raise CheckpointError(
                f"tensor {e.name!r} spans bytes {e.offset}..{e.offset + e.size} of a {len(blob)}-byte data file; "
                "the data file is truncated or belongs to another checkpoint"
            )
        raw = blob[e.offset : e.offset + e.size]
        count = int(np.prod(e.shape, dtype=np.int64))
        if e.dtype == _DT_STRING:
            out[e.name] = _decode_strings(raw, count, e.name, e.crc32c, verify).reshape(e.shape)
        else:
            dt = e.numpy_dtype
            if dt is None:
                kind = _DT_NAMES.get(e.dtype, f"DataType {e.dtype}")
                raise CheckpointError(f"tensor {e.name!r} has type {kind}, which this reader does not support")
            if count * dt.itemsize != e.size:
                raise CheckpointError(
                    f"tensor {e.name!r}: shape {e.shape} of {dt} needs {count * dt.itemsize} bytes, the index says "
                    f"{e.size}; the checkpoint is corrupt"
                )
            if verify and e.crc32c and unmask_crc32c(e.crc32c) != crc32c(raw):
                raise CheckpointError(f"tensor {e.name!r} fails its CRC-32C check; the data file is corrupt")
            out[e.name] = np.frombuffer(raw, dtype=dt).reshape(e.shape).copy()
    return out

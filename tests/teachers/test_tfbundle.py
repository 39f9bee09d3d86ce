"""The TensorFlow checkpoint reader against TensorFlow's own view of the same files.

References: ``tests/teachers/data/reference/bundle_tf_listing.json`` (every variable of the four shipped
musicnn checkpoints as ``tf.compat.v1.train.NewCheckpointReader`` reads them) and ``tests/teachers/data/
tiny_bundle.*`` (written by ``tf.raw_ops.SaveV2``), both made by ``make_reference.py``.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from musicsearch.errors import CheckpointError
from musicsearch.teachers import tfbundle
from musicsearch.teachers.musicnn import MODEL_NAMES, checkpoint_prefix

DATA = Path(__file__).resolve().parent / "data"
REFERENCE = Path(__file__).resolve().parent / "data" / "reference"

pytest.importorskip("musicnn.configuration", reason="needs `pip install --no-deps musicnn` (checkpoint files)")


def test_crc32c_known_vectors() -> None:
    # RFC 3720 appendix B.4 check value and the 32 zero bytes vector.
    assert tfbundle.crc32c(b"123456789") == 0xE3069283
    assert tfbundle.crc32c(bytes(32)) == 0x8A9136AA
    assert tfbundle.crc32c(b"6789", tfbundle.crc32c(b"12345")) == 0xE3069283
    for data in (b"", b"a", b"musicnn" * 100):
        c = tfbundle.crc32c(data)
        assert tfbundle.unmask_crc32c(tfbundle.masked_crc32c(data)) == c
        assert tfbundle.masked_crc32c(data) != c


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_shipped_checkpoints_match_tensorflow_listing(name: str) -> None:
    listing = json.loads((REFERENCE / "bundle_tf_listing.json").read_text())[name]
    num_shards, entries = tfbundle.list_bundle(checkpoint_prefix(name))
    assert num_shards == 1
    names = {e.name for e in entries}
    assert names == set(listing["variables"]) | set(listing["optimizer_variables"])
    tensors = tfbundle.read_bundle(checkpoint_prefix(name), names=sorted(listing["variables"]))
    for var, ref in listing["variables"].items():
        arr = tensors[var]
        assert list(arr.shape) == ref["shape"], var
        assert arr.dtype == np.dtype(ref["dtype"]), var
        np.testing.assert_allclose(np.ravel(arr)[:4], ref["first"], rtol=0, atol=0, err_msg=var)
        assert np.sum(arr, dtype=np.float64) == pytest.approx(ref["sum"], rel=1e-9, abs=1e-9), var


def test_tiny_tf_bundle_all_dtypes_with_crc_checks() -> None:
    spec = json.loads((DATA / "tiny_bundle.json").read_text())
    tensors = tfbundle.read_bundle(DATA / "tiny_bundle", verify=True)
    assert set(tensors) == set(spec)
    for name, s in spec.items():
        arr = tensors[name]
        assert list(arr.shape) == s["shape"], name
        if s["dtype"] == "string":
            assert arr.dtype == object
            assert [b.decode("utf-8") for b in arr.ravel()] == s["values"]
        else:
            assert arr.dtype == np.dtype(s["dtype"]), name
            np.testing.assert_array_equal(arr.ravel(), np.array(s["values"], dtype=s["dtype"]), err_msg=name)
    subset = tfbundle.read_bundle(DATA / "tiny_bundle", names=["d/int64"])
    assert list(subset) == ["d/int64"] and subset["d/int64"].shape == () and int(subset["d/int64"]) == -5


def test_real_checkpoint_crc_verifies() -> None:
    names = ["dense_1/kernel", "batch_normalization_9/gamma", "conv2d_4/kernel"]
    tensors = tfbundle.read_bundle(checkpoint_prefix("MTT_musicnn"), names=names, verify=True)
    assert tensors["dense_1/kernel"].shape == (200, 50)


def _copy_tiny(tmp_path: Path) -> Path:
    for f in DATA.glob("tiny_bundle.*"):
        shutil.copy(f, tmp_path / f.name)
    return tmp_path / "tiny_bundle"


def test_corrupt_data_is_caught(tmp_path: Path) -> None:
    prefix = _copy_tiny(tmp_path)
    data = tfbundle.data_path(prefix, 0, 1)
    raw = bytearray(data.read_bytes())
    _, entries = tfbundle.list_bundle(prefix)
    entry = next(e for e in entries if e.name == "a/float32")
    raw[entry.offset] ^= 0x40
    data.write_bytes(bytes(raw))
    tfbundle.read_bundle(prefix)  # without verification the flipped bit goes unnoticed
    with pytest.raises(CheckpointError, match=r"a/float32.*CRC"):
        tfbundle.read_bundle(prefix, verify=True)
    data.write_bytes(bytes(raw[: entry.offset + 2]))  # truncated
    with pytest.raises(CheckpointError, match="truncated"):
        tfbundle.read_bundle(prefix)
    data.unlink()
    with pytest.raises(CheckpointError, match="data file"):
        tfbundle.read_bundle(prefix)


def test_corrupt_index_is_caught(tmp_path: Path) -> None:
    prefix = _copy_tiny(tmp_path)
    index = tfbundle.index_path(prefix)
    raw = bytearray(index.read_bytes())
    raw[-1] ^= 0xFF
    index.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="magic"):
        tfbundle.list_bundle(prefix)
    raw[-1] ^= 0xFF
    raw[20] ^= 0x01  # inside the first (data) block
    index.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="CRC"):
        tfbundle.list_bundle(prefix, verify=True)
    index.write_bytes(b"short")
    with pytest.raises(CheckpointError, match="not a checkpoint index"):
        tfbundle.list_bundle(prefix)
    with pytest.raises(CheckpointError, match="cannot read"):
        tfbundle.list_bundle(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="no tensors named"):
        tfbundle.read_bundle(DATA / "tiny_bundle", names=["nope"])


# --- an independent writer of the LevelDB table format, for layouts TF's small files do not reach ---------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _block(entries: list[tuple[bytes, bytes]], restart_interval: int) -> bytes:
    buf = bytearray()
    restarts = []
    prev = b""
    for i, (k, v) in enumerate(entries):
        if i % restart_interval == 0:
            restarts.append(len(buf))
            shared = 0
        else:
            shared = 0
            while shared < min(len(prev), len(k)) and prev[shared] == k[shared]:
                shared += 1
        buf += _varint(shared) + _varint(len(k) - shared) + _varint(len(v)) + k[shared:] + v
        prev = k
    for r in restarts or [0]:
        buf += struct.pack("<I", r)
    buf += struct.pack("<I", len(restarts or [0]))
    return bytes(buf)


def _write_table(path: Path, entries: list[tuple[bytes, bytes]], block_entries: int, restart_interval: int) -> None:
    out = bytearray()
    index: list[tuple[bytes, bytes]] = []

    def emit(contents: bytes) -> bytes:
        handle = _varint(len(out)) + _varint(len(contents))
        trailer = b"\x00"
        out.extend(contents + trailer + struct.pack("<I", tfbundle.masked_crc32c(contents + trailer)))
        return handle

    for i in range(0, len(entries), block_entries):
        chunk = entries[i : i + block_entries]
        index.append((chunk[-1][0], emit(_block(chunk, restart_interval))))
    meta = emit(_block([], restart_interval))
    idx = emit(_block(index, 1))
    footer = (meta + idx).ljust(40, b"\x00") + struct.pack("<Q", tfbundle.TABLE_MAGIC)
    path.write_bytes(bytes(out) + footer)


def _entry_proto(dtype: int, shape: tuple[int, ...], offset: int, size: int) -> bytes:
    dims = b"".join(b"\x12" + _varint(len(d)) + d for d in (b"\x08" + _varint(n) for n in shape))
    msg = b"\x08" + _varint(dtype) + b"\x12" + _varint(len(dims)) + dims
    if offset:
        msg += b"\x20" + _varint(offset)
    return msg + b"\x28" + _varint(size)


@pytest.mark.parametrize(("block_entries", "restart_interval"), [(7, 3), (1, 1), (500, 16)])
def test_multi_block_tables_with_shared_prefixes(tmp_path: Path, block_entries: int, restart_interval: int) -> None:
    rng = np.random.default_rng(0)
    names = sorted({f"layer_{i // 10}/sub_{i % 10}/{'kernel' if i % 2 else 'bias'}" for i in range(120)})
    arrays = {n: rng.standard_normal(rng.integers(1, 6, size=2)).astype(np.float32) for n in names}
    data = bytearray()
    entries: list[tuple[bytes, bytes]] = [(b"", b"\x08\x01")]  # header: num_shards = 1
    for n in names:
        raw = arrays[n].tobytes()
        entries.append((n.encode(), _entry_proto(1, arrays[n].shape, len(data), len(raw))))
        data += raw
    prefix = tmp_path / "model.ckpt"
    _write_table(tfbundle.index_path(prefix), entries, block_entries, restart_interval)
    tfbundle.data_path(prefix, 0, 1).write_bytes(bytes(data))
    got = tfbundle.read_bundle(prefix, verify=True)
    assert list(got) == names
    for n in names:
        np.testing.assert_array_equal(got[n], arrays[n])


def test_size_that_disagrees_with_shape_is_rejected(tmp_path: Path) -> None:
    prefix = tmp_path / "bad"
    entries = [(b"", b"\x08\x01"), (b"w", _entry_proto(1, (2, 3), 0, 20))]
    _write_table(tfbundle.index_path(prefix), entries, 4, 2)
    tfbundle.data_path(prefix, 0, 1).write_bytes(bytes(24))
    with pytest.raises(CheckpointError, match="needs 24 bytes"):
        tfbundle.read_bundle(prefix)
    _write_table(tfbundle.index_path(prefix), entries[1:], 4, 2)
    with pytest.raises(CheckpointError, match="no bundle header"):
        tfbundle.read_bundle(prefix)

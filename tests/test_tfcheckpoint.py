"""TensorFlow V2 checkpoint reader: CRC-32C, the index table, and damaged files."""
from __future__ import annotations


import numpy as np
import pytest

from meshcli.errors import MeshcliError
from meshcli.tfcheckpoint import TFCheckpoint, checkpoint_prefix, crc32c, masked_crc32c



def reference_crc32c(data: bytes) -> int:
    """Bit-at-a-time CRC-32C, straight from the definition (reflected polynomial 0x82F63B78)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_crc32c_known_values():
    assert crc32c(b"") == 0
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value of CRC-32C
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 (iSCSI) test vector: 32 zero bytes
    assert crc32c(bytes(range(32))) == 0x46DD794E


@pytest.mark.parametrize("n", [1, 7, 4095, 4096, 4103, 65536 + 13, 300_001])
def test_crc32c_matches_definition(n):
    # sizes around the lane split (4096 bytes) and with ragged tails exercise every path
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8)
    want = reference_crc32c(data.tobytes())
    assert crc32c(data) == want
    assert crc32c(data.tobytes()) == want
    assert masked_crc32c(data) == ((((want >> 15) | (want << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def test_prefix_from_any_of_its_files(tmp_path):
    p = tmp_path / "model.ckpt-667589"
    assert checkpoint_prefix(p) == p
    assert checkpoint_prefix(f"{p}.index") == p
    assert checkpoint_prefix(f"{p}.data-00000-of-00001") == p


def arrays():
    rng = np.random.default_rng(0)
    out = {
        "scalar": np.array(3.5, np.float32),
        "global_step": np.array(667589, np.int32),
        "big/weights": rng.standard_normal((300, 257)).astype(np.float32),
        "ints": np.arange(-5, 7, dtype=np.int64).reshape(3, 4),
        "half": rng.standard_normal(9).astype(np.float16),
        "flags": np.array([True, False, True]),
    }
    # enough entries for several index blocks (blocks close at 256 KiB) and many restart points
    for i in range(6000):
        out[f"layer_{i:05d}/a_rather_long_variable_name_for_realistic_prefix_sharing/bias"] = \
            np.full(2, i, np.float32)
    return out


def test_reads_bundle_written_by_the_format_writer(tmp_path, tfbundle):
    want = arrays()
    tfbundle.write_bundle(want, tmp_path / "model.ckpt-1")
    ckpt = TFCheckpoint(tmp_path / "model.ckpt-1.index")
    assert set(ckpt) == set(want)
    for name in ["scalar", "global_step", "big/weights", "ints", "half", "flags",
                 "layer_00000/a_rather_long_variable_name_for_realistic_prefix_sharing/bias",
                 "layer_05999/a_rather_long_variable_name_for_realistic_prefix_sharing/bias"]:
        got = ckpt.read(name)
        assert got.dtype == want[name].dtype and got.shape == want[name].shape, name
        np.testing.assert_array_equal(got, want[name])
    assert (tmp_path / "model.ckpt-1.index").stat().st_size > 256 * 1024  # really more than one block


def write_small(tmp_path, tfbundle):
    want = {"a": np.arange(50_000, dtype=np.float32), "b": np.ones((3, 4), np.float32)}
    tfbundle.write_bundle(want, tmp_path / "x")
    return tmp_path / "x"


def test_corrupted_tensor_byte_is_a_checksum_error(tmp_path, tfbundle):
    prefix = write_small(tmp_path, tfbundle)
    shard = tmp_path / "x.data-00000-of-00001"
    raw = bytearray(shard.read_bytes())
    raw[1234] ^= 0x01
    shard.write_bytes(bytes(raw))
    ckpt = TFCheckpoint(prefix)  # the index is fine
    np.testing.assert_array_equal(ckpt.read("b"), 1.0)  # an untouched tensor still reads
    with pytest.raises(MeshcliError, match=r"x\.data-00000-of-00001: checksum mismatch in variable 'a'"):
        ckpt.read("a")


def test_corrupted_index_byte_is_a_checksum_error(tmp_path, tfbundle):
    prefix = write_small(tmp_path, tfbundle)
    index = tmp_path / "x.index"
    raw = bytearray(index.read_bytes())
    raw[20] ^= 0x04  # inside the first data block's entries
    index.write_bytes(bytes(raw))
    with pytest.raises(MeshcliError, match=r"x\.index: checksum mismatch in the data block"):
        TFCheckpoint(prefix)


def test_truncated_and_missing_files(tmp_path, tfbundle):
    prefix = write_small(tmp_path, tfbundle)
    shard = tmp_path / "x.data-00000-of-00001"
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(MeshcliError, match=r"x\.data-00000-of-00001: data shard is truncated"):
        TFCheckpoint(prefix)
    shard.unlink()
    with pytest.raises(MeshcliError, match="data shard not found"):
        TFCheckpoint(prefix)
    index = tmp_path / "x.index"
    index.write_bytes(index.read_bytes()[:-3])
    with pytest.raises(MeshcliError, match="bad table magic"):
        TFCheckpoint(prefix)
    with pytest.raises(MeshcliError, match="index not found"):
        TFCheckpoint(tmp_path / "nothing")

"""Every API of `qins` with framework="np" on the golden files, against their expected values
(conformance/valid/*.expected.json, computed from the source descriptions by the reference
implementation of the decode rule): bit for bit."""

from __future__ import annotations

import os
import zlib

import numpy as np
import pytest

import qins
import qins._open
import qins.numpy
from conftest import GOLDENS, VALID, expected, rust_dump

import ml_dtypes  # noqa: E402  (installed by tools/requirements.txt; its absence is simulated)


def f32_bits(values):
    return np.array([int(v, 16) for v in values], dtype=np.uint32)


def decoded_bits(t, f=None):
    """The expected decoded values of an encoded tensor, as uint32 f32 bit patterns: listed,
    or for a tensor too large to list, those `f` decodes once their CRC-32 is checked."""
    if "values" in t:
        return f32_bits(t["values"]).reshape(t["shape"])
    got = f.get_tensor(t["name"], dtype=np.float32)
    assert zlib.crc32(got.tobytes()) == int(t["crc32"], 16), t["name"]
    return got.view(np.uint32)


def raw_bytes(t, f):
    """The expected bytes of a raw tensor: listed, or those `f` reads once their CRC-32 is
    checked."""
    if "hex" in t:
        return bytes.fromhex(t["hex"])
    got = f._file.read(t["name"], "raw").tobytes()
    assert zlib.crc32(got) == int(t["crc32"], 16), t["name"]
    return got


def asset_bytes(a):
    return bytes.fromhex(a["hex"]) if "hex" in a else None


@pytest.fixture
def no_ml_dtypes(monkeypatch):
    """numpy as it is without ml_dtypes installed."""
    monkeypatch.setattr(qins._open, "_ml_dtypes", lambda: None)


def numpy_can_shape(shape):
    """Whether numpy can make an array of this shape (not an empty [0, 2**40, 2**40])."""
    try:
        np.empty(tuple(shape), dtype=np.uint8)
        return True
    except ValueError:
        return False


# numpy-representable raw dtypes, with ml_dtypes installed.
WITH_ML = {"BF16", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ"}
NO_NUMPY = {"F4", "F6_E2M3", "F6_E3M2"}


@pytest.mark.parametrize("golden", GOLDENS)
def test_keys_metadata_and_assets(golden, tmp_path):
    exp = expected(golden)
    with qins.safe_open(VALID / f"{golden}.qins", framework="np") as f:
        names = [t["name"] for t in exp["tensors"]]
        assert f.offset_keys() == names
        assert f.keys() == sorted(names)
        assert list(f) == sorted(names)
        assert f.metadata() == exp["metadata"]
        assert f.version() == tuple(exp["version"])
        assert f.asset_names() == [a["name"] for a in exp["assets"]]
        for a in exp["assets"]:
            data = f.get_asset(a["name"])
            assert len(data) == a["size"] and zlib.crc32(data) == int(a["crc32"], 16)
            assert asset_bytes(a) in (None, data)
        for t in exp["tensors"]:
            s = f.get_slice(t["name"])
            assert s.get_shape() == t["shape"]
            assert s.get_dtype() == t["dtype"]
            assert s.get_storage() == t["storage"]
        written = f.save_assets(tmp_path / "out")
        assert written == [os.path.join(tmp_path / "out", a["name"]) for a in exp["assets"]]
        for a in exp["assets"]:
            assert (tmp_path / "out" / a["name"]).read_bytes() == f.get_asset(a["name"])


@pytest.mark.parametrize("golden", GOLDENS)
def test_every_tensor_bit_exact(golden):
    """Encoded tensors decode to the expected f32 bits; raw tensors give their bytes."""
    exp = expected(golden)
    with qins.safe_open(VALID / f"{golden}.qins", framework="np") as f:
        for t in exp["tensors"]:
            name, dtype = t["name"], t["dtype"]
            if t["storage"] != "raw":
                want = decoded_bits(t, f)
                got = f.get_tensor(name, dtype=np.float32)
                assert got.dtype == np.float32 and got.shape == tuple(t["shape"])
                assert np.array_equal(got.view(np.uint32), want), name
                assert zlib.crc32(got.tobytes()) == int(t["crc32"], 16)
                # The source dtype by default: F16 rounded once, BF16 with ml_dtypes.
                default = f.get_tensor(name)
                as_f32 = want.view(np.float32)
                if dtype == "F32":
                    assert default.dtype == np.float32
                elif dtype == "F16":
                    assert default.dtype == np.float16
                    assert np.array_equal(default.view(np.uint16), as_f32.astype(np.float16).view(np.uint16))
                else:
                    assert default.dtype == ml_dtypes.bfloat16
                    assert np.array_equal(
                        default.view(np.uint16), as_f32.astype(ml_dtypes.bfloat16).view(np.uint16)
                    )
                # float64 is the exact f32 value widened.
                assert np.array_equal(f.get_tensor(name, dtype=np.float64), as_f32.astype(np.float64))
            elif dtype in NO_NUMPY:
                with pytest.raises(qins.UnsupportedDtypeError, match=name if name else dtype):
                    f.get_tensor(name)
            elif not numpy_can_shape(t["shape"]):
                with pytest.raises(ValueError, match="cannot be made an array of this shape"):
                    f.get_tensor(name)
            else:
                got = f.get_tensor(name)
                assert got.shape == tuple(t["shape"])
                assert got.tobytes() == raw_bytes(t, f), name
                if dtype in WITH_ML:
                    assert got.dtype.name == qins._open._ML_DTYPES[dtype]


@pytest.mark.parametrize("golden", GOLDENS)
def test_bfloat16_without_ml_dtypes_is_float32(golden, no_ml_dtypes):
    exp = expected(golden)
    with qins.safe_open(VALID / f"{golden}.qins", framework="np") as f:
        for t in exp["tensors"]:
            if t["dtype"] != "BF16":
                continue
            got = f.get_tensor(t["name"])
            assert got.dtype == np.float32
            if t["storage"] != "raw":
                assert np.array_equal(got.view(np.uint32), decoded_bits(t, f))
            else:
                bits = np.frombuffer(raw_bytes(t, f), "<u2").astype(np.uint32) << 16
                assert np.array_equal(got.view(np.uint32).ravel(), bits)
            with pytest.raises(qins.UnsupportedDtypeError, match="ml_dtypes"):
                f.get_tensor(t["name"], dtype="bfloat16")
        for t in exp["tensors"]:
            if t["dtype"] in WITH_ML - {"BF16"}:
                with pytest.raises(qins.UnsupportedDtypeError, match="ml_dtypes"):
                    f.get_tensor(t["name"])


@pytest.mark.parametrize("golden", GOLDENS)
def test_load_file_equals_get_tensor_and_rust(golden):
    path = VALID / f"{golden}.qins"
    exp = expected(golden)
    if any(t["dtype"] in NO_NUMPY or not numpy_can_shape(t["shape"]) for t in exp["tensors"]):
        with pytest.raises((qins.UnsupportedDtypeError, ValueError)):
            qins.numpy.load_file(path)
        return
    loaded = qins.numpy.load_file(path, dtype=np.float32)
    assert list(loaded) == [t["name"] for t in exp["tensors"]]
    dump = {t["name"]: t for t in rust_dump(path)["tensors"]}
    with qins.safe_open(path, framework="np") as f:
        for name, array in loaded.items():
            assert array.tobytes() == f.get_tensor(name, dtype=np.float32).tobytes()
            # The Rust reader's CRC-32 of the decoded f32 values (or of the raw bytes).
            assert zlib.crc32(array.tobytes()) == dump[name]["decoded_crc32"], name


def slices_of(n):
    """First-dimension indices to try on a dimension of size n."""
    keys = [slice(None), slice(0, 0), slice(n, None), slice(-1, None), slice(None, None, 2),
            slice(1, None, 3), slice(-3, -1), slice(0, n + 5), slice(n // 2, n // 2 + 1)]
    keys += [i for i in (0, n - 1, -1, -n, n // 2) if -n <= i < n]
    return keys


@pytest.mark.parametrize("golden", GOLDENS)
def test_get_slice_against_the_full_tensor(golden):
    exp = expected(golden)
    with qins.safe_open(VALID / f"{golden}.qins", framework="np") as f:
        for t in exp["tensors"]:
            if t["dtype"] in NO_NUMPY or not numpy_can_shape(t["shape"]):
                continue
            name, shape = t["name"], t["shape"]
            full = f.get_tensor(name)
            s = f.get_slice(name)
            for key in (Ellipsis, ()):
                got = s[key]
                assert got.shape == full.shape and got.tobytes() == full.tobytes()
            if not shape:
                with pytest.raises(IndexError):
                    s[0]
                continue
            assert len(s) == shape[0]
            for key in slices_of(shape[0]):
                got, want = s[key], full[key]
                assert got.shape == want.shape and got.dtype == want.dtype, (name, key)
                assert got.tobytes() == want.tobytes(), (name, key)
            if len(shape) >= 2 and shape[0] > 0 and shape[1] > 0:
                for key in [(slice(None), 0), (slice(1, None), slice(None, None, 2)),
                            (Ellipsis, -1), (-1, Ellipsis), (0, slice(None))]:
                    got, want = s[key], full[key]
                    assert got.tobytes() == want.tobytes() and got.shape == want.shape, (name, key)
            with pytest.raises(IndexError):
                s[shape[0]]
            with pytest.raises(IndexError):
                s[(slice(None),) * (len(shape) + 1)]
            with pytest.raises(ValueError, match="step"):
                s[::-1]
            with pytest.raises(TypeError):
                s["a"]


def test_dtype_argument():
    path = VALID / "log_ranks.qins"
    exp = expected("log_ranks")
    with qins.safe_open(path, framework="np") as f:
        for t in exp["tensors"]:
            as_f32 = decoded_bits(t, f).view(np.float32)
            got = f.get_tensor(t["name"], dtype=np.float16)
            assert got.dtype == np.float16
            assert np.array_equal(got.view(np.uint16), as_f32.astype(np.float16).view(np.uint16))
            got = f.get_tensor(t["name"], dtype="bfloat16")
            assert np.array_equal(got.view(np.uint16), as_f32.astype(ml_dtypes.bfloat16).view(np.uint16))
        with pytest.raises(ValueError, match="floating-point"):
            f.get_tensor(exp["tensors"][0]["name"], dtype=np.int32)
    # Raw integer tensors keep their dtype; raw floats are converted.
    loaded = qins.numpy.load_file(VALID / "mixed.qins", dtype=np.float16)
    assert loaded["w"].dtype == np.float16 and loaded["b"].dtype == np.int32


def test_get_tensors_and_repr():
    with qins.safe_open(VALID / "mixed.qins", framework="numpy") as f:
        got = f.get_tensors()
        assert list(got) == ["w", "b"]
        assert "2 tensors" in repr(f)
        assert "storage=log" in repr(f.get_slice("w"))
    assert "closed" in repr(f)


def test_closed_file_and_missing_names():
    f = qins.safe_open(VALID / "mixed.qins", framework="np")
    with pytest.raises(qins.TensorNotFoundError, match="no tensor called 'nope'") as e:
        f.get_tensor("nope")
    assert isinstance(e.value, KeyError) and e.value.tensor == "nope"
    with pytest.raises(qins.AssetNotFoundError, match="nope") as e:
        f.get_asset("nope")
    assert isinstance(e.value, KeyError) and e.value.asset == "nope"
    with pytest.raises(qins.AssetNotFoundError):
        f.save_assets("unused", names=["nope"])
    f.close()
    for call in (f.keys, lambda: f.get_tensor("w"), f.metadata, f.asset_names, f.verify):
        with pytest.raises(ValueError, match="closed"):
            call()


def test_framework_and_device_arguments():
    with pytest.raises(ValueError, match="framework"):
        qins.safe_open(VALID / "mixed.qins", framework="tf")
    with pytest.raises(ValueError, match="device"):
        qins.safe_open(VALID / "mixed.qins", framework="np", device="cuda:0")


def test_verify_false_reads_damaged_data_and_verify_finds_it():
    path = VALID.parent / "invalid" / "data_checksum_codes.qins"
    with qins.safe_open(path, framework="np", verify=False) as f:
        f.get_tensor("w")
        with pytest.raises(qins.DataChecksumError):
            f.verify()
    with qins.safe_open(path, framework="np") as f:
        with pytest.raises(qins.DataChecksumError):
            f.get_slice("w")[0]


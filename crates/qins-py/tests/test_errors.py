"""Every error kind of spec §17 raised as its class: the negative goldens
(conformance/invalid/*.qins, with the kind and stage each must fail with in manifest.json),
and the errors that are not about a file's content (I/O, names, dtypes, decoding)."""

from __future__ import annotations

import errno
import json
import os
import pickle

import pytest

import qins
import qins._qins
from conftest import INVALID, ROOT, VALID

MANIFEST = json.loads((INVALID / "manifest.json").read_text())["cases"]


def read_everything(path, verify=True):
    """Opens the file and reads every tensor (as the torch-free numpy path) and asset."""
    with qins.safe_open(path, framework="np", verify=verify) as f:
        for name in f.offset_keys():
            f._file.read(name, "raw" if f.get_slice(name).get_storage() == "raw" else "f32")
        for name in f.asset_names():
            f.get_asset(name)


def spec_kinds(heading):
    """The error kinds listed in the table that follows `heading` in spec/qins-v1.md."""
    spec = (ROOT / "spec" / "qins-v1.md").read_text()
    table = spec[spec.index(heading):].split("| kind | meaning | § |", 1)[1]
    kinds = []
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        kinds.append(line.split("|")[1].strip().strip("`"))
    return set(kinds)


def test_every_kind_has_a_class_and_a_negative_golden():
    single, sets = spec_kinds("## §17 "), spec_kinds("### §21.6 ")
    assert len(single) == 30 and len(sets) == 9
    assert set(qins.ERRORS_BY_KIND) == single | sets
    # Every kind a single file can fail with has its negative golden here.
    assert {c["kind"] for c in MANIFEST} == single
    for kind in sets:
        assert issubclass(qins.ERRORS_BY_KIND[kind], qins.SetError)
    for kind, cls in qins.ERRORS_BY_KIND.items():
        assert cls.__name__ == f"{kind}Error" and cls.kind == kind
        assert issubclass(cls, qins.QinsError)
        assert cls.section.startswith("§")
        assert getattr(qins, cls.__name__) is cls
        assert cls.__doc__


@pytest.mark.parametrize("case", MANIFEST, ids=[c["file"] for c in MANIFEST])
def test_negative_golden_raises_its_class(case):
    path = INVALID / case["file"]
    cls = qins.ERRORS_BY_KIND[case["kind"]]
    if case["stage"] == "open":
        assert issubclass(cls, qins.FormatError)
        for verify in (True, False):
            with pytest.raises(cls) as e:
                qins.safe_open(path, framework="np", verify=verify)
            assert type(e.value) is cls
    else:
        assert issubclass(cls, qins.IntegrityError)
        # Not found by opening without verification, nor by reading without it ...
        read_everything(path, verify=False)
        # ... but by verify(), and by reading everything with verification (the default).
        with qins.safe_open(path, framework="np", verify=False) as f:
            with pytest.raises(cls) as e:
                f.verify()
        assert type(e.value) is cls
        with pytest.raises(cls) as e:
            read_everything(path)
        assert type(e.value) is cls
    # The message names the file and the rule; the attributes say the same.
    err = e.value
    assert str(err).startswith(f"{path}: ")
    assert "§" in str(err)
    assert err.path == str(path) and err.kind == case["kind"]
    # Tensor-level kinds name the tensor.
    if err.tensor is not None:
        assert f'"{err.tensor}"' in str(err) or repr(err.tensor) in str(err)
    # They survive pickling (multiprocessing, pytest-xdist) with their attributes.
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is cls and str(again) == str(err) and again.path == err.path


def test_damaged_tensor_names_the_tensor_and_section():
    path = INVALID / "data_checksum_signs.qins"
    with qins.safe_open(path, framework="np") as f:
        with pytest.raises(qins.DataChecksumError) as e:
            f.get_tensor("w")
    assert e.value.tensor == "w"
    assert str(e.value).startswith(f'{path}: tensor "w" signs: checksum mismatch')
    assert "(§14)" in str(e.value)
    # Once refused, a tensor stays refused: a failed verification is not remembered as done.
    with qins.safe_open(path, framework="np") as f:
        for _ in range(2):
            with pytest.raises(qins.DataChecksumError):
                f.get_tensor("w")
        # The other tensor is intact and reads.
        assert f.get_tensor("b").tolist() == [1, -2, 0x12345678]


def test_damaged_asset_is_refused_at_open():
    path = INVALID / "data_checksum_asset.qins"
    with pytest.raises(qins.DataChecksumError, match='asset "1_Pooling/config.json"'):
        qins.safe_open(path, framework="np")


def test_io_errors_are_oserrors(tmp_path):
    with pytest.raises(qins.QinsIOError) as e:
        qins.safe_open(tmp_path / "missing.qins", framework="np")
    assert isinstance(e.value, OSError) and isinstance(e.value, qins.QinsError)
    assert e.value.errno == errno.ENOENT
    assert str(e.value).startswith(f"{tmp_path / 'missing.qins'}: ")
    with pytest.raises(qins.QinsIOError, match="is a directory"):
        qins.safe_open(tmp_path, framework="np")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(qins.QinsIOError, match="not a regular file"):
        qins.safe_open(tmp_path / "fifo", framework="np")


def test_decode_error_is_a_value_error():
    f = qins._qins.File(str(VALID / "mixed.qins"))
    with pytest.raises(qins.QinsDecodeError, match='tensor "b" is raw') as e:
        f.read("b", "f32")
    assert isinstance(e.value, ValueError) and e.value.tensor == "b"
    # Requests that do not fit the tensor are the caller's mistakes: ValueError.
    with pytest.raises(ValueError, match="is encoded"):
        f.read("w", "raw")
    with pytest.raises(ValueError, match="first dimension of 2"):
        f.read("w", "f32", 1, 2, 1)
    with pytest.raises(ValueError, match="kind"):
        f.read("w", "f64")
    with pytest.raises(qins.TensorNotFoundError):
        f.read("nope", "f32")


def test_unsupported_dtype_is_a_type_error():
    with qins.safe_open(VALID / "raw_dtypes.qins", framework="np") as f:
        names = [n for n in f.offset_keys() if f.get_slice(n).get_dtype() == "F6_E2M3"]
        with pytest.raises(qins.UnsupportedDtypeError, match="F6_E2M3") as e:
            f.get_tensor(names[0])
    assert isinstance(e.value, TypeError)


def test_assets_stay_in_their_directory(tmp_path):
    out = tmp_path / "out"
    (tmp_path / "elsewhere").mkdir()
    out.mkdir()
    # A directory on the asset's way that is a symbolic link is not followed.
    os.symlink(tmp_path / "elsewhere", out / "1_Pooling")
    with qins.safe_open(VALID / "mixed.qins", framework="np") as f:
        with pytest.raises(qins.QinsIOError, match="symbolic link") as e:
            f.save_assets(out)
        assert e.value.filename == str(out / "1_Pooling")
        assert list((tmp_path / "elsewhere").iterdir()) == []
        # Every path is checked before any file is written: nothing was.
        assert not (out / "config.json").exists()
        # Existing files are kept unless overwrite=True.
        os.unlink(out / "1_Pooling")
        f.save_assets(out)
        with pytest.raises(qins.QinsIOError, match="already exists"):
            f.save_assets(out, names=["config.json"])
        (out / "config.json").write_text("changed")
        assert f.save_assets(out, names=["config.json"], overwrite=True) == [str(out / "config.json")]
        assert (out / "config.json").read_bytes() == f.get_asset("config.json")
        # A file where a directory must go.
        os.unlink(out / "1_Pooling" / "config.json")
        os.rmdir(out / "1_Pooling")
        (out / "1_Pooling").write_text("")
        with pytest.raises(qins.QinsIOError, match="not a directory"):
            f.save_assets(out, names=["1_Pooling/config.json"])
    # Nothing but the assets was written: no temporary files left behind.
    assert sorted(p.name for p in out.iterdir()) == ["1_Pooling", "config.json"]

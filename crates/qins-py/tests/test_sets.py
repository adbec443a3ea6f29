"""Sharded sets (spec §21) through every entry point: `safe_open`, `qins.numpy.load_file`,
`qins.torch.load_file`, `load_model` and the assets, opened from the index or any shard.

- every valid set of conformance/sets decodes bit for bit as its expected file says, with the
  set's keys, metadata and assets (shard 1's) and its files;
- every invalid set raises the class of its manifest's kind, at its stage, naming its file;
- all-MiniLM-L6-v2 converted into 3 shards loads exactly as the single file does.
"""

from __future__ import annotations

import json
import os
import pickle
import zlib

import numpy as np
import pytest
import torch

import qins
import qins.numpy
import qins.torch
from conftest import SETS
from test_goldens import decoded_bits, raw_bytes

MANIFEST = json.loads((SETS / "manifest.json").read_text())
VALID_SETS = MANIFEST["valid"]
INVALID_SETS = MANIFEST["invalid"]


def entry_points(case):
    """Every path a set opens from: its index and each shard."""
    d = SETS / case["dir"]
    return [d / case["index"]] + [d / s for s in case["shards"]]


def test_the_manifest_covers_every_set_kind():
    assert len(VALID_SETS) >= 3 and len(INVALID_SETS) >= 25
    kinds = {c["kind"] for c in INVALID_SETS}
    assert {k for k, cls in qins.ERRORS_BY_KIND.items() if issubclass(cls, qins.SetError)} <= kinds


@pytest.mark.parametrize("case", VALID_SETS, ids=[c["dir"] for c in VALID_SETS])
def test_valid_set_from_every_entry_point(case, tmp_path):
    exp = json.loads((SETS / case["expected"]).read_text())
    d = SETS / case["dir"]
    tensors = [t for shard in exp["shards"] for t in shard["tensors"]]
    names = [t["name"] for t in tensors]
    first = exp["shards"][0]
    for k, path in enumerate(entry_points(case)):
        with qins.safe_open(path, framework="np") as f:
            assert f.files() == [str(d / s) for s in case["shards"]]
            assert f.index_file() == str(d / case["index"])
            assert f.offset_keys() == names and f.keys() == sorted(names)
            assert f.metadata() == first["metadata"]
            assert f.version() == tuple(first["version"])
            assert f.asset_names() == [a["name"] for a in first["assets"]]
            for a in first["assets"]:
                data = f.get_asset(a["name"])
                assert len(data) == a["size"] and zlib.crc32(data) == int(a["crc32"], 16)
            f.verify()
            for t in tensors:
                s = f.get_slice(t["name"])
                assert (s.get_shape(), s.get_dtype(), s.get_storage()) == (
                    t["shape"], t["dtype"], t["storage"])
                if t["storage"] == "raw":
                    assert f.get_tensor(t["name"]).tobytes() == raw_bytes(t, f), t["name"]
                else:
                    got = f.get_tensor(t["name"], dtype=np.float32)
                    assert np.array_equal(got.view(np.uint32), decoded_bits(t, f)), t["name"]
                    if t["shape"] and t["shape"][0] > 1:
                        full = f.get_tensor(t["name"])
                        assert full[1:].tobytes() == f.get_slice(t["name"])[1:].tobytes()
            out = tmp_path / str(k)
            assert f.save_assets(out) == [str(out / a["name"]) for a in first["assets"]]
        # load_file: the same tensors, in the set's order, in numpy and in torch.
        loaded = qins.numpy.load_file(path, dtype=np.float32)
        assert list(loaded) == names
        pt = qins.torch.load_file(path, dtype=torch.float32)
        assert list(pt) == names
        with qins.safe_open(path, framework="np") as f:
            for name in names:
                assert loaded[name].tobytes() == f.get_tensor(name, dtype=np.float32).tobytes()
                assert pt[name].numpy().tobytes() == loaded[name].tobytes()


def test_load_model_from_a_set():
    case = next(c for c in VALID_SETS if c["dir"] == "valid/three_shards")
    index = SETS / case["dir"] / case["index"]
    state = qins.torch.load_file(index)
    model = torch.nn.Module()
    for name, t in state.items():
        *path, leaf = name.split(".")
        module = model
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, torch.nn.Module())
            module = getattr(module, part)
        module.register_parameter(leaf, torch.nn.Parameter(torch.zeros_like(t), requires_grad=False))
    for path in entry_points(case):
        for p in model.parameters():
            p.data.zero_()
        assert qins.torch.load_model(model, path) == ([], [])
        for name, t in model.state_dict().items():
            assert torch.equal(t, state[name]), name


def read_everything(path, verify=True):
    with qins.safe_open(path, framework="np", verify=verify) as f:
        qins.numpy.load_file(path, dtype=np.float32, verify=verify)
        for name in f.asset_names():
            f.get_asset(name)


@pytest.mark.parametrize("case", INVALID_SETS, ids=[c["dir"] for c in INVALID_SETS])
def test_invalid_set_raises_its_class_naming_its_file(case):
    d = SETS / case["dir"]
    path = d / case["open"]
    cls = qins.ERRORS_BY_KIND[case["kind"]]
    if case["stage"] == "open":
        for verify in (True, False):
            with pytest.raises(cls) as e:
                qins.safe_open(path, framework="np", verify=verify)
            assert type(e.value) is cls
        for load in (qins.numpy.load_file, qins.torch.load_file):
            with pytest.raises(cls):
                load(path)
    else:
        assert issubclass(cls, qins.IntegrityError)
        read_everything(path, verify=False)
        with qins.safe_open(path, framework="np", verify=False) as f:
            with pytest.raises(cls) as e:
                f.verify()
        assert type(e.value) is cls
        with pytest.raises(cls) as e:
            read_everything(path)
        assert type(e.value) is cls
        with pytest.raises(cls):
            qins.torch.load_file(path)
    err = e.value
    # The exception names the file at fault: its path attribute and its message.
    assert os.path.basename(err.path) == case["file"], (err.path, str(err))
    assert str(err).startswith(f"{path}: ") and case["file"] in str(err)
    assert "§" in str(err) and err.kind == case["kind"]
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is cls and str(again) == str(err) and again.path == err.path


def test_minilm_in_three_shards_loads_as_the_single_file(minilm_qins, minilm_set, tmp_path):
    single = qins.torch.load_file(minilm_qins)
    shards = sorted(minilm_set.parent.glob("minilm-*.qins"))
    for path in [minilm_set, *shards]:
        loaded = qins.torch.load_file(path)
        assert list(loaded) == list(single)
        for name, t in single.items():
            assert loaded[name].dtype == t.dtype and torch.equal(loaded[name], t), name
        arrays = qins.numpy.load_file(path)
        for name, t in single.items():
            assert arrays[name].tobytes() == t.numpy().tobytes(), name
    with qins.safe_open(minilm_set, framework="pt") as s, qins.safe_open(minilm_qins, framework="pt") as f:
        assert s.files() == [str(p) for p in shards] and f.files() == [str(minilm_qins)]
        assert s.index_file() == str(minilm_set) and f.index_file() is None
        assert s.asset_names() == f.asset_names()
        for name in f.asset_names():
            assert s.get_asset(name) == f.get_asset(name)
        sm, fm = s.metadata(), f.metadata()
        assert {k: v for k, v in sm.items() if not k.startswith("qins.set.")} == fm
        assert sm["qins.set.shard_count"] == "3"
        name = "encoder.layer.5.output.dense.weight"
        assert torch.equal(s.get_slice(name)[3:9], f.get_slice(name)[3:9])
        s.save_assets(tmp_path / "set")
        f.save_assets(tmp_path / "single")
        for p in (tmp_path / "single").rglob("*"):
            if p.is_file():
                assert (tmp_path / "set" / p.relative_to(tmp_path / "single")).read_bytes() == p.read_bytes()
        s.verify()

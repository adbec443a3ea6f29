"""Where returned tensors live: decoded tensors own their memory (anonymous memory of their own
from 1 MiB, else numpy's); raw tensors of 1 MiB or more are private copy-on-write mappings of
the file (as safetensors' are). On all-MiniLM-L6-v2, whose word embeddings (30522 x 384 F32,
47 MB) are kept raw."""

from __future__ import annotations

import os
import shutil
import warnings
import zlib

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as st_load_numpy

import qins
import qins._qins
import qins.numpy
import qins.torch

EMBED = "embeddings.word_embeddings.weight"
SMALL_RAW = "embeddings.LayerNorm.weight"
ENCODED = "encoder.layer.0.attention.self.query.weight"  # 384 x 384: 0.6 MB as F32
LARGE_ENCODED = "encoder.layer.0.intermediate.dense.weight"  # 1536 x 384: 2.4 MB


def base_of(array):
    """The object at the end of an array's chain of bases."""
    while isinstance(getattr(array, "base", None), np.ndarray):
        array = array.base
    return array.base


def mapped_file(array):
    """The file an array's memory maps, "" for anonymous memory, None for numpy's."""
    base = base_of(array)
    if not isinstance(base, qins._qins.Memory):
        return None
    return "" if base.file is None else os.fspath(base.file)


def crc_of(path):
    return zlib.crc32(open(path, "rb").read())


@pytest.fixture
def copy(minilm_qins, tmp_path):
    """A copy of the converted MiniLM that a test may damage or replace."""
    path = tmp_path / "minilm.qins"
    shutil.copyfile(minilm_qins, path)
    return path


def test_large_raw_tensors_are_writable_private_mappings(copy, minilm_exported):
    want = st_load_numpy(str(minilm_exported / "model.safetensors"))
    before = crc_of(copy)
    with qins.safe_open(copy, framework="np") as f:
        a = f.get_tensor(EMBED)
        assert mapped_file(a) == str(copy)
        assert a.flags.writeable and a.tobytes() == want[EMBED].tobytes()
        # Smaller raw tensors and decoded ones own their memory.
        assert mapped_file(f.get_tensor(SMALL_RAW)) is None
        assert mapped_file(f.get_tensor(ENCODED)) is None
        large = f.get_tensor(LARGE_ENCODED)
        assert mapped_file(large) == "" and large.flags.writeable
        assert large.tobytes() == want[LARGE_ENCODED].tobytes()
        # Writing changes this array only: not a second read, not the file.
        a[0, :] = 7.0
        b = f.get_tensor(EMBED)
        assert b.tobytes() == want[EMBED].tobytes()
    # The arrays outlive the file object.
    assert (a[0] == 7.0).all() and a[1:].tobytes() == want[EMBED][1:].tobytes()
    assert b.tobytes() == want[EMBED].tobytes()
    assert crc_of(copy) == before
    # torch: writable without a warning, written in place, the file untouched.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = qins.torch.load_file(copy)[EMBED]
    t.add_(1.0)
    assert torch.equal(t, torch.from_numpy(want[EMBED]) + 1.0)
    assert crc_of(copy) == before


def test_a_replaced_file_is_still_read_as_opened(copy, minilm_set, minilm_exported):
    want = st_load_numpy(str(minilm_exported / "model.safetensors"))
    with qins.safe_open(copy, framework="np") as f:
        # Another .qins renamed over the path (what every writer here does): the tensors read
        # after are still those of the file opened, copied from its mapping.
        other = copy.parent / "other.qins"
        shutil.copyfile(sorted(minilm_set.parent.glob("minilm-*.qins"))[0], other)
        os.replace(other, copy)
        a = f.get_tensor(EMBED)
        assert mapped_file(a) == ""
        assert a.tobytes() == want[EMBED].tobytes()


def test_a_damaged_mapped_tensor_is_refused(copy, minilm_exported):
    want = st_load_numpy(str(minilm_exported / "model.safetensors"))[EMBED]
    data = bytearray(copy.read_bytes())
    at = data.find(want[1000].tobytes())
    assert at > 0
    data[at] ^= 1
    copy.write_bytes(bytes(data))
    with qins.safe_open(copy, framework="np") as f:
        with pytest.raises(qins.DataChecksumError, match=EMBED) as e:
            f.get_tensor(EMBED)
        assert e.value.tensor == EMBED and e.value.path == str(copy)
        # The other tensors read.
        f.get_tensor(ENCODED)
    with pytest.raises(qins.DataChecksumError):
        qins.torch.load_file(copy)
    # Without verification the damaged bytes are what is read.
    a = qins.numpy.load_file(copy, verify=False)[EMBED]
    assert mapped_file(a) == str(copy)
    assert a[1000].tobytes() != want[1000].tobytes() and a[999].tobytes() == want[999].tobytes()


def test_read_into_memory_read_before(copy, minilm_exported):
    """The extension's read_into, which the benchmark times: a tensor read again into the
    memory of an earlier read gives the same bytes, verified."""
    want = st_load_numpy(str(minilm_exported / "model.safetensors"))
    f = qins._qins.File(str(copy))
    for name, kind in ((LARGE_ENCODED, "f32"), (LARGE_ENCODED, "bf16"), (EMBED, "raw")):
        a = f.read(name, kind)
        memory = base_of(a)
        assert isinstance(memory, qins._qins.Memory) and len(memory) == a.nbytes
        a[:] = 0
        f.read_into(name, kind, memory)
        assert a.tobytes() == f.read(name, kind).tobytes(), (name, kind)
    assert a.tobytes() == want[EMBED].tobytes()
    with pytest.raises(ValueError, match="bytes"):
        f.read_into(LARGE_ENCODED, "f32", memory)
    with pytest.raises(TypeError):
        f.read_into(LARGE_ENCODED, "f32", np.empty(384 * 1536, np.float32))
    # A damaged tensor is refused before it is handed out, into earlier memory too.
    data = bytearray(copy.read_bytes())
    data[data.find(want[EMBED][1000].tobytes())] ^= 1
    # Replaced, not rewritten in place: `memory` maps the file read before.
    (copy.parent / "damaged.qins").write_bytes(bytes(data))
    os.replace(copy.parent / "damaged.qins", copy)
    with pytest.raises(qins.DataChecksumError):
        qins._qins.File(str(copy)).read_into(EMBED, "raw", memory)

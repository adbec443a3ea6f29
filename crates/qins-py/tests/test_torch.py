"""The PyTorch path (framework="pt", qins.torch) on the golden files, bit for bit, and
load_model with tied weights, as safetensors.torch.load_model handles them."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import qins
import qins.torch
from conftest import GOLDENS, VALID, expected, tool
from test_goldens import decoded_bits, raw_bytes

TORCH_DTYPES = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}


def tensor_bytes(t: torch.Tensor) -> bytes:
    if t.numel() == 0:
        return b""
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def rounded(f32_bits: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """The exact f32 values rounded once to `dtype` (torch rounds to nearest even)."""
    return torch.from_numpy(f32_bits.view(np.float32).copy()).to(dtype)


@pytest.mark.parametrize("golden", GOLDENS)
def test_every_tensor_bit_exact(golden):
    exp = expected(golden)
    with qins.safe_open(VALID / f"{golden}.qins", framework="pt") as f:
        for t in exp["tensors"]:
            name, dtype = t["name"], t["dtype"]
            if t["storage"] != "raw":
                bits = decoded_bits(t, qins.safe_open(VALID / f"{golden}.qins", framework="np"))
                got = f.get_tensor(name)
                # The source dtype: BF16 stays torch.bfloat16, rounded once.
                assert got.dtype == TORCH_DTYPES[dtype] and list(got.shape) == t["shape"]
                assert tensor_bytes(got) == tensor_bytes(rounded(bits, got.dtype)), name
                for want in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
                    got = f.get_tensor(name, dtype=want)
                    assert got.dtype == want
                    assert tensor_bytes(got) == tensor_bytes(rounded(bits, want)), (name, want)
            elif dtype in ("F6_E2M3", "F6_E3M2") or (dtype == "F4" and t["shape"][-1] % 2):
                with pytest.raises(qins.UnsupportedDtypeError, match=dtype):
                    f.get_tensor(name)
            else:
                got = f.get_tensor(name)
                assert got.dtype == getattr(torch, qins._open._TORCH[dtype])
                shape = t["shape"][:-1] + [t["shape"][-1] // 2] if dtype == "F4" else t["shape"]
                assert list(got.shape) == shape
                want = raw_bytes(t, qins.safe_open(VALID / f"{golden}.qins", framework="np"))
                assert tensor_bytes(got) == want, name


@pytest.mark.parametrize("golden", ["log_ranks", "lloyd_rows", "row_scales", "mixed", "linear"])
def test_load_file_and_get_slice(golden):
    path = VALID / f"{golden}.qins"
    loaded = qins.torch.load_file(path)
    assert list(loaded) == [t["name"] for t in expected(golden)["tensors"]]
    with qins.safe_open(path, framework="pt", device="cpu") as f:
        for name, t in loaded.items():
            assert tensor_bytes(t) == tensor_bytes(f.get_tensor(name))
            if t.dim() == 0 or t.shape[0] == 0:
                continue
            s = f.get_slice(name)
            n = t.shape[0]
            for key in (slice(None), slice(1, None), slice(None, None, 2), slice(-2, None), 0, -1,
                        (slice(None), Ellipsis)):
                assert tensor_bytes(s[key]) == tensor_bytes(t[key]), (name, key)
                assert s[key].shape == t[key].shape
            if t.dim() >= 2 and t.shape[1] > 0:
                assert torch.equal(s[:, 0], t[:, 0]) or torch.isnan(t[:, 0]).any()
            assert len(s) == n
    # dtype= decodes straight into bfloat16: the exact f32 value, rounded once.
    bf16 = qins.torch.load_file(path, dtype=torch.bfloat16, device=torch.device("cpu"))
    f32 = qins.torch.load_file(path, dtype=torch.float32)
    for name, t in bf16.items():
        if loaded[name].is_floating_point():
            assert t.dtype == torch.bfloat16
            assert tensor_bytes(t) == tensor_bytes(f32[name].to(torch.bfloat16)), name
        else:
            assert t.dtype == loaded[name].dtype


def test_tensors_own_their_memory_and_outlive_the_file():
    with qins.safe_open(VALID / "mixed.qins", framework="pt") as f:
        w = f.get_tensor("w")
    # The file is closed; the tensor is still there, and writable.
    assert w.untyped_storage().nbytes() == w.nbytes
    w += 1
    assert torch.isfinite(w).all()


def hf_dir(tmp_path, tensors, name="src"):
    """A tiny Hugging Face directory holding `tensors`, converted to a .qins."""
    d = tmp_path / name
    d.mkdir()
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps({"model_type": "tiny"}))
    out = tmp_path / f"{name}.qins"
    subprocess.run([tool("qins-convert"), str(d), str(out), "--quiet"], check=True)
    return out


class Tied(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(16, 8)
        self.norm = torch.nn.LayerNorm(8)
        self.head = torch.nn.Linear(8, 16, bias=False)
        self.head.weight = self.embed.weight  # tied, as in many LMs
        self.register_buffer("steps", torch.zeros(3, dtype=torch.int64))


def test_load_model_with_tied_weights(tmp_path):
    torch.manual_seed(0)
    src = Tied()
    state = {k: v.clone() for k, v in src.state_dict().items() if k != "head.weight"}
    path = hf_dir(tmp_path, state)
    loaded = qins.torch.load_file(path)
    model = Tied()
    missing, unexpected = qins.torch.load_model(model, path)
    assert (missing, unexpected) == ([], [])
    for name, t in model.state_dict().items():
        want = loaded["embed.weight" if name == "head.weight" else name]
        assert torch.equal(t, want), name
    assert model.head.weight is model.embed.weight

    # A file holding both names of a tied pair reports the second as unexpected, as
    # safetensors does; strict=True refuses it.
    both = hf_dir(tmp_path, dict(state, **{"head.weight": state["embed.weight"].clone()}), "both")
    with pytest.raises(RuntimeError, match='Unexpected key\\(s\\) in state_dict: "head.weight"'):
        qins.torch.load_model(Tied(), both)
    assert qins.torch.load_model(Tied(), both, strict=False) == ([], ["head.weight"])

    # Missing and unexpected names.
    partial = hf_dir(tmp_path, {"embed.weight": state["embed.weight"], "extra": torch.ones(2)}, "p")
    with pytest.raises(RuntimeError, match='Missing key\\(s\\) in state_dict: "norm.bias", "norm.weight", "steps"'):
        qins.torch.load_model(Tied(), partial)
    assert qins.torch.load_model(Tied(), partial, strict=False) == (
        ["norm.bias", "norm.weight", "steps"],
        ["extra"],
    )

"""The real model: all-MiniLM-L6-v2 converted by qins-convert.

- every API on it, bit for bit against the Rust reader (qins-dump's CRC-32 of each decoded
  tensor, and qins-export's safetensors);
- end to end: the README's recipe (run as written) builds a transformers model from the .qins
  alone; its sentence embeddings equal those of the model exported back to safetensors and
  loaded by transformers and by sentence-transformers (to float tolerance), and are close to
  the source model's (cosine >= 0.9999).
"""

from __future__ import annotations

import re
import zlib

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as st_load_numpy

import qins
import qins.numpy
import qins.torch
from conftest import ROOT, rust_dump

SENTENCES = [
    "A .qins file is a complete model: weights, config and tokenizer in one file.",
    "The quick brown fox jumps over the lazy dog.",
    "Compressed weights decode with a table lookup and a sign flip.",
    "Short.",
]


def test_every_tensor_agrees_with_the_rust_reader(minilm_qins, minilm_exported):
    dump = {t["name"]: t for t in rust_dump(minilm_qins)["tensors"]}
    exported = st_load_numpy(str(minilm_exported / "model.safetensors"))
    loaded = qins.numpy.load_file(minilm_qins)
    assert list(loaded) == list(dump)
    assert set(loaded) == set(exported)
    encoded = 0
    for name, a in loaded.items():
        assert zlib.crc32(a.tobytes()) == dump[name]["decoded_crc32"], name
        assert a.dtype == exported[name].dtype and a.shape == exported[name].shape
        assert a.tobytes() == exported[name].tobytes(), name
        encoded += dump[name]["codec"] != "raw"
    assert encoded >= 36  # the linear layers of six blocks
    # torch gives the same bits.
    for name, t in qins.torch.load_file(minilm_qins).items():
        assert t.numpy().tobytes() == loaded[name].tobytes(), name


def test_safe_open_on_minilm(minilm_qins, tmp_path):
    with qins.safe_open(minilm_qins, framework="pt") as f:
        assert "qins.policy" in f.metadata() and "qins.writer" in f.metadata()
        assert "config.json" in f.asset_names() and "tokenizer.json" in f.asset_names()
        for name in ("embeddings.word_embeddings.weight", "encoder.layer.3.attention.self.query.weight"):
            full = f.get_tensor(name)
            s = f.get_slice(name)
            for key in (slice(100, 200), slice(5, None, 7), -1, (slice(None, 3), slice(10, 20))):
                assert torch.equal(s[key], full[key]), (name, key)
        written = f.save_assets(tmp_path)
        assert len(written) == len(f.asset_names())


def readme_recipe() -> str:
    """The Python block of the README's recipe, exactly as documented."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("**Recipe: a `transformers` model from a `.qins` alone**")
    block = re.search(r"```python\n(.*?)```", readme[start:], re.S)
    assert block is not None
    return block.group(1)


def mean_pooled(model, tokenizer, sentences):
    """sentence-transformers' pipeline for this model: mean of the token states, normalised."""
    batch = tokenizer(sentences, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


@pytest.fixture(scope="module")
def recipe(minilm_qins):
    """What the README's recipe builds from the .qins alone."""
    code = readme_recipe()
    assert 'path = "model.qins"' in code
    scope: dict = {}
    exec(compile(code.replace('"model.qins"', repr(str(minilm_qins))), "README recipe", "exec"), scope)
    assert scope["hidden"].shape[0] == 1
    return scope["model"], scope["tokenizer"]


def test_recipe_matches_the_exported_model(recipe, minilm_exported):
    from transformers import AutoModel, AutoTokenizer

    model, tokenizer = recipe
    ours = mean_pooled(model, tokenizer, SENTENCES)
    exported = AutoModel.from_pretrained(str(minilm_exported)).eval()
    theirs = mean_pooled(exported, AutoTokenizer.from_pretrained(str(minilm_exported)), SENTENCES)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-6), (ours - theirs).abs().max()


def test_recipe_matches_sentence_transformers_on_the_export_and_the_source(recipe, minilm_exported, minilm_dir):
    from sentence_transformers import SentenceTransformer

    model, tokenizer = recipe
    ours = mean_pooled(model, tokenizer, SENTENCES)
    exported = torch.from_numpy(SentenceTransformer(str(minilm_exported), device="cpu").encode(SENTENCES))
    assert torch.allclose(ours, exported, rtol=0, atol=1e-5), (ours - exported).abs().max()
    source = torch.from_numpy(SentenceTransformer(str(minilm_dir), device="cpu").encode(SENTENCES))
    cosine = torch.nn.functional.cosine_similarity(ours, source, dim=-1)
    assert cosine.min() >= 0.9999, cosine
    # The quantisation is not a no-op: the embeddings differ from the source's a little.
    assert not torch.equal(ours, source)

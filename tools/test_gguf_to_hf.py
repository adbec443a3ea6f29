"""Tests of tools/gguf_to_hf.py on tiny GGUF files written here with the gguf package's own
writer: Hugging Face weights go in through llama.cpp's Q/K row permutation (copied below from
convert_hf_to_gguf.py, independent of the converter's inverse) and must come out exactly; every
refusal names what is wrong and leaves no output behind.

Needs the venv of tools/venv.sh (gguf, numpy, tokenizers).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gguf  # noqa: E402
from gguf.quants import dequantize, quantize  # noqa: E402

import gguf_to_hf  # noqa: E402
from check_smollm_tokenizer import byte_chars  # noqa: E402

HIDDEN, HEADS, KV_HEADS, INTER, LAYERS = 32, 4, 2, 64, 2
HEAD_DIM = HIDDEN // HEADS
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
            "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}")

TOKENS = SPECIALS + list(byte_chars().values()) + ["Ġt", "he", "Ġthe"]
MERGES = ["Ġ t", "h e", "Ġt he"]


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py, LlamaModel.permute (n_head already the KV count for K)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape))


def hf_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    out = {"model.embed_tokens.weight": w(len(TOKENS), HIDDEN), "model.norm.weight": w(HIDDEN)}
    for n in range(LAYERS):
        p = f"model.layers.{n}."
        out |= {p + "input_layernorm.weight": w(HIDDEN),
                p + "post_attention_layernorm.weight": w(HIDDEN),
                p + "self_attn.q_proj.weight": w(HEADS * HEAD_DIM, HIDDEN),
                p + "self_attn.k_proj.weight": w(KV_HEADS * HEAD_DIM, HIDDEN),
                p + "self_attn.v_proj.weight": w(KV_HEADS * HEAD_DIM, HIDDEN),
                p + "self_attn.o_proj.weight": w(HIDDEN, HEADS * HEAD_DIM),
                p + "mlp.gate_proj.weight": w(INTER, HIDDEN),
                p + "mlp.up_proj.weight": w(INTER, HIDDEN),
                p + "mlp.down_proj.weight": w(HIDDEN, INTER)}
    return out


GGUF_NAMES = {v: k for k, v in gguf_to_hf.LAYER_TENSORS.items()}


def gguf_name(hf: str) -> str:
    if hf.startswith("model.layers."):
        n, rest = hf[len("model.layers."):].split(".", 1)
        return f"blk.{n}.{GGUF_NAMES[rest]}"
    return {v: k for k, v in gguf_to_hf.GLOBAL_TENSORS.items()}[hf]


def write_gguf(path: str, weights: dict[str, np.ndarray], *, arch: str = "llama",
               pre: str = "smollm", extra_tensors: dict[str, np.ndarray] | None = None,
               token_types: list[int] | None = None, q8_q: bool = False,
               skip_keys: tuple[str, ...] = ()) -> None:
    """A GGUF as llama.cpp's converter lays it out: Q and K rows permuted, names mapped; with
    q8_q, layer 0's Q projection stored as Q8_0."""
    w = gguf.GGUFWriter(path, arch)
    kv = {
        "block_count": lambda: w.add_block_count(LAYERS),
        "context_length": lambda: w.add_context_length(256),
        "embedding_length": lambda: w.add_embedding_length(HIDDEN),
        "feed_forward_length": lambda: w.add_feed_forward_length(INTER),
        "head_count": lambda: w.add_head_count(HEADS),
        "head_count_kv": lambda: w.add_head_count_kv(KV_HEADS),
        "rope_freq_base": lambda: w.add_rope_freq_base(100000.0),
        "rms_eps": lambda: w.add_layer_norm_rms_eps(1e-5),
        "rope_dims": lambda: w.add_rope_dimension_count(HEAD_DIM),
        "vocab_size": lambda: w.add_vocab_size(len(TOKENS)),
        "tokenizer_model": lambda: w.add_tokenizer_model("gpt2"),
        "tokenizer_pre": lambda: w.add_tokenizer_pre(pre),
        "tokens": lambda: w.add_token_list(TOKENS),
        "token_types": lambda: w.add_token_types(token_types or [3] * 3 + [1] * (len(TOKENS) - 3)),
        "merges": lambda: w.add_token_merges(MERGES),
        "bos": lambda: w.add_bos_token_id(1),
        "eos": lambda: w.add_eos_token_id(2),
        "pad": lambda: w.add_pad_token_id(2),
        "unk": lambda: w.add_unk_token_id(0),
        "template": lambda: w.add_chat_template(TEMPLATE),
    }
    for key, add in kv.items():
        if key not in skip_keys:
            add()
    for hf, t in weights.items():
        if hf.endswith("q_proj.weight"):
            t = llama_cpp_permute(t, HEADS)
        elif hf.endswith("k_proj.weight"):
            t = llama_cpp_permute(t, KV_HEADS)
        if q8_q and hf == "model.layers.0.self_attn.q_proj.weight":
            w.add_tensor(gguf_name(hf), quantize(t, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(gguf_name(hf), t)
    for name, t in (extra_tensors or {}).items():
        w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def read_safetensors(path: str) -> tuple[dict[str, np.ndarray], dict]:
    """A minimal reader: float32 arrays (BF16 widened exactly), plus the raw header."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        if info["dtype"] == "F32":
            arr = np.frombuffer(body[a:b], dtype="<f4")
        else:
            arr = (np.frombuffer(body[a:b], dtype="<u2").astype("<u4") << 16).view("<f4")
        out[name] = arr.reshape(info["shape"])
    return out, header


class Base(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name
        self.gguf = os.path.join(self.dir, "m.gguf")
        self.f32 = os.path.join(self.dir, "out", "f32")
        self.bf16 = os.path.join(self.dir, "out", "bf16")

    def tearDown(self):
        self.tmp.cleanup()

    def refuse(self, fragment: str, **kw) -> None:
        """Convert and expect a ConversionError naming `fragment`, with no output left."""
        with self.assertRaises(gguf_to_hf.ConversionError) as cm:
            gguf_to_hf.convert(self.gguf, self.f32, self.bf16, **kw)
        self.assertIn(fragment, str(cm.exception))
        out = os.path.join(self.dir, "out")
        self.assertEqual(os.listdir(out) if os.path.isdir(out) else [], [])


class RoundTrip(Base):
    def test_weights_come_back_exactly_with_hf_names(self):
        weights = hf_weights()
        write_gguf(self.gguf, weights, q8_q=True)
        gguf_to_hf.convert(self.gguf, self.f32, self.bf16)
        got, header = read_safetensors(os.path.join(self.f32, "model.safetensors"))
        self.assertEqual(sorted(got), sorted(weights))
        self.assertNotIn("lm_head.weight", got)
        q0 = "model.layers.0.self_attn.q_proj.weight"
        q8 = gguf.GGMLQuantizationType.Q8_0
        want_q0 = dequantize(quantize(weights[q0], q8), q8)
        self.assertGreater(np.abs(want_q0 - weights[q0]).max(), 0)  # Q8_0 did round
        for name, w in weights.items():
            np.testing.assert_array_equal(got[name], want_q0 if name == q0 else w, err_msg=name)
        self.assertEqual(header["__metadata__"], {"format": "pt"})
        offsets = [header[n]["data_offsets"] for n in sorted(weights)]
        self.assertEqual(offsets[0][0], 0)
        self.assertTrue(all(a[1] == b[0] for a, b in zip(offsets, offsets[1:])))

    def test_bf16_is_the_f32_rounded_to_nearest_even(self):
        weights = hf_weights()
        write_gguf(self.gguf, weights)
        gguf_to_hf.convert(self.gguf, self.f32, self.bf16)
        f32, _ = read_safetensors(os.path.join(self.f32, "model.safetensors"))
        bf16, header = read_safetensors(os.path.join(self.bf16, "model.safetensors"))
        self.assertEqual({h["dtype"] for n, h in header.items() if n != "__metadata__"}, {"BF16"})
        for name in f32:
            err = np.abs(bf16[name] - f32[name]) / np.abs(f32[name])
            self.assertLessEqual(err.max(), 2.0 ** -8, name)

    def test_config_and_tokenizer_files(self):
        write_gguf(self.gguf, hf_weights())
        gguf_to_hf.convert(self.gguf, self.f32, self.bf16)
        def load(d: str, f: str) -> dict:
            with open(os.path.join(d, f), encoding="utf-8") as fh:
                return json.load(fh)
        cfg = load(self.f32, "config.json")
        self.assertEqual(cfg["architectures"], ["LlamaForCausalLM"])
        self.assertEqual((cfg["hidden_size"], cfg["num_attention_heads"],
                          cfg["num_key_value_heads"], cfg["intermediate_size"],
                          cfg["num_hidden_layers"], cfg["vocab_size"], cfg["head_dim"]),
                         (HIDDEN, HEADS, KV_HEADS, INTER, LAYERS, len(TOKENS), HEAD_DIM))
        self.assertEqual((cfg["rms_norm_eps"], cfg["rope_theta"], cfg["tie_word_embeddings"]),
                         (1e-05, 100000, True))
        self.assertEqual((cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]),
                         (1, 2, 2))
        self.assertEqual(cfg["torch_dtype"], "float32")
        self.assertEqual(load(self.bf16, "config.json")["torch_dtype"], "bfloat16")
        self.assertEqual(load(self.f32, "generation_config.json"),
                         {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2})
        tc = load(self.f32, "tokenizer_config.json")
        self.assertEqual((tc["bos_token"], tc["eos_token"], tc["pad_token"], tc["unk_token"]),
                         ("<|im_start|>", "<|im_end|>", "<|im_end|>", "<|endoftext|>"))
        self.assertEqual(tc["chat_template"], TEMPLATE)
        self.assertEqual(list(tc["added_tokens_decoder"]), ["0", "1", "2"])
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(os.path.join(self.f32, "tokenizer.json"))
        self.assertEqual(tok.get_vocab_size(), len(TOKENS))
        enc = tok.encode("<|im_start|>the the 42<|im_end|>")
        self.assertEqual(enc.tokens, ["<|im_start|>", "t", "he", "Ġthe", "Ġ", "4", "2",
                                      "<|im_end|>"])
        self.assertEqual(tok.decode(enc.ids, skip_special_tokens=False),
                         "<|im_start|>the the 42<|im_end|>")

    def test_output_is_deterministic(self):
        write_gguf(self.gguf, hf_weights())
        gguf_to_hf.convert(self.gguf, self.f32, self.bf16)
        again = os.path.join(self.dir, "again")
        gguf_to_hf.convert(self.gguf, again)
        for name in sorted(os.listdir(self.f32)):
            with open(os.path.join(self.f32, name), "rb") as a, \
                 open(os.path.join(again, name), "rb") as b:
                self.assertEqual(a.read(), b.read(), name)

    def test_a_stored_output_head_becomes_lm_head_untied(self):
        weights = hf_weights()
        head = np.random.default_rng(1).standard_normal((len(TOKENS), HIDDEN)).astype(np.float32)
        write_gguf(self.gguf, weights, extra_tensors={"output.weight": head})
        gguf_to_hf.convert(self.gguf, self.f32)
        got, _ = read_safetensors(os.path.join(self.f32, "model.safetensors"))
        np.testing.assert_array_equal(got["lm_head.weight"], head)
        with open(os.path.join(self.f32, "config.json")) as f:
            self.assertFalse(json.load(f)["tie_word_embeddings"])


class Permutation(unittest.TestCase):
    def test_unpermute_inverts_llama_cpp_for_q_and_k(self):
        rng = np.random.default_rng(2)
        for heads in (HEADS, KV_HEADS, 9, 3):
            w = rng.standard_normal((heads * 64, 5)).astype(np.float32)
            back = gguf_to_hf.unpermute_rows(llama_cpp_permute(w, heads), heads)
            np.testing.assert_array_equal(back, w)
            # and it is not the identity: the check above could fail
            self.assertFalse(np.array_equal(llama_cpp_permute(w, heads), w))

    def test_rows_that_do_not_split_into_heads_are_refused(self):
        with self.assertRaises(gguf_to_hf.ConversionError):
            gguf_to_hf.unpermute_rows(np.zeros((10, 4), np.float32), 4)


class Bf16(unittest.TestCase):
    def test_round_to_nearest_even(self):
        bits = np.array([0x3F800000, 0x3F808000, 0x3F818000, 0x3F808001, 0xBF80FFFF,
                         0x7F7FFFFF, 0x00000001], dtype="<u4")
        got = gguf_to_hf.to_bf16_bits(bits.view("<f4"))
        self.assertEqual([hex(v) for v in got],
                         [hex(v) for v in (0x3F80, 0x3F80, 0x3F82, 0x3F81, 0xBF81, 0x7F80,
                                           0x0000)])


class Refusals(Base):
    def test_not_llama(self):
        write_gguf(self.gguf, hf_weights(), arch="qwen2")
        self.refuse("general.architecture is 'qwen2'")

    def test_missing_key(self):
        write_gguf(self.gguf, hf_weights(), skip_keys=("head_count",))
        self.refuse("llama.attention.head_count is missing")

    def test_missing_chat_template(self):
        write_gguf(self.gguf, hf_weights(), skip_keys=("template",))
        self.refuse("tokenizer.chat_template is missing")

    def test_unknown_pre_tokenizer(self):
        write_gguf(self.gguf, hf_weights(), pre="llama-bpe")
        self.refuse("pre-tokenizer 'llama-bpe'")

    def test_user_defined_token(self):
        write_gguf(self.gguf, hf_weights(), token_types=[3, 3, 4] + [1] * (len(TOKENS) - 3))
        self.refuse("token 2 '<|im_end|>' has type 4")

    def test_unknown_tensor(self):
        write_gguf(self.gguf, hf_weights(), extra_tensors={"rope_freqs.weight": np.ones(4, np.float32)})
        self.refuse("tensor rope_freqs.weight has no Hugging Face Llama name")

    def test_block_beyond_block_count(self):
        write_gguf(self.gguf, hf_weights(),
                   extra_tensors={"blk.7.attn_norm.weight": np.ones(HIDDEN, np.float32)})
        self.refuse("tensor blk.7.attn_norm.weight is for block 7")

    def test_wrong_shape(self):
        weights = hf_weights()
        weights["model.layers.1.mlp.up_proj.weight"] = np.ones((INTER, HIDDEN + 32), np.float32)
        write_gguf(self.gguf, weights)
        self.refuse(f"tensor blk.1.ffn_up.weight has shape {[INTER, HIDDEN + 32]}")

    def test_missing_tensor(self):
        weights = hf_weights()
        del weights["model.norm.weight"]
        write_gguf(self.gguf, weights)
        self.refuse("1 tensors missing, first model.norm.weight")

    def test_non_finite_weights(self):
        weights = hf_weights()
        weights["model.layers.0.mlp.gate_proj.weight"][3, 4] = np.inf
        write_gguf(self.gguf, weights)
        self.refuse("tensor blk.0.ffn_gate.weight dequantizes to non-finite values")

    def test_not_a_gguf(self):
        with open(self.gguf, "wb") as f:
            f.write(b"not a gguf file at all" * 10)
        self.refuse("not a readable GGUF file")

    def test_existing_output(self):
        write_gguf(self.gguf, hf_weights())
        os.makedirs(self.bf16)
        with self.assertRaises(gguf_to_hf.ConversionError) as cm:
            gguf_to_hf.convert(self.gguf, self.f32, self.bf16)
        self.assertIn("already exists", str(cm.exception))
        self.assertFalse(os.path.exists(self.f32))

    def test_cli_prints_one_error_line_and_exits_1(self):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = gguf_to_hf.main([os.path.join(self.dir, "absent.gguf"), "--f32", self.f32])
        self.assertEqual(rc, 1)
        self.assertRegex(err.getvalue(), r"^error: .*absent\.gguf.*\n$")

    def test_cli_usage_error_exits_2(self):
        with contextlib.redirect_stderr(io.StringIO()), self.assertRaises(SystemExit) as cm:
            gguf_to_hf.main([self.gguf])
        self.assertEqual(cm.exception.code, 2)


if __name__ == "__main__":
    unittest.main()

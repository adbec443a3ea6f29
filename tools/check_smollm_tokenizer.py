#!/usr/bin/env python3
"""Checks the tokenizer files that tools/gguf_to_hf.py rebuilt for SmolLM2-135M-Instruct
(tools/fetch-smollm.sh makes them) against the GGUF they came from:

1. tokenizer.json loads with the `tokenizers` package and its vocab is the GGUF's, id for id;
   the 17 control tokens are special added tokens;
2. encoding agrees with an independent byte-level BPE written here from the GGUF alone
   (llama.cpp's "smollm" split: each digit alone, then the GPT-2 regex; merges by rank), on
   texts with non-ASCII, digits, whitespace runs, code and special tokens, and decoding
   gives the text back;
3. tokenizer_config.json carries the GGUF's chat template, which renders a two-message
   conversation (jinja2, as transformers renders it) to the exact ChatML text, whose
   special tokens encode to single ids.

Usage: check_smollm_tokenizer.py [MODEL_DIR [GGUF]] (defaults: the fetched ones). Needs the
venv of tools/venv.sh (gguf, tokenizers, jinja2, regex).
"""

from __future__ import annotations

import json
import os
import sys
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_DIR = os.path.join(ROOT, ".cache", "models", "smollm2-135m-instruct")
GGUF = os.path.join(ROOT, ".cache", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")

import jinja2.sandbox  # noqa: E402
import regex  # noqa: E402
from gguf import GGUFReader  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

GPT2_SPLIT = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
DIGIT = regex.compile(r"(\p{N})")

TEXTS = [
    "Hello, world! How are you today?",
    "The year 2024 had 366 days; π ≈ 3.14159 and 1,000,000 > 999.",
    "Count:   42 items,\n\n 7 more",  # spaces before digits: only the Digits split keeps them whole
    "Café naïve façade — Ünïcödé, 日本語のテキスト, Россия, emoji 🙂👍🏽.",
    "  leading spaces\n\ttabs and\r\nnewlines   \n\n  trailing  ",
    "def f(x):\n    return x ** 2  # it's a comment, isn't it?",
    "<|im_start|>user\nWhat's 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>",
]

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def byte_chars() -> dict[int, str]:
    """GPT-2's printable stand-ins for the 256 bytes."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, n = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return out


class ReferenceBpe:
    """Byte-level BPE from the GGUF's tokens and merges, nothing else."""

    def __init__(self, tokens: list[str], types: list[int], merges: list[str]):
        self.ids = {t: i for i, t in enumerate(tokens)}
        self.ranks = {tuple(m.split(" ")): r for r, m in enumerate(merges)}
        self.specials = [t for t, ty in zip(tokens, types) if ty == 3]
        self.bytes = byte_chars()
        self.special_split = regex.compile(
            "(" + "|".join(regex.escape(s) for s in self.specials) + ")")

    def word(self, symbols: list[str]) -> list[str]:
        while len(symbols) > 1:
            pairs = [(self.ranks.get(p, 1 << 60), i)
                     for i, p in enumerate(zip(symbols, symbols[1:]))]
            rank, i = min(pairs)
            if rank == 1 << 60:
                break
            symbols = symbols[:i] + [symbols[i] + symbols[i + 1]] + symbols[i + 2:]
        return symbols

    def encode(self, text: str) -> list[int]:
        out = []
        for part in self.special_split.split(text):
            if part in self.specials:
                out.append(self.ids[part])
                continue
            for chunk in DIGIT.split(part):
                for piece in GPT2_SPLIT.findall(chunk):
                    mapped = [self.bytes[b] for b in piece.encode("utf-8")]
                    out.extend(self.ids[s] for s in self.word(mapped))
        return out


class SmolLMTokenizer(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for path in (MODEL_DIR, GGUF):
            if not os.path.exists(path):
                raise SystemExit(f"error: {path} is missing; run ./tools/fetch-smollm.sh")
        r = GGUFReader(GGUF, "r")
        get = lambda key: r.fields[key].contents()  # noqa: E731
        cls.tokens = [str(t) for t in get("tokenizer.ggml.tokens")]
        cls.types = [int(t) for t in get("tokenizer.ggml.token_type")]
        cls.merges = [str(m) for m in get("tokenizer.ggml.merges")]
        cls.template = get("tokenizer.chat_template")
        cls.gguf_ids = {k: int(get(f"tokenizer.ggml.{k}_token_id"))
                        for k in ("bos", "eos", "padding", "unknown")}
        cls.tok = Tokenizer.from_file(os.path.join(MODEL_DIR, "tokenizer.json"))
        with open(os.path.join(MODEL_DIR, "tokenizer_config.json"), encoding="utf-8") as f:
            cls.config = json.load(f)
        cls.ref = ReferenceBpe(cls.tokens, cls.types, cls.merges)

    def test_vocab_is_the_gguf_vocab_id_for_id(self):
        self.assertEqual(self.tok.get_vocab_size(with_added_tokens=True), len(self.tokens))
        self.assertEqual(len(self.tokens), 49152)
        self.assertEqual([self.tok.id_to_token(i) for i in range(len(self.tokens))], self.tokens)
        self.assertEqual(self.tok.get_vocab(with_added_tokens=True),
                         {t: i for i, t in enumerate(self.tokens)})

    def test_control_tokens_are_special_added_tokens(self):
        added = self.tok.get_added_tokens_decoder()
        control = [i for i, ty in enumerate(self.types) if ty == 3]
        self.assertEqual(control, list(range(17)))
        self.assertEqual(sorted(added), control)
        for i in control:
            self.assertEqual(added[i].content, self.tokens[i])
            self.assertTrue(added[i].special, self.tokens[i])
            self.assertFalse(added[i].normalized, self.tokens[i])

    def test_encoding_agrees_with_a_reference_bpe_built_from_the_gguf(self):
        for text in TEXTS:
            with self.subTest(text=text):
                want = self.ref.encode(text)
                self.assertEqual(self.tok.encode(text).ids, want)
                # the post-processor adds nothing (SmolLM2 adds no BOS)
                self.assertEqual(self.tok.encode(text, add_special_tokens=True).ids, want)

    def test_digits_are_split_one_by_one(self):
        self.assertEqual(self.tok.encode("12345").tokens, ["1", "2", "3", "4", "5"])

    def test_decode_gives_the_text_back(self):
        for text in TEXTS:
            with self.subTest(text=text):
                ids = self.tok.encode(text).ids
                self.assertEqual(self.tok.decode(ids, skip_special_tokens=False), text)

    def test_special_tokens_roles(self):
        c = self.config
        self.assertEqual(c["bos_token"], self.tokens[self.gguf_ids["bos"]])
        self.assertEqual(c["eos_token"], self.tokens[self.gguf_ids["eos"]])
        self.assertEqual(c["pad_token"], self.tokens[self.gguf_ids["padding"]])
        self.assertEqual(c["unk_token"], self.tokens[self.gguf_ids["unknown"]])
        self.assertEqual((c["bos_token"], c["eos_token"], c["pad_token"], c["unk_token"]),
                         ("<|im_start|>", "<|im_end|>", "<|im_end|>", "<|endoftext|>"))
        self.assertEqual(c["chat_template"], self.template)

    def test_chat_template_renders_a_conversation(self):
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        template = env.from_string(self.config["chat_template"])
        messages = [{"role": "user", "content": "What is the capital of France?"},
                    {"role": "assistant", "content": "The capital of France is Paris."}]
        text = template.render(messages=messages, add_generation_prompt=False,
                               bos_token=self.config["bos_token"],
                               eos_token=self.config["eos_token"])
        self.assertEqual(text,
                         f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
                         "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
                         "<|im_start|>assistant\nThe capital of France is Paris.<|im_end|>\n")
        prompt = template.render(messages=messages[:1], add_generation_prompt=True)
        self.assertTrue(prompt.endswith("<|im_end|>\n<|im_start|>assistant\n"), prompt)
        ids = self.tok.encode(text).ids
        self.assertEqual(ids.count(1), 3)  # <|im_start|>, one id each
        self.assertEqual(ids.count(2), 3)  # <|im_end|>
        self.assertEqual(ids, self.ref.encode(text))


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and not args[0].startswith("-"):
        MODEL_DIR = args.pop(0)
        if args and not args[0].startswith("-"):
            GGUF = args.pop(0)
    unittest.main(argv=[sys.argv[0], *args])

#!/usr/bin/env python3
"""The model-level check of the SmolLM2-135M-Instruct directories that tools/fetch-smollm.sh
converts from the GGUF: does the model still work? A wrong Q/K row permutation, a wrong tensor
name or a bad dequantization gives gibberish, which tensor-level checks do not see.

With transformers + torch on the CPU:
1. greedy-generates 30 tokens for three chat prompts (the model's own chat template through
   AutoTokenizer) and checks the answers are on topic (printed, for a person to read too);
2. measures perplexity on a short built-in paragraph, and again with the Q and K rows put
   back in llama.cpp's order (what a converter that forgot to undo the permutation would
   write): the first must be low, the second far higher, which shows the check can fail;
3. checks the BF16 directory: every tensor is exactly torch's float32 -> bfloat16 rounding of
   the F32 one, and its perplexity is within 2% of the F32 one.

Needs torch and transformers, which tools/requirements.txt installs into the project's venv;
tools/test.sh runs it (about 15 s):
    .cache/venv/bin/python tools/check_smollm.py [F32_DIR [BF16_DIR]]
Prints `N passed, M failed` last; exits 1 on any failure.
"""

from __future__ import annotations

import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
F32_DIR = os.path.join(ROOT, ".cache", "models", "smollm2-135m-instruct")
BF16_DIR = os.path.join(ROOT, ".cache", "models", "smollm2-135m-instruct-bf16")

try:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
except ImportError as e:
    sys.exit(f"error: {e}; this check needs torch and transformers in the venv: "
             ".cache/venv/bin/pip install torch transformers")

# (prompt, words of which the answer must contain at least one, lower-cased)
PROMPTS = [
    ("What is the capital of France?", ["paris"]),
    ("Write one sentence about the ocean.", ["ocean", "sea", "wave"]),
    ("Give me three tips for sleeping better.", ["sleep", "bed", "rest"]),
]
NEW_TOKENS = 30

PARAGRAPH = (
    "The Moon is Earth's only natural satellite. It orbits the planet at an average distance "
    "of about 384,000 kilometres and takes roughly 27 days to complete one orbit. Because the "
    "same side of the Moon always faces Earth, people on the ground never see its far side. "
    "The Moon's gravity causes the ocean tides, and its phases have been used to measure time "
    "since ancient days. In 1969, astronauts of the Apollo 11 mission became the first people "
    "to walk on its surface."
)
MAX_PPL = 20.0         # measured 7.87 (F32) on this paragraph, 108 tokens
MIN_WRONG_RATIO = 3.0  # measured 49.9 / 7.87 = 6.3x with llama.cpp's Q/K row order left in
# (that model answers every prompt with an immediate <|im_end|>)


class Checks:
    def __init__(self):
        self.passed = self.failed = 0

    def check(self, ok: bool, what: str) -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
        if ok:
            self.passed += 1
        else:
            self.failed += 1


def perplexity(model, ids: torch.Tensor) -> float:
    with torch.no_grad():
        loss = model(ids, labels=ids).loss
    return math.exp(loss.item())


def llama_cpp_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute: the row order the GGUF stores."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def main() -> int:
    global F32_DIR, BF16_DIR
    args = sys.argv[1:]
    if args:
        F32_DIR = args.pop(0)
    if args:
        BF16_DIR = args.pop(0)
    for d in (F32_DIR, BF16_DIR):
        if not os.path.isdir(d):
            sys.exit(f"error: {d} is missing; run ./tools/fetch-smollm.sh")
    torch.manual_seed(0)
    c = Checks()

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(F32_DIR)
    model = AutoModelForCausalLM.from_pretrained(F32_DIR, dtype=torch.float32).eval()
    print(f"loaded {F32_DIR} in {time.perf_counter() - t0:.1f} s "
          f"({sum(p.numel() for p in model.parameters()):,} parameters, torch {torch.__version__})")

    print(f"\n== greedy, {NEW_TOKENS} new tokens, chat template ==")
    for prompt, words in PROMPTS:
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                       add_generation_prompt=True)
        enc = tok(text, return_tensors="pt")
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=NEW_TOKENS, do_sample=False)
        dt = time.perf_counter() - t0
        answer = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        print(f"> {prompt}\n{answer}\n({out.shape[1] - enc['input_ids'].shape[1]} tokens, "
              f"{dt:.1f} s)\n")
        c.check(any(w in answer.lower() for w in words),
                f"answer to {prompt!r} mentions one of {words}")

    ids = tok(PARAGRAPH, return_tensors="pt")["input_ids"]
    ppl = perplexity(model, ids)
    print(f"== perplexity ==\nF32: {ppl:.2f} over {ids.shape[1]} tokens")
    c.check(ppl < MAX_PPL, f"F32 perplexity {ppl:.2f} < {MAX_PPL}")

    cfg = model.config
    state = {k: v.clone() for k, v in model.state_dict().items()}
    wrong = {k: llama_cpp_permute(v, cfg.num_attention_heads) if k.endswith("q_proj.weight")
             else llama_cpp_permute(v, cfg.num_key_value_heads) if k.endswith("k_proj.weight")
             else v for k, v in state.items()}
    model.load_state_dict(wrong)
    ppl_wrong = perplexity(model, ids)
    model.load_state_dict(state)
    print(f"with llama.cpp's Q/K row order left in: {ppl_wrong:.2f}")
    c.check(ppl_wrong > MIN_WRONG_RATIO * ppl,
            f"the unpermuted Q/K matter: {ppl_wrong:.2f} > {MIN_WRONG_RATIO} x {ppl:.2f}")

    print("\n== BF16 directory ==")
    f32 = load_file(os.path.join(F32_DIR, "model.safetensors"))
    bf16 = load_file(os.path.join(BF16_DIR, "model.safetensors"))
    c.check(sorted(f32) == sorted(bf16), f"same {len(f32)} tensor names in both")
    same = [k for k in f32 if k in bf16 and bf16[k].dtype == torch.bfloat16
            and torch.equal(f32[k].to(torch.bfloat16), bf16[k])]
    c.check(len(same) == len(f32), f"{len(same)}/{len(f32)} BF16 tensors are torch's rounding "
                                   "of the F32 ones, bit for bit")
    model16 = AutoModelForCausalLM.from_pretrained(BF16_DIR, dtype=torch.bfloat16).eval()
    ppl16 = perplexity(model16, ids)
    print(f"BF16 perplexity: {ppl16:.2f}")
    c.check(abs(ppl16 - ppl) / ppl < 0.02, f"BF16 perplexity {ppl16:.2f} within 2% of {ppl:.2f}")

    print(f"\n{c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())

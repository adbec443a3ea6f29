#!/usr/bin/env bash
# The main job on an example the project builds itself (no download):
# generate a small synthetic Hugging Face checkpoint, convert it to .qins, inspect and verify
# it, and export it back to a safetensors directory. Everything goes to ./demo/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cargo build --release --quiet --bin qins-synth --bin qins-convert --bin qins-inspect --bin qins-export
bin="$root/target/release"
out="$root/demo"
rm -rf "$out"
mkdir -p "$out"
echo "== qins-synth: a small BF16 checkpoint in 2 shards"
"$bin/qins-synth" "$out/hf" --preset small --dtype bf16 --shards 2
echo "== qins-convert"
"$bin/qins-convert" "$out/hf" "$out/model.qins"
echo "== qins-inspect --verify"
"$bin/qins-inspect" --verify "$out/model.qins"
echo "== qins-export"
"$bin/qins-export" "$out/model.qins" "$out/exported"
ls -l "$out/exported"

#!/usr/bin/env bash
# The `qins` Python package's speed, each figure beside its baseline in the same run:
#
#   tools/bench-python.sh              # a 1 GB BF16 checkpoint; about 5 minutes, ~2 GB under BENCH_DIR
#   tools/bench-python.sh --no-rust    # skip `cargo bench --bench decode` (the Rust yardstick)
#
# 1. qins.torch.load_file of a .qins made from a BF16 source (qins-synth --dtype bf16
#    --target-size $SIZE, converted with the default codec) against
#    safetensors.torch.load_file of the source, page-cached, each load in a fresh process:
#    against safetensors' default (lazy: no work at load), the same with every page touched
#    (the cost at first use), and its eager backend="pread" (crates/qins-py/bench/bench_python.py).
# 2. Decode throughput from Python (one 8192 x 8192 BF16 tensor coded with `log`) into memory
#    written before, against the Rust benchmark, `cargo bench -p qins-export --bench decode`,
#    whose paired pass decodes a `log` tensor of that shape on all cores; and `get_tensor`,
#    into new memory each time.
# Ends with a compact table: times, then the ratios.
#
# Environment: BENCH_DIR (default target/bench-data/python: the checkpoint and the .qins files,
# kept between runs), SIZE (default 1GB), RUNS (rounds per figure, default 5).
# Times on a shared machine drift: read the CPU times and the ratios, measured in alternating
# rounds, and the load average printed before and after.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

rust=1
for a in "$@"; do
    case "$a" in
    --no-rust) rust=0 ;;
    -h | --help)
        sed -n '2,22p' "$0"
        exit 0
        ;;
    *)
        echo "unknown argument: $a" >&2
        exit 2
        ;;
    esac
done
size="${SIZE:-1GB}"
runs="${RUNS:-5}"
data="${BENCH_DIR:-$root/target/bench-data/python}"
load() { cut -d' ' -f1-3 /proc/loadavg; }

py="$(./tools/venv.sh)"
cargo build --release --quiet --bin qins-synth --bin qins-convert
bin="${CARGO_TARGET_DIR:-$root/target}/release"
# The package as users get it: pip builds the release extension with maturin.
"$py" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps ./crates/qins-py

mkdir -p "$data"
if [ ! -f "$data/src/model.safetensors" ] || [ "$(cat "$data/size" 2>/dev/null)" != "$size" ]; then
    "$bin/qins-synth" "$data/src" --dtype bf16 --target-size "$size" --force
    rm -f "$data/model.qins"
    echo "$size" >"$data/size"
fi
[ -f "$data/model.qins" ] || "$bin/qins-convert" "$data/src" "$data/model.qins" --quiet
if [ ! -f "$data/one.qins" ]; then
    mkdir -p "$data/one"
    "$py" -c 'import sys, torch; from safetensors.torch import save_file
g = torch.Generator().manual_seed(0)
save_file({"w": torch.randn(8192, 8192, generator=g).to(torch.bfloat16)}, sys.argv[1])' "$data/one/model.safetensors"
    "$bin/qins-convert" "$data/one" "$data/one.qins" --codec log --quiet
fi
ls -l "$data/src/model.safetensors" "$data/model.qins" "$data/one.qins"

rust_out="$data/rust-decode.txt"
rust_arg=()
if [ "$rust" = 1 ]; then
    echo "== cargo bench -p qins-export --bench decode (the Rust yardstick); load $(load)"
    cargo bench --quiet -p qins-export --bench decode 2>/dev/null | sed -n '/^decode of/,$p' | tee "$rust_out"
    rust_arg=(--rust "$rust_out")
fi

echo "== Python ($("$py" -c 'import qins, torch, safetensors; print(f"qins {qins.__version__}, torch {torch.__version__}, safetensors {safetensors.__version__}")')); load $(load)"
"$py" crates/qins-py/bench/bench_python.py --source "$data/src/model.safetensors" --qins "$data/model.qins" \
    --qins-log "$data/one.qins" --runs "$runs" --json "$data/python.json" "${rust_arg[@]}"
echo "load after: $(load)"

#!/usr/bin/env bash
# Runs a model from its .qins and from its source directory with the same qins-run binary, the
# same dtype and the same prompt, alternating the two in one run, and prints:
#   - generation tokens/s (target: the .qins within 5% of the directory),
#   - time to first token, in process (after loading) and as a whole process started with
#     `-n 1` under hyperfine (target: the .qins at most 1.2x the directory),
#   - load time, and peak RSS from /usr/bin/time -v (target: the .qins at most 1.1x).
#
# Usage: tools/bench-run.sh [HF_DIR]   (default: .cache/models/smollm2-135m-instruct)
# Environment: DTYPE=f32|bf16 (f32), RUNS=N (5), TOKENS=N generated per run (64),
#              BENCH_DIR=DIR scratch space for the .qins (a temporary directory).
# Public tools only: hyperfine and /usr/bin/time (Debian packages hyperfine, time).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
model="${1:-$root/.cache/models/smollm2-135m-instruct}"
dtype="${DTYPE:-f32}"
runs="${RUNS:-5}"
tokens="${TOKENS:-64}"
prompt="Write a short story about a lighthouse keeper who finds a message in a bottle."

[ -d "$model" ] || { echo "bench-run: $model is not a directory (run tools/fetch-smollm.sh)" >&2; exit 1; }
command -v hyperfine >/dev/null || { echo "bench-run: hyperfine is missing (apt-get install hyperfine)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench-run: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }

scratch="${BENCH_DIR:-}"
if [ -z "$scratch" ]; then
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' EXIT
fi
mkdir -p "$scratch"

cargo build --release --locked -p qins-run -p qins-convert
bin="$root/target/release"
qins="$scratch/model.qins"
"$bin/qins-convert" "$model" "$qins" --force --quiet
cat "$model"/*.safetensors "$qins" >/dev/null # both page-cached before the first run

echo "bench-run: $model ($dtype, $tokens tokens, $runs runs each, alternating) on $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
results="$scratch/results.tsv"
: >"$results"
for i in $(seq "$runs"); do
  for which in dir qins; do
    src="$model"
    [ "$which" = qins ] && src="$qins"
    /usr/bin/time -v "$bin/qins-run" generate "$src" --prompt "$prompt" -n "$tokens" \
      --ignore-eos --dtype "$dtype" --json >"$scratch/out.json" 2>"$scratch/time.txt"
    rss="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$scratch/time.txt")"
    python3 - "$scratch/out.json" "$which" "$rss" >>"$results" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
g = r["generation"]
print("\t".join(str(x) for x in [sys.argv[2], r["load_s"], g["time_to_first_token_s"], g["tokens_per_s"], sys.argv[3], len(g["tokens"])]))
PY
  done
done

hyperfine --style basic --warmup 1 --runs "$runs" --export-json "$scratch/ttft.json" \
  -n dir "$bin/qins-run generate '$model' --prompt '$prompt' -n 1 --dtype $dtype --json" \
  -n qins "$bin/qins-run generate '$qins' --prompt '$prompt' -n 1 --dtype $dtype --json" >/dev/null

python3 - "$results" "$scratch/ttft.json" "$(stat -c %s "$qins")" "$(cat "$model"/*.safetensors | wc -c)" <<'PY'
import json, statistics as st, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
def med(which, col):
    return st.median(float(r[col]) for r in rows if r[0] == which)
hf = {r["command"]: r for r in json.load(open(sys.argv[2]))["results"]}
qins_bytes, dir_bytes = int(sys.argv[3]), int(sys.argv[4])
print(f"weights: .qins {qins_bytes/2**20:.1f} MiB, directory {dir_bytes/2**20:.1f} MiB")
print(f"{'figure (median)':<40} {'directory':>12} {'.qins':>12} {'ratio':>8}  target")
def line(name, d, q, target, fmt="{:.3f}"):
    print(f"{name:<40} {fmt.format(d):>12} {fmt.format(q):>12} {q/d:>8.3f}  {target}")
line("generation tokens/s", med("dir", 3), med("qins", 3), ">= 0.95")
line("load, s", med("dir", 1), med("qins", 1), "")
line("first token after load, s", med("dir", 2), med("qins", 2), "")
line("time to first token incl. load, s", med("dir", 1) + med("dir", 2), med("qins", 1) + med("qins", 2), "<= 1.2")
line("process with -n 1 (hyperfine), s", hf["dir"]["median"], hf["qins"]["median"], "<= 1.2")
line("peak RSS, MiB", med("dir", 4) / 1024, med("qins", 4) / 1024, "<= 1.1", "{:.1f}")
PY

#!/usr/bin/env bash
# Issue 18's acceptance check at full scale: a generated BF16 checkpoint of SIZE (default 3GB),
# converted once to a single .qins and once to exactly three shards, must export back to the same
# bytes (raw tensors bit-identical, encoded tensors decoded from identical codes), and every
# tensor section of the set must have the CRC of the single file's. tests/sharded.rs checks the
# same at small scale on every run.
#
#   tools/check-sharded.sh [SIZE] [WORK_DIR]
#
# Needs about 2.3 x SIZE of free space at its peak (the source is deleted once both conversions
# are done, and the two exports are hashed and deleted one after the other). Uses the release
# binaries (built here). Prints each step's wall time and peak RSS (/usr/bin/time -v).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
size="${1:-3GB}"
work="${2:-$root/.cache/check-sharded}"
bin="$root/target/release"
cd "$root"
cargo build --release --locked -p qins-synth -p qins-convert -p qins-export -p qins-inspect

rm -rf "$work"
mkdir -p "$work/one" "$work/set"
timed() { # timed LABEL CMD...: runs CMD, prints LABEL, wall seconds and peak RSS
    local label="$1"; shift
    /usr/bin/time -v -o "$work/time.txt" "$@" >"$work/out.txt"
    awk -v l="$label" '/Elapsed \(wall clock\)/ {w=$NF} /Maximum resident set size/ {r=$NF}
        END {printf "%-38s %10s wall  %8.1f MiB peak RSS\n", l, w, r/1024}' "$work/time.txt" >&2
}

timed "qins-synth --dtype bf16 $size" "$bin/qins-synth" "$work/src" --dtype bf16 \
    --target-size "$size" --shards 2
du -sb "$work/src" | awk '{printf "source: %s bytes\n", $1}'
timed "convert to one file" "$bin/qins-convert" "$work/src" "$work/one/model.qins" \
    --quiet --max-shard-size 1TB
single=$(stat -c %s "$work/one/model.qins")
# The smallest limit that gives three shards: a third of the single file, raised until the
# dry run plans three.
limit=$((single / 3))
while :; do
    n=$("$bin/qins-convert" "$work/src" "$work/set/model.qins" --dry-run --json \
        --max-shard-size "$limit" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["plan"]["shards"]))')
    [ "$n" -le 3 ] && break
    limit=$((limit + single / 100))
done
[ "$n" -eq 3 ] || { echo "no limit gives 3 shards (got $n at $limit)" >&2; exit 1; }
timed "convert to 3 shards (max $limit B)" "$bin/qins-convert" "$work/src" \
    "$work/set/model.qins" --quiet --max-shard-size "$limit"
ls -l "$work/one" "$work/set" | grep -v '^total'
rm -rf "$work/src"

timed "inspect --verify (set, from index)" "$bin/qins-inspect" --verify \
    "$work/set/model.qins.index.json"
"$bin/qins-inspect" --json "$work/one/model.qins" >"$work/one.json"
"$bin/qins-inspect" --json "$work/set/model-00002-of-00003.qins" >"$work/set.json"
python3 - "$work/one.json" "$work/set.json" <<'EOF'
import json, sys
one = json.load(open(sys.argv[1]))
s = json.load(open(sys.argv[2]))
def tensor_sections(report):
    return {x["name"]: (x["length"], x["crc"]) for x in report["sections"]
            if x["name"].startswith("tensor ")}
a = tensor_sections(one)
b = {}
for shard in s["shards"]:
    b.update(tensor_sections(shard))
params = lambda ts: {t["name"]: t["params"] for t in ts}
assert a == b, "tensor sections differ"
assert params(one["tensors"]) == params([t for r in s["shards"] for t in r["tensors"]]), "params differ"
print(f"tensor sections: {len(a)} identical (length and CRC-32) in the single file and the set; "
      f"parameters identical; {s['set']['tensors']} tensors in {len(s['shards'])} shards")
EOF

hash_export() { # hash_export NAME INPUT: exports INPUT, prints one digest of every file, deletes
    local dir="$work/exp-$1"
    timed "export ($1)" "$bin/qins-export" "$2" "$dir" --quiet
    (cd "$dir" && find . -type f | sort | xargs sha256sum | sha256sum | cut -d' ' -f1)
    du -sb "$dir" | awk '{printf "  %s bytes exported\n", $1}' >&2
    rm -rf "$dir"
}
h1=$(hash_export one "$work/one/model.qins")
h2=$(hash_export index "$work/set/model.qins.index.json")
h3=$(hash_export shard "$work/set/model-00003-of-00003.qins")
echo "export digests: single $h1, set from index $h2, set from shard 3 $h3"
[ "$h1" = "$h2" ] && [ "$h1" = "$h3" ] || { echo "exports differ" >&2; exit 1; }
echo "OK: the 3-shard set exports to the same bytes as the single file"
rm -rf "$work"

#!/usr/bin/env bash
# Measures the README's performance figures (issue 19's targets) with public tools only
# (hyperfine, /usr/bin/time -v, cargo bench, Python 3 reading /proc), and prints one table.
#
#   tools/bench.sh            # everything: about 25 minutes, ~30 GB free under BENCH_DIR
#   tools/bench.sh --no-8gb   # without the 8 GB checkpoint (memory, open, verify): about 15
#                             # minutes, ~6 GB
#
# Environment:
#   BENCH_DIR  generated checkpoints and outputs (default target/bench-data; the 1 GB inputs
#              are kept between runs, the rest is deleted at the end)
#   RUNS       hyperfine runs per command (default 5)
#   BASE_BIN   a directory holding an older build's qins-convert and qins-export (for example
#              `git worktree add /tmp/base OLD && cargo build --release` there, then
#              BASE_BIN=/tmp/base/target/release): timed beside today's in the same hyperfine
#              runs, and every conversion's output compared with today's (cmp)
#
# Every time is a median measured beside its baseline in the same hyperfine run: a durable
# copy of the source (`cp` then `sync` of the copy) for conversions, memcpy in the same
# benchmark for the kernels. CPU per weight is hyperfine's user + system time over the encoded
# weights. The load average and CPU pressure are printed before each step: the machine may be
# shared, and then wall times and ratios are noise (the per-pass kernels count on-CPU time).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

big=1
for a in "$@"; do
    case "$a" in
    --no-8gb) big=0 ;;
    -h | --help)
        sed -n '2,23p' "$0"
        exit 0
        ;;
    *)
        echo "unknown argument: $a" >&2
        exit 2
        ;;
    esac
done
runs="${RUNS:-5}"
for tool in hyperfine /usr/bin/time python3; do
    command -v "$tool" >/dev/null || {
        echo "needs $tool (apt-get install -y hyperfine time python3)" >&2
        exit 2
    }
done

cargo build --release --quiet --bin qins-synth --bin qins-convert --bin qins-inspect --bin qins-export
bin="${CARGO_TARGET_DIR:-$root/target}/release"
base="${BASE_BIN:-}"
if [ -n "$base" ] && ! [ -x "$base/qins-convert" ]; then
    echo "BASE_BIN=$base holds no qins-convert" >&2
    exit 2
fi
data="${BENCH_DIR:-$root/target/bench-data}"
mkdir -p "$data"
results="$data/results.tsv"
: >"$results"
# row FIGURE VALUE TARGET COMMAND
row() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$results"; }

py() { python3 -c "$@"; }
# The median (seconds) and the mean CPU time (user + system) of command $2 (0-based) of a
# hyperfine JSON export $1.
median() { py 'import json,sys; print("%.3f" % json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]["median"])' "$1" "$2"; }
cputime() { py 'import json,sys; r = json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]; print("%.2f" % (r["user"] + r["system"]))' "$1" "$2"; }
# $1 / $2 with two decimals.
ratio() { py 'import sys; print("%.2f" % (float(sys.argv[1]) / float(sys.argv[2])))' "$1" "$2"; }
# Nanoseconds per weight of $1 seconds over $2 weights.
nspw() { py 'import sys; print("%.2f" % (float(sys.argv[1]) / float(sys.argv[2]) * 1e9))' "$1" "$2"; }
# Weights per second, in millions.
mps() { py 'import sys; print("%.0f M/s" % (float(sys.argv[1]) / float(sys.argv[2]) / 1e6))' "$1" "$2"; }
# Encoded weights of a conversion of directory $1 with flags $2.. (from the dry-run plan).
weights() {
    "$bin/qins-convert" "$1" --dry-run --json "${@:2}" |
        py 'import json,sys; print(json.load(sys.stdin)["summary"]["encoded_weights"])'
}
# The worker threads' busy share of command "$@" on 2 threads (tools/cpu_share.py), in words.
busy() {
    python3 tools/cpu_share.py --workers 2 -- "$@" |
        py 'import json,sys; d = json.load(sys.stdin); s = [x["runnable"] for x in d["slices"] if x]; print("%.0f%% runnable (%.0f%% on a CPU); lowest tenth of the run %.0f%%" % (100 * d["runnable"], 100 * d["busy"], 100 * min(s)))'
}
rss_mib() { awk '/Maximum resident set size/ {printf "%.0f MiB", $6 / 1024}' "$1"; }
# Runs "$@" under `/usr/bin/time -v` (its report in $1.time) and samples the process's resident
# memory every 0.1 s from /proc, to tell private memory (RssAnon) from mapped file pages
# (RssFile); the peaks go to $1.peak as "anon file" KiB.
measure() {
    local log="$1"
    shift
    /usr/bin/time -v "$@" 2>"$log.time" >/dev/null &
    local tp=$! pa=0 pf=0 a f c
    while kill -0 "$tp" 2>/dev/null; do
        c="$(pgrep -P "$tp" | head -n1 || true)"
        if [ -n "$c" ] && read -r a f < <(awk '/RssAnon/ {a = $2} /RssFile/ {f = $2} END {print a + 0, f + 0}' "/proc/$c/status" 2>/dev/null); then
            [ "$a" -gt "$pa" ] && pa="$a"
            [ "$f" -gt "$pf" ] && pf="$f"
        fi
        sleep 0.1
    done
    wait "$tp"
    echo "$pa $pf" >"$log.peak"
}
peaks() { awk '{printf "anon %.0f MiB + mapped files %.0f MiB", $1 / 1024, $2 / 1024}' "$1.peak"; }
elapsed() { awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; printf "%.1f s", s}' "$1"; }

cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
# How much of the time runnable tasks waited for a core (Linux PSI), next to the load average.
load() { echo "$(cut -d' ' -f1-3 /proc/loadavg)$([ -r /proc/pressure/cpu ] && awk '/some/ {sub("avg60=", "", $3); printf ", CPU pressure %s%%", $3}' /proc/pressure/cpu)"; }
echo "== machine: $(nproc) vCPU, $cpu, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM," \
    "$(df -T "$data" | awk 'NR == 2 {print $2}') under $data; load average $(load)"

# --- The inputs: ~1 GB F32 and BF16, and one whose largest tensor is a 168M-weight embedding --
gen() {
    [ -f "$data/$1/model.safetensors" ] || "$bin/qins-synth" "$data/$1" "${@:2}" >/dev/null
}
gen f32-1g --dtype f32 --target-size 1GB
gen bf16-1g --dtype bf16 --target-size 1GB
# 262144 x 640 (a 256k vocabulary): the shape of the embedding of the issue's real 270M model.
gen emb-f32 --dtype f32 --target-size 1GB --vocab-size 262144 --hidden-size 640 --tied

# --- Convert: the default codec against a durable copy of the same bytes, in one run ----------
for input in f32-1g bf16-1g emb-f32; do
    src="$data/$input"
    flags=()
    [ "$input" = emb-f32 ] && flags=(--encode-embeddings)
    cat "$src"/* >/dev/null # page-cached
    out="$data/out-$input.qins"
    cpout="$data/cp-$input.out"
    n="$(weights "$src" "${flags[@]}")"
    f="${flags[*]}"
    echo "== convert $input ($n encoded weights, $(du -sh "$src" | cut -f1)${f:+, $f}); load $(load)"
    cmds=(
        "cp $src/model.safetensors $cpout"
        "cp $src/model.safetensors $cpout && sync $cpout"
        "$bin/qins-convert -q $src $out --threads 2 $f"
        "$bin/qins-convert -q $src $out --threads 1 $f"
        "$bin/qins-convert -q $src $out --threads 2 --no-sync $f"
    )
    [ -n "$base" ] && cmds+=("$base/qins-convert -q $src $out --threads 2 $f")
    j="$data/convert-$input.json"
    hyperfine --runs "$runs" --warmup 1 --style basic --export-json "$j" \
        --prepare "rm -f $out $cpout; sync" "${cmds[@]}"
    cp_s="$(median "$j" 0)"
    dc="$(median "$j" 1)"
    t2="$(median "$j" 2)"
    t1="$(median "$j" 3)"
    tn="$(median "$j" 4)"
    row "$input: cp / durable copy (cp + sync)" "$cp_s s / $dc s" "baseline" "cp SRC X; cp SRC X && sync X"
    row "$input: convert, 2 threads" "$t2 s = $(ratio "$t2" "$dc") x durable copy; $(mps "$n" "$t2"); CPU $(cputime "$j" 2) s = $(nspw "$(cputime "$j" 2)" "$n") ns/weight" "<= 1.2 x durable copy" "qins-convert -q SRC OUT --threads 2 $f"
    row "$input: convert, 1 thread" "$t1 s; CPU $(cputime "$j" 3) s = $(nspw "$(cputime "$j" 3)" "$n") ns/weight; 2 threads $(ratio "$t1" "$t2") x faster" "-" "qins-convert -q SRC OUT --threads 1 $f"
    row "$input: convert, 2 threads, --no-sync" "$tn s = $(ratio "$tn" "$cp_s") x cp; CPU $(cputime "$j" 4) s" "-" "qins-convert -q SRC OUT --threads 2 --no-sync $f"
    if [ -n "$base" ]; then
        tb="$(median "$j" 5)"
        row "$input: BASE_BIN convert, 2 threads" "$tb s = $(ratio "$tb" "$dc") x durable copy; CPU $(cputime "$j" 5) s = $(nspw "$(cputime "$j" 5)" "$n") ns/weight" "-" "BASE_BIN/qins-convert -q SRC OUT --threads 2 $f"
        "$bin/qins-convert" -q --force "$src" "$out" "${flags[@]}"
        "$base/qins-convert" -q --force "$src" "$out.base" "${flags[@]}"
        if cmp "$out" "$out.base"; then
            row "$input: output bytes, today vs BASE_BIN" "identical ($(stat -c %s "$out") bytes, cmp)" "identical" "cmp"
        else
            row "$input: output bytes, today vs BASE_BIN" "DIFFERENT" "identical" "cmp"
        fi
        rm -f "$out.base"
    fi
    # The worker threads' share of the wall time, synced as quoted: the disk's waits are the
    # direct-writing thread's (not a worker), so a worker waits only when every staging buffer
    # is queued for the disk; a serial stretch (one huge tensor's) shows in the run's slices.
    rm -f "$out"
    sync
    share="$(busy "$bin/qins-convert" -q "$src" "$out" --threads 2 "${flags[@]}")"
    row "$input: worker threads busy, 2 threads" "$share" ">= 90%" "tools/cpu_share.py -- qins-convert ..."
    # The same without the syncs: no wait for the disk at all (the page cache's copies count as
    # busy instead).
    rm -f "$out"
    sync
    share="$(busy "$bin/qins-convert" -q "$src" "$out" --threads 2 --no-sync "${flags[@]}")"
    row "$input: worker threads busy, 2 threads, --no-sync" "$share" ">= 90%" "tools/cpu_share.py -- qins-convert ... --no-sync"
    rm -f "$out" "$cpout"
done

# --- The passes on one core: ns per weight (on-CPU time) ---------------------------------------
echo "== cargo bench --bench encode; load $(load)"
cargo bench --quiet -p qins-format --bench encode 2>/dev/null | tee "$data/encode.txt" | sed -n '/^encode passes/,$p'
while read -r dt codec mem rowmax stats fit codes all _; do
    row "passes, $dt $codec, ns/weight" "row maxima $rowmax, statistics $stats, fit $fit, codes $codes; all $all (memcpy $mem)" "-" "cargo bench -p qins-format --bench encode"
done < <(grep -E '^(F32|BF16|F16) +(lloyd-rows|log) ' "$data/encode.txt")
cargo bench --quiet -p qins-write --bench write 2>/dev/null | tee "$data/write.txt"
row "pass: write (checksums, copy into the page cache), ns/weight" "$(awk '/write on-CPU/ {print $3}' "$data/write.txt") on-CPU" "-" "cargo bench -p qins-write --bench write"

# --- Export: decoding on every core -----------------------------------------------------------
q="$data/export-in.qins"
"$bin/qins-convert" -q --force "$data/bf16-1g" "$q"
nq="$(weights "$data/bf16-1g")"
exp="$data/export-out"
echo "== export ($nq decoded weights); load $(load)"
ecmds=(
    "$bin/qins-export -q $q $exp --threads 1 --no-sync"
    "$bin/qins-export -q $q $exp --threads 2 --no-sync"
    "$bin/qins-export -q $q $exp --threads 2"
)
[ -n "$base" ] && ecmds+=("$base/qins-export -q $q $exp")
hyperfine --runs "$runs" --warmup 1 --style basic --export-json "$data/export.json" \
    --prepare "rm -rf $exp; sync" "${ecmds[@]}"
e1="$(median "$data/export.json" 0)"
e2="$(median "$data/export.json" 1)"
es="$(median "$data/export.json" 2)"
row "export BF16 1GB, --no-sync, 1 / 2 threads" "$e1 s / $e2 s: $(ratio "$e1" "$e2") x; $(mps "$nq" "$e2") decoded (CPU $(cputime "$data/export.json" 1) s)" "scales with cores" "qins-export -q IN OUT --threads N --no-sync"
row "export BF16 1GB, 2 threads, synced" "$es s" "-" "qins-export -q IN OUT --threads 2"
[ -n "$base" ] && row "export BF16 1GB, BASE_BIN" "$(median "$data/export.json" 3) s" "-" "BASE_BIN/qins-export -q IN OUT"
rm -rf "$exp" "$q"
echo "== cargo bench --bench decode; load $(load)"
cargo bench --quiet -p qins-export --bench decode 2>/dev/null | tee "$data/decode.txt" | sed -n '/^decode of/,$p'
while read -r cores out _ _ _ _ pw pgb pm pr; do
    row "decode kernel -> $out, $cores core(s)" "$pw Gweight/s, $pgb GB/s = $pr of memcpy ($pm GB/s)" "$([ "$cores" = 1 ] && [ "$out" = f32 ] && echo '>= 50% of memcpy' || echo -)" "cargo bench -p qins-export --bench decode (paired pass)"
done < <(grep -E '^[0-9]+ +(f32|bf16) ' "$data/decode.txt" | tr -d '|')

# --- Open, memory, checksums: an 8 GB BF16 checkpoint in 4 shards -----------------------------
small="$data/small-bf16"
[ -f "$small/model.safetensors" ] || "$bin/qins-synth" "$small" --dtype bf16 --target-size 10MB >/dev/null
"$bin/qins-convert" -q --force "$small" "$data/small.qins" >/dev/null
open_cmds=("$bin/qins-inspect $data/small.qins")
if [ "$big" = 1 ]; then
    hf8="$data/bf16-8g"
    rm -rf "$hf8" "$data/big.qins" "$data/big-export"
    echo "== generating 8 GB BF16 in 4 shards; load $(load)"
    "$bin/qins-synth" "$hf8" --dtype bf16 --shards 4 --target-size 8GB >/dev/null
    echo "== converting it; load $(load)"
    measure "$data/convert-8g" "$bin/qins-convert" -q "$hf8" "$data/big.qins"
    row "convert 8GB BF16 (4 shards): peak RSS" "$(rss_mib "$data/convert-8g.time") in $(elapsed "$data/convert-8g.time") ($(peaks "$data/convert-8g"))" "< 1024 MiB" "/usr/bin/time -v qins-convert -q DIR big.qins"
    echo "== exporting it; load $(load)"
    measure "$data/export-8g" "$bin/qins-export" -q "$data/big.qins" "$data/big-export"
    row "export 8GB BF16: peak RSS" "$(rss_mib "$data/export-8g.time") in $(elapsed "$data/export-8g.time") ($(peaks "$data/export-8g"))" "< 1024 MiB" "/usr/bin/time -v qins-export -q big.qins OUT"
    rm -rf "$data/big-export" "$hf8"
    echo "== verifying it; load $(load)"
    measure "$data/verify-8g" "$bin/qins-inspect" --verify "$data/big.qins"
    row "verify 5GB .qins: peak RSS" "$(rss_mib "$data/verify-8g.time") in $(elapsed "$data/verify-8g.time") ($(peaks "$data/verify-8g"))" "< 256 MiB" "/usr/bin/time -v qins-inspect --verify big.qins"
    open_cmds+=("$bin/qins-inspect $data/big.qins")
    echo "== verify against reading the file; load $(load)"
    hyperfine --runs 3 --warmup 1 --style basic --export-json "$data/verify.json" \
        "cat $data/big.qins" "$bin/qins-inspect --verify $data/big.qins"
    row "read 5GB .qins (cat, page-cached) / verify every CRC" "$(median "$data/verify.json" 0) s / $(median "$data/verify.json" 1) s" "no extra pass" "cat big.qins; qins-inspect --verify big.qins"
fi
echo "== open and list; load $(load)"
hyperfine --runs 30 --warmup 3 -N --style basic --export-json "$data/open.json" "${open_cmds[@]}"
row "open + list $(du -h "$data/small.qins" | cut -f1) .qins" "$(py 'import sys; print("%.1f" % (float(sys.argv[1]) * 1e3))' "$(median "$data/open.json" 0)") ms" "∝ header" "qins-inspect small.qins"
if [ "$big" = 1 ]; then
    row "open + list $(du -h "$data/big.qins" | cut -f1) .qins" "$(py 'import sys; print("%.1f" % (float(sys.argv[1]) * 1e3))' "$(median "$data/open.json" 1)") ms" "∝ header" "qins-inspect big.qins"
    rm -f "$data/big.qins"
fi

echo
echo "== results ($(nproc) vCPU, $cpu; load average at the end $(load))"
{
    printf 'figure\tvalue\ttarget\tcommand\n'
    cat "$results"
} | column -t -s "$(printf '\t')"

#!/usr/bin/env bash
# Reproduces every figure of the README's "Performance" section, with public tools only
# (hyperfine, /usr/bin/time -v, cargo bench), and prints them as one table.
#
#   tools/bench.sh            # everything (about 30 minutes; needs ~25 GB free under BENCH_DIR)
#   tools/bench.sh --no-8gb   # skip the 8 GB checkpoint (memory, 5 GB open, export)
#
# Environment: BENCH_DIR (default target/bench-data: generated checkpoints, kept between runs
# except the 8 GB one, which is deleted at the end), RUNS (hyperfine runs per command, default 5).
#
# Every time is a median, measured beside its baseline in the same hyperfine run (`cp` of the
# same input for conversions; memcpy in the same benchmark for decode), with the load average
# printed before and after: the machine may be shared.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

big=1
for a in "$@"; do
    case "$a" in
    --no-8gb) big=0 ;;
    -h | --help)
        sed -n '2,13p' "$0"
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
data="${BENCH_DIR:-$root/target/bench-data}"
mkdir -p "$data"
results="$data/results.tsv"
: >"$results"
# row METRIC VALUE TARGET COMMAND
row() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$results"; }

# The median of a hyperfine JSON export's command number $2 (0-based), in seconds.
median() {
    python3 -c 'import json,sys; print("%.3f" % json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]["median"])' "$1" "$2"
}
# The mean CPU time (user + system) of command number $2, in seconds: less sensitive than the
# wall time to other jobs taking the cores.
cputime() {
    python3 -c 'import json,sys; r = json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]; print("%.2f" % (r["user"] + r["system"]))' "$1" "$2"
}
# $1 / $2 with two decimals.
ratio() { python3 -c 'import sys; print("%.2f" % (float(sys.argv[1]) / float(sys.argv[2])))' "$1" "$2"; }
# Encoded weights of a conversion of directory $1 (from the dry-run plan).
weights() {
    "$bin/qins-convert" "$1" --dry-run --json "${@:2}" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["encoded_weights"])'
}
# Weights per second, in millions.
mps() { python3 -c 'import sys; print("%.0f M/s" % (float(sys.argv[1]) / float(sys.argv[2]) / 1e6))' "$1" "$2"; }
# Max RSS (KiB) and elapsed seconds of a `/usr/bin/time -v` log.
rss_mib() { awk '/Maximum resident set size/ {printf "%.0f MiB", $6 / 1024}' "$1"; }
# Runs "$@" under `/usr/bin/time -v` (its report in $1.time) and samples the process's resident
# memory every 0.1 s from /proc, to tell private memory (RssAnon) from mapped file pages
# (RssFile, the page cache of the files it maps); the peaks go to $1.peak as "anon file" KiB.
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

# --- Convert: a page-cached 1 GB checkpoint against cp of the same bytes ---------------------
for dt in f32 bf16; do
    src="$data/$dt-1g"
    [ -f "$src/model.safetensors" ] || "$bin/qins-synth" "$src" --dtype "$dt" --target-size 1GB >/dev/null
    cat "$src"/* >/dev/null # page-cached, as the target says
    out="$data/out-$dt.qins"
    cpout="$data/cp-$dt.out"
    n="$(weights "$src")"
    echo "== convert $dt ($n encoded weights, $(du -sh "$src" | cut -f1)); load $(load)"
    cmds=(
        "cp $src/model.safetensors $cpout"
        "cp $src/model.safetensors $cpout && sync $cpout"
        "$bin/qins-convert -q $src $out --threads 2"
        "$bin/qins-convert -q $src $out --threads 1"
        "$bin/qins-convert -q $src $out --threads 2 --codec log"
    )
    # Without the writer's fsync (eatmydata turns fsync into a no-op), to compare with cp.
    command -v eatmydata >/dev/null && cmds+=("eatmydata $bin/qins-convert -q $src $out --threads 2"
        "eatmydata $bin/qins-convert -q $src $out --threads 2 --codec log")
    hyperfine --runs "$runs" --warmup 1 --style basic --export-json "$data/convert-$dt.json" \
        --prepare "rm -f $out $cpout; sync" "${cmds[@]}"
    j="$data/convert-$dt.json"
    cp_s="$(median "$j" 0)"
    cps_s="$(median "$j" 1)"
    t2="$(median "$j" 2)"
    t1="$(median "$j" 3)"
    tl="$(median "$j" 4)"
    tn="$(command -v eatmydata >/dev/null && median "$j" 5 || echo '?')"
    tnl="$(command -v eatmydata >/dev/null && median "$j" 6 || echo '?')"
    row "convert $dt 1GB: cp" "$cp_s s (CPU $(cputime "$j" 0) s)" "-" "cp model.safetensors X"
    row "convert $dt 1GB: cp + fsync" "$cps_s s (CPU $(cputime "$j" 1) s)" "-" "cp model.safetensors X && sync X"
    row "convert $dt 1GB, lloyd-rows, 2 threads" "$t2 s = $(ratio "$t2" "$cp_s") x cp, $(mps "$n" "$t2") (CPU $(cputime "$j" 2) s)" "<= 1.5 x cp" "qins-convert -q DIR OUT --threads 2"
    row "convert $dt 1GB, lloyd-rows, 1 thread" "$t1 s = $(ratio "$t1" "$cp_s") x cp, $(mps "$n" "$t1") (CPU $(cputime "$j" 3) s)" "-" "qins-convert -q DIR OUT --threads 1"
    row "convert $dt 1GB, scaling 1 -> 2 threads" "$(ratio "$t1" "$t2") x" "~2 x" "(the two rows above)"
    row "convert $dt 1GB, log, 2 threads" "$tl s = $(ratio "$tl" "$cp_s") x cp, $(mps "$n" "$tl") (CPU $(cputime "$j" 4) s)" "<= 1.5 x cp" "qins-convert -q DIR OUT --threads 2 --codec log"
    [ "$tn" != '?' ] && row "convert $dt 1GB, lloyd-rows, no fsync" "$tn s = $(ratio "$tn" "$cp_s") x cp (CPU $(cputime "$j" 5) s)" "-" "eatmydata qins-convert -q DIR OUT --threads 2"
    [ "$tnl" != '?' ] && row "convert $dt 1GB, log, no fsync" "$tnl s = $(ratio "$tnl" "$cp_s") x cp (CPU $(cputime "$j" 6) s)" "-" "eatmydata qins-convert -q DIR OUT --threads 2 --codec log"
    row "convert $dt 1GB, lloyd-rows vs cp + fsync" "$(ratio "$t2" "$cps_s") x" "-" "(rows above)"
    rm -f "$out" "$cpout"
done

# --- Open: cost proportional to the header, not the data ------------------------------------
small="$data/small-bf16"
[ -f "$small/model.safetensors" ] || "$bin/qins-synth" "$small" --dtype bf16 --target-size 10MB >/dev/null
"$bin/qins-convert" -q --force "$small" "$data/small.qins" >/dev/null
open_cmds=("$bin/qins-inspect $data/small.qins")
if [ "$big" = 1 ]; then
    # --- Memory: an 8 GB BF16 checkpoint in 4 shards, converted and exported ----------------
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
    # --- Checksums: verifying reads every byte; opening reads none ---------------------------
    echo "== verify against reading the file; load $(load)"
    hyperfine --runs 3 --warmup 1 --style basic --export-json "$data/verify.json" \
        "cat $data/big.qins" "$bin/qins-inspect --verify $data/big.qins"
    row "read 5GB .qins (cat, page-cached)" "$(median "$data/verify.json" 0) s" "-" "cat big.qins > /dev/null"
    row "verify 5GB .qins (every CRC)" "$(median "$data/verify.json" 1) s" "-" "qins-inspect --verify big.qins"
fi
echo "== open and list; load $(load)"
hyperfine --runs 30 --warmup 3 -N --style basic --export-json "$data/open.json" "${open_cmds[@]}"
row "open + list $(du -h "$data/small.qins" | cut -f1) .qins" "$(python3 -c 'import sys; print("%.1f" % (float(sys.argv[1]) * 1e3))' "$(median "$data/open.json" 0)") ms" "∝ header" "qins-inspect small.qins"
if [ "$big" = 1 ]; then
    row "open + list $(du -h "$data/big.qins" | cut -f1) .qins" "$(python3 -c 'import sys; print("%.1f" % (float(sys.argv[1]) * 1e3))' "$(median "$data/open.json" 1)") ms" "∝ header" "qins-inspect big.qins"
    rm -f "$data/big.qins"
fi

# --- Decode and encode kernels (cargo bench, each beside memcpy in the same run) ------------
echo "== cargo bench --bench decode; load $(load)"
cargo bench --quiet -p qins-export --bench decode 2>/dev/null | tee "$data/decode.txt" | sed -n '/^decode of/,$p'
while read -r cores out _ _ _ _ pw pgb pm pr; do
    row "decode -> $out, $cores core(s)" "$pw Gweight/s, $pgb GB/s = $pr of memcpy ($pm GB/s)" "$([ "$cores" = 1 ] && [ "$out" = f32 ] && echo '>= 50% of memcpy' || echo -)" "cargo bench -p qins-export --bench decode (paired pass)"
done < <(grep -E '^[0-9]+ +(f32|bf16) ' "$data/decode.txt" | tr -d '|')
echo "== cargo bench --bench encode; load $(load)"
cargo bench --quiet -p qins-format --bench encode 2>/dev/null | tee "$data/encode.txt"
while read -r dt codec op ms mw ratio; do
    row "encode kernel $dt $codec: $op, 1 core" "$mw M weights/s (${ratio} x memcpy time)" "-" "cargo bench -p qins-format --bench encode"
done < <(grep -E '^(F32|BF16|F16) +[a-z-]+ +(scan|encode|f32 path) ' "$data/encode.txt" | sed 's/f32 path/f32-path/')

echo
echo "== results ($(nproc) vCPU, $cpu; load average at the end $(load))"
{
    printf 'figure\tvalue\ttarget\tcommand\n'
    cat "$results"
} | column -t -s "$(printf '\t')"

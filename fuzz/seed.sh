#!/usr/bin/env bash
# Seeds the corpora of the fuzz targets from the conformance files (conformance/valid and
# conformance/invalid). The corpora are not committed (fuzz/corpus is gitignored): run this
# before fuzzing. The roundtrip target's input is not a .qins file, so it starts from nothing.
set -euo pipefail
cd "$(dirname "$0")"
for target in parse parse_verify parse_decode; do
    mkdir -p "corpus/$target"
    cp ../conformance/valid/*.qins ../conformance/invalid/*.qins "corpus/$target/"
done
mkdir -p corpus/roundtrip
echo "seeded: $(ls corpus/parse | wc -l) files each for parse, parse_verify, parse_decode"

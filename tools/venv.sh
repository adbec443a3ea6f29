#!/usr/bin/env bash
# The project's Python environment: creates .cache/venv if it is missing, installs the pinned
# packages of tools/requirements.txt into it (pip does nothing when they are already there),
# and prints the venv's python path on stdout, so that callers can write
#   py="$(./tools/venv.sh)"
# All other output goes to stderr.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.cache/venv"
req="$root/tools/requirements.txt"

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

#!/usr/bin/env bash
# The whole test suite: everything it needs is installed here.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

# The real model for the end-to-end tests, and numpy for the second (Python) reader.
./tools/fetch-minilm.sh
python3 -c 'import numpy' 2>/dev/null || python3 -m pip install --quiet 'numpy>=1.26,<3'

# Build once; the end-to-end tests run the built binaries.
cargo build --workspace --all-targets --locked
cargo test --workspace --locked

# The Python reader: its own tests, then agreement with the Rust reader on every golden file
# and on a converted MiniLM.
python3 -m unittest discover -s tools -p 'test_*.py'
python3 tools/check_python_reader.py

# The qins Python package: the project's venv (.cache/venv: numpy, pytest, torch, transformers,
# sentence-transformers, pinned in tools/requirements.txt), the package built from this source
# by pip (maturin, an abi3 wheel), then its tests against the golden files, the Rust tools
# built above and the real model.
py="$(./tools/venv.sh)"
"$py" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps ./crates/qins-py
"$py" -m pytest -q crates/qins-py/tests

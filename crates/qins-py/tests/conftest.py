"""Shared fixtures of the `qins` package's tests.

The tests run against the installed package (`pip install ./crates/qins-py`, as
tools/test.sh does) and the Rust tools built by `cargo build --profile test` (target/debug unless
QINS_BIN_DIR says otherwise). The real model is all-MiniLM-L6-v2, fetched by
tools/fetch-minilm.sh: the tests that need it fail, loudly, if it is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

ROOT = Path(__file__).resolve().parents[3]
VALID = ROOT / "conformance" / "valid"
INVALID = ROOT / "conformance" / "invalid"
SETS = ROOT / "conformance" / "sets"
BIN_DIR = Path(os.environ.get("QINS_BIN_DIR", ROOT / "target" / "debug"))
MINILM = Path(os.environ.get("QINS_MINILM_DIR", ROOT / ".cache" / "models" / "all-minilm-l6-v2"))

GOLDENS: List[str] = sorted(p.stem for p in VALID.glob("*.qins"))


def expected(name: str) -> Dict:
    """The expected values of golden `name` (conformance/valid/NAME.expected.json)."""
    return json.loads((VALID / f"{name}.expected.json").read_text())


def tool(name: str) -> str:
    path = BIN_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `cargo build --workspace --bins --profile test` first")
    return str(path)


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def rust_dump(path: Path) -> Dict:
    """The Rust reader's view of a verified file (qins-dump): CRC-32 of every decoded tensor."""
    return json.loads(run(tool("qins-dump"), str(path)))


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    if not (MINILM / "model.safetensors").is_file():
        raise FileNotFoundError(f"{MINILM} has no model.safetensors: run tools/fetch-minilm.sh")
    return MINILM


@pytest.fixture(scope="session")
def minilm_qins(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 converted by qins-convert with the default policy and codec."""
    out = tmp_path_factory.mktemp("minilm") / "minilm.qins"
    run(tool("qins-convert"), str(minilm_dir), str(out), "--quiet")
    return out


@pytest.fixture(scope="session")
def minilm_exported(minilm_qins: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The converted MiniLM exported back to a Hugging Face directory by qins-export."""
    out = tmp_path_factory.mktemp("minilm-export") / "model"
    run(tool("qins-export"), str(minilm_qins), str(out), "--quiet")
    return out


@pytest.fixture(scope="session")
def minilm_set(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 converted as minilm_qins is, but split into a set of 3 shards by
    --max-shard-size: the index's path."""
    out = tmp_path_factory.mktemp("minilm-set") / "minilm.qins"
    run(tool("qins-convert"), str(minilm_dir), str(out), "--quiet", "--max-shard-size", "20MB")
    index = out.parent / "minilm.qins.index.json"
    shards = sorted(p.name for p in out.parent.glob("minilm-*.qins"))
    assert shards == [f"minilm-0000{k}-of-00003.qins" for k in (1, 2, 3)], shards
    return index

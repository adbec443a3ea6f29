#!/usr/bin/env python3
"""Checks that the second reader (tools/qins_reader.py, written from spec/ alone) agrees with
the Rust reader, bit for bit:

1. every valid golden in conformance/valid: `qins_reader.py dump` equals the Rust `qins-dump`
   (names, dtypes, shapes, codecs, parameters, CRC-32 of every decoded tensor and asset,
   metadata);
2. every negative golden in conformance/invalid: rejected with the manifest's error kind, at the
   manifest's stage (open or verify);
3. the real all-MiniLM-L6-v2, converted by the Rust `qins-convert` (default policy and
   --encode-embeddings): the dumps agree.

Run after `cargo build --workspace`; binaries are taken from target/debug unless --bin-dir
says otherwise. Exits non-zero on the first disagreement, printing `N passed, M failed`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import qins_reader  # noqa: E402


def rust_dump(bin_dir: str, path: str) -> dict:
    out = subprocess.run([os.path.join(bin_dir, "qins-dump"), path], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout)


def python_dump(path: str) -> dict:
    with qins_reader.QinsFile(path) as q:
        q.verify()
        return q.dump()


def python_rejection(path: str) -> tuple[str, str] | None:
    """(stage, kind) of the Python reader's rejection, or None if it accepts the file."""
    try:
        q = qins_reader.QinsFile(path)
    except qins_reader.QinsError as e:
        return ("open", e.kind)
    try:
        q.verify()
    except qins_reader.QinsError as e:
        return ("verify", e.kind)
    finally:
        q.close()
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "debug"))
    ap.add_argument("--minilm", default=os.environ.get(
        "QINS_MINILM_DIR", os.path.join(ROOT, ".cache", "models", "all-minilm-l6-v2")))
    args = ap.parse_args()
    passed, failed = 0, []

    def check(name: str, ok: bool, detail: str = "") -> None:
        nonlocal passed
        if ok:
            passed += 1
        else:
            failed.append(f"{name}: {detail}")
            print(f"FAIL {name}: {detail}", file=sys.stderr)

    valid = os.path.join(ROOT, "conformance", "valid")
    for f in sorted(os.listdir(valid)):
        if f.endswith(".qins"):
            p = os.path.join(valid, f)
            r, py = rust_dump(args.bin_dir, p), python_dump(p)
            check(f"valid/{f}", r == py, "dumps differ")

    invalid = os.path.join(ROOT, "conformance", "invalid")
    with open(os.path.join(invalid, "manifest.json")) as fh:
        manifest = json.load(fh)
    for case in manifest["cases"]:
        got = python_rejection(os.path.join(invalid, case["file"]))
        want = (case["stage"], case["kind"])
        check(f"invalid/{case['file']}", got == want, f"expected {want}, got {got}")

    if not os.path.isfile(os.path.join(args.minilm, "model.safetensors")):
        print(f"error: {args.minilm} has no model.safetensors: run tools/fetch-minilm.sh",
              file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        for flags in ([], ["--encode-embeddings"]):
            out = os.path.join(tmp, "minilm.qins")
            subprocess.run([os.path.join(args.bin_dir, "qins-convert"), args.minilm, out,
                            "--quiet", "--force", *flags], check=True)
            check(f"minilm {' '.join(flags) or 'default'}",
                  rust_dump(args.bin_dir, out) == python_dump(out), "dumps differ")

    print(f"python reader: {passed} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Checks that the second reader (tools/qins_reader.py, written from spec/ alone) agrees with
the Rust reader, bit for bit:

1. every valid golden in conformance/valid: `qins_reader.py dump` equals the Rust `qins-dump`
   (names, dtypes, shapes, codecs, parameters, CRC-32 of every decoded tensor and asset,
   metadata);
2. every negative golden in conformance/invalid: rejected with the manifest's error kind, at the
   manifest's stage (open or verify);
3. every valid set in conformance/sets (§21), opened from its index and from each shard: the
   dumps agree (the tensors in the set's order, their values by bits, shard 1's assets and
   metadata, and the index: set id, version, shards with sizes and header CRCs);
4. every invalid set in conformance/sets: both readers reject it with the manifest's kind, at
   its stage, naming its file (the Rust side through `qins-dump --json-errors`);
5. the real all-MiniLM-L6-v2, converted by the Rust `qins-convert` (default policy and
   --encode-embeddings, and the latter again as a set of shards): the dumps agree.

Dumps are compared value by value, floating-point values by their bits (so -0.0 is not 0.0),
and a disagreement names the first differing value: the field and both values, and for a
tensor or asset whose CRC differs, the first differing element (its index and both values),
located by exporting the file with the Rust `qins-export --dtype f32`.

The Rust binaries are built first (`cargo build --workspace --bins --examples --locked`, a no-op
when they are current) and taken from target/debug, unless --bin-dir names a directory to take
them from instead. Exits non-zero on any disagreement, printing `N passed, M failed`.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import qins_reader  # noqa: E402

DTYPE_BITS = {name: bits for _code, (name, bits) in qins_reader.DTYPES.items()}


def build_binaries() -> str:
    """Builds the workspace's binaries with the `test` profile and returns the directory that
    holds them: the command tools/test.sh and the end-to-end tests (tests/support.rs) run, so
    that after `cargo test --workspace` it compiles nothing. `--examples` makes cargo resolve
    features with the dev-dependencies, as `cargo test` does."""
    subprocess.run(["cargo", "build", "--workspace", "--bins", "--examples", "--locked",
                    "--quiet", "--profile", "test"], cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "debug")


def rust_dump(bin_dir: str, path: str) -> dict:
    out = subprocess.run([os.path.join(bin_dir, "qins-dump"), path], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout)


def python_dump(path: str) -> dict:
    """The Python reader's model API (a file, or a set from its index or any shard)."""
    with qins_reader.open_model(path) as m:
        m.verify()
        return m.dump()


def rust_rejection(bin_dir: str, path: str) -> tuple[str, str, str] | None:
    """(stage, kind, file name) of the Rust reader's rejection of the model at `path`, or None
    if it accepts it."""
    r = subprocess.run([os.path.join(bin_dir, "qins-dump"), "--json-errors", path],
                       capture_output=True, text=True)
    if r.returncode == 0:
        return None
    e = json.loads(r.stdout)["error"]
    return (e["stage"], e["kind"], os.path.basename(e["file"]))


def python_model_rejection(path: str) -> tuple[str, str, str] | None:
    """(stage, kind, file name) of the Python reader's rejection of the model at `path`."""
    try:
        m = qins_reader.open_model(path)
    except qins_reader.QinsError as e:
        return ("open", e.kind, os.path.basename(e.file or path))
    try:
        m.verify()
    except qins_reader.QinsError as e:
        return ("verify", e.kind, os.path.basename(e.file or path))
    finally:
        m.close()
    return None


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


# --------------------------------------------------------------------------------------------
# Comparing two dumps.

def f64_bits(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def show(v) -> str:
    if isinstance(v, float):
        return f"{v!r} (0x{f64_bits(v):016x})"
    return json.dumps(v)


def first_difference(rust, python, where: str) -> tuple[str, str] | None:
    """The first place where the two documents differ, as (where, what), or None. Floats are
    equal only when their bits are; object keys are visited in the Python dump's order (name,
    dtype, shape, codec, ..., decoded_crc32), so a tensor's CRC is compared last."""
    if type(rust) is not type(python):
        return where, f"Rust {show(rust)}, Python {show(python)}"
    if isinstance(rust, float):
        if f64_bits(rust) != f64_bits(python):
            return where, f"Rust {show(rust)}, Python {show(python)}"
        return None
    if isinstance(rust, dict):
        for k in list(python) + [k for k in rust if k not in python]:
            at = f"{where}.{k}" if where else k
            if k not in rust:
                return at, "only in the Python dump"
            if k not in python:
                return at, "only in the Rust dump"
            d = first_difference(rust[k], python[k], at)
            if d:
                return d
        return None
    if isinstance(rust, list):
        for i, (r, p) in enumerate(zip(rust, python)):
            at = f"{where}[{i}]"
            if isinstance(r, dict) and isinstance(r.get("name"), str):
                at += f" {r['name']!r}"
            d = first_difference(r, p, at)
            if d:
                return d
        if len(rust) != len(python):
            return where, f"Rust has {len(rust)} entries, Python {len(python)}"
        return None
    if rust != python:
        return where, f"Rust {show(rust)}, Python {show(python)}"
    return None


def read_safetensors(directory: str) -> dict[str, tuple[str, bytes]]:
    """Every tensor of every *.safetensors file in `directory`: name -> (dtype, bytes)."""
    out = {}
    for f in sorted(os.listdir(directory)):
        if not f.endswith(".safetensors"):
            continue
        with open(os.path.join(directory, f), "rb") as fh:
            data = fh.read()
        n = struct.unpack_from("<Q", data)[0]
        header = json.loads(data[8:8 + n])
        for name, info in header.items():
            if name == "__metadata__":
                continue
            a, b = info["data_offsets"]
            out[name] = (info["dtype"], data[8 + n + a: 8 + n + b])
    return out


def first_element_difference(rust: bytes, python: bytes, dtype: str, encoded: bool) -> str:
    """The first element where `rust` and `python` (a tensor's decoded f32 values, or its raw
    bytes) differ: its index and both values."""
    if encoded:
        width, dtype = 4, "F32"
    else:
        bits = DTYPE_BITS.get(dtype, 8)
        width = bits // 8 if bits in (8, 16, 32, 64) else 1
    if len(rust) != len(python):
        return f"Rust has {len(rust)} bytes, Python {len(python)}"
    n = len(rust) // width
    r = np.frombuffer(rust, dtype=f"<u{width}", count=n)
    p = np.frombuffer(python, dtype=f"<u{width}", count=n)
    diff = np.nonzero(r != p)[0]
    if len(diff) == 0:
        return "no element differs (the CRCs differ: a bug in a checksum)"
    i = int(diff[0])
    npd = "<f4" if encoded else qins_reader.NUMPY_DTYPES.get(dtype)

    def value(b: bytes) -> str:
        v = int.from_bytes(b[i * width:(i + 1) * width], "little")
        if npd is None:
            return f"0x{v:0{2 * width}x}"
        x = np.frombuffer(b, dtype=npd, count=1, offset=i * width)[0]
        return f"{x} (0x{v:0{2 * width}x})"

    unit = "value" if encoded or width > 1 else "byte"
    return (f"{unit} {i} of {n} ({len(diff)} differ): Rust {value(rust)}, "
            f"Python {value(python)}")


def locate(bin_dir: str, path: str, where: str, rust: dict) -> str:
    """For a CRC that differs at `where` (`tensors[k] ...decoded_crc32` or `assets[k]
    ...crc32`), the first differing element, from the Rust export of the file and the Python
    reader's own bytes."""
    kind = "tensors" if where.startswith("tensors[") else "assets"
    k = int(where[len(kind) + 1: where.index("]")])
    name = rust[kind][k]["name"]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "export")
        r = subprocess.run([os.path.join(bin_dir, "qins-export"), path, out, "--dtype", "f32",
                            "--quiet"], capture_output=True, text=True)
        if r.returncode != 0:
            return f"cannot locate the first difference: qins-export failed: {r.stderr.strip()}"
        with qins_reader.open_model(path) as q:
            if kind == "tensors":
                t = q.tensor(name)
                exported = read_safetensors(out)
                if name not in exported:
                    return f"cannot locate the first difference: no tensor {name!r} exported"
                return first_element_difference(exported[name][1], q.tensor_payload(t),
                                                t.dtype, t.encoded)
            target = os.path.join(out, name)
            if not os.path.isfile(target):
                return f"cannot locate the first difference: asset {name!r} not exported"
            with open(target, "rb") as fh:
                return first_element_difference(fh.read(), q.asset_bytes(name), "U8", False)


def compare(bin_dir: str, path: str) -> str:
    """'' when the two readers agree on `path`, else the first difference, located."""
    rust, python = rust_dump(bin_dir, path), python_dump(path)
    d = first_difference(rust, python, "")
    if d is None:
        return ""
    where, what = d
    msg = f"{where}: {what}"
    if where.endswith("crc32") and where.startswith(("tensors[", "assets[")):
        msg += f"; first difference: {locate(bin_dir, path, where, rust)}"
    return msg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin-dir", default=None,
                    help="take the Rust binaries from here instead of building them")
    ap.add_argument("--minilm", default=os.environ.get(
        "QINS_MINILM_DIR", os.path.join(ROOT, ".cache", "models", "all-minilm-l6-v2")))
    args = ap.parse_args()
    bin_dir = args.bin_dir or build_binaries()
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
            diff = compare(bin_dir, os.path.join(valid, f))
            check(f"valid/{f}", not diff, diff)

    invalid = os.path.join(ROOT, "conformance", "invalid")
    with open(os.path.join(invalid, "manifest.json")) as fh:
        manifest = json.load(fh)
    for case in manifest["cases"]:
        got = python_rejection(os.path.join(invalid, case["file"]))
        want = (case["stage"], case["kind"])
        check(f"invalid/{case['file']}", got == want, f"expected {want}, got {got}")

    sets = os.path.join(ROOT, "conformance", "sets")
    with open(os.path.join(sets, "manifest.json")) as fh:
        set_manifest = json.load(fh)
    for case in set_manifest["valid"]:
        d = os.path.join(sets, case["dir"])
        for start in [case["index"]] + case["shards"]:
            diff = compare(bin_dir, os.path.join(d, start))
            check(f"sets/{case['dir']} from {start}", not diff, diff)
    for case in set_manifest["invalid"]:
        p = os.path.join(sets, case["dir"], case["open"])
        want = (case["stage"], case["kind"], case["file"])
        got = {"Rust": rust_rejection(bin_dir, p), "Python": python_model_rejection(p)}
        bad = {who: g for who, g in got.items() if g != want}
        check(f"sets/{case['dir']} from {case['open']}", not bad,
              f"expected {want}, got " + ", ".join(f"{w} {g}" for w, g in bad.items()))

    if not os.path.isfile(os.path.join(args.minilm, "model.safetensors")):
        print(f"error: {args.minilm} has no model.safetensors: run tools/fetch-minilm.sh",
              file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        for flags in ([], ["--encode-embeddings"]):
            out = os.path.join(tmp, "minilm.qins")
            subprocess.run([os.path.join(bin_dir, "qins-convert"), args.minilm, out,
                            "--quiet", "--force", *flags], check=True)
            diff = compare(bin_dir, out)
            check(f"minilm {' '.join(flags) or 'default'}", not diff, diff)
        # the same as a set of shards (a limit far below the model's size), from the index
        # and from the last shard
        setdir = os.path.join(tmp, "set")
        os.mkdir(setdir)
        subprocess.run([os.path.join(bin_dir, "qins-convert"), args.minilm,
                        os.path.join(setdir, "minilm.qins"), "--quiet", "--encode-embeddings",
                        "--max-shard-size", "20MB"], check=True)
        with open(os.path.join(setdir, "minilm.qins.index.json"), encoding="utf-8") as fh:
            shards = [e["file"] for e in json.load(fh)["shards"]]
        for start in ("minilm.qins.index.json", shards[-1]):
            diff = compare(bin_dir, os.path.join(setdir, start))
            check(f"minilm as a set of {len(shards)} shards from {start}",
                  not diff and len(shards) > 1, diff or "one shard only")

    print(f"python reader: {passed} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

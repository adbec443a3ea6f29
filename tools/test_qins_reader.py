"""Self-tests for tools/qins_reader.py, written from spec/qins-v1.md alone.

Run with:  python3 -m unittest tools/test_qins_reader.py

The module contains a small spec-following *writer* (``build_qins``): it computes codes and
tables by the ``log`` (§12.1) and ``linear`` (§12.2) rules in float64 with numpy, and for
``lloyd`` (§12.3) and ``lloyd-rows`` (§12.4) as far as a reader's tests need: the exact histogram
of §12.3.1, the exact fit of §12.3.2 when at most 255 bins are non-empty, the scales and row
weights of §12.4 and the codes of §12.3.6; with more than 255 non-empty bins it uses a simple
stand-in table (NOT the Lloyd/Ward fit of §12.3.2-§12.3.5, which readers never need: a file is
defined by its stored bytes), with an honest ``rel_err = D / E``. It lays the file out
canonically (§9.2) with zero padding and all CRCs. ``SetMaker`` writes sharded sets as §21 says
(shards with the ``qins.set.*`` keys, the index in canonical form). The reader is tested on
round trips, on files corrupted in the precise way each §17 error kind describes, on the order
in which §17 and §14 report two faults, on sets opened from their index and from every shard,
on sets damaged in the way each §21.6 kind describes and on the order of §21.5, on the worked
example of spec/example.md, and against the conformance suite in ``conformance/`` (§20.2,
§20.5), which must be present.
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import unittest
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import qins_reader as qr  # noqa: E402

READER = os.path.join(HERE, "qins_reader.py")

# --------------------------------------------------------------------------------------------
# A spec-following writer (test helper)
# --------------------------------------------------------------------------------------------

MAGIC = b"\x89QINS\r\n\x1a"
DTYPE_CODE = {name: code for code, (name, _b) in qr.DTYPES.items()}
DTYPE_BITS = {name: bits for _c, (name, bits) in qr.DTYPES.items()}
CODEC_ID = {"raw": 0, "log": 1, "linear": 2, "lloyd": 3, "lloyd-rows": 4}


def align_up(x, a):
    return (x + a - 1) // a * a


def f32_round(x: float) -> float:
    """Round a Python float (f64) to the nearest f32, ties to even."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def bf16_exact(values) -> np.ndarray:
    """f32 values truncated to bf16 precision (so they are exactly bf16 values)."""
    a = np.asarray(values, dtype=np.float32).copy()
    a.view(np.uint32)[...] &= np.uint32(0xFFFF0000)
    return a


def lloyd_fit(m32: np.ndarray, weights) -> tuple[np.ndarray, float]:
    """§12.3.1-§12.3.2 as far as the tests need: the exact integer histogram, then levels.

    ``m32``: the non-zero magnitudes (f32); ``weights``: their integer weights ω (one per
    magnitude). Returns (LUT f32[256], rel_err). With K <= 255 non-empty bins this is §12.3.2
    exactly. With K > 255 the levels are the bin means at evenly spaced ranks (a stand-in for the
    Lloyd/Ward fit of §12.3.3-§12.3.5), refined by nothing; D and E are computed as §12.3.4 and
    §12.3.2 say, so rel_err is the honest D / E of that table."""
    W: dict[int, int] = {}
    O: dict[int, int] = {}
    for b, w in zip(m32.view(np.uint32).tolist(), weights):
        w = int(w)
        if w == 0:
            continue
        k, o = b >> 14, b & 0x3FFF
        W[k] = W.get(k, 0) + w
        O[k] = O.get(k, 0) + w * o
    ks = sorted(W)
    K = len(ks)
    mu = []
    for k in ks:
        e = max(k >> 9, 1)
        ulp = math.ldexp(1.0, e - 150)
        a = float(np.array([k << 14], dtype=np.uint32).view(np.float32)[0])
        M = (float(W[k]) * a) + (float(O[k]) * ulp)
        mu.append(M / float(W[k]))
    L = [0.0] * 256
    rel_err = 0.0
    if 0 < K <= 255:
        for c in range(1, 256):
            L[c] = mu[min(c, K) - 1]
    elif K > 255:
        for c in range(1, 256):
            L[c] = mu[round((c - 1) * (K - 1) / 254)]
    for c in range(1, 256):  # the monotone step
        L[c] = max(L[c], L[c - 1])
    if K > 255:
        t = [(L[c - 1] + L[c]) / 2 for c in range(1, 256)]
        D = E = 0.0
        for i, k in enumerate(ks):
            cell = sum(1 for tc in t if mu[i] > tc)
            d = mu[i] - L[cell]
            D += float(W[k]) * (d * d)
            E += float(W[k]) * (mu[i] * mu[i])
        rel_err = D / E
    lut = np.zeros(256, dtype=np.float32)
    for c in range(1, 256):
        lut[c] = max(np.float32(L[c]), lut[c - 1])
    return lut, rel_err


def lloyd_rows_weights(scales: np.ndarray) -> np.ndarray:
    """§12.4: ω_r = max(1, round_half_even(2^32 × (q × q))), q = f64(scale[r]) / f64(S)."""
    if scales.size == 0:
        return np.zeros(0, dtype=np.int64)
    S = float(scales.max())
    out = []
    for sc in scales.tolist():
        q = float(sc) / S
        out.append(max(1, round(4294967296.0 * (q * q))))  # round() is half-to-even
    return np.array(out, dtype=np.int64)


def encode_tensor(values, shape, codec, row_scales):
    """§12: compute (codes u8[n], signs packed, lut f32[256], param0, param1, scales f32|None).

    ``values`` must already be f32-exact values of the source dtype."""
    x = np.asarray(values, dtype=np.float32).reshape(-1)
    n = x.size
    if n != math.prod(shape):
        raise ValueError("values do not match shape")
    if not np.all(np.isfinite(x)):
        bad = int(np.flatnonzero(~np.isfinite(x))[0])
        raise ValueError(f"non-finite value at index {bad}")
    rank = len(shape)
    L = shape[-1] if rank else 1
    rows = n // L if L else 0
    scales = None
    if row_scales:
        # §12.4: the row's max |x|; a row of zeros takes S, the largest of the others (1.0 when
        # the whole tensor is zero), so that S is the largest of all scales.
        if rows:
            xr = x.reshape(rows, L)
            scales = np.max(np.abs(xr), axis=1).astype(np.float32)
            top = scales.max()
            scales[scales == 0] = top if top > 0 else np.float32(1.0)
            u = (xr / scales[:, None]).astype(np.float32).reshape(-1)  # f32 division, RNE
        else:
            scales = np.zeros(0, dtype=np.float32)
            u = x
    else:
        u = x
    m32 = np.abs(u).astype(np.float32)
    m = m32.astype(np.float64)  # exact widening
    nz = m != 0
    codes = np.zeros(n, dtype=np.uint8)
    lut = np.zeros(256, dtype=np.float32)
    c = np.arange(1, 256, dtype=np.float64)
    if codec == "log":
        if not nz.any():
            log_min = log_max = 0.0
        else:
            log_min = float(np.log(m[nz].min()))
            log_max = float(np.log(m[nz].max()))
        if nz.any():
            if log_max == log_min:
                codes[nz] = 1
            else:
                xx = 255.0 - 254.0 * (np.log(m[nz]) - log_min) / (log_max - log_min)
                codes[nz] = np.clip(np.rint(xx), 1, 255).astype(np.uint8)
        lut[1:] = np.exp(log_min + ((255.0 - c) / 254.0) * (log_max - log_min)).astype(np.float32)
        p0, p1 = log_min, log_max
    elif codec == "linear":
        max_abs = float(m.max()) if n else 0.0
        if nz.any():
            codes[nz] = np.clip(np.rint(m[nz] / max_abs * 254.0 + 1.0), 1, 255).astype(np.uint8)
        lut[1:] = (((c - 1.0) / 254.0) * max_abs).astype(np.float32)
        p0, p1 = max_abs, 0.0
    elif codec in ("lloyd", "lloyd-rows"):
        # Weights: 1 for lloyd; the row's weight for lloyd-rows (§12.4). A test may build a
        # lloyd tensor with row scales (or lloyd-rows without): writers MUST NOT, but readers
        # do not check the "row scales" column of §12.
        if codec == "lloyd-rows" and row_scales:
            w_rows = lloyd_rows_weights(scales)
            w_elem = np.repeat(w_rows, L) if rows else np.zeros(0, np.int64)
        else:
            w_elem = np.ones(n, dtype=np.int64)
        lut, rel_err = lloyd_fit(m32[nz], w_elem[nz].tolist())
        t = (lut[:-1].astype(np.float64) + lut[1:].astype(np.float64)) / 2  # t[1..255], f64
        if nz.any():
            # §12.3.6: code = #{c : m > t[c]}, the nearest entry, ties to the smaller code
            codes[nz] = np.searchsorted(t, m[nz], side="left").astype(np.uint8)
        if codec == "lloyd-rows" and row_scales:
            max_abs = 1.0 if nz.any() else 0.0
        else:
            max_abs = float(m.max()) if n else 0.0
        p0, p1 = max_abs, rel_err
    else:
        raise ValueError(codec)
    lut[0] = np.float32(0.0)
    sign = np.signbit(u) & (codes != 0)  # sign 0 for code 0 and for -0.0 (§11.2)
    signs = np.packbits(sign, bitorder="little").tobytes() if n else b""
    return codes, signs, lut, p0, p1, scales, sign


def _section(off, data):
    return (off, len(data), zlib.crc32(data) & 0xFFFFFFFF, 0)


class Built:
    """The bytes of a written file plus what the tests need to know about it."""

    def __init__(self):
        self.data = bytearray()
        self.tensors = []  # dicts
        self.assets = []
        self.header_size = 0
        self.lut_offset = 0
        self.alignment = 0


def build_qins(tensors=(), assets=(), metadata=None, *, metadata_bytes=None, alignment=64,
               version_minor=0) -> Built:
    """Write a QINS 1.0 file in the canonical layout.

    tensors: dicts with ``name``, ``dtype``, ``shape`` and either ``raw`` (bytes) or
    ``values`` + ``codec`` ('log'|'linear') [+ ``row_scales``]. Names are not validated, so
    that tests can build invalid files. assets: (name, bytes) pairs."""
    out = Built()
    out.alignment = alignment
    # Per tensor payloads.
    entries = []
    n_enc = 0
    luts = []
    for t in tensors:
        name = t["name"].encode("utf-8") if isinstance(t["name"], str) else t["name"]
        shape = list(t["shape"])
        dtype = t.get("dtype", "F32")
        e = {"name": name, "shape": shape, "dtype": dtype, "spec": t}
        if "raw" in t:
            e.update(codec="raw", flags=0, p0=0.0, p1=0.0, lut_index=0,
                     payloads=[bytes(t["raw"])])
        else:
            codes, signs, lut, p0, p1, scales, sign = encode_tensor(
                t["values"], shape, t["codec"], t.get("row_scales", False))
            flags = 1 if t.get("row_scales", False) else 0
            payloads = [codes.tobytes(), signs]
            if flags:
                payloads.append(scales.astype("<f4").tobytes())
            e.update(codec=t["codec"], flags=flags, p0=p0, p1=p1, lut_index=n_enc,
                     payloads=payloads, codes=codes, lut=lut, sign=sign, scales=scales)
            luts.append(lut)
            n_enc += 1
        entries.append(e)
    # String table: each name once, in record order, tensors first.
    strings = bytearray()
    name_refs = []
    for e in entries:
        name_refs.append((len(strings), len(e["name"])))
        strings += e["name"]
    asset_entries = []
    for aname, adata in assets:
        nb = aname.encode("utf-8") if isinstance(aname, str) else aname
        asset_entries.append((len(strings), len(nb), bytes(adata), aname))
        strings += nb
    # Metadata: keys ascending, no whitespace.
    if metadata_bytes is None:
        if metadata:
            metadata_bytes = json.dumps(dict(sorted(metadata.items())), separators=(",", ":"),
                                        ensure_ascii=False).encode("utf-8")
        else:
            metadata_bytes = b""
    T, A = len(entries), len(asset_entries)
    header_size = 96 + 176 * T + 32 * A + len(strings) + len(metadata_bytes) + 4
    # Canonical layout.
    lut_bytes = b"".join(l.astype("<f4").tobytes() for l in luts)
    placed = []  # (offset, bytes)
    pos = header_size
    off = align_up(pos, alignment)
    lut_sec = _section(off, lut_bytes)
    placed.append((off, lut_bytes))
    pos = off + len(lut_bytes)
    for e in entries:
        secs = []
        for p in e["payloads"]:
            off = align_up(pos, alignment)
            secs.append(_section(off, p))
            placed.append((off, p))
            pos = off + len(p)
        while len(secs) < 3:
            secs.append((0, 0, 0, 0))
        e["sections"] = secs
    asset_secs = []
    for (_no, _nl, adata, _an) in asset_entries:
        off = align_up(pos, alignment)
        asset_secs.append(_section(off, adata))
        placed.append((off, adata))
        pos = off + len(adata)
    file_size = pos
    buf = bytearray(file_size)
    struct.pack_into("<8sHHIQQQIIIIII", buf, 0, MAGIC, 1, version_minor, alignment, 0,
                     file_size, header_size, T, A, n_enc, len(strings), len(metadata_bytes), 0)
    struct.pack_into("<QQII", buf, 64, *lut_sec)
    struct.pack_into("<Q", buf, 88, 0)
    for k, e in enumerate(entries):
        base = 96 + 176 * k
        shape8 = e["shape"] + [0] * (8 - len(e["shape"]))
        struct.pack_into("<IIBBHI8QddII", buf, base, name_refs[k][0], name_refs[k][1],
                         DTYPE_CODE[e["dtype"]], len(e["shape"]), CODEC_ID[e["codec"]],
                         e["flags"], *shape8, e["p0"], e["p1"], e["lut_index"], 0)
        for j, s in enumerate(e["sections"]):
            struct.pack_into("<QQII", buf, base + 104 + 24 * j, *s)
        rec = {"name": e["name"].decode("utf-8", "replace"), "record": base,
               "codec": e["codec"], "shape": e["shape"], "dtype": e["dtype"],
               "sections": e["sections"], "spec": e["spec"]}
        for key in ("codes", "lut", "sign", "scales", "p0", "p1", "flags"):
            if key in e:
                rec[key] = e[key]
        out.tensors.append(rec)
    abase = 96 + 176 * T
    for k, (no, nl, adata, aname) in enumerate(asset_entries):
        struct.pack_into("<II", buf, abase + 32 * k, no, nl)
        struct.pack_into("<QQII", buf, abase + 32 * k + 8, *asset_secs[k])
        out.assets.append({"name": aname, "record": abase + 32 * k, "section": asset_secs[k],
                           "data": adata})
    sbase = abase + 32 * A
    buf[sbase: sbase + len(strings)] = strings
    buf[sbase + len(strings): sbase + len(strings) + len(metadata_bytes)] = metadata_bytes
    struct.pack_into("<I", buf, header_size - 4, zlib.crc32(bytes(buf[: header_size - 4])))
    for off, p in placed:
        buf[off: off + len(p)] = p
    out.data = buf
    out.header_size = header_size
    out.lut_offset = lut_sec[0]
    return out


# --- sets (§21) ------------------------------------------------------------------------------

def canonical_index(index: dict) -> bytes:
    """§21.2 canonical form: what Python's json.dumps(indent=2, sort_keys=True,
    ensure_ascii=False) writes, plus a final newline."""
    return (json.dumps(index, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def canonical_metadata(md: dict) -> bytes:
    """§7 canonical form: no bytes for no keys, else Python's compact sorted json.dumps."""
    if not md:
        return b""
    return json.dumps(md, separators=(",", ":"), ensure_ascii=False,
                      sort_keys=True).encode("utf-8")


def header_crc_of(data) -> int:
    return get(data, get(data, 32, "<Q") - 4, "<I")


class SetMaker:
    """Writes a set as §21.1-§21.4 say a writer does: shards ``NAME-0000k-of-0000n.qins``
    (version_minor 1, the metadata keys of §21.3 beside the model's), assets in shard 1, and
    the index ``NAME.qins.index.json`` in canonical form. ``shards`` is a list of dicts with
    ``tensors`` (as for build_qins) and optionally ``assets``; tests damage the result."""

    def __init__(self, root, shards, *, name="model", set_id="test-set_1.0", metadata=None,
                 alignment=64, subdir="set"):
        self.dir = os.path.join(root, subdir)
        os.makedirs(self.dir, exist_ok=True)
        self.specs = shards
        self.n = len(shards)
        self.name = name
        self.set_id = set_id
        self.metadata = dict(metadata if metadata is not None else {"qins.writer": "test"})
        self.alignment = alignment
        self.files = [f"{name}-{k:05d}-of-{self.n:05d}.qins" for k in range(1, self.n + 1)]
        self.index_name = f"{name}.qins.index.json"
        self.built = [None] * self.n
        self.index = None

    def path(self, k_or_name) -> str:
        if isinstance(k_or_name, int):
            return os.path.join(self.dir, self.files[k_or_name - 1])
        return os.path.join(self.dir, k_or_name)

    @property
    def index_path(self) -> str:
        return os.path.join(self.dir, self.index_name)

    def shard_metadata(self, k: int, **override) -> dict:
        md = dict(self.metadata)
        md.update({"qins.set.id": self.set_id, "qins.set.index_file": self.index_name,
                   "qins.set.shard": str(k), "qins.set.shard_count": str(self.n)})
        for key, v in override.items():
            key = "qins.set." + key
            if v is None:
                md.pop(key, None)
            else:
                md[key] = v
        return md

    def build_shard(self, k: int, *, tensors=None, assets=None, metadata=None,
                    version_minor=1) -> Built:
        spec = self.specs[k - 1]
        return build_qins(spec.get("tensors", ()) if tensors is None else tensors,
                          spec.get("assets", ()) if assets is None else assets,
                          self.shard_metadata(k) if metadata is None else metadata,
                          alignment=self.alignment, version_minor=version_minor)

    def write_shard(self, k: int, data=None, name=None, **kw) -> Built | None:
        b = None
        if data is None:
            b = self.build_shard(k, **kw)
            data = b.data
        with open(self.path(name or k), "wb") as f:
            f.write(bytes(data))
        return b

    def make_index(self) -> dict:
        shards, wm = [], {}
        for k in range(1, self.n + 1):
            b = self.built[k - 1]
            shards.append({"file": self.files[k - 1], "header_crc32":
                           f"{header_crc_of(b.data):08x}", "size": len(b.data)})
            for t in b.tensors:
                wm[t["name"]] = self.files[k - 1]
        return {"metadata": {"format": "qins", "format_version": "1.1", "set_id": self.set_id,
                             "total_size": sum(s["size"] for s in shards)},
                "shards": shards, "weight_map": wm}

    def write_index(self, index=None, *, text=None, name=None) -> None:
        if text is None:
            text = canonical_index(self.index if index is None else index)
        if isinstance(text, str):
            text = text.encode("utf-8")
        with open(os.path.join(self.dir, name or self.index_name), "wb") as f:
            f.write(text)

    def write(self) -> "SetMaker":
        for k in range(1, self.n + 1):
            self.built[k - 1] = self.write_shard(k)
        self.index = self.make_index()
        self.write_index()
        return self

    def shard_bytes(self, k: int) -> bytearray:
        with open(self.path(k), "rb") as f:
            return bytearray(f.read())


def set_fixture(root, **kw) -> SetMaker:
    """Three shards: two tensors and two assets in shard 1, two tensors in shard 2, one in
    shard 3 (every codec family, raw tensors, row scales)."""
    shards = [
        {"tensors": [
            {"name": "embed", "dtype": "F32", "shape": [4, 6], "codec": "log",
             "row_scales": True, "values": rng_values(41, 24)},
            {"name": "norm", "dtype": "BF16", "shape": [6],
             "raw": np.array([0x3F80, 0xC000, 0x3F00, 0, 0x8000, 0x7F80], "<u2").tobytes()}],
         "assets": [("config.json", b'{"layers": 1}'), ("1_Pooling/config.json", b"{}")]},
        {"tensors": [
            {"name": "layer.0.w", "dtype": "F16", "shape": [5, 3], "codec": "linear",
             "values": rng_values(42, 15).astype(np.float16).astype(np.float32)},
            {"name": "layer.0.b", "dtype": "F32", "shape": [5],
             "raw": np.arange(5, dtype="<f4").tobytes()}]},
        {"tensors": [
            {"name": "head", "dtype": "F32", "shape": [3, 7], "codec": "lloyd",
             "values": rng_values(43, 21)}]},
    ]
    return SetMaker(root, shards, **kw).write()


def expected_decode_bytes(rec) -> bytes:
    """§11.4 evaluated element by element in pure Python (independent of the reader)."""
    codes = [int(c) for c in rec["codes"]]
    lut = [float(v) for v in rec["lut"]]
    sign = [bool(s) for s in rec["sign"]]
    shape = rec["shape"]
    L = shape[-1] if shape else 1
    scales = [float(s) for s in rec["scales"]] if rec.get("flags") else None
    out = []
    for i, c in enumerate(codes):
        m = lut[c]
        v = -m if sign[i] else m
        if scales is not None:
            v = f32_round(v * scales[i // L])  # exact product in f64, then one rounding
        out.append(v)
    return struct.pack(f"<{len(out)}f", *out)


# --- patching helpers ------------------------------------------------------------------------

def get(buf, off, fmt):
    return struct.unpack_from(fmt, buf, off)[0]


def fix_header_crc(buf, hs=None):
    """Recompute the header CRC at header_size - 4 (or at the given hs)."""
    if hs is None:
        hs = get(buf, 32, "<Q")
    struct.pack_into("<I", buf, hs - 4, zlib.crc32(bytes(buf[: hs - 4])))


def put(buf, off, fmt, value, fix=True):
    struct.pack_into(fmt, buf, off, value)
    if fix:
        fix_header_crc(buf)


def fix_section_crc(buf, sec_field):
    off, length = struct.unpack_from("<QQ", buf, sec_field)
    struct.pack_into("<I", buf, sec_field + 16, zlib.crc32(bytes(buf[off: off + length])))
    fix_header_crc(buf)


TREC = lambda k: 96 + 176 * k  # noqa: E731


def arec(buf, k):
    return 96 + 176 * get(buf, 40, "<I") + 32 * k


DATA, SIGNS, SCALES = 104, 128, 152


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------

def rng_values(seed, n, scale=1.0, zeros=0.1):
    r = np.random.default_rng(seed)
    v = (r.standard_normal(n) * scale).astype(np.float32)
    v[r.random(n) < zeros] = 0.0
    return v


def base_file() -> Built:
    """A valid file used by the negative tests:
    tensor 0 'enc.log'   F32 [3, 5]  log, ROW_SCALES
    tensor 1 'raw.i32'   I32 [2, 3]  raw
    tensor 2 'enc.lin'   F16 [13]    linear (13 elements: 3 unused sign bits)
    assets 'config.json', 'sub/vocab.txt'; metadata {'qins.writer': 'test'}"""
    return build_qins(
        tensors=[
            {"name": "enc.log", "dtype": "F32", "shape": [3, 5], "codec": "log",
             "row_scales": True, "values": rng_values(1, 15)},
            {"name": "raw.i32", "dtype": "I32", "shape": [2, 3],
             "raw": np.arange(-3, 3, dtype="<i4").tobytes()},
            {"name": "enc.lin", "dtype": "F16", "shape": [13], "codec": "linear",
             "values": rng_values(2, 13).astype(np.float16).astype(np.float32)},
        ],
        assets=[("config.json", b'{"hidden": 384}'), ("sub/vocab.txt", b"a\nb\nc\n")],
        metadata={"qins.writer": "test"},
        alignment=64,
    )


def lloyd_file() -> Built:
    """A valid file with the codecs of §12.3 and §12.4:
    tensor 0 'enc.lloyd'  F32  [4, 6]  lloyd, no row scales (few magnitudes: stored exactly)
    tensor 1 'raw.u8'     U8   [5]     raw
    tensor 2 'enc.rows'   BF16 [3, 8]  lloyd-rows, ROW_SCALES (row 1 all zero: scale S)
    tensor 3 'enc.many'   F32  [8, 40] lloyd (more than 255 non-empty bins: rel_err > 0)"""
    rows = bf16_exact(np.array([[0.5, -1.5, 3.0, 0.0, 0.25, -0.125, 2.0, 1.0],
                                [0.0] * 8,
                                [100.0, -50.0, 25.0, 12.5, -6.25, 0.0, 3.125, -1.5625]]))
    return build_qins(
        tensors=[
            {"name": "enc.lloyd", "dtype": "F32", "shape": [4, 6], "codec": "lloyd",
             "values": np.array([1, -2, 3, 0, 5, -6, 7, 8] * 3, np.float32) / 4},
            {"name": "raw.u8", "dtype": "U8", "shape": [5], "raw": b"\x01\x02\x03\x04\x05"},
            {"name": "enc.rows", "dtype": "BF16", "shape": [3, 8], "codec": "lloyd-rows",
             "row_scales": True, "values": rows},
            {"name": "enc.many", "dtype": "F32", "shape": [8, 40], "codec": "lloyd",
             "values": rng_values(11, 320, scale=2.0)},
        ],
        assets=[("tokenizer.json", b"{}")],
        alignment=64,
    )


class TmpMixin:
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.tmp = self._tmp.name
        self._n = 0

    def tearDown(self):
        self._tmp.cleanup()

    def write(self, data) -> str:
        self._n += 1
        p = os.path.join(self.tmp, f"f{self._n}.qins")
        with open(p, "wb") as f:
            f.write(bytes(data))
        return p

    def open(self, data) -> qr.QinsFile:
        q = qr.QinsFile(self.write(data))
        self.addCleanup(q.close)
        return q


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------

class TestWriterSanity(unittest.TestCase):
    def test_crc_convention(self):
        self.assertEqual(zlib.crc32(b"123456789"), 0xCBF43926)
        self.assertEqual(zlib.crc32(b""), 0)

    def test_linear_codes_by_hand(self):
        codes, signs, lut, p0, p1, _s, _sg = encode_tensor(
            np.array([0.0, 1.0, -0.5, 0.25], np.float32), [4], "linear", False)
        # 0 -> 0; 1 -> 255; 0.5 -> 128; 0.25 -> 64.5 -> 64 (ties to even)
        self.assertEqual(codes.tolist(), [0, 255, 128, 64])
        self.assertEqual(signs, bytes([0b0100]))
        self.assertEqual((p0, p1), (1.0, 0.0))
        self.assertEqual(float(lut[128]), 0.5)
        self.assertEqual(float(lut[1]), 0.0)
        self.assertEqual(float(lut[255]), 1.0)

    def test_log_codes_by_hand(self):
        codes, signs, lut, p0, p1, _s, _sg = encode_tensor(
            np.array([4.0, 1.0, 2.0, -2.0, 0.0, -0.0], np.float32), [6], "log", False)
        self.assertEqual(codes.tolist(), [1, 255, 128, 128, 0, 0])
        self.assertEqual(signs, bytes([0b001000]))  # -0.0 gets sign 0
        self.assertEqual(p0, 0.0)
        self.assertEqual(p1, math.log(4.0))
        self.assertEqual(float(lut[1]), 4.0)
        self.assertEqual(float(lut[255]), 1.0)
        self.assertEqual(float(lut[128]), 2.0)


class TestWriterSanityLloyd(unittest.TestCase):
    def test_lloyd_few_magnitudes_by_hand(self):
        # Four distinct magnitudes, four bins: L = [0, 1, 2, 4, 4, ...] (§12.3.2), codes are the
        # nearest entries (§12.3.6), rel_err 0.
        codes, signs, lut, p0, p1, _s, _sg = encode_tensor(
            np.array([0.0, 1.0, -2.0, 4.0, -4.0, 0.5], np.float32), [6], "lloyd", False)
        self.assertEqual(lut[:6].tolist(), [0.0, 0.5, 1.0, 2.0, 4.0, 4.0])
        self.assertEqual(lut[255], 4.0)
        self.assertEqual(codes.tolist(), [0, 2, 3, 4, 4, 1])
        self.assertEqual(signs, bytes([0b010100]))
        self.assertEqual((p0, p1), (4.0, 0.0))

    def test_lloyd_nearest_entry_ties_to_smaller_code(self):
        # 1.5 is exactly between LUT entries 1 and 2: the threshold is not exceeded
        lut = np.zeros(256, np.float32)
        lut[1:] = 2.0
        lut[1] = 1.0
        t = (lut[:-1].astype(np.float64) + lut[1:].astype(np.float64)) / 2
        self.assertEqual(int(np.searchsorted(t, 1.5, side="left")), 1)
        self.assertEqual(int(np.searchsorted(t, np.nextafter(1.5, 2), side="left")), 2)
        self.assertEqual(int(np.searchsorted(t, 0.5, side="left")), 0)  # <= LUT[1]/2: code 0

    def test_lloyd_rows_scales_and_weights(self):
        # §12.4: scale = the row's max |x| (S for a zero row); ω = max(1, rhe(2^32 q^2)), q = s / S
        w = lloyd_rows_weights(np.array([2.0, 1.0, 2.0 ** -17, 1.0], np.float32))
        self.assertEqual(w.tolist(), [1 << 32, 1 << 30, 1, 1 << 30])
        # rows below about 2^-16.5 of the largest get the least weight, 1, as 2^-16 does
        w = lloyd_rows_weights(np.array([1.0, 2.0 ** -16, 2.0 ** -16.4, 2.0 ** -16.6], np.float32))
        self.assertEqual(w.tolist(), [1 << 32, 1, 1, 1])
        _c, _s, _l, p0, p1, scales, _sg = encode_tensor(
            np.array([[1.0, -3.0], [0.0, 0.0], [0.25, 0.5]], np.float32), [3, 2], "lloyd-rows",
            True)
        self.assertEqual(scales.tolist(), [3.0, 3.0, 0.5])
        self.assertEqual(p0, 1.0)
        _c, _s, _l, p0, _p1, scales, _sg = encode_tensor(
            np.zeros((2, 3), np.float32), [2, 3], "lloyd-rows", True)
        self.assertEqual((scales.tolist(), p0), ([1.0, 1.0], 0.0))
        # The [2, 2] case of the zero-row erratum: a tiny row beside a zero row is still fitted.
        codes, _s, lut, _p0, _p1, scales, _sg = encode_tensor(
            np.array([[0.0, 0.0], [1e-10, -1e-10]], np.float32), [2, 2], "lloyd-rows", True)
        self.assertEqual(scales.tolist(), [np.float32(1e-10)] * 2)
        self.assertEqual(codes.tolist()[2:], [1, 1])
        self.assertEqual(float(lut[1]), 1.0)


class TestRoundTrip(TmpMixin, unittest.TestCase):
    def check_encoded(self, q, b):
        for rec in b.tensors:
            if rec["codec"] == "raw":
                continue
            got = q.decode(rec["name"])
            self.assertEqual(got.dtype, np.float32)
            self.assertEqual(got.shape, tuple(rec["shape"]))
            want = expected_decode_bytes(rec)
            self.assertEqual(got.astype("<f4").tobytes(), want, rec["name"])
            # Sanity: decoded values are close to the inputs.
            x = np.asarray(rec["spec"]["values"], np.float32).reshape(-1).astype(np.float64)
            y = got.reshape(-1).astype(np.float64)
            if x.size and np.any(x != 0):
                if rec["codec"] == "linear":
                    tol = np.abs(x).max() / 254 * 0.51 + 1e-30
                    if rec.get("flags"):
                        tol = 1.0 / 254 * 0.51 * np.abs(x).max() + 1e-30
                    self.assertLessEqual(np.max(np.abs(x - y)), tol * 1.0001 + 1e-6 * tol)
                else:
                    nz = x != 0
                    self.assertTrue(np.all(np.sign(x[nz]) == np.sign(y[nz])))
                    self.assertTrue(np.all(y[~nz] == 0))

    def test_both_codecs_ranks_and_lengths(self):
        shapes = [[], [1], [7], [8], [9], [3, 5], [2, 3, 4], [2, 1, 3, 5], [4, 17], [1, 1, 1, 1]]
        tensors = []
        for i, shape in enumerate(shapes):
            n = math.prod(shape)
            for codec in ("log", "linear"):
                for rs in (False, True):
                    tensors.append({"name": f"t{i}.{codec}.{int(rs)}", "dtype": "F32",
                                    "shape": shape, "codec": codec, "row_scales": rs,
                                    "values": rng_values(100 + i, n, scale=3.0)})
        b = build_qins(tensors, alignment=64)
        q = self.open(b.data)
        q.verify()
        self.assertEqual(len(q.tensors), len(tensors))
        self.assertEqual(q.lut_count, len(tensors))
        for t, spec in zip(q.tensors, tensors):
            self.assertEqual(t.name, spec["name"])
            self.assertEqual(t.codec, spec["codec"])
            self.assertEqual(t.row_scales, spec["row_scales"])
            self.assertEqual(list(t.shape), spec["shape"])
        self.check_encoded(q, b)
        # rank 0 decodes to a 0-d array
        self.assertEqual(q.decode("t0.log.0").shape, ())

    def test_empty_tensors(self):
        tensors = []
        for shape in ([0], [3, 0], [0, 5], [2, 0, 4]):
            for codec in ("log", "linear"):
                for rs in (False, True):
                    tensors.append({"name": f"e{shape}.{codec}.{int(rs)}", "shape": shape,
                                    "codec": codec, "row_scales": rs,
                                    "values": np.zeros(0, np.float32)})
        tensors.append({"name": "raw.empty", "dtype": "F32", "shape": [0, 2], "raw": b""})
        b = build_qins(tensors, assets=[("empty.bin", b"")])
        q = self.open(b.data)
        q.verify()
        for t in q.tensors:
            self.assertEqual(t.numel, 0)
            if t.encoded:
                d = q.decode(t)
                self.assertEqual(d.shape, t.shape)
                self.assertEqual(t.data.length, 0)
                self.assertEqual(t.signs.length, 0)
                if t.row_scales:
                    self.assertEqual(t.scales.length, 0)
        self.assertEqual(q.raw_array("raw.empty").shape, (0, 2))
        self.assertEqual(q.asset_bytes("empty.bin"), b"")

    def test_all_zero_tensors(self):
        tensors = []
        for codec in ("log", "linear"):
            for rs in (False, True):
                tensors.append({"name": f"z.{codec}.{int(rs)}", "shape": [3, 4], "codec": codec,
                                "row_scales": rs,
                                "values": np.array([0.0, -0.0] * 6, np.float32)})
        b = build_qins(tensors)
        q = self.open(b.data)
        q.verify()
        for t in q.tensors:
            d = q.decode(t)
            self.assertTrue(np.all(d.view(np.uint32) == 0), t.name)  # +0.0 everywhere
            self.assertEqual((t.param0, t.param1), (0.0, 0.0))
        self.check_encoded(q, b)

    def test_constant_magnitude_log(self):
        v = np.array([0.5, -0.5, 0.5, 0.0, 0.5], np.float32)
        b = build_qins([{"name": "c", "shape": [5], "codec": "log", "values": v}])
        q = self.open(b.data)
        q.verify()
        self.assertEqual(q.decode("c").tolist(), [0.5, -0.5, 0.5, 0.0, 0.5])
        self.check_encoded(q, b)

    def test_source_dtypes_f16_bf16(self):
        v16 = rng_values(7, 40).astype(np.float16).astype(np.float32)
        vbf = bf16_exact(rng_values(8, 40, scale=100.0))
        b = build_qins([
            {"name": "h", "dtype": "F16", "shape": [5, 8], "codec": "log", "values": v16,
             "row_scales": True},
            {"name": "b", "dtype": "BF16", "shape": [40], "codec": "linear", "values": vbf},
        ])
        q = self.open(b.data)
        q.verify()
        self.assertEqual(q.tensor("h").dtype, "F16")
        self.assertEqual(q.tensor("b").dtype, "BF16")
        self.check_encoded(q, b)

    def test_row_scales_exact_multiply(self):
        # Values spanning many binades in rows with very different scales.
        r = np.random.default_rng(5)
        v = (r.standard_normal((6, 33)) * np.logspace(-30, 30, 6)[:, None]).astype(np.float32)
        b = build_qins([{"name": "w", "shape": [6, 33], "codec": "log", "values": v,
                         "row_scales": True},
                        {"name": "w2", "shape": [6, 33], "codec": "linear", "values": v,
                         "row_scales": True}])
        q = self.open(b.data)
        q.verify()
        self.check_encoded(q, b)
        s = q.row_scale_values("w")
        self.assertEqual(s.tolist(), b.tensors[0]["scales"].tolist())

    def test_subnormal_values(self):
        v = np.array([1e-45, -3e-42, 1e-40, 0.0, 2.5e-39], np.float32)
        b = build_qins([{"name": "s", "shape": [5], "codec": "log", "values": v}])
        q = self.open(b.data)
        q.verify()
        self.check_encoded(q, b)

    def test_raw_dtypes(self):
        r = np.random.default_rng(3)
        arrays = {
            "BOOL": np.array([True, False, True], dtype="?"),
            "U8": r.integers(0, 256, 5).astype("u1"),
            "I8": r.integers(-128, 128, 5).astype("i1"),
            "I16": r.integers(-2**15, 2**15, 6).astype("<i2"),
            "U16": r.integers(0, 2**16, 6).astype("<u2"),
            "I32": r.integers(-2**31, 2**31, 7).astype("<i4"),
            "U32": r.integers(0, 2**32, 7).astype("<u4"),
            "I64": r.integers(-2**63, 2**63 - 1, 3, dtype=np.int64).astype("<i8"),
            "U64": r.integers(0, 2**63, 3, dtype=np.uint64).astype("<u8"),
            "F16": np.array([1.5, -np.inf, np.nan, 6.1e-5], dtype="<f2"),
            "F32": np.array([1.0, np.nan, -0.0, 1e-45], dtype="<f4"),
            "F64": np.array([math.pi, -np.inf], dtype="<f8"),
            "C64": np.array([1 + 2j, -3.5j], dtype="<c8"),
        }
        tensors = [{"name": f"raw.{k}", "dtype": k, "shape": [len(a)], "raw": a.tobytes()}
                   for k, a in arrays.items()]
        bf = np.array([0x3F80, 0xC000, 0x7FC0], dtype="<u2")
        tensors.append({"name": "raw.BF16", "dtype": "BF16", "shape": [3], "raw": bf.tobytes()})
        tensors.append({"name": "raw.F8", "dtype": "F8_E4M3", "shape": [2, 2],
                        "raw": bytes([1, 2, 0x7F, 0xFF])})
        tensors.append({"name": "raw.F4", "dtype": "F4", "shape": [2, 3],
                        "raw": bytes([0x12, 0x34, 0x56])})
        tensors.append({"name": "raw.F6", "dtype": "F6_E2M3", "shape": [4],
                        "raw": bytes([0xAB, 0xCD, 0xEF])})
        tensors.append({"name": "raw.scalar", "dtype": "F64", "shape": [],
                        "raw": struct.pack("<d", 2.5)})
        b = build_qins(tensors)
        q = self.open(b.data)
        q.verify()
        for k, a in arrays.items():
            t = q.tensor(f"raw.{k}")
            self.assertEqual(t.codec, "raw")
            self.assertEqual(t.dtype, k)
            self.assertEqual(q.raw_bytes(t), a.tobytes())
            got = q.raw_array(t)
            self.assertEqual(got.dtype, a.dtype)
            self.assertEqual(got.tobytes(), a.tobytes())
            with self.assertRaises(ValueError):
                q.decode(t)
        self.assertEqual(q.raw_array("raw.BF16").tolist(), bf.tolist())
        self.assertEqual(q.raw_array("raw.F8").shape, (2, 2))
        self.assertIsNone(q.raw_array("raw.F4"))
        self.assertIsNone(q.raw_array("raw.F6"))
        self.assertEqual(q.raw_bytes("raw.F4"), bytes([0x12, 0x34, 0x56]))
        self.assertEqual(float(q.raw_array("raw.scalar")), 2.5)
        self.assertEqual(q.raw_array("raw.scalar").shape, ())

    def test_assets_metadata_listing(self):
        b = base_file()
        q = self.open(b.data)
        q.verify()
        self.assertEqual(q.version, (1, 0))
        self.assertEqual(q.alignment, 64)
        self.assertEqual(q.metadata, {"qins.writer": "test"})
        self.assertEqual([a.name for a in q.assets], ["config.json", "sub/vocab.txt"])
        self.assertEqual(q.asset_bytes("sub/vocab.txt"), b"a\nb\nc\n")
        lst = q.tensor_list()
        self.assertEqual([t["name"] for t in lst], ["enc.log", "raw.i32", "enc.lin"])
        self.assertEqual(lst[0]["sections"], {"data": 15, "signs": 2, "scales": 12})
        self.assertEqual(lst[1]["sections"], {"data": 24})
        self.assertEqual(lst[2]["codec"], "linear")
        self.assertEqual(lst[2]["dtype"], "F16")
        al = q.asset_list()
        self.assertEqual(al[0], {"name": "config.json", "size": 15,
                                 "bytes": b'{"hidden": 384}'})
        self.assertEqual(q.raw_array("raw.i32").tolist(), [[-3, -2, -1], [0, 1, 2]])
        for t in q.tensors:  # decode(check=True) runs the §14 checks of that tensor
            if t.encoded:
                q.decode(t, check=True)

    def test_metadata_variants(self):
        b = build_qins([], metadata_bytes=b' { "b" : "x" , "a":"\\u00e9\\ud83d\\ude00" } ')
        q = self.open(b.data)
        self.assertEqual(q.metadata, {"b": "x", "a": "\u00e9\U0001F600"})
        b = build_qins([], metadata_bytes=b"")
        self.assertEqual(self.open(b.data).metadata, {})
        b = build_qins([], metadata_bytes=b"{}")
        self.assertEqual(self.open(b.data).metadata, {})

    def test_empty_file_and_alignments(self):
        for a in (64, 128, 4096, 1048576):
            b = build_qins([], alignment=a)
            q = self.open(b.data)
            q.verify()
            self.assertEqual(q.file_size, align_up(b.header_size, a))
            self.assertEqual(q.lut_table.offset, align_up(b.header_size, a))

    def test_minor_version_accepted(self):
        b = build_qins([{"name": "x", "shape": [3], "codec": "log",
                         "values": np.array([1, 2, 3], np.float32)}], version_minor=7)
        q = self.open(b.data)
        self.assertEqual(q.version, (1, 7))
        q.verify()

    def test_shared_and_unordered_name_ranges(self):
        # A tensor and an asset may share a name and its bytes (§6: readers accept any
        # in-bounds ranges, including shared ones); tensor and asset names are separate.
        b = build_qins([{"name": "vocab.txt", "dtype": "U8", "shape": [2], "raw": b"ab"}],
                       assets=[("vocab.txt", b"xyz")])
        buf = b.data
        put(buf, arec(buf, 0), "<I", 0)  # asset name -> the tensor's name bytes
        q = self.open(buf)
        self.assertEqual(q.assets[0].name, "vocab.txt")
        self.assertEqual(q.tensors[0].name, "vocab.txt")

    def test_unicode_names(self):
        b = build_qins([{"name": "блок/вес.ü", "dtype": "U8", "shape": [1], "raw": b"\x01"}],
                       assets=[("données/é.txt", b"ok")])
        q = self.open(b.data)
        self.assertEqual(q.tensors[0].name, "блок/вес.ü")
        self.assertEqual(q.assets[0].name, "données/é.txt")

    def test_sign_on_code_zero_decodes_negative_zero(self):
        # Writers MUST NOT do this (§11.2) but the decode rule (§11.4) still defines it.
        b = build_qins([{"name": "x", "shape": [3], "codec": "linear",
                         "values": np.array([0.0, 1.0, 0.0], np.float32)}])
        buf = b.data
        so = b.tensors[0]["sections"][1][0]
        buf[so] = 0b001
        fix_section_crc(buf, TREC(0) + SIGNS)
        q = self.open(buf)
        q.verify()
        d = q.decode("x")
        self.assertEqual(d.view(np.uint32).tolist(), [0x80000000, 0x3F800000, 0])

    def test_hostile_counts_tiny_file(self):
        # A 96-byte file claiming 2^20 tensors: rejected before anything is allocated.
        hs = 96 + 176 * 1048576 + 4
        buf = bytearray(96)
        struct.pack_into("<8sHHIQQQIIIIII", buf, 0, MAGIC, 1, 0, 64, 0, 96, hs, 1048576, 0, 0,
                         0, 0, 0)
        with self.assertRaises(qr.QinsError) as cm:
            self.open(buf)
        self.assertEqual(cm.exception.kind, "Truncated")


# --------------------------------------------------------------------------------------------
# Negative tests: one or more per §17 error kind
# --------------------------------------------------------------------------------------------

TESTED_KINDS = set()


class TestErrors(TmpMixin, unittest.TestCase):
    def assertKind(self, data, kind, *, verify=False, contains=()):
        TESTED_KINDS.add(kind)
        with self.assertRaises(qr.QinsError) as cm:
            q = qr.QinsFile(self.write(data))
            try:
                if verify:
                    q.verify()
            finally:
                q.close()
        e = cm.exception
        self.assertEqual(e.kind, kind, f"expected {kind}, got {e.kind}: {e.message}")
        self.assertIsInstance(e, qr.ERRORS[kind])
        for s in ([contains] if isinstance(contains, str) else contains):
            self.assertIn(s, e.message)
        if verify:  # the file must open cleanly: the error is one of verification's
            qr.QinsFile(self.write(data)).close()
        return e

    def setUp(self):
        super().setUp()
        self.b = base_file()
        self.buf = bytearray(self.b.data)
        # sanity: the base file is valid
        q = qr.QinsFile(self.write(self.buf))
        q.verify()
        q.close()

    # step 1 ---------------------------------------------------------------------------------
    def test_truncated(self):
        self.assertKind(self.buf[:95], "Truncated")
        self.assertKind(b"", "Truncated")
        self.assertKind(self.buf[:-1], "Truncated", contains=str(len(self.buf)))
        # header_size > file_size with consistent counts (step 3)
        buf = bytearray(self.buf)
        extra = len(buf)
        put(buf, 52, "<I", get(buf, 52, "<I") + extra, fix=False)
        put(buf, 32, "<Q", get(buf, 32, "<Q") + extra, fix=False)
        self.assertKind(buf, "Truncated", contains="header_size")
        # a short file is Truncated even when its magic is wrong (step 1 order)
        self.assertKind(b"garbage", "Truncated")

    def test_bad_magic(self):
        for i in range(8):
            buf = bytearray(self.buf)
            buf[i] ^= 0x01
            self.assertKind(buf, "BadMagic")
        buf = bytearray(self.buf)
        buf[0:8] = b"PK\x03\x04\x00\x00\x00\x00"
        self.assertKind(buf, "BadMagic")

    def test_unsupported_version(self):
        buf = bytearray(self.buf)
        put(buf, 8, "<H", 2, fix=False)
        e = self.assertKind(buf, "UnsupportedVersion")
        self.assertIn("2.0", e.message)  # states both versions (§15)
        self.assertIn("1", e.message)
        put(buf, 8, "<H", 0, fix=False)
        self.assertKind(buf, "UnsupportedVersion")

    def test_unsupported_feature(self):
        for bit in (0, 5, 63):
            buf = bytearray(self.buf)
            put(buf, 16, "<Q", 1 << bit, fix=False)
            self.assertKind(buf, "UnsupportedFeature")

    # step 2 ---------------------------------------------------------------------------------
    def test_limit_exceeded(self):
        for off, fmt, val, what in ((40, "<I", 1048577, "tensor_count"),
                                    (44, "<I", 65537, "asset_count"),
                                    (56, "<I", 1048577, "metadata_size"),
                                    (32, "<Q", 268435457, "header_size")):
            buf = bytearray(self.buf)
            put(buf, off, fmt, val, fix=False)
            self.assertKind(buf, "LimitExceeded", contains=what)
        # numel overflowing u64 (step 6); raw tensor 1 gets shape [2^33, 2^32]
        buf = bytearray(self.buf)
        put(buf, TREC(1) + 16, "<Q", 1 << 33, fix=False)
        put(buf, TREC(1) + 24, "<Q", 1 << 32)
        self.assertKind(buf, "LimitExceeded", contains="raw.i32")
        # the limit on counts is checked before the header_size mismatch
        buf = bytearray(self.buf)
        put(buf, 40, "<I", 0xFFFFFFFF, fix=False)
        self.assertKind(buf, "LimitExceeded")

    def test_header_size_mismatch(self):
        for delta in (1, -1, 176):
            buf = bytearray(self.buf)
            put(buf, 32, "<Q", get(buf, 32, "<Q") + delta, fix=False)
            self.assertKind(buf, "HeaderSizeMismatch")
        buf = bytearray(self.buf)
        put(buf, 52, "<I", get(buf, 52, "<I") + 1, fix=False)  # strings_size
        self.assertKind(buf, "HeaderSizeMismatch")

    # step 3 ---------------------------------------------------------------------------------
    def test_trailing_bytes(self):
        self.assertKind(self.buf + b"\0", "TrailingBytes")  # longer than file_size (step 3)
        # file_size (and the file) larger than the end of the last section (step 8)
        buf = bytearray(self.buf) + bytes(64)
        put(buf, 24, "<Q", len(buf))
        self.assertKind(buf, "TrailingBytes", contains="last section")
        # step 3 comes before the header CRC
        buf = bytearray(self.buf) + b"\0"
        buf[self.b.header_size - 1] ^= 0xFF
        self.assertKind(buf, "TrailingBytes")

    # step 4 ---------------------------------------------------------------------------------
    def test_header_checksum(self):
        hs = self.b.header_size
        for off in (60, 100, hs - 10, hs - 4, hs - 1):
            buf = bytearray(self.buf)
            buf[off] ^= 0x40
            self.assertKind(buf, "HeaderChecksum")
        # HeaderChecksum comes before ReservedNonZero (step 4 before 5)
        buf = bytearray(self.buf)
        put(buf, 60, "<I", 1, fix=False)
        self.assertKind(buf, "HeaderChecksum")

    # step 5 ---------------------------------------------------------------------------------
    def test_reserved_nonzero(self):
        cases = [(60, "<I"), (88, "<Q"), (84, "<I"),  # preamble, lut_table.reserved
                 (TREC(0) + 100, "<I"),              # tensor record reserved
                 (TREC(0) + DATA + 20, "<I"),        # section reserved (used)
                 (TREC(1) + SIGNS + 20, "<I"),       # section reserved (unused)
                 (arec(self.buf, 1) + 28, "<I")]     # asset data section reserved
        for off, fmt in cases:
            buf = bytearray(self.buf)
            put(buf, off, fmt, 1)
            self.assertKind(buf, "ReservedNonZero")
        # unknown flag bit (step 6)
        buf = bytearray(self.buf)
        put(buf, TREC(2) + 12, "<I", 2)
        self.assertKind(buf, "ReservedNonZero", contains="enc.lin")
        # reserved fields are checked before alignment (step 5 order)
        buf = bytearray(self.buf)
        put(buf, 60, "<I", 1, fix=False)
        put(buf, 12, "<I", 100)
        self.assertKind(buf, "ReservedNonZero")

    def test_bad_alignment(self):
        for a in (0, 1, 32, 100, 96, 2097152, 1 << 31):
            buf = bytearray(self.buf)
            put(buf, 12, "<I", a)
            self.assertKind(buf, "BadAlignment", contains=str(a))

    # step 6/7: names -------------------------------------------------------------------------
    def test_bad_name(self):
        # empty tensor name
        buf = bytearray(self.buf)
        put(buf, TREC(0) + 4, "<I", 0)
        self.assertKind(buf, "BadName")
        # NUL and invalid UTF-8 in the string table (tensor 0's name starts at offset 0)
        sbase = 96 + 176 * 3 + 32 * 2
        for bad in (b"\x00", b"\xff", b"\xc3"):
            buf = bytearray(self.buf)
            buf[sbase + 3] = bad[0]
            fix_header_crc(buf)
            self.assertKind(buf, "BadName")
        # too long (a 4097-byte name that is in bounds)
        b = build_qins([{"name": "n" * 4097, "dtype": "U8", "shape": [1], "raw": b"\0"}])
        self.assertKind(b.data, "BadName", contains="4097")
        b = build_qins([{"name": "n" * 4096, "dtype": "U8", "shape": [1], "raw": b"\0"}])
        self.open(b.data)  # 4096 is fine
        # unsafe asset paths
        for name in ("/etc/passwd", "a\\b", "a//b", "a/", "./a", "a/../b", "..", ".", "a/.",
                     "a\x00b"):
            b = build_qins([], assets=[(name, b"x")])
            self.assertKind(b.data, "BadName")
        # empty asset name
        b = build_qins([], assets=[("x", b"x")])
        buf = b.data
        put(buf, arec(buf, 0) + 4, "<I", 0)
        self.assertKind(buf, "BadName")
        # tensor names may contain '/', '..', '\' (the path rules are for assets)
        b = build_qins([{"name": "../a\\b//", "dtype": "U8", "shape": [1], "raw": b"\0"}])
        self.open(b.data)

    def test_duplicate_name(self):
        b = build_qins([{"name": "w", "dtype": "U8", "shape": [1], "raw": b"\0"},
                        {"name": "w", "dtype": "U8", "shape": [1], "raw": b"\1"}])
        self.assertKind(b.data, "DuplicateName", contains="'w'")
        b = build_qins([], assets=[("a.txt", b"1"), ("b", b""), ("a.txt", b"2")])
        self.assertKind(b.data, "DuplicateName", contains="a.txt")
        # shared ranges giving equal tensor names
        buf = bytearray(self.buf)
        put(buf, TREC(2), "<I", get(buf, TREC(0), "<I"), fix=False)
        put(buf, TREC(2) + 4, "<I", get(buf, TREC(0) + 4, "<I"))
        self.assertKind(buf, "DuplicateName", contains="enc.log")

    # step 6: the rest -------------------------------------------------------------------------
    def test_unknown_dtype(self):
        for code in (0, 23, 255):
            buf = bytearray(self.buf)
            put(buf, TREC(1) + 8, "<B", code)
            self.assertKind(buf, "UnknownDtype", contains="raw.i32")

    def test_bad_shape(self):
        buf = bytearray(self.buf)
        put(buf, TREC(1) + 9, "<B", 9)
        self.assertKind(buf, "BadShape", contains="rank 9")
        buf = bytearray(self.buf)
        put(buf, TREC(1) + 16 + 8 * 2, "<Q", 1)  # shape[2] with rank 2
        self.assertKind(buf, "BadShape", contains="shape[2]")
        buf = bytearray(self.buf)
        put(buf, TREC(1) + 16 + 8 * 7, "<Q", 5)
        self.assertKind(buf, "BadShape")

    def test_unknown_codec(self):
        for cid in (5, 6, 0x8000, 0xFFFF):  # 3 and 4 are lloyd and lloyd-rows (§12)
            buf = bytearray(self.buf)
            put(buf, TREC(0) + 10, "<H", cid)
            self.assertKind(buf, "UnknownCodec", contains="enc.log")

    def test_bad_dtype_for_codec(self):
        for dt in ("I32", "F64", "BOOL", "F8_E4M3"):
            buf = bytearray(self.buf)
            put(buf, TREC(2) + 8, "<B", DTYPE_CODE[dt])
            self.assertKind(buf, "BadDtypeForCodec", contains="enc.lin")

    def test_flag_mismatch(self):
        buf = bytearray(self.buf)
        put(buf, TREC(1) + 12, "<I", 1)
        self.assertKind(buf, "FlagMismatch", contains="raw.i32")

    def test_bad_params(self):
        cases = [(TREC(0) + 80, float("nan")),   # log_min NaN
                 (TREC(0) + 88, float("inf")),   # log_max inf
                 (TREC(0) + 80, 1e300),          # log_min > log_max
                 (TREC(2) + 80, -1.0),           # linear max_abs < 0
                 (TREC(2) + 88, float("nan")),   # linear param1 not finite
                 (TREC(1) + 80, -0.0),           # raw: must be +0.0 exactly
                 (TREC(1) + 88, 1.0)]
        for off, val in cases:
            buf = bytearray(self.buf)
            put(buf, off, "<d", val)
            self.assertKind(buf, "BadParams")

    def test_bad_lut_index(self):
        buf = bytearray(self.buf)
        put(buf, TREC(0) + 96, "<I", 1)
        self.assertKind(buf, "BadLutIndex", contains="enc.log")
        buf = bytearray(self.buf)
        put(buf, TREC(2) + 96, "<I", 0)
        self.assertKind(buf, "BadLutIndex", contains="enc.lin")
        buf = bytearray(self.buf)
        put(buf, TREC(1) + 96, "<I", 1)  # raw tensor must have lut_index 0
        self.assertKind(buf, "BadLutIndex", contains="raw.i32")
        for delta in (1, -1):  # lut_count (step 8)
            buf = bytearray(self.buf)
            put(buf, 48, "<I", get(buf, 48, "<I") + delta)
            self.assertKind(buf, "BadLutIndex", contains="lut_count")

    def test_section_size(self):
        cases = [(TREC(1) + DATA + 8, "<Q", +1, "raw.i32"),     # raw data length
                 (TREC(0) + DATA + 8, "<Q", -1, "enc.log"),     # codes length
                 (TREC(0) + SIGNS + 8, "<Q", +1, "enc.log"),    # signs length
                 (TREC(0) + SCALES + 8, "<Q", -4, "enc.log"),   # scales length
                 (TREC(1) + SIGNS, "<Q", +64, "raw.i32"),       # unused section: offset
                 (TREC(1) + SCALES + 16, "<I", +1, "raw.i32"),  # unused section: crc
                 (TREC(2) + SCALES + 8, "<Q", +4, "enc.lin"),   # scales without ROW_SCALES
                 (64 + 8, "<Q", +4, "lut table")]               # LUT table length (step 8)
        for off, fmt, delta, who in cases:
            buf = bytearray(self.buf)
            put(buf, off, fmt, get(buf, off, fmt) + delta)
            self.assertKind(buf, "SectionSize", contains=who)
        # sub-byte dtype with numel x bits not a multiple of 8
        b = build_qins([{"name": "f4", "dtype": "F4", "shape": [3], "raw": b"\0\0"}])
        self.assertKind(b.data, "SectionSize", contains="f4")

    # step 8: layout -----------------------------------------------------------------------------
    def test_misaligned(self):
        for off in (TREC(0) + SIGNS, arec(self.buf, 1) + 8, 64):
            buf = bytearray(self.buf)
            put(buf, off, "<Q", get(buf, off, "<Q") + 1)
            self.assertKind(buf, "Misaligned")

    def test_out_of_bounds(self):
        # the last asset's length runs past file_size
        buf = bytearray(self.buf)
        off = arec(buf, 1) + 16
        put(buf, off, "<Q", get(buf, off, "<Q") + 1000)
        self.assertKind(buf, "OutOfBounds", contains="asset sub/vocab.txt")
        # offset + length overflows u64
        buf = bytearray(self.buf)
        put(buf, off, "<Q", (1 << 64) - 1)
        self.assertKind(buf, "OutOfBounds")
        # a name range outside the string table
        buf = bytearray(self.buf)
        ss = get(buf, 52, "<I")
        put(buf, TREC(1), "<I", ss - 2)
        self.assertKind(buf, "OutOfBounds", contains="string table")
        buf = bytearray(self.buf)
        put(buf, arec(buf, 0), "<I", 0xFFFFFFFF)
        self.assertKind(buf, "OutOfBounds")

    def test_overlap(self):
        buf = bytearray(self.buf)
        put(buf, TREC(0) + SIGNS, "<Q", get(buf, TREC(0) + DATA, "<Q"))
        self.assertKind(buf, "Overlap", contains="tensor enc.log signs")
        # a section placed before the header ends
        buf = bytearray(self.buf)
        put(buf, 64, "<Q", 0)
        self.assertKind(buf, "Overlap", contains="lut table")

    def test_gap(self):
        # move the last asset one alignment unit further, keeping the file consistent
        buf = bytearray(self.buf) + bytes(64)
        off = arec(buf, 1) + 8
        put(buf, off, "<Q", get(buf, off, "<Q") + 64, fix=False)
        put(buf, 24, "<Q", len(buf))
        self.assertKind(buf, "Gap", contains="asset sub/vocab.txt")

    # step 9 ---------------------------------------------------------------------------------
    def test_bad_metadata(self):
        for mb in (b'{"a":1}', b"[]", b'"s"', b'{"a":"x","a":"y"}', b"\xff\xfe", b"{",
                   b'{"a":"b"} x', b'{"a":NaN}', b'{"a":null}', b'{"a":{"b":"c"}}',
                   b'{"a":"\\ud800"}', b"\xef\xbb\xbf{}", b"{'a':'b'}", b'{"a":"b",}',
                   b"[" * 100000 + b"]" * 100000, b'{"a":"\x01"}'):
            b = build_qins([], metadata_bytes=mb)
            self.assertKind(b.data, "BadMetadata")

    def test_bad_lut(self):
        lo = self.b.lut_offset
        cases = [(lo + 0, 0x80000000),            # LUT0[0] = -0.0
                 (lo + 0, 0x3F800000),            # LUT0[0] = 1.0
                 (lo + 4 * 5, 0x7FC00000),        # NaN
                 (lo + 4 * 9, 0x7F800000),        # +inf
                 (lo + 1024 + 4 * 7, 0xBF800000),  # LUT1[7] = -1.0
                 (lo + 1024 + 4 * 255, 0x80000000)]  # -0.0 entry
        for off, bits in cases:
            buf = bytearray(self.buf)
            struct.pack_into("<I", buf, off, bits)  # data, not header: no CRC to fix
            self.assertKind(buf, "BadLut")

    # verification ----------------------------------------------------------------------------
    def test_data_checksum(self):
        b = self.b
        cases = [(b.lut_offset + 8, "lut table"),
                 (b.tensors[0]["sections"][0][0], "tensor enc.log data"),
                 (b.tensors[0]["sections"][1][0], "tensor enc.log signs"),
                 (b.tensors[0]["sections"][2][0] + 5, "tensor enc.log scales"),
                 (b.tensors[1]["sections"][0][0] + 3, "tensor raw.i32 data"),
                 (b.assets[0]["section"][0], "asset config.json")]
        for off, label in cases:
            buf = bytearray(self.buf)
            buf[off] ^= 0x01
            self.assertKind(buf, "DataChecksum", verify=True, contains=label)
        # the stored crc field wrong instead of the data
        buf = bytearray(self.buf)
        put(buf, arec(buf, 1) + 24, "<I", 0x12345678)
        self.assertKind(buf, "DataChecksum", verify=True, contains="asset sub/vocab.txt")
        # canonical order: the first damaged section is reported
        buf = bytearray(self.buf)
        buf[b.assets[0]["section"][0]] ^= 1
        buf[b.tensors[2]["sections"][0][0]] ^= 1
        self.assertKind(buf, "DataChecksum", verify=True, contains="tensor enc.lin data")

    def test_non_zero_padding(self):
        b = self.b
        # after enc.log's 15 code bytes; between header and LUT table; after last tensor
        offs = [b.tensors[0]["sections"][0][0] + 15,
                b.header_size + 1 if b.header_size % 64 < 62 else None,
                b.tensors[2]["sections"][1][0] + 2]
        for off in offs:
            if off is None:
                continue
            buf = bytearray(self.buf)
            buf[off] = 0x80
            self.assertKind(buf, "NonZeroPadding", verify=True, contains=str(off))

    def test_stray_sign_bits(self):
        so = self.b.tensors[2]["sections"][1][0]  # enc.lin, 13 elements -> byte 1 uses 5 bits
        for bit in (5, 6, 7):
            buf = bytearray(self.buf)
            buf[so + 1] |= 1 << bit
            fix_section_crc(buf, TREC(2) + SIGNS)
            self.assertKind(buf, "StraySignBits", verify=True, contains="enc.lin")

    def test_bad_scale(self):
        so = self.b.tensors[0]["sections"][2][0]
        for val in (0.0, -0.0, -1.0, float("inf"), float("nan"), -1e-45):
            buf = bytearray(self.buf)
            struct.pack_into("<f", buf, so + 4, val)
            fix_section_crc(buf, TREC(0) + SCALES)
            e = self.assertKind(buf, "BadScale", verify=True, contains="enc.log")
            self.assertIn("row scale 1", e.message)
        # decode(check=True) also refuses it
        q = self.open(buf)
        with self.assertRaises(qr.ERRORS["BadScale"]):
            q.decode("enc.log", check=True)

    def test_zz_every_kind_tested(self):
        # Runs last in this class (alphabetical order); covers every §17 kind.
        for name in dir(self):
            if set(qr.FILE_ERROR_KINDS) <= TESTED_KINDS:
                break  # the class ran in full, alphabetically, before this test
            if name.startswith("test_") and name != "test_zz_every_kind_tested":
                self.setUp()
                try:
                    getattr(self, name)()
                finally:
                    self.tearDown()
        self.assertEqual(set(qr.FILE_ERROR_KINDS) - TESTED_KINDS, set())
        self.assertEqual(len(qr.FILE_ERROR_KINDS), 30)


# --------------------------------------------------------------------------------------------
# The codecs lloyd (§12.3) and lloyd-rows (§12.4)
# --------------------------------------------------------------------------------------------

class TestLloydCodecs(TmpMixin, unittest.TestCase):
    def check_decodes(self, q, b):
        for rec in b.tensors:
            if rec["codec"] == "raw":
                continue
            got = q.decode(rec["name"])
            self.assertEqual(got.dtype, np.float32)
            self.assertEqual(got.shape, tuple(rec["shape"]))
            self.assertEqual(got.astype("<f4").tobytes(), expected_decode_bytes(rec), rec["name"])

    def test_round_trip(self):
        b = lloyd_file()
        q = self.open(b.data)
        q.verify()
        self.check_decodes(q, b)
        t = {t.name: t for t in q.tensors}
        self.assertEqual((t["enc.lloyd"].codec_id, t["enc.lloyd"].codec), (3, "lloyd"))
        self.assertEqual((t["enc.rows"].codec_id, t["enc.rows"].codec), (4, "lloyd-rows"))
        self.assertFalse(t["enc.lloyd"].row_scales)
        self.assertTrue(t["enc.rows"].row_scales)
        self.assertEqual(q.lut_count, 3)
        self.assertEqual([x.lut_index for x in q.tensors if x.encoded], [0, 1, 2])
        # few distinct magnitudes, each in its own bin, are stored exactly (§12.3.2)
        x = np.array([1, -2, 3, 0, 5, -6, 7, 8] * 3, np.float32) / 4
        self.assertEqual(q.decode("enc.lloyd").reshape(-1).tolist(), x.tolist())
        self.assertEqual((t["enc.lloyd"].param0, t["enc.lloyd"].param1), (2.0, 0.0))
        # lloyd-rows: scales are the rows' largest magnitudes, S (the largest) for a zero row (§12.4)
        self.assertEqual(q.row_scale_values("enc.rows").tolist(), [3.0, 100.0, 100.0])
        self.assertEqual(t["enc.rows"].param0, 1.0)
        d = q.decode("enc.rows").astype(np.float64)
        want = b.tensors[2]["spec"]["values"].astype(np.float64)
        np.testing.assert_allclose(d, want, rtol=1e-6, atol=0)
        self.assertTrue(np.all(d[1] == 0))
        # more than 255 non-empty bins: an estimate of the error, not exact
        self.assertGreater(t["enc.many"].param1, 0.0)
        for name in ("enc.lloyd", "enc.rows", "enc.many"):
            lut = q.lut(name)
            self.assertEqual(int(lut.view(np.uint32)[0]), 0)
            self.assertTrue(np.all(np.diff(lut.astype(np.float64)) >= 0), name)
        dump = q.dump()
        self.assertEqual([x["codec"] for x in dump["tensors"]],
                         ["lloyd", "raw", "lloyd-rows", "lloyd"])

    def test_edge_shapes_and_sources(self):
        tensors = []
        for codec in ("lloyd", "lloyd-rows"):
            rs = codec == "lloyd-rows"
            for shape, vals in (([], np.array([-0.75], np.float32)),
                                ([0, 3], np.zeros(0, np.float32)),
                                ([2, 0], np.zeros(0, np.float32)),
                                ([3, 4], np.array([0.0, -0.0] * 6, np.float32)),
                                ([13], rng_values(21, 13)),
                                ([2, 2, 5], rng_values(22, 20, scale=1e-30)),
                                ([1, 9], np.array([3e38, -1e-45, 1e-40, 0, 1, -1, 2, 4, 8],
                                                  np.float32))):
                tensors.append({"name": f"{codec}.{shape}", "shape": shape, "codec": codec,
                                "row_scales": rs, "values": vals})
            tensors.append({"name": f"{codec}.f16", "dtype": "F16", "shape": [4, 5],
                            "codec": codec, "row_scales": rs,
                            "values": rng_values(23, 20).astype(np.float16).astype(np.float32)})
        b = build_qins(tensors)
        q = self.open(b.data)
        q.verify()
        self.check_decodes(q, b)
        self.assertEqual(q.decode("lloyd.[]").shape, ())
        self.assertEqual(float(q.decode("lloyd.[]")), -0.75)
        z = q.decode("lloyd-rows.[3, 4]")
        self.assertTrue(np.all(z.view(np.uint32) == 0))  # -0.0 gets sign 0: +0.0 (§11.2)
        self.assertEqual((q.tensor("lloyd-rows.[3, 4]").param0,
                          q.tensor("lloyd-rows.[3, 4]").param1), (0.0, 0.0))
        self.assertEqual(q.tensor("lloyd-rows.[2, 0]").scales.length, 0)

    def test_row_scales_column_is_not_checked(self):
        # §12: lloyd MUST NOT and lloyd-rows MUST set ROW_SCALES, but "A reader does not check
        # this column: decoding (§11.4) does not depend on it." Both files are valid to read.
        v = rng_values(31, 24)
        b = build_qins([
            {"name": "lloyd.scaled", "shape": [4, 6], "codec": "lloyd", "row_scales": True,
             "values": v},
            {"name": "rows.unscaled", "shape": [4, 6], "codec": "lloyd-rows",
             "row_scales": False, "values": v},
        ])
        q = self.open(b.data)
        q.verify()
        self.assertTrue(q.tensor("lloyd.scaled").row_scales)
        self.assertFalse(q.tensor("rows.unscaled").row_scales)
        self.check_decodes(q, b)

    def test_parameter_constraints(self):
        # §12.3: max_abs >= 0 and rel_err >= 0; §12.4: as lloyd; §4: finite. (BadParams)
        base = lloyd_file().data
        nan, inf = float("nan"), float("inf")
        for rec in (0, 2):
            for off, val in ((80, -1.0), (80, -1e-300), (80, -5e-324), (88, -1.0), (88, -1e-300),
                             (80, nan), (88, nan), (80, inf), (88, inf), (88, -inf)):
                buf = bytearray(base)
                put(buf, TREC(rec) + off, "<d", val)
                with self.subTest(record=rec, field=off, value=val):
                    with self.assertRaises(qr.QinsError) as cm:
                        self.open(buf)
                    self.assertEqual(cm.exception.kind, "BadParams")
            # -0.0 >= 0 in IEEE 754; any rel_err >= 0 and any max_abs >= 0 are accepted
            for off, val in ((80, -0.0), (88, -0.0), (88, 5.0), (80, 0.0), (80, 1e300)):
                buf = bytearray(base)
                put(buf, TREC(rec) + off, "<d", val)
                q = self.open(buf)
                q.verify()
        # a negative NaN payload is still NaN
        buf = bytearray(base)
        put(buf, TREC(0) + 88, "<Q", 0xFFF8000000000001)
        with self.assertRaises(qr.ERRORS["BadParams"]):
            self.open(buf)

    def test_codec_relabelled(self):
        # The parameters are checked against the record's codec id, whatever built the table.
        base = lloyd_file().data
        cases = [(0, 1, "BadParams"),    # lloyd (2.0, 0.0) as log: log_min 2 > log_max 0
                 (0, 2, None),           # as linear: max_abs 2.0, param1 0.0 -> fine
                 (3, 2, "BadParams"),    # enc.many as linear: param1 = rel_err > 0
                 (3, 4, None),           # lloyd as lloyd-rows without ROW_SCALES: fine
                 (2, 3, None)]           # lloyd-rows as lloyd with ROW_SCALES: fine
        for rec, cid, kind in cases:
            buf = bytearray(base)
            put(buf, TREC(rec) + 10, "<H", cid)
            with self.subTest(record=rec, codec=cid):
                if kind is None:
                    self.open(buf).verify()
                else:
                    with self.assertRaises(qr.QinsError) as cm:
                        self.open(buf)
                    self.assertEqual(cm.exception.kind, kind)

    def test_lloyd_rows_scales(self):
        b = lloyd_file()
        so = b.tensors[2]["sections"][2][0]
        for val, kind in ((0.0, "BadScale"), (-3.0, "BadScale"), (float("nan"), "BadScale"),
                          (float("inf"), "BadScale"), (-0.0, "BadScale"),
                          (2.0, None),      # not the row's largest magnitude: still valid
                          (1e-45, None)):   # subnormal, positive: valid
            buf = bytearray(b.data)
            struct.pack_into("<f", buf, so + 4 * 2, val)
            fix_section_crc(buf, TREC(2) + SCALES)
            q = self.open(buf)  # scales are checked by verification, not at open
            with self.subTest(value=val):
                if kind is None:
                    q.verify()
                else:
                    with self.assertRaises(qr.QinsError) as cm:
                        q.verify()
                    self.assertEqual(cm.exception.kind, kind)
                    self.assertIn("row scale 2", cm.exception.message)

    def test_linear_param1_must_be_zero(self):
        # §12.2: max_abs >= 0 and param1 = 0.0 (BadParams); -0.0 == 0.0 in IEEE 754
        b = base_file()
        for val, ok in ((1.0, False), (1e-300, False), (-1.0, False), (5e-324, False),
                        (-0.0, True), (0.0, True)):
            buf = bytearray(b.data)
            put(buf, TREC(2) + 88, "<d", val)
            with self.subTest(param1=val):
                if ok:
                    self.open(buf).verify()
                else:
                    with self.assertRaises(qr.ERRORS["BadParams"]):
                        self.open(buf)
        buf = bytearray(b.data)
        put(buf, TREC(2) + 80, "<d", -0.0)  # max_abs = -0.0 >= 0
        self.open(buf).verify()


# --------------------------------------------------------------------------------------------
# The order of the checks: two faults, the first in the order of §17 (open) and §14 (verify)
# --------------------------------------------------------------------------------------------

class TestCheckOrder(TmpMixin, unittest.TestCase):
    def setUp(self):
        super().setUp()
        self.b = base_file()
        self.buf = bytearray(self.b.data)

    def first(self, buf, kind, *, verify=False, contains=()):
        p = self.write(buf)
        with self.assertRaises(qr.QinsError) as cm:
            q = qr.QinsFile(p)
            try:
                if verify:
                    q.verify()
            finally:
                q.close()
        e = cm.exception
        self.assertEqual(e.kind, kind, e.message)
        for s in ([contains] if isinstance(contains, str) else contains):
            self.assertIn(s, e.message)
        if verify:
            qr.QinsFile(p).close()
        return e

    def edit(self, *edits):
        """Apply (offset, fmt, value) edits, then recompute the header CRC once."""
        buf = bytearray(self.buf)
        for off, fmt, val in edits:
            struct.pack_into(fmt, buf, off, val)
        fix_header_crc(buf)
        return buf

    # step 5 and the record reserved fields -----------------------------------------------
    def test_record_reserved_fields_are_checked_with_their_record(self):
        A = arec(self.buf, 0)
        # step 5 (alignment) comes before any record's reserved field (steps 6, 7)
        self.first(self.edit((TREC(1) + 100, "<I", 1), (12, "<I", 100)), "BadAlignment")
        self.first(self.edit((TREC(0) + DATA + 20, "<I", 1), (12, "<I", 100)), "BadAlignment")
        self.first(self.edit((A + 28, "<I", 1), (12, "<I", 100)), "BadAlignment")
        # but the preamble's and lut_table's are step 5, before alignment
        self.first(self.edit((84, "<I", 1), (12, "<I", 100)), "ReservedNonZero")
        self.first(self.edit((88, "<Q", 1), (12, "<I", 100)), "ReservedNonZero")
        # records in order: tensor 1's reserved field after tensor 0's dtype
        self.first(self.edit((TREC(1) + 100, "<I", 1), (TREC(0) + 8, "<B", 0)), "UnknownDtype")
        # tensor 0's section reserved field before tensor 1's name
        self.first(self.edit((TREC(0) + SIGNS + 20, "<I", 1), (TREC(1) + 4, "<I", 0)),
                   "ReservedNonZero", contains="enc.log")
        # an asset's reserved field after every tensor check
        self.first(self.edit((A + 28, "<I", 1), (TREC(2) + 8, "<B", 0)), "UnknownDtype")

    def test_tensor_record_order(self):
        nan = struct.unpack("<Q", struct.pack("<d", float("nan")))[0]
        cases = [
            # (edits, kind): the first kind of §17 step 6 wins
            ([(TREC(1) + 8, "<B", 0), (TREC(1) + 9, "<B", 9)], "UnknownDtype"),
            ([(TREC(1) + 9, "<B", 9), (TREC(1) + 16, "<Q", 1 << 63)], "BadShape"),
            ([(TREC(1) + 16, "<Q", 1 << 63), (TREC(1) + 24, "<Q", 4), (TREC(1) + 10, "<H", 99)],
             "LimitExceeded"),
            ([(TREC(0) + 10, "<H", 99), (TREC(0) + 8, "<B", 13)], "UnknownCodec"),
            ([(TREC(0) + 8, "<B", 13), (TREC(0) + 12, "<I", 3)], "BadDtypeForCodec"),
            ([(TREC(0) + 12, "<I", 3), (TREC(0) + 100, "<I", 1)], "ReservedNonZero"),
            ([(TREC(0) + 100, "<I", 1), (TREC(0) + 80, "<Q", nan)], "ReservedNonZero"),
            ([(TREC(1) + SCALES + 20, "<I", 1), (TREC(1) + 12, "<I", 1)], "ReservedNonZero"),
            ([(TREC(1) + 12, "<I", 1), (TREC(1) + 80, "<d", -0.0)], "FlagMismatch"),
            ([(TREC(1) + 80, "<d", 1.0), (TREC(1) + 96, "<I", 1)], "BadParams"),
            ([(TREC(1) + 96, "<I", 1), (TREC(1) + DATA + 8, "<Q", 1)], "BadLutIndex"),
            ([(TREC(0) + 80, "<Q", nan), (TREC(0) + 96, "<I", 5)], "BadParams"),
            # lut_index before the byte sizes; the byte sizes before the section lengths
            ([(TREC(0) + 96, "<I", 5), (TREC(0) + 16, "<Q", 1 << 62), (TREC(0) + 24, "<Q", 1)],
             "BadLutIndex"),
            ([(TREC(0) + 16, "<Q", 1 << 62), (TREC(0) + 24, "<Q", 1),
              (TREC(0) + DATA + 8, "<Q", 3)], "LimitExceeded"),
            ([(TREC(1) + 16, "<Q", 1 << 62), (TREC(1) + 24, "<Q", 1)], "LimitExceeded"),
            # then data, signs, scales in that order (all SectionSize; the message names which)
            ([(TREC(0) + SIGNS + 8, "<Q", 1), (TREC(0) + SCALES + 8, "<Q", 4)], "SectionSize"),
        ]
        for edits, kind in cases:
            with self.subTest(edits=edits):
                self.first(self.edit(*edits), kind)
        e = self.first(self.edit((TREC(0) + SIGNS + 8, "<Q", 1), (TREC(0) + SCALES + 8, "<Q", 4)),
                       "SectionSize")
        self.assertIn("signs", e.message)
        e = self.first(self.edit((TREC(2) + DATA + 8, "<Q", 1), (TREC(2) + SCALES, "<Q", 64)),
                       "SectionSize")
        self.assertIn("data", e.message)
        e = self.first(self.edit((TREC(2) + SCALES, "<Q", 64)), "SectionSize")
        self.assertIn("unused scales", e.message)

    def test_byte_size_arithmetic(self):
        M = (1 << 64) - 1
        # raw: numel x bits(dtype) in u64 (§4: data.length = numel x bits / 8): 2^61 U8
        # elements are 2^64 bits, an overflow, even though 2^61 bytes would fit
        b = build_qins([{"name": "u8", "dtype": "U8", "shape": [4], "raw": b"abcd"},
                        {"name": "f4", "dtype": "F4", "shape": [4], "raw": b"ab"},
                        {"name": "h", "dtype": "F16", "shape": [9], "codec": "log",
                         "values": rng_values(3, 9)}])
        for rec, shape, kind in ((0, 1 << 61, "LimitExceeded"), (0, (1 << 61) - 1, "SectionSize"),
                                 (1, 1 << 62, "LimitExceeded"), (1, (1 << 62) - 1, "SectionSize"),
                                 (2, M, "SectionSize"), (2, M - 7, "SectionSize")):
            buf = bytearray(b.data)
            put(buf, TREC(rec) + 16, "<Q", shape)
            with self.subTest(record=rec, numel=shape):
                e = self.first(buf, kind)
                if rec == 1 and kind == "SectionSize":
                    self.assertIn("whole number of bytes", e.message)
                if rec == 2:  # ceil(numel / 8) never overflows: the codes' length is wrong
                    self.assertIn("data length", e.message)

    def test_names_and_assets(self):
        ss = get(self.buf, 52, "<I")
        A0, A1 = arec(self.buf, 0), arec(self.buf, 1)
        self.first(self.edit((TREC(1), "<I", ss + 1), (TREC(1) + 4, "<I", 0)), "OutOfBounds")
        self.first(self.edit((TREC(1), "<I", ss), (TREC(1) + 4, "<I", 0)), "BadName")
        self.first(self.edit((TREC(1) + 4, "<I", 5000)), "OutOfBounds")
        # asset: name range, name, uniqueness, then data.reserved
        self.first(self.edit((A1, "<I", get(self.buf, A0, "<I")),
                             (A1 + 4, "<I", get(self.buf, A0 + 4, "<I")), (A1 + 28, "<I", 1)),
                   "DuplicateName")
        self.first(self.edit((A1 + 4, "<I", 0), (A1 + 28, "<I", 1)), "BadName")
        self.first(self.edit((A0 + 28, "<I", 1), (A1 + 4, "<I", 0)), "ReservedNonZero")

    def test_numel_left_to_right(self):
        big = 1 << 40
        b = build_qins([{"name": "e", "dtype": "U8", "shape": [0, big, big], "raw": b""}])
        self.open(b.data).verify()  # 0 x 2^40 x 2^40 = 0, no overflow on the way
        buf = bytearray(b.data)
        put(buf, TREC(0) + 16, "<Q", big, fix=False)
        put(buf, TREC(0) + 32, "<Q", 0)
        self.first(buf, "LimitExceeded")  # 2^40 x 2^40 overflows before the 0

    def test_steps_8_and_9(self):
        lo = self.b.lut_offset
        hs = self.b.header_size
        ms = get(self.buf, 56, "<I")
        # lut_count before the LUT table's length
        self.first(self.edit((48, "<I", 3), (72, "<Q", 4096)), "BadLutIndex")
        # layout (step 8) before metadata (step 9); metadata before LUT values
        buf = self.edit((hs - 4 - ms, "<B", ord("[")), (TREC(1) + DATA, "<Q",
                                                        get(self.buf, TREC(1) + DATA, "<Q") + 4))
        self.first(buf, "Misaligned")
        buf = self.edit((hs - 4 - ms, "<B", ord("[")))
        struct.pack_into("<I", buf, lo + 4 * 3, 0xBF800000)
        self.first(buf, "BadMetadata")
        buf = bytearray(self.buf) + bytes(64)
        put(buf, 24, "<Q", len(buf), fix=False)
        buf[hs - 4 - ms] = ord("[")
        fix_header_crc(buf)
        self.first(buf, "TrailingBytes")

    # verification (§14, order at the end of §17) -----------------------------------------------
    def test_verification_order(self):
        b = self.b
        hs = b.header_size
        t0, t1, t2 = b.tensors
        # the padding before the LUT table comes before every CRC
        buf = bytearray(self.buf)
        buf[hs] = 1
        buf[b.assets[1]["section"][0]] ^= 1
        self.first(buf, "NonZeroPadding", verify=True, contains=str(hs))
        # a section's CRC comes before the padding before the next section
        buf = bytearray(self.buf)
        buf[t0["sections"][0][0]] ^= 1
        buf[t0["sections"][0][0] + 15] = 1  # padding after enc.log's 15 codes
        self.first(buf, "DataChecksum", verify=True, contains="tensor enc.log data")
        # a section's padding comes before its CRC
        buf = bytearray(self.buf)
        buf[t0["sections"][0][0] + 15] = 1
        buf[t0["sections"][1][0]] ^= 1
        self.first(buf, "NonZeroPadding", verify=True)
        # CRCs before sign bits
        buf = bytearray(self.buf)
        buf[t2["sections"][1][0] + 1] |= 0x80
        self.first(buf, "DataChecksum", verify=True, contains="tensor enc.lin signs")
        # tensors in record order: enc.log's scale before enc.lin's sign bits
        buf = bytearray(self.buf)
        struct.pack_into("<f", buf, t0["sections"][2][0], 0.0)
        fix_section_crc(buf, TREC(0) + SCALES)
        buf[t2["sections"][1][0] + 1] |= 0x80
        fix_section_crc(buf, TREC(2) + SIGNS)
        self.first(buf, "BadScale", verify=True, contains="enc.log")
        # within a tensor: sign bits before scales (enc.log: 15 elements, bit 7 unused)
        buf = bytearray(self.buf)
        struct.pack_into("<f", buf, t0["sections"][2][0], 0.0)
        fix_section_crc(buf, TREC(0) + SCALES)
        buf[t0["sections"][1][0] + 1] |= 0x80
        fix_section_crc(buf, TREC(0) + SIGNS)
        self.first(buf, "StraySignBits", verify=True, contains="enc.log")
        # scales in row order
        buf = bytearray(self.buf)
        struct.pack_into("<f", buf, t0["sections"][2][0] + 4, float("nan"))
        struct.pack_into("<f", buf, t0["sections"][2][0] + 8, -1.0)
        fix_section_crc(buf, TREC(0) + SCALES)
        self.first(buf, "BadScale", verify=True, contains="row scale 1")


# --------------------------------------------------------------------------------------------
# Rules 1.1 states or clarifies for a single file
# --------------------------------------------------------------------------------------------

SPEC = os.path.join(os.path.dirname(HERE), "spec")


def xxd_reverse(text: str) -> bytes:
    """``xxd -r`` of a dump in xxd's format, where a ``*`` line repeats the line before it up
    to the next line's offset (spec/example.md, "The whole file")."""
    out = bytearray()
    prev = None
    pending_star = False
    for line in text.splitlines():
        if line.strip() == "*":
            pending_star = True
            continue
        off_s, rest = line.split(":", 1)
        off = int(off_s, 16)
        hexpart = rest[1:40].replace(" ", "")
        data = bytes.fromhex(hexpart)
        if pending_star:
            while len(out) < off:
                out += prev
            pending_star = False
        if len(out) != off:
            raise ValueError(f"offset {off:#x} after {len(out):#x} bytes")
        out += data
        prev = data
    return bytes(out)


class TestSpec11(TmpMixin, unittest.TestCase):
    def test_worked_example(self):
        # §19 / spec/example.md: the whole file in hex, with what it holds
        with open(os.path.join(SPEC, "example.md"), encoding="utf-8") as f:
            md = f.read()
        part = md.split("## The whole file", 1)[1]
        dump = part.split("```text\n", 1)[1].split("```", 1)[0]
        data = xxd_reverse(dump)
        self.assertEqual(len(data), 1799)
        q = self.open(data)
        q.verify()
        self.assertEqual((q.version, q.alignment, q.header_size), ((1, 0), 64, 542))
        self.assertEqual([(t.name, t.dtype, t.shape, t.codec) for t in q.tensors],
                         [("proj.weight", "F32", (2, 3), "log"),
                          ("norm.weight", "BF16", (3,), "raw")])
        self.assertEqual(q.tensors[0].param0, math.log(0.03125))
        self.assertEqual(q.tensors[0].param1, 0.0)
        # the table of "How proj.weight was encoded": codes, signs and decoded values
        self.assertEqual(q.codes("proj.weight").tolist(), [52, 103, 0, 153, 1, 255])
        self.assertEqual(q.sign_bits("proj.weight").tolist(),
                         [False, True, False, False, True, False])
        want = np.array(["0.4986374", "-0.24863926", "0", "0.1256841", "-1", "0.03125"],
                        dtype=np.float32)
        self.assertEqual(q.decode("proj.weight").reshape(-1).tolist(), want.tolist())
        self.assertEqual(q.raw_values("norm.weight").tolist(), [1.0, 0.5, -2.0])
        self.assertEqual(q.metadata, {"qins.writer": "example"})
        self.assertEqual([(a.name, q.asset_bytes(a)) for a in q.assets],
                         [("config.json", b'{"a":1}')])
        # the section map's CRCs
        self.assertEqual(q.header_crc, 0x8CE4C67B)
        self.assertEqual([s.crc for _l, s in q.used_sections()],
                         [0xE51D80AD, 0xC3E012F6, 0x21BB9EC5, 0x3850FA31, 0x561BACAF])

    def test_sign_bit_on_code_zero(self):
        # §11.2: not checked; decodes to -LUT[0] = -0.0, times its row scale still -0.0
        b = build_qins([{"name": "r", "shape": [2, 3], "codec": "log", "row_scales": True,
                         "values": np.array([0.0, 1.0, -2.0, 0.0, 0.0, 4.0], np.float32)},
                        {"name": "l", "shape": [9], "codec": "lloyd",
                         "values": np.array([0, 1, 0, 2, 0, 3, 0, 4, 0], np.float32)}])
        buf = b.data
        so = b.tensors[0]["sections"][1][0]
        buf[so] |= 0b011001                               # elements 0, 3, 4 have code 0
        fix_section_crc(buf, TREC(0) + SIGNS)
        so = b.tensors[1]["sections"][1][0]
        buf[so] |= 0b01010101                             # elements 0, 2, 4, 6 have code 0
        buf[so + 1] |= 0b1                                # element 8: code 0, last sign byte
        fix_section_crc(buf, TREC(1) + SIGNS)
        q = self.open(buf)
        q.verify()
        r = q.decode("r").reshape(-1).view(np.uint32).tolist()
        self.assertEqual([r[i] for i in (0, 3, 4)], [0x80000000] * 3)
        self.assertEqual(q.decode("r").reshape(-1)[[1, 2, 5]].tolist(), [1.0, -2.0, 4.0])
        d = q.decode("l").view(np.uint32).tolist()
        self.assertEqual([d[i] for i in (0, 2, 4, 6, 8)], [0x80000000] * 5)

    def test_writer_only_rules_are_not_checked(self):
        # §18.1: a file that breaks a writer-only rule is valid and decodes by §11.4
        b = build_qins([{"name": "rows", "shape": [2, 4], "codec": "lloyd-rows",
                         "row_scales": True,
                         "values": np.array([1, -2, 3, 4, 0.5, 0.25, 0, -1], np.float32)},
                        {"name": "lut", "shape": [4], "codec": "log",
                         "values": np.array([1, 2, 3, 4], np.float32)}])
        buf = b.data
        put(buf, TREC(0) + 80, "<d", 2.0)                 # lloyd-rows max_abs 2.0 (not 1.0)
        sc = b.tensors[0]["sections"][2][0]
        struct.pack_into("<f", buf, sc, 3.0)              # a scale that is not the row's max
        fix_section_crc(buf, TREC(0) + SCALES)
        lo = b.lut_offset + 1024                          # table 1: a decreasing entry
        struct.pack_into("<f", buf, lo + 4 * 200, 1e30)
        fix_section_crc(buf, 64)
        q = self.open(buf)
        q.verify()
        self.assertEqual(q.tensor("rows").param0, 2.0)
        self.assertEqual(float(q.lut("lut")[200]), np.float32(1e30))
        rec = dict(b.tensors[0], scales=np.array([3.0, b.tensors[0]["scales"][1]], np.float32))
        self.assertEqual(q.decode("rows").astype("<f4").tobytes(), expected_decode_bytes(rec))
        # a -0.0 parameter where the constraint is ">= 0" or "= 0.0" (§4)
        for off in (TREC(0) + 80, TREC(0) + 88):
            buf2 = bytearray(buf)
            put(buf2, off, "<d", -0.0)
            self.open(buf2).verify()

    def test_metadata_canonical_form_is_pythons(self):
        # §7 says Python's json.dumps(m, separators=(",", ":"), ensure_ascii=False,
        # sort_keys=True) writes the canonical form; the rule, written out, agrees
        short = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r",
                 0x22: '\\"', 0x5C: "\\\\"}

        def string(x):
            out = []
            for ch in x:
                c = ord(ch)
                out.append(short.get(c) or (f"\\u00{c:02x}" if c < 0x20 else ch))
            return '"' + "".join(out) + '"'

        def canonical(md):
            keys = sorted(md, key=lambda k: k.encode("utf-8"))
            return ("{" + ",".join(string(k) + ":" + string(md[k]) for k in keys)
                    + "}").encode("utf-8")

        chars = "".join(chr(c) for c in range(0x80)) + "é/\u2028\ufffd\U0001F600\uff61"
        md = {ch: ch * 2 for ch in chars}
        md.update({"": "", "qins.writer": "x", "\uff61": "a", "\U0001F600": "b"})
        self.assertEqual(canonical_metadata(md), canonical(md))
        # code point order, not UTF-16 order: U+FF61 sorts before U+1F600
        self.assertLess(canonical(md).index("\uff61".encode()), canonical(md).index(
            "\U0001F600".encode()))
        b = build_qins([], metadata=md)
        self.assertEqual(self.open(b.data).metadata, md)

    def test_unsupported_version_message(self):
        buf = base_file().data
        put(buf, 8, "<H", 2, fix=False)
        put(buf, 10, "<H", 3, fix=False)
        with self.assertRaises(qr.ERRORS["UnsupportedVersion"]) as cm:
            self.open(buf)
        self.assertIn("unsupported format version 2.3: this reader implements 1.x",
                      cm.exception.message)

    def test_errors_name_their_file(self):
        buf = base_file().data
        buf[0] = 0
        p = self.write(buf)
        with self.assertRaises(qr.QinsError) as cm:
            qr.QinsFile(p)
        self.assertEqual(cm.exception.file, p)
        self.assertIn(p, str(cm.exception))
        buf = base_file().data
        buf[-1] ^= 1
        p = self.write(buf)
        with qr.QinsFile(p) as q:
            with self.assertRaises(qr.ERRORS["DataChecksum"]) as cm:
                q.verify()
            self.assertEqual(cm.exception.file, p)

    # §13.3, §13.4 ----------------------------------------------------------------------------

    def test_sub_byte_packing(self):
        # §13.4: F4 element 2k is the low nibble of byte k, 2k + 1 the high nibble
        self.assertEqual(qr.unpack_elements(bytes([0x21, 0x43, 0x05]), 4, 5).tolist(),
                         [1, 2, 3, 4, 5])
        # F6: byte 0 = e0 | (e1 & 3) << 6, byte 1 = e1 >> 2 | (e2 & 0xF) << 4,
        #     byte 2 = e2 >> 4 | e3 << 2
        r = np.random.default_rng(9)
        for _ in range(50):
            e = r.integers(0, 64, 4).tolist()
            packed = bytes([e[0] | (e[1] & 3) << 6, e[1] >> 2 | (e[2] & 0xF) << 4,
                            e[2] >> 4 | e[3] << 2])
            self.assertEqual(qr.unpack_elements(packed, 6, 4).tolist(), e)
        # the general rule: element i at stream bits i*b .. i*b + b - 1, LSB first
        for bits in (1, 2, 3, 4, 5, 6, 7, 8):
            vals = r.integers(0, 1 << bits, 37).tolist()
            stream = 0
            for i, v in enumerate(vals):
                stream |= v << (i * bits)
            data = stream.to_bytes((37 * bits + 7) // 8, "little")
            self.assertEqual(qr.unpack_elements(data, bits, 37).tolist(), vals)
        # through a file: raw_elements and raw_values of F4 and F6 tensors
        b = build_qins([{"name": "f4", "dtype": "F4", "shape": [2, 2], "raw": b"\x2f\x7a"},
                        {"name": "f6", "dtype": "F6_E2M3", "shape": [4],
                         "raw": bytes([0x0F | 0x1 << 6, 0x0 | 0x5 << 4, 0x1 | 0x3F << 2])}])
        q = self.open(b.data)
        self.assertEqual(q.raw_elements("f4").tolist(), [[0xF, 0x2], [0xA, 0x7]])
        self.assertEqual(q.raw_values("f4").tolist(), [[-6.0, 1.0], [-1.0, 6.0]])
        self.assertEqual(q.raw_elements("f6").tolist(), [0x0F, 0x01, 0x15, 0x3F])
        self.assertEqual(q.raw_values("f6").tolist(), [1.875, 0.125, 3.25, -7.5])

    def test_small_float_formats(self):
        # §13.3: the "largest finite" column follows from the rule and the specials
        largest = {"F8_E5M2": 57344, "F8_E4M3": 448, "F8_E4M3FNUZ": 240,
                   "F8_E5M2FNUZ": 57344, "F8_E8M0": 2.0 ** 127, "F6_E2M3": 7.5, "F6_E3M2": 28,
                   "F4": 6}
        for dtype, top in largest.items():
            bits = sum(qr.SMALL_FLOATS[dtype][:3])
            v = qr.small_float_values(np.arange(1 << bits), dtype)
            finite = v[np.isfinite(v)]
            with self.subTest(dtype=dtype):
                self.assertEqual(finite.max(), top)
                if qr.SMALL_FLOATS[dtype][0]:
                    self.assertEqual(finite.min(), -top)
        sv = qr.small_float_values
        # F8_E5M2 (IEEE-like): 0x7C is +inf, 0xFC -inf, 0x7D..0x7F NaN; 0x01 the least subnormal
        self.assertEqual(sv([0x7C, 0xFC], "F8_E5M2").tolist(), [math.inf, -math.inf])
        self.assertTrue(np.isnan(sv([0x7D, 0x7F, 0xFE], "F8_E5M2")).all())
        self.assertEqual(sv([0x01, 0x04, 0x3C, 0x80], "F8_E5M2").tolist(),
                         [2.0 ** -16, 2.0 ** -14, 1.0, -0.0])
        # F8_E4M3: only S.1111.111 is NaN; 0x78 (e = 15, m = 0) is 256; no infinities
        self.assertTrue(np.isnan(sv([0x7F, 0xFF], "F8_E4M3")).all())
        self.assertEqual(sv([0x78, 0x7E, 0x38, 0x01, 0x80], "F8_E4M3").tolist(),
                         [256.0, 448.0, 1.0, 2.0 ** -9, -0.0])
        # FNUZ: 0x80 is the only NaN, there is no -0, e = max is normal
        for dtype in ("F8_E4M3FNUZ", "F8_E5M2FNUZ"):
            v = sv(np.arange(256), dtype)
            self.assertEqual(np.flatnonzero(np.isnan(v)).tolist(), [0x80])
            self.assertFalse(np.isinf(v).any())
            self.assertEqual(int(np.sum(v == 0)), 1)
            self.assertFalse(np.signbit(v[v == 0]).any())
        self.assertEqual(sv([0x40, 0x08], "F8_E4M3FNUZ").tolist(), [1.0, 2.0 ** -7])
        self.assertEqual(sv([0x40, 0x04], "F8_E5M2FNUZ").tolist(), [1.0, 2.0 ** -15])
        # F8_E8M0: 2^(e - 127), no zero, 0xFF NaN
        self.assertEqual(sv([0, 127, 254], "F8_E8M0").tolist(),
                         [2.0 ** -127, 1.0, 2.0 ** 127])
        self.assertTrue(math.isnan(sv([0xFF], "F8_E8M0")[0]))
        # FP6 and FP4 (OCP MX): every encoding is a number; subnormals below 2^(1 - B)
        self.assertFalse(np.isnan(sv(np.arange(64), "F6_E2M3")).any())
        self.assertEqual(sv([0x01, 0x08, 0x20], "F6_E2M3").tolist(), [0.125, 1.0, -0.0])
        self.assertEqual(sv([0x01, 0x04, 0x0C], "F6_E3M2").tolist(), [0.0625, 0.25, 1.0])
        self.assertEqual(sv(np.arange(8), "F4").tolist(), [0, 0.5, 1, 1.5, 2, 3, 4, 6])

    def test_raw_values_of_every_dtype(self):
        vals = {"BOOL": (b"\x00\x01\x02", [False, True, True]),
                "BF16": (np.array([0x3F80, 0xFF80], "<u2").tobytes(), [1.0, -math.inf]),
                "I16": (np.array([-2, 7], "<i2").tobytes(), [-2, 7]),
                "C64": (np.array([1 - 2j], "<c8").tobytes(), [1 - 2j]),
                "F8_E4M3": (bytes([0x38, 0xB8]), [1.0, -1.0])}
        b = build_qins([{"name": k, "dtype": k, "shape": [len(v)], "raw": d}
                        for k, (d, v) in vals.items()])
        q = self.open(b.data)
        for k, (_d, v) in vals.items():
            self.assertEqual(q.raw_values(k).tolist(), v, k)
        self.assertEqual(q.raw_values("BF16").dtype, np.float32)


# --------------------------------------------------------------------------------------------
# Sets (§21): valid sets opened from the index and from every shard, and every §21.6 kind
# --------------------------------------------------------------------------------------------

SET_TESTED_KINDS = set()


class SetCase(TmpMixin, unittest.TestCase):
    def setUp(self):
        super().setUp()
        self.s = set_fixture(self.tmp)

    def model(self, path):
        m = qr.open_model(path)
        self.addCleanup(m.close)
        return m

    def assertSetError(self, path, kind, file, *, verify=False, contains=()):
        """Opening the model at ``path`` fails with ``kind`` (at open, or at verification
        when ``verify``), and the error names ``file`` (a path, or a name in the set's dir)."""
        SET_TESTED_KINDS.add(kind)
        stage = None
        try:
            m = qr.open_model(path)
        except qr.QinsError as e:
            err, stage = e, "open"
        else:
            try:
                m.verify()
            except qr.QinsError as e:
                err, stage = e, "verify"
            finally:
                m.close()
        if stage is None:
            self.fail(f"{path}: accepted, expected {kind}")
        self.assertEqual((stage, err.kind), ("verify" if verify else "open", kind), str(err))
        self.assertIsInstance(err, qr.ERRORS[kind])
        want = file if os.path.isabs(file) else os.path.join(self.s.dir, file)
        self.assertEqual(os.path.normpath(err.file), os.path.normpath(want), str(err))
        for c in ([contains] if isinstance(contains, str) else contains):
            self.assertIn(c, err.message)
        return err

    def from_all(self):
        """The index and every shard: the paths a set can be opened from (§21.5)."""
        return [self.s.index_path] + [self.s.path(k) for k in range(1, self.s.n + 1)]


class TestSets(SetCase):
    def check_model(self, m, s):
        self.assertTrue(m.is_set)
        self.assertEqual(m.set_id, s.set_id)
        self.assertEqual(m.version, (1, 1))
        names = [t["name"] for b in s.built for t in b.tensors]
        self.assertEqual([t.name for t in m.tensors], names)
        self.assertEqual([t.shard for t in m.tensors],
                         [k for k, b in enumerate(s.built, 1) for _t in b.tensors])
        self.assertEqual([st.file for st in m.shards], s.files)
        for k, b in enumerate(s.built, 1):
            for rec in b.tensors:
                self.assertEqual(m.shard_of(rec["name"]), k)
                if rec["codec"] == "raw":
                    self.assertEqual(m.raw_bytes(rec["name"]), rec["spec"]["raw"])
                else:
                    got = m.decode(rec["name"], check=True)
                    self.assertEqual(got.shape, tuple(rec["shape"]))
                    self.assertEqual(got.astype("<f4").tobytes(), expected_decode_bytes(rec))
        # assets and metadata are shard 1's (§21.4)
        self.assertEqual([a.name for a in m.assets], ["config.json", "1_Pooling/config.json"])
        self.assertEqual(m.asset_bytes("config.json"), b'{"layers": 1}')
        self.assertEqual(m.metadata, s.shard_metadata(1))
        m.verify()

    def test_open_from_index_and_every_shard(self):
        for p in self.from_all():
            with self.subTest(path=os.path.basename(p)):
                self.check_model(self.model(p), self.s)

    def test_which_file_a_path_is(self):
        # §21.5: the magic makes a .qins file whatever its name; otherwise a name ending in
        # ".json" (lower case) makes an index; anything else is opened as a .qins file
        with open(self.s.index_path, "rb") as f:
            index = f.read()
        for name in ("model.qins.index", "model.qins.index.JSON", "index.txt", "{.qins"):
            p = os.path.join(self.s.dir, name)
            with open(p, "wb") as f:
                f.write(index)
            self.assertSetError(p, "BadMagic", p)
        p = os.path.join(self.s.dir, "tiny")  # shorter than the preamble (§17 step 1)
        with open(p, "wb") as f:
            f.write(b"{}")
        self.assertSetError(p, "Truncated", p)
        p = os.path.join(self.s.dir, "shard.json")  # a shard named like an index
        with open(p, "wb") as f:
            f.write(self.s.built[0].data)
        self.assertSetError(p, "UnlistedShard", p)
        buf = bytearray(self.s.built[1].data)  # a damaged shard (no magic)
        buf[0] ^= 0xFF
        for name, kind in (("damaged.json", "BadIndex"), ("damaged.qins", "BadMagic")):
            p = os.path.join(self.s.dir, name)
            with open(p, "wb") as f:
                f.write(buf)
            self.assertSetError(p, kind, p)

    def test_symbolic_links(self):
        # §21.5: links are followed to the file, but the directory of a path is the link's
        elsewhere = os.path.join(self.tmp, "elsewhere")
        os.mkdir(elsewhere)
        stored = os.path.join(elsewhere, "stored.qins")
        os.rename(self.s.path(2), stored)
        os.symlink(os.path.join("..", "elsewhere", "stored.qins"), self.s.path(2))
        for p in (self.s.index_path, self.s.path(2)):
            self.check_model(self.model(p), self.s)
        # the file by its own path: no index beside it
        self.assertSetError(stored, "MissingIndex",
                            os.path.join(elsewhere, self.s.index_name))
        # a link elsewhere to shard 1 under its own name: the index is looked for there
        link = os.path.join(elsewhere, self.s.files[0])
        os.symlink(self.s.path(1), link)
        self.assertSetError(link, "MissingIndex", os.path.join(elsewhere, self.s.index_name))
        # a link to the index is an index, and its shards are looked for beside the link
        link = os.path.join(elsewhere, "linked.json")
        os.symlink(self.s.index_path, link)
        self.assertSetError(link, "MissingShard", os.path.join(elsewhere, self.s.files[1]))

    def test_relative_paths(self):
        cwd = os.getcwd()
        os.chdir(self.s.dir)
        self.addCleanup(os.chdir, cwd)
        for p in [self.s.index_name] + self.s.files:
            self.check_model(self.model(p), self.s)

    def test_index_is_canonical_json(self):
        with open(self.s.index_path, "rb") as f:
            text = f.read()
        self.assertTrue(text.endswith(b"}\n"))
        idx = qr.read_index(self.s.index_path)
        self.assertEqual(idx.format_version, (1, 1))
        self.assertEqual(idx.set_id, self.s.set_id)
        self.assertEqual([e.file for e in idx.shards], self.s.files)
        self.assertEqual([e.k for e in idx.shards], [1, 2, 3])
        self.assertEqual(idx.total_size, sum(e.size for e in idx.shards))

    def test_file_api_opens_a_shard_as_a_file(self):
        # §21.3: a file API opens any shard as a file, as a 1.0 reader does
        for k in (1, 2, 3):
            with qr.QinsFile(self.s.path(k)) as q:
                q.verify()
                self.assertEqual(q.version, (1, 1))
                self.assertEqual(q.metadata["qins.set.shard"], str(k))
                self.assertEqual([t.name for t in q.tensors],
                                 [t["name"] for t in self.s.built[k - 1].tensors])
        # even a shard whose set is broken (the index is gone)
        os.unlink(self.s.index_path)
        with qr.QinsFile(self.s.path(2)) as q:
            q.verify()

    def test_single_file_is_not_a_set(self):
        # no qins.set.id: a single-file model, whatever its other keys and minor version (§21.3)
        md = self.s.shard_metadata(1, id=None)
        b = build_qins(self.s.specs[0]["tensors"], metadata=md, version_minor=1)
        p = self.write(b.data)
        m = self.model(p)
        self.assertFalse(m.is_set)
        self.assertEqual(m.version, (1, 1))
        self.assertEqual([t.name for t in m.tensors], ["embed", "norm"])
        m.verify()
        # a minor version of 0 does not make a shard a single file either (§15.2)
        b = self.s.build_shard(1, version_minor=0)
        self.s.write_shard(1, b.data)
        self.s.index["shards"][0]["header_crc32"] = f"{header_crc_of(b.data):08x}"
        self.s.write_index()
        m = self.model(self.s.path(2))
        self.assertTrue(m.is_set)
        self.assertEqual(m.shards[0].version, (1, 0))
        m.verify()

    def test_one_shard_and_empty_shards(self):
        t = [{"name": "x", "dtype": "U8", "shape": [2], "raw": b"\x01\x02"}]
        s = SetMaker(self.tmp, [{"tensors": t, "assets": [("a.txt", b"a")]}], subdir="one",
                     name="one").write()
        for p in (s.index_path, s.path(1)):
            m = self.model(p)
            self.assertEqual([x.name for x in m.tensors], ["x"])
            m.verify()
        # shards may hold no tensor (§21.4); a set may have no tensors at all
        s = SetMaker(self.tmp, [{"tensors": []}, {"tensors": t}, {"tensors": []}],
                     subdir="empty", name="e").write()
        for p in [s.index_path] + [s.path(k) for k in (1, 2, 3)]:
            m = self.model(p)
            self.assertEqual([(x.name, x.shard) for x in m.tensors], [("x", 2)])
            m.verify()
        s = SetMaker(self.tmp, [{"tensors": []}], subdir="none", name="n", metadata={}).write()
        m = self.model(s.path(1))
        self.assertEqual((m.tensors, m.assets), ([], []))
        m.verify()

    def test_index_leniency(self):
        # members a reader does not know are ignored at every level; any JSON whitespace;
        # escapes; members in any order; a minor version above 1 (§21.2, §15)
        idx = self.s.index
        extra = {"metadata": dict(idx["metadata"], future="x", format_version="1.7",
                                  nested={"a": [1, 2.5, -3, None, True]}),
                 "weight_map": idx["weight_map"], "extra": [1e300, -0.0],
                 "shards": [dict(e, note={"k": -1}) for e in idx["shards"]]}
        text = json.dumps(extra, ensure_ascii=True, indent="\t").replace(
            '"set_id"', '"set\\u005fid"')
        self.s.write_index(text=text)
        m = self.model(self.s.path(3))
        self.assertEqual(m.version, (1, 7))
        m.verify()
        # the index's own file name need not be the one the shards name, when opened from it
        os.rename(self.s.index_path, os.path.join(self.s.dir, "renamed.json"))
        self.model(os.path.join(self.s.dir, "renamed.json")).verify()

    def test_index_or_shard_by_content(self):
        # an index whose name does not end in .json is opened as a .qins file (§21.5, "Which
        # file a path is"), whatever its content
        other = os.path.join(self.s.dir, "index")
        os.rename(self.s.index_path, other)
        self.assertSetError(other, "BadMagic", other)
        with open(other, "wb") as f:
            f.write(b"\xef\xbb\xbf{}")
        self.assertSetError(other, "Truncated", other)
        # a file that is neither: §17's kinds
        for data, kind in ((b"", "Truncated"), (b"PK\x03\x04" + bytes(200), "BadMagic"),
                           (b"\x89QINS", "Truncated")):
            with open(other, "wb") as f:
                f.write(data)
            self.assertSetError(other, kind, other)
        # a named .json that is empty or garbage is a bad index
        for data in (b"", b"\x89QINS\r\n"):
            with open(self.s.index_path, "wb") as f:
                f.write(data)
            self.assertSetError(self.s.index_path, "BadIndex", self.s.index_name)

    def test_symlinked_shard(self):
        # "a regular file, symbolic links followed" (§21.5 step 2)
        real = os.path.join(self.tmp, "elsewhere.qins")
        os.rename(self.s.path(2), real)
        os.symlink(real, self.s.path(2))
        self.model(self.s.index_path).verify()

    def test_tensor_access_and_lru(self):
        m = qr.open_model(self.s.index_path, max_open=1)
        self.addCleanup(m.close)
        for _ in range(2):
            for t in m.tensors:
                if t.encoded:
                    m.decode(t.name)
                else:
                    m.raw_values(t.name)
            self.assertEqual(m.asset_bytes("1_Pooling/config.json"), b"{}")
        self.assertEqual(m.raw_values("norm").tolist(), [1.0, -2.0, 0.5, 0.0, -0.0, math.inf])
        self.assertEqual(m.tensor("head").shard, 3)
        with self.assertRaises(KeyError):
            m.tensor("missing")
        m.verify()
        # a closed shard that changed since the set was opened is refused when reopened
        self.assertEqual(len(m._open), 1)
        b = self.s.build_shard(2, tensors=self.s.specs[1]["tensors"][:1])
        self.s.write_shard(2, b.data)
        with self.assertRaises(qr.ERRORS["IndexMismatch"]) as cm:
            m.decode("layer.0.w")
        self.assertEqual(cm.exception.file, self.s.path(2))

    def test_many_shards(self):
        t = lambda i: [{"name": f"t{i}", "dtype": "U8", "shape": [1], "raw": bytes([i])}]  # noqa
        s = SetMaker(self.tmp, [{"tensors": t(i)} for i in range(80)], subdir="many",
                     name="m").write()
        m = qr.open_model(s.path(40), max_open=8)
        self.addCleanup(m.close)
        self.assertEqual([x.name for x in m.tensors], [f"t{i}" for i in range(80)])
        self.assertLessEqual(len(m._open), 8)
        m.verify()
        self.assertEqual([m.raw_bytes(f"t{i}") for i in range(80)],
                         [bytes([i]) for i in range(80)])

    # step 1: the index ------------------------------------------------------------------------

    def bad_index(self, text, kind="BadIndex", contains=()):
        self.s.write_index(text=text)
        for p in (self.s.index_path, self.s.path(2)):
            self.assertSetError(p, kind, self.s.index_name, contains=contains)

    def idx(self, **changes):
        """The valid index as text, with changes: ``metadata__x=v`` sets metadata.x, ``x=v``
        sets x; the value ``DEL`` removes the member."""
        idx = json.loads(json.dumps(self.s.index))
        for key, v in changes.items():
            obj = idx
            *path, last = key.split("__")
            for p in path:
                obj = obj[int(p)] if isinstance(obj, list) else obj[p]
            if v is DEL:
                del obj[last]
            elif isinstance(obj, list):
                obj[int(last)] = v
            else:
                obj[last] = v
        return canonical_index(idx)

    def test_bad_index_json(self):
        good = self.idx()
        for text in (b"\xff" + good, b"\xef\xbb\xbf" + good, good[:-5], good + b"x",
                     good.replace(b'"qins"', b"'qins'"), b"[]", b'"qins"', b"", b"{}",
                     good.replace(b'"1.1"', b'"1.1",'),
                     good.replace(b'"format": "qins"', b'"format": "qins", "format": "qins"'),
                     good.replace(b'"size"', b'"size": 1, "size"', 1),   # nested duplicate
                     good.replace(b'"set_id"', b'"x": "\\ud800", "set_id"'),  # lone surrogate
                     good.replace(b'"set_id"', b'"x": NaN, "set_id"'),
                     good.replace(b'"set_id"', b'/* c */ "set_id"'),
                     b"[" * 100000 + b"]" * 100000):
            with self.subTest(text=text[:60]):
                self.bad_index(text)

    def test_bad_index_members(self):
        big = "x" * 256
        cases = dict(
            metadata=[DEL, [], "m"],
            metadata__format=[DEL, "QINS", "qins ", 1, None],
            metadata__format_version=[DEL, "1", "1.", ".1", "01.1", "1.01", "1.1.0", " 1.1",
                                      "1.1 ", "1.65536", "+1.1", "1.-1", "１.1", 1.1, 1, None],
            metadata__set_id=[DEL, "", "x" * 65, "a b", "é", "a/b", "a\\u0000", 7, None],
            metadata__total_size=[DEL, 0, "11904", 1.5, None, -1, 2 ** 64, True],
            shards=[DEL, [], {}, "x", [None]],
            weight_map=[DEL, [], "x", {"embed": "nowhere.qins"}, {"": "model-00001-of-00003.qins"},
                        {"a\u0000b": "model-00001-of-00003.qins"},
                        {"n" * 4097: "model-00001-of-00003.qins"},
                        {"embed": 1}],
        )
        cases["shards__0__file"] = [DEL, "", ".", "..", "a/b", "a\\b", "a\u0000b", big, 5,
                                   "model-00002-of-00003.qins"]
        cases["shards__1__size"] = [DEL, -1, 1.0, "1", None, 2 ** 64]
        cases["shards__2__header_crc32"] = [DEL, "ABCDEF01", "abcdef0", "abcdef012", "0xabcdef",
                                           12345678, None]
        for key, values in cases.items():
            for v in values:
                with self.subTest(member=key, value=repr(v)[:40]):
                    self.bad_index(self.idx(**{key: v}))

    def test_index_numbers_must_be_plain_integers(self):
        # "Integers are JSON numbers without sign, fraction or exponent, below 2^64" (§21.2)
        good = self.idx()
        size = self.s.index["shards"][0]["size"]
        for lit in (f"{size}.0", f"{size}e0", f"{size}E+0", "-0", f"{size}.00"):
            text = good.replace(f'"size": {size}'.encode(), f'"size": {lit}'.encode(), 1)
            with self.subTest(literal=lit):
                self.bad_index(text)
        # the largest integer below 2^64 is an integer; total_size then disagrees (BadIndex)
        self.bad_index(self.idx(metadata__total_size=2 ** 64 - 1), contains="add up")

    def test_bad_index_total_size(self):
        ts = self.s.index["metadata"]["total_size"]
        for v in (ts - 1, ts + 1, 0):
            self.bad_index(self.idx(metadata__total_size=v), contains="total_size")

    def test_unsupported_version(self):
        for v in ("2.0", "0.9", "0.0", "65535.1", "3.1"):
            with self.subTest(version=v):
                self.bad_index(self.idx(metadata__format_version=v), "UnsupportedVersion",
                               contains=v)
        # checked after format, before the other members (§21.5 step 1)
        self.bad_index(self.idx(metadata__format_version="2.0", metadata__format="x"))
        self.bad_index(self.idx(metadata__format_version="2.0", metadata__set_id=""),
                       "UnsupportedVersion")

    def test_limit_exceeded(self):
        # the index's length, before it is read (a sparse file of 256 MiB + 1 byte)
        with open(self.s.index_path, "wb") as f:
            f.truncate(qr.MAX_INDEX_SIZE + 1)
        for p in (self.s.index_path, self.s.path(1)):
            self.assertSetError(p, "LimitExceeded", self.s.index_name, contains="268435456")
        # more than 65536 shards; exactly 65536 is within the limit (then MissingShard)
        for n, kind, file in ((65537, "LimitExceeded", self.s.index_name),
                              (65536, "MissingShard", "s00001.qins")):
            idx = {"metadata": {"format": "qins", "format_version": "1.1", "set_id": "x",
                                "total_size": 0},
                   "shards": [{"file": f"s{k:05d}.qins", "size": 0, "header_crc32": "00000000"}
                              for k in range(1, n + 1)],
                   "weight_map": {}}
            self.s.write_index(text=json.dumps(idx, separators=(",", ":")))
            self.assertSetError(self.s.index_path, kind, file)
        # the shard count is checked as soon as 'shards' is an array, before the other rules
        # of §21.2 (a bad set_id, a total_size that is not the sum, a weight_map value that is
        # not a listed file): LimitExceeded (§21.5 step 1)
        idx["shards"].append({"file": "extra.qins", "size": 7, "header_crc32": "0"})
        idx["metadata"].update(set_id="a b", total_size=1)
        idx["weight_map"] = {"w": "nowhere"}
        self.s.write_index(text=json.dumps(idx, separators=(",", ":")))
        self.assertSetError(self.s.index_path, "LimitExceeded", self.s.index_name)
        # ... and after format and format_version
        idx["metadata"]["format_version"] = "2.0"
        self.s.write_index(text=json.dumps(idx, separators=(",", ":")))
        self.assertSetError(self.s.index_path, "UnsupportedVersion", self.s.index_name)

    # step 2: every shard is there ---------------------------------------------------------

    def test_missing_shard(self):
        os.unlink(self.s.path(3))
        for p in (self.s.index_path, self.s.path(1), self.s.path(2)):
            self.assertSetError(p, "MissingShard", self.s.files[2], contains=self.s.files[2])
        # a directory, a broken symbolic link: not a regular file
        os.mkdir(self.s.path(3))
        self.assertSetError(self.s.index_path, "MissingShard", self.s.files[2])
        os.rmdir(self.s.path(3))
        os.symlink(os.path.join(self.tmp, "nowhere"), self.s.path(3))
        self.assertSetError(self.s.index_path, "MissingShard", self.s.files[2])

    def test_missing_shard_renamed(self):
        # a shard renamed: MissingShard from the index; opened by its new name, UnlistedShard
        new = os.path.join(self.s.dir, "renamed.qins")
        os.rename(self.s.path(2), new)
        self.assertSetError(self.s.index_path, "MissingShard", self.s.files[1])
        self.assertSetError(new, "UnlistedShard", new)

    def test_missing_shard_before_shard_contents(self):
        # step 2 checks every shard's presence before step 3 opens any: a missing shard 3 is
        # reported before a damaged shard 1
        buf = self.s.shard_bytes(1)
        buf[0] = 0
        self.s.write_shard(1, buf)
        os.unlink(self.s.path(3))
        self.assertSetError(self.s.index_path, "MissingShard", self.s.files[2])

    # step 3: each shard ---------------------------------------------------------------------

    def test_fault_inside_a_shard(self):
        # §17 kinds, naming the shard (step 3.1)
        buf = self.s.shard_bytes(2)
        buf[0] = 0x09
        self.s.write_shard(2, buf)
        for p in (self.s.index_path, self.s.path(1), self.s.path(3)):
            self.assertSetError(p, "BadMagic", self.s.files[1])
        self.assertSetError(self.s.path(2), "BadMagic", self.s.files[1])
        # a truncated shard
        self.s.write_shard(2, self.s.built[1].data[:-1])
        self.assertSetError(self.s.index_path, "Truncated", self.s.files[1])
        # damage found by verification (§14), naming the shard
        buf = bytearray(self.s.built[1].data)
        buf[self.s.built[1].tensors[0]["sections"][0][0]] ^= 1
        self.s.write_shard(2, buf)
        for p in self.from_all():
            self.assertSetError(p, "DataChecksum", self.s.files[1], verify=True,
                                contains="tensor layer.0.w data")
        # verification goes shard by shard: shard 1's damage first
        buf1 = bytearray(self.s.built[0].data)
        buf1[-1] ^= 1
        self.s.write_shard(1, buf1)
        self.assertSetError(self.s.path(3), "DataChecksum", self.s.files[0], verify=True,
                            contains="asset 1_Pooling/config.json")

    def test_foreign_shard(self):
        # a shard of another set, under a listed name
        other = SetMaker(self.tmp, self.s.specs, subdir="other", set_id="other-set").write()
        with open(other.path(2), "rb") as f:
            self.s.write_shard(2, f.read())
        for p in (self.s.index_path, self.s.path(1), self.s.path(3)):
            self.assertSetError(p, "ForeignShard", self.s.files[1], contains="other-set")
        # opened from the foreign shard itself: its index (same name) lists its name, so the
        # set opened is ours, and the foreign file is found at step 3.2
        self.assertSetError(self.s.path(2), "ForeignShard", self.s.files[1])
        # a single file (no qins.set.id) under a listed name
        b = build_qins(self.s.specs[1]["tensors"], metadata={"qins.writer": "test"})
        self.s.write_shard(2, b.data)
        self.assertSetError(self.s.index_path, "ForeignShard", self.s.files[1],
                            contains="no qins.set.id")
        # the set id differs in case only
        self.s.write_shard(2, metadata=self.s.shard_metadata(2, id=self.s.set_id.upper()))
        self.assertSetError(self.s.index_path, "ForeignShard", self.s.files[1])

    def test_misplaced_shard(self):
        # two shards' names exchanged
        a, b = self.s.path(1), self.s.path(2)
        os.rename(a, a + ".tmp")
        os.rename(b, a)
        os.rename(a + ".tmp", b)
        for p in (self.s.index_path, self.s.path(3)):
            self.assertSetError(p, "MisplacedShard", self.s.files[0])
        self.assertSetError(self.s.path(1), "MisplacedShard", self.s.files[0])

    def test_misplaced_shard_counts(self):
        # an index that lists fewer shards than the shards say
        idx = self.s.index
        idx2 = {"metadata": dict(idx["metadata"], total_size=sum(e["size"]
                                                                  for e in idx["shards"][:2])),
                "shards": idx["shards"][:2],
                "weight_map": {n: f for n, f in idx["weight_map"].items()
                               if f != self.s.files[2]}}
        self.s.write_index(idx2)
        self.assertSetError(self.s.index_path, "MisplacedShard", self.s.files[0],
                            contains="of 2")
        # shard 3, no longer listed, opened by itself: UnlistedShard
        self.assertSetError(self.s.path(3), "UnlistedShard", self.s.files[2])

    def test_misplaced_shard_values(self):
        # qins.set.shard / shard_count not canonical decimal, or absent (step 3.3)
        for override in ({"shard": "01"}, {"shard": "+1"}, {"shard": " 1"}, {"shard": "1.0"},
                         {"shard": None}, {"shard_count": "03"}, {"shard_count": None},
                         {"shard_count": "4"}, {"shard": "2"}, {"shard": "0"}):
            with self.subTest(override=override):
                b = self.s.write_shard(1, metadata=self.s.shard_metadata(1, **override))
                self.s.index["shards"][0].update(header_crc32=f"{header_crc_of(b.data):08x}",
                                                 size=len(b.data))
                self.s.index["metadata"]["total_size"] = sum(
                    e["size"] for e in self.s.index["shards"])
                self.s.write_index()
                self.assertSetError(self.s.index_path, "MisplacedShard", self.s.files[0])

    def test_index_mismatch_size_and_crc(self):
        # a shard of the same set id but other contents (a re-conversion of a changed model)
        specs = [dict(sp) for sp in self.s.specs]
        t = dict(specs[1]["tensors"][1], raw=np.arange(10, 15, dtype="<f4").tobytes())
        self.s.write_shard(2, tensors=[specs[1]["tensors"][0], t])  # same size, other CRC
        for p in (self.s.index_path, self.s.path(2)):
            self.assertSetError(p, "IndexMismatch", self.s.files[1], contains="header CRC")
        # other size (one tensor fewer)
        self.s.write_shard(2, tensors=specs[1]["tensors"][:1])
        self.assertSetError(self.s.index_path, "IndexMismatch", self.s.files[1],
                            contains="bytes")
        # the index's size or CRC edited (total_size kept consistent)
        self.s.write_shard(2)
        for key, v in (("size", 1), ("header_crc32", "00000000")):
            idx = json.loads(json.dumps(self.s.index))
            idx["shards"][1][key] = idx["shards"][1][key] + v if key == "size" else v
            idx["metadata"]["total_size"] = sum(e["size"] for e in idx["shards"])
            self.s.write_index(idx)
            self.assertSetError(self.s.index_path, "IndexMismatch", self.s.files[1])

    def test_misplaced_asset(self):
        for k in (3, 2):  # the first shard in order with assets is named
            b = self.s.write_shard(k, assets=[("extra.txt", b"x")])
            self.s.index["shards"][k - 1].update(header_crc32=f"{header_crc_of(b.data):08x}",
                                                 size=len(b.data))
            self.s.index["metadata"]["total_size"] = sum(
                e["size"] for e in self.s.index["shards"])
            self.s.write_index()
            for p in self.from_all():
                self.assertSetError(p, "MisplacedAsset", self.s.files[k - 1],
                                    contains="extra.txt")
        # an empty asset is an asset
        self.rewrite(2, assets=[("empty", b"")])
        self.s.write_index()
        self.assertSetError(self.s.index_path, "MisplacedAsset", self.s.files[1])
        # shard 1 without assets and shards 2, 3 without: valid
        self.rewrite(2)
        self.rewrite(3)
        self.rewrite(1, assets=[])
        self.s.write_index()
        m = self.model(self.s.path(3))
        self.assertEqual(m.assets, [])
        m.verify()

    def rewrite(self, k, **kw):
        """Rewrite shard k (build_shard's keywords) and make the index agree with its bytes."""
        b = self.s.write_shard(k, **kw)
        self.s.built[k - 1] = b
        wm = self.s.index["weight_map"]
        self.s.index = self.s.make_index()
        return wm

    # steps 4 and 5 --------------------------------------------------------------------------

    def test_duplicate_tensor(self):
        t3 = self.s.specs[2]["tensors"] + [self.s.specs[0]["tensors"][1]]  # "norm" again
        self.rewrite(3, tensors=t3)
        self.s.write_index()
        for p in self.from_all():
            e = self.assertSetError(p, "DuplicateTensor", self.s.files[2], contains="'norm'")
            self.assertIn(self.s.files[0], e.message)  # naming both shards
        # the first duplicate in the set's order is reported
        t2 = self.s.specs[1]["tensors"] + [self.s.specs[0]["tensors"][0]]  # "embed"
        self.rewrite(2, tensors=t2)
        self.s.write_index()
        self.assertSetError(self.s.index_path, "DuplicateTensor", self.s.files[1],
                            contains="'embed'")

    def test_weight_map_disagrees(self):
        good = self.s.index
        # a tensor missing from the weight map
        wm = {k: v for k, v in good["weight_map"].items() if k != "layer.0.b"}
        self.s.write_index(dict(good, weight_map=wm))
        self.assertSetError(self.s.index_path, "IndexMismatch", self.s.files[1],
                            contains="layer.0.b")
        # a tensor mapped to another (listed) shard
        wm = dict(good["weight_map"], head=self.s.files[0])
        self.s.write_index(dict(good, weight_map=wm))
        self.assertSetError(self.s.path(1), "IndexMismatch", self.s.files[2], contains="head")
        # a key no shard holds: naming the index
        wm = dict(good["weight_map"], ghost=self.s.files[1])
        self.s.write_index(dict(good, weight_map=wm))
        self.assertSetError(self.s.path(2), "IndexMismatch", self.s.index_name,
                            contains="ghost")
        # in the set's order first, then the extra keys
        wm = dict(good["weight_map"], ghost=self.s.files[0])
        del wm["head"]
        self.s.write_index(dict(good, weight_map=wm))
        self.assertSetError(self.s.index_path, "IndexMismatch", self.s.files[2])

    # from a shard: the index and the shard's place in it ---------------------------------------

    def test_missing_index(self):
        # qins.set.index_file absent, or not a file name: the error names the shard
        p = self.s.path(2)
        for override in ({"index_file": None}, {"index_file": ""}, {"index_file": "a/b.json"},
                         {"index_file": ".."}, {"index_file": "."}, {"index_file": "a\\b"},
                         {"index_file": "x" * 256}):
            with self.subTest(override=override):
                self.s.write_shard(2, metadata=self.s.shard_metadata(2, **override))
                self.assertSetError(p, "MissingIndex", self.s.files[1])
        # a file name that names no file: the error names the index it names
        self.s.write_shard(2, metadata=self.s.shard_metadata(2, index_file="nothere.json"))
        self.assertSetError(p, "MissingIndex", "nothere.json")
        # 255 bytes is a file name (§21.7)
        self.s.write_shard(2, metadata=self.s.shard_metadata(2, index_file="x" * 255))
        self.assertSetError(p, "MissingIndex", "x" * 255)
        # the index deleted: every shard reports it; opening from the index is impossible
        self.s.write_shard(2)
        os.unlink(self.s.index_path)
        for k in (1, 2, 3):
            self.assertSetError(self.s.path(k), "MissingIndex", self.s.index_name,
                                contains=self.s.files[k - 1])
        # the index is a directory
        os.mkdir(self.s.index_path)
        self.assertSetError(self.s.path(1), "MissingIndex", self.s.index_name)

    def test_missing_index_not_checked_from_the_index(self):
        # a reader that opens the set from its index does not look at qins.set.index_file
        # (§21.3); from the shard, the index it names must exist
        self.rewrite(2, metadata=self.s.shard_metadata(2, index_file="other.json"))
        self.s.write_index()
        self.model(self.s.index_path).verify()
        self.model(self.s.path(1)).verify()
        self.assertSetError(self.s.path(2), "MissingIndex", "other.json")
        # ... and an index of that name that lists the shard opens the set
        self.s.write_index(name="other.json")
        self.model(self.s.path(2)).verify()

    def test_unlisted_shard(self):
        # an extra copy of a shard beside the set
        extra = os.path.join(self.s.dir, "model-00002-of-00003 (copy).qins")
        with open(extra, "wb") as f:
            f.write(self.s.built[1].data)
        self.assertSetError(extra, "UnlistedShard", extra)
        self.model(self.s.index_path).verify()  # the index does not look for extra files
        # the same name with other case is another name (compared as bytes)
        up = os.path.join(self.s.dir, self.s.files[1].upper())
        if not os.path.exists(up):  # a case-sensitive file system
            os.rename(extra, up)
            self.assertSetError(up, "UnlistedShard", up)

    def test_shard_of_another_set_with_same_index_name(self):
        # a shard of another set, whose index has the same name, beside this set
        other = SetMaker(self.tmp, self.s.specs[:2], subdir="other", set_id="other",
                         name="big").write()
        with open(other.path(1), "rb") as f:
            data = f.read()
        p = os.path.join(self.s.dir, other.files[0])
        with open(p, "wb") as f:
            f.write(data)
        # it names "big.qins.index.json", absent here
        self.assertSetError(p, "MissingIndex", other.index_name)
        md = other.shard_metadata(1)
        md["qins.set.index_file"] = self.s.index_name
        with open(p, "wb") as f:
            f.write(other.build_shard(1, metadata=md).data)
        self.assertSetError(p, "UnlistedShard", p)

    def test_index_errors_from_a_shard_name_the_index(self):
        self.s.write_index(text=b"not json")
        self.assertSetError(self.s.path(1), "BadIndex", self.s.index_name)
        self.s.write_index(text=self.idx(metadata__format_version="9.0"))
        self.assertSetError(self.s.path(3), "UnsupportedVersion", self.s.index_name)

    def test_open_order(self):
        # step 1 (the index) before step 2 (the shards' presence)
        os.unlink(self.s.path(1))
        self.s.write_index(text=self.idx(metadata__set_id=""))
        self.assertSetError(self.s.index_path, "BadIndex", self.s.index_name)
        self.s.write_index()
        self.s.write_shard(1)
        # shard by shard (step 3): shard 1's IndexMismatch before shard 2's ForeignShard
        self.s.write_shard(1, tensors=self.s.specs[0]["tensors"][:1])
        self.s.write_shard(2, metadata=self.s.shard_metadata(2, id="zzz"))
        self.assertSetError(self.s.index_path, "IndexMismatch", self.s.files[0])
        self.s.write_shard(1)
        # within a shard: ForeignShard (3.2) before MisplacedShard (3.3) before IndexMismatch
        # (3.4) before MisplacedAsset (3.5)
        md = self.s.shard_metadata(2, id="zzz", shard="3")
        self.s.write_shard(2, metadata=md, assets=[("a", b"")])
        self.assertSetError(self.s.index_path, "ForeignShard", self.s.files[1])
        md = self.s.shard_metadata(2, shard="3")
        self.s.write_shard(2, metadata=md, assets=[("a", b"")])
        self.assertSetError(self.s.index_path, "MisplacedShard", self.s.files[1])
        self.s.write_shard(2, assets=[("a", b"")])
        self.assertSetError(self.s.index_path, "IndexMismatch", self.s.files[1])
        # step 3 (every shard) before step 4 (duplicates) before step 5 (weight map)
        self.s.write_shard(2)
        t3 = self.s.specs[2]["tensors"] + [self.s.specs[0]["tensors"][1]]
        wm = self.rewrite(3, tensors=t3)
        self.s.index["weight_map"] = dict(wm, ghost=self.s.files[0])
        self.s.write_index()
        self.assertSetError(self.s.index_path, "DuplicateTensor", self.s.files[2])
        self.s.write_shard(1, assets=[])
        self.assertSetError(self.s.index_path, "IndexMismatch", self.s.files[0])
        # from a shard: MissingIndex (2) before the index (3); the index (3) before
        # UnlistedShard (4); UnlistedShard before the other shards (5)
        self.s.write_shard(1)
        self.s.write_index(text=b"{")
        other = os.path.join(self.s.dir, "x.qins")
        with open(other, "wb") as f:
            f.write(self.s.built[1].data)
        self.assertSetError(other, "BadIndex", self.s.index_name)
        self.s.write_index()
        os.unlink(self.s.path(3))
        self.assertSetError(other, "UnlistedShard", other)

    def test_zz_every_set_kind_tested(self):
        for name in dir(self):
            if set(qr.SET_ERROR_KINDS) <= SET_TESTED_KINDS:
                break
            if name.startswith("test_") and name != "test_zz_every_set_kind_tested":
                self.tearDown()
                self.setUp()
                getattr(self, name)()
        self.assertEqual(set(qr.SET_ERROR_KINDS) - SET_TESTED_KINDS, set())
        self.assertEqual(len(qr.SET_ERROR_KINDS), 9)


DEL = object()


# --------------------------------------------------------------------------------------------
# The public conformance suite (spec/conformance.md §20.2.1 and §20.5)
# --------------------------------------------------------------------------------------------

SUITE = os.path.join(os.path.dirname(HERE), "conformance")


def _crc_hex(b) -> str:
    return f"{zlib.crc32(b):08x}"


def check_against_expected(tc: unittest.TestCase, q, exp: dict, *, decode=None, raw=None,
                           asset=None) -> None:
    """§20.2.1 item 1: what a `qins-conformance-expected/1` object lists, found in the open
    file ``q`` (a QinsFile). ``decode``/``raw``/``asset`` fetch a tensor's values or bytes and
    an asset's bytes by name (default: from ``q``; a set passes its model's, §20.5.1)."""
    decode = decode or q.decode
    raw = raw or q.raw_bytes
    asset = asset or q.asset_bytes
    tc.assertEqual(list(q.version), exp["version"])
    tc.assertEqual(q.alignment, exp["alignment"])
    tc.assertEqual(q.metadata, exp["metadata"])
    tc.assertEqual(q.actual_size, exp["file_size"])
    tc.assertEqual(len(q.tensors), len(exp["tensors"]))
    for t, e in zip(q.tensors, exp["tensors"]):
        tc.assertEqual((t.name, t.dtype, list(t.shape), t.codec, t.row_scales),
                       (e["name"], e["dtype"], e["shape"], e["storage"], e["row_scales"]))
        if e["storage"] == "raw":
            tc.assertNotIn("params", e)
            payload = raw(t.name)
            if "hex" in e:
                tc.assertEqual(payload.hex(), e["hex"])
        else:
            tc.assertEqual([f"{t.param0_bits:016x}", f"{t.param1_bits:016x}"], e["params"])
            payload = decode(t.name).astype("<f4").tobytes()
            if "values" in e:
                bits = [f"{x:08x}" for x in np.frombuffer(payload, dtype="<u4").tolist()]
                tc.assertEqual(bits, e["values"], t.name)
        tc.assertEqual((len(payload), _crc_hex(payload)), (e["bytes"], e["crc32"]), t.name)
    tc.assertEqual([(a.name, a.size, _crc_hex(asset(a.name))) for a in q.assets],
                   [(a["name"], a["size"], a["crc32"]) for a in exp["assets"]])
    for a, e in zip(q.assets, exp["assets"]):
        if "hex" in e:
            tc.assertEqual(asset(a.name).hex(), e["hex"])


def rejection(open_fn, path):
    """(stage, kind, file) of the reader's rejection of ``path``, or ("accepted", None, None)."""
    try:
        m = open_fn(path)
    except qr.QinsError as e:
        return ("open", e.kind, e.file)
    try:
        m.verify()
    except qr.QinsError as e:
        return ("verify", e.kind, e.file)
    finally:
        m.close()
    return ("accepted", None, None)


class TestConformanceSuite(unittest.TestCase):
    """§20.2.1 items 1 and 2. The suite is part of the repository: a missing one fails."""

    @classmethod
    def setUpClass(cls):
        for d in ("valid", "invalid"):
            if not os.path.isdir(os.path.join(SUITE, d)):
                raise AssertionError(f"{os.path.join(SUITE, d)} is missing")

    def test_valid_goldens(self):
        vdir = os.path.join(SUITE, "valid")
        names = sorted(f for f in os.listdir(vdir) if f.endswith(".expected.json"))
        self.assertTrue(names)
        for en in names:
            with open(os.path.join(vdir, en), encoding="utf-8") as fh:
                exp = json.load(fh)
            self.assertEqual(exp["schema"], "qins-conformance-expected/1")
            path = os.path.join(vdir, exp["file"])
            with self.subTest(file=exp["file"]):
                with open(path, "rb") as fh:
                    data = fh.read()
                self.assertEqual((len(data), _crc_hex(data)),
                                 (exp["file_size"], exp["file_crc32"]))
                with qr.QinsFile(path) as q:
                    q.verify()
                    check_against_expected(self, q, exp)
                    # §7: writers write the metadata in canonical form, which is what Python's
                    # json.dumps writes (reader_leniency is patched on purpose)
                    if exp["file"] != "reader_leniency.qins":
                        self.assertEqual(q.metadata_bytes(), canonical_metadata(q.metadata))
                # the model API opens a file that is not a shard as itself (§21.3)
                with qr.open_model(path) as m:
                    self.assertFalse(m.is_set)
                    m.verify()
                    check_against_expected(self, m.file(1), exp, decode=m.decode,
                                           raw=m.raw_bytes, asset=m.asset_bytes)

    def test_negative_goldens(self):
        idir = os.path.join(SUITE, "invalid")
        with open(os.path.join(idir, "manifest.json"), encoding="utf-8") as fh:
            manifest = json.load(fh)
        self.assertEqual(manifest["schema"], "qins-conformance-invalid/1")
        self.assertTrue(manifest["cases"])
        for case in manifest["cases"]:
            path = os.path.join(idir, case["file"])
            with self.subTest(file=case["file"]):
                want = (case["stage"], case["kind"], path)
                self.assertEqual(rejection(qr.QinsFile, path), want, case["description"])
                self.assertEqual(rejection(qr.open_model, path), want, case["description"])


SETS = os.path.join(SUITE, "sets")


class TestConformanceSets(unittest.TestCase):
    """§20.5: every valid set opened from its index and from each shard, every invalid set
    rejected with the manifest's kind, at its stage, naming its file."""

    @classmethod
    def setUpClass(cls):
        # part of the repository since spec 1.1: a missing manifest fails (FileNotFoundError)
        with open(os.path.join(SETS, "manifest.json"), encoding="utf-8") as fh:
            cls.manifest = json.load(fh)

    def test_manifest(self):
        self.assertEqual(self.manifest["schema"], "qins-conformance-sets/1")
        self.assertTrue(self.manifest["valid"])
        self.assertTrue(self.manifest["invalid"])
        kinds = {c["kind"] for c in self.manifest["invalid"]}
        self.assertEqual(set(qr.SET_ERROR_KINDS) - kinds, set())  # §20.1: every §21.6 kind

    def test_valid_sets(self):
        for case in self.manifest["valid"]:
            with open(os.path.join(SETS, case["expected"]), encoding="utf-8") as fh:
                exp = json.load(fh)
            self.assertEqual(exp["schema"], "qins-conformance-set-expected/1")
            d = os.path.join(SETS, case["dir"])
            self.assertEqual(sorted(os.listdir(d)), sorted([case["index"]] + case["shards"]))
            # §21.2: the index in canonical form, what Python's json.dumps writes
            with open(os.path.join(d, case["index"]), "rb") as fh:
                text = fh.read()
            self.assertEqual(text, canonical_index(json.loads(text)), case["index"])
            # §21.1: the writer's file names (writer-only; the suite's writer follows it)
            n = len(case["shards"])
            stem = case["index"][: -len(".qins.index.json")]
            self.assertEqual(case["shards"],
                             [f"{stem}-{k:05d}-of-{n:05d}.qins" for k in range(1, n + 1)])
            want = [t["name"] for s in exp["shards"] for t in s["tensors"]]
            for start in [case["index"]] + case["shards"]:
                with self.subTest(set=case["dir"], start=start):
                    with qr.open_model(os.path.join(d, start)) as m:
                        m.verify()
                        self.assertTrue(m.is_set)
                        self.assertEqual(m.index.name, exp["index"])
                        self.assertEqual(m.set_id, exp["set_id"])
                        self.assertEqual(list(m.version), exp["format_version"])
                        self.assertEqual([st.file for st in m.shards], case["shards"])
                        self.assertEqual([t.name for t in m.tensors], want)
                        self.assertEqual(len(m.shards), len(exp["shards"]))
                        for st, e in zip(m.shards, exp["shards"]):
                            self.assertEqual(st.file, e["file"])
                            check_against_expected(self, m.file(st.k), e, decode=m.decode,
                                                   raw=m.raw_bytes, asset=m.asset_bytes)
                        # the set's assets and metadata are shard 1's; every tensor by name
                        self.assertEqual(m.metadata, exp["shards"][0]["metadata"])
                        self.assertEqual([a.name for a in m.assets],
                                         [a["name"] for a in exp["shards"][0]["assets"]])
                        for k, e in enumerate(exp["shards"], 1):
                            for t in e["tensors"]:
                                self.assertEqual(m.shard_of(t["name"]), k)
                                self.assertEqual(m.tensor(t["name"]).name, t["name"])

    def test_invalid_sets(self):
        for case in self.manifest["invalid"]:
            d = os.path.join(SETS, case["dir"])
            with self.subTest(set=case["dir"], open=case["open"]):
                stage, kind, file = rejection(qr.open_model, os.path.join(d, case["open"]))
                got = (stage, kind, file and os.path.basename(file))
                self.assertEqual(got, (case["stage"], case["kind"], case["file"]),
                                 case["description"])
                if file is not None:
                    self.assertEqual(os.path.dirname(file), d)


class TestFuzz(TmpMixin, unittest.TestCase):
    """Random damage must only ever produce QinsError (never another exception)."""

    def test_random_mutations(self):
        self.mutate(base_file(), 1234)

    def test_random_mutations_lloyd(self):
        self.mutate(lloyd_file(), 4321)

    def test_random_index_damage(self):
        # any damage to an index, or a shard swapped for another file, gives a QinsError
        s = set_fixture(self.tmp)
        with open(s.index_path, "rb") as f:
            good = f.read()
        r = np.random.default_rng(77)
        kinds = set()
        for it in range(400):
            buf = bytearray(good)
            mode = it % 3
            if mode == 0:    # a few bytes changed
                for _ in range(int(r.integers(1, 4))):
                    buf[int(r.integers(0, len(buf)))] = int(r.integers(0, 256))
            elif mode == 1:  # a printable character changed: more often still JSON
                i = int(r.integers(0, len(buf)))
                alphabet = b'0123456789abcdef"{}[],: -.eE\\'
                buf[i] = alphabet[int(r.integers(0, len(alphabet)))]
            else:            # cut
                buf = buf[: int(r.integers(0, len(buf)))]
            s.write_index(text=bytes(buf))
            for p in (s.index_path, s.path(int(r.integers(1, 4)))):
                try:
                    with qr.open_model(p) as m:
                        m.verify()
                except qr.QinsError as e:
                    self.assertIn(e.kind, qr.ERROR_KINDS)
                    self.assertIsNotNone(e.file)
                    kinds.add(e.kind)
        self.assertGreaterEqual(len(kinds), 3)

    def mutate(self, b, seed):
        r = np.random.default_rng(seed)
        hs = b.header_size
        kinds = set()
        for it in range(600):
            buf = bytearray(b.data)
            mode = it % 4
            if mode == 0:    # header bytes, CRC fixed so the damage reaches later steps
                for _ in range(int(r.integers(1, 4))):
                    buf[int(r.integers(0, hs - 4))] = int(r.integers(0, 256))
                fix_header_crc(buf, hs)
            elif mode == 1:  # a record field set to an extreme value, CRC fixed
                off = int(r.integers(12, hs - 12))
                fmt = ["<B", "<H", "<I", "<Q"][int(r.integers(0, 4))]
                size = struct.calcsize(fmt)
                off = min(off, hs - 4 - size)
                val = [0, 1, (1 << (8 * size)) - 1, 1 << (8 * size - 1)][int(r.integers(0, 4))]
                struct.pack_into(fmt, buf, off, val)
                fix_header_crc(buf, hs)
            elif mode == 2:  # data bytes
                for _ in range(int(r.integers(1, 4))):
                    buf[int(r.integers(hs, len(buf)))] ^= 1 << int(r.integers(0, 8))
            else:            # truncation / extension
                n = int(r.integers(0, len(buf) + 100))
                buf = buf[:n] if n <= len(buf) else buf + bytes(n - len(buf))
            p = self.write(buf)
            try:
                with qr.QinsFile(p) as q:
                    q.verify()
                    for t in q.tensors:
                        if t.encoded:
                            q.decode(t)
                        else:
                            q.raw_bytes(t)
                            q.raw_array(t)
                    q.dump()
            except qr.QinsError as e:
                self.assertIn(e.kind, qr.ERROR_KINDS)
                kinds.add(e.kind)
            os.unlink(p)
        self.assertGreater(len(kinds), 10)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

class TestCli(TmpMixin, unittest.TestCase):
    def run_cli(self, *args):
        return subprocess.run([sys.executable, READER, *args], capture_output=True, text=True)

    def test_verify_ok_and_error(self):
        b = base_file()
        p = self.write(b.data)
        r = self.run_cli("verify", p)
        self.assertEqual(r.returncode, 0, r.stderr)
        buf = bytearray(b.data)
        buf[b.tensors[0]["sections"][0][0]] ^= 1
        r = self.run_cli("verify", self.write(buf))
        self.assertEqual(r.returncode, 1)
        self.assertTrue(r.stderr.startswith("error: DataChecksum: "), r.stderr)
        self.assertIn("tensor enc.log data", r.stderr)
        r = self.run_cli("verify", self.write(b"\x89QINS"))
        self.assertEqual(r.returncode, 1)
        self.assertTrue(r.stderr.startswith("error: Truncated: "), r.stderr)

    def test_list(self):
        r = self.run_cli("list", self.write(base_file().data))
        self.assertEqual(r.returncode, 0, r.stderr)
        for s in ("enc.log", "raw.i32", "enc.lin", "config.json", "sub/vocab.txt",
                  "qins.writer", "row_scales", "linear"):
            self.assertIn(s, r.stdout)

    def test_dump(self):
        b = base_file()
        r = self.run_cli("dump", self.write(b.data))
        self.assertEqual(r.returncode, 0, r.stderr)
        d = json.loads(r.stdout)
        self.assertEqual(set(d), {"version", "alignment", "tensors", "assets", "metadata"})
        self.assertEqual(d["version"], [1, 0])
        self.assertEqual(d["alignment"], 64)
        self.assertEqual(d["metadata"], {"qins.writer": "test"})
        t0 = d["tensors"][0]
        self.assertEqual(set(t0), {"name", "dtype", "shape", "codec", "row_scales", "param0",
                                   "param1", "decoded_crc32"})
        self.assertEqual(t0["name"], "enc.log")
        self.assertEqual(t0["shape"], [3, 5])
        self.assertEqual(t0["codec"], "log")
        self.assertTrue(t0["row_scales"])
        self.assertEqual(t0["param0"], b.tensors[0]["p0"])
        self.assertEqual(t0["decoded_crc32"],
                         zlib.crc32(expected_decode_bytes(b.tensors[0])))
        t1 = d["tensors"][1]
        self.assertEqual((t1["codec"], t1["dtype"], t1["row_scales"]), ("raw", "I32", False))
        self.assertEqual(t1["decoded_crc32"],
                         zlib.crc32(np.arange(-3, 3, dtype="<i4").tobytes()))
        self.assertEqual(d["assets"][1], {"name": "sub/vocab.txt", "size": 6,
                                          "crc32": zlib.crc32(b"a\nb\nc\n")})

    def test_decode(self):
        b = base_file()
        out = os.path.join(self.tmp, "out")
        r = self.run_cli("decode", self.write(b.data), out)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(out, "manifest.json"), encoding="utf-8") as f:
            man = json.load(f)["tensors"]
        self.assertEqual([m["name"] for m in man], ["enc.log", "raw.i32", "enc.lin"])
        for m, rec in zip(man, b.tensors):
            with open(os.path.join(out, m["file"]), "rb") as f:
                payload = f.read()
            self.assertEqual(len(payload), m["byte_length"])
            self.assertEqual(zlib.crc32(payload), m["crc32"])
            if rec["codec"] == "raw":
                self.assertEqual(m["kind"], "raw")
                self.assertEqual(payload, rec["spec"]["raw"])
            else:
                self.assertEqual(m["kind"], "encoded")
                self.assertEqual(payload, expected_decode_bytes(rec))
        self.assertEqual(man[2]["dtype"], "F16")
        self.assertEqual(man[0]["shape"], [3, 5])

    def test_sets(self):
        s = set_fixture(self.tmp)
        for p in (s.index_path, s.path(2)):
            r = self.run_cli("verify", p)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn(f"QINS set 1.1 ({s.set_id}), 3 shards, 5 tensors, 2 assets", r.stdout)
            r = self.run_cli("list", p)
            self.assertEqual(r.returncode, 0, r.stderr)
            for word in s.files + ["embed", "layer.0.b", "head", "shard 3", "config.json",
                                   "qins.set.id = " + s.set_id]:
                self.assertIn(word, r.stdout)
            r = self.run_cli("dump", p)
            self.assertEqual(r.returncode, 0, r.stderr)
            d = json.loads(r.stdout)
            self.assertEqual([t["name"] for t in d["tensors"]],
                             ["embed", "norm", "layer.0.w", "layer.0.b", "head"])
            self.assertEqual(d["set"]["set_id"], s.set_id)
            self.assertEqual([x["file"] for x in d["set"]["shards"]], s.files)
            self.assertEqual(d["metadata"], s.shard_metadata(1))
            self.assertEqual([a["name"] for a in d["assets"]],
                             ["config.json", "1_Pooling/config.json"])
            out = os.path.join(self.tmp, "out" + os.path.basename(p))
            r = self.run_cli("decode", p, out)
            self.assertEqual(r.returncode, 0, r.stderr)
            with open(os.path.join(out, "manifest.json"), encoding="utf-8") as f:
                man = json.load(f)["tensors"]
            self.assertEqual([x["name"] for x in man],
                             ["embed", "norm", "layer.0.w", "layer.0.b", "head"])
            with open(os.path.join(out, man[4]["file"]), "rb") as f:
                self.assertEqual(f.read(), expected_decode_bytes(s.built[2].tensors[0]))
        # an error names its kind and its file
        os.unlink(s.path(3))
        r = self.run_cli("verify", s.path(1))
        self.assertEqual(r.returncode, 1)
        self.assertTrue(r.stderr.startswith(f"error: MissingShard: {s.path(3)}: "), r.stderr)
        r = self.run_cli("list", s.index_path)
        self.assertEqual(r.returncode, 1)
        self.assertIn("MissingShard", r.stderr)
        # the file API view of a shard is not reachable from the CLI: a shard is its set
        r = self.run_cli("dump", s.path(1))
        self.assertEqual(r.returncode, 1)

    def test_decode_names_with_slashes(self):
        b = build_qins([{"name": "a/b", "dtype": "U8", "shape": [1], "raw": b"\1"},
                        {"name": "a%2Fb", "dtype": "U8", "shape": [1], "raw": b"\2"},
                        {"name": "../up", "dtype": "U8", "shape": [1], "raw": b"\3"}])
        out = os.path.join(self.tmp, "out")
        r = self.run_cli("decode", self.write(b.data), out)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(out, "manifest.json"), encoding="utf-8") as f:
            man = json.load(f)["tensors"]
        files = [m["file"] for m in man]
        self.assertEqual(len(set(files)), 3)
        for fn in files:
            self.assertNotIn("/", fn)
            self.assertTrue(os.path.isfile(os.path.join(out, fn)))
        self.assertEqual(sorted(os.listdir(out)), sorted(files + ["manifest.json"]))


if __name__ == "__main__":
    unittest.main()

#!/usr/bin/env python3
"""An independent reader for QINS 1.1 files and sharded sets, written from spec/ alone.

Depends only on the Python 3.11 standard library and numpy.

Library use::

    with open_model("model.qins") as m:    # a single file, a set's index, or any shard of a set
        m.verify()                          # §14 for every file (§21.5: shard by shard)
        for t in m.tensors:                 # the set's order (§21.4)
            if t.encoded:
                w = m.decode(t.name)        # float32 array of t.shape, §11.4 bit-exact
            else:
                b = m.raw_bytes(t.name)     # the raw bytes, dtype t.dtype
                a = m.raw_array(t.name)     # numpy view where numpy has the dtype
                v = m.raw_values(t.name)    # numbers, for every dtype (§13.3, §13.4)
        m.metadata                          # dict of str -> str (§7; a set's: shard 1's)
        m.asset_bytes("config.json")        # a set's assets are shard 1's

    with QinsFile("model-00001-of-00002.qins") as q:   # the file API (§17): any file, a
        q.verify()                                      # shard included, as one file

Command line (FILE is a .qins file, a set's index, or any shard of a set; a shard is opened as
the set it belongs to, §21.3)::

    qins_reader.py list FILE
    qins_reader.py verify FILE
    qins_reader.py decode FILE OUT_DIR [--no-verify]
    qins_reader.py dump FILE [--no-verify]

Every validation failure raises a subclass of :class:`QinsError`; ``err.kind`` is the error
kind name of spec §17 or §21.6 (e.g. ``"BadMagic"``, ``"MissingShard"``), ``err.file`` the path
of the file it concerns (the file, a shard, or a set's index) and the message says what is
wrong. Opening a file reports the first failure in the order of §17 steps 1-9; ``verify()`` the
first in the order of §14 (per used section: the padding before it, then its CRC; then per
encoded tensor: its sign bits, then its row scales). Opening a set follows §21.5.

Codecs (§12): raw (0), log (1), linear (2), lloyd (3), lloyd-rows (4). The reader checks each
codec's parameter constraint (BadParams) and decodes every codec by the one rule of §11.4; it
checks none of the writer-only rules of §18.1 (the "row scales" column of §12, a sign bit set on
code 0, which decodes to -0.0, the shape of a table beyond §10, ...).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import mmap
import os
import re
import struct
import sys
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable

import numpy as np

__all__ = [
    "QinsError",
    "QinsFile",
    "QinsModel",
    "SetIndex",
    "ShardEntry",
    "TensorInfo",
    "AssetInfo",
    "Section",
    "ERROR_KINDS",
    "FILE_ERROR_KINDS",
    "SET_ERROR_KINDS",
    "DTYPES",
    "CODECS",
    "open_qins",
    "open_model",
    "read_index",
    "unpack_elements",
    "small_float_values",
    "main",
]

# --------------------------------------------------------------------------------------------
# Errors (§17, §21.6)
# --------------------------------------------------------------------------------------------

#: The kinds of §17 (opening a file) and §14 (verifying it), in the order of §17's table.
FILE_ERROR_KINDS = (
    "Truncated",
    "BadMagic",
    "UnsupportedVersion",
    "UnsupportedFeature",
    "LimitExceeded",
    "HeaderSizeMismatch",
    "TrailingBytes",
    "HeaderChecksum",
    "ReservedNonZero",
    "BadAlignment",
    "BadName",
    "DuplicateName",
    "UnknownDtype",
    "BadShape",
    "UnknownCodec",
    "BadDtypeForCodec",
    "FlagMismatch",
    "BadParams",
    "BadLutIndex",
    "SectionSize",
    "Misaligned",
    "OutOfBounds",
    "Overlap",
    "Gap",
    "BadMetadata",
    "BadLut",
    "DataChecksum",
    "NonZeroPadding",
    "StraySignBits",
    "BadScale",
)

#: The kinds that tie the files of a set together (§21.6), in the order of its table.
SET_ERROR_KINDS = (
    "BadIndex",
    "MissingIndex",
    "MissingShard",
    "ForeignShard",
    "MisplacedShard",
    "IndexMismatch",
    "MisplacedAsset",
    "DuplicateTensor",
    "UnlistedShard",
)

ERROR_KINDS = FILE_ERROR_KINDS + SET_ERROR_KINDS


class QinsError(Exception):
    """Base class of every error this reader reports. ``kind`` is the §17 / §21.6 kind name;
    ``file`` the path of the file the error concerns (§21.5: "every error names the file it
    concerns"), or None where no file is involved."""

    kind = "QinsError"

    def __init__(self, message: str, file: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = file

    def __str__(self) -> str:  # "Kind: FILE: message", as the CLI prints it after "error: "
        if self.file is not None:
            return f"{self.kind}: {self.file}: {self.message}"
        return f"{self.kind}: {self.message}"


#: kind name -> exception class (a subclass of QinsError with that ``kind``)
ERRORS: dict[str, type[QinsError]] = {}
for _kind in ERROR_KINDS:
    _cls = type(_kind + "Error", (QinsError,), {"kind": _kind, "__module__": __name__})
    ERRORS[_kind] = _cls
    globals()[_kind + "Error"] = _cls
    __all__.append(_kind + "Error")
del _kind, _cls


def _fail(kind: str, message: str, file: str | None = None) -> "None":
    raise ERRORS[kind](message, file)


class _Naming:
    """``with _Naming(path):`` gives every QinsError raised inside, that names no file yet,
    the file ``path``."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if isinstance(exc, QinsError) and exc.file is None:
            exc.file = self.path
        return False


# --------------------------------------------------------------------------------------------
# Constants (§3-§5, §12, §13, §16)
# --------------------------------------------------------------------------------------------

MAGIC = b"\x89QINS\r\n\x1a"
PREAMBLE_SIZE = 96
TENSOR_RECORD_SIZE = 176
ASSET_RECORD_SIZE = 32
SECTION_SIZE = 24
U64_MAX = (1 << 64) - 1

MAX_HEADER_SIZE = 268435456
MAX_TENSOR_COUNT = 1048576
MAX_ASSET_COUNT = 65536
MAX_METADATA_SIZE = 1048576
MAX_NAME_LEN = 4096
MAX_RANK = 8
MIN_ALIGNMENT = 64
MAX_ALIGNMENT = 1048576

FLAG_ROW_SCALES = 1

#: dtype code -> (name, bits)  (§13.1)
DTYPES: dict[int, tuple[str, int]] = {
    1: ("BOOL", 8),
    2: ("U8", 8),
    3: ("I8", 8),
    4: ("I16", 16),
    5: ("U16", 16),
    6: ("I32", 32),
    7: ("U32", 32),
    8: ("I64", 64),
    9: ("U64", 64),
    10: ("F16", 16),
    11: ("BF16", 16),
    12: ("F32", 32),
    13: ("F64", 64),
    14: ("F8_E5M2", 8),
    15: ("F8_E4M3", 8),
    16: ("F8_E8M0", 8),
    17: ("F8_E4M3FNUZ", 8),
    18: ("F8_E5M2FNUZ", 8),
    19: ("F4", 4),
    20: ("F6_E2M3", 6),
    21: ("F6_E3M2", 6),
    22: ("C64", 64),
}
DTYPE_CODES = {name: code for code, (name, _bits) in DTYPES.items()}
ENCODABLE_DTYPES = frozenset({10, 11, 12})  # F16, BF16, F32 (§13.2)

#: codec id -> name (§12). Ids 3 and 4 are part of 1.0 (§12: "added before version 1.0 was
#: released"). A reader never needs to know which codec built a table (§11.4); it only checks
#: each codec's parameter constraint (§12.1-§12.4). The "row scales" column of §12 (lloyd: MUST
#: NOT, lloyd-rows: MUST) binds writers only: "A reader does not check this column".
CODECS: dict[int, str] = {0: "raw", 1: "log", 2: "linear", 3: "lloyd", 4: "lloyd-rows"}
CODEC_IDS = {name: cid for cid, name in CODECS.items()}

#: numpy dtype for raw tensors, where numpy has one. BF16 is given as its uint16 bit patterns
#: and the 8-bit float formats as their uint8 bit patterns; F4/F6 have no array view.
NUMPY_DTYPES: dict[str, str] = {
    "BOOL": "?",
    "U8": "u1",
    "I8": "i1",
    "I16": "<i2",
    "U16": "<u2",
    "I32": "<i4",
    "U32": "<u4",
    "I64": "<i8",
    "U64": "<u8",
    "F16": "<f2",
    "BF16": "<u2",
    "F32": "<f4",
    "F64": "<f8",
    "F8_E5M2": "u1",
    "F8_E4M3": "u1",
    "F8_E8M0": "u1",
    "F8_E4M3FNUZ": "u1",
    "F8_E5M2FNUZ": "u1",
    "C64": "<c8",
}

#: The small floating-point formats of §13.3: dtype -> (sign bits S, exponent bits E, mantissa
#: bits M, bias B, special encodings). Specials: "inf" (F8_E5M2: e all ones is infinity when
#: m = 0, else NaN), "fn" (F8_E4M3: S.1111.111 is NaN, other e = 15 values normal), "fnuz"
#: (0x80 is the only NaN, no -0, no infinities), "e8m0" (no sign, mantissa, zero or
#: subnormals; 0xFF is NaN), "none" (every encoding is a number).
SMALL_FLOATS: dict[str, tuple[int, int, int, int, str]] = {
    "F8_E5M2": (1, 5, 2, 15, "inf"),
    "F8_E4M3": (1, 4, 3, 7, "fn"),
    "F8_E4M3FNUZ": (1, 4, 3, 8, "fnuz"),
    "F8_E5M2FNUZ": (1, 5, 2, 16, "fnuz"),
    "F8_E8M0": (0, 8, 0, 127, "e8m0"),
    "F6_E2M3": (1, 2, 3, 1, "none"),
    "F6_E3M2": (1, 3, 2, 3, "none"),
    "F4": (1, 2, 1, 1, "none"),
}


def _small_float_table(dtype: str) -> np.ndarray:
    """The value (f64) of every bit pattern of a small float format, by the rule of §13.3:
    e > 0: (-1)^S 2^(e-B) (1 + m/2^M); e = 0: (-1)^S 2^(1-B) (m/2^M); then the specials."""
    S, E, M, B, special = SMALL_FLOATS[dtype]
    bits = S + E + M
    out = np.empty(1 << bits, dtype=np.float64)
    for code in range(1 << bits):
        m = code & ((1 << M) - 1)
        e = (code >> M) & ((1 << E) - 1)
        sign = -1.0 if S and (code >> (E + M)) & 1 else 1.0
        if special == "e8m0":
            v = math.ldexp(1.0, e - B)
        elif e > 0:
            v = sign * math.ldexp(1.0 + m / (1 << M), e - B)
        else:
            v = sign * math.ldexp(m / (1 << M), 1 - B)
        if special == "inf" and e == (1 << E) - 1:
            v = sign * math.inf if m == 0 else math.nan
        elif special == "fn" and e == (1 << E) - 1 and m == (1 << M) - 1:
            v = math.nan
        elif special == "fnuz" and code == 1 << (bits - 1):
            v = math.nan
        elif special == "e8m0" and code == 0xFF:
            v = math.nan
        out[code] = v
    out.setflags(write=False)
    return out


_SMALL_FLOAT_TABLES: dict[str, np.ndarray] = {}


def unpack_elements(data, bits: int, count: int) -> np.ndarray:
    """The ``count`` elements of ``bits`` bits each (``bits`` <= 8) packed in ``data`` as
    §13.4 says: one little-endian bit stream, bit j of the stream is bit j mod 8 of byte j div 8,
    element i occupies stream bits i*bits .. i*bits + bits - 1, least significant bit first.
    Returns uint8 bit fields."""
    if not 1 <= bits <= 8:
        raise ValueError(f"unpack_elements: {bits} bits per element")
    raw = np.frombuffer(bytes(data), dtype=np.uint8)
    if count * bits > 8 * raw.size:
        raise ValueError(f"{count} elements of {bits} bits need {count * bits} bits; the data "
                         f"has {8 * raw.size}")
    if bits == 8:
        return raw[:count].copy()
    stream = np.unpackbits(raw, bitorder="little", count=count * bits)
    fields = stream.reshape(count, bits).astype(np.uint8)
    weights = (np.uint8(1) << np.arange(bits, dtype=np.uint8))
    return (fields * weights).sum(axis=1, dtype=np.uint16).astype(np.uint8)


def small_float_values(fields: np.ndarray, dtype: str) -> np.ndarray:
    """The values (f64, exact) of bit fields of one of the small float formats of §13.3."""
    table = _SMALL_FLOAT_TABLES.get(dtype)
    if table is None:
        table = _SMALL_FLOAT_TABLES[dtype] = _small_float_table(dtype)
    return table[np.asarray(fields, dtype=np.uint8)]


# Fixed layouts. Params are read as u64 bit patterns (so NaN payloads and -0.0 are seen exactly).
_PREAMBLE = struct.Struct("<8sHHIQQQIIIIIIQQIIQ")
_SECTION_FMT = "QQII"
_TENSOR = struct.Struct("<IIBBHI8QQQII" + _SECTION_FMT * 3)
_ASSET = struct.Struct("<II" + _SECTION_FMT)
assert _PREAMBLE.size == PREAMBLE_SIZE
assert _TENSOR.size == TENSOR_RECORD_SIZE
assert _ASSET.size == ASSET_RECORD_SIZE


def _bits_to_f64(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


def align_up(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def crc32(data) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


# --------------------------------------------------------------------------------------------
# Parsed records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    offset: int
    length: int
    crc: int
    reserved: int = 0

    @property
    def end(self) -> int:
        return self.offset + self.length

    @property
    def is_zero(self) -> bool:
        return self.offset == 0 and self.length == 0 and self.crc == 0 and self.reserved == 0

    def as_dict(self) -> dict:
        return {"offset": self.offset, "length": self.length, "crc32": self.crc}


@dataclass
class TensorInfo:
    index: int
    name: str
    dtype_code: int
    rank: int
    shape: tuple
    codec_id: int
    flags: int
    param0: float
    param1: float
    param0_bits: int
    param1_bits: int
    lut_index: int
    data: Section
    signs: Section
    scales: Section
    numel: int = 0
    rows: int = 0
    row_len: int = 1
    #: the shard (from 1) that holds the tensor, when it was opened as part of a set (§21)
    shard: int = 1

    @property
    def dtype(self) -> str:
        return DTYPES[self.dtype_code][0]

    @property
    def codec(self) -> str:
        return CODECS[self.codec_id]

    @property
    def encoded(self) -> bool:
        return self.codec_id != 0

    @property
    def row_scales(self) -> bool:
        return bool(self.flags & FLAG_ROW_SCALES)

    def used_sections(self) -> list[tuple[str, Section]]:
        """The tensor's used sections, in canonical order (§9.2), with their §14 labels."""
        out = [(f"tensor {self.name} data", self.data)]
        if self.encoded:
            out.append((f"tensor {self.name} signs", self.signs))
            if self.row_scales:
                out.append((f"tensor {self.name} scales", self.scales))
        return out

    def section_sizes(self) -> dict:
        d = {"data": self.data.length}
        if self.encoded:
            d["signs"] = self.signs.length
            if self.row_scales:
                d["scales"] = self.scales.length
        return d


@dataclass
class AssetInfo:
    index: int
    name: str
    data: Section

    @property
    def size(self) -> int:
        return self.data.length


# --------------------------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------------------------


class QinsFile:
    """A validated, memory-mapped .qins file. Opening runs spec §17 steps 1-9 in order."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._mm: mmap.mmap | None = None
        self._buf: np.ndarray | None = None
        self._file = open(self.path, "rb")
        try:
            with _Naming(self.path):
                self._open()
        except BaseException:
            self.close()
            raise

    # -- context management ------------------------------------------------------------------

    def __enter__(self) -> "QinsFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._buf = None
        self._luts = None
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                # numpy views handed out by raw_array() still reference the map; it is
                # unmapped when the last of them is garbage-collected.
                pass
            self._mm = None
        if self._file is not None:
            self._file.close()
            self._file = None

    # -- opening (§17) -----------------------------------------------------------------------

    def _open(self) -> None:
        actual_size = os.fstat(self._file.fileno()).st_size

        # Step 1: size, magic, version, features.
        if actual_size < PREAMBLE_SIZE:
            _fail("Truncated", f"the file is {actual_size} bytes, shorter than the "
                               f"{PREAMBLE_SIZE}-byte preamble (§3)")
        self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        mm = self._mm
        self.actual_size = actual_size
        (magic, vmaj, vmin, alignment, req_features, file_size, header_size, tensor_count,
         asset_count, lut_count, strings_size, metadata_size, reserved60,
         lut_off, lut_len, lut_crc, lut_res, reserved88) = _PREAMBLE.unpack_from(mm, 0)
        if magic != MAGIC:
            _fail("BadMagic", f"magic is {magic.hex(' ')}, expected {MAGIC.hex(' ')} (§3)")
        if vmaj != 1:
            _fail("UnsupportedVersion",
                  f"unsupported format version {vmaj}.{vmin}: this reader implements 1.x "
                  f"(§15)")
        if req_features != 0:
            _fail("UnsupportedFeature",
                  f"required_features is 0x{req_features:016x}; this reader knows no feature "
                  f"bits (unknown bits 0x{req_features:016x}) (§3, §15)")

        # Step 2: limits, then header_size against the counts.
        if tensor_count > MAX_TENSOR_COUNT:
            _fail("LimitExceeded",
                  f"tensor_count {tensor_count} exceeds the limit {MAX_TENSOR_COUNT} (§16)")
        if asset_count > MAX_ASSET_COUNT:
            _fail("LimitExceeded",
                  f"asset_count {asset_count} exceeds the limit {MAX_ASSET_COUNT} (§16)")
        if metadata_size > MAX_METADATA_SIZE:
            _fail("LimitExceeded",
                  f"metadata_size {metadata_size} exceeds the limit {MAX_METADATA_SIZE} (§16)")
        if header_size > MAX_HEADER_SIZE:
            _fail("LimitExceeded",
                  f"header_size {header_size} exceeds the limit {MAX_HEADER_SIZE} (§16)")
        expected_hs = (PREAMBLE_SIZE + TENSOR_RECORD_SIZE * tensor_count
                       + ASSET_RECORD_SIZE * asset_count + strings_size + metadata_size + 4)
        if header_size != expected_hs:
            _fail("HeaderSizeMismatch",
                  f"header_size is {header_size} but the counts imply {expected_hs} "
                  f"(96 + 176*{tensor_count} tensors + 32*{asset_count} assets + "
                  f"{strings_size} string bytes + {metadata_size} metadata bytes + 4) (§3)")

        # Step 3: file_size against the real length; header_size <= file_size.
        if actual_size < file_size:
            _fail("Truncated", f"the file is {actual_size} bytes but file_size says "
                               f"{file_size} (§9.3)")
        if actual_size > file_size:
            _fail("TrailingBytes", f"the file is {actual_size} bytes but file_size says "
                                   f"{file_size}: {actual_size - file_size} bytes after "
                                   f"file_size (§9.3)")
        if header_size > file_size:
            _fail("Truncated", f"header_size {header_size} exceeds file_size {file_size}: the "
                               f"header block would end past the end of the file (§3, §17)")

        # Step 4: header CRC.
        stored_crc = struct.unpack_from("<I", mm, header_size - 4)[0]
        with memoryview(mm) as mv:
            computed_crc = crc32(mv[: header_size - 4])
        if stored_crc != computed_crc:
            _fail("HeaderChecksum",
                  f"header CRC at offset {header_size - 4} is 0x{stored_crc:08x}, computed "
                  f"0x{computed_crc:08x} over bytes [0, {header_size - 4}) (§8)")

        self.version = (vmaj, vmin)
        self.header_crc = stored_crc
        self.alignment = alignment
        self.required_features = req_features
        self.file_size = file_size
        self.header_size = header_size
        self.tensor_count = tensor_count
        self.asset_count = asset_count
        self.lut_count = lut_count
        self.strings_size = strings_size
        self.metadata_size = metadata_size
        self.lut_table = Section(lut_off, lut_len, lut_crc, lut_res)
        self._strings_off = (PREAMBLE_SIZE + TENSOR_RECORD_SIZE * tensor_count
                             + ASSET_RECORD_SIZE * asset_count)
        self._metadata_off = self._strings_off + strings_size

        # Step 5: the preamble's reserved fields and lut_table.reserved, then alignment. (The
        # records' reserved fields are checked with their record, in steps 6 and 7.)
        self._check_preamble_reserved(reserved60, lut_res, reserved88)
        if not (MIN_ALIGNMENT <= alignment <= MAX_ALIGNMENT) or alignment & (alignment - 1):
            _fail("BadAlignment", f"alignment is {alignment}; it must be a power of two in "
                                  f"[{MIN_ALIGNMENT}, {MAX_ALIGNMENT}] (§3)")

        # The counts are within §16 and the header is inside the file, so each pass over the
        # records below does a fixed amount of work per record, bounded by the file's size.
        a_base = PREAMBLE_SIZE + TENSOR_RECORD_SIZE * tensor_count
        t_raw = (_TENSOR.unpack_from(mm, PREAMBLE_SIZE + TENSOR_RECORD_SIZE * k)
                 for k in range(tensor_count))
        a_raw = (_ASSET.unpack_from(mm, a_base + ASSET_RECORD_SIZE * k)
                 for k in range(asset_count))

        # Step 6: tensor records, each through the checks of §17 step 6 in order.
        self.tensors: list[TensorInfo] = []
        self._tensor_by_name: dict[str, TensorInfo] = {}
        n_encoded = 0
        for k, rec in enumerate(t_raw):
            t = self._parse_tensor(k, rec, n_encoded)
            if t.encoded:
                n_encoded += 1
            self.tensors.append(t)
            self._tensor_by_name[t.name] = t

        # Step 7: asset records: name range, name (with the path rules of §5), uniqueness,
        # data.reserved.
        self.assets: list[AssetInfo] = []
        self._asset_by_name: dict[str, AssetInfo] = {}
        for k, rec in enumerate(a_raw):
            name_off, name_len = rec[0], rec[1]
            name = self._read_name(f"asset record {k}", name_off, name_len)
            _check_asset_path(k, name)
            if name in self._asset_by_name:
                _fail("DuplicateName", f"asset record {k} has name {name!r}, already used by "
                                       f"asset record {self._asset_by_name[name].index} (§5)")
            if rec[5]:
                _fail("ReservedNonZero",
                      f"asset {name!r} (record {k}): data section reserved field (offset "
                      f"{a_base + ASSET_RECORD_SIZE * k + 28}) is 0x{rec[5]:08x}, must be 0 "
                      f"(§9.1)")
            a = AssetInfo(k, name, Section(rec[2], rec[3], rec[4], rec[5]))
            self.assets.append(a)
            self._asset_by_name[name] = a

        # Step 8: lut_count, LUT table length, canonical layout, end of file.
        if lut_count != n_encoded:
            _fail("BadLutIndex", f"lut_count is {lut_count} but the file has {n_encoded} "
                                 f"encoded tensors (§10)")
        if lut_len != 1024 * lut_count:
            _fail("SectionSize", f"lut table length is {lut_len}, expected 1024 * "
                                 f"{lut_count} = {1024 * lut_count} (§10)")
        self._check_layout()

        # Step 9: metadata, then the LUT values.
        self.metadata = self._parse_metadata()
        self._buf = np.frombuffer(mm, dtype=np.uint8)
        self._luts = self._read_luts()

    def _check_preamble_reserved(self, reserved60, lut_res, reserved88) -> None:
        """§17 step 5, in file-offset order (60, 84, 88); all three are one kind."""
        if reserved60:
            _fail("ReservedNonZero", f"preamble reserved field at offset 60 is "
                                     f"0x{reserved60:08x}, must be 0 (§3)")
        if lut_res:
            _fail("ReservedNonZero", f"lut_table section reserved field (offset 84) is "
                                     f"0x{lut_res:08x}, must be 0 (§9.1)")
        if reserved88:
            _fail("ReservedNonZero", f"preamble reserved field at offset 88 is "
                                     f"0x{reserved88:016x}, must be 0 (§3)")

    def _read_name(self, what: str, name_off: int, name_len: int) -> str:
        if name_off + name_len > self.strings_size:
            _fail("OutOfBounds",
                  f"{what}: name range [{name_off}, {name_off + name_len}) is outside the "
                  f"{self.strings_size}-byte string table (§6)")
        if name_len == 0:
            _fail("BadName", f"{what}: name is empty (name_len 0) (§4, §5)")
        if name_len > MAX_NAME_LEN:
            _fail("BadName", f"{what}: name_len {name_len} exceeds {MAX_NAME_LEN} (§16)")
        start = self._strings_off + name_off
        raw = self._mm[start: start + name_len]
        try:
            name = raw.decode("utf-8", errors="strict")
        except UnicodeDecodeError as e:
            _fail("BadName", f"{what}: name bytes {raw[:64]!r} are not valid UTF-8 ({e.reason} "
                             f"at byte {e.start}) (§6)")
        if "\x00" in name:
            _fail("BadName", f"{what}: name {name!r} contains NUL at byte "
                             f"{raw.index(0)} (§6)")
        return name

    def _parse_tensor(self, k: int, rec: tuple, n_encoded: int) -> TensorInfo:
        """§17 step 6 for tensor record ``k``, its checks in the order the step lists them."""
        (name_off, name_len, dtype_code, rank, codec_id, flags) = rec[0:6]
        shape_all = rec[6:14]
        p0_bits, p1_bits, lut_index, reserved100 = rec[14], rec[15], rec[16], rec[17]
        secs = [Section(*rec[18 + 4 * j: 22 + 4 * j]) for j in range(3)]
        base = PREAMBLE_SIZE + TENSOR_RECORD_SIZE * k
        what = f"tensor record {k}"

        # the name's range (OutOfBounds), the name (BadName), uniqueness (DuplicateName)
        name = self._read_name(what, name_off, name_len)
        what = f"tensor {name!r} (record {k})"
        if name in self._tensor_by_name:
            _fail("DuplicateName", f"{what}: name already used by tensor record "
                                   f"{self._tensor_by_name[name].index} (§4)")
        # dtype (UnknownDtype)
        if dtype_code not in DTYPES:
            _fail("UnknownDtype", f"{what}: dtype code {dtype_code} is not in the 1.0 "
                                  f"registry (1..22) (§13.1)")
        dname, bits = DTYPES[dtype_code]
        # rank, then the dimensions past the rank (BadShape)
        if rank > MAX_RANK:
            _fail("BadShape", f"{what}: rank {rank} exceeds {MAX_RANK} (§4)")
        for d in range(rank, 8):
            if shape_all[d]:
                _fail("BadShape", f"{what}: shape[{d}] = {shape_all[d]} is past rank {rank} "
                                  f"and must be 0 (§4)")
        shape = tuple(shape_all[:rank])
        # the element count: left to right in u64, failing on the first overflow even if a
        # later dimension is 0 (LimitExceeded)
        numel = 1
        for d in range(rank):
            numel *= shape[d]
            if numel > U64_MAX:
                _fail("LimitExceeded", f"{what}: numel of shape {list(shape)} overflows u64 "
                                       f"at dimension {d} (§4, §16, §17)")
        # codec (UnknownCodec, then BadDtypeForCodec)
        if codec_id not in CODECS:
            known = ", ".join(f"{c} ({n})" for c, n in CODECS.items())
            _fail("UnknownCodec", f"{what}: codec id {codec_id} is unknown; this reader knows "
                                  f"{known} (§12)")
        encoded = codec_id != 0
        if encoded and dtype_code not in ENCODABLE_DTYPES:
            _fail("BadDtypeForCodec", f"{what}: dtype {dname} cannot be encoded with codec "
                                      f"{CODECS[codec_id]} (only F16, BF16, F32) (§13.2)")
        # unknown flag bits, the record's reserved field, the sections' reserved fields
        if flags & ~FLAG_ROW_SCALES:
            _fail("ReservedNonZero", f"{what}: flags 0x{flags:08x} has unknown bits "
                                     f"0x{flags & ~FLAG_ROW_SCALES:08x} (§4)")
        if reserved100:
            _fail("ReservedNonZero", f"{what}: reserved field (offset {base + 100}) is "
                                     f"0x{reserved100:08x}, must be 0 (§4)")
        for j, sname in enumerate(("data", "signs", "scales")):
            if secs[j].reserved:
                _fail("ReservedNonZero",
                      f"{what}: {sname} section reserved field (offset "
                      f"{base + 104 + 24 * j + 20}) is 0x{secs[j].reserved:08x}, must be 0 "
                      f"(§9.1)")
        row_scales = bool(flags & FLAG_ROW_SCALES)
        p0, p1 = _bits_to_f64(p0_bits), _bits_to_f64(p1_bits)
        if not encoded:
            # raw: ROW_SCALES (FlagMismatch), parameters not all zero bits (BadParams),
            # lut_index not 0 (BadLutIndex)
            if row_scales:
                _fail("FlagMismatch", f"{what}: ROW_SCALES is set on a raw tensor (§4)")
            if p0_bits or p1_bits:
                _fail("BadParams", f"{what}: raw tensor has param0 = {p0!r} (0x{p0_bits:016x}),"
                                   f" param1 = {p1!r} (0x{p1_bits:016x}); both must be +0.0 "
                                   f"(all bits zero) (§4)")
            if lut_index != 0:
                _fail("BadLutIndex", f"{what}: raw tensor has lut_index {lut_index}, must be 0 "
                                     f"(§4)")
        else:
            # encoded: parameters (BadParams), lut_index (BadLutIndex)
            _check_params(what, codec_id, p0, p1, p0_bits, p1_bits)
            if lut_index != n_encoded:
                _fail("BadLutIndex", f"{what}: lut_index is {lut_index}, expected {n_encoded} "
                                     f"(the number of encoded tensors before it) (§4)")
        # the byte sizes the record implies: arithmetic overflowing u64 is LimitExceeded,
        # sub-byte elements not filling whole bytes is SectionSize
        rows, row_len = 0, 1
        if not encoded:
            total_bits = numel * bits
            if total_bits > U64_MAX:
                _fail("LimitExceeded", f"{what}: numel {numel} x {bits} bits of {dname} "
                                       f"overflows u64 (§4, §16)")
            if total_bits % 8:
                _fail("SectionSize", f"{what}: numel {numel} x {bits} bits of {dname} is not a "
                                     f"whole number of bytes (§4, §13.1)")
            want = [("data", total_bits // 8, f"{numel} x {dname}")]
        else:
            # ceil(numel / 8) as numel div 8 + (numel mod 8 != 0): it never overflows
            want = [("data", numel, f"numel = {numel}, one code per element"),
                    ("signs", numel // 8 + (1 if numel % 8 else 0),
                     f"ceil({numel} / 8) sign bytes")]
            if row_scales:
                row_len = shape[rank - 1] if rank else 1
                rows = numel // row_len if row_len else 0
                if 4 * rows > U64_MAX:
                    _fail("LimitExceeded", f"{what}: the row scales' byte size 4 x {rows} rows "
                                           f"overflows u64 (§4, §16)")
                want.append(("scales", 4 * rows, f"4 x {rows} rows of length {row_len}"))
        # then data, signs, scales in that order: a used section's length, or an unused
        # section not all zero (SectionSize)
        expected = {n: (length, why) for n, length, why in want}
        for j, sname in enumerate(("data", "signs", "scales")):
            s = secs[j]
            if sname in expected:
                length, why = expected[sname]
                if s.length != length:
                    _fail("SectionSize", f"{what}: {sname} length is {s.length}, expected "
                                         f"{length} ({why}) (§4)")
            elif not s.is_zero:
                _fail("SectionSize", f"{what}: unused {sname} section must be all zero, found "
                                     f"offset {s.offset}, length {s.length}, crc "
                                     f"0x{s.crc:08x} (§4)")
        data, signs, scales = secs
        return TensorInfo(
            index=k, name=name, dtype_code=dtype_code, rank=rank, shape=shape,
            codec_id=codec_id, flags=flags, param0=p0, param1=p1, param0_bits=p0_bits,
            param1_bits=p1_bits, lut_index=lut_index, data=data, signs=signs, scales=scales,
            numel=numel, rows=rows, row_len=row_len)

    def used_sections(self) -> list[tuple[str, Section]]:
        """All used sections in canonical order (§9.2) with their §14 names."""
        out = [("lut table", self.lut_table)]
        for t in self.tensors:
            out.extend(t.used_sections())
        for a in self.assets:
            out.append((f"asset {a.name}", a.data))
        return out

    def _check_layout(self) -> None:
        A = self.alignment
        prev_end = self.header_size
        prev_label = "header"
        for label, s in self.used_sections():
            expected = align_up(prev_end, A)
            if s.offset % A:
                _fail("Misaligned", f"{label}: offset {s.offset} is not a multiple of the "
                                    f"alignment {A} (expected offset {expected}) (§9.2)")
            if s.offset + s.length > U64_MAX or s.offset + s.length > self.file_size:
                _fail("OutOfBounds", f"{label}: section [{s.offset}, {s.offset + s.length}) "
                                     f"extends past file_size {self.file_size} (§9.2)")
            if s.offset < prev_end:
                _fail("Overlap", f"{label}: offset {s.offset} is below the end {prev_end} of "
                                 f"the previous section ({prev_label}) (§9.2)")
            if s.offset > expected:
                _fail("Gap", f"{label}: offset {s.offset} is above {expected} = align_up("
                             f"{prev_end}, {A}), the end of the previous section "
                             f"({prev_label}) rounded up: {s.offset - expected} unaccounted "
                             f"bytes (§9.2)")
            prev_end = s.offset + s.length
            prev_label = label
        if self.file_size != prev_end:
            _fail("TrailingBytes", f"file_size is {self.file_size} but the last section "
                                   f"({prev_label}) ends at {prev_end}: "
                                   f"{self.file_size - prev_end} bytes after it (§9.3)")

    def _parse_metadata(self) -> dict:
        if self.metadata_size == 0:
            return {}
        start = self._metadata_off
        raw = self._mm[start: start + self.metadata_size]
        try:
            text = raw.decode("utf-8", errors="strict")
        except UnicodeDecodeError as e:
            _fail("BadMetadata", f"metadata is not valid UTF-8 ({e.reason} at byte {e.start})"
                                 f" (§7)")

        try:
            obj = _strict_json(text)
        except _JsonProblem as e:
            _fail("BadMetadata", f"metadata {e} (§7)")
        if not isinstance(obj, dict):
            _fail("BadMetadata", f"metadata is a JSON {type(obj).__name__}, not an object (§7)")
        for key, value in obj.items():
            if not isinstance(value, str):
                _fail("BadMetadata", f"metadata key {key!r} has a non-string value "
                                     f"{_json_repr(value)} (§7)")
        return obj

    def _read_luts(self) -> np.ndarray:
        n = self.lut_count
        if n == 0:
            return np.zeros((0, 256), dtype=np.float32)
        bits = np.frombuffer(self._mm, dtype="<u4", count=256 * n,
                             offset=self.lut_table.offset).reshape(n, 256)
        bad0 = bits[:, 0] != 0
        negative = (bits >> 31) != 0
        nonfinite = ((bits >> 23) & 0xFF) == 0xFF
        bad = negative | nonfinite
        bad[:, 0] |= bad0
        if bad.any():
            j, c = (int(x) for x in np.argwhere(bad)[0])
            b = int(bits[j, c])
            val = struct.unpack("<f", struct.pack("<I", b))[0]
            if c == 0:
                why = "LUT[0] must be +0.0 (bits 0x00000000)"
            elif nonfinite[j, c]:
                why = "entries must be finite"
            else:
                why = "entries must not be negative (nor -0.0)"
            owner = next((t.name for t in self.tensors if t.encoded and t.lut_index == j), "?")
            _fail("BadLut", f"LUT {j} (tensor {owner!r}) entry {c} is {val!r} "
                            f"(bits 0x{b:08x}, file offset {self.lut_table.offset + 1024 * j + 4 * c}):"
                            f" {why} (§10)")
        return bits.view("<f4").astype(np.float32)  # a private, native-order copy

    # -- access ------------------------------------------------------------------------------

    def tensor(self, name: str) -> TensorInfo:
        try:
            return self._tensor_by_name[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r}") from None

    def asset(self, name: str) -> AssetInfo:
        try:
            return self._asset_by_name[name]
        except KeyError:
            raise KeyError(f"no asset named {name!r}") from None

    def metadata_bytes(self) -> bytes:
        """The metadata exactly as stored (§7): ``metadata_size`` bytes after the strings."""
        return self._mm[self._metadata_off: self._metadata_off + self.metadata_size]

    def _t(self, t) -> TensorInfo:
        return t if isinstance(t, TensorInfo) else self.tensor(t)

    def _bytes(self, s: Section) -> bytes:
        return self._mm[s.offset: s.offset + s.length]

    def lut(self, t) -> np.ndarray:
        """The 256-entry float32 table of an encoded tensor."""
        t = self._t(t)
        if not t.encoded:
            raise ValueError(f"tensor {t.name!r} is raw; it has no LUT")
        return self._luts[t.lut_index].copy()

    def codes(self, t) -> np.ndarray:
        t = self._t(t)
        return self._buf[t.data.offset: t.data.end]

    def sign_bits(self, t) -> np.ndarray:
        t = self._t(t)
        return np.unpackbits(self._buf[t.signs.offset: t.signs.end], bitorder="little",
                             count=t.numel).astype(bool)

    def row_scale_values(self, t) -> np.ndarray | None:
        t = self._t(t)
        if not t.row_scales:
            return None
        return np.frombuffer(self._mm, dtype="<f4", count=t.rows,
                             offset=t.scales.offset).astype(np.float32)

    def decode(self, t, check: bool = False) -> np.ndarray:
        """Decode an encoded tensor to float32 of its shape by the rule of §11.4.

        With ``check=True`` the tensor's section CRCs, unused sign bits and row scales are
        verified first (the §14 checks restricted to this tensor).
        """
        t = self._t(t)
        if not t.encoded:
            raise ValueError(f"tensor {t.name!r} is raw (dtype {t.dtype}); use raw_bytes() or "
                             f"raw_array()")
        if check:
            with _Naming(self.path):
                self._verify_tensor_sections(t)
        lut_bits = self._luts[t.lut_index].view(np.uint32)
        bits = lut_bits[self.codes(t)]                # m = LUT[code[i]], as bit patterns
        if t.numel:
            # v = sign ? -m : m, by setting bit 31 (an integer OR: exact whatever the
            # floating-point environment, §11.5; a set sign bit on code 0 gives -0.0, §11.2)
            bits |= self.sign_bits(t).astype(np.uint32) << np.uint32(31)
        out = bits.view(np.float32)
        if t.row_scales and t.rows:
            scales = self.row_scale_values(t)
            view = out.reshape(t.rows, t.row_len)
            np.multiply(view, scales[:, None], out=view)         # one f32 multiply, RNE
        return out.reshape(t.shape)

    def raw_bytes(self, t) -> bytes:
        t = self._t(t)
        if t.encoded:
            raise ValueError(f"tensor {t.name!r} is encoded ({t.codec}); use decode()")
        return self._bytes(t.data)

    def raw_array(self, t) -> np.ndarray | None:
        """A read-only numpy view of a raw tensor, or None when numpy has no such dtype
        (F4, F6_*). BF16 is returned as uint16 bits, the F8 formats as uint8 bits."""
        t = self._t(t)
        if t.encoded:
            raise ValueError(f"tensor {t.name!r} is encoded ({t.codec}); use decode()")
        npd = NUMPY_DTYPES.get(t.dtype)
        if npd is None:
            return None
        dt = np.dtype(npd)
        arr = np.frombuffer(self._mm, dtype=dt, count=t.numel, offset=t.data.offset)
        return arr.reshape(t.shape)

    def raw_elements(self, t) -> np.ndarray:
        """The elements of a raw tensor of a sub-byte dtype (F4, F6_*) unpacked by §13.4, as
        uint8 bit fields of t.shape; for the other dtypes, its elements' bytes as raw_array()
        would view them (uint8 bit patterns for the 8-bit formats)."""
        t = self._t(t)
        if t.encoded:
            raise ValueError(f"tensor {t.name!r} is encoded ({t.codec}); use decode()")
        bits = DTYPES[t.dtype_code][1]
        if bits < 8:
            return unpack_elements(self.raw_bytes(t), bits, t.numel).reshape(t.shape)
        return self.raw_array(t)

    def raw_values(self, t) -> np.ndarray:
        """A raw tensor's values by the encodings of §13.3, as a numpy array of t.shape:
        float64 for the small float formats (F8_*, F6_*, F4, exactly), float32 for BF16 (its
        bits followed by 16 zero bits), bool for BOOL (any non-zero byte true), and the
        natural numpy dtype for the others."""
        t = self._t(t)
        if t.encoded:
            raise ValueError(f"tensor {t.name!r} is encoded ({t.codec}); use decode()")
        if t.dtype in SMALL_FLOATS:
            return small_float_values(self.raw_elements(t), t.dtype).reshape(t.shape)
        arr = self.raw_array(t)
        if t.dtype == "BF16":
            return (arr.astype(np.uint32) << np.uint32(16)).view(np.float32)
        if t.dtype == "BOOL":
            return arr.view(np.uint8) != 0
        return arr

    def asset_bytes(self, a) -> bytes:
        a = a if isinstance(a, AssetInfo) else self.asset(a)
        return self._bytes(a.data)

    def tensor_payload(self, t) -> bytes:
        """What ``decode``/``dump`` write and checksum: little-endian f32 for encoded tensors,
        the raw bytes for raw tensors."""
        t = self._t(t)
        if t.encoded:
            return self.decode(t).astype("<f4", copy=False).tobytes()
        return self.raw_bytes(t)

    # -- verification (§14) ------------------------------------------------------------------

    def verify(self) -> None:
        """§14, in exactly its order: for each used section in canonical order, the padding
        before it (NonZeroPadding, lowest offset first), then its CRC (DataChecksum); then for
        each encoded tensor in record order, its last sign byte (StraySignBits), then its row
        scales in row order (BadScale)."""
        with _Naming(self.path):
            self._verify()

    def _verify(self) -> None:
        prev_end = self.header_size
        with memoryview(self._mm) as mv:
            for label, s in self.used_sections():
                if s.offset > prev_end:
                    pad = self._buf[prev_end: s.offset]
                    nz = np.flatnonzero(pad)
                    if nz.size:
                        off = prev_end + int(nz[0])
                        _fail("NonZeroPadding",
                              f"padding byte at offset {off} (before {label}) is "
                              f"0x{int(pad[nz[0]]):02x}, must be 0 (§9.2, §14)")
                got = crc32(mv[s.offset: s.end])
                if got != s.crc:
                    _fail("DataChecksum", f"{label}: stored CRC 0x{s.crc:08x}, computed "
                                          f"0x{got:08x} over [{s.offset}, {s.end}) (§9.1, §14)")
                prev_end = s.end
        for t in self.tensors:
            if t.encoded:
                self._check_signs_and_scales(t)

    def _verify_tensor_sections(self, t: TensorInfo) -> None:
        with memoryview(self._mm) as mv:
            for label, s in t.used_sections():
                got = crc32(mv[s.offset: s.end])
                if got != s.crc:
                    _fail("DataChecksum", f"{label}: stored CRC 0x{s.crc:08x}, computed "
                                          f"0x{got:08x} over [{s.offset}, {s.end}) (§9.1, §14)")
        self._check_signs_and_scales(t)

    def _check_signs_and_scales(self, t: TensorInfo) -> None:
        used = t.numel % 8
        if used:
            last_off = t.signs.end - 1
            last = int(self._buf[last_off])
            stray = last >> used
            if stray:
                _fail("StraySignBits", f"tensor {t.name}: last sign byte at offset {last_off} "
                                       f"is 0x{last:02x}; only its low {used} bits are used "
                                       f"(numel {t.numel}), high bits must be 0 (§11.2)")
        if t.row_scales and t.rows:
            sc = self.row_scale_values(t)
            bad = ~(np.isfinite(sc) & (sc > 0))
            if bad.any():
                r = int(np.flatnonzero(bad)[0])
                _fail("BadScale", f"tensor {t.name}: row scale {r} (offset "
                                  f"{t.scales.offset + 4 * r}) is {float(sc[r])!r}; scales must "
                                  f"be finite and > 0 (§11.3)")

    # -- summaries ---------------------------------------------------------------------------

    def tensor_list(self) -> list[dict]:
        return [{
            "name": t.name,
            "dtype": t.dtype,
            "shape": list(t.shape),
            "codec": t.codec,
            "row_scales": t.row_scales,
            "param0": t.param0,
            "param1": t.param1,
            "sections": t.section_sizes(),
        } for t in self.tensors]

    def asset_list(self) -> list[dict]:
        return [{"name": a.name, "size": a.size, "bytes": self.asset_bytes(a)}
                for a in self.assets]

    def dump(self) -> dict:
        tensors = []
        for t in self.tensors:
            tensors.append({
                "name": t.name,
                "dtype": t.dtype,
                "shape": list(t.shape),
                "codec": t.codec,
                "row_scales": t.row_scales,
                "param0": t.param0,
                "param1": t.param1,
                "decoded_crc32": crc32(self.tensor_payload(t)),
            })
        assets = [{"name": a.name, "size": a.size, "crc32": crc32(self.asset_bytes(a))}
                  for a in self.assets]
        return {
            "version": [self.version[0], self.version[1]],
            "alignment": self.alignment,
            "tensors": tensors,
            "assets": assets,
            "metadata": dict(self.metadata),
        }


class _JsonProblem(Exception):
    pass


class _NotAnInteger:
    """A JSON number that is not a non-negative integer literal (it has a sign, a fraction or
    an exponent), kept as its text."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _strict_json(text: str):
    """Parse RFC 8259 JSON text strictly (§7, §21.2): no byte-order mark, no NaN/Infinity, no
    duplicate keys in any object (compared after unescaping), no string (key or value, at any
    depth) holding an escape that is not valid Unicode (a lone surrogate). Integers without
    sign, fraction or exponent are ints; every other number is a _NotAnInteger. Raises
    _JsonProblem with a message that follows "metadata " / "index "."""
    if text.startswith("\ufeff"):
        raise _JsonProblem("starts with a byte-order mark")

    def pairs_hook(pairs):
        obj = {}
        for key, value in pairs:
            if key in obj:
                raise _JsonProblem(f"has a duplicate key {key!r}")
            obj[key] = value
        return obj

    def no_constant(name):
        raise _JsonProblem(f"has {name}, which is not RFC 8259 JSON")

    def parse_int(lit):
        return _NotAnInteger(lit) if lit.startswith("-") else int(lit)

    try:
        obj = json.loads(text, object_pairs_hook=pairs_hook, parse_constant=no_constant,
                         parse_int=parse_int, parse_float=_NotAnInteger)
    except _JsonProblem:
        raise
    except RecursionError:
        raise _JsonProblem("is nested too deeply to parse") from None
    except ValueError as e:
        raise _JsonProblem(f"is not valid JSON: {e}") from None
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            for k, v in x.items():
                if _has_lone_surrogate(k):
                    raise _JsonProblem(f"has a key {k!r} with an unpaired UTF-16 surrogate "
                                       f"escape, which is not Unicode text")
                stack.append(v)
        elif isinstance(x, list):
            stack.extend(x)
        elif isinstance(x, str) and _has_lone_surrogate(x):
            raise _JsonProblem(f"has a string {x!r} with an unpaired UTF-16 surrogate escape, "
                               f"which is not Unicode text")
    return obj


def _json_repr(value, limit: int = 80) -> str:
    """``value`` as JSON text for a message, at most ``limit`` characters."""
    text = json.dumps(value, default=repr, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _has_lone_surrogate(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_params(what: str, codec_id: int, p0: float, p1: float, p0_bits: int,
                  p1_bits: int) -> None:
    """§4 and §12: an encoded tensor's parameters are finite and satisfy its codec's
    constraint (all BadParams). Comparisons are IEEE 754 ones, so -0.0 >= 0 and -0.0 == 0.0."""
    if not (math.isfinite(p0) and math.isfinite(p1)):
        _fail("BadParams", f"{what}: param0 = {p0!r} (0x{p0_bits:016x}), param1 = {p1!r} "
                           f"(0x{p1_bits:016x}); both must be finite (§4)")
    if codec_id == 1:    # log, §12.1
        if not p0 <= p1:
            _fail("BadParams", f"{what}: log codec needs log_min <= log_max, found "
                               f"log_min = {p0!r} > log_max = {p1!r} (§12.1)")
    elif codec_id == 2:  # linear, §12.2
        if not p0 >= 0.0:
            _fail("BadParams", f"{what}: linear codec needs max_abs >= 0, found "
                               f"max_abs = {p0!r} (§12.2)")
        if not p1 == 0.0:
            _fail("BadParams", f"{what}: linear codec needs param1 = 0.0, found "
                               f"{p1!r} (0x{p1_bits:016x}) (§12.2)")
    elif codec_id in (3, 4):  # lloyd, §12.3; lloyd-rows, §12.4 ("as lloyd")
        cname = CODECS[codec_id]
        sec = "§12.3" if codec_id == 3 else "§12.4, §12.3"
        if not p0 >= 0.0:
            _fail("BadParams", f"{what}: {cname} codec needs max_abs >= 0, found "
                               f"max_abs = {p0!r} ({sec})")
        if not p1 >= 0.0:
            _fail("BadParams", f"{what}: {cname} codec needs rel_err >= 0, found "
                               f"rel_err = {p1!r} ({sec})")


def _check_asset_path(k: int, name: str) -> None:
    """§5: no leading '/', no '\\', no NUL, no empty segment, no '.' or '..' segment."""
    what = f"asset record {k} name {name!r}"
    if name.startswith("/"):
        _fail("BadName", f"{what} starts with '/' (§5)")
    if "\\" in name:
        _fail("BadName", f"{what} contains '\\' (§5)")
    if "\x00" in name:
        _fail("BadName", f"{what} contains NUL (§5)")
    for seg in name.split("/"):
        if seg == "":
            _fail("BadName", f"{what} has an empty segment ('//' or a trailing '/') (§5)")
        if seg in (".", ".."):
            _fail("BadName", f"{what} has a '{seg}' segment (§5)")


def open_qins(path) -> QinsFile:
    """The file API (§17, §21.3): open any .qins file, a shard included, as one file."""
    return QinsFile(path)


# --------------------------------------------------------------------------------------------
# Sets (§21): the index, and a model opened from its index or from any shard
# --------------------------------------------------------------------------------------------

MAX_INDEX_SIZE = 268435456       # §21.7: the index's length
MAX_SHARDS = 65536               # §21.7: shards in a set
MAX_FILE_NAME = 255              # §21.2, §21.7: a shard's or index's file name, in bytes
SET_ID_KEY = "qins.set.id"
SET_INDEX_FILE_KEY = "qins.set.index_file"
SET_SHARD_KEY = "qins.set.shard"
SET_SHARD_COUNT_KEY = "qins.set.shard_count"

_SET_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_VERSION_RE = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")
_CRC_RE = re.compile(r"[0-9a-f]{8}")


@dataclass(frozen=True)
class ShardEntry:
    """One element of an index's ``shards`` (§21.2); ``k`` counts from 1."""
    k: int
    file: str
    size: int
    header_crc32: str


@dataclass
class SetIndex:
    """A parsed, valid index (§21.2)."""
    path: str
    format_version: tuple
    set_id: str
    total_size: int
    shards: list
    weight_map: dict

    @property
    def dir(self) -> str:
        return os.path.dirname(self.path) or "."

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def shard_path(self, entry: ShardEntry) -> str:
        return os.path.join(self.dir, entry.file)


def _file_name_problem(name) -> str | None:
    """Why ``name`` is not a file name by the rules of §21.2's ``shards[k].file`` (1 to 255
    bytes of UTF-8, not ``.`` or ``..``, without ``/``, ``\\`` or NUL), or None."""
    if not isinstance(name, str):
        return f"is a JSON {_json_type(name)}, not a string"
    n = len(name.encode("utf-8", errors="surrogatepass"))
    if n == 0:
        return "is empty"
    if n > MAX_FILE_NAME:
        return f"is {n} bytes long, more than {MAX_FILE_NAME}"
    if name in (".", ".."):
        return f"is {name!r}"
    for ch, what in (("/", "'/'"), ("\\", "'\\'"), ("\x00", "NUL")):
        if ch in name:
            return f"contains {what}"
    return None


def _json_type(x) -> str:
    if isinstance(x, bool):
        return "boolean"
    if isinstance(x, (int, _NotAnInteger)):
        return "number"
    return {str: "string", dict: "object", list: "array", type(None): "null"}.get(type(x),
                                                                                    "value")


def _is_u64(x) -> bool:
    """§21.2: "JSON numbers without sign, fraction or exponent, below 2^64"."""
    return type(x) is int and 0 <= x <= U64_MAX


def read_index(path) -> SetIndex:
    """§21.5 step 1 (from the index): read and check the index at ``path`` by §21.2 and
    §21.7. Every error names the index."""
    path = os.fspath(path)
    with _Naming(path):
        return _read_index(path)


def _read_index(path: str) -> SetIndex:
    # its length (LimitExceeded), checked before the index is read whole (§21.7)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_INDEX_SIZE:
            _fail("LimitExceeded", f"the index is {size} bytes, more than the limit "
                                   f"{MAX_INDEX_SIZE} (§21.7)")
        data = f.read()

    def bad(msg):
        _fail("BadIndex", f"{msg} (§21.2)")

    # UTF-8 JSON, an object without duplicate keys (BadIndex)
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as e:
        bad(f"the index is not valid UTF-8 ({e.reason} at byte {e.start})")
    try:
        obj = _strict_json(text)
    except _JsonProblem as e:
        bad(f"the index {e}")
    if not isinstance(obj, dict):
        bad(f"the index is a JSON {_json_type(obj)}, not an object")
    # metadata.format (BadIndex)
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        bad("the index has no member 'metadata' that is an object" if meta is None else
            f"'metadata' is a JSON {_json_type(meta)}, not an object")
    fmt = meta.get("format")
    if fmt != "qins":
        bad(f"metadata.format is {_json_repr(fmt) if 'format' in meta else 'missing'}, "
            f"not \"qins\"")
    # metadata.format_version: a version string (BadIndex) of major 1 (UnsupportedVersion)
    fv = meta.get("format_version")
    mt = _VERSION_RE.fullmatch(fv) if isinstance(fv, str) else None
    if mt is None or int(mt.group(1)) > 65535 or int(mt.group(2)) > 65535:
        bad(f"metadata.format_version is "
            f"{_json_repr(fv) if 'format_version' in meta else 'missing'}, not a version "
            f"\"MAJOR.MINOR\" (two decimal integers from 0 to 65535 without leading zeros)")
    major, minor = int(mt.group(1)), int(mt.group(2))
    if major != 1:
        _fail("UnsupportedVersion", f"unsupported format version {major}.{minor} of the set: "
                                    f"this reader implements 1.x (§15, §21.2)")
    # then shards: an array (BadIndex) of at most 65536 elements (LimitExceeded), before
    # anything in it or any other rule is looked at
    shards_json = obj.get("shards")
    if not isinstance(shards_json, list):
        bad("the index has no member 'shards'" if "shards" not in obj else
            f"'shards' is a JSON {_json_type(shards_json)}, not an array")
    if len(shards_json) > MAX_SHARDS:
        _fail("LimitExceeded", f"the index lists {len(shards_json)} shards, more than the "
                               f"limit {MAX_SHARDS} (§21.7)")
    # then every other rule of §21.2, in the order of its table
    set_id = meta.get("set_id")
    if not (isinstance(set_id, str) and _SET_ID_RE.fullmatch(set_id)):
        bad(f"metadata.set_id is {_json_repr(set_id) if 'set_id' in meta else 'missing'}: "
            f"it must be 1 to 64 ASCII letters, digits, '-', '_' or '.'")
    total_size = meta.get("total_size")
    if not _is_u64(total_size):
        bad(f"metadata.total_size is "
            f"{_json_repr(total_size) if 'total_size' in meta else 'missing'}, not an integer "
            f"(without sign, fraction or exponent, below 2^64)")
    if not shards_json:
        bad("'shards' is empty: a set has at least one shard")
    shards: list[ShardEntry] = []
    seen: dict[bytes, int] = {}
    for k, e in enumerate(shards_json, start=1):
        what = f"shards[{k - 1}] (shard {k})"
        if not isinstance(e, dict):
            bad(f"{what} is a JSON {_json_type(e)}, not an object")
        fname = e.get("file")
        if "file" not in e:
            bad(f"{what} has no 'file'")
        problem = _file_name_problem(fname)
        if problem:
            bad(f"{what}.file {_json_repr(fname)} {problem}")
        key = fname.encode("utf-8")
        if key in seen:
            bad(f"{what}.file {fname!r} is also the file of shard {seen[key]}")
        seen[key] = k
        sz = e.get("size")
        if not _is_u64(sz):
            bad(f"{what}.size is {_json_repr(sz) if 'size' in e else 'missing'}, not an "
                f"integer (without sign, fraction or exponent, below 2^64)")
        hc = e.get("header_crc32")
        if not (isinstance(hc, str) and _CRC_RE.fullmatch(hc)):
            bad(f"{what}.header_crc32 is {_json_repr(hc) if 'header_crc32' in e else 'missing'}"
                f", not 8 lower-case hexadecimal digits")
        shards.append(ShardEntry(k, fname, sz, hc))
    total = sum(e.size for e in shards)
    if total != total_size:
        bad(f"metadata.total_size is {total_size}, but the shards' sizes add up to {total}")
    wm = obj.get("weight_map")
    if not isinstance(wm, dict):
        bad("the index has no member 'weight_map'" if "weight_map" not in obj else
            f"'weight_map' is a JSON {_json_type(wm)}, not an object")
    files = {e.file for e in shards}
    for tname, fname in wm.items():
        nb = len(tname.encode("utf-8"))
        if not 1 <= nb <= MAX_NAME_LEN or "\x00" in tname:
            why = ("contains NUL" if "\x00" in tname else f"is {nb} bytes long (1 to "
                   f"{MAX_NAME_LEN})")
            bad(f"weight_map key {tname[:80]!r} is not a tensor name: it {why} (§4)")
        if not isinstance(fname, str) or fname not in files:
            bad(f"weight_map maps tensor {tname[:80]!r} to {_json_repr(fname)}, which is "
                f"not the file of a listed shard")
    return SetIndex(path=path, format_version=(major, minor), set_id=set_id,
                    total_size=total_size, shards=shards, weight_map=wm)


def _sniff_is_index(path: str) -> bool:
    """Whether a model path is a set's index rather than a .qins file (§21.5, "Which file a
    path is"): a regular file whose first 8 bytes are the magic (§3) is a .qins file; otherwise
    a path whose last component ends in ``.json`` (lower case) is an index; anything else is
    opened as a .qins file, and so fails by §17 (``Truncated``, ``BadMagic``)."""
    if os.path.isfile(path):
        with open(path, "rb") as f:
            if f.read(len(MAGIC)) == MAGIC:
                return False
    return os.path.basename(path).endswith(".json")


@dataclass
class ShardState:
    """One file of a model: ``k`` (from 1), its path, and what opening it found."""
    k: int
    path: str
    size: int
    header_crc: int
    version: tuple
    alignment: int
    tensors: list
    assets: list
    metadata: dict

    @property
    def file(self) -> str:
        return os.path.basename(self.path)


class QinsModel:
    """A model (§21.3): a single .qins file, or a set opened from its index or from any of its
    shards, checked in the order of §21.5. Its tensors are those of every shard in the set's
    order, its assets and metadata shard 1's (§21.4); ``verify()`` is §14 for each shard in
    turn. At most ``max_open`` shards are kept open (memory-mapped) at a time; a shard that
    was closed is opened again, and checked against the index once more, when it is needed."""

    def __init__(self, path, *, max_open: int = 64):
        self.path = os.fspath(path)
        self.max_open = max(1, int(max_open))
        self.index: SetIndex | None = None
        self.shards: list[ShardState] = []
        self.tensors: list[TensorInfo] = []
        self._where: dict[str, int] = {}
        self._open: OrderedDict[int, QinsFile] = OrderedDict()
        try:
            if _sniff_is_index(self.path):
                self._open_set(read_index(self.path))
            else:
                self._open_from_file(self.path)
        except BaseException:
            self.close()
            raise

    # -- opening (§21.5) ---------------------------------------------------------------------

    def _open_from_file(self, path: str) -> None:
        """§21.5 "From a shard" P; a file without qins.set.id is a single-file model."""
        q = QinsFile(path)                                            # step 1 (§17)
        if SET_ID_KEY not in q.metadata:
            self._keep(1, q)
            self.shards = [self._state(1, q)]
            self.tensors = list(q.tensors)
            self._where = {t.name: 1 for t in q.tensors}
            return
        meta = q.metadata
        q.close()
        d = os.path.dirname(path) or "."
        # step 2: its qins.set.index_file exists, is a file name, names a regular file in D
        if SET_INDEX_FILE_KEY not in meta:
            _fail("MissingIndex", f"the shard has {SET_ID_KEY} but no {SET_INDEX_FILE_KEY}: "
                                  f"its index cannot be found (§21.3, §21.5)", path)
        iname = meta[SET_INDEX_FILE_KEY]
        problem = _file_name_problem(iname)
        if problem:
            _fail("MissingIndex", f"{SET_INDEX_FILE_KEY} {iname[:300]!r} {problem}: it is not "
                                  f"a file name (§21.2, §21.3)", path)
        ipath = os.path.join(d, iname)
        if not os.path.isfile(ipath):
            # the error names the index the shard names, as MissingShard names the missing
            # shard (the conformance suite's missing_index); with no valid name, the shard
            _fail("MissingIndex", f"the shard {os.path.basename(path)!r} names its index "
                                  f"{iname!r} ({SET_INDEX_FILE_KEY}), which is not a regular "
                                  f"file in {d} (§21.3, §21.5)", ipath)
        idx = read_index(ipath)                                       # step 3
        # step 4: P's file name is the file of one of the index's shards
        pname = os.fsencode(os.path.basename(path))
        if not any(e.file.encode("utf-8") == pname for e in idx.shards):
            _fail("UnlistedShard", f"the index {iname} (set {idx.set_id}) does not list "
                                   f"{os.path.basename(path)!r}: an extra file, a renamed "
                                   f"shard, or a shard of another set (§21.5)", path)
        self._open_set(idx)                                           # step 5

    def _open_set(self, idx: SetIndex) -> None:
        """§21.5 "From the index", steps 2 to 5, for an index that passed step 1."""
        self.index = idx
        n = len(idx.shards)
        # step 2: every shard is there (a regular file, symbolic links followed)
        for e in idx.shards:
            p = idx.shard_path(e)
            if not os.path.isfile(p):
                _fail("MissingShard", f"shard {e.k} of {n}, {e.file!r}, listed by the index "
                                      f"{idx.name}, is not a regular file in {idx.dir} "
                                      f"(§21.5)", p)
        # step 3: each shard, in order
        for e in idx.shards:
            p = idx.shard_path(e)
            q = QinsFile(p)                                           # 3.1 (§17)
            try:
                self._check_shard(idx, e, q)
            except BaseException:
                q.close()
                raise
            self.shards.append(self._state(e.k, q))
            self._keep(e.k, q)
        # step 4: tensor names unique across the set, in the set's order
        first: dict[str, int] = {}
        for st in self.shards:
            for t in st.tensors:
                if t.name in first:
                    a = self.shards[first[t.name] - 1]
                    _fail("DuplicateTensor",
                          f"tensor {t.name!r} is in shard {a.k} ({a.file}) and again in shard "
                          f"{st.k} ({st.file}): each tensor is in exactly one shard (§21.4)",
                          st.path)
                first[t.name] = st.k
        # step 5: the weight map, in the set's order; then every key is a tensor of the set
        wm = idx.weight_map
        for st in self.shards:
            for t in st.tensors:
                if t.name not in wm:
                    _fail("IndexMismatch", f"tensor {t.name!r} of shard {st.k} ({st.file}) is "
                                           f"not in the index's weight_map (§21.5)", st.path)
                if wm[t.name] != st.file:
                    _fail("IndexMismatch", f"the index's weight_map puts tensor {t.name!r} in "
                                           f"{wm[t.name]!r}, but shard {st.k} ({st.file}) holds "
                                           f"it (§21.5)", st.path)
        for name in wm:
            if name not in first:
                _fail("IndexMismatch", f"the weight_map maps {name[:80]!r} to {wm[name]!r}, but "
                                       f"no shard holds a tensor of that name (§21.5)", idx.path)
        self.tensors = [t for st in self.shards for t in st.tensors]
        self._where = dict(first)

    def _check_shard(self, idx: SetIndex, e: ShardEntry, q: QinsFile) -> None:
        """§21.5 step 3.2 to 3.5 for shard ``e`` of the index, opened as ``q``."""
        n = len(idx.shards)
        meta = q.metadata
        sid = meta.get(SET_ID_KEY)
        if sid != idx.set_id:                                         # 3.2
            why = (f"has no {SET_ID_KEY}: it is a single file, not a shard" if sid is None
                   else f"belongs to set {sid!r}")
            _fail("ForeignShard", f"the index {idx.name} lists {e.file!r} as shard {e.k} of "
                                  f"set {idx.set_id!r}, but the file {why} (§21.3, §21.5)",
                  q.path)
        got_k, got_n = meta.get(SET_SHARD_KEY), meta.get(SET_SHARD_COUNT_KEY)
        if got_k != str(e.k) or got_n != str(n):                      # 3.3
            _fail("MisplacedShard", f"the file says it is shard {got_k!r} of {got_n!r} "
                                    f"({SET_SHARD_KEY}, {SET_SHARD_COUNT_KEY}); the index "
                                    f"{idx.name} lists it as shard {e.k} of {n} (§21.3, §21.5)",
                  q.path)
        if q.actual_size != e.size:                                   # 3.4
            _fail("IndexMismatch", f"the shard is {q.actual_size} bytes; the index {idx.name} "
                                   f"says {e.size} (§21.5)", q.path)
        if f"{q.header_crc:08x}" != e.header_crc32:
            _fail("IndexMismatch", f"the shard's header CRC is {q.header_crc:08x}; the index "
                                   f"{idx.name} says {e.header_crc32} (§8, §21.5)", q.path)
        if e.k >= 2 and q.assets:                                     # 3.5
            _fail("MisplacedAsset", f"shard {e.k} has {len(q.assets)} asset(s) (the first is "
                                    f"{q.assets[0].name!r}); assets are in shard 1 only "
                                    f"(§21.4)", q.path)

    @staticmethod
    def _state(k: int, q: QinsFile) -> ShardState:
        for t in q.tensors:
            t.shard = k
        return ShardState(k=k, path=q.path, size=q.actual_size, header_crc=q.header_crc,
                          version=q.version, alignment=q.alignment, tensors=list(q.tensors),
                          assets=list(q.assets), metadata=dict(q.metadata))

    # -- open files --------------------------------------------------------------------------

    def _keep(self, k: int, q: QinsFile) -> None:
        self._open[k] = q
        self._open.move_to_end(k)
        while len(self._open) > self.max_open:
            _k, old = self._open.popitem(last=False)
            old.close()

    def file(self, k: int) -> QinsFile:
        """The open QinsFile of shard ``k`` (from 1). A shard closed to respect ``max_open``
        is opened again and must still be the file the index lists (IndexMismatch)."""
        q = self._open.get(k)
        if q is not None:
            self._open.move_to_end(k)
            return q
        st = self.shards[k - 1]
        q = QinsFile(st.path)
        if (q.actual_size, q.header_crc) != (st.size, st.header_crc):
            q.close()
            _fail("IndexMismatch", f"the shard changed since the set was opened: "
                                   f"{q.actual_size} bytes and header CRC {q.header_crc:08x}, "
                                   f"was {st.size} bytes and {st.header_crc:08x} (§21.5)",
                  st.path)
        for t in q.tensors:
            t.shard = k
        self._keep(k, q)
        return q

    def close(self) -> None:
        while self._open:
            _k, q = self._open.popitem()
            q.close()

    def __enter__(self) -> "QinsModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the model ---------------------------------------------------------------------------

    @property
    def is_set(self) -> bool:
        return self.index is not None

    @property
    def set_id(self) -> str | None:
        return self.index.set_id if self.index else None

    @property
    def metadata(self) -> dict:
        """The model's metadata: the file's, or a set's shard 1's (§21.4)."""
        return self.shards[0].metadata

    @property
    def assets(self) -> list:
        """The model's assets: the file's, or a set's shard 1's (§21.4)."""
        return self.shards[0].assets

    @property
    def version(self) -> tuple:
        """The format version: a file's (§3), or a set's index's ``format_version``."""
        return self.index.format_version if self.index else self.shards[0].version

    def tensor(self, name: str) -> TensorInfo:
        k = self._where.get(name)
        if k is None:
            raise KeyError(f"no tensor named {name!r}")
        return self.file(k).tensor(name)

    def shard_of(self, name: str) -> int:
        """The shard (from 1) that holds tensor ``name``."""
        try:
            return self._where[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r}") from None

    def _name(self, t) -> str:
        return t.name if isinstance(t, TensorInfo) else t

    def _call(self, method: str, t, *args, **kw):
        name = self._name(t)
        return getattr(self.file(self.shard_of(name)), method)(name, *args, **kw)

    def decode(self, t, check: bool = False) -> np.ndarray:
        return self._call("decode", t, check=check)

    def raw_bytes(self, t) -> bytes:
        return self._call("raw_bytes", t)

    def raw_array(self, t):
        return self._call("raw_array", t)

    def raw_elements(self, t) -> np.ndarray:
        return self._call("raw_elements", t)

    def raw_values(self, t) -> np.ndarray:
        return self._call("raw_values", t)

    def lut(self, t) -> np.ndarray:
        return self._call("lut", t)

    def row_scale_values(self, t):
        return self._call("row_scale_values", t)

    def tensor_payload(self, t) -> bytes:
        return self._call("tensor_payload", t)

    def asset_bytes(self, a) -> bytes:
        name = a.name if isinstance(a, AssetInfo) else a
        return self.file(1).asset_bytes(name)

    def verify(self) -> None:
        """§14 for each file, shard 1 to n, the first failure naming the shard (§21.5)."""
        for st in self.shards:
            self.file(st.k).verify()

    # -- summaries ---------------------------------------------------------------------------

    def dump(self) -> dict:
        """A single file: exactly QinsFile.dump(). A set: the same keys for the model (its
        tensors in the set's order, shard 1's assets and metadata; ``version`` and
        ``alignment`` those of shard 1), and a ``set`` member with the index's contents."""
        if not self.is_set:
            return self.file(1).dump()
        tensors = []
        for st in self.shards:
            tensors.extend(self.file(st.k).dump()["tensors"])
        first = self.file(1).dump()
        idx = self.index
        return {
            "version": first["version"],
            "alignment": first["alignment"],
            "tensors": tensors,
            "assets": first["assets"],
            "metadata": first["metadata"],
            "set": {
                "index": idx.name,
                "format_version": list(idx.format_version),
                "set_id": idx.set_id,
                "total_size": idx.total_size,
                "shards": [{"file": e.file, "size": e.size, "header_crc32": e.header_crc32}
                           for e in idx.shards],
            },
        }


def open_model(path, **kw) -> QinsModel:
    """The model API (§21.3): a .qins file, a set's index, or any shard (opened as its set)."""
    return QinsModel(path, **kw)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _fmt_float(x: float) -> str:
    return repr(x)


def _cmd_list(m: QinsModel) -> None:
    w = sys.stdout.write
    if m.is_set:
        idx = m.index
        w(f"{m.path}: QINS set {idx.format_version[0]}.{idx.format_version[1]} "
          f"(index {idx.name}), set_id {idx.set_id}, {len(idx.shards)} shards, total_size "
          f"{idx.total_size}\n")
        w("\nshards:\n")
        for st in m.shards:
            w(f"  {st.k:5d}  {st.file}  QINS {st.version[0]}.{st.version[1]}, alignment "
              f"{st.alignment}, {st.size} bytes, header_crc32 {st.header_crc:08x}, "
              f"{len(st.tensors)} tensors, {len(st.assets)} assets\n")
    else:
        st = m.shards[0]
        q = m.file(1)
        w(f"{m.path}: QINS {st.version[0]}.{st.version[1]}, alignment {st.alignment}, "
          f"file_size {q.file_size}, header_size {q.header_size}\n")
    n_enc = sum(1 for t in m.tensors if t.encoded)
    w(f"{len(m.tensors)} tensors ({n_enc} encoded), {len(m.assets)} assets, "
      f"{len(m.metadata)} metadata keys\n")
    if m.tensors:
        w("\ntensors:\n")
    for i, t in enumerate(m.tensors):
        shape = "[" + ", ".join(str(d) for d in t.shape) + "]"
        where = f"  shard {t.shard}" if m.is_set else ""
        line = f"  {i:4d}  {t.name}  {t.dtype} {shape} numel={t.numel}  {t.codec}"
        if t.encoded:
            line += (f"{' +row_scales' if t.row_scales else ''}  "
                     f"param0={_fmt_float(t.param0)} param1={_fmt_float(t.param1)}")
        secs = ", ".join(f"{k}={v}" for k, v in t.section_sizes().items())
        line += f"  sections: {secs}{where}\n"
        w(line)
    if m.assets:
        w("\nassets:\n")
    for a in m.assets:
        w(f"  {a.index:4d}  {a.name}  {a.size} bytes  crc32=0x{a.data.crc:08x}\n")
    md = m.metadata
    w("\nmetadata:\n" if md else "\nmetadata: {}\n")
    for k in sorted(md):
        w(f"  {k} = {md[k]}\n")


def _safe_file_name(index: int, name: str, used: set) -> str:
    """A file name for a tensor: its name with '%' -> '%25' and '/' -> '%2F' (injective),
    plus '.bin'; too-long names fall back to an index and hash."""
    base = name.replace("%", "%25").replace("/", "%2F")
    fname = base + ".bin"
    if len(fname.encode("utf-8")) > 240 or fname in used:
        h = hashlib.sha256(name.encode("utf-8")).hexdigest()[:16]
        fname = f"tensor{index:07d}_{h}.bin"
    used.add(fname)
    return fname


def _cmd_decode(q: QinsModel, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    manifest = []
    used: set = set()
    for i, t in enumerate(q.tensors):
        payload = q.tensor_payload(t)
        fname = _safe_file_name(i, t.name, used)
        with open(os.path.join(out_dir, fname), "wb") as f:
            f.write(payload)
        manifest.append({
            "name": t.name,
            "file": fname,
            "dtype": t.dtype,
            "shape": list(t.shape),
            "kind": "encoded" if t.encoded else "raw",
            "byte_length": len(payload),
            "crc32": crc32(payload),
        })
    with open(os.path.join(out_dir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump({"tensors": manifest}, f, indent=2, ensure_ascii=False)
        f.write("\n")


def _cmd_dump(q: QinsModel) -> None:
    text = json.dumps(q.dump(), indent=2, ensure_ascii=False)
    sys.stdout.buffer.write(text.encode("utf-8") + b"\n")
    sys.stdout.flush()


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="qins_reader.py",
        description="Independent QINS 1.1 reader (spec/qins-v1.md). FILE is a .qins file, a "
                    "set's index, or any shard of a set (opened as the whole set, §21).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("list", help="list tensors, assets and metadata (and a set's shards)")
    p.add_argument("file")
    p = sub.add_parser("verify", help="open and fully verify (§17 + §14; a set: §21.5)")
    p.add_argument("file")
    p = sub.add_parser("decode", help="write every tensor's values and a manifest.json")
    p.add_argument("file")
    p.add_argument("out_dir")
    p.add_argument("--no-verify", action="store_true", help="skip the §14 checks")
    p = sub.add_parser("dump", help="print a JSON summary (for comparison with other readers)")
    p.add_argument("file")
    p.add_argument("--no-verify", action="store_true", help="skip the §14 checks")
    args = ap.parse_args(list(argv) if argv is not None else None)

    try:
        with QinsModel(args.file) as m:
            if args.cmd == "list":
                _cmd_list(m)
            elif args.cmd == "verify":
                m.verify()
                if m.is_set:
                    v = m.version
                    print(f"OK: {args.file}: QINS set {v[0]}.{v[1]} ({m.set_id}), "
                          f"{len(m.shards)} shards, {len(m.tensors)} tensors, "
                          f"{len(m.assets)} assets")
                else:
                    v = m.version
                    print(f"OK: {args.file}: QINS {v[0]}.{v[1]}, {len(m.tensors)} tensors, "
                          f"{len(m.assets)} assets")
            elif args.cmd == "decode":
                if not args.no_verify:
                    m.verify()
                _cmd_decode(m, args.out_dir)
            elif args.cmd == "dump":
                if not args.no_verify:
                    m.verify()
                _cmd_dump(m)
    except QinsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: Io: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

//! The negative goldens: one file per rejection rule of the spec, each made by one precise
//! corruption of a valid golden.
//!
//! After a header edit, the header CRC is recomputed (at the original file's position), so that
//! the intended kind is the first failure a reader meets in the order of §17; only
//! `header_checksum.qins` keeps a stale CRC. Data-level corruptions that must not trip a section
//! CRC first (a LUT value, a sign bit, a row scale) refresh that section's CRC too.

use crate::edit::{Editor, Section};
use crate::manifest::{InvalidEntry, InvalidManifest, INVALID_SCHEMA};

/// When a reader must reject a negative golden.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Opening fails (§17 steps 1–9).
    Open,
    /// Opening succeeds and verification (§14) fails.
    Verify,
}

impl Stage {
    /// `open` or `verify`, as in the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Open => "open",
            Stage::Verify => "verify",
        }
    }
}

/// One negative golden: `invalid/NAME.qins`.
#[derive(Clone, Copy, Debug)]
pub struct InvalidCase {
    /// The file stem.
    pub name: &'static str,
    /// The valid golden it is made from (its stem).
    pub base: &'static str,
    /// The error kind of §17 a reader must report first.
    pub kind: &'static str,
    /// When the reader must report it.
    pub stage: Stage,
    /// The spec section whose rule the file breaks.
    pub spec: &'static str,
    /// The corruption, in one line.
    pub description: &'static str,
    /// Applies the corruption.
    pub corrupt: fn(&mut Editor),
}

impl InvalidCase {
    /// The file name, `NAME.qins`.
    pub fn file_name(&self) -> String {
        format!("{}.qins", self.name)
    }

    /// Makes the negative golden from the bytes of its base.
    pub fn apply(&self, base: &[u8]) -> Vec<u8> {
        let mut e = Editor::new(base.to_vec());
        (self.corrupt)(&mut e);
        e.finish()
    }

    /// The case's manifest entry.
    pub fn entry(&self) -> InvalidEntry {
        InvalidEntry {
            file: self.file_name(),
            kind: self.kind.into(),
            stage: self.stage.as_str().into(),
            spec: self.spec.into(),
            base: format!("{}.qins", self.base),
            description: self.description.into(),
        }
    }
}

/// The manifest of every negative golden.
pub fn manifest() -> InvalidManifest {
    InvalidManifest {
        schema: INVALID_SCHEMA.into(),
        cases: cases().iter().map(InvalidCase::entry).collect(),
    }
}

use Stage::{Open, Verify};

/// Tensor and asset indices in `mixed.qins`.
const W: usize = 0; // "w": F32 [2, 5], log, row scales
const B: usize = 1; // "b": I32 [3], raw
const CONFIG: usize = 0; // "config.json"
const POOLING: usize = 1; // "1_Pooling/config.json"

/// Overwrites the bytes of asset `POOLING`'s name (21 bytes) in `mixed.qins`.
fn pooling_name(e: &mut Editor, name: &[u8; 21]) {
    e.asset_name(POOLING).copy_from_slice(name);
}

macro_rules! case {
    ($name:literal, $base:literal, $kind:literal, $stage:ident, $spec:literal, $desc:literal, $f:expr) => {
        InvalidCase {
            name: $name,
            base: $base,
            kind: $kind,
            stage: $stage,
            spec: $spec,
            description: $desc,
            corrupt: $f,
        }
    };
}

/// Every negative golden, in the order of the checks of §17 and §14.
pub fn cases() -> Vec<InvalidCase> {
    vec![
        // §17 step 1: preamble, magic, version, features.
        case!("zero_bytes", "empty", "Truncated", Open, "§3",
            "the file is empty (0 bytes)",
            |e| e.bytes().clear()),
        case!("truncated_preamble", "empty", "Truncated", Open, "§3",
            "cut to 95 bytes, one short of the preamble",
            |e| e.bytes().truncate(95)),
        case!("bad_magic", "empty", "BadMagic", Open, "§3",
            "magic byte 0 is 0x09 instead of 0x89 (the high bit stripped by a 7-bit transport)",
            |e| e.bytes()[0] = 0x09),
        case!("unsupported_version", "empty", "UnsupportedVersion", Open, "§15",
            "version_major is 2",
            |e| e.preamble().version_major = 2.into()),
        case!("unsupported_feature", "empty", "UnsupportedFeature", Open, "§3",
            "required_features has bit 0 set, which 1.0 does not define",
            |e| e.preamble().required_features = 1.into()),
        // Step 2: limits, header size.
        case!("limit_tensor_count", "empty", "LimitExceeded", Open, "§16",
            "tensor_count is 1048577, one above the limit",
            |e| e.preamble().tensor_count = 1_048_577.into()),
        case!("limit_asset_count", "empty", "LimitExceeded", Open, "§16",
            "asset_count is 65537, one above the limit",
            |e| e.preamble().asset_count = 65_537.into()),
        case!("limit_metadata_size", "empty", "LimitExceeded", Open, "§16",
            "metadata_size is 1048577, one above the limit",
            |e| e.preamble().metadata_size = 1_048_577.into()),
        case!("limit_header_size", "empty", "LimitExceeded", Open, "§16",
            "header_size is 268435457, one above the limit of 256 MiB",
            |e| e.preamble().header_size = 268_435_457.into()),
        case!("header_size_mismatch", "mixed", "HeaderSizeMismatch", Open, "§3",
            "header_size is one more than the counts imply",
            |e| {
                let p = e.preamble();
                p.header_size = (p.header_size.get() + 1).into();
            }),
        // Step 3: the file's length.
        case!("truncated_file", "mixed", "Truncated", Open, "§9.3",
            "the last byte is cut off: the file is one byte shorter than file_size",
            |e| {
                e.bytes().pop();
            }),
        case!("trailing_bytes_after_file_size", "mixed", "TrailingBytes", Open, "§9.3",
            "one zero byte appended: the file is one byte longer than file_size",
            |e| e.bytes().push(0)),
        case!("truncated_header", "empty", "Truncated", Open, "§16",
            "strings_size 100 and header_size 200 (consistent) in a file of file_size 128: the \
             header block would end past the end of the file",
            |e| {
                let p = e.preamble();
                p.strings_size = 100.into();
                p.header_size = 200.into();
            }),
        // Step 4: the header checksum.
        case!("header_checksum", "mixed", "HeaderChecksum", Open, "§8",
            "one bit of the header flipped (tensor name `w` becomes `W`), the header CRC left as it was",
            |e| {
                e.tensor_name(W)[0] ^= 0x20;
                e.keep_header_crc();
            }),
        // Step 5: reserved fields, alignment.
        case!("reserved_preamble_60", "empty", "ReservedNonZero", Open, "§3",
            "the reserved u32 at offset 60 is 1",
            |e| e.preamble().reserved0 = 1.into()),
        case!("reserved_preamble_88", "empty", "ReservedNonZero", Open, "§3",
            "the reserved u64 at offset 88 is 1",
            |e| e.preamble().reserved1 = 1.into()),
        case!("reserved_lut_table", "mixed", "ReservedNonZero", Open, "§9.1",
            "the reserved u32 of the lut_table section reference is 1",
            |e| e.preamble().lut_table.reserved = 1.into()),
        case!("bad_alignment_not_power_of_two", "empty", "BadAlignment", Open, "§3",
            "alignment is 96, not a power of two",
            |e| e.preamble().alignment = 96.into()),
        case!("bad_alignment_too_small", "empty", "BadAlignment", Open, "§3",
            "alignment is 32, a power of two below 64",
            |e| e.preamble().alignment = 32.into()),
        case!("bad_alignment_too_large", "empty", "BadAlignment", Open, "§3",
            "alignment is 2097152, a power of two above 1048576",
            |e| e.preamble().alignment = 2_097_152.into()),
        // Step 6: tensor records.
        case!("name_out_of_bounds", "mixed", "OutOfBounds", Open, "§6",
            "tensor `b`'s name_offset is strings_size: its 1-byte name lies past the string table",
            |e| {
                let s = e.preamble().strings_size;
                e.tensor(B).name_offset = s;
            }),
        case!("name_empty_out_of_bounds", "mixed", "OutOfBounds", Open, "§6",
            "tensor `b`'s name_len is 0 and its name_offset strings_size + 1: an empty range \
             that lies past the string table is `OutOfBounds`, checked before the name is empty",
            |e| {
                let s = e.preamble().strings_size.get();
                let t = e.tensor(B);
                t.name_offset = (s + 1).into();
                t.name_len = 0.into();
            }),
        case!("bad_name_empty", "mixed", "BadName", Open, "§4",
            "tensor `b`'s name_len is 0",
            |e| e.tensor(B).name_len = 0.into()),
        case!("bad_name_not_utf8", "mixed", "BadName", Open, "§6",
            "tensor `w`'s name is the byte 0xff, not UTF-8",
            |e| e.tensor_name(W)[0] = 0xFF),
        case!("bad_name_nul", "mixed", "BadName", Open, "§6",
            "tensor `b`'s name is the byte 0x00 (NUL)",
            |e| e.tensor_name(B)[0] = 0),
        case!("bad_name_too_long", "names", "BadName", Open, "§4",
            "the 4096-byte tensor name's name_len is 4097 (still inside the string table)",
            |e| e.tensor(1).name_len = 4097.into()),
        case!("duplicate_tensor_name", "mixed", "DuplicateName", Open, "§4",
            "tensor `b` renamed `w` in the string table: two tensors are called `w`",
            |e| e.tensor_name(B)[0] = b'w'),
        case!("unknown_dtype_zero", "mixed", "UnknownDtype", Open, "§13.1",
            "raw tensor `b`'s dtype code is 0",
            |e| e.tensor(B).dtype = 0),
        case!("unknown_dtype_23", "mixed", "UnknownDtype", Open, "§13.1",
            "raw tensor `b`'s dtype code is 23, the first code after the registry",
            |e| e.tensor(B).dtype = 23),
        case!("bad_shape_rank", "mixed", "BadShape", Open, "§4",
            "tensor `b`'s rank is 9",
            |e| e.tensor(B).rank = 9),
        case!("bad_shape_past_rank", "mixed", "BadShape", Open, "§4",
            "tensor `w` (rank 2) has shape[2] = 1",
            |e| e.tensor(W).shape[2] = 1.into()),
        case!("limit_numel", "mixed", "LimitExceeded", Open, "§4",
            "tensor `b` has rank 3 and shape [3, 2^32, 2^32]: numel overflows u64",
            |e| {
                let t = e.tensor(B);
                t.rank = 3;
                t.shape[1] = (1u64 << 32).into();
                t.shape[2] = (1u64 << 32).into();
            }),
        case!("limit_numel_before_zero", "mixed", "LimitExceeded", Open, "§17",
            "tensor `b` has rank 3 and shape [2^40, 2^40, 0]: the left-to-right product overflows \
             before it reaches the 0",
            |e| {
                let t = e.tensor(B);
                t.rank = 3;
                t.shape[0] = (1u64 << 40).into();
                t.shape[1] = (1u64 << 40).into();
                t.shape[2] = 0.into();
            }),
        case!("unknown_codec", "mixed", "UnknownCodec", Open, "§12",
            "tensor `w`'s codec id is 65535, which the registry never assigns",
            |e| e.tensor(W).codec = 65535.into()),
        case!("bad_dtype_for_codec", "mixed", "BadDtypeForCodec", Open, "§13.2",
            "encoded tensor `w`'s dtype is F64 (13), which cannot be encoded",
            |e| e.tensor(W).dtype = 13),
        case!("reserved_tensor_flags", "mixed", "ReservedNonZero", Open, "§4",
            "tensor `w`'s flags are 3: bit 1 is not defined",
            |e| e.tensor(W).flags = 3.into()),
        case!("reserved_tensor_field", "mixed", "ReservedNonZero", Open, "§4",
            "the reserved u32 at offset 100 of tensor `w`'s record is 1",
            |e| e.tensor(W).reserved = 1.into()),
        case!("reserved_section", "mixed", "ReservedNonZero", Open, "§9.1",
            "the reserved u32 of tensor `w`'s data section reference is 1",
            |e| e.tensor(W).data.reserved = 1.into()),
        case!("reserved_unused_section", "mixed", "ReservedNonZero", Open, "§17",
            "the reserved u32 of raw tensor `b`'s unused signs section is 1 (ReservedNonZero, \
             checked before the unused section's SectionSize)",
            |e| e.tensor(B).signs.reserved = 1.into()),
        case!("flag_mismatch", "mixed", "FlagMismatch", Open, "§4",
            "raw tensor `b` has flags = 1 (ROW_SCALES)",
            |e| e.tensor(B).flags = 1.into()),
        case!("bad_params_log_order", "mixed", "BadParams", Open, "§12.1",
            "`log` tensor `w`'s log_min is log_max + 1",
            |e| {
                let t = e.tensor(W);
                t.param0 = (t.param1.get() + 1.0).into();
            }),
        case!("bad_params_nan", "mixed", "BadParams", Open, "§4",
            "tensor `w`'s param0 is NaN",
            |e| e.tensor(W).param0 = f64::NAN.into()),
        case!("bad_params_infinite", "mixed", "BadParams", Open, "§4",
            "tensor `w`'s param1 is +infinity",
            |e| e.tensor(W).param1 = f64::INFINITY.into()),
        case!("bad_params_raw", "mixed", "BadParams", Open, "§4",
            "raw tensor `b`'s param0 is -0.0 (a raw tensor's parameters must be all-zero bits)",
            |e| e.tensor(B).param0 = (-0.0f64).into()),
        case!("bad_params_linear_negative", "linear", "BadParams", Open, "§12.2",
            "`linear` tensor `half`'s max_abs is -1.0",
            |e| e.tensor(0).param0 = (-1.0f64).into()),
        case!("bad_params_linear_param1", "linear", "BadParams", Open, "§12.2",
            "`linear` tensor `half`'s param1 is 1.0 instead of 0.0",
            |e| e.tensor(0).param1 = 1.0f64.into()),
        case!("bad_params_lloyd_rel_err_negative", "lloyd", "BadParams", Open, "§12.3",
            "`lloyd` tensor `dense`'s rel_err is -0.5",
            |e| e.tensor(0).param1 = (-0.5f64).into()),
        case!("bad_params_lloyd_rows_max_abs_negative", "lloyd_rows", "BadParams", Open, "§12.4",
            "`lloyd-rows` tensor `rows`'s max_abs is -1.0",
            |e| e.tensor(0).param0 = (-1.0f64).into()),
        case!("bad_lut_index_sequence", "mixed", "BadLutIndex", Open, "§4",
            "the first encoded tensor `w` has lut_index 1 instead of 0",
            |e| e.tensor(W).lut_index = 1.into()),
        case!("bad_lut_index_raw", "mixed", "BadLutIndex", Open, "§4",
            "raw tensor `b` has lut_index 1 instead of 0",
            |e| e.tensor(B).lut_index = 1.into()),
        case!("limit_raw_bytes", "mixed", "LimitExceeded", Open, "§16",
            "raw I32 tensor `b`'s shape is [2^62]: numel fits u64, its byte size 4 × 2^62 does not",
            |e| e.tensor(B).shape[0] = (1u64 << 62).into()),
        case!("limit_scale_bytes", "mixed", "LimitExceeded", Open, "§16",
            "tensor `w`'s shape is [2^62, 1]: numel fits u64, its scales' byte size 4 × 2^62 rows \
             does not (checked before the section lengths)",
            |e| {
                let t = e.tensor(W);
                t.shape[0] = (1u64 << 62).into();
                t.shape[1] = 1.into();
            }),
        case!("section_size_codes", "mixed", "SectionSize", Open, "§4",
            "tensor `w`'s data (codes) length is 11 instead of numel = 10",
            |e| e.tensor(W).data.length = 11.into()),
        case!("section_size_signs", "mixed", "SectionSize", Open, "§4",
            "tensor `w`'s signs length is 1 instead of ceil(10 / 8) = 2",
            |e| e.tensor(W).signs.length = 1.into()),
        case!("section_size_scales", "mixed", "SectionSize", Open, "§4",
            "tensor `w`'s scales length is 4 instead of 4 × 2 rows = 8",
            |e| e.tensor(W).scales.length = 4.into()),
        case!("section_size_raw", "mixed", "SectionSize", Open, "§4",
            "raw I32 tensor `b`'s data length is 11 instead of 3 × 4 = 12",
            |e| e.tensor(B).data.length = 11.into()),
        case!("section_size_unused", "mixed", "SectionSize", Open, "§4",
            "raw tensor `b`'s unused signs section has the offset of its data instead of 0",
            |e| {
                let off = e.tensor(B).data.offset;
                e.tensor(B).signs.offset = off;
            }),
        case!("section_size_subbyte", "raw_dtypes", "SectionSize", Open, "§13.1",
            "F4 tensor `f4`'s shape is [1, 3] instead of [2, 3]: 3 × 4 bits is not a whole byte",
            |e| {
                let k = e.find_tensor("f4");
                e.tensor(k).shape[0] = 1.into();
            }),
        // Step 7: asset records.
        case!("bad_name_asset_empty", "mixed", "BadName", Open, "§5",
            "asset `config.json`'s name_len is 0",
            |e| e.asset(CONFIG).name_len = 0.into()),
        case!("bad_name_asset_parent", "mixed", "BadName", Open, "§5",
            "asset `1_Pooling/config.json` renamed `../ooling/config.json` (a `..` segment)",
            |e| pooling_name(e, b"../ooling/config.json")),
        case!("bad_name_asset_absolute", "mixed", "BadName", Open, "§5",
            "asset `1_Pooling/config.json` renamed `/_Pooling/config.json` (a leading `/`)",
            |e| pooling_name(e, b"/_Pooling/config.json")),
        case!("bad_name_asset_backslash", "mixed", "BadName", Open, "§5",
            "asset `1_Pooling/config.json` renamed `1_Pooling\\config.json` (a `\\`)",
            |e| pooling_name(e, b"1_Pooling\\config.json")),
        case!("bad_name_asset_empty_segment", "mixed", "BadName", Open, "§5",
            "asset `1_Pooling/config.json` renamed `1_Pooling//onfig.json` (an empty segment)",
            |e| pooling_name(e, b"1_Pooling//onfig.json")),
        case!("bad_name_asset_trailing_slash", "mixed", "BadName", Open, "§5",
            "asset `config.json` renamed `config.jso/` (a trailing `/`)",
            |e| e.asset_name(CONFIG).copy_from_slice(b"config.jso/")),
        case!("bad_name_asset_dot", "mixed", "BadName", Open, "§5",
            "asset `1_Pooling/config.json` renamed `1_Pooling/./nfig.json` (a `.` segment)",
            |e| pooling_name(e, b"1_Pooling/./nfig.json")),
        case!("duplicate_asset_name", "mixed", "DuplicateName", Open, "§5",
            "asset 1's name range is asset 0's: two assets are called `config.json`",
            |e| {
                let a = *e.asset(CONFIG);
                let p = e.asset(POOLING);
                p.name_offset = a.name_offset;
                p.name_len = a.name_len;
            }),
        case!("reserved_asset_section", "mixed", "ReservedNonZero", Open, "§9.1",
            "the reserved u32 of asset `config.json`'s section reference is 1",
            |e| e.asset(CONFIG).data.reserved = 1.into()),
        // Step 8: the LUT table and the canonical layout.
        case!("bad_lut_index_count", "mixed", "BadLutIndex", Open, "§10",
            "lut_count is 2 with one encoded tensor",
            |e| e.preamble().lut_count = 2.into()),
        case!("section_size_lut_table", "mixed", "SectionSize", Open, "§10",
            "the LUT table's length is 2048 with lut_count 1",
            |e| e.preamble().lut_table.length = 2048.into()),
        case!("misaligned", "mixed", "Misaligned", Open, "§9.2",
            "tensor `b`'s data offset is 4 past its canonical offset, not a multiple of 64",
            |e| {
                let t = e.tensor(B);
                t.data.offset = (t.data.offset.get() + 4).into();
            }),
        case!("out_of_bounds", "mixed", "OutOfBounds", Open, "§9.2",
            "the last asset's length is one more than it is: it ends one byte past file_size",
            |e| {
                let a = e.asset(POOLING);
                a.data.length = (a.data.length.get() + 1).into();
            }),
        case!("out_of_bounds_overflow", "mixed", "OutOfBounds", Open, "§16",
            "the last asset's length is 2^64 - offset: offset + length overflows u64",
            |e| {
                let a = e.asset(POOLING);
                a.data.length = (a.data.offset.get().wrapping_neg()).into();
            }),
        case!("overlap", "mixed", "Overlap", Open, "§9.2",
            "tensor `b`'s data offset is that of tensor `w`'s scales, whose 8 bytes it overlaps",
            |e| {
                let s = e.tensor(W).scales.offset;
                e.tensor(B).data.offset = s;
            }),
        case!("gap", "mixed", "Gap", Open, "§9.2",
            "tensor `b`'s data offset is 64 past its canonical offset (aligned, in bounds)",
            |e| {
                let t = e.tensor(B);
                t.data.offset = (t.data.offset.get() + 64).into();
            }),
        case!("trailing_bytes_after_last_section", "mixed", "TrailingBytes", Open, "§9.3",
            "64 zero bytes appended and file_size raised to match: bytes after the last section",
            |e| {
                e.bytes().extend_from_slice(&[0; 64]);
                let p = e.preamble();
                p.file_size = (p.file_size.get() + 64).into();
            }),
        // Step 9: metadata, LUT values.
        case!("bad_metadata_not_object", "mixed", "BadMetadata", Open, "§7",
            "the metadata is a JSON array (padded with spaces to its length)",
            |e| e.replace_metadata(br#"["qins.writer","qins-conformance"]"#)),
        case!("bad_metadata_value_not_string", "mixed", "BadMetadata", Open, "§7",
            "the metadata is {\"qins.writer\":1}: a value that is not a string",
            |e| e.replace_metadata(br#"{"qins.writer":1}"#)),
        case!("bad_metadata_duplicate_key", "mixed", "BadMetadata", Open, "§7",
            "the metadata is {\"a\":\"1\",\"a\":\"2\"}: a duplicate key",
            |e| e.replace_metadata(br#"{"a":"1","a":"2"}"#)),
        case!("bad_metadata_not_utf8", "mixed", "BadMetadata", Open, "§7",
            "the metadata is {\"a\":\"\\xff\"}: not UTF-8",
            |e| e.replace_metadata(b"{\"a\":\"\xff\"}")),
        case!("bad_metadata_syntax", "mixed", "BadMetadata", Open, "§7",
            "the metadata is {\"a\":\"1\",}: not JSON (a trailing comma)",
            |e| e.replace_metadata(br#"{"a":"1",}"#)),
        case!("bad_metadata_bom", "mixed", "BadMetadata", Open, "§7",
            "the metadata starts with a UTF-8 byte-order mark (EF BB BF) before {\"a\":\"1\"}",
            |e| e.replace_metadata(b"\xEF\xBB\xBF{\"a\":\"1\"}")),
        case!("bad_metadata_lone_surrogate", "mixed", "BadMetadata", Open, "§7",
            "the metadata is {\"a\":\"\\ud800\"}: an escape that is a lone surrogate",
            |e| e.replace_metadata(br#"{"a":"\ud800"}"#)),
        case!("bad_metadata_duplicate_escaped_key", "mixed", "BadMetadata", Open, "§7",
            "the metadata is {\"a\":\"1\",\"\\u0061\":\"2\"}: keys equal after unescaping",
            |e| e.replace_metadata(br#"{"a":"1","\u0061":"2"}"#)),
        case!("bad_lut_zero_nonzero", "mixed", "BadLut", Open, "§10",
            "LUT[0] is 1.0 (LUT table CRC recomputed)",
            |e| e.set_lut_entry(0, 0, 0x3F80_0000)),
        case!("bad_lut_zero_negative_zero", "mixed", "BadLut", Open, "§10",
            "LUT[0] is -0.0, bits 0x80000000 (LUT table CRC recomputed)",
            |e| e.set_lut_entry(0, 0, 0x8000_0000)),
        case!("bad_lut_negative", "mixed", "BadLut", Open, "§10",
            "LUT[7] is negated (LUT table CRC recomputed)",
            |e| {
                let v = e.lut_entry(0, 7);
                e.set_lut_entry(0, 7, v | 0x8000_0000);
            }),
        case!("bad_lut_negative_zero", "mixed", "BadLut", Open, "§10",
            "LUT[200] is -0.0 (LUT table CRC recomputed)",
            |e| e.set_lut_entry(0, 200, 0x8000_0000)),
        case!("bad_lut_nan", "mixed", "BadLut", Open, "§10",
            "LUT[100] is NaN, bits 0x7fc00000 (LUT table CRC recomputed)",
            |e| e.set_lut_entry(0, 100, 0x7FC0_0000)),
        case!("bad_lut_infinite", "mixed", "BadLut", Open, "§10",
            "LUT[1] is +infinity (LUT table CRC recomputed)",
            |e| e.set_lut_entry(0, 1, 0x7F80_0000)),
        // Verification (§14).
        case!("data_checksum_lut_table", "mixed", "DataChecksum", Verify, "§14",
            "the lowest bit of LUT[128] flipped (still a valid entry), CRC left",
            |e| e.section_bytes(Section::LutTable)[4 * 128] ^= 1),
        case!("data_checksum_codes", "mixed", "DataChecksum", Verify, "§14",
            "the lowest bit of tensor `w`'s code 3 flipped, CRC left",
            |e| e.section_bytes(Section::Data(W))[3] ^= 1),
        case!("data_checksum_signs", "mixed", "DataChecksum", Verify, "§14",
            "tensor `w`'s sign bit 0 flipped, CRC left",
            |e| e.section_bytes(Section::Signs(W))[0] ^= 1),
        case!("data_checksum_scales", "mixed", "DataChecksum", Verify, "§14",
            "the lowest mantissa bit of tensor `w`'s row scale 0 flipped (still positive), CRC left",
            |e| e.section_bytes(Section::Scales(W))[0] ^= 1),
        case!("data_checksum_raw", "mixed", "DataChecksum", Verify, "§14",
            "the lowest bit of raw tensor `b`'s first byte flipped, CRC left",
            |e| e.section_bytes(Section::Data(B))[0] ^= 1),
        case!("data_checksum_asset", "mixed", "DataChecksum", Verify, "§14",
            "asset `1_Pooling/config.json`'s byte 2 changes case (bit 5 flipped), CRC left",
            |e| e.section_bytes(Section::Asset(POOLING))[2] ^= 0x20),
        case!("non_zero_padding_after_header", "mixed", "NonZeroPadding", Verify, "§9.2",
            "the last padding byte between the header block and the LUT table is 0x01",
            |e| {
                let at = e.section(Section::LutTable).offset.get() as usize - 1;
                assert!(at >= e.header_end(), "the base needs padding after its header");
                e.bytes()[at] = 0x01;
            }),
        case!("non_zero_padding_between_sections", "mixed", "NonZeroPadding", Verify, "§9.2",
            "the first padding byte after tensor `w`'s scales is 0x80",
            |e| {
                let s = e.section(Section::Scales(W));
                let at = (s.offset.get() + s.length.get()) as usize;
                assert!(at < e.section(Section::Data(B)).offset.get() as usize);
                e.bytes()[at] = 0x80;
            }),
        case!("stray_sign_bits", "mixed", "StraySignBits", Verify, "§11.2",
            "bit 7 of tensor `w`'s last sign byte (10 elements: bits 2 to 7 unused) set, signs CRC recomputed",
            |e| {
                e.section_bytes(Section::Signs(W))[1] |= 0x80;
                e.refresh_crc(Section::Signs(W));
            }),
        case!("bad_scale_zero", "mixed", "BadScale", Verify, "§11.3",
            "tensor `w`'s row scale 1 is 0.0, scales CRC recomputed",
            |e| e.set_scale(W, 1, 0)),
        case!("bad_scale_negative", "mixed", "BadScale", Verify, "§11.3",
            "tensor `w`'s row scale 1 is negated, scales CRC recomputed",
            |e| {
                let v = e.scale(W, 1);
                e.set_scale(W, 1, v | 0x8000_0000);
            }),
        case!("bad_scale_nan", "mixed", "BadScale", Verify, "§11.3",
            "tensor `w`'s row scale 1 is NaN, bits 0x7fc00000, scales CRC recomputed",
            |e| e.set_scale(W, 1, 0x7FC0_0000)),
        case!("bad_scale_infinite", "mixed", "BadScale", Verify, "§11.3",
            "tensor `w`'s row scale 0 is +infinity, scales CRC recomputed",
            |e| e.set_scale(W, 0, 0x7F80_0000)),
        // Two faults in one file: the one checked first (§17, §14) must be reported.
        case!("order_header_checksum_before_reserved", "empty", "HeaderChecksum", Open, "§17",
            "the reserved u32 at offset 60 is 1 and the header CRC left as it was: step 4 before 5",
            |e| {
                e.preamble().reserved0 = 1.into();
                e.keep_header_crc();
            }),
        case!("order_name_range_before_name_length", "mixed", "OutOfBounds", Open, "§17",
            "tensor `b`'s name_len is 5000: beyond the string table and beyond 4096 bytes; the \
             range is checked first",
            |e| e.tensor(B).name_len = 5000.into()),
        case!("order_bad_lut_before_data_checksum", "mixed", "BadLut", Open, "§10",
            "LUT[0] is 1.0 and the LUT table CRC left as it was: LUT values are checked at open",
            |e| e.section_bytes(Section::LutTable)[..4].copy_from_slice(&1.0f32.to_le_bytes())),
        case!("order_padding_before_checksum", "mixed", "NonZeroPadding", Verify, "§14",
            "the padding byte before tensor `b`'s data is 0x01 and `b`'s first byte flipped (CRC \
             left): a section's padding is checked before its CRC",
            |e| {
                let at = e.section(Section::Data(B)).offset.get() as usize;
                e.bytes()[at - 1] = 0x01;
                e.bytes()[at] ^= 1;
            }),
        case!("order_checksum_before_stray_sign_bits", "mixed", "DataChecksum", Verify, "§14",
            "bit 7 of tensor `w`'s last sign byte set, signs CRC left: CRCs before sign bits",
            |e| e.section_bytes(Section::Signs(W))[1] |= 0x80),
        case!("order_stray_sign_bits_before_bad_scale", "mixed", "StraySignBits", Verify, "§14",
            "bit 7 of tensor `w`'s last sign byte set and row scale 0 is 0.0, both CRCs \
             recomputed: sign bits before row scales",
            |e| {
                e.section_bytes(Section::Signs(W))[1] |= 0x80;
                e.refresh_crc(Section::Signs(W));
                e.set_scale(W, 0, 0);
            }),
    ]
}

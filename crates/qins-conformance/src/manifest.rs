//! The two manifest formats of the suite (`spec/conformance.md` §20.3): `NAME.expected.json`
//! beside each valid golden, and `invalid/manifest.json` for the negative goldens.
//!
//! Both are written by [`to_json`], a deterministic pretty printer: fields in declaration order,
//! map keys sorted, two-space indentation, arrays of scalars eight to a line, a final newline.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The `schema` value of an expected-values manifest.
pub const EXPECTED_SCHEMA: &str = "qins-conformance-expected/1";
/// The `schema` value of the negative-golden manifest.
pub const INVALID_SCHEMA: &str = "qins-conformance-invalid/1";

/// Tensors with at most this many elements list their decoded values (`values`).
pub const MAX_LISTED_VALUES: u64 = 1024;
/// Raw tensors and assets of at most this many bytes list their bytes (`hex`).
pub const MAX_LISTED_BYTES: u64 = 4096;

/// `NAME.expected.json`: what a reader must find in `NAME.qins`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    /// Always [`EXPECTED_SCHEMA`].
    pub schema: String,
    /// The golden's file name, e.g. `log_ranks.qins`.
    pub file: String,
    /// The file's length in bytes.
    pub file_size: u64,
    /// CRC-32 (§2) of the whole file, 8 lower-case hex digits: proves the copy is intact.
    pub file_crc32: String,
    /// `[version_major, version_minor]`.
    pub version: [u16; 2],
    /// The section alignment.
    pub alignment: u32,
    /// The metadata (§7) as a map; `{}` when `metadata_size` is 0.
    pub metadata: BTreeMap<String, String>,
    /// Every tensor, in record order.
    pub tensors: Vec<ExpectedTensor>,
    /// Every asset, in record order.
    pub assets: Vec<ExpectedAsset>,
}

/// One tensor of an [`Expected`] manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedTensor {
    /// The name.
    pub name: String,
    /// The source dtype's safetensors name (§13.1), e.g. `BF16`.
    pub dtype: String,
    /// The dimensions, outermost first; `[]` for a scalar.
    pub shape: Vec<u64>,
    /// `raw`, or the codec's registry name: `log`, `linear` (§12).
    pub storage: String,
    /// Whether the tensor has row scales (§11.3); always false for raw tensors.
    pub row_scales: bool,
    /// Encoded tensors: `param0` and `param1` as f64 bit patterns, 16 lower-case hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<[String; 2]>,
    /// The length of the byte string the CRC covers: `4 × numel` for an encoded tensor (its
    /// decoded f32 values, little-endian), the data length for a raw tensor.
    pub bytes: u64,
    /// CRC-32 of that byte string, 8 lower-case hex digits.
    pub crc32: String,
    /// Encoded tensors with at most [`MAX_LISTED_VALUES`] elements: every decoded value
    /// (§11.4) as an f32 bit pattern, 8 lower-case hex digits, in row-major order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    /// Raw tensors of at most [`MAX_LISTED_BYTES`] bytes: the data, in lower-case hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hex: Option<String>,
}

/// One asset of an [`Expected`] manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedAsset {
    /// The name (a relative path).
    pub name: String,
    /// Its length in bytes.
    pub size: u64,
    /// CRC-32 of its bytes, 8 lower-case hex digits.
    pub crc32: String,
    /// Assets of at most [`MAX_LISTED_BYTES`] bytes: the bytes in lower-case hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hex: Option<String>,
}

/// `invalid/manifest.json`: every negative golden and how it must be rejected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidManifest {
    /// Always [`INVALID_SCHEMA`].
    pub schema: String,
    /// The negative goldens, grouped by the step of §17 that rejects them.
    pub cases: Vec<InvalidEntry>,
}

/// One negative golden.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidEntry {
    /// The file name in `invalid/`.
    pub file: String,
    /// The error kind of §17 a reader must report first, e.g. `BadMagic`.
    pub kind: String,
    /// `open` (§17 steps 1–9: opening fails) or `verify` (opening succeeds, verification
    /// (§14) fails).
    pub stage: String,
    /// The spec section whose rule the file breaks, e.g. `§9.2`.
    pub spec: String,
    /// The valid golden it was made from, e.g. `mixed.qins`.
    pub base: String,
    /// The corruption, in one line.
    pub description: String,
}

/// The `schema` value of the set manifest (§20.5.2).
pub const SETS_SCHEMA: &str = "qins-conformance-sets/1";
/// The `schema` value of a valid set's expected contents (§20.5.3).
pub const SET_EXPECTED_SCHEMA: &str = "qins-conformance-set-expected/1";

/// `sets/manifest.json`: every valid and invalid set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetManifest {
    /// Always [`SETS_SCHEMA`].
    pub schema: String,
    /// The valid sets.
    pub valid: Vec<ValidSetEntry>,
    /// The invalid sets, in the order of the checks of §21.5.
    pub invalid: Vec<InvalidSetEntry>,
}

/// One valid set of [`SetManifest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidSetEntry {
    /// The directory, relative to `sets/`, e.g. `valid/three_shards`.
    pub dir: String,
    /// The index's file name.
    pub index: String,
    /// The shards' file names, in order.
    pub shards: Vec<String>,
    /// The expected contents, relative to `sets/`.
    pub expected: String,
    /// What the set covers, in one line.
    pub description: String,
}

/// One invalid set of [`SetManifest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidSetEntry {
    /// The directory, relative to `sets/`, e.g. `invalid/missing_shard`.
    pub dir: String,
    /// The file to open the set from, in `dir`.
    pub open: String,
    /// The error kind a reader must report.
    pub kind: String,
    /// `open` or `verify`.
    pub stage: String,
    /// The file the error concerns, in `dir`.
    pub file: String,
    /// The spec section whose rule the set breaks.
    pub spec: String,
    /// The valid set it was made from.
    pub base: String,
    /// The fault, in one line.
    pub description: String,
}

/// `sets/valid/NAME.expected.json`: what a reader must find in a valid set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetExpected {
    /// Always [`SET_EXPECTED_SCHEMA`].
    pub schema: String,
    /// The index's file name.
    pub index: String,
    /// The set id.
    pub set_id: String,
    /// The index's `format_version`.
    pub format_version: [u16; 2],
    /// Each shard's expected contents, in order.
    pub shards: Vec<Expected>,
}

/// `crc` as 8 lower-case hex digits.
pub fn crc_hex(crc: u32) -> String {
    format!("{crc:08x}")
}

/// `bytes` as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Serializes `value` as the suite's canonical JSON text (see the module docs).
///
/// serde_json's pretty printer keeps struct fields in declaration order and map keys sorted;
/// this then writes every array of scalars on its opening line if it has at most eight elements,
/// else eight to a line.
pub fn to_json<T: Serialize>(value: &T) -> String {
    let pretty = serde_json::to_string_pretty(value).expect("manifest types serialize");
    let lines: Vec<&str> = pretty.lines().collect();
    let mut out = String::with_capacity(pretty.len());
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        out.push_str(line);
        out.push('\n');
        i += 1;
        if !line.ends_with('[') {
            continue;
        }
        // An array opens: its elements are the lines up to the `]` at the same indentation.
        let indent = line.len() - line.trim_start().len();
        let close = (i..lines.len())
            .find(|&j| {
                let l = lines[j];
                l.len() - l.trim_start().len() == indent && l.trim_start().starts_with(']')
            })
            .expect("serde_json closes every array");
        let items = &lines[i..close];
        if items.iter().any(|l| l.ends_with('{') || l.ends_with('[')) {
            continue; // not an array of scalars: leave it to the outer loop
        }
        let items: Vec<&str> = items
            .iter()
            .map(|l| l.trim().trim_end_matches(','))
            .collect();
        if items.len() <= 8 {
            // Short: on the opening line, e.g. `"shape": [2, 3],`.
            out.pop();
            out.push_str(&items.join(", "));
            out.push_str(lines[close].trim_start());
            out.push('\n');
            i = close + 1;
            continue;
        }
        let pad = " ".repeat(indent + 2);
        for (k, chunk) in items.chunks(8).enumerate() {
            out.push_str(&pad);
            out.push_str(&chunk.join(", "));
            out.push_str(if (k + 1) * 8 < items.len() {
                ",\n"
            } else {
                "\n"
            });
        }
        i = close;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_stable_and_parses_back() {
        let m = InvalidManifest {
            schema: INVALID_SCHEMA.into(),
            cases: vec![InvalidEntry {
                file: "x.qins".into(),
                kind: "BadMagic".into(),
                stage: "open".into(),
                spec: "§3".into(),
                base: "empty.qins".into(),
                description: "a \"quoted\" word".into(),
            }],
        };
        let s = to_json(&m);
        assert!(s.ends_with("}\n"));
        assert_eq!(serde_json::from_str::<InvalidManifest>(&s).unwrap(), m);
        assert_eq!(
            to_json(&vec![vec![1, 2], vec![]]),
            "[\n  [1, 2],\n  []\n]\n"
        );
        let long: Vec<u32> = (0..17).collect();
        let s = to_json(&long);
        assert_eq!(
            s,
            "[\n  0, 1, 2, 3, 4, 5, 6, 7,\n  8, 9, 10, 11, 12, 13, 14, 15,\n  16\n]\n"
        );
        assert_eq!(serde_json::from_str::<Vec<u32>>(&s).unwrap(), long);
    }
}

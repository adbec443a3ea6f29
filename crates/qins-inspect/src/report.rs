//! The [`Report`]: everything the text and JSON views show, counted from the file's bytes.

use std::collections::BTreeMap;

use qins_format::{Codec, Dtype, Storage, LUT_BYTES};
use qins_read::Qins;
use serde::{Deserialize, Serialize};

use crate::sections::{Category, Header};

/// What `qins-inspect` reports about one file. Built by [`Report::new`] from a validated file;
/// rendered by [`crate::write_text`] and [`crate::write_json`]. The serde names of the fields
/// are the stable keys of the JSON document (see the crate documentation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The file's name as the caller gave it (for the binary: the path on the command line).
    pub file: String,
    /// The format version (§3, §15).
    pub version: Version,
    /// The preamble's counts and sizes (§3).
    pub header: HeaderFields,
    /// The metadata (§7), keys in ascending order.
    pub metadata: BTreeMap<String, String>,
    /// One entry per tensor, in file order.
    pub tensors: Vec<TensorReport>,
    /// One entry per asset, in file order.
    pub assets: Vec<AssetReport>,
    /// The used data sections in canonical order (§9.2), with the padding before each.
    pub sections: Vec<Section>,
    /// Every byte of the file attributed to exactly one category; the sum is the file size.
    pub bytes: ByteCounts,
    /// What the tensors would take in other dtypes, against the file size.
    pub totals: Totals,
    /// Whether every checksum was verified (§14) before the report was made; `false` means
    /// only the open-time validation (§17) was done.
    pub verified: bool,
}

/// A format version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// `version_major`.
    pub major: u16,
    /// `version_minor`.
    pub minor: u16,
}

/// The preamble's fields that describe the file (§3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderFields {
    /// Section alignment in bytes.
    pub alignment: u32,
    /// `file_size`: the file's length in bytes.
    pub file_size: u64,
    /// `header_size`: the header block's length, including its CRC.
    pub header_size: u64,
    /// `tensor_count`.
    pub tensor_count: u32,
    /// `asset_count`.
    pub asset_count: u32,
    /// `lut_count`: tables in the LUT table, one per encoded tensor.
    pub lut_count: u32,
    /// `strings_size`: the string table's length.
    pub strings_size: u32,
    /// `metadata_size`: the metadata JSON's length.
    pub metadata_size: u32,
    /// `required_features` (0 in 1.0).
    pub required_features: u64,
}

/// One tensor: how it is stored and what it costs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorReport {
    /// The name.
    pub name: String,
    /// The dimensions, outermost first (empty for a scalar).
    pub shape: Vec<u64>,
    /// The element count.
    pub numel: u64,
    /// The source dtype's safetensors name, e.g. `"BF16"`.
    pub dtype: String,
    /// `"raw"`, or the codec name (`"log"`, `"linear"`), with `"+rows"` when the tensor has
    /// row scales.
    pub encoding: String,
    /// The codec name, `null` for a raw tensor.
    pub codec: Option<String>,
    /// Whether the tensor has one scale per row (§11.3).
    pub row_scales: bool,
    /// The codec parameters (§12), `null` for a raw tensor.
    pub params: Option<Params>,
    /// The tensor's table in the LUT table (§10), `null` for a raw tensor.
    pub lut_index: Option<u32>,
    /// The bytes of the tensor's own sections.
    pub bytes: TensorBytes,
    /// Bytes in the source dtype: `numel × bits(dtype) / 8`.
    pub source_bytes: u64,
    /// Bytes as F32 (floating-point dtypes at 32 bits per element; others at their own size).
    pub f32_bytes: u64,
    /// Bytes as BF16 (floating-point dtypes at 16 bits per element; others at their own size).
    pub bf16_bytes: u64,
    /// `bytes.stored × 8 / numel`: the tensor's own sections, without its table and padding;
    /// `null` for an empty tensor.
    pub bits_per_weight: Option<f64>,
    /// `(bytes.stored + 1024) × 8 / numel` for an encoded tensor, counting its 1 KiB table;
    /// the same as `bits_per_weight` for a raw tensor; `null` for an empty tensor.
    pub bits_per_weight_with_lut: Option<f64>,
    /// `source_bytes / bytes.stored`; `null` when nothing is stored.
    pub ratio_source: Option<f64>,
    /// `f32_bytes / bytes.stored`; `null` when nothing is stored.
    pub ratio_f32: Option<f64>,
    /// `bf16_bytes / bytes.stored`; `null` when nothing is stored.
    pub ratio_bf16: Option<f64>,
}

/// The codec parameters of an encoded tensor (§12), tagged by `"codec"` in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "codec", rename_all = "lowercase")]
pub enum Params {
    /// `log` (§12.1).
    Log {
        /// `param0`: the natural log of the smallest non-zero magnitude.
        log_min: f64,
        /// `param1`: the natural log of the largest magnitude.
        log_max: f64,
        /// `e^log_min` (of the values divided by their row scale, with row scales).
        min_magnitude: f64,
        /// `e^log_max` (of the values divided by their row scale, with row scales).
        max_magnitude: f64,
    },
    /// `linear` (§12.2).
    Linear {
        /// `param0`: the largest magnitude.
        max_abs: f64,
    },
    /// `lloyd` (§12.3).
    Lloyd {
        /// `param0`: the largest magnitude.
        max_abs: f64,
        /// `param1`: the fit's estimate of the relative mean squared error.
        rel_err: f64,
    },
    /// `lloyd-rows` (§12.4).
    #[serde(rename = "lloyd-rows")]
    LloydRows {
        /// `param0`: the largest magnitude of the values divided by their row scale (1 or 0).
        max_abs: f64,
        /// `param1`: the fit's estimate of the decoded tensor's relative mean squared error.
        rel_err: f64,
    },
}

/// The bytes of one tensor's sections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorBytes {
    /// The `data` section: raw bytes or codes.
    pub data: u64,
    /// The `signs` section (0 for a raw tensor).
    pub signs: u64,
    /// The `scales` section (0 without row scales).
    pub scales: u64,
    /// `data + signs + scales`.
    pub stored: u64,
}

/// One asset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetReport {
    /// The path relative to the model directory.
    pub name: String,
    /// Its length in bytes.
    pub bytes: u64,
}

/// One used data section (§9.1, §9.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    /// The name verification errors use: `lut table`, `tensor "NAME" data|signs|scales`,
    /// `asset "NAME"`.
    pub name: String,
    /// What the section holds.
    pub category: Category,
    /// Absolute file offset.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// The CRC-32 stored in its record.
    pub crc: u32,
    /// Zero bytes between the previous section's end (or the header's) and this offset.
    pub padding_before: u64,
}

/// Every byte of the file, attributed to exactly one category (§9.3, §14).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteCounts {
    /// The header block: preamble, records, string table, metadata, header CRC.
    pub header: u64,
    /// The LUT table.
    pub luts: u64,
    /// Codes of encoded tensors.
    pub codes: u64,
    /// Sign bits of encoded tensors.
    pub signs: u64,
    /// Row scales of encoded tensors.
    pub row_scales: u64,
    /// Raw tensors.
    pub raw: u64,
    /// Assets.
    pub assets: u64,
    /// Zero padding between sections, summed from the gaps.
    pub padding: u64,
    /// The sum of the above, which equals `header.file_size`.
    pub total: u64,
}

/// The model's tensors in other dtypes, against the file size (all of it: header, tables,
/// assets and padding included).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Elements over all tensors.
    pub numel: u64,
    /// The tensors in their source dtypes.
    pub source_bytes: u64,
    /// The tensors as F32 (floating-point tensors at 4 bytes per element, others unchanged).
    pub f32_bytes: u64,
    /// The tensors as BF16 (floating-point tensors at 2 bytes per element, others unchanged).
    pub bf16_bytes: u64,
    /// The file size.
    pub file_bytes: u64,
    /// `source_bytes / file_bytes`.
    pub ratio_source: f64,
    /// `f32_bytes / file_bytes`.
    pub ratio_f32: f64,
    /// `bf16_bytes / file_bytes`.
    pub ratio_bf16: f64,
    /// `file_bytes × 8 / numel`: the whole file per weight; `null` without elements.
    pub bits_per_weight: Option<f64>,
}

/// Whether `dtype` is a real floating-point type, which a whole-model cast to F32 or BF16
/// converts (as `torch.nn.Module.to(dtype)` does); integers, BOOL and complex keep their size.
fn casts(dtype: Dtype) -> bool {
    dtype.is_float() && dtype != Dtype::C64
}

fn bytes_of(numel: u64, bits: u32) -> u64 {
    numel.saturating_mul(u64::from(bits)) / 8
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den != 0).then(|| num as f64 / den as f64)
}

impl Report {
    /// Builds the report of a validated file. `name` is shown as the file's name; `verified`
    /// says whether the caller ran [`Qins::verify`] successfully.
    ///
    /// # Panics
    /// If the byte counts do not sum to the file size, which a validated file rules out (§9.3).
    pub fn new(file: &Qins<'_>, name: &str, verified: bool) -> Report {
        let h = Header::of(file);
        let p = h.preamble;
        let (major, minor) = file.version();
        let parts = h.parts();

        let mut bytes = ByteCounts {
            header: file.header_size(),
            ..ByteCounts::default()
        };
        for s in &parts {
            bytes.padding += s.padding_before;
            *match s.category {
                Category::Luts => &mut bytes.luts,
                Category::Codes => &mut bytes.codes,
                Category::Signs => &mut bytes.signs,
                Category::RowScales => &mut bytes.row_scales,
                Category::Raw => &mut bytes.raw,
                Category::Assets => &mut bytes.assets,
            } += s.length;
        }
        bytes.total = bytes.header
            + bytes.luts
            + bytes.codes
            + bytes.signs
            + bytes.row_scales
            + bytes.raw
            + bytes.assets
            + bytes.padding;
        assert_eq!(
            bytes.total,
            file.file_size(),
            "every byte of the file must be counted exactly once"
        );

        let tensors: Vec<TensorReport> = file
            .tensors()
            .zip(h.tensors)
            .map(|(t, r)| {
                let numel = t.numel();
                let dtype = t.dtype();
                let (codec, row_scales) = match t.storage() {
                    Storage::Raw => (None, false),
                    Storage::Encoded { codec, row_scales } => (Some(codec), row_scales),
                };
                let [p0, p1] = t.params();
                let params = codec.map(|c| match c {
                    Codec::Log => Params::Log {
                        log_min: p0,
                        log_max: p1,
                        min_magnitude: p0.exp(),
                        max_magnitude: p1.exp(),
                    },
                    Codec::Linear => Params::Linear { max_abs: p0 },
                    Codec::Lloyd => Params::Lloyd {
                        max_abs: p0,
                        rel_err: p1,
                    },
                    Codec::LloydRows => Params::LloydRows {
                        max_abs: p0,
                        rel_err: p1,
                    },
                });
                let tb = TensorBytes {
                    data: r.data.length.get(),
                    signs: r.signs.length.get(),
                    scales: r.scales.length.get(),
                    stored: r.data.length.get() + r.signs.length.get() + r.scales.length.get(),
                };
                debug_assert_eq!(tb.stored, t.stored_bytes());
                let source_bytes = bytes_of(numel, dtype.bits());
                let cast = |bits| {
                    if casts(dtype) {
                        bytes_of(numel, bits)
                    } else {
                        source_bytes
                    }
                };
                let (f32_bytes, bf16_bytes) = (cast(32), cast(16));
                let lut = if codec.is_some() { LUT_BYTES } else { 0 };
                let bpw = |extra: u64| ratio((tb.stored + extra) * 8, numel);
                TensorReport {
                    name: t.name().to_string(),
                    shape: t.shape().to_vec(),
                    numel,
                    dtype: dtype.name().to_string(),
                    encoding: match codec {
                        None => "raw".to_string(),
                        Some(c) if row_scales => format!("{c}+rows"),
                        Some(c) => c.name().to_string(),
                    },
                    codec: codec.map(|c| c.name().to_string()),
                    row_scales,
                    params,
                    lut_index: codec.map(|_| r.lut_index.get()),
                    bytes: tb,
                    source_bytes,
                    f32_bytes,
                    bf16_bytes,
                    bits_per_weight: bpw(0),
                    bits_per_weight_with_lut: bpw(lut),
                    ratio_source: ratio(source_bytes, tb.stored),
                    ratio_f32: ratio(f32_bytes, tb.stored),
                    ratio_bf16: ratio(bf16_bytes, tb.stored),
                }
            })
            .collect();

        let file_bytes = file.file_size();
        let sum = |f: fn(&TensorReport) -> u64| tensors.iter().map(f).sum::<u64>();
        let (numel, source_bytes) = (sum(|t| t.numel), sum(|t| t.source_bytes));
        let (f32_bytes, bf16_bytes) = (sum(|t| t.f32_bytes), sum(|t| t.bf16_bytes));
        let totals = Totals {
            numel,
            source_bytes,
            f32_bytes,
            bf16_bytes,
            file_bytes,
            ratio_source: source_bytes as f64 / file_bytes as f64,
            ratio_f32: f32_bytes as f64 / file_bytes as f64,
            ratio_bf16: bf16_bytes as f64 / file_bytes as f64,
            bits_per_weight: ratio(file_bytes * 8, numel),
        };

        Report {
            file: name.to_string(),
            version: Version { major, minor },
            header: HeaderFields {
                alignment: file.alignment(),
                file_size: file.file_size(),
                header_size: file.header_size(),
                tensor_count: p.tensor_count.get(),
                asset_count: p.asset_count.get(),
                lut_count: p.lut_count.get(),
                strings_size: p.strings_size.get(),
                metadata_size: p.metadata_size.get(),
                required_features: p.required_features.get(),
            },
            metadata: file.metadata().clone(),
            tensors,
            assets: file
                .assets()
                .map(|(name, data)| AssetReport {
                    name: name.to_string(),
                    bytes: data.len() as u64,
                })
                .collect(),
            sections: parts
                .into_iter()
                .map(|s| Section {
                    name: s.name,
                    category: s.category,
                    offset: s.offset,
                    length: s.length,
                    crc: s.crc,
                    padding_before: s.padding_before,
                })
                .collect(),
            bytes,
            totals,
            verified,
        }
    }
}

//! The valid goldens: each one's source description (plan and data), and how its file and its
//! expected values are produced from it.
//!
//! A golden's bytes are what [`qins_write::Writer`] writes for the case's [`Source`], followed,
//! for the one case that pins what readers must tolerate beyond what writers emit, by a
//! documented [`Patch`]. Expected values are computed from the source, independently of
//! `qins-read`: the codec of `qins-format` gives codes, signs and table, and
//! [`reference_decode`] applies the decode rule of §11.4 element by element.

use qins_format::codec::{encode, RowScales};
use qins_format::{Codec, Dtype, Storage};
use qins_write::{Asset, Plan, TensorSpec, Writer};

use crate::data::{f32_bits_bytes, f32_bytes, mix, pow2, to_dtype, weight, weights};
use crate::manifest::{
    crc_hex, hex, Expected, ExpectedAsset, ExpectedTensor, EXPECTED_SCHEMA, MAX_LISTED_BYTES,
    MAX_LISTED_VALUES,
};
use crate::Error;

/// The data of one tensor of a [`Source`], in plan order.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// A raw tensor's exact bytes (§13).
    Raw(Vec<u8>),
    /// An encoded tensor's values converted to f32, and its row scales if planned with them.
    Encoded {
        /// One value per element, row-major.
        values: Vec<f32>,
        /// One positive scale per row (§11.3).
        scales: Option<Vec<f32>>,
    },
}

/// A byte-level change applied to the writer's output, with the matching change to the
/// expected values. Used only where a golden must hold something a conforming writer does not
/// emit but every reader must accept.
#[derive(Clone, Copy)]
pub struct Patch {
    /// What the patch changes, in one line (it goes into the README).
    pub description: &'static str,
    /// Applies the patch to the file and to its expected values.
    pub apply: fn(&mut Vec<u8>, &mut Expected),
}

impl std::fmt::Debug for Patch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Patch")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

/// The source description of a golden: everything the writer needs to reproduce it.
#[derive(Clone, Debug)]
pub struct Source {
    /// Tensors, assets, metadata and alignment.
    pub plan: Plan,
    /// One entry per tensor of the plan.
    pub data: Vec<TensorData>,
    /// A change applied after writing, if any.
    pub patch: Option<Patch>,
}

/// One valid golden: `valid/NAME.qins`, `valid/NAME.expected.json`, `valid/NAME.inspect.txt`.
#[derive(Clone, Copy, Debug)]
pub struct ValidCase {
    /// The file stem.
    pub name: &'static str,
    /// What the golden covers, in one line (it goes into the README).
    pub covers: &'static str,
    /// Builds the source description.
    pub source: fn() -> Source,
}

impl ValidCase {
    /// The golden's file name, `NAME.qins`.
    pub fn file_name(&self) -> String {
        format!("{}.qins", self.name)
    }
}

/// Every valid golden, in the order the README lists them.
pub fn cases() -> Vec<ValidCase> {
    vec![
        ValidCase {
            name: "empty",
            covers: "no tensors, no assets, no metadata: a 100-byte header, 28 bytes of padding and \
                     an empty LUT table (lut_count 0) at offset 128",
            source: empty,
        },
        ValidCase {
            name: "log_ranks",
            covers: "codec `log` on ranks 0 to 4 (a scalar, numel 1), from F32, BF16 and F16 sources; \
                     lengths 1, 13, 15, 24, 12 (sign bytes with unused bits)",
            source: log_ranks,
        },
        ValidCase {
            name: "log_special",
            covers: "codec `log` edge cases: all-zero tensor (log_min = log_max = 0), constant \
                     magnitude (log_max == log_min, every code 1), mixed +0.0 and -0.0 (sign bit 0, \
                     decoded +0.0), one element, an empty tensor (shape [0, 5]), subnormal and \
                     extreme magnitudes (2^-149 to f32::MAX)",
            source: log_special,
        },
        ValidCase {
            name: "linear",
            covers: "codec `linear` from F16, BF16 and F32: magnitudes small enough to get code 1 \
                     (LUT[1] = 0, decoded -0.0 when negative), an all-zero tensor (max_abs = 0, \
                     all-zero table), magnitudes up to f32::MAX",
            source: linear,
        },
        ValidCase {
            name: "row_scales",
            covers: "ROW_SCALES with both codecs on ranks 0 to 3: one row (rank 0 and rank 1), \
                     scales that are not powers of two, zero rows (shape [0, 3]) and a zero row \
                     length (shape [2, 0]) with a used scales section of length 0",
            source: row_scales,
        },
        ValidCase {
            name: "lloyd",
            covers: "codec `lloyd` (§12.3): tables fitted to more than 255 non-empty bins, where \
                     the density-based candidate wins (`grid`, evenly spaced magnitudes) and \
                     where Ward's clustering wins (`dense`, `outliers`); few distinct magnitudes \
                     stored exactly (from BF16, with \
                     -0.0); magnitudes from 2^-149 to f32::MAX; all zero, a scalar, an empty \
                     tensor",
            source: lloyd,
        },
        ValidCase {
            name: "lloyd_rows",
            covers: "codec `lloyd-rows` (§12.4): scales that are the rows' largest magnitudes, \
                     rows of very different size (weights from 2^32 down to 2^9, and one row \
                     raised from 0 to the least weight, 1) fitted jointly; \
                     a row of zeros (scale: the largest of the other rows) from F16; a row of \
                     zeros beside a row of ±1e-10 (which a zero row's scale of 1 would have \
                     given weight 0 and an empty histogram); one row (rank 1); zero rows and a \
                     zero row length",
            source: lloyd_rows,
        },
        ValidCase {
            name: "raw_dtypes",
            covers: "every dtype of §13.1 stored raw, with NaN payloads, infinities, -0.0 and \
                     subnormals copied bit for bit; sub-byte dtypes (F4, F6_*); raw ranks 0 to 4; \
                     empty raw tensors (shape [2, 0, 3], and [0, 2^40, 2^40], whose numel is 0 \
                     without overflow)",
            source: raw_dtypes,
        },
        ValidCase {
            name: "assets_metadata",
            covers: "assets only (no tensors): a subdirectory (`1_Pooling/config.json`), an empty \
                     asset, all 256 byte values; metadata with the defined `qins.*` keys, JSON \
                     escapes, non-ASCII text, an empty key and an empty value",
            source: assets_metadata,
        },
        ValidCase {
            name: "names",
            covers: "a tensor name of 4096 bytes (the limit), non-ASCII tensor and asset names, a \
                     tensor name with `//` and `..` (path rules apply to assets only), a deep asset \
                     path",
            source: names,
        },
        ValidCase {
            name: "padding_min",
            covers: "alignment 64 with zero padding everywhere: the header and every section (LUT \
                     table, codes, signs, scales, raw data, asset) end exactly on a boundary",
            source: padding_min,
        },
        ValidCase {
            name: "padding_max",
            covers: "alignment 64 with maximal padding: the header, codes, signs, raw data and an \
                     asset end one byte after a boundary (63 bytes of padding); scales end 4 bytes \
                     after one (60, their maximum)",
            source: padding_max,
        },
        ValidCase {
            name: "align_4096",
            covers: "alignment 4096 (the writers' default, §18): the header padded to a page, an \
                     empty LUT table and an empty raw tensor sharing offset 4096 with a raw tensor",
            source: align_4096,
        },
        ValidCase {
            name: "mixed",
            covers: "a small model: one `log` tensor with row scales, one raw I32 tensor, two assets \
                     (one in a subdirectory), metadata; the base of most negative goldens",
            source: mixed,
        },
        ValidCase {
            name: "reader_leniency",
            covers: "what readers must accept beyond what writers emit: version 1.1 (§15), a name \
                     sharing string-table bytes with another and unreferenced string bytes (§6), \
                     metadata with whitespace, unsorted keys and `\\u` escapes (§7)",
            source: reader_leniency,
        },
        ValidCase {
            name: "sign_on_code_zero",
            covers: "a sign bit set on elements with code 0, which writers never write and readers \
                     do not check (§11.2): they decode to -0.0, with and without row scales",
            source: sign_on_code_zero,
        },
        ValidCase {
            name: "writer_rules_unchecked",
            covers: "files that break writer-only rules (§12, §18.2), which readers accept: a \
                     `lloyd` tensor with row scales, a `lloyd-rows` tensor without them and with \
                     max_abs 2.0, `-0.0` parameters where the constraints compare with 0 (§4)",
            source: writer_rules_unchecked,
        },
    ]
}

/// Builds a [`Source`] step by step.
pub(crate) struct Builder {
    plan: Plan,
    data: Vec<TensorData>,
}

impl Builder {
    pub(crate) fn new(alignment: u32) -> Self {
        let mut plan = Plan::new();
        plan.alignment = alignment;
        Builder {
            plan,
            data: Vec::new(),
        }
    }

    pub(crate) fn raw(mut self, name: &str, dtype: Dtype, shape: &[u64], bytes: Vec<u8>) -> Self {
        self.plan
            .tensors
            .push(TensorSpec::new(name, dtype, shape.to_vec(), Storage::Raw));
        self.data.push(TensorData::Raw(bytes));
        self
    }

    pub(crate) fn encoded(
        mut self,
        name: &str,
        dtype: Dtype,
        shape: &[u64],
        codec: Codec,
        values: Vec<f32>,
        scales: Option<Vec<f32>>,
    ) -> Self {
        for &v in &values {
            assert_eq!(
                to_dtype(v, dtype).to_bits(),
                v.to_bits(),
                "{name}: {v} is not a {dtype} value"
            );
        }
        self.plan.tensors.push(TensorSpec::new(
            name,
            dtype,
            shape.to_vec(),
            Storage::Encoded {
                codec,
                row_scales: scales.is_some(),
            },
        ));
        self.data.push(TensorData::Encoded { values, scales });
        self
    }

    pub(crate) fn asset(mut self, name: &str, data: &[u8]) -> Self {
        self.plan.assets.push(Asset {
            name: name.into(),
            data: data.to_vec(),
        });
        self
    }

    pub(crate) fn meta(mut self, key: &str, value: &str) -> Self {
        self.plan.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets metadata `key` to a run of `x` long enough that the header block ends `residue`
    /// bytes after a multiple of the alignment.
    fn header_residue(mut self, key: &str, residue: u64) -> Self {
        let align = u64::from(self.plan.alignment);
        for n in 0..align as usize {
            self.plan.metadata.insert(key.into(), "x".repeat(n));
            if header_size(&self.plan) % align == residue {
                return self;
            }
        }
        unreachable!("some length in 0..alignment hits every residue")
    }

    pub(crate) fn done(self) -> Source {
        Source {
            plan: self.plan,
            data: self.data,
            patch: None,
        }
    }
}

/// The header size the writer will give `plan` (§3).
pub fn header_size(plan: &Plan) -> u64 {
    let strings: usize = plan.tensors.iter().map(|t| t.name.len()).sum::<usize>()
        + plan.assets.iter().map(|a| a.name.len()).sum::<usize>();
    let metadata = if plan.metadata.is_empty() {
        0
    } else {
        serde_json::to_vec(&plan.metadata)
            .expect("string map")
            .len()
    };
    qins_format::header_size(
        plan.tensors.len() as u32,
        plan.assets.len() as u32,
        strings as u32,
        metadata as u32,
    )
    .expect("small plan")
}

const LOG: Codec = Codec::Log;
const LINEAR: Codec = Codec::Linear;
const LLOYD: Codec = Codec::Lloyd;
const LLOYD_ROWS: Codec = Codec::LloydRows;

/// `n` values of [`weight`] with one in 97 multiplied by 2^7 (outliers) when `outliers`.
fn heavy(seed: u64, n: usize, outliers: bool) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let w = weight(seed, i);
            if outliers && mix(seed ^ i).is_multiple_of(97) {
                w * pow2(7)
            } else {
                w
            }
        })
        .collect()
}

fn lloyd() -> Source {
    let few: Vec<f32> = (0..40)
        .map(|i| [0.5f32, -0.375, 0.0, -0.0, 3.0, -1.0e-3, 0.5, 96.0][i % 8])
        .map(|v| to_dtype(v, Dtype::BF16))
        .collect();
    // One value in each binade from the subnormals to 2^127, a run next to f32::MAX (the top
    // bin reaches past it) and a run near 1: more than 255 bins.
    let extreme: Vec<f32> = (0..255u32)
        .map(|e| f32::from_bits(((e << 23) | ((e * 40_503) & 0x7F_FFFF)).max(1)))
        .chain((0..23).map(|k| f32::from_bits(0x7F7F_FFFF - k * 977)))
        .chain((0..22).map(|k| 1.0 + k as f32 / 64.0))
        .enumerate()
        .map(|(i, v)| if i % 2 == 1 { -v } else { v })
        .collect();
    Builder::new(64)
        .encoded(
            "dense",
            Dtype::F32,
            &[32, 32],
            LLOYD,
            heavy(61, 1024, false),
            None,
        )
        .encoded(
            "grid",
            Dtype::F32,
            &[32, 32],
            LLOYD,
            (0..1024u64)
                .map(|i| {
                    let v = 0.5 + i as f32 / 1024.0;
                    if mix(63 ^ i) >> 63 == 1 {
                        -v
                    } else {
                        v
                    }
                })
                .collect(),
            None,
        )
        .encoded(
            "outliers",
            Dtype::F32,
            &[16, 64],
            LLOYD,
            heavy(62, 1024, true),
            None,
        )
        .encoded("few", Dtype::BF16, &[5, 8], LLOYD, few, None)
        .encoded("extreme", Dtype::F32, &[300], LLOYD, extreme, None)
        .encoded("all_zero", Dtype::F32, &[3, 4], LLOYD, vec![0.0; 12], None)
        .encoded("scalar", Dtype::F32, &[], LLOYD, vec![-0.75], None)
        .encoded("empty", Dtype::F32, &[0, 4], LLOYD, vec![], None)
        .done()
}

fn lloyd_rows() -> Source {
    let scales_of = |values: &[f32], shape: &[u64]| -> Vec<f32> {
        qins_format::codec::row_scales(LLOYD_ROWS, values, shape)
            .expect("finite values")
            .expect("lloyd-rows has row scales")
    };
    // 24 rows of 48 values, row r scaled by 2^(r div 2 - 6) (weights from about 2^9 to 2^32);
    // row 5 by 2^-40 (weight round(2^32 × 2^-80) = 0, raised to 1: it barely influences the
    // table).
    let shape = [24u64, 48];
    let mut rows: Vec<f32> = heavy(71, 24 * 48, true);
    for (i, v) in rows.iter_mut().enumerate() {
        let r = i / 48;
        *v *= if r == 5 {
            pow2(-40)
        } else {
            pow2(r as i32 / 2 - 6)
        };
    }
    let with_zero_row: Vec<f32> = (0..15u64)
        .map(|i| if i / 5 == 1 { 0.0 } else { weight(72, i) })
        .collect();
    // A row of zeros and a row far below 1: the row of zeros takes the other row's scale
    // (§12.4), not 1, so the other row has the largest scale and weight 2^32.
    let tiny_row = vec![0.0f32, 0.0, 1e-10, -1e-10];
    let one_row = heavy(73, 300, true);
    Builder::new(64)
        .encoded(
            "rows",
            Dtype::F32,
            &shape,
            LLOYD_ROWS,
            rows.clone(),
            Some(scales_of(&rows, &shape)),
        )
        .encoded(
            "zero_row",
            Dtype::F16,
            &[3, 5],
            LLOYD_ROWS,
            with_zero_row.clone(),
            Some(scales_of(&with_zero_row, &[3, 5])),
        )
        .encoded(
            "tiny_row",
            Dtype::F32,
            &[2, 2],
            LLOYD_ROWS,
            tiny_row.clone(),
            Some(scales_of(&tiny_row, &[2, 2])),
        )
        .encoded(
            "one_row",
            Dtype::F32,
            &[300],
            LLOYD_ROWS,
            one_row.clone(),
            Some(scales_of(&one_row, &[300])),
        )
        .encoded(
            "no_rows",
            Dtype::F32,
            &[0, 3],
            LLOYD_ROWS,
            vec![],
            Some(vec![]),
        )
        .encoded(
            "zero_row_length",
            Dtype::F32,
            &[2, 0],
            LLOYD_ROWS,
            vec![],
            Some(vec![]),
        )
        .done()
}

fn empty() -> Source {
    Builder::new(64).done()
}

fn log_ranks() -> Source {
    Builder::new(64)
        .encoded("scalar", Dtype::F32, &[], LOG, vec![-3.25], None)
        .encoded(
            "vector",
            Dtype::F32,
            &[13],
            LOG,
            weights(1, 13, Dtype::F32),
            None,
        )
        .encoded(
            "matrix",
            Dtype::BF16,
            &[3, 5],
            LOG,
            weights(2, 15, Dtype::BF16),
            None,
        )
        .encoded(
            "cube",
            Dtype::F16,
            &[2, 3, 4],
            LOG,
            weights(3, 24, Dtype::F16),
            None,
        )
        .encoded(
            "tesseract",
            Dtype::F32,
            &[2, 1, 3, 2],
            LOG,
            weights(4, 12, Dtype::F32),
            None,
        )
        .done()
}

fn log_special() -> Source {
    let extreme = [
        f32::MAX,
        -f32::MAX,
        f32::from_bits(1),
        -f32::from_bits(1),
        f32::MIN_POSITIVE,
        f32::from_bits(0x007F_FFFF),
        1.0,
        -65504.0,
        3.0e38,
        f32::from_bits(0x0001_0000),
        0.0,
        -1.5 * pow2(-126),
    ];
    Builder::new(64)
        .encoded("all_zero", Dtype::F32, &[4, 3], LOG, vec![0.0; 12], None)
        .encoded(
            "constant",
            Dtype::F32,
            &[3, 3],
            LOG,
            vec![0.75, -0.75, 0.0, 0.75, 0.75, -0.75, -0.0, 0.75, -0.75],
            None,
        )
        .encoded(
            "signed_zeros",
            Dtype::F32,
            &[11],
            LOG,
            vec![
                0.0, -0.0, 1.5, -0.0, -1.5, 0.0, -0.0, 0.375, -0.0, 0.0, -3.0,
            ],
            None,
        )
        .encoded("one", Dtype::BF16, &[1], LOG, vec![-42.5], None)
        .encoded("empty", Dtype::F32, &[0, 5], LOG, vec![], None)
        .encoded("extreme", Dtype::F32, &[12], LOG, extreme.to_vec(), None)
        .done()
}

fn linear() -> Source {
    Builder::new(64)
        .encoded(
            "half",
            Dtype::F16,
            &[4, 4],
            LINEAR,
            weights(11, 16, Dtype::F16),
            None,
        )
        .encoded(
            "tiny",
            Dtype::BF16,
            &[7],
            LINEAR,
            vec![100.0, -50.0, 0.1, -0.1, 0.0, -0.0, 25.0]
                .into_iter()
                .map(|v| to_dtype(v, Dtype::BF16))
                .collect(),
            None,
        )
        .encoded("zeros", Dtype::F32, &[5], LINEAR, vec![0.0; 5], None)
        .encoded(
            "big",
            Dtype::F32,
            &[2, 3],
            LINEAR,
            vec![f32::MAX, -f32::MAX / 2.0, 1.0, 1.0e30, -3.0e37, 0.0],
            None,
        )
        .done()
}

fn row_scales() -> Source {
    let scaled = |seed: u64, shape: &[u64], scales: &[f32], dtype: Dtype| -> Vec<f32> {
        let n: u64 = shape.iter().product();
        let row = shape.last().copied().unwrap_or(1);
        (0..n)
            .map(|i| to_dtype(weight(seed, i) * scales[(i / row) as usize], dtype))
            .collect()
    };
    let s1 = [0.5, 3.0, 1.0e-3, 1.0e4];
    let s2 = [1.0, 0.3, 7.0];
    let s3 = [0.1, 0.2, 0.3, 0.4];
    Builder::new(64)
        .encoded(
            "log_rows",
            Dtype::F32,
            &[4, 6],
            LOG,
            scaled(21, &[4, 6], &s1, Dtype::F32),
            Some(s1.to_vec()),
        )
        .encoded(
            "linear_rows",
            Dtype::BF16,
            &[3, 5],
            LINEAR,
            scaled(22, &[3, 5], &s2, Dtype::BF16),
            Some(s2.to_vec()),
        )
        .encoded(
            "one_row",
            Dtype::F32,
            &[7],
            LOG,
            scaled(23, &[7], &[3.0], Dtype::F32),
            Some(vec![3.0]),
        )
        .encoded(
            "scalar",
            Dtype::F32,
            &[],
            LOG,
            vec![-0.625],
            Some(vec![0.7]),
        )
        .encoded(
            "cube",
            Dtype::F16,
            &[2, 2, 3],
            LINEAR,
            scaled(24, &[2, 2, 3], &s3, Dtype::F16),
            Some(s3.to_vec()),
        )
        .encoded("no_rows", Dtype::F32, &[0, 3], LOG, vec![], Some(vec![]))
        .encoded(
            "zero_row_length",
            Dtype::F32,
            &[2, 0],
            LINEAR,
            vec![],
            Some(vec![]),
        )
        .done()
}

fn raw_dtypes() -> Source {
    let le16 = |v: &[u16]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let le64 = |v: &[u64]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let i64s: Vec<u64> = [i64::MIN, i64::MAX].iter().map(|&x| x as u64).collect();
    Builder::new(64)
        .raw("bool", Dtype::BOOL, &[5], vec![0, 1, 1, 0, 1])
        .raw("u8", Dtype::U8, &[7], vec![0, 1, 2, 127, 128, 254, 255])
        .raw(
            "i8",
            Dtype::I8,
            &[6],
            [0i8, 1, -1, 127, -128, 42].map(|x| x as u8).to_vec(),
        )
        .raw(
            "i16",
            Dtype::I16,
            &[5],
            le16(&[0, 1, (-1i16) as u16, i16::MAX as u16, i16::MIN as u16]),
        )
        .raw("u16", Dtype::U16, &[3], le16(&[0, 1, u16::MAX]))
        .raw(
            "i32",
            Dtype::I32,
            &[2, 2],
            f32_bits_bytes(&[0, (-1i32) as u32, i32::MAX as u32, i32::MIN as u32]),
        )
        .raw("u32", Dtype::U32, &[3], f32_bits_bytes(&[0, 1, u32::MAX]))
        .raw("i64", Dtype::I64, &[2], le64(&i64s))
        .raw("u64", Dtype::U64, &[2], le64(&[0, u64::MAX]))
        .raw(
            "f16",
            Dtype::F16,
            &[6],
            le16(&[0x0000, 0x8000, 0x3C00, 0x7C00, 0x7E01, 0x0001]),
        )
        .raw(
            "bf16",
            Dtype::BF16,
            &[5],
            le16(&[0x3F80, 0xBF80, 0x7F80, 0xFF81, 0x0001]),
        )
        .raw(
            "f32",
            Dtype::F32,
            &[7],
            f32_bits_bytes(&[
                0x0000_0000,
                0x8000_0000,
                0x3F80_0000,
                0x7F7F_FFFF,
                0x0000_0001,
                0x7FC0_0001,
                0xFF80_0000,
            ]),
        )
        .raw(
            "f64",
            Dtype::F64,
            &[4],
            le64(&[
                1.0f64.to_bits(),
                (-0.0f64).to_bits(),
                1,
                0x7FF8_0000_0000_0001,
            ]),
        )
        .raw(
            "f8_e5m2",
            Dtype::F8_E5M2,
            &[4],
            vec![0x00, 0x3C, 0x7C, 0xFF],
        )
        .raw(
            "f8_e4m3",
            Dtype::F8_E4M3,
            &[4],
            vec![0x00, 0x38, 0x7F, 0x80],
        )
        .raw("f8_e8m0", Dtype::F8_E8M0, &[3], vec![0x7F, 0x00, 0xFF])
        .raw(
            "f8_e4m3fnuz",
            Dtype::F8_E4M3FNUZ,
            &[3],
            vec![0x00, 0x40, 0x80],
        )
        .raw(
            "f8_e5m2fnuz",
            Dtype::F8_E5M2FNUZ,
            &[3],
            vec![0x00, 0x40, 0x80],
        )
        .raw("f4", Dtype::F4, &[2, 3], vec![0x21, 0x43, 0x65])
        .raw("f6_e2m3", Dtype::F6_E2M3, &[4], vec![0xFC, 0x0F, 0xA5])
        .raw(
            "f6_e3m2",
            Dtype::F6_E3M2,
            &[2, 4],
            vec![0x01, 0x23, 0x45, 0x67, 0x89, 0xAB],
        )
        .raw(
            "c64",
            Dtype::C64,
            &[2],
            f32_bytes(&[1.0, -2.0, 0.5, f32::NAN]),
        )
        .raw(
            "scalar_i64",
            Dtype::I64,
            &[],
            0x0123_4567_89AB_CDEFu64.to_le_bytes().to_vec(),
        )
        .raw("empty_f32", Dtype::F32, &[2, 0, 3], vec![])
        .raw("empty_wide", Dtype::U8, &[0, 1 << 40, 1 << 40], vec![])
        .raw(
            "rank4_u8",
            Dtype::U8,
            &[1, 2, 1, 3],
            vec![10, 20, 30, 40, 50, 60],
        )
        .done()
}

fn assets_metadata() -> Source {
    let all_bytes: Vec<u8> = (0..=255).collect();
    Builder::new(64)
        .asset("config.json", br#"{"model_type":"bert","hidden_size":4}"#)
        .asset(
            "1_Pooling/config.json",
            br#"{"pooling_mode_mean_tokens":true}"#,
        )
        .asset("empty.txt", b"")
        .asset("bytes.bin", &all_bytes)
        .meta("qins.writer", "qins-conformance")
        .meta("qins.source", "conformance/assets_metadata")
        .meta("qins.policy", r#"{"encode":["*.weight"],"raw":["*"]}"#)
        .meta(
            "note",
            "ünïcødé ✓ 🦀 \"quoted\" \\ back\\slash\nnew line\ttab \u{1} control",
        )
        .meta("", "an empty key")
        .meta("empty", "")
        .done()
}

/// The 4096-byte tensor name of the `names` golden.
pub fn long_name() -> String {
    let unit = "model.layers.0.attention.self.query.weight/";
    let mut s = unit.repeat(4096 / unit.len() + 1);
    s.truncate(4096);
    s
}

fn names() -> Source {
    Builder::new(64)
        .raw("ä", Dtype::U8, &[1], vec![1])
        .raw(&long_name(), Dtype::U8, &[1], vec![2])
        .raw("embeddings.wörd_€mbeddings", Dtype::U8, &[1], vec![3])
        .raw("a//b/../c", Dtype::U8, &[1], vec![4])
        .asset("données/é.txt", "café\n".as_bytes())
        .asset("a/b/c/d/e.json", b"{}")
        .done()
}

fn padding_min() -> Source {
    Builder::new(64)
        .encoded(
            "codes512",
            Dtype::F32,
            &[16, 32],
            LOG,
            weights(31, 512, Dtype::F32),
            Some((0..16).map(|r| 1.0 + r as f32 / 8.0).collect()),
        )
        .raw("raw64", Dtype::U8, &[64], (0..64).collect())
        .raw(
            "raw_f32",
            Dtype::F32,
            &[4, 4],
            f32_bytes(&weights(32, 16, Dtype::F32)),
        )
        .asset("asset64.bin", &[0xA5; 64])
        .header_residue("pad", 0)
        .done()
}

fn padding_max() -> Source {
    Builder::new(64)
        .encoded(
            "codes513",
            Dtype::F32,
            &[513],
            LOG,
            weights(41, 513, Dtype::F32),
            Some(vec![0.5]),
        )
        .raw("raw65", Dtype::U8, &[65], (0..65).collect())
        .asset("asset65.bin", &[0x5A; 65])
        .asset("last.bin", &[0x01])
        .header_residue("pad", 1)
        .done()
}

fn align_4096() -> Source {
    Builder::new(4096)
        .raw("empty", Dtype::F32, &[0], vec![])
        .raw("w", Dtype::F32, &[2, 2], f32_bytes(&[1.0, -2.0, 0.5, 0.25]))
        .meta("qins.writer", "qins-conformance")
        .done()
}

fn mixed() -> Source {
    let scales = [2.0, 0.25];
    let values: Vec<f32> = (0..10u64)
        .map(|i| weight(51, i) * scales[(i / 5) as usize])
        .collect();
    Builder::new(64)
        .encoded("w", Dtype::F32, &[2, 5], LOG, values, Some(scales.to_vec()))
        .raw(
            "b",
            Dtype::I32,
            &[3],
            f32_bits_bytes(&[1, (-2i32) as u32, 0x1234_5678]),
        )
        .asset("config.json", br#"{"model_type":"bert"}"#)
        .asset(
            "1_Pooling/config.json",
            br#"{"pooling_mode_mean_tokens":true}"#,
        )
        .meta("qins.source", "conformance/mixed")
        .meta("qins.writer", "qins-conformance")
        .done()
}

/// The metadata the `reader_leniency` patch puts in place of the writer's.
const LENIENT_METADATA: &str = " { \"b\" : \"\\u00e9\\ud83e\\udd80\",\n\t\"a\":\"1\" } ";

fn reader_leniency() -> Source {
    // The writer's metadata is {"a":"1","b":"xx…"}, as long as LENIENT_METADATA.
    let writer_len = br#"{"a":"1","b":""}"#.len();
    let mut s = Builder::new(64)
        .raw("ab", Dtype::U8, &[2], vec![7, 8])
        .raw("xy", Dtype::U8, &[1], vec![9])
        .asset("cfg", b"asset")
        .meta("a", "1")
        .meta("b", &"x".repeat(LENIENT_METADATA.len() - writer_len))
        .done();
    s.patch = Some(Patch {
        description: "version_minor set to 1; tensor 1's name range moved to the second byte of \
                      `ab` (so it is `b`, and the bytes `xy` are referenced by no name); the \
                      metadata replaced by an equivalent-length text with whitespace, unsorted \
                      keys and `\\u` escapes; header CRC recomputed",
        apply: patch_leniency,
    });
    s
}

fn patch_leniency(bytes: &mut Vec<u8>, expected: &mut Expected) {
    let mut e = crate::edit::Editor::new(std::mem::take(bytes));
    e.preamble().version_minor = 1.into();
    let t = e.tensor(1);
    t.name_offset = 1.into();
    t.name_len = 1.into();
    e.metadata_mut()
        .copy_from_slice(LENIENT_METADATA.as_bytes());
    *bytes = e.finish();
    expected.version = [1, 1];
    expected.tensors[1].name = "b".into();
    expected.metadata = serde_json::from_str(LENIENT_METADATA).expect("valid JSON");
}

/// Tensor indices in `sign_on_code_zero.qins`, and the elements whose code is 0 (zeros).
const SIGN_TENSORS: [(usize, &[usize]); 2] = [(0, &[2, 7]), (1, &[0, 5])];

fn sign_on_code_zero() -> Source {
    let plain = vec![0.5, -0.25, 0.0, 0.125, -1.0, 0.75, 2.0, 0.0, -3.0];
    let scaled = vec![0.0, -0.5, 0.25, 1.0, -2.0, 0.0];
    let mut s = Builder::new(64)
        .encoded("plain", Dtype::F32, &[9], LOG, plain, None)
        .encoded(
            "scaled",
            Dtype::F32,
            &[2, 3],
            LOG,
            scaled,
            Some(vec![0.5, 4.0]),
        )
        .meta("qins.writer", "qins-conformance")
        .done();
    s.patch = Some(Patch {
        description: "the sign bits of the code-0 elements (2 and 7 of `plain`, 0 and 5 of \
                      `scaled`) set, the signs sections' CRCs and the header CRC recomputed",
        apply: patch_sign_on_code_zero,
    });
    s
}

fn patch_sign_on_code_zero(bytes: &mut Vec<u8>, expected: &mut Expected) {
    use crate::edit::Section;
    let mut e = crate::edit::Editor::new(std::mem::take(bytes));
    for (k, zeros) in SIGN_TENSORS {
        let codes = e.section_bytes(Section::Data(k)).to_vec();
        let values = expected.tensors[k].values.as_mut().expect("listed values");
        for &i in zeros {
            assert_eq!(codes[i], 0, "element {i} of tensor {k} has code 0");
            e.section_bytes(Section::Signs(k))[i / 8] |= 1 << (i % 8);
            values[i] = format!("{:08x}", (-0.0f32).to_bits());
        }
        e.refresh_crc(Section::Signs(k));
        let decoded: Vec<u8> = values
            .iter()
            .flat_map(|v| u32::from_str_radix(v, 16).expect("hex").to_le_bytes())
            .collect();
        expected.tensors[k].crc32 = crc_hex(crc32fast::hash(&decoded));
    }
    *bytes = e.finish();
}

/// Tensor indices in `writer_rules_unchecked.qins`.
const RELABEL_LLOYD: usize = 0; // written as `log` with row scales, relabelled `lloyd`
const RELABEL_LLOYD_ROWS: usize = 1; // written as `log` without row scales, relabelled `lloyd-rows`
const NEG_ZERO_LINEAR: usize = 2; // `linear`, param1 = -0.0
const NEG_ZERO_LLOYD: usize = 3; // `lloyd`, all zero, params -0.0 and -0.0

fn writer_rules_unchecked() -> Source {
    let w = |seed, n| weights(seed, n, Dtype::F32);
    let mut s = Builder::new(64)
        .encoded(
            "lloyd_with_scales",
            Dtype::F32,
            &[2, 4],
            LOG,
            w(81, 8),
            Some(vec![2.0, 0.5]),
        )
        .encoded(
            "lloyd_rows_without_scales",
            Dtype::F32,
            &[2, 4],
            LOG,
            w(82, 8),
            None,
        )
        .encoded(
            "linear_negative_zero",
            Dtype::F32,
            &[6],
            LINEAR,
            w(83, 6),
            None,
        )
        .encoded(
            "lloyd_negative_zero",
            Dtype::F32,
            &[4],
            LLOYD,
            vec![0.0; 4],
            None,
        )
        .meta("qins.writer", "qins-conformance")
        .done();
    s.patch = Some(Patch {
        description: "tensor 0 (a `log` tensor with row scales) relabelled `lloyd` with params \
                      (2.5, 0.125); tensor 1 (`log`, no row scales) relabelled `lloyd-rows` with \
                      params (2.0, 0.5); tensor 2's (`linear`) param1 set to -0.0; tensor 3's \
                      (`lloyd`, all zero) params set to (-0.0, -0.0); header CRC recomputed",
        apply: patch_writer_rules,
    });
    s
}

fn patch_writer_rules(bytes: &mut Vec<u8>, expected: &mut Expected) {
    let param = |t: &ExpectedTensor, i: usize| {
        let bits = &t.params.as_ref().expect("an encoded tensor")[i];
        f64::from_bits(u64::from_str_radix(bits, 16).expect("hex"))
    };
    let linear_max_abs = param(&expected.tensors[NEG_ZERO_LINEAR], 0);
    let mut e = crate::edit::Editor::new(std::mem::take(bytes));
    for (k, codec, params) in [
        (RELABEL_LLOYD, Some(LLOYD), [2.5, 0.125]),
        (RELABEL_LLOYD_ROWS, Some(LLOYD_ROWS), [2.0, 0.5]),
        (NEG_ZERO_LINEAR, None, [linear_max_abs, -0.0]),
        (NEG_ZERO_LLOYD, None, [-0.0, -0.0]),
    ] {
        let t = e.tensor(k);
        if let Some(c) = codec {
            t.codec = c.id().into();
            expected.tensors[k].storage = c.name().into();
        }
        t.param0 = params[0].into();
        t.param1 = params[1].into();
        expected.tensors[k].params = Some(params.map(|p| format!("{:016x}", p.to_bits())));
    }
    *bytes = e.finish();
}

/// Writes `source` with `qins-write` (into a temporary directory) and applies its patch to the
/// bytes; returns the bytes and the expected values, whose file size and CRC are those of the
/// final bytes.
pub fn build(case: &ValidCase) -> Result<(Vec<u8>, Expected), Error> {
    let source = (case.source)();
    let mut bytes = write(&source).map_err(|e| Error::Write {
        case: case.name.into(),
        source: e,
    })?;
    let mut expected = expected(&case.file_name(), &source).map_err(|reason| Error::Source {
        case: case.name.into(),
        reason,
    })?;
    if let Some(p) = source.patch {
        (p.apply)(&mut bytes, &mut expected);
    }
    expected.file_size = bytes.len() as u64;
    expected.file_crc32 = crc_hex(crc32fast::hash(&bytes));
    Ok((bytes, expected))
}

/// The writer's output for `source`, before any patch.
pub fn write(source: &Source) -> Result<Vec<u8>, qins_write::WriteError> {
    let dir = tempfile::tempdir().map_err(|e| qins_write::WriteError::Io {
        path: std::env::temp_dir(),
        source: e,
    })?;
    let path = dir.path().join("golden.qins");
    let mut w = Writer::create(&path, source.plan.clone(), false)?;
    for d in &source.data {
        match d {
            TensorData::Raw(bytes) => w.write_raw(bytes)?,
            TensorData::Encoded { values, scales } => w.encode_tensor(values, scales.as_deref())?,
        }
    }
    w.finish()?;
    std::fs::read(&path).map_err(|e| qins_write::WriteError::Io { path, source: e })
}

/// The decode rule of §11.4, element by element, written for clarity rather than speed:
/// `v = sign ? -LUT[code] : LUT[code]`, times the row's scale (one f32 multiplication).
pub fn reference_decode(
    lut: &[f32; 256],
    codes: &[u8],
    signs: &[u8],
    scales: Option<(&[f32], u64)>,
) -> Vec<f32> {
    codes
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let m = lut[usize::from(c)];
            let negative = (signs[i / 8] >> (i % 8)) & 1 == 1;
            let v = if negative { -m } else { m };
            match scales {
                Some((s, row_len)) => v * s[i / row_len as usize],
                None => v,
            }
        })
        .collect()
}

/// The expected values of `source`, computed from it (not from a file). `file_size` and
/// `file_crc32` are left empty for [`build`] to fill in.
pub fn expected(file: &str, source: &Source) -> Result<Expected, String> {
    let plan = &source.plan;
    if plan.tensors.len() != source.data.len() {
        return Err("one data entry per tensor is needed".into());
    }
    let mut tensors = Vec::new();
    for (spec, data) in plan.tensors.iter().zip(&source.data) {
        let numel: u64 = spec.shape.iter().product();
        let t = match (spec.storage, data) {
            (Storage::Raw, TensorData::Raw(bytes)) => ExpectedTensor {
                name: spec.name.clone(),
                dtype: spec.dtype.name().into(),
                shape: spec.shape.clone(),
                storage: "raw".into(),
                row_scales: false,
                params: None,
                bytes: bytes.len() as u64,
                crc32: crc_hex(crc32fast::hash(bytes)),
                values: None,
                hex: (bytes.len() as u64 <= MAX_LISTED_BYTES).then(|| hex(bytes)),
            },
            (Storage::Encoded { codec, row_scales }, TensorData::Encoded { values, scales }) => {
                if row_scales != scales.is_some() {
                    return Err(format!("{}: row scales do not match the plan", spec.name));
                }
                let rs = scales
                    .as_deref()
                    .map(|s| RowScales::new(s, &spec.shape))
                    .transpose()
                    .map_err(|e| format!("{}: {e}", spec.name))?;
                let enc = encode(codec, values, rs.as_ref())
                    .map_err(|e| format!("{}: {e}", spec.name))?;
                let row_len = spec.shape.last().copied().unwrap_or(1);
                let decoded = reference_decode(
                    enc.quantizer.lut(),
                    &enc.codes,
                    &enc.signs,
                    scales.as_deref().map(|s| (s, row_len)),
                );
                let bytes = f32_bytes(&decoded);
                let [p0, p1] = enc.quantizer.params();
                ExpectedTensor {
                    name: spec.name.clone(),
                    dtype: spec.dtype.name().into(),
                    shape: spec.shape.clone(),
                    storage: codec.name().into(),
                    row_scales,
                    params: Some([
                        format!("{:016x}", p0.to_bits()),
                        format!("{:016x}", p1.to_bits()),
                    ]),
                    bytes: bytes.len() as u64,
                    crc32: crc_hex(crc32fast::hash(&bytes)),
                    values: (numel <= MAX_LISTED_VALUES).then(|| {
                        decoded
                            .iter()
                            .map(|v| format!("{:08x}", v.to_bits()))
                            .collect()
                    }),
                    hex: None,
                }
            }
            _ => return Err(format!("{}: data does not match the storage", spec.name)),
        };
        tensors.push(t);
    }
    let assets = plan
        .assets
        .iter()
        .map(|a| ExpectedAsset {
            name: a.name.clone(),
            size: a.data.len() as u64,
            crc32: crc_hex(crc32fast::hash(&a.data)),
            hex: (a.data.len() as u64 <= MAX_LISTED_BYTES).then(|| hex(&a.data)),
        })
        .collect();
    Ok(Expected {
        schema: EXPECTED_SCHEMA.into(),
        file: file.into(),
        file_size: 0,
        file_crc32: String::new(),
        version: [
            qins_format::VERSION_MAJOR,
            qins_format::set::minor_version(plan.metadata.keys()),
        ],
        alignment: plan.alignment,
        metadata: plan.metadata.clone(),
        tensors,
        assets,
    })
}

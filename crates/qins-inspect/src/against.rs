//! `--against HF_DIR`: what the codec did to each tensor, measured against the source weights.
//!
//! [`compare`] walks the file's tensors in file order and, for each, reads the same tensor from
//! the Hugging Face directory with [`qins_source::HfSource`] (the reader the converter uses,
//! so the tensors of sentence-transformers modules, `2_Dense/linear.weight`, are compared too). It streams: a tensor is compared one window of elements at a time (the source bytes
//! mapped, then unmapped), split into fixed chunks that rayon measures in parallel; the
//! chunks' sums are merged in order, so the numbers depend neither on the thread count nor on
//! the machine. What is held at once is one window of the source and one chunk of decoded
//! values per thread, never the model.
//!
//! For an encoded tensor, with `w` the source values (converted to f32 exactly) and `ŵ` the
//! decoded ones (§11.4), in f64:
//!
//! - relative RMSE `‖w − ŵ‖ / ‖w‖` (0 when both are 0);
//! - SNR `10 log10(Σw² / Σ(w − ŵ)²)` in dB, +infinity when the tensor is reproduced exactly
//!   (`null` in JSON, with `exact: true`);
//! - the largest absolute error relative to the largest magnitude, `max|w − ŵ| / max|w|`;
//! - the share of exact zeros (`0.0` or `-0.0`) in the source and in the decoded tensor.
//!
//! The totals cover the encoded tensors, weighted by parameter count: the energies `Σw²` and
//! `Σ(w − ŵ)²` summed over tensors give the total SNR and relative RMSE, zero shares are over
//! all encoded weights, the largest error is the worst tensor's, and the bits per weight are
//! counted from the file (codes, signs, row scales and the 1 KiB tables, over the encoded
//! weights). A raw tensor must be bit-exact: a difference is reported with the first differing
//! byte, and makes [`crate::inspect_against`] fail after writing the report. A tensor of the
//! file that the source lacks, or has with another shape or dtype, is an [`AgainstError`]
//! naming it. Source tensors that are not in the file are listed (`source_only`).

use std::io::{self, Write};
use std::path::PathBuf;

use qins_format::{Storage, LUT_BYTES};
use qins_read::{Model, Qins, TensorView};
use qins_source::{HfSource, SourceError, SourceTensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::units::{sig4, Table};

/// Elements measured by one parallel job; the chunking fixes the order of the sums.
const CHUNK: u64 = 1 << 16;
/// Elements (of an encoded tensor) or bytes (of a raw one) read from the source at once.
const WINDOW: u64 = 64 * CHUNK;

/// Why a file cannot be compared with a source directory.
#[derive(Debug, thiserror::Error)]
pub enum AgainstError {
    /// The source directory cannot be opened or read (the message names the file).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A tensor of the file is not in the source.
    #[error("tensor {tensor:?} is not in the source {}", .dir.display())]
    Missing {
        /// The tensor.
        tensor: String,
        /// The source directory.
        dir: PathBuf,
    },
    /// A tensor has another shape in the source.
    #[error("tensor {tensor:?} has shape {file:?} in the file but {source_shape:?} in the source")]
    Shape {
        /// The tensor.
        tensor: String,
        /// Its shape in the file.
        file: Vec<u64>,
        /// Its shape in the source.
        source_shape: Vec<u64>,
    },
    /// A tensor has another dtype in the source.
    #[error("tensor {tensor:?} is {file} in the file but {source_dtype} in the source")]
    Dtype {
        /// The tensor.
        tensor: String,
        /// Its dtype in the file.
        file: String,
        /// Its dtype in the source.
        source_dtype: String,
    },
    /// Raw tensors are not bit-exact copies of the source (reported after the comparison is
    /// written).
    #[error("{}", mismatch_message(.mismatches))]
    RawMismatch {
        /// The raw tensors that differ, in file order.
        mismatches: Vec<RawMismatch>,
    },
}

/// A raw tensor that differs from its source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawMismatch {
    /// The tensor.
    pub tensor: String,
    /// The offset of the first differing byte in the tensor's data.
    pub first_difference: u64,
}

fn mismatch_message(m: &[RawMismatch]) -> String {
    let first = &m[0];
    let more = match m.len() {
        1 => String::new(),
        n => format!(
            " (and {} more raw tensor{})",
            n - 1,
            if n == 2 { "" } else { "s" }
        ),
    };
    format!(
        "raw tensor {:?} differs from the source at byte {}{more}",
        first.tensor, first.first_difference
    )
}

/// The comparison of a file with its source directory: the `against` object of the JSON
/// document. The serde names are stable keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Against {
    /// The source directory as given.
    pub source: String,
    /// Every encoded tensor, in file order.
    pub encoded: Vec<EncodedFidelity>,
    /// Every raw tensor, in file order.
    pub raw: Vec<RawCheck>,
    /// Tensors of the source that the file does not hold, sorted by name.
    pub source_only: Vec<String>,
    /// Over all encoded tensors, and the raw tensors' count.
    pub totals: FidelityTotals,
}

/// How far one encoded tensor is from its source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EncodedFidelity {
    /// The name.
    pub name: String,
    /// The codec name, with `+rows` when the tensor has row scales that its codec does not
    /// imply (`log+rows`, `linear+rows`; `lloyd-rows` always has them).
    pub encoding: String,
    /// Elements.
    pub numel: u64,
    /// `Σw²`, in f64.
    pub energy: f64,
    /// `Σ(w − ŵ)²`, in f64.
    pub noise: f64,
    /// `‖w − ŵ‖ / ‖w‖` (0 when the noise is 0).
    pub rel_rmse: f64,
    /// `10 log10(Σw² / Σ(w − ŵ)²)` in dB; `null` in JSON (+infinity) when `exact`.
    pub snr_db: Option<f64>,
    /// Whether every decoded value equals its source value (no noise at all).
    pub exact: bool,
    /// `max|w − ŵ| / max|w|` (0 when there is no error; `null` if the source is all zeros but
    /// the decoded tensor is not).
    pub max_err_rel: Option<f64>,
    /// Elements equal to zero in the source.
    pub source_zeros: u64,
    /// Elements equal to zero in the decoded tensor.
    pub decoded_zeros: u64,
    /// `source_zeros / numel`.
    pub source_zero_share: f64,
    /// `decoded_zeros / numel`.
    pub decoded_zero_share: f64,
}

/// A raw tensor checked against its source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawCheck {
    /// The name.
    pub name: String,
    /// Its bytes.
    pub bytes: u64,
    /// Whether they equal the source's, bit for bit.
    pub exact: bool,
    /// The offset of the first differing byte, `null` when exact.
    pub first_difference: Option<u64>,
}

/// The encoded tensors together (weighted by parameter count), and the raw tensors' count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FidelityTotals {
    /// Encoded tensors.
    pub encoded_tensors: usize,
    /// Their elements.
    pub encoded_weights: u64,
    /// `Σw²` over them.
    pub energy: f64,
    /// `Σ(w − ŵ)²` over them.
    pub noise: f64,
    /// `sqrt(noise / energy)`.
    pub rel_rmse: f64,
    /// `10 log10(energy / noise)` in dB; `null` (+infinity) when `exact`.
    pub snr_db: Option<f64>,
    /// Whether every encoded tensor is exact.
    pub exact: bool,
    /// The lowest SNR of a tensor, in dB; `null` when every tensor is exact or there is none.
    pub worst_snr_db: Option<f64>,
    /// The tensor with the lowest SNR.
    pub worst_tensor: Option<String>,
    /// The largest `max_err_rel` of a tensor.
    pub max_err_rel: Option<f64>,
    /// Zeros in the source over all encoded weights.
    pub source_zero_share: f64,
    /// Zeros in the decoded tensors over all encoded weights.
    pub decoded_zero_share: f64,
    /// `(codes + signs + row scales + tables) × 8 / encoded_weights`, counted from the file;
    /// `null` without encoded weights.
    pub bits_per_weight: Option<f64>,
    /// Raw tensors.
    pub raw_tensors: usize,
    /// Raw tensors that differ from the source.
    pub raw_mismatches: usize,
}

/// Sums over a run of elements; merged in order.
#[derive(Clone, Copy, Debug, Default)]
struct Sums {
    energy: f64,
    noise: f64,
    max_abs: f64,
    max_err: f64,
    source_zeros: u64,
    decoded_zeros: u64,
}

impl Sums {
    fn of(w: &[f32], d: &[f32]) -> Sums {
        let mut s = Sums::default();
        for (&a, &b) in w.iter().zip(d) {
            let (x, y) = (f64::from(a), f64::from(b));
            let e = x - y;
            s.energy += x * x;
            s.noise += e * e;
            s.max_abs = s.max_abs.max(x.abs());
            s.max_err = s.max_err.max(e.abs());
            s.source_zeros += u64::from(a == 0.0);
            s.decoded_zeros += u64::from(b == 0.0);
        }
        s
    }

    fn merge(self, o: Sums) -> Sums {
        Sums {
            energy: self.energy + o.energy,
            noise: self.noise + o.noise,
            max_abs: self.max_abs.max(o.max_abs),
            max_err: self.max_err.max(o.max_err),
            source_zeros: self.source_zeros + o.source_zeros,
            decoded_zeros: self.decoded_zeros + o.decoded_zeros,
        }
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn snr(energy: f64, noise: f64) -> Option<f64> {
    (noise != 0.0).then(|| 10.0 * (energy / noise).log10())
}

fn rel_rmse(energy: f64, noise: f64) -> f64 {
    if noise == 0.0 {
        0.0
    } else {
        (noise / energy).sqrt()
    }
}

fn max_err_rel(max_err: f64, max_abs: f64) -> Option<f64> {
    if max_err == 0.0 {
        Some(0.0)
    } else {
        (max_abs > 0.0).then(|| max_err / max_abs)
    }
}

/// Measures an encoded tensor against its source, window by window.
fn measure(
    src: &HfSource,
    st: &SourceTensor,
    t: &TensorView<'_>,
    encoding: String,
) -> Result<EncodedFidelity, AgainstError> {
    let n = t.numel();
    let es = u64::from(st.dtype.bits() / 8);
    let mut sums = Sums::default();
    let mut a = 0;
    while a < n {
        let b = (a + WINDOW).min(n);
        let bytes = src.read(st, a * es..b * es)?;
        let parts: Vec<Sums> = bytes
            .par_chunks((CHUNK * es) as usize)
            .enumerate()
            .map(|(k, part)| {
                let len = part.len() / es as usize;
                let mut w = vec![0f32; len];
                st.dtype
                    .to_f32(part, &mut w)
                    .expect("an encoded tensor's dtype is F32, F16 or BF16, as its source's");
                let mut d = vec![0f32; len];
                t.decode_f32(a + k as u64 * CHUNK, &mut d)
                    .expect("the chunk lies within the tensor");
                Sums::of(&w, &d)
            })
            .collect();
        sums = parts.into_iter().fold(sums, Sums::merge);
        a = b;
    }
    Ok(EncodedFidelity {
        name: t.name().to_string(),
        encoding,
        numel: n,
        energy: sums.energy,
        noise: sums.noise,
        rel_rmse: rel_rmse(sums.energy, sums.noise),
        snr_db: snr(sums.energy, sums.noise),
        exact: sums.noise == 0.0,
        max_err_rel: max_err_rel(sums.max_err, sums.max_abs),
        source_zeros: sums.source_zeros,
        decoded_zeros: sums.decoded_zeros,
        source_zero_share: share(sums.source_zeros, n),
        decoded_zero_share: share(sums.decoded_zeros, n),
    })
}

/// Checks a raw tensor against its source, window by window.
fn check_raw(
    src: &HfSource,
    st: &SourceTensor,
    name: &str,
    data: &[u8],
) -> Result<RawCheck, AgainstError> {
    let mut first_difference = None;
    let mut a = 0;
    while a < st.len && first_difference.is_none() {
        let b = (a + WINDOW).min(st.len);
        let bytes = src.read(st, a..b)?;
        let mine = &data[a as usize..b as usize];
        if *bytes != *mine {
            let k = bytes
                .iter()
                .zip(mine)
                .position(|(x, y)| x != y)
                .expect("slices of equal length that differ differ somewhere");
            first_difference = Some(a + k as u64);
        }
        a = b;
    }
    Ok(RawCheck {
        name: name.to_string(),
        bytes: st.len,
        exact: first_difference.is_none(),
        first_difference,
    })
}

/// Compares every tensor of `file` with the same tensor of the source directory `source`
/// (see the module documentation). Fails on the first tensor that the source lacks or has
/// with another shape or dtype, and when the source cannot be read; raw tensors that differ
/// are recorded in the result ([`Against::mismatches`]), not failed on.
pub fn compare(file: &Qins<'_>, source: &HfSource) -> Result<Against, AgainstError> {
    compare_views(file.tensors(), |name| file.tensor(name).is_some(), source)
}

/// [`compare`] for a model stored as a set of shards (spec §21), or a single file: every
/// tensor of every shard, in the set's order.
pub fn compare_model(model: &Model<'_>, source: &HfSource) -> Result<Against, AgainstError> {
    compare_views(model.tensors(), |name| model.tensor(name).is_some(), source)
}

/// [`compare`] of the tensors `views`, `in_file` saying which names are among them.
fn compare_views<'v>(
    views: impl Iterator<Item = TensorView<'v>>,
    in_file: impl Fn(&str) -> bool,
    source: &HfSource,
) -> Result<Against, AgainstError> {
    let by_name = |name: &str| {
        source
            .tensors()
            .binary_search_by(|t| t.name.as_str().cmp(name))
            .ok()
            .map(|i| &source.tensors()[i])
    };
    let (mut encoded, mut raw) = (Vec::new(), Vec::new());
    let mut bits = 0u64;
    for t in views {
        let st = by_name(t.name()).ok_or_else(|| AgainstError::Missing {
            tensor: t.name().to_string(),
            dir: source.dir().to_path_buf(),
        })?;
        if st.dtype != t.dtype() {
            return Err(AgainstError::Dtype {
                tensor: t.name().to_string(),
                file: t.dtype().name().to_string(),
                source_dtype: st.dtype.name().to_string(),
            });
        }
        if st.shape != t.shape() {
            return Err(AgainstError::Shape {
                tensor: t.name().to_string(),
                file: t.shape().to_vec(),
                source_shape: st.shape.clone(),
            });
        }
        match t.storage() {
            Storage::Raw => {
                let data = t.raw_bytes().expect("a raw tensor has raw bytes");
                raw.push(check_raw(source, st, t.name(), data)?);
            }
            Storage::Encoded { codec, row_scales } => {
                // `+rows` only where the codec does not imply them.
                let encoding = if row_scales && !codec.uses_row_scales() {
                    format!("{codec}+rows")
                } else {
                    codec.name().to_string()
                };
                bits += (t.stored_bytes() + LUT_BYTES) * 8;
                encoded.push(measure(source, st, &t, encoding)?);
            }
        }
    }
    let source_only: Vec<String> = source
        .tensors()
        .iter()
        .filter(|t| !in_file(&t.name))
        .map(|t| t.name.clone())
        .collect();

    let weights: u64 = encoded.iter().map(|e| e.numel).sum();
    let energy: f64 = encoded.iter().map(|e| e.energy).sum();
    let noise: f64 = encoded.iter().map(|e| e.noise).sum();
    let worst = encoded
        .iter()
        .filter_map(|e| e.snr_db.map(|s| (s, &e.name)))
        .fold(None, |w: Option<(f64, &String)>, (s, n)| match w {
            Some((ws, _)) if ws <= s => w,
            _ => Some((s, n)),
        });
    let max_err = encoded
        .iter()
        .map(|e| e.max_err_rel)
        .try_fold(0f64, |m, x| x.map(|x| m.max(x)));
    let zeros = |f: fn(&EncodedFidelity) -> u64| encoded.iter().map(f).sum::<u64>();
    let totals = FidelityTotals {
        encoded_tensors: encoded.len(),
        encoded_weights: weights,
        energy,
        noise,
        rel_rmse: rel_rmse(energy, noise),
        snr_db: snr(energy, noise),
        exact: noise == 0.0,
        worst_snr_db: worst.map(|w| w.0),
        worst_tensor: worst.map(|w| w.1.clone()),
        max_err_rel: max_err,
        source_zero_share: share(zeros(|e| e.source_zeros), weights),
        decoded_zero_share: share(zeros(|e| e.decoded_zeros), weights),
        bits_per_weight: (weights > 0).then(|| bits as f64 / weights as f64),
        raw_tensors: raw.len(),
        raw_mismatches: raw.iter().filter(|r| !r.exact).count(),
    };
    Ok(Against {
        source: source.dir().display().to_string(),
        encoded,
        raw,
        source_only,
        totals,
    })
}

impl Against {
    /// The raw tensors that differ from the source, in file order.
    pub fn mismatches(&self) -> Vec<RawMismatch> {
        self.raw
            .iter()
            .filter_map(|r| {
                r.first_difference.map(|first_difference| RawMismatch {
                    tensor: r.name.clone(),
                    first_difference,
                })
            })
            .collect()
    }
}

fn db(x: Option<f64>) -> String {
    x.map_or_else(|| "inf".to_string(), |x| format!("{x:.2}"))
}

fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), sig4)
}

/// Writes the comparison as text: one row per encoded tensor, the totals, and the raw
/// tensors' check. Follows the report of [`crate::write_text`].
pub fn write_against_text(a: &Against, out: &mut dyn Write) -> io::Result<()> {
    let s = &a.totals;
    writeln!(
        out,
        "\nagainst the source {} ({} encoded, {} raw tensors compared)",
        a.source, s.encoded_tensors, s.raw_tensors
    )?;
    if !a.encoded.is_empty() {
        let mut t = Table::new(
            &[
                "name",
                "encoding",
                "rel RMSE",
                "SNR dB",
                "max err",
                "zeros src",
                "zeros out",
            ],
            &[false, false, true, true, true, true, true],
        );
        for e in &a.encoded {
            t.row(vec![
                e.name.clone(),
                e.encoding.clone(),
                sig4(e.rel_rmse),
                db(e.snr_db),
                opt(e.max_err_rel),
                pct(e.source_zero_share),
                pct(e.decoded_zero_share),
            ]);
        }
        t.row(vec![
            format!("all encoded ({} weights)", s.encoded_weights),
            String::new(),
            sig4(s.rel_rmse),
            db(s.snr_db),
            opt(s.max_err_rel),
            pct(s.source_zero_share),
            pct(s.decoded_zero_share),
        ]);
        t.write("  ", out)?;
        if let (Some(w), Some(name)) = (s.worst_snr_db, &s.worst_tensor) {
            writeln!(out, "  worst tensor: {name}, {w:.2} dB")?;
        }
        if let Some(b) = s.bits_per_weight {
            writeln!(
                out,
                "  {b:.3} bits per encoded weight (codes, signs, row scales and tables, from the file)"
            )?;
        }
        writeln!(
            out,
            "  rel RMSE = ‖w − ŵ‖/‖w‖; SNR = 10 log10(Σw²/Σ(w − ŵ)²), inf when exact; max err = \
             max|w − ŵ| / max|w|; zeros = share of exact zeros; the last row sums the energies \
             of all encoded tensors"
        )?;
    }
    if s.raw_mismatches == 0 {
        writeln!(
            out,
            "  raw tensors: {} of {} bit-exact",
            s.raw_tensors, s.raw_tensors
        )?;
    } else {
        writeln!(
            out,
            "  raw tensors: {} of {} DIFFER from the source:",
            s.raw_mismatches, s.raw_tensors
        )?;
        for m in a.mismatches() {
            writeln!(
                out,
                "    {} (first difference at byte {})",
                m.tensor, m.first_difference
            )?;
        }
    }
    if !a.source_only.is_empty() {
        writeln!(
            out,
            "  source tensors not in the file ({}): {}",
            a.source_only.len(),
            a.source_only.join(", ")
        )?;
    }
    Ok(())
}

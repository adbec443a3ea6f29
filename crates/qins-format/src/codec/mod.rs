//! The codec registry (§12) and the encoders.
//!
//! Encoding a tensor takes two passes so that large tensors can be split across threads:
//! [`scan`] each chunk and [`Stats::merge`] the results, build a [`Quantizer`] from the merged
//! statistics, then [`Quantizer::encode`] each chunk into its slice of the codes and sign
//! bytes. The result does not depend on how the tensor was split.
//!
//! # Error bounds
//!
//! What each codec guarantees about `ŵ`, the decoded value of `w` (§11.4):
//!
//! - `log`: every non-zero `w` decodes with the same sign and a relative error of at most
//!   `e^((log_max − log_min) / 508) − 1` (half a step of the logarithmic scale), plus f32
//!   rounding (2 × 2^-24).
//! - `linear`: `|w − ŵ| ≤ max_abs / 508` (half a step), plus f32 rounding.
//! - `lloyd`, `lloyd-rows`: every magnitude is coded to its nearest table entry (ties to the
//!   smaller), so no other code of the same table does better; and the weighted relative RMSE
//!   of the fitted magnitudes is at most `sqrt(param1) + 2^-9 + 2^-22` (`param1` is stored in
//!   the tensor record: the fit's own estimate, within a few percent of the truth on real
//!   weights). For `lloyd` that is the relative RMSE of the tensor; for `lloyd-rows` it is, up to
//!   the rounding of the row weights, the relative RMSE of the decoded tensor.
//!
//! On synthetic tensors (256 × 512, `tests/codecs.rs`: N(0, 0.02²); Laplace(0, 0.02); Gaussian
//! with one value in 1000 replaced by ±20–100σ; half zeros; rows scaled by 10^U(−2, 2)) the SNR
//! `10 log10(Σw² / Σ(w − ŵ)²)` is at least, in dB:
//!
//! | codec | Gaussian | Laplace | outliers | zeros | row scales vary |
//! |---|---|---|---|---|---|
//! | `log` | 35.5 | 34.0 | 34.5 | 36.5 | 32.0 |
//! | `linear` | 44.0 | 38.5 | 25.5 | 45.5 | 38.0 |
//! | `lloyd` | 49.5 | 47.5 | 52.0 | 49.5 | 47.0 |
//! | `lloyd-rows` | 50.0 | 48.5 | 51.0 | 50.5 | 50.5 |
//!
//! and `lloyd` and `lloyd-rows` are never below `log`. On all-MiniLM-L6-v2 (every 2-D tensor,
//! weighted by parameter count) `log` gives 34.2 dB, `lloyd` 48.7 dB, `lloyd-rows` 50.3 dB
//! (`examples/fidelity.rs`).
//!
//! # Row scales
//!
//! A codec that uses row scales ([`Codec::uses_row_scales`], so far `lloyd-rows`) needs one
//! more pass first, for the scales: [`RowMaxima::scan`] each chunk, [`RowMaxima::merge`] the
//! results in order, [`RowMaxima::into_scales`]; then every `scan` and `encode` call gets the
//! scales as a [`RowScales`], and the writer gets them for the tensor's scales section. For a
//! whole tensor in memory, [`row_scales`] does the three steps.
//!
//! ```
//! use qins_format::codec::{row_scales, scan, Codec, Quantizer, RowMaxima, RowScales, Stats};
//!
//! let shape = [3u64, 4];
//! let values: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) * 0.1).collect();
//! let codec = Codec::LloydRows;
//! // Pass 0 (row-scale codecs only), here in chunks of 8 elements.
//! let scales = values
//!     .chunks(8)
//!     .enumerate()
//!     .map(|(k, c)| RowMaxima::scan(c, 8 * k as u64, &shape).unwrap())
//!     .fold(RowMaxima::EMPTY, RowMaxima::merge)
//!     .into_scales(&shape)
//!     .unwrap();
//! assert_eq!(Some(scales.clone()), row_scales(codec, &values, &shape).unwrap());
//! let rs = RowScales::new(&scales, &shape).unwrap();
//! // Pass 1: statistics; pass 2: codes.
//! let stats = values
//!     .chunks(8)
//!     .enumerate()
//!     .map(|(k, c)| scan(c, 8 * k as u64, Some(&rs)).unwrap())
//!     .fold(Stats::EMPTY, Stats::merge);
//! let q = Quantizer::new(codec, &stats);
//! let (mut codes, mut signs) = (vec![0u8; 12], vec![0u8; 2]);
//! q.encode(&values, 0, Some(&rs), &mut codes, &mut signs).unwrap();
//! ```
//!
//! # Where each rule lives
//!
//! - `registry`: the codec ids and names of §12 and their parameter constraints ([`Codec`]);
//! - `rows`: row scales (§11.3) and how `lloyd-rows` chooses them (§12.4): [`RowScales`],
//!   [`RowMaxima`], [`row_scales`], and each row's histogram weight;
//! - `stats`: the statistics pass, [`scan`] and [`scan_bytes`], into [`Stats`] (range, counts,
//!   the histogram), with the non-finite and overflow rules;
//! - `formula`: the closed-form codecs `log` (§12.1) and `linear` (§12.2): their tables and
//!   code formulas;
//! - `lloyd`: the fitted codecs `lloyd` (§12.3) and `lloyd-rows` (§12.4): the [`Histogram`], the
//!   fit and the nearest-entry code;
//! - `quantizer`: the [`Quantizer`] (a fitted codec) and the code pass, [`Quantizer::encode`]
//!   and [`Quantizer::encode_bytes`];
//! - `fastcode`: the exact change-point coder and the tight loops the passes run;
//! - `words`: a chunk of source bytes (F32, BF16, F16) viewed as its elements;
//! - `scaled16`: 16-bit sources with row scales, where a scaled value depends only on the pattern
//!   and the row's scale: statistics and codes once per distinct pattern;
//! - `cpu`: the passes over every weight run compiled for x86-64-v3 where the CPU has it.

mod cpu;
mod fastcode;
mod formula;
mod lloyd;
mod quantizer;
mod registry;
mod rows;
mod scaled16;
mod stats;
mod words;

pub use lloyd::{Bin, Histogram};
pub use quantizer::Quantizer;
pub use registry::Codec;
pub use rows::{row_scales, RowMaxima, RowScales};
pub use scaled16::scan_row_groups;
pub use stats::{scan, scan_bytes, Stats};

/// Why values cannot be encoded.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EncodeError {
    /// A value to encode is NaN or infinite (§12); `index` is the element's flat index.
    #[error("value at index {index} is {value}, not finite")]
    NonFinite {
        /// Flat index of the first bad element.
        index: u64,
        /// The value.
        value: f32,
    },
    /// Dividing a value by its row scale overflows f32 (§12); `index` is the element's flat
    /// index.
    #[error("value at index {index} is {value}: divided by its row scale it overflows f32")]
    ScaleOverflow {
        /// Flat index of the first bad element.
        index: u64,
        /// The value before scaling.
        value: f32,
    },
    /// A row scale is not finite or not positive (§11.3).
    #[error("row scale {row} is {value}, not finite and positive")]
    BadScale {
        /// Row index.
        row: u64,
        /// The scale.
        value: f32,
    },
    /// The number of row scales does not match the shape.
    #[error("expected {expected} row scales, got {got}")]
    ScaleCount {
        /// Rows of the shape.
        expected: u64,
        /// Scales given.
        got: u64,
    },
    /// A chunk does not start on a sign-byte boundary, its buffers have the wrong length, or it
    /// reaches past the rows its row scales cover (for [`RowMaxima`], past the tensor's last
    /// element).
    #[error("chunk at element {first} is misaligned, has buffers of the wrong length, or reaches past the rows of its scales or the end of its tensor")]
    BadChunk {
        /// The chunk's first element.
        first: u64,
    },
}

/// A whole tensor encoded in one call: the convenience form of [`scan`], [`Quantizer::new`] and
/// [`Quantizer::encode`].
#[derive(Clone, Debug)]
pub struct Encoded {
    /// The fitted codec (table and parameters).
    pub quantizer: Quantizer,
    /// One code per element.
    pub codes: Vec<u8>,
    /// Packed sign bits.
    pub signs: Vec<u8>,
}

/// Encodes a whole tensor with `codec`.
pub fn encode(
    codec: Codec,
    values: &[f32],
    scales: Option<&RowScales<'_>>,
) -> Result<Encoded, EncodeError> {
    let stats = scan(values, 0, scales)?;
    let quantizer = Quantizer::new(codec, &stats);
    let mut codes = vec![0u8; values.len()];
    let mut signs = vec![0u8; values.len().div_ceil(8)];
    quantizer.encode(values, 0, scales, &mut codes, &mut signs)?;
    Ok(Encoded {
        quantizer,
        codes,
        signs,
    })
}

#[cfg(test)]
mod tests;

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

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use zerocopy::FromBytes;

use crate::dtype::{bf16_to_f32, f16_to_f32};
use crate::fastcode::{encode_words, magnitude_range, Breaks, Formula, HalfCodes, OrElse, Word};
use crate::lloyd;
pub use crate::lloyd::{Bin, Histogram};
use crate::Dtype;

/// A codec id from the registry of §12. Raw storage (id 0) is not a codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// `log` (id 1, §12.1): codes on a logarithmic scale between the smallest and largest
    /// non-zero magnitude. The prototype's rule (`qins-convert` defaults to
    /// [`Codec::LloydRows`]).
    Log,
    /// `linear` (id 2, §12.2): codes proportional to the magnitude.
    Linear,
    /// `lloyd` (id 3, §12.3): 255 levels fitted to the tensor's magnitudes to minimise the
    /// squared error, without row scales.
    Lloyd,
    /// `lloyd-rows` (id 4, §12.4): each row divided by its largest magnitude (the row scales),
    /// then 255 levels fitted as `lloyd` does to the scaled magnitudes. Needs row scales:
    /// see [`Codec::uses_row_scales`] and [`RowMaxima`].
    LloydRows,
}

impl Codec {
    /// Every codec of the registry, in id order.
    pub const ALL: &'static [Codec] = &[Codec::Log, Codec::Linear, Codec::Lloyd, Codec::LloydRows];

    /// The registry id stored in a tensor record.
    pub const fn id(self) -> u16 {
        match self {
            Codec::Log => 1,
            Codec::Linear => 2,
            Codec::Lloyd => 3,
            Codec::LloydRows => 4,
        }
    }

    /// The codec with registry id `id`; `None` for 0 (raw) and unknown ids.
    pub const fn from_id(id: u16) -> Option<Codec> {
        match id {
            1 => Some(Codec::Log),
            2 => Some(Codec::Linear),
            3 => Some(Codec::Lloyd),
            4 => Some(Codec::LloydRows),
            _ => None,
        }
    }

    /// The registry name.
    pub const fn name(self) -> &'static str {
        match self {
            Codec::Log => "log",
            Codec::Linear => "linear",
            Codec::Lloyd => "lloyd",
            Codec::LloydRows => "lloyd-rows",
        }
    }

    /// Whether a tensor encoded with this codec has row scales (§11.3): writers MUST set
    /// `ROW_SCALES` for `lloyd-rows`, with the scales of [`RowMaxima::into_scales`] (or
    /// [`row_scales`]). The other codecs are defined without them, though a writer MAY still
    /// give `log` and `linear` scales of its own choosing.
    pub const fn uses_row_scales(self) -> bool {
        matches!(self, Codec::LloydRows)
    }

    /// Whether [`Quantizer::new`] fits the codec's table to the histogram of [`Stats`]
    /// (`lloyd`, `lloyd-rows`); `log` and `linear` need only the range and the counts, so
    /// [`scan_bytes`] can skip the histogram for them.
    pub const fn fits_histogram(self) -> bool {
        matches!(self, Codec::Lloyd | Codec::LloydRows)
    }

    /// Whether `param0`/`param1` satisfy the codec's constraint (§12): finite, and
    /// `log_min ≤ log_max` for `log`; `max_abs ≥ 0` and `param1 = 0` for `linear`;
    /// `max_abs ≥ 0` and `rel_err ≥ 0` for `lloyd` and `lloyd-rows`.
    pub fn params_are_valid(self, p0: f64, p1: f64) -> bool {
        p0.is_finite()
            && p1.is_finite()
            && match self {
                Codec::Log => p0 <= p1,
                Codec::Linear => p0 >= 0.0 && p1 == 0.0,
                Codec::Lloyd | Codec::LloydRows => p0 >= 0.0 && p1 >= 0.0,
            }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Codec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Codec::ALL
            .iter()
            .copied()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Codec::ALL.iter().map(|c| c.name()).collect();
                format!("unknown codec {s:?} (known: {})", known.join(", "))
            })
    }
}

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

/// The row scales of a tensor (§11.3): one positive f32 per row of `row_len` elements.
#[derive(Clone, Copy, Debug)]
pub struct RowScales<'a> {
    scales: &'a [f32],
    row_len: u64,
    /// The largest scale (0 when there are none), for the histogram weights (§12.4). With the
    /// scales of [`RowMaxima::into_scales`] it is the largest of a row with a non-zero value
    /// whenever there is one.
    max: f32,
}

impl<'a> RowScales<'a> {
    /// Row scales for a tensor of shape `shape`; checks the count and that every scale is
    /// finite and positive.
    pub fn new(scales: &'a [f32], shape: &[u64]) -> Result<Self, EncodeError> {
        let (row_len, rows) = crate::rows(shape).ok_or(EncodeError::ScaleCount {
            expected: u64::MAX,
            got: scales.len() as u64,
        })?;
        if rows != scales.len() as u64 {
            return Err(EncodeError::ScaleCount {
                expected: rows,
                got: scales.len() as u64,
            });
        }
        if let Some((row, &value)) = scales
            .iter()
            .enumerate()
            .find(|(_, s)| !(s.is_finite() && **s > 0.0))
        {
            return Err(EncodeError::BadScale {
                row: row as u64,
                value,
            });
        }
        let max = scales.iter().fold(0f32, |m, &s| m.max(s));
        Ok(RowScales {
            scales,
            row_len,
            max,
        })
    }

    /// The scales.
    pub fn scales(&self) -> &'a [f32] {
        self.scales
    }

    /// `Ok` if elements `first..first + len` lie within the rows these scales cover, else
    /// [`EncodeError::BadChunk`]: what every function taking a chunk and its scales checks
    /// first.
    fn check_chunk(&self, first: u64, len: usize) -> Result<(), EncodeError> {
        within_tensor(first, len, self.row_len, self.scales.len() as u64)
    }

    /// The scale of flat element `index`.
    ///
    /// # Panics
    /// If `index` is past the rows these scales cover.
    #[inline]
    pub fn scale_of(&self, index: u64) -> f32 {
        self.scales[(index / self.row_len) as usize]
    }

    /// The histogram weight of the values of a row with scale `s` (§12.4): `2^32 (s / max)²`
    /// rounded to an integer (f64, ties to even), so that the fit minimises the squared error
    /// of the decoded values `u × s`; at least 1, so that every non-zero value reaches the
    /// histogram and a tensor with one never gets an empty histogram.
    pub fn weight(&self, s: f32) -> u64 {
        let q = f64::from(s) / f64::from(self.max);
        ((4_294_967_296.0 * (q * q)).round_ties_even() as u64).max(1)
    }
}

/// Calls `f(i, x, u)` for every element of a chunk whose first element has flat index `first`:
/// `i` its position in the chunk, `x` the value, `u` the value to encode (`x`, divided by its
/// row's scale if any, §12). Walks the chunk row by row, so that finding an element's scale
/// costs no division.
#[inline]
fn for_each_scaled<E>(
    values: &[f32],
    first: u64,
    scales: Option<&RowScales<'_>>,
    mut f: impl FnMut(usize, f32, f32) -> Result<(), E>,
) -> Result<(), E> {
    let Some(rs) = scales else {
        for (i, &x) in values.iter().enumerate() {
            f(i, x, x)?;
        }
        return Ok(());
    };
    for_each_row_run(values, first, rs, |run, s, at| {
        for (j, &x) in run.iter().enumerate() {
            f(at + j, x, x / s)?;
        }
        Ok(())
    })
}

/// Calls `f(seg, s, i)` for each run of a chunk that lies in one row: the run's values, its
/// row's scale, and the run's position in the chunk.
#[inline]
fn for_each_row_run<T, E>(
    values: &[T],
    first: u64,
    rs: &RowScales<'_>,
    mut f: impl FnMut(&[T], f32, usize) -> Result<(), E>,
) -> Result<(), E> {
    let mut i = 0;
    while i < values.len() {
        let row = (first + i as u64) / rs.row_len;
        let end = ((row + 1) * rs.row_len - first).min(values.len() as u64) as usize;
        f(&values[i..end], rs.scales[row as usize], i)?;
        i = end;
    }
    Ok(())
}

/// The non-zero magnitudes of a chunk without row scales.
struct Plain<'a>(&'a [f32]);

impl lloyd::Magnitudes for Plain<'_> {
    #[inline]
    fn for_each(&self, mut f: impl FnMut(u32, u64)) {
        for x in self.0 {
            let b = x.to_bits() & 0x7FFF_FFFF;
            if b != 0 {
                f(b, 1);
            }
        }
    }
}

/// The non-zero scaled magnitudes `|x / scale|` of a chunk, walked row by row, each weighted by
/// its row's weight.
struct Scaled<'a, 's> {
    /// The scaled values `x / scale`, already divided.
    u: &'a [f32],
    first: u64,
    rs: &'s RowScales<'s>,
}

impl lloyd::Magnitudes for Scaled<'_, '_> {
    #[inline]
    fn for_each(&self, mut f: impl FnMut(u32, u64)) {
        let _ = for_each_row_run(self.u, self.first, self.rs, |run, s, _| {
            let w = self.rs.weight(s);
            for u in run {
                let b = u.to_bits() & 0x7FFF_FFFF;
                if b != 0 {
                    f(b, w);
                }
            }
            Ok::<(), ()>(())
        });
    }
}

/// The row maxima of a run of rows (§12.4): the largest magnitude of each row, gathered chunk by
/// chunk. Chunks [`merge`](RowMaxima::merge) by taking maxima, so the result does not depend on
/// how the tensor was split.
#[derive(Clone, Debug, PartialEq)]
pub struct RowMaxima {
    /// The first row covered.
    first_row: u64,
    /// The largest magnitude of each covered row (0 for a row of zeros or not seen).
    max: Vec<f32>,
}

impl RowMaxima {
    /// The maxima of no rows.
    pub const EMPTY: RowMaxima = RowMaxima {
        first_row: 0,
        max: Vec::new(),
    };

    /// The maxima of the rows that a chunk of a tensor of shape `shape` touches, the chunk's
    /// first element having flat index `first`. Checks that every value is finite, as [`scan`]
    /// does, and that the chunk lies within the tensor ([`EncodeError::BadChunk`]).
    pub fn scan(values: &[f32], first: u64, shape: &[u64]) -> Result<RowMaxima, EncodeError> {
        let (row_len, rows) = crate::rows(shape).ok_or(EncodeError::BadChunk { first })?;
        if values.is_empty() {
            return Ok(RowMaxima::EMPTY);
        }
        within_tensor(first, values.len(), row_len, rows)?;
        let first_row = first / row_len;
        let last_row = (first + values.len() as u64 - 1) / row_len;
        let mut max = Vec::with_capacity((last_row - first_row + 1) as usize);
        // Row by row, on the magnitudes' bit patterns (which order like the magnitudes).
        let mut i = 0;
        while i < values.len() {
            let row = (first + i as u64) / row_len;
            let end = ((row + 1) * row_len - first).min(values.len() as u64) as usize;
            let hi = values[i..end]
                .iter()
                .fold(0u32, |m, x| m.max(x.to_bits() & 0x7FFF_FFFF));
            if hi >= 0x7F80_0000 {
                let (j, &x) = values[i..end]
                    .iter()
                    .enumerate()
                    .find(|(_, x)| !x.is_finite())
                    .expect("a magnitude at or above infinity's bits is not finite");
                return Err(EncodeError::NonFinite {
                    index: first + (i + j) as u64,
                    value: x,
                });
            }
            max.push(f32::from_bits(hi));
            i = end;
        }
        Ok(RowMaxima { first_row, max })
    }

    /// [`RowMaxima::scan`] of a chunk given as the little-endian bytes of an encodable
    /// `dtype`: the same maxima, found on the bit patterns in the source's own width (they
    /// order like the magnitudes), with no conversion but one per row.
    pub fn scan_bytes(
        dtype: Dtype,
        bytes: &[u8],
        first: u64,
        shape: &[u64],
    ) -> Result<RowMaxima, EncodeError> {
        let words = Words::new(dtype, bytes).ok_or(EncodeError::BadChunk { first })?;
        let (row_len, rows) = crate::rows(shape).ok_or(EncodeError::BadChunk { first })?;
        let n = words.len();
        if n == 0 {
            return Ok(RowMaxima::EMPTY);
        }
        within_tensor(first, n, row_len, rows)?;
        let first_row = first / row_len;
        let last_row = (first + n as u64 - 1) / row_len;
        let mut max = Vec::with_capacity((last_row - first_row + 1) as usize);
        let mut i = 0;
        while i < n {
            let row = (first + i as u64) / row_len;
            let end = ((row + 1) * row_len - first).min(n as u64) as usize;
            let hi = match words {
                Words::F32(w) => f32::from_bits(max_magnitude(&w[i..end], u32::from_le_bytes)),
                Words::Bf16(w) => bf16_to_f32(max_magnitude(&w[i..end], u16::from_le_bytes)),
                Words::F16(w) => f16_to_f32(max_magnitude(&w[i..end], u16::from_le_bytes)),
            };
            if !hi.is_finite() {
                let j = (i..end)
                    .find(|&j| !words.value(j).is_finite())
                    .expect("the largest magnitude is not finite");
                return Err(EncodeError::NonFinite {
                    index: first + j as u64,
                    value: words.value(j),
                });
            }
            max.push(hi);
            i = end;
        }
        Ok(RowMaxima { first_row, max })
    }

    /// The maxima of two chunks together: for each row, the larger. Rows between the two that
    /// neither covers are 0.
    pub fn merge(self, other: RowMaxima) -> RowMaxima {
        if other.max.is_empty() {
            return self;
        }
        if self.max.is_empty() {
            return other;
        }
        let first_row = self.first_row.min(other.first_row);
        let end =
            (self.first_row + self.max.len() as u64).max(other.first_row + other.max.len() as u64);
        let mut max = vec![0f32; (end - first_row) as usize];
        for part in [&self, &other] {
            let at = (part.first_row - first_row) as usize;
            for (m, &x) in max[at..].iter_mut().zip(&part.max) {
                *m = m.max(x);
            }
        }
        RowMaxima { first_row, max }
    }

    /// The row scales of `lloyd-rows` (§12.4) for a tensor of shape `shape`: each row's
    /// largest magnitude; for a row of zeros, the largest of all (so that it never sets the
    /// largest scale the weights are relative to), or 1 when every row is a row of zeros.
    /// Fails unless the maxima cover exactly the tensor's rows (none when the row length is 0,
    /// §11.3).
    pub fn into_scales(self, shape: &[u64]) -> Result<Vec<f32>, EncodeError> {
        let (_, rows) = crate::rows(shape).ok_or(EncodeError::ScaleCount {
            expected: u64::MAX,
            got: self.max.len() as u64,
        })?;
        let mut max = self.max;
        if self.first_row != 0 || max.len() as u64 != rows {
            return Err(EncodeError::ScaleCount {
                expected: rows,
                got: max.len() as u64,
            });
        }
        let top = max.iter().fold(0f32, |a, &m| a.max(m));
        let zero_row = if top == 0.0 { 1.0 } else { top };
        for m in &mut max {
            if *m == 0.0 {
                *m = zero_row;
            }
        }
        Ok(max)
    }
}

/// `Ok` if a chunk of `len` elements whose first element has flat index `first` lies within the
/// `rows` rows of `row_len` elements of its tensor (as [`crate::rows`] gives them; with a row
/// length of 0 there are none), else [`EncodeError::BadChunk`].
fn within_tensor(first: u64, len: usize, row_len: u64, rows: u64) -> Result<(), EncodeError> {
    // `rows × row_len` is the tensor's element count (or 0 without rows): no overflow.
    match first.checked_add(len as u64) {
        Some(end) if end <= rows * row_len => Ok(()),
        _ => Err(EncodeError::BadChunk { first }),
    }
}

/// The row scales `codec` uses for a whole tensor of shape `shape` (§12.4), or `None` if the
/// codec has none ([`Codec::uses_row_scales`]). The one-call form of [`RowMaxima`].
pub fn row_scales(
    codec: Codec,
    values: &[f32],
    shape: &[u64],
) -> Result<Option<Vec<f32>>, EncodeError> {
    if !codec.uses_row_scales() {
        return Ok(None);
    }
    let n = crate::numel(shape).unwrap_or(u64::MAX);
    if n != values.len() as u64 {
        return Err(EncodeError::BadChunk { first: 0 });
    }
    RowMaxima::scan(values, 0, shape)?
        .into_scales(shape)
        .map(Some)
}

/// What the encoders need to know of a tensor's magnitudes (after row scaling).
///
/// The fields are exact (integers, minima and maxima), so [`Stats::merge`] gives the same
/// statistics however the tensor was split.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    /// Smallest non-zero magnitude (`f32::INFINITY` when there is none).
    pub min_nonzero: f32,
    /// Largest magnitude (0 when every element is zero).
    pub max_abs: f32,
    /// Number of non-zero elements.
    pub nonzero: u64,
    /// Number of elements scanned.
    pub count: u64,
    /// The histogram of the non-zero magnitudes (§12.3.1), which `lloyd` and `lloyd-rows`
    /// fit their table to. Empty in statistics built by hand from the four numbers above,
    /// which is enough for `log` and `linear` only.
    pub hist: Histogram,
}

impl Stats {
    /// The statistics of no elements.
    pub const EMPTY: Stats = Stats {
        min_nonzero: f32::INFINITY,
        max_abs: 0.0,
        nonzero: 0,
        count: 0,
        hist: Histogram::EMPTY,
    };

    /// The statistics of two disjoint chunks together.
    pub fn merge(self, other: Stats) -> Stats {
        Stats {
            min_nonzero: self.min_nonzero.min(other.min_nonzero),
            max_abs: self.max_abs.max(other.max_abs),
            nonzero: self.nonzero + other.nonzero,
            count: self.count + other.count,
            hist: self.hist.merge(other.hist),
        }
    }
}

/// Scans a chunk of values whose first element has flat index `first`: checks that every value
/// is finite and gathers the magnitudes' statistics, histogram included.
pub fn scan(
    values: &[f32],
    first: u64,
    scales: Option<&RowScales<'_>>,
) -> Result<Stats, EncodeError> {
    scan_with(values, first, scales, true)
}

/// [`scan`], with the histogram only if `hist`.
fn scan_with(
    values: &[f32],
    first: u64,
    scales: Option<&RowScales<'_>>,
    hist: bool,
) -> Result<Stats, EncodeError> {
    if let Some(rs) = scales {
        rs.check_chunk(first, values.len())?;
        let mut u = Vec::with_capacity(values.len());
        let _ = for_each_row_run(values, first, rs, |run, s, _| {
            u.extend(run.iter().map(|&x| x / s));
            Ok::<(), ()>(())
        });
        return scan_scaled(&u, first, rs, hist, || values.to_vec());
    }
    let mut st = Stats::EMPTY;
    // On the magnitudes' bit patterns, which order like the magnitudes: branch-free integer
    // minima and maxima that the compiler vectorises.
    let (lo, hi, nonzero) = magnitude_range(values, f32::to_bits);
    if hi >= 0x7F80_0000 {
        let (i, &x) = values
            .iter()
            .enumerate()
            .find(|(_, x)| !x.is_finite())
            .expect("a magnitude at or above infinity's bits is not finite");
        return Err(EncodeError::NonFinite {
            index: first + i as u64,
            value: x,
        });
    }
    st.count = values.len() as u64;
    if nonzero > 0 {
        st.min_nonzero = f32::from_bits(lo);
        st.max_abs = f32::from_bits(hi);
        st.nonzero = nonzero;
        if hist {
            // Every value is finite: the second pass bins the non-zero magnitudes' bit
            // patterns, now that their range is known.
            st.hist = Histogram::build(&Plain(values), lo, hi, values.len());
        }
    }
    Ok(st)
}

/// The statistics of a chunk with row scales, from its scaled values `u` (each value divided by
/// its row's scale), computed once into a buffer that the histogram reads too; `values` gives
/// the chunk's own values, only to tell the faults apart. A value that is not finite scales to
/// one that is not finite, so one test on `u` finds both kinds of fault.
fn scan_scaled(
    u: &[f32],
    first: u64,
    rs: &RowScales<'_>,
    hist: bool,
    values: impl FnOnce() -> Vec<f32>,
) -> Result<Stats, EncodeError> {
    let mut st = Stats::EMPTY;
    let (lo, hi, nonzero) = magnitude_range(u, f32::to_bits);
    if hi >= 0x7F80_0000 {
        for_each_scaled(&values(), first, Some(rs), |i, x, u| {
            let index = first + i as u64;
            if !x.is_finite() {
                return Err(EncodeError::NonFinite { index, value: x });
            }
            if !u.is_finite() {
                return Err(EncodeError::ScaleOverflow { index, value: x });
            }
            Ok(())
        })?;
    }
    st.count = u.len() as u64;
    if nonzero > 0 {
        st.min_nonzero = f32::from_bits(lo);
        st.max_abs = f32::from_bits(hi);
        st.nonzero = nonzero;
        if hist {
            st.hist = Histogram::build(&Scaled { u, first, rs }, lo, hi, u.len());
        }
    }
    Ok(st)
}

/// A chunk given as the little-endian bytes of an encodable dtype, viewed as its elements.
#[derive(Clone, Copy)]
enum Words<'a> {
    F32(&'a [[u8; 4]]),
    Bf16(&'a [[u8; 2]]),
    F16(&'a [[u8; 2]]),
}

/// The largest magnitude pattern (sign bit cleared) of floats given as their bit patterns.
#[inline]
fn max_magnitude<T: Copy, W: Word>(words: &[T], word: impl Fn(T) -> W) -> W {
    words
        .iter()
        .fold(W::ZERO, |m, &x| m.max(word(x).magnitude()))
}

impl<'a> Words<'a> {
    /// `bytes` as elements of `dtype`; `None` for a dtype that cannot be encoded or a
    /// length that is not a whole number of elements.
    fn new(dtype: Dtype, bytes: &'a [u8]) -> Option<Words<'a>> {
        match dtype {
            Dtype::F32 => <[[u8; 4]]>::ref_from_bytes(bytes).ok().map(Words::F32),
            Dtype::BF16 => <[[u8; 2]]>::ref_from_bytes(bytes).ok().map(Words::Bf16),
            Dtype::F16 => <[[u8; 2]]>::ref_from_bytes(bytes).ok().map(Words::F16),
            _ => None,
        }
    }

    fn len(self) -> usize {
        match self {
            Words::F32(w) => w.len(),
            Words::Bf16(w) | Words::F16(w) => w.len(),
        }
    }

    /// Elements `at..at + out.len()` as f32, into `out`.
    fn convert(self, at: usize, out: &mut [f32]) {
        let end = at + out.len();
        match self {
            Words::F32(w) => {
                for (o, x) in out.iter_mut().zip(&w[at..end]) {
                    *o = f32::from_le_bytes(*x);
                }
            }
            Words::Bf16(w) => {
                for (o, x) in out.iter_mut().zip(&w[at..end]) {
                    *o = bf16_to_f32(u16::from_le_bytes(*x));
                }
            }
            Words::F16(w) => {
                for (o, x) in out.iter_mut().zip(&w[at..end]) {
                    *o = f16_to_f32(u16::from_le_bytes(*x));
                }
            }
        }
    }

    /// Every element divided by its row's scale, the chunk's first element being element
    /// `first` of the tensor.
    fn scaled(self, first: u64, rs: &RowScales<'_>) -> Vec<f32> {
        // Extended row by row rather than zeroed and overwritten: the chunk's buffer is large
        // (4 MiB for a chunk of 1 Mi elements), and zeroing it cost 2% of a conversion.
        fn run<T: Copy>(
            w: &[T],
            first: u64,
            rs: &RowScales<'_>,
            cvt: impl Fn(T) -> f32,
        ) -> Vec<f32> {
            let mut u = Vec::with_capacity(w.len());
            let _ = for_each_row_run(w, first, rs, |run, s, _| {
                u.extend(run.iter().map(|&x| cvt(x) / s));
                Ok::<(), ()>(())
            });
            u
        }
        match self {
            Words::F32(w) => run(w, first, rs, f32::from_le_bytes),
            Words::Bf16(w) => run(w, first, rs, |x| bf16_to_f32(u16::from_le_bytes(x))),
            Words::F16(w) => run(w, first, rs, |x| f16_to_f32(u16::from_le_bytes(x))),
        }
    }

    /// Elements `at..at + out.len()` divided by their rows' scales, into `out`; element `at` is
    /// element `first` of the tensor.
    fn scaled_into(self, at: usize, first: u64, rs: &RowScales<'_>, out: &mut [f32]) {
        fn run<T: Copy>(
            w: &[T],
            first: u64,
            rs: &RowScales<'_>,
            out: &mut [f32],
            cvt: impl Fn(T) -> f32,
        ) {
            let _ = for_each_row_run(w, first, rs, |run, s, i| {
                for (o, &x) in out[i..i + run.len()].iter_mut().zip(run) {
                    *o = cvt(x) / s;
                }
                Ok::<(), ()>(())
            });
        }
        let end = at + out.len();
        match self {
            Words::F32(w) => run(&w[at..end], first, rs, out, f32::from_le_bytes),
            Words::Bf16(w) => run(&w[at..end], first, rs, out, |x| {
                bf16_to_f32(u16::from_le_bytes(x))
            }),
            Words::F16(w) => run(&w[at..end], first, rs, out, |x| {
                f16_to_f32(u16::from_le_bytes(x))
            }),
        }
    }

    /// Every element as f32.
    fn to_vec(self) -> Vec<f32> {
        match self {
            Words::F32(w) => w.iter().map(|x| f32::from_le_bytes(*x)).collect(),
            Words::Bf16(w) => w
                .iter()
                .map(|x| bf16_to_f32(u16::from_le_bytes(*x)))
                .collect(),
            Words::F16(w) => w
                .iter()
                .map(|x| f16_to_f32(u16::from_le_bytes(*x)))
                .collect(),
        }
    }

    /// Element `i` as f32.
    fn value(self, i: usize) -> f32 {
        match self {
            Words::F32(w) => f32::from_le_bytes(w[i]),
            Words::Bf16(w) => bf16_to_f32(u16::from_le_bytes(w[i])),
            Words::F16(w) => f16_to_f32(u16::from_le_bytes(w[i])),
        }
    }
}

impl lloyd::Magnitudes for Words<'_> {
    /// The magnitudes of a 16-bit source take at most 2^15 values: in a chunk of more elements
    /// than that, each is counted first and given once with its count as weight, which adds up
    /// to the same bins as giving every element with weight 1.
    #[inline]
    fn for_each(&self, mut f: impl FnMut(u32, u64)) {
        let mut half = |w: &[[u8; 2]], cvt: fn(u16) -> f32| {
            if w.len() < 0x8000 {
                // Fewer elements than patterns: one by one.
                for x in w {
                    let b = cvt(u16::from_le_bytes(*x) & 0x7FFF).to_bits();
                    if b != 0 {
                        f(b, 1);
                    }
                }
                return;
            }
            let mut count = vec![0u64; 0x8000];
            for x in w {
                count[usize::from(u16::from_le_bytes(*x) & 0x7FFF)] += 1;
            }
            for (m, &c) in count.iter().enumerate().skip(1) {
                if c != 0 {
                    f(cvt(m as u16).to_bits(), c);
                }
            }
        };
        match *self {
            Words::F32(w) => {
                for x in w {
                    let b = u32::from_le_bytes(*x) & 0x7FFF_FFFF;
                    if b != 0 {
                        f(b, 1);
                    }
                }
            }
            Words::Bf16(w) => half(w, bf16_to_f32),
            Words::F16(w) => half(w, f16_to_f32),
        }
    }
}

/// [`scan`] of a chunk given as the little-endian bytes of an encodable `dtype` (F32, BF16,
/// F16), for a tensor to be encoded with `codec`: the statistics that `scan` gives for the
/// values converted to f32, except that the histogram is gathered only when `codec`
/// [fits one](Codec::fits_histogram) (it is left empty for `log` and `linear`, which do not
/// read it). Without row scales the range is found on the bit patterns in the source's own
/// width, with no conversion and no branch on the data. A dtype that cannot be encoded, or
/// bytes that are not whole elements, are a [`EncodeError::BadChunk`].
pub fn scan_bytes(
    codec: Codec,
    dtype: Dtype,
    bytes: &[u8],
    first: u64,
    scales: Option<&RowScales<'_>>,
) -> Result<Stats, EncodeError> {
    let words = Words::new(dtype, bytes).ok_or(EncodeError::BadChunk { first })?;
    if let Some(rs) = scales {
        rs.check_chunk(first, words.len())?;
        // The scaled magnitudes are f32 values whatever the source, computed straight from
        // the bytes, row by row.
        let u = words.scaled(first, rs);
        return scan_scaled(&u, first, rs, codec.fits_histogram(), || words.to_vec());
    }
    /// A pattern of the source's width to f32.
    type ToF32 = fn(u32) -> f32;
    let ((lo, hi, nonzero), cvt): ((u32, u32, u64), ToF32) = match words {
        Words::F32(w) => (magnitude_range(w, u32::from_le_bytes), f32::from_bits),
        Words::Bf16(w) => (magnitude_range(w, u16::from_le_bytes), |b| {
            bf16_to_f32(b as u16)
        }),
        Words::F16(w) => (magnitude_range(w, u16::from_le_bytes), |b| {
            f16_to_f32(b as u16)
        }),
    };
    let mut st = Stats::EMPTY;
    let max_abs = cvt(hi);
    if !max_abs.is_finite() {
        let i = (0..words.len())
            .find(|&i| !words.value(i).is_finite())
            .expect("the largest magnitude is not finite");
        return Err(EncodeError::NonFinite {
            index: first + i as u64,
            value: words.value(i),
        });
    }
    st.count = words.len() as u64;
    if nonzero > 0 {
        st.min_nonzero = cvt(lo);
        st.max_abs = max_abs;
        st.nonzero = nonzero;
        if codec.fits_histogram() {
            let (lo, hi) = (st.min_nonzero.to_bits(), st.max_abs.to_bits());
            st.hist = Histogram::build(&words, lo, hi, words.len());
        }
    }
    Ok(st)
}

/// A fitted codec: the table, the parameters, and the rule from magnitude to code.
#[derive(Clone, Debug)]
pub struct Quantizer {
    codec: Codec,
    params: [f64; 2],
    lut: [f32; 256],
    /// For `lloyd` and `lloyd-rows`: the decision thresholds between consecutive entries.
    thresholds: Option<Box<[f64; 255]>>,
    /// The exact code as a table of change points, for tensors large enough to repay it.
    fast: Option<Box<Breaks>>,
    /// The smallest non-zero and the largest magnitude of the statistics, with `fast`.
    range: Option<(f32, f32)>,
    /// Elements in the statistics.
    count: u64,
    /// One code per bfloat16 and per float16 magnitude pattern of the range, built on first
    /// use by [`Quantizer::encode_bytes`] when the tensor is larger than the table.
    half: [OnceLock<Option<Box<HalfCodes>>>; 2],
}

/// Elements per block of the scaled loops: a multiple of 8, small enough for the stack.
const SCALED_BLOCK: usize = 1024;

/// Tensors with fewer elements than this are coded with the formula directly: building the
/// change-point table costs a few thousand evaluations of it.
const FAST_MIN_ELEMENTS: u64 = 1 << 14;

impl Quantizer {
    /// Fits `codec` to a tensor's merged statistics (§12.1–§12.4).
    ///
    /// `lloyd` and `lloyd-rows` fit their table to `stats.hist`, which [`scan`] fills; given
    /// statistics without a histogram (built by hand), they produce an all-zero table.
    pub fn new(codec: Codec, stats: &Stats) -> Quantizer {
        let mut lut = [0f32; 256];
        match codec {
            Codec::Log => {
                let (log_min, log_max) = if stats.nonzero == 0 {
                    (0.0, 0.0)
                } else {
                    (
                        f64::from(stats.min_nonzero).ln(),
                        f64::from(stats.max_abs).ln(),
                    )
                };
                let range = log_max - log_min;
                for (c, v) in lut.iter_mut().enumerate().skip(1) {
                    let t = (255 - c) as f64 / 254.0;
                    *v = (log_min + t * range).exp() as f32;
                }
                Quantizer {
                    codec,
                    params: [log_min, log_max],
                    lut,
                    thresholds: None,
                    fast: None,
                    range: None,
                    count: stats.count,
                    half: Default::default(),
                }
                .with_fast_path(stats)
            }
            Codec::Linear => {
                let max_abs = f64::from(stats.max_abs);
                for (c, v) in lut.iter_mut().enumerate().skip(1) {
                    *v = ((c - 1) as f64 / 254.0 * max_abs) as f32;
                }
                Quantizer {
                    codec,
                    params: [max_abs, 0.0],
                    lut,
                    thresholds: None,
                    fast: None,
                    range: None,
                    count: stats.count,
                    half: Default::default(),
                }
                .with_fast_path(stats)
            }
            Codec::Lloyd | Codec::LloydRows => {
                debug_assert!(
                    stats.nonzero == 0 || !stats.hist.bins().is_empty(),
                    "{codec} needs the histogram that `scan` gathers"
                );
                let fit = lloyd::fit(&stats.hist);
                Quantizer {
                    codec,
                    params: [f64::from(stats.max_abs), fit.rel_err],
                    lut: fit.lut,
                    thresholds: Some(Box::new(lloyd::lut_thresholds(&fit.lut))),
                    fast: None,
                    range: None,
                    count: stats.count,
                    half: Default::default(),
                }
                .with_fast_path(stats)
            }
        }
    }

    /// The codec.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// `param0` and `param1` as stored in the tensor record.
    pub fn params(&self) -> [f64; 2] {
        self.params
    }

    /// The 256-entry table.
    pub fn lut(&self) -> &[f32; 256] {
        &self.lut
    }

    fn with_fast_path(mut self, stats: &Stats) -> Quantizer {
        let (lo, hi) = (stats.min_nonzero.to_bits(), stats.max_abs.to_bits());
        // Only for a range of finite positive magnitudes, which `scan` always gives: statistics
        // built by hand (the fields are public) may have any bits, and `Breaks::new` requires
        // `0 < lo <= hi < u32::MAX`. Without the table every code comes from the formula.
        let finite_range = 0 < lo && lo <= hi && hi < 0x7F80_0000;
        if stats.nonzero > 0 && stats.count >= FAST_MIN_ELEMENTS && finite_range {
            let breaks = Breaks::new(lo, hi, |b| self.code_exact(f32::from_bits(b)));
            self.fast = Some(Box::new(breaks));
            self.range = Some((stats.min_nonzero, stats.max_abs));
        }
        self
    }

    /// The code of one magnitude `m ≥ 0` (§12): the formula's, computed from the change-point
    /// table where the quantizer has one.
    #[inline]
    pub fn code(&self, m: f32) -> u8 {
        if let Some(c) = self.fast.as_ref().and_then(|f| f.code(m.to_bits())) {
            return c;
        }
        self.code_slow(m)
    }

    /// [`Quantizer::code_exact`] kept out of line, so that the fast path of
    /// [`Quantizer::code`] stays small where it is inlined.
    #[inline(never)]
    fn code_slow(&self, m: f32) -> u8 {
        self.code_exact(m)
    }

    /// The code of the f32 magnitude pattern `m` by the formula, or `None` if it is not
    /// finite: the loops' way out of their tables, kept out of line.
    #[inline(never)]
    fn code_bits_slow(&self, m: u32) -> Option<u8> {
        let x = f32::from_bits(m);
        x.is_finite().then(|| self.code_exact(x))
    }

    /// The code of the half-precision magnitude pattern `m` (`cvt` converting it), or `None`
    /// if it is not finite.
    #[inline(never)]
    fn code_half_slow(&self, m: u32, cvt: fn(u16) -> f32) -> Option<u8> {
        let x = cvt(m as u16);
        x.is_finite().then(|| self.code(x))
    }

    /// The codes of every bfloat16 (`cvt` = [`bf16_to_f32`], `finite_end` 0x7F80) or float16
    /// magnitude pattern whose value lies in the statistics' range, when the tensor is large
    /// enough for the change points and at least as large as the table.
    fn build_half_table(&self, cvt: fn(u16) -> f32, finite_end: u32) -> Option<Box<HalfCodes>> {
        self.fast.as_ref()?;
        let (min, max) = self.range?;
        // The first finite pattern whose value satisfies `pred`, which is monotonic (finite
        // patterns order like their values).
        let first = |pred: &dyn Fn(f32) -> bool| {
            let (mut a, mut b) = (0u32, finite_end);
            while a < b {
                let m = a + (b - a) / 2;
                if pred(cvt(m as u16)) {
                    b = m;
                } else {
                    a = m + 1;
                }
            }
            a
        };
        let lo = first(&|x| x >= min).max(1);
        let hi = first(&|x| x > max).checked_sub(1)?;
        if lo > hi || u64::from(hi - lo + 1) > self.count {
            return None;
        }
        // Every value of the range is inside the change points' range: one lookup each.
        let table = HalfCodes::new(lo as u16, hi as u16, |p| self.code(cvt(p)));
        Some(Box::new(table))
    }

    /// The f32 loop: eight elements and a sign byte per step, each code from the change
    /// points where the quantizer has them.
    #[inline(always)]
    fn encode_f32_words<T: Copy>(
        &self,
        words: &[T],
        bits: impl Fn(T) -> u32,
        codes: &mut [u8],
        signs: &mut [u8],
    ) -> Result<(), usize> {
        let slow = |m| self.code_bits_slow(m);
        match self.fast.as_deref() {
            Some(f) => encode_words(words, bits, 31, codes, signs, OrElse(f.view(), slow)),
            None => encode_words(words, bits, 31, codes, signs, Formula(slow)),
        }
    }

    /// The bfloat16 or float16 loop: each code from the table of every pattern where the
    /// tensor repays one.
    fn encode_half_words(
        &self,
        words: &[[u8; 2]],
        slot: usize,
        cvt: fn(u16) -> f32,
        codes: &mut [u8],
        signs: &mut [u8],
    ) -> Result<(), usize> {
        let finite_end = if slot == 0 { 0x7F80 } else { 0x7C00 };
        let table = self.half[slot]
            .get_or_init(|| self.build_half_table(cvt, finite_end))
            .as_deref();
        let bits = |x: [u8; 2]| u32::from(u16::from_le_bytes(x));
        let slow = |m| self.code_half_slow(m, cvt);
        match table {
            Some(t) => encode_words(words, bits, 15, codes, signs, OrElse(t, slow)),
            None => encode_words(words, bits, 15, codes, signs, Formula(slow)),
        }
    }

    /// [`Quantizer::encode`] of a chunk given as the little-endian bytes of an encodable
    /// `dtype` (F32, BF16, F16): the codes and signs that `encode` gives for the values
    /// converted to f32. Without row scales nothing is converted: the loops read the bit
    /// patterns, and BF16 and F16 chunks of a tensor with at least as many elements as it has
    /// 16-bit magnitude patterns in its range are coded from a table of those patterns, built
    /// once per quantizer.
    pub fn encode_bytes(
        &self,
        dtype: Dtype,
        bytes: &[u8],
        first: u64,
        scales: Option<&RowScales<'_>>,
        codes: &mut [u8],
        signs: &mut [u8],
    ) -> Result<(), EncodeError> {
        let words = Words::new(dtype, bytes)
            .filter(|w| w.len() == codes.len() && signs.len() == codes.len().div_ceil(8));
        let Some(words) = words.filter(|_| first.is_multiple_of(8)) else {
            return Err(EncodeError::BadChunk { first });
        };
        if let Some(rs) = scales {
            rs.check_chunk(first, words.len())?;
            // As `encode` does, a block of scaled values at a time, divided straight from the
            // bytes; a block the loop refuses is coded again one element at a time.
            let mut buf = [0f32; SCALED_BLOCK];
            for (k, (c, s)) in codes
                .chunks_mut(SCALED_BLOCK)
                .zip(signs.chunks_mut(SCALED_BLOCK / 8))
                .enumerate()
            {
                let at = k * SCALED_BLOCK;
                let u = &mut buf[..c.len()];
                words.scaled_into(at, first + at as u64, rs, u);
                if self.encode_f32_words(u, f32::to_bits, c, s).is_err() {
                    let x = &mut buf[..c.len()];
                    words.convert(at, x);
                    self.encode_scaled_one_by_one(x, first + at as u64, rs, c, s)?;
                }
            }
            return Ok(());
        }
        match words {
            Words::F32(w) => self.encode_f32_words(w, u32::from_le_bytes, codes, signs),
            Words::Bf16(w) => self.encode_half_words(w, 0, bf16_to_f32, codes, signs),
            Words::F16(w) => self.encode_half_words(w, 1, f16_to_f32, codes, signs),
        }
        .map_err(|i| EncodeError::NonFinite {
            index: first + i as u64,
            value: words.value(i),
        })
    }

    /// The code of one magnitude `m ≥ 0` by the formula of §12, evaluated as written so that
    /// ties fall where the spec puts them.
    pub fn code_exact(&self, m: f32) -> u8 {
        if m == 0.0 {
            return 0;
        }
        match self.codec {
            Codec::Log => {
                let [log_min, log_max] = self.params;
                if log_max == log_min {
                    return 1;
                }
                let x = 255.0 - 254.0 * (f64::from(m).ln() - log_min) / (log_max - log_min);
                x.round_ties_even().clamp(1.0, 255.0) as u8
            }
            Codec::Linear => {
                let x = f64::from(m) / self.params[0] * 254.0 + 1.0;
                x.round_ties_even().clamp(1.0, 255.0) as u8
            }
            Codec::Lloyd | Codec::LloydRows => match &self.thresholds {
                Some(t) => lloyd::code_of(t, m),
                None => 0,
            },
        }
    }

    /// Encodes a chunk of values whose first element has flat index `first` (a multiple of 8)
    /// into `codes` (one per value) and `signs` (`ceil(len / 8)` bytes, §11.2). Values must
    /// have been [`scan`]ned: a non-finite value is reported again here.
    pub fn encode(
        &self,
        values: &[f32],
        first: u64,
        scales: Option<&RowScales<'_>>,
        codes: &mut [u8],
        signs: &mut [u8],
    ) -> Result<(), EncodeError> {
        if !first.is_multiple_of(8)
            || codes.len() != values.len()
            || signs.len() != values.len().div_ceil(8)
        {
            return Err(EncodeError::BadChunk { first });
        }
        if let Some(rs) = scales {
            rs.check_chunk(first, values.len())?;
        }
        if scales.is_none() {
            return self
                .encode_f32_words(values, f32::to_bits, codes, signs)
                .map_err(|i| EncodeError::NonFinite {
                    index: first + i as u64,
                    value: values[i],
                });
        }
        // With row scales: a block's scaled values into a buffer, walking its rows, then the f32
        // loop on them. A block that loop refuses (a value that is not finite, or one that
        // overflows when scaled) is coded again one element at a time, as the rule says.
        let rs = scales.expect("checked above");
        let mut buf = [0f32; SCALED_BLOCK];
        for (k, ((x, c), s)) in values
            .chunks(SCALED_BLOCK)
            .zip(codes.chunks_mut(SCALED_BLOCK))
            .zip(signs.chunks_mut(SCALED_BLOCK / 8))
            .enumerate()
        {
            let at = first + (k * SCALED_BLOCK) as u64;
            let u = &mut buf[..x.len()];
            let _ = for_each_row_run(x, at, rs, |run, scale, i| {
                for (o, &v) in u[i..i + run.len()].iter_mut().zip(run) {
                    *o = v / scale;
                }
                Ok::<(), ()>(())
            });
            if self.encode_f32_words(u, f32::to_bits, c, s).is_err() {
                self.encode_scaled_one_by_one(x, at, rs, c, s)?;
            }
        }
        Ok(())
    }

    /// The rule of [`Quantizer::encode`] with row scales, one element at a time.
    fn encode_scaled_one_by_one(
        &self,
        values: &[f32],
        first: u64,
        rs: &RowScales<'_>,
        codes: &mut [u8],
        signs: &mut [u8],
    ) -> Result<(), EncodeError> {
        signs.fill(0);
        for_each_scaled(values, first, Some(rs), |i, x, u| {
            if !x.is_finite() {
                return Err(EncodeError::NonFinite {
                    index: first + i as u64,
                    value: x,
                });
            }
            let c = self.code(u.abs());
            codes[i] = c;
            if c != 0 && u.is_sign_negative() {
                signs[i / 8] |= 1 << (i % 8);
            }
            Ok(())
        })
    }
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
mod tests {
    use super::*;

    #[test]
    fn log_codes_follow_the_formula() {
        let v = [0.5f32, -0.25, 0.0, 0.001, -0.5, 1e-3];
        let e = encode(Codec::Log, &v, None).unwrap();
        let x = 255.0
            - 254.0 * (0.25f64.ln() - f64::from(0.001f32).ln())
                / (0.5f64.ln() - f64::from(0.001f32).ln());
        assert_eq!(e.codes, [1, x.round_ties_even() as u8, 0, 255, 1, 255]);
        assert_eq!(e.signs, [0b0001_0010]);
        let [lo, hi] = e.quantizer.params();
        assert_eq!(lo, f64::from(0.001f32).ln());
        assert_eq!(hi, 0.5f64.ln());
        assert_eq!(e.quantizer.lut()[0], 0.0);
        assert_eq!(e.quantizer.lut()[1], 0.5);
        assert_eq!(e.quantizer.lut()[255], 0.001);
    }

    #[test]
    fn degenerate_and_empty_tensors() {
        let e = encode(Codec::Log, &[-2.0, 2.0, 0.0], None).unwrap();
        assert_eq!(e.codes, [1, 1, 0]);
        assert_eq!(e.quantizer.lut()[1], 2.0);
        assert_eq!(e.quantizer.lut()[255], 2.0);
        let z = encode(Codec::Log, &[0.0, -0.0], None).unwrap();
        assert_eq!(z.codes, [0, 0]);
        assert_eq!(z.signs, [0]);
        assert_eq!(z.quantizer.params(), [0.0, 0.0]);
        let l = encode(Codec::Linear, &[0.0; 3], None).unwrap();
        assert_eq!(l.quantizer.lut(), &[0.0; 256]);
        let n = encode(Codec::Log, &[], None).unwrap();
        assert!(n.codes.is_empty() && n.signs.is_empty());
    }

    #[test]
    fn linear_codes_follow_the_formula() {
        let e = encode(Codec::Linear, &[1.0, -0.5, 0.0, 0.001], None).unwrap();
        assert_eq!(e.codes, [255, 128, 0, 1]);
        assert_eq!(e.quantizer.lut()[255], 1.0);
        assert_eq!(e.quantizer.lut()[1], 0.0);
        assert_eq!(e.quantizer.params(), [1.0, 0.0]);
    }

    #[test]
    fn non_finite_values_are_refused_with_their_index() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let err = encode(Codec::Log, &[1.0, 2.0, bad], None).unwrap_err();
            assert!(
                matches!(err, EncodeError::NonFinite { index: 2, .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn scaling_that_overflows_is_refused() {
        let shape = [1u64, 2];
        let s = RowScales::new(&[1e-30], &shape).unwrap();
        let err = encode(Codec::Log, &[1.0, f32::MAX], Some(&s)).unwrap_err();
        assert!(
            matches!(err, EncodeError::ScaleOverflow { index: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn row_scales_are_checked_and_applied() {
        let shape = [2u64, 2];
        assert!(matches!(
            RowScales::new(&[1.0], &shape),
            Err(EncodeError::ScaleCount {
                expected: 2,
                got: 1
            })
        ));
        assert!(matches!(
            RowScales::new(&[1.0, 0.0], &shape),
            Err(EncodeError::BadScale { row: 1, .. })
        ));
        let s = RowScales::new(&[1.0, 10.0], &shape).unwrap();
        let e = encode(Codec::Log, &[1.0, 0.5, 10.0, -5.0], Some(&s)).unwrap();
        assert_eq!(e.codes[0], e.codes[2]);
        assert_eq!(e.codes[1], e.codes[3]);
        assert_eq!(e.signs, [0b1000]);
    }

    #[test]
    fn chunked_encoding_equals_whole() {
        let v: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 1000) as f32 - 500.0)
            .collect();
        let whole = encode(Codec::Log, &v, None).unwrap();
        let st = v
            .chunks(256)
            .enumerate()
            .map(|(k, c)| scan(c, k as u64 * 256, None).unwrap())
            .fold(Stats::EMPTY, Stats::merge);
        let q = Quantizer::new(Codec::Log, &st);
        let mut codes = vec![0; v.len()];
        let mut signs = vec![0; v.len().div_ceil(8)];
        for (k, c) in v.chunks(256).enumerate() {
            let a = k * 256;
            q.encode(
                c,
                a as u64,
                None,
                &mut codes[a..a + c.len()],
                &mut signs[a / 8..(a + c.len()).div_ceil(8)],
            )
            .unwrap();
        }
        assert_eq!(codes, whole.codes);
        assert_eq!(signs, whole.signs);
        assert!(matches!(
            q.encode(&v[..3], 3, None, &mut codes[..3], &mut signs[..1]),
            Err(EncodeError::BadChunk { first: 3 })
        ));
    }
}

#[cfg(test)]
mod fast_tests {
    use super::*;

    /// The change-point table gives the formula's code for every f32 bit pattern of a range.
    #[test]
    fn fast_codes_equal_the_formula_on_every_bit_pattern() {
        let cases = [
            (Codec::Log, 1e-6f32, 0.25f32),
            (Codec::Log, 0.01, 0.0101),
            (Codec::Linear, 1e-30, 3.0),
            (Codec::Log, f32::from_bits(1), f32::MAX),
        ];
        for (codec, min, max) in cases {
            let stats = Stats {
                min_nonzero: min,
                max_abs: max,
                nonzero: 2,
                count: FAST_MIN_ELEMENTS,
                hist: Histogram::EMPTY,
            };
            let q = Quantizer::new(codec, &stats);
            assert!(q.fast.is_some());
            let (lo, hi) = (min.to_bits(), max.to_bits());
            // Every pattern near the ends and a dense stride through the middle; the full
            // sweep of one binade below.
            let step = ((hi - lo) / 3_000_000).max(1);
            let mut b = lo;
            while b <= hi {
                let m = f32::from_bits(b);
                assert_eq!(q.code(m), q.code_exact(m), "{codec} bits {b:#x}");
                b = b.saturating_add(step);
                if b == u32::MAX {
                    break;
                }
            }
        }
        let stats = Stats {
            min_nonzero: 0.5,
            max_abs: 1.0,
            nonzero: 2,
            count: FAST_MIN_ELEMENTS,
            hist: Histogram::EMPTY,
        };
        let q = Quantizer::new(Codec::Log, &stats);
        for b in 0.5f32.to_bits()..=1.0f32.to_bits() {
            let m = f32::from_bits(b);
            assert_eq!(q.code(m), q.code_exact(m), "bits {b:#x}");
        }
    }

    /// Codes and signs by the definition: the formula on each magnitude, one element at a time.
    fn reference(q: &Quantizer, values: &[f32]) -> (Vec<u8>, Vec<u8>) {
        let codes: Vec<u8> = values.iter().map(|x| q.code_exact(x.abs())).collect();
        let mut signs = vec![0u8; values.len().div_ceil(8)];
        for (i, (x, &c)) in values.iter().zip(&codes).enumerate() {
            if c != 0 && x.is_sign_negative() {
                signs[i / 8] |= 1 << (i % 8);
            }
        }
        (codes, signs)
    }

    fn to_f32(dtype: Dtype, bytes: &[u8]) -> Vec<f32> {
        let mut v = vec![0f32; bytes.len() / (dtype.bits() / 8) as usize];
        dtype.to_f32(bytes, &mut v).unwrap();
        v
    }

    /// `scan_bytes` and `encode_bytes` on a source's bytes give what `scan` and `encode` give on
    /// the values converted to f32, and the codes are the formula's: every finite bfloat16 and
    /// float16 bit pattern, with quantizers fitted to the whole range (every pattern in the
    /// table) and to a narrow one (most patterns outside it), in chunks at several offsets.
    #[test]
    fn byte_loops_equal_the_f32_loops_on_every_16_bit_pattern() {
        for dtype in [Dtype::BF16, Dtype::F16] {
            let finite: Vec<u16> = (0..=u16::MAX)
                .filter(|&b| to_f32(dtype, &b.to_le_bytes())[0].is_finite())
                .collect();
            let bytes: Vec<u8> = finite.iter().flat_map(|b| b.to_le_bytes()).collect();
            let values = to_f32(dtype, &bytes);
            let narrow: Vec<f32> = values
                .iter()
                .map(|&x| {
                    if (0.01..0.5).contains(&x.abs()) {
                        x
                    } else {
                        0.0
                    }
                })
                .collect();
            for codec in Codec::ALL.iter().copied().filter(|c| !c.uses_row_scales()) {
                for fitted in [&values, &narrow] {
                    let st = scan(fitted, 0, None).unwrap();
                    let q = Quantizer::new(codec, &st);
                    let (want_c, want_s) = reference(&q, &values);
                    let mut codes = vec![0u8; values.len()];
                    let mut signs = vec![0u8; values.len().div_ceil(8)];
                    for (a, b) in [(0, values.len()), (0, 8), (8, 4096), (4096, values.len())] {
                        let (c, s) = (&mut codes[a..b], &mut signs[a / 8..b.div_ceil(8)]);
                        q.encode_bytes(dtype, &bytes[2 * a..2 * b], a as u64, None, c, s)
                            .unwrap();
                        assert_eq!(c, &want_c[a..b], "{dtype} {codec} codes {a}..{b}");
                        assert_eq!(s, &want_s[a / 8..b.div_ceil(8)], "{dtype} {codec} signs");
                    }
                    let (mut c2, mut s2) = (codes.clone(), signs.clone());
                    q.encode(&values, 0, None, &mut c2, &mut s2).unwrap();
                    assert_eq!((c2, s2), (codes, signs), "{dtype} {codec} encode");
                }
                let st = scan_bytes(codec, dtype, &bytes, 0, None).unwrap();
                let want = scan(&values, 0, None).unwrap();
                let want = Stats {
                    hist: if codec.fits_histogram() {
                        want.hist.clone()
                    } else {
                        Histogram::EMPTY
                    },
                    ..want
                };
                assert_eq!(st, want, "{dtype} {codec} stats");
            }
        }
    }

    /// The same for f32 sources: a sweep of bit patterns with zeros, both signs, subnormals,
    /// values outside the fitted range, and the statistics of every chunking.
    #[test]
    fn byte_loops_equal_the_f32_loops_on_f32() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let values: Vec<f32> = (0..100_003u32)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                match i % 7 {
                    0 => 0.0,
                    1 => -0.0,
                    2 => {
                        f32::from_bits(x as u32 % 0x7F80_0000) * if x & 1 == 0 { 1.0 } else { -1.0 }
                    }
                    3 => f32::from_bits(x as u32 % 0x0080_0000),
                    _ => ((x >> 11) as f64 / (1u64 << 53) as f64 - 0.5) as f32 * 0.1,
                }
            })
            .collect();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        for codec in Codec::ALL.iter().copied().filter(|c| !c.uses_row_scales()) {
            let fit: Vec<f32> = values
                .iter()
                .map(|&x| if x.abs() < 0.04 { x } else { 0.0 })
                .collect();
            for fitted in [&values, &fit] {
                let q = Quantizer::new(codec, &scan(fitted, 0, None).unwrap());
                let (want_c, want_s) = reference(&q, &values);
                let mut codes = vec![0u8; values.len()];
                let mut signs = vec![0u8; values.len().div_ceil(8)];
                q.encode_bytes(Dtype::F32, &bytes, 0, None, &mut codes, &mut signs)
                    .unwrap();
                assert_eq!(codes, want_c, "{codec}");
                assert_eq!(signs, want_s, "{codec}");
                q.encode(&values, 0, None, &mut codes, &mut signs).unwrap();
                assert_eq!((codes, signs), (want_c, want_s), "{codec}");
            }
            for chunk in [8usize, 4096, 65_536] {
                let st = bytes
                    .chunks(4 * chunk)
                    .enumerate()
                    .map(|(k, b)| {
                        scan_bytes(codec, Dtype::F32, b, (k * chunk) as u64, None).unwrap()
                    })
                    .fold(Stats::EMPTY, Stats::merge);
                let want = scan(&values, 0, None).unwrap();
                assert_eq!(st.min_nonzero, want.min_nonzero);
                assert_eq!(st.max_abs, want.max_abs);
                assert_eq!((st.nonzero, st.count), (want.nonzero, want.count));
                assert_eq!(st.hist.bins().is_empty(), !codec.fits_histogram());
                if codec.fits_histogram() {
                    assert_eq!(st.hist, want.hist);
                }
            }
        }
    }

    /// Non-finite values are refused with the index and value `scan` and `encode` give, and
    /// malformed chunks are refused.
    #[test]
    fn byte_loops_refuse_what_the_f32_loops_refuse() {
        for dtype in [Dtype::F32, Dtype::BF16, Dtype::F16] {
            let size = (dtype.bits() / 8) as usize;
            let good: Vec<f32> = (0..40_000).map(|i| (i as f32 - 20_000.0) * 1e-4).collect();
            let mut bytes: Vec<u8> = good
                .iter()
                .flat_map(|&v| match dtype {
                    Dtype::F32 => v.to_bits().to_le_bytes().to_vec(),
                    Dtype::BF16 => half::bf16::from_f32(v).to_le_bytes().to_vec(),
                    _ => half::f16::from_f32(v).to_le_bytes().to_vec(),
                })
                .collect();
            let q = Quantizer::new(
                Codec::Log,
                &scan_bytes(Codec::Log, dtype, &bytes, 0, None).unwrap(),
            );
            let inf: &[u8] = match dtype {
                Dtype::F32 => &[0, 0, 0x80, 0xFF],
                Dtype::BF16 => &[0x80, 0xFF],
                _ => &[0x00, 0xFC],
            };
            bytes[size * 30_001..size * 30_002].copy_from_slice(inf);
            bytes[size * 30_005..size * 30_006].copy_from_slice(inf);
            let values = to_f32(dtype, &bytes);
            let want = scan(&values, 16, None).unwrap_err();
            assert_eq!(
                scan_bytes(Codec::Log, dtype, &bytes, 16, None).unwrap_err(),
                want
            );
            assert!(
                matches!(want, EncodeError::NonFinite { index: 30_017, value } if value == f32::NEG_INFINITY)
            );
            let (mut c, mut s) = (vec![0u8; values.len()], vec![0u8; values.len().div_ceil(8)]);
            let want = q.encode(&values, 16, None, &mut c, &mut s).unwrap_err();
            let got = q
                .encode_bytes(dtype, &bytes, 16, None, &mut c, &mut s)
                .unwrap_err();
            assert_eq!(got, want);
            assert!(matches!(
                q.encode_bytes(dtype, &bytes, 4, None, &mut c, &mut s),
                Err(EncodeError::BadChunk { first: 4 })
            ));
            assert!(matches!(
                q.encode_bytes(dtype, &bytes[1..], 0, None, &mut c, &mut s),
                Err(EncodeError::BadChunk { first: 0 })
            ));
            assert!(scan_bytes(Codec::Log, dtype, &bytes[1..], 0, None).is_err());
        }
        assert!(scan_bytes(Codec::Log, Dtype::I32, &[0; 4], 0, None).is_err());
    }

    /// With row scales (rows of lengths that are and are not multiples of 8, scales that make
    /// some values overflow or underflow), the block loop equals the rule applied one element
    /// at a time, and the byte forms equal the f32 forms, in chunks at several offsets.
    #[test]
    fn scaled_loops_equal_the_rule() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for (rows, cols) in [(300u64, 37u64), (40, 1024), (5000, 3), (2, 20_000)] {
            let shape = [rows, cols];
            let n = (rows * cols) as usize;
            let values: Vec<f32> = (0..n)
                .map(|i| match i % 11 {
                    0 => 0.0,
                    1 => -0.0,
                    _ => ((next() >> 11) as f64 / (1u64 << 53) as f64 - 0.5) as f32,
                })
                .collect();
            for dtype in [Dtype::F32, Dtype::BF16, Dtype::F16] {
                let bytes: Vec<u8> = values
                    .iter()
                    .flat_map(|&v| match dtype {
                        Dtype::F32 => v.to_le_bytes().to_vec(),
                        Dtype::BF16 => half::bf16::from_f32(v).to_le_bytes().to_vec(),
                        _ => half::f16::from_f32(v).to_le_bytes().to_vec(),
                    })
                    .collect();
                let v = to_f32(dtype, &bytes);
                let mut scales = row_scales(Codec::LloydRows, &v, &shape).unwrap().unwrap();
                assert_eq!(
                    RowMaxima::scan_bytes(dtype, &bytes, 0, &shape)
                        .unwrap()
                        .into_scales(&shape)
                        .unwrap(),
                    scales
                );
                let es = (dtype.bits() / 8) as usize;
                for chunk in [8usize, 1000, 4096] {
                    let m = bytes
                        .chunks(es * chunk)
                        .enumerate()
                        .map(|(k, b)| {
                            RowMaxima::scan_bytes(dtype, b, (k * chunk) as u64, &shape).unwrap()
                        })
                        .fold(RowMaxima::EMPTY, RowMaxima::merge);
                    assert_eq!(m.into_scales(&shape).unwrap(), scales, "{dtype} {chunk}");
                }
                // Some rows scaled so that their values overflow, or vanish.
                scales[1] = 1e-39;
                if scales.len() > 3 {
                    scales[3] = 1e30;
                }
                let rs = RowScales::new(&scales, &shape).unwrap();
                for codec in [Codec::LloydRows, Codec::Log] {
                    let st = scan(&v, 0, None).unwrap();
                    let q = Quantizer::new(codec, &st);
                    let (mut want_c, mut want_s) = (vec![0u8; n], vec![0u8; n.div_ceil(8)]);
                    q.encode_scaled_one_by_one(&v, 0, &rs, &mut want_c, &mut want_s)
                        .unwrap();
                    let (mut c, mut s) = (vec![0u8; n], vec![0u8; n.div_ceil(8)]);
                    q.encode(&v, 0, Some(&rs), &mut c, &mut s).unwrap();
                    assert!(c == want_c && s == want_s, "{dtype} {codec} {rows}x{cols}");
                    for chunk in [8usize, 1000, 4096] {
                        let (mut c, mut s) = (vec![0u8; n], vec![0u8; n.div_ceil(8)]);
                        for (k, ((b, cc), ss)) in bytes
                            .chunks(es * chunk)
                            .zip(c.chunks_mut(chunk))
                            .zip(s.chunks_mut(chunk / 8))
                            .enumerate()
                        {
                            q.encode_bytes(dtype, b, (k * chunk) as u64, Some(&rs), cc, ss)
                                .unwrap();
                        }
                        assert!(c == want_c && s == want_s, "{dtype} {codec} bytes {chunk}");
                    }
                }
                // Scanning with scales gives what `scan` gives (an overflow is refused alike).
                let rs = RowScales::new(&scales[..], &shape).unwrap();
                let got = scan_bytes(Codec::LloydRows, dtype, &bytes, 0, Some(&rs));
                assert_eq!(got, scan(&v, 0, Some(&rs)), "{dtype}");
                let ok: Vec<f32> = scales.iter().map(|&s| s.max(0.5)).collect();
                let rs = RowScales::new(&ok, &shape).unwrap();
                let got = scan_bytes(Codec::Log, dtype, &bytes, 0, Some(&rs)).unwrap();
                let want = scan(&v, 0, Some(&rs)).unwrap();
                assert_eq!(
                    got,
                    Stats {
                        hist: Histogram::EMPTY,
                        ..want
                    }
                );
            }
        }
    }
}

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

use crate::fastcode::Breaks;
use crate::lloyd;
pub use crate::lloyd::{Bin, Histogram};

/// A codec id from the registry of §12. Raw storage (id 0) is not a codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// `log` (id 1, §12.1): codes on a logarithmic scale between the smallest and largest
    /// non-zero magnitude. The prototype's rule and the default.
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
    /// A chunk does not start on a sign-byte boundary or its buffers have the wrong length.
    #[error("chunk at element {first} is misaligned or its buffers have the wrong length")]
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
    /// The largest scale (0 when there are none), for the histogram weights (§12.4).
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

    /// The scale of flat element `index`.
    #[inline]
    pub fn scale_of(&self, index: u64) -> f32 {
        self.scales[(index / self.row_len) as usize]
    }

    /// The histogram weight of the values of a row with scale `s` (§12.4): `2^32 (s / max)²`
    /// rounded to an integer (f64, ties to even), so that the fit minimises the squared error
    /// of the decoded values `u × s`.
    pub fn weight(&self, s: f32) -> u64 {
        let q = f64::from(s) / f64::from(self.max);
        (4_294_967_296.0 * (q * q)).round_ties_even() as u64
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
fn for_each_row_run<E>(
    values: &[f32],
    first: u64,
    rs: &RowScales<'_>,
    mut f: impl FnMut(&[f32], f32, usize) -> Result<(), E>,
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
    values: &'a [f32],
    first: u64,
    rs: &'s RowScales<'s>,
}

impl lloyd::Magnitudes for Scaled<'_, '_> {
    #[inline]
    fn for_each(&self, mut f: impl FnMut(u32, u64)) {
        let _ = for_each_row_run(self.values, self.first, self.rs, |run, s, _| {
            let w = self.rs.weight(s);
            for x in run {
                let b = (x / s).to_bits() & 0x7FFF_FFFF;
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
    /// does.
    pub fn scan(values: &[f32], first: u64, shape: &[u64]) -> Result<RowMaxima, EncodeError> {
        let (row_len, _) = crate::rows(shape).ok_or(EncodeError::BadChunk { first })?;
        if values.is_empty() {
            return Ok(RowMaxima::EMPTY);
        }
        if row_len == 0 {
            return Err(EncodeError::BadChunk { first });
        }
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
    /// largest magnitude, or 1 for a row of zeros. Fails unless the maxima cover exactly the
    /// tensor's rows (none when the row length is 0, §11.3).
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
        for m in &mut max {
            if *m == 0.0 {
                *m = 1.0;
            }
        }
        Ok(max)
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
    let mut st = Stats::EMPTY;
    match scales {
        None => {
            // On the magnitudes' bit patterns, which order like the magnitudes: branch-free
            // integer minima and maxima that the compiler vectorises. `b − 1` wraps for zero,
            // so zeros never give the smallest non-zero magnitude.
            let (mut lo, mut hi, mut nonzero) = (u32::MAX, 0u32, 0u64);
            for &x in values {
                let b = x.to_bits() & 0x7FFF_FFFF;
                lo = lo.min(b.wrapping_sub(1));
                hi = hi.max(b);
                nonzero += u64::from(b != 0);
            }
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
            if nonzero > 0 {
                st.min_nonzero = f32::from_bits(lo + 1);
                st.max_abs = f32::from_bits(hi);
                st.nonzero = nonzero;
            }
        }
        Some(rs) => {
            // Row by row, on bit patterns as above; a second look finds the first bad value.
            let (mut lo, mut hi, mut nonzero, mut worst) = (u32::MAX, 0u32, 0u64, 0u32);
            let _ = for_each_row_run(values, first, rs, |run, s, _| {
                for &x in run {
                    let b = (x / s).to_bits() & 0x7FFF_FFFF;
                    worst = worst.max(x.to_bits() & 0x7FFF_FFFF).max(b);
                    lo = lo.min(b.wrapping_sub(1));
                    hi = hi.max(b);
                    nonzero += u64::from(b != 0);
                }
                Ok::<(), ()>(())
            });
            if worst >= 0x7F80_0000 {
                for_each_scaled(values, first, scales, |i, x, u| {
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
            if nonzero > 0 {
                st.min_nonzero = f32::from_bits(lo + 1);
                st.max_abs = f32::from_bits(hi);
                st.nonzero = nonzero;
            }
        }
    }
    st.count = values.len() as u64;
    if st.nonzero > 0 {
        // Every value is finite and scales without overflow: the second pass bins the non-zero
        // magnitudes' bit patterns, now that their range is known.
        let (lo, hi) = (st.min_nonzero.to_bits(), st.max_abs.to_bits());
        st.hist = match scales {
            None => Histogram::build(&Plain(values), lo, hi, values.len()),
            Some(rs) => Histogram::build(&Scaled { values, first, rs }, lo, hi, values.len()),
        };
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
}

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
        if stats.nonzero > 0 && stats.count >= FAST_MIN_ELEMENTS {
            let (lo, hi) = (stats.min_nonzero.to_bits(), stats.max_abs.to_bits());
            let breaks = Breaks::new(lo, hi, |b| self.code_exact(f32::from_bits(b)));
            self.fast = Some(Box::new(breaks));
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
        if first % 8 != 0 || codes.len() != values.len() || signs.len() != values.len().div_ceil(8)
        {
            return Err(EncodeError::BadChunk { first });
        }
        signs.fill(0);
        if scales.is_none() {
            for (i, (&x, code)) in values.iter().zip(codes.iter_mut()).enumerate() {
                if !x.is_finite() {
                    return Err(EncodeError::NonFinite {
                        index: first + i as u64,
                        value: x,
                    });
                }
                let c = self.code(x.abs());
                *code = c;
                if c != 0 && x.is_sign_negative() {
                    signs[i / 8] |= 1 << (i % 8);
                }
            }
            return Ok(());
        }
        for_each_scaled(values, first, scales, |i, x, u| {
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
}

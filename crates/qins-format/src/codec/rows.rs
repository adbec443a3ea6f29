//! Row scales (§11.3) and the rule by which `lloyd-rows` chooses them (§12.4): each row's
//! largest magnitude, gathered chunk by chunk ([`RowMaxima`]), and each row's histogram weight
//! ([`RowScales::weight`]); and the walk of a chunk row by row that the passes share.

use super::words::{max_magnitude, Words};
use super::{cpu, Codec, EncodeError};
use crate::dtype::{bf16_to_f32, f16_to_f32};
use crate::Dtype;

#[cfg(doc)]
use super::scan;

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

    /// Elements per row.
    pub fn row_len(&self) -> u64 {
        self.row_len
    }

    /// `Ok` if elements `first..first + len` lie within the rows these scales cover, else
    /// [`EncodeError::BadChunk`]: what every function taking a chunk and its scales checks
    /// first.
    pub(super) fn check_chunk(&self, first: u64, len: usize) -> Result<(), EncodeError> {
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
pub(super) fn for_each_scaled<E>(
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

/// Calls `f(seg, s, i)` for each run of a chunk that lies in one row ([`row_runs`]): the run's
/// values, its row's scale, and the run's position in the chunk.
#[inline]
pub(super) fn for_each_row_run<T, E>(
    values: &[T],
    first: u64,
    rs: &RowScales<'_>,
    mut f: impl FnMut(&[T], f32, usize) -> Result<(), E>,
) -> Result<(), E> {
    let mut at = 0;
    for (run, s) in row_runs(values, first, rs) {
        f(run, s, at)?;
        at += run.len();
    }
    Ok(())
}

/// The runs of a chunk whose first element has flat index `first` that lie in one row, with
/// their rows' scales, in order: an iterator, for loops that must be compiled into their caller
/// (see [`cpu`](super::cpu)), which a closure is not always.
#[inline(always)]
pub(super) fn row_runs<'v, 's, T>(
    values: &'v [T],
    first: u64,
    rs: &RowScales<'s>,
) -> impl Iterator<Item = (&'v [T], f32)> + use<'v, 's, T> {
    let (row_len, scales) = (rs.row_len, rs.scales);
    let mut i = 0;
    std::iter::from_fn(move || {
        if i >= values.len() {
            return None;
        }
        let row = (first + i as u64) / row_len;
        let end = ((row + 1) * row_len - first).min(values.len() as u64) as usize;
        let run = (&values[i..end], scales[row as usize]);
        i = end;
        Some(run)
    })
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

    cpu::twin! {
        /// [`RowMaxima::scan`] of a chunk given as the little-endian bytes of an encodable
        /// `dtype`: the same maxima, found on the bit patterns in the source's own width (they
        /// order like the magnitudes), with no conversion but one per row.
        pub fn scan_bytes(
            dtype: Dtype,
            bytes: &[u8],
            first: u64,
            shape: &[u64],
        ) -> Result<RowMaxima, EncodeError> = RowMaxima::scan_bytes_as_built;
    }

    /// [`RowMaxima::scan_bytes`], compiled for whatever instruction set its caller is (see
    /// [`cpu`](super::cpu)).
    #[inline(always)]
    pub(super) fn scan_bytes_as_built(
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

//! The statistics pass (§12): every value checked (finite; with row scales, not overflowing
//! when divided), and the magnitudes' range, counts and histogram gathered into [`Stats`],
//! chunk by chunk, so that chunks merge into the tensor's statistics whatever the split.

use super::fastcode::magnitude_range;
use super::lloyd::{self, Histogram};
use super::rows::{for_each_row_run, for_each_scaled, RowScales};
use super::words::Words;
use super::{Codec, EncodeError};
use crate::dtype::{bf16_to_f32, f16_to_f32};
use crate::Dtype;

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

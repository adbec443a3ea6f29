//! The statistics pass (§12): every value checked (finite; with row scales, not overflowing
//! when divided), and the magnitudes' range, counts and histogram gathered into [`Stats`],
//! chunk by chunk, so that chunks merge into the tensor's statistics whatever the split.

use super::fastcode::{magnitude_range, Word};
use super::lloyd::{self, Histogram};
use super::rows::{for_each_row_run, for_each_scaled, row_runs, RowScales};
use super::words::Words;
use super::{cpu, Codec, EncodeError};
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

    /// The statistics of `count` elements of which `nonzero` are not 0, their magnitudes'
    /// f32 bit patterns ranging over `lo..=hi`, with the histogram of `mags` if `hist` (built
    /// now that the range is known; the magnitudes must be finite).
    #[inline(always)]
    pub(super) fn of_range(
        count: u64,
        (lo, hi, nonzero): (u32, u32, u64),
        hist: bool,
        mags: &impl lloyd::Magnitudes,
    ) -> Stats {
        let mut st = Stats {
            count,
            ..Stats::EMPTY
        };
        if nonzero > 0 {
            st.min_nonzero = f32::from_bits(lo);
            st.max_abs = f32::from_bits(hi);
            st.nonzero = nonzero;
            if hist {
                st.hist = Histogram::build(mags, lo, hi, count as usize);
            }
        }
        st
    }

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
    // On the magnitudes' bit patterns, which order like the magnitudes: branch-free integer
    // minima and maxima that the compiler vectorises.
    let range = magnitude_range(values, f32::to_bits);
    let hi = range.1;
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
    // Every value is finite: the second pass bins the non-zero magnitudes' bit patterns.
    let count = values.len() as u64;
    Ok(Stats::of_range(count, range, hist, &Plain(values)))
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
    let range = magnitude_range(u, f32::to_bits);
    if range.1 >= 0x7F80_0000 {
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
    let mags = Scaled { u, first, rs };
    Ok(Stats::of_range(u.len() as u64, range, hist, &mags))
}

/// A bfloat16 magnitude pattern (in a `u32`) as f32.
fn bf16_from(m: u32) -> f32 {
    bf16_to_f32(m as u16)
}

/// A float16 magnitude pattern (in a `u32`) as f32.
fn f16_from(m: u32) -> f32 {
    f16_to_f32(m as u16)
}

/// The statistics of a chunk with row scales from the source's words (`word` reads one,
/// `value` gives the f32 value of a magnitude pattern), without a buffer of scaled values:
/// division by a row's scale `s > 0` rounds monotonically, so a row's smallest non-zero and
/// largest scaled magnitudes are its smallest non-zero and largest magnitudes, found on the
/// bit patterns, divided by `s`; the histogram, if `hist`, divides each element again, a block
/// at a time. `None` when a value is not finite, overflows or underflows to 0 when scaled:
/// the caller then checks each scaled value (and reports the first fault).
#[inline(always)]
fn scan_rows<T: Copy, W: Word>(
    words: &[T],
    word: impl Fn(T) -> W + Copy,
    value: impl Fn(u32) -> f32 + Copy,
    first: u64,
    rs: &RowScales<'_>,
    hist: bool,
) -> Option<Stats> {
    let (mut lo, mut hi, mut nonzero) = (u32::MAX, 0u32, 0u64);
    let mut usual = true;
    for (run, s) in row_runs(words, first, rs) {
        let (a, b, n) = magnitude_range(run, word);
        if n > 0 {
            let (small, large) = (value(a) / s, value(b) / s);
            usual &= value(b).is_finite() && large.is_finite() && small != 0.0;
            lo = lo.min(small.to_bits());
            hi = hi.max(large.to_bits());
            nonzero += n;
        }
    }
    if !usual {
        return None;
    }
    let mags = ScaledWords {
        words,
        word,
        value,
        first,
        rs,
    };
    let count = words.len() as u64;
    Some(Stats::of_range(count, (lo, hi, nonzero), hist, &mags))
}

/// The non-zero scaled magnitudes of a chunk of source words, each weighted by its row's
/// weight, divided a block at a time.
struct ScaledWords<'a, 's, T, F, V> {
    words: &'a [T],
    word: F,
    value: V,
    first: u64,
    rs: &'s RowScales<'s>,
}

impl<T: Copy, W: Word, F: Fn(T) -> W + Copy, V: Fn(u32) -> f32 + Copy> lloyd::Magnitudes
    for ScaledWords<'_, '_, T, F, V>
{
    #[inline(always)]
    fn for_each(&self, mut f: impl FnMut(u32, u64)) {
        self.for_each_block(|block, w| {
            for &b in block.iter().filter(|&&b| b != 0) {
                f(b, w);
            }
        });
    }

    #[inline(always)]
    fn for_each_block(&self, mut f: impl FnMut(&[u32], u64)) {
        const BLOCK: usize = 256;
        let mut u = [0u32; BLOCK];
        for (run, s) in row_runs(self.words, self.first, self.rs) {
            let w = self.rs.weight(s);
            for block in run.chunks(BLOCK) {
                for (u, &x) in u.iter_mut().zip(block) {
                    *u = ((self.value)((self.word)(x).magnitude().widen()) / s).to_bits();
                }
                f(&u[..block.len()], w);
            }
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

cpu::twin! {
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
    ) -> Result<Stats, EncodeError> = scan_bytes_as_built;
}

/// [`scan_bytes`], compiled for whatever instruction set its caller is (see [`cpu`]).
#[inline(always)]
pub(super) fn scan_bytes_as_built(
    codec: Codec,
    dtype: Dtype,
    bytes: &[u8],
    first: u64,
    scales: Option<&RowScales<'_>>,
) -> Result<Stats, EncodeError> {
    let words = Words::new(dtype, bytes).ok_or(EncodeError::BadChunk { first })?;
    if let Some(rs) = scales {
        rs.check_chunk(first, words.len())?;
        let hist = codec.fits_histogram();
        let fast = match words {
            Words::F32(w) => scan_rows(w, u32::from_le_bytes, f32::from_bits, first, rs, hist),
            Words::Bf16(w) => scan_rows(w, u16::from_le_bytes, bf16_from, first, rs, hist),
            Words::F16(w) => scan_rows(w, u16::from_le_bytes, f16_from, first, rs, hist),
        };
        if let Some(st) = fast {
            return Ok(st);
        }
        // A fault to report, or a value that underflows when scaled: the scaled values
        // computed into a buffer, each checked.
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
    if !cvt(hi).is_finite() {
        let i = (0..words.len())
            .find(|&i| !words.value(i).is_finite())
            .expect("the largest magnitude is not finite");
        return Err(EncodeError::NonFinite {
            index: first + i as u64,
            value: words.value(i),
        });
    }
    // The range as f32 patterns (a 16-bit pattern converts exactly, keeping the order).
    let range = (cvt(lo).to_bits(), cvt(hi).to_bits(), nonzero);
    let count = words.len() as u64;
    Ok(Stats::of_range(
        count,
        range,
        codec.fits_histogram(),
        &words,
    ))
}

//! A fitted codec ([`Quantizer`]) and the code pass: each magnitude's code by the codec's rule,
//! and the sign bits (§11.2), from f32 values or straight from a source's bytes.

use std::sync::OnceLock;

use super::fastcode::{encode_words, Breaks, Formula, HalfCodes, OrElse};
use super::rows::{for_each_row_run, for_each_scaled, RowScales};
use super::words::Words;
use super::{formula, lloyd, scaled16, Codec, EncodeError, Stats};
use crate::dtype::{bf16_to_f32, f16_to_f32};
use crate::Dtype;

#[cfg(doc)]
use super::scan;

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
    /// The tables of 16-bit patterns per row scale, built as chunks need them.
    scale_tables: scaled16::ScaleCache,
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
        let (params, lut, thresholds) = match codec {
            Codec::Log => {
                let params = formula::log_params(stats);
                (params, formula::log_table(params), None)
            }
            Codec::Linear => {
                let params = formula::linear_params(stats);
                (params, formula::linear_table(params), None)
            }
            Codec::Lloyd | Codec::LloydRows => {
                debug_assert!(
                    stats.nonzero == 0 || !stats.hist.bins().is_empty(),
                    "{codec} needs the histogram that `scan` gathers"
                );
                let fit = lloyd::fit(&stats.hist);
                let thresholds = Some(Box::new(lloyd::lut_thresholds(&fit.lut)));
                ([f64::from(stats.max_abs), fit.rel_err], fit.lut, thresholds)
            }
        };
        Quantizer {
            codec,
            params,
            lut,
            thresholds,
            fast: None,
            range: None,
            count: stats.count,
            half: Default::default(),
            scale_tables: Default::default(),
        }
        .with_fast_path(stats)
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
            let code = |b| self.code_exact(f32::from_bits(b));
            let breaks = match &self.thresholds {
                // The code is the number of thresholds below the value: it changes only at the
                // first pattern above a threshold.
                Some(t) => Breaks::from_candidates(lo, hi, t.iter().map(|&t| first_above(t)), code),
                None => Breaks::new(lo, hi, code),
            };
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
            // A 16-bit source with the change points: a block at a time from the tables of its
            // rows' scales; a block they do not cover is coded again one element at a time.
            if let Some(breaks) = self.fast.as_deref() {
                match words {
                    Words::Bf16(w) => {
                        return self.encode_scaled16::<scaled16::Bf16>(
                            words, w, first, rs, breaks, codes, signs,
                        )
                    }
                    Words::F16(w) => {
                        return self.encode_scaled16::<scaled16::F16>(
                            words, w, first, rs, breaks, codes, signs,
                        )
                    }
                    Words::F32(_) => {}
                }
            }
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

    /// [`Quantizer::encode_bytes`] of a 16-bit chunk `w` with row scales: a block at a time
    /// from the tables of its rows' scales; a block they do not cover is coded again one
    /// element at a time.
    #[allow(clippy::too_many_arguments)]
    fn encode_scaled16<H: scaled16::Half>(
        &self,
        words: Words<'_>,
        w: &[[u8; 2]],
        first: u64,
        rs: &RowScales<'_>,
        breaks: &Breaks,
        codes: &mut [u8],
        signs: &mut [u8],
    ) -> Result<(), EncodeError> {
        let mut tables = scaled16::ScaleTables::<H>::new(breaks, &self.scale_tables);
        for (k, (c, s)) in codes
            .chunks_mut(SCALED_BLOCK)
            .zip(signs.chunks_mut(SCALED_BLOCK / 8))
            .enumerate()
        {
            let at = k * SCALED_BLOCK;
            let (w, first) = (&w[at..at + c.len()], first + at as u64);
            if scaled16::encode_scaled(w, first, rs, &mut tables, c, s).is_err() {
                let mut buf = [0f32; SCALED_BLOCK];
                let x = &mut buf[..c.len()];
                words.convert(at, x);
                self.encode_scaled_one_by_one(x, first, rs, c, s)?;
            }
        }
        Ok(())
    }

    /// The code of one magnitude `m ≥ 0` by the formula of §12, evaluated as written so that
    /// ties fall where the spec puts them.
    pub fn code_exact(&self, m: f32) -> u8 {
        if m == 0.0 {
            return 0;
        }
        match self.codec {
            Codec::Log => formula::log_code(self.params, m),
            Codec::Linear => formula::linear_code(self.params, m),
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

/// The smallest positive f32 bit pattern whose value is above `t` (any f64 but NaN; infinity's
/// pattern when `t` is past every finite f32): the nearest f32 to `t`, or the next one up when
/// the nearest is not above `t`. (The nearest lies within half a step of `t`, so the pattern
/// below it is never above `t`, and the one above it always is.)
fn first_above(t: f64) -> u32 {
    let b = (t.max(0.0) as f32).to_bits();
    if f64::from(f32::from_bits(b)) > t {
        b
    } else {
        b + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{row_scales, scan, scan_bytes, Histogram, RowMaxima};

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

    /// The change points of a fitted table, found from its thresholds, are those that bisection
    /// with the formula finds, on tables fitted to many kinds of magnitudes (a range inside the
    /// table's, past its ends, and one holding a single pattern), ties of equal entries and
    /// thresholds that are f32 values themselves included.
    #[test]
    fn change_points_from_thresholds_equal_the_bisected_ones() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for case in 0..60 {
            let n = 300 + (next() % 5000) as usize;
            let values: Vec<f32> = (0..n)
                .map(|_| {
                    let r = next();
                    match case % 4 {
                        // Few distinct values: levels repeat, thresholds equal their entries.
                        0 => ((r % 40) as f32) * 0.25,
                        1 => f32::from_bits(0x3000_0000 + (r as u32 % 0x0F00_0000)),
                        2 => ((r >> 11) as f64 / (1u64 << 53) as f64 - 0.5) as f32 * 0.04,
                        _ => f32::from_bits(1 + (r as u32 % 0x7F00_0000)),
                    }
                })
                .collect();
            for codec in [Codec::Lloyd, Codec::LloydRows] {
                let stats = crate::codec::scan(&values, 0, None).unwrap();
                let q = Quantizer::new(codec, &stats);
                let Some(t) = &q.thresholds else { continue };
                let code = |b| q.code_exact(f32::from_bits(b));
                let (lo, hi) = (stats.min_nonzero.to_bits(), stats.max_abs.to_bits());
                for (lo, hi) in [
                    (lo, hi),
                    (1, 0x7F7F_FFFF),
                    (lo.max(2) - 1, hi),
                    (lo + (hi - lo) / 3, lo + (hi - lo) / 3),
                ] {
                    let want = Breaks::new(lo, hi, code);
                    let got =
                        Breaks::from_candidates(lo, hi, t.iter().map(|&t| first_above(t)), code);
                    assert_eq!(
                        got.parts(),
                        want.parts(),
                        "case {case} {codec} {lo:#x}..={hi:#x}"
                    );
                }
            }
        }
        for t in [0.0, 1e-46, 1e-45, 0.5, 1.0 + 1e-12, 3.0e38, 3.5e38, 1e300] {
            let b = first_above(t);
            assert!(f64::from(f32::from_bits(b)) > t || b == 0x7F80_0000, "{t}");
            assert!(b == 1 || f64::from(f32::from_bits(b - 1)) <= t, "{t}");
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

    /// 16-bit sources with row scales, as the converter runs them (scales from the row maxima,
    /// the quantizer fitted to the scaled statistics, so that every code comes from the tables
    /// of `scaled16`), and with scales that make values underflow to 0, overflow, or fall
    /// outside the fitted range: every finite pattern of both signs, in rows of several
    /// lengths, gives the rule's codes and signs, and `scan_bytes` gives `scan`'s statistics,
    /// in chunks at several offsets.
    /// A table built in a spare one (another scale's, whose codes cover the patterns that
    /// this scale leaves out of its table) holds only its own scale's codes: each entry is the
    /// rule's code of its pattern divided by the scale, or "not in the table".
    #[test]
    fn tables_built_in_spares_hold_only_their_own_codes() {
        let v: Vec<f32> = (0..1 << 16)
            .map(|i| ((i * 7919 % 4001) as f32 / 2000.0 - 1.0) * 0.02)
            .collect();
        let shape = [256u64, 256];
        let scales = row_scales(Codec::LloydRows, &v, &shape).unwrap().unwrap();
        let rs = RowScales::new(&scales, &shape).unwrap();
        let q = Quantizer::new(Codec::LloydRows, &scan(&v, 0, Some(&rs)).unwrap());
        let breaks = q.fast.as_deref().expect("change points");
        for s in [scales[0], 0.3, 2.0, 1e-3, 1e30] {
            // Dirty spares: the same change points at a scale 10^4 smaller, whose table codes
            // the small patterns that scale `s` leaves out.
            for _ in 0..4 {
                scaled16::table_entries::<scaled16::Bf16>(breaks, s * 1e-4);
            }
            let t = scaled16::table_entries::<scaled16::Bf16>(breaks, s);
            let mut coded = 0;
            for (m, &e) in t.iter().enumerate().take(0x7F80) {
                if e != scaled16::NOT_IN_TABLE {
                    let want = q.code_exact(bf16_to_f32(m as u16) / s);
                    assert_eq!(e, u16::from(want), "scale {s}, pattern {m:#x}");
                    coded += 1;
                }
            }
            assert!(coded > 1000, "scale {s}: {coded} patterns coded");
        }
    }

    #[test]
    fn scaled_16_bit_sources_equal_the_rule() {
        for dtype in [Dtype::BF16, Dtype::F16] {
            let mut patterns: Vec<u16> = (0..=u16::MAX)
                .filter(|&b| to_f32(dtype, &b.to_le_bytes())[0].is_finite())
                .collect();
            // A deterministic shuffle, so that rows hold patterns of every size.
            let mut x = 0x2545_F491_4F6C_DD1Du64;
            for i in (1..patterns.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                patterns.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let bytes: Vec<u8> = patterns.iter().flat_map(|b| b.to_le_bytes()).collect();
            let v = to_f32(dtype, &bytes);
            let n = v.len();
            for cols in [37u64, 1000, 8192] {
                let rows = n as u64 / cols;
                let m = (rows * cols) as usize;
                let (bytes, v) = (&bytes[..2 * m], &v[..m]);
                let shape = [rows, cols];
                let maxima = row_scales(Codec::LloydRows, v, &shape).unwrap().unwrap();
                let mut odd = maxima.clone();
                for (r, s) in odd.iter_mut().enumerate() {
                    match r % 5 {
                        1 => *s = 1e30,  // every value underflows or nearly
                        2 => *s = 1e-30, // large values overflow
                        3 => *s *= 0.5,  // values up to 2
                        _ => {}
                    }
                }
                for scales in [&maxima, &odd] {
                    let rs = RowScales::new(scales, &shape).unwrap();
                    for codec in [Codec::LloydRows, Codec::Log] {
                        let st = scan(v, 0, Some(&rs));
                        let want = st.clone().map(|st| Stats {
                            hist: if codec.fits_histogram() {
                                st.hist
                            } else {
                                Histogram::EMPTY
                            },
                            ..st
                        });
                        let got = scan_bytes(codec, dtype, bytes, 0, Some(&rs));
                        assert_eq!(got, want, "{dtype} {codec} {cols} stats");
                        // Fitted to these values; or, where they overflow, to the row maxima's.
                        let fitted = match st {
                            Ok(st) => st,
                            Err(_) => {
                                let rm = RowScales::new(&maxima, &shape).unwrap();
                                scan(v, 0, Some(&rm)).unwrap()
                            }
                        };
                        let q = Quantizer::new(codec, &fitted);
                        assert!(q.fast.is_some());
                        let (mut want_c, mut want_s) = (vec![0u8; m], vec![0u8; m.div_ceil(8)]);
                        q.encode_scaled_one_by_one(v, 0, &rs, &mut want_c, &mut want_s)
                            .unwrap();
                        for chunk in [8usize, 4096, 40_000] {
                            let (mut c, mut s) = (vec![0u8; m], vec![0u8; m.div_ceil(8)]);
                            for (k, ((b, cc), ss)) in bytes
                                .chunks(2 * chunk)
                                .zip(c.chunks_mut(chunk))
                                .zip(s.chunks_mut(chunk / 8))
                                .enumerate()
                            {
                                q.encode_bytes(dtype, b, (k * chunk) as u64, Some(&rs), cc, ss)
                                    .unwrap();
                            }
                            assert!(c == want_c && s == want_s, "{dtype} {codec} {cols} {chunk}");
                        }
                    }
                }
            }
        }
    }
}

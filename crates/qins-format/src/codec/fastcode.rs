//! Exact codes without a logarithm per weight, and the tight loops that apply them.
//!
//! A codec's code is a monotonic function of the magnitude, and positive f32 values order like
//! their bit patterns. So between the smallest and the largest magnitude of a tensor the code
//! changes at most 254 times, at bit patterns found once per tensor by bisection with the
//! exact formula. Encoding a weight is then a bucket lookup on its bits and a step or two along
//! the sorted change points: the result is the formula's, bit pattern for bit pattern.
//!
//! For 16-bit sources (BF16, F16) there are only 2^15 magnitudes, so [`HalfCodes`] goes one
//! step further: one table entry per magnitude pattern between the tensor's smallest and
//! largest, filled from the change points, and encoding is one load per weight.
//!
//! The loops work on the source's little-endian bytes, as mapped from the file: no conversion
//! to f32 first. [`magnitude_range`] gathers a chunk's statistics with branch-free integer
//! minima and maxima that the compiler vectorises; [`encode_words`] writes eight codes and
//! their sign byte at a time.

/// The change points of a monotonic code function over the bit patterns `[lo, hi]`.
///
/// The tables have fixed sizes, so that the lookups, with their indices masked, need no
/// bounds checks: a monotonic function with values in `0..=255` changes at most 255 times.
#[derive(Clone, Debug)]
pub(crate) struct Breaks {
    lo: u32,
    /// `hi - lo`.
    span: u32,
    shift: u32,
    /// For each bucket of `1 << shift` bit patterns (at most [`MAX_BUCKETS`]): how many change
    /// points lie at or below its first pattern.
    start: Box<[u8; MAX_BUCKETS as usize]>,
    /// Bit patterns where the code changes, ascending: `code(b) != code(b - 1)`; then
    /// `u32::MAX`, a sentinel above every pattern of `[lo, hi]` that ends every walk.
    points: Box<[u32; 256]>,
    /// `codes[j]` is the code of a pattern with exactly `j` change points at or below it.
    codes: Box<[u8; 256]>,
}

/// Buckets per table at most: small enough to build quickly, fine enough that a bucket holds
/// about one change point.
const MAX_BUCKETS: u32 = 8192;

impl Breaks {
    /// Finds the change points of `code` (monotonic on `[lo, hi]`, `0 < lo <= hi < u32::MAX`).
    pub(crate) fn new(lo: u32, hi: u32, code: impl Fn(u32) -> u8) -> Breaks {
        assert!(
            0 < lo && lo <= hi && hi < u32::MAX,
            "bad range {lo:#x}..={hi:#x}"
        );
        let mut found = Vec::new();
        let mut codes = Box::new([0u8; 256]);
        codes[0] = code(lo);
        // Bisect every interval whose ends have different codes, left to right.
        let mut stack = vec![(lo, hi, code(lo), code(hi))];
        while let Some((a, b, ca, cb)) = stack.pop() {
            if ca == cb {
                continue;
            }
            if b == a + 1 {
                found.push(b);
                assert!(found.len() < 256, "the code function is not monotonic");
                codes[found.len()] = cb;
                continue;
            }
            let m = a + (b - a) / 2;
            let cm = code(m);
            // Right half first on the stack so the left half is finished first.
            stack.push((m, b, cm, cb));
            stack.push((a, m, ca, cm));
        }
        Breaks::with_points(lo, hi, &found, codes)
    }

    /// [`Breaks::new`] for a `code` whose change points are among `candidates` (in any order,
    /// repeated or outside `[lo, hi]` as may be): each candidate is checked (`code(p) !=
    /// code(p - 1)`), so only a missing change point can make the table wrong, and none is
    /// missing where the candidates are, for each threshold of a rule "the number of thresholds
    /// below the value", the first pattern above it. One call of `code` per candidate instead of
    /// some thirty per change point.
    pub(crate) fn from_candidates(
        lo: u32,
        hi: u32,
        candidates: impl IntoIterator<Item = u32>,
        code: impl Fn(u32) -> u8,
    ) -> Breaks {
        assert!(
            0 < lo && lo <= hi && hi < u32::MAX,
            "bad range {lo:#x}..={hi:#x}"
        );
        let mut found: Vec<u32> = candidates
            .into_iter()
            .filter(|&p| lo < p && p <= hi)
            .collect();
        found.sort_unstable();
        found.dedup();
        found.retain(|&p| code(p) != code(p - 1));
        assert!(found.len() < 256, "the code function is not monotonic");
        let mut codes = Box::new([0u8; 256]);
        codes[0] = code(lo);
        for (c, &p) in codes[1..].iter_mut().zip(&found) {
            *c = code(p);
        }
        Breaks::with_points(lo, hi, &found, codes)
    }

    /// The table of the change points `found` (ascending, in `(lo, hi]`) with `codes` as in
    /// [`Breaks::codes`].
    fn with_points(lo: u32, hi: u32, found: &[u32], codes: Box<[u8; 256]>) -> Breaks {
        let span = hi - lo;
        let mut shift = 0;
        while (span >> shift) >= MAX_BUCKETS {
            shift += 1;
        }
        let mut start = Box::new([0u8; MAX_BUCKETS as usize]);
        for (i, s) in start
            .iter_mut()
            .enumerate()
            .take(((span >> shift) + 1) as usize)
        {
            *s = found.partition_point(|&p| p <= lo + ((i as u32) << shift)) as u8;
        }
        let mut points = Box::new([u32::MAX; 256]);
        points[..found.len()].copy_from_slice(found);
        Breaks {
            lo,
            span,
            shift,
            start,
            points,
            codes,
        }
    }

    /// The code of bit pattern `b`, or `None` outside `[lo, hi]`.
    #[inline]
    pub(crate) fn code(&self, b: u32) -> Option<u8> {
        let k = b.wrapping_sub(self.lo);
        if k > self.span {
            return None;
        }
        Some(self.view().walk(k, b))
    }

    /// The range `lo`, `hi`, the change points (ascending) and the codes: `codes[j]` is the code
    /// of a pattern of the range with exactly `j` change points at or below it.
    pub(crate) fn parts(&self) -> (u32, u32, &[u32], &[u8]) {
        let k = self.points.partition_point(|&p| p != u32::MAX);
        (
            self.lo,
            self.lo + self.span,
            &self.points[..k],
            &self.codes[..=k],
        )
    }

    /// The table as plain slices and numbers, to be copied into a loop's registers.
    #[inline(always)]
    pub(crate) fn view(&self) -> BreaksView<'_> {
        BreaksView {
            lo: self.lo,
            span: self.span,
            shift: self.shift,
            start: &self.start,
            points: &self.points,
            codes: &self.codes,
        }
    }
}

/// A borrowed [`Breaks`], `Copy`, so that a loop keeps its fields in registers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BreaksView<'a> {
    lo: u32,
    span: u32,
    shift: u32,
    start: &'a [u8; MAX_BUCKETS as usize],
    points: &'a [u32; 256],
    codes: &'a [u8; 256],
}

impl BreaksView<'_> {
    /// The code of pattern `b = lo + k`, `k <= span`: its bucket's first count of change
    /// points, then a step past each point at or below `b` (the sentinel stops the walk, as
    /// `b <= hi < u32::MAX`). A bucket rarely holds more than one point, so one step is taken
    /// without a branch, and a loop takes any more. (Each step is a load that depends on the
    /// one before: a second unconditional step cost a third of the F32 encode time.)
    #[inline(always)]
    fn walk(self, k: u32, b: u32) -> u8 {
        let mut j = usize::from(self.start[((k >> self.shift) & (MAX_BUCKETS - 1)) as usize]);
        j += usize::from(self.points[j & 255] <= b);
        while self.points[j & 255] <= b {
            j += 1;
        }
        self.codes[j & 255]
    }
}

impl Coder for BreaksView<'_> {
    /// As [`Breaks::code`], with code 0 for pattern 0, and without a branch that depends on
    /// whether the pattern is zero (tensors can hold many zeros, in no order).
    #[inline(always)]
    fn code(&self, b: u32) -> Option<u8> {
        let k = b.wrapping_sub(self.lo);
        let inside = k <= self.span;
        if !inside && b != 0 {
            return None;
        }
        // Zero looks up `lo`'s bucket, where no change point lies at or below it.
        let c = self.walk(if inside { k } else { 0 }, b);
        Some(if inside { c } else { 0 })
    }
}

/// The codes of the 16-bit magnitude patterns of a half-precision type, exact from `lo` to
/// `hi` (about a tensor's smallest and largest non-zero magnitude) and for zero: one byte per
/// pattern, so encoding costs one load, and a group of eight is checked to lie in the range
/// with eight comparisons, without a branch. A pattern outside the range is the caller's to
/// code with the formula.
#[derive(Clone, Debug)]
pub(crate) struct HalfCodes {
    lo: u32,
    /// `hi - lo`.
    span: u32,
    /// `table[m]` is the code of pattern `m` for `m` in `lo..=hi` and for 0 (whose code is 0).
    table: Box<[u8; 0x8000]>,
}

impl HalfCodes {
    /// The table for magnitude patterns `lo..=hi` (`0 < lo <= hi < 0x8000`), `code` giving the
    /// exact code of a pattern.
    pub(crate) fn new(lo: u16, hi: u16, code: impl Fn(u16) -> u8) -> HalfCodes {
        assert!(
            0 < lo && lo <= hi && hi < 0x8000,
            "bad range {lo:#x}..={hi:#x}"
        );
        let mut table = Box::new([0u8; 0x8000]);
        for m in lo..=hi {
            table[usize::from(m)] = code(m);
        }
        HalfCodes {
            lo: u32::from(lo),
            span: u32::from(hi - lo),
            table,
        }
    }
}

impl Coder for &HalfCodes {
    #[inline(always)]
    fn code(&self, m: u32) -> Option<u8> {
        let inside = m.wrapping_sub(self.lo) <= self.span || m == 0;
        inside.then(|| self.table[(m & 0x7FFF) as usize])
    }

    #[inline(always)]
    fn code8(&self, m: &[u32; 8]) -> Option<[u8; 8]> {
        let mut inside = true;
        let mut out = [0u8; 8];
        for (o, &m) in out.iter_mut().zip(m) {
            inside &= (m.wrapping_sub(self.lo) <= self.span) | (m == 0);
            *o = self.table[(m & 0x7FFF) as usize];
        }
        inside.then_some(out)
    }
}

/// A rule from magnitude pattern (the sign bit cleared) to code, for [`encode_words`].
pub(crate) trait Coder {
    /// The code of `m`, or `None` where this coder cannot give it.
    fn code(&self, m: u32) -> Option<u8>;

    /// The codes of eight patterns, or `None` if this coder cannot give one of them (then
    /// each is asked of [`Coder::code`]).
    #[inline(always)]
    fn code8(&self, m: &[u32; 8]) -> Option<[u8; 8]> {
        let mut out = [0u8; 8];
        for (o, &m) in out.iter_mut().zip(m) {
            *o = self.code(m)?;
        }
        Some(out)
    }
}

/// A [`Coder`] from a fast coder `fast` and the formula `slow` for what it cannot give
/// (`None` from `slow`: a value that cannot be encoded).
#[derive(Clone, Copy)]
pub(crate) struct OrElse<F, S>(pub F, pub S);

impl<F: Coder, S: Fn(u32) -> Option<u8>> Coder for OrElse<F, S> {
    #[inline(always)]
    fn code(&self, m: u32) -> Option<u8> {
        self.0.code(m).or_else(|| (self.1)(m))
    }

    #[inline(always)]
    fn code8(&self, m: &[u32; 8]) -> Option<[u8; 8]> {
        self.0.code8(m)
    }
}

/// The formula alone, as a [`Coder`].
#[derive(Clone, Copy)]
pub(crate) struct Formula<S>(pub S);

impl<S: Fn(u32) -> Option<u8>> Coder for Formula<S> {
    #[inline(always)]
    fn code(&self, m: u32) -> Option<u8> {
        (self.0)(m)
    }
}

/// The magnitude statistics of floats given as their bit patterns `words` of `bits` bits (16
/// or 32; `word` reads one): `(lo, hi, nonzero)` on the patterns with the sign bit cleared, the
/// smallest non-zero and the largest (`lo` is `u32::MAX` when every element is zero) and the
/// number of non-zero elements. Infinities and NaNs are not singled out: their patterns are
/// the largest, so the caller tests `hi`. Branch-free, in lanes of the words' width, so that
/// the compiler vectorises it.
#[inline(always)]
pub(crate) fn magnitude_range<T: Copy, W>(words: &[T], word: impl Fn(T) -> W) -> (u32, u32, u64)
where
    W: Word,
{
    // Blocks short enough that the zero count fits the lane type, long enough to vectorise.
    const BLOCK: usize = 1 << 12;
    // Independent accumulators, so that a data stream from memory keeps many loads in flight
    // instead of waiting on one chain of minima.
    const LANES: usize = 16;
    let (mut lo, mut hi) = ([W::MAX; LANES], [W::ZERO; LANES]);
    let mut nonzero = 0u64;
    for block in words.chunks(BLOCK) {
        let mut zeros = [W::ZERO; LANES];
        let mut step = |j: usize, x: T| {
            let m = word(x).magnitude();
            // `m − 1` wraps for zero, so zeros never give the smallest non-zero magnitude.
            lo[j] = lo[j].min(m.dec());
            hi[j] = hi[j].max(m);
            zeros[j] = zeros[j].count_zero(m);
        };
        let mut lanes = block.chunks_exact(LANES);
        for x in &mut lanes {
            for (j, &x) in x.iter().enumerate() {
                step(j, x);
            }
        }
        for &x in lanes.remainder() {
            step(0, x);
        }
        nonzero += block.len() as u64 - zeros.iter().map(|z| u64::from(z.widen())).sum::<u64>();
    }
    let lo = lo.into_iter().min().unwrap_or(W::MAX);
    let hi = hi.into_iter().max().unwrap_or(W::ZERO);
    let lo = if lo == W::MAX {
        u32::MAX
    } else {
        lo.widen() + 1
    };
    (lo, hi.widen(), nonzero)
}

/// An unsigned word holding a float's bit pattern: `u16` or `u32`.
pub(crate) trait Word: Copy + Ord {
    /// Zero.
    const ZERO: Self;
    /// All ones.
    const MAX: Self;
    /// The pattern with the sign bit cleared.
    fn magnitude(self) -> Self;
    /// `self − 1`, wrapping.
    fn dec(self) -> Self;
    /// `self + 1` if `m` is zero, else `self`.
    fn count_zero(self, m: Self) -> Self;
    /// As `u32`.
    fn widen(self) -> u32;
}

impl Word for u16 {
    const ZERO: u16 = 0;
    const MAX: u16 = u16::MAX;
    #[inline(always)]
    fn magnitude(self) -> u16 {
        self & 0x7FFF
    }
    #[inline(always)]
    fn dec(self) -> u16 {
        self.wrapping_sub(1)
    }
    #[inline(always)]
    fn count_zero(self, m: u16) -> u16 {
        self + u16::from(m == 0)
    }
    #[inline(always)]
    fn widen(self) -> u32 {
        u32::from(self)
    }
}

impl Word for u32 {
    const ZERO: u32 = 0;
    const MAX: u32 = u32::MAX;
    #[inline(always)]
    fn magnitude(self) -> u32 {
        self & 0x7FFF_FFFF
    }
    #[inline(always)]
    fn dec(self) -> u32 {
        self.wrapping_sub(1)
    }
    #[inline(always)]
    fn count_zero(self, m: u32) -> u32 {
        self + u32::from(m == 0)
    }
    #[inline(always)]
    fn widen(self) -> u32 {
        self
    }
}

/// Bit `j` set where byte `j` of `x` is not zero.
#[inline(always)]
pub(crate) fn nonzero_bytes(x: u64) -> u8 {
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    // The high bit of each byte: set when its low seven bits carry or it was already set.
    let high = (((x & LOW7) + LOW7) | x) & !LOW7;
    // Gather the eight high bits into one byte.
    ((high >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u8
}

/// Encodes floats given as their bit patterns (`word` reads one as a `u32`; its sign bit is
/// bit `top`, 15 or 31) into `codes` (one per element) and `signs` (bit `i % 8` of byte `i / 8`
/// set when element `i` is negative and its code is not 0; the bits past the last element
/// clear): eight elements and one sign byte per step, unrolled, with no per-element index
/// arithmetic and no branch on the data but the coder's; the sign byte is the eight sign bits
/// masked by the non-zero codes, found eight at a time. A value the coder cannot encode
/// stops the loop with that element's index.
#[inline(always)]
pub(crate) fn encode_words<T: Copy>(
    words: &[T],
    word: impl Fn(T) -> u32,
    top: u32,
    codes: &mut [u8],
    signs: &mut [u8],
    coder: impl Coder,
) -> Result<(), usize> {
    let mask = (1u32 << top) - 1;
    let n = codes.len();
    assert!(words.len() == n && signs.len() == n.div_ceil(8));
    let mut w8 = words.chunks_exact(8);
    let mut c8 = codes.chunks_exact_mut(8);
    for (k, ((w, c), s)) in (&mut w8).zip(&mut c8).zip(signs.iter_mut()).enumerate() {
        let mut neg = 0u8;
        let mut m = [0u32; 8];
        for j in 0..8 {
            let x = word(w[j]);
            m[j] = x & mask;
            neg |= ((x >> top) as u8) << j;
        }
        let out = match coder.code8(&m) {
            Some(out) => out,
            None => {
                let mut out = [0u8; 8];
                for j in 0..8 {
                    out[j] = coder.code(m[j]).ok_or(8 * k + j)?;
                }
                out
            }
        };
        c.copy_from_slice(&out);
        *s = neg & nonzero_bytes(u64::from_le_bytes(out));
    }
    let (w, c) = (w8.remainder(), c8.into_remainder());
    if !c.is_empty() {
        let mut byte = 0u8;
        for (j, (&x, cj)) in w.iter().zip(c.iter_mut()).enumerate() {
            let x = word(x);
            *cj = coder.code(x & mask).ok_or(n / 8 * 8 + j)?;
            byte |= (((x >> top) as u8) & u8::from(*cj != 0)) << j;
        }
        signs[n / 8] = byte;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A monotonic step function with steps of several sizes.
    fn steps(b: u32) -> u8 {
        (255 - ((b - 1000) / 37).min(254)) as u8
    }

    #[test]
    fn breaks_give_every_code_of_the_range() {
        for (lo, hi) in [(1000, 1000), (1000, 1001), (1000, 9000), (1000, 1_000_000)] {
            let br = Breaks::new(lo, hi, steps);
            for b in (lo..=hi.min(20_000)).chain([hi]) {
                assert_eq!(br.code(b), Some(steps(b)), "{b}");
                assert_eq!(br.view().code(b), Some(steps(b)), "{b}");
            }
            for b in [lo - 1, hi + 1, 1, u32::MAX] {
                assert_eq!(br.code(b), None);
                assert_eq!(br.view().code(b), None);
            }
            assert_eq!(br.code(0), None);
            assert_eq!(br.view().code(0), Some(0));
        }
    }

    #[test]
    fn half_table_holds_the_range_and_zero() {
        let table = HalfCodes::new(0x3000, 0x3F00, |m| (m >> 8) as u8);
        let t = &table;
        for (m, want) in [
            (0, Some(0)),
            (1, None),
            (0x2FFF, None),
            (0x3000, Some(0x30)),
            (0x3EFF, Some(0x3E)),
            (0x3F00, Some(0x3F)),
            (0x3F01, None),
            (0x7FFF, None),
        ] {
            assert_eq!(t.code(m), want, "{m:#x}");
            let group = [m, 0, 0x3000, 0x3F00, 0x3456, m, 0, 0x3001];
            let want8 = want.map(|c| [c, 0, 0x30, 0x3F, 0x34, c, 0, 0x30]);
            assert_eq!(t.code8(&group), want8, "{m:#x}");
        }
    }

    fn naive_range(mags: &[u32]) -> (u32, u32, u64) {
        let nz: Vec<u32> = mags.iter().copied().filter(|&m| m != 0).collect();
        (
            nz.iter().copied().min().unwrap_or(u32::MAX),
            mags.iter().copied().max().unwrap_or(0),
            nz.len() as u64,
        )
    }

    #[test]
    fn magnitude_ranges_equal_the_naive_ones() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for len in [0usize, 1, 7, 8, 9, 4095, 4096, 4097, 10_000, 70_000] {
            for zeros in [0u64, 1, 2, 8] {
                let w32: Vec<u32> = (0..len)
                    .map(|_| {
                        let r = next();
                        if zeros > 0 && r % zeros == 0 {
                            (r as u32) & 0x8000_0000
                        } else {
                            r as u32
                        }
                    })
                    .collect();
                let m32: Vec<u32> = w32.iter().map(|w| w & 0x7FFF_FFFF).collect();
                assert_eq!(magnitude_range(&w32, |w| w), naive_range(&m32));
                let w16: Vec<u16> = w32.iter().map(|&w| (w >> 16) as u16).collect();
                let m16: Vec<u32> = w16.iter().map(|&w| u32::from(w & 0x7FFF)).collect();
                assert_eq!(magnitude_range(&w16, |w| w), naive_range(&m16));
            }
        }
    }

    #[test]
    fn encoded_words_follow_the_rule() {
        let code = Formula(|m: u32| if m == 77 { None } else { Some((m % 3) as u8) });
        for len in [0usize, 1, 8, 13, 64, 67] {
            let w: Vec<u16> = (0..len)
                .map(|i| ((i * 40503) as u16) ^ if i % 3 == 0 { 0x8000 } else { 0 })
                .map(|w| if w & 0x7FFF == 77 { w + 1 } else { w })
                .collect();
            let mut codes = vec![9u8; len];
            let mut signs = vec![0xFFu8; len.div_ceil(8)];
            encode_words(&w, u32::from, 15, &mut codes, &mut signs, code).unwrap();
            for (i, &x) in w.iter().enumerate() {
                let c = (u32::from(x & 0x7FFF) % 3) as u8;
                assert_eq!(codes[i], c);
                let s = x & 0x8000 != 0 && c != 0;
                assert_eq!((signs[i / 8] >> (i % 8)) & 1 == 1, s, "sign {i}");
            }
            if len % 8 != 0 {
                assert_eq!(signs[len / 8] >> (len % 8), 0, "bits past the end");
            }
            let w32: Vec<u32> = w
                .iter()
                .map(|&w| (u32::from(w & 0x8000) << 16) | u32::from(w & 0x7FFF))
                .collect();
            let (mut c32, mut s32) = (vec![0u8; len], vec![0u8; len.div_ceil(8)]);
            encode_words(&w32, |w| w, 31, &mut c32, &mut s32, code).unwrap();
            assert_eq!((c32, s32), (codes, signs));
        }
        let w = [1u16, 2, 77, 3, 77];
        let (mut codes, mut signs) = (vec![0u8; 5], vec![0u8; 1]);
        assert_eq!(
            encode_words(&w, u32::from, 15, &mut codes, &mut signs, code),
            Err(2)
        );
    }
}

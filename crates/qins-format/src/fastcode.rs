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
#![allow(dead_code)] // until the encoders use every loop: removed when they do

/// The change points of a monotonic code function over the bit patterns `[lo, hi]`.
#[derive(Clone, Debug)]
pub(crate) struct Breaks {
    lo: u32,
    /// `hi - lo`.
    span: u32,
    shift: u32,
    /// For each bucket of `1 << shift` bit patterns: how many change points lie at or below
    /// its first pattern.
    start: Vec<u16>,
    /// Bit patterns where the code changes, ascending: `code(b) != code(b - 1)`; then
    /// `u32::MAX`, a sentinel above every pattern of `[lo, hi]` that ends every walk.
    points: Vec<u32>,
    /// `codes[j]` is the code of a pattern with exactly `j` change points at or below it.
    codes: Vec<u8>,
}

/// Buckets per table at most: small enough to build quickly, fine enough that a bucket holds
/// about one change point.
const MAX_BUCKETS: u32 = 8192;

impl Breaks {
    /// Finds the change points of `code` (monotonic on `[lo, hi]`, `0 < lo <= hi < u32::MAX`).
    pub(crate) fn new(lo: u32, hi: u32, code: impl Fn(u32) -> u8) -> Breaks {
        assert!(0 < lo && lo <= hi && hi < u32::MAX, "bad range {lo:#x}..={hi:#x}");
        let mut points = Vec::new();
        let mut codes = vec![code(lo)];
        // Bisect every interval whose ends have different codes, left to right.
        let mut stack = vec![(lo, hi, code(lo), code(hi))];
        while let Some((a, b, ca, cb)) = stack.pop() {
            if ca == cb {
                continue;
            }
            if b == a + 1 {
                points.push(b);
                codes.push(cb);
                continue;
            }
            let m = a + (b - a) / 2;
            let cm = code(m);
            // Right half first on the stack so the left half is finished first.
            stack.push((m, b, cm, cb));
            stack.push((a, m, ca, cm));
        }
        let span = hi - lo;
        let mut shift = 0;
        while (span >> shift) >= MAX_BUCKETS {
            shift += 1;
        }
        let buckets = (span >> shift) + 1;
        let start = (0..buckets)
            .map(|i| points.partition_point(|&p| p <= lo + (i << shift)) as u16)
            .collect();
        points.push(u32::MAX);
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
        let mut j = usize::from(self.start[(k >> self.shift) as usize]);
        // The sentinel stops the walk: `b <= hi < u32::MAX`.
        while self.points[j] <= b {
            j += 1;
        }
        Some(self.codes[j])
    }
}

/// The codes of the 16-bit magnitude patterns `0..=hi` of a half-precision type whose codes
/// are exact from `lo` to `hi` (a tensor's smallest and largest non-zero magnitude): one entry
/// per pattern, so encoding costs one load. Entries below `lo` (other than zero) are not
/// known and marked [`HalfCodes::UNKNOWN`]; the caller computes those, and any pattern above
/// `hi`, with the formula.
#[derive(Clone, Debug)]
pub(crate) struct HalfCodes {
    table: Vec<u16>,
}

impl HalfCodes {
    /// The mark of an entry whose code the table does not hold.
    pub(crate) const UNKNOWN: u16 = 0x100;

    /// The table for magnitude patterns `lo..=hi` (`0 < lo <= hi < 0x8000`), `code` giving the
    /// exact code of a pattern; zero has code 0.
    pub(crate) fn new(lo: u16, hi: u16, code: impl Fn(u16) -> u8) -> HalfCodes {
        assert!(0 < lo && lo <= hi && hi < 0x8000, "bad range {lo:#x}..={hi:#x}");
        let mut table = vec![HalfCodes::UNKNOWN; usize::from(hi) + 1];
        table[0] = 0;
        for (m, e) in table.iter_mut().enumerate().skip(usize::from(lo)) {
            *e = u16::from(code(m as u16));
        }
        HalfCodes { table }
    }

    /// The code of magnitude pattern `m`, or `None` where the table does not hold it.
    #[inline(always)]
    pub(crate) fn code(&self, m: u32) -> Option<u8> {
        match self.table.get(m as usize) {
            Some(&e) if e < HalfCodes::UNKNOWN => Some(e as u8),
            _ => None,
        }
    }
}

/// Element `i` of little-endian words of `N` bytes (2 or 4), widened to `u32`.
#[inline(always)]
fn word<const N: usize>(b: &[u8], i: usize) -> u32 {
    if N == 4 {
        u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
    } else {
        u32::from(u16::from_le_bytes([b[2 * i], b[2 * i + 1]]))
    }
}

/// The magnitude statistics of little-endian floats of `N` bytes (2 or 4), on their bit
/// patterns with the sign bit cleared: `(lo, hi, nonzero)`, the smallest non-zero and the
/// largest magnitude pattern (`lo` is `u32::MAX` when every element is zero) and the number of
/// non-zero elements. Infinities and NaNs are not singled out: their patterns are the largest,
/// so the caller tests `hi`.
pub(crate) fn magnitude_range<const N: usize>(bytes: &[u8]) -> (u32, u32, u64) {
    // Blocks short enough that the zero count fits the lane type, long enough to vectorise.
    const BLOCK: usize = 1 << 12;
    let (mut lo, mut hi, mut nonzero) = (u32::MAX, 0u32, 0u64);
    if N == 2 {
        // In 16-bit lanes: twice the elements per vector. `m − 1` wraps for zero, so zeros
        // never give the smallest non-zero magnitude.
        let (mut lo16, mut hi16) = (u16::MAX, 0u16);
        for block in bytes.chunks(2 * BLOCK) {
            let mut zeros = 0u16;
            for w in block.chunks_exact(2) {
                let m = u16::from_le_bytes([w[0], w[1]]) & 0x7FFF;
                lo16 = lo16.min(m.wrapping_sub(1));
                hi16 = hi16.max(m);
                zeros += u16::from(m == 0);
            }
            nonzero += (block.len() / 2) as u64 - u64::from(zeros);
        }
        if lo16 != u16::MAX {
            lo = u32::from(lo16) + 1;
        }
        hi = u32::from(hi16);
    } else {
        let mut lo32 = u32::MAX;
        for block in bytes.chunks(4 * BLOCK) {
            let mut zeros = 0u32;
            for w in block.chunks_exact(4) {
                let m = u32::from_le_bytes([w[0], w[1], w[2], w[3]]) & 0x7FFF_FFFF;
                lo32 = lo32.min(m.wrapping_sub(1));
                hi = hi.max(m);
                zeros += u32::from(m == 0);
            }
            nonzero += (block.len() / 4) as u64 - u64::from(zeros);
        }
        if lo32 != u32::MAX {
            lo = lo32 + 1;
        }
    }
    (lo, hi, nonzero)
}

/// Encodes little-endian floats of `N` bytes (2 or 4) into `codes` (one per element) and
/// `signs` (bit `i % 8` of byte `i / 8` set when element `i` is negative and its code is not
/// 0; the bits past the last element clear): eight elements and one sign byte per step, with
/// no per-element index arithmetic. `code(m)` is the code of magnitude pattern `m` (the sign
/// bit cleared), or `None` for a value that cannot be encoded, which stops the loop with that
/// element's index.
#[inline(always)]
pub(crate) fn encode_words<const N: usize>(
    bytes: &[u8],
    codes: &mut [u8],
    signs: &mut [u8],
    code: impl Fn(u32) -> Option<u8>,
) -> Result<(), usize> {
    let top = 8 * N as u32 - 1;
    let mask = (1u32 << top) - 1;
    let n = codes.len();
    assert!(bytes.len() == N * n && signs.len() == n.div_ceil(8));
    let mut b8 = bytes.chunks_exact(8 * N);
    let mut c8 = codes.chunks_exact_mut(8);
    let mut done = 0;
    for ((b, c), s) in (&mut b8).zip(&mut c8).zip(signs.iter_mut()) {
        let mut byte = 0u8;
        for (j, cj) in c.iter_mut().enumerate() {
            let w = word::<N>(b, j);
            let Some(k) = code(w & mask) else {
                return Err(done + j);
            };
            *cj = k;
            byte |= (((w >> top) as u8) & u8::from(k != 0)) << j;
        }
        *s = byte;
        done += 8;
    }
    let (b, c) = (b8.remainder(), c8.into_remainder());
    if !c.is_empty() {
        let mut byte = 0u8;
        for (j, cj) in c.iter_mut().enumerate() {
            let w = word::<N>(b, j);
            let Some(k) = code(w & mask) else {
                return Err(done + j);
            };
            *cj = k;
            byte |= (((w >> top) as u8) & u8::from(k != 0)) << j;
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
            for b in lo..=hi.min(20_000) {
                assert_eq!(br.code(b), Some(steps(b)), "{b}");
            }
            assert_eq!(br.code(hi), Some(steps(hi)));
            assert_eq!(br.code(lo - 1), None);
            assert_eq!(br.code(hi + 1), None);
            assert_eq!(br.code(0), None);
            assert_eq!(br.code(u32::MAX), None);
        }
    }

    #[test]
    fn half_table_holds_the_range_and_marks_the_rest() {
        let t = HalfCodes::new(0x3000, 0x3F00, |m| (m >> 8) as u8);
        assert_eq!(t.code(0), Some(0));
        assert_eq!(t.code(1), None);
        assert_eq!(t.code(0x2FFF), None);
        assert_eq!(t.code(0x3000), Some(0x30));
        assert_eq!(t.code(0x3EFF), Some(0x3E));
        assert_eq!(t.code(0x3F00), Some(0x3F));
        assert_eq!(t.code(0x3F01), None);
        assert_eq!(t.code(0x7FFF), None);
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
        for len in [0usize, 1, 7, 8, 9, 4095, 4096, 4097, 10_000] {
            for zeros in [0u64, 2, 8] {
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
                let b32: Vec<u8> = w32.iter().flat_map(|w| w.to_le_bytes()).collect();
                let m32: Vec<u32> = w32.iter().map(|w| w & 0x7FFF_FFFF).collect();
                assert_eq!(magnitude_range::<4>(&b32), naive_range(&m32));
                let w16: Vec<u16> = w32.iter().map(|&w| (w >> 16) as u16).collect();
                let b16: Vec<u8> = w16.iter().flat_map(|w| w.to_le_bytes()).collect();
                let m16: Vec<u32> = w16.iter().map(|&w| u32::from(w & 0x7FFF)).collect();
                assert_eq!(magnitude_range::<2>(&b16), naive_range(&m16));
            }
        }
    }

    #[test]
    fn encoded_words_follow_the_rule() {
        let code = |m: u32| if m == 77 { None } else { Some((m % 3) as u8) };
        for len in [0usize, 1, 8, 13, 64, 67] {
            let w: Vec<u16> = (0..len)
                .map(|i| ((i * 40503) as u16) ^ if i % 3 == 0 { 0x8000 } else { 0 })
                .map(|w| if w & 0x7FFF == 77 { w + 1 } else { w })
                .collect();
            let bytes: Vec<u8> = w.iter().flat_map(|w| w.to_le_bytes()).collect();
            let mut codes = vec![9u8; len];
            let mut signs = vec![0xFFu8; len.div_ceil(8)];
            encode_words::<2>(&bytes, &mut codes, &mut signs, code).unwrap();
            for (i, &x) in w.iter().enumerate() {
                let c = (u32::from(x & 0x7FFF) % 3) as u8;
                assert_eq!(codes[i], c);
                let s = x & 0x8000 != 0 && c != 0;
                assert_eq!((signs[i / 8] >> (i % 8)) & 1 == 1, s, "sign {i}");
            }
            if len % 8 != 0 {
                assert_eq!(signs[len / 8] >> (len % 8), 0, "bits past the end");
            }
            let w32: Vec<u8> = w
                .iter()
                .flat_map(|&w| ((u32::from(w & 0x8000) << 16) | u32::from(w & 0x7FFF)).to_le_bytes())
                .collect();
            let (mut c32, mut s32) = (vec![0u8; len], vec![0u8; len.div_ceil(8)]);
            encode_words::<4>(&w32, &mut c32, &mut s32, code).unwrap();
            assert_eq!((c32, s32), (codes, signs));
        }
        let bytes: Vec<u8> = [1u16, 2, 77, 3, 77]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        let (mut codes, mut signs) = (vec![0u8; 5], vec![0u8; 1]);
        assert_eq!(encode_words::<2>(&bytes, &mut codes, &mut signs, code), Err(2));
    }
}

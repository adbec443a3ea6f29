//! Exact codes without a logarithm per weight.
//!
//! A codec's code is a monotonic function of the magnitude, and positive f32 values order like
//! their bit patterns. So between the smallest and the largest magnitude of a tensor the code
//! changes at most 254 times, at bit patterns found once per tensor by bisection with the
//! exact formula. Encoding a weight is then a bucket lookup on its bits and a step or two along
//! the sorted change points: the result is the formula's, bit pattern for bit pattern.

/// The change points of a monotonic code function over the bit patterns `[lo, hi]`.
#[derive(Clone, Debug)]
pub(crate) struct Breaks {
    lo: u32,
    hi: u32,
    shift: u32,
    /// For each bucket of `1 << shift` bit patterns: how many change points lie at or below
    /// its first pattern.
    start: Vec<u16>,
    /// Bit patterns where the code changes, ascending: `code(b) != code(b - 1)`.
    points: Vec<u32>,
    /// `codes[j]` is the code of a pattern with exactly `j` change points at or below it.
    codes: Vec<u8>,
}

/// Buckets per table at most: small enough to build quickly, fine enough that a bucket holds
/// about one change point.
const MAX_BUCKETS: u32 = 8192;

impl Breaks {
    /// Finds the change points of `code` (monotonic on `[lo, hi]`, `0 < lo <= hi`).
    pub(crate) fn new(lo: u32, hi: u32, code: impl Fn(u32) -> u8) -> Breaks {
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
        Breaks {
            lo,
            hi,
            shift,
            start,
            points,
            codes,
        }
    }

    /// The code of bit pattern `b`, or `None` outside `[lo, hi]`.
    #[inline]
    pub(crate) fn code(&self, b: u32) -> Option<u8> {
        if b < self.lo || b > self.hi {
            return None;
        }
        let mut j = usize::from(self.start[((b - self.lo) >> self.shift) as usize]);
        while j < self.points.len() && self.points[j] <= b {
            j += 1;
        }
        Some(self.codes[j])
    }
}

//! The fitted codecs `lloyd` (§12.3) and `lloyd-rows` (§12.4): a table of 255 levels chosen to
//! minimise the squared reconstruction error of a tensor's magnitudes.
//!
//! The fit never sees the values themselves, only a [`Histogram`] of their magnitudes with
//! fixed, data-independent bins (a bin is a run of 2^14 consecutive f32 bit patterns, so 512
//! bins per power of two, each at most 0.2% wide) holding a weight and the exact integer sum of
//! the weighted offsets of the bit patterns within the bin. A value's weight is 1, or with row
//! scales an integer proportional to its row's squared scale (§12.4), so that the fit minimises
//! the squared error of the decoded values. Histograms of disjoint chunks merge by adding
//! integers, so the fit, and therefore every code, is the same however the tensor was split and
//! on however many threads.
//!
//! The fit treats every non-empty bin as a point mass at its exact weighted mean and returns the
//! better (by squared error on those points) of two candidates:
//!
//! 1. levels placed by the high-resolution rule (density of levels ∝ density of magnitudes^1/3),
//!    then refined by Lloyd's iteration;
//! 2. Ward's agglomerative clustering of the bins down to 255 clusters (with a cluster pinned at
//!    zero), then refined by Lloyd's iteration.
//!
//! The first is close to optimal where the magnitudes are dense; the second never lets a few
//! isolated outliers share a level, which is where Lloyd's iteration from a density-based start
//! gets stuck. Both are deterministic: integer statistics, then IEEE-754 binary64 arithmetic in
//! an order fixed by §12.3 (no library transcendental function is used: the one cube root is
//! computed by Newton's iteration, [`cbrt`]).

/// Bits of an f32 pattern below the bin index: a bin is `1 << BIN_SHIFT` consecutive patterns.
pub(crate) const BIN_SHIFT: u32 = 14;
/// Mask of the offset of a pattern within its bin.
const OFFSET_MASK: u32 = (1 << BIN_SHIFT) - 1;
/// Bins per binade (power of two): the mantissa bits above [`BIN_SHIFT`].
const BIN_EXP_SHIFT: u32 = 23 - BIN_SHIFT;
/// Lloyd iterations at most, after each initial placement (§12.3.4).
pub(crate) const LLOYD_ITERATIONS: u32 = 8;
/// Non-zero levels of a table.
const LEVELS: usize = 255;
/// Newton steps of [`cbrt`].
const CBRT_STEPS: u32 = 7;

/// One non-empty bin of a [`Histogram`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bin {
    /// The bin index: `bits(m) >> 14` for every magnitude `m` in it.
    pub index: u32,
    /// The sum of the weights of the magnitudes in the bin (at least 1; each weight is 1
    /// without row scales).
    pub weight: u128,
    /// The sum of `weight × (bits(m) & 0x3FFF)` over those magnitudes.
    pub offsets: u128,
}

impl Bin {
    /// The biased exponent of the bin's binade, with subnormals counted as 1 (their spacing).
    fn exponent(self) -> u32 {
        (self.index >> BIN_EXP_SHIFT).max(1)
    }

    /// The value of the bin's first bit pattern (its lower edge).
    fn start(self) -> f64 {
        f64::from(f32::from_bits(self.index << BIN_SHIFT))
    }

    /// The spacing of consecutive f32 values in the bin: `2^(e − 150)`.
    fn ulp(self) -> f64 {
        pow2(self.exponent() as i32 - 150)
    }

    /// The bin's width: `2^14` spacings.
    fn width(self) -> f64 {
        pow2(self.exponent() as i32 - 150 + BIN_SHIFT as i32)
    }

    /// The weighted sum of the bin's magnitudes: `weight × start + offsets × ulp`, in f64.
    fn mass(self) -> f64 {
        to_f64(self.weight) * self.start() + to_f64(self.offsets) * self.ulp()
    }
}

/// `v` rounded to the nearest f64, as `v as f64`; inline for values below 2^64 (nearly every
/// one), where the conversion of a u128 is a library call. (`black_box` keeps the compiler
/// from seeing that both arms compute the same thing and folding them into the library call.)
#[inline]
fn to_f64(v: u128) -> f64 {
    match u64::try_from(v) {
        Ok(v) => v as f64,
        Err(_) => std::hint::black_box(v) as f64,
    }
}

/// `2^e` as an f64, for `e` in the normal range.
fn pow2(e: i32) -> f64 {
    debug_assert!((-1022..=1023).contains(&e));
    f64::from_bits(((e + 1023) as u64) << 52)
}

/// A source of non-zero magnitudes for [`Histogram::build`]: calls `f` with the bit pattern and
/// the weight of each, in any order, skipping zeros.
pub(crate) trait Magnitudes {
    fn for_each(&self, f: impl FnMut(u32, u64));

    /// Calls `f(block, w)` for blocks of magnitudes of one weight `w` each, zeros included
    /// (to be skipped): what [`Magnitudes::for_each`] gives, in blocks where the source has
    /// them, so that a histogram can check its sums' headroom once per block.
    fn for_each_block(&self, mut f: impl FnMut(&[u32], u64)) {
        self.for_each(|b, w| f(&[b], w));
    }
}

super::cpu::twin! {
    /// Adds `part` (bit patterns, zeros to entry `zero`), each weighted `w`, to the dense
    /// `table` of bins from `first`: a function of its own, so that the loop keeps the table in
    /// registers.
    #[inline(never)]
    fn add_block(table: &mut [[u64; 2]], part: &[u32], first: u32, zero: usize, w: u64) -> () =
        add_block_as_built;
}

#[inline(always)]
fn add_block_as_built(table: &mut [[u64; 2]], part: &[u32], first: u32, zero: usize, w: u64) {
    for &b in part {
        let i = if b == 0 {
            zero
        } else {
            ((b >> BIN_SHIFT) - first) as usize
        };
        let e = &mut table[i];
        e[0] += w;
        e[1] += w * u64::from(b & OFFSET_MASK);
    }
}

/// A histogram of non-zero f32 magnitudes with fixed bins (§12.3.1): its non-empty bins in
/// ascending order of index. Chunks' histograms [`merge`](Histogram::merge) by adding weights
/// and offset sums, which are integers, so the result does not depend on how a tensor was
/// split.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    bins: Vec<Bin>,
}

/// Chunks whose magnitudes span at most this many bins, or twice their length, are binned in a
/// dense table; wider ones (few values spread over many binades) by sorting.
const DENSE_MIN_SPAN: u64 = 64;

impl Histogram {
    /// The histogram of no magnitudes.
    pub const EMPTY: Histogram = Histogram { bins: Vec::new() };

    /// The non-empty bins, in ascending order of index.
    pub fn bins(&self) -> &[Bin] {
        &self.bins
    }

    /// The histogram of the non-zero magnitudes that `mags` feeds (as bit patterns, each
    /// finite), whose smallest and largest are `lo` and `hi`, so that a dense table can be sized
    /// without another pass; `len` bounds their number.
    #[inline(always)]
    pub(crate) fn build(mags: &impl Magnitudes, lo: u32, hi: u32, len: usize) -> Histogram {
        let (first, last) = (lo >> BIN_SHIFT, hi >> BIN_SHIFT);
        let span = u64::from(last - first) + 1;
        let mut out = Vec::new();
        if span <= DENSE_MIN_SPAN.max(2 * len as u64) {
            // [weight, offsets] per bin of the span, in u64 while they cannot overflow (a
            // weighted offset is below 2^14 times its weight: while the weights added since
            // the last flush stay below 2^50, no sum can reach 2^64), flushed into the u128
            // totals before they could.
            const BUDGET: u64 = 1 << 50;
            let mut table = vec![[0u64; 2]; span as usize];
            let mut total = vec![[0u128; 2]; span as usize];
            let flush = |table: &mut [[u64; 2]], total: &mut [[u128; 2]]| {
                for (t, e) in total.iter_mut().zip(table.iter_mut()) {
                    t[0] += u128::from(e[0]);
                    t[1] += u128::from(e[1]);
                    *e = [0; 2];
                }
            };
            let mut budget = BUDGET;
            // One more entry, which zeros (pattern 0, below every bin of the span) add to
            // without a branch, and which is never read.
            table.push([0; 2]);
            let zero = span as usize;
            mags.for_each_block(|block, w| {
                for part in block.chunks(256) {
                    // The most this part adds to any sum, against the headroom left.
                    let most = (w as u128) * part.len() as u128;
                    if most >= u128::from(budget) {
                        flush(&mut table, &mut total);
                        budget = BUDGET;
                        if most >= u128::from(BUDGET) {
                            // Weights this large go straight into the totals.
                            for &b in part.iter().filter(|&&b| b != 0) {
                                let t = &mut total[((b >> BIN_SHIFT) - first) as usize];
                                t[0] += u128::from(w);
                                t[1] += u128::from(w) * u128::from(b & OFFSET_MASK);
                            }
                            continue;
                        }
                    }
                    budget -= most as u64;
                    add_block(&mut table, part, first, zero, w);
                }
            });
            table.pop();
            flush(&mut table, &mut total);
            out.extend(
                total
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e[0] != 0)
                    .map(|(i, e)| Bin {
                        index: first + i as u32,
                        weight: e[0],
                        offsets: e[1],
                    }),
            );
        } else {
            let mut all = Vec::new();
            mags.for_each(|b, w| all.push((b, w)));
            all.sort_unstable();
            for (b, w) in all {
                let index = b >> BIN_SHIFT;
                let off = u128::from(w) * u128::from(b & OFFSET_MASK);
                match out.last_mut() {
                    Some(bin) if bin.index == index => {
                        bin.weight += u128::from(w);
                        bin.offsets += off;
                    }
                    _ => out.push(Bin {
                        index,
                        weight: u128::from(w),
                        offsets: off,
                    }),
                }
            }
        }
        // A bin counts only with a positive weight. §12.4 gives every magnitude a weight of at
        // least 1, so this drops nothing the encoders feed; it keeps `Bin::weight ≥ 1` true
        // whatever a `Magnitudes` gives.
        out.retain(|b| b.weight != 0);
        Histogram { bins: out }
    }

    /// The histogram of two disjoint sets of magnitudes together.
    pub fn merge(self, other: Histogram) -> Histogram {
        if other.bins.is_empty() {
            return self;
        }
        if self.bins.is_empty() {
            return other;
        }
        let (a, b) = (self.bins, other.bins);
        let mut out = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            let (x, y) = (a[i], b[j]);
            if x.index == y.index {
                out.push(Bin {
                    index: x.index,
                    weight: x.weight + y.weight,
                    offsets: x.offsets + y.offsets,
                });
                i += 1;
                j += 1;
            } else if x.index < y.index {
                out.push(x);
                i += 1;
            } else {
                out.push(y);
                j += 1;
            }
        }
        out.extend_from_slice(&a[i..]);
        out.extend_from_slice(&b[j..]);
        Histogram { bins: out }
    }
}

/// The real cube root of a positive, normal `x`, by a fixed procedure of IEEE-754 binary64
/// operations (§12.3.3), so that every implementation gets the same bits: `x = f × 2^e` with
/// `1 ≤ f < 2`; `e = 3q + r` with `r` in {0, 1, 2}; `g = f × 2^r`; seven Newton steps
/// `y ← ((2 × y) + (g / (y × y))) / 3` from `y = 1.5`; the result is `y × 2^q`. Within 2 ulp of
/// the true cube root.
pub(crate) fn cbrt(x: f64) -> f64 {
    debug_assert!(x.is_normal() && x > 0.0);
    let bits = x.to_bits();
    let e = ((bits >> 52) & 0x7FF) as i32 - 1023;
    let f = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    let q = e.div_euclid(3);
    let r = e.rem_euclid(3);
    let g = f * pow2(r);
    let mut y = 1.5f64;
    for _ in 0..CBRT_STEPS {
        y = ((2.0 * y) + (g / (y * y))) / 3.0;
    }
    y * pow2(q)
}

/// The non-empty bins as point masses: weight, weighted sum and mean of each.
struct Points {
    weight: Vec<u128>,
    mass: Vec<f64>,
    mean: Vec<f64>,
}

impl Points {
    fn new(hist: &Histogram) -> Points {
        let weight: Vec<u128> = hist.bins.iter().map(|b| b.weight).collect();
        let mass: Vec<f64> = hist.bins.iter().map(|b| b.mass()).collect();
        let mean = mass
            .iter()
            .zip(&weight)
            .map(|(&m, &w)| m / to_f64(w))
            .collect();
        Points { weight, mass, mean }
    }

    fn len(&self) -> usize {
        self.weight.len()
    }
}

/// Levels `L[0] = 0 ≤ L[1] ≤ … ≤ L[255]` in f64.
type Levels = [f64; LEVELS + 1];

/// Makes levels non-decreasing: `L[c] = max(L[c], L[c − 1])`, c ascending (§12.3.2).
fn monotone(levels: &mut Levels) {
    levels[0] = 0.0;
    for c in 1..=LEVELS {
        levels[c] = levels[c].max(levels[c - 1]);
    }
}

/// The decision thresholds of non-decreasing levels: `t[c − 1] = (L[c − 1] + L[c]) / 2`.
fn thresholds(levels: &Levels) -> [f64; LEVELS] {
    std::array::from_fn(|i| (levels[i] + levels[i + 1]) / 2.0)
}

/// Calls `f(point, cell)` for every point in order, where `cell` is the number of thresholds
/// strictly below the point's mean (the nearest level, ties to the smaller one).
fn assign(levels: &Levels, pts: &Points, mut f: impl FnMut(usize, usize)) {
    let t = thresholds(levels);
    let mut c = 0;
    for (k, &mu) in pts.mean.iter().enumerate() {
        while c < LEVELS && mu > t[c] {
            c += 1;
        }
        f(k, c);
    }
}

/// The squared error of the points against `levels`: `Σ n × (μ − L[cell])²`, in point order.
fn distortion(levels: &Levels, pts: &Points) -> f64 {
    let mut d = 0.0;
    assign(levels, pts, |k, c| {
        let e = pts.mean[k] - levels[c];
        d += to_f64(pts.weight[k]) * (e * e);
    });
    d
}

/// Lloyd's iteration (§12.3.4): at most [`LLOYD_ITERATIONS`] times, each level with a
/// non-empty cell moves to its cell's centroid, then levels are made non-decreasing; stops
/// early when no level changes. Returns the distortion of the final levels.
fn lloyd(levels: &mut Levels, pts: &Points) -> f64 {
    for _ in 0..LLOYD_ITERATIONS {
        let mut n = [0u128; LEVELS + 1];
        let mut s = [0f64; LEVELS + 1];
        assign(levels, pts, |k, c| {
            n[c] += pts.weight[k];
            s[c] += pts.mass[k];
        });
        let mut next = *levels;
        for c in 1..=LEVELS {
            if n[c] > 0 {
                next[c] = s[c] / to_f64(n[c]);
            }
        }
        monotone(&mut next);
        if next
            .iter()
            .zip(levels.iter())
            .all(|(a, b)| a.to_bits() == b.to_bits())
        {
            break;
        }
        *levels = next;
    }
    distortion(levels, pts)
}

/// The initial levels of candidate 1 (§12.3.2): the high-resolution rule, level density
/// ∝ (magnitude density)^(1/3), with the density uniform within each bin; no level above the
/// largest point.
fn cube_root_levels(hist: &Histogram, pts: &Points) -> Levels {
    let bins = &hist.bins;
    // No level above the largest point: the top bin may reach past f32::MAX.
    let top = pts.mean[pts.len() - 1];
    let lambda: Vec<f64> = bins
        .iter()
        .map(|b| cbrt(to_f64(b.weight) * b.width() * b.width()))
        .collect();
    let mut cum = Vec::with_capacity(bins.len() + 1);
    let mut acc = 0.0f64;
    cum.push(acc);
    for &l in &lambda {
        acc += l;
        cum.push(acc);
    }
    let total = acc;
    let mut levels = [0f64; LEVELS + 1];
    let mut k = 0; // 0-based bin; cum[k + 1] is the total up to and including it
    for (j, level) in levels.iter_mut().enumerate().skip(1) {
        let tau = ((2 * j - 1) as f64 / (2 * LEVELS) as f64) * total;
        while k + 1 < bins.len() && cum[k + 1] < tau {
            k += 1;
        }
        let b = bins[k];
        *level = (b.start() + b.width() * ((tau - cum[k]) / lambda[k])).min(top);
    }
    monotone(&mut levels);
    levels
}

/// The initial levels of candidate 2 (§12.3.5): Ward's agglomerative clustering of the points,
/// with a cluster pinned at zero, merged pairwise (the adjacent pair whose merge adds the least
/// squared error, ties to the leftmost pair) until 255 other clusters remain.
fn ward_levels(pts: &Points) -> Levels {
    let merged = ward(pts);
    let mut levels = [0f64; LEVELS + 1];
    for (c, mu) in merged.into_iter().enumerate() {
        levels[c + 1] = mu;
    }
    monotone(&mut levels);
    levels
}

/// Ward's clustering: the means of the remaining non-zero clusters, ascending. Each step merges
/// the adjacent pair with the smallest `(cost, left position)`, found with a tournament tree
/// over the pairs (leaf `a` holds the pair of cluster `a` and the next one alive), which gives
/// exactly the clusters of the definition.
fn ward(pts: &Points) -> Vec<f64> {
    const NONE: usize = usize::MAX;
    let k = pts.len();
    // Cluster 0 is the zero cluster; cluster i ≥ 1 starts as point i − 1.
    let mut n: Vec<u128> = std::iter::once(0)
        .chain(pts.weight.iter().copied())
        .collect();
    let mut mu: Vec<f64> = std::iter::once(0.0)
        .chain(pts.mean.iter().copied())
        .collect();
    // `0usize.wrapping_sub(1)` is NONE: the zero cluster has no predecessor.
    let mut prev: Vec<usize> = (0..=k).map(|i| i.wrapping_sub(1)).collect();
    let mut next: Vec<usize> = (1..=k + 1).collect();
    next[k] = NONE;
    let cost = |n: &[u128], mu: &[f64], a: usize, b: usize| -> f64 {
        if a == 0 {
            to_f64(n[b]) * (mu[b] * mu[b])
        } else {
            let (na, nb) = (to_f64(n[a]), to_f64(n[b]));
            let d = mu[a] - mu[b];
            ((na * nb) / to_f64(n[a] + n[b])) * (d * d)
        }
    };
    // Costs are finite and non-negative, so their bit patterns order like their values;
    // `u64::MAX` marks a leaf without a pair. Every cluster has a leaf, the last one too (it
    // never has a pair, but a merge into its predecessor clears its leaf).
    let mut tree = Tournament::new(k + 1, |a| {
        if a < k {
            cost(&n, &mu, a, a + 1).to_bits()
        } else {
            u64::MAX
        }
    });
    let mut remaining = k;
    while remaining > LEVELS {
        let a = tree.min();
        let b = next[a];
        if a != 0 {
            let (na, nb) = (to_f64(n[a]), to_f64(n[b]));
            mu[a] = ((na * mu[a]) + (nb * mu[b])) / to_f64(n[a] + n[b]);
            n[a] += n[b];
        }
        next[a] = next[b];
        tree.set(b, u64::MAX);
        match next[a] {
            NONE => tree.set(a, u64::MAX),
            c => {
                prev[c] = a;
                tree.set(a, cost(&n, &mu, a, c).to_bits());
            }
        }
        if a != 0 {
            let p = prev[a];
            tree.set(p, cost(&n, &mu, p, a).to_bits());
        }
        remaining -= 1;
    }
    let mut out = Vec::with_capacity(LEVELS);
    let mut i = next[0];
    while i != NONE {
        out.push(mu[i]);
        i = next[i];
    }
    out
}

/// A tournament tree over `len` keys: the position of the smallest `(key, position)`.
struct Tournament {
    /// `node[i]` for `i` in `1..size`: the winning `(key, position)` below node `i`; the
    /// leaves are `size..2 × size`. Each node holds its winner's key, so that a match reads
    /// its two children and nothing that depends on them.
    node: Vec<(u64, u32)>,
    size: usize,
}

impl Tournament {
    fn new(len: usize, key: impl Fn(usize) -> u64) -> Tournament {
        let size = len.next_power_of_two().max(1);
        let mut node = vec![(u64::MAX, 0u32); 2 * size];
        for i in 0..size {
            let k = if i < len { key(i) } else { u64::MAX };
            node[size + i] = (k, i as u32);
        }
        for i in (1..size).rev() {
            node[i] = Self::better(node[2 * i], node[2 * i + 1]);
        }
        Tournament { node, size }
    }

    /// The winner of a match: the smaller key; on equal keys the smaller position, which is
    /// always the left one (`x`) here.
    #[inline]
    fn better(x: (u64, u32), y: (u64, u32)) -> (u64, u32) {
        if y.0 < x.0 {
            y
        } else {
            x
        }
    }

    fn min(&self) -> usize {
        self.node[1.min(2 * self.size - 1)].1 as usize
    }

    /// Sets leaf `pos`'s key and replays the matches above it, up to the first whose winner
    /// is unchanged: the matches above that one see the same players as before.
    fn set(&mut self, pos: usize, key: u64) {
        let mut i = self.size + pos;
        self.node[i] = (key, pos as u32);
        while i > 1 {
            i /= 2;
            let won = Self::better(self.node[2 * i], self.node[2 * i + 1]);
            if self.node[i] == won {
                break;
            }
            self.node[i] = won;
        }
    }
}

/// A fitted table.
pub(crate) struct Fit {
    /// `LUT[0] = 0`, then the levels rounded to f32, made non-decreasing.
    pub lut: [f32; 256],
    /// The relative squared error of the fit on its points, `D / E` (§12.3.2); 0 when exact.
    pub rel_err: f64,
}

/// Fits 255 levels to the magnitudes of `hist` (§12.3.2).
pub(crate) fn fit(hist: &Histogram) -> Fit {
    let pts = Points::new(hist);
    let mut levels = [0f64; LEVELS + 1];
    let mut rel_err = 0.0;
    if pts.len() <= LEVELS {
        // One level per non-empty bin, at its mean; the rest repeat the largest.
        for c in 1..=LEVELS {
            levels[c] = match pts.mean.get(c - 1) {
                Some(&mu) => mu,
                None => levels[c - 1],
            };
        }
        monotone(&mut levels);
    } else {
        let mut a = cube_root_levels(hist, &pts);
        let da = lloyd(&mut a, &pts);
        let mut b = ward_levels(&pts);
        let db = lloyd(&mut b, &pts);
        let (l, d) = if da <= db { (a, da) } else { (b, db) };
        levels = l;
        let mut e = 0.0;
        for k in 0..pts.len() {
            e += to_f64(pts.weight[k]) * (pts.mean[k] * pts.mean[k]);
        }
        rel_err = d / e;
    }
    let mut lut = [0f32; 256];
    for c in 1..=LEVELS {
        lut[c] = (levels[c] as f32).max(lut[c - 1]);
    }
    Fit { lut, rel_err }
}

/// The decision thresholds of a table (§12.3.6): `t[c − 1] = (LUT[c − 1] + LUT[c]) / 2` in f64.
pub(crate) fn lut_thresholds(lut: &[f32; 256]) -> [f64; LEVELS] {
    std::array::from_fn(|i| (f64::from(lut[i]) + f64::from(lut[i + 1])) / 2.0)
}

/// The code of a magnitude `m ≥ 0` under thresholds `t` (§12.3.6): 0 for zero, otherwise the
/// number of thresholds strictly below `m` (the nearest entry, ties to the smaller code).
#[inline]
pub(crate) fn code_of(t: &[f64; LEVELS], m: f32) -> u8 {
    if m == 0.0 {
        return 0;
    }
    let x = f64::from(m);
    t.partition_point(|&t| t < x) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_f64_rounds_as_the_cast_does() {
        let two64 = 1u128 << 64;
        for v in [
            0,
            1,
            (1 << 53) + 1,
            (1 << 53) + 3,
            u128::from(u64::MAX) - 1024,
            u128::from(u64::MAX),
            two64,
            two64 + 1,
            two64 + (1 << 12) - 1,
            u128::MAX,
        ] {
            assert_eq!(to_f64(v).to_bits(), (v as f64).to_bits(), "{v}");
        }
    }

    fn hist_of(values: &[f32]) -> Histogram {
        let bits: Vec<u32> = values
            .iter()
            .map(|v| v.abs().to_bits())
            .filter(|&b| b != 0)
            .collect();
        let (lo, hi) = (
            bits.iter().copied().min().unwrap_or(1),
            bits.iter().copied().max().unwrap_or(1),
        );
        Histogram::build(&Bits(&bits), lo, hi, bits.len())
    }

    struct Bits<'a>(&'a [u32]);

    impl Magnitudes for Bits<'_> {
        fn for_each(&self, mut f: impl FnMut(u32, u64)) {
            self.0.iter().for_each(|&b| f(b, 1));
        }
    }

    #[test]
    fn cbrt_is_within_two_ulp() {
        let mut x = 1e-300f64;
        while x < 1e300 {
            for y in [x, x * 1.1, x * 2.7, x * 5.3] {
                let r = cbrt(y);
                let t = y.cbrt();
                assert!(((r - t) / t).abs() <= 4.5e-16, "cbrt({y}) = {r}, not {t}");
            }
            x *= 7.77;
        }
        assert_eq!(cbrt(8.0), 2.0);
        assert_eq!(cbrt(27.0), 3.0);
    }

    #[test]
    fn bins_hold_exact_sums() {
        for v in [1.0f32, 1.5, 3.0e-41, 1.0e30, f32::MAX, f32::from_bits(1)] {
            let h = hist_of(&[v, v, v]);
            let b = h.bins()[0];
            assert_eq!(b.mass() / 3.0, f64::from(v), "{v}");
            assert!(b.start() <= f64::from(v) && f64::from(v) < b.start() + b.width());
        }
    }

    #[test]
    fn dense_and_sorted_binning_agree() {
        let v: Vec<f32> = (1..3000u32)
            .map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761) % 0x7F00_0000 + 1))
            .collect();
        let bits: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
        let (lo, hi) = (*bits.iter().min().unwrap(), *bits.iter().max().unwrap());
        let sorted = Histogram::build(&Bits(&bits), lo, hi, bits.len());
        let dense = Histogram::build(&Bits(&bits), lo, hi, usize::MAX / 4);
        assert_eq!(sorted, dense);
    }

    struct WeightedBits<'a>(&'a [(u32, u64)]);

    impl Magnitudes for WeightedBits<'_> {
        fn for_each(&self, mut f: impl FnMut(u32, u64)) {
            self.0.iter().for_each(|&(b, w)| f(b, w));
        }
    }

    /// Weights large enough that the dense table's u64 sums must be flushed into the u128
    /// totals many times (and one past the flushing budget on its own): the same bins as the
    /// sorted way and as exact sums.
    #[test]
    fn large_weights_are_summed_exactly() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut all: Vec<(u32, u64)> = (0..20_000u32)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let b = 0x3F00_0000 + (x as u32 % 0x0040_0000);
                let w = match i % 3 {
                    0 => 1,
                    1 => 1 << 32,
                    _ => x >> 20,
                };
                (b, w)
            })
            .collect();
        all.push((0x3F20_0001, u64::MAX));
        let (lo, hi) = (0x3F00_0000, 0x3F3F_FFFF);
        let dense = Histogram::build(&WeightedBits(&all), lo, hi, usize::MAX / 4);
        let sorted = Histogram::build(&WeightedBits(&all), lo, hi, 1);
        assert_eq!(dense, sorted);
        let mut exact = std::collections::BTreeMap::<u32, (u128, u128)>::new();
        for &(b, w) in &all {
            let e = exact.entry(b >> BIN_SHIFT).or_default();
            e.0 += u128::from(w);
            e.1 += u128::from(w) * u128::from(b & OFFSET_MASK);
        }
        let want: Vec<Bin> = exact
            .into_iter()
            .map(|(index, (weight, offsets))| Bin {
                index,
                weight,
                offsets,
            })
            .collect();
        assert_eq!(dense.bins(), &want[..]);
    }

    /// Ward's clustering by its definition, O(K²) per merge.
    fn ward_naive(pts: &Points) -> Vec<f64> {
        let mut cl: Vec<(bool, u128, f64)> = std::iter::once((true, 0, 0.0))
            .chain((0..pts.len()).map(|k| (false, pts.weight[k], pts.mean[k])))
            .collect();
        while cl.len() > LEVELS + 1 {
            let mut best = (f64::INFINITY, 0);
            for a in 0..cl.len() - 1 {
                let (za, na, ma) = cl[a];
                let (_, nb, mb) = cl[a + 1];
                let c = if za {
                    nb as f64 * (mb * mb)
                } else {
                    let d = ma - mb;
                    ((na as f64 * nb as f64) / (na + nb) as f64) * (d * d)
                };
                if c < best.0 {
                    best = (c, a);
                }
            }
            let a = best.1;
            let (_, nb, mb) = cl.remove(a + 1);
            let (za, na, ma) = cl[a];
            if !za {
                cl[a] = (
                    false,
                    na + nb,
                    ((na as f64 * ma) + (nb as f64 * mb)) / (na + nb) as f64,
                );
            }
        }
        cl.iter().skip(1).map(|c| c.2).collect()
    }

    #[test]
    fn ward_with_a_heap_equals_the_definition() {
        for seed in 0..6u64 {
            let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut v = Vec::new();
            for i in 0..(300 + 400 * seed as usize) {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let u = (s >> 11) as f64 / (1u64 << 53) as f64;
                // Heavy-tailed, with exact repeats so that equal costs occur.
                let x = if i % 7 == 0 {
                    0.25
                } else {
                    (u * 6.0).exp() * 1e-3
                };
                v.push(x as f32);
            }
            let h = hist_of(&v);
            let pts = Points::new(&h);
            assert_eq!(ward(&pts), ward_naive(&pts), "seed {seed}");
        }
    }

    /// With a power of two of points, merging the last cluster into its predecessor clears the
    /// leaf just past the pairs; a tree sized for the pairs alone had no such leaf (a panic,
    /// seen converting a 1 GB F32 checkpoint with `lloyd`: "index out of bounds: the len is
    /// 8192 but the index is 8192" in `Tournament::better`, a tensor with 8192 non-empty bins).
    #[test]
    fn ward_merges_the_last_cluster_whatever_the_count() {
        for k in [256usize, 257, 512, 1024, 8192] {
            // Evenly spaced means but for the last two, closest of all: merged first.
            let mut mean: Vec<f64> = (1..=k).map(|i| i as f64).collect();
            mean[k - 1] = mean[k - 2] + 1e-3;
            let pts = Points {
                weight: vec![1; k],
                mass: mean.clone(),
                mean,
            };
            assert_eq!(ward(&pts), ward_naive(&pts), "{k} points");
        }
    }

    #[test]
    fn few_distinct_magnitudes_are_exact() {
        let v = [0.5f32, -0.25, 0.125, 3.0, 0.0, 0.5, 1e-20];
        let f = fit(&hist_of(&v));
        let t = lut_thresholds(&f.lut);
        for x in v {
            assert_eq!(f.lut[usize::from(code_of(&t, x.abs()))], x.abs());
        }
        assert_eq!(f.rel_err, 0.0);
        assert_eq!(f.lut[255], 3.0);
    }
}

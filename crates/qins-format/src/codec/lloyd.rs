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
#[inline(always)]
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
#[inline(always)]
pub(crate) fn cbrt(x: f64) -> f64 {
    cbrt_lanes([x])[0]
}

/// [`cbrt`] of `N` values at once: the same operations on each, side by side, so that the
/// compiler makes vector instructions of them (two divisions for the price of one, four in the
/// x86-64-v3 build of [`cube_roots`]; the divisions take most of the time). Each lane's
/// operations are exactly the scalar ones.
#[inline(always)]
fn cbrt_lanes<const N: usize>(x: [f64; N]) -> [f64; N] {
    let mut g = [0f64; N];
    let mut q = [0i32; N];
    for i in 0..N {
        debug_assert!(x[i].is_normal() && x[i] > 0.0);
        let bits = x[i].to_bits();
        let e = ((bits >> 52) & 0x7FF) as i32 - 1023;
        let f = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
        q[i] = e.div_euclid(3);
        g[i] = f * pow2(e.rem_euclid(3));
    }
    let mut y = [1.5f64; N];
    for _ in 0..CBRT_STEPS {
        for i in 0..N {
            y[i] = ((2.0 * y[i]) + (g[i] / (y[i] * y[i]))) / 3.0;
        }
    }
    std::array::from_fn(|i| y[i] * pow2(q[i]))
}

super::cpu::twin! {
    /// Replaces each value of `x` by its [`cbrt`], eight at a time ([`cbrt_lanes`]): the
    /// `λ[i]` of candidate A (§12.3.3).
    fn cube_roots(x: &mut [f64]) -> () = cube_roots_as_built;
}

#[inline(always)]
fn cube_roots_as_built(x: &mut [f64]) {
    let mut eights = x.chunks_exact_mut(8);
    for v in &mut eights {
        let y = cbrt_lanes::<8>((&*v).try_into().expect("eight values"));
        v.copy_from_slice(&y);
    }
    for v in eights.into_remainder() {
        *v = cbrt(*v);
    }
}

/// The non-empty bins as point masses: weight, weighted sum and mean of each, in ascending
/// order of mean (the bins' order), with what every Lloyd iteration needs computed once.
struct Points {
    weight: Vec<u128>,
    mass: Vec<f64>,
    mean: Vec<f64>,
    /// `f64(weight)` of each point.
    fweight: Vec<f64>,
    /// `cum[k]`: the weight of points `0..k`, modulo 2^128, so that the weight of points
    /// `i..j` is `cum[j] − cum[i]` (wrapping), exactly whenever it fits in a u128, as the
    /// point-by-point sum it stands for.
    cum: Vec<u128>,
}

impl Points {
    fn new(hist: &Histogram) -> Points {
        let weight: Vec<u128> = hist.bins.iter().map(|b| b.weight).collect();
        let mass: Vec<f64> = hist.bins.iter().map(|b| b.mass()).collect();
        Points::of(weight, mass)
    }

    /// The points of the given weights and weighted sums, in ascending order of mean.
    fn of(weight: Vec<u128>, mass: Vec<f64>) -> Points {
        let fweight: Vec<f64> = weight.iter().map(|&w| to_f64(w)).collect();
        let mean = mass.iter().zip(&fweight).map(|(&m, &w)| m / w).collect();
        let cum = std::iter::once(0)
            .chain(weight.iter().scan(0u128, |acc, &w| {
                *acc = acc.wrapping_add(w);
                Some(*acc)
            }))
            .collect();
        Points {
            weight,
            mass,
            mean,
            fweight,
            cum,
        }
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

/// The cells of the points under non-decreasing levels, as ranges: cell `c` (the points whose
/// nearest level is `L[c]`, ties to the smaller) is `start[c]..start[c + 1]`. The means ascend
/// and so do the thresholds `t[c − 1] = (L[c − 1] + L[c]) / 2`, so each cell is a run of
/// points and `start[c]` is the number of means at most `t[c − 1]`: the nearest-level rule of
/// §12.3 point by point, found without visiting every point.
struct Cells {
    start: [usize; LEVELS + 2],
}

impl Cells {
    /// The cells under `levels`. `near`, the cells under other levels or `None`, is where the
    /// search starts: from Lloyd's iteration to the next the boundaries move by a few points.
    fn new(levels: &Levels, pts: &Points, near: Option<&Cells>) -> Cells {
        let mean = &pts.mean[..];
        let mut start = [0; LEVELS + 2];
        start[LEVELS + 1] = mean.len();
        for c in 1..=LEVELS {
            let t = (levels[c - 1] + levels[c]) / 2.0;
            // The boundaries do not decrease: search from the previous one at least.
            let mut k = near.map_or(0, |n| n.start[c]).max(start[c - 1]);
            if k < mean.len() && mean[k] <= t {
                k += 1;
                while k < mean.len() && mean[k] <= t {
                    k += 1;
                }
            } else {
                while k > start[c - 1] && mean[k - 1] > t {
                    k -= 1;
                }
            }
            start[c] = k;
        }
        Cells { start }
    }

    /// The points of cell `c`.
    fn of(&self, c: usize) -> std::ops::Range<usize> {
        self.start[c]..self.start[c + 1]
    }
}

/// Lanes of [`cell_sums`]: cell sums computed side by side.
const LANES: usize = 2;

/// The weighted sum of each cell, `S = Σ M[i]` over its points from 0 in point order (§12.3.4):
/// each a chain of additions that cannot be reordered. Consecutive cells are cut into
/// [`LANES`] runs of about as many points, summed side by side, so that that many chains are
/// in flight at once (one chain per cell, each still in point order).
fn cell_sums(cells: &Cells, mass: &[f64]) -> [f64; LEVELS + 1] {
    let mut s = [0f64; LEVELS + 1];
    let start = &cells.start;
    let n = mass.len();
    // Lane j: the cells from the first starting at or after j × n / LANES points; its current
    // cell, next point, end, and the sum of its current cell so far.
    let first = |j: usize| start.partition_point(|&x| x < j * n / LANES).min(LEVELS);
    let mut c: [usize; LANES] = std::array::from_fn(first);
    let mut k: [usize; LANES] = std::array::from_fn(|j| start[c[j]]);
    let begin = k;
    let end: [usize; LANES] = std::array::from_fn(|j| match j + 1 {
        LANES => n,
        next => start[first(next)],
    });
    let mut acc = [0f64; LANES];
    // Moves lane `j` to the cell of its next point, storing the sums of the cells it leaves.
    let settle = |at: usize, c: &mut usize, acc: &mut f64, s: &mut [f64; LEVELS + 1]| {
        while start[*c + 1] == at {
            s[*c] = *acc;
            *acc = 0.0;
            *c += 1;
        }
    };
    // In lockstep while every lane has points left: runs of points up to the next end of a
    // cell in any lane.
    'lockstep: loop {
        let mut run = usize::MAX;
        for j in 0..LANES {
            if k[j] == end[j] {
                break 'lockstep;
            }
            settle(k[j], &mut c[j], &mut acc[j], &mut s);
            run = run.min(start[c[j] + 1] - k[j]);
        }
        for i in 0..run {
            for j in 0..LANES {
                acc[j] += mass[k[j] + i];
            }
        }
        for kj in k.iter_mut() {
            *kj += run;
        }
    }
    // Then what each lane has left, alone.
    for j in 0..LANES {
        while k[j] < end[j] {
            settle(k[j], &mut c[j], &mut acc[j], &mut s);
            let e = start[c[j] + 1];
            for &m in &mass[k[j]..e] {
                acc[j] += m;
            }
            k[j] = e;
        }
        // The last cell's sum, if the lane had points.
        if end[j] > begin[j] {
            s[c[j]] = acc[j];
        }
    }
    s
}

/// The squared errors of the points against candidates' levels, each given with the cells
/// under them, `D = Σ n × (μ − L[cell])²`, and their squared magnitudes `E = Σ n × μ²`
/// (§12.3.2, §12.3.4). Each is a sum in point order, a chain of additions that cannot be
/// reordered; one pass over the points computes them side by side.
fn errors<const N: usize>(cands: [(&Levels, &Cells); N], pts: &Points) -> ([f64; N], f64) {
    let mut d = [0f64; N];
    let mut e = 0.0;
    let mut cell = [0usize; N];
    for (k, (&mu, &w)) in pts.mean.iter().zip(&pts.fweight).enumerate() {
        for i in 0..N {
            let (levels, cells) = cands[i];
            while cells.start[cell[i] + 1] <= k {
                cell[i] += 1;
            }
            let err = mu - levels[cell[i]];
            d[i] += w * (err * err);
        }
        e += w * (mu * mu);
    }
    (d, e)
}

/// Lloyd's iteration (§12.3.4): at most [`LLOYD_ITERATIONS`] times, each level with a
/// non-empty cell moves to its cell's centroid, then levels are made non-decreasing; stops
/// early when no level changes. Returns the cells under the final levels, for [`errors`].
fn lloyd(levels: &mut Levels, pts: &Points) -> Cells {
    let mut cells = Cells::new(levels, pts, None);
    for i in 0..LLOYD_ITERATIONS {
        if i > 0 {
            cells = Cells::new(levels, pts, Some(&cells));
        }
        let s = cell_sums(&cells, &pts.mass);
        let mut next = *levels;
        for c in 1..=LEVELS {
            let r = cells.of(c);
            let n = pts.cum[r.end].wrapping_sub(pts.cum[r.start]);
            if n > 0 {
                next[c] = s[c] / to_f64(n);
            }
        }
        monotone(&mut next);
        if next
            .iter()
            .zip(levels.iter())
            .all(|(a, b)| a.to_bits() == b.to_bits())
        {
            // The cells are those of the final levels.
            return cells;
        }
        *levels = next;
    }
    Cells::new(levels, pts, Some(&cells))
}

/// The initial levels of candidate 1 (§12.3.2): the high-resolution rule, level density
/// ∝ (magnitude density)^(1/3), with the density uniform within each bin; no level above the
/// largest point.
fn cube_root_levels(hist: &Histogram, pts: &Points) -> Levels {
    let bins = &hist.bins;
    // No level above the largest point: the top bin may reach past f32::MAX.
    let top = pts.mean[pts.len() - 1];
    let mut lambda: Vec<f64> = bins
        .iter()
        .map(|b| to_f64(b.weight) * b.width() * b.width())
        .collect();
    cube_roots(&mut lambda);
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
    // No cluster weighs more than all the points together: below 2^63 (nearly always), the
    // weights are machine words.
    let total = pts
        .weight
        .iter()
        .try_fold(0u128, |acc, &w| acc.checked_add(w));
    match total {
        Some(t) if t < 1 << 63 => ward_with::<Small>(pts),
        _ => ward_with::<u128>(pts),
    }
}

/// The weight of a cluster of Ward's clustering: an exact integer, the sum of its points'
/// weights, and `f64` of it (§12.3.5: rounded to nearest, ties to even).
trait Weight: Copy {
    fn of(w: u128) -> Self;
    fn add(self, other: Self) -> Self;
    fn to_f64(self) -> f64;
}

impl Weight for u128 {
    fn of(w: u128) -> Self {
        w
    }
    fn add(self, other: Self) -> Self {
        self + other
    }
    fn to_f64(self) -> f64 {
        to_f64(self)
    }
}

/// A weight when every sum fits in an i64 (the total weight is below 2^63), the common case:
/// one machine word, and converted to f64 by one instruction (rounded as the u128 would be).
#[derive(Clone, Copy)]
struct Small(u64);

impl Weight for Small {
    fn of(w: u128) -> Self {
        Small(w as u64)
    }
    fn add(self, other: Self) -> Self {
        Small(self.0 + other.0)
    }
    fn to_f64(self) -> f64 {
        self.0 as i64 as f64
    }
}

/// A cluster of Ward's clustering: its weight (exact, and in f64), its mean, its neighbours
/// alive (positions fit in a u32: there are at most 2^17 bins). One record per cluster, so
/// that a merge reads one cache line per cluster.
#[derive(Clone, Copy)]
struct Cluster<W> {
    n: W,
    nf: f64,
    mu: f64,
    prev: u32,
    next: u32,
}

/// [`ward`] with weights of type `W`.
fn ward_with<W: Weight>(pts: &Points) -> Vec<f64> {
    const NONE: u32 = u32::MAX;
    let k = pts.len();
    // Cluster 0 is the zero cluster; cluster i ≥ 1 starts as point i − 1. The zero cluster has
    // no predecessor (`0u32.wrapping_sub(1)` is NONE).
    let mut cl: Vec<Cluster<W>> = (0..=k)
        .map(|i| {
            let (n, mu) = match i {
                0 => (0, 0.0),
                _ => (pts.weight[i - 1], pts.mean[i - 1]),
            };
            Cluster {
                n: W::of(n),
                nf: to_f64(n),
                mu,
                prev: (i as u32).wrapping_sub(1),
                next: if i < k { i as u32 + 1 } else { NONE },
            }
        })
        .collect();
    let cost = |p: &Cluster<W>, q: &Cluster<W>, zero: bool| -> f64 {
        if zero {
            q.nf * (q.mu * q.mu)
        } else {
            let d = p.mu - q.mu;
            ((p.nf * q.nf) / p.n.add(q.n).to_f64()) * (d * d)
        }
    };
    // Costs are finite and non-negative, so their bit patterns order like their values;
    // `u64::MAX` marks a leaf without a pair. Every cluster has a leaf, the last one too (it
    // never has a pair, but a merge into its predecessor clears its leaf).
    let mut tree = Tournament::new(k + 1, |a| {
        if a < k {
            cost(&cl[a], &cl[a + 1], a == 0).to_bits()
        } else {
            u64::MAX
        }
    });
    let mut remaining = k;
    while remaining > LEVELS {
        let a = tree.min();
        let b = cl[a].next as usize;
        let q = cl[b];
        let c = q.next;
        if a != 0 {
            let p = &mut cl[a];
            let n = p.n.add(q.n);
            let nf = n.to_f64();
            p.mu = ((p.nf * p.mu) + (q.nf * q.mu)) / nf;
            (p.n, p.nf) = (n, nf);
        }
        cl[a].next = c;
        // The pair of `a` and its new successor; the pair ending at `a`; `b`'s pair, gone.
        let key_a = match c {
            NONE => u64::MAX,
            c => {
                cl[c as usize].prev = a as u32;
                cost(&cl[a], &cl[c as usize], a == 0).to_bits()
            }
        };
        if a != 0 {
            let p = cl[a].prev as usize;
            let key_p = cost(&cl[p], &cl[a], p == 0).to_bits();
            tree.set(&[(p, key_p), (a, key_a), (b, u64::MAX)]);
        } else {
            tree.set(&[(a, key_a), (b, u64::MAX)]);
        }
        remaining -= 1;
    }
    let mut out = Vec::with_capacity(LEVELS);
    let mut i = cl[0].next;
    while i != NONE {
        out.push(cl[i as usize].mu);
        i = cl[i as usize].next;
    }
    out
}

/// Children of a node of a [`Tournament`]: eight keys, one cache line.
const FAN: usize = 8;

/// A tournament tree over `len` keys: the position of the smallest `(key, position)`.
///
/// Each node holds the winner below it, key and position, and has [`FAN`] children: for 8K
/// leaves 5 levels above them (a binary tree: 14), whose matches read adjacent keys, with
/// no branch. A merge of Ward's clustering sets three leaves, usually close together, and
/// [`Tournament::set`] replays each node above them once.
struct Tournament {
    /// Every level's keys, the leaves first: node `j` of level `l + 1` holds the least of nodes
    /// `FAN × j..FAN × (j + 1)` of level `l`. Each level but the root's (one node) is padded
    /// with `u64::MAX` to a multiple of `FAN`.
    key: Vec<u64>,
    /// The position of the leaf each node's key comes from.
    pos: Vec<u32>,
    /// Where each level starts in `key`, the root's last.
    level: Vec<usize>,
}

impl Tournament {
    fn new(len: usize, key: impl Fn(usize) -> u64) -> Tournament {
        let mut keys: Vec<u64> = (0..len).map(key).collect();
        let mut pos: Vec<u32> = (0..len as u32).collect();
        let mut level = vec![0];
        let mut width = len.max(1);
        while width > 1 {
            let up = width.div_ceil(FAN);
            let start = *level.last().unwrap_or(&0);
            keys.resize(start + up * FAN, u64::MAX);
            pos.resize(start + up * FAN, u32::MAX);
            let next = keys.len();
            for j in 0..up {
                let (k, p) = Self::least(&keys, &pos, start + FAN * j);
                keys.push(k);
                pos.push(p);
            }
            level.push(next);
            width = up;
        }
        keys.resize(*level.last().unwrap_or(&0) + 1, u64::MAX);
        pos.resize(keys.len(), 0);
        Tournament {
            key: keys,
            pos,
            level,
        }
    }

    /// The least `(key, position)` of the `FAN` nodes from `at`: ties go to the left, whose
    /// positions are the smaller.
    #[inline]
    fn least(key: &[u64], pos: &[u32], at: usize) -> (u64, u32) {
        let k: &[u64; FAN] = key[at..at + FAN].try_into().expect("FAN keys");
        let p: &[u32; FAN] = pos[at..at + FAN].try_into().expect("FAN positions");
        let pick = |x: (u64, u32), y: (u64, u32)| if y.0 < x.0 { y } else { x };
        let mut m: [(u64, u32); FAN] = std::array::from_fn(|i| (k[i], p[i]));
        let mut w = FAN;
        while w > 1 {
            w /= 2;
            for i in 0..w {
                m[i] = pick(m[2 * i], m[2 * i + 1]);
            }
        }
        m[0]
    }

    /// The position of the smallest `(key, position)`.
    fn min(&self) -> usize {
        self.pos[self.key.len() - 1] as usize
    }

    /// Sets the keys of the given leaves (at most three, in ascending order of position) and
    /// replays the matches above them, level by level, each once.
    fn set(&mut self, leaves: &[(usize, u64)]) {
        // The nodes to replay at the current level, ascending, without repeats.
        let mut nodes = [0usize; 3];
        let mut len = 0;
        for &(pos, key) in leaves {
            self.key[pos] = key;
            nodes[len] = pos;
            len += 1;
        }
        for l in 1..self.level.len() {
            let mut up = 0;
            for i in 0..len {
                let j = nodes[i] / FAN;
                if up > 0 && nodes[up - 1] == j {
                    continue;
                }
                let won = Self::least(&self.key, &self.pos, self.level[l - 1] + j * FAN);
                let node = self.level[l] + j;
                (self.key[node], self.pos[node]) = won;
                nodes[up] = j;
                up += 1;
            }
            len = up;
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
        let cells_a = lloyd(&mut a, &pts);
        let mut b = ward_levels(&pts);
        let cells_b = lloyd(&mut b, &pts);
        let ([da, db], e) = errors([(&a, &cells_a), (&b, &cells_b)], &pts);
        let (l, d) = if da <= db { (a, da) } else { (b, db) };
        levels = l;
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
    // The thresholds ascend, so the count is found by halving, without a branch: `n` thresholds
    // are below `x`, and whether the next `step` are too is one comparison.
    let mut n = 0;
    for step in [128, 64, 32, 16, 8, 4, 2, 1] {
        if n + step <= LEVELS && t[n + step - 1] < x {
            n += step;
        }
    }
    n as u8
}

#[cfg(test)]
mod reference;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    /// The cube roots of many values at once, in the build for this CPU and in the baseline
    /// one, are those of [`cbrt`] one at a time, bit for bit: every normal binade, and counts
    /// that leave a remainder of every length.
    #[test]
    fn cube_roots_in_lanes_are_those_one_at_a_time() {
        let mut r = Rng(0x5DEE_CE66_D1CE_4E5B);
        for n in 0..40 {
            let x: Vec<f64> = (0..n * 37 + n % 8)
                .map(|_| f64::from_bits(((1 + r.below(2045)) << 52) | (r.next() >> 12)))
                .collect();
            let one: Vec<u64> = x.iter().map(|&v| cbrt(v).to_bits()).collect();
            let (mut wide, mut built) = (x.clone(), x.clone());
            cube_roots(&mut wide);
            cube_roots_as_built(&mut built);
            assert_eq!(wide.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), one);
            assert_eq!(built.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), one);
        }
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
            let pts = Points::of(vec![1; k], mean);
            assert_eq!(ward(&pts), ward_naive(&pts), "{k} points");
        }
    }

    /// Non-decreasing levels with runs of equal ones, and levels from another such draw to
    /// start the search from: the cells are those of the nearest-level rule point by point
    /// (the count of thresholds strictly below each mean; half the cases put means on the
    /// thresholds and next to them), and the sums of each cell are those of its points added
    /// one by one in order, bit for bit.
    #[test]
    fn cells_and_their_sums_are_those_point_by_point() {
        let mut r = Rng(0x1234_5678_9ABC_DEF1);
        let levels = |r: &mut Rng| {
            let mut l = [0f64; LEVELS + 1];
            for c in 1..=LEVELS {
                l[c] = match r.below(4) {
                    // Repeats, gaps, and levels past every point.
                    0 => l[c - 1],
                    1 => l[c - 1] + r.unit() * 3.0,
                    _ => l[c - 1] + r.unit() * 0.1,
                };
            }
            monotone(&mut l);
            l
        };
        for case in 0..300 {
            let k = [1, 2, 3, 5, 40, 255, 256, 1000, 9000][case % 9];
            let (l, other) = (levels(&mut r), levels(&mut r));
            let t: Vec<f64> = (0..LEVELS).map(|i| (l[i] + l[i + 1]) / 2.0).collect();
            let mut mean: Vec<f64> = (0..k)
                .map(|_| {
                    if case / 9 % 2 == 0 {
                        return r.unit() * 40.0;
                    }
                    let x = t[r.below(LEVELS as u64) as usize];
                    match r.below(3) {
                        0 => x,
                        1 => x.next_up(),
                        _ => x.next_down(),
                    }
                })
                .collect();
            mean.sort_by(f64::total_cmp);
            let pts = Points::of(vec![1; k], mean);
            let near = Cells::new(&other, &pts, None);
            let cells = Cells::new(&l, &pts, (case % 2 == 0).then_some(&near));
            let mut sums = [0f64; LEVELS + 1];
            for (i, &mu) in pts.mean.iter().enumerate() {
                let c = t.iter().filter(|&&t| mu > t).count();
                assert!(
                    cells.of(c).contains(&i),
                    "case {case}: point {i} not in cell {c}"
                );
                sums[c] += pts.mass[i];
            }
            let fast = cell_sums(&cells, &pts.mass);
            for c in 0..=LEVELS {
                if !cells.of(c).is_empty() {
                    assert_eq!(
                        fast[c].to_bits(),
                        sums[c].to_bits(),
                        "case {case}: cell {c}"
                    );
                }
            }
        }
    }

    /// The code of a magnitude is the number of thresholds strictly below it, as a search of
    /// the thresholds gives it, on tables with runs of equal entries, at and next to every
    /// threshold.
    #[test]
    fn codes_count_the_thresholds_below() {
        let mut r = Rng(0x0F1E_2D3C_4B5A_6978);
        for _ in 0..200 {
            let mut lut = [0f32; 256];
            for c in 1..256 {
                lut[c] = match r.below(3) {
                    0 => lut[c - 1],
                    _ => lut[c - 1] + (r.unit() * 0.01) as f32,
                };
            }
            let t = lut_thresholds(&lut);
            let mut probes: Vec<f32> = vec![0.0, f32::MIN_POSITIVE, 1e30, f32::MAX, f32::INFINITY];
            for &x in t.iter() {
                let m = x as f32;
                probes.extend([
                    m,
                    f32::from_bits(m.to_bits() + 1),
                    f32::from_bits(m.to_bits().max(1) - 1),
                ]);
            }
            for m in probes {
                let want = if m == 0.0 {
                    0
                } else {
                    t.partition_point(|&t| t < f64::from(m))
                };
                assert_eq!(usize::from(code_of(&t, m)), want, "{m:e}");
            }
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

    /// xorshift64: the histograms of the pinning tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn unit(&mut self) -> f64 {
            ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }

        fn gaussian(&mut self) -> f64 {
            (-2.0 * self.unit().ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()
        }
    }

    /// The index of the last bin of finite magnitudes (`f32::MAX`'s).
    const TOP_BIN: u32 = 0x7F7F_FFFF >> BIN_SHIFT;

    /// A histogram of the given bins `(index, weight, offset)`: the offset sum is that of
    /// `weight` magnitudes at offset `offset >> 2` within the bin, and a quarter of them one
    /// more per unit of `offset & 3` (so the mean is within the bin but rarely a bit pattern).
    fn hist_from(mut bins: Vec<(u32, u128, u16)>) -> Histogram {
        bins.sort_by_key(|b| b.0);
        bins.dedup_by_key(|b| b.0);
        Histogram {
            bins: bins
                .into_iter()
                .map(|(index, weight, offset)| {
                    let o = u128::from(offset >> 2);
                    let extra = if o < 0x3FFF {
                        weight / 4 * u128::from(offset & 3)
                    } else {
                        0
                    };
                    Bin {
                        index,
                        weight,
                        offsets: weight * o + extra,
                    }
                })
                .collect(),
        }
    }

    /// The fast fit against the reference one (`reference`, the code before it was made
    /// faster), bit for bit: the table and `rel_err`, and with more than 255 bins each
    /// candidate's initial levels, its levels after Lloyd's iteration and its distortion (the
    /// fit keeps only the better candidate, which would hide a difference in the other).
    fn assert_as_reference(hist: &Histogram, what: &str) {
        let f = fit(hist);
        let (lut, rel_err) = reference::fit(hist);
        let bits = |l: &[f32; 256]| l.map(f32::to_bits);
        assert_eq!(bits(&f.lut), bits(&lut), "{what}: table");
        assert_eq!(f.rel_err.to_bits(), rel_err.to_bits(), "{what}: rel_err");
        if hist.bins.len() <= LEVELS {
            return;
        }
        let levels = |l: &Levels| l.map(f64::to_bits);
        let (pts, old) = (Points::new(hist), reference::Points::new(hist));
        let mut a = cube_root_levels(hist, &pts);
        let mut a_old = reference::cube_root_levels(hist, &old);
        assert_eq!(levels(&a), levels(&a_old), "{what}: initial levels A");
        let mut b = ward_levels(&pts);
        let mut b_old = reference::ward_levels(&old);
        assert_eq!(
            levels(&b),
            levels(&b_old),
            "{what}: initial levels B (Ward)"
        );
        for (name, l, l_old) in [("A", &mut a, &mut a_old), ("B", &mut b, &mut b_old)] {
            let cells = lloyd(l, &pts);
            let ([d], _) = errors([(l, &cells)], &pts);
            let d_old = reference::lloyd(l_old, &old);
            assert_eq!(levels(l), levels(l_old), "{what}: levels {name}");
            assert_eq!(d.to_bits(), d_old.to_bits(), "{what}: distortion {name}");
        }
    }

    /// Bin counts around every boundary of the fit: 255 levels, powers of two (the tournament's
    /// size), and as many as a real tensor has.
    const COUNTS: [usize; 15] = [
        1, 2, 200, 255, 256, 257, 300, 511, 512, 513, 1000, 1024, 2047, 4096, 8193,
    ];

    /// Histograms of values as the encoders see them: Gaussian, Laplace and heavy-tailed
    /// magnitudes with outliers, with weight 1 (`lloyd`) or a row weight (`lloyd-rows`).
    #[test]
    fn fit_of_value_histograms_is_the_reference_one() {
        let mut r = Rng(0x2545_F491_4F6C_DD1D);
        for (case, n) in [50usize, 3_000, 30_000, 200_000, 1_000_000]
            .into_iter()
            .enumerate()
        {
            for family in 0..4 {
                let mut all: Vec<(u32, u64)> = Vec::with_capacity(n);
                let sigma = (r.unit() * 20.0 - 10.0).exp();
                for i in 0..n {
                    let x = match family {
                        0 => r.gaussian() * sigma,
                        1 => -r.unit().ln() * sigma,
                        2 if i % 997 == 0 => r.gaussian() * sigma * 40.0,
                        2 => r.gaussian() * sigma,
                        _ => (r.unit() * 30.0 - 15.0).exp() * sigma,
                    };
                    let b = (x as f32).abs().to_bits();
                    // Row weights as `lloyd-rows` gives them, constant over rows of 64.
                    let w = if case % 2 == 1 {
                        let mut s = Rng(i as u64 / 64 + 1);
                        1 + s.below(1 << 32)
                    } else {
                        1
                    };
                    if b != 0 {
                        all.push((b, w));
                    }
                }
                let lo = all.iter().map(|a| a.0).min().unwrap_or(1);
                let hi = all.iter().map(|a| a.0).max().unwrap_or(1);
                let h = Histogram::build(&WeightedBits(&all), lo, hi, all.len());
                assert_as_reference(&h, &format!("{n} values, family {family}"));
            }
        }
    }

    /// Histograms made bin by bin: every bin count of [`COUNTS`], bins anywhere from the
    /// subnormals to `f32::MAX`, weights from 1 to near the limit of u128 sums (and totals just
    /// below and just above 2^63, one bin of 2^63 on its own, and totals above 2^64), and runs
    /// of equal bins, whose equal merge costs test the ties of Ward's clustering.
    #[test]
    fn fit_of_made_histograms_is_the_reference_one() {
        let mut r = Rng(0x9E37_79B9_7F4A_7C15);
        for &k in &COUNTS {
            for family in 0..12 {
                // Total weight stays below 2^127, offsets below 2^128.
                let huge = (1u128 << 113) / k as u128;
                // Weights whose total is just below or just above 2^63 (where Ward's clustering
                // changes its integers) and 2^64.
                let near63 = (1u128 << 63) / k as u128;
                let near64 = (1u128 << 64) / k as u128;
                let span = match family % 3 {
                    0 => 2 * k as u32,
                    1 => 40 * k as u32,
                    _ => TOP_BIN,
                };
                let first = r.below(u64::from(TOP_BIN - span.min(TOP_BIN)) + 1) as u32;
                let mut bins = Vec::with_capacity(k);
                let mut index = first;
                for i in 0..k {
                    let weight = match family {
                        0 => 1,
                        1 => 1 + u128::from(r.below(5)),
                        2 => 1 + u128::from(r.below(1 << 32)),
                        3 => u128::from(r.next()) << r.below(40),
                        4 => huge - u128::from(r.next()) * u128::from(r.next() % 3),
                        5 if i % 50 == 0 => huge,
                        5 => 1 + u128::from(r.below(100)),
                        // Equal bins in one binade, evenly spaced: equal costs.
                        6 => 7,
                        7 => 1 + (u128::from(r.next()) << 64 | u128::from(r.next())) % huge,
                        8 => near63 - 1 - u128::from(r.below(1000)),
                        9 => near63 + 1 + u128::from(r.below(1000)),
                        // One bin of 2^63 or more, the total below 2^64.
                        10 if i == k / 2 => (1 << 63) + u128::from(r.below(1 << 40)),
                        10 => 1 + u128::from(r.below(1000)),
                        _ => near64 + 1 + u128::from(r.below(1000)),
                    };
                    let frac = if family == 6 { 0x8000 } else { r.next() as u16 };
                    bins.push((index.min(TOP_BIN), weight.max(1), frac));
                    index += match family {
                        6 => 2,
                        _ => 1 + r.below(u64::from(2 * span / k as u32).max(1)) as u32,
                    };
                }
                if family == 6 {
                    // Within one binade where the run fits, so the spacing of the means is exact.
                    let base = 0x3F00_0000 >> BIN_SHIFT;
                    for (i, b) in bins.iter_mut().enumerate() {
                        b.0 = base + (2 * i as u32) % 0x4000;
                    }
                }
                let h = hist_from(bins);
                assert_as_reference(&h, &format!("{k} bins, family {family}"));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 64,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Random histograms: gaps, weights and offsets drawn freely (weights of all sizes up
        /// to 2^100), fitted as the reference does, bit for bit.
        #[test]
        fn fit_of_random_histograms_is_the_reference_one(
            first in 0u32..TOP_BIN,
            bins in prop::collection::vec(
                (1u32..300, 0u32..100, any::<u64>(), any::<u16>()),
                200..1200,
            ),
        ) {
            let mut index = first;
            let mut made = Vec::with_capacity(bins.len());
            for (gap, size, w, frac) in bins {
                let weight = match size {
                    0..=29 => u128::from(w % 4),
                    30..=59 => u128::from(w % 1000),
                    60..=89 => u128::from(w),
                    _ => u128::from(w) << (size - 64),
                };
                if index > TOP_BIN {
                    break;
                }
                made.push((index, weight.max(1), frac));
                index += if size % 7 == 0 { gap } else { 1 + gap % 3 };
            }
            assert_as_reference(&hist_from(made), "random histogram");
        }
    }
}

//! The table fit as it was before it was made faster (commit 1128add), kept verbatim but for
//! the [`Bin`] methods, which are free functions here, and `to_f64`, which is the cast it
//! stands for (`to_f64_rounds_as_the_cast_does`), so that the tests can pin the fast code to it
//! bit for bit: every later change to the fit must give exactly these levels, table and
//! `rel_err` (§12.3 fixes the arithmetic), on any histogram.
//!
//! It is the straightforward reading of §12.3: one pass over the points per Lloyd iteration
//! with the cells' sums in arrays, and a binary tournament tree of `(cost, position)` replayed
//! leaf by leaf for Ward's clustering.

use super::{pow2, Bin, Histogram, BIN_EXP_SHIFT, BIN_SHIFT, CBRT_STEPS, LEVELS, LLOYD_ITERATIONS};

fn exponent(b: Bin) -> u32 {
    (b.index >> BIN_EXP_SHIFT).max(1)
}

fn start(b: Bin) -> f64 {
    f64::from(f32::from_bits(b.index << BIN_SHIFT))
}

fn ulp(b: Bin) -> f64 {
    pow2(exponent(b) as i32 - 150)
}

fn width(b: Bin) -> f64 {
    pow2(exponent(b) as i32 - 150 + BIN_SHIFT as i32)
}

fn mass(b: Bin) -> f64 {
    to_f64(b.weight) * start(b) + to_f64(b.offsets) * ulp(b)
}

fn to_f64(v: u128) -> f64 {
    v as f64
}

pub(super) fn cbrt(x: f64) -> f64 {
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

pub(super) struct Points {
    pub(super) weight: Vec<u128>,
    pub(super) mass: Vec<f64>,
    pub(super) mean: Vec<f64>,
}

impl Points {
    pub(super) fn new(hist: &Histogram) -> Points {
        let weight: Vec<u128> = hist.bins.iter().map(|b| b.weight).collect();
        let mass: Vec<f64> = hist.bins.iter().map(|&b| mass(b)).collect();
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

pub(super) type Levels = [f64; LEVELS + 1];

fn monotone(levels: &mut Levels) {
    levels[0] = 0.0;
    for c in 1..=LEVELS {
        levels[c] = levels[c].max(levels[c - 1]);
    }
}

fn thresholds(levels: &Levels) -> [f64; LEVELS] {
    std::array::from_fn(|i| (levels[i] + levels[i + 1]) / 2.0)
}

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

pub(super) fn distortion(levels: &Levels, pts: &Points) -> f64 {
    let mut d = 0.0;
    assign(levels, pts, |k, c| {
        let e = pts.mean[k] - levels[c];
        d += to_f64(pts.weight[k]) * (e * e);
    });
    d
}

pub(super) fn lloyd(levels: &mut Levels, pts: &Points) -> f64 {
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

pub(super) fn cube_root_levels(hist: &Histogram, pts: &Points) -> Levels {
    let bins = &hist.bins;
    let top = pts.mean[pts.len() - 1];
    let lambda: Vec<f64> = bins
        .iter()
        .map(|&b| cbrt(to_f64(b.weight) * width(b) * width(b)))
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
    let mut k = 0;
    for (j, level) in levels.iter_mut().enumerate().skip(1) {
        let tau = ((2 * j - 1) as f64 / (2 * LEVELS) as f64) * total;
        while k + 1 < bins.len() && cum[k + 1] < tau {
            k += 1;
        }
        let b = bins[k];
        *level = (start(b) + width(b) * ((tau - cum[k]) / lambda[k])).min(top);
    }
    monotone(&mut levels);
    levels
}

pub(super) fn ward_levels(pts: &Points) -> Levels {
    let merged = ward(pts);
    let mut levels = [0f64; LEVELS + 1];
    for (c, mu) in merged.into_iter().enumerate() {
        levels[c + 1] = mu;
    }
    monotone(&mut levels);
    levels
}

fn ward(pts: &Points) -> Vec<f64> {
    const NONE: usize = usize::MAX;
    let k = pts.len();
    let mut n: Vec<u128> = std::iter::once(0)
        .chain(pts.weight.iter().copied())
        .collect();
    let mut mu: Vec<f64> = std::iter::once(0.0)
        .chain(pts.mean.iter().copied())
        .collect();
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

struct Tournament {
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

/// The reference fit: `(LUT, rel_err)`.
pub(super) fn fit(hist: &Histogram) -> ([f32; 256], f64) {
    let pts = Points::new(hist);
    let mut levels = [0f64; LEVELS + 1];
    let mut rel_err = 0.0;
    if pts.len() <= LEVELS {
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
    (lut, rel_err)
}

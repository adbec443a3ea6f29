//! Small deterministic pseudo-random number generators (no `rand` dependency).
//!
//! Seeding uses SplitMix64; bulk generation uses xoshiro256++.  Everything here is
//! pure integer arithmetic, so streams are identical on every platform.

/// Golden-ratio increment used by SplitMix64.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 output function (a strong 64-bit mixer / finalizer).
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One SplitMix64 step.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(GOLDEN);
    mix64(*state)
}

/// 64-bit FNV-1a hash of a string (used to derive a per-tensor stream from its name).
pub(crate) fn fnv1a64(s: &str) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// Seed of the stream belonging to one tensor: depends on the global seed and the tensor name.
pub(crate) fn tensor_seed(seed: u64, name: &str) -> u64 {
    mix64(mix64(seed ^ 0x5157_494E_5353_594E) ^ fnv1a64(name))
}

/// Seed of one fixed-size chunk of one tensor.
pub(crate) fn chunk_seed(tensor_seed: u64, chunk: usize) -> u64 {
    mix64(tensor_seed ^ mix64((chunk as u64).wrapping_add(1).wrapping_mul(GOLDEN)))
}

/// Uniform `[0, 1)` double derived from a 64-bit value.
pub(crate) fn unit_f64(x: u64) -> f64 {
    (x >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// xoshiro256++ generator.
#[derive(Debug, Clone)]
pub(crate) struct Xoshiro256pp {
    s: [u64; 4],
}

impl Xoshiro256pp {
    /// Expands a 64-bit seed into the full state with SplitMix64.
    pub(crate) fn from_seed(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Self { s }
    }

    /// Next 64 random bits.
    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`.
    #[inline]
    pub(crate) fn next_f64(&mut self) -> f64 {
        unit_f64(self.next_u64())
    }

    /// Uniform in `(0, 1]` (safe to take the logarithm of).
    #[inline]
    pub(crate) fn next_f64_nonzero(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `[0, n)`; `n` must be non-zero.
    #[inline]
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Number of ziggurat layers (Doornik's ZIGNOR).
const ZIG_C: usize = 128;
/// Start of the right tail of the ziggurat.
const ZIG_R: f64 = 3.442_619_855_899;
/// Area of every ziggurat layer.
const ZIG_V: f64 = 9.912_563_035_262_17e-3;

/// Layer edges `x[i]` and ratios `x[i+1] / x[i]` of the ziggurat.
struct ZigTables {
    x: [f64; ZIG_C + 1],
    ratio: [f64; ZIG_C],
}

fn zig_tables() -> &'static ZigTables {
    static TABLES: std::sync::OnceLock<ZigTables> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| {
        let mut x = [0.0; ZIG_C + 1];
        let mut f = (-0.5 * ZIG_R * ZIG_R).exp();
        x[0] = ZIG_V / f;
        x[1] = ZIG_R;
        for i in 2..ZIG_C {
            x[i] = (-2.0 * (ZIG_V / x[i - 1] + f).ln()).sqrt();
            f = (-0.5 * x[i] * x[i]).exp();
        }
        x[ZIG_C] = 0.0;
        let mut ratio = [0.0; ZIG_C];
        for i in 0..ZIG_C {
            ratio[i] = x[i + 1] / x[i];
        }
        ZigTables { x, ratio }
    })
}

/// Standard normal sampler (ziggurat method, Doornik's ZIGNOR variant): one 64-bit
/// draw and one multiplication for about 99% of the samples.
pub(crate) struct StdNormal {
    t: &'static ZigTables,
}

impl Default for StdNormal {
    fn default() -> Self {
        StdNormal { t: zig_tables() }
    }
}

impl StdNormal {
    /// Draws one N(0, 1) variate.
    #[inline(always)]
    pub(crate) fn sample(&mut self, rng: &mut Xoshiro256pp) -> f64 {
        let t = self.t;
        loop {
            let bits = rng.next_u64();
            let i = (bits & (ZIG_C as u64 - 1)) as usize;
            // Bits 11..64 give the uniform, bits 0..7 the layer: they are disjoint.
            let u = 2.0 * unit_f64(bits) - 1.0;
            if u.abs() < t.ratio[i] {
                return u * t.x[i];
            }
            if i == 0 {
                return Self::tail(rng, u < 0.0);
            }
            let x = u * t.x[i];
            let f0 = (-0.5 * (t.x[i] * t.x[i] - x * x)).exp();
            let f1 = (-0.5 * (t.x[i + 1] * t.x[i + 1] - x * x)).exp();
            if f1 + rng.next_f64() * (f0 - f1) < 1.0 {
                return x;
            }
        }
    }

    #[cold]
    fn tail(rng: &mut Xoshiro256pp, negative: bool) -> f64 {
        loop {
            let x = rng.next_f64_nonzero().ln() / ZIG_R;
            let y = rng.next_f64_nonzero().ln();
            if -2.0 * y >= x * x {
                return if negative { x - ZIG_R } else { ZIG_R - x };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoshiro_is_deterministic_and_uniformish() {
        let mut a = Xoshiro256pp::from_seed(42);
        let mut b = Xoshiro256pp::from_seed(42);
        let mut sum = 0.0;
        for _ in 0..10_000 {
            let x = a.next_u64();
            assert_eq!(x, b.next_u64());
            sum += unit_f64(x);
        }
        let mean = sum / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }

    #[test]
    fn normal_moments() {
        let mut rng = Xoshiro256pp::from_seed(7);
        let mut n = StdNormal::default();
        let (mut s1, mut s2, mut s4) = (0.0, 0.0, 0.0);
        let (mut above2, mut above3) = (0usize, 0usize);
        let count = 1_000_000;
        for _ in 0..count {
            let x = n.sample(&mut rng);
            assert!(x.is_finite());
            s1 += x;
            s2 += x * x;
            s4 += x * x * x * x;
            above2 += usize::from(x.abs() > 2.0);
            above3 += usize::from(x.abs() > 3.5);
        }
        let c = count as f64;
        let mean = s1 / c;
        let var = s2 / c - mean * mean;
        let kurt = s4 / c;
        assert!(mean.abs() < 0.005, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "var {var}");
        assert!((kurt - 3.0).abs() < 0.05, "fourth moment {kurt}");
        // P(|x| > 2) = 0.0455, P(|x| > 3.5) = 4.65e-4 (exercises the tail).
        assert!((above2 as f64 / c - 0.0455).abs() < 0.001, "{above2}");
        assert!((above3 as f64 / c - 4.65e-4).abs() < 1e-4, "{above3}");
    }

    #[test]
    fn below_in_range() {
        let mut rng = Xoshiro256pp::from_seed(1);
        for n in 1..200u64 {
            assert!(rng.below(n) < n);
        }
        let x = rng.next_f64_nonzero();
        assert!(x > 0.0 && x <= 1.0);
    }

    #[test]
    fn seeds_differ_by_name_and_chunk() {
        let a = tensor_seed(0, "a");
        let b = tensor_seed(0, "b");
        let c = tensor_seed(1, "a");
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(chunk_seed(a, 0), chunk_seed(a, 1));
    }
}

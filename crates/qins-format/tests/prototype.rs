//! The `log` codec reproduces the Python prototype's `stored` codes (DESIGN.md rule 2, spec
//! §12.1).
//!
//! The prototype (`src/qins_codec.py`) computes, in torch float32:
//!
//! ```python
//! abs_weight = torch.abs(weight).clamp(min=1e-8)
//! log_weight = torch.log(abs_weight)
//! log_min, log_max = log_weight.min(), log_weight.max()
//! normalized = (log_weight - log_min) / (log_max - log_min)
//! stored = (255.0 - normalized * 254.0).round().clamp(1, 255).to(torch.uint8)
//! ```
//!
//! `prototype` below does exactly that in f32 (`torch.round` rounds half to even). Our encoder
//! computes the same formula in f64 from the exact logarithm, so the two may disagree only where
//! the float32 `stored` value lies next to a tie (`k + 0.5`): the test asserts that every
//! disagreement is within `TIE_EPS` of one and that they are a tiny fraction, and prints the
//! counts.

use qins_format::codec::{encode, Codec};

/// A disagreement is allowed where the prototype's float32 `stored` is this close to a tie.
const TIE_EPS: f32 = 1e-3;

/// SplitMix64, for deterministic data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn gaussian(&mut self) -> f64 {
        let u1 = self.unit().max(1e-300);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// `n` values from `f`, redrawn until the magnitude is at least 1e-8 (so that the prototype's
/// clamp changes nothing and there are no zeros).
fn tensor(n: usize, seed: u64, f: impl Fn(&mut Rng) -> f64) -> Vec<f32> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| loop {
            let x = f(&mut rng) as f32;
            if x.is_finite() && x.abs() >= 1e-8 {
                break x;
            }
        })
        .collect()
}

/// How torch divides by the 0-dim `log_max - log_min`: a true division, or (as some of its
/// kernels do for a scalar divisor) a multiplication by the reciprocal. The two differ by an ulp
/// of `normalized` at most; both are checked.
#[derive(Clone, Copy, Debug)]
enum Division {
    True,
    Reciprocal,
}

/// The prototype's codes and float32 `stored` values, computed as torch float32 does.
fn prototype(w: &[f32], division: Division) -> (Vec<u8>, Vec<f32>) {
    let log: Vec<f32> = w.iter().map(|x| x.abs().max(1e-8f32).ln()).collect();
    let log_min = log.iter().copied().fold(f32::INFINITY, f32::min);
    let log_max = log.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let range = log_max - log_min;
    let inv = 1.0f32 / range;
    let stored: Vec<f32> = log
        .iter()
        .map(|&l| {
            let normalized = match division {
                Division::True => (l - log_min) / range,
                Division::Reciprocal => (l - log_min) * inv,
            };
            255.0f32 - normalized * 254.0f32
        })
        .collect();
    let codes = stored
        .iter()
        .map(|s| s.round_ties_even().clamp(1.0, 255.0) as u8)
        .collect();
    (codes, stored)
}

/// Distance of `s` from the nearest tie `k + 0.5`.
fn tie_distance(s: f32) -> f32 {
    ((s - s.floor()) - 0.5).abs()
}

#[derive(Default)]
struct Counts {
    values: usize,
    /// Values whose float32 `stored` is within `TIE_EPS` of a tie.
    near_ties: usize,
    /// Codes that differ (all of them near a tie).
    disagreements: usize,
    /// The largest tie distance at which a code differed.
    worst: f32,
}

fn compare(name: &str, w: &[f32], division: Division) -> Counts {
    let (proto, stored) = prototype(w, division);
    let e = encode(Codec::Log, w, None).unwrap();

    // Parameters: ln of the smallest and largest magnitude, in f64 (§12.1).
    let min = w.iter().map(|x| x.abs()).fold(f32::INFINITY, f32::min);
    let max = w.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
    let [lo, hi] = e.quantizer.params();
    assert_eq!(
        lo.to_bits(),
        f64::from(min).ln().to_bits(),
        "{name}: log_min"
    );
    assert_eq!(
        hi.to_bits(),
        f64::from(max).ln().to_bits(),
        "{name}: log_max"
    );

    let mut c = Counts {
        values: w.len(),
        ..Counts::default()
    };
    for (i, (&ours, &theirs)) in e.codes.iter().zip(&proto).enumerate() {
        let d = tie_distance(stored[i]);
        if d < TIE_EPS {
            c.near_ties += 1;
        }
        if ours != theirs {
            assert!(
                d < TIE_EPS && ours.abs_diff(theirs) == 1,
                "{name}[{i}] = {:e}: ours {ours}, prototype {theirs} (stored {}), not next to a tie",
                w[i],
                stored[i]
            );
            c.disagreements += 1;
            c.worst = c.worst.max(d);
        }
        // The prototype's sign is torch.sign: -1 exactly for negative weights.
        let neg = e.signs[i / 8] >> (i % 8) & 1 == 1;
        assert_eq!(neg, w[i] < 0.0, "{name}[{i}]: sign");
    }
    println!(
        "{:<10} {name:>14}: {:>7} values, {:>4} within {TIE_EPS:e} of a tie, {:>3} codes differ \
         (largest tie distance of a difference {:.2e})",
        format!("{division:?}"),
        c.values,
        c.near_ties,
        c.disagreements,
        c.worst
    );
    c
}

#[test]
fn log_codes_are_the_prototype_stored_codes() {
    let cases: Vec<(&str, Vec<f32>)> = vec![
        // LLM-like weights: N(0, 0.02).
        ("gaussian", tensor(65536, 1, |r| 0.02 * r.gaussian())),
        // The same rounded to bfloat16, as real checkpoints are.
        (
            "gaussian-bf16",
            tensor(32768, 2, |r| {
                f64::from(half::bf16::from_f64(0.02 * r.gaussian()).to_f32())
            }),
        ),
        ("uniform", tensor(32768, 3, |r| 2.0 * r.unit() - 1.0)),
        // Heavy-tailed: Cauchy, scaled like weights (magnitudes from 1e-8 to ~1e4).
        (
            "cauchy",
            tensor(32768, 4, |r| {
                0.01 * (std::f64::consts::PI * (r.unit() - 0.5)).tan()
            }),
        ),
        // Log-uniform magnitudes over 14 decades, random signs.
        (
            "log-uniform",
            tensor(16384, 5, |r| {
                let m = 10f64.powf(-7.5 + 14.0 * r.unit());
                if r.next() & 1 == 1 {
                    -m
                } else {
                    m
                }
            }),
        ),
        // Small tensors take the encoder's direct path rather than its change-point table.
        ("small-gauss", tensor(4000, 6, |r| 0.05 * r.gaussian())),
    ];
    for division in [Division::True, Division::Reciprocal] {
        let mut total = Counts::default();
        for (name, w) in &cases {
            let c = compare(name, w, division);
            total.values += c.values;
            total.near_ties += c.near_ties;
            total.disagreements += c.disagreements;
            total.worst = total.worst.max(c.worst);
        }
        check_total(division, &total);
    }
}

fn check_total(division: Division, total: &Counts) {
    println!(
        "{:<10} {:>14}: {:>7} values, {:>4} within {TIE_EPS:e} of a tie, {:>3} codes differ ({:.4}%)",
        format!("{division:?}"),
        "total",
        total.values,
        total.near_ties,
        total.disagreements,
        100.0 * total.disagreements as f64 / total.values as f64
    );
    assert!(total.values >= 100_000);
    assert!(
        (total.disagreements as f64) < 1e-3 * total.values as f64,
        "{} of {} codes differ from the prototype's",
        total.disagreements,
        total.values
    );
}

/// Magnitudes 2^-20 ..= 2^6 put `stored` at `255 − 254·k/26`, never closer than 1/26 to a tie,
/// so the codes agree everywhere, from 255 for the smallest to 1 for the largest.
#[test]
fn powers_of_two_agree_exactly() {
    let w: Vec<f32> = (0..=26)
        .flat_map(|k| {
            let m = 2f32.powi(k - 20);
            [m, -m]
        })
        .collect();
    let e = encode(Codec::Log, &w, None).unwrap();
    for division in [Division::True, Division::Reciprocal] {
        assert_eq!(e.codes, prototype(&w, division).0);
    }
    assert_eq!(e.codes[0], 255);
    assert_eq!(*e.codes.last().unwrap(), 1);
}

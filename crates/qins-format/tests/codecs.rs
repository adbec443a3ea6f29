//! Every codec on synthetic distributions: the documented error bounds, the fitted codecs never
//! worse than `log`, fast codes equal to exact codes, nearest-entry coding, chunked encoding
//! equal to whole encoding, independence of the merge order, determinism.
//!
//! The distributions (`Dist`), 256 rows of 512 values each, from a fixed-seed SplitMix64:
//!
//! - `gaussian`: N(0, 0.02²);
//! - `laplace`: Laplace(0, 0.02);
//! - `outliers`: N(0, 0.02²) with one value in 1000 replaced by ±(20 to 100) × 0.02;
//! - `zeros`: half the values exactly zero (a quarter of those -0.0), the rest N(0, 0.02²);
//! - `rows`: N(0, 0.02²) with each row multiplied by 10^U(-2, 2), rows of very different size.
//!
//! The SNR floors asserted here are the ones documented on [`Codec`] (`SNR_FLOOR`).

use proptest::prelude::*;
use qins_format::codec::{
    encode, row_scales, scan, scan_bytes, Codec, EncodeError, Quantizer, RowMaxima, RowScales,
    Stats,
};
use qins_format::decode::EncodedParts;
use qins_format::Dtype;

const ROWS: usize = 256;
const COLS: usize = 512;
const SHAPE: [u64; 2] = [ROWS as u64, COLS as u64];

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1).
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn gaussian(&mut self) -> f64 {
        let (u1, u2) = (self.unit(), self.unit());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    fn laplace(&mut self) -> f64 {
        let u = self.unit() - 0.5;
        -u.signum() * (1.0 - 2.0 * u.abs()).ln()
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Dist {
    Gaussian,
    Laplace,
    Outliers,
    Zeros,
    Rows,
}

const DISTS: [Dist; 5] = [
    Dist::Gaussian,
    Dist::Laplace,
    Dist::Outliers,
    Dist::Zeros,
    Dist::Rows,
];

fn sample(d: Dist, seed: u64) -> Vec<f32> {
    let mut r = Rng(seed ^ (d as u64).wrapping_mul(0x1234_5678_9ABC_DEF1));
    let sigma = 0.02;
    let mut row_scale = 1.0;
    (0..ROWS * COLS)
        .map(|i| {
            if d == Dist::Rows && i % COLS == 0 {
                row_scale = 10f64.powf(4.0 * r.unit() - 2.0);
            }
            let x = match d {
                Dist::Gaussian | Dist::Rows => sigma * r.gaussian() * row_scale,
                Dist::Laplace => sigma * r.laplace(),
                Dist::Outliers => {
                    if r.next().is_multiple_of(1000) {
                        let s = if r.next().is_multiple_of(2) {
                            1.0
                        } else {
                            -1.0
                        };
                        s * sigma * (20.0 + 80.0 * r.unit())
                    } else {
                        sigma * r.gaussian()
                    }
                }
                Dist::Zeros => match r.next() % 8 {
                    0 => -0.0,
                    1..=3 => 0.0,
                    _ => sigma * r.gaussian(),
                },
            };
            x as f32
        })
        .collect()
}

/// The documented SNR floors in dB (the table in the docs of `qins_format::codec`), per codec,
/// for the distributions in the order of `DISTS`.
fn snr_floor(codec: Codec) -> [f64; 5] {
    match codec {
        Codec::Log => [35.5, 34.0, 34.5, 36.5, 32.0],
        Codec::Linear => [44.0, 38.5, 25.5, 45.5, 38.0],
        Codec::Lloyd => [49.5, 47.5, 52.0, 49.5, 47.0],
        Codec::LloydRows => [50.0, 48.5, 51.0, 50.5, 50.5],
    }
}

/// What a codec did to one tensor.
struct Outcome {
    decoded: Vec<f32>,
    quantizer: Quantizer,
    scales: Option<Vec<f32>>,
    codes: Vec<u8>,
    signs: Vec<u8>,
}

fn run(codec: Codec, w: &[f32]) -> Outcome {
    let scales = row_scales(codec, w, &SHAPE).unwrap();
    let rs = scales
        .as_deref()
        .map(|s| RowScales::new(s, &SHAPE).unwrap());
    let e = encode(codec, w, rs.as_ref()).unwrap();
    let bytes: Option<Vec<u8>> = scales
        .as_ref()
        .map(|s| s.iter().flat_map(|x| x.to_le_bytes()).collect());
    let parts = EncodedParts {
        lut: e.quantizer.lut(),
        codes: &e.codes,
        signs: &e.signs,
        scales: bytes.as_deref().map(|b| (b, COLS as u64)),
    };
    let mut decoded = vec![0f32; w.len()];
    parts.decode_f32(0, &mut decoded).unwrap();
    Outcome {
        decoded,
        quantizer: e.quantizer,
        scales,
        codes: e.codes,
        signs: e.signs,
    }
}

fn snr(w: &[f32], r: &[f32]) -> f64 {
    let (mut e, mut n) = (0f64, 0f64);
    for (&a, &b) in w.iter().zip(r) {
        let (a, b) = (f64::from(a), f64::from(b));
        e += a * a;
        n += (a - b) * (a - b);
    }
    10.0 * (e / n).log10()
}

#[test]
fn every_codec_keeps_its_documented_snr_floor_and_the_fitted_ones_beat_log() {
    for (k, d) in DISTS.into_iter().enumerate() {
        let w = sample(d, 1);
        let log = snr(&w, &run(Codec::Log, &w).decoded);
        for &codec in Codec::ALL {
            let o = run(codec, &w);
            let s = snr(&w, &o.decoded);
            println!("{d:?} {codec}: {s:.2} dB");
            assert!(
                s >= snr_floor(codec)[k],
                "{d:?} {codec}: {s:.2} dB below the floor {}",
                snr_floor(codec)[k]
            );
            if matches!(codec, Codec::Lloyd | Codec::LloydRows) {
                assert!(
                    s >= log,
                    "{d:?} {codec}: {s:.2} dB, worse than log's {log:.2}"
                );
            }
        }
    }
}

/// The per-weight bounds of `log` and `linear` (§12.1, §12.2): half a step, plus f32 rounding.
#[test]
fn log_and_linear_keep_their_per_weight_bounds() {
    for d in DISTS {
        let w = sample(d, 2);
        let o = run(Codec::Log, &w);
        let [lo, hi] = o.quantizer.params();
        let bound = ((hi - lo) / 508.0).exp() - 1.0 + 2.0 * f64::from(f32::EPSILON);
        for (&x, &y) in w.iter().zip(&o.decoded) {
            if x != 0.0 {
                let rel = ((f64::from(y) - f64::from(x)) / f64::from(x)).abs();
                assert!(rel <= bound, "{d:?} log: {x} -> {y}, {rel} > {bound}");
            }
        }
        let o = run(Codec::Linear, &w);
        let max = o.quantizer.params()[0];
        let bound = max / 508.0 + max * f64::from(f32::EPSILON);
        for (&x, &y) in w.iter().zip(&o.decoded) {
            let err = (f64::from(y) - f64::from(x)).abs();
            assert!(err <= bound, "{d:?} linear: {x} -> {y}, {err} > {bound}");
        }
    }
}

/// The bound of `lloyd` and `lloyd-rows` (§12.3, §12.4): the weighted relative RMSE of the
/// values they fitted is at most `sqrt(param1) + 2^-9 + 2^-22`. Without row scales every weight
/// is 1; with them, the values are the scaled ones and the weights those of `RowScales::weight`,
/// so the bound is, to the weights' rounding, one on the decoded tensor's relative RMSE.
#[test]
fn fitted_codecs_keep_their_recorded_error_bound() {
    for d in DISTS {
        let w = sample(d, 3);
        for codec in [Codec::Lloyd, Codec::LloydRows] {
            let o = run(codec, &w);
            let rs = o
                .scales
                .as_deref()
                .map(|s| RowScales::new(s, &SHAPE).unwrap());
            let lut = o.quantizer.lut();
            let (mut e, mut n) = (0f64, 0f64);
            for (i, &x) in w.iter().enumerate() {
                let (u, weight) = match &rs {
                    Some(rs) => {
                        let s = rs.scale_of(i as u64);
                        (x / s, rs.weight(s) as f64)
                    }
                    None => (x, 1.0),
                };
                let m = f64::from(u.abs());
                let q = f64::from(lut[usize::from(o.codes[i])]);
                e += weight * m * m;
                n += weight * (m - q) * (m - q);
            }
            let [p0, p1] = o.quantizer.params();
            assert!(codec.params_are_valid(p0, p1));
            let rel = (n / e).sqrt();
            let bound = p1.sqrt() + 2f64.powi(-9) + 2f64.powi(-22);
            let decoded = 10f64.powf(-snr(&w, &o.decoded) / 20.0);
            println!(
                "{d:?} {codec}: relative RMSE {rel:.4e} (decoded {decoded:.4e}), recorded {:.4e}",
                p1.sqrt()
            );
            assert!(rel <= bound, "{d:?} {codec}: {rel} > {bound}");
            // The recorded error is a close estimate of the decoded tensor's, not only a bound.
            assert!(
                (decoded / p1.sqrt() - 1.0).abs() < 0.05,
                "{d:?} {codec}: {decoded} vs {}",
                p1.sqrt()
            );
        }
    }
}

/// §12.3.6: the code of a magnitude is its nearest table entry, ties to the smaller code, and
/// it is a non-decreasing function of the magnitude; the fast path gives the exact code.
#[test]
fn fitted_codes_are_the_nearest_entry_and_fast_codes_are_exact() {
    for d in DISTS {
        let w = sample(d, 4);
        for codec in [Codec::Lloyd, Codec::LloydRows] {
            let o = run(codec, &w);
            let q = &o.quantizer;
            let lut = q.lut();
            assert_eq!(lut[0], 0.0);
            assert!(
                lut.windows(2).all(|p| p[0] <= p[1]),
                "{d:?} {codec}: sorted"
            );
            assert!(lut.iter().all(|v| v.is_finite() && *v >= 0.0));
            let nearest = |m: f32| -> u8 {
                let x = f64::from(m);
                let mut best = 0;
                for c in 1..256 {
                    if (x - f64::from(lut[c])).abs() < (x - f64::from(lut[best])).abs() {
                        best = c;
                    }
                }
                best as u8
            };
            // Every entry, the midpoints between entries and their neighbours.
            let mut probes = vec![0.0f32];
            for c in 1..256 {
                let mid = ((f64::from(lut[c - 1]) + f64::from(lut[c])) / 2.0) as f32;
                for b in [lut[c], mid] {
                    let bits = b.to_bits();
                    probes.extend([bits.saturating_sub(1), bits, bits + 1].map(f32::from_bits));
                }
            }
            for m in probes {
                let c = q.code_exact(m);
                let best = nearest(m);
                let (dc, db) = (
                    (f64::from(m) - f64::from(lut[usize::from(c)])).abs(),
                    (f64::from(m) - f64::from(lut[usize::from(best)])).abs(),
                );
                assert!(dc <= db, "{d:?} {codec}: code {c} of {m}, nearest {best}");
                if dc == db && m != 0.0 {
                    assert!(
                        lut[usize::from(c)] <= lut[usize::from(best)],
                        "ties go to the smaller"
                    );
                }
            }
            // Fast = exact on every bit pattern of a dense stride through the range, and on
            // every pattern of one binade.
            let (mut lo, mut hi) = (u32::MAX, 0);
            for x in &w {
                let b = x.abs().to_bits();
                if b != 0 {
                    lo = lo.min(b);
                }
                hi = hi.max(b);
            }
            let step = ((hi - lo) / 2_000_000).max(1);
            let mut prev = 0;
            let mut b = lo;
            while b <= hi {
                let m = f32::from_bits(b);
                let c = q.code(m);
                assert_eq!(c, q.code_exact(m), "{d:?} {codec}: bits {b:#x}");
                assert!(c >= prev, "{d:?} {codec}: codes decrease at {b:#x}");
                prev = c;
                b += step;
            }
            let top = 0x3F00_0000.min(hi);
            for b in top.saturating_sub(1 << 23).max(lo)..=top {
                let m = f32::from_bits(b);
                assert_eq!(q.code(m), q.code_exact(m), "{d:?} {codec}: bits {b:#x}");
            }
        }
    }
}

/// Encodes `w` in chunks of the given sizes (each a multiple of 8 but the last), merging the
/// statistics left to right; returns everything the file would hold.
fn chunked(codec: Codec, w: &[f32], sizes: &[usize]) -> (Stats, Outcome) {
    let mut bounds = vec![0];
    let mut a = 0;
    for &s in sizes.iter().cycle() {
        if a >= w.len() {
            break;
        }
        a = (a + s).min(w.len());
        bounds.push(a);
    }
    let parts: Vec<(usize, usize)> = bounds.windows(2).map(|p| (p[0], p[1])).collect();
    let scales = codec.uses_row_scales().then(|| {
        parts
            .iter()
            .map(|&(a, b)| RowMaxima::scan(&w[a..b], a as u64, &SHAPE).unwrap())
            .fold(RowMaxima::EMPTY, RowMaxima::merge)
            .into_scales(&SHAPE)
            .unwrap()
    });
    let rs = scales
        .as_deref()
        .map(|s| RowScales::new(s, &SHAPE).unwrap());
    let stats = parts
        .iter()
        .map(|&(a, b)| scan(&w[a..b], a as u64, rs.as_ref()).unwrap())
        .fold(Stats::EMPTY, Stats::merge);
    let q = Quantizer::new(codec, &stats);
    let mut codes = vec![0u8; w.len()];
    let mut signs = vec![0u8; w.len().div_ceil(8)];
    for &(a, b) in &parts {
        q.encode(
            &w[a..b],
            a as u64,
            rs.as_ref(),
            &mut codes[a..b],
            &mut signs[a / 8..b.div_ceil(8)],
        )
        .unwrap();
    }
    (
        stats,
        Outcome {
            decoded: Vec::new(),
            quantizer: q,
            scales,
            codes,
            signs,
        },
    )
}

fn same(a: &Outcome, b: &Outcome, what: &str) {
    assert_eq!(a.codes, b.codes, "{what}: codes");
    assert_eq!(a.signs, b.signs, "{what}: signs");
    assert_eq!(
        a.quantizer.lut().map(f32::to_bits),
        b.quantizer.lut().map(f32::to_bits),
        "{what}: table"
    );
    assert_eq!(
        a.quantizer.params().map(f64::to_bits),
        b.quantizer.params().map(f64::to_bits),
        "{what}: params"
    );
    assert_eq!(a.scales, b.scales, "{what}: scales");
}

#[test]
fn chunked_encoding_equals_whole_encoding() {
    for d in DISTS {
        let w = sample(d, 5);
        for &codec in Codec::ALL {
            let whole = run(codec, &w);
            let (reference, _) = chunked(codec, &w, &[w.len()]);
            for sizes in [&[56usize][..], &[1000, 24, 4096, 336], &[COLS * 3 + 8]] {
                let (stats, parts) = chunked(codec, &w, sizes);
                assert_eq!(stats, reference, "{d:?} {codec} {sizes:?}: statistics");
                same(&whole, &parts, &format!("{d:?} {codec} {sizes:?}"));
            }
        }
    }
}

/// Statistics merged in any grouping (as threads would) are identical.
#[test]
fn statistics_do_not_depend_on_the_merge_order() {
    let w = sample(Dist::Outliers, 6);
    let chunks: Vec<Stats> = w
        .chunks(4000)
        .enumerate()
        .map(|(k, c)| scan(c, 4000 * k as u64, None).unwrap())
        .collect();
    let left = chunks.iter().cloned().fold(Stats::EMPTY, Stats::merge);
    let right = chunks
        .iter()
        .rev()
        .cloned()
        .fold(Stats::EMPTY, |acc, s| s.merge(acc));
    fn tree(s: &[Stats]) -> Stats {
        match s.len() {
            0 => Stats::EMPTY,
            1 => s[0].clone(),
            n => tree(&s[..n / 2]).merge(tree(&s[n / 2..])),
        }
    }
    assert_eq!(left, right);
    assert_eq!(left, tree(&chunks));
    assert_eq!(left, scan(&w, 0, None).unwrap());
}

#[test]
fn encoding_is_deterministic_and_pinned() {
    // A fingerprint of the tables, parameters and codes: the fit uses only integer statistics
    // and IEEE-754 binary64 arithmetic in a fixed order, so it is the same on every platform.
    // A change here is a change of §12.3 and of the conformance goldens.
    let mut h = 0xCBF2_9CE4_8422_2325u64;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
        }
    };
    for d in DISTS {
        let w = sample(d, 7);
        for codec in [Codec::Lloyd, Codec::LloydRows] {
            let a = run(codec, &w);
            same(&a, &run(codec, &w), &format!("{d:?} {codec}"));
            for v in a.quantizer.lut() {
                eat(&v.to_le_bytes());
            }
            for p in a.quantizer.params() {
                eat(&p.to_le_bytes());
            }
            eat(&a.codes);
            eat(&a.signs);
        }
    }
    println!("fingerprint {h:#018x}");
    assert_eq!(h, PINNED_FINGERPRINT, "fingerprint {h:#018x}");
}

/// See `encoding_is_deterministic_and_pinned`.
const PINNED_FINGERPRINT: u64 = 0x17c9_28f5_f3ac_370b;

#[test]
fn few_distinct_magnitudes_are_stored_exactly() {
    let w: Vec<f32> = (0..4096)
        .map(|i| [0.5f32, -0.25, 0.0, 3.0e-5, -7.0, 1.0e-30, f32::MAX][i % 7])
        .collect();
    for codec in [Codec::Lloyd, Codec::LloydRows] {
        let shape = [64u64, 64];
        let scales = row_scales(codec, &w, &shape).unwrap();
        let rs = scales
            .as_deref()
            .map(|s| RowScales::new(s, &shape).unwrap());
        let e = encode(codec, &w, rs.as_ref()).unwrap();
        for (i, &x) in w.iter().enumerate() {
            let u = match &scales {
                Some(s) => x / s[i / 64],
                None => x,
            };
            let m = e.quantizer.lut()[usize::from(e.codes[i])];
            assert_eq!(m, u.abs(), "{codec}: element {i}");
            assert_eq!((e.signs[i / 8] >> (i % 8)) & 1 == 1, m != 0.0 && u < 0.0);
        }
        assert_eq!(e.quantizer.params()[1], 0.0);
    }
}

#[test]
fn edge_cases_give_valid_tables() {
    let tiny = f32::from_bits(1);
    let cases: Vec<Vec<f32>> = vec![
        vec![],
        vec![0.0; 40],
        vec![-0.0, 0.0],
        vec![2.5],
        vec![-3.0; 300],
        vec![tiny, f32::MAX, -f32::MAX, 1.0, -tiny],
        // More bins than levels, spread over every binade, top bin at f32::MAX.
        (0..70_000u32)
            .map(|i| f32::from_bits((i.wrapping_mul(2_654_435_761) % 0x7F7F_FFFF) + 1))
            .chain([f32::MAX])
            .collect(),
    ];
    for w in &cases {
        for codec in [Codec::Lloyd, Codec::LloydRows] {
            let shape = [w.len() as u64];
            let scales = row_scales(codec, w, &shape).unwrap();
            let rs = scales
                .as_deref()
                .map(|s| RowScales::new(s, &shape).unwrap());
            let e = encode(codec, w, rs.as_ref()).unwrap();
            let lut = e.quantizer.lut();
            assert_eq!(lut[0].to_bits(), 0);
            assert!(lut.iter().all(|v| v.is_finite() && !v.is_sign_negative()));
            assert!(lut.windows(2).all(|p| p[0] <= p[1]));
            let [p0, p1] = e.quantizer.params();
            assert!(codec.params_are_valid(p0, p1), "{codec} {p0} {p1}");
            for (i, &x) in w.iter().enumerate() {
                if x == 0.0 {
                    assert_eq!(e.codes[i], 0);
                    assert_eq!((e.signs[i / 8] >> (i % 8)) & 1, 0, "zero has sign 0");
                }
            }
            if let Some(s) = &scales {
                assert!(s.iter().all(|v| v.is_finite() && *v > 0.0));
            }
        }
    }
}

#[test]
fn row_scales_are_the_row_maxima() {
    let shape = [3u64, 4];
    let w = [
        0.5f32, -2.0, 1.0, 0.0, 0.0, -0.0, 0.0, 0.0, 1e-40, -3e-40, 0.0, 0.0,
    ];
    // Row 1 is all zeros: it takes the largest scale of the other rows (§12.4).
    assert_eq!(
        row_scales(Codec::LloydRows, &w, &shape).unwrap(),
        Some(vec![2.0, 2.0, 3e-40])
    );
    assert_eq!(
        row_scales(Codec::LloydRows, &[0.0, -0.0, 0.0, 0.0], &[2, 2]).unwrap(),
        Some(vec![1.0, 1.0]),
        "every row a row of zeros: scale 1"
    );
    for c in [Codec::Log, Codec::Linear, Codec::Lloyd] {
        assert_eq!(row_scales(c, &w, &shape).unwrap(), None);
    }
    // Rows that chunks split are merged; unseen rows are an error at the end.
    let a = RowMaxima::scan(&w[..6], 0, &shape).unwrap();
    let b = RowMaxima::scan(&w[6..], 6, &shape).unwrap();
    assert_eq!(
        b.clone().merge(a.clone()).into_scales(&shape).unwrap(),
        vec![2.0, 2.0, 3e-40]
    );
    assert!(matches!(
        a.into_scales(&shape),
        Err(EncodeError::ScaleCount {
            expected: 3,
            got: 2
        })
    ));
    let mut bad = w;
    bad[9] = f32::NAN;
    assert!(matches!(
        RowMaxima::scan(&bad[8..], 8, &shape),
        Err(EncodeError::NonFinite { index: 9, .. })
    ));
    assert!(matches!(
        row_scales(Codec::LloydRows, &bad, &shape),
        Err(EncodeError::NonFinite { index: 9, .. })
    ));
    // Empty shapes.
    assert_eq!(
        row_scales(Codec::LloydRows, &[], &[0, 3]).unwrap(),
        Some(vec![])
    );
    // A row length of 0 means no rows (§11.3).
    assert_eq!(
        row_scales(Codec::LloydRows, &[], &[2, 0]).unwrap(),
        Some(vec![])
    );
}

/// §12.4 on the smallest case that broke it: shape [2, 2], a row of zeros and a row of ±1e-10.
/// A row of zeros took scale 1.0, which set the largest scale `S`, so the other row weighed
/// `round(2^32 × (1e-10)²) = 0` and the histogram was empty: `Quantizer::new` panicked on its
/// `debug_assert!` (a release build fitted an all-zero table, and the tensor decoded to zeros).
/// Now a row of zeros takes scale `S`, the largest scale of the non-zero rows, and every row
/// weighs at least 1.
#[test]
fn lloyd_rows_fits_a_tiny_row_beside_a_zero_row() {
    let shape = [2u64, 2];
    let w = [0.0f32, 0.0, 1e-10, -1e-10];
    let scales = row_scales(Codec::LloydRows, &w, &shape).unwrap().unwrap();
    assert_eq!(scales, [1e-10, 1e-10], "a row of zeros takes S");
    let rs = RowScales::new(&scales, &shape).unwrap();
    assert_eq!(rs.weight(1e-10), 1 << 32);
    let e = encode(Codec::LloydRows, &w, Some(&rs)).unwrap();
    assert_eq!(e.quantizer.lut()[1], 1.0);
    assert_eq!(e.quantizer.lut()[255], 1.0);
    assert_eq!(e.quantizer.params(), [1.0, 0.0]);
    assert_eq!(e.codes, [0, 0, 1, 1]);
    assert_eq!(e.signs, [0b1000]);
    let bytes: Vec<u8> = scales.iter().flat_map(|x| x.to_le_bytes()).collect();
    let parts = EncodedParts {
        lut: e.quantizer.lut(),
        codes: &e.codes,
        signs: &e.signs,
        scales: Some((&bytes, 2)),
    };
    let mut decoded = [1f32; 4];
    parts.decode_f32(0, &mut decoded).unwrap();
    assert_eq!(decoded, w);

    // Scales a writer chose itself (§11.3 allows any positive ones): the largest belongs to
    // the row of zeros, and the other row is below 2^-16.5 of it. Its weight rounds to 0 and
    // is raised to 1, so the fit still sees its magnitudes.
    let own = [1.0f32, 1e-10];
    let rs = RowScales::new(&own, &shape).unwrap();
    assert_eq!((rs.weight(1.0), rs.weight(1e-10)), (1 << 32, 1));
    let st = scan(&w, 0, Some(&rs)).unwrap();
    assert_eq!(st.hist.bins().len(), 1);
    assert_eq!(st.hist.bins()[0].weight, 2);
    let q = Quantizer::new(Codec::LloydRows, &st);
    assert_eq!(q.lut()[1], 1.0);
    let (mut codes, mut signs) = ([0u8; 4], [0u8; 1]);
    q.encode(&w, 0, Some(&rs), &mut codes, &mut signs).unwrap();
    assert_eq!((codes, signs), ([0, 0, 1, 1], [0b1000]));
    // A weight that does not round to 0 is unchanged: 2^-16 of `S` weighs 2^32 × 2^-32 = 1,
    // 2^-8 weighs 2^16.
    let own = [1.0f32, 2f32.powi(-8)];
    let rs = RowScales::new(&own, &shape).unwrap();
    assert_eq!(rs.weight(2f32.powi(-16)), 1);
    assert_eq!(rs.weight(2f32.powi(-8)), 1 << 16);
}

/// A chunk misaligned, with buffers of the wrong length, or reaching past the rows of its
/// scales (or, for the row maxima, past the tensor) is refused as `BadChunk` by every function
/// that takes one, never a panic.
#[test]
fn bad_chunks_are_refused() {
    let shape = [2u64, 8];
    let scales = [1.0f32, 2.0];
    let rs = RowScales::new(&scales, &shape).unwrap();
    let values = [0.5f32; 16];
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let q = encode(Codec::LloydRows, &values, Some(&rs))
        .unwrap()
        .quantizer;
    let bad = |r: Result<_, EncodeError>, first: u64, what: &str| {
        assert!(
            matches!(r, Err(EncodeError::BadChunk { first: f }) if f == first),
            "{what}"
        );
    };
    let (mut codes, mut signs) = ([0u8; 16], [0u8; 2]);
    // Past the rows: 8 values from element 16 of a 16-element tensor; 16 from element 8.
    bad(scan(&values[..8], 16, Some(&rs)).map(drop), 16, "scan");
    bad(
        scan_bytes(Codec::LloydRows, Dtype::F32, &bytes, 8, Some(&rs)).map(drop),
        8,
        "scan_bytes",
    );
    bad(
        q.encode(&values, 8, Some(&rs), &mut codes, &mut signs),
        8,
        "encode",
    );
    bad(
        q.encode_bytes(Dtype::F32, &bytes, 8, Some(&rs), &mut codes, &mut signs),
        8,
        "encode_bytes",
    );
    bad(
        q.encode(&values, u64::MAX - 7, Some(&rs), &mut codes, &mut signs),
        u64::MAX - 7,
        "encode, overflowing",
    );
    // Misaligned, and buffers of the wrong length.
    bad(
        q.encode(&values[..8], 4, Some(&rs), &mut codes[..8], &mut signs[..1]),
        4,
        "encode, misaligned",
    );
    bad(
        q.encode(&values, 0, Some(&rs), &mut codes[..15], &mut signs),
        0,
        "encode, short codes",
    );
    bad(
        q.encode_bytes(Dtype::F32, &bytes[..7], 0, None, &mut codes, &mut signs),
        0,
        "encode_bytes, not whole elements",
    );
    bad(
        scan_bytes(Codec::Log, Dtype::I32, &bytes, 0, None).map(drop),
        0,
        "scan_bytes, a dtype that cannot be encoded",
    );
    // The row maxima (the pass before the scales exist): past the tensor's last element, and
    // at a position whose end overflows.
    bad(
        RowMaxima::scan(&values[..8], 16, &shape).map(drop),
        16,
        "RowMaxima::scan",
    );
    bad(
        RowMaxima::scan_bytes(Dtype::F32, &bytes, 8, &shape).map(drop),
        8,
        "RowMaxima::scan_bytes",
    );
    bad(
        RowMaxima::scan(&values, u64::MAX - 3, &shape).map(drop),
        u64::MAX - 3,
        "RowMaxima::scan, overflowing",
    );
    bad(
        RowMaxima::scan_bytes(Dtype::F32, &bytes[..32], u64::MAX - 3, &shape).map(drop),
        u64::MAX - 3,
        "RowMaxima::scan_bytes, overflowing",
    );
    // Within the rows, the same calls succeed.
    assert!(scan(&values[..8], 8, Some(&rs)).is_ok());
    assert!(RowMaxima::scan(&values[..8], 8, &shape).is_ok());
    assert!(RowMaxima::scan_bytes(Dtype::F32, &bytes[..32], 8, &shape).is_ok());
    assert!(q
        .encode(&values, 0, Some(&rs), &mut codes, &mut signs)
        .is_ok());
}

#[test]
fn the_registry_is_consistent() {
    for (k, &c) in Codec::ALL.iter().enumerate() {
        assert_eq!(c.id(), k as u16 + 1);
        assert_eq!(Codec::from_id(c.id()), Some(c));
        assert_eq!(c.name().parse::<Codec>(), Ok(c));
        assert_eq!(c.uses_row_scales(), c == Codec::LloydRows);
    }
    assert_eq!(Codec::from_id(0), None);
    assert_eq!(Codec::from_id(5), None);
    let err = "lloyd_rows".parse::<Codec>().unwrap_err();
    assert!(err.contains("lloyd-rows"), "{err}");
    for c in [Codec::Lloyd, Codec::LloydRows] {
        assert!(c.params_are_valid(0.0, 0.0));
        assert!(c.params_are_valid(1.0, 1e-5));
        assert!(!c.params_are_valid(-1.0, 0.0));
        assert!(!c.params_are_valid(1.0, -1e-5));
        assert!(!c.params_are_valid(f64::NAN, 0.0));
        assert!(!c.params_are_valid(1.0, f64::INFINITY));
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random values (heavy-tailed, with zeros) split at random places give what the whole
    /// tensor gives, with and without row scales.
    #[test]
    fn random_chunkings_agree(
        seed in any::<u64>(),
        rows in 1usize..40,
        cols in 1usize..70,
        cuts in prop::collection::vec(1usize..64, 1..6),
    ) {
        let mut r = Rng(seed);
        let w: Vec<f32> = (0..rows * cols)
            .map(|_| match r.next() % 10 {
                0 => 0.0,
                1 => (r.gaussian() * 1e3) as f32,
                _ => (r.gaussian() * (r.unit() * 8.0 - 4.0).exp()) as f32,
            })
            .collect();
        let shape = [rows as u64, cols as u64];
        let sizes: Vec<usize> = cuts.iter().map(|c| 8 * c).collect();
        for codec in [Codec::Lloyd, Codec::LloydRows] {
            let scales = row_scales(codec, &w, &shape).unwrap();
            let rs = scales.as_deref().map(|s| RowScales::new(s, &shape).unwrap());
            let whole = encode(codec, &w, rs.as_ref()).unwrap();
            let mut bounds = vec![0];
            let mut a = 0;
            for &s in sizes.iter().cycle() {
                if a >= w.len() { break; }
                a = (a + s).min(w.len());
                bounds.push(a);
            }
            let scales2 = codec.uses_row_scales().then(|| {
                bounds.windows(2)
                    .map(|p| RowMaxima::scan(&w[p[0]..p[1]], p[0] as u64, &shape).unwrap())
                    .fold(RowMaxima::EMPTY, RowMaxima::merge)
                    .into_scales(&shape)
                    .unwrap()
            });
            prop_assert_eq!(&scales, &scales2);
            let stats = bounds.windows(2)
                .map(|p| scan(&w[p[0]..p[1]], p[0] as u64, rs.as_ref()).unwrap())
                .fold(Stats::EMPTY, Stats::merge);
            prop_assert_eq!(&stats, &scan(&w, 0, rs.as_ref()).unwrap());
            let q = Quantizer::new(codec, &stats);
            prop_assert_eq!(q.lut(), whole.quantizer.lut());
            let mut codes = vec![0u8; w.len()];
            let mut signs = vec![0u8; w.len().div_ceil(8)];
            for p in bounds.windows(2) {
                q.encode(&w[p[0]..p[1]], p[0] as u64, rs.as_ref(),
                    &mut codes[p[0]..p[1]], &mut signs[p[0] / 8..p[1].div_ceil(8)]).unwrap();
            }
            prop_assert_eq!(&codes, &whole.codes);
            prop_assert_eq!(&signs, &whole.signs);
        }
    }
}

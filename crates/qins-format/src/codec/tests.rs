//! Tests of the codecs through the one-call [`encode`](super::encode).

use super::*;
use crate::Dtype;

#[test]
fn log_codes_follow_the_formula() {
    let v = [0.5f32, -0.25, 0.0, 0.001, -0.5, 1e-3];
    let e = encode(Codec::Log, &v, None).unwrap();
    let x = 255.0
        - 254.0 * (0.25f64.ln() - f64::from(0.001f32).ln())
            / (0.5f64.ln() - f64::from(0.001f32).ln());
    assert_eq!(e.codes, [1, x.round_ties_even() as u8, 0, 255, 1, 255]);
    assert_eq!(e.signs, [0b0001_0010]);
    let [lo, hi] = e.quantizer.params();
    assert_eq!(lo, f64::from(0.001f32).ln());
    assert_eq!(hi, 0.5f64.ln());
    assert_eq!(e.quantizer.lut()[0], 0.0);
    assert_eq!(e.quantizer.lut()[1], 0.5);
    assert_eq!(e.quantizer.lut()[255], 0.001);
}

#[test]
fn degenerate_and_empty_tensors() {
    let e = encode(Codec::Log, &[-2.0, 2.0, 0.0], None).unwrap();
    assert_eq!(e.codes, [1, 1, 0]);
    assert_eq!(e.quantizer.lut()[1], 2.0);
    assert_eq!(e.quantizer.lut()[255], 2.0);
    let z = encode(Codec::Log, &[0.0, -0.0], None).unwrap();
    assert_eq!(z.codes, [0, 0]);
    assert_eq!(z.signs, [0]);
    assert_eq!(z.quantizer.params(), [0.0, 0.0]);
    let l = encode(Codec::Linear, &[0.0; 3], None).unwrap();
    assert_eq!(l.quantizer.lut(), &[0.0; 256]);
    let n = encode(Codec::Log, &[], None).unwrap();
    assert!(n.codes.is_empty() && n.signs.is_empty());
}

#[test]
fn linear_codes_follow_the_formula() {
    let e = encode(Codec::Linear, &[1.0, -0.5, 0.0, 0.001], None).unwrap();
    assert_eq!(e.codes, [255, 128, 0, 1]);
    assert_eq!(e.quantizer.lut()[255], 1.0);
    assert_eq!(e.quantizer.lut()[1], 0.0);
    assert_eq!(e.quantizer.params(), [1.0, 0.0]);
}

#[test]
fn non_finite_values_are_refused_with_their_index() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let err = encode(Codec::Log, &[1.0, 2.0, bad], None).unwrap_err();
        assert!(
            matches!(err, EncodeError::NonFinite { index: 2, .. }),
            "{err}"
        );
    }
}

#[test]
fn scaling_that_overflows_is_refused() {
    let shape = [1u64, 2];
    let s = RowScales::new(&[1e-30], &shape).unwrap();
    let err = encode(Codec::Log, &[1.0, f32::MAX], Some(&s)).unwrap_err();
    assert!(
        matches!(err, EncodeError::ScaleOverflow { index: 1, .. }),
        "{err}"
    );
}

#[test]
fn row_scales_are_checked_and_applied() {
    let shape = [2u64, 2];
    assert!(matches!(
        RowScales::new(&[1.0], &shape),
        Err(EncodeError::ScaleCount {
            expected: 2,
            got: 1
        })
    ));
    assert!(matches!(
        RowScales::new(&[1.0, 0.0], &shape),
        Err(EncodeError::BadScale { row: 1, .. })
    ));
    let s = RowScales::new(&[1.0, 10.0], &shape).unwrap();
    let e = encode(Codec::Log, &[1.0, 0.5, 10.0, -5.0], Some(&s)).unwrap();
    assert_eq!(e.codes[0], e.codes[2]);
    assert_eq!(e.codes[1], e.codes[3]);
    assert_eq!(e.signs, [0b1000]);
}

#[test]
fn chunked_encoding_equals_whole() {
    let v: Vec<f32> = (0..1000)
        .map(|i| ((i * 7919) % 1000) as f32 - 500.0)
        .collect();
    let whole = encode(Codec::Log, &v, None).unwrap();
    let st = v
        .chunks(256)
        .enumerate()
        .map(|(k, c)| scan(c, k as u64 * 256, None).unwrap())
        .fold(Stats::EMPTY, Stats::merge);
    let q = Quantizer::new(Codec::Log, &st);
    let mut codes = vec![0; v.len()];
    let mut signs = vec![0; v.len().div_ceil(8)];
    for (k, c) in v.chunks(256).enumerate() {
        let a = k * 256;
        q.encode(
            c,
            a as u64,
            None,
            &mut codes[a..a + c.len()],
            &mut signs[a / 8..(a + c.len()).div_ceil(8)],
        )
        .unwrap();
    }
    assert_eq!(codes, whole.codes);
    assert_eq!(signs, whole.signs);
    assert!(matches!(
        q.encode(&v[..3], 3, None, &mut codes[..3], &mut signs[..1]),
        Err(EncodeError::BadChunk { first: 3 })
    ));
}

/// BF16 or F16 bytes of a `rows × row_len` tensor: a Gaussian-like spread, rows scaled by one of
/// a few factors (so that rows share scales), some zeros, rare outliers, and a row of zeros.
fn half_tensor(dtype: Dtype, rows: usize, row_len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::with_capacity(2 * rows * row_len);
    for r in 0..rows {
        let factor = [0.02f32, 0.05, 0.013, 0.3][(next() % 4) as usize];
        for _ in 0..row_len {
            let r1 = next();
            let mut v = ((r1 % 20_001) as f32 / 10_000.0 - 1.0) * factor;
            v *= ((r1 >> 20) % 1000) as f32 / 1000.0;
            if r1 >> 40 & 31 == 0 {
                v = 0.0;
            }
            if r1 >> 45 & 4095 == 0 {
                v *= 40.0;
            }
            if r == 3 {
                v = 0.0;
            }
            let bits = match dtype {
                Dtype::BF16 => (v.to_bits() >> 16) as u16,
                _ => half::f16::from_f32(v).to_bits(),
            };
            out.extend(bits.to_le_bytes());
        }
    }
    out
}

/// The grouped statistics of 16-bit rows equal the element-by-element ones, whatever the
/// rows' order and however they are split (merged back), and are refused where the
/// element-ordered pass must decide.
#[test]
fn row_groups_give_the_statistics_of_scan_bytes() {
    for dtype in [Dtype::BF16, Dtype::F16] {
        for (rows, row_len, seed) in [
            (40usize, 96usize, 1u64),
            (7, 1000, 2),
            (64, 8, 3),
            (1, 5, 4),
        ] {
            let bytes = half_tensor(dtype, rows, row_len, seed);
            let shape = [rows as u64, row_len as u64];
            let scales = RowMaxima::scan_bytes(dtype, &bytes, 0, &shape)
                .unwrap()
                .into_scales(&shape)
                .unwrap();
            let rs = RowScales::new(&scales, &shape).unwrap();
            let want = scan_bytes(Codec::LloydRows, dtype, &bytes, 0, Some(&rs)).unwrap();
            assert!(!want.hist.bins().is_empty());
            let mut by_scale: Vec<u64> = (0..rows as u64).collect();
            by_scale.sort_by_key(|&r| scales[r as usize].to_bits());
            let reversed: Vec<u64> = (0..rows as u64).rev().collect();
            for order in [by_scale, reversed] {
                for parts in [1, 2, 3] {
                    let got = order
                        .chunks(rows.div_ceil(parts))
                        .map(|p| scan_row_groups(Codec::LloydRows, dtype, &bytes, &rs, p).unwrap())
                        .fold(Stats::EMPTY, Stats::merge);
                    assert_eq!(got, want, "{dtype:?} {rows}x{row_len} in {parts}");
                }
            }
            // Refused: no histogram to gather, not a 16-bit dtype, not the tensor's bytes, a
            // row out of range.
            let all: Vec<u64> = (0..rows as u64).collect();
            assert_eq!(scan_row_groups(Codec::Log, dtype, &bytes, &rs, &all), None);
            assert_eq!(
                scan_row_groups(Codec::LloydRows, Dtype::F32, &bytes, &rs, &all),
                None
            );
            let short = &bytes[..bytes.len() - 2];
            assert_eq!(
                scan_row_groups(Codec::LloydRows, dtype, short, &rs, &all),
                None
            );
            assert_eq!(
                scan_row_groups(Codec::LloydRows, dtype, &bytes, &rs, &[rows as u64]),
                None
            );
        }
    }
}

/// A value that is not finite, or one that underflows to 0 when scaled, leaves the statistics
/// to the element-ordered pass, which reports the first fault or scales the values one by one.
#[test]
fn row_groups_leave_faults_and_underflow_to_scan_bytes() {
    let (rows, row_len) = (4usize, 16usize);
    let shape = [rows as u64, row_len as u64];
    let bf16 = |v: f32| ((v.to_bits() >> 16) as u16).to_le_bytes();
    let tensor = |special: f32| {
        let mut b: Vec<u8> = (0..rows * row_len)
            .flat_map(|i| bf16(0.01 * (i % 7) as f32 + 0.001))
            .collect();
        b[2 * 21..2 * 22].copy_from_slice(&bf16(special));
        b
    };
    // A NaN: its row's scale is NaN, refused by the scales; given finite scales instead, the
    // grouped pass refuses.
    let nan = tensor(f32::NAN);
    let ones = vec![1.0f32; rows];
    let rs = RowScales::new(&ones, &shape).unwrap();
    let all: Vec<u64> = (0..rows as u64).collect();
    assert_eq!(
        scan_row_groups(Codec::LloydRows, Dtype::BF16, &nan, &rs, &all),
        None
    );
    assert!(scan_bytes(Codec::LloydRows, Dtype::BF16, &nan, 0, Some(&rs)).is_err());
    // A tiny value in a row of a huge scale: it scales to 0.
    let tiny = tensor(1e-38);
    let huge = vec![1e30f32; rows];
    let rs = RowScales::new(&huge, &shape).unwrap();
    assert_eq!(
        scan_row_groups(Codec::LloydRows, Dtype::BF16, &tiny, &rs, &all),
        None
    );
    assert!(scan_bytes(Codec::LloydRows, Dtype::BF16, &tiny, 0, Some(&rs)).is_ok());
}

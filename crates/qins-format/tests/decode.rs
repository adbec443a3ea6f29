//! `EncodedParts` decoding (§11.4) with row scales over many rows, against a straightforward
//! element-by-element reference: every range, starts on and off sign-byte boundaries, rows
//! shorter and longer than a sign byte, and ranges longer than the half-precision decoders'
//! internal blocks.

use half::{bf16, f16};
use qins_format::decode::{EncodedParts, RangeError};

/// A deterministic table, codes and sign bits for `n` elements (every code 0..=255 appears; the
/// sign of a code-0 element is 0, as §11.2 requires of writers).
fn parts_data(n: usize, seed: u64) -> ([f32; 256], Vec<u8>, Vec<u8>) {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut lut = [0f32; 256];
    for (c, v) in lut.iter_mut().enumerate().skip(1) {
        *v = (-((c as f32) / 24.0)).exp() * 3.0;
    }
    let codes: Vec<u8> = (0..n)
        .map(|i| if i < 256 { i as u8 } else { next() as u8 })
        .collect();
    let mut signs = vec![0u8; n.div_ceil(8)];
    for (i, &c) in codes.iter().enumerate() {
        if c != 0 && next() & 1 == 1 {
            signs[i / 8] |= 1 << (i % 8);
        }
    }
    (lut, codes, signs)
}

/// §11.4 for element `i`: `±LUT[code]`, times its row's scale, one f32 multiplication.
fn reference(
    lut: &[f32; 256],
    codes: &[u8],
    signs: &[u8],
    scales: &[f32],
    row_len: usize,
    i: usize,
) -> f32 {
    let m = lut[usize::from(codes[i])];
    let v = if (signs[i / 8] >> (i % 8)) & 1 == 1 {
        -m
    } else {
        m
    };
    v * scales[i / row_len]
}

fn scale_bytes(scales: &[f32]) -> Vec<u8> {
    scales.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// Scales that differ per row, including ones that overflow or underflow the product.
fn scales_for(rows: usize) -> Vec<f32> {
    (0..rows)
        .map(|r| match r % 5 {
            0 => 0.5 + r as f32,
            1 => 1.0 / (3.0 + r as f32),
            2 => 1e38,
            3 => 1e-40,
            _ => 7.25,
        })
        .collect()
}

#[test]
fn every_range_of_a_multi_row_tensor_decodes_to_the_rule() {
    // Row lengths below, at and above a sign byte, and shapes whose last row ends mid-byte.
    for (rows, row_len) in [(6usize, 7usize), (11, 3), (4, 8), (3, 13), (9, 1), (2, 20)] {
        let n = rows * row_len;
        let (lut, codes, signs) = parts_data(n, (rows * 31 + row_len) as u64);
        let scales = scales_for(rows);
        let sb = scale_bytes(&scales);
        let p = EncodedParts {
            lut: &lut,
            codes: &codes,
            signs: &signs,
            scales: Some((&sb, row_len as u64)),
        };
        let want: Vec<f32> = (0..n)
            .map(|i| reference(&lut, &codes, &signs, &scales, row_len, i))
            .collect();
        for a in 0..=n {
            for b in a..=n {
                let mut out = vec![f32::NAN; b - a];
                p.decode_f32(a as u64, &mut out).unwrap();
                for (k, o) in out.iter().enumerate() {
                    assert_eq!(
                        o.to_bits(),
                        want[a + k].to_bits(),
                        "rows {rows} x {row_len}, range {a}..{b}, element {}",
                        a + k
                    );
                }
                let mut bf = vec![bf16::NAN; b - a];
                let mut h = vec![f16::NAN; b - a];
                p.decode_bf16(a as u64, &mut bf).unwrap();
                p.decode_f16(a as u64, &mut h).unwrap();
                for k in 0..b - a {
                    assert_eq!(bf[k].to_bits(), bf16::from_f32(want[a + k]).to_bits());
                    assert_eq!(h[k].to_bits(), f16::from_f32(want[a + k]).to_bits());
                }
            }
        }
        // One past the end, and scales too few for the range asked for.
        let mut one = [0f32];
        assert_eq!(
            p.decode_f32(n as u64, &mut one),
            Err(RangeError {
                first: n as u64,
                end: n as u64 + 1
            })
        );
        let short = EncodedParts {
            scales: Some((&sb[..sb.len() - 4], row_len as u64)),
            ..p
        };
        let mut last_row = vec![0f32; row_len];
        assert!(short
            .decode_f32((n - row_len) as u64, &mut last_row)
            .is_err());
        let mut before = vec![0f32; n - row_len];
        short.decode_f32(0, &mut before).unwrap();
        assert_eq!(before.as_slice(), &want[..n - row_len]);
    }
}

#[test]
fn long_ranges_with_scales_cross_blocks_and_rows() {
    // 3 rows of 2999: longer than the 4096-element blocks of the half-precision paths.
    let (rows, row_len) = (3usize, 2999usize);
    let n = rows * row_len;
    let (lut, codes, signs) = parts_data(n, 7);
    let scales = [0.75f32, 3.0e-3, 1.0e4];
    let sb = scale_bytes(&scales);
    let p = EncodedParts {
        lut: &lut,
        codes: &codes,
        signs: &signs,
        scales: Some((&sb, row_len as u64)),
    };
    let want: Vec<f32> = (0..n)
        .map(|i| reference(&lut, &codes, &signs, &scales, row_len, i))
        .collect();
    for (a, b) in [
        (0, n),
        (5, n),
        (3, n - 3),
        (2998, 6001),
        (4093, 4101),
        (8191, n),
    ] {
        let mut f = vec![0f32; b - a];
        p.decode_f32(a as u64, &mut f).unwrap();
        let mut bf = vec![bf16::ZERO; b - a];
        p.decode_bf16(a as u64, &mut bf).unwrap();
        let mut h = vec![f16::ZERO; b - a];
        p.decode_f16(a as u64, &mut h).unwrap();
        for k in 0..b - a {
            let w = want[a + k];
            assert_eq!(f[k].to_bits(), w.to_bits(), "f32 {a}..{b} at {}", a + k);
            assert_eq!(
                bf[k].to_bits(),
                bf16::from_f32(w).to_bits(),
                "bf16 at {}",
                a + k
            );
            assert_eq!(
                h[k].to_bits(),
                f16::from_f32(w).to_bits(),
                "f16 at {}",
                a + k
            );
        }
    }
}

#[test]
fn zero_row_length_and_empty_ranges() {
    let lut = [0f32; 256];
    // An empty tensor of shape [3, 0] with row scales: no rows, nothing to decode.
    let p = EncodedParts {
        lut: &lut,
        codes: &[],
        signs: &[],
        scales: Some((&[], 0)),
    };
    p.decode_f32(0, &mut []).unwrap();
    p.decode_bf16(0, &mut []).unwrap();
    assert!(p.decode_f32(0, &mut [0.0]).is_err());
    // An empty range at the end is fine; one that starts past the end is not.
    let (lut, codes, signs) = parts_data(10, 3);
    let p = EncodedParts {
        lut: &lut,
        codes: &codes,
        signs: &signs,
        scales: None,
    };
    p.decode_f32(10, &mut []).unwrap();
    assert!(p.decode_f32(11, &mut []).is_err());
    assert!(p.decode_f32(u64::MAX, &mut [0.0; 2]).is_err());
}

//! Tests of the codecs through the one-call [`encode`](super::encode).

use super::*;

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

//! The reader's decoding API that the exporter relies on: every tensor, whole or by rows, into
//! the caller's f32, bf16 or f16 buffers, equal to the decode rule rounded once; raw tensors as
//! their bytes and dtype.

mod common;

use common::*;
use half::{bf16, f16};
use qins_format::{Codec, Dtype, Storage};
use qins_read::DecodeError;
use qins_write::{Plan, TensorSpec, Writer};

#[test]
fn rows_and_wholes_decode_to_the_rule_in_every_output_type() {
    let dir = scratch();
    let path = p(&dir, "m.qins");
    let (rows, cols) = (7usize, 13usize);
    let mut plan = Plan::new();
    plan.alignment = 64;
    for (name, row_scales) in [("plain", false), ("scaled", true)] {
        plan.tensors.push(TensorSpec::new(
            name,
            Dtype::F32,
            vec![rows as u64, cols as u64],
            Storage::Encoded {
                codec: Codec::Log,
                row_scales,
            },
        ));
    }
    plan.tensors
        .push(TensorSpec::new("ids", Dtype::I64, vec![2], Storage::Raw));
    let mut w = Writer::create(&path, plan, true).unwrap();
    let v: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) * 1e-3)
        .collect();
    w.encode_tensor(&v, None).unwrap();
    let scales: Vec<f32> = (0..rows).map(|r| 0.5 + r as f32).collect();
    w.encode_tensor(&v, Some(&scales)).unwrap();
    w.write_raw(&[1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0])
        .unwrap();
    w.finish().unwrap();

    let file = qins_read::open(&path).unwrap();
    let q = file.parse().unwrap();
    assert_eq!(q.tensors().count(), 3);
    for t in q.tensors().filter(|t| t.lut().is_some()) {
        let rule = reference_f32(&t);
        let mut whole = vec![0f32; rows * cols];
        t.decode_f32(0, &mut whole).unwrap();
        assert!(whole
            .iter()
            .zip(&rule)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        for first in 0..rows {
            for count in 0..=rows - first {
                let range = first * cols..(first + count) * cols;
                let mut f = vec![0f32; count * cols];
                let mut b = vec![bf16::ZERO; count * cols];
                let mut h = vec![f16::ZERO; count * cols];
                t.decode_rows_f32(first as u64, &mut f).unwrap();
                t.decode_rows_bf16(first as u64, &mut b).unwrap();
                t.decode_rows_f16(first as u64, &mut h).unwrap();
                for (k, &r) in rule[range].iter().enumerate() {
                    assert_eq!(f[k].to_bits(), r.to_bits());
                    assert_eq!(b[k], bf16::from_f32(r));
                    assert_eq!(h[k], f16::from_f32(r));
                }
            }
        }
        // Not whole rows, or past the end: refused, nothing panics.
        let mut b = vec![bf16::ZERO; cols + 1];
        assert!(matches!(
            t.decode_rows_bf16(0, &mut b),
            Err(DecodeError::OutOfRange { .. })
        ));
        let mut h = vec![f16::ZERO; 2 * cols];
        assert!(matches!(
            t.decode_rows_f16(rows as u64 - 1, &mut h),
            Err(DecodeError::OutOfRange { .. })
        ));
        assert!(matches!(
            t.decode_rows_f16(u64::MAX, &mut h),
            Err(DecodeError::OutOfRange { .. })
        ));
    }
    let ids = q.tensor("ids").unwrap();
    assert_eq!(ids.dtype(), Dtype::I64);
    assert_eq!(ids.raw_bytes().unwrap().len(), 16);
    let mut f = [0f32; 2];
    assert!(matches!(
        ids.decode_f32(0, &mut f),
        Err(DecodeError::NotEncoded { .. })
    ));
}

//! A chunk of a tensor given as the little-endian bytes of an encodable dtype (F32, BF16, F16),
//! viewed as its elements without copying.

use zerocopy::FromBytes;

use super::fastcode::Word;
use super::rows::{for_each_row_run, RowScales};
use crate::dtype::{bf16_to_f32, f16_to_f32};
use crate::Dtype;

/// A chunk given as the little-endian bytes of an encodable dtype, viewed as its elements.
#[derive(Clone, Copy)]
pub(super) enum Words<'a> {
    F32(&'a [[u8; 4]]),
    Bf16(&'a [[u8; 2]]),
    F16(&'a [[u8; 2]]),
}

/// The largest magnitude pattern (sign bit cleared) of floats given as their bit patterns.
#[inline(always)]
pub(super) fn max_magnitude<T: Copy, W: Word>(words: &[T], word: impl Fn(T) -> W) -> W {
    words
        .iter()
        .fold(W::ZERO, |m, &x| m.max(word(x).magnitude()))
}

impl<'a> Words<'a> {
    /// `bytes` as elements of `dtype`; `None` for a dtype that cannot be encoded or a
    /// length that is not a whole number of elements.
    pub(super) fn new(dtype: Dtype, bytes: &'a [u8]) -> Option<Words<'a>> {
        match dtype {
            Dtype::F32 => <[[u8; 4]]>::ref_from_bytes(bytes).ok().map(Words::F32),
            Dtype::BF16 => <[[u8; 2]]>::ref_from_bytes(bytes).ok().map(Words::Bf16),
            Dtype::F16 => <[[u8; 2]]>::ref_from_bytes(bytes).ok().map(Words::F16),
            _ => None,
        }
    }

    pub(super) fn len(self) -> usize {
        match self {
            Words::F32(w) => w.len(),
            Words::Bf16(w) | Words::F16(w) => w.len(),
        }
    }

    /// Elements `at..at + out.len()` as f32, into `out`.
    pub(super) fn convert(self, at: usize, out: &mut [f32]) {
        let end = at + out.len();
        match self {
            Words::F32(w) => {
                for (o, x) in out.iter_mut().zip(&w[at..end]) {
                    *o = f32::from_le_bytes(*x);
                }
            }
            Words::Bf16(w) => {
                for (o, x) in out.iter_mut().zip(&w[at..end]) {
                    *o = bf16_to_f32(u16::from_le_bytes(*x));
                }
            }
            Words::F16(w) => {
                for (o, x) in out.iter_mut().zip(&w[at..end]) {
                    *o = f16_to_f32(u16::from_le_bytes(*x));
                }
            }
        }
    }

    /// Every element divided by its row's scale, the chunk's first element being element
    /// `first` of the tensor.
    pub(super) fn scaled(self, first: u64, rs: &RowScales<'_>) -> Vec<f32> {
        // Extended row by row rather than zeroed and overwritten: the chunk's buffer is large
        // (4 MiB for a chunk of 1 Mi elements), and zeroing it cost 2% of a conversion.
        fn run<T: Copy>(
            w: &[T],
            first: u64,
            rs: &RowScales<'_>,
            cvt: impl Fn(T) -> f32,
        ) -> Vec<f32> {
            let mut u = Vec::with_capacity(w.len());
            let _ = for_each_row_run(w, first, rs, |run, s, _| {
                u.extend(run.iter().map(|&x| cvt(x) / s));
                Ok::<(), ()>(())
            });
            u
        }
        match self {
            Words::F32(w) => run(w, first, rs, f32::from_le_bytes),
            Words::Bf16(w) => run(w, first, rs, |x| bf16_to_f32(u16::from_le_bytes(x))),
            Words::F16(w) => run(w, first, rs, |x| f16_to_f32(u16::from_le_bytes(x))),
        }
    }

    /// Elements `at..at + out.len()` divided by their rows' scales, into `out`; element `at` is
    /// element `first` of the tensor.
    pub(super) fn scaled_into(self, at: usize, first: u64, rs: &RowScales<'_>, out: &mut [f32]) {
        fn run<T: Copy>(
            w: &[T],
            first: u64,
            rs: &RowScales<'_>,
            out: &mut [f32],
            cvt: impl Fn(T) -> f32,
        ) {
            let _ = for_each_row_run(w, first, rs, |run, s, i| {
                for (o, &x) in out[i..i + run.len()].iter_mut().zip(run) {
                    *o = cvt(x) / s;
                }
                Ok::<(), ()>(())
            });
        }
        let end = at + out.len();
        match self {
            Words::F32(w) => run(&w[at..end], first, rs, out, f32::from_le_bytes),
            Words::Bf16(w) => run(&w[at..end], first, rs, out, |x| {
                bf16_to_f32(u16::from_le_bytes(x))
            }),
            Words::F16(w) => run(&w[at..end], first, rs, out, |x| {
                f16_to_f32(u16::from_le_bytes(x))
            }),
        }
    }

    /// Every element as f32.
    pub(super) fn to_vec(self) -> Vec<f32> {
        match self {
            Words::F32(w) => w.iter().map(|x| f32::from_le_bytes(*x)).collect(),
            Words::Bf16(w) => w
                .iter()
                .map(|x| bf16_to_f32(u16::from_le_bytes(*x)))
                .collect(),
            Words::F16(w) => w
                .iter()
                .map(|x| f16_to_f32(u16::from_le_bytes(*x)))
                .collect(),
        }
    }

    /// Element `i` as f32.
    pub(super) fn value(self, i: usize) -> f32 {
        match self {
            Words::F32(w) => f32::from_le_bytes(w[i]),
            Words::Bf16(w) => bf16_to_f32(u16::from_le_bytes(w[i])),
            Words::F16(w) => f16_to_f32(u16::from_le_bytes(w[i])),
        }
    }
}

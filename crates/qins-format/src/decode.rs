//! The decode rule (§11.4): `w = ±LUT[code]`, times the row scale if the tensor has one.
//!
//! The kernels decode any run of elements `[first, first + out.len())` of a tensor, so a
//! runtime can decode one row range at a time into its own buffer. Decoding is a table lookup
//! and a sign: the f32 table's bits are OR-ed with the sign bit, so no branch depends on data.

use half::{bf16, f16};

/// Why a decode call cannot run: its buffers do not fit the range asked for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("decode range {first}..{end} does not fit the tensor's sections")]
pub struct RangeError {
    /// First element asked for.
    pub first: u64,
    /// One past the last element asked for.
    pub end: u64,
}

/// The encoded sections of one tensor, borrowed from a file.
#[derive(Clone, Copy, Debug)]
pub struct EncodedParts<'a> {
    /// The table (§10).
    pub lut: &'a [f32; 256],
    /// One code per element (§11.1).
    pub codes: &'a [u8],
    /// Packed sign bits (§11.2).
    pub signs: &'a [u8],
    /// Row scales (little-endian f32 bytes, as in the file) and the row length, if the tensor
    /// has them (§11.3).
    pub scales: Option<(&'a [u8], u64)>,
}

impl EncodedParts<'_> {
    fn check(&self, first: u64, len: usize) -> Result<(usize, usize), RangeError> {
        let end = first.checked_add(len as u64);
        let err = RangeError {
            first,
            end: end.unwrap_or(u64::MAX),
        };
        let end = end.ok_or(err.clone())?;
        if end > self.codes.len() as u64 || end.div_ceil(8) > self.signs.len() as u64 {
            return Err(err);
        }
        if let Some((scales, row_len)) = self.scales {
            if len > 0 && (row_len == 0 || (end - 1) / row_len >= (scales.len() / 4) as u64) {
                return Err(err);
            }
        }
        Ok((first as usize, end as usize))
    }

    /// Decodes elements `first..first + out.len()` into `out` as f32, exactly (§11.4).
    pub fn decode_f32(&self, first: u64, out: &mut [f32]) -> Result<(), RangeError> {
        let (a, b) = self.check(first, out.len())?;
        let bits: [u32; 256] = self.lut.map(f32::to_bits);
        let codes = &self.codes[a..b];
        if a % 8 == 0 {
            // Whole sign bytes: eight elements per byte.
            let signs = &self.signs[a / 8..];
            for ((o8, c8), &s) in out.chunks_mut(8).zip(codes.chunks(8)).zip(signs) {
                for (j, (o, &c)) in o8.iter_mut().zip(c8).enumerate() {
                    let neg = u32::from((s >> j) & 1) << 31;
                    *o = f32::from_bits(bits[usize::from(c)] | neg);
                }
            }
        } else {
            for (k, (o, &c)) in out.iter_mut().zip(codes).enumerate() {
                let i = a + k;
                let neg = u32::from((self.signs[i / 8] >> (i % 8)) & 1) << 31;
                *o = f32::from_bits(bits[usize::from(c)] | neg);
            }
        }
        if let Some((scales, row_len)) = self.scales {
            let scale = |r: usize| {
                f32::from_le_bytes([
                    scales[4 * r],
                    scales[4 * r + 1],
                    scales[4 * r + 2],
                    scales[4 * r + 3],
                ])
            };
            let row_len = row_len as usize;
            // One row at a time: the scale is read once per row, not per element.
            let mut k = 0;
            while k < out.len() {
                let row = (a + k) / row_len;
                let stop = ((row + 1) * row_len - a).min(out.len());
                let s = scale(row);
                out[k..stop].iter_mut().for_each(|o| *o *= s);
                k = stop;
            }
        }
        Ok(())
    }

    /// Decodes into bfloat16, each f32 value rounded once to nearest even.
    pub fn decode_bf16(&self, first: u64, out: &mut [bf16]) -> Result<(), RangeError> {
        self.decode_via_f32(first, out, bf16::from_f32)
    }

    /// Decodes into float16, each f32 value rounded once to nearest even.
    pub fn decode_f16(&self, first: u64, out: &mut [f16]) -> Result<(), RangeError> {
        self.decode_via_f32(first, out, f16::from_f32)
    }

    fn decode_via_f32<T: Copy>(
        &self,
        first: u64,
        out: &mut [T],
        cvt: fn(f32) -> T,
    ) -> Result<(), RangeError> {
        self.check(first, out.len())?;
        const BLOCK: usize = 4096;
        let mut tmp = [0f32; BLOCK];
        for (k, chunk) in out.chunks_mut(BLOCK).enumerate() {
            let t = &mut tmp[..chunk.len()];
            self.decode_f32(first + (k * BLOCK) as u64, t)?;
            for (o, &v) in chunk.iter_mut().zip(t.iter()) {
                *o = cvt(v);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{encode, Codec, RowScales};

    fn reference(p: &EncodedParts<'_>, i: usize) -> f32 {
        let m = p.lut[usize::from(p.codes[i])];
        let v = if (p.signs[i / 8] >> (i % 8)) & 1 == 1 {
            -m
        } else {
            m
        };
        match p.scales {
            Some((s, l)) => {
                let r = i / l as usize;
                v * f32::from_le_bytes(s[4 * r..4 * r + 4].try_into().unwrap())
            }
            None => v,
        }
    }

    #[test]
    fn every_range_decodes_to_the_rule() {
        let v: Vec<f32> = (0..37).map(|i| (i as f32 - 18.0) * 0.37).collect();
        let shape = [37u64];
        let scales = [2.0f32];
        let scale_bytes = 2.0f32.to_le_bytes();
        let rs = RowScales::new(&scales, &shape).unwrap();
        for with_scales in [false, true] {
            let e = encode(Codec::Log, &v, with_scales.then_some(&rs)).unwrap();
            let p = EncodedParts {
                lut: e.quantizer.lut(),
                codes: &e.codes,
                signs: &e.signs,
                scales: with_scales.then_some((&scale_bytes[..], 37)),
            };
            for a in 0..37 {
                for b in a..=37 {
                    let mut out = vec![0f32; b - a];
                    p.decode_f32(a as u64, &mut out).unwrap();
                    for (k, o) in out.iter().enumerate() {
                        assert_eq!(o.to_bits(), reference(&p, a + k).to_bits());
                    }
                }
            }
            let mut bf = vec![bf16::ZERO; 37];
            p.decode_bf16(0, &mut bf).unwrap();
            let mut h = vec![f16::ZERO; 37];
            p.decode_f16(0, &mut h).unwrap();
            for i in 0..37 {
                assert_eq!(bf[i], bf16::from_f32(reference(&p, i)));
                assert_eq!(h[i], f16::from_f32(reference(&p, i)));
            }
            let mut out = [0f32; 2];
            assert_eq!(
                p.decode_f32(36, &mut out),
                Err(RangeError { first: 36, end: 38 })
            );
        }
    }
}

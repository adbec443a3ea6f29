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

/// `SIGN_MASKS_32[s][j]` has bit 31 set exactly when bit `j` of sign byte `s` is: the f32 sign
/// bits of the eight elements of one sign byte, so that a whole byte's signs are applied with
/// one table row (two vector loads) instead of eight shifts and masks.
static SIGN_MASKS_32: [[u32; 8]; 256] = {
    let mut t = [[0u32; 8]; 256];
    let mut s = 0;
    while s < 256 {
        let mut j = 0;
        while j < 8 {
            t[s][j] = (((s >> j) & 1) as u32) << 31;
            j += 1;
        }
        s += 1;
    }
    t
};

/// As [`SIGN_MASKS_32`], with bit 15: the sign bit of bfloat16 and float16.
static SIGN_MASKS_16: [[u16; 8]; 256] = {
    let mut t = [[0u16; 8]; 256];
    let mut s = 0;
    while s < 256 {
        let mut j = 0;
        while j < 8 {
            t[s][j] = (((s >> j) & 1) as u16) << 15;
            j += 1;
        }
        s += 1;
    }
    t
};

/// Rows at least this long are decoded through a table per row ([`EncodedParts::decode_f32`]
/// and the half-precision decoders with row scales): the table's 256 products cost less than
/// a multiplication (and a rounding) per element from about here on.
const ROW_TABLE_MIN: u64 = 256;

/// Row `r`'s scale, from the little-endian f32 bytes of a scales section.
fn scale(scales: &[u8], r: usize) -> f32 {
    f32::from_le_bytes([
        scales[4 * r],
        scales[4 * r + 1],
        scales[4 * r + 2],
        scales[4 * r + 3],
    ])
}

/// The kernel: `out[k] = cvt(table[code] | sign)` for elements `a..a + out.len()`, the sign
/// taken from `masks` (bit 31 or 15). The bulk runs eight elements per sign byte over
/// `chunks_exact`, with the eight codes read as one `u64`, so the loop has no bounds checks and
/// no branch on the data; an unaligned head and the tail take the element-wise path.
#[inline(always)]
fn lookup<W: Copy + core::ops::BitOr<Output = W>, O>(
    table: &[W; 256],
    masks: &[[W; 8]; 256],
    cvt: impl Fn(W) -> O,
    codes: &[u8],
    signs: &[u8],
    a: usize,
    out: &mut [O],
) {
    let one = |i: usize, c: u8| {
        let m = masks[usize::from(signs[i / 8])][i % 8];
        cvt(table[usize::from(c)] | m)
    };
    let codes = &codes[a..a + out.len()];
    // Elements before the first whole sign byte.
    let head = ((8 - a % 8) % 8).min(out.len());
    let (out_head, out) = out.split_at_mut(head);
    let (codes_head, codes) = codes.split_at(head);
    for (k, (o, &c)) in out_head.iter_mut().zip(codes_head).enumerate() {
        *o = one(a + k, c);
    }
    let a = a + head;
    let done = a + out.len() / 8 * 8;
    let mut out8 = out.chunks_exact_mut(8);
    let mut codes8 = codes.chunks_exact(8);
    for ((o8, c8), &s) in (&mut out8).zip(&mut codes8).zip(&signs[a / 8..]) {
        let c = u64::from_le_bytes([c8[0], c8[1], c8[2], c8[3], c8[4], c8[5], c8[6], c8[7]]);
        let m = &masks[usize::from(s)];
        for (j, o) in o8.iter_mut().enumerate() {
            *o = cvt(table[((c >> (8 * j)) & 0xff) as usize] | m[j]);
        }
    }
    for (k, (o, &c)) in out8
        .into_remainder()
        .iter_mut()
        .zip(codes8.remainder())
        .enumerate()
    {
        *o = one(done + k, c);
    }
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
        let (a, _) = self.check(first, out.len())?;
        if let Some((scales, row_len)) = self.scales {
            if row_len >= ROW_TABLE_MIN {
                let (masks, rows) = (&SIGN_MASKS_32, row_len as usize);
                self.rows_by_table(a, out, scales, rows, masks, f32::to_bits, f32::from_bits);
                return Ok(());
            }
        }
        let bits: [u32; 256] = self.lut.map(f32::to_bits);
        lookup(
            &bits,
            &SIGN_MASKS_32,
            f32::from_bits,
            self.codes,
            self.signs,
            a,
            out,
        );
        if let Some((scales, row_len)) = self.scales {
            let row_len = row_len as usize;
            // One row at a time: the scale is read once per row, not per element.
            let mut k = 0;
            while k < out.len() {
                let row = (a + k) / row_len;
                let stop = ((row + 1) * row_len - a).min(out.len());
                let s = scale(scales, row);
                out[k..stop].iter_mut().for_each(|o| *o *= s);
                k = stop;
            }
        }
        Ok(())
    }

    /// Decodes elements `a..a + out.len()` of a tensor with row scales a row at a time, each
    /// row through a table of its own: `entry(m × s)` for every table value `m` and the row's
    /// scale `s`, the output word with its sign bit clear, which `cvt` turns into the output.
    /// The result is the decode rule's: `(±m) × s` is `±(m × s)` in IEEE arithmetic, and
    /// rounding to nearest even is symmetric in the sign, so ORing the sign into the rounded
    /// product gives the rounded signed product. A row pays 256 products for its table, then
    /// decodes at the speed of a tensor without scales.
    #[allow(clippy::too_many_arguments)]
    fn rows_by_table<W: Copy + core::ops::BitOr<Output = W>, O>(
        &self,
        a: usize,
        out: &mut [O],
        scales: &[u8],
        row_len: usize,
        masks: &[[W; 8]; 256],
        entry: impl Fn(f32) -> W,
        cvt: fn(W) -> O,
    ) {
        let mut k = 0;
        while k < out.len() {
            let row = (a + k) / row_len;
            let stop = ((row + 1) * row_len - a).min(out.len());
            let s = scale(scales, row);
            let table: [W; 256] = self.lut.map(|m| entry(m * s));
            lookup(
                &table,
                masks,
                cvt,
                self.codes,
                self.signs,
                a + k,
                &mut out[k..stop],
            );
            k = stop;
        }
    }

    /// Decodes into bfloat16, each f32 value rounded once to nearest even.
    pub fn decode_bf16(&self, first: u64, out: &mut [bf16]) -> Result<(), RangeError> {
        self.decode_half(first, out, bf16::from_f32, bf16::to_bits, bf16::from_bits)
    }

    /// Decodes into float16, each f32 value rounded once to nearest even.
    pub fn decode_f16(&self, first: u64, out: &mut [f16]) -> Result<(), RangeError> {
        self.decode_half(first, out, f16::from_f32, f16::to_bits, f16::from_bits)
    }

    /// Decodes into a 16-bit float type. Without row scales the value `±LUT[c]` rounds to
    /// `±round(LUT[c])`, because rounding to nearest even is symmetric in the sign; so the
    /// table is rounded once up front and the kernel ORs the 16-bit sign, with the same result
    /// as rounding each f32 value. With row scales each product is computed in f32 and rounded.
    fn decode_half<T: Copy>(
        &self,
        first: u64,
        out: &mut [T],
        cvt: fn(f32) -> T,
        to_bits: fn(T) -> u16,
        from_bits: fn(u16) -> T,
    ) -> Result<(), RangeError> {
        let (a, _) = self.check(first, out.len())?;
        if let Some((scales, row_len)) = self.scales {
            if row_len >= ROW_TABLE_MIN {
                let (masks, rows) = (&SIGN_MASKS_16, row_len as usize);
                self.rows_by_table(a, out, scales, rows, masks, |v| to_bits(cvt(v)), from_bits);
                return Ok(());
            }
            return self.decode_via_f32(first, out, cvt);
        }
        let table: [u16; 256] = self.lut.map(|m| to_bits(cvt(m)));
        lookup(
            &table,
            &SIGN_MASKS_16,
            from_bits,
            self.codes,
            self.signs,
            a,
            out,
        );
        Ok(())
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

    /// Rows of at least `ROW_TABLE_MIN` elements decode through a table per row: check every
    /// output type against the rule, element by element, over ranges that start and end
    /// inside rows, on row boundaries and on and off sign-byte boundaries; with products that
    /// round to ties, overflow float16 and bfloat16, and fall to subnormals and zero.
    #[test]
    fn long_rows_decode_to_the_rule_through_row_tables() {
        let row_len = ROW_TABLE_MIN as usize + 44;
        let rows = 4;
        let n = rows * row_len;
        let mut lut = [0f32; 256];
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for (c, v) in lut.iter_mut().enumerate().skip(1) {
            let r = next();
            *v = match c % 3 {
                0 => f32::from_bits((r as u32) % 0x7F80_0000),
                1 => 1.0 + (2 * (r % 1024) + 1) as f32 / 2048.0,
                _ => c as f32 / 255.0,
            };
        }
        let codes: Vec<u8> = (0..n).map(|_| next() as u8).collect();
        let signs: Vec<u8> = (0..n.div_ceil(8)).map(|_| next() as u8).collect();
        let scales: Vec<u8> = [0.7f32, 3.0e4, 1.0e-30, 1.5]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let p = EncodedParts {
            lut: &lut,
            codes: &codes,
            signs: &signs,
            scales: Some((&scales, row_len as u64)),
        };
        let edges = [
            0,
            1,
            7,
            8,
            row_len - 1,
            row_len,
            row_len + 3,
            2 * row_len + 9,
            n - 1,
        ];
        for &a in &edges {
            for &b in edges.iter().chain([&n]) {
                if b < a {
                    continue;
                }
                let mut f = vec![0f32; b - a];
                let mut bf = vec![bf16::ZERO; b - a];
                let mut h = vec![f16::ZERO; b - a];
                p.decode_f32(a as u64, &mut f).unwrap();
                p.decode_bf16(a as u64, &mut bf).unwrap();
                p.decode_f16(a as u64, &mut h).unwrap();
                for k in 0..b - a {
                    let r = reference(&p, a + k);
                    assert_eq!(f[k].to_bits(), r.to_bits(), "f32 at {}", a + k);
                    assert_eq!(
                        bf[k].to_bits(),
                        bf16::from_f32(r).to_bits(),
                        "bf16 at {}",
                        a + k
                    );
                    assert_eq!(
                        h[k].to_bits(),
                        f16::from_f32(r).to_bits(),
                        "f16 at {}",
                        a + k
                    );
                }
            }
        }
    }

    /// Half-precision decoding rounds the table once and ORs the sign: check that this equals
    /// rounding each f32 value, for every code and sign, every alignment, and tables with ties,
    /// subnormals and values beyond float16's range.
    #[test]
    fn half_decoding_equals_rounding_each_value() {
        let mut lut = [0f32; 256];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for (c, v) in lut.iter_mut().enumerate().skip(1) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *v = match c % 4 {
                // Any finite non-negative value, huge and tiny ones included.
                0 => f32::from_bits((x as u32) % 0x7F80_0000),
                // Exact bfloat16 and float16 ties.
                1 => f32::from_bits(0x3F80_8000 + ((x as u32 & 0xFF) << 16)),
                2 => 1.0 + (2 * (x % 1024) + 1) as f32 / 2048.0,
                // Around float16's largest value and its subnormals.
                _ => [65504.0, 65520.0, 65519.99, 7e4, 6.0e-8, 2.98e-8, 1e-10][c % 7],
            };
        }
        // Every code with both signs, then a stretch of random ones.
        let n: usize = 2 * 256 + 99;
        let codes: Vec<u8> = (0..n).map(|i| (i % 256) as u8).collect();
        let signs: Vec<u8> = (0..n.div_ceil(8))
            .map(|k| {
                let mut b = if (8 * k) / 256 == 1 { 0xFF } else { 0x00 };
                if 8 * k >= 512 {
                    b = (k * 37 % 256) as u8;
                }
                if 8 * k + 8 > n {
                    b &= (1u8 << (n % 8)) - 1;
                }
                b
            })
            .collect();
        let p = EncodedParts {
            lut: &lut,
            codes: &codes,
            signs: &signs,
            scales: None,
        };
        for a in 0..17 {
            for b in [a, a + 1, a + 8, n - 9, n - 1, n] {
                if b < a {
                    continue;
                }
                let mut bf = vec![bf16::ZERO; b - a];
                let mut h = vec![f16::ZERO; b - a];
                let mut f = vec![0f32; b - a];
                p.decode_bf16(a as u64, &mut bf).unwrap();
                p.decode_f16(a as u64, &mut h).unwrap();
                p.decode_f32(a as u64, &mut f).unwrap();
                for k in 0..b - a {
                    let r = reference(&p, a + k);
                    assert_eq!(f[k].to_bits(), r.to_bits(), "f32 at {}", a + k);
                    assert_eq!(
                        bf[k].to_bits(),
                        bf16::from_f32(r).to_bits(),
                        "bf16 at {}",
                        a + k
                    );
                    assert_eq!(
                        h[k].to_bits(),
                        f16::from_f32(r).to_bits(),
                        "f16 at {}",
                        a + k
                    );
                }
            }
        }
    }
}

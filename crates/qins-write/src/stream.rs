//! Tensor data in plan order, whole or in parts: raw bytes as they are (§13); encoded tensors
//! as their table, parameters and row scales first, then codes and sign bytes, each part
//! checked against the sign rule (§11.2) and checksummed as it passes.

use crc32fast::Hasher;
use qins_format::codec::{Quantizer, RowScales};
use qins_format::Storage;

use crate::{WriteError, Writer};

/// The state of the tensor being written.
pub(crate) enum Current {
    /// Nothing begun.
    Idle,
    /// A raw tensor, `done` bytes in.
    Raw { done: u64, crc: Hasher },
    /// An encoded tensor, `done` elements in.
    Encoded {
        done: u64,
        codes: Hasher,
        signs: Hasher,
    },
}

impl Writer {
    /// Writes the next tensor, which must be raw, whole: `bytes` are its exact bytes (§13).
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        let want = self
            .records
            .get(self.next)
            .map(|r| r.data.length.get())
            .unwrap_or(0);
        if matches!(self.current, Current::Idle) && bytes.len() as u64 != want {
            return Err(self.misuse(format!("expected {want} raw bytes, got {}", bytes.len())));
        }
        self.write_raw_part(bytes)
    }

    /// Appends the next part of the current raw tensor; the tensor is complete when all of its
    /// bytes have been given. A tensor of zero bytes is completed by one call with no bytes.
    pub fn write_raw_part(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        self.raw_part(bytes, None)
    }

    /// [`Writer::write_raw_part`] of `bytes` that are also bytes `src_at..` of the file `src`
    /// (the part's bytes, mapped from the source): a writer that writes around the page cache
    /// copies them from `src` when the disk is otherwise idle, instead of making the caller
    /// wait for the disk. The bytes written, and their checksum, are those of `bytes`, which
    /// must equal the file's (a file changed meanwhile gives a tensor whose checksum fails).
    pub fn write_raw_part_from(
        &mut self,
        bytes: &[u8],
        src: &std::fs::File,
        src_at: u64,
    ) -> Result<(), WriteError> {
        self.raw_part(bytes, Some((src, src_at)))
    }

    fn raw_part(
        &mut self,
        bytes: &[u8],
        src: Option<(&std::fs::File, u64)>,
    ) -> Result<(), WriteError> {
        let Some(t) = self.next_tensor() else {
            return Err(self.misuse("every tensor is already written"));
        };
        if t.storage != Storage::Raw {
            return Err(self.misuse("tensor is planned as encoded, not raw"));
        }
        let rec = self.records[self.next];
        let (done, mut crc) = match std::mem::replace(&mut self.current, Current::Idle) {
            Current::Raw { done, crc } => (done, crc),
            _ => (0, Hasher::new()),
        };
        let len = rec.data.length.get();
        let end = done + bytes.len() as u64;
        // On an error the tensor's progress is kept: what was written stays counted.
        if end > len {
            self.current = Current::Raw { done, crc };
            return Err(self.misuse(format!("{end} raw bytes given, the tensor has {len}")));
        }
        let at = rec.data.offset.get() + done;
        let written = match src {
            Some((src, src_at)) => self.file.copy_at(at, bytes, src, src_at),
            None => self.file.write_at(at, bytes),
        };
        if let Err(e) = written {
            self.current = Current::Raw { done, crc };
            return Err(e);
        }
        self.file.wrote(bytes.len() as u64);
        crc.update(bytes);
        if end == len {
            self.records[self.next].data.crc = crc.finalize().into();
            self.next += 1;
        } else {
            self.current = Current::Raw { done: end, crc };
        }
        Ok(())
    }

    /// Encodes and writes the next tensor, which must be planned as encoded, from its values
    /// (converted to f32) and, if planned with row scales, its scales.
    pub fn encode_tensor(
        &mut self,
        values: &[f32],
        scales: Option<&[f32]>,
    ) -> Result<(), WriteError> {
        let Some(t) = self.next_tensor() else {
            return Err(self.misuse("every tensor is already written"));
        };
        let Storage::Encoded { codec, row_scales } = t.storage else {
            return Err(self.misuse("tensor is planned as raw, not encoded"));
        };
        // Checked before the values are scanned and fitted, as `begin_encoded` would: scales
        // for a tensor planned without them must not reach the codec's fit (a `lloyd` table
        // fitted to scaled values is not one the plan describes).
        if row_scales != scales.is_some() {
            return Err(self.misuse(if row_scales {
                "tensor is planned with row scales; none given"
            } else {
                "row scales given for a tensor planned without them"
            }));
        }
        // Checked before anything is written: a short slice would otherwise begin the tensor,
        // fit its table to part of the values, and leave it incomplete.
        let want = self.records[self.next].data.length.get();
        if values.len() as u64 != want {
            return Err(self.misuse(format!(
                "expected {want} values (the whole tensor), got {}",
                values.len()
            )));
        }
        let name = t.name.clone();
        let shape = t.shape.clone();
        let enc = |source| WriteError::Encode {
            tensor: name.clone(),
            source,
        };
        let rs = scales
            .map(|s| RowScales::new(s, &shape))
            .transpose()
            .map_err(enc)?;
        let stats = qins_format::codec::scan(values, 0, rs.as_ref()).map_err(enc)?;
        let q = Quantizer::new(codec, &stats);
        self.begin_encoded(&q, scales)?;
        if values.is_empty() && matches!(self.current, Current::Idle) {
            // An empty tensor: `begin_encoded` has already completed it.
            return Ok(());
        }
        let mut codes = vec![0u8; values.len()];
        let mut signs = vec![0u8; values.len().div_ceil(8)];
        q.encode(values, 0, rs.as_ref(), &mut codes, &mut signs)
            .map_err(enc)?;
        self.write_encoded_part(&codes, &signs)
    }

    /// Begins the next tensor, which must be planned as encoded, with its fitted quantizer and
    /// its row scales (exactly when planned with them). Codes and signs follow with
    /// [`Writer::write_encoded_part`].
    pub fn begin_encoded(
        &mut self,
        quantizer: &Quantizer,
        scales: Option<&[f32]>,
    ) -> Result<(), WriteError> {
        let Some(t) = self.next_tensor() else {
            return Err(self.misuse("every tensor is already written"));
        };
        let Storage::Encoded { codec, row_scales } = t.storage else {
            return Err(self.misuse("tensor is planned as raw, not encoded"));
        };
        if !matches!(self.current, Current::Idle) {
            return Err(self.misuse("the previous tensor is not complete"));
        }
        if quantizer.codec() != codec {
            return Err(self.misuse(format!(
                "planned codec {codec}, quantizer is {}",
                quantizer.codec()
            )));
        }
        // A quantizer fitted to hand-made statistics (`Stats`' fields are public) can have
        // parameters or a table that the spec forbids: refuse it rather than write a file that
        // every reader refuses (§10 `BadLut`, §12 `BadParams`).
        let [p0, p1] = quantizer.params();
        if !codec.params_are_valid(p0, p1) {
            return Err(self.misuse(format!(
                "the quantizer's parameters {p0}, {p1} are not valid for codec {codec} (§12); \
                 fit it to statistics from `scan`"
            )));
        }
        let lut = quantizer.lut();
        if let Some(i) = (0..256).find(|&i| {
            let v = lut[i];
            if i == 0 {
                v.to_bits() != 0
            } else {
                !(v.is_finite() && v.is_sign_positive())
            }
        }) {
            return Err(self.misuse(format!(
                "the quantizer's table entry {i} is {}: LUT[0] must be +0.0 and entries finite \
                 and not negative (§10)",
                lut[i]
            )));
        }
        if row_scales != scales.is_some() {
            return Err(self.misuse(if row_scales {
                "tensor is planned with row scales; none given"
            } else {
                "row scales given for a tensor planned without them"
            }));
        }
        let rec = self.records[self.next];
        if let Some(s) = scales {
            RowScales::new(s, &t.shape).map_err(|source| WriteError::Encode {
                tensor: t.name.clone(),
                source,
            })?;
            let bytes: Vec<u8> = s.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.file.write_at(rec.scales.offset.get(), &bytes)?;
            self.records[self.next].scales.crc = crc32fast::hash(&bytes).into();
        }
        let r = &mut self.records[self.next];
        r.param0 = p0.into();
        r.param1 = p1.into();
        self.luts
            .extend(quantizer.lut().iter().flat_map(|v| v.to_le_bytes()));
        self.current = Current::Encoded {
            done: 0,
            codes: Hasher::new(),
            signs: Hasher::new(),
        };
        if rec.data.length.get() == 0 {
            self.write_encoded_part(&[], &[])?;
        }
        Ok(())
    }

    /// Appends the next part of the current encoded tensor: `codes` for the next elements and
    /// their sign bytes. Every part but the last must cover a multiple of 8 elements.
    pub fn write_encoded_part(&mut self, codes: &[u8], signs: &[u8]) -> Result<(), WriteError> {
        let Current::Encoded { done, .. } = self.current else {
            return Err(self.misuse("no encoded tensor begun (call begin_encoded first)"));
        };
        let rec = self.records[self.next];
        let n = rec.data.length.get();
        let end = done + codes.len() as u64;
        if end > n {
            return Err(self.misuse(format!("{end} codes given, the tensor has {n}")));
        }
        if end < n && !codes.len().is_multiple_of(8) {
            return Err(self.misuse("a part before the last must cover a multiple of 8 elements"));
        }
        if signs.len() != codes.len().div_ceil(8) {
            return Err(self.misuse(format!(
                "{} codes need {} sign bytes, got {}",
                codes.len(),
                codes.len().div_ceil(8),
                signs.len()
            )));
        }
        // §11.2: an element with code 0 has sign 0, and the unused high bits of the last byte
        // are 0. Checked here so that a caller's sign bytes cannot make a file that
        // verification refuses (or that breaks the code-0 rule, which no reader checks).
        // A branch-free test of the whole part first; the loop names the first bad bit.
        if signs_break_rule(codes, signs) {
            for (k, (&s, c8)) in signs.iter().zip(codes.chunks(8)).enumerate() {
                // Bits that must be clear: past the last element, and where the code is 0.
                let mut clear = !((1u16 << c8.len()) - 1) as u8;
                for (j, &c) in c8.iter().enumerate() {
                    clear |= u8::from(c == 0) << j;
                }
                if s & clear != 0 {
                    let j = (s & clear).trailing_zeros() as usize;
                    let i = done + (8 * k + j) as u64;
                    return Err(self.misuse(if j < c8.len() {
                        format!("element {i} has code 0 and its sign bit set (§11.2)")
                    } else {
                        format!("sign bit {i} is set past the last element (§11.2)")
                    }));
                }
            }
        }
        self.file.write_at(rec.data.offset.get() + done, codes)?;
        self.file
            .write_at(rec.signs.offset.get() + done / 8, signs)?;
        self.file.wrote((codes.len() + signs.len()) as u64);
        let Current::Encoded {
            codes: ref mut hc,
            signs: ref mut hs,
            done: ref mut d,
        } = self.current
        else {
            unreachable!("checked above");
        };
        hc.update(codes);
        hs.update(signs);
        *d = end;
        if end == n {
            let Current::Encoded { codes, signs, .. } =
                std::mem::replace(&mut self.current, Current::Idle)
            else {
                unreachable!("checked above");
            };
            let r = &mut self.records[self.next];
            r.data.crc = codes.finalize().into();
            r.signs.crc = signs.finalize().into();
            self.next += 1;
        }
        Ok(())
    }
}

/// Bit `j` set where byte `j` of `x` is not zero.
#[inline(always)]
fn nonzero_bytes(x: u64) -> u8 {
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    // The high bit of each byte: set when its low seven bits carry or it was already set.
    let high = (((x & LOW7) + LOW7) | x) & !LOW7;
    // Gather the eight high bits into one byte.
    ((high >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u8
}

/// Whether some sign bit of `signs` is set where its element's code is 0 or past the last of
/// `codes` (§11.2): eight elements per step, without a branch on the data.
fn signs_break_rule(codes: &[u8], signs: &[u8]) -> bool {
    let mut bad = 0u8;
    let mut c8 = codes.chunks_exact(8);
    for (c, &s) in (&mut c8).zip(signs) {
        let x = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        bad |= s & !nonzero_bytes(x);
    }
    let rest = c8.remainder();
    if let Some(&s) = signs.get(codes.len() / 8) {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        bad |= s & !nonzero_bytes(u64::from_le_bytes(last));
    }
    bad != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Plan, TensorSpec};
    use qins_format::Dtype;

    #[test]
    fn a_refused_raw_part_keeps_the_progress() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.qins");
        let mut plan = Plan::new();
        plan.tensors
            .push(TensorSpec::new("t", Dtype::U8, vec![8], Storage::Raw));
        let mut w = Writer::create(&path, plan, false).unwrap();
        w.write_raw_part(&[1, 2, 3]).unwrap();
        let e = w.write_raw_part(&[9; 6]).unwrap_err();
        assert!(e.to_string().contains("9 raw bytes given"), "{e}");
        w.write_raw_part(&[4, 5, 6, 7, 8]).unwrap();
        w.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.windows(8).any(|x| x == [1, 2, 3, 4, 5, 6, 7, 8]));
    }

    #[test]
    fn nonzero_bytes_finds_every_nonzero_byte() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for k in 0..100_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Zero some bytes, and set some to 0x80 and 0x01, the edge cases.
            let mut b = x.to_le_bytes();
            for (j, v) in b.iter_mut().enumerate() {
                match (k as usize + j * 7) % 5 {
                    0 => *v = 0,
                    1 => *v = [0x80, 0x01, 0x7F, 0xFF][(k as usize + j) % 4],
                    _ => {}
                }
            }
            let want = b
                .iter()
                .enumerate()
                .fold(0u8, |m, (j, &v)| m | (u8::from(v != 0) << j));
            assert_eq!(nonzero_bytes(u64::from_le_bytes(b)), want, "{b:?}");
        }
    }

    #[test]
    fn sign_rule_check_equals_the_definition() {
        let naive = |codes: &[u8], signs: &[u8]| {
            signs.iter().enumerate().any(|(k, &s)| {
                (0..8).any(|j| {
                    let i = 8 * k + j;
                    (s >> j) & 1 == 1 && codes.get(i).is_none_or(|&c| c == 0)
                })
            })
        };
        for len in [0usize, 1, 5, 8, 9, 16, 21] {
            let codes: Vec<u8> = (0..len).map(|i| (i % 3) as u8).collect();
            for bit in 0..8 * len.div_ceil(8) {
                let mut signs = vec![0u8; len.div_ceil(8)];
                signs[bit / 8] |= 1 << (bit % 8);
                assert_eq!(
                    signs_break_rule(&codes, &signs),
                    naive(&codes, &signs),
                    "len {len} bit {bit}"
                );
            }
            let ok: Vec<u8> = codes
                .chunks(8)
                .map(|c| {
                    c.iter()
                        .enumerate()
                        .fold(0, |m, (j, &v)| m | (u8::from(v != 0) << j))
                })
                .collect();
            assert!(!signs_break_rule(&codes, &ok));
        }
    }
}

//! Reading a tensor, or a range of it along its first dimension, into a caller's buffer: the
//! checksums first (once per tensor), then the decode rule (§11.4) or the raw bytes, on every
//! core for large tensors. No Python here: the buffer is the array's memory, borrowed.

use half::{bf16, f16};
use qins_read::{DecodeError, ReadError, TensorView};
use rayon::prelude::*;
use zerocopy::FromBytes;

use crate::source::Source;

/// Elements (or raw bytes) per parallel task: 1 MiB of f32 output. A multiple of 8, so that
/// every task but the first starts on a whole sign byte.
const CHUNK: usize = 1 << 18;

/// Bytes per parallel task of the checksum.
const CRC_CHUNK: usize = 4 << 20;

/// What a tensor is read as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Decoded to f32, exactly (§11.4).
    F32,
    /// Decoded to float16, rounded once.
    F16,
    /// Decoded to bfloat16, rounded once.
    Bf16,
    /// A raw tensor's bytes, as stored (§13).
    Raw,
}

impl Kind {
    /// The kind called `name`: `f32`, `f16`, `bf16` or `raw`.
    pub fn parse(name: &str) -> Option<Kind> {
        Some(match name {
            "f32" => Kind::F32,
            "f16" => Kind::F16,
            "bf16" => Kind::Bf16,
            "raw" => Kind::Raw,
            _ => return None,
        })
    }

    /// The numpy dtype of the buffer that receives it.
    pub fn carrier(self) -> &'static str {
        match self {
            Kind::F32 => "float32",
            Kind::F16 => "float16",
            Kind::Bf16 => "uint16",
            Kind::Raw => "uint8",
        }
    }
}

/// Why a read cannot be served.
#[derive(Debug)]
pub enum ReadFailure {
    /// The file's data is damaged (§14).
    Read(ReadError),
    /// The tensor cannot be read as asked (a raw tensor decoded, or the reverse).
    Decode(DecodeError),
    /// The request does not fit the tensor.
    Request(String),
}

/// Which indices of the first dimension to read: `start, start + step, …`, `count` of them.
/// A tensor of rank 0 has one "index", the whole tensor.
#[derive(Clone, Copy, Debug)]
pub struct Rows {
    /// The first index.
    pub start: u64,
    /// How many.
    pub count: u64,
    /// The distance between two, at least 1.
    pub step: u64,
}

/// The number of elements of one index of the first dimension (the whole tensor at rank 0),
/// and the number of such indices.
pub fn slab(t: &TensorView<'_>) -> (u64, u64) {
    match t.shape() {
        [] => (1, 1),
        [n, rest @ ..] => (rest.iter().product(), *n),
    }
}

impl Rows {
    /// Every index.
    pub fn all(t: &TensorView<'_>) -> Rows {
        Rows {
            start: 0,
            count: slab(t).1,
            step: 1,
        }
    }

    /// Checks the rows against the tensor.
    fn check(&self, t: &TensorView<'_>) -> Result<(), ReadFailure> {
        let (_, n) = slab(t);
        let last = self.count.checked_sub(1).map(|k| {
            k.checked_mul(self.step)
                .and_then(|d| d.checked_add(self.start))
        });
        let fits = match last {
            None => self.start <= n,
            Some(Some(last)) => last < n,
            Some(None) => false,
        };
        if self.step == 0 || !fits {
            return Err(ReadFailure::Request(format!(
                "tensor {:?}: indices {}, step {}, count {} of a first dimension of {n}",
                t.name(),
                self.start,
                self.step,
                self.count
            )));
        }
        Ok(())
    }
}

/// The number of bytes `read` writes for `rows` of `t` as `kind`.
pub fn out_len(t: &TensorView<'_>, kind: Kind, rows: Rows) -> Result<usize, ReadFailure> {
    rows.check(t)?;
    let elems = slab(t).0 * rows.count;
    let bits = match kind {
        Kind::F32 => 32,
        Kind::F16 | Kind::Bf16 => 16,
        Kind::Raw => u64::from(t.dtype().bits()),
    };
    // The file holds this tensor, so its element count fits in memory's address range only if
    // the output does: say so instead of overflowing.
    let bits = elems.checked_mul(bits).filter(|b| b % 8 == 0);
    match bits.map(|b| usize::try_from(b / 8)) {
        Some(Ok(n)) => Ok(n),
        _ => Err(ReadFailure::Request(format!(
            "tensor {:?}: {} × {} bits is not a whole number of bytes this machine can hold \
             (sub-byte dtypes are read whole)",
            t.name(),
            elems,
            t.dtype().bits()
        ))),
    }
}

/// The CRC-32 of `bytes`, its parts computed on every core and combined.
fn crc32(bytes: &[u8]) -> u32 {
    if bytes.len() <= CRC_CHUNK {
        return crc32fast::hash(bytes);
    }
    bytes
        .par_chunks(CRC_CHUNK)
        .map(|c| {
            let mut h = crc32fast::Hasher::new();
            h.update(c);
            h
        })
        .collect::<Vec<_>>()
        .into_iter()
        .reduce(|mut a, b| {
            a.combine(&b);
            a
        })
        .map_or(0, crc32fast::Hasher::finalize)
}

/// Reads `rows` of tensor `index` of `src` as `kind` into `out`, whose length must be
/// [`out_len`]. Verifies the tensor first, the first time it is read, if `src` verifies.
pub fn read(
    src: &Source,
    index: usize,
    kind: Kind,
    rows: Rows,
    out: &mut [u8],
) -> Result<(), ReadFailure> {
    let t = src.qins().tensor_at(index);
    if out.len() != out_len(&t, kind, rows)? {
        return Err(ReadFailure::Request(format!(
            "tensor {:?}: a buffer of {} bytes for {} bytes",
            t.name(),
            out.len(),
            out_len(&t, kind, rows)?
        )));
    }
    if src.verifies() && !src.is_verified(index) {
        t.verify_with(crc32).map_err(ReadFailure::Read)?;
        src.set_verified(index);
    }
    if out.is_empty() {
        return Ok(());
    }
    let (slab, _) = slab(&t);
    let first = rows.start * slab;
    let stride = rows.step * slab;
    let slab = slab as usize;
    let cast = |what| ReadFailure::Request(format!("{what}: the buffer is not aligned"));
    match kind {
        Kind::F32 => {
            let out = <[f32]>::mut_from_bytes(out).map_err(|_| cast("f32"))?;
            fill(out, first, slab, stride, |a, o| t.decode_f32(a, o))
        }
        Kind::F16 => {
            let out = <[f16]>::mut_from_bytes(out).map_err(|_| cast("f16"))?;
            fill(out, first, slab, stride, |a, o| t.decode_f16(a, o))
        }
        Kind::Bf16 => {
            let out = <[bf16]>::mut_from_bytes(out).map_err(|_| cast("bf16"))?;
            fill(out, first, slab, stride, |a, o| t.decode_bf16(a, o))
        }
        Kind::Raw => {
            let raw = t.raw_bytes().ok_or_else(|| {
                ReadFailure::Request(format!(
                    "tensor {:?} is encoded ({}): it is decoded, not read raw",
                    t.name(),
                    t.codec().map_or("?", |c| c.name())
                ))
            })?;
            // out_len has checked that a slab is a whole number of bytes.
            let bits = u64::from(t.dtype().bits());
            let (first, stride) = (first * bits / 8, stride * bits / 8);
            let slab = slab * t.dtype().bits() as usize / 8;
            fill(out, first, slab, stride, |a, o| {
                let a = a as usize;
                o.copy_from_slice(&raw[a..a + o.len()]);
                Ok(())
            })
        }
    }
}

/// Fills `out` with `out.len() / slab` slabs of `slab` elements, the `k`th starting at element
/// `first + k × stride` of the tensor, by `f(first element, part of out)`: contiguous ranges
/// in chunks of [`CHUNK`], strided ones a slab per task, on rayon's threads.
fn fill<T: Send>(
    out: &mut [T],
    first: u64,
    slab: usize,
    stride: u64,
    f: impl Fn(u64, &mut [T]) -> Result<(), DecodeError> + Sync,
) -> Result<(), ReadFailure> {
    let r = if stride == slab as u64 || slab == 0 {
        if out.len() <= 2 * CHUNK {
            f(first, out)
        } else {
            out.par_chunks_mut(CHUNK)
                .enumerate()
                .try_for_each(|(i, o)| f(first + (i * CHUNK) as u64, o))
        }
    } else {
        out.par_chunks_mut(slab)
            .enumerate()
            .try_for_each(|(k, o)| f(first + k as u64 * stride, o))
    };
    r.map_err(ReadFailure::Decode)
}

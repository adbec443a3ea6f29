//! Reading tensors, or ranges of one along its first dimension, into memory the caller hands
//! over: the decode rule (§11.4) or the raw bytes, on every core, and the checksums (once per
//! tensor). No Python here: the memory is an array's, borrowed.
//!
//! A whole tensor is read in one pass: each chunk's checksum parts are computed just before
//! the chunk is decoded from the same, cache-hot bytes, and the parts are combined and compared
//! (`TensorView::verify_with`) before the read succeeds, so that each byte of the file is read
//! from memory once. Several tensors are read at once across the cores ([`read_all`]), and a
//! large one is also cut into chunks read in parallel.

use std::mem::MaybeUninit;

use crc32fast::Hasher;
use half::{bf16, f16};
use qins_read::{DecodeError, ReadError, TensorView};
use rayon::prelude::*;
use zerocopy::FromBytes;

use crate::source::Source;

/// Elements (or raw bytes) per parallel task: 1 MiB of f32 output, whose 256 KiB of codes stay
/// in the core's cache between their checksum and their decoding. A multiple of 8, so that
/// every task but the last covers whole sign bytes.
const CHUNK: usize = 1 << 18;

/// Bytes per parallel task of a checksum computed on its own.
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

    /// Bytes per element of the buffer that receives it.
    pub fn size(self) -> usize {
        match self {
            Kind::F32 => 4,
            Kind::F16 | Kind::Bf16 => 2,
            Kind::Raw => 1,
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

impl From<DecodeError> for ReadFailure {
    fn from(e: DecodeError) -> Self {
        ReadFailure::Decode(e)
    }
}

/// Which indices of the first dimension to read: `start, start + step, …`, `count` of them.
/// A tensor of rank 0 has one "index", the whole tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// The number of bytes a read of `rows` of `t` as `kind` writes.
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

/// A raw tensor's bytes, or the failure to read an encoded one as raw.
pub fn raw_bytes<'a>(t: &TensorView<'a>) -> Result<&'a [u8], ReadFailure> {
    t.raw_bytes().ok_or_else(|| {
        ReadFailure::Request(format!(
            "tensor {:?} is encoded ({}): it is decoded, not read raw",
            t.name(),
            t.codec().map_or("?", |c| c.name())
        ))
    })
}

/// The CRC-32 state of `bytes`.
fn hasher(bytes: &[u8]) -> Hasher {
    let mut h = Hasher::new();
    h.update(bytes);
    h
}

/// The parts' CRC-32 states combined in order: the CRC-32 of their concatenation.
fn combine(parts: impl IntoIterator<Item = Hasher>) -> u32 {
    parts
        .into_iter()
        .reduce(|mut a, b| {
            a.combine(&b);
            a
        })
        .map_or(0, Hasher::finalize)
}

/// The CRC-32 of `bytes`, its parts computed on every core and combined.
fn crc32(bytes: &[u8]) -> u32 {
    if bytes.len() <= CRC_CHUNK {
        return crc32fast::hash(bytes);
    }
    combine(bytes.par_chunks(CRC_CHUNK).map(hasher).collect::<Vec<_>>())
}

/// `memory`, its bytes set to zero, as initialised bytes.
fn zeroed(memory: &mut [MaybeUninit<u8>]) -> &mut [u8] {
    memory.fill(MaybeUninit::new(0));
    #[allow(unsafe_code)]
    // SAFETY: every byte was initialised just above, and `MaybeUninit<u8>` has the layout of
    // `u8`; the result borrows `memory` mutably, so nothing else reaches it meanwhile.
    unsafe {
        &mut *(std::ptr::from_mut::<[MaybeUninit<u8>]>(memory) as *mut [u8])
    }
}

/// One read: tensor `index` of the source, its `rows`, as `kind`.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    /// The tensor's position in the model's order.
    pub index: usize,
    /// What it is read as.
    pub kind: Kind,
    /// Which indices of its first dimension.
    pub rows: Rows,
}

/// Memory a read writes every byte of.
pub enum Out<'a> {
    /// Not initialised (`numpy.empty`): zeroed, a chunk at a time, right before it is written.
    Uninit(&'a mut [MaybeUninit<u8>]),
    /// Zeroed already (new anonymous memory).
    Zeroed(&'a mut [u8]),
}

impl Out<'_> {
    fn len(&self) -> usize {
        match self {
            Out::Uninit(m) => m.len(),
            Out::Zeroed(m) => m.len(),
        }
    }

    /// The memory as bytes.
    fn bytes(&mut self) -> &mut [u8] {
        match self {
            Out::Uninit(m) => zeroed(m),
            Out::Zeroed(m) => m,
        }
    }
}

/// Where a read puts the tensor.
pub enum Target<'a> {
    /// Memory of [`out_len`] bytes, every byte of which the read writes.
    Fill(Out<'a>),
    /// A raw tensor's whole bytes already in memory (a copy-on-write mapping of its file):
    /// the read only verifies them.
    Mapped(&'a [u8]),
}

/// Runs every read on rayon's threads, and each large one in parallel chunks; returns each
/// one's outcome, in order. Each tensor is verified the first time it is read, if `src`
/// verifies.
pub fn read_all(src: &Source, reads: Vec<(Request, Target<'_>)>) -> Vec<Result<(), ReadFailure>> {
    if reads.len() == 1 {
        return reads.into_iter().map(|(r, t)| read(src, r, t)).collect();
    }
    reads
        .into_par_iter()
        .map(|(r, t)| read(src, r, t))
        .collect()
}

/// Reads `req` into `target`.
fn read(src: &Source, req: Request, target: Target<'_>) -> Result<(), ReadFailure> {
    let t = src.tensor_at(req.index);
    let check = src.verifies() && !src.is_verified(req.index);
    let named = |e| ReadFailure::Read(src.in_file(src.file_of(req.index), e));
    match target {
        Target::Mapped(bytes) => {
            let raw = raw_bytes(&t)?;
            if bytes.len() != raw.len() || req.rows != Rows::all(&t) {
                return Err(ReadFailure::Request(format!(
                    "tensor {:?}: a mapping of {} bytes for {} bytes",
                    t.name(),
                    bytes.len(),
                    raw.len()
                )));
            }
            if check {
                let crc = crc32(bytes);
                t.verify_with(|b| if std::ptr::eq(b, raw) { crc } else { crc32(b) })
                    .map_err(named)?;
            }
        }
        Target::Fill(mut out) => {
            let len = out_len(&t, req.kind, req.rows)?;
            if out.len() != len {
                return Err(ReadFailure::Request(format!(
                    "tensor {:?}: a buffer of {} bytes for {len} bytes",
                    t.name(),
                    out.len()
                )));
            }
            if req.rows == Rows::all(&t) && out.len() != 0 {
                fill_whole(&t, req.kind, out, check).map_err(|e| match e {
                    ReadFailure::Read(e) => named(e),
                    e => e,
                })?;
            } else {
                if check {
                    t.verify_with(crc32).map_err(named)?;
                }
                fill_rows(&t, req.kind, req.rows, out.bytes())?;
            }
        }
    }
    if check {
        src.set_verified(req.index);
    }
    Ok(())
}

/// Runs `f(first element, chunk)` on `out` cut into chunks of [`CHUNK`] elements of `size`
/// bytes (one chunk if it is small), on rayon's threads; gives what each returned, in order.
fn chunked<R: Send>(
    mut out: Out<'_>,
    size: usize,
    f: impl Fn(usize, &mut [u8]) -> Result<R, ReadFailure> + Sync,
) -> Result<Vec<R>, ReadFailure> {
    let bytes = CHUNK * size;
    if out.len() <= 2 * bytes {
        return Ok(vec![f(0, out.bytes())?]);
    }
    match out {
        Out::Uninit(m) => m
            .par_chunks_mut(bytes)
            .enumerate()
            .map(|(i, c)| f(i * CHUNK, zeroed(c)))
            .collect(),
        Out::Zeroed(m) => m
            .par_chunks_mut(bytes)
            .enumerate()
            .map(|(i, c)| f(i * CHUNK, c))
            .collect(),
    }
}

/// Reads the whole tensor `t` as `kind` into `out` (not empty) and, with `check`, verifies
/// it: each chunk's codes and signs (or raw bytes) are hashed right before they are decoded
/// (or copied), and the combined checksums are compared with the file's after.
fn fill_whole(
    t: &TensorView<'_>,
    kind: Kind,
    out: Out<'_>,
    check: bool,
) -> Result<(), ReadFailure> {
    let cast = |what| ReadFailure::Request(format!("{what}: the buffer is not aligned"));
    if kind == Kind::Raw {
        let raw = raw_bytes(t)?;
        if raw.len() != out.len() {
            return Err(ReadFailure::Request(format!(
                "tensor {:?}: a buffer of {} bytes for {} bytes",
                t.name(),
                out.len(),
                raw.len()
            )));
        }
        let parts = chunked(out, 1, |first, o| {
            let part = &raw[first..first + o.len()];
            let h = check.then(|| hasher(part));
            o.copy_from_slice(part);
            Ok(h)
        })?;
        if check {
            let crc = combine(parts.into_iter().flatten());
            t.verify_with(|b| if std::ptr::eq(b, raw) { crc } else { crc32(b) })
                .map_err(ReadFailure::Read)?;
        }
        return Ok(());
    }
    // An encoded tensor (a raw one fails in the decode call, before any checksum is used).
    let codes = t.codes().unwrap_or(&[]);
    let signs = t.signs().unwrap_or(&[]);
    let numel = out.len() / kind.size();
    let parts = chunked(out, kind.size(), |first, o| {
        let n = o.len() / kind.size();
        let h = match (check, codes.get(first..first + n)) {
            (true, Some(c)) => {
                let end = if first + n == numel {
                    signs.len()
                } else {
                    (first + n) / 8
                };
                Some((hasher(c), hasher(signs.get(first / 8..end).unwrap_or(&[]))))
            }
            _ => None,
        };
        let at = first as u64;
        match kind {
            Kind::F32 => t.decode_f32(at, <[f32]>::mut_from_bytes(o).map_err(|_| cast("f32"))?),
            Kind::F16 => t.decode_f16(at, <[f16]>::mut_from_bytes(o).map_err(|_| cast("f16"))?),
            _ => t.decode_bf16(at, <[bf16]>::mut_from_bytes(o).map_err(|_| cast("bf16"))?),
        }?;
        Ok(h)
    })?;
    if check {
        let (c, s): (Vec<Hasher>, Vec<Hasher>) = parts.into_iter().flatten().unzip();
        let (c, s) = (combine(c), combine(s));
        t.verify_with(|b| {
            if std::ptr::eq(b, codes) {
                c
            } else if std::ptr::eq(b, signs) {
                s
            } else {
                crc32(b)
            }
        })
        .map_err(ReadFailure::Read)?;
    }
    Ok(())
}

/// Reads `rows` of `t` as `kind` into `out`.
fn fill_rows(
    t: &TensorView<'_>,
    kind: Kind,
    rows: Rows,
    out: &mut [u8],
) -> Result<(), ReadFailure> {
    if out.is_empty() {
        return Ok(());
    }
    let (slab, _) = slab(t);
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
            let raw = raw_bytes(t)?;
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

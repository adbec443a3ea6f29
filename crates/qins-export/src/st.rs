//! Writing one safetensors file, streamed: the header, then each tensor's bytes, decoded in
//! bounded chunks on every core.
//!
//! The layout is the one `safetensors::serialize_to_file` produces (checked by a test): an
//! 8-byte little-endian header length; a JSON header, `__metadata__` first, then the tensors in
//! data order, padded with spaces to a multiple of 8 bytes; the data, tensors ordered by
//! descending dtype (safetensors' alignment order) then name. Only the header is built up
//! front; the data is produced chunk by chunk, so memory does not grow with the tensors' size.
//! Each tensor's sections are verified just before it is written (the only pass over them
//! besides the decoding), and the input's pages are released behind each chunk, so the
//! resident memory is bounded by the largest tensor's stored bytes, not by the file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use half::{bf16, f16};
use qins_format::Dtype;
use qins_read::{DecodeError, MappedModel, TensorView};
use qins_stdx::direct::{self, Direct};
use rayon::prelude::*;
use safetensors::tensor::TensorInfo;
use serde::ser::{SerializeMap, Serializer};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::{ExportError, Progress};

/// The largest header safetensors readers accept (`safetensors::tensor::MAX_HEADER_SIZE`).
pub(crate) const MAX_HEADER_SIZE: usize = 100_000_000;

/// Elements decoded per chunk before it is written: 4 Mi (16 MiB of f32; fewer in unit tests,
/// so that tensors take several). This, not the tensor's size, bounds the exporter's memory.
const CHUNK_ELEMENTS: usize = if cfg!(test) { 1 << 12 } else { 1 << 22 };
/// Elements per parallel decode job within a chunk (a multiple of 8: whole sign bytes).
const TASK_ELEMENTS: usize = 1 << 16;
/// Raw bytes written per progress step.
const RAW_STEP: usize = 16 << 20;

/// One tensor of the export: where it comes from and what it becomes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OutTensor<'q> {
    /// The tensor in the `.qins`.
    pub view: TensorView<'q>,
    /// Its name in the safetensors file: the `.qins` name, without the module's directory
    /// for a tensor of a sentence-transformers module (spec §18.1).
    pub name: &'q str,
    /// The dtype written: the tensor's own for raw tensors.
    pub dtype: Dtype,
    /// Its data bytes in the output.
    pub bytes: u64,
    /// The `.qins` file it is in (a shard, for a set).
    pub file: &'q Path,
}

impl<'q> OutTensor<'q> {
    pub(crate) fn new(
        view: TensorView<'q>,
        name: &'q str,
        dtype: Dtype,
        file: &'q Path,
    ) -> OutTensor<'q> {
        // Validated by the reader: numel × bits is a whole number of bytes, within u64.
        let bytes = view.numel() * u64::from(dtype.bits()) / 8;
        OutTensor {
            view,
            name,
            dtype,
            bytes,
            file,
        }
    }
}

/// safetensors' dtype for a registry dtype (every one of §13.1 has one).
pub(crate) fn st_dtype(d: Dtype) -> safetensors::Dtype {
    use safetensors::Dtype as S;
    match d {
        Dtype::BOOL => S::BOOL,
        Dtype::U8 => S::U8,
        Dtype::I8 => S::I8,
        Dtype::I16 => S::I16,
        Dtype::U16 => S::U16,
        Dtype::I32 => S::I32,
        Dtype::U32 => S::U32,
        Dtype::I64 => S::I64,
        Dtype::U64 => S::U64,
        Dtype::F16 => S::F16,
        Dtype::BF16 => S::BF16,
        Dtype::F32 => S::F32,
        Dtype::F64 => S::F64,
        Dtype::F8_E5M2 => S::F8_E5M2,
        Dtype::F8_E4M3 => S::F8_E4M3,
        Dtype::F8_E8M0 => S::F8_E8M0,
        Dtype::F8_E4M3FNUZ => S::F8_E4M3FNUZ,
        Dtype::F8_E5M2FNUZ => S::F8_E5M2FNUZ,
        Dtype::F4 => S::F4,
        Dtype::F6_E2M3 => S::F6_E2M3,
        Dtype::F6_E3M2 => S::F6_E3M2,
        Dtype::C64 => S::C64,
    }
}

/// The header of one file: `__metadata__` (keys sorted), then the tensors in data order.
struct Header<'a> {
    metadata: &'a BTreeMap<String, String>,
    entries: Vec<(&'a str, TensorInfo)>,
}

impl serde::Serialize for Header<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let extra = usize::from(!self.metadata.is_empty());
        let mut map = s.serialize_map(Some(self.entries.len() + extra))?;
        if !self.metadata.is_empty() {
            map.serialize_entry("__metadata__", self.metadata)?;
        }
        for (name, info) in &self.entries {
            map.serialize_entry(name, info)?;
        }
        map.end()
    }
}

/// The order safetensors writes tensors in: descending dtype (its alignment order), then name.
pub(crate) fn data_order(tensors: &mut [&OutTensor<'_>]) {
    tensors.sort_by(|a, b| {
        st_dtype(b.dtype)
            .cmp(&st_dtype(a.dtype))
            .then_with(|| a.name.cmp(b.name))
    });
}

/// Builds the header bytes (length prefix included) of a file holding `tensors`, in the
/// order given.
pub(crate) fn header(
    shard: &str,
    tensors: &[&OutTensor<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, ExportError> {
    let unrep = |reason: String| ExportError::Unrepresentable {
        shard: shard.to_string(),
        reason,
    };
    let too_big = || unrep("a size does not fit this platform's usize".to_string());
    let mut offset = 0usize;
    let mut entries = Vec::with_capacity(tensors.len());
    for t in tensors {
        let shape = t
            .view
            .shape()
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| too_big()))
            .collect::<Result<Vec<_>, _>>()?;
        let end = usize::try_from(t.bytes)
            .ok()
            .and_then(|b| offset.checked_add(b))
            .ok_or_else(too_big)?;
        let info = TensorInfo {
            dtype: st_dtype(t.dtype),
            shape,
            data_offsets: (offset, end),
        };
        entries.push((t.name, info));
        offset = end;
    }
    let json = serde_json::to_vec(&Header { metadata, entries })
        .map_err(|e| unrep(format!("header: {e}")))?;
    let len = json.len().next_multiple_of(8);
    if len > MAX_HEADER_SIZE {
        return Err(unrep(format!(
            "its header would be {len} bytes, more than the {MAX_HEADER_SIZE} safetensors accepts"
        )));
    }
    let mut out = Vec::with_capacity(8 + len);
    out.extend_from_slice(&(len as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.resize(8 + len, b' ');
    Ok(out)
}

/// Decode buffers, one per output type, at most [`CHUNK_ELEMENTS`] long.
#[derive(Default)]
struct Buf {
    f32: Vec<f32>,
    bf16: Vec<bf16>,
    f16: Vec<f16>,
}

impl Buf {
    /// The first `len` elements of the buffer of `dtype`, as little-endian bytes.
    fn bytes(&self, dtype: Dtype, len: usize) -> &[u8] {
        match dtype {
            Dtype::F32 => self.f32[..len].as_bytes(),
            Dtype::BF16 => self.bf16[..len].as_bytes(),
            _ => self.f16[..len].as_bytes(),
        }
    }
}

/// Two pairs of decode buffers, reused from tensor to tensor and file to file: one is decoded
/// into while the other is written.
#[derive(Default)]
pub(crate) struct Scratch([Buf; 2]);

fn buffer<T: Clone + Default>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    if v.len() < len {
        v.resize(len, T::default());
    }
    &mut v[..len]
}

/// The buffer's elements put in little-endian order (in place; nothing to do on a
/// little-endian machine).
fn to_le<T: IntoBytes + FromBytes + Immutable>(v: &mut [T]) {
    if cfg!(target_endian = "big") {
        let size = std::mem::size_of::<T>();
        v.as_mut_bytes()
            .chunks_exact_mut(size)
            .for_each(|c| c.reverse());
    }
}

/// Decodes elements `first..first + out.len()` of `t` on every core with `f`.
fn decode_par<'q, T: Send + IntoBytes + FromBytes + Immutable>(
    t: &TensorView<'q>,
    first: u64,
    out: &mut [T],
    f: impl Fn(&TensorView<'q>, u64, &mut [T]) -> Result<(), DecodeError> + Sync,
) {
    out.par_chunks_mut(TASK_ELEMENTS)
        .enumerate()
        .for_each(|(k, part)| {
            f(t, first + (k * TASK_ELEMENTS) as u64, part)
                .expect("the exporter decodes ranges within the tensor");
            to_le(part);
        });
}

/// Elements `first..first + len` of `t` decoded into `buf`'s buffer of `dtype`.
fn decode_into(t: &TensorView<'_>, dtype: Dtype, first: u64, len: usize, buf: &mut Buf) {
    match dtype {
        Dtype::F32 => decode_par(t, first, buffer(&mut buf.f32, len), TensorView::decode_f32),
        Dtype::BF16 => decode_par(
            t,
            first,
            buffer(&mut buf.bf16, len),
            TensorView::decode_bf16,
        ),
        Dtype::F16 => decode_par(t, first, buffer(&mut buf.f16, len), TensorView::decode_f16),
        other => unreachable!("encoded tensors are exported as F32, BF16 or F16, not {other}"),
    }
}

/// A decoded chunk waiting for its write.
struct Pending<'t, 'q> {
    /// The buffer pair it is in.
    buf: usize,
    tensor: &'t OutTensor<'q>,
    first: u64,
    len: usize,
}

/// A safetensors file's data on its way out: each chunk of decoded values is written while
/// the next one is decoded, whether it belongs to the same tensor or the next (so that a
/// tensor of a single chunk, the common case, shares the cores with its neighbours too).
struct Stream<'t, 'q, 'a, W> {
    w: W,
    scratch: &'a mut Scratch,
    progress: &'a dyn Progress,
    input: &'a MappedModel,
    pending: Option<Pending<'t, 'q>>,
}

impl<'t, 'q, W: Write + Send> Stream<'t, 'q, '_, W> {
    /// Runs `produce` on the buffer pair that the pending chunk does not use (its index given
    /// too) beside the write of the pending chunk; the write's outcome first, then the input's
    /// pages and the progress of what was written.
    fn beside_write(
        &mut self,
        produce: impl FnOnce(usize, &mut Buf) + Send,
    ) -> std::io::Result<()> {
        let free = self.pending.as_ref().map_or(0, |p| 1 - p.buf);
        let [x, y] = &mut self.scratch.0;
        let (free_buf, other) = if free == 0 { (x, &*y) } else { (y, &*x) };
        let pending = self.pending.take();
        let w = &mut self.w;
        let (written, ()) = rayon::join(
            || match &pending {
                Some(p) => w.write_all(other.bytes(p.tensor.dtype, p.len)),
                None => Ok(()),
            },
            || produce(free, free_buf),
        );
        written?;
        if let Some(p) = pending {
            self.done(&p);
        }
        Ok(())
    }

    /// After chunk `p`'s write: its input pages released, its bytes counted, and its tensor
    /// done if it was the last chunk.
    fn done(&self, p: &Pending<'t, 'q>) {
        let t = &p.tensor.view;
        let (codes, signs) = (t.codes().unwrap_or(&[]), t.signs().unwrap_or(&[]));
        // Chunks start on whole sign bytes (CHUNK_ELEMENTS is a multiple of 8).
        let (a, b) = (p.first as usize, p.first as usize + p.len);
        self.input.release(&codes[a..b]);
        self.input.release(&signs[a / 8..b.div_ceil(8)]);
        self.progress
            .advance(p.len as u64 * u64::from(p.tensor.dtype.bits()) / 8);
        if b as u64 == t.numel() {
            self.finished(p.tensor);
        }
    }

    /// After a tensor's last bytes: all of its input pages released, and the progress told.
    fn finished(&self, t: &OutTensor<'_>) {
        for (_, _, bytes) in t.view.sections() {
            self.input.release(bytes);
        }
        self.progress.tensor_done(t.view.name());
    }

    /// Writes the pending chunk, if any.
    fn flush(&mut self) -> std::io::Result<()> {
        self.beside_write(|_, _| ())
    }

    /// Writes tensor `out`: raw bytes as they are (after the pending chunk), an encoded
    /// tensor's values decoded chunk by chunk, each beside the write of the one before.
    fn tensor(&mut self, out: &'t OutTensor<'q>) -> std::io::Result<()> {
        let t = &out.view;
        if let Some(raw) = t.raw_bytes() {
            self.flush()?;
            for part in raw.chunks(RAW_STEP) {
                self.w.write_all(part)?;
                self.input.release(part);
                self.progress.advance(part.len() as u64);
            }
            self.finished(out);
            return Ok(());
        }
        let n = t.numel();
        if n == 0 {
            self.flush()?;
            self.finished(out);
            return Ok(());
        }
        let mut first = 0u64;
        while first < n {
            let len = (n - first).min(CHUNK_ELEMENTS as u64) as usize;
            let mut buf = 0;
            self.beside_write(|free, b| {
                decode_into(t, out.dtype, first, len, b);
                buf = free;
            })?;
            self.pending = Some(Pending {
                buf,
                tensor: out,
                first,
                len,
            });
            first += len as u64;
        }
        Ok(())
    }
}

/// Synced files from this size on are written around the page cache ([`Direct`]), as
/// `qins-write` writes a `.qins`. Any size but 0 in unit tests, which exercise both paths.
const DIRECT_MIN: u64 = if cfg!(test) { 1 } else { direct::MIN_SIZE };

/// Where a safetensors file's bytes go, front to back: through a buffer into the page cache,
/// or straight to the disk ([`Direct`]).
enum Out {
    Buffered(BufWriter<File>),
    Direct { d: Box<Direct>, at: u64 },
}

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Out::Buffered(w) => w.write(buf),
            Out::Direct { d, at } => {
                d.write_at(*at, buf)?;
                *at += buf.len() as u64;
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Out::Buffered(w) => w.flush(),
            Out::Direct { .. } => Ok(()),
        }
    }
}

/// Writes the safetensors file `path`: `header` (from [`header`]), then the data of `tensors`,
/// which must be in the header's order, each verified first; `input` is the file they are
/// read from. The file is synced to disk if `sync`, and then, from [`DIRECT_MIN`] bytes on,
/// written around the page cache. Returns the file's size.
pub(crate) fn write_file(
    path: &Path,
    header: &[u8],
    tensors: &[&OutTensor<'_>],
    scratch: &mut Scratch,
    progress: &dyn Progress,
    input: &MappedModel,
    sync: bool,
) -> Result<u64, ExportError> {
    let io = || ExportError::io("write", path);
    let file = File::create(path).map_err(io())?;
    let size = header.len() as u64 + tensors.iter().map(|t| t.bytes).sum::<u64>();
    let direct = if sync && size >= DIRECT_MIN {
        // Direct writes fill the file at offsets; sized first, it never grows block by block.
        file.set_len(size).map_err(io())?;
        Direct::open(path, &file)
    } else {
        None
    };
    let w = match direct {
        Some(d) => Out::Direct {
            d: Box::new(d),
            at: 0,
        },
        None => Out::Buffered(BufWriter::with_capacity(
            1 << 20,
            file.try_clone().map_err(io())?,
        )),
    };
    let mut stream = Stream {
        w,
        scratch,
        progress,
        input,
        pending: None,
    };
    stream.w.write_all(header).map_err(io())?;
    for t in tensors {
        t.view
            .verify()
            .map_err(|e| ExportError::damaged(t.file.into(), e))?;
        stream.tensor(t).map_err(io())?;
    }
    stream.flush().map_err(io())?;
    match stream.w {
        Out::Buffered(w) => drop(w.into_inner().map_err(|e| io()(e.into_error()))?),
        Out::Direct { d, .. } => d.finish().map_err(io())?,
    }
    if sync {
        file.sync_all().map_err(io())?;
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use qins_format::codec::{row_scales, scan, RowScales};
    use qins_format::{Codec, Quantizer, Storage};
    use qins_write::{Plan, TensorSpec, Writer};

    struct NoProgress;
    impl Progress for NoProgress {}

    /// Tensors of several chunks, of one chunk and of none, encoded and raw, in F32 and BF16:
    /// each chunk written while the next is decoded, across tensors, gives the file the
    /// decode of each whole tensor gives.
    #[test]
    fn pipelined_chunks_give_each_tensor_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.qins");
        let sizes = [
            (3 * CHUNK_ELEMENTS as u64 + 40) / 8,
            8,
            100,
            CHUNK_ELEMENTS as u64 / 8,
        ];
        let mut plan = Plan::new();
        let mut values = Vec::new();
        for (k, &rows) in sizes.iter().enumerate() {
            let n = (rows * 8) as usize;
            let v: Vec<f32> = (0..n)
                .map(|i| ((i * 7919 + k * 31) % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let storage = Storage::Encoded {
                codec: Codec::LloydRows,
                row_scales: true,
            };
            plan.tensors.push(TensorSpec::new(
                format!("e{k}"),
                Dtype::BF16,
                vec![rows, 8],
                storage,
            ));
            plan.tensors.push(TensorSpec::new(
                format!("r{k}"),
                Dtype::U8,
                vec![3],
                Storage::Raw,
            ));
            values.push(v);
        }
        plan.tensors.push(TensorSpec::new(
            "z",
            Dtype::F32,
            vec![0, 8],
            Storage::Encoded {
                codec: Codec::Log,
                row_scales: false,
            },
        ));
        let mut w = Writer::create(&path, plan.clone(), false).unwrap();
        for (v, spec) in values.iter().zip(plan.tensors.iter().step_by(2)) {
            let scales = row_scales(Codec::LloydRows, v, &spec.shape)
                .unwrap()
                .unwrap();
            let rs = RowScales::new(&scales, &spec.shape).unwrap();
            let q = Quantizer::new(Codec::LloydRows, &scan(v, 0, Some(&rs)).unwrap());
            w.begin_encoded(&q, Some(&scales)).unwrap();
            let (mut c, mut s) = (vec![0u8; v.len()], vec![0u8; v.len().div_ceil(8)]);
            q.encode(v, 0, Some(&rs), &mut c, &mut s).unwrap();
            w.write_encoded_part(&c, &s).unwrap();
            w.write_raw(&[1, 2, 3]).unwrap();
        }
        w.encode_tensor(&[], None).unwrap();
        w.finish().unwrap();

        let file = qins_read::open_model(&path).unwrap();
        let qins = file.parse().unwrap();
        for dtype in [Dtype::F32, Dtype::BF16] {
            let outs: Vec<OutTensor<'_>> = qins
                .tensors()
                .map(|t| {
                    let d = if t.codec().is_some() {
                        dtype
                    } else {
                        t.dtype()
                    };
                    OutTensor::new(t, t.name(), d, &path)
                })
                .collect();
            let refs: Vec<&OutTensor<'_>> = outs.iter().collect();
            let header = header("m", &refs, &BTreeMap::new()).unwrap();
            let st = dir.path().join(format!("{dtype}.safetensors"));
            let mut scratch = Scratch::default();
            write_file(&st, &header, &refs, &mut scratch, &NoProgress, &file, false).unwrap();
            let bytes = std::fs::read(&st).unwrap();
            // The same bytes synced, so written around the page cache (any size in unit tests).
            let sd = dir.path().join(format!("{dtype}.direct.safetensors"));
            let scratch = &mut Scratch::default();
            write_file(&sd, &header, &refs, scratch, &NoProgress, &file, true).unwrap();
            assert!(std::fs::read(&sd).unwrap() == bytes, "{dtype}, direct");
            let mut want = header.clone();
            for t in &outs {
                match t.view.raw_bytes() {
                    Some(raw) => want.extend_from_slice(raw),
                    None if dtype == Dtype::F32 => {
                        let mut out = vec![0f32; t.view.numel() as usize];
                        t.view.decode_f32(0, &mut out).unwrap();
                        want.extend(out.iter().flat_map(|x| x.to_le_bytes()));
                    }
                    None => {
                        let mut out = vec![bf16::ZERO; t.view.numel() as usize];
                        t.view.decode_bf16(0, &mut out).unwrap();
                        want.extend(out.iter().flat_map(|x| x.to_le_bytes()));
                    }
                }
            }
            assert!(bytes == want, "{dtype}");
        }
    }
}

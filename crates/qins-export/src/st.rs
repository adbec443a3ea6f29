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
use rayon::prelude::*;
use safetensors::tensor::TensorInfo;
use serde::ser::{SerializeMap, Serializer};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::{ExportError, Progress};

/// The largest header safetensors readers accept (`safetensors::tensor::MAX_HEADER_SIZE`).
pub(crate) const MAX_HEADER_SIZE: usize = 100_000_000;

/// Elements decoded per chunk before it is written: 4 Mi (16 MiB of f32). This, not the
/// tensor's size, bounds the exporter's memory.
const CHUNK_ELEMENTS: usize = 1 << 22;
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

/// Reusable decode buffers, one per output type, at most [`CHUNK_ELEMENTS`] long.
#[derive(Default)]
pub(crate) struct Scratch {
    f32: Vec<f32>,
    bf16: Vec<bf16>,
    f16: Vec<f16>,
}

fn buffer<T: Clone + Default>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    if v.len() < len {
        v.resize(len, T::default());
    }
    &mut v[..len]
}

/// The buffer's elements as little-endian bytes (in place on a big-endian machine).
fn le_bytes<T: IntoBytes + FromBytes + Immutable>(v: &mut [T]) -> &[u8] {
    if cfg!(target_endian = "big") {
        let size = std::mem::size_of::<T>();
        v.as_mut_bytes()
            .chunks_exact_mut(size)
            .for_each(|c| c.reverse());
    }
    v.as_bytes()
}

/// Decodes elements `first..first + out.len()` of `t` on every core with `f`.
fn decode_par<'q, T: Send>(
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
        });
}

/// Writes `out`'s data: raw bytes as they are, encoded tensors decoded chunk by chunk.
/// The pages of `input` read for each chunk are released once it is written.
fn write_data(
    w: &mut impl Write,
    out: &OutTensor<'_>,
    scratch: &mut Scratch,
    progress: &dyn Progress,
    input: &MappedModel,
) -> std::io::Result<()> {
    let t = &out.view;
    if let Some(raw) = t.raw_bytes() {
        for part in raw.chunks(RAW_STEP) {
            w.write_all(part)?;
            input.release(part);
            progress.advance(part.len() as u64);
        }
        return Ok(());
    }
    let (codes, signs) = (t.codes().unwrap_or(&[]), t.signs().unwrap_or(&[]));
    let n = t.numel();
    let mut first = 0u64;
    while first < n {
        let len = (n - first).min(CHUNK_ELEMENTS as u64) as usize;
        let bytes = match out.dtype {
            Dtype::F32 => {
                let buf = buffer(&mut scratch.f32, len);
                decode_par(t, first, buf, TensorView::decode_f32);
                w.write_all(le_bytes(buf))?;
                len * 4
            }
            Dtype::BF16 => {
                let buf = buffer(&mut scratch.bf16, len);
                decode_par(t, first, buf, TensorView::decode_bf16);
                w.write_all(le_bytes(buf))?;
                len * 2
            }
            Dtype::F16 => {
                let buf = buffer(&mut scratch.f16, len);
                decode_par(t, first, buf, TensorView::decode_f16);
                w.write_all(le_bytes(buf))?;
                len * 2
            }
            other => unreachable!("encoded tensors are exported as F32, BF16 or F16, not {other}"),
        };
        // Chunks start on whole sign bytes (CHUNK_ELEMENTS is a multiple of 8).
        let (a, b) = (first as usize, first as usize + len);
        input.release(&codes[a..b]);
        input.release(&signs[a / 8..b.div_ceil(8)]);
        progress.advance(bytes as u64);
        first += len as u64;
    }
    Ok(())
}

/// Writes the safetensors file `path`: `header` (from [`header`]), then the data of `tensors`,
/// which must be in the header's order, each verified first; `input` is the file they are
/// read from. Returns the file's size.
pub(crate) fn write_file(
    path: &Path,
    header: &[u8],
    tensors: &[&OutTensor<'_>],
    scratch: &mut Scratch,
    progress: &dyn Progress,
    input: &MappedModel,
) -> Result<u64, ExportError> {
    let io = || ExportError::io("write", path);
    let file = File::create(path).map_err(io())?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(header).map_err(io())?;
    let mut size = header.len() as u64;
    for t in tensors {
        t.view
            .verify()
            .map_err(|e| ExportError::damaged(t.file.into(), e))?;
        write_data(&mut w, t, scratch, progress, input).map_err(io())?;
        for (_, _, bytes) in t.view.sections() {
            input.release(bytes);
        }
        size += t.bytes;
        progress.tensor_done(t.view.name());
    }
    let file = w.into_inner().map_err(|e| io()(e.into_error()))?;
    file.sync_all().map_err(io())?;
    Ok(size)
}

//! A zero-copy, validating reader of `.qins` files (`spec/qins-v1.md`).
//!
//! [`Qins::parse`] takes the whole file as a byte slice and validates its structure once, in
//! the order of §17 and in time proportional to the header: checked arithmetic, limits, the
//! header checksum, names, shapes, section sizes, the canonical layout and the LUTs. Afterwards
//! nothing about the structure can fail: [`TensorView`]s borrow codes, sign bits, tables and
//! raw bytes from the buffer and decode into the caller's buffers. [`Qins::verify`] reads every
//! byte of the data (§14). [`open`] maps a file with memmap2.
//!
//! A model stored as a set of shards (§21) is opened with [`open_model`], from its index or
//! any shard (or a single file), and read through [`Model`] as one model.
//!
//! ```no_run
//! let file = qins_read::open("model.qins".as_ref())?;
//! let qins = file.parse()?;
//! for t in qins.tensors() {
//!     println!("{} {:?} {}", t.name(), t.shape(), t.dtype());
//! }
//! # Ok::<(), qins_read::ReadError>(())
//! ```

mod error;
mod parse;
mod set;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use qins_format::decode::EncodedParts;
use qins_format::{Codec, Dtype, Preamble, Storage, TensorRecord};

pub use error::{DecodeError, ReadError};
pub use set::{open_model, Index, IndexShard, MappedModel, Model};

/// A validated `.qins` file borrowed from a byte buffer.
#[derive(Debug)]
pub struct Qins<'a> {
    data: &'a [u8],
    preamble: Preamble,
    tensors: Vec<TensorInfo<'a>>,
    assets: Vec<AssetInfo<'a>>,
    by_name: HashMap<&'a str, usize>,
    metadata: BTreeMap<String, String>,
    luts: Vec<[f32; 256]>,
}

#[derive(Debug)]
struct TensorInfo<'a> {
    name: &'a str,
    record: &'a TensorRecord,
    dtype: Dtype,
    shape: Vec<u64>,
    storage: Storage,
}

#[derive(Debug)]
struct AssetInfo<'a> {
    name: &'a str,
    data: &'a [u8],
    crc: u32,
    offset: u64,
}

impl<'a> Qins<'a> {
    /// Parses and validates `data`, the whole file (§17 steps 1–9).
    pub fn parse(data: &'a [u8]) -> Result<Qins<'a>, ReadError> {
        parse::parse(data)
    }

    /// The whole file.
    pub fn bytes(&self) -> &'a [u8] {
        self.data
    }

    /// `(major, minor)` format version.
    pub fn version(&self) -> (u16, u16) {
        (
            self.preamble.version_major.get(),
            self.preamble.version_minor.get(),
        )
    }

    /// The section alignment.
    pub fn alignment(&self) -> u32 {
        self.preamble.alignment.get()
    }

    /// The size of the header block in bytes.
    pub fn header_size(&self) -> u64 {
        self.preamble.header_size.get()
    }

    /// The file size in bytes.
    pub fn file_size(&self) -> u64 {
        self.preamble.file_size.get()
    }

    /// The header CRC (§8), which a set's index records for each shard (§21.2).
    pub fn header_crc32(&self) -> u32 {
        let end = self.header_size() as usize;
        let b = &self.data[end - 4..end];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The length of the LUT table section.
    pub fn lut_table_size(&self) -> u64 {
        self.preamble.lut_table.length.get()
    }

    /// The number of tensors.
    pub fn tensor_count(&self) -> usize {
        self.tensors.len()
    }

    /// The tensors in file order.
    pub fn tensors(&self) -> impl ExactSizeIterator<Item = TensorView<'_>> + '_ {
        (0..self.tensors.len()).map(move |i| self.tensor_at(i))
    }

    /// The tensor at position `index` in file order.
    ///
    /// # Panics
    /// If `index >= tensor_count()`.
    pub fn tensor_at(&self, index: usize) -> TensorView<'_> {
        let t = &self.tensors[index];
        let r = t.record;
        let slice = |s: &qins_format::SectionRef| {
            let a = s.offset.get() as usize;
            &self.data[a..a + s.length.get() as usize]
        };
        let lut = match t.storage {
            Storage::Encoded { .. } => Some(&self.luts[r.lut_index.get() as usize]),
            Storage::Raw => None,
        };
        TensorView {
            record: r,
            name: t.name,
            dtype: t.dtype,
            shape: &t.shape,
            storage: t.storage,
            params: [r.param0.get(), r.param1.get()],
            data: slice(&r.data),
            signs: slice(&r.signs),
            scales: slice(&r.scales),
            lut,
        }
    }

    /// The tensors' names in file order.
    pub fn tensor_names(&self) -> impl ExactSizeIterator<Item = &'a str> + '_ {
        self.tensors.iter().map(|t| t.name)
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        self.by_name.get(name).map(|&i| self.tensor_at(i))
    }

    /// The assets in file order: `(name, bytes)`.
    pub fn assets(&self) -> impl ExactSizeIterator<Item = (&'a str, &'a [u8])> + '_ {
        self.assets.iter().map(|a| (a.name, a.data))
    }

    /// The metadata (§7).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Verifies every byte of the data (§14): section checksums in canonical order, zero
    /// padding, unused sign bits, row scales. Reports the first problem.
    pub fn verify(&self) -> Result<(), ReadError> {
        self.verify_and_release(&mut |_| {})
    }

    /// [`Qins::verify`], handing each part of the file to `done` as soon as it has been
    /// checked (in file order, a section in pieces of at most 16 MiB), so that a caller that
    /// maps the file can release the pages behind the check ([`MappedFile::release`]) and
    /// verify a file larger than the memory it should use. The checks and their order are
    /// [`Qins::verify`]'s.
    pub fn verify_and_release(&self, done: &mut dyn FnMut(&[u8])) -> Result<(), ReadError> {
        self.walk(true, done)?;
        for t in self.tensors() {
            t.verify_values()?;
            done(t.scales);
            done(
                t.signs
                    .get(t.signs.len().saturating_sub(1)..)
                    .unwrap_or(&[]),
            );
        }
        Ok(())
    }

    /// Verifies every byte of the data outside the tensors' own sections: the LUT table, the
    /// assets and all padding. Together with [`TensorView::verify`] on every tensor it checks
    /// exactly what [`Qins::verify`] checks, so that a reader can verify each tensor just
    /// before it reads it, in one pass over the data, instead of in a pass of its own.
    pub fn verify_frame(&self) -> Result<(), ReadError> {
        self.walk(false, &mut |_| {})
    }

    /// [`Qins::verify_frame`], handing each part of the file to `done` as soon as it has been
    /// checked, as [`Qins::verify_and_release`] does.
    pub fn verify_frame_and_release(&self, done: &mut dyn FnMut(&[u8])) -> Result<(), ReadError> {
        self.walk(false, done)
    }

    /// Walks the sections in canonical order, checking the padding before each and the
    /// checksum of each (of the tensors' sections only if `tensors`), and hands each part
    /// checked to `done`.
    fn walk(&self, tensors: bool, done: &mut dyn FnMut(&[u8])) -> Result<(), ReadError> {
        let align = u64::from(self.alignment());
        let mut end = self.header_size();
        let mut check = |name: &dyn Fn() -> String, offset: u64, bytes: &[u8], stored, crc| {
            // Padding from the previous section's end to this one's start.
            let pad_end = offset.min(qins_format::align_up(end, align).unwrap_or(offset));
            if let Some(i) = self.data[end as usize..pad_end as usize]
                .iter()
                .position(|&b| b != 0)
            {
                let offset = end + i as u64;
                return Err(ReadError::NonZeroPadding {
                    offset,
                    value: self.data[offset as usize],
                });
            }
            done(&self.data[end as usize..pad_end as usize]);
            if crc {
                let mut h = crc32fast::Hasher::new();
                for part in bytes.chunks(VERIFY_CHUNK) {
                    h.update(part);
                    done(part);
                }
                check_computed_crc(name, h.finalize(), stored)?;
            }
            end = offset + bytes.len() as u64;
            Ok(())
        };
        let lt = self.preamble.lut_table;
        let off = lt.offset.get() as usize;
        check(
            &|| "lut table".to_string(),
            lt.offset.get(),
            &self.data[off..off + lt.length.get() as usize],
            lt.crc.get(),
            true,
        )?;
        for i in 0..self.tensors.len() {
            let t = self.tensor_at(i);
            for (part, s, bytes) in t.sections() {
                check(
                    &|| format!("tensor {:?} {part}", t.name),
                    s.offset.get(),
                    bytes,
                    s.crc.get(),
                    tensors,
                )?;
            }
        }
        for a in &self.assets {
            check(
                &|| format!("asset {:?}", a.name),
                a.offset,
                a.data,
                a.crc,
                true,
            )?;
        }
        Ok(())
    }
}

/// How much of a section [`Qins::verify_and_release`] reads before it hands the part to its
/// caller: small enough that releasing behind it bounds the memory, large enough that the
/// calls cost nothing beside the checksum.
const VERIFY_CHUNK: usize = 16 << 20;

/// Checks the `computed` CRC-32 of the section called `name()` against the `stored` one.
fn check_computed_crc(
    name: &dyn Fn() -> String,
    computed: u32,
    stored: u32,
) -> Result<(), ReadError> {
    if computed != stored {
        return Err(ReadError::DataChecksum {
            section: name(),
            stored,
            computed,
        });
    }
    Ok(())
}

/// One tensor, borrowed from a validated file.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    record: &'a TensorRecord,
    name: &'a str,
    dtype: Dtype,
    shape: &'a [u64],
    storage: Storage,
    params: [f64; 2],
    data: &'a [u8],
    signs: &'a [u8],
    scales: &'a [u8],
    lut: Option<&'a [f32; 256]>,
}

impl<'a> TensorView<'a> {
    /// The name.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The source dtype.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// The dimensions, outermost first.
    pub fn shape(&self) -> &'a [u64] {
        self.shape
    }

    /// The number of elements.
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }

    /// `(row length, rows)` as §11.3 defines them.
    pub fn rows(&self) -> (u64, u64) {
        qins_format::rows(self.shape).unwrap_or((0, 0))
    }

    /// Raw or encoded, with which codec.
    pub fn storage(&self) -> Storage {
        self.storage
    }

    /// The codec, for an encoded tensor.
    pub fn codec(&self) -> Option<Codec> {
        match self.storage {
            Storage::Encoded { codec, .. } => Some(codec),
            Storage::Raw => None,
        }
    }

    /// `param0` and `param1` (§12): for `log`, `log_min` and `log_max`.
    pub fn params(&self) -> [f64; 2] {
        self.params
    }

    /// The bytes of a raw tensor, exactly as in the source (§13); `None` if encoded.
    pub fn raw_bytes(&self) -> Option<&'a [u8]> {
        (self.storage == Storage::Raw).then_some(self.data)
    }

    /// The codes of an encoded tensor (§11.1).
    pub fn codes(&self) -> Option<&'a [u8]> {
        self.lut.map(|_| self.data)
    }

    /// The packed sign bits of an encoded tensor (§11.2).
    pub fn signs(&self) -> Option<&'a [u8]> {
        self.lut.map(|_| self.signs)
    }

    /// The row scales of an encoded tensor that has them, as f32 values.
    pub fn row_scales(&self) -> Option<Vec<f32>> {
        matches!(
            self.storage,
            Storage::Encoded {
                row_scales: true,
                ..
            }
        )
        .then(|| {
            self.scales
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        })
    }

    /// The table of an encoded tensor (§10).
    pub fn lut(&self) -> Option<&'a [f32; 256]> {
        self.lut
    }

    /// Bytes this tensor occupies in the file: data, signs and scales (not its table or
    /// padding).
    pub fn stored_bytes(&self) -> u64 {
        (self.data.len() + self.signs.len() + self.scales.len()) as u64
    }

    /// Bytes the tensor has in its source dtype.
    pub fn source_bytes(&self) -> u64 {
        self.numel() * u64::from(self.dtype.bits()) / 8
    }

    fn parts(&self) -> Result<EncodedParts<'a>, DecodeError> {
        let lut = self.lut.ok_or_else(|| DecodeError::NotEncoded {
            tensor: self.name.to_string(),
            dtype: self.dtype.name(),
        })?;
        let scales = matches!(
            self.storage,
            Storage::Encoded {
                row_scales: true,
                ..
            }
        )
        .then(|| (self.scales, self.rows().0));
        Ok(EncodedParts {
            lut,
            codes: self.data,
            signs: self.signs,
            scales,
        })
    }

    fn range_err(&self, first: u64, len: usize) -> DecodeError {
        DecodeError::OutOfRange {
            tensor: self.name.to_string(),
            first,
            end: first.saturating_add(len as u64),
            numel: self.numel(),
        }
    }

    /// Decodes elements `first..first + out.len()` into `out` by the decode rule (§11.4).
    pub fn decode_f32(&self, first: u64, out: &mut [f32]) -> Result<(), DecodeError> {
        self.parts()?
            .decode_f32(first, out)
            .map_err(|_| self.range_err(first, out.len()))
    }

    /// Decodes elements `first..first + out.len()` into bfloat16 (rounded once, §11.4).
    pub fn decode_bf16(&self, first: u64, out: &mut [bf16]) -> Result<(), DecodeError> {
        self.parts()?
            .decode_bf16(first, out)
            .map_err(|_| self.range_err(first, out.len()))
    }

    /// Decodes elements `first..first + out.len()` into float16 (rounded once, §11.4).
    pub fn decode_f16(&self, first: u64, out: &mut [f16]) -> Result<(), DecodeError> {
        self.parts()?
            .decode_f16(first, out)
            .map_err(|_| self.range_err(first, out.len()))
    }

    /// Decodes rows `first_row..first_row + out.len() / row_len` into `out`, whose length must
    /// be a whole number of rows.
    pub fn decode_rows_f32(&self, first_row: u64, out: &mut [f32]) -> Result<(), DecodeError> {
        let first = self.first_of_rows(first_row, out.len())?;
        self.decode_f32(first, out)
    }

    /// Decodes rows `first_row..first_row + out.len() / row_len` into bfloat16 (rounded once,
    /// §11.4); `out`'s length must be a whole number of rows.
    pub fn decode_rows_bf16(&self, first_row: u64, out: &mut [bf16]) -> Result<(), DecodeError> {
        let first = self.first_of_rows(first_row, out.len())?;
        self.decode_bf16(first, out)
    }

    /// Decodes rows `first_row..first_row + out.len() / row_len` into float16 (rounded once,
    /// §11.4); `out`'s length must be a whole number of rows.
    pub fn decode_rows_f16(&self, first_row: u64, out: &mut [f16]) -> Result<(), DecodeError> {
        let first = self.first_of_rows(first_row, out.len())?;
        self.decode_f16(first, out)
    }

    /// The first element of row `first_row`, checking that `len` elements are whole rows.
    fn first_of_rows(&self, first_row: u64, len: usize) -> Result<u64, DecodeError> {
        let (row_len, _) = self.rows();
        match first_row.checked_mul(row_len) {
            Some(first) if row_len != 0 && (len as u64).is_multiple_of(row_len) => Ok(first),
            _ => Err(self.range_err(first_row.saturating_mul(row_len), len)),
        }
    }

    /// Decodes the whole tensor into a new f32 vector.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>, DecodeError> {
        let mut v = vec![0f32; self.numel() as usize];
        self.decode_f32(0, &mut v)?;
        Ok(v)
    }

    /// Verifies the tensor's own sections (§14): their checksums, its unused sign bits and its
    /// row scales. See [`Qins::verify_frame`] for the rest of the file.
    pub fn verify(&self) -> Result<(), ReadError> {
        self.verify_with(crc32fast::hash)
    }

    /// [`TensorView::verify`], with each section's CRC-32 computed by `crc`, which must give
    /// what `crc32fast::hash` gives (the IEEE CRC-32 of the bytes): a caller can compute it on
    /// several threads and combine the parts. The checks and their order stay the reader's.
    pub fn verify_with(&self, crc: impl Fn(&[u8]) -> u32) -> Result<(), ReadError> {
        for (part, s, bytes) in self.sections() {
            check_computed_crc(
                &|| format!("tensor {:?} {part}", self.name),
                crc(bytes),
                s.crc.get(),
            )?;
        }
        self.verify_values()
    }

    /// The sections the tensor stores, in file order, with their references and bytes: the
    /// data; and for an encoded tensor the signs, and the row scales if it has them.
    pub fn sections(&self) -> Vec<(&'static str, &'a qins_format::SectionRef, &'a [u8])> {
        let r = self.record;
        let mut v = vec![("data", &r.data, self.data)];
        if let Storage::Encoded { row_scales, .. } = self.storage {
            v.push(("signs", &r.signs, self.signs));
            if row_scales {
                v.push(("scales", &r.scales, self.scales));
            }
        }
        v
    }

    fn verify_values(&self) -> Result<(), ReadError> {
        let Some(_) = self.lut else { return Ok(()) };
        let n = self.numel();
        if !n.is_multiple_of(8) {
            if let Some(&last) = self.signs.last() {
                if last >> (n % 8) != 0 {
                    return Err(ReadError::StraySignBits {
                        tensor: self.name.to_string(),
                    });
                }
            }
        }
        for (row, b) in self.scales.chunks_exact(4).enumerate() {
            let value = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if !(value.is_finite() && value > 0.0) {
                return Err(ReadError::BadScale {
                    tensor: self.name.to_string(),
                    row: row as u64,
                    value,
                });
            }
        }
        Ok(())
    }
}

/// A `.qins` file mapped into memory. [`MappedFile::parse`] gives the validated view.
#[derive(Debug)]
pub struct MappedFile {
    path: PathBuf,
    map: Option<memmap2::Mmap>,
}

impl MappedFile {
    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Parses and validates the mapped file (§17).
    pub fn parse(&self) -> Result<Qins<'_>, ReadError> {
        Qins::parse(self.bytes())
    }

    /// Says that this process will not need the pages holding `bytes`, a part of
    /// [`MappedFile::bytes`] (a tensor's codes, say), again soon: they leave the process's
    /// resident memory and are read again, from the page cache or the disk, when next touched.
    /// Nothing the program sees changes. A reader streaming through a file larger than the
    /// memory it should use calls this behind itself. Does nothing for bytes outside the
    /// mapping, or where the system has no `madvise`.
    pub fn release(&self, bytes: &[u8]) {
        let Some(map) = &self.map else { return };
        let start = (bytes.as_ptr() as usize).wrapping_sub(map.as_ptr() as usize);
        if bytes.is_empty() || start >= map.len() || bytes.len() > map.len() - start {
            return;
        }
        // Only a hint: if the system refuses it, the pages simply stay.
        let _ = release_pages(map, start, bytes.len());
    }
}

#[cfg(unix)]
#[allow(unsafe_code)]
fn release_pages(map: &memmap2::Mmap, offset: usize, len: usize) -> std::io::Result<()> {
    // SAFETY: `offset..offset + len` lies within the mapping (checked by the caller).
    // `MADV_DONTNEED` is unsafe in general because on a private writable mapping it throws away
    // the process's changes; this mapping is shared and read-only (`Mmap::map`), so the pages
    // it drops hold exactly the file's bytes, and touching them again maps the same bytes back
    // from the file. Under the contract stated at `map_file` (the file is not modified while
    // mapped), every reference into the mapping keeps reading the same values.
    unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len) }
}

#[cfg(not(unix))]
fn release_pages(_: &memmap2::Mmap, _: usize, _: usize) -> std::io::Result<()> {
    Ok(())
}

/// Maps the file at `path` read-only. Parse it with [`MappedFile::parse`].
///
/// Anything but a regular file (symbolic links followed) is refused as [`ReadError::Io`]:
/// a directory or a device cannot be mapped, and opening a FIFO would wait for a writer.
pub fn open(path: &Path) -> Result<MappedFile, ReadError> {
    let io = |source| ReadError::Io {
        path: path.into(),
        source,
    };
    // Looked at before opening, because opening a FIFO blocks; and again once open, in case
    // the path was replaced in between.
    regular_file(&std::fs::metadata(path).map_err(io)?).map_err(io)?;
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    regular_file(&meta).map_err(io)?;
    let len = meta.len();
    // An empty file cannot be mapped on every platform; it is simply zero bytes.
    let map = if len == 0 {
        None
    } else {
        Some(map_file(&file).map_err(io)?)
    };
    Ok(MappedFile {
        path: path.into(),
        map,
    })
}

/// `Ok` for a regular file, else an error saying what the path is instead.
fn regular_file(meta: &std::fs::Metadata) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    if meta.is_file() {
        Ok(())
    } else if meta.is_dir() {
        Err(Error::new(
            ErrorKind::IsADirectory,
            "is a directory, not a file",
        ))
    } else {
        Err(Error::new(
            ErrorKind::InvalidInput,
            "not a regular file (a device, FIFO or socket)",
        ))
    }
}

#[allow(unsafe_code)]
fn map_file(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the mapping is read-only and its bytes are only ever read as plain `u8`s, which
    // every bit pattern is. The remaining contract of `Mmap::map` is that the file is not
    // modified or truncated while mapped; we cannot enforce that against other processes, so it
    // is the caller's documented duty (as in every mmap-based reader): a `.qins` being read
    // must not be written in place. Our own writer never does so: it writes a temporary file
    // and renames it, which leaves existing mappings of the old file intact.
    unsafe { memmap2::Mmap::map(file) }
}

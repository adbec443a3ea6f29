//! A streaming, deterministic, atomic writer of `.qins` files (`spec/qins-v1.md` §18).
//!
//! Writing is two-phase, after gimli's `object` writer: a [`Plan`] declares every tensor
//! (name, dtype, shape, raw or encoded), every asset and the metadata up front, so the whole
//! layout is known before any weight is seen (§9.2). Tensor data is then pushed in plan order,
//! whole or in parts, and [`Writer::finish`] writes the LUT table and the header with their
//! checksums and renames the temporary file into place.
//!
//! Memory held is the plan, the tables, and whatever part the caller passes in: never the file.
//! The output depends only on the plan and the data: no time stamps, no hash-map order.
//!
//! ```no_run
//! use qins_format::{Codec, Dtype, Storage};
//! use qins_write::{Plan, TensorSpec, Writer};
//!
//! let mut plan = Plan::new();
//! plan.tensors.push(TensorSpec::new("w", Dtype::F32, vec![2, 2], Storage::Encoded { codec: Codec::Log, row_scales: false }));
//! let mut w = Writer::create("out.qins".as_ref(), plan, false)?;
//! w.encode_tensor(&[0.5, -0.25, 0.0, 1.0], None)?;
//! w.finish()?;
//! # Ok::<(), qins_write::WriteError>(())
//! ```
#![forbid(unsafe_code)]

pub mod set;

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use crc32fast::Hasher;
use qins_format::codec::{Codec, EncodeError, Quantizer, RowScales};
use qins_format::layout::Cursor;
use qins_format::names::{check_asset_name, check_tensor_name, NameProblem};
use qins_format::{
    alignment_is_valid, header_size, limits, section_lengths, AssetRecord, Dtype, Preamble,
    SectionRef, Storage, TensorRecord, DEFAULT_ALIGNMENT, FLAG_ROW_SCALES, LUT_BYTES, MAGIC,
    MAX_RANK, VERSION_MAJOR,
};
use zerocopy::IntoBytes;

/// One tensor of a [`Plan`].
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    /// Unique name (§4).
    pub name: String,
    /// Source dtype; must be encodable (F16, BF16, F32) when `storage` is encoded.
    pub dtype: Dtype,
    /// Dimensions, outermost first; at most 8.
    pub shape: Vec<u64>,
    /// Raw or encoded.
    pub storage: Storage,
}

impl TensorSpec {
    /// A tensor spec.
    pub fn new(name: impl Into<String>, dtype: Dtype, shape: Vec<u64>, storage: Storage) -> Self {
        TensorSpec {
            name: name.into(),
            dtype,
            shape,
            storage,
        }
    }
}

/// A named asset: one of the model directory's small files (§5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asset {
    /// Relative path with `/` separators.
    pub name: String,
    /// The file's bytes.
    pub data: Vec<u8>,
}

/// Everything the writer must know before the first byte of data: the layout follows from it.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Tensors, in the order they will be written and listed.
    pub tensors: Vec<TensorSpec>,
    /// Assets, in file order.
    pub assets: Vec<Asset>,
    /// Metadata (§7); written with keys in ascending order.
    pub metadata: BTreeMap<String, String>,
    /// Section alignment (§3); [`DEFAULT_ALIGNMENT`] unless set.
    pub alignment: u32,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            tensors: Vec::new(),
            assets: Vec::new(),
            metadata: BTreeMap::new(),
            alignment: DEFAULT_ALIGNMENT,
        }
    }
}

impl Plan {
    /// An empty plan with the default alignment.
    pub fn new() -> Self {
        Plan::default()
    }
}

/// What went wrong while writing. Nothing is left at the target path in any case.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The plan breaks a rule of the spec; `what` names the tensor, asset or field.
    #[error("invalid plan: {what}: {reason}")]
    InvalidPlan {
        /// The tensor, asset or field at fault.
        what: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A tensor's values cannot be encoded (NaN, infinity, bad row scales).
    #[error("cannot encode tensor {tensor:?}: {source}")]
    Encode {
        /// The tensor.
        tensor: String,
        /// The cause.
        source: EncodeError,
    },
    /// Data was pushed that does not fit the plan: wrong tensor kind, wrong length, too much,
    /// or `finish` before every tensor was written.
    #[error("writer misuse at tensor {tensor:?}: {reason}")]
    Misuse {
        /// The tensor the writer expected next (or `""` past the last one).
        tensor: String,
        /// What was wrong.
        reason: String,
    },
    /// The target exists and overwriting was not allowed.
    #[error("{path}: already exists")]
    Exists {
        /// The target.
        path: PathBuf,
    },
    /// An I/O error on the target or its temporary file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

fn invalid(what: impl Into<String>, reason: impl Into<String>) -> WriteError {
    WriteError::InvalidPlan {
        what: what.into(),
        reason: reason.into(),
    }
}

/// The sizes of what was written, counted from the layout (the bytes in the file).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteSummary {
    /// Total file size.
    pub file_size: u64,
    /// Header block size.
    pub header_bytes: u64,
    /// LUT table bytes.
    pub lut_bytes: u64,
    /// Code bytes of encoded tensors.
    pub code_bytes: u64,
    /// Sign bytes of encoded tensors.
    pub sign_bytes: u64,
    /// Row-scale bytes of encoded tensors.
    pub scale_bytes: u64,
    /// Raw tensor bytes.
    pub raw_bytes: u64,
    /// Asset bytes.
    pub asset_bytes: u64,
    /// Zero padding.
    pub padding_bytes: u64,
    /// The header CRC (§8), which a set's index records for each shard (§21.2).
    pub header_crc32: u32,
}

/// The state of the tensor being written.
enum Current {
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

/// A `.qins` file being written, as the temporary file `.NAME.XXXXXX.tmp` beside the target
/// `NAME`. Dropping it before [`Writer::finish`] removes the temporary file and leaves the
/// target untouched. A process killed while writing (SIGKILL, a power cut) cannot remove it:
/// the target is still untouched, and the next [`Writer::create`] for the same target removes
/// it. A writer holds a lock on its temporary file, so that only files no running writer owns
/// are removed: those of that name, a minute old, that no process holds locked.
pub struct Writer {
    target: PathBuf,
    overwrite: bool,
    tmp: tempfile::NamedTempFile,
    plan: Plan,
    records: Vec<TensorRecord>,
    assets: Vec<AssetRecord>,
    strings: Vec<u8>,
    metadata: Vec<u8>,
    lut_table: SectionRef,
    luts: Vec<u8>,
    file_size: u64,
    header_size: u64,
    next: usize,
    current: Current,
    /// Bytes written since the last background flush was asked for.
    unflushed: u64,
    flusher: Option<Flusher>,
}

/// Tensor bytes written between two background flushes (less in unit tests, to exercise them).
const FLUSH_EVERY: u64 = if cfg!(test) { 64 << 10 } else { 64 << 20 };

/// A thread that flushes the temporary file's written data to disk (`fdatasync`) whenever the
/// writer asks, while the producer goes on computing, so that the disk works during the
/// conversion and the final `sync_all` of [`Writer::finish`] has little left to write. It
/// changes when pages reach the disk, never what the file holds nor the final sync.
struct Flusher {
    /// At most one request waits: a flush asked for while one runs covers what came since.
    asks: Option<mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl Flusher {
    fn start(file: std::fs::File) -> Flusher {
        let (asks, requests) = mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("qins-write flush".into())
            .spawn(move || {
                for () in requests {
                    file.sync_data()?;
                }
                Ok(())
            })
            .ok();
        Flusher {
            asks: Some(asks),
            thread,
        }
    }

    /// Asks for a flush unless one is already waiting.
    fn ask(&self) {
        if let Some(asks) = &self.asks {
            let _ = asks.try_send(());
        }
    }

    /// Waits for the flushes asked for, and gives the first error of any.
    fn stop(&mut self) -> io::Result<()> {
        self.asks = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("the flushing thread panicked")),
            None => Ok(()),
        }
    }
}

/// How long a temporary file must have gone unmodified before [`remove_stale`] considers it:
/// longer than a new writer takes between creating its file and locking it.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes the temporary files `.STEM.XXXXXX.tmp` in `dir` that writers killed while writing
/// left behind: regular files of exactly that name, unmodified for [`STALE_AFTER`], that no
/// process holds locked (a running writer holds its own). Best effort: a file that cannot be
/// read, locked or removed stays.
fn remove_stale(dir: &Path, stem: &str) {
    let prefix = format!(".{stem}.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let ours = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix)?.strip_suffix(".tmp"))
            .is_some_and(|mid| mid.len() == 6 && mid.bytes().all(|b| b.is_ascii_alphanumeric()));
        let old = entry.metadata().is_ok_and(|m| {
            m.is_file()
                && m.modified()
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age >= STALE_AFTER))
        });
        if !(ours && old) {
            continue;
        }
        let path = entry.path();
        if let Ok(file) = std::fs::File::open(&path) {
            if file.try_lock().is_ok() {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

impl Writer {
    /// Validates `plan`, computes the layout, and creates a temporary file beside `path`.
    /// With `overwrite` false, an existing `path` is refused now and again at the rename.
    pub fn create(path: &Path, plan: Plan, overwrite: bool) -> Result<Writer, WriteError> {
        if !overwrite && path.exists() {
            return Err(WriteError::Exists { path: path.into() });
        }
        let (records, assets, strings, metadata, lut_table, header_size, file_size) =
            layout(&plan)?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let stem = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
        let io_err = |source| WriteError::Io {
            path: path.into(),
            source,
        };
        remove_stale(dir, stem);
        // Mode 0666 filtered by the umask, as any new file: the temporary file becomes the
        // output by a rename, so its mode is the output's.
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{stem}."))
            .suffix(".tmp")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .tempfile_in(dir)
            .map_err(io_err)?;
        // Held until the writer is dropped: it tells the next writer's `remove_stale` that
        // this file is in use. Where the file system has no locks, nothing is ever removed.
        let _ = tmp.as_file().try_lock();
        // Sections are written at their offsets; the padding between them stays zero.
        tmp.as_file().set_len(file_size).map_err(io_err)?;
        let lut_count = lut_table.length.get() / LUT_BYTES;
        Ok(Writer {
            target: path.into(),
            overwrite,
            tmp,
            plan,
            records,
            assets,
            strings,
            metadata,
            lut_table,
            luts: Vec::with_capacity((lut_count * LUT_BYTES) as usize),
            file_size,
            header_size,
            next: 0,
            current: Current::Idle,
            unflushed: 0,
            flusher: None,
        })
    }

    /// Counts `len` tensor bytes just written, and asks for a background flush every
    /// [`FLUSH_EVERY`] bytes (the flushing thread starts with the first).
    fn wrote(&mut self, len: u64) {
        self.unflushed += len;
        if self.unflushed < FLUSH_EVERY {
            return;
        }
        self.unflushed = 0;
        if self.flusher.is_none() {
            // Without a second handle on the file there is no background flush, only the
            // final sync.
            let Ok(file) = self.tmp.as_file().try_clone() else {
                return;
            };
            self.flusher = Some(Flusher::start(file));
        }
        if let Some(f) = &self.flusher {
            f.ask();
        }
    }

    /// The plan being written.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The tensor whose data is expected next, or `None` when every tensor is written.
    pub fn next_tensor(&self) -> Option<&TensorSpec> {
        self.plan.tensors.get(self.next)
    }

    fn misuse(&self, reason: impl Into<String>) -> WriteError {
        WriteError::Misuse {
            tensor: self
                .next_tensor()
                .map(|t| t.name.clone())
                .unwrap_or_default(),
            reason: reason.into(),
        }
    }

    fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<(), WriteError> {
        self.tmp
            .as_file()
            .write_all_at(bytes, offset)
            .map_err(|source| WriteError::Io {
                path: self.tmp.path().into(),
                source,
            })
    }

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
        if let Err(e) = self.write_at(rec.data.offset.get() + done, bytes) {
            self.current = Current::Raw { done, crc };
            return Err(e);
        }
        self.wrote(bytes.len() as u64);
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
            self.write_at(rec.scales.offset.get(), &bytes)?;
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
        self.write_at(rec.data.offset.get() + done, codes)?;
        self.write_at(rec.signs.offset.get() + done / 8, signs)?;
        self.wrote((codes.len() + signs.len()) as u64);
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

    /// Writes the assets, the LUT table and the header, flushes, and renames the file into
    /// place. Every tensor must have been written.
    pub fn finish(mut self) -> Result<WriteSummary, WriteError> {
        if self.next < self.plan.tensors.len() || !matches!(self.current, Current::Idle) {
            return Err(self.misuse("finish called before every tensor was written"));
        }
        for (rec, asset) in self.assets.iter_mut().zip(&self.plan.assets) {
            rec.data.crc = crc32fast::hash(&asset.data).into();
        }
        for (rec, asset) in self.assets.iter().zip(&self.plan.assets) {
            self.write_at(rec.data.offset.get(), &asset.data)?;
        }
        self.lut_table.crc = crc32fast::hash(&self.luts).into();
        self.write_at(self.lut_table.offset.get(), &self.luts)?;
        let header = self.header_bytes();
        debug_assert_eq!(header.len() as u64, self.header_size);
        self.write_at(0, &header)?;
        let mut summary = self.summary();
        let crc = &header[header.len() - 4..];
        summary.header_crc32 = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        let io_err = |path: &Path, source| WriteError::Io {
            path: path.into(),
            source,
        };
        // The background flushes first: an error of theirs is the file's, even if the final
        // sync then succeeds.
        if let Some(mut f) = self.flusher.take() {
            f.stop().map_err(|e| io_err(self.tmp.path(), e))?;
        }
        self.tmp
            .as_file()
            .sync_all()
            .map_err(|e| io_err(self.tmp.path(), e))?;
        let target = self.target.clone();
        if self.overwrite {
            self.tmp
                .persist(&target)
                .map_err(|e| io_err(&target, e.error))?;
        } else {
            self.tmp.persist_noclobber(&target).map_err(|e| {
                if e.error.kind() == io::ErrorKind::AlreadyExists {
                    WriteError::Exists {
                        path: target.clone(),
                    }
                } else {
                    io_err(&target, e.error)
                }
            })?;
        }
        Ok(summary)
    }

    fn header_bytes(&self) -> Vec<u8> {
        let preamble = Preamble {
            magic: MAGIC,
            version_major: VERSION_MAJOR.into(),
            // 1 in a shard of a set, 0 otherwise (§15.2).
            version_minor: qins_format::set::minor_version(self.plan.metadata.keys()).into(),
            alignment: self.plan.alignment.into(),
            required_features: 0.into(),
            file_size: self.file_size.into(),
            header_size: self.header_size.into(),
            tensor_count: (self.records.len() as u32).into(),
            asset_count: (self.assets.len() as u32).into(),
            lut_count: ((self.lut_table.length.get() / LUT_BYTES) as u32).into(),
            strings_size: (self.strings.len() as u32).into(),
            metadata_size: (self.metadata.len() as u32).into(),
            reserved0: 0.into(),
            lut_table: self.lut_table,
            reserved1: 0.into(),
        };
        let mut h = Vec::with_capacity(self.header_size as usize);
        h.extend_from_slice(preamble.as_bytes());
        h.extend_from_slice(self.records.as_bytes());
        h.extend_from_slice(self.assets.as_bytes());
        h.extend_from_slice(&self.strings);
        h.extend_from_slice(&self.metadata);
        let crc = crc32fast::hash(&h);
        h.extend_from_slice(&crc.to_le_bytes());
        h
    }

    fn summary(&self) -> WriteSummary {
        let mut s = WriteSummary {
            file_size: self.file_size,
            header_bytes: self.header_size,
            lut_bytes: self.lut_table.length.get(),
            ..WriteSummary::default()
        };
        for (r, t) in self.records.iter().zip(&self.plan.tensors) {
            match t.storage {
                Storage::Raw => s.raw_bytes += r.data.length.get(),
                Storage::Encoded { .. } => {
                    s.code_bytes += r.data.length.get();
                    s.sign_bytes += r.signs.length.get();
                    s.scale_bytes += r.scales.length.get();
                }
            }
        }
        s.asset_bytes = self.assets.iter().map(|a| a.data.length.get()).sum();
        s.padding_bytes = s.file_size
            - s.header_bytes
            - s.lut_bytes
            - s.code_bytes
            - s.sign_bytes
            - s.scale_bytes
            - s.raw_bytes
            - s.asset_bytes;
        s
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

type Layout = (
    Vec<TensorRecord>,
    Vec<AssetRecord>,
    Vec<u8>,
    Vec<u8>,
    SectionRef,
    u64,
    u64,
);

/// Validates a plan and computes every record and offset (§3–§9), checksums left at zero.
fn layout(plan: &Plan) -> Result<Layout, WriteError> {
    if !alignment_is_valid(plan.alignment) {
        return Err(invalid(
            "alignment",
            format!("{} is not a power of two in [64, 1048576]", plan.alignment),
        ));
    }
    if plan.tensors.len() > limits::MAX_TENSORS as usize {
        return Err(invalid(
            "tensors",
            format!(
                "{} tensors, the limit is {}",
                plan.tensors.len(),
                limits::MAX_TENSORS
            ),
        ));
    }
    if plan.assets.len() > limits::MAX_ASSETS as usize {
        return Err(invalid(
            "assets",
            format!(
                "{} assets, the limit is {}",
                plan.assets.len(),
                limits::MAX_ASSETS
            ),
        ));
    }
    let name_err =
        |kind: &str, name: &str, p: NameProblem| invalid(format!("{kind} {name:?}"), p.to_string());
    let mut strings = Vec::new();
    let mut seen = HashSet::new();
    let mut records = Vec::with_capacity(plan.tensors.len());
    let mut lengths = Vec::with_capacity(plan.tensors.len());
    let mut encoded = 0u32;
    for t in &plan.tensors {
        check_tensor_name(t.name.as_bytes()).map_err(|p| name_err("tensor", &t.name, p))?;
        if !seen.insert(t.name.as_str()) {
            return Err(invalid(
                format!("tensor {:?}", t.name),
                "the name is used twice",
            ));
        }
        if t.shape.len() > MAX_RANK {
            return Err(invalid(
                format!("tensor {:?}", t.name),
                format!("rank {} exceeds 8", t.shape.len()),
            ));
        }
        let (codec, flags, lut_index) = match t.storage {
            Storage::Raw => (0, 0, 0),
            Storage::Encoded { codec, row_scales } => {
                if !t.dtype.is_encodable() {
                    return Err(invalid(
                        format!("tensor {:?}", t.name),
                        format!(
                            "dtype {} cannot be encoded (only F16, BF16, F32); keep it raw",
                            t.dtype
                        ),
                    ));
                }
                // §12.3, §12.4: a writer MUST NOT set ROW_SCALES on `lloyd` and MUST set it on
                // `lloyd-rows`; `log` and `linear` may have row scales or not.
                let fixed = match codec {
                    Codec::Lloyd => Some(false),
                    Codec::LloydRows => Some(true),
                    Codec::Log | Codec::Linear => None,
                };
                if fixed.is_some_and(|needed| needed != row_scales) {
                    return Err(invalid(
                        format!("tensor {:?}", t.name),
                        if row_scales {
                            format!("codec {codec} has no row scales (§12.3); plan it without")
                        } else {
                            format!("codec {codec} needs row scales (§12.4); plan it with them")
                        },
                    ));
                }
                encoded += 1;
                (
                    codec.id(),
                    if row_scales { FLAG_ROW_SCALES } else { 0 },
                    encoded - 1,
                )
            }
        };
        let lens = section_lengths(t.dtype, &t.shape, t.storage).ok_or_else(|| {
            invalid(
                format!("tensor {:?}", t.name),
                format!("shape {:?} of {} has no whole byte size", t.shape, t.dtype),
            )
        })?;
        lengths.push(lens);
        let mut shape = [0u64.into(); MAX_RANK];
        for (s, &d) in shape.iter_mut().zip(&t.shape) {
            *s = d.into();
        }
        records.push(TensorRecord {
            name_offset: (strings.len() as u32).into(),
            name_len: (t.name.len() as u32).into(),
            dtype: t.dtype.code(),
            rank: t.shape.len() as u8,
            codec: codec.into(),
            flags: flags.into(),
            shape,
            param0: 0.0.into(),
            param1: 0.0.into(),
            lut_index: lut_index.into(),
            reserved: 0.into(),
            data: SectionRef::default(),
            signs: SectionRef::default(),
            scales: SectionRef::default(),
        });
        strings.extend_from_slice(t.name.as_bytes());
    }
    let mut seen = HashSet::new();
    let mut assets = Vec::with_capacity(plan.assets.len());
    for a in &plan.assets {
        check_asset_name(a.name.as_bytes()).map_err(|p| name_err("asset", &a.name, p))?;
        if !seen.insert(a.name.as_str()) {
            return Err(invalid(
                format!("asset {:?}", a.name),
                "the name is used twice",
            ));
        }
        assets.push(AssetRecord {
            name_offset: (strings.len() as u32).into(),
            name_len: (a.name.len() as u32).into(),
            data: SectionRef::default(),
        });
        strings.extend_from_slice(a.name.as_bytes());
    }
    let metadata = if plan.metadata.is_empty() {
        Vec::new()
    } else {
        serde_json::to_vec(&plan.metadata).map_err(|e| invalid("metadata", e.to_string()))?
    };
    if metadata.len() > limits::MAX_METADATA as usize {
        return Err(invalid(
            "metadata",
            format!(
                "{} bytes of JSON, the limit is {}",
                metadata.len(),
                limits::MAX_METADATA
            ),
        ));
    }
    let too_big = || {
        invalid(
            "header",
            "the header would exceed the 256 MiB limit; split the model",
        )
    };
    let strings_size = u32::try_from(strings.len()).map_err(|_| too_big())?;
    let hs = header_size(
        records.len() as u32,
        assets.len() as u32,
        strings_size,
        metadata.len() as u32,
    )
    .filter(|&h| h <= limits::MAX_HEADER_SIZE)
    .ok_or_else(too_big)?;
    let overflow = || invalid("layout", "section offsets overflow 64 bits");
    let mut cur = Cursor::new(hs, plan.alignment);
    let lut_len = u64::from(encoded) * LUT_BYTES;
    let lut_table = SectionRef::new(cur.place(lut_len).ok_or_else(overflow)?, lut_len, 0);
    for (rec, lens) in records.iter_mut().zip(&lengths) {
        rec.data = SectionRef::new(cur.place(lens[0]).ok_or_else(overflow)?, lens[0], 0);
        if rec.codec.get() != 0 {
            rec.signs = SectionRef::new(cur.place(lens[1]).ok_or_else(overflow)?, lens[1], 0);
            if rec.flags.get() & FLAG_ROW_SCALES != 0 {
                rec.scales = SectionRef::new(cur.place(lens[2]).ok_or_else(overflow)?, lens[2], 0);
            }
        }
    }
    for (rec, a) in assets.iter_mut().zip(&plan.assets) {
        let len = a.data.len() as u64;
        rec.data = SectionRef::new(cur.place(len).ok_or_else(overflow)?, len, 0);
    }
    Ok((records, assets, strings, metadata, lut_table, hs, cur.end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refused raw part leaves the tensor's progress as it was: the next part continues it.
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

    /// A killed writer's temporary file is removed by the next writer of the same target; a
    /// running writer's (locked), a recent one, and other names stay.
    #[test]
    fn stale_temporary_files_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let at = |n: &str| dir.path().join(n);
        let long_ago = std::time::SystemTime::now() - 2 * STALE_AFTER;
        let make = |n: &str, old: bool| {
            let f = std::fs::File::create(at(n)).unwrap();
            if old {
                f.set_modified(long_ago).unwrap();
            }
            f
        };
        drop(make(".m.qins.abc123.tmp", true));
        let live = make(".m.qins.def456.tmp", true);
        live.lock().unwrap();
        let kept = [
            ".m.qins.def456.tmp",
            ".m.qins.ghi789.tmp",
            ".m.qins.toolong1.tmp",
            ".n.qins.abc123.tmp",
            "m.qins.abc123.tmp",
        ];
        drop(make(kept[1], false));
        for n in &kept[2..] {
            drop(make(n, true));
        }
        std::fs::create_dir(at(".m.qins.dir123.tmp")).unwrap();
        let dir_entry = std::fs::File::open(at(".m.qins.dir123.tmp")).unwrap();
        dir_entry.set_modified(long_ago).unwrap();

        let mut plan = Plan::new();
        plan.tensors
            .push(TensorSpec::new("t", Dtype::U8, vec![3], Storage::Raw));
        let mut w = Writer::create(&at("m.qins"), plan, false).unwrap();
        w.write_raw(&[1, 2, 3]).unwrap();
        w.finish().unwrap();

        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut want: Vec<String> = kept.iter().map(|n| n.to_string()).collect();
        want.extend([".m.qins.dir123.tmp".to_string(), "m.qins".to_string()]);
        want.sort();
        assert_eq!(left, want);
        drop(live);
    }

    /// Parts written past the flush threshold start the background flushes; the file is the
    /// same, and `finish` waits for them.
    #[test]
    fn background_flushes_leave_the_file_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let n = 10 * FLUSH_EVERY as usize + 12_345;
        let data: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
        let mut files = Vec::new();
        for (name, part) in [("whole.qins", n), ("parts.qins", 7_777)] {
            let mut plan = Plan::new();
            plan.tensors.push(TensorSpec::new(
                "t",
                Dtype::U8,
                vec![n as u64],
                Storage::Raw,
            ));
            let path = dir.path().join(name);
            let mut w = Writer::create(&path, plan, false).unwrap();
            for p in data.chunks(part) {
                w.write_raw_part(p).unwrap();
            }
            assert!(w.flusher.is_some(), "{name}");
            w.finish().unwrap();
            files.push(std::fs::read(&path).unwrap());
        }
        assert_eq!(files[0], files[1]);
        assert!(files[0].windows(n).any(|w| w == data.as_slice()));
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

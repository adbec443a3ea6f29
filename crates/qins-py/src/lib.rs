//! `qins._qins`, the compiled core of the `qins` Python package: a `.qins` model (one file, or
//! a sharded set read as one) opened and validated by `qins-read`, its tensors verified and
//! decoded into numpy arrays on every core with the GIL released. The package's Python modules
//! (`python/qins`) give it safetensors' API; this module is their engine, not an API of its
//! own.
//!
//! It never writes a file, except the assets a caller asks for (module `assets`), and it depends on
//! no qins crate but `qins-read` and `qins-format`.

mod assets;
mod decode;
mod errors;
mod memory;
mod source;

use std::collections::BTreeMap;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use qins_format::Storage;

use decode::{Kind, Out, Request, Rows, Target};
use memory::{Memory, LARGE};
use source::Source;

/// `(name, dtype, shape, storage)` of a tensor.
type TensorInfo = (String, String, Vec<u64>, String);

/// An open `.qins` model: one file, or a sharded set (§21).
#[pyclass(module = "qins._qins", name = "File", frozen)]
struct File {
    path: PathBuf,
    /// `None` once closed. Readers clone the `Arc`, so closing never waits for a read, and the
    /// mappings go when the last read holding them ends.
    source: Mutex<Option<Arc<Source>>>,
}

impl File {
    fn source(&self) -> PyResult<Arc<Source>> {
        let guard = self.source.lock().unwrap_or_else(|e| e.into_inner());
        guard.clone().ok_or_else(|| {
            PyValueError::new_err(format!("{}: the file is closed", self.path.display()))
        })
    }
}

/// Where one read goes, while it is prepared.
enum Slot<'py> {
    /// A new numpy array, and its buffer, through which the read writes into it.
    Array(Bound<'py, PyAny>, PyUntypedBuffer),
    /// New anonymous memory (module `memory`).
    Anonymous(memmap2::MmapMut),
    /// A raw tensor's bytes mapped from its file, at this path (module `memory`).
    Mapped(memmap2::MmapMut, PathBuf),
}

/// `numpy.empty(len, dtype)`, a new array that no other code holds yet, and its buffer.
fn new_array<'py>(py: Python<'py>, len: usize, kind: Kind) -> PyResult<Slot<'py>> {
    let array = py
        .import("numpy")?
        .call_method1("empty", (len / kind.size(), kind.carrier()))?;
    let buffer = PyUntypedBuffer::get(&array)?;
    if buffer.readonly() || !buffer.is_c_contiguous() || buffer.len_bytes() != len {
        return Err(PyValueError::new_err(
            "numpy gave an array that is not writable, contiguous and of the size asked",
        ));
    }
    Ok(Slot::Array(array, buffer))
}

/// The memory of a writable, C-contiguous buffer, to be written: its bytes may be
/// uninitialised (`numpy.empty`), hence `MaybeUninit`. The buffer keeps them allocated and in
/// place while it lives, which the slice, borrowing it, cannot outlive.
///
/// # Safety
/// `buffer` must be writable and C-contiguous, and no other code may read or write its memory
/// while the slice lives.
#[allow(unsafe_code)]
unsafe fn buffer_memory(buffer: &mut PyUntypedBuffer) -> &mut [MaybeUninit<u8>] {
    let len = buffer.len_bytes();
    if len == 0 {
        return &mut [];
    }
    // SAFETY: the export describes `len` contiguous, writable bytes at `buf_ptr` (the
    // caller's first condition), allocated until `buffer` is dropped, which its borrow by the
    // slice prevents; exclusive access is the caller's second condition.
    unsafe { std::slice::from_raw_parts_mut(buffer.buf_ptr().cast::<MaybeUninit<u8>>(), len) }
}

impl File {
    /// Reads `(name, kind, rows)` each into a new array, all at once (module `decode`), with
    /// the GIL released: a 1-D numpy array of `kind`'s carrier dtype per read, in order.
    fn read_many<'py>(
        &self,
        py: Python<'py>,
        reads: Vec<(String, Kind, Option<Rows>)>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let src = self.source()?;
        let mut requests = Vec::with_capacity(reads.len());
        let mut slots = Vec::with_capacity(reads.len());
        for (name, kind, rows) in &reads {
            let index = src
                .position(name)
                .ok_or_else(|| errors::not_found(py, &self.path, "tensor", name))?;
            let t = src.tensor_at(index);
            let rows = rows.unwrap_or_else(|| Rows::all(&t));
            let fail = |e| errors::read_failure(py, &self.path, name, e);
            let len = decode::out_len(&t, *kind, rows).map_err(fail)?;
            let k = src.file_of(index);
            let mapped = (*kind == Kind::Raw && rows == Rows::all(&t) && len >= LARGE)
                .then(|| {
                    let (_, section, bytes) = t.sections().into_iter().next()?;
                    let map = memory::map_private(src.reopened(k)?, section.offset.get(), len);
                    map.ok().filter(|_| bytes.len() == len)
                })
                .flatten();
            let anonymous = (mapped.is_none() && len >= LARGE)
                .then(|| memory::anonymous(len).ok())
                .flatten();
            slots.push(match (mapped, anonymous) {
                (Some(map), _) => Slot::Mapped(map, src.model().mapped()[k].path().to_path_buf()),
                (None, Some(map)) => Slot::Anonymous(map),
                (None, None) => new_array(py, len, *kind)?,
            });
            requests.push(Request {
                index,
                kind: *kind,
                rows,
            });
        }
        let targets: Vec<(Request, Target<'_>)> = requests
            .iter()
            .zip(&mut slots)
            .map(|(r, slot)| {
                let target = match slot {
                    Slot::Array(_, buffer) => {
                        #[allow(unsafe_code)]
                        // SAFETY: `new_array` checked that the buffer is writable and
                        // C-contiguous. The array was created by this module a moment ago and
                        // has not been returned, stored or passed to any other code, so no
                        // Python thread (the GIL is released during the read) and no other
                        // Rust code can reach its memory; this is the only slice made from it.
                        let memory = unsafe { buffer_memory(buffer) };
                        Target::Fill(Out::Uninit(memory))
                    }
                    Slot::Anonymous(map) => Target::Fill(Out::Zeroed(map)),
                    Slot::Mapped(map, _) => Target::Mapped(map),
                };
                (*r, target)
            })
            .collect();
        let outcomes = py.detach(|| decode::read_all(&src, targets));
        for ((name, _, _), outcome) in reads.iter().zip(outcomes) {
            outcome.map_err(|e| errors::read_failure(py, &self.path, name, e))?;
        }
        let numpy = py.import("numpy")?;
        slots
            .into_iter()
            .zip(&reads)
            .map(|(slot, (_, kind, _))| {
                let memory = match slot {
                    Slot::Array(array, buffer) => {
                        drop(buffer);
                        return Ok(array);
                    }
                    Slot::Anonymous(map) => Memory::new(map, None),
                    Slot::Mapped(map, path) => Memory::new(map, Some(path)),
                };
                numpy.call_method1("frombuffer", (Bound::new(py, memory)?, kind.carrier()))
            })
            .collect()
    }
}

#[pymethods]
impl File {
    /// Opens and validates a `.qins` model (spec §17): a file, a sharded set's index, or any
    /// shard of a set, which opens the whole set (§21.5). With `verify`, checks checksums too:
    /// everything outside the tensors now, each tensor before it is first read.
    #[new]
    #[pyo3(signature = (path, verify = true))]
    fn new(py: Python<'_>, path: PathBuf, verify: bool) -> PyResult<Self> {
        let source = py
            .detach(|| Source::open(&path, verify))
            .map_err(|e| errors::read_error(py, &path, None, e))?;
        Ok(File {
            path,
            source: Mutex::new(Some(Arc::new(source))),
        })
    }

    /// The path the model was opened with.
    #[getter]
    fn path(&self) -> &Path {
        &self.path
    }

    /// `(major, minor)` format version (of shard 1, for a set).
    fn version(&self) -> PyResult<(u16, u16)> {
        Ok(self.source()?.first().version())
    }

    /// Whether tensors are verified before they are read.
    fn verifies(&self) -> PyResult<bool> {
        Ok(self.source()?.verifies())
    }

    /// The files read: the one file, or the set's shards in order.
    fn files(&self) -> PyResult<Vec<PathBuf>> {
        let src = self.source()?;
        Ok(src.model().paths().map(Path::to_path_buf).collect())
    }

    /// The set's index, or `None` for a single file.
    fn index_file(&self) -> PyResult<Option<PathBuf>> {
        let src = self.source()?;
        Ok(src.model().index().map(|(p, _)| p.to_path_buf()))
    }

    /// The tensor names, in the model's order (a set's: shard 1's, then shard 2's, ...).
    fn keys(&self) -> PyResult<Vec<String>> {
        let src = self.source()?;
        Ok(src
            .model()
            .tensors()
            .map(|t| t.name().to_string())
            .collect())
    }

    /// The metadata (§7; shard 1's for a set, §21.4).
    fn metadata(&self) -> PyResult<BTreeMap<String, String>> {
        Ok(self.source()?.model().metadata().clone())
    }

    /// `(dtype, shape, storage)` of every tensor, in the model's order: the dtype's
    /// safetensors name, the shape, and `"raw"` or the codec's name.
    fn tensor_infos(&self) -> PyResult<Vec<TensorInfo>> {
        let src = self.source()?;
        Ok(src
            .model()
            .tensors()
            .map(|t| {
                let storage = match t.storage() {
                    Storage::Raw => "raw",
                    Storage::Encoded { codec, .. } => codec.name(),
                };
                (
                    t.name().to_string(),
                    t.dtype().name().to_string(),
                    t.shape().to_vec(),
                    storage.to_string(),
                )
            })
            .collect())
    }

    /// Reads tensor `name` as `kind` (`"f32"`, `"f16"`, `"bf16"`: decoded; `"raw"`: a raw
    /// tensor's bytes) into a new 1-D numpy array (float32, float16, uint16 holding bfloat16
    /// bits, uint8). With `count`, only the indices `start, start + step, …` (`count` of them)
    /// of the first dimension are read, and only their elements decoded. An array of 1 MiB or
    /// more is made on memory of its own, a `Memory`: anonymous, or for a whole raw tensor a
    /// copy-on-write mapping of the file (module `memory`), not a copy.
    #[pyo3(signature = (name, kind, start = 0, count = None, step = 1))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        name: String,
        kind: &str,
        start: u64,
        count: Option<u64>,
        step: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let kind = parse_kind(kind)?;
        let rows = match count {
            Some(count) => Some(Rows { start, count, step }),
            None if start == 0 && step == 1 => None,
            None => return Err(PyValueError::new_err("start and step need a count")),
        };
        let mut arrays = self.read_many(py, vec![(name, kind, rows)])?;
        Ok(arrays.remove(0))
    }

    /// Reads the whole tensors `(name, kind)` as `read` does, all at once: tensors in
    /// parallel as well as each large one, with the GIL released once. Fails with the error
    /// of the first read, in order, that fails, and then returns nothing.
    fn read_all<'py>(
        &self,
        py: Python<'py>,
        reads: Vec<(String, String)>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let reads = reads
            .into_iter()
            .map(|(name, kind)| Ok((name, parse_kind(&kind)?, None)))
            .collect::<PyResult<_>>()?;
        self.read_many(py, reads)
    }

    /// Reads the whole tensor `name` as `kind` again into `out`, the `Memory` under an array
    /// that an earlier read of it returned (it must be of the size asked), as `read` would
    /// into a new array; on failure `out` holds unspecified bytes. The GIL stays held
    /// throughout, so that no Python code reaches `out` while it is written. Not part of the
    /// package's API: the benchmark times the decoding with it, into memory written before, as
    /// the Rust benchmark does.
    fn read_into(
        &self,
        py: Python<'_>,
        name: &str,
        kind: &str,
        out: &Bound<'_, Memory>,
    ) -> PyResult<()> {
        let src = self.source()?;
        let kind = parse_kind(kind)?;
        let index = src
            .position(name)
            .ok_or_else(|| errors::not_found(py, &self.path, "tensor", name))?;
        let t = src.tensor_at(index);
        let rows = Rows::all(&t);
        let fail = |e| errors::read_failure(py, &self.path, name, e);
        let len = decode::out_len(&t, kind, rows).map_err(fail)?;
        let out = out.get();
        if out.len() != len {
            return Err(PyValueError::new_err(format!(
                "out: {} bytes, for {len} bytes",
                out.len()
            )));
        }
        #[allow(unsafe_code)]
        // SAFETY: the GIL is held until the read ends, so no Python code runs that could reach
        // the memory while the slice lives, the guarantee PyO3's own writes into Python
        // buffers rest on (`PyBuffer::copy_from_slice`); and with the GIL held no other
        // `read_into` can make a slice of it meanwhile.
        let memory = unsafe { out.bytes_mut() };
        let request = Request { index, kind, rows };
        let outcome = decode::read_all(&src, vec![(request, Target::Fill(Out::Zeroed(memory)))]);
        outcome.into_iter().try_for_each(|o| o.map_err(fail))
    }

    /// The asset names, in file order (shard 1's, for a set).
    fn asset_names(&self) -> PyResult<Vec<String>> {
        let src = self.source()?;
        Ok(src.model().assets().map(|(n, _)| n.to_string()).collect())
    }

    /// The bytes of asset `name`.
    fn asset<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyBytes>> {
        let src = self.source()?;
        let bytes = src
            .model()
            .assets()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| b)
            .ok_or_else(|| errors::not_found(py, &self.path, "asset", name))?;
        Ok(PyBytes::new(py, bytes))
    }

    /// Writes the assets (all, or those in `names`) under `directory`, confined to it (§5),
    /// and returns the paths written. An existing file is replaced only if `overwrite`.
    #[pyo3(signature = (directory, names = None, overwrite = false))]
    fn save_assets(
        &self,
        py: Python<'_>,
        directory: PathBuf,
        names: Option<Vec<String>>,
        overwrite: bool,
    ) -> PyResult<Vec<PathBuf>> {
        let src = self.source()?;
        let all: Vec<(&str, &[u8])> = src.model().assets().collect();
        let chosen: Vec<(&str, &[u8])> = match &names {
            None => all,
            Some(names) => names
                .iter()
                .map(|n| {
                    all.iter()
                        .find(|(a, _)| a == n)
                        .copied()
                        .ok_or_else(|| errors::not_found(py, &self.path, "asset", n))
                })
                .collect::<PyResult<_>>()?,
        };
        py.detach(|| assets::write_all(&directory, &chosen, overwrite))
            .map_err(|e| errors::write_failure(py, &self.path, e))
    }

    /// Verifies every byte of every file (§14), as `qins-inspect --verify` does.
    fn verify(&self, py: Python<'_>) -> PyResult<()> {
        let src = self.source()?;
        py.detach(|| src.model().verify())
            .map_err(|e| errors::read_error(py, &self.path, None, e))
    }

    /// Closes the model. Arrays already read stay valid: they own their memory, or their
    /// mapping of the file.
    fn close(&self) {
        let mut guard = self.source.lock().unwrap_or_else(|e| e.into_inner());
        *guard = None;
    }

    /// Whether the model is closed.
    #[getter]
    fn closed(&self) -> bool {
        self.source
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }
}

/// The kind called `name`, or a `ValueError`.
fn parse_kind(name: &str) -> PyResult<Kind> {
    Kind::parse(name).ok_or_else(|| {
        PyValueError::new_err(format!(
            "kind {name:?}: expected \"f32\", \"f16\", \"bf16\" or \"raw\""
        ))
    })
}

/// The compiled core of the `qins` package.
#[pymodule]
fn _qins(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<File>()?;
    m.add_class::<Memory>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

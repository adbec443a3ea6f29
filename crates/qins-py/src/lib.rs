//! `qins._qins`, the compiled core of the `qins` Python package: a `.qins` file opened and
//! validated by `qins-read`, its tensors verified and decoded into numpy arrays on every core
//! with the GIL released. The package's Python modules (`python/qins`) give it safetensors'
//! API; this module is their engine, not an API of its own.
//!
//! It never writes a file, except the assets a caller asks for (module `assets`), and it depends on
//! no qins crate but `qins-read` and `qins-format`.

mod assets;
mod decode;
mod errors;
mod source;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use qins_format::Storage;

use decode::{Kind, Rows};
use source::Source;

/// `(name, dtype, shape, storage)` of a tensor.
type TensorInfo = (String, String, Vec<u64>, String);

/// An open `.qins` file.
#[pyclass(module = "qins._qins", name = "File", frozen)]
struct File {
    path: PathBuf,
    /// `None` once closed. Readers clone the `Arc`, so closing never waits for a read, and the
    /// mapping goes when the last read holding it ends.
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

/// `numpy.zeros(len, dtype)`: a new array that no other code holds yet.
fn zeros<'py>(py: Python<'py>, len: usize, dtype: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("numpy")?.call_method1("zeros", (len, dtype))
}

/// Runs `f` on the memory of `array`, a writable C-contiguous array of `len` bytes that this
/// module has just created with [`zeros`], with the GIL released.
fn with_array_memory<T: Send>(
    py: Python<'_>,
    array: &Bound<'_, PyAny>,
    len: usize,
    f: impl FnOnce(&mut [u8]) -> T + Send,
) -> PyResult<T> {
    let buffer = pyo3::buffer::PyUntypedBuffer::get(array)?;
    if buffer.readonly() || !buffer.is_c_contiguous() || buffer.len_bytes() != len {
        return Err(PyValueError::new_err(
            "numpy gave an array that is not writable, contiguous and of the size asked",
        ));
    }
    let bytes: &mut [u8] = if len == 0 {
        &mut []
    } else {
        #[allow(unsafe_code)]
        // SAFETY: the buffer export describes `len` writable, contiguous, initialised bytes
        // (numpy.zeros fills them) at `buf_ptr`, and keeps them allocated and in place until
        // `buffer` is dropped, after `f` returns: the slice does not outlive the memory. No
        // other reference to that memory exists while the slice does: the array was created by
        // this module a moment ago and has not been returned, stored or passed to any other
        // code, so no Python thread (the GIL being released) and no other Rust code can reach
        // it; this is the only slice made from it.
        unsafe {
            std::slice::from_raw_parts_mut(buffer.buf_ptr().cast::<u8>(), len)
        }
    };
    let r = py.detach(|| f(bytes));
    drop(buffer);
    Ok(r)
}

#[pymethods]
impl File {
    /// Opens and validates a `.qins` file (spec §17); with `verify`, checks its checksums too:
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

    /// The path the file was opened with.
    #[getter]
    fn path(&self) -> &Path {
        &self.path
    }

    /// `(major, minor)` format version.
    fn version(&self) -> PyResult<(u16, u16)> {
        Ok(self.source()?.qins().version())
    }

    /// Whether tensors are verified before they are read.
    fn verifies(&self) -> PyResult<bool> {
        Ok(self.source()?.verifies())
    }

    /// The tensor names, in file order.
    fn keys(&self) -> PyResult<Vec<String>> {
        let src = self.source()?;
        Ok(src.qins().tensors().map(|t| t.name().to_string()).collect())
    }

    /// The metadata (§7).
    fn metadata(&self) -> PyResult<BTreeMap<String, String>> {
        Ok(self.source()?.qins().metadata().clone())
    }

    /// `(dtype, shape, storage)` of every tensor, in file order: the dtype's safetensors name,
    /// the shape, and `"raw"` or the codec's name.
    fn tensor_infos(&self) -> PyResult<Vec<TensorInfo>> {
        let src = self.source()?;
        Ok(src
            .qins()
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
    /// of the first dimension are read, and only their elements decoded.
    #[pyo3(signature = (name, kind, start = 0, count = None, step = 1))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        kind: &str,
        start: u64,
        count: Option<u64>,
        step: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let src = self.source()?;
        let kind = Kind::parse(kind).ok_or_else(|| {
            PyValueError::new_err(format!(
                "kind {kind:?}: expected \"f32\", \"f16\", \"bf16\" or \"raw\""
            ))
        })?;
        let (index, t) = src
            .tensor(name)
            .ok_or_else(|| errors::not_found(py, &self.path, "tensor", name))?;
        let rows = match count {
            Some(count) => Rows { start, count, step },
            None if start == 0 && step == 1 => Rows::all(&t),
            None => return Err(PyValueError::new_err("start and step need a count")),
        };
        let fail = |e| errors::read_failure(py, &self.path, name, e);
        let len = decode::out_len(&t, kind, rows).map_err(fail)?;
        let array = zeros(py, len / element_size(kind), kind.carrier())?;
        with_array_memory(py, &array, len, |out| {
            decode::read(&src, index, kind, rows, out)
        })?
        .map_err(fail)?;
        Ok(array)
    }

    /// The asset names, in file order.
    fn asset_names(&self) -> PyResult<Vec<String>> {
        let src = self.source()?;
        Ok(src.qins().assets().map(|(n, _)| n.to_string()).collect())
    }

    /// The bytes of asset `name`.
    fn asset<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyBytes>> {
        let src = self.source()?;
        let bytes = src
            .qins()
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
        let all: Vec<(&str, &[u8])> = src.qins().assets().collect();
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

    /// Verifies every byte of the file (§14), as `qins-inspect --verify` does.
    fn verify(&self, py: Python<'_>) -> PyResult<()> {
        let src = self.source()?;
        py.detach(|| src.qins().verify())
            .map_err(|e| errors::read_error(py, &self.path, None, e))
    }

    /// Closes the file. Arrays already read stay valid: they own their memory.
    fn close(&self) {
        let mut guard = self.source.lock().unwrap_or_else(|e| e.into_inner());
        *guard = None;
    }

    /// Whether the file is closed.
    #[getter]
    fn closed(&self) -> bool {
        self.source
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }
}

/// Bytes per element of the array that receives `kind`.
fn element_size(kind: Kind) -> usize {
    match kind {
        Kind::F32 => 4,
        Kind::F16 | Kind::Bf16 => 2,
        Kind::Raw => 1,
    }
}

/// The compiled core of the `qins` package.
#[pymodule]
fn _qins(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<File>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

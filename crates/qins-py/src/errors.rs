//! Rust errors to the Python exceptions of `qins._errors`: one class per error kind of spec §17
//! and §21.6 (`ReadError::kind`), each message prefixed with the path the model was opened with.

use std::path::Path;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use qins_read::{DecodeError, ReadError};

use crate::assets::WriteFailure;
use crate::decode::ReadFailure;

/// An instance of `qins._errors.<class>` with `message` and the keyword arguments, as a `PyErr`.
fn raise(py: Python<'_>, class: &str, message: String, kwargs: &[(&str, Py<PyAny>)]) -> PyErr {
    let make = || -> PyResult<PyErr> {
        let cls = py.import("qins._errors")?.getattr(class)?;
        let kw = PyDict::new(py);
        for (k, v) in kwargs {
            kw.set_item(k, v)?;
        }
        Ok(PyErr::from_value(cls.call((message,), Some(&kw))?))
    };
    make().unwrap_or_else(|e| e)
}

fn path_arg(py: Python<'_>, path: &Path) -> Py<PyAny> {
    path.display()
        .to_string()
        .into_pyobject(py)
        .map_or_else(|_| py.None(), |s| s.into_any().unbind())
}

fn str_arg(py: Python<'_>, s: Option<&str>) -> Py<PyAny> {
    match s {
        Some(s) => s
            .into_pyobject(py)
            .map_or_else(|_| py.None(), |s| s.into_any().unbind()),
        None => py.None(),
    }
}

/// An I/O error on `path` as `qins.QinsIOError`, an `OSError` with its `errno`.
fn io_error(py: Python<'_>, file: &Path, path: &Path, source: &std::io::Error) -> PyErr {
    let errno = source.raw_os_error().map_or_else(
        || py.None(),
        |n| {
            n.into_pyobject(py)
                .map_or_else(|_| py.None(), |n| n.into_any().unbind())
        },
    );
    raise(
        py,
        "QinsIOError",
        format!("{}: {source}", path.display()),
        &[
            ("path", path_arg(py, file)),
            ("errno", errno),
            ("filename", path_arg(py, path)),
        ],
    )
}

/// A refusal of the model opened as `file` by the reader: the class of its kind, the tensor if
/// known. Its `path` is the file at fault: for a set, the shard or index the error names
/// (§21.5); else `file`.
pub fn read_error(py: Python<'_>, file: &Path, tensor: Option<&str>, e: ReadError) -> PyErr {
    if let ReadError::Io { path, source } = &e {
        return io_error(py, file, path, source);
    }
    let at = e.file().unwrap_or(file);
    raise(
        py,
        &format!("{}Error", e.kind()),
        format!("{}: {e}", file.display()),
        &[("path", path_arg(py, at)), ("tensor", str_arg(py, tensor))],
    )
}

/// A failed read of `tensor`.
pub fn read_failure(py: Python<'_>, file: &Path, tensor: &str, e: ReadFailure) -> PyErr {
    match e {
        ReadFailure::Read(e) => read_error(py, file, Some(tensor), e),
        ReadFailure::Decode(e) => decode_error(py, file, tensor, e),
        ReadFailure::Request(msg) => PyValueError::new_err(format!("{}: {msg}", file.display())),
    }
}

/// A decode call the tensor cannot serve, as `qins.QinsDecodeError`.
pub fn decode_error(py: Python<'_>, file: &Path, tensor: &str, e: DecodeError) -> PyErr {
    raise(
        py,
        "QinsDecodeError",
        format!("{}: {e}", file.display()),
        &[
            ("path", path_arg(py, file)),
            ("tensor", str_arg(py, Some(tensor))),
        ],
    )
}

/// No tensor (or asset, per `what`) called `name`, as `qins.TensorNotFoundError` (or
/// `qins.AssetNotFoundError`), which are `KeyError`s.
pub fn not_found(py: Python<'_>, file: &Path, what: &str, name: &str) -> PyErr {
    let (class, arg) = match what {
        "asset" => ("AssetNotFoundError", "asset"),
        _ => ("TensorNotFoundError", "tensor"),
    };
    raise(
        py,
        class,
        format!("{}: no {what} called {name:?}", file.display()),
        &[("path", path_arg(py, file)), (arg, str_arg(py, Some(name)))],
    )
}

/// An asset that could not be written.
pub fn write_failure(py: Python<'_>, file: &Path, e: WriteFailure) -> PyErr {
    io_error(py, file, &e.path, &e.source)
}

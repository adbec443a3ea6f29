//! Memory of large tensors, which the extension allocates or maps itself and hands to numpy as
//! a buffer ([`Memory`]): an array made by `numpy.frombuffer` on it keeps it alive.
//!
//! - A decoded tensor of [`LARGE`] bytes or more is written into anonymous memory of its own
//!   ([`anonymous`]), which the system gives zeroed, in pages of the size the system's policy
//!   chooses. numpy asks for transparent huge pages on every large array it allocates
//!   (`madvise(MADV_HUGEPAGE)`); where new huge pages are costly to provide, as in virtual
//!   machines that hand free memory back to their host, that made the kernel's share of a load
//!   3 to 6 times larger than with the default pages (measured: 850 MB of new arrays, 1.2 to
//!   2.1 s of system time against 0.29 s). PyTorch's allocator asks for none either. The memory
//!   goes back to the system as soon as the tensor is freed.
//! - A raw tensor of [`LARGE`] bytes or more is a private, copy-on-write mapping of its bytes
//!   in the file ([`map_private`]), as `safetensors.torch.load_file` returns every tensor
//!   (`torch.UntypedStorage.from_file(shared=False)`, a `MAP_PRIVATE` mapping). The array is
//!   writable; what is written stays in the process (the kernel copies the page first) and
//!   never reaches the file. Pages not written are the file's pages in the page cache: nothing
//!   is read or copied until the tensor is used. Each tensor has a mapping of its own, which
//!   lives as long as the array (closing the file does not end it). While it lives the file
//!   must not be modified or truncated in place, the contract of every mapped file
//!   (`qins_read::open`); replacing it (a rename, as every writer of `.qins` files in this
//!   project does) leaves the mapping intact.
//!
//! Smaller tensors go into arrays numpy allocates, where a mapping of their own would cost more
//! than it saves.

use std::ffi::{c_int, c_void};
use std::fs::File;
use std::path::PathBuf;

use memmap2::{MmapMut, MmapOptions};
use pyo3::ffi;
use pyo3::prelude::*;

/// Tensors of this many bytes or more get memory of their own ([`anonymous`], or
/// [`map_private`] for raw ones); smaller ones go into arrays numpy allocates.
pub const LARGE: usize = 1 << 20;

/// `len` bytes of new, zeroed, anonymous memory.
pub fn anonymous(len: usize) -> std::io::Result<MmapMut> {
    MmapMut::map_anon(len)
}

/// A private, copy-on-write mapping of the `len` bytes of `file` from `offset`.
pub fn map_private(file: &File, offset: u64, len: usize) -> std::io::Result<MmapMut> {
    #[allow(unsafe_code)]
    // SAFETY: `MmapOptions::map_copy` is unsafe because the mapped bytes change if the file is
    // modified in place while mapped. Python reads and writes them only through the array (as
    // plain bytes, which every bit pattern is); Rust reads them once, to verify them, before
    // the array exists. Writes go to the process's own copy of a page (`MAP_PRIVATE`), never
    // to the file. That the file is not modified in place while mapped is the documented
    // contract of every mapped `.qins` (`qins_read::open`, and the `qins` package's docs).
    unsafe {
        MmapOptions::new().offset(offset).len(len).map_copy(file)
    }
}

/// A tensor's memory: anonymous, or a private mapping of its file. A writable buffer, for
/// `numpy.frombuffer`.
#[pyclass(module = "qins._qins", name = "Memory", frozen)]
pub struct Memory {
    map: MmapMut,
    /// The file mapped, for a private mapping of a file.
    file: Option<PathBuf>,
}

impl Memory {
    /// Wraps memory from [`anonymous`], or from [`map_private`] of the file at `file`.
    pub fn new(map: MmapMut, file: Option<PathBuf>) -> Memory {
        Memory { map, file }
    }

    /// The number of bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The bytes, to be written again. They are initialised: the system zeroes anonymous
    /// memory and maps a file's bytes, and only bytes are ever written there since, by this
    /// extension or through the buffer.
    ///
    /// # Safety
    /// No other code may read or write the bytes while the slice lives: the GIL must be held
    /// throughout (no Python code runs), and no other slice of them may exist.
    #[allow(unsafe_code, clippy::mut_from_ref)]
    pub unsafe fn bytes_mut(&self) -> &mut [u8] {
        // SAFETY: the pointer is the mapping's own, valid for `len` initialised, writable
        // bytes while `self` lives, which the slice, borrowing `self`, cannot outlive;
        // exclusive access is the caller's condition.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_ptr().cast_mut(), self.map.len()) }
    }
}

// The buffer protocol's entry point is an `unsafe fn` by PyO3's signature.
#[allow(unsafe_code)]
#[pymethods]
impl Memory {
    /// The buffer protocol: the bytes, writable, one-dimensional, unsigned bytes.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let map = &slf.get().map;
        let len = ffi::Py_ssize_t::try_from(map.len())
            .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("memory too large"))?;
        // SAFETY: `view` is the caller's buffer structure (the buffer protocol's contract).
        // The pointer is the mapping's own (from the system, not derived from a Rust
        // reference), valid for `len` bytes and writable (anonymous, or a private mapping with
        // write access) until the mapping is dropped, which cannot happen while the buffer
        // lives: the view holds a reference to `slf` (`PyBuffer_FillInfo` takes one), so `slf`
        // and its mapping outlive every export. Rust holds no reference to these bytes any
        // more: the read that filled or verified them has ended.
        let r = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                map.as_ptr().cast_mut().cast::<c_void>(),
                len,
                0,
                flags,
            )
        };
        if r != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    /// The number of bytes.
    fn __len__(&self) -> usize {
        self.map.len()
    }

    /// The file these bytes are a private mapping of, or `None` for anonymous memory.
    #[getter]
    fn file(&self) -> Option<PathBuf> {
        self.file.clone()
    }
}

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
//! A file per stage: `plan.rs` (what is declared up front), `layout.rs` (the plan validated and
//! every offset computed), `stream.rs` (tensor data in plan order, checksummed as it passes),
//! `writer.rs` (the [`Writer`], and the LUT table and header written last), `atomic.rs` (the
//! temporary file beside the target: background flushes, the final sync, the rename, and the
//! removal of stale temporary files).
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

mod atomic;
mod layout;
mod plan;
pub mod set;
mod stream;
mod writer;

use std::io;
use std::path::PathBuf;

use qins_format::codec::EncodeError;

pub use plan::{Asset, Plan, TensorSpec};
pub use writer::Writer;

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

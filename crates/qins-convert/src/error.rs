//! The one error type of the library, grouped by who is at fault: the source directory, the
//! target, or the caller.

use std::io;
use std::path::PathBuf;

use qins_source::SourceError;
use qins_write::WriteError;

/// Why a conversion (or a dry-run plan) failed. Every variant names the file, and where one is
/// involved the tensor, and the cause. Nothing is left at the target path in any case.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    // ---- the source directory is at fault ----
    /// The source directory cannot be read, or is not a model directory the converter can
    /// take (the message names the file, the tensor and the fix).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A tensor selected for encoding holds NaN or infinity (spec §12).
    #[error(
        "{file}: tensor {tensor:?} has {value} at flat index {index}; a tensor to encode must be \
         finite (keep it raw with --exclude)"
    )]
    NonFinite {
        /// The weight file.
        file: PathBuf,
        /// The tensor.
        tensor: String,
        /// Flat (row-major) index of the first bad element.
        index: u64,
        /// The bad value.
        value: f32,
    },

    // ---- the target is at fault ----
    /// The target exists and overwriting was not asked for.
    #[error("{path}: already exists (pass --force to overwrite it)")]
    TargetExists {
        /// The target.
        path: PathBuf,
    },
    /// The target is one of the files the conversion reads.
    #[error("{target}: the target is one of the inputs ({input}); choose another output path")]
    TargetIsInput {
        /// The target.
        target: PathBuf,
        /// The input file it is.
        input: PathBuf,
    },
    /// The target (or its temporary file beside it) cannot be created or written.
    #[error("{path}: cannot write the target: {cause}")]
    TargetNotWritable {
        /// The target.
        path: PathBuf,
        /// The cause.
        cause: io::Error,
    },

    // ---- the caller is at fault ----
    /// An `--include` or `--exclude` pattern is not a valid glob.
    #[error("invalid glob {glob:?}: {cause}")]
    BadGlob {
        /// The pattern.
        glob: String,
        /// What is wrong.
        cause: String,
    },
    /// The model would need more shards than a set may have (spec §21.7).
    #[error(
        "the model would be {shards} shards, more than the 65536 a set may have (§21.7): \
         choose a larger --max-shard-size"
    )]
    TooManyShards {
        /// The shards it would take.
        shards: usize,
    },
    /// The alignment is not a power of two in [64, 1048576] (spec §3).
    #[error("alignment {alignment} is not a power of two in [64, 1048576]")]
    BadAlignment {
        /// The alignment asked for.
        alignment: u32,
    },
    /// The writer refused the plan (a limit of the format, e.g. metadata over 1 MiB).
    #[error("{target}: {cause}")]
    Writer {
        /// The target.
        target: PathBuf,
        /// The writer's error.
        cause: WriteError,
    },
}

impl ConvertError {
    /// Maps a writer error for `target` to the variant that names the cause best.
    pub(crate) fn from_write(target: &std::path::Path, e: WriteError) -> ConvertError {
        match e {
            WriteError::Exists { path } => ConvertError::TargetExists { path },
            WriteError::Io { source, .. } => ConvertError::TargetNotWritable {
                path: target.into(),
                cause: source,
            },
            cause => ConvertError::Writer {
                target: target.into(),
                cause,
            },
        }
    }
}

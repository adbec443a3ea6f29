//! The one error type of the library, grouped by who is at fault: the source directory, the
//! target, or the caller.

use std::io;
use std::path::PathBuf;

use qins_write::WriteError;

/// Why a conversion (or a dry-run plan) failed. Every variant names the file, and where one is
/// involved the tensor, and the cause. Nothing is left at the target path in any case.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    // ---- the source directory is at fault ----
    /// The source directory does not exist or cannot be listed.
    #[error("{path}: cannot read the model directory: {cause}")]
    SourceDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        cause: io::Error,
    },
    /// The source path exists but is not a directory.
    #[error("{path}: not a directory (expected a Hugging Face model directory)")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// The directory holds no safetensors weights.
    #[error(
        "{dir}: no safetensors weights (expected model.safetensors, or shards with model.safetensors.index.json){}",
        other_weights_hint(.other_weights)
    )]
    NoWeights {
        /// The directory.
        dir: PathBuf,
        /// Weight files in other formats that were found (e.g. `pytorch_model.bin`).
        other_weights: Vec<String>,
    },
    /// A safetensors file cannot be parsed (bad header, offsets, or length).
    #[error("{file}: not a valid safetensors file: {cause}")]
    BadSafetensors {
        /// The file.
        file: PathBuf,
        /// The cause, as the safetensors crate reports it.
        cause: safetensors::SafeTensorError,
    },
    /// The shard index cannot be parsed or names an unsafe shard path.
    #[error("{file}: bad shard index: {cause}")]
    BadIndex {
        /// The index file.
        file: PathBuf,
        /// What is wrong.
        cause: String,
    },
    /// The index names a shard that does not exist.
    #[error("{index}: shard {shard:?} (listed for tensor {tensor:?}) does not exist")]
    ShardMissing {
        /// The index file.
        index: PathBuf,
        /// The shard's name as the index gives it.
        shard: String,
        /// The first tensor (by name) the index places in that shard.
        tensor: String,
    },
    /// A tensor appears twice: two entries of the index, or two weight files.
    #[error("tensor {tensor:?} is listed twice: in {first} and in {second}")]
    DuplicateTensor {
        /// The tensor.
        tensor: String,
        /// Where it was seen first.
        first: String,
        /// Where it was seen again.
        second: String,
    },
    /// A shard holds a tensor that the index does not list (the index is the allowlist).
    #[error("{file}: tensor {tensor:?} is not listed in {index}")]
    UnindexedTensor {
        /// The shard holding the tensor.
        file: PathBuf,
        /// The tensor.
        tensor: String,
        /// The index file.
        index: PathBuf,
    },
    /// The index places a tensor in a shard that does not hold it.
    #[error("{index}: tensor {tensor:?} is listed in shard {shard:?}, which does not contain it")]
    TensorNotInShard {
        /// The index file.
        index: PathBuf,
        /// The tensor.
        tensor: String,
        /// The shard the index names.
        shard: String,
    },
    /// A tensor cannot be stored in a `.qins` file (name, rank or dtype outside the spec).
    #[error("{file}: tensor {tensor:?}: {cause}")]
    BadTensor {
        /// The weight file.
        file: PathBuf,
        /// The tensor.
        tensor: String,
        /// What is wrong.
        cause: String,
    },
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
    /// A source file cannot be opened, mapped or read.
    #[error("{path}: cannot read: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: io::Error,
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

fn other_weights_hint(other: &[String]) -> String {
    if other.is_empty() {
        String::new()
    } else {
        format!(
            "; found {} in another format, convert it to safetensors first",
            other.join(", ")
        )
    }
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

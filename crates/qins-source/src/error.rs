//! The one error type of the crate: what is wrong with the source directory, naming the file,
//! the tensor where there is one, and the fix.

use std::io;
use std::path::PathBuf;

/// Why a model directory cannot be read. Every variant names the file (and the tensor, where
/// one is involved), the cause, and where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
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
    /// The directory holds no safetensors weights, neither at its top level nor in a module
    /// directory of `modules.json`.
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
    #[error("{file}: not a valid safetensors file: {cause} (save or download it again)")]
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
    #[error(
        "{index}: shard {shard:?} (listed for tensor {tensor:?}) does not exist (download the \
         missing shard)"
    )]
    ShardMissing {
        /// The index file.
        index: PathBuf,
        /// The shard's name as the index gives it.
        shard: String,
        /// The first tensor (by name) the index places in that shard.
        tensor: String,
    },
    /// A tensor appears twice: two entries of the index, or two weight files of one weight set.
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
        /// The tensor (its name in the file, with its module's prefix, spec §18.1).
        tensor: String,
        /// What is wrong.
        cause: String,
    },
    /// A source file cannot be opened, mapped or read.
    #[error("{path}: cannot read: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: io::Error,
    },
    /// `modules.json` is not a sentence-transformers module list: not a JSON array of objects
    /// with a string `path`, or a path that is not a safe relative path (spec §18.1).
    #[error(
        "{file}: not a sentence-transformers module list: {cause} (fix modules.json, or remove it \
         if the model is not a sentence-transformers model)"
    )]
    BadModules {
        /// The `modules.json` file.
        file: PathBuf,
        /// What is wrong.
        cause: String,
    },
    /// A tensor's name starts with the directory of a module of `modules.json` that it does not
    /// belong to (spec §18.1): a `.qins` could not say which weight file it came from.
    #[error(
        "{file}: tensor {tensor:?} is named like a tensor of module {module:?} of modules.json, \
         but is not in that module's weights ({module}/model.safetensors); rename the tensor, or \
         the module's directory"
    )]
    ModuleNameClash {
        /// The weight file holding the tensor.
        file: PathBuf,
        /// The tensor, as it would be named in the `.qins`.
        tensor: String,
        /// The module whose directory the name starts with.
        module: String,
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

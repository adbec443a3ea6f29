//! The backend's errors.

use std::path::PathBuf;

/// Why a model's weights or files could not be loaded. Every variant names the file, and the
/// tensor or asset at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The `.qins` file could not be opened or was refused by the reader (spec §17), or, for a
    /// set of shards, the set is incomplete or inconsistent (§21.5: the error names the shard).
    #[error("{}: {source}", path.display())]
    Qins {
        /// The file, index or shard given.
        path: PathBuf,
        /// The reader's error.
        source: qins_read::ReadError,
    },
    /// The Hugging Face directory could not be opened or read, or was refused.
    #[error("{source}")]
    Dir {
        /// The source reader's error (it names the directory or file).
        source: qins_source::SourceError,
    },
    /// The model needs a tensor that the file does not have.
    #[error("{}: no tensor {tensor:?}, which the model needs (is this the right model for its config.json?)", file.display())]
    MissingTensor {
        /// The tensor the model asked for.
        tensor: String,
        /// The `.qins` file or model directory.
        file: PathBuf,
    },
    /// A tensor's stored bytes fail their checks (§14): the file is damaged. Nothing was run.
    #[error("{}: tensor {tensor:?} is damaged, the model was not run: {source}", file.display())]
    Damaged {
        /// The tensor.
        tensor: String,
        /// The `.qins` file (in a set, the shard that holds the tensor).
        file: PathBuf,
        /// What the check found.
        source: qins_read::ReadError,
    },
    /// The sections of a `.qins` outside the tensors (table of LUTs, assets, padding) fail their
    /// checks (§14): the file is damaged.
    #[error("{}: the file is damaged outside its tensors: {source}", file.display())]
    DamagedFrame {
        /// The `.qins` file (in a set, the damaged shard).
        file: PathBuf,
        /// What the check found.
        source: qins_read::ReadError,
    },
    /// The model asks for a tensor with another shape than the file stores.
    #[error("{}: tensor {tensor:?} has shape {stored:?}, the model expects {expected:?} (config.json does not match the weights)", file.display())]
    ShapeMismatch {
        /// The tensor.
        tensor: String,
        /// The `.qins` file or model directory.
        file: PathBuf,
        /// The shape the model asked for.
        expected: Vec<usize>,
        /// The shape in the file.
        stored: Vec<u64>,
    },
    /// The tensor's stored dtype has no conversion to the dtype the model asks for.
    #[error("{}: tensor {tensor:?} is stored as {stored}, which cannot be loaded as {requested}", file.display())]
    UnsupportedDtype {
        /// The tensor.
        tensor: String,
        /// The `.qins` file or model directory.
        file: PathBuf,
        /// The stored dtype (safetensors' name).
        stored: &'static str,
        /// The dtype the model asked for (candle's name).
        requested: &'static str,
    },
    /// candle refused to build a tensor from the decoded values (a device error, say).
    #[error("{}: tensor {tensor:?}: {source}", file.display())]
    Candle {
        /// The tensor.
        tensor: String,
        /// The `.qins` file or model directory.
        file: PathBuf,
        /// candle's error (boxed: it is large).
        source: Box<candle_core::Error>,
    },
    /// The model's constructor failed for a reason of its own (not a weight this crate served),
    /// or panicked.
    #[error("{}: the model could not be built: {message}", file.display())]
    Model {
        /// The `.qins` file or model directory.
        file: PathBuf,
        /// The constructor's error or panic message.
        message: String,
    },
}

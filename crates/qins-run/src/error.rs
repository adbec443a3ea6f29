//! The runner's errors.

use std::path::PathBuf;

/// Why a model could not be run or compared. Messages name the file and what is at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The weights or files could not be loaded (missing, damaged or mis-shaped tensor...).
    #[error(transparent)]
    Load(#[from] qins_candle::LoadError),
    /// `config.json` names an architecture this runner does not have.
    #[error("{}: architecture {found} is not supported; supported model_type values: {}", file.display(), supported.join(", "))]
    UnsupportedArchitecture {
        /// The model file or directory.
        file: PathBuf,
        /// What `config.json` says (`model_type`, `architectures`).
        found: String,
        /// The supported `model_type` values.
        supported: Vec<&'static str>,
    },
    /// A file the model needs is not among its assets.
    #[error("{}: no {asset} in the model's files ({why}); convert the model directory with it", file.display())]
    MissingAsset {
        /// The model file or directory.
        file: PathBuf,
        /// The asset's name.
        asset: String,
        /// What it is needed for.
        why: &'static str,
    },
    /// A model file (config, module config, template) cannot be understood.
    #[error("{}: {asset}: {cause}", file.display())]
    BadAsset {
        /// The model file or directory.
        file: PathBuf,
        /// The asset's name.
        asset: String,
        /// What is wrong.
        cause: String,
    },
    /// The command does not apply to this kind of model (embed on a causal LM, say).
    #[error("{}: {what}", file.display())]
    WrongKind {
        /// The model file or directory.
        file: PathBuf,
        /// What was asked and what the model is.
        what: String,
    },
    /// The two models of a comparison do not match (vocabulary, architecture).
    #[error("{a} and {b} are not the same model: {what}")]
    Mismatch {
        /// The `.qins` file.
        a: PathBuf,
        /// The source directory.
        b: PathBuf,
        /// What differs.
        what: String,
    },
    /// A tokenizer or template operation failed on the given text.
    #[error("{what}: {cause}")]
    Text {
        /// What was being done.
        what: &'static str,
        /// The cause.
        cause: String,
    },
    /// A computation in candle failed.
    #[error("{what}: {source}")]
    Compute {
        /// What was being computed.
        what: &'static str,
        /// candle's error (boxed: it is large).
        source: Box<candle_core::Error>,
    },
    /// Writing the output failed.
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

/// Maps a candle error in computation `what`.
pub(crate) fn compute(what: &'static str) -> impl FnOnce(candle_core::Error) -> RunError {
    move |source| RunError::Compute {
        what,
        source: Box::new(source),
    }
}

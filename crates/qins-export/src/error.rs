//! The exporter's one error type.

use std::path::PathBuf;

use qins_read::ReadError;

/// Why an export was refused or failed. Whatever the variant, nothing is left at the target
/// directory (an existing one is left as it was) and no temporary directory remains.
///
/// Grouped by who is at fault: the input file ([`BadInput`](Self::BadInput),
/// [`Damaged`](Self::Damaged), [`BadModules`](Self::BadModules)), the caller's choice of target or options
/// ([`TargetExists`](Self::TargetExists), [`TargetContainsInput`](Self::TargetContainsInput),
/// [`BadSize`](Self::BadSize)), the model itself ([`Unrepresentable`](Self::Unrepresentable)),
/// and the file system ([`TargetUnwritable`](Self::TargetUnwritable), [`Io`](Self::Io)).
///
/// Messages do not repeat their source error: print the chain (`{:#}` with anyhow) for the
/// whole story on one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The input is not a valid `.qins` file (its structure, spec §17).
    #[error("{}: not a valid .qins file or set", path.display())]
    BadInput {
        /// The input file.
        path: PathBuf,
        /// What the reader found.
        source: ReadError,
    },
    /// The input is damaged: verification (spec §14) found a bad checksum, non-zero padding,
    /// stray sign bits or a bad row scale. Nothing is exported.
    #[error("{}: damaged file ({section} is bad), nothing exported", path.display())]
    Damaged {
        /// The input file.
        path: PathBuf,
        /// The section at fault: `lut table`, `tensor "NAME" data|signs|scales`,
        /// `asset "NAME"`, or `padding at offset N`.
        section: String,
        /// What verification found.
        source: ReadError,
    },
    /// The file's `modules.json` asset is not a sentence-transformers module list, so the
    /// tensors of its modules (named `MODULE/NAME`, spec §18.1) cannot be put back in their
    /// directories. Nothing is exported.
    #[error(
        "{}: its asset modules.json is not a sentence-transformers module list, so the modules' \
         weights cannot be placed",
        path.display()
    )]
    BadModules {
        /// The input file.
        path: PathBuf,
        /// What is wrong with it.
        source: qins_source::SourceError,
    },
    /// The target exists and is not an empty directory, and replacing it was not asked for;
    /// or it is not a directory at all, which is never replaced.
    #[error("{}: target {reason}", path.display())]
    TargetExists {
        /// The target directory.
        path: PathBuf,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Replacing the target would delete the input file, which lies inside it.
    #[error("{}: target contains the input file {}, refusing to replace it", path.display(), input.display())]
    TargetContainsInput {
        /// The target directory.
        path: PathBuf,
        /// The input file.
        input: PathBuf,
    },
    /// A directory needed for the target (a missing parent, or the temporary directory
    /// `.NAME.tmp-XXXXXX` built beside it) cannot be created.
    #[error("cannot create directory {}", path.display())]
    TargetUnwritable {
        /// The directory that could not be created.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A size such as `--max-shard-size` is not understood.
    #[error("invalid size {text:?}: {reason} (e.g. 5GB, 500MB, 2GiB or a number of bytes)")]
    BadSize {
        /// The text given.
        text: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The model cannot be written as safetensors: a shard's header would exceed the
    /// 100,000,000 bytes that safetensors readers accept, or a size does not fit this
    /// platform's `usize`.
    #[error("{shard}: cannot be written as safetensors: {reason}")]
    Unrepresentable {
        /// The shard file's name.
        shard: String,
        /// Why.
        reason: String,
    },
    /// An I/O error reading the input or writing the exported files and moving them into place.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done: `open`, `write`, `rename`, …
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl ExportError {
    /// The error for a file the reader refused: I/O errors stay I/O errors, a bad structure is
    /// [`BadInput`](Self::BadInput).
    pub(crate) fn input(path: PathBuf, source: ReadError) -> ExportError {
        match source {
            ReadError::Io { path, source } => ExportError::Io {
                op: "open",
                path,
                source,
            },
            source => ExportError::BadInput { path, source },
        }
    }

    /// A [`Damaged`](Self::Damaged) error for what verification found, naming the section.
    pub(crate) fn damaged(path: PathBuf, source: ReadError) -> ExportError {
        let source = match source {
            // In one shard of a set: that shard is the damaged file.
            ReadError::In { file, inner } => return ExportError::damaged(file, *inner),
            source => source,
        };
        let section = match &source {
            ReadError::DataChecksum { section, .. } => section.clone(),
            ReadError::NonZeroPadding { offset, .. } => format!("padding at offset {offset}"),
            ReadError::StraySignBits { tensor } => format!("tensor {tensor:?} signs"),
            ReadError::BadScale { tensor, .. } => format!("tensor {tensor:?} scales"),
            other => other.kind().to_string(),
        };
        ExportError::Damaged {
            path,
            section,
            source,
        }
    }

    /// An I/O error doing `op` on `path`.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> ExportError {
        let path = path.into();
        move |source| ExportError::Io { op, path, source }
    }
}

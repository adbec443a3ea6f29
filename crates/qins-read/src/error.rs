//! The reader's errors: one variant per error kind of `spec/qins-v1.md` §17 and §21.6, plus
//! I/O, and [`ReadError::In`] for an error inside one file of a set.

use std::path::{Path, PathBuf};

use qins_format::names::NameProblem;

/// Why a file was refused. Each variant is an error kind of §17 (see [`ReadError::kind`]) and
/// carries the offending values; messages name the tensor, asset or section at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    // --- The file could not be read at all.
    /// An I/O error opening or mapping the file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },

    // --- Not a file this reader can take (§3, §15).
    /// The file is shorter than it must be (§3, §9.3, §16).
    #[error("file is truncated: {what} needs {needed} bytes, the file has {actual} (§9.3)")]
    Truncated {
        /// What needs the bytes: the preamble, `file_size` or `header_size`.
        what: &'static str,
        /// Bytes needed.
        needed: u64,
        /// Bytes present.
        actual: u64,
    },
    /// The magic bytes are wrong (§3).
    #[error("not a .qins file: magic is {found:02x?} (§3)")]
    BadMagic {
        /// The first 8 bytes.
        found: [u8; 8],
    },
    /// A major version this reader does not implement (§15).
    #[error("unsupported format version {major}.{minor}: this reader implements 1.x (§15)")]
    UnsupportedVersion {
        /// The file's major version.
        major: u16,
        /// The file's minor version.
        minor: u16,
    },
    /// `required_features` has bits this reader does not know (§3, §15).
    #[error("file requires unknown features {bits:#x}: a newer reader is needed (§15)")]
    UnsupportedFeature {
        /// The unknown bits.
        bits: u64,
    },

    // --- Malformed header (§3–§10).
    /// A count or size beyond the limits of §16.
    #[error("{what} is {value}, beyond the limit of {limit} (§16)")]
    LimitExceeded {
        /// The quantity.
        what: String,
        /// Its value.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// `header_size` disagrees with the counts (§3).
    #[error("header_size is {declared}, the counts imply {computed} (§3)")]
    HeaderSizeMismatch {
        /// The declared size.
        declared: u64,
        /// The size the counts imply.
        computed: u64,
    },
    /// Bytes past the last section or past `file_size` (§9.3).
    #[error("trailing bytes: {what} ends at {expected}, the file is {actual} bytes (§9.3)")]
    TrailingBytes {
        /// Which end was expected.
        what: &'static str,
        /// Where the file should end.
        expected: u64,
        /// Where it ends.
        actual: u64,
    },
    /// The header CRC does not match (§8).
    #[error("header checksum mismatch: stored {stored:#010x}, computed {computed:#010x} (§8)")]
    HeaderChecksum {
        /// The CRC in the file.
        stored: u32,
        /// The CRC of the header bytes.
        computed: u32,
    },
    /// A reserved field or unknown flag is not zero (§2, §4).
    #[error("{field} is not zero (reserved, §2)")]
    ReservedNonZero {
        /// The field.
        field: String,
    },
    /// `alignment` is not allowed (§3).
    #[error("alignment {alignment} is not a power of two in [64, 1048576] (§3)")]
    BadAlignment {
        /// The alignment.
        alignment: u32,
    },
    /// A name breaks the rules of §4–§6.
    #[error("{what}: {problem} (§6)")]
    BadName {
        /// Which record.
        what: String,
        /// The problem.
        problem: NameProblem,
    },
    /// Two tensors or two assets share a name (§4, §5).
    #[error("{what} appears twice (§4, §5)")]
    DuplicateName {
        /// The name.
        what: String,
    },
    /// A dtype code not in the registry (§13.1).
    #[error("tensor {tensor:?}: unknown dtype code {code} (§13.1)")]
    UnknownDtype {
        /// The tensor.
        tensor: String,
        /// The code.
        code: u8,
    },
    /// Rank above 8 or a dimension set past the rank (§4).
    #[error("tensor {tensor:?}: {reason} (§4)")]
    BadShape {
        /// The tensor.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// A codec id not in the registry (§12).
    #[error("tensor {tensor:?}: unknown codec id {id}: a newer reader is needed (§12)")]
    UnknownCodec {
        /// The tensor.
        tensor: String,
        /// The codec id.
        id: u16,
    },
    /// An encoded tensor whose source dtype cannot be encoded (§13.2).
    #[error("tensor {tensor:?}: dtype {dtype} cannot be encoded (§13.2)")]
    BadDtypeForCodec {
        /// The tensor.
        tensor: String,
        /// The dtype name.
        dtype: &'static str,
    },
    /// `ROW_SCALES` on a raw tensor (§4).
    #[error("tensor {tensor:?}: row scales flag on a raw tensor (§4)")]
    FlagMismatch {
        /// The tensor.
        tensor: String,
    },
    /// Codec parameters not finite or against the codec's constraint (§4, §12).
    #[error("tensor {tensor:?}: invalid codec parameters {param0}, {param1} (§12)")]
    BadParams {
        /// The tensor.
        tensor: String,
        /// `param0`.
        param0: f64,
        /// `param1`.
        param1: f64,
    },
    /// `lut_index` out of sequence or `lut_count` wrong (§4, §10).
    #[error("{what}: expected {expected}, found {found} (§10)")]
    BadLutIndex {
        /// The tensor or `lut_count`.
        what: String,
        /// The expected value.
        expected: u64,
        /// The value in the file.
        found: u64,
    },
    /// A section's length is not what its record implies (§4, §10).
    #[error("{section}: length {found}, expected {expected} (§4)")]
    SectionSize {
        /// The section.
        section: String,
        /// The length required.
        expected: u64,
        /// The length in the file.
        found: u64,
    },
    /// A section offset is not a multiple of the alignment (§9.2).
    #[error("{section}: offset {offset} is not a multiple of the alignment {alignment} (§9.2)")]
    Misaligned {
        /// The section.
        section: String,
        /// Its offset.
        offset: u64,
        /// The file's alignment.
        alignment: u32,
    },
    /// A section or name outside its bounds (§6, §9.2).
    #[error("{section}: range {offset}+{length} is outside 0..{limit} (§9.2)")]
    OutOfBounds {
        /// The section or name.
        section: String,
        /// Its offset.
        offset: u64,
        /// Its length.
        length: u64,
        /// The end of the containing range.
        limit: u64,
    },
    /// A section starts before the previous one ends (§9.2).
    #[error("{section}: offset {offset} overlaps the previous section, which ends at {previous_end} (§9.2)")]
    Overlap {
        /// The section.
        section: String,
        /// Its offset.
        offset: u64,
        /// The previous section's end.
        previous_end: u64,
    },
    /// Bytes between sections beyond the alignment padding (§9.2).
    #[error(
        "{section}: offset {offset}, expected {expected}: bytes no section accounts for (§9.2)"
    )]
    Gap {
        /// The section.
        section: String,
        /// Its offset.
        offset: u64,
        /// The canonical offset.
        expected: u64,
    },
    /// The metadata is not a JSON object of strings (§7).
    #[error("metadata: {reason} (§7)")]
    BadMetadata {
        /// What is wrong.
        reason: String,
    },
    /// A LUT entry is invalid (§10).
    #[error("LUT {lut} (tensor {tensor:?}) entry {index} is {value}: LUT[0] must be +0.0 and entries finite and not negative (§10)")]
    BadLut {
        /// The LUT index.
        lut: u32,
        /// The tensor using it.
        tensor: String,
        /// The entry.
        index: u8,
        /// Its value.
        value: f32,
    },

    // --- Damaged data, found by verification (§14).
    /// A section's CRC does not match (§9.1, §14).
    #[error(
        "{section}: checksum mismatch: stored {stored:#010x}, computed {computed:#010x} (§14)"
    )]
    DataChecksum {
        /// The section.
        section: String,
        /// The CRC in the header.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// A padding byte is not zero (§9.2, §14).
    #[error("padding byte at offset {offset} is {value:#04x}, not zero (§9.2)")]
    NonZeroPadding {
        /// Its offset.
        offset: u64,
        /// Its value.
        value: u8,
    },
    /// An unused bit of the last sign byte is set (§11.2).
    #[error("tensor {tensor:?}: unused sign bits are set (§11.2)")]
    StraySignBits {
        /// The tensor.
        tensor: String,
    },
    /// A row scale is not finite and positive (§11.3).
    #[error("tensor {tensor:?}: row scale {row} is {value}, not finite and positive (§11.3)")]
    BadScale {
        /// The tensor.
        tensor: String,
        /// The row.
        row: u64,
        /// The scale.
        value: f32,
    },

    // --- Sets of shards (§21).
    /// An error inside one file of a set (a shard, or the index): its kind is the inner
    /// error's (§21.5).
    #[error("{}: {inner}", file.display())]
    In {
        /// The shard or index.
        file: PathBuf,
        /// What is wrong with it (its message is part of this one's).
        inner: Box<ReadError>,
    },
    /// The index is not UTF-8 JSON or breaks a rule of §21.2.
    #[error("not a valid set index: {reason} (§21.2)")]
    BadIndex {
        /// What is wrong.
        reason: String,
    },
    /// A shard names an index that is not beside it (§21.3).
    #[error(
        "{} is a shard of set {set_id:?}, {}: put the index beside it, or open the set from \
         its index (§21.5)",
        shard.display(),
        match index {
            Some(p) => format!("whose index {} is missing", p.display()),
            None => "which names no valid index file (qins.set.index_file)".to_string(),
        }
    )]
    MissingIndex {
        /// The shard opened.
        shard: Box<Path>,
        /// Its set id.
        set_id: Box<str>,
        /// Where its index should be; `None` if it names no valid file name.
        index: Option<Box<Path>>,
    },
    /// A shard the index lists is not in the index's directory (§21.5).
    #[error("shard {k} of {n}, {}, is missing: the index lists it, but there is no such file; \
             download or restore it (§21.5)", shard.display())]
    MissingShard {
        /// The missing shard's path.
        shard: PathBuf,
        /// Its position, from 1.
        k: usize,
        /// The number of shards.
        n: usize,
    },
    /// A file the index lists is not a shard of the set (§21.3).
    #[error("{} is not a shard of this set: its set id is {}, the index's is {expected:?}; \
             it belongs to another set or is a single file (§21.5)",
             shard.display(), found.as_deref().map_or("absent".to_string(), |f| format!("{f:?}")))]
    ForeignShard {
        /// The shard.
        shard: Box<Path>,
        /// Its `qins.set.id`, if any.
        found: Option<Box<str>>,
        /// The index's `set_id`.
        expected: Box<str>,
    },
    /// A shard of the set at another position, or of a set of another size (§21.3).
    #[error("{} says it is shard {found}, the index lists it as shard {k} of {n}: shards \
             renamed or swapped, or an index of another size (§21.5)", shard.display())]
    MisplacedShard {
        /// The shard.
        shard: PathBuf,
        /// Its `qins.set.shard` and `qins.set.shard_count`, as found: `K of N`.
        found: Box<str>,
        /// Its position in the index, from 1.
        k: u32,
        /// The index's number of shards.
        n: u32,
    },
    /// A shard's size or header CRC differs from the index, or the weight map disagrees with
    /// the shards (§21.2, §21.5).
    #[error("{}: the index disagrees: {what} (§21.5)", file.display())]
    IndexMismatch {
        /// The shard (or the index, for a weight-map entry no shard holds).
        file: PathBuf,
        /// What differs.
        what: String,
    },
    /// A shard other than the first has assets (§21.4).
    #[error("{}: asset {asset:?} in shard {k}: a set's assets are in shard 1 only (§21.4)", shard.display())]
    MisplacedAsset {
        /// The shard.
        shard: Box<Path>,
        /// Its position, from 1.
        k: usize,
        /// The first asset in it.
        asset: String,
    },
    /// Two shards hold a tensor of the same name (§21.4).
    #[error("tensor {tensor:?} is in {} and again in {} (§21.4)", first.display(), shard.display())]
    DuplicateTensor {
        /// The tensor.
        tensor: Box<str>,
        /// The shard that holds it first.
        first: Box<Path>,
        /// The later shard that holds it too.
        shard: Box<Path>,
    },
    /// The shard a set was opened from is not listed by its index (§21.5).
    #[error("{} is not listed by its index {}: an extra or renamed shard, or one of another \
             set; open the set from its index (§21.5)", shard.display(), index.display())]
    UnlistedShard {
        /// The shard opened.
        shard: PathBuf,
        /// The index it names.
        index: PathBuf,
    },
}

impl ReadError {
    /// The error kind's name in §17 (`"BadMagic"`, `"Gap"`, …), or `"Io"`.
    pub fn kind(&self) -> &'static str {
        match self {
            ReadError::Io { .. } => "Io",
            ReadError::Truncated { .. } => "Truncated",
            ReadError::BadMagic { .. } => "BadMagic",
            ReadError::UnsupportedVersion { .. } => "UnsupportedVersion",
            ReadError::UnsupportedFeature { .. } => "UnsupportedFeature",
            ReadError::LimitExceeded { .. } => "LimitExceeded",
            ReadError::HeaderSizeMismatch { .. } => "HeaderSizeMismatch",
            ReadError::TrailingBytes { .. } => "TrailingBytes",
            ReadError::HeaderChecksum { .. } => "HeaderChecksum",
            ReadError::ReservedNonZero { .. } => "ReservedNonZero",
            ReadError::BadAlignment { .. } => "BadAlignment",
            ReadError::BadName { .. } => "BadName",
            ReadError::DuplicateName { .. } => "DuplicateName",
            ReadError::UnknownDtype { .. } => "UnknownDtype",
            ReadError::BadShape { .. } => "BadShape",
            ReadError::UnknownCodec { .. } => "UnknownCodec",
            ReadError::BadDtypeForCodec { .. } => "BadDtypeForCodec",
            ReadError::FlagMismatch { .. } => "FlagMismatch",
            ReadError::BadParams { .. } => "BadParams",
            ReadError::BadLutIndex { .. } => "BadLutIndex",
            ReadError::SectionSize { .. } => "SectionSize",
            ReadError::Misaligned { .. } => "Misaligned",
            ReadError::OutOfBounds { .. } => "OutOfBounds",
            ReadError::Overlap { .. } => "Overlap",
            ReadError::Gap { .. } => "Gap",
            ReadError::BadMetadata { .. } => "BadMetadata",
            ReadError::BadLut { .. } => "BadLut",
            ReadError::DataChecksum { .. } => "DataChecksum",
            ReadError::NonZeroPadding { .. } => "NonZeroPadding",
            ReadError::StraySignBits { .. } => "StraySignBits",
            ReadError::BadScale { .. } => "BadScale",
            ReadError::In { inner, .. } => inner.kind(),
            ReadError::BadIndex { .. } => "BadIndex",
            ReadError::MissingIndex { .. } => "MissingIndex",
            ReadError::MissingShard { .. } => "MissingShard",
            ReadError::ForeignShard { .. } => "ForeignShard",
            ReadError::MisplacedShard { .. } => "MisplacedShard",
            ReadError::IndexMismatch { .. } => "IndexMismatch",
            ReadError::MisplacedAsset { .. } => "MisplacedAsset",
            ReadError::DuplicateTensor { .. } => "DuplicateTensor",
            ReadError::UnlistedShard { .. } => "UnlistedShard",
        }
    }

    /// The file that the error names (§21.5): for a set, the shard or index it concerns, or
    /// the missing file; for an I/O error, its path. `None` for an error inside a single file,
    /// which its caller names.
    pub fn file(&self) -> Option<&Path> {
        match self {
            ReadError::In { file, .. } | ReadError::IndexMismatch { file, .. } => Some(file),
            ReadError::Io { path, .. } => Some(path),
            ReadError::MissingShard { shard, .. }
            | ReadError::MisplacedShard { shard, .. }
            | ReadError::UnlistedShard { shard, .. } => Some(shard),
            ReadError::ForeignShard { shard, .. }
            | ReadError::MisplacedAsset { shard, .. }
            | ReadError::DuplicateTensor { shard, .. } => Some(shard),
            ReadError::MissingIndex { shard, index, .. } => Some(index.as_deref().unwrap_or(shard)),
            _ => None,
        }
    }

    /// `self` inside `file`: [`ReadError::In`] unless it names its file already.
    pub(crate) fn within(self, file: &Path) -> ReadError {
        if self.file().is_some() {
            return self;
        }
        ReadError::In {
            file: file.into(),
            inner: Box::new(self),
        }
    }
}

/// A decode call the tensor cannot serve: the caller's mistake, not the file's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The tensor is raw: use its bytes.
    #[error("tensor {tensor:?} is raw ({dtype}), not encoded: use raw_bytes()")]
    NotEncoded {
        /// The tensor.
        tensor: String,
        /// Its dtype.
        dtype: &'static str,
    },
    /// The element or row range is outside the tensor, or the buffer does not match it.
    #[error("tensor {tensor:?}: elements {first}..{end} requested, the tensor has {numel}")]
    OutOfRange {
        /// The tensor.
        tensor: String,
        /// First element requested.
        first: u64,
        /// One past the last.
        end: u64,
        /// The tensor's element count.
        numel: u64,
    },
}

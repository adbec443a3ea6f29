"""The exceptions of `qins`: one class per error kind of the format's spec (§17), under a
common base, `QinsError`.

Every exception carries `path` (the file), `tensor` (the tensor at fault, when there is one),
`kind` (the spec's name of the error kind, e.g. `"DataChecksum"`) and `section` (the spec
sections that state the rule), and its message names all three:

    model.qins: tensor "w": signs: checksum mismatch: stored 0x1a2b3c4d, computed ... (§14)

The classes are grouped by who is at fault:

- `FormatError`: the file is malformed, truncated, or of a version or feature this reader does
  not implement. Raised when the file is opened (`safe_open`, `load_file`).
- `SetError` (a `FormatError`): a sharded set and its index disagree (§21).
- `IntegrityError`: the file is well formed but its data is damaged (a checksum, padding, sign
  bits or row scales). Raised when the damaged part is read, or by `safe_open.verify()`.
- `QinsIOError` (also an `OSError`): the file cannot be read, or an asset cannot be written.
- `TensorNotFoundError`, `AssetNotFoundError` (also `KeyError`s): no such name in the file.
- `UnsupportedDtypeError` (also a `TypeError`): the framework has no type for a tensor's dtype.
- `QinsDecodeError` (also a `ValueError`): a decode the tensor cannot serve.
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "QinsError",
    "FormatError",
    "IntegrityError",
    "QinsIOError",
    "QinsDecodeError",
    "TensorNotFoundError",
    "AssetNotFoundError",
    "UnsupportedDtypeError",
    "TruncatedError",
    "BadMagicError",
    "UnsupportedVersionError",
    "UnsupportedFeatureError",
    "LimitExceededError",
    "HeaderSizeMismatchError",
    "TrailingBytesError",
    "HeaderChecksumError",
    "ReservedNonZeroError",
    "BadAlignmentError",
    "BadNameError",
    "DuplicateNameError",
    "UnknownDtypeError",
    "BadShapeError",
    "UnknownCodecError",
    "BadDtypeForCodecError",
    "FlagMismatchError",
    "BadParamsError",
    "BadLutIndexError",
    "SectionSizeError",
    "MisalignedError",
    "OutOfBoundsError",
    "OverlapError",
    "GapError",
    "BadMetadataError",
    "BadLutError",
    "DataChecksumError",
    "NonZeroPaddingError",
    "StraySignBitsError",
    "BadScaleError",
    "SetError",
    "BadIndexError",
    "MissingIndexError",
    "MissingShardError",
    "ForeignShardError",
    "MisplacedShardError",
    "IndexMismatchError",
    "MisplacedAssetError",
    "DuplicateTensorError",
    "UnlistedShardError",
    "ERRORS_BY_KIND",
]


class QinsError(Exception):
    """Base class of every error `qins` raises about a file.

    Attributes:
        path (`str` or `None`): the file.
        tensor (`str` or `None`): the tensor at fault, if the error concerns one.
        kind (`str`): the error kind's name in the spec (§17), e.g. `"BadMagic"`; `""` for the
            errors that are not about the file's content.
        section (`str`): the spec sections that state the rule, e.g. `"§3"`.
    """

    kind: str = ""
    section: str = ""

    def __init__(self, message: str, *, path: Optional[str] = None, tensor: Optional[str] = None):
        super().__init__(message)
        self.path = path
        self.tensor = tensor


class FormatError(QinsError):
    """The file is malformed or unsupported: refused when it is opened (§17, steps 1-9)."""


class IntegrityError(QinsError):
    """The file's data is damaged: found by verification (§14), when the part is read."""


class QinsIOError(QinsError, OSError):
    """The file cannot be opened or mapped, or an asset cannot be written. An `OSError`: its
    `errno` and `filename` are set as the system reported them."""

    def __init__(
        self,
        message: str,
        *,
        path: Optional[str] = None,
        errno: Optional[int] = None,
        filename: Optional[str] = None,
    ):
        QinsError.__init__(self, message, path=path)
        self.errno = errno
        self.strerror = message
        self.filename = filename

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class QinsDecodeError(QinsError, ValueError):
    """A decode the tensor cannot serve (for example, decoding a raw tensor)."""


class TensorNotFoundError(QinsError, KeyError):
    """The file has no tensor of that name. A `KeyError`."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class AssetNotFoundError(QinsError, KeyError):
    """The file has no asset of that name. A `KeyError`; the name is in `asset`."""

    def __init__(self, message: str, *, path: Optional[str] = None, asset: Optional[str] = None):
        super().__init__(message, path=path)
        self.asset = asset

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnsupportedDtypeError(QinsError, TypeError):
    """The framework has no type for a tensor's dtype (for example F8_E4M3 in numpy without
    `ml_dtypes`, or the 6-bit floats anywhere). A `TypeError`."""


# --- Refused at open (§17): one class per kind.


class TruncatedError(FormatError):
    """The file is shorter than its preamble, its `file_size` or its `header_size` (§3, §9.3, §16)."""

    kind = "Truncated"
    section = "§3, §9.3, §16"


class BadMagicError(FormatError):
    """Not a .qins file: the magic bytes are wrong (§3)."""

    kind = "BadMagic"
    section = "§3"


class UnsupportedVersionError(FormatError):
    """A major format version this reader does not implement (§15)."""

    kind = "UnsupportedVersion"
    section = "§15"


class UnsupportedFeatureError(FormatError):
    """The file requires a feature bit this reader does not know (§3, §15)."""

    kind = "UnsupportedFeature"
    section = "§3, §15"


class LimitExceededError(FormatError):
    """A count, size or product beyond the limits of §16."""

    kind = "LimitExceeded"
    section = "§16"


class HeaderSizeMismatchError(FormatError):
    """`header_size` disagrees with the counts (§3)."""

    kind = "HeaderSizeMismatch"
    section = "§3"


class TrailingBytesError(FormatError):
    """Bytes after the last section, or after `file_size` (§9.3)."""

    kind = "TrailingBytes"
    section = "§9.3"


class HeaderChecksumError(FormatError):
    """The header's CRC-32 does not match (§8)."""

    kind = "HeaderChecksum"
    section = "§8"


class ReservedNonZeroError(FormatError):
    """A reserved field or an unknown flag bit is not zero (§2, §4)."""

    kind = "ReservedNonZero"
    section = "§2, §4"


class BadAlignmentError(FormatError):
    """The alignment is not a power of two in [64, 1048576] (§3)."""

    kind = "BadAlignment"
    section = "§3"


class BadNameError(FormatError):
    """A name is empty, too long, not UTF-8, contains NUL, or is an unsafe asset path (§4, §5, §6)."""

    kind = "BadName"
    section = "§4, §5, §6"


class DuplicateNameError(FormatError):
    """Two tensors, or two assets, share a name (§4, §5)."""

    kind = "DuplicateName"
    section = "§4, §5"


class UnknownDtypeError(FormatError):
    """A dtype code not in the registry (§13.1)."""

    kind = "UnknownDtype"
    section = "§13.1"


class BadShapeError(FormatError):
    """A rank above 8, or a non-zero dimension past the rank (§4)."""

    kind = "BadShape"
    section = "§4"


class UnknownCodecError(FormatError):
    """A codec id not in the registry: a newer reader is needed (§12)."""

    kind = "UnknownCodec"
    section = "§12"


class BadDtypeForCodecError(FormatError):
    """An encoded tensor whose dtype cannot be encoded (§13.2)."""

    kind = "BadDtypeForCodec"
    section = "§13.2"


class FlagMismatchError(FormatError):
    """The row-scales flag on a raw tensor (§4)."""

    kind = "FlagMismatch"
    section = "§4"


class BadParamsError(FormatError):
    """Codec parameters not finite or against the codec's constraint, or not zero on a raw
    tensor (§4, §12)."""

    kind = "BadParams"
    section = "§4, §12"


class BadLutIndexError(FormatError):
    """A `lut_index` out of sequence, or `lut_count` not the number of encoded tensors (§4, §10)."""

    kind = "BadLutIndex"
    section = "§4, §10"


class SectionSizeError(FormatError):
    """A section's length is not what its record implies, or an unused section is not all
    zero (§4, §10)."""

    kind = "SectionSize"
    section = "§4, §10"


class MisalignedError(FormatError):
    """A section's offset is not a multiple of the alignment (§9.2)."""

    kind = "Misaligned"
    section = "§9.2"


class OutOfBoundsError(FormatError):
    """A section or a name lies outside the file or the string table (§6, §9.2)."""

    kind = "OutOfBounds"
    section = "§6, §9.2"


class OverlapError(FormatError):
    """A section starts before the previous one ends (§9.2)."""

    kind = "Overlap"
    section = "§9.2"


class GapError(FormatError):
    """Bytes between two sections beyond the padding to the alignment (§9.2)."""

    kind = "Gap"
    section = "§9.2"


class BadMetadataError(FormatError):
    """The metadata is not a JSON object of strings (§7)."""

    kind = "BadMetadata"
    section = "§7"


class BadLutError(FormatError):
    """A table entry is invalid: LUT[0] is not +0.0, or an entry is negative or not finite (§10)."""

    kind = "BadLut"
    section = "§10"


# --- Found by verification (§14).


class DataChecksumError(IntegrityError):
    """A section's CRC-32 does not match its bytes (§9.1, §14)."""

    kind = "DataChecksum"
    section = "§9.1, §14"


class NonZeroPaddingError(IntegrityError):
    """A padding byte is not zero (§9.2, §14)."""

    kind = "NonZeroPadding"
    section = "§9.2, §14"


class StraySignBitsError(IntegrityError):
    """An unused bit of a tensor's last sign byte is set (§11.2, §14)."""

    kind = "StraySignBits"
    section = "§11.2, §14"


class BadScaleError(IntegrityError):
    """A row scale is not finite and positive (§11.3, §14)."""

    kind = "BadScale"
    section = "§11.3, §14"


# --- Sharded sets (§21): refused when a set is opened. This package opens single files today;
# the classes are here so that every kind the reader names has one.


class SetError(FormatError):
    """A set of shards and its index disagree, or the index is malformed (§21)."""


class BadIndexError(SetError):
    """The index of a sharded set is not UTF-8 JSON or breaks a rule of §21.2 (§21.2)."""

    kind = "BadIndex"
    section = "§21.2"


class MissingIndexError(SetError):
    """A shard's `qins.set.index_file` is absent, not a plain file name, or names no file in its directory (§21.3)."""

    kind = "MissingIndex"
    section = "§21.3"


class MissingShardError(SetError):
    """A shard the index lists is not in the index's directory (§21.2)."""

    kind = "MissingShard"
    section = "§21.2"


class ForeignShardError(SetError):
    """A file the index lists is not a shard of this set (no `qins.set.id`, or another one) (§21.3)."""

    kind = "ForeignShard"
    section = "§21.3"


class MisplacedShardError(SetError):
    """A shard of this set is at another position, or belongs to a set of another size, than the index says (§21.3)."""

    kind = "MisplacedShard"
    section = "§21.3"


class IndexMismatchError(SetError):
    """A shard's length or header CRC differs from the index, or the weight map disagrees with the shards' tensors (§21.2)."""

    kind = "IndexMismatch"
    section = "§21.2"


class MisplacedAssetError(SetError):
    """A shard other than the first has assets (§21.4)."""

    kind = "MisplacedAsset"
    section = "§21.4"


class DuplicateTensorError(SetError):
    """Two shards hold tensors of the same name (§21.4)."""

    kind = "DuplicateTensor"
    section = "§21.4"


class UnlistedShardError(SetError):
    """The shard a set was opened from is not listed by its index (§21.5)."""

    kind = "UnlistedShard"
    section = "§21.5"


#: The class of each error kind of the spec (§17, §21), by the kind's name.
ERRORS_BY_KIND = {
    cls.kind: cls
    for cls in (
        TruncatedError,
        BadMagicError,
        UnsupportedVersionError,
        UnsupportedFeatureError,
        LimitExceededError,
        HeaderSizeMismatchError,
        TrailingBytesError,
        HeaderChecksumError,
        ReservedNonZeroError,
        BadAlignmentError,
        BadNameError,
        DuplicateNameError,
        UnknownDtypeError,
        BadShapeError,
        UnknownCodecError,
        BadDtypeForCodecError,
        FlagMismatchError,
        BadParamsError,
        BadLutIndexError,
        SectionSizeError,
        MisalignedError,
        OutOfBoundsError,
        OverlapError,
        GapError,
        BadMetadataError,
        BadLutError,
        DataChecksumError,
        NonZeroPaddingError,
        StraySignBitsError,
        BadScaleError,
        BadIndexError,
        MissingIndexError,
        MissingShardError,
        ForeignShardError,
        MisplacedShardError,
        IndexMismatchError,
        MisplacedAssetError,
        DuplicateTensorError,
        UnlistedShardError,
    )
}

# The classes are public as `qins.<Name>`: say so in tracebacks and reprs.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = "qins"
del _name, _obj

//! On-disk types, constants and codec math of the QINS format (`spec/qins-v1.md`).
//!
//! This crate does no I/O. It defines:
//! - [`layout`]: the fixed little-endian records of the header (§3–§5, §9.1) as zerocopy
//!   structs, and the canonical section layout (§9.2);
//! - [`Dtype`]: the dtype registry (§13.1);
//! - [`codec`]: the codec registry (§12), the `log`, `linear`, `lloyd` and `lloyd-rows` encoders;
//! - [`decode`]: the decode rule (§11.4) into f32, bf16 and f16 buffers;
//! - [`set`]: the constants and name rules of sharded sets (§21).
//!
//! The reader (`qins-read`) and writer (`qins-write`) are built on it; neither redefines a
//! constant or a formula that lives here.
#![deny(unsafe_code)] // the one exception: `codec::cpu`, calling a pass built for x86-64-v3

pub mod codec;
pub mod decode;
mod dtype;
pub mod layout;
pub mod names;
pub mod set;

pub use codec::{Codec, EncodeError, Histogram, Quantizer, RowMaxima, RowScales, Stats};
pub use dtype::Dtype;
pub use layout::{AssetRecord, Preamble, SectionRef, TensorRecord};

/// The magic bytes at offset 0 (§3): `\x89QINS\r\n\x1a`.
pub const MAGIC: [u8; 8] = [0x89, b'Q', b'I', b'N', b'S', 0x0D, 0x0A, 0x1A];
/// The major version this crate implements (§15).
pub const VERSION_MAJOR: u16 = 1;
/// The minor version this crate writes (§15).
pub const VERSION_MINOR: u16 = 0;
/// The `required_features` bits this crate understands (§3): none in 1.0.
pub const KNOWN_REQUIRED_FEATURES: u64 = 0;

/// Size of the preamble in bytes (§3).
pub const PREAMBLE_SIZE: u64 = 96;
/// Size of one tensor record in bytes (§4).
pub const TENSOR_RECORD_SIZE: u64 = 176;
/// Size of one asset record in bytes (§5).
pub const ASSET_RECORD_SIZE: u64 = 32;
/// Size of the header CRC at the end of the header block (§8).
pub const HEADER_CRC_SIZE: u64 = 4;
/// Size of one LUT in the LUT table: 256 f32 values (§10).
pub const LUT_BYTES: u64 = 1024;
/// Maximum rank of a tensor (§4, §16).
pub const MAX_RANK: usize = 8;

/// Tensor flag bit 0: the tensor has a row-scale section (§4, §11.3).
pub const FLAG_ROW_SCALES: u32 = 1;
/// All tensor flag bits defined in 1.0.
pub const KNOWN_TENSOR_FLAGS: u32 = FLAG_ROW_SCALES;

/// Smallest allowed alignment (§3).
pub const MIN_ALIGNMENT: u32 = 64;
/// Largest allowed alignment (§3).
pub const MAX_ALIGNMENT: u32 = 1 << 20;
/// The alignment writers use by default (§18).
pub const DEFAULT_ALIGNMENT: u32 = 4096;

/// Limits a reader enforces against hostile files (§16).
pub mod limits {
    /// Largest `header_size`.
    pub const MAX_HEADER_SIZE: u64 = 256 << 20;
    /// Largest `tensor_count`.
    pub const MAX_TENSORS: u32 = 1 << 20;
    /// Largest `asset_count`.
    pub const MAX_ASSETS: u32 = 1 << 16;
    /// Largest `metadata_size`.
    pub const MAX_METADATA: u32 = 1 << 20;
    /// Longest tensor or asset name, in bytes.
    pub const MAX_NAME_LEN: u32 = 4096;
}

/// Whether `alignment` is allowed by §3: a power of two in [64, 1048576].
pub fn alignment_is_valid(alignment: u32) -> bool {
    alignment.is_power_of_two() && (MIN_ALIGNMENT..=MAX_ALIGNMENT).contains(&alignment)
}

/// `align_up(x, a)` of §2, or `None` on overflow. `a` must be a power of two.
pub fn align_up(x: u64, a: u64) -> Option<u64> {
    debug_assert!(a.is_power_of_two());
    Some(x.checked_add(a - 1)? & !(a - 1))
}

/// The size of the header block for the given counts (§3), or `None` on overflow.
pub fn header_size(tensors: u32, assets: u32, strings: u32, metadata: u32) -> Option<u64> {
    PREAMBLE_SIZE
        .checked_add(TENSOR_RECORD_SIZE.checked_mul(u64::from(tensors))?)?
        .checked_add(ASSET_RECORD_SIZE.checked_mul(u64::from(assets))?)?
        .checked_add(u64::from(strings))?
        .checked_add(u64::from(metadata))?
        .checked_add(HEADER_CRC_SIZE)
}

/// The element count of a shape (§4): the product of the dimensions, 1 for rank 0, or `None`
/// on overflow.
pub fn numel(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
}

/// The row length `L` and row count of a shape (§11.3): `L` is the last dimension (1 for rank 0)
/// and rows is `numel / L`, or 0 when `L` is 0. `None` on overflow.
pub fn rows(shape: &[u64]) -> Option<(u64, u64)> {
    let len = shape.last().copied().unwrap_or(1);
    let n = numel(shape)?;
    Some((len, n.checked_div(len).unwrap_or(0)))
}

/// How a tensor is stored: raw or encoded by a codec, with or without row scales.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Kept as it was (§13).
    Raw,
    /// Encoded by a codec (§11, §12).
    Encoded {
        /// The codec that built the codes and the table.
        codec: Codec,
        /// Whether the tensor has one f32 scale per row (§11.3).
        row_scales: bool,
    },
}

/// The lengths of a tensor's three sections (data, signs, scales) in bytes, as §4 requires
/// them, or `None` when they cannot be computed (overflow, or a sub-byte dtype whose bits do not
/// fill whole bytes).
pub fn section_lengths(dtype: Dtype, shape: &[u64], storage: Storage) -> Option<[u64; 3]> {
    let n = numel(shape)?;
    match storage {
        Storage::Raw => {
            let bits = n.checked_mul(u64::from(dtype.bits()))?;
            (bits % 8 == 0).then_some([bits / 8, 0, 0])
        }
        Storage::Encoded { row_scales, .. } => {
            let scales = if row_scales {
                rows(shape)?.1.checked_mul(4)?
            } else {
                0
            };
            Some([n, n.div_ceil(8), scales])
        }
    }
}

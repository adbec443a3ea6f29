//! The header's fixed little-endian records (§3, §4, §5, §9.1) and the canonical layout (§9.2).
//!
//! These definitions are independent of read and write support: every field is an unaligned
//! little-endian integer, so a record can be viewed in place in any byte buffer, and every field
//! documents the constraint the spec puts on it. Validation lives in `qins-read`.

use zerocopy::byteorder::little_endian::{F64, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::{align_up, MAX_RANK};

/// A reference to a data section (§9.1), 24 bytes.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct SectionRef {
    /// Absolute file offset of the section's first byte; a multiple of the alignment (§9.2),
    /// 0 for an unused section.
    pub offset: U64,
    /// Length in bytes; what the record implies (§4, §10).
    pub length: U64,
    /// CRC-32 of the section's bytes (§2); 0 for an empty section.
    pub crc: U32,
    /// Reserved, 0.
    pub reserved: U32,
}

impl SectionRef {
    /// A used section at `offset` of `length` bytes with checksum `crc`.
    pub fn new(offset: u64, length: u64, crc: u32) -> Self {
        SectionRef {
            offset: offset.into(),
            length: length.into(),
            crc: crc.into(),
            reserved: 0.into(),
        }
    }

    /// Whether this is the all-zero unused section of §4.
    pub fn is_unused(&self) -> bool {
        *self == SectionRef::default()
    }

    /// The end offset (`offset + length`), or `None` on overflow.
    pub fn end(&self) -> Option<u64> {
        self.offset.get().checked_add(self.length.get())
    }
}

/// The preamble at offset 0 (§3), 96 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Preamble {
    /// [`crate::MAGIC`].
    pub magic: [u8; 8],
    /// 1 for this version of the spec.
    pub version_major: U16,
    /// Any value; 0 for this version of the spec.
    pub version_minor: U16,
    /// A power of two in [64, 1048576]: every data section starts at a multiple of it.
    pub alignment: U32,
    /// Features a reader must understand; none are defined in 1.0.
    pub required_features: U64,
    /// The exact length of the file in bytes.
    pub file_size: U64,
    /// Length of the header block, including its trailing CRC.
    pub header_size: U64,
    /// Number of tensor records, ≤ 1048576.
    pub tensor_count: U32,
    /// Number of asset records, ≤ 65536.
    pub asset_count: U32,
    /// Number of LUTs in the LUT table: the number of encoded tensors.
    pub lut_count: U32,
    /// Length of the string table in bytes.
    pub strings_size: U32,
    /// Length of the metadata JSON in bytes, ≤ 1048576.
    pub metadata_size: U32,
    /// Reserved, 0.
    pub reserved0: U32,
    /// The LUT table section (§10).
    pub lut_table: SectionRef,
    /// Reserved, 0.
    pub reserved1: U64,
}

/// A tensor record (§4), 176 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct TensorRecord {
    /// Offset of the name in the string table.
    pub name_offset: U32,
    /// Length of the name in bytes, 1..=4096.
    pub name_len: U32,
    /// Source dtype code (§13.1).
    pub dtype: u8,
    /// Number of dimensions, 0..=8.
    pub rank: u8,
    /// 0 for raw, else a codec id (§12).
    pub codec: U16,
    /// Bit 0: row scales (§11.3); other bits 0.
    pub flags: U32,
    /// Dimensions, outermost first; entries past `rank` are 0.
    pub shape: [U64; MAX_RANK],
    /// First codec parameter (§12); 0.0 for raw.
    pub param0: F64,
    /// Second codec parameter (§12); 0.0 for raw.
    pub param1: F64,
    /// Index of this tensor's LUT (§10); 0 for raw.
    pub lut_index: U32,
    /// Reserved, 0.
    pub reserved: U32,
    /// Raw bytes or codes.
    pub data: SectionRef,
    /// Packed sign bits (encoded only).
    pub signs: SectionRef,
    /// Row scales (encoded with row scales only).
    pub scales: SectionRef,
}

impl TensorRecord {
    /// The dimensions `shape[0..rank]`, or `None` if `rank` exceeds 8.
    pub fn dims(&self) -> Option<Vec<u64>> {
        let rank = usize::from(self.rank);
        (rank <= MAX_RANK).then(|| self.shape[..rank].iter().map(|d| d.get()).collect())
    }
}

/// An asset record (§5), 32 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct AssetRecord {
    /// Offset of the name in the string table.
    pub name_offset: U32,
    /// Length of the name in bytes, 1..=4096.
    pub name_len: U32,
    /// The asset's bytes.
    pub data: SectionRef,
}

/// Places sections one after another in the canonical order of §9.2: each starts at the next
/// multiple of the alignment after the end of the previous one.
#[derive(Clone, Copy, Debug)]
pub struct Cursor {
    end: u64,
    alignment: u64,
}

impl Cursor {
    /// A cursor after a header block of `header_size` bytes.
    pub fn new(header_size: u64, alignment: u32) -> Self {
        Cursor {
            end: header_size,
            alignment: u64::from(alignment),
        }
    }

    /// The offset where the next section must start, or `None` on overflow.
    pub fn next_offset(&self) -> Option<u64> {
        align_up(self.end, self.alignment)
    }

    /// Places a section of `length` bytes and returns its offset, or `None` on overflow.
    pub fn place(&mut self, length: u64) -> Option<u64> {
        let offset = self.next_offset()?;
        self.end = offset.checked_add(length)?;
        Some(offset)
    }

    /// The end of the last placed section: the file size once every section is placed.
    pub fn end(&self) -> u64 {
        self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_sizes_match_the_spec() {
        assert_eq!(size_of::<SectionRef>() as u64, 24);
        assert_eq!(size_of::<Preamble>() as u64, crate::PREAMBLE_SIZE);
        assert_eq!(size_of::<TensorRecord>() as u64, crate::TENSOR_RECORD_SIZE);
        assert_eq!(size_of::<AssetRecord>() as u64, crate::ASSET_RECORD_SIZE);
    }

    #[test]
    fn cursor_aligns_every_section() {
        let mut c = Cursor::new(100, 64);
        assert_eq!(c.place(0), Some(128));
        assert_eq!(c.place(10), Some(128));
        assert_eq!(c.place(64), Some(192));
        assert_eq!(c.end(), 256);
        assert_eq!(Cursor::new(u64::MAX - 3, 64).place(1), None);
    }
}

//! The header records and the used sections of a validated file, in canonical order (§9.2).
//!
//! [`qins_read::Qins`] has validated the header, so viewing its records again through the
//! zerocopy structs of `qins-format` cannot fail; the layout dump needs every field's bytes,
//! which the reader's tensor views do not carry.

use qins_format::{
    AssetRecord, Preamble, SectionRef, TensorRecord, ASSET_RECORD_SIZE, FLAG_ROW_SCALES,
    HEADER_CRC_SIZE, PREAMBLE_SIZE, TENSOR_RECORD_SIZE,
};
use qins_read::Qins;
use serde::{Deserialize, Serialize};
use zerocopy::FromBytes;

/// What a used data section holds; every byte of a file is header, padding, or one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// The LUT table (§10).
    Luts,
    /// The codes of an encoded tensor (§11.1).
    Codes,
    /// The packed sign bits of an encoded tensor (§11.2).
    Signs,
    /// The row scales of an encoded tensor (§11.3).
    RowScales,
    /// The bytes of a raw tensor (§13).
    Raw,
    /// The bytes of an asset (§5).
    Assets,
}

/// Which record a section belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// The LUT table of the preamble.
    Luts,
    /// Tensor record `k`.
    Tensor(usize),
    /// Asset record `k`.
    Asset(usize),
}

/// One used section, in canonical order.
#[derive(Clone, Debug)]
pub(crate) struct Part {
    pub owner: Owner,
    pub category: Category,
    /// The name the reader's errors use: `lut table`, `tensor "x" data|signs|scales`,
    /// `asset "x"`.
    pub name: String,
    pub offset: u64,
    pub length: u64,
    pub crc: u32,
    /// Zero padding between the end of the previous section (or the header) and this one.
    pub padding_before: u64,
}

/// The header block of a validated file, viewed in place.
pub(crate) struct Header<'a> {
    pub preamble: &'a Preamble,
    pub tensors: &'a [TensorRecord],
    pub assets: &'a [AssetRecord],
    pub strings_offset: u64,
    pub strings: &'a [u8],
    pub metadata_offset: u64,
    pub metadata: &'a [u8],
    pub crc_offset: u64,
    pub crc: u32,
}

const VALIDATED: &str = "the header was validated by qins_read::Qins::parse";

impl<'a> Header<'a> {
    /// Views the header of `file`.
    pub fn of(file: &Qins<'a>) -> Header<'a> {
        let data = file.bytes();
        let header = &data[..file.header_size() as usize];
        let (preamble, rest) = Preamble::ref_from_prefix(header).expect(VALIDATED);
        let n_t = preamble.tensor_count.get() as usize;
        let n_a = preamble.asset_count.get() as usize;
        let (tensors, rest) =
            <[TensorRecord]>::ref_from_prefix_with_elems(rest, n_t).expect(VALIDATED);
        let (assets, rest) =
            <[AssetRecord]>::ref_from_prefix_with_elems(rest, n_a).expect(VALIDATED);
        let (strings, rest) = rest.split_at(preamble.strings_size.get() as usize);
        let (metadata, crc) = rest.split_at(preamble.metadata_size.get() as usize);
        let crc: [u8; 4] = crc.try_into().expect(VALIDATED);
        let strings_offset =
            PREAMBLE_SIZE + TENSOR_RECORD_SIZE * n_t as u64 + ASSET_RECORD_SIZE * n_a as u64;
        let metadata_offset = strings_offset + strings.len() as u64;
        Header {
            preamble,
            tensors,
            assets,
            strings_offset,
            strings,
            metadata_offset,
            metadata,
            crc_offset: file.header_size() - HEADER_CRC_SIZE,
            crc: u32::from_le_bytes(crc),
        }
    }

    /// The name of a tensor or asset record: `(name_offset, name_len)` within the string table.
    pub fn name(&self, offset: u32, len: u32) -> &'a str {
        let bytes = &self.strings[offset as usize..][..len as usize];
        std::str::from_utf8(bytes).expect(VALIDATED)
    }

    /// The used sections in canonical order (§9.2), each with the padding before it.
    ///
    /// # Panics
    /// If the sections do not tile the file after the header (they do in a validated file).
    pub fn parts(&self) -> Vec<Part> {
        let mut parts = Vec::new();
        let mut push = |owner, category, name: String, s: &SectionRef| {
            parts.push(Part {
                owner,
                category,
                name,
                offset: s.offset.get(),
                length: s.length.get(),
                crc: s.crc.get(),
                padding_before: 0,
            })
        };
        push(
            Owner::Luts,
            Category::Luts,
            "lut table".into(),
            &self.preamble.lut_table,
        );
        for (k, r) in self.tensors.iter().enumerate() {
            let name = self.name(r.name_offset.get(), r.name_len.get());
            let t = Owner::Tensor(k);
            if r.codec.get() == 0 {
                push(t, Category::Raw, format!("tensor {name:?} data"), &r.data);
            } else {
                push(t, Category::Codes, format!("tensor {name:?} data"), &r.data);
                push(
                    t,
                    Category::Signs,
                    format!("tensor {name:?} signs"),
                    &r.signs,
                );
                if r.flags.get() & FLAG_ROW_SCALES != 0 {
                    let n = format!("tensor {name:?} scales");
                    push(t, Category::RowScales, n, &r.scales);
                }
            }
        }
        for (k, a) in self.assets.iter().enumerate() {
            let name = self.name(a.name_offset.get(), a.name_len.get());
            push(
                Owner::Asset(k),
                Category::Assets,
                format!("asset {name:?}"),
                &a.data,
            );
        }
        // Padding is what lies between the end of one section and the start of the next.
        let mut end = self.preamble.header_size.get();
        for p in &mut parts {
            assert!(
                p.offset >= end,
                "{} starts at {} before the previous end {end}",
                p.name,
                p.offset
            );
            p.padding_before = p.offset - end;
            end = p.offset + p.length;
        }
        assert_eq!(
            end,
            self.preamble.file_size.get(),
            "the last section must end at file_size (§9.3)"
        );
        parts
    }
}

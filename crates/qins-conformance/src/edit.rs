//! Precise byte-level edits of a file, by field: how negative goldens (and the one patched
//! valid golden) are made from the writer's output.

use qins_format::{AssetRecord, Preamble, SectionRef, TensorRecord, ASSET_RECORD_SIZE, LUT_BYTES};
use qins_format::{PREAMBLE_SIZE, TENSOR_RECORD_SIZE};
use zerocopy::FromBytes;

/// A data section of a file (§9.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// The LUT table.
    LutTable,
    /// Tensor `k`'s data (raw bytes or codes).
    Data(usize),
    /// Tensor `k`'s sign bits.
    Signs(usize),
    /// Tensor `k`'s row scales.
    Scales(usize),
    /// Asset `k`'s bytes.
    Asset(usize),
}

/// A file being edited. [`Editor::finish`] recomputes the header CRC where the original file
/// had it, over the bytes before it, unless [`Editor::keep_header_crc`] was called: a header
/// edit then changes nothing but the intended field.
#[derive(Debug)]
pub struct Editor {
    bytes: Vec<u8>,
    crc_at: usize,
    keep_crc: bool,
}

impl Editor {
    /// Starts editing a valid file.
    ///
    /// # Panics
    /// If `bytes` is shorter than the preamble.
    pub fn new(bytes: Vec<u8>) -> Self {
        let (p, _) = Preamble::read_from_prefix(&bytes).expect("a whole preamble");
        let crc_at = p.header_size.get() as usize - 4;
        Editor {
            bytes,
            crc_at,
            keep_crc: false,
        }
    }

    /// The whole file, to cut, extend or change freely.
    pub fn bytes(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Leaves the header CRC as it is (the file's header CRC will not match).
    pub fn keep_header_crc(&mut self) {
        self.keep_crc = true;
    }

    fn read_preamble(&self) -> Preamble {
        Preamble::read_from_prefix(&self.bytes)
            .expect("a whole preamble")
            .0
    }

    /// The preamble (§3), in place.
    pub fn preamble(&mut self) -> &mut Preamble {
        Preamble::mut_from_prefix(&mut self.bytes)
            .expect("a whole preamble")
            .0
    }

    fn tensor_at(k: usize) -> usize {
        (PREAMBLE_SIZE + TENSOR_RECORD_SIZE * k as u64) as usize
    }

    fn asset_at(&self, k: usize) -> usize {
        let t = self.read_preamble().tensor_count.get() as usize;
        Self::tensor_at(t) + ASSET_RECORD_SIZE as usize * k
    }

    fn strings_at(&self) -> usize {
        self.asset_at(self.read_preamble().asset_count.get() as usize)
    }

    /// Tensor record `k` (§4), in place.
    pub fn tensor(&mut self, k: usize) -> &mut TensorRecord {
        let at = Self::tensor_at(k);
        TensorRecord::mut_from_prefix(&mut self.bytes[at..])
            .expect("a whole record")
            .0
    }

    /// Asset record `k` (§5), in place.
    pub fn asset(&mut self, k: usize) -> &mut AssetRecord {
        let at = self.asset_at(k);
        AssetRecord::mut_from_prefix(&mut self.bytes[at..])
            .expect("a whole record")
            .0
    }

    /// The index of the tensor called `name`.
    ///
    /// # Panics
    /// If there is none.
    pub fn find_tensor(&mut self, name: &str) -> usize {
        let n = self.read_preamble().tensor_count.get() as usize;
        (0..n)
            .find(|&k| self.tensor_name(k) == name.as_bytes())
            .unwrap_or_else(|| panic!("no tensor {name:?}"))
    }

    /// The bytes of tensor `k`'s name in the string table.
    pub fn tensor_name(&mut self, k: usize) -> &mut [u8] {
        let r = *self.tensor(k);
        let at = self.strings_at() + r.name_offset.get() as usize;
        &mut self.bytes[at..at + r.name_len.get() as usize]
    }

    /// The bytes of asset `k`'s name in the string table.
    pub fn asset_name(&mut self, k: usize) -> &mut [u8] {
        let r = *self.asset(k);
        let at = self.strings_at() + r.name_offset.get() as usize;
        &mut self.bytes[at..at + r.name_len.get() as usize]
    }

    /// The metadata bytes (§7).
    pub fn metadata_mut(&mut self) -> &mut [u8] {
        let p = self.read_preamble();
        let at = self.strings_at() + p.strings_size.get() as usize;
        &mut self.bytes[at..at + p.metadata_size.get() as usize]
    }

    /// Replaces the metadata by `text` followed by spaces up to the metadata's length.
    ///
    /// # Panics
    /// If `text` is longer than the metadata.
    pub fn replace_metadata(&mut self, text: &[u8]) {
        let m = self.metadata_mut();
        assert!(text.len() <= m.len(), "replacement metadata too long");
        m.fill(b' ');
        m[..text.len()].copy_from_slice(text);
    }

    /// The reference of `section`.
    pub fn section(&mut self, section: Section) -> SectionRef {
        match section {
            Section::LutTable => self.read_preamble().lut_table,
            Section::Data(k) => self.tensor(k).data,
            Section::Signs(k) => self.tensor(k).signs,
            Section::Scales(k) => self.tensor(k).scales,
            Section::Asset(k) => self.asset(k).data,
        }
    }

    fn section_ref_mut(&mut self, section: Section) -> &mut SectionRef {
        match section {
            Section::LutTable => &mut self.preamble().lut_table,
            Section::Data(k) => &mut self.tensor(k).data,
            Section::Signs(k) => &mut self.tensor(k).signs,
            Section::Scales(k) => &mut self.tensor(k).scales,
            Section::Asset(k) => &mut self.asset(k).data,
        }
    }

    /// The bytes of `section`.
    pub fn section_bytes(&mut self, section: Section) -> &mut [u8] {
        let s = self.section(section);
        let at = s.offset.get() as usize;
        &mut self.bytes[at..at + s.length.get() as usize]
    }

    /// Stores the CRC of `section`'s current bytes in its reference (§9.1).
    pub fn refresh_crc(&mut self, section: Section) {
        let crc = crc32fast::hash(self.section_bytes(section));
        self.section_ref_mut(section).crc = crc.into();
    }

    /// Sets entry `c` of LUT `j` to the f32 with bits `bits`, and refreshes the LUT table's CRC.
    pub fn set_lut_entry(&mut self, j: usize, c: usize, bits: u32) {
        let at = j * LUT_BYTES as usize + 4 * c;
        self.section_bytes(Section::LutTable)[at..at + 4].copy_from_slice(&bits.to_le_bytes());
        self.refresh_crc(Section::LutTable);
    }

    /// Entry `c` of LUT `j` as f32 bits.
    pub fn lut_entry(&mut self, j: usize, c: usize) -> u32 {
        let at = j * LUT_BYTES as usize + 4 * c;
        let b = &self.section_bytes(Section::LutTable)[at..at + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Row scale `row` of tensor `k` as f32 bits.
    pub fn scale(&mut self, k: usize, row: usize) -> u32 {
        let b = &self.section_bytes(Section::Scales(k))[4 * row..4 * row + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Sets row scale `row` of tensor `k` to the f32 with bits `bits`, and refreshes the scales'
    /// CRC.
    pub fn set_scale(&mut self, k: usize, row: usize, bits: u32) {
        self.section_bytes(Section::Scales(k))[4 * row..4 * row + 4]
            .copy_from_slice(&bits.to_le_bytes());
        self.refresh_crc(Section::Scales(k));
    }

    /// The end of the header block (`header_size` of the original file).
    pub fn header_end(&self) -> usize {
        self.crc_at + 4
    }

    /// Ends editing: recomputes the header CRC at the original file's position (unless
    /// [`Editor::keep_header_crc`] was called or the file was cut before it).
    pub fn finish(mut self) -> Vec<u8> {
        if !self.keep_crc && self.bytes.len() >= self.crc_at + 4 {
            let crc = crc32fast::hash(&self.bytes[..self.crc_at]);
            self.bytes[self.crc_at..self.crc_at + 4].copy_from_slice(&crc.to_le_bytes());
        }
        self.bytes
    }
}

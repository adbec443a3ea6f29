//! Helpers shared by the fuzz targets (`fuzz_targets/*.rs`).
//!
//! - [`candidates`]: the buffers a target parses for one input. Random mutations of a header
//!   almost never keep its CRC (§8) or its `file_size`/`header_size` (§3) right, so besides the
//!   input itself the targets parse a copy with those three fixed up: that lets mutations reach
//!   every check behind the header checksum (§17 steps 5–9).
//! - [`with_data_checksums`]: a copy of a parsed file with every section CRC recomputed, so
//!   that verification (§14) gets past `DataChecksum` to padding, sign bits and scales.
//! - [`check_accessors`] and [`check_decode`]: what must hold of every file `Qins::parse`
//!   accepts, checked against the spec's rules (§4, §11.4) rather than against the reader's own
//!   helpers.
//!
//! Field offsets come straight from the spec's tables (§3, §4, §5, §9.1).

use std::borrow::Cow;

use half::{bf16, f16};
use qins_read::{DecodeError, Qins, TensorView};

const PREAMBLE: usize = 96;
const TENSOR_RECORD: usize = 176;
const ASSET_RECORD: usize = 32;
const P_FILE_SIZE: usize = 24;
const P_HEADER_SIZE: usize = 32;
const P_TENSOR_COUNT: usize = 40;
const P_ASSET_COUNT: usize = 44;
const P_STRINGS_SIZE: usize = 52;
const P_METADATA_SIZE: usize = 56;
const P_LUT_TABLE: usize = 64;
/// Section references within a tensor record: data, signs, scales.
const T_SECTIONS: [usize; 3] = [104, 128, 152];
const A_DATA: usize = 8;
const S_LENGTH: usize = 8;
const S_CRC: usize = 16;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The header size the preamble's counts imply (§3), if the preamble is whole.
fn implied_header_size(b: &[u8]) -> Option<usize> {
    if b.len() < PREAMBLE {
        return None;
    }
    let hs = PREAMBLE as u64
        + TENSOR_RECORD as u64 * u64::from(u32_at(b, P_TENSOR_COUNT))
        + ASSET_RECORD as u64 * u64::from(u32_at(b, P_ASSET_COUNT))
        + u64::from(u32_at(b, P_STRINGS_SIZE))
        + u64::from(u32_at(b, P_METADATA_SIZE))
        + 4;
    usize::try_from(hs).ok()
}

/// Sets `file_size` to the buffer's length and `header_size` to what the counts imply, and
/// recomputes the header CRC (§8). Returns `false` (leaving `b` unchanged) when the preamble is
/// not whole or the implied header does not fit in `b`.
pub fn fix_header(b: &mut [u8]) -> bool {
    let Some(hs) = implied_header_size(b).filter(|&hs| hs <= b.len()) else {
        return false;
    };
    let len = b.len() as u64;
    b[P_FILE_SIZE..P_FILE_SIZE + 8].copy_from_slice(&len.to_le_bytes());
    b[P_HEADER_SIZE..P_HEADER_SIZE + 8].copy_from_slice(&(hs as u64).to_le_bytes());
    let crc = crc32fast::hash(&b[..hs - 4]);
    b[hs - 4..hs].copy_from_slice(&crc.to_le_bytes());
    true
}

/// The buffers to parse for one fuzz input: the input, then (if it differs) the input with its
/// header fixed up by [`fix_header`].
pub fn candidates(data: &[u8]) -> Vec<Cow<'_, [u8]>> {
    let mut out = vec![Cow::Borrowed(data)];
    let mut fixed = data.to_vec();
    if fix_header(&mut fixed) && fixed != data {
        out.push(Cow::Owned(fixed));
    }
    out
}

/// Recomputes the CRC of the section whose 24-byte reference is at `at`, if it lies in `b`.
fn fix_section_crc(b: &mut [u8], at: usize) {
    let (offset, length) = (u64_at(b, at), u64_at(b, at + S_LENGTH));
    let range = usize::try_from(offset)
        .ok()
        .zip(usize::try_from(length).ok())
        .and_then(|(o, l)| Some(o..o.checked_add(l)?));
    if let Some(bytes) = range.and_then(|r| b.get(r)) {
        let crc = crc32fast::hash(bytes);
        b[at + S_CRC..at + S_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

/// A copy of `b`, a file `Qins::parse` accepted, with every section's CRC recomputed (the LUT
/// table, each tensor's three sections, each asset) and then the header CRC. Unused sections
/// are all zero and the CRC of no bytes is 0, so recomputing them changes nothing.
pub fn with_data_checksums(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    let tensors = u32_at(&v, P_TENSOR_COUNT) as usize;
    let assets = u32_at(&v, P_ASSET_COUNT) as usize;
    fix_section_crc(&mut v, P_LUT_TABLE);
    for k in 0..tensors {
        for s in T_SECTIONS {
            fix_section_crc(&mut v, PREAMBLE + TENSOR_RECORD * k + s);
        }
    }
    for k in 0..assets {
        fix_section_crc(
            &mut v,
            PREAMBLE + TENSOR_RECORD * tensors + ASSET_RECORD * k + A_DATA,
        );
    }
    fix_header(&mut v);
    v
}

/// A small deterministic generator (splitmix64) for decode ranges.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from `data`.
    pub fn from_bytes(data: &[u8]) -> Rng {
        Rng(u64::from(crc32fast::hash(data)) | (data.len() as u64) << 32)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..=max`.
    pub fn upto(&mut self, max: u64) -> u64 {
        match max.checked_add(1) {
            Some(n) => self.next_u64() % n,
            None => self.next_u64(),
        }
    }
}

/// What must hold of every accepted file, through the public accessors: names resolve to their
/// own tensor, section lengths are what §4 requires, and every byte is accounted for once.
pub fn check_accessors(q: &Qins<'_>) {
    assert_eq!(q.bytes().len() as u64, q.file_size());
    assert_eq!(q.version().0, 1);
    assert_eq!(q.tensor_count(), q.tensors().len());
    let mut stored = q.header_size() + q.lut_table_size();
    for (i, t) in q.tensors().enumerate() {
        let by_name = q
            .tensor(t.name())
            .expect("a listed tensor is found by its name");
        assert_eq!(by_name.name(), t.name());
        assert_eq!(by_name.shape(), q.tensor_at(i).shape());
        let n = t.shape().iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let n = n.expect("accepted shapes do not overflow");
        assert_eq!(t.numel(), n);
        assert!(t.shape().len() <= 8);
        match t.lut() {
            Some(lut) => {
                assert_eq!(lut[0].to_bits(), 0, "LUT[0] is +0.0 (§10)");
                assert!(lut.iter().all(|v| v.is_finite() && v.is_sign_positive()));
                assert!(t.raw_bytes().is_none());
                assert_eq!(t.codes().unwrap().len() as u64, n);
                assert_eq!(t.signs().unwrap().len() as u64, n.div_ceil(8));
                let (len, rows) = t.rows();
                assert_eq!(len, t.shape().last().copied().unwrap_or(1));
                if let Some(s) = t.row_scales() {
                    assert_eq!(s.len() as u64, rows);
                }
                assert!(t.codec().is_some());
            }
            None => {
                let raw = t.raw_bytes().expect("a tensor without a table is raw");
                assert_eq!(raw.len() as u64 * 8, n * u64::from(t.dtype().bits()));
                assert_eq!(t.source_bytes(), raw.len() as u64);
                assert!(t.codes().is_none() && t.signs().is_none());
                assert!(t.row_scales().is_none() && t.codec().is_none());
            }
        }
        stored += t.stored_bytes();
    }
    for (name, bytes) in q.assets() {
        assert!(!name.is_empty());
        stored += bytes.len() as u64;
    }
    // Header, table, sections, and padding (< alignment before each section) make the file.
    assert!(stored <= q.file_size());
    let _ = q.metadata().len();
}

/// Whether two decoded f32 values are the same (any NaN equals any NaN: a damaged scale in an
/// unverified file may produce one, §11.3).
fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// The value of element `i` by the decode rule of §11.4, computed element by element.
fn reference(lut: &[f32; 256], codes: &[u8], signs: &[u8], scale: Option<f32>, i: usize) -> f32 {
    let m = lut[usize::from(codes[i])];
    let v = if (signs[i / 8] >> (i % 8)) & 1 == 1 {
        -m
    } else {
        m
    };
    match scale {
        Some(s) => v * s,
        None => v,
    }
}

/// Decodes a tensor every way the reader offers and checks each result against the decode rule
/// (§11.4): the whole tensor into f32, bf16 and f16; random sub-ranges and row ranges; requests
/// past the end (which must be refused, not panic). Raw tensors must refuse decoding and have
/// their bytes read. Returns the decoded f32 values of an encoded tensor.
pub fn check_decode(t: &TensorView<'_>, rng: &mut Rng) -> Option<Vec<f32>> {
    let n = t.numel();
    let Some(lut) = t.lut() else {
        let raw = t.raw_bytes().expect("raw");
        std::hint::black_box(raw.iter().fold(0u8, |a, &b| a ^ b));
        let mut out = [0f32; 1];
        assert!(matches!(
            t.decode_f32(0, &mut out),
            Err(DecodeError::NotEncoded { .. })
        ));
        assert!(matches!(
            t.to_f32_vec(),
            Err(DecodeError::NotEncoded { .. })
        ));
        return None;
    };
    let (codes, signs) = (t.codes().unwrap(), t.signs().unwrap());
    let (row_len, rows) = t.rows();
    let scales = t.row_scales();
    let scale_of = |i: usize| scales.as_ref().map(|s| s[i / row_len as usize]);
    let want: Vec<f32> = (0..n as usize)
        .map(|i| reference(lut, codes, signs, scale_of(i), i))
        .collect();

    let all = t.to_f32_vec().expect("the whole tensor decodes");
    assert_eq!(all.len(), want.len());
    for (i, (a, w)) in all.iter().zip(&want).enumerate() {
        assert!(same(*a, *w), "f32 element {i}: {a} != {w}");
    }
    let mut bf = vec![bf16::ZERO; n as usize];
    t.decode_bf16(0, &mut bf).expect("the whole tensor decodes");
    let mut h = vec![f16::ZERO; n as usize];
    t.decode_f16(0, &mut h).expect("the whole tensor decodes");
    for (i, w) in want.iter().enumerate() {
        let (eb, eh) = (bf16::from_f32(*w), f16::from_f32(*w));
        assert!(
            bf[i].to_bits() == eb.to_bits() || (bf[i].is_nan() && eb.is_nan()),
            "bf16 element {i}"
        );
        assert!(
            h[i].to_bits() == eh.to_bits() || (h[i].is_nan() && eh.is_nan()),
            "f16 element {i}"
        );
    }

    // Random sub-ranges, including empty ones and ones at the very end.
    for _ in 0..8 {
        let first = rng.upto(n);
        let len = rng.upto(n - first) as usize;
        let (a, b) = (first as usize, first as usize + len);
        let mut f = vec![0f32; len];
        t.decode_f32(first, &mut f).expect("an in-range request");
        assert!(f.iter().zip(&all[a..b]).all(|(x, y)| same(*x, *y)));
        let mut fb = vec![bf16::ZERO; len];
        t.decode_bf16(first, &mut fb).expect("an in-range request");
        assert!(fb
            .iter()
            .zip(&bf[a..b])
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())));
        let mut fh = vec![f16::ZERO; len];
        t.decode_f16(first, &mut fh).expect("an in-range request");
        assert!(fh
            .iter()
            .zip(&h[a..b])
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())));
    }
    // Requests past the end: refused with OutOfRange.
    for (first, len) in [
        (n, 1usize),
        (n.saturating_sub(1), 2),
        (u64::MAX, 1),
        (u64::MAX - 1, 3),
        (rng.next_u64(), 1 + rng.upto(16) as usize),
    ] {
        if first.checked_add(len as u64).is_some_and(|e| e <= n) {
            continue;
        }
        let mut f = vec![0f32; len];
        let mut b = vec![bf16::ZERO; len];
        let mut g = vec![f16::ZERO; len];
        let out_of_range = |r: Result<(), DecodeError>| {
            assert!(matches!(r, Err(DecodeError::OutOfRange { .. })), "{r:?}");
        };
        out_of_range(t.decode_f32(first, &mut f));
        out_of_range(t.decode_bf16(first, &mut b));
        out_of_range(t.decode_f16(first, &mut g));
        out_of_range(t.decode_rows_f32(first, &mut f));
        out_of_range(t.decode_rows_bf16(first, &mut b));
        out_of_range(t.decode_rows_f16(first, &mut g));
    }
    // Row ranges.
    if row_len > 0 && rows > 0 {
        let first_row = rng.upto(rows);
        let count = rng.upto(rows - first_row);
        let (a, b) = (first_row * row_len, (first_row + count) * row_len);
        let mut f = vec![0f32; (b - a) as usize];
        t.decode_rows_f32(first_row, &mut f).expect("whole rows");
        assert!(f
            .iter()
            .zip(&all[a as usize..b as usize])
            .all(|(x, y)| same(*x, *y)));
        let mut fb = vec![bf16::ZERO; (b - a) as usize];
        t.decode_rows_bf16(first_row, &mut fb).expect("whole rows");
        let mut fh = vec![f16::ZERO; (b - a) as usize];
        t.decode_rows_f16(first_row, &mut fh).expect("whole rows");
        if row_len > 1 {
            // Not a whole number of rows.
            let mut f = vec![0f32; 1];
            assert!(t.decode_rows_f32(0, &mut f).is_err());
        }
    }
    Some(all)
}

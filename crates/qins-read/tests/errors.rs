//! One negative test per error kind of `spec/qins-v1.md` §17 (every `ReadError` variant) and per
//! `DecodeError` variant, plus hostile headers, every truncation and every byte flip.
//!
//! Each test builds the same small valid file with qins-write, corrupts exactly the field the
//! kind is about (recomputing the header CRC, §8, when the field is in the header, so that the
//! intended kind is the one reported), and checks the kind and that the message names what is
//! wrong.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeSet;

use qins_format::{Codec, Dtype, Storage};
use qins_read::{DecodeError, Qins, ReadError};
use qins_write::{Asset, Plan, TensorSpec, Writer};

// ---------------------------------------------------------------------------------------------
// A counting allocator, per thread, so that the hostile-header test can show that parsing a
// small file that claims huge counts allocates only a small, fixed amount.

struct Counting;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

fn count(bytes: usize) {
    let _ = ALLOCATED.try_with(|a| a.set(a.get().saturating_add(bytes)));
}

#[allow(unsafe_code)]
// SAFETY: every method forwards to `System` unchanged, which upholds the `GlobalAlloc`
// contract; the counter is a const-initialised thread-local `Cell` without a destructor, so
// touching it never allocates or re-enters the allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: forwarded with the caller's layout, as the caller's contract requires.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes through
        // this forwarding allocator), as the caller's contract requires.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes allocated by this thread while running `f`.
fn allocated_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATED.with(Cell::get);
    let r = f();
    (r, ALLOCATED.with(Cell::get) - before)
}

// ---------------------------------------------------------------------------------------------
// Field offsets, straight from the spec's tables (§3, §4, §5, §9.1), independent of qins-format.

const P_VERSION_MAJOR: usize = 8;
const P_VERSION_MINOR: usize = 10;
const P_ALIGNMENT: usize = 12;
const P_FEATURES: usize = 16;
const P_FILE_SIZE: usize = 24;
const P_HEADER_SIZE: usize = 32;
const P_TENSOR_COUNT: usize = 40;
const P_ASSET_COUNT: usize = 44;
const P_LUT_COUNT: usize = 48;
const P_STRINGS_SIZE: usize = 52;
const P_METADATA_SIZE: usize = 56;
const P_RESERVED0: usize = 60;
const P_LUT_TABLE: usize = 64;
const P_RESERVED1: usize = 88;

const T_NAME_OFFSET: usize = 0;
const T_NAME_LEN: usize = 4;
const T_DTYPE: usize = 8;
const T_RANK: usize = 9;
const T_CODEC: usize = 10;
const T_FLAGS: usize = 12;
const T_SHAPE: usize = 16;
const T_PARAM0: usize = 80;
const T_PARAM1: usize = 88;
const T_LUT_INDEX: usize = 96;
const T_RESERVED: usize = 100;
const T_DATA: usize = 104;
const T_SIGNS: usize = 128;
const T_SCALES: usize = 152;

const A_NAME_OFFSET: usize = 0;
const A_NAME_LEN: usize = 4;
const A_DATA: usize = 8;

const S_OFFSET: usize = 0;
const S_LENGTH: usize = 8;
const S_CRC: usize = 16;
const S_RESERVED: usize = 20;

/// Tensor indices of the fixture.
const ENC: usize = 0;
const RAW: usize = 1;
const LIN: usize = 2;
/// Values of the fixture's encoded tensor `enc` (3 rows of 5; 15 elements, so the last sign
/// byte has one unused bit).
const ENC_SCALES: [f32; 3] = [1.0, 2.0, 4.0];

/// The fixture: a small valid file of alignment 64 with an encoded tensor with row scales
/// (`enc`, F32 [3, 5], log), a raw tensor (`raw`, I64 [2]), an encoded tensor without row
/// scales (`lin`, BF16 [4], linear), two assets and 22 bytes of metadata.
fn fixture() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fixture.qins");
    let mut plan = Plan::new();
    plan.alignment = 64;
    let enc = |codec, row_scales| Storage::Encoded { codec, row_scales };
    plan.tensors.push(TensorSpec::new(
        "enc",
        Dtype::F32,
        vec![3, 5],
        enc(Codec::Log, true),
    ));
    plan.tensors
        .push(TensorSpec::new("raw", Dtype::I64, vec![2], Storage::Raw));
    plan.tensors.push(TensorSpec::new(
        "lin",
        Dtype::BF16,
        vec![4],
        enc(Codec::Linear, false),
    ));
    plan.assets.push(Asset {
        name: "config.json".into(),
        data: br#"{"a":1}"#.to_vec(),
    });
    plan.assets.push(Asset {
        name: "tok/vocab.txt".into(),
        data: b"a\nb\n".to_vec(),
    });
    plan.metadata.insert("qins.writer".into(), "test".into());
    let mut w = Writer::create(&path, plan, false).unwrap();
    let v: Vec<f32> = (0..15).map(|i| (i as f32 - 7.0) * 0.75).collect();
    w.encode_tensor(&v, Some(&ENC_SCALES)).unwrap();
    w.write_raw(&(0..16).collect::<Vec<u8>>()).unwrap();
    w.encode_tensor(&[0.5, -1.0, 0.0, 0.25], None).unwrap();
    w.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let q = Qins::parse(&bytes).unwrap();
    q.verify().unwrap();
    bytes
}

/// A file being corrupted, with accessors at spec offsets.
struct F(Vec<u8>);

impl F {
    fn new() -> F {
        F(fixture())
    }
    fn get_u32(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.0[at..at + 4].try_into().unwrap())
    }
    fn get_u64(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.0[at..at + 8].try_into().unwrap())
    }
    fn set(&mut self, at: usize, bytes: &[u8]) -> &mut F {
        self.0[at..at + bytes.len()].copy_from_slice(bytes);
        self
    }
    fn set_u8(&mut self, at: usize, v: u8) -> &mut F {
        self.set(at, &[v])
    }
    fn set_u16(&mut self, at: usize, v: u16) -> &mut F {
        self.set(at, &v.to_le_bytes())
    }
    fn set_u32(&mut self, at: usize, v: u32) -> &mut F {
        self.set(at, &v.to_le_bytes())
    }
    fn set_u64(&mut self, at: usize, v: u64) -> &mut F {
        self.set(at, &v.to_le_bytes())
    }
    fn set_f32(&mut self, at: usize, v: f32) -> &mut F {
        self.set(at, &v.to_le_bytes())
    }
    fn set_f64(&mut self, at: usize, v: f64) -> &mut F {
        self.set(at, &v.to_le_bytes())
    }
    fn tensor_count(&self) -> usize {
        self.get_u32(P_TENSOR_COUNT) as usize
    }
    fn asset_count(&self) -> usize {
        self.get_u32(P_ASSET_COUNT) as usize
    }
    fn header_size(&self) -> usize {
        self.get_u64(P_HEADER_SIZE) as usize
    }
    /// Offset of tensor record `k`.
    fn t(&self, k: usize) -> usize {
        96 + 176 * k
    }
    /// Offset of asset record `k`.
    fn a(&self, k: usize) -> usize {
        96 + 176 * self.tensor_count() + 32 * k
    }
    fn strings(&self) -> usize {
        self.a(self.asset_count())
    }
    fn metadata(&self) -> (usize, usize) {
        let at = self.strings() + self.get_u32(P_STRINGS_SIZE) as usize;
        (at, self.get_u32(P_METADATA_SIZE) as usize)
    }
    /// `(offset, length)` of the section whose reference is at `sref`.
    fn section(&self, sref: usize) -> (usize, usize) {
        (
            self.get_u64(sref + S_OFFSET) as usize,
            self.get_u64(sref + S_LENGTH) as usize,
        )
    }
    /// Recomputes the CRC of the section whose reference is at `sref` (§9.1).
    fn fix_section_crc(&mut self, sref: usize) -> &mut F {
        let (o, l) = self.section(sref);
        let crc = crc32fast::hash(&self.0[o..o + l]);
        self.set_u32(sref + S_CRC, crc)
    }
    /// Recomputes the header CRC (§8): the last 4 bytes of the header block.
    fn fix_header_crc(&mut self) -> &mut F {
        let hs = self.header_size();
        let crc = crc32fast::hash(&self.0[..hs - 4]);
        self.set_u32(hs - 4, crc)
    }
    /// Replaces the metadata JSON with `json`, padded with JSON whitespace to the same size.
    fn set_metadata(&mut self, json: &[u8]) -> &mut F {
        let (at, len) = self.metadata();
        assert!(json.len() <= len, "replacement metadata too long");
        let mut m = json.to_vec();
        m.resize(len, b' ');
        self.set(at, &m)
    }
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Asserts that `parse` refuses `bytes` with `kind`, and that the message contains every one of
/// `needles`.
#[track_caller]
fn parse_fails(bytes: &[u8], kind: &str, needles: &[&str]) {
    match Qins::parse(bytes) {
        Ok(_) => panic!("parse accepted a file that should fail with {kind}"),
        Err(e) => check(&e, kind, needles),
    }
}

/// Asserts that `parse` accepts `bytes` and `verify` refuses them with `kind`.
#[track_caller]
fn verify_fails(bytes: &[u8], kind: &str, needles: &[&str]) {
    let q = match Qins::parse(bytes) {
        Ok(q) => q,
        Err(e) => panic!("parse refused a file with damaged data ({kind} expected at verify): {e}"),
    };
    match q.verify() {
        Ok(()) => panic!("verify accepted a file that should fail with {kind}"),
        Err(e) => check(&e, kind, needles),
    }
}

#[track_caller]
fn check(e: &ReadError, kind: &str, needles: &[&str]) {
    let msg = e.to_string();
    assert_eq!(e.kind(), kind, "wrong kind; message: {msg}");
    for n in needles {
        assert!(msg.contains(n), "message {msg:?} does not mention {n:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// One test per kind, in the order of §17.

#[test]
fn io() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("missing.qins");
    let e = qins_read::open(&path).unwrap_err();
    assert!(matches!(e, ReadError::Io { .. }));
    check(&e, "Io", &["missing.qins"]);
}

#[test]
fn truncated() {
    let f = F::new();
    parse_fails(&f.bytes()[..95], "Truncated", &["preamble", "96", "95"]);
    parse_fails(&[], "Truncated", &["preamble"]);
    // An empty file on disk (which cannot be mapped on every platform) is simply too short.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.qins");
    std::fs::write(&empty, b"").unwrap();
    let e = qins_read::open(&empty).unwrap().parse().unwrap_err();
    check(&e, "Truncated", &["preamble"]);
    let n = f.bytes().len();
    parse_fails(
        &f.bytes()[..n - 1],
        "Truncated",
        &["file_size", &n.to_string()],
    );
    // header_size beyond file_size, with file_size equal to the real length.
    let mut f = F::new();
    let n = f.bytes().len() as u64;
    let strings = f.get_u32(P_STRINGS_SIZE);
    let grow = n as u32; // makes header_size > file_size
    f.set_u32(P_STRINGS_SIZE, strings + grow);
    let hs = f.get_u64(P_HEADER_SIZE) + u64::from(grow);
    f.set_u64(P_HEADER_SIZE, hs);
    let e = Qins::parse(f.bytes()).unwrap_err();
    assert!(matches!(e, ReadError::Truncated { .. }));
    check(&e, "Truncated", &["header_size", &hs.to_string()]);
}

#[test]
fn bad_magic() {
    let mut f = F::new();
    f.set_u8(1, b'q');
    parse_fails(f.bytes(), "BadMagic", &["not a .qins file"]);
    // Text-mode damage: \r\n turned into \n shortens the file but the magic is what fails.
    let mut b = F::new().0;
    b.remove(5);
    parse_fails(&b, "BadMagic", &["magic"]);
}

#[test]
fn unsupported_version() {
    let mut f = F::new();
    f.set_u16(P_VERSION_MAJOR, 2).set_u16(P_VERSION_MINOR, 3);
    f.fix_header_crc();
    parse_fails(f.bytes(), "UnsupportedVersion", &["2.3"]);
    // Any minor version of major 1 is accepted (§15).
    let mut f = F::new();
    f.set_u16(P_VERSION_MINOR, 7).fix_header_crc();
    let q = Qins::parse(f.bytes()).unwrap();
    assert_eq!(q.version(), (1, 7));
}

#[test]
fn unsupported_feature() {
    let mut f = F::new();
    f.set_u64(P_FEATURES, 1 << 63).fix_header_crc();
    parse_fails(f.bytes(), "UnsupportedFeature", &["0x8000000000000000"]);
}

#[test]
fn limit_exceeded() {
    let mut f = F::new();
    f.set_u32(P_TENSOR_COUNT, (1 << 20) + 1);
    parse_fails(f.bytes(), "LimitExceeded", &["tensor_count", "1048577"]);
    let mut f = F::new();
    f.set_u32(P_ASSET_COUNT, (1 << 16) + 1);
    parse_fails(f.bytes(), "LimitExceeded", &["asset_count"]);
    let mut f = F::new();
    f.set_u32(P_METADATA_SIZE, (1 << 20) + 1);
    parse_fails(f.bytes(), "LimitExceeded", &["metadata_size"]);
    let mut f = F::new();
    f.set_u64(P_HEADER_SIZE, (256 << 20) + 1);
    parse_fails(f.bytes(), "LimitExceeded", &["header_size"]);
    // An element count that overflows u64 (§4), named by its tensor.
    let mut f = F::new();
    let t = f.t(ENC);
    f.set_u64(t + T_SHAPE, 1 << 32)
        .set_u64(t + T_SHAPE + 8, 1 << 32)
        .fix_header_crc();
    parse_fails(f.bytes(), "LimitExceeded", &["\"enc\"", "element count"]);
    // Left to right, failing at the first overflow even though a later dimension is 0 (§17).
    let mut f = F::new();
    let t = f.t(RAW);
    f.set_u8(t + T_RANK, 3)
        .set_u64(t + T_SHAPE, 1 << 32)
        .set_u64(t + T_SHAPE + 8, 1 << 32)
        .set_u64(t + T_SHAPE + 16, 0)
        .fix_header_crc();
    parse_fails(f.bytes(), "LimitExceeded", &["\"raw\"", "element count"]);
    // A byte size that overflows: 2^60 I64 elements.
    let mut f = F::new();
    let t = f.t(RAW);
    f.set_u64(t + T_SHAPE, 1 << 60).fix_header_crc();
    parse_fails(f.bytes(), "LimitExceeded", &["\"raw\""]);
    // Row scales whose byte size overflows: 2^63 rows of 1.
    let mut f = F::new();
    let t = f.t(ENC);
    f.set_u64(t + T_SHAPE, 1 << 63)
        .set_u64(t + T_SHAPE + 8, 1)
        .fix_header_crc();
    parse_fails(f.bytes(), "LimitExceeded", &["\"enc\""]);
}

#[test]
fn header_size_mismatch() {
    let mut f = F::new();
    let hs = f.get_u64(P_HEADER_SIZE);
    f.set_u64(P_HEADER_SIZE, hs + 1);
    parse_fails(
        f.bytes(),
        "HeaderSizeMismatch",
        &["header_size", &(hs + 1).to_string(), &hs.to_string()],
    );
    // A count that disagrees with header_size.
    let mut f = F::new();
    f.set_u32(P_STRINGS_SIZE, 1);
    parse_fails(f.bytes(), "HeaderSizeMismatch", &["header_size"]);
}

#[test]
fn trailing_bytes() {
    // A byte after file_size.
    let mut b = fixture();
    let n = b.len();
    b.push(0);
    parse_fails(&b, "TrailingBytes", &["file_size", &n.to_string()]);
    // file_size itself beyond the last section, the extra bytes zero.
    let mut f = F::new();
    f.0.extend_from_slice(&[0; 64]);
    f.set_u64(P_FILE_SIZE, (n + 64) as u64).fix_header_crc();
    parse_fails(f.bytes(), "TrailingBytes", &["last section"]);
}

#[test]
fn header_checksum() {
    let mut f = F::new();
    let (m, _) = f.metadata();
    f.0[m + 3] ^= 0x20; // a letter of a metadata key changes case
    let stored = f.get_u32(f.header_size() - 4);
    parse_fails(
        f.bytes(),
        "HeaderChecksum",
        &["header checksum", &format!("{stored:#010x}")],
    );
    // The CRC field itself.
    let mut f = F::new();
    let at = f.header_size() - 1;
    f.0[at] ^= 1;
    parse_fails(f.bytes(), "HeaderChecksum", &["header checksum"]);
}

#[test]
fn reserved_non_zero() {
    type Corrupt = Box<dyn Fn(&mut F)>;
    let cases: Vec<(Corrupt, &[&str])> = vec![
        (
            Box::new(|f| {
                f.set_u32(P_RESERVED0, 1);
            }),
            &["offset 60"],
        ),
        (
            Box::new(|f| {
                f.set_u64(P_RESERVED1, 1);
            }),
            &["offset 88"],
        ),
        (
            Box::new(|f| {
                f.set_u32(P_LUT_TABLE + S_RESERVED, 1);
            }),
            &["lut_table"],
        ),
        (
            Box::new(|f| {
                let t = f.t(ENC);
                f.set_u32(t + T_FLAGS, 0b11);
            }),
            &["\"enc\"", "flags"],
        ),
        (
            Box::new(|f| {
                let t = f.t(LIN);
                f.set_u32(t + T_RESERVED, 9);
            }),
            &["\"lin\"", "reserved"],
        ),
        (
            Box::new(|f| {
                let t = f.t(RAW);
                f.set_u32(t + T_SIGNS + S_RESERVED, 1);
            }),
            &["\"raw\"", "signs"],
        ),
        (
            Box::new(|f| {
                let a = f.a(1);
                f.set_u32(a + A_DATA + S_RESERVED, 1);
            }),
            &["\"tok/vocab.txt\""],
        ),
    ];
    for (corrupt, needles) in cases {
        let mut f = F::new();
        corrupt(&mut f);
        f.fix_header_crc();
        parse_fails(f.bytes(), "ReservedNonZero", needles);
    }
}

#[test]
fn bad_alignment() {
    for a in [0u32, 32, 96, 1 << 21, u32::MAX] {
        let mut f = F::new();
        f.set_u32(P_ALIGNMENT, a).fix_header_crc();
        parse_fails(f.bytes(), "BadAlignment", &[&format!("alignment {a}")]);
    }
}

#[test]
fn bad_name() {
    // A name longer than 4096 bytes, inside a large enough string table: the tensor's name
    // range is stretched over the asset names that follow it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.qins");
    let mut plan = Plan::new();
    plan.alignment = 64;
    plan.tensors
        .push(TensorSpec::new("t", Dtype::U8, vec![1], Storage::Raw));
    for k in 0..2 {
        plan.assets.push(Asset {
            name: format!("{k}{}", "x".repeat(4095)),
            data: Vec::new(),
        });
    }
    let mut w = Writer::create(&path, plan, false).unwrap();
    w.write_raw(&[7]).unwrap();
    w.finish().unwrap();
    let mut f = F(std::fs::read(&path).unwrap());
    let t = f.t(0);
    f.set_u32(t + T_NAME_LEN, 4097).fix_header_crc();
    parse_fails(f.bytes(), "BadName", &["tensor record 0", "4096"]);
    f.set_u32(t + T_NAME_LEN, 4096).fix_header_crc();
    Qins::parse(f.bytes()).unwrap();

    let mut f = F::new();
    let s = f.strings();
    f.set_u8(s + 1, 0).fix_header_crc(); // "e\0c"
    parse_fails(f.bytes(), "BadName", &["tensor record 0", "NUL"]);
    let mut f = F::new();
    let s = f.strings();
    f.set_u8(s + 3, 0xFF).fix_header_crc(); // first byte of "raw"
    parse_fails(f.bytes(), "BadName", &["tensor record 1", "UTF-8"]);
    let mut f = F::new();
    let t = f.t(LIN);
    f.set_u32(t + T_NAME_LEN, 0).fix_header_crc();
    parse_fails(f.bytes(), "BadName", &["tensor record 2", "empty"]);
    // An asset path that would escape the target directory: "config.json" -> "/onfig.json".
    let mut f = F::new();
    let a = f.a(0);
    let at = f.strings() + f.get_u32(a + A_NAME_OFFSET) as usize;
    f.set_u8(at, b'/').fix_header_crc();
    parse_fails(f.bytes(), "BadName", &["asset record 0", "path"]);
    // "tok/vocab.txt" -> "tok/../ab.txt".
    let mut f = F::new();
    let a = f.a(1);
    let at = f.strings() + f.get_u32(a + A_NAME_OFFSET) as usize;
    f.set(at + 4, b"../").fix_header_crc();
    parse_fails(f.bytes(), "BadName", &["asset record 1", "path"]);
}

#[test]
fn duplicate_name() {
    let mut f = F::new();
    let (t0, t2) = (f.t(ENC), f.t(LIN));
    let (off, len) = (f.get_u32(t0 + T_NAME_OFFSET), f.get_u32(t0 + T_NAME_LEN));
    f.set_u32(t2 + T_NAME_OFFSET, off)
        .set_u32(t2 + T_NAME_LEN, len)
        .fix_header_crc();
    parse_fails(f.bytes(), "DuplicateName", &["tensor \"enc\""]);
    let mut f = F::new();
    let (a0, a1) = (f.a(0), f.a(1));
    let (off, len) = (f.get_u32(a0 + A_NAME_OFFSET), f.get_u32(a0 + A_NAME_LEN));
    f.set_u32(a1 + A_NAME_OFFSET, off)
        .set_u32(a1 + A_NAME_LEN, len)
        .fix_header_crc();
    parse_fails(f.bytes(), "DuplicateName", &["asset \"config.json\""]);
    // A tensor and an asset may share a name: the namespaces are separate (§4, §5).
    let mut f = F::new();
    let (t1, a0) = (f.t(RAW), f.a(0));
    let (off, len) = (f.get_u32(a0 + A_NAME_OFFSET), f.get_u32(a0 + A_NAME_LEN));
    f.set_u32(t1 + T_NAME_OFFSET, off)
        .set_u32(t1 + T_NAME_LEN, len)
        .fix_header_crc();
    let q = Qins::parse(f.bytes()).unwrap();
    assert!(q.tensor("config.json").is_some());
}

#[test]
fn unknown_dtype() {
    for code in [0u8, 23, 255] {
        let mut f = F::new();
        let t = f.t(RAW);
        f.set_u8(t + T_DTYPE, code).fix_header_crc();
        parse_fails(
            f.bytes(),
            "UnknownDtype",
            &["\"raw\"", &format!("code {code}")],
        );
    }
}

#[test]
fn bad_shape() {
    let mut f = F::new();
    let t = f.t(ENC);
    f.set_u8(t + T_RANK, 9).fix_header_crc();
    parse_fails(f.bytes(), "BadShape", &["\"enc\"", "rank 9"]);
    // A dimension set past the rank.
    let mut f = F::new();
    let t = f.t(RAW);
    f.set_u64(t + T_SHAPE + 8 * 7, 1).fix_header_crc();
    parse_fails(f.bytes(), "BadShape", &["\"raw\"", "shape[7]"]);
}

#[test]
fn unknown_codec() {
    for id in [5u16, 0xFFFF] {
        let mut f = F::new();
        let t = f.t(ENC);
        f.set_u16(t + T_CODEC, id).fix_header_crc();
        parse_fails(
            f.bytes(),
            "UnknownCodec",
            &["\"enc\"", &format!("codec id {id}")],
        );
    }
}

#[test]
fn bad_dtype_for_codec() {
    // The raw I64 tensor claims to be log-encoded.
    let mut f = F::new();
    let t = f.t(RAW);
    f.set_u16(t + T_CODEC, 1).fix_header_crc();
    parse_fails(f.bytes(), "BadDtypeForCodec", &["\"raw\"", "I64"]);
    // The encoded tensor's dtype becomes F64.
    let mut f = F::new();
    let t = f.t(ENC);
    f.set_u8(t + T_DTYPE, Dtype::F64.code()).fix_header_crc();
    parse_fails(f.bytes(), "BadDtypeForCodec", &["\"enc\"", "F64"]);
}

#[test]
fn flag_mismatch() {
    let mut f = F::new();
    let t = f.t(RAW);
    f.set_u32(t + T_FLAGS, 1).fix_header_crc();
    parse_fails(f.bytes(), "FlagMismatch", &["\"raw\"", "row scales"]);
}

#[test]
fn bad_params() {
    let cases: &[(usize, usize, f64, &str)] = &[
        (ENC, T_PARAM0, f64::NAN, "\"enc\""),
        (ENC, T_PARAM1, f64::INFINITY, "\"enc\""),
        // log_min > log_max.
        (ENC, T_PARAM0, 100.0, "\"enc\""),
        // linear: max_abs < 0, and param1 must be 0.
        (LIN, T_PARAM0, -1.0, "\"lin\""),
        (LIN, T_PARAM1, 1.0, "\"lin\""),
        // raw: all bits zero, so not even -0.0.
        (RAW, T_PARAM0, 0.5, "\"raw\""),
        (RAW, T_PARAM1, -0.0, "\"raw\""),
    ];
    for &(k, field, v, needle) in cases {
        let mut f = F::new();
        let t = f.t(k);
        f.set_f64(t + field, v).fix_header_crc();
        parse_fails(f.bytes(), "BadParams", &[needle, "parameters"]);
    }
}

#[test]
fn bad_lut_index() {
    let mut f = F::new();
    let t = f.t(LIN);
    f.set_u32(t + T_LUT_INDEX, 0).fix_header_crc();
    parse_fails(
        f.bytes(),
        "BadLutIndex",
        &["\"lin\"", "expected 1", "found 0"],
    );
    let mut f = F::new();
    let t = f.t(RAW);
    f.set_u32(t + T_LUT_INDEX, 1).fix_header_crc();
    parse_fails(f.bytes(), "BadLutIndex", &["\"raw\""]);
    let mut f = F::new();
    f.set_u32(P_LUT_COUNT, 3).fix_header_crc();
    parse_fails(
        f.bytes(),
        "BadLutIndex",
        &["lut_count", "expected 2", "found 3"],
    );
}

#[test]
fn section_size() {
    let mut f = F::new();
    let t = f.t(ENC);
    f.set_u64(t + T_SIGNS + S_LENGTH, 3).fix_header_crc();
    parse_fails(
        f.bytes(),
        "SectionSize",
        &["tensor \"enc\" signs", "length 3", "expected 2"],
    );
    let mut f = F::new();
    let t = f.t(ENC);
    f.set_u64(t + T_SCALES + S_LENGTH, 8).fix_header_crc();
    parse_fails(f.bytes(), "SectionSize", &["tensor \"enc\" scales"]);
    let mut f = F::new();
    let t = f.t(RAW);
    f.set_u64(t + T_DATA + S_LENGTH, 15).fix_header_crc();
    parse_fails(f.bytes(), "SectionSize", &["tensor \"raw\" data"]);
    // An unused section that is not all zero.
    let mut f = F::new();
    let t = f.t(LIN);
    f.set_u32(t + T_SCALES + S_CRC, 1).fix_header_crc();
    parse_fails(f.bytes(), "SectionSize", &["tensor \"lin\" scales"]);
    // The LUT table's length.
    let mut f = F::new();
    f.set_u64(P_LUT_TABLE + S_LENGTH, 1024).fix_header_crc();
    parse_fails(f.bytes(), "SectionSize", &["lut table"]);
    // A sub-byte dtype whose bits do not fill whole bytes: F4 [3].
    let mut f = F::new();
    let t = f.t(RAW);
    f.set_u8(t + T_DTYPE, Dtype::F4.code())
        .set_u64(t + T_SHAPE, 3)
        .fix_header_crc();
    parse_fails(f.bytes(), "SectionSize", &["tensor \"raw\" data"]);
}

#[test]
fn misaligned() {
    let mut f = F::new();
    let a = f.a(0);
    let (o, _) = f.section(a + A_DATA);
    f.set_u64(a + A_DATA + S_OFFSET, o as u64 + 1)
        .fix_header_crc();
    parse_fails(
        f.bytes(),
        "Misaligned",
        &["asset \"config.json\"", &format!("offset {}", o + 1)],
    );
}

#[test]
fn out_of_bounds() {
    let mut f = F::new();
    let a = f.a(1);
    f.set_u64(a + A_DATA + S_LENGTH, 1 << 40).fix_header_crc();
    parse_fails(f.bytes(), "OutOfBounds", &["asset \"tok/vocab.txt\""]);
    // offset + length overflows u64.
    let mut f = F::new();
    let a0 = f.a(0);
    let (o, _) = f.section(a0 + A_DATA);
    f.set_u64(a0 + A_DATA + S_LENGTH, u64::MAX - o as u64 + 1)
        .fix_header_crc();
    parse_fails(f.bytes(), "OutOfBounds", &["asset \"config.json\""]);
    // A name range outside the string table (§6).
    let mut f = F::new();
    let t = f.t(LIN);
    f.set_u32(t + T_NAME_OFFSET, 1000).fix_header_crc();
    parse_fails(f.bytes(), "OutOfBounds", &["tensor record 2 name"]);
    let mut f = F::new();
    let t = f.t(LIN);
    f.set_u32(t + T_NAME_LEN, u32::MAX).fix_header_crc();
    parse_fails(f.bytes(), "OutOfBounds", &["tensor record 2 name"]);
}

#[test]
fn overlap() {
    let mut f = F::new();
    let (te, tr) = (f.t(ENC), f.t(RAW));
    let (scales, _) = f.section(te + T_SCALES);
    f.set_u64(tr + T_DATA + S_OFFSET, scales as u64)
        .fix_header_crc();
    parse_fails(f.bytes(), "Overlap", &["tensor \"raw\" data", "overlaps"]);
}

#[test]
fn gap() {
    let mut f = F::new();
    let t = f.t(ENC);
    let (o, _) = f.section(t + T_DATA);
    f.set_u64(t + T_DATA + S_OFFSET, o as u64 + 64)
        .fix_header_crc();
    parse_fails(
        f.bytes(),
        "Gap",
        &["tensor \"enc\" data", &format!("expected {o}")],
    );
}

#[test]
fn bad_metadata() {
    let cases: &[(&[u8], &str)] = &[
        (br#"{"a":"x","a":"y"}"#, "duplicate key"),
        (br#"{"a":1}"#, "metadata"),
        (br#"["a"]"#, "metadata"),
        (b"{\"a\":\"\xff\"}", "metadata"),
        (br#"{"a":"x"} x"#, "metadata"),
        (b"{", "metadata"),
        // A lone surrogate is not Unicode; a byte-order mark is not allowed (§7).
        (br#"{"a":"\ud800"}"#, "metadata"),
        (b"\xef\xbb\xbf{}", "metadata"),
        // Keys are compared after unescaping.
        (br#"{"a":"","\u0061":""}"#, "duplicate key"),
    ];
    for (json, needle) in cases {
        let mut f = F::new();
        f.set_metadata(json).fix_header_crc();
        parse_fails(f.bytes(), "BadMetadata", &["metadata", needle]);
    }
    // Whitespace is JSON too: a reader does not require the writer's compact form.
    let mut f = F::new();
    f.set_metadata(br#"{ "a" : "b" }"#).fix_header_crc();
    let q = Qins::parse(f.bytes()).unwrap();
    assert_eq!(q.metadata()["a"], "b");
}

#[test]
fn bad_lut() {
    // The LUT table is data (its CRC is checked by verify), but its values are checked on open.
    let f0 = F::new();
    let (lut, _) = f0.section(P_LUT_TABLE);
    let cases: &[(usize, f32, &str)] = &[
        (lut, 1.0, "\"enc\""),                     // LUT 0, entry 0 not zero
        (lut, -0.0, "\"enc\""),                    // entry 0 must be +0.0
        (lut + 1024 + 4 * 5, -1.0, "\"lin\""),     // LUT 1, entry 5 negative
        (lut + 1024 + 4 * 7, -0.0, "\"lin\""),     // -0.0 is negative too
        (lut + 4 * 255, f32::NAN, "\"enc\""),      // not finite
        (lut + 4 * 200, f32::INFINITY, "\"enc\""), // not finite
    ];
    for &(at, v, needle) in cases {
        let mut f = F::new();
        f.set_f32(at, v);
        parse_fails(f.bytes(), "BadLut", &[needle, "LUT"]);
    }
}

#[test]
fn data_checksum() {
    let mut f = F::new();
    let t = f.t(RAW);
    let (o, _) = f.section(t + T_DATA);
    f.0[o + 3] ^= 0x40;
    verify_fails(f.bytes(), "DataChecksum", &["tensor \"raw\" data"]);
    // A LUT entry changed to another valid value: parse accepts it, verify does not.
    let mut f = F::new();
    let (lut, _) = f.section(P_LUT_TABLE);
    let v = f32::from_le_bytes(f.0[lut + 40..lut + 44].try_into().unwrap());
    f.set_f32(lut + 40, v * 1.5);
    verify_fails(f.bytes(), "DataChecksum", &["lut table"]);
    let mut f = F::new();
    let t = f.t(ENC);
    let (o, _) = f.section(t + T_SCALES);
    f.0[o] ^= 1;
    verify_fails(f.bytes(), "DataChecksum", &["tensor \"enc\" scales"]);
    let mut f = F::new();
    let t = f.t(LIN);
    let (o, _) = f.section(t + T_SIGNS);
    f.0[o] ^= 0b100;
    verify_fails(f.bytes(), "DataChecksum", &["tensor \"lin\" signs"]);
    let mut f = F::new();
    let a = f.a(1);
    let (o, l) = f.section(a + A_DATA);
    f.0[o + l - 1] ^= 0xFF;
    verify_fails(f.bytes(), "DataChecksum", &["asset \"tok/vocab.txt\""]);
}

#[test]
fn non_zero_padding() {
    // After a section.
    let mut f = F::new();
    let t = f.t(ENC);
    let (o, l) = f.section(t + T_DATA);
    f.set_u8(o + l, 0x5A);
    verify_fails(
        f.bytes(),
        "NonZeroPadding",
        &[&format!("offset {}", o + l), "0x5a"],
    );
    // Between the header block and the LUT table.
    let mut f = F::new();
    let hs = f.header_size();
    let (lut, _) = f.section(P_LUT_TABLE);
    assert!(lut > hs, "the fixture must have padding after its header");
    f.set_u8(lut - 1, 1);
    verify_fails(
        f.bytes(),
        "NonZeroPadding",
        &[&format!("offset {}", lut - 1)],
    );
}

#[test]
fn stray_sign_bits() {
    // enc has 15 elements: bit 7 of its second sign byte is unused.
    let mut f = F::new();
    let t = f.t(ENC);
    let (o, l) = f.section(t + T_SIGNS);
    assert_eq!(l, 2);
    f.0[o + 1] |= 0x80;
    f.fix_section_crc(t + T_SIGNS).fix_header_crc();
    verify_fails(f.bytes(), "StraySignBits", &["\"enc\"", "sign bits"]);
    // lin has 4 elements: bits 4..8 of its only sign byte are unused.
    let mut f = F::new();
    let t = f.t(LIN);
    let (o, _) = f.section(t + T_SIGNS);
    f.0[o] |= 0x10;
    f.fix_section_crc(t + T_SIGNS).fix_header_crc();
    verify_fails(f.bytes(), "StraySignBits", &["\"lin\""]);
}

#[test]
fn bad_scale() {
    for (row, v) in [
        (1usize, -2.0f32),
        (0, 0.0),
        (2, -0.0),
        (1, f32::NAN),
        (2, f32::INFINITY),
    ] {
        let mut f = F::new();
        let t = f.t(ENC);
        let (o, _) = f.section(t + T_SCALES);
        f.set_f32(o + 4 * row, v);
        f.fix_section_crc(t + T_SCALES).fix_header_crc();
        verify_fails(
            f.bytes(),
            "BadScale",
            &["\"enc\"", &format!("row scale {row}")],
        );
    }
}

#[test]
fn decode_errors() {
    let bytes = fixture();
    let q = Qins::parse(&bytes).unwrap();
    let raw = q.tensor("raw").unwrap();
    let e = raw.decode_f32(0, &mut [0.0; 2]).unwrap_err();
    assert!(matches!(&e, DecodeError::NotEncoded { tensor, dtype: "I64" } if tensor == "raw"));
    assert!(e.to_string().contains("\"raw\""), "{e}");
    assert!(matches!(
        raw.decode_bf16(0, &mut [half::bf16::ZERO; 1]),
        Err(DecodeError::NotEncoded { .. })
    ));
    assert!(matches!(
        raw.to_f32_vec(),
        Err(DecodeError::NotEncoded { .. })
    ));

    let enc = q.tensor("enc").unwrap();
    let e = enc.decode_f32(10, &mut [0.0; 6]).unwrap_err();
    assert_eq!(
        e,
        DecodeError::OutOfRange {
            tensor: "enc".into(),
            first: 10,
            end: 16,
            numel: 15
        }
    );
    let msg = e.to_string();
    assert!(
        msg.contains("\"enc\"") && msg.contains("10..16") && msg.contains("15"),
        "{msg}"
    );
    assert!(matches!(
        enc.decode_f16(u64::MAX, &mut [half::f16::ZERO; 2]),
        Err(DecodeError::OutOfRange {
            first: u64::MAX,
            ..
        })
    ));
    assert!(matches!(
        enc.decode_bf16(15, &mut [half::bf16::ZERO; 1]),
        Err(DecodeError::OutOfRange { .. })
    ));
    // Rows: the buffer must be a whole number of rows, inside the tensor.
    assert!(matches!(
        enc.decode_rows_f32(0, &mut [0.0; 4]),
        Err(DecodeError::OutOfRange { .. })
    ));
    assert!(matches!(
        enc.decode_rows_f32(2, &mut [0.0; 10]),
        Err(DecodeError::OutOfRange { .. })
    ));
    assert!(enc.decode_rows_f32(1, &mut [0.0; 10]).is_ok());
    // An empty range at the end is fine.
    assert!(enc.decode_f32(15, &mut []).is_ok());
}

/// Every error kind of the spec's §17 table has a test above (kept honest by name: a kind
/// added to the spec fails here until it gets one).
#[test]
fn every_spec_kind_is_tested() {
    let tested: BTreeSet<&str> = [
        "Truncated",
        "BadMagic",
        "UnsupportedVersion",
        "UnsupportedFeature",
        "LimitExceeded",
        "HeaderSizeMismatch",
        "TrailingBytes",
        "HeaderChecksum",
        "ReservedNonZero",
        "BadAlignment",
        "BadName",
        "DuplicateName",
        "UnknownDtype",
        "BadShape",
        "UnknownCodec",
        "BadDtypeForCodec",
        "FlagMismatch",
        "BadParams",
        "BadLutIndex",
        "SectionSize",
        "Misaligned",
        "OutOfBounds",
        "Overlap",
        "Gap",
        "BadMetadata",
        "BadLut",
        "DataChecksum",
        "NonZeroPadding",
        "StraySignBits",
        "BadScale",
    ]
    .into_iter()
    .collect();
    let spec = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../spec/qins-v1.md"),
    )
    .unwrap();
    let table = spec
        .split("| kind | meaning | § |")
        .nth(1)
        .expect("the §17 table");
    // The table ends where the next section begins (§21.6 has a table of its own).
    let table = table.split("\n## ").next().unwrap_or(table);
    let in_spec: BTreeSet<&str> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    assert_eq!(in_spec, tested);
}

// ---------------------------------------------------------------------------------------------
// Hostile headers, truncation, byte flips.

/// A 100-byte file: a valid preamble (magic, version 1.0, alignment 64) followed by 4 bytes.
fn tiny(set: impl FnOnce(&mut F)) -> Vec<u8> {
    let mut f = F(vec![0; 100]);
    f.set(0, &[0x89, b'Q', b'I', b'N', b'S', 0x0D, 0x0A, 0x1A])
        .set_u16(P_VERSION_MAJOR, 1)
        .set_u32(P_ALIGNMENT, 64)
        .set_u64(P_FILE_SIZE, 100)
        .set_u64(P_HEADER_SIZE, 100);
    set(&mut f);
    f.0
}

#[test]
fn huge_claims_are_refused_without_large_allocation() {
    let hs_for = |t: u64, a: u64, s: u64, m: u64| 96 + 176 * t + 32 * a + s + m + 4;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // Counts at their limits with a matching header_size; the file is 100 bytes.
        (
            tiny(|f| {
                f.set_u32(P_TENSOR_COUNT, 1 << 20)
                    .set_u64(P_HEADER_SIZE, hs_for(1 << 20, 0, 0, 0))
                    .set_u64(P_FILE_SIZE, u64::MAX);
            }),
            "Truncated",
        ),
        // The issue's numbers: tensor_count 2^20, header_size exactly at its limit of 2^28
        // (the string table makes up the rest), file_size 2^63.
        (
            tiny(|f| {
                let strings = (1 << 28) - hs_for(1 << 20, 0, 0, 0);
                f.set_u32(P_TENSOR_COUNT, 1 << 20)
                    .set_u32(P_STRINGS_SIZE, strings as u32)
                    .set_u64(P_HEADER_SIZE, hs_for(1 << 20, 0, strings, 0))
                    .set_u64(P_FILE_SIZE, 1 << 63);
                assert_eq!(f.get_u64(P_HEADER_SIZE), 1 << 28);
            }),
            "Truncated",
        ),
        (
            tiny(|f| {
                f.set_u32(P_TENSOR_COUNT, 1 << 20)
                    .set_u32(P_ASSET_COUNT, 1 << 16)
                    .set_u32(P_METADATA_SIZE, 1 << 20)
                    .set_u64(P_HEADER_SIZE, hs_for(1 << 20, 1 << 16, 0, 1 << 20));
            }),
            "Truncated",
        ),
        // Counts beyond the limits.
        (
            tiny(|f| {
                f.set_u32(P_TENSOR_COUNT, u32::MAX);
            }),
            "LimitExceeded",
        ),
        (
            tiny(|f| {
                f.set_u32(P_ASSET_COUNT, u32::MAX);
            }),
            "LimitExceeded",
        ),
        (
            tiny(|f| {
                f.set_u32(P_METADATA_SIZE, u32::MAX);
            }),
            "LimitExceeded",
        ),
        // A huge header_size, and one that the counts imply but is over 256 MiB.
        (
            tiny(|f| {
                f.set_u64(P_HEADER_SIZE, u64::MAX);
            }),
            "LimitExceeded",
        ),
        (
            tiny(|f| {
                f.set_u32(P_STRINGS_SIZE, u32::MAX)
                    .set_u64(P_HEADER_SIZE, hs_for(0, 0, u64::from(u32::MAX), 0));
            }),
            "LimitExceeded",
        ),
        (
            tiny(|f| {
                f.set_u32(P_STRINGS_SIZE, u32::MAX);
            }),
            "HeaderSizeMismatch",
        ),
        // A huge file_size alone.
        (
            tiny(|f| {
                f.set_u64(P_FILE_SIZE, u64::MAX);
            }),
            "Truncated",
        ),
        // Everything consistent except a LUT table claiming a huge count.
        (
            tiny(|f| {
                f.set_u32(P_LUT_COUNT, u32::MAX)
                    .set_u64(P_LUT_TABLE + S_LENGTH, u64::MAX);
                f.fix_header_crc();
            }),
            "BadLutIndex",
        ),
    ];
    // The counter sees allocations.
    let (v, n) = allocated_during(|| vec![1u8; 1 << 20]);
    assert!(n >= 1 << 20 && v.len() == 1 << 20);
    for (bytes, kind) in cases {
        assert_eq!(bytes.len(), 100);
        let (r, allocated) = allocated_during(|| Qins::parse(&bytes).map(|_| ()));
        let e = r.expect_err("a hostile header was accepted");
        assert_eq!(e.kind(), kind, "{e}");
        assert!(
            allocated < 64 << 10,
            "parsing a 100-byte file allocated {allocated} bytes ({e})"
        );
    }
}

#[test]
fn every_truncation_is_refused() {
    let bytes = fixture();
    for len in 0..bytes.len() {
        match Qins::parse(&bytes[..len]) {
            Ok(_) => panic!("a file truncated to {len} of {} bytes parsed", bytes.len()),
            Err(e) => assert_eq!(e.kind(), "Truncated", "length {len}: {e}"),
        }
    }
}

#[test]
fn every_byte_flip_is_caught() {
    let bytes = fixture();
    let mut kinds = BTreeSet::new();
    let mut b = bytes.clone();
    for at in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xFF] {
            b[at] ^= mask;
            let err = match Qins::parse(&b) {
                Err(e) => e,
                Ok(q) => {
                    // Verifying piecewise, as a streaming reader does, finds the same fault.
                    let piecewise = q
                        .verify_frame()
                        .and_then(|()| q.tensors().try_for_each(|t| t.verify()));
                    match (q.verify(), piecewise) {
                        (Err(e), Err(p)) => {
                            assert_eq!(e.kind(), p.kind(), "byte {at} with {mask:#04x}");
                            e
                        }
                        (whole, piecewise) => panic!(
                            "flipping byte {at} with {mask:#04x}: verify {whole:?}, piecewise {piecewise:?}"
                        ),
                    }
                }
            };
            kinds.insert(err.kind());
            b[at] ^= mask;
        }
    }
    assert_eq!(b, bytes);
    // The flips reach every layer: the preamble's checks, the header CRC, the data CRCs, the
    // padding rule.
    for k in [
        "BadMagic",
        "HeaderChecksum",
        "DataChecksum",
        "NonZeroPadding",
        "Truncated",
    ] {
        assert!(kinds.contains(k), "no flip gave {k}: {kinds:?}");
    }
}

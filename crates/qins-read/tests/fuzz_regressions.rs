//! Inputs found by fuzzing (`fuzz/`), kept as named regression tests, and hostile records.
//!
//! Each crash the fuzz targets found is a file `tests/fuzz_regressions/NAME.bin` and a test
//! `NAME` here saying what went wrong and how it was fixed. A `.qins` input is also run through
//! [`exercise`], the parse targets' whole path (parse, accessors, decode, verify), by
//! `every_kept_input_and_seed_is_handled`, which runs the seeds of the corpora (the
//! conformance files) too; a `roundtrip_NAME.bin` is an input of the `roundtrip` target, whose
//! test rebuilds the case with the writer's API. `fuzz/README.md` says how to add one.
//!
//! `crates/qins-read/tests/errors.rs` already shows that a 100-byte file whose *preamble* claims
//! huge counts and sizes is refused without a large allocation. The tests at the end of this
//! file do the same for the *records* behind a valid header checksum: names, dimensions,
//! element counts and section lengths claiming up to `u64::MAX`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use qins_format::codec::{scan, Histogram, Quantizer, Stats};
use qins_format::{Codec, Dtype, Storage};
use qins_read::Qins;
use qins_write::{Plan, TensorSpec, WriteError, Writer};

// ---------------------------------------------------------------------------------------------
// A counting allocator, per thread, as in errors.rs: parsing a small file that claims huge
// sizes must allocate only a small, fixed amount (§16, ARCHITECTURE.md).

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
// The fuzz targets' path, for kept inputs.

/// Runs `bytes` through what the fuzz targets do: parse; on success, every accessor, every
/// encoded tensor decoded whole into f32, bf16 and f16 and checked against the decode rule
/// (§11.4), every raw tensor's and asset's bytes read, and verification. Returns the parse
/// error's kind, or the verification result's (`"Ok"` if the file verifies).
fn exercise(bytes: &[u8]) -> &'static str {
    let q = match Qins::parse(bytes) {
        Ok(q) => q,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return e.kind();
        }
    };
    for t in q.tensors() {
        assert_eq!(q.tensor(t.name()).map(|x| x.name()), Some(t.name()));
        let Some(lut) = t.lut() else {
            let raw = t.raw_bytes().unwrap();
            assert_eq!(
                raw.len() as u64 * 8,
                t.numel() * u64::from(t.dtype().bits())
            );
            continue;
        };
        let (codes, signs) = (t.codes().unwrap(), t.signs().unwrap());
        let scales = t.row_scales();
        let row_len = t.rows().0;
        let all = t.to_f32_vec().unwrap();
        let mut b = vec![bf16::ZERO; all.len()];
        let mut h = vec![f16::ZERO; all.len()];
        t.decode_bf16(0, &mut b).unwrap();
        t.decode_f16(0, &mut h).unwrap();
        for (i, v) in all.iter().enumerate() {
            let m = lut[usize::from(codes[i])];
            let s = if (signs[i / 8] >> (i % 8)) & 1 == 1 {
                -m
            } else {
                m
            };
            let want = scales.as_ref().map_or(s, |sc| s * sc[i / row_len as usize]);
            assert!(v.to_bits() == want.to_bits() || (v.is_nan() && want.is_nan()));
            let (wb, wh) = (bf16::from_f32(want), f16::from_f32(want));
            assert!(b[i].to_bits() == wb.to_bits() || (b[i].is_nan() && wb.is_nan()));
            assert!(h[i].to_bits() == wh.to_bits() || (h[i].is_nan() && wh.is_nan()));
        }
        let mut past = [0f32; 1];
        assert!(t.decode_f32(t.numel(), &mut past).is_err());
    }
    assert_eq!(q.assets().count(), q.assets().len());
    match q.verify() {
        Ok(()) => "Ok",
        Err(e) => e.kind(),
    }
}

fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions")
}

/// The files in `dir` whose names end in `ext`, sorted.
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(d) => d.map(|e| e.unwrap().path()).collect(),
        // No input has been kept yet: the directory is created with the first one.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    v.retain(|p| p.extension().is_some_and(|e| e == ext));
    v.sort();
    v
}

/// Every kept input, and every seed of the fuzz corpora (the conformance files), goes through
/// the whole path without panicking; the valid conformance files verify.
#[test]
fn every_kept_input_and_seed_is_handled() {
    for path in files(&regressions_dir(), "bin") {
        // Each kept input has its named test in this file.
        let stem = path.file_stem().unwrap().to_str().unwrap();
        let test = format!("fn {stem}()");
        assert!(
            include_str!("fuzz_regressions.rs").contains(&test),
            "{} has no test `{test}`",
            path.display()
        );
        // `roundtrip_*` inputs are the roundtrip target's, not files (see below).
        if !stem.starts_with("roundtrip_") {
            exercise(&std::fs::read(&path).unwrap());
        }
    }
    let conformance = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance");
    let valid = files(&conformance.join("valid"), "qins");
    let invalid = files(&conformance.join("invalid"), "qins");
    assert!(
        !valid.is_empty() && !invalid.is_empty(),
        "no conformance files"
    );
    for path in valid {
        let kind = exercise(&std::fs::read(&path).unwrap());
        assert_eq!(kind, "Ok", "{}", path.display());
    }
    for path in invalid {
        let kind = exercise(&std::fs::read(&path).unwrap());
        assert_ne!(kind, "Ok", "{}", path.display());
    }
}

// ---------------------------------------------------------------------------------------------
// Crashes of the `roundtrip` target (`fuzz/fuzz_targets/roundtrip.rs`). Its input is not a file
// but the `arbitrary` encoding of a plan and its data: `fuzz_regressions/roundtrip_NAME.bin` is
// that input as the fuzzer found it, replayed with `RUSTC_BOOTSTRAP=1 cargo fuzz run roundtrip
// crates/qins-read/tests/fuzz_regressions/roundtrip_NAME.bin` and shown with `cargo fuzz fmt`;
// the test `roundtrip_NAME` builds the same case with the writer's API.

/// A scratch directory and a target path in it.
fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.qins");
    (dir, path)
}

/// A plan of one F32 tensor `t` of `shape`, stored as `storage`.
fn plan_of(shape: Vec<u64>, storage: Storage) -> Plan {
    let mut plan = Plan::new();
    plan.alignment = 64;
    plan.tensors
        .push(TensorSpec::new("t", Dtype::F32, shape, storage));
    plan
}

fn enc(codec: Codec, row_scales: bool) -> Storage {
    Storage::Encoded { codec, row_scales }
}

/// The file at `path` parses and verifies.
fn reads_back(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let q = Qins::parse(&bytes).unwrap();
    q.verify().unwrap();
    assert_eq!(exercise(&bytes), "Ok");
}

/// What went wrong: a plan with an F32 scalar encoded with `lloyd-rows` but without
/// `ROW_SCALES` was written (and read back without complaint), though §12.4 says a writer MUST
/// set `ROW_SCALES` for `lloyd-rows`, and §12.3 that it MUST NOT for `lloyd`.
/// Fix (qins-write, `layout`): such plans are refused as `InvalidPlan`, naming the codec.
#[test]
fn roundtrip_lloyd_rows_without_row_scales() {
    let (_dir, path) = scratch();
    for (codec, row_scales) in [(Codec::LloydRows, false), (Codec::Lloyd, true)] {
        match Writer::create(&path, plan_of(vec![], enc(codec, row_scales)), false) {
            Err(WriteError::InvalidPlan { what, reason }) => {
                assert!(what.contains("\"t\""), "{what}");
                assert!(reason.contains(codec.name()), "{reason}");
            }
            Err(e) => panic!("{codec} with row scales {row_scales}: {e}"),
            Ok(_) => panic!("{codec} with row scales {row_scales} was accepted"),
        }
        assert!(!path.exists());
    }
    // The combinations the spec requires are written and read back.
    for (codec, scales) in [
        (Codec::LloydRows, Some(&[0.5f32][..])),
        (Codec::Lloyd, None),
    ] {
        let mut w =
            Writer::create(&path, plan_of(vec![], enc(codec, scales.is_some())), true).unwrap();
        w.encode_tensor(&[-0.5], scales).unwrap();
        w.finish().unwrap();
        reads_back(&path);
    }
}

/// What went wrong: `Quantizer::new` panicked ("bad range" in the change-point table's
/// `Breaks::new`) on statistics built by hand (`Stats`' fields are public, and its documentation
/// allows hand-made statistics for `log` and `linear`) whose smallest non-zero magnitude is
/// above the largest, with enough elements (`count ≥ 16384`) for the fast path.
/// Fix (qins-format, `Quantizer::with_fast_path`): the change-point table is built only for a
/// range of finite positive magnitudes, `0 < min_nonzero ≤ max_abs`, which `scan` always gives;
/// otherwise every code comes from the formula.
#[test]
fn roundtrip_handmade_stats_fast_path_panic() {
    let stats = |min: f32, max: f32| Stats {
        min_nonzero: min,
        max_abs: max,
        nonzero: 21039,
        count: 58489,
        hist: Histogram::EMPTY,
    };
    let cases = [
        // The input's statistics.
        stats(f32::from_bits(0x0C0F_24CC), f32::from_bits(0x093D_301E)),
        stats(2.0, 1.0),
        stats(f32::NAN, 1.0),
        stats(1.0, f32::INFINITY),
        stats(-1.0, 1.0),
        stats(1.0, -2.0),
        stats(0.0, 1.0),
        stats(f32::INFINITY, 0.0),
    ];
    for s in &cases {
        for codec in [Codec::Log, Codec::Linear] {
            let q = Quantizer::new(codec, s);
            for m in [
                0.0,
                1e-30,
                0.5,
                1.0,
                2.0,
                3e38,
                s.min_nonzero.abs(),
                s.max_abs.abs(),
            ] {
                assert_eq!(q.code(m), q.code_exact(m), "{codec} {s:?} at {m}");
            }
        }
    }
    // Sane statistics still get the table, and it agrees with the formula.
    let q = Quantizer::new(Codec::Log, &stats(1e-3, 2.0));
    for i in 0..1000 {
        let m = 1e-3 + i as f32 * 2e-3;
        assert_eq!(q.code(m), q.code_exact(m));
    }
}

/// What went wrong: `Writer::begin_encoded` accepted a quantizer fitted to hand-made statistics
/// (here the input's: a "largest magnitude" with its sign bit set, so `log_max = ln(negative)`
/// is NaN) and wrote its parameters, `-23.29…, NaN`: a file every reader refuses with
/// `BadParams` (§12). Fix (qins-write, `begin_encoded`): a quantizer whose parameters break the
/// codec's constraint, or whose table breaks §10, is refused as `Misuse` before anything is
/// written, and the writer stays usable.
#[test]
fn roundtrip_handmade_quantizer_invalid_params() {
    let (_dir, path) = scratch();
    // The input's tensor: log with row scales, shape [7, 7, 0] (empty, no rows).
    let mut w =
        Writer::create(&path, plan_of(vec![7, 7, 0], enc(Codec::Log, true)), false).unwrap();
    let handmade = |codec, min: u32, max: u32| {
        let stats = Stats {
            min_nonzero: f32::from_bits(min),
            max_abs: f32::from_bits(max),
            nonzero: 4883,
            count: 11789,
            hist: Histogram::EMPTY,
        };
        Quantizer::new(codec, &stats)
    };
    let q = handmade(Codec::Log, 782_741_031, 2_527_526_913);
    assert!(q.params()[1].is_nan(), "{:?}", q.params());
    match w.begin_encoded(&q, Some(&[])) {
        Err(WriteError::Misuse { reason, .. }) => assert!(reason.contains("parameters")),
        other => panic!("{other:?}"),
    }
    // `log_min > log_max`, finite: also against §12.1's constraint.
    let q = handmade(Codec::Log, 2.0f32.to_bits(), 1.0f32.to_bits());
    assert!(w.begin_encoded(&q, Some(&[])).is_err());
    // The writer is still at the tensor: a quantizer fitted to the values completes the file.
    let q = Quantizer::new(Codec::Log, &scan(&[], 0, None).unwrap());
    w.begin_encoded(&q, Some(&[])).unwrap();
    w.finish().unwrap();
    reads_back(&path);

    // `linear` with a negative largest magnitude: parameters and table both invalid.
    let mut w = Writer::create(&path, plan_of(vec![0], enc(Codec::Linear, false)), true).unwrap();
    let q = handmade(Codec::Linear, 1.0f32.to_bits(), (-1.0f32).to_bits());
    assert!(q.lut()[2] < 0.0);
    assert!(matches!(
        w.begin_encoded(&q, None),
        Err(WriteError::Misuse { .. })
    ));
}

/// What went wrong: `Writer::encode_tensor` on a `lloyd` tensor planned without row scales,
/// given row scales anyway (a caller's mistake), scanned and fitted the values divided by
/// those scales before `begin_encoded` noticed the mismatch. With these scales every row that
/// has a non-zero value gets histogram weight 0 (§12.4), so the histogram was empty and
/// `Quantizer::new` panicked on its `debug_assert!` ("lloyd needs the histogram").
/// Fix (qins-write, `encode_tensor`): row scales given for a tensor planned without them (or
/// missing for one planned with them) are refused as `Misuse` before anything is scanned.
#[test]
fn roundtrip_lloyd_scales_fitted_before_check() {
    let (_dir, path) = scratch();
    let mut plan = plan_of(vec![11, 2], enc(Codec::Lloyd, false));
    plan.tensors[0].dtype = Dtype::BF16;
    let mut w = Writer::create(&path, plan, false).unwrap();
    // The input's values (the smallest BF16 subnormal) and scales (its scale bits, masked to
    // positive, with non-finite ones replaced by 1.0).
    let x = bf16::from_bits(1).to_f32();
    let values = vec![x; 22];
    let bits = [
        85_136_147u32,
        992_554_560,
        2_506_289_051,
        u32::MAX,
        u32::MAX,
        u32::MAX,
        u32::MAX,
        487_250_943,
        1_828_598_270,
    ];
    let scales: Vec<f32> = (0..11)
        .map(|r| f32::from_bits(bits[r % 9] & 0x7FFF_FFFF))
        .map(|s| if s.is_finite() && s > 0.0 { s } else { 1.0 })
        .collect();
    match w.encode_tensor(&values, Some(&scales)) {
        Err(WriteError::Misuse { reason, .. }) => assert!(reason.contains("row scales")),
        other => panic!("{other:?}"),
    }
    // And the other way round, on a tensor planned with row scales.
    let mut w2 = Writer::create(
        &path.with_extension("2"),
        plan_of(vec![2], enc(Codec::Log, true)),
        false,
    )
    .unwrap();
    assert!(matches!(
        w2.encode_tensor(&[1.0, 2.0], None),
        Err(WriteError::Misuse { .. })
    ));
    // The writer is still at the tensor.
    w.encode_tensor(&values, None).unwrap();
    w.finish().unwrap();
    reads_back(&path);
}

// ---------------------------------------------------------------------------------------------
// Hostile records behind a valid header checksum.

const ALIGN: u64 = 64;

fn align_up(x: u64) -> u64 {
    x.div_ceil(ALIGN) * ALIGN
}

/// A section reference (§9.1): offset, length, crc 0, reserved 0.
fn section(offset: u64, length: u64) -> [u8; 24] {
    let mut s = [0u8; 24];
    s[..8].copy_from_slice(&offset.to_le_bytes());
    s[8..16].copy_from_slice(&length.to_le_bytes());
    s
}

/// One tensor record's fields (§4); the sections' offsets are placed canonically by [`file`].
#[derive(Clone)]
struct Rec {
    name: (u32, u32),
    dtype: u8,
    rank: u8,
    codec: u16,
    flags: u32,
    shape: [u64; 8],
    params: [f64; 2],
    /// Lengths of data, signs, scales.
    lens: [u64; 3],
}

/// A raw U8 tensor named by the string table's first byte, of shape `shape`.
fn raw(shape: &[u64]) -> Rec {
    let mut s = [0u64; 8];
    s[..shape.len()].copy_from_slice(shape);
    Rec {
        name: (0, 1),
        dtype: 2,
        rank: shape.len() as u8,
        codec: 0,
        flags: 0,
        shape: s,
        params: [0.0; 2],
        lens: [0; 3],
    }
}

/// A log-encoded F32 tensor (§12.1, parameters 0, 0) of shape `shape`, with row scales if
/// `row_scales`.
fn encoded(shape: &[u64], row_scales: bool) -> Rec {
    Rec {
        dtype: 12,
        codec: 1,
        flags: u32::from(row_scales),
        ..raw(shape)
    }
}

/// A file of alignment 64 with `tensors` (encoded ones using LUTs 0, 1, … in order), `assets`
/// as `(name_offset, name_len, data length)`, the string table `strings`, a LUT table of
/// all-zero tables (valid, §10), and then `tail` zero bytes; every section is placed at its
/// canonical offset (§9.2) and the header CRC is right (§8), so whatever the records claim is
/// what the reader meets.
fn file(tensors: &[Rec], assets: &[(u32, u32, u64)], strings: &[u8], tail: u64) -> Vec<u8> {
    let hs = 96 + 176 * tensors.len() as u64 + 32 * assets.len() as u64 + strings.len() as u64 + 4;
    let encoded = tensors.iter().filter(|t| t.codec != 0).count() as u64;
    let lut_off = align_up(hs);
    let lut_len = 1024 * encoded;
    let file_size = lut_off + lut_len + tail;
    // Canonical offsets, saturating: the claims are meant to overflow or exceed the file.
    let mut end = lut_off + lut_len;
    let mut place = |len: u64| {
        let at = end
            .checked_next_multiple_of(ALIGN)
            .unwrap_or(u64::MAX - ALIGN + 1);
        end = at.saturating_add(len);
        section(at, len)
    };
    let mut h = Vec::new();
    h.extend_from_slice(&[0x89, b'Q', b'I', b'N', b'S', 0x0D, 0x0A, 0x1A]);
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes());
    h.extend_from_slice(&(ALIGN as u32).to_le_bytes());
    h.extend_from_slice(&0u64.to_le_bytes());
    h.extend_from_slice(&file_size.to_le_bytes());
    h.extend_from_slice(&hs.to_le_bytes());
    h.extend_from_slice(&(tensors.len() as u32).to_le_bytes());
    h.extend_from_slice(&(assets.len() as u32).to_le_bytes());
    h.extend_from_slice(&(encoded as u32).to_le_bytes());
    h.extend_from_slice(&(strings.len() as u32).to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    let mut lut = section(lut_off, lut_len);
    lut[16..20].copy_from_slice(&crc32fast::hash(&vec![0; lut_len as usize]).to_le_bytes());
    h.extend_from_slice(&lut);
    h.extend_from_slice(&0u64.to_le_bytes());
    assert_eq!(h.len(), 96);
    let mut lut_index = 0u32;
    let mut recs = Vec::new();
    for t in tensors {
        let mut r = Vec::with_capacity(176);
        r.extend_from_slice(&t.name.0.to_le_bytes());
        r.extend_from_slice(&t.name.1.to_le_bytes());
        r.push(t.dtype);
        r.push(t.rank);
        r.extend_from_slice(&t.codec.to_le_bytes());
        r.extend_from_slice(&t.flags.to_le_bytes());
        for d in t.shape {
            r.extend_from_slice(&d.to_le_bytes());
        }
        r.extend_from_slice(&t.params[0].to_le_bytes());
        r.extend_from_slice(&t.params[1].to_le_bytes());
        let index = if t.codec != 0 {
            lut_index += 1;
            lut_index - 1
        } else {
            0
        };
        r.extend_from_slice(&index.to_le_bytes());
        r.extend_from_slice(&0u32.to_le_bytes());
        r.extend_from_slice(&place(t.lens[0]));
        let signs = if t.codec != 0 {
            place(t.lens[1])
        } else {
            [0; 24]
        };
        r.extend_from_slice(&signs);
        let scales = if t.codec != 0 && t.flags & 1 != 0 {
            place(t.lens[2])
        } else {
            [0; 24]
        };
        r.extend_from_slice(&scales);
        assert_eq!(r.len(), 176);
        recs.push(r);
    }
    for r in recs {
        h.extend_from_slice(&r);
    }
    for &(off, len, data) in assets {
        h.extend_from_slice(&off.to_le_bytes());
        h.extend_from_slice(&len.to_le_bytes());
        h.extend_from_slice(&place(data));
    }
    h.extend_from_slice(strings);
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(h.len() as u64, hs);
    h.resize(file_size as usize, 0);
    h
}

/// Parses `bytes`, which claim far more than they hold, and checks the result's kind (`"Ok"`
/// for a file that must be accepted) and that parsing allocated little.
#[track_caller]
fn refused_cheaply(bytes: &[u8], kind: &str) {
    let (r, allocated) = allocated_during(|| Qins::parse(bytes).map(|_| ()));
    let got = match &r {
        Ok(()) => "Ok",
        Err(e) => e.kind(),
    };
    assert_eq!(got, kind, "{r:?}");
    assert!(
        allocated < 64 << 10,
        "parsing a {}-byte file allocated {allocated} bytes ({r:?})",
        bytes.len()
    );
}

#[test]
fn huge_name_ranges_are_out_of_bounds() {
    let s = b"w";
    // A raw U8 scalar: one byte of data.
    let t = |name| Rec {
        name,
        lens: [1, 0, 0],
        ..raw(&[])
    };
    refused_cheaply(&file(&[t((0, u32::MAX))], &[], s, 0), "OutOfBounds");
    refused_cheaply(&file(&[t((u32::MAX, 1))], &[], s, 0), "OutOfBounds");
    refused_cheaply(&file(&[t((u32::MAX, u32::MAX))], &[], s, 0), "OutOfBounds");
    refused_cheaply(&file(&[], &[(0, u32::MAX, 0)], s, 0), "OutOfBounds");
    refused_cheaply(&file(&[], &[(u32::MAX, u32::MAX, 0)], s, 0), "OutOfBounds");
    // The same files with sane names are valid: the claims are what is refused.
    refused_cheaply(&file(&[t((0, 1))], &[(0, 1, 0)], s, 64), "Ok");
}

#[test]
fn huge_dimensions_are_refused_or_accepted_without_allocating() {
    let s = b"w";
    // Element counts overflowing u64 (§4, §16), also when a later dimension is 0 (§17 step 6).
    for shape in [
        &[u64::MAX, 2][..],
        &[1 << 32, 1 << 32],
        &[1 << 32, 1 << 32, 0],
        &[256; 8],
    ] {
        refused_cheaply(&file(&[raw(shape)], &[], s, 0), "LimitExceeded");
        refused_cheaply(&file(&[encoded(shape, true)], &[], s, 0), "LimitExceeded");
    }
    // Element counts that fit but whose byte size does not: 2^61 U64 elements are 2^67 bytes.
    let mut t = raw(&[1 << 61]);
    t.dtype = 9;
    refused_cheaply(&file(&[t], &[], s, 0), "LimitExceeded");
    // Huge, consistent section lengths in a small file: the sections lie outside it.
    let n = 1u64 << 60;
    let t = Rec {
        lens: [n, 0, 0],
        ..raw(&[n])
    };
    refused_cheaply(&file(&[t], &[], s, 64), "OutOfBounds");
    let t = Rec {
        lens: [u64::MAX, u64::MAX.div_ceil(8), 0],
        ..encoded(&[u64::MAX], false)
    };
    refused_cheaply(&file(&[t], &[], s, 64), "OutOfBounds");
    let t = Rec {
        lens: [1 << 40, 1 << 37, 4 << 40],
        ..encoded(&[1 << 40, 1], true)
    };
    refused_cheaply(&file(&[t], &[], s, 64), "OutOfBounds");
    // Lengths other than the shape implies.
    let t = Rec {
        lens: [u64::MAX, 0, 0],
        ..raw(&[4])
    };
    refused_cheaply(&file(&[t], &[], s, 64), "SectionSize");
    // An asset claiming the whole address space.
    refused_cheaply(&file(&[], &[(0, 1, u64::MAX)], s, 64), "OutOfBounds");
    refused_cheaply(&file(&[], &[(0, 1, 1 << 62)], s, 64), "OutOfBounds");
}

#[test]
fn empty_tensors_with_huge_dimensions_are_valid_and_cost_nothing() {
    // A dimension of 0 makes the tensor empty whatever the others claim (§4), with 0 rows when
    // the row length is 0 or the rows are empty (§11.3): every section is empty.
    for shape in [&[u64::MAX, 0][..], &[0, u64::MAX], &[1 << 63, 0, 1 << 62]] {
        let bytes = file(
            &[
                raw(shape),
                Rec {
                    name: (1, 1),
                    ..encoded(shape, true)
                },
            ],
            &[],
            b"wv",
            0,
        );
        refused_cheaply(&bytes, "Ok");
        let q = Qins::parse(&bytes).unwrap();
        let (r, e) = (q.tensor_at(0), q.tensor_at(1));
        assert_eq!(r.numel(), 0);
        assert_eq!(r.raw_bytes(), Some(&[][..]));
        assert_eq!(e.numel(), 0);
        assert_eq!(e.to_f32_vec().unwrap(), Vec::<f32>::new());
        assert_eq!(e.row_scales(), Some(vec![]));
        let mut none = [0f32; 0];
        e.decode_f32(0, &mut none).unwrap();
        let mut one = [0f32; 1];
        assert!(e.decode_f32(0, &mut one).is_err());
        assert!(e.decode_rows_f32(u64::MAX, &mut one).is_err());
        assert_eq!(exercise(&bytes), "Ok");
    }
}

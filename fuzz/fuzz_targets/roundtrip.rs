//! Arbitrary tensor sets written with qins-write, parsed back with qins-read, checked equal.
//!
//! The input builds a plan (up to 8 tensors of any dtype, rank 0..=9, dimensions small or
//! huge, raw or encoded with any codec, with or without row scales; up to 4 assets; up to 4
//! metadata keys; an alignment, sometimes an invalid one) and its data, sometimes with a
//! deliberate mistake (a wrong length, missing or extra row scales, NaN or infinite values,
//! bad scales, a sign bit the rule of §11.2 forbids, a `lloyd` tensor with row scales or a
//! `lloyd-rows` tensor without, a quantizer fitted to hand-made statistics). The writer may
//! refuse: an error is fine, a panic is not; after an error nothing may be left in the
//! directory (§18); a deliberate mistake must be refused; and data the harness gives correctly
//! must never be refused as misuse. When the writer succeeds:
//!
//! - the file parses and verifies;
//! - names, dtypes, shapes, storage, alignment, assets and metadata are what was planned, and
//!   `lloyd` tensors have no row scales, `lloyd-rows` tensors have them (§12.3, §12.4);
//! - raw tensors are bit-exact;
//! - each encoded tensor's table and parameters are the codec's fit (§12), each code is the
//!   formula's code of the value's magnitude (`Quantizer::code_exact`, so the change-point
//!   fast path of large tensors is checked against the formula), each sign bit is set exactly
//!   for a negative value with a non-zero code (§11.2), `log` and `linear` give code 0 exactly
//!   to zeros, and decoding gives `±LUT[code]` (× the row scale) bit for bit, in f32, bf16 and
//!   f16 (§11.4);
//! - `Quantizer::encode_bytes` on the tensor's bytes in its dtype (F32, BF16, F16), whole and
//!   in two parts, gives the same codes and signs as `encode` on the values;
//! - writing the same plan again, with every tensor pushed in two parts (and encoded tensors'
//!   statistics scanned per part and merged), gives the same bytes (§18).
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use half::{bf16, f16};
use libfuzzer_sys::fuzz_target;
use qins_format::codec::{scan, Quantizer, RowScales, Stats};
use qins_format::{Codec, Dtype, Histogram, Storage};
use qins_read::Qins;
use qins_write::{Asset, Plan, TensorSpec, WriteError, Writer};

/// Elements per tensor at most when every dimension is small: enough to reach the encoders'
/// change-point fast path (16384 elements), small enough for many runs a second.
const MAX_NUMEL: u64 = 1 << 15;

#[derive(Arbitrary, Debug)]
struct Input {
    alignment: u8,
    tensors: Vec<TensorIn>,
    assets: Vec<AssetIn>,
    metadata: Vec<(String, String)>,
}

#[derive(Arbitrary, Debug)]
struct TensorIn {
    /// Below 200: a fresh name `t<k>`; below 250: `name`; otherwise tensor 0's name again.
    name_kind: u8,
    name: String,
    /// Below 250 for an encoded tensor: one of F32, F16, BF16; otherwise any registry dtype.
    dtype: u8,
    /// Each below 192: 0..=15; below 240: a multiple of 512; otherwise a huge dimension.
    dims: Vec<u8>,
    /// Modulo 8: raw; log, log with row scales; linear, linear with row scales; lloyd;
    /// lloyd-rows (with its row scales); and 7, a mistake: lloyd with row scales or lloyd-rows
    /// without.
    storage: u8,
    /// Bits of the values to encode (f32, or the low 16 bits for BF16 and F16), repeated to
    /// fill the tensor.
    values: Vec<u32>,
    /// Keep non-finite values (which the writer must refuse, §12).
    allow_non_finite: bool,
    /// Raw bytes, repeated to fill the tensor.
    raw: Vec<u8>,
    /// f32 bits of the row scales of `log` and `linear`, repeated to fill the rows.
    scales: Vec<u32>,
    /// Keep scales that are not finite and positive (which the writer must refuse).
    allow_bad_scales: bool,
    /// Where the second write splits the tensor's data.
    split: u16,
    /// 255: one element or byte too many; 254: row scales given to the wrong tensor; 253: a
    /// sign bit set where §11.2 forbids one (chosen by `split`).
    mistake: u8,
    /// 255: fit the quantizer of a `log` or `linear` tensor to `stats` instead of the values'
    /// own statistics, as a caller of `Writer::begin_encoded` may (`Stats`' fields are
    /// public): the writer must refuse a quantizer whose parameters or table the spec forbids
    /// (§10, §12), never write it, and `Quantizer::new` must not panic.
    handmade: u8,
    /// `min_nonzero` and `max_abs` bits, `nonzero` and `count` of the hand-made statistics.
    stats: (u32, u32, u16, u16),
}

#[derive(Arbitrary, Debug)]
struct AssetIn {
    /// Below 200: a safe name `dir/a<k>.bin`; otherwise `name`, often an unsafe path.
    name_kind: u8,
    name: String,
    data: Vec<u8>,
}

/// The data pushed for one tensor.
#[derive(Debug)]
enum Data {
    Raw(Vec<u8>),
    Encoded {
        values: Vec<f32>,
        /// The values' little-endian bytes in the tensor's dtype, when it is F32, BF16 or F16.
        bytes: Option<Vec<u8>>,
        scales: Option<Vec<f32>>,
        /// Hand-made statistics to fit the quantizer to, instead of the values'.
        stats: Option<Stats>,
        /// Set a forbidden sign bit (chosen by this number) in the first write.
        bad_sign: Option<usize>,
    },
}

/// What the harness expects of the first write.
#[derive(Debug, Default)]
struct Expect {
    /// A deliberate mistake: the writer must refuse.
    must_fail: bool,
    /// The writer may report misuse: a mistake, a hand-made quantizer, or a tensor too large
    /// for the harness to give its data.
    misuse_ok: bool,
}

fn dim(b: u8) -> u64 {
    match b {
        0..=191 => u64::from(b % 16),
        192..=239 => u64::from(b - 191) * 512,
        _ => [
            1 << 32,
            u64::from(u32::MAX),
            1 << 40,
            1 << 62,
            u64::MAX,
            u64::MAX / 3,
            (1 << 61) + 1,
        ][usize::from(b - 240) % 7],
    }
}

/// Fills `n` items by repeating `src`, or with `fill` if it is empty.
fn cycle<T: Copy>(src: &[T], n: usize, fill: T) -> Vec<T> {
    if src.is_empty() {
        vec![fill; n]
    } else {
        src.iter().copied().cycle().take(n).collect()
    }
}

/// The values of an encoded tensor of `dtype` from `bits`, exactly representable in it, and
/// their bytes. With `finite`, an all-ones exponent loses its lowest bit.
fn values_of(dtype: Dtype, bits: &[u32], finite: bool) -> (Vec<f32>, Option<Vec<u8>>) {
    let half = |mask: u16, lsb: u16, cvt: fn(u16) -> f32| {
        let h: Vec<u16> = bits
            .iter()
            .map(|&b| {
                let h = b as u16;
                if finite && h & mask == mask {
                    h & !lsb
                } else {
                    h
                }
            })
            .collect();
        let values = h.iter().map(|&h| cvt(h)).collect();
        (
            values,
            Some(h.iter().flat_map(|h| h.to_le_bytes()).collect()),
        )
    };
    match dtype {
        Dtype::BF16 => half(0x7F80, 0x0080, |h| bf16::from_bits(h).to_f32()),
        Dtype::F16 => half(0x7C00, 0x0400, |h| f16::from_bits(h).to_f32()),
        _ => {
            let f: Vec<u32> = bits
                .iter()
                .map(|&b| {
                    if finite && b & 0x7F80_0000 == 0x7F80_0000 {
                        b & !0x0080_0000
                    } else {
                        b
                    }
                })
                .collect();
            let bytes =
                (dtype == Dtype::F32).then(|| f.iter().flat_map(|b| b.to_le_bytes()).collect());
            (f.into_iter().map(f32::from_bits).collect(), bytes)
        }
    }
}

/// Hand-made statistics: any bits, and counts up to 2^16 (with 16384 or more elements the
/// quantizer builds its change-point table).
fn handmade((min, max, nonzero, count): (u32, u32, u16, u16)) -> Stats {
    Stats {
        min_nonzero: f32::from_bits(min),
        max_abs: f32::from_bits(max),
        nonzero: u64::from(nonzero),
        count: u64::from(count),
        hist: Histogram::EMPTY,
    }
}

/// The plan and its data, and what the writer must do with them.
fn build(input: Input) -> (Plan, Vec<Data>, Expect) {
    let mut plan = Plan::new();
    // Large alignments are rare: verification reads every padding byte, up to 1 MiB per
    // section, and that would dominate the time of a run.
    plan.alignment = match input.alignment {
        0..=99 => 64,
        100..=159 => 128,
        160..=219 => 4096,
        220..=247 => 256,
        248..=251 => 65536,
        252..=254 => 100,
        255 => 1 << 20,
    };
    let mut data = Vec::new();
    let mut expect = Expect::default();
    for (k, t) in input.tensors.into_iter().take(8).enumerate() {
        let name = match t.name_kind {
            0..=199 => format!("t{k}"),
            200..=249 => t.name,
            _ => plan
                .tensors
                .first()
                .map(|s: &TensorSpec| s.name.clone())
                .unwrap_or_default(),
        };
        let enc = |codec, row_scales| Storage::Encoded { codec, row_scales };
        let storage = match t.storage % 8 {
            0 => Storage::Raw,
            1 => enc(Codec::Log, false),
            2 => enc(Codec::Log, true),
            3 => enc(Codec::Linear, false),
            4 => enc(Codec::Linear, true),
            5 => enc(Codec::Lloyd, false),
            6 => enc(Codec::LloydRows, true),
            _ if t.storage & 8 == 0 => enc(Codec::Lloyd, true),
            _ => enc(Codec::LloydRows, false),
        };
        // §12.3, §12.4: a writer MUST NOT set ROW_SCALES on lloyd and MUST on lloyd-rows.
        expect.must_fail |= t.storage % 8 == 7;
        let dtype = match storage {
            Storage::Encoded { .. } if t.dtype < 250 => {
                [Dtype::F32, Dtype::F16, Dtype::BF16][usize::from(t.dtype % 3)]
            }
            _ => Dtype::ALL[usize::from(t.dtype) % Dtype::ALL.len()],
        };
        let mut shape: Vec<u64> = t.dims.iter().take(9).map(|&b| dim(b)).collect();
        // Keep tensors whose dimensions are all small within MAX_NUMEL.
        while qins_format::numel(&shape).is_some_and(|n| n > MAX_NUMEL)
            && shape.iter().all(|&d| d <= 1 << 20)
        {
            let big = (0..shape.len()).max_by_key(|&i| shape[i]).unwrap();
            shape[big] /= 2;
        }
        let numel = qins_format::numel(&shape);
        // Huge tensors get a small buffer: the writer must refuse them, not allocate.
        expect.misuse_ok |= numel.is_none_or(|n| n > MAX_NUMEL);
        let n = numel.unwrap_or(u64::MAX).min(MAX_NUMEL) as usize;
        let extra = usize::from(t.mistake == 255);
        let d = match storage {
            Storage::Raw => {
                let len = qins_format::section_lengths(dtype, &shape, Storage::Raw)
                    .map_or(0, |l| l[0].min(8 * MAX_NUMEL)) as usize;
                expect.must_fail |= t.mistake == 255;
                Data::Raw(cycle(&t.raw, len + extra, 0))
            }
            Storage::Encoded { codec, row_scales } => {
                let bits = cycle(&t.values, n + extra, 0);
                let (values, bytes) = values_of(dtype, &bits, !t.allow_non_finite);
                expect.must_fail |= values.iter().any(|v| !v.is_finite());
                let rows = qins_format::rows(&shape).map_or(0, |r| r.1.min(MAX_NUMEL)) as usize;
                let with_scales = row_scales != (t.mistake == 254);
                let maxima = qins_format::codec::row_scales(codec, &values, &shape)
                    .ok()
                    .flatten();
                let scales = with_scales.then(|| {
                    let s: Vec<f32> = match maxima {
                        // lloyd-rows: the scales of §12.4.
                        Some(m) if !t.allow_bad_scales => m,
                        _ => {
                            let bits = cycle(&t.scales, rows, 1.0f32.to_bits());
                            if t.allow_bad_scales {
                                bits.into_iter().map(f32::from_bits).collect()
                            } else {
                                bits.into_iter()
                                    .map(|b| f32::from_bits(b & 0x7FFF_FFFF))
                                    .map(|s| if s.is_finite() && s > 0.0 { s } else { 1.0 })
                                    .collect()
                            }
                        }
                    };
                    expect.must_fail |= s.iter().any(|v| !(v.is_finite() && *v > 0.0));
                    s
                });
                let handmade_ok = matches!(codec, Codec::Log | Codec::Linear);
                let stats = (t.handmade == 255 && handmade_ok).then(|| handmade(t.stats));
                let bad_sign = (t.mistake == 253).then_some(usize::from(t.split));
                expect.must_fail |= t.mistake >= 254;
                expect.misuse_ok |= t.mistake >= 253 || stats.is_some();
                Data::Encoded {
                    values,
                    bytes,
                    scales,
                    stats,
                    bad_sign,
                }
            }
        };
        expect.misuse_ok |= expect.must_fail;
        plan.tensors
            .push(TensorSpec::new(name, dtype, shape, storage));
        data.push(d);
    }
    for (k, a) in input.assets.into_iter().take(4).enumerate() {
        let name = if a.name_kind < 200 {
            format!("dir/a{k}.bin")
        } else {
            a.name
        };
        plan.assets.push(Asset { name, data: a.data });
    }
    plan.metadata = input.metadata.into_iter().take(4).collect();
    (plan, data, expect)
}

/// Writes `plan` with `data`: each tensor whole, or (with `parts`) split at `splits[k]` into
/// two parts, encoded tensors' statistics scanned per part and merged. Sets `bad_sign_set` if
/// a forbidden sign bit was handed to the writer.
fn write(
    path: &Path,
    plan: &Plan,
    data: &[Data],
    parts: Option<&[usize]>,
    bad_sign_set: &mut bool,
) -> Result<(), WriteError> {
    let mut w = Writer::create(path, plan.clone(), false)?;
    for (k, (spec, d)) in plan.tensors.iter().zip(data).enumerate() {
        match (d, parts) {
            (Data::Raw(bytes), None) => w.write_raw(bytes)?,
            (Data::Raw(bytes), Some(splits)) => {
                // An empty part is a part only while the tensor is incomplete: once all its
                // bytes are given, an empty call would begin the next tensor.
                let at = splits[k] % (bytes.len() + 1);
                w.write_raw_part(&bytes[..at])?;
                if at < bytes.len() {
                    w.write_raw_part(&bytes[at..])?;
                }
            }
            (
                Data::Encoded {
                    values,
                    scales,
                    stats: None,
                    bad_sign: None,
                    ..
                },
                None,
            ) => {
                w.encode_tensor(values, scales.as_deref())?;
            }
            (
                Data::Encoded {
                    values,
                    scales,
                    stats,
                    bad_sign,
                    ..
                },
                _,
            ) => {
                let Storage::Encoded { codec, .. } = spec.storage else {
                    unreachable!("encoded data is built for encoded tensors")
                };
                if qins_format::numel(&spec.shape) != Some(values.len() as u64) {
                    // The wrong number of values: `encode_tensor` must refuse them. (`scan`
                    // and `Quantizer::encode` are only called here on chunks inside the
                    // tensor.)
                    w.encode_tensor(values, scales.as_deref())?;
                    unreachable!("the writer accepted {} values for {:?}", values.len(), spec);
                }
                let enc = |source| WriteError::Encode {
                    tensor: spec.name.clone(),
                    source,
                };
                let rs = scales
                    .as_deref()
                    .map(|s| RowScales::new(s, &spec.shape))
                    .transpose()
                    .map_err(enc)?;
                let split = parts.map_or(values.len(), |s| s[k]);
                let at = (split % (values.len() + 1)) / 8 * 8;
                let (a, b) = values.split_at(at);
                let scanned = scan(a, 0, rs.as_ref())
                    .map_err(enc)?
                    .merge(scan(b, at as u64, rs.as_ref()).map_err(enc)?);
                let q = Quantizer::new(codec, stats.as_ref().unwrap_or(&scanned));
                w.begin_encoded(&q, scales.as_deref())?;
                for (first, chunk) in [(0, a), (at, b)] {
                    if chunk.is_empty() {
                        continue;
                    }
                    let mut codes = vec![0u8; chunk.len()];
                    let mut signs = vec![0u8; chunk.len().div_ceil(8)];
                    q.encode(chunk, first as u64, rs.as_ref(), &mut codes, &mut signs)
                        .map_err(enc)?;
                    if let (Some(seed), None, true) =
                        (bad_sign, parts, first + chunk.len() == values.len())
                    {
                        // The bits §11.2 forbids: a code-0 element's, and those past the end.
                        let bad: Vec<usize> = (0..8 * signs.len())
                            .filter(|&i| i >= codes.len() || codes[i] == 0)
                            .collect();
                        if !bad.is_empty() {
                            let i = bad[seed % bad.len()];
                            signs[i / 8] |= 1 << (i % 8);
                            *bad_sign_set = true;
                        }
                    }
                    w.write_encoded_part(&codes, &signs)?;
                }
            }
        }
    }
    w.finish().map(|_| ())
}

fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        tempfile::Builder::new()
            .prefix("qins-fuzz-roundtrip-")
            .tempdir_in(base)
            .expect("a scratch directory")
            .keep()
    })
}

fn dir_entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Checks the parsed file against the plan and the data.
fn check(q: &Qins<'_>, plan: &Plan, data: &[Data], splits: &[usize]) {
    q.verify().expect("a written file verifies");
    qins_fuzz::check_accessors(q);
    assert_eq!(q.alignment(), plan.alignment);
    assert_eq!(q.metadata(), &plan.metadata);
    let assets: Vec<(&str, &[u8])> = plan
        .assets
        .iter()
        .map(|a| (a.name.as_str(), &a.data[..]))
        .collect();
    assert_eq!(q.assets().collect::<Vec<_>>(), assets);
    assert_eq!(q.tensor_count(), plan.tensors.len());
    let mut rng = qins_fuzz::Rng::from_bytes(q.bytes());
    for (k, ((t, spec), d)) in q.tensors().zip(&plan.tensors).zip(data).enumerate() {
        assert_eq!(t.name(), spec.name);
        assert_eq!(t.dtype(), spec.dtype);
        assert_eq!(t.shape(), &spec.shape[..]);
        assert_eq!(t.storage(), spec.storage);
        let decoded = qins_fuzz::check_decode(&t, &mut rng);
        match (d, spec.storage) {
            (Data::Raw(bytes), Storage::Raw) => {
                assert_eq!(
                    t.raw_bytes(),
                    Some(&bytes[..]),
                    "raw bytes of {:?}",
                    spec.name
                );
            }
            (
                Data::Encoded {
                    values,
                    bytes,
                    scales,
                    stats,
                    bad_sign: _,
                },
                Storage::Encoded { codec, row_scales },
            ) => {
                assert_eq!(scales.is_some(), row_scales);
                // §12.3, §12.4.
                match codec {
                    Codec::Lloyd => assert!(!row_scales, "lloyd written with row scales"),
                    Codec::LloydRows => assert!(row_scales, "lloyd-rows written without"),
                    _ => {}
                }
                let rs = scales
                    .as_deref()
                    .map(|s| RowScales::new(s, &spec.shape).unwrap());
                let scanned = scan(values, 0, rs.as_ref()).unwrap();
                let q = Quantizer::new(codec, stats.as_ref().unwrap_or(&scanned));
                let lut = t.lut().unwrap();
                assert_eq!(bits(lut), bits(q.lut()), "table of {:?}", spec.name);
                let [p0, p1] = t.params();
                assert_eq!([p0.to_bits(), p1.to_bits()], q.params().map(f64::to_bits));
                assert_eq!(
                    t.row_scales().map(|s| bits(&s)),
                    scales.as_deref().map(bits)
                );
                let (codes, signs) = (t.codes().unwrap(), t.signs().unwrap());
                let decoded = decoded.unwrap();
                let row_len = t.rows().0;
                for (i, &x) in values.iter().enumerate() {
                    let scale = scales.as_ref().map(|s| s[i / row_len as usize]);
                    let u = scale.map_or(x, |s| x / s);
                    let code = codes[i];
                    assert_eq!(code, q.code_exact(u.abs()), "code of element {i} ({x})");
                    if matches!(codec, Codec::Log | Codec::Linear) {
                        assert_eq!(code == 0, u == 0.0, "element {i} ({x})");
                    }
                    let sign = (signs[i / 8] >> (i % 8)) & 1 == 1;
                    assert_eq!(sign, code != 0 && u < 0.0, "sign of element {i} ({x})");
                    let m = if sign {
                        -lut[code as usize]
                    } else {
                        lut[code as usize]
                    };
                    let want = scale.map_or(m, |s| m * s);
                    assert_eq!(decoded[i].to_bits(), want.to_bits(), "element {i}");
                }
                // The converter's path: codes straight from the source bytes.
                if let Some(bytes) = bytes {
                    let size = bytes.len() / values.len().max(1);
                    let at = (splits[k] % (values.len() + 1)) / 8 * 8;
                    for cut in [values.len() / 8 * 8, at] {
                        let mut c = vec![0u8; values.len()];
                        let mut s = vec![0u8; signs.len()];
                        let (c0, c1) = c.split_at_mut(cut);
                        let (s0, s1) = s.split_at_mut(cut / 8);
                        let (b0, b1) = bytes.split_at(cut * size);
                        q.encode_bytes(spec.dtype, b0, 0, rs.as_ref(), c0, s0)
                            .expect("encode_bytes of values encode took");
                        q.encode_bytes(spec.dtype, b1, cut as u64, rs.as_ref(), c1, s1)
                            .expect("encode_bytes of values encode took");
                        assert!(c == codes, "encode_bytes codes differ from encode's");
                        assert!(s == signs, "encode_bytes signs differ from encode's");
                    }
                }
            }
            (d, s) => panic!("a write succeeded with data {d:?} for storage {s:?}"),
        }
    }
}

fuzz_target!(|input: Input| {
    let splits: Vec<usize> = input.tensors.iter().map(|t| usize::from(t.split)).collect();
    let (plan, data, expect) = build(input);
    let dir = scratch_dir();
    let path = dir.join("out.qins");
    let mut bad_sign = false;
    let result = write(&path, &plan, &data, None, &mut bad_sign);
    if let Err(e) = &result {
        assert!(!e.to_string().is_empty());
        // Nothing at the target, no temporary file left behind (§18).
        assert_eq!(dir_entries(dir), Vec::<PathBuf>::new(), "after {e}");
        if let WriteError::Misuse { .. } = e {
            assert!(expect.misuse_ok || bad_sign, "correct data refused: {e}");
        }
        return;
    }
    assert!(
        !expect.must_fail && !bad_sign,
        "the writer accepted a mistake: {plan:?}"
    );
    assert_eq!(dir_entries(dir), vec![path.clone()]);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let q = Qins::parse(&bytes).expect("a written file parses");
    check(&q, &plan, &data, &splits);

    // The same plan, pushed in parts, gives the same bytes.
    write(&path, &plan, &data, Some(&splits), &mut bad_sign).expect("the same data in parts");
    let again = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(again == bytes, "writing in parts changed the file");
});

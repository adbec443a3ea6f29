//! Property test: arbitrary tensor sets, written with qins-write and read back with qins-read.
//!
//! Each case is a set of tensors (raw tensors of every dtype of the registry, with random bytes;
//! encoded tensors from F32, F16 and BF16 sources with both codecs, with and without row
//! scales, of shapes of rank 0 to 4 including empty and one-element tensors, and with values
//! from profiles that reach all-zero, constant-magnitude, subnormal, near-`f32::MAX`,
//! signed-zero and consecutive-bit-pattern tensors, some over 2^14 elements so that the
//! encoder's change-point table is used), random assets and metadata, and an alignment of 64 or 4096. The test
//! checks, against references written here from the spec alone:
//!
//! - the layout: every section in canonical order at `align_up(previous_end, alignment)`, zero
//!   padding, section and header CRCs, unused sections all zero, `file_size` exact (§8, §9);
//! - raw tensors bit for bit (§13), assets and metadata exactly;
//! - encoded tensors: `param0`/`param1`, the table, the codes and the sign bits follow §12
//!   computed independently (a code may differ only where `x` is within 1e-9 of a tie), and
//!   decoding follows §11.4 exactly, for the whole tensor and for random sub-ranges, into f32,
//!   bf16 and f16;
//! - `verify()` passes; writing the same set twice (whole, then streamed in random parts) gives
//!   identical bytes; the writer's summary counts the bytes in the file;
//! - a tensor whose values divided by their row scales overflow to infinity is refused, naming
//!   the tensor (§12: the values to encode must be finite).
//!
//! Deterministic regression tests for what the property found follow it.

use std::collections::BTreeMap;
use std::path::Path;

use half::{bf16, f16};
use proptest::prelude::*;
use qins_format::codec::{self, Quantizer, RowScales, Stats};
use qins_format::{Codec, Dtype, Storage};
use qins_read::{DecodeError, Qins};
use qins_write::{Asset, Plan, TensorSpec, WriteError, WriteSummary, Writer};

// ---------------------------------------------------------------------------------------------
// A small deterministic generator for the bulk of the data (proptest chooses the seeds).

struct Rng(u64);

impl Rng {
    /// SplitMix64.
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn uniform(&mut self, a: f64, b: f64) -> f64 {
        a + (b - a) * self.unit()
    }
    /// Uniform in [a, b).
    fn range(&mut self, a: u64, b: u64) -> u64 {
        a + self.next() % (b - a)
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    fn sign(&mut self) -> f32 {
        if self.chance(0.5) {
            -1.0
        } else {
            1.0
        }
    }
    fn gaussian(&mut self) -> f64 {
        let u1 = self.unit().max(1e-300);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

// ---------------------------------------------------------------------------------------------
// The cases.

/// Where an encoded tensor's values come from.
#[derive(Clone, Copy, Debug)]
enum Profile {
    /// Every kind of value below, element by element.
    Mixed,
    /// Only +0.0 and -0.0.
    AllZero,
    /// One magnitude (after row scaling: the scales are powers of two), and zeros.
    Constant,
    /// Gaussian with a random spread, a few zeros.
    Gaussian,
    /// Subnormals, values near `f32::MAX` and very small and large normals.
    Extreme,
    /// Mostly signed zeros, a few non-zero values.
    SignedZeros,
    /// Consecutive bit patterns of the source dtype from a random start, random signs: in a
    /// large tensor every change point of the code function is some element's magnitude.
    Dense,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Raw(Dtype),
    Encoded {
        dtype: Dtype,
        codec: Codec,
        row_scales: bool,
        profile: Profile,
        /// Row scales drawn from every positive finite f32 (subnormal to `f32::MAX`), so that
        /// values divided by them may overflow.
        extreme_scales: bool,
    },
}

#[derive(Clone, Debug)]
struct TensorCase {
    name: String,
    shape: Vec<u64>,
    kind: Kind,
    seed: u64,
}

#[derive(Clone, Debug)]
struct Case {
    tensors: Vec<TensorCase>,
    assets: Vec<(String, Vec<u8>)>,
    metadata: BTreeMap<String, String>,
    alignment: u32,
    /// Seed of the streamed write's part sizes and the sub-ranges decoded.
    seed: u64,
}

fn shape() -> impl Strategy<Value = Vec<u64>> {
    let dim = prop_oneof![1 => Just(0u64), 12 => 1u64..=9, 2 => 10u64..=40];
    let small = prop::collection::vec(dim, 0..=4).prop_map(|mut s| {
        // Keep these small: at most 8000 elements.
        while s.iter().product::<u64>() > 8000 {
            let i = (0..s.len()).max_by_key(|&i| s[i]).unwrap();
            s[i] /= 2;
        }
        s
    });
    prop_oneof![
        12 => small,
        1 => Just(vec![]),
        1 => prop::collection::vec(Just(1u64), 1..=4),
        // Longer than the decoders' 4096-element blocks.
        1 => (2u64..=4, 1025u64..=1700).prop_map(|(a, b)| vec![a, b]),
        // At least 2^14 elements: large enough for the encoder's change-point table.
        1 => (2u64..=3, 8193u64..=9001).prop_map(|(a, b)| vec![a, b]),
    ]
}

fn profile() -> impl Strategy<Value = Profile> {
    prop_oneof![
        3 => Just(Profile::Mixed),
        1 => Just(Profile::AllZero),
        2 => Just(Profile::Constant),
        3 => Just(Profile::Gaussian),
        2 => Just(Profile::Extreme),
        1 => Just(Profile::SignedZeros),
        2 => Just(Profile::Dense),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    let raw = prop::sample::select(Dtype::ALL.to_vec()).prop_map(Kind::Raw);
    let encoded = (
        prop::sample::select(vec![Dtype::F32, Dtype::F16, Dtype::BF16]),
        // The codecs with a formula this file writes out independently (`expected`); the fitted
        // ones (§12.3, §12.4) are checked by qins-format's tests and the conformance goldens.
        prop::sample::select(vec![Codec::Log, Codec::Linear]),
        any::<bool>(),
        profile(),
        prop::bool::weighted(0.15),
    )
        .prop_map(
            |(dtype, codec, row_scales, profile, extreme_scales)| Kind::Encoded {
                dtype,
                codec,
                row_scales,
                profile,
                extreme_scales,
            },
        );
    prop_oneof![1 => raw, 2 => encoded]
}

fn case() -> impl Strategy<Value = Case> {
    let tensor = ("[a-zA-Z0-9_.é-]{1,10}", shape(), kind(), any::<u64>());
    let asset = (
        "([a-z0-9_][a-z0-9_.]{0,5}/){0,2}[a-zA-Z0-9_-]{1,8}",
        prop::collection::vec(any::<u8>(), 0..300),
    );
    (
        prop::collection::vec(tensor, 0..=6),
        prop::collection::vec(asset, 0..=3),
        prop::collection::btree_map("[ -~é\n]{0,8}", ".{0,12}", 0..4),
        prop_oneof![Just(64u32), Just(4096u32)],
        any::<u64>(),
    )
        .prop_map(|(tensors, assets, metadata, alignment, seed)| Case {
            // Names made unique by their position.
            tensors: tensors
                .into_iter()
                .enumerate()
                .map(|(i, (name, shape, kind, seed))| TensorCase {
                    name: format!("{name}#{i}"),
                    shape,
                    kind,
                    seed,
                })
                .collect(),
            assets: assets
                .into_iter()
                .enumerate()
                .map(|(i, (name, data))| (format!("{name}.{i}"), data))
                .collect(),
            metadata,
            alignment,
            seed,
        })
}

// ---------------------------------------------------------------------------------------------
// Materialised tensors.

struct Tensor {
    spec: TensorSpec,
    /// Raw: the bytes.
    raw: Vec<u8>,
    /// Encoded: the values (exactly representable in the source dtype) and row scales.
    values: Vec<f32>,
    scales: Option<Vec<f32>>,
    profile: Option<Profile>,
}

fn numel(shape: &[u64]) -> usize {
    shape.iter().product::<u64>() as usize
}

/// Row length and row count (§11.3), computed here.
fn rows_of(shape: &[u64]) -> (usize, usize) {
    let l = shape.last().copied().unwrap_or(1) as usize;
    (l, numel(shape).checked_div(l).unwrap_or(0))
}

/// `x` rounded to the nearest value of `dtype` (an encodable one), kept finite.
fn round_to(dtype: Dtype, x: f32) -> f32 {
    match dtype {
        Dtype::F32 => x,
        Dtype::BF16 => {
            let h = bf16::from_f32(x);
            if h.is_finite() {
                h.to_f32()
            } else {
                bf16::MAX.to_f32().copysign(x)
            }
        }
        Dtype::F16 => {
            let h = f16::from_f32(x);
            if h.is_finite() {
                h.to_f32()
            } else {
                f16::MAX.to_f32().copysign(x)
            }
        }
        _ => unreachable!(),
    }
}

/// The `i`-th of consecutive bit patterns of `dtype` from `base`, as f32.
fn dense(dtype: Dtype, base: u32, i: usize) -> f32 {
    match dtype {
        Dtype::F32 => f32::from_bits(0x0100_0000 + base.wrapping_add(i as u32) % 0x6F00_0000),
        Dtype::BF16 => {
            bf16::from_bits((0x0080 + base.wrapping_add(i as u32) % 0x7E00) as u16).to_f32()
        }
        _ => f16::from_bits((1 + base.wrapping_add(i as u32) % 0x7BFF) as u16).to_f32(),
    }
}

fn value(profile: Profile, rng: &mut Rng, s: f32, c: f32, sigma: f64) -> f32 {
    let zero = |rng: &mut Rng| 0.0f32.copysign(rng.sign());
    let subnormal = |rng: &mut Rng| f32::from_bits(rng.range(1, 0x80_0000) as u32) * rng.sign();
    // Large, yet finite once divided by a scale of at least 2^-6.
    let huge = |rng: &mut Rng| (f32::MAX * rng.uniform(0.5, 0.99) as f32 * s.min(1.0)) * rng.sign();
    let wide = |rng: &mut Rng| 10f64.powf(rng.uniform(-37.0, 30.0)) as f32 * rng.sign();
    let gauss = |rng: &mut Rng| (rng.gaussian() * sigma) as f32 * s;
    match profile {
        Profile::AllZero => zero(rng),
        Profile::Constant => {
            if rng.chance(0.15) {
                zero(rng)
            } else {
                c * s * rng.sign()
            }
        }
        Profile::Gaussian => {
            if rng.chance(0.05) {
                zero(rng)
            } else {
                gauss(rng)
            }
        }
        Profile::Extreme => match rng.range(0, 4) {
            0 => subnormal(rng),
            1 => huge(rng),
            2 => wide(rng),
            _ => zero(rng),
        },
        Profile::SignedZeros => {
            if rng.chance(0.9) {
                zero(rng)
            } else {
                gauss(rng)
            }
        }
        Profile::Dense => unreachable!("generated by `dense`"),
        Profile::Mixed => match rng.range(0, 8) {
            0 => zero(rng),
            1 => subnormal(rng),
            2 => huge(rng),
            3 => wide(rng),
            4 => f32::MIN_POSITIVE * rng.uniform(1.0, 4.0) as f32 * rng.sign(),
            _ => gauss(rng),
        },
    }
}

fn materialize(tc: &TensorCase) -> Tensor {
    let mut rng = Rng(tc.seed);
    match tc.kind {
        Kind::Raw(dtype) => {
            let mut shape = tc.shape.clone();
            // Sub-byte dtypes need a whole number of bytes (§13.1): even F4 counts, F6 counts
            // a multiple of 4 (3 bytes).
            let per = match dtype.bits() {
                4 => 2,
                6 => 4,
                _ => 1,
            };
            if !numel(&shape).is_multiple_of(per) {
                match shape.last_mut() {
                    Some(d) => *d *= per as u64,
                    None => shape = vec![per as u64],
                }
            }
            let len = numel(&shape) * dtype.bits() as usize / 8;
            let raw = (0..len).map(|_| rng.next() as u8).collect();
            Tensor {
                spec: TensorSpec::new(tc.name.clone(), dtype, shape, Storage::Raw),
                raw,
                values: Vec::new(),
                scales: None,
                profile: None,
            }
        }
        Kind::Encoded {
            dtype,
            codec,
            row_scales,
            profile,
            extreme_scales,
        } => {
            let shape = tc.shape.clone();
            let n = numel(&shape);
            let (l, rows) = rows_of(&shape);
            let scales: Option<Vec<f32>> = row_scales.then(|| {
                (0..rows)
                    .map(|_| match profile {
                        // Powers of two keep `x / s` exactly the constant (or the pattern).
                        Profile::Constant | Profile::Dense => 2f32.powi(rng.range(0, 9) as i32 - 4),
                        _ if extreme_scales => f32::from_bits(rng.range(1, 0x7F80_0000) as u32),
                        _ => 2f64.powf(rng.uniform(-6.0, 6.0)) as f32,
                    })
                    .collect()
            });
            let c = round_to(dtype, 10f64.powf(rng.uniform(-2.0, 2.0)) as f32);
            let sigma = 10f64.powf(rng.uniform(-3.0, 0.0));
            let base = rng.next() as u32;
            let values = (0..n)
                .map(|i| {
                    let s = scales.as_ref().map_or(1.0, |s| s[i / l]);
                    let x = match profile {
                        Profile::Dense => dense(dtype, base, i) * s * rng.sign(),
                        _ => value(profile, &mut rng, s, c, sigma),
                    };
                    round_to(dtype, x)
                })
                .collect();
            Tensor {
                spec: TensorSpec::new(
                    tc.name.clone(),
                    dtype,
                    shape,
                    Storage::Encoded { codec, row_scales },
                ),
                raw: Vec::new(),
                values,
                scales,
                profile: Some(profile),
            }
        }
    }
}

/// The values to encode (§12): each divided by its row's scale, in f32.
fn scaled(t: &Tensor) -> Vec<f32> {
    let (l, _) = rows_of(&t.spec.shape);
    t.values
        .iter()
        .enumerate()
        .map(|(i, &x)| match &t.scales {
            Some(s) => x / s[i / l],
            None => x,
        })
        .collect()
}

fn plan(case: &Case, tensors: &[Tensor]) -> Plan {
    let mut p = Plan::new();
    p.alignment = case.alignment;
    p.tensors = tensors.iter().map(|t| t.spec.clone()).collect();
    p.assets = case
        .assets
        .iter()
        .map(|(name, data)| Asset {
            name: name.clone(),
            data: data.clone(),
        })
        .collect();
    p.metadata = case.metadata.clone();
    p
}

/// Writes every tensor whole: `write_raw` and `encode_tensor`.
fn write_whole(path: &Path, plan: Plan, tensors: &[Tensor]) -> Result<WriteSummary, WriteError> {
    let mut w = Writer::create(path, plan, false)?;
    for t in tensors {
        assert_eq!(
            w.next_tensor().map(|s| s.name.as_str()),
            Some(&*t.spec.name)
        );
        match t.spec.storage {
            Storage::Raw => w.write_raw(&t.raw)?,
            Storage::Encoded { .. } => w.encode_tensor(&t.values, t.scales.as_deref())?,
        }
    }
    assert!(w.next_tensor().is_none());
    w.finish()
}

/// Writes every tensor in parts of random sizes: `write_raw_part`, and `scan`/`Stats::merge`/
/// `Quantizer`/`begin_encoded`/`write_encoded_part` for encoded tensors.
fn write_streamed(path: &Path, plan: Plan, tensors: &[Tensor], rng: &mut Rng) {
    let mut w = Writer::create(path, plan, false).unwrap();
    for t in tensors {
        match t.spec.storage {
            Storage::Raw => {
                // A tensor of zero bytes is completed by one call with no bytes.
                let mut rest = &t.raw[..];
                loop {
                    let k = (rng.range(1, 200) as usize).min(rest.len());
                    w.write_raw_part(&rest[..k]).unwrap();
                    rest = &rest[k..];
                    if rest.is_empty() {
                        break;
                    }
                }
            }
            Storage::Encoded { codec, .. } => {
                let rs = t
                    .scales
                    .as_deref()
                    .map(|s| RowScales::new(s, &t.spec.shape).unwrap());
                let chunk = 8 * rng.range(1, 40) as usize;
                let stats = t
                    .values
                    .chunks(chunk)
                    .enumerate()
                    .map(|(k, c)| codec::scan(c, (k * chunk) as u64, rs.as_ref()).unwrap())
                    .fold(Stats::EMPTY, Stats::merge);
                let q = Quantizer::new(codec, &stats);
                w.begin_encoded(&q, t.scales.as_deref()).unwrap();
                for (k, c) in t.values.chunks(chunk).enumerate() {
                    let mut codes = vec![0u8; c.len()];
                    let mut signs = vec![0u8; c.len().div_ceil(8)];
                    q.encode(c, (k * chunk) as u64, rs.as_ref(), &mut codes, &mut signs)
                        .unwrap();
                    w.write_encoded_part(&codes, &signs).unwrap();
                }
            }
        }
    }
    assert!(w.next_tensor().is_none());
    w.finish().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Independent references, from the spec's text.

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// Checks the header CRC (§8) and the canonical layout (§9): sections in order, each at
/// `align_up(previous_end, alignment)`, padding zero, section CRCs, unused sections zero, and
/// `file_size` the end of the last section.
fn check_layout(b: &[u8], alignment: u32, tensors: &[Tensor], assets: usize) {
    assert_eq!(&b[..8], b"\x89QINS\r\n\x1a");
    assert_eq!(u32_at(b, 12), alignment);
    assert_eq!(u64_at(b, 24), b.len() as u64, "file_size");
    let hs = u64_at(b, 32) as usize;
    assert_eq!(
        u32_at(b, hs - 4),
        crc32fast::hash(&b[..hs - 4]),
        "header crc"
    );
    assert_eq!(u32_at(b, 40) as usize, tensors.len());
    assert_eq!(u32_at(b, 44) as usize, assets);
    let encoded = tensors
        .iter()
        .filter(|t| t.spec.storage != Storage::Raw)
        .count();
    assert_eq!(u32_at(b, 48) as usize, encoded, "lut_count");
    let mut sections = vec![64usize];
    let mut lut_index = 0;
    for (k, t) in tensors.iter().enumerate() {
        let r = 96 + 176 * k;
        let mut used = [true, false, false];
        assert_eq!(b[r + 8], t.spec.dtype.code());
        assert_eq!(usize::from(b[r + 9]), t.spec.shape.len());
        for (d, &s) in t.spec.shape.iter().enumerate() {
            assert_eq!(u64_at(b, r + 16 + 8 * d), s);
        }
        match t.spec.storage {
            Storage::Raw => {
                assert!(b[r + 10..r + 16].iter().all(|&x| x == 0), "codec, flags");
                assert!(
                    b[r + 80..r + 104].iter().all(|&x| x == 0),
                    "params, lut_index"
                );
            }
            Storage::Encoded { codec, row_scales } => {
                assert_eq!(u16::from_le_bytes([b[r + 10], b[r + 11]]), codec.id());
                assert_eq!(u32_at(b, r + 12), u32::from(row_scales));
                assert_eq!(u32_at(b, r + 96), lut_index);
                lut_index += 1;
                used = [true, true, row_scales];
            }
        }
        for (j, u) in used.iter().enumerate() {
            let s = r + 104 + 24 * j;
            if *u {
                sections.push(s);
            } else {
                assert!(b[s..s + 24].iter().all(|&x| x == 0), "unused section");
            }
        }
    }
    for k in 0..assets {
        sections.push(96 + 176 * tensors.len() + 32 * k + 8);
    }
    let a = u64::from(alignment);
    let mut end = hs as u64;
    for s in sections {
        let (off, len, crc) = (u64_at(b, s), u64_at(b, s + 8), u32_at(b, s + 16));
        assert_eq!(u32_at(b, s + 20), 0, "section reserved");
        assert_eq!(off, align_up(end, a), "section at header offset {s}");
        assert_eq!(off % a, 0);
        assert!(
            b[end as usize..off as usize].iter().all(|&x| x == 0),
            "padding"
        );
        let bytes = &b[off as usize..(off + len) as usize];
        assert_eq!(crc32fast::hash(bytes), crc, "crc of section at {s}");
        end = off + len;
    }
    assert_eq!(
        end,
        b.len() as u64,
        "file_size is the end of the last section"
    );
}

/// The writer's accounting is the bytes in the file (DESIGN rule 14).
fn check_summary(s: &WriteSummary, b: &[u8], tensors: &[Tensor], case: &Case) {
    let mut want = WriteSummary {
        file_size: b.len() as u64,
        header_bytes: u64_at(b, 32),
        lut_bytes: 1024 * u64::from(u32_at(b, 48)),
        asset_bytes: case.assets.iter().map(|(_, d)| d.len() as u64).sum(),
        // The header CRC: the 4 bytes that end the header block (§8).
        header_crc32: u32_at(b, u64_at(b, 32) as usize - 4),
        ..WriteSummary::default()
    };
    for t in tensors {
        let n = numel(&t.spec.shape) as u64;
        match t.spec.storage {
            Storage::Raw => want.raw_bytes += t.raw.len() as u64,
            Storage::Encoded { row_scales, .. } => {
                want.code_bytes += n;
                want.sign_bytes += n.div_ceil(8);
                if row_scales {
                    want.scale_bytes += 4 * rows_of(&t.spec.shape).1 as u64;
                }
            }
        }
    }
    want.padding_bytes = want.file_size
        - want.header_bytes
        - want.lut_bytes
        - want.code_bytes
        - want.sign_bytes
        - want.scale_bytes
        - want.raw_bytes
        - want.asset_bytes;
    assert_eq!(s, &want, "write summary");
}

/// The parameters, table and codes that §12 prescribes, computed here in f64. `alt[i]` is the
/// other rounding of `x` where `x` is within 1e-9 of a half-integer (two conforming writers may
/// disagree there, §12.1).
struct Expected {
    params: [f64; 2],
    lut: [f32; 256],
    codes: Vec<u8>,
    alt: Vec<Option<u8>>,
    signs: Vec<u8>,
}

fn expected(codec: Codec, u: &[f32]) -> Expected {
    let nonzero = || u.iter().map(|v| v.abs()).filter(|&m| m != 0.0);
    let min = nonzero().fold(f32::INFINITY, f32::min);
    let max = nonzero().fold(0.0f32, f32::max);
    let any = nonzero().next().is_some();
    let round = |x: f64| -> (u8, Option<u8>) {
        let c = |y: f64| y.clamp(1.0, 255.0) as u8;
        let r = x.round_ties_even();
        let frac = x - x.floor();
        let alt = ((frac - 0.5).abs() < 1e-9).then(|| {
            let other = if r == x.floor() { x.ceil() } else { x.floor() };
            c(other)
        });
        (c(r), alt)
    };
    let mut lut = [0f32; 256];
    type CodeFn = Box<dyn Fn(f32) -> (u8, Option<u8>)>;
    let (params, code): ([f64; 2], CodeFn) = match codec {
        Codec::Log => {
            let (lo, hi) = if any {
                (f64::from(min).ln(), f64::from(max).ln())
            } else {
                (0.0, 0.0)
            };
            for (c, v) in lut.iter_mut().enumerate().skip(1) {
                *v = (lo + ((255 - c) as f64 / 254.0) * (hi - lo)).exp() as f32;
            }
            let code = move |m: f32| {
                if hi == lo {
                    (1, None)
                } else {
                    round(255.0 - 254.0 * (f64::from(m).ln() - lo) / (hi - lo))
                }
            };
            ([lo, hi], Box::new(code))
        }
        Codec::Linear => {
            let max_abs = f64::from(max);
            for (c, v) in lut.iter_mut().enumerate().skip(1) {
                *v = (((c - 1) as f64 / 254.0) * max_abs) as f32;
            }
            (
                [max_abs, 0.0],
                Box::new(move |m: f32| round(f64::from(m) / max_abs * 254.0 + 1.0)),
            )
        }
        Codec::Lloyd | Codec::LloydRows => unreachable!("{codec} is not drawn by `kind`"),
    };
    let mut e = Expected {
        params,
        lut,
        codes: Vec::with_capacity(u.len()),
        alt: Vec::with_capacity(u.len()),
        signs: vec![0; u.len().div_ceil(8)],
    };
    for (i, &v) in u.iter().enumerate() {
        let m = v.abs();
        let (c, alt) = if m == 0.0 { (0, None) } else { code(m) };
        e.codes.push(c);
        e.alt.push(alt);
        if m != 0.0 && v.is_sign_negative() {
            e.signs[i / 8] |= 1 << (i % 8);
        }
    }
    e
}

/// The decode rule (§11.4), element by element.
fn decode_ref(
    lut: &[f32; 256],
    codes: &[u8],
    signs: &[u8],
    scales: Option<(&[f32], usize)>,
) -> Vec<f32> {
    (0..codes.len())
        .map(|i| {
            let m = lut[usize::from(codes[i])];
            let v = if signs[i / 8] >> (i % 8) & 1 == 1 {
                -m
            } else {
                m
            };
            match scales {
                Some((s, l)) => v * s[i / l],
                None => v,
            }
        })
        .collect()
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

// ---------------------------------------------------------------------------------------------
// The property.

fn round_trip(case: &Case) -> Result<(), TestCaseError> {
    let tensors: Vec<Tensor> = case.tensors.iter().map(materialize).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.qins");

    // A tensor whose scaled values overflow must be refused, naming it (§12).
    let refused = tensors
        .iter()
        .find(|t| scaled(t).iter().any(|u| !u.is_finite()));
    let written = write_whole(&path, plan(case, &tensors), &tensors);
    if let Some(bad) = refused {
        let e = written.expect_err("a tensor whose scaled values overflow was written");
        prop_assert!(
            matches!(&e, WriteError::Encode { tensor, .. } if *tensor == bad.spec.name),
            "{e}"
        );
        prop_assert!(e.to_string().contains(&bad.spec.name));
        prop_assert!(!path.exists(), "a refused write left a file");
        return Ok(());
    }
    let summary = written.unwrap();
    let bytes = std::fs::read(&path).unwrap();
    check_summary(&summary, &bytes, &tensors, case);

    // Determinism: the same set, written again in parts, gives the same bytes.
    let path2 = dir.path().join("b.qins");
    write_streamed(&path2, plan(case, &tensors), &tensors, &mut Rng(case.seed));
    prop_assert!(std::fs::read(&path2).unwrap() == bytes, "two writes differ");

    check_layout(&bytes, case.alignment, &tensors, case.assets.len());

    // The mapped file is the same bytes; a buffer at an odd address parses the same (§2).
    let mapped = qins_read::open(&path).unwrap();
    prop_assert!(mapped.bytes() == bytes.as_slice());
    mapped.parse().unwrap().verify().unwrap();
    let mut odd = vec![0u8; bytes.len() + 1];
    odd[1..].copy_from_slice(&bytes);
    Qins::parse(&odd[1..]).unwrap().verify().unwrap();

    let q = Qins::parse(&bytes).unwrap();
    q.verify().unwrap();
    prop_assert_eq!(q.alignment(), case.alignment);
    prop_assert_eq!(q.version(), (1, 0));
    prop_assert_eq!(q.tensor_count(), tensors.len());
    let assets: Vec<(&str, &[u8])> = q.assets().collect();
    let want: Vec<(&str, &[u8])> = case
        .assets
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    prop_assert_eq!(assets, want);
    prop_assert_eq!(q.metadata(), &case.metadata);

    let mut rng = Rng(case.seed ^ 0x5555);
    for (t, v) in tensors.iter().zip(q.tensors()) {
        prop_assert_eq!(v.name(), t.spec.name.as_str());
        prop_assert_eq!(q.tensor(&t.spec.name).map(|x| x.name()), Some(v.name()));
        prop_assert_eq!(v.dtype(), t.spec.dtype);
        prop_assert_eq!(v.shape(), t.spec.shape.as_slice());
        prop_assert_eq!(v.storage(), t.spec.storage);
        let n = numel(&t.spec.shape);
        prop_assert_eq!(v.numel(), n as u64);
        match t.spec.storage {
            Storage::Raw => {
                prop_assert_eq!(v.raw_bytes(), Some(t.raw.as_slice()));
                prop_assert!(v.codes().is_none() && v.lut().is_none());
                let not_encoded = matches!(
                    v.decode_f32(0, &mut []),
                    Err(DecodeError::NotEncoded { .. })
                );
                prop_assert!(not_encoded, "raw tensor decoded");
            }
            Storage::Encoded { codec, .. } => {
                check_encoded(t, &v, codec, &mut rng)?;
            }
        }
    }
    Ok(())
}

fn check_encoded(
    t: &Tensor,
    v: &qins_read::TensorView<'_>,
    codec: Codec,
    rng: &mut Rng,
) -> Result<(), TestCaseError> {
    let name = &t.spec.name;
    let n = t.values.len();
    let u = scaled(t);
    let e = expected(codec, &u);
    prop_assert_eq!(v.codec(), Some(codec));
    prop_assert!(v.raw_bytes().is_none());
    let [p0, p1] = v.params();
    prop_assert!(
        p0.to_bits() == e.params[0].to_bits() && p1.to_bits() == e.params[1].to_bits(),
        "{}: params {:?}, expected {:?}",
        name,
        v.params(),
        e.params
    );
    if matches!(t.profile, Some(Profile::Constant)) && codec == Codec::Log {
        prop_assert_eq!(p0, p1, "constant magnitude: log_max == log_min");
    }
    let lut = v.lut().unwrap();
    prop_assert_eq!(lut[0].to_bits(), 0);
    for (c, (got, want)) in lut.iter().zip(&e.lut).enumerate() {
        prop_assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "{}: LUT[{}] is {}, expected {}",
            name,
            c,
            got,
            want
        );
    }
    let codes = v.codes().unwrap();
    let signs = v.signs().unwrap();
    prop_assert_eq!(codes.len(), n);
    for i in 0..n {
        prop_assert!(
            codes[i] == e.codes[i] || Some(codes[i]) == e.alt[i],
            "{}: code[{}] of u = {:e} is {}, expected {}",
            name,
            i,
            u[i],
            codes[i],
            e.codes[i]
        );
    }
    prop_assert_eq!(signs, e.signs.as_slice(), "{}: sign bits", name);
    let (l, _) = rows_of(&t.spec.shape);
    let scales = v.row_scales();
    match (&t.scales, &scales) {
        (Some(a), Some(b)) => prop_assert!(same_bits(a, b), "{}: row scales", name),
        (None, None) => {}
        _ => prop_assert!(false, "{}: row scales present in one only", name),
    }

    // Decoding, whole: the rule of §11.4 applied to the file's own table, codes and signs.
    let want = decode_ref(lut, codes, signs, scales.as_deref().map(|s| (s, l)));
    let got = v.to_f32_vec().unwrap();
    prop_assert!(same_bits(&got, &want), "{}: decode_f32", name);
    let mut bf = vec![bf16::ZERO; n];
    let mut h = vec![f16::ZERO; n];
    v.decode_bf16(0, &mut bf).unwrap();
    v.decode_f16(0, &mut h).unwrap();
    for i in 0..n {
        prop_assert_eq!(
            bf[i].to_bits(),
            bf16::from_f32(want[i]).to_bits(),
            "{}: bf16 {}",
            name,
            i
        );
        prop_assert_eq!(
            h[i].to_bits(),
            f16::from_f32(want[i]).to_bits(),
            "{}: f16 {}",
            name,
            i
        );
    }

    // Random sub-ranges equal the slices of the whole.
    for _ in 0..4 {
        let a = rng.range(0, n as u64 + 1) as usize;
        let b = rng.range(a as u64, n as u64 + 1) as usize;
        let mut out = vec![0f32; b - a];
        v.decode_f32(a as u64, &mut out).unwrap();
        prop_assert!(
            same_bits(&out, &want[a..b]),
            "{}: decode_f32 {}..{}",
            name,
            a,
            b
        );
        let mut bf = vec![bf16::ZERO; b - a];
        v.decode_bf16(a as u64, &mut bf).unwrap();
        let mut h = vec![f16::ZERO; b - a];
        v.decode_f16(a as u64, &mut h).unwrap();
        for k in 0..b - a {
            prop_assert_eq!(bf[k].to_bits(), bf16::from_f32(want[a + k]).to_bits());
            prop_assert_eq!(h[k].to_bits(), f16::from_f32(want[a + k]).to_bits());
        }
    }
    // Whole rows.
    if l > 0 && n > 0 {
        let rows = n / l;
        let r0 = rng.range(0, rows as u64) as usize;
        let r1 = rng.range(r0 as u64, rows as u64 + 1) as usize;
        let mut out = vec![0f32; (r1 - r0) * l];
        v.decode_rows_f32(r0 as u64, &mut out).unwrap();
        prop_assert!(
            same_bits(&out, &want[r0 * l..r1 * l]),
            "{}: rows {}..{}",
            name,
            r0,
            r1
        );
    }
    // Past the end.
    let out_of_range = matches!(
        v.decode_f32(n as u64, &mut [0.0]),
        Err(DecodeError::OutOfRange { .. })
    );
    prop_assert!(out_of_range, "decoded past the end");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn write_then_read(case in case()) {
        round_trip(&case)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic regressions for what the property found.

fn one_tensor(name: &str, shape: Vec<u64>, storage: Storage) -> Plan {
    let mut p = Plan::new();
    p.alignment = 64;
    p.tensors
        .push(TensorSpec::new(name, Dtype::F32, shape, storage));
    p
}

#[test]
fn empty_encoded_tensors_round_trip() {
    for (shape, row_scales) in [
        (vec![0u64], false),
        (vec![3, 0], true),
        (vec![0, 4], true),
        (vec![2, 0, 5], false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.qins");
        let rows = rows_of(&shape).1;
        let mut p = one_tensor(
            "empty",
            shape.clone(),
            Storage::Encoded {
                codec: Codec::Log,
                row_scales,
            },
        );
        p.tensors.push(TensorSpec::new(
            "after",
            Dtype::F32,
            vec![2],
            Storage::Encoded {
                codec: Codec::Linear,
                row_scales: false,
            },
        ));
        let mut w = Writer::create(&path, p, false).unwrap();
        let scales = vec![1.0f32; rows];
        w.encode_tensor(&[], row_scales.then_some(&scales[..]))
            .unwrap();
        w.encode_tensor(&[1.0, -2.0], None).unwrap();
        w.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let q = Qins::parse(&bytes).unwrap();
        q.verify().unwrap();
        let t = q.tensor("empty").unwrap();
        assert_eq!(t.shape(), shape.as_slice());
        assert_eq!(t.params(), [0.0, 0.0]);
        assert_eq!(t.to_f32_vec().unwrap(), Vec::<f32>::new());
        assert_eq!(
            q.tensor("after").unwrap().to_f32_vec().unwrap(),
            [1.0, -2.0]
        );
    }
}

#[test]
fn encode_tensor_refuses_a_wrong_value_count() {
    for values in [&[1.0f32; 7][..], &[1.0; 8], &[1.0; 9], &[]] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.qins");
        let p = one_tensor(
            "w",
            vec![2, 4],
            Storage::Encoded {
                codec: Codec::Log,
                row_scales: false,
            },
        );
        let mut w = Writer::create(&path, p, false).unwrap();
        if values.len() == 8 {
            w.encode_tensor(values, None).unwrap();
            w.finish().unwrap();
            continue;
        }
        let e = w.encode_tensor(values, None).unwrap_err();
        assert!(
            matches!(&e, WriteError::Misuse { tensor, .. } if tensor == "w"),
            "{e}"
        );
        // The writer is still usable: the right call succeeds.
        w.encode_tensor(&[1.0; 8], None).unwrap();
        w.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        Qins::parse(&bytes).unwrap().verify().unwrap();
    }
}

#[test]
fn scaled_overflow_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.qins");
    let p = one_tensor(
        "big",
        vec![2, 2],
        Storage::Encoded {
            codec: Codec::Log,
            row_scales: true,
        },
    );
    let mut w = Writer::create(&path, p, false).unwrap();
    let e = w
        .encode_tensor(&[1.0, 2.0, 3.0e38, 1.0], Some(&[1.0, 0.5]))
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(&e, WriteError::Encode { tensor, .. } if tensor == "big"),
        "{msg}"
    );
    assert!(msg.contains("index 2"), "{msg}");
    drop(w);
    assert!(!path.exists());
    // The streaming API refuses it at the scan.
    let shape = [2u64, 2];
    let rs = RowScales::new(&[1.0, 0.5], &shape).unwrap();
    assert!(codec::scan(&[1.0, 2.0, 3.0e38, 1.0], 0, Some(&rs)).is_err());
}

#[test]
fn write_encoded_part_refuses_invalid_sign_bits() {
    // 10 elements: the last sign byte has 6 unused bits (§11.2), and a code-0 element must have
    // sign 0. The streaming API must not write a file that verification would refuse.
    let q = Quantizer::new(Codec::Log, &codec::scan(&[1.0, 2.0], 0, None).unwrap());
    let codes = [1u8, 0, 3, 4, 5, 6, 7, 8, 9, 10];
    for (signs, what) in [
        ([0u8, 0b0100], "unused sign bits"),
        ([0b10, 0], "sign bit of a zero code"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.qins");
        let p = one_tensor(
            "s",
            vec![10],
            Storage::Encoded {
                codec: Codec::Log,
                row_scales: false,
            },
        );
        let mut w = Writer::create(&path, p, false).unwrap();
        w.begin_encoded(&q, None).unwrap();
        let e = w.write_encoded_part(&codes, &signs).unwrap_err();
        assert!(
            matches!(&e, WriteError::Misuse { tensor, .. } if tensor == "s"),
            "{what}: {e}"
        );
        // Valid bits are still accepted.
        w.write_encoded_part(&codes, &[0b1000_0001, 0b10]).unwrap();
        w.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        Qins::parse(&bytes).unwrap().verify().unwrap();
    }
}

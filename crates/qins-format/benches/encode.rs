//! The encode passes on one core, pass by pass, against memcpy of the source bytes.
//!
//! Builds a tensor of `QINS_BENCH_WEIGHTS` weights (default 16 Mi) in rows of
//! `QINS_BENCH_COLS` (default 2048), of a realistic distribution (Gaussian, σ = 0.02, one in
//! 1000 an outlier at 20σ, one in 50 zero), in F32, BF16 and F16, and for the default
//! `lloyd-rows` and for `log` measures, on the calling thread, over 1 Mi-element chunks as the
//! converter splits a tensor:
//!
//! - `memcpy`: `copy_from_slice` of the source bytes (the yardstick: reading the input once);
//! - `row maxima`: `RowMaxima::scan_bytes` of every chunk, merged, into the row scales
//!   (`lloyd-rows` only);
//! - `statistics`: `codec::scan_bytes` of every chunk, merged; for BF16 with row scales,
//!   `codec::scan_row_groups` of the rows sorted by scale, as the converter gathers them (checked
//!   equal to the chunks');
//! - `fit`: `Quantizer::new` (once per tensor, whatever its size: its ns/weight is for this
//!   tensor's size);
//! - `codes`: `Quantizer::encode_bytes` of every chunk.
//!
//! Criterion measures each; then a paired pass runs every pass of every case once per round,
//! 15 rounds interleaved (so that a shared machine's drift touches every pass alike), and
//! prints the median ns/weight of each pass, their sum, and weights/s. The paired pass counts
//! the thread's time on a CPU (Linux's `/proc/thread-self/schedstat`, each measurement a pass
//! repeated for at least 50 ms), not the wall clock, so that other jobs on a shared machine
//! do not count (they still share the caches). The codes are checked
//! against `Quantizer::encode` of the values converted to f32.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use qins_format::codec::{scan_bytes, scan_row_groups, RowMaxima, RowScales, Stats};
use qins_format::{Codec, Dtype, Quantizer};

const CHUNK: usize = 1 << 20;
const ROUNDS: usize = 15;

/// xorshift64* and a Gaussian by Box-Muller: enough to look like weights.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn weight(&mut self) -> f32 {
        let g = (-2.0 * self.unit().ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos();
        let r = self.next() % 1000;
        let v = if r == 0 {
            20.0 * 0.02 * g.signum()
        } else if r < 20 {
            0.0
        } else {
            0.02 * g
        };
        v as f32
    }
}

fn source(dtype: Dtype, values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| match dtype {
            Dtype::F32 => v.to_le_bytes().to_vec(),
            Dtype::BF16 => half::bf16::from_f32(v).to_le_bytes().to_vec(),
            _ => half::f16::from_f32(v).to_le_bytes().to_vec(),
        })
        .collect()
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The passes, in the order a conversion runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Pass {
    Memcpy,
    RowMaxima,
    Statistics,
    Fit,
    Codes,
}

impl Pass {
    const ALL: [Pass; 5] = [
        Pass::Memcpy,
        Pass::RowMaxima,
        Pass::Statistics,
        Pass::Fit,
        Pass::Codes,
    ];

    fn name(self) -> &'static str {
        match self {
            Pass::Memcpy => "memcpy",
            Pass::RowMaxima => "row maxima",
            Pass::Statistics => "statistics",
            Pass::Fit => "fit",
            Pass::Codes => "codes",
        }
    }
}

/// One tensor in one dtype, for one codec, with what each pass needs from the one before.
struct Case {
    dtype: Dtype,
    codec: Codec,
    bytes: Vec<u8>,
    shape: [u64; 2],
    scales: Option<Vec<f32>>,
    stats: Stats,
    q: Quantizer,
    copy: Vec<u8>,
    codes: Vec<u8>,
    signs: Vec<u8>,
}

impl Case {
    fn new(dtype: Dtype, codec: Codec, values: &[f32], cols: usize) -> Case {
        let n = values.len();
        let bytes = source(dtype, values);
        let shape = [(n / cols) as u64, cols as u64];
        let mut c = Case {
            dtype,
            codec,
            copy: vec![0; bytes.len()],
            bytes,
            shape,
            scales: None,
            stats: Stats::EMPTY,
            q: Quantizer::new(codec, &Stats::EMPTY),
            codes: vec![0; n],
            signs: vec![0; n.div_ceil(8)],
        };
        for pass in Pass::ALL {
            c.run(pass);
        }
        // The statistics as the converter gathers them are those of every chunk, merged.
        let rs = c.rs();
        let chunked = c
            .bytes
            .chunks(CHUNK * c.es())
            .enumerate()
            .map(|(k, b)| scan_bytes(codec, dtype, b, (k * CHUNK) as u64, rs.as_ref()).unwrap())
            .fold(Stats::EMPTY, Stats::merge);
        assert!(chunked == c.stats, "{dtype} {codec} statistics");
        // The byte loops give what the f32 loops give for the converted values.
        let mut v = vec![0f32; n];
        dtype.to_f32(&c.bytes, &mut v).unwrap();
        let rs = c.rs();
        let (mut codes, mut signs) = (vec![0u8; n], vec![0u8; n.div_ceil(8)]);
        c.q.encode(&v, 0, rs.as_ref(), &mut codes, &mut signs)
            .unwrap();
        assert!(codes == c.codes && signs == c.signs, "{dtype} {codec}");
        c
    }

    fn es(&self) -> usize {
        (self.dtype.bits() / 8) as usize
    }

    fn rs(&self) -> Option<RowScales<'_>> {
        self.scales
            .as_deref()
            .map(|s| RowScales::new(s, &self.shape).unwrap())
    }

    fn applies(&self, pass: Pass) -> bool {
        pass != Pass::RowMaxima || self.codec.uses_row_scales()
    }

    fn run(&mut self, pass: Pass) {
        let (dtype, es, shape) = (self.dtype, self.es(), self.shape);
        match pass {
            Pass::Memcpy => black_box(&mut self.copy).copy_from_slice(black_box(&self.bytes)),
            Pass::RowMaxima => {
                if !self.codec.uses_row_scales() {
                    return;
                }
                let scales = self
                    .bytes
                    .chunks(CHUNK * es)
                    .enumerate()
                    .map(|(k, b)| {
                        RowMaxima::scan_bytes(dtype, black_box(b), (k * CHUNK) as u64, &shape)
                            .unwrap()
                    })
                    .fold(RowMaxima::EMPTY, RowMaxima::merge)
                    .into_scales(&shape)
                    .unwrap();
                self.scales = Some(scales);
            }
            Pass::Statistics => {
                let rs = self.rs();
                // A BF16 source with row scales: as the converter gathers them, by groups of
                // rows that share a scale.
                if let (Some(rs), Dtype::BF16) = (&rs, dtype) {
                    let mut rows: Vec<u64> = (0..shape[0]).collect();
                    rows.sort_unstable_by_key(|&r| rs.scales()[r as usize].to_bits());
                    let bytes = black_box(&self.bytes[..]);
                    if let Some(st) = scan_row_groups(self.codec, dtype, bytes, rs, &rows) {
                        self.stats = st;
                        return;
                    }
                }
                let st = self
                    .bytes
                    .chunks(CHUNK * es)
                    .enumerate()
                    .map(|(k, b)| {
                        scan_bytes(
                            self.codec,
                            dtype,
                            black_box(b),
                            (k * CHUNK) as u64,
                            rs.as_ref(),
                        )
                        .unwrap()
                    })
                    .fold(Stats::EMPTY, Stats::merge);
                self.stats = st;
            }
            Pass::Fit => self.q = Quantizer::new(self.codec, black_box(&self.stats)),
            Pass::Codes => {
                let rs = self
                    .scales
                    .as_deref()
                    .map(|s| RowScales::new(s, &shape).unwrap());
                for (k, ((b, c), s)) in self
                    .bytes
                    .chunks(CHUNK * es)
                    .zip(self.codes.chunks_mut(CHUNK))
                    .zip(self.signs.chunks_mut(CHUNK / 8))
                    .enumerate()
                {
                    self.q
                        .encode_bytes(dtype, black_box(b), (k * CHUNK) as u64, rs.as_ref(), c, s)
                        .unwrap();
                }
            }
        }
    }

    fn label(&self) -> String {
        format!("{} {}", self.dtype.name(), self.codec.name())
    }
}

/// This thread's time on a CPU so far, in seconds, from Linux's `/proc/thread-self/schedstat`
/// (nanoseconds, whatever else runs on the machine); `None` elsewhere.
fn cpu_time() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 * 1e-9)
}

/// Seconds of `f`: on-CPU time where Linux gives it, else wall time.
fn time(f: impl FnOnce()) -> f64 {
    match cpu_time() {
        Some(a) => {
            f();
            cpu_time().map_or(0.0, |b| b - a)
        }
        None => {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        }
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let cols = env("QINS_BENCH_COLS", 2048);
    let n = env("QINS_BENCH_WEIGHTS", 16 << 20).next_multiple_of(cols);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let values: Vec<f32> = (0..n).map(|_| rng.weight()).collect();
    let mut cases: Vec<Case> = [Codec::LloydRows, Codec::Log]
        .into_iter()
        .flat_map(|codec| [Dtype::F32, Dtype::BF16, Dtype::F16].map(|dtype| (dtype, codec)))
        .map(|(dtype, codec)| Case::new(dtype, codec, &values, cols))
        .collect();

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    for case in &mut cases {
        let mut g = c.benchmark_group(format!("encode {}", case.label()));
        g.throughput(Throughput::Elements(n as u64));
        let passes: Vec<Pass> = Pass::ALL.into_iter().filter(|&p| case.applies(p)).collect();
        for pass in passes {
            g.bench_function(pass.name(), |b| b.iter(|| case.run(pass)));
        }
        g.finish();
    }
    c.final_summary();

    // The paired pass. Each measurement repeats its pass for at least 50 ms (of wall time, on
    // a first run), since Linux updates a running thread's CPU time at its scheduler ticks.
    let mut reps: BTreeMap<(usize, Pass), u32> = BTreeMap::new();
    for (i, case) in cases.iter_mut().enumerate() {
        for pass in Pass::ALL {
            let start = Instant::now();
            case.run(pass);
            let once = start.elapsed().as_secs_f64().max(1e-6);
            reps.insert((i, pass), (0.05 / once).ceil().clamp(1.0, 1000.0) as u32);
        }
    }
    let mut t: BTreeMap<(usize, Pass), Vec<f64>> = BTreeMap::new();
    for _ in 0..ROUNDS {
        for (i, case) in cases.iter_mut().enumerate() {
            let passes: Vec<Pass> = Pass::ALL.into_iter().filter(|&p| case.applies(p)).collect();
            for pass in passes {
                let r = reps[&(i, pass)];
                let secs = time(|| (0..r).for_each(|_| case.run(pass)));
                t.entry((i, pass)).or_default().push(secs / f64::from(r));
            }
        }
    }
    println!();
    println!(
        "encode passes on one core: {n} weights in rows of {cols}, {} ns per weight (medians of {ROUNDS} interleaved rounds)",
        if cpu_time().is_some() { "on-CPU" } else { "wall-clock" }
    );
    print!("{:<16}", "case");
    for pass in Pass::ALL {
        print!(" {:>10}", pass.name());
    }
    println!(" {:>10} {:>10}", "all passes", "Mweight/s");
    for (i, case) in cases.iter().enumerate() {
        print!("{:<16}", case.label());
        let mut sum = 0.0;
        for pass in Pass::ALL {
            match t.get(&(i, pass)) {
                Some(v) => {
                    let ns = median(v) / n as f64 * 1e9;
                    if pass != Pass::Memcpy {
                        sum += ns;
                    }
                    print!(" {ns:>10.3}");
                }
                None => print!(" {:>10}", "-"),
            }
        }
        println!(" {sum:>10.3} {:>10.0}", 1e3 / sum);
    }
}

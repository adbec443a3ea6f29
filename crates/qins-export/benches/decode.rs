//! Decode throughput against memcpy, in one run.
//!
//! Writes one encoded tensor of `QINS_BENCH_ROWS × 8192` weights (default 8192 rows: 64M
//! weights, 256 MiB as f32) to a temporary `.qins`, maps it with `qins-read`, and measures:
//!
//! - `decode_1core/{f32,bf16}`: `TensorView::decode_f32` / `decode_bf16` of the whole tensor
//!   on the calling thread;
//! - `decode_Ncores/{f32,bf16}`: the same, split into row chunks of 64 rows decoded by rayon on
//!   every core (`TensorView::decode_rows_*`);
//! - `memcpy_{f32,bf16}_size`: `copy_from_slice` of a buffer of the decoded output's size (4
//!   bytes per weight for f32, 2 for bf16) into another, on one core and on every core: the
//!   bandwidth yardstick.
//!
//! Criterion prints each measurement. Then, because a shared machine's load drifts between
//! criterion's benchmarks, a paired pass runs each decode and its memcpy back to back, 15 times
//! interleaved, and prints weights/s, output GB/s and the ratio of decode to memcpy bandwidth
//! (medians), beside the same figures from criterion's samples.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use half::bf16;
use qins_format::codec::Stats;
use qins_format::{Codec, Dtype, Quantizer, Storage};
use qins_read::TensorView;
use qins_write::{Plan, TensorSpec, Writer};
use rayon::prelude::*;

const COLS: usize = 8192;
/// Rows per rayon task: 64 rows of 8192 weights, 2 MiB of f32 output.
const ROWS_PER_TASK: usize = 64;

/// Mean seconds per iteration of each criterion sample, by operation.
static SAMPLES: Mutex<BTreeMap<&'static str, Vec<f64>>> = Mutex::new(BTreeMap::new());

/// One measured operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Decode { all_cores: bool, bf16: bool },
    Memcpy { all_cores: bool, bf16: bool },
}

impl Op {
    fn id(self) -> &'static str {
        match self {
            Op::Decode {
                all_cores: false,
                bf16: false,
            } => "1core/f32",
            Op::Decode {
                all_cores: false,
                bf16: true,
            } => "1core/bf16",
            Op::Decode {
                all_cores: true,
                bf16: false,
            } => "ncores/f32",
            Op::Decode {
                all_cores: true,
                bf16: true,
            } => "ncores/bf16",
            Op::Memcpy {
                all_cores: false,
                bf16: false,
            } => "1core/memcpy_f32_size",
            Op::Memcpy {
                all_cores: false,
                bf16: true,
            } => "1core/memcpy_bf16_size",
            Op::Memcpy {
                all_cores: true,
                bf16: false,
            } => "ncores/memcpy_f32_size",
            Op::Memcpy {
                all_cores: true,
                bf16: true,
            } => "ncores/memcpy_bf16_size",
        }
    }

    fn name(self) -> &'static str {
        self.id().split('/').nth(1).unwrap()
    }
}

/// Every buffer, written once before timing so that page faults are not measured.
struct Buffers {
    out_f32: Vec<f32>,
    out_bf16: Vec<bf16>,
    src_f32: Vec<f32>,
    dst_f32: Vec<f32>,
    src_bf16: Vec<bf16>,
    dst_bf16: Vec<bf16>,
}

fn run(op: Op, t: &TensorView<'_>, b: &mut Buffers) {
    match op {
        Op::Decode {
            all_cores: false,
            bf16: false,
        } => t.decode_f32(0, black_box(&mut b.out_f32)).expect("decode"),
        Op::Decode {
            all_cores: false,
            bf16: true,
        } => t
            .decode_bf16(0, black_box(&mut b.out_bf16))
            .expect("decode"),
        Op::Decode {
            all_cores: true,
            bf16: false,
        } => decode_rows_par_f32(t, black_box(&mut b.out_f32)),
        Op::Decode {
            all_cores: true,
            bf16: true,
        } => decode_rows_par_bf16(t, black_box(&mut b.out_bf16)),
        Op::Memcpy {
            all_cores: false,
            bf16: false,
        } => black_box(&mut b.dst_f32).copy_from_slice(black_box(&b.src_f32)),
        Op::Memcpy {
            all_cores: false,
            bf16: true,
        } => black_box(&mut b.dst_bf16).copy_from_slice(black_box(&b.src_bf16)),
        Op::Memcpy {
            all_cores: true,
            bf16: false,
        } => copy_par(black_box(&mut b.dst_f32), black_box(&b.src_f32)),
        Op::Memcpy {
            all_cores: true,
            bf16: true,
        } => copy_par(black_box(&mut b.dst_bf16), black_box(&b.src_bf16)),
    }
}

/// Seconds of one run of `op`.
fn time_once(op: Op, t: &TensorView<'_>, b: &mut Buffers) -> f64 {
    let start = Instant::now();
    run(op, t, b);
    start.elapsed().as_secs_f64()
}

fn rows() -> usize {
    std::env::var("QINS_BENCH_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8192)
}

/// A pseudo-random stream (xorshift64*), enough to make codes and signs look like data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Writes a file holding one encoded `rows × COLS` tensor with random codes and signs.
fn build_file(path: &std::path::Path, rows: usize) {
    let n = (rows * COLS) as u64;
    let mut plan = Plan::new();
    plan.tensors.push(TensorSpec::new(
        "w",
        Dtype::BF16,
        vec![rows as u64, COLS as u64],
        Storage::Encoded {
            codec: Codec::Log,
            row_scales: false,
        },
    ));
    let stats = Stats {
        min_nonzero: 1e-5,
        max_abs: 0.5,
        nonzero: n,
        count: n,
        ..Stats::EMPTY
    };
    let q = Quantizer::new(Codec::Log, &stats);
    let mut w = Writer::create(path, plan, true).expect("create bench file");
    w.begin_encoded(&q, None).expect("begin");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let part = 1 << 20;
    let mut codes = vec![0u8; part];
    let mut signs = vec![0u8; part / 8];
    for _ in 0..(n as usize).div_ceil(part) {
        for c in codes.chunks_exact_mut(8) {
            c.copy_from_slice(&rng.next().to_le_bytes());
        }
        for (s, c) in signs.iter_mut().zip(codes.chunks_exact(8)) {
            // Sign 0 where the code is 0 (§11.2).
            let mut b = rng.next() as u8;
            for (j, &code) in c.iter().enumerate() {
                if code == 0 {
                    b &= !(1 << j);
                }
            }
            *s = b;
        }
        w.write_encoded_part(&codes, &signs).expect("write part");
    }
    w.finish().expect("finish bench file");
}

fn decode_rows_par_f32(t: &TensorView<'_>, out: &mut [f32]) {
    out.par_chunks_mut(ROWS_PER_TASK * COLS)
        .enumerate()
        .for_each(|(k, chunk)| {
            t.decode_rows_f32((k * ROWS_PER_TASK) as u64, chunk)
                .expect("decode");
        });
}

fn decode_rows_par_bf16(t: &TensorView<'_>, out: &mut [bf16]) {
    out.par_chunks_mut(ROWS_PER_TASK * COLS)
        .enumerate()
        .for_each(|(k, chunk)| {
            t.decode_rows_bf16((k * ROWS_PER_TASK) as u64, chunk)
                .expect("decode");
        });
}

fn copy_par<T: Copy + Send + Sync>(dst: &mut [T], src: &[T]) {
    dst.par_chunks_mut(ROWS_PER_TASK * COLS)
        .zip(src.par_chunks(ROWS_PER_TASK * COLS))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

fn main() {
    let rows = rows();
    let n = rows * COLS;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.qins");
    eprintln!("building a {rows}x{COLS} encoded tensor ({n} weights)...");
    build_file(&path, rows);
    let file = qins_read::open(&path).expect("open");
    let qins = file.parse().expect("parse");
    let t = qins.tensor("w").expect("tensor");
    let mut b = Buffers {
        out_f32: vec![1f32; n],
        out_bf16: vec![bf16::ONE; n],
        src_f32: vec![2f32; n],
        dst_f32: vec![3f32; n],
        src_bf16: vec![bf16::from_f32(2.0); n],
        dst_bf16: vec![bf16::from_f32(3.0); n],
    };
    let threads = rayon::current_num_threads();

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    for all_cores in [false, true] {
        let group = if all_cores {
            format!("decode_{threads}cores")
        } else {
            "decode_1core".to_string()
        };
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(n as u64));
        for bf16 in [false, true] {
            for op in [
                Op::Decode { all_cores, bf16 },
                Op::Memcpy { all_cores, bf16 },
            ] {
                g.bench_function(op.name(), |bench| {
                    bench.iter_custom(|iters| {
                        let start = Instant::now();
                        for _ in 0..iters {
                            run(op, &t, &mut b);
                        }
                        let elapsed = start.elapsed();
                        SAMPLES
                            .lock()
                            .unwrap()
                            .entry(op.id())
                            .or_default()
                            .push(elapsed.as_secs_f64() / iters as f64);
                        elapsed
                    })
                });
            }
        }
        g.finish();
    }
    c.final_summary();

    // The decoded values must be the rule's: spot-check a fresh decode of each kind.
    let lut = t.lut().expect("encoded");
    let (codes, signs) = (t.codes().expect("codes"), t.signs().expect("signs"));
    for all_cores in [false, true] {
        run(
            Op::Decode {
                all_cores,
                bf16: false,
            },
            &t,
            &mut b,
        );
        run(
            Op::Decode {
                all_cores,
                bf16: true,
            },
            &t,
            &mut b,
        );
        for i in (0..n).step_by(n / 1000 + 1).chain([n - 1]) {
            let m = lut[usize::from(codes[i])];
            let v = if signs[i / 8] >> (i % 8) & 1 == 1 {
                -m
            } else {
                m
            };
            assert_eq!(b.out_f32[i].to_bits(), v.to_bits(), "f32 element {i}");
            assert_eq!(b.out_bf16[i], bf16::from_f32(v), "bf16 element {i}");
        }
    }

    // The paired pass: each decode right after its memcpy, rounds interleaved.
    const ROUNDS: usize = 15;
    let mut paired: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    for _ in 0..ROUNDS {
        for all_cores in [false, true] {
            for bf16 in [false, true] {
                for op in [
                    Op::Memcpy { all_cores, bf16 },
                    Op::Decode { all_cores, bf16 },
                ] {
                    let s = time_once(op, &t, &mut b);
                    paired.entry(op.id()).or_default().push(s);
                }
            }
        }
    }
    report(n, threads, &SAMPLES.lock().unwrap(), &paired);
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Prints weights/s, output GB/s and the ratio to memcpy of the same output size, from
/// criterion's samples and from the paired pass (median of the per-round ratios).
fn report(
    n: usize,
    threads: usize,
    criterion: &BTreeMap<&'static str, Vec<f64>>,
    paired: &BTreeMap<&'static str, Vec<f64>>,
) {
    println!();
    println!("decode of {n} weights into a buffer, against memcpy of the same output size:");
    println!(
        "{:<6} {:<5} | {:>10} {:>9} {:>11} {:>6} | {:>10} {:>9} {:>11} {:>6}",
        "cores",
        "out",
        "Gweight/s",
        "GB/s",
        "memcpy GB/s",
        "ratio",
        "Gweight/s",
        "GB/s",
        "memcpy GB/s",
        "ratio"
    );
    println!(
        "{:<12} | {:^39} | {:^39}",
        "", "criterion (median of samples)", "paired pass (medians)"
    );
    for all_cores in [false, true] {
        for bf16 in [false, true] {
            let (d, m) = (
                Op::Decode { all_cores, bf16 }.id(),
                Op::Memcpy { all_cores, bf16 }.id(),
            );
            let size = if bf16 { 2.0 } else { 4.0 };
            let cols = |dt: f64, mt: f64| {
                let wps = n as f64 / dt;
                format!(
                    "{:>10.3} {:>9.2} {:>11.2} {:>5.0}%",
                    wps / 1e9,
                    wps * size / 1e9,
                    n as f64 * size / mt / 1e9,
                    100.0 * mt / dt
                )
            };
            let crit = match (criterion.get(d), criterion.get(m)) {
                (Some(dv), Some(mv)) => cols(median(dv), median(mv)),
                _ => format!("{:>40}", "-"),
            };
            let (dv, mv) = (&paired[d], &paired[m]);
            let ratios: Vec<f64> = dv.iter().zip(mv).map(|(d, m)| m / d).collect();
            let pair = cols(median(dv), median(mv));
            // Replace the paired ratio by the median of per-round ratios.
            let pair = format!(
                "{} {:>5.0}%",
                &pair[..pair.len() - 7],
                100.0 * median(&ratios)
            );
            println!(
                "{:<6} {:<5} | {crit} | {pair}",
                if all_cores { threads } else { 1 },
                if bf16 { "bf16" } else { "f32" },
            );
        }
    }
}

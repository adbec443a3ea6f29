//! The write pass of a conversion on one core: `Writer::write_encoded_part` of an encoded
//! tensor's codes and sign bytes, in parts of 1 Mi elements as the converter hands them over,
//! into a temporary file (the page cache: `set_sync(false)`, so that the disk is not
//! measured), each part checked against the sign rule and checksummed as it passes.
//!
//! `QINS_BENCH_WEIGHTS` weights (default 64 Mi), 7 rounds; prints the median ns per weight of
//! on-CPU time (Linux's `/proc/thread-self/schedstat`: user and kernel time of this thread,
//! the kernel's copy into the page cache included, whatever else runs on the machine) and of
//! wall time.

use std::hint::black_box;
use std::time::Instant;

use qins_format::codec::Stats;
use qins_format::{Codec, Dtype, Quantizer, Storage};
use qins_write::{Plan, TensorSpec, Writer};

const PART: usize = 1 << 20;
const ROUNDS: usize = 7;

/// This thread's time on a CPU so far, in seconds, where Linux gives it.
fn cpu_time() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 * 1e-9)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::var("QINS_BENCH_WEIGHTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64 << 20)
        / 8
        * 8;
    // Codes of a realistic spread; a sign bit only where the code is not 0 (§11.2).
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let codes: Vec<u8> = (0..PART)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 56) as u8
        })
        .collect();
    let signs: Vec<u8> = codes
        .chunks(8)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u8, |m, (j, &c)| m | (u8::from(c != 0 && c % 3 == 0) << j))
        })
        .collect();
    let stats = Stats {
        min_nonzero: 1e-4,
        max_abs: 0.5,
        nonzero: n as u64,
        count: n as u64,
        ..Stats::EMPTY
    };
    let q = Quantizer::new(Codec::Log, &stats);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.qins");
    let (mut cpu, mut wall) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let _ = std::fs::remove_file(&path);
        let mut plan = Plan::new();
        plan.tensors.push(TensorSpec::new(
            "w",
            Dtype::BF16,
            vec![(n / 4096).max(1) as u64, n.min(4096) as u64],
            Storage::Encoded {
                codec: Codec::Log,
                row_scales: false,
            },
        ));
        let mut w = Writer::create(&path, plan, true).expect("create");
        w.set_sync(false);
        w.begin_encoded(&q, None).expect("begin");
        let (c0, t0) = (cpu_time(), Instant::now());
        let mut done = 0;
        while done < n {
            let len = (n - done).min(PART);
            w.write_encoded_part(black_box(&codes[..len]), black_box(&signs[..len / 8]))
                .expect("write");
            done += len;
        }
        wall.push(t0.elapsed().as_secs_f64());
        if let (Some(a), Some(b)) = (c0, cpu_time()) {
            cpu.push(b - a);
        }
        w.finish().expect("finish");
    }
    println!("write pass on one core: {n} weights in parts of {PART}, ns per weight (medians of {ROUNDS} rounds)");
    if !cpu.is_empty() {
        println!("write on-CPU {:>8.3}", median(&mut cpu) / n as f64 * 1e9);
    }
    println!("write wall   {:>8.3}", median(&mut wall) / n as f64 * 1e9);
}

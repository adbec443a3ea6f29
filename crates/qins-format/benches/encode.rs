//! Encode throughput on one core, against memcpy of the source bytes, in one run.
//!
//! Builds a tensor of `QINS_BENCH_WEIGHTS` weights (default 32M, in rows of 4096) of a
//! realistic distribution (Gaussian, σ = 0.02, one in 1000 an outlier at 20σ, one in 50 zero)
//! in F32, BF16 and F16, and for the `log` codec and the default `lloyd-rows` times, round after
//! round (15 rounds, interleaved so that the machine's load drifts alike for every operation),
//! on the calling thread, over 1 Mi-element chunks as the converter splits a tensor:
//!
//! - `memcpy`: `copy_from_slice` of the source bytes (the yardstick: reading the input once);
//! - `scan`: the statistics passes on the source bytes (`RowMaxima::scan_bytes` for the row
//!   scales of `lloyd-rows`, then `codec::scan_bytes`);
//! - `encode`: `Quantizer::encode_bytes` (the last pass);
//! - `f32 path`: what the converter did before the byte loops: every pass converting each
//!   chunk to f32 (`Dtype::to_f32`) into a buffer, then the f32 forms (`RowMaxima::scan`,
//!   `codec::scan`, `Quantizer::encode`), the table fitted in between.
//!
//! It prints the median time per round, weights/s and the ratio to memcpy, and checks that
//! both paths give the same codes.

use std::hint::black_box;
use std::time::Instant;

use qins_format::codec::{scan, scan_bytes, RowMaxima, RowScales, Stats};
use qins_format::{Codec, Dtype, Quantizer};

const CHUNK: usize = 1 << 20;
/// Row length of the benchmark's tensor.
const COLS: usize = 4096;
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

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// What one conversion pass computes on every chunk of a tensor.
struct Tensor<'a> {
    dtype: Dtype,
    bytes: &'a [u8],
    shape: [u64; 2],
    codec: Codec,
}

impl Tensor<'_> {
    fn es(&self) -> usize {
        (self.dtype.bits() / 8) as usize
    }

    /// Pass 0 (row-scale codecs only) and pass 1 on the bytes: the scales and the statistics.
    fn scan(&self) -> (Option<Vec<f32>>, Stats) {
        let es = self.es();
        let scales = self.codec.uses_row_scales().then(|| {
            self.bytes
                .chunks(CHUNK * es)
                .enumerate()
                .map(|(k, b)| {
                    RowMaxima::scan_bytes(self.dtype, black_box(b), (k * CHUNK) as u64, &self.shape)
                        .unwrap()
                })
                .fold(RowMaxima::EMPTY, RowMaxima::merge)
                .into_scales(&self.shape)
                .unwrap()
        });
        let rs = scales
            .as_deref()
            .map(|s| RowScales::new(s, &self.shape).unwrap());
        let st = self
            .bytes
            .chunks(CHUNK * es)
            .enumerate()
            .map(|(k, b)| {
                scan_bytes(
                    self.codec,
                    self.dtype,
                    black_box(b),
                    (k * CHUNK) as u64,
                    rs.as_ref(),
                )
                .unwrap()
            })
            .fold(Stats::EMPTY, Stats::merge);
        (scales, st)
    }

    /// Pass 2 on the bytes.
    fn encode(&self, q: &Quantizer, scales: Option<&[f32]>, codes: &mut [u8], signs: &mut [u8]) {
        let rs = scales.map(|s| RowScales::new(s, &self.shape).unwrap());
        for (k, ((b, c), s)) in self
            .bytes
            .chunks(CHUNK * self.es())
            .zip(codes.chunks_mut(CHUNK))
            .zip(signs.chunks_mut(CHUNK / 8))
            .enumerate()
        {
            q.encode_bytes(
                self.dtype,
                black_box(b),
                (k * CHUNK) as u64,
                rs.as_ref(),
                c,
                s,
            )
            .unwrap();
        }
    }

    /// The three passes as the converter ran them before the byte loops: each chunk converted
    /// to f32 into a buffer by every pass, then the f32 forms.
    fn f32_path(&self, buf: &mut [f32], codes: &mut [u8], signs: &mut [u8]) {
        let es = self.es();
        let mut convert = |b: &[u8]| -> Vec<f32> {
            let v = &mut buf[..b.len() / es];
            self.dtype.to_f32(black_box(b), v).unwrap();
            v.to_vec()
        };
        let scales = self.codec.uses_row_scales().then(|| {
            let mut m = RowMaxima::EMPTY;
            for (k, b) in self.bytes.chunks(CHUNK * es).enumerate() {
                let v = convert(b);
                m = m.merge(RowMaxima::scan(&v, (k * CHUNK) as u64, &self.shape).unwrap());
            }
            m.into_scales(&self.shape).unwrap()
        });
        let rs = scales
            .as_deref()
            .map(|s| RowScales::new(s, &self.shape).unwrap());
        let mut st = Stats::EMPTY;
        for (k, b) in self.bytes.chunks(CHUNK * es).enumerate() {
            let v = convert(b);
            st = st.merge(scan(&v, (k * CHUNK) as u64, rs.as_ref()).unwrap());
        }
        let q = Quantizer::new(self.codec, &st);
        for (k, ((b, c), s)) in self
            .bytes
            .chunks(CHUNK * es)
            .zip(codes.chunks_mut(CHUNK))
            .zip(signs.chunks_mut(CHUNK / 8))
            .enumerate()
        {
            let v = convert(b);
            q.encode(&v, (k * CHUNK) as u64, rs.as_ref(), c, s).unwrap();
        }
    }
}

fn main() {
    let n: usize = std::env::var("QINS_BENCH_WEIGHTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32 << 20);
    let n = n.next_multiple_of(COLS);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let values: Vec<f32> = (0..n).map(|_| rng.weight()).collect();
    println!(
        "encode of {n} weights ({} x {COLS}) on one core, against memcpy of the source:",
        n / COLS
    );
    println!(
        "{:<5} {:<10} {:<9} {:>9} {:>10} {:>9}",
        "dtype", "codec", "op", "ms", "Mweight/s", "÷ memcpy"
    );
    for codec in [Codec::Log, Codec::LloydRows] {
        for dtype in [Dtype::F32, Dtype::BF16, Dtype::F16] {
            let bytes = source(dtype, &values);
            let t = Tensor {
                dtype,
                bytes: &bytes,
                shape: [(n / COLS) as u64, COLS as u64],
                codec,
            };
            let mut copy = vec![0u8; bytes.len()];
            let mut f32buf = vec![0f32; CHUNK];
            let (mut codes, mut signs) = (vec![0u8; n], vec![0u8; n.div_ceil(8)]);
            let (mut codes2, mut signs2) = (vec![0u8; n], vec![0u8; n.div_ceil(8)]);
            let (scales, stats) = t.scan();
            let q = Quantizer::new(codec, &stats);
            let mut times: [Vec<f64>; 4] = Default::default();
            for _ in 0..ROUNDS {
                let c = Instant::now();
                black_box(&mut copy).copy_from_slice(black_box(&bytes));
                times[0].push(c.elapsed().as_secs_f64());

                let c = Instant::now();
                let (s2, st) = t.scan();
                times[1].push(c.elapsed().as_secs_f64());
                assert!(st == stats && s2 == scales);

                let c = Instant::now();
                t.encode(&q, scales.as_deref(), &mut codes, &mut signs);
                times[2].push(c.elapsed().as_secs_f64());

                let c = Instant::now();
                t.f32_path(&mut f32buf, &mut codes2, &mut signs2);
                times[3].push(c.elapsed().as_secs_f64());
                assert!(
                    codes == codes2 && signs == signs2,
                    "both paths give the same codes"
                );
            }
            let memcpy = median(&mut times[0]);
            for (op, t) in ["memcpy", "scan", "encode", "f32 path"]
                .iter()
                .zip(&mut times)
            {
                let m = median(t);
                println!(
                    "{:<5} {:<10} {:<9} {:>9.1} {:>10.0} {:>9.2}",
                    dtype.name(),
                    codec.name(),
                    op,
                    m * 1e3,
                    n as f64 / m / 1e6,
                    m / memcpy
                );
            }
        }
    }
}

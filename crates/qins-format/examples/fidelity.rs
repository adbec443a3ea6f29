//! Reconstruction fidelity and encoding cost of every codec on a real checkpoint.
//!
//! ```text
//! cargo run --release -p qins-format --example fidelity -- MODEL.safetensors [--summary] [--repeat N]
//! ```
//!
//! For every 2-D F32 tensor and every codec of the registry, plus llama.cpp's Q8_0 as a
//! reference (blocks of 32 along rows, an f16 scale `max|block| / 127`, codes rounded to
//! nearest), it prints the relative RMSE, the SNR `10 log10(Σw² / Σ(w − ŵ)²)`, the largest
//! absolute error relative to `max|w|`, and the bits per weight of the stored form (codes, sign
//! bits, row scales and the 1 KiB table for QINS; 8.5 for Q8_0). Totals are weighted by
//! parameter count (the SNR from the summed energies). Encoding time is single-threaded and
//! covers everything a converter does per tensor after reading it: row scales (if the codec has
//! them), `scan`, fitting the `Quantizer`, and `encode`; the best of `--repeat` runs (3).
//! Decoding uses the crate's own decode kernel.

use std::time::{Duration, Instant};

use qins_format::codec::{row_scales, scan, Codec, Quantizer, RowScales};
use qins_format::decode::EncodedParts;
use safetensors::{Dtype, SafeTensors};

/// One tensor's errors under one codec.
#[derive(Clone, Debug, Default)]
struct Fidelity {
    /// Σ w².
    energy: f64,
    /// Σ (w − ŵ)².
    noise: f64,
    /// max |w − ŵ|.
    max_err: f64,
    /// max |w|.
    max_abs: f64,
    /// Stored bits.
    bits: u64,
    /// Elements.
    n: u64,
}

impl Fidelity {
    fn measure(w: &[f32], r: &[f32], bits: u64) -> Fidelity {
        let mut f = Fidelity {
            bits,
            n: w.len() as u64,
            ..Fidelity::default()
        };
        for (&a, &b) in w.iter().zip(r) {
            let (a, b) = (f64::from(a), f64::from(b));
            f.energy += a * a;
            f.noise += (a - b) * (a - b);
            f.max_err = f.max_err.max((a - b).abs());
            f.max_abs = f.max_abs.max(a.abs());
        }
        f
    }

    fn add(&mut self, o: &Fidelity) {
        self.energy += o.energy;
        self.noise += o.noise;
        self.max_err = self
            .max_err
            .max(o.max_err / o.max_abs.max(f64::MIN_POSITIVE));
        self.max_abs = 1.0;
        self.bits += o.bits;
        self.n += o.n;
    }

    fn snr(&self) -> f64 {
        10.0 * (self.energy / self.noise).log10()
    }

    fn rel_rmse(&self) -> f64 {
        (self.noise / self.energy).sqrt()
    }

    fn max_rel(&self) -> f64 {
        self.max_err / self.max_abs.max(f64::MIN_POSITIVE)
    }

    fn bpw(&self) -> f64 {
        self.bits as f64 / self.n as f64
    }
}

/// A method under test: a QINS codec or the Q8_0 reference.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Method {
    Qins(Codec),
    Q8_0,
}

impl Method {
    fn name(self) -> String {
        match self {
            Method::Qins(c) => c.name().to_string(),
            Method::Q8_0 => "Q8_0 (ref)".to_string(),
        }
    }
}

/// Time spent per stage.
#[derive(Clone, Copy, Debug, Default)]
struct Timing {
    rows: Duration,
    scan: Duration,
    fit: Duration,
    encode: Duration,
}

impl Timing {
    fn total(&self) -> Duration {
        self.rows + self.scan + self.fit + self.encode
    }

    fn add(&mut self, o: &Timing) {
        self.rows += o.rows;
        self.scan += o.scan;
        self.fit += o.fit;
        self.encode += o.encode;
    }

    fn min(self, o: Timing) -> Timing {
        if o.total() < self.total() {
            o
        } else {
            self
        }
    }
}

/// Encodes and decodes `w` (shape `[rows, cols]`) with a QINS codec.
fn qins(codec: Codec, w: &[f32], shape: &[u64; 2]) -> (Vec<f32>, u64, Timing) {
    let mut t = Timing::default();
    let clock = Instant::now();
    let scales = row_scales(codec, w, shape).expect("finite weights");
    t.rows = clock.elapsed();
    let rs = scales
        .as_deref()
        .map(|s| RowScales::new(s, shape).expect("valid scales"));
    let clock = Instant::now();
    let stats = scan(w, 0, rs.as_ref()).expect("finite weights");
    t.scan = clock.elapsed();
    let clock = Instant::now();
    let q = Quantizer::new(codec, &stats);
    t.fit = clock.elapsed();
    let clock = Instant::now();
    let mut codes = vec![0u8; w.len()];
    let mut signs = vec![0u8; w.len().div_ceil(8)];
    q.encode(w, 0, rs.as_ref(), &mut codes, &mut signs)
        .expect("encodable");
    t.encode = clock.elapsed();

    let scale_bytes: Option<Vec<u8>> = scales
        .as_ref()
        .map(|s| s.iter().flat_map(|x| x.to_le_bytes()).collect());
    let parts = EncodedParts {
        lut: q.lut(),
        codes: &codes,
        signs: &signs,
        scales: scale_bytes.as_deref().map(|b| (b, shape[1])),
    };
    let mut out = vec![0f32; w.len()];
    parts.decode_f32(0, &mut out).expect("whole range");
    let bits = 8 * (codes.len() + signs.len() + 1024) as u64
        + 32 * scales.as_ref().map_or(0, |s| s.len() as u64);
    (out, bits, t)
}

/// llama.cpp's Q8_0 (`quantize_row_q8_0_ref`): blocks of 32 along each row, `d = amax / 127`
/// stored as f16, `q = round(x / d)` (half away from zero, with the f32 `1 / d`), decoded as
/// `q × f16(d)`. A short last block of a row is its own block.
fn q8_0(w: &[f32], shape: &[u64; 2]) -> (Vec<f32>, u64, Timing) {
    let clock = Instant::now();
    let cols = shape[1] as usize;
    let mut out = vec![0f32; w.len()];
    let mut blocks = 0u64;
    for (row, orow) in w.chunks(cols).zip(out.chunks_mut(cols)) {
        for (b, ob) in row.chunks(32).zip(orow.chunks_mut(32)) {
            blocks += 1;
            let amax = b.iter().fold(0f32, |m, x| m.max(x.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let d16 = half::f16::from_f32(d).to_f32();
            for (x, o) in b.iter().zip(ob.iter_mut()) {
                *o = (x * id).round() * d16;
            }
        }
    }
    let t = Timing {
        encode: clock.elapsed(),
        ..Timing::default()
    };
    // 32 one-byte codes and a 2-byte scale per block.
    let bits = blocks * (32 + 2) * 8;
    (out, bits, t)
}

fn main() {
    let mut path = None;
    let mut summary = false;
    let mut repeat = 3u32;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--summary" => summary = true,
            "--repeat" => {
                repeat = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .expect("--repeat N, N ≥ 1")
            }
            _ if path.is_none() => path = Some(a),
            _ => panic!("usage: fidelity MODEL.safetensors [--summary] [--repeat N]"),
        }
    }
    let path = path.expect("usage: fidelity MODEL.safetensors [--summary] [--repeat N]");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let st = SafeTensors::deserialize(&bytes).expect("a safetensors file");
    let mut tensors: Vec<(String, [u64; 2], Vec<f32>)> = st
        .tensors()
        .into_iter()
        .filter(|(_, v)| v.dtype() == Dtype::F32 && v.shape().len() == 2)
        .map(|(name, v)| {
            let w: Vec<f32> = v
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let shape = [v.shape()[0] as u64, v.shape()[1] as u64];
            (name, shape, w)
        })
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let params: usize = tensors.iter().map(|t| t.2.len()).sum();
    println!(
        "{path}: {} two-dimensional F32 tensors, {params} parameters\n",
        tensors.len()
    );

    let methods: Vec<Method> = Codec::ALL
        .iter()
        .map(|&c| Method::Qins(c))
        .chain([Method::Q8_0])
        .collect();
    // Runs interleave the methods, so that a change in the machine's load affects them alike.
    let mut results: Vec<(Method, Vec<Fidelity>, Timing)> = methods
        .iter()
        .map(|&m| (m, Vec::new(), Timing::default()))
        .collect();
    for run in 0..repeat {
        for (m, fid, best) in results.iter_mut() {
            let mut time = Timing::default();
            for (_, shape, w) in &tensors {
                let (r, bits, t) = match *m {
                    Method::Qins(c) => qins(c, w, shape),
                    Method::Q8_0 => q8_0(w, shape),
                };
                time.add(&t);
                if run == 0 {
                    fid.push(Fidelity::measure(w, &r, bits));
                }
            }
            *best = if run == 0 { time } else { best.min(time) };
        }
    }

    if !summary {
        for (m, fid, _) in &results {
            println!("== {}", m.name());
            println!(
                "{:<50} {:>12} {:>9} {:>8} {:>10} {:>7}",
                "tensor", "shape", "rel.RMSE", "SNR dB", "maxerr/max", "bits/w"
            );
            for ((name, shape, _), f) in tensors.iter().zip(fid) {
                println!(
                    "{:<50} {:>12} {:>8.4}% {:>8.2} {:>10.2e} {:>7.3}",
                    name,
                    format!("{}x{}", shape[0], shape[1]),
                    100.0 * f.rel_rmse(),
                    f.snr(),
                    f.max_rel(),
                    f.bpw()
                );
            }
            println!();
        }
        println!("== SNR dB per tensor");
        print!("{:<50}", "tensor");
        for (m, _, _) in &results {
            print!(" {:>11}", m.name());
        }
        println!();
        for (k, (name, _, _)) in tensors.iter().enumerate() {
            print!("{name:<50}");
            for (_, fid, _) in &results {
                print!(" {:>11.2}", fid[k].snr());
            }
            println!();
        }
        println!();
    }

    let log_time = results
        .iter()
        .find(|r| r.0 == Method::Qins(Codec::Log))
        .map(|r| r.2.total())
        .unwrap_or_default();
    println!("== Totals over all {params} parameters (weighted by parameter count)");
    println!(
        "{:<11} {:>9} {:>8} {:>10} {:>7} {:>8}  {:<45} {:>9} {:>6}  {:>7} {:>7} {:>7} {:>7}",
        "codec",
        "rel.RMSE",
        "SNR dB",
        "maxerr/max",
        "bits/w",
        "worst dB",
        "worst tensor",
        "encode ms",
        "×log",
        "rows",
        "scan",
        "fit",
        "encode"
    );
    for (m, fid, time) in &results {
        let mut total = Fidelity::default();
        fid.iter().for_each(|f| total.add(f));
        let (worst_k, worst) = fid
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.snr().total_cmp(&b.1.snr()))
            .expect("tensors");
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{:<11} {:>8.4}% {:>8.2} {:>10.2e} {:>7.4} {:>8.2}  {:<45} {:>9.1} {:>6.2}  {:>7.1} {:>7.1} {:>7.1} {:>7.1}",
            m.name(),
            100.0 * total.rel_rmse(),
            total.snr(),
            total.max_err,
            total.bpw(),
            worst.snr(),
            tensors[worst_k].0,
            ms(time.total()),
            time.total().as_secs_f64() / log_time.as_secs_f64(),
            ms(time.rows),
            ms(time.scan),
            ms(time.fit),
            ms(time.encode),
        );
    }
    println!(
        "\nmaxerr/max in the totals is the worst tensor's; encode ms is single-threaded, the best \
         of {repeat} runs."
    );
}

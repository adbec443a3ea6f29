//! On-demand, parallel and deterministic generation of tensor bytes.

use std::borrow::Cow;

use half::{bf16, f16};
use rayon::prelude::*;
use safetensors::{Dtype, View};

use crate::plan::{TensorSpec, WeightDist, HEAVY_TAIL_CLAMP, OUTLIER_MAX_SCALE, OUTLIER_MIN_SCALE};
use crate::rng::{chunk_seed, tensor_seed, StdNormal, Xoshiro256pp};

/// Elements per independently seeded generation chunk. Fixed so the output does not
/// depend on the number of threads.
pub(crate) const CHUNK_ELEMS: usize = 1 << 16;

/// A tensor whose bytes are generated only when safetensors asks for them, so that
/// writing a file needs memory for one tensor at a time.
pub(crate) struct LazyTensor<'a> {
    pub(crate) spec: &'a TensorSpec,
    pub(crate) seed: u64,
    pub(crate) nan_at: Option<usize>,
}

impl View for LazyTensor<'_> {
    fn dtype(&self) -> Dtype {
        self.spec.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.spec.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(tensor_bytes(self.spec, self.seed, self.nan_at))
    }

    fn data_len(&self) -> usize {
        self.spec.byte_len()
    }
}

/// Generates the little-endian bytes of one tensor.
pub(crate) fn tensor_bytes(spec: &TensorSpec, seed: u64, nan_at: Option<usize>) -> Vec<u8> {
    let mut out = vec![0u8; spec.byte_len()];
    let tseed = tensor_seed(seed, &spec.name);
    match spec.dtype {
        Dtype::F32 => fill_float(spec, tseed, &mut out, |v: f32| v.to_le_bytes()),
        Dtype::F16 => fill_float(spec, tseed, &mut out, |v: f32| {
            f16::from_f32(v).to_bits().to_le_bytes()
        }),
        Dtype::BF16 => fill_float(spec, tseed, &mut out, |v: f32| {
            bf16::from_f32(v).to_bits().to_le_bytes()
        }),
        Dtype::I64 => {
            for (i, dst) in out.chunks_exact_mut(8).enumerate() {
                dst.copy_from_slice(&(i as i64).to_le_bytes());
            }
        }
        other => unreachable!("qins-synth never plans {other:?} tensors"),
    }
    if let Some(i) = nan_at {
        let es = spec.dtype.bitsize() / 8;
        let dst = &mut out[i * es..(i + 1) * es];
        match spec.dtype {
            Dtype::F32 => dst.copy_from_slice(&f32::NAN.to_le_bytes()),
            Dtype::F16 => dst.copy_from_slice(&f16::NAN.to_bits().to_le_bytes()),
            Dtype::BF16 => dst.copy_from_slice(&bf16::NAN.to_bits().to_le_bytes()),
            _ => {}
        }
    }
    out
}

fn fill_float<const N: usize>(
    spec: &TensorSpec,
    tseed: u64,
    out: &mut [u8],
    encode: impl Fn(f32) -> [u8; N] + Sync,
) {
    let params = ChunkParams {
        zero_thresh: threshold(spec.zero_fraction),
        outlier_thresh: threshold(spec.outlier_fraction),
        std: f64::from(spec.dist.std()),
    };
    let dist = spec.dist;
    out.par_chunks_mut(CHUNK_ELEMS * N)
        .enumerate()
        .for_each(|(ci, bytes)| {
            let mut rng = Xoshiro256pp::from_seed(chunk_seed(tseed, ci));
            let mut normal = StdNormal::default();
            // One specialised loop per distribution keeps the per-element path branch-light.
            match dist {
                WeightDist::Gaussian { mean, std } => {
                    let (mean, std) = (f64::from(mean), f64::from(std));
                    params.fill(bytes, &mut rng, &encode, |rng| {
                        mean + std * normal.sample(rng)
                    });
                }
                WeightDist::Laplace { std } => {
                    let std = f64::from(std);
                    let b = std / std::f64::consts::SQRT_2;
                    let lim = HEAVY_TAIL_CLAMP * std;
                    params.fill(bytes, &mut rng, &encode, |rng| {
                        let negative = rng.next_u64() >> 63 == 1;
                        let x = (-b * rng.next_f64_nonzero().ln()).min(lim);
                        if negative {
                            -x
                        } else {
                            x
                        }
                    });
                }
                WeightDist::StudentT4 { std } => {
                    let std = f64::from(std);
                    let scale = std / std::f64::consts::SQRT_2;
                    let lim = HEAVY_TAIL_CLAMP * std;
                    params.fill(bytes, &mut rng, &encode, |rng| {
                        let z = normal.sample(rng);
                        // chi-square with 4 degrees of freedom: -2 ln(u1 u2), u in (0, 1].
                        let chi2 = -2.0 * (rng.next_f64_nonzero() * rng.next_f64_nonzero()).ln();
                        let t = if chi2 > 0.0 {
                            z / (chi2 / 4.0).sqrt()
                        } else {
                            z
                        };
                        (scale * t).clamp(-lim, lim)
                    });
                }
                WeightDist::Arange => unreachable!("Arange is an integer distribution"),
            }
        });
}

/// Converts a probability to a threshold on a uniform `u64`.
fn threshold(p: f64) -> u64 {
    if p <= 0.0 {
        0
    } else if p >= 1.0 {
        u64::MAX
    } else {
        (p * 18_446_744_073_709_551_616.0) as u64
    }
}

/// Per-tensor parameters shared by every chunk.
struct ChunkParams {
    zero_thresh: u64,
    outlier_thresh: u64,
    std: f64,
}

impl ChunkParams {
    /// Fills one chunk: `base` draws from the tensor's distribution; exact zeros and
    /// outliers are mixed in according to the thresholds.
    #[inline(always)]
    fn fill<const N: usize>(
        &self,
        bytes: &mut [u8],
        rng: &mut Xoshiro256pp,
        encode: &impl Fn(f32) -> [u8; N],
        mut base: impl FnMut(&mut Xoshiro256pp) -> f64,
    ) {
        if self.zero_thresh == 0 && self.outlier_thresh == 0 {
            for dst in bytes.chunks_exact_mut(N) {
                dst.copy_from_slice(&encode(base(rng) as f32));
            }
            return;
        }
        // With outliers, every chunk holds at least one (at a random position).
        let forced = if self.outlier_thresh > 0 {
            rng.below((bytes.len() / N) as u64) as usize
        } else {
            usize::MAX
        };
        for (i, dst) in bytes.chunks_exact_mut(N).enumerate() {
            let v = if self.zero_thresh > 0 && rng.next_u64() < self.zero_thresh {
                0.0
            } else if i == forced
                || (self.outlier_thresh > 0 && rng.next_u64() < self.outlier_thresh)
            {
                self.outlier(rng)
            } else {
                base(rng)
            };
            dst.copy_from_slice(&encode(v as f32));
        }
    }

    /// An outlier: `±std × U(OUTLIER_MIN_SCALE, OUTLIER_MAX_SCALE)`.
    #[cold]
    fn outlier(&self, rng: &mut Xoshiro256pp) -> f64 {
        let scale = f64::from(OUTLIER_MIN_SCALE)
            + f64::from(OUTLIER_MAX_SCALE - OUTLIER_MIN_SCALE) * rng.next_f64();
        let sign = if rng.next_u64() >> 63 == 1 { -1.0 } else { 1.0 };
        sign * self.std * scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dist: WeightDist, n: usize) -> TensorSpec {
        TensorSpec {
            name: "t".into(),
            shape: vec![n],
            dtype: Dtype::F32,
            dist,
            zero_fraction: 0.0,
            outlier_fraction: 0.0,
        }
    }

    fn moments(bytes: &[u8]) -> (f64, f64) {
        let v: Vec<f64> = bytes
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
            .collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        (mean, var.sqrt())
    }

    #[test]
    fn distributions_have_requested_std() {
        for dist in [
            WeightDist::Gaussian {
                mean: 1.0,
                std: 0.1,
            },
            WeightDist::Laplace { std: 0.1 },
            WeightDist::StudentT4 { std: 0.1 },
        ] {
            let s = spec(dist, 200_000);
            let (mean, std) = moments(&tensor_bytes(&s, 3, None));
            let want_mean = if let WeightDist::Gaussian { mean, .. } = dist {
                f64::from(mean)
            } else {
                0.0
            };
            assert!((mean - want_mean).abs() < 0.005, "{dist:?}: mean {mean}");
            assert!((std - 0.1).abs() < 0.01, "{dist:?}: std {std}");
        }
    }

    #[test]
    fn threshold_edges() {
        assert_eq!(threshold(0.0), 0);
        assert_eq!(threshold(1.0), u64::MAX);
        assert!(threshold(0.5) > u64::MAX / 2 - 2 && threshold(0.5) < u64::MAX / 2 + 2);
    }

    #[test]
    fn position_ids_are_arange() {
        let s = TensorSpec {
            name: "p".into(),
            shape: vec![1, 5],
            dtype: Dtype::I64,
            dist: WeightDist::Arange,
            zero_fraction: 0.0,
            outlier_fraction: 0.0,
        };
        let b = tensor_bytes(&s, 0, None);
        let v: Vec<i64> = b
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(v, vec![0, 1, 2, 3, 4]);
    }
}

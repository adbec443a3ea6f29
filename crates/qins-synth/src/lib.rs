//! Synthetic Hugging Face checkpoints for QINS tests and benchmarks.
//!
//! [`generate`] writes a directory that looks like a real Llama-like transformer
//! checkpoint: one or more safetensors files (with `model.safetensors.index.json` when
//! sharded, in Hugging Face's format), `config.json`, `generation_config.json`,
//! `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json`.
//!
//! Properties the tests and benchmarks rely on:
//!
//! * **Deterministic**: the same [`SynthConfig`] always produces the same bytes,
//!   whatever the number of threads. Every tensor is generated in fixed chunks of
//!   65536 elements, each with its own PRNG stream seeded from
//!   `(seed, tensor name, chunk index)`.
//! * **Streaming**: tensor bytes are produced on demand while safetensors writes the
//!   file, so memory stays bounded by about one tensor even for multi-gigabyte
//!   checkpoints. Chunks are filled in parallel with rayon.
//! * **Realistic values**: Gaussian weights with per-tensor standard deviations,
//!   heavy-tailed tensors (Student-t / Laplace) with rare large outliers, a tensor with
//!   about 5% exact zeros, norm scales near 1.0 and one I64 tensor; see
//!   [`SynthConfig::tensor_specs`] for the exact plan. No NaN or infinity is ever
//!   written unless [`SynthConfig::inject_nan`] asks for one.
//!
//! ```no_run
//! use qins_synth::{generate, SynthConfig, SynthDtype};
//!
//! let mut cfg = SynthConfig::tiny(SynthDtype::Bf16);
//! cfg.shards = 3;
//! let summary = generate(&cfg, std::path::Path::new("/tmp/tiny-ckpt"))?;
//! assert_eq!(summary.shards, 3);
//! # Ok::<(), qins_synth::SynthError>(())
//! ```

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

mod config;
mod fill;
mod hf_files;
mod plan;
mod rng;

pub use config::{SynthArch, SynthConfig, SynthDtype, BERT_DENSE_OUT};
pub use plan::{
    TensorSpec, WeightDist, BASE_STD, HEAVY_TAIL_CLAMP, OUTLIER_FRACTION, OUTLIER_MAX_SCALE,
    OUTLIER_MIN_SCALE, ZERO_FRACTION,
};

use fill::LazyTensor;
use hf_files::{write_json, IndexMetadata, ShardIndex};

/// Name of the single weights file of an unsharded checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";

/// Name of the shard index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Errors of the synthetic checkpoint generator.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// The configuration is inconsistent (message says why).
    #[error("invalid synthetic checkpoint config: {0}")]
    InvalidConfig(String),
    /// A dtype name other than `f32`, `f16` or `bf16`.
    #[error("unknown dtype {0:?} (expected f32, f16 or bf16)")]
    UnknownDtype(String),
    /// A filesystem operation failed.
    #[error("I/O error on {}", path.display())]
    Io {
        /// File or directory involved.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// safetensors failed to serialize a shard.
    #[error("cannot write safetensors file {}", path.display())]
    Safetensors {
        /// Shard being written.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// A JSON file could not be serialized.
    #[error("cannot serialize JSON file {}", path.display())]
    Json {
        /// File being written.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: serde_json::Error,
    },
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthSummary {
    /// Every file written (full paths): the safetensors shards in order, then the index
    /// (if sharded), then the JSON side files.
    pub files: Vec<PathBuf>,
    /// Number of safetensors files.
    pub shards: usize,
    /// Number of tensors over all shards.
    pub tensor_count: usize,
    /// Sum of tensor data sizes in bytes (headers excluded), as in the index `total_size`.
    pub total_tensor_bytes: u64,
}

/// File name of shard `i` (0-based) out of `n`, e.g. `model-00001-of-00003.safetensors`.
pub fn shard_file_name(i: usize, n: usize) -> String {
    if n == 1 {
        SINGLE_FILE.to_string()
    } else {
        format!("model-{:05}-of-{:05}.safetensors", i + 1, n)
    }
}

/// Writes the synthetic checkpoint described by `cfg` into `out_dir`.
///
/// The directory is created if needed. Existing files with the names written here are
/// overwritten, and stale weight files from an earlier run with a different shard count
/// (`model.safetensors`, `model-*-of-*.safetensors`, `model.safetensors.index.json`)
/// are removed; other files in the directory are left alone.
pub fn generate(cfg: &SynthConfig, out_dir: &Path) -> Result<SynthSummary, SynthError> {
    cfg.validate()?;
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SynthError::Io { path, source }
    };
    std::fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;

    let specs = cfg.tensor_specs();
    let sizes: Vec<u64> = specs.iter().map(|t| t.byte_len() as u64).collect();
    let total_tensor_bytes: u64 = sizes.iter().sum();
    let assignment = assign_shards(&sizes, cfg.shards);
    let shard_names: Vec<String> = (0..cfg.shards)
        .map(|i| shard_file_name(i, cfg.shards))
        .collect();

    remove_stale_weight_files(out_dir, &shard_names)?;

    let nan = cfg.inject_nan.as_ref();
    let mut files = Vec::new();
    for (s, shard_name) in shard_names.iter().enumerate() {
        let tensors = specs
            .iter()
            .zip(&assignment)
            .filter(|(_, &a)| a == s)
            .map(|(spec, _)| {
                let nan_at = nan.filter(|(n, _)| *n == spec.name).map(|(_, i)| *i);
                (
                    spec.name.as_str(),
                    LazyTensor {
                        spec,
                        seed: cfg.seed,
                        nan_at,
                    },
                )
            });
        let path = out_dir.join(shard_name);
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::serialize_to_file(tensors, Some(metadata), &path).map_err(|source| {
            SynthError::Safetensors {
                path: path.clone(),
                source,
            }
        })?;
        files.push(path);
    }

    if cfg.shards > 1 {
        let weight_map: BTreeMap<&str, &str> = specs
            .iter()
            .zip(&assignment)
            .map(|(spec, &a)| (spec.name.as_str(), shard_names[a].as_str()))
            .collect();
        let index = ShardIndex {
            metadata: IndexMetadata {
                total_size: total_tensor_bytes,
            },
            weight_map,
        };
        let path = out_dir.join(INDEX_FILE);
        write_json(&path, &index)?;
        files.push(path);
    }

    // A sentence-transformers Dense module keeps its weights in its own directory.
    let dense = cfg.dense_specs();
    if !dense.is_empty() {
        let dir = out_dir.join("2_Dense");
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let path = dir.join(SINGLE_FILE);
        let tensors = dense.iter().map(|spec| {
            (
                spec.name.as_str(),
                LazyTensor {
                    spec,
                    seed: cfg.seed,
                    nan_at: None,
                },
            )
        });
        safetensors::serialize_to_file(tensors, None, &path).map_err(|source| {
            SynthError::Safetensors {
                path: path.clone(),
                source,
            }
        })?;
    }

    let small_files = hf_files::write_small_files(cfg, out_dir)?;

    // safetensors writes through a private (0600) temporary file that is renamed into
    // place; give the shards the same permissions as the ordinary files next to them.
    let config_path = out_dir.join(small_files[0]);
    let perms = std::fs::metadata(&config_path)
        .map_err(io_err(&config_path))?
        .permissions();
    for shard in &files[..cfg.shards] {
        std::fs::set_permissions(shard, perms.clone()).map_err(io_err(shard))?;
    }

    files.extend(small_files.iter().map(|name| out_dir.join(name)));

    Ok(SynthSummary {
        files,
        shards: cfg.shards,
        tensor_count: specs.len(),
        total_tensor_bytes,
    })
}

/// Splits tensors, in order, into `shards` contiguous non-empty groups of roughly equal
/// bytes; returns the shard index of every tensor. Requires `sizes.len() >= shards >= 1`.
fn assign_shards(sizes: &[u64], shards: usize) -> Vec<usize> {
    let total: u128 = sizes.iter().map(|&s| u128::from(s)).sum();
    let n = sizes.len();
    let mut out = Vec::with_capacity(n);
    let (mut shard, mut in_shard, mut cum) = (0usize, 0usize, 0u128);
    for (i, &size) in sizes.iter().enumerate() {
        if in_shard > 0 && shard + 1 < shards {
            // Leave at least one tensor for every remaining shard ...
            let must_move = n - i == shards - shard - 1;
            // ... and otherwise move on once this tensor's midpoint passes the boundary.
            let boundary2 = 2 * total * (shard as u128 + 1) / shards as u128;
            if must_move || 2 * cum + u128::from(size) > boundary2 {
                shard += 1;
                in_shard = 0;
            }
        }
        out.push(shard);
        in_shard += 1;
        cum += u128::from(size);
    }
    out
}

fn is_weight_file_name(name: &str) -> bool {
    name == SINGLE_FILE
        || name == INDEX_FILE
        || (name.starts_with("model-") && name.ends_with(".safetensors") && name.contains("-of-"))
}

fn remove_stale_weight_files(dir: &Path, keep: &[String]) -> Result<(), SynthError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SynthError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| SynthError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if is_file && is_weight_file_name(name) && !keep.iter().any(|k| k == name) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|source| SynthError::Io { path, source })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_assignment_is_contiguous_nonempty_and_balanced() {
        let sizes = [10u64, 10, 10, 10, 10, 10];
        assert_eq!(assign_shards(&sizes, 3), vec![0, 0, 1, 1, 2, 2]);
        assert_eq!(assign_shards(&sizes, 1), vec![0; 6]);
        assert_eq!(assign_shards(&[100, 1, 1], 3), vec![0, 1, 2]);
        assert_eq!(assign_shards(&[1, 1, 100], 3), vec![0, 1, 2]);
        assert_eq!(assign_shards(&[1, 1, 1, 100], 2), vec![0, 0, 0, 1]);
        for n in 1..=6 {
            let a = assign_shards(&sizes, n);
            assert!(a.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1));
            assert_eq!(*a.last().unwrap(), n - 1);
        }
    }

    #[test]
    fn shard_names() {
        assert_eq!(shard_file_name(0, 1), "model.safetensors");
        assert_eq!(shard_file_name(1, 3), "model-00002-of-00003.safetensors");
        assert!(is_weight_file_name("model-00002-of-00003.safetensors"));
        assert!(!is_weight_file_name("config.json"));
    }
}

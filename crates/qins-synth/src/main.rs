//! `qins-synth`: writes a synthetic Hugging Face checkpoint for tests and benchmarks.
//!
//! Exit status: 0 on success, 1 when the checkpoint cannot be written (one line `error: ...`
//! naming the path and the cause; `--verbose` prints the chain of causes one per line), 2 on a
//! usage error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use qins_synth::{generate, SynthArch, SynthConfig, SynthDtype};

/// Write a synthetic Llama-like Hugging Face checkpoint (safetensors weights, config
/// and tokenizer files). The output is deterministic: the same flags give the same bytes.
#[derive(Debug, Parser)]
#[command(name = "qins-synth", version)]
struct Cli {
    /// Output directory (created if missing; must be empty unless --force).
    out_dir: PathBuf,

    /// Dtype of every float tensor.
    #[arg(long, default_value = "bf16", value_parser = ["f32", "f16", "bf16"])]
    dtype: String,

    /// Number of safetensors shards (1 writes model.safetensors; N > 1 writes
    /// model-0000i-of-0000N.safetensors plus model.safetensors.index.json).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    shards: u32,

    /// Size preset: tiny (~0.5 MB, odd shapes) or small (~5 MB). Default: small,
    /// unless --target-size is given.
    #[arg(long, value_parser = ["tiny", "small"], conflicts_with = "target_size")]
    preset: Option<String>,

    /// Pick model sizes so the total tensor bytes are close to this size, e.g. 2GB,
    /// 512MiB, 1.5G or 1000000. K/M/G/T units are binary (1 GB = 1 GiB = 2^30 bytes).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    target_size: Option<u64>,

    /// Seed of the deterministic weight generator.
    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// Architecture: tensor names and config.json of llama, mistral, qwen2, qwen3, gemma3,
    /// phi3 or bert (a sentence-transformers encoder). Other than llama, the sizes are tiny
    /// (--preset and --target-size apply to llama only).
    #[arg(long, default_value = "llama", value_parser = ["llama", "mistral", "qwen2", "qwen3", "gemma3", "phi3", "bert"])]
    arch: String,

    /// Tie the output head to the embeddings (no lm_head.weight tensor).
    #[arg(long)]
    tied: bool,

    /// Vocabulary size (rows of the embeddings and the head) instead of the preset's or
    /// --target-size's choice; with --target-size the layers are refitted around it.
    #[arg(long, value_parser = clap::value_parser!(u64).range(3..))]
    vocab_size: Option<u64>,

    /// Model width (a multiple of 64) instead of the preset's or --target-size's choice;
    /// with --target-size the layers are refitted around it.
    #[arg(long, value_parser = parse_hidden)]
    hidden_size: Option<u64>,

    /// Make the dimensions not multiples of 8 (edge cases for converters).
    #[arg(long)]
    odd_shapes: bool,

    /// Write into OUT_DIR even if it is not empty (overwrites checkpoint files).
    #[arg(long)]
    force: bool,

    /// On error, print the chain of causes one per line, instead of one line.
    #[arg(long, short)]
    verbose: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            qins_stdx::print_error(&*e, cli.verbose);
            ExitCode::from(1)
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    let dtype: SynthDtype = cli.dtype.parse()?;
    let shards = cli.shards as usize;
    let arch: SynthArch = cli.arch.parse()?;
    let mut cfg = match (arch, cli.target_size, cli.preset.as_deref()) {
        (SynthArch::Llama, Some(bytes), _) => {
            SynthConfig::for_target_bytes(dtype, bytes, shards, cli.seed)
        }
        (SynthArch::Llama, None, Some("tiny")) => SynthConfig::tiny(dtype),
        (SynthArch::Llama, None, _) => SynthConfig::small(dtype),
        (arch, ..) => SynthConfig::tiny_arch(arch, dtype),
    };
    cfg.shards = shards;
    cfg.seed = cli.seed;
    cfg.tie_word_embeddings |= cli.tied;
    if let Some(v) = cli.vocab_size {
        cfg.vocab_size = usize::try_from(v)?;
    }
    if let Some(h) = cli.hidden_size {
        cfg.set_hidden_size(usize::try_from(h)?);
    }
    if let (Some(bytes), true) = (
        cli.target_size,
        cli.vocab_size.is_some() || cli.hidden_size.is_some(),
    ) {
        cfg.fit_layers(bytes);
    }
    if cli.odd_shapes {
        cfg = cfg.with_odd_shapes();
    }

    check_out_dir(&cli.out_dir, cli.force)?;
    let summary = generate(&cfg, &cli.out_dir)
        .with_context(|| format!("generating checkpoint in {}", cli.out_dir.display()))?;
    println!(
        "wrote {} shard{}, {} tensors, {} to {}",
        summary.shards,
        if summary.shards == 1 { "" } else { "s" },
        summary.tensor_count,
        human_bytes(summary.total_tensor_bytes),
        cli.out_dir.display()
    );
    Ok(())
}

fn check_out_dir(dir: &Path, force: bool) -> Result<()> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot access {}", dir.display())),
        Ok(m) if !m.is_dir() => bail!("{} exists and is not a directory", dir.display()),
        Ok(_) => {
            let mut entries = std::fs::read_dir(dir)
                .with_context(|| format!("cannot read directory {}", dir.display()))?;
            if entries.next().is_some() && !force {
                bail!(
                    "output directory {} is not empty (use --force to write into it anyway)",
                    dir.display()
                );
            }
            Ok(())
        }
    }
}

/// Parses a model width: a positive multiple of 64.
fn parse_hidden(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(h) if h > 0 && h % 64 == 0 => Ok(h),
        _ => Err(format!(
            "invalid width {s:?} (expected a positive multiple of 64)"
        )),
    }
}

/// Parses sizes such as `2GB`, `1.5GiB`, `512M`, `64k` or `1000000` (binary units).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?} (expected e.g. 2GB, 512MiB or 1000000)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    let bytes = (value * (1u64 << shift) as f64).round();
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("size {s:?} out of range"));
    }
    Ok(bytes as u64)
}

/// Formats a byte count with binary units, e.g. `2.00 GiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.2} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("2GB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("GB").is_err());
        assert!(parse_size("2XB").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(2 << 30), "2.00 GiB");
        assert_eq!(human_bytes(1536), "1.50 KiB");
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

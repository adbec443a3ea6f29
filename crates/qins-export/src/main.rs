//! `qins-export`: a `.qins` file back to a Hugging Face safetensors directory.
//!
//! A thin wrapper over [`qins_export::export`]: arguments, a progress bar on a terminal, the
//! summary. Exit status 0 on success, 1 when the input or target is refused or the export
//! fails, 2 on a usage error.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use qins_export::{export, ExportOptions, NoProgress, OutputDtype, Progress};

/// Export a .qins file to a Hugging Face model directory (safetensors weights and the model's
/// files) that transformers, candle or any safetensors reader loads.
///
/// Encoded tensors are decoded exactly (w = ±LUT[code], times the row scale) and written in
/// their source dtype, or in --dtype; BF16 and F16 values are rounded once from the f32 value,
/// to nearest even. Raw tensors are written bit for bit in their own dtype whatever --dtype
/// says. Every checksum is verified, each tensor's as it is read: a damaged file exports
/// nothing. The directory is built beside OUT_DIR and renamed into place only when complete; a
/// killed export's leftover is removed by the next export to the same OUT_DIR.
#[derive(Debug, Parser)]
#[command(name = "qins-export", version)]
struct Cli {
    /// The .qins file to export; for a model stored as a set of shards (spec §21), its index
    /// (NAME.qins.index.json) or any of its shards: the whole set is exported, every shard
    /// verified.
    input: PathBuf,
    /// The directory to create (must not exist or be empty, unless --force).
    out_dir: PathBuf,
    /// The dtype of decoded tensors; raw tensors always keep their own.
    #[arg(long, value_enum, default_value_t = DtypeArg::Source)]
    dtype: DtypeArg,
    /// The largest safetensors shard, in bytes of tensor data: 5GB, 500MB (powers of 1000, as
    /// in transformers), 2GiB (powers of 1024), or a number of bytes. Larger models are split
    /// as transformers splits them, with model.safetensors.index.json.
    #[arg(long, value_name = "SIZE", default_value = "5GB", value_parser = parse_size)]
    max_shard_size: u64,
    /// Replace OUT_DIR if it exists and is not empty (only once the new one is complete).
    #[arg(long)]
    force: bool,
    /// Do not sync the weight files to disk before renaming the directory into place (synced,
    /// a weight file of 16 MiB or more is written straight to the disk, not through the page
    /// cache): for scratch output. The files are the same, but a crash of the machine (a power
    /// cut) can leave them empty or partial.
    #[arg(long)]
    no_sync: bool,
    /// No progress bar and no summary (errors are still printed).
    #[arg(long, short)]
    quiet: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Worker threads that decode (default: one per core). The output does not depend on it.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    /// On failure, print each cause of the error on its own `caused by:` line.
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DtypeArg {
    /// Each decoded tensor in the dtype it was converted from.
    Source,
    /// F32, the exact decoded values.
    F32,
    /// BF16, rounded once to nearest even.
    Bf16,
    /// F16, rounded once to nearest even.
    F16,
}

impl From<DtypeArg> for OutputDtype {
    fn from(d: DtypeArg) -> OutputDtype {
        match d {
            DtypeArg::Source => OutputDtype::Source,
            DtypeArg::F32 => OutputDtype::F32,
            DtypeArg::Bf16 => OutputDtype::BF16,
            DtypeArg::F16 => OutputDtype::F16,
        }
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    qins_export::parse_size(s).map_err(|e| e.to_string())
}

/// A progress bar over bytes of tensor data, with rate and ETA, and the tensor count.
struct Bar {
    bar: ProgressBar,
    tensors: std::cell::Cell<(usize, usize)>,
}

impl Bar {
    fn new() -> Bar {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} \
                 {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .expect("a valid template"),
        );
        Bar {
            bar,
            tensors: std::cell::Cell::new((0, 0)),
        }
    }
}

impl Progress for Bar {
    fn verifying(&self, bytes: u64) {
        self.bar
            .set_message(format!("verifying {}", indicatif::HumanBytes(bytes)));
        self.bar
            .enable_steady_tick(std::time::Duration::from_millis(100));
    }
    fn begin(&self, tensors: usize, bytes: u64) {
        self.tensors.set((0, tensors));
        self.bar.set_length(bytes);
        self.bar.set_message(format!("tensors 0/{tensors}"));
    }
    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
    fn tensor_done(&self, _name: &str) {
        let (done, total) = self.tensors.get();
        self.tensors.set((done + 1, total));
        self.bar
            .set_message(format!("tensors {}/{total}", done + 1));
    }
    fn end(&self) {
        self.bar.finish_and_clear();
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let mut opts = ExportOptions::new(cli.input.clone(), cli.out_dir.clone());
    opts.dtype = cli.dtype.into();
    opts.max_shard_size = cli.max_shard_size;
    opts.force = cli.force;
    opts.sync = !cli.no_sync;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cli.threads.map_or(0, usize::from))
        .build()
        .context("starting worker threads")?;
    let show_bar = !cli.quiet && std::io::stderr().is_terminal();
    let summary = pool.install(|| {
        if show_bar {
            let bar = Bar::new();
            let r = export(&opts, &bar);
            bar.bar.finish_and_clear();
            r
        } else {
            export(&opts, &NoProgress)
        }
    })?;
    if cli.json {
        println!("{}", summary.to_json());
    } else if !cli.quiet {
        println!("{}", summary.render());
    }
    Ok(())
}

fn main() -> ExitCode {
    // clap exits with status 2 on a usage error and 0 for --help and --version.
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            qins_stdx::print_error(&*e, cli.verbose);
            ExitCode::from(1)
        }
    }
}

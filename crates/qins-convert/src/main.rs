//! `qins-convert HF_DIR OUT.qins`: converts a Hugging Face model directory into one `.qins`
//! file. A thin wrapper over the `qins_convert` library: it parses flags, draws a progress bar
//! on a terminal, and prints the summary (text, or JSON with `--json`) on stdout.
//!
//! Exit status: 0 on success, 1 when the input is refused or the conversion fails (the message
//! names the file, the tensor and the cause, on one line; `--verbose` prints the chain of causes
//! one per line), 2 for usage errors.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use qins_convert::{convert, plan, ConvertOptions, NoProgress, PolicyOptions, Progress};
use qins_format::{alignment_is_valid, Codec, DEFAULT_ALIGNMENT};

/// Convert a Hugging Face model directory (safetensors weights, config and tokenizer files)
/// into one .qins file, or into a set of .qins shards and an index when the file would exceed
/// --max-shard-size.
///
/// Selection, first rule that applies: a dtype other than F32/F16/BF16 stays raw; an empty
/// tensor stays raw; --exclude globs keep raw; --include globs encode; tensors with fewer than
/// two dimensions stay raw; the weights of sentence-transformers modules (2_Dense/...), token
/// embeddings and output heads stay raw unless --encode-embeddings; every other tensor is
/// encoded.
#[derive(Debug, Parser)]
#[command(name = "qins-convert", version, about, long_about, after_long_help = AFTER_HELP)]
struct Cli {
    /// The Hugging Face model directory (model.safetensors, or shards with
    /// model.safetensors.index.json, plus config and tokenizer files).
    hf_dir: PathBuf,

    /// The .qins file to write, e.g. out/model.qins (not needed with --dry-run). A model larger
    /// than --max-shard-size is written as out/model-0000k-of-0000n.qins and
    /// out/model.qins.index.json instead.
    #[arg(required_unless_present = "dry_run")]
    out: Option<PathBuf>,

    /// Encode token embeddings and output heads too (embed_tokens, word_embeddings, wte,
    /// lm_head, embed_out, output.weight, ...), and the matrices of sentence-transformers
    /// modules (2_Dense/linear.weight).
    #[arg(long)]
    encode_embeddings: bool,

    /// Encode tensors whose name matches GLOB, whatever their rank or name (F32/F16/BF16
    /// only). Repeatable. `*` matches dots too: --include '*.norm.*'.
    #[arg(long, value_name = "GLOB", value_parser = parse_glob)]
    include: Vec<String>,

    /// Keep tensors whose name matches GLOB raw. Repeatable; wins over --include.
    #[arg(long, value_name = "GLOB", value_parser = parse_glob)]
    exclude: Vec<String>,

    /// How encoded tensors build their table and codes (see Codecs below). The default,
    /// lloyd-rows, has the best fidelity for about 0.07 more bits per weight than the others.
    #[arg(long, value_enum, default_value_t = CodecArg::LloydRows)]
    codec: CodecArg,

    /// Section alignment in bytes: a power of two from 64 to 1048576.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_ALIGNMENT, value_parser = parse_alignment)]
    alignment: u32,

    /// The largest file to write: 5GB, 500MB (powers of 1000, as huggingface_hub and
    /// transformers), 2GiB (powers of 1024), or a number of bytes. A model whose .qins would be
    /// larger is split into shards of at most this size (a tensor larger than it gets a shard
    /// of its own), each a complete .qins, with an index.
    #[arg(long, value_name = "SIZE", default_value = "5GB", value_parser = parse_size)]
    max_shard_size: u64,

    /// Print the per-tensor plan (encoded or raw and why, bits per weight, sizes) and the
    /// exact output size, without writing anything.
    #[arg(long)]
    dry_run: bool,

    /// Overwrite OUT (or the set's shards and index) if it exists; and once the new output is
    /// in place, remove what an earlier output of the same name left: OUT when a set is
    /// written, the index when a single file is, and any other file named as a shard of this
    /// name (NAME-0000k-of-0000n.qins for OUT = NAME.qins), whatever set it belongs to. Files
    /// of other names, shards of other names included, are never touched.
    #[arg(long)]
    force: bool,

    /// Do not sync OUT to disk before renaming it into place: faster, for scratch output. The
    /// file is the same, but a crash of the machine (a power cut) can leave it empty or
    /// partial.
    #[arg(long)]
    no_sync: bool,

    /// No progress bar and no summary (errors are still printed; --json still prints the JSON).
    #[arg(long, short)]
    quiet: bool,

    /// Print the summary (or the --dry-run plan) as JSON on stdout.
    #[arg(long)]
    json: bool,

    /// Worker threads (default: one per core). The output does not depend on it.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,

    /// On error, print the chain of causes one per line, instead of one line.
    #[arg(long, short)]
    verbose: bool,
}

const AFTER_HELP: &str = "\
Weights: model.safetensors.index.json (the allowlist: every tensor it lists found exactly once, in
the shard it names), else model.safetensors, else every top-level *.safetensors file. Plus, for a
sentence-transformers model, the weights of each module that modules.json lists
(DIR/model.safetensors, or DIR/model.safetensors.index.json and its shards), as tensors named
DIR/NAME (2_Dense/linear.weight; spec §18.1); qins-export puts them back.

Assets: every regular file under HF_DIR (symlinks followed, at most 8 levels deep), except hidden
entries (.git, .cache, ...), safetensors weights and indexes, weights in other formats (*.bin *.pt
*.pth *.ckpt *.h5 *.onnx *.msgpack *.gguf ...), *.qins files, files over 64 MiB, and names that are
not safe UTF-8 paths; each exception is listed as skipped in the summary.

Order: tensors sorted by name (byte order), assets by path, whatever the sharding; the output is
byte-identical for the same input and flags, whatever --threads.

Codecs (all store 8-bit codes, a sign bit and a 1 KiB table per tensor; spec §12):
  lloyd-rows  the default: each row divided by its largest magnitude (one f32 scale per row),
              then 255 levels fitted to minimise the squared error (§12.4). all-MiniLM-L6-v2,
              every 2-D tensor: 50.3 dB SNR at 9.09 bits per weight.
  lloyd       the same fit without row scales (§12.3): 48.7 dB at 9.02 bits per weight.
  log         logarithmic levels between the smallest and largest magnitude (§12.1): 34.2 dB.
  seed-log    the same as log: the Python prototype's exact rule (recorded as log).
  linear      linear levels up to the largest magnitude (§12.2): 27.8 dB.
qins-inspect OUT.qins --against HF_DIR measures what the codec did to each tensor.

Metadata: qins.writer, qins.source (the directory's name), qins.policy (the flags above and the
modules whose weights were carried, as JSON).

Sizes in the summary are counted from the bytes in the written file; ratios compare it with the
source files, and with the same model in F32 and in BF16.

Output: written as .OUT.XXXXXX.tmp beside OUT and renamed to OUT when complete, so OUT is never
partial. A failed conversion removes the temporary file; a killed one (kill -9, a power cut)
cannot, and the next conversion to the same OUT removes it (once it is a minute old and no
running conversion holds it). The files are synced to disk as they grow and before the rename,
so that OUT survives a power cut once the command has returned: a file of 16 MiB or more is
written straight to the disk (O_DIRECT, where the file system has it), not through the page
cache. --no-sync skips the syncs and writes through the page cache (for scratch output).

Sharded output (spec §21): when the .qins of the model would be larger than --max-shard-size
(default 5GB, the default of huggingface_hub and transformers for safetensors shards, a tenth of
the Hub's 50 GB per-file cap), the model is written as a set: for OUT = DIR/NAME.qins, the shards
DIR/NAME-00001-of-0000N.qins ... (tensors in the same order as the single file, each shard a
complete .qins that any QINS reader opens on its own; the assets in shard 1) and the index
DIR/NAME.qins.index.json, which qins-inspect, qins-export and the readers open (or any shard).
The shards are built in a directory .NAME.qins.index.json.XXXXXX.tmp beside them and renamed
into place, the index last, only when all are complete. The same input and options give
byte-identical shards and index.";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum CodecArg {
    /// The Python prototype's exact rule: an alias of log (spec §12.1).
    SeedLog,
    /// Logarithmic table between the smallest and largest magnitude (spec §12.1).
    Log,
    /// Linear table up to the largest magnitude (spec §12.2).
    Linear,
    /// 255 levels fitted to minimise the squared error, no row scales (spec §12.3).
    Lloyd,
    /// Rows scaled by their largest magnitude, then 255 fitted levels (spec §12.4); the
    /// default.
    LloydRows,
}

impl CodecArg {
    /// The registry codec (`seed-log` is `log`).
    fn codec(self) -> Codec {
        match self {
            CodecArg::SeedLog | CodecArg::Log => Codec::Log,
            CodecArg::Linear => Codec::Linear,
            CodecArg::Lloyd => Codec::Lloyd,
            CodecArg::LloydRows => Codec::LloydRows,
        }
    }
}

fn parse_glob(s: &str) -> Result<String, String> {
    globset::Glob::new(s)
        .map(|_| s.to_string())
        .map_err(|e| e.kind().to_string())
}

fn parse_size(s: &str) -> Result<u64, String> {
    qins_stdx::parse_size(s).map_err(str::to_string)
}

fn parse_alignment(s: &str) -> Result<u32, String> {
    let a: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if alignment_is_valid(a) {
        Ok(a)
    } else {
        Err(format!("{a} is not a power of two from 64 to 1048576"))
    }
}

/// An indicatif bar over source bytes, with the tensor count in its message.
struct Bar {
    bar: ProgressBar,
    done: AtomicUsize,
    all: AtomicUsize,
}

impl Progress for Bar {
    fn begin(&self, tensors: usize, bytes: u64) {
        self.all.store(tensors, Ordering::Relaxed);
        self.bar.set_length(bytes);
        self.bar.set_message(format!("0/{tensors} tensors"));
    }
    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
    fn tensor_done(&self, _name: &str) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let all = self.all.load(Ordering::Relaxed);
        self.bar.set_message(format!("{done}/{all} tensors"));
    }
    fn end(&self) {
        self.bar.finish_and_clear();
    }
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
    let mut opts = ConvertOptions::new(cli.hf_dir.clone(), cli.out.clone().unwrap_or_default());
    opts.policy = PolicyOptions {
        codec: cli.codec.codec(),
        encode_embeddings: cli.encode_embeddings,
        include: cli.include.clone(),
        exclude: cli.exclude.clone(),
    };
    opts.alignment = cli.alignment;
    opts.max_shard_size = cli.max_shard_size;
    opts.overwrite = cli.force;
    opts.sync = !cli.no_sync;
    let mut stdout = std::io::stdout().lock();

    if cli.dry_run {
        let p = plan(&opts)
            .with_context(|| format!("planning the conversion of {}", cli.hf_dir.display()))?;
        let target = cli.out.clone().unwrap_or_else(|| PathBuf::from("OUT.qins"));
        if cli.json {
            serde_json::to_writer_pretty(
                &mut stdout,
                &serde_json::json!({
                    "plan": p,
                    "summary": p.summary(&target),
                }),
            )?;
            writeln!(stdout)?;
        } else {
            write!(stdout, "{}", p.render(&target))?;
        }
        return Ok(());
    }

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cli.threads.map_or(0, usize::from))
        .build()
        .context("starting worker threads")?;
    let show = !cli.quiet && std::io::stderr().is_terminal();
    let summary = if show {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} \
                 {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .expect("a valid template"),
        );
        let bar = Bar {
            bar,
            done: AtomicUsize::new(0),
            all: AtomicUsize::new(0),
        };
        let r = pool.install(|| convert(&opts, &bar));
        bar.bar.finish_and_clear();
        r
    } else {
        pool.install(|| convert(&opts, &NoProgress))
    }
    .with_context(|| format!("converting {}", cli.hf_dir.display()))?;

    if cli.json {
        serde_json::to_writer_pretty(&mut stdout, &summary)?;
        writeln!(stdout)?;
    } else if !cli.quiet {
        write!(stdout, "{}", summary.render())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn every_codec_is_selectable_and_lloyd_rows_is_the_default() {
        let codec = |args: &[&str]| {
            let mut argv = vec!["qins-convert", "m", "o.qins"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv).unwrap().codec.codec()
        };
        assert_eq!(codec(&[]), Codec::LloydRows);
        for (name, want) in [
            ("seed-log", Codec::Log),
            ("log", Codec::Log),
            ("linear", Codec::Linear),
            ("lloyd", Codec::Lloyd),
            ("lloyd-rows", Codec::LloydRows),
        ] {
            assert_eq!(codec(&["--codec", name]), want, "{name}");
        }
        // Every registry codec can be chosen.
        for c in Codec::ALL {
            assert_eq!(codec(&["--codec", c.name()]), *c);
        }
    }
}

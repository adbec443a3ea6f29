//! `qins-inspect FILE [--verify] [--json | --layout [--full]] [--against HF_DIR]`: what is in a
//! `.qins` file (or a set of shards, given by its index or any shard), and with `--against`,
//! how far its tensors are from the source weights.
//!
//! Exit status: 0 when the file is valid (and, with `--verify`, every checksum matches; with
//! `--against`, every tensor is in the source with its shape and dtype and every raw tensor is
//! bit-exact); 1 when it cannot be read or is invalid, or the comparison fails, with one line
//! `error: FILE: message` on stderr (`--verbose`: the chain of causes, one per line); 2 on a
//! usage error. Raw tensors that differ from the source are reported after the comparison is
//! written.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use qins_inspect::{Error, Format, Options};
use qins_read::ReadError;

/// Shows what is in a .qins file: header, tensors, assets, and where every byte goes. For a
/// model stored as a set of shards (spec §21), give its index or any shard: the set is shown,
/// then each shard, and --verify checks every shard.
#[derive(Parser, Debug)]
#[command(name = "qins-inspect", version, about)]
struct Cli {
    /// The .qins file, or a set's index (NAME.qins.index.json) or any of its shards.
    file: PathBuf,
    /// Also verify every checksum, the padding, sign bits and row scales (reads all data), of
    /// every shard of a set; exit 1 naming the first bad section (and shard).
    #[arg(long)]
    verify: bool,
    /// Print one JSON document instead of text (for scripts).
    #[arg(long, conflicts_with = "layout")]
    json: bool,
    /// Print the annotated layout: every header field and section with its offset, size and
    /// bytes.
    #[arg(long)]
    layout: bool,
    /// With --layout: show every LUT entry and every byte of every section.
    #[arg(long, requires = "layout")]
    full: bool,
    /// Compare every tensor with the Hugging Face directory the file was converted from: per
    /// encoded tensor and in total, relative RMSE, SNR in dB, largest error relative to
    /// max|w|, and shares of exact zeros; raw tensors must be bit-exact. Exit 1 if a tensor
    /// is missing from the source, has another shape or dtype, or a raw tensor differs.
    #[arg(long, value_name = "HF_DIR", conflicts_with = "layout")]
    against: Option<PathBuf>,

    /// On error, print the chain of causes one per line, instead of one line.
    #[arg(long, short)]
    verbose: bool,
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let path = cli.file.as_path();
    let name = path.display().to_string();
    let in_file = |e: ReadError| -> anyhow::Error {
        match e {
            // The I/O error's message names the path already.
            ReadError::Io { source, .. } => anyhow::Error::new(source).context(name.clone()),
            e => anyhow::Error::new(e).context(name.clone()),
        }
    };
    let files = qins_read::open_model(path).map_err(in_file)?;
    let model = files.parse().map_err(in_file)?;
    let opts = Options {
        format: match (cli.json, cli.layout) {
            (true, _) => Format::Json,
            (_, true) => Format::Layout,
            _ => Format::Text,
        },
        verify: cli.verify,
        full: cli.full,
    };
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let done = match &cli.against {
        None => qins_inspect::inspect_model(&model, &name, &opts, &mut out),
        Some(dir) => {
            qins_inspect::inspect_model_against(&model, &name, &opts, dir, &mut out).map(drop)
        }
    };
    match done {
        Ok(()) => Ok(()),
        Err(Error::Verify(e)) => Err(in_file(e)),
        Err(Error::Write(e)) => Err(e).context("stdout"),
        Err(Error::Against(e)) => Err(anyhow::Error::new(e).context(name.clone())),
    }
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        // `qins-inspect big.qins --layout | head`: the reader left, which is not an error.
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = io::stdout().flush();
            qins_stdx::print_error(&*e, cli.verbose);
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

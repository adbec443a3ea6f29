//! `qins-dump FILE`: the Rust reader's view of a file as the JSON document that
//! `tools/qins_reader.py dump` prints, so that the two readers can be compared.
//!
//! Exit status: 0 on success, 1 when the file cannot be read or is invalid (one line
//! `error: FILE: KIND: message` on stderr; `--verbose` adds the chain of causes), 2 on a usage
//! error.
//!
//! The file is verified first (§14). Each tensor's `decoded_crc32` is the CRC-32 of its decoded
//! little-endian f32 values (encoded tensors) or of its raw bytes (raw tensors).

use std::process::ExitCode;

use serde_json::json;

const USAGE: &str = "usage: qins-dump [--verbose] FILE";

const HELP: &str = "\
Prints the Rust reader's view of a verified .qins file as JSON (the document that
`tools/qins_reader.py dump` prints).

Usage: qins-dump [--verbose] FILE

Options:
  -v, --verbose  On error, also print the chain of causes, one per line
  -h, --help     Print help
  -V, --version  Print version

Exit status: 0 on success, 1 when the file cannot be read or is invalid (one line
`error: FILE: KIND: message` on stderr), 2 on a usage error.";

/// The command line: `--verbose` and one file, or `--help`/`--version`.
enum Args {
    Dump { path: String, verbose: bool },
    Help,
    Version,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut files, mut verbose, mut options) = (Vec::new(), false, true);
    for a in args {
        match a.as_str() {
            "--" if options => options = false,
            "-h" | "--help" if options => return Ok(Args::Help),
            "-V" | "--version" if options => return Ok(Args::Version),
            "-v" | "--verbose" if options => verbose = true,
            s if options && s.starts_with('-') && s != "-" => {
                return Err(format!("unexpected argument {s:?}"))
            }
            _ => files.push(a),
        }
    }
    match <[String; 1]>::try_from(files) {
        Ok([path]) => Ok(Args::Dump { path, verbose }),
        Err(files) if files.is_empty() => Err("the file is missing".into()),
        Err(_) => Err("expected one file".into()),
    }
}

fn main() -> ExitCode {
    let (path, verbose) = match parse_args(std::env::args().skip(1)) {
        Ok(Args::Dump { path, verbose }) => (path, verbose),
        Ok(Args::Help) => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Ok(Args::Version) => {
            println!("qins-dump {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match dump(&path) {
        Ok(doc) => {
            println!("{doc}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            match &e {
                // The I/O error's own message starts with the path.
                qins_read::ReadError::Io { source, .. } => {
                    eprintln!("error: {path}: {}: {source}", e.kind())
                }
                _ => eprintln!("error: {path}: {}: {e}", e.kind()),
            }
            if verbose {
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    eprintln!("caused by: {c}");
                    cause = c.source();
                }
            }
            ExitCode::from(1)
        }
    }
}

fn dump(path: &str) -> Result<serde_json::Value, qins_read::ReadError> {
    let file = qins_read::open(path.as_ref())?;
    let q = file.parse()?;
    q.verify()?;
    let tensors: Vec<_> = q
        .tensors()
        .map(|t| {
            let crc = match t.raw_bytes() {
                Some(raw) => crc32fast::hash(raw),
                None => {
                    let v = t.to_f32_vec().expect("a verified encoded tensor decodes");
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    crc32fast::hash(&bytes)
                }
            };
            json!({
                "name": t.name(),
                "dtype": t.dtype().name(),
                "shape": t.shape(),
                "codec": t.codec().map_or("raw", |c| c.name()),
                "row_scales": t.row_scales().is_some(),
                "param0": t.params()[0],
                "param1": t.params()[1],
                "decoded_crc32": crc,
            })
        })
        .collect();
    let assets: Vec<_> = q
        .assets()
        .map(|(name, data)| json!({"name": name, "size": data.len(), "crc32": crc32fast::hash(data)}))
        .collect();
    let (major, minor) = q.version();
    Ok(json!({
        "version": [major, minor],
        "alignment": q.alignment(),
        "tensors": tensors,
        "assets": assets,
        "metadata": q.metadata(),
    }))
}

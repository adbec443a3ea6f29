//! `qins-dump FILE`: the Rust reader's view of a model (a `.qins` file, or a set opened from
//! its index or any shard, spec §21) as the JSON document that `tools/qins_reader.py dump`
//! prints, so that the two readers can be compared.
//!
//! Exit status: 0 on success, 1 when the model cannot be read or is invalid (one line
//! `error: FILE: KIND: message` on stderr; `--verbose` adds the chain of causes; with
//! `--json-errors`, also `{"error": {"stage", "kind", "file", "message"}}` on stdout), 2 on a
//! usage error.
//!
//! The model is verified first (§14, every shard). Each tensor's `decoded_crc32` is the CRC-32
//! of its decoded little-endian f32 values (encoded tensors) or of its raw bytes (raw
//! tensors). A set's document has the model's tensors in the set's order, shard 1's assets,
//! metadata, version and alignment, and a `set` member: the index's file name,
//! `format_version`, `set_id`, `total_size` and `shards` (`file`, `size`, `header_crc32`).

use std::process::ExitCode;

use serde_json::json;

const USAGE: &str = "usage: qins-dump [--verbose] [--json-errors] FILE";

const HELP: &str = "\
Prints the Rust reader's view of a verified model as JSON (the document that
`tools/qins_reader.py dump` prints). FILE is a .qins file, a set's index, or any shard of a
set (opened as the whole set).

Usage: qins-dump [--verbose] [--json-errors] FILE

Options:
  -v, --verbose      On error, also print the chain of causes, one per line
      --json-errors  On error, also print {\"error\": {\"stage\", \"kind\", \"file\", \"message\"}}
                     on stdout (stage: open or verify; file: the file the error concerns)
  -h, --help         Print help
  -V, --version      Print version

Exit status: 0 on success, 1 when the model cannot be read or is invalid (one line
`error: FILE: KIND: message` on stderr), 2 on a usage error.";

/// The command line: the flags and one file, or `--help`/`--version`.
enum Args {
    Dump {
        path: String,
        verbose: bool,
        json_errors: bool,
    },
    Help,
    Version,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut files, mut verbose, mut json_errors, mut options) = (Vec::new(), false, false, true);
    for a in args {
        match a.as_str() {
            "--" if options => options = false,
            "-h" | "--help" if options => return Ok(Args::Help),
            "-V" | "--version" if options => return Ok(Args::Version),
            "-v" | "--verbose" if options => verbose = true,
            "--json-errors" if options => json_errors = true,
            s if options && s.starts_with('-') && s != "-" => {
                return Err(format!("unexpected argument {s:?}"))
            }
            _ => files.push(a),
        }
    }
    match <[String; 1]>::try_from(files) {
        Ok([path]) => Ok(Args::Dump {
            path,
            verbose,
            json_errors,
        }),
        Err(files) if files.is_empty() => Err("the file is missing".into()),
        Err(_) => Err("expected one file".into()),
    }
}

fn main() -> ExitCode {
    let (path, verbose, json_errors) = match parse_args(std::env::args().skip(1)) {
        Ok(Args::Dump {
            path,
            verbose,
            json_errors,
        }) => (path, verbose, json_errors),
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
        Err((stage, e)) => {
            if json_errors {
                let file = e.file().map_or(path.clone(), |f| f.display().to_string());
                let message = match &e {
                    qins_read::ReadError::Io { source, .. } => source.to_string(),
                    _ => e.to_string(),
                };
                println!(
                    "{}",
                    json!({"error": {
                        "stage": stage,
                        "kind": e.kind(),
                        "file": file,
                        "message": message,
                    }})
                );
            }
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

/// The model at `path`, opened (§17, §21.5) and verified (§14), as JSON; or the stage
/// (`open`, `verify`) and the error.
fn dump(path: &str) -> Result<serde_json::Value, (&'static str, qins_read::ReadError)> {
    let open = |e| ("open", e);
    let files = qins_read::open_model(path.as_ref()).map_err(open)?;
    let m = files.parse().map_err(open)?;
    m.verify().map_err(|e| ("verify", e))?;
    let tensors: Vec<_> = m
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
    let assets: Vec<_> = m
        .assets()
        .map(|(name, data)| json!({"name": name, "size": data.len(), "crc32": crc32fast::hash(data)}))
        .collect();
    let first = &m.files()[0];
    let (major, minor) = first.version();
    let mut doc = json!({
        "version": [major, minor],
        "alignment": first.alignment(),
        "tensors": tensors,
        "assets": assets,
        "metadata": m.metadata(),
    });
    if let Some((index_path, index)) = m.index() {
        let (major, minor) = index.version();
        let name = index_path
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned());
        doc["set"] = json!({
            "index": name,
            "format_version": [major, minor],
            "set_id": index.set_id(),
            "total_size": index.total_size(),
            "shards": index.shards().iter().map(|s| json!({
                "file": s.file,
                "size": s.size,
                "header_crc32": format!("{:08x}", s.header_crc32),
            })).collect::<Vec<_>>(),
        });
    }
    Ok(doc)
}

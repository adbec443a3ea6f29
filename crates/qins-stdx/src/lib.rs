//! What the QINS crates share that knows nothing of QINS, in the spirit of rust-analyzer's
//! `stdx`: things that could have been in `std`, written once here instead of once per crate.
//!
//! - [`remove_stale`]: the removal of the temporary files or directories that a process
//!   killed while building its output beside the target left behind (`qins-write` for files,
//!   `qins-export` for directories);
//! - [`error_report`] and [`print_error`]: the one line `error: outer: inner: ...` (or, with
//!   `--verbose`, one line per cause) that every binary prints on failure;
//! - [`parse_size`]: sizes such as `--max-shard-size 5GB`, as huggingface_hub writes them, and
//!   its default largest shard, [`HF_MAX_SHARD_SIZE`];
//! - [`direct::Direct`]: a file's data written around the page cache (`O_DIRECT`) by a thread
//!   of its own, for the synced outputs of `qins-write` and `qins-export`.
//!
//! No dependency but `rustix` on Linux (for the `O_DIRECT` flag), no knowledge of the format:
//! any crate of the workspace may use it.
#![forbid(unsafe_code)]

pub mod direct;

use std::error::Error;
use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::time::Duration;

/// How long a temporary must have gone unmodified before [`remove_stale`] considers it: longer
/// than a new writer takes between creating its temporary and locking it.
pub const STALE_AFTER: Duration = Duration::from_secs(60);

/// What kind of temporary [`remove_stale`] looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Temporary {
    /// A regular file, removed with `remove_file`.
    File,
    /// A directory, removed with everything in it.
    Dir,
}

/// Removes the temporaries in `dir` named `prefix`, six ASCII letters or digits (as `tempfile`
/// makes them), then `suffix`, of the kind `kind`, unmodified for [`STALE_AFTER`], that no
/// process holds locked: the leftovers of a process killed while building its output (SIGKILL,
/// a power cut). A running writer holds a lock on its own temporary (`File::try_lock` on the
/// file, or on the directory opened as a file), so that it is never removed; where the file
/// system has no locks, nothing is removed. Best effort: what cannot be read, locked or
/// removed stays.
pub fn remove_stale(dir: &Path, prefix: &OsStr, suffix: &OsStr, kind: Temporary) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let (prefix, suffix) = (prefix.as_encoded_bytes(), suffix.as_encoded_bytes());
    for entry in entries.flatten() {
        let name = entry.file_name();
        let ours = name
            .as_encoded_bytes()
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(suffix))
            .is_some_and(|mid| mid.len() == 6 && mid.iter().all(u8::is_ascii_alphanumeric));
        let old = entry.metadata().is_ok_and(|m| {
            let right_kind = match kind {
                Temporary::File => m.is_file(),
                Temporary::Dir => m.is_dir(),
            };
            right_kind
                && m.modified()
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age >= STALE_AFTER))
        });
        if !(ours && old) {
            continue;
        }
        let path = entry.path();
        if let Ok(file) = fs::File::open(&path) {
            if file.try_lock().is_ok() {
                let _ = match kind {
                    Temporary::File => fs::remove_file(&path),
                    Temporary::Dir => fs::remove_dir_all(&path),
                };
            }
        }
    }
}

/// The report of a failure as the binaries print it: one line `error: outer: inner: ...`
/// (each cause of `e`'s chain of `source`s after a colon, as anyhow's `{:#}` prints it), or with
/// `verbose`, `error: outer` then `caused by: inner` on a line of its own for each cause.
pub fn error_report(e: &(dyn Error + 'static), verbose: bool) -> String {
    let mut out = format!("error: {e}");
    let mut cause = e.source();
    while let Some(c) = cause {
        if verbose {
            out.push_str(&format!("\ncaused by: {c}"));
        } else {
            out.push_str(&format!(": {c}"));
        }
        cause = c.source();
    }
    out
}

/// Prints [`error_report`] of `e` on stderr. An `anyhow::Error` is given as `&*e`.
pub fn print_error(e: &(dyn Error + 'static), verbose: bool) {
    eprintln!("{}", error_report(e, verbose));
}

/// huggingface_hub's and transformers' default largest shard, 5 GB (5,000,000,000 bytes): the
/// `max_shard_size` of `split_torch_state_dict_into_shards` and of `save_pretrained`.
pub const HF_MAX_SHARD_SIZE: u64 = 5_000_000_000;

/// Parses a size as huggingface_hub and transformers write them: a number of bytes
/// (`1048576`), or a number followed by a unit, with or without a space: `KB`, `MB`, `GB`, `TB`
/// are powers of 1000 (`5GB` is 5,000,000,000 bytes), `KiB`, `MiB`, `GiB`, `TiB` powers of 1024,
/// `B` is bytes. Units are case-insensitive; the number may have a fraction (`1.5GB`), and the
/// result is rounded down to whole bytes. The size must be at least one byte. The error is
/// what is wrong, in a few words.
///
/// ```
/// assert_eq!(qins_stdx::parse_size("5GB"), Ok(5_000_000_000));
/// assert_eq!(qins_stdx::parse_size("2GiB"), Ok(2 << 30));
/// assert_eq!(qins_stdx::parse_size("500 MB"), Ok(500_000_000));
/// assert_eq!(qins_stdx::parse_size("4096"), Ok(4096));
/// assert_eq!(qins_stdx::parse_size("5 parsecs"), Err("unknown unit"));
/// ```
pub fn parse_size(text: &str) -> Result<u64, &'static str> {
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = (&s[..split], s[split..].trim());
    if number.is_empty() {
        return Err("no number");
    }
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err("unknown unit"),
    };
    let bytes = match number.split_once('.') {
        None => number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(multiplier))
            .ok_or("too large")?,
        Some((whole, frac)) => {
            if frac.contains('.') || (whole.is_empty() && frac.is_empty()) {
                return Err("not a number");
            }
            // Exact decimal arithmetic: whole × m + frac × m / 10^len(frac), rounded down.
            let whole: u64 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| "too large")?
            };
            let frac = frac.trim_end_matches('0');
            if frac.len() > 18 {
                return Err("too many decimals");
            }
            let digits: u128 = if frac.is_empty() {
                0
            } else {
                frac.parse().map_err(|_| "not a number")?
            };
            let scale = 10u128.pow(frac.len() as u32);
            let total = u128::from(whole) * u128::from(multiplier)
                + digits * u128::from(multiplier) / scale;
            u64::try_from(total).map_err(|_| "too large")?
        }
    };
    if bytes == 0 {
        return Err("must be at least one byte");
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;
    use std::time::SystemTime;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|l| l as &(dyn Error + 'static))
        }
    }

    #[test]
    fn reports_every_cause_on_one_line_or_one_per_line() {
        let e = Layer(
            "out.qins",
            Some(Box::new(Layer(
                "tensor \"w\"",
                Some(Box::new(Layer("no space", None))),
            ))),
        );
        assert_eq!(
            error_report(&e, false),
            "error: out.qins: tensor \"w\": no space"
        );
        assert_eq!(
            error_report(&e, true),
            "error: out.qins\ncaused by: tensor \"w\"\ncaused by: no space"
        );
        let alone = Layer("bad", None);
        assert_eq!(error_report(&alone, false), "error: bad");
        assert_eq!(error_report(&alone, true), "error: bad");
    }

    /// Stale temporaries of the right name and kind are removed; a locked one (a running
    /// writer's), a recent one, other names and the other kind stay.
    #[test]
    fn removes_stale_temporaries_and_keeps_live_ones() {
        for kind in [Temporary::File, Temporary::Dir] {
            let dir = tempfile::tempdir().unwrap();
            let at = |n: &str| dir.path().join(n);
            let long_ago = SystemTime::now() - 2 * STALE_AFTER;
            // An entry of kind `k`, opened (and aged if `old`).
            let make = |n: &str, k: Temporary, old: bool| {
                match k {
                    Temporary::File => drop(fs::File::create(at(n)).unwrap()),
                    Temporary::Dir => {
                        fs::create_dir(at(n)).unwrap();
                        fs::write(at(n).join("inside"), b"x").unwrap();
                    }
                }
                let f = fs::File::open(at(n)).unwrap();
                if old {
                    f.set_modified(long_ago).unwrap();
                }
                f
            };
            let other = match kind {
                Temporary::File => Temporary::Dir,
                Temporary::Dir => Temporary::File,
            };
            drop(make(".m.abc123.tmp", kind, true));
            let live = make(".m.def456.tmp", kind, true);
            live.lock().unwrap();
            let kept = [
                ".m.def456.tmp",
                ".m.ghi789.tmp",
                ".m.toolong1.tmp",
                ".m.ab-123.tmp",
                ".n.abc123.tmp",
                ".m.abc123.tmpx",
                ".m.dir123.tmp",
            ];
            drop(make(kept[1], kind, false));
            for n in &kept[2..6] {
                drop(make(n, kind, true));
            }
            drop(make(kept[6], other, true));

            remove_stale(dir.path(), OsStr::new(".m."), OsStr::new(".tmp"), kind);

            let mut left: Vec<String> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            left.sort();
            let mut want: Vec<String> = kept.iter().map(|n| n.to_string()).collect();
            want.sort();
            assert_eq!(left, want, "{kind:?}");
            drop(live);
        }
    }
}

#[cfg(test)]
mod size_tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        let ok = [
            ("5GB", 5_000_000_000),
            ("5gb", 5_000_000_000),
            ("500MB", 500_000_000),
            ("500 MB", 500_000_000),
            ("2GiB", 2 << 30),
            ("10KiB", 10 << 10),
            ("1TiB", 1 << 40),
            ("3TB", 3_000_000_000_000),
            ("7KB", 7_000),
            ("123", 123),
            ("123B", 123),
            ("1.5GB", 1_500_000_000),
            ("0.5KiB", 512),
            (".25MB", 250_000),
            ("2.", 2),
            (" 64 ", 64),
            ("1.0000000000000000000000", 1),
        ];
        for (s, v) in ok {
            assert_eq!(parse_size(s), Ok(v), "{s}");
        }
        for s in [
            "",
            "GB",
            "5 parsecs",
            "-5GB",
            "1e9",
            "0",
            "0.0001B",
            "1.2.3MB",
            ".",
            "99999999999TB",
            "18446744073709551616",
        ] {
            assert!(parse_size(s).is_err(), "{s:?} accepted");
        }
    }
}

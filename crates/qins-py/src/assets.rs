//! Writing assets to a directory, confined to it (spec §5): the extension's only writes.

use std::fs;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

/// Why an asset could not be written: the path and the cause.
#[derive(Debug)]
pub struct WriteFailure {
    /// The file or directory at fault.
    pub path: PathBuf,
    /// The cause.
    pub source: std::io::Error,
}

fn fail(path: &Path, kind: std::io::ErrorKind, msg: &str) -> WriteFailure {
    WriteFailure {
        path: path.to_path_buf(),
        source: std::io::Error::new(kind, msg.to_string()),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WriteFailure + '_ {
    move |source| WriteFailure {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes the assets `(name, bytes)` under `dir` and returns the files' paths.
///
/// `dir` is created if missing. Every asset's path stays inside it: every segment of a name
/// must be a plain name (the reader has refused any other, §5; this checks again), and a
/// directory on the way that exists must be a real directory, not a symbolic link, which
/// could lead out. All paths are checked before any file is written, so that a refusal
/// leaves nothing behind. Each file is written to a temporary file beside it and renamed into
/// place; an existing file is replaced only if `overwrite`.
pub fn write_all(
    dir: &Path,
    assets: &[(&str, &[u8])],
    overwrite: bool,
) -> Result<Vec<PathBuf>, WriteFailure> {
    for (name, _) in assets {
        place(dir, name, overwrite, false)?;
    }
    fs::create_dir_all(dir).map_err(io(dir))?;
    assets
        .iter()
        .map(|(name, bytes)| {
            let path = place(dir, name, overwrite, true)?;
            write(&path, bytes, overwrite)?;
            Ok(path)
        })
        .collect()
}

/// The path of asset `name` under `dir`, checked as [`write_all`] says; with `create`, the
/// missing directories on the way are created.
fn place(dir: &Path, name: &str, overwrite: bool, create: bool) -> Result<PathBuf, WriteFailure> {
    use std::io::ErrorKind;
    let parts: Vec<&str> = name.split('/').collect();
    let mut path = dir.to_path_buf();
    let mut missing = false;
    for (i, part) in parts.iter().enumerate() {
        let plain = matches!(
            Path::new(part).components().collect::<Vec<_>>()[..],
            [Component::Normal(p)] if p == *part
        );
        if !plain {
            return Err(fail(
                &dir.join(name),
                ErrorKind::InvalidInput,
                "asset name is not a plain relative path (spec §5)",
            ));
        }
        path.push(part);
        if missing {
            // Below a directory that does not exist yet, nothing exists.
            continue;
        }
        let last = i + 1 == parts.len();
        match fs::symlink_metadata(&path) {
            Ok(m) if !last && m.is_dir() => {}
            Ok(m) if !last => {
                let what = if m.file_type().is_symlink() {
                    "is a symbolic link: refusing to write through it (spec §5)"
                } else {
                    "is not a directory"
                };
                return Err(fail(&path, ErrorKind::InvalidInput, what));
            }
            Err(e) if !last && e.kind() == ErrorKind::NotFound => {
                if create {
                    fs::create_dir(&path).map_err(io(&path))?;
                } else {
                    missing = true;
                }
            }
            Err(e) if !last => return Err(io(&path)(e)),
            Ok(m) if m.is_dir() => {
                return Err(fail(&path, ErrorKind::AlreadyExists, "is a directory"));
            }
            Ok(_) if !overwrite => {
                return Err(fail(
                    &path,
                    ErrorKind::AlreadyExists,
                    "already exists (overwrite=True replaces it)",
                ));
            }
            // A file (or a link, which the rename replaces, never follows) to replace, or none.
            Ok(_) | Err(_) => {}
        }
    }
    Ok(path)
}

/// Writes `bytes` to a temporary file beside `path` and renames it to `path`; an existing
/// file is replaced only if `overwrite`.
fn write(path: &Path, bytes: &[u8], overwrite: bool) -> Result<(), WriteFailure> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".qins-asset-")
        .tempfile_in(parent)
        .map_err(io(parent))?;
    tmp.write_all(bytes).map_err(io(tmp.path()))?;
    if overwrite {
        tmp.persist(path).map_err(|e| io(path)(e.error))?;
    } else {
        tmp.persist_noclobber(path).map_err(|e| io(path)(e.error))?;
    }
    Ok(())
}

//! The target directory: built complete in a hidden sibling, then renamed into place.

use std::ffi::OsStr;
use std::fs;
use std::path::{Component, Path, PathBuf};

use qins_stdx::{remove_stale, Temporary};

use crate::ExportError;

/// A directory being built beside the target. Dropping it before [`Staging::commit`] removes
/// it, and the parent directories [`Staging::new`] created, and leaves the target untouched.
pub(crate) struct Staging {
    target: PathBuf,
    dir: Option<tempfile::TempDir>,
    /// Ancestors of the target created for it, outermost first: removed again on failure.
    created: Vec<PathBuf>,
    replace: bool,
    /// The temporary directory opened and locked while it is built, so that another export's
    /// [`remove_stale`] leaves it alone.
    _lock: Option<fs::File>,
}

impl Staging {
    /// Checks the target and creates the temporary directory `.NAME.tmp-XXXXXX` beside it.
    ///
    /// An existing target must be a directory; unless `force`, an empty one. With `force`, a
    /// non-empty one is replaced at [`Staging::commit`], unless it contains `input`.
    pub(crate) fn new(target: &Path, force: bool, input: &Path) -> Result<Staging, ExportError> {
        let exists = |reason| ExportError::TargetExists {
            path: target.to_path_buf(),
            reason,
        };
        let mut replace = false;
        let target = match fs::symlink_metadata(target) {
            Ok(meta) => {
                if meta.file_type().is_symlink() {
                    return Err(exists(
                        "is a symbolic link (give the directory it points to)",
                    ));
                }
                if !meta.is_dir() {
                    return Err(exists("exists and is not a directory"));
                }
                let io = ExportError::io("read directory", target);
                let empty = fs::read_dir(target).map_err(io)?.next().is_none();
                if !empty && !force {
                    return Err(exists(
                        "exists and is not empty (use --force to replace it)",
                    ));
                }
                let io = ExportError::io("resolve", target);
                let canonical = fs::canonicalize(target).map_err(io)?;
                if let Ok(inp) = fs::canonicalize(input) {
                    if inp.starts_with(&canonical) {
                        return Err(ExportError::TargetContainsInput {
                            path: target.to_path_buf(),
                            input: input.to_path_buf(),
                        });
                    }
                }
                replace = true;
                canonical
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                target.to_path_buf()
            }
            Err(e) => return Err(ExportError::io("inspect", target)(e)),
        };
        let name = match target.components().next_back() {
            Some(Component::Normal(name)) => name.to_os_string(),
            _ => return Err(exists("is not a directory name")),
        };
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let created = create_ancestors(&parent)?;
        let mut prefix = std::ffi::OsString::from(".");
        prefix.push(&name);
        prefix.push(".tmp-");
        // Never the `.NAME.old-XXXXXX` directory of a replaced target: that one may hold the
        // user's previous files.
        remove_stale(&parent, &prefix, OsStr::new(""), Temporary::Dir);
        let dir = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir_in(&parent)
            .map_err(|source| {
                remove_ancestors(&created);
                let mut pattern = prefix.clone();
                pattern.push("XXXXXX");
                ExportError::TargetUnwritable {
                    path: parent.join(pattern),
                    source,
                }
            })?;
        // Where a directory cannot be opened or locked, nothing is ever removed as stale.
        let lock = fs::File::open(dir.path())
            .ok()
            .filter(|d| d.try_lock().is_ok());
        Ok(Staging {
            target,
            dir: Some(dir),
            created,
            replace,
            _lock: lock,
        })
    }

    /// The temporary directory being built.
    pub(crate) fn path(&self) -> &Path {
        self.dir.as_ref().expect("not committed").path()
    }

    /// Writes `bytes` to `name` (a relative path with `/` separators, checked by the reader,
    /// spec §5) inside the temporary directory, creating subdirectories. Each component is
    /// checked again here so that nothing is written outside the directory.
    pub(crate) fn write_asset(&self, name: &str, bytes: &[u8]) -> Result<(), ExportError> {
        write_synced(&self.file_path(name, "write asset")?, bytes)
    }

    /// The path of `name` (a relative path with `/` separators) inside the temporary
    /// directory, its subdirectories created; each component is checked so that nothing is
    /// written outside the directory (`op` names what was being done in the error).
    pub(crate) fn file_path(&self, name: &str, op: &'static str) -> Result<PathBuf, ExportError> {
        let mut path = self.path().to_path_buf();
        for part in name.split('/') {
            let ok = matches!(Path::new(part).components().collect::<Vec<_>>()[..], [Component::Normal(p)] if p == part);
            if !ok {
                // The reader refuses such names (spec §5); this is a second line of defence.
                return Err(ExportError::Io {
                    op,
                    path: PathBuf::from(name),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "not a safe relative path",
                    ),
                });
            }
            path.push(part);
        }
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(ExportError::io("create directory", dir))?;
        }
        Ok(path)
    }

    /// Moves the complete directory into place. An existing target (empty, or replaced with
    /// `force`) is exchanged with it in one step where the system can ([`exchange`]), so that
    /// the target's path never lacks a directory, and then removed from the temporary name.
    /// Elsewhere it is first moved aside to `.NAME.old-XXXXXX`, then removed once the new one
    /// is in place; if the final rename fails it is moved back.
    pub(crate) fn commit(mut self) -> Result<(), ExportError> {
        let dir = self.dir.take().expect("committed once");
        let parent = dir
            .path()
            .parent()
            .expect("a temporary directory has a parent")
            .to_path_buf();
        if self.replace && exchange(dir.path(), &self.target) {
            self.created.clear();
            // The temporary name now holds the replaced directory.
            let replaced = dir.path().to_path_buf();
            let _ = dir.keep();
            fs::remove_dir_all(&replaced)
                .map_err(ExportError::io("remove the replaced directory", &replaced))?;
            sync_dir(&parent);
            return Ok(());
        }
        let mut old = None;
        if self.replace {
            let mut prefix = std::ffi::OsString::from(".");
            prefix.push(self.target.file_name().expect("checked in new"));
            prefix.push(".old-");
            // An empty placeholder with a unique name; the rename below replaces it.
            let aside = tempfile::Builder::new()
                .prefix(&prefix)
                .tempdir_in(&parent)
                .map_err(|source| {
                    let mut pattern = prefix.clone();
                    pattern.push("XXXXXX");
                    ExportError::TargetUnwritable {
                        path: parent.join(pattern),
                        source,
                    }
                })?
                .keep();
            if let Err(e) = fs::rename(&self.target, &aside) {
                let _ = fs::remove_dir(&aside);
                self.dir = Some(dir);
                return Err(ExportError::io("move aside", &self.target)(e));
            }
            old = Some(aside);
        }
        if let Err(e) = fs::rename(dir.path(), &self.target) {
            if let Some(aside) = &old {
                let _ = fs::rename(aside, &self.target);
            }
            self.dir = Some(dir);
            return Err(ExportError::io("rename into place", &self.target)(e));
        }
        let _ = dir.keep();
        self.created.clear();
        if let Some(aside) = old {
            fs::remove_dir_all(&aside)
                .map_err(ExportError::io("remove the replaced directory", &aside))?;
        }
        sync_dir(&parent);
        Ok(())
    }
}

/// Makes the renames in `dir` durable where the platform allows syncing a directory.
fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Swaps the directories `a` and `b` in one step (Linux `renameat2` with `RENAME_EXCHANGE`);
/// `false` if the system or the file system cannot (the caller then renames twice).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> bool {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).is_ok()
}

/// Elsewhere: never in one step.
#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> bool {
    false
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
        remove_ancestors(&self.created);
    }
}

/// Creates `dir` and its missing ancestors; returns those it created, outermost first.
fn create_ancestors(dir: &Path) -> Result<Vec<PathBuf>, ExportError> {
    let mut missing = Vec::new();
    let mut d = dir;
    while !d.as_os_str().is_empty() && fs::symlink_metadata(d).is_err() {
        missing.push(d.to_path_buf());
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    missing.reverse();
    let mut created = Vec::new();
    for d in missing {
        if let Err(source) = fs::create_dir(&d) {
            remove_ancestors(&created);
            return Err(ExportError::TargetUnwritable { path: d, source });
        }
        created.push(d);
    }
    Ok(created)
}

/// Removes directories created by [`create_ancestors`], innermost first, if still empty.
fn remove_ancestors(created: &[PathBuf]) {
    for d in created.iter().rev() {
        let _ = fs::remove_dir(d);
    }
}

/// Writes `bytes` to a new file at `path` and syncs it to disk.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    use std::io::Write;
    let io = || ExportError::io("write", path);
    let mut f = fs::File::create(path).map_err(io())?;
    f.write_all(bytes).map_err(io())?;
    f.sync_all().map_err(io())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On Linux, where CI runs, the two directories trade places in one step (on the file
    /// systems a temporary directory lives on); elsewhere `exchange` declines and moves nothing.
    #[test]
    fn exchange_swaps_two_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        for (d, f) in [(&a, "from_a"), (&b, "from_b")] {
            fs::create_dir(d).unwrap();
            fs::write(d.join(f), f).unwrap();
        }
        let swapped = exchange(&a, &b);
        assert_eq!(swapped, cfg!(target_os = "linux"));
        let (in_a, in_b) = if swapped {
            ("from_b", "from_a")
        } else {
            ("from_a", "from_b")
        };
        assert_eq!(fs::read_to_string(a.join(in_a)).unwrap(), in_a);
        assert_eq!(fs::read_to_string(b.join(in_b)).unwrap(), in_b);
        assert!(!a.join(in_b).exists() && !b.join(in_a).exists());
        // A missing side is refused, and nothing moves.
        assert!(!exchange(&a, &tmp.path().join("missing")));
        assert!(a.join(in_a).exists());
    }
}

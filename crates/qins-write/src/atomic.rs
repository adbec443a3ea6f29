//! The output file: built as a temporary file beside the target, flushed to disk in the
//! background as it grows, synced, and renamed into place only when complete; and the removal
//! of the temporary files that writers killed while writing left behind.

use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use qins_stdx::{remove_stale, Temporary};

use crate::WriteError;
use qins_stdx::direct::{self, Direct};

#[cfg(doc)]
use crate::Writer;

/// The temporary file `.NAME.XXXXXX.tmp` beside the target `NAME`, of its final size, written
/// at offsets. Dropping it before [`AtomicFile::commit`] removes it and leaves the target
/// untouched. It holds a lock on itself, so that [`remove_stale`] run by another writer of the
/// same target leaves it alone; it runs it itself, before it creates its file.
pub(crate) struct AtomicFile {
    target: PathBuf,
    overwrite: bool,
    tmp: tempfile::NamedTempFile,
    /// Bytes counted by [`AtomicFile::wrote`] since the last background flush was asked for.
    unflushed: u64,
    flusher: Option<Flusher>,
    /// Whether the file goes to disk before the rename ([`AtomicFile::set_sync`]).
    sync: bool,
    /// Whether the data is written direct ([`Direct`]), decided at the first write.
    mode: Mode,
}

/// How an [`AtomicFile`] writes its data.
enum Mode {
    /// Not decided yet (nothing written): the file's size.
    Undecided { size: u64 },
    /// Direct (boxed: most writers, of small files or not synced, never have one).
    Direct(Box<Direct>),
    /// Through the page cache.
    Buffered,
}

/// Files from this size on are written direct when synced: below it, the few blocks at stake
/// do not pay for a thread. Any size but 0 in unit tests, which exercise both paths.
const DIRECT_MIN: u64 = if cfg!(test) { 1 } else { direct::MIN_SIZE };

impl AtomicFile {
    /// Removes the stale temporary files of `path`, then creates a temporary file of `size`
    /// zero bytes beside it (the padding between sections stays zero).
    pub(crate) fn create(
        path: &Path,
        size: u64,
        overwrite: bool,
    ) -> Result<AtomicFile, WriteError> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let stem = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
        let io_err = |source| WriteError::Io {
            path: path.into(),
            source,
        };
        // The temporaries that writers of this target killed while writing left behind.
        remove_stale(
            dir,
            OsStr::new(&format!(".{stem}.")),
            OsStr::new(".tmp"),
            Temporary::File,
        );
        // Mode 0666 filtered by the umask, as any new file: the temporary file becomes the
        // output by a rename, so its mode is the output's.
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{stem}."))
            .suffix(".tmp")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .tempfile_in(dir)
            .map_err(io_err)?;
        // Held until the file is dropped: it tells the next writer's `remove_stale` that this
        // file is in use. Where the file system has no locks, nothing is ever removed.
        let _ = tmp.as_file().try_lock();
        tmp.as_file().set_len(size).map_err(io_err)?;
        Ok(AtomicFile {
            target: path.into(),
            overwrite,
            tmp,
            unflushed: 0,
            flusher: None,
            sync: true,
            mode: Mode::Undecided { size },
        })
    }

    /// Writes `bytes` at `offset` of the temporary file: direct if the file is synced and
    /// large enough ([`Direct`]), else through the page cache. Each byte is written once.
    pub(crate) fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<(), WriteError> {
        self.put(offset, bytes, None)
    }

    /// Writes `bytes` at `offset`, where `bytes` are also bytes `src_at..` of `src`: as
    /// [`AtomicFile::write_at`], the whole blocks copied from `src` by the direct writer.
    pub(crate) fn copy_at(
        &mut self,
        offset: u64,
        bytes: &[u8],
        src: &std::fs::File,
        src_at: u64,
    ) -> Result<(), WriteError> {
        self.put(offset, bytes, Some((src, src_at)))
    }

    /// [`AtomicFile::write_at`], or [`AtomicFile::copy_at`] given the source.
    fn put(
        &mut self,
        offset: u64,
        bytes: &[u8],
        src: Option<(&std::fs::File, u64)>,
    ) -> Result<(), WriteError> {
        self.decide();
        let r = match (&mut self.mode, src) {
            (Mode::Direct(d), Some((src, src_at))) => d.copy_at(offset, bytes, src, src_at),
            (Mode::Direct(d), None) => d.write_at(offset, bytes),
            _ => self.tmp.as_file().write_all_at(bytes, offset),
        };
        r.map_err(|source| WriteError::Io {
            path: self.tmp.path().into(),
            source,
        })
    }

    /// Decides at the first write whether the data goes direct.
    fn decide(&mut self) {
        if let Mode::Undecided { size } = self.mode {
            self.mode = match self.sync && size >= DIRECT_MIN {
                true => Direct::open(self.tmp.path(), self.tmp.as_file())
                    .map_or(Mode::Buffered, |d| Mode::Direct(Box::new(d))),
                false => Mode::Buffered,
            };
        }
    }

    /// Whether a synced file may be written direct (the default); tests turn it off, before
    /// the first write, to exercise the page cache's path.
    #[cfg(test)]
    pub(crate) fn allow_direct(&mut self, allow: bool) {
        if !allow {
            self.mode = Mode::Buffered;
        }
    }

    /// Whether the file is synced to disk: in the background as it grows, and before the
    /// rename (the default). Without, the bytes and the rename are the same, but a crash of
    /// the machine (not of the process) can leave the target empty or partial afterwards.
    pub(crate) fn set_sync(&mut self, sync: bool) {
        self.sync = sync;
    }

    /// Counts `len` bytes just written, and asks for a background flush every
    /// [`FLUSH_EVERY`] bytes (the flushing thread starts with the first).
    pub(crate) fn wrote(&mut self, len: u64) {
        if !self.sync || matches!(self.mode, Mode::Direct(_)) {
            return;
        }
        self.unflushed += len;
        if self.unflushed < FLUSH_EVERY {
            return;
        }
        self.unflushed = 0;
        if self.flusher.is_none() {
            // Without a second handle on the file there is no background flush, only the
            // final sync.
            let Ok(file) = self.tmp.as_file().try_clone() else {
                return;
            };
            self.flusher = Some(Flusher::start(file));
        }
        if let Some(f) = &self.flusher {
            f.ask();
        }
    }

    /// Waits for the background flushes, syncs the file (unless told not to), and renames it
    /// to the target (refusing an existing target unless overwriting).
    pub(crate) fn commit(mut self) -> Result<(), WriteError> {
        let io_err = |path: &Path, source| WriteError::Io {
            path: path.into(),
            source,
        };
        // What is still held for direct writes, then the background flushes: an error of
        // theirs is the file's, even if the final sync then succeeds.
        if let Mode::Direct(d) = std::mem::replace(&mut self.mode, Mode::Buffered) {
            d.finish().map_err(|e| io_err(self.tmp.path(), e))?;
        }
        if let Some(mut f) = self.flusher.take() {
            f.stop().map_err(|e| io_err(self.tmp.path(), e))?;
        }
        if self.sync {
            self.tmp
                .as_file()
                .sync_all()
                .map_err(|e| io_err(self.tmp.path(), e))?;
        }
        let target = self.target;
        if self.overwrite {
            self.tmp
                .persist(&target)
                .map_err(|e| io_err(&target, e.error))?;
        } else {
            self.tmp.persist_noclobber(&target).map_err(|e| {
                if e.error.kind() == io::ErrorKind::AlreadyExists {
                    WriteError::Exists {
                        path: target.clone(),
                    }
                } else {
                    io_err(&target, e.error)
                }
            })?;
        }
        Ok(())
    }
}

/// Tensor bytes written between two background flushes (less in unit tests, to exercise them).
const FLUSH_EVERY: u64 = if cfg!(test) { 64 << 10 } else { 64 << 20 };

/// A thread that flushes the temporary file's written data to disk (`fdatasync`) whenever the
/// writer asks, while the producer goes on computing, so that the disk works during the
/// conversion and the final `sync_all` of [`AtomicFile::commit`] has little left to write. It
/// changes when pages reach the disk, never what the file holds nor the final sync.
struct Flusher {
    /// At most one request waits: a flush asked for while one runs covers what came since.
    asks: Option<mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl Flusher {
    fn start(file: std::fs::File) -> Flusher {
        let (asks, requests) = mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("qins-write flush".into())
            .spawn(move || {
                for () in requests {
                    file.sync_data()?;
                    // The pages now on disk are dropped from the page cache, so that the
                    // next writes reuse them instead of growing the cache with fresh pages:
                    // on the machines we measure, filling fresh pages cost several times as
                    // much system time, and varied threefold from run to run. Advice only:
                    // pages still dirty are kept, and the file's bytes are unchanged.
                    #[cfg(target_os = "linux")]
                    let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
                }
                Ok(())
            })
            .ok();
        Flusher {
            asks: Some(asks),
            thread,
        }
    }

    /// Asks for a flush unless one is already waiting.
    fn ask(&self) {
        if let Some(asks) = &self.asks {
            let _ = asks.try_send(());
        }
    }

    /// Waits for the flushes asked for, and gives the first error of any.
    fn stop(&mut self) -> io::Result<()> {
        self.asks = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("the flushing thread panicked")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Plan, TensorSpec, Writer};
    use qins_format::{Dtype, Storage};
    use qins_stdx::STALE_AFTER;

    #[test]
    fn stale_temporary_files_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let at = |n: &str| dir.path().join(n);
        let long_ago = std::time::SystemTime::now() - 2 * STALE_AFTER;
        let make = |n: &str, old: bool| {
            let f = std::fs::File::create(at(n)).unwrap();
            if old {
                f.set_modified(long_ago).unwrap();
            }
            f
        };
        drop(make(".m.qins.abc123.tmp", true));
        let live = make(".m.qins.def456.tmp", true);
        live.lock().unwrap();
        let kept = [
            ".m.qins.def456.tmp",
            ".m.qins.ghi789.tmp",
            ".m.qins.toolong1.tmp",
            ".n.qins.abc123.tmp",
            "m.qins.abc123.tmp",
        ];
        drop(make(kept[1], false));
        for n in &kept[2..] {
            drop(make(n, true));
        }
        std::fs::create_dir(at(".m.qins.dir123.tmp")).unwrap();
        let dir_entry = std::fs::File::open(at(".m.qins.dir123.tmp")).unwrap();
        dir_entry.set_modified(long_ago).unwrap();

        let mut plan = Plan::new();
        plan.tensors
            .push(TensorSpec::new("t", Dtype::U8, vec![3], Storage::Raw));
        let mut w = Writer::create(&at("m.qins"), plan, false).unwrap();
        w.write_raw(&[1, 2, 3]).unwrap();
        w.finish().unwrap();

        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut want: Vec<String> = kept.iter().map(|n| n.to_string()).collect();
        want.extend([".m.qins.dir123.tmp".to_string(), "m.qins".to_string()]);
        want.sort();
        assert_eq!(left, want);
        drop(live);
    }

    #[test]
    fn background_flushes_and_direct_writes_leave_the_file_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let n = 10 * FLUSH_EVERY as usize + 12_345;
        let data: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
        let mut files = Vec::new();
        // (name, part size, sync, direct)
        for (name, part, sync, direct) in [
            ("whole.qins", n, true, false),
            ("parts.qins", 7_777, true, false),
            ("nosync.qins", 7_777, false, false),
            ("direct.qins", 7_777, true, true),
            ("direct-whole.qins", n, true, true),
        ] {
            let mut plan = Plan::new();
            plan.tensors.push(TensorSpec::new(
                "t",
                Dtype::U8,
                vec![n as u64],
                Storage::Raw,
            ));
            let path = dir.path().join(name);
            let mut w = Writer::create(&path, plan, false).unwrap();
            w.set_sync(sync);
            w.file.allow_direct(direct);
            for p in data.chunks(part) {
                w.write_raw_part(p).unwrap();
            }
            assert_eq!(w.file.flusher.is_some(), sync && !direct, "{name}");
            assert_eq!(matches!(w.file.mode, Mode::Direct(_)), direct, "{name}");
            w.finish().unwrap();
            files.push(std::fs::read(&path).unwrap());
        }
        for (k, f) in files.iter().enumerate().skip(1) {
            assert!(*f == files[0], "file {k} differs");
        }
        assert!(files[0].windows(n).any(|w| w == data.as_slice()));
    }
}

//! A synced file's data written around the page cache (`O_DIRECT`), by a thread of its own.
//!
//! A buffered write copies every byte into the page cache, and a synced writer then waits for
//! the same bytes to be written back: on the machines we measure, that copy into freshly
//! allocated pages was a third of a conversion's CPU time, and its cost varied threefold from
//! run to run. A direct write hands the disk the writer's own buffer instead, so neither the
//! copy nor the pages exist; the bytes that reach the file are the same.
//!
//! Direct writes need whole blocks ([`BLOCK`] bytes at offsets that are multiples of it, from
//! memory aligned the same way). The writer's sections do not start or end on blocks, so the
//! bytes are sorted as they come:
//!
//! - A **run** is a stretch of the file written front to back by consecutive calls (a raw
//!   tensor's parts, a tensor's codes, its signs, the header). A write that continues no run
//!   starts one.
//! - A block that lies wholly within one run is a **full block**: it is staged in an aligned
//!   buffer and written direct by the writing thread, many blocks at a time.
//! - The bytes of a run in a block it does not fill (its first block if it starts inside one,
//!   its last if it ends inside one) are an **edge**: kept in memory, and written through the
//!   page cache by [`Direct::finish`], once every direct write is done.
//!
//! So no block is ever written both ways, and nothing is written through the page cache while
//! a direct write is in flight: the two paths never meet on a page. Padding between sections
//! belongs to no run and is never written (the file was created at its size, all zeros).
//! Writes to the same bytes twice are not supported (`qins-write`'s writer writes every section
//! once, front to back; `qins-export`'s writes its file front to back).
//!
//! A raw tensor's bytes need not pass through the writer at all: given with the file they come
//! from ([`Direct::copy_at`]), their whole blocks are read from that file by the writing
//! thread when no staging buffer waits (buffers hold memory and may hold up the writer; copies
//! hold neither), so a model's large raw tensors fill the disk's idle time instead of making
//! the writer wait for the disk.
//!
//! Where the file system refuses a direct write (it has no `O_DIRECT`, or other alignment
//! rules), that write and every later one go through the page cache instead, from the same
//! thread: slower, the same bytes.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
#[cfg(target_os = "linux")]
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// The size from which a synced file is worth writing direct: below it, the few blocks at
/// stake do not pay for a thread (the writers of `.qins` and safetensors files use it).
pub const MIN_SIZE: u64 = 16 << 20;

/// Bytes per block: offsets, lengths and buffer addresses of direct writes are multiples of
/// it (4096 covers devices with 512- and 4096-byte sectors, and the page size).
pub const BLOCK: usize = 4096;

/// Bytes per staging buffer: full blocks are written direct this many at a time, or fewer when
/// the writer moves on to another run. Small in unit tests, to exercise every path.
const STAGE: usize = if cfg!(test) { 4 * BLOCK } else { 8 << 20 };

/// Staging buffers at most: one being filled, the others being written.
const BUFFERS: usize = 3;

/// A block-aligned buffer of [`STAGE`] bytes (a vector a block longer, used from its first
/// aligned byte: no allocator call with an alignment, and no `unsafe`).
struct Aligned {
    bytes: Vec<u8>,
    at: usize,
}

impl Aligned {
    fn new() -> Aligned {
        let bytes = vec![0u8; STAGE + BLOCK];
        let at = (BLOCK - bytes.as_ptr() as usize % BLOCK) % BLOCK;
        Aligned { bytes, at }
    }

    fn get(&self) -> &[u8] {
        &self.bytes[self.at..self.at + STAGE]
    }

    fn get_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.at..self.at + STAGE]
    }
}

/// A stretch of the file written front to back (see the module documentation).
struct Run {
    /// Where the run continues.
    next: u64,
    /// The first byte not yet handed to the writing thread nor kept as an edge: a block
    /// boundary once past the run's first block.
    staged_from: u64,
    /// When the run is not the one being staged: its bytes from `staged_from` to `next` (less
    /// than a block).
    tail: Vec<u8>,
}

/// A staging buffer's first `len` bytes, for offset `at`.
struct Job {
    at: u64,
    buf: Aligned,
    len: usize,
}

/// Whole blocks to copy from another file: `len` bytes at `src_at` of `src` to offset `at`.
struct Copy {
    src: Arc<File>,
    src_at: u64,
    at: u64,
    len: u64,
}

/// What the writer and its writing thread share.
#[derive(Default)]
struct Queue {
    /// Staging buffers to write, first: they hold memory, and the writer may be waiting for one.
    writes: VecDeque<Job>,
    /// Copies, when no buffer waits: they hold no memory, so they fill the disk's idle time.
    copies: VecDeque<Copy>,
    /// Buffers written, for the writer to reuse.
    free: Vec<Aligned>,
    /// No more work is coming: the thread ends once the queue is empty.
    closed: bool,
    /// The thread has ended on an error (which its join gives).
    failed: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Work for the thread, or the queue closed.
    work: Condvar,
    /// A buffer given back, or the thread failed.
    freed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing is left half-done under the lock: a poisoned one is still consistent.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Writes a file's data direct; see the module documentation.
pub struct Direct {
    /// Buffered handle on the file, for the edges.
    file: File,
    runs: Vec<Run>,
    /// Index into `runs` by where each run continues.
    by_next: HashMap<u64, usize>,
    /// The run being staged into `stage`, if any.
    current: Option<usize>,
    stage: Option<Aligned>,
    /// Bytes written through the page cache at the end: (offset, bytes).
    edges: Vec<(u64, Vec<u8>)>,
    shared: Arc<Shared>,
    /// Buffers that exist (at most [`BUFFERS`]).
    made: usize,
    thread: Option<JoinHandle<io::Result<()>>>,
}

/// How the writing thread writes a stretch of whole blocks from an aligned buffer: a
/// parameter so that tests can check the alignment and make it fail.
type WriteFn = fn(&File, &[u8], u64) -> io::Result<()>;

#[cfg(target_os = "linux")]
fn write_direct(direct: &File, bytes: &[u8], at: u64) -> io::Result<()> {
    direct.write_all_at(bytes, at)
}

impl Direct {
    /// Opens `path` (the file `file` is a handle on) for direct writes, and starts the writing
    /// thread; `None` where the file system has no direct writes or the thread cannot start.
    #[cfg(target_os = "linux")]
    pub fn open(path: &Path, file: &File) -> Option<Direct> {
        let direct = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
            .open(path)
            .ok()?;
        Direct::start(direct, file.try_clone().ok()?, write_direct)
    }

    /// Elsewhere: no direct writes (everything goes through the page cache).
    #[cfg(not(target_os = "linux"))]
    pub fn open(_: &Path, _: &File) -> Option<Direct> {
        None
    }

    /// The writer of `direct` (a handle opened for direct writes, or any handle in tests) and
    /// `buffered`, whose thread writes with `write`.
    fn start(direct: File, buffered: File, write: WriteFn) -> Option<Direct> {
        let shared = Arc::new(Shared::default());
        let fallback = buffered.try_clone().ok()?;
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("qins-write direct".into())
            .spawn(move || {
                let r = Writing {
                    direct,
                    fallback,
                    write,
                    refused: false,
                    copy_buf: None,
                }
                .run(&theirs);
                if r.is_err() {
                    theirs.lock().failed = true;
                    theirs.freed.notify_all();
                }
                r
            })
            .ok()?;
        Some(Direct {
            file: buffered,
            runs: Vec::new(),
            by_next: HashMap::new(),
            current: None,
            stage: None,
            edges: Vec::new(),
            shared,
            made: 0,
            thread: Some(thread),
        })
    }

    /// Writes `bytes` at `offset` (see the module documentation for what is written when).
    pub fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let k = self.run_at(offset);
        let mut bytes = bytes;
        // The run's first block, if it starts inside one: an edge.
        let run = &mut self.runs[k];
        if run.next < run.staged_from {
            let n = bytes.len().min((run.staged_from - run.next) as usize);
            self.edges.push((run.next, bytes[..n].to_vec()));
            run.next += n as u64;
            bytes = &bytes[n..];
        }
        if !bytes.is_empty() {
            self.stage_into(k)?;
            while !bytes.is_empty() {
                let run = &mut self.runs[k];
                let at = (run.next - run.staged_from) as usize;
                let n = bytes.len().min(STAGE - at);
                let stage = self.stage.as_mut().expect("staging for the current run");
                stage.get_mut()[at..at + n].copy_from_slice(&bytes[..n]);
                run.next += n as u64;
                bytes = &bytes[n..];
                if at + n == STAGE {
                    self.submit(k, STAGE)?;
                    self.stage = Some(self.buffer()?);
                }
            }
        }
        let next = self.runs[k].next;
        self.by_next.insert(next, k);
        Ok(())
    }

    /// The run that continues at `offset` (a new one if none does), taken out of `by_next`
    /// (the caller puts it back where it then continues).
    fn run_at(&mut self, offset: u64) -> usize {
        self.by_next.remove(&offset).unwrap_or_else(|| {
            self.runs.push(Run {
                next: offset,
                staged_from: offset.next_multiple_of(BLOCK as u64),
                tail: Vec::new(),
            });
            self.runs.len() - 1
        })
    }

    /// Writes `bytes` at `offset`, where `bytes` are also bytes `src_at..` of `src`: the whole
    /// blocks among them are copied from `src` by the writing thread when the disk has nothing
    /// else to do, so that the writer neither copies them nor waits for them; the rest as
    /// [`Direct::write_at`].
    pub fn copy_at(
        &mut self,
        offset: u64,
        bytes: &[u8],
        src: &File,
        src_at: u64,
    ) -> io::Result<()> {
        // Up to a block boundary through the staging (the run's first block is an edge).
        let p = bytes
            .len()
            .min(((BLOCK as u64 - offset % BLOCK as u64) % BLOCK as u64) as usize);
        self.write_at(offset, &bytes[..p])?;
        let at = offset + p as u64;
        let whole = (bytes.len() - p) / BLOCK * BLOCK;
        if whole > 0 {
            let k = self.run_at(at);
            if self.current == Some(k) {
                // Its staged bytes end on a block: all of them go, no tail stays.
                self.park()?;
            }
            let src = Arc::new(src.try_clone()?);
            let run = &mut self.runs[k];
            debug_assert!(run.tail.is_empty() && run.staged_from == at);
            run.next += whole as u64;
            run.staged_from = run.next;
            self.by_next.insert(run.next, k);
            self.enqueue(|q| {
                q.copies.push_back(Copy {
                    src,
                    src_at: src_at + p as u64,
                    at,
                    len: whole as u64,
                })
            })?;
        }
        self.write_at(at + whole as u64, &bytes[p + whole..])
    }

    /// Makes run `k` the one staged: the run staged before hands its full blocks to the
    /// writing thread and keeps the rest as its tail; `k`'s tail goes to the front of the
    /// buffer.
    fn stage_into(&mut self, k: usize) -> io::Result<()> {
        if self.current == Some(k) {
            return Ok(());
        }
        self.park()?;
        let mut stage = match self.stage.take() {
            Some(s) => s,
            None => self.buffer()?,
        };
        let run = &mut self.runs[k];
        stage.get_mut()[..run.tail.len()].copy_from_slice(&run.tail);
        run.tail = Vec::new();
        self.stage = Some(stage);
        self.current = Some(k);
        Ok(())
    }

    /// Hands the current run's full blocks to the writing thread and keeps the rest (less than
    /// a block) as its tail; the staging buffer stays for the next run.
    fn park(&mut self) -> io::Result<()> {
        let Some(k) = self.current.take() else {
            return Ok(());
        };
        let run = &self.runs[k];
        let staged = (run.next - run.staged_from) as usize;
        let full = staged / BLOCK * BLOCK;
        let tail = self
            .stage
            .as_ref()
            .expect("staging for the current run")
            .get()[full..staged]
            .to_vec();
        if full > 0 {
            self.submit(k, full)?;
        }
        self.runs[k].tail = tail;
        Ok(())
    }

    /// Sends the first `len` bytes of the staging buffer (whole blocks of run `k`) to the
    /// writing thread, and moves the run's staging point past them. The staging buffer is
    /// gone: the caller takes another if it needs one.
    fn submit(&mut self, k: usize, len: usize) -> io::Result<()> {
        let buf = self.stage.take().expect("staging for the current run");
        let run = &mut self.runs[k];
        let at = run.staged_from;
        run.staged_from += len as u64;
        self.enqueue(|q| q.writes.push_back(Job { at, buf, len }))
    }

    /// Puts work in the writing thread's queue with `add`, and wakes it; the thread's error
    /// instead if it has failed.
    fn enqueue(&mut self, add: impl FnOnce(&mut Queue)) -> io::Result<()> {
        let mut q = self.shared.lock();
        if q.failed {
            drop(q);
            return Err(self.failure());
        }
        add(&mut q);
        drop(q);
        self.shared.work.notify_one();
        Ok(())
    }

    /// A staging buffer: one given back, else a new one while fewer than [`BUFFERS`] exist,
    /// else the first that the writing thread gives back.
    fn buffer(&mut self) -> io::Result<Aligned> {
        let mut q = self.shared.lock();
        loop {
            if let Some(b) = q.free.pop() {
                return Ok(b);
            }
            if q.failed {
                drop(q);
                return Err(self.failure());
            }
            if self.made < BUFFERS {
                self.made += 1;
                return Ok(Aligned::new());
            }
            q = self.shared.freed.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The writing thread's error, once it has failed.
    fn failure(&mut self) -> io::Error {
        self.stop()
            .err()
            .unwrap_or_else(|| io::Error::other("the direct writing thread has stopped"))
    }

    /// Closes the queue, waits for the writing thread to write it all and end, and gives its
    /// error if it had one.
    fn stop(&mut self) -> io::Result<()> {
        self.shared.lock().closed = true;
        self.shared.work.notify_all();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("the direct writing thread panicked")),
            None => Ok(()),
        }
    }

    /// Writes everything still held: every run's staged full blocks (direct), then, once the
    /// writing thread is done, the edges and tails through the page cache.
    pub fn finish(mut self) -> io::Result<()> {
        self.park()?;
        self.stop()?;
        for run in &self.runs {
            if !run.tail.is_empty() {
                self.file.write_all_at(&run.tail, run.staged_from)?;
            }
        }
        for (at, bytes) in &self.edges {
            self.file.write_all_at(bytes, *at)?;
        }
        Ok(())
    }
}

/// The writing thread's side.
struct Writing {
    direct: File,
    fallback: File,
    write: WriteFn,
    /// Whether the file system has refused a direct write: everything since goes through the
    /// page cache.
    refused: bool,
    /// The buffer copies are read into.
    copy_buf: Option<Aligned>,
}

impl Writing {
    /// Writes what the queue holds, staging buffers first, until it is closed and empty.
    fn run(mut self, shared: &Shared) -> io::Result<()> {
        let mut q = shared.lock();
        loop {
            if let Some(Job { at, buf, len }) = q.writes.pop_front() {
                drop(q);
                self.put(&buf.get()[..len], at)?;
                q = shared.lock();
                q.free.push(buf);
                shared.freed.notify_one();
            } else if let Some(c) = q.copies.front_mut() {
                // One staging buffer's worth at a time, so that a buffer queued meanwhile
                // waits for no more than that.
                let n = c.len.min(STAGE as u64) as usize;
                let (src, src_at, at) = (Arc::clone(&c.src), c.src_at, c.at);
                c.src_at += n as u64;
                c.at += n as u64;
                c.len -= n as u64;
                if c.len == 0 {
                    q.copies.pop_front();
                }
                drop(q);
                let mut buf = self.copy_buf.take().unwrap_or_else(Aligned::new);
                src.read_exact_at(&mut buf.get_mut()[..n], src_at)?;
                self.put(&buf.get()[..n], at)?;
                self.copy_buf = Some(buf);
                q = shared.lock();
            } else if q.closed {
                return Ok(());
            } else {
                q = shared.work.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    /// Writes whole blocks from an aligned buffer: direct, or through the page cache since the
    /// first time the file system refused (`EINVAL`).
    fn put(&mut self, bytes: &[u8], at: u64) -> io::Result<()> {
        if !self.refused {
            match (self.write)(&self.direct, bytes, at) {
                Ok(()) => return Ok(()),
                // No direct writes here (or not at these alignments): this and every later
                // write through the page cache.
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => self.refused = true,
                Err(e) => return Err(e),
            }
        }
        self.fallback.write_all_at(bytes, at)
    }
}

impl Drop for Direct {
    /// Drops what is queued and waits for the writing thread, so that no write outlives the
    /// writer (dropped unfinished, the file is about to be removed).
    fn drop(&mut self) {
        if self.thread.is_some() {
            let mut q = self.shared.lock();
            q.writes.clear();
            q.copies.clear();
        }
        let _ = self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The writing thread's write in tests: a plain write that first checks what a direct
    /// write needs (whole blocks, at a block offset, from block-aligned memory).
    fn aligned_write(f: &File, bytes: &[u8], at: u64) -> io::Result<()> {
        assert_eq!(at % BLOCK as u64, 0, "offset {at}");
        assert_eq!(bytes.len() % BLOCK, 0, "length {}", bytes.len());
        assert_eq!(bytes.as_ptr() as usize % BLOCK, 0, "buffer address");
        f.write_all_at(bytes, at)
    }

    fn refused(_: &File, _: &[u8], _: u64) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::InvalidInput))
    }

    fn broken(_: &File, _: &[u8], _: u64) -> io::Result<()> {
        Err(io::Error::other("the disk is on fire"))
    }

    /// Sections `(offset, bytes)` of a file of `size` bytes, written in parts of `part` bytes,
    /// sections `a` and `b` taking turns part by part (as a tensor's codes and signs do), the
    /// rest one after the other; with `copy`, every second section's parts are given with
    /// [`Direct::copy_at`] from a source file that holds them (at an odd offset, as a tensor's
    /// data in a safetensors file). The file, as read back.
    fn write_file(
        start: impl Fn(File, File) -> Option<Direct>,
        sections: &[(u64, Vec<u8>)],
        size: u64,
        part: usize,
        copy: bool,
    ) -> io::Result<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        file.set_len(size).unwrap();
        // The source: every section's bytes, each at 3 + its offset in the file.
        let src_path = dir.path().join("src");
        let src = File::create(&src_path).unwrap();
        for (at, b) in sections {
            src.write_all_at(b, 3 + at).unwrap();
        }
        let src = File::open(&src_path).unwrap();
        let other = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let mut d = start(other, file).expect("a writing thread");
        for (j, pair) in sections.chunks(2).enumerate() {
            let mut parts: Vec<_> = pair
                .iter()
                .map(|(at, b)| (*at, b.chunks(part.max(1)).collect::<Vec<_>>().into_iter()))
                .collect();
            let mut at = pair.iter().map(|(a, _)| *a).collect::<Vec<_>>();
            loop {
                let mut any = false;
                for (k, (_, it)) in parts.iter_mut().enumerate() {
                    if let Some(p) = it.next() {
                        if copy && (2 * j + k) % 2 == 1 {
                            d.copy_at(at[k], p, &src, 3 + at[k])?;
                        } else {
                            d.write_at(at[k], p)?;
                        }
                        at[k] += p.len() as u64;
                        any = true;
                    }
                }
                if !any {
                    break;
                }
            }
        }
        d.finish()?;
        Ok(std::fs::read(&path).unwrap())
    }

    /// Sections of a file: (offset, bytes).
    type Sections = Vec<(u64, Vec<u8>)>;

    /// Disjoint sections from (gap before, length) pairs, their bytes numbered by section; the
    /// file's size, and what it must hold.
    fn layout(spec: &[(u64, usize)]) -> (Sections, u64, Vec<u8>) {
        let mut at = 0;
        let mut sections = Vec::new();
        for (k, &(gap, len)) in spec.iter().enumerate() {
            at += gap;
            let bytes: Vec<u8> = (0..len)
                .map(|i| (k * 37 + i * 11 % 253 + 1) as u8)
                .collect();
            sections.push((at, bytes));
            at += len as u64;
        }
        let size = at + 100;
        let mut want = vec![0u8; size as usize];
        for (at, b) in &sections {
            want[*at as usize..*at as usize + b.len()].copy_from_slice(b);
        }
        (sections, size, want)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the sections' offsets, lengths and parts, the file holds what was written
        /// where it was written, and zeros between, and every direct write is of whole blocks.
        #[test]
        fn any_runs_give_the_file_written(
            spec in prop::collection::vec((0u64..6000, 0usize..40_000), 1..9),
            part in 1usize..20_000,
            copy: bool,
        ) {
            let (sections, size, want) = layout(&spec);
            let start = |d, b| Direct::start(d, b, aligned_write);
            let got = write_file(start, &sections, size, part, copy).unwrap();
            prop_assert!(got == want, "{} bytes differ", got.iter().zip(&want).filter(|(a, b)| a != b).count());
        }
    }

    /// Adjacent sections sharing blocks at both ends, parts that end inside blocks and parts
    /// that fill the staging buffer exactly.
    #[test]
    fn shared_blocks_and_exact_stages() {
        for part in [
            1,
            7,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            STAGE,
            STAGE + 3,
            3 * STAGE,
        ] {
            let (sections, size, want) = layout(&[
                (0, BLOCK / 2),
                (0, 3 * STAGE + 5),
                (1, STAGE / 8),
                (0, BLOCK),
                (BLOCK as u64 - 3, 2 * BLOCK),
            ]);
            for copy in [false, true] {
                let start = |d, b| Direct::start(d, b, aligned_write);
                let got = write_file(start, &sections, size, part, copy).unwrap();
                assert_eq!(got, want, "parts of {part}, copy {copy}");
            }
        }
    }

    /// With a real `O_DIRECT` handle where the file system has one (else through the page
    /// cache, after the refusal): the same bytes.
    #[test]
    fn a_real_direct_handle_gives_the_same_file() {
        let (sections, size, want) = layout(&[(0, 100_000), (3, 12_345), (0, 70_000), (9, 1)]);
        let start = |_, b: File| {
            // Reopen the file `b` is a handle on, by its descriptor's path.
            let path = std::fs::read_link(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&b)
            ))
            .unwrap();
            Direct::open(&path, &b)
        };
        for copy in [false, true] {
            assert_eq!(
                write_file(start, &sections, size, 10_000, copy).unwrap(),
                want
            );
        }
    }

    /// A file system that refuses direct writes gets every write through the page cache.
    #[test]
    fn a_refused_direct_write_goes_through_the_page_cache() {
        let (sections, size, want) = layout(&[(0, 50_000), (5, 30_000), (0, 9_000)]);
        let start = |d, b| Direct::start(d, b, refused);
        for copy in [false, true] {
            assert_eq!(
                write_file(start, &sections, size, 5_000, copy).unwrap(),
                want
            );
        }
    }

    /// A failed direct write is the writer's error, at a later write or at the end at the
    /// latest.
    #[test]
    fn a_failed_direct_write_is_reported() {
        let (sections, size, _) = layout(&[(0, 10 * STAGE), (0, 20)]);
        for copy in [false, true] {
            let start = |d, b| Direct::start(d, b, broken);
            let e = write_file(start, &sections, size, 5_000, copy).unwrap_err();
            assert_eq!(e.to_string(), "the disk is on fire");
        }
    }

    /// A copy whose source is shorter than said fails, and the writer says so.
    #[test]
    fn a_failed_copy_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        file.set_len(1 << 20).unwrap();
        File::create(dir.path().join("src"))
            .unwrap()
            .set_len(100)
            .unwrap();
        let src = File::open(dir.path().join("src")).unwrap();
        let other = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("f"))
            .unwrap();
        let mut d = Direct::start(other, file, aligned_write).unwrap();
        let bytes = vec![1u8; 3 * BLOCK];
        let e = d
            .copy_at(0, &bytes, &src, 0)
            .and_then(|()| d.finish())
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    }
}

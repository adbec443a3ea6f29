//! The data path: tensors from the mapped source into the writer, encoded on all cores.
//!
//! A tensor is processed one window at a time (a range of elements whose source bytes are
//! mapped, then unmapped); a window is split into chunks of a multiple of 8 elements that rayon
//! processes in parallel. Encoding takes two passes over the windows: `scan` every chunk and
//! merge the statistics, fit the [`Quantizer`], then `encode` every chunk into the window's
//! code and sign buffers, which are written in order. A codec with row scales
//! ([`Codec::uses_row_scales`], `lloyd-rows`) takes one more pass first: [`RowMaxima::scan`]
//! every chunk, merge the maxima, and turn them into the scales ([`RowMaxima::into_scales`]),
//! which the two passes then divide by and the writer stores (one f32 per row, the only part
//! of a tensor's output held whole).
//!
//! A BF16 tensor with row scales that fits one window takes its statistics by groups of rows
//! that share a scale instead ([`scan_row_groups`]): each group counts its patterns, and each
//! distinct pattern is divided and binned once; the rows sorted by scale are split among the
//! threads, and the statistics are the same integers as chunk by chunk.
//!
//! The chunks are read in their source dtype, straight from the map: the byte forms of the
//! codec's functions ([`scan_bytes`], [`Quantizer::encode_bytes`], [`RowMaxima::scan_bytes`])
//! work on the bit patterns (F32, BF16 or F16) and give what the f32 forms give for the
//! converted values, so nothing is converted unless a row scale divides it, and then a block of
//! a few thousand values at a time. The writes run one part behind ([`Stream`]): while the
//! workers encode a window, the part before it is written (the writer checksums it as it
//! passes), whether that part is the previous window of the same tensor, the last window of the
//! tensor before, or a window of a raw tensor; so the writes hide behind the encoding, and no
//! core waits at a tensor's end. What is resident at once is one window of source bytes and two
//! of codes (and the row scales), plus what is prepared ahead (below), whatever the model's
//! size; and the bytes written depend neither on the chunking nor on the number of threads.
//!
//! The passes before writing ([`prepare`]: row scales, statistics, the fit) and the writing pass
//! ([`Stream::emit`], or [`Stream::copy_raw`] for a raw tensor) are separate so that the
//! converter can prepare the next encoded tensors ([`Prepared`]) while it writes the ones before
//! them: the fits, serial each, then share the cores with parallel work and with each other. A
//! tensor prepared ahead that is small enough is encoded whole too, into buffers from a
//! [`Pool`], its source mapped once for all its passes, so that while a raw tensor is copied (a
//! serial write) the other cores encode the tensors after it; how far ahead is bounded by
//! elements, which bounds that memory. The code buffers are reused from tensor to tensor
//! ([`Buffers`], [`Pool`]).

use std::sync::{Condvar, Mutex, MutexGuard};

use qins_format::codec::{
    scan_bytes, scan_row_groups, EncodeError, Quantizer, RowMaxima, RowScales, Stats,
};
use qins_format::Codec;
use qins_write::{WriteError, Writer};
use rayon::prelude::*;

use crate::{ConvertError, Progress};
use qins_source::{Bytes, HfSource, SourceTensor};

/// Bytes per window when copying a raw tensor.
const RAW_WINDOW: u64 = 16 << 20;

/// How encoding splits a tensor.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chunking {
    /// Elements per parallel job; a multiple of 8.
    pub chunk: u64,
    /// Elements per mapped window; a multiple of `chunk`.
    pub window: u64,
}

/// The smallest chunk [`Chunking::fit`] makes: 64 Ki elements, so that a job's fixed costs
/// (its statistics, merged in order) stay small beside its work.
const MIN_CHUNK: u64 = 1 << 16;

impl Chunking {
    /// This chunking for a tensor of `n` elements: chunks small enough that every thread gets
    /// one (but at least [`MIN_CHUNK`] elements, and at most the configured size), so that a
    /// tensor of a few million elements is shared by every core too; the window keeps its
    /// number of chunks. One per thread, not more: the preparations of the tensors ahead share
    /// the cores meanwhile, and every chunk has fixed costs (its histogram, merged; its own
    /// start of each pass over memory): F32 1 GB, 2 threads, 0.630 s with four chunks per
    /// thread, 0.570 s with one; the embedding checkpoint 0.720 s and 0.665 s. Like the
    /// chunking itself, this changes nothing in the output.
    fn fit(self, n: u64) -> Chunking {
        let threads = rayon::current_num_threads().max(1) as u64;
        let chunk = n.div_ceil(threads).next_multiple_of(8).max(MIN_CHUNK);
        if chunk >= self.chunk {
            return self;
        }
        Chunking {
            chunk,
            window: chunk * (self.window / self.chunk),
        }
    }

    /// `chunk` rounded up to a multiple of 8, and windows of `2 × threads` chunks (at least 8).
    pub fn new(chunk: usize) -> Chunking {
        let chunk = (chunk.max(1) as u64).next_multiple_of(8);
        let per_window = (2 * rayon::current_num_threads()).max(8) as u64;
        Chunking {
            chunk,
            window: chunk.saturating_mul(per_window),
        }
    }
}

/// A tensor's encoding, fitted by [`prepare`] and not yet written by [`Stream::emit`].
pub(crate) struct Fitted {
    q: Quantizer,
    scales: Option<Vec<f32>>,
    ch: Chunking,
    /// The whole tensor's codes and signs, if [`prepare`] was asked to encode it too.
    encoded: Option<(Vec<u8>, Vec<u8>)>,
}

/// What [`prepare`] and [`Stream::emit`] share about one tensor: its chunking, windows and how an
/// [`EncodeError`] becomes a [`ConvertError`] naming the file, the tensor and the target.
struct Job<'a> {
    src: &'a HfSource,
    t: &'a SourceTensor,
    target: &'a std::path::Path,
    ch: Chunking,
    es: u64,
    n: u64,
}

impl Job<'_> {
    fn chunk_bytes(&self) -> usize {
        (self.ch.chunk * self.es) as usize
    }

    fn windows(&self) -> impl Iterator<Item = (u64, u64)> {
        let (n, window) = (self.n, self.ch.window);
        (0..n)
            .step_by(window as usize)
            .map(move |a| (a, (a + window).min(n)))
    }

    /// The row scales, checked against the tensor's shape.
    fn row_scales<'s>(
        &self,
        scales: Option<&'s [f32]>,
    ) -> Result<Option<RowScales<'s>>, ConvertError> {
        scales
            .map(|s| RowScales::new(s, &self.t.shape))
            .transpose()
            .map_err(|e| self.fail(e))
    }

    /// Encodes elements `a..b` (their source `bytes`) into `codes` and `signs`, a chunk per
    /// rayon job; the first bad element in the window's order is reported.
    fn encode_window(
        &self,
        q: &Quantizer,
        rs: Option<&RowScales<'_>>,
        a: u64,
        bytes: &[u8],
        codes: &mut [u8],
        signs: &mut [u8],
    ) -> Result<(), ConvertError> {
        let (t, ch) = (self.t, self.ch);
        codes
            .par_chunks_mut(ch.chunk as usize)
            .zip(signs.par_chunks_mut((ch.chunk / 8) as usize))
            .zip(bytes.par_chunks(self.chunk_bytes()))
            .enumerate()
            .map(|(k, ((c, s), part))| {
                q.encode_bytes(t.dtype, part, a + k as u64 * ch.chunk, rs, c, s)
            })
            .collect::<Vec<Result<(), EncodeError>>>()
            .into_iter()
            .try_for_each(|p| p.map_err(|e| self.fail(e)))
    }

    fn fail(&self, e: EncodeError) -> ConvertError {
        match e {
            EncodeError::NonFinite { index, value } => ConvertError::NonFinite {
                file: self.src.weight_files()[self.t.file].path.clone(),
                tensor: self.t.name.clone(),
                index,
                value,
            },
            other => ConvertError::Writer {
                target: self.target.into(),
                cause: WriteError::Encode {
                    tensor: self.t.name.clone(),
                    source: other,
                },
            },
        }
    }
}

/// The passes that come before writing: the row scales if the codec has them, the statistics,
/// and the fitted [`Quantizer`]; and given a `whole` pool, the encoding too, into buffers of
/// the tensor's size from it (for a tensor prepared ahead while other tensors are written, so
/// that its write is a copy). Reads the source only; writes nothing.
pub(crate) fn prepare(
    src: &HfSource,
    t: &SourceTensor,
    codec: Codec,
    ch: Chunking,
    target: &std::path::Path,
    whole: Option<&Pool>,
) -> Result<Fitted, ConvertError> {
    let n = t.numel();
    let job = Job {
        src,
        t,
        target,
        ch: ch.fit(n),
        es: u64::from(t.dtype.bits() / 8),
        n,
    };
    let (ch, es) = (job.ch, job.es);
    let fail = |e| job.fail(e);
    let chunk_bytes = job.chunk_bytes();
    // A tensor encoded whole here is mapped once for all its passes (each map costs page
    // faults and an unmap); otherwise each pass maps each window in turn.
    let held: Option<Vec<Bytes>> = match whole {
        Some(_) => Some(
            job.windows()
                .map(|(a, b)| src.read(t, a * es..b * es))
                .collect::<Result<_, _>>()?,
        ),
        None => None,
    };
    // The windows, each with its bytes.
    let windows = || {
        job.windows().enumerate().map(|(k, (a, b))| {
            let bytes = match &held {
                Some(h) => Window::Held(&h[k]),
                None => Window::Mapped(src.read(t, a * es..b * es)?),
            };
            Ok::<_, ConvertError>((a, b, bytes))
        })
    };

    // Pass 0, for a codec with row scales: each row's largest magnitude. The maxima of the
    // chunks are merged pairwise (max is exact, so the order does not matter; pairwise keeps
    // the cost proportional to rows × log(chunks) even for very short rows).
    let scales: Option<Vec<f32>> = if codec.uses_row_scales() {
        let mut maxima: Vec<RowMaxima> = Vec::new();
        for w in windows() {
            let (a, _, bytes) = w?;
            let parts: Vec<Result<RowMaxima, EncodeError>> = bytes
                .par_chunks(chunk_bytes)
                .enumerate()
                .map(|(k, part)| {
                    RowMaxima::scan_bytes(t.dtype, part, a + k as u64 * ch.chunk, &t.shape)
                })
                .collect();
            // In order, so that the first bad element reported is the first in the tensor.
            for p in parts {
                maxima.push(p.map_err(fail)?);
            }
        }
        let all = maxima
            .into_par_iter()
            .reduce(|| RowMaxima::EMPTY, RowMaxima::merge);
        Some(all.into_scales(&t.shape).map_err(fail)?)
    } else {
        None
    };
    let rs = job.row_scales(scales.as_deref())?;
    let rs = rs.as_ref();

    // Pass 1: check every value and gather the statistics. A BF16 tensor with row scales in
    // one window, by groups of rows that share a scale; else (or where that pass leaves the
    // decision to this one: a fault to report) chunk by chunk.
    let grouped = match rs {
        Some(rs) if n <= ch.window && scan_row_groups_applies(codec, t.dtype) => {
            let (_, _, bytes) = windows().next().expect("a tensor has a window")?;
            stats_by_row_groups(codec, t.dtype, &bytes, rs)
        }
        _ => None,
    };
    let stats = match grouped {
        Some(stats) => stats,
        None => {
            let mut stats = Stats::EMPTY;
            for w in windows() {
                let (a, _, bytes) = w?;
                let parts: Vec<Result<Stats, EncodeError>> = bytes
                    .par_chunks(chunk_bytes)
                    .enumerate()
                    .map(|(k, part)| scan_bytes(codec, t.dtype, part, a + k as u64 * ch.chunk, rs))
                    .collect();
                // In order, so that the first bad element reported is the first in the tensor.
                for p in parts {
                    stats = stats.merge(p.map_err(fail)?);
                }
            }
            stats
        }
    };

    let q = Quantizer::new(codec, &stats);
    let encoded = if let Some(pool) = whole {
        let (mut codes, mut signs) = pool.get(n as usize);
        for w in windows() {
            let (a, b, bytes) = w?;
            let (a8, b8) = ((a / 8) as usize, (b as usize).div_ceil(8));
            job.encode_window(
                &q,
                rs,
                a,
                &bytes,
                &mut codes[a as usize..b as usize],
                &mut signs[a8..b8],
            )?;
        }
        Some((codes, signs))
    } else {
        None
    };
    Ok(Fitted {
        q,
        scales,
        ch,
        encoded,
    })
}

/// Whether the statistics of a tensor of `dtype` for `codec` are gathered by groups of rows
/// ([`scan_row_groups`]): for BF16, whose 128 patterns per binade make a group's distinct
/// patterns few (statistics on one core, encode bench: 0.38 ns per weight, against 1.11 chunk
/// by chunk); not for F16, whose 1024 make them many (1.43 against 1.27).
fn scan_row_groups_applies(codec: Codec, dtype: qins_format::Dtype) -> bool {
    dtype == qins_format::Dtype::BF16 && codec.fits_histogram()
}

/// The statistics of a whole BF16 tensor (`bytes`) with row scales `rs`, by groups of rows
/// that share a scale ([`scan_row_groups`]): the rows sorted by scale, split into a part per
/// thread, the parts' statistics merged (exact integers: the split changes nothing).
/// `None` where the chunk-by-chunk pass must decide.
fn stats_by_row_groups(
    codec: Codec,
    dtype: qins_format::Dtype,
    bytes: &[u8],
    rs: &RowScales<'_>,
) -> Option<Stats> {
    let scales = rs.scales();
    let mut rows: Vec<u64> = (0..scales.len() as u64).collect();
    rows.sort_unstable_by_key(|&r| scales[r as usize].to_bits());
    // One part per thread: a group split between parts gives its distinct patterns once per
    // part, and other tensors' preparations share the cores anyway (BF16 1 GB, 2 threads: 0.735
    // s with four parts per thread, 0.725 with two, 0.690 with one).
    let per = rows.len().div_ceil(rayon::current_num_threads()).max(1);
    let parts: Option<Vec<Stats>> = rows
        .par_chunks(per)
        .map(|p| scan_row_groups(codec, dtype, bytes, rs, p))
        .collect();
    Some(parts?.into_iter().fold(Stats::EMPTY, Stats::merge))
}

/// A window's source bytes: mapped for one pass, or held for all of them.
enum Window<'h> {
    Mapped(Bytes),
    Held(&'h Bytes),
}

impl std::ops::Deref for Window<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Window::Mapped(b) => b,
            Window::Held(b) => b,
        }
    }
}

/// The preparations of a conversion's encoded tensors, one slot per tensor: a rayon task runs
/// one ahead of the writes ([`Prepared::claim`], [`Prepared::finish`]), or the writer runs it
/// when its turn comes and nobody has ([`Prepared::take`]).
pub(crate) struct Prepared {
    slots: Vec<(Mutex<Slot>, Condvar)>,
}

enum Slot {
    Idle,
    Running,
    /// Boxed: a `Fitted` holds a quantizer's tables, and most slots never hold one.
    Done(Box<Result<Fitted, ConvertError>>),
    Taken,
}

impl Prepared {
    /// Slots for `n` tensors, none started.
    pub(crate) fn new(n: usize) -> Prepared {
        Prepared {
            slots: (0..n)
                .map(|_| (Mutex::new(Slot::Idle), Condvar::new()))
                .collect(),
        }
    }

    fn lock(&self, k: usize) -> MutexGuard<'_, Slot> {
        // A preparation that panicked is not caught anyway: the lock's poison adds nothing.
        self.slots[k].0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `true` if tensor `k`'s preparation had not started: the caller now runs it and gives
    /// the outcome to [`Prepared::finish`].
    pub(crate) fn claim(&self, k: usize) -> bool {
        let mut slot = self.lock(k);
        let idle = matches!(*slot, Slot::Idle);
        if idle {
            *slot = Slot::Running;
        }
        idle
    }

    /// The outcome of tensor `k`'s preparation, claimed before.
    pub(crate) fn finish(&self, k: usize, r: Result<Fitted, ConvertError>) {
        *self.lock(k) = Slot::Done(Box::new(r));
        self.slots[k].1.notify_all();
    }

    /// Tensor `k`'s preparation: `prepare` run here if it has not started, else its outcome
    /// once done; while it runs elsewhere this thread does other rayon work, and sleeps when
    /// there is none.
    pub(crate) fn take(
        &self,
        k: usize,
        prepare: impl FnOnce() -> Result<Fitted, ConvertError>,
    ) -> Result<Fitted, ConvertError> {
        loop {
            let mut slot = self.lock(k);
            match std::mem::replace(&mut *slot, Slot::Taken) {
                Slot::Done(r) => return *r,
                Slot::Idle => {
                    drop(slot);
                    return prepare();
                }
                Slot::Running => {
                    *slot = Slot::Running;
                    drop(slot);
                    if let Some(rayon::Yield::Executed) = rayon::yield_now() {
                        continue;
                    }
                    let mut slot = self.lock(k);
                    while matches!(*slot, Slot::Running) {
                        slot = self.slots[k]
                            .1
                            .wait(slot)
                            .unwrap_or_else(|e| e.into_inner());
                    }
                }
                Slot::Taken => unreachable!("tensor {k} prepared twice"),
            }
        }
    }
}

/// Code and sign buffers for whole tensors encoded ahead, given back once written: fresh
/// buffers would cost a page fault and a zeroed page for every 4 KiB of codes, and their
/// unmapping, when freed, a TLB flush on every core.
#[derive(Default)]
pub(crate) struct Pool(Mutex<Vec<(Vec<u8>, Vec<u8>)>>);

impl Pool {
    /// A pair holding at least `n` codes and their signs (its first `n` and `ceil(n / 8)`
    /// bytes are the caller's), their old bytes left in place: the shortest kept that is long
    /// enough, else the longest, grown. A pair is never shortened, so that reusing it never
    /// zeroes bytes that are about to be overwritten.
    fn get(&self, n: usize) -> (Vec<u8>, Vec<u8>) {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let best = kept
            .iter()
            .enumerate()
            .filter(|(_, p)| p.0.len() >= n)
            .min_by_key(|(_, p)| p.0.len())
            .or_else(|| kept.iter().enumerate().max_by_key(|(_, p)| p.0.len()))
            .map(|(i, _)| i);
        let (mut codes, mut signs) = best.map(|i| kept.swap_remove(i)).unwrap_or_default();
        drop(kept);
        if codes.len() < n {
            codes.resize(n, 0);
            signs.resize(n.div_ceil(8), 0);
        }
        (codes, signs)
    }

    fn put(&self, pair: (Vec<u8>, Vec<u8>)) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(pair);
    }
}

/// The two pairs of code and sign buffers that the [`Stream`] encodes into and writes from,
/// kept from one tensor to the next: fresh buffers for every tensor cost a page fault and the
/// zeroing of each page, about as many pages as the file has codes, twice.
#[derive(Default)]
struct Buffers([(Vec<u8>, Vec<u8>); 2]);

impl Buffers {
    /// Grows both pairs to hold `cap` codes and their signs. What they held is kept (a pair may
    /// hold a part not yet written); [`Stream::emit`] overwrites every byte it writes.
    fn reserve(&mut self, cap: usize) {
        for (codes, signs) in &mut self.0 {
            if codes.len() < cap {
                codes.resize(cap, 0);
                signs.resize(cap.div_ceil(8), 0);
            }
        }
    }
}

/// A part produced and not yet written.
enum Part {
    /// A window of codes and signs: `len` elements in buffer pair `buf`.
    Codes { buf: usize, len: usize },
    /// A window of a raw tensor's bytes, as mapped, and where they are in which source file
    /// (the writer may copy them from there).
    Raw { bytes: Bytes, file: usize, at: u64 },
    /// A whole tensor's `len` codes and their signs, encoded ahead into the front of a pair
    /// from the [`Pool`].
    Whole {
        pair: (Vec<u8>, Vec<u8>),
        len: usize,
    },
}

/// A [`Part`] waiting for its write, with what its write reports to the [`Progress`].
struct Pending<'a> {
    part: Part,
    /// The source bytes it stands for.
    source_bytes: u64,
    /// The tensor it completes, if it is that tensor's last part.
    completes: Option<&'a str>,
}

/// The tensors' parts on their way to the writer, in file order, each written while the next
/// is produced: the codes of a window are written while the next window is encoded, whether
/// it belongs to the same tensor or to the next one, and a raw window while the next is
/// mapped. So the write of a tensor's last window (for most tensors, their only one) shares
/// the time of the next tensor's encoding instead of leaving the other cores idle.
pub(crate) struct Stream<'a> {
    src: &'a HfSource,
    w: &'a mut Writer,
    target: &'a std::path::Path,
    progress: &'a dyn Progress,
    bufs: Buffers,
    pool: &'a Pool,
    pending: Option<Pending<'a>>,
}

impl<'a> Stream<'a> {
    pub(crate) fn new(
        src: &'a HfSource,
        w: &'a mut Writer,
        target: &'a std::path::Path,
        progress: &'a dyn Progress,
        pool: &'a Pool,
    ) -> Stream<'a> {
        Stream {
            src,
            w,
            target,
            progress,
            bufs: Buffers::default(),
            pool,
            pending: None,
        }
    }

    /// Writes part `p` (a window of codes is in `window`).
    fn write(
        w: &mut Writer,
        src: &HfSource,
        target: &std::path::Path,
        p: &Part,
        window: &(Vec<u8>, Vec<u8>),
    ) -> Result<(), ConvertError> {
        let ((codes, signs), len) = match p {
            Part::Codes { len, .. } => (window, *len),
            Part::Whole { pair, len } => (pair, *len),
            Part::Raw { bytes, file, at } => {
                return w
                    .write_raw_part_from(bytes, src.weight_files()[*file].file(), *at)
                    .map_err(|e| ConvertError::from_write(target, e))
            }
        };
        w.write_encoded_part(&codes[..len], &signs[..len.div_ceil(8)])
            .map_err(|e| ConvertError::from_write(target, e))
    }

    /// Runs `produce` with the buffer pair that the pending part does not use (its index given
    /// too), beside the write of the pending part; the write's outcome first, as if the two had
    /// run one after the other. The progress hears of the write once it is done.
    fn beside_write<T: Send>(
        &mut self,
        produce: impl FnOnce(usize, &mut (Vec<u8>, Vec<u8>)) -> T + Send,
    ) -> Result<T, ConvertError> {
        let free = match &self.pending {
            Some(Pending {
                part: Part::Codes { buf, .. },
                ..
            }) => 1 - buf,
            _ => 0,
        };
        let [x, y] = &mut self.bufs.0;
        let (free_pair, other) = if free == 0 { (x, &*y) } else { (y, &*x) };
        let (w, src, target) = (&mut *self.w, self.src, self.target);
        let pending = self.pending.take();
        let (written, produced) = rayon::join(
            || match &pending {
                Some(p) => Self::write(w, src, target, &p.part, other),
                None => Ok(()),
            },
            || produce(free, free_pair),
        );
        written?;
        if let Some(p) = pending {
            if let Part::Whole { pair, .. } = p.part {
                self.pool.put(pair);
            }
            self.progress.advance(p.source_bytes);
            if let Some(name) = p.completes {
                self.progress.tensor_done(name);
            }
        }
        Ok(produced)
    }

    /// Writes the part still pending, if any.
    pub(crate) fn flush(&mut self) -> Result<(), ConvertError> {
        self.beside_write(|_, _| ())
    }

    /// Copies a raw tensor's bytes to the writer, a window at a time.
    pub(crate) fn copy_raw(&mut self, t: &'a SourceTensor) -> Result<(), ConvertError> {
        // At least one part: a tensor of zero bytes is completed by one empty part.
        let mut at = 0;
        loop {
            let end = (at + RAW_WINDOW).min(t.len);
            let src = self.src;
            let bytes = self.beside_write(|_, _| src.read(t, at..end))??;
            self.pending = Some(Pending {
                part: Part::Raw {
                    bytes,
                    file: t.file,
                    at: t.offset + at,
                },
                source_bytes: end - at,
                completes: (end == t.len).then_some(t.name.as_str()),
            });
            at = end;
            if at == t.len {
                return Ok(());
            }
        }
    }

    /// Pass 2 of a tensor [`prepare`]d: encodes each window into the free buffer pair while the
    /// part before it is written (or, for a tensor encoded ahead, passes its codes on).
    pub(crate) fn emit(&mut self, t: &'a SourceTensor, f: Fitted) -> Result<(), ConvertError> {
        let Fitted {
            q,
            scales,
            ch,
            encoded,
        } = f;
        let job = Job {
            src: self.src,
            t,
            target: self.target,
            ch,
            es: u64::from(t.dtype.bits() / 8),
            n: t.numel(),
        };
        let (es, n) = (job.es, job.n);
        let rs = job.row_scales(scales.as_deref())?;
        let rs = rs.as_ref();
        let begin = |w: &mut Writer| {
            w.begin_encoded(&q, scales.as_deref())
                .map_err(|e| ConvertError::from_write(job.target, e))
        };
        if n == 0 {
            // No window: the writer completes the tensor when it begins.
            self.flush()?;
            begin(self.w)?;
            self.progress.tensor_done(&t.name);
            return Ok(());
        }
        if let Some(pair) = encoded {
            self.flush()?;
            begin(self.w)?;
            self.pending = Some(Pending {
                part: Part::Whole {
                    pair,
                    len: n as usize,
                },
                source_bytes: n * es,
                completes: Some(t.name.as_str()),
            });
            return Ok(());
        }
        self.bufs.reserve(ch.window.min(n) as usize);
        for (k, (a, b)) in job.windows().enumerate() {
            let len = (b - a) as usize;
            let bytes = self.src.read(t, a * es..b * es)?;
            let (buf, encoded) = self.beside_write(|buf, (codes, signs)| {
                let (codes, signs) = (&mut codes[..len], &mut signs[..len.div_ceil(8)]);
                (buf, job.encode_window(&q, rs, a, &bytes, codes, signs))
            })?;
            // The tensor begins once the parts before it are written.
            if k == 0 {
                begin(self.w)?;
            }
            encoded?;
            self.pending = Some(Pending {
                part: Part::Codes { buf, len },
                source_bytes: (b - a) * es,
                completes: (b == n).then_some(t.name.as_str()),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Pool;

    /// The pool gives the shortest pair long enough, never shortens one, and grows the longest
    /// when none is long enough.
    #[test]
    fn pool_reuses_the_best_fit() {
        let pool = Pool::default();
        let (c, s) = pool.get(100);
        assert_eq!((c.len(), s.len()), (100, 13));
        pool.put((c, s));
        pool.put((vec![7; 40], vec![7; 5]));
        // The shortest that is long enough, with its old bytes.
        let (c, s) = pool.get(30);
        assert_eq!((c.len(), s.len(), c[0]), (40, 5, 7));
        // Now only the 100 fits 50; with it taken, 120 grows the longest left (the 40).
        let big = pool.get(50);
        assert_eq!(big.0.len(), 100);
        pool.put((c, s));
        let (c, s) = pool.get(120);
        assert_eq!((c.len(), s.len(), c[0], c[119]), (120, 15, 7, 0));
        pool.put(big);
        pool.put((c, s));
        assert_eq!(pool.get(10).0.len(), 100);
    }
}

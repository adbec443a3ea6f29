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
//! The chunks are read in their source dtype, straight from the map: the byte forms of the
//! codec's functions ([`scan_bytes`], [`Quantizer::encode_bytes`], [`RowMaxima::scan_bytes`])
//! work on the bit patterns (F32, BF16 or F16) and give what the f32 forms give for the
//! converted values, so nothing is converted unless a row scale divides it, and then a block of
//! a few thousand values at a time. While the workers encode a window, the previous window's
//! codes are written (the writer checksums them as they pass), so the write is hidden behind
//! the encoding. What is resident at once is one window of source bytes and two of codes (and
//! the row scales), whatever the model's size, and the bytes written depend neither on the
//! chunking nor on the number of threads.
//!
//! The passes before writing ([`prepare`]: row scales, statistics, the fit) and the writing pass
//! ([`emit`], or [`copy_raw`] for a raw tensor) are separate so that the converter can prepare
//! the next encoded tensors ([`Prepared`], two ahead) while it writes the ones before them: the
//! fits and a raw copy, serial on their own, then share the cores with parallel work and with
//! each other. That triples at most what is resident (three tensors' windows), not more;
//! [`Buffers`] are reused from tensor to tensor.

use std::sync::{Condvar, Mutex, MutexGuard};

use qins_format::codec::{scan_bytes, EncodeError, Quantizer, RowMaxima, RowScales, Stats};
use qins_format::Codec;
use qins_write::{WriteError, Writer};
use rayon::prelude::*;

use crate::source::{HfSource, SourceTensor};
use crate::{ConvertError, Progress};

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
    /// about four (but at least [`MIN_CHUNK`] elements, and at most the configured size), so
    /// that a tensor of a few million elements is shared by every core too; the window keeps
    /// its number of chunks. Like the chunking itself, this changes nothing in the output.
    fn fit(self, n: u64) -> Chunking {
        let threads = rayon::current_num_threads().max(1) as u64;
        let chunk = n.div_ceil(4 * threads).next_multiple_of(8).max(MIN_CHUNK);
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

/// Copies a raw tensor's bytes to the writer, a window at a time.
pub(crate) fn copy_raw(
    src: &HfSource,
    t: &SourceTensor,
    w: &mut Writer,
    target: &std::path::Path,
    progress: &dyn Progress,
) -> Result<(), ConvertError> {
    // At least one call: a tensor of zero bytes is completed by one empty part.
    let mut at = 0;
    loop {
        let end = (at + RAW_WINDOW).min(t.len);
        let bytes = src.read(t, at..end)?;
        w.write_raw_part(&bytes)
            .map_err(|e| ConvertError::from_write(target, e))?;
        progress.advance(end - at);
        at = end;
        if at == t.len {
            return Ok(());
        }
    }
}

/// A tensor's encoding, fitted by [`prepare`] and not yet written by [`emit`].
pub(crate) struct Fitted {
    q: Quantizer,
    scales: Option<Vec<f32>>,
    ch: Chunking,
}

/// What [`prepare`] and [`emit`] share about one tensor: its chunking, windows and how an
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
/// and the fitted [`Quantizer`]. Reads the source only; writes nothing.
pub(crate) fn prepare(
    src: &HfSource,
    t: &SourceTensor,
    codec: Codec,
    ch: Chunking,
    target: &std::path::Path,
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
    let windows = || job.windows();

    // Pass 0, for a codec with row scales: each row's largest magnitude. The maxima of the
    // chunks are merged pairwise (max is exact, so the order does not matter; pairwise keeps
    // the cost proportional to rows × log(chunks) even for very short rows).
    let scales: Option<Vec<f32>> = if codec.uses_row_scales() {
        let mut maxima: Vec<RowMaxima> = Vec::new();
        for (a, b) in windows() {
            let bytes = src.read(t, a * es..b * es)?;
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

    // Pass 1: check every value and gather the statistics.
    let mut stats = Stats::EMPTY;
    for (a, b) in windows() {
        let bytes = src.read(t, a * es..b * es)?;
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

    let q = Quantizer::new(codec, &stats);
    Ok(Fitted { q, scales, ch })
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

/// The two pairs of code and sign buffers that [`emit`] encodes into and writes from, kept from
/// one tensor to the next: fresh buffers for every tensor cost a page fault and the zeroing of
/// each page, about as many pages as the file has codes, twice.
#[derive(Default)]
pub(crate) struct Buffers([(Vec<u8>, Vec<u8>); 2]);

impl Buffers {
    /// Both pairs, grown to hold `cap` codes and their signs. What they held before is not
    /// cleared: [`emit`] overwrites every byte it writes.
    fn with_capacity(&mut self, cap: usize) -> &mut [(Vec<u8>, Vec<u8>); 2] {
        for (codes, signs) in &mut self.0 {
            if codes.len() < cap {
                codes.resize(cap, 0);
                signs.resize(cap.div_ceil(8), 0);
            }
        }
        &mut self.0
    }
}

/// Pass 2 of a tensor [`prepare`]d: encodes each window and writes it; the write of one window
/// runs beside the encoding of the next, into the other pair of buffers.
pub(crate) fn emit(
    src: &HfSource,
    t: &SourceTensor,
    f: Fitted,
    bufs: &mut Buffers,
    w: &mut Writer,
    target: &std::path::Path,
    progress: &dyn Progress,
) -> Result<(), ConvertError> {
    let Fitted { q, scales, ch } = f;
    let job = Job {
        src,
        t,
        target,
        ch,
        es: u64::from(t.dtype.bits() / 8),
        n: t.numel(),
    };
    let (es, n) = (job.es, job.n);
    let fail = |e| job.fail(e);
    let chunk_bytes = job.chunk_bytes();
    let windows = || job.windows();
    let rs = job.row_scales(scales.as_deref())?;
    let rs = rs.as_ref();
    w.begin_encoded(&q, scales.as_deref())
        .map_err(|e| ConvertError::from_write(target, e))?;
    let bufs = bufs.with_capacity(ch.window.min(n) as usize);
    let write = |w: &mut Writer, (codes, signs): (&[u8], &[u8])| {
        w.write_encoded_part(codes, signs)
            .map_err(|e| ConvertError::from_write(target, e))
    };
    // The window encoded last and not yet written: its elements and which buffers hold it.
    let mut pending: Option<(u64, u64, usize)> = None;
    for (k, (a, b)) in windows().enumerate() {
        let len = (b - a) as usize;
        let bytes = src.read(t, a * es..b * es)?;
        let [x, y] = &mut *bufs;
        let ((codes, signs), other) = if k % 2 == 0 { (x, &*y) } else { (y, &*x) };
        let (codes, signs) = (&mut codes[..len], &mut signs[..len.div_ceil(8)]);
        let (written, encoded) = rayon::join(
            || match pending {
                Some((pa, pb, _)) => {
                    let plen = (pb - pa) as usize;
                    write(w, (&other.0[..plen], &other.1[..plen.div_ceil(8)]))
                }
                None => Ok(()),
            },
            || {
                codes
                    .par_chunks_mut(ch.chunk as usize)
                    .zip(signs.par_chunks_mut((ch.chunk / 8) as usize))
                    .zip(bytes.par_chunks(chunk_bytes))
                    .enumerate()
                    .map(|(k, ((c, s), part))| {
                        q.encode_bytes(t.dtype, part, a + k as u64 * ch.chunk, rs, c, s)
                    })
                    .collect::<Vec<Result<(), EncodeError>>>()
            },
        );
        // The earlier window's outcome first, as if the two had run one after the other.
        written?;
        if let Some((pa, pb, _)) = pending {
            progress.advance((pb - pa) * es);
        }
        encoded.into_iter().try_for_each(|p| p.map_err(fail))?;
        pending = Some((a, b, k % 2));
    }
    if let Some((pa, pb, i)) = pending {
        let plen = (pb - pa) as usize;
        let (codes, signs) = &bufs[i];
        write(w, (&codes[..plen], &signs[..plen.div_ceil(8)]))?;
        progress.advance((pb - pa) * es);
    }
    Ok(())
}

//! 16-bit sources (BF16, F16) with row scales (§12.4): the scaled magnitude `|x| / s` of an
//! element depends only on its 15-bit magnitude pattern and its row's scale `s`, so its code
//! can come from a table per scale of the code of every pattern ([`ScaleTable`]), one load per
//! element instead of a division and a walk along the change points.
//!
//! Division by `s > 0` rounds monotonically, so the code, a monotonic function of the scaled
//! magnitude, is a monotonic function of the pattern: the table is filled between the patterns
//! where the code changes, each found without a division from a change point of [`Breaks`]
//! ([`first_at_least`]). The rows of a tensor share few distinct scales (a row's scale is its
//! largest magnitude, a 16-bit value), so a table serves many rows: the tables are kept with
//! the quantizer ([`ScaleCache`]) for every chunk of the tensor.
//!
//! The codes are exactly what the element-by-element rule gives: a pattern the table does not
//! cover (not finite, scaled to 0 though not 0, overflowing, or outside the range the quantizer
//! was fitted to) makes the caller code its block by the rule.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use super::fastcode::{magnitude_range, nonzero_bytes, Breaks};
use super::lloyd;
use super::rows::{for_each_row_run, RowScales};
use super::stats::Stats;
use super::Codec;
use crate::dtype::{bf16_to_f32, f16_to_f32};
use crate::Dtype;

/// A 16-bit float format: bfloat16 ([`Bf16`]) or IEEE binary16 ([`F16`]).
pub(super) trait Half {
    /// Which format: the key of its tables in a [`ScaleCache`].
    const KIND: u8;
    /// The first magnitude pattern that is not finite (infinity).
    const FINITE_END: u32;
    /// The value of magnitude pattern `m` (exact).
    fn value(m: u16) -> f32;
    /// The first magnitude pattern whose value is at least `x` (`x ≥ 0`, or infinity: then
    /// [`Half::FINITE_END`]).
    fn ceil(x: f32) -> u32;
}

/// bfloat16: the top half of an f32.
pub(super) struct Bf16;

impl Half for Bf16 {
    const KIND: u8 = 0;
    const FINITE_END: u32 = 0x7F80;
    #[inline(always)]
    fn value(m: u16) -> f32 {
        bf16_to_f32(m)
    }
    fn ceil(x: f32) -> u32 {
        (x.to_bits() + 0xFFFF) >> 16
    }
}

/// IEEE binary16.
pub(super) struct F16;

impl Half for F16 {
    const KIND: u8 = 1;
    const FINITE_END: u32 = 0x7C00;
    #[inline(always)]
    fn value(m: u16) -> f32 {
        f16_to_f32(m)
    }
    fn ceil(x: f32) -> u32 {
        let m = half::f16::from_f32(x).to_bits() & 0x7FFF;
        u32::from(m) + u32::from(f16_to_f32(m) < x)
    }
}

/// The first pattern of format `H` whose value divided by `s` (f32 division, rounded to
/// nearest, ties to even) is at least `f32::from_bits(b)`, for `1 ≤ b ≤ 0x7F80_0000` (infinity:
/// the first pattern that overflows), or [`Half::FINITE_END`]. Without a division: the
/// quotient rounds to `b` or above exactly when the value is above `t = m × s`, `m` the
/// midpoint between `b` and the f32 below it, or equal to `t` when `b` is even (ties to even);
/// `m` has at most 26 significant bits and `s` 24, so `t` is exact in f64.
fn first_at_least<H: Half>(b: u32, s: f32) -> u32 {
    let below = f64::from(f32::from_bits(b - 1));
    let at = if b == 0x7F80_0000 {
        // Past f32::MAX, the next step would be 2^128 = f32::MAX + 2^104.
        f64::from(f32::MAX) + (2f64).powi(104)
    } else {
        f64::from(f32::from_bits(b))
    };
    let t = (below + at) / 2.0 * f64::from(s);
    // The smallest f32 at or above `t`, then the smallest pattern at or above it.
    let x = t as f32;
    let x = if f64::from(x) < t {
        f32::from_bits(x.to_bits() + 1)
    } else {
        x
    };
    let p = H::ceil(x).min(H::FINITE_END);
    let tie = p < H::FINITE_END && f64::from(H::value(p as u16)) == t;
    (p + u32::from(tie && b & 1 == 1)).min(H::FINITE_END)
}

/// A table entry that is not a code: the pattern's scaled value is outside the table's range.
pub(super) const NOT_IN_TABLE: u16 = 0x100;

/// The code of every magnitude pattern for one row scale, where the quantizer's change points
/// give it (see the module documentation), and 0 where the scaled value is 0: one entry per
/// pattern, so that a pattern (15 bits) is its own index.
#[derive(Debug)]
pub(super) struct ScaleTable {
    /// `table[m]`: the code of pattern `m`, or [`NOT_IN_TABLE`]; `None` once dropped (it went
    /// to the spares).
    table: Option<Box<[u16; 0x8000]>>,
}

impl ScaleTable {
    /// The table of scale `s` (finite, positive) for codes given by `breaks` on the scaled
    /// values' bit patterns.
    fn new<H: Half>(breaks: &Breaks, s: f32) -> ScaleTable {
        let (lo, hi, points, codes) = breaks.parts();
        // Patterns up to `zero` scale to 0 (pattern 0, and any that underflow); from `start`
        // to before `stop`, into `[lo, hi]` (`hi + 1` is at most infinity's bits, and no
        // pattern from `FINITE_END` on is finite).
        let zero = first_at_least::<H>(1, s) - 1;
        let start = first_at_least::<H>(lo, s);
        let stop = first_at_least::<H>(hi + 1, s).max(start);
        let spare = SPARE.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut table: Box<[u16; 0x8000]> = spare.unwrap_or_else(|| {
            vec![NOT_IN_TABLE; 0x8000]
                .into_boxed_slice()
                .try_into()
                .expect("0x8000 entries")
        });
        // Every entry written: a spare table holds another scale's codes.
        table[..=zero as usize].fill(0);
        table[zero as usize + 1..start as usize].fill(NOT_IN_TABLE);
        let mut at = start;
        for (&b, &c) in points.iter().zip(codes) {
            let next = first_at_least::<H>(b, s).clamp(at, stop);
            table[at as usize..next as usize].fill(u16::from(c));
            at = next;
        }
        table[at as usize..stop as usize].fill(u16::from(codes[points.len()]));
        table[stop as usize..].fill(NOT_IN_TABLE);
        ScaleTable { table: Some(table) }
    }

    /// The entries.
    fn entries(&self) -> &[u16; 0x8000] {
        self.table.as_deref().expect("a table until dropped")
    }

    /// The bytes it holds.
    fn size(&self) -> usize {
        2 * 0x8000
    }
}

/// The entries of the table of scale `s` for `breaks` (built, copied, dropped to the spares).
#[cfg(test)]
pub(super) fn table_entries<H: Half>(breaks: &Breaks, s: f32) -> Vec<u16> {
    ScaleTable::new::<H>(breaks, s).entries().to_vec()
}

/// Tables of dropped [`ScaleTable`]s, for the next ones to reuse, at most [`SPARE_MAX`]: a
/// tensor builds a table per distinct row scale (a few hundred), and tables freed with their
/// tensor and allocated again for the next cost the kernel a fresh zeroed page per 4 KiB (with
/// several threads, the allocator returns their memory between tensors): in a two-thread BF16
/// conversion that zeroing was 15% of the CPU time, against 0.5% on one thread.
static SPARE: Mutex<Vec<Box<[u16; 0x8000]>>> = Mutex::new(Vec::new());

/// Spare tables kept at most: 256 (16 MiB).
const SPARE_MAX: usize = 256;

impl Drop for ScaleTable {
    fn drop(&mut self) {
        let mut spare = SPARE.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < SPARE_MAX {
            spare.extend(self.table.take());
        }
    }
}

/// A hasher for the keys of the table caches (a scale's bits), much cheaper than the default
/// one, which guards against hostile keys that a scale cannot be.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u8(b);
        }
    }
    fn write_u8(&mut self, b: u8) {
        self.write_u64(u64::from(b));
    }
    fn write_u32(&mut self, b: u32) {
        self.write_u64(u64::from(b));
    }
    fn write_u64(&mut self, b: u64) {
        self.0 = (self.0.rotate_left(26) ^ b).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type KeyMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;

/// The tables a quantizer has built, by format and scale, shared by every chunk (and thread)
/// that encodes its tensor. Its memory is bounded: past [`MAX_CACHED_BYTES`] it starts again.
#[derive(Default, Debug)]
pub(super) struct ScaleCache(Mutex<Cached>);

/// What a [`ScaleCache`] holds: the tables by format and scale bits, and their bytes.
#[derive(Default, Debug)]
struct Cached {
    tables: KeyMap<(u8, u32), Arc<ScaleTable>>,
    bytes: usize,
}

/// Bytes of tables a [`ScaleCache`] holds at most: 512 tables of 64 KiB (a tensor of more
/// distinct row scales than that builds some tables again; the BF16 bench input's attention
/// outputs have up to 424).
const MAX_CACHED_BYTES: usize = 32 << 20;

impl Clone for ScaleCache {
    /// An empty cache: the tables are built again as needed.
    fn clone(&self) -> Self {
        ScaleCache::default()
    }
}

impl ScaleCache {
    fn get<H: Half>(&self, breaks: &Breaks, s: f32) -> Arc<ScaleTable> {
        let key = (H::KIND, s.to_bits());
        if let Some(t) = self.lock().tables.get(&key) {
            return Arc::clone(t);
        }
        // Built outside the lock: another thread may build the same table meanwhile, and one
        // of the two is kept.
        let t = Arc::new(ScaleTable::new::<H>(breaks, s));
        let mut cache = self.lock();
        if cache.bytes + t.size() > MAX_CACHED_BYTES {
            *cache = Cached::default();
        }
        cache.bytes += t.size();
        Arc::clone(cache.tables.entry(key).or_insert(t))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        // Nothing is left half-done under the lock: a poisoned one is still consistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The tables one call has used, in front of the quantizer's [`ScaleCache`].
pub(super) struct ScaleTables<'q, H> {
    breaks: &'q Breaks,
    shared: &'q ScaleCache,
    tables: KeyMap<u32, Arc<ScaleTable>>,
    half: std::marker::PhantomData<H>,
}

impl<'q, H: Half> ScaleTables<'q, H> {
    pub(super) fn new(breaks: &'q Breaks, shared: &'q ScaleCache) -> ScaleTables<'q, H> {
        ScaleTables {
            breaks,
            shared,
            tables: KeyMap::default(),
            half: std::marker::PhantomData,
        }
    }

    fn get(&mut self, s: f32) -> &ScaleTable {
        let (breaks, shared) = (self.breaks, self.shared);
        self.tables
            .entry(s.to_bits())
            .or_insert_with(|| shared.get::<H>(breaks, s))
    }
}

/// The codes and sign bytes of `words`, elements `first..` of a tensor with row scales `rs`
/// (`first` a multiple of 8), from the tables of their rows' scales; `Err` if some element is
/// not in its table (the caller then codes these elements by the rule).
pub(super) fn encode_scaled<H: Half>(
    words: &[[u8; 2]],
    first: u64,
    rs: &RowScales<'_>,
    tables: &mut ScaleTables<'_, H>,
    codes: &mut [u8],
    signs: &mut [u8],
) -> Result<(), ()> {
    let mut missing = 0u16;
    let _ = for_each_row_run(words, first, rs, |run, s, at| {
        let table = tables.get(s).entries();
        for (c, w) in codes[at..at + run.len()].iter_mut().zip(run) {
            let e = table[usize::from(u16::from_le_bytes(*w) & 0x7FFF)];
            missing |= e;
            *c = e as u8;
        }
        Ok::<(), ()>(())
    });
    if missing & NOT_IN_TABLE != 0 {
        return Err(());
    }
    // Sign bits: set where the element is negative and its code is not 0 (§11.2).
    let mut c8 = codes.chunks_exact(8);
    let mut w8 = words.chunks_exact(8);
    for ((c, w), s) in (&mut c8).zip(&mut w8).zip(signs.iter_mut()) {
        let w = w.as_flattened();
        let lo = u64::from_le_bytes(w[..8].try_into().expect("8 bytes"));
        let hi = u64::from_le_bytes(w[8..].try_into().expect("8 bytes"));
        let neg = sign_bits(lo) | (sign_bits(hi) << 4);
        let c = u64::from_le_bytes(c.try_into().expect("8 codes"));
        *s = neg & nonzero_bytes(c);
    }
    let (c, w) = (c8.remainder(), w8.remainder());
    if !c.is_empty() {
        let mut byte = 0u8;
        for (j, (&c, w)) in c.iter().zip(w).enumerate() {
            byte |= ((w[1] >> 7) & u8::from(c != 0)) << j;
        }
        signs[codes.len() / 8] = byte;
    }
    Ok(())
}

/// The statistics ([`scan_bytes`](super::scan_bytes)) of some rows of a 16-bit tensor with row
/// scales, gathered a group of rows at a time: rows that share a scale share the scaled value of
/// every pattern, so each group counts its patterns (one increment per element) and the
/// histogram gets each distinct pattern once, divided once, weighted by its count times the
/// rows' weight. The bins' sums are the same integers as element by element, so the
/// statistics equal those of [`scan_bytes`](super::scan_bytes) over the same rows, in any grouping and order;
/// grouping the rows by scale (`rows` sorted by their scales' bits) makes each pattern's work
/// shared by many elements.
///
/// `bytes` is the whole tensor (every row), `rows` the rows to scan. `None` where
/// [`scan_bytes`](super::scan_bytes) must decide instead: a dtype other than BF16 and F16, a
/// codec without a histogram, bytes that are not the tensor's, a row out of range, or any value
/// that is not finite, overflows or underflows to 0 when scaled (the element-ordered pass reports
/// the first fault).
pub fn scan_row_groups(
    codec: Codec,
    dtype: Dtype,
    bytes: &[u8],
    rs: &RowScales<'_>,
    rows: &[u64],
) -> Option<Stats> {
    match (dtype, codec.fits_histogram()) {
        (Dtype::BF16, true) => groups::<Bf16>(bytes, rs, rows),
        (Dtype::F16, true) => groups::<F16>(bytes, rs, rows),
        _ => None,
    }
}

/// [`scan_row_groups`] for format `H`.
fn groups<H: Half>(bytes: &[u8], rs: &RowScales<'_>, rows: &[u64]) -> Option<Stats> {
    let (row_len, scales) = (rs.row_len() as usize, rs.scales());
    if bytes.len() != 2 * row_len * scales.len() || row_len == 0 {
        return None;
    }
    let words: &[[u8; 2]] = bytes.as_chunks().0;
    // Counts per magnitude pattern, in u32: a group of fewer than 2^32 elements cannot overflow
    // one, and a count times a row weight (at most 2^32) fits a u64.
    if (rows.len() as u64).checked_mul(row_len as u64)? >= 1 << 32 {
        return None;
    }
    let mut count = vec![0u32; 0x8000];
    // (scaled pattern, weight) of each distinct pattern of each group.
    let mut pairs: Vec<(u32, u64)> = Vec::new();
    let (mut lo, mut hi, mut nonzero) = (u32::MAX, 0u32, 0u64);
    let mut k = 0;
    while k < rows.len() {
        let s = *scales.get(usize::try_from(rows[k]).ok()?)?;
        // The group: the rows from k on with the same scale.
        let (mut a, mut b) = (u32::MAX, 0u32);
        let mut n = 0u64;
        while k < rows.len() {
            let r = usize::try_from(rows[k]).ok()?;
            if scales.get(r)?.to_bits() != s.to_bits() {
                break;
            }
            let row = &words[r * row_len..(r + 1) * row_len];
            let (ra, rb, rn) = magnitude_range(row, u16::from_le_bytes);
            if rn > 0 {
                a = a.min(ra);
                b = b.max(rb);
                n += rn;
            }
            for w in row {
                count[usize::from(u16::from_le_bytes(*w) & 0x7FFF)] += 1;
            }
            k += 1;
        }
        count[0] = 0;
        if n == 0 {
            continue;
        }
        let (small, large) = (H::value(a as u16) / s, H::value(b as u16) / s);
        if b >= H::FINITE_END || !large.is_finite() || small == 0.0 {
            return None;
        }
        lo = lo.min(small.to_bits());
        hi = hi.max(large.to_bits());
        nonzero += n;
        let w = rs.weight(s);
        for (m, c) in count[a as usize..=b as usize].iter_mut().enumerate() {
            if *c != 0 {
                let u = H::value((a as usize + m) as u16) / s;
                pairs.push((u.to_bits(), u64::from(*c) * w));
                *c = 0;
            }
        }
    }
    let elements = rows.len() as u64 * row_len as u64;
    Some(Stats::of_range(
        elements,
        (lo, hi, nonzero),
        true,
        &Pairs(&pairs),
    ))
}

/// Magnitudes given as (bit pattern, weight) pairs.
struct Pairs<'a>(&'a [(u32, u64)]);

impl lloyd::Magnitudes for Pairs<'_> {
    fn for_each(&self, mut f: impl FnMut(u32, u64)) {
        for &(b, w) in self.0 {
            f(b, w);
        }
    }
}

/// The sign bits of four 16-bit floats packed in `x` (element `j` in bits `16 j..16 j + 16`),
/// as bits 0–3: each moved into place by one multiplication (the products of the other
/// elements land outside bits 48–51, on distinct bits, so nothing carries into them).
#[inline(always)]
fn sign_bits(x: u64) -> u8 {
    let t = (x >> 15) & 0x0001_0001_0001_0001;
    ((t.wrapping_mul((1 << 48) | (1 << 33) | (1 << 18) | (1 << 3)) >> 48) & 0xF) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_bits_are_each_element_s_top_bit() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let want = (0..4).fold(0u8, |m, j| m | ((((x >> (16 * j + 15)) & 1) as u8) << j));
            assert_eq!(sign_bits(x), want, "{x:#x}");
        }
        assert_eq!(sign_bits(u64::MAX), 0xF);
        assert_eq!(sign_bits(0x7FFF_7FFF_7FFF_7FFF), 0);
    }
}

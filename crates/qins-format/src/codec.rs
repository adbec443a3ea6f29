//! The codec registry (§12) and the encoders.
//!
//! Encoding a tensor takes two passes so that large tensors can be split across threads:
//! [`scan`] each chunk and [`Stats::merge`] the results, build a [`Quantizer`] from the merged
//! statistics, then [`Quantizer::encode`] each chunk into its slice of the codes and sign
//! bytes. The result does not depend on how the tensor was split.

use std::fmt;
use std::str::FromStr;

use crate::fastcode::Breaks;

/// A codec id from the registry of §12. Raw storage (id 0) is not a codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// `log` (id 1, §12.1): codes on a logarithmic scale between the smallest and largest
    /// non-zero magnitude. The prototype's rule and the default.
    Log,
    /// `linear` (id 2, §12.2): codes proportional to the magnitude.
    Linear,
}

impl Codec {
    /// Every codec of the registry, in id order.
    pub const ALL: &'static [Codec] = &[Codec::Log, Codec::Linear];

    /// The registry id stored in a tensor record.
    pub const fn id(self) -> u16 {
        match self {
            Codec::Log => 1,
            Codec::Linear => 2,
        }
    }

    /// The codec with registry id `id`; `None` for 0 (raw) and unknown ids.
    pub const fn from_id(id: u16) -> Option<Codec> {
        match id {
            1 => Some(Codec::Log),
            2 => Some(Codec::Linear),
            _ => None,
        }
    }

    /// The registry name.
    pub const fn name(self) -> &'static str {
        match self {
            Codec::Log => "log",
            Codec::Linear => "linear",
        }
    }

    /// Whether `param0`/`param1` satisfy the codec's constraint (§12): finite, and
    /// `log_min ≤ log_max` for `log`, `max_abs ≥ 0` and `param1 = 0` for `linear`.
    pub fn params_are_valid(self, p0: f64, p1: f64) -> bool {
        p0.is_finite()
            && p1.is_finite()
            && match self {
                Codec::Log => p0 <= p1,
                Codec::Linear => p0 >= 0.0 && p1 == 0.0,
            }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Codec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Codec::ALL
            .iter()
            .copied()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown codec {s:?} (known: log, linear)"))
    }
}

/// Why values cannot be encoded.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EncodeError {
    /// A value to encode is NaN or infinite (§12); `index` is the element's flat index.
    #[error("value at index {index} is {value}, not finite")]
    NonFinite {
        /// Flat index of the first bad element.
        index: u64,
        /// The value.
        value: f32,
    },
    /// Dividing a value by its row scale overflows f32 (§12); `index` is the element's flat
    /// index.
    #[error("value at index {index} is {value}: divided by its row scale it overflows f32")]
    ScaleOverflow {
        /// Flat index of the first bad element.
        index: u64,
        /// The value before scaling.
        value: f32,
    },
    /// A row scale is not finite or not positive (§11.3).
    #[error("row scale {row} is {value}, not finite and positive")]
    BadScale {
        /// Row index.
        row: u64,
        /// The scale.
        value: f32,
    },
    /// The number of row scales does not match the shape.
    #[error("expected {expected} row scales, got {got}")]
    ScaleCount {
        /// Rows of the shape.
        expected: u64,
        /// Scales given.
        got: u64,
    },
    /// A chunk does not start on a sign-byte boundary or its buffers have the wrong length.
    #[error("chunk at element {first} is misaligned or its buffers have the wrong length")]
    BadChunk {
        /// The chunk's first element.
        first: u64,
    },
}

/// The row scales of a tensor (§11.3): one positive f32 per row of `row_len` elements.
#[derive(Clone, Copy, Debug)]
pub struct RowScales<'a> {
    scales: &'a [f32],
    row_len: u64,
}

impl<'a> RowScales<'a> {
    /// Row scales for a tensor of shape `shape`; checks the count and that every scale is
    /// finite and positive.
    pub fn new(scales: &'a [f32], shape: &[u64]) -> Result<Self, EncodeError> {
        let (row_len, rows) = crate::rows(shape).ok_or(EncodeError::ScaleCount {
            expected: u64::MAX,
            got: scales.len() as u64,
        })?;
        if rows != scales.len() as u64 {
            return Err(EncodeError::ScaleCount {
                expected: rows,
                got: scales.len() as u64,
            });
        }
        if let Some((row, &value)) = scales
            .iter()
            .enumerate()
            .find(|(_, s)| !(s.is_finite() && **s > 0.0))
        {
            return Err(EncodeError::BadScale {
                row: row as u64,
                value,
            });
        }
        Ok(RowScales { scales, row_len })
    }

    /// The scales.
    pub fn scales(&self) -> &'a [f32] {
        self.scales
    }

    /// The scale of flat element `index`.
    #[inline]
    pub fn scale_of(&self, index: u64) -> f32 {
        self.scales[(index / self.row_len) as usize]
    }
}

/// What the encoders need to know of a tensor's magnitudes (after row scaling).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    /// Smallest non-zero magnitude (`f32::INFINITY` when there is none).
    pub min_nonzero: f32,
    /// Largest magnitude (0 when every element is zero).
    pub max_abs: f32,
    /// Number of non-zero elements.
    pub nonzero: u64,
    /// Number of elements scanned.
    pub count: u64,
}

impl Stats {
    /// The statistics of no elements.
    pub const EMPTY: Stats = Stats {
        min_nonzero: f32::INFINITY,
        max_abs: 0.0,
        nonzero: 0,
        count: 0,
    };

    /// The statistics of two disjoint chunks together.
    pub fn merge(self, other: Stats) -> Stats {
        Stats {
            min_nonzero: self.min_nonzero.min(other.min_nonzero),
            max_abs: self.max_abs.max(other.max_abs),
            nonzero: self.nonzero + other.nonzero,
            count: self.count + other.count,
        }
    }
}

/// The value to encode at flat index `index`: `x`, divided by its row's scale if any (§12).
#[inline]
fn scaled(x: f32, index: u64, scales: Option<&RowScales<'_>>) -> f32 {
    match scales {
        Some(s) => x / s.scale_of(index),
        None => x,
    }
}

/// Scans a chunk of values whose first element has flat index `first`: checks that every value
/// is finite and gathers the magnitudes' statistics.
pub fn scan(
    values: &[f32],
    first: u64,
    scales: Option<&RowScales<'_>>,
) -> Result<Stats, EncodeError> {
    let mut st = Stats::EMPTY;
    for (i, &x) in values.iter().enumerate() {
        let index = first + i as u64;
        if !x.is_finite() {
            return Err(EncodeError::NonFinite { index, value: x });
        }
        let m = scaled(x, index, scales).abs();
        if !m.is_finite() {
            return Err(EncodeError::ScaleOverflow { index, value: x });
        }
        if m != 0.0 {
            st.nonzero += 1;
            st.min_nonzero = st.min_nonzero.min(m);
            st.max_abs = st.max_abs.max(m);
        }
    }
    st.count = values.len() as u64;
    Ok(st)
}

/// A fitted codec: the table, the parameters, and the rule from magnitude to code.
#[derive(Clone, Debug)]
pub struct Quantizer {
    codec: Codec,
    params: [f64; 2],
    lut: [f32; 256],
    /// The exact code as a table of change points, for tensors large enough to repay it.
    fast: Option<Box<Breaks>>,
}

/// Tensors with fewer elements than this are coded with the formula directly: building the
/// change-point table costs a few thousand evaluations of it.
const FAST_MIN_ELEMENTS: u64 = 1 << 14;

impl Quantizer {
    /// Fits `codec` to a tensor's merged statistics (§12.1, §12.2).
    pub fn new(codec: Codec, stats: &Stats) -> Quantizer {
        let mut lut = [0f32; 256];
        match codec {
            Codec::Log => {
                let (log_min, log_max) = if stats.nonzero == 0 {
                    (0.0, 0.0)
                } else {
                    (
                        f64::from(stats.min_nonzero).ln(),
                        f64::from(stats.max_abs).ln(),
                    )
                };
                let range = log_max - log_min;
                for (c, v) in lut.iter_mut().enumerate().skip(1) {
                    let t = (255 - c) as f64 / 254.0;
                    *v = (log_min + t * range).exp() as f32;
                }
                Quantizer {
                    codec,
                    params: [log_min, log_max],
                    lut,
                    fast: None,
                }
                .with_fast_path(stats)
            }
            Codec::Linear => {
                let max_abs = f64::from(stats.max_abs);
                for (c, v) in lut.iter_mut().enumerate().skip(1) {
                    *v = ((c - 1) as f64 / 254.0 * max_abs) as f32;
                }
                Quantizer {
                    codec,
                    params: [max_abs, 0.0],
                    lut,
                    fast: None,
                }
                .with_fast_path(stats)
            }
        }
    }

    /// The codec.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// `param0` and `param1` as stored in the tensor record.
    pub fn params(&self) -> [f64; 2] {
        self.params
    }

    /// The 256-entry table.
    pub fn lut(&self) -> &[f32; 256] {
        &self.lut
    }

    fn with_fast_path(mut self, stats: &Stats) -> Quantizer {
        if stats.nonzero > 0 && stats.count >= FAST_MIN_ELEMENTS {
            let (lo, hi) = (stats.min_nonzero.to_bits(), stats.max_abs.to_bits());
            let breaks = Breaks::new(lo, hi, |b| self.code_exact(f32::from_bits(b)));
            self.fast = Some(Box::new(breaks));
        }
        self
    }

    /// The code of one magnitude `m ≥ 0` (§12): the formula's, computed from the change-point
    /// table where the quantizer has one.
    #[inline]
    pub fn code(&self, m: f32) -> u8 {
        if let Some(c) = self.fast.as_ref().and_then(|f| f.code(m.to_bits())) {
            return c;
        }
        self.code_exact(m)
    }

    /// The code of one magnitude `m ≥ 0` by the formula of §12, evaluated as written so that
    /// ties fall where the spec puts them.
    pub fn code_exact(&self, m: f32) -> u8 {
        if m == 0.0 {
            return 0;
        }
        match self.codec {
            Codec::Log => {
                let [log_min, log_max] = self.params;
                if log_max == log_min {
                    return 1;
                }
                let x = 255.0 - 254.0 * (f64::from(m).ln() - log_min) / (log_max - log_min);
                x.round_ties_even().clamp(1.0, 255.0) as u8
            }
            Codec::Linear => {
                let x = f64::from(m) / self.params[0] * 254.0 + 1.0;
                x.round_ties_even().clamp(1.0, 255.0) as u8
            }
        }
    }

    /// Encodes a chunk of values whose first element has flat index `first` (a multiple of 8)
    /// into `codes` (one per value) and `signs` (`ceil(len / 8)` bytes, §11.2). Values must
    /// have been [`scan`]ned: a non-finite value is reported again here.
    pub fn encode(
        &self,
        values: &[f32],
        first: u64,
        scales: Option<&RowScales<'_>>,
        codes: &mut [u8],
        signs: &mut [u8],
    ) -> Result<(), EncodeError> {
        if first % 8 != 0 || codes.len() != values.len() || signs.len() != values.len().div_ceil(8)
        {
            return Err(EncodeError::BadChunk { first });
        }
        signs.fill(0);
        for (i, (&x, code)) in values.iter().zip(codes.iter_mut()).enumerate() {
            let index = first + i as u64;
            if !x.is_finite() {
                return Err(EncodeError::NonFinite { index, value: x });
            }
            let u = scaled(x, index, scales);
            let c = self.code(u.abs());
            *code = c;
            if c != 0 && u.is_sign_negative() {
                signs[i / 8] |= 1 << (i % 8);
            }
        }
        Ok(())
    }
}

/// A whole tensor encoded in one call: the convenience form of [`scan`], [`Quantizer::new`] and
/// [`Quantizer::encode`].
#[derive(Clone, Debug)]
pub struct Encoded {
    /// The fitted codec (table and parameters).
    pub quantizer: Quantizer,
    /// One code per element.
    pub codes: Vec<u8>,
    /// Packed sign bits.
    pub signs: Vec<u8>,
}

/// Encodes a whole tensor with `codec`.
pub fn encode(
    codec: Codec,
    values: &[f32],
    scales: Option<&RowScales<'_>>,
) -> Result<Encoded, EncodeError> {
    let stats = scan(values, 0, scales)?;
    let quantizer = Quantizer::new(codec, &stats);
    let mut codes = vec![0u8; values.len()];
    let mut signs = vec![0u8; values.len().div_ceil(8)];
    quantizer.encode(values, 0, scales, &mut codes, &mut signs)?;
    Ok(Encoded {
        quantizer,
        codes,
        signs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_codes_follow_the_formula() {
        let v = [0.5f32, -0.25, 0.0, 0.001, -0.5, 1e-3];
        let e = encode(Codec::Log, &v, None).unwrap();
        let x = 255.0
            - 254.0 * (0.25f64.ln() - f64::from(0.001f32).ln())
                / (0.5f64.ln() - f64::from(0.001f32).ln());
        assert_eq!(e.codes, [1, x.round_ties_even() as u8, 0, 255, 1, 255]);
        assert_eq!(e.signs, [0b0001_0010]);
        let [lo, hi] = e.quantizer.params();
        assert_eq!(lo, f64::from(0.001f32).ln());
        assert_eq!(hi, 0.5f64.ln());
        assert_eq!(e.quantizer.lut()[0], 0.0);
        assert_eq!(e.quantizer.lut()[1], 0.5);
        assert_eq!(e.quantizer.lut()[255], 0.001);
    }

    #[test]
    fn degenerate_and_empty_tensors() {
        let e = encode(Codec::Log, &[-2.0, 2.0, 0.0], None).unwrap();
        assert_eq!(e.codes, [1, 1, 0]);
        assert_eq!(e.quantizer.lut()[1], 2.0);
        assert_eq!(e.quantizer.lut()[255], 2.0);
        let z = encode(Codec::Log, &[0.0, -0.0], None).unwrap();
        assert_eq!(z.codes, [0, 0]);
        assert_eq!(z.signs, [0]);
        assert_eq!(z.quantizer.params(), [0.0, 0.0]);
        let l = encode(Codec::Linear, &[0.0; 3], None).unwrap();
        assert_eq!(l.quantizer.lut(), &[0.0; 256]);
        let n = encode(Codec::Log, &[], None).unwrap();
        assert!(n.codes.is_empty() && n.signs.is_empty());
    }

    #[test]
    fn linear_codes_follow_the_formula() {
        let e = encode(Codec::Linear, &[1.0, -0.5, 0.0, 0.001], None).unwrap();
        assert_eq!(e.codes, [255, 128, 0, 1]);
        assert_eq!(e.quantizer.lut()[255], 1.0);
        assert_eq!(e.quantizer.lut()[1], 0.0);
        assert_eq!(e.quantizer.params(), [1.0, 0.0]);
    }

    #[test]
    fn non_finite_values_are_refused_with_their_index() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let err = encode(Codec::Log, &[1.0, 2.0, bad], None).unwrap_err();
            assert!(
                matches!(err, EncodeError::NonFinite { index: 2, .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn scaling_that_overflows_is_refused() {
        let shape = [1u64, 2];
        let s = RowScales::new(&[1e-30], &shape).unwrap();
        let err = encode(Codec::Log, &[1.0, f32::MAX], Some(&s)).unwrap_err();
        assert!(
            matches!(err, EncodeError::ScaleOverflow { index: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn row_scales_are_checked_and_applied() {
        let shape = [2u64, 2];
        assert!(matches!(
            RowScales::new(&[1.0], &shape),
            Err(EncodeError::ScaleCount {
                expected: 2,
                got: 1
            })
        ));
        assert!(matches!(
            RowScales::new(&[1.0, 0.0], &shape),
            Err(EncodeError::BadScale { row: 1, .. })
        ));
        let s = RowScales::new(&[1.0, 10.0], &shape).unwrap();
        let e = encode(Codec::Log, &[1.0, 0.5, 10.0, -5.0], Some(&s)).unwrap();
        assert_eq!(e.codes[0], e.codes[2]);
        assert_eq!(e.codes[1], e.codes[3]);
        assert_eq!(e.signs, [0b1000]);
    }

    #[test]
    fn chunked_encoding_equals_whole() {
        let v: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 1000) as f32 - 500.0)
            .collect();
        let whole = encode(Codec::Log, &v, None).unwrap();
        let st = v
            .chunks(256)
            .enumerate()
            .map(|(k, c)| scan(c, k as u64 * 256, None).unwrap())
            .fold(Stats::EMPTY, Stats::merge);
        let q = Quantizer::new(Codec::Log, &st);
        let mut codes = vec![0; v.len()];
        let mut signs = vec![0; v.len().div_ceil(8)];
        for (k, c) in v.chunks(256).enumerate() {
            let a = k * 256;
            q.encode(
                c,
                a as u64,
                None,
                &mut codes[a..a + c.len()],
                &mut signs[a / 8..(a + c.len()).div_ceil(8)],
            )
            .unwrap();
        }
        assert_eq!(codes, whole.codes);
        assert_eq!(signs, whole.signs);
        assert!(matches!(
            q.encode(&v[..3], 3, None, &mut codes[..3], &mut signs[..1]),
            Err(EncodeError::BadChunk { first: 3 })
        ));
    }
}

#[cfg(test)]
mod fast_tests {
    use super::*;

    /// The change-point table gives the formula's code for every f32 bit pattern of a range.
    #[test]
    fn fast_codes_equal_the_formula_on_every_bit_pattern() {
        let cases = [
            (Codec::Log, 1e-6f32, 0.25f32),
            (Codec::Log, 0.01, 0.0101),
            (Codec::Linear, 1e-30, 3.0),
            (Codec::Log, f32::from_bits(1), f32::MAX),
        ];
        for (codec, min, max) in cases {
            let stats = Stats {
                min_nonzero: min,
                max_abs: max,
                nonzero: 2,
                count: FAST_MIN_ELEMENTS,
            };
            let q = Quantizer::new(codec, &stats);
            assert!(q.fast.is_some());
            let (lo, hi) = (min.to_bits(), max.to_bits());
            // Every pattern near the ends and a dense stride through the middle; the full
            // sweep of one binade below.
            let step = ((hi - lo) / 3_000_000).max(1);
            let mut b = lo;
            while b <= hi {
                let m = f32::from_bits(b);
                assert_eq!(q.code(m), q.code_exact(m), "{codec} bits {b:#x}");
                b = b.saturating_add(step);
                if b == u32::MAX {
                    break;
                }
            }
        }
        let stats = Stats {
            min_nonzero: 0.5,
            max_abs: 1.0,
            nonzero: 2,
            count: FAST_MIN_ELEMENTS,
        };
        let q = Quantizer::new(Codec::Log, &stats);
        for b in 0.5f32.to_bits()..=1.0f32.to_bits() {
            let m = f32::from_bits(b);
            assert_eq!(q.code(m), q.code_exact(m), "bits {b:#x}");
        }
    }
}

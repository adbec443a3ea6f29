//! The codec registry (§12): ids, names, and what each codec needs and allows.

use std::fmt;
use std::str::FromStr;

#[cfg(doc)]
use super::{row_scales, scan_bytes, Quantizer, RowMaxima, Stats};

/// A codec id from the registry of §12. Raw storage (id 0) is not a codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// `log` (id 1, §12.1): codes on a logarithmic scale between the smallest and largest
    /// non-zero magnitude. The prototype's rule (`qins-convert` defaults to
    /// [`Codec::LloydRows`]).
    Log,
    /// `linear` (id 2, §12.2): codes proportional to the magnitude.
    Linear,
    /// `lloyd` (id 3, §12.3): 255 levels fitted to the tensor's magnitudes to minimise the
    /// squared error, without row scales.
    Lloyd,
    /// `lloyd-rows` (id 4, §12.4): each row divided by its largest magnitude (the row scales),
    /// then 255 levels fitted as `lloyd` does to the scaled magnitudes. Needs row scales:
    /// see [`Codec::uses_row_scales`] and [`RowMaxima`].
    LloydRows,
}

impl Codec {
    /// Every codec of the registry, in id order.
    pub const ALL: &'static [Codec] = &[Codec::Log, Codec::Linear, Codec::Lloyd, Codec::LloydRows];

    /// The registry id stored in a tensor record.
    pub const fn id(self) -> u16 {
        match self {
            Codec::Log => 1,
            Codec::Linear => 2,
            Codec::Lloyd => 3,
            Codec::LloydRows => 4,
        }
    }

    /// The codec with registry id `id`; `None` for 0 (raw) and unknown ids.
    pub const fn from_id(id: u16) -> Option<Codec> {
        match id {
            1 => Some(Codec::Log),
            2 => Some(Codec::Linear),
            3 => Some(Codec::Lloyd),
            4 => Some(Codec::LloydRows),
            _ => None,
        }
    }

    /// The registry name.
    pub const fn name(self) -> &'static str {
        match self {
            Codec::Log => "log",
            Codec::Linear => "linear",
            Codec::Lloyd => "lloyd",
            Codec::LloydRows => "lloyd-rows",
        }
    }

    /// Whether a tensor encoded with this codec has row scales (§11.3): writers MUST set
    /// `ROW_SCALES` for `lloyd-rows`, with the scales of [`RowMaxima::into_scales`] (or
    /// [`row_scales`]). The other codecs are defined without them, though a writer MAY still
    /// give `log` and `linear` scales of its own choosing.
    pub const fn uses_row_scales(self) -> bool {
        matches!(self, Codec::LloydRows)
    }

    /// Whether [`Quantizer::new`] fits the codec's table to the histogram of [`Stats`]
    /// (`lloyd`, `lloyd-rows`); `log` and `linear` need only the range and the counts, so
    /// [`scan_bytes`] can skip the histogram for them.
    pub const fn fits_histogram(self) -> bool {
        matches!(self, Codec::Lloyd | Codec::LloydRows)
    }

    /// Whether `param0`/`param1` satisfy the codec's constraint (§12): finite, and
    /// `log_min ≤ log_max` for `log`; `max_abs ≥ 0` and `param1 = 0` for `linear`;
    /// `max_abs ≥ 0` and `rel_err ≥ 0` for `lloyd` and `lloyd-rows`.
    pub fn params_are_valid(self, p0: f64, p1: f64) -> bool {
        p0.is_finite()
            && p1.is_finite()
            && match self {
                Codec::Log => p0 <= p1,
                Codec::Linear => p0 >= 0.0 && p1 == 0.0,
                Codec::Lloyd | Codec::LloydRows => p0 >= 0.0 && p1 >= 0.0,
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
            .ok_or_else(|| {
                let known: Vec<&str> = Codec::ALL.iter().map(|c| c.name()).collect();
                format!("unknown codec {s:?} (known: {})", known.join(", "))
            })
    }
}

//! The closed-form codecs: `log` (§12.1), codes on a logarithmic scale between the smallest
//! and the largest non-zero magnitude, and `linear` (§12.2), codes proportional to the
//! magnitude. Their tables and codes follow from two parameters, by the formulas evaluated as
//! the spec writes them (in f64, ties to even), so that ties fall where the spec puts them.

use super::Stats;

/// `log`'s parameters `[log_min, log_max]`: the natural logarithms of the smallest non-zero
/// and the largest magnitude, or `[0, 0]` when every element is zero.
pub(super) fn log_params(stats: &Stats) -> [f64; 2] {
    if stats.nonzero == 0 {
        [0.0, 0.0]
    } else {
        [
            f64::from(stats.min_nonzero).ln(),
            f64::from(stats.max_abs).ln(),
        ]
    }
}

/// `log`'s table: `LUT[c] = exp(log_min + (255 − c) / 254 × (log_max − log_min))`, rounded to
/// f32, for `c` in 1..=255; `LUT[0] = 0`.
pub(super) fn log_table([log_min, log_max]: [f64; 2]) -> [f32; 256] {
    let mut lut = [0f32; 256];
    let range = log_max - log_min;
    for (c, v) in lut.iter_mut().enumerate().skip(1) {
        let t = (255 - c) as f64 / 254.0;
        *v = (log_min + t * range).exp() as f32;
    }
    lut
}

/// `log`'s code of a non-zero magnitude `m`: `clamp(round(255 − 254 × (ln m − log_min) /
/// (log_max − log_min)), 1, 255)`, or 1 when `log_max = log_min`.
pub(super) fn log_code([log_min, log_max]: [f64; 2], m: f32) -> u8 {
    if log_max == log_min {
        return 1;
    }
    let x = 255.0 - 254.0 * (f64::from(m).ln() - log_min) / (log_max - log_min);
    x.round_ties_even().clamp(1.0, 255.0) as u8
}

/// `linear`'s parameters `[max_abs, 0]`.
pub(super) fn linear_params(stats: &Stats) -> [f64; 2] {
    [f64::from(stats.max_abs), 0.0]
}

/// `linear`'s table: `LUT[c] = (c − 1) / 254 × max_abs`, rounded to f32, for `c` in 1..=255;
/// `LUT[0] = 0`.
pub(super) fn linear_table([max_abs, _]: [f64; 2]) -> [f32; 256] {
    let mut lut = [0f32; 256];
    for (c, v) in lut.iter_mut().enumerate().skip(1) {
        *v = ((c - 1) as f64 / 254.0 * max_abs) as f32;
    }
    lut
}

/// `linear`'s code of a non-zero magnitude `m`: `clamp(round(m / max_abs × 254 + 1), 1, 255)`.
pub(super) fn linear_code([max_abs, _]: [f64; 2], m: f32) -> u8 {
    let x = f64::from(m) / max_abs * 254.0 + 1.0;
    x.round_ties_even().clamp(1.0, 255.0) as u8
}

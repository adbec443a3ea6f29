//! The instruction set the passes over a tensor's values run with.
//!
//! The crate is built for the baseline of its target (on x86-64: SSE2), so that its binaries run
//! on every machine of that architecture. The passes that read every weight (row maxima, the
//! statistics and the histogram's inner loop) are loops of integer minima and maxima, of f32
//! divisions and of table updates that the compiler vectorises or schedules; the baseline has no
//! unsigned 32-bit minimum or maximum and divides four floats at a time. A pass defined with
//! [`twin!`] is compiled a second time for x86-64-v3 (AVX2: eight lanes, with the unsigned
//! minima and maxima, and BMI2's shifts), and that build runs when the CPU has it. Nothing it
//! computes changes: integer operations are exact and IEEE-754 division and conversion round the
//! same way in every width (Rust never contracts a multiply and an add into a fused one), and a
//! property test compares both builds of each pass on the same inputs.
//!
//! Measured on one core (the encode bench, 4 Mi F32 weights in rows of 2048, `lloyd-rows`):
//! row maxima 0.25 → 0.04 ns per weight, statistics 1.38 → 1.15 ns; F16 statistics 1.22 → 1.03
//! ns. The codes pass stays on the baseline build: its table lookups are scalar loads in either,
//! and neither its divisions built wider (1.55 ns both) nor the whole crate built for x86-64-v3
//! (1.67 ns) made it faster. Once per tensor, the cube roots of a `lloyd` fit's first candidate
//! (`lloyd::cube_roots`, Newton's divisions four at a time instead of two): `Quantizer::new`
//! of that tensor 521 → 496 µs.
//!
//! `QINS_CPU=baseline` in the environment keeps every pass on the baseline build, to compare
//! the two or to rule the wider one out.

use std::sync::atomic::{AtomicU8, Ordering};

/// Defines `fn $name($args) -> $ret` that calls `$body($args)` compiled for x86-64-v3 where the
/// CPU has that level and `QINS_CPU=baseline` is not set, else as built. `$body` must be
/// `#[inline(always)]`, and so must everything it calls down to its loops (closures included,
/// which cannot be marked: pass functions), to get the wider build: a function that is not
/// inlined is compiled once, for the baseline.
macro_rules! twin {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty = $body:path;
    ) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            if $crate::codec::cpu::wide() {
                #[target_feature(enable = "avx2,bmi1,bmi2,fma,lzcnt,popcnt,sse4.2")]
                fn wide($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                // SAFETY: the one requirement of calling a `target_feature` function is that
                // the CPU running it has those features; `wide()` is true only once
                // `cpu::detected()` found every one of them (`is_x86_feature_detected!` asks
                // the CPU itself, so the answer holds for every thread of the process).
                #[allow(unsafe_code)]
                return unsafe { wide($($arg),*) };
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use twin;

/// Whether the passes defined with [`twin!`] use the wider build: decided once per process.
pub(crate) fn wide() -> bool {
    // 0: not decided yet; 1: baseline; 2: x86-64-v3.
    static LEVEL: AtomicU8 = AtomicU8::new(0);
    match LEVEL.load(Ordering::Relaxed) {
        0 => {
            let wide = !baseline_forced() && detected();
            LEVEL.store(if wide { 2 } else { 1 }, Ordering::Relaxed);
            wide
        }
        level => level == 2,
    }
}

/// `QINS_CPU=baseline`.
fn baseline_forced() -> bool {
    std::env::var_os("QINS_CPU").is_some_and(|v| v == "baseline")
}

/// Whether the CPU has every feature of the wider build ([`twin!`]'s `target_feature` list).
#[cfg(target_arch = "x86_64")]
pub(crate) fn detected() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("bmi1")
        && std::arch::is_x86_feature_detected!("bmi2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("lzcnt")
        && std::arch::is_x86_feature_detected!("popcnt")
        && std::arch::is_x86_feature_detected!("sse4.2")
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn detected() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::super::rows::RowMaxima;
    use super::super::stats::scan_bytes_as_built;
    use super::super::{scan_bytes, Codec, RowScales};
    use crate::Dtype;
    use proptest::prelude::*;

    /// Little-endian bytes of `dtype` for values drawn from `seeds`: weights of many binades,
    /// zeros of both signs, subnormals, and now and then a value past the scales' reach or
    /// one that is not finite.
    fn bytes(dtype: Dtype, seeds: &[(u8, u32)]) -> Vec<u8> {
        let f32_of = |&(kind, r): &(u8, u32)| match kind % 64 {
            0 => 0.0,
            1 => -0.0,
            2 => f32::from_bits(r & 0x807F_FFFF),
            3 => f32::INFINITY,
            4 => f32::NAN,
            5 => 3.0e38,
            _ => f32::from_bits((r & 0x807F_FFFF) | ((100 + r % 40) << 23)),
        };
        let f16_of = |&(kind, r): &(u8, u32)| -> u16 {
            match kind % 64 {
                0 => 0,
                1 => 0x8000,
                2 => (r & 0x83FF) as u16,
                3 => 0x7C00,
                4 => 0x7E00,
                5 => 0x7BFF,
                _ => ((r & 0x83FF) | ((1 + r % 29) << 10)) as u16,
            }
        };
        match dtype {
            Dtype::F32 => seeds.iter().flat_map(|s| f32_of(s).to_le_bytes()).collect(),
            Dtype::BF16 => seeds
                .iter()
                .flat_map(|s| ((f32_of(s).to_bits() >> 16) as u16).to_le_bytes())
                .collect(),
            _ => seeds.iter().flat_map(|s| f16_of(s).to_le_bytes()).collect(),
        }
    }

    /// Equal results, errors included (compared as printed: a NaN in an error is not equal to
    /// itself).
    macro_rules! same {
        ($a:expr, $b:expr) => {
            prop_assert_eq!(format!("{:?}", $a), format!("{:?}", $b))
        };
    }

    proptest! {
        /// The passes built for x86-64-v3 (where this CPU has it) give what the baseline build
        /// gives, errors included: row maxima, and the statistics with and without row scales.
        #[test]
        fn wide_passes_equal_the_baseline_ones(
            seeds in prop::collection::vec((any::<u8>(), any::<u32>()), 1..3000),
            cols in 1usize..700,
            split in any::<prop::sample::Index>(),
            dtype in prop::sample::select(vec![Dtype::F32, Dtype::BF16, Dtype::F16]),
            fault in any::<bool>(),
        ) {
            let mut seeds = seeds;
            if !fault {
                // Mostly runs without faults, so that the whole statistics are compared.
                for s in &mut seeds {
                    if matches!(s.0 % 64, 3..=5) {
                        s.0 = 6;
                    }
                }
            }
            let n = seeds.len() / cols * cols;
            prop_assume!(n > 0);
            let shape = [(n / cols) as u64, cols as u64];
            let b = bytes(dtype, &seeds[..n]);
            let es = b.len() / n;
            let at = split.index(n / 8 + 1) * 8;
            let parts = [(0, &b[..at * es]), (at as u64, &b[at * es..])];
            for &(first, part) in &parts {
                same!(
                    RowMaxima::scan_bytes(dtype, part, first, &shape),
                    RowMaxima::scan_bytes_as_built(dtype, part, first, &shape)
                );
                for codec in [Codec::Log, Codec::Lloyd] {
                    same!(
                        scan_bytes(codec, dtype, part, first, None),
                        scan_bytes_as_built(codec, dtype, part, first, None)
                    );
                }
            }
            let maxima = parts
                .iter()
                .map(|&(first, part)| RowMaxima::scan_bytes_as_built(dtype, part, first, &shape))
                .collect::<Result<Vec<_>, _>>();
            if let Ok(maxima) = maxima {
                let scales = maxima
                    .into_iter()
                    .fold(RowMaxima::EMPTY, RowMaxima::merge)
                    .into_scales(&shape)
                    .unwrap();
                let rs = RowScales::new(&scales, &shape).unwrap();
                for &(first, part) in &parts {
                    same!(
                        scan_bytes(Codec::LloydRows, dtype, part, first, Some(&rs)),
                        scan_bytes_as_built(Codec::LloydRows, dtype, part, first, Some(&rs))
                    );
                }
            }
        }
    }
}

//! Sizes such as `--max-shard-size`, written as transformers and huggingface_hub write them.

use crate::ExportError;

/// The default largest shard: 5 GB (5,000,000,000 bytes), as in `transformers` and
/// `huggingface_hub`.
pub const DEFAULT_MAX_SHARD_SIZE: u64 = 5_000_000_000;

/// Parses a size: a number of bytes (`1048576`), or a number followed by a unit, with or
/// without a space: `KB`, `MB`, `GB`, `TB` are powers of 1000 (`5GB` is 5,000,000,000 bytes,
/// as in transformers), `KiB`, `MiB`, `GiB`, `TiB` powers of 1024, `B` is bytes. Units are
/// case-insensitive; the number may have a fraction (`1.5GB`), and the result is rounded down
/// to whole bytes. The size must be at least one byte.
///
/// ```
/// assert_eq!(qins_export::parse_size("5GB").unwrap(), 5_000_000_000);
/// assert_eq!(qins_export::parse_size("2GiB").unwrap(), 2 << 30);
/// assert_eq!(qins_export::parse_size("500 MB").unwrap(), 500_000_000);
/// assert_eq!(qins_export::parse_size("4096").unwrap(), 4096);
/// assert!(qins_export::parse_size("5 parsecs").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64, ExportError> {
    let bad = |reason| ExportError::BadSize {
        text: text.to_string(),
        reason,
    };
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = (&s[..split], s[split..].trim());
    if number.is_empty() {
        return Err(bad("no number"));
    }
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(bad("unknown unit")),
    };
    let bytes = match number.split_once('.') {
        None => number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(multiplier))
            .ok_or(bad("too large"))?,
        Some((whole, frac)) => {
            if frac.contains('.') || (whole.is_empty() && frac.is_empty()) {
                return Err(bad("not a number"));
            }
            // Exact decimal arithmetic: whole × m + frac × m / 10^len(frac), rounded down.
            let whole: u64 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| bad("too large"))?
            };
            let frac = frac.trim_end_matches('0');
            if frac.len() > 18 {
                return Err(bad("too many decimals"));
            }
            let digits: u128 = if frac.is_empty() {
                0
            } else {
                frac.parse().map_err(|_| bad("not a number"))?
            };
            let scale = 10u128.pow(frac.len() as u32);
            let total = u128::from(whole) * u128::from(multiplier)
                + digits * u128::from(multiplier) / scale;
            u64::try_from(total).map_err(|_| bad("too large"))?
        }
    };
    if bytes == 0 {
        return Err(bad("must be at least one byte"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let ok = [
            ("5GB", 5_000_000_000),
            ("5gb", 5_000_000_000),
            ("500MB", 500_000_000),
            ("500 MB", 500_000_000),
            ("2GiB", 2 << 30),
            ("10KiB", 10 << 10),
            ("1TiB", 1 << 40),
            ("3TB", 3_000_000_000_000),
            ("7KB", 7_000),
            ("123", 123),
            ("123B", 123),
            ("1.5GB", 1_500_000_000),
            ("0.5KiB", 512),
            (".25MB", 250_000),
            ("2.", 2),
            (" 64 ", 64),
            ("1.0000000000000000000000", 1),
        ];
        for (s, v) in ok {
            assert_eq!(parse_size(s).unwrap(), v, "{s}");
        }
        for s in [
            "",
            "GB",
            "5 parsecs",
            "-5GB",
            "1e9",
            "0",
            "0.0001B",
            "1.2.3MB",
            ".",
            "99999999999TB",
            "18446744073709551616",
        ] {
            assert!(
                matches!(parse_size(s), Err(ExportError::BadSize { .. })),
                "{s:?} accepted"
            );
        }
    }
}

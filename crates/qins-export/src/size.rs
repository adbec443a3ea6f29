//! Sizes such as `--max-shard-size`, written as transformers and huggingface_hub write them
//! (`qins_stdx::parse_size`, shared with `qins-convert`).

use crate::ExportError;

/// The default largest shard: 5 GB (5,000,000,000 bytes), as in `transformers` and
/// `huggingface_hub`.
pub const DEFAULT_MAX_SHARD_SIZE: u64 = qins_stdx::HF_MAX_SHARD_SIZE;

/// Parses a size (see `qins_stdx::parse_size`): a number of bytes, or a number and a unit,
/// `KB`…`TB` powers of 1000, `KiB`…`TiB` powers of 1024.
///
/// ```
/// assert_eq!(qins_export::parse_size("5GB").unwrap(), 5_000_000_000);
/// assert_eq!(qins_export::parse_size("2GiB").unwrap(), 2 << 30);
/// assert!(qins_export::parse_size("5 parsecs").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64, ExportError> {
    qins_stdx::parse_size(text).map_err(|reason| ExportError::BadSize {
        text: text.to_string(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_size_is_a_typed_error_naming_the_text() {
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        let e = parse_size("5 parsecs").unwrap_err();
        assert!(
            matches!(
                e,
                ExportError::BadSize {
                    reason: "unknown unit",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("5 parsecs"));
    }
}

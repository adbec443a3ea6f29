//! Sharded sets (§21): the constants and name rules that the writer, the reader and the tools
//! share. A set is `n` shards, each a complete `.qins` file, and a JSON index; the JSON itself
//! is written by `qins-write` and parsed by `qins-read`.

/// `metadata.format` of an index (§21.2).
pub const INDEX_FORMAT: &str = "qins";
/// The version a writer writes as `metadata.format_version` (§21.2): the first with sets.
pub const INDEX_FORMAT_VERSION: (u16, u16) = (1, 1);
/// The minor version of a shard's preamble (§15.2): shards use a 1.1 feature.
pub const SHARD_VERSION_MINOR: u16 = 1;

/// Shard metadata key: the set's `set_id` (§21.3). A file with this key is a shard.
pub const KEY_SET_ID: &str = "qins.set.id";
/// Shard metadata key: the index's file name in the shard's directory (§21.3).
pub const KEY_INDEX_FILE: &str = "qins.set.index_file";
/// Shard metadata key: the shard's position `k`, from 1 (§21.3).
pub const KEY_SHARD: &str = "qins.set.shard";
/// Shard metadata key: the number of shards `n` (§21.3).
pub const KEY_SHARD_COUNT: &str = "qins.set.shard_count";

/// Limits of a set (§21.7).
pub mod limits {
    /// Largest index, in bytes (as a header, §16).
    pub const MAX_INDEX_SIZE: u64 = 256 << 20;
    /// Most shards in a set.
    pub const MAX_SHARDS: usize = 1 << 16;
    /// Longest shard or index file name, in bytes.
    pub const MAX_FILE_NAME: usize = 255;
    /// Longest set id, in bytes.
    pub const MAX_SET_ID: usize = 64;
}

/// The minor version a writer writes in a file with this metadata (§15.2): 1 in a shard (it
/// has [`KEY_SET_ID`]), else 0.
pub fn minor_version<'a>(mut keys: impl Iterator<Item = &'a String>) -> u16 {
    if keys.any(|k| k == KEY_SET_ID) {
        SHARD_VERSION_MINOR
    } else {
        crate::VERSION_MINOR
    }
}

/// Whether `id` is a valid set id (§21.2): 1 to 64 bytes, each an ASCII letter, digit, `-`,
/// `_` or `.`.
pub fn is_valid_set_id(id: &str) -> bool {
    (1..=limits::MAX_SET_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether `name` is a valid shard or index file name (§21.2): 1 to 255 bytes, not `.` or `..`,
/// without `/`, `\` or NUL.
pub fn is_valid_file_name(name: &str) -> bool {
    (1..=limits::MAX_FILE_NAME).contains(&name.len())
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
}

/// Parses a decimal number in canonical form (§21.3): ASCII digits without leading zeros
/// (`"0"` is canonical). `None` for anything else, or beyond u64.
pub fn parse_decimal(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// Parses a `format_version` string (§21.2), `"MAJOR.MINOR"`: two decimal integers from 0 to
/// 65535 without leading zeros. `None` if it is not one.
pub fn parse_version(text: &str) -> Option<(u16, u16)> {
    let (major, minor) = text.split_once('.')?;
    let part = |s: &str| parse_decimal(s).and_then(|v| u16::try_from(v).ok());
    Some((part(major)?, part(minor)?))
}

/// The stem of a single file's name: `NAME` for `NAME.qins`, else the whole name.
pub fn stem(file_name: &str) -> &str {
    file_name.strip_suffix(".qins").unwrap_or(file_name)
}

/// The writers' name of shard `k` (from 1) of `n` for a model that would be `NAME.qins`
/// (§21.1): `NAME-0000k-of-0000n.qins`, `k` and `n` zero-padded to 5 digits.
pub fn shard_file_name(stem: &str, k: usize, n: usize) -> String {
    format!("{stem}-{k:05}-of-{n:05}.qins")
}

/// `(k, n)` if `name` is the writers' name of shard `k` of `n` for the stem `stem`
/// ([`shard_file_name`], §21.1, with `1 ≤ k ≤ n ≤ 65536`), else `None`.
pub fn parse_shard_file_name(stem: &str, name: &str) -> Option<(usize, usize)> {
    let rest = name.strip_prefix(stem)?.strip_prefix('-')?;
    let (k, n) = rest.strip_suffix(".qins")?.split_once("-of-")?;
    let number = |s: &str| {
        (s.len() >= 5 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<usize>().ok())
            .flatten()
    };
    let (k, n) = (number(k)?, number(n)?);
    ((1..=n).contains(&k) && n <= limits::MAX_SHARDS && shard_file_name(stem, k, n) == name)
        .then_some((k, n))
}

/// The writers' name of the index for a model that would be `NAME.qins` (§21.1):
/// `NAME.qins.index.json`.
pub fn index_file_name(stem: &str) -> String {
    format!("{stem}.qins.index.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(stem("model.qins"), "model");
        assert_eq!(stem("model"), "model");
        assert_eq!(shard_file_name("model", 2, 3), "model-00002-of-00003.qins");
        assert_eq!(
            parse_shard_file_name("model", "model-00002-of-00003.qins"),
            Some((2, 3))
        );
        assert_eq!(
            parse_shard_file_name("m-1", "m-1-65536-of-65536.qins"),
            Some((65536, 65536))
        );
        for not in [
            "model-2-of-3.qins",
            "model-00004-of-00003.qins",
            "model-00000-of-00003.qins",
            "model-000002-of-00003.qins",
            "model-00001-of-00003.qins.tmp",
            "other-00001-of-00003.qins",
            "model.qins",
            "model-00001-of-99999.qins",
            "model--00001-of-00003.qins",
        ] {
            assert_eq!(parse_shard_file_name("model", not), None, "{not}");
        }
        assert_eq!(index_file_name("model"), "model.qins.index.json");
        assert!(is_valid_file_name("model-00001-of-00003.qins"));
        for bad in ["", ".", "..", "a/b", "a\\b", "a\0b", &"x".repeat(256)] {
            assert!(!is_valid_file_name(bad), "{bad:?}");
        }
        assert!(is_valid_set_id("6c3f0e5b9a2d4187"));
        assert!(is_valid_set_id("a.B_c-9"));
        for bad in ["", "a b", "é", &"x".repeat(65)] {
            assert!(!is_valid_set_id(bad), "{bad:?}");
        }
        assert_eq!(parse_decimal("0"), Some(0));
        assert_eq!(parse_decimal("12"), Some(12));
        for bad in ["", "01", "+1", "-1", "1.0", " 1", "99999999999999999999"] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
        assert_eq!(parse_version("1.1"), Some((1, 1)));
        assert_eq!(parse_version("2.0"), Some((2, 0)));
        for bad in ["1", "1.01", "1.1.1", "1.", ".1", "65536.0", "v1.1"] {
            assert_eq!(parse_version(bad), None, "{bad:?}");
        }
        let keys = [KEY_SET_ID.to_string()];
        assert_eq!(minor_version(keys.iter()), 1);
        assert_eq!(minor_version([].iter()), 0);
    }
}

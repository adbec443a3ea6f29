//! The rules for tensor and asset names (§4, §5, §6), shared by the reader and the writer.

use crate::limits::MAX_NAME_LEN;

/// What is wrong with a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameProblem {
    /// Zero bytes long.
    #[error("name is empty")]
    Empty,
    /// Longer than 4096 bytes.
    #[error("name is longer than 4096 bytes")]
    TooLong,
    /// Not valid UTF-8.
    #[error("name is not valid UTF-8")]
    NotUtf8,
    /// Contains a NUL byte.
    #[error("name contains a NUL byte")]
    Nul,
    /// An asset path that could escape its directory or is not in `a/b/c` form.
    #[error("asset name is not a safe relative path (no leading '/', '\\', empty, '.' or '..' segments)")]
    UnsafePath,
}

/// Checks a tensor name (§4, §6) and returns it as a string.
pub fn check_tensor_name(bytes: &[u8]) -> Result<&str, NameProblem> {
    if bytes.is_empty() {
        return Err(NameProblem::Empty);
    }
    if bytes.len() > MAX_NAME_LEN as usize {
        return Err(NameProblem::TooLong);
    }
    let s = std::str::from_utf8(bytes).map_err(|_| NameProblem::NotUtf8)?;
    if s.contains('\0') {
        return Err(NameProblem::Nul);
    }
    Ok(s)
}

/// Checks an asset name (§5, §6): a tensor name's rules plus a safe relative path.
pub fn check_asset_name(bytes: &[u8]) -> Result<&str, NameProblem> {
    let s = check_tensor_name(bytes)?;
    if s.contains('\\')
        || s.split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(NameProblem::UnsafePath);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_paths() {
        assert_eq!(
            check_asset_name(b"1_Pooling/config.json"),
            Ok("1_Pooling/config.json")
        );
        for bad in ["/etc/passwd", "a//b", "a/", "../x", "a/./b", "a\\b", ""] {
            assert!(check_asset_name(bad.as_bytes()).is_err(), "{bad}");
        }
        assert_eq!(check_tensor_name(&[0xff]), Err(NameProblem::NotUtf8));
        assert_eq!(check_tensor_name(b"a\0"), Err(NameProblem::Nul));
        assert_eq!(check_tensor_name(&[b'a'; 4097]), Err(NameProblem::TooLong));
        assert!(check_tensor_name(&[b'a'; 4096]).is_ok());
    }
}

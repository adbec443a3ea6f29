//! What the tests of this crate that run real models share.

use std::path::PathBuf;

/// all-MiniLM-L6-v2's directory (tools/fetch-minilm.sh); fails loudly when it is missing.
pub fn minilm() -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/models/all-minilm-l6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run tools/fetch-minilm.sh (tools/test.sh does)",
        dir.display()
    );
    dir
}

//! The real model: sentence-transformers all-MiniLM-L6-v2 (F32, BERT naming, an I64 buffer,
//! sentence-transformers module files), unpacked by `tools/fetch-minilm.sh`.
//!
//! The directory is `$QINS_MINILM_DIR`, else `.cache/models/all-minilm-l6-v2` at the workspace
//! root. If it is missing the tests fail (they never skip) with a message saying how to fetch it.

mod common;

use std::path::PathBuf;

use common::*;

const ASSETS: &[&str] = &[
    "1_Pooling/config.json",
    "config.json",
    "config_sentence_transformers.json",
    "modules.json",
    "sentence_bert_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
];

fn minilm() -> PathBuf {
    let dir = std::env::var_os("QINS_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/models/all-minilm-l6-v2")
        });
    if !dir.join("model.safetensors").is_file() {
        let ci = if std::env::var_os("CI").is_some() {
            " (CI)"
        } else {
            ""
        };
        panic!(
            "the MiniLM test model is missing at {}{ci}: run tools/fetch-minilm.sh (or set QINS_MINILM_DIR)",
            dir.display()
        );
    }
    dir
}

/// Copies the model under the name `all-minilm-l6-v2`, so that `qins.source` is fixed
/// whatever directory `QINS_MINILM_DIR` names.
fn source() -> (tempfile::TempDir, PathBuf) {
    let from = minilm();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("all-minilm-l6-v2");
    std::fs::create_dir_all(src.join("1_Pooling")).unwrap();
    for f in ASSETS.iter().chain(&["model.safetensors"]) {
        std::fs::copy(from.join(f), src.join(f)).unwrap();
    }
    (tmp, src)
}

#[test]
fn minilm_default_policy() {
    let (tmp, src) = source();
    let out = tmp.path().join("minilm.qins");
    let s = convert_with(&src, &out, |_| {});
    let c = check_against_source(&src, &out, ASSETS);
    // 6 layers × 6 matrices, the pooler, and the position and token-type embeddings.
    assert_eq!(c.encoded.len(), 39, "{:?}", c.encoded);
    assert!(c
        .raw
        .contains(&"embeddings.word_embeddings.weight".to_string()));
    assert!(c.raw.contains(&"embeddings.position_ids".to_string()));
    assert_eq!(s.tensors, 104);
    assert!(
        s.ratio_vs_f32 > 1.4 && s.ratio_vs_f32 < 1.6,
        "{}",
        s.render()
    );
    eprintln!("{}", s.render());
}

#[test]
fn minilm_encode_embeddings() {
    let (tmp, src) = source();
    let out = tmp.path().join("minilm-emb.qins");
    let s = convert_with(&src, &out, |o| o.policy.encode_embeddings = true);
    let c = check_against_source(&src, &out, ASSETS);
    assert_eq!(c.encoded.len(), 40);
    assert!(c
        .encoded
        .contains(&"embeddings.word_embeddings.weight".to_string()));
    assert!(s.ratio_vs_f32 > 3.3, "{}", s.render());
    assert!(
        s.bits_per_encoded_weight < 9.1,
        "{}",
        s.bits_per_encoded_weight
    );
    eprintln!("{}", s.render());
}

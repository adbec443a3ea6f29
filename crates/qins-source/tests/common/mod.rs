//! Helpers shared by the tests: hand-made safetensors files and model directories.
#![allow(dead_code)]

use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// Writes a safetensors file from `(name, dtype, shape, bytes)` with the `safetensors`
/// crate's own writer, creating its directory.
pub fn write_safetensors(path: &Path, tensors: &[(&str, &str, &[u64], &[u8])]) {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|&(name, dtype, shape, bytes)| {
            let dtype = match dtype {
                "F32" => Dtype::F32,
                "BF16" => Dtype::BF16,
                "I64" => Dtype::I64,
                other => panic!("no dtype {other} in these tests"),
            };
            let shape = shape.iter().map(|&d| d as usize).collect();
            (name, TensorView::new(dtype, shape, bytes).unwrap())
        })
        .collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// F32 little-endian bytes.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes `bytes` to `dir/name`, creating directories.
pub fn put(dir: &Path, name: &str, bytes: &[u8]) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

/// A one-file model with one matrix, one bias and a config, in `dir`.
pub fn small_model(dir: &Path) {
    let w: Vec<f32> = (0..24).map(|i| (i as f32 - 11.5) / 7.0).collect();
    write_safetensors(
        &dir.join("model.safetensors"),
        &[
            ("layer.weight", "F32", &[4, 6], &f32_bytes(&w)),
            (
                "layer.bias",
                "F32",
                &[4],
                &f32_bytes(&[0.5, -0.25, 0.0, 1.0]),
            ),
        ],
    );
    put(dir, "config.json", b"{\"model_type\":\"test\"}\n");
}

/// A tiny synthetic checkpoint in 3 BF16 shards with `model.safetensors.index.json`.
pub fn sharded_model(dir: &Path) {
    let mut cfg = qins_synth::SynthConfig::tiny(qins_synth::SynthDtype::Bf16);
    cfg.shards = 3;
    qins_synth::generate(&cfg, dir).expect("generate a synthetic checkpoint");
}

/// The `modules.json` of a sentence-transformers model with a transformer at the top, then
/// pooling, a dense projection and normalisation.
pub const MODULES_JSON: &str = r#"[
  {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
  {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
  {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
  {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"}
]"#;

/// A sentence-transformers model in `dir`: [`small_model`] at the top, [`MODULES_JSON`], a
/// pooling config, and a `2_Dense` module with a 3 × 4 `linear.weight` and a `linear.bias`.
pub fn st_model(dir: &Path) {
    small_model(dir);
    put(dir, "modules.json", MODULES_JSON.as_bytes());
    put(
        dir,
        "1_Pooling/config.json",
        b"{\"pooling_mode_mean_tokens\": true}",
    );
    put(
        dir,
        "2_Dense/config.json",
        b"{\"in_features\": 4, \"out_features\": 3, \"bias\": true}",
    );
    let w: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) / 3.0).collect();
    write_safetensors(
        &dir.join("2_Dense/model.safetensors"),
        &[
            ("linear.weight", "F32", &[3, 4], &f32_bytes(&w)),
            ("linear.bias", "F32", &[3], &f32_bytes(&[0.1, 0.2, 0.3])),
        ],
    );
}

/// Asserts that `msg` contains every one of `parts`.
pub fn has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "{p:?} not in {msg:?}");
    }
}

//! What `HfSource::open` finds in a directory: the weight sets (top level and
//! sentence-transformers modules, spec §18.1), the tensors' names, assets and skipped files.

mod common;

use common::*;
use qins_source::{HfSource, SkipReason};

fn names(s: &HfSource) -> Vec<&str> {
    s.tensors().iter().map(|t| t.name.as_str()).collect()
}

fn skipped(s: &HfSource) -> Vec<(&str, &SkipReason)> {
    s.skipped()
        .iter()
        .map(|k| (k.name.as_str(), &k.reason))
        .collect()
}

#[test]
fn a_modules_weights_are_tensors_under_its_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    st_model(dir);
    let s = HfSource::open(dir).unwrap();
    assert_eq!(
        names(&s),
        [
            "2_Dense/linear.bias",
            "2_Dense/linear.weight",
            "layer.bias",
            "layer.weight"
        ]
    );
    assert_eq!(s.modules().paths(), ["1_Pooling", "2_Dense", "3_Normalize"]);
    assert_eq!(s.weight_modules(), ["2_Dense"]);
    let files: Vec<(&str, Option<&str>)> = s
        .weight_files()
        .iter()
        .map(|f| (f.name.as_str(), f.module.as_deref()))
        .collect();
    assert_eq!(
        files,
        [
            ("model.safetensors", None),
            ("2_Dense/model.safetensors", Some("2_Dense"))
        ]
    );
    for t in s.tensors() {
        let want = t.name.starts_with("2_Dense/").then_some("2_Dense");
        assert_eq!(s.module_of(t), want, "{}", t.name);
    }
    // The bytes read are the module file's.
    let w = &s.tensors()[1];
    assert_eq!((w.shape.as_slice(), w.len), (&[3u64, 4][..], 48));
    let want: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) / 3.0).collect();
    assert_eq!(&*s.read(w, 0..w.len).unwrap(), f32_bytes(&want).as_slice());
    assert_eq!(&*s.read(w, 4..8).unwrap(), &f32_bytes(&want)[4..8]);

    let assets: Vec<&str> = s.assets().iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        assets,
        [
            "1_Pooling/config.json",
            "2_Dense/config.json",
            "config.json",
            "modules.json"
        ]
    );
    assert_eq!(
        s.read_asset(&s.assets()[3]).unwrap(),
        MODULES_JSON.as_bytes()
    );
    assert!(s.skipped().is_empty(), "{:?}", s.skipped());
    assert!(s
        .inputs()
        .any(|p| p == dir.join("2_Dense/model.safetensors")));
    assert_eq!(s.index(), None);
    assert!(s.indexes().is_empty());
}

#[test]
fn other_safetensors_files_stay_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    st_model(dir);
    // Not the module's weight file, and a directory modules.json does not list.
    write_safetensors(&dir.join("2_Dense/extra.safetensors"), &[]);
    write_safetensors(
        &dir.join("4_Other/model.safetensors"),
        &[("w", "F32", &[1], &[0; 4])],
    );
    let s = HfSource::open(dir).unwrap();
    assert_eq!(names(&s).len(), 4);
    assert_eq!(
        skipped(&s),
        [
            ("2_Dense/extra.safetensors", &SkipReason::UnusedSafetensors),
            ("4_Other/model.safetensors", &SkipReason::UnusedSafetensors),
        ]
    );
    assert!(SkipReason::UnusedSafetensors
        .to_string()
        .contains("modules.json"));

    // Without modules.json, no directory is a module: its weights are skipped as before.
    std::fs::remove_file(dir.join("modules.json")).unwrap();
    let s = HfSource::open(dir).unwrap();
    assert_eq!(names(&s), ["layer.bias", "layer.weight"]);
    assert!(s.modules().is_empty() && s.weight_modules().is_empty());
    assert!(skipped(&s).contains(&("2_Dense/model.safetensors", &SkipReason::UnusedSafetensors)));
}

#[test]
fn a_module_may_be_sharded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    st_model(dir);
    std::fs::remove_file(dir.join("2_Dense/model.safetensors")).unwrap();
    write_safetensors(
        &dir.join("2_Dense/model-00001-of-00002.safetensors"),
        &[("linear.weight", "F32", &[1, 2], &f32_bytes(&[1.0, 2.0]))],
    );
    write_safetensors(
        &dir.join("2_Dense/model-00002-of-00002.safetensors"),
        &[("linear.bias", "F32", &[1], &f32_bytes(&[3.0]))],
    );
    put(
        dir,
        "2_Dense/model.safetensors.index.json",
        br#"{"metadata": {"total_size": 12}, "weight_map": {
            "linear.weight": "model-00001-of-00002.safetensors",
            "linear.bias": "model-00002-of-00002.safetensors"}}"#,
    );
    let s = HfSource::open(dir).unwrap();
    assert_eq!(
        names(&s),
        [
            "2_Dense/linear.bias",
            "2_Dense/linear.weight",
            "layer.bias",
            "layer.weight"
        ]
    );
    assert_eq!(s.index(), None, "the top level is not sharded");
    assert_eq!(
        s.indexes(),
        [dir.join("2_Dense/model.safetensors.index.json")]
    );
    assert!(s.skipped().is_empty(), "{:?}", s.skipped());
    assert!(!s.assets().iter().any(|a| a.name.contains("safetensors")));
}

/// Older sentence-transformers models keep the transformer in a module directory too
/// (`0_Transformer`), with no weights at the top.
#[test]
fn a_model_whose_weights_are_all_in_modules() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    put(
        dir,
        "modules.json",
        br#"[{"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
             {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]"#,
    );
    small_model(&dir.join("0_Transformer"));
    put(dir, "1_Pooling/config.json", b"{}");
    let s = HfSource::open(dir).unwrap();
    assert_eq!(
        names(&s),
        ["0_Transformer/layer.bias", "0_Transformer/layer.weight"]
    );
    assert_eq!(s.weight_modules(), ["0_Transformer"]);
    let assets: Vec<&str> = s.assets().iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        assets,
        [
            "0_Transformer/config.json",
            "1_Pooling/config.json",
            "modules.json"
        ]
    );
}

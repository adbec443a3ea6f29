//! Round trips through the real converter: Hugging Face directory -> `qins_convert::convert`
//! -> `.qins` -> `qins_export::export` -> Hugging Face directory, on qins-synth checkpoints of
//! every dtype (sharded) and on the real all-MiniLM-L6-v2.
//!
//! MiniLM is `$QINS_MINILM_DIR`, else `.cache/models/all-minilm-l6-v2` at the workspace root;
//! if it is missing the test fails (it never skips) saying to run `tools/fetch-minilm.sh`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use qins_convert::{convert, ConvertOptions, NoProgress};
use qins_export::{OutputDtype, DEFAULT_MAX_SHARD_SIZE};
use qins_synth::{generate, SynthConfig, SynthDtype};

fn convert_dir(src: &Path, out: &Path) {
    let opts = ConvertOptions::new(src.into(), out.into());
    convert(&opts, &NoProgress).unwrap_or_else(|e| panic!("convert {}: {e}", src.display()));
}

/// Every exported file's `__metadata__` is the source files' (their union, as qins-convert
/// records it), with `"format": "pt"`.
fn check_metadata(source: &HfDir, exported: &HfDir) {
    let mut want: BTreeMap<String, String> = BTreeMap::new();
    for m in source.metadata.values().flatten() {
        for (k, v) in m {
            want.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    want.entry("format".into()).or_insert_with(|| "pt".into());
    for (file, m) in &exported.metadata {
        assert_eq!(m.as_ref(), Some(&want), "{file}: __metadata__");
    }
}

#[test]
fn synthetic_checkpoints_of_every_dtype_round_trip_through_the_converter() {
    for dtype in SynthDtype::ALL {
        let dir = scratch();
        let mut cfg = SynthConfig::tiny(dtype);
        cfg.shards = 3;
        generate(&cfg, &p(&dir, "hf")).unwrap();
        let source = read_hf(&p(&dir, "hf"));
        let q = p(&dir, "model.qins");
        convert_dir(&p(&dir, "hf"), &q);
        {
            let file = qins_read::open(&q).unwrap();
            let qins = file.parse().unwrap();
            assert!(
                qins.tensors().any(|t| t.lut().is_some()),
                "{dtype}: nothing encoded"
            );
            assert!(
                qins.tensors().any(|t| t.lut().is_none()),
                "{dtype}: nothing raw"
            );
        }
        for (k, (out_dtype, max)) in [
            (OutputDtype::Source, DEFAULT_MAX_SHARD_SIZE),
            (OutputDtype::Source, 120_000),
            (OutputDtype::F32, 120_000),
            (OutputDtype::BF16, DEFAULT_MAX_SHARD_SIZE),
            (OutputDtype::F16, DEFAULT_MAX_SHARD_SIZE),
        ]
        .into_iter()
        .enumerate()
        {
            let out = p(&dir, &format!("out{k}"));
            let s = export_to(&q, &out, out_dtype, max);
            assert_eq!(
                s.index,
                max != DEFAULT_MAX_SHARD_SIZE,
                "{dtype} {out_dtype:?}: {s:?}"
            );
            let exported = check_export(&source, &q, &out, out_dtype, max);
            check_metadata(&source, &exported);
        }
    }
}

fn minilm() -> PathBuf {
    let dir = std::env::var_os("QINS_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/models/all-minilm-l6-v2")
        });
    assert!(
        dir.join("model.safetensors").is_file(),
        "the MiniLM test model is missing at {}: run tools/fetch-minilm.sh (or set QINS_MINILM_DIR)",
        dir.display()
    );
    dir
}

#[test]
fn minilm_round_trips_through_the_converter() {
    let src = minilm();
    let source = read_hf(&src);
    assert!(
        source.files.contains_key("1_Pooling/config.json"),
        "a nested asset"
    );
    let dir = scratch();
    let q = p(&dir, "minilm.qins");
    convert_dir(&src, &q);
    for (k, (out_dtype, max)) in [
        (OutputDtype::Source, DEFAULT_MAX_SHARD_SIZE),
        (OutputDtype::Source, parse("20MB")),
        (OutputDtype::BF16, DEFAULT_MAX_SHARD_SIZE),
    ]
    .into_iter()
    .enumerate()
    {
        let out = p(&dir, &format!("out{k}"));
        let s = export_to(&q, &out, out_dtype, max);
        assert!(s.encoded_tensors > 0 && s.raw_tensors > 0, "{s:?}");
        let exported = check_export(&source, &q, &out, out_dtype, max);
        check_metadata(&source, &exported);
        if out_dtype == OutputDtype::Source && max == DEFAULT_MAX_SHARD_SIZE {
            // F32 in, F32 out: the same size as the source's weights.
            let size = std::fs::metadata(src.join("model.safetensors"))
                .unwrap()
                .len();
            let got = std::fs::metadata(out.join("model.safetensors"))
                .unwrap()
                .len();
            let header = |path: &Path| {
                let b = std::fs::read(path).unwrap();
                u64::from_le_bytes(b[..8].try_into().unwrap())
            };
            assert_eq!(
                got - header(&out.join("model.safetensors")),
                size - header(&src.join("model.safetensors"))
            );
        }
    }
}

fn parse(s: &str) -> u64 {
    qins_export::parse_size(s).unwrap()
}

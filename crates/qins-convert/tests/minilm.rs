//! The real model: sentence-transformers all-MiniLM-L6-v2 (F32, BERT naming, an I64 buffer,
//! sentence-transformers module files), unpacked by `tools/fetch-minilm.sh`.
//!
//! The directory is `$QINS_MINILM_DIR`, else `.cache/models/all-minilm-l6-v2` at the workspace
//! root. If it is missing the tests fail (they never skip) with a message saying how to fetch it.

mod common;

use std::path::PathBuf;

use common::*;
use qins_format::Codec;

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

/// A quality floor on the real model: the total SNR (all encoded tensors, from the summed
/// energies) and the worst tensor's SNR must reach these, in dB. Conversion is deterministic,
/// so the figures the codecs measure are stable; each floor sits about 1 dB under them (the
/// measured figures are in a comment beside each), so that a codec whose noise power grows by a
/// quarter or more (1 dB) fails.
struct Floor {
    total: f64,
    worst: f64,
}

/// Checks `c` against `floor`, naming the configuration and the measured figures.
#[track_caller]
fn meets(what: &str, c: &Checked, floor: Floor) {
    let (total, worst) = (c.total_snr(), c.worst_snr());
    let name = c
        .snr
        .iter()
        .find(|s| s.1 == worst)
        .map_or("-", |s| s.0.as_str());
    eprintln!("{what}: total {total:.3} dB, worst {worst:.3} dB ({name})");
    assert!(
        total >= floor.total,
        "{what}: total SNR {total:.3} dB < floor {} dB",
        floor.total
    );
    assert!(
        worst >= floor.worst,
        "{what}: worst tensor {name} at {worst:.3} dB < floor {} dB",
        floor.worst
    );
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
    // The default codec, lloyd-rows.
    assert_eq!(s.codec, "lloyd-rows");
    // Measured: 49.967 dB total, 48.157 dB worst (encoder.layer.1.output.dense.weight).
    let floor = Floor {
        total: 48.9,
        worst: 47.1,
    };
    meets("lloyd-rows", &c, floor);
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
        s.bits_per_encoded_weight <= 9.1,
        "{}",
        s.bits_per_encoded_weight
    );
    assert_eq!(s.codec, "lloyd-rows");
    // Measured: 50.271 dB total, 48.157 dB worst (encoder.layer.1.output.dense.weight).
    let floor = Floor {
        total: 49.2,
        worst: 47.1,
    };
    meets("lloyd-rows, embeddings encoded", &c, floor);
    eprintln!("{}", s.render());
}

/// The codecs without row scales, every 2-D tensor encoded: each within its bound and its
/// floors; `lloyd` beats `linear` and `log` (the prototype's rule).
#[test]
fn minilm_codecs_without_row_scales() {
    let (tmp, src) = source();
    let mut total = Vec::new();
    for (codec, floor) in [
        // Measured: 34.181 dB total, 33.334 dB worst (encoder.layer.0.intermediate.dense.weight).
        (
            Codec::Log,
            Floor {
                total: 33.1,
                worst: 32.3,
            },
        ),
        // Measured: 27.823 dB total, 14.040 dB worst (encoder.layer.0.output.dense.weight, whose
        // largest magnitude is 175 times its RMS: a uniform table has coarse steps for the rest).
        (
            Codec::Linear,
            Floor {
                total: 26.8,
                worst: 13.0,
            },
        ),
        // Measured: 48.696 dB total, 46.222 dB worst (encoder.layer.5.output.dense.weight).
        (
            Codec::Lloyd,
            Floor {
                total: 47.6,
                worst: 45.2,
            },
        ),
    ] {
        let out = tmp.path().join(format!("minilm-{codec}.qins"));
        let s = convert_with(&src, &out, |o| {
            o.policy.encode_embeddings = true;
            o.policy.codec = codec;
        });
        let c = check_against_source(&src, &out, ASSETS);
        assert_eq!(c.encoded.len(), 40);
        assert_eq!(s.output.scale_bytes, 0);
        assert!(
            s.bits_per_encoded_weight <= 9.02,
            "{codec}: {}",
            s.bits_per_encoded_weight
        );
        meets(codec.name(), &c, floor);
        total.push(c.total_snr());
    }
    assert!(
        total[2] > total[1] && total[2] > total[0],
        "log, linear, lloyd: {total:?} dB"
    );
}

//! The real sentence encoder, all-MiniLM-L6-v2 (tools/fetch-minilm.sh): `embed` and
//! `compare` with the default codec, and exact embeddings when every tensor is raw.

mod common;

use std::process::Command;

use candle_core::DType;
use common::minilm;
use qins_convert::{convert, ConvertOptions, NoProgress};
use qins_run::{compare, CompareOptions, Model};

#[test]
fn minilm_from_the_qins_embeds_like_the_directory() {
    let dir = minilm();
    let tmp = tempfile::tempdir().unwrap();
    let qins = tmp.path().join("minilm.qins");
    convert(&ConvertOptions::new(dir.clone(), qins.clone()), &NoProgress).unwrap();
    let r = compare(&qins, &dir, &CompareOptions::default()).unwrap();
    let e = r.encoder.expect("an encoder report");
    assert_eq!((e.sentences, e.dimensions), (32, 384));
    assert_eq!(e.modules, ["Pooling(mean)", "Normalize"]);
    // Measured with the default codec (lloyd-rows): cosine mean 0.999970, min 0.999957,
    // nearest neighbours all agree (seed-log: 0.99934, 0.99890, 96.9%). Margins: about 20x
    // on 1 - cosine, so that a codec as coarse as seed-log fails.
    assert!(e.cosine_mean > 0.9995, "cosine mean {}", e.cosine_mean);
    assert!(e.cosine_min > 0.999, "cosine min {}", e.cosine_min);
    assert!(
        e.nearest_neighbour_agreement >= 0.9,
        "{}",
        e.nearest_neighbour_agreement
    );
    // MiniLM puts 72% of the built-in sentences next to one of their own topic: a working
    // encoder, far from chance (3 of 31 neighbours share a topic).
    assert!(e.nearest_in_topic[0] >= 0.6, "{:?}", e.nearest_in_topic);

    // Through the binary, as JSON.
    let out = Command::new(env!("CARGO_BIN_EXE_qins-run"))
        .args([
            "embed",
            qins.to_str().unwrap(),
            "--text",
            "A cat sleeps.",
            "--text",
            "Stocks fell.",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let emb = v["embeddings"][0]["embedding"].as_array().unwrap();
    assert_eq!(emb.len(), 384);
    let norm: f64 = emb.iter().map(|x| x.as_f64().unwrap().powi(2)).sum();
    assert!((norm - 1.0).abs() < 1e-4, "normalized: {norm}");
}

#[test]
fn minilm_with_every_tensor_raw_embeds_exactly_like_the_directory() {
    let dir = minilm();
    let tmp = tempfile::tempdir().unwrap();
    let qins = tmp.path().join("raw.qins");
    let mut o = ConvertOptions::new(dir.clone(), qins.clone());
    o.policy.exclude = vec!["*".into()];
    convert(&o, &NoProgress).unwrap();
    let texts: Vec<String> = qins_run::builtin::SENTENCES[..6]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let a = Model::open(&dir, DType::F32).unwrap();
    let b = Model::open(&qins, DType::F32).unwrap();
    assert_eq!(
        a.encoder().unwrap().embed(&a.tokenizer, &texts).unwrap(),
        b.encoder().unwrap().embed(&b.tokenizer, &texts).unwrap()
    );
}

//! Models stored as a set of shards (spec §21), given by their index or any shard: the same
//! logits (a synthetic Llama) and embeddings (all-MiniLM-L6-v2, tools/fetch-minilm.sh) as the
//! single file of the same conversion, through the library and the binary; a missing shard is
//! refused, named.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::DType;
use common::minilm;
use qins_convert::{convert, max_shard_size_for, ConvertOptions, NoProgress};
use qins_run::{compare, CompareOptions, Model};
use qins_synth::{generate as synth, SynthArch, SynthConfig, SynthDtype};

/// `src` converted with the default codec to `out/one/model.qins` and to a set of three
/// shards in `out/set/`; returns the single file, the index and the shards.
fn convert_both(src: &Path, out: &Path) -> (PathBuf, PathBuf, Vec<PathBuf>) {
    let (one, set) = (out.join("one"), out.join("set"));
    std::fs::create_dir_all(&one).unwrap();
    std::fs::create_dir_all(&set).unwrap();
    let single = one.join("model.qins");
    convert(
        &ConvertOptions::new(src.into(), single.clone()),
        &NoProgress,
    )
    .unwrap();
    let mut o = ConvertOptions::new(src.into(), set.join("model.qins"));
    o.max_shard_size = max_shard_size_for(&o, 3)
        .unwrap()
        .expect("a limit for 3 shards");
    assert_eq!(convert(&o, &NoProgress).unwrap().shards.len(), 3);
    let shards = (1..=3)
        .map(|k| set.join(format!("model-{k:05}-of-00003.qins")))
        .collect();
    (single, set.join("model.qins.index.json"), shards)
}

fn qins_run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qins-run"))
        .args(args)
        .output()
        .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The teacher-forced logits of `text` at every position.
fn logits(path: &Path, text: &str) -> Vec<Vec<f32>> {
    let mut m = Model::open(path, DType::F32).unwrap();
    let ids = m.encode(text, true).unwrap();
    let net = m.causal().unwrap();
    ids.iter()
        .enumerate()
        .map(|(i, &t)| net.forward(&[t], i).unwrap())
        .collect()
}

#[test]
fn a_synthetic_llama_set_gives_the_single_file_s_logits_and_greedy_text() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("hf");
    synth(
        &SynthConfig::tiny_arch(SynthArch::Llama, SynthDtype::F32),
        &src,
    )
    .unwrap();
    let (single, index, shards) = convert_both(&src, tmp.path());
    let text = "the cat and the dog sat on the mat";
    let want = logits(&single, text);
    assert!(want.len() > 5);
    for path in [&index, &shards[1]] {
        let m = Model::open(path, DType::F32).unwrap();
        assert!(m.is_qins);
        assert_eq!(m.path, index, "a set is named by its index");
        assert_eq!(logits(path, text), want, "{}", path.display());
    }
    // compare takes a set too, and finds it as close to the source as the single file.
    let opts = CompareOptions {
        prompts: vec!["the cat".into()],
        tokens: 4,
        text_tokens: Some(24),
        ..CompareOptions::default()
    };
    let a = compare(&single, &src, &opts).unwrap().causal.unwrap();
    let b = compare(&shards[2], &src, &opts).unwrap().causal.unwrap();
    assert_eq!(a.teacher_forced.kl_mean, b.teacher_forced.kl_mean);
    assert_eq!(a.greedy[0].qins_text, b.greedy[0].qins_text);

    // The binary, from the last shard, generates the single file's tokens.
    let gen = |p: &Path| {
        json(&qins_run(&[
            "generate",
            p.to_str().unwrap(),
            "--prompt",
            "the cat",
            "-n",
            "5",
            "--json",
        ]))["generation"]["tokens"]
            .clone()
    };
    assert_eq!(gen(&shards[2]), gen(&single));
}

#[test]
fn minilm_as_a_set_embeds_like_the_single_file_and_a_missing_shard_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (single, index, shards) = convert_both(&minilm(), tmp.path());
    let embed = |p: &Path| {
        json(&qins_run(&[
            "embed",
            p.to_str().unwrap(),
            "--text",
            "A cat sleeps in the sun.",
            "--text",
            "Interest rates rose again.",
            "--json",
        ]))["embeddings"]
            .clone()
    };
    let want = embed(&single);
    assert_eq!(want.as_array().unwrap().len(), 2);
    for path in [&index, &shards[0], &shards[2]] {
        assert_eq!(embed(path), want, "{}", path.display());
    }

    std::fs::remove_file(&shards[1]).unwrap();
    for path in [&index, &shards[0]] {
        let out = qins_run(&["embed", path.to_str().unwrap(), "--text", "x"]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(err.contains("model-00002-of-00003.qins"), "{err}");
        assert!(err.contains("missing"), "{err}");
    }
}

//! The real `qins-convert` binary, run in a scratch directory: exit codes, stdout and stderr.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use qins_synth::SynthDtype;

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qins-convert"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run qins-convert")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn converts_and_prints_a_summary() {
    let tmp = tempfile::tempdir().unwrap();
    synth(&tmp.path().join("tiny"), SynthDtype::Bf16, 3, false);
    let o = run(tmp.path(), &["tiny", "tiny.qins"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    for needle in [
        "tiny -> tiny.qins",
        "14 encoded with log",
        "kept raw",
        "ratio:",
        "vs BF16",
    ] {
        assert!(out.contains(needle), "{needle:?} in {out}");
    }
    assert_eq!(
        text(&o.stderr),
        "",
        "no progress bar when stderr is not a terminal"
    );
    check_against_source(
        &tmp.path().join("tiny"),
        &tmp.path().join("tiny.qins"),
        SYNTH_ASSETS,
    );
}

#[test]
fn json_summary_for_scripts() {
    let tmp = tempfile::tempdir().unwrap();
    synth(&tmp.path().join("m"), SynthDtype::F32, 1, true);
    let o = run(
        tmp.path(),
        &[
            "m",
            "m.qins",
            "--json",
            "--quiet",
            "--encode-embeddings",
            "--codec",
            "linear",
            "--alignment",
            "64",
            "--threads",
            "2",
            "--exclude",
            "*.layers.0.*",
            "--include",
            "*.norm.*",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");
    let len = std::fs::metadata(tmp.path().join("m.qins")).unwrap().len();
    assert_eq!(j["output"]["file_size"], len);
    assert_eq!(j["codec"], "linear");
    assert!(j["ratio_vs_f32"].as_f64().unwrap() > 1.0);
    let bytes = std::fs::read(tmp.path().join("m.qins")).unwrap();
    let q = qins_read::Qins::parse(&bytes).unwrap();
    assert_eq!(q.alignment(), 64);
    let p: serde_json::Value = serde_json::from_str(&q.metadata()["qins.policy"]).unwrap();
    assert_eq!(p["encode_embeddings"], true);
    assert_eq!(p["exclude"][0], "*.layers.0.*");
    assert!(q
        .tensor("model.embed_tokens.weight")
        .unwrap()
        .codec()
        .is_some());
    assert!(q
        .tensor("model.layers.0.mlp.up_proj.weight")
        .unwrap()
        .codec()
        .is_none());
    assert!(q.tensor("model.norm.weight").unwrap().codec().is_some());
}

#[test]
fn dry_run_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    synth(&tmp.path().join("m"), SynthDtype::Bf16, 1, false);
    let o = run(tmp.path(), &["m", "m.qins", "--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("dry run: nothing written"), "{out}");
    assert!(out.contains("model.layers.0.self_attn.q_proj.weight"));
    assert!(out.contains("token embedding or output head"));
    assert!(!tmp.path().join("m.qins").exists());
    // Without a target, and as JSON.
    let o = run(tmp.path(), &["m", "--dry-run", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["plan"]["tensors"].as_array().unwrap().len(), 28);
    assert!(j["summary"]["output"]["file_size"].as_u64().unwrap() > 0);
    assert_eq!(
        leftovers(tmp.path(), &["m"]),
        Vec::<std::path::PathBuf>::new()
    );
}

#[test]
fn refused_input_exits_1_with_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run(tmp.path(), &["no-such-model", "x.qins"]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.contains("no-such-model") && err.contains("cannot read the model directory"),
        "{err}"
    );
    assert!(!tmp.path().join("x.qins").exists());

    small_model(&tmp.path().join("m"));
    std::fs::write(tmp.path().join("x.qins"), b"keep").unwrap();
    let o = run(tmp.path(), &["m", "x.qins"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("already exists (pass --force"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(std::fs::read(tmp.path().join("x.qins")).unwrap(), b"keep");
    let o = run(tmp.path(), &["m", "x.qins", "--force", "-q"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));

    let o = run(tmp.path(), &["m", "m/model.safetensors", "--force"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("the target is one of the inputs"));
}

#[test]
fn usage_errors_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    small_model(&tmp.path().join("m"));
    for args in [
        &[][..],
        &["m"],
        &["m", "x.qins", "--alignment", "100"],
        &["m", "x.qins", "--alignment", "32"],
        &["m", "x.qins", "--codec", "fp8"],
        &["m", "x.qins", "--include", "a["],
        &["m", "x.qins", "--threads", "0"],
        &["m", "x.qins", "--no-such-flag"],
    ] {
        let o = run(tmp.path(), args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
        assert!(!tmp.path().join("x.qins").exists());
    }
    let o = run(tmp.path(), &["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = text(&o.stdout);
    for flag in [
        "--encode-embeddings",
        "--include",
        "--exclude",
        "--codec",
        "--alignment",
        "--dry-run",
        "--force",
        "--quiet",
        "--json",
    ] {
        assert!(help.contains(flag), "{flag} in --help");
    }
}

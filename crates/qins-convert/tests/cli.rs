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
        "14 encoded with lloyd-rows",
        "row scales",
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
    // Quiet: no summary, as qins-export; --json still prints what it was asked for.
    assert_eq!(text(&o.stdout), "");
    let o = run(tmp.path(), &["m", "x.qins", "--force", "-q", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).trim_start().starts_with('{'),
        "{}",
        text(&o.stdout)
    );

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

#[test]
fn codec_flag_selects_the_codec_and_seed_log_is_log() {
    let tmp = tempfile::tempdir().unwrap();
    synth(&tmp.path().join("m"), SynthDtype::F32, 1, false);
    let mut files = Vec::new();
    for codec in ["seed-log", "log", "linear", "lloyd", "lloyd-rows"] {
        let out = format!("{codec}.qins");
        let o = run(tmp.path(), &["m", &out, "--codec", codec, "--json"]);
        assert_eq!(o.status.code(), Some(0), "{codec}: {}", text(&o.stderr));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let name = if codec == "seed-log" { "log" } else { codec };
        assert_eq!(j["codec"], name);
        assert_eq!(
            j["output"]["scale_bytes"].as_u64().unwrap() > 0,
            codec == "lloyd-rows"
        );
        let bytes = std::fs::read(tmp.path().join(&out)).unwrap();
        {
            let q = qins_read::Qins::parse(&bytes).unwrap();
            let p: serde_json::Value = serde_json::from_str(&q.metadata()["qins.policy"]).unwrap();
            assert_eq!(p["codec"], name);
            assert_eq!(p["row_scales"], codec == "lloyd-rows");
            let t = q.tensor("model.layers.0.mlp.up_proj.weight").unwrap();
            assert_eq!(t.codec().unwrap().name(), name);
        }
        check_against_source(&tmp.path().join("m"), &tmp.path().join(&out), SYNTH_ASSETS);
        files.push(bytes);
    }
    assert_eq!(
        files[0], files[1],
        "seed-log writes exactly what log writes"
    );
    let o = run(tmp.path(), &["--help"]);
    let help = text(&o.stdout);
    for needle in [
        "seed-log",
        "lloyd-rows",
        "[default: lloyd-rows]",
        "--against",
    ] {
        assert!(help.contains(needle), "{needle} in --help:\n{help}");
    }
}

/// `--no-sync` skips the syncs, not a byte of the file.
#[test]
fn no_sync_writes_the_same_file() {
    let tmp = tempfile::tempdir().unwrap();
    synth(&tmp.path().join("m"), SynthDtype::Bf16, 1, true);
    for (out, flags) in [
        ("synced.qins", &[][..]),
        ("scratch.qins", &["--no-sync"][..]),
    ] {
        let mut args = vec!["m", out, "-q"];
        args.extend_from_slice(flags);
        let o = run(tmp.path(), &args);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    }
    let a = std::fs::read(tmp.path().join("synced.qins")).unwrap();
    let b = std::fs::read(tmp.path().join("scratch.qins")).unwrap();
    assert!(a == b, "--no-sync changed the file");
}

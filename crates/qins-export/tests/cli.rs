//! The `qins-export` binary, run as a process: flags, output, exit status.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use qins_synth::{generate, SynthConfig, SynthDtype};

fn qins_export(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qins-export"))
        .args(args)
        .output()
        .expect("run qins-export")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// A tiny BF16 checkpoint and its `.qins` at `dir/model.qins`.
fn model(dir: &tempfile::TempDir) -> HfDir {
    let cfg = SynthConfig::tiny(SynthDtype::Bf16);
    generate(&cfg, &p(dir, "hf")).unwrap();
    let hf = read_hf(&p(dir, "hf"));
    qins_from_hf(&hf, &p(dir, "model.qins"));
    hf
}

#[test]
fn exports_with_a_summary_and_no_progress_when_stderr_is_not_a_terminal() {
    let dir = scratch();
    let hf = model(&dir);
    let out = p(&dir, "out");
    let o = qins_export(&[s(&p(&dir, "model.qins")), s(&out)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "stderr is not a terminal: no progress bar");
    let text = stdout(&o);
    assert!(text.starts_with("exported "), "{text}");
    assert!(text.contains("model.safetensors: "), "{text}");
    check_export(
        &hf,
        &p(&dir, "model.qins"),
        &out,
        qins_export::OutputDtype::Source,
        5_000_000_000,
    );
}

#[test]
fn json_summary_and_flags() {
    let dir = scratch();
    let hf = model(&dir);
    let out = p(&dir, "out");
    let o = qins_export(&[
        s(&p(&dir, "model.qins")),
        s(&out),
        "--dtype",
        "f16",
        "--max-shard-size",
        "100KB",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stderr(&o), "");
    let text = stdout(&o);
    assert_eq!(text.lines().count(), 1, "{text}");
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(j["dtype"], "f16");
    assert_eq!(j["index"], true);
    assert_eq!(j["tensors"], hf.tensors.len());
    assert!(j["shards"].as_array().unwrap().len() > 1);
    for sh in j["shards"].as_array().unwrap() {
        assert!(
            sh["data_bytes"].as_u64().unwrap() <= 100_000 || sh["tensors"] == 1,
            "{sh}"
        );
    }
    check_export(
        &hf,
        &p(&dir, "model.qins"),
        &out,
        qins_export::OutputDtype::F16,
        100_000,
    );

    // An existing target: refused (exit 1), then replaced with --force; --quiet prints nothing.
    let o = qins_export(&[s(&p(&dir, "model.qins")), s(&out), "--dtype", "bf16"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.starts_with("error: ") && err.lines().count() == 1 && err.contains("--force"),
        "{err}"
    );
    let o = qins_export(&[
        s(&p(&dir, "model.qins")),
        s(&out),
        "--dtype",
        "bf16",
        "--force",
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!((stdout(&o).as_str(), stderr(&o).as_str()), ("", ""));
    check_export(
        &hf,
        &p(&dir, "model.qins"),
        &out,
        qins_export::OutputDtype::BF16,
        5_000_000_000,
    );
    // The replaced directory is gone, and so is the temporary one: nothing beside the target
    // but what was there before.
    let mut beside: Vec<String> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".out"))
        .collect();
    beside.sort();
    assert!(beside.is_empty(), "{beside:?}");
}

#[test]
fn a_damaged_file_fails_with_one_line_naming_the_section() {
    let dir = scratch();
    model(&dir);
    let q = p(&dir, "model.qins");
    let bytes = std::fs::read(&q).unwrap();
    let (offset, name) = {
        let qins = qins_read::Qins::parse(&bytes).unwrap();
        let t = qins.tensors().find(|t| t.codes().is_some()).unwrap();
        (
            t.codes().unwrap().as_ptr() as usize - bytes.as_ptr() as usize + 5,
            t.name().to_string(),
        )
    };
    let mut damaged = bytes.clone();
    damaged[offset] ^= 1;
    std::fs::write(&q, damaged).unwrap();
    let o = qins_export(&[s(&q), s(&p(&dir, "out"))]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.contains(&format!("tensor {name:?} data is bad")),
        "{err}"
    );
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(!p(&dir, "out").exists());

    // --verbose: the same messages, one per line.
    let o = qins_export(&[s(&q), s(&p(&dir, "out")), "--verbose"]);
    assert_eq!(o.status.code(), Some(1));
    let verbose = stderr(&o);
    let lines: Vec<&str> = verbose.lines().collect();
    assert_eq!(lines.len(), 2, "{verbose}");
    assert!(
        lines[0].starts_with("error: ") && lines[1].starts_with("caused by: "),
        "{verbose}"
    );
    assert_eq!(
        format!("{}: {}", lines[0], &lines[1]["caused by: ".len()..]),
        err.trim_end()
    );
}

#[test]
fn usage_errors_exit_with_2() {
    let dir = scratch();
    model(&dir);
    let q = p(&dir, "model.qins");
    let out = p(&dir, "out");
    for args in [
        vec![s(&q)],
        vec![s(&q), s(&out), "--max-shard-size", "5 parsecs"],
        vec![s(&q), s(&out), "--max-shard-size", "0"],
        vec![s(&q), s(&out), "--dtype", "f64"],
        vec![s(&q), s(&out), "--frobnicate"],
    ] {
        let o = qins_export(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(!out.exists());
    }
    let o = qins_export(&[s(&q), s(&out), "--max-shard-size", "5 parsecs"]);
    assert!(
        stderr(&o).contains("invalid size \"5 parsecs\""),
        "{}",
        stderr(&o)
    );
    // A bad input file is a failed operation, not a usage error.
    let o = qins_export(&[s(&p(&dir, "absent.qins")), s(&out)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("error: cannot open "),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
}

/// `--threads` and `--no-sync` change how the files are written, not a byte of them; a bad
/// thread count is a usage error.
#[test]
fn threads_and_no_sync_write_the_same_files() {
    let dir = scratch();
    let _hf = model(&dir);
    let input = p(&dir, "model.qins");
    let mut outs = Vec::new();
    for (name, flags) in [
        ("default", &[][..]),
        ("one", &["--threads", "1"][..]),
        ("scratch", &["--threads", "2", "--no-sync"][..]),
    ] {
        let out = p(&dir, name);
        let mut args = vec![s(&input), s(&out), "-q"];
        args.extend_from_slice(flags);
        let o = qins_export(&args);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", stderr(&o));
        outs.push(std::fs::read(out.join("model.safetensors")).unwrap());
    }
    assert!(outs[0] == outs[1] && outs[0] == outs[2]);
    let o = qins_export(&[s(&input), s(&p(&dir, "zero")), "--threads", "0"]);
    assert_eq!(o.status.code(), Some(2));
}

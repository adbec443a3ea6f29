//! Every refusal: from the library (typed) and from the binary (exit status, one line).

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::DType;
use qins_convert::{convert, ConvertOptions, NoProgress};
use qins_run::{compare, generate, CompareOptions, Model, RunError, Sampling, SUPPORTED};
use qins_synth::{generate as synth, SynthArch, SynthConfig, SynthDtype};

/// A tiny llama directory in `tmp/name`, with `edit` applied to its files before conversion,
/// converted to `tmp/name.qins`.
fn model(tmp: &Path, name: &str, edit: impl FnOnce(&Path)) -> (PathBuf, PathBuf) {
    let dir = tmp.join(name);
    synth(
        &SynthConfig::tiny_arch(SynthArch::Llama, SynthDtype::F32),
        &dir,
    )
    .unwrap();
    edit(&dir);
    let qins = tmp.join(format!("{name}.qins"));
    convert(&ConvertOptions::new(dir.clone(), qins.clone()), &NoProgress).unwrap();
    (dir, qins)
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    f(&mut c);
    std::fs::write(path, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
}

fn err(path: &Path) -> RunError {
    match Model::open(path, DType::F32) {
        Ok(_) => panic!("{} was accepted", path.display()),
        Err(e) => e,
    }
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qins-run"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unsupported_architecture_is_refused_up_front_with_the_list() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, qins) = model(tmp.path(), "gpt2", |d| {
        edit_config(d, |c| {
            c["model_type"] = "gpt2".into();
            c["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
        })
    });
    for path in [&dir, &qins] {
        match err(path) {
            RunError::UnsupportedArchitecture {
                found, supported, ..
            } => {
                assert!(
                    found.contains("gpt2") && found.contains("GPT2LMHeadModel"),
                    "{found}"
                );
                assert_eq!(supported, SUPPORTED);
            }
            other => panic!("{other:?}"),
        }
        let (code, stdout, stderr) = run(&["generate", path.to_str().unwrap(), "--prompt", "hi"]);
        assert_eq!(code, 1);
        assert!(stdout.is_empty());
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: ")
                && stderr.contains("gpt2")
                && stderr.contains("qwen3, gemma3_text"),
            "{stderr}"
        );
    }
}

#[test]
fn a_qins_without_config_or_tokenizer_is_refused_naming_the_asset() {
    let tmp = tempfile::tempdir().unwrap();
    for asset in ["config.json", "tokenizer.json"] {
        let (_, qins) = model(tmp.path(), asset, |d| {
            std::fs::remove_file(d.join(asset)).unwrap()
        });
        match err(&qins) {
            RunError::MissingAsset { asset: a, file, .. } => {
                assert_eq!(a, asset);
                assert_eq!(file, qins);
            }
            other => panic!("{other:?}"),
        }
        let (code, _, stderr) = run(&["generate", qins.to_str().unwrap(), "-p", "hi"]);
        assert_eq!(code, 1);
        assert!(stderr.contains(&format!("no {asset}")), "{stderr}");
    }
}

#[test]
fn a_bad_config_is_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, qins) = model(tmp.path(), "bad", |d| {
        edit_config(d, |c| {
            c.as_object_mut().unwrap().remove("hidden_size");
        })
    });
    match err(&qins) {
        RunError::BadAsset { asset, cause, .. } => {
            assert_eq!(asset, "config.json");
            assert!(cause.contains("hidden_size"), "{cause}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_tensor_the_model_needs_and_the_file_lacks_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, qins) = model(tmp.path(), "three", |d| {
        edit_config(d, |c| c["num_hidden_layers"] = 3.into())
    });
    match err(&qins) {
        RunError::Load(qins_candle::LoadError::MissingTensor { tensor, file }) => {
            assert!(tensor.starts_with("model.layers.2."), "{tensor}");
            assert_eq!(file, qins);
        }
        other => panic!("{other:?}"),
    }
    let (code, stdout, stderr) = run(&["generate", qins.to_str().unwrap(), "-p", "hi"]);
    assert_eq!((code, stdout.as_str()), (1, ""));
    assert!(stderr.contains("model.layers.2."), "{stderr}");
}

#[test]
fn a_damaged_tensor_stops_the_run_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, qins) = model(tmp.path(), "damaged", |_| {});
    let name = "model.layers.1.mlp.up_proj.weight";
    let mut bytes = std::fs::read(&qins).unwrap();
    let at = {
        let q = qins_read::Qins::parse(&bytes).unwrap();
        let codes = q.tensor(name).unwrap().codes().unwrap();
        codes.as_ptr() as usize - bytes.as_ptr() as usize + 3
    };
    bytes[at] ^= 0x10;
    std::fs::write(&qins, bytes).unwrap();
    match err(&qins) {
        RunError::Load(qins_candle::LoadError::Damaged { tensor, .. }) => assert_eq!(tensor, name),
        other => panic!("{other:?}"),
    }
    let (code, stdout, stderr) = run(&["generate", qins.to_str().unwrap(), "-p", "hi"]);
    assert_eq!((code, stdout.as_str()), (1, ""), "nothing is generated");
    assert!(
        stderr.contains(name) && stderr.contains("damaged"),
        "{stderr}"
    );
}

#[test]
fn the_wrong_command_for_the_kind_of_model_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _) = model(tmp.path(), "llama", |_| {});
    let mut m = Model::open(&dir, DType::F32).unwrap();
    assert!(matches!(m.encoder(), Err(RunError::WrongKind { .. })));
    assert!(m.causal().is_ok());
    let (code, _, stderr) = run(&["embed", dir.to_str().unwrap(), "--text", "hi"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("qins-run generate"), "{stderr}");

    let bert = tmp.path().join("bert");
    synth(
        &SynthConfig::tiny_arch(SynthArch::Bert, SynthDtype::F32),
        &bert,
    )
    .unwrap();
    let (code, _, stderr) = run(&["generate", bert.to_str().unwrap(), "-p", "hi"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("qins-run embed"), "{stderr}");
}

#[test]
fn comparing_two_different_models_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, qins) = model(tmp.path(), "llama", |_| {});
    let other = tmp.path().join("qwen");
    synth(
        &SynthConfig::tiny_arch(SynthArch::Qwen2, SynthDtype::F32),
        &other,
    )
    .unwrap();
    let e = compare(&qins, &other, &CompareOptions::default()).unwrap_err();
    assert!(matches!(e, RunError::Mismatch { .. }), "{e:?}");
    assert!(e.to_string().contains("qwen2"), "{e}");
}

#[test]
fn computation_and_output_failures_are_typed() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _) = model(tmp.path(), "llama", |_| {});
    let mut m = Model::open(&dir, DType::F32).unwrap();
    // No tokens at all: candle refuses the empty input.
    let e = m.causal().unwrap().forward(&[], 0).unwrap_err();
    assert!(matches!(e, RunError::Compute { .. }), "{e:?}");
    // A stream that cannot be written.
    struct Broken;
    impl std::io::Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let ids = m.prompt_tokens("the cat", false).unwrap();
    let mut out = Broken;
    // Random weights may print nothing for a token that decodes to an unfinished character;
    // over 20 tokens something is printed.
    let e = generate(&mut m, &ids, 0, 20, Sampling::GREEDY, Some(&mut out)).unwrap_err();
    assert!(matches!(e, RunError::Output(_)), "{e:?}");
}

#[test]
fn usage_errors_exit_2() {
    let (code, _, _) = run(&["generate"]);
    assert_eq!(code, 2);
    let (code, _, _) = run(&["compare", "only-one"]);
    assert_eq!(code, 2);
    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("generate") && stdout.contains("compare") && stdout.contains("embed"));
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn compare_json_out_writes_the_json_report_beside_the_text() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, qins) = model(tmp.path(), "llama", |_| {});
    let (q, d) = (qins.to_str().unwrap(), dir.to_str().unwrap());
    let small = ["--tokens", "3", "--text-tokens", "8"];
    let report = tmp.path().join("report.json");
    let mut args = vec!["compare", q, d, "--json-out", report.to_str().unwrap()];
    args.extend(small);
    let (code, stdout, stderr) = run(&args);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("teacher-forced"),
        "the text report still goes to stdout: {stdout}"
    );
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let mut args = vec!["compare", q, d, "--json"];
    args.extend(small);
    let (code, stdout, stderr) = run(&args);
    assert_eq!(code, 0, "{stderr}");
    let printed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    // The same figures (timings aside: two runs).
    assert_eq!(written["causal"], printed["causal"]);
    assert!(written["causal"]["teacher_forced"]["kl_mean"].is_number());
    // Nothing else was left in the directory.
    assert_eq!(names(tmp.path()), ["llama", "llama.qins", "report.json"]);
}

#[test]
fn compare_json_out_that_cannot_be_written_fails_naming_it_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, qins) = model(tmp.path(), "llama", |_| {});
    // A directory where the file should be: the rename fails after the report was written
    // beside it, which must be removed again.
    let target = tmp.path().join("report.json");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"x").unwrap();
    let (code, _, stderr) = run(&[
        "compare",
        qins.to_str().unwrap(),
        dir.to_str().unwrap(),
        "--tokens",
        "2",
        "--text-tokens",
        "4",
        "--json-out",
        target.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("report.json: cannot write the JSON report"),
        "{stderr}"
    );
    assert_eq!(names(tmp.path()), ["llama", "llama.qins", "report.json"]);
    assert_eq!(std::fs::read(target.join("keep")).unwrap(), b"x");
}

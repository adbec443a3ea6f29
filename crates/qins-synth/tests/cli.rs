//! Tests of the `qins-synth` binary.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qins-synth"))
}

#[test]
fn writes_tiny_preset_and_prints_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ckpt");
    let o = bin()
        .arg(&out)
        .args([
            "--preset", "tiny", "--dtype", "f16", "--shards", "3", "--seed", "5",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert!(
        stdout.starts_with("wrote 3 shards, 28 tensors, "),
        "unexpected summary: {stdout}"
    );
    assert!(stdout.contains("KiB to "), "{stdout}");
    assert!(out.join("model.safetensors.index.json").is_file());
    assert!(out.join("model-00003-of-00003.safetensors").is_file());
}

#[test]
fn refuses_non_empty_dir_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("something"), "x").unwrap();
    let o = bin()
        .arg(tmp.path())
        .args(["--preset", "tiny"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8(o.stderr).unwrap();
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert!(!tmp.path().join("model.safetensors").exists());

    let o = bin()
        .arg(tmp.path())
        .args(["--preset", "tiny", "--tied", "--force"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert!(stdout.starts_with("wrote 1 shard, 27 tensors"), "{stdout}");
    assert!(tmp.path().join("something").exists());
}

#[test]
fn usage_errors_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        vec!["--dtype", "f64"],
        vec!["--shards", "0"],
        vec!["--preset", "huge"],
        vec!["--target-size", "2XB"],
        vec!["--preset", "tiny", "--target-size", "1MB"],
        vec!["--hidden-size", "100"],
        vec!["--hidden-size", "0"],
        vec!["--vocab-size", "2"],
    ] {
        let o = bin().arg(tmp.path()).args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
    }
    let o = bin().output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn help_mentions_every_flag() {
    let o = bin().arg("--help").output().unwrap();
    assert!(o.status.success());
    let help = String::from_utf8(o.stdout).unwrap();
    for flag in [
        "--dtype",
        "--shards",
        "--preset",
        "--target-size",
        "--seed",
        "--tied",
        "--odd-shapes",
        "--vocab-size",
        "--hidden-size",
        "--force",
        "OUT_DIR",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn odd_shapes_flag_and_target_size() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("t");
    let o = bin()
        .arg(&out)
        .args(["--target-size", "3MiB", "--odd-shapes", "--dtype", "bf16"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_ne!(config["hidden_size"].as_u64().unwrap() % 8, 0);
    assert_ne!(config["intermediate_size"].as_u64().unwrap() % 8, 0);
}

/// A vocabulary and width of one's own (a large embedding, as in models with big
/// vocabularies), the layers refitted around them to the target size.
#[test]
fn vocab_and_hidden_size_with_target_size() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("v");
    let args = [
        "--target-size",
        "4MiB",
        "--vocab-size",
        "4000",
        "--hidden-size",
        "192",
        "--tied",
        "--dtype",
        "f32",
    ];
    let o = bin().arg(&out).args(args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["vocab_size"], 4000);
    assert_eq!(config["hidden_size"], 192);
    assert_eq!(config["num_attention_heads"], 3);
    let bytes = std::fs::metadata(out.join("model.safetensors"))
        .unwrap()
        .len();
    // The embedding alone is 4000 × 192 × 4 bytes = 2.9 MiB; the layers fill the rest.
    assert!(
        (4 << 20) - (256 << 10) < bytes && bytes < (4 << 20) + (64 << 10),
        "{bytes} bytes"
    );
}

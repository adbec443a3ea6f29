//! The `qins-inspect` binary, run in a scratch directory: views, exit codes, error lines.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qins-inspect"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("UTF-8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("UTF-8")
}

#[test]
fn text_json_and_layout_views() {
    let dir = tempfile::tempdir().unwrap();
    common::small_file(dir.path());
    let size = std::fs::metadata(dir.path().join("small.qins"))
        .unwrap()
        .len();

    let o = run(dir.path(), &["small.qins"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.starts_with("file:      small.qins\n"), "{text}");
    assert!(text.contains("format:    QINS 1.0"));
    assert!(text.contains("not verified"));
    assert!(text.contains(&format!("{size} B")));
    assert!(stderr(&o).is_empty());

    let o = run(dir.path(), &["small.qins", "--json", "--verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("one JSON document");
    assert_eq!(v["file"], "small.qins");
    assert_eq!(v["verified"], true);
    assert_eq!(v["bytes"]["total"], size);
    assert_eq!(v["tensors"][0]["encoding"], "log");
    assert_eq!(v["tensors"][1]["dtype"], "I32");
    assert_eq!(v["assets"][0]["name"], "config.json");

    let o = run(dir.path(), &["small.qins", "--layout"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let layout = stdout(&o);
    assert!(
        layout.contains("magic = \"\\x89QINS\\r\\n\\x1a\""),
        "{layout}"
    );
    assert!(layout.contains("[0..3] = 7 8 9"), "{layout}");
    assert!(layout.contains("not shown"));

    let o = run(dir.path(), &["--layout", "--full", "small.qins"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("LUT 0 [128] = "));
    assert!(!stdout(&o).contains("not shown"));
}

#[test]
fn verify_fails_on_a_flipped_byte_naming_the_section() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = common::rich_file(dir.path(), 64);
    let bytes = std::fs::read(&path).unwrap();
    let q = qins_read::Qins::parse(&bytes).unwrap();
    let report = qins_inspect::Report::new(&q, "x", false);
    for section in [
        "tensor \"layers.0.k.weight\" data",
        "tensor \"layers.0.o.weight\" scales",
        "tensor \"position_ids\" data",
        "asset \"tokenizer.json\"",
    ] {
        let s = report
            .sections
            .iter()
            .find(|s| s.name == section)
            .expect(section);
        let mut bad = bytes.clone();
        bad[s.offset as usize + 1] ^= 0x01;
        std::fs::write(dir.path().join("bad.qins"), &bad).unwrap();

        // Opening checks the structure only: the damage is not seen.
        let o = run(dir.path(), &["bad.qins"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

        for args in [
            &["bad.qins", "--verify"][..],
            &["bad.qins", "--verify", "--json"],
        ] {
            let o = run(dir.path(), args);
            assert_eq!(o.status.code(), Some(1), "{args:?}");
            let err = stderr(&o);
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(
                err.starts_with(&format!("error: bad.qins: {section}: checksum mismatch")),
                "{err}"
            );
            assert!(o.stdout.is_empty(), "nothing is printed for a bad file");
        }
    }
}

#[test]
fn bad_files_exit_1_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::small_file(dir.path());
    let bytes = std::fs::read(&path).unwrap();

    std::fs::write(dir.path().join("short.qins"), &bytes[..bytes.len() - 3]).unwrap();
    let o = run(dir.path(), &["short.qins"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.starts_with("error: short.qins: file is truncated"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(o.stdout.is_empty());

    std::fs::write(dir.path().join("tiny.qins"), &bytes[..50]).unwrap();
    let o = run(dir.path(), &["tiny.qins", "--layout"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("error: tiny.qins: file is truncated"));

    std::fs::write(dir.path().join("empty.qins"), b"").unwrap();
    let o = run(dir.path(), &["empty.qins", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("error: empty.qins: "),
        "{}",
        stderr(&o)
    );

    let mut magic = bytes.clone();
    magic[1] = b'X';
    std::fs::write(dir.path().join("magic.qins"), &magic).unwrap();
    let o = run(dir.path(), &["magic.qins"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("error: magic.qins: not a .qins file"));

    let mut header = bytes.clone();
    header[100] ^= 0xff;
    std::fs::write(dir.path().join("header.qins"), &header).unwrap();
    let o = run(dir.path(), &["header.qins"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("error: header.qins: header checksum mismatch"));

    let o = run(dir.path(), &["missing.qins"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.starts_with("error: missing.qins: "), "{err}");
    assert_eq!(err.matches("missing.qins").count(), 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // A directory cannot be read as a file either.
    let o = run(dir.path(), &["."]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("error: .: "), "{}", stderr(&o));
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    common::small_file(dir.path());
    for args in [
        &[][..],
        &["small.qins", "--bogus"],
        &["small.qins", "--json", "--layout"],
        &["small.qins", "--full"],
        &["small.qins", "other.qins"],
    ] {
        let o = run(dir.path(), args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty());
        assert!(!stderr(&o).is_empty());
    }
    let o = run(dir.path(), &["--help"]);
    assert_eq!(o.status.code(), Some(0));
    for flag in ["--verify", "--json", "--layout", "--full"] {
        assert!(stdout(&o).contains(flag), "{flag}");
    }
}

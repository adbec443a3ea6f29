//! One negative test per `ExportError` variant, and the promise that goes with all of them:
//! nothing is left at the target (an existing one is untouched) and no temporary directory
//! remains.

mod common;

use std::path::Path;

use common::*;
use qins_export::{export, ExportError, ExportOptions, NoProgress};
use qins_format::{Codec, Dtype, Storage};
use qins_write::{Asset, Plan, TensorSpec, Writer};

/// A small valid `.qins`: one encoded tensor "w" (100 elements, so 13 sign bytes), one raw
/// tensor and one asset.
fn small_qins(path: &Path) {
    let mut plan = Plan::new();
    plan.alignment = 64;
    plan.tensors.push(TensorSpec::new(
        "w",
        Dtype::BF16,
        vec![10, 10],
        Storage::Encoded {
            codec: Codec::Log,
            row_scales: true,
        },
    ));
    plan.tensors
        .push(TensorSpec::new("b", Dtype::F32, vec![3], Storage::Raw));
    plan.assets.push(Asset {
        name: "config.json".into(),
        data: b"{\"x\": 1}".to_vec(),
    });
    let mut w = Writer::create(path, plan, true).unwrap();
    let v: Vec<f32> = (0..100).map(|i| (i as f32 - 49.5) / 10.0).collect();
    w.encode_tensor(&v, Some(&[2.0; 10])).unwrap();
    w.write_raw(&[7; 12]).unwrap();
    w.finish().unwrap();
}

fn opts(input: &Path, output: &Path) -> ExportOptions {
    ExportOptions::new(input.into(), output.into())
}

/// The directory holds exactly `names` (no temporary directories, no target).
fn assert_only(dir: &Path, names: &[&str]) {
    let mut got: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, names, "left behind in {}", dir.display());
}

#[test]
fn bad_input_is_refused() {
    let dir = scratch();
    std::fs::write(p(&dir, "junk.qins"), b"not a qins file at all, just text").unwrap();
    let e = export(&opts(&p(&dir, "junk.qins"), &p(&dir, "out")), &NoProgress).unwrap_err();
    assert!(
        matches!(&e, ExportError::BadInput { path, source } if path.ends_with("junk.qins") && source.kind() == "Truncated"),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("junk.qins: not a valid .qins file"),
        "{e}"
    );
    assert_only(dir.path(), &["junk.qins"]);
}

#[test]
fn a_missing_input_is_an_io_error() {
    let dir = scratch();
    let e = export(&opts(&p(&dir, "absent.qins"), &p(&dir, "out")), &NoProgress).unwrap_err();
    assert!(
        matches!(&e, ExportError::Io { op: "open", path, source } if path.ends_with("absent.qins") && source.kind() == std::io::ErrorKind::NotFound),
        "{e:?}"
    );
    assert_only(dir.path(), &[]);
}

/// Flips one byte of `path` at `offset`.
fn flip(path: &Path, offset: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[offset as usize] ^= 0x40;
    std::fs::write(path, b).unwrap();
}

#[test]
fn a_damaged_file_exports_nothing_and_names_the_section() {
    let dir = scratch();
    let q = p(&dir, "m.qins");
    small_qins(&q);
    let bytes = std::fs::read(&q).unwrap();
    let (codes, signs, raw, asset) = {
        let qins = qins_read::Qins::parse(&bytes).unwrap();
        let off = |s: &[u8]| s.as_ptr() as u64 - bytes.as_ptr() as u64;
        let w = qins.tensor("w").unwrap();
        let (_, a) = qins.assets().next().unwrap();
        (
            off(w.codes().unwrap()),
            off(w.signs().unwrap()),
            off(qins.tensor("b").unwrap().raw_bytes().unwrap()),
            off(a),
        )
    };
    // The row scales follow the 13 sign bytes at the next multiple of the alignment (64).
    let scales = (signs + 13).next_multiple_of(64);
    let padding = format!("padding at offset {}", codes + 110);
    let cases = [
        (codes + 17, "tensor \"w\" data", "DataChecksum"),
        (signs + 3, "tensor \"w\" signs", "DataChecksum"),
        (scales + 5, "tensor \"w\" scales", "DataChecksum"),
        (raw + 5, "tensor \"b\" data", "DataChecksum"),
        (asset, "asset \"config.json\"", "DataChecksum"),
        (codes + 110, padding.as_str(), "NonZeroPadding"),
    ];
    for (offset, section, kind) in cases {
        std::fs::write(&q, &bytes).unwrap();
        flip(&q, offset);
        // Also with an existing, non-empty target and --force: it must survive untouched.
        std::fs::create_dir_all(p(&dir, "kept")).unwrap();
        std::fs::write(p(&dir, "kept/file"), b"mine").unwrap();
        for (target, force) in [("out", false), ("kept", true)] {
            let mut o = opts(&q, &p(&dir, target));
            o.force = force;
            let e = export(&o, &NoProgress).unwrap_err();
            match &e {
                ExportError::Damaged {
                    section: s, source, ..
                } => {
                    assert_eq!(s, section);
                    assert_eq!(source.kind(), kind);
                }
                other => panic!("{section}: {other:?}"),
            }
            assert!(
                e.to_string()
                    .contains(&format!("damaged file ({section} is bad)")),
                "{e}"
            );
            assert_only(dir.path(), &["kept", "m.qins"]);
            assert_eq!(std::fs::read(p(&dir, "kept/file")).unwrap(), b"mine");
        }
    }
}

#[test]
fn a_modules_json_asset_that_is_not_a_module_list_is_refused() {
    let dir = scratch();
    let q = p(&dir, "m.qins");
    let mut plan = Plan::new();
    plan.alignment = 64;
    plan.tensors.push(TensorSpec::new(
        "2_Dense/linear.weight",
        Dtype::F32,
        vec![1],
        Storage::Raw,
    ));
    plan.assets.push(Asset {
        name: "modules.json".into(),
        data: br#"[{"path": "2_Dense"}, {"path": "../escape"}]"#.to_vec(),
    });
    let mut w = Writer::create(&q, plan, true).unwrap();
    w.write_raw(&[0; 4]).unwrap();
    w.finish().unwrap();
    let e = export(&opts(&q, &p(&dir, "out")), &NoProgress).unwrap_err();
    assert!(
        matches!(&e, ExportError::BadModules { path, source: qins_source::SourceError::BadModules { .. } } if path == &q),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("m.qins: its asset modules.json is not a sentence-transformers module list"),
        "{msg}"
    );
    let chain = format!("{:#}", anyhow::Error::from(e));
    assert!(chain.contains("entry 1: path \"../escape\""), "{chain}");
    assert_only(dir.path(), &["m.qins"]);
}

#[test]
fn a_damaged_header_is_refused_as_bad_input() {
    let dir = scratch();
    let q = p(&dir, "m.qins");
    small_qins(&q);
    flip(&q, 100);
    let e = export(&opts(&q, &p(&dir, "out")), &NoProgress).unwrap_err();
    assert!(
        matches!(&e, ExportError::BadInput { source, .. } if source.kind() == "HeaderChecksum"),
        "{e:?}"
    );
    assert_only(dir.path(), &["m.qins"]);
}

#[test]
fn an_existing_target_is_refused() {
    let dir = scratch();
    let q = p(&dir, "m.qins");
    small_qins(&q);
    std::fs::create_dir(p(&dir, "full")).unwrap();
    std::fs::write(p(&dir, "full/x"), b"x").unwrap();
    let e = export(&opts(&q, &p(&dir, "full")), &NoProgress).unwrap_err();
    assert!(
        matches!(&e, ExportError::TargetExists { path, .. } if path.ends_with("full")),
        "{e:?}"
    );
    assert!(e.to_string().contains("--force"), "{e}");
    assert_eq!(std::fs::read(p(&dir, "full/x")).unwrap(), b"x");

    // A file is never replaced, not even with force.
    std::fs::write(p(&dir, "file"), b"f").unwrap();
    for force in [false, true] {
        let mut o = opts(&q, &p(&dir, "file"));
        o.force = force;
        let e = export(&o, &NoProgress).unwrap_err();
        assert!(
            matches!(&e, ExportError::TargetExists { reason, .. } if reason.contains("not a directory")),
            "{e:?}"
        );
    }
    assert_eq!(std::fs::read(p(&dir, "file")).unwrap(), b"f");
    // Nor is a symbolic link, even to a directory.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(p(&dir, "full"), p(&dir, "link")).unwrap();
        let mut o = opts(&q, &p(&dir, "link"));
        o.force = true;
        let e = export(&o, &NoProgress).unwrap_err();
        assert!(
            matches!(&e, ExportError::TargetExists { reason, .. } if reason.contains("symbolic link")),
            "{e:?}"
        );
        std::fs::remove_file(p(&dir, "link")).unwrap();
    }
    assert_only(dir.path(), &["file", "full", "m.qins"]);
}

#[test]
fn a_target_holding_the_input_is_not_replaced() {
    let dir = scratch();
    std::fs::create_dir(p(&dir, "models")).unwrap();
    let q = p(&dir, "models/m.qins");
    small_qins(&q);
    let mut o = opts(&q, &p(&dir, "models"));
    o.force = true;
    let e = export(&o, &NoProgress).unwrap_err();
    assert!(
        matches!(&e, ExportError::TargetContainsInput { .. }),
        "{e:?}"
    );
    assert_only(&p(&dir, "models"), &["m.qins"]);
    assert_only(dir.path(), &["models"]);
}

#[test]
fn an_uncreatable_target_is_refused() {
    let dir = scratch();
    let q = p(&dir, "m.qins");
    small_qins(&q);
    // The parent is a file: no directory can be made in it (this holds even for root).
    std::fs::write(p(&dir, "plain"), b"").unwrap();
    for target in ["plain/out", "plain/deeper/out"] {
        let e = export(&opts(&q, &p(&dir, target)), &NoProgress).unwrap_err();
        assert!(
            matches!(&e, ExportError::TargetUnwritable { .. }),
            "{target}: {e:?}"
        );
        assert!(e.to_string().starts_with("cannot create directory"), "{e}");
    }
    assert_only(dir.path(), &["m.qins", "plain"]);
    // Missing parents created for a target are removed again when the export fails later.
    let bytes = std::fs::read(&q).unwrap();
    flip(&q, bytes.len() as u64 - 3);
    let e = export(&opts(&q, &p(&dir, "new/deeper/out")), &NoProgress).unwrap_err();
    assert!(matches!(&e, ExportError::Damaged { .. }), "{e:?}");
    assert_only(dir.path(), &["m.qins", "plain"]);
}

#[test]
fn a_bad_size_is_refused() {
    for s in ["", "5 parsecs", "0", "-1GB", "1.5.2MB", "20000000000TB"] {
        let e = qins_export::parse_size(s).unwrap_err();
        assert!(
            matches!(&e, ExportError::BadSize { text, .. } if text == s),
            "{e:?}"
        );
        assert!(
            e.to_string().starts_with(&format!("invalid size {s:?}")),
            "{e}"
        );
    }
}

#[test]
fn a_header_safetensors_would_refuse_is_unrepresentable() {
    // 24,400 tensors with 4,096-byte names: a safetensors header above 100,000,000 bytes.
    let dir = scratch();
    let q = p(&dir, "many.qins");
    let mut plan = Plan::new();
    plan.alignment = 64;
    for i in 0..24_400 {
        let mut name = format!("t{i:06}.");
        name.extend(std::iter::repeat_n('x', 4096 - name.len()));
        plan.tensors
            .push(TensorSpec::new(name, Dtype::U8, vec![0], Storage::Raw));
    }
    let mut w = Writer::create(&q, plan, true).unwrap();
    for _ in 0..24_400 {
        w.write_raw(&[]).unwrap();
    }
    w.finish().unwrap();
    let e = export(&opts(&q, &p(&dir, "out")), &NoProgress).unwrap_err();
    assert!(
        matches!(&e, ExportError::Unrepresentable { shard, reason } if shard == "model.safetensors" && reason.contains("100000000")),
        "{e:?}"
    );
    assert_only(dir.path(), &["many.qins"]);
}

#[test]
fn every_error_leaves_an_existing_empty_target_in_place() {
    let dir = scratch();
    std::fs::write(p(&dir, "junk.qins"), b"junk").unwrap();
    std::fs::create_dir(p(&dir, "out")).unwrap();
    let e = export(&opts(&p(&dir, "junk.qins"), &p(&dir, "out")), &NoProgress).unwrap_err();
    assert!(matches!(e, ExportError::BadInput { .. }));
    assert_only(dir.path(), &["junk.qins", "out"]);
    assert_only(&p(&dir, "out"), &[]);
}

/// A killed export leaves its temporary directory behind; the next export to the same target
/// removes it, but not a running export's (locked), a recent one, or the moved-aside previous
/// target `.NAME.old-XXXXXX`, which may hold the user's files.
#[test]
fn a_killed_exports_leftovers_are_removed_by_the_next() {
    let dir = scratch();
    let q = p(&dir, "m.qins");
    small_qins(&q);
    let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let leftover = |name: &str, old: bool| {
        std::fs::create_dir(p(&dir, name)).unwrap();
        std::fs::write(p(&dir, &format!("{name}/model.safetensors")), b"partial").unwrap();
        let d = std::fs::File::open(p(&dir, name)).unwrap();
        if old {
            d.set_modified(long_ago).unwrap();
        }
        d
    };
    drop(leftover(".out.tmp-abc123", true));
    let running = leftover(".out.tmp-def456", true);
    running.lock().unwrap();
    drop(leftover(".out.tmp-ghi789", false));
    drop(leftover(".out.old-abc123", true));
    drop(leftover(".other.tmp-abc123", true));
    export(&opts(&q, &p(&dir, "out")), &NoProgress).unwrap();
    assert_only(
        dir.path(),
        &[
            ".other.tmp-abc123",
            ".out.old-abc123",
            ".out.tmp-def456",
            ".out.tmp-ghi789",
            "m.qins",
            "out",
        ],
    );
    drop(running);
}

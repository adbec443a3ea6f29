//! Models stored as sets (spec §21) through `open_model`: what the conformance suite's sets do
//! not cover (the limits of §21.7, single files, I/O), and a set written by `qins-write`.
//! Every error kind of §21.6 has an invalid set in `conformance/sets/`, checked by
//! `crates/qins-conformance`.

use std::collections::BTreeMap;
use std::path::Path;

use qins_format::{Codec, Dtype, Storage};
use qins_read::{open_model, Index, ReadError};
use qins_write::set::SetWriter;
use qins_write::{Plan, TensorSpec, Writer};

fn plan(tensors: &[&str]) -> Plan {
    let mut p = Plan::new();
    p.alignment = 64;
    for t in tensors {
        p.tensors.push(TensorSpec::new(
            *t,
            Dtype::F32,
            vec![2, 3],
            Storage::Encoded {
                codec: Codec::Log,
                row_scales: false,
            },
        ));
    }
    p
}

fn write_set(dir: &Path, shards: &[&[&str]]) {
    let plans = shards.iter().map(|s| plan(s)).collect();
    let mut set = SetWriter::create(dir, "model", plans, false).unwrap();
    for _ in shards {
        let mut w = set.begin_shard().unwrap();
        while w.next_tensor().is_some() {
            w.encode_tensor(&[0.5, -1.0, 0.0, 2.0, 0.25, -0.125], None)
                .unwrap();
        }
        set.finish_shard(w).unwrap();
    }
    set.finish().unwrap();
}

#[test]
fn a_written_set_opens_as_one_model_from_its_index_and_from_each_shard() {
    let d = tempfile::tempdir().unwrap();
    write_set(d.path(), &[&["a", "b"], &["c"], &["d"]]);
    for start in [
        "model.qins.index.json",
        "model-00001-of-00003.qins",
        "model-00003-of-00003.qins",
    ] {
        let files = open_model(&d.path().join(start)).unwrap();
        let m = files.parse().unwrap();
        m.verify().unwrap();
        assert!(m.is_set());
        let names: Vec<&str> = m.tensors().map(|t| t.name()).collect();
        assert_eq!(names, ["a", "b", "c", "d"], "{start}");
        assert_eq!(m.file_of("c"), Some(1));
        assert_eq!(m.tensor("d").unwrap().to_f32_vec().unwrap()[2], 0.0);
        assert_eq!(m.files().len(), 3);
        assert_eq!(m.files()[1].version(), (1, 1), "a shard is a 1.1 file");
        let (_, index) = m.index().unwrap();
        assert_eq!(index.shards().len(), 3);
        assert_eq!(index.shard_of("b"), Some(0));
        assert_eq!(
            m.total_size(),
            index.total_size(),
            "the index's total is the files'"
        );
        // Releasing pages is a hint that changes nothing the program sees.
        let t = m.tensor("a").unwrap();
        files.release(t.codes().unwrap());
        assert_eq!(t.to_f32_vec().unwrap()[2], 0.0);
    }
}

#[test]
fn a_single_file_is_a_model_of_one_file() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("one.qins");
    let mut w = Writer::create(&path, plan(&["w"]), false).unwrap();
    w.encode_tensor(&[1.0; 6], None).unwrap();
    w.finish().unwrap();
    let files = open_model(&path).unwrap();
    let m = files.parse().unwrap();
    assert!(!m.is_set());
    assert!(m.index().is_none());
    assert_eq!(m.tensor_count(), 1);
    assert_eq!(m.files()[0].version(), (1, 0), "not a shard: a 1.0 file");
    // An error inside a single file is not wrapped: its caller names the file.
    std::fs::write(&path, [b'x'; 200]).unwrap();
    let e = open_model(&path).unwrap_err();
    assert_eq!(e.kind(), "BadMagic");
    assert!(e.file().is_none());
}

#[test]
fn an_index_longer_than_256_mib_is_refused_before_it_is_read() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("model.qins.index.json");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len((256 << 20) + 1).unwrap(); // sparse: nothing is written
    let e = open_model(&path).unwrap_err();
    assert_eq!(e.kind(), "LimitExceeded", "{e}");
    assert_eq!(e.file(), Some(path.as_path()));
    assert!(e.to_string().contains("index"), "{e}");
}

/// An index of `n` shards `s0.qins`, … of `size` bytes each, with the set id `set_id`, the
/// total size `total` and the weight map `weight_map` (JSON text), written compactly.
fn index_of(n: usize, size: u64, set_id: &str, total: u64, weight_map: &str) -> String {
    let shards: Vec<String> = (0..n)
        .map(|k| format!(r#"{{"file":"s{k}.qins","header_crc32":"00000000","size":{size}}}"#))
        .collect();
    format!(
        r#"{{"metadata":{{"format":"qins","format_version":"1.1","set_id":"{set_id}","total_size":{total}}},"shards":[{}],"weight_map":{weight_map}}}"#,
        shards.join(",")
    )
}

#[test]
fn more_than_65536_shards_is_a_limit() {
    let text = index_of(65_537, 0, "x", 0, "{}");
    let e = Index::parse(text.as_bytes()).unwrap_err();
    assert!(
        matches!(e, ReadError::LimitExceeded { value: 65_537, .. }),
        "{e}"
    );
    // 65536 is allowed.
    let text = text.replacen(
        r#"{"file":"s0.qins","header_crc32":"00000000","size":0},"#,
        "",
        1,
    );
    let index = Index::parse(text.as_bytes()).unwrap();
    assert_eq!(index.shards().len(), 65_536);
}

#[test]
fn unknown_members_are_ignored_and_a_later_minor_version_is_accepted() {
    let text = r#"{"metadata":{"format":"qins","format_version":"1.7","set_id":"x","total_size":3,
        "future":{"a":[1,2]}},"shards":[{"file":"a.qins","header_crc32":"0000abcd","size":3,
        "more":null}],"weight_map":{"w":"a.qins"},"extra":true}"#;
    let i = Index::parse(text.as_bytes()).unwrap();
    assert_eq!(i.version(), (1, 7));
    assert_eq!(i.shards()[0].header_crc32, 0xabcd);
    assert_eq!(i.shard_of("w"), Some(0));
    // A byte-order mark, or anything but an object, is not an index.
    for bad in [&b"\xef\xbb\xbf{}"[..], b"[]", b"", b"{\"metadata\":{}}"] {
        let e = Index::parse(bad).unwrap_err();
        assert_eq!(e.kind(), "BadIndex", "{bad:?}: {e}");
    }
}

#[test]
fn io_errors_name_the_path() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("nothing.qins.index.json");
    let e = open_model(&missing).unwrap_err();
    assert_eq!(e.kind(), "Io");
    assert_eq!(e.file(), Some(missing.as_path()));
    let e = open_model(d.path()).unwrap_err();
    assert_eq!(e.kind(), "Io", "a directory: {e}");
    // A FIFO, named as an index or as a file: refused without opening it (which would wait).
    for name in ["fifo.qins.index.json", "fifo.qins"] {
        let fifo = d.path().join(name);
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let e = open_model(&fifo).unwrap_err();
        assert_eq!(e.kind(), "Io", "{name}: {e}");
    }
}

/// Every invalid set of the conformance suite is refused with a message that names the file at
/// fault and cites the rule (the suite itself checks the kinds, stages and files).
#[test]
fn messages_name_the_file_and_the_rule() {
    let sets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance/sets");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sets.join("manifest.json")).unwrap()).unwrap();
    let cases = manifest["invalid"].as_array().unwrap();
    assert!(cases.len() >= 25);
    for case in cases {
        let dir = sets.join(case["dir"].as_str().unwrap());
        let open = dir.join(case["open"].as_str().unwrap());
        let e = match open_model(&open).and_then(|f| {
            let m = f.parse()?;
            m.verify()
        }) {
            Err(e) => e,
            Ok(()) => panic!("{}: accepted", dir.display()),
        };
        let msg = e.to_string();
        let file = case["file"].as_str().unwrap();
        if e.file().is_none() {
            // An error inside the file given, which is not a shard: its caller names it.
            assert_eq!(file, case["open"].as_str().unwrap(), "{}", dir.display());
            continue;
        }
        assert!(
            msg.contains(file),
            "{}: {msg:?} does not name {file}",
            dir.display()
        );
        assert!(
            msg.contains("(§"),
            "{}: {msg:?} cites no rule",
            dir.display()
        );
    }
}

/// The set variants keep `ReadError` as small as the file variants made it, so that errors
/// holding one stay cheap to return (clippy's `result_large_err`).
#[test]
fn read_errors_stay_small() {
    assert!(
        std::mem::size_of::<ReadError>() <= 56,
        "{}",
        std::mem::size_of::<ReadError>()
    );
}

/// Writes a set of one tensor per shard, each shard's metadata changed by `edit(k, metadata)`
/// after the shard keys are added (so that tests can make shards the writer never makes).
fn write_edited_set(dir: &Path, n: usize, edit: impl Fn(usize, &mut BTreeMap<String, String>)) {
    use qins_write::set::{add_shard_keys, index_json, set_id, ShardEntry};
    let mut plans: Vec<Plan> = (1..=n).map(|k| plan(&[&format!("t{k}")])).collect();
    let id = set_id(&plans);
    let mut entries = Vec::new();
    let mut weight_map = BTreeMap::new();
    for (k, p) in plans.iter_mut().enumerate() {
        let file = format!("model-{:05}-of-{n:05}.qins", k + 1);
        add_shard_keys(&mut p.metadata, &id, "model.qins.index.json", k + 1, n);
        edit(k + 1, &mut p.metadata);
        let mut w = Writer::create(&dir.join(&file), p.clone(), false).unwrap();
        w.encode_tensor(&[0.5, -1.0, 0.0, 2.0, 0.25, -0.125], None)
            .unwrap();
        let s = w.finish().unwrap();
        weight_map.insert(format!("t{}", k + 1), file.clone());
        entries.push(ShardEntry {
            file,
            size: s.file_size,
            header_crc32: s.header_crc32,
        });
    }
    std::fs::write(
        dir.join("model.qins.index.json"),
        index_json(&id, &entries, &weight_map),
    )
    .unwrap();
}

fn open_err(path: &Path) -> ReadError {
    match open_model(path).and_then(|f| f.parse().map(drop)) {
        Err(e) => e,
        Ok(()) => panic!("{} opens", path.display()),
    }
}

/// §21.5 "Which file a path is": the magic makes a `.qins` file whatever its name; otherwise a
/// name ending in `.json` (lower case) makes an index; anything else is opened as a `.qins`
/// file and fails as one.
#[test]
fn an_index_is_known_by_its_name_and_a_qins_file_by_its_magic() {
    let d = tempfile::tempdir().unwrap();
    write_set(d.path(), &[&["a"], &["b"]]);
    let index = std::fs::read(d.path().join("model.qins.index.json")).unwrap();
    for name in ["model.qins.index", "model.qins.index.JSON", "index.txt"] {
        std::fs::write(d.path().join(name), &index).unwrap();
        let e = open_err(&d.path().join(name));
        assert_eq!(e.kind(), "BadMagic", "{name}: {e}");
    }
    // An index shorter than the preamble, not named .json: Truncated, as §17 step 1 says.
    std::fs::write(d.path().join("tiny"), b"{}").unwrap();
    assert_eq!(open_err(&d.path().join("tiny")).kind(), "Truncated");
    // A shard named like an index is a .qins file (its magic), and then not a listed shard.
    std::fs::copy(
        d.path().join("model-00001-of-00002.qins"),
        d.path().join("shard.json"),
    )
    .unwrap();
    let e = open_err(&d.path().join("shard.json"));
    assert_eq!(e.kind(), "UnlistedShard", "{e}");
    // A damaged shard named .json has no magic: it is read as an index, and is not one.
    let mut bytes = std::fs::read(d.path().join("model-00002-of-00002.qins")).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(d.path().join("damaged.json"), &bytes).unwrap();
    assert_eq!(open_err(&d.path().join("damaged.json")).kind(), "BadIndex");
    std::fs::write(d.path().join("damaged.qins"), &bytes).unwrap();
    assert_eq!(open_err(&d.path().join("damaged.qins")).kind(), "BadMagic");
}

/// §21.5 step 1: the shard count is checked as soon as `shards` is an array, before the rules
/// of §21.2 that come after `format_version` (here a bad set id and a wrong total size).
#[test]
fn the_shard_count_is_checked_before_the_other_rules_of_the_index() {
    let text = index_of(65_537, 1, "a b", 0, r#"{"w":"nowhere"}"#);
    let e = Index::parse(text.as_bytes()).unwrap_err();
    assert_eq!(e.kind(), "LimitExceeded", "{e}");
    // Before it: the version (UnsupportedVersion) and the format (BadIndex).
    let v2 = text.replacen("\"1.1\"", "\"2.0\"", 1);
    assert_eq!(
        Index::parse(v2.as_bytes()).unwrap_err().kind(),
        "UnsupportedVersion"
    );
    let other = text.replacen("\"qins\"", "\"other\"", 1);
    assert_eq!(
        Index::parse(other.as_bytes()).unwrap_err().kind(),
        "BadIndex"
    );
    // `shards` not an array is BadIndex, whatever else is wrong.
    let text = r#"{"metadata":{"format":"qins","format_version":"1.1","set_id":"a b","total_size":0},"shards":{},"weight_map":{}}"#;
    assert_eq!(
        Index::parse(text.as_bytes()).unwrap_err().kind(),
        "BadIndex"
    );
}

/// §21.3: `qins.set.index_file` is read only when the set is opened from that shard; from the
/// index (which may have been renamed) it is not looked at. Absent or not a file name, the
/// error names the shard; naming no file, it names that path (§21.5, From a shard, step 2).
#[test]
fn qins_set_index_file_is_read_only_from_its_shard() {
    let d = tempfile::tempdir().unwrap();
    write_edited_set(d.path(), 3, |k, m| match k {
        2 => {
            m.remove("qins.set.index_file");
        }
        3 => {
            m.insert(
                "qins.set.index_file".into(),
                "../model.qins.index.json".into(),
            );
        }
        _ => {}
    });
    let files = open_model(&d.path().join("model.qins.index.json")).unwrap();
    files.parse().unwrap().verify().unwrap();
    assert!(open_model(&d.path().join("model-00001-of-00003.qins")).is_ok());
    for k in [2, 3] {
        let shard = d.path().join(format!("model-0000{k}-of-00003.qins"));
        let e = open_err(&shard);
        assert_eq!(e.kind(), "MissingIndex", "{e}");
        assert_eq!(e.file(), Some(shard.as_path()));
    }
    // A renamed index: the set opens from it; from a shard, the index it names is missing.
    std::fs::rename(
        d.path().join("model.qins.index.json"),
        d.path().join("renamed.qins.index.json"),
    )
    .unwrap();
    assert!(open_model(&d.path().join("renamed.qins.index.json")).is_ok());
    let e = open_err(&d.path().join("model-00001-of-00003.qins"));
    assert_eq!(e.kind(), "MissingIndex", "{e}");
    assert_eq!(
        e.file(),
        Some(d.path().join("model.qins.index.json").as_path())
    );
}

/// §21.5: symbolic links are followed to the file, but the directory of a path is the link's:
/// a shard that is a link to a file elsewhere belongs to the link's set, and a link elsewhere
/// to a shard looks for the index beside itself. (Symbolic links are not in `conformance/`:
/// git on some systems checks them out as text files.)
#[cfg(unix)]
#[test]
fn symbolic_links_are_followed_and_the_directory_is_the_links() {
    use std::os::unix::fs::symlink;
    let d = tempfile::tempdir().unwrap();
    let (set, elsewhere) = (d.path().join("set"), d.path().join("elsewhere"));
    std::fs::create_dir_all(&set).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    write_set(&set, &[&["a"], &["b"]]);
    // Shard 2 moved elsewhere and linked back, under a relative link.
    let s2 = "model-00002-of-00002.qins";
    std::fs::rename(set.join(s2), elsewhere.join("stored.qins")).unwrap();
    symlink(Path::new("../elsewhere/stored.qins"), set.join(s2)).unwrap();
    for start in ["model.qins.index.json", s2] {
        let files = open_model(&set.join(start)).unwrap();
        let m = files.parse().unwrap();
        m.verify().unwrap();
        assert_eq!(m.tensor_count(), 2, "{start}");
    }
    // The file itself, opened by its own path, is in a directory without the index.
    let e = open_err(&elsewhere.join("stored.qins"));
    assert_eq!(e.kind(), "MissingIndex", "{e}");
    assert_eq!(
        e.file(),
        Some(elsewhere.join("model.qins.index.json").as_path())
    );
    // A link elsewhere to shard 1, even under its own name: the index is looked for there.
    let s1 = "model-00001-of-00002.qins";
    symlink(set.join(s1), elsewhere.join(s1)).unwrap();
    let e = open_err(&elsewhere.join(s1));
    assert_eq!(e.kind(), "MissingIndex", "{e}");
    // A link to the index is an index (its name), and its shards are looked for beside it.
    symlink(
        set.join("model.qins.index.json"),
        elsewhere.join("linked.json"),
    )
    .unwrap();
    let e = open_err(&elsewhere.join("linked.json"));
    assert_eq!(e.kind(), "MissingShard", "{e}");
    // A dangling link in the set is a missing shard.
    std::fs::remove_file(elsewhere.join("stored.qins")).unwrap();
    let e = open_err(&set.join("model.qins.index.json"));
    assert_eq!(e.kind(), "MissingShard", "{e}");
}

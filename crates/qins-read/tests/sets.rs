//! Models stored as sets (spec §21) through `open_model`: what the conformance suite's sets do
//! not cover (the limits of §21.7, single files, I/O), and a set written by `qins-write`.
//! Every error kind of §21.6 has an invalid set in `conformance/sets/`, checked by
//! `crates/qins-conformance`.

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

#[test]
fn more_than_65536_shards_is_a_limit() {
    let shards: Vec<String> = (0..65_537)
        .map(|k| format!(r#"{{"file":"s{k}.qins","header_crc32":"00000000","size":0}}"#))
        .collect();
    let text = format!(
        r#"{{"metadata":{{"format":"qins","format_version":"1.1","set_id":"x","total_size":0}},"shards":[{}],"weight_map":{{}}}}"#,
        shards.join(",")
    );
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

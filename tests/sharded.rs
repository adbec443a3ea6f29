//! Sharded models through the real tools (spec §21), the acceptance check at small
//! scale: a BF16 checkpoint converted once to one file and once to a set of three shards
//! exports to the same bytes (raw tensors bit-identical, encoded tensors decoded from identical
//! codes, tables and scales), whether the export is given the index or a shard; `qins-inspect`
//! takes the index or any shard and `--verify` checks every shard; a damaged or incomplete set
//! is refused naming the shard.
//!
//! The same check at multi-gigabyte scale is a manual run (see the report of issue 18):
//! `qins-synth DIR --dtype bf16 --target-size 3GB`, then these commands with larger sizes.

use std::path::{Path, PathBuf};
use std::process::Command;

use qins_e2e::bin;
use qins_e2e::process::{run, Ran, DEADLINE};

fn tool(name: &str, args: &[&Path]) -> Ran {
    run(Command::new(bin(name)).args(args), DEADLINE)
}

fn ok(name: &str, args: &[&Path]) -> String {
    let r = tool(name, args);
    assert_eq!(r.code(), 0, "{}: {}", r.what, r.err());
    r.out()
}

/// How many shards `qins-convert --dry-run` plans for `max` bytes.
fn planned_shards(src: &Path, max: u64) -> usize {
    let out = ok(
        "qins-convert",
        &[
            src,
            Path::new("model.qins"),
            Path::new("--dry-run"),
            Path::new("--json"),
            Path::new("--max-shard-size"),
            Path::new(&max.to_string()),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("--json prints JSON");
    v["plan"]["shards"].as_array().expect("plan.shards").len()
}

/// The smallest limit for which the model is planned as at most `n` shards (the count only
/// falls as the limit grows).
fn limit_for(src: &Path, n: usize) -> u64 {
    let (mut lo, mut hi) = (1u64, 1u64 << 40);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if planned_shards(src, mid).max(1) <= n {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    assert_eq!(planned_shards(src, lo), n, "no limit gives {n} shards");
    lo
}

fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(tree(&p));
        } else {
            out.push((
                p.strip_prefix(dir).unwrap().to_path_buf(),
                std::fs::read(&p).unwrap(),
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn a_three_shard_set_exports_exactly_as_the_single_file() {
    let d = tempfile::tempdir().unwrap();
    let p = |s: &str| d.path().join(s);
    ok(
        "qins-synth",
        &[
            &p("src"),
            Path::new("--dtype"),
            Path::new("bf16"),
            Path::new("--shards"),
            Path::new("2"),
        ],
    );
    std::fs::create_dir_all(p("one")).unwrap();
    std::fs::create_dir_all(p("set")).unwrap();
    ok(
        "qins-convert",
        &[&p("src"), &p("one/model.qins"), Path::new("--quiet")],
    );
    let max = limit_for(&p("src"), 3).to_string();
    let summary = ok(
        "qins-convert",
        &[
            &p("src"),
            &p("set/model.qins"),
            Path::new("--max-shard-size"),
            Path::new(&max),
            Path::new("--json"),
        ],
    );
    let s: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(s["shards"].as_array().unwrap().len(), 3);
    let names: Vec<String> = tree(&p("set"))
        .into_iter()
        .map(|(n, _)| n.display().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "model-00001-of-00003.qins",
            "model-00002-of-00003.qins",
            "model-00003-of-00003.qins",
            "model.qins.index.json"
        ]
    );
    // Export from the index and from a shard: the same directory as from the single file.
    ok("qins-export", &[&p("one/model.qins"), &p("exp-one")]);
    ok(
        "qins-export",
        &[&p("set/model.qins.index.json"), &p("exp-index")],
    );
    ok(
        "qins-export",
        &[&p("set/model-00002-of-00003.qins"), &p("exp-shard")],
    );
    let want = tree(&p("exp-one"));
    assert!(
        want.iter().any(|(n, _)| n.ends_with("config.json")),
        "assets exported"
    );
    assert!(
        tree(&p("exp-index")) == want,
        "export from the index differs from the single file's"
    );
    assert!(
        tree(&p("exp-shard")) == want,
        "export from a shard differs from the single file's"
    );
    // Encoded tensors: the same codes, signs, scales and tables (not only the same decoded values).
    let set = qins_read::open_model(&p("set/model.qins.index.json")).unwrap();
    let set = set.parse().unwrap();
    let one = qins_read::open(&p("one/model.qins")).unwrap();
    let one = one.parse().unwrap();
    assert_eq!(set.tensor_count(), one.tensor_count());
    for t in one.tensors() {
        let u = set.tensor(t.name()).unwrap();
        assert!(
            (u.codes(), u.signs(), u.row_scales(), u.lut(), u.raw_bytes())
                == (t.codes(), t.signs(), t.row_scales(), t.lut(), t.raw_bytes()),
            "{}",
            t.name()
        );
    }
    // qins-inspect takes the index or any shard; --verify checks every shard.
    for f in ["set/model.qins.index.json", "set/model-00003-of-00003.qins"] {
        let text = ok("qins-inspect", &[&p(f), Path::new("--verify")]);
        assert!(
            text.contains("set of 3 shards") && text.contains("verified, every shard"),
            "{text}"
        );
        let json = ok("qins-inspect", &[&p(f), Path::new("--json")]);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["shards"].as_array().unwrap().len(), 3);
        assert_eq!(v["set"]["tensors"], one.tensor_count());
    }
    // --against compares every tensor of every shard with the source.
    let index = p("set/model.qins.index.json");
    let text = ok("qins-inspect", &[&index, Path::new("--against"), &p("src")]);
    assert!(text.starts_with("set:") && text.contains("SNR"), "{text}");
    let json = ok(
        "qins-inspect",
        &[
            &index,
            Path::new("--against"),
            &p("src"),
            Path::new("--json"),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let compared = v["against"]["encoded"].as_array().unwrap().len()
        + v["against"]["raw"].as_array().unwrap().len();
    assert_eq!(
        compared,
        one.tensor_count(),
        "every tensor of every shard compared"
    );
    assert!(v["against"]["source_only"].as_array().unwrap().is_empty());
}

#[test]
fn a_damaged_or_incomplete_set_is_refused_naming_the_shard() {
    let d = tempfile::tempdir().unwrap();
    let p = |s: &str| d.path().join(s);
    ok(
        "qins-synth",
        &[&p("src"), Path::new("--dtype"), Path::new("bf16")],
    );
    std::fs::create_dir_all(p("set")).unwrap();
    let max = limit_for(&p("src"), 3).to_string();
    ok(
        "qins-convert",
        &[
            &p("src"),
            &p("set/m.qins"),
            Path::new("--max-shard-size"),
            Path::new(&max),
            Path::new("--quiet"),
        ],
    );
    // A byte of shard 3's data flipped: opening succeeds, --verify and the export fail.
    let s3 = p("set/m-00003-of-00003.qins");
    let mut bytes = std::fs::read(&s3).unwrap();
    let at = bytes.len() - 1;
    bytes[at] ^= 0x40;
    std::fs::write(&s3, &bytes).unwrap();
    let index = p("set/m.qins.index.json");
    assert_eq!(tool("qins-inspect", &[&index]).code(), 0);
    let r = tool("qins-inspect", &[&index, Path::new("--verify")]);
    assert_eq!(r.code(), 1);
    r.one_line_error(&["m-00003-of-00003.qins", "checksum"]);
    let r = tool("qins-export", &[&index, &p("exp")]);
    assert_eq!(r.code(), 1);
    r.one_line_error(&["m-00003-of-00003.qins", "nothing exported"]);
    assert!(!p("exp").exists(), "nothing exported");
    // Shard 2 missing: every tool refuses the set, from the index or from a shard.
    std::fs::remove_file(p("set/m-00002-of-00003.qins")).unwrap();
    for (name, args) in [
        ("qins-inspect", vec![index.clone()]),
        ("qins-inspect", vec![p("set/m-00001-of-00003.qins")]),
        (
            "qins-export",
            vec![p("set/m-00003-of-00003.qins"), p("exp")],
        ),
    ] {
        let args: Vec<&Path> = args.iter().map(PathBuf::as_path).collect();
        let r = tool(name, &args);
        assert_eq!(r.code(), 1, "{}", r.what);
        r.one_line_error(&["m-00002-of-00003.qins", "missing"]);
    }
}

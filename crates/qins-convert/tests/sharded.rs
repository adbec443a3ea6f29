//! Sharded output (spec §21): a model larger than `max_shard_size` is written as a set that
//! reads, tensor for tensor and byte for byte, as the single file of the same conversion.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use qins_convert::{convert, plan, ConvertError, ConvertOptions, NoProgress};
use qins_format::set::KEY_SET_ID;
use qins_synth::{SynthConfig, SynthDtype};

/// The smallest limit (in steps of 1 KiB from a third of the single file) that splits the
/// model in `src` into exactly `n` shards.
fn limit_for(src: &Path, out: &Path, n: usize) -> u64 {
    let single = plan(&ConvertOptions::new(src.into(), out.into()))
        .unwrap()
        .output
        .file_size;
    (single / n as u64..single)
        .step_by(1024)
        .find(|&max| {
            let mut o = ConvertOptions::new(src.into(), out.into());
            o.max_shard_size = max;
            plan(&o).unwrap().shards.len() == n
        })
        .unwrap_or_else(|| panic!("no limit splits the model into {n} shards"))
}

fn bf16_model(dir: &Path) {
    let mut cfg = SynthConfig::tiny(SynthDtype::Bf16);
    cfg.shards = 2;
    qins_synth::generate(&cfg, dir).unwrap();
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// Asserts that the model at `set` (an index or shard) holds exactly what the single file
/// `single` holds: the same tensors in the same order, each with the same codes, signs, row
/// scales, table and parameters (encoded) or bytes (raw), and the same assets and metadata
/// (the shard keys aside).
fn assert_same_model(set: &Path, single: &Path) {
    let a = qins_read::open_model(set).unwrap();
    let a = a.parse().unwrap();
    a.verify().unwrap();
    let b = qins_read::open(single).unwrap();
    let b = b.parse().unwrap();
    let names = |it: Vec<&str>| it.join(",");
    assert_eq!(
        names(a.tensors().map(|t| t.name()).collect()),
        names(b.tensors().map(|t| t.name()).collect())
    );
    for (x, y) in a.tensors().zip(b.tensors()) {
        let n = x.name();
        assert_eq!(x.dtype(), y.dtype(), "{n}");
        assert_eq!(x.shape(), y.shape(), "{n}");
        assert_eq!(x.storage(), y.storage(), "{n}");
        assert_eq!(x.raw_bytes(), y.raw_bytes(), "{n}: raw bytes");
        assert_eq!(x.codes(), y.codes(), "{n}: codes");
        assert_eq!(x.signs(), y.signs(), "{n}: signs");
        assert_eq!(x.row_scales(), y.row_scales(), "{n}: row scales");
        assert_eq!(x.lut(), y.lut(), "{n}: table");
        assert_eq!(
            x.params().map(f64::to_bits),
            y.params().map(f64::to_bits),
            "{n}: params"
        );
    }
    assert!(a.assets().eq(b.assets()), "the assets differ");
    let mut meta = a.metadata().clone();
    meta.retain(|k, _| !k.starts_with("qins.set."));
    assert_eq!(&meta, b.metadata());
}

#[test]
fn a_model_larger_than_the_limit_is_a_set_that_reads_as_the_single_file() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    bf16_model(&src);
    let (one, set) = (d.path().join("one"), d.path().join("set"));
    std::fs::create_dir_all(&one).unwrap();
    std::fs::create_dir_all(&set).unwrap();
    let single = convert_with(&src, &one.join("model.qins"), |_| {});
    assert!(single.shards.is_empty() && single.set_id.is_none());
    let max = limit_for(&src, &set.join("model.qins"), 3);
    let s = convert_with(&src, &set.join("model.qins"), |o| o.max_shard_size = max);
    assert_eq!(s.shards.len(), 3);
    assert_eq!(
        PathBuf::from(&s.target),
        set.join("model.qins.index.json"),
        "the summary names the index"
    );
    assert_eq!(
        files_in(&set),
        [
            "model-00001-of-00003.qins",
            "model-00002-of-00003.qins",
            "model-00003-of-00003.qins",
            "model.qins.index.json"
        ],
        "the shards and the index, nothing else (no NAME.qins, no staging directory)"
    );
    let mut total = 0;
    for sh in &s.shards {
        let len = std::fs::metadata(set.join(&sh.file)).unwrap().len();
        assert_eq!(len, sh.output.file_size);
        assert!(len <= max, "{}: {len} bytes > {max}", sh.file);
        total += len;
    }
    assert_eq!(s.output.file_size, total, "the summary counts every shard");
    assert!(s.shards[0].assets && !s.shards[1].assets);
    assert_eq!(s.tensors, single.tensors);
    // The set reads as the single file, opened from the index or from any shard.
    for start in [
        "model.qins.index.json",
        "model-00001-of-00003.qins",
        "model-00003-of-00003.qins",
    ] {
        assert_same_model(&set.join(start), &one.join("model.qins"));
    }
    // Each shard is a complete file any 1.0 reader opens: a fragment of the model.
    for sh in &s.shards {
        let f = qins_read::open(&set.join(&sh.file)).unwrap();
        let q = f.parse().unwrap();
        q.verify().unwrap();
        assert_eq!(q.version(), (1, 1));
        assert_eq!(q.tensor_count(), sh.tensors);
        assert_eq!(q.metadata()[KEY_SET_ID], s.set_id.clone().unwrap());
    }
}

#[test]
fn sharded_output_is_deterministic_and_the_dry_run_is_exact() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    bf16_model(&src);
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let max = limit_for(&src, &a.join("m.qins"), 3);
    let sa = convert_with(&src, &a.join("m.qins"), |o| o.max_shard_size = max);
    // Another thread count and chunk size: the same bytes.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let sb = pool.install(|| {
        convert_with(&src, &b.join("m.qins"), |o| {
            o.max_shard_size = max;
            o.chunk_elements = 1000;
        })
    });
    assert_eq!(files_in(&a), files_in(&b));
    for f in files_in(&a) {
        assert!(
            std::fs::read(a.join(&f)).unwrap() == std::fs::read(b.join(&f)).unwrap(),
            "{f} differs between two conversions"
        );
    }
    assert_eq!(sa.set_id, sb.set_id);
    // The dry run plans exactly what is written.
    let mut o = ConvertOptions::new(src.clone(), a.join("m.qins"));
    o.max_shard_size = max;
    let p = plan(&o).unwrap();
    assert_eq!(p.shards, sa.shards);
    assert_eq!(p.output, sa.output);
    assert_eq!(p.set_id, sa.set_id);
    assert_eq!(p.index.as_deref(), Some("m.qins.index.json"));
    // A limit the model fits under gives one file, whatever else.
    o.max_shard_size = p.output.file_size * 2;
    assert!(plan(&o).unwrap().shards.is_empty());
}

#[test]
fn a_failed_sharded_conversion_leaves_nothing_behind() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let mut cfg = SynthConfig::tiny(SynthDtype::Bf16);
    // In the last layer: the earlier shards are complete when the conversion fails.
    cfg.inject_nan = Some(("model.layers.1.mlp.up_proj.weight".into(), 7));
    qins_synth::generate(&cfg, &src).unwrap();
    let out = d.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut o = ConvertOptions::new(src.clone(), out.join("model.qins"));
    o.max_shard_size = 64 << 10;
    assert!(plan(&o).unwrap().shards.len() > 2);
    let e = convert(&o, &NoProgress).unwrap_err();
    assert!(matches!(e, ConvertError::NonFinite { .. }), "{e:?}");
    assert_eq!(leftovers(&out, &[]), Vec::<PathBuf>::new());
}

#[test]
fn existing_outputs_are_refused_and_force_replaces_the_other_form() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    bf16_model(&src);
    let out = d.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let target = out.join("model.qins");
    let max = limit_for(&src, &target, 2);
    // A single file first (and a copy to compare the sets with).
    convert_with(&src, &target, |_| {});
    std::fs::copy(&target, d.path().join("one.qins")).unwrap();
    // A set of the same name: refused while model.qins exists, even though no name clashes.
    let mut o = ConvertOptions::new(src.clone(), target.clone());
    o.max_shard_size = max;
    let e = convert(&o, &NoProgress).unwrap_err();
    assert!(
        matches!(&e, ConvertError::TargetExists { path } if *path == target),
        "{e:?}"
    );
    // With --force: the set is written and the old single file removed.
    o.overwrite = true;
    convert(&o, &NoProgress).unwrap();
    assert_eq!(
        files_in(&out),
        [
            "model-00001-of-00002.qins",
            "model-00002-of-00002.qins",
            "model.qins.index.json"
        ]
    );
    // Again without --force: the shards exist.
    o.overwrite = false;
    let e = convert(&o, &NoProgress).unwrap_err();
    assert!(matches!(e, ConvertError::TargetExists { .. }), "{e:?}");
    // Into three shards with --force: the two shards of the earlier set go, and so does any
    // file named as a shard of this name; files of other names stay.
    for other in [
        "model-00009-of-00009.qins",
        "other-00001-of-00002.qins",
        "model-1-of-2.qins",
        "model-00001-of-00002.qins.bak",
    ] {
        std::fs::write(out.join(other), b"not ours").unwrap();
    }
    o.overwrite = true;
    o.max_shard_size = limit_for(&src, &target, 3);
    convert(&o, &NoProgress).unwrap();
    assert_eq!(
        files_in(&out),
        [
            "model-00001-of-00002.qins.bak",
            "model-00001-of-00003.qins",
            "model-00002-of-00003.qins",
            "model-00003-of-00003.qins",
            "model-1-of-2.qins",
            "model.qins.index.json",
            "other-00001-of-00002.qins",
        ]
    );
    assert_same_model(
        &out.join("model.qins.index.json"),
        &d.path().join("one.qins"),
    );
    // A single file over the set, with --force: the index and the shards go.
    let mut o = ConvertOptions::new(src.clone(), target.clone());
    o.overwrite = true;
    convert(&o, &NoProgress).unwrap();
    assert_eq!(
        files_in(&out),
        [
            "model-00001-of-00002.qins.bak",
            "model-1-of-2.qins",
            "model.qins",
            "other-00001-of-00002.qins",
        ]
    );
}

//! One negative test per `ConvertError` variant: the message names the file, the tensor and
//! the cause, and nothing is left at the target path (no output, no temporary file).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use qins_convert::{convert, plan, ConvertError, ConvertOptions, NoProgress};
use qins_format::Codec;
use qins_synth::{SynthConfig, SynthDtype};

struct Case {
    _tmp: tempfile::TempDir,
    src: PathBuf,
    out_dir: PathBuf,
    out: PathBuf,
}

fn case() -> Case {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("model");
    let out_dir = tmp.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join("model.qins");
    Case {
        _tmp: tmp,
        src,
        out_dir,
        out,
    }
}

impl Case {
    fn opts(&self) -> ConvertOptions {
        ConvertOptions::new(self.src.clone(), self.out.clone())
    }

    /// Converts, expects an error, checks that the output directory is still empty, and
    /// returns the error with its message.
    fn fails(&self, opts: &ConvertOptions) -> (ConvertError, String) {
        let err = convert(opts, &NoProgress).expect_err("the conversion must fail");
        assert!(
            leftovers(&self.out_dir, &[]).is_empty(),
            "nothing left behind: {:?}",
            leftovers(&self.out_dir, &[])
        );
        let msg = err.to_string();
        (err, msg)
    }

    fn sharded(&self) {
        synth(&self.src, SynthDtype::Bf16, 3, false);
    }

    fn index(&self) -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(self.src.join("model.safetensors.index.json")).unwrap(),
        )
        .unwrap()
    }

    fn set_index(&self, v: &serde_json::Value) {
        std::fs::write(
            self.src.join("model.safetensors.index.json"),
            serde_json::to_vec(v).unwrap(),
        )
        .unwrap();
    }
}

fn has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "{p:?} not in {msg:?}");
    }
}

#[test]
fn missing_directory() {
    let c = case();
    let (e, msg) = c.fails(&c.opts());
    assert!(matches!(e, ConvertError::SourceDir { .. }), "{e:?}");
    has(
        &msg,
        &[
            c.src.to_str().unwrap(),
            "cannot read the model directory",
            "No such file",
        ],
    );
}

#[test]
fn source_is_not_a_directory() {
    let c = case();
    std::fs::write(&c.src, b"x").unwrap();
    let (e, msg) = c.fails(&c.opts());
    assert!(matches!(e, ConvertError::NotADirectory { .. }), "{e:?}");
    has(&msg, &[c.src.to_str().unwrap(), "not a directory"]);
}

#[test]
fn no_safetensors_files() {
    let c = case();
    std::fs::create_dir_all(&c.src).unwrap();
    std::fs::write(c.src.join("config.json"), b"{}").unwrap();
    std::fs::write(c.src.join("pytorch_model.bin"), b"pickle").unwrap();
    let (e, msg) = c.fails(&c.opts());
    assert!(matches!(e, ConvertError::NoWeights { .. }), "{e:?}");
    has(
        &msg,
        &[
            c.src.to_str().unwrap(),
            "no safetensors weights",
            "pytorch_model.bin",
        ],
    );
}

#[test]
fn corrupt_safetensors_header() {
    let c = case();
    small_model(&c.src);
    let p = c.src.join("model.safetensors");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[8] = b'!'; // the JSON header's opening brace
    std::fs::write(&p, bytes).unwrap();
    let (e, msg) = c.fails(&c.opts());
    assert!(matches!(e, ConvertError::BadSafetensors { .. }), "{e:?}");
    has(
        &msg,
        &[p.to_str().unwrap(), "not a valid safetensors file", "JSON"],
    );

    // Too short to hold a header at all, and a length that runs past the file.
    std::fs::write(&p, b"abc").unwrap();
    let (_, msg) = c.fails(&c.opts());
    has(&msg, &["model.safetensors", "header too small"]);
    std::fs::write(&p, 1000u64.to_le_bytes()).unwrap();
    let (_, msg) = c.fails(&c.opts());
    has(&msg, &["model.safetensors", "invalid header length"]);
}

#[test]
fn bad_index() {
    let c = case();
    c.sharded();
    let idx = c.src.join("model.safetensors.index.json");
    std::fs::write(&idx, b"{\"weight_map\": [}").unwrap();
    let (e, msg) = c.fails(&c.opts());
    assert!(matches!(e, ConvertError::BadIndex { .. }), "{e:?}");
    has(&msg, &[idx.to_str().unwrap(), "bad shard index"]);

    let escape = serde_json::json!({"weight_map": {"w": "../outside.safetensors"}});
    c.set_index(&escape);
    let (_, msg) = c.fails(&c.opts());
    has(
        &msg,
        &["bad shard index", "../outside.safetensors", "\"w\""],
    );
}

#[test]
fn shard_listed_but_absent() {
    let c = case();
    c.sharded();
    std::fs::remove_file(c.src.join("model-00002-of-00003.safetensors")).unwrap();
    let (e, msg) = c.fails(&c.opts());
    assert!(matches!(e, ConvertError::ShardMissing { .. }), "{e:?}");
    has(
        &msg,
        &[
            "model.safetensors.index.json",
            "model-00002-of-00003.safetensors",
            "does not exist",
            "tensor",
        ],
    );
}

#[test]
fn tensor_listed_twice_in_the_index() {
    let c = case();
    c.sharded();
    let idx = c.src.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&idx).unwrap();
    let text = text.replacen(
        "\"weight_map\": {",
        "\"weight_map\": {\n    \"model.norm.weight\": \"model-00001-of-00003.safetensors\",",
        1,
    );
    std::fs::write(&idx, text).unwrap();
    let (e, msg) = c.fails(&c.opts());
    assert!(matches!(e, ConvertError::DuplicateTensor { .. }), "{e:?}");
    has(
        &msg,
        &[
            "\"model.norm.weight\"",
            "listed twice",
            "model.safetensors.index.json",
        ],
    );
}

#[test]
fn tensor_in_two_shards() {
    let c = case();
    std::fs::create_dir_all(&c.src).unwrap();
    let w = f32_bytes(&[1.0, 2.0, 3.0, 4.0]);
    write_safetensors(&c.src.join("a.safetensors"), &[("w", "F32", &[2, 2], &w)]);
    write_safetensors(&c.src.join("b.safetensors"), &[("w", "F32", &[2, 2], &w)]);
    let (e, msg) = c.fails(&c.opts());
    assert!(matches!(e, ConvertError::DuplicateTensor { .. }), "{e:?}");
    has(
        &msg,
        &["\"w\"", "a.safetensors", "b.safetensors", "listed twice"],
    );

    // With an index naming both shards.
    let idx = serde_json::json!({"weight_map": {"w": "a.safetensors", "v": "b.safetensors"}});
    write_safetensors(
        &c.src.join("b.safetensors"),
        &[("w", "F32", &[2, 2], &w), ("v", "F32", &[2, 2], &w)],
    );
    std::fs::write(
        c.src.join("model.safetensors.index.json"),
        serde_json::to_vec(&idx).unwrap(),
    )
    .unwrap();
    let (e, msg) = c.fails(&c.opts());
    assert!(matches!(e, ConvertError::DuplicateTensor { .. }), "{e:?}");
    has(&msg, &["\"w\"", "a.safetensors", "b.safetensors"]);
}

#[test]
fn tensor_in_a_shard_but_not_in_the_index() {
    let c = case();
    c.sharded();
    let mut idx = c.index();
    let removed = idx["weight_map"]
        .as_object_mut()
        .unwrap()
        .remove("model.norm.weight")
        .unwrap();
    c.set_index(&idx);
    let (e, msg) = c.fails(&c.opts());
    assert!(matches!(e, ConvertError::UnindexedTensor { .. }), "{e:?}");
    has(
        &msg,
        &[
            removed.as_str().unwrap(),
            "\"model.norm.weight\"",
            "is not listed in",
            "index.json",
        ],
    );
}

#[test]
fn tensor_listed_in_a_shard_that_does_not_hold_it() {
    let c = case();
    c.sharded();
    let mut idx = c.index();
    idx["weight_map"]["no.such.tensor"] = "model-00001-of-00003.safetensors".into();
    c.set_index(&idx);
    let (e, msg) = c.fails(&c.opts());
    assert!(matches!(e, ConvertError::TensorNotInShard { .. }), "{e:?}");
    has(
        &msg,
        &[
            "\"no.such.tensor\"",
            "model-00001-of-00003.safetensors",
            "does not contain it",
        ],
    );

    // A tensor the index places in the wrong shard.
    let mut idx = c.index();
    idx["weight_map"]
        .as_object_mut()
        .unwrap()
        .remove("no.such.tensor");
    idx["weight_map"]["model.norm.weight"] = "model-00001-of-00003.safetensors".into();
    c.set_index(&idx);
    let (e, msg) = c.fails(&c.opts());
    assert!(matches!(e, ConvertError::TensorNotInShard { .. }), "{e:?}");
    has(
        &msg,
        &["\"model.norm.weight\"", "model-00001-of-00003.safetensors"],
    );
}

#[test]
fn tensor_the_format_cannot_hold() {
    let c = case();
    std::fs::create_dir_all(&c.src).unwrap();
    let p = c.src.join("model.safetensors");
    write_safetensors(&p, &[("deep", "F32", &[1; 9], &[0; 4])]);
    let (e, msg) = c.fails(&c.opts());
    assert!(matches!(e, ConvertError::BadTensor { .. }), "{e:?}");
    has(&msg, &[p.to_str().unwrap(), "\"deep\"", "rank 9"]);

    write_safetensors(&p, &[("nul\0name", "F32", &[1], &[0; 4])]);
    let (e, msg) = c.fails(&c.opts());
    assert!(matches!(e, ConvertError::BadTensor { .. }), "{e:?}");
    has(&msg, &["model.safetensors", "NUL"]);
}

#[test]
fn nan_or_infinity_in_a_tensor_to_encode() {
    let c = case();
    let mut cfg = SynthConfig::tiny(SynthDtype::Bf16);
    cfg.shards = 2;
    cfg.inject_nan = Some(("model.layers.1.mlp.up_proj.weight".into(), 4321));
    qins_synth::generate(&cfg, &c.src).unwrap();
    let mut o = c.opts();
    o.chunk_elements = 1000; // the bad element is in a later chunk
                             // Every codec finds it: lloyd-rows (the default) in its row-maxima pass, the others when
                             // gathering statistics.
    for &codec in Codec::ALL {
        let mut o = o.clone();
        o.policy.codec = codec;
        let (e, _) = c.fails(&o);
        assert!(
            matches!(e, ConvertError::NonFinite { index: 4321, .. }),
            "{codec}: {e:?}"
        );
    }
    let (e, msg) = c.fails(&o);
    assert!(
        matches!(e, ConvertError::NonFinite { index: 4321, .. }),
        "{e:?}"
    );
    has(
        &msg,
        &[
            "\"model.layers.1.mlp.up_proj.weight\"",
            "NaN",
            "index 4321",
            ".safetensors",
        ],
    );

    // Raw tensors are copied whatever they hold: excluding it converts.
    o.policy.exclude = vec!["*.up_proj.*".into()];
    convert(&o, &NoProgress).unwrap();

    // Infinity, in F32.
    let c = case();
    std::fs::create_dir_all(&c.src).unwrap();
    write_safetensors(
        &c.src.join("model.safetensors"),
        &[(
            "w",
            "F32",
            &[2, 3],
            &f32_bytes(&[1.0, 2.0, 3.0, 4.0, f32::NEG_INFINITY, f32::NAN]),
        )],
    );
    let (e, msg) = c.fails(&c.opts());
    assert!(
        matches!(e, ConvertError::NonFinite { index: 4, .. }),
        "{e:?}"
    );
    has(&msg, &["\"w\"", "-inf", "index 4"]);
}

/// Tensors are prepared while the one before is written; with faults in two tensors, the error
/// is still the first tensor's in file order, whatever the codec.
#[test]
fn the_first_bad_tensor_is_reported() {
    let c = case();
    std::fs::create_dir_all(&c.src).unwrap();
    let values = |bad: Option<usize>| {
        let mut v: Vec<f32> = (0..64).map(|i| i as f32 - 31.5).collect();
        if let Some(at) = bad {
            v[at] = f32::NAN;
        }
        f32_bytes(&v)
    };
    let bias = f32_bytes(&[0.5; 8]);
    // Raw tensors (rank 1) before and between the encoded ones, so that tensors are prepared
    // ahead while raw ones are copied (two at a time), and a third bad tensor after them: an
    // encoded tensor's error waits for its turn.
    for (first_bad, want_tensor, want_index) in [(Some(9), "a1", 9), (None, "a3", 3)] {
        let (a1, a3, a4) = (values(first_bad), values(Some(3)), values(Some(5)));
        write_safetensors(
            &c.src.join("model.safetensors"),
            &[
                ("a0.bias", "F32", &[8], &bias),
                ("a1", "F32", &[8, 8], &a1),
                ("a2.bias", "F32", &[8], &bias),
                ("a3", "F32", &[8, 8], &a3),
                ("a4", "F32", &[8, 8], &a4),
            ],
        );
        // One thread takes the tensors in turn, two overlap them.
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for &codec in Codec::ALL {
                let mut o = c.opts();
                o.policy.codec = codec;
                let (e, msg) = pool.install(|| c.fails(&o));
                assert!(
                    matches!(&e, ConvertError::NonFinite { index, tensor, .. }
                        if tensor == want_tensor && *index == want_index),
                    "{threads} threads, {codec}: {e:?}"
                );
                has(
                    &msg,
                    &[
                        &format!("\"{want_tensor}\""),
                        &format!("index {want_index}"),
                    ],
                );
            }
        }
    }
}

#[test]
fn unreadable_input() {
    let c = case();
    c.sharded();
    let idx = c.src.join("model.safetensors.index.json");
    std::fs::remove_file(&idx).unwrap();
    // A regular file (to stat) that cannot be read: reading /proc/self/mem at offset 0 fails.
    std::os::unix::fs::symlink("/proc/self/mem", &idx).unwrap();
    let (e, msg) = c.fails(&c.opts());
    assert!(matches!(e, ConvertError::Read { .. }), "{e:?}");
    has(&msg, &[idx.to_str().unwrap(), "cannot read"]);
}

#[test]
fn target_not_writable() {
    let c = case();
    small_model(&c.src);
    let mut o = c.opts();
    o.target = c.out_dir.join("no-such-dir").join("x.qins");
    let (e, msg) = c.fails(&o);
    assert!(matches!(e, ConvertError::TargetNotWritable { .. }), "{e:?}");
    has(&msg, &["no-such-dir/x.qins", "cannot write the target"]);

    let file = c.out_dir.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    o.target = file.join("x.qins");
    let err = convert(&o, &NoProgress).unwrap_err();
    assert!(
        matches!(err, ConvertError::TargetNotWritable { .. }),
        "{err:?}"
    );
    has(&err.to_string(), &["a-file/x.qins"]);
    assert_eq!(leftovers(&c.out_dir, &[]), [file]);
}

#[test]
fn target_is_one_of_the_inputs() {
    let c = case();
    small_model(&c.src);
    for input in ["model.safetensors", "config.json"] {
        let mut o = c.opts();
        o.target = c.src.join(input);
        o.overwrite = true;
        let before = std::fs::read(&o.target).unwrap();
        let err = convert(&o, &NoProgress).unwrap_err();
        assert!(matches!(err, ConvertError::TargetIsInput { .. }), "{err:?}");
        has(
            &err.to_string(),
            &[input, "the target is one of the inputs"],
        );
        assert_eq!(std::fs::read(&o.target).unwrap(), before, "input untouched");
    }
    // A link to an input is the input.
    let link = c.out_dir.join("link.qins");
    std::os::unix::fs::symlink(c.src.join("model.safetensors"), &link).unwrap();
    let mut o = c.opts();
    o.target = link;
    o.overwrite = true;
    assert!(matches!(
        convert(&o, &NoProgress),
        Err(ConvertError::TargetIsInput { .. })
    ));
    let names: Vec<String> = std::fs::read_dir(&c.src)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "no temporary file left in the source: {names:?}"
    );
}

#[test]
fn existing_target_is_refused_unless_overwrite() {
    let c = case();
    small_model(&c.src);
    std::fs::write(&c.out, b"precious").unwrap();
    let err = convert(&c.opts(), &NoProgress).unwrap_err();
    assert!(matches!(err, ConvertError::TargetExists { .. }), "{err:?}");
    has(
        &err.to_string(),
        &[c.out.to_str().unwrap(), "already exists", "--force"],
    );
    assert_eq!(std::fs::read(&c.out).unwrap(), b"precious");
    assert_eq!(leftovers(&c.out_dir, &[]), std::slice::from_ref(&c.out));
    let mut o = c.opts();
    o.overwrite = true;
    convert(&o, &NoProgress).unwrap();
    check_against_source(&c.src, &c.out, &["config.json"]);
}

#[test]
fn bad_glob() {
    let c = case();
    small_model(&c.src);
    let mut o = c.opts();
    o.policy.exclude = vec!["ok*".into(), "model.{a,b".into()];
    let (e, msg) = c.fails(&o);
    assert!(matches!(e, ConvertError::BadGlob { .. }), "{e:?}");
    has(&msg, &["invalid glob", "model.{a,b"]);
    assert!(plan(&o).is_err());
}

#[test]
fn bad_alignment() {
    let c = case();
    small_model(&c.src);
    for a in [0, 32, 100, 4097, 1 << 21] {
        let mut o = c.opts();
        o.alignment = a;
        let (e, msg) = c.fails(&o);
        assert!(
            matches!(e, ConvertError::BadAlignment { alignment } if alignment == a),
            "{e:?}"
        );
        has(&msg, &[&format!("alignment {a}"), "power of two"]);
    }
}

#[test]
fn writer_refuses_a_plan_beyond_the_format_limits() {
    let c = case();
    small_model(&c.src);
    let mut o = c.opts();
    // The policy is recorded in the metadata, which the format caps at 1 MiB (spec §16).
    o.policy.include = (0..40_000)
        .map(|i| format!("no.such.tensor.number.{i}"))
        .collect();
    let (e, msg) = c.fails(&o);
    assert!(matches!(e, ConvertError::Writer { .. }), "{e:?}");
    has(&msg, &[c.out.to_str().unwrap(), "metadata"]);
}

/// The library's messages name the file even when the path is relative.
#[test]
fn messages_keep_relative_paths() {
    let err = plan(&ConvertOptions::new(
        Path::new("no/such/model").into(),
        "x.qins".into(),
    ))
    .unwrap_err();
    has(&err.to_string(), &["no/such/model"]);
}

//! One negative test per `ConvertError` variant: the message names the file, the tensor and
//! the cause, and nothing is left at the target path (no output, no temporary file).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use qins_convert::{convert, plan, ConvertError, ConvertOptions, NoProgress};
use qins_format::Codec;
use qins_source::SourceError;
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
}

fn has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "{p:?} not in {msg:?}");
    }
}

/// The source reader's errors (`qins_source::SourceError`, each with its own negative test in
/// that crate) reach the caller unchanged, wrapped in `ConvertError::Source`, from a conversion
/// and from a dry run, and leave nothing behind.
#[test]
fn source_errors_pass_through() {
    let c = case();
    let (e, msg) = c.fails(&c.opts());
    assert!(
        matches!(e, ConvertError::Source(SourceError::SourceDir { .. })),
        "{e:?}"
    );
    has(
        &msg,
        &[
            c.src.to_str().unwrap(),
            "cannot read the model directory",
            "No such file",
        ],
    );
    let direct = qins_source::HfSource::open(&c.src).unwrap_err().to_string();
    assert_eq!(msg, direct, "the message is the reader's");

    // A module's weight file, cut short: the file is named.
    small_model(&c.src);
    std::fs::write(
        c.src.join("modules.json"),
        br#"[{"path": ""}, {"path": "2_Dense"}]"#,
    )
    .unwrap();
    std::fs::create_dir_all(c.src.join("2_Dense")).unwrap();
    std::fs::write(c.src.join("2_Dense/model.safetensors"), b"abc").unwrap();
    let (e, msg) = c.fails(&c.opts());
    assert!(
        matches!(e, ConvertError::Source(SourceError::BadSafetensors { .. })),
        "{e:?}"
    );
    has(&msg, &["2_Dense/model.safetensors", "header too small"]);
    assert!(matches!(
        plan(&c.opts()),
        Err(ConvertError::Source(SourceError::BadSafetensors { .. }))
    ));
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

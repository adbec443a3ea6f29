//! End to end: synthetic checkpoints converted, read back with qins-read, compared with the
//! source.

mod common;

use std::path::Path;

use common::*;
use qins_convert::{convert, plan, ConvertOptions, Decision, Progress, RawReason};
use qins_format::Codec;
use qins_source::{HfSource, SkipReason};
use qins_synth::SynthDtype;

fn expect_default_policy(c: &Checked, tied: bool) {
    assert!(c.raw.contains(&"model.embed_tokens.weight".to_string()));
    assert!(c.raw.contains(&"model.norm.weight".to_string()));
    assert!(c.raw.contains(&"model.rotary.position_ids".to_string()));
    assert!(c
        .raw
        .contains(&"model.layers.0.self_attn.q_proj.bias".to_string()));
    assert_eq!(c.raw.contains(&"lm_head.weight".to_string()), !tied);
    assert!(c
        .encoded
        .contains(&"model.layers.0.mlp.down_proj.weight".to_string()));
    assert!(c
        .encoded
        .contains(&"model.layers.1.self_attn.o_proj.weight".to_string()));
    // 2 layers × 7 matrices.
    assert_eq!(c.encoded.len(), 14, "{:?}", c.encoded);
}

#[test]
fn f32_single_file_untied() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tiny-f32");
    synth(&src, SynthDtype::F32, 1, false);
    let out = tmp.path().join("out.qins");
    let s = convert_with(&src, &out, |_| {});
    let c = check_against_source(&src, &out, SYNTH_ASSETS);
    expect_default_policy(&c, false);
    // The default codec, lloyd-rows: lossy, and within its floor (checked per tensor).
    assert_eq!(s.codec, "lloyd-rows");
    assert!(c.worst_snr().is_finite() && c.worst_snr() >= LLOYD_SNR_FLOOR);
    assert!(s.output.scale_bytes > 0);
    assert_eq!(s.encoded, 14);
    assert_eq!(s.output.file_size, std::fs::metadata(&out).unwrap().len());
    assert!(s.ratio_vs_f32 > 1.0, "{}", s.render());
}

#[test]
fn bf16_three_shards_tied() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tiny-bf16");
    synth(&src, SynthDtype::Bf16, 3, true);
    let out = tmp.path().join("out.qins");
    convert_with(&src, &out, |_| {});
    let c = check_against_source(&src, &out, SYNTH_ASSETS);
    expect_default_policy(&c, true);
}

#[test]
fn f16_odd_shapes_three_shards_small_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("small-f16-odd");
    let mut cfg = qins_synth::SynthConfig::small(SynthDtype::F16).with_odd_shapes();
    cfg.shards = 3;
    qins_synth::generate(&cfg, &src).unwrap();
    let out = tmp.path().join("out.qins");
    // Chunks of 1000 elements, windows of several chunks: many parts per tensor, none aligned
    // to a row.
    convert_with(&src, &out, |o| o.chunk_elements = 1000);
    let c = check_against_source(&src, &out, SYNTH_ASSETS);
    assert_eq!(c.encoded.len(), 4 * 7);
}

#[test]
fn linear_codec_with_embeddings() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tiny-f32");
    synth(&src, SynthDtype::F32, 1, false);
    let out = tmp.path().join("out.qins");
    convert_with(&src, &out, |o| {
        o.policy.codec = Codec::Linear;
        o.policy.encode_embeddings = true;
    });
    let c = check_against_source(&src, &out, SYNTH_ASSETS);
    assert!(c.encoded.contains(&"model.embed_tokens.weight".to_string()));
    assert!(c.encoded.contains(&"lm_head.weight".to_string()));
    assert_eq!(c.encoded.len(), 16);
}

#[test]
fn include_and_exclude_are_applied_and_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tiny-bf16");
    synth(&src, SynthDtype::Bf16, 2, false);
    let out = tmp.path().join("out.qins");
    let s = convert_with(&src, &out, |o| {
        o.policy.include = vec!["*norm*".into(), "model.rotary.*".into()];
        o.policy.exclude = vec!["model.layers.1.*".into(), "model.norm.*".into()];
    });
    let c = check_against_source(&src, &out, SYNTH_ASSETS);
    assert!(c
        .encoded
        .contains(&"model.layers.0.input_layernorm.weight".to_string()));
    assert!(
        c.raw.contains(&"model.norm.weight".to_string()),
        "exclude wins"
    );
    assert!(c
        .raw
        .contains(&"model.layers.1.mlp.up_proj.weight".to_string()));
    assert!(
        c.raw.contains(&"model.rotary.position_ids".to_string()),
        "I64 cannot be encoded"
    );
    let reasons: Vec<&RawReason> = s.raw_groups.iter().map(|g| &g.reason).collect();
    assert!(reasons.contains(&&RawReason::Excluded {
        glob: "model.layers.1.*".into()
    }));

    let bytes = std::fs::read(&out).unwrap();
    let q = qins_read::Qins::parse(&bytes).unwrap();
    let p: serde_json::Value = serde_json::from_str(&q.metadata()["qins.policy"]).unwrap();
    assert_eq!(
        p["include"],
        serde_json::json!(["*norm*", "model.rotary.*"])
    );
    assert_eq!(
        p["exclude"],
        serde_json::json!(["model.layers.1.*", "model.norm.*"])
    );
    assert_eq!(p["codec"], "lloyd-rows");
    assert_eq!(p["row_scales"], true);
    assert_eq!(q.metadata()["safetensors.metadata"], r#"{"format":"pt"}"#);
}

/// The same source gives the same bytes whatever the threads, the chunking, or the sharding,
/// with every codec (the row maxima, statistics and histograms of `lloyd` and `lloyd-rows` are
/// merged from chunks that split rows).
#[test]
fn output_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let one = tmp.path().join("a").join("model");
    let three = tmp.path().join("b").join("model");
    synth(&one, SynthDtype::Bf16, 1, false);
    synth(&three, SynthDtype::Bf16, 3, false);
    let run = |src: &Path, name: &str, codec: Codec, threads: usize, chunk: usize| {
        let out = tmp.path().join(name);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            convert_with(src, &out, |o| {
                o.chunk_elements = chunk;
                o.overwrite = true;
                o.policy.codec = codec;
                o.policy.encode_embeddings = true;
            })
        });
        std::fs::read(out).unwrap()
    };
    for &codec in Codec::ALL {
        let reference = run(&one, "r.qins", codec, 1, 1 << 20);
        assert_eq!(
            run(&one, "t4.qins", codec, 4, 64),
            reference,
            "{codec}: 4 threads, chunks of 64"
        );
        assert_eq!(
            run(&one, "t3.qins", codec, 3, 8),
            reference,
            "{codec}: 3 threads, chunks of 8"
        );
        assert_eq!(
            run(&three, "s3.qins", codec, 2, 4096),
            reference,
            "{codec}: 3 shards"
        );
    }
}

/// Odd shapes (rows of lengths that no chunk size divides), F16, three shards: `lloyd-rows`
/// gives the same bytes for any chunking and thread count.
#[test]
fn row_scales_do_not_depend_on_the_chunking() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("small-f16-odd");
    let mut cfg = qins_synth::SynthConfig::small(SynthDtype::F16).with_odd_shapes();
    cfg.shards = 3;
    qins_synth::generate(&cfg, &src).unwrap();
    let run = |name: &str, threads: usize, chunk: usize| {
        let out = tmp.path().join(name);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            convert_with(&src, &out, |o| {
                o.chunk_elements = chunk;
                o.overwrite = true;
            })
        });
        std::fs::read(out).unwrap()
    };
    let reference = run("r.qins", 1, 1 << 20);
    for (threads, chunk) in [(2, 1000), (3, 24), (4, 4104)] {
        assert_eq!(
            run("x.qins", threads, chunk),
            reference,
            "{threads} threads, chunks of {chunk}"
        );
    }
    let q = qins_read::Qins::parse(&reference).unwrap();
    assert!(q
        .tensors()
        .filter(|t| t.codec().is_some())
        .all(|t| t.codec() == Some(Codec::LloydRows) && t.row_scales().is_some()));
}

/// Every codec, on F32, BF16 and F16 checkpoints with embeddings encoded: each tensor within
/// its codec's documented bound (see `check_against_source`), `lloyd` and `lloyd-rows` at
/// least 40 dB per tensor, and on these Gaussian weights lloyd-rows ≥ lloyd ≥ log in SNR.
#[test]
fn every_codec_within_its_bound() {
    let tmp = tempfile::tempdir().unwrap();
    for dtype in [SynthDtype::F32, SynthDtype::Bf16, SynthDtype::F16] {
        let src = tmp.path().join(format!("tiny-{dtype}"));
        synth(&src, dtype, 2, false);
        let mut total = Vec::new();
        for &codec in Codec::ALL {
            let out = tmp.path().join(format!("{dtype}-{codec}.qins"));
            let s = convert_with(&src, &out, |o| {
                o.policy.codec = codec;
                o.policy.encode_embeddings = true;
            });
            assert_eq!(s.codec, codec.name());
            let c = check_against_source(&src, &out, SYNTH_ASSETS);
            assert_eq!(c.encoded.len(), 16, "{dtype} {codec}");
            assert_eq!(s.output.scale_bytes > 0, codec.uses_row_scales());
            // bits per weight: codes 8, signs 1, plus the tables and row scales.
            let p = plan(&ConvertOptions::new(src.clone(), out.clone())).unwrap();
            let rows: u64 = p
                .tensors
                .iter()
                .filter(|t| c.encoded.contains(&t.name))
                .map(|t| t.numel() / t.shape.last().unwrap())
                .sum();
            let scales = if codec.uses_row_scales() { 4 * rows } else { 0 };
            assert_eq!(s.output.scale_bytes, scales, "{dtype} {codec}");
            let bits = (s.output.code_bytes
                + s.output.sign_bytes
                + s.output.scale_bytes
                + s.output.lut_bytes) as f64
                * 8.0
                / s.encoded_weights as f64;
            assert_eq!(s.bits_per_encoded_weight, bits);
            total.push((codec, c.total_snr(), c.worst_snr()));
        }
        eprintln!("{dtype}: (codec, total SNR, worst tensor SNR) {total:?}");
        let snr = |c: Codec| total.iter().find(|t| t.0 == c).unwrap().1;
        assert!(
            snr(Codec::LloydRows) >= snr(Codec::Lloyd) && snr(Codec::Lloyd) >= snr(Codec::Log),
            "{dtype}: {total:?}"
        );
        assert!(snr(Codec::LloydRows) >= 46.0, "{dtype}: {total:?}");
    }
}

#[test]
fn plan_predicts_the_exact_file() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tiny");
    synth(&src, SynthDtype::F16, 2, false);
    let out = tmp.path().join("out.qins");
    for align in [64, 4096, 65536] {
        let mut o = ConvertOptions::new(src.clone(), out.clone());
        o.alignment = align;
        o.overwrite = true;
        let p = plan(&o).unwrap();
        assert!(!out.exists() || align != 64, "a plan writes nothing");
        let s = qins_convert::convert(&o, &qins_convert::NoProgress).unwrap();
        assert_eq!(p.output, s.output, "alignment {align}");
        assert_eq!(p.output.file_size, std::fs::metadata(&out).unwrap().len());
        let parts = s.output.header_bytes
            + s.output.lut_bytes
            + s.output.code_bytes
            + s.output.sign_bytes
            + s.output.scale_bytes
            + s.output.raw_bytes
            + s.output.asset_bytes
            + s.output.padding_bytes;
        assert_eq!(parts, s.output.file_size);
        assert!(s.output.scale_bytes > 0, "lloyd-rows stores row scales");
        // Per-tensor stored sizes agree with the reader's view.
        let bytes = std::fs::read(&out).unwrap();
        let q = qins_read::Qins::parse(&bytes).unwrap();
        assert_eq!(q.alignment(), align);
        for (t, tp) in q.tensors().zip(&p.tensors) {
            let lut = if tp.decision.is_encoded() { 1024 } else { 0 };
            assert_eq!(t.stored_bytes() + lut, tp.stored_bytes, "{}", tp.name);
        }
    }
}

#[test]
fn summary_accounts_for_every_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tiny");
    synth(&src, SynthDtype::Bf16, 1, false);
    let out = tmp.path().join("out.qins");
    let s = convert_with(&src, &out, |_| {});
    let len = std::fs::metadata(&out).unwrap().len();
    assert_eq!(s.output.file_size, len);
    let st = std::fs::metadata(src.join("model.safetensors"))
        .unwrap()
        .len();
    let assets: u64 = SYNTH_ASSETS
        .iter()
        .map(|a| std::fs::metadata(src.join(a)).unwrap().len())
        .sum();
    assert_eq!(s.input_bytes, st + assets);
    assert_eq!(s.ratio_vs_source, (st + assets) as f64 / len as f64);
    assert_eq!(
        s.as_bf16_bytes * 2 - s.as_f32_bytes,
        assets + 67 * 8,
        "I64 tensor kept at its size"
    );
    assert_eq!(s.tensors, s.encoded + s.raw);
    assert_eq!(s.raw, s.raw_groups.iter().map(|g| g.tensors).sum::<usize>());
    let text = s.render();
    for needle in [
        "14 encoded",
        "kept raw",
        "ratio:",
        "vs F32",
        "vs BF16",
        "token embedding",
        "KiB",
    ] {
        assert!(text.contains(needle), "{needle:?} in\n{text}");
    }
    let j: serde_json::Value = serde_json::to_value(&s).unwrap();
    assert_eq!(j["output"]["file_size"], len);
}

#[test]
fn asset_rule() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("model");
    synth(&src, SynthDtype::Bf16, 2, false);
    let put = |name: &str, data: &[u8]| {
        let p = src.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    put(
        "1_Pooling/config.json",
        b"{\"pooling_mode_mean_tokens\": true}",
    );
    put("modules.json", b"[]");
    put("vocab.txt", b"[PAD]\n");
    put("merges.txt", b"#version: 0.2\n");
    put("tokenizer.model", b"sentencepiece");
    put(".gitattributes", b"*.bin filter=lfs");
    put(".git/HEAD", b"ref: refs/heads/main");
    put("pytorch_model.bin", b"pickle");
    put("onnx/model.onnx", b"onnx");
    put("consolidated.safetensors", b"not part of the index");
    put("old.qins", b"an earlier output");
    let big = std::fs::File::create(src.join("huge.txt")).unwrap();
    big.set_len(qins_source::MAX_ASSET_BYTES + 1).unwrap();
    drop(big);
    std::os::unix::fs::symlink(src.join("config.json"), src.join("linked.json")).unwrap();

    let s = HfSource::open(&src).unwrap();
    let skipped: Vec<(&str, &SkipReason)> = s
        .skipped()
        .iter()
        .map(|k| (k.name.as_str(), &k.reason))
        .collect();
    assert_eq!(
        skipped,
        [
            (".git/", &SkipReason::Hidden),
            (".gitattributes", &SkipReason::Hidden),
            ("consolidated.safetensors", &SkipReason::UnusedSafetensors),
            ("huge.txt", &SkipReason::TooLarge),
            ("old.qins", &SkipReason::QinsFile),
            ("onnx/model.onnx", &SkipReason::OtherWeightFormat),
            ("pytorch_model.bin", &SkipReason::OtherWeightFormat),
        ]
    );
    let mut assets = SYNTH_ASSETS.to_vec();
    assets.extend([
        "1_Pooling/config.json",
        "linked.json",
        "merges.txt",
        "modules.json",
        "tokenizer.model",
        "vocab.txt",
    ]);
    let out = tmp.path().join("out.qins");
    let sum = convert_with(&src, &out, |_| {});
    check_against_source(&src, &out, &assets);
    assert_eq!(sum.skipped.len(), 7);
    assert!(sum.render().contains("skipped: pytorch_model.bin"));
}

#[test]
fn all_safetensors_files_without_index() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("model");
    std::fs::create_dir_all(&src).unwrap();
    write_safetensors(
        &src.join("a.safetensors"),
        &[(
            "a.weight",
            "F32",
            &[2, 4],
            &f32_bytes(&[1.0, -2.0, 0.0, 4.0, 0.5, 0.25, -8.0, 3.0]),
        )],
    );
    write_safetensors(
        &src.join("b.safetensors"),
        &[
            ("b.scale", "F64", &[2], &[0; 16]),
            ("b.mask", "BOOL", &[3], &[1, 0, 1]),
            ("b.empty", "F32", &[0, 4], &[]),
            ("b.none", "I64", &[0], &[]),
        ],
    );
    let s = HfSource::open(&src).unwrap();
    assert_eq!(
        s.tensors()
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        ["a.weight", "b.empty", "b.mask", "b.none", "b.scale"]
    );
    let out = tmp.path().join("out.qins");
    let sum = convert_with(&src, &out, |_| {});
    let c = check_against_source(&src, &out, &[]);
    assert_eq!(c.encoded, ["a.weight"]);
    let why: Vec<String> = sum.raw_groups.iter().map(|g| g.why.clone()).collect();
    assert_eq!(
        why,
        [
            "dtype BOOL cannot be encoded",
            "dtype F64 cannot be encoded",
            "dtype I64 cannot be encoded",
            "no elements"
        ]
    );
}

#[test]
fn dry_run_lists_every_tensor_with_its_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tiny");
    synth(&src, SynthDtype::Bf16, 1, false);
    let p = plan(&ConvertOptions::new(src.clone(), tmp.path().join("x.qins"))).unwrap();
    assert_eq!(
        p.tensors.len(),
        HfSource::open(&src).unwrap().tensors().len()
    );
    let head = p
        .tensors
        .iter()
        .find(|t| t.name == "lm_head.weight")
        .unwrap();
    assert_eq!(head.decision, Decision::Raw(RawReason::Embedding));
    assert_eq!(head.bits_per_weight, 16.0);
    let q = p
        .tensors
        .iter()
        .find(|t| t.name == "model.layers.0.self_attn.q_proj.weight")
        .unwrap();
    assert!(q.decision.is_encoded());
    // lloyd-rows: a code byte and a sign bit per weight, an f32 per row, and the 1 KiB table.
    let (n, rows) = (q.numel(), q.shape[0]);
    assert_eq!(q.stored_bytes, n + n.div_ceil(8) + 4 * rows + 1024);
    assert_eq!(q.bits_per_weight, q.stored_bytes as f64 * 8.0 / n as f64);
    let text = p.render(Path::new("x.qins"));
    assert!(text.contains("dry run: nothing written"));
    assert!(text.contains("lm_head.weight"));
    assert!(!tmp.path().join("x.qins").exists());
}

/// Rows of zeros and rows far below the others (spec §12.4's erratum case, once an empty
/// histogram): every codec converts them, each tensor within its bound, a row of zeros
/// decodes to zeros and, with `lloyd-rows`, stores the tensor's largest magnitude as scale.
#[test]
fn zero_and_tiny_rows_convert_under_every_codec() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("m");
    std::fs::create_dir_all(&src).unwrap();
    let mut w = vec![0f32; 4 * 8];
    for i in 0..8 {
        w[2 * 8 + i] = (i as f32 - 3.5) * 1e-10;
        w[3 * 8 + i] = (i as f32 - 3.5) * 0.25;
    }
    let tiny: Vec<f32> = vec![0.0, 0.0, 1e-10, -1e-10];
    write_safetensors(
        &src.join("model.safetensors"),
        &[
            ("a.weight", "F32", &[4, 8], &f32_bytes(&w)),
            ("b.weight", "F32", &[2, 2], &f32_bytes(&tiny)),
            ("c.weight", "F32", &[3, 4], &f32_bytes(&[0.0; 12])),
        ],
    );
    for &codec in Codec::ALL {
        let out = tmp.path().join(format!("{codec}.qins"));
        convert_with(&src, &out, |o| {
            o.policy.codec = codec;
        });
        let c = check_against_source(&src, &out, &[]);
        assert_eq!(c.encoded.len(), 3, "{codec}: {:?}", c.encoded);
        let bytes = std::fs::read(&out).unwrap();
        let q = qins_read::Qins::parse(&bytes).unwrap();
        let a = q.tensor("a.weight").unwrap();
        let d = a.to_f32_vec().unwrap();
        assert!(d[..16].iter().all(|v| *v == 0.0), "{codec}");
        // The tiny row survives where the code's range follows it (linear, on one scale for
        // the whole tensor, rounds it to zero: that is within its bound, checked above).
        if codec == Codec::Log || codec.uses_row_scales() {
            assert!(
                d[16..24].iter().all(|v| *v != 0.0),
                "{codec}: {:?}",
                &d[16..24]
            );
        }
        if codec.uses_row_scales() {
            let tiny_max = w[16..24].iter().fold(0f32, |m, v| m.max(v.abs()));
            assert_eq!(a.row_scales().unwrap(), [0.875, 0.875, tiny_max, 0.875]);
            let b = q.tensor("b.weight").unwrap();
            assert_eq!(b.row_scales().unwrap(), [1e-10, 1e-10]);
            assert_eq!(b.to_f32_vec().unwrap(), tiny);
            let c = q.tensor("c.weight").unwrap();
            assert_eq!(c.row_scales().unwrap(), [1.0; 3]);
        }
    }
}

/// Records what a conversion tells its [`Progress`].
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<Event>>);

#[derive(Debug, PartialEq)]
enum Event {
    Begin(usize, u64),
    Advance(u64),
    Done(String),
    End,
}

impl Progress for Recorder {
    fn begin(&self, tensors: usize, bytes: u64) {
        self.0.lock().unwrap().push(Event::Begin(tensors, bytes));
    }
    fn advance(&self, bytes: u64) {
        self.0.lock().unwrap().push(Event::Advance(bytes));
    }
    fn tensor_done(&self, name: &str) {
        self.0.lock().unwrap().push(Event::Done(name.into()));
    }
    fn end(&self) {
        self.0.lock().unwrap().push(Event::End);
    }
}

/// The progress hears of every tensor once, in file order, each after the bytes that complete
/// it, and of every source byte once, whatever the threads and the chunking: the writes run
/// one part behind the encoding, across tensors, and tensors prepared ahead are encoded whole.
#[test]
fn progress_reports_each_tensor_after_its_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("model");
    synth(&src, SynthDtype::F32, 2, false);
    let planned = plan(&ConvertOptions::new(src.clone(), tmp.path().join("p.qins"))).unwrap();
    assert!(planned.tensors.iter().any(|t| !t.decision.is_encoded()));
    let total: u64 = planned.tensors.iter().map(|t| t.source_bytes).sum();
    for (threads, chunk) in [(1, 1 << 20), (1, 64), (2, 64), (2, 1 << 20), (3, 8)] {
        for &codec in Codec::ALL {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut o = ConvertOptions::new(src.clone(), tmp.path().join("x.qins"));
            (o.chunk_elements, o.overwrite, o.policy.codec) = (chunk, true, codec);
            let rec = Recorder::default();
            pool.install(|| convert(&o, &rec)).unwrap();
            let events = rec.0.into_inner().unwrap();
            let case = format!("{threads} threads, chunks of {chunk}, {codec}");
            assert_eq!(
                events.first(),
                Some(&Event::Begin(planned.tensors.len(), total)),
                "{case}"
            );
            assert_eq!(events.last(), Some(&Event::End), "{case}");
            // Bytes advanced before each tensor is done: exactly the tensors up to it.
            let (mut advanced, mut upto, mut done) = (0, 0, 0);
            for e in &events[1..events.len() - 1] {
                match e {
                    Event::Advance(b) => advanced += b,
                    Event::Done(name) => {
                        let t = &planned.tensors[done];
                        assert_eq!(name, &t.name, "{case}: tensor {done}");
                        upto += t.source_bytes;
                        assert_eq!(advanced, upto, "{case}: bytes when {name} is done");
                        done += 1;
                    }
                    other => panic!("{case}: {other:?} in the middle"),
                }
            }
            assert_eq!((done, advanced), (planned.tensors.len(), total), "{case}");
        }
    }
}

/// A sentence-transformers model's module weights (`2_Dense/model.safetensors`) are carried as
/// tensors named `2_Dense/NAME` (spec §18.1): raw by default, like a head, encoded with
/// `--encode-embeddings`; the policy records the modules carried.
#[test]
fn sentence_transformers_module_weights_are_carried() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("st");
    st_model(&src);
    let assets = [
        "1_Pooling/config.json",
        "2_Dense/config.json",
        "config.json",
        "modules.json",
    ];
    let out = tmp.path().join("st.qins");
    let sum = convert_with(&src, &out, |_| {});
    let c = check_against_source(&src, &out, &assets);
    assert_eq!(c.encoded, ["layer.weight"]);
    assert_eq!(
        c.raw,
        ["2_Dense/linear.bias", "2_Dense/linear.weight", "layer.bias"]
    );
    assert!(sum.skipped.is_empty(), "{:?}", sum.skipped);
    let why: Vec<&str> = sum.raw_groups.iter().map(|g| g.why.as_str()).collect();
    assert!(
        why.iter()
            .any(|w| w.starts_with("weights of module 2_Dense, applied to the pooled output")),
        "{why:?}"
    );
    let p = plan(&ConvertOptions::new(src.clone(), out.clone())).unwrap();
    let module_plan = p
        .tensors
        .iter()
        .find(|t| t.name == "2_Dense/linear.weight")
        .unwrap();
    assert_eq!(module_plan.file, "2_Dense/model.safetensors");
    let bytes = std::fs::read(&out).unwrap();
    let q = qins_read::Qins::parse(&bytes).unwrap();
    let policy: serde_json::Value = serde_json::from_str(&q.metadata()["qins.policy"]).unwrap();
    assert_eq!(policy["modules"], serde_json::json!(["2_Dense"]));
    assert!(policy["module_rule"].as_str().unwrap().contains("P/NAME"));

    // --encode-embeddings encodes the module's matrix, within the codec's bound.
    let out = tmp.path().join("st-enc.qins");
    convert_with(&src, &out, |o| o.policy.encode_embeddings = true);
    let c = check_against_source(&src, &out, &assets);
    assert_eq!(c.encoded, ["2_Dense/linear.weight", "layer.weight"]);
}

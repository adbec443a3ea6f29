//! `--against HF_DIR`: synthetic checkpoints converted with every codec and compared with
//! their source, through the library and the binary.

use std::path::Path;
use std::process::{Command, Output};

use qins_convert::{convert, ConvertOptions, ConvertSummary, NoProgress};
use qins_format::Codec;
use qins_inspect::against::{compare, Against, AgainstError, RawMismatch};
use qins_inspect::{inspect_against, Error, Format, Options};
use qins_source::HfSource;
use qins_synth::{generate, SynthConfig, SynthDtype};

/// A tiny synthetic checkpoint in `dir`.
fn synth(dir: &Path, dtype: SynthDtype) {
    let mut cfg = SynthConfig::tiny(dtype);
    cfg.shards = 2;
    generate(&cfg, dir).expect("generate a synthetic checkpoint");
}

/// Converts `src` to `out` with `codec`, embeddings encoded.
fn convert_with(src: &Path, out: &Path, codec: Codec) -> ConvertSummary {
    let mut o = ConvertOptions::new(src.into(), out.into());
    o.policy.codec = codec;
    o.policy.encode_embeddings = true;
    o.overwrite = true;
    convert(&o, &NoProgress).unwrap_or_else(|e| panic!("convert {}: {e}", src.display()))
}

/// Compares the file `out` with the directory `src` through the library.
fn against(out: &Path, src: &Path) -> Result<Against, AgainstError> {
    let bytes = std::fs::read(out).unwrap();
    let q = qins_read::Qins::parse(&bytes).unwrap();
    compare(&q, &HfSource::open(src)?)
}

/// Writes a safetensors file from `(name, dtype, shape, bytes)`.
fn write_safetensors(path: &Path, tensors: &[(&str, &str, &[u64], &[u8])]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let start = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut file = (h.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&h);
    file.extend_from_slice(&data);
    std::fs::write(path, file).unwrap();
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A one-file model: a 4 × 6 matrix of 12 distinct magnitudes and a bias.
fn small_model(dir: &Path, matrix: (&str, &str, &[u64]), bias_name: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let w: Vec<f32> = (0..24).map(|i| (i as f32 - 11.5) / 7.0).collect();
    write_safetensors(
        &dir.join("model.safetensors"),
        &[
            (matrix.0, matrix.1, matrix.2, &f32_bytes(&w)),
            (bias_name, "F32", &[4], &f32_bytes(&[0.5, -0.25, 0.0, 1.0])),
        ],
    );
}

/// The tensor `name` of `src`, as f32, read whole.
fn source_f32(src: &Path, name: &str) -> Vec<f32> {
    let s = HfSource::open(src).unwrap();
    let t = s.tensors().iter().find(|t| t.name == name).unwrap();
    let bytes = s.read(t, 0..t.len).unwrap();
    let mut v = vec![0f32; t.numel() as usize];
    t.dtype.to_f32(&bytes, &mut v).unwrap();
    v
}

/// Flips bits of byte `at` of tensor `name`'s data in its source file.
fn damage(src: &Path, name: &str, at: u64, xor: u8) {
    let s = HfSource::open(src).unwrap();
    let t = s.tensors().iter().find(|t| t.name == name).unwrap().clone();
    let path = s.weight_files()[t.file].path.clone();
    drop(s);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(t.offset + at) as usize] ^= xor;
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn every_codec_against_a_synthetic_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    for dtype in [SynthDtype::F32, SynthDtype::Bf16] {
        let src = tmp.path().join(format!("hf-{dtype}"));
        synth(&src, dtype);
        let mut snr = Vec::new();
        for &codec in Codec::ALL {
            let out = tmp.path().join(format!("{dtype}-{codec}.qins"));
            let summary = convert_with(&src, &out, codec);
            let a = against(&out, &src).unwrap();
            let s = &a.totals;
            assert_eq!(s.encoded_tensors, summary.encoded, "{dtype} {codec}");
            assert_eq!(s.encoded_weights, summary.encoded_weights);
            assert_eq!(s.raw_tensors, summary.raw);
            assert_eq!(s.raw_mismatches, 0);
            assert!(a
                .raw
                .iter()
                .all(|r| r.exact && r.first_difference.is_none()));
            assert!(a.source_only.is_empty());
            // Bits per weight counted from the file, as the converter counts them.
            assert_eq!(s.bits_per_weight, Some(summary.bits_per_encoded_weight));
            for e in &a.encoded {
                let what = format!("{dtype} {codec} {}", e.name);
                assert_eq!(e.encoding, codec.name(), "{what}");
                assert!(!e.exact, "{what}");
                let db = e.snr_db.expect("lossy");
                assert!(db.is_finite() && db > 20.0, "{what}: {db}");
                assert!(e.rel_rmse.is_finite() && e.rel_rmse > 0.0, "{what}");
                let m = e.max_err_rel.unwrap();
                assert!(m.is_finite() && m > 0.0 && m < 0.1, "{what}: {m}");
                assert!((0.0..=1.0).contains(&e.source_zero_share));
                assert!(
                    e.decoded_zeros >= e.source_zeros,
                    "{what}: zeros stay zeros"
                );
                // SNR and relative RMSE say the same thing.
                assert!((db + 20.0 * e.rel_rmse.log10()).abs() < 1e-9, "{what}");
            }
            // Totals from the summed energies.
            let (energy, noise): (f64, f64) = a
                .encoded
                .iter()
                .fold((0.0, 0.0), |(x, y), e| (x + e.energy, y + e.noise));
            assert_eq!(s.snr_db, Some(10.0 * (energy / noise).log10()));
            let worst = a
                .encoded
                .iter()
                .min_by(|x, y| x.snr_db.partial_cmp(&y.snr_db).unwrap())
                .unwrap();
            assert_eq!(s.worst_snr_db, worst.snr_db);
            assert_eq!(s.worst_tensor.as_deref(), Some(worst.name.as_str()));

            // One tensor measured independently, whole.
            let name = "model.layers.1.mlp.down_proj.weight";
            let w = source_f32(&src, name);
            let bytes = std::fs::read(&out).unwrap();
            let q = qins_read::Qins::parse(&bytes).unwrap();
            let d = q.tensor(name).unwrap().to_f32_vec().unwrap();
            let e: f64 = w.iter().map(|&x| f64::from(x).powi(2)).sum();
            let n: f64 = w
                .iter()
                .zip(&d)
                .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
                .sum();
            let zeros = w.iter().filter(|x| **x == 0.0).count() as u64;
            let got = a.encoded.iter().find(|e| e.name == name).unwrap();
            assert!(((got.energy - e) / e).abs() < 1e-12, "{got:?} vs {e}");
            assert!(((got.noise - n) / n).abs() < 1e-12, "{got:?} vs {n}");
            assert_eq!(got.source_zeros, zeros);
            assert_eq!(got.numel, w.len() as u64);
            snr.push((codec, s.snr_db.unwrap()));
        }
        eprintln!("{dtype}: {snr:?}");
        let of = |c: Codec| snr.iter().find(|x| x.0 == c).unwrap().1;
        assert!(
            of(Codec::LloydRows) >= of(Codec::Lloyd) && of(Codec::Lloyd) >= of(Codec::Log),
            "{dtype}: {snr:?}"
        );
    }
}

#[test]
fn numbers_do_not_depend_on_the_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("hf");
    // Larger tensors than `tiny`'s, so that some span several chunks of 65536 elements.
    let mut cfg = SynthConfig::small(SynthDtype::F16);
    cfg.shards = 2;
    generate(&cfg, &src).unwrap();
    let out = tmp.path().join("m.qins");
    convert_with(&src, &out, Codec::LloydRows);
    let run = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| against(&out, &src).unwrap())
    };
    let one = run(1);
    assert!(
        one.encoded.iter().any(|e| e.numel > 1 << 16),
        "a tensor of several chunks"
    );
    assert_eq!(run(3), one);
    assert_eq!(run(4), one);
}

#[test]
fn an_exact_tensor_has_infinite_snr() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("hf");
    small_model(&src, ("w", "F32", &[4, 6]), "b");
    let out = tmp.path().join("m.qins");
    // 12 distinct magnitudes: lloyd gives each its own level.
    convert_with(&src, &out, Codec::Lloyd);
    let a = against(&out, &src).unwrap();
    let e = &a.encoded[0];
    assert_eq!((e.name.as_str(), e.exact, e.snr_db), ("w", true, None));
    assert_eq!((e.rel_rmse, e.max_err_rel), (0.0, Some(0.0)));
    assert_eq!((e.source_zeros, e.decoded_zeros), (0, 0));
    assert!(a.totals.exact && a.totals.snr_db.is_none() && a.totals.worst_snr_db.is_none());
    let j = serde_json::to_value(&a).unwrap();
    assert_eq!(j["encoded"][0]["snr_db"], serde_json::Value::Null);
    assert_eq!(j["encoded"][0]["exact"], true);
}

#[test]
fn raw_mismatches_are_detected_and_reported_after_the_comparison() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("hf");
    synth(&src, SynthDtype::Bf16);
    let out = tmp.path().join("m.qins");
    let bytes = {
        convert(&ConvertOptions::new(src.clone(), out.clone()), &NoProgress).unwrap();
        std::fs::read(&out).unwrap()
    };
    damage(&src, "model.norm.weight", 3, 0x01);
    damage(&src, "model.embed_tokens.weight", 1000, 0x80);
    let a = against(&out, &src).unwrap();
    assert_eq!(a.totals.raw_mismatches, 2);
    assert_eq!(
        a.mismatches(),
        [
            RawMismatch {
                tensor: "model.embed_tokens.weight".into(),
                first_difference: 1000
            },
            RawMismatch {
                tensor: "model.norm.weight".into(),
                first_difference: 3
            }
        ]
    );
    let r = a
        .raw
        .iter()
        .find(|r| r.name == "model.norm.weight")
        .unwrap();
    assert!(!r.exact);

    // The library writes the whole report, then fails naming the tensors.
    let q = qins_read::Qins::parse(&bytes).unwrap();
    let mut text = Vec::new();
    let e = inspect_against(&q, "m.qins", &Options::default(), &src, &mut text).unwrap_err();
    let text = String::from_utf8(text).unwrap();
    assert!(text.starts_with("file:      m.qins\n"), "{text}");
    assert!(
        text.contains("raw tensors: 2 of 14 DIFFER from the source"),
        "{text}"
    );
    assert!(text.contains("model.norm.weight (first difference at byte 3)"));
    let Error::Against(f) = &e else {
        panic!("{e:?}")
    };
    assert!(
        matches!(f.cause, AgainstError::RawMismatch { ref mismatches } if mismatches.len() == 2)
    );
    let msg = e.to_string();
    assert!(
        msg.contains("raw tensor \"model.embed_tokens.weight\" differs from the source at byte 1000 (and 1 more raw tensor)"),
        "{msg}"
    );

    // An encoded tensor whose source changed is not an error: its SNR drops.
    damage(&src, "model.norm.weight", 3, 0x01);
    damage(&src, "model.embed_tokens.weight", 1000, 0x80);
    let before = against(&out, &src).unwrap();
    damage(&src, "model.layers.0.mlp.up_proj.weight", 1, 0x40);
    let after = against(&out, &src).unwrap();
    assert_eq!(after.totals.raw_mismatches, 0);
    let snr = |a: &Against| {
        a.encoded
            .iter()
            .find(|e| e.name == "model.layers.0.mlp.up_proj.weight")
            .unwrap()
            .snr_db
            .unwrap()
    };
    assert!(
        snr(&after) < snr(&before) - 10.0,
        "{} {}",
        snr(&after),
        snr(&before)
    );
}

#[test]
fn a_tensor_missing_or_different_in_the_source_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("hf");
    small_model(&src, ("layer.weight", "F32", &[4, 6]), "layer.bias");
    let out = tmp.path().join("m.qins");
    convert_with(&src, &out, Codec::LloydRows);
    assert!(against(&out, &src).is_ok());

    let other = tmp.path().join("other");
    small_model(&other, ("layer.weight", "F32", &[4, 6]), "layer.bias2");
    let e = against(&out, &other).unwrap_err();
    assert!(
        matches!(e, AgainstError::Missing { ref tensor, .. } if tensor == "layer.bias"),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("\"layer.bias\" is not in the source"),
        "{e}"
    );
    assert!(e.to_string().contains("other"), "{e}");

    let shape = tmp.path().join("shape");
    small_model(&shape, ("layer.weight", "F32", &[6, 4]), "layer.bias");
    let e = against(&out, &shape).unwrap_err();
    assert!(
        matches!(e, AgainstError::Shape { ref tensor, ref file, ref source_shape }
            if tensor == "layer.weight" && file == &[4, 6] && source_shape == &[6, 4]),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("\"layer.weight\" has shape [4, 6]"),
        "{e}"
    );

    let dtype = tmp.path().join("dtype");
    small_model(&dtype, ("layer.weight", "I32", &[4, 6]), "layer.bias");
    let e = against(&out, &dtype).unwrap_err();
    assert!(
        matches!(e, AgainstError::Dtype { ref tensor, ref file, ref source_dtype }
            if tensor == "layer.weight" && file == "F32" && source_dtype == "I32"),
        "{e:?}"
    );
    assert!(e.to_string().contains("is F32 in the file but I32"), "{e}");

    // The source cannot be opened.
    let e = against(&out, &tmp.path().join("nowhere")).unwrap_err();
    assert!(matches!(e, AgainstError::Source(_)), "{e:?}");
    assert!(e.to_string().contains("nowhere"), "{e}");

    // Source tensors that the file lacks are listed, not failed on.
    let more = tmp.path().join("more");
    std::fs::create_dir_all(&more).unwrap();
    let w: Vec<f32> = (0..24).map(|i| (i as f32 - 11.5) / 7.0).collect();
    write_safetensors(
        &more.join("model.safetensors"),
        &[
            ("extra", "F32", &[1], &f32_bytes(&[1.0])),
            (
                "layer.bias",
                "F32",
                &[4],
                &f32_bytes(&[0.5, -0.25, 0.0, 1.0]),
            ),
            ("layer.weight", "F32", &[4, 6], &f32_bytes(&w)),
        ],
    );
    let a = against(&out, &more).unwrap();
    assert_eq!(a.source_only, ["extra"]);
    assert_eq!(a.totals.raw_mismatches, 0);

    // Through inspect_against: nothing is written before such an error.
    let bytes = std::fs::read(&out).unwrap();
    let q = qins_read::Qins::parse(&bytes).unwrap();
    let mut w = Vec::new();
    let e = inspect_against(&q, "m.qins", &Options::default(), &other, &mut w).unwrap_err();
    assert!(w.is_empty());
    assert!(
        e.to_string().starts_with(&format!(
            "against {}: tensor \"layer.bias\"",
            other.display()
        )),
        "{e}"
    );
    let e =
        inspect_against(&q, "m", &Options::default(), Path::new("nowhere"), &mut w).unwrap_err();
    assert!(w.is_empty());
    assert!(
        e.to_string().starts_with("against the source: nowhere"),
        "{e}"
    );
}

#[test]
fn json_document_has_the_against_key_with_stable_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("hf");
    synth(&src, SynthDtype::F32);
    let out = tmp.path().join("m.qins");
    convert(&ConvertOptions::new(src.clone(), out.clone()), &NoProgress).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let q = qins_read::Qins::parse(&bytes).unwrap();
    let opts = Options {
        format: Format::Json,
        verify: true,
        full: false,
    };
    let mut w = Vec::new();
    let a = inspect_against(&q, "m.qins", &opts, &src, &mut w).unwrap();
    let j: serde_json::Value = serde_json::from_slice(&w).expect("one JSON document");
    // The report's keys are all there, and one more.
    let mut plain = Vec::new();
    qins_inspect::inspect(&q, "m.qins", &opts, &mut plain).unwrap();
    let plain: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    let keys = |v: &serde_json::Value| {
        v.as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<String>>()
    };
    let mut want = keys(&plain);
    want.push("against".into());
    want.sort();
    let mut got = keys(&j);
    got.sort();
    assert_eq!(got, want);
    for k in keys(&plain) {
        assert_eq!(j[&k], plain[&k], "{k}");
    }
    let ag = &j["against"];
    let mut top = keys(ag);
    top.sort();
    assert_eq!(top, ["encoded", "raw", "source", "source_only", "totals"]);
    assert_eq!(ag["source"], src.display().to_string());
    let mut enc = keys(&ag["encoded"][0]);
    enc.sort();
    assert_eq!(
        enc,
        [
            "decoded_zero_share",
            "decoded_zeros",
            "encoding",
            "energy",
            "exact",
            "max_err_rel",
            "name",
            "noise",
            "numel",
            "rel_rmse",
            "snr_db",
            "source_zero_share",
            "source_zeros"
        ]
    );
    let mut raw = keys(&ag["raw"][0]);
    raw.sort();
    assert_eq!(raw, ["bytes", "exact", "first_difference", "name"]);
    let mut totals = keys(&ag["totals"]);
    totals.sort();
    assert_eq!(
        totals,
        [
            "bits_per_weight",
            "decoded_zero_share",
            "encoded_tensors",
            "encoded_weights",
            "energy",
            "exact",
            "max_err_rel",
            "noise",
            "raw_mismatches",
            "raw_tensors",
            "rel_rmse",
            "snr_db",
            "source_zero_share",
            "worst_snr_db",
            "worst_tensor"
        ]
    );
    assert_eq!(ag["encoded"][0]["encoding"], "lloyd-rows");
    assert!(ag["totals"]["snr_db"].as_f64().unwrap() > 40.0);
    assert_eq!(ag["raw"][0]["first_difference"], serde_json::Value::Null);
    // It reads back (serde_json's float parsing may differ in the last bit).
    let back: Against = serde_json::from_value(ag.clone()).unwrap();
    assert_eq!((back.raw, back.source_only), (a.raw, a.source_only));
    for (x, y) in back.encoded.iter().zip(&a.encoded) {
        assert_eq!(
            (&x.name, x.numel, x.source_zeros),
            (&y.name, y.numel, y.source_zeros)
        );
        assert!((x.snr_db.unwrap() - y.snr_db.unwrap()).abs() < 1e-9);
    }
}

// ---- the binary ----

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qins-inspect"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn cli_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(&dir.join("hf"), SynthDtype::Bf16);
    convert(
        &ConvertOptions::new(dir.join("hf"), dir.join("m.qins")),
        &NoProgress,
    )
    .unwrap();

    let plain = run(dir, &["m.qins"]);
    let o = run(dir, &["m.qins", "--against", "hf"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.starts_with(&text(&plain.stdout)),
        "the report first, unchanged"
    );
    for needle in [
        "against the source hf (14 encoded, 14 raw tensors compared)",
        "model.layers.0.mlp.up_proj.weight",
        "all encoded (",
        "worst tensor: ",
        "bits per encoded weight",
        "raw tensors: 14 of 14 bit-exact",
    ] {
        assert!(out.contains(needle), "{needle:?} in {out}");
    }
    assert!(o.stderr.is_empty());

    let o = run(dir, &["--verify", "--json", "m.qins", "--against", "hf"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["verified"], true);
    assert_eq!(j["against"]["totals"]["encoded_tensors"], 14);

    // Refused: exit 1, one line naming the file and the cause.
    let o = run(dir, &["m.qins", "--against", "nowhere"]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.starts_with("error: m.qins: against the source: nowhere: "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(o.stdout.is_empty());

    std::fs::create_dir_all(dir.join("small")).unwrap();
    small_model(&dir.join("small"), ("w", "F32", &[4, 6]), "b");
    let o = run(dir, &["m.qins", "--against", "small"]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.starts_with(
            "error: m.qins: against small: tensor \"lm_head.weight\" is not in the source"
        ),
        "{err}"
    );
    assert!(o.stdout.is_empty());

    damage(&dir.join("hf"), "model.norm.weight", 0, 0xff);
    for args in [
        &["m.qins", "--against", "hf"][..],
        &["m.qins", "--against", "hf", "--json"],
    ] {
        let o = run(dir, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = text(&o.stderr);
        assert_eq!(
            err,
            "error: m.qins: against hf: raw tensor \"model.norm.weight\" differs from the source at byte 0\n"
        );
        assert!(!o.stdout.is_empty(), "the comparison is written first");
    }

    // Usage errors.
    for args in [
        &["m.qins", "--against"][..],
        &["m.qins", "--against", "hf", "--layout"],
    ] {
        let o = run(dir, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
        assert!(o.stdout.is_empty());
    }
    let o = run(dir, &["--help"]);
    assert!(text(&o.stdout).contains("--against <HF_DIR>"));
}

#[test]
fn text_view_names_every_encoded_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("hf");
    synth(&src, SynthDtype::F32);
    let out = tmp.path().join("m.qins");
    convert_with(&src, &out, Codec::Log);
    let a = against(&out, &src).unwrap();
    let mut w = Vec::new();
    qins_inspect::write_against_text(&a, &mut w).unwrap();
    let t = String::from_utf8(w).unwrap();
    for e in &a.encoded {
        let line = t
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{} ", e.name)))
            .unwrap_or_else(|| panic!("{} in {t}", e.name));
        assert!(line.contains(" log "), "{line}");
        assert!(
            line.contains(&format!("{:.2}", e.snr_db.unwrap())),
            "{line}"
        );
    }
}

//! Helpers shared by the integration tests: synthetic checkpoints, hand-made safetensors files,
//! and the comparison of a `.qins` file with its source.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use qins_convert::{convert, ConvertOptions, ConvertSummary, NoProgress};
use qins_format::{Codec, Dtype, Storage};
use qins_synth::{generate, SynthConfig, SynthDtype};
use safetensors::SafeTensors;

/// The small files qins-synth writes beside the weights.
pub const SYNTH_ASSETS: &[&str] = &[
    "config.json",
    "generation_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
];

/// Generates a tiny synthetic checkpoint in `dir`.
pub fn synth(dir: &Path, dtype: SynthDtype, shards: usize, tied: bool) -> SynthConfig {
    let mut cfg = SynthConfig::tiny(dtype);
    cfg.shards = shards;
    cfg.tie_word_embeddings = tied;
    generate(&cfg, dir).expect("generate a synthetic checkpoint");
    cfg
}

/// Converts `src` to `out` with `f` applied to the default options.
pub fn convert_with(src: &Path, out: &Path, f: impl FnOnce(&mut ConvertOptions)) -> ConvertSummary {
    let mut o = ConvertOptions::new(src.into(), out.into());
    f(&mut o);
    convert(&o, &NoProgress).unwrap_or_else(|e| panic!("convert {}: {e}", src.display()))
}

/// Writes a safetensors file from `(name, dtype, shape, bytes)`, with a hand-made header (so
/// that tests can make files the safetensors crate's writer refuses).
pub fn write_safetensors(path: &Path, tensors: &[(&str, &str, &[u64], &[u8])]) {
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
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut file = (h.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&h);
    file.extend_from_slice(&data);
    std::fs::write(path, file).unwrap();
}

/// F32 little-endian bytes.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A one-file model with one encodable matrix, one bias and a config, in `dir`.
pub fn small_model(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let w: Vec<f32> = (0..24).map(|i| (i as f32 - 11.5) / 7.0).collect();
    write_safetensors(
        &dir.join("model.safetensors"),
        &[
            ("layer.weight", "F32", &[4, 6], &f32_bytes(&w)),
            (
                "layer.bias",
                "F32",
                &[4],
                &f32_bytes(&[0.5, -0.25, 0.0, 1.0]),
            ),
        ],
    );
    std::fs::write(dir.join("config.json"), b"{\"model_type\":\"test\"}\n").unwrap();
}

/// Every tensor of the source directory's weight files (the shards the index names, else
/// `model.safetensors`, else every top-level `*.safetensors`): name -> (dtype, shape, bytes).
pub fn source_tensors(dir: &Path) -> BTreeMap<String, (Dtype, Vec<u64>, Vec<u8>)> {
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<PathBuf> = if index.exists() {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&index).unwrap()).unwrap();
        let mut shards: Vec<PathBuf> = v["weight_map"]
            .as_object()
            .unwrap()
            .values()
            .map(|s| dir.join(s.as_str().unwrap()))
            .collect();
        shards.sort();
        shards.dedup();
        shards
    } else if dir.join("model.safetensors").exists() {
        vec![dir.join("model.safetensors")]
    } else {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect()
    };
    let mut out = BTreeMap::new();
    for p in files {
        let bytes = std::fs::read(&p).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in st.tensors() {
            let dtype: Dtype = format!("{:?}", view.dtype()).parse().unwrap();
            let shape = view.shape().iter().map(|&d| d as u64).collect();
            assert!(out
                .insert(name.clone(), (dtype, shape, view.data().to_vec()))
                .is_none());
        }
    }
    out
}

fn to_f32(dtype: Dtype, bytes: &[u8]) -> Vec<f32> {
    let mut v = vec![0f32; bytes.len() / (dtype.bits() / 8) as usize];
    dtype.to_f32(bytes, &mut v).unwrap();
    v
}

/// What [`check_against_source`] found.
#[derive(Debug, Default)]
pub struct Checked {
    /// Names of encoded tensors.
    pub encoded: Vec<String>,
    /// Names of raw tensors.
    pub raw: Vec<String>,
    /// The worst relative error seen in an encoded log tensor.
    pub worst_rel: f64,
}

/// Reads `out` back with qins-read and compares it with the source directory `src`:
/// - every source tensor is there once, in name order, with its dtype and shape;
/// - raw tensors are bit-exact;
/// - encoded tensors decode to exactly `sign × LUT[code]`, zeros stay exactly zero, signs are
///   kept, and the error is within the codec's bound;
/// - the assets are exactly the files `assets` of `src`, byte for byte;
/// - the metadata names the writer, the source directory and the policy;
/// - `verify` passes.
pub fn check_against_source(src: &Path, out: &Path, assets: &[&str]) -> Checked {
    let bytes = std::fs::read(out).unwrap();
    let q =
        qins_read::Qins::parse(&bytes).unwrap_or_else(|e| panic!("parse {}: {e}", out.display()));
    q.verify().unwrap();
    let want = source_tensors(src);
    let names: Vec<&str> = q.tensors().map(|t| t.name()).collect();
    let want_names: Vec<&str> = want.keys().map(String::as_str).collect();
    assert_eq!(names, want_names, "tensors in name order");

    let policy: serde_json::Value = serde_json::from_str(&q.metadata()["qins.policy"]).unwrap();
    let codec: Codec = policy["codec"].as_str().unwrap().parse().unwrap();
    let mut checked = Checked::default();
    for t in q.tensors() {
        let (dtype, shape, raw) = &want[t.name()];
        assert_eq!(t.dtype(), *dtype, "{}", t.name());
        assert_eq!(t.shape(), &shape[..], "{}", t.name());
        match t.storage() {
            Storage::Raw => {
                assert_eq!(
                    t.raw_bytes().unwrap(),
                    &raw[..],
                    "raw tensor {} is bit-exact",
                    t.name()
                );
                checked.raw.push(t.name().to_string());
            }
            Storage::Encoded {
                codec: c,
                row_scales,
            } => {
                assert_eq!(c, codec);
                assert!(!row_scales);
                checked.encoded.push(t.name().to_string());
                let x = to_f32(*dtype, raw);
                let decoded = t.to_f32_vec().unwrap();
                let (codes, signs, lut) =
                    (t.codes().unwrap(), t.signs().unwrap(), t.lut().unwrap());
                let nz: Vec<f64> = x
                    .iter()
                    .filter(|v| **v != 0.0)
                    .map(|v| f64::from(v.abs()))
                    .collect();
                let (mn, mx) = nz
                    .iter()
                    .fold((f64::INFINITY, 0f64), |(a, b), &v| (a.min(v), b.max(v)));
                let [p0, p1] = t.params();
                let bound = match codec {
                    Codec::Log => {
                        assert_eq!(p0, mn.ln(), "{} log_min", t.name());
                        assert_eq!(p1, mx.ln(), "{} log_max", t.name());
                        ((p1 - p0) / 254.0 / 2.0).exp() - 1.0 + 4.0 * f64::from(f32::EPSILON)
                    }
                    Codec::Linear => {
                        assert_eq!(p0, mx);
                        mx / 254.0 / 2.0 + mx * 4.0 * f64::from(f32::EPSILON)
                    }
                };
                for (i, (&xi, &di)) in x.iter().zip(&decoded).enumerate() {
                    let m = lut[usize::from(codes[i])];
                    let neg = (signs[i / 8] >> (i % 8)) & 1 == 1;
                    let rule = if neg { -m } else { m };
                    assert_eq!(
                        di.to_bits(),
                        rule.to_bits(),
                        "{}[{i}] = sign × LUT[code]",
                        t.name()
                    );
                    if xi == 0.0 {
                        assert_eq!(di.to_bits(), 0, "{}[{i}]: zero stays +0", t.name());
                        continue;
                    }
                    let err = (f64::from(di) - f64::from(xi)).abs();
                    match codec {
                        Codec::Log => {
                            assert_eq!(
                                di.is_sign_negative(),
                                xi.is_sign_negative(),
                                "{}[{i}] sign",
                                t.name()
                            );
                            let rel = err / f64::from(xi.abs());
                            assert!(
                                rel <= bound,
                                "{}[{i}]: {xi} -> {di}, relative error {rel} > {bound}",
                                t.name()
                            );
                            checked.worst_rel = checked.worst_rel.max(rel);
                        }
                        Codec::Linear => {
                            assert!(
                                err <= bound,
                                "{}[{i}]: {xi} -> {di}, error {err} > {bound}",
                                t.name()
                            )
                        }
                    }
                }
            }
        }
    }

    let got: Vec<(&str, &[u8])> = q.assets().collect();
    let mut want_assets: Vec<&str> = assets.to_vec();
    want_assets.sort();
    assert_eq!(
        got.iter().map(|a| a.0).collect::<Vec<_>>(),
        want_assets,
        "asset names, sorted"
    );
    for (name, data) in got {
        assert_eq!(
            data,
            &std::fs::read(src.join(name)).unwrap()[..],
            "asset {name} byte-identical"
        );
    }

    let md = q.metadata();
    assert!(md["qins.writer"].starts_with("qins-convert "), "{md:?}");
    assert_eq!(
        md["qins.source"],
        src.file_name().unwrap().to_str().unwrap()
    );
    assert!(policy["rules"].is_string() && policy["embedding_patterns"].is_array());
    checked
}

/// The entries of `dir` other than `keep`, for checking that nothing was left behind.
pub fn leftovers(dir: &Path, keep: &[&str]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !keep.iter().any(|k| p.file_name().unwrap() == *k))
        .collect();
    v.sort();
    v
}

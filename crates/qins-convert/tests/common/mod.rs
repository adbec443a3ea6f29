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
    while !h.len().is_multiple_of(8) {
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

/// A sentence-transformers model in `dir` ([`small_model`] at the top): `modules.json` with
/// pooling, a dense projection and normalisation, `1_Pooling/config.json`, and a `2_Dense`
/// module with its config and weights, a 3 × 4 `linear.weight` and a `linear.bias`, in F32.
pub fn st_model(dir: &Path) {
    small_model(dir);
    std::fs::write(
        dir.join("modules.json"),
        br#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
  {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
  {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
  {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"}]"#,
    )
    .unwrap();
    for d in ["1_Pooling", "2_Dense"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        b"{\"pooling_mode_mean_tokens\": true}",
    )
    .unwrap();
    std::fs::write(
        dir.join("2_Dense/config.json"),
        b"{\"in_features\": 4, \"out_features\": 3, \"bias\": true}",
    )
    .unwrap();
    let w: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) / 3.0).collect();
    write_safetensors(
        &dir.join("2_Dense/model.safetensors"),
        &[
            ("linear.weight", "F32", &[3, 4], &f32_bytes(&w)),
            ("linear.bias", "F32", &[3], &f32_bytes(&[0.1, 0.2, 0.3])),
        ],
    );
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
/// `model.safetensors`, else every top-level `*.safetensors`), and of the `model.safetensors`
/// of each module that `modules.json` lists, named `MODULE/NAME` (spec §18.1): name -> (dtype,
/// shape, bytes).
pub fn source_tensors(dir: &Path) -> BTreeMap<String, (Dtype, Vec<u64>, Vec<u8>)> {
    let mut out = top_level_tensors(dir);
    let Ok(modules) = std::fs::read(dir.join("modules.json")) else {
        return out;
    };
    let modules: serde_json::Value = serde_json::from_slice(&modules).unwrap();
    for m in modules.as_array().unwrap() {
        let module = m["path"].as_str().unwrap();
        let file = dir.join(module).join("model.safetensors");
        if module.is_empty() || !file.exists() {
            continue;
        }
        for (name, t) in file_tensors(&file) {
            assert!(out.insert(format!("{module}/{name}"), t).is_none());
        }
    }
    out
}

/// The tensors of one safetensors file: name -> (dtype, shape, bytes).
fn file_tensors(path: &Path) -> BTreeMap<String, (Dtype, Vec<u64>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let dtype: Dtype = format!("{:?}", view.dtype()).parse().unwrap();
            let shape = view.shape().iter().map(|&d| d as u64).collect();
            (name, (dtype, shape, view.data().to_vec()))
        })
        .collect()
}

/// The tensors of the top-level weight files.
fn top_level_tensors(dir: &Path) -> BTreeMap<String, (Dtype, Vec<u64>, Vec<u8>)> {
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
        for (name, t) in file_tensors(&p) {
            assert!(out.insert(name, t).is_none());
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
    /// The SNR in dB of each encoded tensor with some non-zero weight,
    /// `10 log10(Σw² / Σ(w − ŵ)²)` (+inf when exact), in file order.
    pub snr: Vec<(String, f64)>,
    /// Σw² over the encoded tensors.
    pub energy: f64,
    /// Σ(w − ŵ)² over the encoded tensors.
    pub noise: f64,
}

impl Checked {
    /// The lowest SNR of an encoded tensor (+inf when there is none).
    pub fn worst_snr(&self) -> f64 {
        self.snr.iter().fold(f64::INFINITY, |a, s| a.min(s.1))
    }

    /// The SNR of all encoded tensors together, from the summed energies (so weighted by
    /// parameter count and energy), in dB.
    pub fn total_snr(&self) -> f64 {
        10.0 * (self.energy / self.noise).log10()
    }
}

/// The SNR floor every encoded tensor of a synthetic checkpoint must reach with `lloyd` and
/// `lloyd-rows`, in dB (qins-format documents at least 47 dB on its synthetic tensors).
pub const LLOYD_SNR_FLOOR: f64 = 40.0;

/// The slack `qins_format::codec` documents on the relative RMSE of a Lloyd fit beyond the
/// fit's own estimate `sqrt(rel_err)`: `2^-9 + 2^-22`.
pub const LLOYD_RMSE_SLACK: f64 = 1.0 / 512.0 + 1.0 / 4_194_304.0;

/// Checks the documented guarantees of a `lloyd` or `lloyd-rows` tensor: every magnitude `m`
/// (after division by its row scale) has the nearest table entry (no neighbouring code is
/// closer), and the weighted relative RMSE `sqrt(Σ ω (m − LUT[code])² / Σ ω m²)` is at most
/// `sqrt(rel_err) + 2^-9 + 2^-22`, with `ω` 1 for `lloyd` and the row weight of spec §12.4 for
/// `lloyd-rows`.
fn check_lloyd(
    name: &str,
    u: &[f32],
    weights: &[f64],
    codes: &[u8],
    lut: &[f32; 256],
    rel_err: f64,
) {
    let (mut num, mut den) = (0f64, 0f64);
    for (i, (&ui, &c)) in u.iter().zip(codes).enumerate() {
        let m = f64::from(ui.abs());
        let c = usize::from(c);
        let d = (m - f64::from(lut[c])).abs();
        for n in [c.saturating_sub(1), (c + 1).min(255)] {
            assert!(
                d <= (m - f64::from(lut[n])).abs(),
                "{name}[{i}]: magnitude {m} coded {c} ({}), but LUT[{n}] = {} is nearer",
                lut[c],
                lut[n]
            );
        }
        let w = weights[i];
        num += w * d * d;
        den += w * m * m;
    }
    if den > 0.0 {
        let rmse = (num / den).sqrt();
        let bound = rel_err.sqrt() + LLOYD_RMSE_SLACK;
        assert!(
            rmse <= bound,
            "{name}: weighted relative RMSE {rmse} > sqrt(rel_err) + 2^-9 + 2^-22 = {bound}"
        );
    }
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
                assert_eq!(row_scales, codec.uses_row_scales(), "{}", t.name());
                assert_eq!(policy["row_scales"], codec.uses_row_scales());
                checked.encoded.push(t.name().to_string());
                let x = to_f32(*dtype, raw);
                let decoded = t.to_f32_vec().unwrap();
                let (codes, signs, lut) =
                    (t.codes().unwrap(), t.signs().unwrap(), t.lut().unwrap());
                let (row_len, rows) = t.rows();
                // The row scales of spec §12.4: each row's largest magnitude; a row of zeros
                // takes the tensor's largest magnitude S (1 when every element is zero).
                let scales: Option<Vec<f32>> = t.row_scales();
                if let Some(s) = &scales {
                    assert_eq!(s.len() as u64, rows, "{}", t.name());
                    let top = x.iter().fold(0f32, |a, v| a.max(v.abs()));
                    for (r, &sr) in s.iter().enumerate() {
                        let row = &x[r * row_len as usize..(r + 1) * row_len as usize];
                        let mx = row.iter().fold(0f32, |a, v| a.max(v.abs()));
                        let want = match (mx, top) {
                            (0.0, 0.0) => 1.0,
                            (0.0, _) => top,
                            _ => mx,
                        };
                        assert_eq!(
                            sr.to_bits(),
                            want.to_bits(),
                            "{} scale of row {r}",
                            t.name()
                        );
                    }
                }
                let scale_of = |i: usize| scales.as_ref().map(|s| s[i / row_len as usize]);
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
                        // §12.1: both 0 when every element is zero.
                        let (lo, hi) = if nz.is_empty() {
                            (0.0, 0.0)
                        } else {
                            (mn.ln(), mx.ln())
                        };
                        assert_eq!(p0, lo, "{} log_min", t.name());
                        assert_eq!(p1, hi, "{} log_max", t.name());
                        ((p1 - p0) / 254.0 / 2.0).exp() - 1.0 + 4.0 * f64::from(f32::EPSILON)
                    }
                    Codec::Linear => {
                        assert_eq!(p0, mx);
                        mx / 254.0 / 2.0 + mx * 4.0 * f64::from(f32::EPSILON)
                    }
                    Codec::Lloyd | Codec::LloydRows => {
                        // §12.3: max_abs is the largest magnitude to encode (1 after row
                        // scaling, or 0 when every element is zero); rel_err ≥ 0.
                        let want = match (codec, nz.is_empty()) {
                            (_, true) => 0.0,
                            (Codec::Lloyd, false) => mx,
                            _ => 1.0,
                        };
                        assert_eq!(p0, want, "{} max_abs", t.name());
                        assert!(p1 >= 0.0 && p1.is_finite(), "{} rel_err {p1}", t.name());
                        // The values coded (divided by their row scale) and their weights.
                        let u: Vec<f32> = match &scales {
                            None => x.clone(),
                            Some(_) => (0..x.len()).map(|i| x[i] / scale_of(i).unwrap()).collect(),
                        };
                        let weights: Vec<f64> = match &scales {
                            None => vec![1.0; x.len()],
                            Some(s) => {
                                let top = f64::from(s.iter().fold(0f32, |a, &v| a.max(v)));
                                (0..x.len())
                                    .map(|i| {
                                        let q = f64::from(scale_of(i).unwrap()) / top;
                                        (4_294_967_296.0 * (q * q)).round_ties_even().max(1.0)
                                    })
                                    .collect()
                            }
                        };
                        check_lloyd(t.name(), &u, &weights, codes, lut, p1);
                        f64::INFINITY
                    }
                };
                let (mut energy, mut noise) = (0f64, 0f64);
                for (i, (&xi, &di)) in x.iter().zip(&decoded).enumerate() {
                    let m = lut[usize::from(codes[i])];
                    let neg = (signs[i / 8] >> (i % 8)) & 1 == 1;
                    let v = if neg { -m } else { m };
                    let rule = match scale_of(i) {
                        None => v,
                        Some(s) => v * s,
                    };
                    assert_eq!(
                        di.to_bits(),
                        rule.to_bits(),
                        "{}[{i}] = sign × LUT[code] (× row scale)",
                        t.name()
                    );
                    let err = (f64::from(di) - f64::from(xi)).abs();
                    energy += f64::from(xi) * f64::from(xi);
                    noise += err * err;
                    if xi == 0.0 {
                        assert_eq!(di.to_bits(), 0, "{}[{i}]: zero stays +0", t.name());
                        continue;
                    }
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
                        Codec::Lloyd | Codec::LloydRows => {
                            // A magnitude too small for LUT[1] decodes to +0; any other keeps
                            // its sign.
                            if di != 0.0 {
                                assert_eq!(
                                    di.is_sign_negative(),
                                    xi.is_sign_negative(),
                                    "{}[{i}] sign",
                                    t.name()
                                );
                            }
                        }
                    }
                }
                checked.energy += energy;
                checked.noise += noise;
                if energy > 0.0 {
                    let snr = 10.0 * (energy / noise).log10();
                    if matches!(codec, Codec::Lloyd | Codec::LloydRows) {
                        assert!(
                            snr >= LLOYD_SNR_FLOOR,
                            "{}: SNR {snr:.2} dB < {LLOYD_SNR_FLOOR} dB with {codec}",
                            t.name()
                        );
                    }
                    checked.snr.push((t.name().to_string(), snr));
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

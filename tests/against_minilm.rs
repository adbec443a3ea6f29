//! `qins-inspect --against` on the real model, checked against figures computed here from
//! scratch: the real all-MiniLM-L6-v2 converted by `qins-convert`, its `.qins` decoded with
//! `qins-read`, its source read with the `safetensors` crate, and every error figure (energy,
//! noise, SNR, relative RMSE, largest error, zero shares, bits per weight, the worst tensor, the
//! raw tensors' check) recomputed in this file, sequentially in f64, by the definitions of
//! `qins-inspect`'s documentation. Nothing is taken from the report to check the report.
//!
//! MiniLM is `$QINS_MINILM_DIR`, else `.cache/models/all-minilm-l6-v2` at the workspace root;
//! if it is missing the test fails (it never skips) saying to run `tools/fetch-minilm.sh`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use qins_e2e::bin;
use qins_e2e::process::{run, DEADLINE};
use qins_format::Storage;
use safetensors::SafeTensors;
use serde_json::Value;

fn minilm() -> PathBuf {
    let dir = std::env::var_os("QINS_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/models/all-minilm-l6-v2")
        });
    assert!(
        dir.join("model.safetensors").is_file(),
        "the MiniLM test model is missing at {}: run tools/fetch-minilm.sh (or set QINS_MINILM_DIR)",
        dir.display()
    );
    dir
}

/// What this test computes for one encoded tensor.
#[derive(Debug, Default)]
struct Measured {
    numel: u64,
    energy: f64,
    noise: f64,
    max_abs: f64,
    max_err: f64,
    source_zeros: u64,
    decoded_zeros: u64,
    /// Codes, signs and row scales, from the spec's section sizes (§4), plus the 1 KiB table.
    stored_bytes: u64,
}

impl Measured {
    fn snr(&self) -> f64 {
        10.0 * (self.energy / self.noise).log10()
    }
}

/// The figures of every tensor of `qins` against `src`, computed here: encoded tensors by
/// name, and the raw tensors' count after checking that each equals its source, byte for byte.
fn measure(qins: &Path, src: &Path) -> (BTreeMap<String, Measured>, usize) {
    let file = std::fs::read(qins).unwrap();
    let q = qins_read::Qins::parse(&file).unwrap();
    let source = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&source).unwrap();
    let (mut encoded, mut raw) = (BTreeMap::new(), 0);
    for t in q.tensors() {
        let s = st.tensor(t.name()).unwrap();
        let shape: Vec<u64> = s.shape().iter().map(|&d| d as u64).collect();
        assert_eq!(t.shape(), &shape[..], "{}", t.name());
        match t.storage() {
            Storage::Raw => {
                assert_eq!(t.raw_bytes().unwrap(), s.data(), "raw {}", t.name());
                raw += 1;
            }
            Storage::Encoded { row_scales, .. } => {
                assert_eq!(s.dtype(), safetensors::Dtype::F32, "MiniLM is F32");
                let w: Vec<f32> = s
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect();
                let d = t.to_f32_vec().unwrap();
                assert_eq!(w.len(), d.len(), "{}", t.name());
                let n = w.len() as u64;
                let rows = if row_scales {
                    n / shape.last().copied().unwrap_or(1)
                } else {
                    0
                };
                let mut m = Measured {
                    numel: n,
                    stored_bytes: n + n.div_ceil(8) + 4 * rows + 1024,
                    ..Measured::default()
                };
                for (&a, &b) in w.iter().zip(&d) {
                    let (x, y) = (f64::from(a), f64::from(b));
                    m.energy += x * x;
                    m.noise += (x - y) * (x - y);
                    m.max_abs = m.max_abs.max(x.abs());
                    m.max_err = m.max_err.max((x - y).abs());
                    m.source_zeros += u64::from(a == 0.0);
                    m.decoded_zeros += u64::from(b == 0.0);
                }
                encoded.insert(t.name().to_string(), m);
            }
        }
    }
    (encoded, raw)
}

/// Whether `got` is `want` within a relative `tol`: the report sums in another order, and its
/// JSON numbers may come back one unit in the last place off.
#[track_caller]
fn close(what: &str, got: &Value, want: f64, tol: f64) {
    let got = got
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: {got} is not a number"));
    assert!(
        (got - want).abs() <= tol * want.abs(),
        "{what}: the report says {got}, computed here {want}"
    );
}

/// Converts MiniLM with `flags`, runs `qins-inspect --against --json`, and checks every figure
/// of the report against this file's own computation.
fn check(flags: &[&str], encoded_tensors: usize) {
    let src = minilm();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("minilm.qins");
    let r = run(
        Command::new(bin("qins-convert"))
            .arg(&src)
            .arg(&out)
            .arg("--quiet")
            .args(flags),
        DEADLINE,
    );
    assert_eq!(r.code(), 0, "{}", r.err());
    let r = run(
        Command::new(bin("qins-inspect"))
            .arg(&out)
            .arg("--against")
            .arg(&src)
            .arg("--json"),
        DEADLINE,
    );
    assert_eq!(r.code(), 0, "{}", r.err());
    let report: Value = serde_json::from_slice(&r.stdout).unwrap();
    let a = &report["against"];

    let (mine, raw) = measure(&out, &src);
    assert_eq!(mine.len(), encoded_tensors, "{flags:?}");
    // Per tensor.
    let listed = a["encoded"].as_array().unwrap();
    assert_eq!(listed.len(), mine.len());
    for e in listed {
        let name = e["name"].as_str().unwrap();
        let m = &mine[name];
        let what = |k: &str| format!("{flags:?} {name} {k}");
        assert_eq!(e["numel"], m.numel, "{}", what("numel"));
        close(&what("energy"), &e["energy"], m.energy, 1e-9);
        close(&what("noise"), &e["noise"], m.noise, 1e-9);
        close(&what("snr_db"), &e["snr_db"], m.snr(), 1e-9);
        close(
            &what("rel_rmse"),
            &e["rel_rmse"],
            (m.noise / m.energy).sqrt(),
            1e-9,
        );
        close(
            &what("max_err_rel"),
            &e["max_err_rel"],
            m.max_err / m.max_abs,
            1e-12,
        );
        assert_eq!(
            e["source_zeros"],
            m.source_zeros,
            "{}",
            what("source_zeros")
        );
        assert_eq!(
            e["decoded_zeros"],
            m.decoded_zeros,
            "{}",
            what("decoded_zeros")
        );
    }
    // The totals, from the sums computed here.
    let t = &a["totals"];
    let weights: u64 = mine.values().map(|m| m.numel).sum();
    let energy: f64 = mine.values().map(|m| m.energy).sum();
    let noise: f64 = mine.values().map(|m| m.noise).sum();
    let (worst_name, worst) = mine
        .iter()
        .min_by(|x, y| x.1.snr().total_cmp(&y.1.snr()))
        .unwrap();
    let max_err_rel = mine
        .values()
        .map(|m| m.max_err / m.max_abs)
        .fold(0f64, f64::max);
    let zeros = |f: fn(&Measured) -> u64| mine.values().map(f).sum::<u64>() as f64;
    let bits = 8.0 * mine.values().map(|m| m.stored_bytes).sum::<u64>() as f64;
    let what = |k: &str| format!("{flags:?} totals {k}");
    assert_eq!(
        t["encoded_tensors"],
        mine.len(),
        "{}",
        what("encoded_tensors")
    );
    assert_eq!(t["encoded_weights"], weights, "{}", what("encoded_weights"));
    close(&what("energy"), &t["energy"], energy, 1e-9);
    close(&what("noise"), &t["noise"], noise, 1e-9);
    close(
        &what("snr_db"),
        &t["snr_db"],
        10.0 * (energy / noise).log10(),
        1e-9,
    );
    close(
        &what("rel_rmse"),
        &t["rel_rmse"],
        (noise / energy).sqrt(),
        1e-9,
    );
    assert_eq!(t["worst_tensor"], worst_name.as_str(), "{}", what("worst"));
    close(&what("worst_snr_db"), &t["worst_snr_db"], worst.snr(), 1e-9);
    close(&what("max_err_rel"), &t["max_err_rel"], max_err_rel, 1e-12);
    close(
        &what("source_zero_share"),
        &t["source_zero_share"],
        zeros(|m| m.source_zeros) / weights as f64,
        1e-12,
    );
    close(
        &what("decoded_zero_share"),
        &t["decoded_zero_share"],
        zeros(|m| m.decoded_zeros) / weights as f64,
        1e-12,
    );
    close(
        &what("bits_per_weight"),
        &t["bits_per_weight"],
        bits / weights as f64,
        1e-12,
    );
    assert_eq!(t["raw_tensors"], raw, "{}", what("raw_tensors"));
    assert_eq!(t["raw_mismatches"], 0, "{}", what("raw_mismatches"));
    assert_eq!(t["exact"], false);
}

/// The default policy: `lloyd-rows`, embeddings kept raw (39 tensors encoded, 65 raw).
#[test]
fn against_matches_an_independent_computation_lloyd_rows() {
    check(&[], 39);
}

/// `log` without row scales, every matrix encoded, the 11.7-million-element token embedding
/// included (40 tensors).
#[test]
fn against_matches_an_independent_computation_log() {
    check(&["--codec", "log", "--encode-embeddings"], 40);
}

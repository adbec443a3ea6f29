//! A sentence-transformers model through the real tools (spec §18.1): its `2_Dense` module's
//! weights are carried as tensors `2_Dense/linear.weight` and `2_Dense/linear.bias`, listed by
//! `qins-inspect`, compared by `qins-inspect --against`, and written back by `qins-export` to
//! `2_Dense/model.safetensors`, beside every config file, so that the exported directory has
//! the source's layout: bit for bit where a tensor is raw, within the codec's error where it
//! is encoded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use qins_e2e::process::{run, Ran, DEADLINE};
use qins_e2e::{bin, checkpoint};
use qins_format::Dtype;
use safetensors::SafeTensors;
use serde_json::Value;

/// Runs tool `name` with `args`.
fn tool(name: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Ran {
    let mut cmd = Command::new(bin(name));
    for a in args {
        cmd.arg(a);
    }
    run(&mut cmd, DEADLINE)
}

/// Runs a tool that must succeed, and parses its stdout as JSON.
fn json(name: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Value {
    let r = tool(name, args);
    assert_eq!(r.code(), 0, "{}: {}", r.what, r.err());
    serde_json::from_slice(&r.stdout).unwrap_or_else(|e| panic!("{}: {e}: {}", r.what, r.out()))
}

/// The tensors of one safetensors file: name -> (dtype, shape, bytes).
type Tensors = BTreeMap<String, (Dtype, Vec<u64>, Vec<u8>)>;

fn tensors(path: &Path) -> Tensors {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes)
        .unwrap_or_else(|e| panic!("{} does not open with safetensors: {e}", path.display()));
    st.tensors()
        .into_iter()
        .map(|(name, t)| {
            let dtype: Dtype = format!("{:?}", t.dtype()).parse().unwrap();
            let shape = t.shape().iter().map(|&d| d as u64).collect();
            (name, (dtype, shape, t.data().to_vec()))
        })
        .collect()
}

fn as_f32(dtype: Dtype, bytes: &[u8]) -> Vec<f32> {
    let mut v = vec![0f32; bytes.len() * 8 / dtype.bits() as usize];
    dtype.to_f32(bytes, &mut v).unwrap();
    v
}

/// `10 log10(Σw² / Σ(w − ŵ)²)`, +infinity when equal.
fn snr_db(w: &[f32], decoded: &[f32]) -> f64 {
    let (mut signal, mut noise) = (0f64, 0f64);
    for (&a, &b) in w.iter().zip(decoded) {
        signal += f64::from(a) * f64::from(a);
        noise += (f64::from(a) - f64::from(b)).powi(2);
    }
    10.0 * (signal / noise).log10()
}

/// Every file under `dir`, relative, `/`-separated, sorted.
fn files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_str().unwrap().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Compares the exported weight file `got` with the source's `want`: same names, shapes and
/// dtypes (`encoded_dtype` for the tensors in `encoded`); raw tensors bit for bit, encoded ones
/// at 40 dB SNR or better.
fn compare(want: &Tensors, got: &Tensors, encoded: &[&str], encoded_dtype: Dtype) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (name, (dtype, shape, bytes)) in want {
        let (gd, gs, gb) = &got[name];
        assert_eq!(gs, shape, "{name}: shape");
        if encoded.contains(&name.as_str()) {
            assert_eq!(*gd, encoded_dtype, "{name}: dtype");
            let snr = snr_db(&as_f32(*dtype, bytes), &as_f32(*gd, gb));
            assert!(snr >= 40.0, "{name}: SNR {snr:.1} dB");
        } else {
            assert_eq!(gd, dtype, "{name}: dtype");
            assert!(gb == bytes, "{name}: raw bytes differ");
        }
    }
}

/// The names in a JSON array of objects with a `name`.
fn names(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect()
}

#[test]
fn module_weights_are_converted_inspected_exported_and_compared() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("st");
    checkpoint::sentence_transformers(&src);
    let top = tensors(&src.join("model.safetensors"));
    let dense = tensors(&src.join("2_Dense/model.safetensors"));

    // By default the module's matrix stays raw, like a head; --encode-embeddings encodes it.
    for (k, flags) in [&[][..], &["--encode-embeddings"][..]]
        .into_iter()
        .enumerate()
    {
        let encode_dense = !flags.is_empty();
        let q = tmp.path().join(format!("st{k}.qins"));
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&src, &q, &"--json"];
        for f in flags {
            args.push(f);
        }
        let summary = json("qins-convert", &args);
        assert!(summary["skipped"].as_array().unwrap().is_empty());

        // Listed with their module's directory, the policy recording the module.
        let report = json("qins-inspect", &[&q, &"--json"]);
        let listed = names(&report["tensors"]);
        assert!(
            listed.contains(&"2_Dense/linear.weight") && listed.contains(&"2_Dense/linear.bias")
        );
        assert_eq!(listed.len(), top.len() + dense.len());
        let encoding = |name: &str| {
            report["tensors"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["name"] == name)
                .unwrap()["encoding"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(encoding("2_Dense/linear.bias"), "raw");
        assert_eq!(
            encoding("2_Dense/linear.weight") != "raw",
            encode_dense,
            "{flags:?}"
        );
        let policy: Value =
            serde_json::from_str(report["metadata"]["qins.policy"].as_str().unwrap()).unwrap();
        assert_eq!(policy["modules"], serde_json::json!(["2_Dense"]));

        // --against reads the module's weights from the source and compares them too.
        let against = &json("qins-inspect", &[&q, &"--against", &src, &"--json"])["against"];
        assert!(against["source_only"].as_array().unwrap().is_empty());
        let raw = names(&against["raw"]);
        let enc = names(&against["encoded"]);
        assert!(raw.contains(&"2_Dense/linear.bias"));
        assert_eq!(enc.contains(&"2_Dense/linear.weight"), encode_dense);
        assert_eq!(raw.contains(&"2_Dense/linear.weight"), !encode_dense);
        assert!(against["raw"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["exact"] == true));
        for t in against["encoded"].as_array().unwrap() {
            // Small tensors (at most 255 distinct magnitudes) are reproduced exactly.
            assert!(
                t["exact"] == true || t["snr_db"].as_f64().is_some_and(|s| s >= 40.0),
                "{t}"
            );
        }
        if encode_dense {
            let dense_fidelity = against["encoded"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["name"] == "2_Dense/linear.weight")
                .unwrap();
            assert_eq!(dense_fidelity["exact"], false, "a real approximation");
        }
        let encoded: Vec<String> = enc.iter().map(|s| s.to_string()).collect();

        // Exported back to the source's layout (empty directories, 3_Normalize, are not files).
        for (dtype_flag, encoded_dtype) in [("source", Dtype::F32), ("bf16", Dtype::BF16)] {
            let out: PathBuf = tmp.path().join(format!("out{k}-{dtype_flag}"));
            let r = tool(
                "qins-export",
                &[&q, &out, &"--dtype", &dtype_flag, &"--quiet"],
            );
            assert_eq!(r.code(), 0, "{}", r.err());
            let mut want_files: Vec<String> = files(&src);
            want_files.sort();
            assert_eq!(files(&out), want_files);
            for f in &want_files {
                if !f.ends_with(".safetensors") {
                    assert_eq!(
                        std::fs::read(out.join(f)).unwrap(),
                        std::fs::read(src.join(f)).unwrap(),
                        "{f}"
                    );
                }
            }
            let top_encoded: Vec<&str> = encoded
                .iter()
                .filter(|n| !n.starts_with("2_Dense/"))
                .map(String::as_str)
                .collect();
            let dense_encoded: Vec<&str> = encoded
                .iter()
                .filter_map(|n| n.strip_prefix("2_Dense/"))
                .collect();
            compare(
                &top,
                &tensors(&out.join("model.safetensors")),
                &top_encoded,
                encoded_dtype,
            );
            compare(
                &dense,
                &tensors(&out.join("2_Dense/model.safetensors")),
                &dense_encoded,
                encoded_dtype,
            );
        }
    }
}

#[test]
fn a_tensor_named_like_a_modules_is_refused_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("st");
    checkpoint::sentence_transformers(&src);
    checkpoint::write_safetensors(
        &src.join("model.safetensors"),
        &[("2_Dense/linear.weight", "F32", &[1], &[0; 4])],
    );
    let q = tmp.path().join("x.qins");
    let r = tool("qins-convert", &[&src, &q]);
    assert_eq!(r.code(), 1);
    r.one_line_error(&[
        "model.safetensors",
        "\"2_Dense/linear.weight\"",
        "module \"2_Dense\"",
        "rename",
    ]);
    assert!(!q.exists());
}

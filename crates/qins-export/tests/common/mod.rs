//! Helpers shared by the integration tests: Hugging Face directories (read with the
//! `safetensors` crate), `.qins` files built from them with `qins-write`, an independent
//! reference of the decode rule, and the comparison of an exported directory with its source.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use qins_export::{export, ExportOptions, ExportSummary, NoProgress, OutputDtype};
use qins_format::{Codec, Dtype, Storage};
use qins_read::TensorView;
use qins_write::{Asset, Plan, TensorSpec, Writer};
use safetensors::SafeTensors;

/// One tensor of a Hugging Face directory.
#[derive(Clone, Debug, PartialEq)]
pub struct HfTensor {
    /// Dtype.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<u64>,
    /// Little-endian bytes.
    pub bytes: Vec<u8>,
}

/// A Hugging Face model directory read into memory: its tensors (from every `*.safetensors`
/// file at the top) and every other file (relative path with `/`, bytes), the shard index
/// excepted.
#[derive(Clone, Debug, Default)]
pub struct HfDir {
    /// Tensors by name.
    pub tensors: BTreeMap<String, HfTensor>,
    /// Other files by relative path.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Every safetensors file's `__metadata__`, by file name.
    pub metadata: BTreeMap<String, Option<BTreeMap<String, String>>>,
}

/// The registry dtype of a safetensors dtype.
pub fn dtype_of(d: safetensors::Dtype) -> Dtype {
    format!("{d:?}")
        .parse()
        .expect("every safetensors dtype is in the registry")
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            walk(root, &p, out);
        } else {
            let rel = p.strip_prefix(root).unwrap();
            let parts: Vec<_> = rel.iter().map(|c| c.to_str().unwrap()).collect();
            out.push(parts.join("/"));
        }
    }
}

/// Every file under `dir`, as relative paths with `/`, sorted.
pub fn list_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Reads a Hugging Face directory.
pub fn read_hf(dir: &Path) -> HfDir {
    let mut hf = HfDir::default();
    for rel in list_files(dir) {
        let bytes = std::fs::read(dir.join(&rel)).unwrap();
        if !rel.contains('/') && rel.ends_with(".safetensors") {
            let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
            hf.metadata.insert(
                rel.clone(),
                meta.metadata()
                    .as_ref()
                    .map(|m| m.clone().into_iter().collect()),
            );
            let st = SafeTensors::deserialize(&bytes)
                .unwrap_or_else(|e| panic!("{rel} does not open with safetensors: {e}"));
            for (name, t) in st.tensors() {
                let prev = hf.tensors.insert(
                    name.clone(),
                    HfTensor {
                        dtype: dtype_of(t.dtype()),
                        shape: t.shape().iter().map(|&d| d as u64).collect(),
                        bytes: t.data().to_vec(),
                    },
                );
                assert!(prev.is_none(), "tensor {name} appears twice");
            }
        } else if rel != "model.safetensors.index.json" {
            hf.files.insert(rel, bytes);
        }
    }
    hf
}

/// How [`qins_from_hf`] stores a tensor: 2-D float tensors encoded with `Codec::Log`, with row
/// scales when the name contains `mlp` (so that both decode paths are exercised), the rest raw.
pub fn storage_for(name: &str, t: &HfTensor) -> Storage {
    if t.dtype.is_encodable() && t.shape.len() == 2 {
        Storage::Encoded {
            codec: Codec::Log,
            row_scales: name.contains("mlp"),
        }
    } else {
        Storage::Raw
    }
}

/// The row scales [`qins_from_hf`] uses: each row's largest magnitude (1 for an all-zero row).
fn row_scales(values: &[f32], row_len: usize) -> Vec<f32> {
    values
        .chunks(row_len.max(1))
        .map(|r| {
            let m = r.iter().fold(0f32, |a, &v| a.max(v.abs()));
            if m > 0.0 {
                m
            } else {
                1.0
            }
        })
        .collect()
}

/// Builds a `.qins` at `out` from the Hugging Face directory `hf` with `qins-write` (tensors
/// sorted by name, the other files as assets), without `qins-convert`.
pub fn qins_from_hf(hf: &HfDir, out: &Path) {
    let mut plan = Plan::new();
    plan.alignment = 64;
    for (name, t) in &hf.tensors {
        plan.tensors.push(TensorSpec::new(
            name.clone(),
            t.dtype,
            t.shape.clone(),
            storage_for(name, t),
        ));
    }
    for (name, bytes) in &hf.files {
        plan.assets.push(Asset {
            name: name.clone(),
            data: bytes.clone(),
        });
    }
    plan.metadata
        .insert("qins.writer".into(), "qins-export tests".into());
    let mut w = Writer::create(out, plan, true).expect("create .qins");
    for (name, t) in &hf.tensors {
        match storage_for(name, t) {
            Storage::Raw => w.write_raw(&t.bytes).expect("write raw"),
            Storage::Encoded { row_scales: rs, .. } => {
                let n = t.shape.iter().product::<u64>() as usize;
                let mut values = vec![0f32; n];
                t.dtype.to_f32(&t.bytes, &mut values).expect("float tensor");
                let scales = rs.then(|| row_scales(&values, *t.shape.last().unwrap() as usize));
                w.encode_tensor(&values, scales.as_deref()).expect("encode");
            }
        }
    }
    w.finish().expect("finish .qins");
}

/// The decode rule (§11.4), written out element by element from the tensor's sections, apart
/// from the kernels under test.
pub fn reference_f32(t: &TensorView<'_>) -> Vec<f32> {
    let lut = t.lut().expect("encoded");
    let codes = t.codes().unwrap();
    let signs = t.signs().unwrap();
    let scales = t.row_scales();
    let row_len = t.rows().0 as usize;
    (0..codes.len())
        .map(|i| {
            let m = lut[codes[i] as usize];
            let v = if (signs[i / 8] >> (i % 8)) & 1 == 1 {
                -m
            } else {
                m
            };
            match &scales {
                Some(s) => v * s[i / row_len],
                None => v,
            }
        })
        .collect()
}

/// The expected output bytes of an encoded tensor in `dtype`: the rule's f32 values, rounded
/// once to nearest even for BF16 and F16.
pub fn expected_bytes(values: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::BF16 => values
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect(),
        Dtype::F16 => values
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect(),
        d => panic!("encoded tensors are not exported as {d}"),
    }
}

/// Exports `qins` to `out` with `dtype` and `max_shard_size`.
pub fn export_to(
    qins: &Path,
    out: &Path,
    dtype: OutputDtype,
    max_shard_size: u64,
) -> ExportSummary {
    let mut o = ExportOptions::new(qins.into(), out.into());
    o.dtype = dtype;
    o.max_shard_size = max_shard_size;
    export(&o, &NoProgress).unwrap_or_else(|e| panic!("export {}: {e:#}", qins.display()))
}

/// Checks everything the export promises about `out` (exported from `qins_path` with `dtype`)
/// against `source`, the Hugging Face directory the `.qins` was made from:
///
/// - the safetensors files open with the `safetensors` crate, and their tensors have the
///   source's names and shapes, the source dtype for raw tensors and `dtype`'s for encoded ones;
/// - raw tensors are bit-exact; encoded tensors are exactly the decode rule's values, rounded
///   once to the output dtype, and (in the source dtype) close to the source values;
/// - every other file of the source comes back byte for byte, and nothing else is there;
/// - a sharded export has a correct index, in transformers' exact text format.
///
/// Returns the exported directory as read back.
pub fn check_export(
    source: &HfDir,
    qins_path: &Path,
    out: &Path,
    dtype: OutputDtype,
    max_shard_size: u64,
) -> HfDir {
    let file = qins_read::open(qins_path).unwrap();
    let qins = file.parse().unwrap();
    let exported = read_hf(out);

    // Names, shapes, dtypes, values.
    assert_eq!(
        exported.tensors.keys().collect::<Vec<_>>(),
        source.tensors.keys().collect::<Vec<_>>(),
        "tensor names"
    );
    for (name, src) in &source.tensors {
        let got = &exported.tensors[name];
        let t = qins.tensor(name).unwrap();
        assert_eq!(got.shape, src.shape, "{name}: shape");
        match t.storage() {
            Storage::Raw => {
                assert_eq!(got.dtype, src.dtype, "{name}: raw dtype");
                assert!(got.bytes == src.bytes, "{name}: raw bytes differ");
            }
            Storage::Encoded { .. } => {
                let want = dtype.for_encoded(src.dtype);
                assert_eq!(got.dtype, want, "{name}: encoded tensor's dtype");
                let rule = reference_f32(&t);
                assert!(
                    got.bytes == expected_bytes(&rule, want),
                    "{name}: not the decode rule's values in {want}"
                );
                if dtype == OutputDtype::Source {
                    assert_close(name, src, &rule, t.codec(), t.params());
                }
            }
        }
    }

    // Other files: byte for byte, and nothing more.
    assert_eq!(
        exported.files.keys().collect::<Vec<_>>(),
        source.files.keys().collect::<Vec<_>>(),
        "files besides the weights"
    );
    for (name, bytes) in &source.files {
        assert!(&exported.files[name] == bytes, "{name}: asset differs");
    }

    // Weight files and index.
    let names: Vec<String> = qins.tensors().map(|t| t.name().to_string()).collect();
    check_weight_files(&names, out, max_shard_size);
    exported
}

/// The weight files: one `model.safetensors`, or shards named and indexed as transformers does,
/// each at most `max_shard_size` bytes of data unless it holds one larger tensor.
pub fn check_weight_files(names: &[String], out: &Path, max_shard_size: u64) {
    let top: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".safetensors") || n.ends_with(".index.json"))
        .collect();
    let mut shard_files: Vec<&String> =
        top.iter().filter(|n| n.ends_with(".safetensors")).collect();
    shard_files.sort();
    let index_path = out.join("model.safetensors.index.json");
    let hidden: Vec<String> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.') && n.contains(".tmp-"))
        .collect();
    assert!(hidden.is_empty(), "temporary directories left: {hidden:?}");

    let sizes: BTreeMap<String, u64> = shard_files
        .iter()
        .map(|f| {
            let bytes = std::fs::read(out.join(f)).unwrap();
            let st = SafeTensors::deserialize(&bytes).unwrap();
            (
                f.to_string(),
                st.tensors()
                    .iter()
                    .map(|(_, t)| t.data().len() as u64)
                    .sum(),
            )
        })
        .collect();
    if shard_files.len() == 1 {
        assert_eq!(shard_files[0], "model.safetensors");
        assert!(!index_path.exists(), "an index for a single file");
        return;
    }
    let n = shard_files.len();
    for (i, f) in shard_files.iter().enumerate() {
        assert_eq!(**f, format!("model-{:05}-of-{n:05}.safetensors", i + 1));
    }
    let text = std::fs::read_to_string(&index_path).expect("the shard index");
    let index: serde_json::Value = serde_json::from_str(&text).unwrap();
    // transformers writes json.dumps(index, indent=2, sort_keys=True) + "\n".
    assert_eq!(
        text,
        serde_json::to_string_pretty(&index).unwrap() + "\n",
        "index format"
    );
    let obj = index.as_object().unwrap();
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["metadata", "weight_map"]);
    let meta = obj["metadata"].as_object().unwrap();
    assert_eq!(meta.keys().collect::<Vec<_>>(), ["total_size"]);
    let total: u64 = sizes.values().sum();
    assert_eq!(meta["total_size"].as_u64(), Some(total), "total_size");
    let map = obj["weight_map"].as_object().unwrap();
    let mut listed: Vec<&String> = map.keys().collect();
    listed.sort();
    let mut want: Vec<&String> = names.iter().collect();
    want.sort();
    assert_eq!(listed, want, "weight_map keys");
    for (tensor, shard) in map {
        let bytes = std::fs::read(out.join(shard.as_str().unwrap())).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert!(st.tensor(tensor).is_ok(), "{tensor} is not in {shard}");
    }
    for (f, &size) in &sizes {
        let count = map.values().filter(|s| s.as_str() == Some(f)).count();
        assert!(
            size <= max_shard_size || count == 1,
            "{f} holds {size} bytes in {count} tensors, over {max_shard_size}"
        );
    }
    // Tensors fill shards in the file's order: apart from the own shards of oversized
    // tensors, the shard of each next tensor is the same or the next one.
    let mut last = String::new();
    for name in names {
        let s = map[name.as_str()].as_str().unwrap().to_string();
        if map.values().filter(|v| v.as_str() == Some(&s)).count() > 1 {
            assert!(s >= last, "{name} goes back to an earlier shard");
            last = s;
        }
    }
}

/// In its source dtype, a decoded value is within the codec's step of the source value: for
/// the log codec half a step is a factor `exp((log_max − log_min) / 508)`, plus rounding to the
/// source dtype.
/// The decoded values are close to the source: within half a step of the `log` table per
/// weight, or, for the fitted codecs (whose error bound is statistical, §12.3), at least 40 dB
/// SNR over the tensor.
fn assert_close(name: &str, src: &HfTensor, rule: &[f32], codec: Option<Codec>, params: [f64; 2]) {
    let n = rule.len();
    let mut x = vec![0f32; n];
    src.dtype.to_f32(&src.bytes, &mut x).unwrap();
    if codec != Some(Codec::Log) {
        let (mut signal, mut noise) = (0f64, 0f64);
        for (&a, &b) in x.iter().zip(rule) {
            signal += f64::from(a) * f64::from(a);
            noise += (f64::from(a) - f64::from(b)).powi(2);
        }
        let snr = 10.0 * (signal / noise.max(f64::MIN_POSITIVE)).log10();
        assert!(
            snr >= 40.0 || signal == 0.0,
            "{name}: SNR {snr:.2} dB below 40 dB"
        );
        return;
    }
    let half_step = ((params[1] - params[0]) / 508.0).exp() - 1.0;
    let round = match src.dtype {
        Dtype::F32 => f64::from(f32::EPSILON),
        Dtype::BF16 => 1.0 / 256.0,
        _ => 1.0 / 2048.0,
    };
    // Row-scaled tensors are coded after division by the scale: a few more f32 roundings.
    let tol = half_step * 1.0001 + round + 1e-6;
    for i in 0..n {
        let (a, b) = (f64::from(x[i]), f64::from(rule[i]));
        let err = (a - b).abs();
        assert!(
            err <= tol * a.abs() + 6e-8,
            "{name}[{i}]: source {a}, decoded {b}, tolerance {tol}"
        );
    }
}

/// A scratch directory for one test.
pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// `path` inside `dir`.
pub fn p(dir: &tempfile::TempDir, path: &str) -> PathBuf {
    dir.path().join(path)
}

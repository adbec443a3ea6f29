//! sentence-transformers modules (spec §18.1): a tensor named `MODULE/NAME`, where `MODULE` is
//! a module directory of the file's `modules.json` asset, is exported as `NAME` to
//! `MODULE/model.safetensors`; everything else to the top-level weight files.

mod common;

use std::path::Path;

use common::*;
use qins_export::{OutputDtype, DEFAULT_MAX_SHARD_SIZE};
use qins_format::{Codec, Dtype, Storage};
use qins_write::{Asset, Plan, TensorSpec, Writer};
use safetensors::SafeTensors;

const MODULES: &[u8] =
    br#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
  {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
  {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]"#;

/// The values of an `n`-element tensor number `k`.
fn values(k: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7 + k * 13) % 23) as f32 / 11.0 - 1.0)
        .collect()
}

/// A `.qins` at `path` with `tensors` (name, dtype, shape, encoded with `lloyd-rows`?) and the
/// assets `assets`, written with qins-write.
fn write_qins(path: &Path, tensors: &[(&str, Dtype, &[u64], bool)], assets: &[(&str, &[u8])]) {
    let mut plan = Plan::new();
    plan.alignment = 64;
    for &(name, dtype, shape, encoded) in tensors {
        let storage = if encoded {
            Storage::Encoded {
                codec: Codec::LloydRows,
                row_scales: true,
            }
        } else {
            Storage::Raw
        };
        plan.tensors
            .push(TensorSpec::new(name, dtype, shape.to_vec(), storage));
    }
    for &(name, data) in assets {
        plan.assets.push(Asset {
            name: name.into(),
            data: data.to_vec(),
        });
    }
    let mut w = Writer::create(path, plan, true).unwrap();
    for (k, &(_, dtype, shape, encoded)) in tensors.iter().enumerate() {
        let n = shape.iter().product::<u64>() as usize;
        let v = values(k, n);
        if encoded {
            let rows = n / *shape.last().unwrap() as usize;
            let row_len = n / rows;
            let scales: Vec<f32> = v
                .chunks(row_len)
                .map(|r| r.iter().fold(0f32, |a, x| a.max(x.abs())))
                .collect();
            w.encode_tensor(&v, Some(&scales)).unwrap();
        } else {
            w.write_raw(&expected_bytes(&v, dtype)).unwrap();
        }
    }
    w.finish().unwrap();
}

/// The tensors of the safetensors file `path`: name -> (dtype, shape, bytes).
fn tensors_of(path: &Path) -> Vec<(String, Dtype, Vec<u64>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            (
                n,
                dtype_of(t.dtype()),
                t.shape().iter().map(|&d| d as u64).collect(),
                t.data().to_vec(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn names(t: &[(String, Dtype, Vec<u64>, Vec<u8>)]) -> Vec<&str> {
    t.iter().map(|t| t.0.as_str()).collect()
}

#[test]
fn module_tensors_go_back_to_their_directories() {
    let dir = scratch();
    let q = p(&dir, "st.qins");
    write_qins(
        &q,
        &[
            ("2_Dense/linear.bias", Dtype::F32, &[3], false),
            ("2_Dense/linear.weight", Dtype::BF16, &[3, 8], true),
            ("encoder.layer.0.dense.weight", Dtype::F32, &[8, 8], true),
            ("encoder.layer.0.dense.bias", Dtype::F32, &[8], false),
        ],
        &[
            ("1_Pooling/config.json", b"{}"),
            ("2_Dense/config.json", b"{\"in_features\": 8}"),
            // Never restored over the module's own weights.
            ("2_Dense/model.safetensors", b"not weights"),
            ("config.json", b"{}"),
            ("modules.json", MODULES),
        ],
    );
    for (k, (dtype, max)) in [
        (OutputDtype::Source, DEFAULT_MAX_SHARD_SIZE),
        (OutputDtype::F32, DEFAULT_MAX_SHARD_SIZE),
        // Top-level shards of at most 200 and 40 bytes (two of them); the module stays one
        // file, even past the limit (108 bytes in F32 against 40).
        (OutputDtype::Source, 200),
        (OutputDtype::F32, 40),
    ]
    .into_iter()
    .enumerate()
    {
        let out = p(&dir, &format!("out{k}"));
        let s = export_to(&q, &out, dtype, max);
        assert_eq!(s.modules, ["2_Dense"]);
        assert_eq!(s.skipped_assets, ["2_Dense/model.safetensors"]);
        let sharded = max != DEFAULT_MAX_SHARD_SIZE;
        assert_eq!(s.index, sharded);
        let mut want_files = vec![
            "1_Pooling/config.json",
            "2_Dense/config.json",
            "2_Dense/model.safetensors",
            "config.json",
        ];
        if sharded {
            want_files.extend([
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors",
                "model.safetensors.index.json",
            ]);
        } else {
            want_files.push("model.safetensors");
        }
        want_files.push("modules.json");
        assert_eq!(list_files(&out), want_files, "{dtype:?} {max}");

        let file = qins_read::open(&q).unwrap();
        let qins = file.parse().unwrap();
        let module = tensors_of(&out.join("2_Dense/model.safetensors"));
        assert_eq!(names(&module), ["linear.bias", "linear.weight"]);
        for (name, got_dtype, shape, bytes) in &module {
            let t = qins.tensor(&format!("2_Dense/{name}")).unwrap();
            assert_eq!(shape.as_slice(), t.shape());
            let want = match t.storage() {
                Storage::Raw => t.dtype(),
                Storage::Encoded { .. } => dtype.for_encoded(t.dtype()),
            };
            assert_eq!(*got_dtype, want, "{name}");
            let want_bytes = match t.raw_bytes() {
                Some(raw) => raw.to_vec(),
                None => expected_bytes(&reference_f32(&t), want),
            };
            assert!(bytes == &want_bytes, "{name}: bytes differ");
        }
        // The top level holds the other tensors, under their own names.
        let top: Vec<String> = if sharded {
            let index: serde_json::Value = serde_json::from_slice(
                &std::fs::read(out.join("model.safetensors.index.json")).unwrap(),
            )
            .unwrap();
            let total: u64 = (1..=2)
                .flat_map(|i| tensors_of(&out.join(format!("model-0000{i}-of-00002.safetensors"))))
                .map(|t| t.3.len() as u64)
                .sum();
            assert_eq!(index["metadata"]["total_size"], total, "top level only");
            index["weight_map"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect()
        } else {
            names(&tensors_of(&out.join("model.safetensors")))
                .into_iter()
                .map(String::from)
                .collect()
        };
        assert_eq!(
            top,
            ["encoder.layer.0.dense.bias", "encoder.layer.0.dense.weight"]
        );
        let text = s.render();
        assert!(
            text.contains("2_Dense/model.safetensors: 2 tensors"),
            "{text}"
        );
    }
}

/// Older sentence-transformers models keep every weight in a module (`0_Transformer`): the
/// export has no top-level weight file.
#[test]
fn a_model_with_weights_only_in_modules_has_no_top_level_file() {
    let dir = scratch();
    let q = p(&dir, "st.qins");
    write_qins(
        &q,
        &[("0_Transformer/w", Dtype::F32, &[2, 2], false)],
        &[("modules.json", br#"[{"path": "0_Transformer"}]"#)],
    );
    let out = p(&dir, "out");
    let s = export_to(&q, &out, OutputDtype::Source, DEFAULT_MAX_SHARD_SIZE);
    assert_eq!(
        list_files(&out),
        ["0_Transformer/model.safetensors", "modules.json"]
    );
    assert_eq!(s.shards.len(), 1);
    assert_eq!(
        names(&tensors_of(&out.join("0_Transformer/model.safetensors"))),
        ["w"]
    );
}

/// Without `modules.json` there are no modules: a name with a slash is an ordinary top-level
/// tensor, as before; likewise a name under a directory that `modules.json` does not list.
#[test]
fn without_a_module_a_slash_is_just_a_character() {
    let dir = scratch();
    for (assets, want) in [
        (&[][..], "model.safetensors"),
        (
            &[("modules.json", &br#"[{"path": "1_Pooling"}]"#[..])][..],
            "model.safetensors",
        ),
    ] {
        let q = p(&dir, "x.qins");
        write_qins(
            &q,
            &[("2_Dense/linear.weight", Dtype::F32, &[2], false)],
            assets,
        );
        let out = p(&dir, "out");
        let _ = std::fs::remove_dir_all(&out);
        let s = export_to(&q, &out, OutputDtype::Source, DEFAULT_MAX_SHARD_SIZE);
        assert!(s.modules.is_empty());
        assert_eq!(
            names(&tensors_of(&out.join(want))),
            ["2_Dense/linear.weight"]
        );
        assert!(!out.join("2_Dense").exists());
    }
}

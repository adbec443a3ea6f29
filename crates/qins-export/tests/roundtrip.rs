//! Round trips Hugging Face directory -> .qins (built with qins-write) -> Hugging Face
//! directory: every dtype, sharded and not, every output dtype, odd tensors and nested assets,
//! the safetensors layout, determinism, and replacing a target.

mod common;

use std::collections::BTreeMap;

use common::*;
use qins_export::{export, ExportOptions, NoProgress, OutputDtype, DEFAULT_MAX_SHARD_SIZE};
use qins_format::{Codec, Dtype, Storage};
use qins_synth::{generate, SynthConfig, SynthDtype};
use qins_write::{Asset, Plan, TensorSpec, Writer};
use safetensors::SafeTensors;

/// A tiny synthetic checkpoint in `dir/hf`, read back, and its `.qins` at `dir/model.qins`.
fn synth_qins(dir: &tempfile::TempDir, dtype: SynthDtype, shards: usize) -> HfDir {
    let mut cfg = SynthConfig::tiny(dtype);
    cfg.shards = shards;
    generate(&cfg, &p(dir, "hf")).unwrap();
    let hf = read_hf(&p(dir, "hf"));
    qins_from_hf(&hf, &p(dir, "model.qins"));
    hf
}

#[test]
fn every_source_dtype_round_trips_to_one_file() {
    for dtype in SynthDtype::ALL {
        let dir = scratch();
        let hf = synth_qins(&dir, dtype, 1);
        let s = export_to(
            &p(&dir, "model.qins"),
            &p(&dir, "out"),
            OutputDtype::Source,
            DEFAULT_MAX_SHARD_SIZE,
        );
        let out = check_export(
            &hf,
            &p(&dir, "model.qins"),
            &p(&dir, "out"),
            OutputDtype::Source,
            DEFAULT_MAX_SHARD_SIZE,
        );
        assert_eq!(s.shards.len(), 1);
        assert!(!s.index);
        assert!(s.encoded_tensors > 0 && s.raw_tensors > 0, "{s:?}");
        assert_eq!(s.tensors, hf.tensors.len());
        assert_eq!(s.assets, hf.files.len());
        assert_eq!(
            s.total_size,
            out.tensors
                .values()
                .map(|t| t.bytes.len() as u64)
                .sum::<u64>()
        );
        // Source dtypes: the export has the source's size exactly.
        assert_eq!(
            s.total_size,
            hf.tensors
                .values()
                .map(|t| t.bytes.len() as u64)
                .sum::<u64>()
        );
        let on_disk: u64 = list_files(&p(&dir, "out"))
            .iter()
            .map(|f| std::fs::metadata(p(&dir, "out").join(f)).unwrap().len())
            .sum();
        assert_eq!(s.bytes_written, on_disk, "bytes_written counts the files");
        assert_eq!(
            out.metadata["model.safetensors"],
            Some(BTreeMap::from([("format".to_string(), "pt".to_string())]))
        );
    }
}

#[test]
fn sharded_exports_split_and_index_like_transformers() {
    for dtype in SynthDtype::ALL {
        let dir = scratch();
        let hf = synth_qins(&dir, dtype, 3);
        for (k, max) in [100_000u64, 30_000, 1].into_iter().enumerate() {
            let out = p(&dir, &format!("out{k}"));
            let s = export_to(&p(&dir, "model.qins"), &out, OutputDtype::Source, max);
            assert!(s.shards.len() > 1 && s.index, "{dtype}: max {max}: {s:?}");
            check_export(&hf, &p(&dir, "model.qins"), &out, OutputDtype::Source, max);
            // The split is Hugging Face's, over the file's tensor order.
            let file = qins_read::open(&p(&dir, "model.qins")).unwrap();
            let q = file.parse().unwrap();
            let sizes: Vec<u64> = q.tensors().map(|t| t.source_bytes()).collect();
            let (shard_of, n) = qins_export::split_into_shards(&sizes, max);
            assert_eq!(n, s.shards.len());
            let index: serde_json::Value = serde_json::from_slice(
                &std::fs::read(out.join("model.safetensors.index.json")).unwrap(),
            )
            .unwrap();
            for (t, s) in q.tensors().zip(shard_of) {
                assert_eq!(
                    index["weight_map"][t.name()],
                    qins_export::shard_file_name(s, n).as_str()
                );
            }
        }
        // With one tensor per shard (limit 1 byte), there is a shard per tensor.
        let s = export_to(
            &p(&dir, "model.qins"),
            &p(&dir, "one"),
            OutputDtype::Source,
            1,
        );
        assert_eq!(s.shards.len(), hf.tensors.len());
    }
}

#[test]
fn every_output_dtype() {
    for src in [SynthDtype::Bf16, SynthDtype::F32] {
        let dir = scratch();
        let hf = synth_qins(&dir, src, 2);
        for (k, dtype) in [
            OutputDtype::F32,
            OutputDtype::BF16,
            OutputDtype::F16,
            OutputDtype::Source,
        ]
        .into_iter()
        .enumerate()
        {
            let out = p(&dir, &format!("out{k}"));
            let s = export_to(&p(&dir, "model.qins"), &out, dtype, 200_000);
            assert_eq!(s.dtype, dtype);
            let exported = check_export(&hf, &p(&dir, "model.qins"), &out, dtype, 200_000);
            // Raw tensors keep their dtype whatever the option says (the I64 positions, the
            // 1-D norms and biases).
            let positions = &exported.tensors["model.rotary.position_ids"];
            assert_eq!(positions.dtype, Dtype::I64);
            let norm = &exported.tensors["model.norm.weight"];
            assert_eq!(norm.dtype, hf.tensors["model.norm.weight"].dtype);
        }
    }
}

#[test]
fn the_files_are_laid_out_as_the_safetensors_crate_writes_them() {
    let dir = scratch();
    synth_qins(&dir, SynthDtype::F16, 1);
    export_to(
        &p(&dir, "model.qins"),
        &p(&dir, "out"),
        OutputDtype::Source,
        DEFAULT_MAX_SHARD_SIZE,
    );
    let bytes = std::fs::read(p(&dir, "out/model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let again = safetensors::serialize(st.tensors(), meta.metadata().clone()).unwrap();
    assert!(
        again == bytes,
        "the export differs from safetensors::serialize of its tensors"
    );
}

#[test]
fn odd_tensors_nested_assets_and_restored_metadata() {
    let dir = scratch();
    let mut hf = HfDir::default();
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let mut put = |name: &str, dtype: Dtype, shape: &[u64], bytes: Vec<u8>| {
        hf.tensors.insert(
            name.into(),
            HfTensor {
                dtype,
                shape: shape.to_vec(),
                bytes,
            },
        );
    };
    put("empty.weight", Dtype::F32, &[0, 7], vec![]);
    put(
        "column.weight",
        Dtype::BF16,
        &[3, 1],
        [1.5f32, -0.0, 3.0e38]
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
    );
    put("zeros.weight", Dtype::F16, &[2, 9], vec![0; 36]);
    put(
        "tiny.mlp.weight",
        Dtype::F32,
        &[2, 3],
        f32s(&[1e-30, -2e-30, 0.0, 5.0, -0.25, 1e-3]),
    );
    put("scalar", Dtype::F64, &[], 1.25f64.to_le_bytes().to_vec());
    put("bytes", Dtype::U8, &[5], vec![0, 1, 2, 254, 255]);
    put("nibbles", Dtype::F4, &[4], vec![0x12, 0xEF]);
    put(
        "nan.bias",
        Dtype::F32,
        &[2],
        f32s(&[f32::NAN, f32::NEG_INFINITY]),
    );
    hf.files
        .insert("config.json".into(), b"{\"a\": 1}\n".to_vec());
    hf.files
        .insert("1_Pooling/config.json".into(), b"{}".to_vec());
    hf.files
        .insert("a/b/c/deep.txt".into(), "caf\u{e9}\n".into());
    hf.files.insert("empty.txt".into(), vec![]);
    qins_from_hf(&hf, &p(&dir, "model.qins"));
    for dtype in [OutputDtype::Source, OutputDtype::F16] {
        let out = p(&dir, dtype.name());
        export_to(&p(&dir, "model.qins"), &out, dtype, DEFAULT_MAX_SHARD_SIZE);
        check_export(
            &hf,
            &p(&dir, "model.qins"),
            &out,
            dtype,
            DEFAULT_MAX_SHARD_SIZE,
        );
    }
    // F16 output of 3e38 is +infinity (rounded once, as IEEE does).
    let f16_out = read_hf(&p(&dir, "f16"));
    let col = &f16_out.tensors["column.weight"].bytes;
    assert_eq!(
        half::f16::from_le_bytes([col[4], col[5]]),
        half::f16::INFINITY
    );
    assert_eq!(
        half::f16::from_le_bytes([col[2], col[3]]).to_bits(),
        0,
        "-0.0 is coded as zero"
    );

    // The source's __metadata__, recorded by qins-convert under `safetensors.metadata`, comes
    // back, with "format": "pt" added if it is missing.
    for (recorded, want) in [
        (
            Some(r#"{"format":"pt","origin":"x"}"#),
            vec![("format", "pt"), ("origin", "x")],
        ),
        (
            Some(r#"{"origin":"y"}"#),
            vec![("format", "pt"), ("origin", "y")],
        ),
        (None, vec![("format", "pt")]),
    ] {
        let mut plan = Plan::new();
        plan.alignment = 64;
        plan.tensors
            .push(TensorSpec::new("t", Dtype::F32, vec![1], Storage::Raw));
        if let Some(r) = recorded {
            plan.metadata
                .insert("safetensors.metadata".into(), r.into());
        }
        let path = p(&dir, "meta.qins");
        let mut w = Writer::create(&path, plan, true).unwrap();
        w.write_raw(&[0, 0, 128, 63]).unwrap();
        w.finish().unwrap();
        let out = p(&dir, "meta-out");
        let _ = std::fs::remove_dir_all(&out);
        export_to(&path, &out, OutputDtype::Source, DEFAULT_MAX_SHARD_SIZE);
        let got = &read_hf(&out).metadata["model.safetensors"];
        let want: BTreeMap<String, String> = want
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        assert_eq!(got.as_ref(), Some(&want));
    }
}

#[test]
fn assets_named_like_the_weight_files_are_not_restored() {
    let dir = scratch();
    let mut plan = Plan::new();
    plan.alignment = 64;
    plan.tensors.push(TensorSpec::new(
        "w",
        Dtype::F32,
        vec![4, 4],
        Storage::Encoded {
            codec: Codec::Log,
            row_scales: false,
        },
    ));
    for name in [
        "model.safetensors",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "config.json",
        "sub/model.safetensors",
    ] {
        plan.assets.push(Asset {
            name: name.into(),
            data: b"stale".to_vec(),
        });
    }
    let path = p(&dir, "m.qins");
    let mut w = Writer::create(&path, plan, true).unwrap();
    w.encode_tensor(&[1.0; 16], None).unwrap();
    w.finish().unwrap();
    let s = export_to(
        &path,
        &p(&dir, "out"),
        OutputDtype::Source,
        DEFAULT_MAX_SHARD_SIZE,
    );
    assert_eq!(
        s.skipped_assets,
        [
            "model.safetensors",
            "model.safetensors.index.json",
            "model-00001-of-00002.safetensors"
        ]
    );
    assert_eq!(s.assets, 2);
    assert_eq!(
        list_files(&p(&dir, "out")),
        ["config.json", "model.safetensors", "sub/model.safetensors"]
    );
    let bytes = std::fs::read(p(&dir, "out/model.safetensors")).unwrap();
    SafeTensors::deserialize(&bytes).unwrap();
    assert!(s
        .render()
        .contains("\"model.safetensors.index.json\" not restored"));
}

#[test]
fn exports_are_deterministic_whatever_the_thread_count() {
    let dir = scratch();
    synth_qins(&dir, SynthDtype::Bf16, 1);
    export_to(
        &p(&dir, "model.qins"),
        &p(&dir, "a"),
        OutputDtype::F32,
        150_000,
    );
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        export_to(
            &p(&dir, "model.qins"),
            &p(&dir, "b"),
            OutputDtype::F32,
            150_000,
        )
    });
    let (a, b) = (list_files(&p(&dir, "a")), list_files(&p(&dir, "b")));
    assert_eq!(a, b);
    for f in &a {
        assert!(
            std::fs::read(p(&dir, "a").join(f)).unwrap()
                == std::fs::read(p(&dir, "b").join(f)).unwrap(),
            "{f} differs"
        );
    }
}

#[test]
fn tensors_larger_than_a_decode_chunk_stream_through() {
    // 2048 × 2049 elements: more than one 4 Mi-element chunk, not a multiple of 8, with row
    // scales on rows that straddle the parallel jobs and the chunks.
    let dir = scratch();
    let (rows, cols) = (1usize << 11, (1usize << 11) + 1);
    let n = rows * cols;
    let values: Vec<f32> = (0..n)
        .map(|i| ((i % 1999) as f32 - 999.0) / 1000.0)
        .collect();
    let mut hf = HfDir::default();
    hf.tensors.insert(
        "big.mlp.weight".into(),
        HfTensor {
            dtype: Dtype::F32,
            shape: vec![rows as u64, cols as u64],
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        },
    );
    qins_from_hf(&hf, &p(&dir, "big.qins"));
    for dtype in [OutputDtype::Source, OutputDtype::BF16] {
        let out = p(&dir, dtype.name());
        export_to(&p(&dir, "big.qins"), &out, dtype, DEFAULT_MAX_SHARD_SIZE);
        check_export(
            &hf,
            &p(&dir, "big.qins"),
            &out,
            dtype,
            DEFAULT_MAX_SHARD_SIZE,
        );
    }
}

#[test]
fn targets_empty_missing_nested_and_replaced() {
    let dir = scratch();
    let hf = synth_qins(&dir, SynthDtype::F16, 1);
    let q = p(&dir, "model.qins");
    // An empty directory is used as it is; missing parents are created.
    std::fs::create_dir(p(&dir, "empty")).unwrap();
    export_to(
        &q,
        &p(&dir, "empty"),
        OutputDtype::Source,
        DEFAULT_MAX_SHARD_SIZE,
    );
    check_export(
        &hf,
        &q,
        &p(&dir, "empty"),
        OutputDtype::Source,
        DEFAULT_MAX_SHARD_SIZE,
    );
    export_to(
        &q,
        &p(&dir, "x/y/z"),
        OutputDtype::Source,
        DEFAULT_MAX_SHARD_SIZE,
    );
    check_export(
        &hf,
        &q,
        &p(&dir, "x/y/z"),
        OutputDtype::Source,
        DEFAULT_MAX_SHARD_SIZE,
    );

    // --force replaces a non-empty directory with the complete new one.
    std::fs::create_dir_all(p(&dir, "full/old")).unwrap();
    std::fs::write(p(&dir, "full/old/stale.bin"), b"old").unwrap();
    std::fs::write(p(&dir, "full/model.safetensors"), b"old").unwrap();
    let mut o = ExportOptions::new(q.clone(), p(&dir, "full"));
    o.force = true;
    export(&o, &NoProgress).unwrap();
    check_export(
        &hf,
        &q,
        &p(&dir, "full"),
        OutputDtype::Source,
        DEFAULT_MAX_SHARD_SIZE,
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

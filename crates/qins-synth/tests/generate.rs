//! End-to-end tests: generate checkpoints into temporary directories and read them
//! back with the safetensors crate.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use half::{bf16, f16};
use qins_synth::{
    generate, SynthConfig, SynthDtype, SynthError, WeightDist, OUTLIER_MAX_SCALE, ZERO_FRACTION,
};
use safetensors::{Dtype, SafeTensors};

/// One tensor read back from disk, decoded to f64.
struct Loaded {
    dtype: Dtype,
    shape: Vec<usize>,
    values: Vec<f64>,
    file: String,
}

fn decode(dtype: Dtype, bytes: &[u8]) -> Vec<f64> {
    match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_bits(u16::from_le_bytes(c.try_into().unwrap())).to_f64())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_bits(u16::from_le_bytes(c.try_into().unwrap())).to_f64())
            .collect(),
        Dtype::I64 => bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        other => panic!("unexpected dtype {other:?}"),
    }
}

/// Loads every safetensors file of `dir`, asserting that no tensor name repeats.
fn load_dir(dir: &Path) -> BTreeMap<String, Loaded> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let file = entry.file_name().into_string().unwrap();
        if !file.ends_with(".safetensors") {
            continue;
        }
        let bytes = std::fs::read(entry.path()).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in st.tensors() {
            let loaded = Loaded {
                dtype: view.dtype(),
                shape: view.shape().to_vec(),
                values: decode(view.dtype(), view.data()),
                file: file.clone(),
            };
            assert!(
                out.insert(name.clone(), loaded).is_none(),
                "tensor {name} appears in more than one shard"
            );
        }
    }
    out
}

fn dir_bytes(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn float_dtype(d: SynthDtype) -> Dtype {
    match d {
        SynthDtype::F32 => Dtype::F32,
        SynthDtype::F16 => Dtype::F16,
        SynthDtype::Bf16 => Dtype::BF16,
    }
}

fn zero_fraction(v: &[f64]) -> f64 {
    v.iter().filter(|x| **x == 0.0).count() as f64 / v.len() as f64
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

#[test]
fn tiny_all_dtypes_and_shardings_are_valid_checkpoints() {
    for dtype in SynthDtype::ALL {
        for shards in [1usize, 3] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("ckpt");
            let mut cfg = SynthConfig::tiny(dtype);
            cfg.shards = shards;
            let summary = generate(&cfg, &dir).unwrap();
            let specs = cfg.tensor_specs();
            assert_eq!(summary.shards, shards);
            assert_eq!(summary.tensor_count, specs.len());
            assert_eq!(summary.total_tensor_bytes, cfg.total_tensor_bytes());
            for f in &summary.files {
                assert!(f.is_file(), "{} missing", f.display());
            }

            let tensors = load_dir(&dir);
            // Every planned tensor is present exactly once, with the planned shape and dtype.
            assert_eq!(tensors.len(), specs.len(), "{dtype} x{shards}");
            let mut total = 0u64;
            for spec in &specs {
                let t = &tensors[&spec.name];
                assert_eq!(t.shape, spec.shape, "{}", spec.name);
                assert_eq!(t.dtype, spec.dtype, "{}", spec.name);
                total += spec.byte_len() as u64;
                if t.dtype == Dtype::I64 {
                    let want: Vec<f64> = (0..spec.numel()).map(|i| i as f64).collect();
                    assert_eq!(t.values, want);
                } else {
                    assert_eq!(t.dtype, float_dtype(dtype));
                    assert!(
                        t.values.iter().all(|v| v.is_finite()),
                        "{} not finite",
                        spec.name
                    );
                }
            }
            assert_eq!(total, summary.total_tensor_bytes);
            assert!(tensors.values().any(|t| t.dtype == Dtype::I64));
            assert!(tensors.contains_key("lm_head.weight"));
            assert!(tensors.contains_key("model.layers.1.self_attn.k_proj.bias"));

            let index_path = dir.join("model.safetensors.index.json");
            if shards == 1 {
                assert!(dir.join("model.safetensors").is_file());
                assert!(!index_path.exists());
                assert!(tensors.values().all(|t| t.file == "model.safetensors"));
            } else {
                let index: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
                let obj = index.as_object().unwrap();
                assert_eq!(obj.len(), 2, "index has exactly metadata and weight_map");
                assert_eq!(index["metadata"]["total_size"].as_u64().unwrap(), total);
                let map = index["weight_map"].as_object().unwrap();
                assert_eq!(map.len(), tensors.len());
                for (name, t) in &tensors {
                    assert_eq!(map[name].as_str().unwrap(), t.file, "{name}");
                }
                let mut per_shard: HashMap<&str, usize> = HashMap::new();
                for file in map.values() {
                    *per_shard.entry(file.as_str().unwrap()).or_default() += 1;
                }
                let mut names: Vec<&str> = per_shard.keys().copied().collect();
                names.sort_unstable();
                assert_eq!(
                    names,
                    [
                        "model-00001-of-00003.safetensors",
                        "model-00002-of-00003.safetensors",
                        "model-00003-of-00003.safetensors"
                    ]
                );
                assert!(!dir.join("model.safetensors").exists());
                // Shards hold contiguous runs of the planned order.
                let order: Vec<&str> = specs
                    .iter()
                    .map(|s| map[&s.name].as_str().unwrap())
                    .collect();
                assert!(order.windows(2).all(|w| w[0] <= w[1]));
            }

            // Side files are valid JSON and consistent with the config.
            let config: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                    .unwrap();
            assert_eq!(config["hidden_size"], 100);
            assert_eq!(config["intermediate_size"], 257);
            assert_eq!(config["num_hidden_layers"], 2);
            assert_eq!(config["torch_dtype"], dtype.torch_name());
            assert_eq!(config["tie_word_embeddings"], false);
            for f in [
                "generation_config.json",
                "tokenizer.json",
                "tokenizer_config.json",
                "special_tokens_map.json",
            ] {
                let text = std::fs::read_to_string(dir.join(f)).unwrap();
                serde_json::from_str::<serde_json::Value>(&text).unwrap();
            }
        }
    }
}

#[test]
fn generation_is_deterministic_and_thread_count_independent() {
    let mut cfg = SynthConfig::small(SynthDtype::Bf16);
    cfg.shards = 3;
    cfg.seed = 1234;
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let c = tmp.path().join("c");
    generate(&cfg, &a).unwrap();
    generate(&cfg, &b).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| generate(&cfg, &c)).unwrap();
    let (ba, bb, bc) = (dir_bytes(&a), dir_bytes(&b), dir_bytes(&c));
    assert_eq!(ba.len(), 9);
    assert!(ba == bb, "two runs differ");
    assert!(ba == bc, "single-threaded run differs");

    // A different seed changes the weights.
    cfg.seed = 1235;
    let d = tmp.path().join("d");
    generate(&cfg, &d).unwrap();
    let bd = dir_bytes(&d);
    assert_ne!(
        ba["model-00001-of-00003.safetensors"],
        bd["model-00001-of-00003.safetensors"]
    );
}

#[test]
fn zeros_outliers_and_norms_are_where_promised() {
    for dtype in SynthDtype::ALL {
        let cfg = SynthConfig::small(dtype);
        let tmp = tempfile::tempdir().unwrap();
        generate(&cfg, tmp.path()).unwrap();
        let tensors = load_dir(tmp.path());
        for spec in cfg.tensor_specs() {
            let v = &tensors[&spec.name].values;
            let std = f64::from(spec.dist.std());
            let zeros = zero_fraction(v);
            if spec.name == "model.layers.0.mlp.down_proj.weight" {
                assert!(
                    (zeros - ZERO_FRACTION).abs() < 0.01,
                    "{dtype} {}: zero fraction {zeros}",
                    spec.name
                );
            } else if spec.dtype != Dtype::I64 {
                assert!(
                    zeros < 0.001,
                    "{dtype} {}: zero fraction {zeros}",
                    spec.name
                );
            }
            match spec.dist {
                WeightDist::Arange => {}
                WeightDist::Gaussian { mean: 1.0, .. } => {
                    assert!(spec.name.ends_with("norm.weight"), "{}", spec.name);
                    assert!(v.iter().all(|x| (0.5..1.5).contains(x)), "{}", spec.name);
                }
                WeightDist::Gaussian { .. } => {
                    assert_eq!(spec.outlier_fraction, 0.0);
                    assert!(max_abs(v) < 8.0 * std, "{}: Gaussian too wide", spec.name);
                }
                WeightDist::Laplace { .. } | WeightDist::StudentT4 { .. } => {
                    assert!(spec.outlier_fraction > 0.0);
                    let big = v.iter().filter(|x| x.abs() > 19.0 * std).count();
                    let frac = big as f64 / v.len() as f64;
                    assert!(big >= 1, "{dtype} {}: no outliers", spec.name);
                    assert!(frac < 0.005, "{dtype} {}: {frac} outliers", spec.name);
                    assert!(
                        max_abs(v) <= f64::from(OUTLIER_MAX_SCALE) * std * 1.01,
                        "{}",
                        spec.name
                    );
                }
            }
        }
        // Heavy-tailed tensors exist: o_proj of every layer, down_proj of layers >= 1.
        let heavy: Vec<String> = cfg
            .tensor_specs()
            .into_iter()
            .filter(|s| s.outlier_fraction > 0.0)
            .map(|s| s.name)
            .collect();
        assert!(heavy.contains(&"model.layers.0.self_attn.o_proj.weight".to_string()));
        assert!(heavy.contains(&"model.layers.3.mlp.down_proj.weight".to_string()));
    }
}

#[test]
fn gaussian_std_matches_plan() {
    let cfg = SynthConfig::small(SynthDtype::F32);
    let tmp = tempfile::tempdir().unwrap();
    generate(&cfg, tmp.path()).unwrap();
    let tensors = load_dir(tmp.path());
    let spec = cfg
        .tensor_specs()
        .into_iter()
        .find(|s| s.name == "model.embed_tokens.weight")
        .unwrap();
    let v = &tensors[&spec.name].values;
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
    let want = f64::from(spec.dist.std());
    assert!(mean.abs() < 0.01 * want, "mean {mean}");
    assert!((std / want - 1.0).abs() < 0.01, "std {std} vs {want}");
}

#[test]
fn odd_shapes() {
    let tiny = SynthConfig::tiny(SynthDtype::F16);
    for d in [tiny.hidden_size, tiny.intermediate_size, tiny.vocab_size] {
        assert_ne!(d % 8, 0);
    }
    let tmp = tempfile::tempdir().unwrap();
    generate(&tiny, tmp.path()).unwrap();
    let tensors = load_dir(tmp.path());
    assert_eq!(
        tensors["model.layers.0.self_attn.q_proj.weight"].shape,
        [100, 100]
    );
    assert_eq!(
        tensors["model.layers.0.self_attn.k_proj.weight"].shape,
        [50, 100]
    );
    assert_eq!(
        tensors["model.layers.0.mlp.gate_proj.weight"].shape,
        [257, 100]
    );
    assert_eq!(
        tensors["model.layers.1.mlp.down_proj.weight"].shape,
        [100, 257]
    );
    assert_eq!(tensors["model.embed_tokens.weight"].shape, [211, 100]);
    assert_eq!(tensors["model.rotary.position_ids"].shape, [1, 67]);

    for base in [
        SynthConfig::small(SynthDtype::Bf16),
        SynthConfig::for_target_bytes(SynthDtype::Bf16, 64 << 20, 1, 0),
        SynthConfig::for_target_bytes(SynthDtype::Bf16, 8 << 30, 1, 0),
    ] {
        let odd = base.with_odd_shapes();
        odd.validate().unwrap();
        for d in [
            odd.hidden_size,
            odd.intermediate_size,
            odd.vocab_size,
            odd.max_position_embeddings,
            odd.num_key_value_heads * odd.head_dim(),
        ] {
            assert_ne!(d % 8, 0, "{odd:?}");
        }
    }
    let odd = SynthConfig::small(SynthDtype::Bf16).with_odd_shapes();
    let tmp = tempfile::tempdir().unwrap();
    let summary = generate(&odd, tmp.path()).unwrap();
    assert_eq!(load_dir(tmp.path()).len(), summary.tensor_count);
}

#[test]
fn tied_embeddings_have_no_head() {
    let mut cfg = SynthConfig::tiny(SynthDtype::Bf16);
    cfg.tie_word_embeddings = true;
    let tmp = tempfile::tempdir().unwrap();
    generate(&cfg, tmp.path()).unwrap();
    let tensors = load_dir(tmp.path());
    assert!(!tensors.contains_key("lm_head.weight"));
    assert!(tensors.contains_key("model.embed_tokens.weight"));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["tie_word_embeddings"], true);
}

#[test]
fn nan_only_when_injected() {
    for dtype in SynthDtype::ALL {
        let mut cfg = SynthConfig::tiny(dtype);
        cfg.inject_nan = Some(("model.layers.1.mlp.up_proj.weight".to_string(), 7));
        let tmp = tempfile::tempdir().unwrap();
        generate(&cfg, tmp.path()).unwrap();
        let tensors = load_dir(tmp.path());
        for (name, t) in &tensors {
            for (i, v) in t.values.iter().enumerate() {
                if name == "model.layers.1.mlp.up_proj.weight" && i == 7 {
                    assert!(v.is_nan(), "{dtype}: no NaN injected");
                } else {
                    assert!(v.is_finite(), "{dtype}: {name}[{i}] = {v}");
                }
            }
        }
    }

    let mut cfg = SynthConfig::tiny(SynthDtype::F32);
    cfg.inject_nan = Some(("no.such.tensor".to_string(), 0));
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(
        generate(&cfg, tmp.path()),
        Err(SynthError::InvalidConfig(_))
    ));
    cfg.inject_nan = Some(("model.norm.weight".to_string(), 100));
    assert!(matches!(
        generate(&cfg, tmp.path()),
        Err(SynthError::InvalidConfig(_))
    ));
    cfg.inject_nan = Some(("model.rotary.position_ids".to_string(), 0));
    assert!(matches!(
        generate(&cfg, tmp.path()),
        Err(SynthError::InvalidConfig(_))
    ));
}

#[test]
fn invalid_configs_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = SynthConfig::tiny(SynthDtype::F32);
    cfg.shards = 0;
    assert!(generate(&cfg, tmp.path()).is_err());
    cfg.shards = 1000;
    assert!(generate(&cfg, tmp.path()).is_err());
    let mut cfg = SynthConfig::tiny(SynthDtype::F32);
    cfg.num_attention_heads = 3;
    assert!(generate(&cfg, tmp.path()).is_err());
    // Nothing was written.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn regenerating_with_fewer_shards_removes_stale_shards() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("README.md"), "keep me").unwrap();
    let mut cfg = SynthConfig::tiny(SynthDtype::Bf16);
    cfg.shards = 3;
    generate(&cfg, tmp.path()).unwrap();
    cfg.shards = 1;
    generate(&cfg, tmp.path()).unwrap();
    let names: Vec<String> = dir_bytes(tmp.path()).into_keys().collect();
    assert_eq!(
        names,
        [
            "README.md",
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "special_tokens_map.json",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );
}

#[test]
fn target_sizes_are_close() {
    for dtype in SynthDtype::ALL {
        for target in [16u64 << 20, 100 << 20, 1 << 30, 2 << 30, 8 << 30] {
            let cfg = SynthConfig::for_target_bytes(dtype, target, 3, 7);
            cfg.validate().unwrap();
            assert_eq!(cfg.shards, 3);
            assert_eq!(cfg.seed, 7);
            let got = cfg.total_tensor_bytes();
            let err = (got as f64 - target as f64).abs() / target as f64;
            assert!(got <= target, "{dtype} {target}: {got} above target");
            assert!(err < 0.01, "{dtype} {target}: got {got} ({err:.4})");
            assert!(cfg.num_hidden_layers >= 2, "{cfg:?}");
        }
    }
    // Absurdly small targets still give a valid minimal model.
    SynthConfig::for_target_bytes(SynthDtype::F32, 10, 1, 0)
        .validate()
        .unwrap();
}

#[test]
fn preset_sizes() {
    let tiny = SynthConfig::tiny(SynthDtype::Bf16).total_tensor_bytes();
    assert!((100_000..1_000_000).contains(&tiny), "tiny {tiny}");
    let small = SynthConfig::small(SynthDtype::Bf16).total_tensor_bytes();
    assert!((1_000_000..10_000_000).contains(&small), "small {small}");
}

#[test]
fn shards_have_ordinary_file_permissions() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = SynthConfig::tiny(SynthDtype::Bf16);
    cfg.shards = 2;
    let summary = generate(&cfg, tmp.path()).unwrap();
    let want = std::fs::metadata(tmp.path().join("config.json"))
        .unwrap()
        .permissions();
    for f in &summary.files {
        assert_eq!(
            std::fs::metadata(f).unwrap().permissions(),
            want,
            "{}",
            f.display()
        );
    }
}

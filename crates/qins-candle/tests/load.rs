//! The backend on synthetic checkpoints: values served from a `.qins` and from its directory,
//! tied heads, and one test per error variant.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use half::bf16;
use qins_candle::{Checkpoint, LoadError, Loader};
use qins_convert::{convert, ConvertOptions, NoProgress};
use qins_synth::{generate, SynthArch, SynthConfig, SynthDtype};

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    encoded: PathBuf,
    raw: PathBuf,
}

/// A tiny Llama-like BF16 checkpoint, converted with the default codec and with every
/// tensor raw.
fn fixture(dtype: SynthDtype) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hf");
    let mut cfg = SynthConfig::tiny(dtype);
    cfg.tie_word_embeddings = true;
    generate(&cfg, &dir).unwrap();
    let encoded = tmp.path().join("model.qins");
    let raw = tmp.path().join("raw.qins");
    convert(
        &ConvertOptions::new(dir.clone(), encoded.clone()),
        &NoProgress,
    )
    .unwrap();
    let mut o = ConvertOptions::new(dir.clone(), raw.clone());
    o.policy.exclude = vec!["*".into()];
    convert(&o, &NoProgress).unwrap();
    Fixture {
        _tmp: tmp,
        dir,
        encoded,
        raw,
    }
}

fn load(path: &Path, name: &str, dtype: DType) -> Result<Tensor, LoadError> {
    let ckpt = Checkpoint::open(path)?;
    let source = ckpt.source()?;
    source.load(name, dtype, &Device::Cpu)
}

fn bits(t: &Tensor) -> Vec<u32> {
    match t.dtype() {
        DType::F32 => t
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect(),
        DType::BF16 => t
            .flatten_all()
            .unwrap()
            .to_vec1::<bf16>()
            .unwrap()
            .iter()
            .map(|x| u32::from(x.to_bits()))
            .collect(),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn raw_qins_serves_exactly_the_directory_s_values_in_f32_and_bf16() {
    for dtype in [SynthDtype::F32, SynthDtype::Bf16, SynthDtype::F16] {
        let f = fixture(dtype);
        let dir = Checkpoint::open(&f.dir).unwrap();
        let dir_src = dir.source().unwrap();
        let raw = Checkpoint::open(&f.raw).unwrap();
        let raw_src = raw.source().unwrap();
        assert!(raw_src.is_qins() && !dir_src.is_qins());
        assert_eq!(raw_src.tensor_names(), dir_src.tensor_names());
        for name in dir_src.tensor_names() {
            for want in [DType::F32, DType::BF16] {
                let a = dir_src.load(name, want, &Device::Cpu).unwrap();
                let b = raw_src.load(name, want, &Device::Cpu).unwrap();
                assert_eq!(a.dims(), b.dims(), "{name}");
                assert_eq!(a.dtype(), want);
                if name.ends_with("position_ids") {
                    continue; // I64, converted by candle
                }
                assert_eq!(bits(&a), bits(&b), "{name} as {want:?} from {dtype}");
            }
        }
        assert_eq!(raw_src.asset_names(), dir_src.asset_names());
        for a in dir_src.asset_names() {
            assert_eq!(raw_src.asset(a).unwrap(), dir_src.asset(a).unwrap(), "{a}");
        }
    }
}

#[test]
fn encoded_tensors_are_the_reader_s_decode_and_bf16_rounds_it_once() {
    let f = fixture(SynthDtype::Bf16);
    let file = qins_read::open(&f.encoded).unwrap();
    let qins = file.parse().unwrap();
    let ckpt = Checkpoint::open(&f.encoded).unwrap();
    let source = ckpt.source().unwrap();
    let mut encoded = 0;
    for t in qins.tensors().filter(|t| t.codec().is_some()) {
        encoded += 1;
        let want = t.to_f32_vec().unwrap();
        let got = source.load(t.name(), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(
            got.dims().iter().map(|&d| d as u64).collect::<Vec<_>>(),
            t.shape()
        );
        let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(got, want, "{}", t.name());
        let b: Vec<bf16> = source
            .load(t.name(), DType::BF16, &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(
            b.iter().zip(&want).all(|(b, w)| *b == bf16::from_f32(*w)),
            "{}",
            t.name()
        );
    }
    assert!(encoded > 5, "the default codec encodes the matrices");
}

#[test]
fn large_tensors_decode_in_parallel_chunks_to_the_same_values() {
    // 600 x 300 = 180 000 elements: more than two chunks of 65 536.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hf");
    let mut cfg = SynthConfig::tiny(SynthDtype::F32);
    cfg.vocab_size = 600;
    cfg.hidden_size = 300;
    cfg.num_attention_heads = 3;
    cfg.num_key_value_heads = 1;
    generate(&cfg, &dir).unwrap();
    let out = tmp.path().join("m.qins");
    let mut o = ConvertOptions::new(dir, out.clone());
    o.policy.encode_embeddings = true;
    convert(&o, &NoProgress).unwrap();
    let file = qins_read::open(&out).unwrap();
    let t = file.parse().unwrap();
    let t = t.tensor("model.embed_tokens.weight").unwrap();
    assert!(t.codec().is_some() && t.numel() > 2 * 65536);
    let got: Vec<f32> = load(&out, "model.embed_tokens.weight", DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(got, t.to_f32_vec().unwrap());
}

#[test]
fn a_tied_head_is_served_from_the_embedding_table_once() {
    let f = fixture(SynthDtype::F32);
    for path in [&f.dir, &f.encoded] {
        let ckpt = Checkpoint::open(path).unwrap();
        let source = ckpt.source().unwrap();
        assert!(source.shape("lm_head.weight").is_none());
        let loader =
            Loader::new(source.as_ref()).tied_head("lm_head.weight", "model.embed_tokens.weight");
        let ((head, emb), _) = loader
            .load(DType::F32, &Device::Cpu, |vb| {
                assert!(
                    !vb.contains_tensor("lm_head.weight"),
                    "an alias is not a stored tensor"
                );
                Ok((
                    vb.get((211, 100), "lm_head.weight")?,
                    vb.get((211, 100), "model.embed_tokens.weight")?,
                ))
            })
            .unwrap();
        assert_eq!(head.id(), emb.id(), "one tensor for both names");
        let stats = loader.stats();
        assert_eq!(stats.aliased, vec!["lm_head.weight".to_string()]);
        assert_eq!(stats.tensors, 2);
    }
}

#[test]
fn missing_tensor_is_named_with_the_file() {
    let f = fixture(SynthDtype::F32);
    for path in [&f.dir, &f.encoded] {
        let ckpt = Checkpoint::open(path).unwrap();
        let source = ckpt.source().unwrap();
        let loader = Loader::new(source.as_ref());
        let err = loader
            .load(DType::F32, &Device::Cpu, |vb| {
                vb.get(100, "model.layers.7.input_layernorm.weight")
            })
            .unwrap_err();
        match &err {
            LoadError::MissingTensor { tensor, file } => {
                assert_eq!(tensor, "model.layers.7.input_layernorm.weight");
                assert_eq!(file, path);
            }
            other => panic!("{other:?}"),
        }
        assert!(err
            .to_string()
            .contains("model.layers.7.input_layernorm.weight"));
    }
}

#[test]
fn shape_mismatch_names_both_shapes() {
    let f = fixture(SynthDtype::F32);
    let ckpt = Checkpoint::open(&f.encoded).unwrap();
    let source = ckpt.source().unwrap();
    let err = Loader::new(source.as_ref())
        .load(DType::F32, &Device::Cpu, |vb| {
            vb.get((100, 99), "model.layers.0.mlp.up_proj.weight")
        })
        .unwrap_err();
    match err {
        LoadError::ShapeMismatch {
            tensor,
            expected,
            stored,
            ..
        } => {
            assert_eq!(tensor, "model.layers.0.mlp.up_proj.weight");
            assert_eq!(expected, vec![100, 99]);
            assert_eq!(stored, vec![257, 100]);
        }
        other => panic!("{other:?}"),
    }
}

/// Flips one byte of the section holding `name`'s data.
fn damage_tensor(path: &Path, name: &str) {
    let mut bytes = std::fs::read(path).unwrap();
    let offset = {
        let q = qins_read::Qins::parse(&bytes).unwrap();
        let t = q.tensor(name).unwrap();
        let data = t.sections()[0].2;
        data.as_ptr() as usize - bytes.as_ptr() as usize + data.len() / 2
    };
    bytes[offset] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_damaged_tensor_is_refused_by_name_and_nothing_is_built() {
    let f = fixture(SynthDtype::F32);
    let name = "model.layers.1.self_attn.o_proj.weight";
    damage_tensor(&f.encoded, name);
    let ckpt = Checkpoint::open(&f.encoded).unwrap();
    let source = ckpt.source().expect("the header and frame are intact");
    let mut built = false;
    let err = Loader::new(source.as_ref())
        .load(DType::F32, &Device::Cpu, |vb| {
            let t = vb.get((100, 100), name)?;
            built = true;
            Ok(t)
        })
        .unwrap_err();
    assert!(!built);
    match &err {
        LoadError::Damaged { tensor, source, .. } => {
            assert_eq!(tensor, name);
            assert_eq!(source.kind(), "DataChecksum");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains(name), "{err}");
}

#[test]
fn a_panicking_constructor_reports_the_tensor_that_failed() {
    // candle-transformers' llama unwraps inside its loader: the typed error still comes out.
    let f = fixture(SynthDtype::F32);
    damage_tensor(&f.encoded, "model.layers.0.mlp.down_proj.weight");
    let ckpt = Checkpoint::open(&f.encoded).unwrap();
    let source = ckpt.source().unwrap();
    let err = Loader::new(source.as_ref())
        .load(DType::F32, &Device::Cpu, |vb| {
            let t = vb
                .get((100, 257), "model.layers.0.mlp.down_proj.weight")
                .unwrap();
            Ok(t)
        })
        .unwrap_err();
    assert!(
        matches!(err, LoadError::Damaged { ref tensor, .. } if tensor == "model.layers.0.mlp.down_proj.weight"),
        "{err:?}"
    );
}

#[test]
fn constructor_errors_and_panics_of_its_own_are_model_errors() {
    let f = fixture(SynthDtype::F32);
    let ckpt = Checkpoint::open(&f.dir).unwrap();
    let source = ckpt.source().unwrap();
    let loader = Loader::new(source.as_ref());
    let err = loader
        .load(DType::F32, &Device::Cpu, |_| -> candle_core::Result<()> {
            Err(candle_core::Error::Msg("no such layer kind".into()))
        })
        .unwrap_err();
    assert!(
        matches!(&err, LoadError::Model { message, .. } if message.contains("no such layer kind")),
        "{err:?}"
    );
    let err = loader
        .load(DType::F32, &Device::Cpu, |_| -> candle_core::Result<()> {
            panic!("bad config")
        })
        .unwrap_err();
    assert!(
        matches!(&err, LoadError::Model { message, .. } if message.contains("bad config")),
        "{err:?}"
    );
}

#[test]
fn damaged_frame_is_refused_when_the_source_is_made() {
    let f = fixture(SynthDtype::F32);
    let mut bytes = std::fs::read(&f.encoded).unwrap();
    let offset = {
        let q = qins_read::Qins::parse(&bytes).unwrap();
        let (_, data) = q.assets().find(|(n, _)| *n == "config.json").unwrap();
        data.as_ptr() as usize - bytes.as_ptr() as usize
    };
    bytes[offset] ^= 1;
    std::fs::write(&f.encoded, bytes).unwrap();
    let ckpt = Checkpoint::open(&f.encoded).unwrap();
    let err = ckpt.source().unwrap_err();
    assert!(
        matches!(&err, LoadError::DamagedFrame { source, .. } if source.to_string().contains("config.json")),
        "{err:?}"
    );
}

#[test]
fn a_file_that_is_not_a_qins_is_refused_by_the_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("model.qins");
    std::fs::write(&path, b"not a qins file at all, just some text").unwrap();
    let err = Checkpoint::open(&path)
        .and_then(|c| c.source().map(|_| ()))
        .unwrap_err();
    assert!(
        matches!(&err, LoadError::Qins { path: p, .. } if *p == path),
        "{err:?}"
    );
}

#[test]
fn a_directory_without_weights_is_refused_by_the_source_reader() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("config.json"), "{}").unwrap();
    let err = Checkpoint::open(tmp.path()).unwrap_err();
    assert!(matches!(err, LoadError::Dir { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&tmp.path().display().to_string()),
        "{err}"
    );
}

#[test]
fn an_asset_that_vanished_from_the_directory_is_a_source_error() {
    let f = fixture(SynthDtype::F32);
    let ckpt = Checkpoint::open(&f.dir).unwrap();
    let source = ckpt.source().unwrap();
    std::fs::remove_file(f.dir.join("tokenizer.json")).unwrap();
    let err = source.asset("tokenizer.json").unwrap_err();
    assert!(matches!(&err, LoadError::Dir { .. }), "{err:?}");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    assert!(source.asset("no-such-file.json").unwrap().is_none());
}

/// A directory with one tensor of `dtype`.
fn one_tensor_dir(dir: &Path, dtype: safetensors::Dtype, bytes: &[u8], shape: Vec<usize>) {
    std::fs::create_dir_all(dir).unwrap();
    let view = safetensors::tensor::TensorView::new(dtype, shape, bytes).unwrap();
    safetensors::serialize_to_file([("t", view)], None, &dir.join("model.safetensors")).unwrap();
}

#[test]
fn a_dtype_with_no_conversion_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    one_tensor_dir(tmp.path(), safetensors::Dtype::U16, &[1, 0, 2, 0], vec![2]);
    let err = load(tmp.path(), "t", DType::F32).unwrap_err();
    match err {
        LoadError::UnsupportedDtype {
            tensor,
            stored,
            requested,
            ..
        } => {
            assert_eq!((tensor.as_str(), stored, requested), ("t", "U16", "f32"));
        }
        other => panic!("{other:?}"),
    }
    // Integer tensors candle has convert through it.
    one_tensor_dir(
        &tmp.path().join("i64"),
        safetensors::Dtype::I64,
        &7i64.to_le_bytes(),
        vec![1],
    );
    let t = load(&tmp.path().join("i64"), "t", DType::F32).unwrap();
    assert_eq!(t.to_vec1::<f32>().unwrap(), [7.0]);
}

#[test]
fn candle_s_own_refusals_are_candle_errors() {
    // candle holds F8_E8M0 values but converts them to no other dtype.
    let tmp = tempfile::tempdir().unwrap();
    one_tensor_dir(
        tmp.path(),
        safetensors::Dtype::F8_E8M0,
        &[127, 128],
        vec![2],
    );
    let err = load(tmp.path(), "t", DType::F32).unwrap_err();
    assert!(
        matches!(&err, LoadError::Candle { tensor, .. } if tensor == "t"),
        "{err:?}"
    );
}

#[test]
fn every_architecture_s_synthetic_checkpoint_serves_all_its_tensors() {
    for arch in SynthArch::ALL {
        let tmp = tempfile::tempdir().unwrap();
        generate(&SynthConfig::tiny_arch(arch, SynthDtype::Bf16), tmp.path()).unwrap();
        let ckpt = Checkpoint::open(tmp.path()).unwrap();
        let source = ckpt.source().unwrap();
        for name in source.tensor_names() {
            source.load(name, DType::F32, &Device::Cpu).unwrap();
        }
        assert!(source.asset("config.json").unwrap().is_some(), "{arch}");
    }
}

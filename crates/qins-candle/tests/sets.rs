//! A model stored as a set of shards (spec §21) loads from its index or any shard exactly as
//! the single file of the same conversion does; an incomplete or damaged set is refused,
//! naming the shard.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use qins_candle::{Checkpoint, LoadError, Loader};
use qins_convert::{convert, max_shard_size_for, ConvertOptions, NoProgress};
use qins_synth::{generate, SynthConfig, SynthDtype};

struct Fixture {
    _tmp: tempfile::TempDir,
    single: PathBuf,
    index: PathBuf,
    shards: Vec<PathBuf>,
}

/// A tiny Llama-like F32 checkpoint converted with the default codec to one file and to a
/// set of three shards.
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hf");
    generate(&SynthConfig::tiny(SynthDtype::F32), &dir).unwrap();
    let single = tmp.path().join("one/model.qins");
    std::fs::create_dir_all(single.parent().unwrap()).unwrap();
    convert(
        &ConvertOptions::new(dir.clone(), single.clone()),
        &NoProgress,
    )
    .unwrap();
    let target = tmp.path().join("set/model.qins");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let mut o = ConvertOptions::new(dir, target);
    o.max_shard_size = max_shard_size_for(&o, 3)
        .unwrap()
        .expect("a limit for 3 shards");
    let summary = convert(&o, &NoProgress).unwrap();
    assert_eq!(summary.shards.len(), 3);
    let set = tmp.path().join("set");
    Fixture {
        index: set.join("model.qins.index.json"),
        shards: (1..=3)
            .map(|k| set.join(format!("model-{k:05}-of-00003.qins")))
            .collect(),
        single,
        _tmp: tmp,
    }
}

#[test]
fn a_set_loads_from_its_index_or_any_shard_exactly_as_the_single_file() {
    let f = fixture();
    let one = Checkpoint::open(&f.single).unwrap();
    let one = one.source().unwrap();
    for path in std::iter::once(&f.index).chain(&f.shards) {
        let ckpt = Checkpoint::open(path).unwrap();
        let set = ckpt.source().unwrap();
        assert!(set.is_qins());
        assert_eq!(set.path(), f.index, "a set is named by its index");
        assert_eq!(set.tensor_names(), one.tensor_names());
        for name in one.tensor_names() {
            for dtype in [DType::F32, DType::BF16] {
                let a = one.load(name, dtype, &Device::Cpu).unwrap();
                let b = set.load(name, dtype, &Device::Cpu).unwrap();
                assert_eq!(a.dims(), b.dims(), "{name}");
                let bits = |t: candle_core::Tensor| -> Vec<u32> {
                    let t = t.flatten_all().unwrap().to_dtype(DType::F32).unwrap();
                    t.to_vec1::<f32>()
                        .unwrap()
                        .iter()
                        .map(|x| x.to_bits())
                        .collect()
                };
                assert_eq!(
                    bits(a),
                    bits(b),
                    "{name} as {dtype:?} from {}",
                    path.display()
                );
            }
        }
        assert_eq!(set.asset_names(), one.asset_names());
        for a in one.asset_names() {
            assert_eq!(set.asset(a).unwrap(), one.asset(a).unwrap(), "{a}");
        }
    }
}

#[test]
fn a_missing_shard_is_refused_naming_it_whatever_file_is_given() {
    let f = fixture();
    std::fs::remove_file(&f.shards[1]).unwrap();
    for path in [&f.index, &f.shards[0], &f.shards[2]] {
        let err = Checkpoint::open(path).unwrap_err();
        match &err {
            LoadError::Qins { path: p, source } => {
                assert_eq!(p, path);
                assert_eq!(source.kind(), "MissingShard", "{source}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            err.to_string().contains("model-00002-of-00003.qins"),
            "{err}"
        );
    }
}

/// Flips one byte in the middle of tensor `name`'s data in shard `shard`.
fn damage(shard: &Path, name: &str) {
    let mut bytes = std::fs::read(shard).unwrap();
    let offset = {
        let q = qins_read::Qins::parse(&bytes).unwrap();
        let data = q.tensor(name).unwrap().sections()[0].2;
        data.as_ptr() as usize - bytes.as_ptr() as usize + data.len() / 2
    };
    bytes[offset] ^= 0x40;
    std::fs::write(shard, bytes).unwrap();
}

#[test]
fn a_damaged_tensor_in_a_shard_is_refused_naming_the_shard() {
    let f = fixture();
    let last = f.shards.last().unwrap();
    let name = {
        let file = qins_read::open(last).unwrap();
        let q = file.parse().unwrap();
        let t = q.tensors().find(|t| t.codec().is_some()).unwrap();
        t.name().to_string()
    };
    damage(last, &name);
    let ckpt = Checkpoint::open(&f.index).unwrap();
    let source = ckpt.source().expect("headers and frames are intact");
    let err = Loader::new(source.as_ref())
        .load(DType::F32, &Device::Cpu, |vb| vb.get_unchecked(&name))
        .unwrap_err();
    match &err {
        LoadError::Damaged {
            tensor,
            file,
            source,
        } => {
            assert_eq!(tensor, &name);
            assert_eq!(file, last);
            assert_eq!(source.kind(), "DataChecksum");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_damaged_frame_in_a_shard_names_the_shard_once() {
    let f = fixture();
    let first = &f.shards[0];
    let mut bytes = std::fs::read(first).unwrap();
    let offset = {
        let q = qins_read::Qins::parse(&bytes).unwrap();
        let (_, data) = q.assets().find(|(n, _)| *n == "config.json").unwrap();
        data.as_ptr() as usize - bytes.as_ptr() as usize
    };
    bytes[offset] ^= 1;
    std::fs::write(first, bytes).unwrap();
    let ckpt = Checkpoint::open(&f.shards[2]).unwrap();
    let err = ckpt.source().unwrap_err();
    match &err {
        LoadError::DamagedFrame { file, source } => {
            assert_eq!(file, first);
            assert!(source.to_string().contains("config.json"), "{source}");
        }
        other => panic!("{other:?}"),
    }
    let shown = err.to_string();
    assert_eq!(
        shown.matches("model-00001-of-00003.qins").count(),
        1,
        "{shown}"
    );
}

//! Sharded output (spec §21): which tensors go in which shard, and the writer of each shard.
//!
//! A model whose single file would exceed [`crate::ConvertOptions::max_shard_size`] is
//! written as a set: tensors go to shards in the file's order, each shard filled while an
//! upper bound of its file size stays within the limit ([`split`]); the assets go in shard 1
//! (§21.4). Each shard is then written by an ordinary `qins_write::Writer` from
//! `qins_write::set::SetWriter`, one after the other, and the index last ([`Sink`]).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use qins_format::set::{
    index_file_name, limits::MAX_SHARDS, parse_shard_file_name, shard_file_name, stem,
};
use qins_format::{align_up, section_lengths, Storage, LUT_BYTES};
use qins_write::set::{add_shard_keys, SetSummary, SetWriter};
use qins_write::{Plan, WriteSummary, Writer};
use serde::Serialize;

use crate::report::{OutputBytes, TensorPlan};
use crate::ConvertError;
use qins_source::AssetFile;

/// One shard of a planned set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ShardPlan {
    /// The file name, beside the index.
    pub file: String,
    /// The first tensor (an index into the plan's tensors).
    pub first: usize,
    /// How many tensors, from `first`.
    pub tensors: usize,
    /// Whether the assets are in it (shard 1 only).
    pub assets: bool,
    /// The shard's exact layout.
    pub output: OutputBytes,
}

impl ShardPlan {
    /// The tensors' positions in the plan.
    pub fn range(&self) -> Range<usize> {
        self.first..self.first + self.tensors
    }
}

/// The directory and stem of the files for a target `DIR/NAME.qins` (§21.1).
pub(crate) fn dir_and_stem(target: &Path) -> (PathBuf, String) {
    let dir = target.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (dir, stem(&name).to_string())
}

/// The index path of a set written for `target`: `DIR/NAME.qins.index.json`.
pub(crate) fn index_path(target: &Path) -> PathBuf {
    let (dir, stem) = dir_and_stem(target);
    dir.join(index_file_name(&stem))
}

/// The shards of earlier outputs for this target that the new output does not replace: the
/// files in `dir` named as a writer names a shard of `stem` (`STEM-0000k-of-0000n.qins`, §21.1)
/// other than `outputs`, sorted. They belong to the model of this name by their names alone,
/// whatever set id they hold (an earlier conversion into more shards, or a copy); no file of
/// another name is listed, the shards of other stems included.
pub(crate) fn stale_shards(dir: &Path, stem: &str, outputs: &[PathBuf]) -> Vec<PathBuf> {
    let listed = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = std::fs::read_dir(listed) else {
        return Vec::new();
    };
    let mut stale: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            !outputs
                .iter()
                .any(|o| o.file_name() == Some(name.as_os_str()))
                && name
                    .to_str()
                    .is_some_and(|n| parse_shard_file_name(stem, n).is_some())
                && e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink())
        })
        .map(|e| dir.join(e.file_name()))
        .collect();
    stale.sort();
    stale
}

/// An upper bound of the size of one shard as its tensors and assets are added: the header,
/// and every section rounded up to the alignment (each section starts aligned, so it takes at
/// most that much of the file).
#[derive(Clone, Copy)]
struct Bound {
    align: u64,
    header: u64,
    encoded: u64,
    sections: u64,
    tensors: usize,
}

impl Bound {
    fn new(alignment: u32, metadata: u64, assets: &[AssetFile]) -> Bound {
        let align = u64::from(alignment);
        let mut b = Bound {
            align,
            header: qins_format::PREAMBLE_SIZE + qins_format::HEADER_CRC_SIZE + metadata,
            encoded: 0,
            sections: 0,
            tensors: 0,
        };
        for a in assets {
            b.header += qins_format::ASSET_RECORD_SIZE + a.name.len() as u64;
            b.sections += b.up(a.size);
        }
        b
    }

    fn up(&self, x: u64) -> u64 {
        align_up(x, self.align).unwrap_or(u64::MAX)
    }

    fn with(mut self, t: &TensorPlan) -> Bound {
        self.header += qins_format::TENSOR_RECORD_SIZE + t.name.len() as u64;
        let [data, signs, scales] =
            section_lengths(t.dtype, &t.shape, t.storage).unwrap_or([u64::MAX / 4, 0, 0]);
        self.sections = self.sections.saturating_add(self.up(data));
        if let Storage::Encoded { row_scales, .. } = t.storage {
            self.encoded += 1;
            self.sections = self.sections.saturating_add(self.up(signs));
            if row_scales {
                self.sections = self.sections.saturating_add(self.up(scales));
            }
        }
        self.tensors += 1;
        self
    }

    fn size(&self) -> u64 {
        self.up(self.header)
            .saturating_add(self.up(self.encoded * LUT_BYTES))
            .saturating_add(self.sections)
    }
}

/// Splits `tensors` into shards of at most `max` bytes each (§21.4, as huggingface_hub
/// splits a state dict): in order, each shard taking tensors while an upper bound of its file
/// size stays within `max`; a tensor that does not fit even alone gets a shard of its own. The
/// assets go in the first shard. `metadata` is the length of a shard's metadata at most.
/// Returns one range of tensors per shard (one range for a model that fits in one file).
pub(crate) fn split(
    tensors: &[TensorPlan],
    assets: &[AssetFile],
    metadata: u64,
    alignment: u32,
    max: u64,
) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut bound = Bound::new(alignment, metadata, assets);
    for (i, t) in tensors.iter().enumerate() {
        let next = bound.with(t);
        if next.size() > max && bound.tensors > 0 {
            ranges.push(start..i);
            start = i;
            bound = Bound::new(alignment, metadata, &[]).with(t);
        } else {
            bound = next;
        }
    }
    ranges.push(start..tensors.len());
    ranges
}

/// The longest metadata a shard of a set for `target` can have: `base` with the shard keys at
/// their longest values (§21.3).
pub(crate) fn metadata_bound(base: &BTreeMap<String, String>, target: &Path) -> u64 {
    let mut m = base.clone();
    let (_, stem) = dir_and_stem(target);
    let id = qins_write::set::set_id(&[]); // every id has this length
    add_shard_keys(&mut m, &id, &index_file_name(&stem), MAX_SHARDS, MAX_SHARDS);
    serde_json::to_vec(&m).map_or(u64::MAX, |v| v.len() as u64)
}

/// The shards of a set: their plans for the writer and their exact layouts, and the set id;
/// `layout` computes a file's exact layout.
pub(crate) struct SetPlan {
    pub(crate) shards: Vec<ShardPlan>,
    pub(crate) plans: Vec<Plan>,
    pub(crate) set_id: String,
    pub(crate) index: String,
}

/// Plans the set of `ranges` (at least two) for `target`: one writer plan per shard from the
/// single file's `plan`, and each shard's exact layout by `layout`.
pub(crate) fn plan_set(
    target: &Path,
    ranges: &[Range<usize>],
    plan: &Plan,
    tensors: &[TensorPlan],
    assets: &[AssetFile],
    layout: impl Fn(&[TensorPlan], &[AssetFile], &BTreeMap<String, String>) -> OutputBytes,
) -> Result<SetPlan, ConvertError> {
    let n = ranges.len();
    if n > MAX_SHARDS {
        return Err(ConvertError::TooManyShards { shards: n });
    }
    let (_, stem) = dir_and_stem(target);
    let plans: Vec<Plan> = ranges
        .iter()
        .enumerate()
        .map(|(k, r)| Plan {
            tensors: plan.tensors[r.clone()].to_vec(),
            assets: if k == 0 {
                plan.assets.clone()
            } else {
                Vec::new()
            },
            metadata: plan.metadata.clone(),
            alignment: plan.alignment,
        })
        .collect();
    let set_id = qins_write::set::set_id(&plans);
    let index = index_file_name(&stem);
    let shards = ranges
        .iter()
        .enumerate()
        .map(|(k, r)| {
            let mut meta = plan.metadata.clone();
            add_shard_keys(&mut meta, &set_id, &index, k + 1, n);
            let shard_assets = if k == 0 { assets } else { &[] };
            ShardPlan {
                file: shard_file_name(&stem, k + 1, n),
                first: r.start,
                tensors: r.len(),
                assets: k == 0,
                output: layout(&tensors[r.clone()], shard_assets, &meta),
            }
        })
        .collect();
    Ok(SetPlan {
        shards,
        plans,
        set_id,
        index,
    })
}

/// Where the shards go: one file, or a set.
pub(crate) enum Sink {
    /// A single file: its writer until its one shard begins (boxed: a writer is larger than a
    /// set's).
    File(Option<Box<Writer>>, PathBuf),
    /// A set.
    Set(SetWriter, PathBuf),
}

impl Sink {
    /// The writer of shard `k` (from 0) and the path it will have.
    pub(crate) fn begin(&mut self, k: usize) -> Result<(Writer, PathBuf), ConvertError> {
        match self {
            Sink::File(w, path) => {
                let w = w
                    .take()
                    .ok_or_else(|| ConvertError::TooManyShards { shards: k + 1 })?;
                Ok((*w, path.clone()))
            }
            Sink::Set(set, dir) => {
                let path = dir.join(&set.shard_names()[k]);
                let w = set
                    .begin_shard()
                    .map_err(|e| ConvertError::from_write(&path, e))?;
                Ok((w, path))
            }
        }
    }

    /// Finishes the shard written by `w` (renamed into place for a single file, staged for a
    /// set).
    pub(crate) fn finish(&mut self, w: Writer, path: &Path) -> Result<WriteSummary, ConvertError> {
        match self {
            Sink::File(..) => w.finish(),
            Sink::Set(set, _) => set.finish_shard(w),
        }
        .map_err(|e| ConvertError::from_write(path, e))
    }

    /// Completes the output: for a set, the index, and every file renamed into place.
    pub(crate) fn commit(self) -> Result<Option<SetSummary>, ConvertError> {
        match self {
            Sink::File(..) => Ok(None),
            Sink::Set(set, _) => {
                let index = set.index_path();
                set.finish()
                    .map(Some)
                    .map_err(|e| ConvertError::from_write(&index, e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Decision, EncodeReason, RawReason};
    use qins_format::{Codec, Dtype};

    fn tensor(name: &str, n: u64, encoded: bool) -> TensorPlan {
        TensorPlan {
            name: name.into(),
            dtype: Dtype::F32,
            shape: vec![n],
            file: "model.safetensors".into(),
            decision: if encoded {
                Decision::Encode(EncodeReason::Matrix)
            } else {
                Decision::Raw(RawReason::LowRank)
            },
            storage: if encoded {
                Storage::Encoded {
                    codec: Codec::Log,
                    row_scales: false,
                }
            } else {
                Storage::Raw
            },
            source_bytes: 4 * n,
            stored_bytes: 0,
            bits_per_weight: 0.0,
        }
    }

    #[test]
    fn shards_fill_in_order_and_a_large_tensor_is_alone() {
        // Raw tensors of 4000 bytes take 4096 each with alignment 4096; the header 4096.
        let t: Vec<TensorPlan> = (0..5)
            .map(|i| tensor(&format!("t{i}"), 1000, false))
            .collect();
        let one = |r: Range<usize>| vec![r];
        assert_eq!(split(&t, &[], 100, 4096, u64::MAX), one(0..5));
        assert_eq!(split(&t, &[], 100, 4096, 3 * 4096), [0..2, 2..4, 4..5]);
        // A limit below one tensor: one shard each, never an empty one.
        assert_eq!(split(&t, &[], 100, 4096, 1), [0..1, 1..2, 2..3, 3..4, 4..5]);
        let big = vec![
            tensor("a", 10, false),
            tensor("b", 100_000, true),
            tensor("c", 10, false),
        ];
        assert_eq!(split(&big, &[], 100, 64, 50_000), [0..1, 1..2, 2..3]);
        assert_eq!(split(&[], &[], 100, 64, 1), one(0..0));
    }

    #[test]
    fn more_shards_than_a_set_may_have_is_an_error() {
        let n = MAX_SHARDS + 1;
        let t: Vec<TensorPlan> = (0..n).map(|i| tensor(&format!("t{i}"), 1, false)).collect();
        let ranges = split(&t, &[], 100, 64, 1);
        assert_eq!(ranges.len(), n);
        let plan = Plan {
            tensors: t
                .iter()
                .map(|x| {
                    qins_write::TensorSpec::new(x.name.clone(), x.dtype, x.shape.clone(), x.storage)
                })
                .collect(),
            ..Plan::default()
        };
        let e = plan_set(Path::new("m.qins"), &ranges, &plan, &t, &[], |_, _, _| {
            OutputBytes::default()
        })
        .err()
        .unwrap();
        assert!(
            matches!(e, ConvertError::TooManyShards { shards } if shards == n),
            "{e:?}"
        );
        assert!(e.to_string().contains("--max-shard-size"));
    }

    #[test]
    fn the_bound_is_never_below_the_exact_size() {
        let t = vec![
            tensor("encoded.weight", 12_345, true),
            tensor("raw", 77, false),
            tensor("empty", 0, true),
        ];
        let assets = [AssetFile {
            name: "config.json".into(),
            path: PathBuf::new(),
            size: 999,
        }];
        for align in [64, 4096] {
            let meta: BTreeMap<String, String> =
                [("qins.writer".to_string(), "x".repeat(50))].into();
            let exact = crate::layout(&t, &assets, &meta, align).file_size;
            let len = serde_json::to_vec(&meta).unwrap().len() as u64;
            let mut b = Bound::new(align, len, &assets);
            for x in &t {
                b = b.with(x);
            }
            assert!(b.size() >= exact, "{} < {exact}", b.size());
            assert!(b.size() < exact + 8 * u64::from(align), "a tight bound");
        }
    }
}

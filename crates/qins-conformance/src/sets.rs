//! The set suite (`spec/conformance.md` §20.5): valid sharded sets (§21), each described in
//! code as one [`Source`] per shard and written by `qins-write`, and invalid sets, each a valid
//! set with one precise fault.
//!
//! A valid set is written as `qins-write`'s set writer writes one: the set id derived from the
//! shards' plans ([`qins_write::set::set_id`]), the shard keys of §21.3 added to each plan, the
//! index in canonical form ([`qins_write::set::index_json`]). Faults are edits of those files:
//! a file removed, renamed, replaced by another set's or re-written from a changed source, or
//! the index edited (as JSON, re-written in canonical form, or as text for a syntax fault).

use std::collections::BTreeMap;

use qins_format::set::{
    index_file_name, shard_file_name, KEY_INDEX_FILE, KEY_SHARD, KEY_SHARD_COUNT,
};
use qins_format::{Codec, Dtype};
use qins_write::set::{add_shard_keys, index_json, set_id, ShardEntry};
use qins_write::Asset;
use serde_json::Value;

use crate::data::{f32_bytes, weights};
use crate::edit::{Editor, Section};
use crate::invalid::Stage::{self, Open, Verify};
use crate::manifest::{
    crc_hex, InvalidSetEntry, SetExpected, SetManifest, ValidSetEntry, SETS_SCHEMA,
    SET_EXPECTED_SCHEMA,
};
use crate::valid::{self, Builder, Source, TensorData};
use crate::Error;

/// The stem of every set's files: `model-0000k-of-0000n.qins` and `model.qins.index.json`.
pub const STEM: &str = "model";

/// The index's file name in every set.
pub fn index_name() -> String {
    index_file_name(STEM)
}

/// Shard `k` (from 1) of `n`'s file name.
pub fn shard_name(k: usize, n: usize) -> String {
    shard_file_name(STEM, k, n)
}

/// One valid set: `sets/valid/NAME/` and `sets/valid/NAME.expected.json`.
#[derive(Clone, Copy, Debug)]
pub struct SetCase {
    /// The directory name.
    pub name: &'static str,
    /// What the set covers, in one line.
    pub covers: &'static str,
    /// The shards' source descriptions, in order, without the shard keys.
    pub shards: fn() -> Vec<Source>,
}

/// Every valid set.
pub fn cases() -> Vec<SetCase> {
    vec![
        SetCase {
            name: "three_shards",
            covers:
                "three shards, alignment 64: assets and two tensors in shard 1, two tensors in \
                     each of the others; raw BF16, F32 and I64 tensors and the `lloyd-rows`, \
                     `log` and `linear` codecs; the base of most invalid sets",
            shards: three_shards,
        },
        SetCase {
            name: "one_shard",
            covers: "a set of one shard (valid, though a writer writes such a model as a single \
                     file): a tensor and an asset",
            shards: one_shard,
        },
        SetCase {
            name: "assets_first",
            covers: "two shards, the first holding only the assets (a shard may hold no tensor)",
            shards: assets_first,
        },
    ]
}

fn meta(b: Builder, set: &str) -> Builder {
    b.meta("qins.source", &format!("conformance/sets/{set}"))
        .meta("qins.writer", "qins-conformance")
}

fn bf16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
        .collect()
}

fn three_shards() -> Vec<Source> {
    let attn = weights(91, 32, Dtype::F32);
    let attn_scales = qins_format::codec::row_scales(Codec::LloydRows, &attn, &[4, 8])
        .expect("finite values")
        .expect("lloyd-rows has row scales");
    vec![
        meta(Builder::new(64), "three_shards")
            .asset(
                "config.json",
                br#"{"model_type":"llama","num_hidden_layers":2}"#,
            )
            .asset(
                "tokenizer.json",
                br#"{"version":"1.0","model":{"type":"BPE"}}"#,
            )
            .raw(
                "model.embed_tokens.weight",
                Dtype::BF16,
                &[4, 3],
                bf16_bytes(&weights(92, 12, Dtype::BF16)),
            )
            .encoded(
                "model.layers.0.attn.weight",
                Dtype::F32,
                &[4, 8],
                Codec::LloydRows,
                attn,
                Some(attn_scales),
            )
            .done(),
        meta(Builder::new(64), "three_shards")
            .encoded(
                "model.layers.0.mlp.weight",
                Dtype::BF16,
                &[3, 8],
                Codec::Log,
                weights(93, 24, Dtype::BF16),
                None,
            )
            .raw(
                "model.layers.0.norm.weight",
                Dtype::F32,
                &[8],
                f32_bytes(&weights(94, 8, Dtype::F32)),
            )
            .done(),
        meta(Builder::new(64), "three_shards")
            .encoded(
                "model.layers.1.mlp.weight",
                Dtype::F16,
                &[2, 8],
                Codec::Linear,
                weights(95, 16, Dtype::F16),
                None,
            )
            .raw(
                "model.positions",
                Dtype::I64,
                &[3],
                [0i64, 1, 2].iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
            .done(),
    ]
}

fn one_shard() -> Vec<Source> {
    vec![meta(Builder::new(64), "one_shard")
        .asset("config.json", br#"{"model_type":"bert"}"#)
        .encoded(
            "encoder.weight",
            Dtype::F32,
            &[2, 4],
            Codec::Log,
            weights(96, 8, Dtype::F32),
            None,
        )
        .done()]
}

fn assets_first() -> Vec<Source> {
    vec![
        meta(Builder::new(64), "assets_first")
            .asset("config.json", br#"{"model_type":"gpt2"}"#)
            .asset(
                "1_Pooling/config.json",
                br#"{"pooling_mode_mean_tokens":true}"#,
            )
            .done(),
        meta(Builder::new(64), "assets_first")
            .raw(
                "model.layers.0.mlp.weight",
                Dtype::F32,
                &[2],
                f32_bytes(&[0.5, -1.5]),
            )
            .done(),
    ]
}

/// A set's files, by file name.
pub type Files = BTreeMap<String, Vec<u8>>;

/// A valid set, written.
#[derive(Clone, Debug)]
pub struct BuiltSet {
    /// The index and the shards.
    pub files: Files,
    /// The shards' sources, with the shard keys.
    pub sources: Vec<Source>,
    /// What a reader must find in it.
    pub expected: SetExpected,
}

/// The header CRC of a `.qins` file's bytes (§8).
fn header_crc(bytes: &[u8]) -> u32 {
    let h = Editor::new(bytes.to_vec()).header_end();
    u32::from_le_bytes([bytes[h - 4], bytes[h - 3], bytes[h - 2], bytes[h - 1]])
}

/// Writes a set from its shards' sources (without the shard keys).
pub fn build_sources(name: &str, mut sources: Vec<Source>) -> Result<BuiltSet, Error> {
    let n = sources.len();
    let plans: Vec<_> = sources.iter().map(|s| s.plan.clone()).collect();
    let id = set_id(&plans);
    let mut files = Files::new();
    let mut entries = Vec::new();
    let mut weight_map = BTreeMap::new();
    let mut shards = Vec::new();
    for (k, source) in sources.iter_mut().enumerate() {
        add_shard_keys(&mut source.plan.metadata, &id, &index_name(), k + 1, n);
        let file = shard_name(k + 1, n);
        let bytes = valid::write(source).map_err(|e| Error::Write {
            case: format!("sets/{name}/{file}"),
            source: e,
        })?;
        let mut expected = valid::expected(&file, source).map_err(|reason| Error::Source {
            case: format!("sets/{name}/{file}"),
            reason,
        })?;
        expected.file_size = bytes.len() as u64;
        expected.file_crc32 = crc_hex(crc32fast::hash(&bytes));
        for t in &source.plan.tensors {
            weight_map.insert(t.name.clone(), file.clone());
        }
        entries.push(ShardEntry {
            file: file.clone(),
            size: bytes.len() as u64,
            header_crc32: header_crc(&bytes),
        });
        shards.push(expected);
        files.insert(file, bytes);
    }
    files.insert(
        index_name(),
        index_json(&id, &entries, &weight_map).into_bytes(),
    );
    let (major, minor) = qins_format::set::INDEX_FORMAT_VERSION;
    Ok(BuiltSet {
        files,
        sources,
        expected: SetExpected {
            schema: SET_EXPECTED_SCHEMA.into(),
            index: index_name(),
            set_id: id,
            format_version: [major, minor],
            shards,
        },
    })
}

/// Writes the valid set `case`.
pub fn build(case: &SetCase) -> Result<BuiltSet, Error> {
    build_sources(case.name, (case.shards)())
}

/// An invalid set being made from a valid one.
pub struct Fault<'a> {
    /// The files, to edit.
    pub files: Files,
    base: &'a BuiltSet,
    others: &'a BTreeMap<&'static str, BuiltSet>,
}

impl Fault<'_> {
    /// The index as JSON.
    pub fn index(&self) -> Value {
        serde_json::from_slice(&self.files[&index_name()]).expect("the base's index is JSON")
    }

    /// Replaces the index by `v` in canonical form (§21.2).
    pub fn set_index(&mut self, v: &Value) {
        let mut text = serde_json::to_string_pretty(v).expect("JSON serializes");
        text.push('\n');
        self.files.insert(index_name(), text.into_bytes());
    }

    /// Edits the index as JSON.
    pub fn edit_index(&mut self, f: impl FnOnce(&mut Value)) {
        let mut v = self.index();
        f(&mut v);
        self.set_index(&v);
    }

    /// Replaces `from` by `to` once in the index's text.
    pub fn edit_index_text(&mut self, from: &str, to: &str) {
        let text = String::from_utf8(self.files[&index_name()].clone()).expect("UTF-8");
        assert!(text.contains(from), "the index has no {from:?}");
        self.files
            .insert(index_name(), text.replacen(from, to, 1).into_bytes());
    }

    /// Removes a file.
    pub fn remove(&mut self, name: &str) {
        self.files.remove(name).expect("a file of the set");
    }

    /// File `name`'s bytes.
    pub fn file(&mut self, name: &str) -> &mut Vec<u8> {
        self.files.get_mut(name).expect("a file of the set")
    }

    /// Re-writes shard `k` (from 1) from its source as `change` leaves it (the shard keys
    /// kept), and returns the new bytes; the index is not changed.
    pub fn rewrite_shard(&mut self, k: usize, change: impl FnOnce(&mut Source)) -> Vec<u8> {
        let mut source = self.base.sources[k - 1].clone();
        change(&mut source);
        let bytes = valid::write(&source).expect("the changed source writes");
        let n = self.base.sources.len();
        self.files.insert(shard_name(k, n), bytes.clone());
        bytes
    }

    /// Re-writes shard `k` (from 1) with its metadata changed by `change` (the shard keys are
    /// in it), and makes the index's entry agree with the new bytes: the only fault is the
    /// change.
    pub fn rewrite_metadata(
        &mut self,
        k: usize,
        change: impl FnOnce(&mut BTreeMap<String, String>),
    ) {
        let bytes = self.rewrite_shard(k, |s| change(&mut s.plan.metadata));
        self.update_entry(k, &bytes);
    }

    /// Sets the index's entry of shard `k` (from 1) to the size and header CRC of `bytes`, and
    /// its `total_size` to match.
    pub fn update_entry(&mut self, k: usize, bytes: &[u8]) {
        let (size, crc) = (bytes.len() as u64, header_crc(bytes));
        self.edit_index(|v| {
            let shards = v["shards"].as_array_mut().expect("shards");
            shards[k - 1]["size"] = size.into();
            shards[k - 1]["header_crc32"] = format!("{crc:08x}").into();
            let total: u64 = shards
                .iter()
                .map(|s| s["size"].as_u64().expect("size"))
                .sum();
            v["metadata"]["total_size"] = total.into();
        });
    }

    /// A file of another valid set.
    pub fn other(&self, set: &str, file: &str) -> Vec<u8> {
        self.others[set].files[file].clone()
    }
}

/// One invalid set: `sets/invalid/NAME/`.
#[derive(Clone, Copy)]
pub struct SetFault {
    /// The directory name.
    pub name: &'static str,
    /// The valid set it is made from.
    pub base: &'static str,
    /// The file to open the set from.
    pub open: &'static str,
    /// The kind a reader must report.
    pub kind: &'static str,
    /// When.
    pub stage: Stage,
    /// The file the error concerns.
    pub file: &'static str,
    /// The section whose rule the set breaks.
    pub spec: &'static str,
    /// The fault, in one line.
    pub description: &'static str,
    /// Applies the fault.
    pub apply: fn(&mut Fault<'_>),
}

impl SetFault {
    /// The manifest entry.
    pub fn entry(&self) -> InvalidSetEntry {
        InvalidSetEntry {
            dir: format!("invalid/{}", self.name),
            open: self.open.into(),
            kind: self.kind.into(),
            stage: self.stage.as_str().into(),
            file: self.file.into(),
            spec: self.spec.into(),
            base: self.base.into(),
            description: self.description.into(),
        }
    }

    /// Makes the invalid set from its base and the other valid sets.
    pub fn apply(&self, sets: &BTreeMap<&'static str, BuiltSet>) -> Result<Files, Error> {
        let base = sets.get(self.base).ok_or_else(|| Error::UnknownBase {
            case: format!("sets/invalid/{}", self.name),
            base: self.base.into(),
        })?;
        let mut f = Fault {
            files: base.files.clone(),
            base,
            others: sets,
        };
        (self.apply)(&mut f);
        Ok(f.files)
    }
}

impl std::fmt::Debug for SetFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetFault")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

const IDX: &str = "model.qins.index.json";
const S1: &str = "model-00001-of-00003.qins";
const S2: &str = "model-00002-of-00003.qins";
const S3: &str = "model-00003-of-00003.qins";

macro_rules! fault {
    ($name:literal, $open:expr, $kind:literal, $stage:ident, $file:expr, $spec:literal, $desc:literal, $f:expr) => {
        SetFault {
            name: $name,
            base: "three_shards",
            open: $open,
            kind: $kind,
            stage: $stage,
            file: $file,
            spec: $spec,
            description: $desc,
            apply: $f,
        }
    };
}

/// Every invalid set, in the order of the checks of §21.5 (and §14 last).
pub fn faults() -> Vec<SetFault> {
    vec![
        // Which file a path is.
        fault!(
            "index_not_named_json",
            "model.qins.index",
            "BadMagic",
            Open,
            "model.qins.index",
            "§21.5",
            "the set is opened from model.qins.index, a copy of the index under a name that does \
             not end in .json: without the magic, and not named as an index, it is opened as a \
             .qins file",
            |f| {
                let index = f.files[&index_name()].clone();
                f.files.insert("model.qins.index".into(), index);
            }
        ),
        // Step 1: the index.
        fault!(
            "bad_index_syntax",
            IDX,
            "BadIndex",
            Open,
            IDX,
            "§21.2",
            "the index is not JSON: a trailing comma after the last member of weight_map",
            |f| f.edit_index_text(".qins\"\n  }\n}", ".qins\",\n  }\n}")
        ),
        fault!(
            "bad_index_duplicate_key",
            IDX,
            "BadIndex",
            Open,
            IDX,
            "§21.2",
            "weight_map has the key \"model.positions\" twice (with the same value)",
            |f| f.edit_index_text(
                "  \"model.positions\": \"model-00003-of-00003.qins\"",
                "  \"model.positions\": \"model-00003-of-00003.qins\",\n    \
                 \"model.positions\": \"model-00003-of-00003.qins\""
            )
        ),
        fault!(
            "bad_index_bom",
            IDX,
            "BadIndex",
            Open,
            IDX,
            "§21.2",
            "the index starts with a UTF-8 byte-order mark (EF BB BF)",
            |f| {
                let mut text = vec![0xEF, 0xBB, 0xBF];
                text.extend_from_slice(&f.files[&index_name()]);
                f.files.insert(index_name(), text);
            }
        ),
        fault!(
            "bad_index_lone_surrogate",
            IDX,
            "BadIndex",
            Open,
            IDX,
            "§21.2",
            "metadata has a member \"comment\" that a reader does not know, whose value is the \
             escape \\ud800, a lone surrogate: not Unicode, wherever it is",
            |f| f.edit_index_text(
                "    \"format\": \"qins\",",
                "    \"comment\": \"\\ud800\",\n    \"format\": \"qins\","
            )
        ),
        fault!(
            "bad_index_format",
            IDX,
            "BadIndex",
            Open,
            IDX,
            "§21.2",
            "metadata.format is \"safetensors\"",
            |f| f.edit_index(|v| v["metadata"]["format"] = "safetensors".into())
        ),
        fault!(
            "unsupported_index_version",
            IDX,
            "UnsupportedVersion",
            Open,
            IDX,
            "§21.2",
            "metadata.format_version is \"2.0\"",
            |f| f.edit_index(|v| v["metadata"]["format_version"] = "2.0".into())
        ),
        fault!(
            "bad_index_version",
            IDX,
            "BadIndex",
            Open,
            IDX,
            "§21.2",
            "metadata.format_version is \"1.01\" (a leading zero)",
            |f| f.edit_index(|v| v["metadata"]["format_version"] = "1.01".into())
        ),
        fault!(
            "limit_shard_count",
            IDX,
            "LimitExceeded",
            Open,
            IDX,
            "§21.7",
            "the index lists 65537 shards (written compactly, 3 MB): the three and 65534 \
             entries `{\"file\":\"xK\",\"header_crc32\":\"0\",\"size\":0}`; those entries \
             and metadata.set_id \"a b\" break §21.2 too, but the count is checked first \
             (§21.5 step 1)",
            |f| {
                let mut v = f.index();
                v["metadata"]["set_id"] = "a b".into();
                let shards = v["shards"].as_array_mut().expect("shards");
                for k in shards.len() + 1..=qins_format::set::limits::MAX_SHARDS + 1 {
                    shards.push(serde_json::json!({
                        "file": format!("x{k}"),
                        "header_crc32": "0",
                        "size": 0,
                    }));
                }
                let text = serde_json::to_vec(&v).expect("JSON serializes");
                f.files.insert(index_name(), text);
            }
        ),
        fault!(
            "bad_index_set_id",
            IDX,
            "BadIndex",
            Open,
            IDX,
            "§21.2",
            "metadata.set_id is \"a b\" (a space)",
            |f| f.edit_index(|v| v["metadata"]["set_id"] = "a b".into())
        ),
        fault!(
            "bad_index_shard_file",
            IDX,
            "BadIndex",
            Open,
            IDX,
            "§21.2",
            "shard 2's file is \"../model-00002-of-00003.qins\" (not a plain file name; the \
             weight map follows it)",
            |f| f.edit_index(|v| {
                let bad = format!("../{S2}");
                v["shards"][1]["file"] = bad.clone().into();
                for (_, file) in v["weight_map"].as_object_mut().expect("map").iter_mut() {
                    if file == S2 {
                        *file = bad.clone().into();
                    }
                }
            })
        ),
        fault!(
            "bad_index_duplicate_shard",
            IDX,
            "BadIndex",
            Open,
            IDX,
            "§21.2",
            "shard 3's file is shard 2's (a file listed twice)",
            |f| f.edit_index(|v| v["shards"][2]["file"] = S2.into())
        ),
        fault!(
            "bad_index_header_crc",
            IDX,
            "BadIndex",
            Open,
            IDX,
            "§21.2",
            "shard 1's header_crc32 is \"DEADBEEF\" (upper case)",
            |f| f.edit_index(|v| v["shards"][0]["header_crc32"] = "DEADBEEF".into())
        ),
        fault!(
            "bad_index_size_type",
            IDX,
            "BadIndex",
            Open,
            IDX,
            "§21.2",
            "shard 1's size is written with a fraction (`.0` appended)",
            |f| {
                let size = f.index()["shards"][0]["size"].as_u64().expect("size");
                f.edit_index_text(&format!("\"size\": {size}"), &format!("\"size\": {size}.0"));
            }
        ),
        fault!(
            "bad_index_negative_zero",
            IDX,
            "BadIndex",
            Open,
            IDX,
            "§21.2",
            "shard 1's size is written `-0`, which is not an integer (it has a sign), and \
             total_size is the sum of the other two (so a reader that reads -0 as 0 passes step \
             1 and fails at step 3 instead)",
            |f| {
                let v = f.index();
                let size = v["shards"][0]["size"].as_u64().expect("size");
                let total = v["metadata"]["total_size"].as_u64().expect("total");
                f.edit_index_text(&format!("\"size\": {size}"), "\"size\": -0");
                f.edit_index_text(
                    &format!("\"total_size\": {total}"),
                    &format!("\"total_size\": {}", total - size),
                );
            }
        ),
        fault!(
            "bad_index_total_size",
            IDX,
            "BadIndex",
            Open,
            IDX,
            "§21.2",
            "metadata.total_size is one more than the sum of the shards' sizes",
            |f| f.edit_index(|v| {
                let t = v["metadata"]["total_size"].as_u64().expect("total");
                v["metadata"]["total_size"] = (t + 1).into();
            })
        ),
        fault!(
            "bad_index_weight_map_file",
            IDX,
            "BadIndex",
            Open,
            IDX,
            "§21.2",
            "weight_map puts \"model.positions\" in \"model-00004-of-00003.qins\", which is \
             not a listed shard",
            |f| f.edit_index(|v| {
                v["weight_map"]["model.positions"] = "model-00004-of-00003.qins".into();
            })
        ),
        // Step 2: every shard is there.
        fault!(
            "missing_shard",
            IDX,
            "MissingShard",
            Open,
            S2,
            "§21.5",
            "shard 2 is deleted",
            |f| f.remove(S2)
        ),
        fault!(
            "missing_shard_from_shard",
            S1,
            "MissingShard",
            Open,
            S3,
            "§21.5",
            "shard 3 is deleted, and the set is opened from shard 1",
            |f| f.remove(S3)
        ),
        // Step 3: each shard.
        fault!(
            "shard_truncated",
            IDX,
            "Truncated",
            Open,
            S2,
            "§21.5",
            "shard 2's last byte is cut off (an interrupted download)",
            |f| {
                f.file(S2).pop();
            }
        ),
        fault!(
            "shard_header_checksum",
            IDX,
            "HeaderChecksum",
            Open,
            S3,
            "§21.5",
            "one bit of shard 3's header flipped (a tensor name's first letter), its header \
             CRC left as it was",
            |f| {
                let mut e = Editor::new(std::mem::take(f.file(S3)));
                e.tensor_name(0)[0] ^= 0x20;
                e.keep_header_crc();
                *f.file(S3) = e.finish();
            }
        ),
        fault!(
            "foreign_shard",
            IDX,
            "ForeignShard",
            Open,
            S2,
            "§21.5",
            "shard 2 is replaced by shard 2 of the set assets_first (another set id)",
            |f| *f.file(S2) = f.other("assets_first", "model-00002-of-00002.qins")
        ),
        fault!(
            "foreign_shard_single_file",
            IDX,
            "ForeignShard",
            Open,
            S2,
            "§21.5",
            "shard 2 is replaced by a single-file model (no qins.set.id)",
            |f| *f.file(S2) = valid::write(
                &valid::cases()
                    .into_iter()
                    .find(|c| c.name == "mixed")
                    .map(|c| (c.source)())
                    .expect("mixed")
            )
            .expect("mixed writes")
        ),
        fault!(
            "misplaced_shard_swapped",
            IDX,
            "MisplacedShard",
            Open,
            S2,
            "§21.5",
            "shards 2 and 3 exchange file names",
            |f| {
                let (a, b) = (f.files.remove(S2), f.files.remove(S3));
                f.files.insert(S2.into(), b.expect("shard 3"));
                f.files.insert(S3.into(), a.expect("shard 2"));
            }
        ),
        fault!(
            "misplaced_shard_count",
            IDX,
            "MisplacedShard",
            Open,
            S1,
            "§21.5",
            "the index lists shards 1 and 2 only (and their tensors); shard 3 is still there; \
             shard 1 says it is 1 of 3",
            |f| f.edit_index(|v| {
                let size = v["shards"][2]["size"].as_u64().expect("size");
                v["shards"].as_array_mut().expect("shards").pop();
                let t = v["metadata"]["total_size"].as_u64().expect("total");
                v["metadata"]["total_size"] = (t - size).into();
                v["weight_map"]
                    .as_object_mut()
                    .expect("map")
                    .retain(|_, file| file != S3);
            })
        ),
        fault!(
            "misplaced_shard_not_canonical",
            IDX,
            "MisplacedShard",
            Open,
            S2,
            "§21.5",
            "shard 2's qins.set.shard is \"02\" (a leading zero: not canonical decimal), its \
             index entry updated to match",
            |f| f.rewrite_metadata(2, |m| {
                m.insert(KEY_SHARD.into(), "02".into());
            })
        ),
        fault!(
            "misplaced_shard_key_absent",
            IDX,
            "MisplacedShard",
            Open,
            S2,
            "§21.5",
            "shard 2 has no qins.set.shard_count, its index entry updated to match",
            |f| f.rewrite_metadata(2, |m| {
                m.remove(KEY_SHARD_COUNT);
            })
        ),
        fault!(
            "index_mismatch_size",
            IDX,
            "IndexMismatch",
            Open,
            S2,
            "§21.5",
            "the index gives shard 2 one byte more than it has (total_size follows)",
            |f| f.edit_index(|v| {
                let s = v["shards"][1]["size"].as_u64().expect("size");
                v["shards"][1]["size"] = (s + 1).into();
                let t = v["metadata"]["total_size"].as_u64().expect("total");
                v["metadata"]["total_size"] = (t + 1).into();
            })
        ),
        fault!(
            "index_mismatch_header_crc",
            IDX,
            "IndexMismatch",
            Open,
            S2,
            "§21.5",
            "the index gives shard 2 another header CRC (its lowest bit flipped)",
            |f| f.edit_index(|v| {
                let crc = v["shards"][1]["header_crc32"].as_str().expect("crc");
                let crc = u32::from_str_radix(crc, 16).expect("hex") ^ 1;
                v["shards"][1]["header_crc32"] = format!("{crc:08x}").into();
            })
        ),
        fault!(
            "index_mismatch_contents",
            IDX,
            "IndexMismatch",
            Open,
            S2,
            "§21.5",
            "shard 2 is re-written from a changed source (one raw value), with the same set id \
             and position and the same size: only its header CRC tells it apart",
            |f| {
                f.rewrite_shard(2, |s| {
                    if let TensorData::Raw(bytes) = &mut s.data[1] {
                        bytes[0] ^= 1;
                    }
                });
            }
        ),
        fault!(
            "misplaced_asset",
            IDX,
            "MisplacedAsset",
            Open,
            S2,
            "§21.4",
            "shard 2 carries an asset (its index entry updated to match)",
            |f| {
                let bytes = f.rewrite_shard(2, |s| {
                    s.plan.assets.push(Asset {
                        name: "generation_config.json".into(),
                        data: b"{}".to_vec(),
                    });
                });
                f.update_entry(2, &bytes);
            }
        ),
        // Step 4: each tensor in one shard.
        fault!(
            "duplicate_tensor",
            IDX,
            "DuplicateTensor",
            Open,
            S3,
            "§21.4",
            "shard 3 also holds a tensor \"model.layers.0.norm.weight\", which shard 2 holds \
             (its index entry updated to match; the weight map names shard 2)",
            |f| {
                let bytes = f.rewrite_shard(3, |s| {
                    s.plan.tensors.push(qins_write::TensorSpec::new(
                        "model.layers.0.norm.weight",
                        Dtype::U8,
                        vec![2],
                        qins_format::Storage::Raw,
                    ));
                    s.data.push(TensorData::Raw(vec![1, 2]));
                });
                f.update_entry(3, &bytes);
            }
        ),
        // Step 5: the weight map.
        fault!(
            "index_mismatch_weight_map",
            IDX,
            "IndexMismatch",
            Open,
            S2,
            "§21.5",
            "the weight map puts shard 2's \"model.layers.0.mlp.weight\" in shard 3",
            |f| f.edit_index(|v| v["weight_map"]["model.layers.0.mlp.weight"] = S3.into())
        ),
        fault!(
            "index_mismatch_unmapped",
            IDX,
            "IndexMismatch",
            Open,
            S3,
            "§21.5",
            "the weight map has no entry for shard 3's \"model.positions\"",
            |f| f.edit_index(|v| {
                v["weight_map"]
                    .as_object_mut()
                    .expect("map")
                    .remove("model.positions");
            })
        ),
        fault!(
            "index_mismatch_extra_entry",
            IDX,
            "IndexMismatch",
            Open,
            IDX,
            "§21.5",
            "the weight map lists \"model.extra.weight\" in shard 1, which no shard holds",
            |f| f.edit_index(|v| v["weight_map"]["model.extra.weight"] = S1.into())
        ),
        // Opened from a shard.
        fault!(
            "missing_index",
            S1,
            "MissingIndex",
            Open,
            IDX,
            "§21.5",
            "the index is deleted, and the set is opened from shard 1",
            |f| f.remove(IDX)
        ),
        fault!(
            "missing_index_key_absent",
            S1,
            "MissingIndex",
            Open,
            S1,
            "§21.5",
            "shard 1 has no qins.set.index_file (its index entry updated to match), and the set \
             is opened from it: the error names the shard",
            |f| f.rewrite_metadata(1, |m| {
                m.remove(KEY_INDEX_FILE);
            })
        ),
        fault!(
            "missing_index_not_a_file_name",
            S1,
            "MissingIndex",
            Open,
            S1,
            "§21.5",
            "shard 1's qins.set.index_file is \"../model.qins.index.json\", not a file name (its \
             index entry updated to match), and the set is opened from it: the error names the \
             shard",
            |f| f.rewrite_metadata(1, |m| {
                m.insert(KEY_INDEX_FILE.into(), format!("../{}", index_name()));
            })
        ),
        fault!(
            "unlisted_shard_other_set",
            "model-00002-of-00002.qins",
            "UnlistedShard",
            Open,
            "model-00002-of-00002.qins",
            "§21.5",
            "shard 2 of the set assets_first, whose index has the same name, is put beside this \
             set and the set is opened from it: this index does not list it",
            |f| {
                let other = f.other("assets_first", "model-00002-of-00002.qins");
                f.files.insert("model-00002-of-00002.qins".into(), other);
            }
        ),
        fault!(
            "unlisted_shard",
            "model-00004-of-00004.qins",
            "UnlistedShard",
            Open,
            "model-00004-of-00004.qins",
            "§21.5",
            "the set is opened from model-00004-of-00004.qins, a copy of shard 3 the index \
             does not list (an extra file left by another conversion)",
            |f| {
                let extra = f.file(S3).clone();
                f.files.insert("model-00004-of-00004.qins".into(), extra);
            }
        ),
        // Verification (§14) of each shard.
        fault!(
            "shard_data_checksum",
            IDX,
            "DataChecksum",
            Verify,
            S3,
            "§21.5",
            "one bit of shard 3's first tensor data flipped (its header, and so the index, \
             unchanged)",
            |f| {
                let mut e = Editor::new(std::mem::take(f.file(S3)));
                e.section_bytes(Section::Data(0))[0] ^= 0x01;
                e.keep_header_crc();
                *f.file(S3) = e.finish();
            }
        ),
    ]
}

/// The set manifest (§20.5.2).
pub fn manifest() -> SetManifest {
    SetManifest {
        schema: SETS_SCHEMA.into(),
        valid: cases()
            .iter()
            .map(|c| {
                let n = (c.shards)().len();
                ValidSetEntry {
                    dir: format!("valid/{}", c.name),
                    index: index_name(),
                    shards: (1..=n).map(|k| shard_name(k, n)).collect(),
                    expected: format!("valid/{}.expected.json", c.name),
                    description: c.covers.into(),
                }
            })
            .collect(),
        invalid: faults().iter().map(SetFault::entry).collect(),
    }
}

/// Every valid set, written, by name.
pub fn build_all() -> Result<BTreeMap<&'static str, BuiltSet>, Error> {
    cases().iter().map(|c| Ok((c.name, build(c)?))).collect()
}

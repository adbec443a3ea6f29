//! Writing a sharded set (spec §21): one [`Writer`] per shard, one after the other, and the
//! index last, all or nothing.
//!
//! [`SetWriter::create`] takes one [`Plan`] per shard (the caller decides which tensors go
//! where), derives the set id from them ([`set_id`]), adds the shard keys of §21.3 to each
//! plan's metadata, and makes a staging directory `.INDEX.XXXXXX.tmp` beside the targets. Each
//! shard is then written through an ordinary [`Writer`] into that directory
//! ([`SetWriter::begin_shard`], then [`SetWriter::finish_shard`]); [`SetWriter::finish`]
//! writes the index ([`index_json`]) and renames the shards, then the index, into place. So the
//! index appears only beside complete shards; a failure before that leaves no file at any
//! target, and a failure during the renames removes those already made. A staging directory
//! left by a process killed while writing is removed by the next set writer of the same index
//! (`qins_stdx::remove_stale`).
//!
//! ```no_run
//! use qins_format::{Dtype, Storage};
//! use qins_write::set::SetWriter;
//! use qins_write::{Plan, TensorSpec};
//!
//! let plans: Vec<Plan> = ["a", "b"]
//!     .iter()
//!     .map(|name| {
//!         let mut p = Plan::new();
//!         p.tensors.push(TensorSpec::new(*name, Dtype::U8, vec![4], Storage::Raw));
//!         p
//!     })
//!     .collect();
//! let mut set = SetWriter::create("out".as_ref(), "model", plans, false)?;
//! for _ in 0..2 {
//!     let mut w = set.begin_shard()?;
//!     w.write_raw(&[1, 2, 3, 4])?;
//!     set.finish_shard(w)?;
//! }
//! let summary = set.finish()?; // out/model-0000{1,2}-of-00002.qins, out/model.qins.index.json
//! # Ok::<(), qins_write::WriteError>(())
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use qins_format::set::{
    index_file_name, shard_file_name, INDEX_FORMAT, INDEX_FORMAT_VERSION, KEY_INDEX_FILE,
    KEY_SET_ID, KEY_SHARD, KEY_SHARD_COUNT,
};
use qins_stdx::{remove_stale, Temporary};
use serde::Serialize;

use crate::{invalid, Plan, WriteError, WriteSummary, Writer};

/// One shard as the index lists it (§21.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardEntry {
    /// The file name, in the index's directory.
    pub file: String,
    /// The file's length in bytes.
    pub size: u64,
    /// Its header CRC (§8).
    pub header_crc32: u32,
}

#[derive(Serialize)]
struct IndexJson<'a> {
    metadata: IndexMetadata<'a>,
    shards: Vec<ShardJson<'a>>,
    weight_map: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct IndexMetadata<'a> {
    format: &'static str,
    format_version: String,
    set_id: &'a str,
    total_size: u64,
}

#[derive(Serialize)]
struct ShardJson<'a> {
    file: &'a str,
    header_crc32: String,
    size: u64,
}

/// The index of a set in canonical form (§21.2): members sorted by key at every level,
/// two-space indentation, a final newline. `weight_map` maps each tensor to its shard's file.
pub fn index_json(
    set_id: &str,
    shards: &[ShardEntry],
    weight_map: &BTreeMap<String, String>,
) -> String {
    let (major, minor) = INDEX_FORMAT_VERSION;
    let index = IndexJson {
        metadata: IndexMetadata {
            format: INDEX_FORMAT,
            format_version: format!("{major}.{minor}"),
            set_id,
            total_size: shards.iter().map(|s| s.size).sum(),
        },
        shards: shards
            .iter()
            .map(|s| ShardJson {
                file: &s.file,
                header_crc32: format!("{:08x}", s.header_crc32),
                size: s.size,
            })
            .collect(),
        weight_map,
    };
    let mut text = serde_json::to_string_pretty(&index).expect("an index serializes");
    text.push('\n');
    text
}

/// FNV-1a, 64 bits: a small, fixed, dependency-free digest. The set id needs to differ
/// between sets that could meet, not to resist an adversary: a shard's contents are pinned by
/// the header CRC that the index records (§21.4).
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(&mut self, bytes: &[u8]) -> &mut Fnv {
        // Length first, so that the fields of a description cannot run into each other.
        for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }
    fn u64(&mut self, x: u64) -> &mut Fnv {
        self.bytes(&x.to_le_bytes())
    }
}

/// The set id `qins-write` derives for shards with these plans (§21.4): 16 lower-case hex
/// digits of a digest of everything that determines their bytes apart from the tensors'
/// values: the number of shards, and in each its alignment, metadata, tensors (name, dtype,
/// shape, storage) and assets (name and CRC-32 of the bytes). The same plans give the same id.
pub fn set_id(plans: &[Plan]) -> String {
    let mut h = Fnv::new();
    h.bytes(b"qins set").u64(plans.len() as u64);
    for p in plans {
        h.u64(u64::from(p.alignment)).u64(p.metadata.len() as u64);
        for (k, v) in &p.metadata {
            h.bytes(k.as_bytes()).bytes(v.as_bytes());
        }
        h.u64(p.tensors.len() as u64);
        for t in &p.tensors {
            h.bytes(t.name.as_bytes()).u64(u64::from(t.dtype.code()));
            h.u64(t.shape.len() as u64);
            for &d in &t.shape {
                h.u64(d);
            }
            match t.storage {
                qins_format::Storage::Raw => h.u64(0),
                qins_format::Storage::Encoded { codec, row_scales } => {
                    h.u64(u64::from(codec.id())).u64(u64::from(row_scales))
                }
            };
        }
        h.u64(p.assets.len() as u64);
        for a in &p.assets {
            h.bytes(a.name.as_bytes())
                .u64(u64::from(crc32fast::hash(&a.data)));
        }
    }
    format!("{:016x}", h.0)
}

/// Adds the shard keys of §21.3 to `metadata`: shard `k` (from 1) of `n`.
pub fn add_shard_keys(
    metadata: &mut BTreeMap<String, String>,
    set_id: &str,
    index_file: &str,
    k: usize,
    n: usize,
) {
    metadata.insert(KEY_SET_ID.into(), set_id.into());
    metadata.insert(KEY_INDEX_FILE.into(), index_file.into());
    metadata.insert(KEY_SHARD.into(), k.to_string());
    metadata.insert(KEY_SHARD_COUNT.into(), n.to_string());
}

/// What [`SetWriter::finish`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetSummary {
    /// The set id.
    pub set_id: String,
    /// The index's path.
    pub index: PathBuf,
    /// The index's length in bytes.
    pub index_bytes: u64,
    /// Each shard's path and what its writer wrote, in order.
    pub shards: Vec<(PathBuf, WriteSummary)>,
}

/// A set being written: see the [module documentation](self).
pub struct SetWriter {
    dir: PathBuf,
    index_name: String,
    names: Vec<String>,
    plans: std::vec::IntoIter<Plan>,
    overwrite: bool,
    staging: tempfile::TempDir,
    /// The staging directory opened and locked until the writer is dropped: it is in use.
    _lock: File,
    set_id: String,
    done: Vec<(ShardEntry, WriteSummary)>,
    weight_map: BTreeMap<String, String>,
}

impl SetWriter {
    /// Prepares to write the shards of `plans`, in order, as `DIR/STEM-0000k-of-0000n.qins`,
    /// and the index `DIR/STEM.qins.index.json` (§21.1). Each plan's metadata gets the shard
    /// keys (§21.3); a plan must not have them already. With `overwrite` false, any of the
    /// targets existing is refused now, and again at its rename.
    pub fn create(
        dir: &Path,
        stem: &str,
        mut plans: Vec<Plan>,
        overwrite: bool,
    ) -> Result<SetWriter, WriteError> {
        let n = plans.len();
        if n == 0 || n > qins_format::set::limits::MAX_SHARDS {
            return Err(invalid(
                "shards",
                format!("a set has 1 to 65536 shards, not {n} (§21.7)"),
            ));
        }
        let index_name = index_file_name(stem);
        let names: Vec<String> = (1..=n).map(|k| shard_file_name(stem, k, n)).collect();
        for name in names.iter().chain([&index_name]) {
            if !qins_format::set::is_valid_file_name(name) {
                return Err(invalid(
                    "target",
                    format!("{name:?} is not a plain file name (§21.2)"),
                ));
            }
            let path = dir.join(name);
            if !overwrite && path.exists() {
                return Err(WriteError::Exists { path });
            }
        }
        if let Some(p) = plans
            .iter()
            .find(|p| p.metadata.keys().any(|k| k.starts_with("qins.set.")))
        {
            let key = p
                .metadata
                .keys()
                .find(|k| k.starts_with("qins.set."))
                .cloned();
            return Err(invalid(
                format!("metadata key {:?}", key.unwrap_or_default()),
                "the set writer adds the shard keys itself (§21.3)",
            ));
        }
        let id = set_id(&plans);
        for (k, p) in plans.iter_mut().enumerate() {
            add_shard_keys(&mut p.metadata, &id, &index_name, k + 1, n);
        }
        let io_err = |source| WriteError::Io {
            path: dir.join(&index_name),
            source,
        };
        let parent = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let prefix = format!(".{index_name}.");
        // A staging directory left by a set writer killed while writing.
        remove_stale(parent, prefix.as_ref(), ".tmp".as_ref(), Temporary::Dir);
        let staging = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".tmp")
            .tempdir_in(parent)
            .map_err(io_err)?;
        let lock = File::open(staging.path()).map_err(io_err)?;
        // Tells a later writer's `remove_stale` that this directory is in use.
        let _ = lock.try_lock();
        Ok(SetWriter {
            dir: dir.into(),
            index_name,
            names,
            plans: plans.into_iter(),
            overwrite,
            staging,
            _lock: lock,
            set_id: id,
            done: Vec::with_capacity(n),
            weight_map: BTreeMap::new(),
        })
    }

    /// The set id.
    pub fn set_id(&self) -> &str {
        &self.set_id
    }

    /// The shards' file names, in order.
    pub fn shard_names(&self) -> &[String] {
        &self.names
    }

    /// The index's path.
    pub fn index_path(&self) -> PathBuf {
        self.dir.join(&self.index_name)
    }

    /// The writer of the next shard, which writes into the staging directory. Pass it to
    /// [`SetWriter::finish_shard`] when every tensor is written.
    pub fn begin_shard(&mut self) -> Result<Writer, WriteError> {
        let k = self.done.len();
        let plan = self.plans.next().ok_or_else(|| WriteError::Misuse {
            tensor: String::new(),
            reason: format!("every one of the {} shards is begun", self.names.len()),
        })?;
        Writer::create(&self.staging.path().join(&self.names[k]), plan, false)
    }

    /// Finishes the shard `w` (begun by [`SetWriter::begin_shard`]) and records it for the
    /// index.
    pub fn finish_shard(&mut self, w: Writer) -> Result<WriteSummary, WriteError> {
        let k = self.done.len();
        let file = self.names[k].clone();
        for t in &w.plan().tensors {
            self.weight_map.insert(t.name.clone(), file.clone());
        }
        let summary = w.finish()?;
        self.done.push((
            ShardEntry {
                file,
                size: summary.file_size,
                header_crc32: summary.header_crc32,
            },
            summary.clone(),
        ));
        Ok(summary)
    }

    /// Writes the index and renames every shard, then the index, into place. Every shard must
    /// have been finished.
    pub fn finish(self) -> Result<SetSummary, WriteError> {
        if self.done.len() < self.names.len() {
            return Err(WriteError::Misuse {
                tensor: String::new(),
                reason: format!(
                    "finish called after {} of {} shards",
                    self.done.len(),
                    self.names.len()
                ),
            });
        }
        let entries: Vec<ShardEntry> = self.done.iter().map(|(e, _)| e.clone()).collect();
        let text = index_json(&self.set_id, &entries, &self.weight_map);
        let staged_index = self.staging.path().join(&self.index_name);
        let io_at = |path: &Path| {
            let path = path.to_path_buf();
            move |source| WriteError::Io { path, source }
        };
        let mut f = File::create_new(&staged_index).map_err(io_at(&staged_index))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io_at(&staged_index))?;
        drop(f);
        // Shards first, the index last; on a failure, the renamed ones go again.
        let mut moved: Vec<PathBuf> = Vec::new();
        let all = self.names.iter().chain([&self.index_name]);
        for name in all {
            let (from, to) = (self.staging.path().join(name), self.dir.join(name));
            if let Err(e) = rename(&from, &to, self.overwrite) {
                for p in &moved {
                    let _ = std::fs::remove_file(p);
                }
                return Err(e);
            }
            moved.push(to);
        }
        // The renames are durable once the directory is.
        if let Ok(d) = File::open(if self.dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &self.dir
        }) {
            let _ = d.sync_all();
        }
        let index = self.dir.join(&self.index_name);
        Ok(SetSummary {
            set_id: self.set_id,
            index,
            index_bytes: text.len() as u64,
            shards: self
                .names
                .iter()
                .zip(self.done)
                .map(|(name, (_, s))| (self.dir.join(name), s))
                .collect(),
        })
    }
}

/// Renames `from` to `to`, refusing to replace `to` unless `overwrite`.
fn rename(from: &Path, to: &Path, overwrite: bool) -> Result<(), WriteError> {
    let r = if overwrite {
        std::fs::rename(from, to)
    } else {
        // A hard link fails if `to` exists; then the staged name goes with the directory.
        std::fs::hard_link(from, to).map(drop)
    };
    r.map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            WriteError::Exists { path: to.into() }
        } else {
            WriteError::Io {
                path: to.into(),
                source,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TensorSpec;
    use qins_format::{Dtype, Storage};

    fn plans(names: &[&[&str]]) -> Vec<Plan> {
        names
            .iter()
            .map(|ts| {
                let mut p = Plan::new();
                p.alignment = 64;
                p.metadata.insert("qins.writer".into(), "test".into());
                for t in *ts {
                    p.tensors
                        .push(TensorSpec::new(*t, Dtype::U8, vec![3], Storage::Raw));
                }
                p
            })
            .collect()
    }

    fn write(dir: &Path, p: Vec<Plan>) -> Result<SetSummary, WriteError> {
        let mut set = SetWriter::create(dir, "m", p, false)?;
        for _ in 0..set.shard_names().len() {
            let mut w = set.begin_shard()?;
            while w.next_tensor().is_some() {
                w.write_raw(&[1, 2, 3])?;
            }
            set.finish_shard(w)?;
        }
        set.finish()
    }

    #[test]
    fn a_set_is_written_whole_and_deterministically() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let s = write(a.path(), plans(&[&["x", "y"], &["z"]])).unwrap();
        write(b.path(), plans(&[&["x", "y"], &["z"]])).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(a.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "m-00001-of-00002.qins",
                "m-00002-of-00002.qins",
                "m.qins.index.json"
            ]
        );
        for n in &names {
            let (x, y) = (
                std::fs::read(a.path().join(n)).unwrap(),
                std::fs::read(b.path().join(n)).unwrap(),
            );
            assert_eq!(x, y, "{n} differs between two runs");
        }
        let index = std::fs::read_to_string(a.path().join("m.qins.index.json")).unwrap();
        assert!(index.ends_with("}\n"));
        assert!(index.contains(&format!("\"set_id\": \"{}\"", s.set_id)));
        assert!(index.contains("\"z\": \"m-00002-of-00002.qins\""));
        assert_eq!(s.shards.len(), 2);
        // The shards are 1.1 files (§15.2).
        let shard = std::fs::read(a.path().join("m-00001-of-00002.qins")).unwrap();
        assert_eq!(&shard[8..12], &[1, 0, 1, 0]);
        // The header CRC recorded is the file's own.
        let h = u64::from_le_bytes(shard[32..40].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(shard[h - 4..h].try_into().unwrap());
        assert_eq!(crc, s.shards[0].1.header_crc32);
        assert!(index.contains(&format!("\"header_crc32\": \"{crc:08x}\"")));
    }

    #[test]
    fn existing_targets_are_refused_and_failures_leave_nothing() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("m-00002-of-00002.qins"), b"old").unwrap();
        let e = SetWriter::create(d.path(), "m", plans(&[&["x"], &["y"]]), false)
            .err()
            .unwrap();
        assert!(matches!(e, WriteError::Exists { .. }), "{e}");
        std::fs::remove_file(d.path().join("m-00002-of-00002.qins")).unwrap();
        // Dropped half way: nothing at any target, no staging directory left.
        let mut set = SetWriter::create(d.path(), "m", plans(&[&["x"], &["y"]]), false).unwrap();
        let mut w = set.begin_shard().unwrap();
        w.write_raw(&[1, 2, 3]).unwrap();
        set.finish_shard(w).unwrap();
        drop(set);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        // A plan that has shard keys already is a caller's mistake.
        let mut p = plans(&[&["x"]]);
        p[0].metadata.insert(KEY_SHARD.into(), "1".into());
        assert!(matches!(
            SetWriter::create(d.path(), "m", p, false),
            Err(WriteError::InvalidPlan { .. })
        ));
        // Finishing early is misuse.
        let set = SetWriter::create(d.path(), "m", plans(&[&["x"]]), false).unwrap();
        assert!(matches!(set.finish(), Err(WriteError::Misuse { .. })));
    }

    #[test]
    fn the_set_id_depends_on_every_plan() {
        let base = set_id(&plans(&[&["x"], &["y"]]));
        assert_eq!(base.len(), 16);
        assert!(qins_format::set::is_valid_set_id(&base));
        for other in [
            plans(&[&["x"], &["z"]]),
            plans(&[&["x", "y"]]),
            plans(&[&["x"], &["y"], &[]]),
        ] {
            assert_ne!(set_id(&other), base);
        }
        let mut p = plans(&[&["x"], &["y"]]);
        p[1].metadata.insert("qins.source".into(), "other".into());
        assert_ne!(set_id(&p), base);
    }
}

//! The source side: a Hugging Face model directory, opened and validated.
//!
//! [`HfSource::open`] finds the weights, parses every safetensors header (with the
//! `safetensors` crate, over a memory map), checks the shard index, and sorts the directory's
//! other files into assets (carried inside the `.qins`) and skipped files. Tensor bytes are
//! read later, a window at a time, with [`HfSource::read`]; each window is its own read-only
//! map, unmapped when dropped, so what stays resident never grows with the model.
//!
//! # Which files are the weights
//!
//! 1. If `model.safetensors.index.json` exists (or, failing that, exactly one
//!    `*.safetensors.index.json` at the top level), it is the allowlist: every tensor it lists
//!    must be found exactly once, in the shard it names; a shard it names that does not exist,
//!    a tensor listed twice, a tensor in a shard but absent from the index, or a tensor the
//!    index places in a shard that does not hold it are errors.
//! 2. Otherwise, if `model.safetensors` exists, it is the only weight file.
//! 3. Otherwise every `*.safetensors` file at the top level is a weight file, and no tensor may
//!    appear in two of them.
//! 4. No weight file at all is an error that names the weight files in other formats found.
//!
//! # Which files are assets ([`ASSET_RULE`])
//!
//! Every regular file of the directory tree (symbolic links followed, as in the Hugging Face
//! cache), in byte order of its `/`-separated relative path, except:
//! - hidden files and directories (a name starting with `.`, such as `.git` or `.cache`);
//! - the weight files and index above, and any other `*.safetensors` or
//!   `*.safetensors.index.json` file (weights that are not part of the model's weight set);
//! - weights in other formats, by extension ([`OTHER_WEIGHT_EXTENSIONS`]);
//! - `.qins` files (earlier outputs);
//! - files larger than [`MAX_ASSET_BYTES`];
//! - names that are not valid UTF-8 or not a safe relative path (spec §5), non-regular files,
//!   and anything deeper than [`MAX_DEPTH`] directories.
//!
//! Every exception is reported as a [`SkippedFile`] with its [`SkipReason`].

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::fs::File;
use std::io;
use std::ops::{Deref, Range};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapOptions};
use qins_format::names::{check_asset_name, check_tensor_name};
use qins_format::{Dtype, MAX_RANK};
use safetensors::SafeTensors;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::ConvertError;

/// The shard index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The single weight file of an unsharded checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The largest file carried as an asset: 64 MiB (tokenizers of large vocabularies are tens of
/// MiB; anything larger is data, not a small file).
pub const MAX_ASSET_BYTES: u64 = 64 << 20;
/// How many directory levels below the model directory are searched for assets.
pub const MAX_DEPTH: usize = 8;
/// Extensions (lower-case, without the dot) of weight files in formats other than
/// safetensors; such files are skipped, never carried.
pub const OTHER_WEIGHT_EXTENSIONS: &[&str] = &[
    "bin", "pt", "pth", "ckpt", "h5", "hdf5", "keras", "onnx", "msgpack", "gguf", "ggml", "ot",
    "tflite", "pb", "npz", "npy", "pdparams", "mlmodel", "pkl", "pickle",
];
/// The asset rule in one sentence, as recorded in `qins.policy` (key `assets`).
pub const ASSET_RULE: &str = "every regular file under the model directory (symlinks followed, at most 8 levels deep), \
     sorted by relative path, except hidden entries, safetensors weights and indexes, weights in other formats \
     (*.bin *.pt *.pth *.ckpt *.h5 *.hdf5 *.keras *.onnx *.msgpack *.gguf *.ggml *.ot *.tflite *.pb *.npz *.npy \
     *.pdparams *.mlmodel *.pkl *.pickle), *.qins files, files over 64 MiB, and names that are not safe UTF-8 paths";

/// One weight file of the source.
#[derive(Debug)]
pub struct WeightFile {
    /// Path relative to the model directory, `/`-separated.
    pub name: String,
    /// Full path.
    pub path: PathBuf,
    /// Size in bytes (header and data).
    pub size: u64,
    /// The file's `__metadata__` strings.
    pub metadata: BTreeMap<String, String>,
    file: File,
}

/// One tensor of the source, located in its weight file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceTensor {
    /// Name, as in the safetensors header.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions, outermost first.
    pub shape: Vec<u64>,
    /// Index of its weight file in [`HfSource::weight_files`].
    pub file: usize,
    /// Absolute offset of its first byte in the weight file.
    pub offset: u64,
    /// Length of its data in bytes.
    pub len: u64,
}

impl SourceTensor {
    /// Number of elements.
    pub fn numel(&self) -> u64 {
        // Checked when the header was parsed: shape × dtype fits the file.
        self.shape.iter().product()
    }
}

/// A small file of the directory, to be carried as an asset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AssetFile {
    /// Relative path, `/`-separated: the asset's name in the `.qins`.
    pub name: String,
    /// Full path.
    #[serde(skip)]
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
}

/// Why a file of the directory is not carried.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Its name (or a directory above it) starts with `.`.
    Hidden,
    /// A weight file in another format (by extension).
    OtherWeightFormat,
    /// A safetensors file or index that is not part of the weight set used.
    UnusedSafetensors,
    /// A `.qins` file.
    QinsFile,
    /// Larger than [`MAX_ASSET_BYTES`].
    TooLarge,
    /// Its name is not valid UTF-8 or not a safe relative path.
    BadName,
    /// Not a regular file or directory (socket, device, broken link, ...).
    NotRegular,
    /// Deeper than [`MAX_DEPTH`] levels, or a directory already visited (a link loop).
    TooDeep,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::Hidden => "hidden",
            SkipReason::OtherWeightFormat => "weights in another format (not converted)",
            SkipReason::UnusedSafetensors => "safetensors file outside the weight set",
            SkipReason::QinsFile => "a .qins file",
            SkipReason::TooLarge => "larger than the 64 MiB asset limit",
            SkipReason::BadName => "name is not a safe UTF-8 relative path",
            SkipReason::NotRegular => "not a regular file",
            SkipReason::TooDeep => "too deep or a directory loop",
        })
    }
}

/// A file of the directory that is neither a weight file nor an asset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SkippedFile {
    /// Relative path (lossy UTF-8), `/`-separated; a directory ends with `/`.
    pub name: String,
    /// Why it is skipped.
    pub reason: SkipReason,
}

/// A Hugging Face model directory, validated: weight files, tensors, assets, skipped files.
#[derive(Debug)]
pub struct HfSource {
    dir: PathBuf,
    index: Option<PathBuf>,
    files: Vec<WeightFile>,
    tensors: Vec<SourceTensor>,
    assets: Vec<AssetFile>,
    skipped: Vec<SkippedFile>,
}

/// Bytes of a source file, mapped read-only; unmapped when dropped.
pub struct Bytes(Option<Mmap>);

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }
}

/// Maps `len` bytes of `file` from `offset`, read-only.
#[allow(unsafe_code)]
fn map_range(file: &File, offset: u64, len: usize) -> io::Result<Mmap> {
    // SAFETY: the contract of `Mmap::map` is that the mapped file is not modified or truncated
    // while the map lives; a change would show through the `&[u8]` (or a truncation would
    // raise SIGBUS). The map is read-only and private to this process; the files are the
    // model's inputs, which the converter only reads, and which the caller must not change
    // during a conversion (as with `safetensors`, `candle` and `ripgrep`, which map files under
    // the same contract). The target is checked not to be any of them before writing starts,
    // and every range mapped here was checked against the file's length when it was opened.
    unsafe { MmapOptions::new().offset(offset).len(len).map(file) }
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> ConvertError + '_ {
    move |cause| ConvertError::Read {
        path: path.into(),
        cause,
    }
}

impl HfSource {
    /// Opens and validates the model directory `dir` (see the module documentation).
    pub fn open(dir: &Path) -> Result<HfSource, ConvertError> {
        let meta = std::fs::metadata(dir).map_err(|cause| ConvertError::SourceDir {
            path: dir.into(),
            cause,
        })?;
        if !meta.is_dir() {
            return Err(ConvertError::NotADirectory { path: dir.into() });
        }
        let top = list_dir(dir)?;
        let top_files: BTreeSet<&str> = top
            .iter()
            .filter(|(_, m)| m.as_ref().is_some_and(|m| m.is_file()))
            .map(|(n, _)| n.as_str())
            .collect();

        let index_name = if top_files.contains(INDEX_FILE) {
            Some(INDEX_FILE.to_string())
        } else {
            let idx: Vec<&&str> = top_files
                .iter()
                .filter(|n| n.ends_with(".safetensors.index.json") && !n.starts_with('.'))
                .collect();
            (idx.len() == 1).then(|| idx[0].to_string())
        };

        let mut src = HfSource {
            dir: dir.into(),
            index: None,
            files: Vec::new(),
            tensors: Vec::new(),
            assets: Vec::new(),
            skipped: Vec::new(),
        };
        let mut used: HashSet<String> = HashSet::new();
        if let Some(index_name) = index_name {
            let index_path = dir.join(&index_name);
            src.open_sharded(&index_path)?;
            src.index = Some(index_path);
            used.insert(index_name);
        } else {
            let names: Vec<String> = if top_files.contains(SINGLE_FILE) {
                vec![SINGLE_FILE.to_string()]
            } else {
                top_files
                    .iter()
                    .filter(|n| n.ends_with(".safetensors") && !n.starts_with('.'))
                    .map(|n| n.to_string())
                    .collect()
            };
            if names.is_empty() {
                let mut other_weights = Vec::new();
                collect_other_weights(dir, "", 0, &mut other_weights);
                return Err(ConvertError::NoWeights {
                    dir: dir.into(),
                    other_weights,
                });
            }
            for name in &names {
                src.add_file(name)?;
            }
            src.check_unique_across_files()?;
        }
        for f in &src.files {
            used.insert(f.name.clone());
        }
        src.tensors.sort_by(|a, b| a.name.cmp(&b.name));
        src.walk_assets(dir, "", 0, &used, &mut HashSet::new())?;
        src.assets.sort_by(|a, b| a.name.cmp(&b.name));
        src.skipped.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(src)
    }

    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The shard index used, if the checkpoint is sharded.
    pub fn index(&self) -> Option<&Path> {
        self.index.as_deref()
    }

    /// The weight files, sorted by name.
    pub fn weight_files(&self) -> &[WeightFile] {
        &self.files
    }

    /// Every tensor, sorted by name (byte order): the order of the output.
    pub fn tensors(&self) -> &[SourceTensor] {
        &self.tensors
    }

    /// The files to carry as assets, sorted by name.
    pub fn assets(&self) -> &[AssetFile] {
        &self.assets
    }

    /// The files that are neither weights nor assets, sorted by name.
    pub fn skipped(&self) -> &[SkippedFile] {
        &self.skipped
    }

    /// The union of the weight files' `__metadata__` (the first file, by name, wins a
    /// conflict).
    pub fn safetensors_metadata(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for f in &self.files {
            for (k, v) in &f.metadata {
                out.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        out
    }

    /// Every input file the conversion reads: weight files, the index, and assets.
    pub fn inputs(&self) -> impl Iterator<Item = &Path> {
        self.files
            .iter()
            .map(|f| f.path.as_path())
            .chain(self.index.as_deref())
            .chain(self.assets.iter().map(|a| a.path.as_path()))
    }

    /// Maps bytes `range` (relative to the tensor's first byte) of tensor `t`'s data.
    pub fn read(&self, t: &SourceTensor, range: Range<u64>) -> Result<Bytes, ConvertError> {
        let wf = &self.files[t.file];
        assert!(
            range.start <= range.end && range.end <= t.len,
            "read outside tensor {}",
            t.name
        );
        if range.is_empty() {
            return Ok(Bytes(None));
        }
        let len = usize::try_from(range.end - range.start).map_err(|_| ConvertError::Read {
            path: wf.path.clone(),
            cause: io::Error::other("range larger than the address space"),
        })?;
        map_range(&wf.file, t.offset + range.start, len)
            .map(|m| Bytes(Some(m)))
            .map_err(read_err(&wf.path))
    }

    fn open_sharded(&mut self, index_path: &Path) -> Result<(), ConvertError> {
        let bad = |cause: String| ConvertError::BadIndex {
            file: index_path.into(),
            cause,
        };
        let text = std::fs::read(index_path).map_err(read_err(index_path))?;
        let index: IndexJson = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        // Each entry once; shards in name order.
        let mut listed: BTreeMap<&str, &str> = BTreeMap::new();
        for (tensor, shard) in &index.weight_map.0 {
            if let Some(first) = listed.insert(tensor, shard) {
                let entry = |s: &str| format!("{} (entry for {s:?})", index_path.display());
                return Err(ConvertError::DuplicateTensor {
                    tensor: tensor.clone(),
                    first: entry(first),
                    second: entry(shard),
                });
            }
        }
        let mut shards: BTreeMap<&str, &str> = BTreeMap::new(); // shard -> first tensor
        for (tensor, shard) in &listed {
            check_asset_name(shard.as_bytes())
                .map_err(|p| bad(format!("shard {shard:?} of tensor {tensor:?}: {p}")))?;
            shards.entry(shard).or_insert(tensor);
        }
        for (shard, tensor) in &shards {
            let path = self.dir.join(shard);
            if !path.is_file() {
                return Err(ConvertError::ShardMissing {
                    index: index_path.into(),
                    shard: shard.to_string(),
                    tensor: tensor.to_string(),
                });
            }
            self.add_file(shard)?;
        }
        self.check_unique_across_files()?;
        // Every tensor found is listed, in the shard the index names.
        for t in &self.tensors {
            let file = &self.files[t.file];
            match listed.get(t.name.as_str()) {
                None => {
                    return Err(ConvertError::UnindexedTensor {
                        file: file.path.clone(),
                        tensor: t.name.clone(),
                        index: index_path.into(),
                    })
                }
                Some(shard) if *shard != file.name => {
                    return Err(ConvertError::TensorNotInShard {
                        index: index_path.into(),
                        tensor: t.name.clone(),
                        shard: shard.to_string(),
                    })
                }
                Some(_) => {}
            }
        }
        // Every tensor listed is found.
        let found: HashSet<&str> = self.tensors.iter().map(|t| t.name.as_str()).collect();
        if let Some((tensor, shard)) = listed.iter().find(|(t, _)| !found.contains(*t)) {
            return Err(ConvertError::TensorNotInShard {
                index: index_path.into(),
                tensor: tensor.to_string(),
                shard: shard.to_string(),
            });
        }
        Ok(())
    }

    /// Opens weight file `name`, parses its header and appends its tensors.
    fn add_file(&mut self, name: &str) -> Result<(), ConvertError> {
        let path = self.dir.join(name);
        let file = File::open(&path).map_err(read_err(&path))?;
        let size = file.metadata().map_err(read_err(&path))?.len();
        let len = usize::try_from(size).map_err(|_| ConvertError::Read {
            path: path.clone(),
            cause: io::Error::other("file larger than the address space"),
        })?;
        let bad = |cause| ConvertError::BadSafetensors {
            file: path.clone(),
            cause,
        };
        if len < 8 {
            return Err(bad(safetensors::SafeTensorError::HeaderTooSmall));
        }
        // The whole file is mapped so that safetensors can check that the header's offsets
        // cover it exactly; only the header's pages are touched.
        let map = map_range(&file, 0, len).map_err(read_err(&path))?;
        let (n, meta) = SafeTensors::read_metadata(&map).map_err(bad)?;
        let data_start = 8 + n as u64;
        let file_index = self.files.len();
        let mut tensors: Vec<(String, &safetensors::tensor::TensorInfo)> =
            meta.tensors().into_iter().collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        for (tname, info) in &tensors {
            let bad_tensor = |cause: String| ConvertError::BadTensor {
                file: path.clone(),
                tensor: tname.clone(),
                cause,
            };
            check_tensor_name(tname.as_bytes()).map_err(|p| bad_tensor(p.to_string()))?;
            let dtype: Dtype = format!("{:?}", info.dtype).parse().map_err(|_| {
                bad_tensor(format!(
                    "dtype {:?} is not in the QINS dtype registry",
                    info.dtype
                ))
            })?;
            if info.shape.len() > MAX_RANK {
                return Err(bad_tensor(format!(
                    "rank {} exceeds the format's limit of {MAX_RANK}",
                    info.shape.len()
                )));
            }
            let (s, e) = info.data_offsets;
            self.tensors.push(SourceTensor {
                name: tname.clone(),
                dtype,
                shape: info.shape.iter().map(|&d| d as u64).collect(),
                file: file_index,
                offset: data_start + s as u64,
                len: (e - s) as u64,
            });
        }
        let metadata = meta
            .metadata()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        drop(map);
        self.files.push(WeightFile {
            name: name.to_string(),
            path,
            size,
            metadata,
            file,
        });
        Ok(())
    }

    /// No tensor name in two weight files.
    fn check_unique_across_files(&self) -> Result<(), ConvertError> {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let mut dup: Option<(&str, usize, usize)> = None;
        for t in &self.tensors {
            if let Some(&first) = seen.get(t.name.as_str()) {
                let cand = (t.name.as_str(), first, t.file);
                match dup {
                    Some(d) if d.0 <= cand.0 => {}
                    _ => dup = Some(cand),
                }
            } else {
                seen.insert(&t.name, t.file);
            }
        }
        match dup {
            Some((tensor, a, b)) => Err(ConvertError::DuplicateTensor {
                tensor: tensor.to_string(),
                first: self.files[a].path.display().to_string(),
                second: self.files[b].path.display().to_string(),
            }),
            None => Ok(()),
        }
    }

    fn skip(&mut self, name: String, reason: SkipReason) {
        self.skipped.push(SkippedFile { name, reason });
    }

    /// Sorts every entry under `dir` (relative path `rel`) into assets and skipped files.
    fn walk_assets(
        &mut self,
        dir: &Path,
        rel: &str,
        depth: usize,
        used: &HashSet<String>,
        visited: &mut HashSet<(u64, u64)>,
    ) -> Result<(), ConvertError> {
        if let Ok(m) = std::fs::metadata(dir) {
            visited.insert((m.dev(), m.ino()));
        }
        for (name, meta) in list_dir(dir)? {
            let path = dir.join(&name);
            let relname = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let Some(meta) = meta else {
                self.skip(relname, SkipReason::NotRegular);
                continue;
            };
            if name.starts_with('.') {
                let shown = if meta.is_dir() {
                    format!("{relname}/")
                } else {
                    relname
                };
                self.skip(shown, SkipReason::Hidden);
                continue;
            }
            if meta.is_dir() {
                if depth + 1 > MAX_DEPTH || visited.contains(&(meta.dev(), meta.ino())) {
                    self.skip(format!("{relname}/"), SkipReason::TooDeep);
                } else {
                    self.walk_assets(&path, &relname, depth + 1, used, visited)?;
                }
                continue;
            }
            if !meta.is_file() {
                self.skip(relname, SkipReason::NotRegular);
                continue;
            }
            if used.contains(&relname) {
                continue;
            }
            let lower = name.to_ascii_lowercase();
            let ext = lower.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
            let reason = if lower.ends_with(".safetensors")
                || lower.ends_with(".safetensors.index.json")
            {
                Some(SkipReason::UnusedSafetensors)
            } else if OTHER_WEIGHT_EXTENSIONS.contains(&ext) {
                Some(SkipReason::OtherWeightFormat)
            } else if ext == "qins" {
                Some(SkipReason::QinsFile)
            } else if check_asset_name(relname.as_bytes()).is_err() || relname.contains('\u{FFFD}')
            {
                Some(SkipReason::BadName)
            } else if meta.len() > MAX_ASSET_BYTES {
                Some(SkipReason::TooLarge)
            } else {
                None
            };
            match reason {
                Some(r) => self.skip(relname, r),
                None => self.assets.push(AssetFile {
                    name: relname,
                    path,
                    size: meta.len(),
                }),
            }
        }
        Ok(())
    }
}

/// The entries of `dir` with their (link-followed) metadata, `None` where it cannot be read
/// (a broken link); names are lossy UTF-8, sorted.
fn list_dir(dir: &Path) -> Result<Vec<(String, Option<std::fs::Metadata>)>, ConvertError> {
    let err = |cause| ConvertError::SourceDir {
        path: dir.into(),
        cause,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        out.push((name, std::fs::metadata(entry.path()).ok()));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Names of weight files in other formats, for the "no weights" message.
fn collect_other_weights(dir: &Path, rel: &str, depth: usize, out: &mut Vec<String>) {
    let Ok(entries) = list_dir(dir) else { return };
    for (name, meta) in entries {
        let relname = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        match meta {
            Some(m) if m.is_dir() && depth < 2 && !name.starts_with('.') => {
                collect_other_weights(&dir.join(&name), &relname, depth + 1, out)
            }
            Some(m) if m.is_file() => {
                let lower = name.to_ascii_lowercase();
                let ext = lower.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
                if OTHER_WEIGHT_EXTENSIONS.contains(&ext) {
                    out.push(relname);
                }
            }
            _ => {}
        }
    }
}

/// `model.safetensors.index.json`: only `weight_map` matters.
#[derive(Deserialize)]
struct IndexJson {
    weight_map: WeightMap,
}

/// The weight map's entries in file order, duplicates kept (serde's maps drop them).
struct WeightMap(Vec<(String, String)>);

impl<'de> Deserialize<'de> for WeightMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WeightMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object mapping tensor names to shard file names")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WeightMap, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    out.push((k, v));
                }
                Ok(WeightMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_map_keeps_duplicates() {
        let idx: IndexJson =
            serde_json::from_str(r#"{"metadata":{"total_size":1},"weight_map":{"a":"x","a":"y"}}"#)
                .unwrap();
        assert_eq!(idx.weight_map.0.len(), 2);
    }
}

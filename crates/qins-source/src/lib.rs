//! Reads a Hugging Face model directory the one way every QINS tool does: the converter
//! (`qins-convert`), `qins-inspect --against`, and runtimes that load a model from its source
//! directory.
//!
//! [`HfSource::open`] finds the weights, parses every safetensors header (with the
//! `safetensors` crate, over a memory map), checks the shard indexes, reads `modules.json`, and
//! sorts the directory's other files into assets (carried inside a `.qins`) and skipped files.
//! Tensor bytes are read later, a window at a time, with [`HfSource::read`]; each window is its
//! own read-only map, unmapped when dropped, so what stays resident never grows with the model.
//! Everything that can be wrong with the directory is a [`SourceError`] naming the file, the
//! tensor and the fix.
//!
//! ```no_run
//! use qins_source::HfSource;
//!
//! let src = HfSource::open("models/all-minilm-l6-v2".as_ref())?;
//! for t in src.tensors() {
//!     let bytes = src.read(t, 0..t.len)?; // mapped, unmapped when dropped
//!     println!("{} {} {:?} {} bytes", t.name, t.dtype, t.shape, bytes.len());
//! }
//! # Ok::<(), qins_source::SourceError>(())
//! ```
//!
//! # Which files are the weights ([`WEIGHT_RULE`], [`MODULE_RULE`])
//!
//! The top-level weight set:
//!
//! 1. If `model.safetensors.index.json` exists (or, failing that, exactly one
//!    `*.safetensors.index.json` at the top level), it is the allowlist: every tensor it lists
//!    must be found exactly once, in the shard it names; a shard it names that does not exist,
//!    a tensor listed twice, a tensor in a shard but absent from the index, or a tensor the
//!    index places in a shard that does not hold it are errors.
//! 2. Otherwise, if `model.safetensors` exists, it is the only weight file.
//! 3. Otherwise every `*.safetensors` file at the top level is a weight file, and no tensor may
//!    appear in two of them.
//!
//! The modules' weight sets (sentence-transformers, spec §18.1, [`Modules`]): for each entry of
//! `modules.json` whose `path` `P` is not empty (the root module's is),
//! `P/model.safetensors.index.json` with its shards (named relative to `P`, checked as in rule
//! 1), else `P/model.safetensors`, is the weight set of module `P`; a module without either (a
//! `Pooling` or `Normalize` module) has none. A tensor `NAME` of module `P` is named `P/NAME`
//! (`2_Dense/linear.weight`): the name it gets in a `.qins`, and the name
//! [`HfSource::tensors`] gives it. A name that starts with the directory of a module it does
//! not come from ([`Modules::split`]) is an error ([`SourceError::ModuleNameClash`]), since a
//! `.qins` could not say where it came from. Any other safetensors file in a module directory
//! is skipped.
//!
//! No weight file at all, neither at the top level nor in a module, is an error that names the
//! weight files in other formats found.
//!
//! # Which files are assets ([`ASSET_RULE`])
//!
//! Every regular file of the directory tree (symbolic links followed, as in the Hugging Face
//! cache), in byte order of its `/`-separated relative path, except:
//! - hidden files and directories (a name starting with `.`, such as `.git` or `.cache`);
//! - the weight files and indexes above, and any other `*.safetensors` or
//!   `*.safetensors.index.json` file (weights that are not part of the model's weight sets);
//! - weights in other formats, by extension ([`OTHER_WEIGHT_EXTENSIONS`]);
//! - `.qins` files (earlier outputs);
//! - files larger than [`MAX_ASSET_BYTES`];
//! - names that are not valid UTF-8 or not a safe relative path (spec §5), non-regular files,
//!   and anything deeper than [`MAX_DEPTH`] directories.
//!
//! Every exception is reported as a [`SkippedFile`] with its [`SkipReason`]. `modules.json` and
//! the modules' own files (`1_Pooling/config.json`, `2_Dense/config.json`) are assets.
#![deny(unsafe_code)] // the one exception: `map_range`, with its contract

mod error;
mod modules;

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

pub use error::SourceError;
pub use modules::{Modules, MODULES_FILE, MODULE_RULE};

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
/// The top-level weight rule in one sentence, as recorded in `qins.policy` (key `weights`).
pub const WEIGHT_RULE: &str =
    "model.safetensors.index.json (or the only *.safetensors.index.json) and the shards it lists, \
     else model.safetensors, else every top-level *.safetensors";
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
    /// The module (its directory, spec §18.1) whose weight set the file belongs to; `None`
    /// for the top-level weights.
    pub module: Option<String>,
    file: File,
}

impl WeightFile {
    /// The open file (its tensors' bytes may be read from it directly, as a writer copying
    /// them does).
    pub fn file(&self) -> &File {
        &self.file
    }
}

/// One tensor of the source, located in its weight file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceTensor {
    /// Name: as in the safetensors header, behind its module's directory and a `/` for a
    /// tensor of a module's weights (`2_Dense/linear.weight`, spec §18.1).
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
    /// A safetensors file or index that is not part of the weight sets used.
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
            SkipReason::UnusedSafetensors => {
                "safetensors file outside the weight sets (top level, modules.json)"
            }
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

/// A Hugging Face model directory, validated: weight files, tensors, modules, assets, skipped
/// files.
#[derive(Debug)]
pub struct HfSource {
    dir: PathBuf,
    /// The top-level shard index.
    index: Option<PathBuf>,
    /// Every shard index, the top-level one first, then the modules', by module.
    indexes: Vec<PathBuf>,
    modules: Modules,
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
    // model's inputs, which this crate only reads, and which the caller must not change while
    // it reads them (as with `safetensors`, `candle` and `ripgrep`, which map files under the
    // same contract; the converter checks that its target is none of them before it writes).
    // Every range mapped here was checked against the file's length when it was opened.
    unsafe { MmapOptions::new().offset(offset).len(len).map(file) }
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> SourceError + '_ {
    move |cause| SourceError::Read {
        path: path.into(),
        cause,
    }
}

/// Where a weight set's files are listed.
enum WeightSet {
    /// A shard index (relative path): the allowlist.
    Index(String),
    /// These weight files (relative paths).
    Files(Vec<String>),
}

impl HfSource {
    /// Opens and validates the model directory `dir` (see the [crate] documentation).
    pub fn open(dir: &Path) -> Result<HfSource, SourceError> {
        let meta = std::fs::metadata(dir).map_err(|cause| SourceError::SourceDir {
            path: dir.into(),
            cause,
        })?;
        if !meta.is_dir() {
            return Err(SourceError::NotADirectory { path: dir.into() });
        }
        let top = list_dir(dir)?;
        let top_files: BTreeSet<&str> = top
            .iter()
            .filter(|(_, m)| m.as_ref().is_some_and(|m| m.is_file()))
            .map(|(n, _)| n.as_str())
            .collect();

        let mut src = HfSource {
            dir: dir.into(),
            index: None,
            indexes: Vec::new(),
            modules: Modules::none(),
            files: Vec::new(),
            tensors: Vec::new(),
            assets: Vec::new(),
            skipped: Vec::new(),
        };
        if top_files.contains(MODULES_FILE) {
            let path = dir.join(MODULES_FILE);
            let bytes = std::fs::read(&path).map_err(read_err(&path))?;
            src.modules = Modules::parse(&path, &bytes)?;
        }

        // The top-level weight set.
        let index_name = if top_files.contains(INDEX_FILE) {
            Some(INDEX_FILE.to_string())
        } else {
            let idx: Vec<&&str> = top_files
                .iter()
                .filter(|n| n.ends_with(".safetensors.index.json") && !n.starts_with('.'))
                .collect();
            (idx.len() == 1).then(|| idx[0].to_string())
        };
        let top_level = match index_name {
            Some(index) => Some(WeightSet::Index(index)),
            None => {
                let names: Vec<String> = if top_files.contains(SINGLE_FILE) {
                    vec![SINGLE_FILE.to_string()]
                } else {
                    top_files
                        .iter()
                        .filter(|n| n.ends_with(".safetensors") && !n.starts_with('.'))
                        .map(|n| n.to_string())
                        .collect()
                };
                (!names.is_empty()).then_some(WeightSet::Files(names))
            }
        };
        let found_top_level = top_level.is_some();
        if let Some(set) = top_level {
            src.open_set(None, set)?;
        }
        // The modules' weight sets (spec §18.1). A weight file that is there but cannot be read
        // (a broken link: a download cut short) is an error, not a module without weights.
        for module in src.modules.paths().to_vec() {
            let mdir = dir.join(&module);
            let present = |name: &str| std::fs::symlink_metadata(mdir.join(name)).is_ok();
            if present(INDEX_FILE) {
                src.open_set(
                    Some(&module),
                    WeightSet::Index(format!("{module}/{INDEX_FILE}")),
                )?;
            } else if present(SINGLE_FILE) {
                let name = format!("{module}/{SINGLE_FILE}");
                src.open_set(Some(&module), WeightSet::Files(vec![name]))?;
            }
        }
        if !found_top_level && src.files.is_empty() {
            let mut other_weights = Vec::new();
            collect_other_weights(dir, "", 0, &mut other_weights);
            return Err(SourceError::NoWeights {
                dir: dir.into(),
                other_weights,
            });
        }
        src.tensors.sort_by(|a, b| a.name.cmp(&b.name));
        src.check_module_names()?;

        let mut used: HashSet<String> = src.files.iter().map(|f| f.name.clone()).collect();
        for index in &src.indexes {
            let rel = index
                .strip_prefix(dir)
                .expect("an index under the directory");
            used.insert(rel.to_string_lossy().into_owned());
        }
        src.walk_assets(dir, "", 0, &used, &mut HashSet::new())?;
        src.assets.sort_by(|a, b| a.name.cmp(&b.name));
        src.skipped.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(src)
    }

    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The top-level shard index used, if the top-level weights are sharded.
    pub fn index(&self) -> Option<&Path> {
        self.index.as_deref()
    }

    /// Every shard index used: the top-level one first, then the modules', by module.
    pub fn indexes(&self) -> &[PathBuf] {
        &self.indexes
    }

    /// The modules that `modules.json` lists (none without it), spec §18.1.
    pub fn modules(&self) -> &Modules {
        &self.modules
    }

    /// The modules whose weights are read, sorted: those with a `model.safetensors` (or an
    /// index) in their directory.
    pub fn weight_modules(&self) -> Vec<&str> {
        let mut m: Vec<&str> = self
            .files
            .iter()
            .filter_map(|f| f.module.as_deref())
            .collect();
        m.dedup();
        m
    }

    /// The module whose weights tensor `t` comes from (`None` for the top-level weights).
    pub fn module_of(&self, t: &SourceTensor) -> Option<&str> {
        self.files[t.file].module.as_deref()
    }

    /// The weight files: the top-level ones sorted by name, then each module's.
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

    /// The union of the weight files' `__metadata__` (the first file, in
    /// [`weight_files`](Self::weight_files) order, wins a conflict).
    pub fn safetensors_metadata(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for f in &self.files {
            for (k, v) in &f.metadata {
                out.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        out
    }

    /// Every input file a conversion reads: weight files, indexes, `modules.json`, and assets.
    pub fn inputs(&self) -> impl Iterator<Item = &Path> {
        self.files
            .iter()
            .map(|f| f.path.as_path())
            .chain(self.indexes.iter().map(|p| p.as_path()))
            .chain(self.assets.iter().map(|a| a.path.as_path()))
    }

    /// Maps bytes `range` (relative to the tensor's first byte) of tensor `t`'s data.
    ///
    /// # Panics
    ///
    /// If `range` is not within `0..t.len` (a caller's bug: the tensor's length is known).
    pub fn read(&self, t: &SourceTensor, range: Range<u64>) -> Result<Bytes, SourceError> {
        let wf = &self.files[t.file];
        assert!(
            range.start <= range.end && range.end <= t.len,
            "read outside tensor {}",
            t.name
        );
        if range.is_empty() {
            return Ok(Bytes(None));
        }
        let len = usize::try_from(range.end - range.start).map_err(|_| SourceError::Read {
            path: wf.path.clone(),
            cause: io::Error::other("range larger than the address space"),
        })?;
        map_range(&wf.file, t.offset + range.start, len)
            .map(|m| Bytes(Some(m)))
            .map_err(read_err(&wf.path))
    }

    /// Reads asset `a` whole (assets are small: at most [`MAX_ASSET_BYTES`]).
    pub fn read_asset(&self, a: &AssetFile) -> Result<Vec<u8>, SourceError> {
        std::fs::read(&a.path).map_err(read_err(&a.path))
    }

    /// Opens one weight set: the top level's (`module` `None`) or a module's, whose tensors get
    /// the module's directory and a `/` before their names.
    fn open_set(&mut self, module: Option<&str>, set: WeightSet) -> Result<(), SourceError> {
        let start = self.tensors.len();
        match set {
            WeightSet::Index(index) => {
                let index_path = self.dir.join(&index);
                self.open_sharded(module, &index_path)?;
                if module.is_none() {
                    self.index = Some(index_path.clone());
                }
                self.indexes.push(index_path);
            }
            WeightSet::Files(names) => {
                for name in &names {
                    self.add_file(name, module)?;
                }
                self.check_unique_across_files(start)?;
            }
        }
        Ok(())
    }

    /// Opens the shards that `index_path` lists; `module` is the weight set's module.
    fn open_sharded(&mut self, module: Option<&str>, index_path: &Path) -> Result<(), SourceError> {
        let bad = |cause: String| SourceError::BadIndex {
            file: index_path.into(),
            cause,
        };
        let text = std::fs::read(index_path).map_err(read_err(index_path))?;
        let index: IndexJson = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        // Shards are named relative to the index's directory: the module's.
        let rel = |shard: &str| match module {
            Some(m) => format!("{m}/{shard}"),
            None => shard.to_string(),
        };
        let prefix = module.map_or(0, |m| m.len() + 1);
        // Each entry once; shards in name order.
        let mut listed: BTreeMap<&str, &str> = BTreeMap::new();
        for (tensor, shard) in &index.weight_map.0 {
            if let Some(first) = listed.insert(tensor, shard) {
                let entry = |s: &str| format!("{} (entry for {s:?})", index_path.display());
                return Err(SourceError::DuplicateTensor {
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
        let start = self.tensors.len();
        for (shard, tensor) in &shards {
            let name = rel(shard);
            if !self.dir.join(&name).is_file() {
                return Err(SourceError::ShardMissing {
                    index: index_path.into(),
                    shard: shard.to_string(),
                    tensor: tensor.to_string(),
                });
            }
            self.add_file(&name, module)?;
        }
        self.check_unique_across_files(start)?;
        // Every tensor found is listed, in the shard the index names.
        for t in &self.tensors[start..] {
            let file = &self.files[t.file];
            let inner = &t.name[prefix..];
            match listed.get(inner) {
                None => {
                    return Err(SourceError::UnindexedTensor {
                        file: file.path.clone(),
                        tensor: inner.to_string(),
                        index: index_path.into(),
                    })
                }
                Some(shard) if rel(shard) != file.name => {
                    return Err(SourceError::TensorNotInShard {
                        index: index_path.into(),
                        tensor: inner.to_string(),
                        shard: shard.to_string(),
                    })
                }
                Some(_) => {}
            }
        }
        // Every tensor listed is found.
        let found: HashSet<&str> = self.tensors[start..]
            .iter()
            .map(|t| &t.name[prefix..])
            .collect();
        if let Some((tensor, shard)) = listed.iter().find(|(t, _)| !found.contains(*t)) {
            return Err(SourceError::TensorNotInShard {
                index: index_path.into(),
                tensor: tensor.to_string(),
                shard: shard.to_string(),
            });
        }
        Ok(())
    }

    /// Opens weight file `name` (relative to the directory), parses its header and appends its
    /// tensors, named behind `module`'s directory if it is a module's.
    fn add_file(&mut self, name: &str, module: Option<&str>) -> Result<(), SourceError> {
        let path = self.dir.join(name);
        let file = File::open(&path).map_err(read_err(&path))?;
        let fmeta = file.metadata().map_err(read_err(&path))?;
        if !fmeta.is_file() {
            return Err(SourceError::Read {
                path,
                cause: io::Error::other("not a regular file"),
            });
        }
        let size = fmeta.len();
        let len = usize::try_from(size).map_err(|_| SourceError::Read {
            path: path.clone(),
            cause: io::Error::other("file larger than the address space"),
        })?;
        let bad = |cause| SourceError::BadSafetensors {
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
            let full = match module {
                Some(m) => format!("{m}/{tname}"),
                None => tname.clone(),
            };
            let bad_tensor = |cause: String| SourceError::BadTensor {
                file: path.clone(),
                tensor: full.clone(),
                cause,
            };
            check_tensor_name(full.as_bytes()).map_err(|p| bad_tensor(p.to_string()))?;
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
                name: full,
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
            module: module.map(str::to_string),
            file,
        });
        Ok(())
    }

    /// No tensor name in two weight files of the set whose tensors start at `start`.
    fn check_unique_across_files(&self, start: usize) -> Result<(), SourceError> {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let mut dup: Option<(&str, usize, usize)> = None;
        for t in &self.tensors[start..] {
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
            Some((tensor, a, b)) => Err(SourceError::DuplicateTensor {
                tensor: tensor.to_string(),
                first: self.files[a].path.display().to_string(),
                second: self.files[b].path.display().to_string(),
            }),
            None => Ok(()),
        }
    }

    /// Every tensor's name leads back to the weight set it came from (spec §18.1): the first
    /// tensor, by name, that does not is the error.
    fn check_module_names(&self) -> Result<(), SourceError> {
        for t in &self.tensors {
            let owner = self.modules.split(&t.name).map(|(m, _)| m);
            let file = &self.files[t.file];
            if owner != file.module.as_deref() {
                return Err(SourceError::ModuleNameClash {
                    file: file.path.clone(),
                    tensor: t.name.clone(),
                    // A module's tensor always splits (its own directory is a candidate), so
                    // a mismatch has an owner.
                    module: owner.unwrap_or_default().to_string(),
                });
            }
        }
        Ok(())
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
    ) -> Result<(), SourceError> {
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
fn list_dir(dir: &Path) -> Result<Vec<(String, Option<std::fs::Metadata>)>, SourceError> {
    let err = |cause| SourceError::SourceDir {
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

//! Exports a `.qins` file (`spec/qins-v1.md`) back to a Hugging Face model directory that any
//! runtime loads: safetensors weights (one file, or shards and their index), plus every asset
//! (config, tokenizer files, …) restored byte for byte under its own relative path.
//!
//! [`export`] does it all; [`split_into_shards`], [`index_json`], [`shard_file_name`] and
//! [`parse_size`] expose its Hugging Face conventions.
//!
//! # What comes out
//!
//! - **Encoded tensors** are decoded by the decode rule (spec §11.4): each value is exactly
//!   `±LUT[code]` (times its row scale) in f32, and when the output dtype is BF16 or F16 that
//!   f32 value is rounded once, to nearest even. The output dtype is the tensor's source dtype
//!   by default ([`OutputDtype::Source`]): an encoded BF16 tensor comes back as BF16. With
//!   [`OutputDtype::F32`], [`BF16`](OutputDtype::BF16) or [`F16`](OutputDtype::F16), every
//!   encoded tensor is written in that dtype instead.
//! - **Raw tensors** are written bit for bit in their own dtype, **whatever the output dtype
//!   says**: an I64 position table or an F32 norm kept raw stays exactly what it was, so that
//!   no raw value is ever rounded.
//! - **Files**: `model.safetensors`; or, when the tensor data exceeds `max_shard_size`,
//!   `model-00001-of-0000N.safetensors` … and `model.safetensors.index.json`, split and
//!   written exactly as `transformers`' `save_pretrained` does (see [`split_into_shards`] and
//!   [`index_json`]). Tensors are assigned to shards in the file's order. Inside each file the
//!   layout is the one the `safetensors` crate writes, with `__metadata__` restored from the
//!   `.qins` metadata key `safetensors.metadata` (written by `qins-convert`) plus
//!   `"format": "pt"` if absent, which `transformers` requires.
//! - **sentence-transformers modules** (spec §18.1): when the file has a `modules.json`
//!   asset, a tensor named `MODULE/NAME` (`2_Dense/linear.weight`; `MODULE` the longest
//!   module directory of `modules.json` that starts the name, [`qins_source::Modules::split`])
//!   is written as `NAME` to `MODULE/model.safetensors`, one file per module whatever
//!   `max_shard_size` says (the one file a sentence-transformers module loads), so that the
//!   exported directory loads with sentence-transformers as the source did. The top-level
//!   weight files hold the other tensors, and are not written when there are none and some
//!   module has tensors.
//! - **Assets** are written under their names, subdirectories created, confined to the target
//!   (the reader already refuses unsafe names, spec §5, and the exporter checks again). An asset
//!   named like a weight file of the export (`model.safetensors`, `model-NNNNN-of-NNNNN.safetensors`,
//!   `model.safetensors.index.json`), at the top or in the directory of a module whose weights
//!   the export writes, is not restored, since the export writes its own; it is listed in
//!   [`ExportSummary::skipped_assets`].
//!
//! # Guarantees
//!
//! - **Sets**: the input may be a set of shards (spec §21), given by its index or any shard
//!   ([`qins_read::open_model`]): the whole model is exported, its tensors in the set's order,
//!   its assets from shard 1, every shard verified, and an error names the shard at fault. A
//!   set and the single file its converter would have written export to the same bytes.
//! - **Verified as read**: everything outside the tensors is verified (spec §14) before
//!   anything is written, each tensor just before it is decoded; a damaged file exports
//!   nothing and the error names the bad section.
//! - **Atomic**: everything is built in a temporary directory `.NAME.tmp-XXXXXX` beside the
//!   target and renamed into place only when complete; on any failure it is removed and the
//!   target is untouched. An existing target must be an empty directory unless
//!   [`ExportOptions::force`] is set; then it is replaced only after the new directory is
//!   complete: on Linux the two are exchanged in one step (`renameat2` with
//!   `RENAME_EXCHANGE`), so the target's path always holds one of them, and the old one is
//!   deleted; where that is not available, the old one is moved aside, the new one renamed in,
//!   and the old one deleted. A killed export
//!   cannot remove its temporary directory; the next export to the same target does (once it
//!   is a minute old and no running export holds it locked).
//! - **Bounded memory**: tensors are decoded in chunks of 4 Mi elements (16 MiB of f32) on
//!   every core (rayon) and written as they come, and the input's pages are released behind
//!   them; memory does not grow with the model, and the mapped input counts at most one
//!   tensor's stored bytes.
//! - **Deterministic**: the same file and options give the same bytes, whatever the thread
//!   count.
//!
//! ```no_run
//! use qins_export::{export, ExportOptions, NoProgress, OutputDtype};
//!
//! let mut opts = ExportOptions::new("minilm.qins".into(), "minilm-hf".into());
//! opts.dtype = OutputDtype::F32;
//! let summary = export(&opts, &NoProgress)?;
//! println!("{}", summary.render());
//! # Ok::<(), qins_export::ExportError>(())
//! ```
#![forbid(unsafe_code)]

mod error;
mod shard;
mod size;
mod st;
mod target;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use qins_format::{Dtype, Storage};
use qins_source::{Modules, MODULES_FILE};

pub use error::ExportError;
pub use shard::{
    index_json, is_weight_file_name, shard_file_name, split_into_shards, INDEX_FILE, SINGLE_FILE,
};
pub use size::{parse_size, DEFAULT_MAX_SHARD_SIZE};

/// The dtype encoded tensors are written in. Raw tensors always keep their own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputDtype {
    /// Each encoded tensor in its source dtype (F32, BF16 or F16), as it was converted.
    #[default]
    Source,
    /// F32: the decode rule's exact values.
    F32,
    /// BF16: each f32 value rounded once, to nearest even.
    BF16,
    /// F16: each f32 value rounded once, to nearest even (beyond ±65504 becomes ±infinity).
    F16,
}

impl OutputDtype {
    /// The dtype an encoded tensor of source dtype `source` is written in.
    pub fn for_encoded(self, source: Dtype) -> Dtype {
        match self {
            OutputDtype::Source => source,
            OutputDtype::F32 => Dtype::F32,
            OutputDtype::BF16 => Dtype::BF16,
            OutputDtype::F16 => Dtype::F16,
        }
    }

    /// The name used on the command line and in summaries: `source`, `f32`, `bf16`, `f16`.
    pub fn name(self) -> &'static str {
        match self {
            OutputDtype::Source => "source",
            OutputDtype::F32 => "f32",
            OutputDtype::BF16 => "bf16",
            OutputDtype::F16 => "f16",
        }
    }
}

impl FromStr for OutputDtype {
    type Err = String;

    /// Parses `source`, `f32`, `bf16` or `f16` (case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "source" => Ok(OutputDtype::Source),
            "f32" => Ok(OutputDtype::F32),
            "bf16" => Ok(OutputDtype::BF16),
            "f16" => Ok(OutputDtype::F16),
            _ => Err(format!(
                "unknown output dtype {s:?} (expected source, f32, bf16 or f16)"
            )),
        }
    }
}

/// What to export, where, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportOptions {
    /// The `.qins` file.
    pub input: PathBuf,
    /// The directory to create.
    pub output: PathBuf,
    /// The dtype of encoded tensors; raw tensors keep theirs.
    pub dtype: OutputDtype,
    /// The largest shard, in bytes of tensor data (default 5 GB); a tensor larger than this
    /// gets a shard of its own.
    pub max_shard_size: u64,
    /// Replace an existing non-empty output directory (only once the new one is complete).
    pub force: bool,
    /// Sync the weight files to disk before the directory is renamed into place (the
    /// default). Without, the files are the same and the export ends sooner, but a crash of
    /// the machine can leave them empty or partial: for scratch output.
    pub sync: bool,
}

impl ExportOptions {
    /// Options with the defaults: source dtypes, 5 GB shards, no replacing, synced.
    pub fn new(input: PathBuf, output: PathBuf) -> Self {
        ExportOptions {
            input,
            output,
            dtype: OutputDtype::Source,
            max_shard_size: DEFAULT_MAX_SHARD_SIZE,
            force: false,
            sync: true,
        }
    }
}

/// Receives progress from [`export`]; every method does nothing by default. Called from the
/// thread that runs [`export`].
pub trait Progress {
    /// Verification of the input's `bytes` bytes starts (spec §14); writing follows.
    fn verifying(&self, bytes: u64) {
        let _ = bytes;
    }
    /// Writing starts: `tensors` tensors holding `bytes` bytes of output tensor data.
    fn begin(&self, tensors: usize, bytes: u64) {
        let _ = (tensors, bytes);
    }
    /// `bytes` more bytes of tensor data are written.
    fn advance(&self, bytes: u64) {
        let _ = bytes;
    }
    /// Tensor `name` is written.
    fn tensor_done(&self, name: &str) {
        let _ = name;
    }
    /// Every tensor is written; assets, the index and the final rename follow.
    fn end(&self) {}
}

/// A [`Progress`] that reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// One safetensors file written.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ShardSummary {
    /// File name inside the output directory.
    pub file: String,
    /// Number of tensors in it.
    pub tensors: usize,
    /// Bytes of tensor data (what counts against `max_shard_size`).
    pub data_bytes: u64,
    /// The file's size: header and data.
    pub file_bytes: u64,
}

/// What [`export`] wrote. Every size is counted from the bytes written.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ExportSummary {
    /// The `.qins` file.
    pub input: PathBuf,
    /// The output directory.
    pub output: PathBuf,
    /// The output dtype option.
    pub dtype: OutputDtype,
    /// Number of tensors.
    pub tensors: usize,
    /// Of which were decoded.
    pub encoded_tensors: usize,
    /// Of which were copied raw.
    pub raw_tensors: usize,
    /// Sum of the tensors' data bytes (the index's `total_size` counts the top-level
    /// tensors only).
    pub total_size: u64,
    /// The safetensors files, in order.
    pub shards: Vec<ShardSummary>,
    /// Whether `model.safetensors.index.json` was written.
    pub index: bool,
    /// The sentence-transformers modules whose weights were written to
    /// `MODULE/model.safetensors` (spec §18.1), sorted.
    pub modules: Vec<String>,
    /// Number of assets restored.
    pub assets: usize,
    /// Their bytes.
    pub asset_bytes: u64,
    /// Assets not restored because the export writes a weight file of that name.
    pub skipped_assets: Vec<String>,
    /// Every byte written: safetensors files, index and assets.
    pub bytes_written: u64,
    /// Wall-clock seconds, verification included.
    pub seconds: f64,
}

impl ExportSummary {
    /// A short human-readable report, one fact per line.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let dtype = match self.dtype {
            OutputDtype::Source => "in their source dtypes".to_string(),
            d => format!("encoded ones as {}", d.name().to_uppercase()),
        };
        let _ = writeln!(
            s,
            "exported {} tensors ({} decoded, {} raw) from {} to {}, {dtype}",
            self.tensors,
            self.encoded_tensors,
            self.raw_tensors,
            self.input.display(),
            self.output.display()
        );
        for sh in &self.shards {
            let _ = writeln!(
                s,
                "  {}: {} tensors, {} bytes",
                sh.file, sh.tensors, sh.file_bytes
            );
        }
        if self.index {
            let top: u64 = self
                .shards
                .iter()
                .filter(|sh| !sh.file.contains('/'))
                .map(|sh| sh.data_bytes)
                .sum();
            let _ = writeln!(s, "  {INDEX_FILE}: total_size {top}");
        }
        let _ = writeln!(s, "  {} assets, {} bytes", self.assets, self.asset_bytes);
        for a in &self.skipped_assets {
            let _ = writeln!(s, "  asset {a:?} not restored: the export writes its own");
        }
        let _ = write!(
            s,
            "wrote {} bytes in {:.2} s",
            self.bytes_written, self.seconds
        );
        s
    }

    /// The summary as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a summary serializes")
    }
}

/// The `.qins` metadata key holding the source files' safetensors `__metadata__` (a JSON
/// object of strings), as `qins-convert` writes it.
pub const SAFETENSORS_METADATA_KEY: &str = "safetensors.metadata";

/// The `__metadata__` of the exported files: the source's, if recorded, with
/// `"format": "pt"` added when absent.
fn safetensors_metadata(meta: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = meta
        .get(SAFETENSORS_METADATA_KEY)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    m.entry("format".to_string())
        .or_insert_with(|| "pt".to_string());
    m
}

/// Exports `opts.input` to the directory `opts.output` (see the [crate] documentation).
pub fn export(opts: &ExportOptions, progress: &dyn Progress) -> Result<ExportSummary, ExportError> {
    let start = Instant::now();
    let input = opts.input.as_path();
    let mapped = qins_read::open_model(input).map_err(|e| ExportError::input(input.into(), e))?;
    let qins = mapped
        .parse()
        .map_err(|e| ExportError::input(input.into(), e))?;

    // The target is checked first, so that a refusal is quick; the temporary directory is
    // removed again if anything below fails.
    let staging = target::Staging::new(&opts.output, opts.force, input)?;
    // The tensors are verified one by one as they are written (in `st`); the rest now.
    progress.verifying(qins.total_size() - qins.tensors().map(|t| t.stored_bytes()).sum::<u64>());
    qins.verify_frame()
        .map_err(|e| ExportError::damaged(input.into(), e))?;
    // For a set, the shard each tensor is in (a damaged one is named).
    let paths: Vec<&Path> = qins.paths().collect();

    // The tensors of sentence-transformers modules go back to their modules' directories
    // (spec §18.1); the others to the top-level weight files.
    let modules = match qins.assets().find(|(name, _)| *name == MODULES_FILE) {
        Some((_, bytes)) => Modules::parse(Path::new(MODULES_FILE), bytes).map_err(|source| {
            ExportError::BadModules {
                path: input.into(),
                source,
            }
        })?,
        None => Modules::none(),
    };
    let mut tensors: Vec<st::OutTensor<'_>> = Vec::with_capacity(qins.tensor_count());
    let mut module_of: Vec<Option<&str>> = Vec::with_capacity(qins.tensor_count());
    for t in qins.tensors() {
        let dtype = match t.storage() {
            Storage::Raw => t.dtype(),
            Storage::Encoded { .. } => opts.dtype.for_encoded(t.dtype()),
        };
        let (module, name) = match modules.split(t.name()) {
            Some((module, name)) => (Some(module), name),
            None => (None, t.name()),
        };
        let file = paths[qins.file_of(t.name()).unwrap_or(0)];
        tensors.push(st::OutTensor::new(t, name, dtype, file));
        module_of.push(module);
    }
    let mut written_modules: Vec<&str> = module_of.iter().flatten().copied().collect();
    written_modules.sort_unstable();
    written_modules.dedup();

    // The files: the top-level weights (split into shards past the size limit; written unless
    // there are none while modules have some), then one `MODULE/model.safetensors` per module,
    // whatever its size, since that is the one file a sentence-transformers module loads.
    let top: Vec<usize> = (0..tensors.len())
        .filter(|&i| module_of[i].is_none())
        .collect();
    let top_sizes: Vec<u64> = top.iter().map(|&i| tensors[i].bytes).collect();
    let (shard_of, n_shards) = if top.is_empty() && !written_modules.is_empty() {
        (Vec::new(), 0)
    } else {
        split_into_shards(&top_sizes, opts.max_shard_size)
    };
    let mut names: Vec<String> = (0..n_shards)
        .map(|i| shard_file_name(i, n_shards))
        .collect();
    let mut files: Vec<Vec<&st::OutTensor<'_>>> = vec![Vec::new(); n_shards];
    for (&i, &s) in top.iter().zip(&shard_of) {
        files[s].push(&tensors[i]);
    }
    for m in &written_modules {
        names.push(format!("{m}/{SINGLE_FILE}"));
        files.push(
            tensors
                .iter()
                .zip(&module_of)
                .filter(|(_, o)| **o == Some(*m))
                .map(|(t, _)| t)
                .collect(),
        );
    }
    for f in &mut files {
        st::data_order(f);
    }
    let metadata = safetensors_metadata(qins.metadata());
    // Every header is built, and its size checked, before any file is written.
    let headers = files
        .iter()
        .zip(&names)
        .map(|(f, name)| st::header(name, f, &metadata))
        .collect::<Result<Vec<_>, _>>()?;
    let (assets, skipped): (Vec<_>, Vec<_>) = qins.assets().partition(|(name, _)| {
        let module_weights = written_modules.iter().any(|m| {
            name.strip_prefix(m)
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(is_weight_file_name)
        });
        !is_weight_file_name(name) && !module_weights
    });

    let total_size: u64 = tensors.iter().map(|t| t.bytes).sum();
    progress.begin(tensors.len(), total_size);
    let mut scratch = st::Scratch::default();
    let mut shards = Vec::with_capacity(files.len());
    let mut bytes_written = 0;
    for ((f, name), header) in files.iter().zip(&names).zip(&headers) {
        let path = staging.file_path(name, "write")?;
        let file_bytes =
            st::write_file(&path, header, f, &mut scratch, progress, &mapped, opts.sync)?;
        bytes_written += file_bytes;
        shards.push(ShardSummary {
            file: name.clone(),
            tensors: f.len(),
            data_bytes: f.iter().map(|t| t.bytes).sum(),
            file_bytes,
        });
    }
    progress.end();
    drop(scratch);
    if n_shards > 1 {
        let text = index_json(
            top_sizes.iter().sum(),
            top.iter()
                .zip(&shard_of)
                .map(|(&i, &s)| (tensors[i].name, names[s].as_str())),
        );
        target::write_synced(&staging.path().join(INDEX_FILE), text.as_bytes())?;
        bytes_written += text.len() as u64;
    }
    let mut asset_bytes = 0;
    for (name, bytes) in &assets {
        staging.write_asset(name, bytes)?;
        asset_bytes += bytes.len() as u64;
    }
    bytes_written += asset_bytes;
    staging.commit()?;
    let encoded_tensors = tensors.iter().filter(|t| t.view.lut().is_some()).count();
    Ok(ExportSummary {
        input: input.to_path_buf(),
        output: opts.output.clone(),
        dtype: opts.dtype,
        tensors: tensors.len(),
        encoded_tensors,
        raw_tensors: tensors.len() - encoded_tensors,
        total_size,
        shards,
        index: n_shards > 1,
        modules: written_modules.iter().map(|m| m.to_string()).collect(),
        assets: assets.len(),
        asset_bytes,
        skipped_assets: skipped.iter().map(|(n, _)| n.to_string()).collect(),
        bytes_written,
        seconds: start.elapsed().as_secs_f64(),
    })
}

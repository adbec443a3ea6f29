//! Converts a Hugging Face model directory (safetensors weights plus config and tokenizer
//! files) into one `.qins` file (`spec/qins-v1.md`), and plans such a conversion.
//!
//! - the model directory is read by [`qins_source::HfSource`] (weight files, shard indexes,
//!   sentence-transformers modules, tensors, assets and skipped files), the reader that
//!   `qins-inspect --against` and runtimes use too;
//! - [`policy`]: which tensors are encoded and which stay raw, and why (DESIGN rule 13);
//! - [`plan`]: a dry run: the decision, bits per weight and stored size of every tensor, and
//!   the exact size of the file that [`convert`] would write;
//! - [`convert`]: the conversion: tensors read from mapped shards, encoded on all cores
//!   (rayon), written in a deterministic order through `qins-write`, which writes a temporary
//!   file beside the target and renames it into place only when complete.
//!
//! # Sharded output
//!
//! A model whose file would be larger than [`ConvertOptions::max_shard_size`] (default 5 GB,
//! huggingface_hub's and transformers' default for safetensors shards) is written as a set
//! (spec §21): for a target `DIR/NAME.qins`, the shards `DIR/NAME-0000k-of-0000n.qins`, each a
//! complete `.qins` of at most that size (a tensor larger than the limit gets a shard of its
//! own), and the index `DIR/NAME.qins.index.json`; nothing is written at `NAME.qins`. Tensors
//! keep the single file's order, filling each shard before the next; the assets go in shard 1.
//! Each shard is written by its own `qins_write::Writer` (in a staging directory beside the
//! targets), and the shards then the index are renamed into place only when all are complete
//! (`qins_write::set::SetWriter`), so the same input and options give byte-identical shards
//! and index, and a failed conversion leaves nothing at any target.
//!
//! # Codecs
//!
//! Encoded tensors use one codec of the registry (spec §12), [`PolicyOptions::codec`]:
//!
//! - `lloyd-rows` (the default, §12.4): each row divided by its largest magnitude (stored as
//!   one f32 row scale per row), then 255 levels fitted to minimise the squared error. About
//!   9.09 bits per weight on a model like all-MiniLM-L6-v2 (codes 8, signs 1, row scales and
//!   tables the rest), and the best fidelity: 50.3 dB SNR over its 2-D tensors, against 34.2 dB
//!   for `log`.
//! - `lloyd` (§12.3): the same fit without row scales (9.01 bits per weight, 48.7 dB).
//! - `log` (§12.1): the Python prototype's exact rule (the CLI's `seed-log`), a logarithmic
//!   table between the smallest and largest non-zero magnitude (34.2 dB on MiniLM).
//! - `linear` (§12.2): a linear table up to the largest magnitude (27.8 dB on MiniLM, where
//!   4.8% of the weights, below `max_abs / 508`, decode to 0).
//!
//! A codec with row scales ([`qins_format::Codec::uses_row_scales`]) costs the pipeline one
//! more pass over each tensor (its row maxima) and holds one f32 per row of the tensor being
//! encoded; the output stays independent of the threads and chunking. `qins-inspect OUT
//! --against HF_DIR` measures what a codec did to each tensor.
//!
//! # Guarantees
//!
//! - **Order**: tensors are written sorted by name (byte order), whatever the sharding of the
//!   source; assets sorted by relative path. The same source and options give the same bytes,
//!   whatever the number of threads ([`ConvertOptions::chunk_elements`] and the thread count
//!   change only speed and memory).
//! - **Memory**: bounded by one window of a tensor (a few tens of MiB) plus the assets (and,
//!   with row scales, one f32 per row of the tensor being encoded), never by the model's size.
//! - **Metadata** (spec §7): `qins.writer` (`qins-convert VERSION`), `qins.source` (the source
//!   directory's name, not its path), `qins.policy` (the policy as JSON, see
//!   [`policy::Policy::to_json`]), and `safetensors.metadata` (the shards' `__metadata__`, as
//!   JSON) when there is any.
//! - **Accounting** (DESIGN rule 14): every output size in a [`ConvertSummary`] is counted from
//!   the bytes in the file: the writer's layout, checked against the file's length.
//! - **Bad input** is a [`ConvertError`] that names the file, the tensor and the cause; nothing
//!   is left at the target path.
//!
//! ```no_run
//! use qins_convert::{convert, ConvertOptions, NoProgress};
//!
//! let opts = ConvertOptions::new("models/all-minilm-l6-v2".into(), "minilm.qins".into());
//! let summary = convert(&opts, &NoProgress)?;
//! println!("{}", summary.render());
//! # Ok::<(), qins_convert::ConvertError>(())
//! ```
#![forbid(unsafe_code)]

mod error;
mod pipeline;
pub mod policy;
mod report;
mod shard;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use qins_format::layout::Cursor;
use qins_format::{alignment_is_valid, section_lengths, Storage, DEFAULT_ALIGNMENT, LUT_BYTES};
use qins_source::{AssetFile, HfSource};
use qins_write::set::SetWriter;
use qins_write::{Asset, Plan, TensorSpec, WriteSummary, Writer};

pub use error::ConvertError;
pub use policy::{Decision, EncodeReason, Policy, PolicyOptions, RawReason};
pub use report::{human_bytes, ConvertPlan, ConvertSummary, OutputBytes, RawGroup, TensorPlan};
pub use shard::ShardPlan;

/// The value of `qins.writer`.
pub const WRITER: &str = concat!("qins-convert ", env!("CARGO_PKG_VERSION"));

/// Default elements per parallel job: 1 Mi elements (4 MiB of f32 per thread).
pub const DEFAULT_CHUNK_ELEMENTS: usize = 1 << 20;

/// What to convert, where, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvertOptions {
    /// The Hugging Face model directory.
    pub source: PathBuf,
    /// The `.qins` file to write.
    pub target: PathBuf,
    /// The selection policy.
    pub policy: PolicyOptions,
    /// Section alignment (spec §3): a power of two in [64, 1048576]; default 4096.
    pub alignment: u32,
    /// Replace an existing target.
    pub overwrite: bool,
    /// Elements per parallel job when encoding (rounded up to a multiple of 8). Changes
    /// speed and memory, never the output.
    pub chunk_elements: usize,
    /// The largest file to write, in bytes: a model whose single file would be larger is
    /// written as a set of shards of at most this size each (see the crate documentation).
    pub max_shard_size: u64,
    /// Sync the output to disk before renaming it into place (the default). Without, the
    /// file is the same and the conversion ends sooner, but a crash of the machine can leave
    /// the target empty or partial: for scratch output ([`qins_write::Writer::set_sync`]).
    pub sync: bool,
}

impl ConvertOptions {
    /// Options with the defaults: the default policy ([`PolicyOptions::default`]: the
    /// `lloyd-rows` codec, embeddings and heads raw), alignment 4096, no overwrite, shards
    /// above 5 GB, synced.
    pub fn new(source: PathBuf, target: PathBuf) -> Self {
        ConvertOptions {
            source,
            target,
            policy: PolicyOptions::default(),
            alignment: DEFAULT_ALIGNMENT,
            overwrite: false,
            chunk_elements: DEFAULT_CHUNK_ELEMENTS,
            max_shard_size: qins_stdx::HF_MAX_SHARD_SIZE,
            sync: true,
        }
    }
}

/// Receives progress from [`convert`]; every method does nothing by default.
pub trait Progress {
    /// Conversion starts: `tensors` tensors holding `bytes` source bytes.
    fn begin(&self, tensors: usize, bytes: u64) {
        let _ = (tensors, bytes);
    }
    /// `bytes` more source bytes are done.
    fn advance(&self, bytes: u64) {
        let _ = bytes;
    }
    /// Tensor `name` is written.
    fn tensor_done(&self, name: &str) {
        let _ = name;
    }
    /// Every tensor is written; assets and header follow.
    fn end(&self) {}
}

/// A [`Progress`] that reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// Everything decided before the first byte is written.
struct Prepared {
    source: HfSource,
    policy: Policy,
    plan: ConvertPlan,
    /// The writer's plan of the single file (assets read).
    wplan: Plan,
    /// The set, when the model does not fit in one file.
    set: Option<shard::SetPlan>,
}

/// Encoded tensors whose preparation (row scales, statistics, fit) may run ahead of the
/// tensor being written, at least: two, so that two fits, serial each, can run side by side.
const PREPARED_AHEAD: usize = 2;

/// Elements of the encoded tensors that may be prepared ahead of the tensor being written,
/// beyond the first [`PREPARED_AHEAD`]: those of at most [`WHOLE_ELEMENTS`] are encoded whole
/// ahead too, so this bounds the memory they hold (about 1.125 bytes per element: 72 MiB).
/// While a raw tensor is copied (a serial write), the other cores encode the tensors after it.
const AHEAD_ELEMENTS: u64 = 64 << 20;

/// The largest tensor (in elements) that a preparation ahead also encodes whole; a larger one
/// is encoded a window at a time when its turn to be written comes.
const WHOLE_ELEMENTS: u64 = 16 << 20;

fn prepare(opts: &ConvertOptions) -> Result<Prepared, ConvertError> {
    if !alignment_is_valid(opts.alignment) {
        return Err(ConvertError::BadAlignment {
            alignment: opts.alignment,
        });
    }
    let policy = Policy::new(opts.policy.clone())?;
    let source = HfSource::open(&opts.source)?;
    let policy = policy.with_modules(&source.weight_modules());
    let metadata = metadata(&source, &policy);
    let tensors: Vec<TensorPlan> = source
        .tensors()
        .iter()
        .map(|t| {
            let decision = policy.decide(&t.name, t.dtype, &t.shape);
            TensorPlan::new(
                t,
                &source.weight_files()[t.file].name,
                decision,
                policy.codec(),
            )
        })
        .collect();
    let mut output = layout(&tensors, source.assets(), &metadata, opts.alignment);
    let mut assets = Vec::with_capacity(source.assets().len());
    for a in source.assets() {
        assets.push(Asset {
            name: a.name.clone(),
            data: source.read_asset(a)?,
        });
    }
    let wplan = Plan {
        tensors: tensors
            .iter()
            .map(|t| TensorSpec::new(t.name.clone(), t.dtype, t.shape.clone(), t.storage))
            .collect(),
        assets,
        metadata: metadata.clone(),
        alignment: opts.alignment,
    };
    let mut set = None;
    if output.file_size > opts.max_shard_size {
        let ranges = shard::split(
            &tensors,
            source.assets(),
            shard::metadata_bound(&metadata, &opts.target),
            opts.alignment,
            opts.max_shard_size,
        );
        if ranges.len() > 1 {
            let s = shard::plan_set(
                &opts.target,
                &ranges,
                &wplan,
                &tensors,
                source.assets(),
                |t, a, m| layout(t, a, m, opts.alignment),
            )?;
            output = OutputBytes::default();
            for sh in &s.shards {
                output.add(&sh.output);
            }
            set = Some(s);
        }
    }
    let input_bytes = source.weight_files().iter().map(|f| f.size).sum::<u64>()
        + source
            .indexes()
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum::<u64>()
        + source.assets().iter().map(|a| a.size).sum::<u64>();
    let plan = ConvertPlan {
        source: opts.source.display().to_string(),
        codec: policy.codec().name().to_string(),
        alignment: opts.alignment,
        tensors,
        assets: source.assets().to_vec(),
        skipped: source.skipped().to_vec(),
        metadata,
        input_bytes,
        output,
        max_shard_size: opts.max_shard_size,
        shards: set.as_ref().map(|s| s.shards.clone()).unwrap_or_default(),
        index: set.as_ref().map(|s| s.index.clone()),
        set_id: set.as_ref().map(|s| s.set_id.clone()),
    };
    Ok(Prepared {
        source,
        policy,
        plan,
        wplan,
        set,
    })
}

/// The metadata of the output (spec §7).
fn metadata(source: &HfSource, policy: &Policy) -> BTreeMap<String, String> {
    let dir = source.dir();
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .or_else(|| {
            dir.canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        })
        .unwrap_or_default();
    let mut m = BTreeMap::new();
    m.insert("qins.writer".to_string(), WRITER.to_string());
    m.insert("qins.source".to_string(), name);
    m.insert("qins.policy".to_string(), policy.to_json());
    let st = source.safetensors_metadata();
    if !st.is_empty() {
        m.insert(
            "safetensors.metadata".to_string(),
            serde_json::to_string(&st).expect("a map of strings serializes"),
        );
    }
    m
}

/// The exact sizes of the file the writer will lay out (spec §3, §9.2), as `qins-write` does.
fn layout(
    tensors: &[TensorPlan],
    assets: &[AssetFile],
    metadata: &BTreeMap<String, String>,
    alignment: u32,
) -> OutputBytes {
    let strings: u64 = tensors.iter().map(|t| t.name.len() as u64).sum::<u64>()
        + assets.iter().map(|a| a.name.len() as u64).sum::<u64>();
    let meta = serde_json::to_vec(metadata)
        .expect("a map of strings serializes")
        .len() as u64;
    let header = qins_format::header_size(
        tensors.len() as u32,
        assets.len() as u32,
        u32::try_from(strings).unwrap_or(u32::MAX),
        u32::try_from(meta).unwrap_or(u32::MAX),
    )
    .unwrap_or(u64::MAX);
    let mut out = OutputBytes {
        header_bytes: header,
        ..OutputBytes::default()
    };
    let mut cur = Cursor::new(header, alignment);
    let encoded = tensors.iter().filter(|t| t.decision.is_encoded()).count() as u64;
    out.lut_bytes = encoded * LUT_BYTES;
    let mut place = |len: u64| {
        cur.place(len);
    };
    place(out.lut_bytes);
    for t in tensors {
        let [data, signs, scales] =
            section_lengths(t.dtype, &t.shape, t.storage).unwrap_or([0, 0, 0]);
        place(data);
        if t.decision.is_encoded() {
            place(signs);
            out.code_bytes += data;
            out.sign_bytes += signs;
            if matches!(
                t.storage,
                Storage::Encoded {
                    row_scales: true,
                    ..
                }
            ) {
                place(scales);
                out.scale_bytes += scales;
            }
        } else {
            out.raw_bytes += data;
        }
    }
    for a in assets {
        place(a.size);
        out.asset_bytes += a.size;
    }
    out.file_size = cur.end();
    out.padding_bytes = out.file_size
        - out.header_bytes
        - out.lut_bytes
        - out.code_bytes
        - out.sign_bytes
        - out.scale_bytes
        - out.raw_bytes
        - out.asset_bytes;
    out
}

/// Plans a conversion without writing anything (`--dry-run`): the decision, reason, bits per
/// weight and stored bytes of every tensor, the assets and skipped files, and the exact size
/// of the output. The target is not looked at.
pub fn plan(opts: &ConvertOptions) -> Result<ConvertPlan, ConvertError> {
    Ok(prepare(opts)?.plan)
}

/// The smallest `max_shard_size` at which converting `opts` writes exactly `shards` files
/// (`None` if no limit does: a model of fewer tensors, say). For tests and benchmarks that
/// want a set of a given size from a small model: a binary search over [`plan`], the number of
/// shards never growing with the limit.
pub fn max_shard_size_for(
    opts: &ConvertOptions,
    shards: usize,
) -> Result<Option<u64>, ConvertError> {
    let files = |max: u64| -> Result<usize, ConvertError> {
        let o = ConvertOptions {
            max_shard_size: max,
            ..opts.clone()
        };
        match plan(&o) {
            Ok(p) => Ok(p.shards.len().max(1)),
            Err(ConvertError::TooManyShards { shards }) => Ok(shards),
            Err(e) => Err(e),
        }
    };
    // At twice the single file's size, one file (the split bounds each section by its
    // aligned size, never by more): the answer is at most that.
    let (mut lo, mut hi) = (
        1,
        plan(opts)?.output.file_size.saturating_mul(2).max(1 << 20),
    );
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if files(mid)? <= shards {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok((files(hi)? == shards).then_some(hi))
}

/// Refuses a target that is one of the files read (or the source directory).
fn check_target(target: &Path, source: &HfSource) -> Result<(), ConvertError> {
    use std::os::unix::fs::MetadataExt;
    let Ok(tm) = std::fs::metadata(target) else {
        return Ok(()); // it does not exist, so it is not an input
    };
    let dir = source.dir();
    for input in std::iter::once(dir).chain(source.inputs()) {
        if let Ok(im) = std::fs::metadata(input) {
            if (im.dev(), im.ino()) == (tm.dev(), tm.ino()) {
                return Err(ConvertError::TargetIsInput {
                    target: target.into(),
                    input: input.into(),
                });
            }
        }
    }
    Ok(())
}

/// Converts `opts.source` into `opts.target` (see the crate documentation), reporting to
/// `progress`. Runs on the current rayon thread pool.
pub fn convert(
    opts: &ConvertOptions,
    progress: &dyn Progress,
) -> Result<ConvertSummary, ConvertError> {
    let Prepared {
        source,
        policy,
        plan,
        wplan,
        set,
    } = prepare(opts)?;
    let target = opts.target.as_path();
    let (dir, stem) = shard::dir_and_stem(target);
    // The files written, and the other form's entry point (the single file when a set is
    // written, the set's index when a single file is): an old one would be left under the
    // target's name, so it must not exist, and with --force it is removed once the new output
    // is in place.
    let (outputs, other): (Vec<PathBuf>, PathBuf) = match &set {
        None => (vec![target.into()], shard::index_path(target)),
        Some(s) => (
            s.shards
                .iter()
                .map(|sh| dir.join(&sh.file))
                .chain([dir.join(&s.index)])
                .collect(),
            target.into(),
        ),
    };
    for o in outputs.iter().chain([&other]) {
        check_target(o, &source)?;
        if !opts.overwrite && o.exists() {
            return Err(ConvertError::TargetExists { path: o.clone() });
        }
    }
    let ranges: Vec<Range<usize>> = match &set {
        None => std::iter::once(0..plan.tensors.len()).collect(),
        Some(s) => s.shards.iter().map(ShardPlan::range).collect(),
    };
    let mut sink = match set {
        None => shard::Sink::File(
            Some(Box::new(
                Writer::create(target, wplan, opts.overwrite)
                    .map_err(|e| ConvertError::from_write(target, e))?,
            )),
            target.into(),
        ),
        Some(s) => shard::Sink::Set(
            SetWriter::create(&dir, &stem, s.plans, opts.overwrite)
                .map_err(|e| ConvertError::from_write(&outputs[outputs.len() - 1], e))?,
            dir.clone(),
        ),
    };
    let chunking = pipeline::Chunking::new(opts.chunk_elements);
    progress.begin(
        plan.tensors.len(),
        plan.tensors.iter().map(|t| t.source_bytes).sum(),
    );
    // Encoded tensors are prepared (statistics, fit) by rayon tasks ahead of the one being
    // written (encoded or copied), nearest first (FIFO: with rayon's default LIFO, the writing
    // thread, which spawns them, took the furthest first whenever it waited, so that the
    // tensors ahead piled up finished while the next one to write was not; BF16 1 GB, 2
    // threads: 0.735 -> 0.665 s): at least PREPARED_AHEAD encoded tensors, and further while
    // their elements stay within AHEAD_ELEMENTS, those of at most WHOLE_ELEMENTS encoded whole
    // too. So the serial parts (the fits, a raw copy) overlap parallel work and each other; the
    // writes stay in file order, and an error is reported for the first tensor in file order
    // that has one, as if they ran one after the other (a preparation's error waits in its
    // slot for its turn).
    let tensors = source.tensors();
    debug_assert!(tensors
        .iter()
        .zip(&plan.tensors)
        .all(|(t, tp)| t.name == tp.name));
    let codec = policy.codec();
    let encoded = |i: usize| plan.tensors[i].decision.is_encoded();
    let prepare = |i: usize, whole: Option<&pipeline::Pool>| {
        pipeline::prepare(&source, &tensors[i], codec, chunking, target, whole)
    };
    // With one thread there is nothing to overlap: the two take turns.
    let overlap = rayon::current_num_threads() > 1;
    let prepared = pipeline::Prepared::new(tensors.len());
    let pool = pipeline::Pool::default();
    // Set when the conversion fails: the preparations that have not started then never do
    // (their slots stay claimed, and nobody takes them), so a failure does not wait for the
    // encoding of everything ahead.
    let failed = AtomicBool::new(false);
    let written = rayon::in_place_scope_fifo(|s| {
        let mut run = || {
            // One writer per file (shard), one after the other; preparations run ahead
            // across files.
            let mut written: Vec<(PathBuf, WriteSummary)> = Vec::with_capacity(ranges.len());
            for (k, range) in ranges.iter().enumerate() {
                let (mut w, path) = sink.begin(k)?;
                w.set_sync(opts.sync);
                let mut stream = pipeline::Stream::new(&source, &mut w, &path, progress, &pool);
                for i in range.clone() {
                    let t = &tensors[i];
                    if overlap {
                        let mut elements = 0;
                        let ahead = (i + 1..tensors.len())
                            .filter(|&k| encoded(k))
                            .enumerate()
                            .take_while(|&(j, k)| {
                                elements += tensors[k].numel();
                                j < PREPARED_AHEAD || elements <= AHEAD_ELEMENTS
                            });
                        for (_, k) in ahead {
                            if prepared.claim(k) {
                                let whole = (tensors[k].numel() <= WHOLE_ELEMENTS).then_some(&pool);
                                let (prepared, prepare, failed) = (&prepared, &prepare, &failed);
                                s.spawn_fifo(move |_| {
                                    if !failed.load(Ordering::Relaxed) {
                                        prepared.finish(k, prepare(k, whole));
                                    }
                                });
                            }
                        }
                    }
                    if encoded(i) {
                        let f = prepared.take(i, || prepare(i, None))?;
                        stream.emit(t, f)?;
                    } else {
                        stream.copy_raw(t)?;
                    }
                }
                stream.flush()?;
                drop(stream);
                let ws = sink.finish(w, &path)?;
                written.push((path, ws));
            }
            Ok::<_, ConvertError>(written)
        };
        let r = run();
        failed.store(r.is_err(), Ordering::Relaxed);
        r
    })?;
    progress.end();
    sink.commit()?;
    if opts.overwrite {
        // Best effort: the new output is complete and in place either way. The other form,
        // and the shards of an earlier set of this name that the new output did not replace.
        if other.exists() {
            let _ = std::fs::remove_file(&other);
        }
        for stale in shard::stale_shards(&dir, &stem, &outputs) {
            let _ = std::fs::remove_file(stale);
        }
    }
    // Every size counted from the files written: the writer's layout, against their lengths.
    let mut output = OutputBytes::default();
    let mut shards = Vec::new();
    for (k, (staged, ws)) in written.iter().enumerate() {
        let path = match plan.shards.get(k) {
            Some(sh) => dir.join(&sh.file),
            None => staged.clone(),
        };
        let len = std::fs::metadata(&path)
            .map_err(|cause| ConvertError::TargetNotWritable {
                path: path.clone(),
                cause,
            })?
            .len();
        let o = OutputBytes {
            file_size: len,
            header_bytes: ws.header_bytes,
            lut_bytes: ws.lut_bytes,
            code_bytes: ws.code_bytes,
            sign_bytes: ws.sign_bytes,
            scale_bytes: ws.scale_bytes,
            raw_bytes: ws.raw_bytes,
            asset_bytes: ws.asset_bytes,
            padding_bytes: len.saturating_sub(ws.file_size - ws.padding_bytes),
        };
        output.add(&o);
        if let Some(sh) = plan.shards.get(k) {
            debug_assert_eq!(
                o, sh.output,
                "the planned layout of shard {k} is the written one"
            );
            shards.push(ShardPlan {
                output: o,
                ..sh.clone()
            });
        }
    }
    debug_assert_eq!(output, plan.output, "the planned layout is the written one");
    let shown = match &plan.index {
        Some(index) => dir.join(index),
        None => target.to_path_buf(),
    };
    Ok(ConvertSummary::new(&plan, &shown, output, shards))
}

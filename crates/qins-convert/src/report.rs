//! Plans and summaries: what a conversion will do or did, counted in bytes of the output.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use qins_format::{section_lengths, Codec, Dtype, Storage, LUT_BYTES};
use serde::{Serialize, Serializer};

use crate::policy::{Decision, RawReason};
use crate::shard::ShardPlan;
use qins_source::{AssetFile, SkippedFile, SourceTensor};

fn ser_dtype<S: Serializer>(d: &Dtype, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(d.name())
}

/// One tensor of a plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorPlan {
    /// Name.
    pub name: String,
    /// Source dtype.
    #[serde(serialize_with = "ser_dtype")]
    pub dtype: Dtype,
    /// Dimensions.
    pub shape: Vec<u64>,
    /// The weight file it comes from (relative name).
    pub file: String,
    /// Encoded or raw, and why.
    pub decision: Decision,
    /// How the writer stores it (the codec, for an encoded tensor).
    #[serde(skip)]
    pub storage: Storage,
    /// Bytes in the source.
    pub source_bytes: u64,
    /// Bytes stored in the output, padding excluded: raw → its bytes; encoded → codes, sign
    /// bits, row scales (4 bytes per row, with a codec that has them) and its 1 KiB table.
    pub stored_bytes: u64,
    /// `stored_bytes × 8 / elements` (0 for an empty tensor).
    pub bits_per_weight: f64,
}

impl TensorPlan {
    pub(crate) fn new(
        t: &SourceTensor,
        file: &str,
        decision: Decision,
        codec: Codec,
    ) -> TensorPlan {
        let n = t.numel();
        let storage = if decision.is_encoded() {
            Storage::Encoded {
                codec,
                row_scales: codec.uses_row_scales(),
            }
        } else {
            Storage::Raw
        };
        let stored = if decision.is_encoded() {
            let [codes, signs, scales] =
                section_lengths(t.dtype, &t.shape, storage).unwrap_or([n, n.div_ceil(8), 0]);
            codes + signs + scales + LUT_BYTES
        } else {
            t.len
        };
        TensorPlan {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
            file: file.to_string(),
            storage,
            decision,
            source_bytes: t.len,
            stored_bytes: stored,
            bits_per_weight: if n == 0 {
                0.0
            } else {
                stored as f64 * 8.0 / n as f64
            },
        }
    }

    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// The bytes of the output file, by kind; they add up to `file_size`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OutputBytes {
    /// The whole file.
    pub file_size: u64,
    /// The header block (spec §3–§8).
    pub header_bytes: u64,
    /// The LUT table: 1 KiB per encoded tensor.
    pub lut_bytes: u64,
    /// Codes of encoded tensors.
    pub code_bytes: u64,
    /// Sign bits of encoded tensors.
    pub sign_bytes: u64,
    /// Row scales of encoded tensors (4 bytes per row, with a codec that has them).
    pub scale_bytes: u64,
    /// Raw tensors.
    pub raw_bytes: u64,
    /// Assets.
    pub asset_bytes: u64,
    /// Zero padding between sections.
    pub padding_bytes: u64,
}

impl OutputBytes {
    /// Adds `o`'s counts to these (the totals of a set's shards).
    pub(crate) fn add(&mut self, o: &OutputBytes) {
        self.file_size += o.file_size;
        self.header_bytes += o.header_bytes;
        self.lut_bytes += o.lut_bytes;
        self.code_bytes += o.code_bytes;
        self.sign_bytes += o.sign_bytes;
        self.scale_bytes += o.scale_bytes;
        self.raw_bytes += o.raw_bytes;
        self.asset_bytes += o.asset_bytes;
        self.padding_bytes += o.padding_bytes;
    }
}

/// What a conversion will do: the output of [`crate::plan`] (`--dry-run`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConvertPlan {
    /// The source directory as given.
    pub source: String,
    /// The codec of encoded tensors.
    pub codec: String,
    /// Section alignment.
    pub alignment: u32,
    /// Every tensor, in output order (sorted by name).
    pub tensors: Vec<TensorPlan>,
    /// Files carried as assets, sorted by name.
    pub assets: Vec<AssetFile>,
    /// Files neither converted nor carried, and why.
    pub skipped: Vec<SkippedFile>,
    /// The output's metadata (spec §7).
    pub metadata: BTreeMap<String, String>,
    /// Bytes read: the weight files, the shard indexes and the assets.
    pub input_bytes: u64,
    /// The output's exact layout (for a set, the sums over its shards).
    pub output: OutputBytes,
    /// The largest file the output may have (`--max-shard-size`).
    pub max_shard_size: u64,
    /// When the model does not fit in one file: the shards of the set (spec §21), in order.
    /// Empty for a single file.
    pub shards: Vec<ShardPlan>,
    /// The set's index file name, for a set.
    pub index: Option<String>,
    /// The set id, for a set.
    pub set_id: Option<String>,
}

/// Raw tensors that share a reason.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RawGroup {
    /// Why they are raw.
    pub reason: RawReason,
    /// The reason in words.
    pub why: String,
    /// How many tensors.
    pub tensors: usize,
    /// Their bytes (raw, so the same in source and output).
    pub bytes: u64,
    /// The first few names, sorted.
    pub examples: Vec<String>,
}

/// What a conversion did (or, from a plan, would do). Output sizes are counted from the bytes
/// in the file; ratios are `size of the comparison / output file size` (above 1 means smaller).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConvertSummary {
    /// The source directory as given.
    pub source: String,
    /// The output file: the single file, or the set's index.
    pub target: String,
    /// For a set: its shards in order (file names beside the index), each with its exact
    /// layout. Empty for a single file.
    pub shards: Vec<ShardPlan>,
    /// For a set: its id (spec §21.2).
    pub set_id: Option<String>,
    /// The codec of encoded tensors.
    pub codec: String,
    /// Tensors in all.
    pub tensors: usize,
    /// Tensors encoded.
    pub encoded: usize,
    /// Tensors kept raw.
    pub raw: usize,
    /// The raw tensors grouped by reason.
    pub raw_groups: Vec<RawGroup>,
    /// Weights (elements) encoded.
    pub encoded_weights: u64,
    /// Source bytes of the encoded tensors.
    pub encoded_source_bytes: u64,
    /// `(codes + signs + row scales + tables) × 8 / encoded_weights`: what an encoded weight
    /// costs.
    pub bits_per_encoded_weight: f64,
    /// Assets carried (names).
    pub assets: Vec<String>,
    /// Files skipped, and why.
    pub skipped: Vec<SkippedFile>,
    /// Bytes of the source: weight files (headers included), shard indexes, and the assets
    /// carried.
    pub input_bytes: u64,
    /// Tensor bytes in the source (safetensors data, headers excluded).
    pub source_tensor_bytes: u64,
    /// The same model with every F32/F16/BF16 tensor as F32, other tensors and assets as they
    /// are (no safetensors headers).
    pub as_f32_bytes: u64,
    /// The same with every F32/F16/BF16 tensor as BF16.
    pub as_bf16_bytes: u64,
    /// The output, by kind.
    pub output: OutputBytes,
    /// `input_bytes / output.file_size`.
    pub ratio_vs_source: f64,
    /// `as_f32_bytes / output.file_size`.
    pub ratio_vs_f32: f64,
    /// `as_bf16_bytes / output.file_size`.
    pub ratio_vs_bf16: f64,
}

/// Formats a byte count in binary units: `512 B`, `1.50 KiB`, `86.67 MiB`, `2.01 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.2} {}", UNITS[unit])
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl ConvertSummary {
    pub(crate) fn new(
        plan: &ConvertPlan,
        target: &Path,
        output: OutputBytes,
        shards: Vec<ShardPlan>,
    ) -> ConvertSummary {
        let mut groups: BTreeMap<RawReason, RawGroup> = BTreeMap::new();
        let (mut encoded, mut weights, mut enc_src) = (0, 0, 0);
        let (mut f32b, mut bf16b, mut srcb) = (0u64, 0u64, 0u64);
        for t in &plan.tensors {
            srcb += t.source_bytes;
            if t.dtype.is_encodable() {
                f32b += t.numel() * 4;
                bf16b += t.numel() * 2;
            } else {
                f32b += t.source_bytes;
                bf16b += t.source_bytes;
            }
            match &t.decision {
                Decision::Encode(_) => {
                    encoded += 1;
                    weights += t.numel();
                    enc_src += t.source_bytes;
                }
                Decision::Raw(r) => {
                    let g = groups.entry(r.clone()).or_insert_with(|| RawGroup {
                        reason: r.clone(),
                        why: r.to_string(),
                        tensors: 0,
                        bytes: 0,
                        examples: Vec::new(),
                    });
                    g.tensors += 1;
                    g.bytes += t.source_bytes;
                    if g.examples.len() < 3 {
                        g.examples.push(t.name.clone());
                    }
                }
            }
        }
        let assets: u64 = plan.assets.iter().map(|a| a.size).sum();
        let (f32b, bf16b) = (f32b + assets, bf16b + assets);
        let enc_bytes =
            output.code_bytes + output.sign_bytes + output.scale_bytes + output.lut_bytes;
        ConvertSummary {
            source: plan.source.clone(),
            target: target.display().to_string(),
            shards,
            set_id: plan.set_id.clone(),
            codec: plan.codec.clone(),
            tensors: plan.tensors.len(),
            encoded,
            raw: plan.tensors.len() - encoded,
            raw_groups: groups.into_values().collect(),
            encoded_weights: weights,
            encoded_source_bytes: enc_src,
            bits_per_encoded_weight: if weights == 0 {
                0.0
            } else {
                enc_bytes as f64 * 8.0 / weights as f64
            },
            assets: plan.assets.iter().map(|a| a.name.clone()).collect(),
            skipped: plan.skipped.clone(),
            input_bytes: plan.input_bytes,
            source_tensor_bytes: srcb,
            as_f32_bytes: f32b,
            as_bf16_bytes: bf16b,
            output,
            ratio_vs_source: ratio(plan.input_bytes, output.file_size),
            ratio_vs_f32: ratio(f32b, output.file_size),
            ratio_vs_bf16: ratio(bf16b, output.file_size),
        }
    }

    /// The summary as text, one fact a line.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let o = &self.output;
        let h = human_bytes;
        let _ = writeln!(s, "{} -> {}", self.source, self.target);
        let _ = writeln!(
            s,
            "tensors: {} ({} encoded with {}, {} kept raw)",
            self.tensors, self.encoded, self.codec, self.raw
        );
        for g in &self.raw_groups {
            let _ = writeln!(
                s,
                "  raw: {} tensor{}, {}: {} (e.g. {})",
                g.tensors,
                if g.tensors == 1 { "" } else { "s" },
                h(g.bytes),
                g.why,
                g.examples.join(", ")
            );
        }
        if self.encoded > 0 {
            let scales = if o.scale_bytes > 0 {
                format!(", row scales {}", h(o.scale_bytes))
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "encoded: {} weights, {} -> {} ({:.3} bits per weight: codes {}, signs {}{scales}, tables {})",
                self.encoded_weights,
                h(self.encoded_source_bytes),
                h(o.code_bytes + o.sign_bytes + o.scale_bytes + o.lut_bytes),
                self.bits_per_encoded_weight,
                h(o.code_bytes),
                h(o.sign_bytes),
                h(o.lut_bytes)
            );
        }
        let _ = writeln!(
            s,
            "assets: {} carried, {}",
            self.assets.len(),
            h(o.asset_bytes)
        );
        for k in &self.skipped {
            let _ = writeln!(s, "  skipped: {} ({})", k.name, k.reason);
        }
        let _ = writeln!(
            s,
            "in:  {} (weight files, index and assets; tensor data {})",
            h(self.input_bytes),
            h(self.source_tensor_bytes)
        );
        let _ = writeln!(
            s,
            "out: {} ({} bytes: header {}, tables {}, codes {}, signs {}, row scales {}, raw {}, assets {}, padding {})",
            h(o.file_size),
            o.file_size,
            h(o.header_bytes),
            h(o.lut_bytes),
            h(o.code_bytes),
            h(o.sign_bytes),
            h(o.scale_bytes),
            h(o.raw_bytes),
            h(o.asset_bytes),
            h(o.padding_bytes)
        );
        let n = self.shards.len();
        if n > 0 {
            let _ = writeln!(
                s,
                "set of {n} shards (set id {}), each a complete .qins; open it from {}:",
                self.set_id.as_deref().unwrap_or("?"),
                self.target
            );
            for (k, sh) in self.shards.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "  shard {}/{n}: {}, {} tensor{}{}, {}",
                    k + 1,
                    sh.file,
                    sh.tensors,
                    if sh.tensors == 1 { "" } else { "s" },
                    if sh.assets { " and the assets" } else { "" },
                    h(sh.output.file_size)
                );
            }
        }
        let _ = writeln!(
            s,
            "ratio: {:.2}x vs source ({}), {:.2}x vs F32 ({}), {:.2}x vs BF16 ({})",
            self.ratio_vs_source,
            h(self.input_bytes),
            self.ratio_vs_f32,
            h(self.as_f32_bytes),
            self.ratio_vs_bf16,
            h(self.as_bf16_bytes)
        );
        s
    }
}

impl ConvertPlan {
    /// The plan as a summary of the file it would write.
    pub fn summary(&self, target: &Path) -> ConvertSummary {
        let target = match &self.index {
            Some(index) => target.with_file_name(index),
            None => target.to_path_buf(),
        };
        ConvertSummary::new(self, &target, self.output, self.shards.clone())
    }

    /// The plan as text: one line per tensor (decision, reason, bits per weight, stored bytes),
    /// then the summary of the file it would write.
    pub fn render(&self, target: &Path) -> String {
        let mut s = String::new();
        let width = self.tensors.iter().map(|t| t.name.len()).max().unwrap_or(0);
        let _ = writeln!(
            s,
            "{:<width$}  {:<5} {:<18} {:<11} {:>7} {:>11}  why",
            "tensor", "dtype", "shape", "storage", "bits/w", "stored"
        );
        for t in &self.tensors {
            let (storage, why) = match &t.decision {
                Decision::Encode(r) => (self.codec.clone(), r.to_string()),
                Decision::Raw(r) => ("raw".to_string(), r.to_string()),
            };
            let _ = writeln!(
                s,
                "{:<width$}  {:<5} {:<18} {:<11} {:>7.3} {:>11}  {}",
                t.name,
                t.dtype.name(),
                format!("{:?}", t.shape),
                storage,
                t.bits_per_weight,
                human_bytes(t.stored_bytes),
                why
            );
        }
        for a in &self.assets {
            let _ = writeln!(s, "asset {} ({})", a.name, human_bytes(a.size));
        }
        let _ = writeln!(s, "dry run: nothing written");
        s.push_str(&self.summary(target).render());
        s
    }
}

//! Shows what is in a `.qins` file (`spec/qins-v1.md`), counted from the bytes in the file.
//!
//! The library behind the `qins-inspect` binary. A [`Report`] is built from a file that
//! [`qins_read`] has validated; [`write_text`] and [`write_json`] render it; [`write_layout`]
//! prints the annotated byte layout instead. [`inspect`] does all of it for one set of
//! [`Options`], writing to any [`std::io::Write`].
//!
//! ```no_run
//! let file = qins_read::open("model.qins".as_ref())?;
//! let qins = file.parse()?;
//! let opts = qins_inspect::Options::default();
//! qins_inspect::inspect(&qins, "model.qins", &opts, &mut std::io::stdout())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Sets of shards
//!
//! A model stored as a set (spec §21) is opened with [`qins_read::open_model`], from its index
//! or any shard, and shown by [`inspect_model`]: the set (index, id, shards), then each shard's
//! report as for a single file; in JSON, one [`SetReport`]
//! (`{"set": {"index", "set_id", "format_version", "total_size", "tensors", "shards": [{"file",
//! "size", "header_crc32", "tensors", "assets"}], "verified"}, "shards": [report, ...]}`).
//! With `--verify` every shard is verified; with `--against` every tensor of every shard is
//! compared ([`inspect_model_against`]). A single file is shown exactly as before.
//!
//! # Honest accounting
//!
//! Every size comes from the section lengths in the header, which the reader has checked
//! against the file (§9.2, §9.3). Every byte of the file is attributed to exactly one of:
//! header, LUTs, codes, signs, row scales, raw tensors, assets, padding. Padding is summed from
//! the gaps between consecutive sections (not computed as a remainder), and the sum of the
//! categories is asserted to equal the file size. Ratios are shown against the tensors' source
//! dtypes and against the whole model cast to F32 and to BF16 (floating-point tensors at 4 or 2
//! bytes per element; integer, BOOL and complex tensors at their own size, as
//! `torch.nn.Module.to(dtype)` does), always against the whole file: header, tables, assets
//! and padding included. Per tensor, `bits_per_weight` counts the tensor's own sections
//! (codes, signs, row scales) and `bits_per_weight_with_lut` adds its 1 KiB table.
//!
//! # JSON document (`--json`)
//!
//! One object; the key names are stable, new keys may be added. Sizes are exact integers of
//! bytes; ratios and bits are numbers; `null` where a value does not exist (a raw tensor's
//! codec, a ratio over zero stored bytes).
//!
//! ```text
//! {
//!   "file": "model.qins",
//!   "version": {"major": 1, "minor": 0},
//!   "header": {"alignment", "file_size", "header_size", "tensor_count", "asset_count",
//!              "lut_count", "strings_size", "metadata_size", "required_features"},
//!   "metadata": {"key": "value", ...},
//!   "tensors": [{
//!     "name", "shape": [u64], "numel", "dtype": "F32",
//!     "encoding": "raw" | "log" | "linear" | "log+rows" | "linear+rows",
//!     "codec": "log" | "linear" | null, "row_scales": bool,
//!     "params": {"codec": "log", "log_min", "log_max", "min_magnitude", "max_magnitude"}
//!             | {"codec": "linear", "max_abs"} | null,
//!     "lut_index": u32 | null,
//!     "bytes": {"data", "signs", "scales", "stored"},
//!     "source_bytes", "f32_bytes", "bf16_bytes",
//!     "bits_per_weight", "bits_per_weight_with_lut",
//!     "ratio_source", "ratio_f32", "ratio_bf16"
//!   }],
//!   "assets": [{"name", "bytes"}],
//!   "sections": [{"name": "tensor \"w\" signs", "category": "luts" | "codes" | "signs"
//!                 | "row_scales" | "raw" | "assets", "offset", "length", "crc",
//!                 "padding_before"}],
//!   "bytes": {"header", "luts", "codes", "signs", "row_scales", "raw", "assets",
//!             "padding", "total"},
//!   "totals": {"numel", "source_bytes", "f32_bytes", "bf16_bytes", "file_bytes",
//!              "ratio_source", "ratio_f32", "ratio_bf16", "bits_per_weight"},
//!   "verified": bool
//! }
//! ```
//!
//! `bytes.total` always equals `header.file_size`. The fields are documented on [`Report`]
//! and the types it contains.
//!
//! # Against the source (`--against HF_DIR`)
//!
//! [`inspect_against`] adds what the codec did to each tensor, measured against the source
//! weights (module [`against`]): after the text report, a table of the encoded tensors, their
//! totals and the raw tensors' check; in the JSON document, one more key:
//!
//! ```text
//!   "against": {
//!     "source": "HF_DIR",
//!     "encoded": [{"name", "encoding", "numel", "energy", "noise", "rel_rmse",
//!                  "snr_db": f64 | null (exact), "exact": bool, "max_err_rel": f64 | null,
//!                  "source_zeros", "decoded_zeros", "source_zero_share",
//!                  "decoded_zero_share"}],
//!     "raw": [{"name", "bytes", "exact": bool, "first_difference": u64 | null}],
//!     "source_only": ["name"],
//!     "totals": {"encoded_tensors", "encoded_weights", "energy", "noise", "rel_rmse",
//!                "snr_db": f64 | null, "exact", "worst_snr_db": f64 | null,
//!                "worst_tensor": string | null, "max_err_rel": f64 | null,
//!                "source_zero_share", "decoded_zero_share", "bits_per_weight": f64 | null,
//!                "raw_tensors", "raw_mismatches"}
//!   }
//! ```
//!
//! The fields are documented on [`Against`] and the types it contains.
#![forbid(unsafe_code)]

pub mod against;
mod layout;
mod report;
mod sections;
mod set;
mod text;
mod units;

use std::io::{self, Write};
use std::path::Path;

use qins_read::{Qins, ReadError};
use qins_source::HfSource;
use serde::Serialize;

pub use against::{compare, compare_model, write_against_text, Against, AgainstError};
pub use layout::write_layout;
pub use report::{
    AssetReport, ByteCounts, HeaderFields, Params, Report, Section, TensorBytes, TensorReport,
    Totals, Version,
};
pub use sections::Category;
pub use set::{
    inspect_model, inspect_model_against, write_set_text, SetInfo, SetReport, ShardInfo,
};
pub use text::write_text;
pub use units::human_size;

/// Which view [`inspect`] writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// The human-readable report ([`write_text`]).
    #[default]
    Text,
    /// The report as one JSON document ([`write_json`]).
    Json,
    /// The annotated byte layout ([`write_layout`]).
    Layout,
}

/// What [`inspect`] does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// The view to write.
    pub format: Format,
    /// Verify every checksum, the padding, the sign bits and the row scales (§14) first, and
    /// fail on the first problem. Without it only the open-time validation (§17) has been done.
    pub verify: bool,
    /// In the layout view, show every byte: all 256 entries of each LUT and whole sections.
    pub full: bool,
}

/// Why [`inspect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Verification found a problem; the message names the section (§14).
    #[error(transparent)]
    Verify(#[from] ReadError),
    /// The output could not be written.
    #[error("cannot write the output: {0}")]
    Write(#[from] io::Error),
    /// The file cannot be compared with the source, or its raw tensors differ from it
    /// ([`inspect_against`]).
    #[error(transparent)]
    Against(#[from] AgainstFailure),
}

/// Why [`inspect_against`] failed: the source directory as given, and the cause; shown as
/// `against DIR: cause` (or `against the source: cause` when the cause, an error reading the
/// source, names the path itself).
#[derive(Debug, thiserror::Error)]
#[error("{}", failure_message(.dir, .cause))]
pub struct AgainstFailure {
    /// The source directory as given.
    pub dir: String,
    /// What went wrong.
    pub cause: AgainstError,
}

/// Writes `report` as one JSON document (see the crate documentation), followed by a newline.
pub fn write_json(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, report)?;
    writeln!(out)
}

fn failure_message(dir: &str, cause: &AgainstError) -> String {
    match cause {
        AgainstError::Source(_) => format!("against the source: {cause}"),
        _ => format!("against {dir}: {cause}"),
    }
}

/// The JSON document of [`inspect_against`] (and [`inspect_model_against`]): the report's
/// keys, then `against`.
#[derive(Serialize)]
struct WithAgainst<'a, R> {
    #[serde(flatten)]
    report: &'a R,
    against: &'a Against,
}

/// Writes `report` (as JSON, or as text by `text`) with the comparison `against` of the files
/// with `source`, then fails if raw tensors differ from the source.
fn write_with_against<R: Serialize>(
    report: &R,
    text: impl FnOnce(&R, &mut dyn Write) -> io::Result<()>,
    against: Against,
    opts: &Options,
    source: &Path,
    out: &mut dyn Write,
) -> Result<Against, Error> {
    match opts.format {
        Format::Json => {
            serde_json::to_writer_pretty(
                &mut *out,
                &WithAgainst {
                    report,
                    against: &against,
                },
            )
            .map_err(io::Error::from)?;
            writeln!(out)?;
        }
        Format::Text | Format::Layout => {
            text(report, out)?;
            write_against_text(&against, out)?;
        }
    }
    out.flush()?;
    let mismatches = against.mismatches();
    if !mismatches.is_empty() {
        let cause = AgainstError::RawMismatch { mismatches };
        return Err(AgainstFailure {
            dir: source.display().to_string(),
            cause,
        }
        .into());
    }
    Ok(against)
}

/// Inspects a validated file shown as `name` and compares it with the Hugging Face directory
/// `source` it was converted from (see [`against`]): verifies it if asked, compares every
/// tensor, then writes the text report followed by the comparison, or one JSON document with
/// the `against` key (`opts.format` must not be [`Format::Layout`], which has no comparison;
/// it is written as text).
///
/// Fails without writing anything when verification fails, the source cannot be read, or a
/// tensor is missing from it or differs in shape or dtype; fails after writing everything
/// when raw tensors are not bit-exact copies of the source ([`AgainstError::RawMismatch`]).
pub fn inspect_against(
    file: &Qins<'_>,
    name: &str,
    opts: &Options,
    source: &Path,
    out: &mut dyn Write,
) -> Result<Against, Error> {
    if opts.verify {
        file.verify()?;
    }
    against_verified(file, name, opts, source, out)
}

/// [`inspect_against`] for a file that was verified already if `opts.verify` says so.
fn against_verified(
    file: &Qins<'_>,
    name: &str,
    opts: &Options,
    source: &Path,
    out: &mut dyn Write,
) -> Result<Against, Error> {
    let fail = |cause: AgainstError| AgainstFailure {
        dir: source.display().to_string(),
        cause,
    };
    let src = HfSource::open(source).map_err(|e| fail(e.into()))?;
    let against = compare(file, &src).map_err(fail)?;
    let report = Report::new(file, name, opts.verify);
    write_with_against(&report, write_text, against, opts, source, out)
}

/// Inspects a validated file shown as `name`: verifies it if asked, then writes the view that
/// `opts` selects to `out`. On a verification failure nothing is written.
pub fn inspect(
    file: &Qins<'_>,
    name: &str,
    opts: &Options,
    out: &mut dyn Write,
) -> Result<(), Error> {
    if opts.verify {
        file.verify()?;
    }
    show(file, name, opts, out)
}

/// [`inspect`] for a file that was verified already if `opts.verify` says so: writes the view.
fn show(file: &Qins<'_>, name: &str, opts: &Options, out: &mut dyn Write) -> Result<(), Error> {
    match opts.format {
        Format::Text => write_text(&Report::new(file, name, opts.verify), out)?,
        Format::Json => write_json(&Report::new(file, name, opts.verify), out)?,
        Format::Layout => write_layout(file, name, opts.full, out)?,
    }
    out.flush()?;
    Ok(())
}

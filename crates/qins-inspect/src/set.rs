//! Inspecting a model stored as a set of shards (spec §21): the set, then each shard's report.
//!
//! A set is shown as its index (id, version, shards with their sizes and header CRCs), then
//! every shard as [`crate::inspect`] shows a single file, in order. `--verify` verifies every
//! shard first; `--against` compares every tensor of every shard with the source.

use std::io::{self, Write};
use std::path::Path;

use qins_read::Model;
use qins_source::HfSource;
use serde::{Deserialize, Serialize};

use crate::units::{human_size, Table};
use crate::{
    compare_model, write_layout, write_text, Against, AgainstError, AgainstFailure, Error, Format,
    Options, Report,
};

/// What `qins-inspect` reports about a set: the index, then each shard's [`Report`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetReport {
    /// The set itself.
    pub set: SetInfo,
    /// One report per shard, in order.
    pub shards: Vec<Report>,
}

/// The index of a set (spec §21.2) and what its shards hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetInfo {
    /// The index as the caller named it.
    pub index: String,
    /// The set id.
    pub set_id: String,
    /// The index's `format_version`.
    pub format_version: String,
    /// The sum of the shards' sizes.
    pub total_size: u64,
    /// Tensors in all shards.
    pub tensors: usize,
    /// The shards, in order.
    pub shards: Vec<ShardInfo>,
    /// Whether every shard was verified (§14) before the report was made.
    pub verified: bool,
}

/// One shard as the index lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// The file name, beside the index.
    pub file: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its header CRC (§8), 8 hex digits.
    pub header_crc32: String,
    /// Its tensors.
    pub tensors: usize,
    /// Its assets (shard 1 only).
    pub assets: usize,
}

impl SetReport {
    /// The report of a validated set shown as `name` (its index, or the shard it was opened
    /// from), `verified` saying whether every shard was verified. `None` for a single file.
    pub fn new(model: &Model<'_>, name: &str, verified: bool) -> Option<SetReport> {
        let (index_path, index) = model.index()?;
        let (major, minor) = index.version();
        let shards: Vec<Report> = model
            .files()
            .iter()
            .zip(model.paths())
            .map(|(q, p)| Report::new(q, &file_name(p), verified))
            .collect();
        Some(SetReport {
            set: SetInfo {
                index: if Path::new(name).file_name() == index_path.file_name() {
                    name.to_string()
                } else {
                    index_path.display().to_string()
                },
                set_id: index.set_id().to_string(),
                format_version: format!("{major}.{minor}"),
                total_size: index.total_size(),
                tensors: model.tensor_count(),
                shards: index
                    .shards()
                    .iter()
                    .zip(model.files())
                    .map(|(s, q)| ShardInfo {
                        file: s.file.clone(),
                        size: s.size,
                        header_crc32: format!("{:08x}", s.header_crc32),
                        tensors: q.tensor_count(),
                        assets: q.assets().len(),
                    })
                    .collect(),
                verified,
            },
            shards,
        })
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Writes the set's summary: the index, and one line per shard.
pub fn write_set_text(r: &SetReport, out: &mut dyn Write) -> io::Result<()> {
    let s = &r.set;
    writeln!(out, "set:       {}", s.index)?;
    writeln!(
        out,
        "format:    QINS {} set of {} shard{} (spec §21), set id {}",
        s.format_version,
        s.shards.len(),
        if s.shards.len() == 1 { "" } else { "s" },
        s.set_id
    )?;
    writeln!(
        out,
        "size:      {} ({} B), {} tensors",
        human_size(s.total_size),
        s.total_size,
        s.tensors
    )?;
    if s.verified {
        writeln!(out, "checksums: verified, every shard (§14)")?;
    } else {
        writeln!(
            out,
            "checksums: not verified (structure, header CRCs and the index; use --verify)"
        )?;
    }
    writeln!(out, "\nshards ({})", s.shards.len())?;
    let mut t = Table::new(
        &["", "file", "size", "header crc", "tensors", "assets"],
        &[true, false, true, false, true, true],
    );
    for (k, sh) in s.shards.iter().enumerate() {
        t.row(vec![
            (k + 1).to_string(),
            sh.file.clone(),
            human_size(sh.size),
            sh.header_crc32.clone(),
            sh.tensors.to_string(),
            sh.assets.to_string(),
        ]);
    }
    t.write("  ", out)
}

/// Inspects a model opened with [`qins_read::open_model`] and shown as `name`: a single file as
/// [`crate::inspect`] does; a set as its summary, then each shard's view (text, JSON as one
/// [`SetReport`], or each shard's layout). Verifies every file first if asked; on a
/// verification failure nothing is written.
pub fn inspect_model(
    model: &Model<'_>,
    name: &str,
    opts: &Options,
    out: &mut dyn Write,
) -> Result<(), Error> {
    // Verified through the model, which releases the pages it has read (a single file too).
    if opts.verify {
        model.verify()?;
    }
    let Some(r) = SetReport::new(model, name, opts.verify) else {
        return crate::show(&model.files()[0], name, opts, out);
    };
    match opts.format {
        Format::Text => {
            write_set_text(&r, out)?;
            for (k, shard) in r.shards.iter().enumerate() {
                writeln!(
                    out,
                    "\n== shard {}/{}: {}\n",
                    k + 1,
                    r.shards.len(),
                    shard.file
                )?;
                write_text(shard, out)?;
            }
        }
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &r).map_err(io::Error::from)?;
            writeln!(out)?;
        }
        Format::Layout => {
            for (k, (q, p)) in model.files().iter().zip(model.paths()).enumerate() {
                if k > 0 {
                    writeln!(out)?;
                }
                writeln!(
                    out,
                    "== shard {}/{}: {}\n",
                    k + 1,
                    r.shards.len(),
                    p.display()
                )?;
                write_layout(q, &file_name(p), opts.full, out)?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// [`crate::inspect_against`] for a model opened with [`qins_read::open_model`]: for a set,
/// every tensor of every shard is compared with `source`, and the set's view is followed by
/// the comparison (or, in JSON, the [`SetReport`] gets the `against` key).
pub fn inspect_model_against(
    model: &Model<'_>,
    name: &str,
    opts: &Options,
    source: &Path,
    out: &mut dyn Write,
) -> Result<Against, Error> {
    if opts.verify {
        model.verify()?;
    }
    let Some(r) = SetReport::new(model, name, opts.verify) else {
        return crate::against_verified(&model.files()[0], name, opts, source, out);
    };
    let fail = |cause: AgainstError| AgainstFailure {
        dir: source.display().to_string(),
        cause,
    };
    let src = HfSource::open(source).map_err(|e| fail(e.into()))?;
    let against = compare_model(model, &src).map_err(fail)?;
    let text = |r: &SetReport, out: &mut dyn Write| {
        write_set_text(r, out)?;
        writeln!(out)
    };
    crate::write_with_against(&r, text, against, opts, source, out)
}

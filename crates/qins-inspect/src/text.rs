//! The text view of a [`Report`].

use std::io::{self, Write};

use crate::report::{Params, Report};
use crate::units::{fixed2, human_size, sig4, times, Table};

/// The codec parameters in words: `ln|w| -3.4657..0.0000 = |w| 0.03125..1` for `log`,
/// `max|w| 1.5` for `linear`, `max|w| 1.5, fit SNR 48.7 dB` for `lloyd` and `lloyd-rows`, `-` for
/// raw.
fn params_text(params: Option<&Params>, row_scales: bool) -> String {
    let of = if row_scales { "w/scale" } else { "w" };
    match params {
        None => "-".to_string(),
        Some(Params::Log {
            log_min,
            log_max,
            min_magnitude,
            max_magnitude,
        }) => format!(
            "ln|{of}| {log_min:.4}..{log_max:.4} = |{of}| {}..{}",
            sig4(*min_magnitude),
            sig4(*max_magnitude)
        ),
        Some(Params::Linear { max_abs }) => format!("max|{of}| {}", sig4(*max_abs)),
        Some(Params::Lloyd { max_abs, rel_err } | Params::LloydRows { max_abs, rel_err }) => {
            if *rel_err > 0.0 {
                format!(
                    "max|{of}| {}, fit SNR {:.1} dB",
                    sig4(*max_abs),
                    -10.0 * rel_err.log10()
                )
            } else {
                format!("max|{of}| {}, fit exact", sig4(*max_abs))
            }
        }
    }
}

/// The shape as `[2, 3]` (`[]` for a scalar).
fn shape_text(shape: &[u64]) -> String {
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    format!("[{}]", dims.join(", "))
}

fn percent(part: u64, whole: u64) -> String {
    format!("{:.2}%", 100.0 * part as f64 / whole as f64)
}

/// Writes the human-readable report: header, metadata, one row per tensor, assets, the byte
/// accounting and the ratios. Sizes are in human units; the byte accounting also shows exact
/// byte counts.
pub fn write_text(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    let h = &r.header;
    writeln!(out, "file:      {}", r.file)?;
    writeln!(
        out,
        "format:    QINS {}.{}",
        r.version.major, r.version.minor
    )?;
    if r.verified {
        writeln!(
            out,
            "checksums: verified (every section CRC, zero padding, sign bits, row scales; §14)"
        )?;
    } else {
        writeln!(
            out,
            "checksums: not verified (structure and header CRC only; use --verify)"
        )?;
    }

    writeln!(out, "\nheader")?;
    let mut t = Table::new(&[], &[false, false]);
    t.row(vec!["alignment".into(), format!("{} B", h.alignment)]);
    t.row(vec![
        "file size".into(),
        format!("{} ({} B)", human_size(h.file_size), h.file_size),
    ]);
    t.row(vec!["header size".into(), human_size(h.header_size)]);
    t.row(vec!["tensors".into(), h.tensor_count.to_string()]);
    t.row(vec!["assets".into(), h.asset_count.to_string()]);
    t.row(vec!["LUTs".into(), h.lut_count.to_string()]);
    t.row(vec![
        "string table".into(),
        human_size(h.strings_size.into()),
    ]);
    t.row(vec!["metadata".into(), human_size(h.metadata_size.into())]);
    t.row(vec![
        "required features".into(),
        format!("{:#x}", h.required_features),
    ]);
    t.write("  ", out)?;

    writeln!(out, "\nmetadata ({})", r.metadata.len())?;
    for (k, v) in &r.metadata {
        writeln!(out, "  {k} = {v:?}")?;
    }

    writeln!(out, "\ntensors ({})", r.tensors.len())?;
    if !r.tensors.is_empty() {
        let mut t = Table::new(
            &[
                "name", "shape", "dtype", "encoding", "params", "stored", "bits/w", "+LUT",
                "vs src", "vs F32", "vs BF16",
            ],
            &[
                false, false, false, false, false, true, true, true, true, true, true,
            ],
        );
        for x in &r.tensors {
            t.row(vec![
                x.name.clone(),
                shape_text(&x.shape),
                x.dtype.clone(),
                x.encoding.clone(),
                if x.numel == 0 {
                    "(empty)".to_string()
                } else {
                    params_text(x.params.as_ref(), x.row_scales)
                },
                human_size(x.bytes.stored),
                fixed2(x.bits_per_weight),
                fixed2(x.bits_per_weight_with_lut),
                times(x.ratio_source),
                times(x.ratio_f32),
                times(x.ratio_bf16),
            ]);
        }
        t.write("  ", out)?;
        writeln!(
            out,
            "  stored = data + signs + row scales; bits/w = stored × 8 / elements, without the \
             tensor's 1 KiB table; +LUT includes it; vs X = the tensor's size in X / stored"
        )?;
    }

    writeln!(out, "\nassets ({})", r.assets.len())?;
    if !r.assets.is_empty() {
        let mut t = Table::new(&[], &[false, true]);
        for a in &r.assets {
            t.row(vec![a.name.clone(), human_size(a.bytes)]);
        }
        t.write("  ", out)?;
    }

    let b = &r.bytes;
    writeln!(
        out,
        "\nbytes in the file (each byte counted once; the sum is the file size)"
    )?;
    let mut t = Table::new(&[], &[false, true, true, true]);
    for (what, n) in [
        ("header", b.header),
        ("LUTs", b.luts),
        ("codes", b.codes),
        ("signs", b.signs),
        ("row scales", b.row_scales),
        ("raw tensors", b.raw),
        ("assets", b.assets),
        ("padding", b.padding),
        ("total", b.total),
    ] {
        t.row(vec![
            what.into(),
            human_size(n),
            format!("{n} B"),
            percent(n, h.file_size),
        ]);
    }
    t.write("  ", out)?;

    let s = &r.totals;
    writeln!(
        out,
        "\nthe tensors in other dtypes, against this file (their size / the file size)"
    )?;
    let mut t = Table::new(&[], &[false, true, true]);
    t.row(vec![
        "source dtypes".into(),
        human_size(s.source_bytes),
        times(Some(s.ratio_source)),
    ]);
    t.row(vec![
        "as F32".into(),
        human_size(s.f32_bytes),
        times(Some(s.ratio_f32)),
    ]);
    t.row(vec![
        "as BF16".into(),
        human_size(s.bf16_bytes),
        times(Some(s.ratio_bf16)),
    ]);
    t.row(vec!["file".into(), human_size(s.file_bytes), String::new()]);
    t.write("  ", out)?;
    writeln!(
        out,
        "  {} weights; {} bits per weight for the whole file (header, tables, assets and \
         padding included); integer, BOOL and complex tensors keep their size as F32/BF16",
        s.numel,
        fixed2(s.bits_per_weight)
    )?;
    Ok(())
}

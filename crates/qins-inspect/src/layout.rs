//! The annotated layout: every header field with its offset, size, bytes and value, then every
//! padding run and data section, in file order, as an annotated hex dump.

use std::io::{self, Write};

use qins_format::{Codec, Dtype, SectionRef, TensorRecord, FLAG_ROW_SCALES, LUT_BYTES};
use qins_read::{Qins, TensorView};

use crate::sections::{Category, Header, Owner, Part};
use crate::units::{human_size, Table};

/// Without `full`: bytes shown of each data section before the rest is elided.
const SHOWN_BYTES: u64 = 64;
/// Without `full`: entries shown at the start of each LUT (entry 255 is shown too).
const SHOWN_LUT_ENTRIES: u64 = 4;
/// Without `full`: decoded elements listed per encoded tensor.
const SHOWN_VALUES: u64 = 16;

/// The bytes as lower-case hex pairs separated by spaces.
fn hex(bytes: &[u8]) -> String {
    let pairs: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    pairs.join(" ")
}

/// The bytes as text, printable ASCII kept and everything else shown as `.`.
fn ascii(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '.'
            }
        })
        .collect()
}

/// Writes lines of `offset  size  bytes  note`.
struct Dump<'a, 'o> {
    data: &'a [u8],
    out: &'o mut dyn Write,
    full: bool,
}

impl Dump<'_, '_> {
    fn bytes(&self, offset: u64, len: u64) -> &[u8] {
        &self.data[offset as usize..(offset + len) as usize]
    }

    fn line(&mut self, offset: u64, size: Option<u64>, bytes: &str, note: &str) -> io::Result<()> {
        let size = size.map_or(String::new(), |s| s.to_string());
        let line = format!("{offset:08x}  {size:>6}  {bytes:<47}  {note}");
        writeln!(self.out, "{}", line.trim_end())
    }

    /// A line with only a note, in the note column.
    fn note(&mut self, note: &str) -> io::Result<()> {
        writeln!(self.out, "{:67}{note}", "")
    }

    fn heading(&mut self, text: &str) -> io::Result<()> {
        writeln!(self.out, "\n-- {text}")
    }

    /// A field of `len` bytes at `offset`: 16 bytes a line, `note` on the first line and
    /// `more(chunk)` on the others.
    fn field_with(
        &mut self,
        offset: u64,
        len: u64,
        note: &str,
        more: &dyn Fn(&[u8]) -> String,
    ) -> io::Result<()> {
        let data = self.data;
        let bytes = &data[offset as usize..(offset + len) as usize];
        if bytes.is_empty() {
            return self.line(offset, Some(0), "", note);
        }
        for (i, chunk) in bytes.chunks(16).enumerate() {
            let at = offset + 16 * i as u64;
            if i == 0 {
                self.line(at, Some(len), &hex(chunk), note)?;
            } else {
                self.line(at, None, &hex(chunk), &more(chunk))?;
            }
        }
        Ok(())
    }

    fn field(&mut self, offset: u64, len: u64, note: &str) -> io::Result<()> {
        self.field_with(offset, len, note, &|_| String::new())
    }

    /// A data section's bytes, 16 a line, `note(index of the line's first byte, chunk)` on
    /// each; without `full`, only the first [`SHOWN_BYTES`] bytes.
    fn lines(
        &mut self,
        offset: u64,
        len: u64,
        note: &dyn Fn(u64, &[u8]) -> String,
    ) -> io::Result<()> {
        let shown = if self.full { len } else { len.min(SHOWN_BYTES) };
        let data = self.data;
        let bytes = &data[offset as usize..(offset + shown) as usize];
        for (i, chunk) in bytes.chunks(16).enumerate() {
            let rel = 16 * i as u64;
            self.line(
                offset + rel,
                Some(chunk.len() as u64),
                &hex(chunk),
                &note(rel, chunk),
            )?;
        }
        self.omitted(offset + shown, len - shown, "")
    }

    fn omitted(&mut self, offset: u64, len: u64, what: &str) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let what = if what.is_empty() {
            String::new()
        } else {
            format!("{what} ")
        };
        self.line(
            offset,
            Some(len),
            "..",
            &format!("{what}not shown ({len} bytes; --full shows everything)"),
        )
    }

    fn u32_field(&mut self, offset: u64, name: &str, value: u32, extra: &str) -> io::Result<()> {
        self.field(offset, 4, &format!("{name} = {value}{extra}"))
    }

    fn u64_field(&mut self, offset: u64, name: &str, value: u64, extra: &str) -> io::Result<()> {
        self.field(offset, 8, &format!("{name} = {value}{extra}"))
    }

    /// The four fields of a section reference (§9.1) at `base`.
    fn section(&mut self, base: u64, name: &str, s: &SectionRef, what: &str) -> io::Result<()> {
        if s.is_unused() {
            self.u64_field(
                base,
                &format!("{name}.offset"),
                0,
                &format!(" ({what}: unused section, all fields 0)"),
            )?;
        } else {
            let o = s.offset.get();
            self.u64_field(
                base,
                &format!("{name}.offset"),
                o,
                &format!(" (0x{o:x}; {what})"),
            )?;
        }
        self.u64_field(base + 8, &format!("{name}.length"), s.length.get(), "")?;
        self.field(base + 16, 4, &format!("{name}.crc = 0x{:08x}", s.crc.get()))?;
        self.u32_field(base + 20, &format!("{name}.reserved"), s.reserved.get(), "")
    }
}

/// The values of the elements of a raw chunk, for the dtypes whose elements are whole bytes
/// and whose values have an obvious text form; `None` otherwise.
fn element_values(dtype: Dtype, bytes: &[u8]) -> Option<Vec<String>> {
    let size = match dtype.bits() {
        8 | 16 | 32 | 64 => (dtype.bits() / 8) as usize,
        _ => return None,
    };
    let vals = bytes.chunks_exact(size);
    let arr = |b: &[u8]| -> [u8; 8] {
        let mut a = [0u8; 8];
        a[..b.len()].copy_from_slice(b);
        a
    };
    Some(match dtype {
        Dtype::BOOL => vals.map(|b| (b[0] != 0).to_string()).collect(),
        Dtype::U8 => vals.map(|b| b[0].to_string()).collect(),
        Dtype::I8 => vals.map(|b| (b[0] as i8).to_string()).collect(),
        Dtype::I16 => vals
            .map(|b| i16::from_le_bytes([b[0], b[1]]).to_string())
            .collect(),
        Dtype::U16 => vals
            .map(|b| u16::from_le_bytes([b[0], b[1]]).to_string())
            .collect(),
        Dtype::I32 => vals
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]).to_string())
            .collect(),
        Dtype::U32 => vals
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]).to_string())
            .collect(),
        Dtype::I64 => vals
            .map(|b| i64::from_le_bytes(arr(b)).to_string())
            .collect(),
        Dtype::U64 => vals
            .map(|b| u64::from_le_bytes(arr(b)).to_string())
            .collect(),
        Dtype::F64 => vals.map(|b| num(f64::from_le_bytes(arr(b)))).collect(),
        Dtype::F16 | Dtype::BF16 | Dtype::F32 => {
            let mut out = vec![0f32; bytes.len() / size];
            dtype.to_f32(&bytes[..out.len() * size], &mut out)?;
            out.iter().map(|&v| num(v)).collect()
        }
        _ => return None,
    })
}

fn dtype_text(code: u8) -> String {
    Dtype::from_code(code).map_or_else(|| "unknown".to_string(), |d| d.name().to_string())
}

fn shape_text(shape: &[u64]) -> String {
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// A float as its shortest round-trip decimal, in scientific notation outside [1e-4, 1e7) so
/// that tiny and huge values stay short (`0.5`, `-2`, `2.3509887e-38`).
fn num<T: Into<f64> + std::fmt::Display + std::fmt::LowerExp + Copy>(v: T) -> String {
    let x: f64 = v.into();
    if x == 0.0 || !x.is_finite() || (1e-4..1e7).contains(&x.abs()) {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

/// `"1 byte"`, `"6 bytes"`.
fn bytes_text(n: u64) -> String {
    if n == 1 {
        "1 byte".to_string()
    } else {
        format!("{n} bytes")
    }
}

fn f32_at(bytes: &[u8]) -> f32 {
    f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// Writes the annotated layout of `file`, shown as `name`: a map of every byte range, then
/// every header field (§3–§8) with its absolute offset, size, bytes and decoded value, then
/// each padding run and data section (§9–§13) with its bytes annotated. Without `full`, each
/// LUT shows entries 0–3 and 255, and each data section its first 64 bytes.
///
/// # Panics
/// If the sections of `file` do not tile it (a validated file always does).
pub fn write_layout(
    file: &Qins<'_>,
    name: &str,
    full: bool,
    out: &mut dyn Write,
) -> io::Result<()> {
    let h = Header::of(file);
    let p = h.preamble;
    let parts = h.parts();
    let (major, minor) = file.version();
    let file_size = file.file_size();
    let header_size = file.header_size();
    writeln!(
        out,
        "{name}: QINS {major}.{minor}, {file_size} bytes ({}), alignment {}",
        human_size(file_size),
        file.alignment()
    )?;

    section_map(&h, &parts, header_size, file_size, out)?;

    writeln!(out, "\noffset      size  bytes (hex){:36}field = value", "")?;
    let mut d = Dump {
        data: file.bytes(),
        out,
        full,
    };

    // §3 preamble.
    d.heading(&format!(
        "header block (§3-§8): {header_size} bytes at 0x00000000"
    ))?;
    d.heading("preamble (§3): 96 bytes at 0x00000000")?;
    d.field(0, 8, &format!("magic = \"{}\"", p.magic.escape_ascii()))?;
    d.field(8, 2, &format!("version_major = {}", p.version_major.get()))?;
    d.field(10, 2, &format!("version_minor = {}", p.version_minor.get()))?;
    d.u32_field(12, "alignment", p.alignment.get(), "")?;
    d.field(
        16,
        8,
        &format!("required_features = 0x{:x}", p.required_features.get()),
    )?;
    d.u64_field(24, "file_size", p.file_size.get(), "")?;
    d.u64_field(32, "header_size", p.header_size.get(), "")?;
    d.u32_field(40, "tensor_count", p.tensor_count.get(), "")?;
    d.u32_field(44, "asset_count", p.asset_count.get(), "")?;
    d.u32_field(48, "lut_count", p.lut_count.get(), "")?;
    d.u32_field(52, "strings_size", p.strings_size.get(), "")?;
    d.u32_field(56, "metadata_size", p.metadata_size.get(), "")?;
    d.u32_field(60, "reserved", p.reserved0.get(), "")?;
    d.section(64, "lut_table", &p.lut_table, "LUT table")?;
    d.u64_field(88, "reserved", p.reserved1.get(), "")?;

    // §4 tensor records.
    for (k, r) in h.tensors.iter().enumerate() {
        let base = qins_format::PREAMBLE_SIZE + qins_format::TENSOR_RECORD_SIZE * k as u64;
        tensor_record(&mut d, &h, k, base, r)?;
    }

    // §5 asset records.
    let assets_base =
        qins_format::PREAMBLE_SIZE + qins_format::TENSOR_RECORD_SIZE * h.tensors.len() as u64;
    for (k, a) in h.assets.iter().enumerate() {
        let base = assets_base + qins_format::ASSET_RECORD_SIZE * k as u64;
        let name = h.name(a.name_offset.get(), a.name_len.get());
        d.heading(&format!(
            "asset record {k} (§5): 32 bytes at 0x{base:08x}: {name:?}"
        ))?;
        d.u32_field(base, "name_offset", a.name_offset.get(), "")?;
        d.u32_field(
            base + 4,
            "name_len",
            a.name_len.get(),
            &format!(" -> {name:?}"),
        )?;
        d.section(base + 8, "data", &a.data, "the asset's bytes")?;
    }

    string_table(&mut d, &h)?;

    // §7 metadata.
    let (mo, ml) = (h.metadata_offset, h.metadata.len() as u64);
    if ml == 0 {
        d.heading(&format!(
            "metadata (§7): 0 bytes at 0x{mo:08x} (an empty object)"
        ))?;
    } else {
        d.heading(&format!("metadata (§7): {} at 0x{mo:08x}", bytes_text(ml)))?;
        let first = ascii(&h.metadata[..h.metadata.len().min(16)]);
        d.field_with(mo, ml, &first, &ascii)?;
    }

    // §8 header CRC.
    d.heading(&format!(
        "header CRC (§8): 4 bytes at 0x{:08x}",
        h.crc_offset
    ))?;
    d.field(
        h.crc_offset,
        4,
        &format!(
            "header_crc = 0x{:08x} (CRC32 of bytes 0x0..0x{:x})",
            h.crc, h.crc_offset
        ),
    )?;

    // §9 data sections and padding, in canonical order.
    let mut luts = Vec::new();
    let tensors: Vec<TensorView<'_>> = file.tensors().collect();
    for t in &tensors {
        if let Some(lut) = t.lut() {
            luts.push((t.name(), t.codec(), lut));
        }
    }
    d.heading(&format!(
        "data sections (§9.2): in canonical order, each at a multiple of {}",
        file.alignment()
    ))?;
    let mut end = header_size;
    for (i, s) in parts.iter().enumerate() {
        padding(&mut d, end, s.padding_before, s.offset)?;
        end = s.offset + s.length;
        match s.owner {
            Owner::Luts => lut_table(&mut d, s, &luts)?,
            Owner::Tensor(k) => {
                let t = &tensors[k];
                tensor_section(&mut d, s, t, &h.tensors[k])?;
                let last = !matches!(parts.get(i + 1), Some(n) if n.owner == s.owner);
                if last && t.lut().is_some() {
                    decoded(&mut d, t, h.tensors[k].lut_index.get())?;
                }
            }
            Owner::Asset(_) => {
                d.heading(&format!(
                    "{} (§5): {} at 0x{:08x}, crc 0x{:08x}",
                    s.name,
                    bytes_text(s.length),
                    s.offset,
                    s.crc
                ))?;
                d.lines(s.offset, s.length, &|_, chunk| {
                    format!("|{}|", ascii(chunk))
                })?;
            }
        }
    }
    d.heading(&format!(
        "end of file at 0x{file_size:08x} = file_size ({file_size} bytes)"
    ))?;
    Ok(())
}

/// The table of every byte range in file order: header, padding, sections; they sum to the
/// file size.
fn section_map(
    h: &Header<'_>,
    parts: &[Part],
    header_size: u64,
    file_size: u64,
    out: &mut dyn Write,
) -> io::Result<()> {
    writeln!(
        out,
        "\nsection map: every byte of the file, in order (§9.2, §9.3)"
    )?;
    let mut t = Table::new(
        &["start", "end", "length", "crc", "what"],
        &[false, false, true, false, false],
    );
    t.row(vec![
        format!("{:08x}", 0),
        format!("{header_size:08x}"),
        header_size.to_string(),
        format!("{:08x}", h.crc),
        "header block (§3-§8)".into(),
    ]);
    let mut end = header_size;
    let mut sum = header_size;
    for s in parts {
        if s.padding_before > 0 {
            t.row(vec![
                format!("{end:08x}"),
                format!("{:08x}", s.offset),
                s.padding_before.to_string(),
                String::new(),
                "padding".into(),
            ]);
        }
        let what = match s.category {
            Category::Luts => format!("{} ({} x 1 KiB)", s.name, s.length / LUT_BYTES),
            Category::Codes => format!("{} (codes)", s.name),
            Category::Raw => format!("{} (raw)", s.name),
            _ => s.name.clone(),
        };
        t.row(vec![
            format!("{:08x}", s.offset),
            format!("{:08x}", s.offset + s.length),
            s.length.to_string(),
            format!("{:08x}", s.crc),
            what,
        ]);
        sum += s.padding_before + s.length;
        end = s.offset + s.length;
    }
    assert_eq!(sum, file_size, "the map must cover the file exactly");
    t.row(vec![
        String::new(),
        String::new(),
        sum.to_string(),
        String::new(),
        "total = file_size".into(),
    ]);
    t.write("  ", out)
}

fn tensor_record(
    d: &mut Dump<'_, '_>,
    h: &Header<'_>,
    k: usize,
    base: u64,
    r: &TensorRecord,
) -> io::Result<()> {
    let name = h.name(r.name_offset.get(), r.name_len.get());
    let codec = Codec::from_id(r.codec.get());
    let raw = r.codec.get() == 0;
    d.heading(&format!(
        "tensor record {k} (§4): 176 bytes at 0x{base:08x}: {name:?}"
    ))?;
    d.u32_field(base, "name_offset", r.name_offset.get(), "")?;
    d.u32_field(
        base + 4,
        "name_len",
        r.name_len.get(),
        &format!(" -> {name:?}"),
    )?;
    d.field(
        base + 8,
        1,
        &format!("dtype = {} ({})", r.dtype, dtype_text(r.dtype)),
    )?;
    d.field(base + 9, 1, &format!("rank = {}", r.rank))?;
    let codec_name = codec.map_or("raw", |c| c.name());
    d.field(
        base + 10,
        2,
        &format!("codec = {} ({codec_name})", r.codec.get()),
    )?;
    let flags = r.flags.get();
    let flag_text = if flags & FLAG_ROW_SCALES != 0 {
        " (ROW_SCALES)"
    } else {
        ""
    };
    d.field(base + 12, 4, &format!("flags = 0x{flags:08x}{flag_text}"))?;
    for (i, dim) in r.shape.iter().enumerate() {
        let past = if i >= usize::from(r.rank) {
            " (past the rank)"
        } else {
            ""
        };
        d.u64_field(
            base + 16 + 8 * i as u64,
            &format!("shape[{i}]"),
            dim.get(),
            past,
        )?;
    }
    let (p0, p1) = (r.param0.get(), r.param1.get());
    let (n0, n1) = match codec {
        None => ("unused for raw".to_string(), "unused for raw".to_string()),
        Some(Codec::Log) => (
            format!("log_min; e^log_min = {}", num(p0.exp())),
            format!("log_max; e^log_max = {}", num(p1.exp())),
        ),
        Some(Codec::Linear) => ("max_abs".to_string(), "unused by linear".to_string()),
        Some(Codec::Lloyd | Codec::LloydRows) => (
            "max_abs".to_string(),
            "rel_err, the fit's estimated relative squared error".to_string(),
        ),
    };
    d.field(base + 80, 8, &format!("param0 = {} ({n0})", num(p0)))?;
    d.field(base + 88, 8, &format!("param1 = {} ({n1})", num(p1)))?;
    let lut_note = if raw {
        " (unused for raw)".to_string()
    } else {
        format!(
            " (table at 0x{:x})",
            h.preamble.lut_table.offset.get() + LUT_BYTES * u64::from(r.lut_index.get())
        )
    };
    d.u32_field(base + 96, "lut_index", r.lut_index.get(), &lut_note)?;
    d.u32_field(base + 100, "reserved", r.reserved.get(), "")?;
    let data_what = if raw { "raw bytes" } else { "codes" };
    d.section(base + 104, "data", &r.data, data_what)?;
    d.section(base + 128, "signs", &r.signs, "sign bits")?;
    d.section(base + 152, "scales", &r.scales, "row scales")
}

/// The string table (§6), one field per name range that the records refer to.
fn string_table(d: &mut Dump<'_, '_>, h: &Header<'_>) -> io::Result<()> {
    let (so, sl) = (h.strings_offset, h.strings.len() as u64);
    d.heading(&format!(
        "string table (§6): {} at 0x{so:08x}",
        bytes_text(sl)
    ))?;
    let mut names: Vec<(u64, u64, String)> = Vec::new();
    for (k, r) in h.tensors.iter().enumerate() {
        let (o, l) = (r.name_offset.get(), r.name_len.get());
        names.push((o.into(), l.into(), format!("tensor {k} name")));
    }
    for (k, a) in h.assets.iter().enumerate() {
        let (o, l) = (a.name_offset.get(), a.name_len.get());
        names.push((o.into(), l.into(), format!("asset {k} name")));
    }
    names.sort_by_key(|&(o, l, _)| (o, l));
    let mut pos = 0u64;
    for (o, l, label) in names {
        if o < pos {
            d.note(&format!(
                "{label}: bytes {o}..{} of the table, shared with a name above",
                o + l
            ))?;
            continue;
        }
        if o > pos {
            d.field(so + pos, o - pos, "(bytes no record refers to)")?;
        }
        let text = String::from_utf8_lossy(&h.strings[o as usize..(o + l) as usize]);
        d.field(
            so + o,
            l,
            &format!("strings[{o}..{}] = {text:?} ({label})", o + l),
        )?;
        pos = o + l;
    }
    if pos < sl {
        d.field(so + pos, sl - pos, "(bytes no record refers to)")?;
    }
    Ok(())
}

/// A padding run from `start` to `next` (§9.2): zero bytes before the next section.
fn padding(d: &mut Dump<'_, '_>, start: u64, len: u64, next: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let bytes = d.bytes(start, len);
    let state = match bytes.iter().position(|&b| b != 0) {
        None => "zero".to_string(),
        Some(i) => format!("NOT ZERO at 0x{:x}", start + i as u64),
    };
    let note = format!("padding: {len} bytes, {state}, up to 0x{next:x} (§9.2)");
    if d.full {
        d.field(start, len, &note)
    } else {
        let shown = if len > 16 {
            format!("{} ..", hex(&bytes[..15]))
        } else {
            hex(bytes)
        };
        d.line(start, Some(len), &shown, &note)
    }
}

fn lut_table(
    d: &mut Dump<'_, '_>,
    s: &Part,
    luts: &[(&str, Option<Codec>, &[f32; 256])],
) -> io::Result<()> {
    d.heading(&format!(
        "lut table (§10): {} bytes at 0x{:08x}, crc 0x{:08x}: {} of 256 little-endian f32",
        s.length,
        s.offset,
        s.crc,
        if luts.len() == 1 {
            "1 table".to_string()
        } else {
            format!("{} tables", luts.len())
        }
    ))?;
    for (j, (tensor, codec, _)) in luts.iter().enumerate() {
        let base = s.offset + LUT_BYTES * j as u64;
        let codec = codec.map_or("?", |c| c.name());
        d.heading(&format!(
            "LUT {j} at 0x{base:08x}: tensor {tensor:?} ({codec})"
        ))?;
        for c in 0..256u64 {
            let shown = d.full || c < SHOWN_LUT_ENTRIES || c == 255;
            if !shown {
                if c == SHOWN_LUT_ENTRIES {
                    let n = 255 - SHOWN_LUT_ENTRIES;
                    d.omitted(
                        base + 4 * c,
                        4 * n,
                        &format!("entries {c}..254 ({n} entries)"),
                    )?;
                }
                continue;
            }
            let at = base + 4 * c;
            let v = f32_at(d.bytes(at, 4));
            let hint = match (c, codec) {
                (0, _) => " (code 0: zero)",
                (1, "log") => " (largest magnitude)",
                (255, "log") => " (smallest magnitude)",
                (1, "linear") => " (0)",
                (255, "linear") => " (max_abs)",
                _ => "",
            };
            d.field(at, 4, &format!("LUT {j} [{c}] = {}{hint}", num(v)))?;
        }
    }
    Ok(())
}

fn tensor_section(
    d: &mut Dump<'_, '_>,
    s: &Part,
    t: &TensorView<'_>,
    r: &TensorRecord,
) -> io::Result<()> {
    let n = t.numel();
    let desc = format!("{} {}", t.dtype(), shape_text(t.shape()));
    let head = |what: &str, sec: &str| {
        format!(
            "tensor {:?} {what} ({sec}): {desc}, {} at 0x{:08x}, crc 0x{:08x}",
            t.name(),
            bytes_text(s.length),
            s.offset,
            s.crc
        )
    };
    match s.category {
        Category::Raw => {
            d.heading(&head("data (raw)", "§13"))?;
            let dtype = t.dtype();
            let size = u64::from(dtype.bits() / 8).max(1);
            d.lines(
                s.offset,
                s.length,
                &|rel, chunk| match element_values(dtype, chunk) {
                    Some(v) if !v.is_empty() => {
                        let first = rel / size;
                        format!("[{first}..{}] = {}", first + v.len() as u64, v.join(" "))
                    }
                    _ => String::new(),
                },
            )
        }
        Category::Codes => {
            d.heading(&head("data (codes)", "§11.1"))?;
            d.lines(s.offset, s.length, &|rel, chunk| {
                let codes: Vec<String> = chunk.iter().map(u8::to_string).collect();
                format!(
                    "code[{rel}..{}] = {}",
                    rel + chunk.len() as u64,
                    codes.join(" ")
                )
            })
        }
        Category::Signs => {
            d.heading(&head("signs", "§11.2"))?;
            d.lines(s.offset, s.length, &|rel, chunk| {
                let first = rel * 8;
                let end = (first + 8 * chunk.len() as u64).min(n);
                let neg: Vec<u64> = (first..end)
                    .filter(|&i| chunk[((i - first) / 8) as usize] >> (i % 8) & 1 == 1)
                    .collect();
                let mut list: Vec<String> = neg.iter().take(8).map(u64::to_string).collect();
                if neg.len() > 8 {
                    list.push("..".into());
                }
                let bits = if chunk.len() == 1 {
                    format!("0b{:08b}, ", chunk[0])
                } else {
                    String::new()
                };
                let unused = match n % 8 {
                    _ if end != n || end == first => String::new(),
                    0 => String::new(),
                    7 => "; bit 7 of the last byte unused".to_string(),
                    k => format!("; bits {k}..7 of the last byte unused"),
                };
                format!(
                    "{bits}elements {first}..{end}: {} negative ({}){unused}",
                    neg.len(),
                    list.join(", ")
                )
            })
        }
        Category::RowScales => {
            d.heading(&head("row scales", "§11.3"))?;
            let shown = if d.full {
                s.length
            } else {
                s.length.min(SHOWN_BYTES)
            };
            for row in 0..shown / 4 {
                let at = s.offset + 4 * row;
                let v = f32_at(d.bytes(at, 4));
                d.field(at, 4, &format!("scale[{row}] = {}", num(v)))?;
            }
            d.omitted(s.offset + shown, s.length - shown, "")
        }
        Category::Luts | Category::Assets => {
            unreachable!("not a tensor section: {:?} of {:?}", s.category, r.data)
        }
    }
}

/// The decode rule (§11.4) applied to the first elements of an encoded tensor.
fn decoded(d: &mut Dump<'_, '_>, t: &TensorView<'_>, lut_index: u32) -> io::Result<()> {
    let (Some(codes), Some(signs), Some(lut)) = (t.codes(), t.signs(), t.lut()) else {
        return Ok(());
    };
    let n = t.numel();
    if n == 0 {
        return Ok(());
    }
    let shown = if d.full { n } else { n.min(SHOWN_VALUES) };
    let mut values = vec![0f32; shown as usize];
    if t.decode_f32(0, &mut values).is_err() {
        return Ok(());
    }
    let scales = t.row_scales();
    let (row_len, _) = t.rows();
    let rule = if scales.is_some() {
        "w[i] = ±LUT[code[i]] × scale[i div L]"
    } else {
        "w[i] = ±LUT[code[i]]"
    };
    d.heading(&format!(
        "tensor {:?} decoded (§11.4, LUT {lut_index}): {rule}",
        t.name()
    ))?;
    for (i, w) in values.iter().enumerate() {
        let code = codes[i];
        let neg = signs[i / 8] >> (i % 8) & 1 == 1;
        let sign = if neg { '-' } else { '+' };
        let m = lut[usize::from(code)];
        let line = match &scales {
            Some(sc) => {
                let row = i as u64 / row_len.max(1);
                format!(
                    "w[{i}] = {sign}LUT[{code}] × scale[{row}] = {sign}{} × {} = {}",
                    num(m),
                    num(sc[row as usize]),
                    num(*w)
                )
            }
            None => format!("w[{i}] = {sign}LUT[{code}] = {}", num(*w)),
        };
        d.note(&line)?;
    }
    if shown < n {
        d.note(&format!(
            "... {} more elements (--full shows all)",
            n - shown
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_values() {
        let bytes: Vec<u8> = [1i32, -2, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            element_values(Dtype::I32, &bytes).unwrap(),
            ["1", "-2", "3"]
        );
        assert_eq!(
            element_values(Dtype::BF16, &[0x80, 0x3f, 0x00, 0xc0]).unwrap(),
            ["1", "-2"]
        );
        assert_eq!(element_values(Dtype::F4, &[0x12]), None);
        assert_eq!(num(0.5f32), "0.5");
        assert_eq!(num(-2.0f64), "-2");
        assert_eq!(num(f32::from_bits(0x0001_0000)), "9.1835e-41");
        assert_eq!(num(1e300f64), "1e300");
        assert_eq!(hex(&[0, 0xab]), "00 ab");
        assert_eq!(ascii(b"a\x00{"), "a.{");
    }
}

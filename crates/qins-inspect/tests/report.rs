//! The report and the layout, through the library: every byte counted once, the numbers
//! consistent across the text, JSON and layout views.

mod common;

use qins_format::{section_lengths, Dtype, Storage, LUT_BYTES};
use qins_inspect::{
    human_size, inspect, write_layout, write_text, Category, Error, Format, Options, Params, Report,
};
use qins_read::Qins;

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

fn render(q: &Qins<'_>, opts: Options) -> String {
    let mut out = Vec::new();
    inspect(q, "f.qins", &opts, &mut out).expect("inspect");
    String::from_utf8(out).expect("UTF-8")
}

#[test]
fn every_byte_is_counted_once_and_the_sum_is_the_file_size() {
    let dir = tempfile::tempdir().unwrap();
    for alignment in [64, 4096] {
        let (path, summary) = common::rich_file(dir.path(), alignment);
        let bytes = std::fs::read(&path).unwrap();
        let q = Qins::parse(&bytes).unwrap();
        let r = Report::new(&q, "f", false);
        let b = r.bytes;
        let sum =
            b.header + b.luts + b.codes + b.signs + b.row_scales + b.raw + b.assets + b.padding;
        assert_eq!(sum, bytes.len() as u64);
        assert_eq!(b.total, bytes.len() as u64);
        assert_eq!(r.header.file_size, bytes.len() as u64);
        // The writer counts the same categories on its own.
        assert_eq!(
            [
                b.header,
                b.luts,
                b.codes,
                b.signs,
                b.row_scales,
                b.raw,
                b.assets,
                b.padding,
                b.total
            ],
            [
                summary.header_bytes,
                summary.lut_bytes,
                summary.code_bytes,
                summary.sign_bytes,
                summary.scale_bytes,
                summary.raw_bytes,
                summary.asset_bytes,
                summary.padding_bytes,
                summary.file_size
            ],
            "alignment {alignment}"
        );
    }
}

/// The categories computed from the plan alone, with the canonical layout of §9.2.
#[test]
fn byte_counts_are_what_the_layout_implies() {
    let dir = tempfile::tempdir().unwrap();
    let alignment = 64u64;
    let (plan, _) = common::rich_plan(alignment as u32);
    let (path, _) = common::rich_file(dir.path(), alignment as u32);
    let bytes = std::fs::read(&path).unwrap();
    let q = Qins::parse(&bytes).unwrap();
    let r = Report::new(&q, "f", false);

    let strings: usize = plan.tensors.iter().map(|t| t.name.len()).sum::<usize>()
        + plan.assets.iter().map(|a| a.name.len()).sum::<usize>();
    let metadata = serde_json::to_vec(&plan.metadata).unwrap().len();
    let header = 96 + 176 * plan.tensors.len() + 32 * plan.assets.len() + strings + metadata + 4;
    assert_eq!(r.bytes.header, header as u64);

    // Each used section in canonical order, with its category.
    let encoded = plan
        .tensors
        .iter()
        .filter(|t| t.storage != Storage::Raw)
        .count() as u64;
    let mut sections = vec![(Category::Luts, encoded * LUT_BYTES)];
    for t in &plan.tensors {
        let [data, signs, scales] = section_lengths(t.dtype, &t.shape, t.storage).unwrap();
        match t.storage {
            Storage::Raw => sections.push((Category::Raw, data)),
            Storage::Encoded { row_scales, .. } => {
                sections.push((Category::Codes, data));
                sections.push((Category::Signs, signs));
                if row_scales {
                    sections.push((Category::RowScales, scales));
                }
            }
        }
    }
    for a in &plan.assets {
        sections.push((Category::Assets, a.data.len() as u64));
    }

    let mut end = header as u64;
    let mut padding = 0;
    let mut by_cat = std::collections::BTreeMap::<String, u64>::new();
    assert_eq!(r.sections.len(), sections.len());
    for (s, (cat, len)) in r.sections.iter().zip(&sections) {
        let offset = align_up(end, alignment);
        assert_eq!(
            (s.category, s.offset, s.length),
            (*cat, offset, *len),
            "{}",
            s.name
        );
        assert_eq!(s.padding_before, offset - end, "{}", s.name);
        assert!(s.padding_before < alignment);
        padding += offset - end;
        *by_cat.entry(format!("{cat:?}")).or_default() += len;
        end = offset + len;
    }
    assert_eq!(end, bytes.len() as u64);
    let b = r.bytes;
    assert_eq!(b.padding, padding);
    assert_eq!(b.luts, by_cat["Luts"]);
    assert_eq!(b.codes, by_cat["Codes"]);
    assert_eq!(b.signs, by_cat["Signs"]);
    assert_eq!(b.row_scales, by_cat["RowScales"]);
    assert_eq!(b.raw, by_cat["Raw"]);
    assert_eq!(b.assets, by_cat["Assets"]);
    // Spelled out for a few tensors: codes are one byte per element, signs one bit.
    assert_eq!(b.codes, 15 + 32 + 14 + 54);
    assert_eq!(b.signs, 2 + 4 + 2 + 7);
    assert_eq!(b.row_scales, 4 * 4 + 4 * 6);
    assert_eq!(b.raw, 24 + 24 + 5 + 2 + 8 + 12);
    assert_eq!(b.luts, 5 * 1024);
    assert_eq!(b.assets, 7 + 2 + 300);
    // The section names are the ones verification uses.
    assert_eq!(r.sections[0].name, "lut table");
    assert!(r
        .sections
        .iter()
        .any(|s| s.name == "tensor \"layers.0.k.weight\" scales"));
    assert!(r
        .sections
        .iter()
        .any(|s| s.name == "asset \"tokenizer.json\""));
}

#[test]
fn tensor_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = common::rich_file(dir.path(), 64);
    let bytes = std::fs::read(&path).unwrap();
    let q = Qins::parse(&bytes).unwrap();
    let r = Report::new(&q, "f", false);
    let t = |name: &str| r.tensors.iter().find(|t| t.name == name).unwrap();

    let e = t("embed.weight");
    assert_eq!((e.encoding.as_str(), e.codec.as_deref()), ("raw", None));
    assert_eq!((e.params, e.lut_index), (None, None));
    assert_eq!(e.bytes.stored, 24);
    assert_eq!((e.source_bytes, e.f32_bytes, e.bf16_bytes), (24, 48, 24));
    assert_eq!(e.bits_per_weight, Some(16.0));
    assert_eq!(e.ratio_f32, Some(2.0));

    let qw = t("layers.0.q.weight");
    assert_eq!(qw.encoding, "log");
    assert_eq!(qw.lut_index, Some(0));
    assert_eq!((qw.bytes.data, qw.bytes.signs, qw.bytes.scales), (15, 2, 0));
    assert_eq!(qw.bits_per_weight, Some(17.0 * 8.0 / 15.0));
    assert_eq!(
        qw.bits_per_weight_with_lut,
        Some((17.0 + 1024.0) * 8.0 / 15.0)
    );
    assert_eq!(qw.ratio_source, Some(60.0 / 17.0));
    let Some(Params::Log {
        log_min,
        log_max,
        min_magnitude,
        max_magnitude,
    }) = qw.params
    else {
        panic!("log params: {:?}", qw.params)
    };
    let vals = common::values(15, 1);
    let nonzero = vals.iter().filter(|v| **v != 0.0).map(|v| v.abs());
    let (lo, hi) = nonzero.fold((f32::MAX, 0f32), |(lo, hi), m| (lo.min(m), hi.max(m)));
    assert_eq!((log_min, log_max), (f64::from(lo).ln(), f64::from(hi).ln()));
    assert!((min_magnitude - f64::from(lo)).abs() < 1e-12);
    assert!((max_magnitude - f64::from(hi)).abs() < 1e-12);

    let k = t("layers.0.k.weight");
    assert_eq!((k.encoding.as_str(), k.row_scales), ("log+rows", true));
    assert_eq!(k.bytes.stored, 32 + 4 + 16);
    assert_eq!((k.source_bytes, k.f32_bytes, k.bf16_bytes), (64, 128, 64));
    assert_eq!(k.lut_index, Some(1));

    let v = t("layers.0.v.weight");
    assert_eq!(v.encoding, "linear");
    assert!(matches!(v.params, Some(Params::Linear { max_abs }) if max_abs > 0.0));
    assert_eq!(t("layers.0.o.weight").encoding, "linear+rows");

    let empty = t("empty.encoded");
    assert_eq!((empty.numel, empty.bytes.stored), (0, 0));
    assert_eq!(empty.lut_index, Some(4));
    assert_eq!((empty.bits_per_weight, empty.ratio_source), (None, None));
    let empty = t("empty.raw");
    assert_eq!((empty.numel, empty.encoding.as_str()), (0, "raw"));
    assert_eq!(empty.ratio_bf16, None);

    // Integers and BOOL keep their size as F32 and BF16; F64 casts; a scalar has one element.
    let p = t("position_ids");
    assert_eq!((p.source_bytes, p.f32_bytes, p.bf16_bytes), (24, 24, 24));
    assert_eq!(t("mask").bf16_bytes, 5);
    let f4 = t("packed");
    assert_eq!((f4.source_bytes, f4.f32_bytes, f4.bf16_bytes), (2, 16, 8));
    let s = t("temperature");
    assert_eq!((s.shape.len(), s.numel, s.f32_bytes), (0, 1, 4));

    let totals = r.totals;
    assert_eq!(
        totals.source_bytes,
        r.tensors.iter().map(|t| t.source_bytes).sum::<u64>()
    );
    assert_eq!(totals.file_bytes, bytes.len() as u64);
    assert_eq!(
        totals.ratio_bf16,
        totals.bf16_bytes as f64 / bytes.len() as f64
    );
    assert_eq!(r.assets.len(), 3);
    assert_eq!(
        (r.assets[2].name.as_str(), r.assets[2].bytes),
        ("tokenizer.json", 300)
    );
    assert_eq!(r.metadata["qins.source"], "line 1\nline \"2\"");
    assert_eq!(r.header.lut_count, 5);
    assert_eq!(Dtype::BF16.name(), e.dtype);
}

#[test]
fn json_parses_and_matches_the_text() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = common::rich_file(dir.path(), 64);
    let bytes = std::fs::read(&path).unwrap();
    let q = Qins::parse(&bytes).unwrap();
    let json = render(
        &q,
        Options {
            format: Format::Json,
            ..Options::default()
        },
    );
    let text = render(&q, Options::default());

    // The document is the report, exactly; it parses back into one (serde_json's default
    // float parsing may be one ulp off, so the integers are compared exactly).
    let report = Report::new(&q, "f.qins", false);
    assert_eq!(json, serde_json::to_string_pretty(&report).unwrap() + "\n");
    let parsed: Report = serde_json::from_str(&json).expect("a report");
    assert_eq!(
        (
            &parsed.header,
            &parsed.bytes,
            &parsed.sections,
            &parsed.assets
        ),
        (
            &report.header,
            &report.bytes,
            &report.sections,
            &report.assets
        )
    );
    for (a, b) in parsed.tensors.iter().zip(&report.tensors) {
        assert_eq!((&a.name, &a.shape, a.bytes), (&b.name, &b.shape, b.bytes));
        let close = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) => (x - y).abs() <= 1e-12 * y.abs(),
            (x, y) => x == y,
        };
        assert!(close(a.bits_per_weight, b.bits_per_weight));
        assert!(close(a.ratio_bf16, b.ratio_bf16));
    }
    // Stable key names, exact integers.
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["bytes"]["total"], bytes.len() as u64);
    assert_eq!(v["header"]["file_size"], bytes.len() as u64);
    assert_eq!(v["version"]["major"], 1);
    assert_eq!(v["verified"], false);
    assert_eq!(v["tensors"][1]["params"]["codec"], "log");
    assert!(v["tensors"][1]["params"]["log_min"].is_f64());
    assert_eq!(v["tensors"][0]["codec"], serde_json::Value::Null);
    assert_eq!(v["sections"][0]["category"], "luts");
    assert_eq!(v["metadata"]["qins.writer"], "qins-inspect tests");

    // The text shows the same numbers.
    let accounting = &text[text.find("bytes in the file").expect("accounting")..];
    let line = |start: &str| -> &str {
        text.lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no line starting with {start:?} in\n{text}"))
    };
    let b = parsed.bytes;
    for (what, n) in [
        ("header ", b.header),
        ("LUTs", b.luts),
        ("codes", b.codes),
        ("signs", b.signs),
        ("row scales", b.row_scales),
        ("raw tensors", b.raw),
        ("assets ", b.assets),
        ("padding", b.padding),
        ("total", b.total),
    ] {
        let l = accounting
            .lines()
            .find(|l| l.trim_start().starts_with(what))
            .expect(what);
        assert!(l.contains(&format!(" {n} B ")), "{l}");
        assert!(l.contains(&human_size(n)), "{l}");
    }
    for t in &parsed.tensors {
        let l = line(&format!("{} ", t.name));
        assert!(l.contains(&format!(" {} ", t.dtype)), "{l}");
        assert!(l.contains(&format!(" {} ", t.encoding)), "{l}");
        assert!(l.contains(&human_size(t.bytes.stored)), "{l}");
        let two = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.2}"));
        assert!(l.contains(&two(t.bits_per_weight)), "{l}");
        assert!(l.contains(&two(t.bits_per_weight_with_lut)), "{l}");
        for r in [t.ratio_source, t.ratio_f32, t.ratio_bf16] {
            assert!(
                l.contains(&r.map_or("-".into(), |x| format!("{x:.2}x"))),
                "{l}"
            );
        }
    }
    for a in &parsed.assets {
        assert!(line(&format!("{} ", a.name)).contains(&human_size(a.bytes)));
    }
    let s = parsed.totals;
    assert!(line("source dtypes").contains(&format!("{:.2}x", s.ratio_source)));
    assert!(line("as F32").contains(&format!("{:.2}x", s.ratio_f32)));
    assert!(line("as BF16").contains(&human_size(s.bf16_bytes)));
    assert!(line("file size").contains(&format!("({} B)", bytes.len())));
    assert!(line("qins.source").contains(r#""line 1\nline \"2\"""#));
    assert!(line("checksums:").contains("not verified"));
}

/// Parses the `offset size bytes note` lines of the layout view.
fn layout_lines(layout: &str) -> Vec<(u64, u64, String)> {
    layout
        .lines()
        .filter(|l| l.len() > 18 && l.as_bytes()[..8].iter().all(u8::is_ascii_hexdigit))
        .filter_map(|l| {
            let offset = u64::from_str_radix(&l[..8], 16).unwrap();
            let size = l[8..16].trim();
            let hex = l.get(18..).unwrap_or("");
            let hex = hex.get(..47).unwrap_or(hex).trim().to_string();
            (!size.is_empty()).then(|| (offset, size.parse().unwrap(), hex))
        })
        .collect()
}

#[test]
fn the_layout_annotates_every_byte_once() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = common::rich_file(dir.path(), 64);
    let bytes = std::fs::read(&path).unwrap();
    let q = Qins::parse(&bytes).unwrap();
    for full in [false, true] {
        let mut out = Vec::new();
        write_layout(&q, "f.qins", full, &mut out).unwrap();
        let layout = String::from_utf8(out).unwrap();
        let dump = &layout[layout.find("\noffset ").expect("the dump")..];
        let mut end = 0;
        for (offset, size, hex) in layout_lines(dump) {
            assert_eq!(offset, end, "full {full}: a gap or overlap at 0x{offset:x}");
            end = offset + size;
            // The bytes shown are the file's (the first line of a field shows up to 16).
            if !hex.starts_with("..") {
                let shown: Vec<u8> = hex
                    .trim_end_matches(" ..")
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(|b| u8::from_str_radix(b, 16).unwrap())
                    .collect();
                let at = offset as usize;
                assert_eq!(shown, bytes[at..at + shown.len()], "at 0x{offset:x}");
            }
        }
        assert_eq!(end, bytes.len() as u64, "full {full}");
        for field in [
            "magic = ",
            "header_size = ",
            "lut_table.crc = 0x",
            "shape[7] = 0",
            "flags = 0x00000001 (ROW_SCALES)",
            "param0 = ",
            "scales.offset = ",
            "header_crc = 0x",
            "LUT 0 [0] = 0 (code 0: zero)",
            "LUT 4 [255] = ",
            "scale[3] = 4",
            "code[0..15] = ",
            "[0..2] = 0 1",
            "[0..5] = true false true true false",
            "|{\"a\":1}|",
            "strings[",
            "padding: ",
            "decoded (§11.4",
            "total = file_size",
        ] {
            assert!(layout.contains(field), "full {full}: no {field:?}");
        }
        assert_eq!(layout.contains("not shown"), !full);
        // The section map sums to the file size.
        assert!(layout.contains(&format!("{}  ", bytes.len())));
    }
}

#[test]
fn verify_names_the_damaged_section_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = common::rich_file(dir.path(), 64);
    let bytes = std::fs::read(&path).unwrap();
    let r = Report::new(&Qins::parse(&bytes).unwrap(), "f", false);
    for s in r.sections.iter().filter(|s| s.length > 0) {
        let mut bad = bytes.clone();
        bad[(s.offset + s.length / 2) as usize] ^= 0x40;
        let q = Qins::parse(&bad).expect("opening does not read the data");
        // Without --verify, the damage is not seen.
        render(&q, Options::default());
        let opts = Options {
            verify: true,
            ..Options::default()
        };
        let mut out = Vec::new();
        let err = inspect(&q, "f", &opts, &mut out).unwrap_err();
        let Error::Verify(e) = err else {
            panic!("{err}")
        };
        // A flipped sign byte or scale may also be caught as a value; the checksum comes first.
        assert_eq!(e.kind(), "DataChecksum", "{e}");
        assert!(e.to_string().starts_with(&s.name), "{e} / {}", s.name);
        assert!(out.is_empty());
    }
    let q = Qins::parse(&bytes).unwrap();
    let text = render(
        &q,
        Options {
            verify: true,
            ..Options::default()
        },
    );
    assert!(text.contains("checksums: verified"));
}

#[test]
fn text_of_an_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.qins");
    let mut plan = qins_write::Plan::new();
    plan.alignment = 64;
    common::write(&path, plan, &[]);
    let bytes = std::fs::read(&path).unwrap();
    let q = Qins::parse(&bytes).unwrap();
    let r = Report::new(&q, "empty", false);
    assert_eq!(r.bytes.total, bytes.len() as u64);
    assert_eq!(r.bytes.header, 100);
    assert_eq!(r.bytes.padding, 28);
    assert_eq!(r.totals.bits_per_weight, None);
    let mut out = Vec::new();
    write_text(&r, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("tensors (0)"), "{text}");
    let mut out = Vec::new();
    write_layout(&q, "empty", false, &mut out).unwrap();
    let layout = String::from_utf8(out).unwrap();
    assert!(layout.contains("lut table (§10): 0 bytes"), "{layout}");
    assert!(layout.contains("metadata (§7): 0 bytes"), "{layout}");
}

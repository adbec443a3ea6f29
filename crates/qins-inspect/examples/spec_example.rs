//! Generates `spec/example.md`, the worked example of the spec (§19):
//!
//! ```text
//! cargo run -p qins-inspect --example spec_example > spec/example.md
//! ```
//!
//! It writes a tiny file with `qins-write`, then prints it as markdown: what went in, the
//! annotated layout of `qins-inspect --layout`, and the whole file as a hex dump. A test
//! (`tests/spec_example.rs`) checks that the checked-in `spec/example.md` is exactly what this
//! program prints, so the spec cannot drift from the code.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use qins_format::{Codec, Dtype, Storage};
use qins_write::{Asset, Plan, TensorSpec, Writer};

/// The values of the encoded tensor `proj.weight` (F32, shape [2, 3]).
const WEIGHTS: [f32; 6] = [0.5, -0.25, 0.0, 0.125, -1.0, 0.03125];
/// The values of the raw tensor `norm.weight` (BF16, shape [3]); exact in BF16.
const NORM: [f32; 3] = [1.0, 0.5, -2.0];
/// The asset `config.json`.
const CONFIG: &[u8] = br#"{"a":1}"#;

/// The bytes of the example file, as `qins-write` writes them.
pub fn example_file() -> Vec<u8> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("example.qins");
    let mut plan = Plan::new();
    plan.alignment = 64;
    plan.tensors.push(TensorSpec::new(
        "proj.weight",
        Dtype::F32,
        vec![2, 3],
        Storage::Encoded {
            codec: Codec::Log,
            row_scales: false,
        },
    ));
    plan.tensors.push(TensorSpec::new(
        "norm.weight",
        Dtype::BF16,
        vec![3],
        Storage::Raw,
    ));
    plan.assets.push(Asset {
        name: "config.json".into(),
        data: CONFIG.to_vec(),
    });
    plan.metadata = BTreeMap::from([("qins.writer".to_string(), "example".to_string())]);
    let mut w = Writer::create(&path, plan, false).expect("a valid plan");
    w.encode_tensor(&WEIGHTS, None).expect("finite values");
    // BF16 is the upper half of the f32 bits; exact for these values.
    let norm: Vec<u8> = NORM
        .iter()
        .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
        .collect();
    w.write_raw(&norm).expect("6 bytes");
    w.finish().expect("written");
    std::fs::read(&path).expect("readable")
}

/// `xxd`-style hex dump, 16 bytes a line; a run of all-zero lines after the first is shown as
/// one `*` line, as `hexdump` does.
fn hexdump(bytes: &[u8]) -> String {
    let mut s = String::new();
    let mut skipping = false;
    let lines: Vec<&[u8]> = bytes.chunks(16).collect();
    for (i, chunk) in lines.iter().enumerate() {
        let zero = chunk.len() == 16 && chunk.iter().all(|&b| b == 0);
        let prev_zero = i > 0 && lines[i - 1].iter().all(|&b| b == 0);
        let last = i + 1 == lines.len();
        if zero && prev_zero && !last {
            if !skipping {
                s.push_str("*\n");
                skipping = true;
            }
            continue;
        }
        skipping = false;
        let mut hex = String::new();
        for (j, b) in chunk.iter().enumerate() {
            let _ = write!(hex, "{b:02x}");
            if j % 2 == 1 {
                hex.push(' ');
            }
        }
        let text: String = chunk
            .iter()
            .map(|&b| {
                if (0x20..0x7f).contains(&b) {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        let _ = writeln!(s, "{:08x}: {hex:<40} {text}", 16 * i);
    }
    s
}

/// The markdown of `spec/example.md`.
pub fn markdown() -> String {
    let bytes = example_file();
    let qins = qins_read::Qins::parse(&bytes).expect("a valid file");
    qins.verify().expect("verified");
    let mut layout = Vec::new();
    qins_inspect::write_layout(&qins, "example.qins", false, &mut layout).expect("in memory");
    let layout = String::from_utf8(layout).expect("UTF-8");
    let report = qins_inspect::Report::new(&qins, "example.qins", true);
    let b = report.bytes;
    let h = report.header;
    let w = qins.tensor("proj.weight").expect("the encoded tensor");
    let [log_min, log_max] = w.params();
    let codes = w.codes().expect("encoded");
    let lut = w.lut().expect("encoded");
    let decoded = w.to_f32_vec().expect("decodable");

    let mut derivation = String::new();
    let _ = writeln!(
        derivation,
        "| i | value | ln\\|value\\| | x | code | sign | LUT[code] | decoded |"
    );
    let _ = writeln!(derivation, "|---|---|---|---|---|---|---|---|");
    for (i, &v) in WEIGHTS.iter().enumerate() {
        let m = f64::from(v.abs());
        let (ln, x) = if v == 0.0 {
            ("-".to_string(), "- (zero)".to_string())
        } else {
            let ln = m.ln();
            let x = 255.0 - 254.0 * (ln - log_min) / (log_max - log_min);
            (format!("{ln:.6}"), format!("{x:.4}"))
        };
        let code = codes[i];
        let sign = u8::from(v.is_sign_negative() && v != 0.0);
        let _ = writeln!(
            derivation,
            "| {i} | {v} | {ln} | {x} | {code} | {sign} | {} | {} |",
            lut[usize::from(code)],
            decoded[i]
        );
    }

    format!(
        r#"# QINS 1.0: a worked example

Status: informative (§19 of [qins-v1.md](qins-v1.md), which is normative). This page is
generated: `cargo run -p qins-inspect --example spec_example > spec/example.md`. A test of
`qins-inspect` fails if this page differs from what the program prints, so every byte below is
what the current writer produces and every annotation is what the current inspector reads.
The file is a version 1.0 file; a 1.1 writer writes the same bytes, since it is not one shard
of a set (§15.2, §21).

## What is in the file

Written by `qins-write` with alignment 64 (the smallest allowed; real files use 4096):

| | name | dtype | shape | stored as | values |
|---|---|---|---|---|---|
| tensor 0 | `proj.weight` | F32 | [2, 3] | `log` codec, no row scales | {weights:?} |
| tensor 1 | `norm.weight` | BF16 | [3] | raw | {norm:?} |
| asset 0 | `config.json` | | | | `{config}` |
| metadata | | | | | `{{"qins.writer":"example"}}` |

The result is {file_size} bytes:

- the header block, {header} bytes: 96 (preamble) + 176 × 2 (tensor records) + 32 × 1 (asset
  record) + {strings} (string table) + {metadata} (metadata) + 4 (header CRC);
- then the sections, each at a multiple of 64: the LUT table ({luts} bytes, one table), the
  {codes} codes and {signs} sign byte of `proj.weight`, the {raw} raw bytes of `norm.weight`,
  the {assets} bytes of `config.json`;
- and {padding} bytes of zero padding, before each section up to its aligned offset.

Every byte is counted once: {header} + {luts} + {codes} + {signs} + {raw} + {assets} + {padding} = {file_size}.

## How `proj.weight` was encoded (§12.1)

The non-zero magnitudes range from 0.03125 to 1, so
`log_min` = ln 0.03125 = {log_min} and `log_max` = ln 1 = {log_max}.
Each non-zero value gets
`x = 255 − ((254 × (ln|value| − log_min)) / (log_max − log_min))` in f64, with exactly that
grouping, rounded half to even; zero gets code 0 and sign 0. The table has
`LUT[c] = exp(log_min + (((255 − c) / 254) × (log_max − log_min)))`, so LUT[1] is the largest
magnitude and LUT[255] the smallest. The decoded value (§11.4) is `±LUT[code]`: close to the
input but not always equal to it (0.5 comes back as {w0}).

{derivation}
## Annotated layout

`qins-inspect --layout example.qins`. Columns: the absolute offset (hex), the field's size in
bytes (decimal), the bytes as they are in the file (hex, at most 16 a line), and the field with
its decoded value. Integers and floats are little-endian (§2). Lines starting with `--` are
headings; the LUT shows entries 0 to 3 and 255 (`--full` shows all 256; all of them are in the
hex dump below).

```text
{layout}```

## The whole file

Every byte, 16 a line, in the format of `xxd`; a `*` line stands for lines of zeros like the
one before it (the records' unused fields and the padding). `xxd -r` turns this text back into
the file.

```text
{hex}```
"#,
        weights = WEIGHTS,
        norm = NORM,
        config = String::from_utf8_lossy(CONFIG),
        file_size = h.file_size,
        header = b.header,
        strings = h.strings_size,
        metadata = h.metadata_size,
        luts = b.luts,
        codes = b.codes,
        signs = b.signs,
        raw = b.raw,
        assets = b.assets,
        padding = b.padding,
        log_min = log_min,
        log_max = log_max,
        w0 = decoded[0],
        derivation = derivation,
        layout = layout,
        hex = hexdump(&bytes),
    )
}

#[allow(dead_code)] // included as a module by tests/spec_example.rs, which has its own main
fn main() {
    print!("{}", markdown());
}

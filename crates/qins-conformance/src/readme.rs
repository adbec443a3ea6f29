//! `conformance/README.md`, generated from the cases so that it lists every file and cannot go
//! stale.

use crate::{invalid, sets, valid};

/// Escapes `|` for a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The README's text.
pub fn readme() -> String {
    let mut s = String::new();
    s.push_str(
        "# QINS conformance suite\n\
\n\
Golden files that pin every byte of the format (`spec/qins-v1.md`), and the rules a conforming\n\
reader and writer must pass (`spec/conformance.md`). **Every file in this directory, this README\n\
included, is generated** by `crates/qins-conformance`; do not edit them by hand.\n\
\n\
- `valid/NAME.qins`: a valid file, written by `qins-write` from the source description\n\
  `NAME` in `crates/qins-conformance/src/valid.rs` (a plan and data computed with integer\n\
  arithmetic, no random number generator).\n\
- `valid/NAME.expected.json`: what a reader must decode from it: per tensor name, dtype, shape,\n\
  storage, the CRC-32 of the decoded little-endian f32 values (encoded tensors) or of the raw\n\
  bytes (raw tensors), and the values themselves as f32 bit patterns (or the raw bytes in hex);\n\
  the assets and the metadata. It is computed from the source description (the codec of\n\
  `qins-format` and a reference implementation of the decode rule of §11.4), not read back\n\
  from the file. Schema: `spec/conformance.md`.\n\
- `valid/NAME.inspect.txt`: the `qins-inspect` text report of the verified file, made\n\
  through the `qins-inspect` library.\n\
- `invalid/NAME.qins`: a valid golden with one precise corruption, listed in\n\
  `invalid/manifest.json` with the error kind a reader must report first, the stage\n\
  (`open` or `verify`), the spec section and the corruption. After a header edit the header\n\
  CRC is recomputed so that the intended kind is the first failure in the order of §17; data\n\
  corruptions that must not trip a checksum first also recompute that section's CRC. The\n\
  `order_*` files break two rules, to pin which one a reader must report first.\n\
- `sets/`: sharded sets (§21). `sets/valid/NAME/` holds a valid set (its index\n\
  `model.qins.index.json` and its shards `model-0000k-of-0000n.qins`), written as `qins-write`'s\n\
  set writer writes one from the shards' source descriptions in `src/sets.rs`;\n\
  `sets/valid/NAME.expected.json` lists each shard's expected contents. `sets/invalid/NAME/` is\n\
  a valid set with one fault (a file removed, renamed, replaced or re-written, or the index\n\
  edited), listed in `sets/manifest.json` with the file to open, the error kind, the stage and\n\
  the file the error concerns.\n\
- `.gitattributes`: keeps git from converting line endings in any of these files.\n\
\n\
## Regenerating\n\
\n\
```sh\n\
cargo test -p qins-conformance                 # checks every file here, byte for byte\n\
QINS_BLESS=1 cargo test -p qins-conformance    # rewrites them all, removes stale ones\n\
```\n\
\n\
Without `QINS_BLESS`, any difference fails the test with the name of the file that differs.\n\
Bless only for a deliberate change (of a case, of the writer's output, of `qins-inspect`'s\n\
report), and review the diff: a golden that changes is a format change unless proven otherwise.\n\
Nothing but `QINS_BLESS=1 cargo test -p qins-conformance` writes into this directory, and\n\
never in CI: with `CI` set, `QINS_BLESS` is refused (the test fails), so that CI always compares\n\
the files with what their sources generate.\n\
\n\
The `log` codec computes `ln` and `exp` in f64 (§12.1); other math libraries may differ in the\n\
last bit, so byte-identical reproduction is required of the reference writer on the platform\n\
that blessed the files only. The suite checks that no golden's codes or tables depend on that\n\
last bit (no code within 1e-9 of a rounding tie, no table entry within 1e-12 of an f32\n\
rounding boundary).\n\
\n\
## Valid goldens\n\
\n\
| file | covers | made by |\n\
|---|---|---|\n",
    );
    for c in valid::cases() {
        let source = (c.source)();
        let made = match source.patch {
            None => format!("`qins-write`, alignment {}", source.plan.alignment),
            Some(p) => format!(
                "`qins-write`, alignment {}, then patched: {}",
                source.plan.alignment, p.description
            ),
        };
        s.push_str(&format!(
            "| `valid/{}.qins` | {} | {} |\n",
            c.name,
            cell(c.covers),
            cell(&made)
        ));
    }
    s.push_str(
        "\n## Negative goldens\n\
\n\
In the order of the checks of §17 (stage `open`) and §14 (stage `verify`).\n\
\n\
| file | kind | stage | § | made from | corruption |\n\
|---|---|---|---|---|---|\n",
    );
    for c in invalid::cases() {
        s.push_str(&format!(
            "| `invalid/{}.qins` | `{}` | {} | {} | `{}.qins` | {} |\n",
            c.name,
            c.kind,
            c.stage.as_str(),
            c.spec,
            c.base,
            cell(c.description)
        ));
    }
    s.push_str(
        "\n## Sets\n\
\n\
Valid sets (every one opens, from its index and from each shard, and verifies):\n\
\n\
| directory | covers |\n\
|---|---|\n",
    );
    for c in sets::cases() {
        s.push_str(&format!(
            "| `sets/valid/{}/` | {} |\n",
            c.name,
            cell(c.covers)
        ));
    }
    s.push_str(
        "\nInvalid sets, in the order of the checks of §21.5 (then §14):\n\
\n\
| directory | opened from | kind | stage | names | § | fault |\n\
|---|---|---|---|---|---|---|\n",
    );
    for f in sets::faults() {
        s.push_str(&format!(
            "| `sets/invalid/{}/` | `{}` | `{}` | {} | `{}` | {} | {} |\n",
            f.name,
            f.open,
            f.kind,
            f.stage.as_str(),
            f.file,
            f.spec,
            cell(f.description)
        ));
    }
    s
}

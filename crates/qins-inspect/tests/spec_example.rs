//! `spec/example.md` is exactly what `examples/spec_example.rs` prints, so the spec's worked
//! example cannot drift from the writer and the inspector. After a deliberate change,
//! regenerate it with `cargo run -p qins-inspect --example spec_example > spec/example.md`, or
//! run this test with `QINS_BLESS=1` (refused when `CI` is set: CI compares, never rewrites).

#[path = "../examples/spec_example.rs"]
mod spec_example;

use std::path::PathBuf;

fn example_md() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../spec/example.md")
}

#[test]
fn spec_example_md_is_what_the_example_prints() {
    let generated = spec_example::markdown();
    let path = example_md();
    if std::env::var_os("QINS_BLESS").is_some_and(|v| v == "1") {
        assert!(
            std::env::var_os("CI").is_none(),
            "QINS_BLESS=1 is refused when CI is set: CI compares spec/example.md with what the \
             example prints and never rewrites it; bless locally (without CI), review the diff \
             and commit it"
        );
        std::fs::write(&path, &generated).expect("writable spec/example.md");
    }
    let checked_in = std::fs::read_to_string(&path).expect("spec/example.md exists");
    if checked_in != generated {
        let line = checked_in
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| "the end".to_string(), |i| format!("line {}", i + 1));
        panic!(
            "spec/example.md differs from the example's output at {line}; regenerate it with \
             `cargo run -p qins-inspect --example spec_example > spec/example.md`"
        );
    }
}

/// The hex dump at the end of the page is the whole file, byte for byte.
#[test]
fn the_hex_dump_in_the_spec_is_the_file() {
    let file = spec_example::example_file();
    let md = spec_example::markdown();
    let dump = &md[md.find("## The whole file").expect("the dump")..];
    let mut bytes = vec![0u8; file.len()];
    let mut end = 0;
    for line in dump.lines() {
        let Some((offset, rest)) = line.split_once(": ") else {
            continue;
        };
        let Ok(offset) = usize::from_str_radix(offset, 16) else {
            continue;
        };
        let hex: String = rest.get(..40).unwrap_or(rest).split_whitespace().collect();
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            let pair = std::str::from_utf8(pair).unwrap();
            bytes[offset + i] = u8::from_str_radix(pair, 16).unwrap();
            end = end.max(offset + i + 1);
        }
    }
    // Lines left out (`*`) are zeros, which `bytes` starts as.
    assert_eq!(end, file.len());
    assert_eq!(bytes, file);
    // And the file is valid, with every checksum right.
    let q = qins_read::Qins::parse(&bytes).unwrap();
    q.verify().unwrap();
}

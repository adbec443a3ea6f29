//! `--verify` accounts for every byte (spec §14): a change to any single byte of a file is
//! reported, by opening (parse) or by verification, and a checksum error names the section the
//! byte is in.
//!
//! The byte map (header, padding, LUT table, each tensor's data, signs and scales, each asset)
//! is computed here from the header's bytes at the spec's offsets, independently of the reader.
//! Every position is checked with the library (fast); a sample with `qins-inspect --verify`.

use std::ops::Range;
use std::path::Path;
use std::process::Command;

use qins_e2e::bin;
use qins_e2e::process::{run, DEADLINE};
use qins_format::{Codec, Dtype, Storage};
use qins_read::{Qins, ReadError};
use qins_write::{Asset, Plan, TensorSpec, Writer};

/// Where a byte of the file belongs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Region {
    /// The header block (§3–§8), covered by the header CRC.
    Header,
    /// Padding between sections (§9.2): must be zero.
    Padding,
    /// A used data section, by the name verification gives it (§14).
    Section(String),
}

/// The fixture: a few KiB, alignment 64; encoded tensors with and without row scales (log and
/// linear, F32 and BF16), raw tensors of several dtypes, three assets (one empty), metadata, and
/// padding after most sections.
fn fixture(dir: &Path) -> Vec<u8> {
    let path = dir.join("fixture.qins");
    let mut plan = Plan::new();
    plan.alignment = 64;
    let enc = |codec, row_scales| Storage::Encoded { codec, row_scales };
    let specs = [
        ("enc.scaled", Dtype::F32, vec![3, 5], enc(Codec::Log, true)),
        (
            "enc.plain",
            Dtype::BF16,
            vec![4, 6],
            enc(Codec::Linear, false),
        ),
        ("raw.norm", Dtype::F16, vec![5], Storage::Raw),
        ("enc.wide", Dtype::F32, vec![16, 40], enc(Codec::Log, true)),
        ("raw.ids", Dtype::I64, vec![3], Storage::Raw),
        ("enc.flat", Dtype::F16, vec![2, 9], enc(Codec::Log, false)),
    ];
    for (name, dtype, shape, storage) in specs {
        plan.tensors
            .push(TensorSpec::new(name, dtype, shape, storage));
    }
    plan.assets = vec![
        Asset {
            name: "config.json".into(),
            data: br#"{"model_type":"fixture","hidden_size":40}"#.to_vec(),
        },
        Asset {
            name: "empty.txt".into(),
            data: Vec::new(),
        },
        Asset {
            name: "tokenizer/vocab.txt".into(),
            data: b"<s>\n</s>\nhello\nworld\n".to_vec(),
        },
    ];
    plan.metadata
        .insert("qins.writer".into(), "verify_every_byte".into());
    plan.metadata.insert("qins.source".into(), "fixture".into());
    let values = |n: usize, k: f32| -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 * 0.37 + k).sin() * 3.0).round() / 4.0 + 0.01 * i as f32)
            .collect()
    };
    let mut w = Writer::create(&path, plan, false).unwrap();
    w.encode_tensor(&values(15, 0.0), Some(&[1.0, 2.0, 0.5]))
        .unwrap();
    w.encode_tensor(&values(24, 1.0), None).unwrap();
    w.write_raw(&(0..10).collect::<Vec<u8>>()).unwrap();
    let scales: Vec<f32> = (1..=16).map(|r| r as f32 / 8.0).collect();
    w.encode_tensor(&values(640, 2.0), Some(&scales)).unwrap();
    w.write_raw(&(100..124).collect::<Vec<u8>>()).unwrap();
    w.encode_tensor(&values(18, 3.0), None).unwrap();
    w.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    Qins::parse(&bytes).unwrap().verify().unwrap();
    bytes
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The region of every byte, from the header at the spec's offsets (§3, §4, §5, §9.1).
fn byte_map(b: &[u8]) -> Vec<Region> {
    let header = u64_at(b, 32) as usize;
    let (tensors, assets) = (u32_at(b, 40) as usize, u32_at(b, 44) as usize);
    let strings = 96 + 176 * tensors + 32 * assets;
    let name = |rec: usize| {
        let (off, len) = (u32_at(b, rec) as usize, u32_at(b, rec + 4) as usize);
        String::from_utf8(b[strings + off..strings + off + len].to_vec()).unwrap()
    };
    let section = |sref: usize| -> Range<usize> {
        let off = u64_at(b, sref) as usize;
        off..off + u64_at(b, sref + 8) as usize
    };
    let mut map = vec![Region::Padding; b.len()];
    let mut mark = |r: Range<usize>, region: Region| {
        for m in &mut map[r] {
            assert_eq!(*m, Region::Padding, "sections overlap");
            *m = region.clone();
        }
    };
    mark(0..header, Region::Header);
    mark(section(64), Region::Section("lut table".into()));
    for k in 0..tensors {
        let rec = 96 + 176 * k;
        let n = name(rec);
        let codec = u16::from_le_bytes([b[rec + 10], b[rec + 11]]);
        let flags = u32_at(b, rec + 12);
        mark(
            section(rec + 104),
            Region::Section(format!("tensor {n:?} data")),
        );
        if codec != 0 {
            mark(
                section(rec + 128),
                Region::Section(format!("tensor {n:?} signs")),
            );
            if flags & 1 != 0 {
                mark(
                    section(rec + 152),
                    Region::Section(format!("tensor {n:?} scales")),
                );
            }
        }
    }
    for k in 0..assets {
        let rec = 96 + 176 * tensors + 32 * k;
        let n = name(rec);
        mark(section(rec + 8), Region::Section(format!("asset {n:?}")));
    }
    map
}

/// The two damages at `at`: one bit flipped (a different bit at each position), and the byte
/// set to 0xFF (to 0x00 where it already is 0xFF, so that the file changes).
fn damages(bytes: &[u8], at: usize) -> [(&'static str, u8); 2] {
    let b = bytes[at];
    let set = if b == 0xFF {
        ("0x00", 0x00)
    } else {
        ("0xff", 0xFF)
    };
    [("flip", b ^ (1 << (at % 8))), set]
}

/// Checks that `e`, the reader's error for a damage at `at` in `region`, is the right kind
/// and names the right thing; `parsed` says whether opening succeeded.
fn check(e: &ReadError, parsed: bool, at: usize, region: &Region, what: &str) {
    let msg = e.to_string();
    match region {
        // Covered by the header CRC, or by the checks that run before it (§17 steps 1–3).
        Region::Header => assert!(!parsed, "{what}: header damage found only by verify: {msg}"),
        Region::Padding => {
            assert!(parsed, "{what}: padding damage refused at open: {msg}");
            assert_eq!(e.kind(), "NonZeroPadding", "{what}: {msg}");
            assert!(msg.contains(&format!("offset {at} ")), "{what}: {msg}");
        }
        Region::Section(name) => {
            // The LUT values are checked at open (§10), so a damaged table may be `BadLut`
            // there; anything else is the section's checksum, found by verification.
            if !parsed && name == "lut table" {
                assert_eq!(e.kind(), "BadLut", "{what}: {msg}");
            } else {
                assert!(parsed, "{what}: data damage refused at open: {msg}");
                assert_eq!(e.kind(), "DataChecksum", "{what}: {msg}");
                assert!(
                    msg.starts_with(&format!("{name}: checksum mismatch")),
                    "{what}: expected a checksum error naming {name}: {msg}"
                );
            }
        }
    }
}

#[test]
fn every_byte_is_accounted_for_by_the_library() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = fixture(tmp.path());
    let map = byte_map(&bytes);
    let count = |f: fn(&Region) -> bool| map.iter().filter(|r| f(r)).count();
    let padding = count(|r| *r == Region::Padding);
    let header = count(|r| *r == Region::Header);
    // The fixture has every kind of byte.
    assert!(
        padding > 0 && header > 0,
        "padding {padding}, header {header}"
    );
    for part in ["lut table", "data", "signs", "scales", "asset"] {
        assert!(
            map.iter()
                .any(|r| matches!(r, Region::Section(s) if s.contains(part))),
            "no {part} bytes"
        );
    }

    let mut b = bytes.clone();
    for at in 0..bytes.len() {
        for (how, new) in damages(&bytes, at) {
            b[at] = new;
            let what = format!("byte {at} ({:?}) {how}", map[at]);
            let (e, parsed) = match Qins::parse(&b) {
                Err(e) => (e, false),
                Ok(q) => match q.verify() {
                    Err(e) => (e, true),
                    Ok(()) => panic!("{what}: went unnoticed"),
                },
            };
            check(&e, parsed, at, &map[at], &what);
            b[at] = bytes[at];
        }
    }
    assert_eq!(b, bytes);
    eprintln!(
        "{} bytes ({header} header, {padding} padding), {} damages checked",
        bytes.len(),
        2 * bytes.len()
    );
}

#[test]
fn every_byte_is_accounted_for_by_qins_inspect_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = fixture(tmp.path());
    let map = byte_map(&bytes);
    // A sample: every 13th byte, and the first and last byte of every region.
    let mut sample: Vec<usize> = (0..bytes.len()).step_by(13).collect();
    for at in 1..bytes.len() {
        if map[at] != map[at - 1] {
            sample.extend([at - 1, at]);
        }
    }
    sample.push(bytes.len() - 1);
    sample.sort_unstable();
    sample.dedup();

    let jobs: Vec<(usize, &str, u8)> = sample
        .iter()
        .flat_map(|&at| {
            damages(&bytes, at)
                .into_iter()
                .map(move |(how, new)| (at, how, new))
        })
        .collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
    std::thread::scope(|s| {
        for k in 0..threads {
            let (jobs, bytes, map, dir) = (&jobs, &bytes, &map, tmp.path());
            s.spawn(move || {
                for &(at, how, new) in jobs.iter().skip(k).step_by(threads) {
                    let mut b = bytes.clone();
                    b[at] = new;
                    let path = dir.join(format!("damaged-{at}-{how}.qins"));
                    std::fs::write(&path, &b).unwrap();
                    let r = run(
                        Command::new(bin("qins-inspect")).arg("--verify").arg(&path),
                        DEADLINE,
                    );
                    assert_eq!(r.code(), 1, "byte {at} {how}: {}{}", r.out(), r.err());
                    let file = path.display().to_string();
                    let line = r.one_line_error(&[&file]);
                    match &map[at] {
                        Region::Header => {}
                        Region::Padding => {
                            let needle = format!("padding byte at offset {at} ");
                            assert!(line.contains(&needle), "byte {at} {how}: {line}");
                        }
                        Region::Section(name) => {
                            let needle = format!("{name}: checksum mismatch");
                            let lut = name == "lut table" && line.contains("LUT");
                            assert!(line.contains(&needle) || lut, "byte {at} {how}: {line}");
                        }
                    }
                    std::fs::remove_file(&path).unwrap();
                }
            });
        }
    });
    eprintln!(
        "{} damaged files checked with qins-inspect --verify",
        jobs.len()
    );
}

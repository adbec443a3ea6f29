//! A first end-to-end check: write a small file, parse it, verify it, decode it.

use qins_format::{Codec, Dtype, Storage};
use qins_write::{Asset, Plan, TensorSpec, Writer};

#[test]
fn write_parse_verify_decode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.qins");
    let mut plan = Plan::new();
    plan.alignment = 64;
    plan.tensors.push(TensorSpec::new(
        "a",
        Dtype::F32,
        vec![3, 5],
        Storage::Encoded {
            codec: Codec::Log,
            row_scales: true,
        },
    ));
    plan.tensors
        .push(TensorSpec::new("b", Dtype::I64, vec![2], Storage::Raw));
    plan.assets.push(Asset {
        name: "config.json".into(),
        data: b"{}".to_vec(),
    });
    plan.metadata.insert("k".into(), "v".into());
    let mut w = Writer::create(&path, plan, false).unwrap();
    let vals: Vec<f32> = (0..15).map(|i| i as f32 - 7.0).collect();
    w.encode_tensor(&vals, Some(&[1.0, 2.0, 4.0])).unwrap();
    w.write_raw(&[1u8; 16]).unwrap();
    let s = w.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len() as u64, s.file_size);
    let q = qins_read::Qins::parse(&bytes).unwrap();
    q.verify().unwrap();
    let a = q.tensor("a").unwrap();
    let d = a.to_f32_vec().unwrap();
    for (x, y) in vals.iter().zip(&d) {
        assert!((x - y).abs() <= 0.05 * x.abs(), "{x} {y}");
    }
    assert_eq!(q.tensor("b").unwrap().raw_bytes(), Some(&[1u8; 16][..]));
    assert_eq!(q.assets().next(), Some(("config.json", &b"{}"[..])));
    assert_eq!(q.metadata()["k"], "v");

    // verify_with checks each section with the caller's CRC-32, in the reader's order and
    // with its error: a wrong CRC fails on the first section, the data.
    a.verify_with(crc32fast::hash).unwrap();
    let err = a.verify_with(|b| crc32fast::hash(b) ^ 1).unwrap_err();
    assert_eq!(err.kind(), "DataChecksum");
    assert!(err.to_string().contains("tensor \"a\" data"), "{err}");
    let sections = std::cell::Cell::new(0);
    a.verify_with(|b| {
        sections.set(sections.get() + 1);
        crc32fast::hash(b)
    })
    .unwrap();
    assert_eq!(sections.get(), 3, "data, signs and scales");
}

#[test]
fn output_gets_the_usual_file_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.qins");
    Writer::create(&path, Plan::new(), false)
        .unwrap()
        .finish()
        .unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    // 0666 less the umask: readable by the group and others under any usual umask.
    assert_eq!(mode & 0o644, 0o644, "mode {mode:o}");
}

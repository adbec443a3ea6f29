//! `MappedFile::release` takes the pages of a part of the file out of the process's resident
//! memory without changing what the program reads.

use qins_format::{Dtype, Storage};
use qins_write::{Plan, TensorSpec, Writer};

/// The resident pages of mapped files (`RssFile` in `/proc/self/status`), in KiB.
#[cfg(target_os = "linux")]
fn rss_file_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("RssFile:"))
        .expect("/proc/self/status has RssFile");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn released_pages_leave_the_resident_set_and_read_the_same() {
    const LEN: usize = 64 << 20;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.qins");
    let mut plan = Plan::new();
    plan.tensors.push(TensorSpec::new(
        "t",
        Dtype::U8,
        vec![LEN as u64],
        Storage::Raw,
    ));
    let data: Vec<u8> = (0..LEN).map(|i| (i * 7 + i / 4096) as u8).collect();
    let mut w = Writer::create(&path, plan, false).unwrap();
    w.write_raw(&data).unwrap();
    w.finish().unwrap();

    let file = qins_read::open(&path).unwrap();
    let q = file.parse().unwrap();
    let raw = q.tensor("t").unwrap().raw_bytes().unwrap();
    let sum = |b: &[u8]| b.iter().map(|&x| u64::from(x)).sum::<u64>();
    let expected = sum(&data);
    assert_eq!(sum(raw), expected);
    let touched = rss_file_kib();
    file.release(raw);
    let released = rss_file_kib();
    assert!(
        touched >= released + (LEN as u64 >> 10) * 7 / 8,
        "RssFile {touched} KiB after reading 64 MiB, {released} KiB after releasing them"
    );
    // Bytes that are not the file's, or an empty slice: nothing happens.
    file.release(&data);
    file.release(&raw[..0]);
    assert_eq!(sum(raw), expected);
    assert_eq!(raw, &data[..]);
}

/// `verify_and_release` hands every byte from the end of the header to the end of the file to its
/// caller once checked, in file order and in bounded pieces, and reports what `verify` reports.
#[test]
fn verify_and_release_hands_every_data_byte_behind_the_check() {
    use qins_format::Codec;
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
    // Larger than one piece (16 MiB), so that it is handed over in several.
    const BIG: usize = (16 << 20) + 3;
    plan.tensors.push(TensorSpec::new(
        "b",
        Dtype::U8,
        vec![BIG as u64],
        Storage::Raw,
    ));
    plan.assets.push(qins_write::Asset {
        name: "config.json".into(),
        data: b"{}".to_vec(),
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.qins");
    let mut w = Writer::create(&path, plan, false).unwrap();
    let vals: Vec<f32> = (0..15).map(|i| i as f32 - 7.0).collect();
    w.encode_tensor(&vals, Some(&[1.0, 2.0, 4.0])).unwrap();
    w.write_raw(&vec![5u8; BIG]).unwrap();
    w.finish().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();

    let q = qins_read::Qins::parse(&bytes).unwrap();
    let base = bytes.as_ptr() as usize;
    let mut parts: Vec<(usize, usize)> = Vec::new();
    q.verify_and_release(&mut |b| parts.push((b.as_ptr() as usize - base, b.len())))
        .unwrap();
    assert!(parts.iter().all(|&(_, len)| len <= 16 << 20), "{parts:?}");
    // The walk over the sections, then each encoded tensor's values again (its row scales
    // and its last sign byte): the walk covers [header_size, file_size) exactly, in order.
    let walk_end = parts
        .iter()
        .position(|&(at, len)| at + len == bytes.len())
        .expect("the walk reaches the end of the file");
    let mut at = q.header_size() as usize;
    for &(start, len) in &parts[..=walk_end] {
        assert_eq!(start, at, "{parts:?}");
        at += len;
    }
    assert_eq!(at, bytes.len());
    assert!(
        parts.len() > walk_end + 1,
        "the row scales are handed over again"
    );
    drop(q);

    // A damaged byte in the large tensor: the same error as `verify`, pieces handed over up to
    // the check that failed.
    let n = bytes.len();
    bytes[n - 200] ^= 1;
    let q = qins_read::Qins::parse(&bytes).unwrap();
    let want = q.verify().unwrap_err().to_string();
    let mut seen = 0;
    let got = q.verify_and_release(&mut |b| seen += b.len()).unwrap_err();
    assert_eq!(got.to_string(), want);
    assert!(got.to_string().contains("tensor \"b\" data"), "{got}");
    assert!(seen > BIG, "{seen}");
}

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

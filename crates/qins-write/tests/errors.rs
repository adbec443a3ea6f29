//! One negative test per reason `Writer::create` refuses a plan (`WriteError::InvalidPlan`),
//! and for the two other errors it can give (`Exists`, `Io`). Each checks the variant, the
//! field or item it names (`what`), the reason's text, the whole message, and that nothing was
//! left in the target's directory: a plan is refused before any file is made.
//!
//! `WriteError::Encode` and `WriteError::Misuse` (data that does not fit a valid plan) are
//! tested with the reader, in `crates/qins-read/tests/roundtrip.rs` and `fuzz_regressions.rs`.
//!
//! One refusal has no test because it cannot happen: the metadata is a map of strings to
//! strings, which `serde_json` always serializes, so `layout`'s `InvalidPlan { what:
//! "metadata", reason: <serde error> }` is unreachable.

use std::collections::BTreeMap;

use qins_format::{limits, Codec, Dtype, Storage, MAX_RANK};
use qins_write::{Asset, Plan, TensorSpec, WriteError, Writer};

/// A raw U8 tensor of shape `[n]`.
fn raw(name: &str, n: u64) -> TensorSpec {
    TensorSpec::new(name, Dtype::U8, vec![n], Storage::Raw)
}

fn encoded(codec: Codec, row_scales: bool) -> Storage {
    Storage::Encoded { codec, row_scales }
}

fn asset(name: &str) -> Asset {
    Asset {
        name: name.into(),
        data: b"{}".to_vec(),
    }
}

fn plan_of(tensors: Vec<TensorSpec>) -> Plan {
    let mut p = Plan::new();
    p.tensors = tensors;
    p
}

/// Asserts that `Writer::create` refuses `plan` with `InvalidPlan` naming exactly `what`, with
/// a reason containing every one of `needles`, and leaves nothing behind.
#[track_caller]
fn refused(plan: Plan, what: &str, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.qins");
    let e = match Writer::create(&path, plan, false) {
        Ok(_) => panic!("a plan that breaks a rule ({what}) was accepted"),
        Err(e) => e,
    };
    let msg = e.to_string();
    match &e {
        WriteError::InvalidPlan { what: w, reason } => {
            assert_eq!(w, what, "message: {msg}");
            for n in needles {
                assert!(
                    reason.contains(n),
                    "reason {reason:?} does not mention {n:?}"
                );
            }
            assert_eq!(msg, format!("invalid plan: {what}: {reason}"));
        }
        other => panic!("expected InvalidPlan for {what}, got {other:?}"),
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{what}: left behind {left:?}");
}

/// Asserts that `Writer::create` accepts `plan`: a plan next to a refused one, differing only in
/// what the refusal is about.
#[track_caller]
fn accepted(plan: Plan) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.qins");
    if let Err(e) = Writer::create(&path, plan, false) {
        panic!("a valid plan was refused: {e}");
    }
}

#[test]
fn alignment_not_a_power_of_two_or_out_of_range() {
    for bad in [0u32, 1, 32, 96, 100, 4095, 2 << 20, u32::MAX] {
        let mut p = plan_of(vec![raw("t", 4)]);
        p.alignment = bad;
        refused(
            p,
            "alignment",
            &[&format!("{bad} is not"), "power of two in [64, 1048576]"],
        );
    }
    for good in [64u32, 4096, 1 << 20] {
        let mut p = plan_of(vec![raw("t", 4)]);
        p.alignment = good;
        accepted(p);
    }
}

#[test]
fn too_many_tensors() {
    // Nameless, shapeless specs allocate nothing each: the count is checked first.
    let n = limits::MAX_TENSORS as usize + 1;
    let p = plan_of(vec![
        TensorSpec::new("", Dtype::U8, vec![], Storage::Raw);
        n
    ]);
    refused(p, "tensors", &["1048577 tensors", "the limit is 1048576"]);
}

#[test]
fn too_many_assets() {
    let mut p = Plan::new();
    p.assets = vec![
        Asset {
            name: String::new(),
            data: Vec::new(),
        };
        limits::MAX_ASSETS as usize + 1
    ];
    refused(p, "assets", &["65537 assets", "the limit is 65536"]);
}

#[test]
fn bad_tensor_name() {
    let long = "w".repeat(4097);
    for (name, why) in [
        ("", "name is empty"),
        (long.as_str(), "name is longer than 4096 bytes"),
        ("a\0b", "name contains a NUL byte"),
    ] {
        refused(
            plan_of(vec![raw("ok", 1), raw(name, 1)]),
            &format!("tensor {name:?}"),
            &[why],
        );
    }
    // The longest name allowed, and a name with slashes and dots (only assets are paths).
    accepted(plan_of(vec![raw(&"w".repeat(4096), 1), raw("../a//b", 1)]));
}

#[test]
fn duplicate_tensor_name() {
    refused(
        plan_of(vec![raw("a", 1), raw("b", 1), raw("a", 2)]),
        "tensor \"a\"",
        &["the name is used twice"],
    );
}

#[test]
fn rank_above_eight() {
    let shape = vec![1u64; MAX_RANK + 1];
    refused(
        plan_of(vec![TensorSpec::new("t", Dtype::F32, shape, Storage::Raw)]),
        "tensor \"t\"",
        &["rank 9 exceeds 8"],
    );
    accepted(plan_of(vec![TensorSpec::new(
        "t",
        Dtype::F32,
        vec![1; MAX_RANK],
        Storage::Raw,
    )]));
}

#[test]
fn dtype_that_cannot_be_encoded() {
    for &dtype in Dtype::ALL {
        let p = plan_of(vec![TensorSpec::new(
            "t",
            dtype,
            vec![2, 8],
            encoded(Codec::Log, false),
        )]);
        if dtype.is_encodable() {
            accepted(p);
        } else {
            refused(
                p,
                "tensor \"t\"",
                &[
                    &format!("dtype {dtype} cannot be encoded"),
                    "only F16, BF16, F32",
                    "keep it raw",
                ],
            );
        }
    }
}

#[test]
fn lloyd_with_row_scales() {
    refused(
        plan_of(vec![TensorSpec::new(
            "t",
            Dtype::F32,
            vec![2, 4],
            encoded(Codec::Lloyd, true),
        )]),
        "tensor \"t\"",
        &["codec lloyd has no row scales (§12.3)", "plan it without"],
    );
}

#[test]
fn lloyd_rows_without_row_scales() {
    refused(
        plan_of(vec![TensorSpec::new(
            "t",
            Dtype::BF16,
            vec![2, 4],
            encoded(Codec::LloydRows, false),
        )]),
        "tensor \"t\"",
        &[
            "codec lloyd-rows needs row scales (§12.4)",
            "plan it with them",
        ],
    );
}

/// `log` and `linear` may have row scales or not (§12.1, §12.2); `lloyd` only without and
/// `lloyd-rows` only with: the two refusals above are the only combinations refused.
#[test]
fn row_scales_allowed_per_codec() {
    for &codec in Codec::ALL {
        for row_scales in [false, true] {
            let p = plan_of(vec![TensorSpec::new(
                "t",
                Dtype::F16,
                vec![2, 4],
                encoded(codec, row_scales),
            )]);
            match (codec, row_scales) {
                (Codec::Lloyd, true) | (Codec::LloydRows, false) => {
                    refused(p, "tensor \"t\"", &[&format!("codec {codec}")])
                }
                _ => accepted(p),
            }
        }
    }
}

#[test]
fn shape_whose_size_overflows() {
    // 2^32 x 2^32 elements: the element count itself overflows.
    refused(
        plan_of(vec![TensorSpec::new(
            "t",
            Dtype::U8,
            vec![1 << 32, 1 << 32],
            Storage::Raw,
        )]),
        "tensor \"t\"",
        &["shape [4294967296, 4294967296] of U8: its element count overflows 64 bits"],
    );
    // 2^62 F32 elements fit; their 2^67 bits do not.
    refused(
        plan_of(vec![TensorSpec::new(
            "t",
            Dtype::F32,
            vec![1 << 62],
            Storage::Raw,
        )]),
        "tensor \"t\"",
        &["shape [4611686018427387904] of F32: its size in bytes overflows 64 bits"],
    );
    // 2^63 rows of one element: the row scales' 2^65 bytes do not fit.
    refused(
        plan_of(vec![TensorSpec::new(
            "t",
            Dtype::F32,
            vec![1 << 63, 1],
            encoded(Codec::Log, true),
        )]),
        "tensor \"t\"",
        &["of F32: its size in bytes overflows 64 bits"],
    );
}

#[test]
fn shape_without_a_whole_byte_size() {
    // Three 4-bit elements: 12 bits.
    refused(
        plan_of(vec![TensorSpec::new("t", Dtype::F4, vec![3], Storage::Raw)]),
        "tensor \"t\"",
        &["shape [3] of F4 has no whole byte size"],
    );
    accepted(plan_of(vec![TensorSpec::new(
        "t",
        Dtype::F4,
        vec![4],
        Storage::Raw,
    )]));
}

#[test]
fn bad_asset_name() {
    let long = "a".repeat(4097);
    for (name, why) in [
        ("", "name is empty"),
        (long.as_str(), "name is longer than 4096 bytes"),
        ("a\0b", "name contains a NUL byte"),
        ("/etc/passwd", "not a safe relative path"),
        ("../config.json", "not a safe relative path"),
        ("a/./b", "not a safe relative path"),
        ("a//b", "not a safe relative path"),
        ("a/", "not a safe relative path"),
        ("a\\b", "not a safe relative path"),
    ] {
        let mut p = plan_of(vec![raw("t", 1)]);
        p.assets = vec![asset("config.json"), asset(name)];
        refused(p, &format!("asset {name:?}"), &[why]);
    }
    let mut p = Plan::new();
    p.assets = vec![asset("1_Pooling/config.json"), asset("config.json")];
    accepted(p);
}

#[test]
fn duplicate_asset_name() {
    let mut p = Plan::new();
    p.assets = vec![asset("config.json"), asset("x/y"), asset("config.json")];
    refused(p, "asset \"config.json\"", &["the name is used twice"]);
    // A tensor and an asset may share a name: they are listed apart.
    let mut p = plan_of(vec![raw("config.json", 1)]);
    p.assets = vec![asset("config.json")];
    accepted(p);
}

#[test]
fn metadata_too_large() {
    // `{"k":"..."}`: 8 bytes around the value.
    let limit = limits::MAX_METADATA as usize;
    let mut p = Plan::new();
    p.metadata = BTreeMap::from([("k".to_string(), "v".repeat(limit - 7))]);
    refused(
        p,
        "metadata",
        &[
            &format!("{} bytes of JSON", limit + 1),
            "the limit is 1048576",
        ],
    );
    let mut p = Plan::new();
    p.metadata = BTreeMap::from([("k".to_string(), "v".repeat(limit - 8))]);
    accepted(p);
}

#[test]
fn header_too_large() {
    // Records of 176 bytes and names of 4096 bytes: just enough tensors for the header (96 +
    // 4272 per tensor + 4) to pass 256 MiB. About 520 MB is held while the plan is checked (the
    // names, and the string table the writer builds from them); nothing is written.
    let per = 176 + 4096;
    let n = ((limits::MAX_HEADER_SIZE - 100) / per + 1) as usize;
    let tensors: Vec<TensorSpec> = (0..n)
        .map(|k| {
            let mut name = format!("{k:06}");
            name.extend(std::iter::repeat_n('w', 4096 - name.len()));
            raw(&name, 0)
        })
        .collect();
    refused(
        plan_of(tensors),
        "header",
        &[
            "the header would exceed the 256 MiB limit",
            "split the model",
        ],
    );
}

#[test]
fn section_offsets_overflow() {
    // Each section's length fits in u64; the offsets past them do not. Raw data: sixteen
    // tensors of 2^60 bytes (a raw tensor's size in bits must fit in u64).
    refused(
        plan_of((0..16).map(|k| raw(&format!("r{k}"), 1 << 60)).collect()),
        "layout",
        &["section offsets overflow 64 bits"],
    );
    // Codes: one byte per element, so 2^64 - 1 elements make one section that ends past u64.
    let big =
        |name: &str, n: u64| TensorSpec::new(name, Dtype::F32, vec![n], encoded(Codec::Log, false));
    refused(
        plan_of(vec![big("e", u64::MAX)]),
        "layout",
        &["section offsets overflow 64 bits"],
    );
    // Two tensors of 2^63 codes.
    refused(
        plan_of(vec![big("a", 1 << 63), big("b", 1 << 63)]),
        "layout",
        &["section offsets overflow 64 bits"],
    );
}

#[test]
fn target_exists() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.qins");
    std::fs::write(&path, b"old").unwrap();
    let e = match Writer::create(&path, plan_of(vec![raw("t", 1)]), false) {
        Ok(_) => panic!("an existing target was overwritten without leave"),
        Err(e) => e,
    };
    assert!(
        matches!(&e, WriteError::Exists { path: p } if *p == path),
        "{e:?}"
    );
    assert_eq!(e.to_string(), format!("{}: already exists", path.display()));
    assert_eq!(std::fs::read(&path).unwrap(), b"old");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn target_directory_missing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("out.qins");
    let e = match Writer::create(&path, plan_of(vec![raw("t", 1)]), false) {
        Ok(_) => panic!("a writer was created in a directory that does not exist"),
        Err(e) => e,
    };
    match &e {
        WriteError::Io { path: p, source } => {
            assert_eq!(*p, path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound, "{e}");
        }
        other => panic!("expected Io, got {other:?}"),
    }
    assert!(e.to_string().starts_with(&format!("{}: ", path.display())));
}

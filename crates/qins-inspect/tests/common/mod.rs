//! Files for the tests, written with `qins-write`.
#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};

use qins_format::{Codec, Dtype, Storage};
use qins_write::{Asset, Plan, TensorSpec, WriteSummary, Writer};

/// How to fill one tensor of [`rich_plan`].
pub enum Fill {
    /// Raw bytes.
    Raw(Vec<u8>),
    /// Values to encode, and row scales.
    Encoded(Vec<f32>, Option<Vec<f32>>),
}

fn enc(codec: Codec, row_scales: bool) -> Storage {
    Storage::Encoded { codec, row_scales }
}

/// Deterministic values with zeros, signs and a spread of magnitudes.
pub fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let k = (i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 7;
            if k.is_multiple_of(11) {
                0.0
            } else {
                let m = ((k % 1000) as f32 + 1.0) / 997.0;
                if k.is_multiple_of(3) {
                    -m
                } else {
                    m
                }
            }
        })
        .collect()
}

/// A plan with raw tensors of several dtypes (a scalar, an empty one, a sub-byte one), log and
/// linear tensors with and without row scales, an empty encoded tensor, three assets and
/// metadata; and how to fill each tensor.
pub fn rich_plan(alignment: u32) -> (Plan, Vec<Fill>) {
    let mut plan = Plan::new();
    plan.alignment = alignment;
    let mut fills = Vec::new();
    let mut add = |name: &str, dtype, shape: Vec<u64>, storage, fill| {
        plan.tensors
            .push(TensorSpec::new(name, dtype, shape, storage));
        fills.push(fill);
    };
    add(
        "embed.weight",
        Dtype::BF16,
        vec![4, 3],
        Storage::Raw,
        Fill::Raw((0..24).collect()),
    );
    add(
        "layers.0.q.weight",
        Dtype::F32,
        vec![3, 5],
        enc(Codec::Log, false),
        Fill::Encoded(values(15, 1), None),
    );
    add(
        "layers.0.k.weight",
        Dtype::BF16,
        vec![4, 8],
        enc(Codec::Log, true),
        Fill::Encoded(values(32, 2), Some(vec![0.5, 1.0, 2.0, 4.0])),
    );
    add(
        "layers.0.v.weight",
        Dtype::F16,
        vec![2, 7],
        enc(Codec::Linear, false),
        Fill::Encoded(values(14, 3), None),
    );
    add(
        "layers.0.o.weight",
        Dtype::F32,
        vec![3, 2, 9],
        enc(Codec::Linear, true),
        Fill::Encoded(values(54, 4), Some(vec![1.0, 0.25, 3.0, 8.0, 0.125, 1.5])),
    );
    add(
        "empty.encoded",
        Dtype::F32,
        vec![0, 4],
        enc(Codec::Log, false),
        Fill::Encoded(Vec::new(), None),
    );
    add(
        "empty.raw",
        Dtype::F32,
        vec![0],
        Storage::Raw,
        Fill::Raw(Vec::new()),
    );
    add(
        "position_ids",
        Dtype::I64,
        vec![1, 3],
        Storage::Raw,
        Fill::Raw([0i64, 1, 2].iter().flat_map(|v| v.to_le_bytes()).collect()),
    );
    add(
        "mask",
        Dtype::BOOL,
        vec![5],
        Storage::Raw,
        Fill::Raw(vec![1, 0, 1, 1, 0]),
    );
    add(
        "packed",
        Dtype::F4,
        vec![2, 2],
        Storage::Raw,
        Fill::Raw(vec![0x12, 0x34]),
    );
    add(
        "temperature",
        Dtype::F64,
        vec![],
        Storage::Raw,
        Fill::Raw(0.7f64.to_le_bytes().to_vec()),
    );
    add(
        "norm.weight",
        Dtype::F32,
        vec![3],
        Storage::Raw,
        Fill::Raw(
            [1.0f32, 0.5, -2.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
    );
    plan.assets.push(Asset {
        name: "config.json".into(),
        data: br#"{"a":1}"#.to_vec(),
    });
    plan.assets.push(Asset {
        name: "1_Pooling/config.json".into(),
        data: b"{}".to_vec(),
    });
    plan.assets.push(Asset {
        name: "tokenizer.json".into(),
        data: (0..300u32).map(|i| b'a' + (i % 26) as u8).collect(),
    });
    plan.metadata
        .insert("qins.writer".into(), "qins-inspect tests".into());
    plan.metadata
        .insert("qins.source".into(), "line 1\nline \"2\"".into());
    (plan, fills)
}

/// Writes `plan` filled by `fills` to `path`.
pub fn write(path: &Path, plan: Plan, fills: &[Fill]) -> WriteSummary {
    let mut w = Writer::create(path, plan, true).expect("a valid plan");
    for f in fills {
        match f {
            Fill::Raw(bytes) => w.write_raw(bytes).expect("raw bytes"),
            Fill::Encoded(v, s) => w.encode_tensor(v, s.as_deref()).expect("encodable"),
        }
    }
    w.finish().expect("written")
}

/// Writes the rich file at `alignment` into `dir` and returns its path and the writer's
/// summary.
pub fn rich_file(dir: &Path, alignment: u32) -> (PathBuf, WriteSummary) {
    let path = dir.join(format!("rich-{alignment}.qins"));
    let (plan, fills) = rich_plan(alignment);
    let summary = write(&path, plan, &fills);
    (path, summary)
}

/// A file with one small encoded tensor, one raw tensor and one asset.
pub fn small_file(dir: &Path) -> PathBuf {
    let path = dir.join("small.qins");
    let mut plan = Plan::new();
    plan.alignment = 64;
    plan.tensors.push(TensorSpec::new(
        "w",
        Dtype::F32,
        vec![4, 4],
        enc(Codec::Log, false),
    ));
    plan.tensors
        .push(TensorSpec::new("b", Dtype::I32, vec![3], Storage::Raw));
    plan.assets.push(Asset {
        name: "config.json".into(),
        data: br#"{"a":1}"#.to_vec(),
    });
    let fills = [
        Fill::Encoded(values(16, 9), None),
        Fill::Raw([7i32, 8, 9].iter().flat_map(|v| v.to_le_bytes()).collect()),
    ];
    write(&path, plan, &fills);
    path
}

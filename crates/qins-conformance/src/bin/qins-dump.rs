//! `qins-dump FILE`: the Rust reader's view of a file as the JSON document that
//! `tools/qins_reader.py dump` prints, so that the two readers can be compared.
//!
//! The file is verified first (§14). Each tensor's `decoded_crc32` is the CRC-32 of its decoded
//! little-endian f32 values (encoded tensors) or of its raw bytes (raw tensors).

use std::process::ExitCode;

use serde_json::json;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path] = args.as_slice() else {
        eprintln!("usage: qins-dump FILE");
        return ExitCode::from(2);
    };
    match dump(path) {
        Ok(doc) => {
            println!("{doc}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}: {e}", e.kind());
            ExitCode::from(1)
        }
    }
}

fn dump(path: &str) -> Result<serde_json::Value, qins_read::ReadError> {
    let file = qins_read::open(path.as_ref())?;
    let q = file.parse()?;
    q.verify()?;
    let tensors: Vec<_> = q
        .tensors()
        .map(|t| {
            let crc = match t.raw_bytes() {
                Some(raw) => crc32fast::hash(raw),
                None => {
                    let v = t.to_f32_vec().expect("a verified encoded tensor decodes");
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    crc32fast::hash(&bytes)
                }
            };
            json!({
                "name": t.name(),
                "dtype": t.dtype().name(),
                "shape": t.shape(),
                "codec": t.codec().map_or("raw", |c| c.name()),
                "row_scales": t.row_scales().is_some(),
                "param0": t.params()[0],
                "param1": t.params()[1],
                "decoded_crc32": crc,
            })
        })
        .collect();
    let assets: Vec<_> = q
        .assets()
        .map(|(name, data)| json!({"name": name, "size": data.len(), "crc32": crc32fast::hash(data)}))
        .collect();
    let (major, minor) = q.version();
    Ok(json!({
        "version": [major, minor],
        "alignment": q.alignment(),
        "tensors": tensors,
        "assets": assets,
        "metadata": q.metadata(),
    }))
}

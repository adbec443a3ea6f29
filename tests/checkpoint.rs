//! Hand-made Hugging Face checkpoints: a tiny one whose `.qins` is a few KiB (for corpora of
//! damaged files), and a large one written quickly (for killing a conversion mid-write).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// One tensor of a safetensors file: name, dtype (safetensors spelling), shape, bytes.
pub type Tensor<'a> = (&'a str, &'a str, &'a [u64], &'a [u8]);

/// The safetensors header for `tensors` laid out back to back, padded with spaces to a
/// multiple of 8 and preceded by its length, as the format requires.
fn header(tensors: &[(&str, &str, &[u64], u64)]) -> Vec<u8> {
    let mut json = String::from("{");
    let mut at = 0u64;
    for (k, (name, dtype, shape, len)) in tensors.iter().enumerate() {
        if k > 0 {
            json.push(',');
        }
        let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
        json.push_str(&format!(
            "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[{at},{}]}}",
            dims.join(","),
            at + len
        ));
        at += len;
    }
    json.push('}');
    while json.len() % 8 != 0 {
        json.push(' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    out
}

/// Writes a safetensors file holding `tensors`.
pub fn write_safetensors(path: &Path, tensors: &[Tensor<'_>]) {
    let meta: Vec<_> = tensors
        .iter()
        .map(|&(n, d, s, b)| (n, d, s, b.len() as u64))
        .collect();
    let mut bytes = header(&meta);
    for t in tensors {
        bytes.extend_from_slice(t.3);
    }
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Little-endian f32 bytes.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A tiny checkpoint in `dir` (created): two matrices to encode (F32 [4, 6] and BF16 [3, 5],
/// whose 15 elements leave unused sign bits), a norm and an I64 tensor kept raw, and a
/// `config.json`. Converted with `--alignment 64` it makes a valid `.qins` of about 1.5 KiB:
/// header, LUT table, codes, signs, raw data, an asset and padding.
pub fn tiny(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let a: Vec<f32> = (0..24).map(|i| (i as f32 - 11.5) / 7.0).collect();
    let b: Vec<u8> = (0..15u16)
        .flat_map(|i| {
            let v = (f32::from(i) - 6.0) * 0.375;
            // BF16: the high half of the f32 (exact for these values).
            ((v.to_bits() >> 16) as u16).to_le_bytes()
        })
        .collect();
    let norm = f32_bytes(&[1.0, 0.5, 2.0, 1.0, 0.25, 1.5]);
    let ids: Vec<u8> = [0i64, 1, 2].iter().flat_map(|x| x.to_le_bytes()).collect();
    write_safetensors(
        &dir.join("model.safetensors"),
        &[
            ("a.weight", "F32", &[4, 6], &f32_bytes(&a)),
            ("b.weight", "BF16", &[3, 5], &b),
            ("c.norm", "F32", &[6], &norm),
            ("d.ids", "I64", &[3], &ids),
        ],
    );
    std::fs::write(dir.join("config.json"), b"{\"model_type\":\"tiny\"}\n").unwrap();
}

/// A checkpoint in `dir` (created) of about `bytes` bytes of BF16 matrices (`layers.K.weight`,
/// 256 × 4096 each, 2 MiB) and a `config.json`, written in a fraction of a second: finite values
/// from a cheap generator. Converting it takes long enough to be interrupted mid-write, and the
/// first tensor's data is written soon after the start.
pub fn large(dir: &Path, bytes: u64) {
    const SHAPE: [u64; 2] = [256, 4096];
    const TENSOR: u64 = SHAPE[0] * SHAPE[1] * 2;
    std::fs::create_dir_all(dir).unwrap();
    let count = (bytes / TENSOR).max(1);
    let names: Vec<String> = (0..count)
        .map(|k| format!("layers.{k:04}.weight"))
        .collect();
    let meta: Vec<_> = names
        .iter()
        .map(|n| (n.as_str(), "BF16", &SHAPE[..], TENSOR))
        .collect();
    let path = dir.join("model.safetensors");
    let file = File::create(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&header(&meta)).unwrap();
    // One tensor's worth of BF16 values with exponents in [2^-8, 2^8), varied per tensor.
    let mut block = vec![0u8; TENSOR as usize];
    let mut x: u32 = 0x9E37_79B9;
    for _ in 0..count {
        for pair in block.chunks_exact_mut(2) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let sign = (x >> 31) as u16;
            let exp = 119 + (x >> 8) as u16 % 16;
            let mant = (x & 0x7F) as u16;
            pair.copy_from_slice(&((sign << 15) | (exp << 7) | mant).to_le_bytes());
        }
        w.write_all(&block).unwrap();
    }
    w.flush().unwrap();
    std::fs::write(dir.join("config.json"), b"{\"model_type\":\"large\"}\n").unwrap();
}

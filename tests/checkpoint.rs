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

/// Deterministic values for tensor `seed`: `n` values in about [-1, 1], none zero.
fn wave(seed: u32, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (i as f32 * 0.737 + seed as f32 * 1.618).sin() * 0.9 + 0.05)
        .collect()
}

/// The tensors of [`sentence_transformers`]' transformer: name, dtype, shape, bytes.
fn bert_tensors() -> Vec<(String, &'static str, Vec<u64>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut f32_tensor = |name: &str, shape: &[u64]| {
        let n = shape.iter().product::<u64>() as usize;
        let seed = out.len() as u32;
        out.push((
            name.to_string(),
            "F32",
            shape.to_vec(),
            f32_bytes(&wave(seed, n)),
        ));
    };
    let (hidden, inter, vocab) = (32, 64, 32);
    f32_tensor("embeddings.word_embeddings.weight", &[vocab, hidden]);
    f32_tensor("embeddings.position_embeddings.weight", &[8, hidden]);
    f32_tensor("embeddings.token_type_embeddings.weight", &[2, hidden]);
    f32_tensor("embeddings.LayerNorm.weight", &[hidden]);
    f32_tensor("embeddings.LayerNorm.bias", &[hidden]);
    for part in ["query", "key", "value"] {
        f32_tensor(
            &format!("encoder.layer.0.attention.self.{part}.weight"),
            &[hidden, hidden],
        );
        f32_tensor(
            &format!("encoder.layer.0.attention.self.{part}.bias"),
            &[hidden],
        );
    }
    f32_tensor(
        "encoder.layer.0.intermediate.dense.weight",
        &[inter, hidden],
    );
    f32_tensor("encoder.layer.0.intermediate.dense.bias", &[inter]);
    f32_tensor("encoder.layer.0.output.dense.weight", &[hidden, inter]);
    f32_tensor("encoder.layer.0.output.dense.bias", &[hidden]);
    let ids: Vec<u8> = (0..8i64).flat_map(|x| x.to_le_bytes()).collect();
    out.push(("embeddings.position_ids".into(), "I64", vec![1, 8], ids));
    out
}

/// A tiny sentence-transformers model in `dir` (created), laid out as the library saves one:
/// a one-layer BERT at the top (`model.safetensors`, F32 matrices, an I64 `position_ids`,
/// `config.json`, `tokenizer.json`, `sentence_bert_config.json`), `modules.json` listing the
/// transformer (path `""`), `1_Pooling` (mean pooling, a config only), `2_Dense` (a 32 → 16
/// projection: `config.json` and `model.safetensors` with `linear.weight` of shape `[16, 32]`
/// and `linear.bias` of shape `[16]`) and `3_Normalize` (an empty directory).
pub fn sentence_transformers(dir: &Path) {
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    std::fs::create_dir_all(dir.join("2_Dense")).unwrap();
    std::fs::create_dir_all(dir.join("3_Normalize")).unwrap();
    let bert = bert_tensors();
    let tensors: Vec<Tensor<'_>> = bert
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), *d, s.as_slice(), b.as_slice()))
        .collect();
    write_safetensors(&dir.join("model.safetensors"), &tensors);
    let (w, b) = (wave(100, 16 * 32), wave(101, 16));
    write_safetensors(
        &dir.join("2_Dense/model.safetensors"),
        &[
            ("linear.bias", "F32", &[16], &f32_bytes(&b)),
            ("linear.weight", "F32", &[16, 32], &f32_bytes(&w)),
        ],
    );
    let files: [(&str, &str); 7] = [
        (
            "config.json",
            r#"{"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 32, "max_position_embeddings": 8}"#,
        ),
        (
            "tokenizer.json",
            r#"{"version": "1.0", "model": {"type": "WordPiece"}}"#,
        ),
        (
            "sentence_bert_config.json",
            r#"{"max_seq_length": 8, "do_lower_case": false}"#,
        ),
        (
            "modules.json",
            r#"[
  {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
  {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
  {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
  {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"}
]"#,
        ),
        (
            "1_Pooling/config.json",
            r#"{"word_embedding_dimension": 32, "pooling_mode_mean_tokens": true}"#,
        ),
        (
            "2_Dense/config.json",
            r#"{"in_features": 32, "out_features": 16, "bias": true, "activation_function": "torch.nn.modules.activation.Tanh"}"#,
        ),
        (
            "config_sentence_transformers.json",
            r#"{"similarity_fn_name": "cosine"}"#,
        ),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

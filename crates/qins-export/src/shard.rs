//! Splitting tensors into shards and the shard index, exactly as Hugging Face does.

use std::collections::BTreeMap;

/// The weights file of an unsharded model.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The shard index of a sharded model.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The file name of shard `i` (0-based) of `n`: `model.safetensors` when `n` is 1, else
/// `model-0000{i+1}-of-0000{n}.safetensors` (five digits each), as `transformers` names them.
pub fn shard_file_name(i: usize, n: usize) -> String {
    if n == 1 {
        SINGLE_FILE.to_string()
    } else {
        format!("model-{:05}-of-{:05}.safetensors", i + 1, n)
    }
}

/// Whether `name` is a file of a Hugging Face safetensors weight set at the top of a model
/// directory: `model.safetensors`, `model.safetensors.index.json` or
/// `model-NNNNN-of-NNNNN.safetensors`. An exported directory gets its own; an asset with such
/// a name is not restored over them.
pub fn is_weight_file_name(name: &str) -> bool {
    if name == SINGLE_FILE || name == INDEX_FILE {
        return true;
    }
    let Some(mid) = name
        .strip_prefix("model-")
        .and_then(|s| s.strip_suffix(".safetensors"))
    else {
        return false;
    };
    let digits = |s: &str| s.len() >= 5 && s.bytes().all(|b| b.is_ascii_digit());
    matches!(mid.split_once("-of-"), Some((a, b)) if digits(a) && digits(b))
}

/// Assigns tensors of the given sizes (bytes, in order) to shards of at most `max_shard_size`
/// bytes of tensor data, as `huggingface_hub.split_state_dict_into_shards_factory` (used by
/// `transformers`' `save_pretrained`) does: tensors are taken in order; a tensor larger than
/// the limit gets a shard of its own, placed before the shard being filled; otherwise a tensor
/// that would take the current shard over the limit closes it and starts the next one.
///
/// Returns each tensor's shard index and the number of shards (at least 1: a model without
/// tensors is one empty `model.safetensors`).
///
/// ```
/// // transformers' own example: a 10 GB limit and tensors of 6, 6, 2, 6, 2, 2 GB.
/// let gb = 1_000_000_000;
/// let (shards, n) = qins_export::split_into_shards(&[6 * gb, 6 * gb, 2 * gb, 6 * gb, 2 * gb, 2 * gb], 10 * gb);
/// assert_eq!((shards, n), (vec![0, 1, 1, 2, 2, 2], 3));
/// ```
pub fn split_into_shards(sizes: &[u64], max_shard_size: u64) -> (Vec<usize>, usize) {
    // Shards in creation order: own shards of oversized tensors are pushed as they come,
    // the current shard when it closes.
    let mut shard_of = vec![usize::MAX; sizes.len()];
    let mut shards: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut current_size = 0u64;
    for (i, &size) in sizes.iter().enumerate() {
        if size > max_shard_size {
            shards.push(vec![i]);
            continue;
        }
        if current_size.saturating_add(size) > max_shard_size {
            shards.push(std::mem::take(&mut current));
            current_size = 0;
        }
        current.push(i);
        current_size += size;
    }
    if !current.is_empty() || shards.is_empty() {
        shards.push(current);
    }
    for (s, members) in shards.iter().enumerate() {
        for &i in members {
            shard_of[i] = s;
        }
    }
    let n = shards.len();
    (shard_of, n)
}

/// The text of `model.safetensors.index.json` as `transformers` writes it:
/// `json.dumps(index, indent=2, sort_keys=True) + "\n"` of
/// `{"metadata": {"total_size": N}, "weight_map": {tensor: shard file}}`, `total_size` being
/// the sum of the tensors' data bytes. Like Python's `json.dumps`, non-ASCII characters are
/// written as `\uXXXX` escapes.
pub fn index_json<'a>(
    total_size: u64,
    weight_map: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    #[derive(serde::Serialize)]
    struct Index<'a> {
        metadata: Metadata,
        weight_map: BTreeMap<&'a str, &'a str>,
    }
    #[derive(serde::Serialize)]
    struct Metadata {
        total_size: u64,
    }
    let index = Index {
        metadata: Metadata { total_size },
        weight_map: weight_map.into_iter().collect(),
    };
    let text = serde_json::to_string_pretty(&index).expect("strings and integers serialize");
    let mut out = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            // Only strings can hold non-ASCII characters, so escaping them keeps valid JSON.
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(shard_file_name(0, 1), "model.safetensors");
        assert_eq!(shard_file_name(0, 3), "model-00001-of-00003.safetensors");
        assert_eq!(shard_file_name(11, 12), "model-00012-of-00012.safetensors");
        for n in [
            "model.safetensors",
            "model.safetensors.index.json",
            "model-00001-of-00002.safetensors",
        ] {
            assert!(is_weight_file_name(n), "{n}");
        }
        for n in [
            "config.json",
            "model-1-of-2.safetensors",
            "sub/model.safetensors",
            "model-00001-of-0000x.safetensors",
            "adapter.safetensors",
        ] {
            assert!(!is_weight_file_name(n), "{n}");
        }
    }

    #[test]
    fn split_like_huggingface_hub() {
        // huggingface_hub's tests/test_serialization.py: sizes 6, 10, 30, 2, 2 with limit 10.
        assert_eq!(
            split_into_shards(&[6, 10, 30, 2, 2], 10),
            (vec![0, 2, 1, 3, 3], 4)
        );
        // Everything fits: one shard.
        assert_eq!(split_into_shards(&[6, 10, 30, 2, 2], 100), (vec![0; 5], 1));
        // Exactly at the limit stays in the shard.
        assert_eq!(split_into_shards(&[5, 5, 5], 10), (vec![0, 0, 1], 2));
        // Empty tensors never open a shard on their own.
        assert_eq!(split_into_shards(&[10, 0, 0, 1], 10), (vec![0, 0, 0, 1], 2));
        assert_eq!(split_into_shards(&[], 10), (vec![], 1));
        assert_eq!(split_into_shards(&[20], 10), (vec![0], 1));
    }

    #[test]
    fn index_text() {
        let text = index_json(
            12,
            [
                ("b", "model-00002-of-00002.safetensors"),
                ("a", "model-00001-of-00002.safetensors"),
                ("é", "x"),
            ],
        );
        assert_eq!(
            text,
            "{\n  \"metadata\": {\n    \"total_size\": 12\n  },\n  \"weight_map\": {\n    \"a\": \"model-00001-of-00002.safetensors\",\n    \"b\": \"model-00002-of-00002.safetensors\",\n    \"\\u00e9\": \"x\"\n  }\n}\n"
        );
    }
}

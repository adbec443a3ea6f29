//! The small JSON files of a Hugging Face checkpoint.
//!
//! Everything is serialized from typed structs (never through `serde_json::Value`),
//! so the key order — and therefore the bytes — do not depend on serde_json features
//! enabled elsewhere in the workspace.

use std::collections::BTreeMap;
use std::path::Path;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::{SynthArch, SynthConfig, SynthError, BERT_DENSE_OUT};

const BOS_ID: u32 = 1;
const EOS_ID: u32 = 2;
const TRANSFORMERS_VERSION: &str = "4.44.0";

/// Serializes pretty JSON (2-space indent, trailing newline) to `path`.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), SynthError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|source| SynthError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    text.push('\n');
    std::fs::write(path, text).map_err(|source| SynthError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// `model.safetensors.index.json`.
#[derive(Serialize)]
pub(crate) struct ShardIndex<'a> {
    pub(crate) metadata: IndexMetadata,
    pub(crate) weight_map: BTreeMap<&'a str, &'a str>,
}

/// The `metadata` object of the index.
#[derive(Serialize)]
pub(crate) struct IndexMetadata {
    pub(crate) total_size: u64,
}

#[derive(Serialize)]
struct LlamaConfig {
    architectures: [&'static str; 1],
    attention_bias: bool,
    attention_dropout: f64,
    bos_token_id: u32,
    eos_token_id: u32,
    head_dim: usize,
    hidden_act: &'static str,
    hidden_size: usize,
    initializer_range: f64,
    intermediate_size: usize,
    max_position_embeddings: usize,
    mlp_bias: bool,
    model_type: &'static str,
    num_attention_heads: usize,
    num_hidden_layers: usize,
    num_key_value_heads: usize,
    pretraining_tp: u32,
    rms_norm_eps: f64,
    rope_scaling: Option<()>,
    rope_theta: f64,
    tie_word_embeddings: bool,
    torch_dtype: &'static str,
    transformers_version: &'static str,
    use_cache: bool,
    vocab_size: usize,
}

#[derive(Serialize)]
struct GenerationConfig {
    _from_model_config: bool,
    bos_token_id: u32,
    eos_token_id: u32,
    transformers_version: &'static str,
}

#[derive(Serialize)]
struct TokenizerConfig {
    add_bos_token: bool,
    add_eos_token: bool,
    bos_token: &'static str,
    clean_up_tokenization_spaces: bool,
    eos_token: &'static str,
    legacy: bool,
    model_max_length: usize,
    pad_token: Option<&'static str>,
    tokenizer_class: &'static str,
    unk_token: &'static str,
}

#[derive(Serialize)]
struct SpecialTokensMap {
    bos_token: &'static str,
    eos_token: &'static str,
    unk_token: &'static str,
}

#[derive(Serialize)]
struct AddedToken {
    id: u32,
    content: &'static str,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
    normalized: bool,
    special: bool,
}

#[derive(Serialize)]
struct ByteLevel {
    #[serde(rename = "type")]
    kind: &'static str,
    add_prefix_space: bool,
    trim_offsets: bool,
    use_regex: bool,
}

#[derive(Serialize)]
struct BpeModel {
    #[serde(rename = "type")]
    kind: &'static str,
    dropout: Option<f64>,
    unk_token: &'static str,
    continuing_subword_prefix: Option<&'static str>,
    end_of_word_suffix: Option<&'static str>,
    fuse_unk: bool,
    byte_fallback: bool,
    vocab: OrderedMap<u32>,
    merges: Vec<String>,
}

#[derive(Serialize)]
struct Tokenizer {
    version: &'static str,
    truncation: Option<()>,
    padding: Option<()>,
    added_tokens: Vec<AddedToken>,
    normalizer: Option<()>,
    pre_tokenizer: ByteLevel,
    post_processor: Option<()>,
    decoder: ByteLevel,
    model: BpeModel,
}

/// A JSON object whose keys keep insertion order.
struct OrderedMap<V>(Vec<(String, V)>);

impl<V: Serialize> Serialize for OrderedMap<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

const SPECIALS: [&str; 3] = ["<unk>", "<s>", "</s>"];

/// BPE merges of the toy tokenizer, in priority order.
const MERGES: [(&str, &str); 16] = [
    ("t", "h"),
    ("h", "e"),
    ("i", "n"),
    ("e", "r"),
    ("a", "n"),
    ("r", "e"),
    ("o", "n"),
    ("a", "t"),
    ("e", "n"),
    ("n", "d"),
    ("Ġ", "t"),
    ("Ġ", "a"),
    ("th", "e"),
    ("Ġt", "he"),
    ("in", "g"),
    ("Ġa", "nd"),
];

fn tokenizer(cfg: &SynthConfig) -> Tokenizer {
    // Specials, the byte-level space, printable ASCII, then merged tokens; capped at the
    // model vocabulary size (ids beyond the tokenizer vocabulary are simply unused).
    let mut tokens: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    tokens.push("Ġ".to_string());
    tokens.extend((33u8..=126).map(|b| char::from(b).to_string()));
    tokens.extend(MERGES.iter().map(|(a, b)| format!("{a}{b}")));
    tokens.truncate(cfg.vocab_size);
    let merges = MERGES
        .iter()
        .filter(|(a, b)| {
            let joined = format!("{a}{b}");
            tokens.contains(&joined)
        })
        .map(|(a, b)| format!("{a} {b}"))
        .collect();
    let vocab = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, i as u32))
        .collect();
    let byte_level = || ByteLevel {
        kind: "ByteLevel",
        add_prefix_space: false,
        trim_offsets: true,
        use_regex: true,
    };
    Tokenizer {
        version: "1.0",
        truncation: None,
        padding: None,
        added_tokens: SPECIALS
            .iter()
            .enumerate()
            .map(|(i, s)| AddedToken {
                id: i as u32,
                content: s,
                single_word: false,
                lstrip: false,
                rstrip: false,
                normalized: false,
                special: true,
            })
            .collect(),
        normalizer: None,
        pre_tokenizer: byte_level(),
        post_processor: None,
        decoder: byte_level(),
        model: BpeModel {
            kind: "BPE",
            dropout: None,
            unk_token: SPECIALS[0],
            continuing_subword_prefix: None,
            end_of_word_suffix: None,
            fuse_unk: false,
            byte_fallback: false,
            vocab: OrderedMap(vocab),
            merges,
        },
    }
}

/// `generation_config.json`: the BOS and EOS ids.
fn write_generation_config(dir: &Path) -> Result<(), SynthError> {
    write_json(
        &dir.join("generation_config.json"),
        &GenerationConfig {
            _from_model_config: true,
            bos_token_id: BOS_ID,
            eos_token_id: EOS_ID,
            transformers_version: TRANSFORMERS_VERSION,
        },
    )
}

/// The chat template the synthetic causal models other than Llama carry: ChatML's shape, with
/// the toy tokenizer's `<s>` and `</s>` as turn markers.
pub const CHAT_TEMPLATE: &str = "{% for message in messages %}{{ '<s>' + message['role'] + '\n' + message['content'] + '</s>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<s>assistant\n' }}{% endif %}";

/// `config.json` of an architecture other than Llama: the keys its Hugging Face config class
/// serializes that candle-transformers' model reads.
fn arch_config(cfg: &SynthConfig) -> serde_json::Value {
    use serde_json::json;
    let mut c = json!({
        "architectures": [cfg.arch.class()],
        "model_type": cfg.arch.model_type(),
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "max_position_embeddings": cfg.max_position_embeddings,
        "vocab_size": cfg.vocab_size,
        "torch_dtype": cfg.dtype.torch_name(),
        "transformers_version": TRANSFORMERS_VERSION,
    });
    let extra = match cfg.arch {
        SynthArch::Bert => json!({
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1,
            "type_vocab_size": 2,
            "initializer_range": 0.02,
            "layer_norm_eps": 1e-12,
            "pad_token_id": 0,
            "position_embedding_type": "absolute",
        }),
        arch => {
            let mut e = json!({
                "num_key_value_heads": cfg.num_key_value_heads,
                "head_dim": cfg.head_dim(),
                "rms_norm_eps": 1e-6,
                "rope_theta": 10000.0,
                "bos_token_id": BOS_ID,
                "eos_token_id": EOS_ID,
                "tie_word_embeddings": cfg.tie_word_embeddings,
                "hidden_act": "silu",
                "attention_bias": cfg.attention_bias,
                "use_cache": true,
            });
            let more = match arch {
                SynthArch::Mistral => json!({ "sliding_window": 64 }),
                SynthArch::Qwen2 | SynthArch::Qwen3 => json!({
                    "sliding_window": 64,
                    "use_sliding_window": false,
                    "max_window_layers": cfg.num_hidden_layers,
                }),
                SynthArch::Gemma3 => json!({
                    "hidden_activation": "gelu_pytorch_tanh",
                    "query_pre_attn_scalar": cfg.head_dim(),
                    "sliding_window": cfg.max_position_embeddings,
                    "sliding_window_pattern": 2,
                    "rope_local_base_freq": 10000.0,
                    "final_logit_softcapping": null,
                    "attn_logit_softcapping": null,
                }),
                SynthArch::Phi3 => json!({
                    "original_max_position_embeddings": cfg.max_position_embeddings,
                    "rope_scaling": null,
                }),
                _ => json!({}),
            };
            for (k, v) in more.as_object().into_iter().flatten() {
                e[k] = v.clone();
            }
            e
        }
    };
    for (k, v) in extra.as_object().into_iter().flatten() {
        c[k] = v.clone();
    }
    c
}

/// The sentence-transformers files of the synthetic BERT encoder: `modules.json` and the
/// Pooling (mean) and Dense (Tanh) modules' configs.
fn write_sentence_transformers(cfg: &SynthConfig, dir: &Path) -> Result<(), SynthError> {
    use serde_json::json;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SynthError::Io { path, source }
    };
    for sub in ["1_Pooling", "2_Dense"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(io(&dir.join(sub)))?;
    }
    let module = |idx: u32, path: &str, kind: &str| json!({ "idx": idx, "name": idx.to_string(), "path": path, "type": format!("sentence_transformers.models.{kind}") });
    write_json(
        &dir.join("modules.json"),
        &json!([
            module(0, "", "Transformer"),
            module(1, "1_Pooling", "Pooling"),
            module(2, "2_Dense", "Dense"),
            module(3, "3_Normalize", "Normalize"),
        ]),
    )?;
    write_json(
        &dir.join("1_Pooling/config.json"),
        &json!({
            "word_embedding_dimension": cfg.hidden_size,
            "pooling_mode_cls_token": false,
            "pooling_mode_mean_tokens": true,
            "pooling_mode_max_tokens": false,
            "pooling_mode_mean_sqrt_len_tokens": false,
        }),
    )?;
    write_json(
        &dir.join("2_Dense/config.json"),
        &json!({
            "in_features": cfg.hidden_size,
            "out_features": BERT_DENSE_OUT,
            "bias": true,
            "activation_function": "torch.nn.modules.activation.Tanh",
        }),
    )
}

/// Writes `config.json`, `generation_config.json`, `tokenizer.json`,
/// `tokenizer_config.json` and `special_tokens_map.json` (and for BERT the
/// sentence-transformers module files); returns the file names.
pub(crate) fn write_small_files(
    cfg: &SynthConfig,
    dir: &Path,
) -> Result<Vec<&'static str>, SynthError> {
    if cfg.arch != SynthArch::Llama {
        return write_arch_files(cfg, dir);
    }
    let config = LlamaConfig {
        architectures: ["LlamaForCausalLM"],
        attention_bias: cfg.attention_bias,
        attention_dropout: 0.0,
        bos_token_id: BOS_ID,
        eos_token_id: EOS_ID,
        head_dim: cfg.head_dim(),
        hidden_act: "silu",
        hidden_size: cfg.hidden_size,
        initializer_range: 0.02,
        intermediate_size: cfg.intermediate_size,
        max_position_embeddings: cfg.max_position_embeddings,
        mlp_bias: false,
        model_type: "llama",
        num_attention_heads: cfg.num_attention_heads,
        num_hidden_layers: cfg.num_hidden_layers,
        num_key_value_heads: cfg.num_key_value_heads,
        pretraining_tp: 1,
        rms_norm_eps: 1e-5,
        rope_scaling: None,
        rope_theta: 10000.0,
        tie_word_embeddings: cfg.tie_word_embeddings,
        torch_dtype: cfg.dtype.torch_name(),
        transformers_version: TRANSFORMERS_VERSION,
        use_cache: true,
        vocab_size: cfg.vocab_size,
    };
    write_json(&dir.join("config.json"), &config)?;
    write_generation_config(dir)?;
    write_json(&dir.join("tokenizer.json"), &tokenizer(cfg))?;
    write_json(
        &dir.join("tokenizer_config.json"),
        &TokenizerConfig {
            add_bos_token: true,
            add_eos_token: false,
            bos_token: SPECIALS[1],
            clean_up_tokenization_spaces: false,
            eos_token: SPECIALS[2],
            legacy: false,
            model_max_length: cfg.max_position_embeddings,
            pad_token: None,
            tokenizer_class: "PreTrainedTokenizerFast",
            unk_token: SPECIALS[0],
        },
    )?;
    write_json(
        &dir.join("special_tokens_map.json"),
        &SpecialTokensMap {
            bos_token: SPECIALS[1],
            eos_token: SPECIALS[2],
            unk_token: SPECIALS[0],
        },
    )?;
    Ok(vec![
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ])
}

/// [`write_small_files`] for an architecture other than Llama: the same tokenizer, its own
/// config, a chat template for causal models, the module files for BERT.
fn write_arch_files(cfg: &SynthConfig, dir: &Path) -> Result<Vec<&'static str>, SynthError> {
    write_json(&dir.join("config.json"), &arch_config(cfg))?;
    write_json(&dir.join("tokenizer.json"), &tokenizer(cfg))?;
    let causal = cfg.arch != SynthArch::Bert;
    let mut tok_config = serde_json::json!({
        "add_bos_token": causal,
        "bos_token": SPECIALS[1],
        "eos_token": SPECIALS[2],
        "unk_token": SPECIALS[0],
        "model_max_length": cfg.max_position_embeddings,
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    let mut files = vec!["config.json", "tokenizer.json", "tokenizer_config.json"];
    if causal {
        tok_config["chat_template"] = CHAT_TEMPLATE.into();
        write_generation_config(dir)?;
        files.push("generation_config.json");
    } else {
        write_sentence_transformers(cfg, dir)?;
        files.extend([
            "modules.json",
            "1_Pooling/config.json",
            "2_Dense/config.json",
        ]);
    }
    write_json(&dir.join("tokenizer_config.json"), &tok_config)?;
    Ok(files)
}

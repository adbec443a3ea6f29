//! Architectures: chosen from `config.json`, each built by candle-transformers' own model.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::{gemma3, llama, mistral, phi3, qwen2, qwen3};
use serde_json::{json, Map, Value};

use crate::error::compute;
use crate::RunError;

/// The `model_type` values this runner supports, as `config.json` spells them.
pub const SUPPORTED: &[&str] = &[
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma3_text",
    "phi3",
    "bert",
];

/// A supported architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Llama (SmolLM, TinyLlama...): `candle_transformers::models::llama`.
    Llama,
    /// Mistral: `models::mistral`.
    Mistral,
    /// Qwen2 / Qwen2.5: `models::qwen2`.
    Qwen2,
    /// Qwen3: `models::qwen3`.
    Qwen3,
    /// Gemma 3, text only: `models::gemma3`.
    Gemma3,
    /// Phi-3: `models::phi3`.
    Phi3,
    /// BERT encoders (sentence-transformers): `models::bert`.
    Bert,
}

impl Arch {
    /// The architecture `config` describes, or the refusal naming what it says.
    pub fn detect(config: &Value, file: &Path) -> Result<Arch, RunError> {
        let model_type = config
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("");
        let arch = match model_type {
            "llama" => Some(Arch::Llama),
            "mistral" => Some(Arch::Mistral),
            "qwen2" => Some(Arch::Qwen2),
            "qwen3" => Some(Arch::Qwen3),
            // A flat Gemma 3 config is the text model; the multimodal one nests `text_config`.
            "gemma3_text" => Some(Arch::Gemma3),
            "gemma3" if config.get("text_config").is_none() => Some(Arch::Gemma3),
            "phi3" => Some(Arch::Phi3),
            "bert" => Some(Arch::Bert),
            _ => None,
        };
        arch.ok_or_else(|| {
            let archs = config
                .get("architectures")
                .map(Value::to_string)
                .unwrap_or_else(|| "none".into());
            RunError::UnsupportedArchitecture {
                file: file.into(),
                found: format!("model_type {model_type:?} (architectures {archs})"),
                supported: SUPPORTED.to_vec(),
            }
        })
    }

    /// The `model_type` name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3_text",
            Arch::Phi3 => "phi3",
            Arch::Bert => "bert",
        }
    }

    /// Whether this is a causal language model (else an encoder).
    pub fn is_causal(self) -> bool {
        self != Arch::Bert
    }

    /// `config` with the defaults of Hugging Face's config class filled in where a key is
    /// absent, so that candle-transformers' stricter structs deserialize what `transformers`
    /// reads (its configs serialize every key; some checkpoints' files do not).
    pub fn normalize(self, config: &Value) -> Value {
        let mut c: Map<String, Value> = config.as_object().cloned().unwrap_or_default();
        let get_u = |c: &Map<String, Value>, k: &str| c.get(k).and_then(Value::as_u64);
        let mut default = |k: &str, v: Value| {
            if c.get(k).is_none_or(Value::is_null) {
                c.insert(k.to_string(), v);
            }
        };
        match self {
            Arch::Llama => {
                default("tie_word_embeddings", json!(false));
                default("rms_norm_eps", json!(1e-6));
                default("max_position_embeddings", json!(2048));
            }
            Arch::Mistral => {
                default("rms_norm_eps", json!(1e-6));
                default("rope_theta", json!(10000.0));
                default("max_position_embeddings", json!(32768));
                default("sliding_window", json!(4096));
            }
            Arch::Qwen2 | Arch::Qwen3 => {
                default("tie_word_embeddings", json!(false));
                default("rope_theta", json!(10000.0));
                default("rms_norm_eps", json!(1e-6));
                default("use_sliding_window", json!(false));
                default("sliding_window", json!(4096));
                default("hidden_act", json!("silu"));
                default("attention_bias", json!(false));
            }
            Arch::Gemma3 => {
                default("attention_bias", json!(false));
                default("head_dim", json!(256));
                default("hidden_activation", json!("gelu_pytorch_tanh"));
                default("rms_norm_eps", json!(1e-6));
                default("rope_theta", json!(1_000_000.0));
                default("rope_local_base_freq", json!(10000.0));
                default("query_pre_attn_scalar", json!(256));
                default("sliding_window", json!(4096));
                default("sliding_window_pattern", json!(6));
                default("max_position_embeddings", json!(131072));
            }
            Arch::Phi3 => {
                default("hidden_act", json!("silu"));
                default("rope_theta", json!(10000.0));
                default("rms_norm_eps", json!(1e-5));
            }
            Arch::Bert => {
                default("hidden_act", json!("gelu"));
                default("hidden_dropout_prob", json!(0.1));
                default("type_vocab_size", json!(2));
                default("initializer_range", json!(0.02));
                default("layer_norm_eps", json!(1e-12));
                default("pad_token_id", json!(0));
                default("max_position_embeddings", json!(512));
            }
        }
        // Keys that follow from others.
        if matches!(self, Arch::Qwen2 | Arch::Qwen3) {
            let layers = get_u(&c, "num_hidden_layers").unwrap_or(0);
            c.entry("max_window_layers").or_insert(json!(layers));
            let kv = c.get("num_attention_heads").cloned().unwrap_or(json!(1));
            c.entry("num_key_value_heads").or_insert(kv);
            c.entry("max_position_embeddings").or_insert(json!(32768));
        }
        if self == Arch::Qwen3 {
            if let (Some(h), Some(n)) = (get_u(&c, "hidden_size"), get_u(&c, "num_attention_heads"))
            {
                c.entry("head_dim").or_insert(json!(h / n.max(1)));
            }
        }
        if matches!(self, Arch::Mistral | Arch::Phi3 | Arch::Gemma3) {
            let kv = c.get("num_attention_heads").cloned().unwrap_or(json!(1));
            c.entry("num_key_value_heads").or_insert(kv);
        }
        Value::Object(c)
    }
}

/// Parses a normalized config into candle-transformers' struct for it.
pub(crate) fn parse_config<T: serde::de::DeserializeOwned>(
    config: &Value,
    file: &Path,
) -> Result<T, RunError> {
    serde_json::from_value(config.clone()).map_err(|e| RunError::BadAsset {
        file: file.into(),
        asset: "config.json".into(),
        cause: e.to_string(),
    })
}

/// A causal language model of any supported architecture, with its key-value cache.
#[allow(clippy::large_enum_variant)]
pub enum CausalLm {
    /// Llama: the model, its cache and what rebuilding the cache needs.
    Llama(llama::Llama, llama::Cache, Box<llama::Config>, DType),
    /// Mistral.
    Mistral(mistral::Model),
    /// Qwen2.
    Qwen2(qwen2::ModelForCausalLM),
    /// Qwen3.
    Qwen3(qwen3::ModelForCausalLM),
    /// Gemma 3 (text).
    Gemma3(gemma3::Model),
    /// Phi-3.
    Phi3(phi3::Model),
}

impl CausalLm {
    /// Builds the model of `arch` from `vb` and its normalized `config`.
    pub(crate) fn build(
        arch: Arch,
        config: &Value,
        file: &Path,
        vb: candle_nn::VarBuilder<'_>,
    ) -> Result<candle_core::Result<CausalLm>, RunError> {
        Ok(match arch {
            Arch::Llama => {
                let cfg: llama::LlamaConfig = parse_config(config, file)?;
                let cfg = cfg.into_config(false);
                let (dtype, device) = (vb.dtype(), vb.device().clone());
                llama::Llama::load(vb, &cfg).and_then(|m| {
                    let cache = llama::Cache::new(true, dtype, &cfg, &device)?;
                    Ok(CausalLm::Llama(m, cache, Box::new(cfg), dtype))
                })
            }
            Arch::Mistral => {
                let cfg: mistral::Config = parse_config(config, file)?;
                mistral::Model::new(&cfg, vb).map(CausalLm::Mistral)
            }
            Arch::Qwen2 => {
                let cfg: qwen2::Config = parse_config(config, file)?;
                qwen2::ModelForCausalLM::new(&cfg, vb).map(CausalLm::Qwen2)
            }
            Arch::Qwen3 => {
                let cfg: qwen3::Config = parse_config(config, file)?;
                qwen3::ModelForCausalLM::new(&cfg, vb).map(CausalLm::Qwen3)
            }
            Arch::Gemma3 => {
                let cfg: gemma3::Config = parse_config(config, file)?;
                gemma3::Model::new(false, &cfg, vb).map(CausalLm::Gemma3)
            }
            Arch::Phi3 => {
                let cfg: phi3::Config = parse_config(config, file)?;
                phi3::Model::new(&cfg, vb).map(CausalLm::Phi3)
            }
            Arch::Bert => {
                return Err(RunError::WrongKind {
                    file: file.into(),
                    what: "bert is an encoder, not a causal language model".into(),
                })
            }
        })
    }

    /// Runs `tokens` at positions `pos..pos + tokens.len()` (the cache holds the positions
    /// before) and returns the next-token logits after the last one, as f32.
    pub fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, RunError> {
        if let (CausalLm::Gemma3(_), [first, rest @ ..]) = (&*self, tokens) {
            if !rest.is_empty() {
                // candle-transformers 0.11's gemma3 appends several positions at once to the
                // key-value cache of its global layers only when the model has one key-value
                // head (the value tensor is not contiguous otherwise, and the cache refuses
                // it): the prompt goes one token at a time, which gives the same logits.
                self.forward(&[*first], pos)?;
                for (i, t) in rest[..rest.len() - 1].iter().enumerate() {
                    self.forward(&[*t], pos + 1 + i)?;
                }
                return self.forward(&rest[rest.len() - 1..], pos + rest.len());
            }
        }
        let device = Device::Cpu;
        let input = Tensor::new(tokens, &device)
            .and_then(|t| t.unsqueeze(0))
            .map_err(compute("building the input"))?;
        let logits = match self {
            CausalLm::Llama(m, cache, _, _) => m.forward(&input, pos, cache),
            CausalLm::Mistral(m) => m.forward(&input, pos),
            CausalLm::Qwen2(m) => m.forward(&input, pos),
            CausalLm::Qwen3(m) => m.forward(&input, pos),
            CausalLm::Gemma3(m) => m.forward(&input, pos),
            CausalLm::Phi3(m) => m.forward(&input, pos),
        };
        logits
            .and_then(|l| l.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>())
            .map_err(compute("running the model"))
    }

    /// Forgets every position: the next [`CausalLm::forward`] starts at 0.
    pub fn reset(&mut self) -> Result<(), RunError> {
        match self {
            CausalLm::Llama(_, cache, cfg, dtype) => {
                *cache = llama::Cache::new(true, *dtype, cfg, &Device::Cpu)
                    .map_err(compute("clearing the cache"))?;
            }
            CausalLm::Mistral(m) => m.clear_kv_cache(),
            CausalLm::Qwen2(m) => m.clear_kv_cache(),
            CausalLm::Qwen3(m) => m.clear_kv_cache(),
            CausalLm::Gemma3(m) => m.clear_kv_cache(),
            CausalLm::Phi3(m) => m.clear_kv_cache(),
        }
        Ok(())
    }
}

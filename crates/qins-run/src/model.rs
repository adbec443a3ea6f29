//! Opening a model (`.qins` or Hugging Face directory): its config, tokenizer, chat template and
//! network, all from its own files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use candle_core::{DType, Device};
use qins_candle::{Checkpoint, LoadStats, Loader, TensorSource};
use serde_json::Value;
use tokenizers::Tokenizer;

use crate::arch::{Arch, CausalLm};
use crate::chat::ChatTemplate;
use crate::embed::Encoder;
use crate::RunError;

/// The network of a model.
#[allow(clippy::large_enum_variant)]
pub enum Net {
    /// A causal language model.
    Causal(CausalLm),
    /// A sentence encoder.
    Encoder(Encoder),
}

/// A model, loaded: network, tokenizer and what generation needs to know.
pub struct Model {
    /// The `.qins` file or directory it came from.
    pub path: PathBuf,
    /// Whether it came from a `.qins` file.
    pub is_qins: bool,
    /// Its architecture.
    pub arch: Arch,
    /// The dtype its weights were loaded in.
    pub dtype: DType,
    /// The network.
    pub net: Net,
    /// The tokenizer, from `tokenizer.json`.
    pub tokenizer: Tokenizer,
    /// The chat template, from `tokenizer_config.json` (or `chat_template.jinja`).
    pub chat: Option<ChatTemplate>,
    /// Token ids that end generation.
    pub eos: Vec<u32>,
    /// Sampling defaults from `generation_config.json`: `(temperature, top_p)` when it says
    /// `do_sample`.
    pub sampling: Option<(f64, Option<f64>)>,
    /// Time to open the file, read its assets and load the weights.
    pub load_time: Duration,
    /// What the loader served.
    pub stats: LoadStats,
}

/// Reads asset `name` of `source` as JSON, if present.
pub(crate) fn json_asset(source: &dyn TensorSource, name: &str) -> Result<Option<Value>, RunError> {
    let Some(bytes) = source.asset(name)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| RunError::BadAsset {
            file: source.path().into(),
            asset: name.into(),
            cause: e.to_string(),
        })
}

/// Reads the architecture of the model at `path` from its `config.json`, without loading
/// weights.
pub fn architecture(path: &Path) -> Result<Arch, RunError> {
    let ckpt = Checkpoint::open(path)?;
    let source = ckpt.source()?;
    let config = required_config(source.as_ref())?;
    Arch::detect(&config, source.path())
}

/// Refuses, before any weight is read, a model at `path` that is not a causal language model
/// (`causal`) or not an encoder (`!causal`): the command `what` does not apply to it.
pub fn require_kind(path: &Path, causal: bool, what: &str) -> Result<Arch, RunError> {
    let arch = architecture(path)?;
    if arch.is_causal() != causal {
        let (is, use_) = if arch.is_causal() {
            ("a causal language model", "qins-run generate")
        } else {
            ("an encoder", "qins-run embed")
        };
        return Err(RunError::WrongKind {
            file: path.into(),
            what: format!(
                "{what} does not apply to {} ({is}): use `{use_}`",
                arch.name()
            ),
        });
    }
    Ok(arch)
}

fn required_config(source: &dyn TensorSource) -> Result<Value, RunError> {
    json_asset(source, "config.json")?.ok_or_else(|| RunError::MissingAsset {
        file: source.path().into(),
        asset: "config.json".into(),
        why: "the architecture and its sizes",
    })
}

/// Token ids from a JSON value that is an id or a list of ids.
fn ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_u64)
            .map(|n| n as u32)
            .collect(),
        _ => Vec::new(),
    }
}

/// A special token's text from `tokenizer_config.json` (a string or an `AddedToken` object).
pub(crate) fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

impl Model {
    /// Opens the model at `path` (a `.qins` file or a Hugging Face directory) and loads it in
    /// `dtype` on the CPU. Refuses, before loading any weight, an unsupported architecture and
    /// a model without `config.json` or `tokenizer.json`.
    pub fn open(path: &Path, dtype: DType) -> Result<Model, RunError> {
        let start = std::time::Instant::now();
        let ckpt = Checkpoint::open(path)?;
        let source = ckpt.source()?;
        let source = source.as_ref();
        let file = source.path().to_path_buf();
        let config = required_config(source)?;
        let arch = Arch::detect(&config, &file)?;
        let config = arch.normalize(&config);
        let tokenizer_bytes =
            source
                .asset("tokenizer.json")?
                .ok_or_else(|| RunError::MissingAsset {
                    file: file.clone(),
                    asset: "tokenizer.json".into(),
                    why: "the tokenizer",
                })?;
        let mut tokenizer =
            Tokenizer::from_bytes(&tokenizer_bytes).map_err(|e| RunError::BadAsset {
                file: file.clone(),
                asset: "tokenizer.json".into(),
                cause: e.to_string(),
            })?;
        // One sequence at a time: padding (MiniLM's tokenizer pads to 128) would only add
        // tokens that every later step would have to mask.
        tokenizer.with_padding(None);
        let tok_config = json_asset(source, "tokenizer_config.json")?.unwrap_or(Value::Null);
        let gen_config = json_asset(source, "generation_config.json")?.unwrap_or(Value::Null);
        let chat = ChatTemplate::from_assets(source, &tok_config)?;

        let mut eos = ids(gen_config.get("eos_token_id"));
        eos.extend(ids(config.get("eos_token_id")));
        if let Some(id) =
            token_text(tok_config.get("eos_token")).and_then(|t| tokenizer.token_to_id(&t))
        {
            eos.push(id);
        }
        eos.sort_unstable();
        eos.dedup();
        let sampling =
            (gen_config.get("do_sample").and_then(Value::as_bool) == Some(true)).then(|| {
                let t = gen_config
                    .get("temperature")
                    .and_then(Value::as_f64)
                    .unwrap_or(1.0);
                (t, gen_config.get("top_p").and_then(Value::as_f64))
            });

        let loader = Loader::new(source).tied_head("lm_head.weight", "model.embed_tokens.weight");
        let device = Device::Cpu;
        let net = if arch.is_causal() {
            let mut built = None;
            let (net, _) = loader
                .load(dtype, &device, |vb| {
                    match CausalLm::build(arch, &config, &file, vb) {
                        Ok(r) => r,
                        Err(e) => {
                            built = Some(e);
                            Err(candle_core::Error::Msg("config".into()))
                        }
                    }
                })
                .map_err(|e| match built.take() {
                    Some(config_error) => config_error,
                    None => RunError::Load(e),
                })?;
            Net::Causal(net)
        } else {
            Net::Encoder(Encoder::load(&loader, &config, dtype, &device)?)
        };
        let stats = loader.stats();
        Ok(Model {
            path: file,
            is_qins: source.is_qins(),
            arch,
            dtype,
            net,
            tokenizer,
            chat,
            eos,
            sampling,
            load_time: start.elapsed(),
            stats,
        })
    }

    /// The causal language model, or the refusal saying this is an encoder.
    pub fn causal(&mut self) -> Result<&mut CausalLm, RunError> {
        match &mut self.net {
            Net::Causal(m) => Ok(m),
            Net::Encoder(_) => Err(RunError::WrongKind {
                file: self.path.clone(),
                what: format!(
                    "a {} encoder cannot generate text: use `qins-run embed`",
                    self.arch.name()
                ),
            }),
        }
    }

    /// The encoder, or the refusal saying this is a causal language model.
    pub fn encoder(&self) -> Result<&Encoder, RunError> {
        match &self.net {
            Net::Encoder(e) => Ok(e),
            Net::Causal(_) => Err(RunError::WrongKind {
                file: self.path.clone(),
                what: format!(
                    "a {} causal language model has no sentence embeddings: use `qins-run generate`",
                    self.arch.name()
                ),
            }),
        }
    }

    /// `text` as token ids, with the tokenizer's special tokens (BOS...) if `special`.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>, RunError> {
        self.tokenizer
            .encode(text, special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| RunError::Text {
                what: "tokenizing",
                cause: e.to_string(),
            })
    }

    /// `tokens` as text, special tokens left out.
    pub fn decode(&self, tokens: &[u32]) -> Result<String, RunError> {
        self.tokenizer
            .decode(tokens, true)
            .map_err(|e| RunError::Text {
                what: "detokenizing",
                cause: e.to_string(),
            })
    }

    /// The prompt's tokens: through the chat template when `chat` and the model has one (the
    /// template writes the special tokens), else the text with the tokenizer's own.
    pub fn prompt_tokens(&self, prompt: &str, chat: bool) -> Result<Vec<u32>, RunError> {
        match (&self.chat, chat) {
            (Some(t), true) => {
                let text = t.render(&[crate::chat::Message::user(prompt)], true)?;
                self.encode(&text, false)
            }
            _ => self.encode(prompt, true),
        }
    }
}

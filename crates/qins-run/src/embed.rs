//! Sentence embeddings: a BERT encoder followed by the sentence-transformers modules that the
//! model's own `modules.json` lists (Pooling, Dense, Normalize), each configured by its
//! `*/config.json` and, for Dense, its weights (`2_Dense/linear.weight`...).

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Linear, Module};
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use qins_candle::Loader;
use serde_json::Value;

use crate::arch::parse_config;
use crate::error::compute;
use crate::model::json_asset;
use crate::RunError;

/// How token vectors become one sentence vector (sentence-transformers' Pooling module).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over the sentence's tokens.
    Mean,
    /// The first token's vector.
    Cls,
    /// The element-wise maximum over the tokens.
    Max,
    /// The sum over the tokens divided by the square root of their count.
    MeanSqrtLen,
    /// The last token's vector.
    LastToken,
}

impl Pooling {
    fn from_config(c: &Value) -> Option<Pooling> {
        let on = |k: &str| c.get(k).and_then(Value::as_bool) == Some(true);
        if let Some(mode) = c.get("pooling_mode").and_then(Value::as_str) {
            return match mode {
                "mean" => Some(Pooling::Mean),
                "cls" => Some(Pooling::Cls),
                "max" => Some(Pooling::Max),
                "mean_sqrt_len_tokens" => Some(Pooling::MeanSqrtLen),
                "lasttoken" => Some(Pooling::LastToken),
                _ => None,
            };
        }
        [
            ("pooling_mode_cls_token", Pooling::Cls),
            ("pooling_mode_mean_tokens", Pooling::Mean),
            ("pooling_mode_max_tokens", Pooling::Max),
            ("pooling_mode_mean_sqrt_len_tokens", Pooling::MeanSqrtLen),
            ("pooling_mode_lasttoken", Pooling::LastToken),
        ]
        .into_iter()
        .find(|(k, _)| on(k))
        .map(|(_, p)| p)
    }

    /// The name, as sentence-transformers writes it.
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Max => "max",
            Pooling::MeanSqrtLen => "mean_sqrt_len_tokens",
            Pooling::LastToken => "lasttoken",
        }
    }
}

/// One module after the encoder.
pub enum SentenceModule {
    /// Pooling.
    Pooling(Pooling),
    /// A Dense layer with its activation.
    Dense(Linear, DenseActivation),
    /// Division by the L2 norm.
    Normalize,
}

/// A BERT encoder with its sentence-transformers modules.
pub struct Encoder {
    bert: BertModel,
    modules: Vec<SentenceModule>,
}

/// The activation of a Dense module (sentence-transformers writes the torch class path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenseActivation {
    /// `torch.nn.Identity`.
    Identity,
    /// `torch.nn.Tanh` (the module's default).
    Tanh,
    /// `torch.nn.ReLU`.
    Relu,
    /// `torch.nn.GELU` (exact, erf-based).
    Gelu,
    /// `torch.nn.Sigmoid`.
    Sigmoid,
}

impl DenseActivation {
    fn from_name(name: &str) -> Option<DenseActivation> {
        Some(match name.rsplit('.').next().unwrap_or(name) {
            "Identity" => DenseActivation::Identity,
            "Tanh" => DenseActivation::Tanh,
            "ReLU" => DenseActivation::Relu,
            "GELU" => DenseActivation::Gelu,
            "Sigmoid" => DenseActivation::Sigmoid,
            _ => return None,
        })
    }

    fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            DenseActivation::Identity => Ok(x.clone()),
            DenseActivation::Tanh => x.tanh(),
            DenseActivation::Relu => x.relu(),
            DenseActivation::Gelu => x.gelu_erf(),
            DenseActivation::Sigmoid => candle_nn::ops::sigmoid(x),
        }
    }
}

impl Encoder {
    /// Loads the encoder and its modules from `loader`'s source.
    pub(crate) fn load(
        loader: &Loader<'_>,
        config: &Value,
        dtype: DType,
        device: &Device,
    ) -> Result<Encoder, RunError> {
        let source = loader.source();
        let file = source.path();
        let cfg: BertConfig = parse_config(config, file)?;
        let (bert, _) = loader.load(dtype, device, |vb| BertModel::load(vb, &cfg))?;
        let bad = |asset: &str, cause: String| RunError::BadAsset {
            file: file.into(),
            asset: asset.into(),
            cause,
        };
        let mut modules = Vec::new();
        let listed = json_asset(source, "modules.json")?;
        let Some(listed) = listed else {
            // A plain BERT: mean pooling, as sentence-transformers defaults to.
            return Ok(Encoder {
                bert,
                modules: vec![SentenceModule::Pooling(Pooling::Mean)],
            });
        };
        let list = listed
            .as_array()
            .ok_or_else(|| bad("modules.json", "not a list".into()))?;
        for m in list {
            let kind = m.get("type").and_then(Value::as_str).unwrap_or("");
            let path = m.get("path").and_then(Value::as_str).unwrap_or("");
            let class = kind.rsplit('.').next().unwrap_or(kind);
            let cfg_name = format!("{path}/config.json");
            match class {
                "Transformer" => {}
                "Pooling" => {
                    let c = json_asset(source, &cfg_name)?
                        .ok_or_else(|| bad(&cfg_name, "missing".into()))?;
                    let p = Pooling::from_config(&c).ok_or_else(|| {
                        bad(&cfg_name, "no pooling mode this runner knows".into())
                    })?;
                    modules.push(SentenceModule::Pooling(p));
                }
                "Dense" => {
                    let c = json_asset(source, &cfg_name)?
                        .ok_or_else(|| bad(&cfg_name, "missing".into()))?;
                    let dim = |k: &str| {
                        c.get(k)
                            .and_then(Value::as_u64)
                            .map(|v| v as usize)
                            .ok_or_else(|| bad(&cfg_name, format!("no {k}")))
                    };
                    let (inp, out) = (dim("in_features")?, dim("out_features")?);
                    let bias = c.get("bias").and_then(Value::as_bool).unwrap_or(true);
                    let act_name = c
                        .get("activation_function")
                        .and_then(Value::as_str)
                        .unwrap_or("torch.nn.modules.activation.Tanh");
                    let act = DenseActivation::from_name(act_name).ok_or_else(|| {
                        bad(&cfg_name, format!("activation {act_name} is not supported"))
                    })?;
                    let prefix = format!("{path}/linear");
                    let (linear, _) = loader.load(dtype, device, |vb| {
                        let vb = vb.pp(&prefix);
                        let w = vb.get((out, inp), "weight")?;
                        let b = if bias {
                            Some(vb.get(out, "bias")?)
                        } else {
                            None
                        };
                        Ok(Linear::new(w, b))
                    })?;
                    modules.push(SentenceModule::Dense(linear, act));
                }
                "Normalize" => modules.push(SentenceModule::Normalize),
                other => {
                    return Err(bad(
                        "modules.json",
                        format!("module {other} ({kind}) is not supported"),
                    ))
                }
            }
        }
        Ok(Encoder { bert, modules })
    }

    /// The modules after the encoder, by name (for reports).
    pub fn module_names(&self) -> Vec<String> {
        self.modules
            .iter()
            .map(|m| match m {
                SentenceModule::Pooling(p) => format!("Pooling({})", p.name()),
                SentenceModule::Dense(l, _) => format!(
                    "Dense({}x{})",
                    l.weight().dim(1).unwrap_or(0),
                    l.weight().dim(0).unwrap_or(0)
                ),
                SentenceModule::Normalize => "Normalize".into(),
            })
            .collect()
    }

    /// The sentence embedding of each of `texts`, as f32 vectors, one at a time (no padding).
    pub fn embed(
        &self,
        tokenizer: &tokenizers::Tokenizer,
        texts: &[String],
    ) -> Result<Vec<Vec<f32>>, RunError> {
        texts.iter().map(|t| self.embed_one(tokenizer, t)).collect()
    }

    fn embed_one(
        &self,
        tokenizer: &tokenizers::Tokenizer,
        text: &str,
    ) -> Result<Vec<f32>, RunError> {
        let enc = tokenizer.encode(text, true).map_err(|e| RunError::Text {
            what: "tokenizing",
            cause: e.to_string(),
        })?;
        let dev = &self.bert.device;
        let ids = Tensor::new(enc.get_ids(), dev).and_then(|t| t.unsqueeze(0));
        let types = Tensor::new(enc.get_type_ids(), dev).and_then(|t| t.unsqueeze(0));
        let (ids, types) = (
            ids.map_err(compute("input"))?,
            types.map_err(compute("input"))?,
        );
        let hidden = self
            .bert
            .forward(&ids, &types, None)
            .and_then(|h| h.squeeze(0)?.to_dtype(DType::F32))
            .map_err(compute("running the encoder"))?;
        let mut x = hidden; // (tokens, hidden) until pooled, then (dim,)
        let mut pooled = false;
        for m in &self.modules {
            x = match m {
                SentenceModule::Pooling(p) => {
                    pooled = true;
                    pool(&x, *p).map_err(compute("pooling"))?
                }
                SentenceModule::Dense(l, a) => {
                    apply_dense(&x, l, *a).map_err(compute("the dense layer"))?
                }
                SentenceModule::Normalize => normalize(&x).map_err(compute("normalizing"))?,
            };
        }
        if !pooled {
            x = pool(&x, Pooling::Mean).map_err(compute("pooling"))?;
        }
        x.to_vec1::<f32>().map_err(compute("reading the embedding"))
    }
}

fn apply_dense(x: &Tensor, l: &Linear, a: DenseActivation) -> candle_core::Result<Tensor> {
    let w_dtype = l.weight().dtype();
    let y = l
        .forward(&x.unsqueeze(0)?.to_dtype(w_dtype)?)?
        .squeeze(0)?
        .to_dtype(DType::F32)?;
    a.apply(&y)
}

/// `x / max(‖x‖, 1e-12)`, as torch's `F.normalize`.
fn normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&norm)
}

fn pool(x: &Tensor, p: Pooling) -> candle_core::Result<Tensor> {
    let n = x.dim(0)?;
    match p {
        Pooling::Mean => x.mean(0),
        Pooling::Cls => x.get(0),
        Pooling::Max => x.max(0),
        Pooling::MeanSqrtLen => x.sum(0)? / (n as f64).sqrt(),
        Pooling::LastToken => x.get(n - 1),
    }
}

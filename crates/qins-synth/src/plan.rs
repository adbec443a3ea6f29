//! The tensor plan: names, shapes, dtypes and value distributions of a checkpoint.

use safetensors::Dtype;

use crate::rng::{mix64, tensor_seed, unit_f64};
use crate::{SynthArch, SynthConfig, BERT_DENSE_OUT};

/// Base standard deviation of weight matrices (Hugging Face `initializer_range`).
pub const BASE_STD: f32 = 0.02;

/// Probability that an element of an outlier-carrying tensor is an outlier.
pub const OUTLIER_FRACTION: f64 = 1e-3;

/// Outliers are `±std × U(OUTLIER_MIN_SCALE, OUTLIER_MAX_SCALE)`.
pub const OUTLIER_MIN_SCALE: f32 = 20.0;

/// Upper bound of the outlier scale, see [`OUTLIER_MIN_SCALE`].
pub const OUTLIER_MAX_SCALE: f32 = 100.0;

/// Fraction of exact zeros in `model.layers.0.mlp.down_proj.weight`.
pub const ZERO_FRACTION: f64 = 0.05;

/// Heavy-tailed samples are clamped to `±HEAVY_TAIL_CLAMP × std` (before outliers are added).
pub const HEAVY_TAIL_CLAMP: f64 = 30.0;

/// How the values of one tensor are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WeightDist {
    /// Normal distribution.
    Gaussian {
        /// Mean (0 for weights, 1 for norm scales).
        mean: f32,
        /// Standard deviation.
        std: f32,
    },
    /// Zero-mean Laplace distribution (heavy-tailed), clamped to ±[`HEAVY_TAIL_CLAMP`] std.
    Laplace {
        /// Standard deviation (the Laplace scale is `std / √2`).
        std: f32,
    },
    /// Zero-mean Student-t with 4 degrees of freedom (heavy-tailed), clamped to
    /// ±[`HEAVY_TAIL_CLAMP`] std.
    StudentT4 {
        /// Standard deviation (the t scale is `std / √2`).
        std: f32,
    },
    /// The integers `0, 1, 2, …` (used for the I64 position tensor).
    Arange,
}

impl WeightDist {
    /// Standard deviation of the distribution (0 for [`WeightDist::Arange`]).
    pub fn std(&self) -> f32 {
        match *self {
            WeightDist::Gaussian { std, .. }
            | WeightDist::Laplace { std }
            | WeightDist::StudentT4 { std } => std,
            WeightDist::Arange => 0.0,
        }
    }
}

/// Description of one tensor of the checkpoint (everything except its bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    /// Hugging Face tensor name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    /// Shape, row-major.
    pub shape: Vec<usize>,
    /// Storage dtype (the configured float dtype, or I64 for the position tensor).
    pub dtype: Dtype,
    /// Value distribution.
    pub dist: WeightDist,
    /// Probability that an element is exactly zero.
    pub zero_fraction: f64,
    /// Probability that an element is an outlier (`±std × U(20, 100)`); when non-zero,
    /// every generation chunk (65536 elements) additionally holds at least one outlier.
    pub outlier_fraction: f64,
}

impl TensorSpec {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Size of the tensor data in bytes.
    pub fn byte_len(&self) -> usize {
        self.numel() * self.dtype.bitsize() / 8
    }
}

impl SynthConfig {
    /// The tensors of the checkpoint, in file order (this is also the order used to
    /// split tensors across shards).
    ///
    /// Distributions: embeddings, `lm_head`, `q/k/v`, `gate` and `up` projections are
    /// Gaussian with std `0.02 × f` where `f ∈ [0.5, 2)` is drawn per tensor from the
    /// seed; `o_proj` and `down_proj` use the residual scaling `/ √(2·layers)`;
    /// `o_proj` is Student-t(4) and `down_proj` of layers ≥ 1 is Laplace, both with
    /// outliers; `model.layers.0.mlp.down_proj.weight` is Gaussian with 5% exact zeros;
    /// norm scales are Gaussian around 1.0 (std 0.05); biases are Gaussian (std 0.02·f).
    pub fn tensor_specs(&self) -> Vec<TensorSpec> {
        if self.arch != SynthArch::Llama {
            return self.arch_specs();
        }
        let fd = self.dtype.safetensors_dtype();
        let h = self.hidden_size;
        let hd = self.head_dim();
        let q_rows = self.num_attention_heads * hd;
        let kv_rows = self.num_key_value_heads * hd;
        let resid = 1.0 / (2.0 * self.num_hidden_layers.max(1) as f32).sqrt();
        let seed = self.seed;

        let mut out = Vec::with_capacity(4 + self.num_hidden_layers * 12);
        let mut push =
            |name: String, shape: Vec<usize>, dist: WeightDist, zeros: f64, outliers: f64| {
                out.push(TensorSpec {
                    name,
                    shape,
                    dtype: fd,
                    dist,
                    zero_fraction: zeros,
                    outlier_fraction: outliers,
                });
            };
        let gauss = |name: &str, scale: f32| WeightDist::Gaussian {
            mean: 0.0,
            std: BASE_STD * scale * std_factor(seed, name),
        };
        let norm = WeightDist::Gaussian {
            mean: 1.0,
            std: 0.05,
        };

        let name = "model.embed_tokens.weight".to_string();
        push(
            name.clone(),
            vec![self.vocab_size, h],
            gauss(&name, 1.0),
            0.0,
            0.0,
        );

        for i in 0..self.num_hidden_layers {
            let p = format!("model.layers.{i}");
            for (proj, rows) in [("q_proj", q_rows), ("k_proj", kv_rows), ("v_proj", kv_rows)] {
                let w = format!("{p}.self_attn.{proj}.weight");
                push(w.clone(), vec![rows, h], gauss(&w, 1.0), 0.0, 0.0);
                if self.attention_bias {
                    let b = format!("{p}.self_attn.{proj}.bias");
                    push(b.clone(), vec![rows], gauss(&b, 1.0), 0.0, 0.0);
                }
            }
            let o = format!("{p}.self_attn.o_proj.weight");
            let o_std = BASE_STD * resid * std_factor(seed, &o);
            push(
                o,
                vec![h, q_rows],
                WeightDist::StudentT4 { std: o_std },
                0.0,
                OUTLIER_FRACTION,
            );

            for proj in ["gate_proj", "up_proj"] {
                let w = format!("{p}.mlp.{proj}.weight");
                push(
                    w.clone(),
                    vec![self.intermediate_size, h],
                    gauss(&w, 1.0),
                    0.0,
                    0.0,
                );
            }
            let d = format!("{p}.mlp.down_proj.weight");
            let shape = vec![h, self.intermediate_size];
            if i == 0 {
                push(d.clone(), shape, gauss(&d, resid), ZERO_FRACTION, 0.0);
            } else {
                let std = BASE_STD * resid * std_factor(seed, &d);
                push(d, shape, WeightDist::Laplace { std }, 0.0, OUTLIER_FRACTION);
            }
            push(
                format!("{p}.input_layernorm.weight"),
                vec![h],
                norm,
                0.0,
                0.0,
            );
            push(
                format!("{p}.post_attention_layernorm.weight"),
                vec![h],
                norm,
                0.0,
                0.0,
            );
        }

        push("model.norm.weight".to_string(), vec![h], norm, 0.0, 0.0);
        if !self.tie_word_embeddings {
            let name = "lm_head.weight".to_string();
            push(
                name.clone(),
                vec![self.vocab_size, h],
                gauss(&name, 1.0),
                0.0,
                0.0,
            );
        }
        out.push(TensorSpec {
            name: "model.rotary.position_ids".to_string(),
            shape: vec![1, self.max_position_embeddings],
            dtype: Dtype::I64,
            dist: WeightDist::Arange,
            zero_fraction: 0.0,
            outlier_fraction: 0.0,
        });
        out
    }
}

impl SynthConfig {
    /// The tensors of an architecture other than Llama: Gaussian weights (std `0.02 × f`,
    /// per-tensor `f` as for Llama), norm scales around 1 (Gemma's around 0: it adds 1
    /// itself), biases and norm shifts around 0.
    fn arch_specs(&self) -> Vec<TensorSpec> {
        let fd = self.dtype.safetensors_dtype();
        let (h, i_sz) = (self.hidden_size, self.intermediate_size);
        let hd = self.head_dim();
        let (q, kv) = (self.num_attention_heads * hd, self.num_key_value_heads * hd);
        let seed = self.seed;
        let mut out = Vec::new();
        let mut weight = |name: String, shape: Vec<usize>| {
            let dist = WeightDist::Gaussian {
                mean: 0.0,
                std: BASE_STD * std_factor(seed, &name),
            };
            out.push(TensorSpec {
                name,
                shape,
                dtype: fd,
                dist,
                zero_fraction: 0.0,
                outlier_fraction: 0.0,
            });
        };
        let mut norms = Vec::new();
        let norm_mean = if self.arch == SynthArch::Gemma3 {
            0.0
        } else {
            1.0
        };
        let mut norm = |name: String, len: usize, mean: f32| {
            norms.push(TensorSpec {
                name,
                shape: vec![len],
                dtype: fd,
                dist: WeightDist::Gaussian { mean, std: 0.05 },
                zero_fraction: 0.0,
                outlier_fraction: 0.0,
            });
        };
        if self.arch == SynthArch::Bert {
            weight(
                "embeddings.word_embeddings.weight".into(),
                vec![self.vocab_size, h],
            );
            weight(
                "embeddings.position_embeddings.weight".into(),
                vec![self.max_position_embeddings, h],
            );
            weight("embeddings.token_type_embeddings.weight".into(), vec![2, h]);
            norm("embeddings.LayerNorm.weight".into(), h, 1.0);
            norm("embeddings.LayerNorm.bias".into(), h, 0.0);
            for l in 0..self.num_hidden_layers {
                let p = format!("encoder.layer.{l}");
                for m in ["query", "key", "value"] {
                    weight(format!("{p}.attention.self.{m}.weight"), vec![h, h]);
                    norm(format!("{p}.attention.self.{m}.bias"), h, 0.0);
                }
                weight(format!("{p}.attention.output.dense.weight"), vec![h, h]);
                norm(format!("{p}.attention.output.dense.bias"), h, 0.0);
                norm(format!("{p}.attention.output.LayerNorm.weight"), h, 1.0);
                norm(format!("{p}.attention.output.LayerNorm.bias"), h, 0.0);
                weight(format!("{p}.intermediate.dense.weight"), vec![i_sz, h]);
                norm(format!("{p}.intermediate.dense.bias"), i_sz, 0.0);
                weight(format!("{p}.output.dense.weight"), vec![h, i_sz]);
                norm(format!("{p}.output.dense.bias"), h, 0.0);
                norm(format!("{p}.output.LayerNorm.weight"), h, 1.0);
                norm(format!("{p}.output.LayerNorm.bias"), h, 0.0);
            }
            weight("pooler.dense.weight".into(), vec![h, h]);
            norm("pooler.dense.bias".into(), h, 0.0);
        } else {
            weight("model.embed_tokens.weight".into(), vec![self.vocab_size, h]);
            for l in 0..self.num_hidden_layers {
                let p = format!("model.layers.{l}");
                if self.arch == SynthArch::Phi3 {
                    weight(
                        format!("{p}.self_attn.qkv_proj.weight"),
                        vec![q + 2 * kv, h],
                    );
                    weight(format!("{p}.mlp.gate_up_proj.weight"), vec![2 * i_sz, h]);
                } else {
                    for (proj, rows) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
                        weight(format!("{p}.self_attn.{proj}.weight"), vec![rows, h]);
                        if self.attention_bias {
                            norm(format!("{p}.self_attn.{proj}.bias"), rows, 0.0);
                        }
                    }
                    weight(format!("{p}.mlp.gate_proj.weight"), vec![i_sz, h]);
                    weight(format!("{p}.mlp.up_proj.weight"), vec![i_sz, h]);
                }
                weight(format!("{p}.self_attn.o_proj.weight"), vec![h, q]);
                weight(format!("{p}.mlp.down_proj.weight"), vec![h, i_sz]);
                if matches!(self.arch, SynthArch::Qwen3 | SynthArch::Gemma3) {
                    norm(format!("{p}.self_attn.q_norm.weight"), hd, norm_mean);
                    norm(format!("{p}.self_attn.k_norm.weight"), hd, norm_mean);
                }
                norm(format!("{p}.input_layernorm.weight"), h, norm_mean);
                norm(format!("{p}.post_attention_layernorm.weight"), h, norm_mean);
                if self.arch == SynthArch::Gemma3 {
                    norm(
                        format!("{p}.pre_feedforward_layernorm.weight"),
                        h,
                        norm_mean,
                    );
                    norm(
                        format!("{p}.post_feedforward_layernorm.weight"),
                        h,
                        norm_mean,
                    );
                }
            }
            norm("model.norm.weight".into(), h, norm_mean);
            if !self.tie_word_embeddings {
                weight("lm_head.weight".into(), vec![self.vocab_size, h]);
            }
        }
        out.extend(norms);
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The tensors of the sentence-transformers Dense module (`2_Dense/model.safetensors`,
    /// named as that file names them: `linear.weight`, `linear.bias`): only for BERT.
    pub fn dense_specs(&self) -> Vec<TensorSpec> {
        if self.arch != SynthArch::Bert {
            return Vec::new();
        }
        let fd = self.dtype.safetensors_dtype();
        let g = |name: &str, shape: Vec<usize>| TensorSpec {
            name: name.to_string(),
            shape,
            dtype: fd,
            dist: WeightDist::Gaussian {
                mean: 0.0,
                std: 0.1,
            },
            zero_fraction: 0.0,
            outlier_fraction: 0.0,
        };
        vec![
            g("linear.bias", vec![BERT_DENSE_OUT]),
            g("linear.weight", vec![BERT_DENSE_OUT, self.hidden_size]),
        ]
    }
}

/// Per-tensor std multiplier in `[0.5, 2)`, derived from the seed and the tensor name.
fn std_factor(seed: u64, name: &str) -> f32 {
    let u = unit_f64(mix64(tensor_seed(seed, name) ^ 0x0057_D00F_AC70_0001));
    (0.5 + 1.5 * u) as f32
}

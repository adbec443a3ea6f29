//! Checkpoint configuration: dtype, sizes, presets and size targeting.

use std::fmt;
use std::str::FromStr;

use safetensors::Dtype;

use crate::SynthError;

/// Floating-point dtype of every float tensor in the generated checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SynthDtype {
    /// IEEE-754 binary32.
    F32,
    /// IEEE-754 binary16.
    F16,
    /// bfloat16 (truncated binary32 exponent range).
    Bf16,
}

impl SynthDtype {
    /// All supported dtypes, in a fixed order.
    pub const ALL: [SynthDtype; 3] = [SynthDtype::F32, SynthDtype::F16, SynthDtype::Bf16];

    /// Size of one element in bytes.
    pub fn size_bytes(self) -> usize {
        match self {
            SynthDtype::F32 => 4,
            SynthDtype::F16 | SynthDtype::Bf16 => 2,
        }
    }

    /// The matching safetensors dtype.
    pub fn safetensors_dtype(self) -> Dtype {
        match self {
            SynthDtype::F32 => Dtype::F32,
            SynthDtype::F16 => Dtype::F16,
            SynthDtype::Bf16 => Dtype::BF16,
        }
    }

    /// The PyTorch name written as `torch_dtype` in `config.json` (e.g. `"bfloat16"`).
    pub fn torch_name(self) -> &'static str {
        match self {
            SynthDtype::F32 => "float32",
            SynthDtype::F16 => "float16",
            SynthDtype::Bf16 => "bfloat16",
        }
    }
}

impl fmt::Display for SynthDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SynthDtype::F32 => "f32",
            SynthDtype::F16 => "f16",
            SynthDtype::Bf16 => "bf16",
        })
    }
}

impl FromStr for SynthDtype {
    type Err = SynthError;

    /// Parses `f32`, `f16` or `bf16` (case-insensitive; the PyTorch names
    /// `float32`, `float16` and `bfloat16` are accepted too).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(SynthDtype::F32),
            "f16" | "float16" => Ok(SynthDtype::F16),
            "bf16" | "bfloat16" => Ok(SynthDtype::Bf16),
            _ => Err(SynthError::UnknownDtype(s.to_string())),
        }
    }
}

/// The architecture whose tensor names and `config.json` a checkpoint carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SynthArch {
    /// Llama (`LlamaForCausalLM`): the default, and the only one with I64 position ids.
    Llama,
    /// Mistral (`MistralForCausalLM`): Llama's names, a sliding window.
    Mistral,
    /// Qwen2 (`Qwen2ForCausalLM`): Llama's names with q/k/v biases.
    Qwen2,
    /// Qwen3 (`Qwen3ForCausalLM`): Llama's names with per-head q/k norms.
    Qwen3,
    /// Gemma 3 text (`Gemma3ForCausalLM`): q/k norms, four norms per layer, a tied head.
    Gemma3,
    /// Phi-3 (`Phi3ForCausalLM`): fused `qkv_proj` and `gate_up_proj`.
    Phi3,
    /// A sentence-transformers BERT encoder (`BertModel`) with Pooling, Dense and Normalize
    /// modules (`2_Dense/model.safetensors` holds the Dense layer).
    Bert,
}

impl SynthArch {
    /// Every architecture, in a fixed order.
    pub const ALL: [SynthArch; 7] = [
        SynthArch::Llama,
        SynthArch::Mistral,
        SynthArch::Qwen2,
        SynthArch::Qwen3,
        SynthArch::Gemma3,
        SynthArch::Phi3,
        SynthArch::Bert,
    ];

    /// The `model_type` of `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            SynthArch::Llama => "llama",
            SynthArch::Mistral => "mistral",
            SynthArch::Qwen2 => "qwen2",
            SynthArch::Qwen3 => "qwen3",
            SynthArch::Gemma3 => "gemma3_text",
            SynthArch::Phi3 => "phi3",
            SynthArch::Bert => "bert",
        }
    }

    /// The class name of `config.json`'s `architectures`.
    pub fn class(self) -> &'static str {
        match self {
            SynthArch::Llama => "LlamaForCausalLM",
            SynthArch::Mistral => "MistralForCausalLM",
            SynthArch::Qwen2 => "Qwen2ForCausalLM",
            SynthArch::Qwen3 => "Qwen3ForCausalLM",
            SynthArch::Gemma3 => "Gemma3ForCausalLM",
            SynthArch::Phi3 => "Phi3ForCausalLM",
            SynthArch::Bert => "BertModel",
        }
    }
}

impl fmt::Display for SynthArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SynthArch::Gemma3 => "gemma3",
            other => other.model_type(),
        })
    }
}

impl FromStr for SynthArch {
    type Err = SynthError;

    /// Parses `llama`, `mistral`, `qwen2`, `qwen3`, `gemma3`, `phi3` or `bert`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SynthArch::ALL
            .into_iter()
            .find(|a| a.to_string() == s.to_ascii_lowercase())
            .ok_or_else(|| SynthError::InvalidConfig(format!("unknown architecture {s:?}")))
    }
}

/// Dimension of the Dense module of the synthetic BERT encoder's sentence embeddings.
pub const BERT_DENSE_OUT: usize = 24;

/// Full description of a synthetic Llama-like checkpoint.
///
/// All fields are public; build one from a preset ([`SynthConfig::tiny`],
/// [`SynthConfig::small`], [`SynthConfig::for_target_bytes`]) and adjust fields as
/// needed. [`crate::generate`] validates the configuration before writing anything.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// The architecture: tensor names and config (Llama unless a preset says otherwise).
    pub arch: SynthArch,
    /// Dtype of every float tensor.
    pub dtype: SynthDtype,
    /// Vocabulary size (rows of `model.embed_tokens.weight` and `lm_head.weight`); at least 3.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// MLP width (`gate_proj` / `up_proj` rows, `down_proj` columns).
    pub intermediate_size: usize,
    /// Number of decoder layers (0 is allowed: embeddings, final norm and head only).
    pub num_hidden_layers: usize,
    /// Number of attention (query) heads; must divide `hidden_size`.
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention); must divide `num_attention_heads`.
    pub num_key_value_heads: usize,
    /// Length of the integer `model.rotary.position_ids` tensor (`[1, max_position_embeddings]`, I64).
    pub max_position_embeddings: usize,
    /// Emit 1-D `.bias` tensors for `q_proj`, `k_proj` and `v_proj`.
    pub attention_bias: bool,
    /// Tie the output head to the embeddings: no `lm_head.weight` tensor is written.
    pub tie_word_embeddings: bool,
    /// Number of safetensors shards (1 writes `model.safetensors`, N > 1 writes
    /// `model-0000i-of-0000N.safetensors` plus `model.safetensors.index.json`).
    pub shards: usize,
    /// Seed of every random stream; the same configuration always gives the same bytes.
    pub seed: u64,
    /// Optionally replace element `index` (flat, row-major) of the named float
    /// tensor with NaN. Used to test that consumers reject non-finite weights.
    pub inject_nan: Option<(String, usize)>,
}

impl SynthConfig {
    /// A tiny checkpoint for unit tests (roughly 0.5 MB in 16-bit dtypes, 1 MB in F32).
    ///
    /// It deliberately uses odd shapes (hidden 100, intermediate 257, vocabulary 211,
    /// 2 layers, 4 heads of dimension 25, 2 KV heads, 67 positions) and attention biases,
    /// so edge cases such as dimensions that are not multiples of 8 are always covered.
    pub fn tiny(dtype: SynthDtype) -> Self {
        SynthConfig {
            arch: SynthArch::Llama,
            dtype,
            vocab_size: 211,
            hidden_size: 100,
            intermediate_size: 257,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            max_position_embeddings: 67,
            attention_bias: true,
            tie_word_embeddings: false,
            shards: 1,
            seed: 0,
            inject_nan: None,
        }
    }

    /// A small checkpoint (about 4.7 MB in 16-bit dtypes, 9.4 MB in F32) with
    /// "round" Llama-like shapes: vocabulary 2048, hidden 192, intermediate 512,
    /// 4 layers, 6 heads, 2 KV heads.
    pub fn small(dtype: SynthDtype) -> Self {
        SynthConfig {
            arch: SynthArch::Llama,
            dtype,
            vocab_size: 2048,
            hidden_size: 192,
            intermediate_size: 512,
            num_hidden_layers: 4,
            num_attention_heads: 6,
            num_key_value_heads: 2,
            max_position_embeddings: 512,
            attention_bias: false,
            tie_word_embeddings: false,
            shards: 1,
            seed: 0,
            inject_nan: None,
        }
    }

    /// A tiny checkpoint of architecture `arch` (hidden 64, 4 heads of 16, 2 KV heads,
    /// intermediate 96, 2 layers, vocabulary 211, 128 positions), with the tensors and
    /// `config.json` keys its model in candle-transformers and Hugging Face reads. Qwen2 has
    /// attention biases, Gemma 3 a tied head; the others an untied head.
    pub fn tiny_arch(arch: SynthArch, dtype: SynthDtype) -> Self {
        SynthConfig {
            arch,
            dtype,
            vocab_size: 211,
            hidden_size: 64,
            intermediate_size: 96,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: if arch == SynthArch::Bert { 4 } else { 2 },
            max_position_embeddings: 128,
            attention_bias: arch == SynthArch::Qwen2,
            tie_word_embeddings: arch == SynthArch::Gemma3,
            shards: 1,
            seed: 0,
            inject_nan: None,
        }
    }

    /// Picks Llama-like sizes (hidden, heads, intermediate, layers, vocabulary) so that
    /// the total tensor bytes are close to `bytes` (typically within 0.2% for targets of
    /// tens of megabytes and more; never above the target except for targets too small
    /// for a minimal model).
    ///
    /// The hidden size is the largest of a fixed ladder (64 … 8192) that still leaves
    /// room for about `hidden / 128` layers; the vocabulary is 32000 unless that would
    /// dominate a small budget; the intermediate size is then refitted (multiple of 8)
    /// to absorb the remainder. The result is untied, without attention biases, and its
    /// sizes are multiples of 8 (apply [`SynthConfig::with_odd_shapes`] for edge cases).
    pub fn for_target_bytes(dtype: SynthDtype, bytes: u64, shards: usize, seed: u64) -> Self {
        const HIDDEN: [usize; 14] = [
            64, 128, 256, 512, 768, 1024, 1536, 2048, 2560, 3072, 4096, 5120, 6144, 8192,
        ];
        let es = dtype.size_bytes() as u64;
        let target_params = bytes / es;
        let shape_for = |h: usize| -> SynthConfig {
            let vocab_budget =
                usize::try_from(target_params / (4 * h as u64)).unwrap_or(usize::MAX);
            let vocab = (vocab_budget / 64 * 64).clamp(256, 32000);
            let mut cfg = SynthConfig {
                arch: SynthArch::Llama,
                dtype,
                vocab_size: vocab,
                hidden_size: h,
                intermediate_size: (8 * h / 3).next_multiple_of(256),
                num_hidden_layers: (h / 128).max(2),
                num_attention_heads: 1,
                num_key_value_heads: 1,
                max_position_embeddings: 2048,
                attention_bias: false,
                tie_word_embeddings: false,
                shards,
                seed,
                inject_nan: None,
            };
            cfg.set_hidden_size(h);
            cfg
        };

        let mut cfg = shape_for(HIDDEN[0]);
        for &h in &HIDDEN {
            let candidate = shape_for(h);
            if candidate.total_tensor_bytes() <= bytes {
                cfg = candidate;
            }
        }

        cfg.fit_layers(bytes);
        cfg
    }

    /// Sets the model width to `h` (a multiple of 64), with the head layout of
    /// [`SynthConfig::for_target_bytes`]: heads of dimension 64 (128 from a width of 2048), and
    /// a quarter as many key/value heads where that divides them, else as many.
    pub fn set_hidden_size(&mut self, h: usize) {
        let head_dim = if h >= 2048 { 128 } else { 64 };
        let heads = (h / head_dim).max(1);
        self.hidden_size = h;
        self.num_attention_heads = heads;
        self.num_key_value_heads = if heads.is_multiple_of(4) {
            heads / 4
        } else {
            heads
        };
    }

    /// Refits the number of layers (with the MLP width of the moment), then the MLP width
    /// (a multiple of 8), so that the total tensor bytes are close to `bytes` and not above
    /// it, keeping the vocabulary, the width and the tying: the last step of
    /// [`SynthConfig::for_target_bytes`].
    pub fn fit_layers(&mut self, bytes: u64) {
        let es = self.dtype.size_bytes() as u64;
        // Number of layers with the current MLP width.
        self.num_hidden_layers = 0;
        let fixed = self.total_tensor_bytes();
        self.num_hidden_layers = 1;
        let per_layer = self.total_tensor_bytes() - fixed;
        let layers = (bytes.saturating_sub(fixed) / per_layer).max(1);
        self.num_hidden_layers = usize::try_from(layers).unwrap_or(usize::MAX);

        // Refit the MLP width to absorb the remainder.
        self.intermediate_size = 0;
        let base = self.total_tensor_bytes();
        let per_unit = 3 * self.hidden_size as u64 * es * layers;
        let inter = usize::try_from(bytes.saturating_sub(base) / per_unit).unwrap_or(usize::MAX);
        self.intermediate_size = (inter / 8 * 8).max(8);
    }

    /// Returns a copy whose dimensions are not multiples of 8 (for edge-case tests).
    ///
    /// Vocabulary, intermediate size and position count that are multiples of 8 are
    /// incremented by one. If the hidden size is a multiple of 8, the head dimension is
    /// made odd and, when the head count is a multiple of 8, two heads are removed; the
    /// KV head count becomes the greatest common divisor of the old KV count and the new
    /// head count. The result stays a valid configuration if the input was one.
    pub fn with_odd_shapes(mut self) -> Self {
        fn bump(x: usize) -> usize {
            if x.is_multiple_of(8) {
                x + 1
            } else {
                x
            }
        }
        if self.hidden_size.is_multiple_of(8) && self.num_attention_heads > 0 {
            let mut head_dim = self.hidden_size / self.num_attention_heads;
            if head_dim.is_multiple_of(2) {
                head_dim += 1;
            }
            let mut heads = self.num_attention_heads;
            if heads.is_multiple_of(8) {
                heads -= 2;
            }
            self.num_key_value_heads = gcd(heads, self.num_key_value_heads);
            self.num_attention_heads = heads;
            self.hidden_size = heads * head_dim;
        }
        self.vocab_size = bump(self.vocab_size);
        self.intermediate_size = bump(self.intermediate_size);
        self.max_position_embeddings = bump(self.max_position_embeddings);
        self
    }

    /// Dimension of one attention head (`hidden_size / num_attention_heads`, 0 if there are no heads).
    pub fn head_dim(&self) -> usize {
        self.hidden_size
            .checked_div(self.num_attention_heads)
            .unwrap_or(0)
    }

    /// Sum of the byte sizes of all tensors (the `total_size` of the index file).
    pub fn total_tensor_bytes(&self) -> u64 {
        self.tensor_specs()
            .iter()
            .map(|t| t.byte_len() as u64)
            .sum()
    }

    /// Checks that the configuration describes a consistent model that can be written.
    pub fn validate(&self) -> Result<(), SynthError> {
        let bad = |msg: String| Err(SynthError::InvalidConfig(msg));
        if self.vocab_size < 3 {
            return bad(format!(
                "vocab_size must be at least 3, got {}",
                self.vocab_size
            ));
        }
        for (name, v) in [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("max_position_embeddings", self.max_position_embeddings),
            ("shards", self.shards),
        ] {
            if v == 0 {
                return bad(format!("{name} must be positive"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return bad(format!(
                "num_attention_heads {} is not divisible by num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        let specs = self.tensor_specs();
        if self.shards > specs.len() {
            return bad(format!(
                "{} shards requested but the model has only {} tensors",
                self.shards,
                specs.len()
            ));
        }
        if let Some((name, index)) = &self.inject_nan {
            match specs.iter().find(|t| &t.name == name) {
                None => return bad(format!("inject_nan: no tensor named {name:?}")),
                Some(t) if t.dtype == Dtype::I64 => {
                    return bad(format!("inject_nan: tensor {name:?} is not a float tensor"))
                }
                Some(t) if *index >= t.numel() => {
                    return bad(format!(
                        "inject_nan: index {index} out of range for {name:?} ({} elements)",
                        t.numel()
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_roundtrip() {
        for d in SynthDtype::ALL {
            assert_eq!(d.to_string().parse::<SynthDtype>().unwrap(), d);
            assert_eq!(d.torch_name().parse::<SynthDtype>().unwrap(), d);
        }
        assert_eq!("BF16".parse::<SynthDtype>().unwrap(), SynthDtype::Bf16);
        assert!("f64".parse::<SynthDtype>().is_err());
    }

    #[test]
    fn presets_are_valid() {
        for d in SynthDtype::ALL {
            for a in SynthArch::ALL {
                SynthConfig::tiny_arch(a, d).validate().unwrap();
                assert_eq!(a.to_string().parse::<SynthArch>().unwrap(), a);
            }
            SynthConfig::tiny(d).validate().unwrap();
            SynthConfig::small(d).validate().unwrap();
            SynthConfig::small(d).with_odd_shapes().validate().unwrap();
        }
    }

    #[test]
    fn gcd_works() {
        assert_eq!(gcd(30, 8), 2);
        assert_eq!(gcd(7, 0), 7);
        assert_eq!(gcd(12, 18), 6);
    }
}

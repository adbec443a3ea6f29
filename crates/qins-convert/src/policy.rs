//! The selection policy: which tensors are encoded and which are kept raw (DESIGN rule 13).
//!
//! For each tensor, the first rule that applies decides:
//!
//! 1. a dtype that cannot be encoded (anything but F32, F16, BF16) → raw;
//! 2. no elements → raw (a table would cost 1 KiB for nothing);
//! 3. the name matches an `--exclude` glob → raw (exclude wins over everything below);
//! 4. the name matches an `--include` glob → encoded (whatever its rank or name);
//! 5. fewer than two dimensions (norms, biases, scalars) → raw;
//! 6. a tensor of a sentence-transformers module's weights (`2_Dense/linear.weight`, spec
//!    §18.1) → raw, unless `--encode-embeddings`;
//! 7. a token embedding or output head ([`EMBEDDING_PATTERNS`]) → raw, unless
//!    `--encode-embeddings`;
//! 8. otherwise → encoded.
//!
//! So: the default policy, then `--encode-embeddings`, then includes force-encode (only
//! encodable, non-empty tensors), then excludes force raw. Globs match the whole tensor name;
//! `*` matches any run of characters, dots and slashes included (`*.mlp.*`,
//! `model.layers.1?.*`, `2_Dense/*`).
//!
//! Rule 6 treats a module's matrices as the head they are: a `Dense` module projects the
//! pooled sentence embedding, once per sentence, so its error goes straight into every
//! embedding with no later layer to absorb it, and it is a small share of the model (a
//! 768 × 768 projection is 0.5% of a 110 M-parameter encoder), so encoding it would save
//! almost nothing. The same two reasons keep embeddings and heads raw (DESIGN rule 13);
//! `--encode-embeddings` (or `--include '2_Dense/*.weight'`) encodes them too.

use std::fmt;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use qins_format::{Codec, Dtype};
use serde::Serialize;

use crate::ConvertError;

/// Names of token embeddings and output heads, kept raw by default. Globs over the whole name.
pub const EMBEDDING_PATTERNS: &[&str] = &[
    // token embeddings
    "*embed_tokens*", // Llama, Mistral, Qwen, Gemma, OPT, T5 (encoder/decoder.embed_tokens)
    "*tok_embeddings*", // Meta's original Llama checkpoints
    "*word_embeddings*", // BERT, RoBERTa, MiniLM, BLOOM
    "*embed_in*",     // GPT-NeoX, Pythia
    "wte.*",          // GPT-2 without prefix
    "*.wte.*",        // GPT-2, GPT-J (transformer.wte.weight)
    "shared.weight",  // T5's shared embedding
    // output heads
    "lm_head*",      // most causal LMs
    "*.lm_head*",    // prefixed heads (language_model.lm_head.weight)
    "*embed_out*",   // GPT-NeoX, Pythia
    "output.weight", // Meta's original Llama checkpoints
];

/// The options that make a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyOptions {
    /// The codec of encoded tensors: [`Codec::LloydRows`] by default (see the crate
    /// documentation for the others).
    pub codec: Codec,
    /// Encode token embeddings and output heads too.
    pub encode_embeddings: bool,
    /// Globs of tensors to encode whatever their rank or name (encodable dtypes only).
    pub include: Vec<String>,
    /// Globs of tensors to keep raw; wins over everything.
    pub exclude: Vec<String>,
}

impl Default for PolicyOptions {
    fn default() -> Self {
        PolicyOptions {
            codec: Codec::LloydRows,
            encode_embeddings: false,
            include: Vec::new(),
            exclude: Vec::new(),
        }
    }
}

/// Why a tensor is encoded.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EncodeReason {
    /// A floating-point tensor of rank ≥ 2 that is not an embedding or head.
    Matrix,
    /// An embedding or head, encoded because of `--encode-embeddings`.
    Embedding,
    /// Matched an `--include` glob.
    Included {
        /// The first glob that matched.
        glob: String,
    },
    /// A matrix of a sentence-transformers module's weights, encoded because of
    /// `--encode-embeddings`.
    Module {
        /// The module's directory (`2_Dense`).
        module: String,
    },
}

/// Why a tensor is kept raw.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RawReason {
    /// Its dtype cannot be encoded (spec §13.2).
    Dtype {
        /// The dtype.
        dtype: String,
    },
    /// It has no elements.
    Empty,
    /// Matched an `--exclude` glob.
    Excluded {
        /// The first glob that matched.
        glob: String,
    },
    /// Rank 0 or 1: norms, biases, scalars.
    LowRank,
    /// A token embedding or output head (see [`EMBEDDING_PATTERNS`]).
    Embedding,
    /// A matrix of a sentence-transformers module's weights (applied to the pooled output,
    /// like a head).
    Module {
        /// The module's directory (`2_Dense`).
        module: String,
    },
}

impl fmt::Display for EncodeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeReason::Matrix => f.write_str("floating-point, 2+ dimensions"),
            EncodeReason::Embedding => f.write_str("embedding or head (--encode-embeddings)"),
            EncodeReason::Included { glob } => write!(f, "--include {glob}"),
            EncodeReason::Module { module } => {
                write!(f, "weights of module {module} (--encode-embeddings)")
            }
        }
    }
}

impl fmt::Display for RawReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawReason::Dtype { dtype } => write!(f, "dtype {dtype} cannot be encoded"),
            RawReason::Empty => f.write_str("no elements"),
            RawReason::Excluded { glob } => write!(f, "--exclude {glob}"),
            RawReason::LowRank => f.write_str("fewer than 2 dimensions (norms, biases)"),
            RawReason::Embedding => {
                f.write_str("token embedding or output head (--encode-embeddings encodes it)")
            }
            RawReason::Module { module } => write!(
                f,
                "weights of module {module}, applied to the pooled output like a head \
                 (--encode-embeddings encodes them)"
            ),
        }
    }
}

/// What the policy decided for one tensor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Encode with the policy's codec.
    Encode(EncodeReason),
    /// Keep the bytes as they are.
    Raw(RawReason),
}

impl Decision {
    /// Whether the tensor is encoded.
    pub fn is_encoded(&self) -> bool {
        matches!(self, Decision::Encode(_))
    }
}

/// A compiled selection policy.
#[derive(Clone, Debug)]
pub struct Policy {
    opts: PolicyOptions,
    include: GlobSet,
    exclude: GlobSet,
    embeddings: GlobSet,
    /// The sentence-transformers modules whose weights are converted, sorted.
    modules: Vec<String>,
}

fn compile(globs: &[impl AsRef<str>]) -> Result<GlobSet, ConvertError> {
    let mut b = GlobSetBuilder::new();
    for g in globs {
        let g = g.as_ref();
        let glob = GlobBuilder::new(g)
            .literal_separator(false)
            .build()
            .map_err(|e| ConvertError::BadGlob {
                glob: g.to_string(),
                cause: e.kind().to_string(),
            })?;
        b.add(glob);
    }
    b.build().map_err(|e| ConvertError::BadGlob {
        glob: globs
            .iter()
            .map(|g| g.as_ref())
            .collect::<Vec<_>>()
            .join(" "),
        cause: e.to_string(),
    })
}

/// What `qins.policy` records (spec §7): enough to apply the same policy again. `codec` is the
/// registry name (`log` for the CLI's `seed-log`); `row_scales` says whether encoded tensors
/// have row scales (true for `lloyd-rows`); `weights`, `module_rule` and `assets` say which
/// files were read, and `modules` which sentence-transformers modules' weights were carried
/// (as tensors named `MODULE/NAME`, spec §18.1).
#[derive(Serialize)]
struct PolicyRecord<'a> {
    codec: &'a str,
    row_scales: bool,
    encode_embeddings: bool,
    include: &'a [String],
    exclude: &'a [String],
    embedding_patterns: &'a [&'a str],
    rules: &'a str,
    weights: &'a str,
    module_rule: &'a str,
    modules: &'a [String],
    assets: &'a str,
}

/// The rule order, as recorded in `qins.policy`.
pub const RULES: &str =
    "first match: dtype not F32/F16/BF16 -> raw; no elements -> raw; exclude -> raw; \
     include -> encode; rank < 2 -> raw; tensor of a module in modules and not encode_embeddings -> raw; \
     embedding_patterns and not encode_embeddings -> raw; else encode";

impl Policy {
    /// Compiles the globs of `opts`.
    pub fn new(opts: PolicyOptions) -> Result<Policy, ConvertError> {
        Ok(Policy {
            include: compile(&opts.include)?,
            exclude: compile(&opts.exclude)?,
            embeddings: compile(EMBEDDING_PATTERNS)?,
            modules: Vec::new(),
            opts,
        })
    }

    /// The policy for a source whose sentence-transformers modules `modules` (their
    /// directories) have weights: their tensors, named `MODULE/NAME`, fall under rule 6.
    pub fn with_modules(mut self, modules: &[&str]) -> Policy {
        self.modules = modules.iter().map(|m| m.to_string()).collect();
        self.modules.sort();
        self.modules.dedup();
        self
    }

    /// The module (of [`with_modules`](Self::with_modules)) whose weights tensor `name` is
    /// in: the longest whose directory and a `/` start the name.
    fn module_of(&self, name: &str) -> Option<&str> {
        self.modules
            .iter()
            .filter(|m| {
                name.strip_prefix(m.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
            })
            .max_by_key(|m| m.len())
            .map(String::as_str)
    }

    /// The options the policy was made from.
    pub fn options(&self) -> &PolicyOptions {
        &self.opts
    }

    /// The codec of encoded tensors.
    pub fn codec(&self) -> Codec {
        self.opts.codec
    }

    /// Decides for one tensor (see the module documentation for the order).
    pub fn decide(&self, name: &str, dtype: Dtype, shape: &[u64]) -> Decision {
        if !dtype.is_encodable() {
            return Decision::Raw(RawReason::Dtype {
                dtype: dtype.name().to_string(),
            });
        }
        if shape.contains(&0) {
            return Decision::Raw(RawReason::Empty);
        }
        if let Some(&i) = self.exclude.matches(name).first() {
            return Decision::Raw(RawReason::Excluded {
                glob: self.opts.exclude[i].clone(),
            });
        }
        if let Some(&i) = self.include.matches(name).first() {
            return Decision::Encode(EncodeReason::Included {
                glob: self.opts.include[i].clone(),
            });
        }
        if shape.len() < 2 {
            return Decision::Raw(RawReason::LowRank);
        }
        if let Some(module) = self.module_of(name) {
            let module = module.to_string();
            return if self.opts.encode_embeddings {
                Decision::Encode(EncodeReason::Module { module })
            } else {
                Decision::Raw(RawReason::Module { module })
            };
        }
        if self.embeddings.is_match(name) {
            return if self.opts.encode_embeddings {
                Decision::Encode(EncodeReason::Embedding)
            } else {
                Decision::Raw(RawReason::Embedding)
            };
        }
        Decision::Encode(EncodeReason::Matrix)
    }

    /// The policy as the JSON document stored under `qins.policy`; deterministic.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&PolicyRecord {
            codec: self.opts.codec.name(),
            row_scales: self.opts.codec.uses_row_scales(),
            encode_embeddings: self.opts.encode_embeddings,
            include: &self.opts.include,
            exclude: &self.opts.exclude,
            embedding_patterns: EMBEDDING_PATTERNS,
            rules: RULES,
            weights: qins_source::WEIGHT_RULE,
            module_rule: qins_source::MODULE_RULE,
            modules: &self.modules,
            assets: qins_source::ASSET_RULE,
        })
        .expect("a struct of strings and bools serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(f: impl FnOnce(&mut PolicyOptions)) -> Policy {
        let mut o = PolicyOptions::default();
        f(&mut o);
        Policy::new(o).unwrap()
    }

    const M: &[u64] = &[4, 4];

    #[test]
    fn default_policy() {
        let p = policy(|_| {});
        let enc = |n: &str, d, s: &[u64]| p.decide(n, d, s).is_encoded();
        assert!(enc(
            "model.layers.0.self_attn.q_proj.weight",
            Dtype::BF16,
            M
        ));
        assert!(enc(
            "encoder.layer.0.attention.self.query.weight",
            Dtype::F32,
            M
        ));
        assert!(enc("x", Dtype::F16, &[2, 3, 4]));
        assert_eq!(
            p.decide("model.norm.weight", Dtype::F32, &[4]),
            Decision::Raw(RawReason::LowRank)
        );
        assert_eq!(
            p.decide("scalar", Dtype::F32, &[]),
            Decision::Raw(RawReason::LowRank)
        );
        assert_eq!(
            p.decide("pos", Dtype::I64, M),
            Decision::Raw(RawReason::Dtype {
                dtype: "I64".into()
            })
        );
        assert_eq!(
            p.decide("w", Dtype::F64, M),
            Decision::Raw(RawReason::Dtype {
                dtype: "F64".into()
            })
        );
        assert_eq!(
            p.decide("w", Dtype::F32, &[0, 4]),
            Decision::Raw(RawReason::Empty)
        );
    }

    #[test]
    fn embeddings_and_heads() {
        let p = policy(|_| {});
        for name in [
            "model.embed_tokens.weight",
            "tok_embeddings.weight",
            "embeddings.word_embeddings.weight",
            "gpt_neox.embed_in.weight",
            "wte.weight",
            "transformer.wte.weight",
            "shared.weight",
            "lm_head.weight",
            "language_model.lm_head.weight",
            "embed_out.weight",
            "output.weight",
        ] {
            assert_eq!(
                p.decide(name, Dtype::F32, M),
                Decision::Raw(RawReason::Embedding),
                "{name}"
            );
        }
        for name in [
            "embeddings.position_embeddings.weight",
            "model.layers.0.attn.output.weight",
            "transformer.h.0.attn.c_attn.weight",
        ] {
            assert!(p.decide(name, Dtype::F32, M).is_encoded(), "{name}");
        }
        let e = policy(|o| o.encode_embeddings = true);
        assert_eq!(
            e.decide("lm_head.weight", Dtype::BF16, M),
            Decision::Encode(EncodeReason::Embedding)
        );
        // 1-D stays raw even with --encode-embeddings.
        assert_eq!(
            e.decide("lm_head.bias", Dtype::BF16, &[4]),
            Decision::Raw(RawReason::LowRank)
        );
    }

    #[test]
    fn include_then_exclude_and_exclude_wins() {
        let p = policy(|o| {
            o.include = vec!["*.norm.*".into(), "lm_head.*".into(), "pos".into()];
            o.exclude = vec!["*.layers.1.*".into(), "lm_head.*".into()];
        });
        assert_eq!(
            p.decide("model.norm.weight", Dtype::F32, &[4]),
            Decision::Encode(EncodeReason::Included {
                glob: "*.norm.*".into()
            })
        );
        assert_eq!(
            p.decide("lm_head.weight", Dtype::F32, M),
            Decision::Raw(RawReason::Excluded {
                glob: "lm_head.*".into()
            })
        );
        assert_eq!(
            p.decide("model.layers.1.mlp.up_proj.weight", Dtype::F32, M),
            Decision::Raw(RawReason::Excluded {
                glob: "*.layers.1.*".into()
            })
        );
        assert!(p
            .decide("model.layers.10.mlp.up_proj.weight", Dtype::F32, M)
            .is_encoded());
        // Include cannot encode what cannot be encoded.
        assert_eq!(
            p.decide("pos", Dtype::I64, M),
            Decision::Raw(RawReason::Dtype {
                dtype: "I64".into()
            })
        );
    }

    #[test]
    fn module_weights_are_raw_like_heads_unless_encode_embeddings() {
        let p = policy(|_| {}).with_modules(&["2_Dense", "2_Dense/inner", "2_Dense"]);
        assert_eq!(
            p.decide("2_Dense/linear.weight", Dtype::F32, M),
            Decision::Raw(RawReason::Module {
                module: "2_Dense".into()
            })
        );
        // The longest module wins; a 1-D bias is raw by rank first.
        assert_eq!(
            p.decide("2_Dense/inner/w", Dtype::F32, M),
            Decision::Raw(RawReason::Module {
                module: "2_Dense/inner".into()
            })
        );
        assert_eq!(
            p.decide("2_Dense/linear.bias", Dtype::F32, &[4]),
            Decision::Raw(RawReason::LowRank)
        );
        // Only names under a module's directory and a slash.
        assert!(p.decide("2_Dense.weight", Dtype::F32, M).is_encoded());
        assert!(p.decide("2_Densex/w", Dtype::F32, M).is_encoded());
        assert!(policy(|_| {})
            .decide("2_Dense/linear.weight", Dtype::F32, M)
            .is_encoded());

        let e = policy(|o| o.encode_embeddings = true).with_modules(&["2_Dense"]);
        assert_eq!(
            e.decide("2_Dense/linear.weight", Dtype::BF16, M),
            Decision::Encode(EncodeReason::Module {
                module: "2_Dense".into()
            })
        );
        let i = policy(|o| o.include = vec!["2_Dense/*.weight".into()]).with_modules(&["2_Dense"]);
        assert!(i
            .decide("2_Dense/linear.weight", Dtype::F32, M)
            .is_encoded());
        let x = policy(|o| {
            o.encode_embeddings = true;
            o.exclude = vec!["2_Dense/*".into()];
        })
        .with_modules(&["2_Dense"]);
        assert!(!x
            .decide("2_Dense/linear.weight", Dtype::F32, M)
            .is_encoded());

        let j: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(
            j["modules"],
            serde_json::json!(["2_Dense", "2_Dense/inner"])
        );
        assert!(j["module_rule"].as_str().unwrap().contains("modules.json"));
        assert!(j["rules"]
            .as_str()
            .unwrap()
            .contains("of a module in modules"));
    }

    #[test]
    fn bad_glob_is_an_error() {
        let err = Policy::new(PolicyOptions {
            include: vec!["a[".into()],
            ..PolicyOptions::default()
        })
        .unwrap_err();
        assert!(
            matches!(err, ConvertError::BadGlob { ref glob, .. } if glob == "a["),
            "{err}"
        );
        assert!(err.to_string().contains("a["));
    }

    #[test]
    fn policy_json_is_deterministic_and_complete() {
        let p = policy(|o| {
            o.codec = Codec::Linear;
            o.exclude = vec!["x*".into()];
        });
        let j: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(j["codec"], "linear");
        assert_eq!(j["row_scales"], false);
        assert_eq!(j["exclude"][0], "x*");
        assert_eq!(j["encode_embeddings"], false);
        assert_eq!(
            j["embedding_patterns"].as_array().unwrap().len(),
            EMBEDDING_PATTERNS.len()
        );
        assert!(j["assets"].as_str().unwrap().contains("64 MiB"));
        assert!(j["weights"].as_str().unwrap().contains("model.safetensors"));
        assert_eq!(j["modules"], serde_json::json!([]));
        assert_eq!(p.to_json(), p.clone().to_json());
    }

    #[test]
    fn default_codec_is_lloyd_rows_with_row_scales() {
        let p = policy(|_| {});
        assert_eq!(p.codec(), Codec::LloydRows);
        let j: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(j["codec"], "lloyd-rows");
        assert_eq!(j["row_scales"], true);
        for codec in [Codec::Log, Codec::Lloyd] {
            let j: serde_json::Value =
                serde_json::from_str(&policy(|o| o.codec = codec).to_json()).unwrap();
            assert_eq!(j["codec"], codec.name());
            assert_eq!(j["row_scales"], false);
        }
    }
}

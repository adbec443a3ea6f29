//! `qins-run`: runs a model from its `.qins` file (or its Hugging Face directory, through the
//! same code) with candle, and compares the two at the level of the model's outputs.
//!
//! - [`Model::open`] reads `config.json`, picks the architecture ([`Arch`], refusing any other
//!   up front), loads the weights through [`qins_candle`], and builds the tokenizer and chat
//!   template from the model's own files.
//! - [`generate()`] samples with candle-transformers' `LogitsProcessor` and streams the text.
//! - [`Encoder::embed`] gives sentence embeddings (Pooling, Dense, Normalize modules).
//! - [`compare()`] is the fidelity report: KL divergence, top-1 agreement, perplexity and
//!   greedy agreement for causal LMs; embedding cosines and nearest neighbours for encoders.

#![forbid(unsafe_code)]

pub mod arch;
pub mod builtin;
pub mod chat;
pub mod compare;
pub mod embed;
mod error;
pub mod generate;
pub mod model;

pub use arch::{Arch, CausalLm, SUPPORTED};
pub use chat::{ChatTemplate, Message};
pub use compare::{compare, CompareOptions, Report};
pub use embed::Encoder;
pub use error::RunError;
pub use generate::{generate, Generation, Sampling, TokenStream};
pub use model::{Model, Net};

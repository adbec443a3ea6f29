//! Loads the weights of a `.qins` file into [candle], so that the models of
//! `candle-transformers` load from it by tensor name exactly as they do from safetensors, and
//! the same for a Hugging Face model directory, so that both load through one code path.
//!
//! This crate is the example of how to use QINS in a Rust inference stack. It does four things,
//! each a few lines over [`qins_read`]:
//!
//! 1. **Map and parse** the model ([`qins_read::open_model`], [`qins_read::MappedModel::parse`]):
//!    one `.qins` file, or a set of shards (spec §21) given by its index or any shard, every
//!    shard checked against the index. Headers are validated in time proportional to the
//!    header, never to the data. Then [`qins_read::Model::verify_frame`] checks the bytes
//!    outside the tensors (the table of LUTs, the assets, the padding), a few kilobytes.
//! 2. **Serve tensors by name** through candle-nn's [`SimpleBackend`] trait
//!    ([`Loader::var_builder`] gives the [`VarBuilder`] a model's constructor takes). When a model
//!    asks for a tensor, and only then, the tensor is looked up, checked against the requested
//!    shape, its own sections verified ([`qins_read::TensorView::verify`], spec §14: a damaged
//!    tensor is never used), and decoded straight from the mapped file into a vector of the
//!    requested dtype (f32, bf16 or f16) that becomes the candle tensor's storage
//!    (`Tensor::from_vec`): encoded tensors by the decode rule `±LUT[code]` (× row scale),
//!    raw tensors by a dtype conversion. Large tensors are decoded by rayon in parallel chunks.
//!    There is no export, no temporary file, and no second copy of the file: once a tensor is
//!    decoded, the process lets go of its mapped pages ([`qins_read::MappedModel::release`]), so
//!    that the resident memory is the model's tensors, not the file plus the tensors.
//! 3. **Hand over the model's small files** ([`TensorSource::asset`]): `config.json`,
//!    `tokenizer.json` and the like travel inside a `.qins` as assets.
//! 4. **Report failures as values**: a missing tensor, a damaged one, a shape mismatch are
//!    [`LoadError`]s naming the file and the tensor. candle's loaders see a string; the typed
//!    error is kept by the [`Loader`] and returned by [`Loader::load`].
//!
//! ```no_run
//! use candle_core::{DType, Device};
//! use candle_transformers::models::llama;
//! use qins_candle::{Checkpoint, Loader};
//!
//! // Or a set's index (model.qins.index.json), any of its shards, or a Hugging Face directory.
//! let ckpt = Checkpoint::open("model.qins".as_ref())?;
//! let source = ckpt.source()?; // parses the header, checks the frame
//! let config: llama::LlamaConfig =
//!     serde_json::from_slice(&source.asset("config.json")?.expect("config.json"))?;
//! let config = config.into_config(false);
//! let loader = Loader::new(source.as_ref()).tied_head("lm_head.weight", "model.embed_tokens.weight");
//! let model = loader.load(DType::F32, &Device::Cpu, |vb| llama::Llama::load(vb, &config))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The same lines run a model directory: [`Checkpoint::open`] takes either, and both sources
//! serve tensors through the same conversion code, so a model run from its `.qins` and from its
//! source directory differ only in the weights' values.
//!
//! [candle]: https://github.com/huggingface/candle
//! [`SimpleBackend`]: candle_nn::var_builder::SimpleBackend
//! [`VarBuilder`]: candle_nn::VarBuilder

#![forbid(unsafe_code)]

mod convert;
mod error;
mod loader;
mod source;

pub use error::LoadError;
pub use loader::{LoadStats, Loader};
pub use source::{Checkpoint, DirSource, QinsSource, TensorSource};

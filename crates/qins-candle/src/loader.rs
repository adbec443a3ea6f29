//! The candle backend: a [`SimpleBackend`] over a [`TensorSource`].

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use crate::{LoadError, TensorSource};

/// What a load did, for reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Tensors served.
    pub tensors: usize,
    /// Elements served.
    pub elements: u64,
    /// Tensors served in place of a missing one (a tied output head).
    pub aliased: Vec<String>,
}

/// Loads models from a [`TensorSource`] into candle.
///
/// [`Loader::var_builder`] is the [`VarBuilder`] that candle-transformers' constructors take;
/// [`Loader::load`] runs a constructor with it and turns a failure into the [`LoadError`] that
/// caused it.
pub struct Loader<'a> {
    shared: Arc<Shared<'a>>,
    /// `(name, target)`: serve `target` when `name` is asked for and absent.
    aliases: Arc<[(String, String)]>,
}

struct Shared<'a> {
    source: &'a dyn TensorSource,
    /// The first error served to candle, typed.
    failure: Mutex<Option<LoadError>>,
    /// Tensors that take part in an alias, by `(name read, dtype)`: served once, shared.
    shared_tensors: Mutex<Vec<(String, DType, Tensor)>>,
    stats: Mutex<LoadStats>,
}

impl<'a> Loader<'a> {
    /// A loader serving the tensors of `source`.
    pub fn new(source: &'a dyn TensorSource) -> Loader<'a> {
        Loader {
            shared: Arc::new(Shared {
                source,
                failure: Mutex::new(None),
                shared_tensors: Mutex::new(Vec::new()),
                stats: Mutex::new(LoadStats::default()),
            }),
            aliases: Arc::new([]),
        }
    }

    /// Serves tensor `embedding` when `head` is asked for and the source has no `head`: the
    /// output head of a model whose head is tied to its token embeddings, stored once. Models
    /// whose config says the head is tied never ask for it; this covers those that always do.
    pub fn tied_head(mut self, head: &str, embedding: &str) -> Loader<'a> {
        let mut aliases = self.aliases.to_vec();
        aliases.push((head.to_string(), embedding.to_string()));
        self.aliases = aliases.into();
        self
    }

    /// The source.
    pub fn source(&self) -> &'a dyn TensorSource {
        self.shared.source
    }

    /// A [`VarBuilder`] serving the source's tensors in `dtype` on `device`.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'a> {
        let backend: Box<dyn SimpleBackend + 'a> = Box::new(Backend {
            shared: self.shared.clone(),
            aliases: self.aliases.clone(),
        });
        VarBuilder::from_backend(backend, dtype, device.clone())
    }

    /// Builds a model: runs `build` with a [`VarBuilder`] over the source and returns what it
    /// built, with the time it took. If `build` fails, the error is the [`LoadError`] of the
    /// first tensor that could not be served (missing, damaged, of another shape), else the
    /// constructor's own error. A panicking constructor (candle-transformers' llama unwraps
    /// inside its loader) is caught and reported the same way, without the panic message.
    pub fn load<T>(
        &self,
        dtype: DType,
        device: &Device,
        build: impl FnOnce(VarBuilder<'a>) -> candle_core::Result<T>,
    ) -> Result<(T, Duration), LoadError> {
        let start = Instant::now();
        let vb = self.var_builder(dtype, device);
        silence_panics_in_loads();
        LOADING.with(|l| l.set(l.get() + 1));
        let built = panic::catch_unwind(AssertUnwindSafe(|| build(vb)));
        LOADING.with(|l| l.set(l.get() - 1));
        let failure = self
            .shared
            .failure
            .lock()
            .map(|mut f| f.take())
            .ok()
            .flatten();
        let file = self.shared.source.path().into();
        match built {
            Ok(Ok(model)) => Ok((model, start.elapsed())),
            _ if failure.is_some() => Err(failure.expect("checked")),
            Ok(Err(e)) => Err(LoadError::Model {
                file,
                message: e.to_string(),
            }),
            Err(payload) => Err(LoadError::Model {
                file,
                message: panic_message(payload.as_ref()),
            }),
        }
    }

    /// What was served so far.
    pub fn stats(&self) -> LoadStats {
        self.shared
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

thread_local! {
    /// Nesting depth of [`Loader::load`] on this thread: its panics are caught and reported.
    static LOADING: Cell<u32> = const { Cell::new(0) };
}

/// Installs, once, a panic hook that stays silent for panics inside [`Loader::load`] (they
/// become errors) and defers to the previous hook for every other panic.
fn silence_panics_in_loads() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if LOADING.with(|l| l.get()) == 0 {
                previous(info);
            }
        }));
    });
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "the model's constructor panicked".to_string()
    }
}

/// The [`SimpleBackend`] handed to candle.
struct Backend<'a> {
    shared: Arc<Shared<'a>>,
    aliases: Arc<[(String, String)]>,
}

impl Backend<'_> {
    /// The name to read for `name`: itself, or the target of its alias if it is absent.
    fn resolve<'n>(&'n self, name: &'n str) -> &'n str {
        if self.shared.source.shape(name).is_some() {
            return name;
        }
        self.aliases
            .iter()
            .find(|(from, to)| from == name && self.shared.source.shape(to).is_some())
            .map_or(name, |(_, to)| to.as_str())
    }

    fn serve(
        &self,
        name: &str,
        shape: Option<&Shape>,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let source = self.shared.source;
        let read = self.resolve(name);
        let result = (|| {
            let stored = source.shape(read).ok_or_else(|| LoadError::MissingTensor {
                tensor: name.to_string(),
                file: source.path().into(),
            })?;
            if let Some(shape) = shape {
                if stored.len() != shape.rank()
                    || stored
                        .iter()
                        .zip(shape.dims())
                        .any(|(&s, &d)| s as usize != d)
                {
                    return Err(LoadError::ShapeMismatch {
                        tensor: name.to_string(),
                        file: source.path().into(),
                        expected: shape.dims().to_vec(),
                        stored,
                    });
                }
            }
            let aliased = self
                .aliases
                .iter()
                .any(|(from, to)| from == name || to == name);
            if !aliased {
                return source.load(read, dtype, device);
            }
            // A tied head and its embedding table: decoded once, one storage for both names.
            let mut cache = self
                .shared
                .shared_tensors
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some((_, _, t)) = cache.iter().find(|(n, d, _)| n == read && *d == dtype) {
                return Ok(t.clone());
            }
            let t = source.load(read, dtype, device)?;
            cache.push((read.to_string(), dtype, t.clone()));
            Ok(t)
        })();
        match result {
            Ok(t) => {
                if let Ok(mut s) = self.shared.stats.lock() {
                    s.tensors += 1;
                    s.elements += t.elem_count() as u64;
                    if read != name {
                        s.aliased.push(name.to_string());
                    }
                }
                Ok(t)
            }
            Err(e) => {
                let message = e.to_string();
                if let Ok(mut f) = self.shared.failure.lock() {
                    f.get_or_insert(e);
                }
                Err(candle_core::Error::Msg(message))
            }
        }
    }
}

impl SimpleBackend for Backend<'_> {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.serve(name, Some(&s), dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.serve(name, None, dtype, dev)
    }

    /// Whether the source stores `name` (an alias does not count: a model that asks, such as
    /// qwen2's, then ties its head to the embedding table itself).
    fn contains_tensor(&self, name: &str) -> bool {
        self.shared.source.shape(name).is_some()
    }
}

//! The [`Plan`]: every tensor, asset and the metadata, declared before the first byte of data,
//! so that the whole layout is known up front (§9.2).

use std::collections::BTreeMap;

use qins_format::{Dtype, Storage, DEFAULT_ALIGNMENT};

/// One tensor of a [`Plan`].
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    /// Unique name (§4).
    pub name: String,
    /// Source dtype; must be encodable (F16, BF16, F32) when `storage` is encoded.
    pub dtype: Dtype,
    /// Dimensions, outermost first; at most 8.
    pub shape: Vec<u64>,
    /// Raw or encoded.
    pub storage: Storage,
}

impl TensorSpec {
    /// A tensor spec.
    pub fn new(name: impl Into<String>, dtype: Dtype, shape: Vec<u64>, storage: Storage) -> Self {
        TensorSpec {
            name: name.into(),
            dtype,
            shape,
            storage,
        }
    }
}

/// A named asset: one of the model directory's small files (§5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asset {
    /// Relative path with `/` separators.
    pub name: String,
    /// The file's bytes.
    pub data: Vec<u8>,
}

/// Everything the writer must know before the first byte of data: the layout follows from it.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Tensors, in the order they will be written and listed.
    pub tensors: Vec<TensorSpec>,
    /// Assets, in file order.
    pub assets: Vec<Asset>,
    /// Metadata (§7); written with keys in ascending order.
    pub metadata: BTreeMap<String, String>,
    /// Section alignment (§3); [`DEFAULT_ALIGNMENT`] unless set.
    pub alignment: u32,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            tensors: Vec::new(),
            assets: Vec::new(),
            metadata: BTreeMap::new(),
            alignment: DEFAULT_ALIGNMENT,
        }
    }
}

impl Plan {
    /// An empty plan with the default alignment.
    pub fn new() -> Self {
        Plan::default()
    }
}

//! Opening a `.qins`: the one place where the extension turns a path into a validated file.
//!
//! A [`Source`] owns the mapping and the parsed view borrowed from it (a self-referential pair,
//! kept by `self_cell`), and remembers which tensors have been verified, so that each tensor's
//! checksums are read once however many times it is read. A reader of sharded sets (an index
//! naming several files) would open each shard here.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use qins_read::{MappedFile, Qins, ReadError, TensorView};

self_cell::self_cell! {
    /// A mapped file and the validated view of it.
    struct Parsed {
        owner: MappedFile,
        #[covariant]
        dependent: Qins,
    }
}

/// An open, validated `.qins` file.
pub struct Source {
    parsed: Parsed,
    /// Whether to check checksums before data is handed out.
    verify: bool,
    /// Tensor names to their positions in file order.
    index: HashMap<String, usize>,
    /// Per tensor, in file order: its sections have been verified.
    verified: Vec<AtomicBool>,
}

impl Source {
    /// Maps and parses `path` (spec §17). With `verify`, also checks everything outside the
    /// tensors (§14: the LUT table's and the assets' checksums, the padding), which costs time
    /// in proportion to the assets, not the weights; each tensor is verified when first read.
    pub fn open(path: &Path, verify: bool) -> Result<Source, ReadError> {
        let parsed = Parsed::try_new(qins_read::open(path)?, |m| m.parse())?;
        if verify {
            parsed.borrow_dependent().verify_frame()?;
        }
        let qins = parsed.borrow_dependent();
        let index = qins
            .tensors()
            .enumerate()
            .map(|(i, t)| (t.name().to_string(), i))
            .collect();
        let verified = (0..qins.tensor_count())
            .map(|_| AtomicBool::new(false))
            .collect();
        Ok(Source {
            parsed,
            verify,
            index,
            verified,
        })
    }

    /// The validated file.
    pub fn qins(&self) -> &Qins<'_> {
        self.parsed.borrow_dependent()
    }

    /// Whether data is verified before it is handed out.
    pub fn verifies(&self) -> bool {
        self.verify
    }

    /// The tensor called `name` and its position in file order.
    pub fn tensor(&self, name: &str) -> Option<(usize, TensorView<'_>)> {
        let &index = self.index.get(name)?;
        Some((index, self.qins().tensor_at(index)))
    }

    /// Whether tensor `index` has been verified.
    pub fn is_verified(&self, index: usize) -> bool {
        self.verified[index].load(Ordering::Acquire)
    }

    /// Records that tensor `index` has been verified.
    pub fn set_verified(&self, index: usize) {
        self.verified[index].store(true, Ordering::Release);
    }
}

//! Opening a model: the one place where the extension turns a path into validated files.
//!
//! A path names a single `.qins` file, a sharded set's index, or any shard of a set (§21);
//! `qins_read::open_model` opens and validates all the files, and a [`Source`] reads them as
//! one model. It owns the mappings and the parsed view borrowed from them (a self-referential
//! pair, kept by `self_cell`), and remembers which tensors have been verified, so that each
//! tensor's checksums are read once however many times it is read.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use qins_read::{MappedModel, Model, Qins, ReadError, TensorView};

self_cell::self_cell! {
    /// The mapped files and the validated model they hold.
    struct Parsed {
        owner: MappedModel,
        #[covariant]
        dependent: Model,
    }
}

/// An open, validated model: one file or a whole set.
pub struct Source {
    parsed: Parsed,
    /// Whether to check checksums before data is handed out.
    verify: bool,
    /// Tensor names to their positions in the model's order.
    index: HashMap<String, usize>,
    /// Per tensor, in the model's order: the file that holds it and its position there.
    place: Vec<(usize, usize)>,
    /// Per tensor, in the model's order: its sections have been verified.
    verified: Vec<AtomicBool>,
    /// Per file: the file opened again for copy-on-write mappings of its raw tensors
    /// ([`Source::reopened`]), once asked for; `None` inside if it is not the file mapped.
    reopened: Vec<OnceLock<Option<File>>>,
}

impl Source {
    /// Opens the model at `path` (a file, a set's index or any shard), maps and validates
    /// every file (§17, §21.5). With `verify`, also checks everything outside the tensors
    /// (§14: the LUT tables' and the assets' checksums, the padding) in every file, which costs
    /// time in proportion to the assets, not the weights; each tensor is verified when first
    /// read.
    pub fn open(path: &Path, verify: bool) -> Result<Source, ReadError> {
        let parsed = Parsed::try_new(qins_read::open_model(path)?, |m| m.parse())?;
        let model = parsed.borrow_dependent();
        if verify {
            model.verify_frame()?;
        }
        let place: Vec<(usize, usize)> = model
            .files()
            .iter()
            .enumerate()
            .flat_map(|(k, q)| (0..q.tensor_count()).map(move |i| (k, i)))
            .collect();
        let index = model
            .tensors()
            .enumerate()
            .map(|(i, t)| (t.name().to_string(), i))
            .collect();
        let verified = place.iter().map(|_| AtomicBool::new(false)).collect();
        let reopened = model.files().iter().map(|_| OnceLock::new()).collect();
        Ok(Source {
            parsed,
            verify,
            index,
            place,
            verified,
            reopened,
        })
    }

    /// The validated model.
    pub fn model(&self) -> &Model<'_> {
        self.parsed.borrow_dependent()
    }

    /// The first file (shard 1 of a set), whose metadata and assets are the model's (§21.4).
    pub fn first(&self) -> &Qins<'_> {
        &self.model().files()[0]
    }

    /// Whether data is verified before it is handed out.
    pub fn verifies(&self) -> bool {
        self.verify
    }

    /// The position of the tensor called `name` in the model's order.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Tensor `index` (in the model's order).
    pub fn tensor_at(&self, index: usize) -> TensorView<'_> {
        let (k, i) = self.place[index];
        self.model().files()[k].tensor_at(i)
    }

    /// The file that holds tensor `index`.
    pub fn file_of(&self, index: usize) -> usize {
        self.place[index].0
    }

    /// `e`, found in file `k`, naming that file if the model is a set (§21.5).
    pub fn in_file(&self, k: usize, e: ReadError) -> ReadError {
        let model = self.model();
        model.name_file(e, model.mapped()[k].path())
    }

    /// Whether tensor `index` has been verified.
    pub fn is_verified(&self, index: usize) -> bool {
        self.verified[index].load(Ordering::Acquire)
    }

    /// Records that tensor `index` has been verified.
    pub fn set_verified(&self, index: usize) {
        self.verified[index].store(true, Ordering::Release);
    }

    /// File `k` opened again by its path, for copy-on-write mappings of its raw tensors, if
    /// it is still the file that is mapped: same length and same header, whose checksum
    /// covers the checksums of every section (§8). `None` if it is not (replaced since it was
    /// opened, or gone): the caller copies from the mapping instead. Opened once per file and
    /// kept until the source is dropped.
    pub fn reopened(&self, k: usize) -> Option<&File> {
        self.reopened[k]
            .get_or_init(|| {
                let model = self.model();
                same_file(model.mapped()[k].path(), &model.files()[k])
            })
            .as_ref()
    }
}

/// The file at `path`, if it has the length and the header of `q`.
fn same_file(path: &Path, q: &Qins<'_>) -> Option<File> {
    let mut file = File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() != q.file_size() {
        return None;
    }
    let header = q.bytes().get(..usize::try_from(q.header_size()).ok()?)?;
    let mut got = vec![0u8; header.len()];
    file.read_exact(&mut got).ok()?;
    (got == header).then_some(file)
}

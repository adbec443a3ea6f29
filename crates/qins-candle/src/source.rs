//! Where weights and the model's small files come from: a `.qins` file or a Hugging Face
//! directory, behind one trait.

use std::borrow::Cow;
use std::convert::Infallible;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use half::{bf16, f16};
use qins_read::{MappedModel, Model, ReadError, TensorView};
use qins_source::{HfSource, SourceTensor};

use crate::convert::{par_fill, raw_tensor, Float};
use crate::LoadError;

/// A source of named tensors and assets: a `.qins` model, one file or a set of shards
/// ([`QinsSource`]), or a Hugging Face directory ([`DirSource`]).
pub trait TensorSource: Send + Sync + std::fmt::Debug {
    /// The `.qins` file (a set's index) or the model directory, for messages.
    fn path(&self) -> &Path;

    /// Whether this is a `.qins` model, one file or a set (else a model directory).
    fn is_qins(&self) -> bool;

    /// The names of every tensor, in the source's order.
    fn tensor_names(&self) -> Vec<&str>;

    /// The stored shape of tensor `name`, if there is one.
    fn shape(&self, name: &str) -> Option<Vec<u64>>;

    /// Builds tensor `name` in dtype `dtype` on `device`: checked, decoded or converted once,
    /// into the tensor's own buffer.
    fn load(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor, LoadError>;

    /// The bytes of the asset (a model file such as `config.json`) called `name`, if there is
    /// one.
    fn asset(&self, name: &str) -> Result<Option<Cow<'_, [u8]>>, LoadError>;

    /// The names of every asset, sorted.
    fn asset_names(&self) -> Vec<&str>;
}

/// An opened model: a mapped `.qins` model (one file, or every shard of a set) or a Hugging
/// Face directory. It owns the mappings or the directory's open files; [`Checkpoint::source`]
/// borrows them.
#[derive(Debug)]
pub enum Checkpoint {
    /// A `.qins` model, mapped: one file, or a set's shards (spec §21).
    Qins(MappedModel),
    /// A Hugging Face model directory.
    Dir(HfSource),
}

impl Checkpoint {
    /// Opens `path`: a directory as a Hugging Face model directory; any other path as a `.qins`
    /// model, which is one file, or a set of shards given by its index
    /// (`NAME.qins.index.json`) or by any of its shards ([`qins_read::open_model`]: every
    /// shard must be there, a missing one is named).
    pub fn open(path: &Path) -> Result<Checkpoint, LoadError> {
        if path.is_dir() {
            HfSource::open(path)
                .map(Checkpoint::Dir)
                .map_err(|source| LoadError::Dir { source })
        } else {
            qins_read::open_model(path)
                .map(Checkpoint::Qins)
                .map_err(|source| LoadError::Qins {
                    path: path.into(),
                    source,
                })
        }
    }

    /// The source to load from. For a `.qins` model, this parses every file's header (§17),
    /// checks a set's shards against its index (§21.5), and verifies the bytes outside the
    /// tensors ([`qins_read::Model::verify_frame`]); each tensor is verified when it is loaded.
    pub fn source(&self) -> Result<Box<dyn TensorSource + '_>, LoadError> {
        Ok(match self {
            Checkpoint::Qins(files) => Box::new(QinsSource::new(files)?),
            Checkpoint::Dir(dir) => Box::new(DirSource::new(dir)),
        })
    }
}

/// A parsed `.qins` model (one file or a set of shards), serving its tensors decoded and its
/// assets.
#[derive(Debug)]
pub struct QinsSource<'a> {
    files: &'a MappedModel,
    model: Model<'a>,
    /// The index of a set, else the one file.
    path: &'a Path,
}

impl<'a> QinsSource<'a> {
    /// Parses `files` (for a set, checking the shards against the index) and verifies their
    /// frames (everything but the tensors' own sections).
    pub fn new(files: &'a MappedModel) -> Result<QinsSource<'a>, LoadError> {
        let path = match files.index() {
            Some((index, _)) => index,
            None => files.files()[0].path(),
        };
        let model = files.parse().map_err(|source| LoadError::Qins {
            path: path.into(),
            source,
        })?;
        model.verify_frame().map_err(|e| match e {
            // A set names the shard at fault: the error names it once.
            ReadError::In { file, inner } => LoadError::DamagedFrame {
                file,
                source: *inner,
            },
            source => LoadError::DamagedFrame {
                file: path.into(),
                source,
            },
        })?;
        Ok(QinsSource { files, model, path })
    }

    /// The parsed model.
    pub fn model(&self) -> &Model<'a> {
        &self.model
    }

    /// The file that holds tensor `name`: its shard in a set, else the one file.
    fn file_of(&self, name: &str) -> &'a Path {
        let k = self.model.file_of(name).unwrap_or(0);
        self.files.files()[k].path()
    }

    /// Decodes encoded tensor `t` into a new vector of `T` that becomes the tensor's storage.
    fn decode<T: Float>(
        &self,
        t: &TensorView<'_>,
        shape: &[usize],
        device: &Device,
    ) -> Result<Tensor, LoadError> {
        let mut out = vec![T::default(); t.numel() as usize];
        let Ok(()) = par_fill::<_, Infallible>(&mut out, |first, chunk| {
            T::decode(t, first as u64, chunk)
                .expect("chunks of a vector of the tensor's length are in range");
            Ok(())
        });
        Tensor::from_vec(out, shape, device).map_err(|source| LoadError::Candle {
            tensor: t.name().to_string(),
            file: self.file_of(t.name()).into(),
            source: Box::new(source),
        })
    }
}

fn usize_shape(shape: &[u64]) -> Vec<usize> {
    shape.iter().map(|&d| d as usize).collect()
}

impl TensorSource for QinsSource<'_> {
    fn path(&self) -> &Path {
        self.path
    }

    fn is_qins(&self) -> bool {
        true
    }

    fn tensor_names(&self) -> Vec<&str> {
        self.model.tensors().map(|t| t.name()).collect()
    }

    fn shape(&self, name: &str) -> Option<Vec<u64>> {
        self.model.tensor(name).map(|t| t.shape().to_vec())
    }

    fn load(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor, LoadError> {
        let t = self
            .model
            .tensor(name)
            .ok_or_else(|| LoadError::MissingTensor {
                tensor: name.to_string(),
                file: self.path.into(),
            })?;
        // The shard that holds it, in a set.
        let path = self.file_of(name);
        // §14: this tensor's checksums, sign padding and row scales, before any value is used.
        t.verify().map_err(|source| LoadError::Damaged {
            tensor: name.to_string(),
            file: path.into(),
            source,
        })?;
        let shape = usize_shape(t.shape());
        let tensor = match t.raw_bytes() {
            Some(bytes) => raw_tensor(path, name, t.dtype(), bytes, &shape, dtype, device),
            None => match dtype {
                DType::F32 => self.decode::<f32>(&t, &shape, device),
                DType::BF16 => self.decode::<bf16>(&t, &shape, device),
                DType::F16 => self.decode::<f16>(&t, &shape, device),
                other => self.decode::<f32>(&t, &shape, device).and_then(|x| {
                    x.to_dtype(other).map_err(|source| LoadError::Candle {
                        tensor: name.to_string(),
                        file: path.into(),
                        source: Box::new(source),
                    })
                }),
            },
        };
        // The values are in the tensor now: the process lets go of the pages it read.
        for (_, _, bytes) in t.sections() {
            self.files.release(bytes);
        }
        tensor
    }

    fn asset(&self, name: &str) -> Result<Option<Cow<'_, [u8]>>, LoadError> {
        Ok(self
            .model
            .assets()
            .find(|(n, _)| *n == name)
            .map(|(_, bytes)| Cow::Borrowed(bytes)))
    }

    fn asset_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.model.assets().map(|(n, _)| n).collect();
        names.sort_unstable();
        names
    }
}

/// A Hugging Face model directory, serving its safetensors tensors converted and its small
/// files as assets (the files a conversion carries).
#[derive(Debug)]
pub struct DirSource<'a> {
    dir: &'a HfSource,
}

impl<'a> DirSource<'a> {
    /// Serves the opened directory `dir`.
    pub fn new(dir: &'a HfSource) -> DirSource<'a> {
        DirSource { dir }
    }

    fn find(&self, name: &str) -> Option<&'a SourceTensor> {
        let tensors = self.dir.tensors();
        // Sorted by name (byte order).
        tensors
            .binary_search_by(|t| t.name.as_str().cmp(name))
            .ok()
            .map(|i| &tensors[i])
    }
}

impl TensorSource for DirSource<'_> {
    fn path(&self) -> &Path {
        self.dir.dir()
    }

    fn is_qins(&self) -> bool {
        false
    }

    fn tensor_names(&self) -> Vec<&str> {
        self.dir.tensors().iter().map(|t| t.name.as_str()).collect()
    }

    fn shape(&self, name: &str) -> Option<Vec<u64>> {
        self.find(name).map(|t| t.shape.clone())
    }

    fn load(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor, LoadError> {
        let path = self.dir.dir();
        let t = self.find(name).ok_or_else(|| LoadError::MissingTensor {
            tensor: name.to_string(),
            file: path.into(),
        })?;
        // Mapped for the conversion only: unmapped when `bytes` drops.
        let bytes = self
            .dir
            .read(t, 0..t.len)
            .map_err(|source| LoadError::Dir { source })?;
        raw_tensor(
            path,
            name,
            t.dtype,
            &bytes,
            &usize_shape(&t.shape),
            dtype,
            device,
        )
    }

    fn asset(&self, name: &str) -> Result<Option<Cow<'_, [u8]>>, LoadError> {
        let Some(a) = self.dir.assets().iter().find(|a| a.name == name) else {
            return Ok(None);
        };
        self.dir
            .read_asset(a)
            .map(|b| Some(Cow::Owned(b)))
            .map_err(|source| LoadError::Dir { source })
    }

    fn asset_names(&self) -> Vec<&str> {
        self.dir.assets().iter().map(|a| a.name.as_str()).collect()
    }
}

//! Models stored as sets of shards (spec §21), and single files, behind one API.
//!
//! [`open_model`] takes a path to a set's index, to any of its shards, or to a single `.qins`
//! file; [`MappedModel::parse`] validates every file in the order of §21.5 and gives a
//! [`Model`]: the tensors of every shard in the set's order, found by name, the assets and
//! metadata of shard 1, and [`Model::verify`] over every shard. A single file is a model of one
//! file and no index.
//!
//! ```no_run
//! let files = qins_read::open_model("model.qins.index.json".as_ref())?;
//! let model = files.parse()?;
//! model.verify()?;
//! let t = model.tensor("model.layers.0.mlp.up_proj.weight").unwrap();
//! println!("{} tensors in {} files; {:?}", model.tensor_count(), model.files().len(), t.shape());
//! # Ok::<(), qins_read::ReadError>(())
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use qins_format::set::{
    is_valid_file_name, is_valid_set_id, limits, parse_decimal, parse_version, INDEX_FORMAT,
    KEY_INDEX_FILE, KEY_SET_ID, KEY_SHARD, KEY_SHARD_COUNT,
};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::{open, MappedFile, Qins, ReadError, TensorView};

/// One shard as the index lists it (§21.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexShard {
    /// Its file name in the index's directory.
    pub file: String,
    /// Its length in bytes.
    pub size: u64,
    /// Its header CRC (§8).
    pub header_crc32: u32,
}

/// A parsed, validated set index (§21.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Index {
    version: (u16, u16),
    set_id: String,
    total_size: u64,
    shards: Vec<IndexShard>,
    weight_map: BTreeMap<String, usize>,
}

impl Index {
    /// Parses an index's bytes by the rules of §21.2 (step 1 of §21.5, after the length).
    pub fn parse(bytes: &[u8]) -> Result<Index, ReadError> {
        parse_index(bytes)
    }

    /// `metadata.format_version` as `(major, minor)`.
    pub fn version(&self) -> (u16, u16) {
        self.version
    }

    /// The set id.
    pub fn set_id(&self) -> &str {
        &self.set_id
    }

    /// `metadata.total_size`: the sum of the shards' sizes.
    pub fn total_size(&self) -> u64 {
        self.total_size
    }

    /// The shards, in order.
    pub fn shards(&self) -> &[IndexShard] {
        &self.shards
    }

    /// The position (from 0) of the shard that holds `tensor`, as the weight map says.
    pub fn shard_of(&self, tensor: &str) -> Option<usize> {
        self.weight_map.get(tensor).copied()
    }
}

/// A JSON value that refuses duplicate keys in any object (§21.2).
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strict;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Strict, E> {
                Ok(Strict(Value::Bool(b)))
            }
            fn visit_i64<E>(self, x: i64) -> Result<Strict, E> {
                Ok(Strict(Value::from(x)))
            }
            fn visit_u64<E>(self, x: u64) -> Result<Strict, E> {
                Ok(Strict(Value::from(x)))
            }
            fn visit_f64<E>(self, x: f64) -> Result<Strict, E> {
                Ok(Strict(Value::from(x)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Strict, E> {
                Ok(Strict(Value::String(s.into())))
            }
            fn visit_string<E>(self, s: String) -> Result<Strict, E> {
                Ok(Strict(Value::String(s)))
            }
            fn visit_unit<E>(self) -> Result<Strict, E> {
                Ok(Strict(Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Strict, A::Error> {
                let mut v = Vec::new();
                while let Some(Strict(x)) = a.next_element()? {
                    v.push(x);
                }
                Ok(Strict(Value::Array(v)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Strict, A::Error> {
                let mut out = Map::new();
                while let Some(k) = m.next_key::<String>()? {
                    if out.contains_key(&k) {
                        return Err(serde::de::Error::custom(format!("duplicate key {k:?}")));
                    }
                    let Strict(v) = m.next_value()?;
                    out.insert(k, v);
                }
                Ok(Strict(Value::Object(out)))
            }
        }
        d.deserialize_any(V)
    }
}

fn bad(reason: impl Into<String>) -> ReadError {
    ReadError::BadIndex {
        reason: reason.into(),
    }
}

fn parse_index(bytes: &[u8]) -> Result<Index, ReadError> {
    let Strict(v) = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let root = v.as_object().ok_or_else(|| bad("not a JSON object"))?;
    let meta = root
        .get("metadata")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no \"metadata\" object"))?;
    let string = |obj: &Map<String, Value>, key: &str, what: &str| -> Result<String, ReadError> {
        obj.get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| bad(format!("{what} is missing or not a string")))
    };
    let integer = |obj: &Map<String, Value>, key: &str, what: &str| -> Result<u64, ReadError> {
        obj.get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| bad(format!("{what} is missing or not an integer below 2^64")))
    };
    let format = string(meta, "format", "metadata.format")?;
    if format != INDEX_FORMAT {
        return Err(bad(format!(
            "metadata.format is {format:?}, not {INDEX_FORMAT:?}"
        )));
    }
    let text = string(meta, "format_version", "metadata.format_version")?;
    let version = parse_version(&text).ok_or_else(|| {
        bad(format!(
            "metadata.format_version {text:?} is not MAJOR.MINOR"
        ))
    })?;
    if version.0 != qins_format::VERSION_MAJOR {
        return Err(ReadError::UnsupportedVersion {
            major: version.0,
            minor: version.1,
        });
    }
    // The shard count before anything in `shards`, or any other rule (§21.5 step 1).
    let list = root
        .get("shards")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no \"shards\" array"))?;
    if list.len() > limits::MAX_SHARDS {
        return Err(ReadError::LimitExceeded {
            what: "shards in a set".into(),
            value: list.len() as u64,
            limit: limits::MAX_SHARDS as u64,
        });
    }
    let set_id = string(meta, "set_id", "metadata.set_id")?;
    if !is_valid_set_id(&set_id) {
        return Err(bad(format!(
            "metadata.set_id {set_id:?} is not 1 to 64 letters, digits, '-', '_' or '.'"
        )));
    }
    let total_size = integer(meta, "total_size", "metadata.total_size")?;
    if list.is_empty() {
        return Err(bad("\"shards\" is empty"));
    }
    let mut shards = Vec::with_capacity(list.len());
    let mut by_file: HashMap<String, usize> = HashMap::with_capacity(list.len());
    for (k, s) in list.iter().enumerate() {
        let what = |field: &str| format!("shards[{k}].{field}");
        let s = s
            .as_object()
            .ok_or_else(|| bad(format!("shards[{k}] is not an object")))?;
        let file = string(s, "file", &what("file"))?;
        if !is_valid_file_name(&file) {
            return Err(bad(format!(
                "{} {file:?} is not a plain file name",
                what("file")
            )));
        }
        if by_file.insert(file.clone(), k).is_some() {
            return Err(bad(format!("shard file {file:?} is listed twice")));
        }
        let size = integer(s, "size", &what("size"))?;
        let crc = string(s, "header_crc32", &what("header_crc32"))?;
        let header_crc32 = (crc.len() == 8
            && crc.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| u32::from_str_radix(&crc, 16).ok())
        .flatten()
        .ok_or_else(|| {
            bad(format!(
                "{} {crc:?} is not 8 lower-case hex digits",
                what("header_crc32")
            ))
        })?;
        shards.push(IndexShard {
            file,
            size,
            header_crc32,
        });
    }
    let sum = shards
        .iter()
        .try_fold(0u64, |a, s| a.checked_add(s.size))
        .filter(|&sum| sum == total_size);
    if sum.is_none() {
        return Err(bad(format!(
            "metadata.total_size {total_size} is not the sum of the shards' sizes"
        )));
    }
    let map = root
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no \"weight_map\" object"))?;
    let mut weight_map = BTreeMap::new();
    for (name, file) in map {
        qins_format::names::check_tensor_name(name.as_bytes())
            .map_err(|p| bad(format!("weight_map key {name:?}: {p}")))?;
        let file = file
            .as_str()
            .ok_or_else(|| bad(format!("weight_map[{name:?}] is not a string")))?;
        let k = *by_file.get(file).ok_or_else(|| {
            bad(format!(
                "weight_map[{name:?}] is {file:?}, which is not a listed shard"
            ))
        })?;
        weight_map.insert(name.clone(), k);
    }
    Ok(Index {
        version,
        set_id,
        total_size,
        shards,
        weight_map,
    })
}

/// The directory a path is in (`.` for a bare file name).
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Reads the index at `path`: its length first (§21.7), then its bytes (§21.5 step 1).
fn read_index(path: &Path) -> Result<Index, ReadError> {
    let io = |source| ReadError::Io {
        path: path.into(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    if meta.len() > limits::MAX_INDEX_SIZE {
        return Err(ReadError::LimitExceeded {
            what: "the index's length".into(),
            value: meta.len(),
            limit: limits::MAX_INDEX_SIZE,
        }
        .within(path));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    Index::parse(&bytes).map_err(|e| e.within(path))
}

/// Whether `path` is a regular file that starts with the `.qins` magic (§3). Anything else is
/// not opened here (opening a FIFO would wait for a writer).
fn has_magic(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 8];
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
        && std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut head))
            .is_ok_and(|()| head == qins_format::MAGIC)
}

/// The files of a model, mapped: one `.qins` file, or a set's index and shards. Made by
/// [`open_model`]; [`MappedModel::parse`] gives the validated [`Model`].
#[derive(Debug)]
pub struct MappedModel {
    index: Option<(PathBuf, Index)>,
    files: Vec<MappedFile>,
}

/// Opens the model at `path`: a set's index, any shard of a set, or a single `.qins` file
/// (§21.5). A regular file that starts with the `.qins` magic is a `.qins` file (a shard if
/// its metadata has `qins.set.id`); otherwise a path whose file name ends in `.json` (lower
/// case) is an index; anything else is opened as a `.qins` file, and refused as such.
///
/// This step checks what needs the file system: the index (step 1), that every shard exists
/// (step 2), and for a shard given, that its index is there and lists it; the shards' contents
/// are checked by [`MappedModel::parse`].
pub fn open_model(path: &Path) -> Result<MappedModel, ReadError> {
    let is_index = !has_magic(path)
        && path
            .file_name()
            .is_some_and(|n| n.as_encoded_bytes().ends_with(b".json"));
    if is_index {
        return open_set(path, read_index(path)?, None);
    }
    let file = open(path)?;
    let (set_id, index_file) = {
        let q = file.parse()?;
        let m = q.metadata();
        let Some(id) = m.get(KEY_SET_ID) else {
            drop(q);
            return Ok(MappedModel {
                index: None,
                files: vec![file],
            });
        };
        (id.clone(), m.get(KEY_INDEX_FILE).cloned())
    };
    let dir = dir_of(path);
    let index_path = index_file
        .filter(|n| is_valid_file_name(n))
        .map(|n| dir.join(n));
    let index = match &index_path {
        Some(p) if p.is_file() => p.clone(),
        _ => {
            return Err(ReadError::MissingIndex {
                shard: path.into(),
                set_id: set_id.into(),
                index: index_path.map(PathBuf::into_boxed_path),
            })
        }
    };
    let parsed = read_index(&index)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if !parsed.shards.iter().any(|s| s.file == name) {
        return Err(ReadError::UnlistedShard {
            shard: path.into(),
            index,
        });
    }
    open_set(&index, parsed, Some(file))
}

/// §21.5 step 2: every shard is there; maps them. `given`, the shard the set was opened from,
/// is mapped already.
fn open_set(
    index_path: &Path,
    index: Index,
    given: Option<MappedFile>,
) -> Result<MappedModel, ReadError> {
    let dir = dir_of(index_path);
    let n = index.shards.len();
    let paths: Vec<PathBuf> = index.shards.iter().map(|s| dir.join(&s.file)).collect();
    for (k, p) in paths.iter().enumerate() {
        if !p.is_file() {
            return Err(ReadError::MissingShard {
                shard: p.clone(),
                k: k + 1,
                n,
            });
        }
    }
    let mut given = given;
    let mut files = Vec::with_capacity(n);
    for p in &paths {
        let same = |g: &mut MappedFile| {
            g.path().file_name() == p.file_name() && dir_of(g.path()) == dir_of(p)
        };
        files.push(match given.take_if(same) {
            Some(g) => g,
            None => open(p).map_err(|e| e.within(p))?,
        });
    }
    Ok(MappedModel {
        index: Some((index_path.into(), index)),
        files,
    })
}

impl MappedModel {
    /// The index's path and contents, for a set.
    pub fn index(&self) -> Option<(&Path, &Index)> {
        self.index.as_ref().map(|(p, i)| (p.as_path(), i))
    }

    /// The mapped files: the shards in order, or the one file.
    pub fn files(&self) -> &[MappedFile] {
        &self.files
    }

    /// Releases the pages holding `bytes` from whichever file maps them
    /// ([`MappedFile::release`]).
    pub fn release(&self, bytes: &[u8]) {
        for f in &self.files {
            f.release(bytes);
        }
    }

    /// Validates every file (§17 for each; for a set, steps 3 to 5 of §21.5) and gives the
    /// model.
    pub fn parse(&self) -> Result<Model<'_>, ReadError> {
        let Some((index_path, index)) = &self.index else {
            let q = self.files[0].parse()?;
            return Ok(Model::new(vec![q], &self.files, None));
        };
        let n = index.shards.len();
        let mut shards = Vec::with_capacity(n);
        for (k, (f, entry)) in self.files.iter().zip(&index.shards).enumerate() {
            let path = f.path();
            let q = f.parse().map_err(|e| e.within(path))?;
            let m = q.metadata();
            let id = m.get(KEY_SET_ID);
            if id != Some(&index.set_id) {
                return Err(ReadError::ForeignShard {
                    shard: path.into(),
                    found: id.map(|s| s.as_str().into()),
                    expected: index.set_id.as_str().into(),
                });
            }
            let found = |key| m.get(key).cloned().unwrap_or_else(|| "(none)".into());
            let position = m.get(KEY_SHARD).and_then(|s| parse_decimal(s));
            let count = m.get(KEY_SHARD_COUNT).and_then(|s| parse_decimal(s));
            if position != Some(k as u64 + 1) || count != Some(n as u64) {
                return Err(ReadError::MisplacedShard {
                    shard: path.into(),
                    found: format!("{} of {}", found(KEY_SHARD), found(KEY_SHARD_COUNT)).into(),
                    k: k as u32 + 1,
                    n: n as u32,
                });
            }
            let (size, crc) = (q.file_size(), q.header_crc32());
            if (size, crc) != (entry.size, entry.header_crc32) {
                return Err(ReadError::IndexMismatch {
                    file: path.into(),
                    what: format!(
                        "the file is {size} bytes with header CRC {crc:08x}, the index says \
                         {} bytes with header CRC {:08x}: it is not the file the index was \
                         written with",
                        entry.size, entry.header_crc32
                    ),
                });
            }
            if k > 0 {
                if let Some((asset, _)) = q.assets().next() {
                    return Err(ReadError::MisplacedAsset {
                        shard: path.into(),
                        k: k + 1,
                        asset: asset.into(),
                    });
                }
            }
            shards.push(q);
        }
        // Step 4: each tensor in one shard.
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (k, q) in shards.iter().enumerate() {
            for t in q.tensors() {
                if let Some(&first) = seen.get(t.name()) {
                    return Err(ReadError::DuplicateTensor {
                        tensor: t.name().into(),
                        first: self.files[first].path().into(),
                        shard: self.files[k].path().into(),
                    });
                }
                seen.insert(t.name(), k);
            }
        }
        // Step 5: the weight map, both ways.
        for (k, q) in shards.iter().enumerate() {
            for t in q.tensors() {
                let mapped = index.weight_map.get(t.name()).copied();
                if mapped != Some(k) {
                    return Err(ReadError::IndexMismatch {
                        file: self.files[k].path().into(),
                        what: match mapped {
                            None => format!("tensor {:?} is not in the weight map", t.name()),
                            Some(j) => format!(
                                "tensor {:?} is here, the weight map puts it in {}",
                                t.name(),
                                index.shards[j].file
                            ),
                        },
                    });
                }
            }
        }
        let names: HashSet<&str> = seen.keys().copied().collect();
        if let Some(name) = index
            .weight_map
            .keys()
            .find(|name| !names.contains(name.as_str()))
        {
            return Err(ReadError::IndexMismatch {
                file: index_path.clone(),
                what: format!(
                    "the weight map lists tensor {name:?} in {}, but no shard holds it",
                    index.shards[index.weight_map[name]].file
                ),
            });
        }
        Ok(Model::new(shards, &self.files, Some((index_path, index))))
    }
}

/// A validated model: one file, or every shard of a set (§21.4). Tensors borrow from the
/// mapped files.
#[derive(Debug)]
pub struct Model<'a> {
    shards: Vec<Qins<'a>>,
    files: &'a [MappedFile],
    index: Option<(&'a Path, &'a Index)>,
    /// `(shard, record)` of each tensor, in the set's order.
    order: Vec<(usize, usize)>,
    by_name: HashMap<&'a str, (usize, usize)>,
}

impl<'a> Model<'a> {
    fn new(
        shards: Vec<Qins<'a>>,
        files: &'a [MappedFile],
        index: Option<(&'a PathBuf, &'a Index)>,
    ) -> Model<'a> {
        let mut order = Vec::new();
        let mut by_name = HashMap::new();
        for (k, q) in shards.iter().enumerate() {
            for (i, name) in q.tensor_names().enumerate() {
                order.push((k, i));
                by_name.insert(name, (k, i));
            }
        }
        Model {
            shards,
            files,
            index: index.map(|(p, i)| (p.as_path(), i)),
            order,
            by_name,
        }
    }

    /// Whether the model is a set (it has an index), rather than a single file.
    pub fn is_set(&self) -> bool {
        self.index.is_some()
    }

    /// The index's path and contents, for a set.
    pub fn index(&self) -> Option<(&'a Path, &'a Index)> {
        self.index
    }

    /// The files, validated: the shards in order, or the one file.
    pub fn files(&self) -> &[Qins<'a>] {
        &self.shards
    }

    /// The paths of the files, in the same order as [`Model::files`].
    pub fn paths(&self) -> impl ExactSizeIterator<Item = &'a Path> + '_ {
        self.files.iter().map(MappedFile::path)
    }

    /// The mapped files, in the same order as [`Model::files`].
    pub fn mapped(&self) -> &'a [MappedFile] {
        self.files
    }

    /// The number of tensors in all files.
    pub fn tensor_count(&self) -> usize {
        self.order.len()
    }

    /// Every tensor, in the set's order: shard 1's in record order, then shard 2's, … (§21.4).
    pub fn tensors(&self) -> impl ExactSizeIterator<Item = TensorView<'_>> + '_ {
        self.order
            .iter()
            .map(move |&(k, i)| self.shards[k].tensor_at(i))
    }

    /// The tensor called `name`, in whichever shard holds it.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        self.by_name
            .get(name)
            .map(|&(k, i)| self.shards[k].tensor_at(i))
    }

    /// The position (from 0) of the file that holds the tensor `name`.
    pub fn file_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).map(|&(k, _)| k)
    }

    /// The model's assets: shard 1's (§21.4).
    pub fn assets(&self) -> impl ExactSizeIterator<Item = (&'a str, &'a [u8])> + '_ {
        self.shards[0].assets()
    }

    /// The model's metadata: shard 1's (§21.4).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        self.shards[0].metadata()
    }

    /// The sum of the files' sizes.
    pub fn total_size(&self) -> u64 {
        self.shards.iter().map(Qins::file_size).sum()
    }

    /// Verifies every file (§14), in order; for a set, the error names the shard (§21.5).
    /// The pages read are released behind the check ([`Qins::verify_and_release`],
    /// [`MappedFile::release`]), so verifying a model needs little memory whatever its size;
    /// tensors read afterwards come back from the page cache.
    pub fn verify(&self) -> Result<(), ReadError> {
        self.each_file(Qins::verify_and_release)
    }

    /// [`Qins::verify_frame`] for every file: everything but the tensors' own sections,
    /// releasing the pages read as [`Model::verify`] does.
    pub fn verify_frame(&self) -> Result<(), ReadError> {
        self.each_file(Qins::verify_frame_and_release)
    }

    fn each_file(
        &self,
        f: impl Fn(&Qins<'a>, &mut dyn FnMut(&[u8])) -> Result<(), ReadError>,
    ) -> Result<(), ReadError> {
        for (q, file) in self.shards.iter().zip(self.files) {
            f(q, &mut |bytes| file.release(bytes)).map_err(|e| self.name_file(e, file.path()))?;
        }
        Ok(())
    }

    /// `e`, found in `path`, named by that path if the model is a set.
    pub fn name_file(&self, e: ReadError, path: &Path) -> ReadError {
        if self.is_set() {
            e.within(path)
        } else {
            e
        }
    }

    /// Verifies the tensor `t` of this model ([`TensorView::verify`]), the error naming its
    /// shard for a set.
    pub fn verify_tensor(&self, t: &TensorView<'_>) -> Result<(), ReadError> {
        let k = self.file_of(t.name()).unwrap_or(0);
        t.verify()
            .map_err(|e| self.name_file(e, self.files[k].path()))
    }
}

//! One negative test per `SourceError` variant: the message names the file, the tensor where
//! there is one, and the cause; several variants also for a module's weights (spec §18.1).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use qins_source::{HfSource, SourceError};

struct Case {
    _tmp: tempfile::TempDir,
    src: PathBuf,
}

fn case() -> Case {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("model");
    Case { _tmp: tmp, src }
}

impl Case {
    /// Opens the directory, expects an error, and returns it with its message.
    fn fails(&self) -> (SourceError, String) {
        let err = HfSource::open(&self.src).expect_err("opening must fail");
        let msg = err.to_string();
        (err, msg)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.src.join(name)
    }

    fn index(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.path("model.safetensors.index.json")).unwrap())
            .unwrap()
    }

    fn set_index(&self, v: &serde_json::Value) {
        std::fs::write(
            self.path("model.safetensors.index.json"),
            serde_json::to_vec(v).unwrap(),
        )
        .unwrap();
    }
}

#[test]
fn missing_directory() {
    let c = case();
    let (e, msg) = c.fails();
    assert!(matches!(e, SourceError::SourceDir { .. }), "{e:?}");
    has(
        &msg,
        &[
            c.src.to_str().unwrap(),
            "cannot read the model directory",
            "No such file",
        ],
    );
}

#[test]
fn source_is_not_a_directory() {
    let c = case();
    std::fs::write(&c.src, b"x").unwrap();
    let (e, msg) = c.fails();
    assert!(matches!(e, SourceError::NotADirectory { .. }), "{e:?}");
    has(&msg, &[c.src.to_str().unwrap(), "not a directory"]);
}

#[test]
fn no_safetensors_files() {
    let c = case();
    put(&c.src, "config.json", b"{}");
    put(&c.src, "pytorch_model.bin", b"pickle");
    let (e, msg) = c.fails();
    assert!(matches!(e, SourceError::NoWeights { .. }), "{e:?}");
    has(
        &msg,
        &[
            c.src.to_str().unwrap(),
            "no safetensors weights",
            "pytorch_model.bin",
            "convert it to safetensors first",
        ],
    );

    // A sentence-transformers model whose only weights are pickles, at the top and in a
    // module: the message lists both.
    let c = case();
    put(&c.src, "modules.json", MODULES_JSON.as_bytes());
    put(&c.src, "pytorch_model.bin", b"pickle");
    put(&c.src, "2_Dense/pytorch_model.bin", b"pickle");
    let (e, msg) = c.fails();
    assert!(matches!(e, SourceError::NoWeights { .. }), "{e:?}");
    has(&msg, &["2_Dense/pytorch_model.bin", "pytorch_model.bin"]);
}

#[test]
fn corrupt_safetensors_header() {
    let c = case();
    small_model(&c.src);
    let p = c.path("model.safetensors");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[8] = b'!'; // the JSON header's opening brace
    std::fs::write(&p, &bytes).unwrap();
    let (e, msg) = c.fails();
    assert!(matches!(e, SourceError::BadSafetensors { .. }), "{e:?}");
    has(
        &msg,
        &[p.to_str().unwrap(), "not a valid safetensors file", "JSON"],
    );

    // Too short to hold a header at all, and a length that runs past the file.
    std::fs::write(&p, b"abc").unwrap();
    let (_, msg) = c.fails();
    has(&msg, &["model.safetensors", "header too small"]);
    std::fs::write(&p, 1000u64.to_le_bytes()).unwrap();
    let (_, msg) = c.fails();
    has(&msg, &["model.safetensors", "invalid header length"]);

    // A module's weight file, cut short: named with its module's directory.
    let c = case();
    st_model(&c.src);
    let p = c.path("2_Dense/model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 4]).unwrap();
    let (e, msg) = c.fails();
    assert!(matches!(e, SourceError::BadSafetensors { .. }), "{e:?}");
    has(
        &msg,
        &[p.to_str().unwrap(), "not a valid safetensors file", "again"],
    );
}

#[test]
fn bad_index() {
    let c = case();
    sharded_model(&c.src);
    let idx = c.path("model.safetensors.index.json");
    std::fs::write(&idx, b"{\"weight_map\": [}").unwrap();
    let (e, msg) = c.fails();
    assert!(matches!(e, SourceError::BadIndex { .. }), "{e:?}");
    has(&msg, &[idx.to_str().unwrap(), "bad shard index"]);

    let escape = serde_json::json!({"weight_map": {"w": "../outside.safetensors"}});
    c.set_index(&escape);
    let (_, msg) = c.fails();
    has(
        &msg,
        &["bad shard index", "../outside.safetensors", "\"w\""],
    );

    // A module's index is checked the same way.
    let c = case();
    st_model(&c.src);
    let idx = c.path("2_Dense/model.safetensors.index.json");
    std::fs::write(&idx, b"{\"weight_map\": {\"linear.weight\": 7}}").unwrap();
    let (e, msg) = c.fails();
    assert!(matches!(e, SourceError::BadIndex { .. }), "{e:?}");
    has(
        &msg,
        &["2_Dense/model.safetensors.index.json", "bad shard index"],
    );
}

#[test]
fn shard_listed_but_absent() {
    let c = case();
    sharded_model(&c.src);
    std::fs::remove_file(c.path("model-00002-of-00003.safetensors")).unwrap();
    let (e, msg) = c.fails();
    assert!(matches!(e, SourceError::ShardMissing { .. }), "{e:?}");
    has(
        &msg,
        &[
            "model.safetensors.index.json",
            "model-00002-of-00003.safetensors",
            "does not exist",
            "tensor",
        ],
    );

    // In a module: the shard is looked for in the module's directory, beside its index.
    let c = case();
    st_model(&c.src);
    std::fs::write(
        c.path("2_Dense/model.safetensors.index.json"),
        br#"{"weight_map": {"linear.weight": "model-00001-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let (e, msg) = c.fails();
    assert!(matches!(e, SourceError::ShardMissing { .. }), "{e:?}");
    has(
        &msg,
        &[
            "2_Dense/model.safetensors.index.json",
            "\"model-00001-of-00002.safetensors\"",
            "\"linear.weight\"",
        ],
    );
}

#[test]
fn tensor_listed_twice_in_the_index() {
    let c = case();
    sharded_model(&c.src);
    let idx = c.path("model.safetensors.index.json");
    let text = std::fs::read_to_string(&idx).unwrap();
    let text = text.replacen(
        "\"weight_map\": {",
        "\"weight_map\": {\n    \"model.norm.weight\": \"model-00001-of-00003.safetensors\",",
        1,
    );
    std::fs::write(&idx, text).unwrap();
    let (e, msg) = c.fails();
    assert!(matches!(e, SourceError::DuplicateTensor { .. }), "{e:?}");
    has(
        &msg,
        &[
            "\"model.norm.weight\"",
            "listed twice",
            "model.safetensors.index.json",
        ],
    );
}

#[test]
fn tensor_in_two_weight_files() {
    let c = case();
    let w = f32_bytes(&[1.0, 2.0, 3.0, 4.0]);
    write_safetensors(&c.path("a.safetensors"), &[("w", "F32", &[2, 2], &w)]);
    write_safetensors(&c.path("b.safetensors"), &[("w", "F32", &[2, 2], &w)]);
    let (e, msg) = c.fails();
    assert!(matches!(e, SourceError::DuplicateTensor { .. }), "{e:?}");
    has(
        &msg,
        &["\"w\"", "a.safetensors", "b.safetensors", "listed twice"],
    );

    // With an index naming both shards.
    let idx = serde_json::json!({"weight_map": {"w": "a.safetensors", "v": "b.safetensors"}});
    write_safetensors(
        &c.path("b.safetensors"),
        &[("w", "F32", &[2, 2], &w), ("v", "F32", &[2, 2], &w)],
    );
    std::fs::write(
        c.path("model.safetensors.index.json"),
        serde_json::to_vec(&idx).unwrap(),
    )
    .unwrap();
    let (e, msg) = c.fails();
    assert!(matches!(e, SourceError::DuplicateTensor { .. }), "{e:?}");
    has(&msg, &["\"w\"", "a.safetensors", "b.safetensors"]);
}

#[test]
fn tensor_in_a_shard_but_not_in_the_index() {
    let c = case();
    sharded_model(&c.src);
    let mut idx = c.index();
    let removed = idx["weight_map"]
        .as_object_mut()
        .unwrap()
        .remove("model.norm.weight")
        .unwrap();
    c.set_index(&idx);
    let (e, msg) = c.fails();
    assert!(matches!(e, SourceError::UnindexedTensor { .. }), "{e:?}");
    has(
        &msg,
        &[
            removed.as_str().unwrap(),
            "\"model.norm.weight\"",
            "is not listed in",
            "index.json",
        ],
    );

    // A module's shard holding a tensor its index does not list: named as in the shard.
    let c = case();
    st_model(&c.src);
    std::fs::rename(
        c.path("2_Dense/model.safetensors"),
        c.path("2_Dense/part.safetensors"),
    )
    .unwrap();
    std::fs::write(
        c.path("2_Dense/model.safetensors.index.json"),
        br#"{"weight_map": {"linear.weight": "part.safetensors"}}"#,
    )
    .unwrap();
    let (e, msg) = c.fails();
    assert!(matches!(e, SourceError::UnindexedTensor { .. }), "{e:?}");
    has(
        &msg,
        &[
            "2_Dense/part.safetensors",
            "tensor \"linear.bias\"",
            "2_Dense/model.safetensors.index.json",
        ],
    );
}

#[test]
fn tensor_listed_in_a_shard_that_does_not_hold_it() {
    let c = case();
    sharded_model(&c.src);
    let mut idx = c.index();
    idx["weight_map"]["no.such.tensor"] = "model-00001-of-00003.safetensors".into();
    c.set_index(&idx);
    let (e, msg) = c.fails();
    assert!(matches!(e, SourceError::TensorNotInShard { .. }), "{e:?}");
    has(
        &msg,
        &[
            "\"no.such.tensor\"",
            "model-00001-of-00003.safetensors",
            "does not contain it",
        ],
    );

    // A tensor the index places in the wrong shard.
    let mut idx = c.index();
    idx["weight_map"]
        .as_object_mut()
        .unwrap()
        .remove("no.such.tensor");
    idx["weight_map"]["model.norm.weight"] = "model-00001-of-00003.safetensors".into();
    c.set_index(&idx);
    let (e, msg) = c.fails();
    assert!(matches!(e, SourceError::TensorNotInShard { .. }), "{e:?}");
    has(
        &msg,
        &["\"model.norm.weight\"", "model-00001-of-00003.safetensors"],
    );
}

#[test]
fn tensor_the_format_cannot_hold() {
    let c = case();
    let p = c.path("model.safetensors");
    write_safetensors(&p, &[("deep", "F32", &[1; 9], &[0; 4])]);
    let (e, msg) = c.fails();
    assert!(matches!(e, SourceError::BadTensor { .. }), "{e:?}");
    has(&msg, &[p.to_str().unwrap(), "\"deep\"", "rank 9"]);

    write_safetensors(&p, &[("nul\0name", "F32", &[1], &[0; 4])]);
    let (e, msg) = c.fails();
    assert!(matches!(e, SourceError::BadTensor { .. }), "{e:?}");
    has(&msg, &["model.safetensors", "NUL"]);

    // A module tensor's name is checked with its module's directory in front: 4088 bytes fit
    // in the file, but not behind "2_Dense/" (the format's limit is 4096 bytes).
    let c = case();
    st_model(&c.src);
    let long = "w".repeat(4089);
    let p = c.path("2_Dense/model.safetensors");
    write_safetensors(&p, &[(long.as_str(), "F32", &[1], &[0; 4])]);
    let (e, msg) = c.fails();
    assert!(
        matches!(&e, SourceError::BadTensor { tensor, .. } if tensor.starts_with("2_Dense/www")),
        "{e:?}"
    );
    has(&msg, &[p.to_str().unwrap(), "4096"]);
}

/// `/proc/self/mem` is a regular file (to `stat`) that cannot be read at offset 0.
const UNREADABLE: &str = "/proc/self/mem";

#[test]
fn unreadable_input() {
    // The top-level index; modules.json; a module's index; and a module's weight file that is
    // a broken link (a download cut short: the module's weights must not be dropped silently).
    for (make, file, link_to, cause) in [
        (
            sharded_model as fn(&Path),
            "model.safetensors.index.json",
            UNREADABLE,
            "",
        ),
        (st_model, "modules.json", UNREADABLE, ""),
        (
            st_model,
            "2_Dense/model.safetensors.index.json",
            UNREADABLE,
            "",
        ),
        (
            st_model,
            "2_Dense/model.safetensors",
            "no-such-blob",
            "No such file",
        ),
    ] {
        let c = case();
        make(&c.src);
        let path = c.path(file);
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(link_to, &path).unwrap();
        let (e, msg) = c.fails();
        assert!(matches!(e, SourceError::Read { .. }), "{file}: {e:?}");
        has(&msg, &[path.to_str().unwrap(), "cannot read", cause]);
    }
}

#[test]
fn bad_modules_json() {
    for (text, want) in [
        ("{\"path\": \"2_Dense\"}", "expected a JSON array"),
        ("[{\"idx\": 0}]", "missing field `path`"),
        (
            "[{\"path\": \"\"}, {\"path\": \"../x\"}]",
            "entry 1: path \"../x\"",
        ),
    ] {
        let c = case();
        st_model(&c.src);
        put(&c.src, "modules.json", text.as_bytes());
        let (e, msg) = c.fails();
        assert!(matches!(e, SourceError::BadModules { .. }), "{e:?}");
        has(
            &msg,
            &[
                c.path("modules.json").to_str().unwrap(),
                "not a sentence-transformers module list",
                want,
                "fix modules.json, or remove it",
            ],
        );
    }
}

#[test]
fn module_name_clash() {
    // A top-level tensor named like a tensor of module 2_Dense: a `.qins` could not say which
    // file it came from.
    let c = case();
    st_model(&c.src);
    let top = c.path("model.safetensors");
    write_safetensors(&top, &[("2_Dense/linear.weight", "F32", &[1], &[0; 4])]);
    let (e, msg) = c.fails();
    assert!(
        matches!(&e, SourceError::ModuleNameClash { tensor, module, .. }
            if tensor == "2_Dense/linear.weight" && module == "2_Dense"),
        "{e:?}"
    );
    has(
        &msg,
        &[
            top.to_str().unwrap(),
            "\"2_Dense/linear.weight\"",
            "module \"2_Dense\"",
            "rename the tensor",
        ],
    );

    // Also under a module without weights: the exporter would put it in 1_Pooling/.
    write_safetensors(&top, &[("1_Pooling/w", "F32", &[1], &[0; 4])]);
    let (e, _) = c.fails();
    assert!(
        matches!(&e, SourceError::ModuleNameClash { module, .. } if module == "1_Pooling"),
        "{e:?}"
    );

    // Nested modules: a tensor "b/w" of module "a" would be read back as "w" of module "a/b".
    let c = case();
    put(
        &c.src,
        "modules.json",
        br#"[{"path": "a"}, {"path": "a/b"}]"#,
    );
    let w = c.path("a/model.safetensors");
    write_safetensors(&w, &[("b/w", "F32", &[1], &[0; 4])]);
    let (e, msg) = c.fails();
    assert!(
        matches!(&e, SourceError::ModuleNameClash { tensor, module, .. }
            if tensor == "a/b/w" && module == "a/b"),
        "{e:?}"
    );
    has(&msg, &[w.to_str().unwrap()]);
}

/// The library's messages name the file even when the path is relative.
#[test]
fn messages_keep_relative_paths() {
    let err = HfSource::open(Path::new("no/such/model")).unwrap_err();
    has(&err.to_string(), &["no/such/model"]);
}

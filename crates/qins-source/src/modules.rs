//! sentence-transformers modules: `modules.json`, and which weight file a tensor name belongs
//! to (spec §18.1).
//!
//! A sentence-transformers model lists its modules in `modules.json`, a JSON array of objects
//! such as `{"idx": 2, "name": "2", "path": "2_Dense", "type":
//! "sentence_transformers.models.Dense"}`. The module whose `path` is empty is the transformer
//! at the top of the directory; every other module lives in the directory its `path` names, and
//! a module with weights (a `Dense` projection, say) keeps them in `PATH/model.safetensors`.
//! In a `.qins` file such a tensor is named `PATH/NAME` (`2_Dense/linear.weight`), and
//! [`Modules::split`] is the rule that takes such a name apart again: the converter checks with
//! it that every name goes back where it came from, the exporter restores the files with it.

use std::path::Path;

use qins_format::names::check_asset_name;
use serde::Deserialize;

use crate::SourceError;

/// The file that lists a sentence-transformers model's modules, at the top of the directory
/// (and carried as an asset of that name).
pub const MODULES_FILE: &str = "modules.json";

/// The rule, in one sentence, as recorded in `qins.policy` (key `module_rule`).
pub const MODULE_RULE: &str = "for each entry of modules.json with a non-empty path P: \
     P/model.safetensors.index.json and its shards, else P/model.safetensors, are weights of module P, \
     and a tensor NAME in them is named P/NAME; a name starting with P/ (P the longest such module path) \
     belongs to module P and nowhere else";

/// The module directories of a sentence-transformers model: the `path` of every entry of
/// `modules.json` except the root module's (the empty path). Sorted, without duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Modules {
    paths: Vec<String>,
}

/// One entry of `modules.json`; the other keys (`idx`, `name`, `type`, `kwargs`) do not matter.
#[derive(Deserialize)]
struct Entry {
    path: String,
}

impl Modules {
    /// No modules (a directory without `modules.json`).
    pub fn none() -> Modules {
        Modules::default()
    }

    /// Parses the bytes of `modules.json`; `file` names it in the error. Each non-empty `path`
    /// must be a safe relative path (spec §5: no leading `/`, no `\`, no empty, `.` or `..`
    /// segment).
    pub fn parse(file: &Path, bytes: &[u8]) -> Result<Modules, SourceError> {
        let bad = |cause: String| SourceError::BadModules {
            file: file.into(),
            cause,
        };
        let entries: Vec<Entry> = serde_json::from_slice(bytes).map_err(|e| {
            bad(format!(
                "{e} (expected a JSON array of objects with a string \"path\")"
            ))
        })?;
        let mut paths = Vec::new();
        for (i, e) in entries.into_iter().enumerate() {
            if e.path.is_empty() {
                continue;
            }
            check_asset_name(e.path.as_bytes())
                .map_err(|p| bad(format!("entry {i}: path {:?}: {p}", e.path)))?;
            paths.push(e.path);
        }
        paths.sort();
        paths.dedup();
        Ok(Modules { paths })
    }

    /// The module directories, sorted.
    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The module a tensor name of a `.qins` file belongs to, and the tensor's name in that
    /// module's weight file: `Some((P, NAME))` for the longest module path `P` such that `name`
    /// is `P/NAME` with `NAME` not empty; `None` for a tensor of the top-level weights.
    ///
    /// ```
    /// # use qins_source::Modules;
    /// let m = Modules::parse("modules.json".as_ref(),
    ///     br#"[{"path": ""}, {"path": "1_Pooling"}, {"path": "2_Dense"}]"#).unwrap();
    /// assert_eq!(m.split("2_Dense/linear.weight"), Some(("2_Dense", "linear.weight")));
    /// assert_eq!(m.split("encoder.layer.0.output.dense.weight"), None);
    /// assert_eq!(m.split("2_Dense/"), None);
    /// ```
    pub fn split<'a>(&self, name: &'a str) -> Option<(&str, &'a str)> {
        self.paths
            .iter()
            .filter_map(|p| {
                let rest = name.strip_prefix(p.as_str())?.strip_prefix('/')?;
                (!rest.is_empty()).then_some((p.as_str(), rest))
            })
            .max_by_key(|(p, _)| p.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Modules, SourceError> {
        Modules::parse(Path::new("m/modules.json"), s.as_bytes())
    }

    #[test]
    fn root_is_dropped_paths_sorted_and_unique() {
        let m = parse(
            r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
                {"idx":2,"name":"2","path":"2_Dense","type":"sentence_transformers.models.Dense"},
                {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling","kwargs":{}},
                {"path":"2_Dense"}]"#,
        )
        .unwrap();
        assert_eq!(m.paths(), ["1_Pooling", "2_Dense"]);
        assert!(parse("[]").unwrap().is_empty());
        assert!(Modules::none().is_empty());
    }

    #[test]
    fn longest_module_wins() {
        let m = parse(r#"[{"path":"a"},{"path":"a/b"},{"path":"ab"}]"#).unwrap();
        assert_eq!(m.split("a/b/w"), Some(("a/b", "w")));
        assert_eq!(m.split("a/bw"), Some(("a", "bw")));
        assert_eq!(m.split("ab/w"), Some(("ab", "w")));
        assert_eq!(m.split("abc/w"), None);
        assert_eq!(m.split("a"), None);
        assert_eq!(m.split("a/"), None);
    }

    #[test]
    fn refusals_name_the_file_and_the_entry() {
        for (text, want) in [
            ("{}", "expected a JSON array"),
            ("[{\"name\": \"1\"}]", "missing field `path`"),
            ("[{\"path\": 1}]", "invalid type"),
            (
                "[{\"path\": \"\"}, {\"path\": \"../x\"}]",
                "entry 1: path \"../x\"",
            ),
            ("[{\"path\": \"/abs\"}]", "\"/abs\""),
            ("not json", "expected"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(matches!(e, SourceError::BadModules { .. }), "{e:?}");
            let msg = e.to_string();
            for part in [
                "m/modules.json",
                "not a sentence-transformers module list",
                want,
            ] {
                assert!(msg.contains(part), "{part:?} not in {msg:?}");
            }
        }
    }
}

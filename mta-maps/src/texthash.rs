//! `texthash` tables: the `postmap` source file itself, read into memory
//! when the table is opened. No compiled file; keys are folded as `hash`
//! tables fold them; the first of duplicate keys wins, with a warning.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use crate::key::Folding;
use crate::map::{KeyKind, Lookup, Map, MapError};
use crate::source::{self, SourceProblem, SourceWarning};

/// An open `texthash` table.
#[derive(Debug)]
pub struct TextHash {
    name: String,
    entries: HashMap<String, String>,
    folding: Folding,
}

impl TextHash {
    /// Builds the table from source text; `path` names it in warnings.
    ///
    /// # Example
    /// ```
    /// use mta_maps::key::Folding;
    /// use mta_maps::texthash::TextHash;
    /// let (t, warnings) = TextHash::parse("Key1 v1\nkey1 v2\n", "t", "texthash:t", Folding::Lower);
    /// assert_eq!(t.get("KEY1"), Some("v1"));
    /// assert_eq!(warnings[0].to_string(), "t, line 2: duplicate entry: \"key1\"");
    /// ```
    pub fn parse(
        text: &str,
        path: &str,
        name: &str,
        folding: Folding,
    ) -> (TextHash, Vec<SourceWarning>) {
        let (parsed, mut warnings) = source::parse(text, path);
        for w in &mut warnings {
            if w.problem == SourceProblem::ExpectedFormat {
                w.message.push_str(" -- ignoring this line");
            }
        }
        let mut entries = HashMap::with_capacity(parsed.len());
        for e in parsed {
            let key = folding.fold(&e.key).into_owned();
            let written = e.key;
            match entries.entry(key) {
                std::collections::hash_map::Entry::Occupied(_) => warnings.push(SourceWarning {
                    path: path.to_string(),
                    line: e.line,
                    message: format!("duplicate entry: \"{written}\""),
                    problem: SourceProblem::Duplicate,
                }),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(e.value);
                }
            }
        }
        warnings.sort_by_key(|w| w.line);
        (
            TextHash {
                name: name.to_string(),
                entries,
                folding,
            },
            warnings,
        )
    }

    /// Reads and builds the table from the file `path`.
    pub fn open(path: &Path, folding: Folding) -> Result<(TextHash, Vec<SourceWarning>), MapError> {
        let name = format!("texthash:{}", path.display());
        let text = std::fs::read_to_string(path)
            .map_err(|e| MapError::config(name.clone(), format!("open {}: {e}", path.display())))?;
        Ok(TextHash::parse(
            &text,
            &path.display().to_string(),
            &name,
            folding,
        ))
    }

    /// The value for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .get(self.folding.fold(key).as_ref())
            .map(String::as_str)
    }
}

impl Map for TextHash {
    fn lookup<'a>(&'a self, key: &'a str) -> Lookup<'a> {
        Lookup::ready(Ok(self.get(key).map(Cow::Borrowed)))
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn key_kind(&self) -> KeyKind {
        KeyKind::Fixed
    }
}

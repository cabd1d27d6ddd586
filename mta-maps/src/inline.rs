//! `inline:{ key=value, { key = text, with commas }, ... }` tables, given
//! in the configuration itself.
//!
//! As Postfix parses them: entries are separated by commas or white
//! space; an entry is `name=value` without white space, or a
//! `{ name = value }` group in which white space around `=` and at the
//! ends is dropped and the value may hold commas and spaces. Keys are
//! folded to lower case.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::key::Folding;
use crate::map::{KeyKind, Lookup, Map, MapError};

/// An `inline:` table.
#[derive(Debug)]
pub struct InlineMap {
    name: String,
    entries: HashMap<String, String>,
}

impl InlineMap {
    /// Parses the name after `inline:`, braces included.
    ///
    /// # Example
    /// ```
    /// use mta_maps::inline::InlineMap;
    /// let t = InlineMap::parse("{ x=1, { y = 2 , 3 } }").unwrap();
    /// assert_eq!(t.get("X"), Some("1"));
    /// assert_eq!(t.get("y"), Some("2 , 3"));
    /// assert!(InlineMap::parse("{x = 1}").is_err());
    /// ```
    pub fn parse(spec: &str) -> Result<InlineMap, MapError> {
        let name = format!("inline:{spec}");
        let inner = spec
            .trim()
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .ok_or_else(|| MapError::config(name.clone(), "need \"inline:{name=value...}\""))?;
        let mut entries = HashMap::new();
        let bytes = inner.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            if c == b',' || c.is_ascii_whitespace() {
                i += 1;
                continue;
            }
            let (entry, next, grouped) = if c == b'{' {
                let close = matching_brace(inner, i).ok_or_else(|| {
                    MapError::config(name.clone(), format!("missing '}}' in \"{inner}\""))
                })?;
                (&inner[i + 1..close], close + 1, true)
            } else {
                let end = inner[i..]
                    .find(|ch: char| ch == ',' || ch.is_whitespace())
                    .map_or(inner.len(), |e| i + e);
                (&inner[i..end], end, false)
            };
            let Some((key, value)) = entry.split_once('=') else {
                return Err(MapError::config(
                    name.clone(),
                    format!(
                        "missing '=' after attribute name: \"{name}\"; need \"inline:{{name=value...}}\""
                    ),
                ));
            };
            let (key, value) = if grouped {
                (key.trim(), value.trim())
            } else {
                (key, value)
            };
            if key.is_empty() || (!grouped && key.contains(char::is_whitespace)) {
                return Err(MapError::config(
                    name.clone(),
                    format!("missing attribute name in \"{entry}\""),
                ));
            }
            // A later entry for the same key wins, as in Postfix.
            entries.insert(Folding::Lower.fold(key).into_owned(), value.to_string());
            i = next;
        }
        Ok(InlineMap { name, entries })
    }

    /// The value for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .get(Folding::Lower.fold(key).as_ref())
            .map(String::as_str)
    }
}

fn matching_brace(text: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in text.bytes().enumerate().skip(open) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

impl Map for InlineMap {
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

//! `static:` tables: every key finds the same value. `static:{ text with
//! spaces }` gives the text inside the braces, trimmed.

use std::borrow::Cow;

use crate::map::{KeyKind, Lookup, Map};

/// A `static:` table.
#[derive(Debug)]
pub struct StaticMap {
    name: String,
    value: String,
}

impl StaticMap {
    /// The table for the name after `static:`.
    ///
    /// # Example
    /// ```
    /// use mta_maps::static_map::StaticMap;
    /// assert_eq!(StaticMap::new("5000").value(), "5000");
    /// assert_eq!(StaticMap::new("{ hello  world }").value(), "hello  world");
    /// ```
    pub fn new(spec: &str) -> StaticMap {
        let value = match spec
            .trim()
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
        {
            Some(inner) => inner.trim(),
            None => spec,
        };
        StaticMap {
            name: format!("static:{spec}"),
            value: value.to_string(),
        }
    }

    /// The value every key finds.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl Map for StaticMap {
    fn lookup<'a>(&'a self, _key: &'a str) -> Lookup<'a> {
        Lookup::ready(Ok(Some(Cow::Borrowed(&self.value))))
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn key_kind(&self) -> KeyKind {
        KeyKind::Any
    }
}

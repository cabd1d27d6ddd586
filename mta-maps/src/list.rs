//! Lists of tables searched in order, as Postfix searches the tables of a
//! `*_maps` parameter.

use std::sync::Arc;

use crate::map::{KeyKind, LookupResult, Map, MapError};
use crate::search::SearchKey;

/// The tables of one `*_maps` parameter, in order.
#[derive(Debug, Clone, Default)]
pub struct MapList {
    maps: Vec<Arc<dyn Map>>,
}

impl MapList {
    /// A list of these tables.
    pub fn new(maps: Vec<Arc<dyn Map>>) -> MapList {
        MapList { maps }
    }

    /// The tables.
    pub fn maps(&self) -> &[Arc<dyn Map>] {
        &self.maps
    }

    /// Whether the list has no tables (the parameter is empty).
    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }

    /// Looks `key` up in each table in turn; the first table that has it
    /// answers. An error stops the search: a table that cannot answer might
    /// have held the key, so going on could give a wrong answer.
    pub async fn lookup<'a>(&'a self, key: &'a str) -> LookupResult<'a> {
        for map in &self.maps {
            if let Some(value) = map.lookup(key).await? {
                return Ok(Some(value));
            }
        }
        Ok(None)
    }

    /// Searches with a sequence of keys (see [`crate::search`]): each key
    /// is tried in every table before the next key, as Postfix does, and
    /// partial keys (`user`, `@domain`, parent domains) skip pattern
    /// tables, which see whole keys only. Returns the value and the key
    /// that found it.
    pub async fn search<'a>(
        &'a self,
        keys: &'a [SearchKey],
    ) -> Result<Option<(&'a SearchKey, std::borrow::Cow<'a, str>)>, MapError> {
        for key in keys {
            for map in &self.maps {
                let kind = map.key_kind();
                if key.partial && kind != KeyKind::Fixed {
                    continue;
                }
                if let Some(value) = map.lookup(&key.key).await? {
                    return Ok(Some((key, value)));
                }
            }
        }
        Ok(None)
    }

    /// [`search`](Self::search) for callers without a runtime: every
    /// table must answer at once (network tables give a temporary error).
    ///
    /// # Errors
    ///
    /// The first table error.
    pub fn search_now<'a>(
        &'a self,
        keys: &'a [SearchKey],
    ) -> Result<Option<(&'a SearchKey, std::borrow::Cow<'a, str>)>, MapError> {
        for key in keys {
            for map in &self.maps {
                if key.partial && map.key_kind() != KeyKind::Fixed {
                    continue;
                }
                if let Some(value) = map.lookup(&key.key).now(map.name())? {
                    return Ok(Some((key, value)));
                }
            }
        }
        Ok(None)
    }

    /// [`lookup`](Self::lookup) for callers without a runtime: every table
    /// must answer at once (network tables give a temporary error).
    pub fn lookup_now<'a>(&'a self, key: &'a str) -> LookupResult<'a> {
        for map in &self.maps {
            if let Some(value) = map.lookup(key).now(map.name())? {
                return Ok(Some(value));
            }
        }
        Ok(None)
    }
}

//! Opening tables by `type:name`, once each, and picking up rebuilt ones.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::hash::{self, HashTable};
use crate::inline::InlineMap;
use crate::key::Folding;
use crate::list::MapList;
use crate::map::{Map, MapError};
use crate::static_map::StaticMap;
use crate::texthash::TextHash;

/// A `type:name` table reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableRef<'a> {
    /// The table type (`hash`, `regexp`, ...).
    pub kind: &'a str,
    /// The name: a path, or the table's inline text.
    pub name: &'a str,
}

impl<'a> TableRef<'a> {
    /// Splits `type:name`.
    ///
    /// # Example
    /// ```
    /// use mta_maps::registry::TableRef;
    /// let r = TableRef::parse("hash:/etc/mta/virtual").unwrap();
    /// assert_eq!((r.kind, r.name), ("hash", "/etc/mta/virtual"));
    /// assert!(TableRef::parse("/etc/mta/virtual").is_err());
    /// ```
    pub fn parse(reference: &'a str) -> Result<TableRef<'a>, MapError> {
        match reference.split_once(':') {
            Some((kind, name))
                if !kind.is_empty()
                    && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                Ok(TableRef { kind, name })
            }
            _ => Err(MapError::config(
                reference.to_string(),
                format!("need \"type:name\" for a table, got \"{reference}\""),
            )),
        }
    }
}

/// What a table opener gets besides the name.
#[derive(Debug, Clone, Default)]
pub struct OpenContext {
    /// Relative table paths resolve against this directory (mtad's own
    /// example configurations use them).
    pub config_directory: Option<PathBuf>,
    /// Case folding for fixed-string tables (`postmap -f` turns it off).
    pub folding: Folding,
}

impl OpenContext {
    /// `name` as a path, made absolute against the configuration directory.
    pub fn path(&self, name: &str) -> PathBuf {
        let path = Path::new(name);
        match &self.config_directory {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }
}

/// A function that opens one type of table; it returns the table and any
/// warnings about its source (bad lines that were skipped).
pub type Opener =
    Box<dyn Fn(&str, &OpenContext) -> Result<(Arc<dyn Map>, Vec<String>), MapError> + Send + Sync>;

/// Identity of a file, to see that it was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    device: u64,
    inode: u64,
    modified_ns: i128,
    len: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        device: m.dev(),
        inode: m.ino(),
        modified_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        len: m.len(),
    })
}

struct Opened {
    map: Arc<dyn Map>,
    /// The files the table was read from, and their identity then.
    files: Vec<(PathBuf, Option<FileStamp>)>,
}

/// Opens tables by reference, keeps one instance of each, and reopens
/// those whose files changed.
pub struct Registry {
    openers: HashMap<String, Opener>,
    context: OpenContext,
    opened: Mutex<HashMap<String, Opened>>,
    warnings: Mutex<Vec<String>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut types: Vec<&String> = self.openers.keys().collect();
        types.sort();
        f.debug_struct("Registry").field("types", &types).finish()
    }
}

impl Registry {
    /// A registry with every table type this crate implements.
    ///
    /// # Example
    /// ```
    /// use mta_maps::registry::{OpenContext, Registry};
    /// let registry = Registry::new(OpenContext::default());
    /// let list = registry.open_list("static:5000, inline:{ a=b }").unwrap();
    /// assert_eq!(list.lookup_now("a").unwrap().as_deref(), Some("5000"));
    /// assert!(registry.open("nosuch:x").is_err());
    /// ```
    pub fn new(context: OpenContext) -> Registry {
        let mut r = Registry {
            openers: HashMap::new(),
            context,
            opened: Mutex::new(HashMap::new()),
            warnings: Mutex::new(Vec::new()),
        };
        let hash_opener =
            |name: &str, ctx: &OpenContext| -> Result<(Arc<dyn Map>, Vec<String>), MapError> {
                let path = hash::compiled_path(&ctx.path(name));
                let kind_name = format!("hash:{name}");
                Ok((
                    Arc::new(HashTable::open(&path, &kind_name, ctx.folding)?),
                    Vec::new(),
                ))
            };
        r.register("hash", Box::new(hash_opener));
        r.register("btree", Box::new(hash_opener));
        r.register(
            "texthash",
            Box::new(|name, ctx| {
                let (t, w) = TextHash::open(&ctx.path(name), ctx.folding)?;
                Ok((Arc::new(t), w.iter().map(ToString::to_string).collect()))
            }),
        );
        r.register(
            "regexp",
            Box::new(|name, ctx| {
                let (t, w) =
                    crate::regexp::RegexpTable::open(&ctx.path(name), &format!("regexp:{name}"))?;
                Ok((Arc::new(t), w.iter().map(ToString::to_string).collect()))
            }),
        );
        r.register(
            "pcre",
            Box::new(|name, ctx| {
                let (t, w) =
                    crate::pcre::PcreTable::open(&ctx.path(name), &format!("pcre:{name}"))?;
                Ok((Arc::new(t), w.iter().map(ToString::to_string).collect()))
            }),
        );
        r.register(
            "cidr",
            Box::new(|name, ctx| {
                let t = crate::cidr::CidrTable::open(ctx.path(name))?;
                let warnings = t.warnings().iter().map(ToString::to_string).collect();
                Ok((Arc::new(t), warnings))
            }),
        );
        r.register(
            "inline",
            Box::new(|name, _| Ok((Arc::new(InlineMap::parse(name)?), Vec::new()))),
        );
        r.register(
            "unix",
            Box::new(|name, _| Ok((Arc::new(crate::unix::UnixTable::open(name)?), Vec::new()))),
        );
        r.register(
            "static",
            Box::new(|name, _| Ok((Arc::new(StaticMap::new(name)), Vec::new()))),
        );
        r
    }

    /// Adds or replaces the opener for a table type (network tables
    /// register themselves this way).
    pub fn register(&mut self, kind: &str, opener: Opener) {
        self.openers.insert(kind.to_string(), opener);
    }

    /// The table types this registry can open, sorted.
    pub fn types(&self) -> Vec<String> {
        let mut t: Vec<String> = self.openers.keys().cloned().collect();
        t.sort();
        t
    }

    /// The files a table of `kind` named `name` is read from.
    fn files_of(&self, kind: &str, name: &str) -> Vec<PathBuf> {
        match kind {
            "hash" | "btree" => vec![hash::compiled_path(&self.context.path(name))],
            "inline" | "static" => Vec::new(),
            _ if name.starts_with('/') || self.context.config_directory.is_some() => {
                vec![self.context.path(name)]
            }
            _ => Vec::new(),
        }
    }

    /// Opens `reference` (`type:name`), or returns the instance already
    /// open.
    pub fn open(&self, reference: &str) -> Result<Arc<dyn Map>, MapError> {
        let reference = reference.trim();
        if let Some(o) = self
            .opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(reference)
        {
            return Ok(Arc::clone(&o.map));
        }
        let table = TableRef::parse(reference)?;
        // proxy:TYPE:NAME asks Postfix's proxymap to open TYPE:NAME for
        // processes that may not; in one process it is that table.
        if table.kind == "proxy" {
            return self.open(table.name);
        }
        let opener = self.openers.get(table.kind).ok_or_else(|| {
            MapError::config(
                reference.to_string(),
                format!(
                    "unsupported dictionary type: {} (supported: {})",
                    table.kind,
                    self.types().join(", ")
                ),
            )
        })?;
        let files: Vec<(PathBuf, Option<FileStamp>)> = self
            .files_of(table.kind, table.name)
            .into_iter()
            .map(|p| {
                let s = stamp(&p);
                (p, s)
            })
            .collect();
        let (map, warnings) = opener(table.name, &self.context)?;
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(warnings);
        self.opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                reference.to_string(),
                Opened {
                    map: Arc::clone(&map),
                    files,
                },
            );
        Ok(map)
    }

    /// Opens every table of a `*_maps` value (references separated by
    /// commas or white space; `inline:{...}` and `static:{...}` may hold
    /// either inside their braces).
    pub fn open_list(&self, value: &str) -> Result<MapList, MapError> {
        let mut maps = Vec::new();
        for reference in split_references(value) {
            maps.push(self.open(&reference)?);
        }
        Ok(MapList::new(maps))
    }

    /// Reopens every open table whose files changed since it was opened
    /// (a table rebuilt by `mtad postmap`). Returns the references
    /// reopened; callers fetch the new instances with
    /// [`open`](Self::open). A table that fails to reopen keeps its old
    /// instance, and the error is returned for logging.
    pub fn refresh(&self) -> (Vec<String>, Vec<MapError>) {
        let stale: Vec<String> = self
            .opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, o)| o.files.iter().any(|(p, s)| stamp(p) != *s))
            .map(|(r, _)| r.clone())
            .collect();
        let mut reopened = Vec::new();
        let mut errors = Vec::new();
        for reference in stale {
            let old = self
                .opened
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&reference);
            match self.open(&reference) {
                Ok(_) => reopened.push(reference),
                Err(e) => {
                    if let Some(old) = old {
                        self.opened
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(reference, old);
                    }
                    errors.push(e);
                }
            }
        }
        (reopened, errors)
    }

    /// Warnings from opening tables (skipped source lines), taken once.
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Splits a list of table references, keeping `{...}` groups whole: the
/// list syntax of every Postfix list parameter
/// ([`mta_core::config::split_list`]).
pub fn split_references(value: &str) -> Vec<String> {
    mta_core::config::split_list(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Duplicates;

    #[test]
    fn references_keep_braced_groups() {
        assert_eq!(
            split_references("hash:/a, inline:{ x=1, { y = 2 } } static:{ a b },regexp:/r"),
            [
                "hash:/a",
                "inline:{ x=1, { y = 2 } }",
                "static:{ a b }",
                "regexp:/r"
            ]
        );
    }

    #[test]
    fn a_rebuilt_hash_table_is_picked_up() {
        let dir = std::env::temp_dir().join(format!("mta-maps-registry-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fst = dir.join("virtual.fst");
        let build = |v: &str| {
            hash::build(
                vec![("a@example.com".into(), v.into(), 1)],
                Folding::Lower,
                Duplicates::KeepFirst,
                &fst,
            )
            .unwrap();
        };
        build("old");
        let registry = Registry::new(OpenContext {
            config_directory: Some(dir.clone()),
            ..Default::default()
        });
        let t = registry.open("hash:virtual").unwrap();
        assert_eq!(
            t.lookup("a@example.com").now("t").unwrap().as_deref(),
            Some("old")
        );
        assert!(registry.refresh().0.is_empty(), "nothing changed yet");
        build("new");
        let (reopened, errors) = registry.refresh();
        assert_eq!(
            (reopened, errors),
            (vec!["hash:virtual".to_string()], vec![])
        );
        let t2 = registry.open("hash:virtual").unwrap();
        assert_eq!(
            t2.lookup("a@example.com").now("t").unwrap().as_deref(),
            Some("new")
        );
        // The old instance still answers for whoever holds it.
        assert_eq!(
            t.lookup("a@example.com").now("t").unwrap().as_deref(),
            Some("old")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! `hash` (and its synonym `btree`) tables: a source file compiled by
//! `mtad postmap hash:FILE` into `FILE.fst`, opened by mmap.
//!
//! The compiled file is this crate's own format, never Postfix's
//! `FILE.db`, so both can sit side by side:
//!
//! ```text
//! magic "MTAFST02" | flags u32 | entry count u64 | part count u32
//!   | fst length u64, once per part | fst bytes, once per part | values
//! ```
//!
//! The keys live in [`fst::Map`]s whose output for a key is the offset
//! of its value in the values section, where each value is a
//! little-endian `u32` length and its UTF-8 bytes. A big table is split
//! into parts by key range (one per core, each holding at least
//! [`PART_MIN_KEYS`] keys), built at the same time on separate threads:
//! building an fst is the costly step of `postmap`, and it does not
//! spread over cores by itself. A lookup picks the part whose first key
//! is the greatest not above its key. An fst finds a key in
//! time proportional to the key's length, shares prefixes and suffixes
//! (addresses in one domain cost little), and is read in place from the
//! mapped file: opening a table reads nothing, and a lookup allocates
//! nothing.
//!
//! The file is written to `FILE.fst.tmp`, fsynced, and renamed over
//! `FILE.fst`, so a reader sees the old table or the new one, never half
//! of one. A running program picks up a rebuilt table by opening it again
//! (see [`crate::registry::Registry::refresh`]); tables themselves are
//! immutable.

use std::borrow::Cow;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fst::{Map as FstMap, MapBuilder};
use memmap2::Mmap;

use crate::key::Folding;
use crate::map::{KeyKind, Lookup, Map, MapError};

/// The first bytes of a compiled table.
pub const MAGIC: &[u8; 8] = b"MTAFST02";

/// The fewest keys a part of a compiled table holds: smaller tables are
/// built in one part, on one thread.
pub const PART_MIN_KEYS: usize = 100_000;

/// The most parts a compiled table has.
const MAX_PARTS: usize = 16;

/// Header flag: keys were stored as written (`postmap -f`).
const FLAG_CASE_KEPT: u32 = 1;

const HEADER_LEN: usize = 8 + 4 + 8 + 4;

/// The compiled file that belongs to a source file: `FILE.fst`.
pub fn compiled_path(source: &Path) -> PathBuf {
    let mut name = source.as_os_str().to_owned();
    name.push(".fst");
    PathBuf::from(name)
}

/// What to do with a key that appears twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Duplicates {
    /// Keep the first value and warn (Postfix's default).
    #[default]
    KeepFirst,
    /// Keep the last value silently (`postmap -r`).
    Replace,
}

/// A key that appeared twice while building.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    /// The key, folded as stored.
    pub key: String,
    /// The source line of the later entry.
    pub line: usize,
}

/// Builds a compiled table from `(key, value, line)` entries and writes it
/// atomically to `target`. Returns the duplicate keys found.
pub fn build(
    entries: impl IntoIterator<Item = (String, String, usize)>,
    folding: Folding,
    duplicates: Duplicates,
    target: &Path,
) -> Result<Vec<DuplicateKey>, MapError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    build_in_parts(entries, folding, duplicates, target, |keys| {
        (keys / PART_MIN_KEYS).clamp(1, cores.min(MAX_PARTS))
    })
}

/// [`build`], with the number of parts chosen by `parts` from the number
/// of keys.
fn build_in_parts(
    entries: impl IntoIterator<Item = (String, String, usize)>,
    folding: Folding,
    duplicates: Duplicates,
    target: &Path,
    parts: impl Fn(usize) -> usize,
) -> Result<Vec<DuplicateKey>, MapError> {
    let mut pairs: Vec<(String, String, usize)> = entries
        .into_iter()
        .map(|(k, v, line)| {
            // Most keys are already folded: keep their allocation.
            let folded = match folding.fold(&k) {
                std::borrow::Cow::Borrowed(_) => k,
                std::borrow::Cow::Owned(f) => f,
            };
            (folded, v, line)
        })
        .collect();
    // A stable sort keeps file order among equal keys, so the first (or
    // last) occurrence is easy to pick.
    pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut dups = Vec::new();
    // `dedup_by` hands over (later, kept) pairs of equal keys.
    pairs.dedup_by(|later, kept| {
        if later.0 != kept.0 {
            return false;
        }
        match duplicates {
            Duplicates::KeepFirst => dups.push(DuplicateKey {
                key: std::mem::take(&mut later.0),
                line: later.2,
            }),
            Duplicates::Replace => std::mem::swap(&mut kept.1, &mut later.1),
        }
        true
    });
    let unique = pairs;
    let io_error = |what: &str, e: std::io::Error| {
        MapError::config(target.display().to_string(), format!("{what}: {e}"))
    };
    let mut values: Vec<u8> = Vec::new();
    let mut offsets = Vec::with_capacity(unique.len());
    for (key, value, _) in &unique {
        offsets.push(values.len() as u64);
        let len = u32::try_from(value.len()).map_err(|_| {
            MapError::config(
                target.display().to_string(),
                format!("value of {key} is too long"),
            )
        })?;
        values.extend_from_slice(&len.to_le_bytes());
        values.extend_from_slice(value.as_bytes());
    }
    // Every part holds at least one key.
    let parts = parts(unique.len()).min(unique.len()).clamp(1, MAX_PARTS);
    let build_part = |range: std::ops::Range<usize>| -> Result<Vec<u8>, fst::Error> {
        let mut builder = MapBuilder::memory();
        for i in range {
            builder.insert(unique[i].0.as_bytes(), offsets[i])?;
        }
        builder.into_inner()
    };
    let ranges: Vec<_> = (0..parts)
        .map(|p| p * unique.len() / parts..(p + 1) * unique.len() / parts)
        .collect();
    let built: Vec<Result<Vec<u8>, fst::Error>> = if parts == 1 {
        vec![build_part(0..unique.len())]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = ranges
                .iter()
                .map(|r| {
                    let r = r.clone();
                    scope.spawn(move || build_part(r))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("fst builder thread panicked"))
                .collect()
        })
    };
    let mut fsts = Vec::with_capacity(parts);
    for part in built {
        fsts.push(part.map_err(|e| {
            MapError::config(target.display().to_string(), format!("building index: {e}"))
        })?);
    }
    let flags = if folding == Folding::None {
        FLAG_CASE_KEPT
    } else {
        0
    };
    let mut tmp_name = target.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut file = File::create(&tmp).map_err(|e| io_error("create", e))?;
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&flags.to_le_bytes());
    header.extend_from_slice(&(unique.len() as u64).to_le_bytes());
    header.extend_from_slice(&(fsts.len() as u32).to_le_bytes());
    for part in &fsts {
        header.extend_from_slice(&(part.len() as u64).to_le_bytes());
    }
    file.write_all(&header)
        .and_then(|()| fsts.iter().try_for_each(|part| file.write_all(part)))
        .and_then(|()| file.write_all(&values))
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("write", e))?;
    drop(file);
    std::fs::rename(&tmp, target).map_err(|e| io_error("rename", e))?;
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Make the rename itself durable.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(dups)
}

/// Compiles the source file `source` into `source.fst`, as `postmap
/// hash:FILE` does, adding `extra` entries (`postmap -i` reads them from
/// standard input) after the file's. Returns the warnings Postfix's
/// `postmap` would print: skipped lines, then duplicate keys (unless
/// `duplicates` is [`Duplicates::Replace`]).
pub fn compile(
    source: &Path,
    extra: &str,
    folding: Folding,
    duplicates: Duplicates,
) -> Result<Vec<String>, MapError> {
    let source_name = source.display().to_string();
    let text = std::fs::read_to_string(source).map_err(|e| {
        MapError::config(
            format!("hash:{source_name}"),
            format!("open {source_name}: {e}"),
        )
    })?;
    let (mut entries, warnings) = crate::source::parse(&text, &source_name);
    let mut messages: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    if !extra.is_empty() {
        let (more, more_warnings) = crate::source::parse(extra, "-");
        messages.extend(more_warnings.iter().map(ToString::to_string));
        entries.extend(more);
    }
    let target = compiled_path(source);
    let dups = build(
        entries.into_iter().map(|e| (e.key, e.value, e.line)),
        folding,
        duplicates,
        &target,
    )?;
    messages.extend(
        dups.iter()
            .map(|d| format!("{}: duplicate entry: \"{}\"", target.display(), d.key)),
    );
    Ok(messages)
}

/// The bytes of the mapped file between two offsets, for `fst::Map`.
#[derive(Debug, Clone)]
struct Section {
    map: Arc<Mmap>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for Section {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.start..self.end]
    }
}

/// An open compiled table.
pub struct HashTable {
    name: String,
    /// The parts, in key order, each with its first key (empty for the
    /// first part, which takes every key below the second's).
    parts: Vec<(Vec<u8>, FstMap<Section>)>,
    file: Arc<Mmap>,
    values_start: usize,
    folding: Folding,
    case_kept: bool,
    entries: u64,
}

impl std::fmt::Debug for HashTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashTable")
            .field("name", &self.name)
            .field("entries", &self.entries)
            .finish()
    }
}

impl HashTable {
    /// Opens `FILE.fst` for the table `name` (`hash:FILE`). Lookups fold
    /// keys as `folding` says: Postfix folds every query unless told not
    /// to (`postmap -f -q`), whether or not the table was built with
    /// `-f`.
    ///
    /// # Example
    /// ```
    /// use mta_maps::hash::{self, Duplicates, HashTable};
    /// use mta_maps::key::Folding;
    /// let dir = std::env::temp_dir().join(format!("hash-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let fst = dir.join("virtual.fst");
    /// let entries = vec![("Alice@Example.com".to_string(), "alice".to_string(), 1)];
    /// hash::build(entries, Folding::Lower, Duplicates::KeepFirst, &fst).unwrap();
    /// let table = HashTable::open(&fst, "hash:virtual", Folding::Lower).unwrap();
    /// assert_eq!(table.get("ALICE@example.COM").unwrap().as_deref(), Some("alice"));
    /// assert_eq!(table.get("bob@example.com").unwrap(), None);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn open(path: &Path, name: &str, folding: Folding) -> Result<HashTable, MapError> {
        let file = File::open(path).map_err(|e| {
            MapError::config(
                name.to_string(),
                format!(
                    "open {}: {e}: run \"mtad postmap {name}\" to build it",
                    path.display()
                ),
            )
        })?;
        #[allow(unsafe_code)]
        // SAFETY: the file is only ever replaced by rename, never written
        // in place (see `build`), so the mapped bytes cannot change under
        // us; a truncated or foreign file is caught by the checks below,
        // and every access goes through bounds-checked slices.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| {
            MapError::config(name.to_string(), format!("mmap {}: {e}", path.display()))
        })?;
        let bad = |why: &str| {
            MapError::config(
                name.to_string(),
                format!("{}: {why}; rebuild it", path.display()),
            )
        };
        if map.len() < HEADER_LEN || &map[..8] != MAGIC {
            return Err(bad("not a compiled mtad table"));
        }
        let u32_at = |at: usize| u32::from_le_bytes(map[at..at + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |at: usize| u64::from_le_bytes(map[at..at + 8].try_into().unwrap_or([0; 8]));
        let flags = u32_at(8);
        let entries = u64_at(12);
        let count = u32_at(20) as usize;
        if count == 0 || count > MAX_PARTS {
            return Err(bad("corrupt header"));
        }
        let lengths_end = HEADER_LEN + 8 * count;
        if map.len() < lengths_end {
            return Err(bad("truncated"));
        }
        let mut bounds = Vec::with_capacity(count);
        let mut start = lengths_end;
        for p in 0..count {
            let end = usize::try_from(u64_at(HEADER_LEN + 8 * p))
                .ok()
                .and_then(|len| start.checked_add(len))
                .filter(|&e| e <= map.len())
                .ok_or_else(|| bad("truncated"))?;
            bounds.push((start, end));
            start = end;
        }
        let values_start = start;
        let file = Arc::new(map);
        let mut parts = Vec::with_capacity(count);
        for (p, (start, end)) in bounds.into_iter().enumerate() {
            let section = Section {
                map: Arc::clone(&file),
                start,
                end,
            };
            let index = FstMap::new(section).map_err(|e| bad(&format!("corrupt index: {e}")))?;
            let first = if p == 0 {
                Vec::new()
            } else {
                use fst::Streamer;
                let mut stream = index.stream();
                let first = stream.next().map(|(k, _)| k.to_vec());
                first.ok_or_else(|| bad("corrupt index: empty part"))?
            };
            parts.push((first, index));
        }
        Ok(HashTable {
            name: name.to_string(),
            parts,
            file,
            values_start,
            folding,
            case_kept: flags & FLAG_CASE_KEPT != 0,
            entries,
        })
    }

    /// The value for `key`, folded as the table was opened to fold.
    pub fn get(&self, key: &str) -> Result<Option<Cow<'_, str>>, MapError> {
        self.get_folded(key, self.folding)
    }

    /// The value for `key`, folded as `folding` says (`postmap -f -q`
    /// queries without folding).
    pub fn get_folded(
        &self,
        key: &str,
        folding: Folding,
    ) -> Result<Option<Cow<'_, str>>, MapError> {
        let key = folding.fold(key);
        let key = key.as_bytes();
        // The last part whose first key is not above the key.
        let part = self.parts[1..].partition_point(|(first, _)| first.as_slice() <= key);
        let Some(offset) = self.parts[part].1.get(key) else {
            return Ok(None);
        };
        self.value_at(offset).map(|v| Some(Cow::Borrowed(v)))
    }

    fn value_at(&self, offset: u64) -> Result<&str, MapError> {
        let corrupt = || {
            MapError::config(
                self.name.clone(),
                "corrupt value section; rebuild the table",
            )
        };
        let start = usize::try_from(offset)
            .ok()
            .and_then(|o| self.values_start.checked_add(o))
            .ok_or_else(corrupt)?;
        let len_bytes = self.file.get(start..start + 4).ok_or_else(corrupt)?;
        let len = u32::from_le_bytes(len_bytes.try_into().map_err(|_| corrupt())?) as usize;
        let bytes = self
            .file
            .get(start + 4..start + 4 + len)
            .ok_or_else(corrupt)?;
        std::str::from_utf8(bytes).map_err(|_| corrupt())
    }

    /// Every entry in key order, for `postmap -s`.
    pub fn entries(&self) -> Result<Vec<(String, String)>, MapError> {
        use fst::Streamer;
        let mut out = Vec::with_capacity(self.entries as usize);
        for (_, index) in &self.parts {
            let mut stream = index.stream();
            while let Some((key, offset)) = stream.next() {
                let key = String::from_utf8_lossy(key).into_owned();
                out.push((key, self.value_at(offset)?.to_string()));
            }
        }
        Ok(out)
    }

    /// The number of keys.
    pub fn len(&self) -> u64 {
        self.entries
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// How the table folds keys.
    pub fn folding(&self) -> Folding {
        self.folding
    }

    /// Whether the table was built with keys kept as written (`postmap
    /// -f`).
    pub fn case_kept(&self) -> bool {
        self.case_kept
    }
}

impl Map for HashTable {
    fn lookup<'a>(&'a self, key: &'a str) -> Lookup<'a> {
        Lookup::ready(self.get(key))
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn key_kind(&self) -> KeyKind {
        KeyKind::Fixed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mta-maps-hash-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn entries(pairs: &[(&str, &str)]) -> Vec<(String, String, usize)> {
        pairs
            .iter()
            .enumerate()
            .map(|(i, (k, v))| (k.to_string(), v.to_string(), i + 1))
            .collect()
    }

    #[test]
    fn duplicates_keep_first_or_last() {
        let dir = scratch("dups");
        let path = dir.join("t.fst");
        let e = entries(&[("Key1", "v1"), ("key1", "v2"), ("x", "y")]);
        let dups = build(e.clone(), Folding::Lower, Duplicates::KeepFirst, &path).unwrap();
        assert_eq!(
            dups,
            [DuplicateKey {
                key: "key1".into(),
                line: 2
            }]
        );
        let t = HashTable::open(&path, "hash:t", Folding::Lower).unwrap();
        assert_eq!(t.get("KEY1").unwrap().as_deref(), Some("v1"));
        assert_eq!(t.len(), 2);
        build(e.clone(), Folding::Lower, Duplicates::Replace, &path).unwrap();
        assert_eq!(
            HashTable::open(&path, "hash:t", Folding::Lower)
                .unwrap()
                .get("key1")
                .unwrap()
                .as_deref(),
            Some("v2")
        );
        // -f keeps case: two keys, and queries fold only when asked.
        build(e, Folding::None, Duplicates::KeepFirst, &path).unwrap();
        let t = HashTable::open(&path, "hash:t", Folding::None).unwrap();
        assert_eq!(t.get("Key1").unwrap().as_deref(), Some("v1"));
        assert_eq!(
            t.get_folded("Key1", Folding::Lower).unwrap().as_deref(),
            Some("v2")
        );
        assert_eq!(t.entries().unwrap().len(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn foreign_or_truncated_files_are_configuration_errors() {
        let dir = scratch("bad");
        let path = dir.join("t.fst");
        std::fs::write(&path, b"not a table").unwrap();
        let e = HashTable::open(&path, "hash:t", Folding::Lower).unwrap_err();
        assert!(
            !e.is_temporary() && e.to_string().contains("not a compiled mtad table"),
            "{e}"
        );
        build(
            entries(&[("a", "b")]),
            Folding::Lower,
            Duplicates::KeepFirst,
            &path,
        )
        .unwrap();
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() / 2]).unwrap();
        assert!(
            HashTable::open(&path, "hash:t", Folding::Lower)
                .and_then(|t| t.get("a").map(|v| v.map(Cow::into_owned)))
                .is_err()
        );
        let missing =
            HashTable::open(&dir.join("none.fst"), "hash:none", Folding::Lower).unwrap_err();
        assert!(
            missing.to_string().contains("mtad postmap hash:none"),
            "{missing}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    proptest::proptest! {
        #[test]
        fn every_key_built_is_found_in_any_number_of_parts(
            keys in proptest::collection::btree_map("[a-zA-Z0-9@.+-]{1,20}", "[ -~]{1,20}", 0..50),
            probes in proptest::collection::vec("[a-zA-Z0-9@.+-]{0,20}", 0..20),
            parts in 1usize..6,
        ) {
            let dir = scratch("prop");
            let path = dir.join("t.fst");
            let e: Vec<(String, String, usize)> = keys.iter().map(|(k, v)| (k.clone(), v.trim().to_string(), 1)).collect();
            build_in_parts(e, Folding::None, Duplicates::KeepFirst, &path, |_| parts).unwrap();
            let t = HashTable::open(&path, "hash:t", Folding::None).unwrap();
            proptest::prop_assert_eq!(t.parts.len(), parts.min(keys.len()).max(1));
            for (k, v) in &keys {
                let got = t.get(k).unwrap();
                proptest::prop_assert_eq!(got.as_deref(), Some(v.trim()));
            }
            for p in &probes {
                let want = keys.get(p).map(|v| v.trim());
                let got = t.get(p).unwrap();
                proptest::prop_assert_eq!(got.as_deref(), want);
            }
            let all: Vec<(String, String)> = keys.iter().map(|(k, v)| (k.clone(), v.trim().to_string())).collect();
            proptest::prop_assert_eq!(t.entries().unwrap(), all);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}

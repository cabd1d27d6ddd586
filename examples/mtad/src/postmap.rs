//! `mtad postmap`: Postfix's `postmap(1)` over mta-maps tables.

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;

use clap::Parser;
use mta_maps::hash::{self, Duplicates, HashTable};
use mta_maps::key::Folding;
use mta_maps::list::MapList;
use mta_maps::registry::{OpenContext, Registry, TableRef};

use crate::{Fatal, config_dir};

/// Postfix lookup table management.
#[derive(Debug, Parser)]
#[command(name = "postmap", disable_help_flag = true)]
pub(crate) struct Args {
    /// The configuration directory (default: $MAIL_CONFIG, then /etc/mta).
    #[arg(short = 'c')]
    config_dir: Option<PathBuf>,
    /// Do not fold keys to lower case.
    #[arg(short = 'f')]
    keep_case: bool,
    /// Incremental mode: add entries from standard input to the table.
    #[arg(short = 'i')]
    incremental: bool,
    /// Include the terminating null in keys and values (accepted; the
    /// compiled format has no such distinction).
    #[arg(short = 'N')]
    with_null: bool,
    /// Do not include the terminating null (accepted, as -N).
    #[arg(short = 'n')]
    without_null: bool,
    /// Do not change ownership of the output file (accepted).
    #[arg(short = 'o')]
    no_chown: bool,
    /// Do not inherit the source file's permissions (accepted).
    #[arg(short = 'p')]
    no_perms: bool,
    /// Look up KEY (or keys from standard input with "-").
    #[arg(short = 'q', value_name = "KEY")]
    query: Option<String>,
    /// Replace duplicate entries instead of keeping the first.
    #[arg(short = 'r')]
    replace: bool,
    /// Print every entry of the table.
    #[arg(short = 's')]
    show: bool,
    /// Do not warn about duplicate entries.
    #[arg(short = 'w')]
    no_dup_warning: bool,
    /// Verbose (accepted).
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    verbose: u8,
    /// Print usage.
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Tables, as `[type:]name`.
    #[arg(required = true)]
    tables: Vec<String>,
}

/// What postmap's run ends with: success, or "not found" for -q (exit 1).
pub(crate) enum Outcome {
    Done,
    NotFound,
}

/// The default table type: `default_database_type`, `hash` unless set.
fn default_type(args: &Args) -> String {
    let (dir, explicit) = config_dir(args.config_dir.clone());
    match crate::postconf::load(&dir, explicit, "postmap") {
        Ok(loaded) => loaded
            .config
            .expanded("default_database_type")
            .unwrap_or_else(|_| "hash".into()),
        Err(_) => "hash".to_string(),
    }
}

fn with_type(table: &str, default: &str) -> String {
    if TableRef::parse(table).is_ok() {
        table.to_string()
    } else {
        format!("{default}:{table}")
    }
}

/// Runs postmap.
/// Which tool is running: the two share their command line and tables and
/// differ in the source format, `-q -` output and the `@` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tool {
    /// `postmap`: `key value` sources.
    Postmap,
    /// `postalias` (and `newaliases`): aliases(5) sources.
    Postalias,
}

pub(crate) fn run(args: Args, tool: Tool) -> Result<Outcome, Fatal> {
    let default = default_type(&args);
    let tables: Vec<String> = args.tables.iter().map(|t| with_type(t, &default)).collect();
    let folding = if args.keep_case {
        Folding::None
    } else {
        Folding::Lower
    };
    let _ = (
        args.with_null,
        args.without_null,
        args.no_chown,
        args.no_perms,
        args.verbose,
    );
    let context = OpenContext {
        config_directory: None,
        folding,
    };
    if let Some(key) = &args.query {
        let registry = Registry::new(context);
        let list = open_all(&registry, &tables)?;
        if key == "-" {
            let stdin = std::io::stdin();
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for line in stdin.lock().lines() {
                let line = line.map_err(|e| Fatal(format!("read standard input: {e}")))?;
                let key = line.trim_end_matches('\r');
                if let Some(value) = query(&list, key)? {
                    let colon = if tool == Tool::Postalias { ":" } else { "" };
                    writeln!(out, "{key}{colon}\t{value}")
                        .map_err(|e| Fatal(format!("write: {e}")))?;
                }
            }
            out.flush().map_err(|e| Fatal(format!("write: {e}")))?;
            return Ok(Outcome::Done);
        }
        return match query(&list, key)? {
            Some(value) => {
                println!("{value}");
                Ok(Outcome::Done)
            }
            None => Ok(Outcome::NotFound),
        };
    }
    if args.show {
        for table in &tables {
            dump(table, tool)?;
        }
        return Ok(Outcome::Done);
    }
    let duplicates = if args.replace {
        Duplicates::Replace
    } else {
        Duplicates::KeepFirst
    };
    for table in &tables {
        let t = TableRef::parse(table).map_err(|e| Fatal(e.to_string()))?;
        if t.kind != "hash" && t.kind != "btree" {
            return Err(Fatal(format!(
                "unsupported dictionary type: {} does not support bulk-mode creation.",
                t.kind
            )));
        }
        let source = PathBuf::from(t.name);
        let warnings = if args.incremental {
            incremental(&source, folding, duplicates)?
        } else {
            match tool {
                Tool::Postmap => hash::compile(&source, "", folding, duplicates)
                    .map_err(|e| Fatal(e.to_string()))?,
                Tool::Postalias => compile_aliases(&source, folding, duplicates)?,
            }
        };
        for w in warnings {
            if args.no_dup_warning && w.contains("duplicate entry") {
                continue;
            }
            crate::warn(&w);
        }
    }
    Ok(Outcome::Done)
}

/// A query in the tables in order. Each table folds the key as it was
/// built (fixed-string tables) or not at all (pattern tables).
fn query(list: &MapList, key: &str) -> Result<Option<String>, Fatal> {
    match list.lookup_now(key) {
        Ok(v) => Ok(v.map(|v| v.into_owned())),
        Err(e) => Err(Fatal(e.to_string())),
    }
}

fn open_all(registry: &Registry, tables: &[String]) -> Result<MapList, Fatal> {
    let mut maps = Vec::new();
    for table in tables {
        maps.push(registry.open(table).map_err(|e| Fatal(e.to_string()))?);
    }
    for w in registry.take_warnings() {
        crate::warn(&w);
    }
    Ok(MapList::new(maps))
}

/// `postmap -s`: every entry, in key order.
fn dump(table: &str, tool: Tool) -> Result<(), Fatal> {
    let t = TableRef::parse(table).map_err(|e| Fatal(e.to_string()))?;
    if t.kind != "hash" && t.kind != "btree" {
        return Err(Fatal(format!(
            "table {table} does not support sequential access"
        )));
    }
    let path = hash::compiled_path(&PathBuf::from(t.name));
    let table = HashTable::open(&path, table, Folding::None).map_err(|e| Fatal(e.to_string()))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (k, v) in table.entries().map_err(|e| Fatal(e.to_string()))? {
        let colon = if tool == Tool::Postalias { ":" } else { "" };
        writeln!(out, "{k}{colon}\t{v}").map_err(|e| Fatal(format!("write: {e}")))?;
    }
    out.flush().map_err(|e| Fatal(format!("write: {e}")))
}

/// `postmap -i`: the entries already in `FILE.fst`, then those on
/// standard input.
fn incremental(
    source: &std::path::Path,
    folding: Folding,
    duplicates: Duplicates,
) -> Result<Vec<String>, Fatal> {
    let target = hash::compiled_path(source);
    let mut entries: Vec<(String, String, usize)> = Vec::new();
    if target.exists() {
        let name = format!("hash:{}", source.display());
        let table =
            HashTable::open(&target, &name, Folding::None).map_err(|e| Fatal(e.to_string()))?;
        entries.extend(
            table
                .entries()
                .map_err(|e| Fatal(e.to_string()))?
                .into_iter()
                .map(|(k, v)| (k, v, 0)),
        );
    }
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| Fatal(format!("read standard input: {e}")))?;
    let (more, warnings) = mta_maps::source::parse(&input, "-");
    entries.extend(more.into_iter().map(|e| (e.key, e.value, e.line)));
    let dups =
        hash::build(entries, folding, duplicates, &target).map_err(|e| Fatal(e.to_string()))?;
    let mut messages: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    messages.extend(
        dups.iter()
            .map(|d| format!("{}: duplicate entry: \"{}\"", target.display(), d.key)),
    );
    Ok(messages)
}

/// `postalias FILE`: the aliases(5) source compiled into `FILE.fst`, with
/// the `@` entry that Postfix adds to every alias database (Postfix's NIS
/// `YP_*` entries are left out).
fn compile_aliases(
    source: &std::path::Path,
    folding: Folding,
    duplicates: Duplicates,
) -> Result<Vec<String>, Fatal> {
    let file = mta_maps::aliases::open(source).map_err(|e| Fatal(e.to_string()))?;
    let mut messages: Vec<String> = file.warnings.iter().map(ToString::to_string).collect();
    let mut entries: Vec<(String, String, usize)> = file
        .entries
        .iter()
        .map(|e| (e.key(folding).into_owned(), e.value.clone(), e.line))
        .collect();
    entries.push(("@".to_string(), "@".to_string(), usize::MAX));
    let target = hash::compiled_path(source);
    let dups =
        hash::build(entries, folding, duplicates, &target).map_err(|e| Fatal(e.to_string()))?;
    messages.extend(
        dups.iter()
            .map(|d| format!("{}: duplicate entry: \"{}\"", target.display(), d.key)),
    );
    Ok(messages)
}

/// `newaliases`: rebuilds every table of `alias_database`, as `postalias`
/// would.
pub(crate) fn newaliases(flag: Option<PathBuf>) -> Result<(), Fatal> {
    let (dir, explicit) = config_dir(flag);
    let config = crate::postconf::load_main(&dir, explicit, "newaliases")?;
    let default = config
        .expanded("default_database_type")
        .unwrap_or_else(|_| "hash".into());
    let tables = config
        .list("alias_database")
        .map_err(|e| Fatal(e.to_string()))?;
    for table in tables {
        let table = with_type(&table, &default);
        let t = TableRef::parse(&table).map_err(|e| Fatal(e.to_string()))?;
        if t.kind != "hash" && t.kind != "btree" {
            return Err(Fatal(format!(
                "unsupported dictionary type: {} does not support bulk-mode creation.",
                t.kind
            )));
        }
        let source = PathBuf::from(t.name);
        for w in compile_aliases(&source, Folding::Lower, Duplicates::KeepFirst)? {
            crate::warn(&w);
        }
    }
    Ok(())
}

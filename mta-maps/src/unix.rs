//! `unix:passwd.byname` and `unix:group.byname`: the system's account
//! and group databases as lookup tables, as Postfix's `unix:` type.
//!
//! A lookup of a user name answers its passwd entry in the passwd file's
//! format (`name:x:uid:gid:gecos:home:shell`; the password field is
//! always `x`), of a group name its group entry (`name:x:gid:members`).
//! Names are matched exactly, as the system matches them. This is what
//! Postfix's default `local_recipient_maps` (`proxy:unix:passwd.byname
//! $alias_maps`) asks, so unknown local users are refused at RCPT.
//!
//! Lookups go through the C library (NSS), which may block briefly for a
//! network directory; the table does not cache.
//!
//! # Example
//!
//! ```
//! use mta_maps::Map;
//! use mta_maps::unix::UnixTable;
//!
//! let passwd = UnixTable::open("passwd.byname")?;
//! let root = passwd.lookup("root").now("unix:passwd.byname")?.unwrap();
//! assert!(root.starts_with("root:x:0:0:"));
//! assert_eq!(passwd.lookup("no-such-user-here").now("unix:passwd.byname")?, None);
//! # Ok::<(), mta_maps::MapError>(())
//! ```

use std::borrow::Cow;

use crate::map::{KeyKind, Lookup, Map, MapError};

/// Which database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Database {
    Passwd,
    Group,
}

/// A `unix:` table.
#[derive(Debug)]
pub struct UnixTable {
    name: String,
    database: Database,
}

impl UnixTable {
    /// The table for the name after `unix:` (`passwd.byname` or
    /// `group.byname`).
    ///
    /// # Errors
    ///
    /// Another name: Postfix knows only these two.
    pub fn open(name: &str) -> Result<UnixTable, MapError> {
        let database = match name {
            "passwd.byname" => Database::Passwd,
            "group.byname" => Database::Group,
            other => {
                return Err(MapError::config(
                    format!("unix:{other}"),
                    "unknown table: use unix:passwd.byname or unix:group.byname",
                ));
            }
        };
        Ok(UnixTable {
            name: format!("unix:{name}"),
            database,
        })
    }

    fn find(&self, key: &str) -> Option<String> {
        // A name with a NUL cannot be asked for, and is no account.
        if key.is_empty() || key.contains('\0') {
            return None;
        }
        match self.database {
            Database::Passwd => {
                let u = nix::unistd::User::from_name(key).ok()??;
                Some(format!(
                    "{}:x:{}:{}:{}:{}:{}",
                    u.name,
                    u.uid,
                    u.gid,
                    u.gecos.to_string_lossy(),
                    u.dir.display(),
                    u.shell.display()
                ))
            }
            Database::Group => {
                let g = nix::unistd::Group::from_name(key).ok()??;
                Some(format!("{}:x:{}:{}", g.name, g.gid, g.mem.join(",")))
            }
        }
    }
}

impl Map for UnixTable {
    fn lookup<'a>(&'a self, key: &'a str) -> Lookup<'a> {
        Lookup::ready(Ok(self.find(key).map(Cow::Owned)))
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn key_kind(&self) -> KeyKind {
        KeyKind::Fixed
    }
}

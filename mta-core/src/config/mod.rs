//! Postfix-format configuration: `main.cf`, `master.cf`, the parameter
//! registry, expansion, and typed access.
//!
//! A [`Config`] is a parsed `main.cf` seen through the registry of every
//! parameter Postfix 3.7 knows ([`registry`]): a name that `main.cf` does
//! not set has Postfix's default; every value is expanded lazily, in all of
//! Postfix's forms ([`expand`]), when it is read; typed accessors turn the
//! result into a boolean, an integer, a duration or a list, and a value of
//! the wrong kind is an error naming the file and line of the setting.
//!
//! Defaults that Postfix computes from the machine (`myhostname`,
//! `mydomain`, `mynetworks`, `process_id`) come from [`HostFacts`] that the
//! caller gathers: this crate does not look at the machine itself.
//!
//! What this module does not do: read files (the caller passes text, and
//! file-valued list entries are returned as [`ListEntry::File`] for the
//! caller to read), or decide what a parameter means to the mail system.
//!
//! # Example
//! ```
//! use mta_core::config::{Config, HostFacts};
//! let main_cf = "compatibility_level = 3.6\n\
//!                myhostname = mail.example.com\n\
//!                mydestination = $myhostname, localhost\n\
//!                smtpd_helo_required = yes\n";
//! let config = Config::parse(main_cf, "/etc/mta/main.cf", HostFacts::default()).unwrap();
//! assert_eq!(config.expanded("smtpd_banner").unwrap(), "mail.example.com ESMTP mtad");
//! assert!(config.boolean("smtpd_helo_required").unwrap());
//! assert_eq!(config.time("smtpd_timeout").unwrap().as_secs(), 300);
//! assert_eq!(config.list("mydestination").unwrap(), ["mail.example.com", "localhost"]);
//! // compatibility_level 3.6 turns off the legacy relay_domains default.
//! assert_eq!(config.expanded("relay_domains").unwrap(), "");
//! ```

pub mod expand;
pub mod main_cf;
pub mod master_cf;
mod parameters;
pub mod registry;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use thiserror::Error;

use crate::units::TimeUnit;

use self::expand::{ExpandError, ExpandWarning};
use self::main_cf::{MainCf, MainCfError, MainCfWarning};
use self::registry::{ParameterKind, ServiceParameter};

pub use self::parameters::POSTFIX_VERSION;

/// A configuration that cannot be used, or a value that cannot be read as
/// what its parameter needs.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `main.cf` itself is malformed.
    #[error(transparent)]
    MainCf(#[from] MainCfError),
    /// A value could not be expanded.
    #[error("{location}: parameter {name}: {source}")]
    Expand {
        /// `FILE, line N` of the setting, or `default` for a default.
        location: String,
        /// The parameter being expanded.
        name: String,
        /// What went wrong.
        source: ExpandError,
    },
    /// A value is not of its parameter's kind (`smtpd_helo_required =
    /// maybe`, `message_size_limit = 10M`).
    #[error("{location}: parameter {name}: {expected}")]
    BadValue {
        /// `FILE, line N` of the setting, or `default` for a default.
        location: String,
        /// The parameter.
        name: String,
        /// The expanded value.
        value: String,
        /// What is wrong, naming the value and what was expected.
        expected: String,
    },
    /// A typed accessor was asked for a name that no one defines: a bug in
    /// the caller, reported instead of a panic.
    #[error("unknown parameter {0}")]
    Unknown(String),
    /// A value names a file (`mydestination = /etc/mta/destinations`,
    /// `myorigin = /etc/mailname`) that could not be read.
    #[error("{location}: parameter {name}: open {path}: {reason}")]
    File {
        /// `FILE, line N` of the setting, or `default` for a default.
        location: String,
        /// The parameter.
        name: String,
        /// The file named by the value.
        path: String,
        /// Why it could not be read.
        reason: String,
    },
}

/// A network interface address of this machine, with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceAddress {
    /// The address.
    pub address: IpAddr,
    /// The netmask as a prefix length.
    pub prefix_len: u8,
}

/// What Postfix computes some defaults from: facts about the machine and
/// the process, gathered by the caller (`mtad` asks the kernel; tests make
/// them up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// The host name as `gethostname` gives it, qualified or not.
    pub hostname: String,
    /// The addresses of the machine's interfaces, in the kernel's order.
    pub interfaces: Vec<InterfaceAddress>,
    /// The process ID, for `process_id`.
    pub process_id: u32,
    /// The program name, for `process_name`.
    pub process_name: String,
}

impl Default for HostFacts {
    /// A machine called `localhost` with only loopback interfaces.
    fn default() -> Self {
        HostFacts {
            hostname: "localhost".to_string(),
            interfaces: vec![
                InterfaceAddress {
                    address: IpAddr::from([127, 0, 0, 1]),
                    prefix_len: 8,
                },
                InterfaceAddress {
                    address: IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
                    prefix_len: 128,
                },
            ],
            process_id: 0,
            process_name: "mtad".to_string(),
        }
    }
}

/// One entry of a list-valued parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListEntry {
    /// A word, such as a domain, a network, or `permit_mynetworks`.
    Word(String),
    /// An entry that names a file (it starts with `/`), whose contents the
    /// caller reads and splits as more entries, as Postfix does for
    /// `mydestination = /etc/postfix/destinations`.
    File(String),
    /// A lookup table, `type:name`.
    Table(String),
}

/// A warning Postfix would print while reading this configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigWarning {
    /// From the `main.cf` parser.
    MainCf(MainCfWarning),
    /// `main.cf` sets a name that is neither a parameter nor referred to
    /// by any value: probably a typing error.
    Unused {
        /// The file.
        path: String,
        /// The name.
        name: String,
        /// Its value.
        value: String,
    },
    /// A value refers to a name that nothing defines; it expands to empty.
    Undefined {
        /// The file.
        path: String,
        /// The name.
        name: String,
    },
}

impl std::fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigWarning::MainCf(w) => w.fmt(f),
            ConfigWarning::Unused { path, name, value } => {
                write!(f, "{path}: unused parameter: {name}={value}")
            }
            ConfigWarning::Undefined { path, name } => {
                write!(f, "{path}: undefined parameter: {name}")
            }
        }
    }
}

/// A parsed `main.cf` seen through the parameter registry.
#[derive(Debug, Clone)]
pub struct Config {
    main: MainCf,
    facts: HostFacts,
    parse_warnings: Vec<MainCfWarning>,
    /// Parameters that exist because of `master.cf` services.
    service_parameters: Vec<ServiceParameter>,
    /// Names that values in `master.cf` (`-o` overrides) refer to.
    master_references: BTreeSet<String>,
    /// Values that override `main.cf` (a `master.cf` service's `-o`).
    overrides: Vec<(String, String)>,
    /// Read defaults only, ignoring `main.cf` (`postconf -d`).
    defaults_only: bool,
    /// Contents of files that values name, read through
    /// [`Config::read_files`]: path → text, or why it could not be read.
    files: std::collections::BTreeMap<String, Result<String, String>>,
}

impl Config {
    /// Parses the text of a `main.cf`; `path` is used in messages.
    pub fn parse(text: &str, path: &str, facts: HostFacts) -> Result<Config, ConfigError> {
        let (main, parse_warnings) = MainCf::parse(text, path)?;
        Ok(Config::from_main_cf(main, parse_warnings, facts))
    }

    /// Wraps an already parsed `main.cf`.
    pub fn from_main_cf(
        main: MainCf,
        parse_warnings: Vec<MainCfWarning>,
        facts: HostFacts,
    ) -> Config {
        Config {
            main,
            facts,
            parse_warnings,
            service_parameters: Vec::new(),
            master_references: BTreeSet::new(),
            overrides: Vec::new(),
            defaults_only: false,
            files: std::collections::BTreeMap::new(),
        }
    }

    /// The parsed `main.cf`.
    pub fn main_cf(&self) -> &MainCf {
        &self.main
    }

    /// Declares a `master.cf` service, so that its per-service parameters
    /// (`relay_destination_concurrency_limit`, ...) become known, and the
    /// names its `-o` values refer to count as used.
    pub fn add_service(&mut self, service: &str, command: &str, override_values: &[&str]) {
        for p in registry::service_parameters(service, command) {
            if !self.service_parameters.iter().any(|q| q.name == p.name) {
                self.service_parameters.push(p);
            }
        }
        for value in override_values {
            self.master_references
                .extend(expand::referenced_names(value));
        }
    }

    /// A view of this configuration with `name = value` overrides on top,
    /// as a `master.cf` service sees it through its `-o` options.
    pub fn with_overrides(&self, overrides: &[(String, String)]) -> Config {
        let mut view = self.clone();
        view.overrides.extend(overrides.iter().cloned());
        view
    }

    /// A view that ignores `main.cf` and sees Postfix's defaults only, as
    /// `postconf -d` does.
    pub fn defaults_view(&self) -> Config {
        let mut view = self.clone();
        view.defaults_only = true;
        view.overrides.clear();
        view
    }

    /// Whether `name` is a parameter: in the registry, derived from a
    /// `master.cf` service, or a class named in `smtpd_restriction_classes`.
    pub fn is_known(&self, name: &str) -> bool {
        registry::lookup(name).is_some()
            || self.service_parameters.iter().any(|p| p.name == name)
            || self.restriction_classes().iter().any(|c| c == name)
    }

    fn restriction_classes(&self) -> Vec<String> {
        match self.main.get("smtpd_restriction_classes") {
            Some(v) if !self.defaults_only => split_list(v),
            _ => Vec::new(),
        }
    }

    /// The kind of a known parameter.
    pub fn kind(&self, name: &str) -> Option<ParameterKind> {
        registry::lookup(name)
            .map(|p| p.kind)
            .or_else(|| {
                self.service_parameters
                    .iter()
                    .find(|p| p.name == name)
                    .map(|p| p.kind)
            })
            .or_else(|| {
                self.restriction_classes()
                    .iter()
                    .any(|c| c == name)
                    .then_some(ParameterKind::RestrictionList)
            })
    }

    /// Whether `main.cf` (or an override) sets `name`.
    pub fn is_set(&self, name: &str) -> bool {
        !self.defaults_only
            && (self.overrides.iter().any(|(n, _)| n == name) || self.main.get(name).is_some())
    }

    /// The raw value of `name`: an override, else its `main.cf` setting,
    /// else its default; `None` when nothing defines it.
    pub fn raw(&self, name: &str) -> Option<String> {
        if !self.defaults_only {
            if let Some((_, v)) = self.overrides.iter().rev().find(|(n, _)| n == name) {
                return Some(v.clone());
            }
            if let Some(v) = self.main.get(name) {
                return Some(v.to_string());
            }
        }
        self.default_raw(name)
    }

    /// The raw default of `name`, with computed defaults worked out from
    /// the host facts in this view's context.
    pub fn default_raw(&self, name: &str) -> Option<String> {
        if let Some(def) = registry::lookup(name) {
            if def.computed {
                // While a computed default is being worked out, a value that
                // refers back to it sees it empty, as in Postfix, which sets
                // these defaults one after the other at start-up
                // (`myhostname = ${mydomain}x` gives `localdomainx`).
                let reentered = COMPUTING.with(|c| c.borrow().contains(&def.name));
                if reentered {
                    return Some(String::new());
                }
                COMPUTING.with(|c| c.borrow_mut().push(def.name));
                let value = self.computed_default(name);
                COMPUTING.with(|c| c.borrow_mut().pop());
                return Some(value);
            }
            return Some(def.default.to_string());
        }
        self.service_parameters
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.default.clone())
    }

    fn computed_default(&self, name: &str) -> String {
        let expanded = |n: &str| self.expanded(n).unwrap_or_default();
        match name {
            "myhostname" => {
                let host = &self.facts.hostname;
                if host.contains('.') {
                    host.clone()
                } else if self.is_set("mydomain") {
                    format!("{host}.{}", expanded("mydomain"))
                } else {
                    format!("{host}.localdomain")
                }
            }
            "mydomain" => {
                let host = expanded("myhostname");
                match host.split_once('.') {
                    Some((_, domain)) if !domain.is_empty() => domain.to_string(),
                    _ => "localdomain".to_string(),
                }
            }
            "mynetworks" => self.computed_mynetworks(),
            "process_id" => self.facts.process_id.to_string(),
            "process_name" => self.facts.process_name.clone(),
            _ => String::new(),
        }
    }

    /// `mynetworks` from the interfaces that `inet_interfaces` and
    /// `inet_protocols` select, in the `mynetworks_style` in force.
    fn computed_mynetworks(&self) -> String {
        let style = self.expanded("mynetworks_style").unwrap_or_default();
        let protocols = self.list("inet_protocols").unwrap_or_default();
        let wants = |a: &IpAddr| {
            protocols.iter().any(|p| p == "all")
                || protocols
                    .iter()
                    .any(|p| (p == "ipv4") == a.is_ipv4() && (p == "ipv4" || p == "ipv6"))
        };
        let interfaces = self.list("inet_interfaces").unwrap_or_default();
        let selected = |i: &InterfaceAddress| {
            interfaces.iter().any(|w| w == "all")
                || (interfaces.iter().any(|w| w == "loopback-only") && i.address.is_loopback())
                || interfaces.iter().any(|w| {
                    w.trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<IpAddr>()
                        .ok()
                        == Some(i.address)
                })
        };
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for i in self
            .facts
            .interfaces
            .iter()
            .filter(|i| wants(&i.address) && selected(i))
        {
            let prefix = match (style.as_str(), i.address) {
                ("host", IpAddr::V4(_)) => 32,
                ("host", IpAddr::V6(_)) => 128,
                ("class", IpAddr::V4(a)) => match a.octets()[0] {
                    0..=127 => 8,
                    128..=191 => 16,
                    192..=223 => 24,
                    _ => 32,
                },
                _ => i.prefix_len,
            };
            let entry = match i.address {
                IpAddr::V4(a) => {
                    let mask = u32::MAX
                        .checked_shl(32 - u32::from(prefix.min(32)))
                        .unwrap_or(0);
                    format!("{}/{prefix}", std::net::Ipv4Addr::from(u32::from(a) & mask))
                }
                IpAddr::V6(a) => {
                    let mask = u128::MAX
                        .checked_shl(128 - u32::from(prefix.min(128)))
                        .unwrap_or(0);
                    format!(
                        "[{}]/{prefix}",
                        std::net::Ipv6Addr::from(u128::from(a) & mask)
                    )
                }
            };
            let list = if i.address.is_ipv4() {
                &mut v4
            } else {
                &mut v6
            };
            if !list.contains(&entry) {
                list.push(entry);
            }
        }
        v4.extend(v6);
        v4.join(" ")
    }

    /// This machine's addresses as a mail destination: those that
    /// `inet_interfaces` selects from the host facts (`all`, `loopback-only`,
    /// or literal addresses) and the literal addresses in
    /// `proxy_interfaces`, as `inet_protocols` allows. Mail for
    /// `user@[address]` of these is local. Host names in either list are
    /// not resolved here (this crate does no DNS): they are an error.
    pub fn own_addresses(&self) -> Result<Vec<IpAddr>, ConfigError> {
        let protocols = self.list("inet_protocols")?;
        let wanted = |a: &IpAddr| {
            protocols.iter().any(|p| p == "all")
                || protocols
                    .iter()
                    .any(|p| (p == "ipv4" && a.is_ipv4()) || (p == "ipv6" && a.is_ipv6()))
        };
        let literal = |name: &str, entry: &str| -> Result<IpAddr, ConfigError> {
            entry
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| {
                    self.bad_value(
                        name,
                        entry,
                        format!(
                            "\"{entry}\" is not an address: host names are not supported in {name}"
                        ),
                    )
                })
        };
        let mut out = Vec::new();
        for entry in self.list("inet_interfaces")? {
            match entry.as_str() {
                "all" => out.extend(self.facts.interfaces.iter().map(|i| i.address)),
                "loopback-only" => out.extend(
                    self.facts
                        .interfaces
                        .iter()
                        .map(|i| i.address)
                        .filter(IpAddr::is_loopback),
                ),
                _ => out.push(literal("inet_interfaces", &entry)?),
            }
        }
        for entry in self.list("proxy_interfaces")? {
            out.push(literal("proxy_interfaces", &entry)?);
        }
        out.retain(|a| wanted(a));
        let mut seen = BTreeSet::new();
        out.retain(|a| seen.insert(*a));
        Ok(out)
    }

    /// Where the value of `name` comes from, for messages: `FILE, line N`
    /// or `default`.
    pub fn location(&self, name: &str) -> String {
        match self.main.setting(name) {
            Some(s) if !self.defaults_only => format!("{}, line {}", self.main.path(), s.line),
            _ => "default".to_string(),
        }
    }

    /// The value of `name`, expanded, with undefined references reported
    /// in `warnings`. Parameters of kind [`ParameterKind::Raw`] come back
    /// as they are.
    pub fn expanded_with_warnings(
        &self,
        name: &str,
        warnings: &mut Vec<ExpandWarning>,
    ) -> Result<String, ConfigError> {
        let raw = self
            .raw(name)
            .ok_or_else(|| ConfigError::Unknown(name.to_string()))?;
        if self.kind(name) == Some(ParameterKind::Raw) {
            return Ok(raw);
        }
        self.expand_text(name, &raw, warnings)
    }

    /// Expands arbitrary text in this configuration's context; `name` is
    /// the parameter it belongs to, for messages.
    pub fn expand_text(
        &self,
        name: &str,
        text: &str,
        warnings: &mut Vec<ExpandWarning>,
    ) -> Result<String, ConfigError> {
        let lookup = |n: &str| self.raw(n);
        expand::expand(text, &lookup, warnings).map_err(|source| ConfigError::Expand {
            location: self.location(name),
            name: name.to_string(),
            source,
        })
    }

    /// The value of `name`, expanded.
    pub fn expanded(&self, name: &str) -> Result<String, ConfigError> {
        self.expanded_with_warnings(name, &mut Vec::new())
    }

    /// A [`ConfigError::BadValue`] for parameter `name`, located at its
    /// setting: for callers that validate a value further (as a domain,
    /// a transport) and must still name the file and line.
    pub fn bad_value(&self, name: &str, value: &str, expected: impl Into<String>) -> ConfigError {
        ConfigError::BadValue {
            location: self.location(name),
            name: name.to_string(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }

    /// A `yes`/`no` parameter. Postfix compares case-insensitively.
    pub fn boolean(&self, name: &str) -> Result<bool, ConfigError> {
        let value = self.expanded(name)?;
        crate::units::parse_bool(&value).map_err(|e| self.bad_value(name, &value, e.to_string()))
    }

    /// An integer parameter.
    pub fn integer(&self, name: &str) -> Result<i64, ConfigError> {
        let value = self.expanded(name)?;
        value.trim().parse().map_err(|_| {
            self.bad_value(
                name,
                &value,
                format!("bad integer value \"{value}\": expected a decimal number"),
            )
        })
    }

    /// A time parameter, in its registry unit when the value has none.
    pub fn time(&self, name: &str) -> Result<Duration, ConfigError> {
        let letter = match self.kind(name) {
            Some(ParameterKind::Time { default_unit }) => default_unit,
            _ => 's',
        };
        let unit = TimeUnit::from_letter(letter).unwrap_or(TimeUnit::Seconds);
        let value = self.expanded(name)?;
        crate::units::parse_time(&value, unit)
            .map_err(|e| self.bad_value(name, &value, e.to_string()))
    }

    /// A list parameter, split on commas and white space, entries kept as
    /// text.
    /// Entries that name a file (they start with `/`) are replaced by the
    /// words of that file, when [`read_files`](Self::read_files) has read
    /// it; `#` starts a comment there, to the end of the line.
    pub fn list(&self, name: &str) -> Result<Vec<String>, ConfigError> {
        let mut out = Vec::new();
        for entry in split_list(&self.expanded(name)?) {
            match self.files.get(&entry) {
                Some(Ok(text)) if entry.starts_with('/') => {
                    for line in text.lines() {
                        let line = line.split('#').next().unwrap_or("");
                        out.extend(split_list(line));
                    }
                }
                Some(Err(reason)) if entry.starts_with('/') => {
                    return Err(ConfigError::File {
                        location: self.location(name),
                        name: name.to_string(),
                        path: entry,
                        reason: reason.clone(),
                    });
                }
                _ => out.push(entry),
            }
        }
        Ok(out)
    }

    /// A text parameter whose value may instead name a file holding it,
    /// as Debian's Postfix allows for `myorigin = /etc/mailname`: the
    /// first word of the file, when [`read_files`](Self::read_files) has
    /// read it.
    pub fn text_or_file(&self, name: &str) -> Result<String, ConfigError> {
        let value = self.expanded(name)?;
        match self.files.get(&value) {
            Some(Ok(text)) if value.starts_with('/') => {
                Ok(text.split_whitespace().next().unwrap_or("").to_string())
            }
            Some(Err(reason)) if value.starts_with('/') => Err(ConfigError::File {
                location: self.location(name),
                name: name.to_string(),
                path: value,
                reason: reason.clone(),
            }),
            _ => Ok(value),
        }
    }

    /// Reads, through `read`, every file that a list parameter or
    /// `myorigin` names, so that [`list`](Self::list) and
    /// [`text_or_file`](Self::text_or_file) can splice in their contents.
    /// This crate does no I/O itself: the caller supplies the reader
    /// (`std::fs::read_to_string`, or a map in tests). A file that cannot
    /// be read is remembered and reported by the accessor that needs it.
    pub fn read_files(&mut self, read: &dyn Fn(&str) -> Result<String, String>) {
        let mut paths = BTreeSet::new();
        for name in self.parameter_names() {
            let wanted = name == "myorigin" || self.kind(&name) == Some(ParameterKind::List);
            if !wanted {
                continue;
            }
            if let Ok(value) = self.expanded(&name) {
                paths.extend(
                    split_list(&value)
                        .into_iter()
                        .filter(|e| e.starts_with('/')),
                );
            }
        }
        for path in paths {
            let contents = read(&path);
            self.files.insert(path, contents);
        }
    }

    /// A list parameter with each entry classified as a word, a file or a
    /// table reference.
    pub fn list_entries(&self, name: &str) -> Result<Vec<ListEntry>, ConfigError> {
        Ok(self
            .list(name)?
            .into_iter()
            .map(|e| {
                if e.starts_with('/') {
                    ListEntry::File(e)
                } else if is_table_reference(&e) {
                    ListEntry::Table(e)
                } else {
                    ListEntry::Word(e)
                }
            })
            .collect())
    }

    /// The compatibility level in force, as `[major, minor, patch]`.
    pub fn compatibility_level(&self) -> Result<[u32; 3], ConfigError> {
        let value = self.expanded("compatibility_level")?;
        expand::parse_compatibility_level(&value).ok_or_else(|| {
            self.bad_value(
                "compatibility_level",
                &value,
                format!("bad compatibility level \"{value}\": expected a level such as 3.6"),
            )
        })
    }

    /// Checks every set parameter of a known kind: booleans, integers and
    /// times must parse, every value must expand, and the files that lists
    /// and `myorigin` name must have been readable (see
    /// [`read_files`](Self::read_files)).
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        for setting in self.main.settings() {
            let name = setting.name.as_str();
            let result = match self.kind(name) {
                Some(ParameterKind::Boolean) => self.boolean(name).map(drop),
                Some(ParameterKind::Integer) => self.integer(name).map(drop),
                Some(ParameterKind::Time { .. }) => self.time(name).map(drop),
                // Lists and myorigin may name files: read through
                // `read_files`, a file that could not be read is reported.
                Some(ParameterKind::List) => self.list(name).map(drop),
                Some(_) if name == "myorigin" => self.text_or_file(name).map(drop),
                Some(_) => self.expanded(name).map(drop),
                None => Ok(()),
            };
            if let Err(e) = result {
                errors.push(e);
            }
        }
        errors
    }

    /// Names set in `main.cf` that are not parameters but that some value
    /// in `main.cf` or `master.cf` refers to: Postfix's "user-defined"
    /// parameters, which `postconf` lists.
    pub fn used_user_parameters(&self) -> Vec<String> {
        let referenced = self.referenced_names();
        let mut out: Vec<String> = self
            .main
            .settings()
            .filter(|s| !self.is_known(&s.name) && referenced.contains(&s.name))
            .map(|s| s.name.clone())
            .collect();
        out.sort();
        out
    }

    fn referenced_names(&self) -> BTreeSet<String> {
        let mut names = self.master_references.clone();
        for s in self.main.settings() {
            names.extend(expand::referenced_names(&s.value));
        }
        names
    }

    /// The warnings Postfix prints for this configuration: parser
    /// warnings, then unused names.
    pub fn warnings(&self) -> Vec<ConfigWarning> {
        let mut out: Vec<ConfigWarning> = self
            .parse_warnings
            .iter()
            .cloned()
            .map(ConfigWarning::MainCf)
            .collect();
        let referenced = self.referenced_names();
        for s in self.main.settings() {
            if !self.is_known(&s.name) && !referenced.contains(&s.name) {
                out.push(ConfigWarning::Unused {
                    path: self.main.path().to_string(),
                    name: s.name.clone(),
                    value: s.value.clone(),
                });
            }
        }
        out
    }

    /// Every parameter name this configuration knows, sorted: the
    /// registry, the per-service parameters, restriction classes and used
    /// user-defined parameters.
    pub fn parameter_names(&self) -> Vec<String> {
        let mut names: BTreeSet<String> = registry::all().map(|p| p.name.to_string()).collect();
        names.extend(self.service_parameters.iter().map(|p| p.name.clone()));
        if !self.defaults_only {
            names.extend(self.restriction_classes());
            names.extend(self.used_user_parameters());
        }
        names.into_iter().collect()
    }
}

thread_local! {
    /// The computed defaults being worked out on this thread, innermost
    /// last.
    static COMPUTING: std::cell::RefCell<Vec<&'static str>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Splits a list value on commas and white space, as Postfix does.
///
/// A `{` opens a group that runs to its matching `}` whatever it holds,
/// as Postfix 3's list parser allows: `inline:{ a=b, c=d }` stays one
/// entry. An unclosed group runs to the end of the value.
///
/// # Example
/// ```
/// assert_eq!(mta_core::config::split_list("a, b\tc,,d"), ["a", "b", "c", "d"]);
/// ```
pub fn split_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    for c in value.chars() {
        match c {
            '{' => {
                depth += 1;
                current.push(c);
            }
            '}' if depth > 0 => {
                depth -= 1;
                current.push(c);
            }
            c if depth == 0 && (c == ',' || c.is_whitespace()) => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Whether `entry` has the `type:name` shape of a table reference.
pub fn is_table_reference(entry: &str) -> bool {
    match entry.split_once(':') {
        Some((kind, _)) => {
            !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_keep_brace_groups_whole() {
        assert_eq!(
            split_list("check_sender_access inline:{ a@b=REJECT, c@d=OK },permit"),
            [
                "check_sender_access",
                "inline:{ a@b=REJECT, c@d=OK }",
                "permit"
            ]
        );
        assert_eq!(split_list(" a, b\tc "), ["a", "b", "c"]);
        assert_eq!(split_list("x {unclosed, y"), ["x", "{unclosed, y"]);
    }

    fn facts() -> HostFacts {
        HostFacts {
            hostname: "vm".into(),
            interfaces: vec![
                InterfaceAddress {
                    address: "127.0.0.1".parse().unwrap(),
                    prefix_len: 8,
                },
                InterfaceAddress {
                    address: "192.0.2.2".parse().unwrap(),
                    prefix_len: 24,
                },
                InterfaceAddress {
                    address: "::1".parse().unwrap(),
                    prefix_len: 128,
                },
                InterfaceAddress {
                    address: "fd00::2".parse().unwrap(),
                    prefix_len: 64,
                },
                InterfaceAddress {
                    address: "fe80::fc:ff:fe00:1".parse().unwrap(),
                    prefix_len: 64,
                },
            ],
            process_id: 42,
            process_name: "postconf".into(),
        }
    }

    // Expected values read off Debian's postconf 3.7.11 on a machine with
    // these interfaces.
    #[test]
    fn computed_defaults_follow_postfix() {
        let c = Config::parse("", "main.cf", facts()).unwrap();
        assert_eq!(c.expanded("myhostname").unwrap(), "vm.localdomain");
        assert_eq!(c.expanded("mydomain").unwrap(), "localdomain");
        assert_eq!(
            c.expanded("mynetworks").unwrap(),
            "127.0.0.0/8 192.0.2.0/24 [::1]/128 [fd00::]/64 [fe80::]/64"
        );
        let c = Config::parse("compatibility_level = 3.6\n", "main.cf", facts()).unwrap();
        assert_eq!(
            c.expanded("mynetworks").unwrap(),
            "127.0.0.1/32 192.0.2.2/32 [::1]/128 [fd00::2]/128 [fe80::fc:ff:fe00:1]/128"
        );
        let c = Config::parse(
            "compatibility_level = 3.6\ninet_interfaces = loopback-only\n",
            "main.cf",
            facts(),
        )
        .unwrap();
        assert_eq!(c.expanded("mynetworks").unwrap(), "127.0.0.1/32 [::1]/128");
        let c = Config::parse(
            "compatibility_level=3.6\ninet_protocols = ipv4\n",
            "m",
            facts(),
        )
        .unwrap();
        assert_eq!(
            c.expanded("mynetworks").unwrap(),
            "127.0.0.1/32 192.0.2.2/32"
        );
        let c = Config::parse("mydomain = foo.bar\n", "m", facts()).unwrap();
        assert_eq!(c.expanded("myhostname").unwrap(), "vm.foo.bar");
        // Computed defaults that refer to each other, as postconf 3.7.11
        // resolves them.
        let c = Config::parse("myhostname = ${mydomain}x\n", "m", facts()).unwrap();
        assert_eq!(c.expanded("myhostname").unwrap(), "localdomainx");
        assert_eq!(c.expanded("mydomain").unwrap(), "localdomain");
        let c = Config::parse("mydomain = $myhostname\n", "m", facts()).unwrap();
        assert_eq!(c.expanded("myhostname").unwrap(), "vm.");
        assert_eq!(c.expanded("mydomain").unwrap(), "vm.");
        let c = Config::parse("myhostname = a.b.c\n", "m", facts()).unwrap();
        assert_eq!(c.expanded("mydomain").unwrap(), "b.c");
        assert_eq!(
            c.defaults_view().expanded("mydomain").unwrap(),
            "localdomain"
        );
    }

    #[test]
    fn typed_access_names_file_and_line() {
        let c = Config::parse(
            "smtpd_helo_required = maybe\nmessage_size_limit = 10M\nsmtpd_timeout = 5m\n",
            "/etc/mta/main.cf",
            facts(),
        )
        .unwrap();
        assert_eq!(
            c.boolean("smtpd_helo_required").unwrap_err().to_string(),
            "/etc/mta/main.cf, line 1: parameter smtpd_helo_required: bad boolean value \"maybe\": expected yes or no"
        );
        assert!(matches!(
            c.integer("message_size_limit"),
            Err(ConfigError::BadValue { .. })
        ));
        assert_eq!(c.time("smtpd_timeout").unwrap(), Duration::from_secs(300));
        assert_eq!(
            c.time("maximal_queue_lifetime").unwrap(),
            Duration::from_secs(5 * 86400)
        );
        assert_eq!(c.validate().len(), 2);
        assert!(matches!(
            c.boolean("no_such_thing"),
            Err(ConfigError::Unknown(_))
        ));
    }

    #[test]
    fn user_defined_parameters_are_used_when_referenced() {
        // Mirrors a postconf 3.7.11 session: u2 is listed (u1 refers to
        // it), u1 and u5 draw "unused parameter" warnings.
        let mut c = Config::parse(
            "u1 = $u2\nu2 = x\nu3 = y\nmyhostname = ${u3}.example\nu4 = z\nu5 = q\n\
             u6 = r\nsmtpd_restriction_classes = u6\n",
            "main.cf",
            facts(),
        )
        .unwrap();
        c.add_service("submission", "smtpd", &["$u4"]);
        assert_eq!(c.used_user_parameters(), ["u2", "u3", "u4"]);
        assert!(c.is_known("u6"));
        let unused: Vec<String> = c.warnings().iter().map(ToString::to_string).collect();
        assert_eq!(
            unused,
            [
                "main.cf: unused parameter: u1=$u2",
                "main.cf: unused parameter: u5=q"
            ]
        );
    }

    #[test]
    fn list_entries_are_classified() {
        let c = Config::parse(
            "mydestination = $myhostname, /etc/mta/dest hash:/etc/mta/more\nmyhostname = h.example\n",
            "m",
            facts(),
        )
        .unwrap();
        assert_eq!(
            c.list_entries("mydestination").unwrap(),
            [
                ListEntry::Word("h.example".into()),
                ListEntry::File("/etc/mta/dest".into()),
                ListEntry::Table("hash:/etc/mta/more".into())
            ]
        );
    }

    #[test]
    fn values_that_name_files_read_them_through_the_caller() {
        let mut c = Config::parse(
            "myorigin = /etc/mailname\nmydestination = localhost, /etc/mta/dest\n\
             relay_domains = /nonexistent\n",
            "/etc/mta/main.cf",
            facts(),
        )
        .unwrap();
        c.read_files(&|path| match path {
            "/etc/mailname" => Ok("example.com\n".to_string()),
            "/etc/mta/dest" => Ok("# ours\na.example, b.example # both\nc.example\n".to_string()),
            _ => Err("No such file or directory".to_string()),
        });
        assert_eq!(c.text_or_file("myorigin").unwrap(), "example.com");
        assert_eq!(
            c.list("mydestination").unwrap(),
            ["localhost", "a.example", "b.example", "c.example"]
        );
        assert_eq!(
            c.validate().len(),
            1,
            "only the unreadable relay_domains file"
        );
        assert_eq!(
            c.list("relay_domains").unwrap_err().to_string(),
            "/etc/mta/main.cf, line 3: parameter relay_domains: open /nonexistent: No such file or directory"
        );
    }

    #[test]
    fn overrides_win_over_main_cf() {
        let c = Config::parse("smtpd_tls_security_level = may\n", "m", facts()).unwrap();
        let view = c.with_overrides(&[("smtpd_tls_security_level".into(), "encrypt".into())]);
        assert_eq!(
            view.expanded("smtpd_tls_security_level").unwrap(),
            "encrypt"
        );
        assert_eq!(c.expanded("smtpd_tls_security_level").unwrap(), "may");
    }
}

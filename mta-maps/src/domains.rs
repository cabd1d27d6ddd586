//! Domain lists backed by tables: `mydestination`, `relay_domains`,
//! `virtual_alias_domains`, `virtual_mailbox_domains`, as Postfix matches
//! them.
//!
//! Entries are matched in order and the first that matches decides: a
//! name (`example.com`), a name for subdomains only (`.example.com`), an
//! exclusion (`!example.com`), or a table (`hash:/etc/mta/domains`) in
//! which the domain, then each parent domain, is looked up. A parent is
//! `.example.com` or, for parameters listed in
//! `parent_domain_matches_subdomains`, `example.com`, which then also
//! makes a plain name match its subdomains. Entries from files (`/path`)
//! are spliced in by the configuration reader before this sees them.

use std::sync::Arc;

use mta_core::address::Domain;
use mta_core::address_class::{DomainList, LookupError, RewriteConfig};
use mta_core::config::{Config, ConfigError};

use crate::list::MapList;
use crate::map::MapError;
use crate::registry::{Registry, split_references};

/// A domain list: literal names and tables, matched in order.
#[derive(Debug, Clone, Default)]
pub struct DomainMatcher {
    entries: Vec<DomainEntry>,
    parent_matches: bool,
    name: String,
}

#[derive(Debug, Clone)]
enum DomainEntry {
    Literal {
        negated: bool,
        subdomains_only: bool,
        domain: String,
    },
    Table(Arc<MapList>),
}

/// The words of list parameter `name`, with `type:{ inline }` tables kept
/// whole.
pub(crate) fn list_words(config: &Config, name: &str) -> Result<Vec<String>, ConfigError> {
    let value = config.expanded(name)?;
    if value.contains('{') {
        Ok(split_references(&value))
    } else {
        config.list(name)
    }
}

impl DomainMatcher {
    /// The list in parameter `name` of `config`, its tables opened through
    /// `registry`.
    ///
    /// # Errors
    ///
    /// A table that cannot be opened, located at the parameter.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_core::address_class::RewriteConfig;
    /// use mta_core::config::{Config, HostFacts};
    /// use mta_maps::domains::DomainMatcher;
    /// use mta_maps::registry::{OpenContext, Registry};
    ///
    /// let main_cf = "myhostname = mail.example.com\n\
    ///                virtual_mailbox_domains = !old.example.com, .example.com, inline:{ example.org=1 }\n";
    /// let config = Config::parse(main_cf, "main.cf", HostFacts::default())?;
    /// let rewrite = RewriteConfig::from_config(&config)?;
    /// let registry = Registry::new(OpenContext::default());
    /// let list = DomainMatcher::from_config(&config, &registry, &rewrite, "virtual_mailbox_domains")?;
    /// assert_eq!(list.contains_now("sub.example.com"), Ok(true));
    /// assert_eq!(list.contains_now("old.example.com"), Ok(false));
    /// assert_eq!(list.contains_now("example.com"), Ok(false));
    /// assert_eq!(list.contains_now("Example.ORG"), Ok(true));
    /// # Ok::<(), mta_core::config::ConfigError>(())
    /// ```
    pub fn from_config(
        config: &Config,
        registry: &Registry,
        rewrite: &RewriteConfig,
        name: &str,
    ) -> Result<DomainMatcher, ConfigError> {
        let mut entries = Vec::new();
        for entry in list_words(config, name)? {
            if mta_core::config::is_table_reference(&entry) {
                let maps = registry
                    .open_list(&entry)
                    .map_err(|e| config.bad_value(name, &entry, format!("table {entry}: {e}")))?;
                entries.push(DomainEntry::Table(Arc::new(maps)));
                continue;
            }
            let (negated, rest) = match entry.strip_prefix('!') {
                Some(r) => (true, r),
                None => (false, entry.as_str()),
            };
            let (subdomains_only, domain) = match rest.strip_prefix('.') {
                Some(d) => (true, d),
                None => (false, rest),
            };
            entries.push(DomainEntry::Literal {
                negated,
                subdomains_only,
                domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            });
        }
        Ok(DomainMatcher {
            entries,
            parent_matches: rewrite.parent_matches_subdomains(name),
            name: name.to_owned(),
        })
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The keys a table entry tries for `domain`: the domain, then its
    /// parents.
    fn table_keys(&self, domain: &str) -> impl Iterator<Item = String> + '_ {
        let domain = domain.to_owned();
        let parents: Vec<String> = domain
            .match_indices('.')
            .map(|(i, _)| {
                if self.parent_matches {
                    domain[i + 1..].to_owned()
                } else {
                    domain[i..].to_owned()
                }
            })
            .collect();
        std::iter::once(domain).chain(parents)
    }

    /// What a literal entry says of `domain`: `Some(in list)` when it
    /// matches, `None` when it does not decide.
    fn literal(&self, entry: &DomainEntry, domain: &str) -> Option<bool> {
        let DomainEntry::Literal {
            negated,
            subdomains_only,
            domain: d,
        } = entry
        else {
            return None;
        };
        let sub = domain.len() > d.len()
            && domain.ends_with(d.as_str())
            && domain.as_bytes()[domain.len() - d.len() - 1] == b'.';
        let hit = if *subdomains_only {
            sub
        } else {
            domain == *d || (self.parent_matches && sub)
        };
        hit.then_some(!negated)
    }

    /// Whether `domain` is in the list.
    ///
    /// # Errors
    ///
    /// A table that cannot answer: the answer is unknown, and the caller
    /// answers 4xx or defers.
    pub async fn contains(&self, domain: &str) -> Result<bool, MapError> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        for entry in &self.entries {
            match entry {
                DomainEntry::Literal { .. } => {
                    if let Some(answer) = self.literal(entry, &domain) {
                        return Ok(answer);
                    }
                }
                DomainEntry::Table(maps) => {
                    for key in self.table_keys(&domain) {
                        if maps.lookup(&key).await?.is_some() {
                            return Ok(true);
                        }
                    }
                }
            }
        }
        Ok(false)
    }

    /// [`contains`](Self::contains) for callers without a runtime: every
    /// table must answer at once (network tables give a temporary error).
    ///
    /// # Errors
    ///
    /// As [`contains`](Self::contains).
    pub fn contains_now(&self, domain: &str) -> Result<bool, MapError> {
        // Tables in memory or mapped from files answer at once, so the
        // future is ready on its first poll; one that is not is a network
        // table, which cannot answer here.
        let mut search = std::pin::pin!(self.contains(domain));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match search.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(answer) => answer,
            std::task::Poll::Pending => Err(MapError::temporary(
                self.name.clone(),
                "a table of this list answers asynchronously; it cannot be queried here",
            )),
        }
    }
}

impl DomainList for DomainMatcher {
    fn contains(&self, domain: &Domain) -> Result<bool, LookupError> {
        self.contains_now(domain.as_str())
            .map_err(|e| LookupError::new(self.name.clone(), e.to_string()))
    }
}

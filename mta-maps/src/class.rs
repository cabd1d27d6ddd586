//! Trivial-rewrite's resolver with the configuration's tables:
//! [`AddressResolver`] puts a recipient in its address class and gives the
//! `transport:nexthop` it goes to, consulting `mydestination`,
//! `virtual_alias_domains`, `virtual_mailbox_domains`, `relay_domains`
//! (as [`DomainMatcher`]s) and `transport_maps`.
//!
//! The class rules themselves are [`mta_core::address_class::resolve`];
//! this module only supplies the tables. Lookups here are synchronous
//! ([`crate::Lookup::now`]): every local table type answers at once, and a
//! network table gives a temporary error, which defers the recipient.

use mta_core::address::{MailAddress, RecipientDelimiter};
use mta_core::address_class::{
    ClassTables, LookupError, Resolution, ResolveError, RewriteConfig, TransportTable, resolve,
};
use mta_core::config::{Config, ConfigError};

use crate::domains::DomainMatcher;
use crate::list::MapList;
use crate::search::{SearchStyle, keys};

/// `transport_maps` as a transport(5) table: searched as transport(5)
/// says (`user+ext@domain`, `user@domain`, `domain`, parents, `*`; pattern
/// tables see the whole address only).
#[derive(Debug, Clone)]
pub struct TransportMaps {
    maps: MapList,
    delimiter: RecipientDelimiter,
    parent_matches: bool,
}

impl TransportMaps {
    /// The table list `maps`, with the `recipient_delimiter` and whether
    /// `transport_maps` is in `parent_domain_matches_subdomains`.
    pub fn new(
        maps: MapList,
        delimiter: RecipientDelimiter,
        parent_matches: bool,
    ) -> TransportMaps {
        TransportMaps {
            maps,
            delimiter,
            parent_matches,
        }
    }
}

impl TransportTable for TransportMaps {
    fn find(&self, recipient: &MailAddress) -> Result<Option<String>, LookupError> {
        let search = keys(
            recipient,
            &self.delimiter,
            SearchStyle::Transport {
                parent_matches: self.parent_matches,
            },
        );
        let found = self
            .maps
            .search_now(&search)
            .map_err(|e| LookupError::new("transport_maps", e.to_string()))?;
        Ok(found.map(|(_, value)| value.into_owned()))
    }
}

/// The resolver of one configuration: its rewrite settings and tables.
#[derive(Debug, Clone)]
pub struct AddressResolver {
    rewrite: RewriteConfig,
    mydestination: DomainMatcher,
    virtual_alias_domains: DomainMatcher,
    virtual_mailbox_domains: DomainMatcher,
    relay_domains: DomainMatcher,
    transport_maps: Option<TransportMaps>,
    /// `sender_dependent_relayhost_maps`.
    sender_relayhost: crate::list::MapList,
    /// `empty_address_relayhost_maps_lookup_key` (`<>`).
    empty_sender_key: String,
}

impl AddressResolver {
    /// The resolver for `config`, with tables opened through `registry`.
    ///
    /// # Errors
    ///
    /// A bad parameter or a table that cannot be opened, located at the
    /// parameter.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_core::address_class::AddressClass;
    /// use mta_core::config::{Config, HostFacts};
    /// use mta_maps::class::AddressResolver;
    /// use mta_maps::registry::{OpenContext, Registry};
    ///
    /// let main_cf = "myhostname = mail.example.com\nmydestination = $myhostname, localhost\n\
    ///                virtual_mailbox_domains = inline:{ example.com=1, example.org=1 }\n\
    ///                transport_maps = inline:{ {example.net=error:5.7.1 no mail for example.net} }\n";
    /// let config = Config::parse(main_cf, "main.cf", HostFacts::default())?;
    /// let resolver = AddressResolver::from_config(&config, &Registry::new(OpenContext::default()))?;
    /// let r = resolver.resolve(&"alice@example.org".parse().unwrap()).unwrap();
    /// assert_eq!((r.class, r.transport.as_str(), r.nexthop.as_str()),
    ///            (AddressClass::VirtualMailbox, "virtual", "example.org"));
    /// let r = resolver.resolve(&"root@localhost".parse().unwrap()).unwrap();
    /// assert_eq!((r.transport.as_str(), r.nexthop.as_str()), ("local", "mail.example.com"));
    /// let r = resolver.resolve(&"x@example.net".parse().unwrap()).unwrap();
    /// assert_eq!((r.transport.as_str(), r.nexthop.as_str()), ("error", "5.7.1 no mail for example.net"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_config(
        config: &Config,
        registry: &crate::registry::Registry,
    ) -> Result<AddressResolver, ConfigError> {
        let rewrite = RewriteConfig::from_config(config)?;
        let list = |name: &str| DomainMatcher::from_config(config, registry, &rewrite, name);
        let transport_value = config.expanded("transport_maps")?;
        let transport_maps = if transport_value.trim().is_empty() {
            None
        } else {
            let maps = registry
                .open_list(&transport_value)
                .map_err(|e| config.bad_value("transport_maps", &transport_value, e.to_string()))?;
            Some(TransportMaps::new(
                maps,
                RecipientDelimiter::new(&config.expanded("recipient_delimiter")?),
                rewrite.parent_matches_subdomains("transport_maps"),
            ))
        };
        Ok(AddressResolver {
            mydestination: list("mydestination")?,
            virtual_alias_domains: list("virtual_alias_domains")?,
            virtual_mailbox_domains: list("virtual_mailbox_domains")?,
            relay_domains: list("relay_domains")?,
            transport_maps,
            sender_relayhost: {
                let value = config.expanded("sender_dependent_relayhost_maps")?;
                registry.open_list(&value).map_err(|e| {
                    config.bad_value("sender_dependent_relayhost_maps", &value, e.to_string())
                })?
            },
            empty_sender_key: config.expanded("empty_address_relayhost_maps_lookup_key")?,
            rewrite,
        })
    }

    /// Resolves `recipient` of mail from `sender`: as
    /// [`resolve`](Self::resolve), with `sender_dependent_relayhost_maps`
    /// in place of `relayhost` when it has the sender (searched as the
    /// address, then `@domain`; the null sender as
    /// `empty_address_relayhost_maps_lookup_key`). A result of `DUNNO`
    /// keeps `relayhost`. As in Postfix, a next hop from `transport_maps`
    /// or from `relay_transport`/`default_transport` still wins.
    ///
    /// # Errors
    ///
    /// As [`resolve`](Self::resolve); a sender table that cannot answer
    /// is a temporary error.
    pub fn resolve_for_sender(
        &self,
        sender: &str,
        recipient: &MailAddress,
    ) -> Result<Resolution, ResolveError> {
        if self.sender_relayhost.is_empty() {
            return self.resolve(recipient);
        }
        let mut keys = Vec::new();
        if sender.is_empty() {
            keys.push(self.empty_sender_key.clone());
        } else {
            keys.push(sender.to_owned());
            if let Some((_, domain)) = sender.rsplit_once('@') {
                keys.push(format!("@{domain}"));
            }
        }
        let mut found = None;
        for (i, key) in keys.iter().enumerate() {
            let search = [crate::search::SearchKey {
                key: key.clone(),
                partial: i > 0,
            }];
            match self.sender_relayhost.search_now(&search) {
                Ok(Some((_, v))) => {
                    found = Some(v.into_owned());
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(ResolveError::Lookup(
                        mta_core::address_class::LookupError::new(
                            "sender_dependent_relayhost_maps",
                            e.to_string(),
                        ),
                    ));
                }
            }
        }
        match found.map(|v| v.trim().to_owned()) {
            Some(v) if !v.is_empty() && !v.eq_ignore_ascii_case("DUNNO") => {
                let mut rewrite = self.rewrite.clone();
                rewrite.relayhost = Some(v);
                let tables = ClassTables {
                    mydestination: &self.mydestination,
                    virtual_alias_domains: &self.virtual_alias_domains,
                    virtual_mailbox_domains: &self.virtual_mailbox_domains,
                    relay_domains: &self.relay_domains,
                    transport_maps: self
                        .transport_maps
                        .as_ref()
                        .map(|t| t as &dyn TransportTable),
                };
                resolve(&rewrite, &tables, recipient)
            }
            _ => self.resolve(recipient),
        }
    }

    /// The rewrite settings.
    pub fn rewrite_config(&self) -> &RewriteConfig {
        &self.rewrite
    }

    /// Resolves `recipient` (see [`mta_core::address_class::resolve`]).
    ///
    /// # Errors
    ///
    /// A temporary [`ResolveError::Lookup`] when a table cannot answer; a
    /// permanent error for an address that cannot be routed.
    pub fn resolve(&self, recipient: &MailAddress) -> Result<Resolution, ResolveError> {
        let tables = ClassTables {
            mydestination: &self.mydestination,
            virtual_alias_domains: &self.virtual_alias_domains,
            virtual_mailbox_domains: &self.virtual_mailbox_domains,
            relay_domains: &self.relay_domains,
            transport_maps: self
                .transport_maps
                .as_ref()
                .map(|t| t as &dyn TransportTable),
        };
        resolve(&self.rewrite, &tables, recipient)
    }
}

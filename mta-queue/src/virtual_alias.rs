//! Virtual alias expansion: cleanup's rewriting of recipients through
//! `virtual_alias_maps`, as Postfix's `cleanup(8)` does it before a
//! message is queued.
//!
//! Each recipient is looked up in virtual(5)'s order: `user+ext@domain`,
//! `user@domain`, then, for a local domain only (`$myorigin`,
//! `$mydestination`), `user+ext` and `user`, then `@domain`. A value is a
//! list of addresses (separated by commas or white space), each expanded
//! again in turn:
//!
//! - an address that maps to a list holding itself keeps itself and is
//!   not expanded further (`alice@example.com alice@example.com,
//!   archive@example.com` delivers to both);
//! - an extension the lookup did not match is carried to the results
//!   (`propagate_unmatched_extensions` with `virtual`, Postfix's
//!   default): `bob+news@example.com` found as `bob@example.com` →
//!   `robert@example.org` becomes `robert+news@example.org`;
//! - the results are kept in order, without duplicates (compared without
//!   regard to case); each keeps the original recipient of the address
//!   the client gave.
//!
//! Limits stop loops and explosions: more than
//! `virtual_alias_recursion_limit` levels, or more than
//! `virtual_alias_expansion_limit` addresses from one recipient, is an
//! error, as is a table that cannot answer. The message is then not
//! queued and the client is told to try again (Postfix defers it): a
//! loop in the tables must not lose mail or send it to half the list.

use mta_core::address::{LocalPart, MailAddress, RecipientDelimiter};
use mta_maps::domains::DomainMatcher;
use mta_maps::list::MapList;
use mta_maps::search::{SearchStyle, keys};

use crate::file::Recipient;

/// Why expansion failed; the message is not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AliasError {
    /// A table could not answer.
    #[error("virtual_alias_maps lookup for {address}: {reason}")]
    Lookup {
        /// The address looked up.
        address: String,
        /// The table's error.
        reason: String,
    },
    /// The nesting went deeper than `virtual_alias_recursion_limit`.
    #[error("unreasonable virtual_alias_maps map nesting for {0}")]
    Nesting(String),
    /// One recipient expanded to more than
    /// `virtual_alias_expansion_limit` addresses.
    #[error("unreasonable virtual_alias_maps map expansion size for {0}")]
    Size(String),
}

/// `virtual_alias_maps` and the parameters of its expansion.
#[derive(Debug, Clone)]
pub struct VirtualAliases {
    /// The tables.
    pub maps: MapList,
    /// `recipient_delimiter`.
    pub delimiter: RecipientDelimiter,
    /// `mydestination`, which with `myorigin` makes a domain local.
    pub mydestination: DomainMatcher,
    /// `myorigin`.
    pub myorigin: String,
    /// `virtual_alias_recursion_limit`.
    pub recursion_limit: usize,
    /// `virtual_alias_expansion_limit`.
    pub expansion_limit: usize,
    /// Whether unmatched extensions are propagated
    /// (`propagate_unmatched_extensions` lists `virtual`).
    pub propagate_extensions: bool,
}

impl VirtualAliases {
    /// The expansion `config` asks for (`virtual_alias_maps` and the
    /// parameters above), its tables opened through `registry`.
    ///
    /// # Errors
    ///
    /// A bad parameter or a table that cannot be opened, located at the
    /// parameter.
    pub fn from_config(
        config: &mta_core::config::Config,
        registry: &mta_maps::registry::Registry,
    ) -> Result<VirtualAliases, mta_core::config::ConfigError> {
        let value = config.expanded("virtual_alias_maps")?;
        let maps = registry
            .open_list(&value)
            .map_err(|e| config.bad_value("virtual_alias_maps", &value, e.to_string()))?;
        let rewrite = mta_core::address_class::RewriteConfig::from_config(config)?;
        let limit = |name: &str| -> Result<usize, mta_core::config::ConfigError> {
            Ok(usize::try_from(config.integer(name)?.max(1)).unwrap_or(usize::MAX))
        };
        Ok(VirtualAliases {
            maps,
            delimiter: RecipientDelimiter::new(&config.expanded("recipient_delimiter")?),
            mydestination: DomainMatcher::from_config(config, registry, &rewrite, "mydestination")?,
            myorigin: config.expanded("myorigin")?,
            recursion_limit: limit("virtual_alias_recursion_limit")?,
            expansion_limit: limit("virtual_alias_expansion_limit")?,
            propagate_extensions: config
                .list("propagate_unmatched_extensions")?
                .iter()
                .any(|v| v.eq_ignore_ascii_case("virtual")),
        })
    }

    fn is_local(&self, address: &MailAddress) -> bool {
        match address.domain() {
            None => true,
            Some(d) => {
                d.as_str().eq_ignore_ascii_case(&self.myorigin)
                    || self.mydestination.contains_now(d.as_str()).unwrap_or(false)
            }
        }
    }

    /// The addresses `address` maps to, `None` when no table has it.
    fn lookup(&self, address: &MailAddress) -> Result<Option<Vec<String>>, AliasError> {
        let search = keys(
            address,
            &self.delimiter,
            SearchStyle::Virtual {
                local_domain: self.is_local(address),
            },
        );
        let found = self
            .maps
            .search_now(&search)
            .map_err(|e| AliasError::Lookup {
                address: address.internal_form(),
                reason: e.to_string(),
            })?;
        let Some((key, value)) = found else {
            return Ok(None);
        };
        let extension = address
            .extension(&self.delimiter)
            .map(|e| (e.delimiter.to_string(), e.extension.to_owned()));
        // The key matched without the extension: carry it over.
        let carry = self.propagate_extensions
            && extension.is_some()
            && key.key != search[0].key
            && !key.key.starts_with('@');
        let results = value
            .split([',', ' ', '\t', '\r', '\n'])
            .filter(|s| !s.is_empty())
            .enumerate()
            .map(|(i, target)| {
                let target = result_address(target, i, address, &self.myorigin);
                match (&extension, carry) {
                    (Some((delim, ext)), true) => {
                        with_extension(&target, delim, ext, &self.delimiter)
                    }
                    _ => target,
                }
            })
            .collect();
        Ok(Some(results))
    }

    /// Expands every recipient; see the module documentation.
    ///
    /// # Errors
    ///
    /// An [`AliasError`]: the message must not be queued.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_core::address::RecipientDelimiter;
    /// use mta_maps::domains::DomainMatcher;
    /// use mta_maps::registry::{OpenContext, Registry};
    /// use mta_queue::file::Recipient;
    /// use mta_queue::virtual_alias::VirtualAliases;
    ///
    /// let registry = Registry::new(OpenContext::default());
    /// let aliases = VirtualAliases {
    ///     maps: registry.open_list("inline:{ postmaster@example.com=alice@example.com, \
    ///         {team@example.com=bob@example.com,carol@example.com,Alice@example.com} }").unwrap(),
    ///     delimiter: RecipientDelimiter::new("+"),
    ///     mydestination: DomainMatcher::default(),
    ///     myorigin: "example.com".into(),
    ///     recursion_limit: 1000,
    ///     expansion_limit: 1000,
    ///     propagate_extensions: true,
    /// };
    /// let out = aliases.expand(vec![Recipient::new("postmaster@example.com"), Recipient::new("team@example.com")])?;
    /// let got: Vec<(&str, &str)> = out.iter().map(|r| (r.address.as_str(), r.original.as_str())).collect();
    /// assert_eq!(got, [("alice@example.com", "postmaster@example.com"),
    ///                  ("bob@example.com", "team@example.com"),
    ///                  ("carol@example.com", "team@example.com")]);
    /// # Ok::<(), mta_queue::virtual_alias::AliasError>(())
    /// ```
    pub fn expand(&self, recipients: Vec<Recipient>) -> Result<Vec<Recipient>, AliasError> {
        if self.maps.is_empty() {
            return Ok(recipients);
        }
        let mut out: Vec<Recipient> = Vec::with_capacity(recipients.len());
        let mut seen = std::collections::HashSet::new();
        for rcpt in recipients {
            let mut finals = Vec::new();
            self.expand_one(&rcpt.address, 0, &mut finals, &rcpt.address)?;
            for address in finals {
                if seen.insert(address.to_lowercase()) {
                    let mut r = rcpt.clone();
                    r.address = address;
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    fn expand_one(
        &self,
        address: &str,
        depth: usize,
        finals: &mut Vec<String>,
        top: &str,
    ) -> Result<(), AliasError> {
        if depth > self.recursion_limit {
            return Err(AliasError::Nesting(top.to_owned()));
        }
        let Ok(parsed) = address.parse::<MailAddress>() else {
            // Not an address this code can look up: deliver it as it is,
            // and let the resolver refuse it if it must.
            finals.push(address.to_owned());
            return Ok(());
        };
        let Some(targets) = self.lookup(&parsed)? else {
            finals.push(address.to_owned());
            return Ok(());
        };
        for target in targets {
            if target.eq_ignore_ascii_case(address) {
                finals.push(target);
            } else {
                self.expand_one(&target, depth + 1, finals, top)?;
            }
            if finals.len() > self.expansion_limit {
                return Err(AliasError::Size(top.to_owned()));
            }
        }
        Ok(())
    }
}

/// `target` with `delim` and `ext` added to its local part, unless it
/// already has an extension.
/// A lookup result as virtual(5) and canonical(5) rewrite it: the first
/// result `@otherdomain` becomes the same user in `otherdomain`; a result
/// without a domain gets `@$myorigin`.
pub(crate) fn result_address(
    target: &str,
    index: usize,
    address: &MailAddress,
    myorigin: &str,
) -> String {
    if let Some(domain) = target.strip_prefix('@') {
        if index == 0 && !domain.is_empty() {
            return format!("{}@{domain}", address.local_part().render());
        }
        return target.to_owned();
    }
    if !target.contains('@') && !myorigin.is_empty() {
        return format!("{target}@{myorigin}");
    }
    target.to_owned()
}

pub(crate) fn with_extension(
    target: &str,
    delim: &str,
    ext: &str,
    delimiter: &RecipientDelimiter,
) -> String {
    let Ok(addr) = target.parse::<MailAddress>() else {
        return target.to_owned();
    };
    if addr.extension(delimiter).is_some() {
        return target.to_owned();
    }
    let local = format!("{}{delim}{ext}", addr.local_part().as_str());
    match LocalPart::new(local).and_then(|l| MailAddress::new(l, addr.domain().cloned())) {
        Ok(a) => a.to_string(),
        Err(_) => target.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mta_maps::registry::{OpenContext, Registry};

    fn aliases(table: &str) -> VirtualAliases {
        VirtualAliases {
            maps: Registry::new(OpenContext::default())
                .open_list(table)
                .unwrap(),
            delimiter: RecipientDelimiter::new("+"),
            mydestination: DomainMatcher::default(),
            myorigin: "example.com".into(),
            recursion_limit: 5,
            expansion_limit: 4,
            propagate_extensions: true,
        }
    }

    fn addresses(v: &[Recipient]) -> Vec<&str> {
        v.iter().map(|r| r.address.as_str()).collect()
    }

    #[test]
    fn self_reference_catch_all_and_extensions() {
        let a = aliases(
            "inline:{ {alice@example.com=alice@example.com,archive@example.org}, \
             bob@example.com=robert@example.org, @example.net=catch@example.org, \
             root=admin@example.org }",
        );
        let out = a
            .expand(vec![
                Recipient::new("alice@example.com"),
                Recipient::new("bob+news@example.com"),
                Recipient::new("x+y@example.net"),
                Recipient::new("root@example.com"),
                Recipient::new("nobody@example.com"),
            ])
            .unwrap();
        assert_eq!(
            addresses(&out),
            [
                "alice@example.com",
                "archive@example.org",
                "robert+news@example.org",
                "catch@example.org",
                "admin@example.org",
                "nobody@example.com"
            ]
        );
        // root matched only because example.com is $myorigin.
        let out = a.expand(vec![Recipient::new("root@example.org")]).unwrap();
        assert_eq!(addresses(&out), ["root@example.org"]);
    }

    #[test]
    fn loops_and_explosions_are_errors() {
        let a = aliases("inline:{ a@x.org=b@x.org, b@x.org=a@x.org }");
        assert_eq!(
            a.expand(vec![Recipient::new("a@x.org")]),
            Err(AliasError::Nesting("a@x.org".into()))
        );
        let a = aliases("inline:{ {big@x.org=1@y,2@y,3@y,4@y,5@y} }");
        assert_eq!(
            a.expand(vec![Recipient::new("big@x.org")]),
            Err(AliasError::Size("big@x.org".into()))
        );
    }

    #[test]
    fn duplicates_are_removed_across_recipients() {
        let a = aliases("inline:{ {list@x.org=Ann@y.org,ann@y.org,bo@y.org} }");
        let out = a
            .expand(vec![
                Recipient::new("list@x.org"),
                Recipient::new("bo@y.org"),
            ])
            .unwrap();
        assert_eq!(addresses(&out), ["Ann@y.org", "bo@y.org"]);
        assert_eq!(out[1].original, "list@x.org");
    }
}

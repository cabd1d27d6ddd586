//! The key sequences that address lookups try, implemented once for every
//! caller: `virtual(5)`, `canonical(5)`, `access(5)` and `transport(5)`
//! each search an address in their own order.
//!
//! | table | keys, in order |
//! |---|---|
//! | virtual, canonical | `user+ext@domain`, `user@domain`, `user+ext`*, `user`*, `@domain` |
//! | access (addresses) | `user+ext@domain`, `user@domain`, `domain`, parents, `user+ext@`, `user@` |
//! | transport | `user+ext@domain`, `user@domain`, `domain`, parents, `*` |
//!
//! \* only when the domain is local (`$myorigin`, `$mydestination`,
//! `$inet_interfaces`, `$proxy_interfaces`), which the caller decides.
//!
//! Parents: `sub.example.com` is followed by `.example.com` and `.com`,
//! or, when the table's parameter is listed in
//! `parent_domain_matches_subdomains`, by `example.com` and `com`.
//!
//! Every key but the whole address is *partial*: pattern tables
//! (`regexp`, `pcre`, `cidr`) see the whole address only
//! ([`crate::list::MapList::search`]).

use mta_core::address::{MailAddress, RecipientDelimiter};

/// One key of a search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchKey {
    /// The key.
    pub key: String,
    /// Whether it is only part of the address (skipped by pattern tables).
    pub partial: bool,
}

impl SearchKey {
    fn whole(key: String) -> SearchKey {
        SearchKey {
            key,
            partial: false,
        }
    }
    fn partial(key: String) -> SearchKey {
        SearchKey { key, partial: true }
    }
}

/// Which table's order to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SearchStyle {
    /// `virtual_alias_maps`, `canonical_maps` and the other canonical
    /// tables: `user` forms only for local domains.
    Virtual {
        /// Whether the address's domain is local.
        local_domain: bool,
    },
    /// `check_*_access` on an address.
    Access {
        /// Whether `smtpd_access_maps` is in `parent_domain_matches_subdomains`.
        parent_matches: bool,
    },
    /// `transport_maps`.
    Transport {
        /// Whether `transport_maps` is in `parent_domain_matches_subdomains`.
        parent_matches: bool,
    },
}

/// The parents of `domain`: `.example.com`, `.com` (or without the dots).
fn parents(domain: &str, parent_matches: bool) -> impl Iterator<Item = String> + '_ {
    domain.match_indices('.').map(move |(i, _)| {
        if parent_matches {
            domain[i + 1..].to_string()
        } else {
            domain[i..].to_string()
        }
    })
}

/// The keys to try for `address`, in order, without duplicates.
///
/// # Example
/// ```
/// use mta_core::address::{MailAddress, RecipientDelimiter};
/// use mta_maps::search::{keys, SearchStyle};
/// let addr: MailAddress = "user+foo@sub.example.com".parse().unwrap();
/// let delim = RecipientDelimiter::new("+");
/// let k: Vec<String> = keys(&addr, &delim, SearchStyle::Virtual { local_domain: true })
///     .into_iter().map(|k| k.key).collect();
/// assert_eq!(k, ["user+foo@sub.example.com", "user@sub.example.com", "user+foo", "user", "@sub.example.com"]);
/// let k: Vec<String> = keys(&addr, &delim, SearchStyle::Access { parent_matches: false })
///     .into_iter().map(|k| k.key).collect();
/// assert_eq!(k, ["user+foo@sub.example.com", "user@sub.example.com", "sub.example.com",
///                ".example.com", ".com", "user+foo@", "user@"]);
/// ```
pub fn keys(
    address: &MailAddress,
    delimiter: &RecipientDelimiter,
    style: SearchStyle,
) -> Vec<SearchKey> {
    let local = address.local_part().render().into_owned();
    let base = address
        .without_extension(delimiter)
        .map_or_else(|| local.clone(), |a| a.local_part().render().into_owned());
    let has_ext = base != local;
    let domain = address.domain().map(|d| d.as_str().to_string());
    let mut out: Vec<SearchKey> = Vec::new();
    let mut push = |k: SearchKey| {
        if !out.iter().any(|o| o.key == k.key) {
            out.push(k);
        }
    };
    let full = match &domain {
        Some(d) => format!("{local}@{d}"),
        None => local.clone(),
    };
    push(SearchKey::whole(full));
    if has_ext {
        push(SearchKey::partial(match &domain {
            Some(d) => format!("{base}@{d}"),
            None => base.clone(),
        }));
    }
    match style {
        SearchStyle::Virtual { local_domain } => {
            if local_domain || domain.is_none() {
                push(SearchKey::partial(local.clone()));
                push(SearchKey::partial(base.clone()));
            }
            if let Some(d) = &domain {
                push(SearchKey::partial(format!("@{d}")));
            }
        }
        SearchStyle::Access { parent_matches } => {
            if let Some(d) = &domain {
                push(SearchKey::partial(d.clone()));
                for p in parents(d, parent_matches) {
                    push(SearchKey::partial(p));
                }
            }
            push(SearchKey::partial(format!("{local}@")));
            push(SearchKey::partial(format!("{base}@")));
        }
        SearchStyle::Transport { parent_matches } => {
            if let Some(d) = &domain {
                push(SearchKey::partial(d.clone()));
                for p in parents(d, parent_matches) {
                    push(SearchKey::partial(p));
                }
            }
            push(SearchKey::partial("*".to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(addr: &str, style: SearchStyle) -> Vec<String> {
        let a: MailAddress = addr.parse().unwrap();
        keys(&a, &RecipientDelimiter::new("+"), style)
            .into_iter()
            .map(|k| k.key)
            .collect()
    }

    #[test]
    fn manual_orders() {
        // virtual(5), TABLE SEARCH ORDER, for a remote domain.
        assert_eq!(
            k(
                "user@example.com",
                SearchStyle::Virtual {
                    local_domain: false
                }
            ),
            ["user@example.com", "@example.com"]
        );
        // access(5): with parent_domain_matches_subdomains listing it.
        assert_eq!(
            k(
                "user@a.example.com",
                SearchStyle::Access {
                    parent_matches: true
                }
            ),
            [
                "user@a.example.com",
                "a.example.com",
                "example.com",
                "com",
                "user@"
            ]
        );
        // transport(5).
        assert_eq!(
            k(
                "user+x@example.com",
                SearchStyle::Transport {
                    parent_matches: false
                }
            ),
            [
                "user+x@example.com",
                "user@example.com",
                "example.com",
                ".com",
                "*"
            ]
        );
    }
}

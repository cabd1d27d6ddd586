//! Postfix's trivial-rewrite as pure functions: rewriting addresses to
//! standard form, and resolving a recipient to its address class and
//! `transport:nexthop`.
//!
//! # What this module does
//!
//! [`rewrite`] is trivial-rewrite's "rewrite" service (ADDRESS_REWRITING_README,
//! "Rewrite addresses to standard form"): `site!user` becomes `user@site`
//! (`swap_bangpath`), `user%domain` becomes `user@domain`
//! (`allow_percent_hack`), `user` becomes `user@$myorigin`
//! (`append_at_myorigin`) and `user@host` becomes `user@host.$mydomain`
//! (`append_dot_mydomain`); in the [`RewriteContext::Remote`] context the
//! `remote_header_rewrite_domain` is appended instead, or nothing when it
//! is empty. Source routes and a single trailing dot are already removed
//! by the parser in [`crate::address`].
//!
//! [`resolve`] is the "resolve" service: it puts a recipient in one of the
//! five address classes of ADDRESS_CLASS_README and picks the delivery
//! transport and next hop:
//!
//! | class | domains | transport | default next hop |
//! |---|---|---|---|
//! | local | `mydestination`, `[ip]` of our own addresses | `local_transport` | recipient domain |
//! | virtual alias | `virtual_alias_domains` | `error:5.1.1 User unknown in virtual alias table` | - |
//! | virtual mailbox | `virtual_mailbox_domains` | `virtual_transport` | recipient domain |
//! | relay | `relay_domains` | `relay_transport` | `relayhost`, else recipient domain |
//! | default | any other | `default_transport` | `relayhost`, else recipient domain |
//!
//! A next hop given in the transport parameter (`local:$myhostname`, the
//! default of `local_transport`) wins over `relayhost`. The `transport_maps`
//! table is consulted last and overrides the result as transport(5)
//! describes, except for the virtual alias class: a recipient still in a
//! virtual alias domain after cleanup's aliasing has no mailbox anywhere,
//! and Postfix keeps the error.
//!
//! Before classifying, [`resolve`] handles sender-specified routing the way
//! Postfix does: while the domain is local and the local part still holds a
//! routing operator (`@` when `resolve_dequoted_address = yes`, then `!`
//! with `swap_bangpath`, then `%` with `allow_percent_hack`), the local
//! domain is dropped and the local part is resolved as an address of its
//! own (`user%other@ourdomain` goes to `user@other`). A recipient whose
//! final local part still holds `@`, `%` or `!` is marked
//! [`Resolution::routed`], which the SMTP server's relay checks need
//! (postconf(5) `allow_untrusted_routing`). The behaviour was checked case
//! by case against Postfix 3.7's trivial-rewrite; the tests list the cases.
//!
//! # What comes from outside
//!
//! Table lookups belong to `mta-maps`, which depends on this crate, so the
//! resolver asks for what it needs through two small traits,
//! [`DomainList`] and [`TransportTable`], whose errors are
//! [`LookupError`]s. A lookup error makes the resolution fail with
//! [`ResolveError::Lookup`], a temporary failure: never a wrong class.
//! [`LiteralDomainList`] and [`LiteralTransportTable`] implement them for
//! literal lists, with Postfix's `parent_domain_matches_subdomains`
//! behaviour, so everything here is usable and testable on its own.
//!
//! The configuration is a [`RewriteConfig`] of plain, already expanded
//! values; the caller computes the list of our own IP addresses from
//! `inet_interfaces` and `proxy_interfaces`, and decides the rewrite context
//! from `local_header_rewrite_clients`.
//!
//! # What this module does not do
//!
//! Canonical mapping, masquerading and virtual aliasing (cleanup's jobs),
//! `relocated_maps`, the `sender_dependent_relayhost_maps` and
//! `sender_dependent_default_transport_maps` overrides, and the
//! `address_verify_*` variants (pass a second [`RewriteConfig`]). There is
//! no `resolve_null_domain`: the parser never produces `user@`. Domain list
//! entries of the form `type:table` and `/file/name` are for `mta-maps` to
//! implement behind [`DomainList`].
//!
//! # Example
//!
//! ```
//! use mta_core::address::MailAddress;
//! use mta_core::address_class::{
//!     resolve, AddressClass, LiteralClassTables, LiteralDomainList, RewriteConfig,
//! };
//!
//! let config = RewriteConfig::new("mail.example.com".parse()?, "example.com".parse()?);
//! let mut lists = LiteralClassTables::postfix_defaults(&config);
//! lists.virtual_mailbox_domains = LiteralDomainList::new(["example.org"], false)?;
//!
//! let r = resolve(&config, &lists.tables(), &"joe@Example.ORG".parse()?)?;
//! assert_eq!(r.class, AddressClass::VirtualMailbox);
//! assert_eq!((r.transport.as_str(), r.nexthop.as_str()), ("virtual", "example.org"));
//!
//! // Sender-specified routing through a local domain: the percent hack.
//! let r = resolve(&config, &lists.tables(), &"joe%elsewhere.example@mail.example.com".parse()?)?;
//! assert_eq!(r.class, AddressClass::Default);
//! assert_eq!(r.recipient.to_string(), "joe@elsewhere.example");
//! assert_eq!(r.nexthop, "elsewhere.example");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::config::{Config, ConfigError};

use crate::address::{
    AddressError, Domain, LocalPart, MailAddress, ParseOptions, RecipientDelimiter,
};

/// Postfix's default `parent_domain_matches_subdomains` (`postconf -d` of
/// Postfix 3.7): the features where `example.com` also matches its
/// subdomains. `transport_maps` is not among them, so transport tables need
/// `.example.com` entries for subdomains.
pub const DEFAULT_PARENT_DOMAIN_MATCHES_SUBDOMAINS: [&str; 7] = [
    "debug_peer_list",
    "fast_flush_domains",
    "mynetworks",
    "permit_mx_backup_networks",
    "qmqpd_authorized_clients",
    "relay_domains",
    "smtpd_access_maps",
];

/// The transport of the virtual alias class: the error(8) delivery agent.
pub const VIRTUAL_ALIAS_TRANSPORT: &str = "error";

/// The next hop of the virtual alias class: the reason error(8) gives,
/// with its RFC 3463 status (ADDRESS_CLASS_README: "User unknown in virtual
/// alias table").
pub const VIRTUAL_ALIAS_NEXTHOP: &str = "5.1.1 User unknown in virtual alias table";

/// Postfix's default `empty_address_recipient`: the local part that
/// replaces an empty one in the local class (`@example.com` resolves to
/// `MAILER-DAEMON@example.com`).
pub const DEFAULT_EMPTY_ADDRESS_RECIPIENT: &str = "MAILER-DAEMON";

/// The characters that, left in a local part, mean sender-specified
/// routing (postconf(5) `allow_untrusted_routing`: `user[@%!]remote[@%!]site`).
const ROUTING_OPERATORS: [char; 3] = ['@', '%', '!'];

/// A table lookup that failed (a database down, a file unreadable).
///
/// The resolver turns it into [`ResolveError::Lookup`], a temporary
/// failure, as Postfix defers rather than guesses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lookup in {table} failed: {reason}")]
#[non_exhaustive]
pub struct LookupError {
    /// The table, as configured (`pgsql:/etc/mta/relay.cf`).
    pub table: String,
    /// What went wrong.
    pub reason: String,
}

impl LookupError {
    /// A lookup error for `table`.
    pub fn new(table: impl Into<String>, reason: impl Into<String>) -> LookupError {
        LookupError {
            table: table.into(),
            reason: reason.into(),
        }
    }
}

/// A list of domains, such as `mydestination` or `relay_domains`.
pub trait DomainList {
    /// Whether `domain` is in the list (with whatever subdomain rules the
    /// list has).
    ///
    /// # Errors
    ///
    /// A [`LookupError`] when the answer is unknown.
    fn contains(&self, domain: &Domain) -> Result<bool, LookupError>;
}

/// A transport(5) table: the `transport_maps` hook.
pub trait TransportTable {
    /// Finds the entry for a recipient, applying the table's own search
    /// order (for indexed tables: `user+ext@domain`, `user@domain`,
    /// `domain`, parent domains, `*`; for regular expressions: the whole
    /// address once). Returns the raw `transport:nexthop` value.
    ///
    /// # Errors
    ///
    /// A [`LookupError`] when the answer is unknown.
    fn find(&self, recipient: &MailAddress) -> Result<Option<String>, LookupError>;
}

/// Errors in the values of the configuration that this module parses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClassConfigError {
    /// A domain list entry is not a domain name or address literal.
    #[error("bad domain list entry {entry:?}: {source}")]
    BadDomainListEntry {
        /// The entry as given.
        entry: String,
        /// Why it is not a domain.
        #[source]
        source: AddressError,
    },
    /// A `*_transport` value has no transport name (`:nexthop` or empty).
    #[error("transport value {value:?} has no transport name")]
    EmptyTransportName {
        /// The value as given.
        value: String,
    },
    /// A next-hop destination is malformed.
    #[error("bad next-hop destination {value:?}: {reason}")]
    BadNextHop {
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A recipient that cannot be delivered anywhere: Postfix's "bad address
/// syntax", a permanent failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidAddress {
    /// A routing operator in the local part (`@`, `!` or `%`) names a
    /// destination that is not a valid domain: `user%@example.com`,
    /// `!user`, `a@b%c@example.com`.
    #[error("address {address:?} routes to {route:?}, which is not a valid domain")]
    BadRoute {
        /// The address, internal form, being split.
        address: String,
        /// The would-be domain.
        route: String,
    },
    /// The domain is all numeric (`user@192.0.2.1`, `user@123`) and
    /// `resolve_numeric_domain = no`, or it is not a dotted-quad address
    /// that could be made into a literal.
    #[error("numeric domain {domain:?} is not allowed; use an address literal")]
    NumericDomain {
        /// The domain.
        domain: String,
    },
    /// The address starts with `-` and `allow_min_user = no`, the guard
    /// against addresses that look like command-line options.
    #[error("address {address:?} starts with '-'")]
    LeadingHyphen {
        /// The address, internal form.
        address: String,
    },
}

/// Why a recipient could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// A table lookup failed: try again later (4xx, defer).
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The address is invalid (5xx, bounce).
    #[error(transparent)]
    InvalidAddress(#[from] InvalidAddress),
}

impl ResolveError {
    /// Whether the failure is temporary (a lookup error) rather than
    /// permanent (an invalid address).
    pub fn is_temporary(&self) -> bool {
        matches!(self, ResolveError::Lookup(_))
    }
}

/// A `transport[:nexthop]` parameter value, such as `local_transport`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TransportSpec {
    transport: String,
    nexthop: Option<String>,
}

impl TransportSpec {
    /// Parses `transport` or `transport:nexthop`; the next hop is all the
    /// text after the first colon (`smtp:[host]:587`), and an empty one
    /// (`smtp:`) means none.
    ///
    /// # Errors
    ///
    /// [`ClassConfigError::EmptyTransportName`] when there is no transport
    /// name.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_core::address_class::TransportSpec;
    ///
    /// let t = TransportSpec::parse("smtp:[relay.example]:587")?;
    /// assert_eq!((t.transport(), t.nexthop()), ("smtp", Some("[relay.example]:587")));
    /// assert_eq!(TransportSpec::parse("virtual")?.nexthop(), None);
    /// # Ok::<(), mta_core::address_class::ClassConfigError>(())
    /// ```
    pub fn parse(value: &str) -> Result<TransportSpec, ClassConfigError> {
        let value = value.trim();
        let (transport, nexthop) = value.split_once(':').unwrap_or((value, ""));
        if transport.is_empty() {
            return Err(ClassConfigError::EmptyTransportName {
                value: value.to_owned(),
            });
        }
        Ok(TransportSpec {
            transport: transport.to_owned(),
            nexthop: (!nexthop.is_empty()).then(|| nexthop.to_owned()),
        })
    }

    /// The transport (a `master.cf` service name).
    pub fn transport(&self) -> &str {
        &self.transport
    }

    /// The next hop, if the value has one.
    pub fn nexthop(&self) -> Option<&str> {
        self.nexthop.as_deref()
    }
}

impl fmt::Display for TransportSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.nexthop {
            Some(n) => write!(f, "{}:{n}", self.transport),
            None => f.write_str(&self.transport),
        }
    }
}

impl FromStr for TransportSpec {
    type Err = ClassConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TransportSpec::parse(s)
    }
}

/// A transport(5) table result, with its override rules.
///
/// From transport(5) "RESULT FORMAT": an empty transport and next hop
/// (`:`) change nothing; a transport with an empty next hop (`slow:`)
/// replaces the transport and resets the next hop to the recipient domain;
/// an empty transport with a next hop (`:[gateway]`) replaces only the
/// next hop. A value without a colon is taken as a transport name alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TransportOverride {
    /// The transport, if the entry sets one.
    pub transport: Option<String>,
    /// The next hop, if the entry sets one.
    pub nexthop: Option<String>,
}

impl TransportOverride {
    /// Parses a table value; every string is a valid value.
    pub fn parse(value: &str) -> TransportOverride {
        let value = value.trim();
        let (transport, nexthop) = value.split_once(':').unwrap_or((value, ""));
        TransportOverride {
            transport: (!transport.is_empty()).then(|| transport.to_owned()),
            nexthop: (!nexthop.is_empty()).then(|| nexthop.to_owned()),
        }
    }

    /// Applies the override to a transport and next hop.
    fn apply(&self, transport: &mut String, nexthop: &mut String, recipient_domain: &Domain) {
        match (&self.transport, &self.nexthop) {
            (None, None) => {}
            (Some(t), None) => {
                *transport = t.clone();
                *nexthop = recipient_domain.to_string();
            }
            (None, Some(n)) => *nexthop = n.clone(),
            (Some(t), Some(n)) => {
                *transport = t.clone();
                *nexthop = n.clone();
            }
        }
    }
}

/// The host of a next-hop destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NextHopHost {
    /// A host or domain name.
    Name(Domain),
    /// An IP address (only in the `[...]` form).
    Address(IpAddr),
}

/// One SMTP or LMTP-over-TCP next-hop destination, in the forms of
/// postconf(5) `relayhost` and transport(5): `domain`, `host:port`,
/// `[host]`, `[host]:port`, `[address]`, `[address]:port`.
///
/// The brackets turn off MX lookups; an IP address must be in brackets.
/// IPv6 addresses are written `[ipv6:2001:db8::1]` (IPV6_README), and the
/// bare form `[2001:db8::1]` is accepted too.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NextHop {
    /// The host.
    pub host: NextHopHost,
    /// Whether to look up MX records (false for the `[...]` forms).
    pub mx_lookup: bool,
    /// The port: a number or a service name; `None` for the default.
    pub port: Option<String>,
}

impl NextHop {
    /// Parses one destination.
    ///
    /// # Errors
    ///
    /// [`ClassConfigError::BadNextHop`] naming the problem.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_core::address_class::{NextHop, NextHopHost};
    ///
    /// let hop = NextHop::parse("[mail.example.com]:587")?;
    /// assert!(!hop.mx_lookup);
    /// assert_eq!(hop.port.as_deref(), Some("587"));
    /// let hop = NextHop::parse("[192.0.2.25]")?;
    /// assert_eq!(hop.host, NextHopHost::Address("192.0.2.25".parse().unwrap()));
    /// assert!(NextHop::parse("192.0.2.25").is_err());
    /// # Ok::<(), mta_core::address_class::ClassConfigError>(())
    /// ```
    pub fn parse(text: &str) -> Result<NextHop, ClassConfigError> {
        let value = text.trim();
        let bad = |reason| ClassConfigError::BadNextHop {
            value: value.to_owned(),
            reason,
        };
        let (host, mx_lookup, after) = if let Some(rest) = value.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or_else(|| bad("missing ]"))?;
            (
                bracketed_host(inside).ok_or_else(|| bad("not a host name or IP address"))?,
                false,
                after,
            )
        } else {
            let (name, after) = match value.find(':') {
                Some(i) => value.split_at(i),
                None => (value, ""),
            };
            if name.parse::<Ipv4Addr>().is_ok() || name.parse::<Ipv6Addr>().is_ok() {
                return Err(bad("an IP address must be enclosed in []"));
            }
            let domain = Domain::parse(name, ParseOptions::LENIENT.with_smtputf8(true))
                .map_err(|_| bad("not a host or domain name"))?;
            (NextHopHost::Name(domain), true, after)
        };
        let port = match after {
            "" => None,
            _ => {
                let port = after
                    .strip_prefix(':')
                    .ok_or_else(|| bad("unexpected text after the host"))?;
                if port.is_empty() || !port.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    return Err(bad("bad port"));
                }
                Some(port.to_owned())
            }
        };
        Ok(NextHop {
            host,
            mx_lookup,
            port,
        })
    }

    /// Parses a list of destinations separated by commas and/or white
    /// space (Postfix 3.5 and later allow several).
    ///
    /// # Errors
    ///
    /// The error of the first bad destination.
    pub fn parse_list(text: &str) -> Result<Vec<NextHop>, ClassConfigError> {
        text.split([',', ' ', '\t'])
            .filter(|s| !s.is_empty())
            .map(NextHop::parse)
            .collect()
    }
}

/// The host inside `[...]`: an IPv4 or IPv6 address (with or without the
/// `ipv6:` tag) or a name.
fn bracketed_host(inside: &str) -> Option<NextHopHost> {
    let tagged = inside
        .get(..5)
        .filter(|tag| tag.eq_ignore_ascii_case("ipv6:"))
        .map(|_| &inside[5..]);
    if let Some(v6) = tagged {
        return v6
            .parse::<Ipv6Addr>()
            .ok()
            .map(|a| NextHopHost::Address(IpAddr::V6(a)));
    }
    if let Ok(ip) = inside.parse::<IpAddr>() {
        return Some(NextHopHost::Address(ip));
    }
    Domain::parse(inside, ParseOptions::LENIENT.with_smtputf8(true))
        .ok()
        .filter(|d| !d.is_address_literal())
        .map(NextHopHost::Name)
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.host {
            NextHopHost::Name(d) => d.to_string(),
            NextHopHost::Address(IpAddr::V4(a)) => a.to_string(),
            NextHopHost::Address(IpAddr::V6(a)) => format!("ipv6:{a}"),
        };
        if self.mx_lookup {
            f.write_str(&host)?;
        } else {
            write!(f, "[{host}]")?;
        }
        if let Some(port) = &self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// The rewriting context of trivial-rewrite(8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RewriteContext {
    /// Mail from Postfix sendmail, from clients matching
    /// `local_header_rewrite_clients`, and all envelope addresses:
    /// complete with `$myorigin` and `$mydomain`.
    #[default]
    Local,
    /// Message headers from other clients: complete with
    /// `$remote_header_rewrite_domain`, or not at all when it is empty.
    Remote,
}

/// The five address classes of ADDRESS_CLASS_README.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddressClass {
    /// `mydestination` and our own `[ip]` literals: `local_transport`.
    Local,
    /// `virtual_alias_domains`: every address must be aliased; no transport.
    VirtualAlias,
    /// `virtual_mailbox_domains`: `virtual_transport`.
    VirtualMailbox,
    /// `relay_domains`: `relay_transport`.
    Relay,
    /// Everything else: `default_transport`.
    Default,
}

impl AddressClass {
    /// The class name as the Postfix documentation writes it.
    pub fn name(self) -> &'static str {
        match self {
            AddressClass::Local => "local",
            AddressClass::VirtualAlias => "virtual alias",
            AddressClass::VirtualMailbox => "virtual mailbox",
            AddressClass::Relay => "relay",
            AddressClass::Default => "default",
        }
    }

    /// Whether this machine is the final destination of the class (local,
    /// virtual alias, virtual mailbox).
    pub fn is_final_destination(self) -> bool {
        matches!(
            self,
            AddressClass::Local | AddressClass::VirtualAlias | AddressClass::VirtualMailbox
        )
    }

    /// The table named in the SMTP server's "User unknown in ... table"
    /// reply for this class (ADDRESS_CLASS_README); `None` for the default
    /// class, which has no recipient table.
    pub fn recipient_table_name(self) -> Option<&'static str> {
        match self {
            AddressClass::Local => Some("local recipient table"),
            AddressClass::VirtualAlias => Some("virtual alias table"),
            AddressClass::VirtualMailbox => Some("virtual mailbox table"),
            AddressClass::Relay => Some("relay recipient table"),
            AddressClass::Default => None,
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What trivial-rewrite needs from `main.cf`, as plain values: strings
/// already expanded, domains parsed.
///
/// Build it with [`RewriteConfig::new`], which applies Postfix's defaults,
/// then set the fields that `main.cf` changes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RewriteConfig {
    /// `myhostname`.
    pub myhostname: Domain,
    /// `mydomain`.
    pub mydomain: Domain,
    /// `myorigin` (default `$myhostname`).
    pub myorigin: Domain,
    /// `append_at_myorigin` (default yes).
    pub append_at_myorigin: bool,
    /// `append_dot_mydomain` (default no, Postfix 3.0 and later at
    /// `compatibility_level` 1 or higher).
    pub append_dot_mydomain: bool,
    /// `swap_bangpath` (default yes).
    pub swap_bangpath: bool,
    /// `allow_percent_hack` (default yes).
    pub allow_percent_hack: bool,
    /// `remote_header_rewrite_domain`; `None` when empty (the default).
    pub remote_header_rewrite_domain: Option<Domain>,
    /// `resolve_dequoted_address` (default yes): look for routing operators
    /// inside quoted local parts when resolving.
    pub resolve_dequoted_address: bool,
    /// `resolve_numeric_domain` (default no): resolve `user@192.0.2.1` as
    /// `user@[192.0.2.1]` instead of rejecting it.
    pub resolve_numeric_domain: bool,
    /// `allow_min_user` (default no): allow addresses starting with `-`.
    pub allow_min_user: bool,
    /// `empty_address_recipient` (default `MAILER-DAEMON`).
    pub empty_address_recipient: LocalPart,
    /// `local_transport` (default `local:$myhostname`).
    pub local_transport: TransportSpec,
    /// `virtual_transport` (default `virtual`).
    pub virtual_transport: TransportSpec,
    /// `relay_transport` (default `relay`).
    pub relay_transport: TransportSpec,
    /// `default_transport` (default `smtp`).
    pub default_transport: TransportSpec,
    /// `relayhost`, the raw next-hop list; `None` when empty (the default).
    pub relayhost: Option<String>,
    /// The addresses of `inet_interfaces` and `proxy_interfaces`, computed
    /// by the caller (`all` means every interface address): mail for
    /// `user@[address]` of these is local.
    pub our_addresses: Vec<IpAddr>,
    /// `parent_domain_matches_subdomains`: feature names, see
    /// [`RewriteConfig::parent_matches_subdomains`].
    pub parent_domain_matches_subdomains: Vec<String>,
}

impl RewriteConfig {
    /// Postfix's defaults for a host named `myhostname` in `mydomain`.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_core::address_class::RewriteConfig;
    ///
    /// let c = RewriteConfig::new("mail.example.com".parse()?, "example.com".parse()?);
    /// assert_eq!(c.local_transport.to_string(), "local:mail.example.com");
    /// assert_eq!(c.myorigin.as_str(), "mail.example.com");
    /// assert!(c.parent_matches_subdomains("relay_domains"));
    /// assert!(!c.parent_matches_subdomains("transport_maps"));
    /// # Ok::<(), mta_core::address::AddressError>(())
    /// ```
    pub fn new(myhostname: Domain, mydomain: Domain) -> RewriteConfig {
        let spec = |t: &str, n: Option<&str>| TransportSpec {
            transport: t.to_owned(),
            nexthop: n.map(str::to_owned),
        };
        RewriteConfig {
            myorigin: myhostname.clone(),
            append_at_myorigin: true,
            append_dot_mydomain: false,
            swap_bangpath: true,
            allow_percent_hack: true,
            remote_header_rewrite_domain: None,
            resolve_dequoted_address: true,
            resolve_numeric_domain: false,
            allow_min_user: false,
            empty_address_recipient: LocalPart::new(DEFAULT_EMPTY_ADDRESS_RECIPIENT)
                .unwrap_or_else(|_| unreachable!("the default is a valid local part")),
            local_transport: spec("local", Some(myhostname.as_str())),
            virtual_transport: spec("virtual", None),
            relay_transport: spec("relay", None),
            default_transport: spec("smtp", None),
            relayhost: None,
            our_addresses: Vec::new(),
            parent_domain_matches_subdomains: DEFAULT_PARENT_DOMAIN_MATCHES_SUBDOMAINS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            myhostname,
            mydomain,
        }
    }

    /// Whether `feature` (a parameter name such as `relay_domains` or
    /// `transport_maps`) is listed in `parent_domain_matches_subdomains`.
    pub fn parent_matches_subdomains(&self, feature: &str) -> bool {
        self.parent_domain_matches_subdomains
            .iter()
            .any(|f| f == feature)
    }

    fn relayhost(&self) -> Option<&str> {
        self.relayhost
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// The domains appended to `user` and to `user@host` in a context.
    fn completion_domains(&self, context: RewriteContext) -> (Option<&Domain>, Option<&Domain>) {
        match context {
            RewriteContext::Local => (Some(&self.myorigin), Some(&self.mydomain)),
            RewriteContext::Remote => (
                self.remote_header_rewrite_domain.as_ref(),
                self.remote_header_rewrite_domain.as_ref(),
            ),
        }
    }
}

/// The tables the resolver consults, borrowed from wherever they live.
#[derive(Clone, Copy)]
pub struct ClassTables<'a> {
    /// `mydestination`.
    pub mydestination: &'a dyn DomainList,
    /// `virtual_alias_domains`.
    pub virtual_alias_domains: &'a dyn DomainList,
    /// `virtual_mailbox_domains`.
    pub virtual_mailbox_domains: &'a dyn DomainList,
    /// `relay_domains`.
    pub relay_domains: &'a dyn DomainList,
    /// `transport_maps`; `None` when empty.
    pub transport_maps: Option<&'a dyn TransportTable>,
}

/// A domain list given literally: entries `example.com`, `.example.com`
/// (subdomains only) and `!example.com` (exclusion), matched in order with
/// the first match winning, as Postfix matches lists.
///
/// With `parent_matches_subdomains` (the feature is listed in
/// `parent_domain_matches_subdomains`, as `relay_domains` is by default),
/// `example.com` also matches its subdomains; without it, only itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LiteralDomainList {
    patterns: Vec<DomainPattern>,
    parent_matches_subdomains: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct DomainPattern {
    negated: bool,
    subdomains_only: bool,
    domain: Domain,
}

impl LiteralDomainList {
    /// A list from its entries (empty entries are skipped).
    ///
    /// # Errors
    ///
    /// [`ClassConfigError::BadDomainListEntry`] for an entry that is not a
    /// domain name or address literal.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_core::address_class::{DomainList, LiteralDomainList};
    ///
    /// let relay = LiteralDomainList::new(["!private.example.com", "example.com"], true)?;
    /// assert!(relay.contains(&"www.example.com".parse()?)?);
    /// assert!(!relay.contains(&"x.private.example.com".parse()?)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new<I, S>(
        entries: I,
        parent_matches_subdomains: bool,
    ) -> Result<LiteralDomainList, ClassConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut patterns = Vec::new();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            let (negated, rest) = match entry.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, entry),
            };
            let (subdomains_only, name) = match rest.strip_prefix('.') {
                Some(name) => (true, name),
                None => (false, rest),
            };
            let domain = Domain::parse(name, ParseOptions::LENIENT.with_smtputf8(true)).map_err(
                |source| ClassConfigError::BadDomainListEntry {
                    entry: entry.to_owned(),
                    source,
                },
            )?;
            patterns.push(DomainPattern {
                negated,
                subdomains_only,
                domain,
            });
        }
        Ok(LiteralDomainList {
            patterns,
            parent_matches_subdomains,
        })
    }

    /// An empty list.
    pub fn empty() -> LiteralDomainList {
        LiteralDomainList::default()
    }

    /// The domains the list names positively and exactly (not `!` or
    /// `.domain` entries): the candidates for [`find_class_conflicts`].
    pub fn domains(&self) -> impl Iterator<Item = &Domain> + '_ {
        self.patterns
            .iter()
            .filter(|p| !p.negated && !p.subdomains_only)
            .map(|p| &p.domain)
    }

    fn matches(&self, domain: &Domain) -> bool {
        for p in &self.patterns {
            let hit = if p.subdomains_only {
                domain.is_subdomain_of(&p.domain)
            } else {
                *domain == p.domain
                    || (self.parent_matches_subdomains && domain.is_subdomain_of(&p.domain))
            };
            if hit {
                return !p.negated;
            }
        }
        false
    }
}

impl DomainList for LiteralDomainList {
    fn contains(&self, domain: &Domain) -> Result<bool, LookupError> {
        Ok(self.matches(domain))
    }
}

/// A transport(5) table given literally, searched in transport(5)'s order
/// for indexed tables: `user+extension@domain`, `user@domain`, `domain`,
/// then each parent domain (as `.parent`, or as `parent` when
/// `transport_maps` is in `parent_domain_matches_subdomains`), then `*`.
/// Keys are case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LiteralTransportTable {
    entries: HashMap<String, String>,
    parent_matches_subdomains: bool,
    delimiter: RecipientDelimiter,
}

impl LiteralTransportTable {
    /// A table from `(pattern, transport:nexthop)` entries; `delimiter` is
    /// the `recipient_delimiter` used to try `user@domain` after
    /// `user+extension@domain`.
    pub fn new<I, K, V>(
        entries: I,
        parent_matches_subdomains: bool,
        delimiter: RecipientDelimiter,
    ) -> LiteralTransportTable
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        LiteralTransportTable {
            entries: entries
                .into_iter()
                .map(|(k, v)| (k.as_ref().trim().to_lowercase(), v.into()))
                .collect(),
            parent_matches_subdomains,
            delimiter,
        }
    }

    fn get(&self, key: &str) -> Option<String> {
        self.entries.get(key).cloned()
    }
}

impl TransportTable for LiteralTransportTable {
    fn find(&self, recipient: &MailAddress) -> Result<Option<String>, LookupError> {
        if let Some(v) = self.get(&recipient.lookup_key()) {
            return Ok(Some(v));
        }
        if let Some(v) = recipient
            .without_extension(&self.delimiter)
            .and_then(|plain| self.get(&plain.lookup_key()))
        {
            return Ok(Some(v));
        }
        if let Some(domain) = recipient.domain() {
            if let Some(v) = self.get(domain.as_str()) {
                return Ok(Some(v));
            }
            let mut parent = domain.parent();
            while let Some(p) = parent {
                let key = if self.parent_matches_subdomains {
                    p.to_string()
                } else {
                    format!(".{p}")
                };
                if let Some(v) = self.get(&key) {
                    return Ok(Some(v));
                }
                parent = p.parent();
            }
        }
        Ok(self.get("*"))
    }
}

/// The four domain lists and the transport table as literal values: the
/// simple, self-contained way to configure the resolver.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LiteralClassTables {
    /// `mydestination`.
    pub mydestination: LiteralDomainList,
    /// `virtual_alias_domains`.
    pub virtual_alias_domains: LiteralDomainList,
    /// `virtual_mailbox_domains`.
    pub virtual_mailbox_domains: LiteralDomainList,
    /// `relay_domains`.
    pub relay_domains: LiteralDomainList,
    /// `transport_maps`.
    pub transport_maps: Option<LiteralTransportTable>,
}

impl LiteralClassTables {
    /// Postfix's defaults: `mydestination = $myhostname,
    /// localhost.$mydomain, localhost`, the other lists and the transport
    /// table empty (`relay_domains` is empty from Postfix 3.0 on;
    /// `virtual_*_domains` default to their maps, which are empty).
    pub fn postfix_defaults(config: &RewriteConfig) -> LiteralClassTables {
        let localhost_domain = format!("localhost.{}", config.mydomain);
        let mydestination = LiteralDomainList::new(
            [
                config.myhostname.as_str(),
                localhost_domain.as_str(),
                "localhost",
            ],
            config.parent_matches_subdomains("mydestination"),
        )
        // A domain that does not fit under the length limit after
        // "localhost." is skipped rather than refused.
        .or_else(|_| {
            LiteralDomainList::new(
                [config.myhostname.as_str(), "localhost"],
                config.parent_matches_subdomains("mydestination"),
            )
        })
        .unwrap_or_default();
        LiteralClassTables {
            mydestination,
            ..LiteralClassTables::default()
        }
    }

    /// Borrows the lists for [`resolve`].
    pub fn tables(&self) -> ClassTables<'_> {
        ClassTables {
            mydestination: &self.mydestination,
            virtual_alias_domains: &self.virtual_alias_domains,
            virtual_mailbox_domains: &self.virtual_mailbox_domains,
            relay_domains: &self.relay_domains,
            transport_maps: self
                .transport_maps
                .as_ref()
                .map(|t| t as &dyn TransportTable),
        }
    }

    /// The domains listed in more than one class, see
    /// [`find_class_conflicts`].
    pub fn conflicts(&self) -> Vec<ClassConflict> {
        let candidates = self
            .mydestination
            .domains()
            .chain(self.virtual_alias_domains.domains())
            .chain(self.virtual_mailbox_domains.domains())
            .chain(self.relay_domains.domains());
        // Literal lists never fail a lookup.
        find_class_conflicts(&self.tables(), candidates).unwrap_or_default()
    }
}

/// The domain lists that define address classes, in the order the
/// resolver checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DomainListName {
    /// `mydestination`.
    Mydestination,
    /// `virtual_alias_domains`.
    VirtualAliasDomains,
    /// `virtual_mailbox_domains`.
    VirtualMailboxDomains,
    /// `relay_domains`.
    RelayDomains,
}

impl DomainListName {
    /// The `main.cf` parameter name.
    pub fn parameter(self) -> &'static str {
        match self {
            DomainListName::Mydestination => "mydestination",
            DomainListName::VirtualAliasDomains => "virtual_alias_domains",
            DomainListName::VirtualMailboxDomains => "virtual_mailbox_domains",
            DomainListName::RelayDomains => "relay_domains",
        }
    }
}

impl fmt::Display for DomainListName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.parameter())
    }
}

/// A domain that matches two class lists. The resolver uses the `first`
/// (in checking order); the `second` is shadowed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClassConflict {
    /// The domain.
    pub domain: Domain,
    /// The list that wins.
    pub first: DomainListName,
    /// The list that is shadowed.
    pub second: DomainListName,
}

impl ClassConflict {
    /// Whether the overlap is a configuration error: VIRTUAL_README says
    /// never to list a virtual alias or virtual mailbox domain in
    /// `mydestination`, nor a virtual mailbox domain as a virtual alias
    /// domain. An overlap with `relay_domains` is only shadowed: its
    /// default before Postfix 3.0 was `$mydestination`.
    pub fn is_error(&self) -> bool {
        self.second != DomainListName::RelayDomains
    }
}

impl fmt::Display for ClassConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "do not list domain {} in BOTH {} and {}",
            self.domain, self.first, self.second
        )
    }
}

/// Checks each candidate domain against all four class lists and reports
/// those in more than one (ADDRESS_CLASS_README: a domain belongs to one
/// class). Candidates are typically the entries of the literal lists;
/// duplicates are checked once.
///
/// # Errors
///
/// The first [`LookupError`] of a list.
pub fn find_class_conflicts<'d>(
    tables: &ClassTables<'_>,
    candidates: impl IntoIterator<Item = &'d Domain>,
) -> Result<Vec<ClassConflict>, LookupError> {
    let lists: [(DomainListName, &dyn DomainList); 4] = [
        (DomainListName::Mydestination, tables.mydestination),
        (
            DomainListName::VirtualAliasDomains,
            tables.virtual_alias_domains,
        ),
        (
            DomainListName::VirtualMailboxDomains,
            tables.virtual_mailbox_domains,
        ),
        (DomainListName::RelayDomains, tables.relay_domains),
    ];
    let mut seen = BTreeSet::new();
    let mut conflicts = Vec::new();
    for domain in candidates {
        if !seen.insert(domain) {
            continue;
        }
        let mut member = Vec::new();
        for (name, list) in lists {
            if list.contains(domain)? {
                member.push(name);
            }
        }
        for (i, &first) in member.iter().enumerate() {
            for &second in &member[i + 1..] {
                conflicts.push(ClassConflict {
                    domain: domain.clone(),
                    first,
                    second,
                });
            }
        }
    }
    Ok(conflicts)
}

/// The class of a domain alone: our own address literals and
/// `mydestination` are local, then `virtual_alias_domains`,
/// `virtual_mailbox_domains`, `relay_domains`, in that order.
///
/// # Errors
///
/// The [`LookupError`] of the first list that fails.
pub fn domain_class(
    config: &RewriteConfig,
    tables: &ClassTables<'_>,
    domain: &Domain,
) -> Result<AddressClass, LookupError> {
    if domain
        .address_literal()
        .is_some_and(|ip| config.our_addresses.contains(&ip))
        || tables.mydestination.contains(domain)?
    {
        return Ok(AddressClass::Local);
    }
    if tables.virtual_alias_domains.contains(domain)? {
        return Ok(AddressClass::VirtualAlias);
    }
    if tables.virtual_mailbox_domains.contains(domain)? {
        return Ok(AddressClass::VirtualMailbox);
    }
    if tables.relay_domains.contains(domain)? {
        return Ok(AddressClass::Relay);
    }
    Ok(AddressClass::Default)
}

/// Rewrites an address to standard form (trivial-rewrite's "rewrite"
/// service), see the module documentation.
///
/// Bang paths and the percent hack apply only to addresses without a
/// domain, and only when the local part needs no quotes (Postfix reads
/// operators inside a quoted string as text).
///
/// # Errors
///
/// [`InvalidAddress::BadRoute`] when a `!` or `%` names something that is
/// not a domain (`user%`, `!user`); Postfix produces `user@` there and
/// rejects it later.
///
/// # Example
///
/// ```
/// use mta_core::address::{LocalPart, MailAddress};
/// use mta_core::address_class::{rewrite, RewriteConfig, RewriteContext};
///
/// let mut config = RewriteConfig::new("mail.example.com".parse()?, "example.com".parse()?);
/// config.myorigin = "example.com".parse()?;
/// let bare = MailAddress::new(LocalPart::new("joe")?, None)?;
/// assert_eq!(rewrite(&config, RewriteContext::Local, &bare)?.to_string(), "joe@example.com");
/// let bang = MailAddress::new(LocalPart::new("uucphost!joe")?, None)?;
/// assert_eq!(rewrite(&config, RewriteContext::Local, &bang)?.to_string(), "joe@uucphost");
/// // Remote context with an empty remote_header_rewrite_domain: left alone.
/// assert_eq!(rewrite(&config, RewriteContext::Remote, &bare)?.to_string(), "joe");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn rewrite(
    config: &RewriteConfig,
    context: RewriteContext,
    address: &MailAddress,
) -> Result<MailAddress, InvalidAddress> {
    // An empty address is how the null sender looks inside Postfix: it is
    // never completed.
    if address.domain().is_none() && address.local_part().as_str().is_empty() {
        return Ok(address.clone());
    }
    let mut addr = match address.domain() {
        Some(_) => None,
        None => unroute(config, address.local_part(), false)?,
    }
    .unwrap_or_else(|| address.clone());
    let (origin, _) = config.completion_domains(context);
    if addr.domain().is_none() && config.append_at_myorigin {
        // Too long to complete: keep the address as it is.
        if let Some(completed) = origin.and_then(|o| addr.with_domain(Some(o.clone())).ok()) {
            addr = completed;
        }
    }
    Ok(append_dot_domain(config, context, addr))
}

/// Appends `.$mydomain` (or the remote domain) to a one-label domain name
/// when `append_dot_mydomain` is on.
fn append_dot_domain(
    config: &RewriteConfig,
    context: RewriteContext,
    addr: MailAddress,
) -> MailAddress {
    let (_, suffix) = config.completion_domains(context);
    let Some(suffix) = suffix.filter(|_| config.append_dot_mydomain) else {
        return addr;
    };
    let Some(domain) = addr
        .domain()
        .filter(|d| !d.is_address_literal() && !d.as_str().contains('.'))
    else {
        return addr;
    };
    let longer = Domain::parse(
        &format!("{domain}.{suffix}"),
        ParseOptions::LENIENT.with_smtputf8(true),
    );
    // Too long to complete: keep the address as it is.
    match longer.ok().and_then(|d| addr.with_domain(Some(d)).ok()) {
        Some(completed) => completed,
        None => addr,
    }
}

/// Splits sender-specified routing out of a local part: the rightmost `@`
/// (only when `look_inside_quotes`, since an `@` in a local part is always
/// quoted), else the first `!` (`swap_bangpath`), else the rightmost `%`
/// (`allow_percent_hack`). `!` and `%` count only when the local part needs
/// no quotes or `look_inside_quotes` is set. Returns `None` when there is
/// no operator.
///
/// One exception, found by comparing with Postfix 3.7: when the local part
/// holds an address literal (`[`), Postfix's token-based rewriting tries
/// `%` before `!` (`a!b%[192.0.2.1]` goes to `a!b@[192.0.2.1]`, while
/// `a!b%c` goes to `b%c@a`).
fn unroute(
    config: &RewriteConfig,
    local: &LocalPart,
    look_inside_quotes: bool,
) -> Result<Option<MailAddress>, InvalidAddress> {
    let text = local.as_str();
    let Some((user, site)) = split_route(config, text, local.needs_quoting(), look_inside_quotes)
    else {
        return Ok(None);
    };
    let bad_route = || InvalidAddress::BadRoute {
        address: text.to_owned(),
        route: site.to_owned(),
    };
    let domain =
        Domain::parse(site, ParseOptions::LENIENT.with_smtputf8(true)).map_err(|_| bad_route())?;
    let user = LocalPart::new(user).map_err(|_| bad_route())?;
    MailAddress::new(user, Some(domain))
        .map(Some)
        .map_err(|_| bad_route())
}

/// The routing operator split that trivial-rewrite applies, on the text of a local
/// part (internal form): `(user, site)` for the rightmost `@` (only with
/// `look_inside_quotes`, Postfix's `resolve_dequoted_address`), else the
/// first `!` (`site!user`, `swap_bangpath`), else the rightmost `%`
/// (`allow_percent_hack`); `!` and `%` count only when the local part
/// `needs_quoting` is false or `look_inside_quotes` is set. With an
/// address literal (`[`) in it, `%` comes before `!`, as in Postfix.
/// `None` when nothing routes. The relay checks of `mta-restrictions` use
/// it to see where a recipient really goes.
///
/// ```
/// use mta_core::address_class::{split_route, RewriteConfig};
/// let config = RewriteConfig::new("mx.example.com".parse().unwrap(), "example.com".parse().unwrap());
/// assert_eq!(split_route(&config, "user%elsewhere.example", false, false),
///            Some(("user", "elsewhere.example")));
/// assert_eq!(split_route(&config, "site!user", false, false), Some(("user", "site")));
/// assert_eq!(split_route(&config, "user@elsewhere.example", true, false), None);
/// assert_eq!(split_route(&config, "user@elsewhere.example", true, true),
///            Some(("user", "elsewhere.example")));
/// ```
pub fn split_route<'a>(
    config: &RewriteConfig,
    local: &'a str,
    needs_quoting: bool,
    look_inside_quotes: bool,
) -> Option<(&'a str, &'a str)> {
    let visible = look_inside_quotes || !needs_quoting;
    let bang = || {
        (visible && config.swap_bangpath)
            .then(|| local.split_once('!'))
            .flatten()
            .map(|(site, user)| (user, site))
    };
    let percent = || {
        (visible && config.allow_percent_hack)
            .then(|| local.rsplit_once('%'))
            .flatten()
    };
    let at = || look_inside_quotes.then(|| local.rsplit_once('@')).flatten();
    if local.contains('[') {
        at().or_else(percent).or_else(bang)
    } else {
        at().or_else(bang).or_else(percent)
    }
}

/// Resolves an all-numeric domain: an address literal when allowed and
/// possible, an error otherwise (as Postfix does).
fn numeric_domain(config: &RewriteConfig, domain: Domain) -> Result<Domain, InvalidAddress> {
    let numeric = !domain.is_address_literal()
        && domain
            .labels()
            .all(|l| l.bytes().all(|b| b.is_ascii_digit()));
    if !numeric {
        return Ok(domain);
    }
    let literal = config
        .resolve_numeric_domain
        .then(|| Domain::parse(&format!("[{domain}]"), ParseOptions::STRICT).ok())
        .flatten();
    literal.ok_or_else(|| InvalidAddress::NumericDomain {
        domain: domain.to_string(),
    })
}

/// Where [`resolve`] sends a recipient: trivial-rewrite's (transport,
/// nexthop, recipient, flags).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Resolution {
    /// The address class.
    pub class: AddressClass,
    /// The delivery transport (a `master.cf` service name).
    pub transport: String,
    /// The next hop; its syntax depends on the transport (see [`NextHop`]
    /// for SMTP and LMTP over TCP; for `error` it is the reason).
    pub nexthop: String,
    /// The recipient as it should be delivered: routing through local
    /// domains removed, an unqualified address completed with
    /// `@$myhostname`, an empty local part in the local class replaced by
    /// `empty_address_recipient`.
    pub recipient: MailAddress,
    /// The local part still holds `@`, `%` or `!`: sender-specified routing
    /// that `allow_untrusted_routing = no` refuses to relay.
    pub routed: bool,
}

/// Resolves a recipient to its address class, transport and next hop
/// (trivial-rewrite's "resolve" service), see the module documentation.
///
/// The recipient is expected in standard form (after [`rewrite`]); one
/// without a domain is completed as Postfix's resolver does: routing
/// operators in it are applied, otherwise `@$myhostname` is appended.
///
/// # Errors
///
/// [`ResolveError::Lookup`] (temporary) when a table lookup fails;
/// [`ResolveError::InvalidAddress`] (permanent) for bad routing, a numeric
/// domain or a leading hyphen.
///
/// # Example
///
/// ```
/// use mta_core::address_class::{resolve, AddressClass, LiteralClassTables, RewriteConfig};
///
/// let mut config = RewriteConfig::new("mail.example.com".parse()?, "example.com".parse()?);
/// config.our_addresses = vec!["192.0.2.25".parse()?];
/// config.relayhost = Some("[smarthost.example.net]:587".into());
/// let lists = LiteralClassTables::postfix_defaults(&config);
///
/// let r = resolve(&config, &lists.tables(), &"joe@[192.0.2.25]".parse()?)?;
/// assert_eq!((r.class, r.transport.as_str(), r.nexthop.as_str()),
///            (AddressClass::Local, "local", "mail.example.com"));
///
/// let r = resolve(&config, &lists.tables(), &"ann@example.net".parse()?)?;
/// assert_eq!((r.class, r.transport.as_str(), r.nexthop.as_str()),
///            (AddressClass::Default, "smtp", "[smarthost.example.net]:587"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn resolve(
    config: &RewriteConfig,
    tables: &ClassTables<'_>,
    recipient: &MailAddress,
) -> Result<Resolution, ResolveError> {
    let look_inside = config.resolve_dequoted_address;
    let start = match recipient.domain() {
        Some(_) => recipient.clone(),
        None => match unroute(config, recipient.local_part(), look_inside)? {
            Some(routed) => append_dot_domain(config, RewriteContext::Local, routed),
            // Cannot fail for the lengths that matter: a local part of at
            // most 64 octets and a host name of at most 189 fit in 256.
            None => recipient
                .with_domain(Some(config.myhostname.clone()))
                .map_err(|_| InvalidAddress::BadRoute {
                    address: recipient.internal_form(),
                    route: config.myhostname.to_string(),
                })?,
        },
    };
    let mut local = start.local_part().clone();
    let mut domain = match start.domain() {
        Some(d) => d.clone(),
        None => config.myhostname.clone(),
    };
    // Each round strips a local domain and shortens the local part, so the
    // loop ends.
    let class = loop {
        domain = numeric_domain(config, domain)?;
        let class = domain_class(config, tables, &domain)?;
        let inner = match class {
            AddressClass::Local => unroute(config, &local, look_inside)?,
            _ => None,
        };
        let Some(inner) = inner else {
            break class;
        };
        let inner = append_dot_domain(config, RewriteContext::Local, inner);
        local = inner.local_part().clone();
        domain = match inner.domain() {
            Some(d) => d.clone(),
            None => domain,
        };
    };
    if class == AddressClass::Local && local.as_str().is_empty() {
        local = config.empty_address_recipient.clone();
    }
    let recipient =
        MailAddress::new(local, Some(domain.clone())).map_err(|_| InvalidAddress::BadRoute {
            address: recipient.internal_form(),
            route: domain.to_string(),
        })?;
    if !config.allow_min_user && recipient.local_part().as_str().starts_with('-') {
        return Err(InvalidAddress::LeadingHyphen {
            address: recipient.internal_form(),
        }
        .into());
    }
    let (mut transport, mut nexthop) = match class {
        AddressClass::VirtualAlias => (
            VIRTUAL_ALIAS_TRANSPORT.to_owned(),
            VIRTUAL_ALIAS_NEXTHOP.to_owned(),
        ),
        AddressClass::Local => default_route(&config.local_transport, None, &domain),
        AddressClass::VirtualMailbox => default_route(&config.virtual_transport, None, &domain),
        AddressClass::Relay => default_route(&config.relay_transport, config.relayhost(), &domain),
        AddressClass::Default => {
            default_route(&config.default_transport, config.relayhost(), &domain)
        }
    };
    // The virtual alias class keeps its error whatever the table says.
    let entry = match tables.transport_maps {
        Some(table) if class != AddressClass::VirtualAlias => table.find(&recipient)?,
        _ => None,
    };
    if let Some(value) = entry {
        TransportOverride::parse(&value).apply(&mut transport, &mut nexthop, &domain);
    }
    let routed = recipient.local_part().as_str().contains(ROUTING_OPERATORS);
    Ok(Resolution {
        class,
        transport,
        nexthop,
        recipient,
        routed,
    })
}

/// The transport and next hop of a class before transport_maps: the next
/// hop of the parameter, else `relayhost` where it applies, else the
/// recipient domain.
fn default_route(
    spec: &TransportSpec,
    relayhost: Option<&str>,
    domain: &Domain,
) -> (String, String) {
    let nexthop = spec
        .nexthop()
        .or(relayhost)
        .map_or_else(|| domain.to_string(), str::to_owned);
    (spec.transport().to_owned(), nexthop)
}

/// Building the resolver's inputs from a parsed `main.cf`.
impl RewriteConfig {
    /// The rewrite and resolve settings of `config`: `myhostname`,
    /// `mydomain`, `myorigin` (which may name a file, as in Debian), the
    /// `*_transport` parameters, `relayhost`, the rewriting switches, and
    /// our own addresses from `inet_interfaces` and `proxy_interfaces`
    /// ([`Config::own_addresses`]).
    ///
    /// # Errors
    ///
    /// A value that is not what its parameter needs (a host name that is
    /// not a domain, a transport without a name), naming the file and line.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_core::address_class::RewriteConfig;
    /// use mta_core::config::{Config, HostFacts};
    ///
    /// let config = Config::parse(
    ///     "myhostname = mail.example.com\nrelayhost = [smtp.example.net]:587\n",
    ///     "main.cf",
    ///     HostFacts::default(),
    /// )?;
    /// let rewrite = RewriteConfig::from_config(&config)?;
    /// assert_eq!(rewrite.mydomain.as_str(), "example.com");
    /// assert_eq!(rewrite.local_transport.to_string(), "local:mail.example.com");
    /// assert_eq!(rewrite.relayhost.as_deref(), Some("[smtp.example.net]:587"));
    /// # Ok::<(), mta_core::config::ConfigError>(())
    /// ```
    pub fn from_config(config: &Config) -> Result<RewriteConfig, ConfigError> {
        let domain = |name: &str| -> Result<Domain, ConfigError> {
            let value = config.text_or_file(name)?;
            Domain::parse(&value, ParseOptions::LENIENT.with_smtputf8(true))
                .map_err(|e| config.bad_value(name, &value, format!("not a domain name: {e}")))
        };
        let transport = |name: &str| -> Result<TransportSpec, ConfigError> {
            let value = config.expanded(name)?;
            TransportSpec::parse(&value).map_err(|e| config.bad_value(name, &value, e.to_string()))
        };
        let mut c = RewriteConfig::new(domain("myhostname")?, domain("mydomain")?);
        c.myorigin = domain("myorigin")?;
        c.append_at_myorigin = config.boolean("append_at_myorigin")?;
        c.append_dot_mydomain = config.boolean("append_dot_mydomain")?;
        c.swap_bangpath = config.boolean("swap_bangpath")?;
        c.allow_percent_hack = config.boolean("allow_percent_hack")?;
        c.resolve_dequoted_address = config.boolean("resolve_dequoted_address")?;
        c.resolve_numeric_domain = config.boolean("resolve_numeric_domain")?;
        c.allow_min_user = config.boolean("allow_min_user")?;
        let remote = config.expanded("remote_header_rewrite_domain")?;
        c.remote_header_rewrite_domain = if remote.is_empty() {
            None
        } else {
            Some(domain("remote_header_rewrite_domain")?)
        };
        let empty = config.expanded("empty_address_recipient")?;
        c.empty_address_recipient = LocalPart::new(empty.clone()).map_err(|e| {
            config.bad_value(
                "empty_address_recipient",
                &empty,
                format!("not a local part: {e}"),
            )
        })?;
        c.local_transport = transport("local_transport")?;
        c.virtual_transport = transport("virtual_transport")?;
        c.relay_transport = transport("relay_transport")?;
        c.default_transport = transport("default_transport")?;
        let relayhost = config.expanded("relayhost")?;
        c.relayhost = (!relayhost.trim().is_empty()).then(|| relayhost.trim().to_owned());
        c.our_addresses = config.own_addresses()?;
        c.parent_domain_matches_subdomains = config.list("parent_domain_matches_subdomains")?;
        Ok(c)
    }
}

impl LiteralDomainList {
    /// The domain list parameter `name` of `config`, with entries from
    /// files that [`Config::read_files`] has read spliced in.
    ///
    /// # Errors
    ///
    /// A `type:table` entry: table lookups are the job of `mta-maps`,
    /// whose lists implement [`DomainList`] and replace this one. A bad
    /// entry, naming the file and line.
    pub fn from_config(
        config: &Config,
        rewrite: &RewriteConfig,
        name: &str,
    ) -> Result<LiteralDomainList, ConfigError> {
        let entries = config.list(name)?;
        if let Some(table) = entries
            .iter()
            .find(|e| crate::config::is_table_reference(e))
        {
            let value = config.expanded(name)?;
            return Err(config.bad_value(
                name,
                &value,
                format!(
                    "{table} is a lookup table: literal domain lists take names and files only"
                ),
            ));
        }
        LiteralDomainList::new(&entries, rewrite.parent_matches_subdomains(name)).map_err(|e| {
            let value = config.expanded(name).unwrap_or_default();
            config.bad_value(name, &value, e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn domain(s: &str) -> Domain {
        s.parse().unwrap()
    }

    /// An address from Postfix's internal form, split at the rightmost
    /// `@` (so `user@other@example.com` has local part `user@other`).
    fn internal(s: &str) -> MailAddress {
        match s.rsplit_once('@') {
            Some((l, d)) => MailAddress::new(LocalPart::new(l).unwrap(), Some(domain(d))).unwrap(),
            None => MailAddress::new(LocalPart::new(s).unwrap(), None).unwrap(),
        }
    }

    /// The configuration the Postfix 3.7 oracle ran with:
    /// myhostname = mail.example.com, mydomain = example.com,
    /// mydestination = $myhostname, localhost.$mydomain, localhost, example.com,
    /// virtual_alias_domains = valias.example, virtual_mailbox_domains =
    /// vmbox.example, relay_domains = relay.example, inet_interfaces = 127.0.0.1.
    fn oracle_setup() -> (RewriteConfig, LiteralClassTables) {
        let mut config = RewriteConfig::new(domain("mail.example.com"), domain("example.com"));
        config.our_addresses = vec!["127.0.0.1".parse().unwrap()];
        let lists = oracle_lists(&config);
        (config, lists)
    }

    fn oracle_lists(config: &RewriteConfig) -> LiteralClassTables {
        LiteralClassTables {
            mydestination: LiteralDomainList::new(
                [
                    "mail.example.com",
                    "localhost.example.com",
                    "localhost",
                    "example.com",
                ],
                false,
            )
            .unwrap(),
            virtual_alias_domains: LiteralDomainList::new(["valias.example"], false).unwrap(),
            virtual_mailbox_domains: LiteralDomainList::new(["vmbox.example"], false).unwrap(),
            relay_domains: LiteralDomainList::new(
                ["relay.example"],
                config.parent_matches_subdomains("relay_domains"),
            )
            .unwrap(),
            transport_maps: None,
        }
    }

    fn flag(class: AddressClass) -> &'static str {
        match class {
            AddressClass::Local => "LOCAL",
            AddressClass::VirtualAlias => "ALIAS",
            AddressClass::VirtualMailbox => "VIRTUAL",
            AddressClass::Relay => "RELAY",
            AddressClass::Default => "DEFAULT",
        }
    }

    /// "transport:nexthop recipient CLASS[ ROUTED]" or "ERROR", the shape
    /// of the oracle's answers.
    fn show(config: &RewriteConfig, lists: &LiteralClassTables, input: &str) -> String {
        match resolve(config, &lists.tables(), &internal(input)) {
            Ok(r) => format!(
                "{}:{} {} {}{}",
                r.transport,
                r.nexthop,
                r.recipient.internal_form(),
                flag(r.class),
                if r.routed { " ROUTED" } else { "" }
            ),
            Err(ResolveError::InvalidAddress(_)) => "ERROR".to_owned(),
            Err(e) => format!("lookup failure: {e}"),
        }
    }

    /// Each row is "input => expected", input in internal form.
    fn check_resolve(config: &RewriteConfig, lists: &LiteralClassTables, rows: &[&str]) {
        for row in rows {
            let (input, want) = row.split_once(" => ").unwrap();
            assert_eq!(show(config, lists, input), want, "resolve {input}");
        }
    }

    // ADDRESS_CLASS_README's classes and default transports, and
    // trivial-rewrite(8)'s resolve rules; every row is what Postfix 3.7's
    // trivial-rewrite answered with the oracle configuration (postconf(5)
    // defaults otherwise). ERROR is Postfix's "bad address syntax" flag.
    #[test]
    fn resolve_default_configuration() {
        let (config, lists) = oracle_setup();
        check_resolve(
            &config,
            &lists,
            &[
                "user@example.com => local:mail.example.com user@example.com LOCAL",
                "user => local:mail.example.com user@mail.example.com LOCAL",
                "MAILER-DAEMON => local:mail.example.com MAILER-DAEMON@mail.example.com LOCAL",
                "user@localhost => local:mail.example.com user@localhost LOCAL",
                "user@[127.0.0.1] => local:mail.example.com user@[127.0.0.1] LOCAL",
                "user@[192.0.2.9] => smtp:[192.0.2.9] user@[192.0.2.9] DEFAULT",
                "user@valias.example => error:5.1.1 User unknown in virtual alias table user@valias.example ALIAS",
                "user@vmbox.example => virtual:vmbox.example user@vmbox.example VIRTUAL",
                "user@relay.example => relay:relay.example user@relay.example RELAY",
                // relay_domains is in parent_domain_matches_subdomains...
                "user@sub.relay.example => relay:sub.relay.example user@sub.relay.example RELAY",
                // ...mydestination is not.
                "user@sub.example.com => smtp:sub.example.com user@sub.example.com DEFAULT",
                "user@elsewhere.example => smtp:elsewhere.example user@elsewhere.example DEFAULT",
                "user@mail => smtp:mail user@mail DEFAULT",
                "user@example.123 => smtp:example.123 user@example.123 DEFAULT",
                // Numeric domains: resolve_numeric_domain = no.
                "user@127.0.0.1 => ERROR",
                "user@123 => ERROR",
                "user@1.2.3 => ERROR",
                // allow_min_user = no.
                "-user@example.com => ERROR",
                "-a%b@example.com => ERROR",
                // Empty local part: the local class substitutes
                // empty_address_recipient, others keep it.
                "@example.com => local:mail.example.com MAILER-DAEMON@example.com LOCAL",
                "@localhost => local:mail.example.com MAILER-DAEMON@localhost LOCAL",
                "@elsewhere.example => smtp:elsewhere.example @elsewhere.example DEFAULT",
            ],
        );
    }

    // Sender-specified routing (ADDRESS_REWRITING_README on the percent
    // hack and bang paths; postconf(5) allow_untrusted_routing,
    // resolve_dequoted_address). Oracle-verified.
    #[test]
    fn resolve_routing_operators() {
        let (config, lists) = oracle_setup();
        check_resolve(
            &config,
            &lists,
            &[
                "user%other.example@example.com => smtp:other.example user@other.example DEFAULT",
                "user@other@example.com => smtp:other user@other DEFAULT",
                "other!user@example.com => smtp:other user@other DEFAULT",
                // Non-local domains keep the routing, flagged.
                "user@other@relay.example => relay:relay.example user@other@relay.example RELAY ROUTED",
                "user%other@relay.example => relay:relay.example user%other@relay.example RELAY ROUTED",
                "other!user@relay.example => relay:relay.example other!user@relay.example RELAY ROUTED",
                "user@mail.example.com@relay.example => relay:relay.example user@mail.example.com@relay.example RELAY ROUTED",
                // "@" first (rightmost), then "!" (first), then "%" (rightmost).
                "a%b@c@example.com => smtp:c a%b@c DEFAULT ROUTED",
                "a!b@c@example.com => smtp:c a!b@c DEFAULT ROUTED",
                "b!a%c@example.com => smtp:b a%c@b DEFAULT ROUTED",
                "b!a%c => smtp:b a%c@b DEFAULT ROUTED",
                "a@[1.2.3.4]@example.com => smtp:[1.2.3.4] a@[1.2.3.4] DEFAULT",
                "a@[127.0.0.1]@example.com => local:mail.example.com a@[127.0.0.1] LOCAL",
                "@b@example.com => smtp:b @b DEFAULT",
                "%a@example.com => smtp:a @a DEFAULT",
                "a!@example.com => smtp:a @a DEFAULT",
                // The operator names no valid domain.
                "a@b%c@example.com => ERROR",
                "a%b!c => ERROR",
                "a%b!c@example.com => ERROR",
                "a%@example.com => ERROR",
                "!a@example.com => ERROR",
                "a@ex..ample@example.com => ERROR",
                "a%-b@example.com => ERROR",
                // An address literal in the local part puts "%" before "!".
                "localhost!a%[1.2.3.4] => smtp:[1.2.3.4] localhost!a@[1.2.3.4] DEFAULT ROUTED",
                "mail.example.com!u.v%[127.0.0.1]@example.com@mail.example.com => local:mail.example.com u.v@mail.example.com LOCAL",
            ],
        );
    }

    // Oracle: allow_percent_hack = no, swap_bangpath = no,
    // resolve_numeric_domain = yes, append_dot_mydomain = yes,
    // relayhost = [gw.example.com]:587, proxy_interfaces = 1.2.3.4,
    // inet_interfaces = 127.0.0.1, [::1], relay_transport = relay:[relay-gw.example].
    #[test]
    fn resolve_changed_parameters() {
        let (mut config, _) = oracle_setup();
        config.allow_percent_hack = false;
        config.swap_bangpath = false;
        config.resolve_numeric_domain = true;
        config.append_dot_mydomain = true;
        config.relayhost = Some("[gw.example.com]:587".into());
        config.our_addresses = ["127.0.0.1", "::1", "1.2.3.4"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        config.relay_transport = TransportSpec::parse("relay:[relay-gw.example]").unwrap();
        let lists = oracle_lists(&config);
        check_resolve(
            &config,
            &lists,
            &[
                // Postfix keeps the case of the domain; ours is canonical.
                "user@Example.COM => local:mail.example.com user@example.com LOCAL",
                "user@sub.example.com => smtp:[gw.example.com]:587 user@sub.example.com DEFAULT",
                "user%other@example.com => local:mail.example.com user%other@example.com LOCAL ROUTED",
                "other!user@example.com => local:mail.example.com other!user@example.com LOCAL ROUTED",
                "user%other@relay.example => relay:[relay-gw.example] user%other@relay.example RELAY ROUTED",
                "user@other@example.com => smtp:[gw.example.com]:587 user@other.example.com DEFAULT",
                "user@1.2.3.4 => local:mail.example.com user@[1.2.3.4] LOCAL",
                "user@[1.2.3.4] => local:mail.example.com user@[1.2.3.4] LOCAL",
                "user@[IPv6:::1] => local:mail.example.com user@[IPv6:::1] LOCAL",
                "user@123 => ERROR",
                "user@elsewhere.example => smtp:[gw.example.com]:587 user@elsewhere.example DEFAULT",
                "user@relay.example => relay:[relay-gw.example] user@relay.example RELAY",
                "user@vmbox.example => virtual:vmbox.example user@vmbox.example VIRTUAL",
                // The resolver does not append .$mydomain to a domain given at
                // the top level, only to one that routing produced.
                "user@host => smtp:[gw.example.com]:587 user@host DEFAULT",
                "user => local:mail.example.com user@mail.example.com LOCAL",
                "user@valias.example => error:5.1.1 User unknown in virtual alias table user@valias.example ALIAS",
            ],
        );
    }

    // Oracle: myorigin = example.com, append_dot_mydomain = yes.
    #[test]
    fn resolve_completes_routed_domains() {
        let (mut config, lists) = oracle_setup();
        config.myorigin = domain("example.com");
        config.append_dot_mydomain = true;
        check_resolve(
            &config,
            &lists,
            &[
                // An unqualified recipient gets @$myhostname, not @$myorigin.
                "user => local:mail.example.com user@mail.example.com LOCAL",
                "user@host => smtp:host user@host DEFAULT",
                "user%host@example.com => smtp:host.example.com user@host.example.com DEFAULT",
                "host!user@example.com => smtp:host.example.com user@host.example.com DEFAULT",
                "user@host@example.com => smtp:host.example.com user@host.example.com DEFAULT",
                "site!user => smtp:site.example.com user@site.example.com DEFAULT",
                "user%host => smtp:host.example.com user@host.example.com DEFAULT",
                "user%host%other@example.com => smtp:other.example.com user%host@other.example.com DEFAULT ROUTED",
                "a@localhost@example.com => local:mail.example.com a@localhost.example.com LOCAL",
                "a%localhost@example.com => local:mail.example.com a@localhost.example.com LOCAL",
                "a%b@localhost@example.com => smtp:b.example.com a@b.example.com DEFAULT",
                "user@[127.0.0.1] => local:mail.example.com user@[127.0.0.1] LOCAL",
            ],
        );
    }

    // postconf(5) resolve_dequoted_address = no: an "@" inside the local
    // part (which was quoted) is not an operator. Oracle-verified.
    #[test]
    fn resolve_without_dequoting() {
        let (mut config, lists) = oracle_setup();
        config.resolve_dequoted_address = false;
        check_resolve(
            &config,
            &lists,
            &[
                "user@other@example.com => local:mail.example.com user@other@example.com LOCAL ROUTED",
                "user%other@example.com => smtp:other user@other DEFAULT",
                "user@other@relay.example => relay:relay.example user@other@relay.example RELAY ROUTED",
                // "a b%c" needs quotes, so its "%" is text.
                "a b%c@example.com => local:mail.example.com a b%c@example.com LOCAL ROUTED",
            ],
        );
    }

    // transport(5) "RESULT FORMAT" and "TABLE SEARCH ORDER"; oracle with
    // transport_maps = inline:{ example.com=slow:, valias.example=smtp:x.example,
    // vmbox.example=:[vgw.example]:2525, relay.example=:, .sub.relay.example=uucp:sub,
    // u+ext@elsewhere.example=smtp:[ext.example], u@elsewhere.example=smtp:[plain.example],
    // *=smtp:[wild.example] }, recipient_delimiter = +, local_transport = local.
    #[test]
    fn resolve_with_transport_maps() {
        let (mut config, mut lists) = oracle_setup();
        config.local_transport = TransportSpec::parse("local").unwrap();
        lists.transport_maps = Some(LiteralTransportTable::new(
            [
                ("example.com", "slow:"),
                ("valias.example", "smtp:x.example"),
                ("vmbox.example", ":[vgw.example]:2525"),
                ("relay.example", ":"),
                (".sub.relay.example", "uucp:sub"),
                ("u+ext@elsewhere.example", "smtp:[ext.example]"),
                ("U@Elsewhere.Example", "smtp:[plain.example]"),
                ("*", "smtp:[wild.example]"),
            ],
            config.parent_matches_subdomains("transport_maps"),
            RecipientDelimiter::new("+"),
        ));
        check_resolve(
            &config,
            &lists,
            &[
                // "slow:" resets the next hop to the recipient domain.
                "user@example.com => slow:example.com user@example.com LOCAL",
                // The virtual alias class keeps its error.
                "user@valias.example => error:5.1.1 User unknown in virtual alias table user@valias.example ALIAS",
                // ":nexthop" keeps the transport.
                "user@vmbox.example => virtual:[vgw.example]:2525 user@vmbox.example VIRTUAL",
                // ":" changes nothing.
                "user@relay.example => relay:relay.example user@relay.example RELAY",
                // ".domain" matches subdomains only.
                "user@a.sub.relay.example => uucp:sub user@a.sub.relay.example RELAY",
                "user@sub.relay.example => smtp:[wild.example] user@sub.relay.example RELAY",
                // user+ext@domain, then user@domain.
                "u+ext@elsewhere.example => smtp:[ext.example] u+ext@elsewhere.example DEFAULT",
                "u+other@elsewhere.example => smtp:[plain.example] u+other@elsewhere.example DEFAULT",
                "u@elsewhere.example => smtp:[plain.example] u@elsewhere.example DEFAULT",
                "v@elsewhere.example => smtp:[wild.example] v@elsewhere.example DEFAULT",
                "user@localhost => smtp:[wild.example] user@localhost LOCAL",
            ],
        );
    }

    // transport(5) EXAMPLES, and parent_domain_matches_subdomains with
    // transport_maps listed.
    #[test]
    fn transport5_examples() {
        let (config, mut lists) = oracle_setup();
        let table = |entries: &[(&str, &str)], parent| {
            Some(LiteralTransportTable::new(
                entries.iter().copied(),
                parent,
                RecipientDelimiter::default(),
            ))
        };
        // Internal mail directly, everything else via a relay.
        lists.transport_maps = table(
            &[
                ("my.domain", ":"),
                (".my.domain", ":"),
                ("*", "smtp:outbound-relay.my.domain"),
            ],
            false,
        );
        check_resolve(
            &config,
            &lists,
            &[
                "u@my.domain => smtp:my.domain u@my.domain DEFAULT",
                "u@host.my.domain => smtp:host.my.domain u@host.my.domain DEFAULT",
                "u@other.example => smtp:outbound-relay.my.domain u@other.example DEFAULT",
            ],
        );
        lists.transport_maps = table(
            &[
                ("example.com", "uucp:example"),
                ("example.net", ":[gateway.example.net]"),
                ("example.org", "smtp:bar.example:2025"),
                (
                    ".example.info",
                    "error:mail for *.example.info is not deliverable",
                ),
            ],
            false,
        );
        check_resolve(
            &config,
            &lists,
            &[
                "u@example.com => uucp:example u@example.com LOCAL",
                "u@example.net => smtp:[gateway.example.net] u@example.net DEFAULT",
                "u@example.org => smtp:bar.example:2025 u@example.org DEFAULT",
                "u@a.example.info => error:mail for *.example.info is not deliverable u@a.example.info DEFAULT",
                "u@example.info => smtp:example.info u@example.info DEFAULT",
            ],
        );
        // With transport_maps in parent_domain_matches_subdomains,
        // "example.net" matches its subdomains too.
        lists.transport_maps = table(&[("example.net", ":[gateway.example.net]")], true);
        check_resolve(
            &config,
            &lists,
            &[
                "u@deep.sub.example.net => smtp:[gateway.example.net] u@deep.sub.example.net DEFAULT",
            ],
        );
    }

    // postconf(5) relay_transport, default_transport, relayhost and
    // local_transport precedence; oracle-verified.
    #[test]
    fn nexthop_precedence() {
        let (mut config, lists) = oracle_setup();
        config.local_transport = TransportSpec::parse("local").unwrap();
        config.virtual_transport = TransportSpec::parse("lmtp:unix:/run/dovecot/lmtp").unwrap();
        config.relayhost = Some("gw.example".into());
        config.default_transport = TransportSpec::parse("smtp:").unwrap();
        config.relay_transport = TransportSpec::parse("relay:").unwrap();
        check_resolve(
            &config,
            &lists,
            &[
                "user@localhost => local:localhost user@localhost LOCAL",
                "user@vmbox.example => lmtp:unix:/run/dovecot/lmtp user@vmbox.example VIRTUAL",
                "user@relay.example => relay:gw.example user@relay.example RELAY",
                "user@elsewhere.example => smtp:gw.example user@elsewhere.example DEFAULT",
            ],
        );
        config.default_transport = TransportSpec::parse("uucp:uugw").unwrap();
        check_resolve(
            &config,
            &lists,
            &[
                "user@relay.example => relay:gw.example user@relay.example RELAY",
                "user@elsewhere.example => uucp:uugw user@elsewhere.example DEFAULT",
            ],
        );
    }

    fn rw(config: &RewriteConfig, context: RewriteContext, input: &str) -> String {
        match rewrite(config, context, &internal(input)) {
            Ok(a) => a.internal_form(),
            Err(_) => "ERROR".to_owned(),
        }
    }

    // ADDRESS_REWRITING_README "Rewrite addresses to standard form" and
    // trivial-rewrite(8); oracle-verified with the default parameters.
    #[test]
    fn rewrite_default_configuration() {
        let (config, _) = oracle_setup();
        let local = RewriteContext::Local;
        let rows = [
            ("user", "user@mail.example.com"),
            ("site!user", "user@site"),
            ("a!b!user", "b!user@a"),
            ("user%domain", "user@domain"),
            ("a%b%c", "a%b@c"),
            ("a!b%c", "b%c@a"),
            ("a%b!c", "ERROR"),
            ("user@host", "user@host"),
            ("user@localhost", "user@localhost"),
            ("site!user@x.example", "site!user@x.example"),
            ("user%d@x.example", "user%d@x.example"),
            ("user!", "@user"),
            ("%user", "@user"),
            ("!user", "ERROR"),
            ("user%", "ERROR"),
            ("a..b", "a..b@mail.example.com"),
            ("", ""),
            // Needs quotes, so the "!" is text (Postfix: "a b!c" quoted).
            ("a b!c", "a b!c@mail.example.com"),
            ("user@[1.2.3.4]", "user@[1.2.3.4]"),
        ];
        for (input, want) in rows {
            assert_eq!(rw(&config, local, input), want, "local {input}");
        }
        // Remote context, remote_header_rewrite_domain empty: no completion.
        for (input, want) in [
            ("user", "user"),
            ("user@host", "user@host"),
            ("site!user", "user@site"),
        ] {
            assert_eq!(
                rw(&config, RewriteContext::Remote, input),
                want,
                "remote {input}"
            );
        }
    }

    // postconf(5) append_at_myorigin, append_dot_mydomain,
    // remote_header_rewrite_domain; oracle-verified.
    #[test]
    fn rewrite_completion() {
        let (mut config, _) = oracle_setup();
        config.myorigin = domain("example.com");
        config.append_dot_mydomain = true;
        config.remote_header_rewrite_domain = Some(domain("domain.invalid"));
        let (l, r) = (RewriteContext::Local, RewriteContext::Remote);
        let rows = [
            (l, "user@host", "user@host.example.com"),
            (l, "user", "user@example.com"),
            (l, "user@localhost", "user@localhost.example.com"),
            (l, "user@[1.2.3.4]", "user@[1.2.3.4]"),
            (l, "user@1.2.3.4", "user@1.2.3.4"),
            (l, "user%host", "user@host.example.com"),
            (r, "user@host", "user@host.domain.invalid"),
            (r, "user", "user@domain.invalid"),
        ];
        for (context, input, want) in rows {
            assert_eq!(rw(&config, context, input), want, "{context:?} {input}");
        }
        config.append_dot_mydomain = false;
        assert_eq!(rw(&config, r, "user@host"), "user@host");
        assert_eq!(rw(&config, r, "user"), "user@domain.invalid");
        config.append_at_myorigin = false;
        config.append_dot_mydomain = true;
        assert_eq!(rw(&config, r, "user@host"), "user@host.domain.invalid");
        assert_eq!(rw(&config, r, "user"), "user");
        assert_eq!(rw(&config, l, "user"), "user");
        assert_eq!(rw(&config, l, "user@host"), "user@host.example.com");
        // Without append_at_myorigin the resolver still completes with
        // @$myhostname.
        let lists = oracle_lists(&config);
        assert_eq!(
            show(&config, &lists, "user"),
            "local:mail.example.com user@mail.example.com LOCAL"
        );
        config.swap_bangpath = false;
        config.allow_percent_hack = false;
        assert_eq!(rw(&config, l, "site!user"), "site!user");
        assert_eq!(rw(&config, l, "user%host"), "user%host");
    }

    // postconf(5) parent_domain_matches_subdomains and the "!pattern" and
    // ".domain" forms of domain lists.
    #[test]
    fn domain_list_matching() {
        let d = |s| domain(s);
        let exact = LiteralDomainList::new(["example.com"], false).unwrap();
        assert!(exact.contains(&d("Example.COM")).unwrap());
        assert!(!exact.contains(&d("sub.example.com")).unwrap());
        let parent = LiteralDomainList::new(["example.com"], true).unwrap();
        assert!(parent.contains(&d("sub.example.com")).unwrap());
        assert!(!parent.contains(&d("badexample.com")).unwrap());
        let dotted = LiteralDomainList::new([".example.com"], false).unwrap();
        assert!(dotted.contains(&d("a.b.example.com")).unwrap());
        assert!(!dotted.contains(&d("example.com")).unwrap());
        let excluded = LiteralDomainList::new(["!foo.example.com", "example.com"], true).unwrap();
        assert!(!excluded.contains(&d("foo.example.com")).unwrap());
        assert!(!excluded.contains(&d("x.foo.example.com")).unwrap());
        assert!(excluded.contains(&d("bar.example.com")).unwrap());
        let literal = LiteralDomainList::new(["[192.0.2.1]", " ", ""], true).unwrap();
        assert!(
            literal
                .contains(&Domain::from_ip("192.0.2.1".parse().unwrap()))
                .unwrap()
        );
        assert_eq!(literal.domains().count(), 1);
        assert!(
            !LiteralDomainList::empty()
                .contains(&d("example.com"))
                .unwrap()
        );
        assert!(matches!(
            LiteralDomainList::new(["bad..example"], false),
            Err(ClassConfigError::BadDomainListEntry { .. })
        ));
    }

    // ADDRESS_CLASS_README (one class per domain) and VIRTUAL_README
    // ("NEVER list a virtual alias domain name as a mydestination domain",
    // "NEVER list a virtual MAILBOX domain name as a virtual ALIAS domain").
    #[test]
    fn class_conflicts() {
        let config = RewriteConfig::new(domain("mail.example.com"), domain("example.com"));
        let mut lists = LiteralClassTables::postfix_defaults(&config);
        assert!(lists.conflicts().is_empty());
        lists.mydestination =
            LiteralDomainList::new(["mail.example.com", "example.com"], false).unwrap();
        lists.virtual_alias_domains =
            LiteralDomainList::new(["example.com", "alias.example"], false).unwrap();
        lists.virtual_mailbox_domains = LiteralDomainList::new(["alias.example"], false).unwrap();
        lists.relay_domains = LiteralDomainList::new(["example.com"], true).unwrap();
        let found: Vec<(String, bool)> = lists
            .conflicts()
            .iter()
            .map(|c| (c.to_string(), c.is_error()))
            .collect();
        assert_eq!(found, [
            ("do not list domain mail.example.com in BOTH mydestination and relay_domains".to_owned(), false),
            ("do not list domain example.com in BOTH mydestination and virtual_alias_domains".to_owned(), true),
            ("do not list domain example.com in BOTH mydestination and relay_domains".to_owned(), false),
            ("do not list domain example.com in BOTH virtual_alias_domains and relay_domains".to_owned(), false),
            ("do not list domain alias.example in BOTH virtual_alias_domains and virtual_mailbox_domains".to_owned(), true),
        ]);
        // The resolver uses the first list in checking order.
        let r = resolve(&config, &lists.tables(), &internal("u@alias.example")).unwrap();
        assert_eq!(r.class, AddressClass::VirtualAlias);
    }

    struct Failing;

    impl DomainList for Failing {
        fn contains(&self, _: &Domain) -> Result<bool, LookupError> {
            Err(LookupError::new(
                "pgsql:/etc/mta/domains.cf",
                "connection refused",
            ))
        }
    }

    impl TransportTable for Failing {
        fn find(&self, _: &MailAddress) -> Result<Option<String>, LookupError> {
            Err(LookupError::new(
                "pgsql:/etc/mta/transport.cf",
                "connection refused",
            ))
        }
    }

    // A lookup error is a temporary failure, never a wrong class.
    #[test]
    fn lookup_errors_are_temporary() {
        let (config, lists) = oracle_setup();
        let mut tables = lists.tables();
        tables.virtual_mailbox_domains = &Failing;
        // Decided before the failing list is reached.
        assert!(resolve(&config, &tables, &internal("u@example.com")).is_ok());
        assert!(resolve(&config, &tables, &internal("u@valias.example")).is_ok());
        let err = resolve(&config, &tables, &internal("u@elsewhere.example")).unwrap_err();
        assert!(err.is_temporary());
        assert_eq!(
            err.to_string(),
            "lookup in pgsql:/etc/mta/domains.cf failed: connection refused"
        );
        let mut tables = lists.tables();
        tables.transport_maps = Some(&Failing);
        assert!(
            resolve(&config, &tables, &internal("u@example.com"))
                .unwrap_err()
                .is_temporary()
        );
        // Except for the virtual alias class, which ignores the table.
        assert!(resolve(&config, &tables, &internal("u@valias.example")).is_ok());
        let mut tables = lists.tables();
        tables.relay_domains = &Failing;
        assert!(find_class_conflicts(&tables, [&domain("example.com")]).is_err());
        let invalid = resolve(&config, &lists.tables(), &internal("u@127.0.0.1")).unwrap_err();
        assert!(!invalid.is_temporary());
    }

    #[test]
    fn transport_spec_and_override() {
        assert_eq!(
            TransportSpec::parse("local:mail.example.com")
                .unwrap()
                .to_string(),
            "local:mail.example.com"
        );
        assert_eq!(TransportSpec::parse("smtp:").unwrap().nexthop(), None);
        assert_eq!(
            TransportSpec::parse(" relay ").unwrap().to_string(),
            "relay"
        );
        assert!(matches!(
            TransportSpec::parse(":x"),
            Err(ClassConfigError::EmptyTransportName { .. })
        ));
        assert!("".parse::<TransportSpec>().is_err());
        let o = TransportOverride::parse;
        assert_eq!(o(":"), TransportOverride::default());
        assert_eq!(o(""), TransportOverride::default());
        assert_eq!(
            o("slow:"),
            TransportOverride {
                transport: Some("slow".into()),
                nexthop: None
            }
        );
        assert_eq!(
            o("slow"),
            TransportOverride {
                transport: Some("slow".into()),
                nexthop: None
            }
        );
        assert_eq!(
            o(":[gw]:25"),
            TransportOverride {
                transport: None,
                nexthop: Some("[gw]:25".into())
            }
        );
    }

    // postconf(5) relayhost and transport(5) next-hop forms.
    #[test]
    fn next_hops() {
        let rows = [
            ("example.com", "example.com", true, None),
            ("mail1.example:587", "mail1.example", true, Some("587")),
            ("[gateway.example.com]", "gateway.example.com", false, None),
            (
                "[gateway.example.com]:submission",
                "gateway.example.com",
                false,
                Some("submission"),
            ),
            ("[192.0.2.1]", "192.0.2.1", false, None),
            ("[192.0.2.1]:2525", "192.0.2.1", false, Some("2525")),
            ("[ipv6:2001:db8::1]:25", "2001:db8::1", false, Some("25")),
            ("[2001:db8::1]", "2001:db8::1", false, None),
        ];
        for (text, host, mx, port) in rows {
            let hop = NextHop::parse(text).unwrap();
            let shown = match &hop.host {
                NextHopHost::Name(d) => d.to_string(),
                NextHopHost::Address(a) => a.to_string(),
            };
            assert_eq!(
                (shown.as_str(), hop.mx_lookup, hop.port.as_deref()),
                (host, mx, port),
                "{text}"
            );
            assert_eq!(NextHop::parse(&hop.to_string()).unwrap(), hop);
        }
        for bad in [
            "192.0.2.1",
            "[gw.example",
            "[gw.example]x",
            "gw.example:",
            "[]",
            "a..b",
            "[ipv6:zz]",
            "gw:x y",
        ] {
            assert!(NextHop::parse(bad).is_err(), "{bad}");
        }
        let list =
            NextHop::parse_list("mail1.example:587, mail2.example:587 [mail3.example]").unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(
            NextHop::parse("[ipv6:2001:db8::1]").unwrap().to_string(),
            "[ipv6:2001:db8::1]"
        );
    }

    #[test]
    fn defaults_and_names() {
        let config = RewriteConfig::new(domain("mail.example.com"), domain("example.com"));
        assert!(config.append_at_myorigin && !config.append_dot_mydomain);
        assert!(
            config.swap_bangpath && config.allow_percent_hack && config.resolve_dequoted_address
        );
        assert!(!config.resolve_numeric_domain && !config.allow_min_user);
        assert_eq!(config.empty_address_recipient.as_str(), "MAILER-DAEMON");
        assert_eq!(config.virtual_transport.to_string(), "virtual");
        assert_eq!(config.relay_transport.to_string(), "relay");
        assert_eq!(config.default_transport.to_string(), "smtp");
        let lists = LiteralClassTables::postfix_defaults(&config);
        let names: Vec<&str> = lists.mydestination.domains().map(Domain::as_str).collect();
        assert_eq!(
            names,
            ["mail.example.com", "localhost.example.com", "localhost"]
        );
        assert_eq!(
            AddressClass::VirtualAlias.recipient_table_name(),
            Some("virtual alias table")
        );
        assert_eq!(AddressClass::Default.recipient_table_name(), None);
        assert!(AddressClass::VirtualMailbox.is_final_destination());
        assert!(!AddressClass::Relay.is_final_destination());
        assert_eq!(AddressClass::Relay.to_string(), "relay");
        assert_eq!(DomainListName::RelayDomains.to_string(), "relay_domains");
        let (config, lists) = oracle_setup();
        let c = domain_class(
            &config,
            &lists.tables(),
            &Domain::from_ip("127.0.0.1".parse().unwrap()),
        )
        .unwrap();
        assert_eq!(c, AddressClass::Local);
    }

    /// Fails every lookup after answering it: shows whether a list was
    /// consulted.
    struct FailsWhenAsked;

    impl DomainList for FailsWhenAsked {
        fn contains(&self, _: &Domain) -> Result<bool, LookupError> {
            Err(LookupError::new("test:fail", "asked"))
        }
    }

    fn routed_address() -> impl Strategy<Value = MailAddress> {
        let piece = prop_oneof![
            Just("user"),
            Just(""),
            Just("-x"),
            Just("a.b"),
            Just("example.com"),
            Just("localhost"),
            Just("relay.example"),
            Just("sub.relay.example"),
            Just("valias.example"),
            Just("vmbox.example"),
            Just("[127.0.0.1]"),
            Just("[192.0.2.1]"),
            Just("1.2.3.4"),
            Just("host"),
        ];
        let op = prop_oneof![Just("@"), Just("%"), Just("!")];
        (
            piece.clone(),
            proptest::collection::vec((op, piece.clone()), 0..4),
            proptest::option::of(piece),
        )
            .prop_filter_map("not an address", |(first, rest, domain)| {
                let mut local = first.to_owned();
                for (op, p) in rest {
                    local.push_str(op);
                    local.push_str(p);
                }
                let domain = match domain {
                    Some(d) => Some(Domain::parse(d, ParseOptions::LENIENT).ok()?),
                    None => None,
                };
                MailAddress::new(LocalPart::new(local).ok()?, domain).ok()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        // The resolved class is the class of the resolved domain, the
        // recipient is complete, and the routed flag tells the truth.
        #[test]
        fn resolution_is_consistent(addr in routed_address(), dot in any::<bool>(), dequote in any::<bool>()) {
            let (mut config, lists) = oracle_setup();
            config.append_dot_mydomain = dot;
            config.resolve_dequoted_address = dequote;
            if let Ok(r) = resolve(&config, &lists.tables(), &addr) {
                let domain = r.recipient.domain().unwrap();
                prop_assert_eq!(domain_class(&config, &lists.tables(), domain).unwrap(), r.class);
                prop_assert_eq!(r.routed, r.recipient.local_part().as_str().contains(['@', '%', '!']));
                prop_assert!(!r.recipient.local_part().as_str().starts_with('-'));
                prop_assert!(!(r.class == AddressClass::Local && r.recipient.local_part().as_str().is_empty()));
            }
        }

        // A failing list gives a temporary failure or, when the list was
        // not needed, the same answer as before: never another class.
        #[test]
        fn lookup_failure_never_changes_the_class(addr in routed_address(), which in 0usize..4) {
            let (config, lists) = oracle_setup();
            let good = resolve(&config, &lists.tables(), &addr);
            let mut tables = lists.tables();
            match which {
                0 => tables.mydestination = &FailsWhenAsked,
                1 => tables.virtual_alias_domains = &FailsWhenAsked,
                2 => tables.virtual_mailbox_domains = &FailsWhenAsked,
                _ => tables.relay_domains = &FailsWhenAsked,
            }
            match resolve(&config, &tables, &addr) {
                Err(ResolveError::Lookup(_)) => {}
                other => prop_assert_eq!(other, good),
            }
        }

        // Rewriting to standard form is idempotent.
        #[test]
        fn rewrite_is_idempotent(addr in routed_address(), dot in any::<bool>(), remote in any::<bool>()) {
            let (mut config, _) = oracle_setup();
            config.append_dot_mydomain = dot;
            config.remote_header_rewrite_domain = Some(domain("domain.invalid"));
            let context = if remote { RewriteContext::Remote } else { RewriteContext::Local };
            if let Ok(once) = rewrite(&config, context, &addr) {
                prop_assert_eq!(rewrite(&config, context, &once), Ok(once.clone()));
                prop_assert!(once.domain().is_some() || once.local_part().as_str().is_empty());
            }
        }
    }
}

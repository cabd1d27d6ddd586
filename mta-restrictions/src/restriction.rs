//! The restriction engine: Postfix's `smtpd_*_restrictions`.
//!
//! [`Restrictions::from_config`] reads every restriction list of a
//! `main.cf` (client, helo, sender, relay, recipient, data, end-of-data,
//! ETRN, and the restriction classes), opens the tables they name, and
//! refuses unknown restriction names with the file and line.
//! [`Restrictions::evaluate`] answers one SMTP command with a [`Decision`]
//! following Postfix's model:
//!
//! * within a list, restrictions apply in order; the first that permits or
//!   rejects ends the list, and DUNNO goes on to the next;
//! * with `smtpd_delay_reject = yes` (the default) the client, helo and
//!   sender lists are applied at RCPT TO (and ETRN), before the relay and
//!   recipient lists; with `no`, each at its own command;
//! * a permit in one list does not skip the next list: mail is accepted
//!   when no list rejects;
//! * `warn_if_reject` turns the next restriction's rejection into a logged
//!   `reject_warning`; `defer_if_permit` (also reached through DNS
//!   failures) turns a final acceptance into a 4xx; `defer_if_reject`
//!   turns a later 5xx into its 4xx; `soft_bounce = yes` makes every 5xx a
//!   4xx;
//! * after the recipient lists, `smtpd_reject_unlisted_recipient` rejects
//!   recipients unknown in their domain's recipient table.
//!
//! Postfix applies the delayed lists anew at every RCPT TO (it caches only
//! DNS answers, per process); so does this engine, statelessly, and a
//! caching [`Resolver`] gives the same effect.
//!
//! Not supported, and refused by `from_config` with the parameter's file
//! and line so that nothing is silently ignored:
//! `reject_unverified_sender`/`_recipient` (address verification), the TLS
//! client certificate restrictions, and the other restrictions this module
//! does not list in [`RESTRICTION_NAMES`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use mta_core::address::{MailAddress, RecipientDelimiter};
use mta_core::address_class::RewriteConfig;
use mta_core::config::{Config, ConfigError};
use mta_core::dns::{DnsAnswer, Resolver, reversed_address};
use mta_core::reply::{EnhancedStatus, Reply, ReplyCode};
use mta_maps::MapError;
use mta_maps::domains::DomainMatcher;
use mta_maps::list::MapList;
use mta_maps::registry::{Registry, split_references};
use mta_maps::search::{SearchKey, SearchStyle, keys};

use crate::access::{AccessAction, MessageAction};
use crate::policy::{PolicyClient, PolicyError, PolicyRequest, PolicyService};

/// The SMTP command (or moment) a decision is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The client connected (`smtpd_client_restrictions`).
    Connect,
    /// HELO or EHLO (`smtpd_helo_restrictions`).
    Helo,
    /// MAIL FROM (`smtpd_sender_restrictions`).
    Mail,
    /// RCPT TO (`smtpd_relay_restrictions`, `smtpd_recipient_restrictions`,
    /// and the delayed lists).
    Rcpt,
    /// DATA (`smtpd_data_restrictions`).
    Data,
    /// The end of the message (`smtpd_end_of_data_restrictions`).
    EndOfData,
    /// ETRN (`smtpd_etrn_restrictions`).
    Etrn,
}

/// What is known about a client's host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientName {
    /// A name (for the verified name: one whose address maps back to the
    /// client).
    Name(String),
    /// No name: no PTR record, or (for the verified name) no matching
    /// forward record. Postfix shows it as `unknown`.
    Unknown,
    /// The lookup failed temporarily; the name shows as `unknown`.
    TempFail,
}

impl ClientName {
    /// The name, or `unknown`.
    pub fn as_str(&self) -> &str {
        match self {
            ClientName::Name(n) => n,
            _ => "unknown",
        }
    }
}

/// The state of an SMTP session that restrictions look at.
#[derive(Debug, Clone)]
pub struct SmtpContext {
    /// The client's IP address.
    pub client_address: IpAddr,
    /// The verified client name (PTR whose A/AAAA maps back).
    pub client_name: ClientName,
    /// The name of the PTR record alone (the "reverse client name").
    pub reverse_name: ClientName,
    /// The HELO/EHLO argument, if the client sent one.
    pub helo: Option<String>,
    /// The MAIL FROM address as sent, without `<>`; `Some("")` for the
    /// null sender; `None` before MAIL FROM.
    pub sender: Option<String>,
    /// The RCPT TO address being decided (or, at DATA, the only one).
    pub recipient: Option<String>,
    /// The SASL login name, when the client authenticated.
    pub sasl_username: Option<String>,
    /// The SHA-256 fingerprint of the client's TLS certificate
    /// (`AB:CD:...`), when it showed one (`smtpd_tls_ask_ccert`).
    pub ccert_fingerprint: Option<String>,
    /// Whether the client sent commands before it was allowed to
    /// (`reject_unauth_pipelining`).
    pub improper_pipelining: bool,
    /// Recipients accepted so far in this transaction (at RCPT TO, not
    /// counting the one being decided).
    pub recipient_count: usize,
    /// Whether the client said EHLO (`proto=ESMTP` in logs).
    pub esmtp: bool,
    /// The queue ID, once the message has one.
    pub queue_id: Option<String>,
    /// The ETRN argument, at [`Stage::Etrn`].
    pub etrn_domain: Option<String>,
}

impl SmtpContext {
    /// A fresh session from `address`, without names.
    pub fn new(client_address: IpAddr) -> SmtpContext {
        SmtpContext {
            client_address,
            client_name: ClientName::Unknown,
            reverse_name: ClientName::Unknown,
            helo: None,
            sender: None,
            recipient: None,
            sasl_username: None,
            ccert_fingerprint: None,
            improper_pipelining: false,
            recipient_count: 0,
            esmtp: false,
            queue_id: None,
            etrn_domain: None,
        }
    }

    /// `name[address]`, as Postfix names the client in replies and logs.
    pub fn namaddr(&self) -> String {
        format!("{}[{}]", self.client_name.as_str(), self.client_address)
    }
}

/// The outcome for the SMTP command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on with the command (the SMTP layer sends its own success reply).
    Accept,
    /// Refuse with this reply.
    Reject(Reply),
}

/// A decision: the verdict, the message actions that access tables asked
/// for, and the log lines, in Postfix's format (without the syslog tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Accept or the reply that refuses.
    pub verdict: Verdict,
    /// HOLD, DISCARD, FILTER, REDIRECT, PREPEND, BCC, in firing order.
    pub actions: Vec<MessageAction>,
    /// Log lines: `NOQUEUE: reject: RCPT from host[ip]: 554 5.7.1 ...`.
    pub log: Vec<String>,
}

impl Decision {
    /// Whether the command is refused.
    pub fn is_reject(&self) -> bool {
        matches!(self.verdict, Verdict::Reject(_))
    }

    /// The refusing reply, if any.
    pub fn reply(&self) -> Option<&Reply> {
        match &self.verdict {
            Verdict::Reject(r) => Some(r),
            Verdict::Accept => None,
        }
    }

    /// Whether the server must hang up after the reply (`421` and `521`
    /// from access tables, as Postfix does).
    pub fn disconnect(&self) -> bool {
        self.reply()
            .is_some_and(|r| matches!(r.code().get(), 421 | 521))
    }
}

/// Every restriction name this module understands (older aliases
/// included).
pub const RESTRICTION_NAMES: &[&str] = &[
    "permit",
    "reject",
    "defer",
    "warn_if_reject",
    "defer_if_permit",
    "defer_if_reject",
    "permit_mynetworks",
    "permit_sasl_authenticated",
    "reject_unauth_destination",
    "defer_unauth_destination",
    "permit_auth_destination",
    "permit_mx_backup",
    "reject_unauth_pipelining",
    "reject_unknown_client_hostname",
    "reject_unknown_client",
    "reject_unknown_reverse_client_hostname",
    "reject_invalid_helo_hostname",
    "reject_invalid_hostname",
    "reject_non_fqdn_helo_hostname",
    "reject_non_fqdn_hostname",
    "reject_unknown_helo_hostname",
    "reject_unknown_hostname",
    "reject_non_fqdn_sender",
    "reject_non_fqdn_recipient",
    "reject_unknown_sender_domain",
    "reject_unknown_recipient_domain",
    "reject_unlisted_sender",
    "reject_unlisted_recipient",
    "reject_multi_recipient_bounce",
    "reject_rbl_client",
    "reject_rhsbl_client",
    "reject_rhsbl_reverse_client",
    "reject_rhsbl_sender",
    "reject_rhsbl_helo",
    "reject_rhsbl_recipient",
    "permit_dnswl_client",
    "check_client_access",
    "check_reverse_client_hostname_access",
    "check_helo_access",
    "check_sender_access",
    "check_recipient_access",
    "check_sender_mx_access",
    "check_sender_ns_access",
    "check_recipient_mx_access",
    "check_recipient_ns_access",
    "check_helo_mx_access",
    "check_helo_ns_access",
    "check_policy_service",
];

/// Names Postfix knows that this engine does not implement yet.
const NOT_IMPLEMENTED: &[&str] = &[
    "reject_unverified_sender",
    "reject_unverified_recipient",
    "permit_tls_all_clientcerts",
    "check_sasl_access",
    "reject_plaintext_session",
    "permit_rhswl_client",
    "check_client_a_access",
    "check_client_mx_access",
    "check_client_ns_access",
    "check_reverse_client_a_access",
    "check_reverse_client_mx_access",
    "check_reverse_client_ns_access",
    "check_helo_a_access",
    "check_sender_a_access",
    "check_recipient_a_access",
    "check_etrn_access",
    "sleep",
];

/// What an access table is keyed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AccessTarget {
    Client,
    ReverseClient,
    Helo,
    Sender,
    Recipient,
}

/// Which DNS records give the servers of `check_*_{mx,ns}_access`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerKind {
    Mx,
    Ns,
}

/// What an RHSBL looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RhsTarget {
    Client,
    ReverseClient,
    Sender,
    Helo,
    Recipient,
}

/// A DNSBL domain with its optional `=reply filter`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dnsbl {
    /// As written, `zen.example=127.0.0.[2..11]`, the key of
    /// `rbl_reply_maps`.
    spec: String,
    domain: String,
    filter: Option<[Vec<(u8, u8)>; 4]>,
}

impl Dnsbl {
    fn parse(spec: &str) -> Option<Dnsbl> {
        let (domain, filter) = match spec.split_once('=') {
            Some((d, f)) => (d, Some(parse_filter(f)?)),
            None => (spec, None),
        };
        if domain.is_empty() {
            return None;
        }
        Some(Dnsbl {
            spec: spec.to_string(),
            domain: domain.trim_end_matches('.').to_string(),
            filter,
        })
    }

    fn accepts(&self, ip: IpAddr) -> bool {
        let IpAddr::V4(v4) = ip else {
            return self.filter.is_none();
        };
        match &self.filter {
            None => true,
            Some(f) => v4
                .octets()
                .iter()
                .zip(f.iter())
                .all(|(o, ranges)| ranges.iter().any(|(lo, hi)| lo <= o && o <= hi)),
        }
    }
}

/// Parses `127.0.0.[2;4..6]`: per octet a number or a bracketed list of
/// numbers and ranges separated by `;`.
fn parse_filter(text: &str) -> Option<[Vec<(u8, u8)>; 4]> {
    // Split on the dots outside brackets: `[2..11]` holds dots too.
    let mut parts: Vec<&str> = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            '.' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    if parts.len() != 4 {
        return None;
    }
    let mut out: [Vec<(u8, u8)>; 4] = Default::default();
    for (slot, part) in out.iter_mut().zip(parts) {
        let inner = match part.strip_prefix('[').and_then(|p| p.strip_suffix(']')) {
            Some(i) => i,
            None => part,
        };
        for item in inner.split(';') {
            let range = match item.split_once("..") {
                Some((lo, hi)) => (lo.parse().ok()?, hi.parse().ok()?),
                None => {
                    let n = item.parse().ok()?;
                    (n, n)
                }
            };
            slot.push(range);
        }
    }
    Some(out)
}

/// One restriction of a list.
#[derive(Debug, Clone)]
enum Restriction {
    Permit,
    Reject,
    Defer,
    WarnIfReject,
    DeferIfPermit,
    DeferIfReject,
    PermitMynetworks,
    PermitSaslAuthenticated,
    /// `permit_tls_clientcerts`: the client certificate's fingerprint is
    /// in `relay_clientcerts`.
    PermitTlsClientcerts,
    /// `check_ccert_access type:table`: the fingerprint's action.
    CheckCcertAccess(Arc<MapList>),
    /// `reject_sender_login_mismatch` and its three variants.
    SenderLoginMismatch(LoginCheck),
    RejectUnauthDestination,
    DeferUnauthDestination,
    PermitAuthDestination,
    PermitMxBackup,
    RejectUnauthPipelining,
    RejectUnknownClientHostname,
    RejectUnknownReverseClientHostname,
    RejectInvalidHeloHostname,
    RejectNonFqdnHeloHostname,
    RejectUnknownHeloHostname,
    RejectNonFqdnSender,
    RejectNonFqdnRecipient,
    RejectUnknownSenderDomain,
    RejectUnknownRecipientDomain,
    RejectUnlistedSender,
    RejectUnlistedRecipient,
    RejectMultiRecipientBounce,
    RejectRblClient(Dnsbl),
    RejectRhsbl(RhsTarget, Dnsbl),
    PermitDnswlClient(Dnsbl),
    CheckAccess(AccessTarget, Arc<MapList>),
    CheckServerAccess(AccessTarget, ServerKind, Arc<MapList>),
    CheckPolicyService(Arc<PolicyService>),
    Class(String),
}

/// A restriction list with the parameter it came from.
#[derive(Debug, Clone, Default)]
struct RestrictionList {
    items: Vec<Restriction>,
    /// Each item as written (name and argument), for reports.
    texts: Vec<String>,
}

/// `mynetworks`: networks, host names and tables.
#[derive(Debug, Clone, Default)]
struct NetworkMatcher {
    entries: Vec<NetworkEntry>,
}

#[derive(Debug, Clone)]
enum NetworkEntry {
    Net {
        negated: bool,
        address: IpAddr,
        prefix: u8,
    },
    Host {
        negated: bool,
        name: String,
    },
    Table(Arc<MapList>),
}

fn in_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    fn bits(ip: IpAddr) -> (u128, u8) {
        match ip {
            IpAddr::V4(v) => (u128::from(u32::from(v)) << 96, 32),
            IpAddr::V6(v) => match v.to_ipv4_mapped() {
                Some(v4) => (u128::from(u32::from(v4)) << 96, 32),
                None => (u128::from(v), 128),
            },
        }
    }
    let (a, alen) = bits(ip);
    let (n, nlen) = bits(net);
    if alen != nlen || prefix > nlen {
        return false;
    }
    if prefix == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - u32::from(prefix));
    a & mask == n & mask
}

impl NetworkMatcher {
    fn from_config(
        config: &Config,
        registry: &Registry,
        name: &str,
    ) -> Result<NetworkMatcher, ConfigError> {
        let mut entries = Vec::new();
        for entry in list_words(config, name)? {
            // `fe80::/10` has the shape of `type:name` too.
            let address_part = entry.split('/').next().unwrap_or("");
            if mta_core::config::is_table_reference(&entry)
                && !entry.starts_with('[')
                && address_part.parse::<IpAddr>().is_err()
            {
                entries.push(NetworkEntry::Table(Arc::new(open_tables(
                    config, registry, name, &entry,
                )?)));
                continue;
            }
            let (negated, rest) = match entry.strip_prefix('!') {
                Some(r) => (true, r),
                None => (false, entry.as_str()),
            };
            let (addr, prefix) = match rest.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (rest, None),
            };
            let addr = addr
                .strip_prefix('[')
                .and_then(|a| a.strip_suffix(']'))
                .unwrap_or(addr);
            match addr.parse::<IpAddr>() {
                Ok(address) => {
                    let max = if address.is_ipv4() { 32 } else { 128 };
                    let prefix = match prefix {
                        None => max,
                        Some(p) => match p.parse::<u8>() {
                            Ok(n) if n <= max => n,
                            _ => {
                                return Err(config.bad_value(
                                    name,
                                    &entry,
                                    format!("bad network prefix in \"{entry}\""),
                                ));
                            }
                        },
                    };
                    entries.push(NetworkEntry::Net {
                        negated,
                        address,
                        prefix,
                    });
                }
                Err(_) if prefix.is_none() => entries.push(NetworkEntry::Host {
                    negated,
                    name: addr.to_ascii_lowercase(),
                }),
                Err(_) => {
                    return Err(config.bad_value(
                        name,
                        &entry,
                        format!("bad network address in \"{entry}\""),
                    ));
                }
            }
        }
        Ok(NetworkMatcher { entries })
    }

    async fn contains(&self, ip: IpAddr, name: &str) -> Result<bool, MapError> {
        let addr = ip.to_string();
        for entry in &self.entries {
            match entry {
                NetworkEntry::Net {
                    negated,
                    address,
                    prefix,
                } => {
                    if in_network(ip, *address, *prefix) {
                        return Ok(!negated);
                    }
                }
                NetworkEntry::Host { negated, name: n } => {
                    let sub = name.len() > n.len()
                        && name.ends_with(n.as_str())
                        && name.as_bytes()[name.len() - n.len() - 1] == b'.';
                    if name.eq_ignore_ascii_case(n) || sub {
                        return Ok(!negated);
                    }
                }
                NetworkEntry::Table(maps) => {
                    if maps.lookup(&addr).await?.is_some() {
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }
}

/// The words of a list parameter: `inline:{...}` kept whole, files named
/// by the value spliced in (when the caller had them read).
fn list_words(config: &Config, name: &str) -> Result<Vec<String>, ConfigError> {
    let value = config.expanded(name)?;
    if value.contains('{') {
        Ok(split_references(&value))
    } else {
        config.list(name)
    }
}

/// Opens the tables of `value` for parameter `name`, turning a table error
/// into a configuration error located at the parameter.
fn open_tables(
    config: &Config,
    registry: &Registry,
    name: &str,
    value: &str,
) -> Result<MapList, ConfigError> {
    registry
        .open_list(value)
        .map_err(|e| config.bad_value(name, value, format!("table {value}: {e}")))
}

/// Reply codes and texts from the configuration.
#[derive(Debug, Clone)]
struct Codes {
    access_map_reject: u16,
    access_map_defer: u16,
    reject: u16,
    defer: u16,
    unknown_address: u16,
    unknown_client: u16,
    unknown_hostname: u16,
    invalid_hostname: u16,
    non_fqdn: u16,
    relay_domains: u16,
    maps_rbl: u16,
    multi_recipient_bounce: u16,
    unknown_local_recipient: u16,
    unknown_virtual_alias: u16,
    unknown_virtual_mailbox: u16,
    unknown_relay_recipient: u16,
    /// `unknown_address_tempfail_action`: defer or defer_if_permit.
    unknown_address_tempfail_defer: bool,
    /// `unknown_helo_hostname_tempfail_action`.
    unknown_helo_tempfail_defer: bool,
    default_rbl_reply: String,
    show_user_unknown_table_name: bool,
}

/// The restriction lists of a configuration, ready to evaluate.
#[derive(Debug)]
pub struct Restrictions {
    client: RestrictionList,
    helo: RestrictionList,
    sender: RestrictionList,
    relay: RestrictionList,
    recipient: RestrictionList,
    data: RestrictionList,
    end_of_data: RestrictionList,
    etrn: RestrictionList,
    classes: HashMap<String, RestrictionList>,
    delay_reject: bool,
    soft_bounce: bool,
    reject_unlisted_recipient: bool,
    reject_unlisted_sender: bool,
    allow_untrusted_routing: bool,
    codes: Codes,
    rewrite: RewriteConfig,
    delimiter: RecipientDelimiter,
    null_access_key: String,
    access_parent_matches: bool,
    mynetworks: NetworkMatcher,
    mydestination: DomainMatcher,
    relay_domains: DomainMatcher,
    virtual_alias_domains: DomainMatcher,
    virtual_mailbox_domains: DomainMatcher,
    permit_mx_backup_networks: NetworkMatcher,
    event_limit_exceptions: NetworkMatcher,
    local_recipient_maps: Option<MapList>,
    virtual_alias_maps: MapList,
    virtual_mailbox_maps: MapList,
    relay_recipient_maps: MapList,
    relocated_maps: MapList,
    rbl_reply_maps: MapList,
    sender_login_maps: MapList,
    /// `relay_clientcerts`: certificate fingerprints for
    /// `permit_tls_clientcerts`.
    relay_clientcerts: MapList,
    /// `smtpd_sasl_auth_enable`: the sender login checks apply only
    /// where clients can log in, as in Postfix.
    sasl_enabled: bool,
    policy_client: PolicyClientSlot,
    warnings: Vec<String>,
}

/// Which clients a sender login check applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoginCheck {
    /// `reject_sender_login_mismatch`: both of the next two.
    Both,
    /// `reject_authenticated_sender_login_mismatch`: a logged-in client
    /// must own the sender address (`smtpd_sender_login_maps`).
    Authenticated,
    /// `reject_known_sender_login_mismatch`: the same, only for sender
    /// addresses the table lists.
    Known,
    /// `reject_unauthenticated_sender_login_mismatch`: a client that has
    /// not logged in may not use an address the table lists.
    Unauthenticated,
}

/// The installed policy client; `Debug` without requiring it of clients.
#[derive(Default)]
struct PolicyClientSlot(Option<Arc<dyn PolicyClient>>);

impl std::fmt::Debug for PolicyClientSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

/// The parameters that hold restriction lists, with their stage.
const LIST_PARAMETERS: [&str; 8] = [
    "smtpd_client_restrictions",
    "smtpd_helo_restrictions",
    "smtpd_sender_restrictions",
    "smtpd_relay_restrictions",
    "smtpd_recipient_restrictions",
    "smtpd_data_restrictions",
    "smtpd_end_of_data_restrictions",
    "smtpd_etrn_restrictions",
];

struct Parser<'c> {
    config: &'c Config,
    registry: &'c Registry,
    classes: Vec<String>,
}

impl Parser<'_> {
    fn list(&self, name: &str) -> Result<RestrictionList, ConfigError> {
        let value = self.config.expanded(name)?;
        let words = split_references(&value);
        parse_words(
            &words,
            &self.classes,
            Some((self.config, self.registry)),
            name,
        )
        .map_err(|why| self.config.bad_value(name, &value, why))
    }
}

/// Parses restriction words; tables can be opened only with a
/// configuration and registry (at start-up, not in access results).
fn parse_words(
    words: &[String],
    classes: &[String],
    open: Option<(&Config, &Registry)>,
    parameter: &str,
) -> Result<RestrictionList, String> {
    let mut items = Vec::new();
    let mut texts = Vec::new();
    let all_words = words;
    let mut words = words.iter();
    while let Some(word) = words.next() {
        let start = all_words.len() - words.as_slice().len() - 1;
        let lower = word.to_ascii_lowercase();
        let mut argument = |what: &str| -> Result<String, String> {
            words
                .next()
                .cloned()
                .ok_or_else(|| format!("restriction {word} needs {what} as its argument"))
        };
        let mut table = |target: AccessTarget, server: Option<ServerKind>| {
            let reference = argument("a type:table")?;
            let Some((config, registry)) = open else {
                return Err(format!(
                    "{word} {reference}: tables cannot be opened from an access table result"
                ));
            };
            let maps = registry
                .open_list(&reference)
                .map_err(|e| format!("{word} {reference}: {e}"))?;
            let _ = config;
            let maps = Arc::new(maps);
            Ok(match server {
                None => Restriction::CheckAccess(target, maps),
                Some(kind) => Restriction::CheckServerAccess(target, kind, maps),
            })
        };
        let restriction = match lower.as_str() {
            "permit" => Restriction::Permit,
            "reject" => Restriction::Reject,
            "defer" => Restriction::Defer,
            "warn_if_reject" => Restriction::WarnIfReject,
            "defer_if_permit" => Restriction::DeferIfPermit,
            "defer_if_reject" => Restriction::DeferIfReject,
            "permit_mynetworks" => Restriction::PermitMynetworks,
            "permit_sasl_authenticated" => Restriction::PermitSaslAuthenticated,
            "permit_tls_clientcerts" => Restriction::PermitTlsClientcerts,
            "reject_sender_login_mismatch" => Restriction::SenderLoginMismatch(LoginCheck::Both),
            "reject_authenticated_sender_login_mismatch" => {
                Restriction::SenderLoginMismatch(LoginCheck::Authenticated)
            }
            "reject_known_sender_login_mismatch" => {
                Restriction::SenderLoginMismatch(LoginCheck::Known)
            }
            "reject_unauthenticated_sender_login_mismatch" => {
                Restriction::SenderLoginMismatch(LoginCheck::Unauthenticated)
            }
            "reject_unauth_destination" => Restriction::RejectUnauthDestination,
            "defer_unauth_destination" => Restriction::DeferUnauthDestination,
            "permit_auth_destination" => Restriction::PermitAuthDestination,
            "permit_mx_backup" => Restriction::PermitMxBackup,
            "reject_unauth_pipelining" => Restriction::RejectUnauthPipelining,
            "reject_unknown_client_hostname" | "reject_unknown_client" => {
                Restriction::RejectUnknownClientHostname
            }
            "reject_unknown_reverse_client_hostname" => {
                Restriction::RejectUnknownReverseClientHostname
            }
            "reject_invalid_helo_hostname" | "reject_invalid_hostname" => {
                Restriction::RejectInvalidHeloHostname
            }
            "reject_non_fqdn_helo_hostname" | "reject_non_fqdn_hostname" => {
                Restriction::RejectNonFqdnHeloHostname
            }
            "reject_unknown_helo_hostname" | "reject_unknown_hostname" => {
                Restriction::RejectUnknownHeloHostname
            }
            "reject_non_fqdn_sender" => Restriction::RejectNonFqdnSender,
            "reject_non_fqdn_recipient" => Restriction::RejectNonFqdnRecipient,
            "reject_unknown_sender_domain" => Restriction::RejectUnknownSenderDomain,
            "reject_unknown_recipient_domain" => Restriction::RejectUnknownRecipientDomain,
            "reject_unlisted_sender" => Restriction::RejectUnlistedSender,
            "reject_unlisted_recipient" => Restriction::RejectUnlistedRecipient,
            "reject_multi_recipient_bounce" => Restriction::RejectMultiRecipientBounce,
            "reject_rbl_client"
            | "reject_rhsbl_client"
            | "reject_rhsbl_reverse_client"
            | "reject_rhsbl_sender"
            | "reject_rhsbl_helo"
            | "reject_rhsbl_recipient"
            | "permit_dnswl_client" => {
                let spec = argument("a DNS list domain")?;
                let bl = Dnsbl::parse(&spec)
                    .ok_or_else(|| format!("{word}: bad DNS list \"{spec}\""))?;
                match lower.as_str() {
                    "reject_rbl_client" => Restriction::RejectRblClient(bl),
                    "permit_dnswl_client" => Restriction::PermitDnswlClient(bl),
                    "reject_rhsbl_client" => Restriction::RejectRhsbl(RhsTarget::Client, bl),
                    "reject_rhsbl_reverse_client" => {
                        Restriction::RejectRhsbl(RhsTarget::ReverseClient, bl)
                    }
                    "reject_rhsbl_sender" => Restriction::RejectRhsbl(RhsTarget::Sender, bl),
                    "reject_rhsbl_helo" => Restriction::RejectRhsbl(RhsTarget::Helo, bl),
                    _ => Restriction::RejectRhsbl(RhsTarget::Recipient, bl),
                }
            }
            "check_client_access" => table(AccessTarget::Client, None)?,
            "check_ccert_access" => match table(AccessTarget::Client, None)? {
                Restriction::CheckAccess(_, maps) => Restriction::CheckCcertAccess(maps),
                other => other,
            },
            "check_reverse_client_hostname_access" => table(AccessTarget::ReverseClient, None)?,
            "check_helo_access" => table(AccessTarget::Helo, None)?,
            "check_sender_access" => table(AccessTarget::Sender, None)?,
            "check_recipient_access" => table(AccessTarget::Recipient, None)?,
            "check_sender_mx_access" => table(AccessTarget::Sender, Some(ServerKind::Mx))?,
            "check_sender_ns_access" => table(AccessTarget::Sender, Some(ServerKind::Ns))?,
            "check_recipient_mx_access" => table(AccessTarget::Recipient, Some(ServerKind::Mx))?,
            "check_recipient_ns_access" => table(AccessTarget::Recipient, Some(ServerKind::Ns))?,
            "check_helo_mx_access" => table(AccessTarget::Helo, Some(ServerKind::Mx))?,
            "check_helo_ns_access" => table(AccessTarget::Helo, Some(ServerKind::Ns))?,
            "check_policy_service" => {
                let service = argument("inet:host:port or unix:/path")?;
                let Some((config, _)) = open else {
                    return Err(format!(
                        "{word} {service}: policy services cannot be named in an access table result"
                    ));
                };
                let service = PolicyService::from_argument(&service, config)?;
                Restriction::CheckPolicyService(Arc::new(service))
            }
            _ if classes.iter().any(|c| c.eq_ignore_ascii_case(word)) => {
                Restriction::Class(word.to_string())
            }
            _ if NOT_IMPLEMENTED.contains(&lower.as_str()) => {
                return Err(format!(
                    "restriction {word} is not supported by this implementation"
                ));
            }
            _ => {
                return Err(format!(
                    "unknown smtpd restriction: \"{word}\" in {parameter}"
                ));
            }
        };
        items.push(restriction);
        let end = all_words.len() - words.as_slice().len();
        texts.push(all_words[start..end].join(" "));
    }
    Ok(RestrictionList { items, texts })
}

fn tempfail_defers(config: &Config, name: &str) -> Result<bool, ConfigError> {
    let value = config.expanded(name)?;
    match value.trim() {
        "defer" => Ok(true),
        "defer_if_permit" => Ok(false),
        other => Err(config.bad_value(
            name,
            other,
            format!("bad value \"{other}\": expected defer or defer_if_permit"),
        )),
    }
}

fn code(config: &Config, name: &str) -> Result<u16, ConfigError> {
    let n = config.integer(name)?;
    match u16::try_from(n) {
        Ok(c) if (400..600).contains(&c) => Ok(c),
        _ => Err(config.bad_value(
            name,
            &n.to_string(),
            format!("bad reply code {n}: expected a 4xx or 5xx code"),
        )),
    }
}

impl Restrictions {
    /// Reads the restriction lists and everything they need from
    /// `config`, opening tables through `registry`.
    ///
    /// # Errors
    ///
    /// An unknown or unsupported restriction, a restriction without its
    /// argument, a table that cannot be opened, a bad reply code: each
    /// naming the parameter's file and line.
    pub fn from_config(config: &Config, registry: &Registry) -> Result<Restrictions, ConfigError> {
        let rewrite = RewriteConfig::from_config(config)?;
        let classes = config.list("smtpd_restriction_classes")?;
        let parser = Parser {
            config,
            registry,
            classes: classes.clone(),
        };
        let mut lists = Vec::new();
        for name in LIST_PARAMETERS {
            lists.push(parser.list(name)?);
        }
        let mut class_lists = HashMap::new();
        for class in &classes {
            if config.raw(class).is_none() {
                return Err(config.bad_value(
                    "smtpd_restriction_classes",
                    class,
                    format!("restriction class {class} has no definition"),
                ));
            }
            class_lists.insert(class.to_ascii_lowercase(), parser.list(class)?);
        }
        let [
            client,
            helo,
            sender,
            relay,
            recipient,
            data,
            end_of_data,
            etrn,
        ]: [RestrictionList; 8] = lists
            .try_into()
            .unwrap_or_else(|_| unreachable!("eight parameters"));
        let mut warnings = Vec::new();
        let tables = |name: &str| -> Result<MapList, ConfigError> {
            let value = config.expanded(name)?;
            open_tables(config, registry, name, &value)
        };
        // local_recipient_maps defaults to the password file and aliases
        // through proxymap, which this toolkit has no table type for: the
        // local recipient check is then off, with a warning.
        let local_value = config.expanded("local_recipient_maps")?;
        let local_recipient_maps = if local_value.trim().is_empty() {
            None
        } else {
            match registry.open_list(&local_value) {
                Ok(maps) => Some(maps),
                Err(e) => {
                    warnings.push(format!(
                        "{}: local_recipient_maps = {local_value}: {e}; \
                         not rejecting unknown local recipients",
                        config.location("local_recipient_maps")
                    ));
                    None
                }
            }
        };
        let codes = Codes {
            access_map_reject: code(config, "access_map_reject_code")?,
            access_map_defer: code(config, "access_map_defer_code")?,
            reject: code(config, "reject_code")?,
            defer: code(config, "defer_code")?,
            unknown_address: code(config, "unknown_address_reject_code")?,
            unknown_client: code(config, "unknown_client_reject_code")?,
            unknown_hostname: code(config, "unknown_hostname_reject_code")?,
            invalid_hostname: code(config, "invalid_hostname_reject_code")?,
            non_fqdn: code(config, "non_fqdn_reject_code")?,
            relay_domains: code(config, "relay_domains_reject_code")?,
            maps_rbl: code(config, "maps_rbl_reject_code")?,
            multi_recipient_bounce: code(config, "multi_recipient_bounce_reject_code")?,
            unknown_local_recipient: code(config, "unknown_local_recipient_reject_code")?,
            unknown_virtual_alias: code(config, "unknown_virtual_alias_reject_code")?,
            unknown_virtual_mailbox: code(config, "unknown_virtual_mailbox_reject_code")?,
            unknown_relay_recipient: code(config, "unknown_relay_recipient_reject_code")?,
            unknown_address_tempfail_defer: tempfail_defers(
                config,
                "unknown_address_tempfail_action",
            )?,
            unknown_helo_tempfail_defer: tempfail_defers(
                config,
                "unknown_helo_hostname_tempfail_action",
            )?,
            default_rbl_reply: config.raw("default_rbl_reply").unwrap_or_default(),
            show_user_unknown_table_name: config.boolean("show_user_unknown_table_name")?,
        };
        Ok(Restrictions {
            client,
            helo,
            sender,
            relay,
            recipient,
            data,
            end_of_data,
            etrn,
            classes: class_lists,
            delay_reject: config.boolean("smtpd_delay_reject")?,
            soft_bounce: config.boolean("soft_bounce")?,
            reject_unlisted_recipient: config.boolean("smtpd_reject_unlisted_recipient")?,
            reject_unlisted_sender: config.boolean("smtpd_reject_unlisted_sender")?,
            allow_untrusted_routing: config.boolean("allow_untrusted_routing")?,
            codes,
            delimiter: RecipientDelimiter::new(&config.expanded("recipient_delimiter")?),
            null_access_key: config.expanded("smtpd_null_access_lookup_key")?,
            access_parent_matches: rewrite.parent_matches_subdomains("smtpd_access_maps"),
            mynetworks: NetworkMatcher::from_config(config, registry, "mynetworks")?,
            mydestination: DomainMatcher::from_config(config, registry, &rewrite, "mydestination")?,
            relay_domains: DomainMatcher::from_config(config, registry, &rewrite, "relay_domains")?,
            virtual_alias_domains: DomainMatcher::from_config(
                config,
                registry,
                &rewrite,
                "virtual_alias_domains",
            )?,
            virtual_mailbox_domains: DomainMatcher::from_config(
                config,
                registry,
                &rewrite,
                "virtual_mailbox_domains",
            )?,
            permit_mx_backup_networks: NetworkMatcher::from_config(
                config,
                registry,
                "permit_mx_backup_networks",
            )?,
            event_limit_exceptions: NetworkMatcher::from_config(
                config,
                registry,
                "smtpd_client_event_limit_exceptions",
            )?,
            local_recipient_maps,
            virtual_alias_maps: tables("virtual_alias_maps")?,
            virtual_mailbox_maps: tables("virtual_mailbox_maps")?,
            relay_recipient_maps: tables("relay_recipient_maps")?,
            relocated_maps: tables("relocated_maps")?,
            rbl_reply_maps: tables("rbl_reply_maps")?,
            sender_login_maps: tables("smtpd_sender_login_maps")?,
            relay_clientcerts: tables("relay_clientcerts")?,
            sasl_enabled: config.boolean("smtpd_sasl_auth_enable")?,
            policy_client: PolicyClientSlot::default(),
            rewrite,
            warnings,
        })
    }

    /// Whether `client_address` (named `name`, or `unknown`) is in
    /// `smtpd_client_event_limit_exceptions` (default `$mynetworks`):
    /// such clients are not held to the per-client rate limits. A table
    /// that cannot answer counts as not exempt.
    pub async fn exempt_from_limits(&self, client_address: IpAddr, name: &str) -> bool {
        self.event_limit_exceptions
            .contains(client_address, name)
            .await
            .unwrap_or(false)
    }

    /// Whether `client_address` (named `name`) is in `mynetworks`, as
    /// `permit_mynetworks` asks; a table that cannot answer counts as
    /// not in it. For `local_header_rewrite_clients`.
    pub async fn in_mynetworks(&self, client_address: IpAddr, name: &str) -> bool {
        self.mynetworks
            .contains(client_address, name)
            .await
            .unwrap_or(false)
    }

    /// Installs the client that `check_policy_service` sends its
    /// requests through (see [`crate::policy`]). Without one, every policy
    /// restriction answers with its default action.
    pub fn set_policy_client(&mut self, client: Arc<dyn PolicyClient>) {
        self.policy_client = PolicyClientSlot(Some(client));
    }

    /// Warnings from reading the configuration (features turned off).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Whether `smtpd_delay_reject` is on.
    pub fn delay_reject(&self) -> bool {
        self.delay_reject
    }

    /// Decides `stage` for the session `ctx`, with DNS through `dns`.
    pub async fn evaluate(&self, stage: Stage, ctx: &SmtpContext, dns: &dyn Resolver) -> Decision {
        let mut ev = Evaluation::new(self, ctx, dns, stage);
        let verdict = ev.run(stage).await;
        Decision {
            verdict: match verdict {
                Some(reply) => Verdict::Reject(reply),
                None => Verdict::Accept,
            },
            actions: ev.actions,
            log: ev.log,
        }
    }
}

/// How one restriction treats a RCPT TO from a client outside
/// `mynetworks`, not authenticated, for a recipient outside the local,
/// virtual and relay domains: what [`crate::relay`] reasons with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RelayEffect {
    /// Always refuses it: `reject`, `defer`, `reject_unauth_destination`,
    /// `defer_unauth_destination`.
    Refuses,
    /// `defer_if_permit`: from here on nothing can be accepted.
    DefersAnyPermit,
    /// `permit`: accepts it.
    Permits,
    /// `permit_mynetworks`: applies only when `mynetworks` covers every
    /// client.
    PermitMynetworks,
    /// `warn_if_reject`: the next restriction's rejection is only logged.
    WarnNext,
    /// Cannot permit it, might reject it: go on.
    Continues,
    /// The outcome depends on data: a table, DNS, a policy service.
    Depends(String),
    /// A restriction class: its own list, by name.
    Class(String),
}

impl Restriction {
    fn relay_effect(&self) -> RelayEffect {
        match self {
            Restriction::Reject
            | Restriction::Defer
            | Restriction::RejectUnauthDestination
            | Restriction::DeferUnauthDestination => RelayEffect::Refuses,
            Restriction::DeferIfPermit => RelayEffect::DefersAnyPermit,
            Restriction::Permit => RelayEffect::Permits,
            Restriction::PermitMynetworks => RelayEffect::PermitMynetworks,
            Restriction::WarnIfReject => RelayEffect::WarnNext,
            // Permits only our own destinations.
            Restriction::PermitAuthDestination
            // Never for an unauthenticated client.
            | Restriction::PermitSaslAuthenticated
            // Only for clients holding a listed certificate's key.
            | Restriction::PermitTlsClientcerts
            | Restriction::CheckCcertAccess(_)
            // Never overrides reject_unauth_destination at RCPT TO, in
            // Postfix as here.
            | Restriction::PermitDnswlClient(_)
            | Restriction::DeferIfReject
            | Restriction::RejectUnauthPipelining
            | Restriction::RejectUnknownClientHostname
            | Restriction::RejectUnknownReverseClientHostname
            | Restriction::RejectInvalidHeloHostname
            | Restriction::RejectNonFqdnHeloHostname
            | Restriction::RejectUnknownHeloHostname
            | Restriction::SenderLoginMismatch(_)
            | Restriction::RejectNonFqdnSender
            | Restriction::RejectNonFqdnRecipient
            | Restriction::RejectUnknownSenderDomain
            | Restriction::RejectUnknownRecipientDomain
            | Restriction::RejectUnlistedSender
            | Restriction::RejectUnlistedRecipient
            | Restriction::RejectMultiRecipientBounce
            | Restriction::RejectRblClient(_)
            | Restriction::RejectRhsbl(..) => RelayEffect::Continues,
            Restriction::PermitMxBackup => RelayEffect::Depends(
                "DNS decides: it accepts any domain whose MX records name this host, \
                 and whoever owns a domain controls its MX records"
                    .into(),
            ),
            Restriction::CheckAccess(target, _) => RelayEffect::Depends(
                match target {
                    AccessTarget::Client | AccessTarget::ReverseClient => {
                        "the table decides: an OK (or a restriction list) for a client's \
                         address or name would let that client relay"
                    }
                    AccessTarget::Helo => {
                        "the table decides, on the HELO name, which the client chooses freely"
                    }
                    AccessTarget::Sender => {
                        "the table decides, on the sender address, which the client chooses \
                         freely: one OK entry lets anyone relay by forging that sender"
                    }
                    AccessTarget::Recipient => {
                        "the table decides: an OK for a domain outside the local, virtual \
                         and relay domains would relay to it"
                    }
                }
                .into(),
            ),
            Restriction::CheckServerAccess(..) => RelayEffect::Depends(
                "DNS and a table decide: the MX or NS hosts of a name the client chooses".into(),
            ),
            Restriction::CheckPolicyService(_) => RelayEffect::Depends(
                "a policy service decides, and its OK would be final for this list".into(),
            ),
            Restriction::Class(name) => RelayEffect::Class(name.to_ascii_lowercase()),
        }
    }
}

/// The restriction lists of a RCPT TO, for [`crate::relay`].
pub(crate) enum RcptList {
    /// `smtpd_client_restrictions`.
    Client,
    /// `smtpd_helo_restrictions`.
    Helo,
    /// `smtpd_sender_restrictions`.
    Sender,
    /// `smtpd_relay_restrictions`.
    Relay,
    /// `smtpd_recipient_restrictions`.
    Recipient,
}

impl Restrictions {
    /// The items of a list as written, with their effect on relaying.
    pub(crate) fn relay_view(&self, list: RcptList) -> Vec<(String, RelayEffect)> {
        let list = match list {
            RcptList::Client => &self.client,
            RcptList::Helo => &self.helo,
            RcptList::Sender => &self.sender,
            RcptList::Relay => &self.relay,
            RcptList::Recipient => &self.recipient,
        };
        Self::view(list)
    }

    /// The items of restriction class `name` (lower case), if defined.
    pub(crate) fn relay_class_view(&self, name: &str) -> Option<Vec<(String, RelayEffect)>> {
        self.classes.get(name).map(Self::view)
    }

    fn view(list: &RestrictionList) -> Vec<(String, RelayEffect)> {
        list.texts
            .iter()
            .cloned()
            .zip(list.items.iter().map(Restriction::relay_effect))
            .collect()
    }
}

/// The outcome of one restriction or list.
enum Outcome {
    Permit,
    Dunno,
    Reject(Reply),
}

/// A pending `defer_if_permit` or `defer_if_reject`.
type Deferral = Option<Reply>;

/// The state of one evaluation (Postfix's per-command check state).
struct Evaluation<'a> {
    r: &'a Restrictions,
    ctx: &'a SmtpContext,
    dns: &'a dyn Resolver,
    command: &'static str,
    stage: Stage,
    warn_if_reject: bool,
    defer_if_permit: Deferral,
    defer_if_reject: Deferral,
    /// Logging off while earlier lists are replayed only for their
    /// `defer_if_permit` (delay_reject = no).
    quiet: bool,
    depth: usize,
    recipient: Option<&'a str>,
    actions: Vec<MessageAction>,
    log: Vec<String>,
}

/// Nesting limit for restriction classes and access results that name
/// restrictions, against loops.
const MAX_DEPTH: usize = 100;

/// Builds a reply; the status class follows the code's, as Postfix fixes
/// it, and a text that cannot be sent is cut.
fn make_reply(code: u16, dsn: &str, text: &str) -> Reply {
    let code_class = (code / 100) as u8;
    let mut dsn = dsn.to_string();
    if dsn.len() >= 5 && dsn.as_bytes()[0] != b'0' + code_class {
        dsn.replace_range(0..1, &code_class.to_string());
    }
    let rc = ReplyCode::new(code).unwrap_or(ReplyCode::TRANSACTION_FAILED);
    let status = EnhancedStatus::parse(&dsn).ok();
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut cut = clean.as_str();
    loop {
        if let Ok(r) = Reply::new(rc, status, [cut]) {
            return r;
        }
        if cut.is_empty() {
            return Reply::new(rc, None, ["Error"]).unwrap_or_else(|_| Reply::ok());
        }
        let mut end = cut.len() - 1;
        while !cut.is_char_boundary(end) {
            end -= 1;
        }
        cut = &cut[..end];
    }
}

/// Splits a leading enhanced status code off `text`.
fn split_dsn<'t>(text: &'t str, default: &'t str) -> (&'t str, &'t str) {
    let mut parts = text.splitn(2, ' ');
    let first = parts.next().unwrap_or("");
    if EnhancedStatus::parse(first).is_ok() {
        (first, parts.next().unwrap_or("").trim_start())
    } else {
        (default, text)
    }
}

/// Postfix's `valid_hostname`: letters, digits, `-` and `_`, labels of at
/// most 63 and names of at most 255 characters, no label starting or
/// ending in `-`, and not all-numeric.
pub fn valid_hostname(name: &str) -> bool {
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    let mut non_numeric = false;
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return false;
        }
        if label.starts_with('-') || label.ends_with('-') {
            return false;
        }
        for b in label.bytes() {
            if b.is_ascii_alphabetic() || b == b'-' || b == b'_' {
                non_numeric = true;
            } else if !b.is_ascii_digit() {
                return false;
            }
        }
    }
    non_numeric
}

/// The domain of an address as sent: after the last `@`.
fn address_domain(address: &str) -> Option<&str> {
    address
        .rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty())
}

/// The network-prefix keys of a client address, as check_client_access
/// tries them after the whole address: `1.2.3`, `1.2`, `1` for IPv4, and
/// for IPv6 the address with one more trailing group removed each time.
fn address_prefixes(ip: IpAddr) -> Vec<String> {
    let text = ip.to_string();
    let sep = if ip.is_ipv4() { '.' } else { ':' };
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.rfind(sep) {
        rest = &rest[..i];
        let trimmed = rest.trim_end_matches(':');
        if !trimmed.is_empty() {
            out.push(trimmed.to_string());
        }
    }
    out.dedup();
    out
}

/// Host name keys: the name whole, then its parents (partial).
fn domain_keys(name: &str, parent_matches: bool) -> Vec<SearchKey> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let mut out = vec![SearchKey {
        key: name.clone(),
        partial: false,
    }];
    for (i, _) in name.match_indices('.') {
        out.push(SearchKey {
            key: if parent_matches {
                name[i + 1..].to_string()
            } else {
                name[i..].to_string()
            },
            partial: true,
        });
    }
    out
}

/// Where the relay checks see a recipient going: its final domain, and
/// whether the local part still routes further.
struct Route {
    /// The local part left after routing through local domains.
    local: String,
    domain: String,
    routed: bool,
}

/// trivial-rewrite's routing split (mta-core's, shared), on a local part
/// given as text.
fn unroute(
    rewrite: &RewriteConfig,
    local: &str,
    look_inside_quotes: bool,
) -> Option<(String, String)> {
    let needs_quoting =
        mta_core::address::LocalPart::new(local).map_or(true, |l| l.needs_quoting());
    mta_core::address_class::split_route(rewrite, local, needs_quoting, look_inside_quotes)
        .map(|(user, site)| (user.to_string(), site.to_string()))
}

impl<'a> Evaluation<'a> {
    fn new(
        r: &'a Restrictions,
        ctx: &'a SmtpContext,
        dns: &'a dyn Resolver,
        stage: Stage,
    ) -> Evaluation<'a> {
        let command = match stage {
            Stage::Connect => "CONNECT",
            Stage::Helo if ctx.esmtp => "EHLO",
            Stage::Helo => "HELO",
            Stage::Mail => "MAIL",
            Stage::Rcpt => "RCPT",
            Stage::Data => "DATA",
            Stage::EndOfData => "END-OF-MESSAGE",
            Stage::Etrn => "ETRN",
        };
        // Postfix forgets the recipient at DATA when there are several.
        let recipient = match stage {
            Stage::Rcpt => ctx.recipient.as_deref(),
            Stage::Data | Stage::EndOfData if ctx.recipient_count == 1 => ctx.recipient.as_deref(),
            _ => None,
        };
        Evaluation {
            r,
            ctx,
            dns,
            command,
            stage,
            warn_if_reject: false,
            defer_if_permit: None,
            defer_if_reject: None,
            quiet: false,
            depth: 0,
            recipient,
            actions: Vec::new(),
            log: Vec::new(),
        }
    }

    /// Postfix's `log_whatsup`: `NOQUEUE: reject: RCPT from host[ip]:
    /// TEXT; from=<a> to=<b> proto=ESMTP helo=<h>`.
    fn log_event(&mut self, what: &str, text: &str) {
        if self.quiet {
            return;
        }
        let ctx = self.ctx;
        let mut line = format!(
            "{}: {what}: {} from {}: {text};",
            ctx.queue_id.as_deref().unwrap_or("NOQUEUE"),
            self.command,
            ctx.namaddr()
        );
        if let Some(s) = &ctx.sender {
            line.push_str(&format!(" from=<{s}>"));
        }
        if let Some(rcpt) = self.recipient {
            line.push_str(&format!(" to=<{rcpt}>"));
        }
        line.push_str(if ctx.esmtp {
            " proto=ESMTP"
        } else {
            " proto=SMTP"
        });
        if let Some(h) = &ctx.helo {
            line.push_str(&format!(" helo=<{h}>"));
        }
        self.log.push(line);
    }

    /// Postfix's `smtpd_check_reject`: soft_bounce, warn_if_reject,
    /// defer_if_reject, and the log line.
    fn reject(&mut self, code: u16, dsn: &str, text: &str) -> Outcome {
        let mut code = code;
        if self.r.soft_bounce && code / 100 == 5 {
            code -= 100;
        }
        let mut reply = make_reply(code, dsn, text);
        if self.warn_if_reject {
            let line = reply.to_string();
            self.log_event("reject_warning", &line);
            return Outcome::Dunno;
        }
        if code / 100 == 5
            && let Some(deferred) = self.defer_if_reject.clone()
        {
            reply = deferred;
        }
        let line = reply.to_string();
        self.log_event("reject", &line);
        Outcome::Reject(reply)
    }

    /// A table that could not answer: Postfix's `451 4.3.0 Temporary
    /// lookup failure`, ending the check.
    fn lookup_failure(&mut self, reply_name: &str, error: &MapError) -> Outcome {
        if !self.quiet {
            self.log.push(format!("warning: {error}"));
        }
        let reply = make_reply(
            451,
            "4.3.0",
            &format!("<{reply_name}>: Temporary lookup failure"),
        );
        let line = reply.to_string();
        self.log_event("reject", &line);
        Outcome::Reject(reply)
    }

    /// A configuration problem found while evaluating: `451 4.3.5 Server
    /// configuration error`.
    fn config_error(&mut self, why: &str) -> Outcome {
        if !self.quiet {
            self.log.push(format!("warning: {why}"));
        }
        let reply = make_reply(451, "4.3.5", "Server configuration error");
        let line = reply.to_string();
        self.log_event("reject", &line);
        Outcome::Reject(reply)
    }

    fn set_defer_if_permit(&mut self, code: u16, dsn: &str, text: &str) {
        if self.defer_if_permit.is_none() {
            self.defer_if_permit = Some(make_reply(code, dsn, text));
        }
    }

    fn set_defer_if_reject(&mut self, code: u16, dsn: &str, text: &str) {
        if self.defer_if_reject.is_none() {
            self.defer_if_reject = Some(make_reply(code, dsn, text));
        }
    }

    /// Applies a list the way Postfix's `smtpd_check_*` does for one
    /// stage: fresh warn_if_reject and defer_if_reject state.
    async fn stage_list(
        &mut self,
        list: &RestrictionList,
        reply_name: &str,
        reply_class: &str,
    ) -> Outcome {
        self.warn_if_reject = false;
        self.defer_if_reject = None;
        self.depth = 0;
        self.generic(list, reply_name, reply_class).await
    }

    /// Postfix's `generic_checks`.
    async fn generic(
        &mut self,
        list: &RestrictionList,
        reply_name: &str,
        reply_class: &str,
    ) -> Outcome {
        self.depth += 1;
        let outer_warn = self.warn_if_reject;
        let mut warn_next = false;
        for item in &list.items {
            if let Restriction::WarnIfReject = item {
                warn_next = true;
                continue;
            }
            self.warn_if_reject = outer_warn || warn_next;
            warn_next = false;
            let outcome = if self.depth > MAX_DEPTH {
                self.config_error("restriction nesting too deep")
            } else {
                Box::pin(self.one(item, reply_name, reply_class)).await
            };
            self.warn_if_reject = outer_warn;
            match outcome {
                Outcome::Dunno => continue,
                other => {
                    self.depth -= 1;
                    return other;
                }
            }
        }
        self.depth -= 1;
        Outcome::Dunno
    }

    fn client_name(&self) -> Option<&'a str> {
        match &self.ctx.client_name {
            ClientName::Name(n) => Some(n),
            _ => None,
        }
    }

    /// Whether mail for `rcpt` is ours to take (local, virtual, relay):
    /// Postfix's `permit_auth_destination` on the address as
    /// trivial-rewrite resolves it. Routing through a local domain is
    /// followed first (`user%elsewhere@ourhost` goes to `elsewhere`), and a
    /// destination whose local part still holds `@`, `%` or `!` is never
    /// authorized unless `allow_untrusted_routing = yes`: the next hop
    /// could route it on to anywhere.
    async fn authorized_destination(&mut self, rcpt: &str) -> Result<bool, MapError> {
        let route = self.resolve_route(rcpt).await?;
        if route.routed && !self.r.allow_untrusted_routing {
            return Ok(false);
        }
        self.domain_is_ours(&route.domain).await
    }

    /// Postfix's resolver loop for the relay checks: while the domain is
    /// local and the local part holds a routing operator, drop the domain
    /// and resolve the local part as an address of its own.
    async fn resolve_route(&self, rcpt: &str) -> Result<Route, MapError> {
        let rewrite = &self.r.rewrite;
        let (mut local, domain) = match rcpt.parse::<MailAddress>() {
            Ok(a) => (
                a.local_part().as_str().to_string(),
                a.domain().map(|d| d.as_str().to_string()),
            ),
            // Not an address the parser takes: split at the last `@`, as
            // the SMTP layer would have, and let the operators left in the
            // local part mark it routed.
            Err(_) => match rcpt.rsplit_once('@') {
                Some((l, d)) => (l.to_string(), Some(d.to_string())),
                None => (rcpt.to_string(), None),
            },
        };
        let mut domain = match domain.filter(|d| !d.is_empty()) {
            Some(d) => d,
            // trivial-rewrite's rewrite step: operators outside quotes, then
            // `@$myorigin`.
            None => match unroute(rewrite, &local, false) {
                Some((l, d)) => {
                    local = l;
                    d
                }
                None => rewrite.myorigin.as_str().to_string(),
            },
        };
        // Each round shortens the local part, so this ends; the bound only
        // guards against a mistake.
        for _ in 0..MAX_DEPTH {
            if !self.local_domain(&domain).await? {
                break;
            }
            match unroute(rewrite, &local, rewrite.resolve_dequoted_address) {
                Some((l, d)) => {
                    local = l;
                    domain = d;
                }
                None => break,
            }
        }
        let routed = local.contains(['@', '%', '!']);
        Ok(Route {
            local,
            domain,
            routed,
        })
    }

    async fn domain_is_ours(&self, domain: &str) -> Result<bool, MapError> {
        Ok(self.local_domain(domain).await?
            || self.r.virtual_alias_domains.contains(domain).await?
            || self.r.virtual_mailbox_domains.contains(domain).await?
            || self.r.relay_domains.contains(domain).await?)
    }

    async fn local_domain(&self, domain: &str) -> Result<bool, MapError> {
        if let Some(lit) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
            let lit = lit.strip_prefix("IPv6:").unwrap_or(lit);
            if let Ok(ip) = lit.parse::<IpAddr>() {
                return Ok(self.r.rewrite.our_addresses.contains(&ip));
            }
        }
        self.r.mydestination.contains(domain).await
    }

    async fn one(&mut self, item: &Restriction, reply_name: &str, reply_class: &str) -> Outcome {
        let r = self.r;
        let ctx = self.ctx;
        let codes = &r.codes;
        match item {
            Restriction::Permit => Outcome::Permit,
            Restriction::Reject => self.reject(
                codes.reject,
                "5.7.1",
                &format!("<{reply_name}>: {reply_class} rejected: Access denied"),
            ),
            Restriction::Defer => self.reject(
                codes.defer,
                "4.3.2",
                &format!("<{reply_name}>: {reply_class} rejected: Try again later"),
            ),
            Restriction::WarnIfReject => Outcome::Dunno,
            Restriction::DeferIfPermit => {
                self.set_defer_if_permit(
                    450,
                    "4.7.0",
                    &format!("<{reply_name}>: {reply_class} rejected: defer_if_permit requested"),
                );
                Outcome::Dunno
            }
            Restriction::DeferIfReject => {
                self.set_defer_if_reject(
                    450,
                    "4.7.0",
                    &format!("<{reply_name}>: {reply_class} rejected: defer_if_reject requested"),
                );
                Outcome::Dunno
            }
            Restriction::PermitMynetworks => {
                let name = ctx.client_name.as_str().to_string();
                match r.mynetworks.contains(ctx.client_address, &name).await {
                    Ok(true) => Outcome::Permit,
                    Ok(false) => Outcome::Dunno,
                    Err(e) => {
                        let n = ctx.namaddr();
                        self.lookup_failure(&n, &e)
                    }
                }
            }
            Restriction::PermitSaslAuthenticated => match &ctx.sasl_username {
                Some(u) if !u.is_empty() => Outcome::Permit,
                _ => Outcome::Dunno,
            },
            Restriction::PermitTlsClientcerts => {
                let Some(fp) = ctx.ccert_fingerprint.as_deref() else {
                    return Outcome::Dunno;
                };
                match r.relay_clientcerts.lookup(fp).await {
                    Ok(Some(_)) => Outcome::Permit,
                    Ok(None) => Outcome::Dunno,
                    Err(e) => {
                        let n = ctx.namaddr();
                        self.lookup_failure(&n, &e)
                    }
                }
            }
            Restriction::CheckCcertAccess(maps) => {
                let Some(fp) = ctx.ccert_fingerprint.as_deref() else {
                    return Outcome::Dunno;
                };
                match maps.lookup(fp).await {
                    Ok(Some(value)) => {
                        let value = value.into_owned();
                        let n = ctx.namaddr();
                        self.table_result(&value, &n, "Client certificate").await
                    }
                    Ok(None) => Outcome::Dunno,
                    Err(e) => {
                        let n = ctx.namaddr();
                        self.lookup_failure(&n, &e)
                    }
                }
            }
            Restriction::SenderLoginMismatch(check) => {
                let Some(sender) = ctx.sender.as_deref().filter(|s| !s.is_empty()) else {
                    return Outcome::Dunno;
                };
                if !self.r.sasl_enabled {
                    return Outcome::Dunno;
                }
                let keys = self.address_keys(sender);
                let owners = match self.r.sender_login_maps.search(&keys).await {
                    Ok(found) => found.map(|(_, v)| v.into_owned()),
                    Err(e) => return self.lookup_failure(sender, &e),
                };
                let login = ctx.sasl_username.as_deref().filter(|u| !u.is_empty());
                let owned_by = |user: &str| {
                    owners.as_deref().is_some_and(|o| {
                        o.split([',', ' ', '\t'])
                            .any(|owner| owner.eq_ignore_ascii_case(user))
                    })
                };
                match (check, login) {
                    (LoginCheck::Both | LoginCheck::Authenticated, Some(user))
                    | (LoginCheck::Known, Some(user))
                        if !owned_by(user) && (*check != LoginCheck::Known || owners.is_some()) =>
                    {
                        self.reject(
                            553,
                            "5.7.1",
                            &format!(
                                "<{sender}>: Sender address rejected: not owned by user {user}"
                            ),
                        )
                    }
                    (LoginCheck::Both | LoginCheck::Unauthenticated, None) if owners.is_some() => {
                        self.reject(
                            553,
                            "5.7.1",
                            &format!("<{sender}>: Sender address rejected: not logged in"),
                        )
                    }
                    _ => Outcome::Dunno,
                }
            }
            Restriction::RejectUnauthDestination
            | Restriction::DeferUnauthDestination
            | Restriction::PermitAuthDestination => {
                let Some(rcpt) = self.recipient else {
                    return Outcome::Dunno;
                };
                let ours = match self.authorized_destination(rcpt).await {
                    Ok(ours) => ours,
                    Err(e) => return self.lookup_failure(rcpt, &e),
                };
                match (item, ours) {
                    (Restriction::PermitAuthDestination, true) => Outcome::Permit,
                    (Restriction::PermitAuthDestination, false) | (_, true) => Outcome::Dunno,
                    (Restriction::RejectUnauthDestination, false) => self.reject(
                        codes.relay_domains,
                        "5.7.1",
                        &format!("<{rcpt}>: Relay access denied"),
                    ),
                    // Postfix: relay_domains_reject_code made temporary.
                    (_, false) => self.reject(
                        if codes.relay_domains / 100 == 5 {
                            codes.relay_domains - 100
                        } else {
                            codes.relay_domains
                        },
                        "4.7.1",
                        &format!("<{rcpt}>: Relay access denied"),
                    ),
                }
            }
            Restriction::PermitMxBackup => {
                let Some(rcpt) = self.recipient else {
                    return Outcome::Dunno;
                };
                self.permit_mx_backup(rcpt).await
            }
            Restriction::RejectUnauthPipelining => {
                if ctx.improper_pipelining {
                    self.reject(
                        503,
                        "5.5.0",
                        &format!(
                            "<{reply_name}>: {reply_class} rejected: Improper use of SMTP command pipelining"
                        ),
                    )
                } else {
                    Outcome::Dunno
                }
            }
            Restriction::RejectUnknownClientHostname => match &ctx.client_name {
                ClientName::Name(_) => Outcome::Dunno,
                status => {
                    let code = if *status == ClientName::TempFail {
                        450
                    } else {
                        codes.unknown_client
                    };
                    self.reject(
                        code,
                        "4.7.25",
                        &format!(
                            "Client host rejected: cannot find your hostname, [{}]",
                            ctx.client_address
                        ),
                    )
                }
            },
            Restriction::RejectUnknownReverseClientHostname => match &ctx.reverse_name {
                ClientName::Name(_) => Outcome::Dunno,
                status => {
                    let code = if *status == ClientName::TempFail {
                        450
                    } else {
                        codes.unknown_client
                    };
                    self.reject(
                        code,
                        "4.7.1",
                        &format!(
                            "Client host rejected: cannot find your reverse hostname, [{}]",
                            ctx.client_address
                        ),
                    )
                }
            },
            Restriction::RejectInvalidHeloHostname => {
                let Some(helo) = ctx.helo.as_deref() else {
                    return Outcome::Dunno;
                };
                let ok = if let Some(lit) = helo.strip_prefix('[') {
                    let inner = lit.strip_suffix(']').unwrap_or("");
                    let inner = inner.strip_prefix("IPv6:").unwrap_or(inner);
                    inner.parse::<IpAddr>().is_ok()
                } else {
                    // Postfix takes a bare address as valid here too.
                    let name = helo.strip_suffix('.').unwrap_or(helo);
                    valid_hostname(name) || name.parse::<IpAddr>().is_ok()
                };
                if ok {
                    Outcome::Dunno
                } else {
                    let what = if helo.starts_with('[') {
                        "invalid ip address"
                    } else {
                        "Invalid name"
                    };
                    self.reject(
                        codes.invalid_hostname,
                        "5.5.2",
                        &format!("<{helo}>: Helo command rejected: {what}"),
                    )
                }
            }
            Restriction::RejectNonFqdnHeloHostname => {
                let Some(helo) = ctx.helo.as_deref() else {
                    return Outcome::Dunno;
                };
                if helo.starts_with('[') {
                    return Outcome::Dunno;
                }
                let name = helo.strip_suffix('.').unwrap_or(helo);
                if valid_hostname(name) && name.contains('.') {
                    Outcome::Dunno
                } else {
                    self.reject(
                        codes.non_fqdn,
                        "5.5.2",
                        &format!("<{helo}>: Helo command rejected: need fully-qualified hostname"),
                    )
                }
            }
            Restriction::RejectUnknownHeloHostname => {
                let Some(helo) = ctx.helo.as_deref() else {
                    return Outcome::Dunno;
                };
                if helo.starts_with('[') {
                    return Outcome::Dunno;
                }
                match self.host_exists(helo, false).await {
                    HostStatus::Found => Outcome::Dunno,
                    HostStatus::NullMx | HostStatus::NotFound => self.reject(
                        codes.unknown_hostname,
                        "4.7.1",
                        &format!("<{helo}>: Helo command rejected: Host not found"),
                    ),
                    HostStatus::TempFail => {
                        let text = format!("<{helo}>: Helo command rejected: Host not found");
                        if codes.unknown_helo_tempfail_defer {
                            self.reject(450, "4.7.1", &text)
                        } else {
                            self.set_defer_if_permit(450, "4.7.1", &text);
                            Outcome::Dunno
                        }
                    }
                }
            }
            Restriction::RejectNonFqdnSender | Restriction::RejectNonFqdnRecipient => {
                let (address, class) = match item {
                    Restriction::RejectNonFqdnSender => (ctx.sender.as_deref(), "Sender address"),
                    _ => (self.recipient, "Recipient address"),
                };
                let Some(address) = address.filter(|a| !a.is_empty()) else {
                    return Outcome::Dunno;
                };
                let domain = address.rsplit_once('@').map_or(address, |(_, d)| d);
                if domain.starts_with('[') {
                    return Outcome::Dunno;
                }
                let name = domain.strip_suffix('.').unwrap_or(domain);
                if valid_hostname(name) && name.contains('.') {
                    Outcome::Dunno
                } else {
                    self.reject(
                        codes.non_fqdn,
                        "5.5.2",
                        &format!("<{address}>: {class} rejected: need fully-qualified address"),
                    )
                }
            }
            Restriction::RejectUnknownSenderDomain | Restriction::RejectUnknownRecipientDomain => {
                let sender = matches!(item, Restriction::RejectUnknownSenderDomain);
                let (address, class, dsn) = if sender {
                    (ctx.sender.as_deref(), "Sender address", "4.1.8")
                } else {
                    (self.recipient, "Recipient address", "4.1.2")
                };
                let Some(address) = address else {
                    return Outcome::Dunno;
                };
                let Some(domain) = address_domain(address) else {
                    return Outcome::Dunno;
                };
                if domain.starts_with('[') {
                    return Outcome::Dunno;
                }
                match self.domain_is_ours(domain).await {
                    Ok(true) => return Outcome::Dunno,
                    Ok(false) => {}
                    Err(e) => return self.lookup_failure(address, &e),
                }
                match self.host_exists(domain, true).await {
                    HostStatus::Found => Outcome::Dunno,
                    HostStatus::NullMx => {
                        let (code, dsn) = if sender {
                            (550, "5.7.27")
                        } else {
                            (556, "5.1.10")
                        };
                        self.reject(
                            code,
                            dsn,
                            &format!(
                                "<{address}>: {class} rejected: Domain {domain} does not accept mail (nullMX)"
                            ),
                        )
                    }
                    HostStatus::NotFound => self.reject(
                        codes.unknown_address,
                        dsn,
                        &format!("<{address}>: {class} rejected: Domain not found"),
                    ),
                    HostStatus::TempFail => {
                        let text = format!("<{address}>: {class} rejected: Domain not found");
                        if codes.unknown_address_tempfail_defer {
                            self.reject(450, dsn, &text)
                        } else {
                            self.set_defer_if_permit(450, dsn, &text);
                            Outcome::Dunno
                        }
                    }
                }
            }
            Restriction::RejectUnlistedSender => match ctx.sender.as_deref() {
                Some(s) if !s.is_empty() => self.check_rcpt_maps(s, "Sender address").await,
                _ => Outcome::Dunno,
            },
            Restriction::RejectUnlistedRecipient => match self.recipient {
                Some(rcpt) => self.check_rcpt_maps(rcpt, "Recipient address").await,
                None => Outcome::Dunno,
            },
            Restriction::RejectMultiRecipientBounce => {
                let limit = if self.command == "DATA" { 1 } else { 0 };
                if ctx.sender.as_deref() == Some("") && ctx.recipient_count > limit {
                    self.reject(
                        codes.multi_recipient_bounce,
                        "5.5.3",
                        &format!("<{reply_name}>: {reply_class} rejected: Multi-recipient bounce"),
                    )
                } else {
                    Outcome::Dunno
                }
            }
            Restriction::RejectRblClient(bl) => {
                let query = format!("{}.{}", reversed_address(ctx.client_address), bl.domain);
                let what = ctx.client_address.to_string();
                self.dnsbl(bl, &query, "Client host", &what, true).await
            }
            Restriction::PermitDnswlClient(bl) => {
                let query = format!("{}.{}", reversed_address(ctx.client_address), bl.domain);
                match self.dnsbl_listed(bl, &query).await {
                    Listed::Yes(_) => {
                        // Postfix never lets a DNS whitelist override
                        // reject_unauth_destination: in the RCPT lists it
                        // permits only mail for our own destinations.
                        if let Some(rcpt) = self.recipient
                            && matches!(self.command, "RCPT")
                            && !self.authorized_destination(rcpt).await.unwrap_or(false)
                        {
                            return Outcome::Dunno;
                        }
                        Outcome::Permit
                    }
                    Listed::No => Outcome::Dunno,
                    Listed::TempFail => {
                        self.set_defer_if_reject(
                            450,
                            "4.7.1",
                            &format!(
                                "<{}>: {reply_class} rejected: Service unavailable",
                                ctx.namaddr()
                            ),
                        );
                        Outcome::Dunno
                    }
                }
            }
            Restriction::RejectRhsbl(target, bl) => {
                let (name, class, what) = match target {
                    RhsTarget::Client => match self.client_name() {
                        Some(n) => (n.to_string(), "Client host", n.to_string()),
                        None => return Outcome::Dunno,
                    },
                    RhsTarget::ReverseClient => match &ctx.reverse_name {
                        ClientName::Name(n) => (n.clone(), "Unverified Client host", n.clone()),
                        _ => return Outcome::Dunno,
                    },
                    RhsTarget::Helo => match ctx.helo.as_deref() {
                        Some(h) if !h.starts_with('[') => {
                            (h.to_string(), "Helo command", h.to_string())
                        }
                        _ => return Outcome::Dunno,
                    },
                    RhsTarget::Sender => match ctx.sender.as_deref().and_then(address_domain) {
                        Some(d) => (
                            d.to_string(),
                            "Sender address",
                            ctx.sender.clone().unwrap_or_default(),
                        ),
                        None => return Outcome::Dunno,
                    },
                    RhsTarget::Recipient => match self.recipient.and_then(address_domain) {
                        Some(d) => (
                            d.to_string(),
                            "Recipient address",
                            self.recipient.unwrap_or("").to_string(),
                        ),
                        None => return Outcome::Dunno,
                    },
                };
                if name.starts_with('[') {
                    return Outcome::Dunno;
                }
                let query = format!("{}.{}", name.trim_end_matches('.'), bl.domain);
                self.dnsbl(bl, &query, class, &what, false).await
            }
            Restriction::CheckAccess(target, maps) => {
                self.check_access(*target, maps, reply_name, reply_class)
                    .await
            }
            Restriction::CheckServerAccess(target, kind, maps) => {
                self.check_server_access(*target, *kind, maps).await
            }
            Restriction::CheckPolicyService(service) => {
                self.policy(service, reply_name, reply_class).await
            }
            Restriction::Class(name) => match r.classes.get(&name.to_ascii_lowercase()) {
                Some(list) => self.generic(list, reply_name, reply_class).await,
                None => self.config_error(&format!("unknown restriction class {name}")),
            },
        }
    }

    /// `check_policy_service`: the server's action, applied as an access
    /// table result; when the server cannot answer, the default action.
    async fn policy(
        &mut self,
        service: &PolicyService,
        reply_name: &str,
        reply_class: &str,
    ) -> Outcome {
        let request = PolicyRequest::from_context(self.stage, self.ctx, service);
        let answer = match &self.r.policy_client.0 {
            Some(client) => client.query(service, &request).await,
            None => Err(PolicyError::NoClient {
                endpoint: service.endpoint.to_string(),
            }),
        };
        let action = match answer {
            Ok(action) => action,
            Err(e) => {
                if !self.quiet {
                    self.log.push(format!(
                        "warning: problem talking to server {}: {e}; using default action {}",
                        service.endpoint, service.default_action
                    ));
                }
                service.default_action.clone()
            }
        };
        self.table_result(&action, reply_name, reply_class).await
    }

    /// `permit_mx_backup`: our own destinations, or a domain whose MX
    /// hosts include one of our addresses (and, when
    /// `permit_mx_backup_networks` is set, whose primary MX is in it).
    async fn permit_mx_backup(&mut self, rcpt: &str) -> Outcome {
        match self.authorized_destination(rcpt).await {
            Ok(true) => return Outcome::Permit,
            Ok(false) => {}
            Err(e) => return self.lookup_failure(rcpt, &e),
        }
        // Postfix never backs up sender-routed mail: the primary could
        // route it on to anywhere.
        let route = match self.resolve_route(rcpt).await {
            Ok(route) => route,
            Err(e) => return self.lookup_failure(rcpt, &e),
        };
        if route.routed && !self.r.allow_untrusted_routing {
            return Outcome::Dunno;
        }
        let domain = route.domain.trim_end_matches('.').to_string();
        let domain = domain.as_str();
        if domain.is_empty() || domain.starts_with('[') {
            return Outcome::Dunno;
        }
        let mx = match self.dns.lookup_mx(domain).await {
            DnsAnswer::Found(mx) => mx,
            DnsAnswer::TempFail(_) => {
                self.set_defer_if_reject(
                    450,
                    "4.4.4",
                    &format!("<{rcpt}>: Recipient address rejected: unable to look up mail exchanger information"),
                );
                return Outcome::Dunno;
            }
            _ => return Outcome::Dunno,
        };
        let mut sorted = mx.clone();
        sorted.sort_by_key(|m| m.preference);
        for m in &sorted {
            for ip in self.addresses(&m.exchange).await {
                if self.r.rewrite.our_addresses.contains(&ip) {
                    if !self.r.permit_mx_backup_networks.entries.is_empty() {
                        let Some(primary) = sorted.first() else {
                            return Outcome::Dunno;
                        };
                        let mut ok = false;
                        for pip in self.addresses(&primary.exchange).await {
                            if let Ok(true) =
                                self.r.permit_mx_backup_networks.contains(pip, "").await
                            {
                                ok = true;
                            }
                        }
                        if !ok {
                            return Outcome::Dunno;
                        }
                    }
                    return Outcome::Permit;
                }
            }
        }
        Outcome::Dunno
    }

    async fn addresses(&self, host: &str) -> Vec<IpAddr> {
        let mut out = Vec::new();
        if let DnsAnswer::Found(a) = self.dns.lookup_a(host).await {
            out.extend(a);
        }
        if let DnsAnswer::Found(a) = self.dns.lookup_aaaa(host).await {
            out.extend(a);
        }
        out
    }

    /// Whether a host or mail domain exists: Postfix's lookups of MX
    /// (for mail domains), A and AAAA; any record is enough.
    async fn host_exists(&self, name: &str, mail_domain: bool) -> HostStatus {
        let mut temp = false;
        if mail_domain {
            match self.dns.lookup_mx(name).await {
                DnsAnswer::Found(mx) => {
                    if mta_core::dns::MxRecord::is_null_mx(&mx) {
                        return HostStatus::NullMx;
                    }
                    return HostStatus::Found;
                }
                DnsAnswer::TempFail(_) => temp = true,
                _ => {}
            }
        }
        match self.dns.lookup_a(name).await {
            DnsAnswer::Found(_) => return HostStatus::Found,
            DnsAnswer::TempFail(_) => temp = true,
            _ => {}
        }
        match self.dns.lookup_aaaa(name).await {
            DnsAnswer::Found(_) => return HostStatus::Found,
            DnsAnswer::TempFail(_) => temp = true,
            _ => {}
        }
        if !mail_domain {
            match self.dns.lookup_mx(name).await {
                DnsAnswer::Found(_) => return HostStatus::Found,
                DnsAnswer::TempFail(_) => temp = true,
                _ => {}
            }
        }
        if temp {
            HostStatus::TempFail
        } else {
            HostStatus::NotFound
        }
    }

    async fn dnsbl_listed(&self, bl: &Dnsbl, query: &str) -> Listed {
        match self.dns.lookup_a(query).await {
            DnsAnswer::Found(ips) => {
                let hits: Vec<IpAddr> = ips.into_iter().filter(|ip| bl.accepts(*ip)).collect();
                match hits.first() {
                    Some(ip) => Listed::Yes(*ip),
                    None => Listed::No,
                }
            }
            DnsAnswer::TempFail(_) => Listed::TempFail,
            _ => Listed::No,
        }
    }

    /// A DNS block list lookup; listed means a reject with the reply of
    /// `rbl_reply_maps` or `default_rbl_reply`. An unreachable list counts
    /// as not listed, as in Postfix.
    async fn dnsbl(
        &mut self,
        bl: &Dnsbl,
        query: &str,
        class: &str,
        what: &str,
        client: bool,
    ) -> Outcome {
        let Listed::Yes(code_address) = self.dnsbl_listed(bl, query).await else {
            return Outcome::Dunno;
        };
        let reason = match self.dns.lookup_txt(query).await {
            DnsAnswer::Found(txt) => Some(txt.join("; ")),
            _ => None,
        };
        let template = match self.r.rbl_reply_maps.lookup(&bl.spec).await {
            Ok(Some(t)) => t.into_owned(),
            Ok(None) => self.r.codes.default_rbl_reply.clone(),
            Err(e) => return self.lookup_failure(what, &e),
        };
        let vars = RblVars {
            code: self.r.codes.maps_rbl,
            class,
            what,
            domain: &bl.domain,
            reason: reason.as_deref(),
            txt: reason.as_deref(),
            code_address,
            ctx: self.ctx,
            recipient: self.recipient,
        };
        let _ = client;
        let text = vars.expand(&template);
        let text = text.trim();
        let (code, rest) = match text.get(..3).and_then(|c| c.parse::<u16>().ok()) {
            Some(c) if (400..600).contains(&c) => (c, text[3..].trim_start()),
            _ => (self.r.codes.maps_rbl, text),
        };
        let default_dsn = if code / 100 == 4 { "4.7.1" } else { "5.7.1" };
        let (dsn, rest) = split_dsn(rest, default_dsn);
        self.reject(code, dsn, rest)
    }

    /// `check_*_access`.
    async fn check_access(
        &mut self,
        target: AccessTarget,
        maps: &MapList,
        _reply_name: &str,
        _reply_class: &str,
    ) -> Outcome {
        let ctx = self.ctx;
        let parent = self.r.access_parent_matches;
        match target {
            AccessTarget::Client | AccessTarget::ReverseClient => {
                let name = if target == AccessTarget::Client {
                    &ctx.client_name
                } else {
                    &ctx.reverse_name
                };
                let namaddr = format!("{}[{}]", name.as_str(), ctx.client_address);
                let mut key_list = Vec::new();
                if let ClientName::Name(n) = name {
                    key_list.extend(domain_keys(n, parent));
                }
                key_list.push(SearchKey {
                    key: ctx.client_address.to_string(),
                    partial: false,
                });
                key_list.extend(
                    address_prefixes(ctx.client_address)
                        .into_iter()
                        .map(|key| SearchKey { key, partial: true }),
                );
                let class = if target == AccessTarget::Client {
                    "Client host"
                } else {
                    "Unverified Client host"
                };
                self.search_and_act(maps, &key_list, &namaddr, class).await
            }
            AccessTarget::Helo => {
                let Some(helo) = ctx.helo.as_deref() else {
                    return Outcome::Dunno;
                };
                let key_list = domain_keys(helo, parent);
                self.search_and_act(maps, &key_list, helo, "Helo command")
                    .await
            }
            AccessTarget::Sender | AccessTarget::Recipient => {
                let (address, class) = if target == AccessTarget::Sender {
                    (ctx.sender.as_deref(), "Sender address")
                } else {
                    (self.recipient, "Recipient address")
                };
                let Some(address) = address else {
                    return Outcome::Dunno;
                };
                let key_list = self.address_keys(address);
                let outcome = self.search_and_act(maps, &key_list, address, class).await;
                // Postfix's check_mail_access: an OK for a sender-routed
                // recipient is too suspicious to honour.
                if target == AccessTarget::Recipient
                    && matches!(outcome, Outcome::Permit)
                    && !self.r.allow_untrusted_routing
                    && self.resolve_route(address).await.is_ok_and(|r| r.routed)
                {
                    return Outcome::Dunno;
                }
                outcome
            }
        }
    }

    fn address_keys(&self, address: &str) -> Vec<SearchKey> {
        if address.is_empty() {
            return vec![SearchKey {
                key: self.r.null_access_key.clone(),
                partial: false,
            }];
        }
        match address.parse::<MailAddress>() {
            Ok(parsed) => keys(
                &parsed,
                &self.r.delimiter,
                SearchStyle::Access {
                    parent_matches: self.r.access_parent_matches,
                },
            ),
            Err(_) => vec![SearchKey {
                key: address.to_string(),
                partial: false,
            }],
        }
    }

    /// Searches `keys` in order (partial keys skip pattern tables) and
    /// applies the first value found; `DUNNO` stops the search.
    async fn search_and_act(
        &mut self,
        maps: &MapList,
        key_list: &[SearchKey],
        reply_name: &str,
        reply_class: &str,
    ) -> Outcome {
        match maps.search(key_list).await {
            Ok(Some((_, value))) => {
                let value = value.into_owned();
                self.table_result(&value, reply_name, reply_class).await
            }
            Ok(None) => Outcome::Dunno,
            Err(e) => self.lookup_failure(reply_name, &e),
        }
    }

    /// Postfix's `check_table_result`: what an access value does.
    async fn table_result(&mut self, value: &str, reply_name: &str, reply_class: &str) -> Outcome {
        let codes = &self.r.codes;
        let generic = |text: &str, default: &str| {
            let text = if text.is_empty() { default } else { text };
            format!("<{reply_name}>: {reply_class} rejected: {text}")
        };
        let describe = |text: &str, default: &str| {
            let text = if text.is_empty() { default } else { text };
            format!("<{reply_name}>: {reply_class} {text}")
        };
        match AccessAction::parse(value) {
            AccessAction::Ok => Outcome::Permit,
            AccessAction::Dunno => Outcome::Dunno,
            AccessAction::Reject(text) => {
                let (dsn, text) = split_dsn(&text, "5.7.1");
                let code = codes.access_map_reject;
                self.reject(code, dsn, &generic(text, "Access denied"))
            }
            AccessAction::Defer(text) => {
                let (dsn, text) = split_dsn(&text, "4.7.1");
                let code = codes.access_map_defer;
                self.reject(code, dsn, &generic(text, "Access denied"))
            }
            AccessAction::DeferIfReject(text) => {
                let (dsn, text) = split_dsn(&text, "4.7.1");
                let code = codes.access_map_defer;
                let t = generic(text, "Service unavailable");
                self.set_defer_if_reject(code, dsn, &t);
                Outcome::Dunno
            }
            AccessAction::DeferIfPermit(text) => {
                let (dsn, text) = split_dsn(&text, "4.7.1");
                let code = codes.access_map_defer;
                let t = generic(text, "Service unavailable");
                self.set_defer_if_permit(code, dsn, &t);
                Outcome::Dunno
            }
            AccessAction::Code { code, text } => {
                let default = if code / 100 == 4 { "4.7.1" } else { "5.7.1" };
                let (dsn, text) = split_dsn(&text, default);
                self.reject(code, dsn, &generic(text, "Access denied"))
            }
            AccessAction::Hold(text) => {
                let line = describe(&text, "triggers HOLD action");
                self.log_event("hold", &line);
                self.actions.push(MessageAction::Hold(text));
                Outcome::Dunno
            }
            AccessAction::Discard(text) => {
                let line = describe(&text, "triggers DISCARD action");
                self.log_event("discard", &line);
                self.actions.push(MessageAction::Discard(text));
                Outcome::Permit
            }
            AccessAction::Filter(dest) => {
                if !dest.contains(':') {
                    return self.config_error(&format!(
                        "access table FILTER action without transport:destination: {value}"
                    ));
                }
                let line = describe(&format!("triggers FILTER {dest}"), "");
                self.log_event("filter", &line);
                self.actions.push(MessageAction::Filter(dest));
                Outcome::Dunno
            }
            AccessAction::Redirect(addr) => {
                let line = describe(&format!("triggers REDIRECT {addr}"), "");
                self.log_event("redirect", &line);
                self.actions.push(MessageAction::Redirect(addr));
                Outcome::Dunno
            }
            AccessAction::Prepend(header) => {
                self.actions.push(MessageAction::Prepend(header));
                Outcome::Dunno
            }
            AccessAction::Bcc(addr) => {
                self.actions.push(MessageAction::Bcc(addr));
                Outcome::Dunno
            }
            AccessAction::Warn(text) => {
                // Postfix logs the text alone, even when empty.
                self.log_event("warn", &text);
                Outcome::Dunno
            }
            AccessAction::Info(text) => {
                self.log_event("info", &text);
                Outcome::Dunno
            }
            AccessAction::Restrictions(words) => {
                let classes: Vec<String> = self.r.classes.keys().cloned().collect();
                match parse_words(&words, &classes, None, "access table result") {
                    Ok(list) => {
                        // The list lives only for this evaluation.
                        let list: &RestrictionList = Box::leak(Box::new(list));
                        self.generic(list, reply_name, reply_class).await
                    }
                    Err(why) => self.config_error(&why),
                }
            }
        }
    }

    /// `check_{sender,recipient,helo}_{mx,ns}_access`: the names and
    /// addresses of the domain's MX (or NS) hosts, each searched as a
    /// client would be.
    async fn check_server_access(
        &mut self,
        target: AccessTarget,
        kind: ServerKind,
        maps: &MapList,
    ) -> Outcome {
        let ctx = self.ctx;
        let (reply_name, class, domain) = match target {
            AccessTarget::Sender => match ctx.sender.as_deref() {
                Some(s) => (s.to_string(), "Sender address", address_domain(s)),
                None => return Outcome::Dunno,
            },
            AccessTarget::Recipient => match self.recipient {
                Some(r) => (r.to_string(), "Recipient address", address_domain(r)),
                None => return Outcome::Dunno,
            },
            _ => match ctx.helo.as_deref() {
                Some(h) => (h.to_string(), "Helo command", Some(h)),
                None => return Outcome::Dunno,
            },
        };
        let Some(domain) = domain.filter(|d| !d.starts_with('[')) else {
            return Outcome::Dunno;
        };
        let (answer, label) = match kind {
            ServerKind::Mx => (self.dns.lookup_mx(domain).await.map(|m| m.exchange), "MX"),
            ServerKind::Ns => (self.dns.lookup_ns(domain).await, "NS"),
        };
        let hosts: Vec<String> = match answer {
            DnsAnswer::Found(h) => h
                .into_iter()
                .filter(|h| h != "." && !h.is_empty())
                .collect(),
            DnsAnswer::TempFail(_) => {
                self.set_defer_if_reject(
                    450,
                    "4.4.3",
                    &format!(
                        "<{reply_name}>: {class} rejected: unable to look up {label} host for {domain}"
                    ),
                );
                return Outcome::Dunno;
            }
            // No MX: the domain itself is its mail host. No NS: nothing.
            _ if kind == ServerKind::Mx => vec![domain.to_string()],
            _ => return Outcome::Dunno,
        };
        let parent = self.r.access_parent_matches;
        for host in hosts {
            let mut key_list = domain_keys(&host, parent);
            let hits = self.addresses(&host).await;
            for ip in hits {
                key_list.push(SearchKey {
                    key: ip.to_string(),
                    partial: false,
                });
                key_list.extend(
                    address_prefixes(ip)
                        .into_iter()
                        .map(|key| SearchKey { key, partial: true }),
                );
            }
            match maps.search(&key_list).await {
                Ok(Some((_, value))) => {
                    let value = value.into_owned();
                    match self.table_result(&value, &reply_name, class).await {
                        Outcome::Dunno => continue,
                        other => return other,
                    }
                }
                Ok(None) => {}
                Err(e) => return self.lookup_failure(&reply_name, &e),
            }
        }
        Outcome::Dunno
    }

    /// `reject_unlisted_*` and `smtpd_reject_unlisted_recipient`: the
    /// address must be known in its domain's recipient table.
    async fn check_rcpt_maps(&mut self, address: &str, class: &str) -> Outcome {
        let r = self.r;
        let codes = &r.codes;
        let sender = class == "Sender address";
        let dsn = if sender { "5.1.0" } else { "5.1.1" };
        let mut domain = match address_domain(address) {
            Some(d) => d.to_string(),
            None => r.rewrite.myorigin.as_str().to_string(),
        };
        let mut full = if address.contains('@') {
            address.to_string()
        } else {
            format!("{address}@{domain}")
        };
        // As trivial-rewrite resolves it: `user%elsewhere@ourhost` is
        // `user@elsewhere`, whose domain decides which table applies.
        let route = match self.resolve_route(address).await {
            Ok(route) => route,
            Err(e) => return self.lookup_failure(address, &e),
        };
        if !route.domain.eq_ignore_ascii_case(&domain) {
            let resolved = mta_core::address::LocalPart::new(route.local.clone())
                .ok()
                .and_then(|l| {
                    let d = route.domain.parse().ok()?;
                    MailAddress::new(l, Some(d)).ok()
                });
            if let Some(a) = resolved {
                full = a.to_string();
                domain = route.domain.to_ascii_lowercase();
            }
        }
        let parsed: Option<MailAddress> = full.parse().ok();
        let virtual_keys = |local: bool| -> Vec<SearchKey> {
            match &parsed {
                Some(a) => keys(
                    a,
                    &r.delimiter,
                    SearchStyle::Virtual {
                        local_domain: local,
                    },
                ),
                None => vec![SearchKey {
                    key: full.clone(),
                    partial: false,
                }],
            }
        };
        macro_rules! lookup {
            ($maps:expr, $keys:expr) => {
                match $maps.search(&$keys).await {
                    Ok(found) => found.is_some(),
                    Err(e) => return self.lookup_failure(address, &e),
                }
            };
        }
        if !sender && !r.relocated_maps.is_empty() {
            let k = self.address_keys(&full);
            match r.relocated_maps.search(&k).await {
                Ok(Some((_, new))) => {
                    let new = new.into_owned();
                    return self.reject(
                        550,
                        "5.1.6",
                        &format!("<{address}>: {class} rejected: User has moved to {new}"),
                    );
                }
                Ok(None) => {}
                Err(e) => return self.lookup_failure(address, &e),
            }
        }
        let table = |name: &'static str| -> &'static str {
            if codes.show_user_unknown_table_name {
                name
            } else {
                ""
            }
        };
        let unknown = |suffix: &str| format!("<{address}>: {class} rejected: User unknown{suffix}");
        let local = match self.local_domain(&domain).await {
            Ok(l) => l,
            Err(e) => return self.lookup_failure(address, &e),
        };
        if local {
            let Some(maps) = &r.local_recipient_maps else {
                return Outcome::Dunno;
            };
            let vk = virtual_keys(true);
            if lookup!(r.virtual_alias_maps, vk) || lookup!(maps, vk) {
                return Outcome::Dunno;
            }
            return self.reject(
                codes.unknown_local_recipient,
                dsn,
                &unknown(table(" in local recipient table")),
            );
        }
        let vk = virtual_keys(false);
        let in_alias_domain = match r.virtual_alias_domains.contains(&domain).await {
            Ok(v) => v,
            Err(e) => return self.lookup_failure(address, &e),
        };
        if in_alias_domain {
            if lookup!(r.virtual_alias_maps, vk) {
                return Outcome::Dunno;
            }
            return self.reject(
                codes.unknown_virtual_alias,
                dsn,
                &unknown(table(" in virtual alias table")),
            );
        }
        let in_mailbox_domain = match r.virtual_mailbox_domains.contains(&domain).await {
            Ok(v) => v,
            Err(e) => return self.lookup_failure(address, &e),
        };
        if in_mailbox_domain {
            if lookup!(r.virtual_alias_maps, vk) || lookup!(r.virtual_mailbox_maps, vk) {
                return Outcome::Dunno;
            }
            return self.reject(
                codes.unknown_virtual_mailbox,
                dsn,
                &unknown(table(" in virtual mailbox table")),
            );
        }
        let in_relay = match r.relay_domains.contains(&domain).await {
            Ok(v) => v,
            Err(e) => return self.lookup_failure(address, &e),
        };
        if in_relay && !r.relay_recipient_maps.is_empty() {
            if lookup!(r.virtual_alias_maps, vk) || lookup!(r.relay_recipient_maps, vk) {
                return Outcome::Dunno;
            }
            return self.reject(
                codes.unknown_relay_recipient,
                dsn,
                &unknown(table(" in relay recipient table")),
            );
        }
        Outcome::Dunno
    }

    /// Runs the lists of `stage`.
    async fn run(&mut self, stage: Stage) -> Option<Reply> {
        let r = self.r;
        let ctx = self.ctx;
        let namaddr = ctx.namaddr();
        let helo = ctx.helo.clone().unwrap_or_default();
        let sender = ctx.sender.clone().unwrap_or_default();
        match stage {
            Stage::Connect | Stage::Helo | Stage::Mail => {
                if r.delay_reject {
                    return None;
                }
                let out = match stage {
                    Stage::Connect => self.stage_list(&r.client, &namaddr, "Client host").await,
                    Stage::Helo if ctx.helo.is_some() => {
                        self.stage_list(&r.helo, &helo, "Helo command").await
                    }
                    Stage::Mail if ctx.sender.is_some() => {
                        let out = self.stage_list(&r.sender, &sender, "Sender address").await;
                        match out {
                            Outcome::Reject(_) => out,
                            _ if r.reject_unlisted_sender && !sender.is_empty() => {
                                self.check_rcpt_maps(&sender, "Sender address").await
                            }
                            _ => out,
                        }
                    }
                    _ => Outcome::Dunno,
                };
                match out {
                    Outcome::Reject(reply) => Some(reply),
                    _ => None,
                }
            }
            Stage::Rcpt | Stage::Data | Stage::EndOfData | Stage::Etrn => {
                // The earlier lists: for real at RCPT and ETRN with
                // delay_reject, otherwise replayed quietly for the
                // defer_if_permit they leave.
                let real = r.delay_reject && matches!(stage, Stage::Rcpt | Stage::Etrn);
                self.quiet = !real;
                let mut carried: Deferral = None;
                let earlier = [
                    (&r.client, namaddr.clone(), "Client host", true),
                    (&r.helo, helo.clone(), "Helo command", ctx.helo.is_some()),
                    (
                        &r.sender,
                        sender.clone(),
                        "Sender address",
                        ctx.sender.is_some() && stage != Stage::Etrn,
                    ),
                ];
                for (list, name, class, applies) in earlier {
                    if !applies {
                        continue;
                    }
                    self.defer_if_permit = carried.take();
                    let out = self.stage_list(list, &name, class).await;
                    carried = self.defer_if_permit.take();
                    if let Outcome::Reject(reply) = out
                        && real
                    {
                        return Some(reply);
                    }
                }
                if real
                    && stage == Stage::Rcpt
                    && r.reject_unlisted_sender
                    && !sender.is_empty()
                    && let Outcome::Reject(reply) =
                        self.check_rcpt_maps(&sender, "Sender address").await
                {
                    return Some(reply);
                }
                self.quiet = false;
                self.defer_if_permit = carried;
                let mut status = Outcome::Dunno;
                match stage {
                    Stage::Rcpt => {
                        let rcpt = ctx.recipient.clone().unwrap_or_default();
                        for list in [&r.relay, &r.recipient] {
                            status = self.stage_list(list, &rcpt, "Recipient address").await;
                            if matches!(status, Outcome::Reject(_)) {
                                break;
                            }
                        }
                        if !matches!(status, Outcome::Reject(_)) && r.reject_unlisted_recipient {
                            self.warn_if_reject = false;
                            self.defer_if_reject = None;
                            if let Outcome::Reject(reply) =
                                self.check_rcpt_maps(&rcpt, "Recipient address").await
                            {
                                status = Outcome::Reject(reply);
                            }
                        }
                    }
                    Stage::Data => {
                        status = self.stage_list(&r.data, "DATA", "Data command").await;
                    }
                    Stage::EndOfData => {
                        status = self
                            .stage_list(&r.end_of_data, "END-OF-MESSAGE", "End-of-data")
                            .await;
                    }
                    _ => {
                        let domain = ctx.etrn_domain.clone().unwrap_or_default();
                        status = self.stage_list(&r.etrn, &domain, "Etrn command").await;
                    }
                }
                match status {
                    Outcome::Reject(reply) => Some(reply),
                    _ => {
                        let deferred = self.defer_if_permit.take()?;
                        // Postfix reports the earlier problem through
                        // smtpd_check_reject, which logs it.
                        self.warn_if_reject = false;
                        self.defer_if_reject = None;
                        let text = deferred.lines().join(" ");
                        let dsn = deferred
                            .status()
                            .map(|s| s.to_string())
                            .unwrap_or_else(|| "4.7.1".to_string());
                        match self.reject(deferred.code().get(), &dsn, &text) {
                            Outcome::Reject(reply) => Some(reply),
                            _ => None,
                        }
                    }
                }
            }
        }
    }
}

/// The answer to a host or mail domain existence check.
enum HostStatus {
    Found,
    NullMx,
    NotFound,
    TempFail,
}

/// Whether a DNS list lists a name.
enum Listed {
    Yes(IpAddr),
    No,
    TempFail,
}

/// The variables of an RBL reply template (`default_rbl_reply`,
/// `rbl_reply_maps`).
struct RblVars<'v> {
    code: u16,
    class: &'v str,
    what: &'v str,
    domain: &'v str,
    reason: Option<&'v str>,
    txt: Option<&'v str>,
    code_address: IpAddr,
    ctx: &'v SmtpContext,
    recipient: Option<&'v str>,
}

impl RblVars<'_> {
    fn value(&self, name: &str) -> Option<String> {
        let ctx = self.ctx;
        Some(match name {
            "rbl_code" => self.code.to_string(),
            "rbl_class" => self.class.to_string(),
            "rbl_what" => self.what.to_string(),
            "rbl_domain" => self.domain.to_string(),
            "rbl_reason" => return self.reason.map(str::to_string),
            "rbl_txt" => return self.txt.map(str::to_string),
            "rbl_code_address" | "rbl_code_ip" => self.code_address.to_string(),
            "client_address" => ctx.client_address.to_string(),
            "client_name" => ctx.client_name.as_str().to_string(),
            "reverse_client_name" => ctx.reverse_name.as_str().to_string(),
            "helo_name" => return ctx.helo.clone(),
            "sender" => return ctx.sender.clone().filter(|s| !s.is_empty()),
            "sender_name" => {
                return ctx
                    .sender
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .map(|s| s.rsplit_once('@').map_or(s, |(l, _)| l).to_string());
            }
            "sender_domain" => {
                return ctx
                    .sender
                    .as_deref()
                    .and_then(address_domain)
                    .map(str::to_string);
            }
            "recipient" => return self.recipient.map(str::to_string),
            "recipient_name" => {
                return self
                    .recipient
                    .map(|s| s.rsplit_once('@').map_or(s, |(l, _)| l).to_string());
            }
            "recipient_domain" => {
                return self.recipient.and_then(address_domain).map(str::to_string);
            }
            _ => return None,
        })
    }

    /// Expands `$name`, `${name}`, `${name?text}` and `${name:text}`
    /// (text itself expanded), and `$$`.
    fn expand(&self, template: &str) -> String {
        let mut out = String::new();
        let mut rest = template;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            if let Some(r) = rest.strip_prefix('$') {
                out.push('$');
                rest = r;
            } else if let Some(r) = rest.strip_prefix('{') {
                let mut depth = 1;
                let mut end = None;
                for (j, c) in r.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = Some(j);
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let Some(end) = end else {
                    out.push_str("${");
                    rest = r;
                    continue;
                };
                let inner = &r[..end];
                rest = &r[end + 1..];
                let split = inner.find(['?', ':']);
                match split {
                    Some(k) => {
                        let name = &inner[..k];
                        let text = &inner[k + 1..];
                        let set = self.value(name).is_some_and(|v| !v.is_empty());
                        if (inner.as_bytes()[k] == b'?') == set {
                            out.push_str(&self.expand(text));
                        }
                    }
                    None => out.push_str(&self.value(inner).unwrap_or_default()),
                }
            } else {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                out.push_str(&self.value(&rest[..end]).unwrap_or_default());
                rest = &rest[end..];
            }
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert!(valid_hostname("mail.example.com"));
        assert!(valid_hostname("a_b.example"));
        assert!(valid_hostname("localhost"));
        assert!(!valid_hostname("1.2.3.4"));
        assert!(!valid_hostname("-a.example"));
        assert!(!valid_hostname("a..b"));
        assert!(!valid_hostname("a b"));
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            address_prefixes("192.0.2.1".parse().unwrap()),
            ["192.0.2", "192.0", "192"]
        );
        assert_eq!(
            address_prefixes("2001:db8::1".parse().unwrap()),
            ["2001:db8", "2001"]
        );
    }

    #[test]
    fn filters() {
        let bl = Dnsbl::parse("zen.example=127.0.0.[2..4;10]").unwrap();
        assert!(bl.accepts("127.0.0.3".parse().unwrap()));
        assert!(bl.accepts("127.0.0.10".parse().unwrap()));
        assert!(!bl.accepts("127.0.0.5".parse().unwrap()));
        assert!(Dnsbl::parse("x=1.2").is_none());
    }

    #[test]
    fn networks() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_network(ip("10.1.2.3"), ip("10.0.0.0"), 8));
        assert!(!in_network(ip("11.1.2.3"), ip("10.0.0.0"), 8));
        assert!(in_network(ip("::ffff:10.1.2.3"), ip("10.0.0.0"), 8));
        assert!(in_network(ip("2001:db8::1"), ip("2001:db8::"), 32));
        assert!(in_network(ip("1.2.3.4"), ip("0.0.0.0"), 0));
    }

    #[test]
    fn dsn_class_follows_code() {
        assert_eq!(make_reply(450, "5.7.1", "x").to_string(), "450 4.7.1 x");
        assert_eq!(make_reply(554, "4.7.25", "x").to_string(), "554 5.7.25 x");
    }
}

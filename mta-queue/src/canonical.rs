//! Canonical address mapping and masquerading: cleanup's rewriting of
//! envelope and header addresses, as Postfix's `cleanup(8)` applies
//! `canonical_maps`, `sender_canonical_maps`, `recipient_canonical_maps`
//! and `masquerade_domains` before a message is queued.
//!
//! # What it does
//!
//! Each address is rewritten in canonical(5)'s order:
//!
//! 1. `sender_canonical_maps` (for sender addresses) or
//!    `recipient_canonical_maps` (for recipient addresses), then
//!    `canonical_maps`, each only for the classes its `*_classes`
//!    parameter lists (`envelope_sender`, `envelope_recipient`,
//!    `header_sender`, `header_recipient`). A table is searched as
//!    virtual(5) and canonical(5) say: `user+ext@domain`, `user@domain`,
//!    then for a local domain `user+ext` and `user`, then `@domain`; the
//!    result replaces the address (a result `@otherdomain` means the same
//!    user there, one without a domain gets `@$myorigin`), an extension
//!    the key did not match is
//!    carried over (`propagate_unmatched_extensions` with `canonical`,
//!    the default), and the result is looked up again until it stops
//!    changing (at most ten times, as a loop guard);
//! 2. `masquerade_domains` for the classes of `masquerade_classes`
//!    (default: all but `envelope_recipient`): `user@host.example.com`
//!    becomes `user@example.com` when `example.com` is listed; a
//!    `!sub.example.com` entry before it keeps that domain and its
//!    subdomains as they are; users in `masquerade_exceptions` are never
//!    masqueraded.
//!
//! Headers are rewritten (by [`Canonical::rewrite_header`]) only when
//! cleanup's caller says so, as Postfix limits header rewriting to local
//! submissions and clients in `local_header_rewrite_clients`; they are
//! rewritten in place: in `From:`, `Sender:`, `Reply-To:`,
//! `Errors-To:`, `Return-Receipt-To:` and their `Resent-` forms (sender
//! headers) and `To:`, `Cc:`, `Bcc:`, `Apparently-To:` and their
//! `Resent-` forms (recipient headers), only the address of each mailbox
//! changes; display names, comments and folding stay.
//!
//! # What it does not do
//!
//! It does not complete addresses (trivial-rewrite's `@$myorigin`): the
//! caller does that first for local submissions. A table that cannot
//! answer now (a network table still waiting) is an error: the message
//! is not queued and the client is asked to try again.
//!
//! # Example
//!
//! ```
//! use mta_core::address::RecipientDelimiter;
//! use mta_maps::registry::{OpenContext, Registry};
//! use mta_queue::canonical::{Canonical, Role};
//!
//! let registry = Registry::new(OpenContext::default());
//! let mut c = Canonical::new(RecipientDelimiter::new("+"), "example.com");
//! c.sender = registry.open_list("inline:{ alice@example.com=Alice.Liddell@example.com }").unwrap();
//! c.masquerade_domains = vec!["example.com".into()];
//! assert_eq!(c.map("alice@example.com", Role::EnvelopeSender)?, "Alice.Liddell@example.com");
//! assert_eq!(c.map("bob@mail.example.com", Role::HeaderSender)?, "bob@example.com");
//! // Envelope recipients are not masqueraded by default.
//! assert_eq!(c.map("bob@mail.example.com", Role::EnvelopeRecipient)?, "bob@mail.example.com");
//! assert_eq!(
//!     c.rewrite_header("From: Bob <bob@mail.example.com> (office)")?.as_deref(),
//!     Some("From: Bob <bob@example.com> (office)")
//! );
//! # Ok::<(), mta_queue::canonical::CanonicalError>(())
//! ```

use mta_core::address::{MailAddress, ParseOptions, RecipientDelimiter, Strictness};
use mta_maps::domains::DomainMatcher;
use mta_maps::list::MapList;
use mta_maps::search::{SearchStyle, keys};

/// The kind of address being rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `MAIL FROM`.
    EnvelopeSender,
    /// `RCPT TO`.
    EnvelopeRecipient,
    /// An address in a sender header (`From:`...).
    HeaderSender,
    /// An address in a recipient header (`To:`...).
    HeaderRecipient,
}

impl Role {
    fn is_sender(self) -> bool {
        matches!(self, Role::EnvelopeSender | Role::HeaderSender)
    }
}

/// A set of address classes (`canonical_classes` and the like).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classes {
    /// `envelope_sender`.
    pub envelope_sender: bool,
    /// `envelope_recipient`.
    pub envelope_recipient: bool,
    /// `header_sender`.
    pub header_sender: bool,
    /// `header_recipient`.
    pub header_recipient: bool,
}

impl Classes {
    /// All four.
    pub const ALL: Classes = Classes {
        envelope_sender: true,
        envelope_recipient: true,
        header_sender: true,
        header_recipient: true,
    };

    /// The classes a list value names.
    ///
    /// # Errors
    ///
    /// An unknown class name.
    pub fn parse(names: &[String]) -> Result<Classes, String> {
        let mut c = Classes {
            envelope_sender: false,
            envelope_recipient: false,
            header_sender: false,
            header_recipient: false,
        };
        for n in names {
            match n.to_ascii_lowercase().as_str() {
                "envelope_sender" => c.envelope_sender = true,
                "envelope_recipient" => c.envelope_recipient = true,
                "header_sender" => c.header_sender = true,
                "header_recipient" => c.header_recipient = true,
                other => return Err(format!("unknown address class \"{other}\"")),
            }
        }
        Ok(c)
    }

    fn has(self, role: Role) -> bool {
        match role {
            Role::EnvelopeSender => self.envelope_sender,
            Role::EnvelopeRecipient => self.envelope_recipient,
            Role::HeaderSender => self.header_sender,
            Role::HeaderRecipient => self.header_recipient,
        }
    }
}

/// A table that could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{table} lookup for {address}: {reason}")]
pub struct CanonicalError {
    /// The parameter of the table.
    pub table: &'static str,
    /// The address looked up.
    pub address: String,
    /// The table's error.
    pub reason: String,
}

/// The mapping and masquerading settings. See the module documentation.
#[derive(Debug, Clone)]
pub struct Canonical {
    /// `canonical_maps`.
    pub both: MapList,
    /// `sender_canonical_maps`.
    pub sender: MapList,
    /// `recipient_canonical_maps`.
    pub recipient: MapList,
    /// `canonical_classes`.
    pub both_classes: Classes,
    /// `sender_canonical_classes`.
    pub sender_classes: Classes,
    /// `recipient_canonical_classes`.
    pub recipient_classes: Classes,
    /// `masquerade_domains`, in order, lower-cased (`!` entries kept).
    pub masquerade_domains: Vec<String>,
    /// `masquerade_exceptions`: local parts never masqueraded.
    pub masquerade_exceptions: Vec<String>,
    /// `masquerade_classes`.
    pub masquerade_classes: Classes,
    /// `recipient_delimiter`.
    pub delimiter: RecipientDelimiter,
    /// `mydestination`, which with `myorigin` makes a domain local.
    pub mydestination: DomainMatcher,
    /// `myorigin`.
    pub myorigin: String,
    /// `propagate_unmatched_extensions` lists `canonical`.
    pub propagate_extensions: bool,
    /// `header_address_token_limit`.
    pub token_limit: usize,
}

/// The headers whose addresses are sender addresses.
const SENDER_HEADERS: &[&str] = &[
    "from",
    "sender",
    "reply-to",
    "errors-to",
    "return-receipt-to",
    "resent-from",
    "resent-sender",
    "resent-reply-to",
];

/// The headers whose addresses are recipient addresses.
const RECIPIENT_HEADERS: &[&str] = &[
    "to",
    "cc",
    "bcc",
    "apparently-to",
    "resent-to",
    "resent-cc",
    "resent-bcc",
];

fn lenient() -> ParseOptions {
    ParseOptions {
        strictness: Strictness::Lenient,
        smtputf8: true,
    }
}

impl Canonical {
    /// No tables, no masquerading, Postfix's default classes.
    pub fn new(delimiter: RecipientDelimiter, myorigin: &str) -> Canonical {
        Canonical {
            both: MapList::default(),
            sender: MapList::default(),
            recipient: MapList::default(),
            both_classes: Classes::ALL,
            sender_classes: Classes::ALL,
            recipient_classes: Classes::ALL,
            masquerade_domains: Vec::new(),
            masquerade_exceptions: Vec::new(),
            masquerade_classes: Classes {
                envelope_recipient: false,
                ..Classes::ALL
            },
            delimiter,
            mydestination: DomainMatcher::default(),
            myorigin: myorigin.to_ascii_lowercase(),
            propagate_extensions: true,
            token_limit: 10240,
        }
    }

    /// The settings of `config`, tables opened through `registry`.
    ///
    /// # Errors
    ///
    /// A bad parameter or a table that cannot be opened, located at the
    /// parameter.
    pub fn from_config(
        config: &mta_core::config::Config,
        registry: &mta_maps::registry::Registry,
    ) -> Result<Canonical, mta_core::config::ConfigError> {
        let table = |name: &str| -> Result<MapList, mta_core::config::ConfigError> {
            let value = config.expanded(name)?;
            registry
                .open_list(&value)
                .map_err(|e| config.bad_value(name, &value, e.to_string()))
        };
        let classes = |name: &str| -> Result<Classes, mta_core::config::ConfigError> {
            let list = config.list(name)?;
            Classes::parse(&list).map_err(|e| config.bad_value(name, &list.join(", "), e))
        };
        let rewrite = mta_core::address_class::RewriteConfig::from_config(config)?;
        let lower = |name: &str| -> Result<Vec<String>, mta_core::config::ConfigError> {
            Ok(config
                .list(name)?
                .into_iter()
                .map(|d| d.to_ascii_lowercase())
                .collect())
        };
        Ok(Canonical {
            both: table("canonical_maps")?,
            sender: table("sender_canonical_maps")?,
            recipient: table("recipient_canonical_maps")?,
            both_classes: classes("canonical_classes")?,
            sender_classes: classes("sender_canonical_classes")?,
            recipient_classes: classes("recipient_canonical_classes")?,
            masquerade_domains: lower("masquerade_domains")?,
            masquerade_exceptions: lower("masquerade_exceptions")?,
            masquerade_classes: classes("masquerade_classes")?,
            delimiter: RecipientDelimiter::new(&config.expanded("recipient_delimiter")?),
            mydestination: DomainMatcher::from_config(config, registry, &rewrite, "mydestination")?,
            myorigin: config.expanded("myorigin")?.to_ascii_lowercase(),
            propagate_extensions: config
                .list("propagate_unmatched_extensions")?
                .iter()
                .any(|v| v.eq_ignore_ascii_case("canonical")),
            token_limit: usize::try_from(config.integer("header_address_token_limit")?.max(1))
                .unwrap_or(10240),
        })
    }

    /// Whether nothing is ever rewritten (no tables, no masquerading).
    pub fn is_noop(&self) -> bool {
        self.both.is_empty()
            && self.sender.is_empty()
            && self.recipient.is_empty()
            && self.masquerade_domains.is_empty()
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

    /// One lookup in `maps`: the replacement, or `None`.
    fn lookup_once(
        &self,
        maps: &MapList,
        table: &'static str,
        address: &str,
    ) -> Result<Option<String>, CanonicalError> {
        let Ok(parsed) = MailAddress::parse(address, lenient()) else {
            return Ok(None);
        };
        let search = keys(
            &parsed,
            &self.delimiter,
            SearchStyle::Virtual {
                local_domain: self.is_local(&parsed),
            },
        );
        let found = maps.search_now(&search).map_err(|e| CanonicalError {
            table,
            address: address.to_owned(),
            reason: e.to_string(),
        })?;
        let Some((key, value)) = found else {
            return Ok(None);
        };
        let Some(first) = value.split([',', ' ', '\t']).find(|t| !t.is_empty()) else {
            return Ok(None);
        };
        let target = crate::virtual_alias::result_address(first, 0, &parsed, &self.myorigin);
        let target = target.as_str();
        let carry =
            self.propagate_extensions && key.key != search[0].key && !key.key.starts_with('@');
        Ok(Some(match (parsed.extension(&self.delimiter), carry) {
            (Some(ext), true) => crate::virtual_alias::with_extension(
                target,
                &ext.delimiter.to_string(),
                ext.extension,
                &self.delimiter,
            ),
            _ => target.to_owned(),
        }))
    }

    /// `maps` applied until the address stops changing.
    fn apply_table(
        &self,
        maps: &MapList,
        table: &'static str,
        address: String,
    ) -> Result<String, CanonicalError> {
        let mut current = address;
        for _ in 0..10 {
            match self.lookup_once(maps, table, &current)? {
                Some(next) if !next.eq_ignore_ascii_case(&current) => current = next,
                _ => break,
            }
        }
        Ok(current)
    }

    /// `address` masqueraded, when its class and domain say so.
    fn masquerade(&self, address: &str) -> String {
        let Some((local, domain)) = address.rsplit_once('@') else {
            return address.to_owned();
        };
        let lower_local = local.to_ascii_lowercase();
        let bare_local = mta_core::address::LocalPart::new(lower_local.clone())
            .ok()
            .and_then(|l| {
                l.split_extension(&self.delimiter)
                    .map(|e| e.base.to_owned())
            })
            .unwrap_or_else(|| lower_local.clone());
        if self
            .masquerade_exceptions
            .iter()
            .any(|e| *e == lower_local || *e == bare_local)
        {
            return address.to_owned();
        }
        let d = domain.to_ascii_lowercase();
        for entry in &self.masquerade_domains {
            let (exclude, m) = match entry.strip_prefix('!') {
                Some(m) => (true, m),
                None => (false, entry.as_str()),
            };
            if d == m {
                // The address is already in (or kept at) this domain.
                return address.to_owned();
            }
            if d.ends_with(&format!(".{m}")) {
                return if exclude {
                    address.to_owned()
                } else {
                    format!("{local}@{m}")
                };
            }
        }
        address.to_owned()
    }

    /// `address` rewritten for `role`. The null sender stays empty.
    ///
    /// # Errors
    ///
    /// A table that could not answer.
    pub fn map(&self, address: &str, role: Role) -> Result<String, CanonicalError> {
        if address.is_empty() {
            return Ok(String::new());
        }
        let mut a = address.to_owned();
        let (own, own_classes, own_name) = if role.is_sender() {
            (&self.sender, self.sender_classes, "sender_canonical_maps")
        } else {
            (
                &self.recipient,
                self.recipient_classes,
                "recipient_canonical_maps",
            )
        };
        if !own.is_empty() && own_classes.has(role) {
            a = self.apply_table(own, own_name, a)?;
        }
        if !self.both.is_empty() && self.both_classes.has(role) {
            a = self.apply_table(&self.both, "canonical_maps", a)?;
        }
        if !self.masquerade_domains.is_empty() && self.masquerade_classes.has(role) {
            a = self.masquerade(&a);
        }
        Ok(a)
    }

    /// The header line `header` (`Name: value`, possibly folded) with its
    /// addresses rewritten, or `None` when it is not an address header or
    /// nothing changes.
    ///
    /// # Errors
    ///
    /// A table that could not answer.
    pub fn rewrite_header(&self, header: &str) -> Result<Option<String>, CanonicalError> {
        let Some(colon) = header.find(':') else {
            return Ok(None);
        };
        let name = header[..colon].trim().to_ascii_lowercase();
        let role = if SENDER_HEADERS.contains(&name.as_str()) {
            Role::HeaderSender
        } else if RECIPIENT_HEADERS.contains(&name.as_str()) {
            Role::HeaderRecipient
        } else {
            return Ok(None);
        };
        let value = &header[colon + 1..];
        let mut out = String::with_capacity(header.len());
        out.push_str(&header[..=colon]);
        let mut last = 0;
        let mut changed = false;
        for (address, span) in mta_core::header::address_spans(value, self.token_limit) {
            let new = self.map(&address, role)?;
            out.push_str(&value[last..span.start]);
            if new == address {
                out.push_str(&value[span.clone()]);
            } else {
                out.push_str(&new);
                changed = true;
            }
            last = span.end;
        }
        out.push_str(&value[last..]);
        Ok(changed.then_some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mta_maps::registry::{OpenContext, Registry};

    fn canonical(both: &str, sender: &str, recipient: &str) -> Canonical {
        let r = Registry::new(OpenContext::default());
        let mut c = Canonical::new(RecipientDelimiter::new("+"), "example.com");
        let open = |v: &str| {
            if v.is_empty() {
                MapList::default()
            } else {
                r.open_list(v).unwrap()
            }
        };
        c.both = open(both);
        c.sender = open(sender);
        c.recipient = open(recipient);
        c
    }

    #[test]
    fn the_lookup_order_and_the_tables_per_role() {
        let c = canonical(
            "inline:{ {@old.example=@example.com}, {joe=joseph@example.com} }",
            "inline:{ alice@example.com=a.liddell@example.com }",
            "inline:{ rcpt@example.com=recipient@example.org }",
        );
        assert_eq!(
            c.map("alice@example.com", Role::EnvelopeSender).unwrap(),
            "a.liddell@example.com"
        );
        assert_eq!(
            c.map("alice@example.com", Role::EnvelopeRecipient).unwrap(),
            "alice@example.com"
        );
        assert_eq!(
            c.map("rcpt@example.com", Role::HeaderRecipient).unwrap(),
            "recipient@example.org"
        );
        assert_eq!(
            c.map("rcpt@example.com", Role::HeaderSender).unwrap(),
            "rcpt@example.com"
        );
        // A result @otherdomain: the same user in that domain.
        assert_eq!(
            c.map("x@old.example", Role::EnvelopeRecipient).unwrap(),
            "x@example.com"
        );
        // A bare user key only for a local domain; the extension carries.
        assert_eq!(
            c.map("joe+work@example.com", Role::EnvelopeSender).unwrap(),
            "joseph+work@example.com"
        );
        assert_eq!(
            c.map("joe@example.net", Role::EnvelopeSender).unwrap(),
            "joe@example.net"
        );
        assert_eq!(c.map("", Role::EnvelopeSender).unwrap(), "");
    }

    #[test]
    fn mapping_repeats_until_stable_and_stops_on_loops() {
        let c = canonical(
            "inline:{ a@example.com=b@example.com, b@example.com=c@example.com }",
            "",
            "",
        );
        assert_eq!(
            c.map("a@example.com", Role::EnvelopeSender).unwrap(),
            "c@example.com"
        );
        let looping = canonical(
            "inline:{ a@example.com=b@example.com, b@example.com=a@example.com }",
            "",
            "",
        );
        let end = looping.map("a@example.com", Role::EnvelopeSender).unwrap();
        assert!(end == "a@example.com" || end == "b@example.com");
    }

    #[test]
    fn masquerading_with_exclusions_and_exceptions() {
        let mut c = canonical("", "", "");
        c.masquerade_domains = vec!["!sales.example.com".into(), "example.com".into()];
        c.masquerade_exceptions = vec!["root".into()];
        let m = |a: &str| c.map(a, Role::HeaderSender).unwrap();
        assert_eq!(m("bob@mail.example.com"), "bob@example.com");
        assert_eq!(m("bob@a.b.example.com"), "bob@example.com");
        assert_eq!(m("bob@sales.example.com"), "bob@sales.example.com");
        // "!domain": that domain and its subdomains stay as they are.
        assert_eq!(m("bob@x.sales.example.com"), "bob@x.sales.example.com");
        assert_eq!(m("root@mail.example.com"), "root@mail.example.com");
        assert_eq!(m("bob@example.com"), "bob@example.com");
        assert_eq!(m("bob@notexample.com"), "bob@notexample.com");
        assert_eq!(
            c.map("bob@mail.example.com", Role::EnvelopeRecipient)
                .unwrap(),
            "bob@mail.example.com"
        );
    }

    #[test]
    fn headers_keep_their_names_comments_and_folding() {
        let mut c = canonical("", "", "inline:{ old@example.com=new@example.com }");
        c.masquerade_domains = vec!["example.com".into()];
        assert_eq!(
            c.rewrite_header(
                "To: \"Old, Name\" <old@example.com>,\r\n\tbob@mail.example.com (Bob)"
            )
            .unwrap()
            .as_deref(),
            Some("To: \"Old, Name\" <new@example.com>,\r\n\tbob@example.com (Bob)")
        );
        assert_eq!(c.rewrite_header("Subject: old@example.com").unwrap(), None);
        assert_eq!(c.rewrite_header("To: bob@example.com").unwrap(), None);
    }
}

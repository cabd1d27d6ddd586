//! The relay-safety check of `mtad check`: can a stranger relay?
//!
//! [`relay_safety`] reads a configuration's restriction lists the way
//! Postfix applies them to `RCPT TO` from a client outside `mynetworks`
//! that did not authenticate, for a recipient outside the local, virtual
//! and relay domains, and answers with a [`RelaySafety`]:
//!
//! * [`RelaySafety::Safe`] names the restriction that always refuses such
//!   a recipient, with its parameter and where it is set;
//! * [`RelaySafety::OpenRelay`] names the restriction that lets it
//!   through (or the list that ends without refusing), and explains;
//! * [`RelaySafety::CannotProve`] names the first restriction whose
//!   outcome depends on something a static check cannot know (an access
//!   table, DNS, a policy service) and that comes before any refusal.
//!   It never says "safe" for such a configuration.
//!
//! # How the lists are read
//!
//! Postfix applies `smtpd_relay_restrictions` and then
//! `smtpd_recipient_restrictions` (after the client, HELO and sender lists
//! when `smtpd_delay_reject = yes`); the recipient is accepted only when no
//! list rejects it, and a `permit` in one list does not skip the next. So
//! the configuration is safe as soon as one list always refuses. Within a
//! list, restrictions apply in order:
//!
//! * `permit_mynetworks`, `permit_sasl_authenticated`,
//!   `permit_auth_destination` and `permit_dnswl_client` (which Postfix
//!   never lets override `reject_unauth_destination`) do not apply;
//!   `permit_mynetworks` does when `mynetworks` covers every address of a
//!   protocol in `inet_protocols` (`0.0.0.0/0`): an open relay through
//!   `mynetworks`;
//! * `reject_unauth_destination`, `defer_unauth_destination`, `reject`,
//!   `defer` refuse, and `defer_if_permit` turns every later acceptance
//!   into a deferral; `warn_if_reject` in front of any of them makes it a
//!   log line only;
//! * `permit` accepts: if no list refuses, that is an open relay;
//! * `check_*_access`, `permit_mx_backup`, `check_*_{mx,ns}_access` (and
//!   `check_policy_service`) depend on data: "cannot prove safe";
//! * the other `reject_*` checks may reject or not: they go on;
//! * a restriction class is its own list, read the same way.
//!
//! The defaults count: `smtpd_relay_restrictions` is empty below
//! `compatibility_level = 1` and `permit_mynetworks,
//! permit_sasl_authenticated, defer_unauth_destination` from 1 on, and the
//! report says which default applied.
//!
//! The recipient forms of sender-specified routing (`user%domain@host`,
//! `domain!user@host`, quoted `@`) are the engine's business:
//! `reject_unauth_destination` resolves them as trivial-rewrite does, see
//! [`crate::restriction`]. `tests/relay_forms.rs` checks them end to end.
//!
//! # Example
//! ```
//! use mta_core::config::{Config, HostFacts};
//! use mta_maps::registry::{OpenContext, Registry};
//! use mta_restrictions::relay::{relay_safety, RelaySafety};
//! use mta_restrictions::restriction::Restrictions;
//!
//! let config = Config::parse(
//!     "compatibility_level = 0\nsmtpd_recipient_restrictions = permit_mynetworks, permit\n",
//!     "main.cf",
//!     HostFacts::default(),
//! ).unwrap();
//! let restrictions = Restrictions::from_config(&config, &Registry::new(OpenContext::default())).unwrap();
//! let report = relay_safety(&config, &restrictions);
//! assert!(matches!(report, RelaySafety::OpenRelay { .. }));
//! assert!(report.to_string().contains("main.cf, line 2"));
//! ```

use std::fmt;
use std::net::IpAddr;

use mta_core::config::Config;

use crate::restriction::{RcptList, RelayEffect, Restrictions};

/// A restriction in a configuration: the parameter that holds it, where
/// that parameter is set, and the restriction as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    /// The parameter (a restriction list, a restriction class, or
    /// `mynetworks`).
    pub parameter: String,
    /// `FILE, line N`, or where a default comes from.
    pub location: String,
    /// The restriction with its argument, as written; for a list that ends
    /// without deciding, `(end of list)`.
    pub restriction: String,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "\"{}\" in {} ({})",
            self.restriction, self.parameter, self.location
        )
    }
}

/// The answer of [`relay_safety`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelaySafety {
    /// Every such recipient is refused, at the latest by this restriction.
    Safe {
        /// The restriction that refuses.
        decided_by: RuleRef,
    },
    /// Such a recipient is accepted.
    OpenRelay {
        /// The restriction that lets it through (`permit`, or
        /// `permit_mynetworks` with `mynetworks` covering everyone), or
        /// the end of the last list.
        path: RuleRef,
        /// How: each list and what it does with the recipient.
        explanation: String,
    },
    /// Whether it is accepted depends on this restriction's data.
    CannotProve {
        /// The first restriction that decides on data.
        rule: RuleRef,
        /// What it depends on.
        why: String,
    },
}

impl RelaySafety {
    /// Whether the configuration was proven safe.
    pub fn is_safe(&self) -> bool {
        matches!(self, RelaySafety::Safe { .. })
    }
}

impl fmt::Display for RelaySafety {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelaySafety::Safe { decided_by } => write!(
                f,
                "relay control: safe: clients outside mynetworks without authentication \
                 are refused recipients in other domains by {decided_by}"
            ),
            RelaySafety::OpenRelay { path, explanation } => write!(
                f,
                "relay control: OPEN RELAY: a client outside mynetworks without \
                 authentication gets any recipient accepted through {path}: {explanation}"
            ),
            RelaySafety::CannotProve { rule, why } => write!(
                f,
                "relay control: cannot prove safe: {rule} comes before any refusal, and {why}"
            ),
        }
    }
}

/// What one list does with the recipient.
#[derive(Debug, Clone)]
enum ListOutcome {
    Refuses(RuleRef),
    Permits(RuleRef, String),
    Depends(RuleRef, String),
    FallsThrough,
}

/// Nesting limit for restriction classes naming each other.
const MAX_CLASS_DEPTH: usize = 20;

struct Walker<'c> {
    config: &'c Config,
    restrictions: &'c Restrictions,
    /// `mynetworks` covers everyone: the entry, for the report.
    mynetworks_everyone: Option<String>,
}

impl Walker<'_> {
    fn walk(
        &self,
        parameter: &str,
        location: &str,
        items: &[(String, RelayEffect)],
        outer_warn: bool,
        depth: usize,
    ) -> ListOutcome {
        let rule = |text: &str| RuleRef {
            parameter: parameter.to_string(),
            location: location.to_string(),
            restriction: text.to_string(),
        };
        let mut warn_next = false;
        for (text, effect) in items {
            let warn = outer_warn || warn_next;
            warn_next = false;
            match effect {
                RelayEffect::WarnNext => warn_next = true,
                RelayEffect::Refuses if warn => {}
                RelayEffect::Refuses | RelayEffect::DefersAnyPermit => {
                    return ListOutcome::Refuses(rule(text));
                }
                RelayEffect::Permits => {
                    return ListOutcome::Permits(
                        rule(text),
                        format!("{parameter} ({location}) accepts at \"{text}\""),
                    );
                }
                RelayEffect::PermitMynetworks => {
                    if let Some(entry) = &self.mynetworks_everyone {
                        return ListOutcome::Permits(
                            RuleRef {
                                parameter: "mynetworks".into(),
                                location: self.config.location("mynetworks"),
                                restriction: entry.clone(),
                            },
                            format!(
                                "mynetworks ({}) holds {entry}, which covers every client, so \
                                 \"{text}\" in {parameter} ({location}) accepts everyone",
                                self.config.location("mynetworks")
                            ),
                        );
                    }
                }
                RelayEffect::Continues => {}
                RelayEffect::Depends(why) => return ListOutcome::Depends(rule(text), why.clone()),
                RelayEffect::Class(name) => {
                    let Some(class_items) = self.restrictions.relay_class_view(name) else {
                        return ListOutcome::Depends(
                            rule(text),
                            format!("restriction class {name} has no definition"),
                        );
                    };
                    if depth >= MAX_CLASS_DEPTH {
                        return ListOutcome::Depends(
                            rule(text),
                            "restriction classes nest too deeply to follow".into(),
                        );
                    }
                    let class_location = self.config.location(name);
                    match self.walk(name, &class_location, &class_items, warn, depth + 1) {
                        ListOutcome::FallsThrough => {}
                        ListOutcome::Permits(r, why) => {
                            return ListOutcome::Permits(
                                r,
                                format!("{why}, through \"{text}\" in {parameter} ({location})"),
                            );
                        }
                        other => return other,
                    }
                }
            }
        }
        ListOutcome::FallsThrough
    }

    /// Where a list's value comes from; for a default, which
    /// compatibility level chose it.
    fn location(&self, parameter: &str) -> String {
        let location = self.config.location(parameter);
        if location != "default" || parameter != "smtpd_relay_restrictions" {
            return location;
        }
        let level = self
            .config
            .raw("compatibility_level")
            .unwrap_or_else(|| "0".into());
        format!(
            "default for compatibility_level = {} ({})",
            level.trim(),
            self.config.location("compatibility_level")
        )
    }
}

/// Decides whether a client outside `mynetworks`, without SASL
/// authentication, can get a recipient outside the local, virtual and
/// relay domains accepted; see the module documentation.
pub fn relay_safety(config: &Config, restrictions: &Restrictions) -> RelaySafety {
    let walker = Walker {
        config,
        restrictions,
        mynetworks_everyone: mynetworks_covers_everyone(config),
    };
    let outcome = |list: RcptList, parameter: &str| {
        let location = walker.location(parameter);
        let items = restrictions.relay_view(list);
        let outcome = walker.walk(parameter, &location, &items, false, 0);
        (parameter.to_string(), location, outcome)
    };
    let relay = outcome(RcptList::Relay, "smtpd_relay_restrictions");
    let recipient = outcome(RcptList::Recipient, "smtpd_recipient_restrictions");
    // The earlier lists can only refuse more: a permit there does not skip
    // the recipient lists. The HELO list applies only when HELO was sent.
    let mut earlier = vec![
        outcome(RcptList::Client, "smtpd_client_restrictions"),
        outcome(RcptList::Sender, "smtpd_sender_restrictions"),
    ];
    if config.boolean("smtpd_helo_required").unwrap_or(false) {
        earlier.push(outcome(RcptList::Helo, "smtpd_helo_restrictions"));
    }
    for (_, _, o) in [&relay, &recipient].into_iter().chain(earlier.iter()) {
        if let ListOutcome::Refuses(rule) = o {
            return RelaySafety::Safe {
                decided_by: rule.clone(),
            };
        }
    }
    for (_, _, o) in [&relay, &recipient] {
        if let ListOutcome::Depends(rule, why) = o {
            return RelaySafety::CannotProve {
                rule: rule.clone(),
                why: why.clone(),
            };
        }
    }
    let mut steps = Vec::new();
    let mut path = None;
    for (parameter, location, o) in [&relay, &recipient] {
        match o {
            ListOutcome::Permits(rule, why) => {
                steps.push(why.clone());
                path.get_or_insert_with(|| rule.clone());
            }
            _ => steps.push(format!(
                "{parameter} ({location}) ends without refusing (no reject_unauth_destination)"
            )),
        }
    }
    let (parameter, location, _) = &recipient;
    RelaySafety::OpenRelay {
        path: path.unwrap_or_else(|| RuleRef {
            parameter: parameter.clone(),
            location: location.clone(),
            restriction: "(end of list)".into(),
        }),
        explanation: steps.join("; "),
    }
}

/// The `mynetworks` entry that makes every client of a protocol in
/// `inet_protocols` trusted, as written; when the entries together cover
/// a whole address space, all of them.
///
/// Only addresses and networks count: host names and tables are left out
/// (a table that lists `0.0.0.0/0` is not seen).
fn mynetworks_covers_everyone(config: &Config) -> Option<String> {
    let entries = config.list("mynetworks").ok()?;
    let protocols = config.list("inet_protocols").unwrap_or_default();
    let wants = |v4: bool| {
        protocols.is_empty()
            || protocols
                .iter()
                .any(|p| p == "all" || (v4 && p == "ipv4") || (!v4 && p == "ipv6"))
    };
    let mut v4: Vec<(u128, u128)> = Vec::new();
    let mut v6: Vec<(u128, u128)> = Vec::new();
    let mut v4_text = Vec::new();
    let mut v6_text = Vec::new();
    for entry in &entries {
        // An exclusion shrinks the set by a few addresses at most in any
        // configuration worth reporting; it is not subtracted.
        if entry.starts_with('!') {
            continue;
        }
        let (address, prefix) = match entry.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (entry.as_str(), None),
        };
        let address = address
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(address);
        let Ok(ip) = address.parse::<IpAddr>() else {
            continue;
        };
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        let Some(prefix) = prefix.map_or(Some(bits), |p| p.parse::<u32>().ok()) else {
            continue;
        };
        if prefix > bits {
            continue;
        }
        let value = match ip {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        let host_bits = bits - prefix;
        let span = if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let start = value & !span;
        let range = (start, start | span);
        if ip.is_ipv4() {
            v4.push(range);
            v4_text.push(entry.clone());
        } else {
            v6.push(range);
            v6_text.push(entry.clone());
        }
    }
    if wants(true) && covers(&mut v4, u128::from(u32::MAX)) {
        return Some(v4_text.join(" "));
    }
    if wants(false) && covers(&mut v6, u128::MAX) {
        return Some(v6_text.join(" "));
    }
    None
}

/// Whether the ranges together cover `0..=max`.
fn covers(ranges: &mut [(u128, u128)], max: u128) -> bool {
    ranges.sort_unstable();
    let mut next = 0u128;
    for &(start, end) in ranges.iter() {
        if start > next {
            return false;
        }
        if end >= max {
            return true;
        }
        next = next.max(end + 1);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use mta_core::config::HostFacts;
    use mta_maps::registry::{OpenContext, Registry};

    fn check(main_cf: &str) -> RelaySafety {
        let config = Config::parse(main_cf, "main.cf", HostFacts::default()).expect("main.cf");
        let registry = Registry::new(OpenContext::default());
        let restrictions = Restrictions::from_config(&config, &registry).expect("restrictions");
        relay_safety(&config, &restrictions)
    }

    fn safe_by(report: &RelaySafety) -> (&str, &str, &str) {
        match report {
            RelaySafety::Safe { decided_by } => (
                &decided_by.parameter,
                &decided_by.location,
                &decided_by.restriction,
            ),
            other => panic!("expected safe, got {other}"),
        }
    }

    #[test]
    fn stock_defaults_at_level_3_6() {
        let report = check("compatibility_level = 3.6\n");
        assert_eq!(
            safe_by(&report),
            (
                "smtpd_relay_restrictions",
                "default for compatibility_level = 3.6 (main.cf, line 1)",
                "defer_unauth_destination"
            )
        );
    }

    #[test]
    fn stock_defaults_at_level_2() {
        let report = check("compatibility_level = 2\n");
        assert_eq!(safe_by(&report).2, "defer_unauth_destination");
    }

    #[test]
    fn stock_defaults_at_level_0() {
        // Both lists empty: nothing refuses. (Postfix's smtpd refuses to
        // start with such lists; this engine would accept.)
        for main_cf in [
            "compatibility_level = 0\n",
            "myhostname = mail.example.com\n",
        ] {
            let report = check(main_cf);
            let RelaySafety::OpenRelay { path, explanation } = &report else {
                panic!("expected open relay, got {report}");
            };
            assert_eq!(
                (
                    path.parameter.as_str(),
                    path.location.as_str(),
                    path.restriction.as_str()
                ),
                ("smtpd_recipient_restrictions", "default", "(end of list)")
            );
            assert!(
                explanation
                    .starts_with("smtpd_relay_restrictions (default for compatibility_level = "),
                "{explanation}"
            );
        }
        // The pre-2.10 idiom that level 0 expects.
        let report = check(
            "compatibility_level = 0\n\
             smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination\n",
        );
        assert_eq!(
            safe_by(&report),
            (
                "smtpd_recipient_restrictions",
                "main.cf, line 2",
                "reject_unauth_destination"
            )
        );
    }

    #[test]
    fn reference_site() {
        // The site's hash tables, compiled in a scratch directory (the
        // repository keeps only their sources); alias_maps left out.
        let source =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/small-office");
        let dir = std::env::temp_dir().join(format!("mta-relay-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["main.cf", "vmailbox", "virtual", "sender_logins"] {
            std::fs::copy(source.join(f), dir.join(f)).unwrap();
        }
        for t in ["vmailbox", "virtual"] {
            mta_maps::hash::compile(
                &dir.join(t),
                "",
                mta_maps::key::Folding::Lower,
                mta_maps::hash::Duplicates::KeepFirst,
            )
            .unwrap();
        }
        let text = std::fs::read_to_string(dir.join("main.cf")).expect("reference main.cf");
        let text = format!("config_directory = {}\n{text}alias_maps =\n", dir.display());
        let config = Config::parse(&text, "main.cf", HostFacts::default()).expect("main.cf");
        let registry = Registry::new(OpenContext {
            config_directory: Some(dir.clone()),
            ..OpenContext::default()
        });
        let restrictions = Restrictions::from_config(&config, &registry).expect("restrictions");
        let report = relay_safety(&config, &restrictions);
        // compatibility_level = 3.6: the default relay restrictions
        // decide first; the recipient list would refuse too.
        let (parameter, location, restriction) = safe_by(&report);
        assert_eq!(parameter, "smtpd_relay_restrictions");
        assert!(location.starts_with("default for compatibility_level = 3.6 (main.cf, line "));
        assert_eq!(restriction, "defer_unauth_destination");
    }

    #[test]
    fn permit_with_relay_restrictions_emptied() {
        let report = check(
            "compatibility_level = 3.6\nsmtpd_relay_restrictions =\n\
             smtpd_recipient_restrictions = permit\n",
        );
        let RelaySafety::OpenRelay { path, explanation } = &report else {
            panic!("expected open relay, got {report}");
        };
        assert_eq!(path.parameter, "smtpd_recipient_restrictions");
        assert_eq!(path.location, "main.cf, line 3");
        assert_eq!(path.restriction, "permit");
        assert!(explanation.contains("smtpd_relay_restrictions (main.cf, line 2) ends"));
        assert!(report.to_string().contains("OPEN RELAY"));
    }

    #[test]
    fn emptied_relay_restrictions_and_no_reject_unauth_destination() {
        let report = check(
            "compatibility_level = 3.6\nsmtpd_relay_restrictions =\n\
             smtpd_recipient_restrictions = permit_mynetworks, permit_sasl_authenticated,\n\
             \x20   reject_non_fqdn_recipient, reject_unknown_recipient_domain\n",
        );
        let RelaySafety::OpenRelay { path, explanation } = &report else {
            panic!("expected open relay, got {report}");
        };
        assert_eq!(
            (path.parameter.as_str(), path.restriction.as_str()),
            ("smtpd_recipient_restrictions", "(end of list)")
        );
        assert_eq!(path.location, "main.cf, line 3");
        assert!(
            explanation.contains("no reject_unauth_destination"),
            "{explanation}"
        );
    }

    #[test]
    fn level_0_with_permit_in_recipient_list() {
        let report = check(
            "compatibility_level = 0\n\
             smtpd_recipient_restrictions = permit_mynetworks, permit, reject_unauth_destination\n",
        );
        let RelaySafety::OpenRelay { explanation, .. } = &report else {
            panic!("expected open relay, got {report}");
        };
        assert!(
            explanation.contains("default for compatibility_level = 0 (main.cf, line 1)"),
            "{explanation}"
        );
    }

    #[test]
    fn permit_before_relay_check_is_caught_by_the_other_list() {
        // The recipient list is open, but the default relay list refuses.
        let report = check("compatibility_level = 3.6\nsmtpd_recipient_restrictions = permit\n");
        assert_eq!(safe_by(&report).0, "smtpd_relay_restrictions");
    }

    #[test]
    fn mynetworks_everyone() {
        let report = check(
            "compatibility_level = 3.6\nmynetworks = 127.0.0.0/8 0.0.0.0/0\ninet_protocols = ipv4\n",
        );
        let RelaySafety::OpenRelay { path, explanation } = &report else {
            panic!("expected open relay, got {report}");
        };
        assert_eq!(path.parameter, "mynetworks");
        assert_eq!(path.location, "main.cf, line 2");
        assert_eq!(path.restriction, "127.0.0.0/8 0.0.0.0/0");
        assert!(explanation.contains("permit_mynetworks"), "{explanation}");
    }

    #[test]
    fn mynetworks_halves_cover_everyone() {
        let report = check(
            "compatibility_level = 3.6\nmynetworks = 0.0.0.0/1, 128.0.0.0/1\ninet_protocols = ipv4\n",
        );
        assert!(matches!(report, RelaySafety::OpenRelay { .. }), "{report}");
        // Not everyone: a /1 alone.
        let report =
            check("compatibility_level = 3.6\nmynetworks = 0.0.0.0/1\ninet_protocols = ipv4\n");
        assert!(report.is_safe(), "{report}");
    }

    #[test]
    fn mynetworks_ipv6_everyone_only_counts_with_ipv6() {
        let open = "compatibility_level = 3.6\nmynetworks = 127.0.0.0/8 [::]/0\n";
        assert!(check(&format!("{open}inet_protocols = ipv4\n")).is_safe());
        assert!(!check(&format!("{open}inet_protocols = all\n")).is_safe());
        // Reached only if permit_mynetworks comes before the refusal.
        let report = check(
            "compatibility_level = 3.6\nmynetworks = 0.0.0.0/0\ninet_protocols = ipv4\n\
             smtpd_relay_restrictions = reject_unauth_destination, permit_mynetworks\n",
        );
        assert!(report.is_safe(), "{report}");
    }

    #[test]
    fn client_access_table_first() {
        let report = check(
            "compatibility_level = 3.6\n\
             smtpd_relay_restrictions = check_client_access inline:{ 192.0.2.7=OK },\n\
             \x20   permit_mynetworks, reject_unauth_destination\n\
             smtpd_recipient_restrictions = permit_mynetworks, permit\n",
        );
        let RelaySafety::CannotProve { rule, why } = &report else {
            panic!("expected cannot prove, got {report}");
        };
        assert_eq!(rule.parameter, "smtpd_relay_restrictions");
        assert_eq!(rule.location, "main.cf, line 2");
        assert_eq!(
            rule.restriction,
            "check_client_access inline:{ 192.0.2.7=OK }"
        );
        assert!(why.contains("client"), "{why}");
        assert!(
            report
                .to_string()
                .starts_with("relay control: cannot prove safe")
        );
    }

    #[test]
    fn table_after_the_relay_check_is_fine() {
        let report = check(
            "compatibility_level = 3.6\n\
             smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination,\n\
             \x20   check_sender_access inline:{ a@example.com=OK }\n",
        );
        assert_eq!(safe_by(&report).2, "reject_unauth_destination");
    }

    #[test]
    fn table_in_one_list_other_list_safe() {
        // One list that always refuses is enough.
        let report = check(
            "compatibility_level = 3.6\n\
             smtpd_relay_restrictions = check_sender_access inline:{ a@example.com=OK }, reject_unauth_destination\n\
             smtpd_recipient_restrictions = reject_unauth_destination\n",
        );
        assert_eq!(safe_by(&report).0, "smtpd_recipient_restrictions");
    }

    #[test]
    fn warn_if_reject_disarms_the_relay_check() {
        let report = check(
            "compatibility_level = 3.6\nsmtpd_relay_restrictions =\n\
             smtpd_recipient_restrictions = permit_mynetworks, warn_if_reject, reject_unauth_destination\n",
        );
        assert!(matches!(report, RelaySafety::OpenRelay { .. }), "{report}");
    }

    #[test]
    fn permit_auth_destination_then_reject_is_safe() {
        let report = check(
            "compatibility_level = 3.6\n\
             smtpd_relay_restrictions = permit_auth_destination, reject\n",
        );
        assert_eq!(safe_by(&report).2, "reject");
    }

    #[test]
    fn permit_mx_backup_cannot_be_proven() {
        let report = check(
            "compatibility_level = 3.6\nsmtpd_relay_restrictions =\n\
             smtpd_recipient_restrictions = permit_mx_backup, reject_unauth_destination\n",
        );
        let RelaySafety::CannotProve { rule, .. } = &report else {
            panic!("expected cannot prove, got {report}");
        };
        assert_eq!(rule.restriction, "permit_mx_backup");
    }

    #[test]
    fn policy_service_first_cannot_be_proven() {
        let report = check(
            "compatibility_level = 3.6\nsmtpd_relay_restrictions =\n\
             smtpd_recipient_restrictions = check_policy_service inet:127.0.0.1:9998, reject_unauth_destination\n",
        );
        let RelaySafety::CannotProve { rule, why } = &report else {
            panic!("expected cannot prove, got {report}");
        };
        assert_eq!(rule.restriction, "check_policy_service inet:127.0.0.1:9998");
        assert_eq!(rule.location, "main.cf, line 3");
        assert!(why.contains("policy service"), "{why}");
        // After the relay check, as SMTPD_POLICY_README advises: safe.
        let report = check(
            "compatibility_level = 3.6\nsmtpd_relay_restrictions =\n\
             smtpd_recipient_restrictions = reject_unauth_destination, check_policy_service unix:/run/p\n",
        );
        assert!(report.is_safe(), "{report}");
    }

    #[test]
    fn restriction_classes_are_followed() {
        let open = check(
            "compatibility_level = 3.6\nsmtpd_restriction_classes = lax\nlax = reject_non_fqdn_recipient, permit\n\
             smtpd_relay_restrictions = lax, reject_unauth_destination\n\
             smtpd_recipient_restrictions = lax\n",
        );
        let RelaySafety::OpenRelay { path, explanation } = &open else {
            panic!("expected open relay, got {open}");
        };
        assert_eq!(
            (
                path.parameter.as_str(),
                path.location.as_str(),
                path.restriction.as_str()
            ),
            ("lax", "main.cf, line 3", "permit")
        );
        assert!(explanation.contains("through \"lax\""), "{explanation}");
        let safe = check(
            "compatibility_level = 3.6\nsmtpd_restriction_classes = strict\nstrict = reject_unauth_destination\n\
             smtpd_relay_restrictions = permit_mynetworks, strict, permit\n",
        );
        assert_eq!(
            safe_by(&safe),
            ("strict", "main.cf, line 3", "reject_unauth_destination")
        );
    }

    #[test]
    fn earlier_list_that_refuses_everyone() {
        let report = check(
            "compatibility_level = 3.6\nsmtpd_client_restrictions = permit_mynetworks, reject\n\
             smtpd_relay_restrictions =\nsmtpd_recipient_restrictions = permit\n",
        );
        assert_eq!(
            safe_by(&report),
            ("smtpd_client_restrictions", "main.cf, line 2", "reject")
        );
    }

    #[test]
    fn defer_if_permit_blocks_acceptance() {
        let report = check(
            "compatibility_level = 3.6\nsmtpd_relay_restrictions =\n\
             smtpd_recipient_restrictions = defer_if_permit, permit\n",
        );
        assert_eq!(safe_by(&report).2, "defer_if_permit");
    }

    #[test]
    fn coverage() {
        assert!(covers(&mut [(0, 10), (5, 20)], 20));
        assert!(!covers(&mut [(0, 10), (12, 20)], 20));
        assert!(covers(&mut [(0, u128::MAX)], u128::MAX));
        assert!(!covers(&mut [], 5));
    }
}

//! The parameter registry: every parameter Postfix 3.7 knows, with its
//! default and its kind.
//!
//! The table itself (the private `parameters` module) is generated from
//! Debian's `postconf -d` and `postconf(5)` by `tools/gen-parameters.py`, so
//! the defaults are Postfix's own, byte for byte. This module adds what the
//! table cannot say: mtad's few deliberate deviations (see
//! [`DEVIATIONS`]), and the per-service parameters that Postfix derives from
//! `master.cf` (`relay_destination_concurrency_limit` exists because
//! `master.cf` has a `relay` service running the `smtp` agent).

use super::parameters::PARAMETERS;

/// What kind of value a parameter holds, which decides how it is
/// validated and which typed accessor reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParameterKind {
    /// Free text (a host name, a path, a banner, an enumerated word).
    Text,
    /// `yes` or `no`.
    Boolean,
    /// A decimal integer (counts, sizes in bytes, codes).
    Integer,
    /// A time: an integer with an optional one-letter unit (`s`, `m`, `h`,
    /// `d`, `w`); `default_unit` applies when the value has none.
    Time {
        /// The unit of a bare number, as postconf(5) gives it.
        default_unit: char,
    },
    /// A list separated by commas or white space, whose entries may name
    /// files (`/etc/postfix/relay_domains`) or tables.
    List,
    /// A list of lookup tables (`hash:/etc/postfix/virtual`, ...).
    TableList,
    /// A list of SMTP access restrictions.
    RestrictionList,
    /// Text that the configuration does not expand, because it holds
    /// macros that a service fills in when it uses the value
    /// (`mailbox_command` with `$user`, `default_rbl_reply` with
    /// `$rbl_code`).
    Raw,
}

/// One entry of the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParameterDef {
    /// The parameter name, as in `main.cf`.
    pub name: &'static str,
    /// The raw (unexpanded) default, as `postconf -d` prints it. For
    /// [`computed`](Self::computed) parameters this is only what the
    /// machine that generated the table had; the real default comes from
    /// the host facts.
    pub default: &'static str,
    /// The kind of value.
    pub kind: ParameterKind,
    /// Whether Postfix computes the default from the machine or the
    /// running process (`myhostname`, `mydomain`, `mynetworks`,
    /// `process_id`, `process_name`).
    pub computed: bool,
}

/// A place where mtad's default differs from Debian's Postfix 3.7 on
/// purpose. `mtad postconf -d` prints these values; the README lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deviation {
    /// The parameter.
    pub name: &'static str,
    /// mtad's default.
    pub default: &'static str,
    /// mtad's kind, when it differs from Postfix 3.7's.
    pub kind: Option<ParameterKind>,
    /// Why.
    pub reason: &'static str,
}

/// mtad's deliberate deviations from Postfix 3.7's defaults.
pub const DEVIATIONS: &[Deviation] = &[
    Deviation {
        name: "config_directory",
        default: "/etc/mta",
        kind: None,
        reason: "mtad's own configuration directory, so that it never reads a Postfix \
                 configuration it was not pointed at",
    },
    Deviation {
        name: "data_directory",
        default: "/var/lib/mta",
        kind: None,
        reason: "mtad's own state, never shared with an installed Postfix",
    },
    Deviation {
        name: "mail_name",
        default: "mtad",
        kind: None,
        reason: "the name in the SMTP greeting and in Received: headers",
    },
    Deviation {
        name: "queue_directory",
        default: "/var/spool/mta",
        kind: None,
        reason: "mtad's queue format is its own; sharing Postfix's queue would corrupt both",
    },
    Deviation {
        name: "smtpd_forbid_bare_newline",
        default: "normalize",
        kind: Some(ParameterKind::Text),
        reason: "Postfix 3.9's safe default against SMTP smuggling; values yes, normalize, \
                 reject, no",
    },
    Deviation {
        name: "smtpd_forbid_unauth_pipelining",
        default: "yes",
        kind: None,
        reason: "Postfix 3.9's safe default: clients that talk out of turn are spambots",
    },
];

/// Looks up a parameter Postfix knows without a `master.cf`, with mtad's
/// deviations applied.
///
/// # Example
/// ```
/// use mta_core::config::registry::{self, ParameterKind};
/// let p = registry::lookup("smtpd_timeout").unwrap();
/// assert_eq!(p.default, "${stress?{10}:{300}}s");
/// assert_eq!(p.kind, ParameterKind::Time { default_unit: 's' });
/// assert_eq!(registry::lookup("mail_name").unwrap().default, "mtad");
/// assert!(registry::lookup("no_such_parameter").is_none());
/// ```
pub fn lookup(name: &str) -> Option<ParameterDef> {
    let index = PARAMETERS.binary_search_by(|p| p.name.cmp(name)).ok()?;
    let mut def = PARAMETERS[index];
    if let Some(dev) = deviation(name) {
        def.default = dev.default;
        if let Some(kind) = dev.kind {
            def.kind = kind;
        }
    }
    Some(def)
}

/// Postfix's own entry for a parameter, without mtad's deviations.
pub fn postfix_default(name: &str) -> Option<ParameterDef> {
    let index = PARAMETERS.binary_search_by(|p| p.name.cmp(name)).ok()?;
    Some(PARAMETERS[index])
}

/// The deviation for `name`, if mtad deviates there.
pub fn deviation(name: &str) -> Option<&'static Deviation> {
    DEVIATIONS.iter().find(|d| d.name == name)
}

/// Every static parameter, sorted by name, with deviations applied.
pub fn all() -> impl Iterator<Item = ParameterDef> {
    PARAMETERS.iter().map(|p| lookup(p.name).unwrap_or(*p))
}

/// The `master.cf` commands whose services get per-service scheduler
/// parameters (`SERVICE_destination_concurrency_limit` and the rest),
/// because the queue manager delivers through them.
pub const DELIVERY_AGENT_COMMANDS: &[&str] = &["error", "lmtp", "local", "pipe", "smtp", "virtual"];

/// The per-service parameter suffixes and the parameter whose value each
/// defaults to.
const SERVICE_PARAMETERS: &[(&str, &str)] = &[
    ("delivery_slot_cost", "default_delivery_slot_cost"),
    ("delivery_slot_discount", "default_delivery_slot_discount"),
    ("delivery_slot_loan", "default_delivery_slot_loan"),
    (
        "destination_concurrency_failed_cohort_limit",
        "default_destination_concurrency_failed_cohort_limit",
    ),
    (
        "destination_concurrency_limit",
        "default_destination_concurrency_limit",
    ),
    (
        "destination_concurrency_negative_feedback",
        "default_destination_concurrency_negative_feedback",
    ),
    (
        "destination_concurrency_positive_feedback",
        "default_destination_concurrency_positive_feedback",
    ),
    ("destination_rate_delay", "default_destination_rate_delay"),
    (
        "destination_recipient_limit",
        "default_destination_recipient_limit",
    ),
    ("extra_recipient_limit", "default_extra_recipient_limit"),
    (
        "initial_destination_concurrency",
        "initial_destination_concurrency",
    ),
    ("minimum_delivery_slots", "default_minimum_delivery_slots"),
    ("recipient_limit", "default_recipient_limit"),
    ("recipient_refill_delay", "default_recipient_refill_delay"),
    ("recipient_refill_limit", "default_recipient_refill_limit"),
    ("transport_rate_delay", "default_transport_rate_delay"),
];

/// A parameter that exists because of a `master.cf` service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceParameter {
    /// `SERVICE_SUFFIX`, e.g. `relay_destination_concurrency_limit`.
    pub name: String,
    /// The raw default, a reference to the global parameter, e.g.
    /// `$default_destination_concurrency_limit`.
    pub default: String,
    /// The kind, the same as the global parameter's.
    pub kind: ParameterKind,
}

/// The parameters Postfix derives for a `master.cf` service named
/// `service` whose command is `command` (the first word of the command
/// field, e.g. `smtp` or `pipe`). Empty for services that are not delivery
/// agents. Names that already exist statically (`local_recipient_limit`)
/// are left out, as Postfix does.
///
/// # Example
/// ```
/// use mta_core::config::registry::service_parameters;
/// let p = service_parameters("relay", "smtp");
/// assert!(p.iter().any(|p| p.name == "relay_destination_concurrency_limit"
///     && p.default == "$default_destination_concurrency_limit"));
/// assert!(service_parameters("smtp", "smtpd").is_empty());
/// ```
pub fn service_parameters(service: &str, command: &str) -> Vec<ServiceParameter> {
    if !DELIVERY_AGENT_COMMANDS.contains(&command) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut push = |suffix: &str, global: &str| {
        let name = format!("{service}_{suffix}");
        if lookup(&name).is_some() {
            return;
        }
        let kind = lookup(global).map_or(ParameterKind::Text, |p| p.kind);
        out.push(ServiceParameter {
            name,
            default: format!("${global}"),
            kind,
        });
    };
    for (suffix, global) in SERVICE_PARAMETERS {
        push(suffix, global);
    }
    if command == "pipe" {
        push("time_limit", "command_time_limit");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        for pair in PARAMETERS.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} before {}",
                pair[0].name,
                pair[1].name
            );
        }
    }

    #[test]
    fn deviations_name_real_parameters() {
        for dev in DEVIATIONS {
            assert!(
                postfix_default(dev.name).is_some(),
                "{} is not a Postfix parameter",
                dev.name
            );
            assert_ne!(postfix_default(dev.name).unwrap().default, dev.default);
        }
    }

    #[test]
    fn kinds_of_well_known_parameters() {
        assert_eq!(
            lookup("smtpd_helo_required").unwrap().kind,
            ParameterKind::Boolean
        );
        assert_eq!(
            lookup("message_size_limit").unwrap().kind,
            ParameterKind::Integer
        );
        assert_eq!(
            lookup("maximal_queue_lifetime").unwrap().kind,
            ParameterKind::Time { default_unit: 'd' }
        );
        assert_eq!(
            lookup("smtpd_recipient_restrictions").unwrap().kind,
            ParameterKind::RestrictionList
        );
        assert_eq!(
            lookup("virtual_mailbox_maps").unwrap().kind,
            ParameterKind::TableList
        );
        assert_eq!(lookup("mydestination").unwrap().kind, ParameterKind::List);
        // Rate limits mention a time unit in their manual text but are counts.
        assert_eq!(
            lookup("smtpd_client_connection_rate_limit").unwrap().kind,
            ParameterKind::Integer
        );
    }

    #[test]
    fn pipe_services_get_a_time_limit() {
        let p = service_parameters("procmail", "pipe");
        assert_eq!(p.len(), 17);
        assert!(p.iter().any(|p| p.name == "procmail_time_limit"
            && p.default == "$command_time_limit"
            && p.kind == ParameterKind::Time { default_unit: 's' }));
        // local_destination_concurrency_limit and friends are static already.
        assert_eq!(service_parameters("local", "local").len(), 14);
        assert!(service_parameters("discard", "discard").is_empty());
    }
}

//! What `mtad check` (and every start) refuses rather than ignores: a
//! Postfix parameter set to something other than its default that mtad
//! does not honour, and tables that cannot be opened or whose compiled
//! form is older than its source.
//!
//! The list below names the features mtad lacks whose absence would
//! change what happens to mail; parameters that only tune a feature mtad
//! has not got (`milter_*` without milters) are not listed, nor are
//! those of programs that do not run (`postscreen_*`).

use mta_core::config::Config;
use mta_core::config::master_cf::MasterCf;

/// Parameters mtad does not honour, and what they would do.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("smtpd_milters", "Milter applications in smtpd"),
    (
        "non_smtpd_milters",
        "Milter applications for local submissions",
    ),
    ("smtpd_proxy_filter", "a before-queue content filter"),
    ("smtpd_command_filter", "rewriting SMTP commands"),
    ("smtpd_upstream_proxy_protocol", "the HAProxy protocol"),
    ("smtp_generic_maps", "rewriting addresses on the way out"),
    ("lmtp_generic_maps", "rewriting addresses on the way out"),
    ("always_bcc", "a blind copy of every message"),
    ("sender_bcc_maps", "blind copies by sender"),
    ("recipient_bcc_maps", "blind copies by recipient"),
    (
        "sender_dependent_default_transport_maps",
        "a default transport chosen by the sender",
    ),
    ("smtp_header_checks", "header checks on the way out"),
    ("smtp_mime_header_checks", "header checks on the way out"),
    ("smtp_nested_header_checks", "header checks on the way out"),
    ("smtp_body_checks", "body checks on the way out"),
    (
        "default_destination_rate_delay",
        "pacing deliveries to a destination",
    ),
    (
        "default_transport_rate_delay",
        "pacing deliveries on a transport",
    ),
    (
        "default_destination_concurrency_positive_feedback",
        "other concurrency feedback than one per delivery",
    ),
    (
        "default_destination_concurrency_negative_feedback",
        "other concurrency feedback than one per delivery",
    ),
];

/// The refusals for `config` (main.cf, and each service's `-o`
/// overrides): `FILE, line N: NAME = VALUE: not supported ...`.
pub(crate) fn refusals(
    config: &Config,
    master: Option<&MasterCf>,
    master_path: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    let differs = |c: &Config, name: &str| {
        let value = c.expanded(name).unwrap_or_default();
        let default = c.defaults_view().expanded(name).unwrap_or_default();
        (value.trim() != default.trim()).then_some(value)
    };
    for (name, what) in UNSUPPORTED {
        if !config.is_known(name) || !config.is_set(name) {
            continue;
        }
        if let Some(value) = differs(config, name) {
            out.push(format!(
                "{}: {name} = {value}: not supported by mtad ({what}); remove the setting or set it to its default",
                config.location(name)
            ));
        }
    }
    // Client certificate fingerprints are SHA-256 only: when client
    // certificates are asked for, another digest would match nothing.
    let digest = config
        .expanded("smtpd_tls_fingerprint_digest")
        .unwrap_or_default();
    let asks = ["smtpd_tls_ask_ccert", "smtpd_tls_req_ccert"]
        .iter()
        .any(|n| config.boolean(n).unwrap_or(false));
    if asks && !digest.trim().eq_ignore_ascii_case("sha256") {
        out.push(format!(
            "{}: smtpd_tls_fingerprint_digest = {}: not supported by mtad (only sha256 fingerprints); set it to sha256 (the default at compatibility_level 3.6)",
            config.location("smtpd_tls_fingerprint_digest"),
            digest.trim()
        ));
    }
    // notify_classes: bounce, 2bounce and delay copies are sent; the
    // defaults resource and software have nothing to report in mtad (it
    // logs those problems); SMTP transcripts are not built.
    let classes = config.list("notify_classes").unwrap_or_default();
    let missing: Vec<&String> = classes
        .iter()
        .filter(|c| ["policy", "protocol", "data"].contains(&c.to_ascii_lowercase().as_str()))
        .collect();
    if !missing.is_empty() {
        out.push(format!(
            "{}: notify_classes: {}: not supported by mtad (postmaster transcripts of SMTP sessions); keep bounce, 2bounce, delay, resource, software",
            config.location("notify_classes"),
            missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    if let Some(master) = master {
        for service in master.effective_services() {
            for (name, value) in service.command().overrides() {
                let Some((_, what)) = UNSUPPORTED.iter().find(|(n, _)| n == name) else {
                    continue;
                };
                if value.trim().is_empty() {
                    continue;
                }
                out.push(format!(
                    "{master_path}, line {}: service {}: -o {name}={value}: not supported by mtad ({what}); remove the override",
                    service.line(),
                    service.name()
                ));
            }
        }
    }
    out
}

/// Table references (`type:name`) in a parameter value, as Postfix's
/// parsers find them: words of the form `type:name` whose type is a
/// table type mtad knows.
fn table_references(value: &str, types: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for word in value.split(|c: char| c == ',' || c.is_whitespace()) {
        let word = word.trim();
        let Some((kind, name)) = word.split_once(':') else {
            continue;
        };
        // inline:{...} and static:{...} hold spaces: their own parsers see them.
        if name.is_empty() || name.starts_with('{') || kind == "inline" || kind == "static" {
            continue;
        }
        if types.iter().any(|t| t == kind) {
            out.push(word.to_owned());
        }
    }
    out
}

/// Opens every table that main.cf names, and checks that each compiled
/// table (`hash:`, `btree:`) is at least as new as its source file:
/// `(errors, warnings)`.
pub(crate) fn table_problems(
    config: &Config,
    registry: &mta_maps::registry::Registry,
) -> (Vec<String>, Vec<String>) {
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    let types = registry.types();
    let mut seen = std::collections::BTreeSet::new();
    for setting in config.main_cf().settings() {
        let value = config.expanded(&setting.name).unwrap_or_default();
        for reference in table_references(&value, &types) {
            if !seen.insert(reference.clone()) {
                continue;
            }
            let at = format!(
                "{}, line {}: {}",
                config.main_cf().path(),
                setting.line,
                setting.name
            );
            if let Err(e) = registry.open(&reference) {
                errors.push(format!("{at}: {e}"));
                continue;
            }
            let (kind, name) = reference.split_once(':').unwrap_or_default();
            let kind = if kind == "proxy" {
                name.split_once(':').map_or(kind, |(k, _)| k)
            } else {
                kind
            };
            if kind == "hash" || kind == "btree" {
                let name = reference.rsplit(':').next().unwrap_or_default();
                let source = std::path::PathBuf::from(name);
                let compiled = mta_maps::hash::compiled_path(&source);
                let modified =
                    |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
                if let (Some(s), Some(c)) = (modified(&source), modified(&compiled))
                    && s > c
                {
                    warnings.push(format!(
                        "{at}: {reference}: {} is newer than {}: run \"mtad postmap {reference}\" (or postalias for aliases)",
                        source.display(),
                        compiled.display()
                    ));
                }
            }
        }
    }
    (errors, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_found_in_lists_and_restrictions() {
        let types: Vec<String> = ["hash", "pcre", "regexp", "cidr", "proxy", "unix"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            table_references(
                "permit_mynetworks, check_sender_access hash:/etc/mta/access,reject_rbl_client zen.spamhaus.org pcre:/etc/x.pcre",
                &types
            ),
            ["hash:/etc/mta/access", "pcre:/etc/x.pcre"]
        );
        assert_eq!(
            table_references("proxy:unix:passwd.byname $alias_maps", &types),
            ["proxy:unix:passwd.byname"]
        );
        assert!(table_references("inline:{ a=b }, smtp:[127.0.0.1]:25", &types).is_empty());
    }
}

//! The queue manager and the delivery transports of `master.cf`: each
//! service whose program mtad runs inside itself (`local`, `virtual`,
//! `smtp` and its `relay` clone, `lmtp`, `pipe`, `discard`, `error`) becomes a transport of the scheduler under its service name,
//! with `maxproc` as its process limit and its own
//! `<service>_destination_*` parameters; `qmgr`, `cleanup`,
//! `trivial-rewrite` and `bounce` are the scheduler, cleanup, its router
//! and its notices.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use mta_core::config::Config;
use mta_core::config::master_cf::MasterCf;
use mta_core::delivery::DeliveryAgent;
use mta_core::dns::Resolver;
use mta_delivery::discard::Discard;
use mta_delivery::error::ErrorAgent;
use mta_delivery::local::{LocalAgent, LocalConfig};
use mta_delivery::pipe::{PipeAgent, PipeConfig};
use mta_delivery::smtp::{SaslClient, SmtpAgent, SmtpConfig};
use mta_delivery::virtual_agent::{VirtualAgent, VirtualConfig};
use mta_maps::class::AddressResolver;
use mta_maps::registry::Registry;
use mta_queue::cleanup::Cleanup;
use mta_queue::notice::NoticeConfig;
use mta_queue::scheduler::{Scheduler, SchedulerConfig, Transport};
use mta_smtp::client_tls::client_tls;
use mta_smtp::connector::Connector;

use crate::Fatal;
use crate::log::Log;

/// The `master.cf` programs this module starts (or that are parts of the
/// scheduler), so the daemon does not report them as missing.
pub(crate) fn runs_inside(program: &str) -> bool {
    matches!(
        program,
        "qmgr"
            | "cleanup"
            | "trivial-rewrite"
            | "bounce"
            | "virtual"
            | "local"
            | "smtp"
            | "lmtp"
            | "pipe"
            | "discard"
            | "error"
    )
}

/// `smtp_tls_policy_maps` (or `lmtp_`): the table and a connector per
/// level, each built as the service with that security level would be.
/// A level whose settings do not work (no trust anchors for `verify`)
/// is left out, with a warning: a policy naming it defers.
fn tls_policy(
    config: &Config,
    registry: &Registry,
    lmtp: bool,
    log: &Log,
) -> Result<Option<mta_delivery::smtp::TlsPolicy>, Fatal> {
    let p = if lmtp { "lmtp" } else { "smtp" };
    let name = format!("{p}_tls_policy_maps");
    let value = config.expanded(&name).map_err(fatal)?;
    if value.trim().is_empty() {
        return Ok(None);
    }
    let maps = registry
        .open_list(&value)
        .map_err(|e| fatal(config.bad_value(&name, &value, e.to_string())))?;
    let mut connectors = HashMap::new();
    for level in ["none", "may", "encrypt", "verify", "secure"] {
        let with_level =
            config.with_overrides(&[(format!("{p}_tls_security_level"), level.to_owned())]);
        let built = (|| -> Result<Connector, mta_core::config::ConfigError> {
            let mut c = Connector::from_config(&with_level, lmtp)?;
            if let Some((tls, verification)) = client_tls(&with_level, lmtp)? {
                c = c.with_tls(tls, verification);
            }
            Ok(c)
        })();
        match built {
            Ok(c) => {
                connectors.insert(level.to_owned(), c);
            }
            Err(e) => log.warning(&format!(
                "{name}: level {level} cannot be used: {e}; destinations whose policy names it are deferred"
            )),
        }
    }
    Ok(Some(mta_delivery::smtp::TlsPolicy { maps, connectors }))
}

/// The postmaster copies of `notify_classes`, to their recipients.
pub(crate) fn postmaster_copies(
    config: &Config,
) -> Result<mta_queue::notice::PostmasterCopies, Fatal> {
    let text = |name: &str| config.expanded(name).map_err(fatal);
    Ok(mta_queue::notice::PostmasterCopies::from_classes(
        &config.list("notify_classes").map_err(fatal)?,
        text("bounce_notice_recipient")?.trim(),
        text("2bounce_notice_recipient")?.trim(),
        text("delay_notice_recipient")?.trim(),
    ))
}

/// A transport that could not be built: every delivery is deferred with
/// the reason, so no mail is lost while the configuration is fixed.
struct Unavailable(String);

impl DeliveryAgent for Unavailable {
    fn deliver(
        &self,
        request: mta_core::delivery::DeliveryRequest,
    ) -> mta_core::delivery::DeliveryFuture<'_> {
        let status =
            mta_core::delivery::DeliveryStatus::Deferred(mta_core::delivery::StatusDetail::new(
                mta_core::reply::EnhancedStatus::parse("4.3.0").expect("a valid status"),
                self.0.clone(),
                mta_core::delivery::Relay::None,
            ));
        Box::pin(async move {
            mta_core::delivery::DeliveryReport::uniform(&request.recipients, &status)
        })
    }
}

fn fatal(what: impl std::fmt::Display) -> Fatal {
    Fatal(what.to_string())
}

/// `<service>_<suffix>` if the configuration knows it (services bring
/// their own parameters), else the default parameter.
fn per_transport(
    config: &Config,
    service: &str,
    suffix: &str,
    default: &str,
) -> Result<i64, Fatal> {
    let own = format!("{service}_{suffix}");
    let name = if config.is_known(&own) {
        own.as_str()
    } else {
        default
    };
    config.integer(name).map_err(fatal)
}

fn count(n: i64) -> usize {
    usize::try_from(n.max(1)).unwrap_or(usize::MAX)
}

/// The scheduler for `config` and the transports of `master`; the smtp
/// and lmtp transports resolve with `dns`.
pub(crate) fn scheduler(
    config: &Config,
    master: &MasterCf,
    master_path: &str,
    registry: &Registry,
    cleanup: Arc<Cleanup>,
    master_log: &Log,
    dns: &Arc<dyn Resolver>,
) -> Result<Scheduler, Fatal> {
    let hostname = config.expanded("myhostname").map_err(fatal)?;
    let syslog_name = config.expanded("syslog_name").map_err(fatal)?;
    let clock: Arc<dyn Fn() -> SystemTime + Send + Sync> = Arc::new(SystemTime::now);
    // As root, mailboxes are given to their owners (virtual_uid_maps).
    let as_root = nix::unistd::geteuid().is_root();
    let mut transports = HashMap::new();
    let agents: Arc<OnceLock<HashMap<String, Arc<dyn DeliveryAgent>>>> = Arc::default();
    for service in master.effective_services() {
        let program = service.command().program();
        if !runs_inside(program) {
            continue;
        }
        let name = service.name();
        let svc_config = config.with_overrides(service.command().overrides());
        let agent: Arc<dyn DeliveryAgent> = match program {
            "virtual" => {
                let mut vc = VirtualConfig::from_config(&svc_config, registry).map_err(fatal)?;
                vc.set_owner = as_root;
                Arc::new(VirtualAgent::new(vc, Arc::clone(&clock), name))
            }
            "local" => {
                match LocalConfig::from_config(&svc_config, registry, name) {
                    Ok(local) => {
                        // mailbox_transport and fallback_transport name other
                        // services, known once all are built.
                        let others = Arc::clone(&agents);
                        Arc::new(LocalAgent::new(local, Arc::clone(&clock)).with_transports(
                            Arc::new(move |name: &str| others.get()?.get(name).cloned()),
                        ))
                    }
                    // As Postfix's local(8) with an alias database missing
                    // (Debian's default alias_maps before newaliases): the
                    // system runs, local mail waits and says why.
                    Err(e) => {
                        master_log.warning(&format!(
                        "{master_path}, line {}: service {name}: {e}; its mail is deferred until this is fixed",
                        service.line()
                    ));
                        Arc::new(Unavailable(format!("local delivery is unavailable: {e}")))
                    }
                }
            }
            "smtp" | "lmtp" => {
                let lmtp = program == "lmtp";
                let smtp = SmtpConfig::from_config(&svc_config, name, lmtp).map_err(fatal)?;
                let mut connector = Connector::from_config(&svc_config, lmtp).map_err(fatal)?;
                if let Some((tls, verification)) = client_tls(&svc_config, lmtp).map_err(fatal)? {
                    connector = connector.with_tls(tls, verification);
                }
                let syslog = svc_config.expanded("syslog_name").map_err(fatal)?;
                let agent_log = Log::new(&hostname, &syslog, program);
                let mut agent = SmtpAgent::new(smtp, connector, Arc::clone(dns));
                // The agent logs only its TLS summary, which Postfix
                // writes at smtp_tls_loglevel 1 and above.
                let tls_loglevel = svc_config
                    .integer(if lmtp {
                        "lmtp_tls_loglevel"
                    } else {
                        "smtp_tls_loglevel"
                    })
                    .map_err(fatal)?;
                if tls_loglevel >= 1 {
                    agent = agent.with_log(Arc::new(move |line: &str| agent_log.info(line)));
                }
                if let Some(sasl) =
                    SaslClient::from_config(&svc_config, registry, lmtp).map_err(fatal)?
                {
                    agent = agent.with_sasl(sasl);
                }
                if let Some(policy) = tls_policy(&svc_config, registry, lmtp, master_log)? {
                    agent = agent.with_tls_policy(policy);
                }
                Arc::new(agent)
            }
            "pipe" => {
                match PipeConfig::parse(name, service.command().operands(), &svc_config) {
                    Ok(pipe) => {
                        if pipe.run_as.is_none() {
                            master_log.info(&format!(
                                "service {name}: user={} not used: not running as root, commands run as this process's user",
                                pipe.user
                            ));
                        }
                        Arc::new(PipeAgent::new(pipe))
                    }
                    // One broken pipe entry must not stop the rest of the
                    // mail system: its mail waits (mail transport
                    // unavailable) until the entry is fixed.
                    Err(e) => {
                        master_log.warning(&format!(
                            "{master_path}, line {}: {e}: service not started",
                            service.line()
                        ));
                        continue;
                    }
                }
            }
            "discard" => Arc::new(Discard),
            "error" if name == "retry" => Arc::new(ErrorAgent::retry()),
            "error" => Arc::new(ErrorAgent::bounce()),
            _ => {
                master_log.info(&format!(
                    "{master_path}, line {}: service {name} ({program}): runs inside mtad",
                    service.line()
                ));
                continue;
            }
        };
        let default_limit = svc_config.integer("default_process_limit").map_err(fatal)?;
        let time_limit = if svc_config.is_known(&format!("{name}_time_limit")) {
            svc_config
                .time(&format!("{name}_time_limit"))
                .map_err(fatal)?
        } else {
            svc_config.time("command_time_limit").map_err(fatal)?
        };
        transports.insert(
            name.to_owned(),
            Transport {
                agent,
                process_limit: count(service.process_limit().map_or(default_limit, i64::from)),
                destination_concurrency_limit: count(per_transport(
                    &svc_config,
                    name,
                    "destination_concurrency_limit",
                    "default_destination_concurrency_limit",
                )?),
                recipient_limit: count(per_transport(
                    &svc_config,
                    name,
                    "destination_recipient_limit",
                    "default_destination_recipient_limit",
                )?),
                time_limit,
                initial_concurrency: count(per_transport(
                    &svc_config,
                    name,
                    "initial_destination_concurrency",
                    "initial_destination_concurrency",
                )?),
                failed_cohort_limit: count(per_transport(
                    &svc_config,
                    name,
                    "destination_concurrency_failed_cohort_limit",
                    "default_destination_concurrency_failed_cohort_limit",
                )?),
            },
        );
        master_log.info(&format!("service {name}: {program} delivery agent started"));
    }
    let _ = agents.set(
        transports
            .iter()
            .map(|(name, t): (&String, &Transport)| (name.clone(), Arc::clone(&t.agent)))
            .collect(),
    );
    let time = |name: &str| config.time(name).map_err(fatal);
    let scheduler_config = SchedulerConfig {
        minimal_backoff_time: time("minimal_backoff_time")?,
        maximal_backoff_time: time("maximal_backoff_time")?,
        queue_run_delay: time("queue_run_delay")?.max(Duration::from_secs(1)),
        maximal_queue_lifetime: time("maximal_queue_lifetime")?,
        bounce_queue_lifetime: time("bounce_queue_lifetime")?,
        message_active_limit: count(config.integer("qmgr_message_active_limit").map_err(fatal)?),
        delay_warning_time: time("delay_warning_time")?,
        defer_transports: config.list("defer_transports").map_err(fatal)?,
    };
    let router = AddressResolver::from_config(config, registry).map_err(fatal)?;
    let host = hostname.clone();
    let log = Arc::new(move |program: &str, line: &str| {
        Log::new(&host, &syslog_name, program).info(line);
    });
    let notices = NoticeConfig {
        hostname,
        bounce_size_limit: count(config.integer("bounce_size_limit").map_err(fatal)?),
        postmaster: postmaster_copies(config)?,
    };
    let queue = cleanup.queue().clone();
    Ok(Scheduler::new(
        queue,
        Arc::new(router),
        transports,
        scheduler_config,
        log,
        clock,
    )
    .with_notices(cleanup, notices))
}

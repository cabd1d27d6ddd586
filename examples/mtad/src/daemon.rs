//! The mail system in the foreground: opens the queue (recovering it),
//! starts each `smtpd` service of `master.cf`, and runs until SIGINT or
//! SIGTERM, then shuts the listeners down gracefully.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mta_core::config::Config;
use mta_core::config::master_cf::MasterCf;
use mta_core::dns::Resolver;
use mta_maps::registry::{OpenContext, Registry};
use mta_queue::cleanup::Cleanup;
use mta_queue::store::{Committer, Queue};
use mta_queue::virtual_alias::VirtualAliases;

use crate::qmgr;
use mta_restrictions::content::{ContentLimits, ContentTables};
use mta_restrictions::policy::{PolicyClient, StdPolicyClient};
use mta_restrictions::relay::{RelaySafety, relay_safety};
use mta_restrictions::restriction::Restrictions;
use mta_smtp::dns::HickoryResolver;
use mta_smtp::server::ServerConfig;
use mta_smtp::transport::{ConnectionLimits, Server, TransportConfig};

use crate::Fatal;
use crate::log::Log;
use crate::smtpd::{Service, Session, listen_address};

fn fatal(what: impl std::fmt::Display) -> Fatal {
    Fatal(what.to_string())
}

fn content_limits(config: &Config) -> Result<ContentLimits, Fatal> {
    let size = |name: &str| -> Result<usize, Fatal> {
        Ok(usize::try_from(config.integer(name).map_err(fatal)?.max(0)).unwrap_or(usize::MAX))
    };
    Ok(ContentLimits {
        header_size_limit: size("header_size_limit")?,
        line_length_limit: size("line_length_limit")?.max(1),
        body_checks_size_limit: size("body_checks_size_limit")?,
        mime_nesting_limit: size("mime_nesting_limit")?,
        disable_mime_input_processing: config
            .boolean("disable_mime_input_processing")
            .map_err(fatal)?,
    })
}

/// Runs the services of `config` and `master_text` until a signal.
pub(crate) async fn run(
    dir: &Path,
    config: Config,
    master_text: &str,
    master_path: &str,
) -> Result<(), Fatal> {
    let (master, _) = MasterCf::parse(master_text, master_path).map_err(fatal)?;
    let hostname = config.expanded("myhostname").map_err(fatal)?;
    let syslog_name = config.expanded("syslog_name").map_err(fatal)?;
    let mail_name = config.expanded("mail_name").map_err(fatal)?;
    let master_log = Log::new(&hostname, &syslog_name, "master");

    let queue_dir = config.expanded("queue_directory").map_err(fatal)?;
    let queue =
        Queue::open(&queue_dir).map_err(|e| fatal(format!("queue_directory {queue_dir}: {e}")))?;
    let recovery = queue
        .recover()
        .map_err(|e| fatal(format!("recover {queue_dir}: {e}")))?;
    for q in &recovery.quarantined {
        master_log.warning(&format!(
            "{}: moved from {} to corrupt: {}",
            q.id,
            q.from.dir_name(),
            q.reason
        ));
    }
    let committer = Committer::start(4).map_err(|e| fatal(format!("start committer: {e}")))?;
    let registry = Registry::new(OpenContext {
        config_directory: Some(dir.to_path_buf()),
        ..OpenContext::default()
    });
    let expanded = |name: &str| config.expanded(name).map_err(fatal);
    let tables = ContentTables::open(
        &registry,
        &expanded("header_checks")?,
        &expanded("mime_header_checks")?,
        &expanded("nested_header_checks")?,
        &expanded("body_checks")?,
    )
    .map_err(fatal)?;
    let aliases = VirtualAliases::from_config(&config, &registry).map_err(fatal)?;
    // Cleanup wakes the queue manager after each commit to incoming.
    let wake_qmgr = Arc::new(tokio::sync::Notify::new());
    let cleanup = Arc::new(
        Cleanup::new(queue, committer, Arc::new(tables), content_limits(&config)?)
            .with_virtual_aliases(aliases)
            .with_queue_manager(Arc::clone(&wake_qmgr)),
    );
    let dns: Arc<dyn Resolver> = Arc::new(match HickoryResolver::from_system() {
        Ok(r) => r,
        Err(e) => {
            // Without name servers every lookup fails temporarily: mail
            // that needs DNS is deferred (4xx), never refused.
            master_log.warning(&format!(
                "DNS resolver configuration: {e}: DNS lookups will fail temporarily"
            ));
            HickoryResolver::with_servers(&[]).map_err(fatal)?
        }
    });

    let policy: Arc<dyn PolicyClient> =
        Arc::new(crate::policy::OffRuntime(Arc::new(StdPolicyClient::new())));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let scheduler = qmgr::scheduler(
        &config,
        &master,
        master_path,
        &registry,
        Arc::clone(&cleanup),
        &master_log,
        &dns,
    )?;
    let scheduler = Arc::new(scheduler.with_waker(Arc::clone(&wake_qmgr)));
    let mut servers = tokio::task::JoinSet::new();
    {
        let mut stop = stop_rx.clone();
        let scheduler = Arc::clone(&scheduler);
        servers.spawn(async move {
            scheduler
                .run(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        });
    }
    for service in master.effective_services() {
        let program = service.command().program();
        if qmgr::runs_inside(program) {
            continue;
        }
        let Some(endpoint) = service.inet_endpoint().filter(|_| program == "smtpd") else {
            master_log.info(&format!(
                "{master_path}, line {}: service {}/{} ({program}): not started: not built yet",
                service.line(),
                service.name(),
                service.service_type()
            ));
            continue;
        };
        let overrides = service.command().overrides().to_vec();
        let svc_config = config.with_overrides(&overrides);
        let session = ServerConfig::from_config(&svc_config, false).map_err(fatal)?;
        let mut restrictions = Restrictions::from_config(&svc_config, &registry).map_err(fatal)?;
        // Never an open relay: refuse to start, as Postfix's smtpd does
        // without a working reject_unauth_destination.
        if let safety @ RelaySafety::OpenRelay { .. } = relay_safety(&svc_config, &restrictions) {
            return Err(fatal(format!(
                "service {} ({master_path}, line {}): {safety}",
                service.name(),
                service.line()
            )));
        }
        restrictions.set_policy_client(Arc::clone(&policy));
        let svc_syslog = svc_config.expanded("syslog_name").map_err(fatal)?;
        let receive_overrides = svc_config.list("receive_override_options").map_err(fatal)?;
        let log = Log::new(&hostname, &svc_syslog, "smtpd");
        for w in restrictions.warnings() {
            log.warning(w);
        }
        let address = listen_address(endpoint.host, endpoint.port)
            .map_err(|e| fatal(format!("{master_path}, line {}: {e}", service.line())))?;
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| fatal(format!("bind {address}: {e}")))?;
        let wrapper = svc_config.boolean("smtpd_tls_wrappermode").map_err(fatal)?;
        // The session settings already read smtpd_tls_security_level.
        let tls = if session.starttls || wrapper {
            crate::tls::server_tls_for(&svc_config, &log, &master_log)?
        } else {
            None
        };
        let sasl = sasl_for(&svc_config, &registry, &log).await?;
        let mut session = session;
        if let Some(auth) = &sasl {
            session.auth_mechanisms = offered_mechanisms(&svc_config, auth.mechanisms())?;
        }
        let wrapper = svc_config.boolean("smtpd_tls_wrappermode").map_err(fatal)?;
        if wrapper && tls.is_none() {
            return Err(fatal(format!(
                "{master_path}, line {}: service {}: smtpd_tls_wrappermode = yes needs a certificate (smtpd_tls_cert_file or smtpd_tls_chain_files)",
                service.line(),
                service.name()
            )));
        }
        let transport = TransportConfig::new(session, tls, wrapper).map_err(fatal)?;
        let default_limit = config.integer("default_process_limit").map_err(fatal)?;
        let limits = ConnectionLimits {
            max_connections: service
                .process_limit()
                .map_or(default_limit.max(1) as usize, |n| n.max(1) as usize),
            client_connection_count_limit: svc_config
                .integer("smtpd_client_connection_count_limit")
                .map_err(fatal)?
                .max(0) as usize,
            ..ConnectionLimits::default()
        };
        master_log.info(&format!(
            "service {}: smtpd listening on {address}",
            service.name()
        ));
        let shared = Arc::new(Service {
            restrictions,
            dns: Arc::clone(&dns),
            cleanup: Arc::clone(&cleanup),
            hostname: hostname.clone(),
            mail_name: mail_name.clone(),
            fast_flush_domains: svc_config
                .list("fast_flush_domains")
                .map_err(fatal)?
                .into_iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            queue_minfree: u64::try_from(svc_config.integer("queue_minfree").map_err(fatal)?)
                .unwrap_or(0),
            message_size_limit: u64::try_from(
                svc_config.integer("message_size_limit").map_err(fatal)?,
            )
            .unwrap_or(0),
            content_filter: svc_config
                .expanded("content_filter")
                .map_err(fatal)?
                .trim()
                .to_owned(),
            no_address_mappings: receive_overrides.iter().any(|o| o == "no_address_mappings"),
            no_header_body_checks: receive_overrides
                .iter()
                .any(|o| o == "no_header_body_checks"),
            sasl,
            auth_rate: match svc_config
                .integer("smtpd_client_auth_rate_limit")
                .map_err(fatal)?
            {
                n if n > 0 => Some(crate::smtpd::RateLimit::new(
                    n as usize,
                    svc_config.time("anvil_rate_time_unit").map_err(fatal)?,
                )),
                _ => None,
            },
            name: service.name().to_owned(),
            tls_received_header: svc_config
                .boolean("smtpd_tls_received_header")
                .map_err(fatal)?,
            sasl_header: svc_config
                .boolean("smtpd_sasl_authenticated_header")
                .map_err(fatal)?,
            log,
        });
        let mut stop = stop_rx.clone();
        servers.spawn(async move {
            Server::new(listener, transport, limits)
                .run(move || Session::new(Arc::clone(&shared)), async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        });
    }
    master_log.info(&format!(
        "daemon started -- configuration {}, queue {queue_dir}",
        dir.display()
    ));
    wait_for_signal().await;
    master_log.info("terminating on signal");
    let _ = stop_tx.send(true);
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::time::timeout_at(deadline.into(), servers.join_next())
        .await
        .is_ok_and(|r| r.is_some())
    {}
    Ok(())
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

/// The SASL back end of an smtpd service with `smtpd_sasl_auth_enable =
/// yes`: Dovecot's auth service (`smtpd_sasl_type = dovecot`, at
/// `smtpd_sasl_path`, relative to `queue_directory`), whose mechanisms
/// are asked for now (when Dovecot cannot be reached, AUTH is not
/// offered and the log says why); or mtad's own password table
/// (`smtpd_sasl_type = table`, `smtpd_sasl_path` a lookup table of login
/// names to password hashes made by `mtad saslpasswd`).
async fn sasl_for(
    config: &mta_core::config::Config,
    registry: &mta_maps::registry::Registry,
    log: &Log,
) -> Result<Option<Arc<dyn mta_smtp::sasl::Authenticator>>, Fatal> {
    if !config.boolean("smtpd_sasl_auth_enable").map_err(fatal)? {
        return Ok(None);
    }
    let kind = config.expanded("smtpd_sasl_type").map_err(fatal)?;
    let path = config.expanded("smtpd_sasl_path").map_err(fatal)?;
    if kind.trim() == "table" {
        let table = registry
            .open_list(path.trim())
            .map_err(|e| fatal(config.bad_value("smtpd_sasl_path", path.trim(), e.to_string())))?;
        return Ok(Some(Arc::new(password_table(Arc::new(table)))));
    }
    if kind.trim() != "dovecot" {
        log.warning(&format!(
            "smtpd_sasl_type = {}: not supported (use dovecot, with smtpd_sasl_path naming its auth socket, or table, with smtpd_sasl_path naming a password table); AUTH is not offered",
            kind.trim()
        ));
        return Ok(None);
    }
    let base = std::path::PathBuf::from(config.expanded("queue_directory").map_err(fatal)?);
    let auth = mta_smtp::sasl::DovecotAuth::new(path.trim(), &base);
    match auth.refresh().await {
        Ok(m) => log.info(&format!(
            "SASL: Dovecot auth service at {}: mechanisms {}",
            path.trim(),
            m.join(" ")
        )),
        Err(e) => log.warning(&format!(
            "SASL: cannot reach the Dovecot auth service at {}: {e}; AUTH is not offered",
            path.trim()
        )),
    }
    Ok(Some(Arc::new(auth)))
}

/// The mechanisms to announce: the back end's, less what
/// `smtpd_sasl_security_options` forbids (`noanonymous`, `noplaintext`).
fn offered_mechanisms(
    config: &mta_core::config::Config,
    available: Vec<String>,
) -> Result<Vec<String>, Fatal> {
    let options = config.list("smtpd_sasl_security_options").map_err(fatal)?;
    let no = |o: &str| options.iter().any(|x| x == o);
    Ok(available
        .into_iter()
        .filter(|m| !(no("noanonymous") && m == "ANONYMOUS"))
        .filter(|m| !(no("noplaintext") && (m == "PLAIN" || m == "LOGIN")))
        .collect())
}

/// PLAIN, LOGIN and SCRAM-SHA-256 against `table`: login name to hash.
fn password_table(table: Arc<mta_maps::list::MapList>) -> mta_smtp::sasl::PasswordCheck {
    mta_smtp::sasl::PasswordCheck::new(Arc::new(move |user: &str| {
        let table = Arc::clone(&table);
        let user = user.to_owned();
        Box::pin(async move {
            table
                .lookup(&user)
                .await
                .map(|v| v.map(|v| v.into_owned()))
                .map_err(|e| format!("password table: {e}"))
        })
    }))
}

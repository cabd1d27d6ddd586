//! The mail system in the foreground: takes the pid file's lock, opens
//! the queue (recovering it), starts the scheduler with its transports,
//! pickup and the control sockets, and each `smtpd` service of
//! `master.cf`; runs until SIGINT or SIGTERM, then shuts the listeners
//! down gracefully.
//!
//! SIGHUP (`mtad reload`) rereads `main.cf`, `master.cf` and every table
//! they name, and when that works puts the new configuration in force
//! without dropping a connection: listeners whose address stays keep
//! their socket and open sessions (which finish with the settings they
//! started with), new sessions get the new settings; a new scheduler
//! takes over while the old one finishes the deliveries under way. A
//! configuration with errors is reported and the running one stays.
//! Changes of `queue_directory` and of a service's process limit need a
//! restart.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use mta_core::address_class::RewriteConfig;
use mta_core::config::Config;
use mta_core::config::master_cf::MasterCf;
use mta_core::dns::Resolver;
use mta_maps::registry::{OpenContext, Registry};
use mta_queue::cleanup::Cleanup;
use mta_queue::notice::NoticeConfig;
use mta_queue::pickup::{Pickup, PickupConfig};
use mta_queue::scheduler::{Flush, Scheduler};
use mta_queue::store::{Committer, Queue};
use mta_queue::virtual_alias::VirtualAliases;

use crate::qmgr;
use mta_restrictions::content::{ContentLimits, ContentTables};
use mta_restrictions::policy::{PolicyClient, StdPolicyClient};
use mta_restrictions::relay::{RelaySafety, relay_safety};
use mta_restrictions::restriction::Restrictions;
use mta_smtp::dns::HickoryResolver;
use mta_smtp::server::ServerConfig;
use mta_smtp::transport::{ConnectionLimits, Server, TransportConfig, TransportHandle};

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

/// What lives as long as the process: the queue, its committer, the
/// resolver, and the slots through which the control sockets and ETRN
/// reach the scheduler and pickup of the current configuration.
struct Base {
    dir: PathBuf,
    explicit: bool,
    queue_dir: String,
    queue: Queue,
    committer: Committer,
    wake: Arc<tokio::sync::Notify>,
    dns: Arc<dyn Resolver>,
    policy: Arc<dyn PolicyClient>,
    scheduler: SchedulerSlot,
    pickup: PickupSlot,
    fast_flush_domains: Arc<RwLock<Vec<String>>>,
}

/// The pickup in force and its scan interval.
type PickupSlot = Arc<RwLock<Option<(Arc<Pickup>, Duration)>>>;

/// The scheduler of the configuration in force, for ETRN and flushes.
pub(crate) type SchedulerSlot = Arc<RwLock<Option<Arc<Scheduler>>>>;

/// One `smtpd` service of `master.cf`, built and ready to listen.
struct ServiceSpec {
    name: String,
    address: SocketAddr,
    shared: Arc<Service>,
    transport: TransportConfig,
    limits: ConnectionLimits,
}

/// Everything built from one reading of the configuration.
struct Generation {
    master_log: Log,
    cleanup: Arc<Cleanup>,
    scheduler: Arc<Scheduler>,
    pickup: Option<(Arc<Pickup>, Duration)>,
    services: Vec<ServiceSpec>,
    fast_flush_domains: Vec<String>,
    config_summary: String,
}

/// A listener that runs, and how to give it new settings or stop it.
struct Listening {
    name: String,
    slot: Arc<RwLock<Arc<Service>>>,
    transport: TransportHandle,
    stop: tokio::sync::watch::Sender<bool>,
}

/// The running services.
struct Running {
    listeners: HashMap<SocketAddr, Listening>,
    scheduler_stop: Option<tokio::sync::watch::Sender<bool>>,
    /// Listeners, schedulers (the current one and any still finishing
    /// their deliveries after a reload), pickup and the flush socket.
    tasks: tokio::task::JoinSet<()>,
    cleanup: Option<Arc<Cleanup>>,
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read().unwrap_or_else(|e| e.into_inner()).clone()
}

fn write<T>(lock: &RwLock<T>, value: T) {
    *lock.write().unwrap_or_else(|e| e.into_inner()) = value;
}

/// Runs the services of `config` and `master_text` until SIGTERM or
/// SIGINT; SIGHUP rereads the configuration.
pub(crate) async fn run(
    dir: &Path,
    explicit: bool,
    config: Config,
    master_text: &str,
    master_path: &str,
) -> Result<(), Fatal> {
    let hostname = config.expanded("myhostname").map_err(fatal)?;
    let syslog_name = config.expanded("syslog_name").map_err(fatal)?;
    crate::log::configure(&config)?;
    crate::log::install_tracing(&hostname, &syslog_name);
    let master_log = Log::new(&hostname, &syslog_name, "master");
    // One daemon per configuration: the pid file's lock says so.
    let data_dir = PathBuf::from(config.expanded("data_directory").map_err(fatal)?);
    let _pid_lock = crate::pidfile::acquire(&data_dir)?;

    let queue_dir = config.expanded("queue_directory").map_err(fatal)?;
    let queue =
        Queue::open(&queue_dir).map_err(|e| fatal(format!("queue_directory {queue_dir}: {e}")))?;
    queue
        .set_permissions()
        .map_err(|e| fatal(format!("queue_directory {queue_dir}: permissions: {e}")))?;
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
    let base = Base {
        dir: dir.to_path_buf(),
        explicit,
        queue_dir: queue_dir.clone(),
        queue,
        committer,
        wake: Arc::new(tokio::sync::Notify::new()),
        dns,
        policy: Arc::new(crate::policy::OffRuntime(Arc::new(StdPolicyClient::new()))),
        scheduler: Arc::default(),
        pickup: Arc::default(),
        fast_flush_domains: Arc::default(),
    };
    let (control_datagram, control_listener) = crate::control::bind(Path::new(&queue_dir))
        .map_err(|e| fatal(format!("{queue_dir}/public: {e}")))?;
    let (master, _) = MasterCf::parse(master_text, master_path).map_err(fatal)?;
    let generation = build(&base, &config, &master, master_path, None).await?;
    let mut running = Running {
        listeners: HashMap::new(),
        scheduler_stop: None,
        tasks: tokio::task::JoinSet::new(),
        cleanup: None,
    };
    apply(&base, &mut running, generation, true).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    running.tasks.spawn(pickup_loop(
        Arc::clone(&base.pickup),
        control_datagram,
        Log::new(&hostname, &syslog_name, "pickup"),
        stop_rx.clone(),
    ));
    running.tasks.spawn(flush_loop(
        Arc::clone(&base.scheduler),
        Arc::clone(&base.fast_flush_domains),
        control_listener,
        Log::new(&hostname, &syslog_name, "flush"),
        stop_rx.clone(),
    ));
    master_log.info(&format!(
        "daemon started -- configuration {}, queue {queue_dir}",
        dir.display()
    ));
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| fatal(format!("SIGHUP handler: {e}")))?;
    loop {
        tokio::select! {
            () = wait_for_signal() => break,
            _ = hangup.recv() => {
                master_log.info(&format!("reload -- configuration {}", dir.display()));
                match reload(&base, running.cleanup.as_deref()).await {
                    Ok(generation) => {
                        let log = generation.master_log.clone();
                        if let Err(e) = apply(&base, &mut running, generation, false).await {
                            log.warning(&format!("reload: {}", e.0));
                        }
                    }
                    Err(e) => master_log.warning(&format!(
                        "reload failed: {}; the running configuration stays in force",
                        e.0
                    )),
                }
            }
        }
    }
    master_log.info("terminating on signal");
    let _ = stop_tx.send(true);
    for l in running.listeners.values() {
        let _ = l.stop.send(true);
    }
    // The scheduler's deliveries under way are dropped: their messages
    // stay in active and go back to incoming at the next start.
    if let Some(s) = &running.scheduler_stop {
        let _ = s.send(true);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::time::timeout_at(deadline.into(), running.tasks.join_next())
        .await
        .is_ok_and(|r| r.is_some())
    {}
    running.tasks.abort_all();
    Ok(())
}

/// Rereads `main.cf` and `master.cf` and builds a new generation from
/// them, or says why not (the running one stays).
async fn reload(base: &Base, previous: Option<&Cleanup>) -> Result<Generation, Fatal> {
    let loaded = crate::check(base.explicit.then(|| base.dir.clone()))?;
    // The log is reopened (rotation) or moved as the new configuration says.
    crate::log::configure(&loaded.config)?;
    let queue_dir = loaded.config.expanded("queue_directory").map_err(fatal)?;
    if queue_dir != base.queue_dir {
        return Err(fatal(format!(
            "queue_directory changed from {} to {queue_dir}: restart mtad to move the queue",
            base.queue_dir
        )));
    }
    let master_path = base.dir.join("master.cf").display().to_string();
    let master_text = loaded.master_text.clone().unwrap_or_default();
    let (master, _) = MasterCf::parse(&master_text, &master_path).map_err(fatal)?;
    build(base, &loaded.config, &master, &master_path, previous).await
}

/// Puts `generation` in force: a new scheduler takes over while the old
/// one finishes its deliveries; listeners on the same address keep their
/// socket and open sessions and get the new settings for new sessions;
/// new addresses are bound, vanished ones stopped.
async fn apply(
    base: &Base,
    running: &mut Running,
    generation: Generation,
    first: bool,
) -> Result<(), Fatal> {
    let Generation {
        master_log,
        cleanup,
        scheduler,
        pickup,
        services,
        fast_flush_domains,
        config_summary,
    } = generation;
    // Bind what is new first: on a first start a failure is fatal, on a
    // reload it is reported and the rest goes ahead.
    let mut bound = Vec::new();
    for spec in &services {
        if running.listeners.contains_key(&spec.address) {
            continue;
        }
        match tokio::net::TcpListener::bind(spec.address).await {
            Ok(l) => bound.push((spec.address, l)),
            Err(e) if first => return Err(fatal(format!("bind {}: {e}", spec.address))),
            Err(e) => master_log.warning(&format!(
                "service {}: bind {}: {e}; not listening",
                spec.name, spec.address
            )),
        }
    }
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    if let Some(old) = running.scheduler_stop.replace(stop_tx) {
        let _ = old.send(true);
    }
    {
        let scheduler = Arc::clone(&scheduler);
        running.tasks.spawn(async move {
            scheduler
                .run_then_drain(async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                })
                .await;
        });
    }
    write(&base.scheduler, Some(scheduler));
    write(&base.pickup, pickup);
    write(&base.fast_flush_domains, fast_flush_domains);
    running.cleanup = Some(cleanup);
    let wanted: Vec<SocketAddr> = services.iter().map(|s| s.address).collect();
    for (address, l) in &running.listeners {
        if !wanted.contains(address) {
            master_log.info(&format!(
                "service {}: no longer listening on {address}",
                l.name
            ));
            let _ = l.stop.send(true);
        }
    }
    running.listeners.retain(|a, _| wanted.contains(a));
    for spec in services {
        if let Some(l) = running.listeners.get_mut(&spec.address) {
            write(&l.slot, spec.shared);
            l.transport.replace(spec.transport);
            l.name = spec.name;
            continue;
        }
        let Some(i) = bound.iter().position(|(a, _)| *a == spec.address) else {
            continue;
        };
        let (address, listener) = bound.swap_remove(i);
        master_log.info(&format!(
            "service {}: smtpd listening on {address}",
            spec.name
        ));
        let server = Server::new(listener, spec.transport, spec.limits);
        let slot = Arc::new(RwLock::new(spec.shared));
        let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
        running.listeners.insert(
            address,
            Listening {
                name: spec.name,
                slot: Arc::clone(&slot),
                transport: server.transport_handle(),
                stop,
            },
        );
        running.tasks.spawn(async move {
            server
                .run(move || Session::new(read(&slot)), async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                })
                .await;
        });
    }
    if !first {
        master_log.info(&format!("reloaded: {config_summary}"));
    }
    Ok(())
}

/// Builds the cleanup, scheduler, pickup and smtpd services of one
/// configuration.
async fn build(
    base: &Base,
    config: &Config,
    master: &MasterCf,
    master_path: &str,
    previous: Option<&Cleanup>,
) -> Result<Generation, Fatal> {
    let dir = &base.dir;
    let hostname = config.expanded("myhostname").map_err(fatal)?;
    let syslog_name = config.expanded("syslog_name").map_err(fatal)?;
    let mail_name = config.expanded("mail_name").map_err(fatal)?;
    let master_log = Log::new(&hostname, &syslog_name, "master");
    let registry = Registry::new(OpenContext {
        config_directory: Some(dir.clone()),
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
    let aliases = VirtualAliases::from_config(config, &registry).map_err(fatal)?;
    let drop_headers = config.list("message_drop_headers").map_err(fatal)?;
    // Every generation's cleanup continues the first one's queue ID
    // sequence, so that sessions still open with the old one never make
    // an ID the new one makes.
    let limits = content_limits(config)?;
    let cleanup = match previous {
        Some(old) => old.reconfigured(Arc::new(tables), limits),
        None => Cleanup::new(
            base.queue.clone(),
            base.committer.clone(),
            Arc::new(tables),
            limits,
        ),
    };
    let cleanup = Arc::new(
        cleanup
            .with_virtual_aliases(aliases)
            .with_canonical(
                mta_queue::canonical::Canonical::from_config(config, &registry).map_err(fatal)?,
            )
            .with_drop_headers(drop_headers)
            .with_hop_limit(
                usize::try_from(config.integer("hopcount_limit").map_err(fatal)?.max(0))
                    .unwrap_or(50),
            )
            .with_queue_manager(Arc::clone(&base.wake)),
    );
    let scheduler = qmgr::scheduler(
        config,
        master,
        master_path,
        &registry,
        Arc::clone(&cleanup),
        &master_log,
        &base.dns,
    )?;
    let scheduler = Arc::new(scheduler.with_waker(Arc::clone(&base.wake)));
    let pickup = pickup_for(config, master, &cleanup, &hostname, &mail_name)?;
    if let Some((_, every)) = &pickup {
        master_log.info(&format!(
            "service pickup: runs inside mtad: the maildrop is scanned when sendmail says so and every {}s",
            every.as_secs()
        ));
    }
    let mut services = Vec::new();
    let mut skipped = Vec::new();
    for service in master.effective_services() {
        let program = service.command().program();
        if qmgr::runs_inside(program) || program == "pickup" {
            continue;
        }
        let Some(endpoint) = service.inet_endpoint().filter(|_| program == "smtpd") else {
            skipped.push(format!(
                "{master_path}, line {}: service {}/{} ({program}): {}",
                service.line(),
                service.name(),
                service.service_type(),
                not_started(program)
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
        restrictions.set_policy_client(Arc::clone(&base.policy));
        let svc_syslog = svc_config.expanded("syslog_name").map_err(fatal)?;
        let receive_overrides = svc_config.list("receive_override_options").map_err(fatal)?;
        let log = Log::new(&hostname, &svc_syslog, "smtpd");
        for w in restrictions.warnings() {
            log.warning(w);
        }
        let address = listen_address(endpoint.host, endpoint.port)
            .map_err(|e| fatal(format!("{master_path}, line {}: {e}", service.line())))?;
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
        if wrapper && tls.is_none() {
            return Err(fatal(format!(
                "{master_path}, line {}: service {}: smtpd_tls_wrappermode = yes needs a certificate (smtpd_tls_cert_file or smtpd_tls_chain_files)",
                service.line(),
                service.name()
            )));
        }
        let mut transport = TransportConfig::new(session, tls, wrapper).map_err(fatal)?;
        // -v in master.cf traces every session of the service;
        // debug_peer_list those of the clients it names.
        if service.command().verbosity() > 0 {
            transport = transport.with_trace(Arc::new(|_| true));
        } else {
            let peers = svc_config.list("debug_peer_list").map_err(fatal)?;
            if !peers.is_empty() {
                let (nets, ignored) = peer_networks(&peers);
                for entry in ignored {
                    log.warning(&format!(
                        "debug_peer_list: {entry}: only addresses and networks are matched; ignored"
                    ));
                }
                if !nets.is_empty() {
                    transport = transport.with_trace(Arc::new(move |ip| {
                        nets.iter()
                            .any(|(net, prefix)| in_network(ip, *net, *prefix))
                    }));
                }
            }
        }
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
        let shared = Arc::new(Service {
            restrictions,
            dns: Arc::clone(&base.dns),
            cleanup: Arc::clone(&cleanup),
            hostname: hostname.clone(),
            mail_name: mail_name.clone(),
            fast_flush_domains: lower_list(&svc_config, "fast_flush_domains")?,
            scheduler: Arc::clone(&base.scheduler),
            local_header_rewrite_clients: svc_config
                .list("local_header_rewrite_clients")
                .map_err(fatal)?,
            remote_header_rewrite: !svc_config
                .expanded("remote_header_rewrite_domain")
                .map_err(fatal)?
                .trim()
                .is_empty(),
            own_addresses: svc_config.own_addresses().unwrap_or_default(),
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
            tls_loglevel: svc_config.integer("smtpd_tls_loglevel").map_err(fatal)?,
            tls_received_header: svc_config
                .boolean("smtpd_tls_received_header")
                .map_err(fatal)?,
            sasl_header: svc_config
                .boolean("smtpd_sasl_authenticated_header")
                .map_err(fatal)?,
            log,
        });
        services.push(ServiceSpec {
            name: service.name().to_owned(),
            address,
            shared,
            transport,
            limits,
        });
    }
    for line in &skipped {
        master_log.info(line);
    }
    let config_summary = format!(
        "{} smtpd service(s), pickup {}",
        services.len(),
        if pickup.is_some() { "on" } else { "off" }
    );
    Ok(Generation {
        master_log,
        cleanup,
        scheduler,
        pickup,
        services,
        fast_flush_domains: lower_list(config, "fast_flush_domains")?,
        config_summary,
    })
}

/// Why a `master.cf` service does not start as a service of its own:
/// mtad does that work inside itself, does not need it, or lacks it.
fn not_started(program: &str) -> &'static str {
    match program {
        "flush" => "runs inside mtad: flushes come through queue_directory/public/flush",
        "showq" => "runs inside mtad: mailq reads the queue itself",
        "anvil" => "runs inside mtad: the smtpd services count connections and rates",
        "scache" => "runs inside mtad: the smtp client keeps its own connection cache",
        "tlsmgr" => "not needed: rustls keeps TLS session state and randomness in the process",
        "proxymap" => {
            "not needed: tables open in the one mtad process (proxy:TYPE:NAME is TYPE:NAME)"
        }
        "postlogd" => "not needed: mtad writes its own log (standard error or maillog_file)",
        "verify" => "not started: address verification (reject_unverified_*) is not built",
        "postscreen" | "dnsblog" | "tlsproxy" => "not started: not built yet",
        "spawn" => "not started: spawn(8) is not built (policy services run on their own)",
        _ => "not started: mtad has no such program",
    }
}

/// The addresses and networks of `debug_peer_list` (`192.0.2.1`,
/// `192.0.2.0/24`, `[2001:db8::]/32`), and the entries that are neither.
fn peer_networks(entries: &[String]) -> (Vec<(std::net::IpAddr, u8)>, Vec<String>) {
    let mut nets = Vec::new();
    let mut ignored = Vec::new();
    for e in entries {
        let (addr, prefix) = match e.split_once('/') {
            Some((a, p)) => (a, p.parse::<u8>().ok()),
            None => (e.as_str(), None),
        };
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        match addr.parse::<std::net::IpAddr>() {
            Ok(ip) => {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                nets.push((ip, prefix.unwrap_or(max).min(max)));
            }
            Err(_) => ignored.push(e.clone()),
        }
    }
    (nets, ignored)
}

/// Whether `ip` is in `net`/`prefix`.
fn in_network(ip: std::net::IpAddr, net: std::net::IpAddr, prefix: u8) -> bool {
    let (a, b, bits) = match (ip, net) {
        (std::net::IpAddr::V4(a), std::net::IpAddr::V4(b)) => {
            (u128::from(u32::from(a)), u128::from(u32::from(b)), 32u32)
        }
        (std::net::IpAddr::V6(a), std::net::IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    let shift = bits - u32::from(prefix).min(bits);
    if shift >= 128 {
        return true;
    }
    (a >> shift) == (b >> shift)
}

fn lower_list(config: &Config, name: &str) -> Result<Vec<String>, Fatal> {
    Ok(config
        .list(name)
        .map_err(fatal)?
        .into_iter()
        .map(|d| d.to_ascii_lowercase())
        .collect())
}

/// The pickup of `master.cf`'s `pickup` service (its wake-up column is
/// the scan interval; Postfix's default is 60 seconds), or `None` when
/// there is none: mail then waits in the maildrop.
fn pickup_for(
    config: &Config,
    master: &MasterCf,
    cleanup: &Arc<Cleanup>,
    hostname: &str,
    mail_name: &str,
) -> Result<Option<(Arc<Pickup>, Duration)>, Fatal> {
    let Some(service) = master
        .effective_services()
        .into_iter()
        .find(|s| s.command().program() == "pickup")
    else {
        return Ok(None);
    };
    let svc_config = config.with_overrides(service.command().overrides());
    let interval = service
        .wakeup()
        .interval()
        .unwrap_or(Duration::from_secs(60));
    let pickup = Pickup::new(
        Arc::clone(cleanup),
        PickupConfig {
            rewrite: RewriteConfig::from_config(&svc_config).map_err(fatal)?,
            hostname: hostname.to_owned(),
            mail_name: mail_name.to_owned(),
            header_address_token_limit: usize::try_from(
                svc_config
                    .integer("header_address_token_limit")
                    .map_err(fatal)?,
            )
            .unwrap_or(10240),
            undisclosed_recipients_header: svc_config
                .expanded("undisclosed_recipients_header")
                .map_err(fatal)?,
            notice: NoticeConfig {
                hostname: hostname.to_owned(),
                bounce_size_limit: usize::try_from(
                    svc_config.integer("bounce_size_limit").map_err(fatal)?,
                )
                .unwrap_or(50000),
                postmaster: crate::qmgr::postmaster_copies(&svc_config)?,
            },
            content_filter: svc_config.expanded("content_filter").map_err(fatal)?,
        },
    );
    Ok(Some((Arc::new(pickup), interval)))
}

/// Scans the maildrop when `sendmail` pokes the pickup socket, and every
/// wake-up interval in case a poke was lost (or mail was dropped while
/// the daemon was down).
async fn pickup_loop(
    slot: PickupSlot,
    socket: tokio::net::UnixDatagram,
    log: Log,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut buf = [0u8; 64];
    loop {
        let current = read(&slot);
        if let Some((pickup, _)) = &current {
            pickup.scan(&|line: &str| log.info(line)).await;
        }
        let wait = current.map_or(Duration::from_secs(60), |(_, w)| w);
        tokio::select! {
            r = socket.recv(&mut buf) => {
                if r.is_err() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                // Several pokes, one scan.
                while socket.try_recv(&mut buf).is_ok() {}
            }
            () = tokio::time::sleep(wait) => {}
            () = async { let _ = stop.wait_for(|s| *s).await; } => return,
        }
    }
}

/// Answers flush requests (`postqueue -f`, `-s`, `-i`, `sendmail -q`).
async fn flush_loop(
    scheduler: SchedulerSlot,
    fast_flush_domains: Arc<RwLock<Vec<String>>>,
    listener: tokio::net::UnixListener,
    log: Log,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = async { let _ = stop.wait_for(|s| *s).await; } => return,
        };
        let scheduler = read(&scheduler);
        let domains = read(&fast_flush_domains);
        let log = log.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(r, 1024));
            let got =
                tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line)).await;
            let answer = match (got, crate::control::parse_request(&line)) {
                (Ok(Ok(_)), Some(which)) => match (&which, scheduler) {
                    (Flush::Site(site), _) if !domains.contains(site) => format!(
                        "error mail for {site} is not eligible for flushing: not in fast_flush_domains"
                    ),
                    (_, Some(s)) => {
                        let n = s.flush(which.clone()).await;
                        log.info(&format!(
                            "flush {which:?}: {n} deferred message(s) made due"
                        ));
                        format!("ok {n}")
                    }
                    (_, None) => "error the queue manager is not running".to_owned(),
                },
                _ => "error bad request".to_owned(),
            };
            let _ = w.write_all(format!("{answer}\n").as_bytes()).await;
        });
    }
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
/// `smtpd_sasl_security_options` forbids, with Cyrus SASL's properties:
/// `noanonymous` drops ANONYMOUS; `noplaintext` and `noactive` drop
/// PLAIN and LOGIN (SCRAM resists both eavesdroppers and active
/// attackers); `nodictionary` drops every password mechanism mtad has,
/// SCRAM included, since a captured exchange can be attacked offline.
fn offered_mechanisms(
    config: &mta_core::config::Config,
    available: Vec<String>,
) -> Result<Vec<String>, Fatal> {
    let options = config.list("smtpd_sasl_security_options").map_err(fatal)?;
    let no = |o: &str| options.iter().any(|x| x.eq_ignore_ascii_case(o));
    let plaintext = |m: &str| m == "PLAIN" || m == "LOGIN";
    let password =
        |m: &str| plaintext(m) || m.starts_with("SCRAM-") || m == "CRAM-MD5" || m == "DIGEST-MD5";
    Ok(available
        .into_iter()
        .filter(|m| !(no("noanonymous") && m == "ANONYMOUS"))
        .filter(|m| !((no("noplaintext") || no("noactive")) && plaintext(m)))
        .filter(|m| !(no("nodictionary") && password(m)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_peer_networks() {
        let (nets, ignored) = peer_networks(
            &[
                "127.0.0.1",
                "192.0.2.0/24",
                "[2001:db8::]/32",
                "client.example.org",
            ]
            .map(String::from),
        );
        assert_eq!(ignored, ["client.example.org"]);
        let hit = |ip: &str| {
            let ip = ip.parse().unwrap();
            nets.iter().any(|(n, p)| in_network(ip, *n, *p))
        };
        assert!(hit("127.0.0.1") && hit("192.0.2.77") && hit("2001:db8::25"));
        assert!(!hit("127.0.0.2") && !hit("192.0.3.1") && !hit("2001:db9::1"));
    }

    #[test]
    fn sasl_security_options_filter_the_mechanisms() {
        let offered = |options: &str| {
            let config = Config::parse(
                &format!("smtpd_sasl_security_options = {options}\n"),
                "main.cf",
                mta_core::config::HostFacts::default(),
            )
            .unwrap();
            let all = ["SCRAM-SHA-256", "PLAIN", "LOGIN", "ANONYMOUS"].map(String::from);
            offered_mechanisms(&config, all.to_vec()).unwrap().join(" ")
        };
        assert_eq!(offered("noanonymous"), "SCRAM-SHA-256 PLAIN LOGIN");
        assert_eq!(offered("noanonymous, noplaintext"), "SCRAM-SHA-256");
        assert_eq!(offered("noactive"), "SCRAM-SHA-256 ANONYMOUS");
        assert_eq!(offered("noanonymous, nodictionary"), "");
    }
}

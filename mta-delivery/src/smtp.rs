//! The `smtp` and `lmtp` delivery agents, as Postfix's `smtp(8)` and
//! `lmtp(8)`: the routing half around `mta-smtp`'s [`Connector`].
//!
//! For one delivery request (a message, a batch of recipients for one
//! next hop) the agent:
//!
//! 1. Parses the next hop as transport(5) writes it: `domain` or
//!    `domain:port` (MX lookup), `[host]`, `[host]:port`, `[address]`
//!    (no MX lookup), and for LMTP `inet:host:port`. LMTP never looks up
//!    MX records, as `lmtp(8)`.
//! 2. Finds the servers: the MX records ordered by preference, shuffled
//!    among equal preferences, each exchanger's addresses (A, AAAA as
//!    `inet_protocols` allows) up to `smtp_mx_address_limit`; a domain
//!    without MX records (NODATA) is its own exchanger. A null MX (RFC
//!    7505) bounces with `5.1.10`; a name that does not exist bounces with
//!    `5.4.4`; a DNS failure defers with `4.4.3`. When one of the
//!    exchangers is this machine (`inet_interfaces`, `proxy_interfaces`),
//!    it and every exchanger of equal or lower preference are dropped,
//!    and when nothing is left the mail "loops back to myself" (`5.4.6`).
//!    `smtp_fallback_relay` hosts are tried after them.
//! 3. Connects to each address in turn, up to `smtp_mx_session_limit`
//!    sessions that got as far as a greeting. A refused connection, a
//!    4xx greeting, a lost connection or a recipient deferred by one
//!    server moves the recipients still undecided to the next server; the
//!    last server's answer is final. A 5xx greeting that is not skipped
//!    bounces.
//! 4. Sends the message with the recipients' DSN parameters, and gives a
//!    result per recipient from the replies, worded as Postfix words it:
//!    `250 2.0.0 Ok: queued as ...` for delivered mail, `host
//!    mx.example.com[192.0.2.1] said: 550 5.1.1 ... (in reply to RCPT TO
//!    command)` for refused mail, `connect to ...: Connection refused`
//!    when no server was reached.
//! 5. Keeps the connection open for `smtp_connection_cache_time_limit`
//!    for the next request to the same next hop (connection reuse, up to
//!    `smtp_connection_reuse_time_limit` after it was opened).
//!
//! Every failure on our side or in the network defers; only a remote
//! server's 5xx, a null MX, a loop or a name that does not exist bounces.
//! The agent honours the request's time limit: recipients undecided when
//! it runs out are deferred.
//!
//! LMTP also goes to UNIX-domain sockets (`lmtp:unix:private/dovecot-lmtp`,
//! relative to `queue_directory`), without TLS.
//!
//! What it does not do (yet): SASL client authentication, DANE and TLS
//! policy tables, `XFORWARD`,
//! `smtp_sender_dependent_authentication`, the EHLO-name loop check.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use mta_core::config::{Config, HostFacts};
//! use mta_delivery::smtp::{SmtpAgent, SmtpConfig};
//! use mta_smtp::connector::Connector;
//! use mta_smtp::dns::HickoryResolver;
//!
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::parse("myhostname = mail.example.com\n", "main.cf", HostFacts::default())?;
//! let agent = SmtpAgent::new(
//!     SmtpConfig::from_config(&config, "smtp", false)?,
//!     Connector::from_config(&config, false)?,
//!     Arc::new(HickoryResolver::from_system()?),
//! );
//! # let _ = agent;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mta_core::address::MailAddress;
use mta_core::address_class::{NextHop, NextHopHost};
use mta_core::config::{Config, ConfigError};
use mta_core::delivery::{
    BodyType, DeliveryAgent, DeliveryFuture, DeliveryReport, DeliveryRequest, DeliveryStatus,
    Recipient, RecipientResult, Relay, StatusDetail,
};
use mta_core::dns::{DnsAnswer, MxRecord, Resolver};
use mta_core::reply::{EnhancedStatus, Reply, ReplyClass, StatusClass};
use mta_maps::list::MapList;
use mta_maps::registry::Registry;
use mta_smtp::client::{FailureKind, RecipientOutcome, RecipientSpec, Transaction, Verdict};
use mta_smtp::command::Body;
use mta_smtp::connector::{AuthError, ConnectError, Connection, Connector};

use crate::content::ContentReader;

/// Which address family to try first (`smtp_address_preference`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressPreference {
    /// `any`: in the order DNS gave them, IPv4 first.
    Any,
    /// `ipv4`: IPv4 addresses before IPv6 ones of the same host.
    Ipv4,
    /// `ipv6`: IPv6 addresses before IPv4 ones of the same host.
    Ipv6,
}

/// What the agent takes from `main.cf` (and a service's `-o` overrides).
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// The `master.cf` service name, for messages.
    pub transport: String,
    /// LMTP (`lmtp(8)`): no MX lookups, `lmtp_tcp_port`.
    pub lmtp: bool,
    /// The port when the next hop names none (`smtp_tcp_port`, 25;
    /// `lmtp_tcp_port`, 24).
    pub port: u16,
    /// Whether MX records are looked up at all (off with
    /// `disable_dns_lookups = yes` or `smtp_dns_support_level =
    /// disabled`, and always for LMTP).
    pub mx_lookup: bool,
    /// `smtp_mx_address_limit`: how many addresses are tried; 0 means no
    /// limit.
    pub mx_address_limit: usize,
    /// `smtp_mx_session_limit`: how many servers that answered are tried;
    /// 0 means no limit.
    pub mx_session_limit: usize,
    /// `smtp_fallback_relay`: tried after the next hop's own servers.
    pub fallback_relay: Vec<NextHop>,
    /// This machine's addresses (`inet_interfaces`, `proxy_interfaces`),
    /// for the "loops back to myself" check.
    pub own_addresses: Vec<IpAddr>,
    /// Whether IPv4 addresses are used (`inet_protocols`).
    pub ipv4: bool,
    /// Whether IPv6 addresses are used (`inet_protocols`).
    pub ipv6: bool,
    /// `smtp_address_preference`.
    pub preference: AddressPreference,
    /// `smtp_connection_cache_time_limit`: how long an idle connection
    /// waits for the next message; zero turns reuse off.
    pub cache_time_limit: Duration,
    /// `smtp_connection_reuse_time_limit`: how long after it was opened a
    /// connection may take new messages.
    pub reuse_time_limit: Duration,
    /// Where relative `unix:` LMTP socket paths start
    /// (`queue_directory`).
    pub socket_directory: PathBuf,
}

impl SmtpConfig {
    /// Postfix's defaults for a transport named `transport`: port 25 (24
    /// for LMTP), MX lookups for SMTP, five addresses, two sessions, no
    /// fallback relay, IPv4 and IPv6, connections cached for two seconds
    /// and reused for 300.
    pub fn new(transport: impl Into<String>, lmtp: bool) -> SmtpConfig {
        SmtpConfig {
            transport: transport.into(),
            lmtp,
            port: if lmtp { 24 } else { 25 },
            mx_lookup: !lmtp,
            mx_address_limit: 5,
            mx_session_limit: 2,
            fallback_relay: Vec::new(),
            own_addresses: Vec::new(),
            ipv4: true,
            ipv6: true,
            preference: AddressPreference::Any,
            cache_time_limit: Duration::from_secs(2),
            reuse_time_limit: Duration::from_secs(300),
            socket_directory: PathBuf::from("/"),
        }
    }

    /// The settings from `config`, with the `lmtp_` parameters for LMTP.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the parameter whose value is wrong (a port
    /// that is neither a number nor a known service, a bad fallback relay).
    ///
    /// # Example
    ///
    /// ```
    /// use mta_core::config::{Config, HostFacts};
    /// use mta_delivery::smtp::SmtpConfig;
    ///
    /// let config = Config::parse("smtp_tcp_port = 2525\ndisable_dns_lookups = yes\n",
    ///                            "main.cf", HostFacts::default())?;
    /// let smtp = SmtpConfig::from_config(&config, "smtp", false)?;
    /// assert_eq!(smtp.port, 2525);
    /// assert!(!smtp.mx_lookup);
    /// # Ok::<(), mta_core::config::ConfigError>(())
    /// ```
    pub fn from_config(
        config: &Config,
        transport: &str,
        lmtp: bool,
    ) -> Result<SmtpConfig, ConfigError> {
        let p = if lmtp { "lmtp" } else { "smtp" };
        // LMTP shares smtp(8)'s code; where Postfix has no lmtp_ twin of a
        // parameter, the smtp_ one applies.
        let name = |suffix: &str| {
            let own = format!("{p}_{suffix}");
            if config.is_known(&own) {
                own
            } else {
                format!("smtp_{suffix}")
            }
        };
        let mut out = SmtpConfig::new(transport, lmtp);
        let port_param = name("tcp_port");
        let port_text = config.expanded(&port_param)?;
        out.port = port_number(port_text.trim())
            .ok_or_else(|| config.bad_value(&port_param, &port_text, "a port number or service"))?;
        let dns_level = config.expanded(&name("dns_support_level"))?;
        out.mx_lookup =
            !lmtp && !config.boolean("disable_dns_lookups")? && dns_level.trim() != "disabled";
        let limit = |suffix: &str| -> Result<usize, ConfigError> {
            Ok(usize::try_from(config.integer(&name(suffix))?.max(0)).unwrap_or(usize::MAX))
        };
        out.mx_address_limit = limit("mx_address_limit")?;
        out.mx_session_limit = limit("mx_session_limit")?;
        let relay_param = name("fallback_relay");
        for entry in config.list(&relay_param)? {
            let hop = NextHop::parse(&entry)
                .map_err(|e| config.bad_value(&relay_param, &entry, e.to_string()))?;
            out.fallback_relay.push(hop);
        }
        out.own_addresses = config.own_addresses()?;
        let protocols = config.list("inet_protocols")?;
        let all = protocols.iter().any(|p| p == "all");
        out.ipv4 = all || protocols.iter().any(|p| p == "ipv4");
        out.ipv6 = all || protocols.iter().any(|p| p == "ipv6");
        let pref_param = name("address_preference");
        out.preference = match config.expanded(&pref_param)?.trim() {
            "ipv4" => AddressPreference::Ipv4,
            "ipv6" => AddressPreference::Ipv6,
            "any" => AddressPreference::Any,
            other => return Err(config.bad_value(&pref_param, other, "any, ipv4 or ipv6")),
        };
        out.cache_time_limit = config.time(&name("connection_cache_time_limit"))?;
        out.reuse_time_limit = config.time(&name("connection_reuse_time_limit"))?;
        out.socket_directory = PathBuf::from(config.expanded("queue_directory")?);
        Ok(out)
    }
}

/// A port number, or the port of one of the mail services' names.
fn port_number(text: &str) -> Option<u16> {
    if let Ok(n) = text.parse::<u16>() {
        return (n != 0).then_some(n);
    }
    match text {
        "smtp" => Some(25),
        "lmtp" => Some(24),
        "submission" => Some(587),
        "smtps" | "submissions" => Some(465),
        _ => None,
    }
}

/// One server to try: its name (the MX exchanger or the next-hop host)
/// and the address to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// The host name, for SNI, certificate checks and `relay=`.
    pub name: String,
    /// Where to connect.
    pub address: SocketAddr,
    /// A UNIX-domain socket to connect to instead (`lmtp:unix:/path`);
    /// `address` is then unused.
    pub path: Option<PathBuf>,
}

impl Server {
    /// A server reached over TCP.
    pub fn tcp(name: impl Into<String>, address: SocketAddr) -> Server {
        Server {
            name: name.into(),
            address,
            path: None,
        }
    }

    /// The server as `relay=` names it: `name[address]:port`, or
    /// `name[path]` for a UNIX-domain socket.
    pub fn relay(&self) -> Relay {
        match &self.path {
            Some(path) => Relay::Transport(format!("{}[{}]", self.name, path.display())),
            None => Relay::Host {
                name: self.name.clone(),
                address: self.address.ip(),
                port: self.address.port(),
            },
        }
    }

    /// `name[address]` or `name[path]`, as `host ... said:` names it.
    fn peer(&self) -> String {
        match &self.path {
            Some(path) => format!("{}[{}]", self.name, path.display()),
            None => format!("{}[{}]", self.name, self.address.ip()),
        }
    }
}

/// Why no server could be found for a next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteFailure {
    /// Bounce (`5.X.X`) or defer (`4.X.X`).
    pub dsn: EnhancedStatus,
    /// Postfix's words: `Host or domain name not found. Name service
    /// error for name=example.invalid type=MX: Host not found`.
    pub text: String,
}

impl RouteFailure {
    fn new(class: StatusClass, subject: u16, detail: u16, text: impl Into<String>) -> Self {
        RouteFailure {
            dsn: status(class, subject, detail),
            text: text.into(),
        }
    }

    fn dns<T>(name: &str, rtype: &str, answer: &DnsAnswer<T>) -> RouteFailure {
        let (class, detail, why) = match answer {
            DnsAnswer::TempFail(_) => (
                StatusClass::PersistentTransient,
                3,
                "Host not found, try again",
            ),
            DnsAnswer::NoData => (
                StatusClass::Permanent,
                4,
                "Host found but no data record of requested type",
            ),
            _ => (StatusClass::Permanent, 4, "Host not found"),
        };
        RouteFailure::new(
            class,
            4,
            detail,
            format!(
                "Host or domain name not found. Name service error for name={name} type={rtype}: {why}"
            ),
        )
    }

    fn is_permanent(&self) -> bool {
        self.dsn.class() == StatusClass::Permanent
    }
}

fn status(class: StatusClass, subject: u16, detail: u16) -> EnhancedStatus {
    EnhancedStatus::new(class, subject, detail)
        .or_else(|_| EnhancedStatus::new(class, 0, 0))
        .unwrap_or(EnhancedStatus::OK)
}

/// A connection waiting for the next message to its next hop.
struct Idle {
    connection: Connection,
    server: Server,
    opened: Instant,
    since: Instant,
}

type Cache = Arc<Mutex<HashMap<String, Vec<Idle>>>>;

/// A connection in use, and where it goes.
struct Session {
    connection: Connection,
    server: Server,
    opened: Instant,
}

/// The `smtp` (or `lmtp`) delivery agent.
pub struct SmtpAgent {
    config: SmtpConfig,
    connector: Connector,
    dns: Arc<dyn Resolver>,
    cache: Cache,
    shuffle: RandomState,
    sasl: Option<SaslClient>,
    log: Option<LogFn>,
    tls_policy: Option<TlsPolicy>,
}

/// `smtp_tls_policy_maps`: a TLS security level per next hop, and a
/// connector for each level a policy may name.
pub struct TlsPolicy {
    /// The table, keyed by next hop as the request has it (`example.net`,
    /// `[mail.example.net]:587`), then, for a domain, its parents as
    /// `.example.net`.
    pub maps: MapList,
    /// A connector per level (`none`, `may`, `encrypt`, `verify`,
    /// `secure`), each built as the service would be with that
    /// `smtp_tls_security_level`.
    pub connectors: HashMap<String, Connector>,
}

impl std::fmt::Debug for TlsPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPolicy")
            .field("levels", &self.connectors.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The level a policy table value names, or why it cannot be honoured.
///
/// ```
/// use mta_delivery::smtp::policy_level;
/// assert_eq!(policy_level("encrypt").unwrap(), "encrypt");
/// assert_eq!(policy_level("secure match=nexthop:dot-nexthop").unwrap(), "secure");
/// assert_eq!(policy_level("dane").unwrap(), "may");
/// assert!(policy_level("verify ciphers=high").is_err());
/// assert!(policy_level("dane-only").is_err());
/// ```
///
/// # Errors
///
/// An unknown level, DANE-only (mtad does not validate TLSA records), or
/// an attribute mtad does not apply (`ciphers=`, `protocols=`, a `match=`
/// other than the level's default): the delivery is deferred rather than
/// made with less than the policy asks.
pub fn policy_level(value: &str) -> Result<&'static str, String> {
    let mut words = value.split_whitespace();
    let level = words.next().unwrap_or("").to_ascii_lowercase();
    let level: &'static str = match level.as_str() {
        "none" => "none",
        "may" => "may",
        // Postfix's dane falls back to may without DNSSEC-validated TLSA
        // records; mtad validates none.
        "dane" => "may",
        "encrypt" => "encrypt",
        "verify" => "verify",
        "secure" => "secure",
        "dane-only" => return Err("dane-only: DANE is not supported by mtad".into()),
        "fingerprint" => {
            return Err("fingerprint: certificate pinning is not supported by mtad".into());
        }
        other => return Err(format!("unknown TLS security level \"{other}\"")),
    };
    for attribute in words {
        let default_match = match level {
            "verify" => Some("match=hostname"),
            "secure" => Some("match=nexthop:dot-nexthop"),
            _ => None,
        };
        if Some(attribute.to_ascii_lowercase().as_str()) == default_match {
            continue;
        }
        return Err(format!(
            "{attribute}: this policy attribute is not supported by mtad"
        ));
    }
    Ok(level)
}

/// Where the agent writes its own log lines (the TLS handshake), as
/// Postfix's smtp(8) logs them.
pub type LogFn = Arc<dyn Fn(&str) + Send + Sync>;

/// The SASL client settings (`smtp_sasl_auth_enable = yes`).
#[derive(Debug, Clone)]
pub struct SaslClient {
    /// `smtp_sasl_password_maps`: `user:password` by next hop, then by
    /// server host name.
    pub password_maps: MapList,
    /// `smtp_sasl_security_options`, for sessions without TLS.
    pub security_options: Vec<String>,
    /// `smtp_sasl_tls_security_options`, for sessions with TLS.
    pub tls_security_options: Vec<String>,
}

impl SaslClient {
    /// The settings from `config` (`smtp_` or `lmtp_` parameters), with
    /// the password tables opened through `registry`; `None` when
    /// `smtp_sasl_auth_enable` is off.
    ///
    /// # Errors
    ///
    /// A parameter of the wrong kind, a table that cannot be opened.
    pub fn from_config(
        config: &Config,
        registry: &Registry,
        lmtp: bool,
    ) -> Result<Option<SaslClient>, ConfigError> {
        let p = if lmtp { "lmtp" } else { "smtp" };
        if !config.boolean(&format!("{p}_sasl_auth_enable"))? {
            return Ok(None);
        }
        let name = format!("{p}_sasl_password_maps");
        let value = config.expanded(&name)?;
        let password_maps = registry
            .open_list(&value)
            .map_err(|e| config.bad_value(&name, &value, e.to_string()))?;
        Ok(Some(SaslClient {
            password_maps,
            security_options: config.list(&format!("{p}_sasl_security_options"))?,
            tls_security_options: config.list(&format!("{p}_sasl_tls_security_options"))?,
        }))
    }
}

impl SmtpAgent {
    /// An agent with these settings, connecting through `connector` and
    /// resolving with `dns`.
    pub fn new(config: SmtpConfig, connector: Connector, dns: Arc<dyn Resolver>) -> SmtpAgent {
        SmtpAgent {
            config,
            connector,
            dns,
            cache: Arc::new(Mutex::new(HashMap::new())),
            shuffle: RandomState::new(),
            sasl: None,
            log: None,
            tls_policy: None,
        }
    }

    /// Chooses the TLS level per next hop from `policy`
    /// (`smtp_tls_policy_maps`); next hops it does not name use the
    /// service's own level.
    pub fn with_tls_policy(mut self, policy: TlsPolicy) -> SmtpAgent {
        self.tls_policy = Some(policy);
        self
    }

    /// The connector for `nexthop`: the policy table's level, else the
    /// service's own; an error (a deferral reason) when the table cannot
    /// answer or names what cannot be honoured.
    fn connector_for(&self, nexthop: &str) -> Result<&Connector, StatusDetail> {
        let Some(policy) = &self.tls_policy else {
            return Ok(&self.connector);
        };
        let key = nexthop.trim().to_ascii_lowercase();
        let mut keys = vec![mta_maps::search::SearchKey {
            key: key.clone(),
            partial: false,
        }];
        if !key.starts_with('[') {
            let mut rest = key.as_str();
            while let Some((_, parent)) = rest.split_once('.') {
                keys.push(mta_maps::search::SearchKey {
                    key: format!(".{parent}"),
                    partial: true,
                });
                rest = parent;
            }
        }
        let defer = |text: String| {
            StatusDetail::new(
                EnhancedStatus::parse("4.7.5").expect("valid"),
                text,
                Relay::None,
            )
        };
        let found = policy
            .maps
            .search_now(&keys)
            .map_err(|e| defer(format!("TLS policy lookup for {nexthop}: {e}")))?;
        let Some((_, value)) = found else {
            return Ok(&self.connector);
        };
        let level =
            policy_level(&value).map_err(|e| defer(format!("TLS policy for {nexthop}: {e}")))?;
        policy.connectors.get(level).ok_or_else(|| {
            defer(format!(
                "TLS policy for {nexthop}: no {level} configuration"
            ))
        })
    }

    /// Logs the agent's own events through `log`: the TLS summary
    /// (`Untrusted TLS connection established to ...`), which Postfix
    /// logs at `smtp_tls_loglevel` 1 and above; give the log only then.
    pub fn with_log(mut self, log: LogFn) -> SmtpAgent {
        self.log = Some(log);
        self
    }

    /// Logs in to servers with credentials from `sasl`'s tables.
    pub fn with_sasl(mut self, sasl: SaslClient) -> SmtpAgent {
        self.sasl = Some(sasl);
        self
    }

    /// Logs in when the tables have credentials for this next hop or
    /// server (Postfix's order: the next hop as written, then the server
    /// host name). `Err` is the deferral for the recipients.
    async fn login(
        &self,
        connection: &mut Connection,
        nexthop: &str,
        server: &Server,
    ) -> Result<(), StatusDetail> {
        let Some(sasl) = &self.sasl else {
            return Ok(());
        };
        let defer = |text: String| {
            StatusDetail::new(
                status(StatusClass::PersistentTransient, 7, 0),
                text,
                server.relay(),
            )
        };
        let mut found = None;
        for key in [nexthop.trim(), server.name.as_str()] {
            match sasl.password_maps.lookup(key).await {
                Ok(Some(v)) => {
                    found = Some(v.into_owned());
                    break;
                }
                Ok(None) => {}
                Err(e) => return Err(defer(format!("smtp_sasl_password_maps: {e}"))),
            }
        }
        // No credentials for this server: send without logging in.
        let Some(credentials) = found else {
            return Ok(());
        };
        let (user, password) = credentials.split_once(':').unwrap_or((&credentials, ""));
        let options = if connection.tls().is_some() {
            &sasl.tls_security_options
        } else {
            &sasl.security_options
        };
        let plaintext_ok = !options.iter().any(|o| o == "noplaintext");
        let allowed: &[&str] = if plaintext_ok {
            &["PLAIN", "LOGIN"]
        } else {
            &[]
        };
        connection
            .authenticate(user, password, allowed)
            .await
            .map(|_| ())
            .map_err(|e| match e {
                AuthError::NoMechanism { offered } => defer(format!(
                    "SASL authentication failed: server {} offered no compatible authentication mechanisms for this type of connection security (offered: {offered})",
                    server.peer()
                )),
                // The server's enhanced status, made temporary
                // (smtp_sasl_auth_soft_bounce = yes).
                AuthError::Refused { reply, .. } => {
                    let mut d = defer(format!(
                        "SASL authentication failed; server {} said: {reply}",
                        server.peer()
                    ));
                    if let Some(s) = reply.status() {
                        d.dsn = status(StatusClass::PersistentTransient, s.subject(), s.detail());
                    }
                    d.with_remote_reply(reply)
                }
                other => defer(other.to_string()),
            })
    }

    /// The servers for `nexthop`, in the order they are tried (fallback
    /// relays last).
    ///
    /// # Errors
    ///
    /// A [`RouteFailure`] when there is none: a `5` status (bounce) for
    /// a null MX, a name that does not exist, or mail that loops back to
    /// this machine; a `4` status (defer) for a DNS failure (`4.4.3`) or
    /// a next hop that cannot be parsed (`4.3.5`, a configuration mistake
    /// to fix, not a reason to return mail).
    pub async fn servers(&self, nexthop: &str) -> Result<Vec<Server>, RouteFailure> {
        if self.config.lmtp
            && let Some(path) = nexthop.trim().strip_prefix("unix:")
        {
            // Relative to queue_directory, as Postfix's daemons run
            // there: unix:private/dovecot-lmtp.
            let path = self.config.socket_directory.join(path);
            let name = self.connector.session_config().helo_name.clone();
            return Ok(vec![Server {
                name,
                address: SocketAddr::from(([0, 0, 0, 0], 0)),
                path: Some(path),
            }]);
        }
        let hop = parse_nexthop(nexthop, self.config.lmtp)?;
        let mut servers = self.hop_servers(&hop, nexthop).await;
        if self.config.fallback_relay.is_empty() {
            return servers;
        }
        let mut fallback = Vec::new();
        for relay in &self.config.fallback_relay {
            if let Ok(found) = self.hop_servers(relay, "").await {
                fallback.extend(found);
            }
        }
        match &mut servers {
            Ok(list) => {
                list.extend(fallback);
                servers
            }
            // A next hop that does not exist bounces whatever the fallback.
            Err(e) if e.is_permanent() => servers,
            Err(_) if !fallback.is_empty() => Ok(fallback),
            Err(_) => servers,
        }
    }

    async fn hop_servers(&self, hop: &NextHop, text: &str) -> Result<Vec<Server>, RouteFailure> {
        let port = match &hop.port {
            None => self.config.port,
            Some(p) => port_number(p).ok_or_else(|| {
                RouteFailure::new(
                    StatusClass::PersistentTransient,
                    3,
                    5,
                    format!("bad port \"{p}\" in next hop \"{text}\""),
                )
            })?,
        };
        let name = match &hop.host {
            NextHopHost::Address(ip) => {
                return Ok(vec![Server::tcp(
                    ip.to_string(),
                    SocketAddr::new(*ip, port),
                )]);
            }
            NextHopHost::Name(domain) => domain.as_str().to_ascii_lowercase(),
        };
        let mut servers = Vec::new();
        if hop.mx_lookup && self.config.mx_lookup {
            match self.dns.lookup_mx(&name).await {
                DnsAnswer::Found(records) => {
                    if MxRecord::is_null_mx(&records) {
                        return Err(RouteFailure::new(
                            StatusClass::Permanent,
                            1,
                            10,
                            format!("Domain {name} does not accept mail (nullMX)"),
                        ));
                    }
                    return self.mx_servers(&name, records, port).await;
                }
                // No MX: the domain is its own exchanger.
                DnsAnswer::NoData => {}
                other => return Err(RouteFailure::dns(&name, "MX", &other)),
            }
        }
        let addresses = self.addresses(&name).await?;
        for ip in addresses {
            servers.push(Server::tcp(name.clone(), SocketAddr::new(ip, port)));
        }
        self.limit(&mut servers);
        Ok(servers)
    }

    async fn mx_servers(
        &self,
        domain: &str,
        mut records: Vec<MxRecord>,
        port: u16,
    ) -> Result<Vec<Server>, RouteFailure> {
        // By preference; among equals in an order that changes from one
        // delivery to the next, so that load spreads (RFC 5321 5.1).
        let salt = self.shuffle.hash_one(Instant::now());
        records.sort_by_key(|r| {
            (
                r.preference,
                self.shuffle
                    .hash_one((salt, r.exchange.to_ascii_lowercase())),
            )
        });
        let mut servers: Vec<(u16, Server)> = Vec::new();
        let mut last_error: Option<RouteFailure> = None;
        let mut self_preference = None;
        for record in &records {
            let host = record.exchange.trim_end_matches('.').to_ascii_lowercase();
            match self.addresses(&host).await {
                Ok(list) => {
                    for ip in list {
                        if self.config.own_addresses.contains(&ip) {
                            self_preference.get_or_insert(record.preference);
                        }
                        servers.push((
                            record.preference,
                            Server::tcp(host.clone(), SocketAddr::new(ip, port)),
                        ));
                    }
                }
                Err(e) => {
                    // A temporary failure for any exchanger makes the
                    // whole answer temporary.
                    if last_error.as_ref().is_none_or(RouteFailure::is_permanent) {
                        last_error = Some(e);
                    }
                }
            }
        }
        if let Some(own) = self_preference {
            servers.retain(|(preference, _)| *preference < own);
            if servers.is_empty() {
                return Err(RouteFailure::new(
                    StatusClass::Permanent,
                    4,
                    6,
                    format!("mail for {domain} loops back to myself"),
                ));
            }
        }
        let mut servers: Vec<Server> = servers.into_iter().map(|(_, s)| s).collect();
        if servers.is_empty() {
            return Err(last_error
                .unwrap_or_else(|| RouteFailure::dns(domain, "MX", &DnsAnswer::<()>::NoData)));
        }
        self.limit(&mut servers);
        Ok(servers)
    }

    fn limit(&self, servers: &mut Vec<Server>) {
        if self.config.mx_address_limit > 0 {
            servers.truncate(self.config.mx_address_limit);
        }
    }

    /// The addresses of `host`, in the configured family order.
    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, RouteFailure> {
        let mut v4 = DnsAnswer::NoData;
        let mut v6 = DnsAnswer::NoData;
        if self.config.ipv4 {
            v4 = self.dns.lookup_a(host).await;
        }
        if self.config.ipv6 && !matches!(v4, DnsAnswer::NxDomain) {
            v6 = self.dns.lookup_aaaa(host).await;
        }
        let (first, second) = match self.config.preference {
            AddressPreference::Ipv6 => (&v6, &v4),
            _ => (&v4, &v6),
        };
        let mut out: Vec<IpAddr> = Vec::new();
        for answer in [first, second] {
            if let Some(records) = answer.records() {
                out.extend(records);
            }
        }
        if !out.is_empty() {
            return Ok(out);
        }
        // Nothing usable: a temporary failure of either lookup wins.
        let (rtype, answer) = if v4.is_temporary() || !self.config.ipv6 {
            ("A", &v4)
        } else if v6.is_temporary() || !self.config.ipv4 {
            ("AAAA", &v6)
        } else if matches!(v4, DnsAnswer::NxDomain) {
            ("A", &v4)
        } else {
            ("AAAA", &v6)
        };
        Err(RouteFailure::dns(host, rtype, answer))
    }

    /// A cached connection to `nexthop`, if one is still good.
    fn cached(&self, nexthop: &str) -> Option<Idle> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let list = cache.get_mut(nexthop)?;
        let now = Instant::now();
        let mut found = None;
        while let Some(idle) = list.pop() {
            if idle.connection.is_open()
                && now.duration_since(idle.since) < self.config.cache_time_limit
                && now.duration_since(idle.opened) < self.config.reuse_time_limit
            {
                found = Some(idle);
                break;
            }
            // Stale: its closing is left to the sweeper's drop.
            drop(idle);
        }
        if list.is_empty() {
            cache.remove(nexthop);
        }
        found
    }

    /// Keeps `connection` for the next message to `nexthop`, or says
    /// goodbye to it.
    async fn release(
        &self,
        nexthop: &str,
        connection: Connection,
        server: Server,
        opened: Instant,
    ) {
        let now = Instant::now();
        let reusable = connection.is_open()
            && !self.config.cache_time_limit.is_zero()
            && now.duration_since(opened) < self.config.reuse_time_limit;
        if !reusable {
            if connection.is_open() {
                connection.quit().await;
            }
            return;
        }
        {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.entry(nexthop.to_owned()).or_default().push(Idle {
                connection,
                server,
                opened,
                since: now,
            });
        }
        // After the idle time, whatever is still there and stale says
        // QUIT.
        let cache = Arc::clone(&self.cache);
        let limit = self.config.cache_time_limit;
        let key = nexthop.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            let stale: Vec<Idle> = {
                let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
                let Some(list) = cache.get_mut(&key) else {
                    return;
                };
                let now = Instant::now();
                let (old, keep): (Vec<Idle>, Vec<Idle>) = list
                    .drain(..)
                    .partition(|i| now.duration_since(i.since) >= limit);
                *list = keep;
                if list.is_empty() {
                    cache.remove(&key);
                }
                old
            };
            for idle in stale {
                idle.connection.quit().await;
            }
        });
    }

    async fn run(&self, request: &DeliveryRequest, results: &mut Vec<RecipientResult>) {
        let pending_all: Vec<&Recipient> = request.recipients.iter().collect();
        let mut pending = pending_all;
        // The last reason recipients are still pending, for the deferral.
        let mut last: Option<StatusDetail> = None;

        // A cached connection first: no DNS, no handshake.
        if let Some(idle) = self.cached(&request.nexthop) {
            let session = Session {
                connection: idle.connection,
                server: idle.server,
                opened: idle.opened,
            };
            pending = self
                .transaction(request, session, pending, false, results, &mut last)
                .await;
            if pending.is_empty() {
                return;
            }
        }

        let connector = match self.connector_for(&request.nexthop) {
            Ok(c) => c,
            Err(detail) => {
                let status = DeliveryStatus::Deferred(detail);
                results.extend(pending.iter().map(|r| r.result(status.clone())));
                return;
            }
        };
        let servers = match self.servers(&request.nexthop).await {
            Ok(servers) => servers,
            Err(failure) => {
                let permanent = failure.is_permanent();
                let detail = StatusDetail::new(failure.dsn, failure.text, Relay::None);
                let status = if permanent {
                    DeliveryStatus::Bounced(detail)
                } else {
                    DeliveryStatus::Deferred(detail)
                };
                results.extend(pending.iter().map(|r| r.result(status.clone())));
                return;
            }
        };
        let mut sessions = 0;
        let count = servers.len();
        for (i, server) in servers.into_iter().enumerate() {
            let opened = Instant::now();
            let connected = match &server.path {
                Some(path) => connector.connect_unix(path, &server.name).await,
                None => connector.connect(server.address, &server.name).await,
            };
            match connected {
                Ok(mut connection) => {
                    sessions += 1;
                    if let (Some(log), Some(tls)) = (&self.log, connection.tls()) {
                        log(&format!(
                            "{} TLS connection established to {}: {tls}",
                            tls.trust,
                            connection.peer_name()
                        ));
                    }
                    let final_server = i + 1 == count
                        || (self.config.mx_session_limit > 0
                            && sessions >= self.config.mx_session_limit);
                    // A server that greets with our own name is this
                    // system (a loop through a name or a NAT): Postfix's
                    // "mail for X loops back to myself", not for LMTP.
                    if !self.config.lmtp
                        && let Some(name) = greeting_name(&connection)
                        && name.eq_ignore_ascii_case(&connector.session_config().helo_name)
                    {
                        if let Some(log) = &self.log {
                            log(&format!(
                                "warning: host {} greeted me with my own hostname {name}",
                                connection.peer_name()
                            ));
                        }
                        connection.quit().await;
                        let detail = StatusDetail::new(
                            EnhancedStatus::parse("5.4.6").expect("valid"),
                            format!("mail for {} loops back to myself", request.nexthop),
                            server.relay(),
                        );
                        let status = DeliveryStatus::Bounced(detail);
                        results.extend(pending.iter().map(|r| r.result(status.clone())));
                        return;
                    }
                    if let Err(detail) =
                        self.login(&mut connection, &request.nexthop, &server).await
                    {
                        // As Postfix with smtp_sasl_auth_soft_bounce: the
                        // mail waits, the next server is tried.
                        last = Some(detail);
                        connection.quit().await;
                        if final_server {
                            break;
                        }
                        continue;
                    }
                    let session = Session {
                        connection,
                        server,
                        opened,
                    };
                    pending = self
                        .transaction(request, session, pending, final_server, results, &mut last)
                        .await;
                    if pending.is_empty() || final_server {
                        break;
                    }
                }
                Err(error) => {
                    let relay = match &error {
                        // The server answered, but not usefully.
                        ConnectError::Session(_) => server.relay(),
                        _ => Relay::None,
                    };
                    if matches!(error, ConnectError::Session(_)) {
                        sessions += 1;
                    }
                    let reply = error.reply();
                    let detail = detail_of(&reply, error.message(), relay, !error.by_client());
                    // A 5xx greeting or EHLO refusal that the configuration
                    // does not skip is the server's final word.
                    let hard = matches!(&error, ConnectError::Session(f)
                        if f.kind != FailureKind::GreetingSkipped)
                        && reply.code().class() == ReplyClass::PermanentNegative;
                    if hard {
                        let status = DeliveryStatus::Bounced(detail);
                        results.extend(pending.iter().map(|r| r.result(status.clone())));
                        return;
                    }
                    last = Some(detail);
                    if self.config.mx_session_limit > 0 && sessions >= self.config.mx_session_limit
                    {
                        break;
                    }
                }
            }
        }
        if !pending.is_empty() {
            let detail = last.unwrap_or_else(|| {
                StatusDetail::new(
                    status(StatusClass::PersistentTransient, 4, 1),
                    "no SMTP server could be reached",
                    Relay::None,
                )
            });
            let status = DeliveryStatus::Deferred(detail);
            results.extend(pending.iter().map(|r| r.result(status.clone())));
        }
    }

    /// One transaction on `session` for `pending`, after which the
    /// connection is cached or closed; returns the recipients to try on
    /// the next server (those deferred, unless this is the last server).
    async fn transaction<'r>(
        &self,
        request: &DeliveryRequest,
        session: Session,
        pending: Vec<&'r Recipient>,
        final_server: bool,
        results: &mut Vec<RecipientResult>,
        last: &mut Option<StatusDetail>,
    ) -> Vec<&'r Recipient> {
        let Session {
            mut connection,
            server,
            opened,
        } = session;
        let tx = transaction(request, &pending);
        let content = ContentReader::open(Arc::clone(&request.content));
        let outcome = connection.deliver(tx, content).await;
        let relay = server.relay();
        let failure = connection.failure().map(|f| f.message.clone());
        let mut retry = Vec::new();
        for (recipient, o) in pending.into_iter().zip(outcome.recipients) {
            let text = outcome_text(&o, &server.peer(), failure.as_deref());
            let detail = detail_of(&o.reply, text, relay.clone(), !o.by_client);
            match o.verdict {
                Verdict::Delivered => {
                    results.push(recipient.result(DeliveryStatus::Delivered(detail)));
                }
                Verdict::Bounced => results.push(recipient.result(DeliveryStatus::Bounced(detail))),
                Verdict::Deferred if final_server => {
                    results.push(recipient.result(DeliveryStatus::Deferred(detail)));
                }
                Verdict::Deferred => {
                    *last = Some(detail);
                    retry.push(recipient);
                }
            }
        }
        self.release(&request.nexthop, connection, server, opened)
            .await;
        retry
    }
}

/// Postfix's status text for one recipient.
fn outcome_text(o: &RecipientOutcome, peer: &str, failure: Option<&str>) -> String {
    match (o.verdict, o.in_reply_to) {
        (Verdict::Delivered, _) => o.reply.to_string(),
        (_, Some(command)) => format!(
            "host {peer} said: {} (in reply to {command} command)",
            o.reply
        ),
        (_, None) => match failure {
            Some(message) => message.to_owned(),
            None => o.reply.lines().join(" "),
        },
    }
}

/// The status detail for `reply`: its enhanced status (or `X.0.0` of its
/// class), the text, the relay, and the reply itself when the server sent
/// it.
fn detail_of(reply: &Reply, text: String, relay: Relay, remote: bool) -> StatusDetail {
    let class = match reply.code().class() {
        ReplyClass::PositiveCompletion => StatusClass::Success,
        ReplyClass::PermanentNegative => StatusClass::Permanent,
        _ => StatusClass::PersistentTransient,
    };
    let dsn = reply
        .status()
        .filter(|s| s.class() == class)
        .unwrap_or_else(|| status(class, 0, 0));
    let detail = StatusDetail::new(dsn, text, relay);
    if remote {
        detail.with_remote_reply(reply.clone())
    } else {
        detail
    }
}

/// The next hop as the agent reads it: transport(5) forms, and for LMTP
/// also `inet:host:port` (`unix:` is handled before).
fn parse_nexthop(nexthop: &str, lmtp: bool) -> Result<NextHop, RouteFailure> {
    let mut text = nexthop.trim();
    if lmtp {
        text = text.strip_prefix("inet:").unwrap_or(text);
    }
    // lmtp(8) also takes a bare address, `inet:127.0.0.1:24`.
    let bracketed;
    if lmtp && !text.starts_with('[') {
        let (host, port) = match text.rsplit_once(':') {
            Some((h, p)) if h.parse::<IpAddr>().is_ok() => (h, Some(p)),
            _ => (text, None),
        };
        if host.parse::<IpAddr>().is_ok() {
            bracketed = match port {
                Some(p) => format!("[{host}]:{p}"),
                None => format!("[{host}]"),
            };
            text = &bracketed;
        }
    }
    let mut hop = NextHop::parse(text).map_err(|e| {
        RouteFailure::new(
            StatusClass::PersistentTransient,
            3,
            5,
            format!("bad next hop \"{text}\": {e}"),
        )
    })?;
    if lmtp {
        hop.mx_lookup = false;
    }
    Ok(hop)
}

/// The SMTP transaction for `recipients` of `request`.
/// The host name a server's `220` greeting starts with.
fn greeting_name(connection: &Connection) -> Option<String> {
    let greeting = connection.greeting()?;
    let first = greeting.lines().first()?;
    let name = first.split_whitespace().next()?;
    Some(name.to_owned())
}

fn transaction(request: &DeliveryRequest, recipients: &[&Recipient]) -> Transaction {
    let envelope = &request.envelope;
    let addresses: Vec<MailAddress> = recipients.iter().map(|r| r.address.clone()).collect();
    let mut tx = Transaction::new(envelope.sender.clone(), addresses);
    for (spec, recipient) in tx.recipients.iter_mut().zip(recipients) {
        *spec = recipient_spec(recipient);
    }
    tx.size = Some(request.content.size());
    tx.body = match envelope.body_type {
        Some(BodyType::EightBitMime) => Body::EightBitMime,
        _ => Body::SevenBit,
    };
    tx.smtputf8 = envelope.smtputf8;
    tx.ret = envelope.dsn_ret;
    tx.envid = envelope.dsn_envid.clone();
    tx
}

/// `NOTIFY` and `ORCPT` as Postfix sends them: the client's `ORCPT`, else
/// the original address when rewriting changed it.
fn recipient_spec(recipient: &Recipient) -> RecipientSpec {
    let mut spec = RecipientSpec::new(recipient.address.clone());
    spec.notify = recipient.notify;
    spec.orcpt = match &recipient.dsn_orcpt {
        Some(orcpt) => match orcpt.split_once(';') {
            Some((kind, address)) if kind.eq_ignore_ascii_case("rfc822") => {
                Some(address.to_owned())
            }
            _ => None,
        },
        None => recipient
            .original
            .as_ref()
            .filter(|o| **o != recipient.address)
            .map(ToString::to_string),
    };
    spec
}

impl DeliveryAgent for SmtpAgent {
    fn deliver(&self, request: DeliveryRequest) -> DeliveryFuture<'_> {
        Box::pin(async move {
            let mut results = Vec::with_capacity(request.recipients.len());
            let limit = request.time_limit;
            let finished = tokio::time::timeout(limit, self.run(&request, &mut results))
                .await
                .is_ok();
            let mut report = DeliveryReport::new(results);
            if !finished {
                let relay = Relay::Transport(self.config.transport.clone());
                let done: Vec<u64> = report.results.iter().map(|r| r.queue_offset).collect();
                for r in &request.recipients {
                    if !done.contains(&r.queue_offset) {
                        report
                            .results
                            .push(r.result(DeliveryStatus::time_limit_exceeded(relay.clone())));
                    }
                }
            }
            report
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mta_core::dns::{RecordType, StubResolver};
    use mta_smtp::client::ClientConfig;

    fn agent(dns: &Arc<StubResolver>, config: SmtpConfig) -> SmtpAgent {
        let dns: Arc<dyn Resolver> = dns.clone();
        SmtpAgent::new(
            config,
            Connector::new(ClientConfig::new("mail.example.com")),
            dns,
        )
    }

    fn names(servers: &[Server]) -> Vec<String> {
        servers
            .iter()
            .map(|s| format!("{}/{}", s.name, s.address))
            .collect()
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn mx_hosts_by_preference_then_their_addresses() {
        let dns = Arc::new(StubResolver::new());
        dns.add_mx("example.net", 20, "mx2.example.net");
        dns.add_mx("example.net", 10, "mx1.example.net");
        dns.add_address("mx1.example.net", ip("192.0.2.1"));
        dns.add_address("mx1.example.net", ip("2001:db8::1"));
        dns.add_address("mx2.example.net", ip("192.0.2.2"));
        let a = agent(&dns, SmtpConfig::new("smtp", false));
        let servers = block_on(a.servers("example.net")).unwrap();
        assert_eq!(
            names(&servers),
            [
                "mx1.example.net/192.0.2.1:25",
                "mx1.example.net/[2001:db8::1]:25",
                "mx2.example.net/192.0.2.2:25"
            ]
        );
        // A port on the next hop applies to every exchanger; IPv6 first
        // when preferred; the address limit cuts the list.
        let mut config = SmtpConfig::new("smtp", false);
        config.preference = AddressPreference::Ipv6;
        config.mx_address_limit = 2;
        let a = agent(&dns, config);
        let servers = block_on(a.servers("example.net:2525")).unwrap();
        assert_eq!(
            names(&servers),
            [
                "mx1.example.net/[2001:db8::1]:2525",
                "mx1.example.net/192.0.2.1:2525"
            ]
        );
    }

    #[test]
    fn equal_preferences_are_shuffled() {
        let dns = Arc::new(StubResolver::new());
        for (i, host) in ["a", "b", "c", "d"].iter().enumerate() {
            let name = format!("{host}.example.net");
            dns.add_mx("example.net", 10, &name);
            dns.add_address(&name, ip(&format!("192.0.2.{}", i + 1)));
        }
        dns.add_mx("example.net", 5, "first.example.net");
        dns.add_address("first.example.net", ip("192.0.2.99"));
        let mut config = SmtpConfig::new("smtp", false);
        config.mx_address_limit = 0;
        let a = agent(&dns, config);
        let mut orders = std::collections::HashSet::new();
        for _ in 0..40 {
            let servers = block_on(a.servers("example.net")).unwrap();
            assert_eq!(servers[0].name, "first.example.net", "preference first");
            assert_eq!(servers.len(), 5);
            orders.insert(names(&servers[1..]));
        }
        assert!(orders.len() > 1, "equal preferences always in one order");
    }

    #[test]
    fn no_mx_means_the_domain_itself_and_brackets_skip_dns() {
        let dns = Arc::new(StubResolver::new());
        dns.add_address("example.org", ip("192.0.2.7"));
        let a = agent(&dns, SmtpConfig::new("smtp", false));
        let servers = block_on(a.servers("example.org")).unwrap();
        assert_eq!(names(&servers), ["example.org/192.0.2.7:25"]);
        let before = dns.queries().len();
        let servers = block_on(a.servers("[192.0.2.8]:587")).unwrap();
        assert_eq!(names(&servers), ["192.0.2.8/192.0.2.8:587"]);
        assert_eq!(dns.queries().len(), before, "an address needs no DNS");
        let servers = block_on(a.servers("[example.org]")).unwrap();
        assert_eq!(names(&servers), ["example.org/192.0.2.7:25"]);
        assert!(
            !dns.queries()[before..]
                .iter()
                .any(|(t, _)| *t == RecordType::Mx),
            "brackets turn off the MX lookup"
        );
    }

    #[test]
    fn dns_failures_bounce_or_defer_as_postfix() {
        let dns = Arc::new(StubResolver::new());
        let a = agent(&dns, SmtpConfig::new("smtp", false));
        let e = block_on(a.servers("nowhere.invalid")).unwrap_err();
        assert_eq!(e.dsn.to_string(), "5.4.4");
        assert_eq!(
            e.text,
            "Host or domain name not found. Name service error for name=nowhere.invalid type=MX: Host not found"
        );

        dns.add_mx("flaky.example", 10, "mx.flaky.example");
        dns.fail_temporarily("flaky.example", RecordType::Mx, 1);
        let e = block_on(a.servers("flaky.example")).unwrap_err();
        assert_eq!(e.dsn.to_string(), "4.4.3");
        assert!(
            e.text.ends_with("type=MX: Host not found, try again"),
            "{}",
            e.text
        );

        // RFC 7505: "MX 0 ." says the domain takes no mail.
        dns.add_mx("nullmx.example", 0, ".");
        let e = block_on(a.servers("nullmx.example")).unwrap_err();
        assert_eq!(e.dsn.to_string(), "5.1.10");
        assert_eq!(
            e.text,
            "Domain nullmx.example does not accept mail (nullMX)"
        );

        // An exchanger whose address lookup fails temporarily defers.
        dns.add_mx("half.example", 10, "mx.half.example");
        dns.add_address("mx.half.example", ip("192.0.2.3"));
        dns.fail_temporarily("mx.half.example", RecordType::A, 1);
        let mut config = SmtpConfig::new("smtp", false);
        config.ipv6 = false;
        let a = agent(&dns, config);
        let e = block_on(a.servers("half.example")).unwrap_err();
        assert_eq!(e.dsn.to_string(), "4.4.3");
        assert!(block_on(a.servers("half.example")).is_ok(), "then it works");

        let e = block_on(a.servers("[host")).unwrap_err();
        assert_eq!(
            e.dsn.to_string(),
            "4.3.5",
            "a bad next hop defers: {}",
            e.text
        );
    }

    #[test]
    fn own_address_as_mx_loops_back_to_myself() {
        let dns = Arc::new(StubResolver::new());
        dns.add_mx("example.com", 10, "mail.example.com");
        dns.add_address("mail.example.com", ip("192.0.2.10"));
        let mut config = SmtpConfig::new("smtp", false);
        config.own_addresses = vec![ip("192.0.2.10")];
        let a = agent(&dns, config.clone());
        let e = block_on(a.servers("example.com")).unwrap_err();
        assert_eq!(e.dsn.to_string(), "5.4.6");
        assert_eq!(e.text, "mail for example.com loops back to myself");

        // As a backup MX we hand the mail to the better exchanger only.
        dns.add_mx("example.com", 5, "primary.example.com");
        dns.add_address("primary.example.com", ip("192.0.2.20"));
        dns.add_mx("example.com", 20, "worse.example.com");
        dns.add_address("worse.example.com", ip("192.0.2.30"));
        let a = agent(&dns, config);
        let servers = block_on(a.servers("example.com")).unwrap();
        assert_eq!(names(&servers), ["primary.example.com/192.0.2.20:25"]);
    }

    #[test]
    fn fallback_relays_come_last_and_dns_can_be_off() {
        let dns = Arc::new(StubResolver::new());
        dns.add_mx("example.net", 10, "mx.example.net");
        dns.add_address("mx.example.net", ip("192.0.2.1"));
        let mut config = SmtpConfig::new("smtp", false);
        config.fallback_relay = vec![NextHop::parse("[192.0.2.50]:2525").unwrap()];
        let a = agent(&dns, config.clone());
        let servers = block_on(a.servers("example.net")).unwrap();
        assert_eq!(
            names(&servers),
            ["mx.example.net/192.0.2.1:25", "192.0.2.50/192.0.2.50:2525"]
        );
        // A temporary DNS failure leaves the fallback relay.
        dns.fail_temporarily("example.net", RecordType::Mx, 1);
        let servers = block_on(a.servers("example.net")).unwrap();
        assert_eq!(names(&servers), ["192.0.2.50/192.0.2.50:2525"]);

        config.fallback_relay.clear();
        config.mx_lookup = false;
        dns.add_address("example.net", ip("192.0.2.9"));
        let a = agent(&dns, config);
        let servers = block_on(a.servers("example.net")).unwrap();
        assert_eq!(names(&servers), ["example.net/192.0.2.9:25"]);
    }

    #[test]
    fn lmtp_next_hops() {
        let dns = Arc::new(StubResolver::new());
        dns.add_mx("mailstore.example", 10, "elsewhere.example");
        dns.add_address("mailstore.example", ip("192.0.2.40"));
        let a = agent(&dns, SmtpConfig::new("lmtp", true));
        let servers = block_on(a.servers("inet:mailstore.example")).unwrap();
        assert_eq!(
            names(&servers),
            ["mailstore.example/192.0.2.40:24"],
            "no MX for LMTP"
        );
        let servers = block_on(a.servers("inet:[192.0.2.41]:2424")).unwrap();
        assert_eq!(names(&servers), ["192.0.2.41/192.0.2.41:2424"]);
        let servers = block_on(a.servers("inet:192.0.2.42:2424")).unwrap();
        assert_eq!(names(&servers), ["192.0.2.42/192.0.2.42:2424"]);
        let servers = block_on(a.servers("192.0.2.43")).unwrap();
        assert_eq!(names(&servers), ["192.0.2.43/192.0.2.43:24"]);
        let servers = block_on(a.servers("unix:private/dovecot-lmtp")).unwrap();
        assert_eq!(
            servers[0].path.as_deref(),
            Some(std::path::Path::new("/private/dovecot-lmtp"))
        );
        assert_eq!(
            servers[0].relay().to_string(),
            "mail.example.com[/private/dovecot-lmtp]"
        );
    }

    #[test]
    fn orcpt_from_the_client_or_the_original_address() {
        let mut r = Recipient::new("alice@example.com".parse().unwrap(), 0);
        assert_eq!(recipient_spec(&r).orcpt, None);
        r.original = Some("postmaster@example.com".parse().unwrap());
        assert_eq!(
            recipient_spec(&r).orcpt.as_deref(),
            Some("postmaster@example.com")
        );
        r.dsn_orcpt = Some("rfc822;Info@Example.com".into());
        assert_eq!(
            recipient_spec(&r).orcpt.as_deref(),
            Some("Info@Example.com")
        );
        r.dsn_orcpt = Some("x400;whatever".into());
        assert_eq!(recipient_spec(&r).orcpt, None);
    }
}

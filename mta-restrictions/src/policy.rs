//! `check_policy_service`: Postfix's SMTPD policy delegation protocol.
//!
//! At the restriction, the engine sends the policy server a request of
//! `name=value` lines ended by an empty line (SMTPD_POLICY_README: the
//! attributes of [`PolicyRequest::from_context`]) and reads back a reply of
//! the same shape whose `action=` value is an access(5) action: `OK`,
//! `DUNNO`, `REJECT text`, `DEFER_IF_PERMIT text`, `4NN`/`5NN text`, a
//! restriction list, and so on. A server that cannot be reached, times
//! out, closes the connection or answers without `action=` is tried
//! `smtpd_policy_service_try_limit` times, `_retry_delay` apart; then the
//! `smtpd_policy_service_default_action` applies (`451 4.3.5 Server
//! configuration problem`).
//!
//! # Who does the I/O
//!
//! The engine is async and depends on no runtime, so it does no I/O
//! itself: it asks a [`PolicyClient`], which the caller installs with
//! [`crate::restriction::Restrictions::set_policy_client`], in the same way
//! as DNS goes through the core `Resolver`. This module ships
//! [`StdPolicyClient`], a blocking client on `std::net` and
//! `std::os::unix::net` with socket deadlines and a connection cache
//! (`_max_idle`, `_max_ttl`, `_request_limit`). Its future does the
//! blocking work when first polled, which suits callers that evaluate on a
//! thread allowed to block (`block_on` in tests and tools); an async
//! server implements [`PolicyClient`] by moving
//! [`StdPolicyClient::query_blocking`] to its blocking pool (tokio's
//! `spawn_blocking`), or with its own async sockets. Without a client the
//! restriction answers with the default action and logs why.
//!
//! # Example
//! ```
//! use mta_restrictions::policy::{parse_reply, PolicyEndpoint};
//! assert_eq!(
//!     "inet:127.0.0.1:9998".parse::<PolicyEndpoint>().unwrap(),
//!     PolicyEndpoint::Inet { host: "127.0.0.1".into(), port: 9998 }
//! );
//! assert_eq!(parse_reply("action=REJECT go away\n\n").unwrap(), "REJECT go away");
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mta_core::config::{Config, ConfigError};

use crate::restriction::{SmtpContext, Stage};

/// The longest policy reply read, in bytes: more is a broken server.
pub const MAX_REPLY_LEN: usize = 64 * 1024;

/// Where a policy server listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PolicyEndpoint {
    /// `inet:host:port` (`inet:[::1]:port` for IPv6).
    Inet {
        /// Host name or address.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// `unix:/path`.
    Unix(PathBuf),
}

impl FromStr for PolicyEndpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<PolicyEndpoint, String> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!("policy service {s}: no socket path"));
            }
            return Ok(PolicyEndpoint::Unix(PathBuf::from(path)));
        }
        let Some(rest) = s.strip_prefix("inet:") else {
            return Err(format!(
                "policy service {s}: expected inet:host:port or unix:/path"
            ));
        };
        let (host, port) = match rest.strip_prefix('[') {
            Some(r) => match r.split_once("]:") {
                Some((h, p)) => (h, p),
                None => return Err(format!("policy service {s}: bad [address]:port")),
            },
            None => rest
                .rsplit_once(':')
                .ok_or_else(|| format!("policy service {s}: no port"))?,
        };
        let port = port
            .parse()
            .map_err(|_| format!("policy service {s}: bad port \"{port}\""))?;
        if host.is_empty() {
            return Err(format!("policy service {s}: no host"));
        }
        Ok(PolicyEndpoint::Inet {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for PolicyEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyEndpoint::Inet { host, port } if host.contains(':') => {
                write!(f, "inet:[{host}]:{port}")
            }
            PolicyEndpoint::Inet { host, port } => write!(f, "inet:{host}:{port}"),
            PolicyEndpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A policy service with its limits: the `smtpd_policy_service_*`
/// parameters, overridden per service by `check_policy_service { inet:...,
/// timeout=10s, default_action=DUNNO }` (Postfix 3.0 and later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyService {
    /// Where it listens.
    pub endpoint: PolicyEndpoint,
    /// `timeout`: to connect, send, and receive the reply (default 100s).
    pub timeout: Duration,
    /// `max_idle`: close a connection unused this long (default 300s).
    pub max_idle: Duration,
    /// `max_ttl`: close a connection this old (default 1000s).
    pub max_ttl: Duration,
    /// `request_limit`: requests per connection, 0 for no limit.
    pub request_limit: u32,
    /// `try_limit`: attempts per request (default 2).
    pub try_limit: u32,
    /// `retry_delay`: between attempts (default 1s).
    pub retry_delay: Duration,
    /// `default_action`: the access(5) action when every attempt failed
    /// (default `451 4.3.5 Server configuration problem`).
    pub default_action: String,
    /// `policy_context`: sent as the `policy_context` attribute.
    pub policy_context: String,
}

impl PolicyService {
    /// Reads `check_policy_service`'s argument: `inet:host:port`,
    /// `unix:/path`, or `{ endpoint, name=value, ... }`, with the defaults
    /// of `config`.
    ///
    /// # Errors
    ///
    /// A bad endpoint, an unknown attribute or a bad value, as text for the
    /// caller to locate.
    pub fn from_argument(argument: &str, config: &Config) -> Result<PolicyService, String> {
        let time = |name: &str| -> Result<Duration, String> {
            config.time(name).map_err(|e: ConfigError| e.to_string())
        };
        let count = |name: &str| -> Result<u32, String> {
            let n = config.integer(name).map_err(|e| e.to_string())?;
            u32::try_from(n).map_err(|_| format!("{name}: bad value {n}"))
        };
        let text = |name: &str| config.expanded(name).map_err(|e| e.to_string());
        let (endpoint, overrides) = match argument
            .trim()
            .strip_prefix('{')
            .and_then(|a| a.strip_suffix('}'))
        {
            Some(inner) => {
                let mut parts = inner.split(',').map(str::trim).filter(|p| !p.is_empty());
                let endpoint = parts.next().unwrap_or("");
                (endpoint.to_string(), parts.map(str::to_string).collect())
            }
            None => (argument.trim().to_string(), Vec::new()),
        };
        let mut service = PolicyService {
            endpoint: endpoint.parse()?,
            timeout: time("smtpd_policy_service_timeout")?,
            max_idle: time("smtpd_policy_service_max_idle")?,
            max_ttl: time("smtpd_policy_service_max_ttl")?,
            request_limit: count("smtpd_policy_service_request_limit")?,
            try_limit: count("smtpd_policy_service_try_limit")?,
            retry_delay: time("smtpd_policy_service_retry_delay")?,
            default_action: text("smtpd_policy_service_default_action")?,
            policy_context: text("smtpd_policy_service_policy_context")?,
        };
        for item in overrides {
            let (name, value) = item
                .split_once('=')
                .map(|(n, v)| (n.trim(), v.trim()))
                .ok_or_else(|| format!("check_policy_service: \"{item}\" is not name=value"))?;
            let duration = || {
                mta_core::units::parse_time(value, mta_core::units::TimeUnit::Seconds)
                    .map_err(|e| format!("check_policy_service {name}={value}: {e}"))
            };
            let number = || {
                value
                    .parse::<u32>()
                    .map_err(|_| format!("check_policy_service {name}={value}: not a number"))
            };
            match name {
                "timeout" => service.timeout = duration()?,
                "max_idle" => service.max_idle = duration()?,
                "max_ttl" => service.max_ttl = duration()?,
                "retry_delay" => service.retry_delay = duration()?,
                "request_limit" => service.request_limit = number()?,
                "try_limit" => service.try_limit = number()?,
                "default_action" => service.default_action = value.to_string(),
                "policy_context" => service.policy_context = value.to_string(),
                _ => {
                    return Err(format!(
                        "check_policy_service: unknown attribute \"{name}\""
                    ));
                }
            }
        }
        if service.try_limit == 0 {
            service.try_limit = 1;
        }
        Ok(service)
    }
}

/// A policy request: attributes in the order they are sent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyRequest {
    /// `name`, `value` pairs.
    pub attributes: Vec<(String, String)>,
}

impl PolicyRequest {
    /// The request the Postfix SMTP server sends at `stage`
    /// (SMTPD_POLICY_README). Attributes the session does not know (TLS,
    /// SASL method, size, server address) are sent empty, as the protocol
    /// allows; `recipient` only at RCPT and, with one recipient, at DATA
    /// and END-OF-MESSAGE; `recipient_count` is zero at RCPT.
    pub fn from_context(stage: Stage, ctx: &SmtpContext, service: &PolicyService) -> Self {
        let state = match stage {
            Stage::Connect => "CONNECT",
            Stage::Helo => {
                if ctx.esmtp {
                    "EHLO"
                } else {
                    "HELO"
                }
            }
            Stage::Mail => "MAIL",
            Stage::Rcpt => "RCPT",
            Stage::Data => "DATA",
            Stage::EndOfData => "END-OF-MESSAGE",
            Stage::Etrn => "ETRN",
        };
        let recipient = match stage {
            Stage::Rcpt => ctx.recipient.clone(),
            Stage::Data | Stage::EndOfData if ctx.recipient_count == 1 => ctx.recipient.clone(),
            _ => None,
        };
        let recipient_count = match stage {
            Stage::Data | Stage::EndOfData => ctx.recipient_count,
            _ => 0,
        };
        let name = |n: &crate::restriction::ClientName| n.as_str().to_string();
        let mut attributes: Vec<(&str, String)> = vec![
            ("request", "smtpd_access_policy".into()),
            ("protocol_state", state.into()),
            (
                "protocol_name",
                if ctx.esmtp { "ESMTP" } else { "SMTP" }.into(),
            ),
            ("helo_name", ctx.helo.clone().unwrap_or_default()),
            ("queue_id", ctx.queue_id.clone().unwrap_or_default()),
            ("sender", ctx.sender.clone().unwrap_or_default()),
            ("recipient", recipient.unwrap_or_default()),
            ("recipient_count", recipient_count.to_string()),
            ("client_address", ctx.client_address.to_string()),
            ("client_name", name(&ctx.client_name)),
            ("reverse_client_name", name(&ctx.reverse_name)),
            ("instance", String::new()),
            ("sasl_method", String::new()),
            (
                "sasl_username",
                ctx.sasl_username.clone().unwrap_or_default(),
            ),
            ("sasl_sender", String::new()),
            ("size", "0".into()),
            ("ccert_subject", String::new()),
            ("ccert_issuer", String::new()),
            (
                "ccert_fingerprint",
                ctx.ccert_fingerprint.clone().unwrap_or_default(),
            ),
            ("ccert_pubkey_fingerprint", String::new()),
            ("encryption_protocol", String::new()),
            ("encryption_cipher", String::new()),
            ("encryption_keysize", "0".into()),
            ("etrn_domain", ctx.etrn_domain.clone().unwrap_or_default()),
            ("stress", String::new()),
            ("policy_context", service.policy_context.clone()),
        ];
        // The session's identity of the message, when it has one.
        if let Some(id) = &ctx.queue_id {
            attributes[11].1 = id.clone();
        }
        PolicyRequest {
            attributes: attributes
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect(),
        }
    }

    /// The request on the wire: `name=value` lines and an empty line.
    /// Line breaks in values (which SMTP never lets through) become
    /// spaces, so a value cannot end the request early.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::new();
        for (name, value) in &self.attributes {
            out.push_str(name);
            out.push('=');
            out.extend(value.chars().map(|c| match c {
                '\n' | '\r' => ' ',
                c => c,
            }));
            out.push('\n');
        }
        out.push('\n');
        out.into_bytes()
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a policy query failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Connecting, sending or receiving failed (refused, reset, timed
    /// out).
    #[error("{endpoint}: {source}")]
    Io {
        /// The service.
        endpoint: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The server closed the connection before the end of its reply.
    #[error("{endpoint}: connection closed before the end of the reply")]
    Closed {
        /// The service.
        endpoint: String,
    },
    /// The reply has no `action=` attribute, or is too long.
    #[error("{endpoint}: malformed reply: {why}")]
    Malformed {
        /// The service.
        endpoint: String,
        /// What is wrong.
        why: String,
    },
    /// No [`PolicyClient`] was installed.
    #[error("no policy client installed to reach {endpoint}")]
    NoClient {
        /// The service.
        endpoint: String,
    },
}

/// Reads the action from a complete reply (`name=value` lines up to an
/// empty line); the first `action=` counts.
///
/// # Errors
///
/// The reply has no `action=` line.
pub fn parse_reply(reply: &str) -> Result<String, String> {
    for line in reply.lines() {
        if line.trim().is_empty() {
            break;
        }
        if let Some(action) = line.strip_prefix("action=") {
            return Ok(action.trim().to_string());
        }
    }
    Err("no action= attribute".into())
}

/// The future of a policy query.
pub type PolicyFuture<'a> = Pin<Box<dyn Future<Output = Result<String, PolicyError>> + Send + 'a>>;

/// Sends policy requests; see the module documentation for the choice.
pub trait PolicyClient: Send + Sync {
    /// Sends `request` to `service` (with its retries) and returns the
    /// reply's action.
    fn query<'a>(
        &'a self,
        service: &'a PolicyService,
        request: &'a PolicyRequest,
    ) -> PolicyFuture<'a>;
}

/// An open connection to a policy server.
enum Connection {
    Tcp(BufReader<TcpStream>),
    #[cfg(unix)]
    Unix(BufReader<std::os::unix::net::UnixStream>),
}

struct Cached {
    connection: Connection,
    opened: Instant,
    last_used: Instant,
    requests: u32,
}

impl Connection {
    fn open(endpoint: &PolicyEndpoint, timeout: Duration) -> std::io::Result<Connection> {
        match endpoint {
            PolicyEndpoint::Inet { host, port } => {
                let mut last = None;
                for addr in (host.as_str(), *port).to_socket_addrs()? {
                    match TcpStream::connect_timeout(&addr, timeout) {
                        Ok(s) => return Ok(Connection::Tcp(BufReader::new(s))),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no address")
                }))
            }
            #[cfg(unix)]
            PolicyEndpoint::Unix(path) => {
                let s = std::os::unix::net::UnixStream::connect(path)?;
                Ok(Connection::Unix(BufReader::new(s)))
            }
            #[cfg(not(unix))]
            PolicyEndpoint::Unix(_) => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "UNIX-domain sockets are not available here",
            )),
        }
    }

    /// Sends the request and reads the reply, every step within
    /// `deadline`.
    fn exchange(&mut self, request: &[u8], deadline: Instant) -> Result<String, ExchangeError> {
        let remaining = || {
            deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    ExchangeError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "policy server timeout",
                    ))
                })
        };
        macro_rules! with_stream {
            ($reader:expr) => {{
                let reader = $reader;
                reader.get_ref().set_write_timeout(Some(remaining()?))?;
                reader.get_mut().write_all(request)?;
                reader.get_mut().flush()?;
                let mut reply = String::new();
                loop {
                    reader.get_ref().set_read_timeout(Some(remaining()?))?;
                    let mut line = String::new();
                    let n = reader.read_line(&mut line)?;
                    if n == 0 || !line.ends_with('\n') {
                        return Err(ExchangeError::Closed);
                    }
                    if line.trim_end_matches(['\r', '\n']).is_empty() {
                        return Ok(reply);
                    }
                    reply.push_str(&line);
                    if reply.len() > MAX_REPLY_LEN {
                        return Err(ExchangeError::TooLong);
                    }
                }
            }};
        }
        match self {
            Connection::Tcp(r) => with_stream!(r),
            #[cfg(unix)]
            Connection::Unix(r) => with_stream!(r),
        }
    }
}

enum ExchangeError {
    Io(std::io::Error),
    Closed,
    TooLong,
}

impl From<std::io::Error> for ExchangeError {
    fn from(e: std::io::Error) -> Self {
        ExchangeError::Io(e)
    }
}

/// A blocking policy client over `std` sockets, keeping one connection per
/// service open between requests (Postfix's behaviour) within `max_idle`,
/// `max_ttl` and `request_limit`.
///
/// This type is the I/O edge: it reads the monotonic clock for its
/// deadlines and connection ages.
#[derive(Default)]
pub struct StdPolicyClient {
    connections: Mutex<HashMap<PolicyEndpoint, Cached>>,
}

impl fmt::Debug for StdPolicyClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StdPolicyClient").finish_non_exhaustive()
    }
}

impl StdPolicyClient {
    /// A client with no connections yet.
    pub fn new() -> StdPolicyClient {
        StdPolicyClient::default()
    }

    /// Sends `request` to `service`, blocking: up to `try_limit` attempts,
    /// `retry_delay` apart, each within `timeout`.
    ///
    /// # Errors
    ///
    /// The last attempt's [`PolicyError`].
    pub fn query_blocking(
        &self,
        service: &PolicyService,
        request: &PolicyRequest,
    ) -> Result<String, PolicyError> {
        let wire = request.encode();
        let endpoint = service.endpoint.to_string();
        let mut last = None;
        for attempt in 0..service.try_limit.max(1) {
            if attempt > 0 {
                std::thread::sleep(service.retry_delay);
            }
            match self.attempt(service, &wire) {
                Ok(reply) => {
                    return parse_reply(&reply)
                        .map_err(|why| PolicyError::Malformed { endpoint, why });
                }
                Err(ExchangeError::Io(source)) => {
                    last = Some(PolicyError::Io {
                        endpoint: endpoint.clone(),
                        source,
                    });
                }
                Err(ExchangeError::Closed) => {
                    last = Some(PolicyError::Closed {
                        endpoint: endpoint.clone(),
                    });
                }
                Err(ExchangeError::TooLong) => {
                    last = Some(PolicyError::Malformed {
                        endpoint: endpoint.clone(),
                        why: format!("reply longer than {MAX_REPLY_LEN} bytes"),
                    });
                }
            }
        }
        Err(last.unwrap_or(PolicyError::Closed { endpoint }))
    }

    fn attempt(&self, service: &PolicyService, wire: &[u8]) -> Result<String, ExchangeError> {
        let now = Instant::now();
        let deadline = now + service.timeout;
        // Take the cached connection out while it is in use, so that two
        // sessions never interleave on one stream.
        let cached = self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&service.endpoint)
            .filter(|c| {
                now.duration_since(c.last_used) < service.max_idle
                    && now.duration_since(c.opened) < service.max_ttl
                    && (service.request_limit == 0 || c.requests < service.request_limit)
            });
        let mut cached = match cached {
            Some(c) => c,
            None => Cached {
                connection: Connection::open(&service.endpoint, service.timeout)?,
                opened: now,
                last_used: now,
                requests: 0,
            },
        };
        let reply = cached.connection.exchange(wire, deadline)?;
        cached.requests += 1;
        cached.last_used = Instant::now();
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(service.endpoint.clone(), cached);
        Ok(reply)
    }
}

impl PolicyClient for StdPolicyClient {
    fn query<'a>(
        &'a self,
        service: &'a PolicyService,
        request: &'a PolicyRequest,
    ) -> PolicyFuture<'a> {
        Box::pin(async move { self.query_blocking(service, request) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mta_core::config::HostFacts;

    #[test]
    fn endpoints() {
        assert_eq!(
            "inet:[::1]:10023".parse::<PolicyEndpoint>().unwrap(),
            PolicyEndpoint::Inet {
                host: "::1".into(),
                port: 10023
            }
        );
        assert_eq!(
            "unix:/run/policy".parse::<PolicyEndpoint>().unwrap(),
            PolicyEndpoint::Unix("/run/policy".into())
        );
        assert_eq!(
            "inet:[::1]:10023"
                .parse::<PolicyEndpoint>()
                .unwrap()
                .to_string(),
            "inet:[::1]:10023"
        );
        assert!("private/policy".parse::<PolicyEndpoint>().is_err());
        assert!("inet:host".parse::<PolicyEndpoint>().is_err());
        assert!("inet:host:99999".parse::<PolicyEndpoint>().is_err());
    }

    #[test]
    fn settings_and_overrides() {
        let config = Config::parse(
            "smtpd_policy_service_try_limit = 3\n",
            "main.cf",
            HostFacts::default(),
        )
        .unwrap();
        let s = PolicyService::from_argument("inet:127.0.0.1:9998", &config).unwrap();
        assert_eq!(s.timeout, Duration::from_secs(100));
        assert_eq!(s.max_idle, Duration::from_secs(300));
        assert_eq!(s.max_ttl, Duration::from_secs(1000));
        assert_eq!(s.retry_delay, Duration::from_secs(1));
        assert_eq!(s.try_limit, 3);
        assert_eq!(s.default_action, "451 4.3.5 Server configuration problem");
        let s = PolicyService::from_argument(
            "{ unix:/run/p, timeout=10s, default_action=DUNNO, try_limit=1, policy_context=sub }",
            &config,
        )
        .unwrap();
        assert_eq!(s.endpoint, PolicyEndpoint::Unix("/run/p".into()));
        assert_eq!(s.timeout, Duration::from_secs(10));
        assert_eq!(s.default_action, "DUNNO");
        assert_eq!(s.try_limit, 1);
        assert_eq!(s.policy_context, "sub");
        assert!(PolicyService::from_argument("{ unix:/p, colour=blue }", &config).is_err());
    }

    #[test]
    fn request_shape() {
        let config = Config::parse("", "main.cf", HostFacts::default()).unwrap();
        let s = PolicyService::from_argument("inet:127.0.0.1:9998", &config).unwrap();
        let mut ctx = SmtpContext::new("192.0.2.1".parse().unwrap());
        ctx.helo = Some("h.example".into());
        ctx.sender = Some("a@b.example".into());
        ctx.recipient = Some("c@d.example\nbad=1".into());
        ctx.esmtp = true;
        let r = PolicyRequest::from_context(Stage::Rcpt, &ctx, &s);
        let text = String::from_utf8(r.encode()).unwrap();
        assert!(text.starts_with(
            "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n\
             helo_name=h.example\nqueue_id=\nsender=a@b.example\nrecipient=c@d.example bad=1\n\
             recipient_count=0\nclient_address=192.0.2.1\nclient_name=unknown\n"
        ));
        assert!(text.ends_with("policy_context=\n\n"));
        // DATA with two recipients: no recipient, the count.
        ctx.recipient_count = 2;
        let r = PolicyRequest::from_context(Stage::Data, &ctx, &s);
        assert_eq!(r.get("recipient"), Some(""));
        assert_eq!(r.get("recipient_count"), Some("2"));
        assert_eq!(r.get("protocol_state"), Some("DATA"));
    }

    #[test]
    fn replies() {
        assert_eq!(parse_reply("action=OK\n").unwrap(), "OK");
        assert_eq!(
            parse_reply("foo=bar\naction=DEFER_IF_PERMIT try later\n\n").unwrap(),
            "DEFER_IF_PERMIT try later"
        );
        assert!(parse_reply("\naction=OK\n").is_err());
        assert!(parse_reply("result=OK\n").is_err());
    }
}

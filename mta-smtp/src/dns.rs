//! The [`Resolver`] of `mta-core` on hickory-resolver and tokio: the DNS
//! that `mtad` uses for MX lookups, `reject_unknown_*` checks and DNSBLs.
//!
//! Each lookup's outcome is sorted into the answers mail decisions rest
//! on ([`DnsAnswer`]): records; NXDOMAIN (the name does not exist: reject
//! or bounce); NODATA (the name exists without records of that type: for
//! MX, use the address records); a temporary failure (SERVFAIL, REFUSED,
//! a timeout, no server reachable: defer, never reject); a permanent
//! failure only for a name that is not a valid DNS name at all. That last
//! rule is deliberately narrow: a server answering FORMERR or NOTIMP may
//! be misconfigured today and fixed tomorrow, and a mail system must not
//! bounce on it.
//!
//! CNAME chains are followed by hickory. Answers are cached by hickory
//! within their TTLs. Names are looked up as given, fully qualified: no
//! search list is applied (a mail domain is never relative), as Postfix's
//! `smtp_dns_resolver_options` default leaves `RES_DEFNAMES` and
//! `RES_DNSRCH` off.
//!
//! # Example
//!
//! ```no_run
//! use mta_core::dns::{DnsAnswer, Resolver};
//! use mta_smtp::dns::HickoryResolver;
//!
//! # async fn run() -> std::io::Result<()> {
//! let dns = HickoryResolver::from_system()?;
//! if let DnsAnswer::Found(mx) = dns.lookup_mx("example.com").await {
//!     println!("{} exchangers", mx.len());
//! }
//! # Ok(())
//! # }
//! ```

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType as HickoryType};
use mta_core::dns::{DnsAnswer, DnsFuture, MxRecord, Resolver, ptr_name};

/// How long one query waits for an answer before it is retried, and how
/// often: hickory's defaults are 5 s and 2 attempts; Postfix leaves these
/// to the system resolver, whose defaults are the same (`resolv.conf(5)`).
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
const QUERY_ATTEMPTS: usize = 2;

/// A [`Resolver`] backed by hickory-resolver on the tokio runtime.
#[derive(Clone)]
pub struct HickoryResolver {
    inner: TokioResolver,
}

impl std::fmt::Debug for HickoryResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HickoryResolver").finish_non_exhaustive()
    }
}

impl HickoryResolver {
    /// The system's name servers, from `/etc/resolv.conf`.
    ///
    /// # Errors
    ///
    /// When the system configuration cannot be read.
    pub fn from_system() -> std::io::Result<HickoryResolver> {
        let (config, _) =
            hickory_resolver::system_conf::read_system_conf().map_err(std::io::Error::other)?;
        Self::build(config, QUERY_TIMEOUT)
    }

    /// The given name servers (address and port each), asked over UDP and
    /// then TCP, in order. Tests use a server on loopback; a site can
    /// point mail at a local validating resolver.
    ///
    /// # Errors
    ///
    /// When the resolver cannot be built.
    pub fn with_servers(servers: &[SocketAddr]) -> std::io::Result<HickoryResolver> {
        Self::with_servers_and_timeout(servers, QUERY_TIMEOUT)
    }

    /// [`with_servers`](Self::with_servers), waiting `timeout` for each
    /// answer (tests of unanswered queries use a short one).
    ///
    /// # Errors
    ///
    /// When the resolver cannot be built.
    pub fn with_servers_and_timeout(
        servers: &[SocketAddr],
        timeout: Duration,
    ) -> std::io::Result<HickoryResolver> {
        let mut config = ResolverConfig::from_parts(None, Vec::new(), Vec::new());
        for server in servers {
            let mut udp = ConnectionConfig::udp();
            udp.port = server.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = server.port();
            config.add_name_server(NameServerConfig::new(server.ip(), true, vec![udp, tcp]));
        }
        Self::build(config, timeout)
    }

    fn build(config: ResolverConfig, timeout: Duration) -> std::io::Result<HickoryResolver> {
        let (_, _, servers) = config.into_parts();
        // No domain and no search list: mail names are absolute.
        let config = ResolverConfig::from_parts(None, Vec::new(), servers);
        let mut opts = ResolverOpts::default();
        opts.timeout = timeout;
        opts.attempts = QUERY_ATTEMPTS;
        opts.ndots = 0;
        let inner = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(std::io::Error::other)?;
        Ok(HickoryResolver { inner })
    }

    /// Looks `name` up as `rtype` and converts each record with `convert`
    /// (records of other types, such as the CNAMEs on the way, are
    /// skipped).
    async fn query<T>(
        &self,
        name: &str,
        rtype: HickoryType,
        convert: impl Fn(&RData) -> Option<T>,
    ) -> DnsAnswer<T> {
        let fqdn = match absolute(name) {
            Ok(n) => n,
            Err(why) => return DnsAnswer::PermFail(why),
        };
        match self.inner.lookup(fqdn, rtype).await {
            Ok(lookup) => DnsAnswer::from_records(
                lookup
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == rtype)
                    .filter_map(|r| convert(&r.data))
                    .collect(),
            ),
            Err(e) => classify(name, rtype, &e),
        }
    }
}

/// `name` as an absolute DNS name.
fn absolute(name: &str) -> Result<Name, String> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err(format!("{name:?}: empty name"));
    }
    let mut n = Name::from_ascii(trimmed).map_err(|e| format!("{name}: bad name: {e}"))?;
    n.set_fqdn(true);
    Ok(n)
}

/// Sorts a failed lookup into NXDOMAIN, NODATA or a temporary failure.
fn classify<T>(name: &str, rtype: HickoryType, error: &NetError) -> DnsAnswer<T> {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(no)) => {
            if no.response_code == ResponseCode::NXDomain {
                DnsAnswer::NxDomain
            } else {
                DnsAnswer::NoData
            }
        }
        other => DnsAnswer::TempFail(format!("{name}/{rtype}: {other}")),
    }
}

/// A name from an answer, lower-cased, without the trailing dot.
fn text(name: &Name) -> String {
    let s = name.to_ascii();
    let s = s.strip_suffix('.').unwrap_or(&s);
    s.to_ascii_lowercase()
}

impl Resolver for HickoryResolver {
    fn lookup_mx<'a>(&'a self, domain: &'a str) -> DnsFuture<'a, MxRecord> {
        Box::pin(self.query(domain, HickoryType::MX, |d| match d {
            RData::MX(mx) => {
                let exchange = if mx.exchange.is_root() {
                    ".".to_string()
                } else {
                    text(&mx.exchange)
                };
                Some(MxRecord::new(mx.preference, exchange))
            }
            _ => None,
        }))
    }

    fn lookup_a<'a>(&'a self, name: &'a str) -> DnsFuture<'a, IpAddr> {
        Box::pin(self.query(name, HickoryType::A, |d| match d {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        }))
    }

    fn lookup_aaaa<'a>(&'a self, name: &'a str) -> DnsFuture<'a, IpAddr> {
        Box::pin(self.query(name, HickoryType::AAAA, |d| match d {
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        }))
    }

    fn lookup_txt<'a>(&'a self, name: &'a str) -> DnsFuture<'a, String> {
        Box::pin(self.query(name, HickoryType::TXT, |d| match d {
            RData::TXT(txt) => {
                let mut joined = Vec::new();
                for piece in txt.txt_data.iter() {
                    joined.extend_from_slice(piece);
                }
                Some(String::from_utf8_lossy(&joined).into_owned())
            }
            _ => None,
        }))
    }

    fn lookup_ptr(&self, address: IpAddr) -> DnsFuture<'_, String> {
        Box::pin(async move {
            let name = ptr_name(address);
            self.query(&name, HickoryType::PTR, |d| match d {
                RData::PTR(ptr) => Some(text(&ptr.0)),
                _ => None,
            })
            .await
        })
    }

    fn lookup_ns<'a>(&'a self, domain: &'a str) -> DnsFuture<'a, String> {
        Box::pin(self.query(domain, HickoryType::NS, |d| match d {
            RData::NS(ns) => Some(text(&ns.0)),
            _ => None,
        }))
    }
}

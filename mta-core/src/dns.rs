//! The DNS interface the other crates share: the [`Resolver`] trait, the
//! record types, and a lookup result with the outcomes mail decisions
//! depend on.
//!
//! Mail treats DNS failures differently from DNS answers. A name that does
//! not exist (NXDOMAIN) is a reason to reject (`reject_unknown_*`) or to
//! bounce; a name that exists without records of the asked type (NODATA)
//! means something else for MX (fall back to the address records, RFC 5321
//! section 5.1) than for A; a temporary failure (SERVFAIL, timeout) must
//! never turn into a rejection, only into a deferral (a 4xx reply or a
//! later retry), as Postfix does. [`DnsAnswer`] keeps these apart so that
//! every caller has to decide.
//!
//! The trait is object-safe and asynchronous without naming a runtime:
//! methods return boxed futures, so `mta-smtp` can implement it with
//! hickory-resolver on tokio while this crate stays free of I/O. With the
//! `test-util` feature, `StubResolver` answers from records a test
//! sets, deterministically and without I/O.
//!
//! Names are passed and returned as `&str`/`String` in presentation form;
//! a trailing dot is allowed on input and never present on output (except
//! for the root, `.`, in a null MX).
//!
//! # Example
//!
//! ```
//! use mta_core::dns::{DnsAnswer, MxRecord, Resolver};
//!
//! /// Where to deliver mail for `domain`, in the order to try.
//! async fn mail_exchangers(dns: &dyn Resolver, domain: &str) -> Result<Vec<String>, String> {
//!     match dns.lookup_mx(domain).await {
//!         DnsAnswer::Found(mut mx) => {
//!             if MxRecord::is_null_mx(&mx) {
//!                 return Err(format!("{domain} accepts no mail (null MX)"));
//!             }
//!             mx.sort_by_key(|r| r.preference);
//!             Ok(mx.into_iter().map(|r| r.exchange).collect())
//!         }
//!         // No MX: the domain itself is the mail exchanger (RFC 5321 5.1).
//!         DnsAnswer::NoData => Ok(vec![domain.to_owned()]),
//!         DnsAnswer::NxDomain => Err(format!("{domain}: domain not found")),
//!         other => Err(format!("{domain}: try again later ({other:?})")),
//!     }
//! }
//! ```

// Names are plain text, not `crate::address::Domain`: DNS asks about
// names that are not mail domains (`2.0.0.127.zen.example` for a DNSBL,
// `_25._tcp.mx.example` for TLSA), and answers are taken as they come.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

/// The future a [`Resolver`] method returns: boxed, `Send`, borrowing the
/// resolver and the name for `'a`.
pub type DnsFuture<'a, T> = Pin<Box<dyn Future<Output = DnsAnswer<T>> + Send + 'a>>;

/// A DNS record type this interface looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RecordType {
    /// IPv4 address (RFC 1035).
    A,
    /// IPv6 address (RFC 3596).
    Aaaa,
    /// Mail exchanger (RFC 1035, RFC 5321 section 5).
    Mx,
    /// Text, for DNSBL explanations (RFC 1035).
    Txt,
    /// Reverse mapping of an address to a name (RFC 1035).
    Ptr,
    /// Name server of a zone (RFC 1035), for `check_sender_ns_access`.
    Ns,
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
            RecordType::Mx => "MX",
            RecordType::Txt => "TXT",
            RecordType::Ptr => "PTR",
            RecordType::Ns => "NS",
        })
    }
}

/// One MX record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MxRecord {
    /// Lower is tried first.
    pub preference: u16,
    /// The mail exchanger's host name, without trailing dot; `.` for the
    /// root name of a null MX.
    pub exchange: String,
}

impl MxRecord {
    /// An MX record.
    pub fn new(preference: u16, exchange: impl Into<String>) -> MxRecord {
        MxRecord {
            preference,
            exchange: exchange.into(),
        }
    }

    /// Whether this record has the null MX form of RFC 7505 section 3:
    /// preference 0 and the root name as exchange (written `.`; an empty
    /// name is taken as the root too, since resolvers differ in how they
    /// print it).
    pub fn is_null(&self) -> bool {
        self.preference == 0 && (self.exchange == "." || self.exchange.is_empty())
    }

    /// Whether an MX answer says "this domain accepts no mail" (RFC 7505):
    /// exactly one record, and that record null.
    ///
    /// A null record among other MX records breaks RFC 7505 section 3's
    /// "MUST NOT"; it is then not a null MX, and the caller should skip the
    /// unusable record and use the others.
    pub fn is_null_mx(records: &[MxRecord]) -> bool {
        matches!(records, [only] if only.is_null())
    }
}

/// The outcome of one lookup.
///
/// `Found` always holds at least one record: an empty answer is
/// [`DnsAnswer::NoData`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DnsAnswer<T> {
    /// Records of the requested type.
    Found(Vec<T>),
    /// The name does not exist (RCODE NXDOMAIN, RFC 1035 and RFC 8020).
    /// For mail: reject or bounce.
    NxDomain,
    /// The name exists but has no records of this type (RFC 2308
    /// section 2.2). For MX: use the name's address records instead.
    NoData,
    /// The answer may be different later: SERVFAIL, a timeout, no server
    /// reachable. For mail: defer (4xx), never reject. The text says what
    /// happened, for logs.
    TempFail(String),
    /// The lookup cannot succeed however often it is retried: a malformed
    /// name, REFUSED or NOTIMP by design, a broken answer. The text says
    /// what happened, for logs.
    PermFail(String),
}

impl<T> DnsAnswer<T> {
    /// The records, if any were found.
    pub fn records(&self) -> Option<&[T]> {
        match self {
            DnsAnswer::Found(records) => Some(records),
            _ => None,
        }
    }

    /// The records, if any were found, by value.
    pub fn into_records(self) -> Option<Vec<T>> {
        match self {
            DnsAnswer::Found(records) => Some(records),
            _ => None,
        }
    }

    /// Whether the name was found with records of the type asked for.
    pub fn is_found(&self) -> bool {
        matches!(self, DnsAnswer::Found(_))
    }

    /// Whether the name definitely has no records of this type (NXDOMAIN or
    /// NODATA): the answer on which "not listed" and "unknown" decisions
    /// can rest.
    pub fn is_negative(&self) -> bool {
        matches!(self, DnsAnswer::NxDomain | DnsAnswer::NoData)
    }

    /// Whether the lookup failed temporarily, so the decision must wait.
    pub fn is_temporary(&self) -> bool {
        matches!(self, DnsAnswer::TempFail(_))
    }

    /// Converts the records, keeping every other outcome.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> DnsAnswer<U> {
        match self {
            DnsAnswer::Found(records) => DnsAnswer::Found(records.into_iter().map(f).collect()),
            DnsAnswer::NxDomain => DnsAnswer::NxDomain,
            DnsAnswer::NoData => DnsAnswer::NoData,
            DnsAnswer::TempFail(why) => DnsAnswer::TempFail(why),
            DnsAnswer::PermFail(why) => DnsAnswer::PermFail(why),
        }
    }

    /// `Found` for a non-empty list of records, `NoData` for an empty one;
    /// what an implementation returns for an answer section it parsed.
    pub fn from_records(records: Vec<T>) -> DnsAnswer<T> {
        if records.is_empty() {
            DnsAnswer::NoData
        } else {
            DnsAnswer::Found(records)
        }
    }
}

/// DNS lookups for the mail system.
///
/// Implementations: `mta-smtp`'s hickory-resolver one for real use, and
/// `StubResolver` (feature `test-util`) for tests. Each method resolves
/// one name and one type, with no CNAME handling visible to the caller
/// (the implementation follows CNAMEs). Names are in presentation form,
/// with or without a trailing dot; A-labels for internationalised names.
///
/// The trait is object-safe: use it as `&dyn Resolver` or
/// `Arc<dyn Resolver>`.
pub trait Resolver: Send + Sync {
    /// The MX records of `domain`, in no particular order.
    fn lookup_mx<'a>(&'a self, domain: &'a str) -> DnsFuture<'a, MxRecord>;

    /// The IPv4 addresses of `name` (A records); every address is
    /// [`IpAddr::V4`]. DNSBL queries are A lookups too.
    fn lookup_a<'a>(&'a self, name: &'a str) -> DnsFuture<'a, IpAddr>;

    /// The IPv6 addresses of `name` (AAAA records); every address is
    /// [`IpAddr::V6`].
    fn lookup_aaaa<'a>(&'a self, name: &'a str) -> DnsFuture<'a, IpAddr>;

    /// The TXT records of `name`, each record's character-strings joined
    /// into one string (as RFC 7208 section 3.3 does for SPF); bytes that
    /// are not UTF-8 are replaced.
    fn lookup_txt<'a>(&'a self, name: &'a str) -> DnsFuture<'a, String>;

    /// The names `address` maps back to (PTR records under `in-addr.arpa`
    /// or `ip6.arpa`), without trailing dot.
    fn lookup_ptr(&self, address: IpAddr) -> DnsFuture<'_, String>;

    /// The name servers of `domain` (NS records), without trailing dot.
    fn lookup_ns<'a>(&'a self, domain: &'a str) -> DnsFuture<'a, String>;
}

/// The labels of an address in reverse order, as DNSBL queries and PTR
/// names use them: `192.0.2.1` gives `1.2.0.192`, an IPv6 address gives
/// its 32 nibbles reversed (RFC 3596 section 2.5).
///
/// # Example
///
/// ```
/// use mta_core::dns::{reversed_address, ptr_name};
///
/// let ip = "192.0.2.1".parse().unwrap();
/// assert_eq!(reversed_address(ip), "1.2.0.192");
/// assert_eq!(ptr_name(ip), "1.2.0.192.in-addr.arpa");
/// // A DNSBL query for this client in zen.example:
/// assert_eq!(format!("{}.zen.example", reversed_address(ip)), "1.2.0.192.zen.example");
/// ```
pub fn reversed_address(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}")
        }
        IpAddr::V6(v6) => {
            let mut out = String::with_capacity(63);
            for byte in v6.octets().iter().rev() {
                for nibble in [byte & 0x0f, byte >> 4] {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
                }
            }
            out
        }
    }
}

/// The name whose PTR records map `address` back to host names.
pub fn ptr_name(address: IpAddr) -> String {
    let zone = match address {
        IpAddr::V4(_) => "in-addr.arpa",
        IpAddr::V6(_) => "ip6.arpa",
    };
    format!("{}.{zone}", reversed_address(address))
}

/// A name in the form the stub keys its records by: lower case, no
/// trailing dot.
#[cfg(any(test, feature = "test-util"))]
fn normalize(name: &str) -> String {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.to_ascii_lowercase()
}

#[cfg(any(test, feature = "test-util"))]
pub use stub::StubResolver;

#[cfg(any(test, feature = "test-util"))]
mod stub {
    use super::{
        DnsAnswer, DnsFuture, IpAddr, MxRecord, RecordType, Resolver, normalize, ptr_name,
    };
    use std::collections::HashMap;
    use std::sync::{Mutex, MutexGuard, PoisonError};

    /// What the stub knows about one name and type.
    #[derive(Debug, Default)]
    struct Entry {
        mx: Vec<MxRecord>,
        addresses: Vec<IpAddr>,
        text: Vec<String>,
        /// Queries still to fail temporarily before the records are used.
        temp_failures: usize,
        /// Set: every query fails permanently.
        perm_failure: bool,
    }

    /// What the stub knows about one name.
    #[derive(Debug, Default)]
    struct Name {
        /// Whether the name exists: it was given records or added with
        /// `add_name`. Scripted failures alone do not make it exist.
        exists: bool,
        types: HashMap<RecordType, Entry>,
    }

    #[derive(Debug, Default)]
    struct State {
        /// Keyed by normalised name.
        names: HashMap<String, Name>,
        queries: Vec<(RecordType, String)>,
    }

    /// A deterministic, in-memory [`Resolver`] for tests, behind the
    /// `test-util` feature.
    ///
    /// A test sets the records name by name; a name it never mentions does
    /// not exist (NXDOMAIN), and a name it gave records of another type
    /// answers NODATA. Failures are scripted per name and type: a number
    /// of temporary failures before the records are served, or a permanent
    /// failure. Every query is recorded, so a test can check what was
    /// looked up (and that nothing was, where DNS must not be consulted).
    ///
    /// All methods take `&self`, so answers can be changed while the
    /// resolver is shared (for example in an `Arc`). The futures it returns
    /// are ready at once and need no runtime.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_core::dns::{DnsAnswer, RecordType, Resolver, StubResolver};
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     let mut f = std::pin::pin!(f);
    /// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    /// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
    /// # }
    ///
    /// let dns = StubResolver::new();
    /// dns.add_mx("example.com", 10, "mx.example.com");
    /// dns.add_address("mx.example.com", "192.0.2.25".parse().unwrap());
    /// // The first MX lookup meets a SERVFAIL.
    /// dns.fail_temporarily("example.com", RecordType::Mx, 1);
    ///
    /// assert!(block_on(dns.lookup_mx("example.com")).is_temporary());
    /// assert!(block_on(dns.lookup_mx("Example.COM.")).is_found());
    /// assert_eq!(block_on(dns.lookup_aaaa("mx.example.com")), DnsAnswer::NoData);
    /// assert_eq!(block_on(dns.lookup_a("nowhere.example")), DnsAnswer::NxDomain);
    /// assert_eq!(dns.queries().len(), 4);
    /// ```
    #[derive(Debug, Default)]
    pub struct StubResolver {
        state: Mutex<State>,
    }

    impl StubResolver {
        /// A resolver that knows no names.
        pub fn new() -> StubResolver {
            StubResolver::default()
        }

        fn state(&self) -> MutexGuard<'_, State> {
            // A test that panicked while holding the lock leaves data that
            // is still consistent: every update is a single step.
            self.state.lock().unwrap_or_else(PoisonError::into_inner)
        }

        fn with_entry(
            &self,
            name: &str,
            rtype: RecordType,
            creates_name: bool,
            f: impl FnOnce(&mut Entry),
        ) {
            let mut state = self.state();
            let name = state.names.entry(normalize(name)).or_default();
            name.exists |= creates_name;
            f(name.types.entry(rtype).or_default());
        }

        /// Makes `name` exist, with no records yet: its lookups answer
        /// NODATA instead of NXDOMAIN.
        pub fn add_name(&self, name: &str) {
            self.state()
                .names
                .entry(normalize(name))
                .or_default()
                .exists = true;
        }

        /// Adds an MX record to `domain`. Use `"."` as exchange, with
        /// preference 0, for a null MX.
        pub fn add_mx(&self, domain: &str, preference: u16, exchange: &str) {
            let exchange = match exchange {
                "." => ".".to_owned(),
                other => normalize(other),
            };
            self.with_entry(domain, RecordType::Mx, true, |e| {
                e.mx.push(MxRecord::new(preference, exchange));
            });
        }

        /// Adds an address to `name`: an A record for IPv4, AAAA for IPv6.
        pub fn add_address(&self, name: &str, address: IpAddr) {
            let rtype = match address {
                IpAddr::V4(_) => RecordType::A,
                IpAddr::V6(_) => RecordType::Aaaa,
            };
            self.with_entry(name, rtype, true, |e| e.addresses.push(address));
        }

        /// Adds a TXT record (its strings already joined) to `name`.
        pub fn add_txt(&self, name: &str, text: &str) {
            self.with_entry(name, RecordType::Txt, true, |e| {
                e.text.push(text.to_owned());
            });
        }

        /// Adds an NS record naming `server` for `domain`.
        pub fn add_ns(&self, domain: &str, server: &str) {
            let server = normalize(server);
            self.with_entry(domain, RecordType::Ns, true, |e| e.text.push(server));
        }

        /// Adds a PTR record mapping `address` to `host`.
        pub fn add_ptr(&self, address: IpAddr, host: &str) {
            let host = normalize(host);
            self.with_entry(&ptr_name(address), RecordType::Ptr, true, |e| {
                e.text.push(host);
            });
        }

        /// Makes the next `count` lookups of `name` and `rtype` fail
        /// temporarily (as on SERVFAIL or timeout); later lookups get the
        /// records (or NXDOMAIN/NODATA). `usize::MAX` fails for good.
        ///
        /// This does not make the name exist for other types.
        pub fn fail_temporarily(&self, name: &str, rtype: RecordType, count: usize) {
            self.with_entry(name, rtype, false, |e| e.temp_failures = count);
        }

        /// Makes every lookup of `name` and `rtype` fail permanently.
        pub fn fail_permanently(&self, name: &str, rtype: RecordType) {
            self.with_entry(name, rtype, false, |e| e.perm_failure = true);
        }

        /// Forgets `name`: it answers NXDOMAIN again, without failures.
        pub fn remove_name(&self, name: &str) {
            self.state().names.remove(&normalize(name));
        }

        /// Every lookup so far, in order: the type and the name as the
        /// caller passed it (PTR lookups as their `arpa` name).
        pub fn queries(&self) -> Vec<(RecordType, String)> {
            self.state().queries.clone()
        }

        /// Answers one query from the records.
        fn answer<T>(
            &self,
            name: &str,
            rtype: RecordType,
            records: impl FnOnce(&Entry) -> Vec<T>,
        ) -> DnsAnswer<T> {
            let mut state = self.state();
            state.queries.push((rtype, name.to_owned()));
            let key = normalize(name);
            let Some(known) = state.names.get_mut(&key) else {
                return DnsAnswer::NxDomain;
            };
            if let Some(entry) = known.types.get_mut(&rtype) {
                if entry.perm_failure {
                    return DnsAnswer::PermFail(format!(
                        "{key}/{rtype}: scripted permanent failure"
                    ));
                }
                if entry.temp_failures > 0 {
                    // usize::MAX stands for "always".
                    if entry.temp_failures != usize::MAX {
                        entry.temp_failures -= 1;
                    }
                    return DnsAnswer::TempFail(format!(
                        "{key}/{rtype}: scripted temporary failure"
                    ));
                }
            }
            if !known.exists {
                return DnsAnswer::NxDomain;
            }
            match known.types.get(&rtype) {
                Some(entry) => DnsAnswer::from_records(records(entry)),
                None => DnsAnswer::NoData,
            }
        }
    }

    impl Resolver for StubResolver {
        fn lookup_mx<'a>(&'a self, domain: &'a str) -> DnsFuture<'a, MxRecord> {
            let answer = self.answer(domain, RecordType::Mx, |e| e.mx.clone());
            Box::pin(std::future::ready(answer))
        }

        fn lookup_a<'a>(&'a self, name: &'a str) -> DnsFuture<'a, IpAddr> {
            let answer = self.answer(name, RecordType::A, |e| e.addresses.clone());
            Box::pin(std::future::ready(answer))
        }

        fn lookup_aaaa<'a>(&'a self, name: &'a str) -> DnsFuture<'a, IpAddr> {
            let answer = self.answer(name, RecordType::Aaaa, |e| e.addresses.clone());
            Box::pin(std::future::ready(answer))
        }

        fn lookup_txt<'a>(&'a self, name: &'a str) -> DnsFuture<'a, String> {
            let answer = self.answer(name, RecordType::Txt, |e| e.text.clone());
            Box::pin(std::future::ready(answer))
        }

        fn lookup_ptr(&self, address: IpAddr) -> DnsFuture<'_, String> {
            let answer = self.answer(&ptr_name(address), RecordType::Ptr, |e| e.text.clone());
            Box::pin(std::future::ready(answer))
        }

        fn lookup_ns<'a>(&'a self, domain: &'a str) -> DnsFuture<'a, String> {
            let answer = self.answer(domain, RecordType::Ns, |e| e.text.clone());
            Box::pin(std::future::ready(answer))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::block_on;
    use std::sync::Arc;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn null_mx() {
        assert!(MxRecord::new(0, ".").is_null());
        assert!(MxRecord::new(0, "").is_null());
        assert!(!MxRecord::new(10, ".").is_null());
        assert!(!MxRecord::new(0, "mx.example").is_null());
        assert!(MxRecord::is_null_mx(&[MxRecord::new(0, ".")]));
        assert!(!MxRecord::is_null_mx(&[]));
        assert!(!MxRecord::is_null_mx(&[
            MxRecord::new(0, "."),
            MxRecord::new(10, "mx.example")
        ]));
    }

    #[test]
    fn reversed_names() {
        assert_eq!(reversed_address(ip("127.0.0.2")), "2.0.0.127");
        assert_eq!(
            ptr_name(ip("2001:db8::567:89ab")),
            "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }

    #[test]
    fn answer_helpers() {
        let a: DnsAnswer<u8> = DnsAnswer::from_records(vec![]);
        assert_eq!(a, DnsAnswer::NoData);
        assert!(a.is_negative());
        let a = DnsAnswer::from_records(vec![1u8, 2]);
        assert_eq!(a.records(), Some(&[1u8, 2][..]));
        assert_eq!(a.clone().map(u16::from).into_records(), Some(vec![1u16, 2]));
        assert!(DnsAnswer::<u8>::TempFail("x".into()).is_temporary());
        assert!(!DnsAnswer::<u8>::PermFail("x".into()).is_temporary());
        assert!(!DnsAnswer::<u8>::NxDomain.is_found());
    }

    #[test]
    fn stub_outcomes() {
        let dns = StubResolver::new();
        dns.add_mx("example.com.", 20, "MX2.example.com.");
        dns.add_mx("example.com", 10, "mx1.example.com");
        dns.add_address("mx1.example.com", ip("192.0.2.1"));
        dns.add_address("mx1.example.com", ip("2001:db8::1"));
        dns.add_txt("2.0.0.127.bl.example", "listed");
        dns.add_ptr(ip("192.0.2.1"), "MX1.example.com.");
        dns.add_mx("nomail.example", 0, ".");
        dns.add_name("empty.example");

        let mx = block_on(dns.lookup_mx("EXAMPLE.com"))
            .into_records()
            .unwrap();
        assert_eq!(
            mx,
            [
                MxRecord::new(20, "mx2.example.com"),
                MxRecord::new(10, "mx1.example.com")
            ]
        );
        assert_eq!(
            block_on(dns.lookup_a("mx1.example.com")),
            DnsAnswer::Found(vec![ip("192.0.2.1")])
        );
        assert_eq!(
            block_on(dns.lookup_aaaa("mx1.example.com")),
            DnsAnswer::Found(vec![ip("2001:db8::1")])
        );
        assert_eq!(block_on(dns.lookup_a("example.com")), DnsAnswer::NoData);
        assert_eq!(block_on(dns.lookup_a("empty.example")), DnsAnswer::NoData);
        assert_eq!(
            block_on(dns.lookup_mx("nothing.example")),
            DnsAnswer::NxDomain
        );
        assert_eq!(
            block_on(dns.lookup_txt("2.0.0.127.bl.example")),
            DnsAnswer::Found(vec!["listed".to_owned()])
        );
        assert_eq!(
            block_on(dns.lookup_ptr(ip("192.0.2.1"))),
            DnsAnswer::Found(vec!["mx1.example.com".to_owned()])
        );
        assert_eq!(
            block_on(dns.lookup_ptr(ip("192.0.2.2"))),
            DnsAnswer::NxDomain
        );
        let null = block_on(dns.lookup_mx("nomail.example"))
            .into_records()
            .unwrap();
        assert!(MxRecord::is_null_mx(&null));

        dns.add_ns("example.org", "NS1.Example.net.");
        assert_eq!(
            block_on(dns.lookup_ns("example.org")),
            DnsAnswer::Found(vec!["ns1.example.net".to_owned()])
        );
        assert_eq!(block_on(dns.lookup_ns("example.com")), DnsAnswer::NoData);

        dns.remove_name("example.com");
        assert_eq!(block_on(dns.lookup_mx("example.com")), DnsAnswer::NxDomain);
        assert_eq!(dns.queries().len(), 13);
        assert_eq!(dns.queries()[0], (RecordType::Mx, "EXAMPLE.com".to_owned()));
        assert_eq!(
            dns.queries()[7],
            (RecordType::Ptr, "1.2.0.192.in-addr.arpa".to_owned())
        );
    }

    #[test]
    fn scripted_failures() {
        let dns = StubResolver::new();
        dns.add_address("mx.example", ip("192.0.2.9"));
        dns.fail_temporarily("mx.example", RecordType::A, 2);
        assert!(block_on(dns.lookup_a("mx.example")).is_temporary());
        assert!(block_on(dns.lookup_a("mx.example")).is_temporary());
        assert!(block_on(dns.lookup_a("mx.example")).is_found());
        // A failure on one type leaves the others alone.
        assert_eq!(block_on(dns.lookup_mx("mx.example")), DnsAnswer::NoData);

        // Failures only: the name does not exist once they are used up.
        dns.fail_temporarily("flaky.example", RecordType::Mx, 1);
        assert!(block_on(dns.lookup_mx("flaky.example")).is_temporary());
        assert_eq!(
            block_on(dns.lookup_mx("flaky.example")),
            DnsAnswer::NxDomain
        );
        assert_eq!(block_on(dns.lookup_a("flaky.example")), DnsAnswer::NxDomain);

        dns.fail_temporarily("down.example", RecordType::Mx, usize::MAX);
        for _ in 0..5 {
            assert!(block_on(dns.lookup_mx("down.example")).is_temporary());
        }
        dns.fail_permanently("broken.example", RecordType::Txt);
        assert!(matches!(
            block_on(dns.lookup_txt("broken.example")),
            DnsAnswer::PermFail(_)
        ));
    }

    #[test]
    fn object_safe_and_shareable() {
        fn assert_send_sync<T: Send + Sync>(_: &T) {}
        let dns: Arc<dyn Resolver> = Arc::new(StubResolver::new());
        assert_send_sync(&dns);
        let name = String::from("x.example");
        let fut = dns.lookup_mx(&name);
        fn assert_send<T: Send>(_: &T) {}
        assert_send(&fut);
        assert_eq!(block_on(fut), DnsAnswer::NxDomain);
    }
}

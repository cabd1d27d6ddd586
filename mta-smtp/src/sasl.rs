//! SASL for the SMTP server: the `PLAIN` and `LOGIN` mechanisms as
//! sans-IO exchanges ([`Exchange`]), and the authentication back ends an
//! smtpd asks ([`Authenticator`]): Dovecot's authentication protocol
//! ([`DovecotAuth`], feature `tokio`), which runs whatever mechanisms
//! Dovecot offers (challenge-response ones such as `CRAM-MD5` and
//! `SCRAM-SHA-256` included), and a password check for sites without
//! Dovecot ([`PasswordCheck`]).
//!
//! An exchange takes the client's base64 lines and gives either a
//! challenge to send (`334`), the credentials, or a failure. `*` (the
//! client's cancellation) is the server session's business, not the
//! mechanism's. Passwords never appear in `Debug` output.
//!
//! # Example
//!
//! ```
//! use mta_smtp::sasl::{Exchange, Mechanism, Step};
//!
//! // "\0alice@example.com\0secret", the client's initial response.
//! let (mut x, step) = Exchange::start(Mechanism::Plain, Some("AGFsaWNlQGV4YW1wbGUuY29tAHNlY3JldA=="));
//! match step {
//!     Step::Done(c) => {
//!         assert_eq!(c.username, "alice@example.com");
//!         assert_eq!(c.password, "secret");
//!     }
//!     other => panic!("{other:?}"),
//! }
//! # let _ = &mut x;
//! ```

use std::fmt;

use crate::client::{base64_decode, base64_encode};

/// The longest credential field accepted, in bytes.
const FIELD_LIMIT: usize = 1024;

/// A mechanism this module runs itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// RFC 4616: `authzid NUL authcid NUL password` in one response.
    Plain,
    /// The `LOGIN` mechanism: `Username:` and `Password:` challenges.
    Login,
}

impl Mechanism {
    /// The mechanism of an AUTH command's name, if this module runs it.
    pub fn parse(name: &str) -> Option<Mechanism> {
        match name.to_ascii_uppercase().as_str() {
            "PLAIN" => Some(Mechanism::Plain),
            "LOGIN" => Some(Mechanism::Login),
            _ => None,
        }
    }

    /// Its name in EHLO and AUTH.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
        }
    }
}

/// What the client proved it knows.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The authorization identity (`PLAIN` only; empty: the same as
    /// the user).
    pub authzid: String,
    /// The login name.
    pub username: String,
    /// The password, as sent.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("authzid", &self.authzid)
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// What an exchange does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send `334` with this base64 challenge and wait for a response.
    Challenge(String),
    /// The client has given its credentials: check them.
    Done(Credentials),
    /// The exchange failed: `501 5.5.2`, with this text.
    Malformed(&'static str),
}

/// One `PLAIN` or `LOGIN` exchange.
#[derive(Debug)]
pub struct Exchange {
    mechanism: Mechanism,
    username: Option<String>,
}

fn encode(text: &str) -> String {
    let mut out = Vec::new();
    base64_encode(text.as_bytes(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// A base64 line as UTF-8 text within the field limit.
fn decode(line: &str) -> Option<Vec<u8>> {
    let line = line.trim();
    if line == "=" {
        return Some(Vec::new());
    }
    let bytes = base64_decode(line.as_bytes())?;
    (bytes.len() <= 3 * FIELD_LIMIT).then_some(bytes)
}

fn field(bytes: &[u8]) -> Option<String> {
    if bytes.len() > FIELD_LIMIT || bytes.contains(&0) {
        return None;
    }
    String::from_utf8(bytes.to_vec()).ok()
}

impl Exchange {
    /// Starts an exchange, with the AUTH command's initial response if it
    /// had one (`=` for an empty one).
    pub fn start(mechanism: Mechanism, initial: Option<&str>) -> (Exchange, Step) {
        let mut x = Exchange {
            mechanism,
            username: None,
        };
        let step = match (mechanism, initial) {
            (Mechanism::Plain, None) => Step::Challenge(String::new()),
            (Mechanism::Login, None) => Step::Challenge(encode("Username:")),
            (_, Some(line)) => x.step(line),
        };
        (x, step)
    }

    /// The client's next base64 line.
    pub fn step(&mut self, line: &str) -> Step {
        let Some(bytes) = decode(line) else {
            return Step::Malformed("Cannot decode response");
        };
        match self.mechanism {
            Mechanism::Plain => {
                let mut parts = bytes.splitn(3, |&b| b == 0);
                let (Some(z), Some(u), Some(p)) = (parts.next(), parts.next(), parts.next()) else {
                    return Step::Malformed("Invalid authentication mechanism response");
                };
                match (field(z), field(u), field(p)) {
                    (Some(authzid), Some(username), Some(password)) if !username.is_empty() => {
                        Step::Done(Credentials {
                            authzid,
                            username,
                            password,
                        })
                    }
                    _ => Step::Malformed("Invalid authentication mechanism response"),
                }
            }
            Mechanism::Login => match &self.username {
                None => match field(&bytes) {
                    Some(u) if !u.is_empty() => {
                        self.username = Some(u);
                        Step::Challenge(encode("Password:"))
                    }
                    _ => Step::Malformed("Invalid authentication mechanism response"),
                },
                Some(u) => match field(&bytes) {
                    Some(password) => Step::Done(Credentials {
                        authzid: String::new(),
                        username: u.clone(),
                        password,
                    }),
                    None => Step::Malformed("Invalid authentication mechanism response"),
                },
            },
        }
    }
}

/// The password hash schemes of the built-in table, as Dovecot names
/// them in `{SCHEME}` prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashScheme {
    /// `{SHA512-CRYPT}`, `$6$...`.
    Sha512Crypt,
    /// `{BLF-CRYPT}`, bcrypt's `$2y$...`.
    BlfCrypt,
    /// `{ARGON2ID}`, `$argon2id$...`.
    Argon2id,
}

impl HashScheme {
    /// The scheme of a name such as `SHA512-CRYPT` (as `doveadm pw -s`).
    pub fn parse(name: &str) -> Option<HashScheme> {
        match name.to_ascii_uppercase().as_str() {
            "SHA512-CRYPT" => Some(HashScheme::Sha512Crypt),
            "BLF-CRYPT" | "BCRYPT" => Some(HashScheme::BlfCrypt),
            "ARGON2ID" | "ARGON2" => Some(HashScheme::Argon2id),
            _ => None,
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            HashScheme::Sha512Crypt => "{SHA512-CRYPT}",
            HashScheme::BlfCrypt => "{BLF-CRYPT}",
            HashScheme::Argon2id => "{ARGON2ID}",
        }
    }
}

/// A hash of `password` in `scheme`, with Dovecot's `{SCHEME}` prefix
/// and a fresh random salt: what `mtad saslpasswd` prints.
///
/// # Errors
///
/// The system's random source or the hash function failed.
pub fn hash_password(password: &str, scheme: HashScheme) -> Result<String, String> {
    let hash = match scheme {
        HashScheme::Sha512Crypt => {
            use sha_crypt::PasswordHasher;
            sha_crypt::ShaCrypt::default()
                .hash_password(password.as_bytes())
                .map_err(|e| e.to_string())?
                .to_string()
        }
        HashScheme::BlfCrypt => bcrypt::hash(password, bcrypt::DEFAULT_COST)
            .map_err(|e| e.to_string())?
            .replacen("$2b$", "$2y$", 1),
        HashScheme::Argon2id => {
            use argon2::PasswordHasher;
            argon2::Argon2::default()
                .hash_password(password.as_bytes())
                .map_err(|e| e.to_string())?
                .to_string()
        }
    };
    Ok(format!("{}{hash}", scheme.prefix()))
}

/// Whether `password` matches `stored` (`{SHA512-CRYPT}$6$...`,
/// `$2y$...`, `{ARGON2ID}$argon2id$...`; the `{SCHEME}` prefix is
/// optional). The comparisons are the hash crates' constant-time ones.
///
/// # Errors
///
/// A stored value that is not a hash of a known scheme: a table
/// mistake, reported rather than counted as a wrong password.
pub fn verify_password(stored: &str, password: &str) -> Result<bool, String> {
    let stored = stored.trim();
    let hash = match stored.strip_prefix('{').and_then(|r| r.split_once('}')) {
        Some((_, rest)) => rest,
        None => stored,
    };
    if hash.starts_with("$6$") {
        use sha_crypt::PasswordVerifier;
        return Ok(sha_crypt::ShaCrypt::default()
            .verify_password(password.as_bytes(), hash)
            .is_ok());
    }
    if ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
        return bcrypt::verify(password, hash).map_err(|e| format!("bad bcrypt hash: {e}"));
    }
    if hash.starts_with("$argon2") {
        use argon2::PasswordVerifier;
        return Ok(argon2::Argon2::default()
            .verify_password(password.as_bytes(), hash)
            .is_ok());
    }
    Err("not a SHA512-CRYPT, BLF-CRYPT or ARGON2 hash".into())
}

/// What a back end says about one AUTH exchange step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send `334` with this base64 challenge.
    Challenge(String),
    /// Authenticated as this user.
    Success(String),
    /// Wrong credentials (`535 5.7.8`); the text is for the log, never
    /// the password.
    Failure(String),
    /// The back end cannot answer now (`454 4.7.0`).
    Temporary(String),
    /// The client's response makes no sense (`501 5.5.2`).
    Malformed(String),
}

/// Facts about the client for the back end (Dovecot logs and limits by
/// them).
#[derive(Debug, Clone, Default)]
pub struct ClientFacts {
    /// The client's address.
    pub remote_ip: Option<std::net::IpAddr>,
    /// Our address.
    pub local_ip: Option<std::net::IpAddr>,
    /// Whether the session is encrypted (TLS), which lets Dovecot accept
    /// plaintext mechanisms under `disable_plaintext_auth`.
    pub secured: bool,
}

#[cfg(feature = "tokio")]
pub use dovecot::{DovecotAuth, Endpoint};
#[cfg(feature = "tokio")]
pub use password::{CheckFn, PasswordCheck};

/// The future of a back end's answer.
pub type VerdictFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Verdict> + Send + 'a>>;

/// The future of [`Authenticator::start`]: the conversation (`None` when
/// it could not start) and the first verdict.
pub type StartFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = (Option<Box<dyn Conversation>>, Verdict)> + Send + 'a>,
>;

/// One AUTH exchange with a back end, started by
/// [`Authenticator::start`].
pub trait Conversation: Send {
    /// The client's next base64 line.
    fn step<'a>(&'a mut self, line: &'a str) -> VerdictFuture<'a>;
}

/// A SASL back end: the mechanisms it offers and an exchange per AUTH.
pub trait Authenticator: Send + Sync {
    /// The mechanisms to announce, upper case.
    fn mechanisms(&self) -> Vec<String>;

    /// Starts `mechanism` with the client's initial response; returns the
    /// conversation and its first verdict.
    fn start<'a>(
        &'a self,
        mechanism: &'a str,
        initial: Option<&'a str>,
        client: &'a ClientFacts,
    ) -> StartFuture<'a>;
}

#[cfg(feature = "tokio")]
mod password {
    //! `PLAIN` and `LOGIN` checked by a caller's function.
    use std::sync::Arc;

    use super::*;

    /// Checks a user and password: `Ok(true)` when they match, an error
    /// when the answer cannot be had now.
    pub type CheckFn = Arc<
        dyn Fn(
                &str,
                &str,
            )
                -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, String>> + Send>>
            + Send
            + Sync,
    >;

    /// `PLAIN` and `LOGIN`, run here, with the password checked by a
    /// function (a password table in `mtad`).
    pub struct PasswordCheck {
        check: CheckFn,
    }

    impl PasswordCheck {
        /// A back end that checks with `check`.
        pub fn new(check: CheckFn) -> PasswordCheck {
            PasswordCheck { check }
        }
    }

    struct Local {
        exchange: Exchange,
        check: CheckFn,
    }

    async fn judge(check: &CheckFn, step: Step) -> Verdict {
        match step {
            Step::Challenge(c) => Verdict::Challenge(c),
            Step::Malformed(why) => Verdict::Malformed(why.to_owned()),
            Step::Done(c) => {
                if !c.authzid.is_empty() && c.authzid != c.username {
                    return Verdict::Failure("authorization identity differs".into());
                }
                match check(&c.username, &c.password).await {
                    Ok(true) => Verdict::Success(c.username),
                    Ok(false) => Verdict::Failure("authentication failure".into()),
                    Err(e) => Verdict::Temporary(e),
                }
            }
        }
    }

    impl Conversation for Local {
        fn step<'a>(&'a mut self, line: &'a str) -> VerdictFuture<'a> {
            Box::pin(async move {
                let step = self.exchange.step(line);
                judge(&self.check, step).await
            })
        }
    }

    impl Authenticator for PasswordCheck {
        fn mechanisms(&self) -> Vec<String> {
            vec!["PLAIN".into(), "LOGIN".into()]
        }

        fn start<'a>(
            &'a self,
            mechanism: &'a str,
            initial: Option<&'a str>,
            _client: &'a ClientFacts,
        ) -> StartFuture<'a> {
            Box::pin(async move {
                let Some(m) = Mechanism::parse(mechanism) else {
                    return (
                        None,
                        Verdict::Malformed("Unsupported authentication mechanism".into()),
                    );
                };
                let (exchange, step) = Exchange::start(m, initial);
                let verdict = judge(&self.check, step).await;
                let conversation: Box<dyn Conversation> = Box::new(Local {
                    exchange,
                    check: Arc::clone(&self.check),
                });
                (Some(conversation), verdict)
            })
        }
    }
}

#[cfg(feature = "tokio")]
mod dovecot {
    //! Dovecot's authentication protocol, client side (the one Postfix's
    //! `smtpd_sasl_type = dovecot` speaks): a handshake, then `AUTH`,
    //! `CONT` and `OK`/`FAIL` lines, tab-separated.

    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    use super::*;

    /// How long Dovecot may take for one answer.
    const TIMEOUT: Duration = Duration::from_secs(30);
    /// The longest line read from Dovecot.
    const LINE_LIMIT: usize = 16 * 1024;

    /// Where Dovecot's auth service listens.
    #[derive(Debug, Clone)]
    pub enum Endpoint {
        /// A UNIX-domain socket (`smtpd_sasl_path = private/auth`).
        Unix(PathBuf),
        /// TCP (`smtpd_sasl_path = inet:127.0.0.1:12345`).
        Inet(String),
    }

    /// The Dovecot back end: one connection to the auth service per
    /// AUTH command.
    #[derive(Debug)]
    pub struct DovecotAuth {
        endpoint: Endpoint,
        mechanisms: std::sync::Mutex<Vec<String>>,
        ids: AtomicU32,
    }

    type Stream = Box<dyn AsyncStream>;
    trait AsyncStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
    impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> AsyncStream for T {}

    struct Session {
        reader: BufReader<Stream>,
        id: u32,
    }

    impl DovecotAuth {
        /// A back end for `smtpd_sasl_path`: `inet:host:port`, or a
        /// socket path (relative ones start at `base`, Postfix's
        /// `queue_directory`).
        pub fn new(path: &str, base: &std::path::Path) -> DovecotAuth {
            let endpoint = match path.strip_prefix("inet:") {
                Some(addr) => Endpoint::Inet(addr.to_owned()),
                None => Endpoint::Unix(base.join(path)),
            };
            DovecotAuth {
                endpoint,
                mechanisms: std::sync::Mutex::new(Vec::new()),
                ids: AtomicU32::new(1),
            }
        }

        async fn connect(&self) -> std::io::Result<(Session, Vec<String>)> {
            let stream: Stream = match &self.endpoint {
                Endpoint::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await?),
                Endpoint::Inet(a) => Box::new(tokio::net::TcpStream::connect(a.as_str()).await?),
            };
            let mut reader = BufReader::new(stream);
            reader
                .get_mut()
                .write_all(format!("VERSION\t1\t2\nCPID\t{}\n", std::process::id()).as_bytes())
                .await?;
            let mut mechanisms = Vec::new();
            loop {
                let line = read_line(&mut reader).await?;
                let fields: Vec<&str> = line.split('\t').collect();
                match fields[0] {
                    "VERSION" if fields.get(1) != Some(&"1") => {
                        return Err(std::io::Error::other(format!(
                            "unsupported Dovecot auth protocol version {}",
                            fields.get(1).unwrap_or(&"?")
                        )));
                    }
                    "MECH" => {
                        if let Some(m) = fields.get(1) {
                            mechanisms.push(m.to_ascii_uppercase());
                        }
                    }
                    "DONE" => break,
                    _ => {}
                }
            }
            let id = self.ids.fetch_add(1, Ordering::Relaxed);
            Ok((Session { reader, id }, mechanisms))
        }

        /// Asks Dovecot for its mechanisms (done at start; AUTH then
        /// offers them).
        ///
        /// # Errors
        ///
        /// Dovecot cannot be reached or speaks another protocol.
        pub async fn refresh(&self) -> std::io::Result<Vec<String>> {
            let (_, m) = tokio::time::timeout(TIMEOUT, self.connect())
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            *self.mechanisms.lock().unwrap_or_else(|e| e.into_inner()) = m.clone();
            Ok(m)
        }
    }

    async fn read_line(reader: &mut BufReader<Stream>) -> std::io::Result<String> {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(TIMEOUT, async {
            let mut limited = (&mut *reader).take(LINE_LIMIT as u64);
            limited.read_until(b'\n', &mut buf).await
        })
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        if buf.last() != Some(&b'\n') {
            return Err(std::io::Error::other("line from Dovecot too long"));
        }
        buf.pop();
        String::from_utf8(buf).map_err(|_| std::io::Error::other("line from Dovecot is not UTF-8"))
    }

    /// A value safe in a tab-separated field.
    fn clean(s: &str) -> String {
        s.chars().filter(|c| !c.is_control()).collect()
    }

    impl Session {
        async fn send(&mut self, line: String) -> Verdict {
            if let Err(e) = self.reader.get_mut().write_all(line.as_bytes()).await {
                return Verdict::Temporary(format!("write to the Dovecot auth service: {e}"));
            }
            loop {
                let line = match read_line(&mut self.reader).await {
                    Ok(l) => l,
                    Err(e) => {
                        return Verdict::Temporary(format!(
                            "read from the Dovecot auth service: {e}"
                        ));
                    }
                };
                let fields: Vec<&str> = line.split('\t').collect();
                if fields.get(1) != Some(&self.id.to_string().as_str()) {
                    continue;
                }
                let arg = |name: &str| {
                    fields[2..]
                        .iter()
                        .find_map(|f| f.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
                        .map(str::to_owned)
                };
                return match fields[0] {
                    "OK" => Verdict::Success(arg("user").unwrap_or_default()),
                    "CONT" => Verdict::Challenge(fields.get(2).copied().unwrap_or("").to_owned()),
                    "FAIL" => {
                        let reason =
                            arg("reason").unwrap_or_else(|| "authentication failure".into());
                        if fields[2..].contains(&"temp") {
                            Verdict::Temporary(reason)
                        } else {
                            Verdict::Failure(reason)
                        }
                    }
                    other => Verdict::Temporary(format!("unexpected Dovecot auth reply {other}")),
                };
            }
        }
    }

    impl Conversation for Session {
        fn step<'a>(&'a mut self, line: &'a str) -> VerdictFuture<'a> {
            Box::pin(async move {
                let line = format!("CONT\t{}\t{}\n", self.id, clean(line.trim()));
                self.send(line).await
            })
        }
    }

    impl Authenticator for DovecotAuth {
        fn mechanisms(&self) -> Vec<String> {
            self.mechanisms
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        }

        fn start<'a>(
            &'a self,
            mechanism: &'a str,
            initial: Option<&'a str>,
            client: &'a ClientFacts,
        ) -> StartFuture<'a> {
            Box::pin(async move {
                let (mut session, mechanisms) = match self.connect().await {
                    Ok(s) => s,
                    Err(e) => {
                        return (
                            None,
                            Verdict::Temporary(format!(
                                "cannot connect to the Dovecot auth service: {e}"
                            )),
                        );
                    }
                };
                if !mechanisms.iter().any(|m| m.eq_ignore_ascii_case(mechanism)) {
                    return (
                        None,
                        Verdict::Malformed("Unsupported authentication mechanism".into()),
                    );
                }
                let mut line = format!(
                    "AUTH\t{}\t{}\tservice=smtp\tnologin",
                    session.id,
                    clean(mechanism)
                );
                if let Some(ip) = client.local_ip {
                    line.push_str(&format!("\tlip={ip}"));
                }
                if let Some(ip) = client.remote_ip {
                    line.push_str(&format!("\trip={ip}"));
                }
                if client.secured {
                    line.push_str("\tsecured");
                }
                if let Some(resp) = initial {
                    line.push_str(&format!("\tresp={}", clean(resp.trim())));
                }
                line.push('\n');
                let verdict = session.send(line).await;
                (Some(Box::new(session) as Box<dyn Conversation>), verdict)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        let mut out = Vec::new();
        base64_encode(bytes, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn plain_with_and_without_initial_response() {
        let (_, step) = Exchange::start(Mechanism::Plain, Some(&b64(b"\0alice\0pw")));
        assert!(matches!(step, Step::Done(ref c) if c.username == "alice" && c.password == "pw"));
        let (mut x, step) = Exchange::start(Mechanism::Plain, None);
        assert_eq!(step, Step::Challenge(String::new()));
        let step = x.step(&b64(b"admin\0alice\0pw"));
        assert!(matches!(step, Step::Done(ref c) if c.authzid == "admin"));
        // Missing fields, NULs in a field, bad base64.
        let (_, step) = Exchange::start(Mechanism::Plain, Some(&b64(b"alice")));
        assert!(matches!(step, Step::Malformed(_)));
        let (_, step) = Exchange::start(Mechanism::Plain, Some("!!!"));
        assert_eq!(step, Step::Malformed("Cannot decode response"));
        let (_, step) = Exchange::start(Mechanism::Plain, Some(&b64(b"\0\0pw")));
        assert!(matches!(step, Step::Malformed(_)), "an empty user");
    }

    #[test]
    fn login_asks_for_user_then_password() {
        let (mut x, step) = Exchange::start(Mechanism::Login, None);
        assert_eq!(step, Step::Challenge("VXNlcm5hbWU6".into()));
        assert_eq!(
            x.step(&b64(b"alice")),
            Step::Challenge("UGFzc3dvcmQ6".into())
        );
        let step = x.step(&b64(b"pw"));
        assert!(matches!(step, Step::Done(ref c) if c.username == "alice" && c.password == "pw"));
    }

    #[test]
    fn hashes_made_and_checked() {
        for scheme in [
            HashScheme::Sha512Crypt,
            HashScheme::BlfCrypt,
            HashScheme::Argon2id,
        ] {
            let h = hash_password("correct horse", scheme).unwrap();
            assert!(h.starts_with(scheme.prefix()), "{h}");
            assert_eq!(verify_password(&h, "correct horse"), Ok(true), "{h}");
            assert_eq!(verify_password(&h, "wrong horse"), Ok(false), "{h}");
        }
        // Hashes made by other tools: glibc crypt(3)'s SHA-512 test vector.
        assert_eq!(
            verify_password(
                "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
                "Hello world!"
            ),
            Ok(true)
        );
        assert!(verify_password("plain-text", "plain-text").is_err());
    }

    #[test]
    fn passwords_stay_out_of_debug_output() {
        let c = Credentials {
            authzid: String::new(),
            username: "alice".into(),
            password: "secret".into(),
        };
        assert!(!format!("{c:?}").contains("secret"));
    }
}

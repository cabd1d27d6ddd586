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
    /// `{SCRAM-SHA-256}`: the keys `SCRAM-SHA-256` needs; also checks
    /// `PLAIN` and `LOGIN` passwords.
    ScramSha256,
}

impl HashScheme {
    /// The scheme of a name such as `SHA512-CRYPT` (as `doveadm pw -s`).
    pub fn parse(name: &str) -> Option<HashScheme> {
        match name.to_ascii_uppercase().as_str() {
            "SHA512-CRYPT" => Some(HashScheme::Sha512Crypt),
            "BLF-CRYPT" | "BCRYPT" => Some(HashScheme::BlfCrypt),
            "ARGON2ID" | "ARGON2" => Some(HashScheme::Argon2id),
            "SCRAM-SHA-256" => Some(HashScheme::ScramSha256),
            _ => None,
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            HashScheme::Sha512Crypt => "{SHA512-CRYPT}",
            HashScheme::BlfCrypt => "{BLF-CRYPT}",
            HashScheme::Argon2id => "{ARGON2ID}",
            HashScheme::ScramSha256 => "",
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
        HashScheme::ScramSha256 => {
            return Ok(ScramCredentials::derive(password, &random_bytes(16), 4096).render());
        }
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
    if stored.starts_with("{SCRAM-SHA-256}") {
        return ScramCredentials::parse(stored)
            .map(|c| c.matches(password))
            .ok_or_else(|| "bad SCRAM-SHA-256 entry".to_owned());
    }
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

/// `SCRAM-SHA-256` (RFC 5802, RFC 7677), the server side, as a sans-IO
/// exchange: chosen as the challenge-response mechanism because the
/// server stores no password (only a salted key pair, Dovecot's
/// `{SCRAM-SHA-256}` format), the client proves it knows the password
/// without sending it, and the server proves it knows the key, unlike
/// CRAM-MD5, which needs the plaintext password (or its HMAC state) on
/// the server and MD5. Channel binding is not offered (`n,,` and `y,,`
/// clients are accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramCredentials {
    /// The PBKDF2 iteration count.
    pub iterations: u32,
    /// The salt.
    pub salt: Vec<u8>,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: [u8; 32],
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: [u8; 32],
}

fn hmac256(key: &[u8], data: &[u8]) -> [u8; 32] {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// Equal in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ScramCredentials {
    /// The key pair for `password` with `salt` and `iterations`.
    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> ScramCredentials {
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), salt, iterations, &mut salted);
        let client_key = hmac256(&salted, b"Client Key");
        ScramCredentials {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac256(&salted, b"Server Key"),
        }
    }

    /// Reads `{SCRAM-SHA-256}ITERATIONS,SALT,STOREDKEY,SERVERKEY` (base64
    /// fields, Dovecot's format).
    pub fn parse(stored: &str) -> Option<ScramCredentials> {
        let rest = stored.trim().strip_prefix("{SCRAM-SHA-256}")?;
        let mut f = rest.split(',');
        let iterations = f
            .next()?
            .parse()
            .ok()
            .filter(|&n: &u32| (1..=10_000_000).contains(&n))?;
        let salt = base64_decode(f.next()?.as_bytes())?;
        let key =
            |t: Option<&str>| -> Option<[u8; 32]> { base64_decode(t?.as_bytes())?.try_into().ok() };
        let stored_key = key(f.next())?;
        let server_key = key(f.next())?;
        f.next().is_none().then_some(ScramCredentials {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }

    /// The stored form, as [`ScramCredentials::parse`] reads it.
    pub fn render(&self) -> String {
        let b = |d: &[u8]| {
            let mut out = Vec::new();
            base64_encode(d, &mut out);
            String::from_utf8(out).unwrap_or_default()
        };
        format!(
            "{{SCRAM-SHA-256}}{},{},{},{}",
            self.iterations,
            b(&self.salt),
            b(&self.stored_key),
            b(&self.server_key)
        )
    }

    /// Whether `password` derives these keys (for `PLAIN` and `LOGIN`
    /// against a SCRAM entry).
    pub fn matches(&self, password: &str) -> bool {
        let other = ScramCredentials::derive(password, &self.salt, self.iterations);
        same(&other.stored_key, &self.stored_key)
    }
}

/// One `SCRAM-SHA-256` exchange, server side.
#[derive(Debug)]
pub struct ScramServer {
    username: String,
    client_first_bare: String,
    nonce: String,
    server_first: String,
    credentials: Option<ScramCredentials>,
}

/// Random bytes from the kernel, for nonces.
fn random_bytes(n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut buf);
    }
    buf
}

/// `=2C` and `=3D` undone (RFC 5802 saslname).
fn saslname(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3)?;
        out.push(match code {
            "2C" => ',',
            "3D" => '=',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

impl ScramServer {
    /// Reads the client-first message (`n,,n=user,r=nonce`); returns the
    /// exchange and the login name to look up.
    ///
    /// # Errors
    ///
    /// A malformed message, channel binding asked for, or an
    /// authorization identity (not supported).
    pub fn client_first(message: &[u8]) -> Result<(ScramServer, String), &'static str> {
        let text = std::str::from_utf8(message)
            .map_err(|_| "Invalid authentication mechanism response")?;
        let bad = "Invalid authentication mechanism response";
        let (cbind, rest) = text.split_once(',').ok_or(bad)?;
        if cbind.starts_with('p') {
            return Err("Channel binding is not supported");
        }
        if cbind != "n" && cbind != "y" {
            return Err(bad);
        }
        let (authzid, bare) = rest.split_once(',').ok_or(bad)?;
        if !authzid.is_empty() {
            return Err("Authorization identities are not supported");
        }
        let mut user = None;
        let mut nonce = None;
        for attr in bare.split(',') {
            if let Some(v) = attr.strip_prefix("n=") {
                user = saslname(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                nonce = Some(v.to_owned());
            } else if attr.starts_with("m=") {
                return Err(bad);
            }
        }
        let user = user
            .filter(|u| !u.is_empty() && u.len() <= FIELD_LIMIT)
            .ok_or(bad)?;
        let nonce = nonce
            .filter(|n| {
                !n.is_empty()
                    && n.len() <= 256
                    && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
            })
            .ok_or(bad)?;
        Ok((
            ScramServer {
                username: user.clone(),
                client_first_bare: bare.to_owned(),
                nonce,
                server_first: String::new(),
                credentials: None,
            },
            user,
        ))
    }

    /// The server-first message for the user's stored keys. For an
    /// unknown user (`None`) the salt and count look like a real user's,
    /// and the exchange fails at the proof, so that names cannot be
    /// probed.
    pub fn server_first(&mut self, credentials: Option<&ScramCredentials>, seed: &str) -> String {
        let mut nonce_bytes = random_bytes(18);
        if nonce_bytes.iter().all(|&b| b == 0) {
            nonce_bytes = sha256(format!("{seed}{:?}", std::time::SystemTime::now()).as_bytes())
                [..18]
                .to_vec();
        }
        let mut server_nonce = Vec::new();
        base64_encode(&nonce_bytes, &mut server_nonce);
        self.nonce.push_str(&String::from_utf8_lossy(&server_nonce));
        let (salt, iterations) = match credentials {
            Some(c) => (c.salt.clone(), c.iterations),
            None => (
                sha256(format!("mtad-scram-{seed}").as_bytes())[..16].to_vec(),
                4096,
            ),
        };
        self.credentials = credentials.cloned();
        let mut salt_b64 = Vec::new();
        base64_encode(&salt, &mut salt_b64);
        self.server_first = format!(
            "r={},s={},i={iterations}",
            self.nonce,
            String::from_utf8_lossy(&salt_b64)
        );
        self.server_first.clone()
    }

    /// The login name.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Checks the client-final message; returns the server-final message
    /// (`v=...`) when the proof holds.
    ///
    /// # Errors
    ///
    /// A wrong proof (or an unknown user), a nonce that is not ours, a
    /// malformed message.
    pub fn client_final(&mut self, message: &[u8]) -> Result<String, &'static str> {
        let text = std::str::from_utf8(message).map_err(|_| "malformed client-final message")?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or("malformed client-final message")?;
        let mut nonce_ok = false;
        let mut binding_ok = false;
        for attr in without_proof.split(',') {
            if let Some(v) = attr.strip_prefix("r=") {
                nonce_ok = v == self.nonce;
            } else if let Some(v) = attr.strip_prefix("c=") {
                // "n,," or "y,," again: biws or eSws.
                binding_ok = v == "biws" || v == "eSws";
            }
        }
        if !nonce_ok || !binding_ok {
            return Err("malformed client-final message");
        }
        let proof = base64_decode(proof.as_bytes()).ok_or("malformed client-final message")?;
        let Some(creds) = &self.credentials else {
            return Err("authentication failure");
        };
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = hmac256(&creds.stored_key, auth_message.as_bytes());
        if proof.len() != 32 {
            return Err("authentication failure");
        }
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        if !same(&sha256(&client_key), &creds.stored_key) {
            return Err("authentication failure");
        }
        let server_signature = hmac256(&creds.server_key, auth_message.as_bytes());
        let mut v = Vec::new();
        base64_encode(&server_signature, &mut v);
        Ok(format!("v={}", String::from_utf8_lossy(&v)))
    }
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
pub use password::{LookupFn, PasswordCheck};

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
    //! `SCRAM-SHA-256`, `PLAIN` and `LOGIN` against stored hashes that a
    //! caller's function looks up (a password table in `mtad`).
    use std::sync::Arc;

    use super::*;

    /// Looks up a login name's stored hash (`None`: no such user); an
    /// error when the table cannot answer now.
    pub type LookupFn = Arc<
        dyn Fn(
                &str,
            ) -> std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<Option<String>, String>> + Send>,
            > + Send
            + Sync,
    >;

    /// The password table back end: `SCRAM-SHA-256` (for users whose
    /// entry is a `{SCRAM-SHA-256}` one), `PLAIN` and `LOGIN` (any
    /// entry), run here.
    pub struct PasswordCheck {
        lookup: LookupFn,
    }

    impl PasswordCheck {
        /// A back end that finds stored hashes with `lookup`.
        pub fn new(lookup: LookupFn) -> PasswordCheck {
            PasswordCheck { lookup }
        }
    }

    /// A hash that matches no password: checked for unknown users so
    /// that they take as long as known ones.
    const NO_SUCH_USER: &str = "{SHA512-CRYPT}$6$rounds=5000$KkPW0c26y3ddtLCyBe4Rm/$N3ymU8eryFI5i0gTMyAQeyU9zCI1nnVSvm3XTs1fjdskxp/ktb.iUB9qJXyzPmEJv.akFmRNIzmu4WFYy73wp/";

    enum State {
        Simple(Exchange),
        Scram(Option<ScramServer>),
        /// SCRAM's server-final is sent; the client's empty line ends it.
        ScramDone(String),
    }

    struct Local {
        state: State,
        lookup: LookupFn,
    }

    impl Local {
        async fn check_password(&self, c: Credentials) -> Verdict {
            if !c.authzid.is_empty() && c.authzid != c.username {
                return Verdict::Failure("authorization identity differs".into());
            }
            let stored = match (self.lookup)(&c.username).await {
                Ok(s) => s,
                Err(e) => return Verdict::Temporary(e),
            };
            let known = stored.is_some();
            let hash = stored.unwrap_or_else(|| NO_SUCH_USER.to_owned());
            let password = c.password.clone();
            // Hashing is slow on purpose: off the async workers.
            let matched =
                tokio::task::spawn_blocking(move || verify_password(&hash, &password)).await;
            match matched {
                Ok(Ok(true)) if known => Verdict::Success(c.username),
                Ok(Ok(_)) => Verdict::Failure("authentication failure".into()),
                Ok(Err(e)) => {
                    Verdict::Temporary(format!("password table entry for {}: {e}", c.username))
                }
                Err(e) => Verdict::Temporary(e.to_string()),
            }
        }

        /// The verdict on a PLAIN or LOGIN exchange's step.
        async fn judge(&self, step: Step) -> Verdict {
            match step {
                Step::Challenge(c) => Verdict::Challenge(c),
                Step::Malformed(why) => Verdict::Malformed(why.to_owned()),
                Step::Done(c) => self.check_password(c).await,
            }
        }

        async fn advance(&mut self, line: &str) -> Verdict {
            match &mut self.state {
                State::Simple(x) => {
                    let step = x.step(line);
                    self.judge(step).await
                }
                State::Scram(server) => {
                    let Some(bytes) = decode(line) else {
                        return Verdict::Malformed("Cannot decode response".into());
                    };
                    match server.take() {
                        // The client-first message.
                        None => {
                            let (mut scram, user) = match ScramServer::client_first(&bytes) {
                                Ok(x) => x,
                                Err(why) => return Verdict::Malformed(why.into()),
                            };
                            let stored = match (self.lookup)(&user).await {
                                Ok(s) => s,
                                Err(e) => return Verdict::Temporary(e),
                            };
                            let creds = stored.as_deref().and_then(ScramCredentials::parse);
                            let first = scram.server_first(creds.as_ref(), &user);
                            *server = Some(scram);
                            Verdict::Challenge(encode(&first))
                        }
                        // The client-final message.
                        Some(mut scram) => match scram.client_final(&bytes) {
                            Ok(server_final) => {
                                self.state = State::ScramDone(scram.username().to_owned());
                                Verdict::Challenge(encode(&server_final))
                            }
                            Err(why) => Verdict::Failure(why.into()),
                        },
                    }
                }
                State::ScramDone(user) => {
                    if line.trim().is_empty() || line.trim() == "=" {
                        Verdict::Success(std::mem::take(user))
                    } else {
                        Verdict::Malformed("Invalid authentication mechanism response".into())
                    }
                }
            }
        }
    }

    impl Conversation for Local {
        fn step<'a>(&'a mut self, line: &'a str) -> VerdictFuture<'a> {
            Box::pin(self.advance(line))
        }
    }

    impl Authenticator for PasswordCheck {
        fn mechanisms(&self) -> Vec<String> {
            vec!["SCRAM-SHA-256".into(), "PLAIN".into(), "LOGIN".into()]
        }

        fn start<'a>(
            &'a self,
            mechanism: &'a str,
            initial: Option<&'a str>,
            _client: &'a ClientFacts,
        ) -> StartFuture<'a> {
            Box::pin(async move {
                let lookup = Arc::clone(&self.lookup);
                if mechanism.eq_ignore_ascii_case("SCRAM-SHA-256") {
                    let mut local = Local {
                        state: State::Scram(None),
                        lookup,
                    };
                    let verdict = match initial {
                        Some(line) => local.advance(line).await,
                        None => Verdict::Challenge(String::new()),
                    };
                    return (Some(Box::new(local) as Box<dyn Conversation>), verdict);
                }
                let Some(m) = Mechanism::parse(mechanism) else {
                    return (
                        None,
                        Verdict::Malformed("Unsupported authentication mechanism".into()),
                    );
                };
                // The exchange itself answers the initial response (or
                // asks for the first field).
                let (x, step) = Exchange::start(m, initial);
                let local = Local {
                    state: State::Simple(x),
                    lookup,
                };
                let verdict = local.judge(step).await;
                (Some(Box::new(local) as Box<dyn Conversation>), verdict)
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
            assert!(h.starts_with('{'), "{h}");
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

    /// RFC 7677 section 3: user "user", password "pencil".
    #[test]
    fn scram_sha_256_as_rfc_7677_shows_it() {
        let salt = base64_decode(b"W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let creds = ScramCredentials::derive("pencil", &salt, 4096);
        assert_eq!(
            ScramCredentials::parse(&creds.render()),
            Some(creds.clone())
        );
        assert!(creds.matches("pencil") && !creds.matches("pencils"));
        let (mut server, user) =
            ScramServer::client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        assert_eq!(user, "user");
        server.server_first(Some(&creds), "user");
        // The RFC's server nonce, in place of our random one.
        server.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into();
        server.server_first =
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
                .into();
        let final_ok = server
            .client_final(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(final_ok, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        // A wrong proof, a foreign nonce, channel binding.
        let (mut again, _) = ScramServer::client_first(b"n,,n=user,r=abc").unwrap();
        let first = again.server_first(Some(&creds), "user");
        let nonce = first
            .split(',')
            .next()
            .unwrap()
            .trim_start_matches("r=")
            .to_owned();
        let wrong = format!("c=biws,r={nonce},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        assert_eq!(
            again.client_final(wrong.as_bytes()),
            Err("authentication failure")
        );
        assert!(again.client_final(b"c=biws,r=other,p=AAAA").is_err());
        assert!(ScramServer::client_first(b"p=tls-unique,,n=user,r=abc").is_err());
        assert!(ScramServer::client_first(b"n,a=admin,n=user,r=abc").is_err());
        assert_eq!(saslname("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
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

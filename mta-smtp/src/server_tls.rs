//! The rustls server configuration of Postfix's `smtpd_tls_*`
//! parameters, for [`TransportConfig::new`].
//!
//! Certificates and keys come from `smtpd_tls_chain_files` (each file
//! holds a private key and its certificate chain, Postfix 3.4's way, so
//! an RSA and an ECDSA pair can both be offered) or from
//! `smtpd_tls_cert_file` with `smtpd_tls_key_file` (and the
//! `smtpd_tls_eccert_file`/`smtpd_tls_eckey_file` pair), all PEM. When a
//! client can use either key, the first one configured wins; otherwise
//! the one whose signature schemes the client offers.
//!
//! rustls speaks TLS 1.2 and 1.3 only: `smtpd_tls_protocols` and
//! `smtpd_tls_mandatory_protocols` can narrow that to one of them, and a
//! setting that asks for SSLv3, TLS 1.0 or 1.1 is reported
//! ([`ServerTls::notes`]) because it cannot be honoured.
//!
//! With `smtpd_tls_ask_ccert = yes` the server asks clients for a
//! certificate (`smtpd_tls_req_ccert = yes`: insists on one); any
//! certificate whose key signs the handshake is taken, without checking
//! who issued it, as Postfix does when it only needs the fingerprint for
//! `relay_clientcerts` and `check_ccert_access` (the fingerprint is in
//! [`TlsInfo::peer_fingerprint`](crate::transport::TlsInfo)). Trust
//! chains for client certificates (`smtpd_tls_CAfile` with
//! `permit_tls_all_clientcerts`) are not built.
//!
//! Not here: session tickets and caches beyond rustls' defaults, DH
//! parameter files (not needed by rustls' key exchanges).
//!
//! [`TransportConfig::new`]: crate::transport::TransportConfig::new

use std::fmt;
use std::sync::Arc;

use mta_core::config::{Config, ConfigError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A server TLS configuration and what could not be honoured.
pub struct ServerTls {
    /// The configuration to hand to the transport.
    pub config: Arc<rustls::ServerConfig>,
    /// Settings that cannot be honoured, for a warning each.
    pub notes: Vec<String>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("notes", &self.notes)
            .finish_non_exhaustive()
    }
}

/// The key files configured: `(key file, certificate file)` pairs; a
/// chain file holds both (it appears twice).
///
/// # Errors
///
/// A bad parameter value.
pub fn key_files(config: &Config) -> Result<Vec<(String, String)>, ConfigError> {
    let chains = config.list("smtpd_tls_chain_files")?;
    if !chains.is_empty() {
        return Ok(chains.into_iter().map(|f| (f.clone(), f)).collect());
    }
    let mut pairs = Vec::new();
    for (cert, key) in [
        ("smtpd_tls_cert_file", "smtpd_tls_key_file"),
        ("smtpd_tls_eccert_file", "smtpd_tls_eckey_file"),
    ] {
        let cert_file = config.expanded(cert)?.trim().to_owned();
        if cert_file.is_empty() {
            continue;
        }
        let key_file = config.expanded(key)?.trim().to_owned();
        let key_file = if key_file.is_empty() {
            cert_file.clone()
        } else {
            key_file
        };
        pairs.push((key_file, cert_file));
    }
    Ok(pairs)
}

/// The server TLS configuration of `config` (a service's view), with the
/// keys of [`key_files`]; `None` when none is configured.
///
/// # Errors
///
/// A [`ConfigError`] naming the parameter and file: a file that cannot
/// be read, holds no key or no certificate, a key that does not match
/// its certificate, protocols that leave nothing rustls can speak.
pub fn server_tls(config: &Config) -> Result<Option<ServerTls>, ConfigError> {
    let pairs = key_files(config)?;
    if pairs.is_empty() {
        return Ok(None);
    }
    let param = if config.list("smtpd_tls_chain_files")?.is_empty() {
        "smtpd_tls_cert_file"
    } else {
        "smtpd_tls_chain_files"
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut keys = Vec::new();
    for (key_file, cert_file) in &pairs {
        let file_error = |path: &str, reason: String| ConfigError::File {
            location: config.location(param),
            name: param.to_owned(),
            path: path.to_owned(),
            reason,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
            .map_err(|e| file_error(cert_file, e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| file_error(cert_file, e.to_string()))?;
        if certs.is_empty() {
            return Err(file_error(cert_file, "no certificate in the file".into()));
        }
        let key = PrivateKeyDer::from_pem_file(key_file)
            .map_err(|e| file_error(key_file, format!("no usable private key: {e}")))?;
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| file_error(key_file, e.to_string()))?;
        let certified = CertifiedKey::new(certs, signing);
        certified.keys_match().map_err(|e| {
            file_error(
                cert_file,
                format!("the key does not match the certificate: {e}"),
            )
        })?;
        keys.push(Arc::new(certified));
    }
    let (versions, notes) = protocols(config)?;
    let require = config.boolean("smtpd_tls_req_ccert")?;
    let ask = config.boolean("smtpd_tls_ask_ccert")? || require;
    let algorithms = provider.signature_verification_algorithms;
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| config.bad_value("smtpd_tls_protocols", "", e.to_string()))?;
    let builder = if ask {
        builder.with_client_cert_verifier(Arc::new(AnyClientCertificate {
            algorithms,
            mandatory: require,
        }))
    } else {
        builder.with_no_client_auth()
    };
    let tls = builder.with_cert_resolver(Arc::new(Keys(keys)));
    Ok(Some(ServerTls {
        config: Arc::new(tls),
        notes,
    }))
}

/// Asks for a client certificate and takes any whose key signs the
/// handshake: its fingerprint is what Postfix's `relay_clientcerts`
/// matches, whoever issued it.
#[derive(Debug)]
struct AnyClientCertificate {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
    mandatory: bool,
}

impl rustls::server::danger::ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The TLS versions `smtpd_tls_protocols` and
/// `smtpd_tls_mandatory_protocols` leave (Postfix's `!SSLv3, TLSv1.2`
/// or `>=TLSv1.2` forms), and notes on what rustls cannot do.
fn protocols(
    config: &Config,
) -> Result<(Vec<&'static rustls::SupportedProtocolVersion>, Vec<String>), ConfigError> {
    let mut tls12 = true;
    let mut tls13 = true;
    let mut notes = Vec::new();
    for name in ["smtpd_tls_protocols", "smtpd_tls_mandatory_protocols"] {
        let value = config.expanded(name)?;
        let words: Vec<String> = value
            .split([',', ' ', ':', '\t'])
            .filter(|w| !w.is_empty())
            .map(str::to_ascii_lowercase)
            .collect();
        let included: Vec<&String> = words.iter().filter(|w| !w.starts_with('!')).collect();
        for w in &words {
            match w.trim_start_matches('!') {
                "tlsv1.2" if w.starts_with('!') => tls12 = false,
                "tlsv1.3" if w.starts_with('!') => tls13 = false,
                ">=tlsv1.3" => tls12 = false,
                "sslv2" | "sslv3" | "tlsv1" | "tlsv1.1" if !w.starts_with('!') => notes.push(
                    format!("{name} = {value}: rustls does not speak {w}; only TLSv1.2 and TLSv1.3 are offered"),
                ),
                _ => {}
            }
        }
        // A positive list names exactly what is allowed.
        let positive: Vec<&str> = included
            .iter()
            .map(|w| w.as_str())
            .filter(|w| !w.starts_with(">="))
            .collect();
        if !positive.is_empty() {
            tls12 &= positive.contains(&"tlsv1.2");
            tls13 &= positive.contains(&"tlsv1.3");
        }
    }
    let mut versions = Vec::new();
    if tls13 {
        versions.push(&rustls::version::TLS13);
    }
    if tls12 {
        versions.push(&rustls::version::TLS12);
    }
    if versions.is_empty() {
        return Err(config.bad_value(
            "smtpd_tls_protocols",
            &config.expanded("smtpd_tls_protocols")?,
            "a protocol list that leaves TLSv1.2 or TLSv1.3 (all rustls speaks)",
        ));
    }
    Ok((versions, notes))
}

/// Chooses among the configured keys by what the client can verify.
#[derive(Debug)]
struct Keys(Vec<Arc<CertifiedKey>>);

impl ResolvesServerCert for Keys {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        self.0
            .iter()
            .find(|k| k.key.choose_scheme(schemes).is_some())
            .or_else(|| self.0.first())
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mta_core::config::HostFacts;

    fn config(text: &str) -> Config {
        Config::parse(text, "main.cf", HostFacts::default()).unwrap()
    }

    #[test]
    fn protocol_lists() {
        let v = |text: &str| {
            let (versions, notes) = protocols(&config(text)).unwrap();
            (
                versions
                    .iter()
                    .map(|v| format!("{:?}", v.version))
                    .collect::<Vec<_>>(),
                notes.len(),
            )
        };
        assert_eq!(v(""), (vec!["TLSv1_3".to_owned(), "TLSv1_2".to_owned()], 0));
        assert_eq!(
            v("smtpd_tls_protocols = !SSLv2, !SSLv3, !TLSv1.2\n").0,
            ["TLSv1_3"]
        );
        assert_eq!(v("smtpd_tls_protocols = >=TLSv1.3\n").0, ["TLSv1_3"]);
        assert_eq!(
            v("smtpd_tls_mandatory_protocols = TLSv1.2\n").0,
            ["TLSv1_2"]
        );
        assert_eq!(
            v("smtpd_tls_protocols = TLSv1, TLSv1.2\n"),
            (vec!["TLSv1_2".to_owned()], 1)
        );
        assert!(protocols(&config("smtpd_tls_protocols = !TLSv1.2, !TLSv1.3\n")).is_err());
    }

    #[test]
    fn missing_files_are_named() {
        let e = server_tls(&config("smtpd_tls_cert_file = /nonexistent/cert.pem\n")).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("smtpd_tls_cert_file") && text.contains("/nonexistent/cert.pem"),
            "{text}"
        );
        assert!(server_tls(&config("")).unwrap().is_none());
    }
}

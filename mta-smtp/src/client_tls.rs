//! The rustls client configuration that Postfix's `smtp_tls_*` (or
//! `lmtp_tls_*`) parameters describe, for [`Connector::with_tls`].
//!
//! | `smtp_tls_security_level` | what is checked | trust anchors |
//! |---|---|---|
//! | `none` | no TLS | none |
//! | `may`, `encrypt` | nothing: any certificate, as Postfix's opportunistic and mandatory-unauthenticated levels | none |
//! | `verify`, `secure` | the chain and the server name | `smtp_tls_CAfile`, `smtp_tls_CApath`, else the system store |
//!
//! The handshake signatures are checked at every level (a certificate
//! that is not checked is still the key the session is encrypted to).
//! rustls speaks TLS 1.2 and 1.3 only; `smtp_tls_protocols` cannot make
//! it speak anything older.
//!
//! Not here: client certificates (`smtp_tls_cert_file`), DANE,
//! `fingerprint` matching and `smtp_tls_policy_maps`.
//!
//! # Example
//!
//! ```
//! use mta_core::config::{Config, HostFacts};
//! use mta_smtp::client_tls::client_tls;
//! use mta_smtp::connector::CertificateVerification;
//!
//! let config = Config::parse("smtp_tls_security_level = may\n", "main.cf", HostFacts::default())?;
//! let (_tls, verification) = client_tls(&config, false)?.expect("TLS is on");
//! assert_eq!(verification, CertificateVerification::AcceptsAny);
//! # Ok::<(), mta_core::config::ConfigError>(())
//! ```
//!
//! [`Connector::with_tls`]: crate::connector::Connector::with_tls

use std::path::Path;
use std::sync::Arc;

use mta_core::config::{Config, ConfigError};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::connector::CertificateVerification;

/// Debian's bundle of the system's trust anchors (package
/// `ca-certificates`), used when no CA file or directory is configured.
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The TLS client configuration for the `smtp` (or, with `lmtp`, the
/// `lmtp`) client, and what it verifies; `None` when the security level
/// turns TLS off.
///
/// # Errors
///
/// A [`ConfigError`] naming the parameter: an unknown security level, a
/// CA file that cannot be read or holds no certificate.
pub fn client_tls(
    config: &Config,
    lmtp: bool,
) -> Result<Option<(Arc<rustls::ClientConfig>, CertificateVerification)>, ConfigError> {
    let p = if lmtp { "lmtp" } else { "smtp" };
    let level_name = format!("{p}_tls_security_level");
    let level = config.expanded(&level_name)?.trim().to_ascii_lowercase();
    let verify = match level.as_str() {
        "" => {
            let on = config.boolean(&format!("{p}_use_tls"))?
                || config.boolean(&format!("{p}_enforce_tls"))?;
            if !on {
                return Ok(None);
            }
            false
        }
        "none" => return Ok(None),
        "may" | "opportunistic" | "encrypt" | "dane" | "dane-only" | "fingerprint" => false,
        "verify" | "secure" => true,
        _ => {
            return Err(config.bad_value(
                &level_name,
                &level,
                "expected none, may, encrypt, dane, dane-only, fingerprint, verify or secure",
            ));
        }
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| config.bad_value(&level_name, &level, e.to_string()))?;
    if !verify {
        let tls = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        return Ok(Some((Arc::new(tls), CertificateVerification::AcceptsAny)));
    }
    let roots = trust_anchors(config, p)?;
    let tls = builder.with_root_certificates(roots).with_no_client_auth();
    Ok(Some((Arc::new(tls), CertificateVerification::Verifies)))
}

/// The CA certificates of `{p}_tls_CAfile` and `{p}_tls_CApath`, or the
/// system store when neither is set.
fn trust_anchors(config: &Config, p: &str) -> Result<rustls::RootCertStore, ConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    let file_param = format!("{p}_tls_CAfile");
    let dir_param = format!("{p}_tls_CApath");
    let file = config.expanded(&file_param)?.trim().to_owned();
    let dir = config.expanded(&dir_param)?.trim().to_owned();
    let mut sources: Vec<(String, String)> = Vec::new();
    if !file.is_empty() {
        sources.push((file_param.clone(), file));
    }
    if !dir.is_empty() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| file_error(config, &dir_param, &dir, &e.to_string()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|x| x == "pem" || x == "crt") || is_hash_link(&path) {
                sources.push((dir_param.clone(), path.display().to_string()));
            }
        }
    }
    if sources.is_empty() {
        sources.push((file_param.clone(), SYSTEM_CA_FILE.to_owned()));
    }
    for (param, path) in &sources {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| file_error(config, param, path, &e.to_string()))?;
        for cert in certs {
            let cert = cert.map_err(|e| file_error(config, param, path, &e.to_string()))?;
            // A certificate rustls cannot use as an anchor is skipped, as
            // OpenSSL skips what it cannot parse in a bundle.
            let _ = roots.add(cert);
        }
    }
    if roots.is_empty() {
        let (param, path) = &sources[0];
        return Err(file_error(config, param, path, "no CA certificates found"));
    }
    Ok(roots)
}

/// OpenSSL's `c_rehash` names: `xxxxxxxx.0`.
fn is_hash_link(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split_once('.'))
        .is_some_and(|(hash, n)| hash.len() == 8 && n.bytes().all(|b| b.is_ascii_digit()))
}

fn file_error(config: &Config, name: &str, path: &str, reason: &str) -> ConfigError {
    ConfigError::File {
        location: config.location(name),
        name: name.to_owned(),
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Accepts any certificate, as Postfix's `may` and `encrypt` do, while
/// still checking that the server holds the certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
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
    fn levels() {
        assert!(
            client_tls(&config(""), false).unwrap().is_none(),
            "Postfix's default: no TLS"
        );
        assert!(
            client_tls(&config("smtp_tls_security_level = none\n"), false)
                .unwrap()
                .is_none()
        );
        let (_, v) = client_tls(&config("smtp_use_tls = yes\n"), false)
            .unwrap()
            .unwrap();
        assert_eq!(v, CertificateVerification::AcceptsAny);
        let (_, v) = client_tls(&config("lmtp_tls_security_level = encrypt\n"), true)
            .unwrap()
            .unwrap();
        assert_eq!(v, CertificateVerification::AcceptsAny);
        let e = client_tls(&config("smtp_tls_security_level = paranoid\n"), false).unwrap_err();
        assert!(e.to_string().contains("main.cf, line 1"), "{e}");
    }

    #[test]
    fn verify_needs_readable_anchors() {
        let e = client_tls(
            &config("smtp_tls_security_level = verify\nsmtp_tls_CAfile = /nonexistent/ca.pem\n"),
            false,
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("smtp_tls_CAfile") && text.contains("/nonexistent/ca.pem"),
            "{text}"
        );
        let empty = std::env::temp_dir().join(format!("mta-empty-ca-{}.pem", std::process::id()));
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = client_tls(
            &config(&format!(
                "smtp_tls_security_level = secure\nsmtp_tls_CAfile = {}\n",
                empty.display()
            )),
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("no CA certificates found"), "{e}");
        std::fs::remove_file(empty).unwrap();
        if Path::new(SYSTEM_CA_FILE).exists() {
            let (_, v) = client_tls(&config("smtp_tls_security_level = verify\n"), false)
                .unwrap()
                .unwrap();
            assert_eq!(v, CertificateVerification::Verifies);
        }
    }
}

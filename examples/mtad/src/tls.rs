//! smtpd's TLS: the configured certificates, or a self-signed one made
//! at first start when TLS is wanted and none is configured (the
//! reference site runs out of the box; a real site sets
//! `smtpd_tls_cert_file`).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use mta_core::config::Config;
use mta_smtp::server_tls::{key_files, server_tls};

use crate::Fatal;
use crate::log::Log;

fn fatal(what: impl std::fmt::Display) -> Fatal {
    Fatal(what.to_string())
}

/// The TLS configuration of one smtpd service that wants TLS (`config`
/// is its view). Warnings go to `log`, the note about a generated
/// certificate to `master_log`.
pub(crate) fn server_tls_for(
    config: &Config,
    log: &Log,
    master_log: &Log,
) -> Result<Option<Arc<rustls::ServerConfig>>, Fatal> {
    let config = if key_files(config).map_err(fatal)?.is_empty() {
        let path = self_signed(config, master_log)?;
        config.with_overrides(&[(
            "smtpd_tls_chain_files".to_owned(),
            path.display().to_string(),
        )])
    } else {
        config.clone()
    };
    let tls = server_tls(&config).map_err(fatal)?;
    let Some(tls) = tls else {
        return Ok(None);
    };
    for note in &tls.notes {
        log.warning(note);
    }
    Ok(Some(tls.config))
}

/// `$data_directory/smtpd-selfsigned.pem` (key and certificate for
/// `myhostname`), made the first time it is needed.
fn self_signed(config: &Config, master_log: &Log) -> Result<PathBuf, Fatal> {
    let dir = PathBuf::from(config.expanded("data_directory").map_err(fatal)?);
    let path = dir.join("smtpd-selfsigned.pem");
    if path.exists() {
        return Ok(path);
    }
    let host = config.expanded("myhostname").map_err(fatal)?;
    let made = rcgen::generate_simple_self_signed(vec![host.clone()])
        .map_err(|e| fatal(format!("cannot make a self-signed certificate: {e}")))?;
    std::fs::create_dir_all(&dir).map_err(|e| fatal(format!("mkdir {}: {e}", dir.display())))?;
    let pem = format!("{}{}", made.signing_key.serialize_pem(), made.cert.pem());
    let tmp = dir.join("smtpd-selfsigned.pem.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| fatal(format!("create {}: {e}", tmp.display())))?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| fatal(format!("write {}: {e}", path.display())))?;
    master_log.warning(&format!(
        "no smtpd_tls_cert_file or smtpd_tls_chain_files: made a self-signed certificate for {host} in {}; set smtpd_tls_chain_files for one that clients can verify",
        path.display()
    ));
    Ok(path)
}

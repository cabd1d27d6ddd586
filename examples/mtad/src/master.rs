//! master.cf handling for mtad (wired to mta-core's master.cf parser).

use mta_core::config::Config;

use crate::Fatal;

/// Declares each master.cf service to the configuration.
pub(crate) fn declare_services(
    _config: &mut Config,
    _text: &str,
    _path: &str,
) -> Result<(), Fatal> {
    Ok(())
}

/// postconf -M / -F / -P output.
pub(crate) fn render(
    _text: &str,
    _path: &str,
    _m: bool,
    _f: bool,
    _p: bool,
    _fold: bool,
) -> Result<String, Fatal> {
    Err(Fatal("master.cf output is not wired yet".into()))
}

/// One line per service for the daemon's start-up log.
pub(crate) fn describe(_text: &str, _path: &str) -> Result<Vec<String>, Fatal> {
    Ok(Vec::new())
}

//! `master.cf` for mtad: the services it declares to the configuration,
//! `postconf -M/-F/-P` output, and the start-up summary.

use mta_core::config::Config;
use mta_core::config::master_cf::MasterCf;

use crate::Fatal;

/// Parses `master.cf`, printing its warnings as Postfix does.
fn parse(text: &str, path: &str) -> Result<MasterCf, Fatal> {
    let (master, warnings) = MasterCf::parse(text, path).map_err(|e| Fatal(e.to_string()))?;
    for w in warnings {
        crate::warn(&w.to_string());
    }
    Ok(master)
}

/// Declares each `master.cf` service to the configuration, so that the
/// per-service parameters of delivery agents exist and the names that
/// `-o` values refer to count as used.
pub(crate) fn declare_services(config: &mut Config, text: &str, path: &str) -> Result<(), Fatal> {
    let master = parse(text, path)?;
    for service in master.services() {
        let values: Vec<&str> = service
            .command()
            .overrides()
            .iter()
            .map(|(_, v)| v.as_str())
            .collect();
        config.add_service(service.name(), service.command().program(), &values);
    }
    Ok(())
}

/// `postconf -M`, `-F` or `-P` output (`-Mf` folds long lines).
pub(crate) fn render(
    text: &str,
    path: &str,
    services: bool,
    fields: bool,
    params: bool,
    fold: bool,
) -> Result<String, Fatal> {
    let master = parse(text, path)?;
    Ok(if services && fold {
        master.postconf_mf()
    } else if services {
        master.postconf_m()
    } else if fields {
        master.postconf_f()
    } else if params {
        master.postconf_p()
    } else {
        String::new()
    })
}

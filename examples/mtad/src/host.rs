//! Facts about this machine that Postfix's computed defaults need.

use mta_core::config::{HostFacts, InterfaceAddress};
use nix::ifaddrs::getifaddrs;

/// Gathers the host name, interface addresses and process facts.
pub(crate) fn facts(process_name: &str) -> HostFacts {
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string());
    HostFacts {
        hostname,
        interfaces: interfaces(),
        process_id: std::process::id(),
        process_name: process_name.to_string(),
    }
}

/// Interface addresses with their prefix lengths, in the kernel's order.
fn interfaces() -> Vec<InterfaceAddress> {
    let Ok(list) = getifaddrs() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ifa in list {
        let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else {
            continue;
        };
        if let (Some(a), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
            out.push(InterfaceAddress {
                address: a.ip().into(),
                prefix_len: u32::from(m.ip()).count_ones() as u8,
            });
        } else if let (Some(a), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            out.push(InterfaceAddress {
                address: a.ip().into(),
                prefix_len: u128::from(m.ip()).count_ones() as u8,
            });
        }
    }
    out
}

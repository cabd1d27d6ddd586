//! master.cf parsing and printing: any text either parses or gives an
//! error naming file and line; a parsed file prints in every `postconf`
//! format; nothing panics or loops.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mta_core::config::master_cf::MasterCf;

fuzz_target!(|data: &[u8]| {
    // Lossy, so that byte soup still reaches the parser as text.
    let text = String::from_utf8_lossy(data);
    let (cf, warnings) = match MasterCf::parse(&text, "fuzz/master.cf") {
        Ok(parsed) => parsed,
        Err(err) => {
            assert!(err.to_string().starts_with("fuzz/master.cf, line "));
            return;
        }
    };
    for warning in &warnings {
        assert!(warning.to_string().starts_with("fuzz/master.cf, line "));
    }
    let listing = cf.postconf_m();
    assert_eq!(listing.lines().count(), cf.services().len());
    let _ = cf.postconf_mf();
    let _ = cf.postconf_f();
    let _ = cf.postconf_p();
    for service in cf.services() {
        assert!(service.line() >= 1);
        let _ = service.inet_endpoint();
        let command = service.command();
        assert!(command.operands().len() <= command.args().len());
        let _ = command.override_value("syslog_name");
    }
    let _ = cf.effective_services().count();
});

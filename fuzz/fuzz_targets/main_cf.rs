//! main.cf parsing and expansion: any text either parses or gives an error
//! naming file and line; every value of a parsed file expands or gives an
//! error; nothing panics or loops.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mta_core::config::{Config, HostFacts};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(text, "fuzz/main.cf", HostFacts::default()) else {
        return;
    };
    let names: Vec<String> = config.main_cf().settings().map(|s| s.name.clone()).collect();
    for name in names.iter().take(32) {
        let _ = config.expanded(name);
    }
    let _ = config.expanded("smtpd_banner");
    let _ = config.validate();
    let _ = config.warnings();
    let mut edited = config.main_cf().clone();
    edited.set("myhostname", "fuzz.example");
    let again = mta_core::config::main_cf::MainCf::parse(&edited.to_text(), "fuzz/main.cf")
        .expect("an edited file parses");
    assert_eq!(again.0.get("myhostname"), Some("fuzz.example"));
});

//! SMTP command parsing: any line gives a command or an error with a
//! valid reply, never a panic; a parsed MAIL or RCPT keeps parameters
//! that render back into a line that parses the same way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mta_core::address::ParseOptions;
use mta_smtp::command::{Command, parse_command};

fuzz_target!(|data: &[u8]| {
    for opts in [ParseOptions::LENIENT, ParseOptions::STRICT] {
        match parse_command(data, opts) {
            Ok(Command::Rcpt { to, params }) => {
                // The recipient renders as a path that parses back to it.
                let mut line = format!("RCPT TO:{}", to.render_path());
                if let Some(n) = params.notify {
                    line.push_str(&format!(" NOTIFY={n}"));
                }
                if let Some(o) = &params.orcpt {
                    line.push_str(&format!(" ORCPT={o}"));
                }
                let again = parse_command(line.as_bytes(), opts.with_smtputf8(true))
                    .unwrap_or_else(|e| panic!("{line:?} does not parse: {e}"));
                let Command::Rcpt { to: to2, params: params2 } = again else {
                    panic!("{line:?} is not RCPT")
                };
                assert_eq!(to, to2);
                assert_eq!(params, params2);
            }
            Ok(_) => {}
            Err(e) => {
                let reply = e.reply();
                assert!(reply.code().get() >= 500, "{reply}");
                let _ = reply.to_bytes();
            }
        }
    }
});

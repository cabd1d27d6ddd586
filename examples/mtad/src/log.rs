//! Log lines in Postfix's shape, to standard error:
//! `Nov 22 06:50:00 mail.example.com postfix/smtpd[1234]: connect from ...`
//! with the service's `syslog_name`. Times are UTC (mtad does not read
//! the time zone database yet).

use std::time::SystemTime;

/// The logger of one service.
#[derive(Debug, Clone)]
pub(crate) struct Log {
    host: String,
    tag: String,
}

impl Log {
    /// Lines tagged `syslog_name/service[pid]` from host `host`.
    pub(crate) fn new(host: &str, syslog_name: &str, service: &str) -> Log {
        Log {
            host: host.to_string(),
            tag: format!("{syslog_name}/{service}[{}]", std::process::id()),
        }
    }

    fn line(&self, text: &str) {
        eprintln!(
            "{} {} {}: {text}",
            mta_core::date::syslog(SystemTime::now()),
            self.host,
            self.tag
        );
    }

    /// An informational line.
    pub(crate) fn info(&self, text: &str) {
        self.line(text);
    }

    /// A `warning:` line.
    pub(crate) fn warning(&self, text: &str) {
        self.line(&format!("warning: {text}"));
    }
}

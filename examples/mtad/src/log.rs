//! Log lines in Postfix's shape:
//! `Nov 22 06:50:00 mail.example.com postfix/smtpd[1234]: connect from ...`
//! with the service's `syslog_name`. Times are UTC (mtad does not read
//! the time zone database yet).
//!
//! Where they go, as Postfix decides it: to `maillog_file` when it is set
//! (`/dev/stdout` and `/dev/stderr` are the streams themselves; a file is
//! appended to, one write per line, and reopened at each reload so that
//! log rotation works), its path checked against
//! `maillog_file_prefixes`; otherwise to syslog through `/dev/log` with
//! `syslog_facility`, or to standard error when the machine has no
//! syslog socket (said once). Before the daemon has read its
//! configuration, and in the command-line tools, lines go to standard
//! error.
//!
//! The library crates report through `tracing`; [`install_tracing`]
//! sends their events here too (`info` and above), tagged as the
//! program Postfix would name (`smtpd` for the SMTP server, `smtp` for
//! the client).

use std::io::Write;
use std::sync::{Mutex, RwLock};
use std::time::SystemTime;

use mta_core::config::Config;

use crate::Fatal;

/// Where lines go.
#[derive(Debug)]
enum Sink {
    Stderr,
    Stdout,
    File {
        path: String,
        file: Mutex<std::fs::File>,
    },
    Syslog {
        socket: std::os::unix::net::UnixDatagram,
        facility: u8,
    },
}

static SINK: RwLock<Sink> = RwLock::new(Sink::Stderr);

/// The syslog facility number of `name` (RFC 5424 section 6.2.1).
fn facility(name: &str) -> Option<u8> {
    Some(match name.to_ascii_lowercase().as_str() {
        "kern" => 0,
        "user" => 1,
        "mail" => 2,
        "daemon" => 3,
        "auth" => 4,
        "syslog" => 5,
        "lpr" => 6,
        "news" => 7,
        "uucp" => 8,
        "cron" => 9,
        "authpriv" => 10,
        "ftp" => 11,
        n => match n.strip_prefix("local").and_then(|d| d.parse::<u8>().ok()) {
            Some(d) if d <= 7 => 16 + d,
            _ => return None,
        },
    })
}

/// Chooses the log's destination from `config` (see the module
/// documentation); called at start and at each reload.
///
/// # Errors
///
/// A `maillog_file` outside `maillog_file_prefixes`, one that cannot be
/// opened, or an unknown `syslog_facility`.
pub(crate) fn configure(config: &Config) -> Result<(), Fatal> {
    let text = |name: &str| config.expanded(name).map_err(|e| Fatal(e.to_string()));
    let file = text("maillog_file")?.trim().to_owned();
    let sink = if file.is_empty() {
        let name = text("syslog_facility")?;
        let facility = facility(name.trim()).ok_or_else(|| {
            Fatal(
                config
                    .bad_value(
                        "syslog_facility",
                        name.trim(),
                        "unknown facility (mail, daemon, local0 ... local7, ...)",
                    )
                    .to_string(),
            )
        })?;
        match std::os::unix::net::UnixDatagram::unbound()
            .and_then(|s| s.connect("/dev/log").map(|()| s))
        {
            Ok(socket) => Sink::Syslog { socket, facility },
            Err(e) => {
                eprintln!(
                    "{}: warning: no syslog socket at /dev/log ({e}): logging to standard error; set maillog_file to log to a file",
                    crate::program()
                );
                Sink::Stderr
            }
        }
    } else {
        let prefixes = config
            .list("maillog_file_prefixes")
            .map_err(|e| Fatal(e.to_string()))?;
        if !prefixes.iter().any(|p| file.starts_with(p.as_str())) {
            return Err(Fatal(config.bad_value(
                "maillog_file",
                &file,
                format!(
                    "not under any of maillog_file_prefixes ({}): add its directory there if it is meant",
                    prefixes.join(", ")
                ),
            ).to_string()));
        }
        match file.as_str() {
            "/dev/stderr" => Sink::Stderr,
            "/dev/stdout" => Sink::Stdout,
            path => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| Fatal(format!("maillog_file {path}: {e}")))?;
                Sink::File {
                    path: path.to_owned(),
                    file: Mutex::new(f),
                }
            }
        }
    };
    *SINK.write().unwrap_or_else(|e| e.into_inner()) = sink;
    Ok(())
}

/// Severity of a line, from its text's prefix (`warning:`, `error:`,
/// `fatal:`), as syslog wants it.
fn severity(text: &str) -> u8 {
    if text.starts_with("fatal:") || text.starts_with("panic:") {
        2
    } else if text.starts_with("error:") {
        3
    } else if text.starts_with("warning:") {
        4
    } else {
        6
    }
}

/// Writes one line: `tag` is `syslog_name/service[pid]`.
fn emit(host: &str, tag: &str, text: &str) {
    let now = mta_core::date::syslog(SystemTime::now());
    let sink = SINK.read().unwrap_or_else(|e| e.into_inner());
    match &*sink {
        Sink::Stderr => eprintln!("{now} {host} {tag}: {text}"),
        Sink::Stdout => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{now} {host} {tag}: {text}");
            let _ = out.flush();
        }
        Sink::File { path, file } => {
            let line = format!("{now} {host} {tag}: {text}\n");
            let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = f.write_all(line.as_bytes()) {
                eprintln!("{}: warning: maillog_file {path}: {e}", crate::program());
                eprint!("{line}");
            }
        }
        Sink::Syslog { socket, facility } => {
            let pri = u16::from(*facility) * 8 + u16::from(severity(text));
            // RFC 3164 as syslog(3) sends it: the daemon adds the host.
            let line = format!("<{pri}>{now} {tag}: {text}");
            if socket.send(line.as_bytes()).is_err() {
                eprintln!("{now} {host} {tag}: {text}");
            }
        }
    }
}

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

    /// An informational line.
    pub(crate) fn info(&self, text: &str) {
        emit(&self.host, &self.tag, text);
    }

    /// A `warning:` line.
    pub(crate) fn warning(&self, text: &str) {
        emit(&self.host, &self.tag, &format!("warning: {text}"));
    }
}

/// Sends the library crates' `tracing` events (`info` and above) to the
/// log, as lines of `syslog_name/PROGRAM[pid]`.
pub(crate) fn install_tracing(host: &str, syslog_name: &str) {
    let _ = tracing::subscriber::set_global_default(Forward {
        host: host.to_owned(),
        syslog_name: syslog_name.to_owned(),
    });
}

/// A `tracing` subscriber that writes each event as one log line.
struct Forward {
    host: String,
    syslog_name: String,
}

/// Collects an event's message and other fields.
#[derive(Default)]
struct Fields {
    message: String,
    extra: String,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.extra.push_str(&format!(" {}={value:?}", field.name()));
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.extra.push_str(&format!(" {}={value}", field.name()));
        }
    }
}

impl tracing::Subscriber for Forward {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::INFO
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let program = match meta.target() {
            t if t.starts_with("mta_smtp::transport") || t.starts_with("mta_smtp::server") => {
                "smtpd"
            }
            t if t.starts_with("mta_smtp") || t.starts_with("mta_delivery::smtp") => "smtp",
            t if t.starts_with("mta_queue") => "qmgr",
            _ => "master",
        };
        let prefix = match *meta.level() {
            tracing::Level::ERROR => "error: ",
            tracing::Level::WARN => "warning: ",
            _ => "",
        };
        let tag = format!("{}/{program}[{}]", self.syslog_name, std::process::id());
        emit(
            &self.host,
            &tag,
            &format!("{prefix}{}{}", fields.message, fields.extra),
        );
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facilities_and_severities() {
        assert_eq!(facility("mail"), Some(2));
        assert_eq!(facility("LOCAL7"), Some(23));
        assert_eq!(facility("local8"), None);
        assert_eq!(facility("bogus"), None);
        assert_eq!(severity("warning: x"), 4);
        assert_eq!(severity("fatal: x"), 2);
        assert_eq!(severity("connect from x"), 6);
    }
}

//! Log lines in Postfix's shape, to standard error:
//! `Nov 22 06:50:00 mail.example.com postfix/smtpd[1234]: connect from ...`
//! with the service's `syslog_name`. Times are UTC (mtad does not read
//! the time zone database yet).

use std::time::{SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

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
            syslog_time(SystemTime::now()),
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

/// Year, month (1-12), day, weekday (0 = Sunday), hour, minute, second.
fn civil(t: SystemTime) -> (i64, usize, u32, usize, u64, u64, u64) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    // Days to a civil date (proleptic Gregorian), after H. Hinnant's
    // public-domain algorithm description.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as usize;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = (days + 4).rem_euclid(7) as usize;
    (
        year,
        month,
        day,
        weekday,
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
    )
}

/// `Nov 22 06:50:00`, as syslog stamps lines.
pub(crate) fn syslog_time(t: SystemTime) -> String {
    let (_, month, day, _, h, m, s) = civil(t);
    format!("{} {day:>2} {h:02}:{m:02}:{s:02}", MONTHS[month - 1])
}

/// `Sun, 22 Nov 2026 06:50:00 +0000 (UTC)`, as `Received:` headers carry
/// it (RFC 5322 section 3.3).
pub(crate) fn rfc5322_date(t: SystemTime) -> String {
    let (year, month, day, weekday, h, m, s) = civil(t);
    format!(
        "{}, {day} {} {year} {h:02}:{m:02}:{s:02} +0000 (UTC)",
        DAYS[weekday],
        MONTHS[month - 1]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_329_000);
        // date -u -d @1795329000
        assert_eq!(rfc5322_date(t), "Sun, 22 Nov 2026 06:30:00 +0000 (UTC)");
        assert_eq!(syslog_time(t), "Nov 22 06:30:00");
        assert_eq!(
            rfc5322_date(UNIX_EPOCH),
            "Thu, 1 Jan 1970 00:00:00 +0000 (UTC)"
        );
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc5322_date(leap), "Tue, 29 Feb 2000 00:00:00 +0000 (UTC)");
    }
}

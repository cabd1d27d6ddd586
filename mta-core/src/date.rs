//! Dates as mail shows them, from a `SystemTime` the caller reads: the
//! RFC 5322 form of `Received:` and `Date:` headers, the syslog stamp of
//! log lines, and `ctime(3)`'s form that `postcat` prints. All in UTC:
//! this crate reads no time zone database (`+0000 (UTC)` is a valid RFC
//! 5322 zone).

use std::time::{SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// A moment broken down in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// The year.
    pub year: i64,
    /// The month, 1 to 12.
    pub month: u32,
    /// The day of the month, 1 to 31.
    pub day: u32,
    /// The day of the week, 0 for Sunday.
    pub weekday: u32,
    /// Hours, minutes, seconds.
    pub hour: u32,
    /// Minutes.
    pub minute: u32,
    /// Seconds.
    pub second: u32,
}

impl Civil {
    /// `t` in UTC (times before 1970 count as 1970).
    pub fn from_system_time(t: SystemTime) -> Civil {
        let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let days = (secs / 86_400) as i64;
        let rest = (secs % 86_400) as u32;
        // Days since 1970 to a proleptic Gregorian date, computed through
        // 400-year eras that start on 1 March (so leap days fall last).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        Civil {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            weekday: (days + 4).rem_euclid(7) as u32,
            hour: rest / 3600,
            minute: rest / 60 % 60,
            second: rest % 60,
        }
    }

    fn month_name(&self) -> &'static str {
        MONTHS[(self.month - 1) as usize]
    }

    fn day_name(&self) -> &'static str {
        DAYS[self.weekday as usize]
    }
}

/// `Sun, 22 Nov 2026 06:50:00 +0000 (UTC)` (RFC 5322 section 3.3), as
/// Postfix writes `Received:` and `Date:` headers.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let t = UNIX_EPOCH + Duration::from_secs(1_795_329_000);
/// assert_eq!(mta_core::date::rfc5322(t), "Sun, 22 Nov 2026 06:30:00 +0000 (UTC)");
/// ```
pub fn rfc5322(t: SystemTime) -> String {
    let c = Civil::from_system_time(t);
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} +0000 (UTC)",
        c.day_name(),
        c.day,
        c.month_name(),
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

/// `Nov 22 06:50:00`, the syslog stamp of a log line.
pub fn syslog(t: SystemTime) -> String {
    let c = Civil::from_system_time(t);
    format!(
        "{} {:>2} {:02}:{:02}:{:02}",
        c.month_name(),
        c.day,
        c.hour,
        c.minute,
        c.second
    )
}

/// `Sun Nov 22 06:50:00 2026`, `ctime(3)`'s form, as `postcat` prints
/// arrival times.
pub fn ctime(t: SystemTime) -> String {
    let c = Civil::from_system_time(t);
    format!(
        "{} {} {:>2} {:02}:{:02}:{:02} {}",
        c.day_name(),
        c.month_name(),
        c.day,
        c.hour,
        c.minute,
        c.second,
        c.year
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_agree_with_gnu_date() {
        // date -u -d @1795329000 ; date -u -d @951782400
        let t = UNIX_EPOCH + Duration::from_secs(1_795_329_000);
        assert_eq!(rfc5322(t), "Sun, 22 Nov 2026 06:30:00 +0000 (UTC)");
        assert_eq!(syslog(t), "Nov 22 06:30:00");
        assert_eq!(ctime(t), "Sun Nov 22 06:30:00 2026");
        assert_eq!(rfc5322(UNIX_EPOCH), "Thu, 1 Jan 1970 00:00:00 +0000 (UTC)");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc5322(leap), "Tue, 29 Feb 2000 00:00:00 +0000 (UTC)");
        assert_eq!(
            ctime(leap + Duration::from_secs(86_400)),
            "Wed Mar  1 00:00:00 2000"
        );
    }

    #[test]
    fn every_day_follows_the_one_before() {
        let mut prev = Civil::from_system_time(UNIX_EPOCH);
        for d in 1..200_000u64 {
            let c = Civil::from_system_time(UNIX_EPOCH + Duration::from_secs(d * 86_400));
            assert_eq!(c.weekday, (prev.weekday + 1) % 7);
            if c.day == 1 {
                assert!(prev.day >= 28);
                assert_eq!(c.month, prev.month % 12 + 1);
            } else {
                assert_eq!(
                    (c.day, c.month, c.year),
                    (prev.day + 1, prev.month, prev.year)
                );
            }
            prev = c;
        }
    }
}

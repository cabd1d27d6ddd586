//! Postfix's value syntaxes for configuration parameters: time values,
//! integers, sizes and booleans.
//!
//! - A **time value** is a whole number with an optional one-letter unit:
//!   `s` (seconds), `m` (minutes), `h` (hours), `d` (days), `w` (weeks).
//!   Without a letter, the parameter's own default unit applies (`5` means
//!   five days for `maximal_queue_lifetime`, five seconds for
//!   `smtpd_timeout`), so the caller passes that unit in. Postfix keeps
//!   time values in a C `int` of seconds; [`MAX_TIME_SECONDS`] is that
//!   limit, and a larger value is an error, never a wrap-around.
//! - An **integer** is a C `int` with the parameter's bounds.
//! - A **size** is a plain count of bytes: Postfix 3.7 accepts no `k` or
//!   `M` suffix (`message_size_limit = 10240000`, not `10M`), and neither
//!   does this module.
//! - A **boolean** is `yes` or `no`, in any letter case: Postfix 3.7
//!   accepts `YES` and `No` too (checked against Debian's Postfix 3.7.11),
//!   and refuses `true`, `1` and anything else.
//!
//! Where Postfix 3.7 silently ignores text after a time unit (it reads
//! `3h2m` as three hours and `10sx` as ten seconds), this module refuses
//! the value: the administrator most likely meant something else, and an
//! error naming the value is better than a silent surprise.
//!
//! This module parses single values. It does not know parameter names,
//! defaults or bounds, and does not expand `$name`: the configuration
//! model does that and passes the expanded value, the default unit and the
//! bounds in. Errors name the bad value and what was expected; the caller
//! adds the parameter name.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use mta_core::units::{TimeUnit, TimeValue, parse_bool, parse_int, parse_size};
//!
//! // maximal_queue_lifetime: the default unit is days.
//! let lifetime = TimeValue::parse("5", TimeUnit::Days)?;
//! assert_eq!(lifetime.to_duration(), Duration::from_secs(5 * 86_400));
//! assert_eq!(lifetime.to_string(), "5d");
//!
//! assert_eq!(TimeValue::parse("300s", TimeUnit::Seconds)?.to_string(), "300s");
//! assert_eq!(parse_int("100", 1..=i32::MAX)?, 100);
//! assert_eq!(parse_size("10240000", 0..=mta_core::units::MAX_SIZE)?, 10_240_000);
//! assert!(parse_size("10M", 0..=mta_core::units::MAX_SIZE).is_err());
//! assert!(parse_bool("Yes")?);
//! # Ok::<(), mta_core::units::UnitError>(())
//! ```

use std::fmt;
use std::ops::RangeInclusive;
use std::time::Duration;

/// The largest time value in seconds: Postfix stores time values in a C
/// `int`.
pub const MAX_TIME_SECONDS: u64 = i32::MAX as u64;

/// The largest size in bytes: Postfix stores sizes in a C `long`
/// (`postconf(5)`, `message_size_limit`: "cannot exceed LONG_MAX"), 64
/// bits on the platforms this project supports.
pub const MAX_SIZE: u64 = i64::MAX as u64;

/// Why a parameter value was refused. Every variant carries the value as
/// written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnitError {
    /// A time value that is not a whole number followed by at most one
    /// unit letter.
    #[error(
        "bad time value {value:?}: expected a whole number with an optional unit s, m, h, d or w"
    )]
    BadTime {
        /// The value as written.
        value: String,
    },
    /// A time value larger than [`MAX_TIME_SECONDS`].
    #[error("time value {value:?} is too large: the limit is {MAX_TIME_SECONDS} seconds")]
    TimeOverflow {
        /// The value as written.
        value: String,
    },
    /// A time value outside the parameter's bounds.
    #[error("time value {value:?} is out of range: expected {min}s to {max}s")]
    TimeOutOfRange {
        /// The value as written.
        value: String,
        /// The smallest accepted value, in seconds.
        min: u64,
        /// The largest accepted value, in seconds.
        max: u64,
    },
    /// An integer or size that is not a whole number (or does not fit the
    /// type at all).
    #[error("bad numerical value {value:?}: expected a whole number")]
    NotANumber {
        /// The value as written.
        value: String,
    },
    /// An integer outside the parameter's bounds.
    #[error("value {value:?} is out of range: expected {min} to {max}")]
    IntegerOutOfRange {
        /// The value as written.
        value: String,
        /// The smallest accepted value.
        min: i32,
        /// The largest accepted value.
        max: i32,
    },
    /// A size with a unit suffix, a sign or other non-digits.
    #[error("bad size value {value:?}: expected a number of bytes, without a unit")]
    NotASize {
        /// The value as written.
        value: String,
    },
    /// A size outside the parameter's bounds.
    #[error("size {value:?} is out of range: expected {min} to {max} bytes")]
    SizeOutOfRange {
        /// The value as written.
        value: String,
        /// The smallest accepted size.
        min: u64,
        /// The largest accepted size.
        max: u64,
    },
    /// A boolean other than `yes` or `no`.
    #[error("bad boolean value {value:?}: expected yes or no")]
    NotABoolean {
        /// The value as written.
        value: String,
    },
}

/// The unit of a time value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimeUnit {
    /// `s`: one second.
    Seconds,
    /// `m`: 60 seconds.
    Minutes,
    /// `h`: 3600 seconds.
    Hours,
    /// `d`: 86 400 seconds.
    Days,
    /// `w`: 604 800 seconds.
    Weeks,
}

impl TimeUnit {
    /// All units, smallest first.
    pub const ALL: [TimeUnit; 5] = [
        TimeUnit::Seconds,
        TimeUnit::Minutes,
        TimeUnit::Hours,
        TimeUnit::Days,
        TimeUnit::Weeks,
    ];

    /// The unit's letter as Postfix writes it.
    pub const fn letter(self) -> char {
        match self {
            TimeUnit::Seconds => 's',
            TimeUnit::Minutes => 'm',
            TimeUnit::Hours => 'h',
            TimeUnit::Days => 'd',
            TimeUnit::Weeks => 'w',
        }
    }

    /// The unit for a letter. Only lower-case letters are units, as in
    /// Postfix (`10S` is an error there too).
    pub const fn from_letter(letter: char) -> Option<TimeUnit> {
        match letter {
            's' => Some(TimeUnit::Seconds),
            'm' => Some(TimeUnit::Minutes),
            'h' => Some(TimeUnit::Hours),
            'd' => Some(TimeUnit::Days),
            'w' => Some(TimeUnit::Weeks),
            _ => None,
        }
    }

    /// The length of the unit in seconds.
    pub const fn seconds(self) -> u64 {
        match self {
            TimeUnit::Seconds => 1,
            TimeUnit::Minutes => 60,
            TimeUnit::Hours => 3_600,
            TimeUnit::Days => 86_400,
            TimeUnit::Weeks => 604_800,
        }
    }

    /// The largest count accepted with this unit.
    ///
    /// With a unit other than seconds, Postfix 3.7 refuses a count that
    /// reaches [`MAX_TIME_SECONDS`] divided by the unit, one below the
    /// count whose product would overflow (`3549w` is accepted, `3550w`
    /// is not). This module draws the line at the same place, so that a
    /// value accepted here is accepted by Postfix and the other way round.
    pub const fn max_count(self) -> u64 {
        match self {
            TimeUnit::Seconds => MAX_TIME_SECONDS,
            unit => MAX_TIME_SECONDS / unit.seconds() - 1,
        }
    }
}

impl fmt::Display for TimeUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.letter())
    }
}

/// A time value as written in `main.cf`: a count and a unit.
///
/// It keeps the unit it was written with, so that it prints back the way
/// the administrator (or Postfix's `postconf -d`) wrote it: `300s` stays
/// `300s` rather than becoming `5m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeValue {
    count: u32,
    unit: TimeUnit,
}

impl TimeValue {
    /// A time value from a count and a unit.
    ///
    /// # Errors
    ///
    /// [`UnitError::TimeOverflow`] when the count exceeds
    /// [`TimeUnit::max_count`].
    pub fn new(count: u64, unit: TimeUnit) -> Result<TimeValue, UnitError> {
        if count > unit.max_count() {
            return Err(UnitError::TimeOverflow {
                value: format!("{count}{unit}"),
            });
        }
        // max_count() is at most i32::MAX, so the count fits.
        Ok(TimeValue {
            count: count as u32,
            unit,
        })
    }

    /// Parses a time value; `default_unit` applies when the value has no
    /// unit letter.
    ///
    /// The syntax is an optional `+`, one or more ASCII digits, and an
    /// optional unit letter, with nothing else (not even white space,
    /// which the configuration parser has already removed).
    ///
    /// # Errors
    ///
    /// [`UnitError::BadTime`] for anything but that syntax,
    /// [`UnitError::TimeOverflow`] for a value above
    /// [`MAX_TIME_SECONDS`].
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use mta_core::units::{TimeUnit, TimeValue, UnitError};
    ///
    /// let t = TimeValue::parse("2h", TimeUnit::Seconds)?;
    /// assert_eq!(t.to_duration(), Duration::from_secs(7200));
    /// assert!(matches!(
    ///     TimeValue::parse("10x", TimeUnit::Seconds),
    ///     Err(UnitError::BadTime { .. })
    /// ));
    /// assert!(matches!(
    ///     TimeValue::parse("99999w", TimeUnit::Seconds),
    ///     Err(UnitError::TimeOverflow { .. })
    /// ));
    /// # Ok::<(), UnitError>(())
    /// ```
    pub fn parse(value: &str, default_unit: TimeUnit) -> Result<TimeValue, UnitError> {
        let bad = || UnitError::BadTime {
            value: value.to_owned(),
        };
        let digits = value.strip_prefix('+').unwrap_or(value);
        let (digits, unit) = match digits.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => {
                (&digits[..i], TimeUnit::from_letter(c).ok_or_else(bad)?)
            }
            _ => (digits, default_unit),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        // All digits: the only possible parse failure is a number too big
        // for u64, which is an overflow of the time limit as well.
        let overflow = || UnitError::TimeOverflow {
            value: value.to_owned(),
        };
        let count: u64 = digits.parse().map_err(|_| overflow())?;
        if count > unit.max_count() {
            return Err(overflow());
        }
        Ok(TimeValue {
            count: count as u32,
            unit,
        })
    }

    /// Parses a time value and checks it against the parameter's bounds.
    ///
    /// # Errors
    ///
    /// Those of [`TimeValue::parse`], and [`UnitError::TimeOutOfRange`].
    pub fn parse_bounded(
        value: &str,
        default_unit: TimeUnit,
        bounds: RangeInclusive<Duration>,
    ) -> Result<TimeValue, UnitError> {
        let time = TimeValue::parse(value, default_unit)?;
        if !bounds.contains(&time.to_duration()) {
            return Err(UnitError::TimeOutOfRange {
                value: value.to_owned(),
                min: bounds.start().as_secs(),
                max: bounds.end().as_secs(),
            });
        }
        Ok(time)
    }

    /// The value in the largest unit that expresses it exactly, or `None`
    /// when it has a fraction of a second or exceeds [`MAX_TIME_SECONDS`].
    ///
    /// Zero is `0s`.
    pub fn from_duration(duration: Duration) -> Option<TimeValue> {
        if duration.subsec_nanos() != 0 || duration.as_secs() > MAX_TIME_SECONDS {
            return None;
        }
        let secs = duration.as_secs();
        if secs == 0 {
            return Some(TimeValue {
                count: 0,
                unit: TimeUnit::Seconds,
            });
        }
        let unit = TimeUnit::ALL
            .into_iter()
            .rev()
            .find(|u| secs.is_multiple_of(u.seconds()) && secs / u.seconds() <= u.max_count())
            .unwrap_or(TimeUnit::Seconds);
        Some(TimeValue {
            count: (secs / unit.seconds()) as u32,
            unit,
        })
    }

    /// The count as written.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The unit as written, or the default unit if none was.
    pub fn unit(&self) -> TimeUnit {
        self.unit
    }

    /// The value as a duration.
    pub fn to_duration(&self) -> Duration {
        Duration::from_secs(u64::from(self.count) * self.unit.seconds())
    }
}

impl fmt::Display for TimeValue {
    /// Writes the count and the unit letter, always with the letter, as
    /// `postconf -d` prints time values (`300s`, `5d`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.count, self.unit)
    }
}

impl From<TimeValue> for Duration {
    fn from(value: TimeValue) -> Duration {
        value.to_duration()
    }
}

/// Parses a time value straight into a duration. See [`TimeValue::parse`].
///
/// # Errors
///
/// Those of [`TimeValue::parse`].
pub fn parse_time(value: &str, default_unit: TimeUnit) -> Result<Duration, UnitError> {
    TimeValue::parse(value, default_unit).map(|t| t.to_duration())
}

/// Parses an integer parameter (a C `int` in Postfix) and checks its
/// bounds.
///
/// An optional sign and ASCII digits, nothing else.
///
/// # Errors
///
/// [`UnitError::NotANumber`] when the value is not an integer that fits in
/// an `i32`, [`UnitError::IntegerOutOfRange`] when it is outside `bounds`.
///
/// # Example
///
/// ```
/// use mta_core::units::{UnitError, parse_int};
///
/// // line_length_limit must be at least 512.
/// assert_eq!(parse_int("2048", 512..=i32::MAX), Ok(2048));
/// assert!(matches!(parse_int("100", 512..=i32::MAX), Err(UnitError::IntegerOutOfRange { .. })));
/// assert!(matches!(parse_int("1k", 512..=i32::MAX), Err(UnitError::NotANumber { .. })));
/// ```
pub fn parse_int(value: &str, bounds: RangeInclusive<i32>) -> Result<i32, UnitError> {
    let n: i32 = value.parse().map_err(|_| UnitError::NotANumber {
        value: value.to_owned(),
    })?;
    if !bounds.contains(&n) {
        return Err(UnitError::IntegerOutOfRange {
            value: value.to_owned(),
            min: *bounds.start(),
            max: *bounds.end(),
        });
    }
    Ok(n)
}

/// Parses a size parameter: a plain number of bytes, and checks its
/// bounds. Pass `0..=MAX_SIZE` for "any size".
///
/// Only ASCII digits: no sign and no unit (Postfix 3.7 has no size
/// units). Postfix 3.7 also accepts a negative `message_size_limit`; a
/// negative size makes no sense and is refused here.
///
/// # Errors
///
/// [`UnitError::NotASize`] for anything but digits,
/// [`UnitError::SizeOutOfRange`] for a number outside `bounds` (including
/// numbers too large for 64 bits).
///
/// # Example
///
/// ```
/// use mta_core::units::{MAX_SIZE, parse_size};
///
/// assert_eq!(parse_size("51200000", 0..=MAX_SIZE), Ok(51_200_000));
/// assert!(parse_size("50M", 0..=MAX_SIZE).is_err());
/// ```
pub fn parse_size(value: &str, bounds: RangeInclusive<u64>) -> Result<u64, UnitError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UnitError::NotASize {
            value: value.to_owned(),
        });
    }
    let out_of_range = || UnitError::SizeOutOfRange {
        value: value.to_owned(),
        min: *bounds.start(),
        max: *bounds.end(),
    };
    let n: u64 = value.parse().map_err(|_| out_of_range())?;
    if !bounds.contains(&n) {
        return Err(out_of_range());
    }
    Ok(n)
}

/// Parses a boolean parameter: `yes` or `no` in any letter case.
///
/// # Errors
///
/// [`UnitError::NotABoolean`] for anything else.
///
/// # Example
///
/// ```
/// use mta_core::units::{format_bool, parse_bool};
///
/// assert_eq!(parse_bool("NO"), Ok(false));
/// assert!(parse_bool("true").is_err());
/// assert_eq!(format_bool(true), "yes");
/// ```
pub fn parse_bool(value: &str) -> Result<bool, UnitError> {
    if value.eq_ignore_ascii_case("yes") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("no") {
        Ok(false)
    } else {
        Err(UnitError::NotABoolean {
            value: value.to_owned(),
        })
    }
}

/// A boolean as Postfix writes it: `yes` or `no`.
pub const fn format_bool(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(value: &str, unit: TimeUnit) -> Result<u64, UnitError> {
        parse_time(value, unit).map(|d| d.as_secs())
    }

    #[test]
    fn time_units_and_defaults() {
        use TimeUnit::*;
        assert_eq!(secs("10", Seconds), Ok(10));
        assert_eq!(secs("10", Days), Ok(864_000));
        assert_eq!(secs("10s", Days), Ok(10));
        assert_eq!(secs("10m", Seconds), Ok(600));
        assert_eq!(secs("1h", Seconds), Ok(3600));
        assert_eq!(secs("1d", Seconds), Ok(86_400));
        assert_eq!(secs("1w", Seconds), Ok(604_800));
        assert_eq!(secs("0", Seconds), Ok(0));
        assert_eq!(secs("0010", Seconds), Ok(10));
        assert_eq!(secs("+5", Seconds), Ok(5));
    }

    #[test]
    fn time_syntax_errors_name_the_value() {
        for bad in [
            "", "s", "+", "-5", "10S", "1W", "10x", "10 s", " 10", "10s ", "3h2m", "10sx", "0x10",
            "1.5h", "١٠",
        ] {
            match TimeValue::parse(bad, TimeUnit::Seconds) {
                Err(UnitError::BadTime { value }) => assert_eq!(value, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn time_overflow_matches_postfix() {
        use TimeUnit::*;
        // The boundaries Postfix 3.7.11 draws (found with postmap and
        // ipc_timeout).
        assert_eq!(secs("2147483647", Seconds), Ok(2_147_483_647));
        assert_eq!(secs("3549w", Seconds), Ok(3549 * 604_800));
        assert_eq!(secs("24854d", Seconds), Ok(24_854 * 86_400));
        assert_eq!(secs("596522h", Seconds), Ok(596_522 * 3600));
        assert_eq!(secs("35791393m", Seconds), Ok(35_791_393 * 60));
        for over in [
            "2147483648",
            "3550w",
            "24855d",
            "596523h",
            "35791394m",
            "99999999999999999999",
            "99999999999999999999w",
        ] {
            assert!(
                matches!(
                    TimeValue::parse(over, Seconds),
                    Err(UnitError::TimeOverflow { .. })
                ),
                "{over}"
            );
        }
        // The default unit counts too.
        assert!(TimeValue::parse("3550", Weeks).is_err());
    }

    #[test]
    fn time_bounds() {
        let one_to_max = Duration::from_secs(1)..=Duration::from_secs(MAX_TIME_SECONDS);
        assert!(matches!(
            TimeValue::parse_bounded("0", TimeUnit::Seconds, one_to_max.clone()),
            Err(UnitError::TimeOutOfRange { min: 1, .. })
        ));
        assert!(TimeValue::parse_bounded("1s", TimeUnit::Seconds, one_to_max).is_ok());
    }

    #[test]
    fn time_renders_as_written() {
        let t = TimeValue::parse("300", TimeUnit::Seconds).unwrap();
        assert_eq!(t.to_string(), "300s");
        let t = TimeValue::parse("60m", TimeUnit::Seconds).unwrap();
        assert_eq!(t.to_string(), "60m");
        assert_eq!((t.count(), t.unit()), (60, TimeUnit::Minutes));
        assert_eq!(
            TimeValue::from_duration(Duration::from_secs(3600))
                .unwrap()
                .to_string(),
            "1h"
        );
        assert_eq!(
            TimeValue::from_duration(Duration::from_secs(90))
                .unwrap()
                .to_string(),
            "90s"
        );
        assert_eq!(
            TimeValue::from_duration(Duration::ZERO)
                .unwrap()
                .to_string(),
            "0s"
        );
        assert_eq!(TimeValue::from_duration(Duration::from_millis(1500)), None);
        assert_eq!(
            TimeValue::from_duration(Duration::from_secs(MAX_TIME_SECONDS + 1)),
            None
        );
        assert!(TimeValue::new(3550, TimeUnit::Weeks).is_err());
        assert_eq!(
            TimeValue::new(5, TimeUnit::Days).unwrap().to_duration(),
            Duration::from_secs(432_000)
        );
    }

    #[test]
    fn integers() {
        assert_eq!(parse_int("-1", i32::MIN..=i32::MAX), Ok(-1));
        assert_eq!(parse_int("+3", 0..=10), Ok(3));
        assert_eq!(parse_int("2147483647", 0..=i32::MAX), Ok(i32::MAX));
        assert!(matches!(
            parse_int("2147483648", 0..=i32::MAX),
            Err(UnitError::NotANumber { .. })
        ));
        assert!(matches!(
            parse_int("0", 1..=i32::MAX),
            Err(UnitError::IntegerOutOfRange { min: 1, .. })
        ));
        for bad in ["", "10x", "1k", " 5", "0x10", "1e3"] {
            assert!(matches!(
                parse_int(bad, 0..=i32::MAX),
                Err(UnitError::NotANumber { .. })
            ));
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0", 0..=MAX_SIZE), Ok(0));
        assert_eq!(
            parse_size("9223372036854775807", 0..=MAX_SIZE),
            Ok(MAX_SIZE)
        );
        assert!(matches!(
            parse_size("9223372036854775808", 0..=MAX_SIZE),
            Err(UnitError::SizeOutOfRange { .. })
        ));
        assert!(matches!(
            parse_size("99999999999999999999999", 0..=MAX_SIZE),
            Err(UnitError::SizeOutOfRange { .. })
        ));
        for bad in ["", "-1", "+1", "10k", "1M", "10x"] {
            assert!(matches!(
                parse_size(bad, 0..=MAX_SIZE),
                Err(UnitError::NotASize { .. })
            ));
        }
    }

    #[test]
    fn booleans() {
        for yes in ["yes", "YES", "Yes", "yEs"] {
            assert_eq!(parse_bool(yes), Ok(true));
        }
        for no in ["no", "NO", "nO"] {
            assert_eq!(parse_bool(no), Ok(false));
        }
        for bad in ["", "maybe", "1", "0", "true", "on", " yes", "y"] {
            assert_eq!(
                parse_bool(bad),
                Err(UnitError::NotABoolean {
                    value: bad.to_owned()
                })
            );
        }
        assert_eq!(format_bool(false), "no");
    }

    #[test]
    fn error_messages_say_what_was_expected() {
        let e = TimeValue::parse("10x", TimeUnit::Seconds).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad time value \"10x\": expected a whole number with an optional unit s, m, h, d or w"
        );
        let e = parse_int("5", 512..=i32::MAX).unwrap_err();
        assert_eq!(
            e.to_string(),
            "value \"5\" is out of range: expected 512 to 2147483647"
        );
    }

    proptest! {
        #[test]
        fn time_round_trip(count in 0u64..=MAX_TIME_SECONDS, unit in proptest::sample::select(TimeUnit::ALL.to_vec())) {
            match TimeValue::new(count, unit) {
                Ok(t) => {
                    let back = TimeValue::parse(&t.to_string(), TimeUnit::Days).unwrap();
                    prop_assert_eq!(back, t);
                    prop_assert_eq!(back.to_duration().as_secs(), count * unit.seconds());
                    prop_assert!(back.to_duration().as_secs() <= MAX_TIME_SECONDS);
                }
                Err(_) => prop_assert!(count > unit.max_count()),
            }
        }

        #[test]
        fn from_duration_is_exact(s in 0u64..=MAX_TIME_SECONDS) {
            let t = TimeValue::from_duration(Duration::from_secs(s)).unwrap();
            prop_assert_eq!(t.to_duration().as_secs(), s);
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,24}") {
            let _ = TimeValue::parse(&s, TimeUnit::Seconds);
            let _ = parse_int(&s, 0..=10);
            let _ = parse_size(&s, 0..=MAX_SIZE);
            let _ = parse_bool(&s);
        }
    }
}

//! Queue IDs: the names of queue files and the tag on every log line of a
//! message.
//!
//! The format is the one Postfix uses with `enable_long_queue_ids = yes`
//! (see `postconf(5)`), so that administrators and log tools see familiar
//! names such as `3Pt2mN2VXxznjll`:
//!
//! - the creation time in seconds, at least [`MIN_SECONDS_DIGITS`] digits,
//! - the microseconds, exactly [`MICROS_DIGITS`] digits,
//! - the separator `z`,
//! - the uniquifier (Postfix uses the queue file's inode number), in a
//!   base-51 alphabet that leaves out `z`, so the last `z` of an ID is
//!   always the separator.
//!
//! Time digits come from a 52-character alphabet of digits, upper-case and
//! lower-case letters without vowels (so no word can be spelled by
//! accident). The alphabet is in ASCII order, so comparing two IDs as
//! strings compares their times: this is what makes the IDs of one
//! [`QueueIdGenerator`] sort in creation order. IDs never contain `/` or
//! `.`, so they are safe as file names.
//!
//! This module does not read the clock and does not touch the file
//! system: the caller passes the time and the uniquifier in, and decides
//! where the file goes.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use mta_core::queue_id::{QueueId, QueueIdGenerator};
//!
//! let mut ids = QueueIdGenerator::new();
//! let now = Duration::new(1_700_000_000, 123_456_000);
//! let first = ids.next(now, 4711);
//! // The clock stands still: the next ID is still new, and sorts later.
//! let second = ids.next(now, 4711);
//! assert!(first < second);
//! assert_eq!(first.seconds(), 1_700_000_000);
//! assert_eq!(first.micros(), 123_456);
//! assert_eq!(first.uniquifier(), 4711);
//!
//! // An ID read back from a file name.
//! let parsed: QueueId = first.as_str().parse()?;
//! assert_eq!(parsed, first);
//! # Ok::<(), mta_core::queue_id::QueueIdError>(())
//! ```

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::time::Duration;

/// The 52 digits of the time fields, in ASCII order: `0-9`, then the
/// upper-case and lower-case consonants. Postfix's long queue IDs use the
/// same alphabet (`postconf(5)`, `enable_long_queue_ids`).
const ALPHABET: &[u8; 52] = b"0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz";

/// Radix of the time fields.
const TIME_RADIX: u64 = 52;

/// Radix of the uniquifier: the alphabet without its last digit `z`, which
/// is reserved as the separator.
const UNIQUIFIER_RADIX: u64 = 51;

/// The separator between the time and the uniquifier.
pub const SEPARATOR: char = 'z';

/// Minimum number of digits of the seconds field. Seconds are padded with
/// `0` to this width, which keeps IDs the same length, and therefore in
/// string order, until 52^6 seconds after the epoch (the year 2596).
pub const MIN_SECONDS_DIGITS: usize = 6;

/// Number of digits of the microseconds field (52^4 > 10^6).
pub const MICROS_DIGITS: usize = 4;

/// Longest possible ID: 12 digits for any `u64` seconds, the microseconds,
/// the separator and 12 digits for any `u64` uniquifier.
pub const MAX_LEN: usize = 12 + MICROS_DIGITS + 1 + 12;

/// Why a string is not a queue ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueueIdError {
    /// The string is empty.
    #[error("empty queue ID")]
    Empty,
    /// The string is longer than [`MAX_LEN`] octets.
    #[error("queue ID is {len} characters long, the limit is {MAX_LEN}")]
    TooLong {
        /// Length of the rejected string in octets.
        len: usize,
    },
    /// A character outside the queue ID alphabet, for example a `/`, a `.`
    /// or a vowel.
    #[error("invalid character {ch:?} at position {position} of queue ID")]
    InvalidCharacter {
        /// The offending character.
        ch: char,
        /// Its byte offset in the string.
        position: usize,
    },
    /// No `z` separates the time from the uniquifier, or nothing follows
    /// it. Postfix's short hexadecimal IDs end up here too: only long IDs
    /// are supported.
    #[error("queue ID has no uniquifier after the 'z' separator")]
    MissingUniquifier,
    /// The time part is shorter than [`MIN_SECONDS_DIGITS`] +
    /// [`MICROS_DIGITS`] digits.
    #[error("queue ID time part is too short")]
    TimeTooShort,
    /// The microseconds field decodes to one million or more.
    #[error("queue ID microseconds field is out of range")]
    MicrosOutOfRange,
    /// The seconds or the uniquifier do not fit in 64 bits.
    #[error("queue ID field does not fit in 64 bits")]
    Overflow,
}

/// A queue ID: a short, file-name safe, unique name for one message.
///
/// It is `Copy` and needs no allocation. Two IDs compare as their strings
/// do; for IDs made by one [`QueueIdGenerator`] that is creation order.
#[derive(Clone, Copy)]
pub struct QueueId {
    bytes: [u8; MAX_LEN],
    len: u8,
    seconds: u64,
    micros: u32,
    uniquifier: u64,
}

impl QueueId {
    /// Builds the ID for a creation time and a uniquifier.
    ///
    /// `micros` above 999 999 are reduced modulo one million; use
    /// [`QueueIdGenerator`] to get IDs that are guaranteed unique.
    pub fn from_parts(seconds: u64, micros: u32, uniquifier: u64) -> Self {
        let micros = micros % 1_000_000;
        let mut id = QueueId {
            bytes: [0; MAX_LEN],
            len: 0,
            seconds,
            micros,
            uniquifier,
        };
        id.push_number(seconds, TIME_RADIX, MIN_SECONDS_DIGITS);
        id.push_number(u64::from(micros), TIME_RADIX, MICROS_DIGITS);
        id.push(SEPARATOR as u8);
        id.push_number(uniquifier, UNIQUIFIER_RADIX, 1);
        id
    }

    /// Parses and validates an ID, for example a queue file name.
    ///
    /// The string is kept as it is, so [`QueueId::as_str`] gives back
    /// exactly the file name that was read.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_core::queue_id::{QueueId, QueueIdError};
    ///
    /// let id = QueueId::parse("4Xk9Ls1Bcdzb3")?;
    /// assert_eq!(id.as_str(), "4Xk9Ls1Bcdzb3");
    /// assert!(QueueId::parse("../etc").is_err());
    /// assert!(QueueId::parse("C3CD21F3E90").is_err()); // short form
    /// # Ok::<(), QueueIdError>(())
    /// ```
    pub fn parse(s: &str) -> Result<Self, QueueIdError> {
        let raw = s.as_bytes();
        if raw.is_empty() {
            return Err(QueueIdError::Empty);
        }
        if raw.len() > MAX_LEN {
            return Err(QueueIdError::TooLong { len: raw.len() });
        }
        for (position, &b) in raw.iter().enumerate() {
            if digit_value(b).is_none() {
                // A non-ASCII byte is reported as the whole character.
                let ch = s[position..].chars().next().unwrap_or('\u{fffd}');
                return Err(QueueIdError::InvalidCharacter { ch, position });
            }
        }
        // The uniquifier never contains the separator, so the last one is it.
        let sep = raw
            .iter()
            .rposition(|&b| b == SEPARATOR as u8)
            .ok_or(QueueIdError::MissingUniquifier)?;
        let (time, uniq) = (&raw[..sep], &raw[sep + 1..]);
        if uniq.is_empty() {
            return Err(QueueIdError::MissingUniquifier);
        }
        if time.len() < MIN_SECONDS_DIGITS + MICROS_DIGITS {
            return Err(QueueIdError::TimeTooShort);
        }
        let (secs, micros) = time.split_at(time.len() - MICROS_DIGITS);
        let seconds = decode(secs, TIME_RADIX)?;
        let micros = decode(micros, TIME_RADIX)?;
        if micros >= 1_000_000 {
            return Err(QueueIdError::MicrosOutOfRange);
        }
        let uniquifier = decode(uniq, UNIQUIFIER_RADIX)?;
        let mut bytes = [0; MAX_LEN];
        bytes[..raw.len()].copy_from_slice(raw);
        Ok(QueueId {
            bytes,
            len: raw.len() as u8,
            seconds,
            micros: micros as u32,
            uniquifier,
        })
    }

    /// The ID as a string (the queue file name).
    pub fn as_str(&self) -> &str {
        // Every byte is from the ASCII alphabet, checked on construction.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }

    /// Creation time: whole seconds since the Unix epoch.
    pub fn seconds(&self) -> u64 {
        self.seconds
    }

    /// Creation time: the microseconds within the second.
    pub fn micros(&self) -> u32 {
        self.micros
    }

    /// Creation time as a duration since the Unix epoch.
    pub fn time(&self) -> Duration {
        Duration::new(self.seconds, self.micros * 1000)
    }

    /// The uniquifier the ID was made with.
    pub fn uniquifier(&self) -> u64 {
        self.uniquifier
    }

    fn push(&mut self, b: u8) {
        self.bytes[usize::from(self.len)] = b;
        self.len += 1;
    }

    /// Appends `value` in `radix`, padded with `0` to `min_digits`.
    fn push_number(&mut self, mut value: u64, radix: u64, min_digits: usize) {
        let mut digits = [0u8; 16];
        let mut n = 0;
        while value > 0 || n < min_digits {
            digits[n] = ALPHABET[(value % radix) as usize];
            value /= radix;
            n += 1;
        }
        for &d in digits[..n].iter().rev() {
            self.push(d);
        }
    }
}

fn digit_value(b: u8) -> Option<u64> {
    ALPHABET.iter().position(|&a| a == b).map(|p| p as u64)
}

fn decode(digits: &[u8], radix: u64) -> Result<u64, QueueIdError> {
    let mut value: u64 = 0;
    for &b in digits {
        // Validated by the caller; a digit beyond the radix (a `z` in the
        // uniquifier cannot occur, it would have been the separator).
        let d = digit_value(b).ok_or(QueueIdError::Overflow)?;
        value = value
            .checked_mul(radix)
            .and_then(|v| v.checked_add(d))
            .ok_or(QueueIdError::Overflow)?;
    }
    Ok(value)
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueId({})", self.as_str())
    }
}

impl PartialEq for QueueId {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for QueueId {}

impl PartialOrd for QueueId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for QueueId {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for QueueId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl FromStr for QueueId {
    type Err = QueueIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        QueueId::parse(s)
    }
}

impl AsRef<str> for QueueId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// Makes queue IDs that are unique and in creation order.
///
/// The generator remembers the time of the last ID it made. When the
/// clock passed in stands still or steps back, it uses that time plus one
/// microsecond instead, so its IDs strictly increase whatever the clock
/// does; the times in the IDs then run ahead of the clock until it
/// catches up. Ordering and uniqueness were chosen over accurate time:
/// the queue relies on both, and the time in an ID is only informative.
///
/// The uniquifier separates the IDs of different generators (another
/// process, or this one before a restart). Postfix uses the queue file's
/// inode number, unique among the files that exist at the same time; a
/// persistent counter works too. After a restart, [`QueueIdGenerator::resume_after`]
/// with the newest ID in the queue keeps order across the restart even
/// if the clock went back meanwhile.
#[derive(Debug, Clone, Default)]
pub struct QueueIdGenerator {
    last: Option<(u64, u32)>,
}

impl QueueIdGenerator {
    /// A generator that has made no ID yet.
    pub const fn new() -> Self {
        QueueIdGenerator { last: None }
    }

    /// A generator whose IDs all sort after `id`.
    pub fn resume_after(id: &QueueId) -> Self {
        QueueIdGenerator {
            last: Some((id.seconds(), id.micros())),
        }
    }

    /// Makes the next ID.
    ///
    /// `now` is the time since the Unix epoch, from the caller's clock
    /// (precision below a microsecond is ignored). `uniquifier` is the
    /// caller's distinguishing number, for example the queue file's inode.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use mta_core::queue_id::QueueIdGenerator;
    ///
    /// let mut ids = QueueIdGenerator::new();
    /// let a = ids.next(Duration::from_secs(1_700_000_100), 1);
    /// // The clock stepped back by a minute.
    /// let b = ids.next(Duration::from_secs(1_700_000_040), 1);
    /// assert!(a < b);
    /// ```
    pub fn next(&mut self, now: Duration, uniquifier: u64) -> QueueId {
        let mut time = (now.as_secs(), now.subsec_micros());
        match self.last {
            Some(last) if time <= last => {
                time = if last.1 < 999_999 {
                    (last.0, last.1 + 1)
                } else {
                    // At u64::MAX seconds the time cannot advance; that is
                    // hundreds of billions of years away.
                    (last.0.saturating_add(1), 0)
                };
            }
            _ => {}
        }
        self.last = Some(time);
        QueueId::from_parts(time.0, time.1, uniquifier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn alphabet_is_ascii_sorted_without_vowels() {
        assert!(ALPHABET.windows(2).all(|w| w[0] < w[1]));
        assert!(!ALPHABET.iter().any(|b| b"AEIOUaeiou".contains(b)));
        assert_eq!(ALPHABET[51], SEPARATOR as u8);
    }

    #[test]
    fn known_values() {
        let id = QueueId::from_parts(0, 0, 0);
        assert_eq!(id.as_str(), "0000000000z0");
        let id = QueueId::from_parts(52, 51, 51);
        assert_eq!(id.as_str(), "000010000zz10");
        // The uniquifier's 'z' is impossible: 50 is the largest digit.
        let id = QueueId::from_parts(1, 999_999, 50);
        assert_eq!(id.micros(), 999_999);
        assert!(id.as_str().ends_with("zy"));
        let parsed = QueueId::parse(id.as_str()).unwrap();
        assert_eq!(parsed.seconds(), 1);
        assert_eq!(parsed.micros(), 999_999);
        assert_eq!(parsed.uniquifier(), 50);
    }

    #[test]
    fn time_digit_z_is_not_the_separator() {
        // 51 seconds encodes as a trailing 'z' in the seconds field.
        let id = QueueId::from_parts(51, 51, 7);
        assert_eq!(id.as_str(), "00000z000zz7");
        let parsed = QueueId::parse(id.as_str()).unwrap();
        assert_eq!(
            (parsed.seconds(), parsed.micros(), parsed.uniquifier()),
            (51, 51, 7)
        );
    }

    #[test]
    fn extreme_values_fit() {
        let id = QueueId::from_parts(u64::MAX, 999_999, u64::MAX);
        assert_eq!(id.as_str().len(), MAX_LEN);
        let parsed = QueueId::parse(id.as_str()).unwrap();
        assert_eq!(parsed.seconds(), u64::MAX);
        assert_eq!(parsed.uniquifier(), u64::MAX);
    }

    #[test]
    fn rejects_bad_names() {
        use QueueIdError::*;
        assert_eq!(QueueId::parse(""), Err(Empty));
        assert_eq!(QueueId::parse(&"1".repeat(30)), Err(TooLong { len: 30 }));
        assert_eq!(
            QueueId::parse("0000000000z/"),
            Err(InvalidCharacter {
                ch: '/',
                position: 11
            })
        );
        assert!(matches!(
            QueueId::parse("000000000.z1"),
            Err(InvalidCharacter { ch: '.', .. })
        ));
        assert!(matches!(
            QueueId::parse("00000000a0z1"),
            Err(InvalidCharacter { ch: 'a', .. })
        ));
        assert!(matches!(
            QueueId::parse("0000000é0z1"),
            Err(InvalidCharacter { ch: 'é', .. })
        ));
        assert_eq!(
            QueueId::parse("C3CD21F3E90"),
            Err(InvalidCharacter {
                ch: 'E',
                position: 8
            })
        );
        assert_eq!(QueueId::parse("C3CD21F3B90"), Err(MissingUniquifier));
        assert_eq!(QueueId::parse("0000000000z"), Err(MissingUniquifier));
        assert_eq!(QueueId::parse("000000000z1"), Err(TimeTooShort));
        // 'zzzz' is 7 311 615 microseconds.
        assert_eq!(QueueId::parse("000000zzzzz1"), Err(MicrosOutOfRange));
        assert_eq!(QueueId::parse("zzzzzzzzzzzz0000z1"), Err(Overflow));
        assert_eq!(QueueId::parse("0000000000zyyyyyyyyyyyyy"), Err(Overflow));
    }

    #[test]
    fn postfix_example_parses() {
        // The example in postconf(5), enable_long_queue_ids.
        let id = QueueId::parse("3Pt2mN2VXxznjll").unwrap();
        assert_eq!(id.as_str(), "3Pt2mN2VXxznjll");
        assert!(id.micros() < 1_000_000);
    }

    #[test]
    fn clock_standing_still_and_stepping_back() {
        let mut g = QueueIdGenerator::new();
        let t = Duration::new(1_700_000_000, 999_999_000);
        let a = g.next(t, 9);
        let b = g.next(t, 9);
        let c = g.next(Duration::from_secs(5), 9);
        assert!(a < b && b < c);
        assert_eq!((b.seconds(), b.micros()), (1_700_000_001, 0));
        assert_eq!((c.seconds(), c.micros()), (1_700_000_001, 1));
        let mut resumed = QueueIdGenerator::resume_after(&c);
        assert!(resumed.next(Duration::ZERO, 0) > c);
    }

    proptest! {
        #[test]
        fn parse_display_round_trip(secs in any::<u64>(), micros in 0u32..1_000_000, u in any::<u64>()) {
            let id = QueueId::from_parts(secs, micros, u);
            let parsed = QueueId::parse(&format!("{id}")).unwrap();
            prop_assert_eq!(parsed, id);
            prop_assert_eq!(parsed.seconds(), secs);
            prop_assert_eq!(parsed.micros(), micros);
            prop_assert_eq!(parsed.uniquifier(), u);
            prop_assert!(!id.as_str().contains(['/', '.']));
        }

        #[test]
        fn generator_is_ordered_and_unique(
            start in 0u64..(52u64.pow(6) - 1_000_000),
            steps in proptest::collection::vec((-5_000_000i64..5_000_000, any::<u64>()), 1..200),
        ) {
            let mut g = QueueIdGenerator::new();
            let mut clock = i128::from(start) * 1_000_000;
            let mut seen = HashSet::new();
            let mut previous: Option<QueueId> = None;
            for (step, uniquifier) in steps {
                clock = (clock + i128::from(step)).max(0);
                let now = Duration::from_micros(clock as u64);
                let id = g.next(now, uniquifier);
                prop_assert!(seen.insert(id));
                if let Some(p) = previous {
                    prop_assert!(p < id, "{} !< {}", p, id);
                    prop_assert!(p.time() < id.time());
                }
                // Never earlier than the clock (which has microsecond precision here).
                prop_assert!(id.time() >= now);
                previous = Some(id);
            }
        }

        #[test]
        fn string_order_is_time_order(
            a in (0u64..52u64.pow(6), 0u32..1_000_000, any::<u64>()),
            b in (0u64..52u64.pow(6), 0u32..1_000_000, any::<u64>()),
        ) {
            let ia = QueueId::from_parts(a.0, a.1, a.2);
            let ib = QueueId::from_parts(b.0, b.1, b.2);
            if (a.0, a.1) != (b.0, b.1) {
                prop_assert_eq!(ia.cmp(&ib), (a.0, a.1).cmp(&(b.0, b.1)));
            }
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = QueueId::parse(&s);
        }
    }
}

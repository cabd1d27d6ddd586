//! RFC 5321 mail addresses: reverse paths (`MAIL FROM`), forward paths
//! (`RCPT TO`), mailboxes, local parts and domains.
//!
//! # What this module does
//!
//! It turns the argument of `MAIL FROM:` or `RCPT TO:` into typed values
//! ([`ReversePath`], [`MailAddress`], [`LocalPart`], [`Domain`]) and renders
//! them back, quoting the local part only when it has to (the way Postfix's
//! `quote_822_local` does). It splits address extensions with a
//! [`RecipientDelimiter`] and gives the lower-case keys that Postfix uses
//! for table lookups.
//!
//! A [`LocalPart`] holds the *internal* (unquoted) form: `"a b"@example.com`
//! and `a\ b@example.com` have the same local part `a b`, and
//! `"abc"@example.com` equals `abc@example.com`, as RFC 5321 section 2.4
//! says they are the same mailbox. A [`Domain`] holds only its lower-case
//! canonical form; address literals are validated as IPv4 or IPv6 addresses
//! and stored in one canonical spelling (`[IPv6:2001:db8::1]`).
//!
//! # Two modes, as Postfix has them
//!
//! [`Strictness::Strict`] is Postfix's `strict_rfc821_envelopes = yes`,
//! tightened to the RFC 5321 grammar:
//!
//! * the path must be enclosed in `<` `>`, with nothing inside but the
//!   path: no white space, no comments;
//! * the local part is a `Dot-string` (no leading, trailing or doubled dot)
//!   or one `Quoted-string`;
//! * a mailbox needs a domain, except `RCPT TO:<Postmaster>` (RFC 5321
//!   section 4.1.1.3);
//! * domain labels are letters, digits and inner hyphens; no trailing dot.
//!
//! [`Strictness::Lenient`] is Postfix's default (`strict_rfc821_envelopes =
//! no`): "accepts RFC 822 syntax", narrowed to what Postfix's SMTP server
//! really accepts (checked against Postfix 3.7's `smtpd`) and safe. On top of
//! the strict grammar it accepts:
//!
//! * a path without angle brackets (`MAIL FROM:user@example.com SIZE=10`);
//!   it ends at the first space or tab outside quotes;
//! * white space and RFC 822 comments between the tokens inside the
//!   brackets (`< user @ example.com (office) >`), and comments (but not
//!   white space) between the tokens of an unbracketed path;
//! * a comment directly after the closing `>` (`<a@example.com>(c)`);
//!   outside the brackets a comment ends at white space like everything
//!   else (an error), and no comment may hold `<`, `>` or an unescaped
//!   `"`, as Postfix finds the path's brackets and quotes before it reads
//!   comments;
//! * obsolete local parts: dots at the start, the end or doubled
//!   (`john..doe`), words mixing atoms and quoted strings (`"a".b`), and
//!   backslash escapes outside quotes (`a\ b`); they render quoted
//!   (`"john..doe"@example.com`);
//! * a local part without a domain (`<user>`), which trivial-rewrite later
//!   completes;
//! * one trailing dot after the domain (`user@example.com.`), dropped, as
//!   ADDRESS_REWRITING_README describes; two trailing dots are an error;
//! * `_` in domain labels.
//!
//! # Where this is stricter than Postfix, on purpose
//!
//! Postfix's SMTP server checks little more than the token structure and
//! leaves the rest to trivial-rewrite, which flags bad addresses later
//! ("Bad recipient address syntax"). Here every mode rejects, at once and
//! with an error naming the problem: invalid address literals (`[300.1.1.1]`,
//! `[foo]`), empty or hyphen-edged labels, an empty domain (`user@`), an
//! unquoted `@` in the local part (`a@b@example.com`, the backup-MX relay
//! trick that `resolve_dequoted_address` guards against), RFC 822 phrases
//! before the path (`John <john@example.com>`, which Postfix also refuses),
//! unbalanced comments, extra angle brackets (`<<a@b>>`, `<a@b>>`) and list
//! punctuation after the path (`<a@b>,`). 8-bit text is an error unless the
//! caller says that SMTPUTF8 is in effect for the transaction
//! ([`ParseOptions::smtputf8`]); Postfix accepts it whenever
//! `smtputf8_enable = yes`. In strict mode, Postfix accepts obsolete dots,
//! white space inside the brackets and `<user>` without a domain; this
//! module does not.
//!
//! # Limits
//!
//! The lengths of RFC 5321 section 4.5.3.1 are enforced on the rendered
//! form (quotes included) and, for the path, also on the text as received:
//! [`MAX_LOCAL_PART_LEN`], [`MAX_DOMAIN_LEN`], [`MAX_PATH_LEN`], plus the DNS
//! label limit [`MAX_LABEL_LEN`]. All lengths are in octets, so UTF-8 text
//! counts its encoded bytes.
//!
//! # What this module does not do
//!
//! It does not split ESMTP parameters (the `*_prefix` parsers return the
//! text after the path for the SMTP layer to parse), does no IDNA
//! processing (no Punycode conversion, no Unicode normalisation: `bücher`
//! and `xn--bcher-kva` are different domains here), does no DNS, and does
//! not rewrite addresses (see [`crate::address_class`]).
//!
//! # Example
//!
//! ```
//! use mta_core::address::{MailAddress, ParseOptions, ReversePath};
//!
//! let (sender, params) =
//!     ReversePath::parse_prefix("<Joe@Example.COM> SIZE=1024", ParseOptions::LENIENT)?;
//! assert_eq!(sender.to_string(), "<Joe@example.com>");
//! assert_eq!(params, "SIZE=1024");
//!
//! let rcpt = MailAddress::parse_forward_path("<\"joe smith\"@example.com>", ParseOptions::STRICT)?;
//! assert_eq!(rcpt.local_part().as_str(), "joe smith");
//! assert_eq!(rcpt.to_string(), "\"joe smith\"@example.com");
//! # Ok::<(), mta_core::address::AddressError>(())
//! ```

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The longest local part, in octets of its rendered (quoted if needed)
/// form: RFC 5321 section 4.5.3.1.1.
pub const MAX_LOCAL_PART_LEN: usize = 64;

/// The longest domain, in octets: RFC 5321 section 4.5.3.1.2.
pub const MAX_DOMAIN_LEN: usize = 255;

/// The longest reverse or forward path, in octets, "including the
/// punctuation and element separators" (the angle brackets and any source
/// route): RFC 5321 section 4.5.3.1.3.
pub const MAX_PATH_LEN: usize = 256;

/// The longest label of a domain name, in octets: RFC 1035 section 2.3.4.
/// Checked for ASCII labels only; a UTF-8 label's limit applies to its
/// A-label, which this module does not compute.
pub const MAX_LABEL_LEN: usize = 63;

/// The tag of an IPv6 address literal, RFC 5321 section 4.1.3, in the
/// spelling used when rendering (it is matched case-insensitively).
const IPV6_TAG: &str = "IPv6:";

/// The local part that RFC 5321 section 4.1.1.3 allows without a domain in
/// `RCPT TO:<Postmaster>` (compared case-insensitively).
const POSTMASTER: &str = "postmaster";

/// Why an address could not be parsed or built.
///
/// Positions are byte offsets into the text given to the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The argument is empty or holds only white space.
    #[error("no address given")]
    Empty,
    /// Strict mode: the path does not start with `<`.
    #[error("address at offset {position} is not enclosed in <>")]
    MissingAngleBrackets {
        /// Where the path starts.
        position: usize,
    },
    /// A `<` opens the path but no `>` closes it.
    #[error("the < at offset {position} is not closed by >")]
    UnclosedAngleBracket {
        /// Where the `<` is.
        position: usize,
    },
    /// A character the grammar does not allow where it appears, such as a
    /// control character, a space in an unquoted local part or a `,`.
    #[error("unexpected character {ch:?} at offset {position}")]
    UnexpectedChar {
        /// The character.
        ch: char,
        /// Where it is.
        position: usize,
    },
    /// Text follows the path without white space in between
    /// (`<a@example.com>junk`), or, for the parsers of a whole argument,
    /// anything but white space follows it.
    #[error("unexpected text after the address at offset {position}")]
    TrailingJunk {
        /// Where the text starts.
        position: usize,
    },
    /// A quoted string is not closed.
    #[error("the quoted string at offset {position} is not closed")]
    UnbalancedQuote {
        /// Where the opening `"` is.
        position: usize,
    },
    /// Lenient mode: a comment is not closed.
    #[error("the comment at offset {position} is not closed")]
    UnbalancedComment {
        /// Where the opening `(` is.
        position: usize,
    },
    /// A backslash is followed by nothing or by a character that cannot be
    /// escaped (RFC 5321 `quoted-pairSMTP` allows only printable ASCII and
    /// space).
    #[error("bad backslash escape at offset {position}")]
    BadQuotedPair {
        /// Where the backslash is.
        position: usize,
    },
    /// There is no local part where one is needed (`<@example.com>` is
    /// read as an unfinished source route instead).
    #[error("missing local part at offset {position}")]
    MissingLocalPart {
        /// Where the local part should start.
        position: usize,
    },
    /// Strict mode: an unquoted local part starts or ends with a dot or has
    /// two dots in a row; RFC 5321 allows that only inside quotes.
    #[error("misplaced dot in the local part at offset {position}")]
    MisplacedDot {
        /// Where the dot (or the gap after it) is.
        position: usize,
    },
    /// The mailbox has no `@domain`: always an error in strict mode except
    /// for `RCPT TO:<Postmaster>`, and for strict [`MailAddress::parse`].
    #[error("address at offset {position} has no domain")]
    MissingDomain {
        /// Where the domain should start.
        position: usize,
    },
    /// An `@` is followed by nothing that can be a domain (`user@`).
    #[error("empty domain at offset {position}")]
    EmptyDomain {
        /// Where the domain should start.
        position: usize,
    },
    /// A domain name has an empty label: a leading dot, two dots in a row,
    /// a trailing dot in strict mode or two trailing dots in lenient mode.
    #[error("empty label in the domain at offset {position}")]
    EmptyLabel {
        /// Where the empty label is.
        position: usize,
    },
    /// A domain label starts or ends with a hyphen (RFC 5321 `sub-domain`).
    #[error("domain label at offset {position} starts or ends with a hyphen")]
    HyphenAtLabelEdge {
        /// Where the label starts.
        position: usize,
    },
    /// An ASCII domain label is longer than [`MAX_LABEL_LEN`].
    #[error("domain label is {len} octets long, the limit is {max} (RFC 1035 section 2.3.4)")]
    LabelTooLong {
        /// The label's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An address literal is not closed, or is not a valid IPv4 address or
    /// `IPv6:` address (RFC 5321 section 4.1.3; general literals with other
    /// tags have no registered tag and are refused).
    #[error("bad address literal at offset {position}")]
    BadDomainLiteral {
        /// Where the `[` is.
        position: usize,
    },
    /// A source route (`@a,@b:`) is malformed: a missing `:` or `,`, or a
    /// route without a mailbox after it.
    #[error("bad source route at offset {position}")]
    BadSourceRoute {
        /// Where the problem is.
        position: usize,
    },
    /// The null path `<>` was given where a forward path is needed
    /// (`RCPT TO:<>`).
    #[error("the null path <> is not allowed here")]
    NullPathNotAllowed,
    /// A non-ASCII character appears but the caller did not say that
    /// SMTPUTF8 is in effect (RFC 6531 section 3.2).
    #[error("8-bit character at offset {position} without SMTPUTF8")]
    EightBitWithoutSmtputf8 {
        /// Where the character is.
        position: usize,
    },
    /// The local part, rendered, is longer than [`MAX_LOCAL_PART_LEN`].
    #[error("local part is {len} octets long, the limit is {max} (RFC 5321 section 4.5.3.1.1)")]
    LocalPartTooLong {
        /// The rendered length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The domain is longer than [`MAX_DOMAIN_LEN`].
    #[error("domain is {len} octets long, the limit is {max} (RFC 5321 section 4.5.3.1.2)")]
    DomainTooLong {
        /// The length of the canonical domain.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The path, as received or as rendered, is longer than
    /// [`MAX_PATH_LEN`].
    #[error("path is {len} octets long, the limit is {max} (RFC 5321 section 4.5.3.1.3)")]
    PathTooLong {
        /// The longer of the received and the rendered length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// How closely the parser holds to RFC 5321: Postfix's
/// `strict_rfc821_envelopes`. See the module documentation for what each
/// mode accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Strictness {
    /// `strict_rfc821_envelopes = yes`: angle brackets required, RFC 5321
    /// syntax only.
    Strict,
    /// `strict_rfc821_envelopes = no` (Postfix's default): missing brackets,
    /// comments, obsolete local parts and a trailing dot are accepted.
    #[default]
    Lenient,
}

/// What the parser accepts: the mode, and whether 8-bit text is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ParseOptions {
    /// Strict or lenient syntax.
    pub strictness: Strictness,
    /// SMTPUTF8 is in effect (RFC 6531): UTF-8 is allowed in local parts and
    /// domain labels. Without it any non-ASCII character is an error.
    pub smtputf8: bool,
}

impl ParseOptions {
    /// Strict syntax, ASCII only.
    pub const STRICT: ParseOptions = ParseOptions {
        strictness: Strictness::Strict,
        smtputf8: false,
    };

    /// Lenient syntax (Postfix's default), ASCII only.
    pub const LENIENT: ParseOptions = ParseOptions {
        strictness: Strictness::Lenient,
        smtputf8: false,
    };

    /// The options for a given `strict_rfc821_envelopes` value, ASCII only.
    pub const fn from_strict_rfc821_envelopes(strict: bool) -> ParseOptions {
        if strict {
            ParseOptions::STRICT
        } else {
            ParseOptions::LENIENT
        }
    }

    /// The same options with SMTPUTF8 turned on or off.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_core::address::{MailAddress, ParseOptions};
    ///
    /// assert!(MailAddress::parse("jörg@example.com", ParseOptions::STRICT).is_err());
    /// let opts = ParseOptions::STRICT.with_smtputf8(true);
    /// assert!(MailAddress::parse("jörg@example.com", opts).is_ok());
    /// ```
    pub const fn with_smtputf8(self, smtputf8: bool) -> ParseOptions {
        ParseOptions {
            strictness: self.strictness,
            smtputf8,
        }
    }

    fn is_lenient(self) -> bool {
        self.strictness == Strictness::Lenient
    }
}

/// The local part of a mailbox, in internal (unquoted) form.
///
/// It may hold any printable ASCII character and space, and non-ASCII
/// characters other than control characters; never a control character.
/// Its rendered form is at most [`MAX_LOCAL_PART_LEN`] octets. Comparison is
/// exact (case-sensitive), as RFC 5321 section 2.4 requires of the local
/// part; use [`LocalPart::lookup_key`] for Postfix's case-folded lookups.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalPart(String);

impl LocalPart {
    /// A local part from its internal (unquoted) text.
    ///
    /// # Errors
    ///
    /// [`AddressError::UnexpectedChar`] for a control character,
    /// [`AddressError::LocalPartTooLong`] when the rendered form is too long.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_core::address::LocalPart;
    ///
    /// let lp = LocalPart::new("john smith")?;
    /// assert_eq!(lp.render(), "\"john smith\"");
    /// assert_eq!(LocalPart::new("john.smith")?.render(), "john.smith");
    /// # Ok::<(), mta_core::address::AddressError>(())
    /// ```
    pub fn new(text: impl Into<String>) -> Result<LocalPart, AddressError> {
        let text = text.into();
        if let Some((position, ch)) = text.char_indices().find(|(_, c)| c.is_control()) {
            return Err(AddressError::UnexpectedChar { ch, position });
        }
        LocalPart::checked(text)
    }

    /// Builds a local part whose characters are already known to be valid,
    /// checking only the length.
    fn checked(text: String) -> Result<LocalPart, AddressError> {
        let len = rendered_local_len(&text);
        if len > MAX_LOCAL_PART_LEN {
            return Err(AddressError::LocalPartTooLong {
                len,
                max: MAX_LOCAL_PART_LEN,
            });
        }
        Ok(LocalPart(text))
    }

    /// The internal (unquoted) text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the text must be quoted to be a valid RFC 5321 local part:
    /// it is empty, is not a `Dot-string` of atoms, or holds a character
    /// outside `atext` (RFC 5322 section 3.2.3, extended with UTF-8 by RFC
    /// 6531 section 3.3; non-ASCII white space is quoted too).
    pub fn needs_quoting(&self) -> bool {
        needs_quoting(&self.0)
    }

    /// The external form: the text itself when it is a valid `Dot-string`,
    /// otherwise a quoted string with `"` and `\` escaped.
    pub fn render(&self) -> Cow<'_, str> {
        if !self.needs_quoting() {
            return Cow::Borrowed(&self.0);
        }
        let mut out = String::with_capacity(self.0.len() + 4);
        out.push('"');
        for c in self.0.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        Cow::Owned(out)
    }

    /// Whether the text is ASCII only (if not, the address needs SMTPUTF8).
    pub fn is_ascii(&self) -> bool {
        self.0.is_ascii()
    }

    /// The key Postfix uses to look the local part up in tables: the
    /// internal form, lower-cased. Postfix folds ASCII, and with SMTPUTF8
    /// uses Unicode case folding; this uses Unicode lower-casing, which
    /// agrees with it for all but a few characters (such as `ß`).
    pub fn lookup_key(&self) -> String {
        self.0.to_lowercase()
    }

    /// Splits the address extension off, see [`RecipientDelimiter::split`].
    pub fn split_extension<'a>(&'a self, delimiter: &RecipientDelimiter) -> Option<Extension<'a>> {
        delimiter.split(&self.0)
    }
}

impl fmt::Display for LocalPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

impl FromStr for LocalPart {
    type Err = AddressError;

    /// Same as [`LocalPart::new`]: the text is taken as the internal form.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LocalPart::new(s)
    }
}

/// `atext` of RFC 5322 section 3.2.3, ASCII part.
fn is_atext_ascii(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

/// The non-ASCII characters allowed unquoted (RFC 6531 `UTF8-non-ascii`),
/// minus control characters and white space, which would make addresses
/// that look like something else.
fn is_utf8_text(c: char) -> bool {
    !c.is_ascii() && !c.is_control() && !c.is_whitespace()
}

fn needs_quoting(text: &str) -> bool {
    if text.is_empty() || text.starts_with('.') || text.ends_with('.') || text.contains("..") {
        return true;
    }
    !text
        .chars()
        .all(|c| c == '.' || is_atext_ascii(c) || is_utf8_text(c))
}

fn rendered_local_len(text: &str) -> usize {
    if needs_quoting(text) {
        2 + text.len() + text.chars().filter(|&c| c == '"' || c == '\\').count()
    } else {
        text.len()
    }
}

/// A domain: a domain name or an address literal, in lower-case canonical
/// form.
///
/// Equality, ordering and hashing use the canonical form, so they are
/// case-insensitive with respect to the text that was parsed. Address
/// literals are stored as `[192.0.2.1]` and `[IPv6:2001:db8::1]` (RFC 5952
/// spelling of the address). Names are at most [`MAX_DOMAIN_LEN`] octets,
/// ASCII labels at most [`MAX_LABEL_LEN`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain {
    canonical: String,
    literal: Option<IpAddr>,
}

impl Domain {
    /// Parses a domain name or address literal; the whole input must be
    /// the domain.
    ///
    /// # Errors
    ///
    /// The [`AddressError`] that names the problem.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_core::address::{Domain, ParseOptions};
    ///
    /// let d = Domain::parse("Mail.Example.COM", ParseOptions::STRICT)?;
    /// assert_eq!(d.as_str(), "mail.example.com");
    /// let lit = Domain::parse("[IPv6:2001:DB8:0:0::1]", ParseOptions::STRICT)?;
    /// assert_eq!(lit.as_str(), "[IPv6:2001:db8::1]");
    /// assert!(lit.address_literal().is_some());
    /// # Ok::<(), mta_core::address::AddressError>(())
    /// ```
    pub fn parse(input: &str, opts: ParseOptions) -> Result<Domain, AddressError> {
        if input.is_empty() {
            return Err(AddressError::Empty);
        }
        let mut sc = Scanner::new(input, opts);
        let domain = sc.parse_domain()?;
        if !sc.at_end() {
            return Err(AddressError::TrailingJunk { position: sc.pos });
        }
        Ok(domain)
    }

    /// The address literal for an IP address.
    pub fn from_ip(ip: IpAddr) -> Domain {
        let canonical = match ip {
            IpAddr::V4(v4) => format!("[{v4}]"),
            IpAddr::V6(v6) => format!("[{IPV6_TAG}{v6}]"),
        };
        Domain {
            canonical,
            literal: Some(ip),
        }
    }

    /// Builds a domain name from syntactically valid text, lower-casing it
    /// and checking the lengths.
    fn from_name(name: &str) -> Result<Domain, AddressError> {
        let canonical = if name.is_ascii() {
            name.to_ascii_lowercase()
        } else {
            name.to_lowercase()
        };
        if canonical.len() > MAX_DOMAIN_LEN {
            return Err(AddressError::DomainTooLong {
                len: canonical.len(),
                max: MAX_DOMAIN_LEN,
            });
        }
        if let Some(label) = canonical
            .split('.')
            .find(|l| l.is_ascii() && l.len() > MAX_LABEL_LEN)
        {
            return Err(AddressError::LabelTooLong {
                len: label.len(),
                max: MAX_LABEL_LEN,
            });
        }
        Ok(Domain {
            canonical,
            literal: None,
        })
    }

    /// The canonical text: a lower-case name, or a literal in brackets.
    pub fn as_str(&self) -> &str {
        &self.canonical
    }

    /// The IP address of an address literal; `None` for a name.
    pub fn address_literal(&self) -> Option<IpAddr> {
        self.literal
    }

    /// Whether this is an address literal (`[192.0.2.1]`).
    pub fn is_address_literal(&self) -> bool {
        self.literal.is_some()
    }

    /// Whether the domain is ASCII only (if not, it needs SMTPUTF8).
    pub fn is_ascii(&self) -> bool {
        self.canonical.is_ascii()
    }

    /// The labels of a name, left to right; nothing for a literal.
    pub fn labels(&self) -> impl Iterator<Item = &str> + '_ {
        let name = if self.literal.is_some() {
            ""
        } else {
            self.canonical.as_str()
        };
        name.split('.').filter(|l| !l.is_empty())
    }

    /// Whether this name is a proper subdomain of `parent`
    /// (`a.example.com` of `example.com`, not `example.com` itself).
    /// Always false for address literals.
    pub fn is_subdomain_of(&self, parent: &Domain) -> bool {
        if self.literal.is_some() || parent.literal.is_some() {
            return false;
        }
        let (me, p) = (self.canonical.as_str(), parent.canonical.as_str());
        me.len() > p.len() + 1 && me.ends_with(p) && me.as_bytes()[me.len() - p.len() - 1] == b'.'
    }

    /// The name without its first label (`example.com` for
    /// `mail.example.com`); `None` for a single label or a literal.
    pub fn parent(&self) -> Option<Domain> {
        if self.literal.is_some() {
            return None;
        }
        let (_, rest) = self.canonical.split_once('.')?;
        Some(Domain {
            canonical: rest.to_owned(),
            literal: None,
        })
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

impl FromStr for Domain {
    type Err = AddressError;

    /// Parses leniently with UTF-8 allowed: the form for configuration
    /// values such as `myhostname`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Domain::parse(s, ParseOptions::LENIENT.with_smtputf8(true))
    }
}

/// Parses the inside of an address literal (without the brackets).
fn parse_literal_text(text: &str) -> Option<IpAddr> {
    if text.len() > IPV6_TAG.len()
        && text.is_char_boundary(IPV6_TAG.len())
        && text[..IPV6_TAG.len()].eq_ignore_ascii_case(IPV6_TAG)
    {
        return Ipv6Addr::from_str(&text[IPV6_TAG.len()..])
            .ok()
            .map(IpAddr::V6);
    }
    parse_ipv4_snum(text).map(IpAddr::V4)
}

/// RFC 5321 `IPv4-address-literal`: four `Snum`s of one to three digits,
/// each at most 255. Leading zeros are allowed by the grammar and are
/// dropped in the canonical form.
fn parse_ipv4_snum(text: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *octet = part.parse::<u8>().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

/// A mailbox: a local part and, except for unqualified addresses, a domain.
///
/// Unqualified addresses (no domain) come from lenient parsing,
/// `RCPT TO:<Postmaster>`, or are built by the caller; trivial-rewrite
/// completes them (see [`crate::address_class::rewrite`]). The rendered
/// path `<local@domain>` is at most [`MAX_PATH_LEN`] octets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailAddress {
    local: LocalPart,
    domain: Option<Domain>,
}

impl MailAddress {
    /// A mailbox from its parts.
    ///
    /// # Errors
    ///
    /// [`AddressError::PathTooLong`] when `<local@domain>` would be longer
    /// than [`MAX_PATH_LEN`].
    pub fn new(local: LocalPart, domain: Option<Domain>) -> Result<MailAddress, AddressError> {
        let len = 2
            + rendered_local_len(local.as_str())
            + domain.as_ref().map_or(0, |d| 1 + d.as_str().len());
        if len > MAX_PATH_LEN {
            return Err(AddressError::PathTooLong {
                len,
                max: MAX_PATH_LEN,
            });
        }
        Ok(MailAddress { local, domain })
    }

    /// Parses a bare mailbox, `local@domain`, with no angle brackets and no
    /// source route; the whole input must be the mailbox. In strict mode
    /// the domain is required; in lenient mode `user` alone is accepted.
    ///
    /// # Errors
    ///
    /// The [`AddressError`] that names the problem.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_core::address::{MailAddress, ParseOptions};
    ///
    /// let a = MailAddress::parse("john..doe@example.com.", ParseOptions::LENIENT)?;
    /// assert_eq!(a.to_string(), "\"john..doe\"@example.com");
    /// assert!(MailAddress::parse("john..doe@example.com", ParseOptions::STRICT).is_err());
    /// # Ok::<(), mta_core::address::AddressError>(())
    /// ```
    pub fn parse(input: &str, opts: ParseOptions) -> Result<MailAddress, AddressError> {
        if input.is_empty() {
            return Err(AddressError::Empty);
        }
        let mut sc = Scanner::new(input, opts);
        let mailbox = sc.parse_mailbox(MailboxContext::Mailbox)?;
        sc.skip_cfws()?;
        if !sc.at_end() {
            return Err(AddressError::TrailingJunk { position: sc.pos });
        }
        Ok(mailbox)
    }

    /// Parses the whole argument of `RCPT TO:` (the text after the colon):
    /// a forward path, optionally followed by white space.
    ///
    /// # Errors
    ///
    /// The [`AddressError`] that names the problem;
    /// [`AddressError::NullPathNotAllowed`] for `<>`;
    /// [`AddressError::TrailingJunk`] if anything follows the path.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_core::address::{MailAddress, ParseOptions};
    ///
    /// let pm = MailAddress::parse_forward_path("<Postmaster>", ParseOptions::STRICT)?;
    /// assert!(pm.domain().is_none());
    /// let routed = MailAddress::parse_forward_path("<@relay.example:joe@example.com>", ParseOptions::STRICT)?;
    /// assert_eq!(routed.to_string(), "joe@example.com");
    /// # Ok::<(), mta_core::address::AddressError>(())
    /// ```
    pub fn parse_forward_path(arg: &str, opts: ParseOptions) -> Result<MailAddress, AddressError> {
        let (mailbox, rest) = MailAddress::parse_forward_path_prefix(arg, opts)?;
        if !rest.is_empty() {
            return Err(AddressError::TrailingJunk {
                position: arg.len() - rest.len(),
            });
        }
        Ok(mailbox)
    }

    /// Parses a forward path at the start of the `RCPT TO:` argument and
    /// returns it with the rest of the argument (the ESMTP parameters),
    /// leading white space removed.
    ///
    /// # Errors
    ///
    /// As [`MailAddress::parse_forward_path`], except that text after the
    /// path is returned, not refused, when white space separates it.
    pub fn parse_forward_path_prefix(
        arg: &str,
        opts: ParseOptions,
    ) -> Result<(MailAddress, &str), AddressError> {
        match parse_path(arg, opts, MailboxContext::ForwardPath)? {
            (Some(mailbox), rest) => Ok((mailbox, rest)),
            (None, _) => Err(AddressError::NullPathNotAllowed),
        }
    }

    /// The local part.
    pub fn local_part(&self) -> &LocalPart {
        &self.local
    }

    /// The domain; `None` for an unqualified address.
    pub fn domain(&self) -> Option<&Domain> {
        self.domain.as_ref()
    }

    /// The external form, `local@domain`, with the local part quoted if it
    /// needs to be (also what `Display` writes).
    pub fn render(&self) -> String {
        self.to_string()
    }

    /// The path form, `<local@domain>`, as used in SMTP commands.
    pub fn render_path(&self) -> String {
        format!("<{self}>")
    }

    /// The internal form: the local part unquoted, then `@domain`. This is
    /// the form Postfix keeps in queue files and logs.
    pub fn internal_form(&self) -> String {
        match &self.domain {
            Some(d) => format!("{}@{}", self.local.as_str(), d),
            None => self.local.as_str().to_owned(),
        }
    }

    /// The key Postfix looks the address up with: the internal form,
    /// lower-cased.
    pub fn lookup_key(&self) -> String {
        match &self.domain {
            Some(d) => format!("{}@{}", self.local.lookup_key(), d),
            None => self.local.lookup_key(),
        }
    }

    /// Whether the address holds non-ASCII text and so needs SMTPUTF8.
    pub fn needs_smtputf8(&self) -> bool {
        !self.local.is_ascii() || self.domain.as_ref().is_some_and(|d| !d.is_ascii())
    }

    /// Splits the address extension off the local part, see
    /// [`RecipientDelimiter::split`].
    pub fn extension<'a>(&'a self, delimiter: &RecipientDelimiter) -> Option<Extension<'a>> {
        self.local.split_extension(delimiter)
    }

    /// The same address without its extension (`user@example.com` for
    /// `user+foo@example.com`), or `None` when it has none.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_core::address::{MailAddress, RecipientDelimiter};
    ///
    /// let a: MailAddress = "joe+lists@example.com".parse()?;
    /// let plain = a.without_extension(&RecipientDelimiter::new("+")).unwrap();
    /// assert_eq!(plain.to_string(), "joe@example.com");
    /// # Ok::<(), mta_core::address::AddressError>(())
    /// ```
    pub fn without_extension(&self, delimiter: &RecipientDelimiter) -> Option<MailAddress> {
        let ext = self.extension(delimiter)?;
        // A prefix of a valid local part is valid and no longer when
        // rendered, except that it may need quotes the whole did not:
        // fall back to None rather than build an invalid value.
        let local = LocalPart::checked(ext.base.to_owned()).ok()?;
        MailAddress::new(local, self.domain.clone()).ok()
    }

    /// Replaces the domain (used when completing an unqualified address).
    ///
    /// # Errors
    ///
    /// [`AddressError::PathTooLong`] if the result would be too long.
    pub fn with_domain(&self, domain: Option<Domain>) -> Result<MailAddress, AddressError> {
        MailAddress::new(self.local.clone(), domain)
    }
}

impl fmt::Display for MailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.local.render())?;
        if let Some(d) = &self.domain {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for MailAddress {
    type Err = AddressError;

    /// Parses a bare mailbox leniently with UTF-8 allowed: the form for
    /// addresses in configuration and tables.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MailAddress::parse(s, ParseOptions::LENIENT.with_smtputf8(true))
    }
}

/// The reverse path of `MAIL FROM`: the null sender `<>` or a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReversePath {
    /// `<>`: the null reverse path of bounces and other notifications
    /// (RFC 5321 section 4.5.5).
    Null,
    /// A sender mailbox.
    Mailbox(MailAddress),
}

impl ReversePath {
    /// Parses the whole argument of `MAIL FROM:` (the text after the
    /// colon): a reverse path, optionally followed by white space.
    ///
    /// # Errors
    ///
    /// The [`AddressError`] that names the problem;
    /// [`AddressError::TrailingJunk`] if anything follows the path.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_core::address::{ParseOptions, ReversePath};
    ///
    /// assert_eq!(ReversePath::parse("<>", ParseOptions::STRICT)?, ReversePath::Null);
    /// // Postfix's default accepts a missing pair of brackets...
    /// assert!(ReversePath::parse("joe@example.com", ParseOptions::LENIENT).is_ok());
    /// // ...which strict_rfc821_envelopes = yes refuses.
    /// assert!(ReversePath::parse("joe@example.com", ParseOptions::STRICT).is_err());
    /// # Ok::<(), mta_core::address::AddressError>(())
    /// ```
    pub fn parse(arg: &str, opts: ParseOptions) -> Result<ReversePath, AddressError> {
        let (path, rest) = ReversePath::parse_prefix(arg, opts)?;
        if !rest.is_empty() {
            return Err(AddressError::TrailingJunk {
                position: arg.len() - rest.len(),
            });
        }
        Ok(path)
    }

    /// Parses a reverse path at the start of the `MAIL FROM:` argument and
    /// returns it with the rest of the argument (the ESMTP parameters),
    /// leading white space removed.
    ///
    /// # Errors
    ///
    /// As [`ReversePath::parse`], except that text after the path is
    /// returned, not refused, when white space separates it.
    pub fn parse_prefix(
        arg: &str,
        opts: ParseOptions,
    ) -> Result<(ReversePath, &str), AddressError> {
        let (mailbox, rest) = parse_path(arg, opts, MailboxContext::ReversePath)?;
        let path = match mailbox {
            Some(m) => ReversePath::Mailbox(m),
            None => ReversePath::Null,
        };
        Ok((path, rest))
    }

    /// The sender mailbox; `None` for the null path.
    pub fn mailbox(&self) -> Option<&MailAddress> {
        match self {
            ReversePath::Null => None,
            ReversePath::Mailbox(m) => Some(m),
        }
    }

    /// Whether this is the null path `<>`.
    pub fn is_null(&self) -> bool {
        matches!(self, ReversePath::Null)
    }
}

impl fmt::Display for ReversePath {
    /// The path form: `<>` or `<local@domain>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => f.write_str("<>"),
            ReversePath::Mailbox(m) => write!(f, "<{m}>"),
        }
    }
}

/// Postfix's `recipient_delimiter` with the rules that go with it: which
/// characters separate a local part from its extension, and which local
/// parts are never split.
///
/// From postconf(5): the first character of the local part that is in the
/// delimiter set separates it (Postfix 2.11 and later allow several
/// characters); the delimiter is not applied to the mailer-daemon,
/// postmaster and double-bounce addresses; and with `owner_request_special
/// = yes` (the default) `owner-listname` and `listname-request` are not
/// split at the hyphen of `owner-` or `-request`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecipientDelimiter {
    delimiters: String,
    owner_request_special: bool,
    unsplit: Vec<String>,
}

/// Postfix's default names of the local parts that are never split: the
/// postmaster, `empty_address_recipient` (MAILER-DAEMON) and
/// `double_bounce_sender` (double-bounce).
pub const DEFAULT_UNSPLIT_LOCAL_PARTS: [&str; 3] = ["postmaster", "MAILER-DAEMON", "double-bounce"];

impl RecipientDelimiter {
    /// The delimiter set `delimiters` (the `recipient_delimiter` value; empty
    /// means no extensions), with `owner_request_special = yes` and the
    /// [`DEFAULT_UNSPLIT_LOCAL_PARTS`].
    pub fn new(delimiters: &str) -> RecipientDelimiter {
        RecipientDelimiter {
            delimiters: delimiters.to_owned(),
            owner_request_special: true,
            unsplit: DEFAULT_UNSPLIT_LOCAL_PARTS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        }
    }

    /// Sets Postfix's `owner_request_special`.
    pub fn with_owner_request_special(mut self, on: bool) -> RecipientDelimiter {
        self.owner_request_special = on;
        self
    }

    /// Replaces the local parts that are never split (compared
    /// case-insensitively), for sites that changed `empty_address_recipient`
    /// or `double_bounce_sender`.
    pub fn with_unsplit_local_parts<I, S>(mut self, names: I) -> RecipientDelimiter
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.unsplit = names.into_iter().map(Into::into).collect();
        self
    }

    /// The delimiter characters.
    pub fn delimiters(&self) -> &str {
        &self.delimiters
    }

    /// Splits `local` (an internal-form local part) into base and
    /// extension at the first delimiter character.
    ///
    /// `None` when there is no delimiter set, no delimiter in `local`, or
    /// the local part is one that is never split. A delimiter in the first
    /// position is skipped (the base would be empty), and so are the
    /// hyphens of `owner-` and `-request` when `owner_request_special` is
    /// on. The extension may be empty (`user+`).
    ///
    /// # Example
    ///
    /// ```
    /// use mta_core::address::RecipientDelimiter;
    ///
    /// let d = RecipientDelimiter::new("+-");
    /// let e = d.split("joe-work+x").unwrap();
    /// assert_eq!((e.base, e.delimiter, e.extension), ("joe", '-', "work+x"));
    /// assert!(d.split("owner-list").is_none());
    /// assert!(d.split("MAILER-DAEMON").is_none());
    /// ```
    pub fn split<'a>(&self, local: &'a str) -> Option<Extension<'a>> {
        if self.delimiters.is_empty() || self.unsplit.iter().any(|n| n.eq_ignore_ascii_case(local))
        {
            return None;
        }
        let owner_hyphen = (self.owner_request_special
            && local.len() > 6
            && local.is_char_boundary(6)
            && local[..6].eq_ignore_ascii_case("owner-"))
        .then_some(5);
        let request_hyphen = (self.owner_request_special
            && local.len() > 8
            && local.is_char_boundary(local.len() - 8)
            && local[local.len() - 8..].eq_ignore_ascii_case("-request"))
        .then(|| local.len() - 8);
        local
            .char_indices()
            .find(|&(i, c)| {
                i > 0
                    && self.delimiters.contains(c)
                    && !(c == '-' && (Some(i) == owner_hyphen || Some(i) == request_hyphen))
            })
            .map(|(i, c)| Extension {
                base: &local[..i],
                delimiter: c,
                extension: &local[i + c.len_utf8()..],
            })
    }
}

/// A local part split at its recipient delimiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extension<'a> {
    /// The part before the delimiter (`user` in `user+foo`).
    pub base: &'a str,
    /// The delimiter character that was found.
    pub delimiter: char,
    /// The part after the delimiter (`foo` in `user+foo`); may be empty.
    pub extension: &'a str,
}

/// Where a mailbox is parsed: it decides whether a missing domain is
/// allowed in strict mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MailboxContext {
    ReversePath,
    ForwardPath,
    Mailbox,
}

/// Parses a path at the start of `input` and returns the mailbox (`None`
/// for `<>`) and the rest of the input after the path and any white space.
fn parse_path(
    input: &str,
    opts: ParseOptions,
    context: MailboxContext,
) -> Result<(Option<MailAddress>, &str), AddressError> {
    let mut sc = Scanner::new(input, opts);
    // White space between "FROM:" and the path is the command parser's
    // business in Postfix (it splits the command into words), so both modes
    // accept it here.
    sc.skip_blanks();
    sc.skip_cfws()?;
    if sc.at_end() {
        return Err(AddressError::Empty);
    }
    let start = sc.pos;
    let (mailbox, received_len) = if sc.peek() == Some('<') {
        sc.pos += 1;
        sc.spaces_between_tokens = true;
        sc.skip_cfws()?;
        let mailbox = if sc.eat('>') {
            None
        } else {
            if sc.peek() == Some('@') {
                sc.skip_source_route()?;
            }
            let m = sc.parse_mailbox(context)?;
            sc.skip_cfws()?;
            if !sc.eat('>') {
                return Err(match sc.peek() {
                    None => AddressError::UnclosedAngleBracket { position: start },
                    Some(ch) => sc.char_error(ch, sc.pos),
                });
            }
            Some(m)
        };
        sc.spaces_between_tokens = false;
        (mailbox, sc.pos - start)
    } else {
        if !opts.is_lenient() {
            return Err(AddressError::MissingAngleBrackets { position: start });
        }
        if sc.peek() == Some('@') {
            sc.skip_source_route()?;
        }
        let m = sc.parse_mailbox(context)?;
        // Count the brackets the path should have had.
        (Some(m), sc.pos - start + 2)
    };
    // Lenient: a comment may follow directly (Postfix accepts "<a@b>(c)").
    sc.skip_cfws()?;
    if !matches!(sc.peek(), None | Some(' ' | '\t')) {
        return Err(AddressError::TrailingJunk { position: sc.pos });
    }
    if received_len > MAX_PATH_LEN {
        return Err(AddressError::PathTooLong {
            len: received_len,
            max: MAX_PATH_LEN,
        });
    }
    Ok((mailbox, input[sc.pos..].trim_start_matches([' ', '\t'])))
}

/// A cursor over the input; every method that fails leaves an error that
/// points into the input.
struct Scanner<'a> {
    input: &'a str,
    pos: usize,
    opts: ParseOptions,
    /// Lenient mode inside angle brackets: white space may separate tokens.
    /// Outside brackets white space ends the path, so only comments may.
    spaces_between_tokens: bool,
}

impl<'a> Scanner<'a> {
    fn new(input: &'a str, opts: ParseOptions) -> Scanner<'a> {
        Scanner {
            input,
            pos: 0,
            opts,
            spaces_between_tokens: false,
        }
    }

    fn peek(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, want: char) -> bool {
        if self.peek() == Some(want) {
            self.pos += want.len_utf8();
            true
        } else {
            false
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
    }

    /// The error for a character that cannot appear here: 8-bit text
    /// without SMTPUTF8 gets its own error so that the reply can say so.
    fn char_error(&self, ch: char, position: usize) -> AddressError {
        if is_utf8_text(ch) && !self.opts.smtputf8 {
            AddressError::EightBitWithoutSmtputf8 { position }
        } else {
            AddressError::UnexpectedChar { ch, position }
        }
    }

    /// Lenient mode: skips comments, and white space where allowed.
    /// Strict mode: does nothing.
    fn skip_cfws(&mut self) -> Result<(), AddressError> {
        if !self.opts.is_lenient() {
            return Ok(());
        }
        loop {
            match self.peek() {
                Some(' ' | '\t') if self.spaces_between_tokens => self.pos += 1,
                Some('(') => self.skip_comment()?,
                _ => return Ok(()),
            }
        }
    }

    /// Skips an RFC 822 comment, nested comments and quoted pairs included.
    fn skip_comment(&mut self) -> Result<(), AddressError> {
        let open = self.pos;
        self.pos += 1;
        let mut depth = 1usize;
        while depth > 0 {
            let at = self.pos;
            match self.bump() {
                None => return Err(AddressError::UnbalancedComment { position: open }),
                // Outside angle brackets white space ends the path, even
                // inside a comment (Postfix splits the command into words
                // first).
                Some(' ' | '\t') if !self.spaces_between_tokens => {
                    return Err(AddressError::UnbalancedComment { position: open });
                }
                // Postfix finds the end of "<...>" and of quoted strings
                // before it reads comments, so an angle bracket or a quote in
                // a comment would change where the path ends.
                Some(ch @ ('<' | '>' | '"')) => {
                    return Err(AddressError::UnexpectedChar { ch, position: at });
                }
                Some('(') => depth += 1,
                Some(')') => depth -= 1,
                Some('\\') => match self.bump() {
                    None => return Err(AddressError::UnbalancedComment { position: open }),
                    Some(c) if c.is_control() => {
                        return Err(AddressError::BadQuotedPair { position: at });
                    }
                    Some(c) if !c.is_ascii() && !self.opts.smtputf8 => {
                        return Err(AddressError::EightBitWithoutSmtputf8 { position: at + 1 });
                    }
                    Some(_) => {}
                },
                Some(c) if c.is_control() && c != '\t' => {
                    return Err(AddressError::UnexpectedChar {
                        ch: c,
                        position: at,
                    });
                }
                Some(c) if !c.is_ascii() && !self.opts.smtputf8 => {
                    return Err(AddressError::EightBitWithoutSmtputf8 { position: at });
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Skips an RFC 5321 source route, `@a,@b:`, validating its domains;
    /// the route is obsolete and Postfix strips it, so nothing is kept.
    fn skip_source_route(&mut self) -> Result<(), AddressError> {
        let start = self.pos;
        loop {
            if !self.eat('@') {
                return Err(AddressError::BadSourceRoute { position: self.pos });
            }
            self.skip_cfws()?;
            self.parse_domain().map_err(|e| match e {
                AddressError::EmptyDomain { .. } => {
                    AddressError::BadSourceRoute { position: start }
                }
                other => other,
            })?;
            self.skip_cfws()?;
            if self.eat(',') {
                self.skip_cfws()?;
                continue;
            }
            if self.eat(':') {
                self.skip_cfws()?;
                return Ok(());
            }
            return Err(AddressError::BadSourceRoute { position: self.pos });
        }
    }

    /// Parses `local-part [ "@" domain ]` and checks the lengths.
    fn parse_mailbox(&mut self, context: MailboxContext) -> Result<MailAddress, AddressError> {
        let (text, quoted) = self.parse_local_part()?;
        self.skip_cfws()?;
        let domain = if self.eat('@') {
            self.skip_cfws()?;
            Some(self.parse_domain()?)
        } else {
            match self.peek() {
                None | Some('>') => {}
                // Ends an unbracketed lenient path.
                Some(' ' | '\t') if self.opts.is_lenient() => {}
                Some(ch) => return Err(self.char_error(ch, self.pos)),
            }
            let postmaster = context == MailboxContext::ForwardPath
                && !quoted
                && text.eq_ignore_ascii_case(POSTMASTER);
            if !self.opts.is_lenient() && !postmaster {
                return Err(AddressError::MissingDomain { position: self.pos });
            }
            None
        };
        MailAddress::new(LocalPart::checked(text)?, domain)
    }

    /// Parses a local part; returns its internal text and whether it was
    /// one quoted string (which matters only for `<Postmaster>`).
    fn parse_local_part(&mut self) -> Result<(String, bool), AddressError> {
        if self.opts.is_lenient() {
            return self.parse_obsolete_local_part();
        }
        if self.peek() == Some('"') {
            return Ok((self.parse_quoted_string()?, true));
        }
        let start = self.pos;
        let mut out = String::new();
        loop {
            let atom_start = self.pos;
            self.take_atom(&mut out, false)?;
            if self.pos == atom_start {
                return Err(match self.peek() {
                    Some('.') => AddressError::MisplacedDot { position: self.pos },
                    _ if atom_start > start => AddressError::MisplacedDot {
                        position: atom_start - 1,
                    },
                    None | Some('@' | '>') => AddressError::MissingLocalPart { position: start },
                    Some(ch) => self.char_error(ch, self.pos),
                });
            }
            if !self.eat('.') {
                return Ok((out, false));
            }
            out.push('.');
        }
    }

    /// Lenient local part (RFC 822 `obs-local-part`, as Postfix reads it):
    /// atoms and quoted strings separated by dots, where dots may also lead,
    /// trail or repeat, and comments (and white space inside brackets) may
    /// appear between the tokens.
    fn parse_obsolete_local_part(&mut self) -> Result<(String, bool), AddressError> {
        let start = self.pos;
        let mut out = String::new();
        let (mut atoms, mut quoted, mut dots) = (0usize, 0usize, 0usize);
        loop {
            self.skip_cfws()?;
            match self.peek() {
                Some('"') => {
                    out.push_str(&self.parse_quoted_string()?);
                    quoted += 1;
                }
                Some(c) if is_atext_ascii(c) || is_utf8_text(c) || c == '\\' => {
                    self.take_atom(&mut out, true)?;
                    atoms += 1;
                }
                _ => {}
            }
            self.skip_cfws()?;
            if !self.eat('.') {
                break;
            }
            out.push('.');
            dots += 1;
        }
        if atoms + quoted + dots == 0 {
            return Err(match self.peek() {
                None | Some('@' | '>') => AddressError::MissingLocalPart { position: start },
                Some(ch) => self.char_error(ch, self.pos),
            });
        }
        Ok((out, quoted == 1 && atoms == 0 && dots == 0))
    }

    /// Appends an atom (possibly empty) to `out`. Lenient mode also takes
    /// backslash escapes, which Postfix's tokenizer accepts outside quotes.
    fn take_atom(&mut self, out: &mut String, escapes: bool) -> Result<(), AddressError> {
        while let Some(c) = self.peek() {
            if is_atext_ascii(c) {
                out.push(c);
                self.pos += 1;
            } else if is_utf8_text(c) {
                if !self.opts.smtputf8 {
                    return Err(AddressError::EightBitWithoutSmtputf8 { position: self.pos });
                }
                out.push(c);
                self.pos += c.len_utf8();
            } else if c == '\\' && escapes {
                let at = self.pos;
                self.pos += 1;
                out.push(self.escaped_char(at)?);
            } else {
                break;
            }
        }
        Ok(())
    }

    /// The character after a backslash at `at` (RFC 5321
    /// `quoted-pairSMTP`: printable ASCII or space).
    fn escaped_char(&mut self, at: usize) -> Result<char, AddressError> {
        match self.bump() {
            Some(c) if (' '..='~').contains(&c) => Ok(c),
            _ => Err(AddressError::BadQuotedPair { position: at }),
        }
    }

    /// Parses a quoted string and returns its content without the quotes
    /// and escapes. Tabs and other control characters are refused: RFC 5321
    /// `qtextSMTP` has none, and a local part must not hold them.
    fn parse_quoted_string(&mut self) -> Result<String, AddressError> {
        let open = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let at = self.pos;
            match self.bump() {
                None => return Err(AddressError::UnbalancedQuote { position: open }),
                Some('"') => return Ok(out),
                Some('\\') => {
                    if self.at_end() {
                        return Err(AddressError::UnbalancedQuote { position: open });
                    }
                    out.push(self.escaped_char(at)?);
                }
                Some(c) if (' '..='~').contains(&c) => out.push(c),
                Some(c) if !c.is_ascii() && !c.is_control() => {
                    if !self.opts.smtputf8 {
                        return Err(AddressError::EightBitWithoutSmtputf8 { position: at });
                    }
                    out.push(c);
                }
                Some(ch) => return Err(AddressError::UnexpectedChar { ch, position: at }),
            }
        }
    }

    /// Whether `c` may appear in a domain label in this mode.
    fn is_label_char(&self, c: char) -> bool {
        c.is_ascii_alphanumeric()
            || c == '-'
            || (c == '_' && self.opts.is_lenient())
            || is_utf8_text(c)
    }

    /// Parses a domain name or an address literal.
    fn parse_domain(&mut self) -> Result<Domain, AddressError> {
        match self.peek() {
            Some('[') => self.parse_domain_literal(),
            Some('.') => Err(AddressError::EmptyLabel { position: self.pos }),
            Some(c) if self.is_label_char(c) => self.parse_domain_name(),
            Some(c) if !c.is_ascii() || c.is_ascii_control() => Err(self.char_error(c, self.pos)),
            _ => Err(AddressError::EmptyDomain { position: self.pos }),
        }
    }

    fn parse_domain_name(&mut self) -> Result<Domain, AddressError> {
        let mut name = String::new();
        loop {
            let label_start = self.pos;
            while let Some(c) = self.peek() {
                if !self.is_label_char(c) {
                    break;
                }
                if !c.is_ascii() && !self.opts.smtputf8 {
                    return Err(AddressError::EightBitWithoutSmtputf8 { position: self.pos });
                }
                name.push(c);
                self.pos += c.len_utf8();
            }
            let label = &self.input[label_start..self.pos];
            if label.is_empty() {
                return Err(AddressError::EmptyLabel {
                    position: label_start,
                });
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(AddressError::HyphenAtLabelEdge {
                    position: label_start,
                });
            }
            self.skip_cfws()?;
            if !self.eat('.') {
                break;
            }
            self.skip_cfws()?;
            match self.peek() {
                Some(c) if self.is_label_char(c) => name.push('.'),
                // One trailing dot: dropped in lenient mode, as Postfix does.
                Some(c) if c != '.' && self.opts.is_lenient() => break,
                None if self.opts.is_lenient() => break,
                _ => return Err(AddressError::EmptyLabel { position: self.pos }),
            }
        }
        Domain::from_name(&name)
    }

    fn parse_domain_literal(&mut self) -> Result<Domain, AddressError> {
        let open = self.pos;
        self.pos += 1;
        let content_start = self.pos;
        loop {
            match self.peek() {
                Some(']') => break,
                // RFC 5321 dtext: printable ASCII except "[", "\" and "]".
                Some(c) if ('!'..='~').contains(&c) && c != '[' && c != '\\' => self.pos += 1,
                _ => return Err(AddressError::BadDomainLiteral { position: open }),
            }
        }
        let content = &self.input[content_start..self.pos];
        self.pos += 1;
        parse_literal_text(content)
            .map(Domain::from_ip)
            .ok_or(AddressError::BadDomainLiteral { position: open })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: ParseOptions = ParseOptions::STRICT;
    const L: ParseOptions = ParseOptions::LENIENT;

    fn rev(arg: &str, opts: ParseOptions) -> Result<String, AddressError> {
        ReversePath::parse(arg, opts).map(|p| p.to_string())
    }

    // Accepted by both modes (RFC 5321 section 4.1.2 syntax), with the
    // canonical rendering.
    #[test]
    fn rfc5321_paths_in_both_modes() {
        let cases = [
            ("<user@example.com>", "<user@example.com>"),
            ("<>", "<>"),
            ("<User@Example.COM>", "<User@example.com>"),
            ("<first.last@example.com>", "<first.last@example.com>"),
            ("<\"a b\"@example.com>", "<\"a b\"@example.com>"),
            ("<\"a\\\"b\"@example.com>", "<\"a\\\"b\"@example.com>"),
            ("<\"a\\\\b\"@example.com>", "<\"a\\\\b\"@example.com>"),
            ("<\"plain\"@example.com>", "<plain@example.com>"),
            ("<\"\"@example.com>", "<\"\"@example.com>"),
            ("<\"john..doe\"@example.com>", "<\"john..doe\"@example.com>"),
            ("<\"a\\b\"@example.com>", "<ab@example.com>"),
            (
                "<@a.example,@b.example:user@example.com>",
                "<user@example.com>",
            ),
            ("<@[192.0.2.9]:user@example.com>", "<user@example.com>"),
            ("<user@[192.0.2.1]>", "<user@[192.0.2.1]>"),
            ("<user@[010.000.002.001]>", "<user@[10.0.2.1]>"),
            (
                "<user@[IPv6:2001:DB8:0:0:0:0:0:1]>",
                "<user@[IPv6:2001:db8::1]>",
            ),
            (
                "<user@[ipv6:::ffff:192.0.2.1]>",
                "<user@[IPv6:::ffff:192.0.2.1]>",
            ),
            (
                "<!#$%&'*+-/=?^_`{|}~@example.com>",
                "<!#$%&'*+-/=?^_`{|}~@example.com>",
            ),
            ("<user%other@example.com>", "<user%other@example.com>"),
            ("<host!user@example.com>", "<host!user@example.com>"),
            ("<u@a-b.c0.example>", "<u@a-b.c0.example>"),
            ("<u@1.2.3.4>", "<u@1.2.3.4>"),
            ("  <u@example.com>", "<u@example.com>"),
            ("<u@example.com>   ", "<u@example.com>"),
        ];
        for (input, want) in cases {
            assert_eq!(rev(input, S).as_deref(), Ok(want), "strict {input}");
            assert_eq!(rev(input, L).as_deref(), Ok(want), "lenient {input}");
        }
    }

    // Postfix's default mode extras (postconf(5) strict_rfc821_envelopes,
    // ADDRESS_REWRITING_README "user@site."), each refused in strict mode.
    #[test]
    fn lenient_only() {
        let cases = [
            ("user@example.com", "<user@example.com>"),
            ("@a.example:user@example.com", "<user@example.com>"),
            ("< user@example.com >", "<user@example.com>"),
            ("<user @ example.com>", "<user@example.com>"),
            ("<(comment)user@example.com>", "<user@example.com>"),
            ("<user(c)@example.com>", "<user@example.com>"),
            ("<user@example.com (nested (c) \\) )>", "<user@example.com>"),
            ("<user@example.com>(comment)", "<user@example.com>"),
            ("user@example.com(comment)", "<user@example.com>"),
            ("<a . b@example.com>", "<a.b@example.com>"),
            ("<a@b . example>", "<a@b.example>"),
            ("<john..doe@example.com>", "<\"john..doe\"@example.com>"),
            ("<.john@example.com>", "<\".john\"@example.com>"),
            ("<john.@example.com>", "<\"john.\"@example.com>"),
            ("<\"a\".\"b\"@example.com>", "<a.b@example.com>"),
            ("<\"a b\".c@example.com>", "<\"a b.c\"@example.com>"),
            ("<a\\ b@example.com>", "<\"a b\"@example.com>"),
            ("<a\\@b@example.com>", "<\"a@b\"@example.com>"),
            ("<user@example.com.>", "<user@example.com>"),
            ("user@example.com.", "<user@example.com>"),
            ("<user>", "<user>"),
            ("user", "<user>"),
            ("<user@a_b.example>", "<user@a_b.example>"),
            ("(c)<user@example.com>", "<user@example.com>"),
        ];
        for (input, want) in cases {
            assert_eq!(rev(input, L).as_deref(), Ok(want), "lenient {input}");
            assert!(rev(input, S).is_err(), "strict should refuse {input}");
        }
    }

    // Refused in both modes; the error names the problem.
    #[test]
    fn refused_in_both_modes() {
        use AddressError as E;
        let cases: &[(&str, AddressError)] = &[
            ("", E::Empty),
            ("   ", E::Empty),
            ("<user@example.com", E::UnclosedAngleBracket { position: 0 }),
            ("<user@example.com>junk", E::TrailingJunk { position: 18 }),
            ("<user@example.com>>", E::TrailingJunk { position: 18 }),
            ("<user@example.com>,", E::TrailingJunk { position: 18 }),
            ("<\"user@example.com>", E::UnbalancedQuote { position: 1 }),
            (
                "<\"a\tb\"@example.com>",
                E::UnexpectedChar {
                    ch: '\t',
                    position: 3,
                },
            ),
            ("<\"a\\", E::UnbalancedQuote { position: 1 }),
            ("<user@>", E::EmptyDomain { position: 6 }),
            ("<user@example..com>", E::EmptyLabel { position: 14 }),
            ("<user@.example.com>", E::EmptyLabel { position: 6 }),
            ("<user@-a.example>", E::HyphenAtLabelEdge { position: 6 }),
            ("<user@a-.example>", E::HyphenAtLabelEdge { position: 6 }),
            ("<user@example.com..>", E::EmptyLabel { position: 18 }),
            ("<user@[300.1.1.1]>", E::BadDomainLiteral { position: 6 }),
            ("<user@[1.2.3]>", E::BadDomainLiteral { position: 6 }),
            ("<user@[foo]>", E::BadDomainLiteral { position: 6 }),
            ("<user@[x:y]>", E::BadDomainLiteral { position: 6 }),
            (
                "<user@[IPv6:2001:db8::g]>",
                E::BadDomainLiteral { position: 6 },
            ),
            ("<user@[IPv6:1.2.3.4]>", E::BadDomainLiteral { position: 6 }),
            ("<user@[1.2.3.4>", E::BadDomainLiteral { position: 6 }),
            ("<user@[ 1.2.3.4]>", E::BadDomainLiteral { position: 6 }),
            ("<@example.com>", E::BadSourceRoute { position: 13 }),
            (
                "<@a.example,b@example.com>",
                E::BadSourceRoute { position: 12 },
            ),
            ("<@a.example:>", E::MissingLocalPart { position: 12 }),
            (
                "<a@b@example.com>",
                E::UnexpectedChar {
                    ch: '@',
                    position: 4,
                },
            ),
            (
                "<a,b@example.com>",
                E::UnexpectedChar {
                    ch: ',',
                    position: 2,
                },
            ),
            (
                "<a:b@example.com>",
                E::UnexpectedChar {
                    ch: ':',
                    position: 2,
                },
            ),
            (
                "<ü@example.com>",
                E::EightBitWithoutSmtputf8 { position: 1 },
            ),
            ("<u@ü.example>", E::EightBitWithoutSmtputf8 { position: 3 }),
            (
                "<\"ü\"@example.com>",
                E::EightBitWithoutSmtputf8 { position: 2 },
            ),
            (
                "<u\u{1}@example.com>",
                E::UnexpectedChar {
                    ch: '\u{1}',
                    position: 2,
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                ReversePath::parse(input, S).err(),
                Some(*want),
                "strict {input:?}"
            );
            let lenient = ReversePath::parse(input, L).err();
            assert!(lenient.is_some(), "lenient should refuse {input:?}");
        }
    }

    #[test]
    fn lenient_errors() {
        use AddressError as E;
        // A phrase is not part of the path: like Postfix, the bracketed
        // address is left over, where the SMTP layer sees a bad parameter.
        assert_eq!(
            rev("John <john@example.com>", L),
            Err(E::TrailingJunk { position: 5 })
        );
        let (p, rest) = ReversePath::parse_prefix("John <john@example.com>", L).unwrap();
        assert_eq!(
            (p.to_string().as_str(), rest),
            ("<John>", "<john@example.com>")
        );
        assert_eq!(
            rev("<a@b.example>(c", L),
            Err(E::UnbalancedComment { position: 13 })
        );
        // White space ends an unbracketed path, even inside a comment.
        assert_eq!(
            rev("<a@b.example>(c d)", L),
            Err(E::UnbalancedComment { position: 13 })
        );
        assert_eq!(
            rev("a@b.example(c d)", L),
            Err(E::UnbalancedComment { position: 11 })
        );
        assert_eq!(
            rev("(c) <a@b.example>", L),
            Err(E::UnexpectedChar {
                ch: ' ',
                position: 3
            })
        );
        assert_eq!(
            rev("<a@b.example (c d)>", L).as_deref(),
            Ok("<a@b.example>")
        );
        assert_eq!(
            rev("<a(\")@b.example>", L),
            Err(E::UnexpectedChar {
                ch: '"',
                position: 3
            })
        );
        assert_eq!(
            rev("<a(\\\")@b.example>", L).as_deref(),
            Ok("<a@b.example>")
        );
        assert_eq!(
            rev("<a@b.example (c>)>", L),
            Err(E::UnexpectedChar {
                ch: '>',
                position: 15
            })
        );
        assert_eq!(
            rev("<a b@example.com>", L),
            Err(E::UnexpectedChar {
                ch: 'b',
                position: 3
            })
        );
        assert_eq!(
            rev("a@b.example>", L),
            Err(E::TrailingJunk { position: 11 })
        );
        assert_eq!(
            rev("<<a@b.example>>", L),
            Err(E::UnexpectedChar {
                ch: '<',
                position: 1
            })
        );
    }

    #[test]
    fn strict_errors() {
        use AddressError as E;
        assert_eq!(
            rev("user@example.com", S),
            Err(E::MissingAngleBrackets { position: 0 })
        );
        assert_eq!(rev("<user>", S), Err(E::MissingDomain { position: 5 }));
        assert_eq!(
            rev("<a..b@example.com>", S),
            Err(E::MisplacedDot { position: 3 })
        );
        assert_eq!(
            rev("<.a@example.com>", S),
            Err(E::MisplacedDot { position: 1 })
        );
        assert_eq!(
            rev("<a.@example.com>", S),
            Err(E::MisplacedDot { position: 2 })
        );
        assert_eq!(
            rev("<user@example.com.>", S),
            Err(E::EmptyLabel { position: 18 })
        );
        assert_eq!(
            rev("< user@example.com>", S),
            Err(E::UnexpectedChar {
                ch: ' ',
                position: 1
            })
        );
        assert_eq!(
            rev("<user@example.com>(c)", S),
            Err(E::TrailingJunk { position: 18 })
        );
        assert_eq!(
            rev("<user@a_b.example>", S),
            Err(E::UnexpectedChar {
                ch: '_',
                position: 7
            })
        );
    }

    #[test]
    fn esmtp_parameters_are_returned() {
        let (p, rest) =
            ReversePath::parse_prefix("<a@example.com> SIZE=10 BODY=8BITMIME", S).unwrap();
        assert_eq!(p.to_string(), "<a@example.com>");
        assert_eq!(rest, "SIZE=10 BODY=8BITMIME");
        let (p, rest) = ReversePath::parse_prefix("<>\tSMTPUTF8", S).unwrap();
        assert!(p.is_null());
        assert_eq!(rest, "SMTPUTF8");
        let (a, rest) =
            MailAddress::parse_forward_path_prefix("a@example.com NOTIFY=NEVER", L).unwrap();
        assert_eq!(a.to_string(), "a@example.com");
        assert_eq!(rest, "NOTIFY=NEVER");
        let (a, rest) =
            MailAddress::parse_forward_path_prefix("\"a b\"@example.com ORCPT=x", L).unwrap();
        assert_eq!(a.local_part().as_str(), "a b");
        assert_eq!(rest, "ORCPT=x");
        assert_eq!(
            ReversePath::parse("<a@example.com> SIZE=10", S),
            Err(AddressError::TrailingJunk { position: 16 })
        );
    }

    // RFC 5321 section 4.1.1.3: "<Postmaster>" without a domain is a valid
    // forward path; it is not a valid reverse path, and "<>" is not a valid
    // forward path.
    #[test]
    fn postmaster_and_null_rules() {
        let pm = MailAddress::parse_forward_path("<Postmaster>", S).unwrap();
        assert_eq!(pm.local_part().as_str(), "Postmaster");
        assert!(pm.domain().is_none());
        assert_eq!(pm.render_path(), "<Postmaster>");
        assert!(MailAddress::parse_forward_path("<postmaster>", S).is_ok());
        assert!(MailAddress::parse_forward_path("<\"postmaster\">", S).is_err());
        assert!(ReversePath::parse("<Postmaster>", S).is_err());
        assert_eq!(
            MailAddress::parse_forward_path("<>", S),
            Err(AddressError::NullPathNotAllowed)
        );
        assert_eq!(
            MailAddress::parse_forward_path(" < > ", L),
            Err(AddressError::NullPathNotAllowed)
        );
        assert_eq!(ReversePath::parse("< >", L), Ok(ReversePath::Null));
    }

    #[test]
    fn smtputf8() {
        let u = S.with_smtputf8(true);
        let a = MailAddress::parse_forward_path("<Jörg@Bücher.Example>", u).unwrap();
        assert_eq!(a.to_string(), "Jörg@bücher.example");
        assert!(a.needs_smtputf8());
        assert_eq!(a.lookup_key(), "jörg@bücher.example");
        let q = MailAddress::parse_forward_path("<\"J ö\"@example.com>", u).unwrap();
        assert_eq!(q.to_string(), "\"J ö\"@example.com");
        // Non-ASCII white space must be quoted.
        assert!(MailAddress::parse_forward_path("<a\u{a0}b@example.com>", u).is_err());
        assert_eq!(LocalPart::new("a\u{a0}b").unwrap().render(), "\"a\u{a0}b\"");
        // C1 controls never.
        assert!(MailAddress::parse_forward_path("<a\u{85}b@example.com>", u).is_err());
        assert!(
            !MailAddress::parse("a@example.com", u)
                .unwrap()
                .needs_smtputf8()
        );
    }

    // RFC 5321 section 4.5.3.1 limits.
    #[test]
    fn length_limits() {
        let l64 = "a".repeat(64);
        let l65 = "a".repeat(65);
        assert!(MailAddress::parse(&format!("{l64}@example.com"), S).is_ok());
        assert_eq!(
            MailAddress::parse(&format!("{l65}@example.com"), S),
            Err(AddressError::LocalPartTooLong { len: 65, max: 64 })
        );
        // Quotes count: 62 characters quoted are 64 octets, 63 are 65.
        assert!(MailAddress::parse(&format!("\"{}\"@x.example", " ".repeat(62)), S).is_ok());
        assert_eq!(
            MailAddress::parse(&format!("\"{}\"@x.example", " ".repeat(63)), S),
            Err(AddressError::LocalPartTooLong { len: 65, max: 64 })
        );
        assert_eq!(
            LocalPart::new("x".repeat(65)),
            Err(AddressError::LocalPartTooLong { len: 65, max: 64 })
        );
        let label63 = "b".repeat(63);
        let label64 = "b".repeat(64);
        assert!(Domain::parse(&format!("{label63}.example"), S).is_ok());
        assert_eq!(
            Domain::parse(&format!("{label64}.example"), S),
            Err(AddressError::LabelTooLong { len: 64, max: 63 })
        );
        // 4 labels of 63 plus 3 dots = 255; one more character is 256.
        let d255 = [label63.as_str(); 4].join(".");
        assert_eq!(d255.len(), 255);
        assert!(Domain::parse(&d255, S).is_ok());
        assert_eq!(
            Domain::parse(&format!("c{d255}"), S),
            Err(AddressError::DomainTooLong { len: 256, max: 255 })
        );
        // Path: "<" + 64 + "@" + domain + ">" must be <= 256: domain <= 189.
        let d189 = format!("{}.{}.{}", label63, label63, "c".repeat(61));
        assert_eq!(d189.len(), 189);
        assert!(ReversePath::parse(&format!("<{l64}@{d189}>"), S).is_ok());
        let d190 = format!("{}.{}.{}", label63, label63, "c".repeat(62));
        assert_eq!(
            ReversePath::parse(&format!("<{l64}@{d190}>"), S),
            Err(AddressError::PathTooLong { len: 257, max: 256 })
        );
        // The received length counts the source route too.
        let route = format!("@{label63}.example:");
        assert_eq!(
            ReversePath::parse(&format!("<{route}{l64}@{d189}>"), S),
            Err(AddressError::PathTooLong {
                len: 256 + route.len(),
                max: 256
            })
        );
        // Octets, not characters: 32 two-octet characters are 64 octets.
        let u = S.with_smtputf8(true);
        assert!(MailAddress::parse(&format!("{}@example.com", "é".repeat(32)), u).is_ok());
        assert_eq!(
            MailAddress::parse(&format!("{}@example.com", "é".repeat(33)), u),
            Err(AddressError::LocalPartTooLong { len: 66, max: 64 })
        );
    }

    #[test]
    fn domain_behaviour() {
        let d: Domain = "Mail.Example.COM".parse().unwrap();
        let e: Domain = "mail.example.com".parse().unwrap();
        assert_eq!(d, e);
        assert_eq!(d.as_str(), "mail.example.com");
        let parent: Domain = "example.com".parse().unwrap();
        assert!(d.is_subdomain_of(&parent));
        assert!(!parent.is_subdomain_of(&parent));
        assert!(
            !"badexample.com"
                .parse::<Domain>()
                .unwrap()
                .is_subdomain_of(&parent)
        );
        assert_eq!(d.parent(), Some(parent.clone()));
        assert_eq!(d.labels().collect::<Vec<_>>(), ["mail", "example", "com"]);
        let lit = Domain::from_ip("192.0.2.1".parse().unwrap());
        assert_eq!(lit.as_str(), "[192.0.2.1]");
        assert_eq!(lit, "[192.0.2.1]".parse().unwrap());
        assert_eq!(lit.labels().count(), 0);
        assert_eq!(lit.parent(), None);
        let v6 = Domain::from_ip("2001:db8::1".parse().unwrap());
        assert_eq!(v6.as_str(), "[IPv6:2001:db8::1]");
        assert_eq!(Domain::parse("[iPv6:2001:0db8::0001]", S), Ok(v6));
        assert_eq!(
            Domain::parse("example.com.", L).unwrap().as_str(),
            "example.com"
        );
        assert!(Domain::parse("example.com.", S).is_err());
        assert_eq!(Domain::parse("", S), Err(AddressError::Empty));
        assert_eq!(
            Domain::parse("a b", S),
            Err(AddressError::TrailingJunk { position: 1 })
        );
    }

    #[test]
    fn local_part_rendering() {
        let cases = [
            ("simple", "simple"),
            ("first.last", "first.last"),
            ("", "\"\""),
            ("a b", "\"a b\""),
            ("a..b", "\"a..b\""),
            (".a", "\".a\""),
            ("a.", "\"a.\""),
            ("a@b", "\"a@b\""),
            ("a\"b", "\"a\\\"b\""),
            ("a\\b", "\"a\\\\b\""),
            ("a(b)", "\"a(b)\""),
            ("user%host", "user%host"),
            ("host!user", "host!user"),
            ("Jörg", "Jörg"),
        ];
        for (internal, external) in cases {
            let lp = LocalPart::new(internal).unwrap();
            assert_eq!(lp.render(), external, "{internal}");
            assert_eq!(lp.to_string(), external);
            let parsed =
                MailAddress::parse(&format!("{external}@x.example"), L.with_smtputf8(true))
                    .unwrap();
            assert_eq!(parsed.local_part(), &lp);
        }
        assert_eq!(
            LocalPart::new("a\nb"),
            Err(AddressError::UnexpectedChar {
                ch: '\n',
                position: 1
            })
        );
        let a = MailAddress::parse("\"A B\"@Example.com", S).unwrap();
        assert_eq!(a.internal_form(), "A B@example.com");
        assert_eq!(a.lookup_key(), "a b@example.com");
        assert_eq!(a.render(), "\"A B\"@example.com");
        assert_eq!(a.render_path(), "<\"A B\"@example.com>");
    }

    // postconf(5) recipient_delimiter and owner_request_special.
    #[test]
    fn recipient_delimiter_rules() {
        // (delimiters, local part, expected base, delimiter, extension)
        type Case = (
            &'static str,
            &'static str,
            Option<(&'static str, char, &'static str)>,
        );
        let cases: &[Case] = &[
            ("+", "user+foo", Some(("user", '+', "foo"))),
            ("+", "user+foo+bar", Some(("user", '+', "foo+bar"))),
            ("+", "user", None),
            ("+", "user+", Some(("user", '+', ""))),
            ("+", "+foo", None),
            ("+", "+foo+bar", Some(("+foo", '+', "bar"))),
            ("", "user+foo", None),
            // Several delimiters: the first one found splits.
            ("+-", "user-foo+bar", Some(("user", '-', "foo+bar"))),
            ("+-", "user+foo-bar", Some(("user", '+', "foo-bar"))),
            // Never applied to the postmaster, mailer-daemon and
            // double-bounce addresses.
            ("-", "MAILER-DAEMON", None),
            ("-", "double-bounce", None),
            ("+", "Postmaster", None),
            // owner_request_special: not split at the hyphen of "owner-"
            // or "-request".
            ("-", "owner-list", None),
            ("-", "list-request", None),
            ("-", "owner-list-request", None),
            ("-", "owner-list-ext", Some(("owner-list", '-', "ext"))),
            ("+-", "owner-list+ext", Some(("owner-list", '+', "ext"))),
            ("-", "user-ext", Some(("user", '-', "ext"))),
        ];
        for (delims, local, want) in cases {
            let d = RecipientDelimiter::new(delims);
            let got = d.split(local).map(|e| (e.base, e.delimiter, e.extension));
            assert_eq!(got, *want, "{delims:?} {local}");
        }
        let off = RecipientDelimiter::new("-").with_owner_request_special(false);
        assert_eq!(off.split("owner-list").map(|e| e.base), Some("owner"));
        assert_eq!(
            off.split("list-request").map(|e| e.extension),
            Some("request")
        );
        let custom = RecipientDelimiter::new("-").with_unsplit_local_parts(["bounce-handler"]);
        assert!(custom.split("bounce-handler").is_none());
        assert!(custom.split("MAILER-DAEMON").is_some());
        let a: MailAddress = "joe+x@example.com".parse().unwrap();
        let plain = RecipientDelimiter::new("+");
        assert_eq!(a.extension(&plain).unwrap().extension, "x");
        assert_eq!(
            a.without_extension(&plain).unwrap().to_string(),
            "joe@example.com"
        );
        assert_eq!(plain.delimiters(), "+");
    }

    #[test]
    fn mailbox_parse_modes() {
        assert!(MailAddress::parse("user", L).is_ok());
        assert_eq!(
            MailAddress::parse("user", S),
            Err(AddressError::MissingDomain { position: 4 })
        );
        assert_eq!(MailAddress::parse("", L), Err(AddressError::Empty));
        assert_eq!(
            MailAddress::parse("<a@b.example>", L).err(),
            Some(AddressError::UnexpectedChar {
                ch: '<',
                position: 0
            })
        );
        assert_eq!(
            MailAddress::parse("a@b.example c", L),
            Err(AddressError::TrailingJunk { position: 11 })
        );
        assert_eq!(
            MailAddress::new(LocalPart::new("a").unwrap(), None)
                .unwrap()
                .with_domain(Some("x.example".parse().unwrap()))
                .unwrap()
                .to_string(),
            "a@x.example"
        );
        assert_eq!(
            ParseOptions::from_strict_rfc821_envelopes(true),
            ParseOptions::STRICT
        );
        assert_eq!(ParseOptions::default(), ParseOptions::LENIENT);
    }

    // Strategies for round trips: valid values built from parts that
    // exercise quoting, escapes, UTF-8 and literals.
    fn local_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\\.[a-zA-Z0-9_-]{1,10}){0,3}",
            "[ -~]{0,30}",
            "[a-zé日 .\"\\\\]{0,20}",
        ]
    }

    fn domain_value() -> impl Strategy<Value = Domain> {
        prop_oneof![
            "[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?(\\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?){0,4}"
                .prop_map(|s| Domain::parse(&s, ParseOptions::STRICT).unwrap()),
            "[a-zü]{1,8}\\.[a-zé]{1,8}".prop_map(|s| Domain::parse(&s, ParseOptions::STRICT.with_smtputf8(true)).unwrap()),
            any::<[u8; 4]>().prop_map(|o| Domain::from_ip(IpAddr::from(o))),
            any::<[u16; 8]>().prop_map(|g| Domain::from_ip(IpAddr::from(g))),
        ]
    }

    fn address_value() -> impl Strategy<Value = MailAddress> {
        (
            local_text(),
            proptest::option::weighted(0.9, domain_value()),
        )
            .prop_filter_map("too long", |(l, d)| {
                MailAddress::new(LocalPart::new(l).ok()?, d).ok()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn reverse_path_round_trip(addr in address_value(), null in any::<bool>()) {
            let path = if null { ReversePath::Null } else { ReversePath::Mailbox(addr) };
            let text = path.to_string();
            let utf8 = ParseOptions::LENIENT.with_smtputf8(true);
            prop_assert_eq!(ReversePath::parse(&text, utf8), Ok(path.clone()));
            if let ReversePath::Mailbox(m) = &path {
                prop_assert_eq!(&MailAddress::parse(&m.render(), utf8).unwrap(), m);
                prop_assert_eq!(&m.render().parse::<MailAddress>().unwrap(), m);
            }
            if path.mailbox().is_none_or(|m| m.domain().is_some()) {
                let strict = ParseOptions::STRICT.with_smtputf8(true);
                prop_assert_eq!(ReversePath::parse(&text, strict), Ok(path.clone()));
            }
            let ascii = path.mailbox().is_none_or(|m| !m.needs_smtputf8());
            prop_assert_eq!(ReversePath::parse(&text, ParseOptions::LENIENT).is_ok(), ascii);
        }

        #[test]
        fn forward_path_round_trip(addr in address_value()) {
            let text = addr.render_path();
            let utf8 = ParseOptions::LENIENT.with_smtputf8(true);
            prop_assert_eq!(MailAddress::parse_forward_path(&text, utf8), Ok(addr.clone()));
            let with_params = format!("{text} NOTIFY=NEVER");
            let (back, rest) = MailAddress::parse_forward_path_prefix(&with_params, utf8).unwrap();
            prop_assert_eq!(back, addr);
            prop_assert_eq!(rest, "NOTIFY=NEVER");
        }

        #[test]
        fn domain_round_trip(d in domain_value()) {
            let utf8 = ParseOptions::STRICT.with_smtputf8(true);
            prop_assert_eq!(Domain::parse(d.as_str(), utf8), Ok(d.clone()));
            prop_assert_eq!(Domain::parse(&d.as_str().to_uppercase(), utf8), Ok(d.clone()));
        }

        #[test]
        fn arbitrary_input_never_panics(s in "\\PC{0,80}|[<>@\\[\\]\"\\\\(). :,a-z0-9!%+-]{0,60}") {
            for strictness in [Strictness::Strict, Strictness::Lenient] {
                for smtputf8 in [false, true] {
                    let opts = ParseOptions { strictness, smtputf8 };
                    if let Ok(p) = ReversePath::parse(&s, opts) {
                        prop_assert_eq!(ReversePath::parse(&p.to_string(), opts.with_smtputf8(true)), Ok(p));
                    }
                    if let Ok((a, _)) = MailAddress::parse_forward_path_prefix(&s, opts) {
                        prop_assert_eq!(MailAddress::parse_forward_path(&a.render_path(), ParseOptions::LENIENT.with_smtputf8(true)), Ok(a));
                    }
                    let _ = MailAddress::parse(&s, opts);
                    let _ = Domain::parse(&s, opts);
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let s = String::from_utf8_lossy(&bytes);
            for opts in [ParseOptions::STRICT, ParseOptions::LENIENT.with_smtputf8(true)] {
                let _ = ReversePath::parse_prefix(&s, opts);
                let _ = MailAddress::parse(&s, opts);
            }
        }
    }
}

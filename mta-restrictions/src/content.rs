//! Postfix's built-in content inspection: `header_checks`,
//! `mime_header_checks`, `nested_header_checks` and `body_checks`, as the
//! `cleanup` server applies them while a message is queued
//! (`header_checks(5)`).
//!
//! # How content is read
//!
//! A [`ContentFilter`] is fed the message content (headers and body, CR LF
//! line ends, no SMTP dot-stuffing) in chunks cut anywhere. A streaming
//! classifier turns the chunks into:
//!
//! - *logical headers*: a header line with its continuation lines, which
//!   tables see joined by `\n` (the line breaks are kept, as Postfix keeps
//!   them), cut at `header_size_limit` bytes. As in Postfix, the excess
//!   of a longer header is discarded, not only unmatched: the output
//!   carries the header as it was cut (each kept line with its line end).
//! - *body lines*, one physical line at a time; a line longer than
//!   `line_length_limit` is seen as pieces of that many bytes, each piece
//!   looked up on its own (Postfix's `smtpd` stores such a line as several
//!   records and `body_checks` sees each one). Header lines that long are
//!   joined back into the header without a separator, as Postfix does.
//!
//! Each header has a class that chooses its tables ([`HeaderClass`]):
//! headers of the message are *primary*, headers of the parts of a
//! multipart are *MIME* headers, headers of an attached `message/rfc822`
//! are *nested*; and wherever they appear, `Content-Type`,
//! `Content-Transfer-Encoding`, `Content-Disposition`, `Content-ID`,
//! `Content-Description` and `MIME-Version` are MIME headers. Everything
//! else is body, multipart boundary lines included. Multiparts nest up to
//! `mime_nesting_limit` levels; beyond that the content is body.
//! With `disable_mime_input_processing`, everything after the primary
//! headers is body.
//!
//! `body_checks` see a body line only if it starts within the first
//! `body_checks_size_limit` bytes of its body *segment*: the text after a
//! header block (the message body, or a part's body after the part's
//! headers) or from a closing boundary on (the closing boundary line and
//! the epilogue). The blank line that ends a header block is the first
//! line of its segment; an opening boundary line is the last line of the
//! segment before it. (All four points seen with Postfix 3.7.) Offsets
//! count a line's text plus one byte for its line end (Postfix stores
//! lines without CR). A limit of 0 means no limit.
//!
//! Memory is bounded by `header_size_limit` (one logical header) plus
//! `line_length_limit` (one line cut by a chunk boundary): the message is
//! never held. A body line that lies within one chunk is passed on as a
//! slice of that chunk, and looking up a body line that matches nothing
//! allocates nothing.
//!
//! # Output
//!
//! For each header and each body line (or piece) the [`ContentSink`]
//! receives a [`Piece`]: the input bytes, what to do with them
//! ([`Disposition`]: keep, remove, replace by a new line), and a line to
//! write before them (`PREPEND`). Concatenating the kept input bytes,
//! replacements and prepended lines gives the content to queue; when no
//! rule matches it is the input, byte for byte.
//!
//! The message-level effects (`REJECT`, `DISCARD`, `HOLD`, `REDIRECT`,
//! `FILTER`, `BCC`, `PASS`, and the log lines of `WARN`, `INFO` and the
//! rest) accumulate in a [`ContentVerdict`]. As in Postfix, the first
//! `REJECT`, `DISCARD` or `PASS` ends inspection: the rest of the content
//! is still passed to the sink, unchecked.
//!
//! # Tables answer at once
//!
//! Lookups use [`mta_maps::Lookup::now`]: the tables used for content
//! checks (`regexp:`, `pcre:`, and any in-memory type) answer at once,
//! and Postfix's documentation shows only those for content checks. A
//! table that would have to wait (a network table) fails the lookup; the
//! message then gets Postfix's answer to a table that cannot be read,
//! a temporary failure (`451 4.3.0`), never a silent pass.
//!
//! Keys are Rust strings: a line that is not UTF-8 is looked up with the
//! invalid bytes replaced by U+FFFD (an allocation for that line only).
//! Postfix matches such bytes as they are.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use mta_maps::list::MapList;
//! use mta_maps::regexp::RegexpTable;
//! use mta_restrictions::content::{
//!     ContentFilter, ContentLimits, ContentTables, MessageContext, Piece,
//! };
//!
//! let (table, _warnings) = RegexpTable::parse(
//!     "/^Subject: FREE OFFER!!/ REJECT\n",
//!     "regexp:/etc/mta/header_checks",
//! );
//! let tables = ContentTables {
//!     header: MapList::new(vec![Arc::new(table)]),
//!     ..ContentTables::default()
//! };
//! let mut filter = ContentFilter::new(&tables, ContentLimits::default(), MessageContext::default());
//! let mut queued = Vec::new();
//! let mut sink = |p: Piece<'_>| p.write_to(&mut queued);
//! filter.feed(b"Subject: FREE OFFER!! now\r\n\r\nBuy", &mut sink);
//! filter.feed(b" now\r\n", &mut sink);
//! let verdict = filter.finish(&mut sink);
//! assert_eq!(
//!     verdict.reply().unwrap().unwrap().to_string(),
//!     "550 5.7.1 message content rejected"
//! );
//! assert_eq!(queued, b"Subject: FREE OFFER!! now\r\n\r\nBuy now\r\n");
//! ```

mod action;
mod lines;
mod mime;

use std::borrow::Cow;

use mta_core::reply::{Reply, ReplyCode, ReplyError};
use mta_maps::MapError;
use mta_maps::list::MapList;
use mta_maps::registry::Registry;
use thiserror::Error;

use action::LineEffect;
use mime::{Classifier, Event};

/// Postfix's default `header_size_limit`: the most bytes of one logical
/// header that are kept and inspected.
pub const DEFAULT_HEADER_SIZE_LIMIT: usize = 102_400;
/// Postfix's default `line_length_limit`: longer lines are cut into pieces
/// of this many bytes.
pub const DEFAULT_LINE_LENGTH_LIMIT: usize = 2048;
/// Postfix's default `body_checks_size_limit`.
pub const DEFAULT_BODY_CHECKS_SIZE_LIMIT: usize = 51_200;
/// Postfix's default `mime_nesting_limit`.
pub const DEFAULT_MIME_NESTING_LIMIT: usize = 100;

/// The limits and switches of content inspection, with Postfix's names and
/// defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentLimits {
    /// `header_size_limit`: the most bytes of one logical header (lines
    /// joined with `\n`); the excess is discarded.
    pub header_size_limit: usize,
    /// `line_length_limit`: longer physical lines are handled in pieces of
    /// this many bytes (at least 1).
    pub line_length_limit: usize,
    /// `body_checks_size_limit`: body lines that start later than this in
    /// their body segment are not inspected (0: no limit).
    pub body_checks_size_limit: usize,
    /// `mime_nesting_limit`: the deepest nesting of multiparts and
    /// attached messages that is followed.
    pub mime_nesting_limit: usize,
    /// `disable_mime_input_processing`: everything after the primary
    /// headers is body.
    pub disable_mime_input_processing: bool,
}

impl Default for ContentLimits {
    fn default() -> ContentLimits {
        ContentLimits {
            header_size_limit: DEFAULT_HEADER_SIZE_LIMIT,
            line_length_limit: DEFAULT_LINE_LENGTH_LIMIT,
            body_checks_size_limit: DEFAULT_BODY_CHECKS_SIZE_LIMIT,
            mime_nesting_limit: DEFAULT_MIME_NESTING_LIMIT,
            disable_mime_input_processing: false,
        }
    }
}

/// Which table list inspects a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderClass {
    /// A header of the message itself: `header_checks`.
    Primary,
    /// A header of a multipart's part, or a MIME header anywhere:
    /// `mime_header_checks`.
    Mime,
    /// A header of an attached `message/rfc822`: `nested_header_checks`.
    Nested,
}

/// What a [`Piece`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LineKind {
    /// One logical header (all its physical lines).
    Header(HeaderClass),
    /// One body line, or a piece of a long one.
    Body,
}

/// The four table lists of content inspection.
#[derive(Debug, Clone, Default)]
pub struct ContentTables {
    /// `header_checks`.
    pub header: MapList,
    /// `mime_header_checks` (Postfix's default is `$header_checks`).
    pub mime_header: MapList,
    /// `nested_header_checks` (Postfix's default is `$header_checks`).
    pub nested_header: MapList,
    /// `body_checks`.
    pub body: MapList,
}

impl ContentTables {
    /// Opens the tables of the four parameters, given as their values
    /// (already expanded: the caller resolves the `$header_checks`
    /// defaults of the MIME and nested lists). An empty value is an empty
    /// list.
    ///
    /// # Errors
    ///
    /// The [`MapError`] of a table that cannot be opened.
    pub fn open(
        registry: &Registry,
        header_checks: &str,
        mime_header_checks: &str,
        nested_header_checks: &str,
        body_checks: &str,
    ) -> Result<ContentTables, MapError> {
        Ok(ContentTables {
            header: registry.open_list(header_checks)?,
            mime_header: registry.open_list(mime_header_checks)?,
            nested_header: registry.open_list(nested_header_checks)?,
            body: registry.open_list(body_checks)?,
        })
    }

    fn for_class(&self, class: HeaderClass) -> (&MapList, &'static str) {
        match class {
            HeaderClass::Primary => (&self.header, "header_checks"),
            HeaderClass::Mime => (&self.mime_header, "mime_header_checks"),
            HeaderClass::Nested => (&self.nested_header, "nested_header_checks"),
        }
    }
}

/// Who sent the message, for log lines in Postfix's form
/// (`... from host[ip]; from=<sender> to=<rcpt> proto=ESMTP helo=<name>`).
/// Fields that are `None` are left out, as Postfix leaves them out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageContext {
    /// The queue ID, put before each log line (`ID: `).
    pub queue_id: Option<String>,
    /// The client as `host[address]` (`localhost[127.0.0.1]`).
    pub client: String,
    /// The envelope sender (`Some("")` for the null sender).
    pub sender: Option<String>,
    /// The (last) envelope recipient.
    pub recipient: Option<String>,
    /// The protocol (`SMTP`, `ESMTP`).
    pub protocol: Option<String>,
    /// The HELO/EHLO name.
    pub helo: Option<String>,
}

impl Default for MessageContext {
    /// A message from `unknown`, as Postfix names a local submission.
    fn default() -> MessageContext {
        MessageContext {
            queue_id: None,
            client: "unknown".to_string(),
            sender: None,
            recipient: None,
            protocol: None,
            helo: None,
        }
    }
}

/// How many bytes of the inspected text a log line shows (`%.200s`).
const LOGGED_TEXT_LIMIT: usize = 200;

impl MessageContext {
    fn prefix(&self) -> String {
        match &self.queue_id {
            Some(id) => format!("{id}: "),
            None => String::new(),
        }
    }

    /// `ID: ACTION: header|body TEXT from CLIENT; from=<..> ...: OPTIONAL`.
    fn log_line(&self, action: &str, class: &str, input: &str, optional: &str) -> String {
        let mut s = format!("{}{action}: {class} ", self.prefix());
        let mut shown = 0;
        for c in input.chars() {
            shown += c.len_utf8();
            if shown > LOGGED_TEXT_LIMIT {
                break;
            }
            s.push(if c.is_control() { '?' } else { c });
        }
        s.push_str(" from ");
        s.push_str(&self.client);
        s.push(';');
        if let Some(v) = &self.sender {
            s.push_str(&format!(" from=<{v}>"));
        }
        if let Some(v) = &self.recipient {
            s.push_str(&format!(" to=<{v}>"));
        }
        if let Some(v) = &self.protocol {
            s.push_str(&format!(" proto={v}"));
        }
        if let Some(v) = &self.helo {
            s.push_str(&format!(" helo=<{v}>"));
        }
        if !optional.is_empty() {
            s.push_str(": ");
            s.push_str(optional);
        }
        s
    }

    fn warning(&self, text: &str) -> String {
        format!("warning: {}{text}", self.prefix())
    }
}

/// What to do with the input bytes of a [`Piece`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition<'a> {
    /// Write them unchanged.
    Keep,
    /// Leave them out (`IGNORE`, `STRIP`).
    Remove,
    /// Write this line instead (`REPLACE`; no line end included).
    Replace(&'a str),
}

/// One header or body line, and what to do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece<'a> {
    /// What the bytes are.
    pub kind: LineKind,
    /// The input bytes: a whole logical header with its line ends, or one
    /// body line (or piece) with its line end if it has one.
    pub text: &'a [u8],
    /// A line to write before this one (`PREPEND`; no line end included).
    pub prepend: Option<&'a str>,
    /// What to do with `text`.
    pub disposition: Disposition<'a>,
}

impl Piece<'_> {
    /// Appends what this piece puts in the queued content to `out`: the
    /// prepended line, then the kept or replaced text, with CR LF after
    /// the lines the tables gave.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        if let Some(p) = self.prepend {
            out.extend_from_slice(p.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        match self.disposition {
            Disposition::Keep => out.extend_from_slice(self.text),
            Disposition::Remove => {}
            Disposition::Replace(new) => {
                out.extend_from_slice(new.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
    }
}

/// Receives the pieces of content as they are inspected.
pub trait ContentSink {
    /// Takes one piece.
    fn piece(&mut self, piece: Piece<'_>);
}

impl<F: FnMut(Piece<'_>)> ContentSink for F {
    fn piece(&mut self, piece: Piece<'_>) {
        self(piece)
    }
}

/// Why content inspection could not decide.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ContentError {
    /// A table of `parameter` could not answer (a file being replaced, or
    /// a table that answers only asynchronously). The message is not
    /// accepted now; the client tries again.
    #[error("{parameter} map lookup problem: {source}")]
    Lookup {
        /// The parameter whose table failed (`body_checks`, ...).
        parameter: &'static str,
        /// The table's error.
        source: MapError,
    },
}

/// A `REJECT`: the reply code (550, or 451 for a 4.x.x status) and the
/// text with its enhanced status code (`5.7.1 message content rejected`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// 550, or 451 when the text's status is 4.x.x.
    pub code: ReplyCode,
    /// The enhanced status code and text.
    pub text: String,
}

/// The message-level result of content inspection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ContentVerdict {
    /// The message is rejected (the first `REJECT`).
    pub reject: Option<Rejection>,
    /// The message is accepted and dropped (`DISCARD`).
    pub discard: bool,
    /// The message goes to the hold queue (`HOLD`).
    pub hold: bool,
    /// The recipients are replaced by this address (the last `REDIRECT`).
    pub redirect: Option<String>,
    /// The message goes through this `transport:destination` (the last
    /// `FILTER`).
    pub filter: Option<String>,
    /// Recipients added by `BCC`, without duplicates.
    pub bcc: Vec<String>,
    /// `PASS` turned inspection off.
    pub pass: bool,
    /// A table could not answer: the message is not accepted now.
    pub temporary_failure: Option<ContentError>,
    /// Log lines in Postfix's wording (`reject: header ...`,
    /// `warning: header ...`, `warning: unknown command in ...`), without
    /// the syslog prefix.
    pub log: Vec<String>,
    /// How many headers were cut at `header_size_limit`.
    pub truncated_headers: usize,
    /// How many times `mime_nesting_limit` stopped MIME processing.
    pub nesting_exceeded: usize,
}

impl ContentVerdict {
    /// The SMTP reply that refuses the message, or `None` when the content
    /// checks let it be queued (possibly discarded or held). A table
    /// failure gives Postfix's `451 4.3.0 Error: queue file write error`;
    /// a `REJECT` gives its text with code 550 (451 for a 4.x.x status).
    ///
    /// # Errors
    ///
    /// A [`ReplyError`] when the table's text cannot be an SMTP reply (too
    /// long, control characters).
    pub fn reply(&self) -> Option<Result<Reply, ReplyError>> {
        if self.temporary_failure.is_some() {
            return Some(Reply::new(
                ReplyCode::LOCAL_ERROR,
                None,
                ["4.3.0 Error: queue file write error"],
            ));
        }
        self.reject
            .as_ref()
            .map(|r| Reply::new(r.code, None, [r.text.as_str()]))
    }
}

/// Content inspection of one message: feed it the content, collect the
/// pieces, take the verdict at the end.
#[derive(Debug)]
pub struct ContentFilter<'t> {
    tables: Tables<'t>,
    context: MessageContext,
    classifier: Classifier,
    verdict: ContentVerdict,
    inspecting: bool,
}

/// The tables a filter uses: borrowed, or shared with the caller (a
/// filter that must live as long as an SMTP session's state does).
#[derive(Debug)]
enum Tables<'t> {
    Borrowed(&'t ContentTables),
    Shared(std::sync::Arc<ContentTables>),
}

impl Tables<'_> {
    fn get(&self) -> &ContentTables {
        match self {
            Tables::Borrowed(t) => t,
            Tables::Shared(t) => t,
        }
    }
}

impl ContentFilter<'static> {
    /// [`new`](ContentFilter::new) with tables shared through an `Arc`,
    /// for a filter kept in a long-lived state (a queue writer held by an
    /// SMTP session).
    pub fn shared(
        tables: std::sync::Arc<ContentTables>,
        limits: ContentLimits,
        context: MessageContext,
    ) -> ContentFilter<'static> {
        ContentFilter {
            tables: Tables::Shared(tables),
            context,
            classifier: Classifier::new(limits),
            verdict: ContentVerdict::default(),
            inspecting: true,
        }
    }
}

impl<'t> ContentFilter<'t> {
    /// Starts inspecting a message with these tables and limits; `context`
    /// fills the log lines.
    pub fn new(
        tables: &'t ContentTables,
        limits: ContentLimits,
        context: MessageContext,
    ) -> ContentFilter<'t> {
        ContentFilter {
            tables: Tables::Borrowed(tables),
            context,
            classifier: Classifier::new(limits),
            verdict: ContentVerdict::default(),
            inspecting: true,
        }
    }

    /// Feeds a chunk of content; `sink` receives every header and line
    /// that the chunk completes.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_restrictions::content::*;
    /// let tables = ContentTables::default();
    /// let mut filter = ContentFilter::new(&tables, ContentLimits::default(), MessageContext::default());
    /// let mut kinds = Vec::new();
    /// let mut sink = |p: Piece<'_>| kinds.push(p.kind);
    /// filter.feed(b"Subject: hi\r\n\r\nte", &mut sink);
    /// filter.feed(b"xt\r\n", &mut sink);
    /// filter.finish(&mut sink);
    /// assert_eq!(
    ///     kinds,
    ///     [LineKind::Header(HeaderClass::Primary), LineKind::Body, LineKind::Body]
    /// );
    /// ```
    pub fn feed(&mut self, chunk: &[u8], sink: &mut impl ContentSink) {
        let ContentFilter {
            tables,
            context,
            classifier,
            verdict,
            inspecting,
        } = self;
        let tables = tables.get();
        classifier.feed(chunk, &mut |event| {
            inspect(tables, context, verdict, inspecting, event, sink)
        });
    }

    /// [`feed`](Self::feed) for a [`bytes::Bytes`] chunk.
    pub fn feed_bytes(&mut self, chunk: &bytes::Bytes, sink: &mut impl ContentSink) {
        self.feed(chunk, sink);
    }

    /// The verdict so far (a caller may stop reading content early once a
    /// message is rejected).
    pub fn verdict(&self) -> &ContentVerdict {
        &self.verdict
    }

    /// Ends the content: a last line without line end and a header still
    /// being gathered go to `sink`. Returns the verdict.
    pub fn finish(mut self, sink: &mut impl ContentSink) -> ContentVerdict {
        let ContentFilter {
            tables,
            context,
            classifier,
            verdict,
            inspecting,
        } = &mut self;
        let tables = tables.get();
        classifier.finish(&mut |event| inspect(tables, context, verdict, inspecting, event, sink));
        self.verdict.truncated_headers = self.classifier.truncated_headers;
        self.verdict.nesting_exceeded = self.classifier.nesting_exceeded;
        self.verdict
    }
}

/// Looks one event up and hands the piece to the sink.
fn inspect(
    tables: &ContentTables,
    context: &MessageContext,
    verdict: &mut ContentVerdict,
    inspecting: &mut bool,
    event: Event<'_>,
    sink: &mut impl ContentSink,
) {
    let (kind, raw, key, list, parameter, wanted) = match event {
        Event::Header { class, raw, key } => {
            let (list, parameter) = tables.for_class(class);
            (LineKind::Header(class), raw, key, list, parameter, true)
        }
        Event::Body { raw, text, inspect } => (
            LineKind::Body,
            raw,
            text,
            &tables.body,
            "body_checks",
            inspect,
        ),
    };
    let keep = Piece {
        kind,
        text: raw,
        prepend: None,
        disposition: Disposition::Keep,
    };
    // Empty lines never match (header_checks(5), BUGS).
    if !*inspecting || !wanted || key.is_empty() || list.is_empty() {
        sink.piece(keep);
        return;
    }
    let key: Cow<'_, str> = String::from_utf8_lossy(key);
    let value = match list.lookup_now(&key) {
        Ok(Some(value)) => value,
        Ok(None) => {
            sink.piece(keep);
            return;
        }
        Err(source) => {
            verdict.log.push(context.warning(&format!(
                "{parameter} map lookup problem -- message not accepted, try again later"
            )));
            verdict.temporary_failure = Some(ContentError::Lookup { parameter, source });
            *inspecting = false;
            sink.piece(keep);
            return;
        }
    };
    let is_header = matches!(kind, LineKind::Header(_));
    let outcome = action::apply(verdict, context, parameter, is_header, &key, &value);
    if outcome.stop {
        *inspecting = false;
    }
    sink.piece(Piece {
        kind,
        text: raw,
        prepend: outcome.prepend.as_deref(),
        disposition: match &outcome.line {
            LineEffect::Keep => Disposition::Keep,
            LineEffect::Remove => Disposition::Remove,
            LineEffect::Replace(new) => Disposition::Replace(new),
        },
    });
}

/// A fuzz target body: feeds `data` to a filter without tables, in chunks
/// whose sizes the first bytes of `data` choose, with small limits so that
/// every limit is reached. Panics if the filter panics or if its output
/// differs from its input (when no header was cut at the size limit).
///
/// ```
/// mta_restrictions::content::fuzz_content(b"\x03\x05Subject: x\r\n\r\nbody\r\n");
/// ```
pub fn fuzz_content(data: &[u8]) {
    let (sizes, content) = data.split_at(data.len().min(2));
    let step = |i: usize| usize::from(*sizes.get(i).unwrap_or(&7)).max(1);
    let tables = ContentTables::default();
    let limits = ContentLimits {
        header_size_limit: 300,
        line_length_limit: 40,
        body_checks_size_limit: 100,
        mime_nesting_limit: 3,
        disable_mime_input_processing: false,
    };
    let mut filter = ContentFilter::new(&tables, limits, MessageContext::default());
    let mut out = Vec::with_capacity(content.len());
    let mut sink = |p: Piece<'_>| p.write_to(&mut out);
    let mut rest = content;
    let mut i = 0;
    while !rest.is_empty() {
        let n = step(i).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        filter.feed(chunk, &mut sink);
        rest = tail;
        i += 1;
    }
    let verdict = filter.finish(&mut sink);
    if verdict.truncated_headers == 0 {
        assert!(out == content, "output differs from input");
    }
}

#[cfg(test)]
mod tests;

//! The MIME-aware classifier: line pieces in, logical headers and body
//! lines out, each with the class that decides which `*_checks` table
//! sees it.

use super::lines::{LinePiece, LineSplitter};
use super::{ContentLimits, HeaderClass};

/// What the classifier reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event<'a> {
    /// One logical header.
    Header {
        /// Which table list inspects it.
        class: HeaderClass,
        /// The input bytes (every physical line with its line end), cut
        /// at `header_size_limit`.
        raw: &'a [u8],
        /// The text that tables see: the physical lines joined with `\n`,
        /// without the last line end, at most `header_size_limit` bytes.
        key: &'a [u8],
    },
    /// One body line, or one piece of a body line longer than
    /// `line_length_limit`.
    Body {
        /// The input bytes, with the line end if this piece has it.
        raw: &'a [u8],
        /// The text without line end.
        text: &'a [u8],
        /// Whether the piece starts within `body_checks_size_limit` bytes
        /// of the start of its body segment.
        inspect: bool,
    },
}

/// Which header section is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    /// The message's own headers.
    Primary,
    /// The headers of a part of a multipart.
    Part,
    /// The headers of an attached `message/rfc822`.
    Nested,
}

/// The media type a header block announced, as far as MIME structure goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Structure {
    /// Anything without inner structure (text, images, ...).
    Leaf,
    /// A multipart with its boundary, and whether it is a digest (whose
    /// parts default to `message/rfc822`).
    Multipart { boundary: Vec<u8>, digest: bool },
    /// `message/rfc822`: headers of an attached message follow.
    Message,
}

/// One level of MIME nesting.
#[derive(Debug)]
enum Frame {
    Multipart { boundary: Vec<u8>, digest: bool },
    Message,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Header(Block),
    Body,
}

/// The streaming classifier. It holds at most one logical header (bounded
/// by `header_size_limit`) and one partial line (bounded by
/// `line_length_limit`), never the message.
#[derive(Debug)]
pub(crate) struct Classifier {
    limits: ContentLimits,
    lines: LineSplitter,
    section: Section,
    /// The structure announced by the header block being read.
    structure: Structure,
    frames: Vec<Frame>,
    /// MIME processing stopped (disabled, or after the primary headers
    /// with `disable_mime_input_processing`).
    flat: bool,
    /// The logical header being gathered.
    raw: Vec<u8>,
    key: Vec<u8>,
    /// A header is being gathered.
    in_header: bool,
    /// The header reached `header_size_limit`: further text is dropped.
    header_full: bool,
    /// The line that reached the limit still needs its line end.
    need_line_end: bool,
    /// The physical line being read is body text (its later pieces too).
    line_is_body: bool,
    body_offset: usize,
    /// How many headers were cut at `header_size_limit`.
    pub(crate) truncated_headers: usize,
    /// How many times `mime_nesting_limit` stopped MIME processing.
    pub(crate) nesting_exceeded: usize,
}

/// Header names that Postfix's `cleanup` always gives to
/// `mime_header_checks`, whatever section they are in (`header_opts.c`,
/// the `HDR_OPT_MIME` flag; verified with Postfix 3.7, see the tests).
const MIME_HEADER_NAMES: [&str; 6] = [
    "Content-Description",
    "Content-Disposition",
    "Content-ID",
    "Content-Transfer-Encoding",
    "Content-Type",
    "MIME-Version",
];

impl Classifier {
    pub(crate) fn new(limits: ContentLimits) -> Classifier {
        Classifier {
            lines: LineSplitter::new(limits.line_length_limit),
            limits,
            section: Section::Header(Block::Primary),
            structure: Structure::Leaf,
            frames: Vec::new(),
            flat: false,
            raw: Vec::new(),
            key: Vec::new(),
            in_header: false,
            header_full: false,
            need_line_end: false,
            line_is_body: false,
            body_offset: 0,
            truncated_headers: 0,
            nesting_exceeded: 0,
        }
    }

    /// Feeds a chunk of content.
    pub(crate) fn feed(&mut self, chunk: &[u8], out: &mut impl FnMut(Event<'_>)) {
        let mut lines = std::mem::replace(&mut self.lines, LineSplitter::new(1));
        lines.feed(chunk, &mut |piece| self.piece(piece, out));
        self.lines = lines;
    }

    /// Ends the content: a last unterminated line and a pending header go
    /// out.
    pub(crate) fn finish(&mut self, out: &mut impl FnMut(Event<'_>)) {
        let mut lines = std::mem::replace(&mut self.lines, LineSplitter::new(1));
        lines.finish(&mut |piece| self.piece(piece, out));
        self.lines = lines;
        self.flush_header(out);
    }

    fn piece(&mut self, piece: LinePiece<'_>, out: &mut impl FnMut(Event<'_>)) {
        match self.section {
            Section::Header(_) => {
                if !piece.first {
                    if self.line_is_body {
                        self.body_piece(piece, out);
                    } else {
                        self.append(piece, false);
                    }
                    return;
                }
                let text = piece.text();
                if text.is_empty() && piece.last {
                    // The blank line ends the block; Postfix hands it to
                    // the body callback at offset 0 (it counts toward
                    // body_checks_size_limit).
                    self.flush_header(out);
                    self.end_block();
                    self.line_is_body = true;
                    self.body_line_out(piece, out);
                    if let Section::Header(_) = self.section {
                        // message/rfc822: the nested headers follow.
                        self.line_is_body = false;
                    }
                } else if self.in_header && matches!(text.first(), Some(b' ' | b'\t')) {
                    self.line_is_body = false;
                    self.append(piece, true);
                } else if header_name_len(text).is_some() {
                    self.flush_header(out);
                    self.in_header = true;
                    self.line_is_body = false;
                    self.append(piece, false);
                } else {
                    // Not a header: the block ends without a blank line and
                    // this line is the first body line.
                    self.flush_header(out);
                    self.end_block();
                    self.line_is_body = true;
                    self.piece(piece, out);
                }
            }
            Section::Body => {
                if piece.first {
                    self.line_is_body = true;
                }
                self.body_piece(piece, out);
            }
        }
    }

    fn body_piece(&mut self, piece: LinePiece<'_>, out: &mut impl FnMut(Event<'_>)) {
        if piece.first
            && !self.flat
            && !self.frames.is_empty()
            && let Some(rest) = piece.text().strip_prefix(b"--")
            && let Some((index, after)) = self.find_boundary(rest)
        {
            if after.starts_with(b"--") {
                // Closing boundary: it starts a new body segment
                // (the epilogue) at offset 0, so body_checks see it
                // whatever the size limit (Postfix 3.7, see the
                // differential test).
                self.frames.truncate(index);
                self.section = Section::Body;
                self.body_offset = 0;
                self.body_line_out(piece, out);
            } else {
                // An opening boundary still belongs to the segment
                // before it.
                self.body_line_out(piece, out);
                self.frames.truncate(index + 1);
                let digest = matches!(self.frames[index], Frame::Multipart { digest: true, .. });
                self.structure = if digest {
                    Structure::Message
                } else {
                    Structure::Leaf
                };
                // Later pieces of a long boundary line stay body.
                self.section = Section::Header(Block::Part);
            }
            return;
        }
        self.body_line_out(piece, out);
    }

    /// The innermost enclosing multipart whose boundary starts `rest`.
    fn find_boundary<'r>(&self, rest: &'r [u8]) -> Option<(usize, &'r [u8])> {
        self.frames
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, f)| match f {
                Frame::Multipart { boundary, .. } => rest
                    .strip_prefix(boundary.as_slice())
                    .map(|after| (i, after)),
                Frame::Message => None,
            })
    }

    fn body_line_out(&mut self, piece: LinePiece<'_>, out: &mut impl FnMut(Event<'_>)) {
        let limit = self.limits.body_checks_size_limit;
        let inspect = limit == 0 || self.body_offset < limit;
        out(Event::Body {
            raw: piece.raw,
            text: piece.text(),
            inspect,
        });
        self.body_offset = self
            .body_offset
            .saturating_add(piece.text_len + usize::from(piece.last));
    }

    /// Adds a piece to the logical header, up to `header_size_limit`.
    fn append(&mut self, piece: LinePiece<'_>, new_line: bool) {
        let limit = self.limits.header_size_limit;
        if self.header_full {
            if self.need_line_end && piece.last {
                self.raw.extend_from_slice(piece.line_end());
                self.need_line_end = false;
            }
            return;
        }
        if new_line {
            if self.key.len() >= limit {
                self.header_full = true;
                return;
            }
            self.key.push(b'\n');
        }
        let text = piece.text();
        let room = limit.saturating_sub(self.key.len());
        let take = room.min(text.len());
        self.key.extend_from_slice(&text[..take]);
        self.raw.extend_from_slice(&text[..take]);
        if take < text.len() {
            self.header_full = true;
            self.need_line_end = !piece.last;
        }
        if piece.last {
            self.raw.extend_from_slice(piece.line_end());
        }
    }

    /// Reports the gathered header, if any, and notes the structure it
    /// announces.
    fn flush_header(&mut self, out: &mut impl FnMut(Event<'_>)) {
        if !self.in_header {
            return;
        }
        self.in_header = false;
        if self.header_full {
            self.truncated_headers += 1;
        }
        let name_len = header_name_len(&self.key).unwrap_or(0);
        let name = trim_end(&self.key[..name_len]);
        let is_mime = MIME_HEADER_NAMES
            .iter()
            .any(|n| n.as_bytes().eq_ignore_ascii_case(name));
        let block = match self.section {
            Section::Header(block) => block,
            Section::Body => Block::Primary,
        };
        let class = match block {
            Block::Part => HeaderClass::Mime,
            _ if is_mime => HeaderClass::Mime,
            Block::Primary => HeaderClass::Primary,
            Block::Nested => HeaderClass::Nested,
        };
        if !self.flat && name.eq_ignore_ascii_case(b"Content-Type") {
            self.structure = parse_content_type(&self.key[name_len + 1..]);
        }
        out(Event::Header {
            class,
            raw: &self.raw,
            key: &self.key,
        });
        self.raw.clear();
        self.key.clear();
        self.header_full = false;
        self.need_line_end = false;
    }

    /// A header block ended: decide what follows from the structure it
    /// announced.
    fn end_block(&mut self) {
        self.section = Section::Body;
        self.body_offset = 0;
        if self.limits.disable_mime_input_processing {
            self.flat = true;
        }
        if self.flat {
            return;
        }
        let structure = std::mem::replace(&mut self.structure, Structure::Leaf);
        if matches!(structure, Structure::Leaf) {
            return;
        }
        if self.frames.len() >= self.limits.mime_nesting_limit {
            self.nesting_exceeded += 1;
            return;
        }
        match structure {
            Structure::Leaf => {}
            Structure::Multipart { boundary, digest } => {
                self.frames.push(Frame::Multipart { boundary, digest });
            }
            Structure::Message => {
                self.frames.push(Frame::Message);
                self.section = Section::Header(Block::Nested);
            }
        }
    }
}

/// The length of a header name if `text` starts like a header: printable
/// ASCII other than `:`, then optional blanks, then `:`. Returns the
/// index of the colon.
pub(crate) fn header_name_len(text: &[u8]) -> Option<usize> {
    let label = text
        .iter()
        .take_while(|&&b| (33..=126).contains(&b) && b != b':')
        .count();
    if label == 0 {
        return None;
    }
    let blanks = text[label..]
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    (text.get(label + blanks) == Some(&b':')).then_some(label + blanks)
}

fn trim_end(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Reads the structure out of a `Content-Type` value (after the colon;
/// folded lines appear as `\n` plus blanks).
fn parse_content_type(value: &[u8]) -> Structure {
    let mut p = Tokens { s: value };
    let Some(kind) = p.token() else {
        return Structure::Leaf;
    };
    if !p.punct(b'/') {
        return Structure::Leaf;
    }
    let Some(sub) = p.token() else {
        return Structure::Leaf;
    };
    if kind.eq_ignore_ascii_case(b"message") {
        return if sub.eq_ignore_ascii_case(b"rfc822") {
            Structure::Message
        } else {
            Structure::Leaf
        };
    }
    if !kind.eq_ignore_ascii_case(b"multipart") {
        return Structure::Leaf;
    }
    let digest = sub.eq_ignore_ascii_case(b"digest");
    while p.punct(b';') {
        let Some(name) = p.token() else { break };
        if !p.punct(b'=') {
            continue;
        }
        let Some(value) = p.value() else { break };
        if name.eq_ignore_ascii_case(b"boundary") && !value.is_empty() {
            return Structure::Multipart {
                boundary: value,
                digest,
            };
        }
    }
    Structure::Leaf
}

/// A tiny RFC 2045 tokenizer over a header value.
struct Tokens<'a> {
    s: &'a [u8],
}

impl<'a> Tokens<'a> {
    /// Skips white space, line breaks and (nested) comments.
    fn skip(&mut self) {
        loop {
            match self.s.first() {
                Some(b' ' | b'\t' | b'\r' | b'\n') => self.s = &self.s[1..],
                Some(b'(') => {
                    let mut depth = 0usize;
                    let mut i = 0;
                    while i < self.s.len() {
                        match self.s[i] {
                            b'\\' => i += 1,
                            b'(' => depth += 1,
                            b')' => {
                                depth -= 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            _ => {}
                        }
                        i += 1;
                    }
                    self.s = self.s.get(i + 1..).unwrap_or(&[]);
                }
                _ => return,
            }
        }
    }

    fn token(&mut self) -> Option<&'a [u8]> {
        self.skip();
        let n = self
            .s
            .iter()
            .take_while(|&&b| b > b' ' && b < 127 && !b"()<>@,;:\\\"/[]?=".contains(&b))
            .count();
        if n == 0 {
            return None;
        }
        let (t, rest) = self.s.split_at(n);
        self.s = rest;
        Some(t)
    }

    fn punct(&mut self, c: u8) -> bool {
        self.skip();
        if self.s.first() == Some(&c) {
            self.s = &self.s[1..];
            true
        } else {
            false
        }
    }

    /// A parameter value: a token or a quoted string.
    fn value(&mut self) -> Option<Vec<u8>> {
        self.skip();
        if self.s.first() == Some(&b'"') {
            let mut v = Vec::new();
            let mut i = 1;
            while i < self.s.len() {
                match self.s[i] {
                    b'"' => {
                        self.s = &self.s[i + 1..];
                        return Some(v);
                    }
                    b'\\' if i + 1 < self.s.len() => {
                        v.push(self.s[i + 1]);
                        i += 1;
                    }
                    b'\r' | b'\n' => {}
                    b => v.push(b),
                }
                i += 1;
            }
            self.s = &[];
            Some(v)
        } else {
            self.token().map(<[u8]>::to_vec)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names() {
        assert_eq!(header_name_len(b"Subject: x"), Some(7));
        assert_eq!(header_name_len(b"Subject : x"), Some(8));
        assert_eq!(header_name_len(b"Subject"), None);
        assert_eq!(header_name_len(b": x"), None);
        assert_eq!(header_name_len(b" Subject: x"), None);
        assert_eq!(header_name_len(b"Sub ject: x"), None);
    }

    #[test]
    fn content_types() {
        assert_eq!(
            parse_content_type(b" multipart/mixed; boundary=\"a b\""),
            Structure::Multipart {
                boundary: b"a b".to_vec(),
                digest: false
            }
        );
        assert_eq!(
            parse_content_type(b" Multipart/Digest (c);\n\tcharset=x;\n\tBOUNDARY=zz"),
            Structure::Multipart {
                boundary: b"zz".to_vec(),
                digest: true
            }
        );
        assert_eq!(parse_content_type(b" message/RFC822"), Structure::Message);
        assert_eq!(parse_content_type(b" multipart/mixed"), Structure::Leaf);
        assert_eq!(
            parse_content_type(b" text/plain; boundary=x"),
            Structure::Leaf
        );
    }
}

//! Physical lines from a stream of chunks, split into pieces of at most
//! `line_length_limit` bytes as Postfix's `smtpd` records them.
//!
//! A line that lies whole inside one chunk is handed on as a slice of that
//! chunk; only a line cut by a chunk boundary is gathered in a buffer,
//! which never grows past `line_length_limit + 1` bytes: once it is sure
//! that more text follows, the first `line_length_limit` bytes go out as a
//! piece of their own.

/// One piece of a physical line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinePiece<'a> {
    /// The input bytes of the piece: its text, and the line end if it is
    /// the last piece of the line.
    pub(crate) raw: &'a [u8],
    /// How many bytes of `raw` are text (the rest is `\r\n` or `\n`).
    pub(crate) text_len: usize,
    /// Whether this is the first piece of its physical line.
    pub(crate) first: bool,
    /// Whether this is the last piece (it holds the line end, or the
    /// input ended).
    pub(crate) last: bool,
}

impl<'a> LinePiece<'a> {
    /// The text of the piece, without line end.
    pub(crate) fn text(&self) -> &'a [u8] {
        &self.raw[..self.text_len]
    }

    /// The line end of the piece (empty unless last).
    pub(crate) fn line_end(&self) -> &'a [u8] {
        &self.raw[self.text_len..]
    }
}

/// Splits a byte stream into line pieces.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    limit: usize,
    pending: Vec<u8>,
    /// A piece of the current line has already gone out.
    mid_line: bool,
}

impl LineSplitter {
    /// A splitter cutting lines into pieces of at most `limit` bytes of
    /// text (`limit` is at least 1).
    pub(crate) fn new(limit: usize) -> LineSplitter {
        LineSplitter {
            limit: limit.max(1),
            pending: Vec::new(),
            mid_line: false,
        }
    }

    /// Feeds one chunk; `out` receives each complete piece.
    pub(crate) fn feed(&mut self, mut chunk: &[u8], out: &mut impl FnMut(LinePiece<'_>)) {
        while !chunk.is_empty() {
            let newline = chunk.iter().position(|&b| b == b'\n');
            if self.pending.is_empty() {
                match newline {
                    Some(i) => {
                        let (line, rest) = chunk.split_at(i + 1);
                        self.emit_line(line, out);
                        chunk = rest;
                    }
                    None => {
                        // Send out the pieces that are surely followed by
                        // more text, keep the rest.
                        let mut start = 0;
                        while self.surely_longer(&chunk[start..]) {
                            self.emit_partial(&chunk[start..start + self.limit], out);
                            start += self.limit;
                        }
                        self.pending.extend_from_slice(&chunk[start..]);
                        return;
                    }
                }
            } else {
                match newline {
                    Some(i) => {
                        let (head, rest) = chunk.split_at(i + 1);
                        let mut line = std::mem::take(&mut self.pending);
                        line.extend_from_slice(head);
                        self.emit_line(&line, out);
                        line.clear();
                        self.pending = line;
                        chunk = rest;
                    }
                    None => {
                        self.pending.extend_from_slice(chunk);
                        self.drain_pending(out);
                        return;
                    }
                }
            }
        }
    }

    /// Ends the input: a last line without line end goes out as it is.
    pub(crate) fn finish(&mut self, out: &mut impl FnMut(LinePiece<'_>)) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.emit_line(&line, out);
        }
        self.mid_line = false;
    }

    /// Whether `text` (no newline in it) certainly holds more than `limit`
    /// bytes of line text: a `\r` just past the limit may yet be the start
    /// of the line end.
    fn surely_longer(&self, text: &[u8]) -> bool {
        text.len() > self.limit + 1 || (text.len() == self.limit + 1 && text[self.limit] != b'\r')
    }

    fn drain_pending(&mut self, out: &mut impl FnMut(LinePiece<'_>)) {
        let mut start = 0;
        while self.surely_longer(&self.pending[start..]) {
            let piece = LinePiece {
                raw: &self.pending[start..start + self.limit],
                text_len: self.limit,
                first: !self.mid_line,
                last: false,
            };
            out(piece);
            self.mid_line = true;
            start += self.limit;
        }
        self.pending.drain(..start);
    }

    fn emit_partial(&mut self, text: &[u8], out: &mut impl FnMut(LinePiece<'_>)) {
        out(LinePiece {
            raw: text,
            text_len: text.len(),
            first: !self.mid_line,
            last: false,
        });
        self.mid_line = true;
    }

    /// Emits a line (ending with `\n`, or the unterminated end of input)
    /// as pieces.
    fn emit_line(&mut self, line: &[u8], out: &mut impl FnMut(LinePiece<'_>)) {
        let text_len = match line {
            [text @ .., b'\r', b'\n'] | [text @ .., b'\n'] => text.len(),
            _ => line.len(),
        };
        let mut start = 0;
        while text_len - start > self.limit {
            self.emit_partial(&line[start..start + self.limit], out);
            start += self.limit;
        }
        out(LinePiece {
            raw: &line[start..],
            text_len: text_len - start,
            first: !self.mid_line,
            last: true,
        });
        self.mid_line = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(limit: usize, chunks: &[&[u8]]) -> Vec<(Vec<u8>, usize, bool, bool)> {
        let mut s = LineSplitter::new(limit);
        let mut v = Vec::new();
        let mut out = |p: LinePiece<'_>| v.push((p.raw.to_vec(), p.text_len, p.first, p.last));
        for c in chunks {
            s.feed(c, &mut out);
        }
        s.finish(&mut out);
        v
    }

    #[test]
    fn lines_whole_and_split_across_chunks() {
        let one = pieces(10, &[b"ab\r\ncd\r\n"]);
        assert_eq!(one.len(), 2);
        assert_eq!(one[0], (b"ab\r\n".to_vec(), 2, true, true));
        let split = pieces(10, &[b"a", b"b\r", b"\ncd\r\n"]);
        assert_eq!(one, split);
    }

    #[test]
    fn long_lines_are_cut_into_pieces_of_the_limit() {
        let whole = pieces(4, &[b"abcdefghij\r\n"]);
        assert_eq!(
            whole,
            vec![
                (b"abcd".to_vec(), 4, true, false),
                (b"efgh".to_vec(), 4, false, false),
                (b"ij\r\n".to_vec(), 2, false, true),
            ]
        );
        let bytes: Vec<&[u8]> = b"abcdefghij\r\n".chunks(1).collect();
        assert_eq!(pieces(4, &bytes), whole);
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_one_piece_whatever_the_split() {
        let whole = pieces(4, &[b"abcd\r\n"]);
        assert_eq!(whole, vec![(b"abcd\r\n".to_vec(), 4, true, true)]);
        assert_eq!(pieces(4, &[b"abcd\r", b"\n"]), whole);
        assert_eq!(pieces(4, &[b"abcd", b"\r\n"]), whole);
    }

    #[test]
    fn unterminated_last_line() {
        assert_eq!(pieces(10, &[b"ab"]), vec![(b"ab".to_vec(), 2, true, true)]);
    }
}

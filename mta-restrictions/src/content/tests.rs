//! Tests of the classifier and the actions. Expected classes, offsets and
//! pieces come from runs of Postfix 3.7 (Debian) with catch-all `WARN`
//! tables; the probes are quoted beside each test.

use std::sync::Arc;

use mta_maps::list::MapList;
use mta_maps::regexp::RegexpTable;
use mta_maps::{KeyKind, Lookup, Map};
use proptest::prelude::*;

use super::*;

fn table(text: &str) -> MapList {
    let (t, warnings) = RegexpTable::parse(text, "regexp:test");
    assert!(warnings.is_empty(), "{warnings:?}");
    MapList::new(vec![Arc::new(t)])
}

/// Every event as (kind, text) with `\r\n` shown as `\n`, fed in chunks of
/// `chunk` bytes.
fn classify(limits: ContentLimits, message: &str, chunk: usize) -> Vec<(LineKind, String)> {
    let tables = ContentTables::default();
    let mut f = ContentFilter::new(&tables, limits, MessageContext::default());
    let mut v = Vec::new();
    let mut sink = |p: Piece<'_>| {
        v.push((
            p.kind,
            String::from_utf8_lossy(p.text).replace("\r\n", "\n"),
        ))
    };
    let crlf = message.replace('\n', "\r\n");
    for c in crlf.as_bytes().chunks(chunk.max(1)) {
        f.feed(c, &mut sink);
    }
    f.finish(&mut sink);
    v
}

/// Runs `message` (LF line ends, sent as CRLF) through `tables`.
fn run(tables: &ContentTables, limits: ContentLimits, message: &str) -> (Vec<u8>, ContentVerdict) {
    let context = MessageContext {
        queue_id: None,
        client: "localhost[127.0.0.1]".into(),
        sender: Some("a@example.org".into()),
        recipient: Some("b@example.com".into()),
        protocol: Some("ESMTP".into()),
        helo: Some("client.example.org".into()),
    };
    let mut f = ContentFilter::new(tables, limits, context);
    let mut out = Vec::new();
    let mut sink = |p: Piece<'_>| p.write_to(&mut out);
    f.feed(message.replace('\n', "\r\n").as_bytes(), &mut sink);
    let v = f.finish(&mut sink);
    (out, v)
}

const H: LineKind = LineKind::Header(HeaderClass::Primary);
const M: LineKind = LineKind::Header(HeaderClass::Mime);
const N: LineKind = LineKind::Header(HeaderClass::Nested);
const B: LineKind = LineKind::Body;

/// The message of the Postfix probe "cls" (its `Received:` left out).
const CLS: &str = "Content-Type: multipart/mixed; boundary=B1\nSubject: x\nContent-Length: 5\nContent-Foo: 5\nmime-version: 1.0\nContent-ID: <x>\nContent-Description: x\nContent-Disposition: x\nContent-Transfer-Encoding: 7bit\nResent-Content-Type: 7bit\nX-Long: 0123456789\n\npre1 0123456789\npre2 0123456789\npre3 0123456789\n--B1\nX-Part: p\nContent-Type: message/rfc822\n\nX-Nest: n\nContent-Type: text/plain\n\nnbody1 0123456789\nnbody2 0123456789\nnbody3 0123456789\n--B1\n\npart2 line1\n--B1--\nepilogue1 0123456789\nepilogue2 0123456789\nepilogue3 0123456789\n";

#[test]
fn classes_as_postfix_gives_them() {
    let got = classify(ContentLimits::default(), CLS, 5);
    let kinds: Vec<(LineKind, &str)> = got.iter().map(|(k, t)| (*k, t.trim_end())).collect();
    let expected = vec![
        (M, "Content-Type: multipart/mixed; boundary=B1"),
        (H, "Subject: x"),
        (H, "Content-Length: 5"),
        (H, "Content-Foo: 5"),
        (M, "mime-version: 1.0"),
        (M, "Content-ID: <x>"),
        (M, "Content-Description: x"),
        (M, "Content-Disposition: x"),
        (M, "Content-Transfer-Encoding: 7bit"),
        (H, "Resent-Content-Type: 7bit"),
        (H, "X-Long: 0123456789"),
        (B, ""),
        (B, "pre1 0123456789"),
        (B, "pre2 0123456789"),
        (B, "pre3 0123456789"),
        (B, "--B1"),
        (M, "X-Part: p"),
        (M, "Content-Type: message/rfc822"),
        (B, ""),
        (N, "X-Nest: n"),
        (M, "Content-Type: text/plain"),
        (B, ""),
        (B, "nbody1 0123456789"),
        (B, "nbody2 0123456789"),
        (B, "nbody3 0123456789"),
        (B, "--B1"),
        (B, ""),
        (B, "part2 line1"),
        (B, "--B1--"),
        (B, "epilogue1 0123456789"),
        (B, "epilogue2 0123456789"),
        (B, "epilogue3 0123456789"),
    ];
    assert_eq!(kinds, expected);
}

/// Which body lines `body_checks` sees with a size limit.
fn inspected(limit: usize, message: &str) -> Vec<String> {
    let tables = ContentTables {
        body: table("/^(.+)$/ WARN $1\n"),
        ..ContentTables::default()
    };
    let limits = ContentLimits {
        body_checks_size_limit: limit,
        ..ContentLimits::default()
    };
    let (_, v) = run(&tables, limits, message);
    v.log
        .iter()
        .map(|l| l.rsplit(": ").next().unwrap().to_string())
        .collect()
}

#[test]
fn body_checks_size_limit_per_segment_as_postfix() {
    // Postfix 3.7, body_checks_size_limit = 30, probe "cls".
    assert_eq!(
        inspected(30, CLS),
        [
            "pre1 0123456789",
            "pre2 0123456789",
            "nbody1 0123456789",
            "nbody2 0123456789",
            "part2 line1",
            "--B1--",
            "epilogue1 0123456789",
            "epilogue2 0123456789",
        ]
    );
    // body_checks_size_limit = 17: the blank line that ends the headers
    // counts one byte, so pre2 starts at 17 and is not inspected.
    assert_eq!(
        inspected(17, "Subject: x\n\npre1 0123456789\npre2 0123456789\n"),
        ["pre1 0123456789"]
    );
    assert_eq!(
        inspected(0, "Subject: x\n\npre1 0123456789\npre2 0123456789\n").len(),
        2,
        "0 means no limit"
    );
}

#[test]
fn long_body_lines_are_inspected_in_pieces() {
    // Postfix 3.7 with line_length_limit = 512: pieces A*511+B, B*510+CC, C*28.
    let tables = ContentTables {
        body: table("/^A+B$/ WARN piece1\n/^B+CC$/ WARN piece2\n/^C+$/ WARN piece3\n"),
        ..ContentTables::default()
    };
    let limits = ContentLimits {
        line_length_limit: 512,
        ..ContentLimits::default()
    };
    let message = format!(
        "Subject: x\n\n{}{}{}\nnext\n",
        "A".repeat(511),
        "B".repeat(511),
        "C".repeat(30)
    );
    let (out, v) = run(&tables, limits, &message);
    let texts: Vec<&str> = v
        .log
        .iter()
        .map(|l| l.rsplit(": ").next().unwrap())
        .collect();
    assert_eq!(texts, ["piece1", "piece2", "piece3"]);
    assert_eq!(out, message.replace('\n', "\r\n").as_bytes());
}

#[test]
fn long_headers_are_joined_and_cut_at_the_size_limit() {
    // Postfix 3.7, header_size_limit = 600, line_length_limit = 512: the
    // pieces are joined without separator and cut at 600 bytes.
    let tables = ContentTables {
        header: table(
            "/^X-LongHdr: A+B+$/ WARN joined truncated exact\n/^X-Big: .*END/ WARN big saw end\n/^X-Big: / WARN big seen\n",
        ),
        ..ContentTables::default()
    };
    let limits = ContentLimits {
        header_size_limit: 600,
        line_length_limit: 512,
        ..ContentLimits::default()
    };
    let long = format!(
        "X-LongHdr: {}{}{}",
        "A".repeat(511),
        "B".repeat(511),
        "C".repeat(30)
    );
    let x = "0123456789".repeat(10);
    let big = format!("X-Big: {x}\n {x}\n {x}\n {x}\n {x}\n {x}\n {x} END");
    let message = format!("Subject: x\n{long}\n{big}\nX-After: y\n\nbody\n");
    let (out, v) = run(&tables, limits, &message);
    let texts: Vec<&str> = v
        .log
        .iter()
        .map(|l| l.rsplit(": ").next().unwrap())
        .collect();
    assert_eq!(texts, ["joined truncated exact", "big seen"]);
    assert_eq!(v.truncated_headers, 2);
    // The excess is dropped from the output; each cut header keeps a line end.
    let out = String::from_utf8(out).unwrap();
    let expected_long = format!(
        "X-LongHdr: {}{}\r\n",
        "A".repeat(511),
        "B".repeat(600 - 11 - 511)
    );
    assert!(out.contains(&expected_long), "{out}");
    assert!(!out.contains("END"));
    assert!(out.contains("\r\nX-After: y\r\n\r\nbody\r\n"));
}

#[test]
fn folded_headers_are_one_key_with_line_breaks() {
    let tables = ContentTables {
        header: table(
            "/^X-Folded: a b$/ REJECT unfolded\n/^X-Folded: a[[:space:]]{2}b$/ REJECT folded with LF\n",
        ),
        ..ContentTables::default()
    };
    let (out, v) = run(
        &tables,
        ContentLimits::default(),
        "X-Folded: a\n\tb\nSubject: x\n\nbody\n",
    );
    assert_eq!(v.reject.unwrap().text, "5.7.1 folded with LF");
    assert_eq!(out, b"X-Folded: a\r\n\tb\r\nSubject: x\r\n\r\nbody\r\n");
}

#[test]
fn headers_end_at_a_line_that_is_not_a_header() {
    let got = classify(
        ContentLimits::default(),
        "Subject: x\nnot a header\n more\n",
        3,
    );
    assert_eq!(
        got,
        [
            (H, "Subject: x\n".to_string()),
            (B, "not a header\n".to_string()),
            (B, " more\n".to_string())
        ]
    );
    // A continuation line with no header before it is body.
    assert_eq!(
        classify(ContentLimits::default(), " x\n", 1),
        [(B, " x\n".to_string())]
    );
}

#[test]
fn nested_multiparts_and_digest() {
    let message = "Content-Type: multipart/mixed; boundary=outer\n\n--outer\nContent-Type: multipart/digest;\n boundary=\"in ner\"\n\n--in ner\n\nX-D: digest part is a message\n\ntext\n--outer\nX-P: back in outer\n\nx\n--outer--\n";
    let got = classify(ContentLimits::default(), message, 7);
    let kinds: Vec<(LineKind, &str)> = got.iter().map(|(k, t)| (*k, t.trim_end())).collect();
    assert_eq!(
        kinds,
        [
            (M, "Content-Type: multipart/mixed; boundary=outer"),
            (B, ""),
            (B, "--outer"),
            (M, "Content-Type: multipart/digest;\n boundary=\"in ner\""),
            (B, ""),
            (B, "--in ner"),
            (B, ""),
            (N, "X-D: digest part is a message"),
            (B, ""),
            (B, "text"),
            (B, "--outer"),
            (M, "X-P: back in outer"),
            (B, ""),
            (B, "x"),
            (B, "--outer--"),
        ]
    );
}

#[test]
fn mime_processing_off_and_nesting_limit() {
    let message = "Content-Type: multipart/mixed; boundary=b\n\n--b\nX-P: p\n\nx\n";
    let flat = ContentLimits {
        disable_mime_input_processing: true,
        ..ContentLimits::default()
    };
    let got = classify(flat, message, 100);
    assert!(got[1..].iter().all(|(k, _)| *k == B), "{got:?}");
    let shallow = ContentLimits {
        mime_nesting_limit: 0,
        ..ContentLimits::default()
    };
    let got = classify(shallow, message, 100);
    assert!(got[1..].iter().all(|(k, _)| *k == B), "{got:?}");
}

/// The reference site's tables (examples/small-office), read as written;
/// with `seed_only`, header_checks without the attachment rule the
/// example adds after the seed's rules.
fn reference_tables(mime_from_body: bool, seed_only: bool) -> ContentTables {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/small-office");
    let mut header =
        std::fs::read_to_string(dir.join("header_checks")).expect("reference header_checks");
    if seed_only {
        let cut = header
            .find("# The seed puts")
            .expect("the example's own rule is marked");
        header.truncate(cut);
    }
    let body = std::fs::read_to_string(dir.join("body_checks")).expect("reference body_checks");
    let header = table(&header);
    let body = table(&body);
    ContentTables {
        mime_header: if mime_from_body {
            body.clone()
        } else {
            header.clone()
        },
        nested_header: header.clone(),
        header,
        body,
    }
}

const EXE_ATTACHMENT: &str = "From: a@example.org\nSubject: report\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"XYZ\"\n\n--XYZ\nContent-Type: text/plain\n\nsee attached\n--XYZ\nContent-Type: application/octet-stream\nContent-Disposition: attachment; filename=\"x.exe\"\nContent-Transfer-Encoding: base64\n\nTVqQAAMAAAAEAAAA\n--XYZ--\n";

const EXE_FOLDED_NAME: &str = "Subject: report\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"XYZ\"\n\n--XYZ\nContent-Type: application/octet-stream;\n\tname=\"invoice.pdf.scr\"\n\nTVqQAAMAAAAEAAAA\n--XYZ--\n";

#[test]
fn reference_site_header_checks() {
    let tables = reference_tables(false, false);
    let (_, v) = run(
        &tables,
        ContentLimits::default(),
        "Subject: FREE OFFER!! click\n\nhi\n",
    );
    assert_eq!(
        v.reply().unwrap().unwrap().to_string(),
        "550 5.7.1 message content rejected"
    );
    assert_eq!(
        v.log,
        [
            "reject: header Subject: FREE OFFER!! click from localhost[127.0.0.1]; from=<a@example.org> to=<b@example.com> proto=ESMTP helo=<client.example.org>: 5.7.1 message content rejected"
        ]
    );
    let (_, v) = run(
        &tables,
        ContentLimits::default(),
        "Subject: hi\nX-Mailer: the Some Spamware Tool 2\n\nhi\n",
    );
    assert_eq!(v.reject.unwrap().text, "5.7.1 message content rejected");
    // Case-insensitive, as regexp tables are by default.
    let (_, v) = run(
        &tables,
        ContentLimits::default(),
        "subject: free offer!!\n\nhi\n",
    );
    assert!(v.reject.is_some());
    let (_, v) = run(
        &tables,
        ContentLimits::default(),
        "Subject: a FREE OFFER!!\n\nhi\n",
    );
    assert!(v.reject.is_none());
}

#[test]
fn reference_site_body_checks_see_body_lines_not_mime_headers() {
    let tables = reference_tables(false, true);
    // As in Postfix 3.7: with MIME processing on, the part headers go to
    // mime_header_checks (= header_checks here), never to body_checks, so
    // the attachment rule written in body_checks does not fire.
    for m in [EXE_ATTACHMENT, EXE_FOLDED_NAME] {
        let (out, v) = run(&tables, ContentLimits::default(), m);
        assert!(v.reject.is_none(), "{v:?}");
        assert_eq!(out, m.replace('\n', "\r\n").as_bytes());
    }
    // The same line in plain body text is rejected with the table's text.
    let (_, v) = run(
        &tables,
        ContentLimits::default(),
        "Subject: x\n\nContent-Disposition: attachment; filename=\"x.exe\"\n",
    );
    assert_eq!(
        v.reply().unwrap().unwrap().to_string(),
        "550 5.7.1 Mail contains banned attachment"
    );
    // With disable_mime_input_processing = yes everything after the
    // primary headers is body, and the rule catches the attachment.
    let flat = ContentLimits {
        disable_mime_input_processing: true,
        ..ContentLimits::default()
    };
    let (_, v) = run(&tables, flat, EXE_ATTACHMENT);
    assert_eq!(
        v.reply().unwrap().unwrap().to_string(),
        "550 5.7.1 Mail contains banned attachment"
    );
}

/// The example's own header_checks rule stops MIME attachments, folded
/// or not, which the seed's body_checks rule cannot.
#[test]
fn reference_site_rejects_banned_mime_attachments() {
    let tables = reference_tables(false, false);
    for m in [EXE_ATTACHMENT, EXE_FOLDED_NAME] {
        let (_, v) = run(&tables, ContentLimits::default(), m);
        assert_eq!(
            v.reply().unwrap().unwrap().to_string(),
            "550 5.7.1 Mail contains banned attachment",
            "{m}"
        );
    }
    // An allowed attachment passes.
    let pdf = EXE_ATTACHMENT.replace("x.exe", "x.pdf");
    let (_, v) = run(&tables, ContentLimits::default(), &pdf);
    assert!(v.reject.is_none(), "{v:?}");
}

#[test]
fn attachment_rule_as_mime_header_check_catches_folded_names() {
    let tables = reference_tables(true, true);
    let (_, v) = run(&tables, ContentLimits::default(), EXE_ATTACHMENT);
    assert_eq!(
        v.reject.as_ref().unwrap().text,
        "5.7.1 Mail contains banned attachment"
    );
    assert!(
        v.log[0]
            .starts_with("reject: header Content-Disposition: attachment; filename=\"x.exe\" from")
    );
    let (_, v) = run(&tables, ContentLimits::default(), EXE_FOLDED_NAME);
    assert_eq!(
        v.reject.as_ref().unwrap().text,
        "5.7.1 Mail contains banned attachment"
    );
    // The line break shows as '?' in the log, as Postfix prints it.
    assert!(
        v.log[0].contains("application/octet-stream;??name="),
        "{}",
        v.log[0]
    );
}

#[test]
fn actions_change_lines_and_verdict() {
    let tables = ContentTables {
        header: table(concat!(
            "/^X-Ignore:/ IGNORE\n",
            "/^X-Strip:/ STRIP gone\n",
            "/^X-Replace:/ REPLACE X-Replaced: yes\n",
            "/^X-Prepend:/ PREPEND X-Before: 1\n",
            "/^X-Hold:/ HOLD held\n",
            "/^X-Redirect:/ REDIRECT other@example.net\n",
            "/^X-Filter:/ FILTER smtp:[127.0.0.1]:10025\n",
            "/^X-Bcc:/ BCC archive@example.net\n",
            "/^X-Info:/ INFO noted\n",
            "/^X-Bad:/ FROBNICATE now\n",
            "/^X-BadPrepend:/ PREPEND no header\n",
            "/^X-Dunno:/ DUNNO\n",
            "/^X-Ok:/ OK\n",
        )),
        body: table(
            "/^drop me$/ IGNORE\n/^change me$/ REPLACE changed\n/^stop$/ DISCARD bye\n/^after$/ REJECT too late\n",
        ),
        ..ContentTables::default()
    };
    let message = "X-Ignore: 1\nX-Strip: 1\nX-Replace: 1\nX-Prepend: 1\nX-Hold: 1\nX-Redirect: 1\nX-Filter: 1\nX-Bcc: 1\nX-Bcc: 2\nX-Info: 1\nX-Bad: 1\nX-BadPrepend: 1\nX-Dunno: 1\nX-Ok: 1\n\ndrop me\nchange me\nstop\nafter\n";
    let (out, v) = run(&tables, ContentLimits::default(), message);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "X-Replaced: yes\r\nX-Before: 1\r\nX-Prepend: 1\r\nX-Hold: 1\r\nX-Redirect: 1\r\nX-Filter: 1\r\nX-Bcc: 1\r\nX-Bcc: 2\r\nX-Info: 1\r\nX-Bad: 1\r\nX-BadPrepend: 1\r\nX-Dunno: 1\r\nX-Ok: 1\r\n\r\nchanged\r\nstop\r\nafter\r\n"
    );
    assert!(
        v.hold && v.discard && v.reject.is_none(),
        "DISCARD ends inspection"
    );
    assert_eq!(v.redirect.as_deref(), Some("other@example.net"));
    assert_eq!(v.filter.as_deref(), Some("smtp:[127.0.0.1]:10025"));
    assert_eq!(v.bcc, ["archive@example.net"]);
    assert!(v.reply().is_none());
    let suffix = " from localhost[127.0.0.1]; from=<a@example.org> to=<b@example.com> proto=ESMTP helo=<client.example.org>";
    assert_eq!(
        v.log,
        [
            format!("strip: header X-Strip: 1{suffix}: gone"),
            format!("replace: header X-Replace: 1{suffix}: X-Replaced: yes"),
            format!("prepend: header X-Prepend: 1{suffix}: X-Before: 1"),
            format!("hold: header X-Hold: 1{suffix}: held"),
            format!("redirect: header X-Redirect: 1{suffix}: other@example.net"),
            format!("info: header X-Info: 1{suffix}: noted"),
            "warning: unknown command in header_checks map: FROBNICATE now".to_string(),
            "warning: bad PREPEND header text \"no header\" in header_checks map -- need \"headername: headervalue\"".to_string(),
            format!("replace: body change me{suffix}: changed"),
            format!("discard: body stop{suffix}: bye"),
        ]
    );
}

#[test]
fn reject_stops_inspection_and_4xx_codes() {
    let tables = ContentTables {
        body: table("/^one$/ REJECT 4.7.0 try later\n/^two$/ REJECT second\n/^three$/ IGNORE\n"),
        ..ContentTables::default()
    };
    let (out, v) = run(
        &tables,
        ContentLimits::default(),
        "Subject: x\n\none\ntwo\nthree\n",
    );
    assert_eq!(
        v.reply().unwrap().unwrap().to_string(),
        "451 4.7.0 try later"
    );
    assert_eq!(v.log.len(), 1);
    assert!(
        String::from_utf8(out)
            .unwrap()
            .ends_with("one\r\ntwo\r\nthree\r\n")
    );
    let tables = ContentTables {
        body: table("/^one$/ REJECT 2.0.0 odd\n"),
        ..ContentTables::default()
    };
    let (_, v) = run(&tables, ContentLimits::default(), "Subject: x\n\none\n");
    assert_eq!(v.reply().unwrap().unwrap().to_string(), "451 4.0.0 odd");
}

/// A table that always has to wait, like a network table.
#[derive(Debug)]
struct Waiting;

impl Map for Waiting {
    fn lookup<'a>(&'a self, _key: &'a str) -> Lookup<'a> {
        Lookup::pending(std::future::pending())
    }
    fn name(&self) -> &str {
        "pgsql:/etc/mta/checks.cf"
    }
    fn key_kind(&self) -> KeyKind {
        KeyKind::Fixed
    }
}

#[test]
fn a_table_that_cannot_answer_now_fails_the_message_temporarily() {
    let tables = ContentTables {
        header: MapList::new(vec![Arc::new(Waiting)]),
        ..ContentTables::default()
    };
    let (out, v) = run(&tables, ContentLimits::default(), "Subject: x\n\nbody\n");
    assert_eq!(
        v.reply().unwrap().unwrap().to_string(),
        "451 4.3.0 Error: queue file write error"
    );
    assert!(matches!(
        v.temporary_failure,
        Some(ContentError::Lookup {
            parameter: "header_checks",
            ..
        })
    ));
    assert_eq!(out, b"Subject: x\r\n\r\nbody\r\n");
}

#[test]
fn empty_lines_never_match() {
    let tables = ContentTables {
        body: table("/^$/ REJECT empty\n"),
        ..ContentTables::default()
    };
    let (_, v) = run(&tables, ContentLimits::default(), "Subject: x\n\n\n\n");
    assert!(v.reject.is_none());
}

/// Messages built from pieces that exercise every path: headers, folds,
/// multiparts, nested messages, long lines, bare LF, no final line end.
fn message_strategy() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        Just("Subject: hello".to_string()),
        Just("X-Folded: a".to_string()),
        Just("\tcontinued".to_string()),
        Just(" cont".to_string()),
        Just("Content-Type: multipart/mixed; boundary=b1".to_string()),
        Just("Content-Type: multipart/alternative;".to_string()),
        Just(" boundary=\"b2\"".to_string()),
        Just("Content-Type: message/rfc822".to_string()),
        Just("Content-Type: multipart/digest; boundary=d".to_string()),
        Just("--b1".to_string()),
        Just("--b2".to_string()),
        Just("--d".to_string()),
        Just("--b1--".to_string()),
        Just("--b2--".to_string()),
        Just(String::new()),
        "[ -~]{0,90}",
        "[a-zA-Z-]{1,12}: [ -~]{0,20}",
    ];
    let ending = prop_oneof![Just("\r\n"), Just("\n"), Just("\r\n"), Just("\r")];
    prop::collection::vec((line, ending), 0..40).prop_map(|lines| {
        let mut m = Vec::new();
        for (l, e) in lines {
            m.extend_from_slice(l.as_bytes());
            m.extend_from_slice(e.as_bytes());
        }
        m
    })
}

fn events_with_splits(
    limits: ContentLimits,
    message: &[u8],
    splits: &[usize],
) -> (Vec<(LineKind, Vec<u8>)>, Vec<u8>) {
    let tables = ContentTables::default();
    let mut f = ContentFilter::new(&tables, limits, MessageContext::default());
    let mut events = Vec::new();
    let mut out = Vec::new();
    let mut sink = |p: Piece<'_>| {
        p.write_to(&mut out);
        events.push((p.kind, p.text.to_vec()));
    };
    let mut rest = message;
    for &s in splits {
        let n = s.min(rest.len());
        let (c, r) = rest.split_at(n);
        f.feed(c, &mut sink);
        rest = r;
    }
    f.feed(rest, &mut sink);
    let v = f.finish(&mut sink);
    assert_eq!(v.truncated_headers, 0);
    (events, out)
}

proptest! {
    #[test]
    fn output_is_input_and_events_do_not_depend_on_chunks(
        message in message_strategy(),
        splits in prop::collection::vec(0usize..64, 0..30),
        small in any::<bool>(),
    ) {
        let limits = if small {
            ContentLimits { line_length_limit: 16, body_checks_size_limit: 40, mime_nesting_limit: 2, ..ContentLimits::default() }
        } else {
            ContentLimits::default()
        };
        let (whole, out) = events_with_splits(limits, &message, &[]);
        prop_assert_eq!(&out, &message);
        let (split, out2) = events_with_splits(limits, &message, &splits);
        prop_assert_eq!(&out2, &message);
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn fuzz_target_never_panics(data in prop::collection::vec(any::<u8>(), 0..2000)) {
        fuzz_content(&data);
    }

    #[test]
    fn fuzz_target_on_mime_like_input(message in message_strategy(), a in any::<u8>(), b in any::<u8>()) {
        let mut data = vec![a, b];
        data.extend_from_slice(&message);
        fuzz_content(&data);
    }
}

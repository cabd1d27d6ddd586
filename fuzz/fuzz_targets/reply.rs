//! SMTP reply parsing: any bytes give a complete reply, a partial one or an
//! error, never a panic; a complete reply, cleaned into a `Reply`, renders
//! within the line limits and parses back to itself; sanitised echo text is
//! always accepted in a reply.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mta_core::reply::{
    EnhancedStatus, MAX_ECHO_LEN, MAX_REPLY_LINE_LEN, MAX_REPLY_LINES, ParseStatus, Reply,
    ReplyCode, parse_reply, sanitize_echo,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(ParseStatus::Complete(view, used)) = parse_reply(data) {
        assert!(used <= data.len());
        assert_eq!(view.as_bytes(), &data[..used]);
        assert!(view.line_count() >= 1 && view.line_count() <= MAX_REPLY_LINES);
        assert_eq!(view.lines().count(), view.line_count());

        let reply = view.to_reply();
        let wire = reply.to_bytes();
        for line in wire.split_inclusive(|&b| b == b'\n') {
            assert!(line.len() <= MAX_REPLY_LINE_LEN);
        }
        match parse_reply(&wire) {
            Ok(ParseStatus::Complete(again, n)) => {
                assert_eq!(n, wire.len());
                assert_eq!(again.to_reply(), reply);
            }
            other => panic!("rendered reply does not parse: {other:?}"),
        }
    }

    // Whatever a client sends, its sanitised echo fits in a reply.
    let echo = sanitize_echo(data, MAX_ECHO_LEN);
    Reply::reject(ReplyCode::TRANSACTION_FAILED, 7, 1, echo).expect("sanitised text is valid");

    // Enhanced status codes print back the way they were read.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(status) = EnhancedStatus::parse(text) {
            assert_eq!(status.to_string(), text);
        }
    }
});

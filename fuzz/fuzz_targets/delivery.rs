//! What delivery reads from outside: the `Delivered-To:` loop check on
//! arbitrary message content, `error:` next hops, lock method lists, pipe
//! entries and the pipe agent's content quoting, and the non-delivery
//! notice built around arbitrary content. No panics; the
//! answers keep their promises.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use mta_core::delivery::{Relay, StatusDetail};
use mta_core::reply::{EnhancedStatus, StatusClass};
use mta_delivery::error::ErrorAgent;
use mta_delivery::headers::has_delivered_to;
use mta_delivery::mbox::LockMethod;
use mta_delivery::pipe::{transform_content, PipeConfig, PipeFlags};
use mta_queue::file::{Envelope, QueueFile, Recipient};
use mta_queue::notice::{non_delivery, BouncedRecipient, NoticeConfig};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // A header that starts with the recipient's Delivered-To is a loop,
    // whatever follows.
    assert!(has_delivered_to(data, "alice@example.com").is_ok());
    let mut looped = b"Delivered-To: alice@example.com\nX-Next: field\n".to_vec();
    looped.extend_from_slice(data);
    assert!(has_delivered_to(&looped[..], "alice@example.com").unwrap());

    let bounce = ErrorAgent::bounce().status(&text);
    assert_eq!(bounce.detail().unwrap().dsn.class(), StatusClass::Permanent);
    let retry = ErrorAgent::retry().status(&text);
    assert_eq!(retry.detail().unwrap().dsn.class(), StatusClass::PersistentTransient);
    let _ = LockMethod::parse_list(&text);

    // Pipe entries: any operands give a config or an error.
    let operands: Vec<String> = text.split_whitespace().map(String::from).collect();
    let config = mta_core::config::Config::parse("", "main.cf", Default::default()).unwrap();
    let _ = PipeConfig::parse("fuzz", &operands, &config);
    // Quoting does not depend on chunking, and dot-stuffing undone gives
    // the content back (with a final line end).
    let flags = PipeFlags { dot_stuff: true, ..PipeFlags::default() };
    let whole = transform_content(flags, b"\n", &[data]);
    let cut = usize::from(data.first().copied().unwrap_or(0)).min(data.len());
    assert_eq!(transform_content(flags, b"\n", &[&data[..cut], &data[cut..]]), whole);
    let mut undone = Vec::new();
    for line in whole.split_inclusive(|&b| b == b'\n') {
        undone.extend_from_slice(line.strip_prefix(b".").filter(|_| line.starts_with(b"..")).unwrap_or(line));
    }
    let mut expected = data.to_vec();
    if !expected.is_empty() && !expected.ends_with(b"\n") {
        expected.push(b'\n');
    }
    assert_eq!(undone, expected);

    let rcpt = Recipient::new("nobody@example.com");
    let file = QueueFile {
        envelope: Envelope {
            arrival: Duration::from_secs(1_764_786_132),
            sender: "bob@example.org".into(),
            attributes: vec![("ret".into(), if data.first() == Some(&b'H') { "HDRS" } else { "FULL" }.into())],
            recipients: vec![rcpt.clone()],
        },
        content: data.to_vec(),
    };
    let detail = StatusDetail::new(EnhancedStatus::BAD_MAILBOX, text.lines().next().unwrap_or(""), Relay::None);
    let config = NoticeConfig {
        hostname: "mail.example.com".into(),
        bounce_size_limit: 100,
        postmaster: Default::default(),
    };
    let notice = non_delivery(&config, "ID", &file, &[BouncedRecipient::new(&rcpt, detail)], UNIX_EPOCH);
    assert!(notice.ends_with(b"--\r\n"));
});

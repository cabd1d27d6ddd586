//! The virtual agent as the queue drives it: a batch of recipients of the
//! reference site, one result each, mailboxes as a reader finds them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mta_core::address::ReversePath;
use mta_core::config::{Config, HostFacts};
use mta_core::delivery::{
    DeliveryAgent, DeliveryRequest, DeliveryStatus, Envelope, MemoryContent, MessageContent,
    Recipient,
};
use mta_core::queue_id::QueueId;
use mta_delivery::virtual_agent::{VirtualAgent, VirtualConfig};
use mta_maps::list::MapList;
use mta_maps::registry::{OpenContext, Registry};
use mta_maps::{KeyKind, Lookup, Map, MapError};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mta-virtual-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The reference site's virtual settings, with tables written as
/// texthash files in `dir`, plus `extra` main.cf lines.
fn agent(dir: &Path, extra: &str) -> VirtualAgent {
    std::fs::write(
        dir.join("vmailbox"),
        "alice@example.com example.com/alice/\n\
         bob@example.org   example.org/bob\n\
         @example.net      example.net/catchall/\n\
         evil@example.com  ../../outside/\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("uids"),
        "alice@example.com 5000\nbob@example.org 5001\n@example.net 5002\nevil@example.com 5003\n",
    )
    .unwrap();
    let main_cf = format!(
        "myhostname = mail.example.com\n\
         recipient_delimiter = +\n\
         virtual_mailbox_base = {base}/mail\n\
         virtual_mailbox_maps = texthash:{base}/vmailbox\n\
         virtual_uid_maps = texthash:{base}/uids\n\
         virtual_gid_maps = static:5000\n\
         deliver_lock_attempts = 1\n\
         {extra}",
        base = dir.display()
    );
    let config = Config::parse(&main_cf, "main.cf", HostFacts::default()).unwrap();
    let registry = Registry::new(OpenContext::default());
    let vc = VirtualConfig::from_config(&config, &registry).expect("virtual config");
    let when = UNIX_EPOCH + Duration::from_secs(1_764_786_132);
    VirtualAgent::new(vc, Arc::new(move || when), "virtual")
}

fn request(sender: &str, rcpts: &[&str], content: &[u8], limit: Duration) -> DeliveryRequest {
    let sender = if sender.is_empty() {
        ReversePath::Null
    } else {
        ReversePath::Mailbox(sender.parse().unwrap())
    };
    let envelope = Envelope::new(
        QueueId::from_parts(1_764_786_000, 0, 7),
        sender,
        SystemTime::UNIX_EPOCH,
        content.len() as u64,
    );
    let recipients = rcpts
        .iter()
        .enumerate()
        .map(|(i, r)| Recipient::new(r.parse().unwrap(), 100 + i as u64))
        .collect();
    DeliveryRequest::new(
        envelope,
        recipients,
        "example.com",
        limit,
        Arc::new(MemoryContent::new(content.to_vec())),
    )
}

fn summary(status: &DeliveryStatus) -> String {
    let d = status.detail().unwrap();
    format!("{} {} {}", status.status_word().unwrap(), d.dsn, d.text)
}

fn only_file(dir: &Path) -> String {
    let entries: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
    assert_eq!(entries.len(), 1, "one message in {}", dir.display());
    std::fs::read_to_string(entries[0].as_ref().unwrap().path()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_gets_one_result_per_recipient() {
    let dir = scratch("batch");
    let agent = agent(&dir, "");
    let msg = b"From: carol@example.org\nSubject: minutes\n\nFrom the meeting:\n. one\n";
    let req = request(
        "carol@example.org",
        &[
            "alice+lists@example.com",
            "BOB@example.org",
            "anyone@example.net",
            "nobody@example.com",
            "evil@example.com",
        ],
        msg,
        Duration::from_secs(60),
    );
    let offsets: Vec<u64> = req.recipients.iter().map(|r| r.queue_offset).collect();
    let report = agent.deliver(req).await;
    report.validate(&offsets).unwrap();
    let got: Vec<String> = report.results.iter().map(|r| summary(&r.status)).collect();
    assert_eq!(got[0], "sent 2.0.0 delivered to maildir");
    assert_eq!(got[1], "sent 2.0.0 delivered to mailbox");
    assert_eq!(got[2], "sent 2.0.0 delivered to maildir");
    assert_eq!(got[3], "bounced 5.1.1 unknown user: \"nobody@example.com\"");
    assert!(
        got[4].starts_with("deferred 4.3.0 mail system configuration error"),
        "{}",
        got[4]
    );
    assert!(!dir.join("outside").exists());

    // The extension found user@domain; the headers name the recipient as
    // given and the folded final one.
    let alice = only_file(&dir.join("mail/example.com/alice/new"));
    assert!(
        alice.starts_with(
            "Return-Path: <carol@example.org>\nX-Original-To: alice+lists@example.com\n\
         Delivered-To: alice+lists@example.com\nFrom: carol@example.org\n"
        ),
        "{alice}"
    );
    // Maildir keeps "From " lines as they are; mbox quotes them.
    assert!(alice.ends_with("\nFrom the meeting:\n. one\n"));
    let bob = std::fs::read_to_string(dir.join("mail/example.org/bob")).unwrap();
    assert_eq!(
        bob,
        "From carol@example.org  Wed Dec  3 18:22:12 2025\n\
         Return-Path: <carol@example.org>\nX-Original-To: BOB@example.org\nDelivered-To: BOB@example.org\n\
         From: carol@example.org\nSubject: minutes\n\n>From the meeting:\n. one\n\n"
    );
    assert!(
        only_file(&dir.join("mail/example.net/catchall/new"))
            .contains("Delivered-To: anyone@example.net\n")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_delivered_to_loop_bounces() {
    let dir = scratch("loop");
    let agent = agent(&dir, "");
    let msg = b"Delivered-To: alice@example.com\nSubject: again\n\nx\n";
    let report = agent
        .deliver(request(
            "",
            &["alice@example.com"],
            msg,
            Duration::from_secs(60),
        ))
        .await;
    assert_eq!(
        summary(&report.results[0].status),
        "bounced 5.4.6 mail forwarding loop for alice@example.com"
    );
    assert!(!dir.join("mail/example.com/alice/new").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn owner_checks_and_limits() {
    let dir = scratch("limits");
    // uid 5000 is below this minimum: a configuration error, deferred.
    let strict = agent(&dir, "virtual_minimum_uid = 5001\n");
    let report = strict
        .deliver(request(
            "a@example.org",
            &["alice@example.com", "bob@example.org"],
            b"x\n",
            Duration::from_secs(60),
        ))
        .await;
    let got: Vec<String> = report.results.iter().map(|r| summary(&r.status)).collect();
    assert!(
        got[0].contains("bad uid 5000 in virtual_uid_maps"),
        "{}",
        got[0]
    );
    assert_eq!(got[1], "sent 2.0.0 delivered to mailbox");

    // Over virtual_mailbox_limit: mailbox full, a bounce.
    let small = agent(&dir, "virtual_mailbox_limit = 200\n");
    let big = vec![b'y'; 300];
    let report = small
        .deliver(request(
            "a@example.org",
            &["alice@example.com"],
            &big,
            Duration::from_secs(60),
        ))
        .await;
    let got = summary(&report.results[0].status);
    assert!(
        got.starts_with("bounced 5.2.2 maildir delivery failed: cannot update mailbox"),
        "{got}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_missing_uid_or_a_failing_table_defers() {
    let dir = scratch("tables");
    let no_uid = agent(&dir, "virtual_uid_maps = static:5000\nvirtual_gid_maps =\n");
    let report = no_uid
        .deliver(request(
            "a@example.org",
            &["alice@example.com"],
            b"x\n",
            Duration::from_secs(60),
        ))
        .await;
    let got = summary(&report.results[0].status);
    assert!(got.contains("gid not found in virtual_gid_maps"), "{got}");

    // A mailbox table that cannot answer (a database that is down):
    // defer, never bounce.
    let main_cf = format!(
        "virtual_mailbox_base = {}\nvirtual_uid_maps = static:5000\nvirtual_gid_maps = static:5000\n",
        dir.display()
    );
    let config = Config::parse(&main_cf, "main.cf", HostFacts::default()).unwrap();
    let mut vc =
        VirtualConfig::from_config(&config, &Registry::new(OpenContext::default())).unwrap();
    vc.mailbox_maps = MapList::new(vec![Arc::new(Down)]);
    let agent = VirtualAgent::new(vc, Arc::new(SystemTime::now), "virtual");
    let report = agent
        .deliver(request(
            "a@example.org",
            &["alice@example.com"],
            b"x\n",
            Duration::from_secs(60),
        ))
        .await;
    assert_eq!(
        summary(&report.results[0].status),
        "deferred 4.3.0 mail system configuration error: virtual_mailbox_maps: pgsql:/etc/mta/vmailbox.cf: table lookup problem: connection refused"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[derive(Debug)]
struct Down;

impl Map for Down {
    fn lookup<'a>(&'a self, _key: &'a str) -> Lookup<'a> {
        Lookup::ready(Err(MapError::temporary(self.name(), "connection refused")))
    }
    fn name(&self) -> &str {
        "pgsql:/etc/mta/vmailbox.cf"
    }
    fn key_kind(&self) -> KeyKind {
        KeyKind::Fixed
    }
}

/// Content whose reader blocks for a while, to run out the time limit.
struct Slow(MemoryContent);

impl MessageContent for Slow {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn open(&self) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        std::thread::sleep(Duration::from_millis(150));
        self.0.open()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_time_limit_defers_the_rest() {
    let dir = scratch("time");
    let agent = agent(&dir, "");
    let mut req = request(
        "a@example.org",
        &["alice@example.com", "bob@example.org", "x@example.net"],
        b"x\n",
        Duration::from_millis(450),
    );
    req.content = Arc::new(Slow(MemoryContent::new(b"x\n".to_vec())));
    let report = agent.deliver(req).await;
    let words: Vec<_> = report
        .results
        .iter()
        .map(|r| r.status.status_word().unwrap())
        .collect();
    assert_eq!(words, ["sent", "deferred", "deferred"]);
    assert_eq!(
        report.results[2].status.detail().unwrap().dsn.to_string(),
        "4.4.2"
    );
    // bob's delivery was under way at the limit; it gave up before its
    // message became visible, so the retry will not duplicate it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !dir.join("mail/example.org/bob").exists()
            || std::fs::read(dir.join("mail/example.org/bob"))
                .unwrap()
                .is_empty()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

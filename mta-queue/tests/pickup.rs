//! Local submission through the maildrop: what `sendmail` writes, pickup
//! queues as Postfix's pickup and cleanup would.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mta_core::address_class::RewriteConfig;
use mta_maps::list::MapList;
use mta_maps::regexp::RegexpTable;
use mta_queue::cleanup::Cleanup;
use mta_queue::file::QueueFile;
use mta_queue::notice::NoticeConfig;
use mta_queue::pickup::{LocalMessage, Picked, Pickup, PickupConfig, PickupError, drop_message};
use mta_queue::store::{Committer, Queue, QueueName};
use mta_restrictions::content::{ContentLimits, ContentTables};

struct Site {
    root: std::path::PathBuf,
    queue: Queue,
    pickup: Pickup,
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn site(name: &str, header_checks: &str, undisclosed: &str) -> Site {
    let root = std::env::temp_dir().join(format!("mta-pickup-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let queue = Queue::open(&root).unwrap();
    let (table, warnings) = RegexpTable::parse(header_checks, "regexp:header_checks");
    assert!(warnings.is_empty());
    let list = MapList::new(vec![Arc::new(table)]);
    let tables = ContentTables {
        header: list.clone(),
        mime_header: list.clone(),
        nested_header: list,
        body: MapList::new(vec![]),
    };
    let cleanup = Arc::new(Cleanup::new(
        queue.clone(),
        Committer::start(1).unwrap(),
        Arc::new(tables),
        ContentLimits::default(),
    ));
    let rewrite = RewriteConfig::new(
        "mail.example.com".parse().unwrap(),
        "example.com".parse().unwrap(),
    );
    let config = PickupConfig {
        rewrite,
        hostname: "mail.example.com".into(),
        mail_name: "mtad".into(),
        header_address_token_limit: 10240,
        undisclosed_recipients_header: undisclosed.into(),
        notice: NoticeConfig {
            hostname: "mail.example.com".into(),
            bounce_size_limit: 50000,
            postmaster: Default::default(),
        },
        content_filter: String::new(),
    };
    Site {
        root,
        queue,
        pickup: Pickup::new(cleanup, config),
    }
}

fn arrival() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_764_806_400)
}

fn queued(site: &Site, id: &str) -> QueueFile {
    QueueFile::read(&site.queue.path(QueueName::Incoming, &id.parse().unwrap())).unwrap()
}

/// Our effective uid: the owner of a file we create.
fn me() -> u32 {
    use std::os::unix::fs::MetadataExt;
    let probe = std::env::temp_dir().join(format!("mta-uid-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").unwrap();
    let uid = std::fs::metadata(&probe).unwrap().uid();
    let _ = std::fs::remove_file(&probe);
    uid
}

#[tokio::test]
async fn a_plain_submission_is_completed_and_queued() {
    let site = site("plain", "", "");
    let message = LocalMessage {
        sender: "alice".into(),
        recipients: vec!["bob".into(), "carol@example.org".into()],
        full_name: Some("Alice Example".into()),
        content: b"Subject: hello\r\n\r\nHi there.\r\n.dot line\r\n".to_vec(),
        ..LocalMessage::default()
    };
    let name = drop_message(&site.queue, &message, arrival()).unwrap();
    assert_eq!(site.pickup.ready(), std::slice::from_ref(&name));
    let Picked::Queued { id, uid, sender } = site.pickup.take(&name).await.unwrap() else {
        panic!("not queued")
    };
    assert_eq!(uid, me());
    assert_eq!(sender, "alice@mail.example.com");
    assert!(site.pickup.ready().is_empty(), "the maildrop file is gone");
    let file = queued(&site, &id);
    assert_eq!(file.envelope.sender, "alice@mail.example.com");
    let rcpts: Vec<_> = file
        .envelope
        .recipients
        .iter()
        .map(|r| (r.address.as_str(), r.original.as_str()))
        .collect();
    assert_eq!(
        rcpts,
        [
            ("bob@mail.example.com", "bob"),
            ("carol@example.org", "carol@example.org")
        ]
    );
    let text = String::from_utf8(file.content).unwrap();
    let expected_head = format!(
        "Received: by mail.example.com (mtad, from userid {})\r\n\tid {id}; Thu, 4 Dec 2025 00:00:00 +0000 (UTC)\r\nSubject: hello\r\n\
         From: Alice Example <alice@mail.example.com>\r\n\
         Date: Thu, 4 Dec 2025 00:00:00 +0000 (UTC)\r\n\
         Message-Id: <20251204000000.{id}@mail.example.com>\r\n\r\nHi there.\r\n.dot line\r\n",
        me()
    );
    assert_eq!(text, expected_head);
}

#[tokio::test]
async fn dash_t_takes_recipients_from_the_headers_and_drops_bcc() {
    let site = site("extract", "", "");
    let message = LocalMessage {
        sender: "alice@example.com".into(),
        recipients: vec!["dave@example.com".into()],
        extract_recipients: true,
        content: b"From: Alice <alice@example.com>\r\nTo: \"Doe, Bob\" <bob@example.com>,\r\n carol (C)\r\nCc: team: dave@example.com, erin@example.net;\r\nBcc: secret@example.org\r\nDate: Mon, 1 Dec 2025 10:00:00 +0000\r\nMessage-ID: <x@y>\r\nReturn-Path: <forged@example.net>\r\n\r\nbody\r\n".to_vec(),
        ..LocalMessage::default()
    };
    let name = drop_message(&site.queue, &message, arrival()).unwrap();
    let Picked::Queued { id, .. } = site.pickup.take(&name).await.unwrap() else {
        panic!("not queued")
    };
    let file = queued(&site, &id);
    let rcpts: Vec<_> = file
        .envelope
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(
        rcpts,
        [
            "dave@example.com",
            "bob@example.com",
            "carol@mail.example.com",
            "erin@example.net",
            "secret@example.org"
        ],
        "command line first, then To, Cc, Bcc; the duplicate once"
    );
    let text = String::from_utf8(file.content).unwrap();
    assert!(!text.contains("Bcc:"), "{text}");
    assert!(!text.contains("Return-Path:"), "{text}");
    assert!(text.contains("Message-ID: <x@y>\r\n"));
    assert_eq!(text.matches("Date:").count(), 1, "{text}");
    assert_eq!(text.matches("From:").count(), 1, "{text}");
}

#[tokio::test]
async fn resent_headers_decide_which_recipients_and_headers() {
    let site = site("resent", "", "");
    let message = LocalMessage {
        sender: "alice".into(),
        extract_recipients: true,
        content: b"From: someone@example.net\r\nTo: original@example.net\r\nDate: Mon, 1 Dec 2025 10:00:00 +0000\r\nResent-To: frank@example.com\r\n\r\nbody\r\n".to_vec(),
        ..LocalMessage::default()
    };
    let name = drop_message(&site.queue, &message, arrival()).unwrap();
    let Picked::Queued { id, .. } = site.pickup.take(&name).await.unwrap() else {
        panic!("not queued")
    };
    let file = queued(&site, &id);
    assert_eq!(file.envelope.recipients.len(), 1);
    assert_eq!(file.envelope.recipients[0].address, "frank@example.com");
    let text = String::from_utf8(file.content).unwrap();
    assert!(
        text.contains("Resent-From: alice@mail.example.com\r\n"),
        "{text}"
    );
    assert!(text.contains("Resent-Date: "), "{text}");
    assert!(text.contains("Resent-Message-Id: <"), "{text}");
}

#[tokio::test]
async fn undisclosed_recipients_header_when_configured() {
    let site = site("undisclosed", "", "To: undisclosed-recipients:;");
    let message = LocalMessage {
        sender: "alice".into(),
        recipients: vec!["bob@example.com".into()],
        content: b"Subject: s\r\n\r\nb\r\n".to_vec(),
        ..LocalMessage::default()
    };
    let name = drop_message(&site.queue, &message, arrival()).unwrap();
    let Picked::Queued { id, .. } = site.pickup.take(&name).await.unwrap() else {
        panic!("not queued")
    };
    let text = String::from_utf8(queued(&site, &id).content).unwrap();
    assert!(
        text.contains("\r\nTo: undisclosed-recipients:;\r\n\r\nb\r\n"),
        "{text}"
    );
}

#[tokio::test]
async fn a_rejected_submission_goes_back_to_its_sender() {
    let site = site("reject", "/^Subject: .*viagra/ REJECT no spam here\n", "");
    let message = LocalMessage {
        sender: "alice".into(),
        recipients: vec!["bob@example.com".into()],
        content: b"Subject: cheap viagra\r\n\r\nbuy\r\n".to_vec(),
        ..LocalMessage::default()
    };
    let name = drop_message(&site.queue, &message, arrival()).unwrap();
    let Picked::Returned { reason, notice, .. } = site.pickup.take(&name).await.unwrap() else {
        panic!("not returned")
    };
    assert!(reason.contains("no spam here"), "{reason}");
    let notice = notice.expect("a notice to alice");
    let file = queued(&site, &notice);
    assert_eq!(file.envelope.sender, "");
    assert_eq!(
        file.envelope.recipients[0].address,
        "alice@mail.example.com"
    );
    let text = String::from_utf8(file.content).unwrap();
    assert!(text.contains("Subject: Undelivered Mail Returned to Sender"));
    assert!(text.contains("no spam here"), "{text}");
    assert!(
        text.contains("Subject: cheap viagra"),
        "the original is returned"
    );
    assert!(site.pickup.ready().is_empty());
}

#[tokio::test]
async fn half_written_and_broken_files() {
    let site = site("broken", "", "");
    let dir = site.queue.dir(QueueName::Maildrop);
    // Not ready (no execute bit): left alone.
    std::fs::write(dir.join("partial"), b"half").unwrap();
    assert!(site.pickup.ready().is_empty());
    // Ready but damaged (cut short after it was made ready): quarantined.
    let message = LocalMessage {
        sender: "alice".into(),
        recipients: vec!["bob".into()],
        content: b"Subject: s\r\n\r\nbody\r\n".to_vec(),
        ..LocalMessage::default()
    };
    let junk = drop_message(&site.queue, &message, arrival()).unwrap();
    let data = std::fs::read(dir.join(&junk)).unwrap();
    std::fs::write(dir.join(&junk), &data[..data.len() - 5]).unwrap();
    assert_eq!(site.pickup.ready(), std::slice::from_ref(&junk));
    assert!(matches!(
        site.pickup.take(&junk).await,
        Err(PickupError::Corrupt(_))
    ));
    assert!(site.queue.dir(QueueName::Corrupt).join(&junk).exists());
    assert!(dir.join("partial").exists());
}

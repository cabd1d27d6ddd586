//! The scheduler with real agents (mta-delivery's virtual and error
//! agents, and a scripted one) on a queue in a scratch directory, its
//! wall clock under the test's control.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mta_core::address::MailAddress;
use mta_core::config::{Config, HostFacts};
use mta_core::delivery::{
    DeliveryAgent, DeliveryFuture, DeliveryReport, DeliveryRequest, DeliveryStatus, Relay,
    StatusDetail,
};
use mta_core::queue_id::QueueId;
use mta_core::reply::EnhancedStatus;
use mta_delivery::error::ErrorAgent;
use mta_delivery::virtual_agent::{VirtualAgent, VirtualConfig};
use mta_maps::registry::{OpenContext, Registry};
use mta_queue::cleanup::Cleanup;
use mta_queue::file::{Envelope, QueueFile, Recipient};
use mta_queue::notice::NoticeConfig;
use mta_queue::scheduler::{Route, RouteError, Router, Scheduler, SchedulerConfig, Transport};
use mta_queue::store::{Committer, Queue, QueueName};
use mta_restrictions::content::{ContentLimits, ContentTables};

/// example.com is the virtual domain, example.net goes to the scripted
/// "flaky" transport, example.invalid to `error`.
struct TestRouter;

impl Router for TestRouter {
    fn route(&self, address: &MailAddress) -> Result<Route, RouteError> {
        let domain = address
            .domain()
            .map(|d| d.as_str().to_owned())
            .unwrap_or_default();
        let (transport, nexthop) = match domain.as_str() {
            "example.com" => ("virtual", domain.clone()),
            "example.net" => ("flaky", domain.clone()),
            "example.invalid" => ("error", "5.1.2 no such domain".to_owned()),
            "tablefail.example" => {
                return Err(RouteError::Temporary("transport_maps: down".into()));
            }
            _ => ("smtp", domain.clone()),
        };
        Ok(Route {
            transport: transport.into(),
            nexthop,
            address: address.clone(),
        })
    }
}

/// Defers everything, and counts the recipients it was given.
#[derive(Default)]
struct Flaky {
    seen: Mutex<Vec<String>>,
}

impl DeliveryAgent for Flaky {
    fn deliver(&self, request: DeliveryRequest) -> DeliveryFuture<'_> {
        Box::pin(async move {
            let mut seen = self.seen.lock().unwrap();
            seen.extend(request.recipients.iter().map(|r| r.address.to_string()));
            let status = DeliveryStatus::Deferred(StatusDetail::new(
                EnhancedStatus::parse("4.4.1").unwrap(),
                "connect to mx.example.net[192.0.2.9]:25: Connection refused",
                Relay::None,
            ));
            DeliveryReport::uniform(&request.recipients, &status)
        })
    }
}

struct Site {
    dir: PathBuf,
    queue: Queue,
    committer: Committer,
    now: Arc<Mutex<SystemTime>>,
    log: Arc<Mutex<Vec<String>>>,
    flaky: Arc<Flaky>,
    scheduler: Arc<Scheduler>,
}

const START: u64 = 1_764_786_132;

fn site(name: &str, lifetime: Duration) -> Site {
    site_with(
        name,
        SchedulerConfig {
            maximal_queue_lifetime: lifetime,
            ..SchedulerConfig::default()
        },
    )
}

fn site_with(name: &str, base: SchedulerConfig) -> Site {
    site_full(name, base, Default::default())
}

fn site_full(
    name: &str,
    base: SchedulerConfig,
    postmaster: mta_queue::notice::PostmasterCopies,
) -> Site {
    let dir = std::env::temp_dir().join(format!("mta-sched-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("vmailbox"),
        "alice@example.com example.com/alice/\n",
    )
    .unwrap();
    let main_cf = format!(
        "myhostname = mail.example.com\nvirtual_mailbox_base = {d}/mail\n\
         virtual_mailbox_maps = texthash:{d}/vmailbox\nvirtual_uid_maps = static:5000\n\
         virtual_gid_maps = static:5000\n",
        d = dir.display()
    );
    let config = Config::parse(&main_cf, "main.cf", HostFacts::default()).unwrap();
    let vc = VirtualConfig::from_config(&config, &Registry::new(OpenContext::default())).unwrap();
    let now = Arc::new(Mutex::new(UNIX_EPOCH + Duration::from_secs(START)));
    let clock_now = Arc::clone(&now);
    let clock = Arc::new(move || *clock_now.lock().unwrap());
    let flaky = Arc::new(Flaky::default());
    let transport = |agent: Arc<dyn DeliveryAgent>| Transport {
        agent,
        process_limit: 4,
        destination_concurrency_limit: 2,
        recipient_limit: 50,
        time_limit: Duration::from_secs(60),
        initial_concurrency: 5,
        failed_cohort_limit: 1,
    };
    let mut transports = HashMap::new();
    transports.insert(
        "virtual".to_owned(),
        transport(Arc::new(VirtualAgent::new(vc, clock.clone(), "virtual"))),
    );
    transports.insert(
        "error".to_owned(),
        transport(Arc::new(ErrorAgent::bounce())),
    );
    transports.insert("flaky".to_owned(), transport(flaky.clone()));
    let queue = Queue::open(dir.join("queue")).unwrap();
    let committer = Committer::start(1).unwrap();
    let registry = Registry::new(OpenContext::default());
    let tables = ContentTables::open(&registry, "", "", "", "").unwrap();
    let cleanup = Arc::new(Cleanup::new(
        queue.clone(),
        committer.clone(),
        Arc::new(tables),
        ContentLimits::default(),
    ));
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&log);
    let config = SchedulerConfig {
        minimal_backoff_time: Duration::from_secs(300),
        maximal_backoff_time: Duration::from_secs(4000),
        ..base
    };
    let scheduler = Scheduler::new(
        queue.clone(),
        Arc::new(TestRouter),
        transports,
        config,
        Arc::new(move |program: &str, line: &str| {
            sink.lock().unwrap().push(format!("{program}: {line}"))
        }),
        clock,
    )
    .with_notices(
        cleanup,
        NoticeConfig {
            hostname: "mail.example.com".into(),
            bounce_size_limit: 50_000,
            postmaster,
        },
    );
    Site {
        dir,
        queue,
        committer,
        now,
        log,
        flaky,
        scheduler: Arc::new(scheduler),
    }
}

impl Site {
    async fn enqueue(&self, n: u64, sender: &str, rcpts: &[&str]) -> String {
        self.enqueue_with(
            n,
            sender,
            rcpts.iter().map(|r| Recipient::new(*r)).collect(),
        )
        .await
    }

    async fn enqueue_with(&self, n: u64, sender: &str, recipients: Vec<Recipient>) -> String {
        let id = QueueId::from_parts(START, 0, n);
        let envelope = Envelope {
            arrival: Duration::from_secs(START),
            sender: sender.into(),
            attributes: vec![],
            recipients,
        };
        let mut w = self.queue.create(&id, &envelope).unwrap();
        w.write_content(b"From: someone@example.org\r\nSubject: test\r\n\r\nHello.\r\n")
            .unwrap();
        self.committer
            .commit(w.finish().unwrap(), &self.queue.dir(QueueName::Incoming))
            .await
            .unwrap();
        id.as_str().to_owned()
    }

    fn advance(&self, by: Duration) {
        *self.now.lock().unwrap() += by;
    }

    fn lines(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

fn maildir_messages(site: &Site) -> usize {
    std::fs::read_dir(site.dir.join("mail/example.com/alice/new"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_mail_is_removed_and_logged() {
    let site = site("sent", Duration::from_secs(5 * 86400));
    let id = site
        .enqueue(1, "bob@example.org", &["alice@example.com"])
        .await;
    site.advance(Duration::from_millis(1500));
    assert_eq!(site.scheduler.run_once().await, 1);
    assert_eq!(maildir_messages(&site), 1);
    assert_eq!(site.queue.find(&id), None, "the queue file is gone");
    let lines = site.lines();
    assert_eq!(
        lines[0],
        format!("qmgr: {id}: from=<bob@example.org>, size=52, nrcpt=1 (queue active)")
    );
    assert!(
        lines[1].starts_with(&format!(
            "virtual: {id}: to=<alice@example.com>, relay=virtual, delay=1.5, delays=1.5/"
        )),
        "{}",
        lines[1]
    );
    assert!(
        lines[1].ends_with(", dsn=2.0.0, status=sent (delivered to maildir)"),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2], format!("qmgr: {id}: removed"));
    std::fs::remove_dir_all(&site.dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_sends_an_rfc3464_notice_and_keeps_the_good_recipient() {
    let site = site("bounce", Duration::from_secs(5 * 86400));
    let id = site
        .enqueue(
            2,
            "bob@example.org",
            &[
                "alice@example.com",
                "nobody@example.com",
                "x@example.invalid",
            ],
        )
        .await;
    site.scheduler.run_once().await;
    assert_eq!(maildir_messages(&site), 1);
    assert_eq!(site.queue.find(&id), None);
    let lines = site.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("to=<nobody@example.com>, relay=virtual")
                && l.ends_with("dsn=5.1.1, status=bounced (unknown user: \"nobody@example.com\")")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l
            .starts_with(&format!("error: {id}: to=<x@example.invalid>, relay=none"))
            && l.ends_with("dsn=5.1.2, status=bounced (no such domain)")),
        "{lines:#?}"
    );
    let notice_line = lines
        .iter()
        .find(|l| l.contains("sender non-delivery notification"))
        .expect("a notice was queued");
    let notice_id = notice_line.rsplit(' ').next().unwrap();

    // The notice is a queued message from <> to the sender.
    let notice = QueueFile::read(&site.queue.dir(QueueName::Incoming).join(notice_id)).unwrap();
    assert_eq!(notice.envelope.sender, "");
    assert_eq!(notice.envelope.recipients[0].address, "bob@example.org");
    let text = String::from_utf8(notice.content).unwrap();
    // RFC 3464: a multipart/report of a text part, a
    // message/delivery-status part with one block per failed recipient,
    // and the returned message.
    let boundary = text
        .split("boundary=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a boundary");
    let parts: Vec<&str> = text.split(&format!("--{boundary}")).collect();
    assert_eq!(parts.len(), 5, "preamble, three parts, epilogue");
    assert!(parts[0].contains("Content-Type: multipart/report; report-type=delivery-status;"));
    assert!(parts[1].contains("<nobody@example.com>: unknown user: \"nobody@example.com\""));
    let status = parts[2];
    assert!(status.contains(
        "Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mail.example.com\r\n"
    ));
    let blocks: Vec<&str> = status
        .split("\r\n\r\n")
        .filter(|b| b.contains("Final-Recipient"))
        .collect();
    assert_eq!(blocks.len(), 2);
    assert!(blocks[0].contains("Final-Recipient: rfc822; nobody@example.com\r\nOriginal-Recipient: rfc822;nobody@example.com\r\nAction: failed\r\nStatus: 5.1.1"));
    assert!(blocks[1].contains("Status: 5.1.2\r\nDiagnostic-Code: X-Postfix; no such domain"));
    assert!(parts[3].contains("Content-Type: message/rfc822\r\n\r\nFrom: someone@example.org\r\nSubject: test\r\n\r\nHello.\r\n"));
    assert_eq!(parts[4], "--\r\n");

    // The notice itself goes out on the next pass (to smtp, which this
    // test does not run: it waits in deferred), and a bounce of it would
    // not make another notice.
    site.scheduler.run_once().await;
    assert_eq!(site.queue.find(notice_id), Some(QueueName::Deferred));
    std::fs::remove_dir_all(&site.dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_mail_waits_doubles_and_expires() {
    let site = site("defer", Duration::from_secs(3600));
    let id = site
        .enqueue(
            3,
            "bob@example.org",
            &["carol@example.net", "alice@example.com"],
        )
        .await;
    site.scheduler.run_once().await;
    assert_eq!(site.queue.find(&id), Some(QueueName::Deferred));
    let mtime = |site: &Site| {
        std::fs::metadata(site.queue.dir(QueueName::Deferred).join(&id))
            .unwrap()
            .modified()
            .unwrap()
    };
    let start = UNIX_EPOCH + Duration::from_secs(START);
    assert_eq!(
        mtime(&site),
        start + Duration::from_secs(300),
        "minimal_backoff_time"
    );
    let lines = site.lines();
    assert!(lines.iter().any(|l| l.starts_with(&format!("flaky: {id}: to=<carol@example.net>")) && l.ends_with("dsn=4.4.1, status=deferred (connect to mx.example.net[192.0.2.9]:25: Connection refused)")), "{lines:#?}");
    assert_eq!(maildir_messages(&site), 1);

    // mailq shows why.
    let listing = mta_queue::listing::render(&mta_queue::listing::entries(&site.queue).unwrap());
    assert!(
        listing.contains("\n                 (connect to mx.example.net[192.0.2.9]:25: Connection refused)\n                                               carol@example.net\n"),
        "{listing}"
    );

    // Not due yet: untouched.
    site.advance(Duration::from_secs(299));
    assert_eq!(site.scheduler.run_once().await, 0);
    // Due: tried again, and only the recipient not yet done.
    site.advance(Duration::from_secs(1));
    assert_eq!(site.scheduler.run_once().await, 1);
    assert_eq!(maildir_messages(&site), 1, "alice is not delivered twice");
    assert_eq!(
        *site.flaky.seen.lock().unwrap(),
        ["carol@example.net", "carol@example.net"]
    );
    // The message is 300 s old: the next wait is 300 s; at 600 s, 600 s.
    assert_eq!(mtime(&site), start + Duration::from_secs(600));
    site.advance(Duration::from_secs(300));
    site.scheduler.run_once().await;
    assert_eq!(mtime(&site), start + Duration::from_secs(1200));

    // Past maximal_queue_lifetime: returned to the sender.
    site.lines();
    site.advance(Duration::from_secs(3600));
    site.scheduler.run_once().await;
    assert_eq!(site.queue.find(&id), None);
    let lines = site.lines();
    assert!(
        lines.contains(&format!(
            "qmgr: {id}: from=<bob@example.org>, status=expired, returned to sender"
        )),
        "{lines:#?}"
    );
    let notice_id = lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("bounce: {id}: sender non-delivery notification: ")))
        .expect("a notice");
    let notice = QueueFile::read(&site.queue.dir(QueueName::Incoming).join(notice_id)).unwrap();
    let text = String::from_utf8(notice.content).unwrap();
    assert!(text.contains("Final-Recipient: rfc822; carol@example.net\r\n"));
    assert!(
        text.contains("Status: 5.4.1\r\n"),
        "the last reason, made permanent"
    );
    assert!(
        !text.contains("alice@example.com\r\nAction"),
        "only the undelivered recipient"
    );
    std::fs::remove_dir_all(&site.dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolver_failures_and_missing_transports_defer() {
    let site = site("unavailable", Duration::from_secs(5 * 86400));
    let id = site
        .enqueue(4, "", &["a@tablefail.example", "b@elsewhere.example"])
        .await;
    site.scheduler.run_once().await;
    assert_eq!(site.queue.find(&id), Some(QueueName::Deferred));
    let lines = site.lines();
    assert!(
        lines.iter().any(|l| l.contains("to=<a@tablefail.example>")
            && l.ends_with(
                "dsn=4.3.0, status=deferred (address resolver failure: transport_maps: down)"
            )),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("to=<b@elsewhere.example>")
            && l.ends_with("status=deferred (mail transport unavailable: smtp is not running)")),
        "{lines:#?}"
    );
    std::fs::remove_dir_all(&site.dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_file_is_quarantined_and_the_rest_delivered() {
    let site = site("corrupt", Duration::from_secs(5 * 86400));
    let good = site
        .enqueue(5, "bob@example.org", &["alice@example.com"])
        .await;
    let bad = QueueId::from_parts(START, 0, 6);
    // Damaged after it was committed: it carries the ready mark.
    let bad_path = site.queue.dir(QueueName::Incoming).join(bad.as_str());
    std::fs::write(&bad_path, b"MTAQUEUE\x01\x00T").unwrap();
    let ready = std::os::unix::fs::PermissionsExt::from_mode(0o700);
    std::fs::set_permissions(&bad_path, ready).unwrap();
    site.scheduler.run_once().await;
    assert_eq!(site.queue.find(bad.as_str()), Some(QueueName::Corrupt));
    assert_eq!(site.queue.find(&good), None);
    assert_eq!(maildir_messages(&site), 1);
    let lines = site.lines();
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "qmgr: warning: {}: moved to corrupt: incomplete",
            bad.as_str()
        ))),
        "{lines:#?}"
    );
    std::fs::remove_dir_all(&site.dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_scheduler_takes_new_mail_when_woken() {
    let site = site("run", Duration::from_secs(5 * 86400));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let scheduler = Arc::clone(&site.scheduler);
    let waker = scheduler.waker();
    let task = tokio::spawn(scheduler.run(async {
        let _ = stop_rx.await;
    }));
    let id = site
        .enqueue(7, "bob@example.org", &["alice@example.com"])
        .await;
    waker.notify_one();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while site.queue.find(&id).is_some() {
        assert!(tokio::time::Instant::now() < deadline, "not delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(maildir_messages(&site), 1);
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    std::fs::remove_dir_all(&site.dir).unwrap();
}

/// Regression: under load the scheduler took files cleanup was still
/// writing, found them incomplete and quarantined them, 701 of 2,000
/// messages that had (or were about to get) a 250.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_still_being_written_is_left_alone() {
    let site = site("writing", Duration::from_secs(5 * 86400));
    let id = QueueId::from_parts(START, 0, 8);
    let envelope = Envelope {
        arrival: Duration::from_secs(START),
        sender: "bob@example.org".into(),
        attributes: vec![],
        recipients: vec![Recipient::new("alice@example.com")],
    };
    let mut w = site.queue.create(&id, &envelope).unwrap();
    w.write_content(b"Subject: half\r\n").unwrap();
    assert_eq!(site.scheduler.run_once().await, 0);
    assert_eq!(site.queue.find(id.as_str()), Some(QueueName::Incoming));
    // Finished and committed, it is ready, and goes.
    w.write_content(b"\r\nrest\r\n").unwrap();
    site.committer
        .commit(w.finish().unwrap(), &site.queue.dir(QueueName::Incoming))
        .await
        .unwrap();
    assert_eq!(site.scheduler.run_once().await, 1);
    assert_eq!(site.queue.find(id.as_str()), None);
    assert_eq!(maildir_messages(&site), 1);
    std::fs::remove_dir_all(&site.dir).unwrap();
}

/// The text of the notice a log line says was queued.
fn notice_text(site: &Site, lines: &[String], what: &str) -> String {
    let line = lines
        .iter()
        .find(|l| l.contains(&format!("sender {what} notification: ")))
        .unwrap_or_else(|| panic!("no {what} notification: {lines:#?}"));
    let id = line.rsplit(' ').next().unwrap();
    let file = QueueFile::read(&site.queue.dir(QueueName::Incoming).join(id)).unwrap();
    assert_eq!(file.envelope.sender, "");
    String::from_utf8(file.content).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_chooses_which_notices_go_out() {
    use mta_queue::file::notify;
    let site = site("notify", Duration::from_secs(5 * 86400));
    let with = |address: &str, bits: u8| Recipient {
        notify: bits,
        ..Recipient::new(address)
    };
    site.enqueue_with(
        20,
        "bob@example.org",
        vec![
            with("alice@example.com", notify::SUCCESS | notify::FAILURE),
            with("nobody@example.com", notify::NEVER),
        ],
    )
    .await;
    site.scheduler.run_once().await;
    let lines = site.lines();
    // NOTIFY=SUCCESS: a success report; NOTIFY=NEVER: no bounce at all.
    let text = notice_text(&site, &lines, "delivery status");
    assert!(
        text.contains("Subject: Successful Mail Delivery Report\r\n"),
        "{text}"
    );
    assert!(text.contains("Your message was successfully delivered to the destination(s)"));
    assert!(text.contains("Final-Recipient: rfc822; alice@example.com\r\nOriginal-Recipient: rfc822;alice@example.com\r\nAction: delivered\r\nStatus: 2.0.0"), "{text}");
    assert!(
        text.contains("Content-Type: text/rfc822-headers\r\n"),
        "headers only: {text}"
    );
    assert!(
        !text.contains("Hello."),
        "no body in a success report: {text}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("non-delivery notification")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("to=<nobody@example.com>") && l.contains("status=bounced"))
    );
    std::fs::remove_dir_all(&site.dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_warning_goes_out_once() {
    let site = site_with(
        "delaywarn",
        SchedulerConfig {
            delay_warning_time: Duration::from_secs(4 * 3600),
            ..SchedulerConfig::default()
        },
    );
    let id = site
        .enqueue(21, "bob@example.org", &["carol@example.net"])
        .await;
    site.scheduler.run_once().await;
    let lines = site.lines();
    assert!(
        !lines.iter().any(|l| l.contains("delay notification")),
        "too early: {lines:#?}"
    );
    site.advance(Duration::from_secs(5 * 3600));
    site.scheduler.run_once().await;
    let lines = site.lines();
    let text = notice_text(&site, &lines, "delay");
    assert!(
        text.contains("Subject: Delayed Mail (still being retried)\r\n"),
        "{text}"
    );
    assert!(text.contains("# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #"));
    assert!(text.contains("Your message could not be delivered for more than 4 hour(s).\r\nIt will be retried until it is 5 day(s) old."), "{text}");
    assert!(
        text.contains("Action: delayed\r\nStatus: 4.4.1\r\n"),
        "{text}"
    );
    assert!(text.contains("Will-Retry-Until: "), "{text}");
    assert_eq!(site.queue.find(&id), Some(QueueName::Deferred));
    // Later attempts send no second warning.
    site.advance(Duration::from_secs(3 * 3600));
    site.scheduler.run_once().await;
    let lines = site.lines();
    assert!(
        lines.iter().any(|l| l.contains("status=deferred")),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("delay notification")),
        "{lines:#?}"
    );
    std::fs::remove_dir_all(&site.dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defer_transports_wait_for_a_flush() {
    let site = site_with(
        "defertransports",
        SchedulerConfig {
            defer_transports: vec!["virtual".into()],
            ..SchedulerConfig::default()
        },
    );
    let id = site
        .enqueue(22, "bob@example.org", &["alice@example.com"])
        .await;
    site.scheduler.run_once().await;
    assert_eq!(maildir_messages(&site), 0);
    assert_eq!(site.queue.find(&id), Some(QueueName::Deferred));
    let lines = site.lines();
    assert!(
        lines.iter().any(|l| l.contains("to=<alice@example.com>")
            && l.ends_with("dsn=4.3.2, status=deferred (deferred transport)")),
        "{lines:#?}"
    );
    // sendmail -q / postqueue -f: it goes now.
    assert_eq!(
        site.scheduler.flush(mta_queue::scheduler::Flush::All).await,
        1
    );
    site.scheduler.run_once().await;
    assert_eq!(maildir_messages(&site), 1);
    assert_eq!(site.queue.find(&id), None);
    std::fs::remove_dir_all(&site.dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_classes_send_the_postmaster_copies() {
    let copies = mta_queue::notice::PostmasterCopies::from_classes(
        &["bounce".to_owned(), "2bounce".to_owned()],
        "postmaster@example.com",
        "postmaster@example.com",
        "postmaster@example.com",
    );
    let site = site_full("postmaster", SchedulerConfig::default(), copies);
    // A bounce: the sender's notice and the postmaster's copy (headers).
    site.enqueue(30, "bob@example.org", &["x@example.invalid"])
        .await;
    // A bounce of a bounce: only the postmaster hears of it, whole.
    site.enqueue(31, "", &["y@example.invalid"]).await;
    site.scheduler.run_once().await;
    let lines = site.lines();
    let sender = notice_text(&site, &lines, "non-delivery");
    assert!(sender.contains("To: bob@example.org\r\n"), "{sender}");
    let copies: Vec<String> = lines
        .iter()
        .filter(|l| l.contains("postmaster non-delivery notification: "))
        .map(|l| {
            let id = l.rsplit(' ').next().unwrap();
            let f = QueueFile::read(&site.queue.dir(QueueName::Incoming).join(id)).unwrap();
            assert_eq!(f.envelope.recipients[0].address, "postmaster@example.com");
            String::from_utf8(f.content).unwrap()
        })
        .collect();
    assert_eq!(copies.len(), 2, "{lines:#?}");
    for c in &copies {
        assert!(
            c.contains("Subject: Postmaster Copy: Undelivered Mail\r\n"),
            "{c}"
        );
    }
    let single = copies
        .iter()
        .find(|c| c.contains("X-Postfix-Sender: rfc822; bob@example.org"))
        .unwrap();
    assert!(
        single.contains("Content-Type: text/rfc822-headers"),
        "headers only: {single}"
    );
    let double = copies
        .iter()
        .find(|c| c.contains("X-Postfix-Sender: rfc822; \r\n"))
        .unwrap();
    assert!(
        double.contains("Content-Type: message/rfc822\r\n"),
        "the whole bounce: {double}"
    );
    std::fs::remove_dir_all(&site.dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_destination_is_not_tried_again_at_once() {
    let site = site("dead", Duration::from_secs(5 * 86400));
    // The window starts at the transport's limit of two here: the first
    // failure closes it to one, the second fails a cohort at one, and
    // example.net is dead; the other three messages wait untried.
    for n in 0..5 {
        site.enqueue(40 + n, "bob@example.org", &["carol@example.net"])
            .await;
    }
    site.scheduler.run_once().await;
    assert_eq!(site.flaky.seen.lock().unwrap().len(), 2);
    let lines = site.lines();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("delivery temporarily suspended"))
            .count(),
        3,
        "{lines:#?}"
    );
    // The next message for it waits without a delivery attempt.
    let id = site
        .enqueue(50, "bob@example.org", &["dave@example.net"])
        .await;
    site.scheduler.run_once().await;
    assert_eq!(site.flaky.seen.lock().unwrap().len(), 2, "not tried");
    assert_eq!(site.queue.find(&id), Some(QueueName::Deferred));
    let lines = site.lines();
    assert!(
        lines.iter().any(|l| l.contains("to=<dave@example.net>")
            && l.ends_with("status=deferred (delivery temporarily suspended: connect to mx.example.net[192.0.2.9]:25: Connection refused)")),
        "{lines:#?}"
    );
    // Other destinations are not held back.
    site.enqueue(51, "bob@example.org", &["alice@example.com"])
        .await;
    site.scheduler.run_once().await;
    assert_eq!(maildir_messages(&site), 1);
    std::fs::remove_dir_all(&site.dir).unwrap();
}

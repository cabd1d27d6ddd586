//! The local agent with a real alias file, a real account (nobody when
//! run as root, otherwise the caller), real mbox files and commands:
//! aliases that forward, nest, deliver to files, commands and include
//! files, owner- aliases, extensions, .forward, mailbox_command,
//! luser_relay, restrictions, unknown users and loops.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mta_core::address::ReversePath;
use mta_core::config::{Config, HostFacts};
use mta_core::delivery::{
    DeliveryAgent, DeliveryRequest, DeliveryStatus, Envelope, MemoryContent, Recipient,
};
use mta_core::queue_id::QueueId;
use mta_delivery::local::{LocalAgent, LocalConfig, TransportLookup};
use mta_maps::registry::{OpenContext, Registry};

/// The account the tests deliver to: nobody as root, else the caller.
fn account() -> String {
    if nix::unistd::geteuid().is_root() {
        "nobody".into()
    } else {
        nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap()
            .name
    }
}

struct Site {
    dir: PathBuf,
    agent: LocalAgent,
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn site(name: &str, extra: &str) -> Site {
    site_with(name, extra, None)
}

/// The site, its agent finding other transports through `transports`.
fn site_with(name: &str, extra: &str, transports: Option<TransportLookup>) -> Site {
    let dir = std::env::temp_dir().join(format!("mta-local-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for d in ["spool", "forward", "out"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    // Commands run as nobody under root: they write here.
    for d in [&dir, &dir.join("out")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let user = account();
    let d = dir.display();
    // postmap's source format (texthash): the name, then the value as
    // postalias would store it.
    std::fs::write(
        dir.join("aliases"),
        format!(
            "postmaster root\n\
             root {user}, admin@example.net\n\
             list a@example.net, b@example.net\n\
             owner-list listadmin\n\
             archive {d}/out/archive.mbox\n\
             cmd \"|cat > {d}/out/cmd.txt\"\n\
             inc :include:{d}/members\n\
             deep deeper\n\
             deeper deep\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("members"),
        "# the list\nc@example.net\nd@example.net\n",
    )
    .unwrap();
    let main_cf = format!(
        "myhostname = mail.example.com\n\
         myorigin = example.com\n\
         recipient_delimiter = +\n\
         alias_maps = texthash:{d}/aliases\n\
         forward_path = {d}/forward/$user.forward\n\
         mail_spool_directory = {d}/spool\n\
         allow_mail_to_commands = alias, forward, include\n\
         allow_mail_to_files = alias, forward, include\n\
         {extra}"
    );
    let config = Config::parse(&main_cf, "main.cf", HostFacts::default()).unwrap();
    let local = LocalConfig::from_config(&config, &Registry::new(OpenContext::default()), "local")
        .expect("local config");
    let when = UNIX_EPOCH + Duration::from_secs(1_764_786_132);
    let mut agent = LocalAgent::new(local, Arc::new(move || when));
    if let Some(t) = transports {
        agent = agent.with_transports(t);
    }
    Site { dir, agent }
}

const MESSAGE: &[u8] = b"Subject: hello\nFrom: bob@example.org\n\nHi.\n";

fn deliver(site: &Site, rcpt: &str, content: &[u8]) -> DeliveryStatus {
    let envelope = Envelope::new(
        QueueId::from_parts(1_764_786_132, 0, 5),
        ReversePath::Mailbox("bob@example.org".parse().unwrap()),
        SystemTime::now(),
        content.len() as u64,
    );
    let request = DeliveryRequest::new(
        envelope,
        vec![Recipient::new(rcpt.parse().unwrap(), 1)],
        "mail.example.com",
        Duration::from_secs(30),
        Arc::new(MemoryContent::new(content.to_vec())),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut report = runtime.block_on(site.agent.deliver(request));
    report.results.remove(0).status
}

fn text(status: &DeliveryStatus) -> String {
    status.detail().map(|d| d.text.clone()).unwrap_or_default()
}

fn resubmitted(status: &DeliveryStatus) -> (Vec<String>, Option<String>, Vec<String>) {
    match status {
        DeliveryStatus::Resubmit(r) => (
            r.recipients.iter().map(ToString::to_string).collect(),
            r.sender.as_ref().map(|s| match s {
                ReversePath::Mailbox(a) => a.to_string(),
                ReversePath::Null => String::new(),
            }),
            r.headers.clone(),
        ),
        other => panic!("not a resubmission: {other:?}"),
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn nested_aliases_reach_a_mailbox_and_forward_the_rest() {
    let s = site("nested", "");
    let user = account();
    let status = deliver(&s, "postmaster@mail.example.com", MESSAGE);
    // postmaster -> root -> (the account's mailbox, admin@example.net).
    let (to, sender, headers) = resubmitted(&status);
    assert_eq!(to, ["admin@example.net"]);
    assert_eq!(sender, None, "the original sender stays");
    assert_eq!(headers, ["Delivered-To: postmaster@mail.example.com"]);
    let mbox = read(&s.dir.join("spool").join(&user));
    assert!(mbox.starts_with("From bob@example.org  "), "{mbox}");
    assert!(
        mbox.contains(&format!(
            "\nReturn-Path: <bob@example.org>\nX-Original-To: postmaster@mail.example.com\nDelivered-To: {user}@mail.example.com\nSubject: hello\n"
        )),
        "{mbox}"
    );
    if nix::unistd::geteuid().is_root() {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(s.dir.join("spool").join(&user)).unwrap();
        assert_eq!(meta.uid(), 65534, "the mailbox belongs to its user");
    }
}

#[test]
fn lists_owner_aliases_and_extensions() {
    let s = site("list", "");
    let status = deliver(&s, "list+urgent@mail.example.com", MESSAGE);
    let (to, sender, _) = resubmitted(&status);
    // Postfix's default propagate_unmatched_extensions (canonical,
    // virtual) leaves alias targets alone...
    assert_eq!(to, ["a@example.net", "b@example.net"]);
    assert_eq!(sender.as_deref(), Some("owner-list@mail.example.com"));
    // ...and with alias in the list the extension goes along.
    let s = site("list2", "propagate_unmatched_extensions = alias\n");
    let status = deliver(&s, "list+urgent@mail.example.com", MESSAGE);
    assert_eq!(
        resubmitted(&status).0,
        ["a+urgent@example.net", "b+urgent@example.net"]
    );
    let status = deliver(&s, "inc@mail.example.com", MESSAGE);
    assert_eq!(resubmitted(&status).0, ["c@example.net", "d@example.net"]);
}

#[test]
fn files_and_commands_from_aliases() {
    let s = site("targets", "");
    let status = deliver(&s, "archive@mail.example.com", MESSAGE);
    let path = s.dir.join("out/archive.mbox");
    assert_eq!(
        text(&status),
        format!("delivered to file: {}", path.display())
    );
    assert!(read(&path).contains("X-Original-To: archive@mail.example.com\n"));

    let status = deliver(&s, "cmd@mail.example.com", MESSAGE);
    assert!(matches!(status, DeliveryStatus::Delivered(_)), "{status:?}");
    assert_eq!(
        text(&status),
        format!(
            "delivered to command: cat > {}/out/cmd.txt",
            s.dir.display()
        )
    );
    let got = read(&s.dir.join("out/cmd.txt"));
    assert!(got.starts_with("From bob@example.org  "), "{got}");
    assert!(
        got.ends_with(
            "Delivered-To: cmd@mail.example.com\nSubject: hello\nFrom: bob@example.org\n\nHi.\n"
        ),
        "{got}"
    );

    let strict = site(
        "strict",
        "allow_mail_to_commands = forward\nallow_mail_to_files = forward\n",
    );
    let status = deliver(&strict, "cmd@mail.example.com", MESSAGE);
    assert!(matches!(status, DeliveryStatus::Bounced(_)), "{status:?}");
    assert_eq!(text(&status), "mail to command is restricted");
    assert_eq!(
        text(&deliver(&strict, "archive@mail.example.com", MESSAGE)),
        "mail to file is restricted"
    );
}

#[test]
fn forward_files_keep_a_copy_and_forward() {
    let s = site("forward", "");
    let user = account();
    std::fs::write(
        s.dir.join("forward").join(format!("{user}.forward")),
        format!("\\{user}, elsewhere@example.net\n"),
    )
    .unwrap();
    let status = deliver(&s, &format!("{user}@mail.example.com"), MESSAGE);
    let (to, _, headers) = resubmitted(&status);
    assert_eq!(to, ["elsewhere@example.net"]);
    assert_eq!(headers, [format!("Delivered-To: {user}@mail.example.com")]);
    assert!(read(&s.dir.join("spool").join(&user)).contains("Subject: hello\n"));
}

#[test]
fn mailbox_command_runs_as_the_user_with_its_environment() {
    let d = std::env::temp_dir().join(format!("mta-local-mc-{}", std::process::id()));
    let s = site(
        "mc",
        &format!(
            "mailbox_command = cat > {o}/mc.$user; env | sort > {o}/env\n",
            o = d.join("out").display()
        ),
    );
    assert_eq!(s.dir, d);
    let user = account();
    let status = deliver(&s, &format!("{user}+tag@mail.example.com"), MESSAGE);
    assert!(matches!(status, DeliveryStatus::Delivered(_)), "{status:?}");
    assert!(read(&s.dir.join(format!("out/mc.{user}"))).contains("Subject: hello\n"));
    let env = read(&s.dir.join("out/env"));
    for line in [
        format!("USER={user}"),
        format!("LOGNAME={user}"),
        format!("LOCAL={user}+tag"),
        "EXTENSION=tag".to_owned(),
        "DOMAIN=mail.example.com".to_owned(),
        format!("RECIPIENT={user}+tag@mail.example.com"),
        "SENDER=bob@example.org".to_owned(),
    ] {
        assert!(env.lines().any(|l| l == line), "{line} in {env}");
    }
}

#[test]
fn unknown_users_loops_and_luser_relay() {
    let s = site("unknown", "");
    let status = deliver(&s, "nosuch@mail.example.com", MESSAGE);
    assert!(matches!(status, DeliveryStatus::Bounced(_)));
    assert_eq!(status.detail().unwrap().dsn.to_string(), "5.1.1");
    assert_eq!(text(&status), "unknown user: \"nosuch\"");

    let mut looped = b"Delivered-To: list@mail.example.com\n".to_vec();
    looped.extend_from_slice(MESSAGE);
    let status = deliver(&s, "list@mail.example.com", &looped);
    assert_eq!(
        text(&status),
        "mail forwarding loop for list@mail.example.com"
    );

    // Aliases that name each other end, not spin.
    let status = deliver(&s, "deep@mail.example.com", MESSAGE);
    assert!(matches!(status, DeliveryStatus::Bounced(_)), "{status:?}");

    let relay = site("luser", "luser_relay = catchall+$user@example.net\n");
    let status = deliver(&relay, "nosuch@mail.example.com", MESSAGE);
    assert_eq!(resubmitted(&status).0, ["catchall+nosuch@example.net"]);
}

/// A transport that records what it is given and delivers it.
struct Recording(std::sync::Mutex<Vec<(String, String)>>);

impl DeliveryAgent for Recording {
    fn deliver(&self, request: DeliveryRequest) -> mta_core::delivery::DeliveryFuture<'_> {
        Box::pin(async move {
            let mut seen = self.0.lock().unwrap();
            for r in &request.recipients {
                seen.push((r.address.to_string(), request.nexthop.clone()));
            }
            let status = DeliveryStatus::Delivered(mta_core::delivery::StatusDetail::new(
                "2.0.0".parse().unwrap(),
                "delivered over lmtp",
                mta_core::delivery::Relay::Transport("lmtp".into()),
            ));
            mta_core::delivery::DeliveryReport::uniform(&request.recipients, &status)
        })
    }
}

#[test]
fn mailbox_and_fallback_transports_hand_mail_over() {
    let user = account();
    let recorder = Arc::new(Recording(Default::default()));
    let found: Arc<dyn DeliveryAgent> = recorder.clone();
    let s = site_with(
        "transports",
        "mailbox_transport = lmtp:unix:private/dovecot-lmtp\nfallback_transport = lmtp:[127.0.0.1]:24\n",
        Some(Arc::new(move |name: &str| {
            (name == "lmtp").then(|| Arc::clone(&found))
        })),
    );
    // A known user's mailbox is the LMTP server's; aliases still apply.
    let status = deliver(&s, &format!("{user}@mail.example.com"), MESSAGE);
    assert_eq!(text(&status), "delivered over lmtp");
    let status = deliver(&s, "nosuch@mail.example.com", MESSAGE);
    assert_eq!(text(&status), "delivered over lmtp");
    assert!(matches!(
        deliver(&s, "list@mail.example.com", MESSAGE),
        DeliveryStatus::Resubmit(_)
    ));
    assert_eq!(
        *recorder.0.lock().unwrap(),
        [
            (
                format!("{user}@mail.example.com"),
                "unix:private/dovecot-lmtp".to_owned()
            ),
            (
                "nosuch@mail.example.com".to_owned(),
                "[127.0.0.1]:24".to_owned()
            ),
        ]
    );
    assert!(
        !s.dir.join("spool").join(&user).exists(),
        "no spool delivery"
    );

    // Without the transport running, the mail waits.
    let waiting = site(
        "no-transport",
        "mailbox_transport = lmtp:unix:private/dovecot-lmtp\n",
    );
    let status = deliver(&waiting, &format!("{user}@mail.example.com"), MESSAGE);
    assert!(matches!(status, DeliveryStatus::Deferred(_)));
    assert_eq!(
        text(&status),
        "mail transport unavailable: lmtp is not running"
    );
}

#[test]
fn procmail_as_mailbox_command() {
    if !Path::new("/usr/bin/procmail").exists() {
        if std::env::var_os("CI").is_some() {
            panic!("procmail is not installed: CI must install it");
        }
        eprintln!("skipped: procmail is not installed");
        return;
    }
    let d = std::env::temp_dir().join(format!("mta-local-procmail-{}", std::process::id()));
    // The book's setup: procmail as every user's mailbox command, with
    // the extension as its argument; here filing into a maildir.
    let s = site(
        "procmail",
        &format!(
            "mailbox_command = /usr/bin/procmail -a \"$EXTENSION\" DEFAULT={}/out/$user/\n",
            d.display()
        ),
    );
    let user = account();
    let status = deliver(&s, &format!("{user}+work@mail.example.com"), MESSAGE);
    assert!(matches!(status, DeliveryStatus::Delivered(_)), "{status:?}");
    let new = s.dir.join("out").join(&user).join("new");
    let files: Vec<_> = std::fs::read_dir(&new)
        .unwrap_or_else(|e| panic!("{}: {e}", new.display()))
        .collect();
    assert_eq!(files.len(), 1);
    let got = read(&files[0].as_ref().unwrap().path());
    assert!(
        got.contains(&format!(
            "Delivered-To: {user}+work@mail.example.com\nSubject: hello\n"
        )),
        "{got}"
    );
}

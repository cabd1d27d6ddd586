//! `check_policy_service` against a policy server written here, on TCP
//! loopback and on a UNIX-domain socket, through [`StdPolicyClient`].
//!
//! The server answers by the recipient's local part: `ok` OK, `reject`
//! REJECT with text, `dunno` DUNNO, `dip` DEFER_IF_PERMIT, `slow` after
//! the client's timeout, `crash` by closing the connection without a
//! reply, `flaky` by closing on the first attempt only, `noaction` with a
//! reply lacking `action=`.

use std::collections::HashMap;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use mta_core::config::{Config, HostFacts};
use mta_core::dns::StubResolver;
use mta_maps::registry::{OpenContext, Registry};
use mta_restrictions::policy::StdPolicyClient;
use mta_restrictions::restriction::{ClientName, Decision, Restrictions, SmtpContext, Stage};

fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

type Request = HashMap<String, String>;

#[derive(Default)]
struct Server {
    requests: Mutex<Vec<Request>>,
    connections: AtomicUsize,
    flaky_seen: AtomicUsize,
}

impl Server {
    /// Serves one connection: requests until the client goes away.
    fn serve<S: std::io::Read + Write>(&self, stream: S) {
        self.connections.fetch_add(1, Ordering::SeqCst);
        let mut reader = BufReader::new(stream);
        loop {
            let mut request = Request::new();
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let line = line.trim_end_matches('\n');
                if line.is_empty() {
                    break;
                }
                let (name, value) = line.split_once('=').expect("name=value");
                request.insert(name.to_string(), value.to_string());
            }
            self.requests.lock().unwrap().push(request.clone());
            let rcpt = request.get("recipient").cloned().unwrap_or_default();
            let local = rcpt.split('@').next().unwrap_or("");
            let action = match local {
                "ok" => "OK",
                "reject" => "REJECT 5.7.1 go away, spammer",
                "dunno" => "DUNNO",
                "dip" => "DEFER_IF_PERMIT 4.7.1 greylisted, try later",
                "slow" => {
                    std::thread::sleep(Duration::from_millis(2500));
                    "OK"
                }
                "crash" => return,
                "flaky" if self.flaky_seen.fetch_add(1, Ordering::SeqCst) == 0 => return,
                "flaky" => "OK",
                "noaction" => {
                    let _ = reader.get_mut().write_all(b"result=OK\n\n");
                    continue;
                }
                _ => "DUNNO",
            };
            let reply = format!("action={action}\n\n");
            if reader.get_mut().write_all(reply.as_bytes()).is_err() {
                return;
            }
        }
    }
}

/// Starts a TCP server on a free loopback port; returns `inet:...`.
fn start_tcp(server: Arc<Server>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let server = server.clone();
            std::thread::spawn(move || server.serve(stream));
        }
    });
    format!("inet:127.0.0.1:{port}")
}

/// Starts a UNIX-domain server; returns `unix:/path`.
fn start_unix(server: Arc<Server>) -> String {
    let path = std::env::temp_dir().join(format!(
        "mta-policy-test-{}-{}.sock",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let server = server.clone();
            std::thread::spawn(move || server.serve(stream));
        }
    });
    format!("unix:{}", path.display())
}

fn restrictions(endpoint: &str) -> Restrictions {
    let main_cf = format!(
        "compatibility_level = 3.6\nmyhostname = mail.example.com\nmynetworks = 127.0.0.0/8\n\
         relay_domains = example.com\nsmtpd_relay_restrictions =\n\
         smtpd_recipient_restrictions = reject_unauth_destination,\n\
         \x20   check_policy_service {{ {endpoint}, timeout=1s, retry_delay=1s }},\n\
         \x20   permit_auth_destination, reject\n"
    );
    let config = Config::parse(&main_cf, "main.cf", HostFacts::default()).unwrap();
    let mut r = Restrictions::from_config(&config, &Registry::new(OpenContext::default())).unwrap();
    r.set_policy_client(Arc::new(StdPolicyClient::new()));
    r
}

fn rcpt(r: &Restrictions, recipient: &str) -> Decision {
    let mut ctx = SmtpContext::new("192.0.2.1".parse().unwrap());
    ctx.client_name = ClientName::Name("client.example.net".into());
    ctx.reverse_name = ctx.client_name.clone();
    ctx.helo = Some("client.example.net".into());
    ctx.esmtp = true;
    ctx.sender = Some("someone@sender.example".into());
    ctx.recipient = Some(recipient.to_string());
    block_on(r.evaluate(Stage::Rcpt, &ctx, &StubResolver::new()))
}

fn reply(d: &Decision) -> String {
    d.reply()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "accept".into())
}

fn actions(endpoint: &str, server: &Server) {
    let r = restrictions(endpoint);
    assert_eq!(reply(&rcpt(&r, "ok@example.com")), "accept");
    assert_eq!(
        reply(&rcpt(&r, "reject@example.com")),
        "554 5.7.1 <reject@example.com>: Recipient address rejected: go away, spammer"
    );
    // DUNNO: on to permit_auth_destination.
    assert_eq!(reply(&rcpt(&r, "dunno@example.com")), "accept");
    // DEFER_IF_PERMIT, then permit_auth_destination: deferred.
    assert_eq!(
        reply(&rcpt(&r, "dip@example.com")),
        "450 4.7.1 <dip@example.com>: Recipient address rejected: greylisted, try later"
    );
    // The policy server is never asked about relaying: reject_unauth_destination
    // comes first.
    assert_eq!(
        reply(&rcpt(&r, "ok@elsewhere.example")),
        "554 5.7.1 <ok@elsewhere.example>: Relay access denied"
    );
    // One connection served all of these.
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    let requests = server.requests.lock().unwrap();
    assert_eq!(requests.len(), 4);
    let first = &requests[0];
    for (name, value) in [
        ("request", "smtpd_access_policy"),
        ("protocol_state", "RCPT"),
        ("protocol_name", "ESMTP"),
        ("helo_name", "client.example.net"),
        ("sender", "someone@sender.example"),
        ("recipient", "ok@example.com"),
        ("recipient_count", "0"),
        ("client_address", "192.0.2.1"),
        ("client_name", "client.example.net"),
        ("reverse_client_name", "client.example.net"),
        ("queue_id", ""),
        ("sasl_username", ""),
        ("etrn_domain", ""),
    ] {
        assert_eq!(
            first.get(name).map(String::as_str),
            Some(value),
            "attribute {name}"
        );
    }
}

#[test]
fn actions_over_tcp() {
    let server = Arc::new(Server::default());
    let endpoint = start_tcp(server.clone());
    actions(&endpoint, &server);
}

#[test]
fn actions_over_unix_socket() {
    let server = Arc::new(Server::default());
    let endpoint = start_unix(server.clone());
    actions(&endpoint, &server);
}

#[test]
fn timeout_gives_the_default_action() {
    let server = Arc::new(Server::default());
    let endpoint = start_tcp(server.clone());
    let r = restrictions(&endpoint);
    let started = Instant::now();
    let d = rcpt(&r, "slow@example.com");
    assert_eq!(
        reply(&d),
        "451 4.3.5 <slow@example.com>: Recipient address rejected: Server configuration problem"
    );
    // Two tries of one second each, one second apart.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(6),
        "{elapsed:?}"
    );
    assert!(
        d.log.iter().any(
            |l| l.starts_with("warning: problem talking to server inet:127.0.0.1:")
                && l.contains("using default action 451 4.3.5 Server configuration problem")
        ),
        "{:?}",
        d.log
    );
    assert_eq!(server.requests.lock().unwrap().len(), 2);
}

#[test]
fn crashed_server_is_retried_then_default_action() {
    let server = Arc::new(Server::default());
    let endpoint = start_unix(server.clone());
    let r = restrictions(&endpoint);
    let started = Instant::now();
    let d = rcpt(&r, "crash@example.com");
    assert_eq!(
        reply(&d),
        "451 4.3.5 <crash@example.com>: Recipient address rejected: Server configuration problem"
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    // try_limit 2: two requests on two connections.
    assert_eq!(server.requests.lock().unwrap().len(), 2);
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    assert!(
        d.log
            .iter()
            .any(|l| l.contains("connection closed before the end of the reply")),
        "{:?}",
        d.log
    );
}

#[test]
fn retry_recovers_from_one_failure() {
    let server = Arc::new(Server::default());
    let endpoint = start_tcp(server.clone());
    let r = restrictions(&endpoint);
    assert_eq!(reply(&rcpt(&r, "flaky@example.com")), "accept");
    assert_eq!(server.requests.lock().unwrap().len(), 2);
}

#[test]
fn malformed_reply_and_server_down() {
    let server = Arc::new(Server::default());
    let endpoint = start_tcp(server.clone());
    let r = restrictions(&endpoint);
    let d = rcpt(&r, "noaction@example.com");
    assert!(reply(&d).starts_with("451 4.3.5 "), "{}", reply(&d));
    assert!(
        d.log.iter().any(|l| l.contains("malformed reply")),
        "{:?}",
        d.log
    );
    // Nothing listening: connection refused, twice, then the default.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = restrictions(&format!("inet:127.0.0.1:{port}"));
    assert!(reply(&rcpt(&r, "ok@example.com")).starts_with("451 4.3.5 "));
}

#[test]
fn default_action_is_configurable_and_no_client_uses_it() {
    let main_cf = "compatibility_level = 3.6\nmyhostname = mail.example.com\n\
         relay_domains = example.com\nsmtpd_relay_restrictions =\n\
         smtpd_policy_service_default_action = DUNNO\n\
         smtpd_recipient_restrictions = reject_unauth_destination,\n\
         \x20   check_policy_service unix:/nonexistent/policy, permit_auth_destination\n";
    let config = Config::parse(main_cf, "main.cf", HostFacts::default()).unwrap();
    // No client installed: the default action (DUNNO), with a warning.
    let r = Restrictions::from_config(&config, &Registry::new(OpenContext::default())).unwrap();
    let d = rcpt(&r, "x@example.com");
    assert!(!d.is_reject());
    assert!(
        d.log
            .iter()
            .any(|l| l.contains("no policy client installed")),
        "{:?}",
        d.log
    );
}

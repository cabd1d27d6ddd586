//! Real SMTP clients against the server: swaks (plain, pipelined,
//! STARTTLS) and Python's smtplib (STARTTLS, several recipients).

#[path = "transport_common/mod.rs"]
mod common;

use common::{Options, TestServer, have_tool};
use tokio::process::Command;

async fn swaks(server: &TestServer, extra: &[&str]) -> (bool, String) {
    let port = server.addr.port().to_string();
    let output = Command::new("/usr/bin/swaks")
        .args(["--server", "127.0.0.1", "--port", &port])
        .args(["--helo", "client.example.org"])
        .args(["--from", "alice@example.org"])
        .args(["--header", "Subject: transport test"])
        .args(["--body", "Hello over tokio.\n.leading dot line\n"])
        .args(["--timeout", "10"])
        .args(extra)
        .output()
        .await
        .expect("swaks runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn swaks_sends_a_message() {
    if !have_tool("/usr/bin/swaks", &["--version"]) {
        return;
    }
    let server = TestServer::start(Options::default()).await;
    let (ok, out) = swaks(&server, &["--to", "bob@example.net"]).await;
    assert!(ok, "swaks failed:\n{out}");
    assert!(out.contains("<-  250 2.0.0 Ok: queued as 1"), "{out}");
    let messages = server.recording.messages();
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m.helo, "client.example.org");
    assert_eq!(m.from, "<alice@example.org>");
    assert_eq!(m.rcpts, ["bob@example.net"]);
    assert!(
        m.text().contains("Subject: transport test\r\n"),
        "{}",
        m.text()
    );
    // Dot-stuffed by swaks, unstuffed by the session, CR LF line ends.
    assert!(
        m.text()
            .contains("\r\n\r\nHello over tokio.\r\n.leading dot line\r\n"),
        "{:?}",
        m.text()
    );
    assert!(m.tls.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn swaks_pipelines_a_message_to_two_recipients() {
    if !have_tool("/usr/bin/swaks", &["--version"]) {
        return;
    }
    // smtpd_forbid_unauth_pipelining is on (the default): pipelining
    // after EHLO is allowed, and must work through the transport.
    let server = TestServer::start(Options::default()).await;
    let (ok, out) = swaks(
        &server,
        &["--pipeline", "--to", "bob@example.net,carol@example.net"],
    )
    .await;
    assert!(ok, "swaks failed:\n{out}");
    // swaks sent MAIL, both RCPTs and DATA in one go.
    assert!(
        out.contains(" -> MAIL FROM:<alice@example.org>\n -> RCPT TO:<bob@example.net>\n -> RCPT TO:<carol@example.net>\n -> DATA\n"),
        "{out}"
    );
    assert!(out.contains("<-  250 2.0.0 Ok: queued as 1"), "{out}");
    let messages = server.recording.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].rcpts, ["bob@example.net", "carol@example.net"]);
    assert!(messages[0].text().contains("Hello over tokio."));
}

#[tokio::test(flavor = "multi_thread")]
async fn swaks_starttls_with_a_self_signed_certificate() {
    if !have_tool("/usr/bin/swaks", &["--version"])
        || !have_tool("/usr/bin/perl", &["-MNet::SSLeay", "-e1"])
    {
        return;
    }
    let mut session = mta_smtp::server::ServerConfig::new(common::HOST);
    session.starttls = true;
    let server = TestServer::start(Options {
        session,
        tls: true,
        ..Options::default()
    })
    .await;
    let (ok, out) = swaks(&server, &["--tls", "--to", "bob@example.net"]).await;
    assert!(ok, "swaks failed:\n{out}");
    assert!(out.contains("<-  220 2.0.0 Ready to start TLS"), "{out}");
    assert!(out.contains("=== TLS started"), "{out}");
    let messages = server.recording.messages();
    assert_eq!(messages.len(), 1);
    let tls = messages[0].tls.as_ref().expect("the message came over TLS");
    assert!(tls.protocol.starts_with("TLSv1."), "{tls:?}");
    assert!(tls.cipher.starts_with("TLS_"), "{tls:?}");
    assert_eq!(messages[0].rcpts, ["bob@example.net"]);
    // After STARTTLS the client had to say EHLO again.
    let events = server.recording.events();
    assert_eq!(
        events.iter().filter(|e| *e == "Helo").count(),
        2,
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn python_smtplib_starttls_to_several_recipients() {
    if !have_tool("python3", &["-c", "import smtplib, ssl"]) {
        return;
    }
    let mut session = mta_smtp::server::ServerConfig::new(common::HOST);
    session.starttls = true;
    let server = TestServer::start(Options {
        session,
        tls: true,
        ..Options::default()
    })
    .await;
    let script = r#"
import smtplib, ssl, sys
port = int(sys.argv[1])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
msg = "From: a@example.org\r\nTo: b@example.net, c@example.net, d@example.com\r\nSubject: smtplib\r\n\r\nline one\r\n.dot line\r\n"
with smtplib.SMTP("127.0.0.1", port, local_hostname="py.example.org", timeout=10) as s:
    s.ehlo()
    assert s.has_extn("starttls")
    s.starttls(context=ctx)
    s.ehlo()
    assert not s.has_extn("starttls")
    refused = s.sendmail("a@example.org", ["b@example.net", "c@example.net", "d@example.com"], msg)
    print("refused", refused)
    print("cipher", s.sock.version())
"#;
    let output = Command::new("python3")
        .args(["-c", script, &server.addr.port().to_string()])
        .output()
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "python failed:\n{out}");
    assert!(out.contains("refused {}"), "{out}");
    let messages = server.recording.messages();
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m.helo, "py.example.org");
    assert_eq!(m.from, "<a@example.org>");
    assert_eq!(m.rcpts, ["b@example.net", "c@example.net", "d@example.com"]);
    assert!(
        m.text().ends_with("\r\n\r\nline one\r\n.dot line\r\n"),
        "{:?}",
        m.text()
    );
    let tls = m.tls.as_ref().expect("over TLS");
    // Python reports the same protocol version the server logged.
    assert!(
        out.contains(&format!("cipher {}", tls.protocol)),
        "{out} {tls:?}"
    );
}

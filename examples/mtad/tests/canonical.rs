//! Canonical mapping and masquerading on the reference site: a sender's
//! login name becomes her published address in the envelope and in
//! `From:`, a host name disappears behind its domain, and a client that
//! is not in `local_header_rewrite_clients` keeps its headers as sent,
//! as Postfix's cleanup does.

mod common;
use common::{Running, free_port, send, wait_for_files};

fn site(name: &str, extra: &str) -> (std::path::PathBuf, u16, Running) {
    let smtp = free_port();
    let dir = common::compiled_site(name, |master| {
        master
            .replace("127.0.0.1:2525 ", &format!("127.0.0.1:{smtp} "))
            .replace("127.0.0.1:5870 ", &format!("127.0.0.1:{} ", free_port()))
    });
    let main_cf = std::fs::read_to_string(dir.join("main.cf")).unwrap();
    std::fs::write(dir.join("main.cf"), format!("{main_cf}{extra}")).unwrap();
    let daemon = common::start_mtad(&dir, smtp);
    (dir, smtp, daemon)
}

#[test]
fn senders_are_mapped_and_masqueraded() {
    let (dir, smtp, _daemon) = site(
        "canonical",
        "sender_canonical_maps = inline:{ carol@example.org=Carol.King@example.org }\n\
         recipient_canonical_maps = inline:{ {@old.example.com=@example.com} }\n\
         masquerade_domains = example.org\n\
         masquerade_exceptions = root\n",
    );
    let r = send(
        smtp,
        "carol@example.org",
        "bob@example.com",
        "From: Carol <carol@example.org>\nReply-To: carol@desk.example.org (desk)\nCc: root@desk.example.org\nSubject: mapped\n\nhello\n",
    );
    assert!(r.starts_with("250"), "{r}");
    let m = &wait_for_files(&dir.join("state/mail/example.com/bob/new"), 1)[0];
    assert!(
        m.starts_with("Return-Path: <Carol.King@example.org>\n"),
        "{m}"
    );
    assert!(
        m.contains("\nFrom: Carol <Carol.King@example.org>\n"),
        "{m}"
    );
    assert!(m.contains("\nReply-To: carol@example.org (desk)\n"), "{m}");
    // masquerade_exceptions: root keeps its host.
    assert!(m.contains("\nCc: root@desk.example.org\n"), "{m}");

    // A result @otherdomain: the same user there (bob@old.example.com
    // is bob@example.com).
    let r = send(
        smtp,
        "carol@example.org",
        "bob@old.example.com",
        "Subject: to the old domain\n\nhi\n",
    );
    assert!(r.starts_with("250"), "{r}");
    let both = wait_for_files(&dir.join("state/mail/example.com/bob/new"), 2);
    assert!(
        both.iter()
            .any(|m| m.contains("Subject: to the old domain\n")
                && m.contains("X-Original-To: bob@old.example.com\n")),
        "{both:?}"
    );
}

#[test]
fn remote_clients_keep_their_headers() {
    // Only mynetworks clients' headers are rewritten; 127.0.0.1 is in
    // mynetworks on this site, so narrow it to nothing that matches.
    let (dir, smtp, _daemon) = site(
        "canonical-remote",
        "sender_canonical_maps = inline:{ carol@example.org=Carol.King@example.org }\n\
         local_header_rewrite_clients = permit_sasl_authenticated\n",
    );
    let r = send(
        smtp,
        "carol@example.org",
        "bob@example.com",
        "From: Carol <carol@example.org>\nSubject: as sent\n\nhello\n",
    );
    assert!(r.starts_with("250"), "{r}");
    let m = &wait_for_files(&dir.join("state/mail/example.com/bob/new"), 1)[0];
    // The envelope is mapped for every client; the header is not.
    assert!(
        m.starts_with("Return-Path: <Carol.King@example.org>\n"),
        "{m}"
    );
    assert!(m.contains("\nFrom: Carol <carol@example.org>\n"), "{m}");
}

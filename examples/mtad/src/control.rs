//! The daemon's sockets under `queue_directory/public/`, named as
//! Postfix's: `pickup` (a datagram socket: "new mail in the maildrop",
//! sent by `sendmail`) and `flush` (a stream socket: `postqueue -f`,
//! `-s SITE`, `-i ID` and `sendmail -q` ask for deferred mail to be tried
//! now, and hear how many messages that was). Both are mode 0666 in a
//! 0755 directory, as Postfix's public services are open to every local
//! user: a poke or a flush costs the daemon a queue scan, nothing more.
//!
//! The flush protocol is one request line and one reply line:
//! `all`, `site DOMAIN` or `id QUEUEID`; `ok N` or `error TEXT`.

use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};

use mta_queue::scheduler::Flush;

/// `queue_directory/public`.
fn public(queue_dir: &Path) -> PathBuf {
    queue_dir.join("public")
}

/// The pickup socket.
pub(crate) fn pickup_path(queue_dir: &Path) -> PathBuf {
    public(queue_dir).join("pickup")
}

/// The flush socket.
pub(crate) fn flush_path(queue_dir: &Path) -> PathBuf {
    public(queue_dir).join("flush")
}

/// Tells a running daemon that the maildrop has new mail. An error means
/// nobody listens; the mail waits in the maildrop until the daemon
/// starts (or its next periodic scan).
pub(crate) fn poke_pickup(queue_dir: &Path) -> io::Result<()> {
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    socket.send_to(b"W", pickup_path(queue_dir))?;
    Ok(())
}

/// Why a flush request failed.
#[derive(Debug)]
pub(crate) enum FlushError {
    /// No daemon answers.
    Down(io::Error),
    /// The daemon refused (a site not in `fast_flush_domains`).
    Refused(String),
}

/// The request line for `which`.
fn request_line(which: &Flush) -> String {
    match which {
        Flush::All => "all".to_owned(),
        Flush::Site(site) => format!("site {site}"),
        Flush::Message(id) => format!("id {id}"),
    }
}

/// Parses a request line.
pub(crate) fn parse_request(line: &str) -> Option<Flush> {
    let line = line.trim();
    match line.split_once(' ') {
        None if line == "all" => Some(Flush::All),
        Some(("site", site)) if !site.trim().is_empty() => {
            Some(Flush::Site(site.trim().to_ascii_lowercase()))
        }
        Some(("id", id)) if !id.trim().is_empty() => Some(Flush::Message(id.trim().to_owned())),
        _ => None,
    }
}

/// Asks the daemon to flush `which`; the number of messages made due.
pub(crate) fn request_flush(queue_dir: &Path, which: &Flush) -> Result<usize, FlushError> {
    let mut stream =
        std::os::unix::net::UnixStream::connect(flush_path(queue_dir)).map_err(FlushError::Down)?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(100)))
        .map_err(FlushError::Down)?;
    writeln!(stream, "{}", request_line(which)).map_err(FlushError::Down)?;
    let mut reply = String::new();
    io::BufReader::new((&stream).take(4096))
        .read_line(&mut reply)
        .map_err(FlushError::Down)?;
    let reply = reply.trim();
    if let Some(n) = reply.strip_prefix("ok ") {
        return Ok(n.parse().unwrap_or(0));
    }
    Err(FlushError::Refused(
        reply.strip_prefix("error ").unwrap_or(reply).to_owned(),
    ))
}

/// The daemon's side: the two sockets, bound afresh (a stale socket from
/// a daemon that died is removed first; the pid file lock says no other
/// daemon runs).
pub(crate) fn bind(
    queue_dir: &Path,
) -> io::Result<(tokio::net::UnixDatagram, tokio::net::UnixListener)> {
    use std::os::unix::fs::PermissionsExt;
    let dir = public(queue_dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let pickup = pickup_path(queue_dir);
    let flush = flush_path(queue_dir);
    for p in [&pickup, &flush] {
        match std::fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let datagram = tokio::net::UnixDatagram::bind(&pickup)?;
    let listener = tokio::net::UnixListener::bind(&flush)?;
    for p in [&pickup, &flush] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o666))?;
    }
    Ok((datagram, listener))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for which in [
            Flush::All,
            Flush::Site("example.org".into()),
            Flush::Message("4ABC".into()),
        ] {
            assert_eq!(parse_request(&request_line(&which)), Some(which));
        }
        assert_eq!(
            parse_request("site Example.ORG\n"),
            Some(Flush::Site("example.org".into()))
        );
        assert_eq!(parse_request("site "), None);
        assert_eq!(parse_request("bogus"), None);
    }
}

//! How much memory an idle SMTP session costs.
//!
//! Starts the server on a loopback port, opens N client connections
//! (default 10,000) that stay silent after the greeting, waits until every
//! one has its `220`, and prints the resident set size (VmRSS of
//! `/proc/self/status`) before and after, and the difference per
//! connection.
//!
//! ```text
//! cargo run --release --example idle_connections -- [N] [--baseline | --split]
//! ```
//!
//! - default: server and clients in this process; the figure includes
//!   the clients' sockets and buffers.
//! - `--baseline`: the same clients against a bare accept loop that
//!   writes a greeting and keeps the socket, with no session task. The
//!   default figure minus this one is the session's own cost beyond a
//!   registered socket.
//! - `--split`: the clients run in a child process; the figure is the
//!   server's alone.
//!
//! VmRSS counts user-space memory only: kernel socket buffers are not in
//! it. The process needs 2N+ file descriptors in one process (N+ with
//! `--split`); it raises its RLIMIT_NOFILE, which needs the hard limit to
//! allow it (as root it does, or `ulimit -n 30000` first).

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use mta_smtp::server::{Event, ServerConfig};
use mta_smtp::transport::{
    ConnectionInfo, ConnectionLimits, Decision, HandlerFuture, Server, SessionHandler,
    TransportConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Accepts everything; no state.
struct AcceptAll;

impl SessionHandler for AcceptAll {
    fn on_event<'a>(&'a mut self, event: &'a Event, _: &'a ConnectionInfo) -> HandlerFuture<'a> {
        Box::pin(async move { event.needs_decision().then_some(Decision::Accept) })
    }
}

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

fn raise_fd_limit(want: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft >= want {
        return;
    }
    if setrlimit(Resource::RLIMIT_NOFILE, want, hard.max(want)).is_ok() {
        return;
    }
    // Not allowed past the hard limit: take all of it.
    if hard < want {
        eprintln!(
            "RLIMIT_NOFILE hard limit is {hard}, {want} wanted: use fewer connections, \
             or raise it (`ulimit -Hn {want}` as root)"
        );
        std::process::exit(2);
    }
    setrlimit(Resource::RLIMIT_NOFILE, want, hard).expect("setrlimit");
}

/// Opens `n` connections and waits for each one's greeting line.
async fn open_clients(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(n);
    let mut tasks = JoinSet::new();
    let mut started = 0;
    while streams.len() < n {
        while started < n && tasks.len() < 256 {
            started += 1;
            tasks.spawn(async move {
                let mut s = TcpStream::connect(addr).await.expect("connect");
                let mut greeting = [0u8; 64];
                let mut got = 0;
                while !greeting[..got].ends_with(b"\r\n") {
                    let r = s.read(&mut greeting[got..]).await.expect("read");
                    assert!(r > 0, "closed before the greeting");
                    got += r;
                }
                assert!(greeting.starts_with(b"220 "), "not a greeting");
                s
            });
        }
        let s = tasks.join_next().await.expect("a task").expect("client");
        streams.push(s);
    }
    streams
}

/// The `--baseline` server: keeps each socket after a greeting, no session.
async fn bare_holder(listener: TcpListener) {
    let mut held = Vec::new();
    loop {
        let (mut s, _) = listener.accept().await.expect("accept");
        let _ = s.write_all(b"220 bench ESMTP\r\n").await;
        held.push(s);
    }
}

async fn start_server(n: usize) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let transport =
        TransportConfig::new(ServerConfig::new("bench.example"), None, false).expect("transport");
    let limits = ConnectionLimits {
        max_connections: n + 16,
        client_connection_count_limit: 0,
        ..ConnectionLimits::default()
    };
    let server = Server::new(listener, transport, limits);
    tokio::spawn(server.run(|| AcceptAll, std::future::pending::<()>()));
    addr
}

fn report(label: &str, n: usize, before: u64, after: u64) {
    let per = (after.saturating_sub(before) as f64) * 1024.0 / n as f64;
    println!(
        "{label}: connections={n} rss_before={before} KiB rss_after={after} KiB per_connection={per:.0} bytes"
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(10_000);
    let mode = args
        .iter()
        .find(|a| a.starts_with("--"))
        .map(String::as_str);

    if mode == Some("--client-child") {
        // Child of `--split`: the clients only.
        raise_fd_limit(n as u64 + 64);
        let addr = args.iter().find_map(|a| a.parse().ok()).expect("address");
        let streams = open_clients(addr, n).await;
        println!("ready {}", streams.len());
        std::io::stdout().flush().ok();
        // Hold the connections until the parent closes our stdin.
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
        })
        .await;
        drop(streams);
        return;
    }

    match mode {
        None => {
            raise_fd_limit(2 * n as u64 + 64);
            let addr = start_server(n).await;
            let _warm = open_clients(addr, 16).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let before = vm_rss_kib();
            let start = Instant::now();
            let streams = open_clients(addr, n).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let after = vm_rss_kib();
            eprintln!("{} greeted in {:?}", streams.len(), start.elapsed());
            report("in-process (server + clients)", n, before, after);
        }
        Some("--baseline") => {
            raise_fd_limit(2 * n as u64 + 64);
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(bare_holder(listener));
            let _warm = open_clients(addr, 16).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let before = vm_rss_kib();
            let streams = open_clients(addr, n).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let after = vm_rss_kib();
            eprintln!("{} greeted", streams.len());
            report("baseline (clients + bare socket holder)", n, before, after);
        }
        Some("--split") => {
            raise_fd_limit(n as u64 + 64);
            let addr = start_server(n).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let before = vm_rss_kib();
            let exe = std::env::current_exe().expect("current_exe");
            let mut child = std::process::Command::new(exe)
                .args(["--client-child", &n.to_string(), &addr.to_string()])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("spawn the client process");
            let stdout = child.stdout.take().expect("stdout");
            let ready = tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                std::io::BufReader::new(stdout).read_line(&mut line).ok();
                line
            })
            .await
            .expect("child output");
            assert!(ready.starts_with("ready"), "client process: {ready:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
            let after = vm_rss_kib();
            report("split (server process only)", n, before, after);
            drop(child.stdin.take());
            let _ = child.wait();
        }
        Some(other) => {
            eprintln!("unknown option {other}; use --baseline or --split");
            std::process::exit(2);
        }
    }
}

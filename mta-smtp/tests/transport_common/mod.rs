//! What the integration tests share: a recording handler, a server on an
//! ephemeral loopback port, a self-signed certificate, and a raw client.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mta_core::reply::{Reply, ReplyCode};
use mta_smtp::server::{Event, ServerConfig};
use mta_smtp::transport::{
    ConnectionInfo, ConnectionLimits, Decision, HandlerFuture, Server, SessionHandler, TlsInfo,
    TransportConfig,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const HOST: &str = "mx.test";

/// A message as the handler received it.
#[derive(Debug, Clone, Default)]
pub struct Message {
    pub helo: String,
    pub from: String,
    pub rcpts: Vec<String>,
    pub content: Vec<u8>,
    pub tls: Option<TlsInfo>,
    pub wrapper_mode: bool,
}

impl Message {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.content).into_owned()
    }
}

/// Everything the handlers of one server saw.
#[derive(Debug, Default)]
pub struct Log {
    pub messages: Vec<Message>,
    /// One short name per event, every connection together.
    pub events: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Recording {
    pub log: Arc<Mutex<Log>>,
    pub queue_ids: Arc<AtomicU64>,
    /// How long each decision takes (a slow policy).
    pub decision_delay: Duration,
    /// Under LMTP: refuse the second recipient at the end of data.
    pub lmtp_refuse_second: bool,
}

impl Recording {
    pub fn messages(&self) -> Vec<Message> {
        self.log.lock().unwrap().messages.clone()
    }
    pub fn events(&self) -> Vec<String> {
        self.log.lock().unwrap().events.clone()
    }
    pub fn handler(&self) -> Recorder {
        Recorder {
            shared: self.clone(),
            current: Message::default(),
        }
    }
}

/// Accepts everything, records envelopes and content, answers the end of
/// data with `250 2.0.0 Ok: queued as N`.
pub struct Recorder {
    shared: Recording,
    current: Message,
}

fn event_name(event: &Event) -> String {
    match event {
        Event::Connect => "Connect".into(),
        Event::Helo { .. } => "Helo".into(),
        Event::Mail { .. } => "Mail".into(),
        Event::Rcpt { .. } => "Rcpt".into(),
        Event::DataStart => "DataStart".into(),
        Event::Content(_) => "Content".into(),
        Event::DataEnd { .. } => "DataEnd".into(),
        Event::Rset => "Rset".into(),
        Event::StartTls => "StartTls".into(),
        Event::Quit => "Quit".into(),
        other => format!("{other:?}"),
    }
}

impl SessionHandler for Recorder {
    fn on_event<'a>(&'a mut self, event: &'a Event, conn: &'a ConnectionInfo) -> HandlerFuture<'a> {
        Box::pin(async move {
            self.shared
                .log
                .lock()
                .unwrap()
                .events
                .push(event_name(event));
            if event.needs_decision() && !self.shared.decision_delay.is_zero() {
                tokio::time::sleep(self.shared.decision_delay).await;
            }
            match event {
                Event::Helo { name, .. } => {
                    self.current.helo = name.clone();
                    Some(Decision::Accept)
                }
                Event::Mail { from, .. } => {
                    self.current = Message {
                        helo: self.current.helo.clone(),
                        from: from.to_string(),
                        ..Message::default()
                    };
                    Some(Decision::Accept)
                }
                Event::Rcpt { to, .. } => {
                    self.current.rcpts.push(to.to_string());
                    Some(Decision::Accept)
                }
                Event::Content(bytes) => {
                    self.current.content.extend_from_slice(bytes);
                    None
                }
                Event::DataAborted(_) => {
                    self.current.content.clear();
                    None
                }
                Event::DataEnd { .. } => {
                    let mut message = std::mem::take(&mut self.current);
                    self.current.helo = message.helo.clone();
                    message.tls = conn.tls.clone();
                    message.wrapper_mode = conn.wrapper_mode;
                    let n = message.rcpts.len();
                    self.shared.log.lock().unwrap().messages.push(message);
                    let id = self.shared.queue_ids.fetch_add(1, Ordering::SeqCst) + 1;
                    let queued = Reply::new(
                        ReplyCode::OK,
                        Some("2.0.0".parse().unwrap()),
                        [format!("Ok: queued as {id}")],
                    )
                    .unwrap();
                    if self.shared.lmtp_refuse_second {
                        let mut replies = vec![queued; n];
                        if n > 1 {
                            replies[1] = Reply::reject(
                                ReplyCode::INSUFFICIENT_STORAGE,
                                2,
                                2,
                                "Mailbox full",
                            )
                            .unwrap();
                        }
                        return Some(Decision::PerRecipient(replies));
                    }
                    Some(Decision::Reply(queued))
                }
                e if e.needs_decision() => Some(Decision::Accept),
                _ => None,
            }
        })
    }
}

/// A self-signed certificate for `localhost` and a rustls server
/// configuration with it.
pub fn tls_config() -> (Arc<rustls::ServerConfig>, CertificateDer<'static>) {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = key.cert.der().clone();
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], private)
        .unwrap();
    (Arc::new(config), cert)
}

/// A TLS client that trusts `cert` for `localhost`.
pub fn tls_connector(cert: &CertificateDer<'static>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

pub fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

pub struct Options {
    pub session: ServerConfig,
    pub tls: bool,
    pub wrapper: bool,
    pub limits: ConnectionLimits,
    pub recording: Recording,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            session: ServerConfig::new(HOST),
            tls: false,
            wrapper: false,
            limits: ConnectionLimits::default(),
            recording: Recording::default(),
        }
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub recording: Recording,
    pub cert: Option<CertificateDer<'static>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestServer {
    pub async fn start(options: Options) -> TestServer {
        init_tracing();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tls, cert) = if options.tls {
            let (config, cert) = tls_config();
            (Some(config), Some(cert))
        } else {
            (None, None)
        };
        let transport = TransportConfig::new(options.session, tls, options.wrapper).unwrap();
        let server = Server::new(listener, transport, options.limits);
        let recording = options.recording;
        let factory_recording = recording.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(move || factory_recording.handler(), async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            recording,
            cert,
            stop: Some(stop),
            task,
        }
    }

    /// Asks the server to shut down; the returned handle finishes when
    /// `run` returns.
    pub fn shutdown(&mut self) -> &mut JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        &mut self.task
    }

    pub async fn connect(&self) -> Client<TcpStream> {
        Client::new(TcpStream::connect(self.addr).await.unwrap())
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Whether an external tool is there; with CI set, its absence fails the
/// test instead of skipping it.
pub fn have_tool(path: &str, check: &[&str]) -> bool {
    let ok = std::process::Command::new(path)
        .args(check)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("{path} {check:?} failed: the test needs it (install it in CI)");
        }
        eprintln!("skipped: {path} {check:?} is not available");
    }
    ok
}

/// How long a test waits for any one thing before it fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A scripted SMTP client.
pub struct Client<S> {
    pub io: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub fn new(io: S) -> Client<S> {
        Client {
            io,
            buf: Vec::new(),
        }
    }

    /// Sends `text` as is, in one write.
    pub async fn send(&mut self, text: &str) {
        self.send_bytes(text.as_bytes()).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
        self.io.flush().await.unwrap();
    }

    /// One complete reply, all its lines, CR LF kept.
    pub async fn reply(&mut self) -> String {
        loop {
            if let Some(end) = complete_reply(&self.buf) {
                let reply: Vec<u8> = self.buf.drain(..end).collect();
                return String::from_utf8(reply).unwrap();
            }
            let n = self.read_some().await;
            assert!(
                n > 0,
                "connection closed; have {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// What one read brings (waiting for it), plus anything buffered.
    pub async fn read_once(&mut self) -> String {
        if self.buf.is_empty() {
            self.read_some().await;
        }
        String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned()
    }

    async fn read_some(&mut self) -> usize {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(PATIENCE, self.io.read(&mut chunk))
            .await
            .expect("server answered in time")
            .expect("read");
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// The server closes the connection (a reset counts too) with nothing
    /// more to say.
    pub async fn expect_close(&mut self) {
        let mut chunk = [0u8; 64];
        let r = tokio::time::timeout(PATIENCE, self.io.read(&mut chunk))
            .await
            .expect("server closed in time");
        if let Ok(n) = r {
            assert_eq!(
                n,
                0,
                "expected close, got {:?}",
                String::from_utf8_lossy(&chunk[..n])
            );
        }
        assert!(
            self.buf.is_empty(),
            "unread: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
    }

    /// Sends a command and returns its reply.
    pub async fn command(&mut self, line: &str) -> String {
        self.send(&format!("{line}\r\n")).await;
        self.reply().await
    }

    /// The stream, whatever is left unread.
    pub fn into_inner_lossy(self) -> S {
        self.io
    }

    pub fn into_inner(self) -> S {
        assert!(
            self.buf.is_empty(),
            "unread: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.io
    }
}

/// The length of the first complete reply in `buf`, if there is one.
fn complete_reply(buf: &[u8]) -> Option<usize> {
    let mut start = 0;
    while let Some(lf) = buf[start..].iter().position(|&b| b == b'\n') {
        let line = &buf[start..start + lf + 1];
        start += lf + 1;
        if line.len() < 4 || line[3] != b'-' {
            return Some(start);
        }
    }
    None
}

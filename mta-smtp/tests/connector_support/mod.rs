//! What the connector's integration tests share: a recording policy for
//! the in-repo server, TLS material, small helpers.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mta_core::address::{MailAddress, ReversePath};
use mta_core::reply::{Reply, ReplyCode};
use mta_smtp::client::Transaction;
use mta_smtp::server::{Event, ServerConfig};
use mta_smtp::transport::{
    ConnectionInfo, ConnectionLimits, Decision, HandlerFuture, Server, SessionHandler, TlsInfo,
    TransportConfig,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::oneshot;

/// One message as the server's policy saw it.
#[derive(Debug, Clone, Default)]
pub struct Received {
    pub peer: Option<SocketAddr>,
    pub helo: String,
    pub from: String,
    pub rcpts: Vec<String>,
    pub content: Vec<u8>,
    pub tls: Option<TlsInfo>,
}

/// What every session of one server saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub connections: usize,
    pub messages: Vec<Received>,
}

/// A policy: `bad@` gets 550 5.1.1, `later@` 450 4.2.0, `slow@` an
/// answer only after `slow` (a server that stops answering); everything
/// else is accepted and queued.
#[derive(Clone)]
pub struct Policy {
    pub seen: Arc<Mutex<Seen>>,
    pub slow: Duration,
    current: Received,
}

impl Policy {
    pub fn new() -> Policy {
        Policy {
            seen: Arc::default(),
            slow: Duration::from_secs(5),
            current: Received::default(),
        }
    }

    pub fn messages(&self) -> Vec<Received> {
        self.seen.lock().unwrap().messages.clone()
    }

    pub fn connections(&self) -> usize {
        self.seen.lock().unwrap().connections
    }
}

fn refusal(code: ReplyCode, subject: u16, detail: u16, text: &str) -> Decision {
    Decision::Reply(Reply::reject(code, subject, detail, text).unwrap())
}

impl SessionHandler for Policy {
    fn on_event<'a>(&'a mut self, event: &'a Event, conn: &'a ConnectionInfo) -> HandlerFuture<'a> {
        Box::pin(async move {
            match event {
                Event::Connect => {
                    self.seen.lock().unwrap().connections += 1;
                    Some(Decision::Accept)
                }
                Event::Helo { name, .. } => {
                    self.current.helo = name.clone();
                    Some(Decision::Accept)
                }
                Event::Mail { from, .. } => {
                    self.current = Received {
                        helo: self.current.helo.clone(),
                        from: from.to_string(),
                        ..Received::default()
                    };
                    Some(Decision::Accept)
                }
                Event::Rcpt { to, .. } => {
                    let local = to.to_string();
                    if local.starts_with("bad@") {
                        return Some(refusal(
                            ReplyCode::MAILBOX_UNAVAILABLE,
                            1,
                            1,
                            "no such user",
                        ));
                    }
                    if local.starts_with("later@") {
                        return Some(refusal(ReplyCode::MAILBOX_BUSY, 2, 0, "try later"));
                    }
                    if local.starts_with("slow@") {
                        tokio::time::sleep(self.slow).await;
                    }
                    self.current.rcpts.push(local);
                    Some(Decision::Accept)
                }
                Event::Content(bytes) => {
                    self.current.content.extend_from_slice(bytes);
                    None
                }
                Event::DataAborted(_) | Event::Rset => {
                    self.current.content.clear();
                    None
                }
                Event::DataEnd { .. } => {
                    let mut message = std::mem::take(&mut self.current);
                    self.current.helo = message.helo.clone();
                    message.tls = conn.tls.clone();
                    message.peer = Some(conn.peer);
                    let mut seen = self.seen.lock().unwrap();
                    seen.messages.push(message);
                    let n = seen.messages.len();
                    let text = format!("Ok: queued as Q{n}");
                    let reply =
                        Reply::new(ReplyCode::OK, Some("2.0.0".parse().unwrap()), [text]).unwrap();
                    Some(Decision::Reply(reply))
                }
                e if e.needs_decision() => Some(Decision::Accept),
                _ => None,
            }
        })
    }
}

/// A self-signed certificate for `localhost`: its DER form, and its
/// certificate and key in PEM.
pub struct SelfSigned {
    pub der: CertificateDer<'static>,
    pub key_der: Vec<u8>,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn self_signed() -> SelfSigned {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    SelfSigned {
        der: made.cert.der().clone(),
        key_der: made.signing_key.serialize_der(),
        cert_pem: made.cert.pem(),
        key_pem: made.signing_key.serialize_pem(),
    }
}

pub fn server_tls(cert: &SelfSigned) -> Arc<rustls::ServerConfig> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der.clone()));
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der.clone()], key)
        .unwrap();
    Arc::new(config)
}

/// A client configuration whose only trust anchor is `cert`.
pub fn client_tls(cert: &CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// The in-repo server on an ephemeral loopback port, stopped on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    pub policy: Policy,
    stop: Option<oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start(
        session: ServerConfig,
        tls: Option<Arc<rustls::ServerConfig>>,
        policy: Policy,
    ) -> TestServer {
        init_tracing();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let transport = TransportConfig::new(session, tls, false).unwrap();
        let server = Server::new(listener, transport, ConnectionLimits::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let factory = policy.clone();
        tokio::spawn(server.run(move || factory.clone(), async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            policy,
            stop: Some(stop),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub fn addr(a: &str) -> MailAddress {
    a.parse().unwrap()
}

pub fn tx(rcpts: &[&str]) -> Transaction {
    Transaction::new(
        ReversePath::Mailbox(addr("sender@example.org")),
        rcpts.iter().map(|a| addr(a)).collect(),
    )
}

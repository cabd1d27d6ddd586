//! The `smtpd` services of `master.cf`: each `inet` entry running
//! `smtpd` becomes a listener whose sessions ask the restrictions and
//! write accepted mail through cleanup into the queue.
//!
//! Wiring only: the SMTP engine is `mta_smtp`, the policy
//! `mta_restrictions`, the queue `mta_queue`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use mta_core::address::ReversePath;
use mta_core::dns::Resolver;
use mta_core::reply::{ParseStatus, Reply, parse_reply};
use mta_queue::cleanup::{Cleanup, CleanupMessage, Submission};
use mta_queue::file::{Recipient, notify};
use mta_restrictions::access::MessageAction;
use mta_restrictions::content::MessageContext;
use mta_restrictions::restriction::{Decision, Restrictions, SmtpContext, Stage, Verdict};
use mta_smtp::command::MailParameters;
use mta_smtp::sasl::{Authenticator, ClientFacts, Conversation, Verdict as SaslVerdict};
use mta_smtp::server::Event;
use mta_smtp::transport::{ConnectionInfo, Decision as Answer, HandlerFuture, SessionHandler};

use crate::log::Log;

/// What every session of one `smtpd` service shares.
pub(crate) struct Service {
    pub(crate) restrictions: Restrictions,
    pub(crate) dns: Arc<dyn Resolver>,
    pub(crate) cleanup: Arc<Cleanup>,
    pub(crate) hostname: String,
    pub(crate) mail_name: String,
    /// `fast_flush_domains`, lower-cased: the domains ETRN may flush.
    pub(crate) fast_flush_domains: Vec<String>,
    /// `local_header_rewrite_clients`, and whether
    /// `remote_header_rewrite_domain` is set (then every client's
    /// headers are rewritten).
    pub(crate) local_header_rewrite_clients: Vec<String>,
    pub(crate) remote_header_rewrite: bool,
    /// The addresses of this machine, for `permit_inet_interfaces`.
    pub(crate) own_addresses: Vec<std::net::IpAddr>,
    /// The scheduler in force, which ETRN asks to flush.
    pub(crate) scheduler: crate::daemon::SchedulerSlot,
    /// `queue_minfree` and `message_size_limit`, for the free-space check
    /// at MAIL FROM.
    pub(crate) queue_minfree: u64,
    pub(crate) message_size_limit: u64,
    /// `content_filter` (`transport:nexthop`); empty for none.
    pub(crate) content_filter: String,
    /// `receive_override_options = no_address_mappings`.
    pub(crate) no_address_mappings: bool,
    /// `receive_override_options = no_header_body_checks`.
    pub(crate) no_header_body_checks: bool,
    /// The SASL back end, when `smtpd_sasl_auth_enable = yes`.
    pub(crate) sasl: Option<Arc<dyn Authenticator>>,
    /// `smtpd_sasl_authenticated_header`.
    pub(crate) sasl_header: bool,
    /// `smtpd_tls_loglevel`: 1 and above log the TLS summary.
    pub(crate) tls_loglevel: i64,
    /// `smtpd_tls_received_header`: the protocol and cipher in Received.
    pub(crate) tls_received_header: bool,
    /// `smtpd_client_auth_rate_limit` per `anvil_rate_time_unit`.
    pub(crate) auth_rate: Option<RateLimit>,
    /// The service name, for rate limit warnings.
    pub(crate) name: String,
    pub(crate) log: Log,
}

/// A per-client event rate limit, as Postfix's anvil keeps it: at most
/// `limit` events per `unit` from one address.
pub(crate) struct RateLimit {
    pub(crate) limit: usize,
    pub(crate) unit: std::time::Duration,
    seen: std::sync::Mutex<
        std::collections::HashMap<std::net::IpAddr, std::collections::VecDeque<std::time::Instant>>,
    >,
}

impl RateLimit {
    pub(crate) fn new(limit: usize, unit: std::time::Duration) -> RateLimit {
        RateLimit {
            limit,
            unit,
            seen: Default::default(),
        }
    }

    /// Counts one event from `ip`; the count within the last unit when it
    /// is over the limit.
    fn over(&self, ip: std::net::IpAddr) -> Option<usize> {
        let now = std::time::Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        // Forget clients that have been quiet for a unit.
        if seen.len() > 10_000 {
            seen.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < self.unit));
        }
        let q = seen.entry(ip).or_default();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.unit)
        {
            q.pop_front();
        }
        q.push_back(now);
        (q.len() > self.limit).then_some(q.len())
    }
}

/// One session's state.
pub(crate) struct Session {
    service: Arc<Service>,
    ctx: Option<SmtpContext>,
    client: String,
    sender: Option<(ReversePath, MailParameters<'static>)>,
    recipients: Vec<Recipient>,
    message: Option<CleanupMessage>,
    helo: Option<String>,
    extended: bool,
    /// The AUTH exchange in progress, and its mechanism.
    auth: Option<(Box<dyn Conversation>, String)>,
    /// After a successful AUTH: the mechanism and the login name.
    login: Option<(String, String)>,
    /// HOLD, DISCARD, FILTER, REDIRECT, PREPEND and BCC from the
    /// restrictions, for this message.
    actions: Vec<MessageAction>,
    /// Whether the TLS handshake has been logged.
    tls_logged: bool,
}

impl Session {
    pub(crate) fn new(service: Arc<Service>) -> Session {
        Session {
            service,
            ctx: None,
            client: String::new(),
            sender: None,
            recipients: Vec::new(),
            message: None,
            helo: None,
            extended: false,
            auth: None,
            login: None,
            actions: Vec::new(),
            tls_logged: false,
        }
    }

    fn reset(&mut self) {
        self.sender = None;
        self.recipients.clear();
        self.actions.clear();
        if let Some(m) = self.message.take() {
            m.abort();
        }
    }

    fn ctx(&mut self, conn: &ConnectionInfo) -> &mut SmtpContext {
        self.ctx
            .get_or_insert_with(|| SmtpContext::new(conn.peer.ip()))
    }

    /// Asks the restrictions about `stage` and turns the answer into the
    /// session's decision, logging what Postfix logs.
    async fn check(&mut self, stage: Stage, conn: &ConnectionInfo) -> Decision {
        // Borrowed, not copied: ctx and service are separate fields.
        let ctx = self
            .ctx
            .get_or_insert_with(|| SmtpContext::new(conn.peer.ip()));
        let decision = self
            .service
            .restrictions
            .evaluate(stage, ctx, self.service.dns.as_ref())
            .await;
        for line in &decision.log {
            self.service.log.info(line);
        }
        if !decision.is_reject() {
            // Restrictions evaluated again at each RCPT fire their actions
            // again: each counts once.
            for a in &decision.actions {
                if !self.actions.contains(a) {
                    self.actions.push(a.clone());
                }
            }
        }
        decision
    }

    fn protocol(&self, conn: &ConnectionInfo) -> String {
        let mut p = String::from(if self.extended { "ESMTP" } else { "SMTP" });
        if conn.tls.is_some() {
            p.push('S');
        }
        if self.login.is_some() {
            p.push('A');
        }
        p
    }

    /// The `Received:` header smtpd writes, as Postfix writes it.
    fn received(&self, conn: &ConnectionInfo, id: &str) -> String {
        let helo = self.helo.as_deref().unwrap_or("unknown");
        let mut h = format!("Received: from {helo} (unknown [{}])\r\n", conn.peer.ip());
        if let (true, Some(tls)) = (self.service.tls_received_header, &conn.tls) {
            h.push_str(&format!(
                "\t(using {} with cipher {})\r\n",
                tls.protocol, tls.cipher
            ));
        }
        if let (true, Some((_, user))) = (self.service.sasl_header, &self.login) {
            h.push_str(&format!("\t(Authenticated sender: {user})\r\n"));
        }
        h.push_str(&format!(
            "\tby {} ({}) with {} id {id}",
            self.service.hostname,
            self.service.mail_name,
            self.protocol(conn)
        ));
        // As Postfix: "for <rcpt>" only with one recipient, and the date
        // on a line of its own otherwise.
        let date = mta_core::date::rfc5322(SystemTime::now());
        match self.recipients.as_slice() {
            [only] => h.push_str(&format!("\r\n\tfor <{}>; {date}", only.address)),
            _ => h.push_str(&format!(";\r\n\t{date}")),
        }
        h
    }

    async fn handle(&mut self, event: &Event, conn: &ConnectionInfo) -> Option<Answer> {
        if let (false, Some(tls)) = (self.tls_logged, &conn.tls) {
            // Once per session, after the handshake: the restrictions see
            // the client certificate's fingerprint.
            self.tls_logged = true;
            let fingerprint = tls.peer_fingerprint.clone();
            self.ctx(conn).ccert_fingerprint = fingerprint.clone();
            if self.service.tls_loglevel >= 1 {
                let client = if self.client.is_empty() {
                    conn.client()
                } else {
                    self.client.clone()
                };
                // As Postfix: "Untrusted" for a certificate nobody
                // verified, "Anonymous" without one.
                let trust = if fingerprint.is_some() {
                    "Untrusted"
                } else {
                    "Anonymous"
                };
                self.service.log.info(&format!(
                    "{trust} TLS connection established from {client}: {tls}"
                ));
                if let Some(fp) = &fingerprint {
                    self.service
                        .log
                        .info(&format!("{client}: client certificate fingerprint={fp}"));
                }
            }
        }
        match event {
            Event::Connect => {
                self.client = conn.client();
                self.service
                    .log
                    .info(&format!("connect from {}", self.client));
                Some(answer(self.check(Stage::Connect, conn).await))
            }
            Event::Helo { name, extended } => {
                self.helo = Some(name.clone());
                self.extended = *extended;
                let ctx = self.ctx(conn);
                ctx.helo = Some(name.clone());
                ctx.esmtp = *extended;
                self.reset();
                Some(answer(self.check(Stage::Helo, conn).await))
            }
            Event::Mail { from, params } => {
                // statvfs(2) is a quick call; Postfix makes it at every MAIL.
                let room = self.service.cleanup.queue().has_room(
                    params.size.unwrap_or(0),
                    self.service.queue_minfree,
                    self.service.message_size_limit,
                );
                if !room.unwrap_or(true) {
                    self.service.log.warning(&format!(
                        "not enough free space in the queue file system for mail from {}",
                        self.client
                    ));
                    return Some(Answer::Reply(reply(
                        "452 4.3.1 Insufficient system storage",
                    )));
                }
                let sender = from.mailbox().map(|m| m.to_string()).unwrap_or_default();
                let ctx = self.ctx(conn);
                ctx.sender = Some(sender);
                ctx.recipient = None;
                ctx.recipient_count = 0;
                let d = self.check(Stage::Mail, conn).await;
                if !d.is_reject() {
                    self.sender = Some((from.clone(), params.clone()));
                    self.recipients.clear();
                }
                Some(answer(d))
            }
            Event::Rcpt { to, params } => {
                let count = self.recipients.len();
                let ctx = self.ctx(conn);
                ctx.recipient = Some(to.to_string());
                ctx.recipient_count = count;
                let d = self.check(Stage::Rcpt, conn).await;
                if !d.is_reject() {
                    let mut r = Recipient::new(to.to_string());
                    r.orcpt = params.orcpt.as_ref().map(|o| o.to_string());
                    if let Some(n) = params.notify {
                        r.notify = [
                            (n.success, notify::SUCCESS),
                            (n.failure, notify::FAILURE),
                            (n.delay, notify::DELAY),
                            (n.never, notify::NEVER),
                        ]
                        .iter()
                        .filter(|(on, _)| *on)
                        .fold(0, |bits, (_, bit)| bits | bit);
                    }
                    self.recipients.push(r);
                }
                Some(answer(d))
            }
            Event::DataStart => {
                let d = self.check(Stage::Data, conn).await;
                if d.is_reject() {
                    return Some(answer(d));
                }
                let service = Arc::clone(&self.service);
                let client = self.client.clone();
                let rewrite_headers =
                    rewrite_headers(&service, conn.peer.ip(), &client, self.login.is_some()).await;
                Some(self.begin(conn, rewrite_headers))
            }
            Event::Content(bytes) => {
                if let Some(m) = self.message.as_mut() {
                    m.write(bytes);
                }
                None
            }
            Event::DataEnd { .. } => Some(self.finish(conn).await),
            Event::DataAborted(_) | Event::Rset => {
                self.reset();
                None
            }
            Event::Vrfy(_) => Some(Answer::Accept),
            Event::Etrn(arg) => {
                // RFC 1985: `@domain` and `#queue` forms name a domain too.
                let domain = arg.trim_start_matches(['@', '#']).to_ascii_lowercase();
                if self.service.fast_flush_domains.contains(&domain) {
                    let scheduler = self
                        .service
                        .scheduler
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone();
                    if let Some(s) = scheduler {
                        tokio::spawn(async move {
                            s.flush(mta_queue::scheduler::Flush::Site(domain)).await;
                        });
                    }
                    Some(Answer::Accept)
                } else {
                    Some(Answer::Reply(reply(&format!(
                        "459 <{arg}>: service unavailable"
                    ))))
                }
            }
            Event::Auth {
                mechanism,
                initial_response,
            } => Some(
                self.auth_start(mechanism, initial_response.as_deref(), conn)
                    .await,
            ),
            Event::AuthResponse(line) => Some(self.auth_step(line, conn).await),
            Event::StartTls => Some(Answer::Accept),
            Event::Quit | Event::Closed(_) => {
                self.reset();
                self.service
                    .log
                    .info(&format!("disconnect from {}", self.client));
                None
            }
            _ => None,
        }
    }

    async fn auth_start(
        &mut self,
        mechanism: &str,
        initial: Option<&str>,
        conn: &ConnectionInfo,
    ) -> Answer {
        let Some(sasl) = self.service.sasl.clone() else {
            return Answer::Reply(reply("503 5.5.1 Error: authentication not enabled"));
        };
        if let Some(rate) = &self.service.auth_rate {
            let ip = conn.peer.ip();
            let exempt = self
                .service
                .restrictions
                .exempt_from_limits(ip, "unknown")
                .await;
            if let Some(count) = rate.over(ip).filter(|_| !exempt) {
                self.service.log.warning(&format!(
                    "AUTH command rate limit exceeded: {count} from {} for service {}",
                    self.client, self.service.name
                ));
                return Answer::Reply(reply(&format!(
                    "450 4.7.1 Error: too many AUTH commands from {ip}"
                )));
            }
        }
        let facts = ClientFacts {
            remote_ip: Some(conn.peer.ip()),
            local_ip: Some(conn.local.ip()),
            secured: conn.tls.is_some(),
        };
        let (conversation, verdict) = sasl.start(mechanism, initial, &facts).await;
        if let Some(c) = conversation {
            self.auth = Some((c, mechanism.to_owned()));
        }
        self.auth_verdict(verdict, mechanism.to_owned())
    }

    async fn auth_step(&mut self, line: &str, _conn: &ConnectionInfo) -> Answer {
        let Some((mut conversation, mechanism)) = self.auth.take() else {
            return Answer::Reply(reply("503 5.5.1 Error: no authentication in progress"));
        };
        let verdict = conversation.step(line).await;
        if matches!(verdict, SaslVerdict::Challenge(_)) {
            self.auth = Some((conversation, mechanism.clone()));
        }
        self.auth_verdict(verdict, mechanism)
    }

    /// The reply for a back end's verdict, as Postfix's smtpd words it;
    /// the password never reaches the log.
    fn auth_verdict(&mut self, verdict: SaslVerdict, mechanism: String) -> Answer {
        let log = &self.service.log;
        match verdict {
            SaslVerdict::Challenge(c) => Answer::Reply(reply(format!("334 {c}").trim_end())),
            SaslVerdict::Success(user) => {
                self.auth = None;
                if let Some(ctx) = self.ctx.as_mut() {
                    ctx.sasl_username = Some(user.clone());
                }
                self.login = Some((mechanism, user));
                Answer::Reply(reply("235 2.7.0 Authentication successful"))
            }
            SaslVerdict::Failure(why) => {
                self.auth = None;
                log.warning(&format!(
                    "{}: SASL {mechanism} authentication failed: {why}",
                    self.client
                ));
                Answer::Reply(reply(
                    "535 5.7.8 Error: authentication failed: authentication failure",
                ))
            }
            SaslVerdict::Temporary(why) => {
                self.auth = None;
                log.warning(&format!(
                    "{}: SASL {mechanism} authentication failed: {why}",
                    self.client
                ));
                Answer::Reply(reply("454 4.7.0 Temporary authentication failure"))
            }
            SaslVerdict::Malformed(why) => {
                self.auth = None;
                Answer::Reply(reply(&format!("501 5.5.2 {why}")))
            }
        }
    }

    fn begin(&mut self, conn: &ConnectionInfo, rewrite_headers: bool) -> Answer {
        let Some((from, params)) = &self.sender else {
            return Answer::Reply(reply("503 5.5.1 Error: need MAIL command"));
        };
        let arrival = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut attributes = vec![
            ("client_address".to_string(), conn.peer.ip().to_string()),
            ("client_name".to_string(), "unknown".to_string()),
            ("protocol_name".to_string(), self.protocol(conn)),
        ];
        if let Some(h) = &self.helo {
            attributes.push(("helo_name".into(), h.clone()));
        }
        if let Some(e) = &params.envid {
            attributes.push(("envid".into(), e.to_string()));
        }
        if !self.service.content_filter.is_empty() {
            attributes.push(("content_filter".into(), self.service.content_filter.clone()));
        }
        // MAIL FROM's AUTH= (RFC 4954 section 5): kept as the message's
        // authenticated sender only when this session authenticated;
        // from anyone else it means nothing, as in Postfix.
        let sasl_sender = match (&self.login, params.auth.as_deref()) {
            (Some(_), Some(a)) if a != "<>" => mta_smtp::command::decode_xtext(a),
            _ => None,
        };
        if let Some((method, user)) = &self.login {
            attributes.push(("sasl_method".into(), method.clone()));
            attributes.push(("sasl_username".into(), user.clone()));
        }
        if let Some(s) = &sasl_sender {
            attributes.push(("sasl_sender".into(), s.clone()));
        }
        let sender = from.mailbox().map(|m| m.to_string()).unwrap_or_default();
        // The restrictions' message actions, as Postfix's cleanup applies
        // them: the last FILTER and REDIRECT count.
        let mut recipients = self.recipients.clone();
        let (mut hold, mut discard) = (false, false);
        let mut prepend = Vec::new();
        for action in &self.actions {
            match action {
                MessageAction::Hold(_) => hold = true,
                MessageAction::Discard(_) => discard = true,
                MessageAction::Filter(f) => {
                    attributes.retain(|(n, _)| n != "content_filter");
                    attributes.push(("content_filter".into(), f.clone()));
                }
                MessageAction::Redirect(to) => {
                    recipients = vec![Recipient::new(to.clone())];
                }
                MessageAction::Bcc(to) => recipients.push(Recipient::new(to.clone())),
                MessageAction::Prepend(h) => prepend.push(h.clone()),
                _ => {}
            }
        }
        let submission = Submission {
            arrival,
            sender: sender.clone(),
            recipients,
            attributes,
            context: MessageContext {
                queue_id: None,
                client: self.client.clone(),
                sender: Some(sender),
                recipient: self.recipients.first().map(|r| r.address.clone()),
                protocol: Some(self.protocol(conn)),
                helo: self.helo.clone(),
            },
            prepend,
            internal: false,
            no_address_mappings: self.service.no_address_mappings,
            no_header_body_checks: self.service.no_header_body_checks,
            hold,
            discard,
            rewrite_headers,
        };
        match self.service.cleanup.begin(submission) {
            Ok(mut m) => {
                let id = m.id().as_str().to_string();
                let mut login = match &self.login {
                    Some((m, u)) => format!(", sasl_method={m}, sasl_username={u}"),
                    None => String::new(),
                };
                if let Some(s) = &sasl_sender {
                    login.push_str(&format!(", sasl_sender={s}"));
                }
                self.service
                    .log
                    .info(&format!("{id}: client={}{login}", self.client));
                let received = self.received(conn, &id);
                m.write(received.as_bytes());
                m.write(b"\r\n");
                self.message = Some(m);
                Answer::Accept
            }
            Err(e) => {
                self.service
                    .log
                    .warning(&format!("queue file write error: {e}"));
                Answer::Reply(reply("451 4.3.0 Error: queue file write error"))
            }
        }
    }

    async fn finish(&mut self, conn: &ConnectionInfo) -> Answer {
        let d = self.check(Stage::EndOfData, conn).await;
        let Some(message) = self.message.take() else {
            return Answer::Reply(reply("451 4.3.0 Error: queue file write error"));
        };
        if d.is_reject() {
            message.abort();
            return answer(d);
        }
        let sender = self
            .sender
            .as_ref()
            .and_then(|(f, _)| f.mailbox().map(|m| m.to_string()))
            .unwrap_or_default();
        let nrcpt = self.recipients.len();
        let result = message.finish();
        let answer = match result {
            Ok(queued) => {
                for line in &queued.verdict.log {
                    self.service.log.info(line);
                }
                let id = queued.id.as_str().to_string();
                match queued.commit.await {
                    Ok(()) => {
                        self.service.log.info(&format!(
                            "{id}: from=<{sender}>, size={}, nrcpt={nrcpt} (queue {})",
                            queued.size,
                            if queued.hold { "hold" } else { "incoming" }
                        ));
                        Answer::Reply(reply(&format!("250 2.0.0 Ok: queued as {id}")))
                    }
                    Err(e) => {
                        self.service
                            .log
                            .warning(&format!("{id}: queue file commit failed: {e}"));
                        Answer::Reply(reply("451 4.3.0 Error: queue file write error"))
                    }
                }
            }
            Err(e) => {
                match &e {
                    // cleanup's own lines say which header or line did it,
                    // as Postfix's cleanup logs them; smtpd adds nothing.
                    mta_queue::cleanup::CleanupError::Rejected { log, .. } => {
                        for line in log {
                            self.service.log.info(line);
                        }
                    }
                    other => self.service.log.warning(&format!(
                        "queue file write error from {}: {other}",
                        self.client
                    )),
                }
                Answer::Reply(e.reply())
            }
        };
        self.sender = None;
        self.recipients.clear();
        answer
    }
}

/// The session's answer from a restriction decision.
fn answer(d: Decision) -> Answer {
    match d.verdict {
        Verdict::Accept => Answer::Accept,
        Verdict::Reject(r) => Answer::Reply(r),
    }
}

/// Whether the headers of this client's mail are rewritten (canonical
/// maps, masquerading), as `local_header_rewrite_clients` and
/// `remote_header_rewrite_domain` say.
async fn rewrite_headers(
    service: &Service,
    ip: std::net::IpAddr,
    client: &str,
    logged_in: bool,
) -> bool {
    if service.remote_header_rewrite {
        return true;
    }
    let name = client.split_once('[').map_or("unknown", |(n, _)| n);
    for entry in &service.local_header_rewrite_clients {
        let yes = match entry.as_str() {
            "permit_inet_interfaces" => ip.is_loopback() || service.own_addresses.contains(&ip),
            "permit_mynetworks" => service.restrictions.in_mynetworks(ip, name).await,
            "permit_sasl_authenticated" => logged_in,
            "static:all" => true,
            _ => false,
        };
        if yes {
            return true;
        }
    }
    false
}

fn reply(text: &str) -> Reply {
    let wire = format!("{text}\r\n");
    match parse_reply(wire.as_bytes()) {
        Ok(ParseStatus::Complete(v, _)) => v.to_reply(),
        _ => unreachable!("fixed replies are valid: {text}"),
    }
}

impl SessionHandler for Session {
    fn on_event<'a>(&'a mut self, event: &'a Event, conn: &'a ConnectionInfo) -> HandlerFuture<'a> {
        Box::pin(self.handle(event, conn))
    }
}

/// Where a `master.cf` inet service listens.
pub(crate) fn listen_address(host: Option<&str>, port: &str) -> Result<SocketAddr, String> {
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port {port:?}: service names are not supported yet; use a number"))?;
    let host = match host {
        None | Some("*") => "0.0.0.0",
        Some("localhost") => "127.0.0.1",
        Some(h) => h,
    };
    let ip: std::net::IpAddr = host
        .parse()
        .map_err(|_| format!("host {host:?}: only addresses are supported yet"))?;
    Ok(SocketAddr::new(ip, port))
}

//! The queue manager: takes messages from `incoming` and `deferred` into
//! `active`, hands their recipients to delivery agents, records what
//! happened, and retries what could not be done, as Postfix's `qmgr(8)`.
//!
//! # One message, once scheduled
//!
//! 1. The file moves to `active` and is read; a file that cannot be read
//!    goes to `corrupt` with a warning, and the rest of the queue goes on.
//!    `ID: from=<sender>, size=N, nrcpt=N (queue active)` is logged.
//! 2. Each recipient not yet done is resolved by the [`Router`] to a
//!    transport and next hop (trivial-rewrite's job); recipients of the
//!    same transport and next hop are delivered together, in batches of at
//!    most the transport's recipient limit
//!    (`default_destination_recipient_limit`).
//! 3. Deliveries run in parallel within two limits: the transport's process
//!    limit (`maxproc` in `master.cf`) and its per-destination
//!    concurrency (`default_destination_concurrency_limit`).
//! 4. Each result is logged in Postfix's form (`ID: to=<...>, relay=...,
//!    delay=..., delays=a/b/c/d, dsn=..., status=sent (...)`). When some
//!    recipients must wait, those delivered or bounced are marked done in
//!    the queue file (one fsync for all) before the message is deferred, so a later
//!    attempt or a crash never delivers to them twice.
//! 5. When every recipient is done, the file is removed (`ID: removed`),
//!    without marks or a directory sync: a crash before the removal is
//!    durable delivers the message again rather than losing it, Postfix's
//!    trade too.
//!    Bounced recipients get a non-delivery notice to the sender
//!    ([`crate::notice`]), queued through cleanup, unless the sender is
//!    `<>`.
//! 6. Otherwise the message goes to `deferred`, and its file's modification
//!    time is set to the time of the next attempt: the message's age,
//!    kept between `minimal_backoff_time` and `maximal_backoff_time`, so
//!    the wait doubles with each attempt. A message older than
//!    `maximal_queue_lifetime` (`bounce_queue_lifetime` for a bounce) is
//!    returned to the sender instead, with the last reason of each
//!    recipient. The reasons are kept in the message's defer log
//!    ([`crate::defer_log`]) for `mailq`.
//!
//! `deferred` is scanned every `queue_run_delay`, and `incoming` whenever
//! [`Scheduler::waker`] is notified (cleanup's commit) or the scan comes
//! round; the two are taken in turn, so new mail is not starved by a
//! large deferred queue nor the other way round.
//!
//! Each next hop has a concurrency window, as in Postfix's qmgr: it
//! starts at `initial_destination_concurrency`, opens by one for each
//! delivery that reaches the destination (up to the destination limit)
//! and closes by one for each that reaches nothing; a failure at a
//! window of one fails a cohort, and after
//! `destination_concurrency_failed_cohort_limit` of them the destination
//! is dead for `minimal_backoff_time`: its mail is deferred untried
//! ("delivery temporarily suspended"). Alias and `.forward` expansions
//! go back through cleanup; `delay_warning_time` warnings, `NOTIFY`
//! success reports and `notify_classes` copies are sent
//! ([`crate::notice`]); `defer_transports` wait for a [`Scheduler::flush`].
//!
//! # Not yet here
//!
//! `transport_retry_time` (a transport here never fails to start), the
//! concurrency feedback's fractional forms
//! (`default_destination_concurrency_positive_feedback = 1/concurrency`:
//! mtad moves by one), and per-destination recipient limits' `_rate_delay`
//! pacing.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mta_core::address::{MailAddress, ReversePath};
use mta_core::delivery::{
    DeliveryAgent, DeliveryReport, DeliveryRequest, DeliveryStatus, Envelope, MemoryContent,
    Recipient, Relay, StatusDetail,
};
use mta_core::queue_id::QueueId;
use mta_core::reply::EnhancedStatus;
use tokio::sync::{Notify, Semaphore};

use crate::cleanup::{Cleanup, Submission};
use crate::file::{QueueFile, Recipient as QueuedRecipient};
use crate::notice::{BouncedRecipient, NoticeConfig, NoticeKind};
use crate::store::{Queue, QueueName};

/// Where a recipient goes: trivial-rewrite's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The transport: a `master.cf` service name.
    pub transport: String,
    /// The next hop, as the transport understands it.
    pub nexthop: String,
    /// The address to deliver to (routing through local domains removed).
    pub address: MailAddress,
}

/// Why a recipient has no route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// A table could not answer: try again later.
    Temporary(String),
    /// The address cannot be delivered anywhere: bounce it.
    Permanent(String),
}

/// Resolves recipients to routes (an `AddressResolver` of `mta-maps` in a
/// real system).
pub trait Router: Send + Sync {
    /// The route of `address`.
    ///
    /// # Errors
    ///
    /// A [`RouteError`].
    fn route(&self, address: &MailAddress) -> Result<Route, RouteError>;

    /// The route of `address` in mail from `sender` (empty for the null
    /// sender), for routes that depend on the sender
    /// (`sender_dependent_relayhost_maps`). The default ignores it.
    ///
    /// # Errors
    ///
    /// A [`RouteError`].
    fn route_for(&self, sender: &str, address: &MailAddress) -> Result<Route, RouteError> {
        let _ = sender;
        self.route(address)
    }
}

/// Trivial-rewrite with the configuration's tables routes for the
/// scheduler: a table that cannot answer defers, an unroutable address
/// bounces.
impl Router for mta_maps::class::AddressResolver {
    fn route(&self, address: &MailAddress) -> Result<Route, RouteError> {
        route_of(self.resolve(address))
    }

    fn route_for(&self, sender: &str, address: &MailAddress) -> Result<Route, RouteError> {
        route_of(self.resolve_for_sender(sender, address))
    }
}

fn route_of(
    resolved: Result<mta_core::address_class::Resolution, mta_core::address_class::ResolveError>,
) -> Result<Route, RouteError> {
    match resolved {
        Ok(r) => Ok(Route {
            transport: r.transport,
            nexthop: r.nexthop,
            address: r.recipient,
        }),
        Err(e) if e.is_temporary() => Err(RouteError::Temporary(e.to_string())),
        Err(e) => Err(RouteError::Permanent(e.to_string())),
    }
}

/// A delivery transport: the agent and its limits.
#[derive(Clone)]
pub struct Transport {
    /// The agent.
    pub agent: Arc<dyn DeliveryAgent>,
    /// Deliveries at once on this transport (`maxproc`).
    pub process_limit: usize,
    /// Deliveries at once to one next hop
    /// (`<transport>_destination_concurrency_limit`).
    pub destination_concurrency_limit: usize,
    /// Recipients per delivery (`<transport>_destination_recipient_limit`).
    pub recipient_limit: usize,
    /// How long one delivery may take (`<transport>_time_limit`).
    pub time_limit: Duration,
    /// Deliveries at once to a next hop not yet proven to work
    /// (`<transport>_initial_destination_concurrency`, Postfix's 5): each
    /// delivery that reaches the destination opens one more, up to the
    /// limit; each that cannot reach it closes one.
    pub initial_concurrency: usize,
    /// Failed deliveries in a row, at a concurrency of one, after which the
    /// destination is dead (`<transport>_destination_concurrency_failed_cohort_limit`,
    /// 1): its mail waits `minimal_backoff_time` without being tried.
    pub failed_cohort_limit: usize,
}

/// One next hop's concurrency window and health (Postfix's qmgr queue).
#[derive(Debug)]
struct Destination {
    /// Permits: the deliveries at once the window allows now.
    permits: Arc<Semaphore>,
    state: Mutex<DestinationState>,
}

#[derive(Debug)]
struct DestinationState {
    window: usize,
    limit: usize,
    failed_cohorts: usize,
    cohort_limit: usize,
    /// Dead until then, and why.
    dead: Option<(tokio::time::Instant, String)>,
}

impl Destination {
    fn new(initial: usize, limit: usize, cohort_limit: usize) -> Destination {
        let window = initial.clamp(1, limit.max(1));
        Destination {
            permits: Arc::new(Semaphore::new(window)),
            state: Mutex::new(DestinationState {
                window,
                limit: limit.max(1),
                failed_cohorts: 0,
                cohort_limit: cohort_limit.max(1),
                dead: None,
            }),
        }
    }

    /// Why mail for it waits now, if it is dead.
    fn dead(&self) -> Option<String> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &st.dead {
            Some((until, why)) if tokio::time::Instant::now() < *until => Some(why.clone()),
            Some(_) => {
                st.dead = None;
                None
            }
            None => None,
        }
    }

    /// A delivery reached the destination: one more at once.
    fn positive(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.failed_cohorts = 0;
        st.dead = None;
        if st.window < st.limit {
            st.window += 1;
            self.permits.add_permits(1);
        }
    }

    /// A delivery could not reach the destination: one fewer at once
    /// (true: the caller forgets the permit it holds, which closes the
    /// window by one even when every permit is in use); at one, count a
    /// failed cohort, and after enough the destination is dead for
    /// `pause`.
    fn negative(&self, why: &str, pause: Duration) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.window > 1 {
            st.window -= 1;
            return true;
        }
        st.failed_cohorts += 1;
        if st.failed_cohorts >= st.cohort_limit {
            st.dead = Some((tokio::time::Instant::now() + pause, why.to_owned()));
        }
        false
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("process_limit", &self.process_limit)
            .field(
                "destination_concurrency_limit",
                &self.destination_concurrency_limit,
            )
            .field("recipient_limit", &self.recipient_limit)
            .field("time_limit", &self.time_limit)
            .finish_non_exhaustive()
    }
}

/// The scheduler's timing parameters, with Postfix's names.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// `minimal_backoff_time`.
    pub minimal_backoff_time: Duration,
    /// `maximal_backoff_time`.
    pub maximal_backoff_time: Duration,
    /// `queue_run_delay`: how often `deferred` is scanned.
    pub queue_run_delay: Duration,
    /// `maximal_queue_lifetime`.
    pub maximal_queue_lifetime: Duration,
    /// `bounce_queue_lifetime`, for mail from `<>`.
    pub bounce_queue_lifetime: Duration,
    /// `qmgr_message_active_limit`: messages in `active` at once.
    pub message_active_limit: usize,
    /// `delay_warning_time`: after this long in the queue the sender is
    /// warned once that the mail is delayed; zero for never (Postfix's
    /// default).
    pub delay_warning_time: Duration,
    /// `defer_transports`: transports that deliver only when the queue is
    /// flushed ([`Scheduler::flush`]); mail for them waits meanwhile.
    pub defer_transports: Vec<String>,
}

impl Default for SchedulerConfig {
    /// Postfix's defaults.
    fn default() -> SchedulerConfig {
        SchedulerConfig {
            minimal_backoff_time: Duration::from_secs(300),
            maximal_backoff_time: Duration::from_secs(4000),
            queue_run_delay: Duration::from_secs(300),
            maximal_queue_lifetime: Duration::from_secs(5 * 86400),
            bounce_queue_lifetime: Duration::from_secs(5 * 86400),
            message_active_limit: 20_000,
            delay_warning_time: Duration::ZERO,
            defer_transports: Vec::new(),
        }
    }
}

/// The time to wait before the next attempt on a message of age `age`:
/// the age itself, within the backoff limits. Since each attempt finds
/// the message older by the previous wait, the wait doubles.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use mta_queue::scheduler::{backoff, SchedulerConfig};
/// let c = SchedulerConfig::default();
/// assert_eq!(backoff(&c, Duration::from_secs(2)), Duration::from_secs(300));
/// assert_eq!(backoff(&c, Duration::from_secs(600)), Duration::from_secs(600));
/// assert_eq!(backoff(&c, Duration::from_secs(86400)), Duration::from_secs(4000));
/// ```
pub fn backoff(config: &SchedulerConfig, age: Duration) -> Duration {
    age.clamp(
        config.minimal_backoff_time,
        config.maximal_backoff_time.max(config.minimal_backoff_time),
    )
}

/// Which deferred mail [`Scheduler::flush`] makes due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flush {
    /// All of it (`postqueue -f`, `sendmail -q`).
    All,
    /// Messages with a pending recipient in this domain (`postqueue -s`,
    /// ETRN).
    Site(String),
    /// One message, by queue ID (`postqueue -i`).
    Message(String),
}

/// Where log lines go: `(program, line)`, the program being `qmgr` or the
/// transport's name, as Postfix's processes tag their lines.
pub type LogSink = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Where the scheduler reads the time of day (file ages, `delay=`).
pub type WallClock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The queue manager. See the module documentation.
pub struct Scheduler {
    queue: Queue,
    router: Arc<dyn Router>,
    transports: HashMap<String, (Transport, Arc<Semaphore>)>,
    destinations: Mutex<HashMap<(String, String), Arc<Destination>>>,
    config: SchedulerConfig,
    log: LogSink,
    clock: WallClock,
    wake: Arc<Notify>,
    active: Arc<Semaphore>,
    notices: Option<(Arc<Cleanup>, NoticeConfig)>,
    /// Messages being worked on, so a scan does not take one twice.
    busy: Mutex<std::collections::HashSet<String>>,
    /// A flush asked for a scan of `deferred` now.
    flush_requested: std::sync::atomic::AtomicBool,
    /// Messages a flush made due: `defer_transports` lets them go.
    flushed: Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("queue", &self.queue)
            .field("transports", &self.transports.keys().collect::<Vec<_>>())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The outcome of one recipient, as the scheduler keeps it.
struct Outcome {
    index: usize,
    status: DeliveryStatus,
    delivered_at: SystemTime,
    delivery_time: Duration,
}

/// Seconds as Postfix logs them in `delay=` and `delays=`: two
/// significant digits below ten, whole seconds above, `0` for nothing.
pub fn format_delay(d: Duration) -> String {
    let s = d.as_secs_f64();
    let text = if s >= 10.0 {
        format!("{s:.0}")
    } else if s >= 1.0 {
        format!("{s:.1}")
    } else {
        format!("{s:.2}")
    };
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    };
    if text.is_empty() {
        "0".to_owned()
    } else {
        text
    }
}

/// The queue file's content with LF line ends, as agents get it.
fn lf_content(crlf: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(crlf.len());
    let mut i = 0;
    while i < crlf.len() {
        if crlf[i] == b'\r' && crlf.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(crlf[i]);
        i += 1;
    }
    out
}

impl Scheduler {
    /// A scheduler over `queue`, routing with `router`, delivering through
    /// `transports` (by `master.cf` service name), logging to `log`.
    pub fn new(
        queue: Queue,
        router: Arc<dyn Router>,
        transports: HashMap<String, Transport>,
        config: SchedulerConfig,
        log: LogSink,
        clock: WallClock,
    ) -> Scheduler {
        let active = Arc::new(Semaphore::new(config.message_active_limit.max(1)));
        Scheduler {
            queue,
            router,
            transports: transports
                .into_iter()
                .map(|(name, t)| {
                    let limit = Arc::new(Semaphore::new(t.process_limit.max(1)));
                    (name, (t, limit))
                })
                .collect(),
            destinations: Mutex::new(HashMap::new()),
            config,
            log,
            clock,
            wake: Arc::new(Notify::new()),
            active,
            notices: None,
            busy: Mutex::new(Default::default()),
            flush_requested: std::sync::atomic::AtomicBool::new(false),
            flushed: Mutex::new(Default::default()),
        }
    }

    /// Uses `wake` as its waker: for a [`Cleanup`] made before the
    /// scheduler (which needs the cleanup for its notices) and already
    /// given `wake` with [`Cleanup::with_queue_manager`].
    pub fn with_waker(mut self, wake: Arc<Notify>) -> Scheduler {
        self.wake = wake;
        self
    }

    /// Sends non-delivery notices through `cleanup`, written as `notice`
    /// says. Without this, bounced recipients are logged but nobody is
    /// told.
    pub fn with_notices(mut self, cleanup: Arc<Cleanup>, notice: NoticeConfig) -> Scheduler {
        self.notices = Some((cleanup, notice));
        self
    }

    /// The handle that tells the scheduler new mail is in `incoming`; give
    /// it to [`Cleanup::with_queue_manager`], which uses it after each
    /// commit.
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Runs until `stop` completes: scans, delivers, and waits for the
    /// waker or the next `queue_run_delay`. Deliveries under way when
    /// `stop` completes are dropped; their messages stay in `active` and
    /// go back to `incoming` at the next start ([`Queue::recover`]), and
    /// recipients already marked done stay done.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        self.run_until(stop, false).await;
    }

    /// As [`run`](Self::run), but when `stop` completes the deliveries
    /// under way are finished (and their results applied) before it
    /// returns; no new one starts. For a reload: a new scheduler takes
    /// over `incoming` and `deferred` at once, while this one's messages
    /// in `active` are completed rather than left there until the next
    /// start.
    pub async fn run_then_drain(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        self.run_until(stop, true).await;
    }

    async fn run_until(self: Arc<Self>, stop: impl std::future::Future<Output = ()>, drain: bool) {
        let mut stop = std::pin::pin!(stop);
        let mut tasks = tokio::task::JoinSet::new();
        let mut last_deferred_scan: Option<tokio::time::Instant> = None;
        loop {
            let flushed = self
                .flush_requested
                .swap(false, std::sync::atomic::Ordering::AcqRel);
            let scan_deferred = flushed
                || last_deferred_scan.is_none_or(|t| t.elapsed() >= self.config.queue_run_delay);
            if scan_deferred {
                last_deferred_scan = Some(tokio::time::Instant::now());
            }
            for id in self.due(scan_deferred) {
                let permit = tokio::select! {
                    p = Arc::clone(&self.active).acquire_owned() => p.expect("never closed"),
                    () = &mut stop => { Self::end(tasks, drain).await; return; }
                };
                let me = Arc::clone(&self);
                tasks.spawn(async move {
                    me.handle_and_release(&id).await;
                    drop(permit);
                });
            }
            while tasks.try_join_next().is_some() {}
            let next_scan = self.config.queue_run_delay.min(Duration::from_secs(60));
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(next_scan) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                () = &mut stop => { Self::end(tasks, drain).await; return; }
            }
        }
    }

    /// The end of a run: the deliveries under way are waited for
    /// (`drain`) or dropped.
    async fn end(mut tasks: tokio::task::JoinSet<()>, drain: bool) {
        if drain {
            while tasks.join_next().await.is_some() {}
        } else {
            tasks.abort_all();
        }
    }

    /// Makes deferred mail due now and wakes the scheduler, as Postfix's
    /// `postqueue -f` (`which` is [`Flush::All`]), `postqueue -s SITE` and
    /// ETRN ([`Flush::Site`]: messages with a pending recipient in that
    /// domain) and `postqueue -i ID` ([`Flush::Message`]) do. Returns how
    /// many messages were made due. Mail in `hold` stays there.
    pub async fn flush(&self, which: Flush) -> usize {
        let dir = self.queue.dir(QueueName::Deferred);
        let ids = self.queue.list(QueueName::Deferred).unwrap_or_default();
        let now = (self.clock)();
        let made_due = tokio::task::spawn_blocking(move || {
            let mut n = Vec::new();
            for id in ids {
                let path = dir.join(&id);
                let wanted = match &which {
                    Flush::All => true,
                    Flush::Message(m) => *m == id,
                    Flush::Site(site) => QueueFile::read(&path).is_ok_and(|f| {
                        f.envelope.recipients.iter().any(|r| {
                            !r.done
                                && r.address
                                    .rsplit_once('@')
                                    .is_some_and(|(_, d)| d.eq_ignore_ascii_case(site))
                        })
                    }),
                };
                if wanted
                    && std::fs::File::options()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_modified(now))
                        .is_ok()
                {
                    n.push(id);
                }
            }
            n
        })
        .await
        .unwrap_or_default();
        let count = made_due.len();
        self.flushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(made_due);
        self.flush_requested
            .store(true, std::sync::atomic::Ordering::Release);
        self.wake.notify_one();
        count
    }

    /// One pass over the queue: every message in `incoming` and every
    /// deferred message that is due, delivered as far as possible, with
    /// their results applied. Returns how many messages it handled. For
    /// tests and for `postqueue -f`.
    pub async fn run_once(self: &Arc<Self>) -> usize {
        let ids = self.due(true);
        let n = ids.len();
        let mut tasks = tokio::task::JoinSet::new();
        for id in ids {
            let me = Arc::clone(self);
            tasks.spawn(async move { me.handle_and_release(&id).await });
        }
        while tasks.join_next().await.is_some() {}
        n
    }

    /// The messages to take now, incoming and (if `deferred`) due deferred
    /// ones in turn, each moved to `active`.
    fn due(&self, deferred: bool) -> Vec<String> {
        // Files still being written (not yet marked ready by the
        // committer) are left alone.
        let incoming: Vec<String> = self
            .queue
            .list(QueueName::Incoming)
            .unwrap_or_default()
            .into_iter()
            .filter(|id| crate::store::is_ready(&self.queue.dir(QueueName::Incoming).join(id)))
            .collect();
        let due_deferred: Vec<String> = if deferred {
            let now = (self.clock)();
            self.queue
                .list(QueueName::Deferred)
                .unwrap_or_default()
                .into_iter()
                .filter(|id| {
                    std::fs::metadata(self.queue.dir(QueueName::Deferred).join(id))
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| t <= now)
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut out = Vec::new();
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let (mut a, mut b) = (incoming.into_iter(), due_deferred.into_iter());
        loop {
            let (x, y) = (a.next(), b.next());
            if x.is_none() && y.is_none() {
                break;
            }
            for (id, from) in [(x, QueueName::Incoming), (y, QueueName::Deferred)] {
                let Some(id) = id else { continue };
                if busy.contains(&id) {
                    continue;
                }
                if self.queue.rename(&id, from, QueueName::Active).is_ok() {
                    busy.insert(id.clone());
                    out.push(id);
                }
            }
        }
        out
    }

    fn destination(&self, transport: &str, nexthop: &str, t: &Transport) -> Arc<Destination> {
        let mut d = self.destinations.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            d.entry((transport.to_owned(), nexthop.to_ascii_lowercase()))
                .or_insert_with(|| {
                    Arc::new(Destination::new(
                        t.initial_concurrency,
                        t.destination_concurrency_limit,
                        t.failed_cohort_limit,
                    ))
                }),
        )
    }

    /// [`handle`](Self::handle), then lets later scans take the message
    /// again.
    async fn handle_and_release(self: &Arc<Self>, id: &str) {
        self.handle(id).await;
        self.busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Delivers one message in `active` as far as it goes.
    async fn handle(self: &Arc<Self>, id: &str) {
        let path = self.queue.dir(QueueName::Active).join(id);
        let read_path = path.clone();
        let read = tokio::task::spawn_blocking(move || QueueFile::read(&read_path)).await;
        let file = match read {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => {
                (self.log)("qmgr", &format!("warning: {id}: moved to corrupt: {e}"));
                let _ = self
                    .queue
                    .move_to(id, QueueName::Active, QueueName::Corrupt);
                return;
            }
            Err(e) => {
                (self.log)("qmgr", &format!("warning: {id}: {e}"));
                return;
            }
        };
        let active_at = (self.clock)();
        // A flush lets mail for defer_transports go this once.
        let forced = self
            .flushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        let arrival = UNIX_EPOCH + file.envelope.arrival;
        let pending: Vec<usize> = (0..file.envelope.recipients.len())
            .filter(|&i| !file.envelope.recipients[i].done)
            .collect();
        (self.log)(
            "qmgr",
            &format!(
                "{id}: from=<{}>, size={}, nrcpt={} (queue active)",
                file.envelope.sender,
                file.content.len(),
                pending.len()
            ),
        );
        let sender = if file.envelope.sender.is_empty() {
            ReversePath::Null
        } else {
            match file.envelope.sender.parse::<MailAddress>() {
                Ok(a) => ReversePath::Mailbox(a),
                Err(_) => ReversePath::Null,
            }
        };
        let queue_id = id
            .parse::<QueueId>()
            .unwrap_or_else(|_| QueueId::from_parts(file.envelope.arrival.as_secs(), 0, 0));
        let mut envelope = Envelope::new(queue_id, sender, arrival, file.content.len() as u64);
        envelope.dsn_envid = file.envelope.attribute("envid").map(str::to_owned);
        let content: Arc<MemoryContent> = Arc::new(MemoryContent::new(lf_content(&file.content)));

        // Route every pending recipient; group by transport and next hop.
        let mut outcomes: Vec<Outcome> = Vec::new();
        let mut groups: HashMap<(String, String), Vec<(usize, Recipient)>> = HashMap::new();
        let mut order: Vec<(String, String)> = Vec::new();
        // content_filter (or a FILTER action): every recipient goes to the
        // filter's transport and next hop (the recipient's own next hop
        // when the filter names none), not where it would otherwise go.
        let filter: Option<(String, String)> = file
            .envelope
            .attribute("content_filter")
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(|f| match f.split_once(':') {
                Some((t, n)) => (t.to_owned(), n.to_owned()),
                None => (f.to_owned(), String::new()),
            });
        for &i in &pending {
            let queued = &file.envelope.recipients[i];
            let now = (self.clock)();
            let fail = |status| Outcome {
                index: i,
                status,
                delivered_at: now,
                delivery_time: Duration::ZERO,
            };
            let address = match queued.address.parse::<MailAddress>() {
                Ok(a) => a,
                Err(e) => {
                    outcomes.push(fail(DeliveryStatus::Bounced(StatusDetail::new(
                        EnhancedStatus::parse("5.1.3").expect("valid"),
                        format!("bad address syntax: {e}"),
                        Relay::None,
                    ))));
                    continue;
                }
            };
            match self.router.route_for(&file.envelope.sender, &address) {
                Ok(route) => {
                    let mut rcpt = Recipient::new(route.address, i as u64);
                    if queued.original != queued.address {
                        rcpt.original = queued.original.parse().ok();
                    }
                    rcpt.dsn_orcpt = queued.orcpt.clone();
                    let key = match &filter {
                        Some((t, n)) if !n.is_empty() => (t.clone(), n.clone()),
                        Some((t, _)) => (t.clone(), route.nexthop),
                        None => (route.transport, route.nexthop),
                    };
                    if !forced && self.config.defer_transports.contains(&key.0) {
                        // Postfix's "deferred transport": it waits for a
                        // flush (sendmail -q, postqueue -f).
                        outcomes.push(fail(DeliveryStatus::Deferred(StatusDetail::new(
                            EnhancedStatus::parse("4.3.2").expect("valid"),
                            "deferred transport",
                            Relay::None,
                        ))));
                        continue;
                    }
                    if !groups.contains_key(&key) {
                        order.push(key.clone());
                    }
                    groups.entry(key).or_default().push((i, rcpt));
                }
                Err(RouteError::Temporary(why)) => {
                    outcomes.push(fail(DeliveryStatus::Deferred(StatusDetail::new(
                        EnhancedStatus::parse("4.3.0").expect("valid"),
                        format!("address resolver failure: {why}"),
                        Relay::None,
                    ))));
                }
                Err(RouteError::Permanent(why)) => {
                    outcomes.push(fail(DeliveryStatus::Bounced(StatusDetail::new(
                        EnhancedStatus::parse("5.1.3").expect("valid"),
                        why,
                        Relay::None,
                    ))));
                }
            }
        }

        // Deliver each batch within the limits, all batches in parallel.
        let mut deliveries = tokio::task::JoinSet::new();
        for key in order {
            let rcpts = groups.remove(&key).unwrap_or_default();
            let (transport_name, nexthop) = key;
            let Some((transport, process_limit)) = self.transports.get(&transport_name).cloned()
            else {
                let now = (self.clock)();
                for (i, _) in rcpts {
                    outcomes.push(Outcome {
                        index: i,
                        status: DeliveryStatus::Deferred(StatusDetail::new(
                            EnhancedStatus::parse("4.3.0").expect("valid"),
                            format!("mail transport unavailable: {transport_name} is not running"),
                            Relay::None,
                        )),
                        delivered_at: now,
                        delivery_time: Duration::ZERO,
                    });
                }
                continue;
            };
            let destination = self.destination(&transport_name, &nexthop, &transport);
            // A dead destination: its mail waits without being tried, as
            // Postfix's "delivery temporarily suspended".
            if let Some(why) = destination.dead() {
                let now = (self.clock)();
                for (i, _) in rcpts {
                    outcomes.push(Outcome {
                        index: i,
                        status: DeliveryStatus::Deferred(StatusDetail::new(
                            EnhancedStatus::parse("4.4.1").expect("valid"),
                            format!("delivery temporarily suspended: {why}"),
                            Relay::None,
                        )),
                        delivered_at: now,
                        delivery_time: Duration::ZERO,
                    });
                }
                continue;
            }
            for batch in rcpts.chunks(transport.recipient_limit.max(1)) {
                let batch = batch.to_vec();
                let request = DeliveryRequest::new(
                    envelope.clone(),
                    batch.iter().map(|(_, r)| r.clone()).collect(),
                    nexthop.clone(),
                    transport.time_limit,
                    content.clone(),
                );
                let agent = Arc::clone(&transport.agent);
                let process_limit = Arc::clone(&process_limit);
                let destination = Arc::clone(&destination);
                let pause = self.config.minimal_backoff_time;
                let clock = Arc::clone(&self.clock);
                let transport_name = transport_name.clone();
                deliveries.spawn(async move {
                    let _p = process_limit.acquire_owned().await.expect("never closed");
                    let window = Arc::clone(&destination.permits)
                        .acquire_owned()
                        .await
                        .expect("never closed");
                    let started = tokio::time::Instant::now();
                    let offsets: Vec<u64> =
                        request.recipients.iter().map(|r| r.queue_offset).collect();
                    let report = agent.deliver(request).await;
                    let report = match report.validate(&offsets) {
                        Ok(()) => report,
                        Err(e) => DeliveryReport::new(
                            offsets
                                .iter()
                                .map(|&o| {
                                    mta_core::delivery::RecipientResult::new(
                                        o,
                                        DeliveryStatus::Deferred(StatusDetail::new(
                                            EnhancedStatus::parse("4.3.0").expect("valid"),
                                            format!("delivery agent error: {e}"),
                                            Relay::None,
                                        )),
                                    )
                                })
                                .collect(),
                        ),
                    };
                    // Feedback: a delivery that reached the destination
                    // (any recipient delivered, bounced, or answered by a
                    // server) widens its window; one that reached nothing
                    // narrows it, and may declare it dead.
                    let reached = report.results.iter().any(|r| match &r.status {
                        DeliveryStatus::Deferred(d) => !matches!(d.relay, Relay::None),
                        _ => true,
                    });
                    if reached {
                        destination.positive();
                        drop(window);
                    } else if let Some(DeliveryStatus::Deferred(d)) =
                        report.results.first().map(|r| &r.status)
                        && destination.negative(&d.text, pause)
                    {
                        window.forget();
                    } else {
                        drop(window);
                    }
                    let took = started.elapsed();
                    let at = clock();
                    (transport_name, batch, report, took, at)
                });
            }
        }
        let mut agent_of: HashMap<usize, String> = HashMap::new();
        while let Some(joined) = deliveries.join_next().await {
            let Ok((transport_name, batch, report, took, at)) = joined else {
                continue;
            };
            for ((i, _), result) in batch.into_iter().zip(report.results) {
                agent_of.insert(i, transport_name.clone());
                let status = match result.status {
                    // Aliases and .forward: the new addresses go back
                    // through cleanup as a new message; only once it is
                    // queued is this recipient done.
                    DeliveryStatus::Resubmit(r) => {
                        let queued = &file.envelope.recipients[i];
                        self.forward(&file, queued, &r, &transport_name).await
                    }
                    s => s,
                };
                outcomes.push(Outcome {
                    index: i,
                    status,
                    delivered_at: at,
                    delivery_time: took,
                });
            }
        }
        outcomes.sort_by_key(|o| o.index);

        // Apply: done marks first, then log. A message that will be removed
        // needs none: its removal is the mark (a crash before it means
        // delivering again, never losing it). Only a message that stays
        // gets each finished recipient marked, fsynced, before it waits.
        let stays = outcomes
            .iter()
            .any(|o| matches!(o.status, DeliveryStatus::Deferred(_)));
        let is_done = |o: &Outcome| {
            matches!(
                o.status,
                DeliveryStatus::Delivered(_) | DeliveryStatus::Bounced(_)
            )
        };
        // One sync for all the marks; if it fails, none counts as done.
        let marked = !stays
            || self
                .mark_done(
                    &path,
                    outcomes
                        .iter()
                        .filter(|o| is_done(o))
                        .map(|o| file.envelope.recipients[o.index].clone())
                        .collect(),
                )
                .await;
        let mut bounced: Vec<BouncedRecipient> = Vec::new();
        let mut succeeded: Vec<BouncedRecipient> = Vec::new();
        let mut still_pending = 0usize;
        let mut last_defer: HashMap<usize, StatusDetail> = HashMap::new();
        for o in &outcomes {
            let queued = &file.envelope.recipients[o.index];
            if is_done(o) && !marked {
                still_pending += 1;
                continue;
            }
            let program = agent_of.get(&o.index).map_or("qmgr", String::as_str);
            self.log_result(id, queued, o, arrival, active_at, program);
            match &o.status {
                DeliveryStatus::Bounced(d) => {
                    bounced.push(BouncedRecipient::new(queued, d.clone()))
                }
                DeliveryStatus::Delivered(d)
                    if queued.notify & crate::file::notify::SUCCESS != 0 =>
                {
                    succeeded.push(BouncedRecipient::new(queued, d.clone()))
                }
                DeliveryStatus::Deferred(d) => {
                    still_pending += 1;
                    last_defer.insert(o.index, d.clone());
                }
                _ => {}
            }
        }

        let now = (self.clock)();
        let age = now.duration_since(arrival).unwrap_or_default();
        let lifetime = if file.envelope.sender.is_empty() {
            self.config.bounce_queue_lifetime
        } else {
            self.config.maximal_queue_lifetime
        };
        if still_pending > 0 && age >= lifetime {
            // Too old: return the rest to the sender with their last reason.
            (self.log)(
                "qmgr",
                &format!(
                    "{id}: from=<{}>, status=expired, returned to sender",
                    file.envelope.sender
                ),
            );
            let expired: Vec<QueuedRecipient> = last_defer
                .keys()
                .map(|&i| file.envelope.recipients[i].clone())
                .collect();
            let marked = self.mark_done(&path, expired).await;
            for (&i, detail) in &last_defer {
                let queued = &file.envelope.recipients[i];
                if marked {
                    still_pending -= 1;
                    let dsn = EnhancedStatus::new(
                        mta_core::reply::StatusClass::Permanent,
                        detail.dsn.subject(),
                        detail.dsn.detail(),
                    )
                    .unwrap_or(detail.dsn);
                    let mut d = detail.clone();
                    d.dsn = dsn;
                    d.text = format!(
                        "message expired in the queue after {}s: {}",
                        age.as_secs(),
                        d.text
                    );
                    bounced.push(BouncedRecipient::new(queued, d));
                }
            }
        }
        // NOTIFY=: a recipient that asked for no failure notice (NEVER, or
        // a list without FAILURE) is not reported; none given means the
        // default, FAILURE and DELAY.
        let wants = |r: &BouncedRecipient, bit: u8| {
            file.envelope
                .recipients
                .iter()
                .find(|q| q.address == r.address)
                .is_none_or(|q| q.notify == 0 || q.notify & bit != 0)
        };
        bounced.retain(|r| wants(r, crate::file::notify::FAILURE));
        if !bounced.is_empty() {
            self.send_notice(NoticeKind::Failure, id, &file, &bounced, now)
                .await;
        }
        if !succeeded.is_empty() {
            self.send_notice(NoticeKind::Success, id, &file, &succeeded, now)
                .await;
        }
        if still_pending == 0 {
            match self.queue.remove_unsynced(id, QueueName::Active) {
                Ok(()) => (self.log)("qmgr", &format!("{id}: removed")),
                Err(e) => (self.log)("qmgr", &format!("warning: {id}: remove: {e}")),
            }
            return;
        }
        let mut deferred: Vec<(&usize, &StatusDetail)> = last_defer.iter().collect();
        deferred.sort_by_key(|(i, _)| **i);
        let records: Vec<crate::defer_log::DeferRecord> = deferred
            .into_iter()
            .map(|(&i, d)| {
                let q = &file.envelope.recipients[i];
                crate::defer_log::DeferRecord {
                    recipient: q.address.clone(),
                    orig_rcpt: q
                        .orcpt
                        .clone()
                        .unwrap_or_else(|| format!("rfc822;{}", q.original)),
                    status: d.dsn.to_string(),
                    reason: d.text.clone(),
                }
            })
            .collect();
        if let Err(e) = crate::defer_log::write(&self.queue, id, &records) {
            (self.log)("qmgr", &format!("warning: {id}: write the defer log: {e}"));
        }
        // delay_warning_time: one warning per message, once it has waited
        // that long, to recipients that want DELAY notices.
        let warn_after = self.config.delay_warning_time;
        let warned = self.queue.root().join("warn").join(id);
        if !warn_after.is_zero() && age >= warn_after && !warned.exists() {
            let delayed: Vec<BouncedRecipient> = last_defer
                .iter()
                .map(|(&i, d)| BouncedRecipient::new(&file.envelope.recipients[i], d.clone()))
                .filter(|r| wants(r, crate::file::notify::DELAY))
                .collect();
            if !delayed.is_empty() {
                let kind = NoticeKind::Delay {
                    after: warn_after,
                    lifetime,
                };
                if self.send_notice(kind, id, &file, &delayed, now).await
                    && let Err(e) = std::fs::write(&warned, b"")
                {
                    (self.log)(
                        "qmgr",
                        &format!("warning: {id}: record the delay warning: {e}"),
                    );
                }
            }
        }
        let next = now + backoff(&self.config, age);
        let set = std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(next));
        if let Err(e) = set {
            (self.log)("qmgr", &format!("warning: {id}: set the retry time: {e}"));
        }
        if let Err(e) = self
            .queue
            .rename(id, QueueName::Active, QueueName::Deferred)
        {
            (self.log)("qmgr", &format!("warning: {id}: move to deferred: {e}"));
        }
    }

    /// Queues the forwarded copy that `r` asks for: the original content
    /// (arrival time, attributes and the original recipient kept, as
    /// Postfix's local(8) forwards) with `r`'s header lines in front, to
    /// `r`'s addresses. Delivered (`forwarded as ID`) once it is durable;
    /// deferred when it cannot be queued, so that nothing is lost.
    async fn forward(
        &self,
        file: &QueueFile,
        queued: &QueuedRecipient,
        r: &mta_core::delivery::Resubmission,
        transport: &str,
    ) -> DeliveryStatus {
        let relay = Relay::Transport(transport.to_owned());
        if r.recipients.is_empty() {
            return DeliveryStatus::Delivered(StatusDetail::new(
                EnhancedStatus::OK,
                "alias expansion delivered nothing new",
                relay,
            ));
        }
        let Some((cleanup, _)) = &self.notices else {
            return DeliveryStatus::Deferred(StatusDetail::new(
                EnhancedStatus::parse("4.3.0").expect("valid"),
                "cannot forward: no cleanup service",
                relay,
            ));
        };
        let sender = match &r.sender {
            Some(ReversePath::Null) => String::new(),
            Some(ReversePath::Mailbox(a)) => a.to_string(),
            None => file.envelope.sender.clone(),
        };
        let recipients = r
            .recipients
            .iter()
            .map(|a| {
                let mut n = QueuedRecipient::new(a.to_string());
                n.original = queued.original.clone();
                n.orcpt = queued.orcpt.clone();
                n.notify = queued.notify;
                n
            })
            .collect();
        let submission = Submission {
            arrival: file.envelope.arrival,
            sender,
            recipients,
            // The copy has been through any content filter already.
            attributes: file
                .envelope
                .attributes
                .iter()
                .filter(|(n, _)| n != "content_filter")
                .cloned()
                .collect(),
            context: Default::default(),
            prepend: r.headers.clone(),
            internal: true,
            no_address_mappings: false,
            no_header_body_checks: false,
            hold: false,
            discard: false,
            rewrite_headers: false,
        };
        let queued = async {
            let mut m = cleanup.begin(submission)?;
            m.write(&file.content);
            let q = m.finish().map_err(io::Error::other)?;
            q.commit.await?;
            Ok::<_, io::Error>(q.id)
        };
        match queued.await {
            Ok(id) => DeliveryStatus::Delivered(StatusDetail::new(
                EnhancedStatus::OK,
                format!("forwarded as {id}"),
                relay,
            )),
            Err(e) => DeliveryStatus::Deferred(StatusDetail::new(
                EnhancedStatus::parse("4.3.0").expect("valid"),
                format!("cannot forward: {e}"),
                relay,
            )),
        }
    }

    /// Marks `recipients` done with one sync; true when it worked.
    async fn mark_done(&self, path: &Path, recipients: Vec<QueuedRecipient>) -> bool {
        if recipients.is_empty() {
            return true;
        }
        let path = path.to_path_buf();
        let result = tokio::task::spawn_blocking(move || {
            let all: Vec<&QueuedRecipient> = recipients.iter().collect();
            QueueFile::mark_all_done(&path, &all)
        })
        .await;
        match result {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                (self.log)("qmgr", &format!("warning: mark recipient done: {e}"));
                false
            }
            Err(_) => false,
        }
    }

    fn log_result(
        &self,
        id: &str,
        queued: &QueuedRecipient,
        o: &Outcome,
        arrival: SystemTime,
        active_at: SystemTime,
        program: &str,
    ) {
        let Some(detail) = o.status.detail() else {
            return;
        };
        let word = o.status.status_word().unwrap_or("deferred");
        let total = o.delivered_at.duration_since(arrival).unwrap_or_default();
        let before_active = active_at.duration_since(arrival).unwrap_or_default();
        let in_active = total
            .saturating_sub(before_active)
            .saturating_sub(o.delivery_time);
        let orig = if queued.original != queued.address {
            format!(", orig_to=<{}>", queued.original)
        } else {
            String::new()
        };
        (self.log)(
            program,
            &format!(
                "{id}: to=<{}>{orig}, relay={}, delay={}, delays={}/{}/0/{}, dsn={}, status={word} ({})",
                queued.address,
                detail.relay,
                format_delay(total),
                format_delay(before_active),
                format_delay(in_active),
                format_delay(o.delivery_time),
                detail.dsn,
                detail.text
            ),
        );
    }

    /// Sends the notice of `kind` about `recipients` to the sender;
    /// whether it was queued.
    async fn send_notice(
        &self,
        kind: NoticeKind,
        id: &str,
        file: &QueueFile,
        recipients: &[BouncedRecipient],
        now: SystemTime,
    ) -> bool {
        // Postfix's words for each notice in its log.
        let what = match kind {
            NoticeKind::Failure => "non-delivery",
            NoticeKind::Delay { .. } => "delay",
            NoticeKind::Success => "delivery status",
        };
        let Some((cleanup, notice)) = &self.notices else {
            return false;
        };
        // notify_classes: the postmaster's copy first (for mail from <>,
        // the 2bounce copy is all there is).
        let copy_to = match kind {
            NoticeKind::Failure if file.envelope.sender.is_empty() => {
                notice.postmaster.double_bounce.as_deref()
            }
            NoticeKind::Failure => notice.postmaster.bounce.as_deref(),
            NoticeKind::Delay { .. } => notice.postmaster.delay.as_deref(),
            NoticeKind::Success => None,
        };
        if let Some(to) = copy_to {
            let audience = crate::notice::Audience::Postmaster(to);
            let message = crate::notice::notice(notice, kind, audience, id, file, recipients, now);
            match crate::notice::submit(cleanup, to, &message, now).await {
                Ok(new_id) => (self.log)(
                    "bounce",
                    &format!("{id}: postmaster {what} notification: {new_id}"),
                ),
                Err(e) => (self.log)(
                    "bounce",
                    &format!("warning: {id}: cannot queue the postmaster {what} notification: {e}"),
                ),
            }
        }
        if file.envelope.sender.is_empty() {
            if kind == NoticeKind::Failure && copy_to.is_none() {
                (self.log)(
                    "bounce",
                    &format!("{id}: sender is <>: no non-delivery notice for a bounce"),
                );
            }
            return false;
        }
        let audience = crate::notice::Audience::Sender;
        let message = crate::notice::notice(notice, kind, audience, id, file, recipients, now);
        match crate::notice::submit(cleanup, &file.envelope.sender, &message, now).await {
            Ok(new_id) => {
                (self.log)(
                    "bounce",
                    &format!("{id}: sender {what} notification: {new_id}"),
                );
                true
            }
            Err(e) => {
                (self.log)(
                    "bounce",
                    &format!("warning: {id}: cannot queue the {what} notification: {e}"),
                );
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_look_like_postfix() {
        let f = |ms| format_delay(Duration::from_millis(ms));
        assert_eq!(f(0), "0");
        assert_eq!(f(4), "0");
        assert_eq!(f(70), "0.07");
        assert_eq!(f(350), "0.35");
        assert_eq!(f(1_400), "1.4");
        assert_eq!(f(2_000), "2");
        assert_eq!(f(26_400), "26");
    }

    #[test]
    fn lf_content_keeps_lone_crs() {
        assert_eq!(lf_content(b"a\r\nb\rc\r\n\r\n"), b"a\nb\rc\n\n");
    }

    #[test]
    fn backoff_doubles_within_its_limits() {
        let c = SchedulerConfig {
            minimal_backoff_time: Duration::from_secs(10),
            maximal_backoff_time: Duration::from_secs(100),
            ..SchedulerConfig::default()
        };
        // Attempts at the times the waits give: 0, 10, 20, 40, 80, 160, 260.
        let mut age = Duration::ZERO;
        let mut waits = Vec::new();
        for _ in 0..6 {
            let w = backoff(&c, age);
            waits.push(w.as_secs());
            age += w;
        }
        assert_eq!(waits, [10, 10, 20, 40, 80, 100]);
    }
}

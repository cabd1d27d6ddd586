//! The `virtual` agent: delivery to mailboxes of domains that have no
//! UNIX accounts (`virtual_mailbox_domains`), as Postfix's `virtual(8)`.
//!
//! For each recipient, folded to lower case:
//!
//! 1. A `Delivered-To:` header for it already in the message is a mail
//!    loop: bounce `5.4.6 mail forwarding loop for ADDRESS`.
//! 2. `virtual_mailbox_maps` gives the mailbox, relative to
//!    `virtual_mailbox_base`: a maildir when it ends in `/`, an mbox file
//!    otherwise. Not found: bounce `5.1.1 unknown user: "ADDRESS"`.
//! 3. `virtual_uid_maps` and `virtual_gid_maps` give the owner, which
//!    must be numeric and at least `virtual_minimum_uid`; a missing or bad
//!    value defers with `4.3.0 mail system configuration error`, so that
//!    the administrator can fix it before mail is lost.
//! 4. The message is written with `Return-Path:`, `X-Original-To:` and
//!    `Delivered-To:` in front ([`crate::headers`]), durably
//!    ([`crate::maildir`], [`crate::mbox`]), within `virtual_mailbox_limit`.
//!
//! Tables are searched as `virtual(8)` says: `user+ext@domain` (with a
//! `recipient_delimiter`), `user@domain`, then `@domain`; pattern tables
//! see the whole address only. A table that cannot answer defers the
//! recipient (`4.3.0`), never bounces it.
//!
//! Postfix's `virtual(8)` writes as the owner it looked up; this agent
//! writes as the process's user and, when [`VirtualConfig::set_owner`] is
//! on (`mtad` running as root), gives the new files and directories to
//! that owner. Mailbox paths with a `..` component are refused (deferred):
//! a table mistake must not write outside `virtual_mailbox_base`.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use mta_core::address::{LocalPart, MailAddress, RecipientDelimiter};
use mta_core::config::{Config, ConfigError};
use mta_core::delivery::{
    DeliveryAgent, DeliveryFuture, DeliveryReport, DeliveryRequest, DeliveryStatus, Recipient,
    Relay, StatusDetail,
};
use mta_core::reply::EnhancedStatus;
use mta_maps::MapError;
use mta_maps::list::MapList;
use mta_maps::registry::Registry;
use mta_maps::search::{SearchStyle, keys};

use crate::Clock;
use crate::headers::{DeliveryHeaders, delivered_to, has_delivered_to};
use crate::mailbox::{Cancel, MailboxError, Owner, StoreOptions, Target, store};
use crate::mbox::LockMethod;

/// The configuration of the virtual agent: Postfix's `virtual_*`
/// parameters, with the tables opened.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VirtualConfig {
    /// `virtual_mailbox_base`: the directory mailbox paths are under.
    pub mailbox_base: PathBuf,
    /// `virtual_mailbox_maps`.
    pub mailbox_maps: MapList,
    /// `virtual_uid_maps`.
    pub uid_maps: MapList,
    /// `virtual_gid_maps`.
    pub gid_maps: MapList,
    /// `virtual_minimum_uid`.
    pub minimum_uid: u32,
    /// `virtual_mailbox_limit`: the largest mbox file or maildir message;
    /// 0 for none.
    pub mailbox_limit: u64,
    /// `virtual_mailbox_lock`.
    pub mailbox_lock: Vec<LockMethod>,
    /// `recipient_delimiter`, for the table search.
    pub recipient_delimiter: RecipientDelimiter,
    /// `myhostname`, for maildir file names.
    pub hostname: String,
    /// Whether to give new files to the looked-up owner (only possible as
    /// root).
    pub set_owner: bool,
    /// The lock waits of mbox deliveries (`deliver_lock_attempts`,
    /// `deliver_lock_delay`, `stale_lock_time`).
    pub lock_attempts: u32,
    /// See [`VirtualConfig::lock_attempts`].
    pub lock_delay: std::time::Duration,
    /// See [`VirtualConfig::lock_attempts`].
    pub stale_lock_time: std::time::Duration,
}

impl VirtualConfig {
    /// Reads the `virtual_*` parameters of `config` (a `master.cf`
    /// service's view, with its `-o` overrides) and opens the tables
    /// through `registry`.
    ///
    /// # Errors
    ///
    /// A parameter of the wrong kind, or a table that cannot be opened,
    /// named with its file and line.
    pub fn from_config(config: &Config, registry: &Registry) -> Result<VirtualConfig, ConfigError> {
        let list = |name: &str| -> Result<MapList, ConfigError> {
            let value = config.expanded(name)?;
            registry
                .open_list(&value)
                .map_err(|e| config.bad_value(name, &value, e.to_string()))
        };
        let lock_value = config.expanded("virtual_mailbox_lock")?;
        let mailbox_lock = LockMethod::parse_list(&lock_value)
            .map_err(|e| config.bad_value("virtual_mailbox_lock", &lock_value, e))?;
        let minimum_uid = config.integer("virtual_minimum_uid")?;
        Ok(VirtualConfig {
            mailbox_base: PathBuf::from(config.expanded("virtual_mailbox_base")?),
            mailbox_maps: list("virtual_mailbox_maps")?,
            uid_maps: list("virtual_uid_maps")?,
            gid_maps: list("virtual_gid_maps")?,
            minimum_uid: u32::try_from(minimum_uid.max(0)).unwrap_or(u32::MAX),
            mailbox_limit: u64::try_from(config.integer("virtual_mailbox_limit")?).unwrap_or(0),
            mailbox_lock,
            recipient_delimiter: RecipientDelimiter::new(&config.expanded("recipient_delimiter")?),
            hostname: config.expanded("myhostname")?,
            set_owner: false,
            lock_attempts: u32::try_from(config.integer("deliver_lock_attempts")?.max(1))
                .unwrap_or(20),
            lock_delay: config.time("deliver_lock_delay")?,
            stale_lock_time: config.time("stale_lock_time")?,
        })
    }
}

/// The `virtual` delivery agent. See the module documentation.
pub struct VirtualAgent {
    config: Arc<VirtualConfig>,
    clock: Clock,
    relay: Relay,
}

impl std::fmt::Debug for VirtualAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualAgent")
            .field("config", &self.config)
            .field("relay", &self.relay)
            .finish_non_exhaustive()
    }
}

fn status(code: &str, text: impl Into<String>, relay: &Relay) -> StatusDetail {
    StatusDetail::new(
        EnhancedStatus::parse(code).expect("a valid enhanced status"),
        text,
        relay.clone(),
    )
}

impl VirtualAgent {
    /// The agent for `config`, reading the time of delivery from `clock`,
    /// reporting itself as `relay=SERVICE` (the `master.cf` service name,
    /// usually `virtual`).
    pub fn new(config: VirtualConfig, clock: Clock, service: &str) -> VirtualAgent {
        VirtualAgent {
            config: Arc::new(config),
            clock,
            relay: Relay::Transport(service.to_owned()),
        }
    }

    /// The recipient with its local part folded to lower case (domains
    /// are already), which all decisions use.
    fn folded(address: &MailAddress) -> MailAddress {
        let local = LocalPart::new(address.local_part().lookup_key())
            .unwrap_or_else(|_| address.local_part().clone());
        MailAddress::new(local, address.domain().cloned()).unwrap_or_else(|_| address.clone())
    }

    async fn search(
        &self,
        table: &MapList,
        address: &MailAddress,
    ) -> Result<Option<String>, MapError> {
        let keys = keys(
            address,
            &self.config.recipient_delimiter,
            SearchStyle::Virtual {
                local_domain: false,
            },
        );
        Ok(table.search(&keys).await?.map(|(_, v)| v.into_owned()))
    }

    async fn numeric_id(
        &self,
        table: &MapList,
        param: &str,
        what: &str,
        address: &MailAddress,
    ) -> Result<u32, DeliveryStatus> {
        let config_error = |detail: String| {
            DeliveryStatus::Deferred(status(
                "4.3.0",
                format!("mail system configuration error: {detail}"),
                &self.relay,
            ))
        };
        match self.search(table, address).await {
            Err(e) => Err(config_error(format!("{param}: {e}"))),
            Ok(None) => Err(config_error(format!(
                "recipient {}: {what} not found in {param}",
                address.internal_form()
            ))),
            Ok(Some(v)) => v.trim().parse::<u32>().map_err(|_| {
                config_error(format!(
                    "recipient {}: bad {what} \"{}\" in {param}",
                    address.internal_form(),
                    v.trim()
                ))
            }),
        }
    }

    /// Looks the recipient up: its target and owner, or the status that
    /// ends its delivery here.
    async fn locate(&self, address: &MailAddress) -> Result<(Target, Owner), DeliveryStatus> {
        let config = &self.config;
        let mailbox = match self.search(&config.mailbox_maps, address).await {
            Err(e) => {
                return Err(DeliveryStatus::Deferred(status(
                    "4.3.0",
                    format!("mail system configuration error: virtual_mailbox_maps: {e}"),
                    &self.relay,
                )));
            }
            Ok(None) => {
                return Err(DeliveryStatus::Bounced(status(
                    "5.1.1",
                    format!("unknown user: \"{}\"", address.internal_form()),
                    &self.relay,
                )));
            }
            Ok(Some(m)) => m.trim().to_owned(),
        };
        let uid = self
            .numeric_id(&config.uid_maps, "virtual_uid_maps", "uid", address)
            .await?;
        if uid < config.minimum_uid {
            return Err(DeliveryStatus::Deferred(status(
                "4.3.0",
                format!(
                    "mail system configuration error: recipient {}: bad uid {uid} in virtual_uid_maps (below virtual_minimum_uid {})",
                    address.internal_form(),
                    config.minimum_uid
                ),
                &self.relay,
            )));
        }
        let gid = self
            .numeric_id(&config.gid_maps, "virtual_gid_maps", "gid", address)
            .await?;
        let relative = Path::new(mailbox.trim_start_matches('/'));
        if mailbox.is_empty() || relative.components().any(|c| c == Component::ParentDir) {
            return Err(DeliveryStatus::Deferred(status(
                "4.3.0",
                format!(
                    "mail system configuration error: recipient {}: mailbox \"{mailbox}\" in virtual_mailbox_maps is empty or leaves virtual_mailbox_base",
                    address.internal_form()
                ),
                &self.relay,
            )));
        }
        let path = config.mailbox_base.join(relative);
        let target = Target::from_path(path, &mailbox);
        Ok((target, Owner { uid, gid }))
    }

    async fn deliver_one(&self, request: &DeliveryRequest, rcpt: &Recipient) -> DeliveryStatus {
        let address = Self::folded(&rcpt.address);
        let (target, owner) = match self.locate(&address).await {
            Ok(found) => found,
            Err(status) => return status,
        };
        let headers = DeliveryHeaders::new(&request.envelope, rcpt);
        let delivered = delivered_to(&rcpt.address);
        let content = request.content.clone();
        let sender = request.envelope.sender.clone();
        let config = Arc::clone(&self.config);
        let now = (self.clock)();
        let relay = self.relay.clone();
        let cancel = Cancel::default();
        let cancel_here = Arc::clone(&cancel);
        // Reading the queue file and the fsyncs block: off the async
        // workers.
        let work = tokio::task::spawn_blocking(move || -> Result<&'static str, DeliveryStatus> {
            let looped = content
                .open()
                .and_then(|r| has_delivered_to(r, &delivered))
                .map_err(|e| {
                    DeliveryStatus::Deferred(status(
                        "4.3.0",
                        format!("cannot read the message content: {e}"),
                        &relay,
                    ))
                })?;
            if looped {
                return Err(DeliveryStatus::Bounced(status(
                    "5.4.6",
                    format!("mail forwarding loop for {delivered}"),
                    &relay,
                )));
            }
            let reader = content.open().map_err(MailboxError::Content);
            let owner = config.set_owner.then_some(owner);
            let options = StoreOptions {
                hostname: config.hostname.clone(),
                size_limit: config.mailbox_limit,
                locks: config.mailbox_lock.clone(),
                lock_attempts: config.lock_attempts,
                lock_delay: config.lock_delay,
                stale_lock_time: config.stale_lock_time,
                owner,
                cancel: Some(cancel),
            };
            let written = reader.and_then(|reader| {
                store(&target, &headers.render(), &sender, reader, now, &options)
            });
            written.map_err(|e| {
                let kind = target.kind();
                let detail = StatusDetail::new(
                    e.dsn(),
                    format!("{kind} delivery failed: {e}"),
                    relay.clone(),
                );
                if e.is_permanent() {
                    DeliveryStatus::Bounced(detail)
                } else {
                    DeliveryStatus::Deferred(detail)
                }
            })
        });
        // Dropped at the time limit, this guard tells the writer to give
        // up before it makes the message visible.
        struct CancelOnDrop(Cancel);
        impl Drop for CancelOnDrop {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let guard = CancelOnDrop(cancel_here);
        let result = work.await;
        std::mem::forget(guard);
        match result {
            Ok(Ok(text)) => DeliveryStatus::Delivered(status("2.0.0", text, &self.relay)),
            Ok(Err(status)) => status,
            Err(e) => DeliveryStatus::Deferred(status(
                "4.3.0",
                format!("delivery task failed: {e}"),
                &self.relay,
            )),
        }
    }
}

impl DeliveryAgent for VirtualAgent {
    fn deliver(&self, request: DeliveryRequest) -> DeliveryFuture<'_> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + request.time_limit;
            let mut report = DeliveryReport::default();
            for rcpt in &request.recipients {
                match tokio::time::timeout_at(deadline, self.deliver_one(&request, rcpt)).await {
                    Ok(status) => report.results.push(rcpt.result(status)),
                    Err(_) => break,
                }
            }
            report.defer_rest(&request.recipients, &self.relay);
            report
        })
    }
}

//! The `local` agent, as Postfix's `local(8)`: mail for the UNIX accounts
//! of `mydestination` domains.
//!
//! For each recipient, with its local part folded to lower case:
//!
//! 1. A `Delivered-To:` for it already in the message is a loop: bounce
//!    `5.4.6 mail forwarding loop for ADDRESS`.
//! 2. `alias_maps` (`user+ext`, then `user`): the value's addresses are
//!    resubmitted as a new message (qualified with `@$myorigin`, the
//!    unmatched extension appended as `propagate_unmatched_extensions`
//!    says), `/file` and `|command` are delivered here when
//!    `allow_mail_to_files` and `allow_mail_to_commands` allow them for
//!    aliases, `:include:/file` is read and expanded the same way. An
//!    `owner-NAME` alias becomes the sender of the forwarded copy, so that
//!    problems go to the list owner. A table that cannot answer defers.
//! 3. Otherwise the account must exist (`getpwnam` of the local part
//!    without its extension): an unknown one goes to `luser_relay` when
//!    that is set (or `fallback_transport` first), or bounces `5.1.1
//!    unknown user: "name"`.
//! 4. The first `forward_path` file that exists (`$home/.forward+ext`,
//!    then `$home/.forward`) is expanded like an alias, as the user.
//!    An entry naming the user itself (`\user` or `user`) means the
//!    user's own mailbox.
//! 5. The mailbox: `mailbox_transport`, or `mailbox_command` (through `/bin/sh -c`, or
//!    `local_command_shell`, as the user, with `HOME`, `USER`, `LOGNAME`,
//!    `SHELL`, `LOCAL`, `EXTENSION`, `DOMAIN`, `RECIPIENT`, `SENDER`,
//!    `ORIGINAL_RECIPIENT` set), else `$home/$home_mailbox` (a maildir
//!    when it ends in `/`), else an mbox in `mail_spool_directory`,
//!    within `mailbox_size_limit`.
//!
//! Forwarded copies carry `Delivered-To: RECIPIENT` in front, so a loop
//! comes back as the loop of step 1. As root, files are written and
//! commands run as the recipient (alias targets as `default_privs`); run
//! by an ordinary user, as that user.
//!
//! Simplifications, said here so that nobody is surprised: an alias that
//! expands to several destinations gets one status: a failure of any
//! file or command delivery defers (or bounces) the whole alias, and on a
//! retry the destinations that had worked see the message again. Not
//! read: `mailbox_transport_maps`, `fallback_transport_maps`,
//! `mailbox_command_maps`, `expand_owner_alias`,
//! `command_expansion_filter` and the `local_*_header` switches.
//!
//! `mailbox_transport` (after aliases and `.forward`, instead of the
//! mailbox) and `fallback_transport` (for unknown users, before
//! `luser_relay`) hand the recipient to another transport, such as
//! `lmtp:unix:private/dovecot-lmtp`, when the caller gives the agent its
//! transports ([`LocalAgent::with_transports`]).
//!
//! # Example
//!
//! ```no_run
//! use mta_core::config::{Config, HostFacts};
//! use mta_delivery::local::{LocalAgent, LocalConfig};
//! use mta_maps::registry::{OpenContext, Registry};
//!
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::parse("alias_maps = hash:/etc/aliases\n", "main.cf", HostFacts::default())?;
//! let local = LocalConfig::from_config(&config, &Registry::new(OpenContext::default()), "local")?;
//! let agent = LocalAgent::new(local, std::sync::Arc::new(std::time::SystemTime::now));
//! # let _ = agent;
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mta_core::address::{MailAddress, RecipientDelimiter, ReversePath};
use mta_core::config::{Config, ConfigError};
use mta_core::delivery::{
    DeliveryAgent, DeliveryFuture, DeliveryReport, DeliveryRequest, DeliveryStatus, Recipient,
    Relay, Resubmission, StatusDetail,
};
use mta_core::reply::EnhancedStatus;
use mta_maps::aliases::{AliasTarget, parse_forward, parse_value};
use mta_maps::list::MapList;
use mta_maps::registry::Registry;

use crate::Clock;
use crate::command::{self, CommandSpec};
use crate::headers::{DeliveryHeaders, delivered_to, has_delivered_to};
use crate::macros;
use crate::mailbox::{MailboxError, Owner, StoreOptions, Target, store};
use crate::mbox::LockMethod;
use crate::pipe::{LineQuoter, PipeFlags};

/// How deep aliases may expand to local names that are aliases again.
const ALIAS_DEPTH: usize = 20;
/// How deep `:include:` files may nest.
const INCLUDE_DEPTH: usize = 10;
/// The largest `.forward` or `:include:` file read.
const FILE_LIMIT: u64 = 1 << 20;

/// Where a destination came from, for `allow_mail_to_commands` and
/// `allow_mail_to_files`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Alias,
    Forward,
    Include,
}

/// The classes a parameter allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allowed {
    /// `alias`.
    pub alias: bool,
    /// `forward`.
    pub forward: bool,
    /// `include`.
    pub include: bool,
}

impl Allowed {
    fn parse(config: &Config, name: &str) -> Result<Allowed, ConfigError> {
        let mut a = Allowed::default();
        for word in config.list(name)? {
            match word.as_str() {
                "alias" => a.alias = true,
                "forward" => a.forward = true,
                "include" => a.include = true,
                other => {
                    return Err(config.bad_value(name, other, "alias, forward or include"));
                }
            }
        }
        Ok(a)
    }

    fn allows(self, class: Class) -> bool {
        match class {
            Class::Alias => self.alias,
            Class::Forward => self.forward,
            Class::Include => self.include,
        }
    }
}

/// What the agent takes from `main.cf`.
pub struct LocalConfig {
    /// The `master.cf` service name (`relay=` in logs).
    pub service: String,
    /// `alias_maps`.
    pub alias_maps: MapList,
    /// `forward_path`, each entry with its `$home`-style macros.
    pub forward_path: Vec<String>,
    /// `allow_mail_to_commands`.
    pub allow_commands: Allowed,
    /// `allow_mail_to_files`.
    pub allow_files: Allowed,
    /// `mailbox_command`, with its macros; empty for none.
    pub mailbox_command: String,
    /// `home_mailbox`; empty for the spool.
    pub home_mailbox: String,
    /// `mail_spool_directory`.
    pub mail_spool_directory: PathBuf,
    /// `luser_relay`, with its macros; empty for none.
    pub luser_relay: String,
    /// `mailbox_transport` (`transport:nexthop`); empty for none.
    pub mailbox_transport: String,
    /// `fallback_transport`; empty for none.
    pub fallback_transport: String,
    /// `mailbox_size_limit`; 0 for none.
    pub mailbox_size_limit: u64,
    /// `mailbox_delivery_lock`.
    pub locks: Vec<LockMethod>,
    /// `deliver_lock_attempts`.
    pub lock_attempts: u32,
    /// `deliver_lock_delay`.
    pub lock_delay: std::time::Duration,
    /// `stale_lock_time`.
    pub stale_lock_time: std::time::Duration,
    /// `recipient_delimiter`.
    pub recipient_delimiter: RecipientDelimiter,
    /// `myorigin`, for unqualified addresses in aliases and `.forward`.
    pub myorigin: String,
    /// `myhostname`, for maildir file names.
    pub hostname: String,
    /// `local_command_shell` as words; empty for `/bin/sh -c`.
    pub command_shell: Vec<String>,
    /// `export_environment`, as name and value.
    pub environment: Vec<(String, String)>,
    /// Whether to write and run as the recipient (running as root).
    pub as_root: bool,
    /// `default_privs`' uid and gid, for alias commands and files as root.
    pub default_privs: Option<(u32, u32)>,
    /// Whether unmatched extensions are appended to alias and `.forward`
    /// addresses (`propagate_unmatched_extensions`).
    pub propagate_alias: bool,
    /// The same, for `.forward`.
    pub propagate_forward: bool,
}

impl LocalConfig {
    /// Reads the parameters of `config` (a service's view) and opens
    /// `alias_maps` through `registry`.
    ///
    /// # Errors
    ///
    /// A parameter of the wrong kind or a table that cannot be opened,
    /// named with its file and line.
    pub fn from_config(
        config: &Config,
        registry: &Registry,
        service: &str,
    ) -> Result<LocalConfig, ConfigError> {
        let alias_value = config.expanded("alias_maps")?;
        let alias_maps = registry
            .open_list(&alias_value)
            .map_err(|e| config.bad_value("alias_maps", &alias_value, e.to_string()))?;
        // These carry local(8)'s own macros ($home, $user, ...), which
        // main.cf expansion does not know: read them as written.
        let raw = |name: &str| {
            config
                .raw(name)
                .or_else(|| config.default_raw(name))
                .unwrap_or_default()
        };
        let forward_path = raw("forward_path")
            .split([',', ' ', '\t', '\n'])
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let lock_value = config.expanded("mailbox_delivery_lock")?;
        let locks = LockMethod::parse_list(&lock_value)
            .map_err(|e| config.bad_value("mailbox_delivery_lock", &lock_value, e))?;
        let mut environment = Vec::new();
        for name in config.list("export_environment")? {
            match name.split_once('=') {
                Some((n, v)) => environment.push((n.to_owned(), v.to_owned())),
                None => {
                    if let Ok(v) = std::env::var(&name) {
                        environment.push((name, v));
                    }
                }
            }
        }
        let as_root = nix::unistd::geteuid().is_root();
        let default_privs = if as_root {
            let name = config.expanded("default_privs")?;
            let user = nix::unistd::User::from_name(name.trim())
                .ok()
                .flatten()
                .ok_or_else(|| config.bad_value("default_privs", &name, "an existing account"))?;
            Some((user.uid.as_raw(), user.gid.as_raw()))
        } else {
            None
        };
        let propagate = config.list("propagate_unmatched_extensions")?;
        Ok(LocalConfig {
            service: service.to_owned(),
            alias_maps,
            forward_path,
            allow_commands: Allowed::parse(config, "allow_mail_to_commands")?,
            allow_files: Allowed::parse(config, "allow_mail_to_files")?,
            mailbox_command: raw("mailbox_command").trim().to_owned(),
            home_mailbox: config.expanded("home_mailbox")?.trim().to_owned(),
            mail_spool_directory: PathBuf::from(config.expanded("mail_spool_directory")?.trim()),
            luser_relay: raw("luser_relay").trim().to_owned(),
            mailbox_transport: config.expanded("mailbox_transport")?.trim().to_owned(),
            fallback_transport: config.expanded("fallback_transport")?.trim().to_owned(),
            mailbox_size_limit: u64::try_from(config.integer("mailbox_size_limit")?).unwrap_or(0),
            locks,
            lock_attempts: u32::try_from(config.integer("deliver_lock_attempts")?.max(1))
                .unwrap_or(20),
            lock_delay: config.time("deliver_lock_delay")?,
            stale_lock_time: config.time("stale_lock_time")?,
            recipient_delimiter: RecipientDelimiter::new(&config.expanded("recipient_delimiter")?),
            myorigin: config.expanded("myorigin")?.trim().to_owned(),
            hostname: config.expanded("myhostname")?,
            command_shell: config
                .expanded("local_command_shell")?
                .split_whitespace()
                .map(String::from)
                .collect(),
            environment,
            as_root,
            default_privs,
            propagate_alias: propagate.iter().any(|p| p == "alias"),
            propagate_forward: propagate.iter().any(|p| p == "forward"),
        })
    }
}

/// How one expansion is done.
#[derive(Debug, Clone)]
struct Expansion {
    /// Who files and commands run as.
    run_as: Option<(u32, u32)>,
    /// Where the destinations came from.
    class: Class,
    /// The recipient's extension that the matched name did not have.
    unmatched: Option<String>,
    /// The `owner-` alias that becomes the sender of forwarded copies.
    owner: Option<String>,
    /// The alias name (or the user, for `.forward`).
    name: String,
    /// How many expansions down this is.
    depth: usize,
}

/// A UNIX account, as the agent uses it.
#[derive(Debug, Clone)]
struct Account {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
    shell: String,
}

/// The per-recipient facts the macros and the environment use.
#[derive(Debug, Clone)]
struct Facts {
    /// The whole local part, folded.
    local: String,
    /// The local part without its extension.
    user: String,
    extension: Option<String>,
    domain: String,
    recipient: String,
    sender: String,
    original: String,
}

/// Finds a delivery agent by its `master.cf` service name, for
/// `mailbox_transport` and `fallback_transport`.
pub type TransportLookup = Arc<dyn Fn(&str) -> Option<Arc<dyn DeliveryAgent>> + Send + Sync>;

/// The `local` delivery agent. See the module documentation.
pub struct LocalAgent {
    config: Arc<LocalConfig>,
    clock: Clock,
    relay: Relay,
    transports: Option<TransportLookup>,
}

fn status(code: &str, text: impl Into<String>, relay: &Relay) -> StatusDetail {
    StatusDetail::new(
        EnhancedStatus::parse(code).expect("a valid enhanced status"),
        text,
        relay.clone(),
    )
}

impl LocalAgent {
    /// The agent for `config`, reading the time of delivery from `clock`.
    pub fn new(config: LocalConfig, clock: Clock) -> LocalAgent {
        let relay = Relay::Transport(config.service.clone());
        LocalAgent {
            config: Arc::new(config),
            clock,
            relay,
            transports: None,
        }
    }

    /// Lets `mailbox_transport` and `fallback_transport` hand recipients
    /// to the other transports that `lookup` finds.
    pub fn with_transports(mut self, lookup: TransportLookup) -> LocalAgent {
        self.transports = Some(lookup);
        self
    }

    /// Hands `rcpt` to the transport of `spec` (`transport:nexthop`,
    /// the nexthop defaulting to the recipient's domain), as local(8)
    /// passes mail to `mailbox_transport` and `fallback_transport`.
    async fn hand_over(
        &self,
        request: &DeliveryRequest,
        rcpt: &Recipient,
        facts: &Facts,
        spec: &str,
    ) -> DeliveryStatus {
        let (transport, nexthop) = match spec.split_once(':') {
            Some((t, n)) => (t, n),
            None => (spec, ""),
        };
        let nexthop = if nexthop.is_empty() {
            facts.domain.clone()
        } else {
            nexthop.to_owned()
        };
        let agent = self.transports.as_ref().and_then(|find| find(transport));
        let Some(agent) = agent else {
            return DeliveryStatus::Deferred(status(
                "4.3.0",
                format!("mail transport unavailable: {transport} is not running"),
                &self.relay,
            ));
        };
        let mut handed = request.clone();
        handed.recipients = vec![rcpt.clone()];
        handed.nexthop = nexthop;
        let mut report = agent.deliver(handed).await;
        match report.results.pop() {
            Some(result) => result.status,
            None => DeliveryStatus::Deferred(status(
                "4.3.0",
                format!("{transport} gave no result"),
                &self.relay,
            )),
        }
    }

    fn facts(&self, request: &DeliveryRequest, rcpt: &Recipient) -> Facts {
        let local = rcpt.address.local_part().as_str().to_lowercase();
        let split = self.config.recipient_delimiter.split(&local);
        let (user, extension) = match &split {
            Some(e) => (e.base.to_owned(), Some(e.extension.to_owned())),
            None => (local.clone(), None),
        };
        Facts {
            user,
            extension,
            domain: rcpt
                .address
                .domain()
                .map(|d| d.as_str().to_owned())
                .unwrap_or_default(),
            recipient: rcpt.address.internal_form(),
            sender: match &request.envelope.sender {
                ReversePath::Null => String::new(),
                ReversePath::Mailbox(a) => a.internal_form(),
            },
            original: rcpt
                .original
                .as_ref()
                .unwrap_or(&rcpt.address)
                .internal_form(),
            local,
        }
    }

    fn macro_value(&self, facts: &Facts, account: Option<&Account>, name: &str) -> Option<String> {
        Some(match name {
            "user" => facts.user.clone(),
            "local" | "mailbox" => facts.local.clone(),
            "extension" => facts.extension.clone().unwrap_or_default(),
            "domain" => facts.domain.clone(),
            "recipient" => facts.recipient.clone(),
            "sender" => facts.sender.clone(),
            "original_recipient" => facts.original.clone(),
            "recipient_delimiter" => match &facts.extension {
                Some(_) => self
                    .config
                    .recipient_delimiter
                    .delimiters()
                    .chars()
                    .next()
                    .map(String::from)
                    .unwrap_or_default(),
                None => String::new(),
            },
            "home" => account?.home.display().to_string(),
            "shell" => account?.shell.clone(),
            _ => return None,
        })
    }

    async fn deliver_one(&self, request: &DeliveryRequest, rcpt: &Recipient) -> DeliveryStatus {
        let delivered = delivered_to(&rcpt.address);
        let content = Arc::clone(&request.content);
        let check = delivered.clone();
        let looped = tokio::task::spawn_blocking(move || {
            content.open().and_then(|r| has_delivered_to(r, &check))
        })
        .await;
        match looped {
            Ok(Ok(false)) => {}
            Ok(Ok(true)) => {
                return DeliveryStatus::Bounced(status(
                    "5.4.6",
                    format!("mail forwarding loop for {delivered}"),
                    &self.relay,
                ));
            }
            Ok(Err(e)) => {
                return DeliveryStatus::Deferred(status(
                    "4.3.0",
                    format!("cannot read the message content: {e}"),
                    &self.relay,
                ));
            }
            Err(e) => {
                return DeliveryStatus::Deferred(status(
                    "4.3.0",
                    format!("delivery task failed: {e}"),
                    &self.relay,
                ));
            }
        }

        self.steps(request, rcpt, 0, None).await
    }

    /// Aliases, the account, `.forward` and the mailbox, for `rcpt` or
    /// for a local name an alias expanded to (`depth` levels down;
    /// `expanded_from` is the alias that named it, whose own lookup is
    /// skipped so that `root: root, ...` reaches root's mailbox).
    fn steps<'a>(
        &'a self,
        request: &'a DeliveryRequest,
        rcpt: &'a Recipient,
        depth: usize,
        expanded_from: Option<&'a str>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = DeliveryStatus> + Send + 'a>> {
        Box::pin(async move {
            let facts = self.facts(request, rcpt);
            self.resolve(request, rcpt, &facts, depth, expanded_from)
                .await
        })
    }

    async fn resolve(
        &self,
        request: &DeliveryRequest,
        rcpt: &Recipient,
        facts: &Facts,
        depth: usize,
        expanded_from: Option<&str>,
    ) -> DeliveryStatus {
        // Aliases: the whole local part, then without the extension.
        let mut keys = vec![facts.local.clone()];
        if facts.extension.is_some() {
            keys.push(facts.user.clone());
        }
        for (n, key) in keys.iter().enumerate() {
            if expanded_from == Some(key.as_str()) {
                continue;
            }
            match self.config.alias_maps.lookup(key).await {
                Err(e) => {
                    return DeliveryStatus::Deferred(status(
                        "4.3.0",
                        format!("alias database unavailable: {e}"),
                        &self.relay,
                    ));
                }
                Ok(Some(value)) => {
                    let targets = parse_value(&value);
                    let unmatched = (n > 0).then(|| facts.extension.clone()).flatten();
                    let owner = match self.config.alias_maps.lookup(&format!("owner-{key}")).await {
                        Ok(Some(_)) => Some(format!("owner-{key}")),
                        _ => None,
                    };
                    let how = Expansion {
                        run_as: self.config.default_privs,
                        class: Class::Alias,
                        unmatched,
                        owner,
                        name: key.clone(),
                        depth,
                    };
                    return self.expand(request, rcpt, facts, None, how, targets).await;
                }
                Ok(None) => {}
            }
        }

        let account = match self.account(&facts.user) {
            Ok(Some(a)) => a,
            Ok(None) if !self.config.fallback_transport.is_empty() => {
                let spec = self.config.fallback_transport.clone();
                return self.hand_over(request, rcpt, facts, &spec).await;
            }
            Ok(None) => return self.unknown(facts),
            Err(e) => {
                return DeliveryStatus::Deferred(status(
                    "4.3.0",
                    format!("cannot look up user \"{}\": {e}", facts.user),
                    &self.relay,
                ));
            }
        };

        // .forward: the first file of forward_path that exists.
        for template in &self.config.forward_path {
            let path =
                match macros::expand(template, &|n| self.macro_value(facts, Some(&account), n)) {
                    Ok(p) => p,
                    Err(e) => return self.config_error("forward_path", &e),
                };
            if path.is_empty() {
                continue;
            }
            match read_limited(Path::new(&path)) {
                Ok(Some(text)) => {
                    let targets = parse_forward(&text);
                    if targets.is_empty() {
                        continue;
                    }
                    let run_as = self.config.as_root.then_some((account.uid, account.gid));
                    let unmatched = if template.contains("extension") {
                        None
                    } else {
                        facts.extension.clone()
                    };
                    let how = Expansion {
                        run_as,
                        class: Class::Forward,
                        unmatched,
                        owner: None,
                        name: facts.local.clone(),
                        depth,
                    };
                    return self
                        .expand(request, rcpt, facts, Some(&account), how, targets)
                        .await;
                }
                Ok(None) => {}
                Err(e) => {
                    return DeliveryStatus::Deferred(status(
                        "4.3.0",
                        format!("cannot read {path}: {e}"),
                        &self.relay,
                    ));
                }
            }
        }
        self.mailbox(request, rcpt, facts, &account).await
    }

    fn account(&self, name: &str) -> Result<Option<Account>, nix::Error> {
        Ok(nix::unistd::User::from_name(name)?.map(|u| Account {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir,
            shell: u.shell.display().to_string(),
        }))
    }

    /// A parameter whose macros cannot be expanded: the mail waits for
    /// the administrator.
    fn config_error(&self, parameter: &str, why: &str) -> DeliveryStatus {
        DeliveryStatus::Deferred(status(
            "4.3.5",
            format!("mail system configuration error: {parameter}: {why}"),
            &self.relay,
        ))
    }

    /// An unknown local part: `luser_relay`, or a bounce.
    fn unknown(&self, facts: &Facts) -> DeliveryStatus {
        if !self.config.luser_relay.is_empty() {
            let target = match macros::expand(&self.config.luser_relay, &|n| {
                self.macro_value(facts, None, n)
            }) {
                Ok(t) => t,
                Err(e) => return self.config_error("luser_relay", &e),
            };
            if let Some(address) = self.qualify(&target) {
                let mut r = Resubmission::new(vec![address]);
                r.headers = vec![format!("Delivered-To: {}", facts.recipient)];
                return DeliveryStatus::Resubmit(r);
            }
        }
        DeliveryStatus::Bounced(status(
            "5.1.1",
            format!("unknown user: \"{}\"", facts.local),
            &self.relay,
        ))
    }

    /// A local name as an address in `domain` (the recipient's, a local
    /// domain), or `@$myorigin` when there is none.
    fn qualify_with(&self, name: &str, domain: &str) -> Option<MailAddress> {
        if domain.is_empty() {
            return self.qualify(name);
        }
        format!("{name}@{domain}").parse().ok()
    }

    /// `address` as a mail address, with `@$myorigin` when it has no
    /// domain.
    fn qualify(&self, address: &str) -> Option<MailAddress> {
        let address = address.trim();
        if address.is_empty() {
            return None;
        }
        let text = if address.contains('@') {
            address.to_owned()
        } else {
            format!("{address}@{}", self.config.myorigin)
        };
        text.parse().ok()
    }

    /// Delivers or resubmits what an alias, `.forward` or `:include:`
    /// expanded to. Unqualified names are local: they are delivered here,
    /// recursively (as local(8) does for addresses that resolve to it);
    /// other addresses are resubmitted.
    async fn expand(
        &self,
        request: &DeliveryRequest,
        rcpt: &Recipient,
        facts: &Facts,
        account: Option<&Account>,
        how: Expansion,
        targets: Vec<AliasTarget>,
    ) -> DeliveryStatus {
        let Expansion {
            run_as,
            class,
            unmatched,
            owner,
            name,
            depth: level,
        } = how;
        let mut addresses: Vec<MailAddress> = Vec::new();
        let mut own_mailbox = false;
        let mut last_text = String::new();
        let mut queue: Vec<(Class, AliasTarget, usize)> =
            targets.into_iter().map(|t| (class, t, 0)).collect();
        queue.reverse();
        let propagate = match class {
            Class::Alias => self.config.propagate_alias,
            _ => self.config.propagate_forward,
        };
        while let Some((class, target, depth)) = queue.pop() {
            match target {
                AliasTarget::Address(a) => {
                    let bare = a.trim().trim_start_matches('\\');
                    let self_name = bare.eq_ignore_ascii_case(&facts.local)
                        || bare.eq_ignore_ascii_case(&facts.user)
                        || bare.eq_ignore_ascii_case(&facts.recipient);
                    if self_name && class != Class::Alias {
                        own_mailbox = true;
                        continue;
                    }
                    if !bare.contains('@') && !bare.is_empty() {
                        // A local name: delivered here, one level down.
                        if level + 1 >= ALIAS_DEPTH {
                            return DeliveryStatus::Bounced(status(
                                "5.4.6",
                                format!("alias expansion loop for {}", facts.recipient),
                                &self.relay,
                            ));
                        }
                        let Some(address) = self.qualify_with(bare, &facts.domain) else {
                            continue;
                        };
                        let mut inner = rcpt.clone();
                        inner.address = address;
                        inner.original =
                            Some(rcpt.original.clone().unwrap_or(rcpt.address.clone()));
                        let from = (class == Class::Alias).then_some(name.as_str());
                        match self.steps(request, &inner, level + 1, from).await {
                            DeliveryStatus::Delivered(d) => last_text = d.text,
                            DeliveryStatus::Resubmit(r) => {
                                for a in r.recipients {
                                    if !addresses.contains(&a) {
                                        addresses.push(a);
                                    }
                                }
                            }
                            other => return other,
                        }
                        continue;
                    }
                    let Some(mut address) = self.qualify(bare) else {
                        continue;
                    };
                    if let (true, Some(ext)) = (propagate, &unmatched) {
                        address = with_extension(&address, &self.config.recipient_delimiter, ext);
                    }
                    if !addresses.contains(&address) {
                        addresses.push(address);
                    }
                }
                AliasTarget::File(path) => {
                    if !self.config.allow_files.allows(class) {
                        return DeliveryStatus::Bounced(status(
                            "5.7.1",
                            "mail to file is restricted",
                            &self.relay,
                        ));
                    }
                    let target = Target::from_path(PathBuf::from(&path), &path);
                    match self.write(request, rcpt, &target, run_as).await {
                        DeliveryStatus::Delivered(_) => {
                            last_text = format!("delivered to file: {path}")
                        }
                        other => return other,
                    }
                }
                AliasTarget::Command(cmd) => {
                    if !self.config.allow_commands.allows(class) {
                        return DeliveryStatus::Bounced(status(
                            "5.7.1",
                            "mail to command is restricted",
                            &self.relay,
                        ));
                    }
                    match self
                        .command(request, rcpt, facts, account, run_as, &cmd)
                        .await
                    {
                        DeliveryStatus::Delivered(d) => last_text = d.text,
                        other => return other,
                    }
                }
                AliasTarget::Include(path) => {
                    if depth >= INCLUDE_DEPTH {
                        return DeliveryStatus::Deferred(status(
                            "4.3.0",
                            format!(":include:{path}: nested too deeply"),
                            &self.relay,
                        ));
                    }
                    match read_limited(Path::new(&path)) {
                        Ok(Some(text)) => {
                            let mut more: Vec<_> = parse_forward(&text)
                                .into_iter()
                                .map(|t| (Class::Include, t, depth + 1))
                                .collect();
                            more.reverse();
                            queue.extend(more);
                        }
                        Ok(None) => {
                            return DeliveryStatus::Bounced(status(
                                "5.3.0",
                                format!(
                                    "cannot open include file {path}: No such file or directory"
                                ),
                                &self.relay,
                            ));
                        }
                        Err(e) => {
                            return DeliveryStatus::Deferred(status(
                                "4.3.0",
                                format!("cannot open include file {path}: {e}"),
                                &self.relay,
                            ));
                        }
                    }
                }
                // A kind of destination this agent does not know yet.
                _ => {}
            }
        }
        if own_mailbox && let Some(account) = account {
            match self.mailbox(request, rcpt, facts, account).await {
                DeliveryStatus::Delivered(d) => last_text = d.text,
                other => return other,
            }
        }
        if !addresses.is_empty() {
            let mut r = Resubmission::new(addresses);
            r.headers = vec![format!("Delivered-To: {}", delivered_to(&rcpt.address))];
            r.sender = owner.and_then(|o| {
                let domain = if facts.domain.is_empty() {
                    self.config.myorigin.clone()
                } else {
                    facts.domain.clone()
                };
                format!("{o}@{domain}")
                    .parse()
                    .ok()
                    .map(ReversePath::Mailbox)
            });
            return DeliveryStatus::Resubmit(r);
        }
        if last_text.is_empty() {
            // Nothing at all: an alias with only empty entries.
            return DeliveryStatus::Bounced(status(
                "5.3.0",
                format!(
                    "alias or .forward of \"{}\" has no destination",
                    facts.local
                ),
                &self.relay,
            ));
        }
        DeliveryStatus::Delivered(status("2.0.0", last_text, &self.relay))
    }

    /// The user's mailbox: `mailbox_command`, `home_mailbox` or the spool.
    async fn mailbox(
        &self,
        request: &DeliveryRequest,
        rcpt: &Recipient,
        facts: &Facts,
        account: &Account,
    ) -> DeliveryStatus {
        let run_as = self.config.as_root.then_some((account.uid, account.gid));
        if !self.config.mailbox_transport.is_empty() {
            let spec = self.config.mailbox_transport.clone();
            return self.hand_over(request, rcpt, facts, &spec).await;
        }
        if !self.config.mailbox_command.is_empty() {
            let cmd = match macros::expand(&self.config.mailbox_command, &|n| {
                self.macro_value(facts, Some(account), n)
            }) {
                Ok(c) => c,
                Err(e) => return self.config_error("mailbox_command", &e),
            };
            return self
                .command(request, rcpt, facts, Some(account), run_as, &cmd)
                .await;
        }
        let target = mailbox_target(&self.config, account);
        self.write(request, rcpt, &target, run_as).await
    }

    /// Writes the message into a maildir or mbox, durably.
    async fn write(
        &self,
        request: &DeliveryRequest,
        rcpt: &Recipient,
        target: &Target,
        run_as: Option<(u32, u32)>,
    ) -> DeliveryStatus {
        let c = &self.config;
        let options = StoreOptions {
            hostname: c.hostname.clone(),
            size_limit: c.mailbox_size_limit,
            locks: c.locks.clone(),
            lock_attempts: c.lock_attempts,
            lock_delay: c.lock_delay,
            stale_lock_time: c.stale_lock_time,
            owner: run_as.map(|(uid, gid)| Owner { uid, gid }),
            cancel: None,
        };
        let head = DeliveryHeaders::new(&request.envelope, rcpt).render();
        let sender = request.envelope.sender.clone();
        let content = Arc::clone(&request.content);
        let now = (self.clock)();
        let target = target.clone();
        let relay = self.relay.clone();
        let work = tokio::task::spawn_blocking(move || {
            let written = content
                .open()
                .map_err(MailboxError::Content)
                .and_then(|reader| store(&target, &head, &sender, reader, now, &options));
            match written {
                Ok(text) => DeliveryStatus::Delivered(status("2.0.0", text, &relay)),
                Err(e) => {
                    let detail = StatusDetail::new(
                        e.dsn(),
                        format!("cannot update {}: {e}", target.kind()),
                        relay.clone(),
                    );
                    if e.is_permanent() {
                        DeliveryStatus::Bounced(detail)
                    } else {
                        DeliveryStatus::Deferred(detail)
                    }
                }
            }
        });
        work.await.unwrap_or_else(|e| {
            DeliveryStatus::Deferred(status(
                "4.3.0",
                format!("delivery task failed: {e}"),
                &self.relay,
            ))
        })
    }

    /// Runs `cmd` through the shell with the message on its input.
    async fn command(
        &self,
        request: &DeliveryRequest,
        rcpt: &Recipient,
        facts: &Facts,
        account: Option<&Account>,
        run_as: Option<(u32, u32)>,
        cmd: &str,
    ) -> DeliveryStatus {
        let c = &self.config;
        let mut argv: Vec<String> = if c.command_shell.is_empty() {
            vec!["/bin/sh".into(), "-c".into()]
        } else {
            c.command_shell.clone()
        };
        argv.push(cmd.to_owned());
        let mut environment = vec![("PATH".to_owned(), "/usr/bin:/bin".to_owned())];
        environment.extend(c.environment.iter().cloned());
        if let Some(a) = account {
            environment.push(("HOME".into(), a.home.display().to_string()));
            environment.push(("USER".into(), a.name.clone()));
            environment.push(("LOGNAME".into(), a.name.clone()));
            environment.push(("SHELL".into(), a.shell.clone()));
        }
        for (name, value) in [
            ("LOCAL", facts.local.clone()),
            ("DOMAIN", facts.domain.clone()),
            ("RECIPIENT", facts.recipient.clone()),
            ("SENDER", facts.sender.clone()),
            ("ORIGINAL_RECIPIENT", facts.original.clone()),
        ] {
            environment.push((name.into(), value));
        }
        if let Some(e) = &facts.extension {
            environment.push(("EXTENSION".into(), e.clone()));
        }
        let directory = account
            .map(|a| a.home.clone())
            .filter(|h| h.is_dir())
            .unwrap_or_else(|| PathBuf::from("/"));
        let spec = CommandSpec {
            argv,
            environment,
            directory,
            run_as,
        };
        // local(8) gives commands a From_ line and the delivery headers.
        let from = match &request.envelope.sender {
            ReversePath::Null => "MAILER-DAEMON".to_owned(),
            ReversePath::Mailbox(a) => a.render(),
        };
        let mut head =
            format!("From {from}  {}\n", mta_core::date::ctime((self.clock)())).into_bytes();
        head.extend_from_slice(&DeliveryHeaders::new(&request.envelope, rcpt).render());
        let quoter = LineQuoter::new(PipeFlags::default(), b"\n".to_vec());
        let ran = command::run(&spec, head, quoter, &request.content, request.time_limit).await;
        command::status(
            &ran,
            &spec.argv[0],
            &self.relay,
            &format!("delivered to command: {cmd}"),
        )
    }
}

/// The mailbox file or maildir of `account`: `$home/$home_mailbox` (a
/// maildir when it ends in `/`), else the spool file named after the
/// account.
fn mailbox_target(config: &LocalConfig, account: &Account) -> Target {
    if config.home_mailbox.is_empty() {
        Target::Mbox(config.mail_spool_directory.join(&account.name))
    } else {
        let relative = config.home_mailbox.trim_start_matches('/');
        Target::from_path(account.home.join(relative), &config.home_mailbox)
    }
}

/// `address` with `+ext` added to its local part, unless it already has
/// an extension.
fn with_extension(address: &MailAddress, delimiter: &RecipientDelimiter, ext: &str) -> MailAddress {
    let local = address.local_part().as_str();
    let Some(d) = delimiter.delimiters().chars().next() else {
        return address.clone();
    };
    if delimiter.split(local).is_some() {
        return address.clone();
    }
    let text = match address.domain() {
        Some(domain) => format!("{local}{d}{ext}@{}", domain.as_str()),
        None => format!("{local}{d}{ext}"),
    };
    text.parse().unwrap_or_else(|_| address.clone())
}

/// A `.forward` or `:include:` file's text; `None` when it does not
/// exist. Larger than [`FILE_LIMIT`] is an error.
fn read_limited(path: &Path) -> std::io::Result<Option<String>> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    file.take(FILE_LIMIT + 1).read_to_string(&mut text)?;
    if text.len() as u64 > FILE_LIMIT {
        return Err(std::io::Error::other(format!(
            "larger than {FILE_LIMIT} bytes"
        )));
    }
    Ok(Some(text))
}

impl DeliveryAgent for LocalAgent {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_macros_with_conditionals() {
        let v = |n: &str| match n {
            "home" => Some("/home/joe".to_owned()),
            "extension" => Some(String::new()),
            "recipient_delimiter" => Some(String::new()),
            "user" => Some("joe".to_owned()),
            _ => None,
        };
        assert_eq!(
            macros::expand("$home/.forward${recipient_delimiter}${extension}", &v).unwrap(),
            "/home/joe/.forward"
        );
        assert_eq!(
            macros::expand("${extension?+$extension}x", &v).unwrap(),
            "x"
        );
        assert_eq!(
            macros::expand("${extension:none}-$user", &v).unwrap(),
            "none-joe"
        );
        assert_eq!(macros::expand("$$5", &v).unwrap(), "$5");
        assert!(macros::expand("${broken", &v).is_err());
    }

    #[test]
    fn home_mailbox_or_spool() {
        let config = |extra: &str| {
            let c = Config::parse(
                &format!("alias_maps =\nmail_spool_directory = /var/spool/mail\n{extra}"),
                "main.cf",
                mta_core::config::HostFacts::default(),
            )
            .unwrap();
            LocalConfig::from_config(
                &c,
                &Registry::new(mta_maps::registry::OpenContext::default()),
                "local",
            )
            .unwrap()
        };
        let joe = Account {
            name: "joe".into(),
            uid: 1000,
            gid: 1000,
            home: PathBuf::from("/home/joe"),
            shell: "/bin/sh".into(),
        };
        assert_eq!(
            mailbox_target(&config(""), &joe),
            Target::Mbox("/var/spool/mail/joe".into())
        );
        assert_eq!(
            mailbox_target(&config("home_mailbox = Maildir/\n"), &joe),
            Target::Maildir("/home/joe/Maildir/".into())
        );
        assert_eq!(
            mailbox_target(&config("home_mailbox = Mailbox\n"), &joe),
            Target::Mbox("/home/joe/Mailbox".into())
        );
    }

    #[test]
    fn extensions_propagate_once() {
        let d = RecipientDelimiter::new("+");
        let a: MailAddress = "joe@example.com".parse().unwrap();
        assert_eq!(
            with_extension(&a, &d, "lists").to_string(),
            "joe+lists@example.com"
        );
        let b: MailAddress = "joe+x@example.com".parse().unwrap();
        assert_eq!(with_extension(&b, &d, "lists"), b);
    }
}

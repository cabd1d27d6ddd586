//! `mtad`: a mail transfer agent configured like Postfix, wired from the
//! mta crates.
//!
//! One binary: `mtad -c DIR` runs the mail system in the foreground, and
//! Postfix's tools are subcommands (`mtad postconf ...`), or the binary
//! invoked through a link named after the tool (`postconf ...`).

mod control;
mod daemon;
mod host;
mod log;
mod master;
mod pidfile;
mod policy;
mod postcat;
mod postconf;
mod postmap;
mod postqueue;
mod postsuper;
mod qmgr;
mod qshape;
mod sendmail;
mod smtpd;
mod tls;
mod unsupported;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A fatal error: printed as `PROGRAM: fatal: MESSAGE`, exit status 1.
#[derive(Debug)]
pub(crate) struct Fatal(pub(crate) String);

/// The program name used in messages (`postconf`, `mtad`).
static PROGRAM: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn program() -> &'static str {
    PROGRAM.get().map_or("mtad", String::as_str)
}

/// Prints `PROGRAM: warning: MESSAGE` to standard error, as Postfix does.
pub(crate) fn warn(message: &str) {
    eprintln!("{}: warning: {message}", program());
}

/// The reason part of an I/O error, as Postfix prints `strerror`.
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "No such file or directory".to_string(),
        std::io::ErrorKind::PermissionDenied => "Permission denied".to_string(),
        _ => e.to_string(),
    }
}

/// The configuration directory: `-c DIR`, else `$MAIL_CONFIG`, else
/// `/etc/mta`; and whether it was named explicitly.
pub(crate) fn config_dir(flag: Option<PathBuf>) -> (PathBuf, bool) {
    if let Some(dir) = flag {
        return (dir, true);
    }
    match std::env::var_os("MAIL_CONFIG") {
        Some(dir) if !dir.is_empty() => (PathBuf::from(dir), true),
        _ => (PathBuf::from("/etc/mta"), false),
    }
}

/// mtad: a mail transfer agent configured like Postfix.
#[derive(Debug, Parser)]
#[command(name = "mtad", version, about)]
struct Cli {
    /// The configuration directory holding main.cf and master.cf
    /// (default: $MAIL_CONFIG, then /etc/mta).
    #[arg(short = 'c', global = true)]
    config_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate main.cf and master.cf: malformed lines, bad values and
    /// unreadable files (with file and line), unused parameters.
    Check,
    /// Whether the mail system runs (the pid file in data_directory).
    Status,
    /// Stop the running mail system gracefully, and wait until it has.
    Stop,
    /// Reread the configuration and tables without dropping connections
    /// (SIGHUP to the running daemon).
    Reload,
    /// Queue maintenance (postsuper(1)): `-d`, `-h`, `-H` a queue ID or ALL.
    #[command(disable_help_flag = true, allow_hyphen_values = true)]
    Postsuper {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The queue's shape by domain and age (qshape(1)).
    #[command(disable_help_flag = true, allow_hyphen_values = true)]
    Qshape {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The Sendmail-compatible command line (sendmail(1)).
    #[command(disable_help_flag = true, allow_hyphen_values = true)]
    Sendmail {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Postfix configuration utility (postconf(1)).
    #[command(disable_help_flag = true, allow_hyphen_values = true)]
    Postconf {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Postfix lookup table management (postmap(1)).
    #[command(disable_help_flag = true, allow_hyphen_values = true)]
    Postmap {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Postfix alias database maintenance (postalias(1)).
    #[command(disable_help_flag = true, allow_hyphen_values = true)]
    Postalias {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Show a queue file (postcat(1)): `-q ID`, `-e`, `-h`, `-b`.
    #[command(disable_help_flag = true, allow_hyphen_values = true)]
    Postcat {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The queue listing (postqueue(1) -p).
    #[command(disable_help_flag = true, allow_hyphen_values = true)]
    Postqueue {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The queue listing (mailq(1)).
    #[command(disable_help_flag = true, allow_hyphen_values = true)]
    Mailq {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Rebuild the alias_database tables (newaliases(1)).
    #[command(disable_help_flag = true, allow_hyphen_values = true)]
    Newaliases {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Print a password hash for the SASL password table, from the
    /// password on standard input (`-s SHA512-CRYPT|BLF-CRYPT|ARGON2ID`,
    /// default ARGON2ID), as `doveadm pw` does.
    #[command(disable_help_flag = true, allow_hyphen_values = true)]
    Saslpasswd {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// The Postfix tools mtad answers to, as a subcommand or through a link
/// with the tool's name.
const TOOLS: &[&str] = &[
    "postconf",
    "postmap",
    "postalias",
    "newaliases",
    "postcat",
    "postqueue",
    "mailq",
    "saslpasswd",
    "sendmail",
    "postsuper",
    "qshape",
];

/// Runs one tool with its own command line (`args[0]` is its name); the
/// exit status follows the tool's conventions (postmap -q: 1 when not
/// found).
fn run_tool(tool: &str, args: Vec<String>) -> Result<ExitCode, Fatal> {
    let usage = |e: clap::Error| {
        let _ = e.print();
        ExitCode::from(if e.use_stderr() { 1 } else { 0 })
    };
    match tool {
        "postconf" => match postconf::Args::try_parse_from(args) {
            Ok(args) => postconf::run(args).map(|out| {
                print!("{out}");
                ExitCode::SUCCESS
            }),
            Err(e) => Ok(usage(e)),
        },
        "postmap" | "postalias" => match postmap::Args::try_parse_from(args) {
            Ok(parsed) => {
                let which = if tool == "postmap" {
                    postmap::Tool::Postmap
                } else {
                    postmap::Tool::Postalias
                };
                postmap::run(parsed, which).map(|outcome| match outcome {
                    postmap::Outcome::Done => ExitCode::SUCCESS,
                    postmap::Outcome::NotFound => ExitCode::from(1),
                })
            }
            Err(e) => Ok(usage(e)),
        },
        "newaliases" => {
            // newaliases [-c DIR]: postalias over every alias_database table.
            let mut dir = None;
            let mut rest = args.iter().skip(1);
            while let Some(a) = rest.next() {
                match a.as_str() {
                    "-c" => dir = rest.next().map(PathBuf::from),
                    other if other.starts_with("-c") => dir = Some(PathBuf::from(&other[2..])),
                    _ => {}
                }
            }
            postmap::newaliases(dir).map(|()| ExitCode::SUCCESS)
        }
        "postcat" => postcat::run(&args).map(|()| ExitCode::SUCCESS),
        "saslpasswd" => saslpasswd(&args).map(|()| ExitCode::SUCCESS),
        "sendmail" => sendmail::run(&args),
        "postsuper" => postsuper::run(&args).map(|()| ExitCode::SUCCESS),
        "qshape" => qshape::run(&args).map(|()| ExitCode::SUCCESS),
        "postqueue" | "mailq" => postqueue::run(&args, tool == "mailq").map(|()| ExitCode::SUCCESS),
        _ => Err(Fatal(format!("unknown tool {tool}"))),
    }
}

fn main() -> ExitCode {
    let mut argv: Vec<String> = std::env::args().collect();
    let invoked_as = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Invoked through a link named after a Postfix tool: act as that tool.
    if TOOLS.contains(&invoked_as.as_str()) {
        argv.insert(1, invoked_as.clone());
    }
    let tool = argv.get(1).cloned().unwrap_or_default();
    let result = if TOOLS.contains(&tool.as_str()) {
        let _ = PROGRAM.set(tool.clone());
        let tool_args: Vec<String> = std::iter::once(tool.clone())
            .chain(argv[2..].iter().cloned())
            .collect();
        match run_tool(&tool, tool_args) {
            Ok(code) => return code,
            Err(e) => Err(e),
        }
    } else {
        let cli = Cli::parse();
        match cli.command {
            Some(
                Command::Postconf { .. }
                | Command::Postmap { .. }
                | Command::Postalias { .. }
                | Command::Postcat { .. }
                | Command::Postqueue { .. }
                | Command::Mailq { .. }
                | Command::Newaliases { .. }
                | Command::Saslpasswd { .. }
                | Command::Sendmail { .. }
                | Command::Postsuper { .. }
                | Command::Qshape { .. },
            ) => {
                unreachable!("tools are dispatched before the daemon's command line")
            }
            Some(Command::Check) => check_all(cli.config_dir),
            Some(Command::Status) => return control(pidfile::Control::Status, cli.config_dir),
            Some(Command::Stop) => return control(pidfile::Control::Stop, cli.config_dir),
            Some(Command::Reload) => return control(pidfile::Control::Reload, cli.config_dir),
            None => run_daemon(cli.config_dir),
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fatal(message)) => {
            eprintln!("{}: fatal: {message}", program());
            ExitCode::from(1)
        }
    }
}

/// `mtad status|stop|reload`, with Postfix's exit status.
fn control(which: pidfile::Control, dir: Option<PathBuf>) -> ExitCode {
    match pidfile::control(which, dir) {
        Ok(code) => code,
        Err(Fatal(message)) => {
            eprintln!("{}: fatal: {message}", program());
            ExitCode::from(1)
        }
    }
}

/// `mtad saslpasswd [-s SCHEME]`: the hash of the password on standard
/// input's first line, for the `smtpd_sasl_type = table` password table.
fn saslpasswd(args: &[String]) -> Result<(), Fatal> {
    use mta_smtp::sasl::{HashScheme, hash_password};
    let mut scheme = HashScheme::Argon2id;
    let mut rest = args.iter().skip(1);
    while let Some(a) = rest.next() {
        match a.as_str() {
            "-s" => {
                let name = rest.next().map(String::as_str).unwrap_or("");
                scheme = HashScheme::parse(name).ok_or_else(|| {
                    Fatal(format!(
                        "unknown scheme \"{name}\": use SHA512-CRYPT, BLF-CRYPT or ARGON2ID"
                    ))
                })?;
            }
            other => {
                return Err(Fatal(format!(
                    "usage: saslpasswd [-s SCHEME] < password (not {other})"
                )));
            }
        }
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Fatal(format!("read the password: {e}")))?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(Fatal("no password on standard input".into()));
    }
    println!("{}", hash_password(password, scheme).map_err(Fatal)?);
    Ok(())
}

/// `mtad check`: parse both files, validate every set parameter, print
/// warnings; exit 1 on any error.
pub(crate) fn check(flag: Option<PathBuf>) -> Result<postconf::Loaded, Fatal> {
    let (dir, explicit) = config_dir(flag);
    let mut loaded = postconf::load(&dir, explicit, "mtad")?;
    let config = &mut loaded.config;
    config.read_files(&|path| std::fs::read_to_string(path).map_err(|e| io_reason(&e)));
    for w in config.warnings() {
        warn(&w.to_string());
    }
    let mut errors: Vec<String> = config.validate().iter().map(ToString::to_string).collect();
    // Features mtad lacks are refused, not ignored; tables must open.
    let master_path = dir.join("master.cf").display().to_string();
    let master = loaded
        .master_text
        .as_deref()
        .and_then(|t| mta_core::config::master_cf::MasterCf::parse(t, &master_path).ok())
        .map(|(m, _)| m);
    errors.extend(unsupported::refusals(config, master.as_ref(), &master_path));
    let registry = mta_maps::registry::Registry::new(mta_maps::registry::OpenContext {
        config_directory: Some(dir.clone()),
        ..Default::default()
    });
    let (table_errors, table_warnings) = unsupported::table_problems(config, &registry);
    errors.extend(table_errors);
    for w in &table_warnings {
        warn(w);
    }
    for e in &errors {
        eprintln!("{}: error: {e}", program());
    }
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(Fatal(format!(
            "{} configuration error(s) in {}",
            errors.len(),
            dir.display()
        )))
    }
}

/// `mtad check`: the configuration checks, then, for every `smtpd`
/// service of `master.cf` (with its `-o` overrides), the restriction
/// lists and the relay-safety report: an open relay is an error, a
/// configuration whose safety depends on data is a warning that names
/// the rule.
fn check_all(flag: Option<PathBuf>) -> Result<(), Fatal> {
    let (dir, explicit) = config_dir(flag);
    let dir = std::fs::canonicalize(&dir)
        .map_err(|e| Fatal(format!("{}: {}", dir.display(), io_reason(&e))))?;
    let loaded = check(explicit.then(|| dir.clone()))?;
    let master_path = dir.join("master.cf").display().to_string();
    let master_text = loaded.master_text.clone().unwrap_or_default();
    let (master, _) = mta_core::config::master_cf::MasterCf::parse(&master_text, &master_path)
        .map_err(|e| Fatal(e.to_string()))?;
    let registry = mta_maps::registry::Registry::new(mta_maps::registry::OpenContext {
        config_directory: Some(dir.clone()),
        ..Default::default()
    });
    let mut errors = 0;
    for service in master.effective_services() {
        if service.command().program() != "smtpd" {
            continue;
        }
        let config = loaded.config.with_overrides(service.command().overrides());
        let at = format!(
            "{master_path}, line {}: service {}",
            service.line(),
            service.name()
        );
        match mta_restrictions::restriction::Restrictions::from_config(&config, &registry) {
            Err(e) => {
                eprintln!("{}: error: {at}: {e}", program());
                errors += 1;
            }
            Ok(restrictions) => {
                use mta_restrictions::relay::{RelaySafety, relay_safety};
                match relay_safety(&config, &restrictions) {
                    s @ RelaySafety::OpenRelay { .. } => {
                        eprintln!("{}: error: {at}: {s}", program());
                        errors += 1;
                    }
                    s @ RelaySafety::CannotProve { .. } => {
                        warn(&format!("{at}: {s}"));
                    }
                    s => eprintln!("{}: info: {at}: {s}", program()),
                }
            }
        }
    }
    if errors > 0 {
        return Err(Fatal(format!(
            "{errors} error(s) in the smtpd services of {master_path}"
        )));
    }
    Ok(())
}

/// `mtad -c DIR`: the mail system in the foreground. Today that is the
/// receiving half: every `master.cf` `inet` service running `smtpd`
/// listens, asks the restrictions, and queues accepted mail durably
/// through cleanup. The other services are listed as not started yet.
fn run_daemon(flag: Option<PathBuf>) -> Result<(), Fatal> {
    let (dir, explicit) = config_dir(flag.clone());
    // Absolute, so that paths built from ${config_directory} stay right
    // whatever the working directory of a service.
    let dir = std::fs::canonicalize(&dir)
        .map_err(|e| Fatal(format!("{}: {}", dir.display(), io_reason(&e))))?;
    let loaded = check(explicit.then(|| dir.clone()))?;
    let master_text = loaded.master_text.clone().unwrap_or_default();
    let master_path = dir.join("master.cf").display().to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Fatal(format!("start the runtime: {e}")))?;
    runtime.block_on(daemon::run(
        &dir,
        explicit,
        loaded.config,
        &master_text,
        &master_path,
    ))
}

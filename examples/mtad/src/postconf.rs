//! `mtad postconf`: Postfix's `postconf(1)` over mtad's configuration.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::Parser;
use mta_core::config::expand::ExpandWarning;
use mta_core::config::main_cf::MainCf;
use mta_core::config::{Config, ConfigWarning};

use crate::{Fatal, config_dir};

/// Postfix configuration utility.
#[derive(Debug, Parser)]
#[command(name = "postconf", disable_help_flag = true)]
pub(crate) struct Args {
    /// The configuration directory (default: $MAIL_CONFIG, then /etc/mta).
    #[arg(short = 'c')]
    config_dir: Option<PathBuf>,
    /// Print default values instead of the configured ones.
    #[arg(short = 'd')]
    defaults: bool,
    /// Print only parameters set in main.cf.
    #[arg(short = 'n')]
    non_default: bool,
    /// Expand $name references in the printed values.
    #[arg(short = 'x')]
    expand: bool,
    /// Fold long lines for human readability.
    #[arg(short = 'f')]
    fold: bool,
    /// Print values only, without "name = ".
    #[arg(short = 'h')]
    values_only: bool,
    /// Edit main.cf: each argument is name=value.
    #[arg(short = 'e')]
    edit: bool,
    /// Print master.cf services.
    #[arg(short = 'M')]
    master: bool,
    /// Print master.cf service fields as service/type/field = value.
    #[arg(short = 'F')]
    master_fields: bool,
    /// Print master.cf -o parameters as service/type/name = value.
    #[arg(short = 'P')]
    master_params: bool,
    /// List the supported lookup table types.
    #[arg(short = 'm')]
    table_types: bool,
    /// List the supported mailbox lock methods.
    #[arg(short = 'l')]
    lock_methods: bool,
    /// Print usage.
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Parameter names, or name=value with -e.
    args: Vec<String>,
}

/// The configuration as postconf sees it, with where it came from.
pub(crate) struct Loaded {
    pub(crate) config: Config,
    pub(crate) master_text: Option<String>,
}

/// Reads `DIR/main.cf` and `DIR/master.cf`. `explicit` says whether the
/// directory was named (-c or MAIL_CONFIG), which makes `config_directory`
/// count as set, as in Postfix.
pub(crate) fn load(dir: &Path, explicit: bool, process_name: &str) -> Result<Loaded, Fatal> {
    let mut config = load_main(dir, explicit, process_name)?;
    let master_path = dir.join("master.cf");
    let master_text = std::fs::read_to_string(&master_path).ok();
    if let Some(master) = &master_text {
        crate::master::declare_services(&mut config, master, &master_path.display().to_string())?;
    } else {
        crate::warn(&format!(
            "open {}: No such file or directory",
            master_path.display()
        ));
    }
    Ok(Loaded {
        config,
        master_text,
    })
}

/// Reads `DIR/main.cf` alone, for the tools that need no services
/// (`postmap`, `newaliases`).
pub(crate) fn load_main(dir: &Path, explicit: bool, process_name: &str) -> Result<Config, Fatal> {
    let main_path = dir.join("main.cf");
    let text = std::fs::read_to_string(&main_path).map_err(|e| {
        Fatal(format!(
            "open {}: {}",
            main_path.display(),
            crate::io_reason(&e)
        ))
    })?;
    let config = Config::parse(
        &text,
        &main_path.display().to_string(),
        crate::host::facts(process_name),
    )
    .map_err(|e| Fatal(e.to_string()))?;
    Ok(if explicit {
        config.with_overrides(&[("config_directory".to_string(), dir.display().to_string())])
    } else {
        config
    })
}

/// Collapses runs of white space to one space, as postconf prints values.
fn collapse(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The width `postconf -f` folds lines to; continuation lines start with
/// four spaces.
const FOLD_WIDTH: usize = 80;

fn print_line(out: &mut String, name: &str, value: &str, values_only: bool, fold: bool) {
    let value = collapse(value);
    if fold && !values_only {
        let mut line = format!("{name} =");
        for word in value.split(' ').filter(|w| !w.is_empty()) {
            if line.len() + 1 + word.len() > FOLD_WIDTH && !line.trim().is_empty() {
                out.push_str(&line);
                out.push('\n');
                line = format!("    {word}");
            } else {
                line.push(' ');
                line.push_str(word);
            }
        }
        out.push_str(&line);
        out.push('\n');
        return;
    }
    if values_only {
        out.push_str(&value);
    } else if value.is_empty() {
        out.push_str(name);
        out.push_str(" =");
    } else {
        out.push_str(name);
        out.push_str(" = ");
        out.push_str(&value);
    }
    out.push('\n');
}

/// Runs postconf; returns the text for standard output.
pub(crate) fn run(args: Args) -> Result<String, Fatal> {
    if args.table_types {
        return Ok(mta_maps_table_types());
    }
    if args.lock_methods {
        return Ok("fcntl\ndotlock\n".to_string());
    }
    let (dir, explicit) = config_dir(args.config_dir.clone());
    if args.edit {
        edit(&dir, &args.args)?;
        return Ok(String::new());
    }
    let loaded = load(&dir, explicit, "postconf")?;
    if args.master || args.master_fields || args.master_params {
        let master = loaded.master_text.as_deref().unwrap_or("");
        let path = dir.join("master.cf").display().to_string();
        return crate::master::render(
            master,
            &path,
            args.master,
            args.master_fields,
            args.master_params,
            args.fold,
        );
    }
    let config = &loaded.config;
    for w in config.warnings() {
        if !matches!(w, ConfigWarning::Unused { .. }) {
            crate::warn(&w.to_string());
        }
    }
    let view = if args.defaults {
        config.defaults_view()
    } else {
        config.clone()
    };
    let names: Vec<String> = if args.args.is_empty() {
        view.parameter_names()
            .into_iter()
            .filter(|n| !args.non_default || view.is_set(n))
            .collect()
    } else {
        args.args.clone()
    };
    let mut out = String::new();
    let mut undefined = BTreeSet::new();
    let user_defined = view.used_user_parameters();
    for name in &names {
        if !view.is_known(name) && !user_defined.contains(name) {
            crate::warn(&format!("{name}: unknown parameter"));
            continue;
        }
        let value = if args.expand {
            let mut warnings = Vec::new();
            let value = view
                .expanded_with_warnings(name, &mut warnings)
                .map_err(|e| {
                    crate::warn(&e.to_string());
                    Fatal("macro processing error".to_string())
                })?;
            for w in warnings {
                if let ExpandWarning::Undefined(n) = w {
                    undefined.insert(n);
                }
            }
            value
        } else if args.defaults {
            view.default_raw(name).unwrap_or_default()
        } else {
            view.raw(name).unwrap_or_default()
        };
        print_line(&mut out, name, &value, args.values_only, args.fold);
    }
    for name in undefined {
        crate::warn(&format!(
            "{}: undefined parameter: {name}",
            config.main_cf().path()
        ));
    }
    for w in config.warnings() {
        if matches!(w, ConfigWarning::Unused { .. }) {
            crate::warn(&w.to_string());
        }
    }
    Ok(out)
}

/// The table types mta-maps can open, one per line.
fn mta_maps_table_types() -> String {
    let registry = mta_maps::registry::Registry::new(mta_maps::registry::OpenContext::default());
    registry.types().iter().map(|t| format!("{t}\n")).collect()
}

/// `postconf -e name=value ...`: edits main.cf in place, keeping comments
/// and order, through a temporary file renamed over the original.
fn edit(dir: &Path, assignments: &[String]) -> Result<(), Fatal> {
    let path = dir.join("main.cf");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(Fatal(format!(
                "open {}: {}",
                path.display(),
                crate::io_reason(&e)
            )));
        }
    };
    let (mut main, _) =
        MainCf::parse(&text, &path.display().to_string()).map_err(|e| Fatal(e.to_string()))?;
    for a in assignments {
        let Some((name, value)) = a.split_once('=') else {
            return Err(Fatal(format!("missing '=' after attribute name: \"{a}\"")));
        };
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(Fatal(format!("missing attribute name: \"{a}\"")));
        }
        main.set(name, value.trim());
    }
    let tmp = dir.join("main.cf.tmp");
    std::fs::write(&tmp, main.to_text())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| {
            Fatal(format!(
                "write {}: {}",
                path.display(),
                crate::io_reason(&e)
            ))
        })
}

//! `faced user`: manage web console accounts in the faced database. Works while the daemon
//! runs (SQLite WAL); a password change or removal signs the user out of the running daemon at
//! once, because the daemon reads the session and token rows on every request.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use faced::audit::{Action as Did, By, Subject};
use faced::web::auth::{AuthStore, Role, Scope, SessionLimits};

/// Manage web console users: add, list, remove, change password. Passwords are read from
/// standard input (one line), or prompted for twice without echo on a terminal.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Configuration file (for `gallery.db`).
    #[arg(long, short, default_value = faced::config::DEFAULT_PATH, env = "FACED_CONFIG")]
    config: PathBuf,
    /// Database file; overrides `gallery.db` from the configuration.
    #[arg(long)]
    db: Option<PathBuf>,
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Add a user (a viewer unless --admin).
    Add {
        /// Login name (letters, digits, . _ - @).
        name: String,
        /// Give the user the admin role (everything) instead of viewer (live, events, reports).
        #[arg(long)]
        admin: bool,
    },
    /// List users.
    List,
    /// Remove a user, their sessions and API tokens.
    Remove {
        /// Login name.
        name: String,
    },
    /// Set a user's password (signs them out everywhere and revokes their API tokens).
    Passwd {
        /// Login name.
        name: String,
    },
    /// Create an API token owned by a user and print it on standard output (shown once; only
    /// its SHA-256 is stored). With --metrics it may only read GET /metrics: the credential to
    /// give a Prometheus server (docs/metrics.md).
    Token {
        /// Login name of the token's owner (it acts with their role, within its scope).
        name: String,
        /// What the token is for, e.g. "prometheus".
        #[arg(long)]
        label: String,
        /// Scope `metrics`: GET /metrics only, nothing else.
        #[arg(long)]
        metrics: bool,
        /// Store the token read from standard input (one line, as printed by `faced user
        /// token` on another unit) instead of making one: one Prometheus token for a site.
        #[arg(long)]
        stdin: bool,
    },
}

fn read_password(prompt_for: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_string());
    }
    let first = prompt(&format!("Password for {prompt_for}: "))?;
    let second = prompt("Repeat it: ")?;
    if first != second {
        anyhow::bail!(faced::Error::invalid(
            "the two passwords differ; nothing changed"
        ));
    }
    Ok(first)
}

/// Reads a line from the terminal with echo off.
fn prompt(text: &str) -> anyhow::Result<String> {
    eprint!("{text}");
    std::io::stderr().flush().ok();
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios calls on stdin with a zeroed, then filled, struct.
    let mut old: libc::termios = unsafe { std::mem::zeroed() };
    let have_tty = unsafe { libc::tcgetattr(fd, &mut old) } == 0;
    if have_tty {
        let mut new = old;
        new.c_lflag &= !libc::ECHO;
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &new) };
    }
    let mut line = String::new();
    let res = std::io::stdin().lock().read_line(&mut line);
    if have_tty {
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &old) };
    }
    eprintln!();
    res.context("cannot read the password")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (db, key) = match args.db {
        Some(db) => (db, None),
        None => {
            let g = faced::config::Config::load_or_default(&args.config)?
                .0
                .raw
                .gallery;
            (g.db, g.key_path)
        }
    };
    // Through the gallery, which creates the database and its key on a first `user add`: the
    // audit trail's keys derive from it. Changes only: listing needs no key.
    let audit = || -> anyhow::Result<_> {
        let opts = faced::gallery::GalleryOptions {
            key_path: key.clone(),
            ..Default::default()
        };
        Ok(faced::gallery::Gallery::open(&db, &opts)?.audit())
    };
    let by = By::cli();
    // The session limits do not matter here: no session is checked.
    let hour = Duration::from_secs(3600);
    let store = AuthStore::open(
        &db,
        SessionLimits {
            idle: hour,
            max_age: hour,
        },
    )?;
    match args.action {
        Action::Add { name, admin } => {
            let role = if admin { Role::Admin } else { Role::Viewer };
            let pw = read_password(&name)?;
            let audit = audit()?;
            let u = store.add_user(&name, role, &pw)?;
            let subject = Subject::user(Some(u.id), &u.name);
            let detail = format!("role {}", u.role.as_str());
            audit.note(&by, Did::UserAdded, subject, detail);
            println!(
                "added {} user {:?} to {}",
                u.role.as_str(),
                u.name,
                db.display()
            );
        }
        Action::List => {
            for u in store.users()? {
                println!(
                    "{}\t{}\t{}",
                    u.name,
                    u.role.as_str(),
                    faced::events::rfc3339_utc(u.created_at_ms)
                );
            }
        }
        Action::Remove { name } => {
            let u = store
                .user_by_name(&name)?
                .ok_or_else(|| faced::Error::not_found(format!("no user named {name:?}")))?;
            let audit = audit()?;
            store.remove_user(u.id)?;
            audit.note(
                &by,
                Did::UserRemoved,
                Subject::user(Some(u.id), &u.name),
                "",
            );
            println!("removed user {:?}", u.name);
        }
        Action::Passwd { name } => {
            let pw = read_password(&name)?;
            let audit = audit()?;
            let (sessions, tokens) = store.set_password(&name, &pw)?;
            let id = store.user_by_name(&name)?.map(|u| u.id);
            let detail = format!("{sessions} sessions ended, {tokens} tokens revoked");
            audit.note(&by, Did::PasswordChanged, Subject::user(id, &name), detail);
            println!(
                "password of {name:?} changed; signed out {sessions} session(s) and revoked \
                 {tokens} API token(s)"
            );
        }
        Action::Token {
            name,
            label,
            metrics,
            stdin,
        } => {
            let u = store
                .user_by_name(&name)?
                .ok_or_else(|| faced::Error::not_found(format!("no user named {name:?}")))?;
            let scope = if metrics { Scope::Metrics } else { Scope::All };
            let info = if stdin {
                let mut line = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .context("cannot read the token from standard input")?;
                store.import_token(u.id, &label, scope, line.trim())?
            } else {
                let (info, secret) = store.create_token(u.id, &label, scope)?;
                // The secret alone on standard output, so a script can write it to a file.
                println!("{secret}");
                info
            };
            eprintln!(
                "stored API token {} ({:?}, owner {:?}, scope {}){}",
                info.id,
                info.label,
                info.user,
                scope.as_str(),
                if stdin { "" } else { "; it is shown only now" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! `faced fleet`: make this unit the first of a site, or join it to one (docs/fleet.md).
//!
//! Only writes the site key file (and, for `invite`/`join` with a one-time code, talks to the
//! broker of `[mqtt]`); the daemon replicates once `[fleet] enabled = true` (and `[mqtt]`) are
//! in its configuration and it is restarted.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use faced::audit::{Action, By, Log, Subject};
use faced::base::RealClocks;
use faced::fleet::SiteKey;
use faced::fleet::invite::{self, InviteCode};

/// Share the gallery with other units: create the site key (`init`), hand it to a new unit
/// with a one-time code (`invite` here, `join CODE` there), show the key itself as a code
/// (`code`, for `join` without a broker), or shut a lost unit out (`rotate` here, then
/// `invite` here and `join --replace CODE` on every unit to keep).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file (for `gallery.db`, `fleet.key_path` and, with one-time codes,
    /// `[mqtt]`).
    #[arg(long, short, env = "FACED_CONFIG")]
    config: Option<PathBuf>,
    /// The site key file (default: `fleet.key_path`, else `<gallery.db>.fleet.key`).
    #[arg(long)]
    key: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Create a new site key on the site's first unit.
    Init,
    /// Print a one-time code for a new unit and wait until it has fetched the site key through
    /// the broker (or the code expires).
    Invite {
        /// How long the code is valid, in minutes (1 to 60).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=60))]
        minutes: u64,
    },
    /// Install the site key: from a one-time code (`faced-join-…`, fetched through the broker
    /// of `[mqtt]`) or from the site key code (`faced-site-…`, printed by `code`).
    Join {
        /// The code.
        code: String,
        /// With a one-time code: how long to wait for the inviting unit, in seconds.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=600))]
        wait: u64,
        /// Replace the site key this unit holds (after `faced fleet rotate` on another unit);
        /// the replaced key is kept as `<key>.retired-<site>`.
        #[arg(long)]
        replace: bool,
    },
    /// Replace the site key with a new one: a new site that units left without it (a lost or
    /// stolen one) can neither read nor change. Then give it to every unit to keep (`invite`
    /// here, `join --replace CODE` there) and restart faced on each.
    Rotate,
    /// Print the site key itself as a code (for `join` on a unit that cannot reach the broker
    /// yet); prefer `invite`, whose code is worthless after one use.
    Code,
}

/// Runs `faced fleet`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let load = || super::run::load_config(args.config.as_deref());
    let path = match &args.key {
        Some(k) => k.clone(),
        None => {
            let cfg = load()?;
            cfg.raw.fleet.key_path(&cfg.raw.gallery.db)
        }
    };
    // The broker of `[mqtt]` and this unit's client id, for the one-time code's exchange.
    let broker = |suffix: &str| -> anyhow::Result<_> {
        let cfg = load()?;
        let id = format!(
            "{}-{suffix}",
            cfg.raw.mqtt.effective_client_id(&cfg.raw.device.id)
        );
        Ok((cfg.raw.mqtt, id))
    };
    let note = |action, site: &str, detail: String| record(&load, action, site, detail);
    match args.cmd {
        Cmd::Init => {
            let key = SiteKey::create(&path)?;
            note(
                Action::FleetInit,
                key.site(),
                format!("key {}", path.display()),
            );
            println!("# site key created: {}", path.display());
            println!("# site: {}", key.site());
            println!(
                "# next: `faced fleet invite` here gives a one-time code for each new unit; then\n\
                 # set `[fleet] enabled = true` (with [mqtt] on the site's broker) and restart faced."
            );
        }
        Cmd::Invite { minutes } => {
            let key = SiteKey::load(&path)?;
            let code = InviteCode::generate()?;
            let (mqtt, client_id) = broker("invite")?;
            let done = invite::invite(
                &key,
                &code,
                &mqtt,
                client_id,
                Duration::from_secs(minutes * 60),
                || {
                    println!("# site: {}", key.site());
                    println!(
                        "# one-time code, valid for {minutes} min; on the new unit run\n\
                         # `faced fleet join CODE` (its [mqtt] on this site's broker):"
                    );
                    println!("{code}");
                },
            )?;
            println!("# site key handed over: the code is used up");
            note(
                Action::FleetInvite,
                key.site(),
                "the key was handed over".into(),
            );
            if done.refused > 0 {
                println!(
                    "# {} request(s) made without this code were refused",
                    done.refused
                );
            }
        }
        Cmd::Join {
            code,
            wait,
            replace,
        } => {
            let install = |key| -> faced::Result<SiteKey> {
                if !replace {
                    return SiteKey::install(&path, key);
                }
                let (old, new) = SiteKey::replace(&path, key)?;
                if let Some(old) = old {
                    println!(
                        "# replaced the key of site {}, kept as {}.retired-{}",
                        old.site(),
                        path.display(),
                        old.site()
                    );
                }
                Ok(new)
            };
            let key = if InviteCode::is_invite(&code) {
                let code = InviteCode::parse(&code)?;
                // A code works once: do not spend it on a unit that cannot take the key.
                if let Some(old) = SiteKey::load(&path).ok().filter(|_| !replace) {
                    return Err(faced::Error::new(
                        faced::Kind::Conflict,
                        format!(
                            "{} already holds the key of site {}; add --replace to leave that \
                             site for the inviting unit's",
                            path.display(),
                            old.site()
                        ),
                    )
                    .into());
                }
                let (mqtt, client_id) = broker("join")?;
                let key = invite::fetch(&code, &mqtt, client_id, Duration::from_secs(wait))?;
                install(key)?
            } else {
                install(SiteKey::parse_code(&code)?)?
            };
            println!("# site key installed: {}", path.display());
            let how = if replace {
                "replacing the key held"
            } else {
                "first key"
            };
            note(Action::FleetJoin, key.site(), how.into());
            println!("# site: {}", key.site());
            println!(
                "# next: set `[fleet] enabled = true` (with [mqtt] on the site's broker) and \
                 restart faced."
            );
        }
        Cmd::Rotate => {
            let (old, new) = SiteKey::rotate(&path)?;
            note(
                Action::FleetRotate,
                new.site(),
                format!("was site {}", old.site()),
            );
            println!("# new site key: {}", path.display());
            println!("# site: {} (was {})", new.site(), old.site());
            println!(
                "# the old key is kept as {}.retired-{}; units that still hold it (the one you\n\
                 # shut out) no longer see this unit's changes, nor this unit theirs.\n\
                 # next, for every unit to keep: `faced fleet invite` here, `faced fleet join\n\
                 # --replace CODE` there; then restart faced here and on each of them.\n\
                 # The broker still holds the old site's sealed records; to remove them:\n\
                 #   mosquitto_sub -h BROKER -t 'faced/fleet/{}/#' --remove-retained --retained-only",
                path.display(),
                old.site(),
                old.site()
            );
        }
        Cmd::Code => {
            let key = SiteKey::load(&path)?;
            note(Action::FleetCode, key.site(), "the site key printed".into());
            println!("# site key read: {}", path.display());
            println!("# site: {}", key.site());
            println!(
                "# the site key itself: whoever has it can read and change the site's gallery.\n\
                 # On a new unit: `faced fleet join CODE`. Prefer `faced fleet invite`."
            );
            println!("{}", key.code());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Records `action` on the site `site` in the audit trail of this unit's database, when it has
/// one with its key yet (a unit may join its site before faced first ran).
fn record(
    load: &dyn Fn() -> anyhow::Result<faced::config::Config>,
    action: Action,
    site: &str,
    detail: String,
) {
    let recorded = load().ok().and_then(|cfg| {
        let g = cfg.raw.gallery;
        let key = g.key_path.clone().unwrap_or_else(|| {
            let mut p = g.db.as_os_str().to_owned();
            p.push(".key");
            PathBuf::from(p)
        });
        Log::open(&g.db, &key, Arc::new(RealClocks)).ok()
    });
    match recorded {
        Some(log) => log.note(&By::cli(), action, Subject::fleet(site), detail),
        None => eprintln!("faced: note: not recorded in an audit trail (no database here yet)"),
    }
}

//! `faced fleet`: make this unit the first of a site, or join it to one (docs/fleet.md).
//!
//! Only writes the site key file; the daemon replicates once `[fleet] enabled = true` (and
//! `[mqtt]`) are in its configuration and it is restarted.

use std::path::PathBuf;
use std::process::ExitCode;

use faced::fleet::SiteKey;

/// Share the gallery with other units: create the site key (`init`), install it from a join
/// code (`join`), or show this unit's join code again (`code`).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file (for `gallery.db` and `fleet.key_path`).
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
    /// Create a new site key on the site's first unit and print its join code.
    Init,
    /// Install the site key from a join code printed by `init` or `code` on a unit of the site.
    Join {
        /// The join code (`faced-site-…`).
        code: String,
    },
    /// Print this unit's join code again.
    Code,
}

/// Runs `faced fleet`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = match args.key {
        Some(k) => k,
        None => {
            let cfg = super::run::load_config(args.config.as_deref())?;
            cfg.raw.fleet.key_path(&cfg.raw.gallery.db)
        }
    };
    let (key, verb) = match &args.cmd {
        Cmd::Init => (SiteKey::create(&path)?, "created"),
        Cmd::Join { code } => (SiteKey::join(&path, code)?, "installed"),
        Cmd::Code => (SiteKey::load(&path)?, "read"),
    };
    println!("# site key {verb}: {}", path.display());
    println!("# site: {}", key.site());
    println!(
        "# join code: the site key itself. Give it only to whoever sets up this site's units;\n\
         # on each of them run `faced fleet join CODE`, then set `[fleet] enabled = true` (with\n\
         # [mqtt] on the site's broker) and restart faced."
    );
    println!("{}", key.code());
    Ok(ExitCode::SUCCESS)
}

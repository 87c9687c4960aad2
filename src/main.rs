//! The `faced` binary: one clap enum of subcommands, each a module under `src/cmd/` with its own
//! `Args` (whose doc comment is its help text) and a `run(args) -> Result<ExitCode>`. The daemon
//! is just `faced run`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// faced: edge face recognition — camera → LiteRT models → SQLite gallery → MQTT and web console.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Analyze(cmd::analyze::Args),
    Enroll(cmd::enroll::Args),
    Identify(cmd::identify::Args),
    People(cmd::people::Args),
    Run(cmd::run::Args),
    CheckConfig(cmd::check_config::Args),
    Bench(cmd::bench::Args),
    User(cmd::user::Args),
    Backup(cmd::backup::BackupArgs),
    Restore(cmd::backup::RestoreArgs),
    Fleet(cmd::fleet::Args),
    Audit(cmd::audit::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cmd::init_logging();
    let result = match cli.command {
        Command::Analyze(a) => cmd::analyze::run(a),
        Command::Enroll(a) => cmd::enroll::run(a),
        Command::Identify(a) => cmd::identify::run(a),
        Command::People(a) => cmd::people::run(a),
        Command::Run(a) => cmd::run::run(a),
        Command::CheckConfig(a) => cmd::check_config::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::User(a) => cmd::user::run(a),
        Command::Backup(a) => cmd::backup::backup(a),
        Command::Restore(a) => cmd::backup::restore(a),
        Command::Fleet(a) => cmd::fleet::run(a),
        Command::Audit(a) => cmd::audit::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("faced: error: {e:#}");
            ExitCode::from(cmd::exit_code(&e))
        }
    }
}

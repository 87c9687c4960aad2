//! `faced bench` (being written).

/// Not yet implemented.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs the command.
pub fn run(_args: Args) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("faced bench is not implemented yet")
}

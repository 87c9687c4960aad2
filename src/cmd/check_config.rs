//! `faced check-config`: validate the configuration (file + `FACED_*` overrides) without
//! running, and print the effective configuration (secrets redacted) on stdout.

use std::path::PathBuf;
use std::process::ExitCode;

/// Validate faced.toml and print the effective configuration.
///
/// Reads the file (default /etc/faced/faced.toml; when that is absent, the built-in default),
/// applies FACED_<SECTION>__<KEY> environment overrides, checks every key, and prints the result
/// as TOML with every default filled in. On error it names the file, the key and the reason and
/// exits with status 2. With --deep it also checks that the models and the LiteRT runtime load.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Configuration file.
    #[arg(long, short, env = "FACED_CONFIG")]
    pub config: Option<PathBuf>,
    /// Camera source override, as `faced run --source`.
    #[arg(long)]
    pub source: Option<String>,
    /// Also load the models (checksums, runtime library) as `faced run` would.
    #[arg(long)]
    pub deep: bool,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut cfg = super::run::load_config(args.config.as_deref())?;
    if let Some(s) = &args.source {
        cfg.override_source(s)?;
    }
    // Config::validate checked every section; what is left is what this binary can do.
    let gpio = &cfg.raw.gpio;
    if gpio.enabled
        && !faced::gpio::backends()
            .iter()
            .any(|(name, _)| *name == backend_name(gpio.backend))
    {
        return Err(faced::Error::precondition(format!(
            "gpio.backend = \"{}\" is not built into this faced (built: {}); use the arm64 \
             package or `--features gpio`, or gpio.backend = \"fake\" to try the configuration",
            backend_name(gpio.backend),
            gpio_backends()
        ))
        .into());
    }
    for cam in &cfg.cameras {
        faced::capture::check_compiled(cam)?;
    }
    if args.deep {
        for cam in &cfg.cameras {
            faced::vision::Analyzer::open(&cfg.raw.inference, cam.settings.detector)?;
        }
    }
    let from = match &cfg.path {
        Some(p) => p.display().to_string(),
        None => "the built-in default (no config file)".into(),
    };
    println!("# faced check-config: OK");
    println!("# from: {from}");
    if !cfg.env_applied.is_empty() {
        println!("# environment overrides: {}", cfg.env_applied.join(", "));
    }
    println!(
        "# capture backends in this build: {}",
        faced::capture::compiled_backends().join(", ")
    );
    println!("# gpio backends in this build: {}", gpio_backends());
    for c in &cfg.cameras {
        println!("# camera {}: {}", c.name(), c.source);
    }
    let precision = cfg.raw.inference.precision;
    let choice = precision.choice();
    println!(
        "# inference precision: {} (inference.precision = \"{}\": {})",
        choice.precision.as_str(),
        precision.as_str(),
        choice.reason
    );
    if args.deep {
        println!("# models and runtime: loaded");
    }
    println!();
    print!("{}", cfg.to_toml_redacted());
    Ok(ExitCode::SUCCESS)
}

fn backend_name(b: faced::gpio::BackendKind) -> &'static str {
    match b {
        faced::gpio::BackendKind::Rppal => "rppal",
        faced::gpio::BackendKind::Fake => "fake",
    }
}

fn gpio_backends() -> String {
    faced::gpio::backends()
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

//! The program behind `wombat-conformance` and `wombat conformance`: runs
//! the Control Plane Contract v1 checks against `CONTROL_PLANE_URL`, prints
//! one line per check, writes `conformance.json` and `junit.xml`, and exits
//! 1 if any check failed (64 on bad configuration).
//!
//! This is binary glue; the checks are the `wombat-conformance` library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use wombat_conformance::{AuthInput, ConformanceConfig};
use wombat_controlplane::{JwtAlgorithm, JwtConfig};

/// Exit code for invalid configuration (EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

/// Command-line flags (most also readable from an environment variable).
#[derive(Parser)]
#[command(
    name = "wombat-conformance",
    version,
    about = "Control Plane Contract v1 conformance runner",
    long_about = None
)]
pub struct Cli {
    /// Base URL of the backend under test.
    #[arg(long, env = "CONTROL_PLANE_URL")]
    url: Option<String>,
    /// A ready agent token (isolation and expiry checks are then skipped).
    #[arg(long, env = "AGENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Shared secret: the runner mints tokens for two tenants.
    #[arg(long, env = "AGENT_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// HS256, HS384 or HS512.
    #[arg(long, env = "AGENT_JWT_ALGORITHM", default_value = "HS256")]
    jwt_algorithm: String,
    /// Internal token, to probe an advertised dispatch feature.
    #[arg(long, env = "INTERNAL_TOKEN", hide_env_values = true)]
    internal_token: Option<String>,
    /// Where conformance.json and junit.xml are written.
    #[arg(
        long,
        env = "CONFORMANCE_REPORT_DIR",
        default_value = "./conformance-results"
    )]
    report_dir: PathBuf,
    /// Timeout of each request, in seconds.
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
}

/// Parses the process arguments and runs (the binary's `main`).
pub fn main_entry() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    run(cli)
}

/// Runs the checks for parsed flags, prints the summary and writes the
/// reports. Exit code 0 when every check passed, 1 on a failed check or an
/// unwritable report, 64 on bad configuration.
pub fn run(cli: Cli) -> ExitCode {
    let (config, report_dir) = match validate(cli) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = match runtime.block_on(wombat_conformance::run(&config)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    println!("{}", report.console_summary());
    if let Err(e) = report.write(&report_dir) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    println!("reports written to {}", report_dir.display());
    if report.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn validate(cli: Cli) -> Result<(ConformanceConfig, PathBuf)> {
    let url = cli
        .url
        .filter(|u| !u.is_empty())
        .context("CONTROL_PLANE_URL is required")?;
    let auth = match (
        cli.jwt_secret.filter(|s| !s.is_empty()),
        cli.token.filter(|t| !t.is_empty()),
    ) {
        (Some(secret), _) => {
            let algorithm: JwtAlgorithm = cli
                .jwt_algorithm
                .parse()
                .context("invalid AGENT_JWT_ALGORITHM")?;
            AuthInput::Secret(
                JwtConfig::new(secret, algorithm).context("invalid AGENT_JWT_SECRET")?,
            )
        }
        (None, Some(token)) => AuthInput::Token(token),
        (None, None) => bail!("set AGENT_JWT_SECRET (preferred) or AGENT_TOKEN"),
    };
    let mut config = ConformanceConfig::new(url, auth);
    config.internal_token = cli.internal_token.filter(|t| !t.is_empty());
    config.request_timeout = Duration::from_secs(cli.timeout_secs.max(1));
    Ok((config, cli.report_dir))
}

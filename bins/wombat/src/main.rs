//! `wombat`: one command over the same library entry points as the dedicated
//! binaries — `serve` (wombat-server), `dispatcher` (wombat-dispatcher),
//! `heartbeat` / `standup` (wombat-heartbeat), `conformance`
//! (wombat-conformance) and `mc-lite` (wombat-mc-lite).
//!
//! A `.env` file in the working directory is loaded first (it never
//! overrides variables already set), so every subcommand sees it. Exit code
//! 64 means invalid usage or configuration.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wombat_heartbeat::Mode;

/// Exit code for invalid usage or configuration.
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "wombat",
    version,
    about = "Wombat: the agent daemon and its companion tools",
    after_help = "A .env file in the working directory is read first. Run `wombat <command> --help` for each command's flags and environment variables."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the agent HTTP API), like `wombat-server`.
    #[command(after_help = wombat_server::ENV_HELP)]
    Serve,
    /// Deliver queued notifications to the daemon, like `wombat-dispatcher`.
    #[command(after_help = wombat_dispatcher::ENV_HELP)]
    Dispatcher(wombat_dispatcher::Args),
    /// Post a heartbeat as USER_ID's agent, like `wombat-heartbeat`.
    #[command(after_help = wombat_heartbeat::ENV_HELP)]
    Heartbeat,
    /// Post a standup as USER_ID's agent, like `wombat-heartbeat standup`.
    #[command(after_help = wombat_heartbeat::ENV_HELP)]
    Standup,
    /// Check a backend against the Control Plane Contract v1, like
    /// `wombat-conformance`.
    #[command(long_about = None)]
    Conformance(wombat_conformance_bin::Cli),
    /// Run the reference Mission Control backend, like `wombat-mc-lite`.
    #[command(long_about = None)]
    McLite(wombat_mc_lite_bin::Cli),
}

fn main() -> ExitCode {
    // Loaded before parsing so flags with an env fallback see `.env` too.
    if let Err(e) = dotenvy::dotenv()
        && !e.not_found()
    {
        eprintln!("wombat: invalid .env file: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Serve => serve(),
        Command::Dispatcher(args) => wombat_dispatcher::main_entry("wombat dispatcher", &args),
        Command::Heartbeat => wombat_heartbeat::main_entry("wombat heartbeat", Mode::Heartbeat),
        Command::Standup => wombat_heartbeat::main_entry("wombat standup", Mode::Standup),
        Command::Conformance(cli) => wombat_conformance_bin::run(cli),
        Command::McLite(cli) => wombat_mc_lite_bin::run(cli),
    }
}

/// `wombat serve`: the same steps as the `wombat-server` binary.
fn serve() -> ExitCode {
    let settings = match wombat_server::load_settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wombat serve: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    let telemetry = wombat_server::init_tracing(&settings);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wombat serve: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime
        .block_on(async { wombat_server::run(settings, wombat_server::shutdown_signal()).await })
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wombat serve: {e}");
            ExitCode::from(e.exit_code())
        }
    };
    // Outside the runtime: exports the spans still queued.
    telemetry.shutdown();
    code
}

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

/// Variables of `wombat serve`, with defaults (see `.env.example`).
const SERVE_ENV_HELP: &str = "\
Environment (also read from .env and wombat.toml; the environment wins):
  WOMBAT_HOST [0.0.0.0], WOMBAT_PORT [8081]
  BACKEND_URL                 Mission Control URL; unset = embedded reference backend
  WOMBAT_EMBEDDED_BACKEND     [true] start the embedded backend when BACKEND_URL is unset
  MC_LITE_PORT [9001], MC_LITE_DB [<WOMBAT_DATA_DIR>/mc-lite.db], WOMBAT_DATA_DIR [./.wombat-data]
  AGENT_DAEMON_API_KEY        required X-Agent-Daemon-Key when set
  AGENT_JWT_SECRET, AGENT_JWT_ALGORITHM [HS256]
  INTERNAL_TOKEN              dispatch token of the embedded backend
  LLM_PROVIDER [openai], LLM_MODEL_DEFAULT|CHEAP|BEST|FALLBACK (legacy OPENAI_MODEL_*)
  OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY/GOOGLE_API_KEY, XAI_API_KEY,
  GROQ_API_KEY, MISTRAL_API_KEY, OPENROUTER_API_KEY, <PROVIDER>_BASE_URL
  WOMBAT_WORKSPACE [./workspace], WOMBAT_DEFAULT_TASK
  WOMBAT_RETRY_ATTEMPTS [3], WOMBAT_RETRY_DELAY_MS [1000], WOMBAT_RETRY_MAX_DELAY_MS [30000],
  WOMBAT_RETRY_JITTER [0.1]
  WOMBAT_CONTEXT_WARNING_THRESHOLD [75], WOMBAT_DEFAULT_TIMEZONE, WOMBAT_INCLUDE_TIME_CONTEXT [true]
  WOMBAT_MAX_CHARS_PER_FILE [20000], WOMBAT_BOOTSTRAP_MAX_CHARS [150000], WOMBAT_SKILLS_MAX_CHARS [30000]
  WOMBAT_METRICS_PUBLIC [false], WOMBAT_MAX_BODY_BYTES [1048576], WOMBAT_HEADER_TIMEOUT_SECS [10],
  WOMBAT_REQUEST_TIMEOUT_SECS [300], WOMBAT_SHUTDOWN_TIMEOUT_SECS [30], WOMBAT_MAX_CONCURRENT_LLM [512]
  WOMBAT_WEBHOOK_ALLOWED_HOSTS, WOMBAT_WEBHOOK_ALLOW_PRIVATE [false],
  WOMBAT_WEBHOOK_MAX_IN_FLIGHT [1024], WOMBAT_PRICING_FILE
  WOMBAT_LOG_FORMAT [text|json], RUST_LOG [info]
See .env.example for every variable with its default.";

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
    #[command(after_help = SERVE_ENV_HELP)]
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
    wombat_server::init_tracing(&settings);
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
    match runtime.block_on(wombat_server::run(
        settings,
        wombat_server::shutdown_signal(),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wombat serve: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

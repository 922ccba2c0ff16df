//! The notification dispatcher shared by the `wombat-dispatcher` binary and
//! `wombat dispatcher`: polls the backend's `dispatch/undelivered` with the
//! internal token, posts each delivery to the daemon's `/api/agents/send`,
//! acknowledges it only after the daemon accepted it, and prints one JSON
//! line per tick on stdout (diagnostics go to stderr).
//!
//! It does not serve HTTP and does not mint agent tokens. Settings are read
//! exactly like the daemon's (`wombat_server::load_settings`).
//!
//! Decisions where the spec is silent:
//! - `AGENT_JWT_SECRET` is optional: the control-plane client wants a JWT
//!   config, but dispatch calls use only `X-Internal-Token`, so without a
//!   secret a random one (that signs nothing) is used.
//! - `--once` exits 0 when the poll succeeded, even if some deliveries
//!   failed (they stay queued and the log line counts them); it exits 1
//!   when the poll itself failed and 64 on invalid configuration.
//! - When a delivery fails for a reason that may pass, that user's later
//!   deliveries wait for the next tick so a user's notifications are never
//!   reordered; a permanent refusal (4xx other than 401/403/408/429) is
//!   given up at once and does not hold the others (see `dispatch.rs`).
//! - A delivery without `task_id` is sent with `task_title`
//!   `DISPATCH_TASK_TITLE` (default "Notifications"), so the flow works on
//!   a daemon without `WOMBAT_DEFAULT_TASK`.

mod config;
mod dispatch;

use std::future::Future;
use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use tokio::sync::watch;
use wombat_http::config::Settings;

pub use config::{
    DEFAULT_CONCURRENCY, DEFAULT_DAEMON_URL, DEFAULT_LIMIT, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_INTERVAL, DEFAULT_MIN_INTERVAL, DEFAULT_SEND_TIMEOUT, DEFAULT_TASK_TITLE,
    DispatcherConfig, ENV_HELP,
};
pub use dispatch::{Dispatcher, TickReport, failed_poll_line, next_interval};

/// Exit code for invalid configuration.
pub const EXIT_CONFIG: u8 = 64;

/// Why the dispatcher stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is invalid; the message names the variable. Exit code 64.
    #[error("{0}")]
    Config(String),
    /// Polling `dispatch/undelivered` failed (after the client's retries).
    #[error("polling undelivered notifications failed: {0}")]
    Poll(#[source] wombat_controlplane::Error),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl Error {
    /// The process exit code: 64 for configuration, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => EXIT_CONFIG,
            Error::Poll(_) | Error::Runtime(_) => 1,
        }
    }
}

/// Command-line flags of the dispatcher (shared with `wombat dispatcher`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Args {
    /// Run a single tick and exit (for cron and tests).
    #[arg(long)]
    pub once: bool,
}

/// Installs the tracing subscriber on stderr (stdout is reserved for the
/// tick lines), the daemon's way: human-readable with control characters
/// escaped (the daemon's error text lands in these lines) and colour only on
/// a terminal, or JSON with `WOMBAT_LOG_FORMAT=json`; level from `RUST_LOG`
/// (default `info`). Keeps a subscriber already installed.
pub fn init_tracing(settings: &Settings) {
    wombat_server::init_logs(settings);
}

/// Validates `settings` and runs the loop until `shutdown` resolves (or one
/// tick with `once`), writing the tick lines to `out` (stdout in the
/// binaries).
pub async fn run(
    settings: &Settings,
    once: bool,
    shutdown: impl Future<Output = ()>,
    out: &mut impl Write,
) -> Result<(), Error> {
    let config = DispatcherConfig::from_settings(settings)?;
    let dispatcher = Dispatcher::new(config)?;
    serve(&dispatcher, once, shutdown, out).await.map(|_| ())
}

/// The polling loop. Writes each tick's JSON line to `out` and returns the
/// last tick's report. With `once` it runs one tick and fails if its poll
/// failed. When `shutdown` resolves mid-tick, deliveries in flight finish,
/// nothing new starts, and the loop ends.
///
/// Write errors on `out` are ignored: a closed stdout must not stop
/// deliveries.
pub async fn serve(
    dispatcher: &Dispatcher,
    once: bool,
    shutdown: impl Future<Output = ()>,
    out: &mut impl Write,
) -> Result<Option<TickReport>, Error> {
    let config = dispatcher.config();
    let (stop_tx, stop_rx) = watch::channel(false);
    let shutdown = std::pin::pin!(shutdown);
    let mut shutdown = futures::FutureExt::fuse(shutdown);
    let mut stopping = false;
    let mut interval = config.min_interval;
    let mut last = None;
    tracing::info!(
        backend = %config.backend_url,
        daemon = %config.daemon_url,
        once,
        "dispatcher started"
    );
    loop {
        let started = Instant::now();
        let result = {
            let tick = std::pin::pin!(dispatcher.tick_until(stop_rx.clone()));
            let mut tick = futures::FutureExt::fuse(tick);
            tokio::select! {
                r = &mut tick => r,
                () = &mut shutdown, if !stopping => {
                    stopping = true;
                    let _ = stop_tx.send(true);
                    tracing::info!("shutdown requested: finishing the deliveries in flight");
                    tick.await
                }
            }
        };
        match &result {
            Ok(report) => emit(out, &report.log_line()),
            Err(e) => {
                emit(out, &failed_poll_line(e, started.elapsed()));
                tracing::warn!(error = %e, "poll failed");
            }
        }
        interval = next_interval(
            interval,
            result.as_ref().ok(),
            config.min_interval,
            config.max_interval,
        );
        match result {
            Ok(report) => last = Some(report),
            Err(e) if once => return Err(e),
            Err(_) => {}
        }
        if once || stopping {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = &mut shutdown => break,
        }
    }
    tracing::info!("dispatcher stopped");
    Ok(last)
}

/// Writes one tick line and flushes it, ignoring write errors.
fn emit(out: &mut impl Write, line: &str) {
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The whole program behind `wombat-dispatcher` and `wombat dispatcher`:
/// loads settings like the daemon, installs tracing, runs until SIGINT or
/// SIGTERM (or one tick with `--once`) and maps errors to exit codes
/// (64 for configuration, 1 for a failed `--once` poll).
pub fn main_entry(program: &str, args: &Args) -> ExitCode {
    // Loading fails only on configuration (an unreadable `.env`, a table in
    // `wombat.toml`, ...).
    let result = wombat_server::load_settings()
        .map_err(|e| Error::Config(e.to_string()))
        .and_then(|settings| {
            // Validate before anything else so a bad setting is one line.
            DispatcherConfig::from_settings(&settings)?;
            init_tracing(&settings);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(Error::Runtime)?;
            // The signal handlers are installed inside the runtime, before
            // the first tick.
            runtime.block_on(async {
                run(
                    &settings,
                    args.once,
                    wombat_server::shutdown_signal(),
                    &mut std::io::stdout(),
                )
                .await
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

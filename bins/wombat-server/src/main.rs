//! `wombat-server`: the daemon. Configuration comes from the environment,
//! `.env` and `wombat.toml`; see `docs/CONFIGURATION.md`.

use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc instead of glibc malloc: the request path allocates many small,
/// short-lived buffers across threads, where glibc spent 10–12% of the
/// server's CPU under load (see docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // `--help` and `--version` answer before anything is read or created.
    if let Err(e) = wombat_server::Cli::try_parse() {
        let _ = e.print();
        return if e.use_stderr() {
            ExitCode::from(wombat_server::EXIT_CONFIG)
        } else {
            ExitCode::SUCCESS
        };
    }
    let settings = match wombat_server::load_settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wombat-server: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    let telemetry = wombat_server::init_tracing(&settings);
    let code = match wombat_server::run(settings, wombat_server::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wombat-server: {e}");
            ExitCode::from(e.exit_code())
        }
    };
    // Blocking is fine here: the server has stopped; this exports the
    // spans still queued (bounded by the exporter's timeout).
    tokio::task::block_in_place(|| telemetry.shutdown());
    code
}

//! `wombat-heartbeat`: posts a Mission Control heartbeat (default) or, with
//! the `standup` subcommand, a standup. All logic lives in the library
//! (`wombat_heartbeat::main_entry`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wombat_heartbeat::Mode;

#[derive(Parser)]
#[command(
    name = "wombat-heartbeat",
    version,
    about = "Posts a Mission Control heartbeat (default) or standup as USER_ID's agent",
    after_help = wombat_heartbeat::ENV_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// POST /api/mission-control/heartbeat {user_id} (the default).
    #[command(after_help = wombat_heartbeat::ENV_HELP)]
    Heartbeat,
    /// POST /api/mission-control/standup {user_id, timezone}.
    #[command(after_help = wombat_heartbeat::ENV_HELP)]
    Standup,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(wombat_heartbeat::EXIT_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let mode = match cli.command {
        None | Some(Command::Heartbeat) => Mode::Heartbeat,
        Some(Command::Standup) => Mode::Standup,
    };
    wombat_heartbeat::main_entry("wombat-heartbeat", mode)
}

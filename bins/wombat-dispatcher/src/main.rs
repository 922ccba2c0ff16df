//! `wombat-dispatcher`: delivers queued Mission Control notifications to the
//! daemon. All logic lives in the library (`wombat_dispatcher::main_entry`).

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "wombat-dispatcher",
    version,
    about = "Delivers queued Mission Control notifications to the Wombat daemon",
    after_help = wombat_dispatcher::ENV_HELP
)]
struct Cli {
    #[command(flatten)]
    args: wombat_dispatcher::Args,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(wombat_dispatcher::EXIT_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    wombat_dispatcher::main_entry("wombat-dispatcher", &cli.args)
}

//! `wombat-mc-lite`: the reference Mission Control backend. Reads flags and
//! env, starts the library server, stops on SIGINT/SIGTERM. `notify` queues
//! a notification on a running server (for testing the dispatcher).
//! Bad configuration exits with code 64. The logic lives in this package's
//! library (`wombat_mc_lite_bin`), shared with `wombat mc-lite`.

use std::process::ExitCode;

fn main() -> ExitCode {
    wombat_mc_lite_bin::main_entry()
}

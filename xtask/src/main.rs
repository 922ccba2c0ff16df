//! `cargo xtask`: project automation that needs no shell scripts.
//!
//! `cargo xtask tidy` checks the crate layering and docs (also run as a test
//! by `cargo test -p xtask`). `cargo xtask conformance [--local]` runs the
//! control-plane conformance suite (see `conformance/README.md`).
//! `cargo xtask bench [--quick]` benchmarks the release daemon against
//! in-process fakes (see `docs/BENCHMARKS.md`); `--pgo` benchmarks
//! profile-guided builds of the daemon and the floor, which `cargo xtask
//! pgo [--floor]` makes on its own. xtask depends on no product
//! crate: it runs binaries and reads `cargo metadata`.

mod bench;
mod cargo;
mod conformance;
mod pgo;
mod tidy;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("tidy") => tidy::run(),
        Some("conformance") => conformance::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("pgo") => pgo::run(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\ntasks:\n  tidy    check crate layering and crate docs\n  conformance [--local]  run the control-plane conformance suite\n  bench [--quick] [--pgo]  benchmark the release daemon against in-process fakes (docs/BENCHMARKS.md)\n  pgo [--floor]  a profile-guided release build of wombat-server (and of the floor)"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

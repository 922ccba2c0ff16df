//! `cargo xtask pgo [--floor]`: a profile-guided release build of
//! `wombat-server` (and of the benchmark's floor with `--floor`, which
//! `cargo xtask bench --pgo` uses so that both sides are built alike).
//!
//! 1. An instrumented build (`-Cprofile-generate`) in `<target>/pgo/generate`.
//! 2. A training run: the quick benchmark (`bench --runner --quick`) against
//!    the in-process fakes, so the profile describes the daemon's real work
//!    (sends at three concurrencies, streams, held streams, health checks).
//!    Each server writes its counts when the benchmark stops it.
//! 3. `llvm-profdata merge` (rustup's `llvm-tools` component, which matches
//!    the compiler's LLVM).
//! 4. The optimised build (`-Cprofile-use`) in `<target>/pgo/use`, from
//!    scratch each time (cargo cannot tell that the profile changed).
//!
//! Every package gets the same flags within a step, so each target
//! directory builds the dependencies once. The server and the floor share
//! one profile: their own code is disjoint, and for the dependencies they
//! share the counts come from the same kind of load. Flags already in
//! `RUSTFLAGS` are kept. On two cores the whole takes ~25 minutes (two
//! release builds and a quick benchmark; a rerun reuses the instrumented
//! build); docs/BENCHMARKS.md item 17 has what it gains.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::bench::{FLOOR_PKG as FLOOR, SERVER_PKG as SERVER, runner_command};
use crate::cargo::{build_bins, build_bins_with, workspace_root};

/// Entry point; `args` are the words after `pgo`.
pub fn run(args: &[String]) -> Result<()> {
    let mut with_floor = false;
    for a in args {
        match a.as_str() {
            "--floor" => with_floor = true,
            other => bail!("unknown pgo option {other:?} (usage: cargo xtask pgo [--floor])"),
        }
    }
    let root = workspace_root();
    let xtask = release_xtask(&root)?;
    let built = build(&root, &xtask, with_floor)?;
    println!("pgo: {}", built.server.display());
    if let Some(floor) = &built.floor {
        println!("pgo: {}", floor.display());
    }
    Ok(())
}

/// The profile-guided executables.
pub struct Built {
    /// `wombat-server`.
    pub server: PathBuf,
    /// `bench-floor`, when asked for.
    pub floor: Option<PathBuf>,
}

/// `cargo build --release -p xtask`: the benchmark runner the training uses.
pub fn release_xtask(root: &Path) -> Result<PathBuf> {
    build_bins(root, &["--release", "-p", "xtask"])?
        .remove("xtask")
        .context("cargo did not report the xtask executable")
}

/// The four steps above; `xtask` is the release xtask, whose target
/// directory also holds the PGO builds (`<target>/pgo`).
pub fn build(root: &Path, xtask: &Path, with_floor: bool) -> Result<Built> {
    let profdata = llvm_profdata()?;
    let base = xtask
        .parent()
        .and_then(Path::parent)
        .map(|target| target.join("pgo"))
        .context("cannot derive the target directory from the xtask path")?;
    let raw = base.join("raw");
    // Counts of an earlier training would add to this one's.
    remove_dir(&raw)?;
    let packages: &[&str] = if with_floor {
        &[SERVER, FLOOR]
    } else {
        &[SERVER]
    };

    let generate = build_all(
        root,
        &base.join("generate"),
        &[flag("-Cprofile-generate=", &raw)],
        packages,
    )?;

    println!("pgo: training run (the quick benchmark on the instrumented build)");
    let status = runner_command(
        xtask,
        &generate[SERVER],
        generate.get(FLOOR).map(PathBuf::as_path),
        &base.join("training"),
        root,
        true,
    )
    .status()
    .context("starting the training run")?;
    if !status.success() {
        bail!("the training run failed ({status})");
    }

    let merged = base.join("merged.profdata");
    let status = Command::new(&profdata)
        .arg("merge")
        .arg("-o")
        .arg(&merged)
        .arg(&raw)
        .status()
        .with_context(|| format!("running {}", profdata.display()))?;
    if !status.success() {
        bail!("llvm-profdata merge failed ({status})");
    }

    // Cargo does not see a new profile behind the same flag: nothing built
    // with the last one may be reused.
    let use_dir = base.join("use");
    remove_dir(&use_dir)?;
    let used = build_all(
        root,
        &use_dir,
        &[
            flag("-Cprofile-use=", &merged),
            // Functions whose shape differs between the two builds (the
            // instrumentation changes some inlining) just get no profile.
            "-Cllvm-args=-no-pgo-warn-mismatch".into(),
        ],
        packages,
    )?;
    Ok(Built {
        server: used[SERVER].clone(),
        floor: used.get(FLOOR).cloned(),
    })
}

/// `cargo build --release -p <package>` for each package, into
/// `target_dir`, with `flags` added to the user's `RUSTFLAGS`.
fn build_all(
    root: &Path,
    target_dir: &Path,
    flags: &[OsString],
    packages: &[&str],
) -> Result<BTreeMap<String, PathBuf>> {
    // Passed encoded (0x1f between flags): a path in a flag may hold spaces.
    let mut encoded = OsString::new();
    let user = std::env::var("RUSTFLAGS").unwrap_or_default();
    for flag in user
        .split_whitespace()
        .map(OsString::from)
        .chain(flags.iter().cloned())
    {
        if !encoded.is_empty() {
            encoded.push("\u{1f}");
        }
        encoded.push(flag);
    }
    let mut out = BTreeMap::new();
    for package in packages {
        println!(
            "pgo: cargo build --release -p {package} into {}",
            target_dir.display()
        );
        let mut bins = build_bins_with(
            root,
            &["--release", "-p", package],
            &[
                ("CARGO_ENCODED_RUSTFLAGS", encoded.as_os_str()),
                ("CARGO_TARGET_DIR", target_dir.as_os_str()),
            ],
        )?;
        let exe = bins
            .remove(*package)
            .with_context(|| format!("cargo did not report the {package} executable"))?;
        out.insert((*package).to_owned(), exe);
    }
    Ok(out)
}

/// `llvm-profdata` of the toolchain in use (`rustup component add
/// llvm-tools`): a system one may not read the compiler's profile format.
fn llvm_profdata() -> Result<PathBuf> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let output = |args: &[&str]| -> Result<String> {
        let out = Command::new(&rustc)
            .args(args)
            .output()
            .with_context(|| format!("running {rustc} {}", args.join(" ")))?;
        if !out.status.success() {
            bail!("{rustc} {} failed ({})", args.join(" "), out.status);
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let sysroot = output(&["--print", "sysroot"])?;
    let version = output(&["-vV"])?;
    let host = version
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .context("rustc -vV names no host")?;
    let path = Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(host.trim())
        .join("bin/llvm-profdata");
    if !path.is_file() {
        bail!(
            "{} not found: install it with `rustup component add llvm-tools`",
            path.display()
        );
    }
    Ok(path)
}

/// Removes `dir` and what it holds, if it exists.
fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// A flag that ends in a path, such as `-Cprofile-use=<path>`.
fn flag(prefix: &str, path: &Path) -> OsString {
    let mut flag = OsString::from(prefix);
    flag.push(path.as_os_str());
    flag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_options_are_taken() {
        let err = run(&["--fast".to_owned()]).expect_err("unknown option");
        assert!(err.to_string().contains("--fast"), "{err}");
    }
}

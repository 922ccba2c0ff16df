//! Running cargo from xtask: the workspace root, and building packages while
//! collecting the paths of the executables cargo produced (this honours
//! `CARGO_TARGET_DIR` and profiles without guessing paths).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The workspace root (xtask's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// `cargo build <args>` in `root`; returns `{bin name: path}` of what it built.
pub fn build_bins(root: &Path, args: &[&str]) -> Result<BTreeMap<String, PathBuf>> {
    build_bins_with(root, args, &[])
}

/// [`build_bins`] with extra environment variables for cargo.
pub fn build_bins_with(
    root: &Path,
    args: &[&str],
    env: &[(&str, &OsStr)],
) -> Result<BTreeMap<String, PathBuf>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--message-format=json-render-diagnostics"])
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build")?;
    if !out.status.success() {
        bail!("cargo build {} failed ({})", args.join(" "), out.status);
    }
    Ok(executables(&String::from_utf8_lossy(&out.stdout)))
}

/// `{bin name: path}` from cargo's JSON messages (one object per line).
fn executables(messages: &str) -> BTreeMap<String, PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter_map(|m| {
            let name = m["target"]["name"].as_str()?.to_owned();
            let exe = m["executable"].as_str()?;
            Some((name, PathBuf::from(exe)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_executables_in_cargo_messages() {
        let messages = r#"{"reason":"compiler-artifact","target":{"name":"wombat_core","kind":["lib"]},"executable":null}
not json
{"reason":"compiler-artifact","target":{"name":"wombat-server","kind":["bin"]},"executable":"/t/release/wombat-server"}
{"reason":"build-finished","success":true}"#;
        let bins = executables(messages);
        assert_eq!(bins.len(), 1);
        assert_eq!(
            bins.get("wombat-server").map(PathBuf::as_path),
            Some(Path::new("/t/release/wombat-server"))
        );
    }
}

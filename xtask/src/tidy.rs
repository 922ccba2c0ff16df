//! Tidy checks: the dependency edges STYLE.md allows between our crates, and
//! a `//!` doc comment at the top of every library's `lib.rs`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cargo::workspace_root;
use serde_json::Value;

/// Which of our crates each crate may depend on (normal and build
/// dependencies; dev-dependencies are free). A crate not listed here is a
/// binary-level crate and may use any library crate, but never `xtask`.
const ALLOWED: &[(&str, &[&str])] = &[
    ("wombat-core", &[]),
    // OpenTelemetry glue, beside core at the bottom, so core stays pure.
    ("wombat-telemetry", &[]),
    ("wombat-workspace", &["wombat-core"]),
    // The outbound HTTP client llm and controlplane share, beside core.
    ("wombat-transport", &[]),
    (
        "wombat-llm",
        &["wombat-core", "wombat-telemetry", "wombat-transport"],
    ),
    (
        "wombat-controlplane",
        &["wombat-core", "wombat-telemetry", "wombat-transport"],
    ),
    ("wombat-governance", &["wombat-core"]),
    // MCP client: a middle crate like llm and controlplane (outbound HTTP
    // to the operator's MCP servers); the run loop above it wires it in.
    ("wombat-mcp", &["wombat-core"]),
    // The run loop: composes the middle crates; the daemon frames its events.
    (
        "wombat-agent",
        &[
            "wombat-core",
            "wombat-telemetry",
            "wombat-workspace",
            "wombat-llm",
            "wombat-controlplane",
            "wombat-governance",
            "wombat-mcp",
        ],
    ),
    (
        "wombat-http",
        &[
            "wombat-agent",
            "wombat-core",
            "wombat-telemetry",
            "wombat-workspace",
            "wombat-llm",
            "wombat-controlplane",
            "wombat-governance",
            "wombat-mcp",
        ],
    ),
    // The reference backend and the conformance checks speak the contract
    // from the other side: JWTs from the client crate, DTOs from core.
    ("wombat-mc-lite", &["wombat-core", "wombat-controlplane"]),
    (
        "wombat-conformance",
        &["wombat-core", "wombat-controlplane"],
    ),
    ("xtask", &[]),
    // The benchmark's floor is a minimal server; depending on a product
    // crate would make it do the daemon's work, not the least work.
    ("bench-floor", &[]),
];

/// Runs every tidy check and reports all problems at once.
pub fn run() -> Result<()> {
    let root = workspace_root();
    let metadata = cargo_metadata(&root)?;
    let mut problems = check_edges(&metadata);
    problems.extend(check_lib_docs(&metadata)?);
    if problems.is_empty() {
        println!("tidy: ok");
        return Ok(());
    }
    for p in &problems {
        eprintln!("tidy: {p}");
    }
    bail!("{} tidy problem(s)", problems.len())
}

fn cargo_metadata(root: &Path) -> Result<Value> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version=1", "--no-deps", "--offline"])
        .current_dir(root)
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing cargo metadata")
}

fn packages(metadata: &Value) -> impl Iterator<Item = &Value> {
    metadata["packages"].as_array().into_iter().flatten()
}

/// Edges between workspace members that STYLE.md does not allow.
fn check_edges(metadata: &Value) -> Vec<String> {
    let members: Vec<&str> = packages(metadata)
        .filter_map(|p| p["name"].as_str())
        .collect();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut problems = Vec::new();
    for pkg in packages(metadata) {
        let name = pkg["name"].as_str().unwrap_or_default();
        let deps = pkg["dependencies"].as_array().into_iter().flatten();
        for dep in deps {
            let dep_name = dep["name"].as_str().unwrap_or_default();
            if dep["kind"].as_str() == Some("dev") || !members.contains(&dep_name) {
                continue;
            }
            let ok = match allowed.get(name) {
                Some(list) => list.contains(&dep_name),
                None => dep_name != "xtask",
            };
            if !ok {
                problems.push(format!(
                    "{name} must not depend on {dep_name} (see STYLE.md, layering)"
                ));
            }
        }
    }
    problems
}

/// Library targets whose `lib.rs` does not open with a `//!` doc comment.
fn check_lib_docs(metadata: &Value) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for pkg in packages(metadata) {
        for target in pkg["targets"].as_array().into_iter().flatten() {
            let is_lib = target["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "lib"));
            let Some(src) = target["src_path"].as_str().filter(|_| is_lib) else {
                continue;
            };
            let text = std::fs::read_to_string(src).with_context(|| format!("reading {src}"))?;
            if !starts_with_crate_doc(&text) {
                problems.push(format!("{src} must start with a `//!` crate doc"));
            }
        }
    }
    Ok(problems)
}

fn starts_with_crate_doc(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .is_some_and(|l| l.starts_with("//!"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_is_tidy() {
        run().expect("tidy checks pass");
    }

    #[test]
    fn detects_forbidden_edges() {
        let metadata = serde_json::json!({"packages": [
            {"name": "wombat-core", "dependencies": [{"name": "wombat-llm", "kind": null}], "targets": []},
            {"name": "wombat-llm", "dependencies": [
                {"name": "wombat-core", "kind": null},
                {"name": "wombat-workspace", "kind": "dev"}
            ], "targets": []},
            {"name": "wombat-workspace", "dependencies": [{"name": "wombat-controlplane", "kind": null}], "targets": []},
            {"name": "wombat-controlplane", "dependencies": [], "targets": []},
            {"name": "wombat-server", "dependencies": [{"name": "xtask", "kind": null}], "targets": []},
            {"name": "xtask", "dependencies": [], "targets": []}
        ]});
        let problems = check_edges(&metadata);
        assert_eq!(
            problems,
            vec![
                "wombat-core must not depend on wombat-llm (see STYLE.md, layering)",
                "wombat-workspace must not depend on wombat-controlplane (see STYLE.md, layering)",
                "wombat-server must not depend on xtask (see STYLE.md, layering)",
            ]
        );
    }

    #[test]
    fn crate_doc_detection() {
        assert!(starts_with_crate_doc("\n//! docs\nmod a;"));
        assert!(!starts_with_crate_doc("mod a;\n//! late"));
        assert!(!starts_with_crate_doc("/// item doc\nfn f() {}"));
    }
}

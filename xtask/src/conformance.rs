//! `cargo xtask conformance [--local] [runner args...]`: builds the
//! conformance runner and the reference backend, then runs the runner
//! against `CONTROL_PLANE_URL` — or, with `--local`, against a freshly
//! started in-memory `wombat-mc-lite` on a free port, torn down afterwards.
//! Binaries are located from cargo's JSON build messages, so
//! `CARGO_TARGET_DIR` is honoured.

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cargo::{build_bins, workspace_root};

/// Binary packages and the executables they build.
const RUNNER_PKG: &str = "wombat-conformance-bin";
const RUNNER_BIN: &str = "wombat-conformance";
const BACKEND_PKG: &str = "wombat-mc-lite-bin";
const BACKEND_BIN: &str = "wombat-mc-lite";
/// How long the local backend may take to start and answer /health.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Entry point; `args` are the words after `conformance`.
pub fn run(args: &[String]) -> Result<()> {
    let local = args.iter().any(|a| a == "--local");
    let passthrough: Vec<&String> = args.iter().filter(|a| *a != "--local").collect();
    let root = workspace_root();
    let bins = build(&root)?;
    let runner = bins
        .get(RUNNER_BIN)
        .with_context(|| format!("cargo did not report the {RUNNER_BIN} executable"))?;
    let mut cmd = Command::new(runner);
    cmd.args(&passthrough);
    let _backend = if local {
        let backend = bins
            .get(BACKEND_BIN)
            .with_context(|| format!("cargo did not report the {BACKEND_BIN} executable"))?;
        let secret = random_hex();
        let internal = random_hex();
        let server = LocalBackend::start(backend, &secret, &internal)?;
        println!("xtask: reference backend at {}", server.url);
        cmd.env("CONTROL_PLANE_URL", &server.url)
            .env("AGENT_JWT_SECRET", &secret)
            .env("AGENT_JWT_ALGORITHM", "HS256")
            .env("INTERNAL_TOKEN", &internal)
            .env_remove("AGENT_TOKEN");
        Some(server)
    } else {
        if std::env::var_os("CONTROL_PLANE_URL").is_none()
            && !passthrough.iter().any(|a| a.starts_with("--url"))
        {
            bail!("set CONTROL_PLANE_URL (and AGENT_JWT_SECRET or AGENT_TOKEN), or use --local");
        }
        None
    };
    let status = cmd
        .status()
        .with_context(|| format!("running {}", runner.display()))?;
    if !status.success() {
        bail!("conformance failed ({status})");
    }
    Ok(())
}

/// Builds both binaries and returns executable paths by binary name.
fn build(root: &Path) -> Result<BTreeMap<String, PathBuf>> {
    build_bins(root, &["-p", RUNNER_PKG, "-p", BACKEND_PKG])
}

/// A random hex string for one-off secrets (no crypto needed: the backend
/// lives only for this run and listens on loopback).
fn random_hex() -> String {
    (0..2)
        .map(|i| {
            let mut h = RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            h.write_u32(std::process::id());
            h.write_u8(i);
            format!("{:016x}", h.finish())
        })
        .collect()
}

/// The local reference backend; killed when dropped.
struct LocalBackend {
    child: Child,
    url: String,
}

impl LocalBackend {
    fn start(exe: &Path, secret: &str, internal: &str) -> Result<Self> {
        let mut child = Command::new(exe)
            .args(["--host", "127.0.0.1", "--port", "0", "--db", ":memory:"])
            .env("AGENT_JWT_SECRET", secret)
            .env("AGENT_JWT_ALGORITHM", "HS256")
            .env("INTERNAL_TOKEN", internal)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let stdout = child.stdout.take().context("no stdout of the backend")?;
        // The guard exists before waiting, so every early return kills it.
        let mut backend = Self {
            child,
            url: String::new(),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            // Keep draining so the backend never blocks on a full pipe.
            for _ in lines {}
        });
        let first = rx
            .recv_timeout(STARTUP_TIMEOUT)
            .context("the reference backend did not report its address")?;
        backend.url =
            listen_url(&first).with_context(|| format!("unexpected first line {first:?}"))?;
        wait_healthy(&backend.url)?;
        Ok(backend)
    }
}

impl Drop for LocalBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The URL in `mc-lite listening on http://127.0.0.1:PORT`.
fn listen_url(line: &str) -> Option<String> {
    let url = line.trim().strip_prefix("mc-lite listening on ")?;
    url.starts_with("http://").then(|| url.to_owned())
}

/// Polls `GET /health` until it answers 200 or the startup timeout passes.
fn wait_healthy(url: &str) -> Result<()> {
    let host = url
        .strip_prefix("http://")
        .context("backend URL is not http")?;
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if health_ok(host) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the reference backend at {url} did not become healthy");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn health_ok(host: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(host) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).unwrap_or(0);
    is_http_200(&head[..n])
}

fn is_http_200(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    text.split_whitespace().nth(1) == Some("200") && text.starts_with("HTTP/1.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_backend_output() {
        assert_eq!(
            listen_url("mc-lite listening on http://127.0.0.1:4100\n").as_deref(),
            Some("http://127.0.0.1:4100")
        );
        assert_eq!(listen_url("something else"), None);
        assert!(is_http_200(b"HTTP/1.1 200 OK\r\ncontent-type: x"));
        assert!(!is_http_200(b"HTTP/1.1 503 Service Unavailable"));
        assert!(!is_http_200(b""));
    }

    #[test]
    fn secrets_differ() {
        let (a, b) = (random_hex(), random_hex());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}

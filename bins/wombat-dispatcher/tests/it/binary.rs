//! The `wombat-dispatcher` binary: `--once`, exit codes, `--help`. Settings
//! are passed on the child's environment only, from an empty directory so no
//! stray `.env` or `wombat.toml` is read.

use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{Daemon, INTERNAL, enqueue, start_backend, undelivered};

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dispatcher-bin");
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wombat-dispatcher"));
    cmd.args(args).current_dir(&dir).env_clear();
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_delivers_and_prints_one_tick_line() {
    let backend = start_backend().await;
    let daemon = Daemon::start(&backend.url()).await;
    enqueue(&backend, "frank", "via the binary").await;
    let url = backend.url();
    let out = tokio::task::spawn_blocking({
        let daemon_url = daemon.url.clone();
        move || {
            run(
                &["--once"],
                &[
                    ("BACKEND_URL", &url),
                    ("INTERNAL_TOKEN", INTERNAL),
                    ("AGENT_DAEMON_URL", &daemon_url),
                ],
            )
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout carries only tick lines: {stdout}");
    let tick: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(tick["event"], "dispatcher_tick");
    assert_eq!(
        (&tick["deliveries"], &tick["delivered"], &tick["failed"]),
        (&1.into(), &1.into(), &0.into())
    );
    assert!(tick["duration_sec"].is_f64());
    assert!(undelivered(&backend).await.is_empty());
    daemon.stop().await;
    backend.shutdown().await;
}

#[test]
fn missing_or_invalid_config_exits_64_with_one_clear_line() {
    let out = run(&["--once"], &[("INTERNAL_TOKEN", "x")]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("BACKEND_URL"), "{stderr}");

    let out = run(
        &["--once"],
        &[
            ("BACKEND_URL", "http://127.0.0.1:9"),
            ("INTERNAL_TOKEN", "secret-token-value"),
            ("DISPATCH_MAX_INTERVAL_SEC", "soon"),
        ],
    );
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DISPATCH_MAX_INTERVAL_SEC"), "{stderr}");
    assert!(!stderr.contains("secret-token-value"), "{stderr}");

    let out = run(&["--bogus"], &[]);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn help_lists_the_environment() {
    let out = run(&["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "--once",
        "BACKEND_URL",
        "INTERNAL_TOKEN",
        "AGENT_DAEMON_URL",
        "AGENT_DAEMON_API_KEY",
        "DISPATCH_LIMIT_USERS",
        "DISPATCH_LIMIT_NOTIFICATIONS",
        "DISPATCH_MIN_INTERVAL_SEC",
        "DISPATCH_MAX_INTERVAL_SEC",
    ] {
        assert!(help.contains(var), "{var} missing from --help:\n{help}");
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_loop_cleanly() {
    use std::io::BufRead as _;
    use std::process::Stdio;

    let backend = start_backend().await;
    let url = backend.url();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dispatcher-bin");
    std::fs::create_dir_all(&dir).unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wombat-dispatcher"));
        cmd.current_dir(&dir)
            .env_clear()
            .env("BACKEND_URL", &url)
            .env("INTERNAL_TOKEN", INTERNAL)
            .env("AGENT_DAEMON_URL", "http://127.0.0.1:9")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        // The first tick line means the signal handlers are installed.
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(first.contains("dispatcher_tick"), "{first}");
        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        // Bounded wait so a broken signal path fails instead of hanging.
        for _ in 0..1500 {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = child.kill();
        panic!("the dispatcher did not stop on SIGTERM");
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    backend.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_and_version_have_no_side_effects() {
    // Valid settings pointing at fakes that record every request: none may
    // arrive, and no file may appear in the working directory.
    let backend = crate::support::fake_backend(Vec::new()).await;
    let daemon = crate::support::Fake::start(|_| (200, serde_json::json!({}))).await;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dispatcher-bin");
    std::fs::create_dir_all(&dir).unwrap();
    let before: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let (b, d) = (backend.url.clone(), daemon.url.clone());
    let outputs = tokio::task::spawn_blocking(move || {
        [
            &["--help"][..],
            &["-h"][..],
            &["--version"][..],
            &["-V"][..],
        ]
        .into_iter()
        .map(|args| {
            (
                args,
                run(
                    args,
                    &[
                        ("BACKEND_URL", b.as_str()),
                        ("INTERNAL_TOKEN", INTERNAL),
                        ("AGENT_DAEMON_URL", d.as_str()),
                    ],
                ),
            )
        })
        .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (args, out) in outputs {
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        if args[0] == "--version" || args[0] == "-V" {
            assert_eq!(
                text.trim(),
                format!("wombat-dispatcher {}", env!("CARGO_PKG_VERSION"))
            );
        } else {
            assert!(text.contains("Usage"), "{args:?}: {text}");
        }
    }
    let after: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(before, after, "no files created");
    assert!(backend.seen("/").is_empty(), "no backend call");
    assert!(daemon.seen("/").is_empty(), "no daemon call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_text_in_logs_cannot_forge_lines_or_reach_the_terminal() {
    let backend = start_backend().await;
    enqueue(&backend, "mallory", "hi").await;
    // The daemon's error text ends up in the dispatcher's log line.
    let daemon = crate::support::Fake::start(|_| {
        (
            400,
            serde_json::json!({"error": "refused\nFORGED log line \u{1b}[31mred"}),
        )
    })
    .await;
    let url = backend.url();
    let out = tokio::task::spawn_blocking({
        let daemon_url = daemon.url.clone();
        move || {
            run(
                &["--once"],
                &[
                    ("BACKEND_URL", &url),
                    ("INTERNAL_TOKEN", INTERNAL),
                    ("AGENT_DAEMON_URL", &daemon_url),
                    ("RUST_LOG", "info"),
                ],
            )
        }
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("FORGED"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
    assert!(!stderr.lines().any(|l| l.starts_with("FORGED")), "{stderr}");
    backend.shutdown().await;
}

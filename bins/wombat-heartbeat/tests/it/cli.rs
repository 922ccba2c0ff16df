//! Heartbeat and standup, ok and failing, through the binary and the library.

use std::process::{Command, Output};

use serde_json::Value;
use wombat_controlplane::{JwtAlgorithm, JwtConfig};
use wombat_heartbeat::Mode;
use wombat_mc_lite::{DbLocation, McLite, McLiteConfig, RunningMcLite};

const SECRET: &str = "heartbeat-test-secret";

async fn backend() -> RunningMcLite {
    let jwt = JwtConfig::new(SECRET, JwtAlgorithm::HS256).unwrap();
    McLite::start(
        McLiteConfig::new(jwt, DbLocation::Memory),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

/// Runs the binary from an empty directory with only `env` (and PATH).
async fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("heartbeat-bin");
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wombat-heartbeat"));
        cmd.args(&args).current_dir(&dir).env_clear();
        if let Ok(path) = std::env::var("PATH") {
            cmd.env("PATH", path);
        }
        cmd.envs(env);
        cmd.output().unwrap()
    })
    .await
    .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_prints_the_reply_then_heartbeat_ok() {
    let server = backend().await;
    let url = server.url();
    let env = [
        ("BACKEND_URL", url.as_str()),
        ("AGENT_JWT_SECRET", SECRET),
        ("USER_ID", "hb-user"),
    ];
    for args in [&[][..], &["heartbeat"][..]] {
        let out = run(args, &env).await;
        assert!(out.status.success(), "{out:?}");
        let text = stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let reply: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(reply["status"], "ok");
        assert_eq!(reply["user_id"], "hb-user");
        assert_eq!(lines[1], "heartbeat_ok");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standup_sends_the_timezone_and_prints_standup_ok() {
    let server = backend().await;
    let url = server.url();
    let out = run(
        &["standup"],
        &[
            ("BACKEND_URL", url.as_str()),
            ("AGENT_JWT_SECRET", SECRET),
            ("USER_ID", "su-user"),
            ("STANDUP_TIMEZONE", "Europe/Paris"),
            ("AGENT_ROLE", "planner"),
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let reply: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(reply["timezone"], "Europe/Paris");
    assert_eq!(reply["user_id"], "su-user");
    assert_eq!(lines[1], "standup_ok");

    // Default time zone is UTC.
    let out = run(
        &["standup"],
        &[
            ("BACKEND_URL", url.as_str()),
            ("AGENT_JWT_SECRET", SECRET),
            ("USER_ID", "su-user"),
        ],
    )
    .await;
    let reply: Value = serde_json::from_str(stdout(&out).lines().next().unwrap()).unwrap();
    assert_eq!(reply["timezone"], "UTC");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_settings_exit_64() {
    let out = run(&[], &[("AGENT_JWT_SECRET", SECRET)]).await;
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(stderr(&out).contains("USER_ID"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());

    let out = run(&["standup"], &[("USER_ID", "u")]).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("AGENT_JWT_SECRET"),
        "{}",
        stderr(&out)
    );

    let out = run(&["--nope"], &[]).await;
    assert_eq!(out.status.code(), Some(64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_errors_exit_non_zero_and_name_the_status() {
    let server = backend().await;
    let url = server.url();
    let out = run(
        &[],
        &[
            ("BACKEND_URL", url.as_str()),
            ("AGENT_JWT_SECRET", "not-the-backend-secret"),
            ("USER_ID", "u1"),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr(&out);
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains("not-the-backend-secret"), "{err}");
    assert!(!stdout(&out).contains("heartbeat_ok"));

    // An unknown time zone is a 400 from the backend.
    let out = run(
        &["standup"],
        &[
            ("BACKEND_URL", url.as_str()),
            ("AGENT_JWT_SECRET", SECRET),
            ("USER_ID", "u1"),
            ("STANDUP_TIMEZONE", "Mars/Olympus"),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("400"), "{}", stderr(&out));
    server.shutdown().await;
}

#[tokio::test]
async fn library_entry_writes_to_the_given_output() {
    let server = backend().await;
    let settings = [
        ("BACKEND_URL", server.url()),
        ("AGENT_JWT_SECRET", SECRET.to_owned()),
        ("USER_ID", "lib-user".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut out = Vec::new();
    wombat_heartbeat::run(&settings, Mode::Standup, &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.ends_with("standup_ok\n"), "{text}");
    server.shutdown().await;
}

#[tokio::test]
async fn help_lists_the_modes_and_environment() {
    let out = run(&["--help"], &[]).await;
    assert!(out.status.success());
    let help = stdout(&out);
    for word in [
        "standup",
        "heartbeat",
        "USER_ID",
        "AGENT_JWT_SECRET",
        "AGENT_ROLE",
        "STANDUP_TIMEZONE",
        "BACKEND_URL",
    ] {
        assert!(help.contains(word), "{word} missing:\n{help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_backend_is_named_without_credentials() {
    // A port with nobody listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://ops:hunter2@127.0.0.1:{port}/mc?key=k1");
    let out = run(
        &[],
        &[
            ("BACKEND_URL", url.as_str()),
            ("AGENT_JWT_SECRET", SECRET),
            ("USER_ID", "u1"),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("http://127.0.0.1:{port}/mc")),
        "the error must name the URL: {err}"
    );
    assert!(!err.contains("hunter2") && !err.contains("k1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_and_version_have_no_side_effects() {
    // A backend that counts connections: none may be made.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&connections);
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("heartbeat-bin");
    let before: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    let env = [
        ("BACKEND_URL", url.as_str()),
        ("AGENT_JWT_SECRET", SECRET),
        ("USER_ID", "u1"),
    ];
    for args in [
        &["--help"][..],
        &["-h"][..],
        &["--version"][..],
        &["-V"][..],
        &["standup", "--help"][..],
    ] {
        let out = run(args, &env).await;
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        let text = stdout(&out);
        if args[0].contains('V') || args[0] == "--version" {
            assert!(
                text.starts_with("wombat-heartbeat ") && text.contains(env!("CARGO_PKG_VERSION")),
                "{args:?}: {text}"
            );
        } else {
            assert!(text.contains("Usage"), "{args:?}: {text}");
        }
    }
    let after: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(before, after, "no files created");
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 0);
}

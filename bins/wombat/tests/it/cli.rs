//! `wombat` as a child process with its environment set on the child only,
//! run from an empty directory so no stray `.env` or `wombat.toml` is read.

use std::process::{Command, Output};

use serde_json::Value;
use wombat_controlplane::{JwtAlgorithm, JwtConfig};
use wombat_mc_lite::{DbLocation, McLite, McLiteConfig, RunningMcLite};

const SECRET: &str = "wombat-cli-test-secret";

fn dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A private copy of `workspace-examples/default` in a temporary folder:
/// tests never depend on the repository's own files, which a user may have
/// changed (e.g. with a `.boot-complete` left by `POST /boot/complete`).
pub(crate) fn example_workspace() -> tempfile::TempDir {
    fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_tree(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }
    let source =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workspace-examples/default");
    let copy = tempfile::tempdir().unwrap();
    copy_tree(&source, copy.path());
    let _ = std::fs::remove_file(copy.path().join(".boot-complete"));
    copy
}

fn wombat_in(cwd: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wombat"));
    cmd.args(args).current_dir(cwd).env_clear();
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn wombat(args: &[&str], env: &[(&str, &str)]) -> Output {
    wombat_in(&dir("wombat-cli"), args, env)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn backend() -> RunningMcLite {
    let mut cfg = McLiteConfig::new(
        JwtConfig::new(SECRET, JwtAlgorithm::HS256).unwrap(),
        DbLocation::Memory,
    );
    cfg.internal_token = Some("cli-internal".into());
    McLite::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

#[test]
fn help_lists_every_subcommand() {
    let out = wombat(&["--help"], &[]);
    assert!(out.status.success());
    let help = stdout(&out);
    for sub in [
        "serve",
        "dispatcher",
        "heartbeat",
        "standup",
        "conformance",
        "mc-lite",
    ] {
        assert!(help.contains(sub), "{sub} missing:\n{help}");
    }
}

#[test]
fn each_subcommand_help_documents_its_environment() {
    let cases: &[(&str, &[&str])] = &[
        (
            "serve",
            &[
                "WOMBAT_PORT",
                "BACKEND_URL",
                "AGENT_JWT_SECRET",
                "LLM_PROVIDER",
                "WOMBAT_WORKSPACE",
                "WOMBAT_DEFAULT_TASK",
            ],
        ),
        (
            "dispatcher",
            &[
                "--once",
                "BACKEND_URL",
                "INTERNAL_TOKEN",
                "AGENT_DAEMON_URL",
                "DISPATCH_LIMIT_USERS",
            ],
        ),
        ("heartbeat", &["USER_ID", "AGENT_JWT_SECRET", "AGENT_ROLE"]),
        ("standup", &["USER_ID", "STANDUP_TIMEZONE"]),
        (
            "conformance",
            &[
                "CONTROL_PLANE_URL",
                "AGENT_TOKEN",
                "AGENT_JWT_SECRET",
                "CONFORMANCE_REPORT_DIR",
            ],
        ),
        (
            "mc-lite",
            &["MC_LITE_PORT", "MC_LITE_DB", "INTERNAL_TOKEN", "notify"],
        ),
    ];
    for (sub, vars) in cases {
        let out = wombat(&[sub, "--help"], &[]);
        assert!(out.status.success(), "{sub}: {out:?}");
        let help = stdout(&out);
        for var in *vars {
            assert!(
                help.contains(var),
                "`wombat {sub} --help` lacks {var}:\n{help}"
            );
        }
    }
}

#[test]
fn usage_and_config_errors_exit_64() {
    assert_eq!(wombat(&[], &[]).status.code(), Some(64));
    assert_eq!(wombat(&["frobnicate"], &[]).status.code(), Some(64));

    let out = wombat(&["heartbeat"], &[("AGENT_JWT_SECRET", SECRET)]);
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("USER_ID"), "{}", stderr(&out));

    let out = wombat(&["dispatcher", "--once"], &[("INTERNAL_TOKEN", "x")]);
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("BACKEND_URL"), "{}", stderr(&out));

    let out = wombat(&["serve"], &[("WOMBAT_PORT", "abc")]);
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("WOMBAT_PORT"), "{}", stderr(&out));

    let out = wombat(&["mc-lite"], &[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("AGENT_JWT_SECRET"),
        "{}",
        stderr(&out)
    );

    let out = wombat(&["conformance"], &[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("CONTROL_PLANE_URL"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_standup_and_mc_lite_notify_reach_the_backend() {
    let server = backend().await;
    let url = server.url();
    let env = [
        ("BACKEND_URL", url.as_str()),
        ("AGENT_JWT_SECRET", SECRET),
        ("USER_ID", "cli-user"),
    ];
    let (hb, su, notify, once) = tokio::task::spawn_blocking({
        let url = url.clone();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move || {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let hb = wombat(&["heartbeat"], &env);
            let su = wombat(&["standup"], &env);
            let notify = wombat(
                &[
                    "mc-lite",
                    "notify",
                    "--url",
                    &url,
                    "--user-id",
                    "cli-user",
                    "--session-key",
                    "user:cli-user:agent",
                    "--content",
                    "from the cli",
                ],
                &[("INTERNAL_TOKEN", "cli-internal")],
            );
            // No daemon listens on port 9: the poll works, the send fails,
            // and `--once` still exits 0.
            let once = wombat(
                &["dispatcher", "--once"],
                &[
                    ("BACKEND_URL", &url),
                    ("INTERNAL_TOKEN", "cli-internal"),
                    ("AGENT_DAEMON_URL", "http://127.0.0.1:9"),
                ],
            );
            (hb, su, notify, once)
        }
    })
    .await
    .unwrap();
    assert!(hb.status.success(), "{hb:?}");
    assert!(stdout(&hb).ends_with("heartbeat_ok\n"), "{}", stdout(&hb));
    assert!(su.status.success(), "{su:?}");
    assert!(stdout(&su).ends_with("standup_ok\n"), "{}", stdout(&su));
    assert!(notify.status.success(), "{notify:?}");
    let queued: Value = serde_json::from_str(stdout(&notify).trim()).unwrap();
    assert!(queued["notification_id"].is_string(), "{queued}");
    assert!(once.status.success(), "{once:?}");
    let tick: Value = serde_json::from_str(stdout(&once).trim()).unwrap();
    assert_eq!(tick["event"], "dispatcher_tick");
    assert_eq!(
        (&tick["deliveries"], &tick["failed"]),
        (&1.into(), &1.into())
    );
    server.shutdown().await;
}

#[test]
fn dotenv_in_the_working_directory_is_read() {
    let cwd = dir("wombat-cli-dotenv");
    std::fs::write(cwd.join(".env"), "AGENT_JWT_SECRET=from-dotenv\n").unwrap();
    // Only USER_ID is missing now, so that is what the error names.
    let out = wombat_in(&cwd, &["standup"], &[]);
    assert_eq!(out.status.code(), Some(64));
    let err = stderr(&out);
    assert!(
        err.contains("USER_ID") && !err.contains("AGENT_JWT_SECRET"),
        "{err}"
    );
}

#[test]
fn env_example_lists_every_variable_commented_out() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.env.example");
    let text = std::fs::read_to_string(path).unwrap();
    for line in text.lines() {
        let t = line.trim();
        assert!(
            t.is_empty() || t.starts_with('#'),
            "uncommented line: {line:?}"
        );
    }
    // Every documented variable appears as a `# NAME=` line.
    let vars = [
        "WOMBAT_HOST",
        "WOMBAT_PORT",
        "BACKEND_URL",
        "AGENT_DAEMON_API_KEY",
        "AGENT_JWT_SECRET",
        "AGENT_JWT_ALGORITHM",
        "LLM_PROVIDER",
        "LLM_MODEL_DEFAULT",
        "LLM_MODEL_CHEAP",
        "LLM_MODEL_BEST",
        "LLM_MODEL_FALLBACK",
        "OPENAI_MODEL_DEFAULT",
        "OPENAI_MODEL_CHEAP",
        "OPENAI_MODEL_BEST",
        "OPENAI_MODEL_FALLBACK",
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "XAI_API_KEY",
        "GROQ_API_KEY",
        "MISTRAL_API_KEY",
        "OPENROUTER_API_KEY",
        "OPENAI_BASE_URL",
        "ANTHROPIC_BASE_URL",
        "GOOGLE_BASE_URL",
        "XAI_BASE_URL",
        "GROQ_BASE_URL",
        "MISTRAL_BASE_URL",
        "OPENROUTER_BASE_URL",
        "OLLAMA_BASE_URL",
        "WOMBAT_WORKSPACE",
        "WOMBAT_STATE_DIR",
        "WOMBAT_DEFAULT_TASK",
        "WOMBAT_RETRY_ATTEMPTS",
        "WOMBAT_RETRY_DELAY_MS",
        "WOMBAT_RETRY_MAX_DELAY_MS",
        "WOMBAT_RETRY_JITTER",
        "WOMBAT_CONTEXT_WARNING_THRESHOLD",
        "WOMBAT_DEFAULT_TIMEZONE",
        "WOMBAT_INCLUDE_TIME_CONTEXT",
        "WOMBAT_MAX_CHARS_PER_FILE",
        "WOMBAT_BOOTSTRAP_MAX_CHARS",
        "WOMBAT_SKILLS_MAX_CHARS",
        "WOMBAT_METRICS_PUBLIC",
        "WOMBAT_MAX_BODY_BYTES",
        "WOMBAT_HEADER_TIMEOUT_SECS",
        "WOMBAT_REQUEST_TIMEOUT_SECS",
        "WOMBAT_SHUTDOWN_TIMEOUT_SECS",
        "WOMBAT_MAX_CONCURRENT_LLM",
        "WOMBAT_WEBHOOK_ALLOWED_HOSTS",
        "WOMBAT_WEBHOOK_ALLOW_PRIVATE",
        "WOMBAT_WEBHOOK_MAX_IN_FLIGHT",
        "WOMBAT_PRICING_FILE",
        "WOMBAT_REDIS_URL",
        "WOMBAT_BUDGET_USD_DAY",
        "WOMBAT_BUDGET_USD_MONTH",
        "WOMBAT_BUDGET_SOFT_PERCENT",
        "WOMBAT_RATE_RPM",
        "WOMBAT_RATE_TPM",
        "WOMBAT_USER_CONCURRENCY",
        "WOMBAT_BUDGET_TIMEZONE",
        "WOMBAT_LIMITS_ON_STORE_ERROR",
        "WOMBAT_EMBEDDED_BACKEND",
        "WOMBAT_DATA_DIR",
        "MC_LITE_PORT",
        "MC_LITE_HOST",
        "MC_LITE_DB",
        "WOMBAT_LOG_FORMAT",
        "RUST_LOG",
        "INTERNAL_TOKEN",
        "AGENT_DAEMON_URL",
        "USER_ID",
        "AGENT_ROLE",
        "STANDUP_TIMEZONE",
        "DISPATCH_LIMIT_USERS",
        "DISPATCH_LIMIT_NOTIFICATIONS",
        "DISPATCH_MIN_INTERVAL_SEC",
        "DISPATCH_MAX_INTERVAL_SEC",
        "DISPATCH_CONCURRENCY",
        "DISPATCH_SEND_TIMEOUT_SEC",
        "CONTROL_PLANE_URL",
        "AGENT_TOKEN",
        "CONFORMANCE_REPORT_DIR",
    ];
    for var in vars {
        let needle = format!("# {var}=");
        assert!(
            text.lines().any(|l| l.starts_with(&needle)),
            "{var} missing from .env.example"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_passes_against_the_reference_backend() {
    let server = backend().await;
    let url = server.url();
    let reports = dir("wombat-cli-conformance");
    let out = tokio::task::spawn_blocking({
        let reports = reports.clone();
        move || {
            wombat(
                &["conformance"],
                &[
                    ("CONTROL_PLANE_URL", &url),
                    ("AGENT_JWT_SECRET", SECRET),
                    ("INTERNAL_TOKEN", "cli-internal"),
                    ("CONFORMANCE_REPORT_DIR", reports.to_str().unwrap()),
                ],
            )
        }
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(reports.join("conformance.json")).unwrap())
            .unwrap();
    assert!(report.is_object(), "{report}");
    assert!(reports.join("junit.xml").exists());
    server.shutdown().await;
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `wombat serve` with the embedded in-memory backend and the echo provider
/// answers a real agent request, then stops with exit 0 on SIGTERM.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_and_stops_on_sigterm() {
    use std::process::Stdio;

    let example = example_workspace();
    let workspace = example.path();
    let cwd = dir("wombat-cli-serve");
    let http = reqwest::Client::new();
    for _ in 0..10 {
        let (port, mc_port) = (free_port(), free_port());
        let mut child = Command::new(env!("CARGO_BIN_EXE_wombat"))
            .arg("serve")
            .current_dir(&cwd)
            .env_clear()
            .env("WOMBAT_HOST", "127.0.0.1")
            .env("WOMBAT_PORT", port.to_string())
            .env("MC_LITE_PORT", mc_port.to_string())
            .env("MC_LITE_DB", ":memory:")
            .env("AGENT_JWT_SECRET", SECRET)
            .env("LLM_PROVIDER", "echo")
            .env("WOMBAT_WORKSPACE", workspace)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let mut healthy = false;
        for _ in 0..1000 {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if let Ok(r) = http.get(format!("{base}/health")).send().await
                && r.status().is_success()
            {
                healthy = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if !healthy {
            // Most likely a port was taken in between: try other ports.
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            // The daemon says "binding"; the embedded backend "cannot listen
            // on ...: Address already in use".
            assert!(
                err.contains("binding") || err.contains("Address already in use"),
                "serve failed: {err}"
            );
            continue;
        }
        let reply: Value = http
            .post(format!("{base}/api/agents/send"))
            .json(&serde_json::json!({
                "user_id": "cli-user",
                "session_key": "user:cli-user:agent",
                "message": "hello serve",
                "task_title": "CLI",
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(reply["status"], "ok", "{reply}");
        assert!(
            reply["response"].as_str().unwrap().contains("hello serve"),
            "{reply}"
        );

        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = tokio::task::spawn_blocking(move || {
            for _ in 0..1500 {
                if let Some(status) = child.try_wait().unwrap() {
                    return status;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = child.kill();
            panic!("wombat serve did not stop on SIGTERM");
        })
        .await
        .unwrap();
        assert_eq!(status.code(), Some(0), "{status:?}");
        return;
    }
    panic!("no free ports for wombat serve");
}

#[test]
fn help_and_version_answer_without_side_effects() {
    let cwd = dir("wombat-first-run");
    let _ = std::fs::remove_dir_all(&cwd);
    std::fs::create_dir_all(&cwd).unwrap();
    for args in [
        &["--help"][..],
        &["-h"],
        &["--version"],
        &["-V"],
        &["serve", "--help"],
        &["serve", "-h"],
        &["mc-lite", "--help"],
        &["conformance", "--help"],
    ] {
        let out = wombat_in(&cwd, args, &[]);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        let text = stdout(&out);
        if args[0] == "--version" || args[0] == "-V" {
            assert_eq!(text.trim(), concat!("wombat ", env!("CARGO_PKG_VERSION")));
        } else {
            assert!(text.contains("Usage: wombat"), "{args:?}: {text}");
        }
        let created: Vec<_> = std::fs::read_dir(&cwd).unwrap().collect();
        assert!(created.is_empty(), "{args:?} created {created:?}");
    }
    // `wombat serve --help` lists the daemon's variables.
    assert!(stdout(&wombat_in(&cwd, &["serve", "--help"], &[])).contains("WOMBAT_MAX_CONNECTIONS"));
}

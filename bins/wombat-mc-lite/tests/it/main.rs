//! The `wombat-mc-lite` binary as a new user first runs it: `--help` and
//! `--version` answer and exit 0 without side effects; it listens on
//! loopback by default; secrets may come from `*_FILE`; `approve` resolves a
//! tool request.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn help_and_version_answer_without_side_effects() {
    for arg in ["--help", "-h", "--version", "-V"] {
        let cwd = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("first-run{arg}"));
        let _ = std::fs::remove_dir_all(&cwd);
        std::fs::create_dir_all(&cwd).expect("mkdir");
        let out = Command::new(env!("CARGO_BIN_EXE_wombat-mc-lite"))
            .arg(arg)
            .current_dir(&cwd)
            .env_clear()
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(0), "{arg}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        if arg == "--version" || arg == "-V" {
            assert_eq!(
                stdout.trim(),
                concat!("wombat-mc-lite ", env!("CARGO_PKG_VERSION")),
                "{arg}"
            );
        } else {
            assert!(stdout.contains("Usage: wombat-mc-lite"), "{arg}: {stdout}");
        }
        let created: Vec<_> = std::fs::read_dir(&cwd).expect("read_dir").collect();
        assert!(created.is_empty(), "{arg} created {created:?}");
    }
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

fn mc_lite(cwd: &std::path::Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wombat-mc-lite"));
    cmd.current_dir(cwd)
        .env_clear()
        .env("MC_LITE_PORT", "0")
        .env("MC_LITE_DB", ":memory:")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied());
    cmd
}

#[test]
fn listens_on_loopback_by_default_with_the_secret_from_a_file() {
    let dir = scratch("secret-file");
    let file = dir.join("jwt");
    std::fs::write(&file, "from-a-file\n").expect("write");
    let mut child = mc_lite(
        &dir,
        &[("AGENT_JWT_SECRET_FILE", file.to_str().expect("utf8"))],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.starts_with("mc-lite listening on http://127.0.0.1:"),
        "{line}"
    );
}

#[test]
fn secret_file_errors_name_the_variable() {
    let dir = scratch("secret-file-errors");
    let file = dir.join("jwt");
    std::fs::write(&file, "content-never-shown\n").expect("write");
    let path = file.to_str().expect("utf8");
    let out = mc_lite(
        &dir,
        &[
            ("AGENT_JWT_SECRET_FILE", path),
            ("AGENT_JWT_SECRET", "inline"),
        ],
    )
    .output()
    .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("set either AGENT_JWT_SECRET or AGENT_JWT_SECRET_FILE"),
        "{stderr}"
    );
    let missing = dir.join("nope");
    let out = mc_lite(
        &dir,
        &[
            ("AGENT_JWT_SECRET", "s"),
            ("INTERNAL_TOKEN_FILE", missing.to_str().expect("utf8")),
        ],
    )
    .output()
    .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid INTERNAL_TOKEN_FILE"), "{stderr}");
    assert!(!stderr.contains("content-never-shown"), "{stderr}");
}

#[test]
fn a_taken_port_is_named_once_and_nothing_is_created() {
    let dir = scratch("taken-port");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let out = mc_lite(&dir, &[("AGENT_JWT_SECRET", "s"), ("MC_LITE_PORT", &port)])
        .env_remove("MC_LITE_DB")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("MC_LITE_PORT"), "{stderr}");
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "{stderr}"
    );
    let created: Vec<_> = std::fs::read_dir(&dir).expect("read_dir").collect();
    assert!(created.is_empty(), "created {created:?}");
}

#[test]
fn logs_piped_to_a_file_have_no_colour_codes() {
    let dir = scratch("no-colour");
    let mut child = mc_lite(&dir, &[("AGENT_JWT_SECRET", "s"), ("RUST_LOG", "info")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    // SIGTERM: a clean shutdown logs at info level before exiting.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("shutting down"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}

/// Runs `wombat-mc-lite approve ...` against `url` on a blocking thread
/// (the test's runtime keeps serving the backend meanwhile).
async fn approve_cli(url: &str, secret: &str, args: &[&str]) -> std::process::Output {
    let dir = scratch(&format!(
        "approve-{}",
        args.join("-").replace(['/', ' '], "_")
    ));
    let mut cmd = mc_lite(
        &dir,
        &[("AGENT_JWT_SECRET", secret), ("CONTROL_PLANE_URL", url)],
    );
    cmd.arg("approve").args(args);
    tokio::task::spawn_blocking(move || cmd.output().expect("run"))
        .await
        .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_resolves_a_pending_tool_request_once() {
    use wombat_controlplane::{ControlPlane, ControlPlaneConfig, JwtAlgorithm, JwtConfig};
    use wombat_core::controlplane::{NewTask, NewToolRequest};
    use wombat_mc_lite::{DbLocation, McLite, McLiteConfig};

    let secret = "cli-secret";
    let jwt = JwtConfig::new(secret, JwtAlgorithm::HS256).expect("jwt");
    let server = McLite::start(
        McLiteConfig::new(jwt.clone(), DbLocation::Memory),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("start");
    let url = server.url();
    let agent = ControlPlane::new(ControlPlaneConfig::new(url.clone(), jwt))
        .expect("client")
        .agent("ann", "agent");
    let task = agent
        .create_task(NewTask {
            title: "t".into(),
            description: None,
            status: None,
            metadata: None,
            idempotency_key: None,
        })
        .await
        .expect("task");
    let mut ids = Vec::new();
    for call in ["c1", "c2"] {
        let req = agent
            .create_tool_request(NewToolRequest {
                task_id: task.id.clone(),
                tool: "mc__delete_task".into(),
                arguments: serde_json::json!({}),
                call_id: call.into(),
                agent_role: None,
                idempotency_key: None,
                context: None,
            })
            .await
            .expect("tool request");
        ids.push(req.id);
    }

    let out = approve_cli(&url, secret, &[&ids[0], "--user", "ann"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(record["status"], "approved");

    let args = [
        ids[1].as_str(),
        "--user",
        "ann",
        "--reject",
        "--reason",
        "not now",
    ];
    let out = approve_cli(&url, secret, &args).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (&record["status"], &record["reason"]),
        (
            &serde_json::json!("rejected"),
            &serde_json::json!("not now")
        )
    );

    // A second decision, another tenant, or a wrong secret: exit 1, named.
    let out = approve_cli(&url, secret, &[&ids[0], "--user", "ann", "--reject"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already resolved"),
        "{out:?}"
    );
    let out = approve_cli(&url, secret, &[&ids[0], "--user", "bob"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{out:?}"
    );
    let out = approve_cli(&url, "wrong", &[&ids[0], "--user", "ann"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{out:?}"
    );
    assert_eq!(
        agent.get_tool_request(&ids[0]).await.expect("get").status,
        wombat_core::controlplane::ToolRequestStatus::Approved
    );
    server.shutdown().await;
}

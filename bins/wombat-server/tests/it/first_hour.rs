//! The first hour with the binary, as a new user meets it: `--help` and
//! `--version` without side effects, a taken port named once by its
//! variable with nothing created, logs on stderr without colour when
//! redirected, warnings about missing provider keys and misspelled
//! settings, the loopback default bind, `*_FILE` secrets, and control
//! characters escaped in the human log format.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The server in `cwd` with a clean environment plus `vars`.
fn server_in(cwd: &Path, vars: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wombat-server"));
    cmd.current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn help_and_version_answer_without_side_effects() {
    for arg in ["--help", "-h", "--version", "-V"] {
        let cwd = tempfile::tempdir().expect("tempdir");
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            server_in(cwd.path(), &[]).arg(arg).output(),
        )
        .await
        .expect("answers at once instead of serving")
        .expect("run");
        assert_eq!(out.status.code(), Some(0), "{arg}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        if arg.contains('V') || arg == "--version" {
            assert_eq!(
                stdout.trim(),
                format!("wombat-server {}", env!("CARGO_PKG_VERSION"))
            );
        } else {
            assert!(stdout.contains("Usage: wombat-server"), "{stdout}");
            assert!(stdout.contains("WOMBAT_PORT"), "{stdout}");
        }
        assert!(
            entries(cwd.path()).is_empty(),
            "{arg} created {:?}",
            entries(cwd.path())
        );
    }
    let cwd = tempfile::tempdir().expect("tempdir");
    let out = server_in(cwd.path(), &[])
        .arg("--bogus")
        .output()
        .await
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(entries(cwd.path()).is_empty());
}

#[tokio::test]
async fn a_taken_port_is_named_once_and_nothing_is_created() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let ws = tempfile::tempdir().expect("workspace");
    for (var, other) in [
        ("WOMBAT_PORT", "MC_LITE_PORT"),
        ("MC_LITE_PORT", "WOMBAT_PORT"),
    ] {
        let cwd = tempfile::tempdir().expect("tempdir");
        let out = server_in(
            cwd.path(),
            &[
                ("LLM_PROVIDER", "echo".into()),
                ("WOMBAT_HOST", "127.0.0.1".into()),
                ("WOMBAT_WORKSPACE", ws.path().display().to_string()),
                (var, port.clone()),
                (other, free_port().to_string()),
                ("RUST_LOG", "error".into()),
            ],
        )
        .output()
        .await
        .expect("run");
        assert_eq!(out.status.code(), Some(1), "{var}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(var), "{var}: {stderr}");
        assert_eq!(
            stderr.matches("Address already in use").count(),
            1,
            "said once: {stderr}"
        );
        assert!(
            entries(cwd.path()).is_empty(),
            "{var} taken, yet created {:?}",
            entries(cwd.path())
        );
    }
}

/// Starts the server; its stdout banner and a stderr reader.
async fn start(vars: &[(&str, String)], cwd: &Path) -> (Child, Vec<String>, StderrLines) {
    let mut child = server_in(cwd, vars).spawn().expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stdout).lines();
    let banner = tokio::time::timeout(Duration::from_secs(60), async {
        let mut banner = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.is_empty() && !banner.is_empty() {
                break;
            }
            if !line.is_empty() {
                banner.push(line);
            }
        }
        banner
    })
    .await
    .expect("banner");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, banner, StderrLines(BufReader::new(stderr).lines()))
}

struct StderrLines(tokio::io::Lines<BufReader<tokio::process::ChildStderr>>);

impl StderrLines {
    /// Lines up to and including the first that contains `needle`.
    async fn until(&mut self, needle: &str) -> Vec<String> {
        tokio::time::timeout(Duration::from_secs(60), async {
            let mut seen = Vec::new();
            while let Ok(Some(line)) = self.0.next_line().await {
                let done = line.contains(needle);
                seen.push(line);
                if done {
                    return seen;
                }
            }
            panic!("stderr ended without {needle:?}: {seen:#?}");
        })
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} on stderr"))
    }
}

#[tokio::test]
async fn logs_go_to_stderr_uncoloured_with_startup_warnings() {
    let cwd = tempfile::tempdir().expect("tempdir");
    let ws = tempfile::tempdir().expect("workspace");
    let port = free_port();
    let (mut child, banner, mut stderr) = start(
        &[
            ("WOMBAT_PORT", port.to_string()),
            ("MC_LITE_PORT", free_port().to_string()),
            (
                "WOMBAT_DATA_DIR",
                cwd.path().join("data").display().to_string(),
            ),
            ("WOMBAT_WORKSPACE", ws.path().display().to_string()),
            // The provider variable names a keyless-looking provider, the
            // models say otherwise: the warnings follow the models.
            ("LLM_PROVIDER", "openai".into()),
            ("LLM_MODEL_DEFAULT", "echo/gpt-4o-mini".into()),
            (
                "LLM_MODEL_FALLBACK",
                "anthropic/claude-3-5-haiku-latest".into(),
            ),
            ("WOMBAT_PROT", "9000".into()),
            ("WOMBAT_DEFUALT_TASK", "Inbox".into()),
            ("RUST_LOG", "info".into()),
        ],
        cwd.path(),
    )
    .await;
    // Stdout carries the banner only.
    assert!(
        banner[0].starts_with("Wombat is listening on http://localhost:"),
        "{banner:?}"
    );
    assert!(
        banner.iter().any(
            |l| l.contains("access:  this machine only; to expose it set AGENT_DAEMON_API_KEY")
        ),
        "{banner:?}"
    );
    let logs = stderr.until("wombat listening").await;
    let all = logs.join("\n");
    assert!(
        !all.contains('\u{1b}'),
        "no colour when stderr is not a terminal: {all}"
    );
    assert!(
        all.contains(
            "unknown WOMBAT_* settings ignored (misspelled?): WOMBAT_DEFUALT_TASK, WOMBAT_PROT"
        ),
        "{all}"
    );
    assert!(
        all.contains("no API key for the fallback model anthropic/claude-3-5-haiku-latest: set ANTHROPIC_API_KEY"),
        "{all}"
    );
    assert!(
        !all.contains("no API key for the default"),
        "echo needs no key: {all}"
    );
    assert!(
        logs.iter().any(|l| l.contains("addr=127.0.0.1:")),
        "binds loopback by default: {all}"
    );
    child.start_kill().expect("kill");
    let _ = child.wait().await;
}

#[tokio::test]
async fn request_controlled_text_cannot_forge_log_lines() {
    let cwd = tempfile::tempdir().expect("tempdir");
    let ws = tempfile::tempdir().expect("workspace");
    let port = free_port();
    let (mut child, _banner, mut stderr) = start(
        &[
            ("WOMBAT_PORT", port.to_string()),
            ("MC_LITE_PORT", free_port().to_string()),
            (
                "WOMBAT_DATA_DIR",
                cwd.path().join("data").display().to_string(),
            ),
            ("WOMBAT_WORKSPACE", ws.path().display().to_string()),
            ("LLM_PROVIDER", "echo".into()),
            // A provider that cannot be reached: the 502 is logged at error
            // level with the model the request named.
            ("OPENAI_API_KEY", "sk-test".into()),
            (
                "OPENAI_BASE_URL",
                format!("http://127.0.0.1:{}/v1", free_port()),
            ),
            ("WOMBAT_RETRY_ATTEMPTS", "1".into()),
            ("RUST_LOG", "info".into()),
        ],
        cwd.path(),
    )
    .await;
    stderr.until("wombat listening").await;
    let forged = "openai/x\nFORGED ERROR line\u{1b}[31m";
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/agents/send"))
        .json(&serde_json::json!({
            "user_id": "demo",
            "session_key": "user:demo:agent",
            "message": "hi",
            "task_title": "Logs",
            "metadata": {"model": forged},
        }))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 502);
    let logs = stderr.until("served").await;
    let all = logs.join("\n");
    assert!(
        !logs.iter().any(|l| l.starts_with("FORGED")),
        "a request forged a log line: {all}"
    );
    assert!(
        !all.contains('\u{1b}'),
        "an escape sequence reached the log: {all}"
    );
    assert!(
        all.contains("FORGED ERROR line"),
        "the text is still there, escaped: {all}"
    );
    child.start_kill().expect("kill");
    let _ = child.wait().await;
}

#[tokio::test]
async fn secrets_can_come_from_files() {
    let cwd = tempfile::tempdir().expect("tempdir");
    let ws = tempfile::tempdir().expect("workspace");
    let secrets = tempfile::tempdir().expect("secrets");
    let key_file = secrets.path().join("daemon-key");
    std::fs::write(&key_file, "from-a-file\n").expect("write");
    let port = free_port();
    let vars = [
        ("WOMBAT_PORT", port.to_string()),
        ("WOMBAT_HOST", "127.0.0.1".to_owned()),
        ("MC_LITE_PORT", free_port().to_string()),
        (
            "WOMBAT_DATA_DIR",
            cwd.path().join("data").display().to_string(),
        ),
        ("WOMBAT_WORKSPACE", ws.path().display().to_string()),
        ("LLM_PROVIDER", "echo".into()),
        ("AGENT_DAEMON_API_KEY_FILE", key_file.display().to_string()),
        ("RUST_LOG", "warn".into()),
    ];
    let (mut child, _banner, _stderr) = start(&vars, cwd.path()).await;
    let http = reqwest::Client::new();
    let usage = format!("http://127.0.0.1:{port}/usage");
    let without = http.get(&usage).send().await.expect("send");
    assert_eq!(without.status(), 403);
    let with = http
        .get(&usage)
        .header("x-agent-daemon-key", "from-a-file")
        .send()
        .await
        .expect("send");
    assert_eq!(with.status(), 200, "the trailing newline is trimmed");
    child.start_kill().expect("kill");
    let _ = child.wait().await;

    // Both forms set, or an unreadable file: a config error naming the
    // variable, never the file's content.
    let mut both = vars.to_vec();
    both.push(("AGENT_DAEMON_API_KEY", "inline".into()));
    let out = server_in(cwd.path(), &both).output().await.expect("run");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("AGENT_DAEMON_API_KEY_FILE") && stderr.contains("not both"),
        "{stderr}"
    );
    let mut missing = vars.to_vec();
    missing.retain(|(k, _)| *k != "AGENT_DAEMON_API_KEY_FILE");
    missing.push((
        "AGENT_JWT_SECRET_FILE",
        secrets.path().join("nope").display().to_string(),
    ));
    let out = server_in(cwd.path(), &missing).output().await.expect("run");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid AGENT_JWT_SECRET_FILE"), "{stderr}");
    assert!(!stderr.contains("from-a-file"), "{stderr}");
}

#[test]
fn every_wombat_setting_read_by_the_code_is_known() {
    // The unknown-name warning is only as good as its list: every quoted
    // `"WOMBAT_*"` name in library and binary sources (tests excluded) must
    // be in it, so a new setting cannot be warned about as a misspelling.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut missing = Vec::new();
    for top in ["crates", "bins"] {
        for krate in std::fs::read_dir(root.join(top)).expect("read_dir") {
            let src = krate.expect("entry").path().join("src");
            let mut stack = vec![src];
            while let Some(dir) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for e in entries {
                    let path = e.expect("entry").path();
                    if path.is_dir() {
                        stack.push(path);
                        continue;
                    }
                    if path.extension().is_none_or(|x| x != "rs") {
                        continue;
                    }
                    let text = std::fs::read_to_string(&path).expect("source");
                    // Unit tests at the bottom of a file may name anything.
                    let code = text.split("#[cfg(test)]").next().unwrap_or("");
                    for (i, _) in code.match_indices("\"WOMBAT_") {
                        let name: String = code[i + 1..]
                            .chars()
                            .take_while(|c| {
                                c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_'
                            })
                            .collect();
                        if name.ends_with('_') {
                            continue; // a prefix such as "WOMBAT_RETRY_"
                        }
                        if !wombat_http::config::KNOWN_WOMBAT_VARS.contains(&name.as_str()) {
                            missing.push(format!("{name} ({})", path.display()));
                        }
                    }
                }
            }
        }
    }
    assert!(missing.is_empty(), "not in KNOWN_WOMBAT_VARS: {missing:#?}");
}

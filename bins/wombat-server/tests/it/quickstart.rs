//! The README's quickstart, executed: the exact run command line (as a
//! subprocess of the built binary, on free ports), `/health`, the `curl`
//! round trip with the echo provider, the message landing in the embedded
//! backend, and a graceful stop on SIGTERM. Also: README and CI run the same
//! test command, and a bad setting exits with code 64.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn readme() -> String {
    std::fs::read_to_string(repo_root().join("README.md")).expect("README.md")
}

/// The first line of the code block that follows `marker` in the README.
fn block_after(readme: &str, marker: &str) -> String {
    let rest = &readme[readme
        .find(marker)
        .unwrap_or_else(|| panic!("README has no {marker}"))..];
    let start = rest.find("```").expect("a code block after the marker");
    let body = &rest[start..];
    let body = &body[body.find('\n').expect("fence line") + 1..];
    let end = body.find("```").expect("closing fence");
    body[..end].trim().to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Splits `A=1 B=2 cargo run ...` into env assignments and the command.
fn split_env(line: &str) -> (Vec<(String, String)>, String) {
    let mut env = Vec::new();
    let mut words = line.split_whitespace().peekable();
    while let Some(word) = words.peek() {
        match word.split_once('=') {
            Some((k, v)) if k.chars().all(|c| c.is_ascii_uppercase() || c == '_') => {
                env.push((k.to_owned(), v.to_owned()));
                words.next();
            }
            _ => break,
        }
    }
    (env, words.collect::<Vec<_>>().join(" "))
}

/// The server binary with a clean environment plus `vars`.
/// A working directory laid out like the repository root for the server's
/// purposes (a copy of `wombat.toml` and of the example workspace it names),
/// so the README's command runs as written without reading or writing the
/// repository's own, possibly user-modified, files (e.g. a `.boot-complete`
/// or a `.env` left there).
fn repo_copy() -> tempfile::TempDir {
    fn copy_tree(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read_dir") {
            let entry = entry.expect("entry");
            let target = to.join(entry.file_name());
            if entry.file_type().expect("file type").is_dir() {
                copy_tree(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).expect("copy");
            }
        }
    }
    let copy = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        repo_root().join("wombat.toml"),
        copy.path().join("wombat.toml"),
    )
    .expect("copy wombat.toml");
    let example = copy.path().join("workspace-examples/default");
    copy_tree(&repo_root().join("workspace-examples/default"), &example);
    let _ = std::fs::remove_file(example.join(".boot-complete"));
    copy
}

fn server(cwd: &Path, vars: &[(String, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wombat-server"));
    cmd.current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Waits for the banner on stdout; its lines (the first and the indented
/// ones after it).
async fn wait_listening(child: &mut Child) -> Vec<String> {
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let banner = tokio::time::timeout(Duration::from_secs(60), async {
        let mut banner = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            let starts = line.starts_with("Wombat is listening on");
            if starts || (!banner.is_empty() && line.starts_with("  ")) {
                banner.push(line);
            } else if !banner.is_empty() {
                break;
            }
        }
        banner
    })
    .await;
    let banner = banner.unwrap_or_default();
    assert!(!banner.is_empty(), "the server never printed its banner");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    banner
}

/// Key paths of `v` (`a`, `a.b`) and its string leaves, except the `…`
/// placeholders of a documented example.
fn shape(v: &Value, prefix: &str, keys: &mut Vec<String>, strings: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let p = format!("{prefix}{k}");
                keys.push(p.clone());
                shape(child, &format!("{p}."), keys, strings);
            }
        }
        Value::String(s) if !s.contains('…') => {
            strings.push((prefix.trim_end_matches('.').to_owned(), s.clone()));
        }
        _ => {}
    }
}

/// Every `curl` command in the fenced code blocks of a Markdown document,
/// with `\` line continuations joined.
fn doc_curls(doc: &str) -> Vec<String> {
    let mut curls = Vec::new();
    let mut in_block = false;
    let mut current: Option<String> = None;
    for line in doc.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        let line = line.trim();
        match current.as_mut() {
            Some(cmd) => cmd.push_str(line.trim_end_matches('\\')),
            None if line.starts_with("curl ") => {
                current = Some(line.trim_end_matches('\\').to_owned())
            }
            None => continue,
        }
        if !line.ends_with('\\') {
            curls.extend(current.take());
        }
    }
    curls
}

/// The path (after `localhost:8081`) and the `-d '...'` JSON body of a curl.
fn parse_curl(curl: &str) -> (String, Option<Value>) {
    let url = curl
        .split_whitespace()
        .find(|w| w.contains("localhost:8081"))
        .unwrap_or_else(|| panic!("no localhost:8081 URL in {curl}"));
    let path = url[url.find("localhost:8081").expect("host") + "localhost:8081".len()..].to_owned();
    let body = curl.find("-d '").map(|start| {
        let rest = &curl[start + 4..];
        serde_json::from_str(&rest[..rest.rfind('\'').expect("end quote")]).expect("curl JSON")
    });
    (path, body)
}

#[test]
fn readme_and_ci_run_the_same_test_command() {
    let test_cmd = block_after(&readme(), "<!-- quickstart:test -->");
    assert_eq!(test_cmd, "cargo test --workspace");
    let ci = std::fs::read_to_string(repo_root().join(".ci/run")).expect(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == test_cmd),
        ".ci/run must run the README test command {test_cmd:?}"
    );
}

#[tokio::test]
async fn quickstart_round_trip() {
    let readme = readme();
    let (mut env, command) = split_env(&block_after(&readme, "<!-- quickstart:run -->"));
    assert_eq!(
        command, "cargo run --release -p wombat-server",
        "the README runs this binary"
    );
    assert!(env.iter().any(|(k, v)| k == "LLM_PROVIDER" && v == "echo"));

    let data = tempfile::tempdir().expect("tempdir");
    let (port, mc_port) = (free_port(), free_port());
    env.extend([
        ("WOMBAT_PORT".to_owned(), port.to_string()),
        ("MC_LITE_PORT".to_owned(), mc_port.to_string()),
        (
            "WOMBAT_DATA_DIR".to_owned(),
            data.path().display().to_string(),
        ),
        (
            "AGENT_JWT_SECRET".to_owned(),
            "quickstart-test-secret".to_owned(),
        ),
    ]);
    let cwd = repo_copy();
    let mut child = server(cwd.path(), &env)
        .spawn()
        .expect("spawn wombat-server");
    let banner = wait_listening(&mut child).await;
    // docs/QUICKSTART.md shows the banner for the default ports.
    let quickstart =
        std::fs::read_to_string(repo_root().join("docs/QUICKSTART.md")).expect("QUICKSTART.md");
    let documented = block_after(&quickstart, "listens and a ready-to-paste");
    let printed = banner
        .join("\n")
        .replace(&format!("localhost:{port}"), "localhost:8081")
        .replace(&format!("127.0.0.1:{mc_port}"), "127.0.0.1:9001");
    assert_eq!(printed.trim(), documented, "docs/QUICKSTART.md's banner");

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let health: Value = http
        .get(format!("{base}/health"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("health json");
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["workspace"]["status"], "ok");
    assert!(
        health["workspace"]["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("workspace-examples/default"))
    );

    // The README's curl, replayed: same path, same body.
    let curl = block_after(&readme, "<!-- quickstart:curl -->");
    let (path, body) = parse_curl(&curl);
    let body = body.expect("the README curl sends a body");
    let resp = http
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let reply: Value = resp.json().await.expect("reply json");
    // The README's answer has the real one's keys and strings.
    let after_curl = &readme[readme.find("<!-- quickstart:curl -->").expect("marker")..];
    let after_curl = &after_curl[after_curl.find("\n```\n").expect("curl block ends") + 5..];
    let shown: Value = serde_json::from_str(&block_after(after_curl, "```json"))
        .expect("the README's answer is JSON");
    let (mut want, mut want_strings, mut got, mut got_strings) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    shape(&shown, "", &mut want, &mut want_strings);
    shape(&reply, "", &mut got, &mut got_strings);
    want.sort();
    got.sort();
    assert_eq!(want, got, "README.md's answer has the real keys: {reply}");
    for (path, value) in &want_strings {
        assert!(
            got_strings.contains(&(path.clone(), value.clone())),
            "README.md shows {path} = {value:?}: {reply}"
        );
    }
    assert_eq!(reply["status"], "ok");
    assert_eq!(
        reply["response"],
        format!("echo: {}", body["message"].as_str().expect("message"))
    );
    assert_eq!(reply["provider"], "echo");
    assert_eq!(reply["cost"]["totalCost"], 0.0);

    // The reply is in the embedded backend, in the user's task.
    let jwt = wombat_controlplane::JwtConfig::new(
        "quickstart-test-secret",
        wombat_controlplane::JwtAlgorithm::HS256,
    )
    .expect("jwt config");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let token = wombat_controlplane::jwt::mint(&jwt, "demo", "agent", None, now).expect("token");
    let task_id = reply["task_id"].as_str().expect("task id");
    let messages: Value = http
        .get(format!(
            "http://127.0.0.1:{mc_port}/api/mission-control/tasks/{task_id}/messages"
        ))
        .header("X-Agent-Token", token)
        .send()
        .await
        .expect("messages")
        .json()
        .await
        .expect("messages json");
    let text = messages.to_string();
    assert!(
        text.contains(reply["message_id"].as_str().expect("message id")),
        "{text}"
    );
    assert!(text.contains("echo: Hello!"), "{text}");

    // Every curl of docs/QUICKSTART.md works as written.
    let quickstart =
        std::fs::read_to_string(repo_root().join("docs/QUICKSTART.md")).expect("QUICKSTART.md");
    let curls = doc_curls(&quickstart);
    assert!(curls.len() >= 2, "{curls:?}");
    for curl in curls {
        let (path, body) = parse_curl(&curl);
        let req = match &body {
            Some(b) => http.post(format!("{base}{path}")).json(b),
            None => http.get(format!("{base}{path}")),
        };
        let resp = req.send().await.expect("doc curl");
        assert_eq!(resp.status(), 200, "{curl}");
        let text = resp.text().await.expect("doc curl body");
        if path.ends_with("/stream") {
            assert!(text.starts_with("event: start"), "{text}");
            assert!(
                text.contains("event: done") && text.contains("\"persisted\":true"),
                "{text}"
            );
        } else {
            let v: Value = serde_json::from_str(&text).expect("JSON answer");
            assert_eq!(v["status"], "ok", "{curl}: {v}");
        }
    }

    // SIGTERM stops it gracefully with exit code 0.
    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops within the drain deadline")
        .expect("exit status");
    assert!(status.success(), "{status:?}");
    assert!(
        data.path().join("mc-lite.db").exists(),
        "the embedded backend keeps its data under WOMBAT_DATA_DIR"
    );
}

#[tokio::test]
async fn invalid_setting_exits_64_naming_the_variable() {
    for (var, value) in [
        ("WOMBAT_PORT", "abc"),
        ("WOMBAT_CONTEXT_WARNING_THRESHOLD", "300"),
        ("LLM_PROVIDER", "skynet"),
        ("AGENT_JWT_ALGORITHM", "RS256"),
    ] {
        let cwd = repo_copy();
        let out = server(cwd.path(), &[(var.to_owned(), value.to_owned())])
            .output()
            .await
            .expect("run wombat-server");
        assert_eq!(out.status.code(), Some(64), "{var}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(var), "{stderr}");
        if var == "WOMBAT_PORT" {
            // docs/CONFIGURATION.md quotes this line verbatim.
            let doc = std::fs::read_to_string(repo_root().join("docs/CONFIGURATION.md"))
                .expect("CONFIGURATION.md");
            let quoted = block_after(&doc, "```text\n");
            assert_eq!(
                stderr.trim_end(),
                quoted.trim_end(),
                "docs/CONFIGURATION.md"
            );
        }
    }
}

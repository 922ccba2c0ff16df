//! The command lines of `README.md` and `docs/*.md` run as written.
//!
//! Every `cargo ...` line of a `sh`/`bash` block is found, its environment
//! (leading `NAME=value` words and the block's `export`s) collected, and the
//! command run through the `wombat` binary, which calls the same entry points
//! as the dedicated binaries: `cargo run -p wombat-server` is `wombat serve`,
//! `cargo run -p wombat-mc-lite-bin -- ARGS` is `wombat mc-lite ARGS`,
//! `cargo xtask conformance` is `wombat conformance`. The lines `.ci/run`
//! runs itself (`cargo test --workspace`, `cargo xtask conformance --local`)
//! must appear there verbatim. Placeholders (`sk-...`, `your-shared-secret`,
//! `https://mc.example.com`, `http://localhost:8000`) are replaced by test
//! values and a reference backend on a free port; nothing reaches the
//! network beyond loopback.
//!
//! For the conformance command, the control-plane quickstart's console
//! output, `conformance.json` example, table of checks and CI snippet are
//! compared with the real run as well.
//!
//! `curl` lines are run by the API, quickstart and control-plane doc tests;
//! `docs/BENCHMARKS.md`'s commands (release builds, profilers) are not run
//! by the test suite.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use wombat_controlplane::{JwtAlgorithm, JwtConfig};
use wombat_mc_lite::{DbLocation, McLite, McLiteConfig, RunningMcLite};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
/// What placeholder secrets become.
const TEST_SECRET: &str = "doc-commands-secret";
const TEST_INTERNAL: &str = "doc-commands-internal";

/// One `cargo ...` command line of a doc.
#[derive(Debug)]
pub(crate) struct DocCommand {
    pub(crate) at: String,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) words: Vec<String>,
    /// `# ...` comment lines right after it (documented output).
    pub(crate) output: Vec<String>,
}

fn is_assignment(word: &str) -> Option<(&str, &str)> {
    let (name, value) = word.split_once('=')?;
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    ok.then_some((name, value))
}

/// Drops a ` # comment` that is not inside quotes.
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (None, '#') if prev_space => return line[..i].trim_end(),
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    line
}

pub(crate) fn doc_commands(file: &str, text: &str) -> Vec<DocCommand> {
    let mut out: Vec<DocCommand> = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((_, line)) = lines.next() {
        let Some(lang) = line.trim().strip_prefix("```") else {
            continue;
        };
        let shell = matches!(lang.trim(), "sh" | "bash");
        let mut exports: Vec<(String, String)> = Vec::new();
        let mut last_was_command = false;
        let mut logical = String::new();
        let mut start = 0;
        for (i, line) in lines.by_ref() {
            if line.trim().starts_with("```") {
                break;
            }
            if !shell {
                continue;
            }
            if logical.is_empty() {
                start = i + 1;
            }
            if let Some(head) = line.trim_end().strip_suffix('\\') {
                logical.push_str(head);
                logical.push(' ');
                continue;
            }
            logical.push_str(line);
            let full = std::mem::take(&mut logical);
            let trimmed = full.trim();
            if let Some(comment) = trimmed.strip_prefix('#') {
                if last_was_command && let Some(cmd) = out.last_mut() {
                    cmd.output.push(comment.trim().to_owned());
                }
                continue;
            }
            last_was_command = false;
            let words: Vec<&str> = strip_comment(trimmed).split_whitespace().collect();
            if words.first() == Some(&"export") {
                for w in &words[1..] {
                    let (k, v) = is_assignment(w).expect("export NAME=value");
                    exports.push((k.to_owned(), v.to_owned()));
                }
                continue;
            }
            let assigned = words
                .iter()
                .take_while(|w| is_assignment(w).is_some())
                .count();
            if words.get(assigned) != Some(&"cargo") {
                continue; // curl, git, shell variables: run elsewhere
            }
            let mut env = exports.clone();
            env.extend(
                words[..assigned]
                    .iter()
                    .filter_map(|w| is_assignment(w).map(|(k, v)| (k.to_owned(), v.to_owned()))),
            );
            out.push(DocCommand {
                at: format!("{file}:{start}"),
                env,
                words: words[assigned..].iter().map(|w| (*w).to_owned()).collect(),
                output: Vec::new(),
            });
            last_was_command = true;
        }
    }
    out
}

fn all_doc_commands() -> Vec<DocCommand> {
    let mut files = vec![PathBuf::from(REPO).join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(PathBuf::from(REPO).join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .filter(|p| p.file_name().is_some_and(|n| n != "BENCHMARKS.md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut out = Vec::new();
    for path in files {
        let name = path
            .strip_prefix(REPO)
            .unwrap_or(&path)
            .display()
            .to_string();
        out.extend(doc_commands(
            &name,
            &std::fs::read_to_string(&path).unwrap(),
        ));
    }
    out
}

/// The value a test run uses for a documented `name=value`.
fn concrete(name: &str, value: &str, backend: &str) -> String {
    let placeholder = value.contains("...")
        || value.contains("example.com")
        || value.starts_with("your-")
        || value == "http://localhost:8000";
    if !placeholder {
        return value.to_owned();
    }
    match name {
        "BACKEND_URL" | "CONTROL_PLANE_URL" => backend.to_owned(),
        "AGENT_JWT_SECRET" => TEST_SECRET.to_owned(),
        "INTERNAL_TOKEN" => TEST_INTERNAL.to_owned(),
        "AGENT_DAEMON_API_KEY" => "doc-commands-daemon-key".to_owned(),
        n if n.ends_with("_API_KEY") => "sk-doc-commands".to_owned(),
        _ => panic!("no test value for the placeholder {name}={value}"),
    }
}

async fn backend(secret: &str, internal: &str) -> RunningMcLite {
    let mut cfg = McLiteConfig::new(
        JwtConfig::new(secret, JwtAlgorithm::HS256).unwrap(),
        DbLocation::Memory,
    );
    cfg.internal_token = Some(internal.into());
    McLite::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// The documented secrets (or the test values of placeholders).
fn secrets(env: &[(String, String)]) -> (String, String) {
    let get = |name: &str, default: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map_or(default.to_owned(), |(k, v)| concrete(k, v, ""))
    };
    (
        get("AGENT_JWT_SECRET", TEST_SECRET),
        get("INTERNAL_TOKEN", TEST_INTERNAL),
    )
}

pub(crate) fn wombat(cwd: &Path, args: &[String], env: &BTreeMap<String, String>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wombat"));
    cmd.args(args).current_dir(cwd).env_clear().envs(env);
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    cmd
}

pub(crate) fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Runs `wombat ARGS` to its end (off the async threads); it must succeed.
pub(crate) async fn run_to_success(
    cwd: &Path,
    args: &[String],
    env: &BTreeMap<String, String>,
    at: &str,
) -> std::process::Output {
    let mut command = wombat(cwd, args, env);
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{at}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Kills the child when the test ends, passing or not.
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET url` until it answers 2xx: the JSON body, or the child's stderr
/// when it exits first.
pub(crate) async fn wait_healthy(
    child: &mut Running,
    url: &str,
    at: &str,
) -> Result<Value, String> {
    let http = reqwest::Client::new();
    for _ in 0..1500 {
        if let Some(status) = child.0.try_wait().unwrap() {
            let mut err = format!("exited with {status}: ");
            if let Some(mut e) = child.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return Err(err);
        }
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return Ok(r.json().await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{at}: {url} never answered");
}

/// `cargo run -p wombat-server`: starts, and `/health?deep=true` reflects
/// the documented settings (backend reachable, provider keys, models).
async fn run_serve(cmd: &DocCommand, args: &[String]) {
    let (secret, internal) = secrets(&cmd.env);
    let mc = backend(&secret, &internal).await;
    let cwd = tempfile::tempdir().unwrap();
    let mut env: BTreeMap<String, String> = cmd
        .env
        .iter()
        .map(|(k, v)| (k.clone(), concrete(k, v, &mc.url())))
        .collect();
    env.insert("WOMBAT_HOST".into(), "127.0.0.1".into());
    // A private copy: the repository's example is never read or written.
    let workspace = crate::cli::example_workspace();
    env.insert(
        "WOMBAT_WORKSPACE".into(),
        workspace.path().display().to_string(),
    );
    // Without BACKEND_URL the server embeds a backend: on any free port.
    env.insert("MC_LITE_PORT".into(), "0".into());
    env.insert("MC_LITE_DB".into(), ":memory:".into());
    // Warnings only, so the unread stderr pipe never fills up.
    env.entry("RUST_LOG".into())
        .or_insert_with(|| "warn".into());
    let mut argv = vec!["serve".to_owned()];
    argv.extend(args.iter().cloned());
    // WOMBAT_PORT must be a real port: pick a free one, and try another if
    // something took it in between.
    let mut attempt = 0;
    let (health, port, _child) = loop {
        attempt += 1;
        let port = free_port();
        env.insert("WOMBAT_PORT".into(), port.to_string());
        let child = wombat(cwd.path(), &argv, &env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = Running(child);
        let url = format!("http://127.0.0.1:{port}/health?deep=true");
        match wait_healthy(&mut child, &url, &cmd.at).await {
            Ok(health) => break (health, port, child),
            Err(err) if attempt < 5 && err.contains("bind") => continue,
            Err(err) => panic!("{}: {err}", cmd.at),
        }
    };
    assert_eq!(
        health["config"]["port"], port,
        "{}: our server answered",
        cmd.at
    );
    assert_eq!(health["backend"]["status"], "ok", "{}: {health}", cmd.at);
    for (k, _) in &cmd.env {
        let Some(provider) = k.strip_suffix("_API_KEY") else {
            continue;
        };
        if provider == "AGENT_DAEMON" {
            continue;
        }
        let provider = match provider {
            "GEMINI" | "GOOGLE" => "google".to_owned(),
            p => p.to_ascii_lowercase(),
        };
        assert_eq!(
            health["llm"]["keys"][&provider], true,
            "{}: {k} is seen: {health}",
            cmd.at
        );
        assert_eq!(health["llm"]["status"], "ok", "{}: {health}", cmd.at);
    }
    let model = |v: &str| {
        if v.contains('/') {
            v.to_owned()
        } else {
            format!("openai/{v}")
        }
    };
    for (k, field) in [
        ("LLM_MODEL_DEFAULT", "model"),
        ("LLM_MODEL_FALLBACK", "fallbackModel"),
    ] {
        if let Some((_, v)) = cmd.env.iter().find(|(name, _)| name == k) {
            assert_eq!(health["llm"][field], model(v), "{}: {health}", cmd.at);
        }
    }
    mc.shutdown().await;
}

/// `cargo run -p wombat-mc-lite-bin -- ARGS`: prints the documented line
/// (on a free port) and answers `/health`.
async fn run_mc_lite(cmd: &DocCommand, args: &[String]) {
    let cwd = tempfile::tempdir().unwrap();
    let mut env: BTreeMap<String, String> = cmd.env.iter().cloned().collect();
    assert!(
        !args.iter().any(|a| a == "--port"),
        "{}: the test picks the port",
        cmd.at
    );
    env.insert("MC_LITE_PORT".into(), "0".into());
    let mut argv = vec!["mc-lite".to_owned()];
    argv.extend(args.iter().cloned());
    let child = wombat(cwd.path(), &argv, &env)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Running(child);
    let stdout = child.0.stdout.take().unwrap();
    let read = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    });
    let first = tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .unwrap_or_else(|_| panic!("{}: mc-lite printed nothing", cmd.at))
        .unwrap();
    let documented = cmd.output.first().expect("the documented output line");
    let (prefix, _) = documented.rsplit_once(':').expect("…:PORT");
    let url = first
        .trim()
        .strip_prefix("mc-lite listening on ")
        .unwrap_or("");
    assert!(
        first.starts_with(prefix) && !url.is_empty(),
        "{}: printed {first:?}, documented {documented:?}",
        cmd.at
    );
    if let Err(err) = wait_healthy(&mut child, &format!("{url}/health"), &cmd.at).await {
        panic!("{}: {err}", cmd.at);
    }
}

/// `cargo run -p wombat-mc-lite-bin -- notify ...`: the notification is
/// queued in the backend it names.
async fn run_notify(cmd: &DocCommand, args: &[String]) {
    let (secret, internal) = secrets(&cmd.env);
    let mc = backend(&secret, &internal).await;
    let mut argv = vec!["mc-lite".to_owned()];
    let mut it = args.iter();
    let mut content = None;
    while let Some(a) = it.next() {
        argv.push(a.clone());
        match a.as_str() {
            "--url" => {
                it.next();
                argv.push(mc.url());
            }
            "--content" => {
                let rest: Vec<String> = it.by_ref().cloned().collect();
                content = Some(rest.join(" ").trim_matches('"').to_owned());
                argv.push(content.clone().unwrap_or_default());
            }
            _ => {}
        }
    }
    let env: BTreeMap<String, String> = cmd.env.iter().cloned().collect();
    let cwd = tempfile::tempdir().unwrap();
    run_to_success(cwd.path(), &argv, &env, &cmd.at).await;
    let pending: Value = reqwest::Client::new()
        .get(format!(
            "{}/api/mission-control/dispatch/undelivered",
            mc.url()
        ))
        .header("X-Internal-Token", &internal)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        pending["deliveries"][0]["content"],
        content.expect("--content").as_str(),
        "{}: {pending}",
        cmd.at
    );
    mc.shutdown().await;
}

/// `cargo xtask conformance` with the documented variables: passes against
/// the reference backend and writes its reports where the doc says.
async fn run_conformance(cmd: &DocCommand) {
    let (secret, internal) = secrets(&cmd.env);
    let mc = backend(&secret, &internal).await;
    let env: BTreeMap<String, String> = cmd
        .env
        .iter()
        .map(|(k, v)| (k.clone(), concrete(k, v, &mc.url())))
        .collect();
    let cwd = tempfile::tempdir().unwrap();
    let out = run_to_success(cwd.path(), &["conformance".to_owned()], &env, &cmd.at).await;
    let reports = cwd.path().join(
        env.get("CONFORMANCE_REPORT_DIR")
            .map_or("conformance-results", String::as_str),
    );
    assert!(reports.join("junit.xml").exists(), "{}", cmd.at);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(reports.join("conformance.json")).unwrap())
            .unwrap();
    let doc = std::fs::read_to_string(PathBuf::from(REPO).join("docs/CONTROL_PLANE_QUICKSTART.md"))
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).replace(&mc.url(), "http://127.0.0.1:9001");
    console_matches(&fence_after(&doc, "The console shows"), &printed);
    report_matches(&doc, &report);
    mc.shutdown().await;
}

/// The body of the first fenced block after `marker`.
fn fence_after(doc: &str, marker: &str) -> String {
    let rest = &doc[doc.find(marker).unwrap_or_else(|| panic!("{marker:?}"))..];
    let rest = &rest[rest.find("```").expect("a block")..];
    let rest = &rest[rest.find('\n').expect("fence line") + 1..];
    rest[..rest.find("```").expect("closing fence")].to_owned()
}

/// A documented word matches a printed one when equal, when it holds a
/// `...` placeholder, or when the two differ only in digits (timings,
/// counts of requests).
fn word_matches(doc: &str, real: &str) -> bool {
    let no_digits = |w: &str| {
        w.chars()
            .filter(|c| !c.is_ascii_digit())
            .collect::<String>()
    };
    doc == real || doc.contains("...") || no_digits(doc) == no_digits(real)
}

/// Every documented console line (but the `...` elision) is printed, in
/// order, word for word.
fn console_matches(shown: &str, printed: &str) {
    let printed: Vec<&str> = printed.lines().collect();
    let mut from = 0;
    for line in shown.lines().filter(|l| l.trim() != "...") {
        let want: Vec<&str> = line.split_whitespace().collect();
        let found = printed[from..].iter().position(|p| {
            let got: Vec<&str> = p.split_whitespace().collect();
            got.len() == want.len() && want.iter().zip(&got).all(|(w, g)| word_matches(w, g))
        });
        let Some(i) = found else {
            panic!(
                "the documented console line {line:?} is not printed (in order):\n{}",
                printed.join("\n")
            );
        };
        from += i + 1;
    }
}

/// Key paths of a JSON value, array elements merged.
fn key_paths(v: &Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let p = format!("{prefix}{k}");
                out.insert(p.clone());
                key_paths(child, &format!("{p}."), out);
            }
        }
        Value::Array(items) => {
            for item in items {
                key_paths(item, &format!("{prefix}[]."), out);
            }
        }
        _ => {}
    }
}

/// `conformance.json` has the documented shape and summary, its checks are
/// the quickstart's table of checks, and the CI snippet runs this command
/// with variables the runner reads.
fn report_matches(doc: &str, report: &Value) {
    let shown: Value = serde_json::from_str(&fence_after(doc, "holds the same, for scripts"))
        .expect("the documented report is JSON");
    let (mut want, mut got) = (Default::default(), Default::default());
    key_paths(&shown, "", &mut want);
    key_paths(report, "", &mut got);
    assert_eq!(want, got, "conformance.json keys: {report}");
    assert_eq!(
        report["summary"], shown["summary"],
        "the documented summary"
    );
    assert_eq!(report["success"], true);

    let table: std::collections::BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once("` |"))
        .map(|(name, _)| name.to_owned())
        .filter(|name| {
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    let checks: std::collections::BTreeSet<String> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(table, checks, "the quickstart's table lists every check");

    let ci = fence_after(doc, "for example in GitHub");
    assert!(ci.contains("- run: cargo xtask conformance\n"), "{ci}");
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_wombat"))
        .args(["conformance", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for var in ci
        .lines()
        .filter_map(|l| l.trim().split_once(": ${{"))
        .map(|(k, _)| k)
    {
        assert!(
            help.contains(var),
            "the CI snippet sets {var}, which `wombat conformance` does not read"
        );
    }
}

#[test]
fn doc_commands_are_found_with_their_environment() {
    let text = "```bash\nexport A_KEY=sk-...   # note\nB=1 \\\n  cargo run -p x -- --y z\n# printed\ncurl -s http://h\n```\n```text\ncargo run -p nope\n```\n";
    let cmds = doc_commands("t.md", text);
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    assert_eq!(cmds[0].at, "t.md:3");
    assert_eq!(
        cmds[0].env,
        vec![
            ("A_KEY".to_owned(), "sk-...".to_owned()),
            ("B".to_owned(), "1".to_owned())
        ]
    );
    assert_eq!(cmds[0].words, ["cargo", "run", "-p", "x", "--", "--y", "z"]);
    assert_eq!(cmds[0].output, ["printed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doc_command_lines_run_as_written() {
    let ci = std::fs::read_to_string(PathBuf::from(REPO).join(".ci/run")).unwrap();
    let mut ran: BTreeMap<&str, usize> = BTreeMap::new();
    for cmd in all_doc_commands() {
        let words: Vec<&str> = cmd.words.iter().map(String::as_str).collect();
        let (pkg, args) = match words.iter().position(|w| *w == "-p") {
            Some(i) if words[1] == "run" => {
                let args = match words.iter().position(|w| *w == "--") {
                    Some(j) => cmd.words[j + 1..].to_vec(),
                    None => Vec::new(),
                };
                (words.get(i + 1).copied(), args)
            }
            _ => (None, Vec::new()),
        };
        let kind = match (&words[..], pkg) {
            (
                ["cargo", "test", "--workspace"] | ["cargo", "xtask", "conformance", "--local"],
                _,
            ) => {
                let line = words.join(" ");
                assert!(
                    cmd.env.is_empty() && ci.lines().any(|l| l.trim() == line),
                    "{}: .ci/run runs {line:?}",
                    cmd.at
                );
                "run by .ci/run"
            }
            (_, Some("wombat-server")) => {
                run_serve(&cmd, &args).await;
                "serve"
            }
            (_, Some("wombat-mc-lite-bin")) if args.first().is_some_and(|a| a == "notify") => {
                run_notify(&cmd, &args).await;
                "mc-lite notify"
            }
            // The tools quickstart needs the server, backend and earlier
            // answers of its section: `tools_quickstart.rs` runs it in order.
            (_, Some("wombat-mc-lite-bin" | "wombat-dispatcher"))
                if cmd.at.starts_with("docs/TOOLS.md:") =>
            {
                "tools quickstart (tools_quickstart.rs)"
            }
            (_, Some("wombat-mc-lite-bin")) => {
                run_mc_lite(&cmd, &args).await;
                "mc-lite"
            }
            // The local loop of docs/QUICKSTART.md needs the server and
            // backend of the block's first command: `local_loop.rs` runs the
            // whole block in order.
            (_, Some("wombat-dispatcher" | "wombat-heartbeat")) => {
                assert!(
                    cmd.at.starts_with("docs/QUICKSTART.md:"),
                    "{}: only the QUICKSTART's local loop is run",
                    cmd.at
                );
                "local loop (local_loop.rs)"
            }
            (["cargo", "xtask", "conformance"], _) => {
                run_conformance(&cmd).await;
                "conformance"
            }
            _ => panic!(
                "{}: this test does not know how to run {:?}; teach it",
                cmd.at, cmd.words
            ),
        };
        *ran.entry(kind).or_default() += 1;
    }
    eprintln!("doc command lines run: {ran:?}");
    for kind in [
        "run by .ci/run",
        "serve",
        "mc-lite notify",
        "mc-lite",
        "conformance",
    ] {
        assert!(ran.contains_key(kind), "no {kind} command found: {ran:?}");
    }
}

/// A documented `serve` line running as written, on free ports: the daemon
/// with its embedded backend and a private copy of the example workspace.
/// The docs' fixed ports (8081, 9001) become this run's ([`LocalServe::rewrite`]).
pub(crate) struct LocalServe {
    /// Killed when this is dropped.
    _server: Running,
    pub(crate) daemon_url: String,
    pub(crate) mc_url: String,
    pub(crate) cwd: tempfile::TempDir,
    _workspace: tempfile::TempDir,
}

impl LocalServe {
    /// Starts `wombat serve ARGS` with the documented `env`, and waits until
    /// `/health?deep=true` reports the embedded backend reachable.
    pub(crate) async fn start(env: &[(String, String)], args: &[String], at: &str) -> Self {
        let (daemon_port, mc_port) = (free_port(), free_port());
        let cwd = tempfile::tempdir().unwrap();
        let workspace = crate::cli::example_workspace();
        let mut env: BTreeMap<String, String> = env.iter().cloned().collect();
        for (k, v) in [
            ("WOMBAT_HOST", "127.0.0.1".to_owned()),
            ("WOMBAT_PORT", daemon_port.to_string()),
            ("MC_LITE_PORT", mc_port.to_string()),
            ("MC_LITE_DB", ":memory:".to_owned()),
            ("WOMBAT_WORKSPACE", workspace.path().display().to_string()),
            ("RUST_LOG", "warn".to_owned()),
        ] {
            env.insert(k.to_owned(), v);
        }
        let mut argv = vec!["serve".to_owned()];
        argv.extend(args.iter().cloned());
        let child = wombat(cwd.path(), &argv, &env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut server = Running(child);
        let daemon_url = format!("http://127.0.0.1:{daemon_port}");
        let health = wait_healthy(&mut server, &format!("{daemon_url}/health?deep=true"), at)
            .await
            .unwrap_or_else(|e| panic!("{at}: {e}"));
        assert_eq!(health["backend"]["status"], "ok", "{at}: {health}");
        Self {
            _server: server,
            daemon_url,
            mc_url: format!("http://127.0.0.1:{mc_port}"),
            cwd,
            _workspace: workspace,
        }
    }

    /// `v` with the docs' URLs of the daemon and backend made this run's.
    pub(crate) fn rewrite(&self, v: &str) -> String {
        v.replace("http://127.0.0.1:9001", &self.mc_url)
            .replace("http://localhost:9001", &self.mc_url)
            .replace("http://localhost:8081", &self.daemon_url)
    }

    /// `GET /api/mission-control/PATH` on the embedded backend as `user`'s
    /// agent (a token signed with `secret`): the JSON answer, which must be
    /// a success.
    pub(crate) async fn backend_get(&self, secret: &str, user: &str, path: &str) -> Value {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let token = wombat_controlplane::jwt::mint(
            &JwtConfig::new(secret, JwtAlgorithm::HS256).unwrap(),
            user,
            "agent",
            None,
            now,
        )
        .unwrap();
        let r = reqwest::Client::new()
            .get(format!("{}/api/mission-control/{path}", self.mc_url))
            .header("X-Agent-Token", token)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }
}

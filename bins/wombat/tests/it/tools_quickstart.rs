//! The quickstart of `docs/TOOLS.md`, run as written and in order: `serve`
//! (embedded backend, its `/mcp` registered as server `mc`), the `curl`
//! lines (a tool round trip, a kickoff document, a destructive call that
//! waits for approval), `mc-lite approve` and `dispatcher --once`, each
//! `cargo run -p wombat-X -- ARGS` through the `wombat` binary. The
//! documented ports 8081 and 9001 become free ports (URLs naming them are
//! rewritten; `approve`, which relies on its default URL, gets
//! `CONTROL_PLANE_URL`), and the `<...>` placeholders become the values the
//! earlier answers named. Then what the section promises is checked against
//! the backend: the task the tool created belongs to the tenant, nothing is
//! deleted before the approval, the document is deleted after it, the answer
//! is stored on the task, and the approval cannot be used twice.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::docs::{LocalServe, run_to_success};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const DOC_PLACEHOLDER: &str = "<document_id from the first answer>";
const REQUEST_PLACEHOLDER: &str = "<tool request id>";

/// One command of a `bash` block, with where it starts.
#[derive(Debug, Clone)]
struct Line {
    at: String,
    text: String,
}

/// The commands of the section's `bash` blocks: `\`-continued lines joined,
/// and a line inside single quotes (a multi-line `-d '...'`) kept with its
/// command.
fn quickstart_lines() -> Vec<Line> {
    let doc = std::fs::read_to_string(PathBuf::from(REPO).join("docs/TOOLS.md")).unwrap();
    let start = doc
        .find("## Quickstart")
        .expect("docs/TOOLS.md has a quickstart section");
    let section = &doc[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
    let offset = doc[..start].lines().count();
    let mut out = Vec::new();
    let mut in_bash = false;
    let mut current = String::new();
    let mut begun = 0;
    for (i, line) in section[..end].lines().enumerate() {
        if let Some(lang) = line.trim().strip_prefix("```") {
            assert!(
                current.is_empty(),
                "an unterminated command before line {i}"
            );
            in_bash = !in_bash && matches!(lang.trim(), "bash" | "sh");
            continue;
        }
        if !in_bash || (current.is_empty() && line.trim().is_empty()) {
            continue;
        }
        if current.is_empty() {
            begun = offset + i + 1;
        }
        if let Some(head) = line.trim_end().strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        if current.matches('\'').count() % 2 == 1 {
            current.push('\n');
            continue;
        }
        out.push(Line {
            at: format!("docs/TOOLS.md:{begun}"),
            text: std::mem::take(&mut current),
        });
    }
    out
}

/// Shell words: single and double quotes, no expansion.
fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    w.push(c);
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => w.extend(chars.next()),
                        c => w.push(c),
                    }
                }
            }
            c if c.is_whitespace() => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// A parsed command: leading `NAME=value`s, then the words.
struct Parsed {
    env: BTreeMap<String, String>,
    words: Vec<String>,
}

fn parse(text: &str) -> Parsed {
    let mut words = shell_words(text);
    let assigned = words
        .iter()
        .take_while(|w| {
            w.split_once('=').is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            })
        })
        .count();
    let env = words
        .drain(..assigned)
        .map(|w| {
            let (k, v) = w.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    Parsed { env, words }
}

/// `cargo run [-q] -p PKG [-- ARGS]` → (PKG, ARGS).
fn package_and_args(words: &[String], at: &str) -> (String, Vec<String>) {
    assert_eq!(words.first().map(String::as_str), Some("cargo"), "{at}");
    let p = words.iter().position(|w| w == "-p").expect("-p PKG");
    let args = words
        .iter()
        .position(|w| w == "--")
        .map_or_else(Vec::new, |i| words[i + 1..].to_vec());
    (words[p + 1].clone(), args)
}

/// Runs a documented `curl -s URL -H ... -d BODY` (a POST with a JSON body):
/// the status and the JSON answer.
async fn curl(http: &reqwest::Client, words: &[String], at: &str) -> (u16, Value) {
    assert_eq!(words.first().map(String::as_str), Some("curl"), "{at}");
    let mut url = None;
    let mut headers = Vec::new();
    let mut body = None;
    let mut it = words[1..].iter();
    while let Some(w) = it.next() {
        match w.as_str() {
            "-s" => {}
            "-H" => {
                let h = it.next().expect("-H value");
                let (k, v) = h.split_once(':').expect("Name: value");
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            "-d" => body = Some(it.next().expect("-d value").clone()),
            u if u.starts_with("http") => url = Some(u.to_owned()),
            other => panic!("{at}: curl option {other:?} is not understood here; teach the test"),
        }
    }
    let body = body.unwrap_or_else(|| panic!("{at}: no -d body"));
    // The body is JSON as written (the shell passes it through unchanged).
    let _: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{at}: {e}: {body}"));
    let mut req = http.post(url.unwrap_or_else(|| panic!("{at}: no URL")));
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = req.body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_quickstart_runs_as_written() {
    let lines = quickstart_lines();
    let kinds: Vec<String> = lines
        .iter()
        .map(|l| {
            let p = parse(&l.text);
            match p.words.first().map(String::as_str) {
                Some("curl") => "curl".to_owned(),
                Some("cargo") => package_and_args(&p.words, &l.at).0,
                other => panic!("{}: unexpected command {other:?}", l.at),
            }
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "wombat-server",
            "curl",
            "curl",
            "curl",
            "wombat-mc-lite-bin",
            "wombat-dispatcher"
        ],
        "the quickstart's steps"
    );

    // 1. serve, on free ports, with a private copy of the workspace.
    let serve = parse(&lines[0].text);
    assert!(
        !serve.env.contains_key("WOMBAT_MCP_SERVERS"),
        "{}: the embedded backend's MCP server needs no configuration",
        lines[0].at
    );
    let local = LocalServe::start(
        &serve.env.clone().into_iter().collect::<Vec<_>>(),
        &package_and_args(&serve.words, &lines[0].at).1,
        &lines[0].at,
    )
    .await;
    let rewrite = |v: &str| local.rewrite(v);
    let (cwd, mc_url, daemon_url) = (&local.cwd, &local.mc_url, &local.daemon_url);

    // The backend, as the tenant, to check what the steps did.
    let secret = serve
        .env
        .get("AGENT_JWT_SECRET")
        .expect("serve sets AGENT_JWT_SECRET");
    let get = |path: String| {
        let local = &local;
        async move { local.backend_get(secret, "demo", &path).await }
    };
    let http = reqwest::Client::new();

    // 2. A tool round trip through the embedded backend's MCP server.
    let at = &lines[1].at;
    let (status, answer) = curl(&http, &parse(&rewrite(&lines[1].text)).words, at).await;
    assert_eq!(status, 200, "{at}: {answer}");
    assert_eq!(answer["status"], "ok", "{at}: {answer}");
    let text = answer["response"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("echo: tool results:") && text.contains("- mc__create_task: "),
        "{at}: the reply quotes the tool's result: {answer}"
    );
    let created = get("tasks?title=Buy%20milk".to_owned()).await;
    assert_eq!(
        created["items"].as_array().map(Vec::len),
        Some(1),
        "{at}: the tool created the task as demo: {created}"
    );
    let errands = answer["task_id"].as_str().expect("task_id").to_owned();
    let messages = get(format!("tasks/{errands}/messages")).await;
    let tools = &messages["items"][0]["attachments"]["tools"];
    assert!(
        tools.to_string().contains("mc__create_task"),
        "{at}: attachments.tools has the trace: {messages}"
    );

    // 3. A kickoff plan: a document, named in the answer.
    let at = &lines[2].at;
    let (status, answer) = curl(&http, &parse(&rewrite(&lines[2].text)).words, at).await;
    assert_eq!(status, 200, "{at}: {answer}");
    let document_id = answer["document_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{at}: the answer names its document_id: {answer}"))
        .to_owned();
    let documents = |task: String| {
        let get = &get;
        async move {
            let list = get(format!("tasks/{task}/documents")).await;
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert!(documents(errands.clone()).await.contains(&document_id));

    // 4. The destructive call waits for a person.
    let at = &lines[3].at;
    assert!(lines[3].text.contains(DOC_PLACEHOLDER), "{at}");
    let text = rewrite(&lines[3].text).replace(DOC_PLACEHOLDER, &document_id);
    let (status, answer) = curl(&http, &parse(&text).words, at).await;
    assert_eq!(status, 200, "{at}: {answer}");
    assert_eq!(answer["status"], "awaiting_approval", "{at}: {answer}");
    let request = &answer["tool_requests"][0];
    assert_eq!(request["tool"], "mc__delete_document", "{at}: {answer}");
    assert_eq!(request["arguments"]["document_id"], document_id.as_str());
    let request_id = request["id"].as_str().expect("a request id").to_owned();
    assert!(
        documents(errands.clone()).await.contains(&document_id),
        "{at}: nothing is deleted before the approval"
    );

    // 5. Approve, as the person the agent waits for.
    let at = &lines[4].at;
    assert!(lines[4].text.contains(REQUEST_PLACEHOLDER), "{at}");
    let approve = parse(&lines[4].text.replace(REQUEST_PLACEHOLDER, &request_id));
    let mut env: BTreeMap<String, String> = approve
        .env
        .iter()
        .map(|(k, v)| (k.clone(), rewrite(v)))
        .collect();
    // Its documented default URL is the embedded backend's port, 9001.
    env.insert("CONTROL_PLANE_URL".into(), mc_url.clone());
    let mut argv = vec!["mc-lite".to_owned()];
    argv.extend(package_and_args(&approve.words, at).1);
    let out = run_to_success(cwd.path(), &argv, &env, at).await;
    let resolved: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{at}: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(resolved["status"], "approved", "{at}: {resolved}");

    // 6. The dispatcher delivers the notification; the run resumes.
    let at = &lines[5].at;
    let dispatch = parse(&lines[5].text);
    let env: BTreeMap<String, String> = dispatch
        .env
        .iter()
        .map(|(k, v)| (k.clone(), rewrite(v)))
        .collect();
    let mut argv = vec!["dispatcher".to_owned()];
    argv.extend(package_and_args(&dispatch.words, at).1);
    let out = run_to_success(cwd.path(), &argv, &env, at).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tick: Value = serde_json::from_str(stdout.lines().next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{at}: {e}: {stdout}"));
    assert_eq!(
        (tick["deliveries"].as_u64(), tick["delivered"].as_u64()),
        (Some(1), Some(1)),
        "{at}: {tick}"
    );
    assert!(
        !documents(errands.clone()).await.contains(&document_id),
        "{at}: the approved call deleted the document"
    );
    let messages = get(format!("tasks/{errands}/messages")).await;
    let stored: Vec<&str> = messages["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert!(
        stored
            .iter()
            .any(|c| c.starts_with("echo: tool results:") && c.contains("- mc__delete_document: ")),
        "{at}: the resumed answer is stored on the task: {messages}"
    );

    // Once: a second dispatch finds nothing, and a replay of the resume is 409.
    let out = run_to_success(cwd.path(), &argv, &env, at).await;
    let tick: Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default(),
    )
    .unwrap();
    assert_eq!(tick["deliveries"], 0, "{at}: {tick}");
    let replay = http
        .post(format!("{daemon_url}/api/agents/send"))
        .json(&json!({
            "user_id": "demo", "session_key": "user:demo:agent", "task_id": errands,
            "message": "again", "metadata": {"tool_request_id": request_id}
        }))
        .send()
        .await
        .unwrap();
    let status = replay.status().as_u16();
    let body: Value = replay.json().await.unwrap();
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "tool_request_consumed", "{body}");
    drop(local);
}

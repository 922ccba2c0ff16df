//! `docs/API.md` stays true: every response example marked
//! `<!-- check: NAME ... -->` must have exactly the keys (recursively) of the
//! response the running daemon gives for the matching request here.
//!
//! Marker options: `optional=a.b,c` lists key paths the example may show
//! although this run's response lacks them (or the reverse);
//! `opaque=a.b` stops the comparison below a path (free-form objects);
//! `maps=a.b` marks an object whose keys are data (model or user names), so
//! its entries are compared as one `*` entry.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{Value, json};

use crate::support::{BackendKind, Reply, send_body, setup};

/// Key paths of `v`: `a`, `a.b`, `list[]`, `list[].c` (arrays: the union of
/// their elements). Nothing below an `opaque` path.
fn paths(v: &Value, prefix: &str, e: &Example, out: &mut BTreeSet<String>) {
    if e.opaque.iter().any(|o| o == prefix) {
        return;
    }
    let is_map = e.maps.iter().any(|m| m == prefix);
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let k = if is_map { "*" } else { k.as_str() };
                let p = if prefix.is_empty() {
                    k.to_owned()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(p.clone());
                paths(child, &p, e, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                paths(item, &format!("{prefix}[]"), e, out);
            }
        }
        _ => {}
    }
}

struct Example {
    name: String,
    optional: Vec<String>,
    opaque: Vec<String>,
    maps: Vec<String>,
    value: Value,
}

/// The text of `docs/API.md`.
fn api_md() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/API.md");
    std::fs::read_to_string(&path).expect("docs/API.md exists")
}

/// The checked examples of `docs/API.md`, in order.
fn examples() -> Vec<Example> {
    let text = api_md();
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("<!-- check: ") {
        rest = &rest[start + "<!-- check: ".len()..];
        let end = rest.find("-->").expect("marker ends");
        let mut words = rest[..end].split_whitespace();
        let name = words.next().expect("marker has a name").to_owned();
        let (mut optional, mut opaque, mut maps) = (Vec::new(), Vec::new(), Vec::new());
        for w in words {
            let list = |v: &str| v.split(',').map(str::to_owned).collect::<Vec<_>>();
            if let Some(v) = w.strip_prefix("optional=") {
                optional = list(v);
            } else if let Some(v) = w.strip_prefix("opaque=") {
                opaque = list(v);
            } else if let Some(v) = w.strip_prefix("maps=") {
                maps = list(v);
            } else {
                panic!("unknown marker option {w:?} in check {name}");
            }
        }
        rest = &rest[end..];
        let block = rest
            .find("```json\n")
            .unwrap_or_else(|| panic!("check {name} is followed by a json block"));
        rest = &rest[block + "```json\n".len()..];
        let close = rest.find("\n```").expect("json block ends");
        let value = serde_json::from_str(&rest[..close])
            .unwrap_or_else(|e| panic!("example {name} is not JSON: {e}"));
        out.push(Example {
            name,
            optional,
            opaque,
            maps,
            value,
        });
    }
    out
}

/// What the daemon really answers, by example name.
async fn live() -> BTreeMap<&'static str, Value> {
    let mut live = BTreeMap::new();
    let h = setup().start().await;
    let send = h
        .post(
            "/api/agents/send",
            &send_body(
                "alice",
                json!({"task_title": "Launch", "webhook": {"url": h.hooks.url, "secret": "s"}}),
            ),
        )
        .await;
    assert_eq!(send.status, 200, "{}", send.text);
    live.insert("send", send.json());
    live.insert("webhook", h.hooks.wait(1).await[0].json());
    let events = h
        .sse(
            "/api/agents/stream",
            &send_body("alice", json!({"task_title": "Launch"})),
        )
        .await
        .rest()
        .await;
    let done = events.last().expect("done").1.clone();
    live.insert("stream_done", done);
    let no_task = h
        .post("/api/agents/send", &send_body("alice", json!({})))
        .await;
    live.insert("error", no_task.json());
    let invalid = h
        .post(
            "/api/agents/send",
            &json!({"session_key": "user:alice:agent", "message": 5}),
        )
        .await;
    live.insert("invalid_payload", invalid.json());
    h.llm
        .script([Reply::text("Launch in May; budget 10k.").tokens(300, 20)]);
    let compact = h
        .post(
            "/compact",
            &json!({"messages": [
                {"role": "user", "content": "We launch in May"},
                {"role": "assistant", "content": "Noted"},
                {"role": "user", "content": "Budget is 10k"},
                {"role": "assistant", "content": "Got it"},
                {"role": "user", "content": "Draft the plan"},
            ]}),
        )
        .await;
    live.insert("compact", compact.json());
    h.llm
        .script([Reply::text(r#"{"title":"Ship it","priority":2}"#).tokens(200, 12)]);
    let task = h
        .post(
            "/llm-task",
            &json!({"prompt": "Turn this into a task", "schema": {"type": "object"}}),
        )
        .await;
    live.insert("llm_task", task.json());
    live.insert("usage", h.get("/usage").await.json());
    live.insert("usage_user", h.get("/usage?user_id=alice").await.json());
    live.insert("health", h.get("/health?deep=true").await.json());
    live.insert("context", h.get("/context?role=agent").await.json());
    live.insert("skills", h.get("/skills").await.json());
    live.insert("boot", h.get("/boot").await.json());

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("BOOT.md"), "# First run\n").expect("write");
    let h = setup().workspace(dir.path()).start().await;
    live.insert(
        "boot_complete",
        h.post("/boot/complete", &json!({})).await.json(),
    );

    let h = setup().backend(BackendKind::Closed).start().await;
    let failed = h
        .post(
            "/api/agents/send",
            &send_body("alice", json!({"task_id": "task_1"})),
        )
        .await;
    live.insert("backend_write_failed", failed.json());
    live
}

#[tokio::test]
async fn api_md_response_examples_match_the_real_responses() {
    let examples = examples();
    let live = live().await;
    let documented: BTreeSet<&str> = examples.iter().map(|e| e.name.as_str()).collect();
    let checked: BTreeSet<&str> = live.keys().copied().collect();
    assert_eq!(
        documented, checked,
        "every live response has one documented example"
    );
    for e in &examples {
        let real = &live[e.name.as_str()];
        let (mut want, mut got) = (BTreeSet::new(), BTreeSet::new());
        paths(&e.value, "", e, &mut want);
        paths(real, "", e, &mut got);
        for o in &e.optional {
            want.remove(o);
            got.remove(o);
        }
        let missing: Vec<_> = got.difference(&want).collect();
        let extra: Vec<_> = want.difference(&got).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "docs/API.md example {:?}: undocumented keys {missing:?}, keys the server does not send {extra:?}\nreal: {real:#}",
            e.name
        );
    }
}

/// One `curl` command line of a doc, as the shell would split it (the docs
/// use only single quotes, double quotes and `\` line continuations).
fn shell_commands(block: &str) -> Vec<Vec<String>> {
    let (mut commands, mut words, mut word) = (Vec::new(), Vec::new(), None::<String>);
    let mut chars = block.chars().peekable();
    let end_word = |words: &mut Vec<String>, word: &mut Option<String>| {
        if let Some(w) = word.take() {
            words.push(w);
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                let w = word.get_or_insert_with(String::new);
                for q in chars.by_ref() {
                    if q == c {
                        break;
                    }
                    w.push(q);
                }
            }
            '\\' if chars.peek() == Some(&'\n') => {
                chars.next();
                end_word(&mut words, &mut word);
            }
            '\n' => {
                end_word(&mut words, &mut word);
                if !words.is_empty() {
                    commands.push(std::mem::take(&mut words));
                }
            }
            c if c.is_whitespace() => end_word(&mut words, &mut word),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    end_word(&mut words, &mut word);
    if !words.is_empty() {
        commands.push(words);
    }
    commands
}

/// Every command of the `sh` blocks of `docs/API.md`, with the `text` block
/// right after its block (a documented output), if there is one.
fn api_md_curls() -> Vec<(Vec<String>, Option<String>)> {
    let text = api_md();
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("```sh\n") {
        rest = &rest[start + "```sh\n".len()..];
        let end = rest.find("\n```").expect("sh block ends");
        let commands = shell_commands(&rest[..end]);
        rest = &rest[end + "\n```".len()..];
        let output = rest.trim_start().strip_prefix("```text\n").map(|t| {
            let close = t.find("\n```").expect("text block ends");
            t[..close].to_owned()
        });
        let n = commands.len();
        for (i, cmd) in commands.into_iter().enumerate() {
            // The output documents the last command of the block.
            out.push((cmd, if i + 1 == n { output.clone() } else { None }));
        }
    }
    out
}

/// `(event, data)` pairs of an SSE text.
fn sse_events(text: &str) -> Vec<(String, String)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let field = |name: &str| {
                e.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap_or_default()
                    .to_owned()
            };
            (field("event: "), field("data: "))
        })
        .collect()
}

/// `name{label,...}` of each sample line of a Prometheus text.
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let sample = l.split_whitespace().next().unwrap_or_default();
            match sample.split_once('{') {
                Some((name, labels)) => {
                    let names: Vec<&str> = labels
                        .trim_end_matches('}')
                        .split(',')
                        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
                        .collect();
                    format!("{name}{{{}}}", names.join(","))
                }
                None => sample.to_owned(),
            }
        })
        .collect()
}

#[test]
fn the_shell_subset_splits_like_sh() {
    let cmds = shell_commands(
        "curl -s 'http://h/x?a=1' -H 'A: b' -d '{\n  \"k\": 1\n}'\ncurl -X POST \\\n  http://h/y\n",
    );
    assert_eq!(
        cmds,
        vec![
            vec![
                "curl",
                "-s",
                "http://h/x?a=1",
                "-H",
                "A: b",
                "-d",
                "{\n  \"k\": 1\n}"
            ],
            vec!["curl", "-X", "POST", "http://h/y"],
        ]
    );
}

/// Every `curl` of `docs/API.md` runs as written (against a daemon on a free
/// port instead of `localhost:8081`) and gets a successful answer of the
/// documented kind: JSON, an SSE stream that ends with `done`, or metrics.
#[tokio::test]
async fn api_md_curls_work_as_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("BOOT.md"), "# First run\n").expect("write");
    std::fs::write(dir.path().join("SOUL.md"), "Be brief.\n").expect("write");
    let h = setup().workspace(dir.path()).start().await;
    let curls = api_md_curls();
    assert!(curls.len() >= 12, "API.md has its curls: {curls:?}");
    let mut seen = BTreeSet::new();
    for (cmd, output) in curls {
        assert_eq!(
            cmd[0], "curl",
            "API.md sh blocks hold curl commands: {cmd:?}"
        );
        let (mut method, mut url, mut body, mut headers) = (None, None, None, Vec::new());
        let mut args = cmd[1..].iter();
        while let Some(a) = args.next() {
            match a.as_str() {
                "-s" | "-N" | "-sN" => {}
                "-X" => method = args.next().cloned(),
                "-H" => headers.push(args.next().expect("-H value").clone()),
                "-d" => body = args.next().cloned(),
                other if other.starts_with("http://localhost:8081/") => {
                    url = Some(other.to_owned())
                }
                other => panic!("curl option {other:?} is not understood by this test: {cmd:?}"),
            }
        }
        let url = url.expect("curl names a URL");
        let path = &url["http://localhost:8081".len()..];
        let method = method.unwrap_or_else(|| if body.is_some() { "POST" } else { "GET" }.into());
        let route = path.split('?').next().unwrap_or(path).to_owned();
        if route == "/llm-task" {
            h.llm
                .script([Reply::text(r#"{"title":"Ship it","priority":2}"#).tokens(200, 12)]);
        }
        let mut req = h.request(method.parse().expect("method"), path);
        for header in &headers {
            let (name, value) = header.split_once(": ").expect("Name: value");
            req = req.header(name, value);
        }
        if let Some(b) = &body {
            serde_json::from_str::<Value>(b)
                .unwrap_or_else(|e| panic!("{route}: the documented body is not JSON ({e}): {b}"));
            req = req.body(b.clone());
        }
        let resp = crate::support::buffer(req.send().await.expect("send")).await;
        assert_eq!(resp.status, 200, "{method} {path}: {}", resp.text);
        match route.as_str() {
            "/api/agents/stream" => {
                assert_eq!(resp.header("content-type"), Some("text/event-stream"));
                // Like the documented stream: the same `start`, then chunks
                // of the same shape, then `done`.
                let shown = sse_events(output.as_deref().expect("API.md shows a stream"));
                let real = sse_events(&resp.text);
                let names = |e: &[(String, String)]| {
                    let mut n: Vec<String> = e.iter().map(|(name, _)| name.clone()).collect();
                    n.dedup();
                    n
                };
                assert_eq!(names(&shown), ["start", "chunk", "done"]);
                assert_eq!(names(&real), names(&shown), "{}", resp.text);
                assert_eq!(real[0], shown[0], "the start event");
                let keys = |data: &str| {
                    let v: Value = serde_json::from_str(data).expect("chunk JSON");
                    v.as_object()
                        .expect("object")
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                };
                assert_eq!(keys(&real[1].1), keys(&shown[1].1), "chunk data keys");
            }
            "/metrics" => {
                let shown = series(output.as_deref().expect("API.md shows metrics"));
                let real = series(&resp.text);
                assert!(shown.len() >= 4, "{shown:?}");
                let missing: Vec<_> = shown.difference(&real).collect();
                assert!(
                    missing.is_empty(),
                    "API.md shows {missing:?}; real: {real:?}"
                );
            }
            _ => {
                let v = resp.json();
                assert!(v.is_object(), "{route}: {v}");
                if route == "/api/agents/send" {
                    assert_eq!(v["status"], "ok", "{v}");
                }
                if route == "/llm-task" {
                    assert_eq!(v["output"]["title"], "Ship it", "{v}");
                }
            }
        }
        seen.insert(route);
    }
    let want = [
        "/api/agents/send",
        "/api/agents/stream",
        "/compact",
        "/llm-task",
        "/usage",
        "/health",
        "/context",
        "/skills",
        "/boot",
        "/boot/complete",
        "/metrics",
    ];
    assert_eq!(
        seen,
        want.iter()
            .map(|s| (*s).to_owned())
            .collect::<BTreeSet<_>>(),
        "API.md shows a curl for every endpoint"
    );
}

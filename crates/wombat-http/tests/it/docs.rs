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

/// The checked examples of `docs/API.md`, in order.
fn examples() -> Vec<Example> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/API.md");
    let text = std::fs::read_to_string(&path).expect("docs/API.md exists");
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

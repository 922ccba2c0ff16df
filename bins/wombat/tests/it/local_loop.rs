//! The local loop of `docs/QUICKSTART.md`, run as written and in order:
//! `serve` (with its embedded backend), `mc-lite notify`, `dispatcher
//! --once`, `heartbeat` and `standup`, each through the `wombat` binary
//! (`cargo run -p wombat-X -- ARGS` is `wombat X ARGS`). The documented
//! ports 8081 and 9001 become free ports: the URLs naming them are
//! rewritten, and the heartbeat and standup, which rely on the default
//! backend URL, get `BACKEND_URL` pointing at the embedded backend. Each
//! step's documented output is compared with what it printed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use crate::docs::{DocCommand, LocalServe, doc_commands, run_to_success};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// The commands of the QUICKSTART section titled "The local loop".
fn loop_commands() -> Vec<DocCommand> {
    let doc = std::fs::read_to_string(PathBuf::from(REPO).join("docs/QUICKSTART.md")).unwrap();
    let start = doc
        .find("## The local loop")
        .expect("docs/QUICKSTART.md has a local loop section");
    let section = &doc[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
    let offset = doc[..start].lines().count();
    doc_commands("docs/QUICKSTART.md", &section[..end])
        .into_iter()
        .map(|mut c| {
            // Line numbers relative to the whole file.
            if let Some((file, line)) = c.at.rsplit_once(':') {
                c.at = format!("{file}:{}", line.parse::<usize>().unwrap() + offset);
            }
            c
        })
        .collect()
}

/// Shell words of a command line: double-quoted words joined back.
fn shell_words(words: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut open: Option<String> = None;
    for w in words {
        match open.take() {
            Some(mut acc) => {
                acc.push(' ');
                acc.push_str(w);
                if w.ends_with('"') {
                    out.push(acc.trim_matches('"').to_owned());
                } else {
                    open = Some(acc);
                }
            }
            None if w.starts_with('"') && !(w.len() > 1 && w.ends_with('"')) => {
                open = Some(w.clone());
            }
            None => out.push(w.trim_matches('"').to_owned()),
        }
    }
    out.extend(open);
    out
}

/// `cargo run [-q] [--release] -p PKG [-- ARGS]` → (PKG, ARGS).
fn package_and_args(cmd: &DocCommand) -> (String, Vec<String>) {
    let words = shell_words(&cmd.words);
    let p = words.iter().position(|w| w == "-p").expect("-p PKG");
    let args = words
        .iter()
        .position(|w| w == "--")
        .map_or_else(Vec::new, |i| words[i + 1..].to_vec());
    (words[p + 1].clone(), args)
}

/// The documented output line as JSON; `...` placeholders read as null.
fn documented_json(cmd: &DocCommand) -> Value {
    let line = cmd
        .output
        .first()
        .unwrap_or_else(|| panic!("{}: no documented output", cmd.at));
    let line = line.replace("\"...\"", "null").replace("...", "null");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{}: {e}: {line}", cmd.at))
}

/// Every documented value that is not null matches the printed one (objects
/// compared key by key, arrays item by item).
fn matches_documented(doc: &Value, real: &Value, at: &str, path: &str) {
    match (doc, real) {
        (Value::Null, _) => {}
        (Value::Object(d), Value::Object(r)) => {
            let dk: Vec<&String> = d.keys().collect();
            let rk: Vec<&String> = r.keys().collect();
            assert_eq!(dk, rk, "{at}: keys of {path}");
            for (k, v) in d {
                matches_documented(v, &r[k], at, &format!("{path}.{k}"));
            }
        }
        (Value::Array(d), Value::Array(r)) => {
            assert_eq!(d.len(), r.len(), "{at}: length of {path}: {real}");
            for (i, (dv, rv)) in d.iter().zip(r).enumerate() {
                matches_documented(dv, rv, at, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(doc, real, "{at}: {path}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_local_loop_runs_as_written() {
    let cmds = loop_commands();
    let kinds: Vec<(String, Vec<String>)> = cmds.iter().map(package_and_args).collect();
    let names: Vec<&str> = kinds.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        names,
        [
            "wombat-server",
            "wombat-mc-lite-bin",
            "wombat-dispatcher",
            "wombat-heartbeat",
            "wombat-heartbeat"
        ],
        "the local loop's steps"
    );

    // 1. serve, on free ports, with a private copy of the workspace.
    let serve = &cmds[0];
    let local = LocalServe::start(&serve.env, &kinds[0].1, &serve.at).await;
    let rewrite = |v: &str| local.rewrite(v);
    let (cwd, mc_url) = (&local.cwd, &local.mc_url);

    // 2. notify, against the embedded backend.
    let notify = &cmds[1];
    let env: BTreeMap<String, String> = notify
        .env
        .iter()
        .map(|(k, v)| (k.clone(), rewrite(v)))
        .collect();
    let mut argv = vec!["mc-lite".to_owned()];
    argv.extend(kinds[1].1.iter().map(|a| rewrite(a)));
    run_to_success(cwd.path(), &argv, &env, &notify.at).await;

    // 3. dispatcher --once: one delivery, delivered.
    let dispatch = &cmds[2];
    let env: BTreeMap<String, String> = dispatch
        .env
        .iter()
        .map(|(k, v)| (k.clone(), rewrite(v)))
        .collect();
    let mut argv = vec!["dispatcher".to_owned()];
    argv.extend(kinds[2].1.iter().map(|a| rewrite(a)));
    let out = run_to_success(cwd.path(), &argv, &env, &dispatch.at).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tick: Value = serde_json::from_str(stdout.lines().next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{}: {e}: {stdout}", dispatch.at));
    matches_documented(&documented_json(dispatch), &tick, &dispatch.at, "$");

    // The reply is on the task titled "Notifications".
    let secret = &serve
        .env
        .iter()
        .find(|(k, _)| k == "AGENT_JWT_SECRET")
        .expect("the serve line sets AGENT_JWT_SECRET")
        .1;
    let tasks = local
        .backend_get(secret, "demo", "tasks?title=Notifications")
        .await;
    let task_id = tasks["items"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{}: no Notifications task: {tasks}", dispatch.at))
        .to_owned();
    let messages = local
        .backend_get(secret, "demo", &format!("tasks/{task_id}/messages"))
        .await;
    let content = messages["items"][0]["content"].as_str().unwrap_or_default();
    assert!(
        content.contains("Time for the daily standup"),
        "{}: the reply on the task: {messages}",
        dispatch.at
    );

    // 4 and 5. heartbeat and standup, as the documented user.
    for (i, marker) in [(3, "heartbeat_ok"), (4, "standup_ok")] {
        let cmd = &cmds[i];
        let mut env: BTreeMap<String, String> = cmd
            .env
            .iter()
            .map(|(k, v)| (k.clone(), rewrite(v)))
            .collect();
        // The documented default (http://localhost:9001) is the embedded
        // backend; ours is on a free port.
        env.entry("BACKEND_URL".into())
            .or_insert_with(|| mc_url.clone());
        let mut argv = vec![if kinds[i].1.first().is_some_and(|a| a == "standup") {
            "standup".to_owned()
        } else {
            "heartbeat".to_owned()
        }];
        argv.extend(kinds[i].1.iter().skip(1).cloned());
        let out = run_to_success(cwd.path(), &argv, &env, &cmd.at).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{}: {stdout}", cmd.at);
        assert_eq!(lines[1], marker, "{}", cmd.at);
        assert_eq!(
            cmd.output.get(1).map(String::as_str),
            Some(marker),
            "{}",
            cmd.at
        );
        let reply: Value = serde_json::from_str(lines[0]).unwrap();
        matches_documented(&documented_json(cmd), &reply, &cmd.at, "$");
    }
    drop(local);
}

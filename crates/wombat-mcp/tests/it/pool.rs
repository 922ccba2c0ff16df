//! Reused MCP clients: one HTTP request per operation after the first,
//! never shared across tenants or tokens, closed when idle or evicted,
//! a forgotten session reopened without running a call twice.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rmcp::transport::streamable_http_server::session::SessionManager;
use serde_json::json;
use wombat_mcp::{McpOptions, McpTenant, McpTools, ToolContent};

use crate::support::{
    RecordingServer, bounded, start_recording, start_stateful_recording, token, tools,
};

fn text(outcome: &wombat_mcp::ToolOutcome) -> &str {
    match &outcome.content {
        ToolContent::Text(t) => t,
        other => panic!("expected text, got {other:?}"),
    }
}

fn trace(n: u8) -> String {
    format!("00-{:032x}-{:016x}-01", u128::from(n) + 1, u64::from(n) + 1)
}

async fn echo(tools: &McpTools, tenant: &McpTenant, said: &str) {
    let outcome = bounded(tools.call(tenant, "rec__echo", json!({ "text": said }))).await;
    assert_eq!(text(&outcome), said, "{outcome:?}");
}

/// Polls (generously bounded) until `done` holds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within 10 s");
}

/// POSTs per `tools/call` after the first call of a tenant (the first pays
/// the handshake and the list): the number the pool exists to cut.
async fn requests_per_later_call(server: &RecordingServer, tools: &McpTools) -> Vec<usize> {
    let tenant = McpTenant::new("alice", token("alice"));
    echo(tools, &tenant, "first").await;
    let mut per_call = Vec::new();
    for i in 0..5 {
        let before = server.requests().len();
        echo(tools, &tenant, &format!("call {i}")).await;
        per_call.push(server.requests().len() - before);
    }
    per_call
}

#[tokio::test]
async fn a_second_call_for_the_same_tenant_is_one_request() {
    let server = start_recording().await;
    let tools = tools(json!({"rec": {"url": server.url}}), McpOptions::default());
    let per_call = requests_per_later_call(&server, &tools).await;
    println!("requests per tools/call after the first: {per_call:?}");
    assert_eq!(
        per_call, [1; 5],
        "one tools/call POST per call, no handshake"
    );
    assert_eq!(server.count("initialize"), 1);
    assert_eq!(server.count("notifications/initialized"), 1);
    assert_eq!(server.count("tools/list"), 1);
    assert_eq!(tools.open_clients(), 1);
}

#[tokio::test]
async fn without_a_pool_every_operation_opens_its_own_client() {
    let server = start_recording().await;
    let tools = tools(
        json!({"rec": {"url": server.url}}),
        McpOptions {
            client_capacity: 0,
            ..McpOptions::default()
        },
    );
    let per_call = requests_per_later_call(&server, &tools).await;
    assert_eq!(per_call, [3; 5], "initialize, initialized, tools/call");
    assert_eq!(tools.open_clients(), 0);
}

#[tokio::test]
async fn each_request_on_a_reused_client_carries_its_own_traceparent() {
    let server = start_recording().await;
    let tools = tools(json!({"rec": {"url": server.url}}), McpOptions::default());
    for n in 0..3 {
        let tenant = McpTenant::new("alice", token("alice")).with_traceparent(trace(n));
        echo(&tools, &tenant, &format!("traced {n}")).await;
    }
    assert_eq!(server.count("initialize"), 1, "one client for the three");
    let calls = server.with_method("tools/call");
    let seen: Vec<(Option<String>, Option<String>)> = calls
        .into_iter()
        .map(|r| (r.text_argument, r.traceparent))
        .collect();
    let expected: Vec<(Option<String>, Option<String>)> = (0..3)
        .map(|n| (Some(format!("traced {n}")), Some(trace(n))))
        .collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn another_tenant_or_a_new_token_gets_its_own_session() {
    let server = start_stateful_recording().await;
    let tools = tools(
        json!({"rec": {"url": server.url, "bearer": true}}),
        McpOptions::default(),
    );
    let first_token = token("alice");
    let alice = McpTenant::new("alice", first_token.clone());
    let bob = McpTenant::new("bob", token("bob"));
    // A JWT minted a second later differs (iat/exp), as a new token of the
    // same user does.
    let new_token = loop {
        let t = token("alice");
        if t != first_token {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let alice_again = McpTenant::new("alice", new_token.clone());
    echo(&tools, &alice, "a1").await;
    echo(&tools, &bob, "b1").await;
    echo(&tools, &alice_again, "a2").await;
    echo(&tools, &alice, "a3").await;
    echo(&tools, &bob, "b2").await;
    assert_eq!(
        server.count("initialize"),
        3,
        "alice, bob and alice's new token each open one session"
    );
    assert_eq!(tools.open_clients(), 3);

    // Every session carries exactly one token, in both headers.
    let mut tokens_by_session: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut session_of_call: BTreeMap<String, String> = BTreeMap::new();
    for r in server.requests() {
        let token = r.agent_token.clone().expect("every request has a token");
        assert_eq!(r.authorization, Some(format!("Bearer {token}")));
        let Some(session) = r.session_id.clone() else {
            assert_eq!(
                r.jsonrpc_method.as_deref(),
                Some("initialize"),
                "only initialize has no session"
            );
            continue;
        };
        tokens_by_session
            .entry(session.clone())
            .or_default()
            .insert(token.clone());
        if let Some(said) = r.text_argument {
            session_of_call.insert(said, session);
        }
    }
    assert_eq!(tokens_by_session.len(), 3, "{tokens_by_session:?}");
    assert!(tokens_by_session.values().all(|tokens| tokens.len() == 1));
    assert_eq!(session_of_call["a1"], session_of_call["a3"]);
    assert_eq!(session_of_call["b1"], session_of_call["b2"]);
    let distinct: BTreeSet<&String> = ["a1", "b1", "a2"]
        .iter()
        .map(|c| &session_of_call[*c])
        .collect();
    assert_eq!(distinct.len(), 3);
    let whoami = bounded(tools.call(&alice_again, "rec__whoami", json!({"text": "x"}))).await;
    assert_eq!(text(&whoami), new_token);
}

#[tokio::test]
async fn idle_clients_are_closed_after_the_ttl() {
    let server = start_stateful_recording().await;
    let tools = tools(
        json!({"rec": {"url": server.url}}),
        McpOptions {
            client_idle_ttl: Duration::from_millis(300),
            ..McpOptions::default()
        },
    );
    let alice = McpTenant::new("alice", token("alice"));
    echo(&tools, &alice, "before").await;
    assert_eq!(tools.open_clients(), 1);
    // The sweeper closes it without any further request: its session ends.
    eventually("the idle client's DELETE", || {
        tools.open_clients() == 0 && server.requests().iter().any(|r| r.method == "DELETE")
    })
    .await;
    echo(&tools, &alice, "after").await;
    assert_eq!(
        server.count("initialize"),
        2,
        "a fresh session after the TTL"
    );
}

#[tokio::test]
async fn the_least_recently_used_client_is_closed_when_the_pool_is_full() {
    let server = start_stateful_recording().await;
    let tools = tools(
        json!({"rec": {"url": server.url}}),
        McpOptions {
            client_capacity: 1,
            ..McpOptions::default()
        },
    );
    let alice = McpTenant::new("alice", token("alice"));
    let bob = McpTenant::new("bob", token("bob"));
    echo(&tools, &alice, "a1").await;
    let alice_session = server.with_method("tools/call")[0].session_id.clone();
    assert!(alice_session.is_some());
    echo(&tools, &bob, "b1").await;
    assert_eq!(tools.open_clients(), 1);
    eventually("alice's session to be deleted", || {
        server
            .requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.session_id == alice_session)
    })
    .await;
    echo(&tools, &alice, "a2").await;
    assert_eq!(
        server.count("initialize"),
        3,
        "alice reopens after eviction"
    );
}

#[tokio::test]
async fn a_session_the_server_forgot_is_reopened_and_the_call_runs_once() {
    let server = start_stateful_recording().await;
    let tools = tools(json!({"rec": {"url": server.url}}), McpOptions::default());
    let alice = McpTenant::new("alice", token("alice"));
    echo(&tools, &alice, "first").await;
    let session = server.with_method("tools/call")[0]
        .session_id
        .clone()
        .unwrap();
    // The server loses the session (restart, expiry): it answers 404.
    server
        .sessions
        .close_session(&session.as_str().into())
        .await
        .unwrap();
    echo(&tools, &alice, "second").await;
    assert_eq!(server.count("initialize"), 2, "a new session was opened");
    assert_eq!(
        *server.executed.lock().unwrap(),
        ["first", "second"],
        "the call rejected with 404 ran once, on the new session"
    );
}

//! `/mcp`: the reference backend as an MCP server (raw JSON-RPC over
//! Streamable HTTP here; the rmcp client side is tested in wombat-mcp).

use serde_json::{Value, json};

use crate::support::{call, start_memory, token};

const ACCEPT: (&str, &str) = ("accept", "application/json, text/event-stream");

/// One JSON-RPC request to `/mcp` as `user` (or without a token).
async fn rpc(url: &str, user: Option<&str>, method: &str, params: Value) -> (u16, Value) {
    let t = user.map(token);
    let mut headers = vec![ACCEPT];
    if let Some(t) = &t {
        headers.push(("x-agent-token", t.as_str()));
    }
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    call(
        "POST",
        &format!("{url}/mcp"),
        &headers,
        Some(&body.to_string()),
    )
    .await
}

async fn tool(url: &str, user: &str, name: &str, arguments: Value) -> Value {
    let (status, body) = rpc(
        url,
        Some(user),
        "tools/call",
        json!({"name": name, "arguments": arguments}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["result"].clone()
}

fn initialize() -> Value {
    json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}})
}

#[tokio::test]
async fn mcp_needs_a_valid_agent_token() {
    let server = start_memory().await;
    let url = server.url();
    let (status, body) = rpc(&url, None, "initialize", initialize()).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "unauthorized");
    let (status, _) = call(
        "POST",
        &format!("{url}/mcp"),
        &[ACCEPT, ("x-agent-token", "forged")],
        Some(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = rpc(&url, Some("alice"), "initialize", initialize()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["serverInfo"]["name"], "wombat-mc-lite");
    // No event stream and no sessions: GET and DELETE are 405 with Allow.
    let (status, _) = call("GET", &format!("{url}/mcp"), &[ACCEPT], None).await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn tools_are_listed_with_one_destructive_tool() {
    let server = start_memory().await;
    let (status, body) = rpc(&server.url(), Some("alice"), "tools/list", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let tools = body["result"]["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 6);
    let destructive: Vec<&str> = tools
        .iter()
        .filter(|t| t["annotations"]["destructiveHint"] == true)
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(destructive, ["delete_document"]);
}

#[tokio::test]
async fn tools_act_as_the_tokens_tenant_only() {
    let server = start_memory().await;
    let url = server.url();
    let task = tool(
        &url,
        "alice",
        "create_task",
        json!({"title": "alice's secret plan"}),
    )
    .await;
    assert_eq!(task["isError"], false, "{task}");
    let task_id = task["structuredContent"]["id"].as_str().unwrap().to_owned();
    let doc = tool(
        &url,
        "alice",
        "add_document",
        json!({"task_id": task_id, "title": "plan", "content": "x"}),
    )
    .await;
    let doc_id = doc["structuredContent"]["id"].as_str().unwrap().to_owned();

    let bob_search = tool(&url, "bob", "search_tasks", json!({"query": "secret"})).await;
    assert_eq!(bob_search["structuredContent"]["items"], json!([]));
    let alice_search = tool(&url, "alice", "search_tasks", json!({"query": "secret"})).await;
    assert_eq!(
        alice_search["structuredContent"]["items"][0]["id"],
        task_id.as_str()
    );
    for (name, args) in [
        ("list_documents", json!({"task_id": task_id})),
        ("read_document", json!({"document_id": doc_id})),
        ("delete_document", json!({"document_id": doc_id})),
        (
            "add_document",
            json!({"task_id": task_id, "title": "t", "content": "c"}),
        ),
    ] {
        let r = tool(&url, "bob", name, args).await;
        assert_eq!(r["isError"], true, "{name}: {r}");
        assert!(
            r["content"][0]["text"]
                .as_str()
                .unwrap()
                .contains("not found"),
            "{name}: {r}"
        );
    }
    let still = tool(
        &url,
        "alice",
        "read_document",
        json!({"document_id": doc_id}),
    )
    .await;
    assert_eq!(still["structuredContent"]["content"], "x");
}

#[tokio::test]
async fn tool_inputs_are_bounded_and_checked() {
    let server = start_memory().await;
    let url = server.url();
    let long = "x".repeat(501);
    for (name, args, needle) in [
        ("create_task", json!({"title": long}), "longer than 500"),
        ("create_task", json!({"title": "  "}), "must not be empty"),
        (
            "create_task",
            json!({"title": "t", "owner": "bob"}),
            "unknown argument",
        ),
        ("search_tasks", json!({"limit": 51}), "between 1 and 50"),
        (
            "read_document",
            json!({"document_id": 7}),
            "must be a string",
        ),
    ] {
        let r = tool(&url, "alice", name, args).await;
        assert_eq!(r["isError"], true, "{name}: {r}");
        let text = r["content"][0]["text"].as_str().unwrap();
        assert!(text.contains(needle), "{name}: {text}");
    }
    // The request body itself is limited like every other endpoint.
    let huge = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "create_task", "arguments": {"title": "x".repeat(2 * 1024 * 1024)}}});
    let t = token("alice");
    let (status, _) = call(
        "POST",
        &format!("{url}/mcp"),
        &[ACCEPT, ("x-agent-token", &t)],
        Some(&huge.to_string()),
    )
    .await;
    assert_eq!(status, 413);
}

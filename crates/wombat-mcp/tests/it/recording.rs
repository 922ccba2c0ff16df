//! Against a recording MCP server: which headers each request carried,
//! caching, timeouts, validation before the call, truncation, failures.

use std::time::Duration;

use serde_json::json;
use wombat_mcp::{McpOptions, McpTenant, TRUNCATION_MARKER, ToolContent};

use crate::support::{bounded, start_recording, token, tools};

fn text(outcome: &wombat_mcp::ToolOutcome) -> &str {
    match &outcome.content {
        ToolContent::Text(t) => t,
        other => panic!("expected text, got {other:?}"),
    }
}

/// A distinct W3C traceparent per tenant (`tenant-a` → trace id ...0a).
fn traceparent(user: &str) -> String {
    let last = user.strip_prefix("tenant-").unwrap_or("f");
    format!("00-{:0>32}-{:0>16}-01", format!("0{last}"), "1")
}

#[tokio::test]
async fn a_tenants_requests_never_carry_another_tenants_token() {
    let server = start_recording().await;
    let options = McpOptions {
        cache_ttl: Duration::ZERO,
        ..McpOptions::default()
    };
    let tools = tools(
        json!({"rec": {"url": server.url, "bearer": true, "headers": {"X-Api-Key": "operator-key"}}}),
        options,
    );
    let (a_token, b_token) = (token("tenant-a"), token("tenant-b"));
    let run = |user: &'static str, jwt: String| {
        let tools = tools.clone();
        async move {
            let tenant = McpTenant::new(user, jwt.clone()).with_traceparent(traceparent(user));
            for _ in 0..10 {
                assert!(!tools.list(&tenant).await.is_empty());
                let echo = tools
                    .call(&tenant, "rec__echo", json!({"text": user}))
                    .await;
                assert_eq!(text(&echo), user);
                let seen = tools
                    .call(&tenant, "rec__whoami", json!({"text": user}))
                    .await;
                assert_eq!(text(&seen), jwt, "the server saw another token");
            }
        }
    };
    bounded(async {
        tokio::join!(
            run("tenant-a", a_token.clone()),
            run("tenant-b", b_token.clone())
        )
    })
    .await;
    let requests = server.requests();
    assert!(requests.len() >= 40, "{}", requests.len());
    for r in &requests {
        assert_eq!(
            r.method, "POST",
            "a stateless server needs no GET stream or DELETE"
        );
        let token = r
            .agent_token
            .as_deref()
            .expect("every request carries X-Agent-Token");
        assert!(token == a_token || token == b_token);
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {token}").as_str())
        );
        assert_eq!(r.api_key.as_deref(), Some("operator-key"));
        if let Some(user) = &r.text_argument {
            let expected = if user == "tenant-a" {
                &a_token
            } else {
                &b_token
            };
            assert_eq!(
                token, expected,
                "a call made for {user} carried the other token"
            );
        }
        let user = if token == a_token {
            "tenant-a"
        } else {
            "tenant-b"
        };
        assert_eq!(r.traceparent.as_deref(), Some(traceparent(user).as_str()));
    }
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.jsonrpc_method.as_deref() == Some("tools/call"))
            .count(),
        40
    );
}

#[tokio::test]
async fn lists_are_cached_per_tenant_until_the_ttl() {
    let server = start_recording().await;
    let cached = tools(json!({"rec": {"url": server.url}}), McpOptions::default());
    let alice = McpTenant::new("alice", token("alice"));
    let bob = McpTenant::new("bob", token("bob"));
    let first = bounded(cached.list(&alice)).await;
    assert_eq!(server.count("tools/list"), 1);
    let second = bounded(cached.list(&alice)).await;
    assert_eq!(first, second);
    assert_eq!(
        server.count("tools/list"),
        1,
        "second list must come from the cache"
    );
    // Calls reuse the cached list for the schema.
    bounded(cached.call(&alice, "rec__echo", json!({"text": "hi"}))).await;
    assert_eq!(server.count("tools/list"), 1);
    // Another tenant has its own entry.
    bounded(cached.list(&bob)).await;
    assert_eq!(server.count("tools/list"), 2);

    let short = tools(
        json!({"rec": {"url": server.url}}),
        McpOptions {
            cache_ttl: Duration::from_millis(1),
            ..McpOptions::default()
        },
    );
    bounded(short.list(&alice)).await;
    assert_eq!(server.count("tools/list"), 3);
    tokio::time::sleep(Duration::from_millis(50)).await;
    bounded(short.list(&alice)).await;
    assert_eq!(
        server.count("tools/list"),
        4,
        "an expired entry is fetched again"
    );
}

#[tokio::test]
async fn listing_exposes_names_flags_and_leaves_out_bad_names() {
    let server = start_recording().await;
    let tools = tools(
        json!({"rec": {"url": server.url, "approval": {"echo": "always", "wipe": "never"}}}),
        McpOptions::default(),
    );
    let list = bounded(tools.list(&McpTenant::new("u", token("u")))).await;
    let names: Vec<&str> = list.iter().map(|t| t.name.as_str()).collect();
    assert!(!names.iter().any(|n| n.contains("bad")), "{names:?}");
    let wipe = list.iter().find(|t| t.name == "rec__wipe").unwrap();
    assert!(wipe.destructive);
    assert!(!wipe.requires_approval, "configured never");
    let echo = list.iter().find(|t| t.name == "rec__echo").unwrap();
    assert!(!echo.destructive);
    assert!(echo.requires_approval, "configured always");
}

#[tokio::test]
async fn a_slow_tool_times_out_as_an_error_outcome() {
    let server = start_recording().await;
    let tools = tools(
        json!({"rec": {"url": server.url, "timeout_secs": 1}}),
        McpOptions::default(),
    );
    let tenant = McpTenant::new("u", token("u"));
    // The tool sleeps 30 s; the bound here is generous but far below that.
    let outcome = tokio::time::timeout(
        Duration::from_secs(20),
        tools.call(&tenant, "rec__slow", json!({})),
    )
    .await
    .expect("the per-tool timeout must end the call");
    assert!(outcome.is_error);
    assert!(
        text(&outcome).contains("timed out after 1 s"),
        "{}",
        text(&outcome)
    );
}

#[tokio::test]
async fn invalid_arguments_are_rejected_before_any_call() {
    let server = start_recording().await;
    let tools = tools(json!({"rec": {"url": server.url}}), McpOptions::default());
    let tenant = McpTenant::new("u", token("u"));
    let wrong_type = bounded(tools.call(&tenant, "rec__echo", json!({"text": 5}))).await;
    assert!(wrong_type.is_error);
    assert!(
        text(&wrong_type).contains("invalid arguments for rec__echo"),
        "{}",
        text(&wrong_type)
    );
    assert!(text(&wrong_type).contains("/text"), "{}", text(&wrong_type));
    let missing = bounded(tools.call(&tenant, "rec__echo", json!({}))).await;
    assert!(
        text(&missing).contains("\"text\" is a required property"),
        "{}",
        text(&missing)
    );
    let not_object = bounded(tools.call(&tenant, "rec__echo", json!(["x"]))).await;
    assert!(text(&not_object).contains("expected a JSON object, got an array"));
    assert_eq!(
        server.count("tools/call"),
        0,
        "nothing may reach the server"
    );
}

#[tokio::test]
async fn long_results_are_truncated_with_a_marker() {
    let server = start_recording().await;
    let tools = tools(
        json!({"rec": {"url": server.url}}),
        McpOptions {
            max_result_bytes: 1000,
            ..McpOptions::default()
        },
    );
    let outcome =
        bounded(tools.call(&McpTenant::new("u", token("u")), "rec__big", json!({}))).await;
    assert!(!outcome.is_error);
    let t = text(&outcome);
    assert!(t.starts_with(&"x".repeat(1000)));
    assert!(
        t.ends_with(&format!("\n{TRUNCATION_MARKER}1000 of 100000 bytes shown]")),
        "{}",
        &t[1000..]
    );
}

#[tokio::test]
async fn results_errors_and_unknown_tools() {
    let server = start_recording().await;
    let tools = tools(json!({"rec": {"url": server.url}}), McpOptions::default());
    let tenant = McpTenant::new("u", token("u"));
    let structured = bounded(tools.call(&tenant, "rec__structured", json!(null))).await;
    assert_eq!(structured.content, ToolContent::Json(json!({"answer": 42})));
    let failed = bounded(tools.call(&tenant, "rec__fail", json!({}))).await;
    assert!(failed.is_error);
    assert_eq!(text(&failed), "it broke");
    for name in ["rec__nope", "nope__echo", "echo", "rec__bad.name"] {
        let unknown = bounded(tools.call(&tenant, name, json!({}))).await;
        assert!(unknown.is_error);
        assert_eq!(text(&unknown), format!("unknown tool {name:?}"));
    }
}

#[tokio::test]
async fn an_unreachable_server_only_loses_its_own_tools() {
    let server = start_recording().await;
    // A port that was just free: nothing listens there.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let tools = tools(
        json!({
            "down": {"url": format!("http://127.0.0.1:{closed}/mcp"), "timeout_secs": 5},
            "rec": {"url": server.url},
        }),
        McpOptions::default(),
    );
    let tenant = McpTenant::new("u", token("u"));
    let list = bounded(tools.list(&tenant)).await;
    assert!(!list.is_empty());
    assert!(list.iter().all(|t| t.server == "rec"), "{list:?}");
    let outcome = bounded(tools.call(&tenant, "down__anything", json!({}))).await;
    assert!(outcome.is_error);
    assert!(
        text(&outcome).contains("MCP server \"down\" failed"),
        "{}",
        text(&outcome)
    );
    let ok = bounded(tools.call(&tenant, "rec__echo", json!({"text": "still here"}))).await;
    assert_eq!(text(&ok), "still here");
}

#[tokio::test]
async fn a_failed_list_is_remembered_for_the_failure_ttl() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Accepts connections and drops them at once: every attempt fails,
    // and each one is counted.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&attempts);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    let tenant = McpTenant::new("u", token("u"));
    let remembered = tools(json!({"flaky": {"url": url}}), McpOptions::default());
    assert!(bounded(remembered.list(&tenant)).await.is_empty());
    let after_first = attempts.load(Ordering::SeqCst);
    assert!(after_first >= 1);
    assert!(bounded(remembered.list(&tenant)).await.is_empty());
    let outcome = bounded(remembered.call(&tenant, "flaky__x", json!({}))).await;
    assert!(outcome.is_error);
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        after_first,
        "no new attempt within the failure TTL"
    );

    let retried = tools(
        json!({"flaky": {"url": url}}),
        McpOptions {
            failure_ttl: Duration::from_millis(1),
            ..McpOptions::default()
        },
    );
    bounded(retried.list(&tenant)).await;
    let before = attempts.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    bounded(retried.list(&tenant)).await;
    assert!(
        attempts.load(Ordering::SeqCst) > before,
        "tried again after the failure TTL"
    );
}

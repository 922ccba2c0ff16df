//! Request-level hardening: the daemon key is checked before routing (a
//! caller without it cannot map routes), `HEAD` on GET routes, and streams
//! cut at the shutdown drain deadline end with an `error` event.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::Notify;

use crate::support::*;

const KEY: &str = "daemon-key-for-tests";

async fn raw(h: &Harness, method: &str, path: &str, key: Option<&str>) -> Resp {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = h.http.request(method, format!("{}{path}", h.url));
    if let Some(k) = key {
        req = req.header("x-agent-daemon-key", k);
    }
    buffer(req.send().await.expect("send")).await
}

#[tokio::test]
async fn without_the_daemon_key_unknown_routes_and_methods_are_403() {
    let h = setup().env("AGENT_DAEMON_API_KEY", KEY).start().await;
    for (method, path) in [
        ("PUT", "/usage"),
        ("DELETE", "/api/agents/send"),
        ("PUT", "/nope"),
        ("GET", "/nope"),
        ("POST", "/metrics"),
    ] {
        raw(&h, method, path, None)
            .await
            .assert_error(403, "invalid_daemon_key");
        raw(&h, method, path, Some("wrong"))
            .await
            .assert_error(403, "invalid_daemon_key");
    }
    // With the key, the usual answers.
    raw(&h, "PUT", "/usage", Some(KEY))
        .await
        .assert_error(405, "method_not_allowed");
    raw(&h, "PUT", "/nope", Some(KEY))
        .await
        .assert_error(404, "not_found");
    // `/health` stays open, wrong method included.
    assert_eq!(raw(&h, "GET", "/health", None).await.status, 200);
    raw(&h, "PUT", "/health", None)
        .await
        .assert_error(405, "method_not_allowed");
}

#[tokio::test]
async fn public_metrics_stay_open_without_the_key() {
    let h = setup()
        .env("AGENT_DAEMON_API_KEY", KEY)
        .env("WOMBAT_METRICS_PUBLIC", "true")
        .start()
        .await;
    assert_eq!(raw(&h, "GET", "/metrics", None).await.status, 200);
    raw(&h, "GET", "/usage", None)
        .await
        .assert_error(403, "invalid_daemon_key");
}

#[tokio::test]
async fn head_on_get_routes_is_get_without_a_body() {
    let h = setup().start().await;
    for path in [
        "/health", "/usage", "/skills", "/boot", "/metrics", "/context",
    ] {
        let get = raw(&h, "GET", path, None).await;
        let head = raw(&h, "HEAD", path, None).await;
        assert_eq!(head.status, get.status, "{path}");
        assert_eq!(head.text, "", "{path}: HEAD has no body");
        assert_eq!(
            head.header("content-type"),
            get.header("content-type"),
            "{path}"
        );
        if path == "/health" || path == "/skills" || path == "/boot" {
            // Same length as the GET body (these bodies are stable).
            assert_eq!(
                head.header("content-length"),
                Some(get.text.len().to_string().as_str()),
                "{path}"
            );
        }
        assert!(head.header("x-request-id").is_some(), "{path}");
    }
    // HEAD on a POST-only route is still a 405 that names HEAD.
    let resp = raw(&h, "HEAD", "/api/agents/send", None).await;
    assert_eq!(resp.status, 405);
    let allow = raw(&h, "PUT", "/health", None).await;
    assert_eq!(allow.header("allow"), Some("GET, HEAD"));
}

#[tokio::test]
async fn a_stream_cut_at_the_drain_deadline_ends_with_an_error_event() {
    let mut h = setup()
        .env("WOMBAT_SHUTDOWN_TIMEOUT_SECS", "1")
        .start()
        .await;
    let release = Arc::new(Notify::new());
    h.llm
        .script([Reply::chunks(&["one", " two"]).held(release.clone())]);
    let mut sse = h
        .sse(
            "/api/agents/stream",
            &send_body("alice", json!({"task_title": "Cut"})),
        )
        .await;
    assert_eq!(sse.next().await.expect("start").0, "start");
    assert_eq!(sse.next().await.expect("chunk").0, "chunk");
    // SIGTERM while the LLM still holds the rest of its stream.
    let served = h.shut_down();
    let rest = patiently("the cut stream", sse.rest()).await;
    let (name, data) = rest.last().expect("an event before the close");
    assert_eq!(name, "error", "{rest:?}");
    assert_eq!(data["type"], "error");
    assert_eq!(data["error"], "server shutting down");
    patiently("the server to stop", served)
        .await
        .expect("served");
    release.notify_one();
}

//! Bad input, auth and request ids: every refusal is the right status with a
//! JSON body whose first field is `error`, and never a 500.

use insta::assert_json_snapshot;
use serde_json::{Value, json};

use crate::support::{buffer, patiently, send_body, setup};

/// `(name, path, body, status, code)`.
fn bad_bodies() -> Vec<(&'static str, &'static str, Value, u16, &'static str)> {
    let send = |extra: Value| send_body("alice", extra);
    vec![
        (
            "message_not_a_string",
            "/api/agents/send",
            send(json!({"message": 5})),
            400,
            "invalid_request",
        ),
        (
            "kickoff_plan_not_a_bool",
            "/api/agents/send",
            send(json!({"task_title": "T", "metadata": {"kickoff_plan": "yes"}})),
            400,
            "invalid_request",
        ),
        (
            "missing_user_id",
            "/api/agents/send",
            json!({"session_key": "user:a:agent", "message": "hi"}),
            400,
            "invalid_request",
        ),
        (
            "missing_message",
            "/api/agents/send",
            json!({"user_id": "a", "session_key": "user:a:agent"}),
            400,
            "invalid_request",
        ),
        (
            "empty_message",
            "/api/agents/send",
            send(json!({"message": "  "})),
            400,
            "invalid_request",
        ),
        (
            "mismatched_user_id",
            "/api/agents/send",
            send(json!({"session_key": "user:bob:agent"})),
            400,
            "invalid_request",
        ),
        (
            "malformed_session_key",
            "/api/agents/send",
            send(json!({"session_key": "alice:agent"})),
            400,
            "invalid_request",
        ),
        (
            "traversal_role",
            "/api/agents/stream",
            send(json!({"session_key": "user:alice:../../etc/passwd"})),
            400,
            "invalid_request",
        ),
        (
            "unknown_timezone",
            "/api/agents/send",
            send(json!({"task_title": "T", "metadata": {"timezone": "Mars/Olympus"}})),
            400,
            "invalid_request",
        ),
        (
            "invalid_webhook_url",
            "/api/agents/send",
            send(json!({"task_title": "T", "webhook": {"url": "not a url"}})),
            400,
            "invalid_request",
        ),
        (
            "webhook_not_http",
            "/api/agents/send",
            send(json!({"task_title": "T", "webhook": {"url": "ftp://example.com/x"}})),
            400,
            "invalid_request",
        ),
        (
            "metadata_not_an_object",
            "/api/agents/send",
            send(json!({"metadata": "x"})),
            400,
            "invalid_request",
        ),
        (
            "bad_history_role",
            "/api/agents/send",
            send(json!({"messages": [{"role": "robot", "content": "x"}]})),
            400,
            "invalid_request",
        ),
        (
            "temperature_out_of_range",
            "/llm-task",
            json!({"prompt": "p", "temperature": 5}),
            400,
            "invalid_request",
        ),
        (
            "schema_not_an_object",
            "/llm-task",
            json!({"prompt": "p", "schema": [1, 2]}),
            400,
            "invalid_request",
        ),
        (
            "schema_invalid",
            "/llm-task",
            json!({"prompt": "p", "schema": {"type": 12}}),
            422,
            "invalid_schema",
        ),
        (
            "missing_prompt",
            "/llm-task",
            json!({"input": 1}),
            400,
            "invalid_request",
        ),
        (
            "negative_keep_recent",
            "/compact",
            json!({"messages": [{"role": "user", "content": "x"}], "keep_recent": -1}),
            400,
            "invalid_request",
        ),
        (
            "no_messages",
            "/compact",
            json!({"messages": []}),
            400,
            "invalid_request",
        ),
    ]
}

#[tokio::test]
async fn bad_bodies_are_400s_with_clear_messages() {
    let h = setup().start().await;
    let mut messages = serde_json::Map::new();
    for (name, path, body, status, code) in bad_bodies() {
        let r = h.post(path, &body).await;
        assert_eq!(r.status, status, "{name}: {}", r.text);
        let v = r.assert_error(status, code);
        // Schema failures say `Invalid payload` (as 0.1.0 did) and name the
        // problem in `details.message`.
        let shown = match v["details"]["message"].as_str() {
            Some(m) => json!(format!("{}: {m}", v["error"].as_str().unwrap_or_default())),
            None => v["error"].clone(),
        };
        messages.insert(name.to_owned(), shown);
    }
    assert_json_snapshot!(Value::Object(messages));
    assert!(
        h.llm.requests().is_empty(),
        "no bad request reached the LLM"
    );
}

#[tokio::test]
async fn malformed_transport_level_requests() {
    let h = setup().start().await;
    let invalid = h
        .post_raw("/api/agents/send", "application/json", "{\"user_id\": ")
        .await;
    let v = invalid.assert_error(400, "invalid_request");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("invalid JSON body")),
        "{v}"
    );
    h.post_raw("/api/agents/send", "application/json", "")
        .await
        .assert_error(400, "invalid_request");
    h.post_raw("/compact", "application/json", "[1, 2]")
        .await
        .assert_error(400, "invalid_request");

    let big = vec![b' '; 2 * 1024 * 1024];
    h.post_raw("/api/agents/send", "application/json", big)
        .await
        .assert_error(413, "payload_too_large");

    h.post_raw(
        "/api/agents/send",
        "application/x-www-form-urlencoded",
        "user_id=a",
    )
    .await
    .assert_error(415, "unsupported_media_type");

    h.get("/context?role=..%2F..%2Fetc%2Fpasswd")
        .await
        .assert_error(400, "invalid_request");

    let r = h.get("/api/agents/nope").await;
    let v = r.assert_error(404, "not_found");
    assert_eq!(v["error"], "no route for /api/agents/nope");

    let r = h.get("/api/agents/send").await;
    r.assert_error(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("POST"));
    let r = buffer(
        h.request(reqwest::Method::DELETE, "/health")
            .send()
            .await
            .expect("send"),
    )
    .await;
    r.assert_error(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let h = setup().start().await;
    let r = buffer(
        h.request(reqwest::Method::GET, "/health")
            .header("x-request-id", "trace-42")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(r.header("x-request-id"), Some("trace-42"));
    let generated = h.get("/health").await;
    let id = generated.header("x-request-id").expect("generated id");
    assert_eq!(id.len(), 32);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    // Errors carry one too.
    assert!(h.get("/nope").await.header("x-request-id").is_some());
}

#[tokio::test]
async fn a_trailing_slash_names_the_same_route() {
    let h = setup().start().await;
    assert_eq!(h.get("/health/").await.status, 200);
    assert_eq!(h.get("/usage/").await.status, 200);
    assert_eq!(h.get("/health//").await.status, 404);
}

#[tokio::test]
async fn the_daemon_key_guards_everything_but_health() {
    let h = setup()
        .env("AGENT_DAEMON_API_KEY", "dk-secret")
        .start()
        .await;
    let anon =
        |method: reqwest::Method, path: &str| h.http.request(method, format!("{}{path}", h.url));
    for (method, path) in [
        (reqwest::Method::POST, "/api/agents/send"),
        (reqwest::Method::POST, "/api/agents/stream"),
        (reqwest::Method::POST, "/compact"),
        (reqwest::Method::POST, "/llm-task"),
        (reqwest::Method::GET, "/usage"),
        (reqwest::Method::GET, "/context"),
        (reqwest::Method::GET, "/skills"),
        (reqwest::Method::GET, "/boot"),
        (reqwest::Method::POST, "/boot/complete"),
        (reqwest::Method::GET, "/metrics"),
    ] {
        let missing = buffer(anon(method.clone(), path).send().await.expect("send")).await;
        let v = missing.assert_error(403, "invalid_daemon_key");
        assert_eq!(v["error"], "Invalid daemon key", "{path}");
        let wrong = buffer(
            anon(method, path)
                .header("x-agent-daemon-key", "dk-wrong")
                .send()
                .await
                .expect("send"),
        )
        .await;
        wrong.assert_error(403, "invalid_daemon_key");
    }
    let health = buffer(
        anon(reqwest::Method::GET, "/health")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(health.status, 200);
    assert!(!health.text.contains("dk-secret"));
    // With the key, the protected endpoints answer.
    assert_eq!(h.get("/usage").await.status, 200);
    assert_eq!(h.get("/metrics").await.status, 200);
    let r = h
        .post(
            "/api/agents/send",
            &send_body("alice", json!({"task_title": "T"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn metrics_can_be_made_public() {
    let h = setup()
        .env("AGENT_DAEMON_API_KEY", "dk-secret")
        .env("WOMBAT_METRICS_PUBLIC", "true")
        .start()
        .await;
    let r = buffer(
        h.http
            .get(format!("{}/metrics", h.url))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(r.status, 200);
    let usage = buffer(
        h.http
            .get(format!("{}/usage", h.url))
            .send()
            .await
            .expect("send"),
    )
    .await;
    usage.assert_error(403, "invalid_daemon_key");
}

#[tokio::test]
async fn llm_task_repairs_invalid_output_once() {
    let h = setup().start().await;
    let schema =
        json!({"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}});
    h.llm.script([
        crate::support::Reply::text(r#"{"n": "three"}"#),
        crate::support::Reply::text(r#"{"n": 3}"#),
    ]);
    let r = h
        .post("/llm-task", &json!({"prompt": "count", "schema": schema}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["output"], json!({"n": 3}));
    assert_eq!(v["validated"], true);
    assert_eq!(v["usage"]["prompt_tokens"], 2500, "both calls are counted");
    let requests = h.llm.requests();
    assert_eq!(requests.len(), 2);
    let repair = requests[1].json();
    let messages = repair["messages"].as_array().expect("messages");
    assert_eq!(messages[messages.len() - 2]["content"], r#"{"n": "three"}"#);
    assert!(
        messages[messages.len() - 1]["content"]
            .as_str()
            .is_some_and(|c| c.contains("does not conform to the schema"))
    );
}

#[tokio::test]
async fn llm_task_without_json_twice_is_a_502() {
    let h = setup().start().await;
    h.llm
        .always(crate::support::Reply::text("Sure, here you go!"));
    let r = h.post("/llm-task", &json!({"prompt": "count"})).await;
    let v = r.assert_error(502, "llm_invalid_json");
    assert_eq!(v["details"]["response"], "Sure, here you go!");
    assert_eq!(h.llm.requests().len(), 2);
    assert_eq!(
        h.llm.last_body()["response_format"],
        json!({"type": "json_object"})
    );
}

#[tokio::test]
async fn webhooks_to_private_addresses_are_refused_by_default() {
    let h = setup()
        .env("WOMBAT_WEBHOOK_ALLOW_PRIVATE", "false")
        .start()
        .await;
    for url in [
        h.hooks.url.clone(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://[::1]:9/".to_owned(),
        "http://10.1.2.3/".to_owned(),
    ] {
        let r = h
            .post(
                "/api/agents/send",
                &send_body("alice", json!({"task_title": "T", "webhook": {"url": url}})),
            )
            .await;
        let v = r.assert_error(400, "webhook_host_not_allowed");
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|e| e.contains("not a public address")),
            "{v}"
        );
    }
    assert!(h.llm.requests().is_empty());

    // A host name is checked when it resolves: `localhost` is loopback, so
    // the request is served but the delivery is refused and counted.
    let port = h.hooks.url.rsplit(':').next().expect("port");
    let r = h
        .post(
            "/api/agents/send",
            &send_body(
                "alice",
                json!({"task_title": "T", "webhook": {"url": format!("http://localhost:{port}/hook")}}),
            ),
        )
        .await;
    assert_eq!(r.status, 200);
    patiently("the refused delivery to be counted", async {
        while !h
            .get("/metrics")
            .await
            .text
            .contains("wombat_webhook_failed_total 1")
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        h.hooks.requests().is_empty(),
        "nothing reached the receiver"
    );
}

#[tokio::test]
async fn webhook_hosts_can_be_restricted() {
    let h = setup()
        .env("WOMBAT_WEBHOOK_ALLOWED_HOSTS", "hooks.example.com")
        .start()
        .await;
    let r = h
        .post(
            "/api/agents/send",
            &send_body(
                "alice",
                json!({"task_title": "T", "webhook": {"url": h.hooks.url}}),
            ),
        )
        .await;
    let v = r.assert_error(400, "webhook_host_not_allowed");
    assert_eq!(
        v["error"],
        "webhook host \"127.0.0.1\" is not in WOMBAT_WEBHOOK_ALLOWED_HOSTS"
    );
    assert!(h.llm.requests().is_empty());
}

//! The request deadline (`WOMBAT_REQUEST_TIMEOUT_SECS`) and what survives
//! it: a reply the LLM already produced is never lost nor stored twice, and
//! send and stream give up on a hung backend alike. Also: the usage of a
//! stream the client abandoned is still recorded.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::support::{BackendKind, Faults, Reply, patiently, send_body, setup};

/// The backend's message writes take this long: far past the deadline.
const SLOW_WRITE: Duration = Duration::from_secs(3);

#[tokio::test]
async fn a_deadline_during_the_backend_write_returns_the_reply_and_stores_it_once() {
    let faults = Faults {
        slow: vec![("POST", "/messages", SLOW_WRITE)],
        ..Faults::default()
    };
    let h = setup()
        .env("WOMBAT_REQUEST_TIMEOUT_SECS", "1")
        .backend(BackendKind::Faulty(faults))
        .start()
        .await;
    let task = h.create_task("alice", "Slow").await;
    let r = patiently(
        "the send",
        h.post(
            "/api/agents/send",
            &send_body("alice", json!({"task_id": task})),
        ),
    )
    .await;
    let v = r.assert_error(502, "backend_write_failed");
    let details = &v["details"];
    assert_eq!(details["response"], "Hello from the fake", "{v}");
    assert_eq!(details["task_id"], task.as_str(), "{v}");
    assert_eq!(details["usage"]["total_tokens"], 1400, "{v}");
    assert_eq!(details["write"], "timed_out", "{v}");
    let key = details["idempotency_key"].as_str().expect("key").to_owned();

    // The write the daemon gave up on still lands: exactly one message,
    // under the key the caller was given, and no second write follows.
    let proxy = h.proxy.as_ref().expect("proxy");
    let forwarded = proxy.wait_forwarded(1).await;
    let writes: Vec<Value> = forwarded
        .iter()
        .filter(|r| r.method == "POST" && r.path.contains("/messages"))
        .map(|r| r.json())
        .collect();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0]["idempotency_key"], key.as_str());
    let messages = h.messages("alice", &task).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["content"], "Hello from the fake");
    assert_eq!(h.llm.requests().len(), 1, "paid once");
    let usage = h.get("/usage").await.json();
    assert_eq!(usage["requestCount"], 1, "{usage}");
}

#[tokio::test]
async fn send_and_stream_share_the_deadline_while_resolving_the_task() {
    let faults = Faults {
        hang: vec![("", "")],
        ..Faults::default()
    };
    let h = setup()
        .env("WOMBAT_REQUEST_TIMEOUT_SECS", "1")
        .backend(BackendKind::Faulty(faults))
        .start()
        .await;
    for path in ["/api/agents/send", "/api/agents/stream"] {
        let body = send_body(
            "alice",
            json!({"task_title": "Hung", "webhook": {"url": h.hooks.url}}),
        );
        let r = patiently(path, h.post(path, &body)).await;
        let v = r.assert_error(504, "deadline_exceeded");
        assert_eq!(
            v["error"], "request did not finish within 1s",
            "{path}: {v}"
        );
    }
    // `send` with `stream: true` takes the stream path.
    let r = patiently(
        "send with stream: true",
        h.post(
            "/api/agents/send",
            &send_body("alice", json!({"task_title": "Hung", "stream": true})),
        ),
    )
    .await;
    r.assert_error(504, "deadline_exceeded");
    assert!(h.llm.requests().is_empty(), "no tokens spent");
    // Both announce the failure to their webhook alike.
    for hook in h.hooks.wait(2).await {
        let event = hook.json();
        assert_eq!(event["event"], "agent.error", "{event}");
        assert_eq!(event["error"], "request deadline exceeded", "{event}");
    }
}

#[tokio::test]
async fn a_lost_write_acknowledgement_is_retried_under_the_same_key() {
    let faults = Faults {
        lose_first_ack: Some(("POST", "/messages")),
        ..Faults::default()
    };
    let h = setup().backend(BackendKind::Faulty(faults)).start().await;
    let task = h.create_task("alice", "Flaky").await;
    let r = h
        .post(
            "/api/agents/send",
            &send_body("alice", json!({"task_id": task})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let writes: Vec<Value> = h
        .proxy
        .as_ref()
        .expect("proxy")
        .forwarded()
        .iter()
        .filter(|r| r.method == "POST" && r.path.contains("/messages"))
        .map(|r| r.json())
        .collect();
    assert_eq!(writes.len(), 2, "stored, acknowledgement lost, retried");
    assert_eq!(writes[0]["idempotency_key"], writes[1]["idempotency_key"]);
    let messages = h.messages("alice", &task).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["id"], r.json()["message_id"]);
}

#[tokio::test]
async fn a_deadline_during_a_streamed_write_still_ends_with_done_and_stores_once() {
    let faults = Faults {
        slow: vec![("POST", "/messages", SLOW_WRITE)],
        ..Faults::default()
    };
    let h = setup()
        .env("WOMBAT_REQUEST_TIMEOUT_SECS", "1")
        .backend(BackendKind::Faulty(faults))
        .start()
        .await;
    let task = h.create_task("alice", "Slow").await;
    let events = h
        .sse(
            "/api/agents/stream",
            &send_body("alice", json!({"task_id": task})),
        )
        .await
        .rest()
        .await;
    let (name, done) = events.last().expect("an event");
    assert_eq!(name, "done", "{events:?}");
    assert_eq!(done["persisted"], false, "{done}");
    assert!(
        done["persist_error"]
            .as_str()
            .is_some_and(|e| e.contains("request deadline")),
        "{done}"
    );
    h.proxy.as_ref().expect("proxy").wait_forwarded(1).await;
    assert_eq!(h.messages("alice", &task).await.len(), 1);
}

#[tokio::test]
async fn an_abandoned_stream_still_records_its_usage_as_an_estimate() {
    let h = setup().start().await;
    let release = Arc::new(Notify::new());
    h.llm
        .script([Reply::chunks(&["Hello", " world"]).held(release)]);
    let mut sse = h
        .sse("/api/agents/stream", &send_body("alice", json!({})))
        .await;
    assert_eq!(sse.next().await.expect("start").0, "start");
    let (name, chunk) = sse.next().await.expect("chunk");
    assert_eq!((name.as_str(), &chunk["data"]), ("chunk", &json!("Hello")));
    drop(sse);
    h.llm.wait_closed_early(1).await;

    let usage = patiently("the abandoned stream's usage", async {
        loop {
            let v = h.get("/usage?user_id=alice").await.json();
            if v["requestCount"] == 1 {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(usage["estimatedRequestCount"], 1, "{usage}");
    // "Hello" is 5 characters: ceil(5 / 4) completion tokens.
    assert_eq!(usage["totalOutputTokens"], 2, "{usage}");
    let prompt = h.llm.last_body();
    let prompt_chars: usize = prompt["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["content"].as_str().unwrap_or("").len())
        .sum();
    assert_eq!(
        usage["totalInputTokens"],
        prompt_chars.div_ceil(4) as u64,
        "{usage}"
    );
    assert!(usage["totalCost"].as_f64().expect("cost") > 0.0, "{usage}");
    assert_eq!(
        usage["byModel"]["gpt-4o-mini"]["estimatedRequestCount"], 1,
        "{usage}"
    );
    let metrics = h.get("/metrics").await.text;
    assert!(
        metrics.contains("wombat_llm_usage_estimated_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "wombat_llm_completion_tokens_total{provider=\"openai\",model=\"gpt-4o-mini\"} 2"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_finished_stream_records_the_providers_usage_not_an_estimate() {
    let h = setup().start().await;
    let events = h
        .sse("/api/agents/stream", &send_body("alice", json!({})))
        .await
        .rest()
        .await;
    assert_eq!(events.last().expect("done").0, "done");
    let usage = h.get("/usage").await.json();
    assert_eq!(usage["requestCount"], 1, "{usage}");
    assert_eq!(usage["totalOutputTokens"], 150, "{usage}");
    assert!(usage.get("estimatedRequestCount").is_none(), "{usage}");
}

/// A stream client that stops reading (a full TCP window) must not keep the
/// LLM permit once the request deadline has passed: the deadline's `error`
/// event cannot be delivered to it, and waiting for that forever would hold
/// the permit (and the user's admission) for good.
#[tokio::test]
async fn a_stream_client_that_stops_reading_releases_the_llm_permit_at_the_deadline() {
    use tokio::io::AsyncWriteExt;
    let h = setup()
        .env("WOMBAT_REQUEST_TIMEOUT_SECS", "1")
        .env("WOMBAT_MAX_CONCURRENT_LLM", "1")
        .start()
        .await;
    // Far more than every buffer between the daemon and the client holds.
    let big = "x".repeat(32 * 1024);
    h.llm.script([Reply::Text {
        chunks: vec![big; 400],
        prompt_tokens: 10,
        completion_tokens: 10,
        hold: None,
    }]);
    let addr = h.url.trim_start_matches("http://").to_owned();
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut stalled = socket
        .connect(addr.parse().expect("addr"))
        .await
        .expect("connect");
    let body = send_body("alice", json!({})).to_string();
    let key = h
        .daemon_key
        .as_ref()
        .map(|k| format!("x-agent-daemon-key: {k}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /api/agents/stream HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n{key}content-length: {}\r\n\r\n",
        body.len()
    );
    stalled
        .write_all(format!("{head}{body}").as_bytes())
        .await
        .expect("write");
    h.llm.wait_requests(1).await;
    // Never read `stalled`. Once the deadline has passed, the permit is free
    // again: a second request is answered, not refused with 429.
    patiently("the permit to come back", async {
        loop {
            let r = h
                .post("/api/agents/stream", &send_body("bob", json!({})))
                .await;
            if r.status == 200 {
                return;
            }
            assert_eq!(r.status, 429, "{}", r.text);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    drop(stalled);
}

/// A provider's `Retry-After` is weighed against the time the *request* has
/// left, not against a fresh LLM budget: here task resolution already used
/// 3 of the 4 seconds, so a 1.5 s wait does not fit and the fallback is
/// tried at once (the router alone would have counted 4 s from its own
/// start and retried the primary model after the wait).
#[tokio::test]
async fn a_retry_wait_counts_the_time_the_request_already_used() {
    let faults = Faults {
        slow: vec![("GET", "/tasks", Duration::from_secs(3))],
        ..Faults::default()
    };
    let h = setup()
        .env("WOMBAT_REQUEST_TIMEOUT_SECS", "4")
        .llm_deadline(Duration::from_secs(4))
        .fallback("gpt-4o")
        .backend(BackendKind::Faulty(faults))
        .start()
        .await;
    h.llm
        .script([Reply::status(429, "slow down").header("retry-after", "1.5")]);
    let r = patiently(
        "the send",
        h.post(
            "/api/agents/send",
            &send_body("alice", json!({"task_title": "Slow lookup"})),
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let models: Vec<Value> = h
        .llm
        .requests()
        .iter()
        .map(|r| r.json()["model"].clone())
        .collect();
    assert_eq!(models, ["gpt-4o-mini", "gpt-4o"], "failed over at once");
}

#[tokio::test]
async fn an_endless_streamed_reply_is_cut_at_the_cap_and_its_usage_estimated() {
    let h = setup().start().await;
    // 34 chunks of 512 KiB: 17 MiB, past the 16 MiB cap of a reply.
    let piece = "x".repeat(512 * 1024);
    let pieces: Vec<&str> = (0..34).map(|_| piece.as_str()).collect();
    h.llm.script([Reply::chunks(&pieces)]);
    let mut sse = h
        .sse("/api/agents/stream", &send_body("alice", json!({})))
        .await;
    let mut relayed = 0usize;
    let error = loop {
        let (name, data) = sse.next().await.expect("an event");
        match name.as_str() {
            "start" => {}
            "chunk" => relayed += data["data"].as_str().expect("data").len(),
            "error" => break data,
            other => panic!("unexpected {other}: {data}"),
        }
    };
    assert_eq!(error["code"], "llm_reply_too_large", "{error}");
    assert!(relayed <= 16 * 1024 * 1024, "{relayed}");
    let usage = patiently("the cut stream's usage", async {
        loop {
            let v = h.get("/usage?user_id=alice").await.json();
            if v["requestCount"] == 1 {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(usage["estimatedRequestCount"], 1, "{usage}");
}

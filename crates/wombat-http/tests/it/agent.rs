//! `send` and `stream` end to end: task resolution, what reaches the LLM and
//! the backend, streaming and cancellation, webhooks, and every upstream
//! failure.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::support::{BackendKind, Reply, hmac_hex, send_body, setup};

const NO_TASK: &str =
    "Task not specified. Provide task_id, task_title, or set WOMBAT_DEFAULT_TASK env var.";

#[tokio::test]
async fn task_id_is_used_as_given_without_listing_or_creating() {
    let h = setup().start().await;
    let id = h.create_task("alice", "Existing").await;
    let r = h
        .post(
            "/api/agents/send",
            &send_body("alice", json!({"task_id": id})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["task_id"], id.as_str());
    assert_eq!(h.tasks("alice").await.len(), 1, "no task created");
    assert_eq!(h.messages("alice", &id).await.len(), 1);
}

#[tokio::test]
async fn task_title_finds_the_existing_task_or_creates_it_once() {
    let h = setup().start().await;
    let body = send_body(
        "alice",
        json!({"task_title": "Roadmap", "task_description": "Q3 roadmap", "task_metadata": {"team": "core"}}),
    );
    let first = h.post("/api/agents/send", &body).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let tasks = h.tasks("alice").await;
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["title"], "Roadmap");
    assert_eq!(tasks[0]["description"], "Q3 roadmap");
    assert_eq!(tasks[0]["status"], "in_progress");
    assert_eq!(tasks[0]["metadata"], json!({"team": "core"}));
    let second = h.post("/api/agents/send", &body).await;
    assert_eq!(second.status, 200);
    assert_eq!(first.json()["task_id"], second.json()["task_id"]);
    assert_eq!(h.tasks("alice").await.len(), 1, "no duplicate task");
    // Another tenant with the same title gets its own task.
    let bob = h
        .post(
            "/api/agents/send",
            &send_body("bob", json!({"task_title": "Roadmap"})),
        )
        .await;
    assert_ne!(bob.json()["task_id"], first.json()["task_id"]);
    let bob_tasks = h.tasks("bob").await;
    assert_eq!(bob_tasks[0]["description"], "Agent thread: Roadmap");
    assert_eq!(bob_tasks[0]["metadata"], json!({"type": "agent_thread"}));
}

#[tokio::test]
async fn default_task_applies_when_the_request_names_none() {
    let h = setup().env("WOMBAT_DEFAULT_TASK", "Inbox").start().await;
    let r = h
        .post("/api/agents/send", &send_body("alice", json!({})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let tasks = h.tasks("alice").await;
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["title"], "Inbox");
    assert_eq!(r.json()["task_id"], tasks[0]["id"]);
}

#[tokio::test]
async fn no_task_at_all_is_a_400_with_the_0_1_0_message() {
    let h = setup().start().await;
    let r = h
        .post("/api/agents/send", &send_body("alice", json!({})))
        .await;
    let v = r.assert_error(400, "invalid_request");
    assert_eq!(v["error"], NO_TASK);
    assert!(h.llm.requests().is_empty(), "no LLM call without a task");
}

#[tokio::test]
async fn the_reply_is_posted_as_an_agent_message_with_attachments() {
    let h = setup().start().await;
    let r = h
        .post(
            "/api/agents/send",
            &send_body(
                "alice",
                json!({"session_key": "user:alice:pm", "task_title": "Launch"}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    let task_id = v["task_id"].as_str().expect("task id");
    let messages = h.messages("alice", task_id).await;
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m["id"], v["message_id"]);
    assert_eq!(m["content"], "Hello from the fake");
    assert_eq!(m["actor_type"], "agent");
    assert_eq!(m["agent_role"], "pm");
    assert_eq!(m["attachments"]["model"], "gpt-4o-mini");
    assert_eq!(m["attachments"]["provider"], "openai");
    assert_eq!(m["attachments"]["usage"], v["usage"]);
    assert_eq!(m["attachments"]["cost"], v["cost"]);
    assert!(h.documents("alice", task_id).await.is_empty());
}

#[tokio::test]
async fn kickoff_plan_rewrites_the_prompt_and_posts_a_plan_document() {
    let h = setup().start().await;
    let r = h
        .post(
            "/api/agents/send",
            &send_body(
                "alice",
                json!({"message": "Plan the launch", "task_title": "Launch", "metadata": {"kickoff_plan": true}}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    let sent = h.llm.last_body();
    let last = sent["messages"]
        .as_array()
        .expect("messages")
        .last()
        .cloned();
    assert_eq!(
        last.expect("a user message")["content"],
        "Draft a concise plan based on the user's request.\n\nUser request: Plan the launch"
    );
    let task_id = v["task_id"].as_str().expect("task id");
    let docs = h.documents("alice", task_id).await;
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["id"], v["document_id"]);
    assert_eq!(docs[0]["doc_type"], "plan");
    assert_eq!(docs[0]["title"], "Plan");
    assert_eq!(docs[0]["content"], "Hello from the fake");

    // Custom note and title.
    let r = h
        .post(
            "/api/agents/send",
            &send_body(
                "alice",
                json!({"message": "Go", "task_id": task_id, "metadata": {"kickoff_plan": true, "kickoff_note": "Outline it.", "plan_title": "Launch plan"}}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let sent = h.llm.last_body();
    assert_eq!(
        sent["messages"]
            .as_array()
            .expect("messages")
            .last()
            .expect("user")["content"],
        "Outline it.\n\nUser request: Go"
    );
    let docs = h.documents("alice", task_id).await;
    assert_eq!(docs[1]["title"], "Launch plan");
}

#[tokio::test]
async fn the_llm_sees_the_workspace_prompt_history_and_the_message() {
    let h = setup().start().await;
    let r = h
        .post(
            "/api/agents/send",
            &send_body(
                "alice",
                json!({"task_title": "T", "messages": [
                    {"role": "user", "content": "earlier question"},
                    {"role": "assistant", "content": "earlier answer"},
                ]}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let recorded = h.llm.requests();
    let req = recorded.last().expect("a request");
    assert_eq!(req.path, "/v1/chat/completions");
    assert_eq!(req.header("authorization"), Some("Bearer sk-test-key"));
    let sent = req.json();
    assert_eq!(sent["model"], "gpt-4o-mini");
    let messages = sent["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 4);
    assert_eq!(messages[0]["role"], "system");
    let system = messages[0]["content"].as_str().expect("system prompt");
    assert!(system.contains("You are Wren"), "{system}");
    assert!(system.contains("## Operating Rules"), "{system}");
    assert_eq!(messages[1]["content"], "earlier question");
    assert_eq!(messages[2]["role"], "assistant");
    assert_eq!(
        messages[3],
        json!({"role": "user", "content": "Hello there"})
    );

    let r = h
        .post(
            "/api/agents/send",
            &send_body(
                "alice",
                json!({"task_title": "T", "metadata": {"system_prompt": "You are a pirate."}}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let sent = h.llm.last_body();
    assert_eq!(sent["messages"][0]["content"], "You are a pirate.");
}

#[tokio::test]
async fn the_request_timezone_reaches_the_prompt() {
    let h = setup().time_context().start().await;
    let r = h
        .post(
            "/api/agents/send",
            &send_body(
                "alice",
                json!({"task_title": "T", "metadata": {"timezone": "Asia/Tokyo"}}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let system = h.llm.last_body()["messages"][0]["content"]
        .as_str()
        .expect("system")
        .to_owned();
    assert!(system.contains("Asia/Tokyo"), "{system}");
}

#[tokio::test]
async fn streaming_delivers_chunks_before_the_llm_finishes_then_persists() {
    let h = setup().start().await;
    let release = Arc::new(Notify::new());
    h.llm
        .script([Reply::chunks(&["First", " second", " third"]).held(release.clone())]);
    let mut sse = h
        .sse(
            "/api/agents/stream",
            &send_body("alice", json!({"task_title": "Live"})),
        )
        .await;
    assert_eq!(sse.next().await.expect("start").0, "start");
    let (name, first) = sse.next().await.expect("first chunk");
    assert_eq!(name, "chunk");
    assert_eq!(first, json!({"type": "chunk", "data": "First"}));
    // The fake still holds the rest of its stream: the chunk came early.
    release.notify_one();
    let rest = sse.rest().await;
    let (name, done) = rest.last().expect("done");
    assert_eq!(name, "done");
    assert_eq!(done["persisted"], true);
    let task_id = done["task_id"].as_str().expect("task id");
    let messages = h.messages("alice", task_id).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["id"], done["message_id"]);
    assert_eq!(messages[0]["content"], "First second third");
    assert_eq!(done["usage"]["prompt_tokens"], 1250);
}

#[tokio::test]
async fn streaming_without_a_task_does_not_persist() {
    let h = setup().start().await;
    let events = h
        .sse("/api/agents/stream", &send_body("alice", json!({})))
        .await
        .rest()
        .await;
    let (name, done) = events.last().expect("done");
    assert_eq!(name, "done");
    assert_eq!(done["persisted"], false);
    assert_eq!(done["task_id"], Value::Null);
    assert_eq!(done["message_id"], Value::Null);
    assert!(h.tasks("alice").await.is_empty(), "nothing written");
}

#[tokio::test]
async fn a_client_disconnect_cancels_the_provider_call() {
    let h = setup().start().await;
    let release = Arc::new(Notify::new());
    h.llm
        .script([Reply::chunks(&["one", " two"]).held(release)]);
    let mut sse = h
        .sse(
            "/api/agents/stream",
            &send_body("alice", json!({"task_title": "Gone"})),
        )
        .await;
    assert_eq!(sse.next().await.expect("start").0, "start");
    assert_eq!(sse.next().await.expect("chunk").0, "chunk");
    drop(sse);
    // The fake never released its stream: only a cancelled upstream call
    // closes its connection.
    h.llm.wait_closed_early(1).await;
    let metrics = h.get("/metrics").await.text;
    assert!(metrics.contains("wombat_streams_open 0"), "{metrics}");
}

#[tokio::test]
async fn a_send_whose_client_left_still_persists_the_reply() {
    let h = setup().start().await;
    let task_id = h.create_task("alice", "Patience").await;
    let release = Arc::new(Notify::new());
    h.llm
        .script([Reply::text("worth the wait").held(release.clone())]);
    let request = h
        .http
        .post(format!("{}/api/agents/send", h.url))
        .json(&send_body(
            "alice",
            json!({"task_id": task_id, "webhook": {"url": h.hooks.url}}),
        ));
    let client = tokio::spawn(request.send());
    h.llm.wait_requests(1).await;
    // The caller gives up (its own timeout, a proxy...) while the LLM works.
    client.abort();
    let _ = client.await;
    release.notify_one();
    let hooks = h.hooks.wait(1).await;
    assert_eq!(hooks[0].json()["event"], "agent.completed");
    let messages = h.messages("alice", &task_id).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["content"], "worth the wait");
}

#[tokio::test]
async fn stream_failures_are_error_events() {
    let h = setup().llm_attempts(1).start().await;
    h.llm.script([Reply::status(500, "boom")]);
    let events = h
        .sse(
            "/api/agents/stream",
            &send_body(
                "alice",
                json!({"task_title": "T", "webhook": {"url": h.hooks.url}}),
            ),
        )
        .await
        .rest()
        .await;
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["start", "error"]);
    assert_eq!(events[1].1["type"], "error");
    assert_eq!(events[1].1["code"], "provider_error");
    let hooks = h.hooks.wait(1).await;
    let event = hooks[0].json();
    assert_eq!(event["event"], "agent.error");
    assert_eq!(event["error"], events[1].1["error"]);
    assert!(event["task_id"].is_string());
}

#[tokio::test]
async fn webhook_is_signed_and_carries_the_completed_event() {
    let h = setup().start().await;
    let r = h
        .post(
            "/api/agents/send",
            &send_body(
                "alice",
                json!({"task_title": "Hooked", "metadata": {"source": "test"}, "webhook": {"url": h.hooks.url, "secret": "whsec", "headers": {"x-tenant": "acme", "x-wombat-signature": "forged"}}}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    let hooks = h.hooks.wait(1).await;
    let hook = &hooks[0];
    assert_eq!(hook.method, "POST");
    assert_eq!(hook.path, "/hook");
    assert_eq!(hook.header("content-type"), Some("application/json"));
    assert_eq!(hook.header("user-agent"), Some("Wombat-Webhook/1.0"));
    assert_eq!(hook.header("x-tenant"), Some("acme"));
    assert_eq!(
        hook.header("x-wombat-signature"),
        Some(hmac_hex("whsec", &hook.body).as_str())
    );
    let ts = hook.header("x-wombat-timestamp").expect("timestamp");
    let mut material = format!("{ts}.").into_bytes();
    material.extend_from_slice(&hook.body);
    assert_eq!(
        hook.header("x-wombat-signature-v2"),
        Some(format!("t={ts},v1={}", hmac_hex("whsec", &material)).as_str())
    );
    assert!(hook.header("x-wombat-delivery").is_some());
    let mut names: Vec<&str> = hook.raw_headers.iter().map(|(k, _)| k.as_str()).collect();
    let count = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(
        names.len(),
        count,
        "no header sent twice: {:?}",
        hook.raw_headers
    );
    let event = hook.json();
    assert_eq!(event["event"], "agent.completed");
    assert!(
        event["timestamp"]
            .as_str()
            .is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok())
    );
    assert_eq!(event["task_id"], v["task_id"]);
    assert_eq!(event["user_id"], "alice");
    assert_eq!(event["role"], "agent");
    assert_eq!(event["response"], "Hello from the fake");
    assert_eq!(event["usage"], v["usage"]);
    assert_eq!(event["cost"], v["cost"]);
    assert_eq!(event["metadata"], json!({"source": "test"}));
}

#[tokio::test]
async fn webhook_is_retried_after_a_500_with_the_same_delivery_id() {
    let h = setup().start().await;
    h.hooks.answer(&[500]);
    let r = h
        .post(
            "/api/agents/send",
            &send_body(
                "alice",
                json!({"task_title": "T", "webhook": {"url": h.hooks.url}}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let hooks = h.hooks.wait(2).await;
    assert_eq!(hooks.len(), 2);
    assert!(hooks[0].header("x-wombat-delivery").is_some());
    assert_eq!(
        hooks[0].header("x-wombat-delivery"),
        hooks[1].header("x-wombat-delivery")
    );
    assert_eq!(hooks[0].body, hooks[1].body);
    assert!(
        hooks[0].header("x-wombat-signature").is_none(),
        "no secret, no signature"
    );
}

#[tokio::test]
async fn llm_failure_is_a_502_naming_provider_and_model_and_fires_agent_error() {
    let h = setup().llm_attempts(1).start().await;
    h.llm.script([Reply::status(500, "upstream exploded")]);
    let r = h
        .post(
            "/api/agents/send",
            &send_body(
                "alice",
                json!({"task_title": "T", "webhook": {"url": h.hooks.url}}),
            ),
        )
        .await;
    assert_eq!(r.status, 502, "{}", r.text);
    let v = r.json();
    assert!(r.text.starts_with("{\"error\":"));
    assert!(v["code"].is_string());
    assert_eq!(v["details"]["provider"], "openai");
    assert_eq!(v["details"]["model"], "gpt-4o-mini");
    assert_eq!(v["details"]["upstream_status"], 500);
    let hooks = h.hooks.wait(1).await;
    let event = hooks[0].json();
    assert_eq!(event["event"], "agent.error");
    assert_eq!(event["error"], v["error"]);
    assert_eq!(event["user_id"], "alice");
}

#[tokio::test]
async fn all_rate_limited_is_a_429_with_the_provider_retry_after() {
    let h = setup().llm_attempts(1).start().await;
    h.llm
        .always(Reply::status(429, "slow down").header("retry-after", "7"));
    let r = h
        .post(
            "/api/agents/send",
            &send_body("alice", json!({"task_title": "T"})),
        )
        .await;
    let v = r.assert_error(429, "llm_rate_limited");
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(v["details"]["provider"], "openai");
    assert_eq!(h.llm.requests().len(), 1);
}

#[tokio::test]
async fn the_concurrency_cap_answers_429_with_retry_after() {
    let h = setup().env("WOMBAT_MAX_CONCURRENT_LLM", "1").start().await;
    let release = Arc::new(Notify::new());
    h.llm.script([Reply::text("held").held(release.clone())]);
    let first = {
        let req = h
            .request(reqwest::Method::POST, "/api/agents/send")
            .json(&send_body("alice", json!({"task_title": "T"})));
        tokio::spawn(async move { crate::support::buffer(req.send().await.expect("send")).await })
    };
    h.llm.wait_requests(1).await;
    let second = h
        .post(
            "/api/agents/send",
            &send_body("alice", json!({"task_title": "T"})),
        )
        .await;
    second.assert_error(429, "overloaded");
    assert!(second.header("retry-after").is_some());
    release.notify_one();
    let first = first.await.expect("first request");
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.json()["response"], "held");
}

#[tokio::test]
async fn backend_down_during_the_write_is_a_502_that_keeps_the_reply() {
    let h = setup().backend(BackendKind::Closed).start().await;
    let r = h
        .post(
            "/api/agents/send",
            &send_body(
                "alice",
                json!({"task_id": "task-123", "webhook": {"url": h.hooks.url}}),
            ),
        )
        .await;
    let v = r.assert_error(502, "backend_write_failed");
    assert_eq!(v["details"]["task_id"], "task-123");
    assert_eq!(v["details"]["response"], "Hello from the fake");
    assert_eq!(v["details"]["usage"]["total_tokens"], 1400);
    assert_eq!(v["details"]["cost"]["model"], "gpt-4o-mini");
    let usage = h.get("/usage").await.json();
    assert_eq!(usage["requestCount"], 1, "the LLM call is still counted");
    let hooks = h.hooks.wait(1).await;
    assert_eq!(hooks[0].json()["event"], "agent.error");
}

#[tokio::test]
async fn backend_down_during_task_resolution_costs_no_llm_call() {
    let h = setup().backend(BackendKind::Closed).start().await;
    let r = h
        .post(
            "/api/agents/send",
            &send_body("alice", json!({"task_title": "T"})),
        )
        .await;
    assert!(matches!(r.status, 502 | 504), "{}", r.text);
    assert_eq!(r.json()["code"], "backend_error");
    assert!(h.llm.requests().is_empty());
}

#[tokio::test]
async fn context_warning_when_the_prompt_fills_the_window() {
    let h = setup().start().await;
    h.llm.script([Reply::text("ok").tokens(7000, 10)]);
    let r = h
        .post(
            "/api/agents/send",
            &send_body(
                "alice",
                json!({"task_title": "T", "metadata": {"model": "gpt-4"}}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["model"], "gpt-4");
    assert_eq!(
        v["context_warning"],
        "Context usage is 85.4% of 8192 tokens. Consider compacting history."
    );
    // Below the threshold: no field at all.
    h.llm.script([Reply::text("ok").tokens(6000, 10)]);
    let r = h
        .post(
            "/api/agents/send",
            &send_body(
                "alice",
                json!({"task_title": "T", "metadata": {"model": "gpt-4"}}),
            ),
        )
        .await;
    assert!(r.json().get("context_warning").is_none(), "{}", r.text);
}

#[tokio::test]
async fn retries_and_failovers_are_counted() {
    let h = setup().fallback("gpt-4o").start().await;
    // Default model: 500 twice (both attempts), then the fallback answers.
    h.llm
        .script([Reply::status(500, "boom"), Reply::status(500, "boom again")]);
    let r = h
        .post(
            "/api/agents/send",
            &send_body("alice", json!({"task_title": "T"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["model"], "gpt-4o");
    let models: Vec<Value> = h
        .llm
        .requests()
        .iter()
        .map(|r| r.json()["model"].clone())
        .collect();
    assert_eq!(models, ["gpt-4o-mini", "gpt-4o-mini", "gpt-4o"]);
    let metrics = h.get("/metrics").await.text;
    assert!(metrics.contains("wombat_llm_retries_total 2"), "{metrics}");
    assert!(
        metrics.contains("wombat_llm_failovers_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wombat_llm_calls_total{provider=\"openai\",model=\"gpt-4o\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish_then_stops() {
    let mut h = setup().start().await;
    let release = Arc::new(Notify::new());
    h.llm
        .script([Reply::text("last words").held(release.clone())]);
    let in_flight = {
        let req = h
            .request(reqwest::Method::POST, "/api/agents/send")
            .json(&send_body("alice", json!({"task_title": "T"})));
        tokio::spawn(async move { crate::support::buffer(req.send().await.expect("send")).await })
    };
    h.llm.wait_requests(1).await;
    let served = h.shut_down();
    release.notify_one();
    let r = in_flight.await.expect("request task");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["response"], "last words");
    crate::support::patiently("the daemon to drain", served)
        .await
        .expect("serve task");
    let after = reqwest::Client::new()
        .get(format!("{}/health", h.url))
        .send()
        .await;
    assert!(after.is_err(), "the listener is closed after shutdown");
}

#[tokio::test]
async fn a_hanging_provider_is_a_504_and_the_call_is_abandoned() {
    let h = setup()
        .llm_deadline(std::time::Duration::from_millis(200))
        .start()
        .await;
    // Held and never released: the provider hangs.
    h.llm
        .script([Reply::text("never").held(Arc::new(Notify::new()))]);
    let r = h
        .post(
            "/api/agents/send",
            &send_body(
                "alice",
                json!({"task_title": "T", "webhook": {"url": h.hooks.url}}),
            ),
        )
        .await;
    let v = r.assert_error(504, "llm_timeout");
    assert!(v["error"].is_string());
    h.llm.wait_closed_early(1).await;
    let hooks = h.hooks.wait(1).await;
    assert_eq!(hooks[0].json()["event"], "agent.error");
}

#[tokio::test]
async fn without_a_backend_agent_calls_are_503_before_any_llm_call() {
    let h = setup().backend(BackendKind::None).start().await;
    for extra in [json!({"task_title": "T"}), json!({"task_id": "task_1"})] {
        let r = h.post("/api/agents/send", &send_body("alice", extra)).await;
        r.assert_error(503, "backend_not_configured");
    }
    let r = h
        .post(
            "/api/agents/stream",
            &send_body("alice", json!({"task_id": "task_1"})),
        )
        .await;
    r.assert_error(503, "backend_not_configured");
    assert!(h.llm.requests().is_empty(), "no tokens spent");
    // A stream that names no task needs no backend, as in 0.1.0.
    let events = h
        .sse("/api/agents/stream", &send_body("alice", json!({})))
        .await
        .rest()
        .await;
    assert_eq!(events.last().expect("done").1["persisted"], false);
    let health = h.get("/health").await.json();
    assert_eq!(health["backend"]["status"], "error");
    assert_eq!(health["backend"]["url"], Value::Null);
}

//! Every endpoint's happy path, with the exact wire shapes as snapshots.

use insta::assert_json_snapshot;
use serde_json::{Value, json};

use crate::support::{Reply, send_body, setup};

#[tokio::test]
async fn send_answers_with_the_0_1_0_shape_plus_ours() {
    let h = setup().start().await;
    let resp = h
        .post(
            "/api/agents/send",
            &send_body("alice", json!({"task_title": "Launch"})),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_json_snapshot!(resp.json(), {".task_id" => "[id]", ".message_id" => "[id]"});
}

#[tokio::test]
async fn stream_endpoint_sends_start_chunks_done() {
    let h = setup().start().await;
    let sse = h
        .sse(
            "/api/agents/stream",
            &send_body("alice", json!({"task_title": "Launch"})),
        )
        .await;
    let events = sse.rest().await;
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["start", "chunk", "chunk", "chunk", "done"]);
    let values: Vec<&Value> = events.iter().map(|(_, v)| v).collect();
    assert_json_snapshot!(values, {"[4].task_id" => "[id]", "[4].message_id" => "[id]"});
}

#[tokio::test]
async fn send_with_stream_true_is_the_stream_endpoint() {
    let h = setup().start().await;
    let sse = h
        .sse(
            "/api/agents/send",
            &send_body("alice", json!({"task_title": "Launch", "stream": true})),
        )
        .await;
    let events = sse.rest().await;
    let text: String = events
        .iter()
        .filter(|(e, _)| e == "chunk")
        .map(|(_, v)| v["data"].as_str().expect("chunk data"))
        .collect();
    assert_eq!(text, "Hello from the fake");
    let (name, done) = events.last().expect("events");
    assert_eq!(name, "done");
    assert_eq!(done["persisted"], true);
    let sent = h.llm.last_body();
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn compact_returns_short_histories_unchanged() {
    let h = setup().start().await;
    let resp = h
        .post(
            "/compact",
            &json!({"messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
            ]}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_json_snapshot!(resp.json());
    assert!(h.llm.requests().is_empty(), "no LLM call for a no-op");
}

#[tokio::test]
async fn compact_summarises_all_but_the_recent_messages() {
    let h = setup().start().await;
    h.llm
        .script([Reply::text("  The user wants a launch plan.  ").tokens(300, 20)]);
    let resp = h
        .post(
            "/compact",
            &json!({"messages": [
                {"role": "user", "content": "We launch in May"},
                {"role": "assistant", "content": "Noted"},
                {"role": "user", "content": "Budget is 10k"},
                {"role": "assistant", "content": "Got it"},
                {"role": "user", "content": "Draft the plan"},
            ], "keep_recent": 2, "instructions": "Keep numbers."}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_json_snapshot!(resp.json());
    let sent = h.llm.last_body();
    let system = sent["messages"][0]["content"].as_str().expect("system");
    assert!(
        system.contains("Additional instructions: Keep numbers."),
        "{system}"
    );
    let user = sent["messages"][1]["content"].as_str().expect("user");
    assert!(user.contains("user: We launch in May") && user.contains("user: Budget is 10k"));
    assert!(
        !user.contains("Draft the plan"),
        "kept messages are not summarised"
    );
}

#[tokio::test]
async fn llm_task_validates_against_the_schema() {
    let h = setup().start().await;
    h.llm
        .script([Reply::text(r#"{"title":"Ship it","priority":2}"#).tokens(200, 12)]);
    let schema = json!({
        "type": "object",
        "properties": {"title": {"type": "string"}, "priority": {"type": "integer"}},
        "required": ["title", "priority"],
    });
    let resp = h
        .post(
            "/llm-task",
            &json!({"prompt": "Turn this into a task", "input": {"text": "ship it soon"}, "schema": schema, "temperature": 0.1, "max_tokens": 100}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_json_snapshot!(resp.json());
    let sent = h.llm.last_body();
    assert_eq!(sent["response_format"]["type"], "json_schema");
    assert_eq!(sent["response_format"]["json_schema"]["schema"], schema);
    assert_eq!(
        sent["max_completion_tokens"], 100,
        "OpenAI gets the newer field"
    );
    let user = sent["messages"][1]["content"].as_str().expect("user");
    assert!(user.starts_with("Turn this into a task\n\nInput:\n{\"text\":\"ship it soon\"}"));
}

#[tokio::test]
async fn usage_totals_and_per_user_filter() {
    let h = setup().start().await;
    for user in ["alice", "alice", "bob"] {
        let r = h
            .post(
                "/api/agents/send",
                &send_body(user, json!({"task_title": "Usage"})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    assert_json_snapshot!("usage_all", h.get("/usage").await.json());
    assert_json_snapshot!("usage_alice", h.get("/usage?user_id=alice").await.json());
}

#[tokio::test]
async fn health_shallow_and_deep() {
    let h = setup().env("WOMBAT_DEFAULT_TASK", "Inbox").start().await;
    let shallow = h.get("/health").await;
    assert_eq!(shallow.status, 200);
    assert_json_snapshot!("health_shallow", shallow.json(), {".workspace.path" => "[path]", ".backend.url" => "[url]", ".llm.providers.openai.baseUrl" => "[url]"});
    let deep = h.get("/health?deep=true").await.json();
    assert_eq!(deep["backend"]["status"], "ok", "{deep}");
    assert_eq!(deep["status"], "ok");
    // Secrets never show.
    assert!(!shallow.text.contains("sk-test-key") && !shallow.text.contains("e2e-test-secret"));
}

/// The key that matters is the one of the default model's provider, which
/// `LLM_MODEL_DEFAULT` may name apart from `LLM_PROVIDER` (default openai).
#[tokio::test]
async fn health_checks_the_key_of_the_default_models_provider() {
    let h = setup().start().await;
    let ok = h.get("/health").await.json();
    assert_eq!(ok["llm"]["status"], "ok", "{ok}");
    let h = setup()
        .default_model("anthropic/claude-sonnet-4")
        .start()
        .await;
    let missing = h.get("/health").await.json();
    assert_eq!(missing["llm"]["status"], "unconfigured", "{missing}");
    assert_eq!(missing["status"], "degraded", "{missing}");
    let hint = missing["llm"]["hint"].as_str().unwrap_or_default();
    assert!(hint.contains("ANTHROPIC_API_KEY"), "{missing}");
    assert_eq!(missing["llm"]["defaultProvider"], "openai", "{missing}");
}

#[tokio::test]
async fn deep_health_reports_a_dead_backend() {
    let h = setup()
        .backend(crate::support::BackendKind::Closed)
        .start()
        .await;
    let deep = h.get("/health?deep=true").await.json();
    assert_eq!(deep["backend"]["status"], "error", "{deep}");
    assert!(deep["backend"]["error"].is_string());
    assert_eq!(deep["status"], "degraded");
}

#[tokio::test]
async fn context_skills_and_boot_reports() {
    let h = setup().start().await;
    let context = h.get("/context?role=agent").await;
    assert_eq!(context.status, 200, "{}", context.text);
    assert_json_snapshot!("context", context.json(), {".workspacePath" => "[path]"});
    let skills = h.get("/skills").await;
    assert_eq!(skills.status, 200);
    assert_json_snapshot!("skills", skills.json(), {".skills[].location" => "[path]"});
    let boot = h.get("/boot").await;
    assert_eq!(boot.status, 200);
    assert_json_snapshot!("boot", boot.json());
}

#[tokio::test]
async fn boot_complete_writes_the_marker() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("SOUL.md"), "# Soul\n\nYou are Tess.\n").expect("write");
    std::fs::write(dir.path().join("BOOT.md"), "# First run\n\nSay hello.\n").expect("write");
    let h = setup().workspace(dir.path()).start().await;
    let before = h.get("/boot").await.json();
    assert_eq!(
        before,
        json!({"hasBoot": true, "isComplete": false, "content": "# First run\n\nSay hello."})
    );
    let resp = h.post("/boot/complete", &json!({})).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json(), json!({"status": "ok"}));
    assert!(dir.path().join(".boot-complete").exists());
    let after = h.get("/boot").await.json();
    assert_eq!(
        after,
        json!({"hasBoot": true, "isComplete": true, "content": null})
    );
    assert_eq!(
        h.get("/health").await.json()["workspace"]["bootComplete"],
        true
    );
}

#[tokio::test]
async fn metrics_expose_the_expected_series() {
    let h = setup().start().await;
    let r = h
        .post(
            "/api/agents/send",
            &send_body("alice", json!({"task_title": "Metrics"})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(h.get("/nope").await.status, 404);
    let m = h.get("/metrics").await;
    assert_eq!(m.status, 200);
    assert!(
        m.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4"))
    );
    for series in [
        "wombat_http_requests_total{route=\"/api/agents/send\",status=\"200\"} 1",
        "wombat_http_requests_total{route=\"unmatched\",status=\"404\"} 1",
        "wombat_http_request_duration_seconds_count{route=\"/api/agents/send\"} 1",
        "wombat_llm_calls_total{provider=\"openai\",model=\"gpt-4o-mini\"} 1",
        "wombat_llm_prompt_tokens_total{provider=\"openai\",model=\"gpt-4o-mini\"} 1250",
        "wombat_llm_completion_tokens_total{provider=\"openai\",model=\"gpt-4o-mini\"} 150",
        "wombat_llm_cost_usd_total{provider=\"openai\",model=\"gpt-4o-mini\"} 0.000278",
        "wombat_llm_errors_total{provider=\"openai\",model=\"gpt-4o-mini\"} 0",
        "wombat_webhook_delivered_total 0",
        "wombat_backend_errors_total 0",
        "wombat_streams_open 0",
    ] {
        assert!(m.text.contains(series), "missing {series} in\n{}", m.text);
    }
}

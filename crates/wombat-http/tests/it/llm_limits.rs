//! The LLM layer seen through the daemon: the echo provider cannot be
//! selected by a request unless configured and its work is bounded,
//! provider error text never carries key material to callers, and
//! `/health` stays compatible with 0.1.0 while showing where calls go.

use serde_json::{Value, json};

use crate::support::{Reply, patiently, setup};

/// The ~500-byte attack: nine levels of arrays of 16 items each.
fn exploding_task() -> Value {
    let mut schema = json!({"type": "string"});
    for _ in 0..9 {
        schema = json!({"type": "array", "minItems": 16, "items": schema});
    }
    json!({"prompt": "fill it", "model": "echo/x", "schema": schema})
}

#[tokio::test]
async fn a_request_cannot_select_echo_when_it_is_not_configured() {
    let h = setup().start().await;
    let resp = patiently("/llm-task", h.post("/llm-task", &exploding_task())).await;
    let v = resp.assert_error(400, "invalid_request");
    let msg = v["error"].as_str().expect("message");
    assert!(msg.contains("\"echo/x\""), "names the model: {msg}");
    assert!(
        msg.contains("LLM_PROVIDER=echo"),
        "says how to allow it: {msg}"
    );
    // Same rule on /send's metadata.model.
    let resp = h
        .post(
            "/api/agents/send",
            &json!({"user_id": "u1", "session_key": "user:u1:agent", "message": "hi",
                    "task_id": "1", "metadata": {"model": "echo/x"}}),
        )
        .await;
    resp.assert_error(400, "invalid_request");
    assert!(h.llm.requests().is_empty(), "no provider was called");
}

#[tokio::test]
async fn an_exploding_schema_gets_a_bounded_answer_when_echo_is_configured() {
    let h = setup().default_model("echo/demo").start().await;
    let resp = patiently("/llm-task", h.post("/llm-task", &exploding_task())).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let v = resp.json();
    assert_eq!(v["provider"], "echo");
    // No instance fits the sample budget: the echo answer does not conform.
    assert_eq!(v["validated"], false, "{v}");
    assert!(
        resp.text.len() < 64 * 1024,
        "bounded: {} bytes",
        resp.text.len()
    );
}

#[tokio::test]
async fn a_schema_nested_too_deep_is_refused() {
    let h = setup().start().await;
    let mut schema = json!({"type": "string"});
    for _ in 0..40 {
        schema = json!({"type": "object", "properties": {"a": schema}});
    }
    let resp = h
        .post("/llm-task", &json!({"prompt": "x", "schema": schema}))
        .await;
    let v = resp.assert_error(422, "invalid_schema");
    assert!(
        v["error"].as_str().is_some_and(|m| m.contains("levels")),
        "{v}"
    );
    assert!(h.llm.requests().is_empty());
}

/// A 401 whose message carries a masked fragment of our key, as OpenAI's does.
#[tokio::test]
async fn provider_auth_errors_never_reach_callers_with_key_material() {
    let h = setup().llm_attempts(1).start().await;
    let leaky = "Incorrect API key provided: sk-test*****-key. You can find your API key at https://platform.openai.com/account/api-keys.";
    h.llm.always(Reply::Status {
        status: 401,
        body: json!({"error": {"message": leaky, "type": "invalid_request_error", "code": "invalid_api_key"}})
            .to_string(),
        headers: vec![("content-type".into(), "application/json".into())],
    });
    let resp = h
        .post("/llm-task", &json!({"prompt": "say hi as json"}))
        .await;
    let v = resp.assert_error(502, "provider_auth");
    for fragment in ["sk-test", "*****", "-key.", "Incorrect API key"] {
        assert!(!resp.text.contains(fragment), "{fragment} leaked: {v}");
    }
    let msg = v["error"].as_str().expect("message");
    assert!(
        msg.contains("provider \"openai\" rejected the API key (HTTP 401); check OPENAI_API_KEY"),
        "{msg}"
    );
    assert_eq!(v["details"]["upstream_status"], 401, "{v}");

    // Any other provider error that echoes a key fragment is scrubbed too,
    // while its useful text stays.
    h.llm.always(Reply::status(
        400,
        "The model `gpt-x` does not exist for key sk-test*****-key",
    ));
    let resp = h
        .post("/llm-task", &json!({"prompt": "say hi as json"}))
        .await;
    assert_eq!(resp.status, 502, "{}", resp.text);
    assert!(resp.text.contains("does not exist"), "{}", resp.text);
    assert!(!resp.text.contains("sk-test"), "{}", resp.text);
    assert!(!resp.text.contains("*****"), "{}", resp.text);
}

#[tokio::test]
async fn health_config_keeps_the_0_1_0_shape() {
    let h = setup().start().await;
    let v = h.get("/health").await.json();
    let config = &v["config"];
    // 0.1.0: {"port": <number>, "defaultTask": "(not set)", "model": "gpt-4o-mini",
    // "fallbackModel": "(not set)"}: same types and values.
    assert!(config["port"].is_u64(), "{config}");
    assert_eq!(config["defaultTask"], "(not set)", "{config}");
    assert_eq!(config["model"], "gpt-4o-mini", "{config}");
    assert_eq!(config["fallbackModel"], "(not set)", "{config}");
    // Additions carry the qualified data.
    assert_eq!(config["provider"], "openai", "{config}");
    assert_eq!(config["qualifiedModel"], "openai/gpt-4o-mini", "{config}");
    assert_eq!(config["fallbackProvider"], Value::Null, "{config}");
    assert_eq!(config["qualifiedFallbackModel"], Value::Null, "{config}");

    let h = setup()
        .env("WOMBAT_DEFAULT_TASK", "Inbox")
        .fallback("anthropic/claude-3-5-haiku")
        .start()
        .await;
    let v = h.get("/health").await.json();
    let config = &v["config"];
    assert_eq!(config["defaultTask"], "Inbox", "{config}");
    assert_eq!(
        config["fallbackModel"], "anthropic/claude-3-5-haiku",
        "{config}"
    );
    assert_eq!(config["fallbackProvider"], "anthropic", "{config}");
    assert_eq!(
        config["qualifiedFallbackModel"], "anthropic/claude-3-5-haiku",
        "{config}"
    );
}

#[tokio::test]
async fn health_is_degraded_when_the_fallback_key_is_missing_and_shows_where_calls_go() {
    let h = setup().start().await;
    let v = h.get("/health").await.json();
    assert_eq!(v["llm"]["status"], "ok", "{v}");
    let openai = &v["llm"]["providers"]["openai"];
    assert_eq!(openai["baseUrl"], format!("{}/v1", h.llm.url), "{v}");
    assert_eq!(openai["keySet"], true, "{v}");
    assert_eq!(openai["uses"], json!(["default", "cheap", "best"]), "{v}");

    let h = setup().fallback("anthropic/claude-3-5-haiku").start().await;
    let resp = h.get("/health").await;
    let v = resp.json();
    assert_eq!(v["status"], "degraded", "{v}");
    assert_eq!(v["llm"]["status"], "degraded", "{v}");
    let hint = v["llm"]["hint"].as_str().expect("a hint");
    assert!(hint.contains("ANTHROPIC_API_KEY"), "{hint}");
    assert!(hint.contains("fallback"), "{hint}");
    let anthropic = &v["llm"]["providers"]["anthropic"];
    assert_eq!(anthropic["baseUrl"], "https://api.anthropic.com", "{v}");
    assert_eq!(anthropic["keySet"], false, "{v}");
    assert_eq!(anthropic["keyRequired"], true, "{v}");
    assert_eq!(anthropic["uses"], json!(["fallback"]), "{v}");
    assert!(
        !resp.text.contains("sk-test-key"),
        "no secret: {}",
        resp.text
    );
}

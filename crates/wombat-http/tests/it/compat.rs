//! Wire compatibility with 0.1.0 where it had slipped: the zod-shaped
//! "Invalid payload" error of schema failures, and the sampling temperature
//! 0.1.0 sent (0.4 on send/stream, 0.3 on compact), both compared with what
//! 0.1.0 put on the wire.

use serde_json::{Value, json};

use crate::support::{send_body, setup};

/// Our error without the additions (`code`, `details.message`): what a
/// 0.1.0 client compares against.
fn as_0_1_0(mut v: Value) -> Value {
    let obj = v.as_object_mut().expect("object");
    assert_eq!(obj.remove("code"), Some(json!("invalid_request")));
    let details = obj
        .get_mut("details")
        .and_then(Value::as_object_mut)
        .expect("details");
    assert!(
        details.remove("message").is_some_and(|m| m.is_string()),
        "a human-readable message rides along"
    );
    v
}

#[tokio::test]
async fn schema_failures_answer_with_0_1_0s_invalid_payload_shape() {
    let h = setup().start().await;
    let cases = [
        (
            "/api/agents/send",
            json!({"session_key": "user:a:agent", "message": 5}),
            json!({"user_id": ["Required"], "message": ["Expected string, received number"]}),
        ),
        (
            "/api/agents/stream",
            json!({"user_id": "a", "session_key": "user:a:agent", "message": "hi",
                   "messages": [{"role": "bot", "content": "x"}]}),
            json!({"messages": ["Invalid enum value. Expected 'system' | 'user' | 'assistant' | 'tool', received 'bot'"]}),
        ),
        (
            "/api/agents/send",
            json!({"user_id": "a", "session_key": "user:a:agent", "message": "hi", "stream": "yes"}),
            json!({"stream": ["Expected boolean, received string"]}),
        ),
        ("/compact", json!({}), json!({"messages": ["Required"]})),
        (
            "/compact",
            json!({"messages": [{"role": "user"}]}),
            json!({"messages": ["Required"]}),
        ),
        (
            "/llm-task",
            json!({"prompt": 1, "max_tokens": "10"}),
            json!({"prompt": ["Expected string, received number"],
                   "max_tokens": ["Expected number, received string"]}),
        ),
    ];
    for (path, body, field_errors) in cases {
        let r = h.post(path, &body).await;
        let v = r.assert_error(400, "invalid_request");
        assert_eq!(
            as_0_1_0(v.clone()),
            json!({"error": "Invalid payload",
                   "details": {"formErrors": [], "fieldErrors": field_errors}}),
            "{path} {body}: {v}"
        );
    }
    let r = h.post_raw("/compact", "application/json", "[1]").await;
    assert_eq!(
        as_0_1_0(r.assert_error(400, "invalid_request")),
        json!({"error": "Invalid payload",
               "details": {"formErrors": ["Expected object, received array"], "fieldErrors": {}}})
    );
    // An empty body reads as `{}`, as 0.1.0's body parser did.
    let r = h.post_raw("/api/agents/send", "application/json", "").await;
    assert_eq!(
        r.assert_error(400, "invalid_request")["details"]["fieldErrors"],
        json!({"user_id": ["Required"], "session_key": ["Required"], "message": ["Required"]})
    );
    assert!(h.llm.requests().is_empty());
}

#[tokio::test]
async fn checks_beyond_0_1_0s_schema_keep_their_own_messages() {
    let h = setup().start().await;
    let r = h
        .post(
            "/api/agents/send",
            &send_body("alice", json!({"session_key": "user:bob:agent"})),
        )
        .await;
    let v = r.assert_error(400, "invalid_request");
    assert_ne!(v["error"], "Invalid payload", "{v}");
    assert!(v.get("details").is_none(), "{v}");
    let r = h
        .post(
            "/api/agents/send",
            &send_body("alice", json!({"message": " "})),
        )
        .await;
    assert_eq!(
        r.assert_error(400, "invalid_request")["error"],
        "message must not be empty"
    );
    let r = h
        .post_raw("/api/agents/send", "application/json", "{\"user_id\": ")
        .await;
    let v = r.assert_error(400, "invalid_request");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("invalid JSON body")),
        "{v}"
    );
}

fn compact_body() -> Value {
    json!({"messages": [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
    ], "keep_recent": 1})
}

#[tokio::test]
async fn the_llm_gets_0_1_0s_temperatures_by_default() {
    let h = setup().start().await;
    let r = h
        .post(
            "/api/agents/send",
            &send_body("alice", json!({"task_title": "T"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(h.llm.last_body()["temperature"], json!(0.4));
    let events = h
        .sse("/api/agents/stream", &send_body("alice", json!({})))
        .await
        .rest()
        .await;
    assert_eq!(events.last().expect("done").0, "done");
    assert_eq!(h.llm.last_body()["temperature"], json!(0.4));
    let r = h.post("/compact", &compact_body()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(h.llm.last_body()["temperature"], json!(0.3));
}

#[tokio::test]
async fn temperatures_follow_the_configuration_and_the_request() {
    let h = setup()
        .env("WOMBAT_TEMPERATURE", "1.5")
        .env("WOMBAT_COMPACT_TEMPERATURE", "0")
        .start()
        .await;
    let r = h
        .post(
            "/api/agents/send",
            &send_body("alice", json!({"task_title": "T"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(h.llm.last_body()["temperature"], json!(1.5));
    let r = h
        .post(
            "/api/agents/send",
            &send_body(
                "alice",
                json!({"task_title": "T", "metadata": {"temperature": 0.75}}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(h.llm.last_body()["temperature"], json!(0.75));
    let r = h.post("/compact", &compact_body()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(h.llm.last_body()["temperature"], json!(0.0));

    let before = h.llm.requests().len();
    for bad in [json!(2.5), json!(-0.1), json!("hot")] {
        let r = h
            .post(
                "/api/agents/stream",
                &send_body("alice", json!({"metadata": {"temperature": bad}})),
            )
            .await;
        let v = r.assert_error(400, "invalid_request");
        assert!(
            v["error"].as_str().is_some_and(
                |e| e.starts_with("metadata.temperature must be a number between 0 and 2")
            ),
            "{v}"
        );
    }
    assert_eq!(h.llm.requests().len(), before, "refused before the LLM");
}

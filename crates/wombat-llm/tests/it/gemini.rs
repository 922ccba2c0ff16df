//! The Google Gemini adapter.

use std::time::Duration;

use serde_json::json;
use wombat_core::{ChatMessage, Provider, Usage};
use wombat_llm::{Error, FinishReason, ResponseFormat};

use crate::fake::{FakeServer, Reply};
use crate::{collect, config, hello, router};

fn chunk(text: &str, finish: Option<&str>, completion: u64) -> String {
    let mut candidate =
        json!({"content": {"parts": [{"text": text}], "role": "model"}, "index": 0});
    if let Some(f) = finish {
        candidate["finishReason"] = json!(f);
    }
    let data = json!({"candidates": [candidate], "usageMetadata": {
        "promptTokenCount": 9, "candidatesTokenCount": completion, "totalTokenCount": 9 + completion}});
    format!("data: {data}\r\n\r\n")
}

#[tokio::test]
async fn complete_sends_system_instruction_roles_and_generation_config() {
    let server = FakeServer::start(vec![Reply::json(
        200,
        json!({"candidates": [{"content": {"parts": [{"text": "{\"n\":"}, {"text": "1}"}], "role": "model"},
                "finishReason": "STOP", "index": 0}],
               "usageMetadata": {"promptTokenCount": 20, "candidatesTokenCount": 5, "thoughtsTokenCount": 3, "totalTokenCount": 28},
               "modelVersion": "gemini-2.0-flash"}),
    )])
    .await;
    let (router, _) = router(config(
        Provider::Google,
        "gemini-2.0-flash",
        &server.url("/v1beta"),
    ));
    let mut req = hello();
    req.messages = vec![
        ChatMessage::user("q1"),
        ChatMessage::assistant("a1"),
        ChatMessage::user("q2"),
    ];
    req.temperature = Some(0.5);
    req.max_tokens = Some(256);
    req.response_format = Some(ResponseFormat::JsonSchema {
        name: "n".into(),
        schema: json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "additionalProperties": false,
            "properties": {"n": {"type": "integer", "exclusiveMinimum": 0}},
            "required": ["n"]
        }),
    });
    let routed = router.complete(req).await.expect("completes");
    assert_eq!(routed.completion.text, "{\"n\":1}");
    assert_eq!(
        routed.completion.usage,
        Usage {
            prompt_tokens: 20,
            completion_tokens: 8,
            total_tokens: 28
        }
    );
    assert_eq!(routed.completion.finish_reason, Some(FinishReason::Stop));

    let sent = &server.requests()[0];
    assert_eq!(sent.path, "/v1beta/models/gemini-2.0-flash:generateContent");
    assert_eq!(sent.header("x-goog-api-key"), Some("test-key-google"));
    assert_eq!(sent.header("authorization"), None);
    assert_eq!(
        sent.json(),
        json!({
            "contents": [
                {"role": "user", "parts": [{"text": "q1"}]},
                {"role": "model", "parts": [{"text": "a1"}]},
                {"role": "user", "parts": [{"text": "q2"}]}
            ],
            "systemInstruction": {"parts": [{"text": "You are terse."}]},
            "generationConfig": {
                "temperature": 0.5,
                "maxOutputTokens": 256,
                "responseMimeType": "application/json",
                "responseSchema": {
                    "type": "object",
                    "properties": {"n": {"type": "integer"}},
                    "required": ["n"]
                }
            }
        })
    );
}

#[tokio::test]
async fn stream_takes_the_last_cumulative_usage_with_crlf_separators_and_split_writes() {
    let body = [
        chunk("Hello", None, 1),
        chunk(" 世界", None, 3),
        chunk(" 🦀", Some("STOP"), 4),
    ]
    .concat();
    for seed in [6, 7] {
        let server = FakeServer::start(vec![Reply::sse(body.clone()).split(seed)]).await;
        let (router, _) = router(config(
            Provider::Google,
            "gemini-2.0-flash",
            &server.url("/v1beta"),
        ));
        let got = collect(&router, hello()).await.expect("stream opens");
        assert!(got.error.is_none(), "{:?}", got.error);
        assert_eq!(got.text, "Hello 世界 🦀");
        assert_eq!(got.usage(), Usage::new(9, 4));
        assert_eq!(got.finish_reason(), Some(FinishReason::Stop));
        assert_eq!(
            server.requests()[0].path,
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
        );
    }
}

#[tokio::test]
async fn stream_ending_without_a_finish_reason_is_truncated() {
    let body = [chunk("Hel", None, 1), chunk("lo", None, 2)].concat();
    let server = FakeServer::start(vec![Reply::sse(body)]).await;
    let (router, _) = router(config(
        Provider::Google,
        "gemini-2.0-flash",
        &server.url("/v1beta"),
    ));
    let got = collect(&router, hello())
        .await
        .expect("first delta arrives");
    assert_eq!(got.text, "Hello");
    assert!(
        matches!(got.error, Some(Error::Truncated { .. })),
        "{:?}",
        got.error
    );
}

#[tokio::test]
async fn resource_exhausted_waits_for_retry_delay_from_the_body() {
    let server = FakeServer::start(vec![
        Reply::json(
            429,
            json!({"error": {"code": 429, "message": "You exceeded your current quota.", "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaMetric": "m"}]},
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}
                ]}}),
        ),
        Reply::json(
            200,
            json!({"candidates": [{"content": {"parts": [{"text": "ok"}]}, "finishReason": "STOP"}]}),
        ),
    ])
    .await;
    let (router, sleeper) = router(config(
        Provider::Google,
        "gemini-2.0-flash",
        &server.url("/v1beta"),
    ));
    let routed = router
        .complete(hello())
        .await
        .expect("second attempt succeeds");
    assert_eq!(routed.completion.text, "ok");
    assert_eq!(routed.attempts, 2);
    assert_eq!(sleeper.waits(), [Duration::from_secs(1)]);
}

#[tokio::test]
async fn model_ids_cannot_escape_the_path() {
    let server = FakeServer::start(vec![Reply::json(
        200,
        json!({"candidates": [{"content": {"parts": [{"text": "ok"}]}, "finishReason": "STOP"}]}),
    )])
    .await;
    let (router, _) = router(config(
        Provider::Google,
        "x/../../y?key=1",
        &server.url("/v1beta"),
    ));
    router.complete(hello()).await.expect("completes");
    assert_eq!(
        server.requests()[0].path,
        "/v1beta/models/x%2F..%2F..%2Fy%3Fkey%3D1:generateContent"
    );
}

//! The Google Gemini adapter.

use std::time::Duration;

use serde_json::json;
use wombat_core::{ChatMessage, Part, Provider, Role, ToolCall, ToolContent, ToolResult, Usage};
use wombat_llm::{
    Error, ErrorKind, FinishReason, ResponseFormat, RoutedEvent, ToolChoice, ToolSpec,
};

use crate::anthropic::collect_events;
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
        got.error.as_ref().map(Error::kind) == Some(ErrorKind::Truncated),
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

// ---- tools ----

fn args(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    v.as_object().cloned().expect("an object")
}

fn text_reply() -> Reply {
    Reply::json(
        200,
        json!({"candidates": [{"content": {"parts": [{"text": "ok"}], "role": "model"}, "finishReason": "STOP"}]}),
    )
}

fn gemini_router(server: &FakeServer) -> wombat_llm::Router {
    router(config(
        Provider::Google,
        "gemini-2.5-flash",
        &server.url("/v1beta"),
    ))
    .0
}

#[tokio::test]
async fn function_declarations_and_tool_config_as_gemini_expects() {
    let choices = [
        (None, None),
        (Some(ToolChoice::Auto), Some(json!({"mode": "AUTO"}))),
        (Some(ToolChoice::None), Some(json!({"mode": "NONE"}))),
        (Some(ToolChoice::Required), Some(json!({"mode": "ANY"}))),
        (
            Some(ToolChoice::Tool("get_weather".into())),
            Some(json!({"mode": "ANY", "allowedFunctionNames": ["get_weather"]})),
        ),
    ];
    let server = FakeServer::start(choices.iter().map(|_| text_reply()).collect()).await;
    let router = gemini_router(&server);
    for (choice, _) in &choices {
        let mut req = hello();
        req.tools = vec![
            ToolSpec::new(
                "get_weather",
                json!({
                    "$schema": "http://json-schema.org/draft-07/schema#",
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "city": {"type": "string", "description": "City name"},
                        "unit": {"type": ["string", "null"], "enum": ["c", "f"]}
                    },
                    "required": ["city"]
                }),
            )
            .with_description("Current weather for a city"),
            ToolSpec::new("now", json!({"type": "object", "properties": {}})),
        ];
        req.tool_choice = choice.clone();
        // Gemini has no switch for parallel calls; it is not sent.
        req.parallel_tool_calls = Some(false);
        router.complete(req).await.expect("completes");
    }
    let sent = server.requests();
    for (i, (_, mode)) in choices.iter().enumerate() {
        let body = sent[i].json();
        assert_eq!(
            body["tools"],
            json!([{"functionDeclarations": [
                {"name": "get_weather", "description": "Current weather for a city",
                 "parameters": {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string", "description": "City name"},
                        "unit": {"type": "string", "nullable": true, "enum": ["c", "f"]}
                    },
                    "required": ["city"]
                 }},
                // No properties: no parameters (Gemini refuses an empty OBJECT).
                {"name": "now"}
            ]}]),
            "request {i}"
        );
        assert_eq!(
            body.get("toolConfig"),
            mode.as_ref()
                .map(|m| json!({"functionCallingConfig": m}))
                .as_ref(),
            "request {i}"
        );
    }
}

#[tokio::test]
async fn complete_returns_parallel_calls_with_ids_signatures_and_tool_calls_finish() {
    let server = FakeServer::start(vec![Reply::json(
        200,
        json!({"candidates": [{"content": {"role": "model", "parts": [
                {"text": "Checking."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnLTE="},
                {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}},
                {"functionCall": {"id": "fc-7", "name": "now"}}
            ]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 12, "thoughtsTokenCount": 8, "totalTokenCount": 50}}),
    )])
    .await;
    let router = gemini_router(&server);
    let mut req = hello();
    req.tools = vec![ToolSpec::new("get_weather", json!({"type": "object"}))];
    let c = router.complete(req).await.expect("completes").completion;
    assert_eq!(c.text, "Checking.");
    assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(c.usage.prompt_tokens, 30);
    assert_eq!(c.usage.completion_tokens, 20);
    assert_eq!(c.tool_calls.len(), 3);
    let (a, b, n) = (&c.tool_calls[0], &c.tool_calls[1], &c.tool_calls[2]);
    assert_eq!(
        (a.name.as_str(), &a.arguments),
        ("get_weather", &args(json!({"city": "Paris"})))
    );
    assert_eq!(a.signature.as_deref(), Some("c2lnLTE="));
    assert_eq!(b.arguments, args(json!({"city": "Oslo"})));
    assert_eq!(b.signature, None);
    // Made-up ids are distinct; Gemini's own id is kept.
    assert!(a.id.starts_with("call_") && b.id.starts_with("call_") && a.id != b.id);
    assert_eq!((n.id.as_str(), n.name.as_str()), ("fc-7", "now"));
    assert!(n.arguments.is_empty());
}

#[tokio::test]
async fn history_sends_calls_with_signatures_and_named_function_responses() {
    let server = FakeServer::start(vec![text_reply()]).await;
    let router = gemini_router(&server);
    let mut req = hello();
    req.tools = vec![ToolSpec::new("get_weather", json!({"type": "object"}))];
    req.messages = vec![
        ChatMessage::user("Weather in Paris and Oslo, and the time?"),
        ChatMessage::with_parts(
            Role::Assistant,
            vec![
                Part::text("Checking."),
                Part::ToolCall(
                    ToolCall::new("call_a", "get_weather", args(json!({"city": "Paris"})))
                        .with_signature("c2lnLTE="),
                ),
                Part::ToolCall(ToolCall::new(
                    "call_b",
                    "get_weather",
                    args(json!({"city": "Oslo"})),
                )),
            ],
        ),
        ChatMessage::tool_result(ToolResult::new(
            "call_a",
            ToolContent::Json(json!({"temp_c": 21})),
        )),
        ChatMessage::tool_result(ToolResult::error("call_b", "station offline")),
        ChatMessage::user("Be brief."),
        // A call from another provider (no signature), answered in text.
        ChatMessage::with_parts(
            Role::Assistant,
            vec![Part::ToolCall(ToolCall::new(
                "toolu_9",
                "now",
                args(json!({})),
            ))],
        ),
        ChatMessage::tool_result(ToolResult::new(
            "toolu_9",
            ToolContent::Text("12:00".into()),
        )),
    ];
    router.complete(req).await.expect("completes");
    let body = server.requests()[0].json();
    assert_eq!(
        body["contents"],
        json!([
            {"role": "user", "parts": [{"text": "Weather in Paris and Oslo, and the time?"}]},
            {"role": "model", "parts": [
                {"text": "Checking."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnLTE="},
                {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"output": {"temp_c": 21}}}},
                {"functionResponse": {"name": "get_weather", "response": {"error": "station offline"}}},
                {"text": "Be brief."}
            ]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "now", "args": {}}, "thoughtSignature": "skip_thought_signature_validator"}
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "now", "response": {"output": "12:00"}}}
            ]}
        ])
    );
}

#[tokio::test]
async fn a_result_for_an_unknown_call_is_refused_before_sending() {
    let server = FakeServer::start(vec![text_reply()]).await;
    let router = gemini_router(&server);
    let mut req = hello();
    req.messages = vec![
        ChatMessage::user("hi"),
        ChatMessage::tool_result(ToolResult::new("nope", ToolContent::Text("x".into()))),
    ];
    let err = router.complete(req).await.expect_err("refused");
    assert!(err.kind() == ErrorKind::InvalidRequest, "{err:?}");
    assert!(err.to_string().contains("\"nope\""), "{err}");
    assert_eq!(server.request_count(), 0);
}

#[tokio::test]
async fn stream_delivers_each_call_whole_with_text_and_usage() {
    let data = |v: serde_json::Value| format!("data: {v}\r\n\r\n");
    let body = [
        data(json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Let me "}]}}],
            "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": 1}})),
        data(json!({"candidates": [{"content": {"role": "model", "parts": [
            {"text": "check."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Zürich"}}, "thoughtSignature": "c2ln"}
        ]}}]})),
        data(json!({"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "now", "args": {}}}
        ]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": 9, "totalTokenCount": 20}})),
    ]
    .concat();
    for seed in [8, 9] {
        let server = FakeServer::start(vec![Reply::sse(body.clone()).split(seed)]).await;
        let router = gemini_router(&server);
        let mut req = hello();
        req.tools = vec![ToolSpec::new("get_weather", json!({"type": "object"}))];
        let (events, error) = collect_events(&router, req).await;
        assert!(error.is_none(), "{error:?}");
        let mut text = String::new();
        let mut seen = Vec::new();
        for ev in &events {
            match ev {
                RoutedEvent::Delta(t) => text.push_str(t),
                RoutedEvent::ToolCallStart { index, id, name } => {
                    seen.push(format!("start {index} {name}"));
                    assert!(id.starts_with("call_"), "{id}");
                }
                RoutedEvent::ToolCall { index, call } => {
                    seen.push(format!(
                        "call {index} {}",
                        serde_json::Value::Object(call.arguments.clone())
                    ));
                }
                RoutedEvent::ToolCallDelta { .. } => panic!("gemini sends no fragments"),
                _ => {}
            }
        }
        assert_eq!(text, "Let me check.");
        assert_eq!(
            seen,
            [
                "start 0 get_weather",
                "call 0 {\"city\":\"Zürich\"}",
                "start 1 now",
                "call 1 {}"
            ]
        );
        let first = events.iter().find_map(|e| match e {
            RoutedEvent::ToolCall { index: 0, call } => Some(call.clone()),
            _ => None,
        });
        assert_eq!(first.and_then(|c| c.signature).as_deref(), Some("c2ln"));
        let Some(RoutedEvent::Done {
            usage,
            finish_reason,
            ..
        }) = events.last()
        else {
            panic!("no done: {events:?}");
        };
        assert_eq!(*usage, Usage::new(11, 9));
        assert_eq!(*finish_reason, Some(FinishReason::ToolCalls));
    }
}

/// A `functionCall` with an empty name is an invalid call, as in the other
/// adapters, not a call of a tool named "".
#[tokio::test]
async fn a_nameless_function_call_is_invalid() {
    let server = FakeServer::start(vec![Reply::json(
        200,
        json!({"candidates": [{"content": {"role": "model", "parts": [
                {"functionCall": {"name": "", "args": {"city": "Paris"}}}
            ]}, "finishReason": "STOP", "index": 0}]}),
    )])
    .await;
    let router = gemini_router(&server);
    let mut req = hello();
    req.tools = vec![ToolSpec::new("get_weather", json!({"type": "object"}))];
    let c = router.complete(req).await.expect("completes").completion;
    assert!(c.tool_calls.is_empty(), "{c:?}");
    assert_eq!(c.invalid_tool_calls.len(), 1, "{c:?}");
    assert!(c.invalid_tool_calls[0].error.contains("names no tool"));
    assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
}

/// A non-streaming reply is held to the same 64-call limit as a stream (and
/// as the OpenAI adapter's replies): more is a malformed response.
#[tokio::test]
async fn complete_with_more_than_64_calls_is_malformed_as_in_a_stream() {
    let parts: Vec<_> = (0..65)
        .map(|_| json!({"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}))
        .collect();
    let server = FakeServer::start(vec![Reply::json(
        200,
        json!({"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}]}),
    )])
    .await;
    let mut cfg = config(Provider::Google, "gemini-2.5-flash", &server.url("/v1beta"));
    cfg.retry.attempts = 1;
    let (router, _) = router(cfg);
    let mut req = hello();
    req.tools = vec![ToolSpec::new("get_weather", json!({"type": "object"}))];
    let err = router.complete(req).await.expect_err("too many calls");
    assert_eq!(err.code(), "malformed_response", "{err:?}");
    assert!(err.to_string().contains("more than 64 tool calls"), "{err}");
}

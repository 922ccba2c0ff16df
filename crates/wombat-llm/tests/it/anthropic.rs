//! The Anthropic Messages adapter.

use futures::StreamExt;
use serde_json::json;
use wombat_core::{ChatMessage, Part, Provider, Role, ToolCall, ToolContent, ToolResult, Usage};
use wombat_llm::{
    Error, ErrorKind, FinishReason, ResponseFormat, RoutedEvent, ToolChoice, ToolSpec,
};

use crate::fake::{FakeServer, Reply};
use crate::{collect, config, hello, router};

fn event(name: &str, data: serde_json::Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn stream_body(deltas: &[&str]) -> String {
    let mut body = event(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
            "content": [], "model": "claude-sonnet-4", "stop_reason": null,
            "usage": {"input_tokens": 25, "cache_read_input_tokens": 5, "output_tokens": 1}}}),
    );
    body += &event(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    );
    body += &event("ping", json!({"type": "ping"}));
    for d in deltas {
        body += &event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": d}}),
        );
    }
    body += &event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    );
    body += &event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": 15}}),
    );
    body += &event("message_stop", json!({"type": "message_stop"}));
    body
}

#[tokio::test]
async fn complete_sends_system_top_level_merged_roles_and_default_max_tokens() {
    let server = FakeServer::start(vec![Reply::json(
        200,
        json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4",
            "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}],
            "stop_reason": "max_tokens",
            "usage": {"input_tokens": 100, "cache_creation_input_tokens": 20, "output_tokens": 7}}),
    )])
    .await;
    let (router, _) = router(config(
        Provider::Anthropic,
        "claude-sonnet-4",
        &server.url(""),
    ));
    let mut req = hello();
    req.messages = vec![
        ChatMessage::user("one"),
        ChatMessage::user("two"),
        ChatMessage::system("note"),
        ChatMessage::assistant("three"),
        ChatMessage::user("four"),
    ];
    let routed = router.complete(req).await.expect("completes");
    assert_eq!(routed.completion.text, "Hello");
    assert_eq!(routed.completion.usage, Usage::new(120, 7));
    assert_eq!(routed.completion.finish_reason, Some(FinishReason::Length));
    assert_eq!(routed.provider, Provider::Anthropic);

    let sent = &server.requests()[0];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some("test-key-anthropic"));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent.header("authorization"), None);
    assert_eq!(
        sent.json(),
        json!({
            "model": "claude-sonnet-4",
            "max_tokens": 4096,
            "system": "You are terse.\n\nnote",
            "messages": [
                {"role": "user", "content": "one\n\ntwo"},
                {"role": "assistant", "content": "three"},
                {"role": "user", "content": "four"}
            ]
        })
    );
}

#[tokio::test]
async fn stream_assigns_message_delta_usage_across_split_writes() {
    for seed in [4, 5] {
        let server = FakeServer::start(vec![
            Reply::sse(stream_body(&["Hello", " 世界 🦀", "!"])).split(seed),
        ])
        .await;
        let (router, _) = router(config(
            Provider::Anthropic,
            "claude-sonnet-4",
            &server.url(""),
        ));
        let mut req = hello();
        req.max_tokens = Some(300);
        let got = collect(&router, req).await.expect("stream opens");
        assert!(got.error.is_none(), "{:?}", got.error);
        assert_eq!(got.text, "Hello 世界 🦀!");
        assert_eq!(got.deltas, 3);
        // 25 input + 5 cache reads; 15 output tokens assigned, not 1 + 15.
        assert_eq!(got.usage(), Usage::new(30, 15));
        assert_eq!(got.finish_reason(), Some(FinishReason::Stop));
        let body = server.requests()[0].json();
        assert_eq!(
            (body["stream"].clone(), body["max_tokens"].clone()),
            (json!(true), json!(300))
        );
    }
}

#[tokio::test]
async fn error_event_after_200_ends_the_stream_with_a_typed_error() {
    let body = stream_body(&["Hi"]);
    let cut_at = body
        .find("event: content_block_stop")
        .expect("has block stop");
    let body = format!(
        "{}event: error\ndata: {}\n\n",
        &body[..cut_at],
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
    let server = FakeServer::start(vec![Reply::sse(body)]).await;
    let (router, _) = router(config(
        Provider::Anthropic,
        "claude-sonnet-4",
        &server.url(""),
    ));
    let got = collect(&router, hello())
        .await
        .expect("first delta arrives");
    assert_eq!(got.text, "Hi");
    let err = got.error.expect("error event ends the stream");
    assert!(matches!(err.kind(), ErrorKind::Overloaded), "{err:?}");
    assert_eq!(
        err.to_string(),
        "provider overloaded: anthropic/claude-sonnet-4: Overloaded"
    );
    assert_eq!(server.request_count(), 1, "no retry after the first delta");
}

#[tokio::test]
async fn http_errors_are_classified_by_error_type() {
    let server = FakeServer::start(vec![
        Reply::json(
            529,
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        )
        .header("retry-after", "2"),
        Reply::json(
            400,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "messages: field required"}}),
        ),
    ])
    .await;
    let (router, sleeper) = router(config(
        Provider::Anthropic,
        "claude-sonnet-4",
        &server.url(""),
    ));
    let err = router
        .complete(hello())
        .await
        .expect_err("second reply is a 400");
    assert!(matches!(err.kind(), ErrorKind::InvalidRequest), "{err:?}");
    assert_eq!(
        err.to_string(),
        "invalid request to anthropic/claude-sonnet-4 (http 400): messages: field required"
    );
    assert_eq!(sleeper.waits(), [std::time::Duration::from_secs(2)]);
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn object_schema_uses_a_forced_tool_in_both_modes() {
    let schema = json!({"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]});
    let mut stream = event(
        "message_start",
        json!({"type": "message_start", "message": {"usage": {"input_tokens": 10, "output_tokens": 1}}}),
    );
    stream += &event(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t1", "name": "answer", "input": {}}}),
    );
    for part in ["{\"answ", "er\": \"4", "2\"}"] {
        stream += &event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": part}}),
        );
    }
    stream += &event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
    );
    stream += &event("message_stop", json!({"type": "message_stop"}));
    let server = FakeServer::start(vec![
        Reply::json(
            200,
            json!({"content": [{"type": "tool_use", "id": "t1", "name": "answer", "input": {"answer": "42"}}],
                "stop_reason": "tool_use", "usage": {"input_tokens": 10, "output_tokens": 9}}),
        ),
        Reply::sse(stream),
    ])
    .await;
    let (router, _) = router(config(
        Provider::Anthropic,
        "claude-sonnet-4",
        &server.url(""),
    ));
    let mut req = hello();
    req.response_format = Some(ResponseFormat::JsonSchema {
        name: "answer".into(),
        schema: schema.clone(),
    });
    let routed = router.complete(req.clone()).await.expect("completes");
    assert_eq!(routed.completion.text, r#"{"answer":"42"}"#);
    assert_eq!(routed.completion.finish_reason, Some(FinishReason::Stop));
    let got = collect(&router, req).await.expect("stream opens");
    assert_eq!(got.text, r#"{"answer": "42"}"#);
    assert_eq!(got.usage(), Usage::new(10, 9));
    let sent = server.requests()[0].json();
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "tool", "name": "answer"})
    );
    assert_eq!(sent["tools"][0]["input_schema"], schema);
}

// ---- tools ----

/// Every event of a routed stream, and the error that ended it, if any.
pub async fn collect_events(
    router: &wombat_llm::Router,
    req: wombat_llm::RouteRequest,
) -> (Vec<RoutedEvent>, Option<Error>) {
    let mut stream = router.stream(req).await.expect("stream opens");
    let mut events = Vec::new();
    let mut error = None;
    while let Some(item) = tokio::time::timeout(std::time::Duration::from_secs(30), stream.next())
        .await
        .expect("stream makes progress")
    {
        match item {
            Ok(ev) => events.push(ev),
            Err(e) => error = Some(e),
        }
    }
    (events, error)
}

pub fn weather_tools() -> Vec<ToolSpec> {
    vec![
        ToolSpec::new(
            "get_weather",
            json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        )
        .with_description("Current weather for a city"),
        ToolSpec::new("now", json!({"type": "object", "properties": {}})),
    ]
}

fn args(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    v.as_object().cloned().expect("an object")
}

fn text_reply() -> Reply {
    Reply::json(
        200,
        json!({"content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 1, "output_tokens": 1}}),
    )
}

#[tokio::test]
async fn tools_and_tool_choice_are_declared_as_anthropic_expects() {
    let choices = [
        (None, None, None),
        (Some(ToolChoice::Auto), None, Some(json!({"type": "auto"}))),
        (
            Some(ToolChoice::None),
            Some(false),
            Some(json!({"type": "none"})),
        ),
        (
            Some(ToolChoice::Required),
            None,
            Some(json!({"type": "any"})),
        ),
        (
            Some(ToolChoice::Tool("get_weather".into())),
            Some(false),
            Some(json!({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true})),
        ),
        (
            None,
            Some(false),
            Some(json!({"type": "auto", "disable_parallel_tool_use": true})),
        ),
        (
            Some(ToolChoice::Auto),
            Some(true),
            Some(json!({"type": "auto"})),
        ),
    ];
    let server = FakeServer::start(choices.iter().map(|_| text_reply()).collect()).await;
    let (router, _) = router(config(
        Provider::Anthropic,
        "claude-sonnet-4",
        &server.url(""),
    ));
    for (choice, parallel, _) in &choices {
        let mut req = hello();
        req.tools = weather_tools();
        req.tool_choice = choice.clone();
        req.parallel_tool_calls = *parallel;
        router.complete(req).await.expect("completes");
    }
    let sent = server.requests();
    for (i, (_, _, expected)) in choices.iter().enumerate() {
        let body = sent[i].json();
        assert_eq!(
            body["tools"],
            json!([
                {"name": "get_weather", "description": "Current weather for a city",
                 "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
                {"name": "now", "input_schema": {"type": "object", "properties": {}}}
            ]),
            "request {i}"
        );
        assert_eq!(body.get("tool_choice"), expected.as_ref(), "request {i}");
    }

    // Without tools nothing tool-related is sent, whatever the choice.
    let server = FakeServer::start(vec![text_reply()]).await;
    let (plain, _) = crate::router(config(
        Provider::Anthropic,
        "claude-sonnet-4",
        &server.url(""),
    ));
    let mut req = hello();
    req.tool_choice = Some(ToolChoice::Required);
    req.parallel_tool_calls = Some(false);
    plain.complete(req).await.expect("completes");
    let body = server.requests()[0].json();
    assert!(body.get("tools").is_none() && body.get("tool_choice").is_none());
}

#[tokio::test]
async fn complete_returns_mixed_text_and_parallel_tool_calls() {
    let server = FakeServer::start(vec![Reply::json(
        200,
        json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4",
            "content": [
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_02", "name": "now", "input": {}},
                {"type": "tool_use", "id": "toolu_03", "name": "get_weather", "input": "Paris"}
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 50, "cache_read_input_tokens": 10, "output_tokens": 30}}),
    )])
    .await;
    let (router, _) = router(config(
        Provider::Anthropic,
        "claude-sonnet-4",
        &server.url(""),
    ));
    let mut req = hello();
    req.tools = weather_tools();
    let c = router.complete(req).await.expect("completes").completion;
    assert_eq!(c.text, "Checking both.");
    assert_eq!(
        c.tool_calls,
        [
            ToolCall::new("toolu_01", "get_weather", args(json!({"city": "Paris"}))),
            ToolCall::new("toolu_02", "now", args(json!({}))),
        ]
    );
    assert_eq!(c.invalid_tool_calls.len(), 1);
    let bad = &c.invalid_tool_calls[0];
    assert_eq!(
        (bad.index, bad.id.as_str(), bad.raw_arguments.as_str()),
        (2, "toolu_03", "\"Paris\"")
    );
    assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(c.usage, Usage::new(60, 30));
}

#[tokio::test]
async fn tool_results_go_first_in_the_next_user_message() {
    let server = FakeServer::start(vec![text_reply()]).await;
    let (router, _) = router(config(
        Provider::Anthropic,
        "claude-sonnet-4",
        &server.url(""),
    ));
    let mut req = hello();
    req.tools = weather_tools();
    req.messages = vec![
        ChatMessage::user("Weather in Paris and the time?"),
        ChatMessage::with_parts(
            Role::Assistant,
            vec![
                Part::text("Checking both."),
                Part::ToolCall(ToolCall::new(
                    "toolu_01",
                    "get_weather",
                    args(json!({"city": "Paris"})),
                )),
                Part::ToolCall(ToolCall::new("toolu_02", "now", args(json!({})))),
            ],
        ),
        ChatMessage::tool_result(ToolResult::new(
            "toolu_01",
            ToolContent::Json(json!({"temp_c": 21})),
        )),
        ChatMessage::tool_result(ToolResult::error("toolu_02", "clock unavailable")),
        ChatMessage::user("Also, be brief."),
        // A call-only turn (no text) and its text-only answer.
        ChatMessage::with_parts(
            Role::Assistant,
            vec![Part::ToolCall(ToolCall::new(
                "toolu_03",
                "now",
                args(json!({})),
            ))],
        ),
        ChatMessage::tool_result(ToolResult::new(
            "toolu_03",
            ToolContent::Text("12:00".into()),
        )),
    ];
    router.complete(req).await.expect("completes");
    let body = server.requests()[0].json();
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": "Weather in Paris and the time?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_02", "name": "now", "input": {}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "{\"temp_c\":21}"},
                {"type": "tool_result", "tool_use_id": "toolu_02", "content": "clock unavailable", "is_error": true},
                {"type": "text", "text": "Also, be brief."}
            ]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_03", "name": "now", "input": {}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_03", "content": "12:00"}
            ]}
        ])
    );
}

/// An Anthropic stream with a text block and these `tool_use` blocks, each
/// `(id, name, partial_json fragments)`.
fn tool_stream(calls: &[(&str, &str, &[&str])]) -> String {
    let mut body = event(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
            "content": [], "model": "claude-sonnet-4", "stop_reason": null,
            "usage": {"input_tokens": 40, "cache_creation_input_tokens": 2, "output_tokens": 1}}}),
    );
    body += &event(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    );
    body += &event(
        "content_block_delta",
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me check."}}),
    );
    body += &event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    );
    for (i, (id, name, fragments)) in calls.iter().enumerate() {
        body += &event(
            "content_block_start",
            json!({"type": "content_block_start", "index": i + 1,
                "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
        );
        body += &event("ping", json!({"type": "ping"}));
        for f in *fragments {
            body += &event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": i + 1,
                    "delta": {"type": "input_json_delta", "partial_json": f}}),
            );
        }
        body += &event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": i + 1}),
        );
    }
    body += &event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
            "usage": {"output_tokens": 77}}),
    );
    body += &event("message_stop", json!({"type": "message_stop"}));
    body
}

#[tokio::test]
async fn stream_parallel_calls_with_fragments_across_split_writes() {
    let body = tool_stream(&[
        (
            "toolu_01",
            "get_weather",
            &["", "{\"city\"", ": \"Zü", "rich\"}"],
        ),
        ("toolu_02", "now", &[]),
    ]);
    for seed in [1, 2, 3] {
        let server = FakeServer::start(vec![Reply::sse(body.clone()).split(seed)]).await;
        let (router, _) = router(config(
            Provider::Anthropic,
            "claude-sonnet-4",
            &server.url(""),
        ));
        let mut req = hello();
        req.tools = weather_tools();
        let (events, error) = collect_events(&router, req).await;
        assert!(error.is_none(), "{error:?}");
        let mut text = String::new();
        let mut fragments = String::new();
        let mut starts = Vec::new();
        let mut calls = Vec::new();
        let mut done = None;
        for ev in events {
            match ev {
                RoutedEvent::Delta(t) => text.push_str(&t),
                RoutedEvent::ToolCallStart { index, id, name } => starts.push((index, id, name)),
                RoutedEvent::ToolCallDelta { index, fragment } => {
                    assert_eq!(index, 0, "only the first call has arguments");
                    fragments.push_str(&fragment);
                }
                RoutedEvent::ToolCall { index, call } => calls.push((index, call)),
                d @ RoutedEvent::Done { .. } => done = Some(d),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(text, "Let me check.");
        assert_eq!(
            starts,
            [
                (0, "toolu_01".to_owned(), "get_weather".to_owned()),
                (1, "toolu_02".to_owned(), "now".to_owned())
            ]
        );
        assert_eq!(fragments, "{\"city\": \"Zürich\"}");
        assert_eq!(
            calls,
            [
                (
                    0,
                    ToolCall::new("toolu_01", "get_weather", args(json!({"city": "Zürich"})))
                ),
                // No fragment at all: the arguments are `{}`.
                (1, ToolCall::new("toolu_02", "now", args(json!({})))),
            ]
        );
        let Some(RoutedEvent::Done {
            usage,
            finish_reason,
            ..
        }) = done
        else {
            panic!("no done event");
        };
        assert_eq!(usage, Usage::new(42, 77));
        assert_eq!(finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(server.requests()[0].json()["stream"], json!(true));
    }
}

#[tokio::test]
async fn stream_malformed_partial_json_is_an_invalid_call_not_an_error() {
    let body = tool_stream(&[
        ("toolu_01", "get_weather", &["{\"city\": ", "\"Par"]),
        ("toolu_02", "get_weather", &["[1, 2]"]),
        ("toolu_03", "now", &["{}"]),
    ]);
    let server = FakeServer::start(vec![Reply::sse(body)]).await;
    let (router, _) = router(config(
        Provider::Anthropic,
        "claude-sonnet-4",
        &server.url(""),
    ));
    let mut req = hello();
    req.tools = weather_tools();
    let (events, error) = collect_events(&router, req).await;
    assert!(error.is_none(), "{error:?}");
    let invalid: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            RoutedEvent::ToolCallInvalid(bad) => Some(bad.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(invalid.len(), 2);
    assert_eq!(
        (
            invalid[0].index,
            invalid[0].id.as_str(),
            invalid[0].raw_arguments.as_str()
        ),
        (0, "toolu_01", "{\"city\": \"Par")
    );
    assert!(
        invalid[0].error.contains("not valid JSON"),
        "{}",
        invalid[0].error
    );
    assert_eq!(
        (invalid[1].index, invalid[1].raw_arguments.as_str()),
        (1, "[1, 2]")
    );
    assert!(
        invalid[1].error.contains("an array"),
        "{}",
        invalid[1].error
    );
    assert!(events.iter().any(|e| matches!(e,
        RoutedEvent::ToolCall { index: 2, call } if call.id == "toolu_03")));
    assert!(matches!(events.last(), Some(RoutedEvent::Done { .. })));
}

#[tokio::test]
async fn structured_output_with_tools_is_asked_by_instruction() {
    let server = FakeServer::start(vec![Reply::json(
        200,
        json!({"content": [{"type": "tool_use", "id": "toolu_01", "name": "now", "input": {}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 5, "output_tokens": 5}}),
    )])
    .await;
    let (router, _) = router(config(
        Provider::Anthropic,
        "claude-sonnet-4",
        &server.url(""),
    ));
    let mut req = hello();
    req.tools = weather_tools();
    req.response_format = Some(ResponseFormat::JsonSchema {
        name: "answer".into(),
        schema: json!({"type": "object", "properties": {"answer": {"type": "string"}}}),
    });
    let c = router.complete(req).await.expect("completes").completion;
    // The reply's tool_use is the caller's call, not the answer.
    assert_eq!(c.text, "");
    assert_eq!(
        c.tool_calls,
        [ToolCall::new("toolu_01", "now", args(json!({})))]
    );
    assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
    let body = server.requests()[0].json();
    assert_eq!(body["tools"].as_array().map(Vec::len), Some(2));
    assert!(body.get("tool_choice").is_none());
    let system = body["system"].as_str().expect("system");
    assert!(
        system.starts_with("You are terse.\n\nRespond with only a valid JSON value")
            && system.contains("\"answer\""),
        "{system}"
    );
}

/// A `tool_use` block without an id gets one made up and one without a name
/// is an invalid call (as in the OpenAI and Gemini adapters), in a
/// non-streaming reply too.
#[tokio::test]
async fn complete_makes_up_a_missing_id_and_refuses_a_nameless_call() {
    let server = FakeServer::start(vec![Reply::json(
        200,
        json!({"content": [
                {"type": "tool_use", "name": "now", "input": {}},
                {"type": "tool_use", "id": "toolu_9", "name": "", "input": {}}
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 1, "output_tokens": 1}}),
    )])
    .await;
    let (router, _) = router(config(
        Provider::Anthropic,
        "claude-sonnet-4",
        &server.url(""),
    ));
    let mut req = hello();
    req.tools = weather_tools();
    let c = router.complete(req).await.expect("completes").completion;
    assert_eq!(c.tool_calls.len(), 1, "{c:?}");
    assert!(!c.tool_calls[0].id.is_empty());
    assert_eq!(c.invalid_tool_calls.len(), 1, "{c:?}");
    let bad = &c.invalid_tool_calls[0];
    assert_eq!((bad.index, bad.id.as_str()), (1, "toolu_9"));
    assert!(bad.error.contains("names no tool"), "{}", bad.error);
}

/// A non-streaming reply is held to the same 64-call limit as a stream (and
/// as the OpenAI adapter's replies): more is a malformed response.
#[tokio::test]
async fn complete_with_more_than_64_calls_is_malformed_as_in_a_stream() {
    let blocks: Vec<_> = (0..65)
        .map(
            |i| json!({"type": "tool_use", "id": format!("toolu_{i}"), "name": "now", "input": {}}),
        )
        .collect();
    let server = FakeServer::start(vec![Reply::json(
        200,
        json!({"content": blocks, "stop_reason": "tool_use",
            "usage": {"input_tokens": 1, "output_tokens": 1}}),
    )])
    .await;
    let mut cfg = config(Provider::Anthropic, "claude-sonnet-4", &server.url(""));
    cfg.retry.attempts = 1;
    let (router, _) = router(cfg);
    let mut req = hello();
    req.tools = weather_tools();
    let err = router.complete(req).await.expect_err("too many calls");
    assert_eq!(err.code(), "malformed_response", "{err:?}");
    assert!(err.to_string().contains("more than 64 tool calls"), "{err}");
}

//! The OpenAI Chat Completions adapter and its compatible providers.

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use wombat_core::{ChatMessage, Provider, Usage};
use wombat_llm::{
    Error, ErrorKind, FinishReason, InvalidToolCall, Part, ResponseFormat, Role, RouteRequest,
    RoutedEvent, Router, Tier, ToolCall, ToolChoice, ToolContent, ToolResult, ToolSpec,
};

use crate::fake::{FakeServer, Reply};
use crate::{collect, config, hello, router};

const STREAM_TAIL_USAGE: &str = concat!(
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" 世界 🦀\"},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
    "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,\"total_tokens\":15}}\n\n",
    "data: [DONE]\n\n",
);

#[tokio::test]
async fn complete_parses_text_usage_and_sends_the_right_request() {
    let server = FakeServer::start(vec![Reply::json(
        200,
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1250, "completion_tokens": 150, "total_tokens": 1400}
        }),
    )])
    .await;
    let (router, _) = router(config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1")));
    let mut req = hello();
    req.temperature = Some(0.3);
    req.max_tokens = Some(64);
    let routed = router.complete(req).await.expect("completes");
    assert_eq!(routed.completion.text, "Hello!");
    assert_eq!(routed.completion.usage, Usage::new(1250, 150));
    assert_eq!(routed.completion.finish_reason, Some(FinishReason::Stop));
    assert_eq!(
        (routed.provider, routed.model.as_str()),
        (Provider::OpenAi, "gpt-4o-mini")
    );
    assert_eq!(routed.attempts, 1);
    // Cost is computed once, from the core pricing table.
    assert_eq!(routed.cost.total_micros(), 278);
    assert_eq!(
        routed.cost,
        router.pricing().cost("gpt-4o-mini", &Usage::new(1250, 150))
    );

    let sent = &server.requests()[0];
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        ("POST", "/v1/chat/completions")
    );
    assert_eq!(sent.header("authorization"), Some("Bearer test-key-openai"));
    assert_eq!(
        sent.json(),
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hi there"}
            ],
            "temperature": 0.3,
            "max_completion_tokens": 64
        })
    );
}

#[tokio::test]
async fn stream_with_usage_tail_and_null_usage_chunks_split_into_tiny_writes() {
    for seed in [1, 2, 3] {
        let server = FakeServer::start(vec![Reply::sse(STREAM_TAIL_USAGE).split(seed)]).await;
        let (router, _) = router(config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1")));
        let got = collect(&router, hello()).await.expect("stream opens");
        assert!(got.error.is_none(), "{:?}", got.error);
        assert_eq!(got.text, "Hello 世界 🦀");
        assert_eq!(got.usage(), Usage::new(12, 3));
        assert_eq!(got.finish_reason(), Some(FinishReason::Stop));
        let body = server.requests()[0].json();
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
        assert_eq!(
            server.requests()[0].header("accept"),
            Some("text/event-stream")
        );
    }
}

#[tokio::test]
async fn groq_usage_in_x_groq_and_max_tokens_field() {
    let body = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}],\"x_groq\":{\"id\":\"req_1\",\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,\"total_tokens\":9}}}\n\n",
        "data: [DONE]\n\n",
    );
    let server = FakeServer::start(vec![Reply::sse(body)]).await;
    let (router, _) = router(config(
        Provider::Groq,
        "llama-3.3-70b-versatile",
        &server.url("/openai/v1"),
    ));
    let mut req = hello();
    req.max_tokens = Some(5);
    let got = collect(&router, req).await.expect("stream opens");
    assert_eq!(got.text, "Hi");
    assert_eq!(got.usage(), Usage::new(7, 2));
    assert_eq!(got.finish_reason(), Some(FinishReason::Length));
    let sent = &server.requests()[0];
    assert_eq!(sent.path, "/openai/v1/chat/completions");
    assert_eq!(sent.header("authorization"), Some("Bearer test-key-groq"));
    assert_eq!(sent.json()["max_tokens"], 5);
}

#[tokio::test]
async fn openrouter_keepalive_comments_and_usage_on_the_finish_chunk() {
    let body = concat!(
        ": OPENROUTER PROCESSING\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"A\"},\"finish_reason\":null}]}\n\n",
        ": keepalive\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"B\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2,\"total_tokens\":6}}\n\n",
        ": keepalive\n\n",
        "data: [DONE]\n\n",
    );
    let server = FakeServer::start(vec![Reply::sse(body).split(9)]).await;
    let mut cfg = config(Provider::OpenAi, "gpt-4o-mini", "http://unused.invalid");
    cfg.base_urls
        .insert(Provider::OpenRouter, server.url("/api/v1"));
    let (router, _) = router(cfg);
    let mut req = hello();
    req.model = wombat_llm::ModelChoice::Explicit("openrouter/meta-llama/llama-3.3-70b".into());
    let got = collect(&router, req).await.expect("stream opens");
    assert_eq!(got.text, "AB");
    assert_eq!(got.usage(), Usage::new(4, 2));
    let sent = &server.requests()[0];
    assert_eq!(sent.path, "/api/v1/chat/completions");
    assert_eq!(sent.json()["model"], "meta-llama/llama-3.3-70b");
}

#[tokio::test]
async fn error_object_inside_a_200_stream_is_a_typed_error() {
    let body = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"par\"},\"finish_reason\":null}]}\n\n",
        "data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}\n\n",
    );
    let server = FakeServer::start(vec![Reply::sse(body)]).await;
    let (router, _) = router(config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1")));
    let got = collect(&router, hello())
        .await
        .expect("first delta arrives");
    assert_eq!(got.text, "par");
    assert!(got.done.is_none());
    let err = got.error.expect("stream ends with an error");
    assert!(matches!(err.kind(), ErrorKind::Overloaded), "{err:?}");
    assert!(err.to_string().contains("openai/gpt-4o-mini"), "{err}");
    assert!(err.to_string().contains("The server had an error"), "{err}");
}

#[tokio::test]
async fn error_object_inside_a_200_answer_is_a_typed_error() {
    // With and without the usual fields beside it: the answer is parsed
    // straight into its shape, and an `error` must still win.
    for body in [
        json!({"error": {"message": "The server had an error", "type": "server_error"}}),
        json!({
            "error": {"message": "The server had an error", "type": "server_error"},
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}]
        }),
        json!({"error": {"message": "The server had an error", "type": "server_error"}, "choices": 7}),
    ] {
        let server = FakeServer::start(vec![Reply::json(200, body)]).await;
        let mut cfg = config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1"));
        cfg.retry.attempts = 1;
        let (router, _) = router(cfg);
        let err = router.complete(hello()).await.expect_err("an error");
        assert!(matches!(err.kind(), ErrorKind::Overloaded), "{err:?}");
        assert!(err.to_string().contains("The server had an error"), "{err}");
    }
}

#[tokio::test]
async fn malformed_json_is_a_malformed_response_error() {
    let server =
        FakeServer::start(vec![Reply::raw(200, "application/json", "{\"choices\": [")]).await;
    let mut cfg = config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1"));
    cfg.retry.attempts = 1;
    let (router, _) = router(cfg);
    let err = router.complete(hello()).await.expect_err("malformed");
    assert!(
        matches!(err.kind(), ErrorKind::MalformedResponse),
        "{err:?}"
    );
    assert_eq!(err.code(), "malformed_response");
}

#[tokio::test]
async fn malformed_stream_chunk_is_an_error() {
    let server = FakeServer::start(vec![Reply::sse("data: {not json}\n\n")]).await;
    let mut cfg = config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1"));
    cfg.retry.attempts = 1;
    let (router, _) = router(cfg);
    let err = collect(&router, hello())
        .await
        .expect_err("malformed first event");
    assert!(
        matches!(err.kind(), ErrorKind::MalformedResponse),
        "{err:?}"
    );
}

#[tokio::test]
async fn stream_that_ends_without_done_is_truncated() {
    let body = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n";
    let server = FakeServer::start(vec![Reply::sse_until_close(body)]).await;
    let (router, _) = router(config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1")));
    let got = collect(&router, hello())
        .await
        .expect("first delta arrives");
    assert_eq!(got.text, "Hel");
    assert!(got.done.is_none());
    assert!(
        got.error.as_ref().map(Error::kind) == Some(ErrorKind::Truncated),
        "{:?}",
        got.error
    );
}

#[tokio::test]
async fn connection_cut_mid_body_is_a_transport_error() {
    let body = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\ndata: {\"choi";
    let server = FakeServer::start(vec![Reply::sse(body).cut()]).await;
    let (router, _) = router(config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1")));
    let got = collect(&router, hello())
        .await
        .expect("first delta arrives");
    assert_eq!(got.text, "Hel");
    assert!(got.done.is_none());
    let err = got.error.expect("an error ends the stream");
    assert!(
        matches!(err.kind(), ErrorKind::Transport | ErrorKind::Truncated),
        "{err:?}"
    );
}

#[tokio::test]
async fn structured_output_uses_json_schema_response_format() {
    let server = FakeServer::start(vec![
        Reply::json(
            200,
            json!({"choices": [{"message": {"content": "{\"a\":1}"}, "finish_reason": "stop"}]}),
        ),
        Reply::json(
            200,
            json!({"choices": [{"message": {"content": "{}"}, "finish_reason": "stop"}]}),
        ),
    ])
    .await;
    let (router, _) = router(config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1")));
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
    let mut req = hello();
    req.response_format = Some(ResponseFormat::JsonSchema {
        name: "my answer".into(),
        schema: schema.clone(),
    });
    let routed = router.complete(req).await.expect("completes");
    assert_eq!(routed.completion.text, "{\"a\":1}");
    // Missing usage is zero, never estimated.
    assert_eq!(routed.completion.usage, Usage::default());
    let mut req = hello();
    req.response_format = Some(ResponseFormat::Json);
    router.complete(req).await.expect("completes");
    let sent = server.requests();
    assert_eq!(
        sent[0].json()["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "my_answer", "schema": schema}})
    );
    assert_eq!(
        sent[1].json()["response_format"],
        json!({"type": "json_object"})
    );
}

#[tokio::test]
async fn ollama_needs_no_key_and_system_messages_stay_in_place() {
    let server = FakeServer::start(vec![Reply::json(
        200,
        json!({"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}),
    )])
    .await;
    let mut cfg = config(Provider::Ollama, "llama3.2", &server.url("/v1"));
    cfg.api_keys.clear();
    let (router, _) = router(cfg);
    let mut req = hello();
    req.system = None;
    req.messages = vec![
        ChatMessage::user("a"),
        ChatMessage::system("summary so far"),
        ChatMessage::user("b"),
    ];
    let routed = router.complete(req).await.expect("completes");
    assert_eq!(routed.completion.text, "ok");
    assert!(!routed.cost.priced);
    let sent = &server.requests()[0];
    assert_eq!(sent.header("authorization"), None);
    assert_eq!(
        sent.json()["messages"][1],
        json!({"role": "system", "content": "summary so far"})
    );
}

#[tokio::test]
async fn an_endless_success_body_is_a_typed_error_not_unbounded_memory() {
    let server = FakeServer::start(vec![Reply::endless(
        "application/json",
        r#"{"choices":[{"message":{"content":""#,
    )])
    .await;
    let mut cfg = config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1"));
    cfg.retry.attempts = 1;
    let (router, _) = router(cfg);
    let err = router.complete(hello()).await.expect_err("too large");
    assert!(
        matches!(err.kind(), ErrorKind::MalformedResponse),
        "{err:?}"
    );
    assert!(err.to_string().contains("16 MiB"), "{err}");
}

#[tokio::test]
async fn an_endless_sse_line_is_a_typed_error_not_unbounded_memory() {
    let server = FakeServer::start(vec![Reply::endless(
        "text/event-stream",
        concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\""
        ),
    )])
    .await;
    let mut cfg = config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1"));
    cfg.retry.attempts = 1;
    let (router, _) = router(cfg);
    let got = collect(&router, hello())
        .await
        .expect("the first delta commits");
    assert_eq!(got.text, "Hi");
    let err = got.error.expect("the stream ends with an error");
    assert!(
        matches!(err.kind(), ErrorKind::MalformedResponse),
        "{err:?}"
    );
    assert!(err.to_string().contains("1048576-byte limit"), "{err}");
}

/// Issue 13: a local OpenAI-compatible server (vLLM, LM Studio, llama.cpp)
/// behind a base URL needs no key; none is sent.
#[tokio::test]
async fn a_base_url_override_needs_no_key_and_sends_no_authorization() {
    for provider in [Provider::OpenAi, Provider::Groq] {
        let server = FakeServer::start(vec![Reply::json(
            200,
            json!({"choices": [{"message": {"content": "local"}, "finish_reason": "stop"}]}),
        )])
        .await;
        let env = |k: &str| match k {
            "LLM_PROVIDER" => Some(provider.as_str().to_owned()),
            "LLM_MODEL_DEFAULT" => Some("qwen2.5-7b-instruct".to_owned()),
            k if k == provider.base_url_env() => Some(server.url("/v1")),
            _ => None,
        };
        let cfg = wombat_llm::RouterConfig::from_env_map(&env).expect("valid");
        let (router, _) = router(cfg);
        let routed = router.complete(hello()).await.expect("no key needed");
        assert_eq!(routed.completion.text, "local");
        assert_eq!(server.requests()[0].header("authorization"), None);
        let summary = router.summary();
        let p = &summary.providers[&provider];
        assert!(!p.key_required && !p.key_set, "{p:?}");
        assert!(summary.missing_keys().is_empty(), "{summary:?}");
    }
    // Without a base URL the key stays required.
    let (router, _) = router(wombat_llm::RouterConfig::default());
    let err = router.complete(hello()).await.expect_err("no key");
    assert!(matches!(err.kind(), ErrorKind::MissingApiKey), "{err:?}");
}

/// OpenAI's reasoning models (o-series, gpt-5) answer 400 "Unsupported value:
/// 'temperature'" to any temperature but their default; since the daemon
/// sends 0.1.0's temperature (0.4) on every send, that would break every
/// request to them. The adapter leaves it out for those models.
#[tokio::test]
async fn reasoning_models_are_sent_no_temperature() {
    for model in ["gpt-5-mini", "o3", "o4-mini", "o1-preview", "gpt-4o-mini"] {
        let server = FakeServer::start(vec![Reply::json(
            200,
            json!({
                "id": "chatcmpl-1", "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
            }),
        )])
        .await;
        let (router, _) = router(config(Provider::OpenAi, model, &server.url("/v1")));
        let mut req = hello();
        req.temperature = Some(0.4);
        router.complete(req).await.expect("completes");
        let sent = server.requests()[0].json();
        if model == "gpt-4o-mini" {
            assert_eq!(sent["temperature"], 0.4, "{model}: {sent}");
        } else {
            assert!(sent.get("temperature").is_none(), "{model}: {sent}");
        }
    }
}

// ---- tool calling ----

/// Everything a routed stream yielded, tool events included.
#[derive(Debug, Default)]
struct Events {
    text: String,
    /// `start <index> <id> <name>`, `call <index> <name>`, `invalid <index>`
    /// and `done`, in order (text deltas and fragments left out).
    log: Vec<String>,
    fragments: std::collections::BTreeMap<usize, String>,
    calls: Vec<(usize, ToolCall)>,
    invalid: Vec<InvalidToolCall>,
    done: Option<RoutedEvent>,
    error: Option<Error>,
}

impl Events {
    fn usage(&self) -> Usage {
        match &self.done {
            Some(RoutedEvent::Done { usage, .. }) => *usage,
            other => panic!("stream did not finish: {other:?} / {:?}", self.error),
        }
    }

    fn finish_reason(&self) -> Option<FinishReason> {
        match &self.done {
            Some(RoutedEvent::Done { finish_reason, .. }) => finish_reason.clone(),
            _ => None,
        }
    }
}

async fn collect_events(router: &Router, req: RouteRequest) -> wombat_llm::Result<Events> {
    let mut stream = router.stream(req).await?;
    let mut out = Events::default();
    while let Some(item) = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("stream does not hang")
    {
        assert!(out.done.is_none(), "event after done: {item:?}");
        match item {
            Ok(RoutedEvent::Delta(d)) => out.text.push_str(&d),
            Ok(RoutedEvent::ToolCallStart { index, id, name }) => {
                out.log.push(format!("start {index} {id} {name}"));
            }
            Ok(RoutedEvent::ToolCallDelta { index, fragment }) => {
                out.fragments.entry(index).or_default().push_str(&fragment);
            }
            Ok(RoutedEvent::ToolCall { index, call }) => {
                out.log.push(format!("call {index} {}", call.name));
                out.calls.push((index, call));
            }
            Ok(RoutedEvent::ToolCallInvalid(bad)) => {
                out.log.push(format!("invalid {}", bad.index));
                out.invalid.push(bad);
            }
            Ok(done @ RoutedEvent::Done { .. }) => {
                out.log.push("done".into());
                out.done = Some(done);
            }
            Ok(other) => panic!("unexpected event: {other:?}"),
            Err(e) => out.error = Some(e),
        }
    }
    Ok(out)
}

fn weather_tools() -> Vec<ToolSpec> {
    vec![
        ToolSpec::new(
            "get_weather",
            json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        )
        .with_description("Current weather in a city"),
        ToolSpec::new("get_time", json!({"type": "object", "properties": {}})),
    ]
}

fn call(id: &str, name: &str, arguments: serde_json::Value) -> ToolCall {
    let serde_json::Value::Object(map) = arguments else {
        panic!("arguments are an object")
    };
    ToolCall::new(id, name, map)
}

/// A tool round trip as history: the user asks, the assistant (with text)
/// calls two tools, both results come back (one failed, one JSON).
fn round_trip_history() -> Vec<ChatMessage> {
    vec![
        ChatMessage::user("Weather and time in Oslo?"),
        ChatMessage::with_parts(
            Role::Assistant,
            vec![
                Part::text("Checking both."),
                Part::ToolCall(call("call_a", "get_weather", json!({"city": "Oslo"}))),
                Part::ToolCall(call("call_b", "get_time", json!({}))),
            ],
        ),
        ChatMessage::tool_result(ToolResult::new(
            "call_a",
            ToolContent::Json(json!({"sky": "snow", "c": -3})),
        )),
        ChatMessage::tool_result(ToolResult::error("call_b", "clock unavailable")),
    ]
}

#[tokio::test]
async fn tool_declarations_choice_and_results_are_sent_as_openai_expects() {
    let server = FakeServer::start(vec![
        Reply::json(
            200,
            json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Snowy, -3°C."}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 90, "completion_tokens": 6, "total_tokens": 96}}),
        ),
        Reply::json(
            200,
            json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": []}, "finish_reason": "stop"}]}),
        ),
    ])
    .await;
    let (first, _) = router(config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1")));
    let mut req = RouteRequest::new(Tier::Default, round_trip_history());
    req.system = Some("You are terse.".into());
    req.tools = weather_tools();
    req.tool_choice = Some(ToolChoice::Tool("get_weather".into()));
    req.parallel_tool_calls = Some(false);
    let routed = first.complete(req).await.expect("completes");
    assert_eq!(routed.completion.text, "Snowy, -3°C.");
    assert!(!routed.completion.has_tool_calls());
    assert_eq!(routed.completion.finish_reason, Some(FinishReason::Stop));
    assert_eq!(
        server.requests()[0].json(),
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Weather and time in Oslo?"},
                {"role": "assistant", "content": "Checking both.", "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
                    {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_a", "content": "{\"c\":-3,\"sky\":\"snow\"}"},
                {"role": "tool", "tool_call_id": "call_b", "content": "Error: clock unavailable"}
            ],
            "tools": [
                {"type": "function", "function": {
                    "name": "get_weather", "description": "Current weather in a city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
                {"type": "function", "function": {
                    "name": "get_time", "parameters": {"type": "object", "properties": {}}}}
            ],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": false
        })
    );

    // The other choices; an assistant turn without text sends content null;
    // a choice without tools is not sent (OpenAI refuses it).
    for (choice, wire) in [
        (ToolChoice::Auto, json!("auto")),
        (ToolChoice::None, json!("none")),
        (ToolChoice::Required, json!("required")),
    ] {
        let server = FakeServer::start(vec![Reply::json(
            200,
            json!({"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]}),
        )])
        .await;
        let (r, _) = router(config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1")));
        let mut req = RouteRequest::new(
            Tier::Default,
            vec![
                ChatMessage::user("hi"),
                ChatMessage::with_parts(
                    Role::Assistant,
                    vec![Part::ToolCall(call("c1", "get_time", json!({})))],
                ),
                ChatMessage::tool_result(ToolResult::new("c1", ToolContent::Text("noon".into()))),
            ],
        );
        req.tools = weather_tools();
        req.tool_choice = Some(choice);
        r.complete(req).await.expect("completes");
        let body = server.requests()[0].json();
        assert_eq!(body["tool_choice"], wire);
        assert!(body.get("parallel_tool_calls").is_none());
        assert_eq!(
            body["messages"][1],
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]})
        );
        assert_eq!(
            body["messages"][2],
            json!({"role": "tool", "tool_call_id": "c1", "content": "noon"})
        );
    }
    let mut req = hello();
    req.tool_choice = Some(ToolChoice::Required);
    req.parallel_tool_calls = Some(true);
    first.complete(req).await.expect("completes");
    let body = server.requests()[1].json();
    for absent in ["tools", "tool_choice", "parallel_tool_calls"] {
        assert!(body.get(absent).is_none(), "{absent}: {body}");
    }
}

#[tokio::test]
async fn complete_parses_parallel_calls_mixed_text_and_malformed_arguments() {
    let server = FakeServer::start(vec![Reply::json(
        200,
        json!({
            "id": "chatcmpl-2", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "On it.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Bergen\""}},
                {"id": "call_3", "type": "function", "function": {"name": "get_time", "arguments": ""}},
                {"id": "call_4", "type": "function", "function": {"name": "get_time", "arguments": "[\"utc\"]"}},
                // Some compatible servers send an object, or no id.
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Tromsø"}}}
            ]}, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 40, "total_tokens": 90}
        }),
    )])
    .await;
    let (router, _) = router(config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1")));
    let mut req = hello();
    req.tools = weather_tools();
    let c = router.complete(req).await.expect("completes").completion;
    assert_eq!(c.text, "On it.");
    assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(c.usage, Usage::new(50, 40));
    assert_eq!(c.tool_calls.len(), 3);
    assert_eq!(
        c.tool_calls[0],
        call("call_1", "get_weather", json!({"city": "Oslo"}))
    );
    assert_eq!(c.tool_calls[1], call("call_3", "get_time", json!({})));
    assert_eq!(c.tool_calls[2].arguments["city"], "Tromsø");
    assert!(
        c.tool_calls[2].id.starts_with("call_") && c.tool_calls[2].id.len() == 29,
        "{}",
        c.tool_calls[2].id
    );
    let bad: Vec<_> = c
        .invalid_tool_calls
        .iter()
        .map(|b| (b.index, b.id.as_str(), b.raw_arguments.as_str()))
        .collect();
    assert_eq!(
        bad,
        [
            (1, "call_2", "{\"city\": \"Bergen\""),
            (3, "call_4", "[\"utc\"]")
        ]
    );
    assert!(c.invalid_tool_calls[0].error.contains("not valid JSON"));
    assert!(c.invalid_tool_calls[1].error.contains("an array"));
    // The turn goes back into history with every call, each needing an answer.
    let ids: Vec<String> = c.to_message().tool_calls().map(|c| c.id.clone()).collect();
    assert_eq!(ids.len(), 5);
}

/// OpenAI's documented stream of two parallel calls after some text: the
/// first delta of a call carries index, id and name, later ones only index
/// and argument fragments; the calls complete at `finish_reason`, before
/// the usage tail and `[DONE]`.
const STREAM_PARALLEL_CALLS: &str = concat!(
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Let me check.\"},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"ci\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"ty\\\": \\\"Oslo ❄\\\"}\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_b\",\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"arguments\":\"\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"{\\\"tz\\\":\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"\\\"CET\\\"}\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}],\"usage\":null}\n\n",
    "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":40,\"completion_tokens\":22,\"total_tokens\":62}}\n\n",
    "data: [DONE]\n\n",
);

#[tokio::test]
async fn stream_parallel_calls_in_fragments_split_into_tiny_writes() {
    for seed in 1..=4 {
        let server = FakeServer::start(vec![Reply::sse(STREAM_PARALLEL_CALLS).split(seed)]).await;
        let (router, _) = router(config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1")));
        let mut req = hello();
        req.tools = weather_tools();
        let got = collect_events(&router, req).await.expect("stream opens");
        assert!(got.error.is_none(), "{:?}", got.error);
        assert_eq!(got.text, "Let me check.");
        assert_eq!(
            got.log,
            [
                "start 0 call_a get_weather",
                "start 1 call_b get_time",
                "call 0 get_weather",
                "call 1 get_time",
                "done"
            ]
        );
        assert_eq!(got.fragments[&0], "{\"city\": \"Oslo ❄\"}");
        assert_eq!(got.fragments[&1], "{\"tz\":\"CET\"}");
        assert_eq!(
            got.calls,
            [
                (0, call("call_a", "get_weather", json!({"city": "Oslo ❄"}))),
                (1, call("call_b", "get_time", json!({"tz": "CET"})))
            ]
        );
        assert_eq!(got.usage(), Usage::new(40, 22));
        assert_eq!(got.finish_reason(), Some(FinishReason::ToolCalls));
        let body = server.requests()[0].json();
        assert_eq!(body["tools"][0]["function"]["name"], "get_weather");
        assert_eq!(body["stream"], true);
    }
}

#[tokio::test]
async fn stream_single_whole_call_without_index_and_malformed_arguments() {
    // Mistral-style: each call whole in one delta, finish in the same chunk;
    // a second turn whose arguments are cut short.
    let whole = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\",\"tool_calls\":[{\"id\":\"D681PevKs\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\": \\\"Paris\\\"}\"}}]},\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13}}\n\n",
        "data: [DONE]\n\n",
    );
    let malformed = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_x\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\": \"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_y\",\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"arguments\":\"{}\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: [DONE]\n\n",
    );
    let server = FakeServer::start(vec![Reply::sse(whole), Reply::sse(malformed)]).await;
    let (router, _) = router(config(
        Provider::Mistral,
        "mistral-large-latest",
        &server.url("/v1"),
    ));
    let mut req = hello();
    req.tools = weather_tools();
    let got = collect_events(&router, req.clone())
        .await
        .expect("stream opens");
    assert_eq!(
        got.log,
        [
            "start 0 D681PevKs get_weather",
            "call 0 get_weather",
            "done"
        ]
    );
    assert_eq!(got.usage(), Usage::new(9, 4));
    assert_eq!(got.finish_reason(), Some(FinishReason::ToolCalls));

    let got = collect_events(&router, req).await.expect("stream opens");
    assert!(got.error.is_none(), "{:?}", got.error);
    assert_eq!(
        got.log,
        [
            "start 0 call_x get_weather",
            "start 1 call_y get_time",
            "invalid 0",
            "call 1 get_time",
            "done"
        ]
    );
    let bad = &got.invalid[0];
    assert_eq!(
        (
            bad.id.as_str(),
            bad.name.as_str(),
            bad.raw_arguments.as_str()
        ),
        ("call_x", "get_weather", "{\"city\": ")
    );
    assert!(bad.error.contains("not valid JSON"), "{}", bad.error);
    // The server said stop; a turn with calls finished because of them.
    assert_eq!(got.finish_reason(), Some(FinishReason::ToolCalls));
}

#[tokio::test]
async fn over_long_arguments_are_an_invalid_call_and_too_many_calls_an_error() {
    // 80 fragments of 16 KiB: 1.25 MiB of arguments, every SSE event small.
    let mut body = String::from(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_big\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"\"}}]}}]}\n\n",
    );
    let filler = "x".repeat(16 * 1024);
    for _ in 0..80 {
        body.push_str(&format!(
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":0,\"function\":{{\"arguments\":\"{filler}\"}}}}]}}}}]}}\n\n"
        ));
    }
    body.push_str("data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n");
    let mut many = String::new();
    for i in 0..65 {
        many.push_str(&format!(
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":{i},\"id\":\"c{i}\",\"function\":{{\"name\":\"get_time\",\"arguments\":\"{{}}\"}}}}]}}}}]}}\n\n"
        ));
    }
    many.push_str("data: [DONE]\n\n");
    let server = FakeServer::start(vec![Reply::sse(body), Reply::sse(many)]).await;
    let mut cfg = config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1"));
    cfg.retry.attempts = 1;
    let (router, _) = router(cfg);
    let mut req = hello();
    req.tools = weather_tools();
    let got = collect_events(&router, req.clone())
        .await
        .expect("stream opens");
    assert!(got.error.is_none(), "{:?}", got.error);
    assert_eq!(
        got.log,
        ["start 0 call_big get_weather", "invalid 0", "done"]
    );
    let forwarded = got.fragments.get(&0).map_or(0, String::len);
    assert!(forwarded <= 1024 * 1024, "{forwarded} bytes forwarded");
    let bad = &got.invalid[0];
    assert!(bad.raw_arguments.is_empty());
    assert!(bad.error.contains("1048576-byte limit"), "{}", bad.error);

    let got = collect_events(&router, req).await.expect("stream opens");
    assert_eq!(got.calls.len(), 0, "no call completes");
    assert_eq!(got.log.len(), 64, "{:?}", got.log);
    let err = got.error.expect("the 65th call ends the stream");
    assert_eq!(err.code(), "malformed_response", "{err:?}");
    assert!(err.to_string().contains("more than 64 tool calls"), "{err}");
}

/// The router's per-step rule: retries and failover until the step has
/// produced output for the caller, a tool-call event counting as output.
#[tokio::test]
async fn stream_fails_over_before_the_first_output_and_not_after_a_tool_call_starts() {
    // The primary fails inside its 200 stream before any output.
    let failing =
        "data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}\n\n";
    let primary = FakeServer::start(vec![Reply::sse(failing)]).await;
    let fallback = FakeServer::start(vec![Reply::sse(STREAM_PARALLEL_CALLS)]).await;
    let mut cfg = config(Provider::OpenAi, "gpt-4o-mini", &primary.url("/v1"));
    cfg.fallback_model = Some("groq/llama-3.3-70b".into());
    cfg.base_urls.insert(Provider::Groq, fallback.url("/v1"));
    cfg.retry.attempts = 1;
    let (first, _) = router(cfg.clone());
    let mut req = hello();
    req.tools = weather_tools();
    let got = collect_events(&first, req.clone())
        .await
        .expect("fallback streams");
    assert!(got.error.is_none(), "{:?}", got.error);
    assert_eq!(got.calls.len(), 2);
    match &got.done {
        Some(RoutedEvent::Done {
            provider,
            attempts,
            failovers,
            ..
        }) => assert_eq!((*provider, *attempts, *failovers), (Provider::Groq, 2, 1)),
        other => panic!("no done: {other:?}"),
    }
    assert_eq!(
        fallback.requests()[0].json()["tools"][1]["function"]["name"],
        "get_time"
    );

    // A call has started (output): a later error ends the stream, with no
    // retry and no failover.
    let started = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"function\":{\"name\":\"get_time\",\"arguments\":\"\"}}]}}]}\n\n",
        "data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}\n\n",
    );
    let primary = FakeServer::start(vec![Reply::sse(started)]).await;
    let fallback = FakeServer::start(vec![]).await;
    cfg.base_urls.insert(Provider::OpenAi, primary.url("/v1"));
    cfg.base_urls.insert(Provider::Groq, fallback.url("/v1"));
    cfg.retry.attempts = 3;
    let (router, sleeper) = router(cfg);
    let got = collect_events(&router, req)
        .await
        .expect("the call start commits");
    assert_eq!(got.log, ["start 0 call_a get_time"]);
    assert!(got.done.is_none());
    assert!(got.error.expect("ends with the error").is_retryable());
    assert_eq!((primary.request_count(), fallback.request_count()), (1, 0));
    assert!(sleeper.waits().is_empty());
}

/// A model that cannot call tools is a typed error (`tools_unsupported`,
/// failing over to the fallback), not a silent text answer: recognised by
/// OpenAI's `param`/`code`, and, for servers whose error has no code, by
/// their documented texts (Ollama 400, OpenRouter 404, llama.cpp 500).
#[tokio::test]
async fn a_model_without_tool_support_is_tools_unsupported_and_fails_over() {
    let answers = [
        Reply::json(
            400,
            json!({"error": {"message": "Unsupported parameter: 'tools' is not supported with this model.",
                             "type": "invalid_request_error", "param": "tools", "code": "unsupported_parameter"}}),
        ),
        Reply::json(
            400,
            json!({"error": {"message": "registry.ollama.ai/library/gemma3:4b does not support tools",
                             "type": "api_error", "param": null, "code": null}}),
        ),
        Reply::json(
            400,
            json!({"error": "registry.ollama.ai/library/gemma3:4b does not support tools"}),
        ),
        Reply::json(
            404,
            json!({"error": {"message": "No endpoints found that support tool use. To learn more about provider routing, visit: https://openrouter.ai/docs/provider-routing", "code": 404}}),
        ),
        Reply::json(
            500,
            json!({"error": {"code": 500, "message": "Unsupported param: tools", "type": "server_error"}}),
        ),
    ];
    for answer in answers {
        let primary = FakeServer::start(vec![answer.clone(), answer.clone(), answer]).await;
        let fallback = FakeServer::start(vec![Reply::json(
            200,
            json!({"choices": [{"message": {"content": "fallback"}, "finish_reason": "stop"}]}),
        )])
        .await;
        let mut cfg = config(Provider::Ollama, "gemma3:4b", &primary.url("/v1"));
        cfg.retry.attempts = 3;
        let (alone, _) = router(cfg.clone());
        let mut req = hello();
        req.tools = weather_tools();
        let err = alone
            .complete(req.clone())
            .await
            .expect_err("no tools here");
        assert_eq!(err.kind(), ErrorKind::ToolsUnsupported, "{err:?}");
        assert_eq!(err.code(), "tools_unsupported");
        assert!(!err.is_retryable() && err.should_failover(), "{err:?}");
        assert_eq!(primary.request_count(), 1, "not retried");
        assert!(err.to_string().contains("ollama/gemma3:4b"), "{err}");

        cfg.fallback_model = Some("groq/llama-3.3-70b".into());
        cfg.base_urls.insert(Provider::Groq, fallback.url("/v1"));
        let (with_fallback, _) = router(cfg);
        let routed = with_fallback.complete(req).await.expect("fails over");
        assert_eq!(
            (routed.completion.text.as_str(), routed.provider),
            ("fallback", Provider::Groq)
        );
    }

    // Without tools in the request, or with a machine-readable code that
    // says something else, the same texts are not read as tool support.
    let ollama = json!({"error": {"message": "gemma3:4b does not support tools", "type": "api_error", "code": null}});
    let coded = json!({"error": {"message": "this model does not support tools in this region",
                                 "type": "invalid_request_error", "code": "invalid_value"}});
    let server = FakeServer::start(vec![Reply::json(400, ollama), Reply::json(400, coded)]).await;
    let (router, _) = router(config(Provider::Ollama, "gemma3:4b", &server.url("/v1")));
    let err = router.complete(hello()).await.expect_err("400");
    assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{err:?}");
    let mut req = hello();
    req.tools = weather_tools();
    let err = router.complete(req).await.expect_err("400");
    assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{err:?}");
}

//! The OpenAI Chat Completions adapter and its compatible providers.

use serde_json::json;
use wombat_core::{ChatMessage, Provider, Usage};
use wombat_llm::{Error, FinishReason, ResponseFormat};

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
    assert!(matches!(err, Error::Overloaded { .. }), "{err:?}");
    assert!(err.to_string().contains("openai/gpt-4o-mini"), "{err}");
    assert!(err.to_string().contains("The server had an error"), "{err}");
}

#[tokio::test]
async fn malformed_json_is_a_malformed_response_error() {
    let server =
        FakeServer::start(vec![Reply::raw(200, "application/json", "{\"choices\": [")]).await;
    let mut cfg = config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1"));
    cfg.retry.attempts = 1;
    let (router, _) = router(cfg);
    let err = router.complete(hello()).await.expect_err("malformed");
    assert!(matches!(err, Error::MalformedResponse { .. }), "{err:?}");
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
    assert!(matches!(err, Error::MalformedResponse { .. }), "{err:?}");
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
        matches!(got.error, Some(Error::Truncated { .. })),
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
        matches!(err, Error::Transport { .. } | Error::Truncated { .. }),
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
    assert!(matches!(err, Error::MalformedResponse { .. }), "{err:?}");
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
    assert!(matches!(err, Error::MalformedResponse { .. }), "{err:?}");
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
    assert!(matches!(err, Error::MissingApiKey { .. }), "{err:?}");
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

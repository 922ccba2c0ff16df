//! The Anthropic Messages adapter.

use serde_json::json;
use wombat_core::{ChatMessage, Provider, Usage};
use wombat_llm::{Error, FinishReason, ResponseFormat};

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
    assert!(matches!(err, Error::Overloaded { .. }), "{err:?}");
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
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");
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

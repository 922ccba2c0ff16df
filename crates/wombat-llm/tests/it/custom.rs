//! Custom providers: named OpenAI-compatible endpoints
//! (`WOMBAT_LLM_ENDPOINTS`, [`EndpointConfig`]) and embedders' own
//! [`ChatProvider`]s under their own names, routed, retried, failed over and
//! costed like the built-in providers.
//!
//! Names are interned process-wide, so every test uses its own (`it-...`).

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use serde_json::json;
use wombat_llm::{
    ApiKey, ChatProvider, ChatRequest, Completion, EndpointConfig, ErrorKind, EventStream,
    FinishReason, ModelChoice, Provider, RouteRequest, RoutedEvent, Router, RouterConfig,
    StreamEvent, Usage,
};

use crate::fake::{FakeServer, Reply};
use crate::{collect, hello, router};

fn ok_reply(text: &str) -> Reply {
    Reply::json(
        200,
        json!({"choices": [{"message": {"content": text}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}}),
    )
}

const STREAM_OK: &str = concat!(
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"from \"},\"finish_reason\":null}]}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2,\"total_tokens\":6}}\n\n",
    "data: [DONE]\n\n",
);

/// A config read from these variables, with no retry jitter.
fn from_vars(vars: &[(&str, &str)]) -> wombat_llm::Result<RouterConfig> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .chain([("WOMBAT_RETRY_JITTER".to_owned(), "0".to_owned())])
        .collect();
    RouterConfig::from_map(&map)
}

fn explicit(model: &str) -> RouteRequest {
    let mut req = hello();
    req.model = ModelChoice::Explicit(model.to_owned());
    req
}

#[tokio::test]
async fn two_named_endpoints_are_routed_by_their_prefix() {
    let a = FakeServer::start(vec![ok_reply("from a")]).await;
    let b = FakeServer::start(vec![Reply::sse(STREAM_OK)]).await;
    let endpoints = json!({
        "it-a": {"base_url": a.url("/v1/"), "api_key_env": "IT_A_KEY",
                 "headers": {"X-Team": "agents-hdr", "OpenAI-Organization": "org-hdr-1"}},
        "it-b": {"base_url": b.url("/openai"), "headers": {"X-Tenant": "tenant-hdr-9"}},
    })
    .to_string();
    let cfg = from_vars(&[
        ("WOMBAT_LLM_ENDPOINTS", endpoints.as_str()),
        ("IT_A_KEY", "sk-it-a-secret"),
        ("OPENAI_API_KEY", "sk-openai"),
    ])
    .expect("valid");
    let (router, _) = router(cfg);

    let routed = router
        .complete(explicit("it-a/model-a"))
        .await
        .expect("a answers");
    let it_a = Provider::custom("it-a").expect("valid");
    assert_eq!(routed.completion.text, "from a");
    assert_eq!((routed.provider, routed.model.as_str()), (it_a, "model-a"));
    assert_eq!(
        routed.cost,
        router.pricing().cost("model-a", &Usage::new(10, 2))
    );
    let sent = &a.requests()[0];
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        ("POST", "/v1/chat/completions")
    );
    assert_eq!(sent.header("authorization"), Some("Bearer sk-it-a-secret"));
    assert_eq!(sent.header("x-team"), Some("agents-hdr"));
    assert_eq!(sent.header("openai-organization"), Some("org-hdr-1"));
    assert_eq!(sent.header("x-tenant"), None);
    // The model id without the endpoint's prefix, in the chat shape.
    let body = sent.json();
    assert_eq!(body["model"], "model-a");
    assert_eq!(
        body["messages"][1],
        json!({"role": "user", "content": "Hi there"})
    );

    let got = collect(&router, explicit("it-b/org/model-b"))
        .await
        .expect("b streams");
    assert_eq!(got.text, "from b");
    assert_eq!(got.usage(), Usage::new(4, 2));
    match &got.done {
        Some(RoutedEvent::Done {
            provider, model, ..
        }) => assert_eq!((provider.as_str(), model.as_str()), ("it-b", "org/model-b")),
        other => panic!("{other:?}"),
    }
    let sent = &b.requests()[0];
    assert_eq!(sent.path, "/openai/chat/completions");
    // No key configured: no Authorization header at all.
    assert_eq!(sent.header("authorization"), None);
    assert_eq!(sent.header("x-tenant"), Some("tenant-hdr-9"));
    assert_eq!(sent.header("x-team"), None);
    let body = sent.json();
    assert_eq!(
        (body["model"].as_str(), body["stream"].as_bool()),
        (Some("org/model-b"), Some(true))
    );
    assert_eq!(body["stream_options"], json!({"include_usage": true}));

    // The summary lists both, with where they are and whether they have a
    // key, and nothing secret.
    let summary = router.summary();
    let sa = &summary.providers[&it_a];
    assert_eq!(sa.base_url.as_deref(), Some(a.url("/v1").as_str()));
    assert!(sa.key_set && !sa.key_required && sa.uses.is_empty());
    let sb = &summary.providers[&Provider::custom("it-b").expect("valid")];
    assert!(!sb.key_set);
    assert!(summary.missing_keys().is_empty());
    let json = serde_json::to_string(&summary).expect("serialises");
    assert!(
        json.contains("\"it-a\"") && json.contains("\"it-b\""),
        "{json}"
    );
    for secret in ["sk-it-a-secret", "agents-hdr", "org-hdr-1", "tenant-hdr-9"] {
        assert!(!json.contains(secret), "{secret} in {json}");
    }
    let debug = format!("{router:?}");
    for secret in ["sk-it-a-secret", "agents-hdr", "org-hdr-1", "tenant-hdr-9"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
}

#[tokio::test]
async fn the_default_tier_and_provider_can_be_custom() {
    let server = FakeServer::start(vec![ok_reply("one"), ok_reply("two")]).await;
    let endpoints = json!({"it-default": {"base_url": server.url("/v1")}}).to_string();
    let cfg = from_vars(&[
        ("WOMBAT_LLM_ENDPOINTS", endpoints.as_str()),
        ("LLM_PROVIDER", "it-default"),
        ("LLM_MODEL_DEFAULT", "qwen2.5-7b"),
        ("LLM_MODEL_CHEAP", "it-default/qwen2.5-0.5b"),
    ])
    .expect("valid");
    let it = Provider::custom("it-default").expect("valid");
    assert_eq!(cfg.default_provider, it);
    let summary = cfg.summary();
    assert_eq!(summary.model, "it-default/qwen2.5-7b");
    assert_eq!(summary.providers[&it].uses, ["default", "cheap", "best"]);
    let (router, _) = router(cfg);
    let routed = router.complete(hello()).await.expect("answers");
    assert_eq!((routed.provider, routed.model.as_str()), (it, "qwen2.5-7b"));
    let mut req = hello();
    req.model = ModelChoice::Tier(wombat_llm::Tier::Cheap);
    router.complete(req).await.expect("answers");
    let models: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.json()["model"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(models, ["qwen2.5-7b", "qwen2.5-0.5b"]);
}

#[tokio::test]
async fn a_custom_endpoint_fails_over_to_a_builtin_fallback_and_back() {
    let anthropic_ok = Reply::json(
        200,
        json!({"content": [{"type": "text", "text": "from anthropic"}], "stop_reason": "end_turn",
               "usage": {"input_tokens": 1000, "output_tokens": 100}}),
    );
    // Custom first, overloaded every time: retried, then the built-in
    // fallback answers.
    let custom = FakeServer::start(vec![
        Reply::json(503, json!({"error": {"message": "busy"}})),
        Reply::json(503, json!({"error": {"message": "busy"}})),
    ])
    .await;
    let fallback = FakeServer::start(vec![anthropic_ok]).await;
    let endpoints = json!({"it-primary": {"base_url": custom.url("/v1")}}).to_string();
    let cfg = from_vars(&[
        ("WOMBAT_LLM_ENDPOINTS", endpoints.as_str()),
        ("LLM_MODEL_DEFAULT", "it-primary/llama"),
        ("LLM_MODEL_FALLBACK", "anthropic/claude-3-5-haiku"),
        ("ANTHROPIC_API_KEY", "sk-ant"),
        ("ANTHROPIC_BASE_URL", fallback.url("").as_str()),
        ("WOMBAT_RETRY_ATTEMPTS", "2"),
    ])
    .expect("valid");
    let (router, sleeper) = router(cfg);
    let routed = router.complete(hello()).await.expect("fallback answers");
    assert_eq!(
        (routed.provider, routed.model.as_str()),
        (Provider::Anthropic, "claude-3-5-haiku")
    );
    assert_eq!((routed.attempts, routed.failovers), (3, 1));
    assert_eq!(routed.cost.total_micros(), 1200);
    assert_eq!(sleeper.waits().len(), 1);
    assert_eq!((custom.request_count(), fallback.request_count()), (2, 1));

    // The reverse: a built-in primary whose key is rejected, a custom
    // fallback that answers (streaming, before the first output).
    let primary = FakeServer::start(vec![Reply::json(
        401,
        json!({"error": {"message": "bad key", "code": "invalid_api_key"}}),
    )])
    .await;
    let custom = FakeServer::start(vec![Reply::sse(STREAM_OK)]).await;
    let endpoints =
        json!({"it-backup": {"base_url": custom.url("/v1"), "api_key_env": "BACKUP_KEY"}})
            .to_string();
    let cfg = from_vars(&[
        ("WOMBAT_LLM_ENDPOINTS", endpoints.as_str()),
        ("BACKUP_KEY", "sk-backup"),
        ("OPENAI_API_KEY", "sk-openai"),
        ("OPENAI_BASE_URL", primary.url("/v1").as_str()),
        ("LLM_MODEL_FALLBACK", "it-backup/llama-3.1-8b"),
    ])
    .expect("valid");
    let (router, _) = crate::router(cfg);
    let mut stream = router.stream(hello()).await.expect("fallback streams");
    assert_eq!(stream.model().provider.as_str(), "it-backup");
    assert_eq!((stream.attempts(), stream.failovers()), (2, 1));
    let mut text = String::new();
    while let Some(ev) = stream.next().await {
        if let RoutedEvent::Delta(d) = ev.expect("no error") {
            text.push_str(&d);
        }
    }
    assert_eq!(text, "from b");
    let sent = &custom.requests()[0];
    assert_eq!(sent.header("authorization"), Some("Bearer sk-backup"));
    assert_eq!(sent.json()["model"], "llama-3.1-8b");
}

#[tokio::test]
async fn a_custom_endpoint_error_never_shows_its_key() {
    let server = FakeServer::start(vec![
        Reply::json(
            400,
            json!({"error": {"message": "bad request for key sk-it-leaky-0123456789"}}),
        ),
        Reply::json(
            401,
            json!({"error": {"message": "key sk-it-leaky-0123456789 rejected"}}),
        ),
    ])
    .await;
    let endpoints =
        json!({"it-leaky": {"base_url": server.url("/v1"), "api_key_env": "LEAKY"}}).to_string();
    let cfg = from_vars(&[
        ("WOMBAT_LLM_ENDPOINTS", endpoints.as_str()),
        ("LEAKY", "sk-it-leaky-0123456789"),
        ("LLM_MODEL_DEFAULT", "it-leaky/m"),
    ])
    .expect("valid");
    let (router, _) = router(cfg);
    let err = router.complete(hello()).await.expect_err("400");
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    let text = format!("{err} {err:?}");
    assert!(
        !text.contains("sk-it-leaky") && text.contains("it-leaky/m"),
        "{text}"
    );
    let err = router.complete(hello()).await.expect_err("401");
    assert_eq!(err.kind(), ErrorKind::Auth);
    let text = format!("{err} {err:?}");
    assert!(!text.contains("sk-it-leaky"), "{text}");
}

/// A backend of our own: answers `canned <model>: <last user text>`, and
/// streams it in two deltas.
struct Canned;

#[async_trait::async_trait]
impl ChatProvider for Canned {
    async fn complete(&self, req: &ChatRequest) -> wombat_llm::Result<Completion> {
        let question = req.messages.last().map(|m| m.text()).unwrap_or_default();
        Ok(Completion::text(
            format!("canned {}: {question}", req.model),
            Usage::new(3, 4),
            Some(FinishReason::Stop),
        ))
    }

    async fn stream(&self, req: &ChatRequest) -> wombat_llm::Result<EventStream> {
        let events: Vec<wombat_llm::Result<StreamEvent>> = vec![
            Ok(StreamEvent::Delta("canned ".to_owned())),
            Ok(StreamEvent::Delta(req.model.clone())),
            Ok(StreamEvent::Done {
                usage: Usage::new(3, 2),
                finish_reason: Some(FinishReason::Stop),
            }),
        ];
        Ok(futures::stream::iter(events).boxed())
    }
}

#[tokio::test]
async fn a_custom_chat_provider_serves_its_own_name() {
    let canned = Provider::custom("it-canned").expect("valid");
    let mut cfg = RouterConfig::default();
    cfg.default_model = "it-canned/house-1".into();
    let router = Router::builder(cfg)
        .provider(canned, Arc::new(Canned))
        .build()
        .expect("builds");
    let routed = router.complete(hello()).await.expect("answers");
    assert_eq!(routed.completion.text, "canned house-1: Hi there");
    assert_eq!(
        (routed.provider, routed.model.as_str()),
        (canned, "house-1")
    );
    assert_eq!(
        routed.cost,
        router.pricing().cost("house-1", &Usage::new(3, 4))
    );

    let got = collect(&router, explicit("it-canned/house-2"))
        .await
        .expect("streams");
    assert_eq!((got.text.as_str(), got.deltas), ("canned house-2", 2));
    assert_eq!(got.usage(), Usage::new(3, 2));

    // Built-in providers are still there, and the summary shows the
    // injected one (no URL: its backend is not an endpoint).
    let summary = router.summary();
    let shown = &summary.providers[&canned];
    assert_eq!((shown.base_url.as_deref(), shown.key_set), (None, false));
    assert_eq!(shown.uses, ["default", "cheap", "best"]);
    assert!(
        router
            .resolve(&ModelChoice::Explicit("anthropic/claude-sonnet-4".into()))
            .is_ok()
    );

    // A router without it refuses the name with a typed error, not a panic.
    let (other, _) = router_without_custom();
    let choice = ModelChoice::Explicit("it-canned/house-1".into());
    let err = other.resolve(&choice).expect_err("not served here");
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("it-canned"), "{err}");
    let err = other
        .complete(explicit("it-canned/house-1"))
        .await
        .expect_err("not served here");
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    let err = other
        .stream(explicit("it-canned/house-1"))
        .await
        .expect_err("not served here");
    assert_eq!(err.kind(), ErrorKind::Unsupported);
}

fn router_without_custom() -> (Router, Arc<crate::RecordingSleeper>) {
    router(RouterConfig::default())
}

#[tokio::test]
async fn an_injected_backend_replaces_an_endpoint_of_the_same_name() {
    let server = FakeServer::start(vec![]).await;
    let name = Provider::custom("it-replaced").expect("valid");
    let mut cfg = RouterConfig::default();
    cfg.endpoints.insert(
        name.custom_name().expect("custom"),
        EndpointConfig::new(server.url("/v1")),
    );
    cfg.default_model = "it-replaced/m".into();
    let router = Router::builder(cfg)
        .provider(name, Arc::new(Canned))
        .build()
        .expect("builds");
    let routed = router.complete(hello()).await.expect("answers");
    assert_eq!(routed.completion.text, "canned m: Hi there");
    assert_eq!(server.request_count(), 0);
}

#[test]
fn invalid_custom_configurations_are_config_errors_without_secrets() {
    // Through the variables: the error names the variable and the endpoint,
    // never the key or a header value.
    let cases: [(&str, &str); 4] = [
        (
            r#"{"it-bad": {"base_url": "http://x", "api_key_env": "IT_BAD_KEY", "extra": 1}}"#,
            "invalid WOMBAT_LLM_ENDPOINTS: endpoint \"it-bad\": unknown field \"extra\"",
        ),
        (
            r#"{"it-bad": {"base_url": "http://x", "api_key_env": "IT_MISSING"}}"#,
            "api_key_env names IT_MISSING, which is not set",
        ),
        (
            r#"{"It Bad": {"base_url": "http://x"}}"#,
            "invalid provider name \"It Bad\"",
        ),
        (
            r#"{"it-bad": {"base_url": "http://x", "headers": {"x-a": "hdr-secret\r\nx: y"}}}"#,
            "the value of header x-a is not valid",
        ),
    ];
    for (doc, expected) in cases {
        let err = from_vars(&[("WOMBAT_LLM_ENDPOINTS", doc), ("IT_BAD_KEY", "sk-it-bad")])
            .expect_err(doc);
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(err.config_var(), Some("WOMBAT_LLM_ENDPOINTS"));
        let text = format!("{err} {err:?}");
        assert!(text.contains(expected), "{doc}: {text}");
        assert!(
            !text.contains("sk-it-bad") && !text.contains("hdr-secret"),
            "{text}"
        );
    }
    // A model on an endpoint name that is not declared stays a model of the
    // default provider, as any unknown prefix.
    let cfg = from_vars(&[("LLM_MODEL_DEFAULT", "it-undeclared/m")]).expect("valid");
    assert_eq!(cfg.summary().model, "openai/it-undeclared/m");
    let err = from_vars(&[("LLM_PROVIDER", "it-undeclared")]).expect_err("unknown");
    assert_eq!(err.config_var(), Some("LLM_PROVIDER"));

    // Built in code: `build` validates each endpoint.
    let name = Provider::custom("it-code").expect("valid");
    let endpoint = |e: EndpointConfig| {
        let mut cfg = RouterConfig::default();
        cfg.endpoints.insert(name.custom_name().expect("custom"), e);
        cfg
    };
    let bad = endpoint(
        EndpointConfig::new("ftp://user:pa55@host").with_api_key(ApiKey::new("sk-it-code")),
    );
    let debug = format!("{bad:?}");
    assert!(
        !debug.contains("sk-it-code") && !debug.contains("pa55"),
        "{debug}"
    );
    let err = Router::new(bad).expect_err("not http");
    assert_eq!(err.config_var(), Some("endpoints.it-code"));
    let text = format!("{err} {err:?}");
    assert!(
        text.contains("base_url is not an http:// or https:// url")
            && !text.contains("pa55")
            && !text.contains("sk-it-code"),
        "{text}"
    );
    let err = Router::new(endpoint(
        EndpointConfig::new("http://127.0.0.1:9/v1")
            .with_api_key(ApiKey::new("sk-it-code"))
            .with_header("Authorization", "Bearer hdr-secret"),
    ))
    .expect_err("two credentials");
    let text = format!("{err} {err:?}");
    assert!(text.contains("conflicts with the api key"), "{text}");
    assert!(!text.contains("hdr-secret") && !text.contains("sk-it-code"));
    let with_headers = endpoint(
        EndpointConfig::new("http://127.0.0.1:9/v1").with_header("X-Secret", "hdr-secret"),
    );
    assert!(!format!("{with_headers:?}").contains("hdr-secret"));
    Router::new(with_headers).expect("valid");

    // A configured model on a custom provider nobody serves.
    let orphan = Provider::custom("it-orphan").expect("valid");
    let mut cfg = RouterConfig::default();
    cfg.fallback_model = Some("it-orphan/m".into());
    let err = Router::new(cfg).expect_err("no backend");
    assert_eq!(err.config_var(), Some("fallback_model"));
    assert!(err.to_string().contains("\"it-orphan\""), "{err}");
    let mut cfg = RouterConfig::default();
    cfg.default_provider = orphan;
    let err = Router::new(cfg).expect_err("no backend");
    assert_eq!(err.config_var(), Some("default_provider"));
}

#[tokio::test]
async fn per_request_options_apply_to_custom_endpoints() {
    let server = FakeServer::start(vec![ok_reply("ok"), ok_reply("ok")]).await;
    let name = Provider::custom("it-options").expect("valid");
    let mut cfg = RouterConfig::default();
    cfg.endpoints.insert(
        name.custom_name().expect("custom"),
        EndpointConfig::new(server.url("/v1"))
            .with_api_key(ApiKey::new("sk-endpoint"))
            .with_header("X-Team", "agents"),
    );
    cfg.default_model = "it-options/m".into();
    let (router, _) = router(cfg);
    // A tenant's key replaces the endpoint's; its own headers add to the
    // endpoint's.
    let req = hello().with_options(
        wombat_llm::RequestOptions::new()
            .with_api_key(ApiKey::new("sk-tenant"))
            .with_header("X-Request", "r-1")
            .with_user("u-1"),
    );
    router.complete(req).await.expect("answers");
    let sent = &server.requests()[0];
    assert_eq!(sent.header("authorization"), Some("Bearer sk-tenant"));
    assert_eq!(sent.header("x-team"), Some("agents"));
    assert_eq!(sent.header("x-request"), Some("r-1"));
    assert_eq!(sent.json()["user"], "u-1");
    // A request header may not replace an endpoint header.
    let req =
        hello().with_options(wombat_llm::RequestOptions::new().with_header("X-Team", "other"));
    let err = router.complete(req).await.expect_err("conflict");
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert!(err.to_string().contains("x-team"), "{err}");
}

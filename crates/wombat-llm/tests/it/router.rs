//! The router: retries, backoff hints, failover, deadline, cancellation,
//! missing keys, echo and metrics hooks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use wombat_core::{ChatMessage, ModelRef, Provider, Usage};
use wombat_llm::{
    ApiKey, CallObserver, CallOutcome, Error, ErrorKind, ModelChoice, ProviderRequest,
    ProviderResponse, RequestOptions, RouteRequest, RoutedEvent, Router, RouterConfig,
    RouterObserver, Tier,
};

use crate::fake::{FakeServer, Reply};
use crate::{collect, config, hello, router};

fn ok_reply(text: &str) -> Reply {
    Reply::json(
        200,
        json!({"choices": [{"message": {"content": text}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}}),
    )
}

fn status(code: u16) -> Reply {
    Reply::json(
        code,
        json!({"error": {"message": format!("status {code}"), "type": "test_error"}}),
    )
}

const ANTHROPIC_OK: &str = concat!(
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"from fallback\"}}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
);

/// Primary `openai/gpt-4o-mini` at `primary`, fallback
/// `anthropic/claude-3-5-haiku` at `fallback`.
fn with_fallback(primary: &FakeServer, fallback: &FakeServer) -> RouterConfig {
    let mut cfg = config(Provider::OpenAi, "gpt-4o-mini", &primary.url("/v1"));
    cfg.fallback_model = Some("anthropic/claude-3-5-haiku".into());
    cfg.base_urls.insert(Provider::Anthropic, fallback.url(""));
    cfg
}

#[tokio::test]
async fn retry_after_header_is_honoured_exactly() {
    let server = FakeServer::start(vec![
        status(429).header("retry-after", "1"),
        ok_reply("done"),
    ])
    .await;
    let mut cfg = config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1"));
    // Jitter must not touch a provider-requested wait.
    cfg.retry.jitter = 0.5;
    let (router, sleeper) = router(cfg);
    let routed = router
        .complete(hello())
        .await
        .expect("second attempt succeeds");
    assert_eq!(routed.completion.text, "done");
    assert_eq!((routed.attempts, routed.failovers), (2, 0));
    assert_eq!(sleeper.waits(), [Duration::from_secs(1)]);
}

#[tokio::test]
async fn retry_after_ms_wins_over_retry_after() {
    let server = FakeServer::start(vec![
        status(429)
            .header("retry-after-ms", "250")
            .header("retry-after", "9"),
        ok_reply("done"),
    ])
    .await;
    let (router, sleeper) = router(config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1")));
    router.complete(hello()).await.expect("succeeds");
    assert_eq!(sleeper.waits(), [Duration::from_millis(250)]);
}

#[tokio::test]
async fn server_errors_back_off_exponentially_then_succeed() {
    let server = FakeServer::start(vec![status(500), status(502), ok_reply("third time")]).await;
    let (router, sleeper) = router(config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1")));
    let routed = router
        .complete(hello())
        .await
        .expect("third attempt succeeds");
    assert_eq!(routed.completion.text, "third time");
    assert_eq!(routed.attempts, 3);
    assert_eq!(
        sleeper.waits(),
        [Duration::from_secs(1), Duration::from_secs(2)]
    );
    assert_eq!(server.request_count(), 3);
}

#[tokio::test]
async fn x_should_retry_false_stops_retries() {
    let server = FakeServer::start(vec![status(500).header("x-should-retry", "false")]).await;
    let (router, sleeper) = router(config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1")));
    let err = router.complete(hello()).await.expect_err("not retried");
    assert!(matches!(err.kind(), ErrorKind::Server), "{err:?}");
    assert_eq!(server.request_count(), 1);
    assert!(sleeper.waits().is_empty());
}

#[tokio::test]
async fn fails_over_to_another_provider_after_the_primary_is_exhausted() {
    let primary = FakeServer::start(vec![status(503), status(503), status(503)]).await;
    let fallback = FakeServer::start(vec![Reply::json(
        200,
        json!({"content": [{"type": "text", "text": "from fallback"}], "stop_reason": "end_turn",
               "usage": {"input_tokens": 1000, "output_tokens": 100}}),
    )])
    .await;
    let (router, sleeper) = router(with_fallback(&primary, &fallback));
    let routed = router.complete(hello()).await.expect("fallback answers");
    assert_eq!(routed.completion.text, "from fallback");
    assert_eq!(
        (routed.provider, routed.model.as_str()),
        (Provider::Anthropic, "claude-3-5-haiku")
    );
    assert_eq!((routed.attempts, routed.failovers), (4, 1));
    // Cost uses the model that answered: 1000 × $0.80/M + 100 × $4/M.
    assert_eq!(routed.cost.model, "claude-3-5-haiku");
    assert_eq!(routed.cost.total_micros(), 1200);
    assert_eq!(
        sleeper.waits(),
        [Duration::from_secs(1), Duration::from_secs(2)]
    );
    assert_eq!((primary.request_count(), fallback.request_count()), (3, 1));
    // Every attempt carries the whole request; on failover only the model
    // changes.
    for r in primary.requests() {
        let body = r.json();
        assert_eq!(body["model"], "gpt-4o-mini");
        assert_eq!(
            body["messages"][0],
            json!({"role": "system", "content": "You are terse."})
        );
        assert_eq!(
            body["messages"][1],
            json!({"role": "user", "content": "Hi there"})
        );
    }
    let body = fallback.requests()[0].json();
    assert_eq!(body["model"], "claude-3-5-haiku");
    assert_eq!(body["system"], "You are terse.");
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": "Hi there"}])
    );
}

#[tokio::test]
async fn invalid_request_is_neither_retried_nor_failed_over() {
    let primary = FakeServer::start(vec![status(400)]).await;
    let fallback = FakeServer::start(vec![]).await;
    let (router, sleeper) = router(with_fallback(&primary, &fallback));
    let err = router.complete(hello()).await.expect_err("400 is final");
    assert!(matches!(err.kind(), ErrorKind::InvalidRequest), "{err:?}");
    assert_eq!(
        err.to_string(),
        "invalid request to openai/gpt-4o-mini (http 400): status 400"
    );
    assert_eq!((primary.request_count(), fallback.request_count()), (1, 0));
    assert!(sleeper.waits().is_empty());
}

#[tokio::test]
async fn auth_failure_fails_over_without_retrying() {
    let primary = FakeServer::start(vec![Reply::json(
        401,
        json!({"error": {"message": "Incorrect API key provided: test-key-openai", "type": "invalid_request_error", "code": "invalid_api_key"}}),
    )])
    .await;
    let fallback = FakeServer::start(vec![Reply::json(
        200,
        json!({"content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}}),
    )])
    .await;
    let (router, _) = router(with_fallback(&primary, &fallback));
    let routed = router.complete(hello()).await.expect("fallback answers");
    assert_eq!(
        (routed.provider, routed.attempts, routed.failovers),
        (Provider::Anthropic, 2, 1)
    );
    assert_eq!(primary.request_count(), 1);
}

#[tokio::test]
async fn every_model_failing_reports_each_and_the_longest_retry_after() {
    let primary = FakeServer::start(vec![Reply::json(
        429,
        json!({"error": {"message": "Rate limit reached for key test-key-openai", "type": "requests"}}),
    )
    .header("retry-after", "3")])
    .await;
    let fallback = FakeServer::start(vec![
        Reply::json(
            429,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}),
        )
        .header("retry-after", "7"),
    ])
    .await;
    let mut cfg = with_fallback(&primary, &fallback);
    cfg.retry.attempts = 1;
    let (router, _) = router(cfg);
    let err = router
        .complete(hello())
        .await
        .expect_err("everything is rate limited");
    assert!(
        err.kind() == ErrorKind::Exhausted && err.attempts() == Some(2),
        "{err:?}"
    );
    assert!(err.is_rate_limited());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(err.code(), "rate_limited");
    let text = err.to_string();
    assert!(
        text.contains("openai/gpt-4o-mini") && text.contains("anthropic/claude-3-5-haiku"),
        "{text}"
    );
    // The API key the provider echoed back is redacted.
    assert!(
        !text.contains("test-key") && text.contains("[redacted]"),
        "{text}"
    );
}

#[tokio::test]
async fn a_hanging_provider_times_out() {
    let server = FakeServer::start(vec![Reply::hang()]).await;
    let mut cfg = config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1"));
    cfg.read_timeout = Duration::from_millis(200);
    cfg.retry.attempts = 1;
    let (router, _) = router(cfg);
    let err = router.complete(hello()).await.expect_err("times out");
    assert!(matches!(err.kind(), ErrorKind::Timeout), "{err:?}");
    assert!(err.is_timeout() && err.is_retryable());
}

#[tokio::test]
async fn the_total_deadline_covers_everything() {
    let server = FakeServer::start(vec![Reply::hang(), Reply::sse_stall("")]).await;
    let mut cfg = config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1"));
    cfg.deadline = Duration::from_millis(300);
    let (router, _) = router(cfg);
    let err = router.complete(hello()).await.expect_err("deadline");
    assert!(matches!(err.kind(), ErrorKind::DeadlineExceeded), "{err:?}");
    let err = collect(&router, hello())
        .await
        .expect_err("deadline while opening");
    assert!(matches!(err.kind(), ErrorKind::DeadlineExceeded), "{err:?}");
}

#[tokio::test]
async fn the_deadline_also_ends_a_committed_stream() {
    let first = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n";
    let server = FakeServer::start(vec![Reply::sse_stall(first)]).await;
    let mut cfg = config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1"));
    // Long enough for the first delta to arrive on a busy machine.
    cfg.deadline = Duration::from_millis(1000);
    let (router, _) = router(cfg);
    let got = collect(&router, hello())
        .await
        .expect("first delta arrives");
    assert_eq!(got.text, "Hi");
    assert!(
        got.error.as_ref().map(Error::kind) == Some(ErrorKind::DeadlineExceeded),
        "{:?}",
        got.error
    );
}

#[tokio::test]
async fn missing_key_gives_the_exact_message() {
    let mut cfg = config(Provider::Anthropic, "claude-sonnet-4", "http://127.0.0.1:9");
    cfg.api_keys.clear();
    let (router, _) = router(cfg);
    let err = router.complete(hello()).await.expect_err("no key");
    assert_eq!(
        err.to_string(),
        "API key not configured for provider \"anthropic\". Set ANTHROPIC_API_KEY."
    );
    let mut cfg = config(Provider::Google, "gemini-2.0-flash", "http://127.0.0.1:9");
    cfg.api_keys.clear();
    let (router, _) = crate::router(cfg);
    let err = collect(&router, hello()).await.expect_err("no key");
    assert_eq!(
        err.to_string(),
        "API key not configured for provider \"google\". Set GEMINI_API_KEY."
    );
}

#[tokio::test]
async fn streaming_fails_over_before_the_first_delta() {
    let overloaded = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
    );
    let primary = FakeServer::start(vec![Reply::sse(overloaded)]).await;
    let fallback = FakeServer::start(vec![Reply::sse(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"openai here\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
    )])
    .await;
    let mut cfg = config(Provider::Anthropic, "claude-3-5-haiku", &primary.url(""));
    cfg.fallback_model = Some("openai/gpt-4o".into());
    cfg.base_urls.insert(Provider::OpenAi, fallback.url("/v1"));
    cfg.retry.attempts = 1;
    let (router, _) = router(cfg);
    let got = collect(&router, hello()).await.expect("fallback streams");
    assert_eq!(got.text, "openai here");
    match got.done {
        Some(RoutedEvent::Done {
            provider,
            model,
            attempts,
            failovers,
            ..
        }) => {
            assert_eq!(
                (provider, model.as_str(), attempts, failovers),
                (Provider::OpenAi, "gpt-4o", 2, 1)
            );
        }
        other => panic!("no done event: {other:?}"),
    }
}

#[tokio::test]
async fn streaming_does_not_fail_over_after_the_first_delta() {
    let partial = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"partial\"}}\n\n",
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
    );
    let primary = FakeServer::start(vec![Reply::sse(partial)]).await;
    let fallback = FakeServer::start(vec![]).await;
    let mut cfg = config(Provider::Anthropic, "claude-3-5-haiku", &primary.url(""));
    cfg.fallback_model = Some("openai/gpt-4o".into());
    cfg.base_urls.insert(Provider::OpenAi, fallback.url("/v1"));
    let (router, sleeper) = router(cfg);
    let got = collect(&router, hello())
        .await
        .expect("first delta arrives");
    assert_eq!(got.text, "partial");
    assert!(
        got.error.as_ref().map(Error::kind) == Some(ErrorKind::Overloaded),
        "{:?}",
        got.error
    );
    assert_eq!((primary.request_count(), fallback.request_count()), (1, 0));
    assert!(sleeper.waits().is_empty());
}

#[tokio::test]
async fn streaming_retries_a_truncated_stream_before_the_first_delta() {
    let primary = FakeServer::start(vec![
        Reply::sse_until_close(": keepalive\n\n"),
        Reply::sse(concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"again\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}\n\n",
            "data: [DONE]\n\n",
        )),
    ])
    .await;
    let (router, sleeper) = router(config(Provider::OpenAi, "gpt-4o-mini", &primary.url("/v1")));
    let got = collect(&router, hello())
        .await
        .expect("second attempt streams");
    assert_eq!(got.text, "again");
    assert_eq!(got.usage(), Usage::new(1, 1));
    assert_eq!(sleeper.waits(), [Duration::from_secs(1)]);
}

#[tokio::test]
async fn dropping_a_stream_closes_the_provider_connection() {
    let first = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n";
    let server = FakeServer::start(vec![Reply::sse_stall(first)]).await;
    let (router, _) = router(config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1")));
    let mut stream = router.stream(hello()).await.expect("stream opens");
    assert_eq!(
        stream.next().await.map(|r| r.expect("delta")),
        Some(RoutedEvent::Delta("Hi".into()))
    );
    drop(stream);
    // The fake notices the closed connection; the timeout only guards
    // against a hang if cancellation were broken.
    tokio::time::timeout(Duration::from_secs(10), server.client_closed.notified())
        .await
        .expect("the client closed the connection");
}

#[tokio::test]
async fn echo_is_offline_and_explicit() {
    let cfg =
        RouterConfig::from_env_map(&|k: &str| (k == "LLM_PROVIDER").then(|| "echo".to_owned()))
            .expect("valid");
    let (router, _) = router(cfg);
    let routed = router.complete(hello()).await.expect("echo answers");
    assert_eq!(routed.completion.text, "echo: Hi there");
    assert_eq!(
        (routed.provider, routed.model.as_str()),
        (Provider::Echo, "gpt-4o-mini")
    );
    assert_eq!(routed.completion.usage, Usage::new(5, 3));
    // Echo never costs anything, even under a priced model name.
    assert!(!routed.cost.priced);
    assert_eq!(routed.cost.total_cost, 0.0);

    // A request naming echo when echo is configured (here as the best tier).
    let mut cfg = RouterConfig::default();
    cfg.best_model = Some("echo/best".into());
    let (router, _) = crate::router(cfg);
    let mut req = hello();
    req.model = ModelChoice::Explicit("echo/demo".into());
    let got = collect(&router, req).await.expect("echo streams");
    assert_eq!(got.text, "echo: Hi there");
    assert!(got.deltas >= 3);
}

#[tokio::test]
async fn a_request_cannot_select_echo_when_it_is_not_configured() {
    let (router, _) = crate::router(RouterConfig::default());
    let choice = ModelChoice::Explicit("echo/x".into());
    let err = router.resolve(&choice).expect_err("echo is not configured");
    assert_eq!(err.code(), "model_not_allowed");
    assert!(err.to_string().contains("\"echo/x\""), "{err}");
    let mut req = hello();
    req.model = choice;
    let err = router.complete(req.clone()).await.expect_err("refused");
    assert!(matches!(err.kind(), ErrorKind::ModelNotAllowed), "{err:?}");
    let err = router.stream(req).await.expect_err("refused");
    assert!(matches!(err.kind(), ErrorKind::ModelNotAllowed), "{err:?}");
    // Real providers stay selectable.
    assert!(
        router
            .resolve(&ModelChoice::Explicit("anthropic/claude-sonnet-4".into()))
            .is_ok()
    );
}

#[derive(Default)]
struct Counting {
    retries: AtomicU32,
    failovers: AtomicU32,
}

impl RouterObserver for Counting {
    fn on_retry(&self, _: &ModelRef, _: u32, _: &Error, _: Duration) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    fn on_failover(&self, from: &ModelRef, to: &ModelRef, error: &Error) {
        assert_eq!(from.provider, Provider::OpenAi);
        assert_eq!(to.provider, Provider::Anthropic);
        assert!(error.should_failover());
        self.failovers.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test]
async fn observer_sees_retries_and_failovers() {
    let primary = FakeServer::start(vec![status(500), status(500), status(500)]).await;
    let fallback = FakeServer::start(vec![Reply::sse(ANTHROPIC_OK)]).await;
    let counting = Arc::new(Counting::default());
    let router = Router::builder(with_fallback(&primary, &fallback))
        .sleeper(Arc::new(crate::RecordingSleeper::default()))
        .observer(counting.clone())
        .build()
        .expect("builds");
    let got = collect(&router, hello()).await.expect("fallback streams");
    assert_eq!(got.text, "from fallback");
    assert_eq!(counting.retries.load(Ordering::Relaxed), 2);
    assert_eq!(counting.failovers.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn tiers_resolve_and_context_windows_come_from_pricing() {
    let vars = [
        ("LLM_MODEL_DEFAULT", "gpt-4o-mini"),
        ("LLM_MODEL_BEST", "anthropic/claude-sonnet-4"),
        ("OPENAI_MODEL_CHEAP", "gpt-4.1-nano"),
    ];
    let cfg = RouterConfig::from_env_map(&|k: &str| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| (*v).to_owned())
    })
    .expect("valid");
    let (router, _) = router(cfg);
    let best = router.resolve(&Tier::Best.into()).expect("resolves");
    assert_eq!(best.to_string(), "anthropic/claude-sonnet-4");
    let cheap = router.resolve(&Tier::Cheap.into()).expect("resolves");
    assert_eq!(cheap.to_string(), "openai/gpt-4.1-nano");
    assert_eq!(router.context_window(&best), 200_000);
    assert_eq!(
        router.context_window(
            &router
                .resolve(&ModelChoice::Explicit("groq/x".into()))
                .expect("resolves")
        ),
        128_000
    );
    let err = router
        .complete(RouteRequest::new(
            ModelChoice::Explicit("openai/".into()),
            vec![ChatMessage::user("x")],
        ))
        .await
        .expect_err("invalid model");
    assert_eq!(err.code(), "invalid_model");
}

/// An injected backend that fails with an overloaded error `failures` times,
/// then answers; it needs no HTTP, so tokio's paused clock is safe here.
struct Flaky {
    failures: AtomicU32,
}

#[async_trait::async_trait]
impl wombat_llm::ChatProvider for Flaky {
    async fn complete(
        &self,
        req: &wombat_llm::ChatRequest,
    ) -> wombat_llm::Result<wombat_llm::Completion> {
        if self.failures.load(Ordering::SeqCst) > 0 {
            self.failures.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::new(
                ErrorKind::Overloaded,
                wombat_llm::Failure::new(Provider::Mistral, req.model.clone(), "busy")
                    .with_status(503),
            )
            .with_retry_after(None));
        }
        Ok(wombat_llm::Completion::text(
            format!("{} says hi", req.model),
            Usage::new(1_000_000, 0),
            None,
        ))
    }

    async fn stream(
        &self,
        _: &wombat_llm::ChatRequest,
    ) -> wombat_llm::Result<wombat_llm::EventStream> {
        Err(Error::unsupported(Provider::Mistral, "complete only"))
    }
}

#[tokio::test(start_paused = true)]
async fn injected_providers_and_the_default_sleeper_on_a_paused_clock() {
    let mut cfg = RouterConfig::default();
    cfg.default_provider = Provider::Mistral;
    cfg.default_model = "mistral-small-latest".into();
    cfg.retry.jitter = 0.0;
    let router = Router::builder(cfg)
        .provider(
            Provider::Mistral,
            Arc::new(Flaky {
                failures: AtomicU32::new(2),
            }),
        )
        .build()
        .expect("builds");
    let start = tokio::time::Instant::now();
    let routed = router
        .complete(hello())
        .await
        .expect("third attempt answers");
    // 1 s + 2 s of backoff on tokio's virtual clock.
    assert_eq!(start.elapsed().as_secs(), 3);
    assert_eq!(routed.completion.text, "mistral-small-latest says hi");
    assert_eq!(routed.attempts, 3);
    assert_eq!(routed.cost.input_cost, 0.2);
}

/// An injected backend that is always rate limited with a `Retry-After`.
struct AlwaysLimited {
    retry_after: Duration,
    calls: AtomicU32,
}

#[async_trait::async_trait]
impl wombat_llm::ChatProvider for AlwaysLimited {
    async fn complete(
        &self,
        req: &wombat_llm::ChatRequest,
    ) -> wombat_llm::Result<wombat_llm::Completion> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(Error::new(
            ErrorKind::RateLimited,
            wombat_llm::Failure::new(Provider::Mistral, req.model.clone(), "slow down")
                .with_status(429),
        )
        .with_retry_after(Some(self.retry_after)))
    }

    async fn stream(
        &self,
        req: &wombat_llm::ChatRequest,
    ) -> wombat_llm::Result<wombat_llm::EventStream> {
        self.complete(req)
            .await
            .map(|_| futures::stream::empty().boxed())
    }
}

/// A sleeper that records the waits and really waits on tokio's clock, which
/// the tests pause: the deadline sees the time pass, the wall clock does not.
#[derive(Default)]
struct ClockSleeper {
    waits: std::sync::Mutex<Vec<Duration>>,
}

impl wombat_llm::Sleeper for ClockSleeper {
    fn sleep(&self, duration: Duration) -> futures::future::BoxFuture<'static, ()> {
        self.waits.lock().expect("lock").push(duration);
        Box::pin(tokio::time::sleep(duration))
    }
}

fn limited_primary_router(
    retry_after: Duration,
    fallback: bool,
) -> (Router, Arc<AlwaysLimited>, Arc<ClockSleeper>) {
    let mut cfg = RouterConfig::default();
    cfg.default_provider = Provider::Mistral;
    cfg.default_model = "mistral-small-latest".into();
    cfg.deadline = Duration::from_secs(120);
    cfg.retry.jitter = 0.0;
    cfg.retry.attempts = 3;
    if fallback {
        cfg.fallback_model = Some("groq/llama-3.3-70b".into());
    }
    let primary = Arc::new(AlwaysLimited {
        retry_after,
        calls: AtomicU32::new(0),
    });
    let sleeper = Arc::new(ClockSleeper::default());
    let router = Router::builder(cfg)
        .provider(Provider::Mistral, primary.clone())
        .provider(
            Provider::Groq,
            Arc::new(Flaky {
                failures: AtomicU32::new(0),
            }),
        )
        .sleeper(sleeper.clone())
        .build()
        .expect("builds");
    (router, primary, sleeper)
}

/// Issue 12.5: two `Retry-After: 60` waits used the whole 120 s deadline and
/// the fallback was never tried.
#[tokio::test(start_paused = true)]
async fn retry_waits_never_use_the_fallbacks_share_of_the_deadline() {
    let (router, primary, sleeper) = limited_primary_router(Duration::from_secs(60), true);
    let start = tokio::time::Instant::now();
    let routed = router
        .complete(hello())
        .await
        .expect("the fallback answers");
    assert_eq!(routed.provider, Provider::Groq);
    assert_eq!(routed.failovers, 1);
    // One 60 s wait fits the primary's half of 120 s; the second would not
    // fit its half of the 60 s left, so the router fails over at once.
    assert_eq!(
        *sleeper.waits.lock().expect("lock"),
        [Duration::from_secs(60)]
    );
    assert_eq!(primary.calls.load(Ordering::SeqCst), 2);
    assert_eq!(start.elapsed(), Duration::from_secs(60));

    // Streaming follows the same rule.
    let (router, _, sleeper) = limited_primary_router(Duration::from_secs(60), true);
    let err = router
        .stream(hello())
        .await
        .expect_err("flaky streams nothing");
    // The fallback was reached (its `Unsupported` is the last error).
    assert!(
        err.kind() == ErrorKind::Exhausted
            && err.errors().len() == 2
            && err.errors().last().map(Error::kind) == Some(ErrorKind::Unsupported),
        "{err:?}"
    );
    assert_eq!(
        *sleeper.waits.lock().expect("lock"),
        [Duration::from_secs(60)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_wait_longer_than_the_time_left_returns_the_providers_error_at_once() {
    let (router, primary, sleeper) = limited_primary_router(Duration::from_secs(45), false);
    let mut cfg = router.config().clone();
    cfg.deadline = Duration::from_secs(30);
    let router = Router::builder(cfg)
        .provider(Provider::Mistral, primary.clone())
        .sleeper(sleeper.clone())
        .build()
        .expect("builds");
    let start = tokio::time::Instant::now();
    let err = router.complete(hello()).await.expect_err("rate limited");
    // The caller gets the 429 and its Retry-After, not a deadline error
    // after a wait that could never have been followed by a retry.
    assert!(err.is_rate_limited(), "{err:?}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(45)));
    assert!(sleeper.waits.lock().expect("lock").is_empty());
    assert_eq!(primary.calls.load(Ordering::SeqCst), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

/// Issue 12.10: each wire format's "bad key" answer, quoting a fragment of
/// the key as providers do, becomes our own message; no fragment survives.
#[tokio::test]
async fn rejected_keys_are_reported_in_our_words_for_every_wire_format() {
    let cases = [
        (
            Provider::OpenAi,
            "gpt-4o-mini",
            "/v1",
            Reply::json(
                401,
                json!({"error": {"message": "Incorrect API key provided: test-key*****enai.", "type": "invalid_request_error", "code": "invalid_api_key"}}),
            ),
            "provider \"openai\" rejected the API key (HTTP 401); check OPENAI_API_KEY",
        ),
        (
            Provider::Anthropic,
            "claude-3-5-haiku",
            "",
            Reply::json(
                401,
                json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key test-key-ant..."}}),
            ),
            "provider \"anthropic\" rejected the API key (HTTP 401); check ANTHROPIC_API_KEY",
        ),
        (
            Provider::Google,
            "gemini-2.0-flash",
            "/v1beta",
            Reply::json(
                400,
                json!({"error": {"code": 400, "message": "API key not valid: test-key-goo****", "status": "INVALID_ARGUMENT",
                       "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}),
            ),
            "provider \"google\" rejected the API key (HTTP 400); check GEMINI_API_KEY or GOOGLE_API_KEY",
        ),
        (
            Provider::Google,
            "gemini-2.0-flash",
            "/v1beta",
            Reply::json(
                403,
                json!({"error": {"code": 403, "message": "Permission denied for key test-key-goo****", "status": "PERMISSION_DENIED"}}),
            ),
            "provider \"google\" denied access with the API key (HTTP 403); check GEMINI_API_KEY or GOOGLE_API_KEY and its permissions",
        ),
    ];
    for (provider, model, suffix, reply, expected) in cases {
        let server = FakeServer::start(vec![reply]).await;
        let (router, sleeper) = router(config(provider, model, &server.url(suffix)));
        let err = router.complete(hello()).await.expect_err("rejected");
        assert_eq!(err.code(), "provider_auth", "{err:?}");
        let text = err.to_string();
        assert_eq!(text, format!("{provider}/{model}: {expected}"));
        assert!(!text.contains("test-key") && !text.contains("**"), "{text}");
        assert_eq!(server.request_count(), 1, "not retried");
        assert!(sleeper.waits().is_empty());
    }
}

/// Ollama needs no key, so "configured" cannot mean "has a key": a request
/// naming `ollama/...` on a daemon that does not use Ollama would otherwise
/// make it connect to `http://localhost:11434` on the daemon's host.
#[tokio::test]
async fn a_request_cannot_select_ollama_when_it_is_not_configured() {
    let (router, _) = crate::router(RouterConfig::default());
    let err = router
        .resolve(&ModelChoice::Explicit("ollama/llama3".into()))
        .expect_err("ollama is not configured");
    assert_eq!(err.code(), "model_not_allowed");
    assert!(err.to_string().contains("OLLAMA_BASE_URL"), "{err}");
    // Configured by its base URL, or by a tier naming it: selectable.
    let mut cfg = RouterConfig::default();
    cfg.base_urls
        .insert(Provider::Ollama, "http://127.0.0.1:9/v1".into());
    let (router, _) = crate::router(cfg);
    assert!(
        router
            .resolve(&ModelChoice::Explicit("ollama/llama3".into()))
            .is_ok()
    );
    let mut cfg = RouterConfig::default();
    cfg.cheap_model = Some("ollama/small".into());
    let (router, _) = crate::router(cfg);
    assert!(
        router
            .resolve(&ModelChoice::Explicit("ollama/llama3".into()))
            .is_ok()
    );
}

// ---- per-request options and the call observer ----

fn tenant_options() -> RequestOptions {
    RequestOptions::new()
        .with_api_key(ApiKey::new("sk-tenant-0123456789abcdef"))
        .with_header("OpenAI-Organization", "org-7")
        .with_user("user-42")
        .with_provider_param("top_k", json!(40))
}

#[tokio::test]
async fn per_request_key_headers_user_and_params_reach_openai() {
    let server = FakeServer::start(vec![ok_reply("hi")]).await;
    let (router, _) = router(config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1")));
    let routed = router
        .complete(hello().with_options(tenant_options()))
        .await
        .expect("succeeds");
    assert_eq!(routed.completion.text, "hi");
    let sent = &server.requests()[0];
    assert_eq!(
        sent.header("authorization"),
        Some("Bearer sk-tenant-0123456789abcdef"),
        "the tenant's key replaces the configured one"
    );
    assert_eq!(sent.header("openai-organization"), Some("org-7"));
    let body = sent.json();
    assert_eq!(body["user"], "user-42");
    assert_eq!(body["top_k"], 40);
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["messages"][1]["content"], "Hi there");
}

#[tokio::test]
async fn anthropic_gets_the_user_as_metadata_and_the_key_as_x_api_key() {
    let server = FakeServer::start(vec![Reply::json(
        200,
        json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
               "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
               "usage": {"input_tokens": 3, "output_tokens": 1}}),
    )])
    .await;
    let (router, _) = router(config(Provider::Anthropic, "claude", &server.url("")));
    let options = RequestOptions::new()
        .with_api_key(ApiKey::new("sk-ant-tenant"))
        .with_header("anthropic-beta", "tools-2024")
        .with_user("user-42");
    router
        .complete(hello().with_options(options))
        .await
        .expect("succeeds");
    let sent = &server.requests()[0];
    assert_eq!(sent.header("x-api-key"), Some("sk-ant-tenant"));
    assert_eq!(sent.header("anthropic-beta"), Some("tools-2024"));
    assert_eq!(sent.json()["metadata"], json!({"user_id": "user-42"}));
    assert!(sent.json().get("user").is_none());
}

#[tokio::test]
async fn gemini_has_no_user_field() {
    let server = FakeServer::start(vec![Reply::json(
        200,
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]},
                               "finishReason": "STOP"}],
               "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1}}),
    )])
    .await;
    let (router, _) = router(config(
        Provider::Google,
        "gemini-2.0-flash",
        &server.url(""),
    ));
    let options = RequestOptions::new()
        .with_api_key(ApiKey::new("AIza-tenant"))
        .with_user("user-42");
    router
        .complete(hello().with_options(options))
        .await
        .expect("succeeds");
    let sent = &server.requests()[0];
    assert_eq!(sent.header("x-goog-api-key"), Some("AIza-tenant"));
    let body = sent.json();
    assert!(body.get("user").is_none() && body.get("metadata").is_none());
}

#[tokio::test]
async fn options_never_replace_what_the_adapter_sets() {
    let server = FakeServer::start(vec![]).await;
    let (router, _) = router(config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1")));
    let cases = [
        (
            RequestOptions::new().with_header("Authorization", "Bearer other"),
            "extra header authorization would replace a header the adapter sets",
        ),
        (
            RequestOptions::new().with_header("bad header", "x"),
            "extra header name \"bad header\" is not a valid header name",
        ),
        (
            RequestOptions::new().with_provider_param("model", json!("gpt-5")),
            "provider parameter \"model\" would override a field the adapter sets",
        ),
    ];
    for (options, message) in cases {
        let err = router
            .complete(hello().with_options(options))
            .await
            .expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{err}");
        assert_eq!(err.code(), "invalid_request");
        assert!(err.to_string().contains(message), "{err}");
    }
    assert_eq!(server.request_count(), 0, "nothing was sent");
}

#[tokio::test]
async fn a_tenant_key_echoed_by_the_provider_is_redacted() {
    let server = FakeServer::start(vec![Reply::json(
        400,
        json!({"error": {"message": "bad request for key sk-tenant-0123456789abcdef", "type": "invalid_request_error"}}),
    )])
    .await;
    let (router, _) = router(config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1")));
    let err = router
        .complete(hello().with_options(tenant_options()))
        .await
        .expect_err("400");
    assert!(!err.to_string().contains("0123456789abcdef"), "{err}");
    assert!(!format!("{err:?}").contains("0123456789abcdef"), "{err:?}");
    assert!(!format!("{:?}", tenant_options()).contains("org-7"));
}

#[tokio::test]
async fn a_custom_chat_provider_sees_the_options() {
    struct Seen(std::sync::Mutex<Option<Option<String>>>);
    #[async_trait::async_trait]
    impl wombat_llm::ChatProvider for Seen {
        async fn complete(
            &self,
            req: &wombat_llm::ChatRequest,
        ) -> wombat_llm::Result<wombat_llm::Completion> {
            let user = req.options.as_ref().and_then(|o| o.user.clone());
            *self.0.lock().expect("lock") = Some(user);
            Ok(wombat_llm::Completion::text("ok", Usage::default(), None))
        }

        async fn stream(
            &self,
            _: &wombat_llm::ChatRequest,
        ) -> wombat_llm::Result<wombat_llm::EventStream> {
            Err(Error::unsupported(Provider::Mistral, "complete only"))
        }
    }
    let seen = Arc::new(Seen(std::sync::Mutex::new(None)));
    let router = Router::builder(config(Provider::Mistral, "m", "http://127.0.0.1:9"))
        .provider(Provider::Mistral, seen.clone())
        .build()
        .expect("builds");
    router
        .complete(hello().with_options(RequestOptions::new().with_user("u-1")))
        .await
        .expect("ok");
    assert_eq!(*seen.0.lock().expect("lock"), Some(Some("u-1".to_owned())));
}

/// What a [`CallObserver`] saw, as text.
#[derive(Default)]
struct CallLog(std::sync::Mutex<Vec<String>>);

impl CallLog {
    fn lines(&self) -> Vec<String> {
        self.0.lock().expect("lock").clone()
    }
}

impl CallObserver for CallLog {
    fn on_request(&self, r: &ProviderRequest<'_>) {
        let headers: Vec<String> = r.headers.iter().map(|(n, v)| format!("{n}={v}")).collect();
        let body: serde_json::Value = serde_json::from_slice(r.body).expect("json body");
        self.0.lock().expect("lock").push(format!(
            "request {} {} {} {} [{}] user={}",
            r.provider,
            r.model,
            r.method,
            r.url,
            headers.join(","),
            body["user"]
        ));
    }

    fn on_response(&self, r: &ProviderResponse<'_>) {
        self.0.lock().expect("lock").push(format!(
            "response {:?} {}",
            r.status,
            r.error.map_or("-", |e| e.code())
        ));
    }

    fn on_outcome(&self, o: &CallOutcome<'_>) {
        self.0.lock().expect("lock").push(format!(
            "outcome {}/{} attempt {} usage {:?} error {}",
            o.provider,
            o.model,
            o.attempt,
            o.usage.map(|u| u.total_tokens),
            o.error.map_or("-", |e| e.code())
        ));
    }
}

#[tokio::test]
async fn the_call_observer_sees_each_request_response_and_outcome() {
    let server = FakeServer::start(vec![status(500), ok_reply("done")]).await;
    let log = Arc::new(CallLog::default());
    // Credentials in the base URL never reach the observer.
    let base = server.url("/v1").replace("http://", "http://user:secret@");
    let router = Router::builder(config(Provider::OpenAi, "gpt-4o-mini", &base))
        .sleeper(Arc::new(crate::RecordingSleeper::default()))
        .call_observer(log.clone())
        .build()
        .expect("builds");
    router
        .complete(hello().with_options(tenant_options()))
        .await
        .expect("second attempt succeeds");
    let lines = log.lines();
    assert_eq!(lines.len(), 6, "{lines:#?}");
    let request = &lines[0];
    assert!(
        request.starts_with("request openai gpt-4o-mini POST http://127.0.0.1:"),
        "{request}"
    );
    assert!(request.contains("/v1/chat/completions ["), "{request}");
    assert!(request.contains("authorization=[redacted]"), "{request}");
    assert!(
        request.contains("openai-organization=[redacted]"),
        "{request}"
    );
    assert!(
        request.contains("content-type=application/json"),
        "{request}"
    );
    assert!(request.ends_with("user=\"user-42\""), "{request}");
    assert!(
        !request.contains("sk-tenant") && !request.contains("secret"),
        "{request}"
    );
    assert_eq!(lines[1], "response Some(500) provider_error");
    assert_eq!(
        lines[2],
        "outcome openai/gpt-4o-mini attempt 1 usage None error provider_error"
    );
    assert_eq!(lines[3], lines[0]);
    assert_eq!(lines[4], "response Some(200) -");
    assert_eq!(
        lines[5],
        "outcome openai/gpt-4o-mini attempt 2 usage Some(12) error -"
    );
}

#[tokio::test]
async fn the_call_observer_sees_a_stream_end_with_its_usage() {
    let server = FakeServer::start(vec![Reply::sse(concat!(
        "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],",
        "\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1,\"total_tokens\":5}}\n\n",
        "data: [DONE]\n\n",
    ))])
    .await;
    let log = Arc::new(CallLog::default());
    let router = Router::builder(config(Provider::OpenAi, "gpt-4o-mini", &server.url("/v1")))
        .call_observer(log.clone())
        .build()
        .expect("builds");
    let got = collect(&router, hello()).await.expect("streams");
    assert_eq!(got.text, "hi");
    let lines = log.lines();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(lines[0].contains("user=null"), "{}", lines[0]);
    assert_eq!(lines[1], "response Some(200) -");
    assert_eq!(
        lines[2],
        "outcome openai/gpt-4o-mini attempt 1 usage Some(5) error -"
    );
}

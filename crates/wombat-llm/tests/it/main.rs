//! Integration tests of wombat-llm: every adapter against a fake server
//! speaking its real wire format, and the router's retries, failover,
//! deadline, cancellation and cost on top. No test touches the network
//! beyond loopback or sleeps for retry delays (an injected sleeper records
//! the waits instead).

#![expect(missing_docs, reason = "test helpers need no rustdoc")]

mod anthropic;
mod custom;
mod fake;
mod gemini;
mod openai;
mod router;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use wombat_core::{ChatMessage, Provider, Usage};
use wombat_llm::{
    ApiKey, FinishReason, RouteRequest, RoutedEvent, Router, RouterConfig, Sleeper, Tier,
};

/// Records every requested wait and returns at once.
#[derive(Default)]
pub struct RecordingSleeper {
    waits: Mutex<Vec<Duration>>,
}

impl RecordingSleeper {
    pub fn waits(&self) -> Vec<Duration> {
        self.waits.lock().expect("lock").clone()
    }
}

impl Sleeper for RecordingSleeper {
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        self.waits.lock().expect("lock").push(duration);
        Box::pin(async {})
    }
}

/// A config whose default model is `model` on `provider`, served at `base`,
/// with a key for every provider and no jitter.
pub fn config(provider: Provider, model: &str, base: &str) -> RouterConfig {
    let mut cfg = RouterConfig::default();
    cfg.default_provider = provider;
    cfg.default_model = model.to_owned();
    cfg.retry.jitter = 0.0;
    for p in Provider::ALL {
        cfg.api_keys.insert(p, ApiKey::new(format!("test-key-{p}")));
    }
    cfg.base_urls.insert(provider, base.to_owned());
    cfg
}

pub fn router(cfg: RouterConfig) -> (Router, Arc<RecordingSleeper>) {
    let sleeper = Arc::new(RecordingSleeper::default());
    let router = Router::builder(cfg)
        .sleeper(sleeper.clone())
        .build()
        .expect("router builds");
    (router, sleeper)
}

pub fn hello() -> RouteRequest {
    let mut req = RouteRequest::new(Tier::Default, vec![ChatMessage::user("Hi there")]);
    req.system = Some("You are terse.".to_owned());
    req
}

/// The outcome of a routed stream.
#[derive(Debug)]
pub struct Collected {
    pub text: String,
    pub deltas: usize,
    pub done: Option<RoutedEvent>,
    pub error: Option<wombat_llm::Error>,
}

impl Collected {
    pub fn usage(&self) -> Usage {
        match &self.done {
            Some(RoutedEvent::Done { usage, .. }) => *usage,
            other => panic!("stream did not finish: {other:?} / {:?}", self.error),
        }
    }

    pub fn finish_reason(&self) -> Option<FinishReason> {
        match &self.done {
            Some(RoutedEvent::Done { finish_reason, .. }) => finish_reason.clone(),
            _ => None,
        }
    }
}

pub async fn collect(router: &Router, req: RouteRequest) -> wombat_llm::Result<Collected> {
    let mut stream = router.stream(req).await?;
    let mut out = Collected {
        text: String::new(),
        deltas: 0,
        done: None,
        error: None,
    };
    while let Some(item) = stream.next().await {
        match item {
            Ok(RoutedEvent::Delta(d)) => {
                assert!(out.done.is_none(), "delta after done");
                out.text.push_str(&d);
                out.deltas += 1;
            }
            Ok(done @ RoutedEvent::Done { .. }) => out.done = Some(done),
            Ok(other) => panic!("unexpected event in a text-only test: {other:?}"),
            Err(e) => out.error = Some(e),
        }
    }
    Ok(out)
}

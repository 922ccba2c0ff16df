//! Your own backend behind the router, under its own provider name: a
//! [`ChatProvider`] implementation that wraps the OpenAI-compatible adapter
//! and rewrites each request (here: adds a house style to the system
//! prompt), served as the custom provider `house`, plus a [`CallObserver`]
//! that logs every HTTP call the adapter makes.
//!
//! `house/<model>` model strings go through it, with the router's retries,
//! failover (to `LLM_MODEL_FALLBACK`, on any provider), deadline and cost on
//! top; every built-in provider stays available beside it. (A plain
//! OpenAI-compatible endpoint needs no code at all: declare it in
//! `WOMBAT_LLM_ENDPOINTS` or [`RouterConfig::endpoints`].) Against a local
//! OpenAI-compatible server:
//!
//! ```text
//! HOUSE_BASE_URL=http://127.0.0.1:8080/v1 LLM_MODEL_DEFAULT=qwen2.5-7b-instruct \
//!     cargo run -p wombat-llm --example custom_provider -- "Describe a wombat."
//! ```
//!
//! `HOUSE_API_KEY` is sent as the bearer key when set.

use std::sync::Arc;
use std::time::Duration;

use wombat_llm::{
    ApiKey, CallObserver, CallOutcome, ChatMessage, ChatProvider, ChatRequest, Completion,
    EventStream, ModelRef, OpenAiAdapter, Provider, ProviderRequest, ProviderResponse,
    RouteRequest, Router, RouterConfig, Tier,
};

/// Adds a house style to every request, then delegates.
struct HouseStyle {
    inner: Arc<dyn ChatProvider>,
}

impl HouseStyle {
    fn styled(req: &ChatRequest) -> ChatRequest {
        let mut req = req.clone();
        let style = "Write like a field guide: short, precise, no exclamation marks.";
        req.system = Some(match req.system.take() {
            Some(system) => format!("{system}\n\n{style}"),
            None => style.to_owned(),
        });
        req
    }
}

#[async_trait::async_trait]
impl ChatProvider for HouseStyle {
    async fn complete(&self, req: &ChatRequest) -> wombat_llm::Result<Completion> {
        self.inner.complete(&Self::styled(req)).await
    }

    async fn stream(&self, req: &ChatRequest) -> wombat_llm::Result<EventStream> {
        self.inner.stream(&Self::styled(req)).await
    }
}

/// Logs each provider call to stderr (headers arrive with credentials
/// already redacted).
struct Log;

impl CallObserver for Log {
    fn on_request(&self, r: &ProviderRequest<'_>) {
        eprintln!(
            "-> {} {} ({} bytes) {:?}",
            r.method,
            r.url,
            r.body.len(),
            r.headers
        );
    }

    fn on_response(&self, r: &ProviderResponse<'_>) {
        eprintln!("<- {:?} after {:?}", r.status, r.latency);
    }

    fn on_outcome(&self, o: &CallOutcome<'_>) {
        match (o.usage, o.error) {
            (Some(u), _) => eprintln!("== {}/{}: {} tokens", o.provider, o.model, u.total_tokens),
            (_, Some(e)) => eprintln!("== {}/{} failed: {e}", o.provider, o.model),
            _ => {}
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let prompt = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "Describe a wombat.".to_owned());
    // The name must exist before model strings naming it are parsed.
    let house = Provider::custom("house")?;
    let mut config = RouterConfig::from_env_map(&|k: &str| std::env::var(k).ok())?;
    // The default tier's model, served by `house`.
    let model = ModelRef::parse(&config.default_model, config.default_provider)?.model;
    config.default_model = format!("house/{model}");

    let base =
        std::env::var("HOUSE_BASE_URL").unwrap_or_else(|_| "http://127.0.0.1:8080/v1".to_owned());
    let key = std::env::var("HOUSE_API_KEY").ok().map(ApiKey::new);
    let client = wombat_llm::build_client(Duration::from_secs(10), Duration::from_secs(120))?;
    // A custom provider needs no key: without one, calls carry none.
    let adapter = OpenAiAdapter::new(client.clone(), house, base, key);

    let router = Router::builder(config)
        .http_client(client)
        .provider(
            house,
            Arc::new(HouseStyle {
                inner: Arc::new(adapter),
            }),
        )
        .call_observer(Arc::new(Log))
        .build()?;

    let routed = router
        .complete(RouteRequest::new(
            Tier::Default,
            vec![ChatMessage::user(prompt)],
        ))
        .await?;
    eprintln!("answered by {}/{}", routed.provider, routed.model);
    println!("{}", routed.completion.text);
    Ok(())
}

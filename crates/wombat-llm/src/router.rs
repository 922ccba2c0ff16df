//! The router: resolves model strings and tiers, picks the provider,
//! retries transient failures with backoff, fails over to the fallback
//! model, enforces a total deadline and computes cost once.
//!
//! It does not know any wire format (the adapters do) and does not read the
//! environment (see [`RouterConfig::from_env_map`]).
//!
//! Waiting between retries goes through a [`Sleeper`] so that tests can
//! record the waits instead of sleeping; the total deadline and the HTTP
//! timeouts use tokio's clock. Dropping a future or stream returned here
//! drops the provider request with it, which closes its connection.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use tokio::time::{Instant, Sleep};
use tracing::Instrument as _;
use wombat_core::{ChatMessage, Cost, ModelRef, PricingTable, Provider, ToolCall, Usage};

use crate::anthropic::AnthropicAdapter;
use crate::call::{CallObserver, CallOutcome, ObserverSlot, RequestOptions};
use crate::config::{LlmSummary, RouterConfig};
use crate::echo::EchoProvider;
use crate::gemini::GeminiAdapter;
use crate::openai::OpenAiAdapter;
use crate::types::{
    ChatProvider, ChatRequest, Completion, EventStream, FinishReason, InvalidToolCall,
    ResponseFormat, StreamEvent, ToolChoice, ToolSpec,
};
use crate::{Error, ErrorKind, Failure, Result};

/// A model tier configured by `LLM_MODEL_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// `LLM_MODEL_CHEAP` (compaction and other bulk work).
    Cheap,
    /// `LLM_MODEL_DEFAULT`.
    Default,
    /// `LLM_MODEL_BEST`.
    Best,
}

impl Tier {
    /// Parses `cheap`, `default` or `best`.
    pub fn parse(s: &str) -> Option<Tier> {
        match s {
            "cheap" => Some(Tier::Cheap),
            "default" => Some(Tier::Default),
            "best" => Some(Tier::Best),
            _ => None,
        }
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Cheap => "cheap",
            Tier::Default => "default",
            Tier::Best => "best",
        }
    }
}

/// Which model a request wants.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelChoice {
    /// A configured tier.
    Tier(Tier),
    /// A model string, `model` or `provider/model`.
    Explicit(String),
}

impl From<Tier> for ModelChoice {
    fn from(t: Tier) -> Self {
        ModelChoice::Tier(t)
    }
}

/// A chat request to the router: like [`ChatRequest`], with a model choice
/// instead of a provider model id.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RouteRequest {
    /// The model or tier to use first.
    pub model: ModelChoice,
    /// The system prompt.
    pub system: Option<String>,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Most tokens to generate.
    pub max_tokens: Option<u32>,
    /// Structured output.
    pub response_format: Option<ResponseFormat>,
    /// Tools the model may call (see [`ChatRequest::tools`]).
    pub tools: Vec<ToolSpec>,
    /// Whether and which tool the model must call.
    pub tool_choice: Option<ToolChoice>,
    /// Whether several calls per turn are allowed.
    pub parallel_tool_calls: Option<bool>,
    /// When the caller's own deadline passes (a daemon request that has
    /// already spent time elsewhere). Retry waits are weighed against the
    /// earlier of this and the router's deadline, so a `Retry-After` that
    /// does not fit the time the request has left fails over at once.
    pub deadline: Option<Instant>,
    /// Per-request options (a tenant's API key, extra headers, the end
    /// user, provider parameters), applied to every model tried.
    pub options: Option<Arc<RequestOptions>>,
}

impl RouteRequest {
    /// A request with these messages and nothing else set.
    pub fn new(model: impl Into<ModelChoice>, messages: Vec<ChatMessage>) -> Self {
        Self {
            model: model.into(),
            system: None,
            messages,
            temperature: None,
            max_tokens: None,
            response_format: None,
            tools: Vec::new(),
            tool_choice: None,
            parallel_tool_calls: None,
            deadline: None,
            options: None,
        }
    }

    /// The same request with `options`.
    #[must_use]
    pub fn with_options(mut self, options: RequestOptions) -> Self {
        self.options = Some(Arc::new(options));
        self
    }

    /// The provider request for `model`, the prompt and conversation moved
    /// rather than copied (the system prompt alone is a few KB).
    fn into_chat(self, model: String, observer: &Option<Arc<dyn CallObserver>>) -> ChatRequest {
        ChatRequest {
            model,
            system: self.system,
            messages: self.messages,
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            response_format: self.response_format,
            tools: self.tools,
            tool_choice: self.tool_choice,
            parallel_tool_calls: self.parallel_tool_calls,
            options: self.options,
            observer: ObserverSlot(observer.clone()),
        }
    }
}

/// A completed routed call.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Routed {
    /// What the model said.
    pub completion: Completion,
    /// The provider that answered.
    pub provider: Provider,
    /// The model that answered (provider model id).
    pub model: String,
    /// Provider calls made, the successful one included.
    pub attempts: u32,
    /// How many times the router moved to another model (0 or 1).
    pub failovers: u32,
    /// The cost of the answering call, from the router's pricing table.
    pub cost: Cost,
}

/// An item of a [`RoutedStream`]: the provider's [`StreamEvent`]s, with
/// `Done` carrying what the router adds.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RoutedEvent {
    /// The next piece of text.
    Delta(String),
    /// The model started a tool call ([`StreamEvent::ToolCallStart`]).
    ToolCallStart {
        /// Position among this turn's calls.
        index: usize,
        /// The call's id.
        id: String,
        /// The tool's name.
        name: String,
    },
    /// A fragment of a call's arguments ([`StreamEvent::ToolCallDelta`]).
    ToolCallDelta {
        /// Position among this turn's calls.
        index: usize,
        /// The next piece of the arguments text.
        fragment: String,
    },
    /// A complete call ([`StreamEvent::ToolCall`]).
    ToolCall {
        /// Position among this turn's calls.
        index: usize,
        /// The call.
        call: ToolCall,
    },
    /// A complete call with arguments that are not a JSON object.
    ToolCallInvalid(InvalidToolCall),
    /// The stream finished well.
    Done {
        /// Usage as the provider reported it.
        usage: Usage,
        /// The cost, computed once from the router's pricing table.
        cost: Cost,
        /// The provider that answered.
        provider: Provider,
        /// The model that answered.
        model: String,
        /// Provider calls made.
        attempts: u32,
        /// Moves to another model (0 or 1).
        failovers: u32,
        /// Why the model stopped.
        finish_reason: Option<FinishReason>,
    },
}

/// How the router waits between retries. The default uses
/// `tokio::time::sleep`; tests inject one that records the requested waits
/// and returns at once.
pub trait Sleeper: Send + Sync {
    /// Waits for `duration`.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

/// The default [`Sleeper`]: `tokio::time::sleep`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        tokio::time::sleep(duration).boxed()
    }
}

/// Hooks for metrics: called on every retry and failover (successful calls
/// report their attempts in [`Routed`] and [`RoutedEvent::Done`]).
pub trait RouterObserver: Send + Sync {
    /// `model` failed with the retryable `error` on attempt `attempt`
    /// (1-based) and will be tried again after `delay`.
    fn on_retry(&self, model: &ModelRef, attempt: u32, error: &Error, delay: Duration) {
        let _ = (model, attempt, error, delay);
    }

    /// `from` is given up after `error`; `to` is tried next.
    fn on_failover(&self, from: &ModelRef, to: &ModelRef, error: &Error) {
        let _ = (from, to, error);
    }
}

/// Builds a [`Router`] with injected providers, sleeper, observer or HTTP
/// client.
pub struct RouterBuilder {
    config: RouterConfig,
    providers: HashMap<Provider, Arc<dyn ChatProvider>>,
    sleeper: Arc<dyn Sleeper>,
    observer: Option<Arc<dyn RouterObserver>>,
    call_observer: Option<Arc<dyn CallObserver>>,
    client: Option<wombat_transport::Client>,
}

impl RouterBuilder {
    /// Serves `provider` with `backend`: instead of the built-in adapter
    /// for a built-in provider, or instead of the endpoint of the same name
    /// in [`RouterConfig::endpoints`] for a custom one. A custom provider
    /// ([`Provider::custom`]) may have no endpoint at all: its model strings
    /// (`<name>/<model>`) then go to `backend` alone, with the router's
    /// retries, failover, fallback model, deadline and cost.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use wombat_llm::{
    ///     ChatMessage, ChatProvider, ChatRequest, Completion, EventStream, FinishReason,
    ///     ModelChoice, Provider, RouteRequest, Router, RouterConfig, StreamEvent, Usage,
    /// };
    ///
    /// /// Answers every question with the model id it was asked for.
    /// struct Parrot;
    ///
    /// #[async_trait::async_trait]
    /// impl ChatProvider for Parrot {
    ///     async fn complete(&self, req: &ChatRequest) -> wombat_llm::Result<Completion> {
    ///         Ok(Completion::text(req.model.clone(), Usage::default(), Some(FinishReason::Stop)))
    ///     }
    ///
    ///     async fn stream(&self, req: &ChatRequest) -> wombat_llm::Result<EventStream> {
    ///         let events: Vec<wombat_llm::Result<StreamEvent>> = vec![
    ///             Ok(StreamEvent::Delta(req.model.clone())),
    ///             Ok(StreamEvent::Done { usage: Usage::default(), finish_reason: None }),
    ///         ];
    ///         Ok(Box::pin(futures::stream::iter(events)))
    ///     }
    /// }
    ///
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let parrot = Provider::custom("parrot")?;
    /// let router = Router::builder(RouterConfig::default())
    ///     .provider(parrot, Arc::new(Parrot))
    ///     .build()?;
    /// let req = RouteRequest::new(
    ///     ModelChoice::Explicit("parrot/polly-1".into()),
    ///     vec![ChatMessage::user("Who are you?")],
    /// );
    /// let routed = router.complete(req).await?;
    /// assert_eq!((routed.provider, routed.completion.text.as_str()), (parrot, "polly-1"));
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn provider(mut self, provider: Provider, backend: Arc<dyn ChatProvider>) -> Self {
        self.providers.insert(provider, backend);
        self
    }

    /// Waits between retries with `sleeper`.
    #[must_use]
    pub fn sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.sleeper = sleeper;
        self
    }

    /// Reports retries and failovers to `observer`.
    #[must_use]
    pub fn observer(mut self, observer: Arc<dyn RouterObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Shows every provider call to `observer`: the HTTP request and
    /// response of the built-in adapters, and how each call ended (see
    /// [`CallObserver`]). Without one nothing is collected.
    #[must_use]
    pub fn call_observer(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.call_observer = Some(observer);
        self
    }

    /// Uses `client` for the built-in adapters instead of building one from
    /// the config's timeouts.
    #[must_use]
    pub fn http_client(mut self, client: wombat_transport::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Builds the router. Every built-in provider without an injected
    /// backend gets its built-in adapter, and every endpoint of
    /// [`RouterConfig::endpoints`] an OpenAI-compatible adapter, all sharing
    /// one HTTP client (one pool).
    ///
    /// Fails with [`ErrorKind::Config`] for an endpoint that is not valid
    /// (see [`crate::EndpointConfig`]), or a configured model or default
    /// provider naming a custom provider with neither an endpoint nor an
    /// injected backend.
    pub fn build(self) -> Result<Router> {
        let RouterBuilder {
            config,
            mut providers,
            sleeper,
            observer,
            call_observer,
            client,
        } = self;
        let client = match client {
            Some(c) => c,
            None => crate::http::build_client(config.connect_timeout, config.read_timeout)?,
        };
        for provider in Provider::ALL {
            if providers.contains_key(&provider) {
                continue;
            }
            let key = config.api_keys.get(&provider).cloned();
            let base = config.base_url(provider).to_owned();
            let adapter: Arc<dyn ChatProvider> = match provider {
                // `ALL` lists only the built-in providers.
                Provider::Custom(_) => continue,
                Provider::Anthropic => Arc::new(AnthropicAdapter::new(client.clone(), base, key)),
                Provider::Google => Arc::new(GeminiAdapter::new(client.clone(), base, key)),
                Provider::Echo => Arc::new(EchoProvider),
                Provider::OpenAi
                | Provider::Xai
                | Provider::Groq
                | Provider::Mistral
                | Provider::OpenRouter
                | Provider::Ollama => Arc::new(
                    OpenAiAdapter::new(client.clone(), provider, base, key)
                        .key_optional(!config.key_required(provider)),
                ),
            };
            providers.insert(provider, adapter);
        }
        for (name, endpoint) in &config.endpoints {
            let provider = Provider::Custom(*name);
            if providers.contains_key(&provider) {
                continue;
            }
            let (base, headers) = endpoint
                .prepare()
                .map_err(|reason| Error::config(format!("endpoints.{name}"), reason))?;
            // The key is the endpoint's, or none (a local server).
            let adapter =
                OpenAiAdapter::new(client.clone(), provider, base, endpoint.api_key.clone())
                    .key_optional(true)
                    .with_headers(headers);
            providers.insert(provider, Arc::new(adapter));
        }
        check_custom_providers(&config, &providers)?;
        let echo_configured = config.uses_echo();
        let ollama_configured = config.uses_ollama();
        Ok(Router {
            inner: Arc::new(Inner {
                echo_configured,
                ollama_configured,
                config,
                providers,
                sleeper,
                observer,
                call_observer,
            }),
        })
    }
}

/// Fails when the default provider or a configured model names a custom
/// provider the router has no backend for: every request using it would
/// fail.
fn check_custom_providers(
    config: &RouterConfig,
    providers: &HashMap<Provider, Arc<dyn ChatProvider>>,
) -> Result<()> {
    let missing = |p: Provider| p.custom_name().is_some() && !providers.contains_key(&p);
    if missing(config.default_provider) {
        return Err(Error::config(
            "default_provider",
            format!(
                "no endpoint or backend is configured for the custom provider {:?}",
                config.default_provider.as_str()
            ),
        ));
    }
    let models = [
        ("default_model", Some(&config.default_model)),
        ("cheap_model", config.cheap_model.as_ref()),
        ("best_model", config.best_model.as_ref()),
        ("fallback_model", config.fallback_model.as_ref()),
    ];
    for (field, model) in models {
        let Some(Ok(model)) = model.map(|m| ModelRef::parse(m, config.default_provider)) else {
            continue;
        };
        if missing(model.provider) {
            return Err(Error::config(
                field,
                format!(
                    "no endpoint or backend is configured for the custom provider {:?}",
                    model.provider.as_str()
                ),
            ));
        }
    }
    Ok(())
}

struct Inner {
    config: RouterConfig,
    /// Whether the configuration itself uses the echo provider; only then
    /// may a request name an `echo/...` model (see [`Router::resolve`]).
    echo_configured: bool,
    /// Likewise for Ollama, which needs no key: without this a request
    /// naming `ollama/...` would make the daemon connect to Ollama's default
    /// address (`localhost:11434`) on a host that does not run it for us.
    ollama_configured: bool,
    providers: HashMap<Provider, Arc<dyn ChatProvider>>,
    sleeper: Arc<dyn Sleeper>,
    observer: Option<Arc<dyn RouterObserver>>,
    call_observer: Option<Arc<dyn CallObserver>>,
}

/// Routes chat requests over the configured providers. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// What one model attempt produced, with the bookkeeping of the route.
struct Answer<T> {
    value: T,
    model: ModelRef,
    attempts: u32,
    failovers: u32,
    /// The answering model's attempt number and when it started, for the
    /// call observer's outcome of a stream (reported at its end).
    attempt: u32,
    started: Instant,
}

impl Router {
    /// A router with the built-in adapters.
    pub fn new(config: RouterConfig) -> Result<Router> {
        Self::builder(config).build()
    }

    /// A builder for injecting providers, a sleeper or an observer.
    pub fn builder(config: RouterConfig) -> RouterBuilder {
        RouterBuilder {
            config,
            providers: HashMap::new(),
            sleeper: Arc::new(TokioSleeper),
            observer: None,
            call_observer: None,
            client: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RouterConfig {
        &self.inner.config
    }

    /// The pricing table costs are computed from.
    pub fn pricing(&self) -> &PricingTable {
        &self.inner.config.pricing
    }

    /// The model's context window (128,000 when unknown).
    pub fn context_window(&self, model: &ModelRef) -> u64 {
        self.inner.config.pricing.context_window(&model.model)
    }

    /// What `/health` may show about the LLM configuration: the
    /// configuration's summary ([`RouterConfig::summary`]), plus the custom
    /// providers served by injected backends.
    pub fn summary(&self) -> LlmSummary {
        let config = &self.inner.config;
        let mut summary = config.summary();
        for provider in self.inner.providers.keys() {
            if provider.custom_name().is_some() {
                summary
                    .providers
                    .entry(*provider)
                    .or_insert_with(|| config.provider_summary(*provider));
            }
        }
        summary
    }

    /// Resolves a tier or model string to a provider and model.
    ///
    /// A request may name any model of a real provider, but the offline
    /// echo provider only when the configuration uses it (`LLM_PROVIDER=echo`
    /// or a tier or fallback model on `echo/`): echo is a wiring check, and a
    /// caller must not be able to turn a production daemon into one (nor
    /// make it build large schema samples). The same holds for Ollama, which
    /// needs no key: only when the configuration uses it (see
    /// [`RouterConfig::uses_ollama`]). Otherwise [`ErrorKind::ModelNotAllowed`].
    ///
    /// A custom provider this router has no backend for (a name created by
    /// another configuration in the process) is [`ErrorKind::Unsupported`].
    pub fn resolve(&self, choice: &ModelChoice) -> Result<ModelRef> {
        let config = &self.inner.config;
        let s = match choice {
            ModelChoice::Tier(t) => config.tier_model(*t),
            ModelChoice::Explicit(s) => s.as_str(),
        };
        let model = ModelRef::parse(s, config.default_provider)?;
        let allowed = match model.provider {
            Provider::Echo => self.inner.echo_configured,
            Provider::Ollama => self.inner.ollama_configured,
            Provider::Custom(_) if !self.inner.providers.contains_key(&model.provider) => {
                return Err(no_backend(model.provider));
            }
            _ => true,
        };
        if !allowed {
            return Err(Error::model_not_allowed(s.to_owned()));
        }
        Ok(model)
    }

    /// Runs the request to completion with retries and failover.
    pub async fn complete(&self, req: RouteRequest) -> Result<Routed> {
        let deadline = self.inner.config.deadline;
        let deadline_at = Instant::now() + deadline;
        let budget_at = budget(&req, deadline_at);
        let span = self.chat_span(&req);
        let routed = tokio::time::timeout_at(
            deadline_at,
            self.run(
                req,
                budget_at,
                |_, provider, chat| async move { provider.complete(&chat).await },
                |c| Some(&c.usage),
            ),
        )
        .instrument(span.clone())
        .await
        .map_err(|_| Error::deadline_exceeded(deadline))
        .and_then(|r| r);
        let routed = match routed {
            Ok(r) => r,
            Err(e) => {
                span.record("otel.status_code", "error");
                return Err(e);
            }
        };
        if !span.is_none() {
            let c = &routed.value;
            record_answer(&span, &routed.model, &c.usage, c.finish_reason.as_ref());
            if wombat_telemetry::capture_content() {
                span.record("gen_ai.output.messages", c.text.as_str());
            }
        }
        let cost = self.cost(&routed.model, &routed.value.usage);
        Ok(Routed {
            cost,
            provider: routed.model.provider,
            model: routed.model.model,
            attempts: routed.attempts,
            failovers: routed.failovers,
            completion: routed.value,
        })
    }

    /// Starts a streaming call (one step of a conversation). Retries and
    /// failover happen only until the step has produced output for the
    /// caller: its first event, a text delta or any tool-call event (a
    /// call's start counts like text), or `Done` for an empty answer. So
    /// this resolves once that first event is in hand (or every model
    /// failed, which the caller can still answer with a proper status).
    /// After that an error ends the stream: the caller may already have
    /// shown the text or acted on the call. The total deadline covers the
    /// whole stream.
    pub async fn stream(&self, req: RouteRequest) -> Result<RoutedStream> {
        let span = self.chat_span(&req);
        let result = self.open_stream(req).instrument(span.clone()).await;
        match result {
            Ok(mut stream) => {
                stream.span = span;
                Ok(stream)
            }
            Err(e) => {
                span.record("otel.status_code", "error");
                Err(e)
            }
        }
    }

    /// The `chat <model>` client span of one routed call (GenAI semantic
    /// conventions), or a disabled span when traces are off. Retries and
    /// failover are logged inside it and so become its events.
    fn chat_span(&self, req: &RouteRequest) -> tracing::Span {
        let span = wombat_telemetry::otel_span!(
            "chat",
            otel.name = tracing::field::Empty,
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            gen_ai.operation.name = "chat",
            gen_ai.provider.name = tracing::field::Empty,
            gen_ai.request.model = tracing::field::Empty,
            gen_ai.response.model = tracing::field::Empty,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            gen_ai.response.finish_reasons = tracing::field::Empty,
            gen_ai.system_instructions = tracing::field::Empty,
            gen_ai.input.messages = tracing::field::Empty,
            gen_ai.output.messages = tracing::field::Empty,
        );
        if span.is_none() {
            return span;
        }
        if let Ok(model) = self.resolve(&req.model) {
            span.record("otel.name", format!("chat {}", model.model));
            span.record("gen_ai.provider.name", genai_provider(model.provider));
            span.record("gen_ai.request.model", model.model.as_str());
        }
        if let Some(t) = req.max_tokens {
            wombat_telemetry::set_attribute(&span, "gen_ai.request.max_tokens", i64::from(t));
        }
        if let Some(t) = req.temperature {
            wombat_telemetry::set_attribute(&span, "gen_ai.request.temperature", f64::from(t));
        }
        // Prompt text only when the operator asked for it: it is user data.
        if wombat_telemetry::capture_content() {
            if let Some(system) = &req.system {
                span.record("gen_ai.system_instructions", system.as_str());
            }
            if let Ok(json) = serde_json::to_string(&req.messages) {
                span.record("gen_ai.input.messages", json);
            }
        }
        span
    }

    async fn open_stream(&self, req: RouteRequest) -> Result<RoutedStream> {
        let deadline = self.inner.config.deadline;
        let deadline_at = Instant::now() + deadline;
        let budget_at = budget(&req, deadline_at);
        let open = self.run(
            req,
            budget_at,
            |model, provider, chat| async move {
                let mut stream = provider.stream(&chat).await?;
                // The commit point: every event is output for the caller (a
                // `StreamEvent` stream has no empty deltas), so the first one
                // ends the retry/failover window of this step.
                match stream.next().await {
                    Some(Ok(first)) => Ok((first, stream)),
                    Some(Err(e)) => Err(e),
                    None => Err(Error::new(
                        ErrorKind::Truncated,
                        Failure::new(model.provider, model.model, "stream had no events"),
                    )),
                }
            },
            // Reported when the stream ends (see `RoutedStream::outcome`).
            |_| None,
        );
        let answer = tokio::time::timeout_at(deadline_at, open)
            .await
            .map_err(|_| Error::deadline_exceeded(deadline))??;
        let (first, inner) = answer.value;
        Ok(RoutedStream {
            router: self.clone(),
            first: Some(first),
            inner,
            deadline_timer: Box::pin(tokio::time::sleep_until(deadline_at)),
            deadline,
            model: answer.model,
            attempts: answer.attempts,
            failovers: answer.failovers,
            attempt: answer.attempt,
            started: answer.started,
            finished: false,
            span: tracing::Span::none(),
        })
    }

    fn cost(&self, model: &ModelRef, usage: &Usage) -> Cost {
        // The echo provider is a wiring check: it never costs anything, even
        // when its model string names a priced model (`LLM_PROVIDER=echo`
        // with the default `gpt-4o-mini`).
        if model.provider == Provider::Echo {
            return Cost::from_micros(&model.model, usage, 0, 0, false);
        }
        self.inner.config.pricing.cost(&model.model, usage)
    }

    /// The primary model, then the fallback if it is configured and differs.
    fn candidates(&self, choice: &ModelChoice) -> Result<Vec<ModelRef>> {
        let config = &self.inner.config;
        let primary = self.resolve(choice)?;
        let mut models = vec![primary];
        if let Some(fallback) = &config.fallback_model {
            let fallback = ModelRef::parse(fallback, config.default_provider)?;
            if !models.contains(&fallback) {
                models.push(fallback);
            }
        }
        Ok(models)
    }

    /// Tries each candidate model in turn, retrying retryable failures.
    ///
    /// A retry wait is only taken when it fits this model's share of the
    /// time left before `deadline_at`: the remaining time divided by the
    /// models still to try (this one included). A longer wait (a provider's
    /// `Retry-After` of up to a minute, or a long backoff) gives up on the
    /// model at once: the fallback is tried while there is time for it, and
    /// without one the caller gets the provider's error (a 429 with its
    /// `Retry-After`) instead of a deadline error after a useless wait.
    ///
    /// The call observer, if any, is told how each call ended; `usage` gives
    /// the usage of a successful one, or `None` when its outcome is reported
    /// later (a stream, at its end).
    async fn run<T, F, Fut>(
        &self,
        req: RouteRequest,
        deadline_at: Instant,
        mut call: F,
        usage: fn(&T) -> Option<&Usage>,
    ) -> Result<Answer<T>>
    where
        F: FnMut(ModelRef, Arc<dyn ChatProvider>, Arc<ChatRequest>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let inner = &self.inner;
        let policy = &inner.config.retry;
        let models = self.candidates(&req.model)?;
        // One provider request for every model tried: only its model
        // changes on failover (`make_mut` copies it only if an earlier
        // call still holds it).
        let mut chat = Arc::new(req.into_chat(models[0].model.clone(), &inner.call_observer));
        let mut attempts = 0u32;
        let mut failovers = 0u32;
        let mut errors: Vec<Error> = Vec::new();
        for (index, model) in models.iter().enumerate() {
            if index > 0 {
                failovers += 1;
                if let (Some(prev), Some(err)) = (models.get(index - 1), errors.last()) {
                    tracing::warn!(from = %prev, to = %model, error = %err, "llm failover");
                    if let Some(obs) = &inner.observer {
                        obs.on_failover(prev, model, err);
                    }
                }
            }
            let Some(provider) = inner.providers.get(&model.provider).cloned() else {
                // Unreachable: `build` fills every built-in provider and
                // checks the configured custom ones, and `resolve` refuses
                // the others. Kept as an error rather than a panic.
                errors.push(no_backend(model.provider));
                continue;
            };
            if chat.model != model.model {
                Arc::make_mut(&mut chat).model.clone_from(&model.model);
            }
            let mut model_attempt = 0u32;
            loop {
                attempts += 1;
                model_attempt += 1;
                let started = Instant::now();
                let result = call(model.clone(), provider.clone(), chat.clone()).await;
                if let Some(obs) = &inner.call_observer {
                    let (usage, error) = match &result {
                        Ok(value) => (usage(value), None),
                        Err(e) => (None, Some(e)),
                    };
                    if usage.is_some() || error.is_some() {
                        obs.on_outcome(&CallOutcome {
                            provider: model.provider,
                            model: &model.model,
                            attempt: model_attempt,
                            latency: started.elapsed(),
                            usage,
                            error,
                        });
                    }
                }
                match result {
                    Ok(value) => {
                        tracing::debug!(model = %model, attempts, failovers, "llm call succeeded");
                        return Ok(Answer {
                            value,
                            model: model.clone(),
                            attempts,
                            failovers,
                            attempt: model_attempt,
                            started,
                        });
                    }
                    Err(e) => {
                        let retry = e.is_retryable() && model_attempt < policy.attempts.max(1);
                        if retry {
                            let delay = policy.delay(model_attempt - 1, e.retry_after());
                            if fits(delay, deadline_at, models.len() - index) {
                                tracing::warn!(
                                    model = %model,
                                    attempt = model_attempt,
                                    delay_ms = millis(delay),
                                    error = %e,
                                    "llm call failed, retrying"
                                );
                                if let Some(obs) = &inner.observer {
                                    obs.on_retry(model, model_attempt, &e, delay);
                                }
                                inner.sleeper.sleep(delay).await;
                                continue;
                            }
                            tracing::warn!(
                                model = %model,
                                attempt = model_attempt,
                                delay_ms = millis(delay),
                                error = %e,
                                "llm retry wait does not fit the time left; giving up on this model"
                            );
                        }
                        let failover = e.should_failover();
                        errors.push(e);
                        if !failover {
                            return Err(finish(attempts, errors));
                        }
                        break;
                    }
                }
            }
        }
        Err(finish(attempts, errors))
    }
}

/// [`ErrorKind::Unsupported`]: the router has no backend for `provider`.
fn no_backend(provider: Provider) -> Error {
    Error::unsupported(provider, "no backend configured")
}

/// The answering model, usage and finish reason on a `chat` span.
fn record_answer(
    span: &tracing::Span,
    model: &ModelRef,
    usage: &Usage,
    finish: Option<&crate::FinishReason>,
) {
    span.record("gen_ai.response.model", model.model.as_str());
    // As i64: the OTel layer exports a u64 field as a string.
    let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    span.record("gen_ai.usage.input_tokens", int(usage.prompt_tokens));
    span.record("gen_ai.usage.output_tokens", int(usage.completion_tokens));
    if let Some(reason) = finish {
        wombat_telemetry::set_string_array(
            span,
            "gen_ai.response.finish_reasons",
            &[reason.as_str()],
        );
    }
}

/// `gen_ai.provider.name`: the semantic conventions' well-known values
/// where one exists, else our own provider name.
fn genai_provider(p: Provider) -> &'static str {
    match p {
        Provider::Google => "gcp.gemini",
        Provider::Xai => "x_ai",
        Provider::Mistral => "mistral_ai",
        other => other.as_str(),
    }
}

/// The instant retry waits are weighed against: the router's deadline, or
/// the request's own when that comes first.
fn budget(req: &RouteRequest, deadline_at: Instant) -> Instant {
    req.deadline.map_or(deadline_at, |d| d.min(deadline_at))
}

/// Whether a retry wait of `delay` fits the share of the time left before
/// `deadline_at` that belongs to the current model, `models_left` models
/// (the current one included) still sharing it.
fn fits(delay: Duration, deadline_at: Instant, models_left: usize) -> bool {
    let left = deadline_at.saturating_duration_since(Instant::now());
    let share = left / u32::try_from(models_left.max(1)).unwrap_or(u32::MAX);
    delay <= share
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One model's error as is; several as [`ErrorKind::Exhausted`].
fn finish(attempts: u32, mut errors: Vec<Error>) -> Error {
    if errors.len() == 1 {
        if let Some(e) = errors.pop() {
            return e;
        }
    }
    Error::exhausted(attempts, errors)
}

/// A routed stream: text deltas and tool-call events, then one
/// [`RoutedEvent::Done`], or an `Err` item that ends it (a provider error
/// after the first output, a truncated stream, or the deadline). Dropping it
/// cancels the provider request.
pub struct RoutedStream {
    router: Router,
    first: Option<StreamEvent>,
    inner: EventStream,
    deadline_timer: Pin<Box<Sleep>>,
    deadline: Duration,
    model: ModelRef,
    attempts: u32,
    failovers: u32,
    /// The answering model's attempt and its start, for the call observer.
    attempt: u32,
    started: Instant,
    finished: bool,
    /// The `chat` span, closed (exported) when the stream is dropped.
    span: tracing::Span,
}

impl fmt::Debug for RoutedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoutedStream")
            .field("model", &self.model)
            .field("attempts", &self.attempts)
            .field("failovers", &self.failovers)
            .finish_non_exhaustive()
    }
}

impl RoutedStream {
    /// The provider and model that is answering.
    pub fn model(&self) -> &ModelRef {
        &self.model
    }

    /// Provider calls made before the stream was committed.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Moves to another model before the stream was committed (0 or 1).
    pub fn failovers(&self) -> u32 {
        self.failovers
    }

    /// Tells the call observer, if any, how the answering call ended.
    fn outcome(&self, usage: Option<&Usage>, error: Option<&Error>) {
        if let Some(obs) = &self.router.inner.call_observer {
            obs.on_outcome(&CallOutcome {
                provider: self.model.provider,
                model: &self.model.model,
                attempt: self.attempt,
                latency: self.started.elapsed(),
                usage,
                error,
            });
        }
    }

    /// Ends the stream with `e`.
    fn fail(&mut self, e: Error) -> Poll<Option<Result<RoutedEvent>>> {
        self.finished = true;
        self.outcome(None, Some(&e));
        Poll::Ready(Some(Err(e)))
    }

    fn convert(&mut self, ev: StreamEvent) -> RoutedEvent {
        match ev {
            StreamEvent::Delta(d) => RoutedEvent::Delta(d),
            StreamEvent::ToolCallStart { index, id, name } => {
                RoutedEvent::ToolCallStart { index, id, name }
            }
            StreamEvent::ToolCallDelta { index, fragment } => {
                RoutedEvent::ToolCallDelta { index, fragment }
            }
            StreamEvent::ToolCall { index, call } => RoutedEvent::ToolCall { index, call: *call },
            StreamEvent::ToolCallInvalid(bad) => RoutedEvent::ToolCallInvalid(*bad),
            StreamEvent::Done {
                usage,
                finish_reason,
            } => {
                self.finished = true;
                if !self.span.is_none() {
                    record_answer(&self.span, &self.model, &usage, finish_reason.as_ref());
                }
                self.outcome(Some(&usage), None);
                RoutedEvent::Done {
                    cost: self.router.cost(&self.model, &usage),
                    usage,
                    provider: self.model.provider,
                    model: self.model.model.clone(),
                    attempts: self.attempts,
                    failovers: self.failovers,
                    finish_reason,
                }
            }
        }
    }
}

impl Stream for RoutedStream {
    type Item = Result<RoutedEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(this.convert(first))));
        }
        if this.deadline_timer.as_mut().poll(cx).is_ready() {
            return this.fail(Error::deadline_exceeded(this.deadline));
        }
        match this.inner.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(ev))) => Poll::Ready(Some(Ok(this.convert(ev)))),
            Poll::Ready(Some(Err(e))) => this.fail(e),
            Poll::Ready(None) => this.fail(Error::new(
                ErrorKind::Truncated,
                Failure::new(
                    this.model.provider,
                    this.model.model.clone(),
                    "stream ended without a done event",
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn futures_and_streams_are_send() {
        let router = Router::new(RouterConfig::default()).expect("builds");
        let req = RouteRequest::new(Tier::Default, vec![ChatMessage::user("x")]);
        assert_send(&router.complete(req.clone()));
        assert_send(&router.stream(req));
        fn stream_is_send_and_unpin<T: Send + Unpin + Stream>() {}
        stream_is_send_and_unpin::<RoutedStream>();
    }

    #[test]
    fn tiers_parse() {
        for t in [Tier::Cheap, Tier::Default, Tier::Best] {
            assert_eq!(Tier::parse(t.as_str()), Some(t));
        }
        assert_eq!(Tier::parse("premium"), None);
    }
}

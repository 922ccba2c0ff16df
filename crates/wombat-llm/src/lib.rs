//! Wombat's LLM layer, usable on its own by any Rust service: a provider
//! abstraction ([`ChatProvider`]), adapters for OpenAI Chat Completions (and
//! every OpenAI-compatible provider), Anthropic Messages and Google Gemini,
//! an offline [`EchoProvider`], one SSE decoder shared by all of them, and a
//! [`Router`] that adds model tiers, API keys, retries with backoff,
//! failover, a total deadline and cost.
//!
//! It does not read the process environment (the binary builds a
//! [`RouterConfig`] with [`RouterConfig::from_env_map`]), log secrets, or
//! estimate token counts a provider did not send.
//!
//! ```no_run
//! # async fn demo() -> wombat_llm::Result<()> {
//! use wombat_llm::{ChatMessage, RouteRequest, Router, RouterConfig, Tier};
//!
//! let config = RouterConfig::from_env_map(&|k: &str| std::env::var(k).ok())?;
//! let router = Router::new(config)?;
//! let routed = router
//!     .complete(RouteRequest::new(Tier::Default, vec![ChatMessage::user("Hello")]))
//!     .await?;
//! println!("{} said {:?} for ${}", routed.model, routed.completion.text, routed.cost.total_cost);
//! # Ok(())
//! # }
//! ```
//!
//! # Embedding
//!
//! Everything an embedder needs is re-exported here, the `wombat-core`
//! message and pricing types included, so `wombat-llm` is the only
//! dependency. Structs and enums that will grow are `#[non_exhaustive]`:
//! build them with their constructors (`RouteRequest::new`,
//! `RouterConfig::default` then set fields...) and give `match`es a `_` arm.
//!
//! - **Errors**: [`Error::kind`] says what happened ([`ErrorKind`]),
//!   [`Error::failure`] who (provider, model, HTTP status, the provider's
//!   redacted message), [`Error::code`] a stable string for machines; the
//!   router already retries and fails over by kind.
//! - **Per-request options** ([`RequestOptions`], attached with
//!   [`RouteRequest::with_options`]): a tenant's own API key, extra
//!   headers, the end user, provider-specific body parameters.
//! - **A hook around each provider call** ([`CallObserver`], set with
//!   [`RouterBuilder::call_observer`]): the HTTP request (credentials
//!   redacted) and response of each call and how it ended, for logging,
//!   tracing and tests; [`RouterObserver`] sees retries and failovers.
//! - **Your own backend**: implement [`ChatProvider`] and hand it to
//!   [`RouterBuilder::provider`], which serves a provider's models with it:
//!   a built-in provider's, or a custom provider's under its own name
//!   ([`Provider::custom`], addressed as `<name>/<model>`).
//! - **Any number of OpenAI-compatible endpoints**, each under its own
//!   name with its base URL, key and extra headers ([`EndpointConfig`] in
//!   [`RouterConfig::endpoints`], or `WOMBAT_LLM_ENDPOINTS` for
//!   [`RouterConfig::from_env_map`]), routed like the built-in providers.
//!
//! ```no_run
//! use std::sync::Arc;
//! use wombat_llm::{
//!     ChatMessage, ChatProvider, ChatRequest, Completion, ErrorKind, EventStream, Failure,
//!     FinishReason, Provider, RouteRequest, Router, RouterConfig, Tier, Usage,
//! };
//!
//! /// A backend answering from a lookup table.
//! struct Canned;
//!
//! #[async_trait::async_trait]
//! impl ChatProvider for Canned {
//!     async fn complete(&self, req: &ChatRequest) -> wombat_llm::Result<Completion> {
//!         let question = req.messages.last().map(|m| m.text()).unwrap_or_default();
//!         if question.is_empty() {
//!             let failure = Failure::new(Provider::Mistral, req.model.clone(), "empty question");
//!             return Err(wombat_llm::Error::new(ErrorKind::InvalidRequest, failure));
//!         }
//!         Ok(Completion::text("42", Usage::default(), Some(FinishReason::Stop)))
//!     }
//!
//!     async fn stream(&self, _req: &ChatRequest) -> wombat_llm::Result<EventStream> {
//!         Err(wombat_llm::Error::unsupported(Provider::Mistral, "no streaming"))
//!     }
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = RouterConfig::default();
//! config.default_provider = Provider::Mistral;
//! config.default_model = "canned".into();
//! let router = Router::builder(config)
//!     .provider(Provider::Mistral, Arc::new(Canned))
//!     .build()?;
//! let routed = router
//!     .complete(RouteRequest::new(Tier::Default, vec![ChatMessage::user("The answer?")]))
//!     .await?;
//! assert_eq!(routed.completion.text, "42");
//! # Ok(())
//! # }
//! ```
//!
//! Runnable programs are in `examples/` (`complete`, `stream`, `tools`,
//! `custom_provider`), each against a local OpenAI-compatible server
//! (`OPENAI_BASE_URL`) or offline with `LLM_PROVIDER=echo`.

mod anthropic;
mod call;
mod config;
mod echo;
mod endpoint;
mod error;
mod escaped;
mod gemini;
mod http;
mod openai;
mod router;
mod schema;
pub mod sse;
mod types;

pub use anthropic::{ANTHROPIC_DEFAULT_MAX_TOKENS, AnthropicAdapter};
pub use call::{CallObserver, CallOutcome, ProviderRequest, ProviderResponse, RequestOptions};
pub use config::{LlmSummary, ProviderSummary, RetryPolicy, RouterConfig};
pub use echo::EchoProvider;
pub use endpoint::EndpointConfig;
pub use error::{Error, ErrorKind, Failure, Result};
pub use gemini::GeminiAdapter;
pub use http::{MAX_SUCCESS_BODY, build_client};
pub use openai::OpenAiAdapter;
pub use router::{
    ModelChoice, RouteRequest, Routed, RoutedEvent, RoutedStream, Router, RouterBuilder,
    RouterObserver, Sleeper, Tier, TokioSleeper,
};
pub use schema::{MAX_SCHEMA_DEPTH, MAX_SCHEMA_VALUES, SchemaTooLarge, check_schema_size};
pub use types::{
    ApiKey, ChatProvider, ChatRequest, Completion, EventStream, FinishReason, InvalidToolCall,
    ResponseFormat, StreamEvent, ToolChoice, ToolSpec,
};
/// `wombat-core`'s error, which [`ErrorKind::InvalidModel`] wraps (a model
/// string that does not parse).
pub use wombat_core::Error as CoreError;
/// The `wombat-core` types this crate's API uses, so an embedder needs only
/// `wombat-llm`.
pub use wombat_core::{
    ChatMessage, Cost, DEFAULT_CONTEXT_WINDOW, ModelPrice, ModelRef, Part, PricingTable, Provider,
    ProviderName, Role, TextPart, ToolCall, ToolContent, ToolResult, Usage,
};
/// The HTTP client the built-in adapters share ([`build_client`],
/// [`RouterBuilder::http_client`]): re-exported so an embedder can build
/// one with its own settings without naming the crate.
pub use wombat_transport as transport;

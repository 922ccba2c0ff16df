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
//! use wombat_core::ChatMessage;
//! use wombat_llm::{RouteRequest, Router, RouterConfig, Tier};
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

mod anthropic;
mod call;
mod config;
mod echo;
mod error;
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
/// The `wombat-core` types this crate's API uses, so an embedder needs only
/// `wombat-llm`.
pub use wombat_core::{
    ChatMessage, Cost, ModelRef, Part, Provider, Role, TextPart, ToolCall, ToolContent, ToolResult,
    Usage,
};

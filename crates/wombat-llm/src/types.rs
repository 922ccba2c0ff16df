//! The provider abstraction: requests, completions, stream events, the
//! [`ChatProvider`] trait and the redacting [`ApiKey`] newtype.
//!
//! Nothing here talks to the network; the adapters and the router do.

use std::fmt;

use futures::stream::BoxStream;
use wombat_core::{ChatMessage, Usage};

use crate::Result;

/// One chat call to one provider and model.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The provider's model id, without a `provider/` prefix.
    pub model: String,
    /// The system prompt, placed where each provider wants it.
    pub system: Option<String>,
    /// The conversation. `System` messages in it are kept in place for
    /// OpenAI-compatible providers and appended to the system prompt for
    /// Anthropic and Gemini, which have no system role.
    pub messages: Vec<ChatMessage>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Most tokens to generate. Anthropic requires one; its adapter sends
    /// [`crate::ANTHROPIC_DEFAULT_MAX_TOKENS`] when this is `None`.
    pub max_tokens: Option<u32>,
    /// Ask for JSON output, optionally conforming to a schema.
    pub response_format: Option<ResponseFormat>,
}

impl ChatRequest {
    /// A request for `model` with these messages and nothing else set.
    pub fn new(model: impl Into<String>, messages: Vec<ChatMessage>) -> Self {
        Self {
            model: model.into(),
            system: None,
            messages,
            temperature: None,
            max_tokens: None,
            response_format: None,
        }
    }
}

/// Structured-output request.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    /// Any JSON value (OpenAI `json_object`, Gemini
    /// `responseMimeType: application/json`, Anthropic by instruction).
    Json,
    /// JSON conforming to `schema` (OpenAI `json_schema`, Gemini
    /// `responseSchema`, Anthropic a forced tool).
    JsonSchema {
        /// A short name for the schema (`[A-Za-z0-9_-]`, at most 64 chars;
        /// other characters are replaced where a provider requires it).
        name: String,
        /// The JSON Schema.
        schema: serde_json::Value,
    },
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// A natural stop or stop sequence.
    Stop,
    /// The token limit was reached.
    Length,
    /// A safety or content filter stopped it.
    ContentFilter,
    /// The model called a tool (not used for structured output, which is
    /// reported as [`FinishReason::Stop`]).
    ToolCalls,
    /// Anything else, as the provider spelled it.
    Other(String),
}

impl FinishReason {
    /// A lowercase name: `stop`, `length`, `content_filter`, `tool_calls` or
    /// the provider's own word.
    pub fn as_str(&self) -> &str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ContentFilter => "content_filter",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::Other(s) => s,
        }
    }
}

/// A finished non-streaming call.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The generated text (for structured output: the JSON text).
    pub text: String,
    /// Token usage as the provider reported it; zero where it reported none.
    pub usage: Usage,
    /// Why the model stopped, if the provider said.
    pub finish_reason: Option<FinishReason>,
}

/// One item of a provider stream. Every successful stream is zero or more
/// non-empty `Delta`s followed by exactly one `Done`.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The next piece of text.
    Delta(String),
    /// The stream ended with the provider's end marker.
    Done {
        /// Final usage as the provider reported it.
        usage: Usage,
        /// Why the model stopped.
        finish_reason: Option<FinishReason>,
    },
}

/// A stream of [`StreamEvent`]s; an `Err` item ends it.
pub type EventStream = BoxStream<'static, Result<StreamEvent>>;

/// A chat backend. Adapters implement it; so can embedders' own backends and
/// test doubles, which the router accepts through
/// [`crate::RouterBuilder::provider`].
///
/// Implementations must be cancel-safe: dropping a future or stream aborts
/// the underlying request.
#[async_trait::async_trait]
pub trait ChatProvider: Send + Sync {
    /// Runs the request to completion.
    async fn complete(&self, req: &ChatRequest) -> Result<Completion>;

    /// Starts a streaming call. The returned stream yields text deltas and
    /// ends with [`StreamEvent::Done`], or with an `Err` item.
    async fn stream(&self, req: &ChatRequest) -> Result<EventStream>;
}

/// An API key. Its `Debug` output is redacted and it has no `Display`, so it
/// cannot leak into logs or error messages by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_debug_is_redacted() {
        let key = ApiKey::new("sk-secret-123");
        assert_eq!(format!("{key:?}"), "ApiKey([redacted])");
        assert_eq!(key.expose(), "sk-secret-123");
    }
}

//! The provider abstraction: requests, completions, stream events, the
//! [`ChatProvider`] trait and the redacting [`ApiKey`] newtype.
//!
//! Nothing here talks to the network; the adapters and the router do.

use std::fmt;
use std::sync::Arc;

use futures::stream::BoxStream;
use serde_json::Value;
use wombat_core::{ChatMessage, Part, Role, ToolCall, Usage};

use crate::Result;
use crate::call::{ObserverSlot, RequestOptions};

/// One chat call to one provider and model.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
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
    /// Tools the model may call. Empty: none are declared.
    pub tools: Vec<ToolSpec>,
    /// Whether and which tool the model must call; `None` leaves it to the
    /// provider's default (auto when tools are declared).
    pub tool_choice: Option<ToolChoice>,
    /// Whether the model may call several tools in one turn (OpenAI's
    /// `parallel_tool_calls`; Anthropic's `disable_parallel_tool_use`
    /// inverted). `None` leaves the provider's default (allowed).
    pub parallel_tool_calls: Option<bool>,
    /// Per-request options: API key, extra headers, end user, provider
    /// parameters (see [`RequestOptions`]). `None` for most requests.
    pub options: Option<Arc<RequestOptions>>,
    /// The router's call observer, for the adapters' send path.
    pub(crate) observer: ObserverSlot,
}

/// The largest buffer [`ChatRequest::body_size_hint`] asks for up front;
/// a larger body grows past it as it is written.
const MAX_BODY_SIZE_HINT: usize = 1 << 20;

impl ChatRequest {
    /// A guess at the size of this request's JSON body, so the buffer it is
    /// written into starts large enough (growing from serde_json's 128
    /// bytes reallocated and copied a system prompt's body five times).
    ///
    /// Never more than [`MAX_BODY_SIZE_HINT`]: a request of many tiny
    /// non-text parts must not reserve many times its own size.
    pub(crate) fn body_size_hint(&self) -> usize {
        let parts: usize = self
            .messages
            .iter()
            .flat_map(|m| &m.parts)
            .map(|part| part.as_text().map_or(64, str::len))
            .fold(0, usize::saturating_add);
        self.system
            .as_ref()
            .map_or(0, String::len)
            .saturating_add(parts)
            .saturating_add(512)
            .min(MAX_BODY_SIZE_HINT)
    }

    /// A request for `model` with these messages and nothing else set.
    pub fn new(model: impl Into<String>, messages: Vec<ChatMessage>) -> Self {
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
            options: None,
            observer: ObserverSlot::default(),
        }
    }

    /// The same request with `options`.
    #[must_use]
    pub fn with_options(mut self, options: RequestOptions) -> Self {
        self.options = Some(Arc::new(options));
        self
    }

    /// The key of [`RequestOptions::api_key`], which replaces the
    /// adapter's configured key.
    pub(crate) fn key_override(&self) -> Option<&ApiKey> {
        self.options.as_ref().and_then(|o| o.api_key.as_ref())
    }
}

/// A tool declared to the model.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ToolSpec {
    /// The name the model calls it by (`[A-Za-z0-9_-]`, at most 64 chars,
    /// the strictest providers' rule).
    pub name: String,
    /// What it does, for the model.
    pub description: Option<String>,
    /// The JSON Schema of its arguments (an `object` schema).
    pub parameters: Value,
}

impl ToolSpec {
    /// A tool named `name` taking arguments described by `parameters`.
    pub fn new(name: impl Into<String>, parameters: Value) -> Self {
        Self {
            name: name.into(),
            description: None,
            parameters,
        }
    }

    /// The same tool with a description.
    #[must_use]
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }
}

/// Whether the model must call a tool.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// The model must not call tools.
    None,
    /// The model must call at least one tool.
    Required,
    /// The model must call this tool.
    Tool(String),
}

/// A tool call whose arguments the model got wrong (not JSON, or not an
/// object). Reported instead of a [`ToolCall`]; a run loop answers it with
/// an error result so the model can try again.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct InvalidToolCall {
    /// Position among this turn's tool calls.
    pub index: usize,
    /// The call's id (made up by the adapter when the provider sent none).
    pub id: String,
    /// The tool the model named.
    pub name: String,
    /// The arguments text as received (bounded by the provider's reply size).
    pub raw_arguments: String,
    /// What is wrong with it.
    pub error: String,
}

impl InvalidToolCall {
    /// The call as it goes into the conversation history: the name and id
    /// the model used, with empty arguments (the raw text was not an object).
    pub fn to_call(&self) -> ToolCall {
        ToolCall::new(self.id.clone(), self.name.clone(), serde_json::Map::new())
    }
}

/// Structured-output request.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
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
#[non_exhaustive]
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
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct Completion {
    /// The generated text (for structured output: the JSON text); the text
    /// parts of the turn joined, empty when the model only called tools.
    pub text: String,
    /// The tool calls of this turn, in order.
    pub tool_calls: Vec<ToolCall>,
    /// Calls whose arguments were not a JSON object.
    pub invalid_tool_calls: Vec<InvalidToolCall>,
    /// Token usage as the provider reported it; zero where it reported none.
    pub usage: Usage,
    /// Why the model stopped, if the provider said.
    pub finish_reason: Option<FinishReason>,
}

impl Completion {
    /// A text-only completion.
    pub fn text(
        text: impl Into<String>,
        usage: Usage,
        finish_reason: Option<FinishReason>,
    ) -> Self {
        Self {
            text: text.into(),
            usage,
            finish_reason,
            ..Self::default()
        }
    }

    /// Whether the model asked for any tool call (valid or not).
    pub fn has_tool_calls(&self) -> bool {
        !self.tool_calls.is_empty() || !self.invalid_tool_calls.is_empty()
    }

    /// The turn as an assistant message for the conversation history: the
    /// text (if any), the valid calls in order, then the invalid ones with
    /// empty arguments (each still needs an answer from the caller).
    pub fn to_message(&self) -> ChatMessage {
        let mut parts =
            Vec::with_capacity(1 + self.tool_calls.len() + self.invalid_tool_calls.len());
        if !self.text.is_empty() {
            parts.push(Part::text(self.text.clone()));
        }
        parts.extend(self.tool_calls.iter().cloned().map(Part::ToolCall));
        parts.extend(
            self.invalid_tool_calls
                .iter()
                .map(|c| Part::ToolCall(c.to_call())),
        );
        ChatMessage::with_parts(Role::Assistant, parts)
    }
}

/// One item of a provider stream. Every successful stream is zero or more
/// non-empty `Delta`s and tool-call events followed by exactly one `Done`.
///
/// For each tool call: one `ToolCallStart`, zero or more `ToolCallDelta`
/// fragments (a provider that delivers calls whole, such as Gemini, sends
/// none), then exactly one of `ToolCall` or `ToolCallInvalid`. `index` is the
/// call's position among this turn's calls (0, 1, …), whatever numbering the
/// provider uses; calls may interleave.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StreamEvent {
    /// The next piece of text.
    Delta(String),
    /// The model started a tool call.
    ToolCallStart {
        /// Position among this turn's calls.
        index: usize,
        /// The call's id.
        id: String,
        /// The tool's name.
        name: String,
    },
    /// A fragment of a call's JSON arguments (not parseable on its own).
    ToolCallDelta {
        /// Position among this turn's calls.
        index: usize,
        /// The next piece of the arguments text.
        fragment: String,
    },
    /// A call is complete; its arguments were parsed once, at the end.
    ToolCall {
        /// Position among this turn's calls.
        index: usize,
        /// The call (boxed: events wait in a stream's queue, and the rare
        /// large variants would make every text delta as large).
        call: Box<ToolCall>,
    },
    /// A call is complete but its arguments are not a JSON object (boxed,
    /// like [`StreamEvent::ToolCall`]'s call).
    ToolCallInvalid(Box<InvalidToolCall>),
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
/// cannot leak into logs or error messages by accident. Cheap to clone
/// (shared), as every call keeps one to scrub it from error texts.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Arc<str>);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into().into())
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

    /// The hint follows the text it will write and stays bounded however
    /// many parts a request has.
    #[test]
    fn body_size_hint_is_bounded() {
        let mut req = ChatRequest::new("m", vec![ChatMessage::user("x".repeat(3000))]);
        req.system = Some("s".repeat(2000));
        let hint = req.body_size_hint();
        assert!((5000..6000).contains(&hint), "{hint}");
        let body = serde_json::to_vec(&req.messages).expect("json").len();
        assert!(hint >= body, "{hint} < {body}");
        let many = vec![ChatMessage::user("y".repeat(100)); 50_000];
        assert_eq!(
            ChatRequest::new("m", many).body_size_hint(),
            MAX_BODY_SIZE_HINT
        );
    }
}
#[cfg(test)]
mod size {
    /// Events wait in a stream's queue (a held stream's memory is mostly
    /// its queue): the rare large variants are boxed so that a text delta
    /// takes no more room than the largest small variant.
    #[test]
    fn stream_events_stay_small() {
        assert!(size_of::<super::StreamEvent>() <= 56);
    }
}

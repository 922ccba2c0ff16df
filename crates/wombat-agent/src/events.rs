//! What a run yields while it works, and the payloads of the stream's
//! events (`chunk`, `error`, `done`; `tool_call`, `tool_result`).
//!
//! The pipeline drives an [`EventSink`]: the JSON sink ignores everything
//! but the end (the reply is returned whole), the SSE sink writes a frame
//! per event. Static dispatch, and the JSON sink's methods are empty: a
//! send pays nothing for the events it does not stream.

use std::future::Future;

use serde::Serialize;
use serde_json::{Map, Value};
use wombat_core::{Cost, ToolContent, Usage};

/// Where a run's events go.
pub trait EventSink: Send + Sync {
    /// Whether the LLM is called in streaming mode and text arrives as
    /// deltas ([`EventSink::text`]); otherwise the reply comes whole.
    const STREAMING: bool;

    /// How the run awaits its cold phases (the backend write): in place for
    /// a caller that waits for the whole reply (no allocation), boxed for a
    /// stream, whose task lives as long as the stream and is as large as
    /// its largest await point.
    type Cold<F: Future + Send>: Future<Output = F::Output> + Send;

    /// Wraps a cold phase (see [`EventSink::Cold`]).
    fn cold<F: Future + Send>(f: F) -> Self::Cold<F>;

    /// The LLM phase begins; `false` when the client has gone away.
    fn start(&self) -> impl Future<Output = bool> + Send;

    /// The next piece of text; `false` when the client has gone away.
    fn text(&self, delta: &str) -> impl Future<Output = bool> + Send;

    /// The model made a complete tool call; `false` when the client has
    /// gone away.
    fn tool_call(
        &self,
        id: &str,
        name: &str,
        arguments: &Map<String, Value>,
    ) -> impl Future<Output = bool> + Send;

    /// A tool call's result (as fed back to the model, truncated); `false`
    /// when the client has gone away.
    fn tool_result(
        &self,
        id: &str,
        name: &str,
        is_error: bool,
        content: &ToolContent,
    ) -> impl Future<Output = bool> + Send;

    /// Resolves when the client has gone away (never, for a caller that
    /// waits for the whole reply: it does not cancel the run).
    fn closed(&self) -> impl Future<Output = ()> + Send;
}

/// `event: chunk`.
#[derive(Serialize)]
pub struct Chunk<'a> {
    /// `"chunk"`.
    pub r#type: &'static str,
    /// The text.
    pub data: &'a str,
}

/// `event: error`.
#[derive(Serialize)]
pub struct StreamError<'a> {
    /// `"error"`.
    pub r#type: &'static str,
    /// The message.
    pub error: &'a str,
    /// The machine-readable code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'a str>,
}

/// `event: done`.
#[derive(Serialize)]
pub struct Done<'a> {
    /// `"done"`.
    pub r#type: &'static str,
    /// Usage of the whole run.
    pub usage: &'a Usage,
    /// Cost of the whole run.
    pub cost: &'a Cost,
    /// The model that answered.
    pub model: &'a str,
    /// The provider that answered.
    pub provider: &'a str,
    /// The task the reply belongs to.
    pub task_id: Option<&'a str>,
    /// The stored message.
    pub message_id: Option<&'a str>,
    /// Whether the reply was stored.
    pub persisted: bool,
    /// Why it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persist_error: Option<&'a str>,
    /// Context usage warning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_warning: Option<&'a str>,
    /// The soft-budget warning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_warning: Option<&'a Value>,
    /// `"requires_action"` when the run stopped for caller tools,
    /// `"awaiting_approval"` when it waits for a person.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'a str>,
    /// The caller's tool calls (with `requires_action`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<&'a Value>,
    /// The turn's messages to append before the caller's results.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<&'a Value>,
    /// The tool requests the run waits for (with `awaiting_approval`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_requests: Option<&'a Value>,
}

/// `event: tool_call`.
#[derive(Serialize)]
pub struct ToolCallEvent<'a> {
    /// `"tool_call"`.
    pub r#type: &'static str,
    /// The call's id.
    pub id: &'a str,
    /// The tool.
    pub name: &'a str,
    /// The arguments.
    pub arguments: &'a Map<String, Value>,
}

/// `event: tool_result`.
#[derive(Serialize)]
pub struct ToolResultEvent<'a> {
    /// `"tool_result"`.
    pub r#type: &'static str,
    /// The call's id.
    pub id: &'a str,
    /// The tool.
    pub name: &'a str,
    /// Whether the call failed.
    pub is_error: bool,
    /// The result as text (truncated like what the model sees).
    pub content: &'a str,
}

//! Where the run loop's tools come from: the [`ToolSource`] abstraction.
//!
//! A source lists the tools a tenant may use and calls them for that tenant.
//! MCP servers (`tools/mcp.rs`, by the MCP client's authors) and workspace
//! approval rules plug in here; caller tools (the request's own `tools`) are
//! handled by the loop itself, since the daemon never executes them.
//!
//! The trait is dyn-compatible (`Arc<dyn ToolSource>`): calls return boxed
//! futures. A tool call is a network round trip at least, so one allocation
//! per call costs nothing measurable, and a request without tools never
//! reaches a source.

pub mod mcp;

use std::fmt;

use futures::future::BoxFuture;
use serde_json::{Map, Value};
use wombat_core::ToolContent;

/// Who a tool call acts for: the tenant of the request, never another.
///
/// A source must scope everything it does to this tenant (credentials,
/// caches, sessions): a connection or token made for one tenant is never
/// used for another.
#[derive(Clone, Copy)]
pub struct Tenant<'a> {
    /// The tenant (`user_id` of the request).
    pub user_id: &'a str,
    /// The agent role the request runs as.
    pub role: &'a str,
    /// The tenant's agent JWT (what `X-Agent-Token` carries to the backend),
    /// when a backend is configured. A secret: never logged.
    pub agent_token: Option<&'a str>,
    /// The request's W3C `traceparent`, to propagate to tool servers.
    pub traceparent: Option<&'a str>,
}

impl fmt::Debug for Tenant<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tenant")
            .field("user_id", &self.user_id)
            .field("role", &self.role)
            .field("agent_token", &self.agent_token.map(|_| "***"))
            .finish_non_exhaustive()
    }
}

/// A tool as the model sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolInfo {
    /// The name the model calls it by (`[A-Za-z0-9_-]`, at most 64
    /// characters; MCP tools are `<server>__<tool>`).
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of its arguments (an object schema).
    pub input_schema: Value,
    /// Whether a call needs a human's approval first (e.g. MCP's
    /// `destructiveHint`, or a workspace approval rule).
    pub requires_approval: bool,
}

/// A tool call to execute: the name the model used and its arguments.
#[derive(Debug, Clone, Copy)]
pub struct ToolCallRef<'a> {
    /// The call's id in the conversation.
    pub id: &'a str,
    /// The tool's name, as listed by the source.
    pub name: &'a str,
    /// The arguments (a JSON object, already parsed).
    pub arguments: &'a Map<String, Value>,
}

/// What a tool call produced, success or failure. A failure is fed back to
/// the model as an error result (so it can correct itself), never an error
/// of the request.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutcome {
    /// The result (or the error's description).
    pub content: ToolContent,
    /// Whether the call failed (unknown tool, invalid arguments, timeout,
    /// the tool's own error).
    pub is_error: bool,
}

impl ToolOutcome {
    /// A successful result.
    pub fn ok(content: ToolContent) -> Self {
        Self {
            content,
            is_error: false,
        }
    }

    /// A failed call, described for the model.
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            content: ToolContent::Text(message.into()),
            is_error: true,
        }
    }
}

/// Why a source could not list its tools. The run goes on without them
/// (logged), like a tool server that is down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListError(pub String);

impl fmt::Display for ListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot list tools: {}", self.0)
    }
}

impl std::error::Error for ListError {}

/// Lists and calls tools for a tenant.
///
/// Implementations bound their own work: `call` must return within its
/// per-tool timeout (the loop also bounds every call by
/// its configured timeout and the request deadline, dropping the future),
/// and results should be truncated to a budget (the loop truncates again to
/// its own limit, with a marker).
pub trait ToolSource: Send + Sync {
    /// The tools `tenant` may use now. Cheap when cached; called once per
    /// request that uses tools.
    fn list<'a>(&'a self, tenant: Tenant<'a>) -> BoxFuture<'a, Result<Vec<ToolInfo>, ListError>>;

    /// Executes one call for `tenant`. Unknown tools, invalid arguments,
    /// timeouts and the tool's own failures are error outcomes.
    fn call<'a>(&'a self, tenant: Tenant<'a>, call: ToolCallRef<'a>) -> BoxFuture<'a, ToolOutcome>;
}

/// The limits of the tool loop (`WOMBAT_TOOL_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopLimits {
    /// LLM steps per request at most (8). The last allowed step is made
    /// with `tool_choice: none`, so the model has to answer in text.
    pub max_steps: u32,
    /// How long one tool call may take (30 s); then it is answered with an
    /// error result the model sees.
    pub tool_timeout: std::time::Duration,
    /// Tool calls of one step run concurrently, at most this many at a
    /// time (4).
    pub max_concurrent: usize,
    /// The longest tool result fed back to the model, in bytes (16 KiB);
    /// longer ones are cut with a `[truncated …]` marker.
    pub max_result_bytes: usize,
}

impl Default for LoopLimits {
    fn default() -> Self {
        Self {
            max_steps: 8,
            tool_timeout: std::time::Duration::from_secs(30),
            max_concurrent: 4,
            max_result_bytes: 16 * 1024,
        }
    }
}

/// Cuts `text` to at most `max` bytes (on a character boundary), ending it
/// with a marker that says how much was left out.
pub fn truncate(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    std::borrow::Cow::Owned(format!(
        "{}\n[truncated: {} of {} bytes shown]",
        &text[..cut],
        cut,
        text.len()
    ))
}

/// A tool result as fed back to the model: text or JSON, cut to `max`
/// bytes (a JSON result that is too long becomes its truncated text).
pub(crate) fn bounded(content: ToolContent, max: usize) -> ToolContent {
    let text = content.to_text();
    if text.len() <= max {
        return content;
    }
    ToolContent::Text(truncate(&text, max).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_char_boundaries_and_says_what_was_cut() {
        assert_eq!(truncate("short", 10), "short");
        let cut = truncate("ééééé", 3);
        assert_eq!(cut, "é\n[truncated: 2 of 10 bytes shown]");
        let json = bounded(
            ToolContent::Json(serde_json::json!({"a": "x".repeat(50)})),
            20,
        );
        let ToolContent::Text(t) = json else {
            panic!("a cut JSON result becomes text");
        };
        assert!(
            t.starts_with("{\"a\":\"xxxxxxxxxxxxxx\n[truncated: 20 of 58 bytes shown]"),
            "{t}"
        );
    }
}

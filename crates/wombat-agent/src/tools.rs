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

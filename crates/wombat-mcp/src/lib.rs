//! MCP tools for Wombat: the operator's remote MCP servers (Streamable HTTP,
//! through the official `rmcp` SDK), their tools exposed as
//! `<server>__<tool>`, every request made as one tenant with that tenant's
//! agent JWT.
//!
//! - [`McpConfig`] parses the `{"mcpServers": {...}}` convention (a
//!   workspace's `mcp.json`, or the same JSON from the environment) and
//!   validates it: names, http(s) URLs (plain http only to loopback unless
//!   allowed), headers whose values stay secret.
//! - [`McpTools`] lists a tenant's tools (cached per server and tenant,
//!   bounded, short TTL) and calls them: arguments checked against the
//!   tool's JSON Schema first, a per-server timeout, the result cut to a
//!   budget. Failures are [`ToolOutcome`]s with `is_error`, never panics.
//! - An initialised client is kept per server, tenant and agent JWT (never
//!   shared across tenants or tokens; bounded, closed after an idle TTL),
//!   so after a tenant's first operation a list or call is one HTTP
//!   request instead of three; each request still carries its own
//!   `traceparent`.
//!
//! What it does not do: decide approvals (it reports `destructive` and
//! `requires_approval`), run a model, or start local processes — only
//! remote HTTP(S) servers named by the operator, never a URL from a request.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use wombat_mcp::{McpConfig, McpOptions, McpTenant, McpTools};
//!
//! let config = McpConfig::parse(
//!     r#"{"mcpServers": {"mc": {"url": "http://127.0.0.1:8090/mcp"}}}"#,
//!     "mcp.json",
//! )?;
//! let tools = McpTools::new(config, McpOptions::default())?;
//! let tenant = McpTenant::new("user-1", "<agent JWT of user-1>");
//! for tool in tools.list(&tenant).await {
//!     println!("{} (approval: {})", tool.name, tool.requires_approval);
//! }
//! let outcome = tools
//!     .call(&tenant, "mc__search_tasks", serde_json::json!({"query": "invoice"}))
//!     .await;
//! println!("error: {}, {:?}", outcome.is_error, outcome.content);
//! # Ok(())
//! # }
//! ```

mod config;
mod pool;
mod tools;

pub use config::{
    Approval, ConfigError, DEFAULT_TIMEOUT, MAX_CONFIG_BYTES, MAX_SERVER_NAME, MAX_SERVERS,
    McpConfig, McpServerConfig,
};
pub use tools::{
    MAX_DESCRIPTION_BYTES, MAX_RESPONSE_BYTES, MAX_TOOL_NAME, MAX_TOOLS_PER_SERVER, McpError,
    McpOptions, McpTenant, McpTools, NAME_SEPARATOR, TRUNCATION_MARKER, ToolContent, ToolInfo,
    ToolOutcome,
};

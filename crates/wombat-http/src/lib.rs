//! Wombat's daemon: the HTTP API of `API.md` on raw hyper 1.x.
//!
//! This crate owns inbound HTTP only: the accept loop and graceful shutdown,
//! the `match (method, path)` router, and the cross-cutting concerns every
//! request goes through (request id, daemon-key auth, body limit, content
//! type, one error type mapped to status + JSON). Prompt building, LLM calls
//! and the backend contract live in the crates it composes.

mod agent;
mod app;
pub mod config;
mod error;
mod governance;
mod info;
mod metrics;
mod request;
mod server;
mod sse;
mod tasks;
mod usage;
mod webhook;

pub use app::{Backend, Daemon};

/// Why a daemon could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An outbound HTTP client could not be created.
    #[error("cannot build an HTTP client: {0}")]
    HttpClient(String),
    /// The governance store could not be set up (e.g. a malformed
    /// `WOMBAT_REDIS_URL`).
    #[error("cannot set up the limits store: {0}")]
    Governance(String),
    /// The MCP servers could not be set up (the workspace's `mcp.json` is
    /// invalid or clashes with `WOMBAT_MCP_SERVERS`).
    #[error("cannot set up the MCP servers: {0}")]
    Mcp(String),
}
pub use server::ServerLimits;

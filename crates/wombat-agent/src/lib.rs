//! Wombat's agent run: one pipeline for `send` and `stream`.
//!
//! validate → resolve the task → build the prompt → LLM step → tool calls →
//! … → persist → webhook, yielding events that the HTTP layer writes either
//! as one JSON response or as server-sent events. This crate sits between
//! the middle crates (workspace, LLM router, control plane, governance) and
//! `wombat-http`, which is left with parsing, framing, auth and limits.
//!
//! The embedding process implements [`Host`] (its parts, limits and
//! observers) and an [`EventSink`]; a request goes through [`prepare`],
//! [`start`] and [`execute`]. Tools reach the loop through
//! [`tools::ToolSource`]: MCP servers, approvals and anything else that can
//! list and call tools for a tenant.

mod approval;
mod deadline;
mod error;
pub mod events;
mod host;
mod options;
mod persist;
mod request;
mod run;
pub mod tools;
mod webhook;

pub use deadline::{Deadline, deadline_at};
pub use error::ApiError;
pub use events::EventSink;
pub use host::{Host, Settings};
pub use options::warning_json;
pub use persist::{NOTIFICATION_ALREADY_ANSWERED, WriteFailure};
pub use request::{SendRequest, WebhookSpec};
pub use run::{
    Answer, NO_TASK, Persisted, Prepared, Reply, RunInfo, Started, Stop, execute, llm_error,
    prepare, start, workspace_error,
};

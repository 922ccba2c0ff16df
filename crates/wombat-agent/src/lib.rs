//! Wombat's agent run: one pipeline for `send` and `stream`.
//!
//! validate → resolve the task → build the prompt → LLM step → tool calls →
//! … → persist → webhook, yielding events that the HTTP layer writes either
//! as one JSON response or as server-sent events. This crate sits between
//! the middle crates (workspace, LLM router, control plane, governance) and
//! `wombat-http`, which is left with parsing, framing, auth and limits.
//!
//! Tools reach the loop through [`tools::ToolSource`]: MCP servers,
//! approvals and anything else that can list and call tools for a tenant.

pub mod tools;

//! Integration tests of the MCP client: against the reference backend's
//! `/mcp` (real tools over real data) and against a small recording MCP
//! server (what exactly each request carried).

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod backend;
mod pool;
mod recording;
mod support;

//! Integration tests of the reference backend, and of the
//! `wombat-controlplane` client against it (kept here because the client
//! crate must not depend on the backend).

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod backend;
mod client;
mod connections;
mod docs;
mod mcp;
mod openapi;
mod scale;
mod support;
mod tool_requests;

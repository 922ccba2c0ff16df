//! Domain types shared by every Wombat layer: chat messages, token usage,
//! cost and the pricing table, session keys, model references and the DTOs of
//! the control-plane contract.
//!
//! This crate is pure data and logic. It does no I/O, spawns nothing and has
//! no async runtime, so every other crate (and any service embedding
//! `wombat-llm` or `wombat-workspace`) can depend on it cheaply.

pub mod controlplane;
mod error;
pub mod json;
mod message;
mod model;
mod pricing;
pub mod schema;
mod session;
mod usage;

pub use error::{Error, Result};
pub use message::{
    ChatMessage, Part, Role, TextPart, ToolCall, ToolContent, ToolResult, parse_tool_arguments,
};
pub use model::{ModelRef, Provider, ProviderName};
pub use pricing::{Cost, DEFAULT_CONTEXT_WINDOW, ModelPrice, PricingTable};
pub use session::{SessionKey, is_valid_role};
pub use usage::Usage;

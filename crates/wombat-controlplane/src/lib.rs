//! Client of the Control Plane Contract v1 (`CONTROL_PLANE.md`): minting and
//! verifying agent JWTs, and typed calls to a "Mission Control" backend
//! (capabilities, tasks, messages, documents, dispatch, heartbeat, standup,
//! tool requests)
//! with bounded retries and idempotency keys on every create.
//!
//! It does not serve HTTP (see `wombat-mc-lite` for a backend) and does not
//! read the environment: callers build a [`ControlPlaneConfig`].
//!
//! ```no_run
//! # async fn demo() -> wombat_controlplane::Result<()> {
//! use wombat_controlplane::{ControlPlane, ControlPlaneConfig, JwtAlgorithm, JwtConfig};
//! let jwt = JwtConfig::new("shared-secret", JwtAlgorithm::HS256)?;
//! let cp = ControlPlane::new(ControlPlaneConfig::new("http://localhost:9001", jwt))?;
//! let agent = cp.agent("user-1", "agent");
//! let task = agent.find_or_create_task("Launch plan", None, None).await?;
//! println!("task {}", task.id);
//! # Ok(()) }
//! ```

mod client;
mod config;
mod error;
pub mod jwt;

pub use client::{
    AgentClient, ControlPlane, MAX_PAGES, MAX_TOOL_REQUEST_ID_LEN, PAGE_SIZE, TASK_CACHE_CAP,
    TASK_CACHE_TTL, ToolRequestQuery, check_tool_request_id, notification_message_key,
    task_idempotency_key,
};
pub use config::{ControlPlaneConfig, RetryPolicy};
pub use error::{Error, JwtError, Result};
pub use jwt::{AgentClaims, JwtAlgorithm, JwtConfig};

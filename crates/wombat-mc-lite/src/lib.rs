//! The reference Mission Control backend ("mc-lite"): every endpoint of the
//! Control Plane Contract v1 plus dispatch, heartbeat and standup, with JWT
//! verification, strict tenant isolation, idempotency (409 on a reused key
//! with a different payload), cursor pagination and persistence in an
//! embedded SQLite file (WAL), so data and idempotency records survive a
//! restart.
//!
//! It is a library so tests and the quickstart can run it in-process; the
//! `wombat-mc-lite` binary is a thin wrapper. It does not read the
//! environment. Beyond the contract it serves `GET /health`,
//! `GET /api/mission-control/tasks/{id}/messages` and `.../documents`
//! (tenant-scoped reads, paginated like the task list) and
//! `POST /api/mission-control/dispatch/notifications` (enqueue, internal
//! token). Replies:
//!
//! - heartbeat: `{"status":"ok","user_id","at","tasks":{"total","by_status"},
//!   "messages":{"total"},"documents":{"total"},"notifications":{"pending"}}`;
//! - standup: `{"status":"ok","user_id","timezone","date" (today in that
//!   zone),"since" (24 h ago),"tasks":[{"id","title","status","created",
//!   "messages","documents"}] (tasks with activity in the window),
//!   "totals":{"tasks_created","messages","documents"}}`.
//!
//! ```no_run
//! # async fn demo() -> wombat_mc_lite::Result<()> {
//! use wombat_controlplane::{JwtAlgorithm, JwtConfig};
//! use wombat_mc_lite::{DbLocation, McLite, McLiteConfig};
//! let jwt = JwtConfig::new("secret", JwtAlgorithm::HS256).expect("non-empty secret");
//! let server = McLite::start(McLiteConfig::new(jwt, DbLocation::Memory), "127.0.0.1:0".parse().expect("addr")).await?;
//! println!("listening on {}", server.url());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

mod api;
mod config;
mod enqueue;
mod error;
mod mcp;
mod server;
mod store;

pub use config::{
    ConnectionLimits, DEFAULT_DB_PATH, DEFAULT_IDEMPOTENCY_RETENTION, DEFAULT_PORT, DbLocation,
    McLiteConfig,
};
pub use enqueue::{enqueue_notification, enqueue_notification_with};
pub use error::{Error, Result};
pub use server::{McLite, RunningMcLite};

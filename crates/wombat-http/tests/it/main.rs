//! End-to-end tests of the daemon: every endpoint over real HTTP against an
//! in-process mc-lite, a fake OpenAI server and a webhook receiver, all on
//! loopback (see `support`).

mod agent;
mod boot;
mod compat;
mod connections;
mod deadlines;
mod docs;
mod endpoints;
mod errors;
mod governance;
mod hardening;
mod llm_limits;
mod redis_server;
mod support;
mod tools;

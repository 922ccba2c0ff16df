//! Integration tests of `wombat-heartbeat` against the reference backend:
//! the binary's output and exit codes (settings on the child's environment
//! only) and the library entry point.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod cli;

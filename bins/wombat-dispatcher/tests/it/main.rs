//! Integration tests of the dispatcher: end to end against the reference
//! backend and the real daemon (echo provider), wire details against fakes,
//! and the binary's exit codes.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod binary;
mod e2e;
mod fake;
mod support;

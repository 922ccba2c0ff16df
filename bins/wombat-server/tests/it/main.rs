//! Tests of the `wombat-server` binary as a user runs it.

mod custom_endpoint;
mod first_hour;
mod quickstart;
mod traces;

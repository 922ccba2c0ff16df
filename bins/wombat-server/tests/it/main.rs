//! Tests of the `wombat-server` binary as a user runs it.

mod first_hour;
mod quickstart;
mod traces;

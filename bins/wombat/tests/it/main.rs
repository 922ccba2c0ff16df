//! Integration tests of the `wombat` command: help texts, exit codes, and
//! that each subcommand reaches the same entry point as its dedicated binary.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod cli;
mod docs;
mod local_loop;
mod tools_quickstart;

//! Integration tests of `wombat-workspace` (one binary, several modules).

mod corpus;
mod docs;
mod examples;
mod rules;
mod skills;
mod support;
